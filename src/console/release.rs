//! `/console/envs/{env}/releases/{key}`: one release — where it stands, its ramp plot,
//! its recent history, and the edit form, written with `If-Match` through the same
//! `Releases::replace` as the API (so the same validation and ramp rule apply).

use super::overview::{Standing, ramp_line, serving};
use super::ramp_form::{self, PlanForm};
use super::release_form::{Problems, ReleaseForm};
use super::session::{Action, Fields, Session, Viewer, form_error, query_error};
use super::{Page, ago, html_response, layout, now_ms, see_other};
use crate::api::auth::Policy;
use crate::api::auth::{Observe, Read, Write};
use crate::api::{ApiError, AppState};
use crate::releases::{ReleaseError, ReleaseView};
use crate::store::{AuditEntry, AuditQuery, EnvName, StoreError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use maud::{Markup, html};

/// What was just done on this page (`?done=ramp-start`), said at its top.
#[derive(Default)]
pub(super) struct Done {
    done: Option<String>,
}

impl Done {
    fn message(&self, view: &ReleaseView) -> Option<String> {
        let candidate = view.ramp.as_ref().map_or("the candidate", |r| r.candidate.as_str());
        Some(match self.done.as_deref()? {
            "saved" => format!("Saved: {} is at revision {}.", view.key, view.revision),
            "created" => format!("Created {}.", view.key),
            "ramp-start" => format!("The ramp of {candidate} has started."),
            "ramp-pause" => format!("The ramp of {candidate} is paused."),
            "ramp-resume" => format!("The ramp of {candidate} is running again."),
            "ramp-abort" => format!("The ramp of {candidate} is aborted: it is back to 0\u{a0}%."),
            "promote" => format!("Promoted: {} is the baseline now.", view.versions.first().map_or("", String::as_str)),
            _ => return None,
        })
    }
}

/// The forms of the page as typed, when a submit is shown again.
#[derive(Default)]
pub(super) struct Typed<'a> {
    pub edit: Option<(&'a ReleaseForm, &'a Problems)>,
    pub plan: Option<(&'a PlanForm, &'a Problems)>,
    pub done: Option<&'a Done>,
}

fn edit_form(env: &EnvName, view: &ReleaseView, form: &ReleaseForm, problems: &Problems, session: &Session) -> Markup {
    let action = format!("/console/envs/{env}/releases/{}", view.key);
    html! {
        section.panel aria-labelledby="edit-title" {
            h2 id="edit-title" { "Edit " (view.key) }
            @if let Some(conflict) = &problems.conflict {
                p.conflict role="alert" { (conflict) " — " a href=(action) { "reload" } }
            }
            @if let Some(general) = &problems.general { p.error role="alert" { (general) } }
            form method="post" action=(action) novalidate {
                input type="hidden" name=(super::session::CSRF_FIELD) value=(session.csrf());
                input type="hidden" name="revision" value=(form.revision);
                (form.fields(problems, false, view.fleet.is_some()))
                div.buttons { button.primary type="submit" { "Save" } }
            }
        }
    }
}

fn history_table(entries: &[AuditEntry], now: u64) -> Markup {
    html! {
        section.panel aria-labelledby="history-title" {
            h2 id="history-title" { "Recent changes" }
            table.history {
                thead { tr { th { "When" } th { "Who" } th { "What" } th { "Why" } } }
                tbody {
                    @for e in entries.iter().rev().take(15) {
                        tr {
                            td { (ago(e.time_ms, now)) " ago" }
                            td { (e.actor) }
                            td { (e.action.as_str()) " (revision " (e.revision) ")" }
                            td { (e.reason.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

/// The part of the page that follows the release live: where it stands and its plot.
async fn live_part(state: &AppState, env: &EnvName, view: &ReleaseView, session: &Session) -> Markup {
    let (env_view, _) = state.releases.list(env).unwrap_or_else(|_| {
        (
            crate::releases::EnvView { environment: env.to_string(), revision: 0, kill_all: false, kill_reason: None },
            vec![],
        )
    });
    let standing = Standing::of(view, &env_view);
    let entries =
        if session.may(Read::SCOPES, env) { audit(state, env, &view.key).await.unwrap_or_default() } else { vec![] };
    let now = now_ms();
    let plot = super::plot::panel(state, env, view, &entries, now).await;
    html! {
        div id="live-part" data-revision=(view.revision) {
            section.panel aria-labelledby="state-title" {
                h2 id="state-title" { span class={ "badge " (standing.as_str()) } { (standing.label()) } " " (serving(view, &env_view)) }
                @if let Some(reason) = view.kill_reason.as_ref().filter(|_| view.killed) { p.reason { "Killed: " (reason) } }
                @if env_view.kill_all { p.reason { "Kill-all is on in " (env) "." } }
                @if let Some(line) = ramp_line(view) { p.ramp { (line) } }
                p.meta { "Revision " (view.revision) "; versions " (view.versions.join(", ")) "; unit " code { (view.unit) } }
                (super::ramp_actions::buttons(env, view, session))
                @if session.may(crate::api::auth::Kill::SCOPES, env) {
                    p { a href={ "/console/envs/" (env) "#release-" (view.key) } { "Kill switches are on the overview" } }
                }
            }
            @if let Some(plot) = plot { (plot) }
            @if !entries.is_empty() { (history_table(&entries, now)) }
        }
    }
}

/// The release's audit entries, oldest first (the latest 200).
async fn audit(state: &AppState, env: &EnvName, key: &str) -> Result<Vec<AuditEntry>, ReleaseError> {
    let query = AuditQuery { release: Some(key.to_owned()), before: None, limit: 200 };
    let mut entries = state.releases.audit(env, &query).await?;
    entries.reverse();
    Ok(entries)
}

pub(super) async fn render(
    state: &AppState,
    env: &EnvName,
    view: &ReleaseView,
    session: &Session,
    typed: Typed<'_>,
) -> Markup {
    let envs = session.environments(state);
    let blank = Problems::default();
    let fresh = ReleaseForm::of(view);
    let (form, problems) = typed.edit.unwrap_or((&fresh, &blank));
    let notice = typed.done.and_then(|d| d.message(view));
    let main = html! {
        div data-live={ "/console/envs/" (env) "/live" } data-part={ "/console/envs/" (env) "/releases/" (view.key) "/part" } {
            p { a href={ "/console/envs/" (env) } { "← Releases in " (env) } }
            h1 { (view.key) }
            @if let Some(notice) = notice { p.confirmation role="status" { (notice) } }
            @if !view.description.is_empty() { p.description { (view.description) } }
            (live_part(state, env, view, session).await)
        }
        @if session.may(Write::SCOPES, env) {
            (ramp_form::editor(state, env, view, session, typed.plan))
            (edit_form(env, view, form, problems, session))
        }
    };
    layout(&view.key, Some((session, &envs)), Some(env.as_str()), main)
}

pub(super) async fn show(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let viewer = Viewer::check(req, Observe::SCOPES)?;
    let key = super::key(req);
    let done = match Fields::query(req).optional("done") {
        Ok(done) => Done { done },
        Err(error) => return Ok(query_error(error).error_response()),
    };
    let view = state.releases.get(&viewer.env, &key).map_err(|e| Page::new(req, e))?;
    let typed = Typed { done: Some(&done), ..Typed::default() };
    Ok(html_response(StatusCode::OK, render(state, &viewer.env, &view, &viewer.session, typed).await))
}

pub(super) async fn part(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let viewer = Viewer::check(req, Observe::SCOPES)?;
    let view = state.releases.get(&viewer.env, &super::key(req)).map_err(|e| Page::new(req, e))?;
    Ok(html_response(StatusCode::OK, live_part(state, &viewer.env, &view, &viewer.session).await))
}

/// "changed by alice 20 s ago": who wrote the release last, from the audit log.
async fn changed_by(state: &AppState, env: &EnvName, key: &str) -> String {
    let query = AuditQuery { release: Some(key.to_owned()), before: None, limit: 1 };
    match state.releases.audit(env, &query).await.ok().and_then(|e| e.into_iter().next()) {
        Some(entry) => format!("Changed by {} {} ago", entry.actor, ago(entry.time_ms, now_ms())),
        None => "Changed by someone else meanwhile".to_owned(),
    }
}

/// Saves the form with `If-Match` = the revision the form was shown at.
pub(super) async fn edit(req: &HttpRequest, state: &AppState, payload: web::Payload) -> Result<HttpResponse, Page> {
    let key = &super::key(req);
    let action = Action::check(req, payload, Write::SCOPES).await?;
    let form = &ReleaseForm::of_fields(&action.form).map_err(|e| form_error(req, e))?;
    let env = &action.env;
    let current = state.releases.get(env, key).map_err(|e| Page::new(req, e))?;
    let Ok(expected) = form.revision.trim().parse::<u64>() else {
        return Err(Page::new(req, ApiError::PreconditionRequired));
    };
    let mut problems = Problems::default();
    let input = form.input(Some(&current), &mut problems);
    let status = if problems.any() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        match state.releases.replace(env, &action.session.actor(), key, input, expected).await {
            Ok(_) => return Ok(see_other(&format!("/console/envs/{env}/releases/{key}?done=saved"))),
            Err(ReleaseError::Store(StoreError::RevisionMismatch { .. })) => {
                problems.conflict = Some(changed_by(state, env, key).await);
                StatusCode::PRECONDITION_FAILED
            }
            Err(error) => {
                let status = match &error {
                    ReleaseError::Conflict(_) | ReleaseError::RampActive(_) => StatusCode::CONFLICT,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                if let Some(other) = problems.release_error(error, EDIT_FIELDS) {
                    return Err(Page::new(req, other));
                }
                status
            }
        }
    };
    let view = state.releases.get(env, key).map_err(|e| Page::new(req, e))?;
    let typed = Typed { edit: Some((form, &problems)), ..Typed::default() };
    Ok(html_response(status, render(state, env, &view, &action.session, typed).await))
}

/// The fields the edit form shows (a domain error about another goes above the form).
const EDIT_FIELDS: &[&str] = &["versions", "allocation", "values", "overrides", "rules", "audience", "description"];
