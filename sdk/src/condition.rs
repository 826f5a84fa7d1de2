//! Conditions compiled once on write: operands parsed and type-checked, so matching
//! at evaluation time is a borrow-and-compare.

use crate::context::{Context, Value};
use crate::error::CompileError;
use crate::model::{Condition, Op};
use crate::semver::Version;
use std::cmp::Ordering;

/// A condition ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct CompiledCondition {
    attr: Box<str>,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    In(Box<[Value]>),
    NotIn(Box<[Value]>),
    StartsWith(Box<[Box<str>]>),
    EndsWith(Box<[Box<str>]>),
    Contains(Box<[Box<str>]>),
    Number(fn(Ordering) -> bool, f64),
    Semver(fn(Ordering) -> bool, SemverOperand),
}

#[derive(Debug, Clone)]
struct SemverOperand {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Box<str>,
}

impl SemverOperand {
    fn as_version(&self) -> Version<'_> {
        Version { major: self.major, minor: self.minor, patch: self.patch, pre: &self.pre }
    }
}

/// Upper bounds that keep one release's evaluation cost bounded.
const MAX_VALUES: usize = 1_000;
const MAX_ATTR_LEN: usize = 128;

impl CompiledCondition {
    pub(crate) fn compile(cond: &Condition, field: &str) -> Result<Self, CompileError> {
        let op: Op = cond.op.parse().map_err(|()| {
            let known: Vec<&str> = Op::ALL.iter().map(|op| op.as_str()).collect();
            CompileError::new(
                format!("{field}.op"),
                format!("unknown op `{}`; expected one of {}", cond.op, known.join(", ")),
            )
        })?;
        if cond.attr.is_empty() || cond.attr.len() > MAX_ATTR_LEN {
            return Err(CompileError::new(
                format!("{field}.attr"),
                format!("attribute name must be 1 to {MAX_ATTR_LEN} bytes"),
            ));
        }
        let values_field = format!("{field}.values");
        let values = &cond.values;
        if values.is_empty() || values.len() > MAX_VALUES {
            return Err(CompileError::new(values_field, format!("`{op}` needs 1 to {MAX_VALUES} values")));
        }
        let single = || {
            if values.len() == 1 {
                Ok(&values[0])
            } else {
                Err(CompileError::new(
                    values_field.clone(),
                    format!("`{op}` takes exactly one value, got {}", values.len()),
                ))
            }
        };
        let scalars = || -> Result<Box<[Value]>, CompileError> {
            if values.iter().any(|v| matches!(v, Value::Other)) {
                return Err(CompileError::new(
                    values_field.clone(),
                    format!("`{op}` values must be strings, numbers or booleans"),
                ));
            }
            Ok(values.clone().into_boxed_slice())
        };
        let strings = || -> Result<Box<[Box<str>]>, CompileError> {
            values
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.as_str().into()),
                    _ => Err(CompileError::new(values_field.clone(), format!("`{op}` values must be strings"))),
                })
                .collect()
        };
        let number = || -> Result<f64, CompileError> {
            single()?.as_f64().ok_or_else(|| CompileError::new(values_field.clone(), format!("`{op}` needs a number")))
        };
        let semver = || -> Result<SemverOperand, CompileError> {
            let text = single()?.as_str().unwrap_or_default();
            let v = Version::parse(text).ok_or_else(|| {
                CompileError::new(
                    values_field.clone(),
                    format!("`{op}` needs a version like \"1.2.3\" or \"2.0.0-rc.1\""),
                )
            })?;
            Ok(SemverOperand { major: v.major, minor: v.minor, patch: v.patch, pre: v.pre.into() })
        };
        let matcher = match op {
            Op::In => Matcher::In(scalars()?),
            Op::NotIn => Matcher::NotIn(scalars()?),
            Op::Eq => {
                single()?;
                Matcher::In(scalars()?)
            }
            Op::Neq => {
                single()?;
                Matcher::NotIn(scalars()?)
            }
            Op::StartsWith => Matcher::StartsWith(strings()?),
            Op::EndsWith => Matcher::EndsWith(strings()?),
            Op::Contains => Matcher::Contains(strings()?),
            Op::Lt => Matcher::Number(Ordering::is_lt, number()?),
            Op::Lte => Matcher::Number(Ordering::is_le, number()?),
            Op::Gt => Matcher::Number(Ordering::is_gt, number()?),
            Op::Gte => Matcher::Number(Ordering::is_ge, number()?),
            Op::SemverEq => Matcher::Semver(Ordering::is_eq, semver()?),
            Op::SemverLt => Matcher::Semver(Ordering::is_lt, semver()?),
            Op::SemverLte => Matcher::Semver(Ordering::is_le, semver()?),
            Op::SemverGt => Matcher::Semver(Ordering::is_gt, semver()?),
            Op::SemverGte => Matcher::Semver(Ordering::is_ge, semver()?),
        };
        Ok(CompiledCondition { attr: cond.attr.as_str().into(), matcher })
    }

    /// Whether the condition holds. A missing (or `null`) attribute never matches, not
    /// even a negated op: a rule cannot target what the application did not say.
    #[inline]
    pub(crate) fn holds(&self, ctx: &Context) -> bool {
        let attr = match ctx.get(&self.attr) {
            None | Some(Value::Other) => return false,
            Some(v) => v,
        };
        match &self.matcher {
            Matcher::In(values) => values.iter().any(|v| equals(attr, v)),
            Matcher::NotIn(values) => !values.iter().any(|v| equals(attr, v)),
            Matcher::StartsWith(values) => attr.as_str().is_some_and(|s| values.iter().any(|v| s.starts_with(&**v))),
            Matcher::EndsWith(values) => attr.as_str().is_some_and(|s| values.iter().any(|v| s.ends_with(&**v))),
            Matcher::Contains(values) => attr.as_str().is_some_and(|s| values.iter().any(|v| s.contains(&**v))),
            Matcher::Number(accept, operand) => {
                let number = match attr {
                    Value::Str(s) => parse_decimal(s),
                    other => other.as_f64(),
                };
                number.and_then(|n| n.partial_cmp(operand)).is_some_and(accept)
            }
            Matcher::Semver(accept, operand) => {
                attr.as_str().and_then(Version::parse).is_some_and(|v| accept(v.precedence(&operand.as_version())))
            }
        }
    }
}

/// A string counts as a number only in the plain form `-?digits(.digits)?`, so that
/// every SDK's number parser agrees (no exponents, `inf`, spaces or `+`).
fn parse_decimal(s: &str) -> Option<f64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    let plain = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if plain(int) && plain(frac) { s.parse().ok() } else { None }
}

/// Type-strict equality: strings by bytes, numbers by value, booleans by value.
#[inline]
fn equals(attr: &Value, operand: &Value) -> bool {
    match (attr, operand) {
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        (a, b) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}
