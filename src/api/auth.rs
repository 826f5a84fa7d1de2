//! Authorization as an extractor whose type states the scope: a handler taking
//! `Authorized<Write>` can only run for a verified token with `write` (or `admin`) for
//! the route's environment. No URL matching anywhere.

use super::{ApiError, AppState};
use crate::auth::{AuthError, Principal, Scope};
use crate::releases::Actor;
use crate::store::EnvName;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::{Either, LocalBoxFuture};
use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::sync::Arc;

/// A scope requirement, as a type.
pub trait Policy {
    /// The scopes the route accepts (any one suffices).
    const SCOPES: &'static [Scope];
}

/// Evaluate, snapshot, stream.
pub struct Eval;
/// Outcome reports, which ramp guards act on.
pub struct Report;
/// GET admin routes and the audit log.
pub struct Read;
/// Create, update, delete, allocation.
pub struct Write;
/// Kill switches.
pub struct Kill;
/// Watching a change land (reach): readers and on-call alike.
pub struct Observe;
/// Environments and store reconciliation.
pub struct Admin;

impl Policy for Admin {
    const SCOPES: &'static [Scope] = &[Scope::Admin];
}

impl Policy for Observe {
    const SCOPES: &'static [Scope] = &[Scope::Read, Scope::Kill];
}

impl Policy for Eval {
    const SCOPES: &'static [Scope] = &[Scope::Eval];
}
impl Policy for Report {
    const SCOPES: &'static [Scope] = &[Scope::Report];
}
impl Policy for Read {
    const SCOPES: &'static [Scope] = &[Scope::Read];
}
impl Policy for Write {
    const SCOPES: &'static [Scope] = &[Scope::Write];
}
impl Policy for Kill {
    const SCOPES: &'static [Scope] = &[Scope::Kill];
}

/// A request whose token allows `P` in the `{env}` of its path.
pub struct Authorized<P> {
    /// The verified caller.
    pub principal: Arc<Principal>,
    /// The route's environment.
    pub env: EnvName,
    _policy: PhantomData<P>,
}

impl<P> Authorized<P> {
    /// The caller as the audit log names it.
    pub fn actor(&self) -> Actor {
        Actor(self.principal.sub.clone())
    }
}

/// The bearer token of a request.
pub fn bearer(req: &HttpRequest) -> Result<&str, AuthError> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or(AuthError::MissingToken)?;
    // UTF-8 validation runs a word at a time; `HeaderValue::to_str` tested every byte for
    // visible ASCII (~1,600 instructions for a typical token). Anything past ASCII then
    // fails verification as a malformed token.
    let value = std::str::from_utf8(value.as_bytes())
        .map_err(|_| AuthError::Malformed("the Authorization header is not text".into()))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token.trim())
}

/// Verifies the request's token against the app's verifier.
pub fn principal(req: &HttpRequest) -> Result<Arc<Principal>, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state is not registered".into()))?;
    Ok(authenticate(state, bearer(req)?)?)
}

/// The one way a token becomes a caller: verified (through the token cache), then held
/// against its lifetime limit and the revocations in force — after the cache, so a
/// cached token that is revoked is refused on its next request.
pub fn authenticate(state: &AppState, token: &str) -> Result<Arc<Principal>, AuthError> {
    let principal = state.verifier.verify(token)?;
    state.revocations.check(&principal)?;
    Ok(principal)
}

impl<P: Policy + 'static> FromRequest for Authorized<P> {
    type Error = ApiError;
    /// Ready, except for a token naming a key the identity provider published since the
    /// last fetch ([`settled`]).
    type Future = Either<Ready<Result<Self, ApiError>>, LocalBoxFuture<'static, Result<Self, ApiError>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let env = match EnvName::parse(req.match_info().get("env").unwrap_or_default()) {
            Ok(env) => env,
            Err(e) => return Either::Left(ready(Err(e.into()))),
        };
        let authorized = move |principal: Arc<Principal>, env: EnvName| {
            principal.authorize_any(P::SCOPES, &env)?;
            Ok(Authorized { principal, env, _policy: PhantomData })
        };
        match principal(req) {
            Err(ApiError::Auth(AuthError::UnknownKey(reason))) => {
                let error = ApiError::Auth(AuthError::UnknownKey(reason));
                match settled(req) {
                    Some(principal) => Either::Right(Box::pin(async move { authorized(principal.await?, env) })),
                    None => Either::Left(ready(Err(error))),
                }
            }
            result => Either::Left(ready(result.and_then(|principal| authorized(principal, env)))),
        }
    }
}

/// For a request whose token names a key the identity provider's set lacks: the
/// authentication again once the early fetch that key asked for is done ([`Verifier::verify_settled`]).
/// `None` when there is no token or no state to do it with.
///
/// [`Verifier::verify_settled`]: crate::auth::Verifier::verify_settled
pub fn settled(req: &HttpRequest) -> Option<LocalBoxFuture<'static, Result<Arc<Principal>, ApiError>>> {
    let state = req.app_data::<web::Data<AppState>>()?.clone();
    let token = bearer(req).ok()?.to_owned();
    Some(Box::pin(async move {
        let principal = state.verifier.verify_settled(&token).await?;
        state.revocations.check(&principal)?;
        Ok(principal)
    }))
}
