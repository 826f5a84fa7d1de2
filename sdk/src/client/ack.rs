//! Kill confirmation from the SDK's side: acknowledge every revision this client
//! applies (and heartbeat), so `GET …/reach` can say how many SDKs run it.

use reqwest::Url;
use serde::Serialize;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Serialize)]
struct Ack<'a> {
    sdk_id: &'a str,
    revision: u64,
}

/// A process-unique id: `sdk-<pid>-<random>`.
pub(crate) fn default_sdk_id() -> String {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("sdk-{}-{:08x}", std::process::id(), random as u32)
}

/// Posts an acknowledgement whenever the applied revision changes, and at least every
/// `heartbeat` so the service knows this SDK is still connected. Failures are only
/// logged: confirmation is best effort and never affects evaluation.
pub(crate) async fn run(
    http: reqwest::Client,
    url: Url,
    sdk_id: String,
    mut revisions: watch::Receiver<u64>,
    heartbeat: Duration,
    timeout: Duration,
) {
    loop {
        let revision = *revisions.borrow_and_update();
        if revision > 0 {
            let sent = http.post(url.clone()).timeout(timeout).json(&Ack { sdk_id: &sdk_id, revision }).send().await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::debug!(status = %r.status(), "acknowledgement refused"),
                Err(error) => tracing::debug!(%error, "acknowledgement not sent"),
            }
        }
        tokio::select! {
            changed = revisions.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(heartbeat) => {}
        }
    }
}
