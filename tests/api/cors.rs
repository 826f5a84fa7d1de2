//! CORS: browser apps on other origins calling the SDK and OFREP routes, preflights
//! answered from the `[cors]` settings, admin routes closed unless configured.

use crate::helpers::{Backend, TestApp, assert_error, spawn_app_with, token};
use cohort::config::{AllowedOrigin, EnvKey, Settings};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::json;

const SHOP: &str = "https://shop.example";
const CONSOLE: &str = "https://console.example";
const EVIL: &str = "https://evil.example";

fn origins(list: &[&str]) -> Vec<AllowedOrigin> {
    list.iter().map(|o| AllowedOrigin::try_from((*o).to_owned()).expect("valid origin")).collect()
}

/// production allows the shop, staging allows any origin, the admin routes the console.
fn configure(settings: &mut Settings) {
    settings.cors.origins.insert(EnvKey::Named("production".into()), origins(&[SHOP]));
    settings.cors.origins.insert(EnvKey::Named("staging".into()), origins(&["*"]));
    settings.cors.admin_origins = origins(&[CONSOLE]);
}

async fn app_with_environments(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(Backend::Embedded, adjust).await;
    // production and staging exist from the start.
    app.given_environment("qa").await;
    for env in ["production", "staging", "qa"] {
        app.given_release(env, "checkout", 50.0).await;
    }
    app
}

/// A preflight for `method` on `path` from `origin`, as a browser sends it.
async fn preflight(app: &TestApp, origin: &str, method: &str, path: &str) -> Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", "authorization, content-type")
        .send()
        .await
        .expect("sent")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("ascii"))
}

/// No answer ever allows credentials (tokens are bearer headers, never cookies).
fn never_credentials(headers: &HeaderMap) {
    assert_eq!(header(headers, "access-control-allow-credentials"), None);
}

fn varies_on_origin(headers: &HeaderMap) -> bool {
    headers.get_all("vary").iter().any(|v| v.to_str().unwrap_or_default().to_ascii_lowercase().contains("origin"))
}

fn evaluate(app: &TestApp, env: &str, origin: &str) -> RequestBuilder {
    reqwest::Client::new()
        .post(app.env_url(env, "/evaluate"))
        .bearer_auth(token("web", env, "eval"))
        .header("Origin", origin)
        .json(&json!({"context": {"targetingKey": "user-42"}}))
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_204_with_methods_headers_and_max_age() {
    let app = app_with_environments(configure).await;
    let r = preflight(&app, SHOP, "POST", "/v1/envs/production/evaluate").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let h = r.headers();
    assert_eq!(header(h, "access-control-allow-origin"), Some(SHOP));
    let methods = header(h, "access-control-allow-methods").expect("methods");
    assert!(methods.contains("POST") && methods.contains("GET"), "{methods}");
    let allowed = header(h, "access-control-allow-headers").expect("headers").to_ascii_lowercase();
    for needed in ["authorization", "content-type", "if-none-match", "last-event-id"] {
        assert!(allowed.contains(needed), "{needed} in {allowed}");
    }
    assert_eq!(header(h, "access-control-max-age"), Some("600"));
    assert!(varies_on_origin(h));
    never_credentials(h);

    // The snapshot with its conditional header, and the stream, the same way.
    for (method, path) in [("GET", "/v1/envs/production/snapshot"), ("GET", "/v1/envs/production/stream")] {
        let r = preflight(&app, SHOP, method, path).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{path}");
        assert_eq!(header(r.headers(), "access-control-allow-origin"), Some(SHOP), "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_preflight_from_a_refused_origin_is_403_json_without_cors_headers() {
    let app = app_with_environments(configure).await;
    for (origin, path) in [
        (EVIL, "/v1/envs/production/evaluate"),
        // Allowed in production, not in qa (which lists nothing).
        (SHOP, "/v1/envs/qa/evaluate"),
    ] {
        let r = preflight(&app, origin, "POST", path).await;
        assert_eq!(header(r.headers(), "access-control-allow-origin"), None, "{origin} {path}");
        assert_eq!(header(r.headers(), "access-control-allow-methods"), None);
        assert!(varies_on_origin(r.headers()));
        let message = assert_error(r, StatusCode::FORBIDDEN, "origin_not_allowed").await;
        assert!(message.contains(origin), "{message}");
    }

    // An OPTIONS that is not a preflight is not CORS's business: the router's 405.
    let r = reqwest::Client::new()
        .request(Method::OPTIONS, app.env_url("production", "/evaluate"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    app.stop().await;
}

#[tokio::test]
async fn a_cross_origin_evaluate_carries_the_allow_origin_and_exposes_the_etag() {
    let app = app_with_environments(configure).await;
    let r = evaluate(&app, "production", SHOP).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(header(&h, "access-control-allow-origin"), Some(SHOP));
    let exposed = header(&h, "access-control-expose-headers").expect("exposed").to_ascii_lowercase();
    assert!(exposed.contains("etag") && exposed.contains("retry-after"), "{exposed}");
    assert!(varies_on_origin(&h));
    never_credentials(&h);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["results"]["checkout"]["version"].is_string(), "{body}");

    // The snapshot's ETag is there for the page to read.
    let r = reqwest::Client::new()
        .get(app.env_url("production", "/snapshot"))
        .bearer_auth(token("web", "production", "eval"))
        .header("Origin", SHOP)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(r.headers(), "access-control-allow-origin"), Some(SHOP));
    assert!(r.headers().contains_key("etag"));

    // Errors carry the header too, so the page can read why.
    let r = reqwest::Client::new()
        .post(app.env_url("production", "/evaluate"))
        .header("Origin", SHOP)
        .json(&json!({"context": {}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(header(r.headers(), "access-control-allow-origin"), Some(SHOP));
    assert_error(r, StatusCode::UNAUTHORIZED, "missing_token").await;

    // A refused origin is answered as a same-origin call would be, without CORS
    // headers: the browser keeps the answer from the page.
    let r = evaluate(&app, "production", EVIL).send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(r.headers(), "access-control-allow-origin"), None);
    assert_eq!(header(r.headers(), "access-control-expose-headers"), None);

    // Without Origin (a server, an SDK): untouched.
    let r = app.evaluate("production", json!({"targetingKey": "user-42"}), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(r.headers(), "access-control-allow-origin"), None);
    assert!(!varies_on_origin(r.headers()));
    app.stop().await;
}

#[tokio::test]
async fn a_star_answers_star_and_never_allows_credentials() {
    let app = app_with_environments(configure).await;
    for origin in [SHOP, EVIL, "http://localhost:3000"] {
        let r = preflight(&app, origin, "POST", "/v1/envs/staging/evaluate").await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{origin}");
        assert_eq!(header(r.headers(), "access-control-allow-origin"), Some("*"));
        never_credentials(r.headers());

        let r = evaluate(&app, "staging", origin).send().await.expect("sent");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(r.headers(), "access-control-allow-origin"), Some("*"));
        never_credentials(r.headers());
    }
    // Even a browser asking to send credentials gets no allowance for them.
    let r = reqwest::Client::new()
        .request(Method::OPTIONS, app.env_url("staging", "/evaluate"))
        .header("Origin", SHOP)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization")
        .header("Cookie", "session=1")
        .send()
        .await
        .expect("sent");
    never_credentials(r.headers());
    app.stop().await;
}

#[tokio::test]
async fn admin_routes_are_closed_cross_origin_unless_configured() {
    // Nothing configured for the admin routes: the shop (allowed on production's SDK
    // routes) and the console are both refused.
    let app = app_with_environments(|s| {
        s.cors.origins.insert(EnvKey::Named("production".into()), origins(&[SHOP]));
    })
    .await;
    for origin in [SHOP, CONSOLE] {
        for (method, path) in [
            ("PUT", "/v1/envs/production/releases/checkout"),
            ("POST", "/v1/envs/production/releases/checkout/kill"),
            ("GET", "/v1/envs/production/audit"),
        ] {
            let r = preflight(&app, origin, method, path).await;
            assert_eq!(header(r.headers(), "access-control-allow-origin"), None, "{origin} {path}");
            assert_error(r, StatusCode::FORBIDDEN, "origin_not_allowed").await;
        }
        let r =
            app.client.get(app.env_url("production", "/releases")).header("Origin", origin).send().await.expect("sent");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(r.headers(), "access-control-allow-origin"), None);
    }
    app.stop().await;

    // With cors.admin_origins: the console is allowed, with the write methods; the shop
    // still is not.
    let app = app_with_environments(configure).await;
    let r = preflight(&app, CONSOLE, "PUT", "/v1/envs/production/releases/checkout").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(r.headers(), "access-control-allow-origin"), Some(CONSOLE));
    let methods = header(r.headers(), "access-control-allow-methods").expect("methods");
    assert!(methods.contains("PUT") && methods.contains("DELETE"), "{methods}");
    let r =
        app.client.get(app.env_url("production", "/releases")).header("Origin", CONSOLE).send().await.expect("sent");
    assert_eq!(header(r.headers(), "access-control-allow-origin"), Some(CONSOLE));
    let r = preflight(&app, SHOP, "PUT", "/v1/envs/production/releases/checkout").await;
    assert_error(r, StatusCode::FORBIDDEN, "origin_not_allowed").await;
    // The console is an admin origin, not an SDK one.
    let r = preflight(&app, CONSOLE, "POST", "/v1/envs/production/evaluate").await;
    assert_error(r, StatusCode::FORBIDDEN, "origin_not_allowed").await;
    app.stop().await;
}

#[tokio::test]
async fn ofrep_allows_an_origin_allowed_in_any_environment_and_the_token_decides_the_environment() {
    let app = app_with_environments(|s| {
        s.cors.origins.insert(EnvKey::Named("production".into()), origins(&[SHOP]));
    })
    .await;
    let r = preflight(&app, SHOP, "POST", "/ofrep/v1/evaluate/flags/checkout").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(r.headers(), "access-control-allow-origin"), Some(SHOP));
    let r = preflight(&app, EVIL, "POST", "/ofrep/v1/evaluate/flags").await;
    assert_error(r, StatusCode::FORBIDDEN, "origin_not_allowed").await;

    let ofrep = |env: &str| {
        reqwest::Client::new()
            .post(app.url("/ofrep/v1/evaluate/flags/checkout"))
            .bearer_auth(token("web", env, "eval"))
            .header("Origin", SHOP)
            .json(&json!({"context": {"targetingKey": "user-42"}}))
    };
    let r = ofrep("production").send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(r.headers(), "access-control-allow-origin"), Some(SHOP));
    // The CORS allowance opens the route, not another environment: a qa token still
    // evaluates qa only, and the token is what confines it.
    let r = ofrep("qa").send().await.expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let r = reqwest::Client::new()
        .post(app.url("/ofrep/v1/evaluate/flags/checkout"))
        .bearer_auth(token("web", "qa", "eval"))
        .header("Origin", SHOP)
        .header("X-Cohort-Env", "production")
        .json(&json!({"context": {"targetingKey": "user-42"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}

#[test]
fn a_misspelt_origin_or_a_star_for_the_admin_routes_stops_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (toml, expected) in [
        ("[cors.origins]\nproduction = [\"https://shop.example/\"]\n", "write `https://shop.example`"),
        ("[cors.origins]\nproduction = [\"https://shop.example:443\"]\n", "write `https://shop.example`"),
        ("[cors.origins]\n\"Prod Env\" = [\"https://shop.example\"]\n", "neither an environment name nor `*`"),
        ("[cors]\nadmin_origins = [\"*\"]\n", "cors.admin_origins cannot be `*`"),
        ("[cors]\norigns = {}\n", "did you mean `cors.origins`"),
    ] {
        let file = dir.path().join("cohort.toml");
        std::fs::write(&file, toml).expect("written");
        let error =
            Settings::load_with_env(Some(&file), &Default::default(), Default::default()).expect_err(toml).to_string();
        assert!(error.contains(expected), "{toml}: {error}");
    }
    let file = dir.path().join("cohort.toml");
    std::fs::write(
        &file,
        "[cors]\nadmin_origins = [\"https://console.example\"]\n[cors.origins]\n\"*\" = [\"https://all.example\"]\nproduction = [\"HTTPS://Shop.Example\", \"http://localhost:3000\"]\n",
    )
    .expect("written");
    let settings = Settings::load_with_env(Some(&file), &Default::default(), Default::default()).expect("loads");
    assert_eq!(settings.cors.origins[&EnvKey::Every], origins(&["https://all.example"]));
    assert_eq!(
        settings.cors.origins[&EnvKey::Named("production".into())],
        origins(&["https://shop.example", "http://localhost:3000"])
    );
}
