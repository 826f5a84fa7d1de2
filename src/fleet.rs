//! Rolling deployments over fleets (docs/model.md, "Rolling deployments: exact batches"):
//! nodes heartbeat; a fleet release's candidate share becomes an exact batch of live
//! nodes, chosen by ranking node ids by `XXH3_64(salt ":" node_id)`, and written into the
//! release as overrides so every evaluator (server, SDK, agent) agrees.

use crate::releases::{ReleaseError, Releases};
use crate::store::{Action, EnvName, NodeReport, StoreError, WriteMeta};
use cohort_sdk::{Context, Release, hash_unit};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The actor fleet reassignments are written as.
pub const FLEET_ACTOR: &str = "cohort:fleet";

/// A heartbeat as the API takes it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub healthy: bool,
    #[serde(default)]
    pub running: Option<String>,
    #[serde(default)]
    pub meta: serde_json::Value,
}

/// Fleet and node names: like release keys.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Live nodes ranked for `release`: ascending `XXH3_64(salt ":" node_id)`, ties by id.
pub fn ranking<'a>(release: &Release, nodes: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let salt = release.effective_salt();
    let mut ranked: Vec<(u64, &str)> = nodes.into_iter().map(|n| (hash_unit(salt, n), n)).collect();
    ranked.sort_unstable();
    ranked.into_iter().map(|(_, n)| n).collect()
}

/// `ceil(p·n/100)` nodes for a share of `buckets` (1000 = 1 %), in integers.
pub fn share_of(buckets: u32, n: usize) -> usize {
    (u64::from(buckets) * n as u64).div_ceil(100_000) as usize
}

/// How many of `n` live nodes the candidate gets: `fleet_nodes`, or `ceil(p·N/100)`.
pub fn batch_size(release: &Release, n: usize) -> usize {
    let Some(candidate) = release.versions.get(1) else { return 0 };
    let count = match release.fleet_nodes {
        Some(k) => k as usize,
        None => share_of(release.allocation.get(candidate).copied().unwrap_or(0), n),
    };
    count.min(n)
}

/// The overrides (node → version) that put the first `batch_size` ranked nodes on the
/// candidate and every other live node on the baseline.
pub fn assignment(release: &Release, live: &[NodeReport]) -> BTreeMap<String, String> {
    let (Some(baseline), Some(candidate)) = (release.versions.first(), release.versions.get(1)) else {
        return BTreeMap::new();
    };
    let ranked = ranking(release, live.iter().map(|n| n.node.as_str()));
    let size = batch_size(release, ranked.len());
    ranked
        .iter()
        .enumerate()
        .map(|(i, node)| ((*node).to_owned(), if i < size { candidate.clone() } else { baseline.clone() }))
        .collect()
}

/// A node in `GET …/fleets/{fleet}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    #[serde(flatten)]
    pub report: NodeReport,
    /// Release → the version this node should run.
    pub assigned: BTreeMap<String, String>,
}

/// Fleet operations.
#[derive(Clone)]
pub struct Fleets {
    releases: Releases,
    node_ttl: Duration,
}

impl Fleets {
    /// Fleets over `releases`; a node silent for `node_ttl` is gone.
    pub fn new(releases: Releases, node_ttl: Duration) -> Self {
        Fleets { releases, node_ttl }
    }

    fn since(&self) -> u64 {
        crate::ramp::now_ms().saturating_sub(self.node_ttl.as_millis() as u64)
    }

    /// The live nodes of `fleet`.
    pub async fn live_nodes(&self, env: &EnvName, fleet: &str) -> Result<Vec<NodeReport>, StoreError> {
        self.releases.store().fleet_nodes(env, fleet, self.since()).await
    }

    /// Records a heartbeat and answers the node's assignments.
    pub async fn heartbeat(
        &self,
        env: &EnvName,
        fleet: &str,
        node: &str,
        beat: Heartbeat,
    ) -> Result<BTreeMap<String, String>, ReleaseError> {
        if !valid_name(fleet) || !valid_name(node) {
            return Err(ReleaseError::Invalid {
                field: "path".into(),
                message: "fleet and node names are 1 to 128 of letters, digits, `-`, `_`, `.`".into(),
            });
        }
        if beat.running.as_ref().is_some_and(|r| r.len() > 64) {
            return Err(ReleaseError::Invalid { field: "running".into(), message: "at most 64 bytes".into() });
        }
        let report = NodeReport {
            node: node.to_owned(),
            healthy: beat.healthy,
            running: beat.running,
            meta: beat.meta,
            seen_ms: crate::ramp::now_ms(),
        };
        self.releases.store().heartbeat(env, fleet, &report).await?;
        Ok(self.assignments(env, fleet, node))
    }

    /// What `node` should run for each release of `fleet`: the same evaluation any SDK
    /// does with `node_id` in its context.
    pub fn assignments(&self, env: &EnvName, fleet: &str, node: &str) -> BTreeMap<String, String> {
        let Some(snapshot) = self.releases.snapshots().get(env) else { return BTreeMap::new() };
        snapshot
            .snapshot
            .releases()
            .filter(|r| r.release().fleet.as_deref() == Some(fleet))
            .filter_map(|r| {
                let ctx = Context::new().with(&r.release().unit, node);
                let decision = r.evaluate(snapshot.snapshot.kill_all(), &ctx);
                decision.version.map(|v| (r.key().to_owned(), v.to_owned()))
            })
            .collect()
    }

    /// Every live node with its assignments.
    pub async fn list(&self, env: &EnvName, fleet: &str) -> Result<Vec<NodeView>, ReleaseError> {
        let nodes = self.live_nodes(env, fleet).await?;
        Ok(nodes
            .into_iter()
            .map(|report| {
                let assigned = self.assignments(env, fleet, &report.node);
                NodeView { report, assigned }
            })
            .collect())
    }

    /// Rewrites the overrides of every fleet release of `env` whose assignment no longer
    /// matches the live nodes (a node joined or left, or the share changed). One
    /// compare-and-set each; a lost race is retried on the next pass.
    pub async fn reconcile(&self, env: &EnvName) -> Result<(), ReleaseError> {
        let Some(snapshot) = self.releases.snapshots().get(env) else { return Ok(()) };
        for compiled in snapshot.snapshot.iter() {
            let release = compiled.release();
            let Some(fleet) = release.fleet.clone() else { continue };
            let live = self.live_nodes(env, &fleet).await?;
            let desired = assignment(release, &live);
            if desired == release.overrides {
                continue;
            }
            let revision = snapshot.revision_of(compiled.key());
            let meta = WriteMeta::now(FLEET_ACTOR, Action::FleetAssign, Some(format!("{} live nodes", live.len())));
            let result = self
                .releases
                .modify(env, compiled.key(), Some(revision), meta, |r| {
                    r.overrides = assignment(r, &live);
                    Ok(())
                })
                .await;
            match result {
                Ok(_) | Err(ReleaseError::Store(StoreError::RevisionMismatch { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeReport {
        NodeReport { node: id.into(), healthy: true, running: None, meta: serde_json::Value::Null, seen_ms: 0 }
    }

    fn fleet_release(percent_buckets: u32) -> Release {
        let mut r = Release::new("deploy", ["v1", "v2"]).with_allocation("v2", percent_buckets);
        r.fleet = Some("web".into());
        r.unit = "node_id".into();
        r
    }

    fn on_candidate(release: &Release, nodes: &[NodeReport]) -> Vec<String> {
        assignment(release, nodes).into_iter().filter(|(_, v)| v == "v2").map(|(n, _)| n).collect()
    }

    #[test]
    fn batches_are_exact_and_monotonic() {
        let nodes: Vec<NodeReport> = (0..10).map(|i| node(&format!("web-{i}"))).collect();
        let mut previous: Vec<String> = Vec::new();
        for (buckets, expected) in [(1_000, 1), (10_000, 1), (11_000, 2), (50_000, 5), (99_000, 10), (100_000, 10)] {
            let now = on_candidate(&fleet_release(buckets), &nodes);
            assert_eq!(now.len(), expected, "{buckets}");
            assert!(previous.iter().all(|n| now.contains(n)), "no node moves back while rising");
            previous = now;
        }
        let mut exact = fleet_release(0);
        exact.fleet_nodes = Some(3);
        assert_eq!(on_candidate(&exact, &nodes).len(), 3);
    }

    #[test]
    fn a_leaving_node_is_replaced_by_the_next_in_the_ranking_and_nobody_else_moves() {
        let nodes: Vec<NodeReport> = (0..10).map(|i| node(&format!("web-{i}"))).collect();
        let release = {
            let mut r = fleet_release(0);
            r.fleet_nodes = Some(3);
            r
        };
        let before = assignment(&release, &nodes);
        let leaving = on_candidate(&release, &nodes)[0].clone();
        let rest: Vec<NodeReport> = nodes.iter().filter(|n| n.node != leaving).cloned().collect();
        let after = assignment(&release, &rest);
        let changed: Vec<&String> = after.iter().filter(|(n, v)| before.get(*n) != Some(v)).map(|(n, _)| n).collect();
        assert_eq!(changed.len(), 1, "exactly the replacement changes: {changed:?}");
        let ranked = ranking(&release, nodes.iter().map(|n| n.node.as_str()));
        assert_eq!(changed[0], ranked[3], "the replacement is the next in the ranking");
    }
}
