//! `cohort-bench`: cohort's HTTP routes against a bare actix-web baseline (`http`), and
//! thousands of SSE subscribers watching a kill (`streams`). Everything runs on
//! 127.0.0.1, pins the server and the load generator to different cores, stops by itself
//! and removes what it started.
//!
//! ```text
//! cargo run --release -p cohort-bench -- http
//! cargo run --release -p cohort-bench -- streams --subscribers 10000
//! cargo run --release -p cohort-bench -- profile     # instructions/request, callgrind
//! ```

mod baseline;
mod client;
mod http_run;
mod profile;
mod seed;
mod server;
mod streams;
mod sys;
mod wrk;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cohort-bench", about = "Load harness for cohort (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// wrk against cohort's evaluation, OFREP and snapshot routes and a hello-world baseline
    Http(http_run::HttpArgs),
    /// N SSE subscribers on one instance, then a kill: RSS growth and propagation times
    Streams(streams::StreamArgs),
    /// Instructions per request of each route and of the baseline, under callgrind
    Profile(profile::ProfileArgs),
    /// The baseline server alone: actix-web, one route answering 20 bytes of JSON
    Baseline(baseline::BaselineArgs),
}

/// Where the servers and the load generator run; shared by `http` and `streams`.
#[derive(Args, Clone, Debug)]
pub struct Placement {
    /// A prebuilt `cohort` binary (default: `cargo build --release -p cohort` first)
    #[arg(long)]
    pub cohort_bin: Option<PathBuf>,
    /// The core the server under test is pinned to
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// The core the load generator (wrk, or the subscribers) is pinned to
    #[arg(long, default_value_t = 1)]
    pub client_cpu: usize,
    /// HTTP worker threads of the servers
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Scheduling priority (nice) of the servers and the load generator; on a shared
    /// machine, e.g. -10 keeps compilers from taking turns on the measured cores
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub nice: i32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Http(args) => http_run::run(&args),
        Command::Streams(args) => streams::run(&args),
        Command::Profile(args) => profile::run(&args),
        Command::Baseline(args) => baseline::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cohort-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
