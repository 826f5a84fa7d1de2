//! `/v1/envs/{env}` (kill state and revision), `/kill-all` and `/unkill-all`: the
//! environment-wide kill switch.

use super::auth::{Authorized, Kill, Read};
use super::openapi::ErrorBody;
use super::releases::{ReasonRequest, optional_json};
use super::{ApiError, AppState, resource};
use crate::releases::EnvView;
use actix_web::{HttpResponse, web};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("").get(show))
        .service(resource("/kill-all").post(kill_all))
        .service(resource("/unkill-all").post(unkill_all));
}

/// The environment's revision and kill state.
#[utoipa::path(get, path = "/v1/envs/{env}", tag = "environment", params(("env" = String, Path, description = "Environment name", example = "production")),
    responses((status = 200, description = "The environment", body = EnvView)))]
async fn show(state: web::Data<AppState>, auth: Authorized<Read>) -> HttpResponse {
    HttpResponse::Ok().json(state.releases.environment(&auth.env))
}

/// Kills every release of the environment and pauses its running ramps.
///
/// Ramps pause with reason `killed`; unkill-all does not resume them. Killing a killed
/// environment writes nothing; a new non-empty reason replaces the old.
#[utoipa::path(post, path = "/v1/envs/{env}/kill-all", tag = "environment", params(("env" = String, Path, description = "Environment name", example = "production")), request_body(content = Option<ReasonRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "The environment", body = EnvView),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn kill_all(
    state: web::Data<AppState>,
    auth: Authorized<Kill>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    Ok(HttpResponse::Ok().json(state.ramps.set_kill_all(&auth.env, &auth.actor(), true, reason).await?))
}

/// Lifts the environment's kill switch.
#[utoipa::path(post, path = "/v1/envs/{env}/unkill-all", tag = "environment", params(("env" = String, Path, description = "Environment name", example = "production")), request_body(content = Option<ReasonRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "The environment", body = EnvView),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn unkill_all(
    state: web::Data<AppState>,
    auth: Authorized<Kill>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    Ok(HttpResponse::Ok().json(state.releases.set_kill_all(&auth.env, &auth.actor(), false, reason).await?))
}
