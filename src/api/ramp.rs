//! `/v1/envs/{env}/releases/{key}/ramp[/pause|/resume|/abort]` and `…/promote`.

use super::auth::{Authorized, Read, Write};
use super::openapi::ErrorBody;
use super::releases::{ReasonRequest, optional_json};
use super::{ApiError, AppState, resource};
use crate::auth::Scope;
use crate::ramp::RampStatus;
use crate::ramp::plan::RampRequest;
use crate::releases::ReleaseView;
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

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    /// The version to promote; the ramp's candidate when omitted.
    #[serde(default)]
    candidate: Option<String>,
}

/// The ramp: state, step, next transition and the guard's live figures.
#[utoipa::path(get, path = "/v1/envs/{env}/releases/{key}/ramp", tag = "ramps", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout")),
    responses(
        (status = 200, description = "The ramp", body = RampStatus),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 409, description = "The release has no ramp", body = ErrorBody),
    ))]
async fn status(
    state: web::Data<AppState>,
    auth: Authorized<Read>,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.ramps.status(&auth.env, &path.key).await?))
}

/// Starts a ramp.
#[utoipa::path(post, path = "/v1/envs/{env}/releases/{key}/ramp", tag = "ramps", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout")), request_body = RampRequest,
    responses(
        (status = 201, description = "Started", body = ReleaseView),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 409, description = "The release's state does not allow a ramp now", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape, or a plan that cannot run", body = ErrorBody),
    ))]
async fn start(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
    body: web::Json<RampRequest>,
) -> Result<HttpResponse, ApiError> {
    let view = state.ramps.start(&auth.env, &auth.actor(), &path.key, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(view))
}

/// Pauses a ramp (a `write` or `kill` token).
#[utoipa::path(post, path = "/v1/envs/{env}/releases/{key}/ramp/pause", tag = "ramps", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout")), request_body(content = Option<ReasonRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "Paused", body = ReleaseView),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 409, description = "The ramp's state does not allow this now", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn pause(
    state: web::Data<AppState>,
    auth: Authorized<Halt>,
    path: web::Path<KeyPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    Ok(HttpResponse::Ok().json(state.ramps.pause(&auth.env, &auth.actor(), &path.key, reason).await?))
}

/// Resumes a paused ramp.
#[utoipa::path(post, path = "/v1/envs/{env}/releases/{key}/ramp/resume", tag = "ramps", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout")),
    responses(
        (status = 200, description = "Resumed", body = ReleaseView),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 409, description = "The ramp's state does not allow this now", body = ErrorBody),
    ))]
async fn resume(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.ramps.resume(&auth.env, &auth.actor(), &path.key).await?))
}

/// Aborts a ramp: the candidate goes back to 0 %.
#[utoipa::path(post, path = "/v1/envs/{env}/releases/{key}/ramp/abort", tag = "ramps", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout")), request_body(content = Option<ReasonRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "Aborted", body = ReleaseView),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 409, description = "The ramp's state does not allow this now", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn abort(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    Ok(HttpResponse::Ok().json(state.ramps.abort(&auth.env, &auth.actor(), &path.key, reason).await?))
}

/// The candidate becomes the baseline; the allocation is cleared.
#[utoipa::path(post, path = "/v1/envs/{env}/releases/{key}/promote", tag = "ramps", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout")),
    request_body(content = Option<PromoteRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "Promoted", body = ReleaseView),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 409, description = "A ramp of another candidate is running or paused (`ramp_active`), or the release's state does not allow this now", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape, or not a version", body = ErrorBody),
    ))]
async fn promote(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let candidate = optional_json::<PromoteRequest>(&body)?.and_then(|b| b.candidate);
    Ok(HttpResponse::Ok().json(state.ramps.promote(&auth.env, &auth.actor(), &path.key, candidate).await?))
}
