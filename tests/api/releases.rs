//! Release administration: validation, conditional writes, and nothing invalid reaching
//! the store.

use crate::helpers::{Backend, assert_error, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_created_release_is_returned_with_its_revision_and_etag() {
    let app = spawn_app(Backend::Embedded).await;
    let r = app
        .create_release(
            "production",
            json!({"key": "checkout", "versions": ["v1", "v2", "v3"], "allocation": {"v2": 12.345},
                   "rules": [{"when": [{"attr": "country", "op": "in", "values": ["NZ"]}], "serve": "v3"}],
                   "description": "new checkout"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["allocation"], json!({"v2": 12.345}));
    assert_eq!(body["bucketing"], "xxh3-slots-v1");
    assert_eq!(body["salt"], "checkout");
    assert_eq!(body["unit"], "targetingKey");
    assert_eq!(body["revision"], 1);

    let r = app.get_release("production", "checkout").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let listed: Value = app.get_json(app.env_url("production", "/releases")).await;
    assert_eq!(listed["releases"][0]["key"], "checkout");
    assert_eq!(listed["revision"], 1);
}

#[tokio::test]
async fn invalid_releases_are_refused_with_what_is_wrong_and_never_stored() {
    let app = spawn_app(Backend::Embedded).await;
    let cases = [
        (json!({"key": "a", "versions": ["v1"]}), "versions"),
        (json!({"key": "a", "versions": ["v1", "v1"]}), "listed twice"),
        (json!({"key": "bad key!", "versions": ["v1", "v2"]}), "not a valid key"),
        (json!({"key": "a", "versions": ["v1", "v2"], "allocation": {"v9": 5}}), "not one of the release's versions"),
        (json!({"key": "a", "versions": ["v1", "v2"], "allocation": {"v1": 5}}), "baseline"),
        (
            json!({"key": "a", "versions": ["v1", "v2", "v3"], "allocation": {"v2": 50.001}}),
            "50.001 % exceeds the candidate's slot of 50 %",
        ),
        (json!({"key": "a", "versions": ["v1", "v2"], "allocation": {"v2": 1.0005}}), "at most 3 decimals"),
        (json!({"key": "a", "versions": ["v1", "v2"], "allocation": {"v2": -1}}), "between 0 and 100"),
        (json!({"key": "a", "versions": ["v1", "v2"], "bucketing": "md5"}), "unknown bucketing"),
        (
            json!({"key": "a", "versions": ["v1", "v2"], "audience": [{"attr": "x", "op": "regex", "values": ["."]}]}),
            "unknown op `regex`",
        ),
        (
            json!({"key": "a", "versions": ["v1", "v2"], "rules": [{"when": [{"attr": "v", "op": "semver_gte", "values": ["one"]}], "serve": "v2"}]}),
            "version like",
        ),
        (json!({"key": "a", "versions": ["v1", "v2"], "rules": [{"when": [], "serve": "v7"}]}), "rules[0].serve"),
        (json!({"key": "a", "versions": ["v1", "v2"], "overrides": {"u1": "v7"}}), "overrides.u1"),
    ];
    for (body, says) in cases {
        let r = app.create_release("production", body.clone()).await;
        let message = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_release").await;
        assert!(message.contains(says), "{body}: {message:?} should mention {says:?}");
    }
    let r = app.create_release("production", json!({"key": "a", "versions": ["v1", "v2"], "colour": "red"})).await;
    let message = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    assert!(message.contains("colour"));
    let r = app.client.post(app.env_url("production", "/releases")).body("{\"key\":").send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_json").await;
    let huge = json!({"key": "a", "versions": ["v1", "v2"], "description": "x".repeat(300_000)});
    // Its own client: the server closes a connection whose body it refused to read.
    let admin = crate::helpers::token("a", "*", "admin");
    let r = crate::helpers::client_with(&admin)
        .post(app.env_url("production", "/releases"))
        .json(&huge)
        .send()
        .await
        .expect("sent");
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    assert_eq!(app.served_revision("production").await, 0, "nothing reached the store");
    let journals: String = std::fs::read_dir(app.data_dir.join("envs/production"))
        .map(|dir| dir.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect())
        .unwrap_or_default();
    assert!(!journals.contains("\"a\""));
}

#[tokio::test]
async fn a_duplicate_key_conflicts() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 1.0).await;
    let r = app.create_release("production", json!({"key": "checkout", "versions": ["v1", "v2"]})).await;
    assert_error(r, StatusCode::CONFLICT, "already_exists").await;
}

#[tokio::test]
async fn replace_needs_a_current_if_match() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 1.0).await;
    let url = app.env_url("production", "/releases/checkout");
    let body = json!({"versions": ["v1", "v2"], "allocation": {"v2": 3}});
    let r = app.client.put(&url).json(&body).send().await.expect("sent");
    assert_error(r, StatusCode::PRECONDITION_REQUIRED, "precondition_required").await;
    let r = app.client.put(&url).header("If-Match", "\"1\"").json(&body).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let r = app.client.put(&url).header("If-Match", "\"1\"").json(&body).send().await.expect("sent");
    let message = assert_error(r, StatusCode::PRECONDITION_FAILED, "revision_mismatch").await;
    assert!(message.contains("revision 2"));
    let r = app.client.put(&url).header("If-Match", "soon").json(&body).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = app
        .client
        .put(&url)
        .header("If-Match", "\"2\"")
        .json(&json!({"key": "other", "versions": ["v1", "v2"]}))
        .send()
        .await
        .expect("sent");
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_release").await;
}

#[tokio::test]
async fn a_replace_does_not_revive_a_killed_release() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let r = app.post(&app.env_url("production", "/releases/checkout/kill"), &json!({"reason": "bad"})).await;
    let rev = r.json::<Value>().await.expect("json")["revision"].as_u64().expect("rev");
    let r = app
        .client
        .put(app.env_url("production", "/releases/checkout"))
        .header("If-Match", rev.to_string())
        .json(&json!({"versions": ["v1", "v2"], "allocation": {"v2": 60}}))
        .send()
        .await
        .expect("sent");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["killed"], true);
    assert_eq!(body["allocation"]["v2"], 60.0);
}

#[tokio::test]
async fn allocation_updates_are_validated_and_conditional() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 1.0).await;
    let r = app.set_percent("production", "checkout", json!({"v2": 100.5}), None).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_release").await;
    let r = app.set_percent("production", "checkout", json!({"v3": 1}), None).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_release").await;
    let r = app.set_percent("production", "checkout", json!({}), None).await;
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_release").await;
    let r = app.set_percent("production", "ghost", json!({"v2": 1}), None).await;
    assert_error(r, StatusCode::NOT_FOUND, "release_not_found").await;
    let r = app.set_percent("production", "checkout", json!({"v2": 7}), Some(9)).await;
    assert_error(r, StatusCode::PRECONDITION_FAILED, "revision_mismatch").await;
    let r = app.set_percent("production", "checkout", json!({"v2": 7}), Some(1)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json")["allocation"]["v2"], 7.0);
}

#[tokio::test]
async fn delete_removes_the_release() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 1.0).await;
    let url = app.env_url("production", "/releases/checkout");
    let r = app.client.delete(&url).header("If-Match", "\"5\"").send().await.expect("sent");
    assert_error(r, StatusCode::PRECONDITION_FAILED, "revision_mismatch").await;
    let r = app.client.delete(&url).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app.get_release("production", "checkout").await;
    assert_error(r, StatusCode::NOT_FOUND, "release_not_found").await;
    let d = app.decision("production", "checkout", json!({"targetingKey": "u"})).await;
    assert_eq!(d["error"], "FLAG_NOT_FOUND");
}

#[tokio::test]
async fn a_malformed_kill_body_is_refused_but_an_empty_one_is_fine() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 1.0).await;
    let url = app.env_url("production", "/releases/checkout/kill");
    let r = app.client.post(&url).body("{reason").send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_json").await;
    let r = app.client.post(&url).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app(Backend::Embedded).await;
    let r = app.client.get(app.url("/healthz")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.client.get(app.url("/readyz")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json")["store"], "embedded");
}

/// The audit entries of `production` (newest first), for "nothing was written" checks.
async fn audit_entries(app: &crate::helpers::TestApp) -> Vec<Value> {
    let page = app.get_json(app.env_url("production", "/audit?limit=1000")).await;
    page["entries"].as_array().expect("entries").clone()
}

#[tokio::test]
async fn a_second_kill_writes_nothing_and_only_a_new_reason_replaces_the_first() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 10.0).await;
    let url = app.env_url("production", "/releases/checkout/kill");
    let kill = |body: Value| {
        let (app, url) = (&app, &url);
        async move { app.post(url, &body).await }
    };
    let r = kill(json!({"reason": "5xx spike"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let first: Value = r.json().await.expect("json");
    let audited = audit_entries(&app).await.len();

    for again in [json!({}), json!({"reason": ""}), json!({"reason": "5xx spike"})] {
        let r = kill(again.clone()).await;
        assert_eq!(r.status(), StatusCode::OK, "{again}");
        assert_eq!(r.headers()["etag"], format!("\"{}\"", first["revision"]));
        let body: Value = r.json().await.expect("json");
        assert_eq!(
            (body["revision"].clone(), body["kill_reason"].clone()),
            (first["revision"].clone(), json!("5xx spike"))
        );
    }
    assert_eq!(audit_entries(&app).await.len(), audited, "a repeated kill is not audited");

    let r = kill(json!({"reason": "root cause: bad cache"})).await;
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["kill_reason"], "root cause: bad cache");
    assert_eq!(body["revision"], first["revision"].as_u64().expect("rev") + 1);
    let entries = audit_entries(&app).await;
    assert_eq!(entries.len(), audited + 1);
    assert_eq!(
        (entries[0]["action"].clone(), entries[0]["reason"].clone()),
        (json!("kill"), json!("root cause: bad cache"))
    );
}

#[tokio::test]
async fn unkilling_a_live_release_writes_nothing() {
    let app = spawn_app(Backend::Embedded).await;
    let created = app.given_release("production", "checkout", 10.0).await;
    let r = app.post(&app.env_url("production", "/releases/checkout/unkill"), &json!({"reason": "just in case"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!((body["killed"].clone(), body["revision"].clone()), (json!(false), created["revision"].clone()));
    assert_eq!(audit_entries(&app).await.len(), 1, "only the create");
}

#[tokio::test]
async fn kill_all_is_idempotent_and_keeps_the_incidents_reason() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 10.0).await;
    let switch = |path: &'static str, body: Value| {
        let app = &app;
        async move { app.post(&app.env_url("production", path), &body).await }
    };
    let first: Value = switch("/kill-all", json!({"reason": "incident 42"})).await.json().await.expect("json");
    assert_eq!(first["kill_all"], true);
    let audited = audit_entries(&app).await.len();

    for again in [json!({}), json!({"reason": "  "}), json!({"reason": "incident 42"})] {
        let r = switch("/kill-all", again.clone()).await;
        assert_eq!(r.status(), StatusCode::OK, "{again}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(
            (body["revision"].clone(), body["kill_reason"].clone()),
            (first["revision"].clone(), json!("incident 42"))
        );
    }
    assert_eq!(audit_entries(&app).await.len(), audited, "a repeated kill-all is not audited");
    let env = app.get_json(app.env_url("production", "")).await;
    assert_eq!((env["kill_all"].clone(), env["kill_reason"].clone()), (json!(true), json!("incident 42")));

    let body: Value =
        switch("/kill-all", json!({"reason": "incident 42: db failover"})).await.json().await.expect("json");
    assert_eq!(body["kill_reason"], "incident 42: db failover");
    assert_eq!(audit_entries(&app).await.len(), audited + 1, "a new reason is one audited write");

    let off: Value = switch("/unkill-all", json!({})).await.json().await.expect("json");
    assert_eq!((off["kill_all"].clone(), off["kill_reason"].clone()), (json!(false), Value::Null));
    let again: Value = switch("/unkill-all", json!({})).await.json().await.expect("json");
    assert_eq!(again["revision"], off["revision"], "unkill-all of a live environment writes nothing");
    assert_eq!(audit_entries(&app).await.len(), audited + 2);
}
