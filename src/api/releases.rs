//! `/v1/envs/{env}/releases[/{key}[/allocation|/kill|/unkill]]`: release CRUD and the
//! per-release switches.

use super::auth::{Authorized, Kill, Read, Write};
use super::extract::{IfMatch, etag};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, resource};
use crate::releases::{ReleaseInput, ReleaseView};
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/releases").get(list).post(create))
        .service(resource("/releases/{key}").get(get).put(replace).delete(delete))
        .service(resource("/releases/{key}/allocation").post(set_allocation))
        .service(resource("/releases/{key}/kill").post(kill))
        .service(resource("/releases/{key}/unkill").post(unkill));
}

#[derive(Deserialize)]
struct KeyPath {
    key: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AllocationRequest {
    /// Candidate version → percent (0 to 100, at most three decimals).
    percent: BTreeMap<String, f64>,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonRequest {
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A body that may be empty (no options) or JSON. Unlike `Option<Json<_>>`, malformed
/// JSON is refused rather than silently ignored.
pub(super) fn optional_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        if e.is_data() { ApiError::InvalidBody(e.to_string()) } else { ApiError::InvalidJson(e.to_string()) }
    })
}

/// `GET …/releases`: the environment's kill state and every release.
#[derive(Serialize, ToSchema)]
struct ReleaseList {
    environment: String,
    revision: u64,
    kill_all: bool,
    kill_reason: Option<String>,
    releases: Vec<ReleaseView>,
}

/// Every release of the environment.
#[utoipa::path(get, path = "/v1/envs/{env}/releases", tag = "releases", params(("env" = String, Path, description = "Environment name", example = "production")),
    responses((status = 200, description = "The releases", body = ReleaseList)))]
async fn list(state: web::Data<AppState>, auth: Authorized<Read>) -> Result<HttpResponse, ApiError> {
    let (view, releases) = state.releases.list(&auth.env)?;
    Ok(HttpResponse::Ok().json(ReleaseList {
        environment: view.environment,
        revision: view.revision,
        kill_all: view.kill_all,
        kill_reason: view.kill_reason,
        releases,
    }))
}

/// One release; its `ETag` is its revision.
#[utoipa::path(get, path = "/v1/envs/{env}/releases/{key}", tag = "releases", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout")),
    responses(
        (status = 200, description = "The release", body = ReleaseView, headers(("ETag" = String))),
        (status = 404, description = "No such release", body = ErrorBody),
    ))]
async fn get(
    state: web::Data<AppState>,
    auth: Authorized<Read>,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, ApiError> {
    let view = state.releases.get(&auth.env, &path.key)?;
    Ok(HttpResponse::Ok().insert_header(etag(view.revision)).json(view))
}

/// Creates a release.
#[utoipa::path(post, path = "/v1/envs/{env}/releases", tag = "releases", params(("env" = String, Path, description = "Environment name", example = "production")), request_body = ReleaseInput,
    responses(
        (status = 201, description = "Created", body = ReleaseView, headers(("ETag" = String), ("Location" = String))),
        (status = 409, description = "A release with this key exists", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape, or an invalid release", body = ErrorBody),
    ))]
async fn create(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    body: web::Json<ReleaseInput>,
) -> Result<HttpResponse, ApiError> {
    let view = state.releases.create(&auth.env, &auth.actor(), body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header(etag(view.revision))
        .insert_header(("Location", format!("/v1/envs/{}/releases/{}", auth.env, view.key)))
        .json(view))
}

/// Replaces a release; needs `If-Match`. An omitted `allocation` keeps the current one.
#[utoipa::path(put, path = "/v1/envs/{env}/releases/{key}", tag = "releases", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout"), ("If-Match" = Option<String>, Header, description = "The release's revision (its ETag), e.g. `\"7\"`")),
    request_body = ReleaseInput,
    responses(
        (status = 200, description = "Replaced", body = ReleaseView, headers(("ETag" = String))),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 409, description = "A ramp is running or paused and this would move its allocation (`ramp_active`), or the release's state does not allow this now", body = ErrorBody),
        (status = 412, description = "`If-Match` is stale", body = ErrorBody),
        (status = 428, description = "`If-Match` is missing", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape, or an invalid release", body = ErrorBody),
    ))]
async fn replace(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
    if_match: IfMatch,
    body: web::Json<ReleaseInput>,
) -> Result<HttpResponse, ApiError> {
    let expected = if_match.required()?;
    let view = state.releases.replace(&auth.env, &auth.actor(), &path.key, body.into_inner(), expected).await?;
    Ok(HttpResponse::Ok().insert_header(etag(view.revision)).json(view))
}

/// Deletes a release (`If-Match` optional).
#[utoipa::path(delete, path = "/v1/envs/{env}/releases/{key}", tag = "releases", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout"), ("If-Match" = Option<String>, Header, description = "The release's revision (its ETag), e.g. `\"7\"`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 409, description = "A ramp is running or paused and this would move its allocation (`ramp_active`), or the release's state does not allow this now", body = ErrorBody),
        (status = 412, description = "`If-Match` is stale", body = ErrorBody),
    ))]
async fn delete(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    state.releases.delete(&auth.env, &auth.actor(), &path.key, if_match.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Sets the candidates' percents (`If-Match` optional).
#[utoipa::path(post, path = "/v1/envs/{env}/releases/{key}/allocation", tag = "releases", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout"), ("If-Match" = Option<String>, Header, description = "The release's revision (its ETag), e.g. `\"7\"`")),
    request_body = AllocationRequest,
    responses(
        (status = 200, description = "The release", body = ReleaseView, headers(("ETag" = String))),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 409, description = "A ramp is running or paused and this would move its allocation (`ramp_active`), or the release's state does not allow this now", body = ErrorBody),
        (status = 412, description = "`If-Match` is stale", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape, or an invalid release", body = ErrorBody),
    ))]
async fn set_allocation(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
    if_match: IfMatch,
    body: web::Json<AllocationRequest>,
) -> Result<HttpResponse, ApiError> {
    let percent = body.into_inner().percent;
    let view = state.releases.set_allocation(&auth.env, &auth.actor(), &path.key, percent, if_match.0).await?;
    Ok(HttpResponse::Ok().insert_header(etag(view.revision)).json(view))
}

/// Kills a release: everyone gets the baseline and a running ramp pauses.
///
/// Killing a killed release writes nothing; a new reason replaces the old.
#[utoipa::path(post, path = "/v1/envs/{env}/releases/{key}/kill", tag = "releases", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout")),
    request_body(content = Option<ReasonRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "The release, with `persisted: true`", body = ReleaseView, headers(("ETag" = String))),
        (status = 202, description = "The store cannot take it now: served by this instance at once, journalled, written when the store is usable (`persisted: false`)", body = ReleaseView),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn kill(
    state: web::Data<AppState>,
    auth: Authorized<Kill>,
    path: web::Path<KeyPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    kill_answer(state.ramps.kill_release(&auth.env, &auth.actor(), &path.key, true, reason).await?)
}

/// Lifts a release's kill switch; a ramp it paused stays paused.
///
/// Unkilling a live release writes nothing.
#[utoipa::path(post, path = "/v1/envs/{env}/releases/{key}/unkill", tag = "releases", params(("env" = String, Path, description = "Environment name", example = "production"), ("key" = String, Path, description = "Release key", example = "checkout")),
    request_body(content = Option<ReasonRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "The release, with `persisted: true`", body = ReleaseView, headers(("ETag" = String))),
        (status = 202, description = "The store cannot take it now, and this instance had journalled a kill it has not written: that kill is cancelled (`persisted: false`)", body = ReleaseView),
        (status = 503, description = "The store cannot take it now (`unkill_needs_store`): an unkill is only written through the store, and the kill stays served", body = ErrorBody),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn unkill(
    state: web::Data<AppState>,
    auth: Authorized<Kill>,
    path: web::Path<KeyPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    kill_answer(state.ramps.kill_release(&auth.env, &auth.actor(), &path.key, false, reason).await?)
}

/// 200 (with the release's `ETag`) when the store has the kill, 202 when only this
/// instance serves it so far.
fn kill_answer(answer: crate::pending::KillAnswer<ReleaseView>) -> Result<HttpResponse, ApiError> {
    if answer.persisted {
        Ok(HttpResponse::Ok().insert_header(etag(answer.view.revision)).json(answer))
    } else {
        Ok(HttpResponse::Accepted().json(answer))
    }
}
