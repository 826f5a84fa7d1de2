//! `cohort-sdk`: the release model and the one evaluation core shared by the cohort
//! server and every Rust application that evaluates locally.
//!
//! The core is pure: no I/O, no async, no allocation while evaluating. A [`Release`] is
//! validated and pre-computed once by [`CompiledRelease::compile`] ("compile on write");
//! [`Snapshot::evaluate`] then answers "which version does this unit get?" from a
//! borrowed [`Context`].
//!
//! ```
//! use cohort_sdk::{Context, Release, Snapshot, SnapshotData, Reason};
//!
//! let release: Release = Release::new("checkout", ["v1", "v2"]).with_allocation("v2", 5_000);
//! let snapshot = Snapshot::compile(SnapshotData { revision: 1, kill_all: false, releases: vec![release] }).unwrap();
//! let ctx = Context::new().with("targetingKey", "user-42");
//! let decision = snapshot.evaluate("checkout", &ctx);
//! assert_eq!(decision.reason, Reason::Split);
//! ```

mod bucket;
#[cfg(feature = "client")]
pub mod client;
mod compile;
mod condition;
mod context;
mod decision;
mod error;
mod model;
#[cfg(feature = "openapi")]
pub mod openapi;
mod ramp;
mod semver;
mod snapshot;
mod value;

pub use bucket::{BUCKETS, bucket, hash_unit};
pub use compile::CompiledRelease;
pub use context::{Context, Value};
pub use decision::{Decision, ErrorCode, Reason};
pub use error::CompileError;
pub use model::{
    BUCKETING_XXH3_SLOTS_V1, Condition, DEFAULT_UNIT, Op, Release, Rule, buckets_to_percent, format_buckets,
    percent_to_buckets, slot_exceeded, slot_width,
};
pub use ramp::{GuardFigures, Ramp, RampGuard, RampState, RampStep};
pub use semver::Version;
pub use snapshot::{Snapshot, SnapshotData};
pub use value::{JsonValue, MAX_VALUE_BYTES, Resolved, ValueType};
