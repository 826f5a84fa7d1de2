//! `GET /v1/envs/{env}/audit?release=&limit=&before=`: the audit log, newest first.

use super::auth::{Authorized, Read};
use super::{ApiError, AppState, resource};
use crate::store::{AuditEntry, AuditQuery};
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/audit").get(audit));
}

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1_000;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Params {
    /// Only this release's entries.
    release: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<usize>,
    /// Entries strictly below this revision (the previous page's `next_before`).
    before: Option<u64>,
}

/// A page of the audit log, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct AuditPage {
    entries: Vec<AuditEntry>,
    /// `before` of the next page; `null` on the last.
    next_before: Option<u64>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/v1/envs/{env}/audit", tag = "audit", params(("env" = String, Path, description = "Environment name", example = "production"), Params),
    responses((status = 200, description = "A page of entries", body = AuditPage)))]
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
    Ok(HttpResponse::Ok().json(AuditPage { entries, next_before: next }))
}
