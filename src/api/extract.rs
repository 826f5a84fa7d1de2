//! Request parts handlers share: the `If-Match` revision and `ETag`s.

use super::error::ApiError;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest};
use std::future::{Ready, ready};

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
