//! The HTTP API: one module per URL resource, each with a `configure` function; handlers
//! extract, call the domain, and map the result.

mod audit;
pub mod auth;
pub mod cors;
pub mod edges;
mod environment;
mod envs;
pub mod error;
mod evaluate;
mod events;
mod extract;
mod fleets;
mod health;
pub mod hot;
pub mod limit;
mod ofrep;
pub mod openapi;
pub(crate) mod ramp;
mod reach;
mod releases;
mod revocations;
mod sync;

use crate::auth::Verifier;
use crate::ramp::Ramps;
use crate::releases::Releases;
use crate::snapshots::{EnvSnapshot, Snapshots};
use crate::store::EnvName;
use crate::stream::Streams;
use actix_web::web;
use std::sync::Arc;

pub use error::ApiError;

/// The state every handler can reach: cheap-to-clone handles, registered once.
#[derive(Clone)]
pub struct AppState {
    /// Release operations (writes go through the store).
    pub releases: Releases,
    /// Environment operations and store reconciliation.
    pub environments: crate::environments::Environments,
    /// Ramp operations.
    pub ramps: Ramps,
    /// This instance's id (the ramp lease holder name).
    pub instance_id: String,
    /// What evaluation reads.
    pub snapshots: Arc<Snapshots>,
    /// Name of the store, for `/readyz`.
    pub store_kind: &'static str,
    /// Bearer token verification (with its cache).
    pub verifier: Arc<Verifier>,
    /// SDK event streams.
    pub streams: Streams,
    /// Token revocations and lifetime limits, checked on every authenticated request.
    pub revocations: crate::revocations::Revocations,
    /// What `cohort_evaluations_total` breaks evaluations down by.
    pub release_labels: crate::metrics::ReleaseLabels,
    /// Stream tickets for OFREP `eventStreams` URLs.
    pub tickets: Arc<crate::ofrep::ticket::Tickets>,
    /// Outcome report limits and this instance's per-minute pair budget.
    pub outcomes: Arc<crate::events::Outcomes>,
    /// Rate limits per route class.
    pub limits: Arc<crate::ratelimit::RateLimits>,
    /// The web console's settings (its public origin behind a proxy).
    pub console: crate::config::ConsoleSettings,
}

/// Registers every route and the JSON error shape for extractor failures.
pub fn configure(cfg: &mut web::ServiceConfig, state: AppState, max_body_bytes: usize) {
    cfg.app_data(web::Data::new(state))
        .app_data(extract::BodyLimit(max_body_bytes))
        .app_data(
            web::JsonConfig::default()
                .limit(max_body_bytes)
                .content_type_required(false)
                .error_handler(error::json_error(max_body_bytes)),
        )
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .configure(health::configure)
        .configure(ofrep::configure)
        .configure(openapi::configure)
        .configure(console)
        .configure(envs::configure_root)
        .configure(revocations::configure_root)
        .service(
            web::scope("/v1/envs/{env}")
                .configure(evaluate::configure)
                .configure(releases::configure)
                .configure(environment::configure)
                .configure(envs::configure)
                .configure(sync::configure)
                .configure(audit::configure)
                .configure(events::configure)
                .configure(reach::configure)
                .configure(ramp::configure)
                .configure(fleets::configure)
                .configure(revocations::configure),
        );
}

/// The web console's routes, when it is compiled in (the `console` feature).
fn console(cfg: &mut web::ServiceConfig) {
    #[cfg(feature = "console")]
    crate::console::configure(cfg);
    #[cfg(not(feature = "console"))]
    let _ = cfg;
}

/// What `env` is served from: 503 before the first snapshot is loaded, 404 (naming the
/// nearest) for an environment that does not exist — never an empty configuration an SDK
/// would install.
pub(crate) fn served(state: &AppState, env: &EnvName) -> Result<Arc<EnvSnapshot>, ApiError> {
    if !state.snapshots.is_ready() {
        return Err(ApiError::NotReady(state.snapshots.watch().unreachable()));
    }
    Ok(state.releases.require_env(env)?)
}

/// Unknown routes answer in the same JSON shape as every other error.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound(req.path().to_owned()))
}

/// A known route with a method it does not serve.
pub(crate) async fn method_not_allowed() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// A resource whose unserved methods answer 405 in the JSON error shape.
pub(crate) fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}
