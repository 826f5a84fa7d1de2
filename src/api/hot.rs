//! The routes applications call on every request, matched by hand ahead of actix-web's
//! router.
//!
//! actix-router compiles every pattern with a `{param}` into a regex and tries a scope's
//! resources one after another; on `POST /v1/envs/{env}/evaluate` that was ~6,000 of a
//! request's ~52,000 instructions (`cohort-bench profile`). These four routes are
//! matched here with a few byte comparisons instead and handed to the very handlers the
//! router would call, with the same extractors; everything else — other methods on
//! these paths included — goes on to the router, so 404/405 answers are unchanged.

use super::{evaluate, limit, ofrep, sync};
use crate::metrics::RouteLatency;
use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{FromRequest, Handler, HttpResponse, Responder, ResponseError};
use std::time::Instant;

/// A hot route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/envs/{env}/evaluate`.
    Evaluate,
    /// `GET /v1/envs/{env}/snapshot`.
    Snapshot,
    /// `POST /ofrep/v1/evaluate/flags/{key}`.
    OfrepFlag,
    /// `POST /ofrep/v1/evaluate/flags`.
    OfrepFlags,
}

impl Route {
    /// Every hot route, in [`Route::index`] order.
    pub const ALL: [Route; 4] = [Route::Evaluate, Route::Snapshot, Route::OfrepFlag, Route::OfrepFlags];

    /// The route's pattern, as the router (and so the metrics) name it.
    pub const fn pattern(self) -> &'static str {
        match self {
            Route::Evaluate => "/v1/envs/{env}/evaluate",
            Route::Snapshot => "/v1/envs/{env}/snapshot",
            Route::OfrepFlag => "/ofrep/v1/evaluate/flags/{key}",
            Route::OfrepFlags => "/ofrep/v1/evaluate/flags",
        }
    }

    /// The one method the route serves.
    pub fn method(self) -> Method {
        match self {
            Route::Snapshot => Method::GET,
            Route::Evaluate | Route::OfrepFlag | Route::OfrepFlags => Method::POST,
        }
    }

    /// [`Route::method`]'s name.
    pub const fn method_name(self) -> &'static str {
        match self {
            Route::Snapshot => "GET",
            Route::Evaluate | Route::OfrepFlag | Route::OfrepFlags => "POST",
        }
    }

    /// The route's latency histograms.
    fn latency(self) -> &'static RouteLatency {
        &LATENCY[self.index()]
    }

    /// Position in [`Route::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The hot route `method` and `path` name, with its path parameter (name, value).
    /// `path` is the router's view of the path (`match_info().path()`): the query is
    /// off and unreserved percent-escapes are decoded, as the router would match it.
    pub fn find<'p>(method: &Method, path: &'p str) -> Option<(Route, Option<(&'static str, &'p str)>)> {
        if let Some(rest) = path.strip_prefix("/v1/envs/") {
            let (env, action) = rest.split_once('/')?;
            if env.is_empty() {
                return None;
            }
            let route = match (action, method) {
                ("evaluate", &Method::POST) => Route::Evaluate,
                ("snapshot", &Method::GET) => Route::Snapshot,
                _ => return None,
            };
            return Some((route, Some(("env", env))));
        }
        if method != Method::POST {
            return None;
        }
        let flags = path.strip_prefix("/ofrep/v1/evaluate/flags")?;
        if flags.is_empty() {
            return Some((Route::OfrepFlags, None));
        }
        let key = flags.strip_prefix('/')?;
        (!key.is_empty() && !key.contains('/')).then_some((Route::OfrepFlag, Some(("key", key))))
    }
}

const fn latency(route: Route) -> RouteLatency {
    RouteLatency::new(route.pattern(), route.method_name())
}

/// Each hot route's latency histograms, in [`Route::ALL`] order.
static LATENCY: [RouteLatency; Route::ALL.len()] =
    [latency(Route::ALL[0]), latency(Route::ALL[1]), latency(Route::ALL[2]), latency(Route::ALL[3])];

/// Called by the edges layer ([`super::edges::guard`]): serves a hot route directly
/// (rate limits included) and records its latency; passes every other request on (to
/// the metrics middleware, the rate limits, then the router).
pub async fn dispatch(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<BoxBody, impl MessageBody>>, actix_web::Error> {
    let Some((route, param)) = Route::find(req.method(), req.match_info().as_str()) else {
        return Ok(next.call(req).await?.map_into_right_body());
    };
    let param = param.map(|(name, value)| (name, value.to_owned()));
    // Boxed: inline, the hot handlers' state would size this middleware's future for
    // every request, and each event stream's set-up would leave a hole that big between
    // the stream's long-lived allocations (≈800 bytes per subscriber).
    Ok(Box::pin(serve_hot(route, param, req)).await.map_into_left_body())
}

/// Serves hot `route` and records its latency.
async fn serve_hot(route: Route, param: Option<(&'static str, String)>, mut req: ServiceRequest) -> ServiceResponse {
    let started = Instant::now();
    if let Some((name, value)) = param {
        req.match_info_mut().add_static(name, value);
    }
    // Rate limits here: hot routes never reach `limit::middleware`.
    if let Err(refused) = limit::check(req.request(), limit::of_hot(route)) {
        let response = req.into_response(refused.error_response());
        route.latency().observe(response.status(), started);
        return response;
    }
    let response = match route {
        Route::Evaluate => serve(req, evaluate::evaluate).await,
        Route::Snapshot => serve(req, sync::snapshot).await,
        Route::OfrepFlag => serve(req, ofrep::evaluate_flag).await,
        Route::OfrepFlags => serve(req, ofrep::evaluate_flags).await,
    };
    route.latency().observe(response.status(), started);
    response
}

/// What actix-web does for a matched resource: extract the handler's arguments, call
/// it, turn its output (or the extractor's error) into a response.
async fn serve<F, Args>(req: ServiceRequest, handler: F) -> ServiceResponse
where
    F: Handler<Args>,
    Args: FromRequest,
    F::Output: Responder,
{
    let (req, mut payload) = req.into_parts();
    let response = match Args::from_request(&req, &mut payload).await {
        Ok(args) => handler.call(args).await.respond_to(&req).map_into_boxed_body(),
        Err(error) => HttpResponse::from_error(error),
    };
    ServiceResponse::new(req, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_hot_routes_are_found() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(
            Route::find(&post, "/v1/envs/production/evaluate"),
            Some((Route::Evaluate, Some(("env", "production"))))
        );
        assert_eq!(Route::find(&get, "/v1/envs/staging/snapshot"), Some((Route::Snapshot, Some(("env", "staging")))));
        assert_eq!(Route::find(&post, "/ofrep/v1/evaluate/flags"), Some((Route::OfrepFlags, None)));
        assert_eq!(
            Route::find(&post, "/ofrep/v1/evaluate/flags/checkout"),
            Some((Route::OfrepFlag, Some(("key", "checkout"))))
        );
        for (method, path) in [
            (&get, "/v1/envs/production/evaluate"),
            (&post, "/v1/envs/production/snapshot"),
            (&post, "/v1/envs//evaluate"),
            (&post, "/v1/envs/production/evaluate/"),
            (&post, "/v1/envs/production/releases"),
            (&post, "/v1/envs/production"),
            (&get, "/ofrep/v1/evaluate/flags"),
            (&post, "/ofrep/v1/evaluate/flags/"),
            (&post, "/ofrep/v1/evaluate/flags/a/b"),
            (&post, "/ofrep/v1/evaluate/flagsx"),
            (&post, "/v1/envs"),
        ] {
            assert_eq!(Route::find(method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn patterns_are_the_routers() {
        for route in Route::ALL {
            assert_eq!(Route::ALL[route.index()], route);
            assert_eq!(route.latency().pattern(), route.pattern());
            assert_eq!(route.method_name(), route.method().as_str());
            let sample = route.pattern().replace("{env}", "production").replace("{key}", "checkout");
            assert_eq!(Route::find(&route.method(), &sample).map(|(r, _)| r), Some(route));
        }
    }
}
