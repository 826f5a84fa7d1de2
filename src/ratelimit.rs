//! Rate limits per route class, per token subject and per client address.
//!
//! The algorithm is governor's (GCRA: each key holds one "theoretical arrival time",
//! updated with a compare-and-swap), so nothing here counts requests by hand. What is
//! ours is where the keys live: governor's own keyed stores (a `DashMap` or a `HashMap`)
//! grow with every new key until a periodic `retain_recent` sweep, so a flood of new
//! addresses grows memory between sweeps and needs a task to sweep. [`BoundedStore`]
//! keeps the states in a `quick_cache` of `rate_limit.max_keys` entries instead: memory
//! is bounded at every moment and nothing needs sweeping. A key evicted to make room
//! (the least used go first) starts again with a full burst, which only ever errs on
//! the side of letting a request through.
//!
//! The HTTP side (which class a route is, where the subject and address come from, the
//! 429 answer) is `api::limit`; this module only decides.

use crate::config::RateLimitSettings;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A class of routes with its own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `…/evaluate` and OFREP evaluation.
    Evaluate,
    /// Following changes: `…/stream`, `…/snapshot`, `…/ack`, OFREP events.
    Stream,
    /// Outcome reports (`…/events`).
    Events,
    /// Every other limited route.
    Admin,
}

impl Class {
    const ALL: [Class; 4] = [Class::Evaluate, Class::Stream, Class::Events, Class::Admin];

    /// The name in settings and messages.
    pub const fn name(self) -> &'static str {
        match self {
            Class::Evaluate => "evaluate",
            Class::Stream => "stream",
            Class::Events => "events",
            Class::Admin => "admin",
        }
    }
}

/// Whose limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The token's subject (`sub`).
    Subject,
    /// The client address.
    Address,
}

/// A request over its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many {} requests from this {}: the limit is {per_second} per second; retry in {retry_after_secs} s",
    class.name(),
    match who { Who::Subject => "token subject", Who::Address => "address" }
)]
pub struct Refused {
    pub class: Class,
    pub who: Who,
    pub per_second: u32,
    /// Whole seconds until a request would pass (at least 1): the `Retry-After` value.
    pub retry_after_secs: u64,
}

/// A `trusted_proxies` entry that is neither an address nor a CIDR range.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR range")]
pub struct InvalidProxy(String);

/// Parses `rate_limit.trusted_proxies`.
pub fn parse_proxies(entries: &[String]) -> Result<Vec<ipnet::IpNet>, InvalidProxy> {
    entries
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| InvalidProxy(entry.to_owned()))
        })
        .collect()
}

/// Rate-limit state of one key: governor's theoretical arrival time, in nanoseconds
/// from the limiter's start; `u64::MAX` until first measured.
type Cell = Arc<AtomicU64>;
const UNSET: u64 = u64::MAX;

/// A governor state store of at most `capacity` keys (see the module comment).
pub struct BoundedStore<K> {
    cells: quick_cache::sync::Cache<K, Cell>,
}

impl<K: Eq + Hash + Clone> BoundedStore<K> {
    fn new(capacity: usize) -> Self {
        BoundedStore { cells: quick_cache::sync::Cache::new(capacity.max(1)) }
    }

    fn cell(&self, key: &K) -> Cell {
        if let Some(cell) = self.cells.get(key) {
            return cell;
        }
        let made: Result<Cell, std::convert::Infallible> =
            self.cells.get_or_insert_with(key, || Ok(Arc::new(AtomicU64::new(UNSET))));
        made.unwrap_or_else(|never| match never {})
    }
}

impl<K: Eq + Hash + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let cell = self.cell(key);
        let mut current = cell.load(Ordering::Acquire);
        loop {
            let previous = (current != UNSET).then(|| Nanos::from(current));
            let (outcome, next) = f(previous)?;
            match cell.compare_exchange_weak(current, next.as_u64(), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(outcome),
                Err(actual) => current = actual,
            }
        }
    }
}

type Keyed<K> = RateLimiter<K, BoundedStore<K>, DefaultClock, NoOpMiddleware<<DefaultClock as Clock>::Instant>>;

/// One keyed limit and its rate (for messages).
struct Limit<K: Eq + Hash + Clone> {
    limiter: Keyed<K>,
    per_second: u32,
}

impl<K: Eq + Hash + Clone> Limit<K> {
    /// `None` for a rate of 0 (off).
    fn new(per_second: u32, max_keys: usize, clock: &DefaultClock) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let limiter = RateLimiter::new(Quota::per_second(rate), BoundedStore::new(max_keys), clock.clone());
        Some(Limit { limiter, per_second })
    }

    fn check(&self, key: &K, class: Class, who: Who, clock: &DefaultClock) -> Result<(), Refused> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(clock.now());
            let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            Refused { class, who, per_second: self.per_second, retry_after_secs: retry_after_secs.max(1) }
        })
    }
}

/// Every class's limits.
pub struct RateLimits {
    clock: DefaultClock,
    subject: [Option<Limit<String>>; 4],
    address: [Option<Limit<IpAddr>>; 4],
    trusted: Vec<ipnet::IpNet>,
}

impl RateLimits {
    /// From the `[rate_limit]` settings (`trusted_proxies` checked when they loaded).
    pub fn new(settings: &RateLimitSettings) -> Result<Self, InvalidProxy> {
        let clock = DefaultClock::default();
        let rates = |class: Class| match class {
            Class::Evaluate => (settings.evaluate_per_subject, settings.evaluate_per_address),
            Class::Stream => (settings.stream_per_subject, settings.stream_per_address),
            Class::Events => (settings.events_per_subject, settings.events_per_address),
            Class::Admin => (settings.admin_per_subject, settings.admin_per_address),
        };
        let max_keys = settings.max_keys;
        Ok(RateLimits {
            subject: Class::ALL.map(|class| Limit::new(rates(class).0, max_keys, &clock)),
            address: Class::ALL.map(|class| Limit::new(rates(class).1, max_keys, &clock)),
            trusted: parse_proxies(&settings.trusted_proxies)?,
            clock,
        })
    }

    /// Whether `class` is limited per subject (else the caller need not find the
    /// subject at all).
    pub fn limits_subjects(&self, class: Class) -> bool {
        self.subject[class as usize].is_some()
    }

    /// Takes one request of `class` from `address` and `subject` (each when known and
    /// limited) out of their allowances; refused when either is spent. The address is
    /// checked first, so requests with bad tokens still count against it.
    pub fn check(&self, class: Class, address: Option<IpAddr>, subject: Option<&String>) -> Result<(), Refused> {
        if let (Some(limit), Some(address)) = (&self.address[class as usize], address) {
            limit.check(&address_key(address), class, Who::Address, &self.clock)?;
        }
        if let (Some(limit), Some(subject)) = (&self.subject[class as usize], subject) {
            limit.check(subject, class, Who::Subject, &self.clock)?;
        }
        Ok(())
    }

    /// The client's address: the peer, unless the peer is a trusted proxy, in which case
    /// `X-Forwarded-For` (its values in order, each a comma-separated list) is read from
    /// the right and the first address not itself a trusted proxy is the client.
    /// Without trusted proxies the header is never read.
    pub fn client_address<'h>(&self, peer: Option<IpAddr>, forwarded: impl Iterator<Item = &'h [u8]>) -> IpAddr {
        let mut client = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if self.trusted.is_empty() || !self.is_trusted(client) {
            return client;
        }
        let values: Vec<&[u8]> = forwarded.collect();
        for value in values.iter().rev() {
            let Ok(list) = std::str::from_utf8(value) else { return client };
            for hop in list.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(address) => client = address,
                    Err(_) => return client,
                }
                if !self.is_trusted(client) {
                    return client;
                }
            }
        }
        client
    }

    /// Whether any proxy is trusted (else `X-Forwarded-For` is never read).
    pub fn trusts_proxies(&self) -> bool {
        !self.trusted.is_empty()
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&address))
    }
}

/// What an address is limited as: IPv4 as it is (IPv4-mapped IPv6 too), IPv6 by its
/// /64, the smallest block one subscriber is usually given.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(evaluate_per_subject: u32, evaluate_per_address: u32, trusted: &[&str]) -> RateLimitSettings {
        RateLimitSettings {
            evaluate_per_subject,
            evaluate_per_address,
            stream_per_subject: 0,
            stream_per_address: 0,
            events_per_subject: 0,
            events_per_address: 0,
            admin_per_subject: 0,
            admin_per_address: 0,
            max_keys: 1_000,
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_burst_beyond_the_rate_is_refused_per_address_and_other_addresses_pass() {
        let limits = RateLimits::new(&settings(0, 5, &[])).expect("limits");
        for _ in 0..5 {
            assert_eq!(limits.check(Class::Evaluate, Some(ip("192.0.2.1")), None), Ok(()));
        }
        let refused = limits.check(Class::Evaluate, Some(ip("192.0.2.1")), None).expect_err("sixth");
        assert_eq!((refused.who, refused.per_second, refused.retry_after_secs), (Who::Address, 5, 1));
        assert_eq!(limits.check(Class::Evaluate, Some(ip("192.0.2.2")), None), Ok(()));
        assert_eq!(limits.check(Class::Admin, Some(ip("192.0.2.1")), None), Ok(()), "admin is off here");
    }

    #[test]
    fn subjects_are_limited_apart() {
        let limits = RateLimits::new(&settings(2, 0, &[])).expect("limits");
        let (alice, bob) = ("alice".to_owned(), "bob".to_owned());
        assert!(limits.limits_subjects(Class::Evaluate) && !limits.limits_subjects(Class::Admin));
        for i in 0..3u8 {
            // Each request from another address: only the subject limit applies.
            let from = IpAddr::V4(Ipv4Addr::new(198, 51, 100, i));
            let result = limits.check(Class::Evaluate, Some(from), Some(&alice));
            assert_eq!(result.is_ok(), i < 2, "request {i}");
        }
        assert_eq!(limits.check(Class::Evaluate, Some(ip("198.51.100.9")), Some(&bob)), Ok(()));
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_slash_64() {
        let limits = RateLimits::new(&settings(0, 1, &[])).expect("limits");
        assert_eq!(limits.check(Class::Evaluate, Some(ip("2001:db8:1:2::1")), None), Ok(()));
        assert!(limits.check(Class::Evaluate, Some(ip("2001:db8:1:2:ffff::9")), None).is_err(), "same /64");
        assert_eq!(limits.check(Class::Evaluate, Some(ip("2001:db8:1:3::1")), None), Ok(()));
    }

    #[test]
    fn the_store_holds_at_most_its_capacity_whatever_keys_come() {
        let store = BoundedStore::new(100);
        for i in 0..100_000u32 {
            let measured: Result<(), ()> = store.measure_and_replace(&i, |_| Ok(((), Nanos::from(u64::from(i)))));
            assert_eq!(measured, Ok(()));
        }
        assert!(store.cells.len() <= 100, "{} keys held", store.cells.len());
        // A key measured again sees the state it left.
        let seen: Result<Option<Nanos>, ()> = store.measure_and_replace(&7, |prev| Ok((prev, Nanos::from(7))));
        let again: Result<Option<Nanos>, ()> = store.measure_and_replace(&7, |prev| Ok((prev, Nanos::from(8))));
        assert_eq!(again, Ok(Some(Nanos::from(7))), "first saw {seen:?}");
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let header: &[u8] = b"203.0.113.7, 10.0.0.5";
        let untrusting = RateLimits::new(&settings(0, 1, &[])).expect("limits");
        assert_eq!(untrusting.client_address(Some(ip("10.0.0.1")), [header].into_iter()), ip("10.0.0.1"));
        let trusting = RateLimits::new(&settings(0, 1, &["10.0.0.0/8"])).expect("limits");
        assert_eq!(trusting.client_address(Some(ip("10.0.0.1")), [header].into_iter()), ip("203.0.113.7"));
        assert_eq!(
            trusting.client_address(Some(ip("192.0.2.50")), [header].into_iter()),
            ip("192.0.2.50"),
            "a client that is not a trusted proxy cannot name another address"
        );
        let forged: &[u8] = b"198.51.100.1, 203.0.113.7";
        assert_eq!(
            trusting.client_address(Some(ip("10.0.0.1")), [forged].into_iter()),
            ip("203.0.113.7"),
            "what the client wrote left of the proxy's entry is not believed"
        );
        assert_eq!(trusting.client_address(Some(ip("10.0.0.1")), [&b"junk"[..]].into_iter()), ip("10.0.0.1"));
        assert!(parse_proxies(&["10.0.0.0/8".into(), "::1".into(), "192.0.2.4".into()]).is_ok());
        assert!(parse_proxies(&["10.0.0.0/33".into()]).is_err());
    }
}
