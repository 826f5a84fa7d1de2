//! The web console: server-rendered HTML (maud templates, checked at compile time), one
//! stylesheet and one small script embedded in the binary, served by `cohort serve` at
//! `/` and below `/console/`.
//!
//! Pages read through the same domain operations as the API (`Releases`, `Ramps`,
//! `reach`) and act through them too; a session is the pasted token in an HttpOnly
//! cookie ([`session`]), authorised with the API's scope policies. Hiding a button is a
//! courtesy: every action is checked on the server by [`session::Action`].

mod assets;
mod changes;
mod create;
mod fleet;
mod overview;
mod plot;
mod ramp_actions;
mod ramp_form;
mod release;
mod release_form;
pub mod session;
mod signin;

use crate::api::ApiError;
use crate::api::auth::{Policy, Read};
use crate::auth::AuthError;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError, guard, web};
use futures_util::future::LocalBoxFuture;
use maud::{DOCTYPE, Markup, html};
use session::Session;

/// What a console route does: the one handler, [`dispatch`], reads it from the
/// resource's data.
#[derive(Clone, Copy, Debug)]
enum Route {
    Home,
    Css,
    Js,
    SignInPage,
    SignIn,
    SignOut,
    Overview,
    OverviewPart,
    Live,
    Reach,
    KillAll,
    UnkillAll,
    Kill,
    Unkill,
    Pause,
    NewRelease,
    Create,
    Release,
    Edit,
    ReleasePart,
    RampStart,
    RampPreview,
    RampPause,
    RampResume,
    RampAbort,
    Promote,
    Fleet,
    FleetPart,
    Changes,
    ChangesPart,
}

/// Which method a route answers.
#[derive(Clone, Copy)]
enum Verb {
    Get,
    Post,
}

/// Every route below `/console/`: the method, the path, what it does.
const ROUTES: &[(Verb, &str, Route)] = {
    use Route::*;
    use Verb::{Get, Post};
    &[
        (Get, assets::CSS_ROUTE, Css),
        (Get, assets::JS_ROUTE, Js),
        (Get, "/console/sign-in", SignInPage),
        (Post, "/console/sign-in", SignIn),
        (Post, "/console/sign-out", SignOut),
        (Get, "/console/envs/{env}", Overview),
        (Get, "/console/envs/{env}/part", OverviewPart),
        (Get, "/console/envs/{env}/live", Live),
        (Get, "/console/envs/{env}/reach", Reach),
        (Post, "/console/envs/{env}/kill-all", KillAll),
        (Post, "/console/envs/{env}/unkill-all", UnkillAll),
        (Post, "/console/envs/{env}/releases/{key}/kill", Kill),
        (Post, "/console/envs/{env}/releases/{key}/unkill", Unkill),
        (Post, "/console/envs/{env}/releases/{key}/pause", Pause),
        (Get, "/console/envs/{env}/new-release", NewRelease),
        (Post, "/console/envs/{env}/new-release", Create),
        (Post, "/console/envs/{env}/releases/{key}/ramp", RampStart),
        (Post, "/console/envs/{env}/releases/{key}/ramp/preview", RampPreview),
        (Post, "/console/envs/{env}/releases/{key}/ramp/pause", RampPause),
        (Post, "/console/envs/{env}/releases/{key}/ramp/resume", RampResume),
        (Post, "/console/envs/{env}/releases/{key}/ramp/abort", RampAbort),
        (Post, "/console/envs/{env}/releases/{key}/promote", Promote),
        (Get, "/console/envs/{env}/releases/{key}", Release),
        (Post, "/console/envs/{env}/releases/{key}", Edit),
        (Get, "/console/envs/{env}/releases/{key}/part", ReleasePart),
        (Get, "/console/envs/{env}/fleet", Fleet),
        (Get, "/console/envs/{env}/fleet/part", FleetPart),
        (Get, "/console/envs/{env}/changes", Changes),
        (Get, "/console/envs/{env}/changes/part", ChangesPart),
    ]
};

/// Registers the console's routes.
///
/// Every route has the one handler [`dispatch`], told apart by the [`Route`] in its
/// resource's data: actix-web builds a handler service, an extractor future and a
/// response future for each handler type, and the console's size budget cannot pay for
/// 29 of them. Each path and method is a resource of its own, as `ServiceConfig::route`
/// makes them, so an unserved method answers as before (the API's 404 below `/console/`,
/// 405 at `/`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").app_data(Route::Home).route(web::get().to(dispatch)));
    for &(verb, path, route) in ROUTES {
        let method = match verb {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
        };
        cfg.service(web::resource(path).guard(guard::Method(method)).app_data(route).to(dispatch));
    }
}

/// The `{key}` of the path, percent-decoded as `web::Path` decodes it.
fn key(req: &HttpRequest) -> String {
    let raw = req.match_info().get("key").unwrap_or_default();
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// The console's one handler: the route's checks and its page or action.
async fn dispatch(req: HttpRequest, payload: web::Payload) -> actix_web::Result<HttpResponse> {
    let route = *req.app_data::<Route>().ok_or_else(|| ApiError::Internal("console route".into()))?;
    let state = session::app_state(&req)?;
    let req = &req;
    // Each page's future is boxed: `dispatch` is then a small state machine awaiting one
    // `dyn Future`, rather than one holding every page's states inline.
    let page: LocalBoxFuture<'_, Result<HttpResponse, Page>> = match route {
        Route::Home => Box::pin(overview::home(req, state)),
        Route::Css => return Ok(assets::css()),
        Route::Js => return Ok(assets::js()),
        Route::SignInPage => return Ok(signin::show(req)),
        // Their errors are the body's too (as the `web::Bytes` extractor answered them).
        Route::SignIn => return signin::sign_in(req, state, payload).await,
        Route::SignOut => return signin::sign_out(req, payload).await,
        Route::Overview => Box::pin(overview::show(req, state)),
        Route::OverviewPart => return Ok(overview::part(req, state)?),
        Route::Live => return Ok(overview::live(req, state)?),
        Route::Reach => Box::pin(overview::reach(req, state)),
        Route::KillAll => Box::pin(overview::switch_all(req, state, payload, true)),
        Route::UnkillAll => Box::pin(overview::switch_all(req, state, payload, false)),
        Route::Kill => Box::pin(overview::switch(req, state, payload, true)),
        Route::Unkill => Box::pin(overview::switch(req, state, payload, false)),
        Route::Pause => Box::pin(overview::pause(req, state, payload)),
        Route::NewRelease => return Ok(create::show(req, state)?),
        Route::Create => Box::pin(create::create(req, state, payload)),
        Route::Release => Box::pin(release::show(req, state)),
        Route::Edit => Box::pin(release::edit(req, state, payload)),
        Route::ReleasePart => Box::pin(release::part(req, state)),
        Route::RampStart => Box::pin(ramp_form::start(req, state, payload)),
        Route::RampPreview => Box::pin(ramp_form::preview(req, state, payload)),
        Route::RampPause => Box::pin(ramp_actions::act(req, state, payload, ramp_actions::Op::Pause)),
        Route::RampResume => Box::pin(ramp_actions::act(req, state, payload, ramp_actions::Op::Resume)),
        Route::RampAbort => Box::pin(ramp_actions::act(req, state, payload, ramp_actions::Op::Abort)),
        Route::Promote => Box::pin(ramp_actions::act(req, state, payload, ramp_actions::Op::Promote)),
        Route::Fleet => Box::pin(fleet::show(req, state)),
        Route::FleetPart => Box::pin(fleet::part(req, state)),
        Route::Changes => Box::pin(changes::show(req, state)),
        Route::ChangesPart => Box::pin(changes::part(req, state)),
    };
    Ok(page.await?)
}

/// An HTML page answering with `status`.
fn html_response(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(markup.into_string())
}

/// The page shell: head, header (environments, who is signed in, sign-out) and `main`.
fn layout(
    title: &str,
    session: Option<(&Session, &[crate::store::EnvName])>,
    current: Option<&str>,
    main: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cohort" }
                // No favicon request: the first page costs three requests (HTML, CSS, JS).
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(assets::CSS_PATH);
                script src=(assets::JS_PATH) defer {}
            }
            // How long the session has left, so a live page notices its end at once.
            body data-session-left=[session.map(|(s, _)| s.principal.exp.saturating_sub(now_ms() / 1_000))] {
                header.top {
                    a.brand href="/" { "cohort" }
                    @if let Some((session, envs)) = session {
                        nav aria-label="Environments" {
                            ul {
                                @for env in envs {
                                    li {
                                        a href={ "/console/envs/" (env) }
                                            aria-current=[(current == Some(env.as_str())).then_some("page")] { (env) }
                                    }
                                }
                            }
                        }
                        @if let Some(env) = current.filter(|e| envs.iter().any(|n| n.as_str() == *e && session.may(Read::SCOPES, n))) {
                            nav.pages aria-label={ "Pages of " (env) } {
                                ul {
                                    @for (page, name) in [("", "Releases"), ("/fleet", "Fleets"), ("/changes", "Changes")] {
                                        li { a href={ "/console/envs/" (env) (page) } { (name) } }
                                    }
                                }
                            }
                        }
                        form.signout method="post" action="/console/sign-out" {
                            span.who { (session.principal.sub) " · " (session.principal.scopes.to_claim()) }
                            input type="hidden" name=(session::CSRF_FIELD) value=(session.csrf());
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" { (main) }
            }
        }
    }
}

/// A console failure as a page: signed out (or expired) → the sign-in form, keeping the
/// page to return to; anything else → the message with the API's status for it.
#[derive(Debug)]
pub struct Page {
    error: ApiError,
    /// The page to come back to after signing in.
    next: String,
}

impl Page {
    fn new(req: &HttpRequest, error: impl Into<ApiError>) -> Self {
        Page::of(req, error.into())
    }

    /// [`Page::new`]'s work, once for every kind of error.
    #[inline(never)]
    fn of(req: &HttpRequest, error: ApiError) -> Self {
        let next = if req.method() == actix_web::http::Method::GET {
            req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned()
        } else {
            // After a refused POST, come back to the page the form was on.
            req.headers()
                .get(actix_web::http::header::REFERER)
                .and_then(|r| r.to_str().ok())
                .and_then(|r| r.find("/console/").map(|i| r[i..].to_owned()))
                .unwrap_or_else(|| "/".to_owned())
        };
        Page { error, next }
    }
}

impl std::fmt::Display for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for Page {
    fn status_code(&self) -> StatusCode {
        self.error.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ApiError::Auth(auth) = &self.error
            && !auth.is_forbidden()
        {
            let notice = match auth {
                AuthError::MissingToken => None,
                AuthError::Expired => Some("Your session has expired. Sign in again to go on.".to_owned()),
                other => Some(format!("Sign in again: {other}.")),
            };
            return signin::page(status, &self.next, notice.as_deref(), None);
        }
        html_response(
            status,
            layout(
                "Refused",
                None,
                None,
                html! {
                    h1 { (status.canonical_reason().unwrap_or("Error")) }
                    p.error role="alert" { (self.error.to_string()) }
                    p { a href="/" { "Back to the console" } }
                },
            ),
        )
    }
}

impl From<ApiError> for Page {
    fn from(error: ApiError) -> Self {
        Page { error, next: "/".to_owned() }
    }
}

impl From<crate::releases::ReleaseError> for Page {
    fn from(error: crate::releases::ReleaseError) -> Self {
        Page::from(ApiError::from(error))
    }
}

/// A redirect after a form (303: the browser follows with a GET).
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", location)).finish()
}

/// "20 s", "3 min", "2 h", "4 d": how long ago `then_ms` was.
fn ago(then_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1_000;
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7_199 => format!("{} min", secs / 60),
        7_200..=172_799 => format!("{} h", secs / 3_600),
        _ => format!("{} d", secs / 86_400),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A number of percent as people read it: `5 %`, `12.5 %`.
fn percent(p: f64) -> String {
    format!("{}\u{a0}%", number(p))
}

/// A number with at most three decimals and no trailing zeros: `5`, `12.5`.
fn number(n: f64) -> String {
    let text = format!("{n:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_percents_read_as_people_say_them() {
        assert_eq!(ago(0, 20_000), "20 s");
        assert_eq!(ago(0, 600_000), "10 min");
        assert_eq!(ago(0, 3 * 3_600_000), "3 h");
        assert_eq!(percent(5.0), "5\u{a0}%");
        assert_eq!(percent(12.5), "12.5\u{a0}%");
    }
}
