//! Rate limits (`[rate_limit]`): a burst beyond a class's limit gets 429 with
//! `Retry-After` and the JSON error shape — on evaluate and on OFREP, which are served
//! ahead of every other middleware — per token subject and per client address apart;
//! a class set to 0 is not limited; `X-Forwarded-For` counts only from a trusted proxy;
//! kills are never held up by a flood from the on-call engineer's address.

use crate::helpers::{Backend, TestApp, spawn_app_with, token};
use cohort::config::Settings;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};

/// Every class off, then `adjust`.
async fn app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(Backend::Embedded, |s| {
        let r = &mut s.rate_limit;
        (r.evaluate_per_subject, r.evaluate_per_address, r.stream_per_subject, r.stream_per_address) = (0, 0, 0, 0);
        (r.events_per_subject, r.events_per_address, r.admin_per_subject, r.admin_per_address) = (0, 0, 0, 0);
        adjust(s);
    })
    .await;
    app.given_release("production", "checkout", 50.0).await;
    app
}

/// A client sending `token`, from local address `from` (any 127.0.0.0/8 address reaches
/// the server on 127.0.0.1).
fn client_from(token: &str, from: Ipv4Addr) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().default_headers(headers).local_address(IpAddr::V4(from)).build().expect("client")
}

const HOME: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

async fn evaluate(app: &TestApp, client: &reqwest::Client) -> Response {
    let body = json!({"context": {"targetingKey": "user-42"}, "releases": ["checkout"]});
    client.post(app.env_url("production", "/evaluate")).json(&body).send().await.expect("sent")
}

async fn ofrep(app: &TestApp, client: &reqwest::Client) -> Response {
    let body = json!({"context": {"targetingKey": "user-42"}});
    client.post(app.url("/ofrep/v1/evaluate/flags/checkout")).json(&body).send().await.expect("sent")
}

/// Sends `send` until it is refused (at most 200 times; a limit of 2 per second cannot
/// let 200 requests through unless they took 100 s); returns how many passed before, and
/// the refusal. Asserts the refusal's status, `Retry-After` and JSON shape.
async fn burst_until_refused<F, Fut>(mut send: F) -> (usize, Value)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    for passed in 0..200 {
        let r = send().await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = r.headers().get("retry-after").expect("Retry-After").to_str().expect("text");
            let seconds: u64 = retry_after.parse().expect("Retry-After is whole seconds");
            assert!((1..=2).contains(&seconds), "Retry-After: {seconds}");
            let body: Value = r.json().await.expect("JSON body");
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            return (passed, body);
        }
        assert_eq!(r.status(), StatusCode::OK, "request {passed} before any refusal");
    }
    panic!("200 requests in a row were never refused");
}

#[tokio::test]
async fn a_burst_beyond_the_evaluate_limit_gets_429_with_retry_after_and_another_address_does_not() {
    let app = app_with(|s| s.rate_limit.evaluate_per_address = 2).await;
    let home = client_from(&token("web-app", "production", "eval"), HOME);
    let (passed, body) = burst_until_refused(|| evaluate(&app, &home)).await;
    assert!(passed >= 2, "the burst of one second's worth passes first ({passed})");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("evaluate") && message.contains("address"), "{message}");
    // The same public token from another address is not held up.
    let other = client_from(&token("web-app", "production", "eval"), OTHER);
    assert_eq!(evaluate(&app, &other).await.status(), StatusCode::OK);
    // Other classes are limited apart: this one is off.
    let snapshot = home.get(app.env_url("production", "/snapshot")).send().await.expect("sent");
    assert_eq!(snapshot.status(), StatusCode::OK);
}

#[tokio::test]
async fn ofrep_evaluation_counts_as_evaluate_and_answers_429_with_retry_after() {
    let app = app_with(|s| s.rate_limit.evaluate_per_address = 2).await;
    let home = client_from(&token("ofrep-app", "production", "eval"), HOME);
    let (passed, _) = burst_until_refused(|| ofrep(&app, &home)).await;
    assert!(passed >= 2);
    // One allowance for both routes: evaluate is refused now too.
    assert_eq!(evaluate(&app, &home).await.status(), StatusCode::TOO_MANY_REQUESTS);
    let bulk = home
        .post(app.url("/ofrep/v1/evaluate/flags"))
        .json(&json!({"context": {"targetingKey": "u"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(bulk.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(bulk.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn limits_per_subject_hold_up_one_subject_and_not_another() {
    let app = app_with(|s| s.rate_limit.evaluate_per_subject = 2).await;
    let alice = client_from(&token("alice", "production", "eval"), HOME);
    let (_, body) = burst_until_refused(|| evaluate(&app, &alice)).await;
    assert!(body["error"]["message"].as_str().expect("message").contains("subject"), "{body}");
    // Same address, another subject: not limited (the address limit is off here).
    let bob = client_from(&token("bob", "production", "eval"), HOME);
    assert_eq!(evaluate(&app, &bob).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_class_set_to_zero_is_not_limited_while_another_is() {
    let app = app_with(|s| {
        s.rate_limit.admin_per_subject = 1;
        s.rate_limit.admin_per_address = 1;
    })
    .await;
    let sdk = client_from(&token("sdk", "production", "eval"), HOME);
    for i in 0..300 {
        assert_eq!(evaluate(&app, &sdk).await.status(), StatusCode::OK, "evaluation {i}");
    }
    let admin = client_from(&token("ops", "production", "admin"), HOME);
    burst_until_refused(|| async { admin.get(app.env_url("production", "/releases")).send().await.expect("sent") })
        .await;
    // Probes and metrics are never limited.
    for _ in 0..5 {
        assert_eq!(admin.get(app.url("/readyz")).send().await.expect("sent").status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_kill_is_not_held_up_by_a_flood_from_its_address() {
    let app = app_with(|s| s.rate_limit.admin_per_address = 1).await;
    let flood = client_from(&token("scanner", "production", "read"), HOME);
    burst_until_refused(|| async { flood.get(app.env_url("production", "/releases")).send().await.expect("sent") })
        .await;
    let on_call = client_from(&token("on-call", "production", "kill"), HOME);
    let r = on_call.post(app.env_url("production", "/releases/checkout/kill")).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test]
async fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let app = app_with(|s| {
        s.rate_limit.evaluate_per_address = 2;
        s.rate_limit.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let proxy = client_from(&token("web-app", "production", "eval"), HOME);
    let from = |client: &'static str| {
        let proxy = proxy.clone();
        let url = app.env_url("production", "/evaluate");
        async move {
            let body = json!({"context": {"targetingKey": "user-42"}});
            proxy.post(url).header("x-forwarded-for", client).json(&body).send().await.expect("sent")
        }
    };
    burst_until_refused(|| from("203.0.113.1")).await;
    assert_eq!(from("203.0.113.2").await.status(), StatusCode::OK, "another client behind the same proxy");
    // A peer that is not a trusted proxy is limited by its own address, whatever it says.
    let direct = client_from(&token("web-app", "production", "eval"), OTHER);
    let spoofing = |client: &'static str| {
        let direct = direct.clone();
        let url = app.env_url("production", "/evaluate");
        async move { direct.post(url).header("x-forwarded-for", client).json(&json!({})).send().await.expect("sent") }
    };
    burst_until_refused(|| spoofing("203.0.113.50")).await;
    assert_eq!(spoofing("203.0.113.51").await.status(), StatusCode::TOO_MANY_REQUESTS);
}
