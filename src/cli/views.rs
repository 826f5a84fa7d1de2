//! The server's JSON responses as the CLI reads them.
//!
//! These are deliberately the CLI's own types rather than the server's: the client only
//! needs to display them, so every field it does not strictly need has a default and
//! unknown fields are ignored. A newer server that adds fields keeps working with an
//! older CLI.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// One release as returned by `GET /v1/envs/{env}/releases/{key}` and the write endpoints.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReleaseView {
    pub key: String,
    /// `false` when a kill is served by the answering instance only so far (202).
    #[serde(default = "persisted")]
    pub persisted: bool,
    /// The first version is the baseline; the others are candidates.
    pub versions: Vec<String>,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub salt: String,
    #[serde(default)]
    pub bucketing: String,
    /// Candidate → percent of units. The baseline gets whatever is left.
    #[serde(default)]
    pub allocation: BTreeMap<String, f64>,
    #[serde(default)]
    pub overrides: BTreeMap<String, Value>,
    #[serde(default)]
    pub rules: Vec<Value>,
    #[serde(default)]
    pub audience: Vec<Value>,
    #[serde(default)]
    pub killed: bool,
    #[serde(default)]
    pub kill_reason: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Version → typed value, when the release serves values.
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
    /// The automatic ramp, running or finished.
    #[serde(default)]
    pub ramp: Option<RampView>,
    /// Rolling deployments: the fleet this release assigns.
    #[serde(default)]
    pub fleet: Option<String>,
    pub revision: u64,
}

/// A release's ramp as the API shows it (steps in bucket units, 1000 = 1 %).
///
/// Steps are numbered from 0 everywhere: `step` here, the audit log's `ramp.step`, the
/// `cohort_ramp_step` metric and every line the CLI prints (`step 1 of 0–3`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RampView {
    pub candidate: String,
    #[serde(default)]
    pub steps: Vec<RampStepView>,
    pub state: String,
    #[serde(default)]
    pub step: usize,
    #[serde(default)]
    pub step_started_ms: u64,
    #[serde(default)]
    pub extensions: u32,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub guard: Value,
}

impl RampView {
    /// Running or paused: the ramp still owns the candidate's share.
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "running" | "paused")
    }

    /// When the current hold ends while running (the server's rule: the hold, once per
    /// extension), `None` on a last step without a hold or when not running.
    pub fn next_transition_ms(&self) -> Option<u64> {
        if self.state != "running" {
            return None;
        }
        let hold = self.steps.get(self.step)?.hold_ms?;
        Some(self.step_started_ms.saturating_add(hold.saturating_mul(u64::from(self.extensions) + 1)))
    }
}

/// One ramp step.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RampStepView {
    #[serde(default)]
    pub buckets: u32,
    #[serde(default)]
    pub nodes: Option<u32>,
    #[serde(default)]
    pub hold_ms: Option<u64>,
}

impl ReleaseView {
    /// The version everyone gets when the release is killed.
    pub fn baseline(&self) -> Option<&str> {
        self.versions.first().map(String::as_str)
    }

    /// The percent currently allocated to `version` (0 when absent, as the server treats it).
    pub fn percent_of(&self, version: &str) -> f64 {
        self.allocation.get(version).copied().unwrap_or(0.0)
    }

    /// Allocation entries in the release's version order rather than the map's
    /// alphabetical order, so `v2, v10` reads as the operator declared it. Entries for
    /// versions the release does not list (which a well-behaved server never sends) come
    /// last rather than being hidden.
    pub fn allocation_in_order(&self) -> Vec<(&str, f64)> {
        let mut ordered: Vec<(&str, f64)> =
            self.versions.iter().filter_map(|v| self.allocation.get(v).map(|p| (v.as_str(), *p))).collect();
        ordered
            .extend(self.allocation.iter().filter(|(v, _)| !self.versions.contains(v)).map(|(v, p)| (v.as_str(), *p)));
        ordered
    }
}

/// `GET /v1/envs/{env}/releases`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReleaseList {
    pub environment: String,
    pub revision: u64,
    #[serde(default)]
    pub kill_all: bool,
    #[serde(default)]
    pub kill_reason: Option<String>,
    #[serde(default)]
    pub releases: Vec<ReleaseView>,
}

/// `POST /v1/envs/{env}/kill-all` and `/unkill-all`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EnvironmentState {
    pub environment: String,
    pub revision: u64,
    pub kill_all: bool,
    #[serde(default)]
    pub kill_reason: Option<String>,
    /// `false` when only the answering instance serves it so far (202).
    #[serde(default = "persisted")]
    pub persisted: bool,
}

fn persisted() -> bool {
    true
}

/// `GET /v1/envs/{env}/audit`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuditPage {
    #[serde(default)]
    pub entries: Vec<AuditEntryView>,
    #[serde(default)]
    pub next_before: Option<u64>,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuditEntryView {
    pub revision: u64,
    pub time_ms: u64,
    pub actor: String,
    pub action: String,
    #[serde(default)]
    pub release: Option<String>,
    #[serde(default)]
    pub before: Option<Value>,
    #[serde(default)]
    pub after: Option<Value>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /v1/envs/{env}/reach`: acknowledging SDKs (live ones only) and delivered-only
/// stream subscribers (OFREP, raw SSE), which cannot acknowledge.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Reach {
    pub revision: u64,
    pub acknowledged: usize,
    pub acknowledging_total: usize,
    #[serde(default)]
    pub pending: Vec<PendingSdk>,
    #[serde(default)]
    pub delivered_only: usize,
    #[serde(default)]
    pub delivered_only_total: usize,
}

impl Reach {
    /// Every live acknowledging SDK has applied the revision (true when there is none).
    pub fn confirmed(&self) -> bool {
        self.pending.is_empty()
    }

    /// Nothing more to wait for: confirmed, and written to every delivered-only
    /// subscriber too.
    pub fn settled(&self) -> bool {
        self.confirmed() && self.delivered_only >= self.delivered_only_total
    }
}

/// A live SDK that has not applied the revision yet.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PendingSdk {
    pub sdk_id: String,
    pub revision: u64,
    #[serde(default)]
    pub address: String,
    /// When it was last heard from, milliseconds since the epoch.
    #[serde(default)]
    pub seen_ms: u64,
}
