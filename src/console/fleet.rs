//! `/console/envs/{env}/fleet`: the nodes of each fleet — the version each runs and
//! should run, its health, when it last reported — and the current batch of each
//! rolling deployment, read through the same `Fleets` operations as the fleet API.
//! Heartbeats are not changes, so besides following the change stream (reassignments
//! are) the page asks again every few seconds.

use super::session::{Fields, Viewer, query_error};
use super::{Page, ago, html_response, layout, now_ms, percent};
use crate::api::AppState;
use crate::api::auth::{Policy, Read};
use crate::fleet::NodeView;
use crate::releases::ReleaseView;
use crate::store::EnvName;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use maud::{Markup, html};
use std::collections::BTreeSet;

/// One fleet: its releases and live nodes.
struct Fleet {
    name: String,
    releases: Vec<ReleaseView>,
    nodes: Vec<NodeView>,
}

/// The fleets the environment's releases deploy to, and `extra`, with their live nodes.
async fn fleets(state: &AppState, env: &EnvName, extra: Option<&str>) -> Result<Vec<Fleet>, Page> {
    let (_, releases) = state.releases.list(env).map_err(Page::from)?;
    let mut names: BTreeSet<String> = releases.iter().filter_map(|r| r.fleet.clone()).collect();
    names.extend(extra.filter(|f| crate::fleet::valid_name(f)).map(str::to_owned));
    let mut fleets = Vec::new();
    for name in names {
        let nodes = state.ramps.fleets().list(env, &name).await.map_err(Page::from)?;
        let releases = releases.iter().filter(|r| r.fleet.as_deref() == Some(name.as_str())).cloned().collect();
        fleets.push(Fleet { name, releases, nodes });
    }
    Ok(fleets)
}

/// The version a release's ramp (or allocation) moves nodes to: its candidate.
fn candidate(release: &ReleaseView) -> Option<&str> {
    release.ramp.as_ref().map(|r| r.candidate.as_str()).or_else(|| release.versions.get(1).map(String::as_str))
}

/// "deploy: v2 on 2 of 5 nodes (step 2 of 4 at 40 %, running); batch: web-1, web-4 —
/// 1 runs v2 healthy".
fn batch_line(env: &EnvName, release: &ReleaseView, nodes: &[NodeView]) -> Markup {
    let candidate = candidate(release).unwrap_or_default();
    let batch: Vec<&NodeView> =
        nodes.iter().filter(|n| n.assigned.get(&release.key).map(String::as_str) == Some(candidate)).collect();
    let done = batch.iter().filter(|n| n.report.healthy && n.report.running.as_deref() == Some(candidate)).count();
    let share = release.allocation.get(candidate).copied().unwrap_or(0.0);
    let ramp = release.ramp.as_ref().map(|r| {
        format!(" (ramp step {} of {} at {}, {})", r.step + 1, r.steps.len(), percent(share), r.state.as_str())
    });
    html! {
        li data-release=(release.key) {
            a href={ "/console/envs/" (env) "/releases/" (release.key) } { (release.key) } ": "
            strong { (candidate) " on " (batch.len()) " of " (nodes.len()) " node" @if nodes.len() != 1 { "s" } }
            (ramp.unwrap_or_else(|| match release.fleet_nodes {
                Some(k) => format!(" ({k} node{} asked)", if k == 1 { "" } else { "s" }),
                None => format!(" ({})", percent(share)),
            }))
            @if release.killed { " — killed: every node gets " (release.versions.first().map_or("", String::as_str)) }
            @if !batch.is_empty() {
                br; "Current batch: " (batch.iter().map(|n| n.report.node.as_str()).collect::<Vec<_>>().join(", "))
                " — " (done) " of " (batch.len()) " run " (candidate) " healthy"
            }
        }
    }
}

fn fleet_section(env: &EnvName, fleet: &Fleet, now: u64) -> Markup {
    let in_batch = |node: &NodeView| {
        fleet
            .releases
            .iter()
            .any(|r| candidate(r).is_some_and(|c| node.assigned.get(&r.key).map(String::as_str) == Some(c)))
    };
    html! {
        section.panel.fleet data-fleet=(fleet.name) aria-labelledby={ "fleet-" (fleet.name) } {
            h2 id={ "fleet-" (fleet.name) } { "Fleet " (fleet.name) }
            @if fleet.releases.is_empty() {
                p.meta { "No release deploys to this fleet." }
            } @else {
                ul.batches { @for release in &fleet.releases { (batch_line(env, release, &fleet.nodes)) } }
            }
            @if fleet.nodes.is_empty() {
                p { "No live node: none has reported recently." }
            } @else {
                table.history.nodes {
                    thead { tr { th { "Node" } th { "Runs" } th { "Should run" } th { "Health" } th { "Last seen" } th { "Batch" } } }
                    tbody {
                        @for node in &fleet.nodes {
                            @let report = &node.report;
                            tr data-node=(report.node) {
                                td.node { (report.node) }
                                td.runs data-label="runs" { (report.running.as_deref().unwrap_or("(not said)")) }
                                td data-label="should run" { (node.assigned.iter().map(|(r, v)| format!("{r} → {v}")).collect::<Vec<_>>().join(", ")) }
                                td.health { span class=(if report.healthy { "badge live" } else { "badge killed" }) {
                                    (if report.healthy { "healthy" } else { "unhealthy" }) } }
                                td data-label="last seen" { (ago(report.seen_ms, now)) " ago" }
                                td { @if in_batch(node) { "in the current batch" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn fleets_part(env: &EnvName, fleets: &[Fleet]) -> Markup {
    let now = now_ms();
    html! {
        div id="live-part" {
            @if fleets.is_empty() {
                p { "No release in " (env) " deploys to a fleet yet." }
            }
            @for fleet in fleets { (fleet_section(env, fleet, now)) }
        }
    }
}

/// The query's `fleet`: a fleet to show besides those the releases deploy to (one whose
/// nodes report before any release names it).
fn extra(req: &HttpRequest) -> Result<Option<String>, HttpResponse> {
    Fields::query(req).optional("fleet").map_err(|e| query_error(e).error_response())
}

pub(super) async fn show(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let viewer = Viewer::check(req, Read::SCOPES)?;
    let query = match extra(req) {
        Ok(query) => query,
        Err(response) => return Ok(response),
    };
    let env = &viewer.env;
    let extra = query.as_deref().filter(|f| crate::fleet::valid_name(f));
    let fleets = fleets(state, env, extra).await?;
    let envs = viewer.session.environments(state);
    let part = match extra {
        Some(f) => format!("/console/envs/{env}/fleet/part?fleet={f}"),
        None => format!("/console/envs/{env}/fleet/part"),
    };
    let main = html! {
        div data-live={ "/console/envs/" (env) "/live" } data-part=(part) data-every="5000" {
            h1 { "Fleets in " (env) }
            form.showfleet method="get" action={ "/console/envs/" (env) "/fleet" } {
                label for="fleet-name" { "Show a fleet by name" }
                input type="text" id="fleet-name" name="fleet" value=(extra.unwrap_or_default()) autocomplete="off";
                button type="submit" { "Show" }
            }
            (fleets_part(env, &fleets))
        }
    };
    let title = format!("Fleets in {env}");
    Ok(html_response(StatusCode::OK, layout(&title, Some((&viewer.session, &envs)), Some(env.as_str()), main)))
}

pub(super) async fn part(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, Page> {
    let viewer = Viewer::check(req, Read::SCOPES)?;
    let query = match extra(req) {
        Ok(query) => query,
        Err(response) => return Ok(response),
    };
    let fleets = fleets(state, &viewer.env, query.as_deref()).await?;
    Ok(html_response(StatusCode::OK, fleets_part(&viewer.env, &fleets)))
}
