//! One connection to `GET /v1/envs/{env}/stream`: the `snapshot` event replaces the
//! configuration, each `change` event is applied in revision order. Parsing is
//! eventsource-stream's; this module only wires it to reqwest and to the snapshot.

use super::ack::{SDK_CONNECTION_HEADER, SDK_ID_HEADER};
use super::sync::{SyncError, SyncTask};
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use std::sync::Arc;
use std::time::Duration;

/// The header that tells the server which revision the client has.
const LAST_EVENT_ID: &str = "last-event-id";

impl SyncTask {
    /// Opens the stream (resuming from the served revision, if any) and follows it
    /// until it ends or fails. Sets `heard` once anything arrived, so the caller can
    /// tell a stream that worked for a while from one that cannot be opened.
    pub(super) async fn follow_stream(&mut self, heard: &mut bool) -> Result<(), SyncError> {
        let connection = self.next_connection;
        self.next_connection += 1;
        let mut request = self.http.get(self.urls.stream.clone()).header(ACCEPT, "text/event-stream");
        if let Some(sdk_id) = &self.sdk_id {
            request = request.header(SDK_ID_HEADER, sdk_id).header(SDK_CONNECTION_HEADER, connection.to_string());
        }
        if let Some(revision) = self.served {
            request = request.header(LAST_EVENT_ID, revision.to_string());
        }
        let timeout = self.settings.request_timeout;
        let response =
            tokio::time::timeout(timeout, request.send()).await.map_err(|_| SyncError::Timeout(timeout))??;
        if response.status() != StatusCode::OK {
            return Err(SyncError::Status(response.status()));
        }
        // An open stream counts as word from the service: what this client missed is
        // the first thing on it.
        self.shared.freshness().heard();
        // The service forgets this SDK when an earlier stream of it ends: acknowledge
        // over this one.
        self.connections.send_replace(connection);
        let shared = Arc::clone(&self.shared);
        let bytes = with_idle_timeout(response.bytes_stream(), self.settings.idle_timeout);
        let mut events = std::pin::pin!(
            bytes
                .inspect(|chunk| {
                    if chunk.is_ok() {
                        *heard = true;
                        shared.freshness().heard();
                    }
                })
                .eventsource()
        );
        while let Some(event) = events.next().await {
            let event = event.map_err(|error| match error {
                EventStreamError::Transport(error) => error,
                other => SyncError::Stream(other.to_string()),
            })?;
            match event.event.as_str() {
                "snapshot" => {
                    let data = serde_json::from_str(&event.data)
                        .map_err(|source| SyncError::Json { what: "snapshot event", source })?;
                    self.install(data);
                }
                "change" => {
                    let change = serde_json::from_str(&event.data)
                        .map_err(|source| SyncError::Json { what: "change event", source })?;
                    self.apply(change)?;
                }
                other => tracing::debug!(event = other, "ignoring an event of an unknown type"),
            }
        }
        Ok(())
    }
}

/// The body's chunks, failing with [`SyncError::Idle`] when none (heartbeats included)
/// arrives for `idle`: a connection that died silently (NAT timeout, pulled cable) is
/// noticed and replaced.
fn with_idle_timeout<B>(
    body: impl Stream<Item = reqwest::Result<B>> + Send,
    idle: Duration,
) -> impl Stream<Item = Result<B, SyncError>> + Send {
    futures_util::stream::unfold(Box::pin(body), move |mut body| async move {
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(chunk)) => Some((chunk.map_err(SyncError::from), body)),
            Ok(None) => None,
            Err(_) => Some((Err(SyncError::Idle(idle)), body)),
        }
    })
}
