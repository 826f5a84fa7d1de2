//! Kill confirmation from the SDK's side: acknowledge every revision this client
//! applies (and heartbeat), so `GET …/reach` can say how many SDKs run it, and say
//! goodbye on close, so a closed client is not counted as one that never applied a
//! kill.
//!
//! The stream tells the service which SDK it carries (`X-Cohort-Sdk-Id`) and which of
//! its connections it is (`X-Cohort-Sdk-Connection`): when a stream ends the service
//! forgets the SDK at once, unless it acknowledged over a newer connection. So the
//! client acknowledges again on every (re)connection.

use reqwest::Url;
use serde::Serialize;
use std::time::Duration;
use tokio::sync::watch;

/// The header the stream names this SDK in.
pub(crate) const SDK_ID_HEADER: &str = "x-cohort-sdk-id";
/// The header with the number of the stream connection.
pub(crate) const SDK_CONNECTION_HEADER: &str = "x-cohort-sdk-connection";

#[derive(Serialize)]
struct Ack<'a> {
    sdk_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    connection: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    gone: bool,
}

/// The id as the stream sends it: only one the service accepts (1 to 128 printable
/// ASCII characters) — anything else could not even be a header value, and would
/// keep the stream from opening.
pub(crate) fn stream_sdk_id(sdk_id: &str) -> Option<String> {
    let valid = !sdk_id.is_empty() && sdk_id.len() <= 128 && sdk_id.chars().all(|c| c.is_ascii_graphic());
    if !valid {
        tracing::warn!(
            sdk_id,
            "the sdk id is not 1 to 128 printable ASCII characters; kill confirmation will not count this client"
        );
    }
    valid.then(|| sdk_id.to_owned())
}

/// A process-unique id: `sdk-<pid>-<random>`.
pub(crate) fn default_sdk_id() -> String {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("sdk-{}-{:08x}", std::process::id(), random as u32)
}

/// Where and how acknowledgements go.
pub(crate) struct Acknowledger {
    pub(crate) http: reqwest::Client,
    pub(crate) url: Url,
    pub(crate) sdk_id: String,
    pub(crate) heartbeat: Duration,
    pub(crate) timeout: Duration,
}

/// What the acknowledger follows: the revision in use, the latest stream connection
/// opened (0 before any), and the client's shutdown.
pub(crate) struct Signals {
    pub(crate) revisions: watch::Receiver<u64>,
    pub(crate) connections: watch::Receiver<u64>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Acknowledger {
    /// Posts an acknowledgement whenever the applied revision changes, whenever a
    /// stream connection opens, and at least every `heartbeat` so the service knows
    /// this SDK is alive; on shutdown (or when the client is gone) says goodbye and
    /// ends. Failures are only logged: confirmation is best effort and never affects
    /// evaluation.
    pub(crate) async fn run(self, mut signals: Signals) {
        let mut acknowledged = false;
        loop {
            let revision = *signals.revisions.borrow_and_update();
            let connection = *signals.connections.borrow_and_update();
            if revision > 0 {
                self.send(Ack { sdk_id: &self.sdk_id, revision: Some(revision), connection, gone: false }).await;
                acknowledged = true;
            }
            let stop = tokio::select! {
                // A closing client says goodbye before anything else.
                biased;
                _ = signals.shutdown.wait_for(|stop| *stop) => true,
                changed = signals.revisions.changed() => changed.is_err(),
                changed = signals.connections.changed() => changed.is_err(),
                () = tokio::time::sleep(self.heartbeat) => false,
            };
            if stop {
                break;
            }
        }
        if acknowledged {
            let connection = *signals.connections.borrow();
            self.send(Ack { sdk_id: &self.sdk_id, revision: None, connection, gone: true }).await;
        }
    }

    async fn send(&self, ack: Ack<'_>) {
        let sent = self.http.post(self.url.clone()).timeout(self.timeout).json(&ack).send().await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::debug!(status = %r.status(), gone = ack.gone, "acknowledgement refused"),
            Err(error) => tracing::debug!(%error, gone = ack.gone, "acknowledgement not sent"),
        }
    }
}
