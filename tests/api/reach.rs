//! Kill confirmation: SDKs acknowledge what they applied; `cohort kill --wait` reports
//! how many connected SDKs have the kill and names the ones that do not.

use crate::helpers::{
    Backend, TestApp, assert_error, client_with, eventually, reach, run_cohort, sdk_with_id as sdk, spawn_app, token,
};
use crate::sse::DEADLINE;
use cohort_sdk::client::Client;
use reqwest::StatusCode;
use serde_json::json;
use std::process::Output;

async fn cohort(app: &TestApp, args: &[&str]) -> Output {
    run_cohort(app, token("oncall", "production", "kill"), args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_wait_reports_every_connected_sdk_applying_the_kill() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let clients: Vec<Client> = (0..3).map(|i| sdk(&app, &format!("web-{i}"))).collect();
    for client in &clients {
        assert!(client.wait_ready(DEADLINE).await);
    }
    assert!(eventually(DEADLINE, || async { reach(&app, 1).await["applied"] == 3 }).await, "all three acknowledged");

    let o = cohort(&app, &["kill", "checkout", "--reason", "pager", "--wait"]).await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("killed checkout at revision 2"), "{stdout}");
    assert!(stdout.contains("applied by 3/3 connected SDKs in"), "{stdout}");
    let r = reach(&app, 2).await;
    assert_eq!((r["connected"].clone(), r["applied"].clone()), (json!(3), json!(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_wait_names_the_sdks_that_have_not_applied_it() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    let live = sdk(&app, "web-live");
    assert!(live.wait_ready(DEADLINE).await);
    // An SDK that acknowledged revision 1 and then stopped hearing anything.
    let stuck = client_with(&token("sdk", "production", "eval"));
    let r = stuck
        .post(app.env_url("production", "/ack"))
        .json(&json!({"sdk_id": "web-stuck", "revision": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let o = cohort(&app, &["kill-all", "--wait", "--wait-timeout", "1s"]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(6), "not confirmed: {stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("applied by 1/2 connected SDKs"), "{all}");
    assert!(all.contains("web-stuck") && !all.contains("web-live"), "{all}");
    assert!(all.contains("KILL-ALL ON"), "the kill itself is reported even when unconfirmed: {all}");
    assert_eq!(
        live.version("checkout", &cohort_sdk::Context::with_targeting_key("u"), "v1").reason,
        cohort_sdk::Reason::Disabled
    );
}

#[tokio::test]
async fn acknowledgements_are_validated_and_scoped() {
    let app = spawn_app(Backend::Embedded).await;
    let sdk = client_with(&token("sdk", "production", "eval"));
    let url = app.env_url("production", "/ack");
    let r = sdk.post(&url).json(&json!({"sdk_id": "", "revision": 1})).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = sdk.post(&url).json(&json!({"sdk_id": "a b", "revision": 1})).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = sdk.get(app.env_url("production", "/reach?revision=1")).send().await.expect("sent");
    assert_error(r, StatusCode::FORBIDDEN, "missing_scope").await;
    let r = app.client.get(app.env_url("production", "/reach")).send().await.expect("sent");
    assert_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
}
