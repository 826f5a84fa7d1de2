//! `/console/envs/{env}`: every release of an environment at a glance (live, ramping,
//! paused, killed; the kill-all banner), the kill switches, the confirmation of a kill
//! arriving, and the event stream the page follows.

use super::session::{Action, FieldError, Fields, Session, Viewer, form_error, query_error};
use super::{Page, ago, html_response, layout, now_ms, percent, see_other};
use crate::api::auth::{Kill, Observe, Policy, Write};
use crate::api::ramp::Halt;
use crate::api::{ApiError, AppState};
use crate::auth::AuthError;
use crate::reach::Reach;
use crate::releases::{EnvView, ReleaseView};
use crate::store::EnvName;
use crate::stream::Listener;
use actix_web::http::StatusCode;
use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use cohort_sdk::RampState;
use maud::{Markup, html};

/// What a session may do in an environment: what the page offers. The server checks
/// the same policies again on every action.
pub(super) struct Powers {
    pub kill: bool,
    pub halt: bool,
    pub write: bool,
}

impl Powers {
    pub fn of(session: &Session, env: &EnvName) -> Self {
        Powers {
            kill: session.may(Kill::SCOPES, env),
            halt: session.may(Halt::SCOPES, env),
            write: session.may(Write::SCOPES, env),
        }
    }
}

/// Where a release stands, as the on-call engineer reads it.
pub(super) enum Standing {
    /// Killed (by its own switch or the environment's): everyone gets the baseline.
    Killed,
    /// A ramp is walking its steps.
    Ramping,
    /// A ramp is paused (by a person, a kill, or the guard's lack of data).
    Paused,
    /// Served as allocated.
    Live,
}

impl Standing {
    pub fn of(release: &ReleaseView, env: &EnvView) -> Self {
        if release.killed || env.kill_all {
            return Standing::Killed;
        }
        match release.ramp.as_ref().map(|r| r.state) {
            Some(RampState::Running) => Standing::Ramping,
            Some(RampState::Paused) => Standing::Paused,
            _ => Standing::Live,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Standing::Killed => "killed",
            Standing::Ramping => "ramping",
            Standing::Paused => "paused",
            Standing::Live => "live",
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Standing::Killed => "Killed",
            Standing::Ramping => "Ramping",
            Standing::Paused => "Paused",
            Standing::Live => "Live",
        }
    }
}

fn baseline(release: &ReleaseView) -> &str {
    release.versions.first().map_or("", String::as_str)
}

/// Who gets what: "v1 90 %, v2 10 %", or "everyone gets v1" under a kill.
pub(super) fn serving(release: &ReleaseView, env: &EnvView) -> String {
    if release.killed || env.kill_all {
        return format!("everyone gets {} (the baseline)", baseline(release));
    }
    let candidates: f64 = release.allocation.values().sum();
    let mut parts = vec![format!("{} {}", baseline(release), percent((100.0 - candidates).max(0.0)))];
    for version in release.versions.iter().skip(1) {
        let share = release.allocation.get(version).copied().unwrap_or(0.0);
        if share > 0.0 {
            parts.push(format!("{version} {}", percent(share)));
        }
    }
    parts.join(", ")
}

/// The ramp in a line: "v2: step 2 of 3 at 25 %, running".
pub(super) fn ramp_line(release: &ReleaseView) -> Option<String> {
    let ramp = release.ramp.as_ref()?;
    let share = release.allocation.get(&ramp.candidate).copied().unwrap_or(0.0);
    let reason = ramp.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    Some(format!(
        "Ramp of {}: step {} of {} at {}, {}{reason}",
        ramp.candidate,
        ramp.step + 1,
        ramp.steps.len(),
        percent(share),
        ramp.state.as_str()
    ))
}

fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name=(super::session::CSRF_FIELD) value=(session.csrf()); }
}

/// Which way a kill switch moves: a kill needs a reason and looks dangerous; lifting
/// one takes an optional reason.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Throw {
    Kill,
    Lift,
}

/// A dialog that asks for a reason before a kill switch moves; `consequence` names what
/// everyone will be served.
fn switch_dialog(
    id: &str,
    title: &str,
    consequence: Markup,
    (action, submit): (&str, &str),
    throw: Throw,
    session: &Session,
) -> Markup {
    let reason_required = throw == Throw::Kill;
    let danger = throw == Throw::Kill;
    html! {
        dialog id=(id) aria-labelledby={ (id) "-title" } {
            form method="post" action=(action) {
                h2 id={ (id) "-title" } { (title) }
                (consequence)
                label for={ (id) "-reason" } { "Reason" @if !reason_required { " (optional)" } }
                textarea id={ (id) "-reason" } name="reason" rows="3" required[reason_required]
                    placeholder="e.g. 5xx spike on checkout" {}
                (csrf_field(session))
                div.buttons {
                    button type="button" data-close { "Cancel" }
                    button type="submit" class=(if danger { "danger" } else { "primary" }) { (submit) }
                }
            }
        }
    }
}

fn release_card(env: &EnvName, view: &EnvView, release: &ReleaseView, session: &Session, powers: &Powers) -> Markup {
    let standing = Standing::of(release, view);
    let key = &release.key;
    let base = format!("/console/envs/{env}/releases/{key}");
    let running = release.ramp.as_ref().is_some_and(|r| r.state == RampState::Running);
    let paused = release.ramp.as_ref().is_some_and(|r| r.state == RampState::Paused);
    html! {
        li.release id={ "release-" (key) } data-state=(standing.as_str()) {
            div.head {
                h2 { a href=(base) { (key) } }
                span class={ "badge " (standing.as_str()) } { (standing.label()) }
            }
            p.serving { (serving(release, view)) }
            @if let Some(reason) = release.kill_reason.as_ref().filter(|_| release.killed) {
                p.reason { "Killed: " (reason) }
            }
            @if let Some(line) = ramp_line(release) { p.ramp { (line) } }
            @if !release.description.is_empty() { p.description { (release.description) } }
            @if powers.kill || (powers.halt && running) || (powers.write && paused) {
                div.actions {
                    @if powers.kill && release.killed {
                        button type="button" data-dialog={ "unkill-" (key) } aria-haspopup="dialog" aria-label={ "Unkill " (key) "…" } { "Unkill…" }
                    } @else if powers.kill {
                        button.danger type="button" data-dialog={ "kill-" (key) } aria-haspopup="dialog" aria-label={ "Kill " (key) "…" } { "Kill…" }
                    }
                    @if powers.halt && running {
                        form.inline method="post" action={ (base) "/pause" } {
                            (csrf_field(session))
                            button type="submit" aria-label={ "Pause the ramp of " (key) } { "Pause ramp" }
                        }
                    }
                    @if powers.write && paused && !release.killed {
                        form.inline method="post" action={ (base) "/ramp/resume" } {
                            (csrf_field(session))
                            input type="hidden" name="back" value="overview";
                            button type="submit" aria-label={ "Resume the ramp of " (key) } { "Resume ramp" }
                        }
                    }
                }
                @if powers.kill && release.killed {
                    (switch_dialog(&format!("unkill-{key}"), &format!("Unkill {key}?"),
                        html! { p { "Everyone will be served " (key) "'s allocation again: " strong { (serving(release, &EnvView { kill_all: false, ..view.clone() }).replace("everyone gets", "")) } "." }
                                @if running || release.ramp.as_ref().is_some_and(|r| r.state == RampState::Paused) { p { "A ramp paused by the kill stays paused until someone resumes it." } } },
                        (&format!("{base}/unkill"), &format!("Unkill {key}")), Throw::Lift, session))
                } @else if powers.kill {
                    (switch_dialog(&format!("kill-{key}"), &format!("Kill {key}?"),
                        html! { p { "Everyone will be served " strong { (baseline(release)) } ", the baseline of " (key) ", until someone unkills it." }
                                @if running { p { "Its running ramp pauses." } } },
                        (&format!("{base}/kill"), &format!("Kill {key}")), Throw::Kill, session))
                }
            }
        }
    }
}

/// The part of the page that follows the environment live: the kill-all banner and the
/// releases.
fn releases_part(env: &EnvName, view: &EnvView, releases: &[ReleaseView], session: &Session) -> Markup {
    let powers = Powers::of(session, env);
    html! {
        div id="live-part" data-revision=(view.revision) {
            @if view.kill_all {
                section.banner role="alert" aria-labelledby="killall-title" {
                    h2 id="killall-title" { "Kill-all is on in " (env) }
                    p { "Every release serves its baseline." @if let Some(reason) = &view.kill_reason { " Reason: " (reason) } }
                    @if powers.kill {
                        button type="button" data-dialog="unkill-all" aria-haspopup="dialog" { "Unkill all…" }
                        (switch_dialog("unkill-all", &format!("Lift kill-all in {env}?"),
                            html! { p { "Every release is served as allocated again (releases killed one by one stay killed)." } },
                            (&format!("/console/envs/{env}/unkill-all"), "Lift kill-all"), Throw::Lift, session))
                    }
                }
            } @else if powers.kill {
                div.envactions {
                    button.danger type="button" data-dialog="kill-all" aria-haspopup="dialog" { "Kill all…" }
                    (switch_dialog("kill-all", &format!("Kill every release in {env}?"),
                        html! {
                            p { "Everyone in " (env) " will be served each release's baseline:" }
                            ul.baselines { @for r in releases { li { (r.key) " → " strong { (baseline(r)) } } } }
                        },
                        (&format!("/console/envs/{env}/kill-all"), "Kill all"), Throw::Kill, session))
                }
            }
            @if releases.is_empty() {
                p { "No releases in " (env) " yet." }
            } @else {
                ul.releases aria-label={ "Releases in " (env) } {
                    @for release in releases { (release_card(env, view, release, session, &powers)) }
                }
            }
            p.meta { "Revision " (view.revision) ", updated live." }
        }
    }
}

/// The query of the page after an action: what was just done, for its confirmation.
#[derive(Default)]
pub(super) struct Done {
    /// What was just done: `kill`, `unkill`, `kill-all`, `unkill-all`, `pause`.
    done: Option<String>,
    key: Option<String>,
    revision: Option<u64>,
    /// `0` when only this instance serves the kill so far (the store could not take it).
    stored: Option<u8>,
}

impl Done {
    fn of(query: &Fields) -> Result<Done, FieldError> {
        Ok(Done {
            done: query.optional("done")?,
            key: query.optional("key")?,
            revision: query.number("revision")?,
            stored: query.number("stored")?,
        })
    }
}

/// "Applied by 41 of 42 SDKs, delivered to 130 streams; not yet: web-7f3, last seen 3 s ago".
pub(super) fn reach_text(reach: &Reach, now: u64) -> String {
    let delivered = format!(
        "delivered to {} of {} other stream{}",
        reach.delivered_only,
        reach.delivered_only_total,
        if reach.delivered_only_total == 1 { "" } else { "s" }
    );
    if reach.acknowledging_total == 0 {
        return format!("No SDK that confirms is connected; {delivered}.");
    }
    let mut text = format!(
        "Applied by {} of {} SDK{}, {delivered}",
        reach.acknowledged,
        reach.acknowledging_total,
        if reach.acknowledging_total == 1 { "" } else { "s" }
    );
    if !reach.pending.is_empty() {
        let waiting: Vec<String> = reach
            .pending
            .iter()
            .take(5)
            .map(|a| format!("{} (at revision {}), last seen {} ago", a.sdk_id, a.revision, ago(a.seen_ms, now)))
            .collect();
        text.push_str("; not yet: ");
        text.push_str(&waiting.join("; "));
        if reach.pending.len() > 5 {
            text.push_str(&format!(" and {} more", reach.pending.len() - 5));
        }
    }
    text.push('.');
    text
}

fn reach_markup(env: &EnvName, reach: &Reach) -> Markup {
    let confirmed = reach.confirmed && reach.acknowledging_total > 0;
    html! {
        p id="reach" data-env=(env) data-revision=(reach.revision) data-confirmed=(confirmed) {
            @if confirmed { strong { "Confirmed. " } }
            (reach_text(reach, now_ms()))
        }
    }
}

async fn confirmation(state: &AppState, env: &EnvName, view: &EnvView, done: &Done) -> Option<Markup> {
    let what = done.done.as_deref()?;
    let key = done.key.as_deref().unwrap_or_default();
    let base = view.kill_all.then_some(()).map_or_else(
        || state.releases.get(env, key).ok().map(|r| baseline(&r).to_owned()).unwrap_or_default(),
        |()| String::new(),
    );
    let message = match what {
        "kill" => format!("{key} is killed: everyone is served {base}, its baseline."),
        "unkill" => format!("{key} is unkilled: its allocation is served again."),
        "kill-all" => format!("Kill-all is on: every release in {env} serves its baseline."),
        "unkill-all" => format!("Kill-all is lifted in {env}."),
        "pause" => format!("The ramp of {key} is paused."),
        "resume" => format!("The ramp of {key} is running again."),
        _ => return None,
    };
    let reach = match done.revision {
        Some(revision) => crate::reach::reach(state.releases.store(), &state.streams, env, revision).await.ok(),
        None => None,
    };
    Some(html! {
        section.confirmation role="status" aria-labelledby="confirmation-title" {
            h2 id="confirmation-title" { (message) }
            @if done.stored == Some(0) && what.starts_with("unkill") {
                p.warning { "The store could not take it now: this cancels the kill this instance had not written yet. If the store took that kill before it went away, it is served again when the store is back." }
            } @else if done.stored == Some(0) {
                p.warning { "The store could not take it now: this instance serves it already and writes it to the store as soon as it can." }
            }
            @if let Some(reach) = reach.filter(|_| what != "pause" && what != "resume") { (reach_markup(env, &reach)) }
        }
    })
}

async fn page(state: &AppState, env: &EnvName, session: &Session, done: &Done) -> Result<Markup, ApiError> {
    crate::api::served(state, env)?;
    let (view, releases) = state.releases.list(env)?;
    let envs = session.environments(state);
    let confirmation = confirmation(state, env, &view, done).await;
    let main = html! {
        div data-live={ "/console/envs/" (env) "/live" } data-part={ "/console/envs/" (env) "/part" } {
            h1 { "Releases in " (env) }
            @if session.may(Write::SCOPES, env) {
                p { a.button href={ "/console/envs/" (env) "/new-release" } { "New release" } }
            }
            (confirmation.unwrap_or_default())
            (releases_part(env, &view, &releases, session))
        }
    };
    Ok(layout(&format!("Releases in {env}"), Some((session, &envs)), Some(env.as_str()), main))
}

/// `/`: the overview of the first environment the session may see (production first),
/// or the sign-in form.
pub(super) async fn home(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let session = Session::of(req).map_err(|e| Page::new(req, e))?;
    let envs = session.environments(state);
    let env = envs.iter().find(|e| e.as_str() == "production").or_else(|| envs.first()).cloned().ok_or_else(|| {
        Page::new(req, ApiError::Auth(AuthError::MissingScope { needed: "read".into(), have: String::new() }))
    })?;
    session.principal.authorize_any(Observe::SCOPES, &env).map_err(|e| Page::new(req, e))?;
    let markup = page(state, &env, &session, &Done::default()).await.map_err(|e| Page::new(req, e))?;
    Ok(html_response(StatusCode::OK, markup))
}

pub(super) async fn show(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let viewer = Viewer::check(req, Observe::SCOPES)?;
    let done = match Done::of(&Fields::query(req)) {
        Ok(done) => done,
        Err(error) => return Ok(query_error(error).error_response()),
    };
    let markup = page(state, &viewer.env, &viewer.session, &done).await.map_err(|e| Page::new(req, e))?;
    Ok(html_response(StatusCode::OK, markup))
}

/// The live part alone, fetched by the page when the environment changes.
pub(super) fn part(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let viewer = Viewer::check(req, Observe::SCOPES)?;
    let (view, releases) = state.releases.list(&viewer.env).map_err(|e| Page::new(req, e))?;
    Ok(html_response(StatusCode::OK, releases_part(&viewer.env, &view, &releases, &viewer.session)))
}

/// The confirmation line for a revision (the query's `revision`), polled by the page
/// until it is confirmed.
pub(super) async fn reach(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let viewer = Viewer::check(req, Observe::SCOPES)?;
    let revision = match Fields::query(req).number("revision") {
        Ok(Some(revision)) => revision,
        Ok(None) => return Ok(query_error(FieldError::Missing("revision".into())).error_response()),
        Err(error) => return Ok(query_error(error).error_response()),
    };
    let reach = crate::reach::reach(state.releases.store(), &state.streams, &viewer.env, revision)
        .await
        .map_err(|e| Page::new(req, ApiError::from(e)))?;
    Ok(html_response(StatusCode::OK, reach_markup(&viewer.env, &reach)))
}

/// The environment's change stream, for the page to refresh itself when anyone (CLI,
/// API, ramp driver, another instance) changes a release. It starts at the revision
/// served now, so it carries only what changes after.
pub(super) fn live(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let viewer = Viewer::check(req, Observe::SCOPES)?;
    let served = crate::api::served(state, &viewer.env).map_err(|e| Page::new(req, e))?;
    let subscription = state.streams.subscribe(&viewer.env, Some(served.revision()), Listener::Console);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header(("x-accel-buffering", "no"))
        .force_close()
        .streaming(subscription.into_stream()))
}

/// The kill form's optional reason.
fn reason(req: &HttpRequest, action: &Action) -> Result<Option<String>, Page> {
    action.form.optional("reason").map_err(|e| form_error(req, e))
}

fn back(env: &EnvName, what: &str, key: Option<&str>, revision: u64, stored: bool) -> HttpResponse {
    let key = key.map(|k| format!("&key={k}")).unwrap_or_default();
    see_other(&format!("/console/envs/{env}?done={what}{key}&revision={revision}&stored={}", u8::from(stored)))
}

/// A release's kill switch, on or off.
pub(super) async fn switch(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
    on: bool,
) -> Result<HttpResponse, Page> {
    let key = super::key(req);
    let action = Action::check(req, payload, Kill::SCOPES).await?;
    let reason = reason(req, &action)?;
    let answer = state
        .ramps
        .kill_release(&action.env, &action.session.actor(), &key, on, reason)
        .await
        .map_err(|e| Page::new(req, e))?;
    let what = if on { "kill" } else { "unkill" };
    Ok(back(&action.env, what, Some(&key), answer.view.revision, answer.persisted))
}

/// The environment's kill-all, on or off.
pub(super) async fn switch_all(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
    on: bool,
) -> Result<HttpResponse, Page> {
    let action = Action::check(req, payload, Kill::SCOPES).await?;
    let reason = reason(req, &action)?;
    let answer = state
        .ramps
        .kill_environment(&action.env, &action.session.actor(), on, reason)
        .await
        .map_err(|e| Page::new(req, e))?;
    let what = if on { "kill-all" } else { "unkill-all" };
    Ok(back(&action.env, what, None, answer.view.revision, answer.persisted))
}

/// Pauses a release's ramp from the overview.
pub(super) async fn pause(req: &HttpRequest, state: &AppState, payload: web::Payload) -> Result<HttpResponse, Page> {
    let key = super::key(req);
    let action = Action::check(req, payload, Halt::SCOPES).await?;
    let reason = reason(req, &action)?;
    let view =
        state.ramps.pause(&action.env, &action.session.actor(), &key, reason).await.map_err(|e| Page::new(req, e))?;
    Ok(back(&action.env, "pause", Some(&key), view.revision, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SdkAck;

    fn reach(acknowledged: usize, total: usize, pending: Vec<SdkAck>) -> Reach {
        Reach {
            revision: 5,
            acknowledged,
            acknowledging_total: total,
            confirmed: pending.is_empty(),
            pending,
            delivered_only: 3,
            delivered_only_total: 4,
            connected: total,
            applied: acknowledged,
        }
    }

    #[test]
    fn the_confirmation_names_who_has_not_applied_the_kill_yet() {
        let late = SdkAck { sdk_id: "web-7f3".into(), revision: 4, seen_ms: 7_000, address: "x".into(), connection: 1 };
        assert_eq!(
            reach_text(&reach(41, 42, vec![late]), 10_000),
            "Applied by 41 of 42 SDKs, delivered to 3 of 4 other streams; not yet: web-7f3 (at revision 4), last seen 3 s ago."
        );
        assert_eq!(reach_text(&reach(1, 1, vec![]), 0), "Applied by 1 of 1 SDK, delivered to 3 of 4 other streams.");
        assert!(reach_text(&reach(0, 0, vec![]), 0).starts_with("No SDK that confirms is connected"));
    }
}
