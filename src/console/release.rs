//! `/console/envs/{env}/releases/{key}`: one release — where it stands, its ramp plot,
//! its recent history, and the edit form, written with `If-Match` through the same
//! `Releases::replace` as the API (so the same validation and ramp rule apply).

use super::overview::{Powers, Standing, ramp_line, serving};
use super::session::{Action, Session, Viewer};
use super::{Page, ago, html_response, layout, now_ms, see_other};
use crate::api::auth::Policy;
use crate::api::auth::{Observe, Read, Write};
use crate::api::{ApiError, AppState};
use crate::releases::{ReleaseError, ReleaseInput, ReleaseView};
use crate::store::{AuditEntry, AuditQuery, EnvName, StoreError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/console/envs/{env}/releases/{key}", web::get().to(show))
        .route("/console/envs/{env}/releases/{key}", web::post().to(edit))
        .route("/console/envs/{env}/releases/{key}/part", web::get().to(part));
}

#[derive(Deserialize)]
struct KeyPath {
    key: String,
}

/// The form's fields as typed (kept as text, so a failed save shows them as they were).
#[derive(Deserialize, Default, Clone)]
struct EditForm {
    #[serde(default)]
    revision: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    overrides: String,
    #[serde(default)]
    rules: String,
    #[serde(default)]
    audience: String,
    /// `allocation.v2` → "10".
    #[serde(flatten)]
    rest: BTreeMap<String, String>,
}

impl EditForm {
    fn of(view: &ReleaseView) -> Self {
        let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap_or_default();
        let rest = view
            .versions
            .iter()
            .skip(1)
            .map(|v| {
                let p = view.allocation.get(v).copied().unwrap_or(0.0);
                (format!("allocation.{v}"), super::percent(p).trim_end_matches("\u{a0}%").to_owned())
            })
            .collect();
        EditForm {
            revision: view.revision.to_string(),
            description: view.description.clone(),
            overrides: pretty(serde_json::to_value(&view.overrides).unwrap_or_default()),
            rules: pretty(serde_json::to_value(&view.rules).unwrap_or_default()),
            audience: pretty(serde_json::to_value(&view.audience).unwrap_or_default()),
            rest,
        }
    }
}

/// What went wrong with a save, beside which field.
#[derive(Default)]
struct Problems {
    /// Field name (`description`, `rules`, `allocation.v2`, …) → message.
    fields: BTreeMap<String, String>,
    /// Not about one field.
    general: Option<String>,
    /// "changed by alice 20 s ago — reload".
    conflict: Option<String>,
}

impl Problems {
    fn any(&self) -> bool {
        !self.fields.is_empty() || self.general.is_some() || self.conflict.is_some()
    }
}

fn field(name: &str, label: &str, value: &str, problems: &Problems, textarea: bool, hint: Option<&str>) -> Markup {
    let id = format!("f-{}", name.replace('.', "-"));
    let error = problems.fields.get(name);
    let described = [hint.map(|_| format!("{id}-hint")), error.map(|_| format!("{id}-error"))]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    html! {
        label for=(id) { (label) }
        @if let Some(hint) = hint { p.hint id=(format!("{id}-hint")) { (hint) } }
        @if textarea {
            textarea.code id=(id) name=(name) rows="4" spellcheck="false"
                aria-invalid=[error.map(|_| "true")] aria-describedby=[(!described.is_empty()).then_some(described.as_str())] { (value) }
        } @else {
            input type="text" id=(id) name=(name) value=(value) inputmode=[name.starts_with("allocation.").then_some("decimal")]
                aria-invalid=[error.map(|_| "true")] aria-describedby=[(!described.is_empty()).then_some(described.as_str())];
        }
        @if let Some(error) = error { p.error id=(format!("{id}-error")) { (error) } }
    }
}

fn edit_form(env: &EnvName, view: &ReleaseView, form: &EditForm, problems: &Problems, session: &Session) -> Markup {
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
                (field("description", "Description", &form.description, problems, false, None))
                @if view.versions.len() > 1 {
                    fieldset {
                        legend { "Allocation (percent of units; " (view.versions[0]) ", the baseline, gets the rest)" }
                        div.allocations {
                            @for version in view.versions.iter().skip(1) {
                                @let name = format!("allocation.{version}");
                                div { (field(&name, version, form.rest.get(&name).map_or("0", String::as_str), problems, false, None)) }
                            }
                        }
                    }
                }
                (field("overrides", "Overrides (JSON: unit value → version)", &form.overrides, problems, true, Some("e.g. {\"user-7\": \"v2\"}")))
                (field("rules", "Rules (JSON)", &form.rules, problems, true, Some("e.g. [{\"when\": [{\"attr\": \"country\", \"op\": \"in\", \"values\": [\"NZ\"]}], \"serve\": \"v2\"}]")))
                (field("audience", "Audience (JSON conditions)", &form.audience, problems, true, None))
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
    let powers = Powers::of(session, env);
    let entries =
        if session.may(Read::SCOPES, env) { audit(state, env, &view.key).await.unwrap_or_default() } else { vec![] };
    let now = now_ms();
    let plot = super::plot::panel(state, env, view, &entries, now).await;
    html! {
        div id="live-part" data-revision=(view.revision) {
            section.panel aria-labelledby="state-title" {
                h2 id="state-title" { span class=(format!("badge {}", standing.as_str())) { (standing.label()) } " " (serving(view, &env_view)) }
                @if let Some(reason) = view.kill_reason.as_ref().filter(|_| view.killed) { p.reason { "Killed: " (reason) } }
                @if env_view.kill_all { p.reason { "Kill-all is on in " (env) "." } }
                @if let Some(line) = ramp_line(view) { p.ramp { (line) } }
                p.meta { "Revision " (view.revision) "; versions " (view.versions.join(", ")) "; unit " code { (view.unit) } }
                @if powers.kill || powers.halt {
                    p { a href=(format!("/console/envs/{env}#release-{}", view.key)) { "Kill switches and ramp actions are on the overview" } }
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

async fn render(
    state: &AppState,
    env: &EnvName,
    view: &ReleaseView,
    session: &Session,
    form: Option<(&EditForm, &Problems)>,
) -> Markup {
    let envs = session.environments(state);
    let blank = Problems::default();
    let fresh = EditForm::of(view);
    let (form, problems) = form.unwrap_or((&fresh, &blank));
    let main = html! {
        div data-live=(format!("/console/envs/{env}/live")) data-part=(format!("/console/envs/{env}/releases/{}/part", view.key)) {
            p { a href=(format!("/console/envs/{env}")) { "← Releases in " (env) } }
            h1 { (view.key) }
            @if !view.description.is_empty() { p.description { (view.description) } }
            (live_part(state, env, view, session).await)
        }
        @if session.may(Write::SCOPES, env) { (edit_form(env, view, form, problems, session)) }
    };
    layout(&view.key, Some((session, &envs)), Some(env.as_str()), main)
}

async fn show(
    req: HttpRequest,
    state: web::Data<AppState>,
    viewer: Viewer<Observe>,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, Page> {
    let view = state.releases.get(&viewer.env, &path.key).map_err(|e| Page::new(&req, e))?;
    Ok(html_response(StatusCode::OK, render(&state, &viewer.env, &view, &viewer.session, None).await))
}

async fn part(
    req: HttpRequest,
    state: web::Data<AppState>,
    viewer: Viewer<Observe>,
    path: web::Path<KeyPath>,
) -> Result<HttpResponse, Page> {
    let view = state.releases.get(&viewer.env, &path.key).map_err(|e| Page::new(&req, e))?;
    Ok(html_response(StatusCode::OK, live_part(&state, &viewer.env, &view, &viewer.session).await))
}

fn json_field<T: serde::de::DeserializeOwned + Default>(name: &str, text: &str, problems: &mut Problems) -> T {
    if text.trim().is_empty() {
        return T::default();
    }
    serde_json::from_str(text).unwrap_or_else(|e| {
        problems.fields.insert(name.to_owned(), format!("not valid here: {e}"));
        T::default()
    })
}

/// The input `replace` takes: the form's fields over what the release has now.
fn input(view: &ReleaseView, form: &EditForm, problems: &mut Problems) -> ReleaseInput {
    let mut allocation = BTreeMap::new();
    for version in view.versions.iter().skip(1) {
        let name = format!("allocation.{version}");
        let text = form.rest.get(&name).map_or("0", |t| t.trim().trim_end_matches('%').trim());
        match text.parse::<f64>() {
            Ok(p) => {
                allocation.insert(version.clone(), p);
            }
            Err(_) => {
                problems.fields.insert(name, format!("`{text}` is not a number of percent"));
            }
        }
    }
    ReleaseInput {
        key: None,
        versions: view.versions.clone(),
        unit: Some(view.unit.clone()),
        salt: (view.salt != view.key).then(|| view.salt.clone()),
        bucketing: Some(view.bucketing.clone()),
        allocation: if view.fleet.is_some() { None } else { Some(allocation) },
        overrides: json_field("overrides", &form.overrides, problems),
        rules: json_field("rules", &form.rules, problems),
        audience: json_field("audience", &form.audience, problems),
        values: view.values.clone(),
        description: Some(form.description.clone()),
        fleet: view.fleet.clone(),
        fleet_nodes: view.fleet_nodes,
    }
}

/// Which form field a domain error's `field` belongs beside.
fn field_of(field: &str) -> &'static str {
    for name in ["overrides", "rules", "audience", "description"] {
        if field.starts_with(name) {
            return name;
        }
    }
    ""
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
async fn edit(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<KeyPath>,
    action: Action<Write, EditForm>,
) -> Result<HttpResponse, Page> {
    let (env, key, form) = (&action.env, &path.key, &action.form);
    let current = state.releases.get(env, key).map_err(|e| Page::new(&req, e))?;
    let mut problems = Problems::default();
    let Ok(expected) = form.revision.trim().parse::<u64>() else {
        return Err(Page::new(&req, ApiError::PreconditionRequired));
    };
    let input = input(&current, form, &mut problems);
    let status = if problems.any() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        match state.releases.replace(env, &action.session.actor(), key, input, expected).await {
            Ok(view) => {
                return Ok(see_other(&format!("/console/envs/{env}/releases/{key}?saved={}", view.revision)));
            }
            Err(ReleaseError::Store(StoreError::RevisionMismatch { .. })) => {
                problems.conflict = Some(changed_by(&state, env, key).await);
                StatusCode::PRECONDITION_FAILED
            }
            Err(ReleaseError::Invalid { field, message }) => {
                let name = if field.starts_with("allocation") || field.starts_with("percent") {
                    format!("allocation.{}", field.split('.').nth(1).unwrap_or_default())
                } else {
                    field_of(&field).to_owned()
                };
                if name.is_empty() || (name.starts_with("allocation.") && !form.rest.contains_key(&name)) {
                    problems.general = Some(format!("{field}: {message}"));
                } else {
                    problems.fields.insert(name, format!("{field}: {message}"));
                }
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Err(ReleaseError::RampActive(message)) => {
                problems.general = Some(message);
                StatusCode::CONFLICT
            }
            Err(other) => return Err(Page::new(&req, other)),
        }
    };
    let view = state.releases.get(env, key).map_err(|e| Page::new(&req, e))?;
    let markup = render(&state, env, &view, &action.session, Some((form, &problems))).await;
    Ok(html_response(status, markup))
}
