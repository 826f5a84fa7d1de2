//! Rate limits on the HTTP side: which class a route belongs to, who the client is, and
//! the check itself — one function, [`check`], called by [`super::hot::dispatch`] for the
//! hot routes (which never reach another middleware) and by [`middleware`] for the rest.
//! The decision is `crate::ratelimit`'s; the 429 is `ApiError::RateLimited`'s.

use super::auth::bearer;
use super::hot::Route;
use super::{ApiError, AppState};
use crate::ratelimit::Class;
use actix_web::HttpRequest;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderName;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What is limited of a request: its class, and whether its address counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub class: Class,
    /// Kill switches count per subject only: a flood from an address the on-call
    /// engineer shares (an office, a VPN) must never hold up a kill.
    pub per_address: bool,
}

impl Limited {
    const fn all(class: Class) -> Option<Limited> {
        Some(Limited { class, per_address: true })
    }
}

/// The class of a hot route.
pub fn of_hot(route: Route) -> Limited {
    let class = match route {
        Route::Evaluate | Route::OfrepFlag | Route::OfrepFlags => Class::Evaluate,
        Route::Snapshot => Class::Stream,
    };
    Limited { class, per_address: true }
}

/// The class of a route by its pattern (as the router names it); `None` for the
/// unauthenticated operational routes, which are never limited (a probe or a scrape must
/// not be refused). Unmatched paths count as admin.
pub fn of_pattern(pattern: Option<&str>) -> Option<Limited> {
    match pattern {
        Some("/healthz" | "/readyz" | "/metrics" | "/openapi.json") => None,
        Some("/v1/envs/{env}/evaluate" | "/ofrep/v1/evaluate/flags" | "/ofrep/v1/evaluate/flags/{key}") => {
            Limited::all(Class::Evaluate)
        }
        Some("/v1/envs/{env}/stream" | "/v1/envs/{env}/snapshot" | "/v1/envs/{env}/ack" | "/ofrep/v1/events") => {
            Limited::all(Class::Stream)
        }
        Some("/v1/envs/{env}/events") => Limited::all(Class::Events),
        Some(
            "/v1/envs/{env}/releases/{key}/kill"
            | "/v1/envs/{env}/releases/{key}/unkill"
            | "/v1/envs/{env}/kill-all"
            | "/v1/envs/{env}/unkill-all",
        ) => Some(Limited { class: Class::Admin, per_address: false }),
        _ => Limited::all(Class::Admin),
    }
}

/// Takes one request out of its client's allowances for `limited`: 429 when one is
/// spent. The subject is looked up (through the verifier's cache) only when the class
/// is limited per subject; a token that does not verify has none, and the route's own
/// extractor refuses it.
pub fn check(req: &HttpRequest, limited: Limited) -> Result<(), ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state is not registered".into()))?;
    let limits = &state.limits;
    let address = limited.per_address.then(|| {
        let peer = req.peer_addr().map(|peer| peer.ip());
        // The header is looked up only when some proxy is trusted: the evaluation path
        // pays for nothing it does not use.
        match limits.trusts_proxies() {
            true => limits.client_address(peer, req.headers().get_all(X_FORWARDED_FOR).map(|v| v.as_bytes())),
            false => limits.client_address(peer, std::iter::empty()),
        }
    });
    let principal = match limits.limits_subjects(limited.class) {
        true => bearer(req).ok().and_then(|token| state.verifier.verify(token).ok()),
        false => None,
    };
    Ok(limits.check(limited.class, address, principal.as_ref().map(|p| &p.sub))?)
}

/// Middleware for every route but the hot ones: limits by the route's class.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // The router matches the path again here; only the colder routes pay for it.
    if let Some(limited) = of_pattern(req.match_pattern().as_deref())
        && let Err(refused) = check(req.request(), limited)
    {
        let response = refused.error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hot_route_has_the_class_its_pattern_has() {
        for route in Route::ALL {
            assert_eq!(of_pattern(Some(route.pattern())), Some(of_hot(route)), "{route:?}");
        }
    }

    #[test]
    fn probes_are_never_limited_and_kills_only_per_subject() {
        assert_eq!(of_pattern(Some("/readyz")), None);
        assert_eq!(of_pattern(Some("/v1/envs/{env}/events")), Limited::all(Class::Events));
        assert_eq!(
            of_pattern(Some("/v1/envs/{env}/kill-all")),
            Some(Limited { class: Class::Admin, per_address: false })
        );
        assert_eq!(of_pattern(None), Limited::all(Class::Admin));
    }
}
