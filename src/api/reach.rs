//! `POST /v1/envs/{env}/ack` (an SDK applied a revision) and
//! `GET /v1/envs/{env}/reach?revision=N` (how many connected SDKs have).

use super::auth::{Authorized, Eval, Observe};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, resource};
use crate::reach::{self, Reach, ReachError};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/ack").post(ack)).service(resource("/reach").get(get_reach));
}

impl From<ReachError> for ApiError {
    fn from(e: ReachError) -> Self {
        match e {
            ReachError::Invalid(message) => ApiError::BadRequest(message),
            ReachError::Store(e) => e.into(),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Ack {
    sdk_id: String,
    revision: u64,
}

/// An SDK reports the revision it has applied.
#[utoipa::path(post, path = "/v1/envs/{env}/ack", tag = "sdk", params(("env" = String, Path, description = "Environment name", example = "production")), request_body = Ack,
    responses(
        (status = 204, description = "Recorded"),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn ack(
    state: web::Data<AppState>,
    auth: Authorized<Eval>,
    req: HttpRequest,
    body: web::Json<Ack>,
) -> Result<HttpResponse, ApiError> {
    let address = req.peer_addr().map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let Ack { sdk_id, revision } = body.into_inner();
    reach::acknowledge(state.releases.store(), &auth.env, &sdk_id, revision, address).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReachParams {
    /// The environment revision asked about.
    revision: u64,
}

/// How many connected SDKs have applied a revision.
#[utoipa::path(get, path = "/v1/envs/{env}/reach", tag = "sdk", params(("env" = String, Path, description = "Environment name", example = "production"), ReachParams),
    responses((status = 200, description = "The reach", body = Reach)))]
async fn get_reach(
    state: web::Data<AppState>,
    auth: Authorized<Observe>,
    params: web::Query<ReachParams>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(reach::reach(state.releases.store(), &auth.env, params.revision).await?))
}
