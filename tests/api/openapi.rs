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

/// Every schema a request body can reach, `$ref`s followed.
fn request_body_schemas(doc: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    fn walk(
        doc: &serde_json::Value,
        at: String,
        schema: &serde_json::Value,
        seen: &mut Vec<String>,
        out: &mut Vec<(String, serde_json::Value)>,
    ) {
        if let Some(reference) = schema.get("$ref").and_then(|r| r.as_str()) {
            let name = reference.trim_start_matches("#/components/schemas/").to_owned();
            if !seen.contains(&name) {
                seen.push(name.clone());
                walk(doc, name.clone(), &doc["components"]["schemas"][&name], seen, out);
            }
            return;
        }
        out.push((at.clone(), schema.clone()));
        let children = ["properties", "items", "additionalProperties", "oneOf", "anyOf", "allOf", "propertyNames"];
        for key in children {
            match schema.get(key) {
                Some(serde_json::Value::Object(map)) if key == "properties" => {
                    for (name, child) in map {
                        walk(doc, format!("{at}.{name}"), child, seen, out);
                    }
                }
                Some(serde_json::Value::Array(list)) => {
                    for child in list {
                        walk(doc, format!("{at}.{key}"), child, seen, out);
                    }
                }
                Some(child @ serde_json::Value::Object(_)) => walk(doc, format!("{at}.{key}"), child, seen, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("path item").values() {
            for media in operation["requestBody"]["content"].as_object().into_iter().flat_map(|c| c.values()) {
                walk(doc, "body".into(), &media["schema"], &mut seen, &mut out);
            }
        }
    }
    out
}

#[test]
fn request_bodies_are_described_field_by_field_not_as_bare_objects() {
    let doc: serde_json::Value = serde_json::from_str(&cohort::api::openapi::document_json()).expect("JSON");
    let schemas = request_body_schemas(&doc);
    let bare: Vec<&str> = schemas
        .iter()
        .filter(|(_, s)| {
            s.get("type") == Some(&serde_json::json!("object"))
                && s.get("properties").is_none()
                && s.get("additionalProperties").is_none()
        })
        .map(|(at, _)| at.as_str())
        .collect();
    assert!(bare.is_empty(), "bare objects in request bodies: {bare:?}");
    let schema = |name: &str| &doc["components"]["schemas"][name];
    let ops = schema("Condition")["properties"]["op"]["enum"].as_array().expect("op names");
    assert_eq!(ops.len(), cohort_sdk::Op::ALL.len());
    assert_eq!(schema("ReleaseInput")["properties"]["rules"]["items"]["$ref"], "#/components/schemas/Rule");
    assert_eq!(schema("ReleaseInput")["properties"]["audience"]["items"]["$ref"], "#/components/schemas/Condition");
    assert_eq!(schema("ReleaseInput")["properties"]["versions"]["minItems"], 2);
    assert_eq!(schema("EvaluateRequest")["properties"]["context"]["$ref"], "#/components/schemas/Context");
    assert!(schema("Context")["additionalProperties"].is_object());
}

#[test]
fn both_event_streams_document_their_events_and_the_ofrep_stream_its_ticket() {
    let doc: serde_json::Value = serde_json::from_str(&cohort::api::openapi::document_json()).expect("JSON");
    for path in ["/v1/envs/{env}/stream", "/ofrep/v1/events"] {
        let ok = &doc["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"];
        assert_eq!(ok["$ref"], "#/components/schemas/SseEvent", "{path}");
    }
    let events = &doc["paths"]["/ofrep/v1/events"]["get"];
    let params: Vec<&str> =
        events["parameters"].as_array().expect("params").iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(params.contains(&"ticket") && !params.contains(&"token"), "{params:?}");
    for status in ["400", "401", "403"] {
        assert!(events["responses"][status].is_object(), "{status}");
    }
}
