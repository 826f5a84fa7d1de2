//! The console's forms in real Chromium: a release created from "New release" (a refused
//! submit keeps what was typed and says what is wrong beside the field), a ramp planned
//! with its plain-language preview and started, paused, resumed and aborted from the
//! release page, and a session without `write` that is offered none of it and whose
//! forged POSTs are refused; a fleet release planned in node counts and started.

use crate::console::{browser, count, http, page, post_form, screenshot_dir, shows, sign_in, text};
use crate::helpers::{Backend, TestApp, spawn_app, token};
use fantoccini::{Client, Locator};
use reqwest::StatusCode;

async fn fill(c: &Client, css: &str, value: &str) {
    let field = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(value).await.expect("type");
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.expect("click");
}

async fn value(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.expect(css).prop("value").await.expect("prop").unwrap_or_default()
}

/// Screenshots at 1280 and 375 px (as `console::screenshots`), each after `scroll` runs.
async fn screenshots_at(c: &Client, name: &str, scroll: &str) {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    for (width, height) in [(1280, 900), (375, 812)] {
        c.set_window_size(width, height).await.expect("resize");
        c.execute(scroll, vec![]).await.expect("scroll");
        std::fs::write(dir.join(format!("{name}-{width}.png")), c.screenshot().await.expect("screenshot"))
            .expect("write");
    }
    c.set_window_size(1280, 900).await.expect("resize");
}

async fn ramp_state(app: &TestApp, key: &str) -> serde_json::Value {
    app.get_json(app.env_url("production", &format!("/releases/{key}"))).await["ramp"]["state"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_creates_a_release_plans_its_ramp_and_drives_it() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let browser = browser().await;
    let c = &browser.client;
    sign_in(c, &app, "/console/envs/production", &token("pat", "production", "read write")).await;

    // "New release": a value of the wrong type is refused beside its field, and
    // everything typed is still there.
    click(c, "a[href='/console/envs/production/new-release']").await;
    c.wait().for_element(Locator::Css("#f-key")).await.expect("the create form");
    fill(c, "#f-key", "onboarding").await;
    fill(c, "#f-versions", "classic, guided").await;
    fill(c, "#f-allocation", "guided = 10").await;
    fill(c, "#f-values", r#"{"classic": false, "guided": "yes"}"#).await;
    fill(c, "#f-rules", r#"[{"when": [{"attr": "country", "op": "in", "values": ["NZ"]}], "serve": "guided"}]"#).await;
    fill(c, "#f-description", "guided first run").await;
    click(c, "section[aria-labelledby=create-title] button[type=submit]").await;
    assert!(shows(c, "#f-values-error", "values.guided").await, "{}", text(c, "main").await);
    assert_eq!(value(c, "#f-values").await, r#"{"classic": false, "guided": "yes"}"#);
    assert_eq!(value(c, "#f-key").await, "onboarding");
    assert_eq!(value(c, "#f-description").await, "guided first run");
    assert_eq!(count(c, "[aria-invalid=true]").await, 1, "only the field at fault");
    assert_eq!(app.get_release("production", "onboarding").await.status(), StatusCode::NOT_FOUND);
    screenshots_at(c, "create-form", "document.getElementById('f-values').scrollIntoView({block: 'center'})").await;

    fill(c, "#f-values", r#"{"classic": false, "guided": true}"#).await;
    click(c, "section[aria-labelledby=create-title] button[type=submit]").await;
    assert!(shows(c, "p.confirmation", "Created onboarding").await, "{}", text(c, "main").await);
    let created = app.get_json(app.env_url("production", "/releases/onboarding")).await;
    assert_eq!(created["versions"], serde_json::json!(["classic", "guided"]));
    assert_eq!(created["allocation"]["guided"], 10.0);
    assert_eq!(created["values"]["guided"], true);
    assert_eq!(created["rules"][0]["serve"], "guided");

    // The plan editor words the suggested plan, and again as it is edited.
    assert!(
        shows(c, "#plan-preview", "5 % for 30 min, then 25 % for 1 h, then 100 %; rolls back if the candidate's error rate exceeds the baseline's by 1 point at 99 % confidence").await,
        "{}",
        text(c, "#plan-preview").await
    );
    fill(c, "#f-ceiling", "150").await;
    assert!(shows(c, "#plan-preview", "ceiling: between 0 and 100 %").await, "{}", text(c, "#plan-preview").await);
    fill(c, "#f-ceiling", "5").await;
    assert!(shows(c, "#plan-preview", "or exceeds 5 %").await, "{}", text(c, "#plan-preview").await);
    fill(c, "#f-step1-percent", "2").await;
    assert!(shows(c, "#plan-preview", "percents must rise").await, "{}", text(c, "#plan-preview").await);
    fill(c, "#f-step1-percent", "25").await;
    assert!(shows(c, "#plan-preview", "then 25 % for 1 h").await);
    screenshots_at(c, "plan-editor", "document.querySelector('form.plan .buttons').scrollIntoView({block: 'end'})")
        .await;
    assert_eq!(count(c, "ol.steps li").await, 4, "the suggested three steps and a blank row");
    click(c, "button[name=go][value=add]").await;
    assert!(shows(c, "label[for=f-step4-percent]", "Step 5 percent").await, "{}", text(c, "form.plan").await);
    assert_eq!(count(c, "ol.steps li").await, 5);
    assert_eq!((value(c, "#f-ceiling").await, value(c, "#f-step1-percent").await), ("5".into(), "25".into()));
    // Enter in a field previews (the server's page comes back): no row added, no ramp.
    c.execute("window.__same_page = true;", vec![]).await.expect("mark the page");
    fill(c, "#f-ceiling", "5\u{E007}").await;
    let reloaded = || async {
        c.execute("return window.__same_page === undefined && document.readyState === 'complete';", vec![]).await.ok()
            == Some(serde_json::json!(true))
    };
    assert!(crate::helpers::eventually(std::time::Duration::from_secs(10), reloaded).await, "Enter submits");
    assert_eq!(count(c, "ol.steps li").await, 4, "a preview: the three steps and a blank row (Add a step: 6)");
    assert!(app.get_json(app.env_url("production", "/releases/onboarding")).await["ramp"].is_null(), "nor starts");
    click(c, "button[name=go][value=start]").await;
    assert!(shows(c, "p.confirmation", "The ramp of guided has started").await, "{}", text(c, "main").await);
    let release = app.get_json(app.env_url("production", "/releases/onboarding")).await;
    assert_eq!(release["ramp"]["state"], "running");
    assert_eq!(release["ramp"]["guard"]["max_error_rate"], 0.05);
    assert_eq!(release["ramp"]["steps"].as_array().map(Vec::len), Some(3));
    assert_eq!(release["allocation"]["guided"], 5.0);
    assert_eq!(count(c, "#plan-title").await, 0, "no plan editor while a ramp is active");

    // Pause, resume, abort from the page.
    click(c, "form[action$='/ramp/pause'] button").await;
    assert!(shows(c, "p.confirmation", "is paused").await);
    assert_eq!(ramp_state(&app, "onboarding").await, "paused");
    click(c, "form[action$='/ramp/resume'] button").await;
    assert!(shows(c, "p.confirmation", "running again").await);
    assert_eq!(ramp_state(&app, "onboarding").await, "running");
    click(c, "form[action$='/ramp/abort'] button").await;
    c.accept_alert().await.expect("the abort is confirmed");
    assert!(shows(c, "p.confirmation", "aborted").await, "{}", text(c, "main").await);
    let release = app.get_json(app.env_url("production", "/releases/onboarding")).await;
    assert_eq!(
        (release["ramp"]["state"].clone(), release["allocation"]["guided"].clone()),
        ("aborted".into(), 0.0.into())
    );

    // A kill-only session is offered pausing and nothing else of the ramp; the server
    // refuses the rest when it is forged with its cookie.
    let pager = token("pager", "production", "kill");
    let plan = serde_json::json!({"candidate": "v2", "steps": [{"percent": 5, "hold": "1h"}, {"percent": 100}]});
    assert_eq!(
        app.post(&app.env_url("production", "/releases/checkout/ramp"), &plan).await.status(),
        StatusCode::CREATED
    );
    c.goto(&app.url("/console/envs/production")).await.expect("goto");
    click(c, "form.signout button").await;
    // Signed out once the sign-in form shows: navigating on before that races the
    // sign-out (once, the page signed in again never showed the release).
    c.wait().for_element(Locator::Css("#token")).await.expect("signed out");
    sign_in(c, &app, "/console/envs/production/releases/checkout", &pager).await;
    assert!(shows(c, "h1", "checkout").await);
    assert_eq!(count(c, "form[action$='/ramp/pause']").await, 1);
    for hidden in ["/ramp/resume", "/ramp/abort", "/promote", "/ramp"] {
        assert_eq!(count(c, &format!("form[action$='{hidden}']")).await, 0, "{hidden}");
    }
    assert_eq!(count(c, "a[href$='/new-release']").await, 0);
    let cookie = c.get_named_cookie("cohort_session").await.expect("cookie");
    let csrf = cohort::console::session::csrf_token(cookie.value());
    let forged = [
        ("/console/envs/production/releases/checkout/ramp/abort", vec![]),
        ("/console/envs/production/releases/checkout/promote", vec![]),
        (
            "/console/envs/production/releases/onboarding/ramp",
            vec![("go", "start"), ("candidate", "guided"), ("step0.percent", "100")],
        ),
        ("/console/envs/production/new-release", vec![("key", "forged"), ("versions", "a, b")]),
    ];
    for (path, mut fields) in forged {
        fields.push(("csrf", csrf.as_str()));
        assert_eq!(
            post_form(&app, path, cookie.value(), Some(&app.address), &fields).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    assert_eq!(page(&app, "/console/envs/production/new-release", cookie.value()).await.0, StatusCode::FORBIDDEN);
    assert_eq!(ramp_state(&app, "checkout").await, "running");
    assert_eq!(ramp_state(&app, "onboarding").await, "aborted");
    assert_eq!(app.get_release("production", "forged").await.status(), StatusCode::NOT_FOUND);

    drop(browser);
    app.stop().await;
}

async fn send(app: &TestApp, session: &str, path: &str, fields: Vec<(&str, String)>) -> (StatusCode, String) {
    let r = http()
        .post(app.url(path))
        .header("Cookie", format!("cohort_session={session}"))
        .header("Origin", &app.address)
        .form(&fields)
        .send()
        .await
        .expect("sent");
    (r.status(), r.text().await.unwrap_or_default().replace('\u{a0}', " "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_preview_and_add_a_step_re_render_the_plan_and_a_bad_step_is_shown_beside_its_field() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 0.0).await;
    let writer = token("pat", "production", "read write");
    let csrf = cohort::console::session::csrf_token(&writer);
    let path = "/console/envs/production/releases/checkout/ramp";
    let plan = |go, second| {
        vec![
            ("csrf", csrf.clone()),
            ("go", go),
            ("candidate", "v2".to_owned()),
            ("step0.percent", "10".to_owned()),
            ("step0.hold", "10m".to_owned()),
            ("step1.percent", second),
            ("confidence", "95".to_owned()),
        ]
    };
    let (status, html) = send(&app, &writer, path, plan("preview".into(), "100".into())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("10 % for 10 min, then 100 %; rolls back if") && html.contains("at 95 % confidence"),
        "{html}"
    );
    assert!(app.get_json(app.env_url("production", "/releases/checkout")).await["ramp"].is_null(), "only a preview");

    let (status, html) = send(&app, &writer, path, plan("start".into(), "5".into())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"f-step1-percent-error\"") && html.contains("percents must rise"), "{html}");
    assert!(html.contains("value=\"10m\""), "what was typed is kept");

    // "Add a step" past the twelve rows a plan used to be limited to, keeping what was typed.
    let mut twelve = vec![("csrf".to_owned(), csrf.clone()), ("candidate".into(), "v2".into())];
    for r in 0..12 {
        twelve.push((format!("step{r}.percent"), (r + 1).to_string()));
        twelve.push((format!("step{r}.hold"), "1m".into()));
    }
    let with = |extra: &[(&'static str, &str)]| {
        let typed = twelve.iter().map(|(n, v)| (n.as_str(), v.clone()));
        typed.chain(extra.iter().map(|(n, v)| (*n, v.to_string()))).collect::<Vec<_>>()
    };
    let (status, html) = send(&app, &writer, path, with(&[("go", "add")])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"f-step12-percent\"") && !html.contains("id=\"f-step13-percent\""), "{html}");
    assert!(html.contains("name=\"step11.percent\" value=\"12\""), "what was typed is kept: {html}");
    let (status, html) = send(&app, &writer, path, with(&[("go", "start"), ("step12.percent", "100")])).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(ramp_state(&app, "checkout").await, "running");
    let release = app.get_json(app.env_url("production", "/releases/checkout")).await;
    assert_eq!(release["ramp"]["steps"].as_array().map(Vec::len), Some(13));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_release_is_planned_in_nodes_with_its_batches_limits_and_started() {
    let app = spawn_app(Backend::Embedded).await;
    let r = app
        .create_release("production", serde_json::json!({"key": "deploy", "versions": ["v1", "v2"], "fleet": "web"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let writer = token("pat", "production", "read write");
    let (status, html) = page(&app, "/console/envs/production/releases/deploy", &writer).await;
    assert_eq!(status, StatusCode::OK);
    let html = html.replace('\u{a0}', " ");
    assert!(html.contains("Step 1 nodes or %") && html.contains("name=\"max_unavailable\""), "{html}");
    assert!(html.contains("1 node for 30 min, then 50 % for 1 h, then 100 % (each batch within 10 min)"), "{html}");

    let csrf = cohort::console::session::csrf_token(&writer);
    let plan = |nodes: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("go", "start".to_owned()),
            ("candidate", "v2".to_owned()),
            ("step0.percent", "2".to_owned()),
            ("step0.hold", "10m".to_owned()),
            ("step1.percent", nodes.to_owned()),
            ("progress_deadline", "5m".to_owned()),
            ("max_unavailable", "1".to_owned()),
        ]
    };
    let path = "/console/envs/production/releases/deploy/ramp";
    let (status, html) = send(&app, &writer, path, plan("1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"f-step1-percent-error\"") && html.contains("node counts must be above 0 and rise"));
    let (status, html) = send(&app, &writer, path, plan("100 %")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let ramp = app.get_json(app.env_url("production", "/releases/deploy")).await["ramp"].clone();
    assert_eq!(
        (ramp["steps"][0]["nodes"].clone(), ramp["steps"][1]["nodes"].clone()),
        (2.into(), serde_json::Value::Null)
    );
    assert_eq!((ramp["progress_deadline_ms"].clone(), ramp["max_unavailable"].clone()), (300_000.into(), 1.into()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_plans_a_fleet_ramp_in_nodes_and_starts_it() {
    let app = spawn_app(Backend::Embedded).await;
    let r = app
        .create_release("production", serde_json::json!({"key": "deploy", "versions": ["v1", "v2"], "fleet": "web"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let browser = browser().await;
    let c = &browser.client;
    sign_in(c, &app, "/console/envs/production/releases/deploy", &token("pat", "production", "read write")).await;
    assert!(shows(c, "label[for=f-step0-percent]", "Step 1 nodes or %").await, "{}", text(c, "main").await);

    // Node counts and percents, worded as typed; a count that falls is refused live.
    fill(c, "#f-step0-percent", "2").await;
    fill(c, "#f-step0-hold", "10m").await;
    fill(c, "#f-step1-percent", "1").await;
    assert!(
        shows(c, "#plan-preview", "node counts must be above 0 and rise").await,
        "{}",
        text(c, "#plan-preview").await
    );
    fill(c, "#f-step1-percent", "50 %").await;
    fill(c, "#f-progress_deadline", "5m").await;
    fill(c, "#f-max_unavailable", "1").await;
    let worded =
        "2 nodes for 10 min, then 50 % for 1 h, then 100 % (each batch within 5 min, at most 1 node moved at once)";
    let preview = || async { text(c, "#plan-preview").await.replace('\u{a0}', " ") };
    assert!(
        crate::helpers::eventually(std::time::Duration::from_secs(10), || async { preview().await.contains(worded) })
            .await,
        "{}",
        preview().await
    );

    click(c, "button[name=go][value=start]").await;
    assert!(shows(c, "p.confirmation", "The ramp of v2 has started").await, "{}", text(c, "main").await);
    let ramp = app.get_json(app.env_url("production", "/releases/deploy")).await["ramp"].clone();
    assert_eq!(ramp["state"], "running");
    assert_eq!(
        (
            ramp["steps"][0]["nodes"].clone(),
            ramp["steps"][1]["buckets"].clone(),
            ramp["steps"].as_array().map(Vec::len)
        ),
        (2.into(), 50_000.into(), Some(3))
    );
    assert_eq!((ramp["progress_deadline_ms"].clone(), ramp["max_unavailable"].clone()), (300_000.into(), 1.into()));
    app.stop().await;
}
