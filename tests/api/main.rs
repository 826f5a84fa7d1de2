//! cohort's integration tests: one binary (faster to link), one module per area.

mod audit;
mod auth;
mod chaos;
mod cli;
mod config;
mod config_as_code;
#[cfg(feature = "console")]
mod console;
#[cfg(feature = "console")]
mod console_forms;
#[cfg(not(feature = "console"))]
mod console_off;
mod cors;
mod embedded_crash;
mod evaluate;
mod events;
mod failover;
mod fault_proxy;
mod fleets;
mod helpers;
mod http_edges;
mod idp;
mod instances;
mod limits;
mod network_faults;
mod ofrep;
mod openapi;
mod openfeature_provider;
mod persistence;
mod ramps;
mod reach;
mod redis_ha;
mod redis_harness;
mod redis_topology;
mod releases;
mod revocations;
mod safety;
mod sdk_client;
mod sdk_fleet;
mod sdk_staleness;
mod sdk_track;
mod sse;
mod store_suite;
mod streams;
mod tls;
mod values;
