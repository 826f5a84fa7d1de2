//! `POST /v1/envs/{env}/ack` (an SDK applied a revision, or says goodbye) and
//! `GET /v1/envs/{env}/reach?revision=N` (how many live SDKs have applied it, and how
//! many subscribers that cannot acknowledge were sent it).

use super::auth::{Authorized, Eval, Observe};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, resource};
use crate::reach::{self, AckReport, Reach, ReachError};
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

/// What an SDK instance reports: the revision it applied, or (`gone: true`) that it
/// is closing.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Ack {
    /// The SDK instance's id (1 to 128 printable ASCII characters).
    sdk_id: String,
    /// The environment revision it has applied; required unless `gone`.
    #[serde(default)]
    revision: Option<u64>,
    /// Which of its stream connections it is on (it counts them, and sends the same
    /// number as `X-Cohort-Sdk-Connection` when it opens the stream); 0 or absent
    /// without a stream.
    #[serde(default)]
    connection: u64,
    /// The SDK is closing: it is forgotten at once instead of after 90 s of silence.
    #[serde(default)]
    gone: bool,
}

impl Ack {
    fn report(&self) -> Result<AckReport, ApiError> {
        match (self.gone, self.revision) {
            (true, _) => Ok(AckReport::Goodbye),
            (false, Some(revision)) => Ok(AckReport::Applied { revision, connection: self.connection }),
            (false, None) => Err(ApiError::BadRequest("`revision` is required unless `gone` is true".into())),
        }
    }
}

/// An SDK reports the revision it has applied, or says goodbye (`gone: true`).
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
    let report = body.report()?;
    reach::acknowledge(state.releases.store(), &auth.env, &body.sdk_id, report, address).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReachParams {
    /// The environment revision asked about.
    revision: u64,
}

/// How far a revision has reached: live acknowledging SDKs that applied it (and the
/// ones that did not yet), and delivered-only subscribers (OFREP, raw SSE) it was
/// written to. SDKs that said goodbye or whose stream ended are not counted.
#[utoipa::path(get, path = "/v1/envs/{env}/reach", tag = "sdk", params(("env" = String, Path, description = "Environment name", example = "production"), ReachParams),
    responses((status = 200, description = "The reach. `delivered_only*` count the streams of the instance that answers; the acknowledging SDKs are every instance's", body = Reach)))]
async fn get_reach(
    state: web::Data<AppState>,
    auth: Authorized<Observe>,
    params: web::Query<ReachParams>,
) -> Result<HttpResponse, ApiError> {
    let reach = reach::reach(state.releases.store(), &state.streams, &auth.env, params.revision).await?;
    Ok(HttpResponse::Ok().json(reach))
}
