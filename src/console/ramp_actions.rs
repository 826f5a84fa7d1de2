//! The ramp's buttons on a release's page — pause, resume, abort, promote — each a
//! CSRF-checked POST through the same `Ramps` operation as the API, offered only to a
//! session allowed it and authorised again by [`Action`] on the server.

use super::release::KeyPath;
use super::session::{Action, CSRF_FIELD, Session};
use super::{Page, see_other};
use crate::api::AppState;
use crate::api::auth::{Policy, Write};
use crate::api::ramp::Halt;
use crate::releases::ReleaseView;
use crate::store::EnvName;
use actix_web::{HttpRequest, HttpResponse, web};
use cohort_sdk::RampState;
use maud::{Markup, html};
use serde::Deserialize;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let base = "/console/envs/{env}/releases/{key}";
    cfg.route(&format!("{base}/ramp/pause"), web::post().to(pause))
        .route(&format!("{base}/ramp/resume"), web::post().to(resume))
        .route(&format!("{base}/ramp/abort"), web::post().to(abort))
        .route(&format!("{base}/promote"), web::post().to(promote));
}

/// The ramp's buttons, each shown only to a session allowed it (the handlers check again).
pub(super) fn buttons(env: &EnvName, view: &ReleaseView, session: &Session) -> Markup {
    let Some(ramp) = view.ramp.as_ref() else { return html! {} };
    let (halt, write) = (session.may(Halt::SCOPES, env), session.may(Write::SCOPES, env));
    let base = format!("/console/envs/{env}/releases/{}", view.key);
    let c = &ramp.candidate;
    let buttons = [
        (ramp.state == RampState::Running && halt, "ramp/pause", "Pause ramp", None),
        (ramp.state == RampState::Paused && write, "ramp/resume", "Resume ramp", None),
        (
            !ramp.state.is_finished() && write,
            "ramp/abort",
            "Abort ramp",
            Some(format!("Abort the ramp? {c} goes back to 0 %.")),
        ),
        (
            ramp.state != RampState::Aborted && ramp.state != RampState::RolledBack && write,
            "promote",
            "Promote",
            Some(format!("Promote {c}? Everyone gets {c}; the ramp ends.")),
        ),
    ];
    html! {
        @if buttons.iter().any(|b| b.0) {
            div.actions {
                @for (shown, op, label, confirm) in buttons {
                    @if shown {
                        form.inline method="post" action=(format!("{base}/{op}")) data-confirm=[confirm] {
                            input type="hidden" name=(CSRF_FIELD) value=(session.csrf());
                            button type="submit" class=[(op == "ramp/abort").then_some("danger")] { (label) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    reason: Option<String>,
    /// `overview` to go back to the environment's page instead of the release's.
    #[serde(default)]
    back: Option<String>,
}

/// Where to go after `done` on `key`.
fn after(env: &EnvName, key: &str, done: &str, form: &ReasonForm) -> HttpResponse {
    match form.back.as_deref() {
        Some("overview") => see_other(&format!("/console/envs/{env}?done={done}&key={key}")),
        _ if done == "promote" => see_other(&format!("/console/envs/{env}/releases/{key}?done=promote")),
        _ => see_other(&format!("/console/envs/{env}/releases/{key}?done=ramp-{done}")),
    }
}

fn reason(form: &ReasonForm) -> Option<String> {
    form.reason.clone().filter(|r| !r.trim().is_empty())
}

async fn pause(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<KeyPath>,
    a: Action<Halt, ReasonForm>,
) -> Result<HttpResponse, Page> {
    state.ramps.pause(&a.env, &a.session.actor(), &path.key, reason(&a.form)).await.map_err(|e| Page::new(&req, e))?;
    Ok(after(&a.env, &path.key, "pause", &a.form))
}

async fn resume(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<KeyPath>,
    a: Action<Write, ReasonForm>,
) -> Result<HttpResponse, Page> {
    state.ramps.resume(&a.env, &a.session.actor(), &path.key).await.map_err(|e| Page::new(&req, e))?;
    Ok(after(&a.env, &path.key, "resume", &a.form))
}

async fn abort(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<KeyPath>,
    a: Action<Write, ReasonForm>,
) -> Result<HttpResponse, Page> {
    state.ramps.abort(&a.env, &a.session.actor(), &path.key, reason(&a.form)).await.map_err(|e| Page::new(&req, e))?;
    Ok(after(&a.env, &path.key, "abort", &a.form))
}

async fn promote(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<KeyPath>,
    a: Action<Write, ReasonForm>,
) -> Result<HttpResponse, Page> {
    state.ramps.promote(&a.env, &a.session.actor(), &path.key, None).await.map_err(|e| Page::new(&req, e))?;
    Ok(after(&a.env, &path.key, "promote", &a.form))
}
