//! An [OpenFeature](https://openfeature.dev) provider (feature `openfeature`): the
//! `open-feature` crate's [`FeatureProvider`] over the local-evaluation [`Client`], so
//! an application written against OpenFeature evaluates cohort releases in-process.
//!
//! A release is a flag; its versions are the variants. The value is the version's typed
//! value (`values` in the release), or the version name when it declares none — so any
//! release resolves as a string, and boolean/number/object flags need `values`. Reasons
//! are cohort's (`SPLIT`, `TARGETING_MATCH`, `DEFAULT`, `DISABLED`, and `STALE` past the
//! client's staleness limit); flag metadata carries the `revision` and, when the split
//! decided, the `bucket`.
//!
//! Failures follow OpenFeature: an unknown release is `FLAG_NOT_FOUND`, a context
//! without the release's unit `TARGETING_KEY_MISSING`, asking for a type the release's
//! values are not `TYPE_MISMATCH`, and evaluating before any configuration arrived
//! `PROVIDER_NOT_READY`; the OpenFeature client then hands back the caller's default.
//!
//! `open-feature` 0.3 has no provider events; [`CohortProvider::changes`] tells an
//! application when the configuration changed (kills included), and evaluations always
//! use the newest configuration without being told.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cohort_sdk::client::Client;
//! use cohort_sdk::client::openfeature::CohortProvider;
//! use open_feature::{EvaluationContext, OpenFeature};
//!
//! let client = Client::builder("http://127.0.0.1:8080", "production", "an-eval-token").build()?;
//! let mut api = OpenFeature::singleton_mut().await;
//! api.set_provider(CohortProvider::new(client)).await; // waits for the first snapshot
//! let flags = api.create_client();
//! let ctx = EvaluationContext::default().with_targeting_key("user-42");
//! let enabled = flags.get_bool_value("new-checkout", Some(&ctx), None).await.unwrap_or(false);
//! # let _ = enabled;
//! # Ok(())
//! # }
//! ```

use super::Client;
use crate::context::{Context, Value as CohortValue};
use crate::decision::{ErrorCode, Reason};
use crate::value::JsonValue;
use open_feature::provider::{FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode, EvaluationReason,
    EvaluationResult, FlagMetadata, StructValue, Value, async_trait,
};
use std::time::Duration;
use tokio::sync::watch;

/// How long [`FeatureProvider::initialize`] waits for the first configuration unless
/// told otherwise.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// cohort as an OpenFeature provider; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct CohortProvider {
    client: Client,
    metadata: ProviderMetadata,
    init_timeout: Duration,
}

impl CohortProvider {
    /// A provider evaluating with `client` (which keeps its configuration in sync).
    pub fn new(client: Client) -> Self {
        CohortProvider { client, metadata: ProviderMetadata::new("cohort"), init_timeout: DEFAULT_INIT_TIMEOUT }
    }

    /// How long initialisation (`set_provider`) waits for the first configuration
    /// (default 5 s). Past it the provider reports `NOT_READY` and evaluations fail with
    /// `PROVIDER_NOT_READY` until the configuration arrives.
    #[must_use]
    pub fn init_timeout(mut self, timeout: Duration) -> Self {
        self.init_timeout = timeout;
        self
    }

    /// The underlying client (for `track`, revisions, …).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The configuration revision in use, updated on every change (a kill included):
    /// `changed().await` on it to react, as OpenFeature's `PROVIDER_CONFIGURATION_CHANGED`
    /// event would.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.client.subscribe()
    }

    fn resolve<T>(
        &self,
        key: &str,
        ctx: &EvaluationContext,
        expected: &str,
        convert: impl FnOnce(&JsonValue) -> Option<T>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        if !self.client.is_ready() {
            return Err(error(EvaluationErrorCode::ProviderNotReady, "no configuration from the cohort service yet"));
        }
        let context = to_context(ctx);
        let snapshot = self.client.snapshot();
        let resolved = if self.client.is_stale() {
            // Past the staleness limit the client serves every known release's baseline.
            snapshot.get(key).map(|release| {
                let version = release.release().baseline();
                (version, release.value(0), Reason::Stale, None, None)
            })
        } else {
            let r = snapshot.resolve(key, &context);
            let d = r.decision;
            d.version.map(|_| (d.version, r.value, d.reason, d.bucket, d.error))
        };
        let Some((version, value, reason, bucket, error_code)) = resolved else {
            return Err(error(
                EvaluationErrorCode::FlagNotFound,
                format!("release `{key}` is not in this environment (revision {})", snapshot.revision()),
            ));
        };
        if let Some(code) = error_code {
            let (code, message) = match code {
                ErrorCode::FlagNotFound => (EvaluationErrorCode::FlagNotFound, format!("release `{key}` not found")),
                ErrorCode::TargetingKeyMissing => (
                    EvaluationErrorCode::TargetingKeyMissing,
                    format!("release `{key}` splits on a context attribute the context lacks"),
                ),
            };
            return Err(error(code, message));
        }
        let value = value.and_then(convert).ok_or_else(|| {
            let kind = snapshot.get(key).map_or("unknown", |r| r.value_type().as_str());
            error(EvaluationErrorCode::TypeMismatch, format!("release `{key}` has {kind} values, not {expected}"))
        })?;
        let mut metadata =
            FlagMetadata::default().with_value("revision", i64::try_from(snapshot.revision()).unwrap_or(i64::MAX));
        if let Some(bucket) = bucket {
            metadata.add_value("bucket", bucket);
        }
        Ok(ResolutionDetails {
            value,
            variant: version.map(str::to_owned),
            reason: Some(to_reason(reason)),
            flag_metadata: Some(metadata),
        })
    }
}

#[async_trait]
impl FeatureProvider for CohortProvider {
    async fn initialize(&mut self, _context: &EvaluationContext) {
        if !self.client.wait_ready(self.init_timeout).await {
            tracing::warn!(timeout = ?self.init_timeout, "cohort provider: no configuration yet; evaluations fail with PROVIDER_NOT_READY until it arrives");
        }
    }

    fn status(&self) -> ProviderStatus {
        if !self.client.is_ready() {
            ProviderStatus::NotReady
        } else if self.client.is_stale() {
            ProviderStatus::STALE
        } else {
            ProviderStatus::Ready
        }
    }

    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(key, ctx, "boolean", JsonValue::as_bool)
    }

    async fn resolve_int_value(&self, key: &str, ctx: &EvaluationContext) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve(key, ctx, "integer", JsonValue::as_i64)
    }

    async fn resolve_float_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve(key, ctx, "number", JsonValue::as_f64)
    }

    async fn resolve_string_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(key, ctx, "string", |v| v.as_str().map(str::to_owned))
    }

    async fn resolve_struct_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve(key, ctx, "object", |v| v.as_object().map(to_struct))
    }
}

fn error(code: EvaluationErrorCode, message: impl Into<String>) -> EvaluationError {
    EvaluationError { code, message: Some(message.into()) }
}

/// OpenFeature's reason for cohort's, by wire name so that a reason added to cohort
/// later still passes through (as `Other`).
fn to_reason(reason: Reason) -> EvaluationReason {
    match reason.as_str() {
        "SPLIT" => EvaluationReason::Split,
        "TARGETING_MATCH" => EvaluationReason::TargetingMatch,
        "DEFAULT" => EvaluationReason::Default,
        "DISABLED" => EvaluationReason::Disabled,
        "ERROR" => EvaluationReason::Error,
        other => EvaluationReason::Other(other.to_owned()),
    }
}

/// cohort's context for OpenFeature's: the targeting key as `targetingKey`, scalars as
/// they are; date-times and opaque structures match no condition.
fn to_context(ctx: &EvaluationContext) -> Context {
    let mut context = Context::new();
    for (name, value) in &ctx.custom_fields {
        let value = match value {
            EvaluationContextFieldValue::Bool(b) => CohortValue::Bool(*b),
            EvaluationContextFieldValue::Int(i) => CohortValue::Int(*i),
            EvaluationContextFieldValue::Float(f) => CohortValue::Float(*f),
            EvaluationContextFieldValue::String(s) => CohortValue::Str(s.clone()),
            EvaluationContextFieldValue::DateTime(_) | EvaluationContextFieldValue::Struct(_) => CohortValue::Other,
        };
        context.set(name, value);
    }
    if let Some(key) = &ctx.targeting_key {
        context.set(crate::DEFAULT_UNIT, key.as_str());
    }
    context
}

/// A JSON object as OpenFeature's structure. JSON `null` has no OpenFeature
/// counterpart: null fields and array items are left out.
fn to_struct(object: &serde_json::Map<String, JsonValue>) -> StructValue {
    StructValue { fields: object.iter().filter_map(|(name, value)| Some((name.clone(), to_value(value)?))).collect() }
}

fn to_value(value: &JsonValue) -> Option<Value> {
    Some(match value {
        JsonValue::Null => return None,
        JsonValue::Bool(b) => Value::Bool(*b),
        JsonValue::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        JsonValue::String(s) => Value::String(s.clone()),
        JsonValue::Array(items) => Value::Array(items.iter().filter_map(to_value).collect()),
        JsonValue::Object(object) => Value::Struct(to_struct(object)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_convert_to_structures_without_nulls() {
        let JsonValue::Object(object) = json!({"limit": 3, "ratio": 0.5, "name": "x", "on": true, "gone": null, "tags": ["a", null], "nested": {"k": 1}})
        else {
            unreachable!("an object literal")
        };
        let s = to_struct(&object);
        assert_eq!(s.fields.get("limit"), Some(&Value::Int(3)));
        assert_eq!(s.fields.get("ratio"), Some(&Value::Float(0.5)));
        assert_eq!(s.fields.get("on"), Some(&Value::Bool(true)));
        assert_eq!(s.fields.get("gone"), None);
        assert_eq!(s.fields.get("tags"), Some(&Value::Array(vec![Value::String("a".into())])));
        assert_eq!(
            s.fields.get("nested").and_then(Value::as_struct).and_then(|n| n.fields.get("k")),
            Some(&Value::Int(1))
        );
    }

    #[test]
    fn the_targeting_key_becomes_the_default_unit() {
        let ctx = EvaluationContext::default().with_targeting_key("user-1").with_custom_field("country", "NZ");
        let context = to_context(&ctx);
        assert_eq!(context.get("targetingKey").and_then(CohortValue::as_str), Some("user-1"));
        assert_eq!(context.get("country").and_then(CohortValue::as_str), Some("NZ"));
    }

    #[test]
    fn reasons_keep_their_names() {
        assert_eq!(to_reason(Reason::Split), EvaluationReason::Split);
        assert_eq!(to_reason(Reason::Disabled), EvaluationReason::Disabled);
        assert_eq!(to_reason(Reason::Stale), EvaluationReason::Other("STALE".into()));
    }
}
