//! `/healthz` (the process answers) and `/readyz` (it has loaded its snapshot).

use super::{ApiError, AppState, resource};
use actix_web::{HttpResponse, web};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").get(healthz))
        .service(resource("/readyz").get(readyz))
        .service(resource("/metrics").get(metrics));
}

/// Liveness: the process answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Status {
    /// `ok` or `ready`.
    status: String,
    /// The store (`/readyz` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<String>,
}

#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "The process answers", body = Status)))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok".into(), store: None })
}

/// Readiness: the first snapshot is loaded.
#[utoipa::path(get, path = "/readyz", tag = "meta", security(()),
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "The first snapshot has not been loaded yet", body = super::openapi::ErrorBody),
    ))]
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.snapshots.is_ready() {
        return Err(ApiError::NotReady);
    }
    Ok(HttpResponse::Ok().json(Status { status: "ready".into(), store: Some(state.store_kind.into()) }))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "meta", security(()),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 500, description = "The metrics cannot be rendered", body = super::openapi::ErrorBody),
    ))]
async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text =
        crate::metrics::render(&state.snapshots, &state.streams).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text))
}
