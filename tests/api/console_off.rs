//! `cohort serve` built without the `console` feature: no console routes, and `/`
//! answers the API's JSON 404 like any unknown route.

use crate::helpers::{Backend, spawn_app};
use reqwest::StatusCode;

#[tokio::test]
async fn without_the_console_feature_the_console_routes_answer_the_apis_404() {
    let app = spawn_app(Backend::Embedded).await;
    for path in ["/", "/console/sign-in", "/console/assets/console.css"] {
        let r = reqwest::get(app.url(path)).await.expect("sent");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = r.json().await.expect("a JSON body");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    app.stop().await;
}
