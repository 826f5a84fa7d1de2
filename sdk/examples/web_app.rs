//! A small web app that serves v1 or v2 of a page per user through the cohort SDK and
//! reports how each request went with `track`, so that a ramp's guard can compare them.
//!
//! ```text
//! cohort serve                                            # another shell
//! export COHORT_TOKEN=$(cohort token mint --sub me --env production --scope admin --ttl 1h)
//! cohort release create homepage --versions v1,v2 --percent v2=50
//! cargo run -p cohort-sdk --features client --example web_app
//! curl 'http://127.0.0.1:3000/?user=alice'               # v1 or v2, always the same for alice
//! curl 'http://127.0.0.1:3000/?user=bob&fail=1'          # a failed request: tracked as an error
//! cohort kill homepage --wait                             # everyone gets v1 within milliseconds
//! ```
//!
//! Environment: `COHORT_URL` (default `http://127.0.0.1:8080`), `COHORT_ENV`
//! (`production`), `COHORT_TOKEN` (needs the `eval` and `report` scopes), `LISTEN` (`127.0.0.1:3000`).
//! The HTTP side is a deliberately tiny HTTP/1.0 responder (one request per
//! connection, no percent-decoding) to keep the example free of a web framework.

use cohort_sdk::Context;
use cohort_sdk::client::{Client, Outcome};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The release this page is rolled out as.
const RELEASE: &str = "homepage";

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let token =
        std::env::var("COHORT_TOKEN").map_err(|_| "set COHORT_TOKEN to a token with the eval and report scopes")?;
    let client =
        Client::builder(setting("COHORT_URL", "http://127.0.0.1:8080"), setting("COHORT_ENV", "production"), token)
            .outcome_flush_interval(Duration::from_secs(5))
            .build()?;
    if !client.wait_ready(Duration::from_secs(5)).await {
        eprintln!("no configuration from cohort yet: serving v1 until it comes");
    }
    let listen = setting("LISTEN", "127.0.0.1:3000");
    let listener = TcpListener::bind(&listen).await?;
    println!("serving http://{listen}/?user=alice (revision {})", client.revision());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, _) = accepted?;
                tokio::spawn(respond(client.clone(), socket));
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await; // reports the outcomes still pending
    println!("bye ({} outcomes dropped)", client.dropped_outcomes());
    Ok(())
}

/// Answers one request: `GET /?user=NAME[&fail=1]`.
async fn respond(client: Client, mut socket: TcpStream) {
    let mut request = vec![0; 4096];
    let Ok(n) = socket.read(&mut request).await else { return };
    let request = String::from_utf8_lossy(&request[..n]);
    let target =
        request.lines().next().and_then(|line| line.strip_prefix("GET ")).and_then(|rest| rest.split(' ').next());
    let query = target.and_then(|t| match t.split_once('?') {
        Some(("/", query)) => Some(query),
        None if t == "/" => Some(""),
        _ => None,
    });
    let (status, version, body) = match query {
        Some(query) => {
            let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
            let user = param("user").unwrap_or("anonymous");
            let ctx = Context::with_targeting_key(user);
            // Local evaluation: no network hop, no allocation.
            let served = client.version(RELEASE, &ctx, "v1");
            let failed = param("fail") == Some("1");
            client.track_served(RELEASE, &served, if failed { Outcome::Error } else { Outcome::Ok });
            let page = format!(
                "<h1>Home, {}</h1>\n<p>{} for {} ({}, revision {})</p>\n",
                served.version(),
                if failed { "Something broke" } else { "Welcome" },
                escape(user),
                served.reason.as_str(),
                served.revision()
            );
            (if failed { "500 Internal Server Error" } else { "200 OK" }, served.version().to_owned(), page)
        }
        None => ("404 Not Found", String::new(), "<h1>Not found</h1>\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.0 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nx-cohort-version: {version}\r\n\r\n",
        body.len()
    );
    let _ = socket.write_all(format!("{head}{body}").as_bytes()).await;
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
