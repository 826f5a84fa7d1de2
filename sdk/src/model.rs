//! The release model as it is stored, streamed to SDKs and written through the API.
//! Plain data: [`crate::CompiledRelease::compile`] validates it and pre-computes
//! everything evaluation needs.

use crate::bucket::BUCKETS;
use crate::context::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The unit attribute when a release names none: the user id.
pub const DEFAULT_UNIT: &str = "targetingKey";

/// The only bucketing algorithm so far: XXH3-64 over `salt ":" unit`, 100000 buckets,
/// one slot per candidate. Recorded on every release so that a future algorithm can
/// never silently reassign existing releases' units.
pub const BUCKETING_XXH3_SLOTS_V1: &str = "xxh3-slots-v1";

/// One thing being rolled out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Release {
    /// Unique key in its environment, e.g. `checkout`.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$", min_length = 1, max_length = 128, example = "checkout")
    )]
    pub key: String,
    /// `versions[0]` is the baseline (stable); the others are candidates.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::versions))]
    pub versions: Vec<String>,
    /// The context attribute that is hashed (`targetingKey`, `node_id`, `tenant_id`, …).
    #[serde(default = "default_unit")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub unit: String,
    /// Hash salt; defaults to the key. Changing it reshuffles every unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// The bucketing algorithm ([`BUCKETING_XXH3_SLOTS_V1`]).
    #[serde(default = "default_bucketing")]
    pub bucketing: String,
    /// Candidate version → share in bucket units (`0..=100000/candidates`).
    #[serde(default)]
    pub allocation: BTreeMap<String, u32>,
    /// Unit value → version, checked before rules and the split.
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
    /// Targeting rules; the first whose conditions all hold serves its version.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Conditions a unit must meet to take part in the split; others get the baseline.
    #[serde(default)]
    pub audience: Vec<Condition>,
    /// Version → the value it stands for in application code (boolean, string, number
    /// or JSON object; one type per release; every version has one). Empty: each
    /// version's value is its name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::values))]
    pub values: BTreeMap<String, crate::value::JsonValue>,
    /// Kill switch: everyone gets the baseline.
    #[serde(default)]
    pub killed: bool,
    /// Why it was killed, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_reason: Option<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The automatic ramp, when one was started (evaluation ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<crate::ramp::Ramp>,
    /// For rolling deployments: the fleet whose nodes this release assigns. The server
    /// turns the candidate's share into exact batches of live nodes, written as
    /// `overrides` (node id → version); the hash split is off for fleet releases, so a
    /// node not yet assigned gets the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// For fleet releases: an exact number of nodes for the candidate (instead of a
    /// percent of the fleet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_nodes: Option<u32>,
}

fn default_unit() -> String {
    DEFAULT_UNIT.to_owned()
}

fn default_bucketing() -> String {
    BUCKETING_XXH3_SLOTS_V1.to_owned()
}

impl Release {
    /// A release with the given versions (the first is the baseline) and defaults for
    /// everything else.
    pub fn new<I, S>(key: &str, versions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Release {
            key: key.to_owned(),
            versions: versions.into_iter().map(Into::into).collect(),
            unit: default_unit(),
            salt: None,
            bucketing: default_bucketing(),
            allocation: BTreeMap::new(),
            overrides: BTreeMap::new(),
            rules: Vec::new(),
            audience: Vec::new(),
            values: BTreeMap::new(),
            killed: false,
            kill_reason: None,
            description: String::new(),
            ramp: None,
            fleet: None,
            fleet_nodes: None,
        }
    }

    /// Sets a candidate's allocation in bucket units.
    #[must_use]
    pub fn with_allocation(mut self, version: &str, buckets: u32) -> Self {
        self.allocation.insert(version.to_owned(), buckets);
        self
    }

    /// The salt in effect (the key unless one is set).
    pub fn effective_salt(&self) -> &str {
        self.salt.as_deref().unwrap_or(&self.key)
    }

    /// The baseline version.
    pub fn baseline(&self) -> Option<&str> {
        self.versions.first().map(String::as_str)
    }
}

/// A targeting rule: when every condition holds, serve `serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rule {
    /// All must hold; an empty list always holds.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 50))]
    pub when: Vec<Condition>,
    /// The version served.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::version_name))]
    pub serve: String,
}

/// `{attr, op, values}`. The op is kept as text in the model so that an SDK can still
/// read a snapshot written by a newer server; it is checked when the release is compiled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Condition {
    /// Context attribute name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128, example = "country"))]
    pub attr: String,
    /// One of [`Op`]'s names.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::op))]
    pub op: String,
    /// Operand(s).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::operands))]
    pub values: Vec<Value>,
}

/// Condition operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Attribute equals any value.
    In,
    /// Attribute equals none of the values.
    NotIn,
    /// Attribute equals the value.
    Eq,
    /// Attribute differs from the value.
    Neq,
    /// String attribute starts with any value.
    StartsWith,
    /// String attribute ends with any value.
    EndsWith,
    /// String attribute contains any value.
    Contains,
    /// Number below.
    Lt,
    /// Number at most.
    Lte,
    /// Number above.
    Gt,
    /// Number at least.
    Gte,
    /// Version equal (SemVer precedence).
    SemverEq,
    /// Version lower.
    SemverLt,
    /// Version lower or equal.
    SemverLte,
    /// Version higher.
    SemverGt,
    /// Version higher or equal.
    SemverGte,
}

impl Op {
    /// Every operator, in documentation order.
    pub const ALL: [Op; 16] = [
        Op::In,
        Op::NotIn,
        Op::Eq,
        Op::Neq,
        Op::StartsWith,
        Op::EndsWith,
        Op::Contains,
        Op::Lt,
        Op::Lte,
        Op::Gt,
        Op::Gte,
        Op::SemverEq,
        Op::SemverLt,
        Op::SemverLte,
        Op::SemverGt,
        Op::SemverGte,
    ];

    /// The wire name (`in`, `semver_gte`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Eq => "eq",
            Op::Neq => "neq",
            Op::StartsWith => "starts_with",
            Op::EndsWith => "ends_with",
            Op::Contains => "contains",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::SemverEq => "semver_eq",
            Op::SemverLt => "semver_lt",
            Op::SemverLte => "semver_lte",
            Op::SemverGt => "semver_gt",
            Op::SemverGte => "semver_gte",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Op {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Op::ALL.into_iter().find(|op| op.as_str() == s).ok_or(())
    }
}

/// Width of each candidate's slot in bucket units: `100000 / candidates`.
pub fn slot_width(candidates: usize) -> u32 {
    match u32::try_from(candidates) {
        Ok(0) | Err(_) => 0,
        Ok(n) => BUCKETS / n,
    }
}

/// Converts a percent with at most three decimals (`0..=100`) to bucket units.
/// Returns `None` for anything else (negative, above 100, NaN, too many decimals).
pub fn percent_to_buckets(percent: f64) -> Option<u32> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return None;
    }
    let scaled = percent * 1000.0;
    let rounded = scaled.round();
    // Percents arrive as decimal text; 12.345 * 1000 may be 12344.999999999998.
    if (scaled - rounded).abs() > 1e-6 {
        return None;
    }
    Some(rounded as u32)
}

/// Bucket units back to a percent (`5000` → `5.0`).
pub fn buckets_to_percent(buckets: u32) -> f64 {
    f64::from(buckets) / 1000.0
}

/// Bucket units as a person reads them: `60000` → `60 %`, `33333` → `33.333 %`.
pub fn format_buckets(buckets: u32) -> String {
    let whole = buckets / 1000;
    let fraction = buckets % 1000;
    if fraction == 0 {
        format!("{whole} %")
    } else {
        let digits = format!("{fraction:03}");
        format!("{whole}.{} %", digits.trim_end_matches('0'))
    }
}

/// The one message for a candidate's share above its slot (the allocation check and a
/// ramp plan's check both say it): `60 % exceeds the candidate's slot of 50 % (2
/// candidates share the units)`.
pub fn slot_exceeded(share: u32, candidates: usize) -> String {
    let width = slot_width(candidates);
    let split = if candidates == 1 {
        "the only candidate".to_owned()
    } else {
        format!("{candidates} candidates share the units")
    };
    format!("{} exceeds the candidate's slot of {} ({split})", format_buckets(share), format_buckets(width))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_read_as_percents() {
        assert_eq!(format_buckets(60_000), "60 %");
        assert_eq!(format_buckets(33_333), "33.333 %");
        assert_eq!(format_buckets(500), "0.5 %");
        assert_eq!(format_buckets(0), "0 %");
        assert_eq!(
            slot_exceeded(60_000, 2),
            "60 % exceeds the candidate's slot of 50 % (2 candidates share the units)"
        );
    }

    #[test]
    fn percents_convert_to_bucket_units_with_three_decimals() {
        assert_eq!(percent_to_buckets(5.0), Some(5_000));
        assert_eq!(percent_to_buckets(12.345), Some(12_345));
        assert_eq!(percent_to_buckets(0.001), Some(1));
        assert_eq!(percent_to_buckets(100.0), Some(100_000));
        assert_eq!(percent_to_buckets(0.0005), None);
        assert_eq!(percent_to_buckets(-1.0), None);
        assert_eq!(percent_to_buckets(100.001), None);
        assert_eq!(percent_to_buckets(f64::NAN), None);
    }

    #[test]
    fn ops_round_trip_through_their_names() {
        for op in Op::ALL {
            assert_eq!(op.as_str().parse::<Op>(), Ok(op));
        }
        assert!("regex".parse::<Op>().is_err());
    }
}
