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

use crate::api::{ApiError, AppState};
use crate::auth::{AuthError, EnvScope, Principal, Scope};
use crate::releases::Actor;
use crate::store::EnvName;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
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

/// Sets the session cookie for `token` on `response`; it expires with `principal`'s token.
pub fn set_cookie(
    response: &mut HttpResponse,
    req: &HttpRequest,
    token: &str,
    principal: &Principal,
) -> Result<(), ApiError> {
    let seconds = principal.exp.saturating_sub(now_secs());
    let value = cookie::set_cookie(COOKIE, token, seconds, over_tls(req))?;
    response.headers_mut().append(header::SET_COOKIE, value);
    Ok(())
}

/// Ends the session on `response`: the cookie, emptied and expired.
pub fn remove_cookie(response: &mut HttpResponse, req: &HttpRequest) {
    response.headers_mut().append(header::SET_COOKIE, cookie::removal(COOKIE, over_tls(req)));
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
        let token = cookie::find(req.headers().get_all(header::COOKIE).filter_map(|v| v.to_str().ok()), COOKIE)
            .ok_or(AuthError::MissingToken)?
            .to_owned();
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

/// A page request: a session allowed one of a policy's scopes in the path's `{env}`.
///
/// The policy is a value (its `SCOPES`), not a type parameter: one copy of the checks
/// and of what calls them, whatever the page (the console's size budget).
pub struct Viewer {
    pub session: Session,
    pub env: EnvName,
}

impl Viewer {
    /// The checks of a page request, before its handler reads anything.
    #[inline(never)]
    pub fn check(req: &HttpRequest, scopes: &[Scope]) -> Result<Viewer, super::Page> {
        (|| -> Result<_, ApiError> {
            let session = Session::of(req)?;
            let env = EnvName::parse(req.match_info().get("env").unwrap_or_default())?;
            session.principal.authorize_any(scopes, &env)?;
            Ok(Viewer { session, env })
        })()
        .map_err(|error| super::Page::new(req, error))
    }
}

/// A state-changing request: a verified session, this server's `Origin`, the session's
/// CSRF token, and a session allowed one of `scopes` in the path's `{env}` — checked in
/// that order by [`Action::check`], which every action handler starts with. The form is
/// read last, from the fields beside the CSRF token.
pub struct Action {
    pub session: Session,
    pub env: EnvName,
    pub form: Fields,
}

impl Action {
    /// The checks of a state-changing request; the body is read only once the session
    /// and the `Origin` have passed.
    pub async fn check(req: &HttpRequest, payload: web::Payload, scopes: &[Scope]) -> Result<Action, super::Page> {
        let body = web::Bytes::from_request(req, &mut payload.into_inner());
        let result = async {
            let session = Session::of(req)?;
            check_origin(req)?;
            let body = body.await.map_err(|e| ApiError::BadRequest(format!("cannot read the form: {e}")))?;
            let (given, form) = split_csrf(&body);
            let given = given.unwrap_or_default();
            if given.is_empty() {
                return Err(ApiError::CsrfRefused("the form has no CSRF token".into()));
            }
            if !csrf_matches(&session.token, &given) {
                return Err(ApiError::CsrfRefused("the form's CSRF token is not this session's".into()));
            }
            let env = EnvName::parse(req.match_info().get("env").unwrap_or_default())?;
            session.principal.authorize_any(scopes, &env)?;
            Ok(Action { session, env, form })
        }
        .await;
        result.map_err(|error| super::Page::new(req, error))
    }
}

/// A form body's CSRF token (the first one; `None` when it has none) and its other
/// fields in their order.
fn split_csrf(body: &[u8]) -> (Option<String>, Fields) {
    let mut fields = Fields::parse(body);
    let csrf = fields.0.iter().find(|(name, _)| name == CSRF_FIELD).map(|(_, value)| value.clone());
    fields.0.retain(|(name, _)| name != CSRF_FIELD);
    (csrf, fields)
}

/// The session cookie, read and written by hand rather than with actix-web's `cookies`
/// feature: that feature links the `cookie` crate and `time`'s date parsing and
/// formatting (tens of KB the console's size budget cannot spare) for what is here one
/// cookie with a JWT for its value — no percent-encoding, no dates to parse, and the only
/// date written is the epoch, a constant.
mod cookie {
    use super::ApiError;
    use actix_web::http::header::HeaderValue;

    /// Whether `byte` may appear in a cookie value unquoted (RFC 6265 §4.1.1
    /// `cookie-octet`: visible ASCII except `"`, `,`, `;` and `\`). A JWT's base64url
    /// segments and dots all are.
    fn cookie_octet(byte: u8) -> bool {
        matches!(byte, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
    }

    /// The value of the first cookie called `name` in `headers` (the values of the
    /// request's `Cookie` headers: `a=1; b=2`), `None` when it is absent or empty.
    /// Names compare exactly; a value in double quotes loses them (RFC 6265 §5.4 leaves
    /// them in, but the cookie set here never has them).
    pub fn find<'a>(headers: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
        headers
            .into_iter()
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| pair.split_once('='))
            .find(|(n, _)| n.trim_matches([' ', '\t']) == name)
            .map(|(_, value)| {
                let value = value.trim_matches([' ', '\t']);
                value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
            })
            .filter(|value| !value.is_empty())
    }

    /// The attributes every session cookie carries: the whole site, out of scripts'
    /// reach, never sent with another site's requests; Secure when served over TLS.
    fn attributes(secure: bool) -> &'static str {
        if secure { "; Path=/; HttpOnly; SameSite=Strict; Secure" } else { "; Path=/; HttpOnly; SameSite=Strict" }
    }

    /// A `Set-Cookie` value: `name` holds `value` for `max_age_secs`. A value with a
    /// byte a cookie cannot carry is refused, never quoted or escaped (a `;` would
    /// otherwise add attributes).
    pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> Result<HeaderValue, ApiError> {
        if value.is_empty() || !value.bytes().all(cookie_octet) {
            return Err(ApiError::BadRequest("the token has characters a cookie cannot carry".into()));
        }
        let max_age = max_age_secs.min(i64::MAX as u64);
        let text = format!("{name}={value}; Max-Age={max_age}{}", attributes(secure));
        HeaderValue::from_str(&text).map_err(|e| ApiError::Internal(format!("session cookie: {e}")))
    }

    /// A `Set-Cookie` value that deletes `name`: empty, expired already (`Expires` for
    /// browsers older than `Max-Age`).
    pub fn removal(name: &str, secure: bool) -> HeaderValue {
        let text = format!("{name}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{}", attributes(secure));
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("cohort_session=; Max-Age=0; Path=/"))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_session_cookie_is_found_among_others_and_across_headers() {
            let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl-_";
            let header = format!("theme=dark; cohort_session={token}; other=1");
            assert_eq!(find([header.as_str()], "cohort_session"), Some(token));
            assert_eq!(find(["a=1", "cohort_session=x.y.z"], "cohort_session"), Some("x.y.z"), "a second header");
            assert_eq!(find(["cohort_session=first; cohort_session=second"], "cohort_session"), Some("first"));
            assert_eq!(find(["  cohort_session = \"q.r.s\" "], "cohort_session"), Some("q.r.s"), "spaces, quotes");
            assert_eq!(find(["a=b=c"], "a"), Some("b=c"), "a value may hold `=`");
        }

        #[test]
        fn a_similar_name_an_empty_value_or_no_cookie_is_no_session() {
            for header in ["xcohort_session=a", "cohort_session2=a", "Cohort_Session=a", "cohort_session", ""] {
                assert_eq!(find([header], "cohort_session"), None, "{header}");
            }
            assert_eq!(find(["cohort_session=; a=1"], "cohort_session"), None, "emptied by a sign-out");
            assert_eq!(find(["cohort_session=\"\""], "cohort_session"), None);
            assert_eq!(find(std::iter::empty::<&str>(), "cohort_session"), None);
        }

        #[test]
        fn the_set_cookie_header_carries_the_attributes_and_refuses_what_would_add_one() {
            let plain = set_cookie("cohort_session", "a.b.c", 3600, false).expect("a cookie");
            assert_eq!(plain, "cohort_session=a.b.c; Max-Age=3600; Path=/; HttpOnly; SameSite=Strict");
            let tls = set_cookie("cohort_session", "a.b.c", u64::MAX, true).expect("a cookie");
            assert_eq!(
                tls,
                "cohort_session=a.b.c; Max-Age=9223372036854775807; Path=/; HttpOnly; SameSite=Strict; Secure"
            );
            for value in ["a; Domain=evil.example", "a b", "a,b", "a\"b", "a\\b", "caf\u{e9}", ""] {
                assert!(set_cookie("cohort_session", value, 60, false).is_err(), "{value:?}");
            }
            assert_eq!(
                removal("cohort_session", true),
                "cohort_session=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; HttpOnly; SameSite=Strict; Secure"
            );
        }
    }
}

/// An `application/x-www-form-urlencoded` form body or query string: its fields in
/// their order, decoded (UTF-8, as browsers send this console's forms; a bad byte becomes
/// U+FFFD).
///
/// One reader for every form and query, not a serde derive per form type with
/// `serde_urlencoded` (each one a deserializer of its own in the binary), nor actix-web's
/// `Form`, whose charset support links ~160 KB of encoding tables. It answers as those
/// typed forms did: an absent field is empty or `None`, a field sent twice is refused,
/// and so is a number that is none.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fields(Vec<(String, String)>);

/// Why a form or query is refused (the words `serde_urlencoded` used).
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    #[error("duplicate field `{0}`")]
    Duplicate(String),
    #[error("missing field `{0}`")]
    Missing(String),
    #[error(transparent)]
    Number(#[from] std::num::ParseIntError),
}

impl Fields {
    /// The fields of `encoded`.
    pub fn parse(encoded: &[u8]) -> Fields {
        Fields(form_urlencoded::parse(encoded).into_owned().collect())
    }

    /// The fields of `req`'s query string.
    pub fn query(req: &HttpRequest) -> Fields {
        Fields::parse(req.query_string().as_bytes())
    }

    /// The value of `name`, `None` when the form has no such field.
    #[inline(never)]
    pub fn get(&self, name: &str) -> Result<Option<&str>, FieldError> {
        let mut values = self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let first = values.next();
        match values.next() {
            Some(_) => Err(FieldError::Duplicate(name.to_owned())),
            None => Ok(first),
        }
    }

    /// The value of `name`, empty when absent.
    #[inline(never)]
    pub fn text(&self, name: &str) -> Result<String, FieldError> {
        Ok(self.get(name)?.unwrap_or_default().to_owned())
    }

    /// The value of `name` as an owned string, `None` when absent.
    #[inline(never)]
    pub fn optional(&self, name: &str) -> Result<Option<String>, FieldError> {
        Ok(self.get(name)?.map(str::to_owned))
    }

    /// The value of `name` as a number (`u8` or `u64`), `None` when absent.
    pub fn number<N: std::str::FromStr<Err = std::num::ParseIntError>>(
        &self,
        name: &str,
    ) -> Result<Option<N>, FieldError> {
        self.get(name)?.map(str::parse).transpose().map_err(FieldError::from)
    }

    /// The fields in their order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// A form body, read as the `web::Bytes` extractor reads one (its size limit, its errors).
pub async fn read_form(req: &HttpRequest, payload: web::Payload) -> Result<Fields, actix_web::Error> {
    let body = web::Bytes::from_request(req, &mut payload.into_inner()).await?;
    Ok(Fields::parse(&body))
}

/// A query refused as actix-web's `Query` refused it (the API's JSON error shape).
pub fn query_error(error: FieldError) -> ApiError {
    ApiError::BadRequest(format!("invalid query: Query deserialize error: {error}"))
}

/// A form refused, as a page.
pub fn form_error(req: &HttpRequest, error: FieldError) -> super::Page {
    super::Page::new(req, ApiError::BadRequest(format!("invalid form: {error}")))
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

    #[test]
    fn the_csrf_token_is_taken_out_of_the_form_and_the_other_fields_kept_in_order() {
        let (csrf, fields) = split_csrf(b"reason=5xx+spike&csrf=abc%2D_&allocation.v2=10&csrf=other");
        assert_eq!(csrf.as_deref(), Some("abc-_"));
        assert_eq!(fields.iter().collect::<Vec<_>>(), [("reason", "5xx spike"), ("allocation.v2", "10")]);
        assert_eq!(split_csrf(b"reason=x"), (None, Fields::parse(b"reason=x")));
    }

    #[test]
    fn a_field_sent_twice_or_a_number_that_is_none_is_refused_as_the_typed_forms_were() {
        let fields = Fields::parse(b"a=1&b=&b=2&n=x&big=256&empty=");
        assert_eq!(fields.get("a").expect("once"), Some("1"));
        assert_eq!(fields.text("absent").expect("absent"), "");
        assert_eq!(fields.optional("empty").expect("empty"), Some(String::new()));
        assert_eq!(fields.get("b").expect_err("twice").to_string(), "duplicate field `b`");
        assert_eq!(fields.number::<u64>("a").expect("a number"), Some(1));
        assert_eq!(fields.number::<u8>("absent").expect("absent"), None);
        assert_eq!(fields.number::<u64>("n").expect_err("no number").to_string(), "invalid digit found in string");
        assert_eq!(
            fields.number::<u8>("big").expect_err("too big").to_string(),
            "number too large to fit in target type"
        );
        assert_eq!(
            fields.number::<u8>("empty").expect_err("empty").to_string(),
            "cannot parse integer from empty string"
        );
    }
}
