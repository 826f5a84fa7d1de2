//! `/healthz` (the process answers) and `/readyz` (it has loaded its snapshot).

use super::{ApiError, AppState, resource};
use actix_web::{HttpResponse, web};
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").get(healthz)).service(resource("/readyz").get(readyz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.snapshots.is_ready() {
        return Err(ApiError::NotReady);
    }
    Ok(HttpResponse::Ok().json(json!({"status": "ready", "store": state.store_kind})))
}
