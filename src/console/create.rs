//! `/console/envs/{env}/new-release`: the "New release" form, saved through
//! `Releases::create` like `POST /v1/envs/{env}/releases`; a refused save shows the form
//! again as typed, with the domain's error beside the field it concerns.

use super::release_form::{Problems, ReleaseForm};
use super::session::{Action, CSRF_FIELD, Session, Viewer, form_error};
use super::{Page, html_response, layout, see_other};
use crate::api::AppState;
use crate::api::auth::{Policy, Write};
use crate::releases::ReleaseError;
use crate::store::{EnvName, StoreError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};

/// The fields the form shows (a domain error about another goes above the form).
const FIELDS: &[&str] =
    &["key", "unit", "versions", "allocation", "values", "overrides", "rules", "audience", "description"];

fn page(state: &AppState, env: &EnvName, session: &Session, form: &ReleaseForm, problems: &Problems) -> Markup {
    let envs = session.environments(state);
    let main = html! {
        p { a href={ "/console/envs/" (env) } { "← Releases in " (env) } }
        section.panel aria-labelledby="create-title" {
            h1 id="create-title" { "New release in " (env) }
            @if let Some(general) = &problems.general { p.error role="alert" { (general) } }
            form method="post" action={ "/console/envs/" (env) "/new-release" } novalidate {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf());
                (form.fields(problems, true, false))
                div.buttons { button.primary type="submit" { "Create release" } }
            }
        }
    };
    layout(&format!("New release in {env}"), Some((session, &envs)), Some(env.as_str()), main)
}

pub(super) fn show(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let viewer = Viewer::check(req, Write::SCOPES)?;
    let markup = page(state, &viewer.env, &viewer.session, &ReleaseForm::blank(), &Problems::default());
    Ok(html_response(StatusCode::OK, markup))
}

pub(super) async fn create(req: &HttpRequest, state: &AppState, payload: web::Payload) -> Result<HttpResponse, Page> {
    let action = Action::check(req, payload, Write::SCOPES).await?;
    let form = &ReleaseForm::of_fields(&action.form).map_err(|e| form_error(req, e))?;
    let env = &action.env;
    let mut problems = Problems::default();
    let input = form.input(None, &mut problems);
    let status = if problems.any() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        match state.releases.create(env, &action.session.actor(), input).await {
            Ok(view) => return Ok(see_other(&format!("/console/envs/{env}/releases/{}?done=created", view.key))),
            Err(ReleaseError::Store(StoreError::AlreadyExists(_))) => {
                problems.fields.insert("key".into(), format!("`{}` exists already in {env}", form.key.trim()));
                StatusCode::CONFLICT
            }
            Err(error) => {
                if let Some(other) = problems.release_error(error, FIELDS) {
                    return Err(Page::new(req, other));
                }
                StatusCode::UNPROCESSABLE_ENTITY
            }
        }
    };
    Ok(html_response(status, page(state, env, &action.session, form, &problems)))
}
