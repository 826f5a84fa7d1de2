//! What every request and every answer goes through, hot routes included: the request
//! target's length, `HEAD` on `GET` routes, a request body the handler left unread, and
//! the headers every answer carries. One layer, the outermost.
//!
//! **Unread bodies.** actix-http's HTTP/1 dispatcher shuts a kept-alive connection down
//! when an answer is complete before the request's body has arrived in full (it cannot
//! find where the next request starts), and the answer does not say so: a client that
//! sent its headers first and its body a moment later — most clients past a packet's
//! worth — gets a refusal (401, 403, 404 before the body was read), then a dead socket
//! on its next request. So the request's body is watched, and once the answer is ready
//! what is left of it is read and thrown away, up to `server.max_body_bytes` in all and
//! for at most `http.drain_timeout_ms`; a larger or slower body is left unread and the
//! answer says `Connection: close`, which clients honour by opening a new connection.
//!
//! **Headers.** Every answer says `X-Content-Type-Options: nosniff`. Every answer of a
//! routed (not hot) route that sets no `Cache-Control` of its own gets `no-store`: admin
//! data and errors must not sit in a shared cache; so does every error (`ApiError`). The
//! evaluations (POST: not stored by caches without explicit freshness) carry none, the
//! snapshot, OFREP bulk and event-stream routes keep theirs (`no-cache`, with an `ETag` to
//! revalidate). No answer names the server software or its version.

use super::ApiError;
use crate::config::HttpSettings;
use actix_web::body::{BodySize, BodyStream, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{ConnectionType, Method};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, ResponseError};
use futures_util::{Stream, StreamExt};
use std::cell::RefCell;
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The limits the edges enforce.
#[derive(Debug, Clone, Copy)]
pub struct Edges {
    max_uri_bytes: usize,
    max_body_bytes: usize,
    drain_timeout: Duration,
}

impl Edges {
    /// The edges `http` and the body limit ask for.
    pub fn new(http: &HttpSettings, max_body_bytes: usize) -> Self {
        Edges { max_uri_bytes: http.max_uri_bytes, max_body_bytes, drain_timeout: http.drain_timeout() }
    }
}

/// Middleware: refuses an over-long target with 414, serves `HEAD` as `GET` without the
/// body, answers the hot routes ([`super::hot::dispatch`], called here rather than as a
/// layer of its own: a layer costs the hot path an allocation), reads what the handler
/// left of the request body (or closes the connection), and adds the common headers.
pub async fn guard<B: MessageBody + 'static>(
    edges: Edges,
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<EitherBody<BoxBody, impl MessageBody>>>, actix_web::Error> {
    let target = req.uri().path_and_query().map_or(0, |target| target.as_str().len());
    // actix-http's codec knows the request was HEAD and writes no body whatever the
    // handler returns; the routes only need to see the GET they serve.
    let head = req.method() == Method::HEAD;
    if head {
        req.head_mut().method = Method::GET;
    }
    // A request that asked for the connection to close leaves nothing to keep usable.
    let tap = if req.head().connection_type() == ConnectionType::Close { None } else { Tap::install(&mut req) };
    let mut response = if target > edges.max_uri_bytes {
        tracing::debug!(target_bytes = target, limit = edges.max_uri_bytes, "request target too long");
        req.into_response(ApiError::UriTooLong { limit: edges.max_uri_bytes }.error_response()).map_into_right_body()
    } else {
        super::hot::dispatch(req, next).await?.map_into_left_body()
    };
    if let Some(tap) = tap
        && !drain(tap, &edges, content_length(response.request().headers())).await
    {
        tracing::debug!("request body left unread; the answer closes the connection");
        response.response_mut().head_mut().set_connection_type(ConnectionType::Close);
    }
    if head && response.response().body().size() == BodySize::Stream {
        // An endless stream (SSE) would hold the connection for a body never sent.
        response = response.map_body(|_, _| EitherBody::right(BoxBody::new(BodyStream::new(empty()))));
    }
    // A hot route's answer is an evaluation (a POST answer, which no cache stores without
    // explicit freshness) or a snapshot with its own `Cache-Control`; its errors say
    // `no-store` themselves (`ApiError`).
    let hot = matches!(response.response().body(), EitherBody::Left { body: EitherBody::Left { .. } });
    common_headers(response.headers_mut(), hot);
    Ok(response)
}

fn empty() -> futures_util::stream::Empty<Result<Bytes, Infallible>> {
    futures_util::stream::empty()
}

/// The headers every answer carries; `hot` for a hot route's.
fn common_headers(headers: &mut HeaderMap, hot: bool) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !hot && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// The declared body length, when there is a valid one.
fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A request body being read, by the handler or by [`drain`]: how much has been, and
/// whether it ended.
struct Tap {
    payload: Payload,
    read: usize,
    state: Reading,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// More may come.
    Open,
    /// Read to its end.
    Ended,
    /// The connection failed mid-body.
    Failed,
}

impl Tap {
    /// Puts a watch between `req` and its body; `None` when it has no body.
    fn install(req: &mut ServiceRequest) -> Option<Rc<RefCell<Tap>>> {
        let payload = req.take_payload();
        if let Payload::None = payload {
            return None;
        }
        let tap = Rc::new(RefCell::new(Tap { payload, read: 0, state: Reading::Open }));
        req.set_payload(Payload::Stream { payload: Box::pin(Tapped(Rc::clone(&tap))) });
        Some(tap)
    }
}

/// The body as the handler (and [`drain`]) read it, through the [`Tap`].
struct Tapped(Rc<RefCell<Tap>>);

impl Stream for Tapped {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut tap = self.0.borrow_mut();
        let polled = Pin::new(&mut tap.payload).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => tap.read = tap.read.saturating_add(chunk.len()),
            Poll::Ready(Some(Err(_))) => tap.state = Reading::Failed,
            Poll::Ready(None) => tap.state = Reading::Ended,
            Poll::Pending => {}
        }
        polled
    }
}

/// Reads and drops what is left of the body; `true` when it ended within the limits (the
/// connection can serve the next request), `false` when it is left unread.
async fn drain(tap: Rc<RefCell<Tap>>, edges: &Edges, declared: Option<usize>) -> bool {
    match tap.borrow().state {
        Reading::Ended => return true,
        Reading::Failed => return false,
        Reading::Open => {}
    }
    if declared.is_some_and(|length| length > edges.max_body_bytes) {
        return false;
    }
    let mut rest = Tapped(Rc::clone(&tap));
    let read_all = async {
        while let Some(chunk) = rest.next().await {
            if chunk.is_err() || tap.borrow().read > edges.max_body_bytes {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(edges.drain_timeout, read_all).await.unwrap_or(false)
}
