//! The baseline: a bare actix-web server with one route answering a 20-byte JSON body,
//! started exactly as `cohort serve` starts its server (a multi-threaded tokio runtime
//! around `HttpServer`, the same worker count, the same actix-web build), so the ratio
//! of cohort's requests/s to its requests/s is what cohort costs above the HTTP stack.

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use clap::Args;
use std::net::{Ipv4Addr, TcpListener};

/// The whole answer: `{"message":"hello!"}`, 20 bytes.
pub const BODY: &str = r#"{"message":"hello!"}"#;

#[derive(Args, Debug)]
pub struct BaselineArgs {
    /// Port on 127.0.0.1 (0 = any free port; the bound port is printed)
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// HTTP worker threads
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

async fn hello() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(BODY)
}

/// Serves until SIGINT/SIGTERM (actix-web's default signal handling).
pub fn run(args: &BaselineArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, args.port)).context("binding the baseline's port")?;
    println!("baseline listening on {}", listener.local_addr()?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        HttpServer::new(|| App::new().route("/", web::get().to(hello)))
            .workers(args.workers.max(1))
            .shutdown_timeout(10)
            .listen(listener)?
            .run()
            .await
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_is_twenty_bytes_of_json() {
        assert_eq!(super::BODY.len(), 20);
        assert!(serde_json::from_str::<serde_json::Value>(super::BODY).is_ok());
    }
}
