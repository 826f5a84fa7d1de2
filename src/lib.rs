//! cohort: a release service for canary releases and rolling deployments.
//!
//! The evaluation core and model live in `cohort-sdk`; this crate adds storage, sync
//! between instances, the HTTP API and the command line.

pub mod agent;
pub mod answers;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
#[cfg(feature = "console")]
pub mod console;
pub mod environments;
pub mod events;
pub mod fleet;
pub mod metrics;
pub mod ofrep;
pub mod pending;
pub mod ramp;
pub mod ratelimit;
pub mod reach;
pub mod releases;
pub mod revocations;
pub mod snapshots;
pub mod startup;
pub mod store;
pub mod store_watch;
pub mod stream;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod webhooks;
