//! cohort's integration tests: one binary (faster to link), one module per area.

mod helpers;
mod redis_harness;
mod store_suite;
