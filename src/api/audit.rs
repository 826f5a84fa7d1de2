//! `GET /v1/envs/{env}/audit?release=&limit=&before=`: the audit log, newest first.

use super::auth::{Authorized, Read};
use super::{ApiError, AppState, resource};
use crate::store::AuditQuery;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/audit").get(audit));
}

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    release: Option<String>,
    limit: Option<usize>,
    before: Option<u64>,
}

async fn audit(
    state: web::Data<AppState>,
    auth: Authorized<Read>,
    params: web::Query<Params>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let query = AuditQuery { release: params.release, before: params.before, limit };
    let entries = state.releases.audit(&auth.env, &query).await?;
    // The next page starts below the oldest entry returned.
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.revision)).flatten();
    Ok(HttpResponse::Ok().json(json!({"entries": entries, "next_before": next})))
}
