//! Token revocations (admin): `…/v1/envs/{env}/revocations` for one environment and
//! `/v1/revocations` for every environment (a `*` admin token). The domain logic is in
//! [`crate::revocations`].

use super::auth::{Admin, Authorized, principal};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, resource};
use crate::auth::{AuthError, EnvScope, Scope};
use crate::releases::Actor;
use crate::revocations::RevokeRequest;
use crate::store::Revocation;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

/// `/v1/revocations`.
pub fn configure_root(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/revocations").get(list_all).post(revoke_all));
}

/// Under `/v1/envs/{env}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/revocations").get(list).post(revoke));
}

/// The revocations in force in an environment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RevocationList {
    environment: String,
    revocations: Vec<Revocation>,
}

/// A revocation and where it is stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct PlacedRevocation {
    environment: String,
    #[serde(flatten)]
    revocation: Revocation,
}

/// Every environment's revocations.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AllRevocations {
    revocations: Vec<PlacedRevocation>,
}

/// A revocation written to every environment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RevokedEverywhere {
    revocation: Revocation,
    /// The environments it was written to.
    environments: Vec<String>,
}

/// Revokes a token (`jti`) or a subject's tokens issued until now (`sub`) in the
/// environment. Requests in flight with a cached token are refused from their next one.
#[utoipa::path(post, path = "/v1/envs/{env}/revocations", tag = "tokens",
    params(("env" = String, Path, description = "Environment name", example = "production")),
    request_body = RevokeRequest,
    responses(
        (status = 201, description = "Revoked (recorded in the audit log as `token-revoke`)", body = Revocation),
        (status = 422, description = "Not exactly one of `jti` and `sub`, a field over 1024 bytes, or a body of the wrong shape", body = ErrorBody),
    ))]
pub(super) async fn revoke(
    state: web::Data<AppState>,
    auth: Authorized<Admin>,
    body: web::Json<RevokeRequest>,
) -> Result<HttpResponse, ApiError> {
    let revocation = state.revocations.revoke(&auth.env, &auth.actor(), &body).await?;
    Ok(HttpResponse::Created().json(revocation))
}

/// The revocations in force in the environment.
#[utoipa::path(get, path = "/v1/envs/{env}/revocations", tag = "tokens",
    params(("env" = String, Path, description = "Environment name", example = "production")),
    responses((status = 200, description = "The revocations", body = RevocationList)))]
pub(super) async fn list(state: web::Data<AppState>, auth: Authorized<Admin>) -> Result<HttpResponse, ApiError> {
    let revocations = state.revocations.list(&auth.env)?;
    Ok(HttpResponse::Ok().json(RevocationList { environment: auth.env.to_string(), revocations }))
}

/// The caller, when it holds an `admin` token for every environment (`*`).
fn admin_everywhere(req: &HttpRequest) -> Result<Actor, ApiError> {
    let principal = principal(req)?;
    if principal.env != EnvScope::Any {
        return Err(AuthError::WrongEnvironment { token: principal.env.to_string(), route: "*".into() }.into());
    }
    if !principal.scopes.allow(Scope::Admin) {
        return Err(AuthError::MissingScope { needed: "admin".into(), have: principal.scopes.to_claim() }.into());
    }
    Ok(Actor(principal.sub.clone()))
}

/// Revokes a token or subject in every environment (an `admin` token for `*`): it then
/// refuses that token or subject whatever environment its token names.
#[utoipa::path(post, path = "/v1/revocations", tag = "tokens",
    request_body = RevokeRequest,
    responses(
        (status = 201, description = "Revoked in every environment", body = RevokedEverywhere),
        (status = 404, description = "An environment was deleted meanwhile; revoke again", body = ErrorBody),
        (status = 422, description = "Not exactly one of `jti` and `sub`, a field over 1024 bytes, or a body of the wrong shape", body = ErrorBody),
    ))]
pub(super) async fn revoke_all(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<RevokeRequest>,
) -> Result<HttpResponse, ApiError> {
    let actor = admin_everywhere(&req)?;
    let (revocation, envs) = state.revocations.revoke_everywhere(&actor, &body).await?;
    let environments = envs.iter().map(ToString::to_string).collect();
    Ok(HttpResponse::Created().json(RevokedEverywhere { revocation, environments }))
}

/// Every environment's revocations in force (an `admin` token for `*`).
#[utoipa::path(get, path = "/v1/revocations", tag = "tokens",
    responses((status = 200, description = "The revocations", body = AllRevocations)))]
pub(super) async fn list_all(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    admin_everywhere(&req)?;
    let revocations = state
        .revocations
        .list_all()
        .into_iter()
        .map(|(env, revocation)| PlacedRevocation { environment: env.to_string(), revocation })
        .collect();
    Ok(HttpResponse::Ok().json(AllRevocations { revocations }))
}
