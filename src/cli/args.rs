//! Parsers for the CLI's own argument syntax (`v2=10`, revisions), used as clap value parsers.
//!
//! Errors here surface through clap, so a malformed argument exits with the usage code
//! before any request is sent.

use std::fmt;

use thiserror::Error;

/// How many decimals of a percent the server accepts (its allocation is stored in
/// thousandths of a percent).
const MAX_PERCENT_DECIMALS: usize = 3;

/// One `VERSION=PERCENT` argument, e.g. `v2=10` or `v3=2.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct PercentArg {
    pub version: String,
    pub percent: f64,
}

impl fmt::Display for PercentArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.version, self.percent)
    }
}

/// Why a `VERSION=PERCENT` or revision argument was rejected.
#[derive(Debug, Error, PartialEq)]
pub enum ArgError {
    #[error("expected VERSION=PERCENT (e.g. v2=10), got {0:?}")]
    MissingEquals(String),
    #[error("missing version name before '=' in {0:?}")]
    EmptyVersion(String),
    #[error("{0:?} is not a percent: use a plain decimal between 0 and 100 with at most 3 decimals")]
    BadPercent(String),
    #[error("{0} is more than 100%")]
    PercentTooLarge(String),
    #[error("{0:?} is not a revision: expected a whole number such as 42")]
    BadRevision(String),
}

/// Parses `VERSION=PERCENT`.
///
/// The percent grammar is stricter than `f64::from_str` on purpose: `1e1`, `inf`, `-0`
/// or `2.0005` would parse as floats but are never what an operator meant, and the
/// server would reject them anyway with a less precise message.
pub fn parse_percent_arg(raw: &str) -> Result<PercentArg, ArgError> {
    let (version, percent) = raw.split_once('=').ok_or_else(|| ArgError::MissingEquals(raw.to_owned()))?;
    let version = version.trim();
    if version.is_empty() {
        return Err(ArgError::EmptyVersion(raw.to_owned()));
    }
    let percent_text = percent.trim();
    if !is_plain_decimal(percent_text) {
        return Err(ArgError::BadPercent(percent_text.to_owned()));
    }
    let percent: f64 = percent_text.parse().map_err(|_| ArgError::BadPercent(percent_text.to_owned()))?;
    if percent > 100.0 {
        return Err(ArgError::PercentTooLarge(percent_text.to_owned()));
    }
    Ok(PercentArg { version: version.to_owned(), percent })
}

/// `digits[.digits]` with at most [`MAX_PERCENT_DECIMALS`] decimals.
fn is_plain_decimal(text: &str) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(|f| digits(f) && f.len() <= MAX_PERCENT_DECIMALS)
}

/// Parses a revision as given to `--if-match`. Accepts the ETag form (`"42"`, `W/"42"`)
/// too, so a value copied from `curl -i` output works unchanged.
pub fn parse_revision(raw: &str) -> Result<u64, ArgError> {
    strip_etag(raw).parse().map_err(|_| ArgError::BadRevision(raw.to_owned()))
}

/// Removes the weak prefix and quotes of an entity tag, leaving its opaque value.
pub fn strip_etag(raw: &str) -> &str {
    let raw = raw.trim();
    let raw = raw.strip_prefix("W/").unwrap_or(raw);
    raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, f64) {
        let parsed = parse_percent_arg(raw).expect("should parse");
        (parsed.version, parsed.percent)
    }

    #[test]
    fn whole_and_fractional_percents_parse() {
        assert_eq!(ok("v2=10"), ("v2".to_owned(), 10.0));
        assert_eq!(ok("v3=2.5"), ("v3".to_owned(), 2.5));
        assert_eq!(ok("v3=0.125"), ("v3".to_owned(), 0.125));
        assert_eq!(ok("v2=0"), ("v2".to_owned(), 0.0));
        assert_eq!(ok("v2=100"), ("v2".to_owned(), 100.0));
    }

    #[test]
    fn a_version_without_percent_is_rejected() {
        assert_eq!(parse_percent_arg("v2"), Err(ArgError::MissingEquals("v2".to_owned())));
    }

    #[test]
    fn a_percent_without_version_is_rejected() {
        assert_eq!(parse_percent_arg("=5"), Err(ArgError::EmptyVersion("=5".to_owned())));
    }

    #[test]
    fn a_non_numeric_percent_is_rejected() {
        assert_eq!(parse_percent_arg("v2=abc"), Err(ArgError::BadPercent("abc".to_owned())));
    }

    #[test]
    fn float_syntax_that_is_not_a_plain_percent_is_rejected() {
        for raw in ["v2=", "v2=-1", "v2=1e1", "v2=inf", "v2=NaN", "v2=.5", "v2=5.", "v2=2.0005"] {
            assert!(matches!(parse_percent_arg(raw), Err(ArgError::BadPercent(_))), "{raw} should be rejected");
        }
    }

    #[test]
    fn more_than_everyone_is_rejected() {
        assert_eq!(parse_percent_arg("v2=100.001"), Err(ArgError::PercentTooLarge("100.001".to_owned())));
    }

    #[test]
    fn revisions_parse_bare_or_as_etags() {
        assert_eq!(parse_revision("42"), Ok(42));
        assert_eq!(parse_revision("\"42\""), Ok(42));
        assert_eq!(parse_revision("W/\"42\""), Ok(42));
        assert!(parse_revision("abc").is_err());
        assert!(parse_revision("-1").is_err());
    }
}

/// `--steps 1:10m,5:30m,100`: the ramp's steps as the API takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Steps(pub Vec<(f64, Option<String>)>);

/// Parses `percent[:hold]` items separated by commas; every item but the last needs a hold.
pub fn parse_steps(text: &str) -> Result<Steps, String> {
    let items: Vec<&str> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if items.is_empty() {
        return Err("give at least one step, e.g. 1:10m,5:30m,100".into());
    }
    let mut steps = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (percent, hold) = match item.split_once(':') {
            Some((p, h)) => (p, Some(h.to_owned())),
            None => (*item, None),
        };
        let percent: f64 = percent.parse().map_err(|_| format!("`{item}`: `{percent}` is not a percent"))?;
        if hold.is_none() && i + 1 < items.len() {
            return Err(format!("`{item}`: every step but the last needs a hold, e.g. {percent}:10m"));
        }
        if let Some(h) = &hold {
            humantime::parse_duration(h).map_err(|e| format!("`{item}`: hold `{h}`: {e}"))?;
        }
        steps.push((percent, hold));
    }
    Ok(Steps(steps))
}

#[cfg(test)]
mod steps_tests {
    use super::*;

    #[test]
    fn steps_parse_as_percent_and_hold() {
        let steps = parse_steps("1:10m, 5:30m,100").expect("valid");
        assert_eq!(steps.0, vec![(1.0, Some("10m".into())), (5.0, Some("30m".into())), (100.0, None)]);
        assert!(parse_steps("1,5").is_err());
        assert!(parse_steps("1:soon,5").is_err());
        assert!(parse_steps("x:1m,5").is_err());
        assert!(parse_steps("").is_err());
    }
}
