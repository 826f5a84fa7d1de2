//! The audit log over HTTP: every action names its actor, pages newest first.

use crate::helpers::{Backend, assert_error, client_with, spawn_app, token};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn every_change_is_audited_with_the_actor_from_the_token() {
    let app = spawn_app(Backend::Embedded).await;
    let env = |path: &str| app.env_url("production", path);
    let alice = client_with(&token("alice", "production", "write"));
    let oncall = client_with(&token("oncall", "production", "kill"));

    let r = alice
        .post(env("/releases"))
        .json(&json!({"key": "checkout", "versions": ["v1", "v2"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::CREATED);
    alice.post(env("/releases/checkout/allocation")).json(&json!({"percent": {"v2": 5}})).send().await.expect("sent");
    oncall.post(env("/releases/checkout/kill")).json(&json!({"reason": "5xx spike"})).send().await.expect("sent");
    oncall.post(env("/releases/checkout/unkill")).send().await.expect("sent");
    alice
        .put(env("/releases/checkout"))
        .header("If-Match", "4")
        .json(&json!({"versions": ["v1", "v2"], "description": "new"}))
        .send()
        .await
        .expect("sent");
    oncall.post(env("/kill-all")).json(&json!({"reason": "incident"})).send().await.expect("sent");
    oncall.post(env("/unkill-all")).send().await.expect("sent");
    let r = alice.delete(env("/releases/checkout")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let page: Value = alice.get(env("/audit")).send().await.expect("sent").json().await.expect("json");
    let entries = page["entries"].as_array().expect("entries");
    let got: Vec<(u64, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["revision"].as_u64().expect("rev"),
                e["actor"].as_str().expect("actor"),
                e["action"].as_str().expect("action"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (8, "alice", "delete"),
            (7, "oncall", "unkill-all"),
            (6, "oncall", "kill-all"),
            (5, "alice", "update"),
            (4, "oncall", "unkill"),
            (3, "oncall", "kill"),
            (2, "alice", "allocation"),
            (1, "alice", "create"),
        ]
    );
    let allocation = &entries[6];
    assert_eq!(allocation["before"]["allocation"], json!({}));
    assert_eq!(allocation["after"]["allocation"], json!({"v2": 5000}));
    assert_eq!(allocation["release"], "checkout");
    assert!(allocation["time_ms"].as_u64().expect("time") > 0);
    let kill = &entries[5];
    assert_eq!(kill["reason"], "5xx spike");
    assert_eq!((kill["before"]["killed"].clone(), kill["after"]["killed"].clone()), (json!(false), json!(true)));
    let kill_all = &entries[2];
    assert_eq!(kill_all["release"], Value::Null);
    assert_eq!(kill_all["after"], json!({"kill_all": true, "kill_reason": "incident"}));
    assert_eq!(entries[0]["after"], Value::Null, "a delete has no after");
    assert_eq!(entries[7]["before"], Value::Null, "a create has no before");
}

#[tokio::test]
async fn the_audit_log_pages_newest_first_and_filters_by_release() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "a", 1.0).await;
    app.given_release("production", "b", 1.0).await;
    for p in [2, 3, 4] {
        app.set_percent("production", "a", json!({"v2": p}), None).await;
    }
    let get = |query: &'static str| {
        let url = app.env_url("production", &format!("/audit{query}"));
        let client = app.client.clone();
        async move { client.get(url).send().await.expect("sent").json::<Value>().await.expect("json") }
    };
    let revisions = |page: &Value| -> Vec<u64> {
        page["entries"].as_array().expect("entries").iter().map(|e| e["revision"].as_u64().expect("rev")).collect()
    };
    let first = get("?limit=2").await;
    assert_eq!(revisions(&first), vec![5, 4]);
    assert_eq!(first["next_before"], 4);
    assert_eq!(revisions(&get("?limit=2&before=4").await), vec![3, 2]);
    assert_eq!(revisions(&get("?release=b").await), vec![2]);
    assert_eq!(revisions(&get("?release=a&before=4").await), vec![3, 1]);
    let r = app.client.get(app.env_url("production", "/audit?limit=0")).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = app.client.get(app.env_url("production", "/audit?limit=ten")).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = client_with(&token("sdk", "production", "eval"))
        .get(app.env_url("production", "/audit"))
        .send()
        .await
        .expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
}
