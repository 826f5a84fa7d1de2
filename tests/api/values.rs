//! Typed values: declared per release, validated on write (422 `invalid_release`), shown
//! by the admin API and carried by every evaluation.

use crate::helpers::{Backend, assert_error, spawn_app};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn values_of_mixed_types_are_refused_with_invalid_release() {
    let app = spawn_app(Backend::Embedded).await;
    let r = app
        .create_release(
            "production",
            json!({"key": "banner", "versions": ["off", "on"], "values": {"off": false, "on": "yes"}}),
        )
        .await;
    let message = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_release").await;
    assert!(message.contains("values.on") && message.contains("one type"), "{message}");
}

#[tokio::test]
async fn a_version_without_a_value_is_refused_with_invalid_release() {
    let app = spawn_app(Backend::Embedded).await;
    let r = app
        .create_release(
            "production",
            json!({"key": "limits", "versions": ["v1", "v2", "v3"], "values": {"v1": 1, "v2": 2}}),
        )
        .await;
    let message = assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_release").await;
    assert!(message.contains("values.v3") && message.contains("no value"), "{message}");
}

#[tokio::test]
async fn values_of_unknown_versions_null_and_arrays_are_refused_and_nothing_is_written() {
    let app = spawn_app(Backend::Embedded).await;
    for values in [json!({"v1": 1, "v2": 2, "v9": 3}), json!({"v1": null, "v2": null}), json!({"v1": [1], "v2": [2]})] {
        let r = app.create_release("production", json!({"key": "k", "versions": ["v1", "v2"], "values": values})).await;
        assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_release").await;
    }
    assert_eq!(app.get_release("production", "k").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_release_with_values_shows_them_and_evaluations_carry_the_value() {
    let app = spawn_app(Backend::Embedded).await;
    let layout = json!({"v1": {"columns": 1}, "v2": {"columns": 2, "sidebar": true}});
    let r = app
        .create_release(
            "production",
            json!({"key": "layout", "versions": ["v1", "v2"], "values": layout, "allocation": {"v2": 100}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let view: serde_json::Value = app.get_release("production", "layout").await.json().await.expect("json");
    assert_eq!(view["values"], layout);
    let decision = app.decision("production", "layout", json!({"targetingKey": "u-1"})).await;
    assert_eq!(decision["version"], "v2");
    assert_eq!(decision["value"], layout["v2"]);

    app.given_release("production", "checkout", 0.0).await;
    let decision = app.decision("production", "checkout", json!({"targetingKey": "u-1"})).await;
    assert_eq!(decision["value"], "v1", "without values, the version name");
    let view: serde_json::Value = app.get_release("production", "checkout").await.json().await.expect("json");
    assert!(view.get("values").is_none(), "{view}");
}

#[tokio::test]
async fn replacing_a_release_validates_its_values_too() {
    let app = spawn_app(Backend::Embedded).await;
    let created = app.given_release("production", "checkout", 5.0).await;
    let revision = created["revision"].as_u64().expect("revision");
    let r = app
        .client
        .put(app.env_url("production", "/releases/checkout"))
        .header("If-Match", format!("\"{revision}\""))
        .json(&json!({"versions": ["v1", "v2"], "values": {"v1": 1, "v2": {"n": 2}}}))
        .send()
        .await
        .expect("sent");
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_release").await;
}
