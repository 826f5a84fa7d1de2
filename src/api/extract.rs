//! Request parts handlers share: the `If-Match` revision, `ETag`s, and a whole body
//! for handlers that parse it themselves.

use super::error::ApiError;
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::{Stream, StreamExt};
use std::future::{Ready, ready};

/// The largest request body (`server.max_body_bytes`), as app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The request body, read whole and no larger than [`BodyLimit`] (413 otherwise). For
/// handlers that deserialise borrowing from the bytes (`serde_json::from_slice` into
/// `&str`/`Cow`), which `web::Json` cannot: it wants owned types.
pub struct RawBody(pub Bytes);

impl FromRequest for RawBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req.app_data::<BodyLimit>().map_or(256 * 1024, |l| l.0);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|len| len > limit) {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            read_body(payload, declared, limit).await.map(RawBody).map_err(|error| match error {
                BodyError::TooLarge => ApiError::PayloadTooLarge { limit },
                BodyError::Read(e) => ApiError::InvalidJson(format!("cannot read the request body: {e}")),
            })
        })
    }
}

/// Why a request body could not be read whole.
pub enum BodyError {
    /// More than the limit.
    TooLarge,
    /// The connection failed mid-body.
    Read(PayloadError),
}

/// Reads a request body whole, refusing more than `limit` bytes; `declared` (the
/// `Content-Length`) sizes the buffer. A body that arrives in one chunk — most small
/// ones — is kept as it is, without a copy.
pub async fn read_body(
    mut payload: impl Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    declared: Option<usize>,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let first = match payload.next().await {
        Some(chunk) => chunk.map_err(BodyError::Read)?,
        None => return Ok(Bytes::new()),
    };
    if first.len() > limit {
        return Err(BodyError::TooLarge);
    }
    let Some(second) = payload.next().await else { return Ok(first) };
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit).max(first.len() * 2));
    body.extend_from_slice(&first);
    let mut next = Some(second);
    while let Some(chunk) = next {
        let chunk = chunk.map_err(BodyError::Read)?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
        next = payload.next().await;
    }
    Ok(body.freeze())
}

impl RawBody {
    /// Parses the body as JSON: a syntax error is 400 `invalid_json`, the wrong shape 422.
    pub fn json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.0).map_err(|e| {
            if e.is_data() { ApiError::InvalidBody(e.to_string()) } else { ApiError::InvalidJson(e.to_string()) }
        })
    }
}

/// The `If-Match` header as a revision: `"7"`, `W/"7"` and `7` are accepted; absent or
/// `*` gives `None`.
pub struct IfMatch(pub Option<u64>);

impl IfMatch {
    /// The revision, or 428 when the caller must send one.
    pub fn required(&self) -> Result<u64, ApiError> {
        self.0.ok_or(ApiError::PreconditionRequired)
    }
}

impl FromRequest for IfMatch {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse_if_match(req.headers().get(header::IF_MATCH)).map(IfMatch))
    }
}

fn parse_if_match(value: Option<&header::HeaderValue>) -> Result<Option<u64>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let bad = || ApiError::BadRequest("If-Match must be a revision, e.g. If-Match: \"7\"".into());
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    text.parse().map(Some).map_err(|_| bad())
}

/// The `ETag` value for a revision.
pub fn etag(revision: u64) -> (header::HeaderName, String) {
    (header::ETAG, format!("\"{revision}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_the_usual_spellings() {
        let parse = |s: &str| parse_if_match(Some(&header::HeaderValue::from_str(s).unwrap())).ok().flatten();
        assert_eq!(parse("\"7\""), Some(7));
        assert_eq!(parse("W/\"7\""), Some(7));
        assert_eq!(parse("7"), Some(7));
        assert_eq!(parse("*"), None);
        assert!(parse_if_match(Some(&header::HeaderValue::from_static("\"seven\""))).is_err());
        assert_eq!(parse_if_match(None).ok().flatten(), None);
    }
}
