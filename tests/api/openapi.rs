//! The OpenAPI document: the checked-in `openapi.json` is what the code generates, and
//! the server serves it, without a token.

use crate::helpers::{Backend, spawn_app};
use std::path::Path;

/// Rewrites `openapi.json` instead of failing when this is set.
const UPDATE_VAR: &str = "COHORT_UPDATE_OPENAPI";

#[test]
fn the_checked_in_openapi_json_is_what_the_code_generates() {
    let generated = cohort::api::openapi::document_json();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os(UPDATE_VAR).is_some() {
        std::fs::write(&path, &generated).expect("writes openapi.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "openapi.json differs from the document the code generates; regenerate it with\n\n    \
         {UPDATE_VAR}=1 cargo test --test api openapi::\n"
    );
}

#[test]
fn the_document_is_openapi_3_1_with_a_bearer_scheme() {
    let doc: serde_json::Value = serde_json::from_str(&cohort::api::openapi::document_json()).expect("JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], serde_json::json!([{}]));
    assert!(doc["paths"]["/v1/envs/{env}/releases"]["post"]["responses"]["401"].is_object());
}

#[tokio::test]
async fn the_server_serves_the_document_without_a_token() {
    let app = spawn_app(Backend::Embedded).await;
    let response = reqwest::get(app.url("/openapi.json")).await.expect("request");
    assert_eq!(response.status(), 200);
    let served = response.text().await.expect("body");
    assert_eq!(served, cohort::api::openapi::document_json());
    app.stop().await;
}
