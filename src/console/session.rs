//! Console sessions: the cookie, its verification, and the checks every state-changing
//! request passes.
//!
//! The session cookie holds the pasted token itself (HttpOnly, SameSite=Strict, Secure
//! over TLS, expiring with the token), so a session can never carry more than the
//! token's scopes and expiry, and every request is verified by the API's own verifier
//! through [`verify`] — whatever the verifier refuses (expired, revoked, wrong key), the
//! console refuses too. Nothing is kept on the server, so any instance serves any session.
//!
//! A state-changing request must carry the session's CSRF token — an HMAC keyed with the
//! session's token, which a page of another origin cannot compute because it cannot read
//! the HttpOnly cookie — and an `Origin` equal to this server's own (or to
//! `console.public_origin`, the origin browsers use when a proxy terminates TLS).

use crate::api::auth::Policy;
use crate::api::{ApiError, AppState};
use crate::auth::{AuthError, EnvScope, Principal, Scope};
use crate::releases::Actor;
use crate::store::EnvName;
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::LocalBoxFuture;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The session cookie's name.
pub const COOKIE: &str = "cohort_session";

/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

const CSRF_CONTEXT: &[u8] = b"cohort console csrf v1";

/// Verifies a session's token with the API's verifier: the one function every console
/// request goes through, so what the API refuses (expiry, revocation) the console refuses.
pub fn verify(state: &AppState, token: &str) -> Result<Arc<Principal>, AuthError> {
    crate::api::auth::authenticate(state, token)
}

/// The CSRF token of the session holding `token`.
pub fn csrf_token(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(csrf_mac(token).finalize().into_bytes())
}

fn csrf_mac(token: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    mac.update(CSRF_CONTEXT);
    mac
}

/// Whether `given` is the CSRF token of the session holding `token` (constant time).
pub fn csrf_matches(token: &str, given: &str) -> bool {
    URL_SAFE_NO_PAD.decode(given.trim()).is_ok_and(|bytes| csrf_mac(token).verify_slice(&bytes).is_ok())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether the cookie must be `Secure`: the request reached this server over TLS
/// (directly or, as the connection info reports it, through a proxy that says so), or
/// browsers reach the console at an https `console.public_origin`.
fn over_tls(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https" || app_state(req).is_ok_and(|s| s.console.public_origin.is_https())
}

/// The session cookie for `token`, which expires with `principal`'s token.
pub fn cookie(req: &HttpRequest, token: &str, principal: &Principal) -> Cookie<'static> {
    let seconds = principal.exp.saturating_sub(now_secs()).min(i64::MAX as u64) as i64;
    Cookie::build(COOKIE, token.to_owned())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(over_tls(req))
        .max_age(CookieDuration::seconds(seconds))
        .finish()
}

/// The cookie that ends a session.
pub fn removal(req: &HttpRequest) -> Cookie<'static> {
    let mut cookie =
        Cookie::build(COOKIE, "").path("/").http_only(true).same_site(SameSite::Strict).secure(over_tls(req)).finish();
    cookie.make_removal();
    cookie
}

/// `Origin` must be this server's own origin: scheme and host as the request reached
/// it, or `console.public_origin` (behind a proxy that terminates TLS, the request
/// reaches cohort over plain HTTP while the browser's origin is https). Browsers send it
/// on every POST; its absence is refused too.
pub fn check_origin(req: &HttpRequest) -> Result<(), ApiError> {
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    let public = app_state(req).ok().and_then(|s| s.console.public_origin.get());
    match req.headers().get(actix_web::http::header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) if origin.eq_ignore_ascii_case(&own) => Ok(()),
        Some(origin) if public.is_some_and(|p| origin.eq_ignore_ascii_case(p)) => Ok(()),
        Some(origin) => {
            let public = public.map(|p| format!(" or {p}")).unwrap_or_default();
            Err(ApiError::CsrfRefused(format!("the request's Origin `{origin}` is not this server's ({own}{public})")))
        }
        None => Err(ApiError::CsrfRefused("the request has no Origin header".into())),
    }
}

/// A signed-in person: the verified token, its principal, and where it was read.
#[derive(Clone)]
pub struct Session {
    /// The token the cookie holds.
    token: String,
    /// What the verifier made of it.
    pub principal: Arc<Principal>,
}

impl Session {
    /// The session of `req`: its cookie, verified now.
    pub fn of(req: &HttpRequest) -> Result<Session, ApiError> {
        let state = app_state(req)?;
        let cookie = req.cookie(COOKIE).ok_or(AuthError::MissingToken)?;
        let token = cookie.value().to_owned();
        let principal = verify(state, &token)?;
        Ok(Session { token, principal })
    }

    /// The token the cookie holds.
    pub(super) fn token(&self) -> &str {
        &self.token
    }

    /// This session's CSRF token, for the forms of the pages it is shown.
    pub fn csrf(&self) -> String {
        csrf_token(&self.token)
    }

    /// The person as the audit log names them.
    pub fn actor(&self) -> Actor {
        Actor(self.principal.sub.clone())
    }

    /// Whether the session may do any of `scopes` in `env` (what the page offers).
    pub fn may(&self, scopes: &[Scope], env: &EnvName) -> bool {
        self.principal.authorize_any(scopes, env).is_ok()
    }

    /// The environments this session may see, of those `state` serves.
    pub fn environments(&self, state: &AppState) -> Vec<EnvName> {
        let mut envs = state.snapshots.environments();
        envs.retain(|env| match &self.principal.env {
            EnvScope::Any => true,
            EnvScope::One(own) => own == env,
        });
        envs.sort();
        envs
    }
}

pub(crate) fn app_state(req: &HttpRequest) -> Result<&AppState, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .map(|d| d.get_ref())
        .ok_or_else(|| ApiError::Internal("application state is not registered".into()))
}

/// A page request: a session allowed `P` in the path's `{env}`.
pub struct Viewer<P> {
    pub session: Session,
    pub env: EnvName,
    _policy: PhantomData<P>,
}

impl<P: Policy> FromRequest for Viewer<P> {
    type Error = super::Page;
    type Future = std::future::Ready<Result<Self, super::Page>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            (|| -> Result<Self, ApiError> {
                let session = Session::of(req)?;
                let env = EnvName::parse(req.match_info().get("env").unwrap_or_default())?;
                session.principal.authorize_any(P::SCOPES, &env)?;
                Ok(Viewer { session, env, _policy: PhantomData })
            })()
            .map_err(|error| super::Page::new(req, error)),
        )
    }
}

/// A form with the CSRF field beside its own fields.
#[derive(Deserialize)]
struct Guarded<T> {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(flatten)]
    form: T,
}

/// A state-changing request: a verified session, this server's `Origin`, the session's
/// CSRF token, and a session allowed `P` in the path's `{env}` — checked in that order,
/// before the handler runs, so no handler can forget one.
pub struct Action<P, T> {
    pub session: Session,
    pub env: EnvName,
    pub form: T,
    _policy: PhantomData<P>,
}

impl<P: Policy + 'static, T: DeserializeOwned + 'static> FromRequest for Action<P, T> {
    type Error = super::Page;
    type Future = LocalBoxFuture<'static, Result<Self, super::Page>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let body = web::Bytes::from_request(&req, payload);
        Box::pin(async move {
            let result = async {
                let session = Session::of(&req)?;
                check_origin(&req)?;
                let body = body.await.map_err(|e| ApiError::BadRequest(format!("cannot read the form: {e}")))?;
                let guarded: Guarded<T> = parse_form(&body)?;
                let given = guarded.csrf.unwrap_or_default();
                if given.is_empty() {
                    return Err(ApiError::CsrfRefused("the form has no CSRF token".into()));
                }
                if !csrf_matches(&session.token, &given) {
                    return Err(ApiError::CsrfRefused("the form's CSRF token is not this session's".into()));
                }
                let env = EnvName::parse(req.match_info().get("env").unwrap_or_default())?;
                session.principal.authorize_any(P::SCOPES, &env)?;
                Ok(Action { session, env, form: guarded.form, _policy: PhantomData })
            }
            .await;
            result.map_err(|error| super::Page::new(&req, error))
        })
    }
}

/// Parses an `application/x-www-form-urlencoded` body (UTF-8, as browsers send this
/// page's forms). Not actix-web's `Form`: its charset support links ~160 KB of encoding
/// tables into the binary.
pub fn parse_form<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body).map_err(|e| ApiError::BadRequest(format!("invalid form: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csrf_token_belongs_to_its_session_only() {
        let token = csrf_token("a.b.c");
        assert!(csrf_matches("a.b.c", &token));
        assert!(!csrf_matches("a.b.d", &token), "another session's token");
        assert!(!csrf_matches("a.b.c", ""), "empty");
        assert!(!csrf_matches("a.b.c", "not base64!"));
    }
}
