//! The ramp's buttons on a release's page — pause, resume, abort, promote — each a
//! CSRF-checked POST through the same `Ramps` operation as the API, offered only to a
//! session allowed it and authorised again by [`Action`] on the server.

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
                        form.inline method="post" action={ (base) "/" (op) } data-confirm=[confirm] {
                            input type="hidden" name=(CSRF_FIELD) value=(session.csrf());
                            button type="submit" class=[(op == "ramp/abort").then_some("danger")] { (label) }
                        }
                    }
                }
            }
        }
    }
}

/// A ramp button's operation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Pause,
    Resume,
    Abort,
    Promote,
}

/// Where to go after `done` on `key`; a form's `back` of `overview` goes back to the
/// environment's page instead of the release's.
fn after(env: &EnvName, key: &str, done: &str, back: Option<&str>) -> HttpResponse {
    match back {
        Some("overview") => see_other(&format!("/console/envs/{env}?done={done}&key={key}")),
        _ if done == "promote" => see_other(&format!("/console/envs/{env}/releases/{key}?done=promote")),
        _ => see_other(&format!("/console/envs/{env}/releases/{key}?done=ramp-{done}")),
    }
}

/// A ramp button: pausing takes the `Halt` policy, the others `Write`; pausing and
/// aborting keep the form's reason.
pub(super) async fn act(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
    op: Op,
) -> Result<HttpResponse, Page> {
    let key = super::key(req);
    let scopes = if op == Op::Pause { Halt::SCOPES } else { Write::SCOPES };
    let a = Action::check(req, payload, scopes).await?;
    let (reason, back) = (|| Ok((a.form.optional("reason")?, a.form.optional("back")?)))()
        .map_err(|e| super::session::form_error(req, e))?;
    let reason = reason.filter(|r| !r.trim().is_empty());
    let (env, actor) = (&a.env, a.session.actor());
    let done = match op {
        Op::Pause => state.ramps.pause(env, &actor, &key, reason).await.map(|_| "pause"),
        Op::Resume => state.ramps.resume(env, &actor, &key).await.map(|_| "resume"),
        Op::Abort => state.ramps.abort(env, &actor, &key, reason).await.map(|_| "abort"),
        Op::Promote => state.ramps.promote(env, &actor, &key, None).await.map(|_| "promote"),
    }
    .map_err(|e| Page::new(req, e))?;
    Ok(after(env, &key, done, back.as_deref()))
}
