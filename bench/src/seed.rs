//! The store the benchmarks run on: N releases created through the real API (a mix of
//! two- and three-version splits, targeting rules, audiences and overrides), and the
//! evaluation contexts the load uses.

use crate::client;
use crate::server::ENV;
use anyhow::bail;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Writes in flight while seeding (the store applies them one at a time anyway).
const SEED_CONCURRENCY: usize = 8;

/// The key of release `i`.
pub fn key(i: usize) -> String {
    format!("release-{i:04}")
}

/// Release `i`'s create body. Every release splits on `targetingKey`; every 4th has
/// two candidates, every 10th a country rule, every 25th an app-version audience and
/// every 50th an override, so evaluation walks every step of the order.
pub fn release(i: usize) -> Value {
    let mut body = if i.is_multiple_of(4) {
        json!({"key": key(i), "versions": ["v1", "v2", "v3"], "allocation": {"v2": 5, "v3": 0.5}})
    } else {
        json!({"key": key(i), "versions": ["v1", "v2"], "allocation": {"v2": 5 + (i % 20)}})
    };
    body["description"] = json!(format!("benchmark release {i}"));
    if i.is_multiple_of(10) {
        body["rules"] = json!([{"when": [{"attr": "country", "op": "in", "values": ["NZ", "AU"]}], "serve": "v2"}]);
    }
    if i.is_multiple_of(25) {
        body["audience"] = json!([{"attr": "app_version", "op": "semver_gte", "values": ["2.0.0"]}]);
    }
    if i.is_multiple_of(50) {
        body["overrides"] = json!({"qa-user-1": "v2"});
    }
    body
}

/// Context `n`: a user id, a country (one in eight in a rule's countries) and an app
/// version (one in five below the audience's minimum).
pub fn context(n: usize) -> Value {
    let country = ["DE", "FR", "US", "GB", "NZ", "JP", "BR", "IN"][n % 8];
    let app_version = ["2.4.1", "2.0.0", "3.1.0", "1.9.9", "2.10.3"][n % 5];
    json!({"targetingKey": format!("user-{n}"), "country": country, "app_version": app_version})
}

/// Creates releases `0..count` in [`ENV`] with a `write` token; returns the time taken.
pub async fn seed(addr: SocketAddr, write_token: &str, count: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let auth = format!("Bearer {write_token}");
    let path = format!("/v1/envs/{ENV}/releases");
    let mut pending = JoinSet::new();
    for i in 0..count {
        if pending.len() >= SEED_CONCURRENCY
            && let Some(done) = pending.join_next().await
        {
            done??;
        }
        let (auth, path) = (auth.clone(), path.clone());
        pending.spawn(async move {
            let body = serde_json::to_vec(&release(i))?;
            let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
            let response = client::request(addr, "POST", &path, &headers, Some(&body)).await?;
            if response.status != 201 {
                bail!("creating {}: {} {}", key(i), response.status, response.text());
            }
            Ok(())
        });
    }
    while let Some(done) = pending.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    #[test]
    fn releases_cover_every_evaluation_step() {
        let all: Vec<_> = (0..100).map(super::release).collect();
        assert!(all.iter().any(|r| r.get("rules").is_some()));
        assert!(all.iter().any(|r| r.get("audience").is_some()));
        assert!(all.iter().any(|r| r.get("overrides").is_some()));
        assert!(all.iter().any(|r| r["versions"].as_array().is_some_and(|v| v.len() == 3)));
        assert_eq!(super::key(7), "release-0007");
    }
}
