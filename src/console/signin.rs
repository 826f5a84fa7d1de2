//! Signing in (pasting a token from `cohort token mint` or an identity provider) and out.

use super::session::{self, Fields, Session};
use super::{Page, html_response, layout, see_other};
use crate::api::{ApiError, AppState};
use crate::auth::Scope;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use maud::html;

/// Only a path of this server is a place to come back to (never `//elsewhere`).
fn local(next: &str) -> &str {
    let ok = next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\");
    if ok { next } else { "/" }
}

/// The sign-in page; `next` is where to go afterwards.
pub fn page(status: StatusCode, next: &str, notice: Option<&str>, error: Option<&str>) -> HttpResponse {
    let main = html! {
        section.signin aria-labelledby="signin-title" {
            h1 id="signin-title" { "Sign in to cohort" }
            @if let Some(notice) = notice { p.notice role="status" { (notice) } }
            form method="post" action="/console/sign-in" {
                input type="hidden" name="next" value=(local(next));
                label for="token" { "Token" }
                p.hint id="token-hint" {
                    "Paste a token from " code { "cohort token mint --sub $USER --env production --scope kill" }
                    " or from your identity provider. It stays in an HttpOnly cookie that ends when the token does."
                }
                textarea id="token" name="token" rows="4" required autocomplete="off" spellcheck="false"
                    aria-describedby="token-hint" aria-invalid=[error.map(|_| "true")] {}
                @if let Some(error) = error { p.error id="token-error" role="alert" { (error) } }
                button.primary type="submit" { "Sign in" }
            }
        }
    };
    html_response(status, layout("Sign in", None, None, main))
}

/// The sign-in page; the query's `next` is where to go afterwards, and its `ended` is
/// set by a live page whose session was refused (its cookie may already be gone with the
/// token's expiry, so the server cannot tell it apart from a first visit).
pub(super) fn show(req: &HttpRequest) -> HttpResponse {
    let query = Fields::query(req);
    let read = || -> Result<_, session::FieldError> { Ok((query.optional("next")?, query.number::<u8>("ended")?)) };
    let (next, ended) = match read() {
        Ok(read) => read,
        Err(error) => return session::query_error(error).error_response(),
    };
    let notice = ended.map(|_| "Your session has ended (it expired or was revoked). Sign in again to go on.");
    page(StatusCode::OK, next.as_deref().unwrap_or("/"), notice, None)
}

/// Verifies the pasted token with the API's verifier and, if it may see anything here,
/// sets the session cookie and goes back to the page.
pub(super) async fn sign_in(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let form = session::read_form(req, payload).await?;
    // Login CSRF: only a form of this server may sign a browser in.
    session::check_origin(req).map_err(|e| Page::new(req, e))?;
    let (token, next) =
        (|| Ok((form.text("token")?, form.optional("next")?)))().map_err(|e| session::form_error(req, e))?;
    let next = next.as_deref().unwrap_or("/");
    let token = token.trim();
    if token.is_empty() {
        return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, next, None, Some("Paste a token first.")));
    }
    let principal = match session::verify(state, token) {
        Ok(principal) => principal,
        Err(error) => return Ok(page(StatusCode::UNAUTHORIZED, next, None, Some(&error.to_string()))),
    };
    let sees = [Scope::Read, Scope::Kill].iter().any(|s| principal.scopes.allow(*s));
    if !sees {
        let message = format!(
            "This token allows only `{}`; the console needs `read`, `write`, `kill` or `admin`.",
            principal.scopes.to_claim()
        );
        return Ok(page(StatusCode::FORBIDDEN, next, None, Some(&message)));
    }
    tracing::info!(sub = %principal.sub, env = %principal.env, "console sign-in");
    let mut response = see_other(local(next));
    session::set_cookie(&mut response, req, token, &principal).map_err(|e| Page::new(req, e))?;
    Ok(response)
}

/// Ends the session. A live session must send its CSRF token (so another site cannot
/// sign a person out); an expired one is simply cleared.
pub(super) async fn sign_out(req: &HttpRequest, payload: web::Payload) -> actix_web::Result<HttpResponse> {
    let form = session::read_form(req, payload).await?;
    session::check_origin(req).map_err(|e| Page::new(req, e))?;
    let csrf = form.text(session::CSRF_FIELD).map_err(|e| session::form_error(req, e))?;
    if let Ok(session) = Session::of(req)
        && !session::csrf_matches(session.token(), &csrf)
    {
        return Err(Page::new(req, ApiError::CsrfRefused("the form's CSRF token is not this session's".into())).into());
    }
    let mut response = see_other("/console/sign-in");
    session::remove_cookie(&mut response, req);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::local;

    #[test]
    fn only_local_paths_are_places_to_come_back_to() {
        assert_eq!(local("/console/envs/production"), "/console/envs/production");
        assert_eq!(local("//evil.example/x"), "/");
        assert_eq!(local("https://evil.example/"), "/");
        assert_eq!(local("/\\evil.example"), "/");
    }
}
