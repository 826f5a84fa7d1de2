//! `cohort`: `serve` runs the service; the other commands talk to a running one.

use clap::{Args, Parser, Subcommand};
use cohort::cli::{self, ClientArgs, ClientCommand};
use cohort::config::{Overrides, Settings};
use cohort::startup::Application;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cohort", version, about = "Canary releases and rolling deployments")]
struct Cli {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (embedded store in ./cohort-data unless configured otherwise)
    Serve(ServeArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// Configuration file (TOML); see config/default.toml
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to bind
    #[arg(long)]
    host: Option<IpAddr>,
    /// Port to bind (0 = any free port)
    #[arg(long)]
    port: Option<u16>,
    /// HTTP worker threads (default: one per core)
    #[arg(long)]
    workers: Option<usize>,
    /// Embedded store directory
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Use Redis at this URL instead of the embedded store
    #[arg(long)]
    redis_url: Option<String>,
    /// Log filter (e.g. info, debug, cohort=debug)
    #[arg(long)]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Client(command) => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let token = Settings::client_token();
            runtime.block_on(cli::run(cli.client, command, token))
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        host: args.host,
        port: args.port,
        workers: args.workers,
        data_dir: args.data_dir,
        redis_url: args.redis_url,
        log_level: args.log_level,
    };
    let settings = match Settings::load(args.config.as_deref(), &overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    cohort::telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let app = match Application::build(settings).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(error = %e, "cohort cannot start");
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
