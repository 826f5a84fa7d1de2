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
    /// `/readyz` only: `ok`, `unreachable` (serving the last snapshot, kills kept
    /// locally) or `regressed` (writes refused in the environments listed).
    #[serde(skip_serializing_if = "Option::is_none")]
    store_state: Option<&'static str>,
    /// Why the store does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    unreachable: Option<String>,
    /// Environments whose store went backwards, with what was found.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    regressed: std::collections::BTreeMap<crate::store::EnvName, crate::store_watch::Regression>,
}

#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "The process answers", body = Status)))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status {
        status: "ok".into(),
        store: None,
        store_state: None,
        unreachable: None,
        regressed: Default::default(),
    })
}

/// Readiness: the first snapshot is loaded.
#[utoipa::path(get, path = "/readyz", tag = "meta", security(()),
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "The first snapshot has not been loaded yet", body = super::openapi::ErrorBody),
    ))]
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let watch = state.snapshots.watch();
    if !state.snapshots.is_ready() {
        return Err(ApiError::NotReady(watch.unreachable()));
    }
    // A regressed or unreachable store leaves the instance ready: it serves its last good
    // snapshot, which is what an orchestrator must keep routing evaluations to.
    let regressed = watch.all_regressed();
    let unreachable = watch.unreachable();
    let store_state = match (&unreachable, regressed.is_empty()) {
        (Some(_), _) => "unreachable",
        (None, false) => "regressed",
        (None, true) => "ok",
    };
    Ok(HttpResponse::Ok().json(Status {
        status: "ready".into(),
        store: Some(state.store_kind.into()),
        store_state: Some(store_state),
        unreachable,
        regressed,
    }))
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
