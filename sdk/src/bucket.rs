//! Bucketing: `XXH3_64(salt ":" unit) mod 100000`, the one hash every SDK must agree on.

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// Number of buckets a unit can land in; allocations are expressed in these units
/// (100000 buckets = 0.001 % steps).
pub const BUCKETS: u32 = 100_000;

/// Longest `salt ":" unit` hashed from a stack buffer; longer inputs use the streaming
/// hasher, which gives the same result without a heap allocation either.
const STACK_INPUT: usize = 256;

/// Bytes of `salt ":"` kept in a fixed template: the common case (short salt, short
/// unit) hashes with one small copy into a 64-byte stack buffer and one XXH3 call.
const TEMPLATE: usize = 64;

/// `salt ":"`, pre-laid for hashing units under it.
#[derive(Debug, Clone)]
pub(crate) struct SaltPrefix {
    template: [u8; TEMPLATE],
    full: Box<[u8]>,
}

impl SaltPrefix {
    pub(crate) fn new(salt: &str) -> Self {
        let mut full = Vec::with_capacity(salt.len() + 1);
        full.extend_from_slice(salt.as_bytes());
        full.push(b':');
        let mut template = [0u8; TEMPLATE];
        if full.len() <= TEMPLATE {
            template[..full.len()].copy_from_slice(&full);
        }
        SaltPrefix { template, full: full.into_boxed_slice() }
    }

    /// XXH3-64 of `salt ":" unit`.
    #[inline]
    pub(crate) fn hash(&self, unit: &[u8]) -> u64 {
        let prefix = self.full.len();
        let len = prefix + unit.len();
        if len <= TEMPLATE {
            let mut buf = self.template;
            buf[prefix..len].copy_from_slice(unit);
            xxh3_64(&buf[..len])
        } else {
            hash_prefixed(&self.full, unit)
        }
    }
}

/// Seedless XXH3-64 of `salt_prefix ++ unit`, where `salt_prefix` already ends in `:`.
#[inline]
pub(crate) fn hash_prefixed(salt_prefix: &[u8], unit: &[u8]) -> u64 {
    let len = salt_prefix.len() + unit.len();
    if len <= STACK_INPUT {
        let mut buf = [0u8; STACK_INPUT];
        buf[..salt_prefix.len()].copy_from_slice(salt_prefix);
        buf[salt_prefix.len()..len].copy_from_slice(unit);
        xxh3_64(&buf[..len])
    } else {
        let mut hasher = Xxh3::new();
        hasher.update(salt_prefix);
        hasher.update(unit);
        hasher.digest()
    }
}

/// `XXH3_64(utf8(salt) ++ b":" ++ utf8(unit))`.
pub fn hash_unit(salt: &str, unit: &str) -> u64 {
    if salt.len() + 1 + unit.len() <= STACK_INPUT {
        let mut buf = [0u8; STACK_INPUT];
        buf[..salt.len()].copy_from_slice(salt.as_bytes());
        buf[salt.len()] = b':';
        buf[salt.len() + 1..salt.len() + 1 + unit.len()].copy_from_slice(unit.as_bytes());
        return xxh3_64(&buf[..salt.len() + 1 + unit.len()]);
    }
    let mut hasher = Xxh3::new();
    hasher.update(salt.as_bytes());
    hasher.update(b":");
    hasher.update(unit.as_bytes());
    hasher.digest()
}

/// The bucket (`0..100000`) of `unit` under `salt`.
pub fn bucket(salt: &str, unit: &str) -> u32 {
    (hash_unit(salt, unit) % u64::from(BUCKETS)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_and_streaming_paths_agree() {
        let long = "x".repeat(1_000);
        let mid = "y".repeat(60);
        for salt in ["salt", "", mid.as_str(), long.as_str()] {
            let prefix = SaltPrefix::new(salt);
            for unit in ["", "u", mid.as_str(), long.as_str()] {
                let mut streaming = Xxh3::new();
                streaming.update(salt.as_bytes());
                streaming.update(b":");
                streaming.update(unit.as_bytes());
                let expected = streaming.digest();
                assert_eq!(prefix.hash(unit.as_bytes()), expected, "salt {} unit {}", salt.len(), unit.len());
                assert_eq!(hash_unit(salt, unit), expected);
            }
        }
    }
}
