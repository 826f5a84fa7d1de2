//! `/console/envs/{env}/changes`: what changed in the environment in the last hour, by
//! whom and why — its audit log, with allocations before and after in percents. The page
//! follows the environment's change stream like the overview.

use super::session::Viewer;
use super::{Page, ago, html_response, layout, now_ms, percent};
use crate::api::AppState;
use crate::api::auth::{Policy, Read};
use crate::store::{Action, AuditEntry, AuditQuery, EnvName};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use maud::{Markup, html};
use serde_json::Value;
use std::collections::BTreeSet;

/// How far back the page looks.
const HOUR_MS: u64 = 3_600_000;
/// Most entries it shows.
const MAX_ENTRIES: usize = 200;

/// A stored allocation (bucket units) in percent; 0 when absent.
fn share(release: Option<&Value>, version: &str) -> f64 {
    let buckets =
        release.and_then(|r| r.get("allocation")).and_then(|a| a.get(version)).and_then(Value::as_u64).unwrap_or(0);
    cohort_sdk::buckets_to_percent(buckets.min(u64::from(u32::MAX)) as u32)
}

fn field<'a>(state: Option<&'a Value>, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(state?, |v, key| v.get(key))
}

/// What an entry changed, as people read it: each candidate's share before → after in
/// percents, the kill switches, the ramp's step and state.
pub(super) fn change(entry: &AuditEntry) -> String {
    let (before, after) = (entry.before.as_ref(), entry.after.as_ref());
    let mut parts = Vec::new();
    match entry.action {
        Action::Create => parts.push("created".to_owned()),
        Action::Delete => parts.push("deleted".to_owned()),
        Action::KillAll => parts.push("every release serves its baseline".to_owned()),
        Action::UnkillAll => parts.push("kill-all lifted".to_owned()),
        _ => {}
    }
    let versions: BTreeSet<&str> = [before, after]
        .into_iter()
        .filter_map(|r| r?.get("allocation")?.as_object())
        .flat_map(|a| a.keys().map(String::as_str))
        .collect();
    for version in versions.into_iter().filter(|_| after.is_some()) {
        let (was, is) = (share(before, version), share(after, version));
        if before.is_none() {
            parts.push(format!("{version} {}", percent(is)));
        } else if was != is {
            parts.push(format!("{version} {} → {}", percent(was), percent(is)));
        }
    }
    let flag = |path: &[&str], on: &str, off: &str| {
        let (was, is) = (field(before, path).and_then(Value::as_bool), field(after, path).and_then(Value::as_bool));
        (before.is_some() && after.is_some() && was != is).then(|| if is == Some(true) { on } else { off }.to_owned())
    };
    parts.extend(flag(&["killed"], "killed: everyone gets the baseline", "unkilled"));
    let step = |r| field(r, &["ramp", "step"]).and_then(Value::as_u64);
    if let (Some(was), Some(is)) = (step(before), step(after))
        && was != is
    {
        parts.push(format!("ramp step {} → {}", was + 1, is + 1));
    }
    let state = |r| field(r, &["ramp", "state"]).and_then(Value::as_str);
    match (state(before), state(after)) {
        (Some(was), Some(is)) if was != is => parts.push(format!("ramp {was} → {is}")),
        (None, Some(is)) => parts.push(format!("ramp {is}")),
        _ => {}
    }
    if parts.is_empty() {
        parts.push(format!("revision {}", entry.revision));
    }
    parts.join("; ")
}

/// The entries of the last hour up to `now`, newest first.
async fn recent(state: &AppState, env: &EnvName, now: u64) -> Result<Vec<AuditEntry>, Page> {
    let query = AuditQuery { release: None, before: None, limit: MAX_ENTRIES };
    let mut entries = state.releases.audit(env, &query).await.map_err(Page::from)?;
    entries.retain(|e| e.time_ms + HOUR_MS >= now);
    Ok(entries)
}

fn changes_part(env: &EnvName, entries: &[AuditEntry], now: u64) -> Markup {
    html! {
        div id="live-part" {
            @if entries.is_empty() {
                p { "Nothing changed in " (env) " in the last hour." }
            } @else {
                table.history.changes {
                    thead { tr { th { "When" } th { "Who" } th { "What" } th { "Release" } th { "Change" } th { "Why" } } }
                    tbody {
                        @for e in entries {
                            tr data-action=(e.action.as_str()) {
                                td { (ago(e.time_ms, now)) " ago" }
                                td.actor { (e.actor) }
                                td { (e.action.as_str()) }
                                td { @if let Some(key) = &e.release {
                                    a href={ "/console/envs/" (env) "/releases/" (key) } { (key) }
                                } @else { "(environment)" } }
                                td.change { (change(e)) }
                                td.why { (e.reason.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
                @if entries.len() == MAX_ENTRIES {
                    p.meta { "The latest " (MAX_ENTRIES) " changes; " code { "cohort audit" } " pages through the rest." }
                }
            }
        }
    }
}

pub(super) async fn show(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let viewer = Viewer::check(req, Read::SCOPES)?;
    let (env, now) = (&viewer.env, now_ms());
    crate::api::served(state, env).map_err(|e| Page::new(req, e))?;
    let entries = recent(state, env, now).await?;
    let envs = viewer.session.environments(state);
    let main = html! {
        div data-live={ "/console/envs/" (env) "/live" } data-part={ "/console/envs/" (env) "/changes/part" } data-every="15000" {
            h1 { "Changes in " (env) " in the last hour" }
            (changes_part(env, &entries, now))
        }
    };
    let title = format!("Changes in {env}");
    Ok(html_response(StatusCode::OK, layout(&title, Some((&viewer.session, &envs)), Some(env.as_str()), main)))
}

pub(super) async fn part(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let viewer = Viewer::check(req, Read::SCOPES)?;
    let now = now_ms();
    let entries = recent(state, &viewer.env, now).await?;
    Ok(html_response(StatusCode::OK, changes_part(&viewer.env, &entries, now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(action: Action, before: Option<Value>, after: Option<Value>) -> AuditEntry {
        AuditEntry {
            revision: 7,
            time_ms: 0,
            actor: "alice".into(),
            action,
            release: Some("checkout".into()),
            before,
            after,
            reason: None,
        }
    }

    #[test]
    fn a_change_reads_in_percents_switches_and_steps() {
        let release =
            |v2: u32, killed: bool, ramp: Value| json!({"allocation": {"v2": v2}, "killed": killed, "ramp": ramp});
        let text = |e: &AuditEntry| change(e).replace('\u{a0}', " ");
        let allocation = entry(
            Action::Allocation,
            Some(release(10_000, false, Value::Null)),
            Some(release(30_000, false, Value::Null)),
        );
        assert_eq!(text(&allocation), "v2 10 % → 30 %");
        let kill =
            entry(Action::Kill, Some(release(10_000, false, Value::Null)), Some(release(10_000, true, Value::Null)));
        assert_eq!(text(&kill), "killed: everyone gets the baseline");
        let advance = entry(
            Action::RampAdvance,
            Some(release(1_000, false, json!({"step": 0, "state": "running"}))),
            Some(release(5_000, false, json!({"step": 1, "state": "running"}))),
        );
        assert_eq!(text(&advance), "v2 1 % → 5 %; ramp step 1 → 2");
        let start = entry(
            Action::RampStart,
            Some(release(0, false, Value::Null)),
            Some(release(1_000, false, json!({"step": 0, "state": "running"}))),
        );
        assert_eq!(text(&start), "v2 0 % → 1 %; ramp running");
        let created = entry(Action::Create, None, Some(release(12_500, false, Value::Null)));
        assert_eq!(text(&created), "created; v2 12.5 %");
        let mut kill_all = entry(Action::KillAll, Some(json!({"kill_all": false})), Some(json!({"kill_all": true})));
        kill_all.release = None;
        assert_eq!(text(&kill_all), "every release serves its baseline");
        assert_eq!(
            text(&entry(Action::Update, Some(release(0, false, Value::Null)), Some(release(0, false, Value::Null)))),
            "revision 7"
        );
    }
}
