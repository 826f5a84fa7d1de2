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
    /// File holding the bearer token (default: $COHORT_TOKEN)
    #[arg(long, env = "COHORT_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (embedded store in ./cohort-data unless configured otherwise)
    Serve(ServeArgs),
    /// Tokens
    #[command(subcommand)]
    Token(TokenCmd),
    /// Deploy agent of one fleet node: heartbeats, deploys its assignment, reports it
    Agent(AgentArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Args)]
struct AgentArgs {
    /// Fleet name
    #[arg(long)]
    fleet: String,
    /// This node's id (e.g. $(hostname))
    #[arg(long)]
    node: String,
    /// Deploy command run with `sh -c`; `{version}` is replaced by the assigned version
    #[arg(long)]
    exec: String,
    /// Health command run with `sh -c` before each heartbeat; exit 0 = healthy
    #[arg(long)]
    health_cmd: Option<String>,
    /// Release to follow (default: the fleet's only release)
    #[arg(long)]
    release: Option<String>,
    /// Heartbeat interval
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
    /// Version running now, if known
    #[arg(long)]
    running: Option<String>,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a signed token (offline, from the configured HS256 secret) for the
    /// environment given with --env (or '*' for all)
    Mint(MintArgs),
    #[command(flatten)]
    Api(cli::TokenApiCmd),
}

#[derive(Args)]
struct MintArgs {
    /// Who the token is for (recorded in the audit log)
    #[arg(long)]
    sub: String,
    /// Space- or comma-separated scopes: eval, report, read, write, kill, admin
    #[arg(long)]
    scope: String,
    /// Lifetime, e.g. 30m, 8h, 90d: above 0 and at most auth.max_ttl for its scopes
    #[arg(long, default_value = "8h")]
    ttl: String,
    /// Configuration file (TOML), for the secret
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory holding the generated secret
    #[arg(long)]
    data_dir: Option<PathBuf>,
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
        Command::Token(TokenCmd::Mint(args)) => mint(args, &cli.client.env),
        Command::Token(TokenCmd::Api(command)) => match client_setup(cli.token_file.as_deref()) {
            Ok((runtime, token)) => runtime.block_on(cli::run_token(cli.client, command, token)),
            Err(code) => code,
        },
        Command::Agent(args) => agent(args, cli.client, cli.token_file),
        Command::Client(command) => match client_setup(cli.token_file.as_deref()) {
            Ok((runtime, token)) => runtime.block_on(cli::run(cli.client, command, token)),
            Err(code) => code,
        },
    }
}

/// What every command talking to a server needs: a small runtime and the bearer token
/// (from `--token-file` or `COHORT_TOKEN`). A failure is reported here; the exit code is
/// returned.
fn client_setup(token_file: Option<&std::path::Path>) -> Result<(tokio::runtime::Runtime, Option<String>), ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start: {e}");
        ExitCode::FAILURE
    })?;
    let token = Settings::client_token(token_file).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(cli::EXIT_USAGE)
    })?;
    Ok((runtime, token))
}

fn agent(args: AgentArgs, client: ClientArgs, token_file: Option<PathBuf>) -> ExitCode {
    cohort::telemetry::init(&cohort::config::LogSettings {
        level: "info".into(),
        format: cohort::config::LogFormat::Text,
    });
    let token = match Settings::client_token(token_file.as_deref()) {
        Ok(token) => token,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(cli::EXIT_USAGE);
        }
    };
    let settings = cohort::agent::AgentSettings {
        url: client.url,
        env: client.env,
        fleet: args.fleet,
        node: args.node,
        token,
        exec: args.exec,
        health_cmd: args.health_cmd,
        release: args.release,
        interval: args.interval,
        running: args.running,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cohort::agent::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mint(args: MintArgs, env: &str) -> ExitCode {
    let overrides = Overrides { data_dir: args.data_dir, ..Overrides::default() };
    let result = Settings::load(args.config.as_deref(), &overrides).map_err(|e| e.to_string()).and_then(|settings| {
        let (secret, _) = cohort::auth::secret::load_or_create(&settings.auth.hs256_secret, &settings.store.data_dir)
            .map_err(|e| e.to_string())?;
        let ttl = humantime::parse_duration(&args.ttl).map_err(|e| format!("--ttl {}: {e}", args.ttl))?;
        cohort::auth::mint::check_ttl(&args.scope, ttl, &settings.auth.max_ttl)
            .map_err(|e| format!("--ttl {}: {e}", args.ttl))?;
        cohort::auth::mint::mint(&secret, &args.sub, env, &args.scope, ttl).map_err(|e| e.to_string())
    });
    match result {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(cli::EXIT_USAGE)
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
