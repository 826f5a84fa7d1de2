//! `POST /v1/envs/{env}/events` (SDK outcome reports) and
//! `GET /v1/envs/{env}/releases/{key}/health` (what they add up to).

use super::auth::{Authorized, Eval, Read};
use super::{ApiError, AppState, resource};
use crate::events::{self, EventsError};
use crate::store::OutcomeCount;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

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
#[derive(Deserialize)]
#[serde(untagged)]
enum Report {
    Bare(Vec<OutcomeCount>),
    Wrapped { events: Vec<OutcomeCount> },
}

async fn post_events(
    state: web::Data<AppState>,
    auth: Authorized<Eval>,
    body: web::Json<Report>,
) -> Result<HttpResponse, ApiError> {
    let batch = match body.into_inner() {
        Report::Bare(batch) | Report::Wrapped { events: batch } => batch,
    };
    let recorded = events::record(state.releases.store(), &auth.env, batch).await?;
    Ok(HttpResponse::Accepted().json(json!({"accepted": recorded})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthParams {
    minutes: Option<u64>,
}

#[derive(Deserialize)]
struct KeyPath {
    key: String,
}

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
    let (versions, per_minute) = events::health(state.releases.store(), &auth.env, &path.key, minutes).await?;
    Ok(HttpResponse::Ok().json(json!({
        "release": path.key,
        "minutes": minutes,
        "versions": versions,
        "per_minute": per_minute,
    })))
}
