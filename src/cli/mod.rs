//! The human command-line client: `cohort release …`, `cohort kill-all`, talking to a
//! cohort server over its HTTP API.
//!
//! `main` parses [`ClientArgs`] and a [`ClientCommand`] and hands them to [`run`], which
//! returns one of the `EXIT_*` codes below.

mod apply;
mod args;
mod client;
mod commands;
mod config_file;
mod edit;
mod export;
mod output;
mod views;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::NonEmptyStringValueParser;
use reqwest::StatusCode;

pub use apply::ApplyArgs;
pub use args::{ArgError, PercentArg};
pub use client::{ClientError, REQUEST_TIMEOUT};
pub use commands::CliError;

/// Exit code: the command succeeded.
pub const EXIT_SUCCESS: u8 = 0;
/// Exit code: the server refused the request — HTTP 400, 401, 403, 413, 422 or any other
/// 4xx not listed under [`EXIT_NOT_FOUND`] or [`EXIT_CONFLICT`]. Retrying the same
/// command will not help.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: usage error — bad arguments (clap exits with 2 as well), an invalid
/// `--url`, or a `--file` that cannot be read or does not match the command line.
/// Nothing was sent to the server.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the release (or environment) does not exist — HTTP 404.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code: conflict with the server's current state — HTTP 409 (already exists),
/// 412 (someone else changed it since the revision given) or 428 (a revision is
/// required). Re-read and retry.
pub const EXIT_CONFLICT: u8 = 4;
/// Exit code: the server is unreachable or unavailable — connection refused, DNS
/// failure, no answer within [`REQUEST_TIMEOUT`], any 5xx, or a response this client
/// cannot read. Retrying later may help.
pub const EXIT_UNAVAILABLE: u8 = 5;
/// Exit code: `--wait` timed out before every connected SDK applied the change (the
/// change itself was made).
pub const EXIT_NOT_CONFIRMED: u8 = 6;

/// Maps an HTTP status to the exit code a script sees.
pub fn exit_code_for_status(status: StatusCode) -> u8 {
    match status.as_u16() {
        200..=299 => EXIT_SUCCESS,
        404 => EXIT_NOT_FOUND,
        409 | 412 | 428 => EXIT_CONFLICT,
        400..=499 => EXIT_REFUSED,
        // 5xx, and 1xx/3xx which this API never sends on purpose (redirects are not
        // followed): either way the server is not answering as a cohort server should.
        _ => EXIT_UNAVAILABLE,
    }
}

/// Options shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// cohort server address
    #[arg(long, env = "COHORT_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// environment
    #[arg(
        long,
        env = "COHORT_ENV",
        default_value = "production",
        global = true,
        value_parser = NonEmptyStringValueParser::new()
    )]
    pub env: String,
    /// print the server's JSON instead of a table
    #[arg(long, global = true)]
    pub json: bool,
    /// kills (kill, kill-all, unkill, unkill-all) go to each of these instances, not
    /// only --url: when the store is down every instance must hear it (repeat, or a
    /// comma-separated COHORT_SERVERS)
    #[arg(long = "server", env = "COHORT_SERVERS", value_delimiter = ',', global = true)]
    pub servers: Vec<String>,
}

/// The client's top-level commands.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Manage releases
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// Kill a release: everyone gets its baseline (same as `release kill`)
    Kill(KillArgs),
    /// Kill switch for the whole environment: every release serves its baseline
    KillAll {
        /// why, recorded with the switch and shown by `release list`
        #[arg(long)]
        reason: Option<String>,
        /// wait until every connected SDK has applied it, and say which have not
        #[arg(long)]
        wait: bool,
        /// how long --wait waits (e.g. 5s, 500ms)
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        wait_timeout: std::time::Duration,
    },
    /// Turn the environment kill switch off
    UnkillAll,
    /// Turn a release's kill switch off (same as `release unkill`)
    Unkill {
        /// release key
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        key: String,
    },
    /// Environments: list, create, delete (when empty)
    #[command(subcommand)]
    Env(EnvCmd),
    /// The store: reconcile after it went backwards
    #[command(subcommand)]
    Store(StoreCmd),
    /// Automatic ramps
    #[command(subcommand)]
    Ramp(RampCmd),
    /// Show the audit log, newest first
    Audit {
        /// only this release's entries
        #[arg(long)]
        release: Option<String>,
        /// how many entries (1 to 1000)
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// only entries below this revision (the next page)
        #[arg(long)]
        before: Option<u64>,
    },
    /// Print the configuration (every environment the token can see, or --env) as a
    /// file to keep in git or as a backup: releases, kills, ramp plans; never secrets
    Export,
    /// Make the server match a configuration file: prints a plan, then writes it
    Apply(ApplyArgs),
}

/// `cohort token revoke` and `cohort token revocations`: through the API, in the
/// environment of `--env` (`*`: every environment, with an admin token for `*`).
#[derive(clap::Subcommand, Debug)]
pub enum TokenApiCmd {
    /// Revoke one token (--jti) or every token of a subject issued until now (--sub)
    Revoke(RevokeArgs),
    /// List the revocations in force
    Revocations,
}

/// `cohort token revoke`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["jti", "sub"])))]
pub struct RevokeArgs {
    /// the token's `jti`
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    pub jti: Option<String>,
    /// a subject: its tokens issued until now are refused (new ones work)
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    pub sub: Option<String>,
    /// why, recorded with the revocation and in the audit log
    #[arg(long)]
    pub reason: Option<String>,
}

/// Runs `cohort token revoke` / `cohort token revocations`.
pub async fn run_token(args: ClientArgs, cmd: TokenApiCmd, token: Option<String>) -> ExitCode {
    match commands::token(&args, cmd, token.as_deref()).await {
        Ok(text) => {
            print_stdout(&text);
            ExitCode::from(EXIT_SUCCESS)
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// `cohort env …`
#[derive(clap::Subcommand, Debug)]
pub enum EnvCmd {
    /// The environments your token may see
    List,
    /// Create an environment (admin)
    Create {
        /// 1 to 64 of a-z 0-9 - _
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
    },
    /// Delete an environment that holds no releases (admin)
    Delete {
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        name: String,
    },
}

/// `cohort store …`
#[derive(clap::Subcommand, Debug)]
pub enum StoreCmd {
    /// Write the --url instance's snapshot of --env back to the store above every
    /// revision it has seen: the audited answer to a store that went backwards (admin).
    /// Run it against the instance whose `/readyz` shows the highest `seen`: one that saw
    /// less is refused, naming the instance that reported more.
    Reseed {
        /// why, recorded in the audit log
        #[arg(long)]
        reason: Option<String>,
        /// reseed from this instance even though another reported serving a higher
        /// revision (its changes, kills included, are overwritten)
        #[arg(long)]
        force: bool,
    },
}

/// `cohort ramp …`
#[derive(clap::Subcommand, Debug)]
pub enum RampCmd {
    /// Start a ramp: `--steps 1:10m,5:30m,25:1h,100` (percent:hold, the last without hold)
    Start {
        /// release key
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        key: String,
        /// the version to ramp
        #[arg(long)]
        candidate: String,
        /// percent:hold steps, comma separated
        #[arg(long, value_parser = args::parse_steps)]
        steps: args::Steps,
        /// largest tolerated error-rate increase over the baseline (0.01 = one point)
        #[arg(long, default_value_t = 0.01)]
        max_error_rate_increase: f64,
        /// largest tolerated candidate error rate
        #[arg(long)]
        max_error_rate: Option<f64>,
        /// outcomes each side needs before a step may pass
        #[arg(long, default_value_t = 500)]
        min_samples: u64,
        /// confidence of the guard's test
        #[arg(long, default_value_t = 0.99)]
        confidence: f64,
    },
    /// The environment's active (running or paused) ramps: release, candidate, state,
    /// step, current percent, next step check
    List,
    /// Show a ramp: steps (numbered from 0, as in the API and metrics), progress, the
    /// guard's current rates
    Status {
        /// release key
        key: String,
        /// keep showing it, redrawn each second, until the ramp ends or Ctrl-C (redrawn
        /// in place on a terminal; otherwise each new state printed once)
        #[arg(long)]
        watch: bool,
    },
    /// Pause a running ramp
    Pause {
        /// release key
        key: String,
        /// why
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused ramp (the current hold starts over)
    Resume {
        /// release key
        key: String,
    },
    /// Abort a ramp: the candidate goes back to 0 %
    Abort {
        /// release key
        key: String,
        /// why
        #[arg(long)]
        reason: Option<String>,
    },
    /// Make the candidate the baseline (allocation cleared)
    Promote {
        /// release key
        key: String,
        /// which candidate, when there is no ramp and several candidates
        #[arg(long)]
        candidate: Option<String>,
    },
}

/// `cohort kill KEY` / `cohort release kill KEY`.
#[derive(clap::Args, Debug, Clone)]
pub struct KillArgs {
    /// release key
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub key: String,
    /// why, recorded with the release and shown by `release list`
    #[arg(long)]
    pub reason: Option<String>,
    /// wait until every connected SDK has applied the kill, and say which have not
    #[arg(long)]
    pub wait: bool,
    /// how long --wait waits (e.g. 5s, 500ms)
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub wait_timeout: std::time::Duration,
}

/// `cohort release …`
#[derive(clap::Subcommand, Debug)]
pub enum ReleaseCmd {
    /// List the environment's releases
    List,
    /// Show one release: allocation, audience, rules, overrides and its ramp
    Get {
        /// release key
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        key: String,
    },
    /// Edit a release as JSON in $EDITOR (else vi) and write it back, only if nobody
    /// changed it meanwhile (If-Match of the revision read)
    Edit {
        /// release key
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        key: String,
        /// print what would change and write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Create a release
    Create(CreateArgs),
    /// Change candidates' share of units; candidates not listed keep theirs
    SetPercent {
        /// release key
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        key: String,
        /// new percents, e.g. `v2=10 v3=2.5`
        #[arg(required = true, value_name = "VERSION=PERCENT", value_parser = args::parse_percent_arg)]
        percents: Vec<PercentArg>,
        /// only apply if the release is still at this revision (default: the revision
        /// read just before the update)
        #[arg(long, value_name = "REVISION", value_parser = args::parse_revision)]
        if_match: Option<u64>,
        /// print what would change and write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Kill a release: everyone gets its baseline
    Kill(KillArgs),
    /// Undo `kill`: the release serves its allocation again
    Unkill {
        /// release key
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        key: String,
    },
    /// Delete a release
    Delete {
        /// release key
        #[arg(value_parser = NonEmptyStringValueParser::new())]
        key: String,
        /// only delete if the release is still at this revision
        #[arg(long, value_name = "REVISION", value_parser = args::parse_revision)]
        if_match: Option<u64>,
        /// print what would be deleted and write nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// `cohort release create …`
#[derive(clap::Args, Debug, Clone)]
pub struct CreateArgs {
    /// release key
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub key: String,
    /// versions, baseline first, e.g. `v1,v2,v3`
    #[arg(long, value_delimiter = ',', required_unless_present = "file", value_name = "V1,V2,...")]
    pub versions: Vec<String>,
    /// context attribute that identifies a unit (server default: targetingKey)
    #[arg(long)]
    pub unit: Option<String>,
    /// bucketing salt (server default: the key)
    #[arg(long)]
    pub salt: Option<String>,
    /// initial percent for a candidate, e.g. `--percent v2=5` (repeatable)
    #[arg(long = "percent", value_name = "VERSION=PERCENT", value_delimiter = ',', value_parser = args::parse_percent_arg)]
    pub percents: Vec<PercentArg>,
    /// free-text description
    #[arg(long)]
    pub description: Option<String>,
    /// JSON file with the full release body; flags given as well override its fields
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// print the release that would be created and write nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs one client command and returns the process exit code. `token` (bearer token,
/// may be None) is sent as `Authorization: Bearer <token>` when present.
///
/// Results go to stdout; errors go to stderr as `error: …`.
pub async fn run(args: ClientArgs, cmd: ClientCommand, token: Option<String>) -> ExitCode {
    match commands::execute(&args, cmd, token.as_deref()).await {
        Ok(text) => {
            print_stdout(&text);
            ExitCode::from(EXIT_SUCCESS)
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Writes without `print!`'s panic on a closed pipe: `cohort release list | head -1`
/// must not turn into a crash report.
fn print_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn statuses_map_to_documented_exit_codes() {
        let cases = [
            (200, EXIT_SUCCESS),
            (201, EXIT_SUCCESS),
            (204, EXIT_SUCCESS),
            (400, EXIT_REFUSED),
            (401, EXIT_REFUSED),
            (403, EXIT_REFUSED),
            (413, EXIT_REFUSED),
            (422, EXIT_REFUSED),
            (429, EXIT_REFUSED),
            (404, EXIT_NOT_FOUND),
            (409, EXIT_CONFLICT),
            (412, EXIT_CONFLICT),
            (428, EXIT_CONFLICT),
            (500, EXIT_UNAVAILABLE),
            (502, EXIT_UNAVAILABLE),
            (503, EXIT_UNAVAILABLE),
            (504, EXIT_UNAVAILABLE),
            (301, EXIT_UNAVAILABLE),
        ];
        for (status, expected) in cases {
            let status = StatusCode::from_u16(status).expect("valid status");
            assert_eq!(exit_code_for_status(status), expected, "{status}");
        }
    }

    /// Stands in for `main`'s parser, which flattens the same pieces.
    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    fn parse(argv: &[&str]) -> Result<TestCli, clap::Error> {
        TestCli::try_parse_from(std::iter::once("cohort").chain(argv.iter().copied()))
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }

    #[test]
    fn set_percent_takes_several_candidates_and_global_flags_anywhere() {
        let cli = parse(&[
            "release",
            "set-percent",
            "checkout",
            "v2=10",
            "v3=2.5",
            "--if-match",
            "\"41\"",
            "--env",
            "staging",
            "--json",
        ])
        .expect("parses");
        assert_eq!(cli.client.env, "staging");
        assert!(cli.client.json);
        let ClientCommand::Release(ReleaseCmd::SetPercent { key, percents, if_match, .. }) = cli.cmd else {
            panic!("wrong command: {:?}", cli.cmd);
        };
        assert_eq!(key, "checkout");
        assert_eq!(
            percents,
            vec![PercentArg { version: "v2".into(), percent: 10.0 }, PercentArg { version: "v3".into(), percent: 2.5 },]
        );
        assert_eq!(if_match, Some(41));
    }

    #[test]
    fn bad_percent_arguments_are_usage_errors() {
        for bad in ["v2", "=5", "v2=abc"] {
            let err = parse(&["release", "set-percent", "checkout", bad]).expect_err(bad);
            assert_eq!(err.exit_code(), i32::from(EXIT_USAGE), "{bad}");
        }
        let err = parse(&["release", "set-percent", "checkout"]).expect_err("no percents");
        assert_eq!(err.exit_code(), i32::from(EXIT_USAGE));
    }

    #[test]
    fn create_needs_versions_unless_a_file_is_given() {
        assert!(parse(&["release", "create", "checkout"]).is_err());
        let cli = parse(&["release", "create", "checkout", "--file", "r.json"]).expect("file");
        assert!(matches!(cli.cmd, ClientCommand::Release(ReleaseCmd::Create(_))));
        let cli = parse(&[
            "release",
            "create",
            "checkout",
            "--versions",
            "v1,v2,v3",
            "--percent",
            "v2=5",
            "--percent",
            "v3=0.5",
        ])
        .expect("flags");
        let ClientCommand::Release(ReleaseCmd::Create(create)) = cli.cmd else {
            panic!("wrong command");
        };
        assert_eq!(create.versions, ["v1", "v2", "v3"]);
        assert_eq!(create.percents.len(), 2);
    }
}
