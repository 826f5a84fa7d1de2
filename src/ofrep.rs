//! The OpenFeature Remote Evaluation Protocol (OFREP 0.3) in cohort's terms: a
//! decision as an OFREP evaluation (`variant` = version, `value` = typed value or
//! version name, cohort's reason, `metadata` with bucket and revision), the bulk
//! answer with its `ETag`, and change notifications as OFREP `refetchEvaluation`
//! events. The HTTP side is `api::ofrep`; the credential the advertised event stream URL
//! carries is a [`ticket`].

pub mod ticket;

use crate::metrics::{Counting, ReleaseLabels};
use crate::snapshots::Snapshots;
use crate::store::EnvName;
use crate::stream::Subscription;
use actix_web::web::Bytes;
use cohort_sdk::{CompiledRelease, Context, ErrorCode, Resolved, Snapshot, hash_unit};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use std::convert::Infallible;
use std::sync::Arc;

/// Seconds of client inactivity after which an OFREP client closes the event stream
/// (OFREP's default, stated so clients need not guess).
pub const INACTIVITY_DELAY_SECS: u32 = 120;

/// Why one flag has no value for a context (OFREP `evaluationFailure`/`flagNotFound`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// No release with that key in the environment.
    #[error("flag `{0}` was not found in this environment")]
    NotFound(String),
    /// The context lacks the release's unit attribute.
    #[error("flag `{key}` splits on the context attribute `{unit}`, which the context lacks")]
    TargetingKeyMissing { key: String, unit: String },
}

impl FlagError {
    /// The OFREP `errorCode`.
    pub fn code(&self) -> &'static str {
        match self {
            FlagError::NotFound(_) => ErrorCode::FlagNotFound.as_str(),
            FlagError::TargetingKeyMissing { .. } => ErrorCode::TargetingKeyMissing.as_str(),
        }
    }
}

/// One successful evaluation, serialised as OFREP's `evaluationSuccess`.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation<'a> {
    key: &'a str,
    resolved: Resolved<'a>,
    revision: u64,
}

/// Evaluates flag `key` of `snapshot` for `ctx`, counting it in the metrics as
/// `counting` says.
pub fn evaluate<'a>(
    counting: Counting<'_>,
    snapshot: &'a Snapshot,
    key: &'a str,
    ctx: &Context,
) -> Result<Evaluation<'a>, FlagError> {
    match snapshot.get(key) {
        Some(release) => evaluate_release(counting, snapshot, release, ctx),
        None => {
            crate::metrics::count_evaluation(counting, None, &Resolved::NOT_FOUND.decision);
            Err(FlagError::NotFound(key.to_owned()))
        }
    }
}

/// Evaluates `release` (one of `snapshot`'s) for `ctx`, counting it in the metrics as
/// `counting` says.
pub fn evaluate_release<'a>(
    counting: Counting<'_>,
    snapshot: &Snapshot,
    release: &'a Arc<CompiledRelease>,
    ctx: &Context,
) -> Result<Evaluation<'a>, FlagError> {
    let resolved = release.resolve(snapshot.kill_all(), ctx);
    crate::metrics::count_evaluation(counting, Some(release), &resolved.decision);
    match resolved.decision.error {
        None => Ok(Evaluation { key: release.key(), resolved, revision: snapshot.revision() }),
        Some(ErrorCode::FlagNotFound) => Err(FlagError::NotFound(release.key().to_owned())),
        Some(ErrorCode::TargetingKeyMissing) => {
            Err(FlagError::TargetingKeyMissing { key: release.key().to_owned(), unit: release.release().unit.clone() })
        }
    }
}

impl Serialize for Evaluation<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = &self.resolved.decision;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("key", self.key)?;
        if let Some(value) = self.resolved.value {
            map.serialize_entry("value", value)?;
        }
        map.serialize_entry("reason", d.reason.as_str())?;
        if let Some(version) = d.version {
            map.serialize_entry("variant", version)?;
        }
        map.serialize_entry("metadata", &FlagMetadata { bucket: d.bucket, revision: self.revision })?;
        map.end()
    }
}

#[derive(Serialize)]
struct FlagMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket: Option<u32>,
    revision: u64,
}

/// An OFREP failure body: `{"key"?, "errorCode", "errorDetails"}`.
#[derive(Debug, Serialize)]
pub struct Failure<'a> {
    /// The flag, when the failure is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    /// OFREP's error code.
    #[serde(rename = "errorCode")]
    pub error_code: &'a str,
    /// For humans.
    #[serde(rename = "errorDetails")]
    pub error_details: String,
}

/// The bulk evaluation of every flag of an environment, serialised as OFREP's
/// `bulkEvaluationSuccess` straight from the snapshot.
pub struct Bulk<'a> {
    /// The environment evaluated.
    pub env: &'a EnvName,
    /// How its evaluations are counted.
    pub labels: ReleaseLabels,
    /// Its snapshot.
    pub snapshot: &'a Snapshot,
    /// The snapshot's releases in key order.
    pub releases: &'a [Arc<CompiledRelease>],
    /// The context.
    pub context: &'a Context,
    /// Where OFREP clients follow changes (`GET /ofrep/v1/events`, absolute).
    pub events_url: &'a str,
}

impl Serialize for Bulk<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("flags", &Flags(self))?;
        map.serialize_entry(
            "metadata",
            &BulkMetadata { environment: self.env.as_str(), revision: self.snapshot.revision() },
        )?;
        map.serialize_entry(
            "eventStreams",
            &[EventStream { kind: "sse", url: self.events_url, inactivity_delay_sec: INACTIVITY_DELAY_SECS }],
        )?;
        map.end()
    }
}

struct Flags<'a>(&'a Bulk<'a>);

impl Serialize for Flags<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bulk = self.0;
        let counting = Counting { env: bulk.env.as_str(), labels: bulk.labels };
        let mut seq = s.serialize_seq(Some(bulk.releases.len()))?;
        for release in bulk.releases {
            match evaluate_release(counting, bulk.snapshot, release, bulk.context) {
                Ok(evaluation) => seq.serialize_element(&evaluation)?,
                Err(error) => seq.serialize_element(&Failure {
                    key: Some(release.key()),
                    error_code: error.code(),
                    error_details: error.to_string(),
                })?,
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct BulkMetadata<'a> {
    environment: &'a str,
    revision: u64,
}

#[derive(Serialize)]
struct EventStream<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    url: &'a str,
    #[serde(rename = "inactivityDelaySec")]
    inactivity_delay_sec: u32,
}

/// What the bulk `ETag` says about the flags: the environment revision plus a hash of the
/// environment and the context, so a client that changes its context never gets a 304
/// for the old one.
pub fn bulk_content_tag(env: &EnvName, revision: &str, context: &Context) -> String {
    // A context always serialises (string keys, plain values); an empty text would only
    // make the tag coarser, never wrong, as the revision is part of it.
    let text = serde_json::to_string(context).unwrap_or_default();
    format!("{revision}-{:016x}", hash_unit(env.as_str(), &text))
}

/// The bulk `ETag`: the [`bulk_content_tag`] and the expiry of the stream ticket the
/// answer's `eventStreams` URL carries. A client's tag thus says both which flags it holds
/// and until when its event stream URL can be (re)opened.
pub fn bulk_etag(content: &str, ticket_exp: u64) -> String {
    format!("{content}-{ticket_exp}")
}

/// Splits a [`bulk_etag`] into its content tag and its ticket expiry; `None` for a tag
/// this server did not make.
pub fn parse_bulk_etag(tag: &str) -> Option<(&str, u64)> {
    let (content, exp) = tag.rsplit_once('-')?;
    Some((content, exp.parse().ok()?))
}

/// OFREP change notifications for one environment: a `refetchEvaluation` event each
/// time the configuration moves to a new revision, heartbeat comments in between.
///
/// Rides on cohort's own stream subscription (the same fan-out, buffers, heartbeats
/// and shutdown): every data frame it yields means "the environment changed", and is
/// replaced by one refetch event naming the revision now served. Frames that arrive
/// together collapse into one event. A subscriber without `Last-Event-ID` first gets
/// one event at once, so a change between its bulk fetch and its connection is never
/// lost.
pub fn refetch_events(
    subscription: Subscription,
    snapshots: Arc<Snapshots>,
    env: EnvName,
) -> impl Stream<Item = Result<Bytes, Infallible>> + 'static {
    let mut announced: Option<(u64, u32)> = None;
    subscription.into_stream().filter_map(move |frame| {
        let event = match frame {
            Ok(frame) if frame.starts_with(b":") => Some(frame),
            Ok(_) => {
                // A kill served locally (the store down) keeps the revision but is a
                // change all the same.
                let served = snapshots.get(&env).unwrap_or_default();
                let version = served.version();
                announced.is_none_or(|before| version > before).then(|| {
                    announced = Some(version);
                    refetch_event(version.0, &served.etag())
                })
            }
            Err(never) => match never {},
        };
        std::future::ready(event.map(Ok))
    })
}

fn refetch_event(revision: u64, etag: &str) -> Bytes {
    Bytes::from(format!(
        "id: {revision}\nevent: message\ndata: {{\"type\":\"refetchEvaluation\",\"etag\":\"{etag}\"}}\n\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::{Release, SnapshotData};
    use serde_json::{Value, json};

    const COUNTING: Counting<'static> = Counting { env: "ofrep-test", labels: ReleaseLabels::Aggregate };

    fn snapshot() -> Snapshot {
        let mut typed = Release::new("banner", ["off", "on"]).with_allocation("on", 100_000);
        typed.values = [("off".to_owned(), json!(false)), ("on".to_owned(), json!(true))].into();
        Snapshot::compile(SnapshotData {
            revision: 7,
            kill_all: false,
            releases: vec![typed, Release::new("checkout", ["v1", "v2"])],
        })
        .expect("compiles")
    }

    #[test]
    fn a_success_carries_value_variant_reason_and_metadata() {
        let snapshot = snapshot();
        let ctx = Context::with_targeting_key("user-1");
        let evaluation = evaluate(COUNTING, &snapshot, "banner", &ctx).expect("evaluates");
        let json = serde_json::to_value(evaluation).expect("serialises");
        assert_eq!(json["key"], "banner");
        assert_eq!(json["value"], true);
        assert_eq!(json["variant"], "on");
        assert_eq!(json["reason"], "SPLIT");
        assert_eq!(json["metadata"]["revision"], 7);
        assert!(json["metadata"]["bucket"].is_u64());
        let untyped =
            serde_json::to_value(evaluate(COUNTING, &snapshot, "checkout", &ctx).expect("evaluates")).expect("json");
        assert_eq!(untyped["value"], "v1", "without values the value is the version name");
    }

    #[test]
    fn unknown_flags_and_missing_units_are_flag_errors() {
        let snapshot = snapshot();
        let missing = evaluate(COUNTING, &snapshot, "nope", &Context::new()).expect_err("not found");
        assert_eq!(missing.code(), "FLAG_NOT_FOUND");
        let no_unit = evaluate(COUNTING, &snapshot, "banner", &Context::new()).expect_err("no unit");
        assert_eq!(no_unit.code(), "TARGETING_KEY_MISSING");
        assert!(no_unit.to_string().contains("targetingKey"), "{no_unit}");
    }

    #[test]
    fn the_bulk_etag_changes_with_the_revision_and_the_context() {
        let env = EnvName::parse("production").expect("env");
        let a = Context::with_targeting_key("a");
        let tag = |revision: &str, ctx: &Context| bulk_content_tag(&env, revision, ctx);
        assert_eq!(tag("3", &a), tag("3", &a.clone()));
        assert_ne!(tag("3", &a), tag("4", &a));
        assert_ne!(tag("3", &a), tag("3.1", &a));
        assert_ne!(tag("3", &a), tag("3", &Context::with_targeting_key("b")));
    }

    #[test]
    fn the_bulk_etag_carries_the_ticket_expiry() {
        let env = EnvName::parse("production").expect("env");
        let content = bulk_content_tag(&env, "3.1", &Context::with_targeting_key("a"));
        let etag = bulk_etag(&content, 1_800_000_300);
        assert_eq!(parse_bulk_etag(&etag), Some((content.as_str(), 1_800_000_300)));
        assert_eq!(parse_bulk_etag("3"), None);
        assert_eq!(parse_bulk_etag("3-abc-x"), None);
    }

    #[test]
    fn a_refetch_event_is_an_ofrep_message() {
        let text = String::from_utf8(refetch_event(12, "12").to_vec()).expect("utf-8");
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).expect("data");
        let data: Value = serde_json::from_str(data).expect("json");
        assert_eq!(data, json!({"type": "refetchEvaluation", "etag": "12"}));
        assert!(text.starts_with("id: 12\nevent: message\n"));
    }
}
