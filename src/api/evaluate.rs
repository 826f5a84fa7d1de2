//! `POST /v1/envs/{env}/evaluate`: one context, some or all releases, answered from the
//! in-memory snapshot (never the store).

use super::auth::{Authorized, Eval};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, resource};
use actix_web::{HttpResponse, web};
use cohort_sdk::{Context, Resolved, Snapshot};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/evaluate").post(evaluate));
}

/// Most releases one request may name.
const MAX_RELEASES: usize = 1_000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EvaluateRequest {
    /// Attributes of the unit: `{"targetingKey": "user-42", "country": "NZ", …}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    context: Context,
    /// Omitted: every release of the environment.
    #[serde(default)]
    releases: Option<Vec<String>>,
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
    /// `SPLIT`, `TARGETING_MATCH`, `OVERRIDE`, `DISABLED`, `DEFAULT`, `ERROR`, …
    reason: String,
    bucket: Option<u32>,
    /// `FLAG_NOT_FOUND`, `TARGETING_KEY_MISSING`, …
    error: Option<String>,
}

/// Evaluates some or all releases for one context, from the in-memory snapshot.
#[utoipa::path(post, path = "/v1/envs/{env}/evaluate", tag = "evaluation", params(("env" = String, Path, description = "Environment name", example = "production")), request_body = EvaluateRequest,
    responses(
        (status = 200, description = "The decisions", body = EvaluateResponse),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn evaluate(
    state: web::Data<AppState>,
    auth: Authorized<Eval>,
    body: web::Json<EvaluateRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    let env_snapshot = state.snapshots.get(&auth.env).unwrap_or_default();
    let snapshot = &env_snapshot.snapshot;
    let keys: Vec<&str> = match &request.releases {
        Some(keys) => {
            if keys.len() > MAX_RELEASES {
                return Err(ApiError::BadRequest(format!("at most {MAX_RELEASES} releases per request")));
            }
            if keys.len() < 2 {
                // Nothing to deduplicate: no set to build on the common single-release path.
                keys.iter().map(String::as_str).collect()
            } else {
                let mut seen = HashSet::with_capacity(keys.len());
                keys.iter().map(String::as_str).filter(|k| seen.insert(*k)).collect()
            }
        }
        None => snapshot.releases().map(|r| r.key()).collect(),
    };
    let body = serde_json::to_vec(&Response { snapshot, keys: &keys, context: &request.context })
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// Serialises decisions straight from the snapshot, without building an intermediate map.
struct Response<'a> {
    snapshot: &'a Snapshot,
    keys: &'a [&'a str],
    context: &'a Context,
}

impl Serialize for Response<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Results<'a>(&'a Response<'a>);
        impl Serialize for Results<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.keys.len()))?;
                for key in self.0.keys {
                    let resolved = self.0.snapshot.resolve(key, self.0.context);
                    let d = &resolved.decision;
                    crate::metrics::METRICS
                        .evaluations
                        .with_label_values(&[key, d.version.unwrap_or("-"), d.reason.as_str()])
                        .inc();
                    map.serialize_entry(key, &DecisionView(resolved))?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("revision", &self.snapshot.revision())?;
        map.serialize_entry("results", &Results(self))?;
        map.end()
    }
}

/// `{"version", "value", "reason", "bucket"?, "error"?}`; `value` is the version's
/// typed value, or its name when the release declares none.
pub struct DecisionView<'a>(pub Resolved<'a>);

impl Serialize for DecisionView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = &self.0.decision;
        let len = 1
            + usize::from(d.version.is_some())
            + usize::from(self.0.value.is_some())
            + usize::from(d.bucket.is_some())
            + usize::from(d.error.is_some());
        let mut map = s.serialize_map(Some(len))?;
        if let Some(version) = d.version {
            map.serialize_entry("version", version)?;
        }
        if let Some(value) = self.0.value {
            map.serialize_entry("value", value)?;
        }
        map.serialize_entry("reason", d.reason.as_str())?;
        if let Some(bucket) = d.bucket {
            map.serialize_entry("bucket", &bucket)?;
        }
        if let Some(error) = d.error {
            map.serialize_entry("error", error.as_str())?;
        }
        map.end()
    }
}
