//! Fleet nodes' heartbeats: liveness data for rolling deployments.

use serde::{Deserialize, Serialize};

/// A node's latest heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeReport {
    /// The node id (the fleet release's unit value).
    pub node: String,
    /// What its health check says.
    pub healthy: bool,
    /// The version it runs, as it reports.
    #[serde(default)]
    pub running: Option<String>,
    /// Anything the agent wants to show (host, region, …).
    #[serde(default)]
    pub meta: serde_json::Value,
    /// When it last reported, ms since the epoch.
    pub seen_ms: u64,
}
