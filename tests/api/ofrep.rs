//! The OFREP routes driven by an independently written client — the `open-feature`
//! crate with the `open-feature-ofrep` provider — and by hand where that client hides
//! what the server says (it reports every reason as `STATIC`).

use crate::helpers::{TEST_SECRET, TestApp, client_with, spawn_app, spawn_app_with, token};
use crate::sse::DEADLINE;
use cohort::config::Secret;
use cohort::ofrep::ticket::Tickets;
use futures_util::StreamExt;
use open_feature::provider::FeatureProvider;
use open_feature::{Client as FlagClient, EvaluationContext, EvaluationErrorCode, OpenFeature, StructValue};
use open_feature_ofrep::{OfrepOptions, OfrepProvider};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::time::Duration;

pub const ENV: &str = "production";

/// Releases of every value type, each with half of the units on its candidate.
pub async fn given_typed_flags(app: &TestApp) {
    let releases = [
        json!({"key": "dark-mode", "versions": ["off", "on"], "values": {"off": false, "on": true}}),
        json!({"key": "theme", "versions": ["blue", "green"], "values": {"blue": "#0000ff", "green": "#00ff00"}}),
        json!({"key": "max-items", "versions": ["few", "many"], "values": {"few": 10, "many": 50}}),
        json!({"key": "ratio", "versions": ["low", "high"], "values": {"low": 0.25, "high": 0.75}}),
        json!({"key": "layout", "versions": ["v1", "v2"],
               "values": {"v1": {"columns": 1}, "v2": {"columns": 2, "sidebar": true}}}),
        json!({"key": "checkout", "versions": ["v1", "v2"]}),
    ];
    for mut release in releases {
        let candidate = release["versions"][1].as_str().expect("name").to_owned();
        release["allocation"] = Value::Object([(candidate, json!(50))].into_iter().collect());
        let r = app.create_release(ENV, release).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap_or_default());
    }
}

/// An OpenFeature client over `provider`, on its own API instance (not the global
/// singleton, so tests stay independent).
pub async fn flag_client(provider: impl FeatureProvider) -> FlagClient {
    let mut api = OpenFeature::default();
    api.set_provider(provider).await;
    api.create_client()
}

async fn ofrep_client(app: &TestApp) -> FlagClient {
    let mut headers = HeaderMap::new();
    let bearer = format!("Bearer {}", token("ofrep-app", ENV, "eval"));
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&bearer).expect("header"));
    let options = OfrepOptions { base_url: app.address.clone(), headers, ..OfrepOptions::default() };
    flag_client(OfrepProvider::new(options).await.expect("provider")).await
}

pub fn user(id: &str) -> EvaluationContext {
    EvaluationContext::default().with_targeting_key(id)
}

/// `{"columns": 2, "sidebar": true}` as OpenFeature's structure, back to JSON.
pub fn struct_json(value: &StructValue) -> Value {
    let mut map = serde_json::Map::new();
    for (name, field) in &value.fields {
        let field = match field {
            open_feature::Value::Bool(b) => json!(b),
            open_feature::Value::Int(i) => json!(i),
            open_feature::Value::Float(f) => json!(f),
            open_feature::Value::String(s) => json!(s),
            other => json!(format!("{other:?}")),
        };
        map.insert(name.clone(), field);
    }
    Value::Object(map)
}

async fn ofrep_post(app: &TestApp, token: &str, path: &str, body: &str) -> reqwest::Response {
    client_with(token)
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent")
}

fn eval_token() -> String {
    token("ofrep-app", ENV, "eval")
}

#[tokio::test]
async fn an_ofrep_client_gets_boolean_string_number_and_object_flags_as_the_server_decides() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let flags = ofrep_client(&app).await;
    let (mut on, mut off) = (0, 0);
    for i in 0..40 {
        let id = format!("user-{i}");
        let ctx = user(&id);
        let expected = |key: &'static str| {
            let app = &app;
            let id = id.clone();
            async move { app.decision(ENV, key, json!({"targetingKey": id})).await }
        };

        let dark = flags.get_bool_details("dark-mode", Some(&ctx), None).await.expect("boolean flag");
        let server = expected("dark-mode").await;
        assert_eq!(dark.variant.as_deref(), server["version"].as_str(), "{id}");
        assert_eq!(json!(dark.value), server["value"]);
        if dark.value {
            on += 1
        } else {
            off += 1
        }

        let theme = flags.get_string_details("theme", Some(&ctx), None).await.expect("string flag");
        assert_eq!(json!(theme.value), expected("theme").await["value"]);

        let items = flags.get_int_value("max-items", Some(&ctx), None).await.expect("integer flag");
        assert_eq!(json!(items), expected("max-items").await["value"]);

        let ratio = flags.get_float_value("ratio", Some(&ctx), None).await.expect("float flag");
        assert_eq!(json!(ratio), expected("ratio").await["value"]);

        let layout = flags.get_struct_details::<StructValue>("layout", Some(&ctx), None).await.expect("object flag");
        assert_eq!(struct_json(&layout.value), expected("layout").await["value"]);

        let checkout = flags.get_string_value("checkout", Some(&ctx), None).await.expect("untyped flag");
        assert_eq!(json!(checkout), expected("checkout").await["version"], "without values, the version name");
    }
    assert!(on > 0 && off > 0, "both variants are served: {on} on, {off} off");
}

#[tokio::test]
async fn ofrep_answers_are_sticky_across_calls() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let flags = ofrep_client(&app).await;
    for i in 0..30 {
        let ctx = user(&format!("sticky-{i}"));
        let first = flags.get_bool_details("dark-mode", Some(&ctx), None).await.expect("flag");
        for _ in 0..3 {
            let again = flags.get_bool_details("dark-mode", Some(&ctx), None).await.expect("flag");
            assert_eq!((again.value, &again.variant), (first.value, &first.variant));
        }
    }
}

#[tokio::test]
async fn an_unknown_flag_gives_the_callers_default_with_flag_not_found() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let flags = ofrep_client(&app).await;
    let result = flags.get_bool_value("no-such-flag", Some(&user("u-1")), None).await;
    let error = result.clone().expect_err("not found");
    assert_eq!(error.code, EvaluationErrorCode::FlagNotFound);
    assert!(result.unwrap_or(true), "the caller's default");

    let r = ofrep_post(
        &app,
        &eval_token(),
        "/ofrep/v1/evaluate/flags/no-such-flag",
        r#"{"context":{"targetingKey":"u-1"}}"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["key"], "no-such-flag");
    assert_eq!(body["errorCode"], "FLAG_NOT_FOUND");
    assert!(body["errorDetails"].is_string());
}

#[tokio::test]
async fn a_killed_release_serves_its_baseline_with_reason_disabled() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let r = app.set_percent(ENV, "dark-mode", json!({"on": 100}), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let flags = ofrep_client(&app).await;
    let ctx = user("u-7");
    let before = flags.get_bool_details("dark-mode", Some(&ctx), None).await.expect("flag");
    assert_eq!((before.value, before.variant.as_deref()), (true, Some("on")));

    let r = app.post(&app.env_url(ENV, "/releases/dark-mode/kill"), &json!({"reason": "errors"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let after = flags.get_bool_details("dark-mode", Some(&ctx), None).await.expect("flag");
    assert_eq!((after.value, after.variant.as_deref()), (false, Some("off")), "the baseline");

    // open-feature-ofrep 0.1 reports every reason as STATIC; the wire says DISABLED.
    let r =
        ofrep_post(&app, &eval_token(), "/ofrep/v1/evaluate/flags/dark-mode", r#"{"context":{"targetingKey":"u-7"}}"#)
            .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body,
        json!({"key": "dark-mode", "value": false, "variant": "off", "reason": "DISABLED",
                            "metadata": {"revision": body["metadata"]["revision"]}})
    );
}

#[tokio::test]
async fn a_single_evaluation_carries_the_bucket_and_revision_in_its_metadata() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let r = ofrep_post(&app, &eval_token(), "/ofrep/v1/evaluate/flags/theme", r#"{"context":{"targetingKey":"u-3"}}"#)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    let native = app.decision(ENV, "theme", json!({"targetingKey": "u-3"})).await;
    assert_eq!(body["reason"], "SPLIT");
    assert_eq!(body["variant"], native["version"]);
    assert_eq!(body["value"], native["value"]);
    assert_eq!(body["metadata"]["bucket"], native["bucket"]);
    assert_eq!(body["metadata"]["revision"], app.served_revision(ENV).await);
}

#[tokio::test]
async fn bulk_evaluation_answers_304_on_an_unchanged_revision_and_200_with_a_new_etag_after_a_change() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let client = client_with(&eval_token());
    let bulk = |etag: Option<&str>, context: Value| {
        let mut request = client.post(app.url("/ofrep/v1/evaluate/flags")).json(&json!({"context": context}));
        if let Some(etag) = etag {
            request = request.header("If-None-Match", etag);
        }
        request.send()
    };
    let first = bulk(None, json!({"targetingKey": "u-1"})).await.expect("sent");
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().expect("text").to_owned();
    let body: Value = first.json().await.expect("json");
    let flags = body["flags"].as_array().expect("flags");
    assert_eq!(flags.len(), 6);
    let dark = flags.iter().find(|f| f["key"] == "dark-mode").expect("dark-mode");
    assert_eq!(dark["value"], app.decision(ENV, "dark-mode", json!({"targetingKey": "u-1"})).await["value"]);
    assert_eq!(body["metadata"]["revision"], app.served_revision(ENV).await);
    assert_eq!(body["eventStreams"][0]["type"], "sse");
    let url = body["eventStreams"][0]["url"].as_str().expect("url");
    assert!(url.starts_with(&format!("{}?ticket=", app.url("/ofrep/v1/events"))), "{url}");

    let unchanged = bulk(Some(&etag), json!({"targetingKey": "u-1"})).await.expect("sent");
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.headers()["etag"].to_str().expect("text"), etag);
    assert!(unchanged.bytes().await.expect("body").is_empty());

    let other_context = bulk(Some(&etag), json!({"targetingKey": "u-2"})).await.expect("sent");
    assert_eq!(other_context.status(), StatusCode::OK, "another context is another answer");

    let r = app.post(&app.env_url(ENV, "/releases/theme/kill"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let changed = bulk(Some(&etag), json!({"targetingKey": "u-1"})).await.expect("sent");
    assert_eq!(changed.status(), StatusCode::OK);
    let new_etag = changed.headers()["etag"].to_str().expect("text").to_owned();
    assert_ne!(new_etag, etag);
    let body: Value = changed.json().await.expect("json");
    let theme = body["flags"].as_array().and_then(|f| f.iter().find(|f| f["key"] == "theme")).expect("theme");
    assert_eq!((&theme["reason"], &theme["variant"]), (&json!("DISABLED"), &json!("blue")));
    let again = bulk(Some(&new_etag), json!({"targetingKey": "u-1"})).await.expect("sent");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn bulk_evaluation_reports_a_missing_unit_per_flag() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let r = ofrep_post(&app, &eval_token(), "/ofrep/v1/evaluate/flags", r#"{"context":{"country":"NZ"}}"#).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    for flag in body["flags"].as_array().expect("flags") {
        assert_eq!(flag["errorCode"], "TARGETING_KEY_MISSING", "{flag}");
        assert!(flag["key"].is_string() && flag.get("value").is_none());
    }
}

/// Reads SSE frames until one carries `data:`; returns its `id` and parsed data.
async fn next_event<B: AsRef<[u8]>>(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<B>> + Unpin),
    buf: &mut String,
) -> (String, Value) {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
            let id = frame.lines().find_map(|l| l.strip_prefix("id: ")).unwrap_or_default().to_owned();
            assert!(frame.contains("event: message\n"), "{frame}");
            return (id, serde_json::from_str(data).expect("JSON data"));
        }
        let chunk = tokio::time::timeout(DEADLINE, stream.next()).await.expect("an event in time");
        let chunk = chunk.expect("open").expect("bytes");
        buf.push_str(std::str::from_utf8(chunk.as_ref()).expect("utf-8"));
    }
}

#[tokio::test]
async fn the_advertised_event_stream_tells_clients_to_refetch_on_every_change() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let revision = app.served_revision(ENV).await;
    let response = client_with(&eval_token()).get(app.url("/ofrep/v1/events")).send().await.expect("connected");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let mut buf = String::new();
    let (id, data) = next_event(&mut stream, &mut buf).await;
    assert_eq!(data, json!({"type": "refetchEvaluation", "etag": revision.to_string()}), "one at once, for the race");
    assert_eq!(id, revision.to_string());

    let r = app.post(&app.env_url(ENV, "/releases/dark-mode/kill"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (id, data) = next_event(&mut stream, &mut buf).await;
    assert_eq!(data["type"], "refetchEvaluation");
    assert_eq!(id, (revision + 1).to_string(), "the kill's revision");

    // A client resuming at the current revision gets no event until something changes.
    let resumed = client_with(&eval_token())
        .get(app.url("/ofrep/v1/events"))
        .header("Last-Event-ID", id.as_str())
        .send()
        .await
        .expect("connected");
    let mut resumed = resumed.bytes_stream();
    let mut resumed_buf = String::new();
    let r = app.post(&app.env_url(ENV, "/releases/dark-mode/unkill"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (id, _) = next_event(&mut resumed, &mut resumed_buf).await;
    assert_eq!(id, (revision + 2).to_string());
    drop((stream, resumed));
}

#[tokio::test]
async fn ofrep_failures_have_ofrep_shapes_and_statuses() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let single = "/ofrep/v1/evaluate/flags/dark-mode";
    let cases: Vec<(&str, String, &str, StatusCode, Option<&str>)> = vec![
        (single, eval_token(), "{not json", StatusCode::BAD_REQUEST, Some("PARSE_ERROR")),
        (single, eval_token(), "", StatusCode::BAD_REQUEST, Some("PARSE_ERROR")),
        (single, eval_token(), r#"{"context": null, "x": 1}"#, StatusCode::BAD_REQUEST, Some("TARGETING_KEY_MISSING")),
        (single, eval_token(), r#"{"context": "user-1"}"#, StatusCode::BAD_REQUEST, Some("INVALID_CONTEXT")),
        (
            single,
            eval_token(),
            r#"{"context": {"country": "NZ"}}"#,
            StatusCode::BAD_REQUEST,
            Some("TARGETING_KEY_MISSING"),
        ),
        ("/ofrep/v1/evaluate/flags", eval_token(), "[", StatusCode::BAD_REQUEST, Some("PARSE_ERROR")),
        (
            "/ofrep/v1/evaluate/flags",
            eval_token(),
            r#"{"context": [1]}"#,
            StatusCode::BAD_REQUEST,
            Some("INVALID_CONTEXT"),
        ),
        (single, "not-a-token".into(), "{}", StatusCode::UNAUTHORIZED, None),
        (single, token("reader", ENV, "read"), "{}", StatusCode::FORBIDDEN, None),
        (single, token("admin", "*", "admin"), "{}", StatusCode::FORBIDDEN, None),
    ];
    for (path, token, body, status, code) in cases {
        let r = ofrep_post(&app, &token, path, body).await;
        assert_eq!(r.status(), status, "{path} {body}");
        let json: Value = r.json().await.expect("a JSON body");
        assert!(json.get("error").is_none(), "not cohort's shape: {json}");
        assert!(json["errorDetails"].as_str().is_some_and(|d| !d.is_empty()), "{json}");
        match code {
            Some(code) => {
                assert_eq!(json["errorCode"], code, "{path} {body}: {json}");
                assert_eq!(json.get("key").is_some(), path == single, "{json}");
            }
            None => assert!(json.get("errorCode").is_none(), "{json}"),
        }
    }
}

#[tokio::test]
async fn the_environment_comes_from_the_token_or_for_a_wildcard_token_from_a_header() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let path = app.url("/ofrep/v1/evaluate/flags/dark-mode");
    let body = json!({"context": {"targetingKey": "u-1"}});
    let send = |token: String, env: Option<&'static str>| {
        let mut request = client_with(&token).post(path.clone()).json(&body);
        if let Some(env) = env {
            request = request.header("X-Cohort-Env", env);
        }
        request.send()
    };
    let r = send(token("staging-app", "staging", "eval"), None).await.expect("sent");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "staging has no such flag");
    let r = send(token("admin", "*", "admin"), None).await.expect("sent");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let details: Value = r.json().await.expect("json");
    assert!(details["errorDetails"].as_str().expect("details").contains("X-Cohort-Env"), "{details}");
    let r = send(token("admin", "*", "admin"), Some(ENV)).await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(token("staging-app", "staging", "eval"), Some(ENV)).await.expect("sent");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a one-environment token cannot name another");
    let r = send(token("admin", "*", "admin"), Some("Not An Env")).await.expect("sent");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// The stream URL of a bulk answer for `token` (with extra `headers`).
async fn stream_url(app: &TestApp, token: &str, headers: &[(&str, &str)]) -> String {
    let mut request =
        client_with(token).post(app.url("/ofrep/v1/evaluate/flags")).json(&json!({"context": {"targetingKey": "u-1"}}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let bulk = request.send().await.expect("sent");
    assert_eq!(bulk.status(), StatusCode::OK);
    let body: Value = bulk.json().await.expect("json");
    body["eventStreams"][0]["url"].as_str().expect("url").to_owned()
}

fn ticket_of(url: &str) -> &str {
    url.split_once("?ticket=").map(|(_, ticket)| ticket).expect("a ticket in the URL")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// Tickets as every instance sharing the test secret makes them.
fn tickets() -> Tickets {
    Tickets::new(&Secret::new(TEST_SECRET), Duration::from_secs(300), 0)
}

/// A body that is OFREP's `generalErrorResponse` and whose details mention `words`.
async fn assert_refused(response: reqwest::Response, status: StatusCode, words: &[&str]) {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.expect("a JSON body");
    let details = body["errorDetails"].as_str().expect("errorDetails");
    for word in words {
        assert!(details.contains(word), "{word:?} in {details}");
    }
}

#[tokio::test]
async fn a_stream_ticket_opens_the_event_stream_without_any_header_and_a_kill_arrives() {
    let app = spawn_app_with(crate::helpers::Backend::Embedded, |s| s.ofrep.ticket_ttl_secs = 60).await;
    given_typed_flags(&app).await;
    let token = eval_token();
    // No Origin: a server-side or mobile EventSource gets the same URL a browser does.
    let url = stream_url(&app, &token, &[]).await;
    assert!(!url.contains(&token) && !url.contains("token="), "never the caller's token: {url}");
    let ticket = tickets().verify(ticket_of(&url), now_secs()).expect("a ticket of this configuration");
    assert_eq!((ticket.env.as_str(), ticket.sub.as_str()), (ENV, "ofrep-app"));
    let left = ticket.exp.saturating_sub(now_secs());
    assert!((40..=60).contains(&left), "ofrep.ticket_ttl_secs is 60: {left} s left");
    let from_browser = stream_url(&app, &token, &[("Origin", "https://shop.example")]).await;
    assert_eq!(ticket_of(&from_browser).len(), ticket_of(&url).len(), "independent of Origin");

    let revision = app.served_revision(ENV).await;
    let plain = reqwest::Client::new();
    let stream = plain.get(&url).send().await.expect("connected");
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut stream = stream.bytes_stream();
    let mut buf = String::new();
    let (id, data) = next_event(&mut stream, &mut buf).await;
    assert_eq!((id, data["type"].as_str()), (revision.to_string(), Some("refetchEvaluation")));
    let r = app.post(&app.env_url(ENV, "/releases/dark-mode/kill"), &json!({"reason": "errors"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (id, data) = next_event(&mut stream, &mut buf).await;
    assert_eq!((id, data["type"].as_str()), ((revision + 1).to_string(), Some("refetchEvaluation")), "the kill");
}

#[tokio::test]
async fn an_expired_ticket_is_refused_with_a_401_that_says_to_evaluate_again() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let production = cohort::store::EnvName::parse(ENV).expect("env");
    // Issued 1,000 s ago with a 300 s lifetime, as an EventSource reconnecting late has it.
    let expired = tickets().issue(&production, "ofrep-app", u64::MAX, now_secs() - 1_000).expect("issued");
    let url = format!("{}?ticket={}", app.url("/ofrep/v1/events"), expired.text);
    let r = reqwest::Client::new().get(&url).send().await.expect("sent");
    assert_eq!(r.headers()["www-authenticate"], "Bearer error=\"ticket_expired\"");
    assert_refused(r, StatusCode::UNAUTHORIZED, &["expired", "POST /ofrep/v1/evaluate/flags", "eventStreams"]).await;

    // The same ticket, issued now, opens the stream: only its age was wrong.
    let fresh = tickets().issue(&production, "ofrep-app", u64::MAX, now_secs()).expect("issued");
    let url = format!("{}?ticket={}", app.url("/ofrep/v1/events"), fresh.text);
    let r = reqwest::Client::new().get(&url).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_ticket_opens_only_the_environment_it_was_issued_for() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let url = stream_url(&app, &token("staging-app", "staging", "eval"), &[]).await;
    let ticket = tickets().verify(ticket_of(&url), now_secs()).expect("a ticket");
    assert_eq!(ticket.env.as_str(), "staging");
    let plain = reqwest::Client::new();
    let r = plain.get(&url).header("X-Cohort-Env", ENV).send().await.expect("sent");
    assert_refused(r, StatusCode::FORBIDDEN, &["`staging`", "`production`"]).await;
    let r = plain.get(&url).header("X-Cohort-Env", "staging").send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK, "naming its own environment is fine");

    // A `*` token's ticket is for the one environment it evaluated.
    let url = stream_url(&app, &token("admin", "*", "admin"), &[("X-Cohort-Env", ENV)]).await;
    assert_eq!(tickets().verify(ticket_of(&url), now_secs()).expect("a ticket").env.as_str(), ENV);
    let r = plain.get(&url).header("X-Cohort-Env", "staging").send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_token_in_the_url_is_refused_and_a_ticket_is_no_bearer_token() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let token = eval_token();
    let events = app.url("/ofrep/v1/events");
    let plain = reqwest::Client::new();

    let r = plain.get(format!("{events}?token={token}")).send().await.expect("sent");
    assert_eq!(r.headers()["www-authenticate"], "Bearer error=\"token_in_url\"");
    assert_refused(r, StatusCode::UNAUTHORIZED, &["?token=", "ticket"]).await;
    let r = client_with(&token).get(format!("{events}?token={token}")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "even beside a valid header: tokens leave URLs");
    let r = plain.get(format!("{events}?ticket={token}")).send().await.expect("sent");
    assert_refused(r, StatusCode::UNAUTHORIZED, &["not valid"]).await;
    let r = plain.get(format!("{events}?ticket=forged")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = plain.get(&events).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no credential at all");
    let r = client_with(&token_for_reading()).get(&events).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "the stream needs eval");

    let url = stream_url(&app, &token, &[]).await;
    let ticket = ticket_of(&url);
    let body = r#"{"context":{"targetingKey":"u-1"}}"#;
    let r = ofrep_post(&app, ticket, "/ofrep/v1/evaluate/flags/dark-mode", body).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a ticket does not evaluate");
    let r = ofrep_post(&app, ticket, "/ofrep/v1/evaluate/flags", body).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client_with(ticket)
        .post(app.env_url(ENV, "/evaluate"))
        .json(&json!({"context": {"targetingKey": "u-1"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client_with(ticket).get(app.env_url(ENV, "/stream")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client_with(ticket).get(&events).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "in the Authorization header it is no bearer token either");
}

#[tokio::test]
async fn a_bulk_answer_is_unchanged_only_while_the_held_stream_url_has_half_its_life_left() {
    let app = spawn_app(crate::helpers::Backend::Embedded).await;
    given_typed_flags(&app).await;
    let client = client_with(&eval_token());
    let bulk = |etag: String| {
        client
            .post(app.url("/ofrep/v1/evaluate/flags"))
            .header("If-None-Match", etag)
            .json(&json!({"context": {"targetingKey": "u-1"}}))
            .send()
    };
    let first = bulk("\"none\"".into()).await.expect("sent");
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().expect("text").to_owned();
    let body: Value = first.json().await.expect("json");
    let exp = tickets()
        .verify(ticket_of(body["eventStreams"][0]["url"].as_str().expect("url")), now_secs())
        .expect("ticket")
        .exp;
    assert!(etag.ends_with(&format!("-{exp}\"")), "{etag} names the ticket's expiry {exp}");

    let r = bulk(etag.clone()).await.expect("sent");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "a fresh URL is kept");
    assert_eq!(r.headers()["etag"].to_str().expect("text"), etag);
    // The same flags, but a URL whose ticket has under half of its 300 s left.
    let (content, _) = etag.trim_matches('"').rsplit_once('-').expect("content-exp");
    let aging = format!("\"{content}-{}\"", now_secs() + 100);
    let r = bulk(aging).await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK, "the answer again, with a URL that will still open");
    let body: Value = r.json().await.expect("json");
    assert!(body["eventStreams"][0]["url"].as_str().is_some_and(|u| u.contains("?ticket=")));
}

fn token_for_reading() -> String {
    token("reader", ENV, "read")
}
