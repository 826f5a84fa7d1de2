//! The Rust OpenFeature provider (`cohort-sdk`, feature `openfeature`): the same cases
//! as the OFREP tests, evaluated locally from the SDK client's synced snapshot.

use crate::helpers::{Backend, TestApp, spawn_app, token};
use crate::ofrep::{ENV, flag_client, given_typed_flags, struct_json, user};
use crate::sse::DEADLINE;
use cohort_sdk::client::Client;
use cohort_sdk::client::openfeature::CohortProvider;
use open_feature::provider::{FeatureProvider, ProviderStatus};
use open_feature::{EvaluationContext, EvaluationErrorCode, EvaluationReason, FlagMetadataValue, StructValue};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

fn provider(app: &TestApp) -> CohortProvider {
    let client = Client::builder(&app.address, ENV, token("provider-app", ENV, "eval"))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
        .poll_interval(Duration::from_secs(3_600))
        .build()
        .expect("client");
    CohortProvider::new(client).init_timeout(DEADLINE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_resolves_boolean_string_number_and_object_flags_as_the_server_decides() {
    let app = spawn_app(Backend::Embedded).await;
    given_typed_flags(&app).await;
    let flags = flag_client(provider(&app)).await;
    let (mut on, mut off) = (0, 0);
    for i in 0..40 {
        let id = format!("user-{i}");
        let ctx = user(&id);
        let server = |key: &'static str| {
            let (app, id) = (&app, id.clone());
            async move { app.decision(ENV, key, json!({"targetingKey": id})).await }
        };

        let dark = flags.get_bool_details("dark-mode", Some(&ctx), None).await.expect("boolean flag");
        let expected = server("dark-mode").await;
        assert_eq!(dark.variant.as_deref(), expected["version"].as_str(), "{id}");
        assert_eq!(json!(dark.value), expected["value"]);
        assert_eq!(dark.reason, Some(EvaluationReason::Split));
        let bucket = dark.flag_metadata.values.get("bucket");
        assert_eq!(bucket, Some(&FlagMetadataValue::Int(expected["bucket"].as_i64().expect("bucket"))));
        if dark.value {
            on += 1
        } else {
            off += 1
        }

        let theme = flags.get_string_value("theme", Some(&ctx), None).await.expect("string flag");
        assert_eq!(json!(theme), server("theme").await["value"]);
        let items = flags.get_int_value("max-items", Some(&ctx), None).await.expect("integer flag");
        assert_eq!(json!(items), server("max-items").await["value"]);
        let ratio = flags.get_float_value("ratio", Some(&ctx), None).await.expect("float flag");
        assert_eq!(json!(ratio), server("ratio").await["value"]);
        let layout = flags.get_struct_value::<StructValue>("layout", Some(&ctx), None).await.expect("object flag");
        assert_eq!(struct_json(&layout), server("layout").await["value"]);
        let checkout = flags.get_string_value("checkout", Some(&ctx), None).await.expect("untyped flag");
        assert_eq!(json!(checkout), server("checkout").await["version"]);
    }
    assert!(on > 0 && off > 0, "both variants are served: {on} on, {off} off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_answers_are_sticky_across_calls() {
    let app = spawn_app(Backend::Embedded).await;
    given_typed_flags(&app).await;
    let flags = flag_client(provider(&app)).await;
    for i in 0..30 {
        let ctx = user(&format!("sticky-{i}"));
        let first = flags.get_string_details("theme", Some(&ctx), None).await.expect("flag");
        for _ in 0..3 {
            let again = flags.get_string_details("theme", Some(&ctx), None).await.expect("flag");
            assert_eq!((&again.value, &again.variant), (&first.value, &first.variant));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_flag_gives_the_callers_default_with_flag_not_found() {
    let app = spawn_app(Backend::Embedded).await;
    given_typed_flags(&app).await;
    let flags = flag_client(provider(&app)).await;
    let result = flags.get_bool_value("no-such-flag", Some(&user("u-1")), None).await;
    assert_eq!(result.clone().expect_err("not found").code, EvaluationErrorCode::FlagNotFound);
    assert!(result.unwrap_or(true), "the caller's default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_release_serves_its_baseline_with_reason_disabled_once_the_kill_arrives() {
    let app = spawn_app(Backend::Embedded).await;
    given_typed_flags(&app).await;
    let r = app.set_percent(ENV, "dark-mode", json!({"on": 100}), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let provider = provider(&app);
    let mut changes = provider.changes();
    let flags = flag_client(provider).await;
    let ctx = user("u-7");
    let before = flags.get_bool_details("dark-mode", Some(&ctx), None).await.expect("flag");
    assert_eq!((before.value, before.variant.as_deref()), (true, Some("on")));

    changes.mark_unchanged();
    let r = app.post(&app.env_url(ENV, "/releases/dark-mode/kill"), &json!({"reason": "errors"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let killed = app.served_revision(ENV).await;
    let heard = tokio::time::timeout(DEADLINE, changes.wait_for(|revision| *revision >= killed)).await;
    assert!(matches!(heard, Ok(Ok(_))), "the provider tells of the change");
    let after = flags.get_bool_details("dark-mode", Some(&ctx), None).await.expect("flag");
    assert_eq!((after.value, after.variant.as_deref()), (false, Some("off")), "the baseline");
    assert_eq!(after.reason, Some(EvaluationReason::Disabled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_and_missing_units_are_openfeature_errors() {
    let app = spawn_app(Backend::Embedded).await;
    given_typed_flags(&app).await;
    let flags = flag_client(provider(&app)).await;
    let ctx = user("u-1");
    let wrong = flags.get_bool_value("theme", Some(&ctx), None).await.expect_err("strings are not booleans");
    assert_eq!(wrong.code, EvaluationErrorCode::TypeMismatch);
    let wrong = flags.get_int_value("ratio", Some(&ctx), None).await.expect_err("0.25 is not an integer");
    assert_eq!(wrong.code, EvaluationErrorCode::TypeMismatch);
    let no_unit = EvaluationContext::default().with_custom_field("country", "NZ");
    let missing = flags.get_bool_value("dark-mode", Some(&no_unit), None).await.expect_err("no unit");
    assert_eq!(missing.code, EvaluationErrorCode::TargetingKeyMissing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_is_not_ready_until_a_configuration_arrives() {
    // Nothing listens on this port: the client never gets a snapshot.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let client = Client::builder(format!("http://127.0.0.1:{closed}"), ENV, token("p", ENV, "eval"))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build()
        .expect("client");
    let provider = CohortProvider::new(client).init_timeout(Duration::from_millis(50));
    assert_eq!(provider.status(), ProviderStatus::NotReady);
    let flags = flag_client(provider).await;
    let error = flags.get_bool_value("dark-mode", Some(&user("u-1")), None).await.expect_err("not ready");
    assert_eq!(error.code, EvaluationErrorCode::ProviderNotReady);
}
