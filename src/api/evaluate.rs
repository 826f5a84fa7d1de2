//! `POST /v1/envs/{env}/evaluate`: one context, some or all releases, answered from the
//! in-memory snapshot (never the store).

use super::auth::{Authorized, Eval};
use super::extract::RawBody;
use super::openapi::ErrorBody;
use super::{ApiError, AppState, resource};
use crate::metrics::Counting;
use crate::snapshots::EnvSnapshot;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use cohort_sdk::{CompiledRelease, Context, Resolved, Snapshot};
use foldhash::fast::FixedState;
use serde::Deserialize;
use serde::de::{Deserializer, Visitor};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/evaluate").post(evaluate));
}

/// Most releases one request may name.
const MAX_RELEASES: usize = 1_000;

// Documents the body for the OpenAPI document; [`Request`] is what reads it, borrowing
// release keys from the bytes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct EvaluateRequest {
    /// Attributes of the unit: `{"targetingKey": "user-42", "country": "NZ", …}`.
    #[serde(default)]
    context: Context,
    /// Omitted: every release of the environment.
    #[serde(default)]
    #[schema(max_items = 1000, example = json!(["checkout"]))]
    releases: Option<Vec<String>>,
}

/// [`EvaluateRequest`], borrowing release keys from the body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request<'a> {
    #[serde(default)]
    context: Context,
    #[serde(default, borrow)]
    releases: Option<Vec<Key<'a>>>,
}

/// A release key as the request spells it, as bytes: borrowed unless it has escapes, and
/// checked as UTF-8 only if the environment does not hold it (a key it holds is a valid
/// name). serde_json's string parsing validated UTF-8 for every key, ≈130 instructions
/// for a short one.
struct Key<'a>(Cow<'a, [u8]>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a release key")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_vec())))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.as_bytes().to_vec())))
            }
        }
        // A JSON string arrives as its bytes, escapes resolved; anything else is refused.
        d.deserialize_bytes(KeyVisitor(PhantomData))
    }
}

/// `{"revision", "results": {release: decision}}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `Response` serialises.
struct EvaluateResponse {
    revision: u64,
    results: std::collections::BTreeMap<String, Decision>,
}

/// One release's decision.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `DecisionView` serialises.
struct Decision {
    /// Absent when the release cannot be evaluated (see `error`).
    version: Option<String>,
    /// The version's typed value, or its name.
    value: Option<serde_json::Value>,
    /// `SPLIT`, `TARGETING_MATCH` (an override or a rule), `DEFAULT`, `DISABLED` or `ERROR`.
    reason: String,
    bucket: Option<u32>,
    /// With `ERROR`: `FLAG_NOT_FOUND` or `TARGETING_KEY_MISSING`.
    error: Option<String>,
}

/// Evaluates some or all releases for one context, from the in-memory snapshot.
#[utoipa::path(post, path = "/v1/envs/{env}/evaluate", tag = "evaluation", params(("env" = String, Path, description = "Environment name", example = "production")), request_body = EvaluateRequest,
    responses(
        (status = 200, description = "The decisions", body = EvaluateResponse),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
pub(super) async fn evaluate(
    state: web::Data<AppState>,
    auth: Authorized<Eval>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    let request: Request<'_> = body.json()?;
    let env_snapshot = super::served(&state, &auth.env)?;
    let targets: Vec<Target<'_>> = match &request.releases {
        Some(keys) => {
            if keys.len() > MAX_RELEASES {
                return Err(ApiError::BadRequest(format!("at most {MAX_RELEASES} releases per request")));
            }
            targets(&env_snapshot, keys)?
        }
        None => env_snapshot.sorted().iter().map(Target::Found).collect(),
    };
    let mut out = Vec::with_capacity(64 + targets.len() * 96);
    let counting = Counting { env: auth.env.as_str(), labels: state.release_labels };
    write_response(&mut out, counting, &env_snapshot.snapshot, &targets, &request.context);
    Ok(HttpResponse::Ok().insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json"))).body(out))
}

/// A release the request names: found in the snapshot, or not.
enum Target<'a> {
    Found(&'a Arc<CompiledRelease>),
    Missing(&'a str),
}

/// The named releases, looked up once, each once (a key named twice is answered once).
/// Found releases are deduplicated by identity — a pointer hashes in a few instructions,
/// a key string in dozens — and the rare unknown keys by name. An unknown key that is
/// not UTF-8 makes the body invalid JSON.
fn targets<'a>(served: &'a EnvSnapshot, keys: &'a [Key<'_>]) -> Result<Vec<Target<'a>>, ApiError> {
    let mut targets = Vec::with_capacity(keys.len());
    // One key has nothing to be a duplicate of: no set on the common single-release path.
    let dedupe = keys.len() > 1;
    let mut found = HashSet::with_capacity_and_hasher(if dedupe { keys.len() } else { 0 }, FixedState::default());
    let mut missing = HashSet::with_hasher(FixedState::default());
    for key in keys {
        match served.release(&key.0) {
            Some(release) if !dedupe || found.insert(Arc::as_ptr(release)) => targets.push(Target::Found(release)),
            Some(_) => {}
            None => {
                let key = std::str::from_utf8(&key.0)
                    .map_err(|_| ApiError::InvalidJson("a release key is not valid UTF-8".into()))?;
                if !dedupe || missing.insert(key) {
                    targets.push(Target::Missing(key));
                }
            }
        }
    }
    Ok(targets)
}

/// Writes `{"revision":…,"results":{key:decision,…}}` straight from the snapshot.
/// Written by hand rather than through serde: per release it is a handful of copies,
/// where serde_json escaped every string and grew the buffer in steps (≈1,200
/// instructions per release, most of a 100-release request).
fn write_response(
    out: &mut Vec<u8>,
    counting: Counting<'_>,
    snapshot: &Snapshot,
    targets: &[Target<'_>],
    context: &Context,
) {
    out.extend_from_slice(b"{\"revision\":");
    out.extend_from_slice(itoa::Buffer::new().format(snapshot.revision()).as_bytes());
    out.extend_from_slice(b",\"results\":{");
    for (i, target) in targets.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match target {
            Target::Found(release) => {
                let resolved = release.resolve(snapshot.kill_all(), context);
                let cached = crate::answers::with(counting, release, &resolved.decision, |answer| {
                    answer.counter.inc();
                    out.extend_from_slice(answer.text(|| answer_text(release.key(), &resolved)));
                });
                if cached.is_none() {
                    // Unreachable (a found release's decision always has a version), and
                    // what the cache cannot key is counted like an unknown key.
                    crate::metrics::count_evaluation(counting, None, &resolved.decision);
                    out.extend_from_slice(&answer_text(release.key(), &resolved));
                }
                write_decision_end(out, &resolved.decision);
            }
            Target::Missing(key) => {
                let resolved = Resolved::NOT_FOUND;
                crate::metrics::count_evaluation(counting, None, &resolved.decision);
                write_str(out, key);
                out.extend_from_slice(b":{");
                write_decision_start(out, &resolved);
                write_decision_end(out, &resolved.decision);
            }
        }
    }
    out.extend_from_slice(b"}}");
}

/// The part of a found release's answer that only depends on the release, the version
/// and the reason: `"key":{"version":…,"value":…,"reason":"…"` (cached per thread).
fn answer_text(key: &str, resolved: &Resolved<'_>) -> Vec<u8> {
    let mut text = Vec::with_capacity(64);
    write_name(&mut text, key);
    text.extend_from_slice(b":{");
    write_decision_start(&mut text, resolved);
    text
}

/// A decision's `"version":…,"value":…,"reason":"…"`; `value` is the version's typed
/// value, or its name when the release declares none.
fn write_decision_start(out: &mut Vec<u8>, resolved: &Resolved<'_>) {
    let d = &resolved.decision;
    if let Some(version) = d.version {
        out.extend_from_slice(b"\"version\":");
        write_name(out, version);
        out.push(b',');
    }
    if let Some(value) = resolved.value {
        out.extend_from_slice(b"\"value\":");
        match value {
            serde_json::Value::String(s) if Some(s.as_str()) == d.version => write_name(out, s),
            serde_json::Value::String(s) => write_str(out, s),
            // Writing into a Vec cannot fail, and a JSON value always serialises.
            other => serde_json::to_writer(&mut *out, other).unwrap_or_default(),
        }
        out.push(b',');
    }
    out.extend_from_slice(b"\"reason\":\"");
    out.extend_from_slice(d.reason.as_str().as_bytes());
    out.push(b'"');
}

/// The rest of a decision: `,"bucket":…` and `,"error":"…"` when present, and `}`.
fn write_decision_end(out: &mut Vec<u8>, d: &cohort_sdk::Decision<'_>) {
    if let Some(bucket) = d.bucket {
        out.extend_from_slice(b",\"bucket\":");
        out.extend_from_slice(itoa::Buffer::new().format(bucket).as_bytes());
    }
    if let Some(error) = d.error {
        out.extend_from_slice(b",\"error\":\"");
        out.extend_from_slice(error.as_str().as_bytes());
        out.push(b'"');
    }
    out.push(b'}');
}

/// A release key or version name as a JSON string: names are letters, digits, `-`,
/// `_` and `.` (checked when the release is compiled), so there is nothing to escape.
fn write_name(out: &mut Vec<u8>, name: &str) {
    debug_assert!(!name.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
}

/// Any other text as a JSON string (an unknown key from the request, a string value):
/// copied when it has nothing to escape, through serde_json's escaper when it has.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        serde_json::to_writer(&mut *out, s).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sdk::{Release, SnapshotData};
    use serde_json::json;

    /// The hand-written response is the JSON serde would write, for every kind of
    /// decision and for keys and values that need escaping.
    #[test]
    fn written_response_is_valid_json_of_the_documented_shape() {
        let mut typed = Release::new("typed", ["off", "on"]).with_allocation("on", 50_000);
        typed.values = [("off".to_owned(), json!({"a": [1, "x\"y"]})), ("on".to_owned(), json!({"b": null}))].into();
        let killed = {
            let mut r = Release::new("killed", ["v1", "v2"]);
            r.killed = true;
            r
        };
        let snapshot = Snapshot::compile(SnapshotData {
            revision: 42,
            kill_all: false,
            releases: vec![Release::new("plain", ["v1", "v2"]).with_allocation("v2", 100_000), typed, killed],
        })
        .unwrap();
        let context: Context = serde_json::from_value(json!({"targetingKey": "user-7"})).unwrap();
        let keys = ["plain", "typed", "killed", "no\"such\\key\u{1}"];
        let named: Vec<Key<'_>> =
            [&keys[..], &keys[..]].concat().into_iter().map(|k| Key(k.as_bytes().into())).collect();
        let served = EnvSnapshot::serving(snapshot.clone());
        let found = targets(&served, &named).unwrap();
        assert_eq!(found.len(), keys.len(), "each key once");
        let mut out = Vec::new();
        let counting = Counting { env: "evaluate-test", labels: crate::metrics::ReleaseLabels::Aggregate };
        write_response(&mut out, counting, &snapshot, &found, &context);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut expected = serde_json::Map::new();
        for key in keys {
            let resolved = snapshot.resolve(key, &context);
            let d = resolved.decision;
            let mut decision = serde_json::Map::new();
            if let Some(v) = d.version {
                decision.insert("version".into(), json!(v));
            }
            if let Some(v) = resolved.value {
                decision.insert("value".into(), v.clone());
            }
            decision.insert("reason".into(), json!(d.reason.as_str()));
            if let Some(b) = d.bucket {
                decision.insert("bucket".into(), json!(b));
            }
            if let Some(e) = d.error {
                decision.insert("error".into(), json!(e.as_str()));
            }
            expected.insert(key.to_owned(), decision.into());
        }
        assert_eq!(parsed, json!({"revision": 42, "results": expected}));
        assert_eq!(parsed["results"]["killed"]["reason"], "DISABLED");
        assert_eq!(parsed["results"]["no\"such\\key\u{1}"]["error"], "FLAG_NOT_FOUND");
        assert!(parsed["results"]["typed"]["value"].is_object());
    }
}
