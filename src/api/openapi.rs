//! `GET /openapi.json`: the OpenAPI 3.1 document of the whole HTTP API, generated from
//! the handlers' `#[utoipa::path]` annotations and the request/response types. The
//! repository's `openapi.json` is this document; a test keeps the two equal.
//!
//! The errors every authenticated route can answer (bad environment, 401, 403, store
//! failures) are added here in one place rather than repeated on each handler; each
//! handler lists only the statuses particular to it.

use super::resource;
use super::{
    audit, environment, envs, evaluate, events, fleets, health, ofrep, ramp, reach, releases, revocations, sync,
};
use actix_web::{HttpResponse, web};
use serde::Serialize;
use std::sync::OnceLock;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/openapi.json").get(serve));
}

/// cohort's error body: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// One error: a stable machine-readable `code` and a message for people.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// e.g. `invalid_json`, `missing_token`, `release_not_found`, `store_unavailable`.
    pub code: String,
    pub message: String,
    /// `not_replicated`: the revision the write got in the store (not acknowledged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// One Server-Sent Event as a client reads it off a `text/event-stream` answer (OpenAPI
/// 3.1 describes an event stream by the schema of each event); heartbeat comments are
/// not events.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes what the event streams write.
pub struct SseEvent {
    /// The event's JSON payload.
    data: String,
    /// `message` (OFREP), `snapshot` or `change` (cohort's own stream).
    event: String,
    /// The revision the event reflects; `Last-Event-ID` resumes after it.
    id: Option<String>,
    /// Reconnection delay the server suggests, in milliseconds.
    retry: Option<u64>,
}

/// `bucketing`: the one algorithm this version knows.
pub(crate) fn bucketing() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some([cohort_sdk::BUCKETING_XXH3_SLOTS_V1]))
}

/// Candidate → percent, 0 to 100 with at most three decimals.
pub(crate) fn percents() -> ObjectBuilder {
    let percent = ObjectBuilder::new().schema_type(Type::Number).minimum(Some(0)).maximum(Some(100));
    ObjectBuilder::new()
        .additional_properties(Some(percent))
        .property_names(Some(cohort_sdk::openapi::version_name().build()))
        .examples([serde_json::json!({"v2": 5})])
}

/// Unit value → version.
pub(crate) fn overrides() -> ObjectBuilder {
    let unit = ObjectBuilder::new().schema_type(Type::String).max_length(Some(256));
    ObjectBuilder::new()
        .additional_properties(Some(cohort_sdk::openapi::version_name()))
        .property_names(Some(unit.build()))
        .examples([serde_json::json!({"user-42": "v2"})])
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cohort",
        // The API's version, as its paths name it; never the build's (no version banner).
        version = "v1",
        description = "Release service for canary releases and rolling deployments. Every route but \
                       `/healthz`, `/readyz`, `/metrics` and `/openapi.json` needs a bearer JWT \
                       (`Authorization: Bearer <token>`) whose `scope` allows it and whose `env` \
                       is the route's environment (or `*`)."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        serve,
        ofrep::evaluate_flag,
        ofrep::evaluate_flags,
        ofrep::events,
        evaluate::evaluate,
        envs::list,
        envs::create,
        envs::delete,
        envs::reseed,
        environment::show,
        environment::kill_all,
        environment::unkill_all,
        releases::list,
        releases::create,
        releases::get,
        releases::replace,
        releases::delete,
        releases::set_allocation,
        releases::kill,
        releases::unkill,
        ramp::status,
        ramp::start,
        ramp::pause,
        ramp::resume,
        ramp::abort,
        ramp::promote,
        events::post_events,
        events::health,
        reach::ack,
        reach::get_reach,
        sync::snapshot,
        sync::stream,
        audit::audit,
        fleets::list,
        fleets::heartbeat,
        fleets::assignment,
        revocations::revoke,
        revocations::list,
        revocations::revoke_all,
        revocations::list_all,
    ),
    components(schemas(ErrorBody, SseEvent, ofrep::OfrepFailure, ofrep::OfrepDetails)),
    modifiers(&CommonResponses),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// The document as the checked-in `openapi.json` holds it: pretty JSON, one newline.
pub fn document_json() -> String {
    let mut text = document().to_pretty_json().expect("the OpenAPI document serialises");
    text.push('\n');
    text
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)),
)]
async fn serve() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(document_json())
}

/// Adds the bearer scheme, the responses every authenticated route shares and those every
/// route can answer.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                if path.starts_with("/v1/envs/") {
                    add_errors(operation, "ErrorBody", &COHORT_ERRORS);
                    add_errors(operation, "ErrorBody", &ENVIRONMENT_ERRORS);
                } else if path.starts_with("/v1/") {
                    add_errors(operation, "ErrorBody", &COHORT_ERRORS);
                } else if path.starts_with("/ofrep/") {
                    add_errors(operation, "OfrepDetails", &OFREP_ERRORS);
                }
                add_errors(operation, "ErrorBody", &EDGE_ERRORS);
                if path.starts_with("/v1/") || path.starts_with("/ofrep/") {
                    add_rate_limited(operation);
                }
            }
        }
    }
}

const COHORT_ERRORS: [(&str, &str); 5] = [
    ("400", "Malformed request: environment name, header, query or path value"),
    ("401", "No valid bearer token (`WWW-Authenticate` names the reason)"),
    ("403", "The token's scope or environment does not allow this"),
    ("500", "A bug or corrupt data"),
    (
        "503",
        "The store is unavailable, nothing was written (`store_unavailable`, `store_regressed`); or the store did not answer a write it may have applied (`store_unconfirmed`: read back before retrying; a release, kill, revocation, environment or reseed write is never applied after this answer); or a write was not confirmed by `store.min_replicas_ack` replicas in time (`not_replicated`, `error.revision` names it); or an unkill the store cannot take now (`unkill_needs_store`: the kill stays served)",
    ),
];

/// What any route can answer before it is reached (`api::edges`), in cohort's error shape.
const EDGE_ERRORS: [(&str, &str); 1] =
    [("414", "The request target (path and query) is longer than `http.max_uri_bytes` (`uri_too_long`)")];

const ENVIRONMENT_ERRORS: [(&str, &str); 1] =
    [("404", "No such environment (`environment_not_found`, naming the nearest existing one)")];

const OFREP_ERRORS: [(&str, &str); 3] = [
    ("401", "No valid bearer token"),
    ("403", "The token does not allow evaluation in this environment, or names none"),
    ("500", "A bug (`GENERAL`)"),
];

/// 429 from `[rate_limit]` (every route but the probes, metrics and this document), with
/// `Retry-After` as OFREP asks.
fn add_rate_limited(operation: &mut Operation) {
    use utoipa::openapi::schema::{Object, Type};
    let retry_after = HeaderBuilder::new()
        .schema(Object::with_type(Type::Integer))
        .description(Some("Seconds to wait before retrying"))
        .build();
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    let response = ResponseBuilder::new()
        .description("Over a rate limit (`rate_limited`); retry after `Retry-After` seconds")
        .header("Retry-After", retry_after)
        .content("application/json", content)
        .build();
    operation.responses.responses.entry("429".to_owned()).or_insert(RefOr::T(response));
}

fn add_errors(operation: &mut Operation, schema: &str, errors: &[(&str, &str)]) {
    for (status, description) in errors {
        operation.responses.responses.entry((*status).to_owned()).or_insert_with(|| {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build();
            RefOr::T(ResponseBuilder::new().description(*description).content("application/json", content).build())
        });
    }
}
