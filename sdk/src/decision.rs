//! What an evaluation answers.

use serde::Serialize;

/// Why a version was chosen (OpenFeature's reason vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The consistent-hash split decided.
    Split,
    /// An override or a rule decided.
    TargetingMatch,
    /// The unit is outside the release's audience: baseline.
    Default,
    /// A kill switch (release or environment) is on: baseline.
    Disabled,
    /// The release could not be evaluated as asked; see [`ErrorCode`].
    Error,
    /// The SDK has heard nothing from the service for longer than its `max_staleness`:
    /// baseline, until it hears again. Only SDKs produce it, never the server.
    Stale,
}

impl Reason {
    /// The wire name (`SPLIT`, `TARGETING_MATCH`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Split => "SPLIT",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
            Reason::Stale => "STALE",
        }
    }
}

/// What went wrong when the reason is [`Reason::Error`] (OpenFeature's error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No release with that key: the caller's default applies.
    FlagNotFound,
    /// The context lacks the release's unit attribute: baseline.
    TargetingKeyMissing,
}

impl ErrorCode {
    /// The wire name (`FLAG_NOT_FOUND`, `TARGETING_KEY_MISSING`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
        }
    }
}

/// The answer for one release and one context. Borrows the version name from the
/// snapshot, so producing it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The version served; `None` only when the release was not found (use your default).
    pub version: Option<&'a str>,
    /// Index of the version in the release's `versions` (0 = baseline).
    pub version_index: Option<usize>,
    /// Why.
    pub reason: Reason,
    /// The unit's bucket (`0..100000`), present when the split decided.
    pub bucket: Option<u32>,
    /// Set when `reason` is [`Reason::Error`].
    pub error: Option<ErrorCode>,
}

impl<'a> Decision<'a> {
    pub(crate) const NOT_FOUND: Decision<'static> = Decision {
        version: None,
        version_index: None,
        reason: Reason::Error,
        bucket: None,
        error: Some(ErrorCode::FlagNotFound),
    };

    /// The version, or `default` when the release was not found.
    pub fn version_or(&self, default: &'a str) -> &'a str {
        self.version.unwrap_or(default)
    }

    /// True when a candidate (not the baseline) is served.
    pub fn is_candidate(&self) -> bool {
        matches!(self.version_index, Some(i) if i > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_serialise_as_their_wire_names() {
        for reason in
            [Reason::Split, Reason::TargetingMatch, Reason::Default, Reason::Disabled, Reason::Error, Reason::Stale]
        {
            let json = serde_json::to_string(&reason).expect("serialises");
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
        assert_eq!(Reason::Stale.as_str(), "STALE");
    }
}
