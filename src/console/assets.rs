//! The console's stylesheet and script, embedded in the binary: nothing is fetched from
//! anywhere else, at build time or at run time.

use actix_web::HttpResponse;

/// The stylesheet's URL (the version in the query busts caches across upgrades).
pub const CSS_PATH: &str = concat!("/console/assets/console.css?v=", env!("CARGO_PKG_VERSION"));
/// The script's URL.
pub const JS_PATH: &str = concat!("/console/assets/console.js?v=", env!("CARGO_PKG_VERSION"));

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The stylesheet's route.
pub const CSS_ROUTE: &str = "/console/assets/console.css";
/// The script's route.
pub const JS_ROUTE: &str = "/console/assets/console.js";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}

pub fn css() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

pub fn js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", JS)
}
