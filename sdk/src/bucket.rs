//! Bucketing: `XXH3_64(salt ":" unit) mod 100000`, the one hash every SDK must agree on.

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// Number of buckets a unit can land in; allocations are expressed in these units
/// (100000 buckets = 0.001 % steps).
pub const BUCKETS: u32 = 100_000;

/// Longest `salt ":" unit` hashed from a stack buffer; longer inputs use the streaming
/// hasher, which gives the same result without a heap allocation either.
const STACK_INPUT: usize = 256;

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
        for unit in ["", "u", long.as_str()] {
            let prefix = b"salt:";
            assert_eq!(hash_prefixed(prefix, unit.as_bytes()), hash_unit("salt", unit));
        }
    }
}
