//! The SDK client (`cohort-sdk`, feature `client`) against real servers: it gets ready,
//! evaluates like the server, receives kills by push, survives outages on its last
//! snapshot, starts from a bootstrap file, and falls back to polling.
