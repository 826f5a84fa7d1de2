//! `/v1/envs/{env}` (kill state and revision), `/kill-all` and `/unkill-all`: the
//! environment-wide kill switch.

use super::auth::{Authorized, Kill, Read};
use super::releases::{ReasonRequest, optional_json};
use super::{ApiError, AppState, resource};
use actix_web::{HttpResponse, web};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("").get(show))
        .service(resource("/kill-all").post(kill_all))
        .service(resource("/unkill-all").post(unkill_all));
}

async fn show(state: web::Data<AppState>, auth: Authorized<Read>) -> HttpResponse {
    HttpResponse::Ok().json(state.releases.environment(&auth.env))
}

async fn kill_all(
    state: web::Data<AppState>,
    auth: Authorized<Kill>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    Ok(HttpResponse::Ok().json(state.releases.set_kill_all(&auth.env, &auth.actor(), true, reason).await?))
}

async fn unkill_all(
    state: web::Data<AppState>,
    auth: Authorized<Kill>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let reason = optional_json::<ReasonRequest>(&body)?.and_then(|b| b.reason);
    Ok(HttpResponse::Ok().json(state.releases.set_kill_all(&auth.env, &auth.actor(), false, reason).await?))
}
