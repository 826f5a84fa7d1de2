//! cohort's integration tests: one binary (faster to link), one module per area.

mod audit;
mod auth;
mod cli;
mod evaluate;
mod events;
mod helpers;
mod instances;
mod persistence;
mod reach;
mod redis_harness;
mod releases;
mod sdk_client;
mod sse;
mod store_suite;
mod streams;
