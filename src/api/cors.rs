//! Cross-origin resource sharing: which browser apps on other origins may call which
//! routes (the `[cors]` settings), as the outermost middleware.
//!
//! Routes fall in three classes. An environment's SDK routes (`evaluate`, `snapshot`,
//! `stream`, `events`, `ack` under `/v1/envs/{env}/`) allow the origins listed for that
//! environment and those listed under `*`. The OFREP routes name no environment (the
//! token does), so they allow every origin allowed in any environment; the token then
//! confines the caller to its own. Every other route is an admin route and allows only
//! `cors.admin_origins`.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
//!   allowed origin is answered 204 with the class's methods, the request headers the
//!   SDKs send and `Access-Control-Max-Age`; from any other origin, 403 in the JSON error
//!   shape and no CORS header, so the browser stops there.
//! - An actual request from an allowed origin is served and its answer (errors included)
//!   carries `Access-Control-Allow-Origin` and exposes `ETag` and `Retry-After`; from any
//!   other origin it is served as if same-origin, without CORS headers — the browser then
//!   keeps the answer from the page. (Refusing it outright would not protect anything: a
//!   non-browser client can send any `Origin` or none.)
//! - Tokens travel in `Authorization`, never in cookies, so
//!   `Access-Control-Allow-Credentials` is never sent, and an origin list of `*` is
//!   answered `*`.
//! - A request without `Origin` (servers, SDKs, same-origin `GET`s) is passed on untouched
//!   without allocating: one header lookup is all CORS costs the hot routes.
//!
//! Written here rather than with `actix-cors`: actix-cors answers an actual request from
//! an unlisted origin with its own plain-text 400 without calling the handler (breaking
//! non-browser clients that send `Origin`), answers preflights outside cohort's JSON error
//! shape, has one method list and one wildcard mode for every route (no `*` for one
//! environment and an exact list for another), and boxes every request's future, the hot
//! routes' included.

use super::ApiError;
use crate::config::{AllowedOrigin, CorsSettings, EnvKey};
use actix_web::ResponseError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, HttpResponse};
use futures_util::TryFutureExt as _;
use futures_util::future::{Either, LocalBoxFuture, MapOk, Ready, ready};
use std::collections::HashMap;
use std::sync::Arc;

/// The SDK routes under `/v1/envs/{env}/`.
const SDK_ACTIONS: [&str; 5] = ["evaluate", "snapshot", "stream", "events", "ack"];

/// Request headers a preflight may ask for: auth, JSON bodies, conditional snapshot
/// fetches, resumed streams, the OFREP environment header, the SDK's identity headers.
const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, If-None-Match, Last-Event-ID, X-Cohort-Env, X-Cohort-Sdk-Id, X-Cohort-Sdk-Connection";

/// Response headers a page may read besides the safelisted ones: the snapshot's revision
/// and how long to wait after a 429 or 503.
const EXPOSE_HEADERS: &str = "ETag, Retry-After";

/// The origins one class of routes allows.
#[derive(Debug, Default, Clone)]
struct Origins {
    any: bool,
    exact: Vec<String>,
}

impl Origins {
    fn add(&mut self, origin: &AllowedOrigin) {
        match origin {
            AllowedOrigin::Any => self.any = true,
            AllowedOrigin::Exact(o) if !self.exact.contains(o) => self.exact.push(o.clone()),
            AllowedOrigin::Exact(_) => {}
        }
    }

    fn allows(&self, origin: &[u8]) -> Option<Allow> {
        if self.any {
            Some(Allow::Any)
        } else {
            self.exact.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin)).then_some(Allow::Origin)
        }
    }
}

/// How an allowed origin is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allow {
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// The request's own origin.
    Origin,
}

/// Which class of routes a path is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routes<'p> {
    /// An environment's SDK routes.
    Sdk(&'p str),
    /// `/ofrep/v1/…`.
    Ofrep,
    /// Everything else.
    Admin,
}

impl<'p> Routes<'p> {
    fn of(path: &'p str) -> Self {
        if path.starts_with("/ofrep/v1/") {
            return Routes::Ofrep;
        }
        if let Some(rest) = path.strip_prefix("/v1/envs/")
            && let Some((env, action)) = rest.split_once('/')
            && !env.is_empty()
            && SDK_ACTIONS.contains(&action)
        {
            return Routes::Sdk(env);
        }
        Routes::Admin
    }

    fn methods(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Routes::Sdk(_) | Routes::Ofrep => "GET, POST",
            Routes::Admin => "GET, POST, PUT, DELETE",
        })
    }

    fn describe(self) -> String {
        match self {
            Routes::Sdk(env) => format!("the SDK routes of environment `{env}`"),
            Routes::Ofrep => "the OFREP routes".into(),
            Routes::Admin => "the admin routes".into(),
        }
    }
}

/// The `[cors]` settings, compiled for lookups.
#[derive(Debug)]
pub struct CorsPolicy {
    every_env: Origins,
    by_env: HashMap<String, Origins>,
    ofrep: Origins,
    admin: Origins,
    max_age: HeaderValue,
}

impl CorsPolicy {
    /// Compiles the (already validated) settings.
    pub fn new(settings: &CorsSettings) -> Self {
        let mut every_env = Origins::default();
        let mut by_env: HashMap<String, Origins> = HashMap::new();
        let mut ofrep = Origins::default();
        for (key, origins) in &settings.origins {
            let target = match key {
                EnvKey::Every => &mut every_env,
                EnvKey::Named(env) => by_env.entry(env.clone()).or_default(),
            };
            for origin in origins {
                target.add(origin);
                ofrep.add(origin);
            }
        }
        let mut admin = Origins::default();
        settings.admin_origins.iter().for_each(|origin| admin.add(origin));
        CorsPolicy { every_env, by_env, ofrep, admin, max_age: HeaderValue::from(settings.max_age_secs) }
    }

    /// Whether (and how) `origin` may call `routes`.
    fn allow(&self, origin: &[u8], routes: Routes<'_>) -> Option<Allow> {
        match routes {
            Routes::Sdk(env) => {
                let named = self.by_env.get(env).and_then(|o| o.allows(origin));
                match (self.every_env.allows(origin), named) {
                    (Some(Allow::Any), _) | (_, Some(Allow::Any)) => Some(Allow::Any),
                    (a, b) => a.or(b),
                }
            }
            Routes::Ofrep => self.ofrep.allows(origin),
            Routes::Admin => self.admin.allows(origin),
        }
    }

    /// The answer to a preflight.
    fn preflight(&self, origin: &HeaderValue, routes: Routes<'_>, allow: Option<Allow>) -> HttpResponse {
        let mut response = match allow {
            Some(allow) => {
                let mut response = HttpResponse::build(StatusCode::NO_CONTENT);
                response
                    .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin(allow, origin)))
                    .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, routes.methods()))
                    .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS)))
                    .insert_header((header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone()));
                response.finish()
            }
            None => {
                let shown = String::from_utf8_lossy(origin.as_bytes()).chars().take(200).collect();
                let refused = ApiError::OriginNotAllowed { origin: shown, routes: routes.describe() };
                tracing::debug!(error = %refused, "CORS preflight refused");
                refused.error_response()
            }
        };
        response.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
        response
    }
}

fn allow_origin(allow: Allow, origin: &HeaderValue) -> HeaderValue {
    match allow {
        Allow::Any => HeaderValue::from_static("*"),
        Allow::Origin => origin.clone(),
    }
}

/// Adds the CORS headers of an actual request's answer.
fn decorate(headers: &mut header::HeaderMap, origin: &HeaderValue, allow: Option<Allow>) {
    if let Some(allow) = allow {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin(allow, origin));
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
    }
    // The answer depends on `Origin` (allowed or not), so caches must key on it.
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The middleware factory; wrap it outside every other layer (it must see preflights
/// before the hot-route dispatch and the router answer them 405).
#[derive(Clone)]
pub struct Cors {
    policy: Arc<CorsPolicy>,
}

impl Cors {
    /// CORS by `policy`.
    pub fn new(policy: Arc<CorsPolicy>) -> Self {
        Cors { policy }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Cors
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = CorsMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CorsMiddleware { service, policy: Arc::clone(&self.policy) }))
    }
}

/// The middleware itself.
pub struct CorsMiddleware<S> {
    service: S,
    policy: Arc<CorsPolicy>,
}

type IntoLeft<B> = fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B>>;

impl<S, B> Service<ServiceRequest> for CorsMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future =
        Either<MapOk<S::Future, IntoLeft<B>>, LocalBoxFuture<'static, Result<ServiceResponse<EitherBody<B>>, Error>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return Either::Left(self.service.call(req).map_ok(ServiceResponse::map_into_left_body as IntoLeft<B>));
        };
        let origin = origin.clone();
        let routes = Routes::of(req.match_info().as_str());
        let allow = self.policy.allow(origin.as_bytes(), routes);
        if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
            let response = self.policy.preflight(&origin, routes, allow);
            return Either::Right(Box::pin(ready(Ok(req.into_response(response).map_into_right_body()))));
        }
        // The request is not kept for an `Err` from the inner layers (the router needs it
        // unshared); none of them answers with one — handlers' and extractors' errors are
        // responses by then, which get their CORS headers here.
        let call = self.service.call(req);
        Either::Right(Box::pin(async move {
            let mut response = call.await?.map_into_left_body();
            decorate(response.headers_mut(), &origin, allow);
            Ok(response)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> CorsPolicy {
        #[derive(serde::Deserialize)]
        struct File {
            cors: CorsSettings,
        }
        let file: File = toml_from(toml);
        CorsPolicy::new(&file.cors)
    }

    fn toml_from<T: serde::de::DeserializeOwned>(text: &str) -> T {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .expect("parses")
    }

    #[test]
    fn paths_fall_in_their_class() {
        assert_eq!(Routes::of("/v1/envs/production/evaluate"), Routes::Sdk("production"));
        assert_eq!(Routes::of("/v1/envs/staging/stream"), Routes::Sdk("staging"));
        assert_eq!(Routes::of("/v1/envs/staging/events"), Routes::Sdk("staging"));
        assert_eq!(Routes::of("/ofrep/v1/evaluate/flags/checkout"), Routes::Ofrep);
        assert_eq!(Routes::of("/ofrep/v1/events"), Routes::Ofrep);
        for admin in [
            "/v1/envs/production/releases",
            "/v1/envs/production/releases/evaluate",
            "/v1/envs/production",
            "/v1/envs//evaluate",
            "/v1/envs",
            "/metrics",
            "/ofrep",
        ] {
            assert_eq!(Routes::of(admin), Routes::Admin, "{admin}");
        }
    }

    #[test]
    fn an_origin_is_allowed_where_it_is_listed_and_ofrep_takes_the_union() {
        let policy = policy(
            r#"[cors]
            max_age_secs = 60
            admin_origins = ["https://console.example"]
            [cors.origins]
            production = ["https://shop.example"]
            staging = ["*"]
            "*" = ["https://all.example"]"#,
        );
        let shop = b"https://shop.example".as_slice();
        assert_eq!(policy.allow(shop, Routes::Sdk("production")), Some(Allow::Origin));
        assert_eq!(policy.allow(b"HTTPS://SHOP.EXAMPLE", Routes::Sdk("production")), Some(Allow::Origin));
        assert_eq!(policy.allow(shop, Routes::Sdk("other")), None);
        assert_eq!(policy.allow(shop, Routes::Sdk("staging")), Some(Allow::Any));
        assert_eq!(policy.allow(b"https://all.example", Routes::Sdk("other")), Some(Allow::Origin));
        assert_eq!(policy.allow(shop, Routes::Ofrep), Some(Allow::Any), "staging allows any origin");
        assert_eq!(policy.allow(shop, Routes::Admin), None);
        assert_eq!(policy.allow(b"https://console.example", Routes::Admin), Some(Allow::Origin));
        assert_eq!(policy.allow(b"https://console.example", Routes::Sdk("production")), None);
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let policy = CorsPolicy::new(&CorsSettings::default());
        for routes in [Routes::Sdk("production"), Routes::Ofrep, Routes::Admin] {
            assert_eq!(policy.allow(b"https://shop.example", routes), None);
        }
    }
}
