//! `/v1/envs/{env}/releases[/{key}[/allocation|/kill|/unkill]]`: release CRUD and the
//! per-release switches.

use super::auth::{Authorized, Kill, Read, Write};
use super::extract::{IfMatch, etag};
use super::{ApiError, AppState, resource};
use crate::releases::ReleaseInput;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocationRequest {
    percent: BTreeMap<String, f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonRequest {
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

async fn list(state: web::Data<AppState>, auth: Authorized<Read>) -> HttpResponse {
    let (view, releases) = state.releases.list(&auth.env);
    HttpResponse::Ok().json(json!({
        "environment": view.environment,
        "revision": view.revision,
        "kill_all": view.kill_all,
        "kill_reason": view.kill_reason,
        "releases": releases,
    }))
}

async fn get(
    state: web::Data<AppState>,
    auth: Authorized<Read>,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, ApiError> {
    let view = state.releases.get(&auth.env, &path.key)?;
    Ok(HttpResponse::Ok().insert_header(etag(view.revision)).json(view))
}

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

async fn delete(
    state: web::Data<AppState>,
    auth: Authorized<Write>,
    path: web::Path<KeyPath>,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    state.releases.delete(&auth.env, &auth.actor(), &path.key, if_match.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

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

async fn kill(
    state: web::Data<AppState>,
    auth: Authorized<Kill>,
    path: web::Path<KeyPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    let before = state.releases.get(&auth.env, &path.key).ok().and_then(|v| v.ramp);
    let view = state.releases.set_killed(&auth.env, &auth.actor(), &path.key, true, reason).await?;
    state.ramps.killed(&auth.env, &before, &view, &auth.principal.sub);
    Ok(HttpResponse::Ok().insert_header(etag(view.revision)).json(view))
}

async fn unkill(
    state: web::Data<AppState>,
    auth: Authorized<Kill>,
    path: web::Path<KeyPath>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    let view = state.releases.set_killed(&auth.env, &auth.actor(), &path.key, false, reason).await?;
    Ok(HttpResponse::Ok().insert_header(etag(view.revision)).json(view))
}
