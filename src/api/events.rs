//! `POST /v1/envs/{env}/events` (SDK outcome reports) and
//! `GET /v1/envs/{env}/releases/{key}/health` (what they add up to).

use super::auth::{Authorized, Eval, Read};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, resource};
use crate::events::{self, EventsError, MinuteCounts, VersionHealth};
use crate::store::OutcomeCount;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/events").post(post_events)).service(resource("/releases/{key}/health").get(health));
}

impl From<EventsError> for ApiError {
    fn from(e: EventsError) -> Self {
        match e {
            EventsError::Invalid(message) => ApiError::BadRequest(message),
            EventsError::Store(e) => e.into(),
        }
    }
}

/// A bare array of counts, or `{"events": [...]}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum Report {
    Bare(Vec<OutcomeCount>),
    Wrapped { events: Vec<OutcomeCount> },
}

/// How many (release, version) counts were recorded.
#[derive(Serialize, utoipa::ToSchema)]
struct Accepted {
    accepted: usize,
}

/// Records outcome counts reported by SDKs.
#[utoipa::path(post, path = "/v1/envs/{env}/events", tag = "events", params(("env" = String, Path, description = "Environment name", example = "production")), request_body = Report,
    responses(
        (status = 202, description = "Recorded", body = Accepted),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn post_events(
    state: web::Data<AppState>,
    auth: Authorized<Eval>,
    body: web::Json<Report>,
) -> Result<HttpResponse, ApiError> {
    let batch = match body.into_inner() {
        Report::Bare(batch) | Report::Wrapped { events: batch } => batch,
    };
    let recorded = events::record(state.releases.store(), &auth.env, batch, events::now_ms()).await?;
    Ok(HttpResponse::Accepted().json(Accepted { accepted: recorded }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HealthParams {
    /// The window, 1 to 1440 minutes (default 10).
    minutes: Option<u64>,
}

#[derive(Deserialize)]
struct KeyPath {
    key: String,
}

/// Totals and error rates per version over a window, and the per-minute counts.
#[derive(Serialize, utoipa::ToSchema)]
struct HealthReport {
    release: String,
    minutes: u64,
    versions: BTreeMap<String, VersionHealth>,
    per_minute: Vec<MinuteCounts>,
}

/// What the release's reported outcomes add up to.
#[utoipa::path(get, path = "/v1/envs/{env}/releases/{key}/health", tag = "events", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout"), HealthParams),
    responses(
        (status = 200, description = "Totals per version", body = HealthReport),
        (status = 404, description = "No such release (`release_not_found`) or environment (`environment_not_found`)", body = ErrorBody),
    ))]
async fn health(
    state: web::Data<AppState>,
    auth: Authorized<Read>,
    path: web::Path<KeyPath>,
    params: web::Query<HealthParams>,
) -> Result<HttpResponse, ApiError> {
    let minutes = params.minutes.unwrap_or(10);
    if minutes == 0 || minutes > 24 * 60 {
        return Err(ApiError::BadRequest("minutes must be 1 to 1440".into()));
    }
    // Outcomes are kept by name, so without this a key the environment never held would
    // answer an empty report as if it were a quiet release.
    if super::served(&state, &auth.env)?.index().get(path.key.as_bytes()).is_none() {
        return Err(ApiError::ReleaseNotFound(path.into_inner().key));
    }
    let (versions, per_minute) =
        events::health(state.releases.store(), &auth.env, &path.key, minutes, events::now_ms()).await?;
    Ok(HttpResponse::Ok().json(HealthReport { release: path.into_inner().key, minutes, versions, per_minute }))
}
