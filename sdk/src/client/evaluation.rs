//! What [`Client::version`](super::Client::version) answers: an owned copy of a
//! decision, so that making it neither allocates nor keeps the snapshot alive.

use crate::compile::MAX_VERSION_LEN;
use crate::decision::{Decision, ErrorCode, Reason};

/// One answer of [`Client::version`](super::Client::version), owning everything it
/// says. Version names are at most 64 bytes (checked when a release is compiled), so
/// the served one is copied inline: making an answer allocates nothing, holds no
/// snapshot and needs no second lookup to name the version.
#[derive(Clone, Copy)]
pub struct Evaluation<'a> {
    version: Served<'a>,
    revision: u64,
    /// Index of the version served in the release's versions (0 = baseline); `None`
    /// when the release is unknown and the caller's default applies.
    pub version_index: Option<usize>,
    /// Why this version.
    pub reason: Reason,
    /// The unit's bucket (`0..100000`), when the split decided.
    pub bucket: Option<u32>,
    /// Set when `reason` is [`Reason::Error`].
    pub error: Option<ErrorCode>,
}

#[derive(Clone, Copy)]
enum Served<'a> {
    Release(InlineName),
    Default(&'a str),
}

/// A version name copied out of the snapshot.
#[derive(Clone, Copy)]
struct InlineName {
    len: u8,
    bytes: [u8; MAX_VERSION_LEN],
}

impl InlineName {
    #[inline]
    fn new(name: &str) -> Option<Self> {
        let len = u8::try_from(name.len()).ok().filter(|&len| usize::from(len) <= MAX_VERSION_LEN)?;
        let mut bytes = [0; MAX_VERSION_LEN];
        copy_short(&mut bytes, name.as_bytes());
        Some(InlineName { len, bytes })
    }

    #[inline]
    fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).ok()
    }
}

/// Copies `src` (at most [`MAX_VERSION_LEN`] bytes) to the start of `dst`. Version
/// names are short (`v2`, `2024-06-canary`): two overlapping fixed-size moves copy
/// them inline, where a variable-length copy would be a call to `memcpy` — a tenth of
/// the cost of a whole decision.
#[inline(always)]
fn copy_short(dst: &mut [u8; MAX_VERSION_LEN], src: &[u8]) {
    let n = src.len();
    if n > 16 {
        dst[..n].copy_from_slice(src);
    } else if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..n].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..n].copy_from_slice(&src[n - 4..]);
    } else if n > 0 {
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
}

impl<'a> Evaluation<'a> {
    #[inline]
    pub(super) fn new(decision: Decision<'_>, default: &'a str, revision: u64) -> Self {
        let Decision { version, version_index, reason, bucket, error } = decision;
        let version = match version.and_then(InlineName::new) {
            Some(name) => Served::Release(name),
            None => Served::Default(default),
        };
        Evaluation { version, revision, version_index, reason, bucket, error }
    }

    /// The version to serve: the release's, or the caller's default when the release
    /// is unknown.
    #[inline]
    pub fn version(&self) -> &str {
        match &self.version {
            Served::Release(name) => name.as_str().unwrap_or_default(),
            Served::Default(default) => default,
        }
    }

    /// True when a candidate (not the baseline) is served.
    #[inline]
    pub fn is_candidate(&self) -> bool {
        matches!(self.version_index, Some(i) if i > 0)
    }

    /// The revision of the configuration this answer comes from.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The same answer as the evaluation core's [`Decision`] (version `None` when the
    /// release is unknown).
    pub fn decision(&self) -> Decision<'_> {
        Decision {
            version: match &self.version {
                Served::Release(name) => name.as_str(),
                Served::Default(_) => None,
            },
            version_index: self.version_index,
            reason: self.reason,
            bucket: self.bucket,
            error: self.error,
        }
    }
}

impl std::fmt::Debug for Evaluation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluation")
            .field("version", &self.version())
            .field("reason", &self.reason)
            .field("bucket", &self.bucket)
            .field("error", &self.error)
            .field("revision", &self.revision)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_every_length_are_copied_exactly() {
        let source: String = ('a'..='z').chain('A'..='Z').chain('0'..='9').cycle().take(MAX_VERSION_LEN + 1).collect();
        for n in 0..=MAX_VERSION_LEN {
            let name = &source[..n];
            let inline = InlineName::new(name).expect("fits");
            assert_eq!(inline.as_str(), Some(name), "length {n}");
            assert!(inline.bytes[n..].iter().all(|&b| b == 0), "nothing past the name at length {n}");
        }
        assert!(InlineName::new(&source).is_none(), "longer than the limit");
    }
}
