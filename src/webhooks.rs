//! Webhooks: every ramp transition is POSTed as JSON, signed with HMAC-SHA256, to the
//! receivers configured for its environment. Delivery happens on background tasks with
//! timeouts and retries; a slow or dead receiver never delays a transition (the queue is
//! bounded and `notify` never waits) nor evaluation.

use crate::config::WebhookSettings;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};

/// The signature header: `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Cohort-Signature";
/// The event kind header.
pub const EVENT_HEADER: &str = "X-Cohort-Event";

const QUEUE: usize = 1_024;
const ATTEMPTS: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(5);
const CONCURRENT_DELIVERIES: usize = 64;

/// One transition, as receivers get it.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookEvent {
    /// `started`, `advanced`, `paused`, `resumed`, `rolled_back`, `aborted`, `completed`,
    /// `killed`, `promoted`.
    pub event: String,
    pub environment: String,
    pub release: String,
    /// The environment revision the transition was written at.
    pub revision: u64,
    /// Who (a token's `sub`, or `cohort:ramp` for the driver).
    pub actor: String,
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    /// The ramp after the transition (state, step, guard figures).
    pub ramp: serde_json::Value,
}

/// The sending side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Webhooks {
    queue: mpsc::Sender<WebhookEvent>,
    dropped: Arc<AtomicU64>,
}

/// Signs `body` with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhooks {
    /// Queues `event` for delivery; drops it (and counts the drop) when the queue is full.
    pub fn notify(&self, event: WebhookEvent) {
        if self.queue.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("webhook queue full; an event was dropped");
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The delivering side, run by the application until shutdown.
pub struct Dispatcher {
    receivers: Arc<Vec<WebhookSettings>>,
    queue: mpsc::Receiver<WebhookEvent>,
    http: reqwest::Client,
}

/// A webhook pair: the handle to notify and the dispatcher to run.
pub fn channel(receivers: Vec<WebhookSettings>) -> (Webhooks, Dispatcher) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let http = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap_or_default();
    (
        Webhooks { queue: tx, dropped: Arc::new(AtomicU64::new(0)) },
        Dispatcher { receivers: Arc::new(receivers), queue: rx, http },
    )
}

impl Dispatcher {
    /// Delivers queued events until `shutdown` flips; each delivery runs on its own task
    /// (bounded), so one hanging receiver holds up nobody.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
        loop {
            let event = tokio::select! {
                _ = shutdown.changed() => return,
                event = self.queue.recv() => match event { Some(e) => e, None => return },
            };
            let Ok(body) = serde_json::to_vec(&event) else { continue };
            let body = bytes_of(body);
            for receiver in self.receivers.iter().filter(|r| r.env == "*" || r.env == event.environment) {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::warn!(url = %receiver.url, "too many webhook deliveries in flight; event dropped");
                    continue;
                };
                let (http, receiver, body, kind) =
                    (self.http.clone(), receiver.clone(), body.clone(), event.event.clone());
                tokio::spawn(async move {
                    deliver(&http, &receiver, &body, &kind).await;
                    drop(permit);
                });
            }
        }
    }
}

fn bytes_of(body: Vec<u8>) -> Arc<[u8]> {
    body.into()
}

async fn deliver(http: &reqwest::Client, receiver: &WebhookSettings, body: &Arc<[u8]>, kind: &str) {
    let signature = sign(receiver.secret.expose().as_bytes(), body);
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        let sent = http
            .post(&receiver.url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .header(EVENT_HEADER, kind)
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::warn!(url = %receiver.url, status = %r.status(), attempt, "webhook refused"),
            Err(error) => tracing::warn!(url = %receiver.url, %error, attempt, "webhook delivery failed"),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_a_known_hmac() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
