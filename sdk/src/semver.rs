//! Application versions for the `semver_*` ops: parsed without allocating so that an
//! attribute can be compared at evaluation time.
//!
//! Syntax (lenient on purpose, apps report `v2.1` as often as `2.1.0`): optional `v`,
//! one to three numeric parts (missing parts are 0), optional `-pre.release`, optional
//! `+build` (ignored). Precedence is SemVer 2.0's.

use std::cmp::Ordering;

/// A parsed version borrowing its pre-release text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version<'a> {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
    /// Pre-release identifiers joined by `.`; empty for a release.
    pub pre: &'a str,
}

impl<'a> Version<'a> {
    /// Parses `text`, or `None` when it is not a version.
    pub fn parse(text: &'a str) -> Option<Version<'a>> {
        let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
        let text = match text.find('+') {
            Some(i) => {
                let build = &text[i + 1..];
                if !valid_identifiers(build) {
                    return None;
                }
                &text[..i]
            }
            None => text,
        };
        let (core, pre) = match text.find('-') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, ""),
        };
        if text.len() != core.len() && !valid_identifiers(pre) {
            return None;
        }
        let mut parts = [0u64; 3];
        for (i, part) in core.split('.').enumerate() {
            if i == 3 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts[i] = part.parse().ok()?;
        }
        Some(Version { major: parts[0], minor: parts[1], patch: parts[2], pre })
    }

    /// SemVer precedence (build metadata is ignored).
    pub fn precedence(&self, other: &Version<'_>) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| compare_pre(self.pre, other.pre))
    }
}

fn valid_identifiers(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

fn compare_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match compare_identifier(x, y) {
                Ordering::Equal => continue,
                other => return other,
            },
        }
    }
}

fn compare_identifier(x: &str, y: &str) -> Ordering {
    let numeric = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    match (numeric(x), numeric(y)) {
        // Compare digit strings by value without parsing, so any length works.
        (true, true) => {
            let x = x.trim_start_matches('0');
            let y = y.trim_start_matches('0');
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version<'_> {
        Version::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn precedence_follows_semver() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1",
            "v2",
        ];
        for pair in ordered.windows(2) {
            assert_eq!(v(pair[0]).precedence(&v(pair[1])), Ordering::Less, "{pair:?}");
        }
        assert_eq!(v("1.2").precedence(&v("1.2.0")), Ordering::Equal);
        assert_eq!(v("1.2.3+build.5").precedence(&v("1.2.3")), Ordering::Equal);
    }

    #[test]
    fn rejects_what_is_not_a_version() {
        for bad in ["", "v", "abc", "1.2.3.4", "1..2", "1.2.", "1.2.3-", "1.2.3-a..b", "1.2.3+", "-1"] {
            assert!(Version::parse(bad).is_none(), "{bad} should not parse");
        }
    }
}
