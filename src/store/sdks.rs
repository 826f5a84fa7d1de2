//! What each connected SDK instance has applied, so an on-call engineer can see a kill
//! land ("applied by 998/1000 connected SDKs").

use serde::{Deserialize, Serialize};

/// The latest acknowledgement from one SDK instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SdkAck {
    /// The SDK instance's id (stable for its process lifetime).
    pub sdk_id: String,
    /// The environment revision it has applied.
    pub revision: u64,
    /// When it last acknowledged, milliseconds since the epoch.
    pub seen_ms: u64,
    /// The address it acknowledged from.
    pub address: String,
    /// Which of the SDK's stream connections it acknowledged over (the SDK counts
    /// them; 0 without a stream). The end of stream `n` forgets the SDK only if its
    /// latest acknowledgement came over stream `n` or earlier: one sent after it
    /// reconnected (to this instance or another) is kept.
    #[serde(default)]
    pub connection: u64,
}
