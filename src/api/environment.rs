//! `/v1/envs/{env}` (kill state and revision), `/kill-all` and `/unkill-all`: the
//! environment-wide kill switch.

use super::auth::{Authorized, Kill, Read};
use super::openapi::ErrorBody;
use super::releases::{ReasonRequest, optional_json};
use super::{ApiError, AppState, resource};
use crate::pending::KillAnswer;
use crate::releases::EnvView;
use actix_web::{HttpResponse, web};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("").get(show).delete(super::envs::delete))
        .service(resource("/kill-all").post(kill_all))
        .service(resource("/unkill-all").post(unkill_all));
}

/// The environment's revision and kill state.
#[utoipa::path(get, path = "/v1/envs/{env}", tag = "environment", params(("env" = String, Path, description = "Environment name", example = "production")),
    responses((status = 200, description = "The environment", body = EnvView)))]
async fn show(state: web::Data<AppState>, auth: Authorized<Read>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.releases.environment(&auth.env)?))
}

/// Kills every release of the environment and pauses its running ramps.
///
/// Ramps pause with reason `killed`; unkill-all does not resume them. Killing a killed
/// environment writes nothing; a new non-empty reason replaces the old.
#[utoipa::path(post, path = "/v1/envs/{env}/kill-all", tag = "environment", params(("env" = String, Path, description = "Environment name", example = "production")), request_body(content = Option<ReasonRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "The environment, with `persisted: true`", body = EnvView),
        (status = 202, description = "The store cannot take it now: served by this instance at once, journalled, written when the store is usable (`persisted: false`)", body = EnvView),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn kill_all(
    state: web::Data<AppState>,
    auth: Authorized<Kill>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    kill_answer(state.ramps.kill_environment(&auth.env, &auth.actor(), true, reason).await?)
}

/// Lifts the environment's kill switch.
#[utoipa::path(post, path = "/v1/envs/{env}/unkill-all", tag = "environment", params(("env" = String, Path, description = "Environment name", example = "production")), request_body(content = Option<ReasonRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "The environment, with `persisted: true`", body = EnvView),
        (status = 202, description = "The store cannot take it now, and this instance had journalled a kill it has not written: that kill is cancelled (`persisted: false`)", body = EnvView),
        (status = 503, description = "The store cannot take it now (`unkill_needs_store`): an unkill is only written through the store, and the kill stays served", body = ErrorBody),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn unkill_all(
    state: web::Data<AppState>,
    auth: Authorized<Kill>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    kill_answer(state.ramps.kill_environment(&auth.env, &auth.actor(), false, reason).await?)
}

/// 200 when the store has the kill, 202 `"persisted": false` when only this instance
/// serves it so far (journalled, written when the store is usable).
pub(super) fn kill_answer<T: serde::Serialize>(answer: KillAnswer<T>) -> Result<HttpResponse, ApiError> {
    let mut response = if answer.persisted { HttpResponse::Ok() } else { HttpResponse::Accepted() };
    Ok(response.json(answer))
}
