//! `/v1/envs/{env}/releases/{key}/ramp[/pause|/resume|/abort]` and `…/promote`.

use super::auth::{Authorized, Read, Write};
use super::releases::{ReasonRequest, optional_json};
use super::{ApiError, AppState, resource};
use crate::auth::Scope;
use crate::ramp::plan::RampRequest;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/releases/{key}/ramp").get(status).post(start))
        .service(resource("/releases/{key}/ramp/pause").post(pause))
        .service(resource("/releases/{key}/ramp/resume").post(resume))
        .service(resource("/releases/{key}/ramp/abort").post(abort))
        .service(resource("/releases/{key}/promote").post(promote));
}

/// Pausing is for people with `write` and for alerting systems with a `kill` token.
pub struct Halt;

impl super::auth::Policy for Halt {
    const SCOPES: &'static [Scope] = &[Scope::Write, Scope::Kill];
}

#[derive(Deserialize)]
struct KeyPath {
    key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    #[serde(default)]
    candidate: Option<String>,
}

async fn status(
    state: web::Data<AppState>,
    auth: Authorized<Read>,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.ramps.status(&auth.env, &path.key).await?))
}

async fn start(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
    body: web::Json<RampRequest>,
) -> Result<HttpResponse, ApiError> {
    let view = state.ramps.start(&auth.env, &auth.actor(), &path.key, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(view))
}

async fn pause(
    state: web::Data<AppState>,
    auth: Authorized<Halt>,
    path: web::Path<KeyPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    Ok(HttpResponse::Ok().json(state.ramps.pause(&auth.env, &auth.actor(), &path.key, reason).await?))
}

async fn resume(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.ramps.resume(&auth.env, &auth.actor(), &path.key).await?))
}

async fn abort(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    Ok(HttpResponse::Ok().json(state.ramps.abort(&auth.env, &auth.actor(), &path.key, reason).await?))
}

async fn promote(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let candidate = optional_json::<PromoteRequest>(&body)?.and_then(|b| b.candidate);
    Ok(HttpResponse::Ok().json(state.ramps.promote(&auth.env, &auth.actor(), &path.key, candidate).await?))
}
