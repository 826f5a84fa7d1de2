//! The one place errors become HTTP responses: every variant has one status and one
//! machine-readable code, and every body is `{"error": {"code", "message"}}`.

use crate::auth::AuthError;
use crate::releases::ReleaseError;
use crate::store::{InvalidEnvName, StoreError};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (syntax).
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON of the wrong shape (unknown field, wrong type, missing field).
    #[error("request body has the wrong shape: {0}")]
    InvalidBody(String),
    /// A header, query or path value is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No valid token, or a token that does not allow this.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The environment in the URL is not a valid name.
    #[error(transparent)]
    InvalidEnvironment(#[from] InvalidEnvName),
    /// Request target (path and query) above the configured limit.
    #[error("the request target (path and query) is longer than the limit of {limit} bytes")]
    UriTooLong { limit: usize },
    /// Body above the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The release described is invalid.
    #[error("invalid release: {field}: {message}")]
    InvalidRelease { field: String, message: String },
    /// Unknown release.
    #[error("release `{0}` does not exist")]
    ReleaseNotFound(String),
    /// Unknown route.
    #[error("no such route: {0}")]
    RouteNotFound(String),
    /// Route exists, method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Create of an existing key.
    #[error("release `{0}` already exists")]
    AlreadyExists(String),
    /// The release's state does not allow this now.
    #[error("{0}")]
    Conflict(String),
    /// The write would move a ramped release's allocation; only the ramp may.
    #[error("{0}")]
    RampActive(String),
    /// `If-Match` is stale.
    #[error("release `{key}` is at revision {current}, not {expected}: someone changed it; fetch it again and retry")]
    RevisionMismatch { key: String, expected: u64, current: u64 },
    /// `If-Match` is required and missing.
    #[error("this change needs an If-Match header with the release's revision (its ETag), e.g. If-Match: \"7\"")]
    PreconditionRequired,
    /// The store cannot be reached; nothing was written.
    #[error("the store is unavailable, nothing was written; evaluation goes on from the last snapshot: {0}")]
    StoreUnavailable(String),
    /// A write sent to the store without an answer: it may or may not be applied.
    #[error(
        "the store did not confirm the write, so it may have been applied (a release, kill or revocation write never is after this answer): read the state back before retrying; evaluation goes on from the last snapshot: {0}"
    )]
    StoreUnconfirmed(String),
    /// The environment does not exist (create it with `cohort env create`).
    #[error("environment `{env}` does not exist{}", nearest.as_ref().map(|n| format!("; did you mean `{n}`?")).unwrap_or_default())]
    EnvironmentNotFound { env: String, nearest: Option<String> },
    /// Create of an existing environment.
    #[error("environment `{0}` already exists")]
    EnvironmentExists(String),
    /// Delete of an environment that holds releases.
    #[error("{0}")]
    EnvironmentNotEmpty(String),
    /// The store went backwards for this environment; writes are refused.
    #[error("{0}")]
    StoreRegressed(String),
    /// An unkill the store cannot take now (only kills are served before it has them).
    #[error("{0}")]
    UnkillNeedsStore(String),
    /// A reseed from an instance behind another one (`force` overrides).
    #[error("{0}")]
    ReseedBehind(String),
    /// Written at `revision` but not confirmed by enough replicas: not acknowledged.
    #[error("{message}")]
    NotReplicated { message: String, revision: u64 },
    /// The instance has not loaded its first snapshot.
    #[error("not ready: the first snapshot has not been loaded yet{}", .0.as_ref().map(|why| format!(" ({why})")).unwrap_or_default())]
    NotReady(Option<String>),
    /// A CORS preflight from an origin the configuration does not allow on this route.
    #[error("origin `{origin}` may not call {routes} cross-origin; allow it in the [cors] settings")]
    OriginNotAllowed { origin: String, routes: String },
    /// An outcome report names release/version pairs the environment does not hold;
    /// nothing of it was stored.
    #[error("{message}")]
    UnknownOutcomePairs { message: String, unknown: Vec<crate::events::Pair>, total: usize },
    /// Over a rate limit; retry after the given seconds.
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
    /// A bug or corrupt data.
    /// A console form without this session's CSRF token, or from another origin.
    #[error("refused: {0}")]
    CsrfRefused(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::ratelimit::Refused> for ApiError {
    fn from(refused: crate::ratelimit::Refused) -> Self {
        ApiError::RateLimited { message: refused.to_string(), retry_after_secs: refused.retry_after_secs }
    }
}

impl ApiError {
    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidEnvironment(_) => "invalid_environment",
            ApiError::Auth(e) => e.code(),
            ApiError::UriTooLong { .. } => "uri_too_long",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::InvalidRelease { .. } => "invalid_release",
            ApiError::ReleaseNotFound(_) => "release_not_found",
            ApiError::RouteNotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::AlreadyExists(_) => "already_exists",
            ApiError::Conflict(_) => "conflict",
            ApiError::RampActive(_) => "ramp_active",
            ApiError::RevisionMismatch { .. } => "revision_mismatch",
            ApiError::PreconditionRequired => "precondition_required",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::StoreUnconfirmed(_) => "store_unconfirmed",
            ApiError::NotReady(_) => "not_ready",
            ApiError::EnvironmentNotFound { .. } => "environment_not_found",
            ApiError::EnvironmentExists(_) => "environment_exists",
            ApiError::EnvironmentNotEmpty(_) => "environment_not_empty",
            ApiError::StoreRegressed(_) => "store_regressed",
            ApiError::UnkillNeedsStore(_) => "unkill_needs_store",
            ApiError::ReseedBehind(_) => "reseed_behind",
            ApiError::NotReplicated { .. } => "not_replicated",
            ApiError::OriginNotAllowed { .. } => "origin_not_allowed",
            ApiError::UnknownOutcomePairs { .. } => "unknown_outcome_pairs",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::CsrfRefused(_) => "csrf_refused",
            ApiError::Internal(_) => "internal",
        }
    }

    /// A JSON-body extraction failure, sorted into syntax, shape and size.
    pub fn from_json(err: JsonPayloadError, limit: usize) -> Self {
        match err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                ApiError::PayloadTooLarge { limit }
            }
            JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::InvalidBody(e.to_string()),
            JsonPayloadError::Deserialize(e) => ApiError::InvalidJson(e.to_string()),
            other => ApiError::InvalidJson(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(key) => ApiError::AlreadyExists(key),
            StoreError::NotFound(key) => ApiError::ReleaseNotFound(key),
            StoreError::RevisionMismatch { key, expected, current } => {
                ApiError::RevisionMismatch { key, expected, current }
            }
            StoreError::Unavailable(message) => ApiError::StoreUnavailable(message),
            StoreError::Unconfirmed(message) => ApiError::StoreUnconfirmed(message),
            StoreError::Corrupt(message) => ApiError::Internal(message),
            StoreError::EnvironmentNotFound(env) => ApiError::EnvironmentNotFound { env, nearest: None },
            StoreError::EnvironmentExists(env) => ApiError::EnvironmentExists(env),
            e @ StoreError::EnvironmentNotEmpty { .. } => ApiError::EnvironmentNotEmpty(e.to_string()),
            e @ StoreError::Regressed { .. } => ApiError::StoreRegressed(e.to_string()),
            e @ StoreError::NotReplicated { revision, .. } => {
                ApiError::NotReplicated { message: e.to_string(), revision }
            }
        }
    }
}

impl From<ReleaseError> for ApiError {
    fn from(e: ReleaseError) -> Self {
        match e {
            ReleaseError::Invalid { field, message } => ApiError::InvalidRelease { field, message },
            ReleaseError::Conflict(message) => ApiError::Conflict(message),
            ReleaseError::EnvironmentNotFound { env, nearest } => ApiError::EnvironmentNotFound { env, nearest },
            ReleaseError::RampActive(message) => ApiError::RampActive(message),
            e @ ReleaseError::UnkillNeedsStore { .. } => ApiError::UnkillNeedsStore(e.to_string()),
            e @ ReleaseError::ReseedBehind { .. } => ApiError::ReseedBehind(e.to_string()),
            ReleaseError::Store(e) => e.into(),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: String,
    /// `unknown_outcome_pairs`: the first pairs the environment does not hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown: Option<&'a [crate::events::Pair]>,
    /// `unknown_outcome_pairs`: how many there were in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_total: Option<usize>,
    /// `not_replicated`: the revision the write got in the store.
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) | ApiError::BadRequest(_) | ApiError::InvalidEnvironment(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Auth(e) if e.is_forbidden() => StatusCode::FORBIDDEN,
            ApiError::CsrfRefused(_) => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::OriginNotAllowed { .. } => StatusCode::FORBIDDEN,
            ApiError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidBody(_) | ApiError::InvalidRelease { .. } | ApiError::UnknownOutcomePairs { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ReleaseNotFound(_) | ApiError::RouteNotFound(_) | ApiError::EnvironmentNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::AlreadyExists(_)
            | ApiError::Conflict(_)
            | ApiError::RampActive(_)
            | ApiError::EnvironmentExists(_)
            | ApiError::EnvironmentNotEmpty(_)
            | ApiError::ReseedBehind(_) => StatusCode::CONFLICT,
            ApiError::RevisionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::StoreUnavailable(_)
            | ApiError::StoreUnconfirmed(_)
            | ApiError::NotReady(_)
            | ApiError::StoreRegressed(_)
            | ApiError::UnkillNeedsStore(_)
            | ApiError::NotReplicated { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        }
        if let ApiError::StoreUnavailable(_)
        | ApiError::StoreUnconfirmed(_)
        | ApiError::Internal(_)
        | ApiError::StoreRegressed(_)
        | ApiError::UnkillNeedsStore(_)
        | ApiError::NotReplicated { .. } = self
        {
            crate::metrics::METRICS.store_errors.with_label_values(&[self.code()]).inc();
        }
        let mut response = HttpResponse::build(status);
        // An error is never worth keeping (a 404 is cacheable by default).
        response.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", format!("Bearer error=\"{}\"", self.code())));
        }
        if let ApiError::RateLimited { retry_after_secs, .. } = self {
            response.insert_header((actix_web::http::header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        let (unknown, unknown_total) = match self {
            ApiError::UnknownOutcomePairs { unknown, total, .. } => (Some(unknown.as_slice()), Some(*total)),
            _ => (None, None),
        };
        let revision = match self {
            ApiError::NotReplicated { revision, .. } => Some(*revision),
            _ => None,
        };
        response.json(Body {
            error: Detail { code: self.code(), message: self.to_string(), unknown, unknown_total, revision },
        })
    }
}

/// Extractor hook: JSON bodies.
pub fn json_error(limit: usize) -> impl Fn(JsonPayloadError, &HttpRequest) -> actix_web::Error + Clone {
    move |err, _req| ApiError::from_json(err, limit).into()
}

/// Extractor hook: path segments.
pub fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid path: {err}")).into()
}

/// Extractor hook: query strings.
pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("invalid query: {err}")).into()
}
