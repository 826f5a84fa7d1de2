//! Kill confirmation: SDK instances acknowledge each revision they apply, and the
//! on-call engineer asks how many of the connected ones have applied a given revision.

use crate::store::{EnvName, SdkAck, Store, StoreError};
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An SDK that has not acknowledged (or heartbeated) for this long counts as gone.
pub const SDK_TTL: Duration = Duration::from_secs(90);

/// Bad acknowledgements.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Records that `sdk_id` (at `address`) has applied `revision`.
pub async fn acknowledge(
    store: &dyn Store,
    env: &EnvName,
    sdk_id: &str,
    revision: u64,
    address: String,
) -> Result<(), ReachError> {
    let valid = !sdk_id.is_empty() && sdk_id.len() <= 128 && sdk_id.chars().all(|c| c.is_ascii_graphic());
    if !valid {
        return Err(ReachError::Invalid("sdk_id must be 1 to 128 printable ASCII characters".into()));
    }
    let ack = SdkAck { sdk_id: sdk_id.to_owned(), revision, seen_ms: now_ms(), address };
    Ok(store.record_ack(env, &ack).await?)
}

/// How far a revision has reached.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reach {
    /// The revision asked about.
    pub revision: u64,
    /// SDK instances seen within [`SDK_TTL`].
    pub connected: usize,
    /// Of those, how many have applied `revision` (or later).
    pub applied: usize,
    /// The ones that have not, with what they have.
    pub pending: Vec<SdkAck>,
}

/// How many connected SDKs of `env` have applied `revision`.
pub async fn reach(store: &dyn Store, env: &EnvName, revision: u64) -> Result<Reach, ReachError> {
    let since = now_ms().saturating_sub(SDK_TTL.as_millis() as u64);
    let acks = store.sdk_acks(env, since).await?;
    let connected = acks.len();
    let pending: Vec<SdkAck> = acks.into_iter().filter(|a| a.revision < revision).collect();
    Ok(Reach { revision, connected, applied: connected - pending.len(), pending })
}
