//! `POST /v1/envs/{env}/events` (SDK outcome reports) and
//! `GET /v1/envs/{env}/releases/{key}/health` (what they add up to).

use super::auth::{Authorized, Read, Report as ReportScope};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, resource, served};
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
        let message = e.to_string();
        match e {
            EventsError::Invalid(message) => ApiError::BadRequest(message),
            EventsError::Unknown { listed, total, .. } => {
                ApiError::UnknownOutcomePairs { message, unknown: listed, total }
            }
            EventsError::TooManyPairs { retry_after_secs, .. } => ApiError::RateLimited { message, retry_after_secs },
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

/// A refused report: `unknown_outcome_pairs` lists the first pairs the environment does
/// not hold (`unknown`) and how many there were (`unknown_total`); nothing was stored.
#[derive(Serialize, utoipa::ToSchema)]
struct UnknownPairsBody {
    error: UnknownPairsDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UnknownPairsDetail {
    /// `unknown_outcome_pairs`, or `invalid_body` for a body of the wrong shape.
    code: String,
    message: String,
    /// At most 20 of the pairs the environment does not hold.
    unknown: Option<Vec<events::Pair>>,
    unknown_total: Option<usize>,
}

/// Records outcome counts reported by SDKs (a `report` token). Every (release, version)
/// must be one the environment holds; a report naming any other is refused whole.
#[utoipa::path(post, path = "/v1/envs/{env}/events", tag = "events", params(("env" = String, Path, description = "Environment name", example = "production")), request_body = Report,
    responses(
        (status = 202, description = "Recorded", body = Accepted),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape, or release/version pairs the environment does not hold (`unknown_outcome_pairs`, listing them); nothing was recorded", body = UnknownPairsBody),
    ))]
async fn post_events(
    state: web::Data<AppState>,
    auth: Authorized<ReportScope>,
    body: web::Json<Report>,
) -> Result<HttpResponse, ApiError> {
    let batch = match body.into_inner() {
        Report::Bare(batch) | Report::Wrapped { events: batch } => batch,
    };
    let held = served(&state, &auth.env)?;
    let recorded =
        state.outcomes.record(state.releases.store(), &auth.env, &held.snapshot, batch, events::now_ms()).await?;
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
    if super::served(&state, &auth.env)?.release(path.key.as_bytes()).is_none() {
        return Err(ApiError::ReleaseNotFound(path.into_inner().key));
    }
    let (versions, per_minute) =
        events::health(state.releases.store(), &auth.env, &path.key, minutes, events::now_ms()).await?;
    Ok(HttpResponse::Ok().json(HealthReport { release: path.into_inner().key, minutes, versions, per_minute }))
}
