//! `GET /v1/envs/{env}/snapshot` (the whole configuration, `ETag` = revision, 304 on
//! `If-None-Match`) and `GET /v1/envs/{env}/stream` (Server-Sent Events: the snapshot,
//! then every change; `Last-Event-ID` resumes): how SDKs get and follow an environment.

use super::auth::{Authorized, Eval};
use super::{AppState, resource};
use actix_web::http::header::{CacheControl, CacheDirective, ETag, EntityTag, IfNoneMatch};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/snapshot").get(snapshot)).service(resource("/stream").get(stream));
}

/// The header a reconnecting `EventSource` sends with the last `id:` it saw.
const LAST_EVENT_ID: &str = "last-event-id";

/// The environment's whole configuration; `ETag` = revision, 304 on `If-None-Match`.
#[utoipa::path(get, path = "/v1/envs/{env}/snapshot", tag = "sdk",
    params(("env" = String, Path, description = "Environment name", example = "production"), ("If-None-Match" = Option<String>, Header, description = "A revision's ETag")),
    responses(
        (status = 200, description = "The snapshot (cohort-sdk's `SnapshotData`)", body = Object, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the `If-None-Match` revision", headers(("ETag" = String))),
    ))]
pub(super) async fn snapshot(state: web::Data<AppState>, auth: Authorized<Eval>, req: HttpRequest) -> HttpResponse {
    let current = state.snapshots.get(&auth.env).unwrap_or_default();
    let tag = EntityTag::new_strong(current.revision().to_string());
    let unchanged = match req.get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&tag)),
        None => false,
    };
    let mut response = if unchanged { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    response.insert_header(ETag(tag)).insert_header(CacheControl(vec![CacheDirective::NoCache]));
    if unchanged { response.finish() } else { response.content_type("application/json").body(current.wire_json()) }
}

/// Server-Sent Events: the snapshot, then every change; `Last-Event-ID` resumes.
#[utoipa::path(get, path = "/v1/envs/{env}/stream", tag = "sdk",
    params(("env" = String, Path, description = "Environment name", example = "production"), ("Last-Event-ID" = Option<String>, Header, description = "The last revision seen")),
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String)))]
async fn stream(state: web::Data<AppState>, auth: Authorized<Eval>, req: HttpRequest) -> HttpResponse {
    let subscription = state.streams.subscribe(&auth.env, last_event_id(&req));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        // Reverse proxies (nginx) must pass events through, not buffer them.
        .insert_header(("x-accel-buffering", "no"))
        // A stream ends only when the subscriber must reconnect (dropped, shutdown):
        // closing its connection too sends the reconnection through the listener, so
        // a server shutting down is not kept busy by reused keep-alive connections.
        .force_close()
        .streaming(subscription.into_stream())
}

/// The revision a reconnecting subscriber has. Anything unreadable counts as none: the
/// subscriber then gets a full snapshot, which is always correct.
fn last_event_id(req: &HttpRequest) -> Option<u64> {
    let value = req.headers().get(LAST_EVENT_ID)?;
    let parsed = value.to_str().ok().and_then(|v| v.trim().parse().ok());
    if parsed.is_none() {
        tracing::debug!(value = ?value, "ignoring an unreadable Last-Event-ID");
    }
    parsed
}
