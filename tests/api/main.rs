//! cohort's integration tests: one binary (faster to link), one module per area.

mod evaluate;
mod helpers;
mod instances;
mod persistence;
mod redis_harness;
mod releases;
mod store_suite;
mod cli;
