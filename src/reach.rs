//! Kill confirmation: how far a revision has reached.
//!
//! Every stream subscriber is one of three kinds, and only one of them can confirm:
//! - an **acknowledging SDK** posts `…/ack` with each revision it applies (and
//!   heartbeats); its acknowledgements live in the store, shared by every instance;
//! - a **delivered-only** subscriber (OFREP provider, browser, raw SSE) never says what
//!   it applied: the instance serving its stream only knows which events it wrote;
//! - a subscriber that is **gone** (said goodbye, or its stream ended) is not counted
//!   at all, so a rolling restart of an application does not leave dead SDKs that
//!   every `kill --wait` would wait for. An SDK that vanishes without either (its
//!   stream on an instance that died too) is forgotten after [`SDK_TTL`] of silence.

use crate::store::{EnvName, SdkAck, Store, StoreError};
use crate::stream::Streams;
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

/// Whether `sdk_id` can be one: it is a Redis hash field, a header value and a table
/// cell, so short and printable.
pub fn valid_sdk_id(sdk_id: &str) -> bool {
    !sdk_id.is_empty() && sdk_id.len() <= 128 && sdk_id.chars().all(|c| c.is_ascii_graphic())
}

fn check_sdk_id(sdk_id: &str) -> Result<(), ReachError> {
    if valid_sdk_id(sdk_id) {
        Ok(())
    } else {
        Err(ReachError::Invalid("sdk_id must be 1 to 128 printable ASCII characters".into()))
    }
}

/// What an SDK reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckReport {
    /// It applied `revision`, and is still there; `connection` is the stream
    /// connection it is on (0 without one).
    Applied { revision: u64, connection: u64 },
    /// It is closing: forget it now rather than after [`SDK_TTL`].
    Goodbye,
}

/// Records what `sdk_id` (at `address`) reports.
pub async fn acknowledge(
    store: &dyn Store,
    env: &EnvName,
    sdk_id: &str,
    report: AckReport,
    address: String,
) -> Result<(), ReachError> {
    check_sdk_id(sdk_id)?;
    match report {
        AckReport::Applied { revision, connection } => {
            let ack = SdkAck { sdk_id: sdk_id.to_owned(), revision, seen_ms: now_ms(), address, connection };
            store.record_ack(env, &ack).await?;
        }
        AckReport::Goodbye => {
            store.forget_sdk(env, sdk_id, u64::MAX).await?;
            tracing::debug!(%env, sdk_id, "SDK said goodbye");
        }
    }
    Ok(())
}

/// The stream connection `connection` of SDK `sdk_id` ended: forget the SDK unless it
/// has acknowledged over a newer connection since. A failure only leaves it to
/// [`SDK_TTL`].
pub async fn stream_ended(store: &dyn Store, env: &EnvName, sdk_id: &str, connection: u64) {
    match store.forget_sdk(env, sdk_id, connection).await {
        Ok(()) => tracing::debug!(%env, sdk_id, connection, "SDK stream ended"),
        Err(error) => {
            tracing::warn!(%env, sdk_id, %error, "cannot forget an SDK whose stream ended; it expires on its own")
        }
    }
}

/// How far a revision has reached.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reach {
    /// The revision asked about.
    pub revision: u64,
    /// Live acknowledging SDKs (in every instance's view: acknowledgements are in the
    /// store) that have applied `revision` or later.
    pub acknowledged: usize,
    /// Live acknowledging SDKs: seen within the last 90 s, not gone.
    pub acknowledging_total: usize,
    /// The live acknowledging SDKs that have not applied `revision` yet, with what
    /// they have and when they were last seen (`seen_ms`).
    pub pending: Vec<SdkAck>,
    /// Delivered-only stream subscribers (OFREP, raw SSE: they cannot acknowledge)
    /// whose stream was written the event of `revision` or a later one. Counts the
    /// streams of the instance that answers.
    pub delivered_only: usize,
    /// Open delivered-only streams on the instance that answers.
    pub delivered_only_total: usize,
    /// True when every live acknowledging SDK has applied `revision` (also when there
    /// is none): what `cohort kill --wait` waits for.
    pub confirmed: bool,
    /// Same as `acknowledging_total` (the name of earlier versions).
    pub connected: usize,
    /// Same as `acknowledged` (the name of earlier versions).
    pub applied: usize,
}

/// How far `revision` of `env` has reached: live acknowledging SDKs from the store,
/// delivered-only subscribers from this instance's streams.
pub async fn reach(store: &dyn Store, streams: &Streams, env: &EnvName, revision: u64) -> Result<Reach, ReachError> {
    let since = now_ms().saturating_sub(SDK_TTL.as_millis() as u64);
    let acks = store.sdk_acks(env, since).await?;
    let total = acks.len();
    let pending: Vec<SdkAck> = acks.into_iter().filter(|a| a.revision < revision).collect();
    let acknowledged = total - pending.len();
    let delivered = streams.delivered_only(env, revision);
    Ok(Reach {
        revision,
        acknowledged,
        acknowledging_total: total,
        confirmed: pending.is_empty(),
        pending,
        delivered_only: delivered.written,
        delivered_only_total: delivered.open,
        connected: total,
        applied: acknowledged,
    })
}
