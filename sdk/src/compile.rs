//! A release validated and pre-computed for evaluation ("compile on write, evaluate on
//! read"): salt bytes ready, slots laid out, versions resolved to indices, conditions
//! parsed. Evaluation borrows everything and allocates nothing.

use crate::bucket::{BUCKETS, SaltPrefix};
use crate::condition::CompiledCondition;
use crate::context::{Context, Value};
use crate::decision::{Decision, ErrorCode, Reason};
use crate::error::CompileError;
use crate::model::{BUCKETING_XXH3_SLOTS_V1, Release, slot_width};
use crate::value::{JsonValue, ValueType, compile_values};
use std::collections::HashMap;

const MAX_KEY_LEN: usize = 128;
const MAX_VERSIONS: usize = 32;
pub(crate) const MAX_VERSION_LEN: usize = 64;
const MAX_SALT_LEN: usize = 256;
const MAX_UNIT_LEN: usize = 128;
const MAX_OVERRIDES: usize = 10_000;
const MAX_OVERRIDE_KEY_LEN: usize = 256;
const MAX_RULES: usize = 100;
const MAX_CONDITIONS: usize = 50;
const MAX_TEXT_LEN: usize = 1_024;

/// A release ready to evaluate. Keeps its source [`Release`] for serialisation.
#[derive(Debug, Clone)]
pub struct CompiledRelease {
    release: Release,
    /// `salt ":"`, laid out so hashing is one small copy plus one XXH3.
    salt_prefix: SaltPrefix,
    /// Candidate `i` (version index `i + 1`) owns `[starts[i], ends[i])`.
    slots: Box<[(u32, u32)]>,
    overrides: HashMap<Box<str>, usize>,
    rules: Box<[(Box<[CompiledCondition]>, usize)]>,
    audience: Box<[CompiledCondition]>,
    /// Each version's value by version index, built here so evaluation only borrows.
    values: Box<[JsonValue]>,
    value_type: ValueType,
}

/// Names: keys, versions. ASCII letters, digits, `-`, `_`, `.`; starting alphanumeric.
pub(crate) fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl CompiledRelease {
    /// Validates `release` and pre-computes what evaluation needs. Every rule of the
    /// model is checked here, so a release that compiles always evaluates.
    pub fn compile(release: Release) -> Result<Self, CompileError> {
        if !valid_name(&release.key, MAX_KEY_LEN) {
            return Err(CompileError::new(
                "key",
                format!(
                    "`{}` is not a valid key: 1 to {MAX_KEY_LEN} characters of letters, digits, `-`, `_`, `.`, starting with a letter or digit",
                    release.key
                ),
            ));
        }
        if release.bucketing != BUCKETING_XXH3_SLOTS_V1 {
            return Err(CompileError::new(
                "bucketing",
                format!(
                    "unknown bucketing algorithm `{}`; this version knows `{BUCKETING_XXH3_SLOTS_V1}`",
                    release.bucketing
                ),
            ));
        }
        if release.versions.len() < 2 || release.versions.len() > MAX_VERSIONS {
            return Err(CompileError::new(
                "versions",
                format!(
                    "a release needs 2 to {MAX_VERSIONS} versions (the first is the baseline), got {}",
                    release.versions.len()
                ),
            ));
        }
        for (i, v) in release.versions.iter().enumerate() {
            if !valid_name(v, MAX_VERSION_LEN) {
                return Err(CompileError::new(
                    format!("versions[{i}]"),
                    format!("`{v}` is not a valid version name: 1 to {MAX_VERSION_LEN} letters, digits, `-`, `_`, `.`"),
                ));
            }
            if release.versions[..i].contains(v) {
                return Err(CompileError::new(format!("versions[{i}]"), format!("version `{v}` is listed twice")));
            }
        }
        if release.unit.is_empty() || release.unit.len() > MAX_UNIT_LEN {
            return Err(CompileError::new("unit", format!("unit must be 1 to {MAX_UNIT_LEN} bytes")));
        }
        if release.salt.as_ref().is_some_and(|s| s.len() > MAX_SALT_LEN) {
            return Err(CompileError::new("salt", format!("salt may be at most {MAX_SALT_LEN} bytes")));
        }
        if release.description.len() > MAX_TEXT_LEN
            || release.kill_reason.as_ref().is_some_and(|r| r.len() > MAX_TEXT_LEN)
        {
            return Err(CompileError::new(
                "description",
                format!("description and kill_reason may be at most {MAX_TEXT_LEN} bytes"),
            ));
        }
        let index_of = |version: &str, field: String| {
            release.versions.iter().position(|v| v == version).ok_or_else(|| {
                CompileError::new(
                    field,
                    format!("`{version}` is not one of the release's versions {:?}", release.versions),
                )
            })
        };

        let candidates = release.versions.len() - 1;
        let width = slot_width(candidates);
        let mut slots = vec![(0u32, 0u32); candidates];
        for (version, &share) in &release.allocation {
            let field = format!("allocation.{version}");
            let index = index_of(version, field.clone())?;
            if index == 0 {
                return Err(CompileError::new(
                    field,
                    format!("`{version}` is the baseline; it gets whatever the candidates do not"),
                ));
            }
            if share > width {
                return Err(CompileError::new(field, crate::model::slot_exceeded(share, candidates)));
            }
            let start = (index as u32 - 1) * width;
            // Fleet releases assign exact batches through overrides, never by hash.
            let share = if release.fleet.is_some() { 0 } else { share };
            slots[index - 1] = (start, start + share);
        }

        if release.overrides.len() > MAX_OVERRIDES {
            return Err(CompileError::new("overrides", format!("at most {MAX_OVERRIDES} overrides")));
        }
        let mut overrides = HashMap::with_capacity(release.overrides.len());
        for (unit, version) in &release.overrides {
            let field = format!("overrides.{unit}");
            if unit.len() > MAX_OVERRIDE_KEY_LEN {
                return Err(CompileError::new(
                    field,
                    format!("unit values may be at most {MAX_OVERRIDE_KEY_LEN} bytes"),
                ));
            }
            overrides.insert(unit.as_str().into(), index_of(version, field)?);
        }

        if release.rules.len() > MAX_RULES {
            return Err(CompileError::new("rules", format!("at most {MAX_RULES} rules")));
        }
        let mut rules = Vec::with_capacity(release.rules.len());
        for (i, rule) in release.rules.iter().enumerate() {
            let field = format!("rules[{i}]");
            let serve = index_of(&rule.serve, format!("{field}.serve"))?;
            if rule.when.len() > MAX_CONDITIONS {
                return Err(CompileError::new(format!("{field}.when"), format!("at most {MAX_CONDITIONS} conditions")));
            }
            let when = rule
                .when
                .iter()
                .enumerate()
                .map(|(j, c)| CompiledCondition::compile(c, &format!("{field}.when[{j}]")))
                .collect::<Result<Box<[_]>, _>>()?;
            rules.push((when, serve));
        }
        if release.audience.len() > MAX_CONDITIONS {
            return Err(CompileError::new("audience", format!("at most {MAX_CONDITIONS} conditions")));
        }
        let audience = release
            .audience
            .iter()
            .enumerate()
            .map(|(j, c)| CompiledCondition::compile(c, &format!("audience[{j}]")))
            .collect::<Result<Box<[_]>, _>>()?;
        let (value_type, values) = compile_values(&release)?;

        Ok(CompiledRelease {
            salt_prefix: SaltPrefix::new(release.effective_salt()),
            slots: slots.into_boxed_slice(),
            overrides,
            rules: rules.into_boxed_slice(),
            audience,
            values,
            value_type,
            release,
        })
    }

    /// The source release.
    pub fn release(&self) -> &Release {
        &self.release
    }

    /// Gives the source release back.
    pub fn into_release(self) -> Release {
        self.release
    }

    /// The release's key.
    pub fn key(&self) -> &str {
        &self.release.key
    }

    /// The value of version `index` (0 = baseline): its declared value, or its name
    /// when the release declares none. `None` only for an index out of range.
    #[inline]
    pub fn value(&self, index: usize) -> Option<&JsonValue> {
        self.values.get(index)
    }

    /// The type all of this release's values share ([`ValueType::String`] without
    /// `values`).
    pub fn value_type(&self) -> ValueType {
        self.value_type
    }

    /// The bucket of a unit value under this release's salt.
    pub fn bucket_of(&self, unit: &str) -> u32 {
        (self.salt_prefix.hash(unit.as_bytes()) % u64::from(BUCKETS)) as u32
    }

    /// Evaluates the release for `ctx` (docs/evaluation.md); `kill_all` is the
    /// environment's kill switch. Allocates nothing.
    pub fn evaluate(&self, kill_all: bool, ctx: &Context) -> Decision<'_> {
        if kill_all || self.release.killed {
            return self.decide(0, Reason::Disabled, None, None);
        }
        let mut digits = [0u8; 20];
        let unit = ctx.get(&self.release.unit).and_then(|v| unit_text(v, &mut digits));
        if let Some(unit) = unit
            && !self.overrides.is_empty()
            && let Some(&index) = self.overrides.get(unit)
        {
            return self.decide(index, Reason::TargetingMatch, None, None);
        }
        for (when, serve) in &*self.rules {
            if when.iter().all(|c| c.holds(ctx)) {
                return self.decide(*serve, Reason::TargetingMatch, None, None);
            }
        }
        if !self.audience.iter().all(|c| c.holds(ctx)) {
            return self.decide(0, Reason::Default, None, None);
        }
        let Some(unit) = unit else {
            return self.decide(0, Reason::Error, None, Some(ErrorCode::TargetingKeyMissing));
        };
        let bucket = (self.salt_prefix.hash(unit.as_bytes()) % u64::from(BUCKETS)) as u32;
        let index = self.slots.iter().position(|&(start, end)| (start..end).contains(&bucket)).map_or(0, |i| i + 1);
        self.decide(index, Reason::Split, Some(bucket), None)
    }

    #[inline]
    fn decide(&self, index: usize, reason: Reason, bucket: Option<u32>, error: Option<ErrorCode>) -> Decision<'_> {
        Decision { version: Some(&self.release.versions[index]), version_index: Some(index), reason, bucket, error }
    }
}

/// The text a unit value is hashed as: strings as they are, integers as decimal digits
/// (written into `buf`, no allocation), booleans as `true`/`false`. Anything else is
/// not a unit.
#[inline]
fn unit_text<'a>(value: &'a Value, buf: &'a mut [u8; 20]) -> Option<&'a str> {
    match value {
        Value::Str(s) => Some(s),
        Value::Int(i) => Some(format_integer(i.unsigned_abs(), *i < 0, buf)),
        Value::UInt(u) => Some(format_integer(*u, false, buf)),
        Value::Bool(true) => Some("true"),
        Value::Bool(false) => Some("false"),
        Value::Float(_) | Value::Other => None,
    }
}

fn format_integer(magnitude: u64, negative: bool, buf: &mut [u8; 20]) -> &str {
    let mut n = magnitude;
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        pos -= 1;
        buf[pos] = b'-';
    }
    // Only ASCII digits and '-' were written.
    std::str::from_utf8(&buf[pos..]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_format_like_display() {
        for n in [0, 7, -7, 42, i64::MAX, i64::MIN, 1_000_000] {
            let mut buf = [0u8; 20];
            assert_eq!(format_integer(n.unsigned_abs(), n < 0, &mut buf), n.to_string());
        }
        let mut buf = [0u8; 20];
        assert_eq!(format_integer(u64::MAX, false, &mut buf), u64::MAX.to_string());
    }

    #[test]
    fn allocation_beyond_the_slot_is_refused() {
        let r = Release::new("k", ["v1", "v2", "v3"]).with_allocation("v2", 50_001);
        let err = CompiledRelease::compile(r).unwrap_err();
        assert_eq!(err.field, "allocation.v2");
    }

    #[test]
    fn unknown_bucketing_is_refused() {
        let mut r = Release::new("k", ["v1", "v2"]);
        r.bucketing = "md5-v0".into();
        assert_eq!(CompiledRelease::compile(r).unwrap_err().field, "bucketing");
    }

    #[test]
    fn unknown_op_is_refused_on_compile() {
        let mut r = Release::new("k", ["v1", "v2"]);
        r.audience.push(crate::Condition { attr: "a".into(), op: "regex".into(), values: vec!["x".into()] });
        let err = CompiledRelease::compile(r).unwrap_err();
        assert_eq!(err.field, "audience[0].op");
        assert!(err.message.contains("unknown op `regex`"));
    }
}
