//! The OFREP routes (`/ofrep/v1/…`, OpenFeature Remote Evaluation Protocol 0.3):
//! single-flag and bulk evaluation, and the change notifications the bulk answer
//! advertises in `eventStreams`. OFREP paths name no environment: it is the token's
//! `env` (a `*` token names one in the `X-Cohort-Env` header). Failures use OFREP's
//! bodies, not cohort's `{"error": …}`, because OFREP clients parse them.
//!
//! The event stream URL a bulk answer advertises carries a stream ticket
//! (`crate::ofrep::ticket`), never the caller's token: an `EventSource` cannot send
//! headers, in a browser or anywhere else, and a URL is logged by every proxy on its way.
//! Clients that can send headers may open the stream with their bearer token instead.

use super::auth::{Eval, Policy, principal, settled};
use super::extract::{BodyError, read_body};
use super::openapi::SseEvent;
use super::{ApiError, AppState, resource};
use crate::auth::{AuthError, EnvScope, Principal, Scope};
use crate::metrics::Counting;
use crate::ofrep::ticket::{Ticket, TicketError};
use crate::ofrep::{self, Bulk, FlagError};
use crate::store::{EnvName, InvalidEnvName};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{CacheControl, CacheDirective, ETag, EntityTag, IfNoneMatch};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError, web};
use cohort_sdk::Context;
use futures_util::future::{Either, LocalBoxFuture};
use serde::{Deserialize, Serialize};
use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// The event stream's query string does not parse.
    #[error("the query string is not valid: {0}")]
    InvalidQuery(String),
    /// A stream ticket that is expired, forged or not a ticket.
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// A ticket for one environment, with `X-Cohort-Env` naming another.
    #[error("the stream ticket is for environment `{ticket}`, not `{named}`")]
    TicketEnvironment { ticket: String, named: String },
    /// `?token=`: a bearer token in a URL.
    #[error(
        "a token in the URL (`?token=`) is not accepted: open the eventStreams URL of a bulk evaluation (it carries a short-lived `ticket`), or send the token in the Authorization header"
    )]
    TokenInUrl,
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
            | OfrepError::InvalidQuery(_)
            | OfrepError::Flag(FlagError::TargetingKeyMissing { .. }) => StatusCode::BAD_REQUEST,
            OfrepError::Flag(FlagError::NotFound(_)) => StatusCode::NOT_FOUND,
            OfrepError::Auth(e) if e.is_forbidden() => StatusCode::FORBIDDEN,
            OfrepError::Auth(_) => StatusCode::UNAUTHORIZED,
            OfrepError::Ticket(TicketError::Sign(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            OfrepError::Ticket(_) | OfrepError::TokenInUrl => StatusCode::UNAUTHORIZED,
            OfrepError::EnvironmentRequired | OfrepError::TicketEnvironment { .. } => StatusCode::FORBIDDEN,
            OfrepError::General(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OFREP's `errorCode`, for the statuses whose body carries one (400 and 404).
    fn error_code(&self) -> Option<&'static str> {
        match self {
            OfrepError::Parse(_) => Some("PARSE_ERROR"),
            OfrepError::InvalidContext(_) => Some("INVALID_CONTEXT"),
            OfrepError::InvalidEnvironment(_) | OfrepError::InvalidQuery(_) => Some("GENERAL"),
            OfrepError::Flag(e) => Some(e.code()),
            OfrepError::Auth(_)
            | OfrepError::EnvironmentRequired
            | OfrepError::Ticket(_)
            | OfrepError::TicketEnvironment { .. }
            | OfrepError::TokenInUrl
            | OfrepError::General(_) => None,
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
        let challenge = match &self.error {
            OfrepError::Auth(e) if status == StatusCode::UNAUTHORIZED => Some(e.code()),
            OfrepError::Ticket(TicketError::Expired) => Some("ticket_expired"),
            OfrepError::Ticket(TicketError::Invalid(_)) => Some("invalid_ticket"),
            OfrepError::TokenInUrl => Some("token_in_url"),
            _ => None,
        };
        if let Some(code) = challenge {
            response.insert_header(("WWW-Authenticate", format!("Bearer error=\"{code}\"")));
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
    /// The verified caller.
    pub principal: Arc<Principal>,
    _policy: PhantomData<P>,
}

impl<P: Policy + 'static> FromRequest for OfrepAuthorized<P> {
    type Error = Failure;
    /// Ready, except for a token naming a key the identity provider published since the
    /// last fetch ([`settled`]).
    type Future = Either<Ready<Result<Self, Failure>>, LocalBoxFuture<'static, Result<Self, Failure>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let key = req.match_info().get("key").map(str::to_owned);
        let authorized = |req: &HttpRequest, principal: Result<Arc<Principal>, ApiError>| {
            let principal = principal.map_err(OfrepError::from)?;
            let env = environment(req, &principal, P::SCOPES)?;
            Ok(OfrepAuthorized { env, principal, _policy: PhantomData })
        };
        match principal(req) {
            Err(ApiError::Auth(AuthError::UnknownKey(reason))) => match settled(req) {
                Some(principal) => {
                    let req = req.clone();
                    Either::Right(Box::pin(async move {
                        authorized(&req, principal.await).map_err(|error| Failure { key, error })
                    }))
                }
                None => {
                    let error = ApiError::Auth(AuthError::UnknownKey(reason));
                    Either::Left(ready(authorized(req, Err(error)).map_err(|error| Failure { key, error })))
                }
            },
            result => Either::Left(ready(authorized(req, result).map_err(|error| Failure { key, error }))),
        }
    }
}

/// The event stream's query (documented on [`events`]).
#[derive(Deserialize)]
struct EventsQuery {
    /// The stream ticket the advertised URL carries.
    #[serde(default)]
    ticket: Option<String>,
    /// Refused whatever it holds: tokens do not belong in URLs.
    #[serde(default)]
    token: Option<String>,
}

/// A request for the OFREP event stream: with the stream ticket of the URL a bulk answer
/// advertised (`?ticket=`), or with an `eval` bearer token in the `Authorization` header.
/// A ticket, when present, is the request's only credential.
pub struct OfrepStreamAuthorized {
    /// The environment followed.
    pub env: EnvName,
    /// Who follows it (the ticket's or the token's `sub`).
    pub sub: String,
}

impl FromRequest for OfrepStreamAuthorized {
    type Error = Failure;
    type Future = Ready<Result<Self, Failure>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(stream_authorized(req).map_err(Failure::bulk))
    }
}

fn stream_authorized(req: &HttpRequest) -> Result<OfrepStreamAuthorized, OfrepError> {
    let query = web::Query::<EventsQuery>::from_query(req.query_string())
        .map_err(|e| OfrepError::InvalidQuery(e.to_string()))?
        .into_inner();
    if query.token.is_some() {
        return Err(OfrepError::TokenInUrl);
    }
    let Some(ticket) = query.ticket else {
        let principal = principal(req)?;
        let env = environment(req, &principal, Eval::SCOPES)?;
        return Ok(OfrepStreamAuthorized { env, sub: principal.sub.clone() });
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| OfrepError::General("application state is not registered".into()))?;
    let Ticket { env, sub, .. } = state.tickets.verify(&ticket, now_secs())?;
    if let Some(named) = named_environment(req)?
        && named != env
    {
        return Err(OfrepError::TicketEnvironment { ticket: env.to_string(), named: named.to_string() });
    }
    Ok(OfrepStreamAuthorized { env, sub })
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The event stream URL the bulk answer advertises, with its ticket.
fn events_url(req: &HttpRequest, ticket: &str) -> String {
    let info = req.connection_info();
    // A ticket is base64url and dots: nothing in it needs escaping.
    format!("{}://{}/ofrep/v1/events?ticket={ticket}", info.scheme(), info.host())
}

fn named_environment(req: &HttpRequest) -> Result<Option<EnvName>, OfrepError> {
    match req.headers().get(ENV_HEADER) {
        Some(value) => Ok(Some(EnvName::parse(value.to_str().unwrap_or_default())?)),
        None => Ok(None),
    }
}

fn environment(req: &HttpRequest, principal: &Principal, scopes: &[Scope]) -> Result<EnvName, OfrepError> {
    let env = match (named_environment(req)?, &principal.env) {
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
    /// The evaluation context: `{"targetingKey": "user-42", …}`; absent is empty.
    #[serde(default)]
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
    metadata: OfrepFlagMetadata,
}

/// A flag's `metadata`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `crate::ofrep::FlagMetadata` serialises.
struct OfrepFlagMetadata {
    /// The unit's bucket, when the split placed it.
    bucket: Option<u32>,
    /// The environment revision evaluated.
    revision: u64,
}

/// One flag of a bulk answer: an evaluation or a failure.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `crate::ofrep::Flags` serialises.
#[serde(untagged)]
enum OfrepFlag {
    Evaluation(OfrepEvaluation),
    Failure(OfrepFailure),
}

/// OFREP's `bulkEvaluationSuccess`: each flag an evaluation or a failure.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `crate::ofrep::Bulk` serialises.
struct OfrepBulk {
    flags: Vec<OfrepFlag>,
    metadata: OfrepBulkMetadata,
    /// Where to follow changes (OFREP `eventStreams`): one SSE URL carrying a stream ticket.
    #[schema(rename = "eventStreams")]
    event_streams: Vec<OfrepEventStream>,
}

/// The bulk answer's `metadata`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `crate::ofrep::BulkMetadata` serialises.
struct OfrepBulkMetadata {
    environment: String,
    revision: u64,
}

/// OFREP's `eventStream`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `crate::ofrep::EventStream` serialises.
struct OfrepEventStream {
    /// `sse`.
    #[schema(rename = "type")]
    kind: String,
    /// `…/ofrep/v1/events?ticket=…`: open it as it is; the ticket expires after
    /// `ofrep.ticket_ttl_secs`, and a bulk evaluation gives a fresh one.
    url: String,
    /// Seconds of client inactivity after which to close the stream.
    #[schema(rename = "inactivityDelaySec")]
    inactivity_delay_sec: u32,
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
    let content = ofrep::bulk_content_tag(&auth.env, &current.etag(), &context);
    let now = now_secs();
    // 304 only for a client whose copy names the same flags and whose stream URL can
    // still be opened a while: one with an older ticket gets the answer again, with a
    // fresh URL, so an EventSource that must reconnect later finds its ticket valid.
    let if_none_match = req.get_header::<IfNoneMatch>();
    if let Some(IfNoneMatch::Items(tags)) = &if_none_match
        && let Some(held) = tags.iter().find(|t| {
            ofrep::parse_bulk_etag(t.tag())
                .is_some_and(|(held, exp)| held == content && state.tickets.still_fresh(exp, now))
        })
    {
        return Ok(HttpResponse::NotModified().insert_header(ETag(held.clone())).finish());
    }
    let ticket = state
        .tickets
        .issue(&auth.env, &auth.principal.sub, auth.principal.exp, now)
        .map_err(|e| Failure::bulk(e.into()))?;
    let tag = EntityTag::new_strong(ofrep::bulk_etag(&content, ticket.exp));
    if let Some(IfNoneMatch::Any) = if_none_match {
        return Ok(HttpResponse::NotModified().insert_header(ETag(tag)).finish());
    }
    let events_url = events_url(&req, &ticket.text);
    let bulk = Bulk {
        env: &auth.env,
        labels: state.release_labels,
        snapshot: &current.snapshot,
        releases: current.sorted(),
        context: &context,
        events_url: &events_url,
    };
    let mut response = HttpResponse::Ok();
    response.insert_header(ETag(tag)).insert_header(CacheControl(vec![CacheDirective::NoCache]));
    json(response, &bulk).map_err(Failure::bulk)
}

/// `GET /ofrep/v1/events`: OFREP `refetchEvaluation` events (Server-Sent Events).
#[utoipa::path(get, path = "/ofrep/v1/events", tag = "ofrep",
    params(
        ("ticket" = Option<String>, Query, description = "The stream ticket of a bulk answer's `eventStreams` URL (open that URL as it is): it opens the change notifications of one environment for `ofrep.ticket_ttl_secs`, nothing else. Without it, the request needs an `eval` bearer token in the `Authorization` header; with it, the header is not looked at"),
        ("X-Cohort-Env" = Option<String>, Header, description = "With a `*` bearer token: the environment. With a ticket it may be left out; if given, it must name the ticket's", example = "production"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last event's `id` (a revision): the first event then waits for a change after it"),
    ),
    security(("bearer" = []), ()),
    responses(
        (status = 200, description = "An endless event stream: `event: message`, `data: {\"type\": \"refetchEvaluation\", \"etag\"}`, `id` = revision; heartbeat comments in between. Without `Last-Event-ID` the first event comes at once", content_type = "text/event-stream", body = SseEvent),
        (status = 400, description = "`X-Cohort-Env` is not an environment name, or the query string does not parse (`GENERAL`)", body = OfrepFailure),
        (status = 401, description = "No valid credential: no ticket and no bearer token; a ticket that expired (evaluate again for a fresh `eventStreams` URL), is forged or is a bearer token; or a token in the URL (`?token=`, never accepted). `WWW-Authenticate` names the reason", body = OfrepDetails),
        (status = 403, description = "The bearer token does not allow evaluation in this environment, or names none; or `X-Cohort-Env` names another environment than the ticket's", body = OfrepDetails),
    ))]
async fn events(state: web::Data<AppState>, auth: OfrepStreamAuthorized, req: HttpRequest) -> HttpResponse {
    tracing::debug!(env = %auth.env, sub = %auth.sub, "OFREP event stream opened");
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
