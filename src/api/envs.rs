//! `/v1/envs` (list, create), `DELETE /v1/envs/{env}` (when empty) and
//! `POST /v1/envs/{env}/store/reseed`: environments exist on purpose, and the operator's
//! reconciliation of a store that went backwards.

use super::auth::{Admin, Authorized, principal};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, resource};
use crate::auth::Scope;
use crate::environments::{EnvSummary, ReseedReport};
use crate::releases::Actor;
use crate::store::EnvName;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

/// `/v1/envs`.
pub fn configure_root(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/envs").get(list).post(create));
}

/// Under `/v1/envs/{env}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/store/reseed").post(reseed));
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct EnvList {
    environments: Vec<EnvSummary>,
}

/// The environments the token may see.
#[utoipa::path(get, path = "/v1/envs", tag = "environment",
    responses(
        (status = 200, description = "The environments", body = EnvList),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
pub(super) async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req)?;
    let accepted = [Scope::Read, Scope::Kill, Scope::Write];
    let environments = state
        .environments
        .list()
        .into_iter()
        .filter(|summary| {
            EnvName::parse(&summary.environment).is_ok_and(|env| principal.authorize_any(&accepted, &env).is_ok())
        })
        .collect();
    Ok(HttpResponse::Ok().json(EnvList { environments }))
}

/// `POST /v1/envs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnv {
    /// 1 to 64 of `a-z 0-9 - _`.
    pub name: String,
}

/// Creates an environment (admin).
#[utoipa::path(post, path = "/v1/envs", tag = "environment", request_body = CreateEnv,
    responses(
        (status = 201, description = "Created", body = EnvSummary),
        (status = 400, description = "Not a valid environment name", body = ErrorBody),
        (status = 403, description = "Not an admin token for that environment", body = ErrorBody),
        (status = 409, description = "It exists", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub(super) async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<CreateEnv>,
) -> Result<HttpResponse, ApiError> {
    let principal = principal(&req)?;
    let env = EnvName::parse(&body.name)?;
    principal.authorize_any(&[Scope::Admin], &env)?;
    let summary = state.environments.create(&env, &Actor(principal.sub.clone())).await?;
    Ok(HttpResponse::Created().json(summary))
}

/// Deletes an environment that holds no releases (admin).
#[utoipa::path(delete, path = "/v1/envs/{env}", tag = "environment", params(("env" = String, Path, description = "Environment name", example = "staging")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 409, description = "It still holds releases", body = ErrorBody),
    ))]
pub(super) async fn delete(state: web::Data<AppState>, auth: Authorized<Admin>) -> Result<HttpResponse, ApiError> {
    state.environments.delete(&auth.env, &auth.actor()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST …/store/reseed`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReseedRequest {
    /// Why (recorded in the audit log).
    #[serde(default)]
    pub reason: Option<String>,
    /// Reseed even though another instance reported serving a higher revision (whose
    /// changes the reseed overwrites); refused with `409 reseed_behind` otherwise.
    #[serde(default)]
    pub force: bool,
}

/// Writes this instance's snapshot of the environment back to the store above every
/// revision it has seen: the reconciliation after the store went backwards (admin).
#[utoipa::path(post, path = "/v1/envs/{env}/store/reseed", tag = "environment", params(("env" = String, Path, description = "Environment name", example = "production")),
    request_body(content = Option<ReseedRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "Reseeded", body = ReseedReport),
        (status = 404, description = "This instance does not hold the environment", body = ErrorBody),
        (status = 409, description = "Another instance reported serving a higher revision (`reseed_behind`, naming it): reseed from that one, or pass `force`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub(super) async fn reseed(
    state: web::Data<AppState>,
    auth: Authorized<Admin>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request = super::releases::optional_json::<ReseedRequest>(&body)?.unwrap_or_default();
    let report = state.environments.reseed(&auth.env, &auth.actor(), request.reason, request.force).await?;
    Ok(HttpResponse::Ok().json(report))
}
