//! `POST /v1/envs/{env}/evaluate`, including the shared decision vectors run through
//! the HTTP API (the server's half of "both crates run the vectors").

use crate::helpers::{Backend, assert_error, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn the_shared_decision_vectors_hold_through_the_http_api() {
    let app = spawn_app(Backend::Embedded).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/sdk/testdata/decisions.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
    let cases = file["cases"].as_array().expect("cases");
    assert!(cases.len() >= 60);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let env = format!("vector-{i}");
        app.given_environment(&env).await;
        for release in case["releases"].as_array().expect("releases") {
            let mut body = release.clone();
            let killed =
                body.as_object_mut().and_then(|o| o.remove("killed")).and_then(|k| k.as_bool()).unwrap_or(false);
            // The model stores bucket units; the API takes percents.
            if let Some(allocation) = body.get_mut("allocation").and_then(Value::as_object_mut) {
                for share in allocation.values_mut() {
                    *share = json!(share.as_u64().expect("buckets") as f64 / 1000.0);
                }
            }
            let r = app.create_release(&env, body).await;
            assert_eq!(r.status(), StatusCode::CREATED, "{}: {}", case["name"], r.text().await.unwrap_or_default());
            if killed {
                let key = release["key"].as_str().expect("key");
                let r = app.post(&app.env_url(&env, &format!("/releases/{key}/kill")), &json!({})).await;
                assert_eq!(r.status(), StatusCode::OK);
            }
        }
        if case["kill_all"].as_bool() == Some(true) {
            let r = app.post(&app.env_url(&env, "/kill-all"), &json!({"reason": "vector"})).await;
            assert_eq!(r.status(), StatusCode::OK);
        }
        let key = case["evaluate"].as_str().expect("key");
        let got = app.decision(&env, key, case["context"].clone()).await;
        let expected = &case["expected"];
        let same = got.get("version").unwrap_or(&Value::Null) == &expected["version"]
            && got["reason"] == expected["reason"]
            && got.get("bucket").unwrap_or(&Value::Null) == &expected["bucket"]
            && got.get("error").unwrap_or(&Value::Null) == &expected["error_code"];
        if !same {
            failures.push(format!("{}: expected {expected}, got {got}", case["name"]));
        }
    }
    assert!(failures.is_empty(), "{} cases differ:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn answers_are_sticky_and_grow_monotonically_with_the_allocation() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 5.0).await;
    let users: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let mut at_five = Vec::new();
    for user in &users {
        let first = app.decision("production", "checkout", json!({"targetingKey": user})).await;
        let again = app.decision("production", "checkout", json!({"targetingKey": user})).await;
        assert_eq!(first, again, "sticky for {user}");
        if first["version"] == "v2" {
            at_five.push(user.clone());
        }
    }
    assert!(!at_five.is_empty() && at_five.len() < 60, "about 5 % of 400: {}", at_five.len());
    let r = app.set_percent("production", "checkout", json!({"v2": 10}), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut at_ten = 0;
    for user in &users {
        let d = app.decision("production", "checkout", json!({"targetingKey": user})).await;
        if d["version"] == "v2" {
            at_ten += 1;
        } else {
            assert!(!at_five.contains(user), "{user} left the cohort when it grew");
        }
    }
    assert!(at_ten >= at_five.len());
}

#[tokio::test]
async fn omitting_releases_evaluates_every_release_and_unknown_ones_say_so() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "a", 100.0).await;
    app.given_release("production", "b", 0.0).await;
    let r = app.evaluate("production", json!({"targetingKey": "u1"}), None).await;
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["results"]["a"]["version"], "v2");
    assert_eq!(body["results"]["b"]["version"], "v1");
    assert_eq!(body["results"]["b"]["reason"], "SPLIT");
    assert_eq!(body["revision"], 2);

    let d = app.decision("production", "ghost", json!({"targetingKey": "u1"})).await;
    assert_eq!(d, json!({"reason": "ERROR", "error": "FLAG_NOT_FOUND"}));
    let r = app.evaluate("nowhere", json!({"targetingKey": "u1"}), Some(vec!["a"])).await;
    assert_error(r, StatusCode::NOT_FOUND, "environment_not_found").await;
    let d = app.decision("production", "a", json!({"country": "NZ"})).await;
    assert_eq!(d, json!({"version": "v1", "value": "v1", "reason": "ERROR", "error": "TARGETING_KEY_MISSING"}));
}

#[tokio::test]
async fn kill_switches_serve_the_baseline_at_once() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 100.0).await;
    let ctx = json!({"targetingKey": "u1"});
    assert_eq!(app.decision("production", "checkout", ctx.clone()).await["version"], "v2");
    let r = app.post(&app.env_url("production", "/releases/checkout/kill"), &json!({"reason": "errors up"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!((body["killed"].clone(), body["kill_reason"].clone()), (json!(true), json!("errors up")));
    assert_eq!(
        app.decision("production", "checkout", ctx.clone()).await,
        json!({"version": "v1", "value": "v1", "reason": "DISABLED"})
    );
    let r = app.post(&app.env_url("production", "/releases/checkout/unkill"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.decision("production", "checkout", ctx.clone()).await["version"], "v2");

    let r = app.client.post(app.env_url("production", "/kill-all")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK, "kill-all needs no body");
    assert_eq!(app.decision("production", "checkout", ctx.clone()).await["reason"], "DISABLED");
    let r = app.client.post(app.env_url("production", "/unkill-all")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.decision("production", "checkout", ctx).await["version"], "v2");
}

#[tokio::test]
async fn malformed_evaluation_requests_get_json_errors() {
    let app = spawn_app(Backend::Embedded).await;
    let url = app.env_url("production", "/evaluate");
    let r = app.client.post(&url).body("{not json").send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_json").await;
    let r = app.post(&url, &json!({"context": "u1"})).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = app.post(&url, &json!({"context": {}, "flags": []})).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = app.post(&app.env_url("Prod!", "/evaluate"), &json!({"context": {}})).await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_environment").await;
    let r = app.client.get(&url).send().await.expect("sent");
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let r = app.client.get(app.url("/v2/nothing")).send().await.expect("sent");
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

/// The evaluation, OFREP and snapshot routes are matched ahead of actix-web's router
/// (`api::hot`); these are the router's answers they must keep giving.
#[tokio::test]
async fn hot_routes_answer_as_the_router_would() {
    let app = spawn_app_with(Backend::Embedded, |s| s.server.max_body_bytes = 2_048).await;
    app.given_release("production", "a", 100.0).await;
    let url = app.env_url("production", "/evaluate");

    // Each key once, an unknown key with characters to escape answered as not found.
    let odd = "gh\"o\\st\u{1}";
    let r = app.post(&url, &json!({"context": {"targetingKey": "u1"}, "releases": ["a", odd, "a", odd]})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.expect("body");
    let body: Value = serde_json::from_str(&text).expect("valid JSON");
    let results = body["results"].as_object().expect("results");
    assert_eq!(results.len(), 2, "{text}");
    assert_eq!(
        results["a"],
        json!({"version": "v2", "value": "v2", "reason": "SPLIT", "bucket": results["a"]["bucket"]})
    );
    assert_eq!(results[odd], json!({"reason": "ERROR", "error": "FLAG_NOT_FOUND"}));

    // Keys as bytes: an escaped spelling finds the release, a non-string is the wrong
    // shape, an unknown key that is not UTF-8 is not JSON.
    let r = app.client.post(&url).body(r#"{"context": {"targetingKey": "u1"}, "releases": ["\u0061"]}"#).send().await;
    let body: Value = r.expect("sent").json().await.expect("json");
    assert_eq!(body["results"]["a"]["version"], "v2", "{body}");
    let r = app.post(&url, &json!({"context": {}, "releases": [7]})).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let mut raw = br#"{"context": {}, "releases": ["a", ""#.to_vec();
    raw.extend_from_slice(&[0xff, 0xfe]);
    raw.extend_from_slice(br#""]}"#);
    let r = app.client.post(&url).body(raw).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_json").await;

    // The body limit, with and without a declared length.
    let big = json!({"context": {"targetingKey": "x".repeat(4_096)}});
    assert_error(app.post(&url, &big).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let chunks = futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1_024])));
    let r = app.client.post(&url).body(reqwest::Body::wrap_stream(chunks)).send().await.expect("sent");
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let r = app.client.post(&url).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_json").await;

    // A percent-escaped environment is the router's business as much as ours: the hot
    // route answers as a routed one does.
    let escaped = app.url("/v1/envs/produc%74ion");
    let hot = app.post(&format!("{escaped}/evaluate"), &json!({"context": {"targetingKey": "u1"}})).await;
    let routed = app.client.get(format!("{escaped}/releases")).send().await.expect("sent");
    assert_eq!(hot.status(), routed.status());
    if hot.status() == StatusCode::OK {
        let hot: Value = hot.json().await.expect("json");
        assert_eq!(hot["results"]["a"]["version"], "v2");
    }

    // Latency is labelled by route pattern; unknown keys count under one label, so
    // callers cannot grow the label set.
    let r = app.client.get(app.url("/metrics")).send().await.expect("sent");
    let metrics = r.text().await.expect("metrics");
    assert!(
        metrics.contains(
            r#"cohort_http_request_duration_seconds_count{method="POST",route="/v1/envs/{env}/evaluate",status="2xx"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"cohort_http_request_duration_seconds_count{method="POST",route="/v1/envs/{env}/evaluate",status="4xx"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"cohort_evaluations_total{environment="production",reason="ERROR",release="-",version="-"}"#),
        "{metrics}"
    );
    assert!(!metrics.contains("gh"), "a caller's key never becomes a label");
}
