//! `POST /v1/envs/{env}/ack` (an SDK applied a revision) and
//! `GET /v1/envs/{env}/reach?revision=N` (how many connected SDKs have).

use super::auth::{Authorized, Eval, Observe};
use super::{ApiError, AppState, resource};
use crate::reach::{self, ReachError};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ack {
    sdk_id: String,
    revision: u64,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReachParams {
    revision: u64,
}

async fn get_reach(
    state: web::Data<AppState>,
    auth: Authorized<Observe>,
    params: web::Query<ReachParams>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(reach::reach(state.releases.store(), &auth.env, params.revision).await?))
}
