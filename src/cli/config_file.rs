//! The configuration file `cohort export` writes and `cohort apply` reads: environments,
//! their releases and the plans of their active ramps, as pretty-printed JSON.
//!
//! Format `cohort-config` version 1 (documented in README, "Backups and configuration as
//! code"). Every map is keyed and written in sorted order and every field in a fixed
//! order, so two exports of the same state are byte-identical and a change shows as a
//! small diff in git. Nothing in it is a secret (no tokens, no revocations) and nothing
//! in it is liveness data (outcomes, heartbeats, acknowledgements, guard figures).

use std::collections::BTreeMap;

use cohort_sdk::{Condition, Rule, buckets_to_percent, percent_to_buckets};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `format` field every file carries.
pub const FORMAT: &str = "cohort-config";
/// The only format version this client reads and writes.
pub const VERSION: u32 = 1;
/// The unit a release hashes when none is given (fleet releases: `node_id`).
const DEFAULT_UNIT: &str = "targetingKey";
const FLEET_UNIT: &str = "node_id";

/// A whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// Environment name → its configuration.
    pub environments: BTreeMap<String, EnvSpec>,
}

/// One environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// The environment kill switch.
    #[serde(default, skip_serializing_if = "is_false")]
    pub kill_all: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_reason: Option<String>,
    /// Release key → definition.
    #[serde(default)]
    pub releases: BTreeMap<String, ReleaseSpec>,
}

/// One release's full definition: what `PUT /v1/envs/{env}/releases/{key}` takes, plus
/// its kill state and the plan of its active ramp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSpec {
    /// Baseline first.
    pub versions: Vec<String>,
    /// Default `targetingKey` (`node_id` for a fleet release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Default: the release key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Default: `xxh3-slots-v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucketing: Option<String>,
    /// Candidate → percent of units (at most 3 decimals); absent candidates get 0.
    #[serde(default)]
    pub allocation: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<Condition>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub killed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_reason: Option<String>,
    /// The plan of a running or paused ramp, in the shape `POST …/ramp` takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampPlan>,
}

/// A ramp as a plan (never its live state: step reached, guard figures).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampPlan {
    pub candidate: String,
    pub steps: Vec<RampStepPlan>,
    pub guard: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<String>,
}

/// One ramp step: a percent (or a node count for fleets) and a hold such as `10m`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampStepPlan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A release as `GET /v1/envs/{env}/releases` shows it, read with the same typed rules
/// and conditions as the file so the two compare field by field.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerRelease {
    pub key: String,
    pub versions: Vec<String>,
    pub unit: String,
    pub salt: String,
    pub bucketing: String,
    #[serde(default)]
    pub allocation: BTreeMap<String, f64>,
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub audience: Vec<Condition>,
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
    #[serde(default)]
    pub killed: bool,
    #[serde(default)]
    pub kill_reason: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub ramp: Option<cohort_sdk::Ramp>,
    #[serde(default)]
    pub fleet: Option<String>,
    #[serde(default)]
    pub fleet_nodes: Option<u32>,
    pub revision: u64,
}

/// `GET /v1/envs/{env}/releases`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerEnv {
    pub environment: String,
    #[serde(default)]
    pub kill_all: bool,
    #[serde(default)]
    pub kill_reason: Option<String>,
    #[serde(default)]
    pub releases: Vec<ServerRelease>,
}

impl ServerRelease {
    /// The running or paused ramp, if any (finished ramps are history, not config).
    pub fn active_ramp(&self) -> Option<&cohort_sdk::Ramp> {
        self.ramp.as_ref().filter(|r| !r.state.is_finished())
    }

    /// The release as the file writes it: every default spelled out, allocation without
    /// zero shares, a fleet's overrides left out (cohort sets them from the fleet).
    pub fn to_spec(&self) -> ReleaseSpec {
        ReleaseSpec {
            versions: self.versions.clone(),
            unit: Some(self.unit.clone()),
            salt: Some(self.salt.clone()),
            bucketing: Some(self.bucketing.clone()),
            allocation: self.allocation.iter().filter(|(_, p)| **p != 0.0).map(|(v, p)| (v.clone(), *p)).collect(),
            overrides: if self.fleet.is_some() { BTreeMap::new() } else { self.overrides.clone() },
            rules: self.rules.clone(),
            audience: self.audience.clone(),
            values: self.values.clone(),
            description: self.description.clone(),
            fleet: self.fleet.clone(),
            fleet_nodes: self.fleet_nodes,
            killed: self.killed,
            kill_reason: if self.killed { self.kill_reason.clone() } else { None },
            ramp: self.active_ramp().map(ramp_plan),
        }
    }
}

fn ramp_plan(ramp: &cohort_sdk::Ramp) -> RampPlan {
    let hold = |ms: u64| humantime::format_duration(std::time::Duration::from_millis(ms)).to_string();
    RampPlan {
        candidate: ramp.candidate.clone(),
        steps: ramp
            .steps
            .iter()
            .map(|s| RampStepPlan {
                percent: if s.nodes.is_some() { None } else { Some(buckets_to_percent(s.buckets)) },
                nodes: s.nodes,
                hold: s.hold_ms.map(hold),
            })
            .collect(),
        guard: serde_json::to_value(&ramp.guard).unwrap_or(Value::Null),
        progress_deadline: ramp.progress_deadline_ms.map(hold),
    }
}

/// A field of a release that differs between the server and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// `rules`, `allocation.v2`, …
    pub field: String,
    /// What the server has (`None`: nothing yet).
    pub from: Option<String>,
    /// What the file asks for.
    pub to: String,
}

/// One comparable form of a definition: defaults applied, allocation in buckets with
/// zero shares dropped (an invalid percent is kept as text, so the server refuses it).
struct Effective {
    fields: Vec<(&'static str, Value)>,
    allocation: BTreeMap<String, Result<u32, String>>,
}

fn effective(key: &str, spec: &ReleaseSpec) -> Effective {
    let fleet = spec.fleet.is_some();
    let unit = spec.unit.clone().unwrap_or_else(|| if fleet { FLEET_UNIT } else { DEFAULT_UNIT }.to_owned());
    let fields = vec![
        ("versions", json(&spec.versions)),
        ("unit", Value::String(unit)),
        ("salt", Value::String(spec.salt.clone().unwrap_or_else(|| key.to_owned()))),
        (
            "bucketing",
            Value::String(spec.bucketing.clone().unwrap_or_else(|| cohort_sdk::BUCKETING_XXH3_SLOTS_V1.to_owned())),
        ),
        ("overrides", if fleet { Value::Null } else { json(&spec.overrides) }),
        ("rules", json(&spec.rules)),
        ("audience", json(&spec.audience)),
        ("values", json(&spec.values)),
        ("description", Value::String(spec.description.clone())),
        ("fleet", json(&spec.fleet)),
        ("fleet_nodes", json(&spec.fleet_nodes)),
    ];
    let allocation = spec
        .allocation
        .iter()
        .map(|(v, &p)| (v.clone(), percent_to_buckets(p).ok_or_else(|| p.to_string())))
        .filter(|(_, b)| *b != Ok(0))
        .collect();
    Effective { fields, allocation }
}

/// Serializing these types cannot fail (string keys, finite numbers from JSON).
fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn show_percent(share: Option<&Result<u32, String>>) -> String {
    match share {
        None => "0%".to_owned(),
        Some(Ok(b)) => format!("{}%", buckets_to_percent(*b)),
        Some(Err(raw)) => format!("{raw}%"),
    }
}

/// The definition fields (everything a replace writes) that differ, `from` the server's
/// release (`None`: it does not exist yet) `to` the file's. Kill state and ramps are not
/// definition fields: [`super::apply`] handles them apart.
pub fn definition_changes(key: &str, from: Option<&ReleaseSpec>, to: &ReleaseSpec) -> Vec<FieldChange> {
    let new = effective(key, to);
    let old = from.map(|f| effective(key, f));
    let mut changes = Vec::new();
    for (i, (field, value)) in new.fields.iter().enumerate() {
        let before = old.as_ref().map(|o| &o.fields[i].1);
        if before == Some(value) || (before.is_none() && is_empty(value)) {
            continue;
        }
        changes.push(FieldChange {
            field: (*field).to_owned(),
            from: before.map(Value::to_string),
            to: value.to_string(),
        });
    }
    let empty = BTreeMap::new();
    let old_alloc = old.as_ref().map_or(&empty, |o| &o.allocation);
    let versions: std::collections::BTreeSet<&String> = new.allocation.keys().chain(old_alloc.keys()).collect();
    for version in versions {
        let (before, after) = (old_alloc.get(version), new.allocation.get(version));
        if before != after {
            changes.push(FieldChange {
                field: format!("allocation.{version}"),
                from: old.as_ref().map(|_| show_percent(before)),
                to: show_percent(after),
            });
        }
    }
    changes
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The body of `POST …/releases` / `PUT …/releases/{key}` for `spec`. The allocation is
/// always sent (a replace without it would keep the server's).
pub fn release_body(key: &str, spec: &ReleaseSpec) -> Value {
    let mut body = serde_json::json!({
        "key": key,
        "versions": spec.versions,
        "allocation": spec.allocation,
        "rules": spec.rules,
        "audience": spec.audience,
        "values": spec.values,
        "description": spec.description,
    });
    let fields = [
        ("unit", spec.unit.as_ref().map(|u| Value::String(u.clone()))),
        ("salt", spec.salt.as_ref().map(|s| Value::String(s.clone()))),
        ("bucketing", spec.bucketing.as_ref().map(|b| Value::String(b.clone()))),
        ("fleet", spec.fleet.as_ref().map(|f| Value::String(f.clone()))),
        ("fleet_nodes", spec.fleet_nodes.map(Value::from)),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    if spec.fleet.is_none() {
        body["overrides"] = serde_json::json!(spec.overrides);
    }
    body
}

/// The body that creates `spec` serving only its baseline (no allocation, rules,
/// overrides or audience): the first step of restoring a killed release, so it never
/// serves a candidate before its kill is written.
pub fn baseline_only_body(key: &str, spec: &ReleaseSpec) -> Value {
    let mut body = release_body(key, spec);
    body["allocation"] = serde_json::json!({});
    body["rules"] = serde_json::json!([]);
    body["audience"] = serde_json::json!([]);
    if spec.fleet.is_none() {
        body["overrides"] = serde_json::json!({});
    }
    if let Some(map) = body.as_object_mut() {
        map.remove("fleet_nodes");
    }
    body
}

/// Reads a file's text, checking its format and version.
pub fn parse(text: &str) -> Result<ConfigFile, String> {
    let file: ConfigFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if file.format != FORMAT {
        return Err(format!("`format` is {:?}, expected {FORMAT:?}", file.format));
    }
    if file.version != VERSION {
        return Err(format!("format version {} is not supported (this cohort reads version {VERSION})", file.version));
    }
    Ok(file)
}

/// The file's text: pretty JSON ending in a newline.
pub fn render(file: &ConfigFile) -> String {
    let mut text = serde_json::to_string_pretty(file).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: Value) -> ReleaseSpec {
        serde_json::from_value(json).expect("spec")
    }

    #[test]
    fn defaults_compare_equal_to_their_spelled_out_values() {
        let short = spec(serde_json::json!({"versions": ["v1", "v2"], "allocation": {"v2": 5}}));
        let long = spec(serde_json::json!({"versions": ["v1", "v2"], "unit": "targetingKey", "salt": "checkout",
            "bucketing": "xxh3-slots-v1", "allocation": {"v2": 5.0, "v1": 0}}));
        assert_eq!(definition_changes("checkout", Some(&long), &short), vec![]);
    }

    #[test]
    fn allocation_changes_are_shown_in_percent_per_candidate() {
        let old = spec(serde_json::json!({"versions": ["v1", "v2", "v3"], "allocation": {"v2": 5}}));
        let new = spec(serde_json::json!({"versions": ["v1", "v2", "v3"], "allocation": {"v2": 10, "v3": 0.5},
            "description": "x"}));
        let changes = definition_changes("k", Some(&old), &new);
        let shown: Vec<String> =
            changes.iter().map(|c| format!("{}: {} → {}", c.field, c.from.clone().unwrap_or_default(), c.to)).collect();
        assert_eq!(shown, ["description: \"\" → \"x\"", "allocation.v2: 5% → 10%", "allocation.v3: 0% → 0.5%"]);
    }

    #[test]
    fn a_file_with_another_format_or_version_is_refused() {
        assert!(parse(r#"{"format": "cohort-config", "version": 2, "environments": {}}"#).is_err());
        assert!(parse(r#"{"format": "other", "version": 1, "environments": {}}"#).is_err());
        assert!(parse(r#"{"format": "cohort-config", "version": 1, "environments": {}, "x": 1}"#).is_err());
        assert!(parse(r#"{"format": "cohort-config", "version": 1, "environments": {}}"#).is_ok());
    }
}
