//! The OFREP routes (`/ofrep/v1/…`, OpenFeature Remote Evaluation Protocol 0.3):
//! single-flag and bulk evaluation, and the change notifications the bulk answer
//! advertises in `eventStreams`. OFREP paths name no environment: it is the token's
//! `env` (a `*` token names one in the `X-Cohort-Env` header). Failures use OFREP's
//! bodies, not cohort's `{"error": …}`, because OFREP clients parse them.
//!
//! The event stream takes its token from the URL as well as from the header: browsers'
//! `EventSource` cannot send headers, so a browser's bulk answer advertises a URL
//! carrying its own (client-side, already public) token.

use super::auth::{Eval, Policy, bearer, principal};
use super::extract::{BodyError, read_body};
use super::{ApiError, AppState, resource};
use crate::auth::{AuthError, EnvScope, Principal, Scope};
use crate::metrics::Counting;
use crate::ofrep::{self, Bulk, FlagError};
use crate::store::{EnvName, InvalidEnvName};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, CacheControl, CacheDirective, ETag, EntityTag, IfNoneMatch};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError, web};
use cohort_sdk::Context;
use serde::{Deserialize, Serialize};
use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::sync::Arc;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/ofrep/v1/evaluate/flags/{key}").post(evaluate_flag))
        .service(resource("/ofrep/v1/evaluate/flags").post(evaluate_flags))
        .service(resource("/ofrep/v1/events").get(events));
}

/// The header a `*` token names its environment in.
pub const ENV_HEADER: &str = "x-cohort-env";

/// Largest request body: a context is a handful of attributes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why an OFREP request failed; each maps to the status and body OFREP specifies.
#[derive(Debug, thiserror::Error)]
pub enum OfrepError {
    /// The body is not the JSON of an evaluation request.
    #[error("{0}")]
    Parse(String),
    /// The body is JSON but has no usable `context`.
    #[error("{0}")]
    InvalidContext(String),
    /// Flag not found, or the context lacks the release's unit.
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// No valid token, or one that does not allow this.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A `*` token without `X-Cohort-Env`.
    #[error(
        "this token is valid in every environment (`env: *`) and OFREP paths name none: use a token for one environment, or name it in the X-Cohort-Env header"
    )]
    EnvironmentRequired,
    /// `X-Cohort-Env` is not an environment name.
    #[error("X-Cohort-Env: {0}")]
    InvalidEnvironment(#[from] InvalidEnvName),
    /// A bug.
    #[error("internal error: {0}")]
    General(String),
}

impl OfrepError {
    fn status(&self) -> StatusCode {
        match self {
            OfrepError::Parse(_)
            | OfrepError::InvalidContext(_)
            | OfrepError::InvalidEnvironment(_)
            | OfrepError::Flag(FlagError::TargetingKeyMissing { .. }) => StatusCode::BAD_REQUEST,
            OfrepError::Flag(FlagError::NotFound(_)) => StatusCode::NOT_FOUND,
            OfrepError::Auth(e) if e.is_forbidden() => StatusCode::FORBIDDEN,
            OfrepError::Auth(_) => StatusCode::UNAUTHORIZED,
            OfrepError::EnvironmentRequired => StatusCode::FORBIDDEN,
            OfrepError::General(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OFREP's `errorCode`, for the statuses whose body carries one (400 and 404).
    fn error_code(&self) -> Option<&'static str> {
        match self {
            OfrepError::Parse(_) => Some("PARSE_ERROR"),
            OfrepError::InvalidContext(_) => Some("INVALID_CONTEXT"),
            OfrepError::InvalidEnvironment(_) => Some("GENERAL"),
            OfrepError::Flag(e) => Some(e.code()),
            OfrepError::Auth(_) | OfrepError::EnvironmentRequired | OfrepError::General(_) => None,
        }
    }
}

impl From<ApiError> for OfrepError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Auth(e) => OfrepError::Auth(e),
            other => OfrepError::General(other.to_string()),
        }
    }
}

/// An [`OfrepError`] with the flag it is about (single-flag route), as a response.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failure {
    key: Option<String>,
    error: OfrepError,
}

impl Failure {
    fn bulk(error: OfrepError) -> Self {
        Failure { key: None, error }
    }

    fn flag(key: &str) -> impl Fn(OfrepError) -> Failure + '_ {
        move |error| Failure { key: Some(key.to_owned()), error }
    }
}

/// `generalErrorResponse`, also used for 401 and 403 (OFREP leaves their body open).
#[derive(Serialize)]
struct Details {
    #[serde(rename = "errorDetails")]
    error_details: String,
}

impl ResponseError for Failure {
    fn status_code(&self) -> StatusCode {
        self.error.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::warn!(error = %self.error, "OFREP request failed");
        }
        let mut response = HttpResponse::build(status);
        if let OfrepError::Auth(e) = &self.error
            && status == StatusCode::UNAUTHORIZED
        {
            response.insert_header(("WWW-Authenticate", format!("Bearer error=\"{}\"", e.code())));
        }
        match self.error.error_code() {
            Some(code) => response.json(ofrep::Failure {
                key: self.key.as_deref(),
                error_code: code,
                error_details: self.error.to_string(),
            }),
            None => response.json(Details { error_details: self.error.to_string() }),
        }
    }
}

/// An OFREP request whose token allows `P`, and the environment it is for: the token's
/// `env`, or for a `*` token the `X-Cohort-Env` header.
pub struct OfrepAuthorized<P> {
    /// The environment evaluated.
    pub env: EnvName,
    _policy: PhantomData<P>,
}

impl<P: Policy> FromRequest for OfrepAuthorized<P> {
    type Error = Failure;
    type Future = Ready<Result<Self, Failure>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = principal(req)
            .map_err(OfrepError::from)
            .and_then(|principal| environment(req, &principal, P::SCOPES))
            .map(|env| OfrepAuthorized { env, _policy: PhantomData });
        ready(result.map_err(|error| Failure { key: req.match_info().get("key").map(str::to_owned), error }))
    }
}

/// A request for the OFREP event stream with an `eval` token, from the `Authorization`
/// header or — because a browser's `EventSource` cannot send headers — the `token`
/// query parameter of the URL the bulk answer advertised.
pub struct OfrepStreamAuthorized {
    /// The environment followed.
    pub env: EnvName,
}

impl FromRequest for OfrepStreamAuthorized {
    type Error = Failure;
    type Future = Ready<Result<Self, Failure>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = stream_principal(req)
            .and_then(|principal| environment(req, &principal, Eval::SCOPES))
            .map(|env| OfrepStreamAuthorized { env });
        ready(result.map_err(Failure::bulk))
    }
}

fn stream_principal(req: &HttpRequest) -> Result<Arc<Principal>, OfrepError> {
    match query_token(req.query_string()) {
        Some(token) if !req.headers().contains_key(header::AUTHORIZATION) => {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| OfrepError::General("application state is not registered".into()))?;
            Ok(super::auth::authenticate(state, token)?)
        }
        _ => Ok(principal(req)?),
    }
}

fn query_token(query: &str) -> Option<&str> {
    query.split('&').find_map(|pair| pair.strip_prefix("token=")).filter(|token| !token.is_empty())
}

/// The event stream URL the bulk answer advertises. A browser (it sends `Origin`)
/// gets its own token in it, as its `EventSource` cannot send headers; that token is
/// already in the page. Other clients send their headers and get a URL without it.
fn events_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    let mut url = format!("{}://{}/ofrep/v1/events", info.scheme(), info.host());
    let url_safe = |t: &str| t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if req.headers().contains_key(header::ORIGIN)
        && let Ok(token) = bearer(req)
        && url_safe(token)
    {
        url.push_str("?token=");
        url.push_str(token);
    }
    url
}

fn environment(req: &HttpRequest, principal: &Principal, scopes: &[Scope]) -> Result<EnvName, OfrepError> {
    let named = match req.headers().get(ENV_HEADER) {
        Some(value) => Some(EnvName::parse(value.to_str().unwrap_or_default())?),
        None => None,
    };
    let env = match (named, &principal.env) {
        (Some(env), _) => env,
        (None, EnvScope::One(env)) => env.clone(),
        (None, EnvScope::Any) => return Err(OfrepError::EnvironmentRequired),
    };
    // A one-environment token naming another environment in the header is refused here.
    principal.authorize_any(scopes, &env)?;
    Ok(env)
}

/// OFREP's `evaluationRequest`.
#[derive(Deserialize, utoipa::ToSchema)]
struct EvaluationRequest {
    /// The evaluation context: `{"targetingKey": "user-42", …}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Context>,
}

/// OFREP's `evaluationSuccess`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `crate::ofrep::Evaluation` serialises.
struct OfrepEvaluation {
    key: String,
    /// The version's typed value, or its name.
    value: Option<serde_json::Value>,
    /// `SPLIT`, `TARGETING_MATCH`, `DISABLED`, `DEFAULT`, …
    reason: String,
    /// The version name.
    variant: Option<String>,
    /// `{"bucket"?, "revision"}`.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
}

/// OFREP's `bulkEvaluationSuccess`: each flag an evaluation or a failure.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `crate::ofrep::Bulk` serialises.
struct OfrepBulk {
    #[schema(value_type = Vec<Object>)]
    flags: Vec<serde_json::Value>,
    /// `{"environment", "revision"}`.
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    /// `[{"type": "sse", "url", "inactivityDelaySec"}]` (OFREP ADR-0008).
    #[schema(rename = "eventStreams", value_type = Vec<Object>)]
    event_streams: Vec<serde_json::Value>,
}

/// OFREP's error body for 400 and 404: `{"key"?, "errorCode", "errorDetails"}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `crate::ofrep::Failure` serialises.
pub(super) struct OfrepFailure {
    key: Option<String>,
    /// `FLAG_NOT_FOUND`, `PARSE_ERROR`, `INVALID_CONTEXT`, `TARGETING_KEY_MISSING`, `GENERAL`.
    #[schema(rename = "errorCode")]
    error_code: String,
    #[schema(rename = "errorDetails")]
    error_details: String,
}

/// OFREP's `generalErrorResponse` (401, 403, 500).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `Details` serialises.
pub(super) struct OfrepDetails {
    #[schema(rename = "errorDetails")]
    error_details: String,
}

/// Reads `{"context": {...}}`: bad JSON is `PARSE_ERROR`, a context that is not an
/// object `INVALID_CONTEXT`; no context at all is an empty one.
async fn read_context(payload: web::Payload) -> Result<Context, OfrepError> {
    let body = read_body(payload, None, MAX_BODY_BYTES).await.map_err(|error| match error {
        BodyError::TooLarge => OfrepError::Parse(format!("the request body is larger than {MAX_BODY_BYTES} bytes")),
        BodyError::Read(e) => OfrepError::Parse(format!("cannot read the request body: {e}")),
    })?;
    let request: EvaluationRequest = serde_json::from_slice(&body).map_err(|e| {
        if e.is_data() {
            OfrepError::InvalidContext(format!("the request body must be {{\"context\": {{...}}}}: {e}"))
        } else {
            OfrepError::Parse(format!("the request body is not valid JSON: {e}"))
        }
    })?;
    // OFREP requires `context`, but real clients send `{}` when the application gave
    // none (the Python provider does); an empty context is what they mean.
    Ok(request.context.unwrap_or_default())
}

fn json(mut response: HttpResponseBuilder, body: &impl Serialize) -> Result<HttpResponse, OfrepError> {
    let bytes = serde_json::to_vec(body).map_err(|e| OfrepError::General(e.to_string()))?;
    Ok(response.content_type("application/json").body(bytes))
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags/{key}", tag = "ofrep",
    params(("key" = String, Path, description = "Flag (release) key", example = "checkout"), ("X-Cohort-Env" = Option<String>, Header, description = "The environment, for a token valid in every environment (`env: *`)", example = "production")),
    request_body = EvaluationRequest,
    responses(
        (status = 200, description = "The evaluation", body = OfrepEvaluation),
        (status = 400, description = "`PARSE_ERROR`, `INVALID_CONTEXT`, `TARGETING_KEY_MISSING`", body = OfrepFailure),
        (status = 404, description = "`FLAG_NOT_FOUND`", body = OfrepFailure),
    ))]
pub(super) async fn evaluate_flag(
    state: web::Data<AppState>,
    auth: OfrepAuthorized<Eval>,
    key: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, Failure> {
    let fail = Failure::flag(&key);
    let context = read_context(body).await.map_err(&fail)?;
    let current = state.snapshots.get(&auth.env).unwrap_or_default();
    let counting = Counting { env: auth.env.as_str(), labels: state.release_labels };
    let evaluation = ofrep::evaluate(counting, &current.snapshot, &key, &context).map_err(|e| fail(e.into()))?;
    json(HttpResponse::Ok(), &evaluation).map_err(fail)
}

/// `POST /ofrep/v1/evaluate/flags`: every flag, `ETag` per revision and context, 304 on
/// `If-None-Match`.
#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags", tag = "ofrep",
    params(("X-Cohort-Env" = Option<String>, Header, description = "The environment, for a token valid in every environment (`env: *`)", example = "production"), ("If-None-Match" = Option<String>, Header, description = "A previous answer's ETag")),
    request_body = EvaluationRequest,
    responses(
        (status = 200, description = "Every flag", body = OfrepBulk, headers(("ETag" = String))),
        (status = 304, description = "Unchanged", headers(("ETag" = String))),
        (status = 400, description = "`PARSE_ERROR`, `INVALID_CONTEXT`", body = OfrepFailure),
    ))]
pub(super) async fn evaluate_flags(
    state: web::Data<AppState>,
    auth: OfrepAuthorized<Eval>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, Failure> {
    let context = read_context(body).await.map_err(Failure::bulk)?;
    let current = state.snapshots.get(&auth.env).unwrap_or_default();
    let tag = EntityTag::new_strong(ofrep::bulk_etag(&auth.env, &current.etag(), &context));
    let unchanged = match req.get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(tags)) => tags.iter().any(|t| t.weak_eq(&tag)),
        None => false,
    };
    if unchanged {
        return Ok(HttpResponse::NotModified().insert_header(ETag(tag)).finish());
    }
    let events_url = events_url(&req);
    let bulk = Bulk {
        env: &auth.env,
        labels: state.release_labels,
        snapshot: &current.snapshot,
        releases: current.index().sorted(),
        context: &context,
        events_url: &events_url,
    };
    let mut response = HttpResponse::Ok();
    response.insert_header(ETag(tag)).insert_header(CacheControl(vec![CacheDirective::NoCache]));
    json(response, &bulk).map_err(Failure::bulk)
}

/// `GET /ofrep/v1/events`: OFREP `refetchEvaluation` events (Server-Sent Events).
#[utoipa::path(get, path = "/ofrep/v1/events", tag = "ofrep",
    params(("X-Cohort-Env" = Option<String>, Header, description = "The environment, for a token valid in every environment (`env: *`)", example = "production"), ("token" = Option<String>, Query, description = "The bearer token, for browsers' `EventSource`")),
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String)))]
async fn events(state: web::Data<AppState>, auth: OfrepStreamAuthorized, req: HttpRequest) -> HttpResponse {
    let last_event_id = req.headers().get("last-event-id").and_then(|v| v.to_str().ok()?.trim().parse().ok());
    // OFREP clients never acknowledge: the server can only say it wrote the event.
    let subscription = state.streams.subscribe(&auth.env, last_event_id, crate::stream::Listener::DeliveredOnly);
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header(("x-accel-buffering", "no"))
        // Like cohort's own stream: it ends only when the client must reconnect.
        .force_close()
        .streaming(ofrep::refetch_events(subscription, Arc::clone(&state.snapshots), auth.env))
}
