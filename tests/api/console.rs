//! The web console in real Chromium, driven over WebDriver (fantoccini): sign in, kill
//! from the page and see an SDK get the baseline and the page the confirmation, live
//! updates from a CLI change, an edit conflicting with an API write, the ramp plot, and
//! a read-only session that sees no buttons and whose forged POST is refused; plus the
//! server-side checks (CSRF, `Origin`, scopes, expiry) over plain HTTP.
//!
//! The test starts its own `chromedriver --headless` browser on a free loopback port
//! (`CHROMEDRIVER` and `CHROMIUM` override the binaries). Screenshots go to a temporary
//! directory, or to `docs/console/` with `COHORT_UPDATE_SCREENSHOTS=1`.

use crate::helpers::{
    Backend, TestApp, client_with, eventually, run_cohort, sdk_with_id, spawn_app, spawn_app_with, token,
};
use cohort_sdk::Context;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::json;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// A headless Chromium under its own chromedriver, ended on drop.
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub(crate) async fn browser() -> Browser {
    let port = free_port();
    let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
    let driver = Command::new(&driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{driver_bin} starts (scripts/install-test-prerequisites installs it): {e}"));
    let mut options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--disable-extensions", "--no-first-run"]
    });
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if std::path::Path::new(&chromium).exists() {
        options["binary"] = json!(chromium);
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".to_owned(), options);
    let url = format!("http://127.0.0.1:{port}");
    let mut client = None;
    for _ in 0..200 {
        match ClientBuilder::new(HttpConnector::new()).capabilities(caps.clone()).connect(&url).await {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Browser { client: client.expect("chromedriver answers"), driver }
}

pub(crate) fn screenshot_dir() -> PathBuf {
    if std::env::var_os("COHORT_UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console")
    } else {
        std::env::temp_dir().join(format!("cohort-console-{}", std::process::id()))
    }
}

/// Screenshots of the page at 1280 and 375 px wide, as `{name}-1280.png` and `-375.png`.
async fn screenshots(c: &Client, name: &str) {
    screenshots_at(c, name, None).await;
}

/// [`screenshots`] scrolled to the element with id `anchor`, when given.
async fn screenshots_at(c: &Client, name: &str, anchor: Option<&str>) {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    for (width, height) in [(1280, 900), (375, 812)] {
        c.set_window_size(width, height).await.expect("resize");
        if let Some(id) = anchor {
            let script = "document.getElementById(arguments[0]).scrollIntoView();";
            c.execute(script, vec![json!(id)]).await.expect("scroll");
        }
        let png = c.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(dir.join(format!("{name}-{width}.png")), png).expect("write screenshot");
    }
    c.set_window_size(1280, 900).await.expect("resize");
}

/// The text of the first element matching `css`, with non-breaking spaces as spaces;
/// empty when there is none.
pub(crate) async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default().replace('\u{a0}', " "),
        Err(_) => String::new(),
    }
}

pub(crate) async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.map_or(0, |v| v.len())
}

pub(crate) async fn shows(c: &Client, css: &str, needle: &str) -> bool {
    let c = c.clone();
    let (css, needle) = (css.to_owned(), needle.to_owned());
    eventually(DEADLINE, move || {
        let (c, css, needle) = (c.clone(), css.clone(), needle.clone());
        async move { text(&c, &css).await.contains(&needle) }
    })
    .await
}

pub(crate) async fn sign_in(c: &Client, app: &TestApp, path: &str, token: &str) {
    c.goto(&app.url(path)).await.expect("goto");
    let field = c.wait().for_element(Locator::Css("#token")).await.expect("the sign-in form");
    field.send_keys(token).await.expect("type the token");
    c.find(Locator::Css("section.signin button[type=submit]")).await.expect("button").click().await.expect("click");
    let c2 = c.clone();
    let signed_in = eventually(DEADLINE, move || {
        let c = c2.clone();
        async move { count(&c, "#token").await == 0 }
    })
    .await;
    assert!(signed_in, "signed in: {}", text(c, "main").await);
}

/// Opens `/` afresh and counts what loading it asked the network for, as the browser's
/// performance timeline records it: the navigation and every resource the page loaded.
/// The page's live event stream is not among them: it stays open, so it is recorded only
/// when it ends.
async fn first_page_costs_at_most_three_requests(c: &Client, app: &TestApp) {
    c.goto(&app.url("/")).await.expect("goto");
    let c2 = c.clone();
    let loaded = eventually(DEADLINE, move || {
        let c = c2.clone();
        async move { c.execute("return document.readyState;", vec![]).await.ok() == Some(json!("complete")) }
    })
    .await;
    assert!(loaded, "the overview loads");
    // Give a late request (a favicon, a script's first fetch) the time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requested = c
        .execute(
            "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
                 .map(function (e) { return e.entryType + ' ' + e.name; });",
            vec![],
        )
        .await
        .expect("the performance timeline");
    let requested: Vec<String> = serde_json::from_value(requested).expect("a list of entries");
    assert!(requested.len() <= 3, "the first page costs at most 3 requests: {requested:#?}");
    assert_eq!(requested.iter().filter(|e| e.starts_with("navigation ")).count(), 1, "{requested:#?}");
    assert!(
        requested.iter().all(|e| e.split_once(' ').is_some_and(|(_, url)| url.starts_with(&app.address))),
        "nothing from elsewhere: {requested:#?}"
    );
}

/// Outcomes for both versions of `release`, no errors, until dropped: the ramp's guard
/// needs samples to pass a step.
struct Traffic(tokio::task::JoinHandle<()>);

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn traffic(app: &TestApp, release: &str) -> Traffic {
    traffic_with_errors(app, release, 0)
}

/// [`traffic`] with `errors` of every 100 outcomes of v2 (and one of v1) failing.
fn traffic_with_errors(app: &TestApp, release: &str, errors: u64) -> Traffic {
    let client = client_with(&token("sdk", "production", "eval report"));
    let url = app.env_url("production", "/events");
    let release = release.to_owned();
    let baseline_errors = u64::from(errors > 0);
    Traffic(tokio::spawn(async move {
        loop {
            let batch = json!([
                {"release": release, "version": "v1", "ok": 100 - baseline_errors, "error": baseline_errors},
                {"release": release, "version": "v2", "ok": 100 - errors, "error": errors},
            ]);
            let _ = client.post(&url).json(&batch).send().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }))
}

async fn audit_actions(app: &TestApp, key: &str) -> Vec<String> {
    let page = app.get_json(app.env_url("production", &format!("/audit?release={key}&limit=100"))).await;
    page["entries"]
        .as_array()
        .map_or(vec![], |e| e.iter().rev().filter_map(|e| e["action"].as_str().map(str::to_owned)).collect())
}

/// A client that does not follow redirects and sends `cookie` as the session.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().expect("client")
}

pub(crate) async fn post_form(
    app: &TestApp,
    path: &str,
    session: &str,
    origin: Option<&str>,
    form: &[(&str, &str)],
) -> StatusCode {
    let mut request = http().post(app.url(path)).header("Cookie", format!("cohort_session={session}")).form(form);
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    request.send().await.expect("sent").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_kills_follows_live_edits_plots_and_hides_what_a_token_may_not_do() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 10.0).await;
    app.given_release("production", "promo", 20.0).await;
    app.given_release("production", "search", 0.0).await;
    // A ramp walks in the background: 1 % held 12 s, then 5 % held an hour.
    let _traffic = traffic(&app, "search");
    let plan = json!({"candidate": "v2", "steps": [{"percent": 1, "hold": "12s"}, {"percent": 5, "hold": "1h"}, {"percent": 100}],
                      "guard": {"max_error_rate_increase": 0.01, "min_samples": 100, "confidence": 0.99}});
    let r = app.post(&app.env_url("production", "/releases/search/ramp"), &plan).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // An SDK connected to the same server, acknowledging what it applies.
    let sdk = sdk_with_id(&app, "web-7f3");
    assert!(sdk.wait_ready(DEADLINE).await, "the SDK is ready");

    let browser = browser().await;
    let c = &browser.client;
    let oncall = token("oncall", "production", "admin");

    // Sign in: `/` shows the sign-in form, then the overview.
    sign_in(c, &app, "/", &oncall).await;
    assert!(shows(c, "h1", "Releases in production").await);
    assert!(text(c, "#release-checkout .badge").await.eq_ignore_ascii_case("live"));
    assert!(text(c, "#release-search .badge").await.eq_ignore_ascii_case("ramping"));
    let admin_cookie = c.get_named_cookie("cohort_session").await.expect("a session cookie");
    assert_eq!(admin_cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", admin_cookie.same_site()), "Some(Strict)");
    first_page_costs_at_most_three_requests(c, &app).await;
    screenshots(c, "overview").await;

    // Kill from the page, with a reason, in a dialog that names the baseline.
    c.find(Locator::Css("[data-dialog=\"kill-checkout\"]")).await.expect("kill button").click().await.expect("click");
    assert!(shows(c, "#kill-checkout", "Everyone will be served v1").await, "the dialog names the baseline");
    c.find(Locator::Css("#kill-checkout-reason")).await.expect("reason").send_keys("5xx spike").await.expect("type");
    screenshots(c, "kill-dialog").await;
    c.find(Locator::Css("#kill-checkout button[type=submit]")).await.expect("submit").click().await.expect("click");
    let user = Context::with_targeting_key("u-1");
    assert!(
        eventually(DEADLINE, || async {
            sdk.version("checkout", &user, "v1").version() == "v1"
                && sdk.version("checkout", &user, "v1").reason == cohort_sdk::Reason::Disabled
        })
        .await,
        "the SDK serves the baseline"
    );
    assert!(shows(c, "section.confirmation", "checkout is killed: everyone is served v1").await);
    assert!(shows(c, "#reach", "Applied by 1 of 1 SDK").await, "{}", text(c, "#reach").await);
    assert!(shows(c, "#reach", "Confirmed").await);
    assert_eq!(app.get_json(app.env_url("production", "/releases/checkout")).await["kill_reason"], "5xx spike");
    assert!(shows(c, "#release-checkout .badge", "KILLED").await);

    // Live: a change made with the CLI shows without a reload.
    c.execute("window.__same_page = true;", vec![]).await.expect("mark the page");
    let o =
        run_cohort(&app, token("cli-user", "production", "admin"), &["release", "set-percent", "promo", "v2=30"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(shows(c, "#release-promo .serving", "v2 30 %").await, "{}", text(c, "#release-promo").await);
    assert_eq!(c.execute("return window.__same_page === true;", vec![]).await.expect("js"), json!(true), "no reload");

    // An edit that conflicts with a concurrent API write says who changed it.
    c.goto(&app.url("/console/envs/production/releases/promo")).await.expect("goto");
    let description = c.wait().for_element(Locator::Css("#f-description")).await.expect("the edit form");
    description.send_keys("spring campaign").await.expect("type");
    let alice = client_with(&token("alice", "production", "write"));
    let r = alice
        .post(app.env_url("production", "/releases/promo/allocation"))
        .json(&json!({"percent": {"v2": 35}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    c.find(Locator::Css("section[aria-labelledby=edit-title] button[type=submit]"))
        .await
        .expect("save")
        .click()
        .await
        .expect("click");
    assert!(shows(c, ".conflict", "Changed by alice").await, "{}", text(c, "main").await);
    assert!(text(c, ".conflict").await.contains("ago — reload"));
    assert_ne!(app.get_json(app.env_url("production", "/releases/promo")).await["description"], "spring campaign");

    // The ramp plot: one segment per step taken, once the ramp has advanced.
    assert!(
        eventually(Duration::from_secs(60), || async {
            audit_actions(&app, "search").await.iter().any(|a| a == "ramp-advance")
        })
        .await,
        "the ramp advances"
    );
    c.goto(&app.url("/console/envs/production/releases/search")).await.expect("goto");
    c.wait().for_element(Locator::Css("figure.plot svg")).await.expect("the plot");
    let taken =
        audit_actions(&app, "search").await.iter().filter(|a| *a == "ramp-start" || *a == "ramp-advance").count();
    assert_eq!(taken, 2);
    assert_eq!(count(c, "figure.plot svg line.step").await, taken, "one segment per step taken");
    assert!(text(c, "figure.plot figcaption").await.contains("step 2 at 5 %"));
    screenshots(c, "release").await;

    // Sign out, then a read-only token: no action buttons, and its forged POST is refused.
    c.goto(&app.url("/console/envs/production")).await.expect("goto");
    c.wait().for_element(Locator::Css("form.signout button")).await.expect("sign out").click().await.expect("click");
    c.wait().for_element(Locator::Css("#token")).await.expect("signed out");
    sign_in(c, &app, "/console/envs/production", &token("viewer", "production", "read")).await;
    assert!(shows(c, "h1", "Releases in production").await);
    assert_eq!(count(c, "#main button").await, 0, "a read-only session sees no action buttons");
    assert_eq!(count(c, "#main form").await, 0);
    c.goto(&app.url("/console/envs/production/releases/promo")).await.expect("goto");
    c.wait().for_element(Locator::Css("h1")).await.expect("page");
    assert_eq!(count(c, "#main button").await, 0, "no edit form either");
    let viewer_cookie = c.get_named_cookie("cohort_session").await.expect("cookie");
    let csrf = c
        .find(Locator::Css("form.signout input[name=csrf]"))
        .await
        .expect("the session's CSRF token")
        .attr("value")
        .await
        .expect("attr")
        .expect("value");
    let status = post_form(
        &app,
        "/console/envs/production/releases/checkout/unkill",
        viewer_cookie.value(),
        Some(&app.address),
        &[("csrf", &csrf), ("reason", "forged")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a forged POST with a read-only session");
    assert_eq!(app.get_json(app.env_url("production", "/releases/checkout")).await["killed"], true);

    // The admin session's cookie without its CSRF token, with another's, or from
    // another origin: refused; with all three right: done.
    let admin = admin_cookie.value();
    let path = "/console/envs/production/releases/checkout/unkill";
    assert_eq!(post_form(&app, path, admin, Some(&app.address), &[("reason", "x")]).await, StatusCode::FORBIDDEN);
    assert_eq!(post_form(&app, path, admin, Some(&app.address), &[("csrf", &csrf)]).await, StatusCode::FORBIDDEN);
    let admin_csrf = cohort::console::session::csrf_token(admin);
    assert_eq!(
        post_form(&app, path, admin, Some("http://evil.example"), &[("csrf", &admin_csrf)]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(post_form(&app, path, admin, None, &[("csrf", &admin_csrf)]).await, StatusCode::FORBIDDEN);
    assert_eq!(app.get_json(app.env_url("production", "/releases/checkout")).await["killed"], true, "nothing was done");
    assert_eq!(post_form(&app, path, admin, Some(&app.address), &[("csrf", &admin_csrf)]).await, StatusCode::SEE_OTHER);
    assert_eq!(app.get_json(app.env_url("production", "/releases/checkout")).await["killed"], false);

    drop(browser);
    sdk.close().await;
    app.stop().await;
}

pub(crate) async fn page(app: &TestApp, path: &str, session: &str) -> (StatusCode, String) {
    let r = http().get(app.url(path)).header("Cookie", format!("cohort_session={session}")).send().await.expect("sent");
    (r.status(), r.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_only_session_is_offered_and_allowed_kill_unkill_and_pause_only() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 10.0).await;
    let plan = json!({"candidate": "v2", "steps": [{"percent": 20, "hold": "1h"}, {"percent": 100}]});
    assert_eq!(
        app.post(&app.env_url("production", "/releases/checkout/ramp"), &plan).await.status(),
        StatusCode::CREATED
    );
    let kill = token("pager", "production", "kill");
    let (status, html) = page(&app, "/console/envs/production", &kill).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Kill…") && html.contains("Pause ramp") && html.contains("Kill all…"), "{html}");
    let (_, html) = page(&app, "/console/envs/production/releases/checkout", &kill).await;
    assert!(!html.contains("id=\"edit-title\""), "no edit form for a kill-only token");

    let csrf = cohort::console::session::csrf_token(&kill);
    let edit = [("csrf", csrf.as_str()), ("revision", "2"), ("description", "x")];
    let status = post_form(&app, "/console/envs/production/releases/checkout", &kill, Some(&app.address), &edit).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the server refuses an edit the page does not offer");
    let status = post_form(
        &app,
        "/console/envs/production/releases/checkout/pause",
        &kill,
        Some(&app.address),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let release = app.get_json(app.env_url("production", "/releases/checkout")).await;
    assert_eq!(release["ramp"]["state"], "paused");
    assert_eq!(release["description"], "");

    // Kill-all from the page: the banner names it, and every release serves its baseline.
    let status = post_form(
        &app,
        "/console/envs/production/kill-all",
        &kill,
        Some(&app.address),
        &[("csrf", &csrf), ("reason", "incident 42")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let environment = app.get_json(app.env_url("production", "")).await;
    assert_eq!(
        (environment["kill_all"].clone(), environment["kill_reason"].clone()),
        (json!(true), json!("incident 42"))
    );
    let (_, html) = page(&app, "/console/envs/production", &kill).await;
    assert!(html.contains("Kill-all is on in production") && html.contains("incident 42"), "{html}");
    assert!(html.contains("data-state=\"killed\"") && html.contains("Unkill all…"));
    let d = app.decision("production", "checkout", json!({"targetingKey": "u"})).await;
    assert_eq!(d["reason"], "DISABLED");

    // A token for another environment sees nothing here.
    let (status, _) = page(&app, "/console/envs/production", &token("pager", "staging", "admin")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_returns_to_sign_in_and_back_to_the_page() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 10.0).await;
    let short = cohort::auth::mint::mint(
        &cohort::config::Secret::new(crate::helpers::TEST_SECRET),
        "oncall",
        "production",
        "kill",
        Duration::from_secs(1),
    )
    .expect("mints");
    let path = "/console/envs/production/releases/checkout";
    assert_eq!(page(&app, path, &short).await.0, StatusCode::OK);
    // The verifier's leeway is 5 s: the session ends with the token, not before.
    let signed_out = |(status, html): &(StatusCode, String)| {
        *status == StatusCode::UNAUTHORIZED
            && html.contains("Your session has expired")
            && html.contains(&format!("value=\"{path}\""))
    };
    assert!(
        eventually(Duration::from_secs(20), || async { signed_out(&page(&app, path, &short).await) }).await,
        "the session expires with its token, and the sign-in form keeps the page"
    );

    // Signing in again goes back to the page.
    let fresh = token("oncall", "production", "kill");
    let r = http()
        .post(app.url("/console/sign-in"))
        .header("Origin", &app.address)
        .form(&[("token", fresh.as_str()), ("next", path)])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], path);
    let cookie = r.headers()["set-cookie"].to_str().expect("text").to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Max-Age="),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "not over TLS");

    // Over TLS (here: as a proxy terminating it reports), the cookie is Secure.
    let r = http()
        .post(app.url("/console/sign-in"))
        .header("X-Forwarded-Proto", "https")
        .header("Origin", format!("https://127.0.0.1:{}", app.port))
        .form(&[("token", fresh.as_str()), ("next", path)])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["set-cookie"].to_str().expect("text").contains("Secure"));

    // Sign-in from another origin, or with an eval-only token, is refused.
    let r = http()
        .post(app.url("/console/sign-in"))
        .header("Origin", "http://evil.example")
        .form(&[("token", fresh.as_str()), ("next", path)])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let eval = token("sdk", "production", "eval");
    let r = http()
        .post(app.url("/console/sign-in"))
        .header("Origin", &app.address)
        .form(&[("token", eval.as_str())])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("set-cookie").is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_page_costs_three_requests_and_nothing_from_elsewhere() {
    let app = spawn_app(Backend::Embedded).await;
    let admin = token("oncall", "*", "admin");
    let (status, html) = page(&app, "/", &admin).await;
    assert_eq!(status, StatusCode::OK);
    let mut fetched: Vec<String> = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let url = &rest[..rest.find('"').unwrap_or(0)];
            if url.starts_with("/console/assets/") || url.starts_with("http") {
                fetched.push(url.to_owned());
            }
        }
    }
    assert_eq!(fetched.len(), 2, "one stylesheet, one script: {fetched:?}");
    assert!(html.contains("rel=\"icon\" href=\"data:,\""), "no favicon request");
    for url in fetched {
        let r = reqwest::get(app.url(&url)).await.expect("sent");
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        let body = r.text().await.expect("text");
        assert!(!body.contains("http://") && !body.contains("https://"), "{url} fetches nothing from elsewhere");
    }
    app.stop().await;
}

/// Opens `path` again until `css` matches at least `n` elements (for what the page does
/// not follow live: outcomes are not changes).
async fn reload_until(c: &Client, app: &TestApp, path: &str, css: &str, n: usize) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        c.goto(&app.url(path)).await.expect("goto");
        if count(c, css).await >= n {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_plots_error_rates_kills_and_verdicts_and_lists_fleet_nodes_and_recent_changes() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "search", 0.0).await;
    app.given_release("production", "checkout", 10.0).await;
    // A ramp under outcomes reported through the API: v2 fails 2 in 100, v1 1 in 100.
    let _traffic = traffic_with_errors(&app, "search", 2);
    let plan = json!({"candidate": "v2", "steps": [{"percent": 1, "hold": "5s"}, {"percent": 5, "hold": "1h"}, {"percent": 100}],
                      "guard": {"max_error_rate_increase": 0.05, "min_samples": 100, "confidence": 0.99}});
    let r = app.post(&app.env_url("production", "/releases/search/ramp"), &plan).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        eventually(Duration::from_secs(60), || async {
            audit_actions(&app, "search").await.iter().any(|a| a == "ramp-advance")
        })
        .await,
        "the ramp advances: {:?}",
        audit_actions(&app, "search").await
    );
    // A release kill, then a kill-all and its end, each with a reason.
    let pager = client_with(&token("pager", "production", "kill"));
    for (path, reason) in [("/releases/search/kill", "drill"), ("/kill-all", "incident 7"), ("/unkill-all", "over")] {
        let r =
            pager.post(app.env_url("production", path)).json(&json!({"reason": reason})).send().await.expect("sent");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }

    let browser = browser().await;
    let c = &browser.client;
    let plot = "/console/envs/production/releases/search";
    sign_in(c, &app, plot, &token("oncall", "production", "admin")).await;
    c.wait().for_element(Locator::Css("figure.plot svg")).await.expect("the plot");
    let taken =
        audit_actions(&app, "search").await.iter().filter(|a| *a == "ramp-start" || *a == "ramp-advance").count();
    assert_eq!(count(c, "figure.plot svg line.step").await, taken, "one segment per step taken");
    assert_eq!(count(c, "figure.plot svg rect.killed[data-switch=\"killed\"]").await, 1, "the release kill is shaded");
    assert_eq!(count(c, "figure.plot svg rect.killed[data-switch=\"kill-all\"]").await, 1, "so is the kill-all");
    assert!(count(c, "figure.plot svg text.vlabel.pass").await >= 1, "the guard's verdicts are labelled");
    assert!(
        text(c, "figure.plot figcaption").await.contains("(advanced)"),
        "{}",
        text(c, "figure.plot figcaption").await
    );
    assert!(
        reload_until(c, &app, plot, "figure.plot svg polyline.rate.candidate", 1).await
            && count(c, "figure.plot svg polyline.rate.baseline").await >= 1,
        "both error-rate lines: {}",
        text(c, "figure.plot figcaption").await
    );
    assert!(text(c, "figure.plot figcaption").await.contains("v1 (baseline)"));
    assert!(text(c, "ul.legend").await.contains("v2 error rate"));
    screenshots_at(c, "release-plot", Some("plot-heading")).await;

    // The fleet page, from the header: a node that reported is listed with its version
    // and health, and the batch the release deploys to; a node reporting later appears.
    let r = app
        .create_release(
            "production",
            json!({"key": "deploy", "versions": ["v1", "v2"], "fleet": "web", "fleet_nodes": 1}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let agent = client_with(&token("agent", "production", "eval"));
    let beat = |node: &'static str, running: &'static str, healthy: bool| {
        let (agent, url) = (agent.clone(), app.env_url("production", &format!("/fleets/web/nodes/{node}")));
        async move {
            let body = json!({"healthy": healthy, "running": running});
            let r = agent.put(url).json(&body).send().await.expect("sent");
            assert_eq!(r.status(), StatusCode::OK, "{node}'s heartbeat");
        }
    };
    beat("web-1", "v1", true).await;
    beat("web-2", "v1", true).await;
    // The two nodes go on reporting, as agents do.
    let agents = {
        let (agent, base) = (agent.clone(), app.env_url("production", "/fleets/web/nodes/"));
        Traffic(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                for node in ["web-1", "web-2"] {
                    let body = json!({"healthy": true, "running": "v1"});
                    let _ = agent.put(format!("{base}{node}")).json(&body).send().await;
                }
            }
        }))
    };
    let health = |node: &'static str| async move {
        text(c, &format!("tr[data-node=\"{node}\"] td.health")).await.to_lowercase()
    };
    c.find(Locator::LinkText("Fleets")).await.expect("the header links the fleet page").click().await.expect("click");
    assert!(shows(c, "h1", "Fleets in production").await);
    assert!(shows(c, "tr[data-node=\"web-1\"] td.node", "web-1").await, "{}", text(c, "main").await);
    assert_eq!(health("web-1").await, "healthy");
    assert_eq!(text(c, "tr[data-node=\"web-1\"] td.runs").await, "v1");
    assert!(shows(c, "li[data-release=\"deploy\"]", "v2 on 1 of 2 nodes").await, "{}", text(c, "main").await);
    beat("web-3", "v1", false).await;
    assert!(shows(c, "tr[data-node=\"web-3\"] td.node", "web-3").await, "a node reporting later shows up");
    assert_eq!(health("web-3").await, "unhealthy");
    screenshots(c, "fleet").await;
    drop(agents);

    // Recent changes: a change made through the API shows live, with actor and reason.
    c.find(Locator::LinkText("Changes")).await.expect("the header links the changes").click().await.expect("click");
    assert!(shows(c, "h1", "Changes in production in the last hour").await);
    assert!(shows(c, "tr[data-action=\"kill-all\"]", "incident 7").await, "{}", text(c, "main").await);
    c.execute("window.__same_page = true;", vec![]).await.expect("mark the page");
    let alice = client_with(&token("alice", "production", "write"));
    let r = alice
        .post(app.env_url("production", "/releases/checkout/allocation"))
        .json(&json!({"percent": {"v2": 30}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let r = pager
        .post(app.env_url("production", "/releases/checkout/kill"))
        .json(&json!({"reason": "5xx spike"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(shows(c, "tr[data-action=\"allocation\"]", "alice").await, "{}", text(c, "main").await);
    assert!(text(c, "tr[data-action=\"allocation\"] td.change").await.contains("v2 10 % → 30 %"));
    assert!(shows(c, "tr[data-action=\"kill\"]", "5xx spike").await);
    assert_eq!(text(c, "tr[data-action=\"kill\"] td.actor").await, "pager");
    assert_eq!(c.execute("return window.__same_page === true;", vec![]).await.expect("js"), json!(true), "no reload");

    drop(browser);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_on_a_live_page_goes_to_sign_in_by_itself_and_back_to_that_page() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 10.0).await;
    let browser = browser().await;
    let c = &browser.client;
    let path = "/console/envs/production/releases/checkout";
    // Valid for 15 s (and the verifier's 5 s of leeway): time enough to sign in on a
    // loaded machine.
    let short = cohort::auth::mint::mint(
        &cohort::config::Secret::new(crate::helpers::TEST_SECRET),
        "oncall",
        "production",
        "read",
        Duration::from_secs(15),
    )
    .expect("mints");
    sign_in(c, &app, path, &short).await;
    assert!(shows(c, "h1", "checkout").await);
    // Nothing changes and nobody clicks: the page notices the end of its session.
    assert!(
        eventually(Duration::from_secs(60), || async { count(c, "#token").await == 1 }).await,
        "the page went to sign-in: {}",
        text(c, "main").await
    );
    assert!(text(c, ".notice").await.contains("Your session has ended"), "{}", text(c, "main").await);
    let next = c.find(Locator::Css("input[name=next]")).await.expect("next").attr("value").await.expect("attr");
    assert_eq!(next.as_deref(), Some(path), "the sign-in form keeps the page");

    // Signing in again lands on that page.
    let field = c.find(Locator::Css("#token")).await.expect("the sign-in form");
    field.send_keys(&token("oncall", "production", "read")).await.expect("type the token");
    c.find(Locator::Css("section.signin button[type=submit]")).await.expect("button").click().await.expect("click");
    assert!(shows(c, "h1", "checkout").await, "{}", text(c, "main").await);
    assert_eq!(c.current_url().await.expect("url").path(), path);
    drop(browser);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_that_terminates_tls_the_public_origin_passes_the_csrf_check_and_the_cookie_is_secure() {
    let public = "https://cohort.example.com";
    let app = spawn_app_with(Backend::Embedded, |s| {
        s.console.public_origin = cohort::config::PublicOrigin::try_from(public.to_owned()).expect("an origin");
    })
    .await;
    app.given_release("production", "checkout", 10.0).await;
    let oncall = token("oncall", "production", "kill");
    // The proxy forwards plain HTTP (no X-Forwarded-Proto); the browser's origin is https.
    let sign_in = |origin: &'static str| {
        http()
            .post(app.url("/console/sign-in"))
            .header("Host", "cohort.example.com")
            .header("Origin", origin)
            .form(&[("token", oncall.as_str()), ("next", "/console/envs/production")])
            .send()
    };
    let r = sign_in(public).await.expect("sent");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"].to_str().expect("text").to_owned();
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"), "{cookie}");
    assert_eq!(sign_in("http://evil.example").await.expect("sent").status(), StatusCode::FORBIDDEN);

    let csrf = cohort::console::session::csrf_token(&oncall);
    let kill = "/console/envs/production/releases/checkout/kill";
    let form = [("csrf", csrf.as_str()), ("reason", "from behind the proxy")];
    assert_eq!(post_form(&app, kill, &oncall, Some("http://evil.example"), &form).await, StatusCode::FORBIDDEN);
    assert_eq!(post_form(&app, kill, &oncall, Some("http://cohort.example.com"), &form).await, StatusCode::FORBIDDEN);
    assert_eq!(app.get_json(app.env_url("production", "/releases/checkout")).await["killed"], false);
    assert_eq!(post_form(&app, kill, &oncall, Some(public), &form).await, StatusCode::SEE_OTHER);
    assert_eq!(app.get_json(app.env_url("production", "/releases/checkout")).await["killed"], true);
    // The server's own origin (reached directly) still works.
    let unkill = "/console/envs/production/releases/checkout/unkill";
    assert_eq!(post_form(&app, unkill, &oncall, Some(&app.address), &[("csrf", &csrf)]).await, StatusCode::SEE_OTHER);
    app.stop().await;
}
