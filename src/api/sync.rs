//! `GET /v1/envs/{env}/snapshot` (the whole configuration, `ETag` = revision, 304 on
//! `If-None-Match`) and `GET /v1/envs/{env}/stream` (Server-Sent Events: the snapshot,
//! then every change; `Last-Event-ID` resumes): how SDKs get and follow an environment.
//!
//! An acknowledging SDK names itself when it opens the stream (`X-Cohort-Sdk-Id`, and
//! which of its connections this is in `X-Cohort-Sdk-Connection`): its stream then does
//! not count as a delivered-only subscriber, and its end forgets the SDK at once for
//! kill confirmation.

use super::auth::{Authorized, Eval};
use super::{ApiError, AppState, resource};
use crate::reach;
use crate::releases::Releases;
use crate::store::EnvName;
use crate::stream::Listener;
use actix_web::http::header::{CacheControl, CacheDirective, ETag, EntityTag, IfNoneMatch};
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures_util::{Stream, StreamExt};
use std::convert::Infallible;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/snapshot").get(snapshot)).service(resource("/stream").get(stream));
}

/// The header a reconnecting `EventSource` sends with the last `id:` it saw.
const LAST_EVENT_ID: &str = "last-event-id";

/// The header an acknowledging SDK names itself in (the id it posts `…/ack` under).
pub const SDK_ID: &str = "x-cohort-sdk-id";

/// The header with the number of the SDK's stream connection (it counts them).
pub const SDK_CONNECTION: &str = "x-cohort-sdk-connection";

/// The environment's whole configuration; `ETag` = revision, 304 on `If-None-Match`.
#[utoipa::path(get, path = "/v1/envs/{env}/snapshot", tag = "sdk",
    params(("env" = String, Path, description = "Environment name", example = "production"), ("If-None-Match" = Option<String>, Header, description = "A revision's ETag")),
    responses(
        (status = 200, description = "The snapshot (cohort-sdk's `SnapshotData`)", body = cohort_sdk::SnapshotData, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the `If-None-Match` revision", headers(("ETag" = String))),
    ))]
pub(super) async fn snapshot(
    state: web::Data<AppState>,
    auth: Authorized<Eval>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let current = super::served(&state, &auth.env)?;
    let tag = EntityTag::new_strong(current.etag());
    let unchanged = match req.get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&tag)),
        None => false,
    };
    let mut response = if unchanged { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    response.insert_header(ETag(tag)).insert_header(CacheControl(vec![CacheDirective::NoCache]));
    Ok(if unchanged { response.finish() } else { response.content_type("application/json").body(current.wire_json()) })
}

/// Server-Sent Events: the snapshot, then every change; `Last-Event-ID` resumes.
#[utoipa::path(get, path = "/v1/envs/{env}/stream", tag = "sdk",
    params(
        ("env" = String, Path, description = "Environment name", example = "production"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last revision seen"),
        ("X-Cohort-Sdk-Id" = Option<String>, Header, description = "An acknowledging SDK's id (the one it posts `…/ack` under): its stream is then not a delivered-only subscriber, and its end forgets the SDK for kill confirmation"),
        ("X-Cohort-Sdk-Connection" = Option<u64>, Header, description = "With `X-Cohort-Sdk-Id`: which of the SDK's stream connections this is (the `connection` of its acknowledgements)"),
    ),
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = super::openapi::SseEvent)))]
async fn stream(
    state: web::Data<AppState>,
    auth: Authorized<Eval>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    super::served(&state, &auth.env)?;
    let listener = listener(&req);
    let subscription = state.streams.subscribe(&auth.env, last_event_id(&req), listener.clone());
    let body = subscription.into_stream();
    let body = match listener {
        Listener::Sdk { sdk_id, connection } => {
            let farewell = Farewell { releases: state.releases.clone(), env: auth.env.clone(), sdk_id, connection };
            with_farewell(body, farewell).left_stream()
        }
        Listener::DeliveredOnly | Listener::Console => body.right_stream(),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        // Reverse proxies (nginx) must pass events through, not buffer them.
        .insert_header(("x-accel-buffering", "no"))
        // A stream ends only when the subscriber must reconnect (dropped, shutdown):
        // closing its connection too sends the reconnection through the listener, so
        // a server shutting down is not kept busy by reused keep-alive connections.
        .force_close()
        .streaming(body))
}

/// Who opened the stream: an SDK that names itself with a valid id, else a
/// delivered-only subscriber (an unreadable id cannot be acknowledged under anyway).
fn listener(req: &HttpRequest) -> Listener {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    match header(SDK_ID).filter(|id| reach::valid_sdk_id(id)) {
        Some(sdk_id) => Listener::Sdk {
            sdk_id: sdk_id.to_owned(),
            connection: header(SDK_CONNECTION).and_then(|c| c.parse().ok()).unwrap_or(0),
        },
        None => Listener::DeliveredOnly,
    }
}

/// Forgets an SDK for kill confirmation when its stream ends, however it ends (client
/// gone, write error, server shutdown): dropped with the response body.
struct Farewell {
    releases: Releases,
    env: EnvName,
    sdk_id: String,
    connection: u64,
}

impl Drop for Farewell {
    fn drop(&mut self) {
        // Drop cannot wait for the store: the forgetting runs on its own. Without a
        // runtime (the process is ending) the SDK simply expires.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (releases, env, sdk_id) = (self.releases.clone(), self.env.clone(), std::mem::take(&mut self.sdk_id));
        let connection = self.connection;
        runtime.spawn(async move { reach::stream_ended(releases.store(), &env, &sdk_id, connection).await });
    }
}

/// `body`, holding `farewell` until it is dropped.
fn with_farewell(
    body: impl Stream<Item = Result<Bytes, Infallible>> + 'static,
    farewell: Farewell,
) -> impl Stream<Item = Result<Bytes, Infallible>> + 'static {
    body.map(move |frame| {
        let _held = &farewell;
        frame
    })
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
