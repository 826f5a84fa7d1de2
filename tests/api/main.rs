//! cohort's integration tests: one binary (faster to link), one module per area.

mod audit;
mod auth;
mod cli;
mod config;
mod evaluate;
mod events;
mod fleets;
mod helpers;
mod instances;
mod ofrep;
mod openapi;
mod openfeature_provider;
mod persistence;
mod ramps;
mod reach;
mod redis_harness;
mod releases;
mod safety;
mod sdk_client;
mod sdk_fleet;
mod sdk_staleness;
mod sdk_track;
mod sse;
mod store_suite;
mod streams;
mod values;
