//! `cohort agent`: the deploy agent of one fleet node. It heartbeats (health from a
//! command), learns its assignment from the heartbeat's answer, watches the
//! environment's event stream so a change is acted on at once, runs the deploy command
//! when the assignment changes, and reports what it runs. When the service cannot be
//! reached it keeps what it has and retries.

use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::Notify;

/// What the agent is told.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub url: String,
    pub env: String,
    pub fleet: String,
    pub node: String,
    pub token: Option<String>,
    /// `sh -c` command; `{version}` is replaced by the assigned version.
    pub exec: String,
    /// `sh -c` health command; exit 0 = healthy. None: always healthy.
    pub health_cmd: Option<String>,
    /// The release to follow (default: the fleet's only release).
    pub release: Option<String>,
    /// Heartbeat interval.
    pub interval: Duration,
    /// Version running at start, if known.
    pub running: Option<String>,
}

async fn sh(command: &str) -> bool {
    match tokio::time::timeout(Duration::from_secs(300), Command::new("sh").arg("-c").arg(command).status()).await {
        Ok(Ok(status)) => status.success(),
        Ok(Err(error)) => {
            tracing::warn!(%error, command, "cannot run command");
            false
        }
        Err(_) => {
            tracing::warn!(command, "command timed out");
            false
        }
    }
}

/// Runs the agent until the process is stopped.
pub async fn run(settings: AgentSettings) -> anyhow::Result<()> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &settings.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let http = reqwest::Client::builder().default_headers(headers).connect_timeout(Duration::from_secs(5)).build()?;
    let base = settings.url.trim_end_matches('/').to_owned();
    let beat_url = format!("{base}/v1/envs/{}/fleets/{}/nodes/{}", settings.env, settings.fleet, settings.node);
    let stream_url = format!("{base}/v1/envs/{}/stream", settings.env);
    let changed = std::sync::Arc::new(Notify::new());
    tokio::spawn(watch(http.clone(), stream_url, std::sync::Arc::clone(&changed)));

    let mut running = settings.running.clone();
    loop {
        let healthy = match &settings.health_cmd {
            Some(cmd) => sh(cmd).await,
            None => true,
        };
        let body = json!({"healthy": healthy, "running": running});
        match http.put(&beat_url).timeout(Duration::from_secs(10)).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                let answer: Value = r.json().await.unwrap_or_default();
                if let Some(assigned) = pick(&answer["assignments"], settings.release.as_deref())
                    && running.as_deref() != Some(assigned.as_str())
                {
                    let command = settings.exec.replace("{version}", &assigned);
                    tracing::info!(node = %settings.node, version = %assigned, "deploying");
                    if sh(&command).await {
                        running = Some(assigned);
                        // Report at once rather than at the next interval.
                        continue;
                    }
                    tracing::warn!(node = %settings.node, version = %assigned, "deploy command failed; keeping the current version");
                }
            }
            Ok(r) => tracing::warn!(status = %r.status(), "heartbeat refused"),
            Err(error) => tracing::warn!(%error, "service unreachable; keeping the last assignment"),
        }
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep(settings.interval) => {}
        }
    }
}

/// The assignment to follow: the named release, or the fleet's only one.
fn pick(assignments: &Value, release: Option<&str>) -> Option<String> {
    let map = assignments.as_object()?;
    match release {
        Some(key) => map.get(key)?.as_str().map(str::to_owned),
        None if map.len() == 1 => map.values().next()?.as_str().map(str::to_owned),
        None => None,
    }
}

/// Wakes the heartbeat loop on every event of the environment's stream, reconnecting
/// with a pause when the stream ends or fails.
async fn watch(http: reqwest::Client, url: String, changed: std::sync::Arc<Notify>) {
    loop {
        if let Ok(response) = http.get(&url).header("Accept", "text/event-stream").send().await
            && response.status().is_success()
        {
            let mut bytes = response.bytes_stream();
            while let Some(Ok(chunk)) = bytes.next().await {
                if chunk.windows(6).any(|w| w == b"event:") {
                    changed.notify_one();
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_followed_release_is_the_named_or_the_only_one() {
        let one = json!({"deploy": "v2"});
        assert_eq!(pick(&one, None), Some("v2".into()));
        let two = json!({"a": "v1", "b": "v2"});
        assert_eq!(pick(&two, None), None);
        assert_eq!(pick(&two, Some("b")), Some("v2".into()));
    }
}
