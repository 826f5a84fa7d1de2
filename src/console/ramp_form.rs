//! The ramp plan editor on a release's page: steps, the guard, and a plain-language
//! preview the server writes as the user types (or on "Preview" without JavaScript).
//!
//! The preview is the plan as `ramp::plan::build` validates it, and the start is
//! `Ramps::start`, as for `POST …/ramp`: the console has no rules of its own.

use super::release::{Typed, render};
use super::release_form::{Problems, field};
use super::session::{Action, CSRF_FIELD, FieldError, Fields, Session, form_error};
use super::{Page, html_response, number, percent, see_other};
use crate::api::AppState;
use crate::api::auth::{Policy, Write};
use crate::ramp::plan::{self, GuardRequest, RampRequest, StepRequest};
use crate::releases::{ReleaseError, ReleaseView};
use crate::store::{EnvName, StoreError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use cohort_sdk::{Ramp, Release, buckets_to_percent};
use maud::{Markup, html};
use std::collections::BTreeMap;

/// Most step rows the editor shows: the domain's most steps in a plan.
const MAX_ROWS: usize = crate::ramp::plan::MAX_STEPS;

/// The plan as typed: percents and fractions in percent, holds as `30m`.
#[derive(Clone)]
pub(super) struct PlanForm {
    candidate: String,
    /// `preview`, `add` (a step row) or `start`: which button sent the form.
    go: String,
    /// Tolerated increase over the baseline's error rate, in points.
    increase: String,
    /// Ceiling of the candidate's error rate, in percent; blank for none.
    ceiling: String,
    /// Confidence, in percent.
    confidence: String,
    min_samples: String,
    /// Fleet releases: how long a batch may take to converge (`10m`), blank for the
    /// domain's default.
    deadline: String,
    /// Fleet releases: most nodes moved at once; blank for no limit.
    max_unavailable: String,
    /// `step0.percent`, `step0.hold`, … (every other field; the last of a name sent
    /// twice). On a fleet release a step's `percent` is a node count, or a percent when
    /// it ends in `%`, as the API's `nodes` and `percent`.
    steps: BTreeMap<String, String>,
}

/// The plan form's named fields (the others are its steps).
const NAMED: [&str; 8] =
    ["candidate", "go", "increase", "ceiling", "confidence", "min_samples", "progress_deadline", "max_unavailable"];

impl PlanForm {
    /// The plan as submitted (an absent field is empty).
    fn of_fields(fields: &Fields) -> Result<Self, FieldError> {
        let steps = fields
            .iter()
            .filter(|(name, _)| !NAMED.contains(name))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        Ok(PlanForm {
            candidate: fields.text("candidate")?,
            go: fields.text("go")?,
            increase: fields.text("increase")?,
            ceiling: fields.text("ceiling")?,
            confidence: fields.text("confidence")?,
            min_samples: fields.text("min_samples")?,
            deadline: fields.text("progress_deadline")?,
            max_unavailable: fields.text("max_unavailable")?,
            steps,
        })
    }

    /// The suggested plan: 5 % for 30 min, 25 % for 1 h, then everyone (a fleet: one node
    /// for 30 min, half for 1 h, then all); default guard.
    fn suggested(view: &ReleaseView) -> Self {
        let g = GuardRequest::default();
        let shares = if view.fleet.is_some() { ["1", "50 %", "100 %"] } else { ["5", "25", "100"] };
        let steps = shares
            .iter()
            .zip(["30m", "1h", ""])
            .enumerate()
            .flat_map(|(i, (p, h))| {
                [(format!("step{i}.percent"), p.to_string()), (format!("step{i}.hold"), h.to_string())]
            })
            .collect();
        PlanForm {
            candidate: view.versions.get(1).cloned().unwrap_or_default(),
            go: String::new(),
            increase: number(g.max_error_rate_increase * 100.0),
            ceiling: g.max_error_rate.map(|m| number(m * 100.0)).unwrap_or_default(),
            confidence: number(g.confidence * 100.0),
            min_samples: g.min_samples.to_string(),
            deadline: String::new(),
            max_unavailable: String::new(),
            steps,
        }
    }

    fn step(&self, row: usize, part: &str) -> &str {
        self.steps.get(&format!("step{row}.{part}")).map_or("", |s| s.trim())
    }

    /// How many rows to show: the filled ones and a blank one to add a step, or one more
    /// than were sent after "Add a step".
    fn rows(&self) -> usize {
        let rows = if self.go == "add" {
            let sent =
                self.steps.keys().filter_map(|k| k.strip_prefix("step")?.split_once('.')?.0.parse::<usize>().ok());
            sent.max().map_or(1, |r| r + 2)
        } else {
            let filled =
                (0..MAX_ROWS).rev().find(|&r| !self.step(r, "percent").is_empty() || !self.step(r, "hold").is_empty());
            filled.map_or(3, |r| r + 2)
        };
        rows.clamp(3, MAX_ROWS)
    }

    /// The API's request for this plan (for a `fleet` release or not), and which form row
    /// each of its steps came from; text that is no number beside its field.
    fn request(&self, fleet: bool, problems: &mut Problems) -> (RampRequest, Vec<usize>) {
        let (mut steps, mut rows) = (Vec::new(), Vec::new());
        for row in 0..MAX_ROWS {
            let (share, hold) = (self.step(row, "percent"), self.step(row, "hold"));
            if share.is_empty() && hold.is_empty() {
                continue;
            }
            let name = format!("step{row}.percent");
            let (percent, nodes) = match fleet && !share.ends_with('%') {
                true => (None, typed(problems, &name, share)),
                false => (in_percent(problems, &name, share, 1.0), None),
            };
            steps.push(StepRequest { percent, nodes, hold: Some(hold.to_owned()).filter(|h| !h.is_empty()) });
            rows.push(row);
        }
        let d = GuardRequest::default();
        let guard = GuardRequest {
            max_error_rate_increase: in_percent(problems, "increase", &self.increase, 100.0)
                .unwrap_or(d.max_error_rate_increase),
            max_error_rate: in_percent(problems, "ceiling", &self.ceiling, 100.0),
            confidence: in_percent(problems, "confidence", &self.confidence, 100.0).unwrap_or(d.confidence),
            min_samples: typed(problems, "min_samples", &self.min_samples).unwrap_or(d.min_samples),
        };
        let request = RampRequest {
            candidate: self.candidate.trim().to_owned(),
            steps,
            guard: Some(guard),
            progress_deadline: Some(self.deadline.trim().to_owned()).filter(|d| !d.is_empty()),
            max_unavailable: typed(problems, "max_unavailable", &self.max_unavailable),
        };
        (request, rows)
    }

    /// Puts a domain error beside its form field (`steps[1].percent` → `step2.percent`
    /// when the form's second row was blank); the guard's errors in the form's unit,
    /// percent, where the domain (and the API) speaks in fractions.
    fn place(problems: &mut Problems, field: &str, message: &str, rows: &[usize]) {
        if let Some(rest) = field.strip_prefix("steps[") {
            let row = rest.split_once(']').and_then(|(i, part)| Some((rows.get(i.parse::<usize>().ok()?)?, part)));
            let name = row.map(|(row, part)| {
                let part = part.strip_prefix('.').filter(|p| *p == "hold").unwrap_or("percent");
                format!("step{row}.{part}")
            });
            return problems.place(name, field, message);
        }
        let (name, in_percent) = match field {
            "guard.max_error_rate_increase" => ("increase", "from 0 to below 100 points (e.g. 1 for one point)"),
            "guard.max_error_rate" => ("ceiling", "between 0 and 100 %"),
            "guard.confidence" => ("confidence", "from 50 to below 100 % (e.g. 99)"),
            "guard.min_samples" => return problems.place(Some("min_samples".into()), field, message),
            "candidate" | "progress_deadline" | "max_unavailable" => {
                return problems.place(Some(field.into()), field, message);
            }
            _ => return problems.place(None, field, message),
        };
        problems.fields.insert(name.to_owned(), format!("{name}: {in_percent}"));
    }

    /// The plan checked by the domain against `release`: the request and its preview,
    /// or what is wrong beside its fields.
    fn check(&self, release: &Release, problems: &mut Problems) -> Option<(RampRequest, String)> {
        let (request, rows) = self.request(release.fleet.is_some(), problems);
        if problems.any() {
            return None;
        }
        match plan::build(release, request.clone(), super::now_ms()) {
            Ok(ramp) => Some((request, describe(&ramp))),
            Err(e) => {
                Self::place(problems, &e.field, &e.message, &rows);
                None
            }
        }
    }
}

/// The number typed in field `name`, `None` when blank; text that is none beside the
/// field.
fn typed<T: std::str::FromStr>(problems: &mut Problems, name: &str, text: &str) -> Option<T> {
    let text = text.trim();
    let parsed = text.parse().ok();
    if parsed.is_none() && !text.is_empty() {
        let what = if text.parse::<f64>().is_ok() { "a whole number" } else { "a number" };
        problems.fields.insert(name.to_owned(), format!("`{text}` is not {what}"));
    }
    parsed
}

/// A number typed in percent (`5`, `5 %`), divided by `scale`.
fn in_percent(problems: &mut Problems, name: &str, text: &str, scale: f64) -> Option<f64> {
    typed(problems, name, text.trim().trim_end_matches('%')).map(|n: f64| n / scale)
}

/// "30 min", "1 h", "90 s", "500 ms".
fn duration(ms: u64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}\u{a0}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}\u{a0}min", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}\u{a0}s", ms / 1_000),
        ms => format!("{ms}\u{a0}ms"),
    }
}

/// The plan in a sentence: "5 % for 30 min, then 25 % for 1 h, then 100 %; rolls back
/// if the candidate's error rate exceeds the baseline's by 1 point at 99 % confidence,
/// or exceeds 5 %."
pub(super) fn describe(ramp: &Ramp) -> String {
    let steps: Vec<String> = ramp
        .steps
        .iter()
        .map(|s| {
            let share = match s.nodes {
                Some(1) => "1 node".to_owned(),
                Some(n) => format!("{n} nodes"),
                None => percent(buckets_to_percent(s.buckets)),
            };
            s.hold_ms.map_or(share.clone(), |ms| format!("{share} for {}", duration(ms)))
        })
        .collect();
    let g = &ramp.guard;
    let points = number(g.max_error_rate_increase * 100.0);
    let plural = if points == "1" { "" } else { "s" };
    let ceiling = g.max_error_rate.map(|m| format!(", or exceeds {}", percent(m * 100.0))).unwrap_or_default();
    let at_most = ramp
        .max_unavailable
        .map(|n| format!(", at most {n} node{} moved at once", if n == 1 { "" } else { "s" }))
        .unwrap_or_default();
    let batches = ramp
        .progress_deadline_ms
        .map(|ms| format!(" (each batch within {}{at_most})", duration(ms)))
        .unwrap_or_default();
    format!(
        "{}{batches}; rolls back if the candidate's error rate exceeds the baseline's by {points} point{plural} at {} \
         confidence{ceiling}. A step passes once each side has {} outcomes.",
        steps.join(", then "),
        percent(g.confidence * 100.0),
        g.min_samples,
    )
}

/// The release as the domain holds it (what `plan::build` checks against).
fn release(state: &AppState, env: &EnvName, key: &str) -> Option<Release> {
    Some(state.releases.snapshots().get(env)?.snapshot.get(key)?.release().clone())
}

fn preview_markup(outcome: Result<&str, &Problems>) -> Markup {
    html! {
        p.preview id="plan-preview" aria-live="polite" {
            @match outcome {
                Ok(text) => { strong { "Plan: " } (text) }
                Err(problems) => {
                    strong { "Not a plan yet: " }
                    (problems.fields.values().chain(problems.general.iter()).next().map_or("", String::as_str))
                }
            }
        }
    }
}

/// The plan editor, for a release without an active ramp (on a fleet, steps of nodes or
/// percents and the batches' limits).
pub(super) fn editor(
    state: &AppState,
    env: &EnvName,
    view: &ReleaseView,
    session: &Session,
    typed: Option<(&PlanForm, &Problems)>,
) -> Markup {
    let active = view.ramp.as_ref().is_some_and(|r| !r.state.is_finished());
    let Some(release) = release(state, env, &view.key).filter(|_| !active) else {
        return html! {};
    };
    if view.versions.len() < 2 {
        return html! {};
    }
    let suggested = PlanForm::suggested(view);
    let blank = Problems::default();
    let (form, problems) = typed.unwrap_or((&suggested, &blank));
    let mut checked = Problems::default();
    let text = form.check(&release, &mut checked).map(|(_, text)| text);
    let action = format!("/console/envs/{env}/releases/{}/ramp", view.key);
    let rows = form.rows();
    let fleet = view.fleet.is_some();
    let (share, hint) = if fleet { ("nodes or %", "e.g. 1, 50 %") } else { ("percent", "e.g. 5") };
    let error = |name: &str| {
        problems.fields.get(name).map(|e| html! { p.error id=(format!("f-{}-error", name.replace('.', "-"))) { (e) } })
    };
    html! {
        section.panel aria-labelledby="plan-title" {
            h2 id="plan-title" { "Plan a ramp" }
            @if let Some(general) = &problems.general { p.error role="alert" { (general) } }
            form.plan method="post" action=(action) data-preview={ (action) "/preview" } novalidate {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf());
                // The form's first submit button is what Enter in a field presses: a
                // preview, never "Add a step" nor "Start ramp".
                button.implicit type="submit" name="go" value="preview" tabindex="-1" aria-hidden="true" { "Preview" }
                label for="f-candidate" { "Candidate" }
                select id="f-candidate" name="candidate" {
                    @for v in view.versions.iter().skip(1) { option value=(v) selected[*v == form.candidate] { (v) } }
                }
                (error("candidate").unwrap_or_default())
                fieldset {
                    legend { "Steps: " @if fleet { "nodes (or a percent of them)" } @else { "percent of units" } ", and how long to hold (blank on the last)" }
                    ol.steps {
                        @for row in 0..rows {
                            li {
                                @for (part, label, hint) in [("percent", share, hint), ("hold", "hold", "e.g. 30m, 1h")] {
                                    @let name = format!("step{row}.{part}");
                                    @let id = format!("f-step{row}-{part}");
                                    span {
                                        label for=(id) { "Step " (row + 1) " " (label) }
                                        input type="text" id=(id) name=(name) value=(form.step(row, part)) placeholder=(hint)
                                            inputmode=[(part == "percent" && !fleet).then_some("decimal")]
                                            aria-invalid=[problems.fields.get(&name).map(|_| "true")];
                                        (error(&name).unwrap_or_default())
                                    }
                                }
                            }
                        }
                    }
                    @if rows < MAX_ROWS {
                        button type="submit" name="go" value="add" formaction={ (action) "#f-step" (rows) "-percent" } { "Add a step" }
                    }
                }
                @if fleet {
                    fieldset {
                        legend { "Batches" }
                        div.pair {
                            (field("progress_deadline", "Each converges within (blank: 10m)", &form.deadline, problems, None))
                            (field("max_unavailable", "Most nodes moved at once (optional)", &form.max_unavailable, problems, None))
                        }
                    }
                }
                fieldset {
                    legend { "Guard: when the candidate rolls back" }
                    div.pair.guard {
                        (field("increase", "Most increase over the baseline (points of %)", &form.increase, problems, None))
                        (field("ceiling", "Highest error rate (%, optional)", &form.ceiling, problems, None))
                        (field("confidence", "Confidence (%)", &form.confidence, problems, None))
                        (field("min_samples", "Outcomes each side needs", &form.min_samples, problems, None))
                    }
                }
                (preview_markup(text.as_deref().ok_or(&checked)))
                div.buttons {
                    button type="submit" name="go" value="preview" { "Preview" }
                    button.primary type="submit" name="go" value="start" { "Start ramp" }
                }
            }
        }
    }
}

/// `POST …/ramp`: "Preview" shows the page again with the plan in words; "Start ramp"
/// starts it through `Ramps::start`.
pub(super) async fn start(req: &HttpRequest, state: &AppState, payload: web::Payload) -> Result<HttpResponse, Page> {
    let key = &super::key(req);
    let action = Action::check(req, payload, Write::SCOPES).await?;
    let form = &PlanForm::of_fields(&action.form).map_err(|e| form_error(req, e))?;
    let env = &action.env;
    let release = release(state, env, key).ok_or_else(|| Page::new(req, StoreError::NotFound(key.clone())))?;
    let mut problems = Problems::default();
    let mut status = StatusCode::OK;
    if let Some((request, _)) = form.check(&release, &mut problems)
        && form.go == "start"
    {
        match state.ramps.start(env, &action.session.actor(), key, request).await {
            Ok(_) => return Ok(see_other(&format!("/console/envs/{env}/releases/{key}?done=ramp-start"))),
            Err(error) => {
                status = match &error {
                    ReleaseError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                    _ => StatusCode::CONFLICT,
                };
                if let ReleaseError::Invalid { field, message } = &error {
                    let (_, rows) = form.request(release.fleet.is_some(), &mut Problems::default());
                    PlanForm::place(&mut problems, field, message, &rows);
                } else if let Some(other) = problems.release_error(error, &[]) {
                    return Err(Page::new(req, other));
                }
            }
        }
    } else if problems.any() && form.go == "start" {
        status = StatusCode::UNPROCESSABLE_ENTITY;
    }
    let view = state.releases.get(env, key).map_err(|e| Page::new(req, e))?;
    let typed = Typed { plan: Some((form, &problems)), ..Typed::default() };
    Ok(html_response(status, render(state, env, &view, &action.session, typed).await))
}

/// `POST …/ramp/preview`: the preview line alone, for the editor's script.
pub(super) async fn preview(req: &HttpRequest, state: &AppState, payload: web::Payload) -> Result<HttpResponse, Page> {
    let key = super::key(req);
    let action = Action::check(req, payload, Write::SCOPES).await?;
    let form = PlanForm::of_fields(&action.form).map_err(|e| form_error(req, e))?;
    let release = release(state, &action.env, &key).ok_or_else(|| Page::new(req, StoreError::NotFound(key.clone())))?;
    let mut problems = Problems::default();
    let text = form.check(&release, &mut problems).map(|(_, text)| text);
    Ok(html_response(StatusCode::OK, preview_markup(text.as_deref().ok_or(&problems))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_reads_as_a_sentence() {
        let release = Release::new("r", ["v1", "v2"]);
        let view = ReleaseView::new(&release, 1);
        let mut form = PlanForm::suggested(&view);
        form.ceiling = "5".into();
        let mut problems = Problems::default();
        let (_, text) = form.check(&release, &mut problems).expect("a plan");
        assert_eq!(
            text.replace('\u{a0}', " "),
            "5 % for 30 min, then 25 % for 1 h, then 100 %; rolls back if the candidate's error rate exceeds \
             the baseline's by 1 point at 99 % confidence, or exceeds 5 %. A step passes once each side has 500 outcomes."
        );

        // A blank second row: the domain's `steps[1]` is the form's third row.
        form.steps.insert("step1.percent".into(), String::new());
        form.steps.insert("step1.hold".into(), String::new());
        form.steps.insert("step2.percent".into(), "3".into());
        let mut problems = Problems::default();
        assert!(form.check(&release, &mut problems).is_none());
        assert!(problems.fields["step2.percent"].contains("percents must rise"), "{:?}", problems.fields);
        // The guard's errors speak the form's unit, percent, not the API's fractions.
        form.steps.insert("step2.percent".into(), "30".into());
        for (name, typed, error) in [
            ("increase", "100", "increase: from 0 to below 100 points (e.g. 1 for one point)"),
            ("ceiling", "150", "ceiling: between 0 and 100 %"),
            ("confidence", "0.99", "confidence: from 50 to below 100 % (e.g. 99)"),
        ] {
            let mut typo = form.clone();
            match name {
                "increase" => typo.increase = typed.into(),
                "ceiling" => typo.ceiling = typed.into(),
                _ => typo.confidence = typed.into(),
            }
            let mut problems = Problems::default();
            assert!(typo.check(&release, &mut problems).is_none(), "{name} {typed}");
            assert_eq!(problems.fields.get(name).map(String::as_str), Some(error), "{:?}", problems.fields);
        }
        // "Add a step" shows one more row than were sent, up to the domain's most steps.
        assert_eq!(form.rows(), 4);
        form.go = "add".into();
        form.steps.insert("step4.hold".into(), String::new());
        assert_eq!(form.rows(), 6);
        let percents = (0..MAX_ROWS).map(|r| (format!("step{r}.percent"), (r + 1).to_string()));
        let holds = (0..MAX_ROWS - 1).map(|r| (format!("step{r}.hold"), "1m".to_owned()));
        let mut full = PlanForm { steps: percents.chain(holds).collect(), ..form.clone() };
        assert_eq!(full.rows(), MAX_ROWS);
        assert!(full.check(&release, &mut Problems::default()).is_some(), "as many steps as the domain takes");
        full.steps.insert(format!("step{MAX_ROWS}.percent"), "100".into());
        let (request, _) = full.request(false, &mut Problems::default());
        assert_eq!(request.steps.len(), MAX_ROWS, "no row beyond the last shown is read");
        let mut more = request.clone();
        more.steps.push(StepRequest { percent: Some(100.0), nodes: None, hold: None });
        assert_eq!(plan::build(&release, more, 0).map_err(|e| e.field), Err("steps".to_owned()), "nor taken");
        form.go = String::new();
        form.confidence = "very".into();
        let mut problems = Problems::default();
        form.check(&release, &mut problems);
        assert!(problems.fields.contains_key("confidence"));
    }

    #[test]
    fn a_fleet_plan_takes_node_counts_percents_and_the_batches_limits() {
        let mut release = Release::new("r", ["v1", "v2"]);
        release.fleet = Some("web".into());
        let view = ReleaseView::new(&release, 1);
        let mut form = PlanForm::suggested(&view);
        let mut problems = Problems::default();
        let (request, text) = form.check(&release, &mut problems).expect("a plan");
        assert_eq!((request.steps[0].nodes, request.steps[1].percent), (Some(1), Some(50.0)));
        assert!(
            text.replace('\u{a0}', " ")
                .starts_with("1 node for 30 min, then 50 % for 1 h, then 100 % (each batch within 10 min);"),
            "{text}"
        );

        form.steps.insert("step1.percent".into(), "3".into());
        form.deadline = "5m".into();
        form.max_unavailable = "2".into();
        let (request, text) = form.check(&release, &mut Problems::default()).expect("a plan");
        assert_eq!((request.steps[1].nodes, request.max_unavailable), (Some(3), Some(2)));
        assert!(
            text.contains("then 3 nodes") && text.contains("within 5\u{a0}min, at most 2 nodes moved at once"),
            "{text}"
        );

        // Each mistake beside its field.
        for (name, typed, error) in [
            ("step1.percent", "1", "node counts must be above 0 and rise"),
            ("step1.percent", "2.5", "`2.5` is not a whole number"),
            ("max_unavailable", "0", "at least 1"),
            ("progress_deadline", "soon", "`soon` is not a duration"),
        ] {
            let mut typo = form.clone();
            match name {
                "max_unavailable" => typo.max_unavailable = typed.into(),
                "progress_deadline" => typo.deadline = typed.into(),
                _ => drop(typo.steps.insert(name.into(), typed.into())),
            }
            let mut problems = Problems::default();
            assert!(typo.check(&release, &mut problems).is_none(), "{name} {typed}");
            assert!(problems.fields.get(name).is_some_and(|e| e.contains(error)), "{name}: {:?}", problems.fields);
        }

        // The batches' fields are for fleets only, as in the API.
        release.fleet = None;
        let mut problems = Problems::default();
        assert!(form.check(&release, &mut problems).is_none());
        assert!(problems.fields["progress_deadline"].contains("for fleet releases"), "{:?}", problems.fields);
    }
}
