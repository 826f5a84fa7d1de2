//! `/healthz` (the process answers) and `/readyz` (it has loaded its snapshot).

use super::{ApiError, AppState, resource};
use actix_web::{HttpResponse, web};
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").get(healthz))
        .service(resource("/readyz").get(readyz))
        .service(resource("/metrics").get(metrics));
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

async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text =
        crate::metrics::render(&state.snapshots, &state.streams).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text))
}
