//! Carries out each client command: the requests it makes, in what order, and which
//! text (or server JSON) it prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use thiserror::Error;

use super::args::PercentArg;
use super::client::{ClientError, CohortClient, Reply};
use super::edit;
use super::output;
use super::views::Reach;
use super::{
    ClientArgs, ClientCommand, CreateArgs, EXIT_CONFLICT, EXIT_NOT_CONFIRMED, EXIT_USAGE, EnvCmd, KillArgs, RampCmd,
    ReleaseCmd, StoreCmd,
};

/// Why a client command failed.
#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `set-percent` lost a race: the release moved on between our read and our write.
    /// The server's message comes first, in the usual shape; the second line says what
    /// to do about it.
    #[error(
        "{source}\nhint: someone else changed {key} after revision {revision}, so nothing \
         was changed; check `cohort release get {key}` and run the command again"
    )]
    Stale { key: String, revision: u64, source: ClientError },
    /// `--wait` ran out of time with live SDKs that had not applied the change; the
    /// change itself was made, and `stdout` (printed before this error) says so.
    #[error(
        "{pending} live SDK(s) did not confirm revision {revision} within {}; the change itself was made",
        humantime::format_duration(*.waited)
    )]
    NotConfirmed { stdout: String, revision: u64, pending: usize, waited: Duration },
    /// The change was made, but asking how far it reached failed; `stdout` (printed
    /// before this error) reports the change.
    #[error("the change was made, but its confirmation failed: {source}")]
    ConfirmationFailed { stdout: String, source: ClientError },
    /// Some `--server` instances did not take a kill; `stdout` (printed before this
    /// error) gives every instance's answer.
    #[error("not every instance took it: {failed}")]
    Partial { stdout: String, failed: Box<CliError> },
    #[error("{version} is given more than once")]
    DuplicateVersion { version: String },
    #[error("cannot read {}: {source}", .path.display())]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("{} is not a release: {reason}", .path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("the key on the command line ({arg}) differs from the key in {} ({file})", .path.display())]
    KeyMismatch { arg: String, file: String, path: PathBuf },
    /// `release edit` could not run the editor, or it failed.
    #[error("editor `{editor}` {reason}; nothing was written")]
    Editor { editor: String, reason: String },
    /// The edited text is not a JSON object; the text is kept for another try.
    #[error("the edited text is not a release: {reason}; nothing was written; your text is kept in {}", .path.display())]
    EditedInvalid { path: PathBuf, reason: String },
    /// The server refused the edited release (422, …); the text is kept.
    #[error("{source}\nnothing was written; your text is kept in {}", .path.display())]
    EditRefused { path: PathBuf, source: ClientError },
    /// Someone changed the release between the read and the write (412).
    #[error("{key} was {changed} — run edit again; nothing was written; your text is kept in {}", .path.display())]
    EditConflict { key: String, changed: String, path: PathBuf },
    #[error("cannot write the temporary file {}: {source}", .path.display())]
    TempFile { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Apply(#[from] super::apply::ApplyError),
}

impl CliError {
    /// The process exit code for this failure (see the `EXIT_*` constants).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Client(err) | Self::ConfirmationFailed { source: err, .. } => err.exit_code(),
            Self::Partial { failed, .. } => failed.exit_code(),
            Self::Stale { .. } => EXIT_CONFLICT,
            Self::NotConfirmed { .. } => EXIT_NOT_CONFIRMED,
            Self::Apply(err) => err.exit_code(),
            Self::EditRefused { source, .. } => source.exit_code(),
            Self::EditConflict { .. } => EXIT_CONFLICT,
            Self::DuplicateVersion { .. }
            | Self::ReadFile { .. }
            | Self::BadFile { .. }
            | Self::KeyMismatch { .. }
            | Self::Editor { .. }
            | Self::EditedInvalid { .. }
            | Self::TempFile { .. } => EXIT_USAGE,
        }
    }

    /// What belongs on stdout even though the command fails: a change that was made.
    fn stdout(&self) -> Option<&str> {
        match self {
            Self::NotConfirmed { stdout, .. }
            | Self::ConfirmationFailed { stdout, .. }
            | Self::Partial { stdout, .. } => Some(stdout),
            _ => None,
        }
    }
}

/// Runs `cmd` and returns what to print on stdout. When it fails after making a change
/// (`--wait` not confirmed), the report of the change is printed here, on stdout, and
/// only the failure is left for stderr.
pub async fn execute(args: &ClientArgs, cmd: ClientCommand, token: Option<&str>) -> Result<String, CliError> {
    let result = dispatch(args, cmd, token).await;
    if let Some(stdout) = result.as_ref().err().and_then(CliError::stdout) {
        super::print_stdout(stdout);
    }
    result
}

/// `cohort token revoke` / `cohort token revocations`.
pub async fn token(args: &ClientArgs, cmd: super::TokenApiCmd, token: Option<&str>) -> Result<String, CliError> {
    let client = CohortClient::new(&args.url, &args.env, token)?;
    let body = match &cmd {
        super::TokenApiCmd::Revoke(revoke) => {
            client.revoke(revoke.jti.as_deref(), revoke.sub.as_deref(), revoke.reason.as_deref()).await?
        }
        super::TokenApiCmd::Revocations => client.revocations().await?,
    };
    if args.json {
        return Ok(output::render_json(&body));
    }
    Ok(match cmd {
        super::TokenApiCmd::Revoke(_) => output::render_revoked(&args.env, &body),
        super::TokenApiCmd::Revocations => output::render_revocations(&args.env, &body),
    })
}

async fn dispatch(args: &ClientArgs, cmd: ClientCommand, token: Option<&str>) -> Result<String, CliError> {
    if args.servers.len() > 1 && kill_command(&cmd).is_some() {
        return fan_out(args, cmd, token).await;
    }
    let url = args.servers.first().unwrap_or(&args.url);
    let client = CohortClient::new(url, &args.env, token)?;
    let json = args.json;
    match cmd {
        ClientCommand::Release(cmd) => release(&client, args, cmd).await,
        ClientCommand::Kill(kill_args) => kill(&client, json, kill_args).await,
        ClientCommand::KillAll { reason, wait, wait_timeout } => {
            let started = Instant::now();
            let reply = client.kill_all(reason.as_deref()).await?;
            if !wait || !reply.value.persisted {
                return Ok(show(json, &reply, output::render_environment_state));
            }
            let revision = reply.value.revision;
            let kill = Killed { body: &reply.body, text: output::render_environment_state(&reply.value), revision };
            confirm(json, kill, wait_for_reach(&client, revision, started, wait_timeout).await)
        }
        ClientCommand::UnkillAll => {
            let reply = client.unkill_all().await?;
            Ok(show(json, &reply, output::render_environment_state))
        }
        ClientCommand::Unkill { key } => {
            let reply = client.unkill(&key).await?;
            Ok(show(json, &reply, output::render_unkilled))
        }
        ClientCommand::Env(cmd) => environments(args, cmd, token).await,
        ClientCommand::Store(StoreCmd::Reseed { reason, force }) => {
            let body = client.reseed(reason.as_deref(), force).await?;
            Ok(if json {
                output::render_json(&body)
            } else {
                format!(
                    "reseeded {} from {}: {} release(s) written at revision {} (the store was at {})\n",
                    args.env,
                    client.base(),
                    body["releases"],
                    body["revision"],
                    body["previous"]
                )
            })
        }
        ClientCommand::Ramp(cmd) => ramp(&client, json, cmd).await,
        ClientCommand::Export => {
            let only = super::export::env_given().then_some(args.env.as_str());
            Ok(super::export::export(&client, only).await?)
        }
        ClientCommand::Apply(apply_args) => {
            let only = super::export::env_given().then_some(args.env.as_str());
            Ok(super::apply::apply(&client, only, &apply_args).await?)
        }
        ClientCommand::Audit { release, limit, before } => {
            let reply = client.audit(release.as_deref(), limit, before).await?;
            Ok(show(json, &reply, output::render_audit))
        }
    }
}

/// A copy of `cmd` when it is a kill or an unkill, which `--server` sends to several
/// instances.
fn kill_command(cmd: &ClientCommand) -> Option<ClientCommand> {
    Some(match cmd {
        ClientCommand::Kill(k) | ClientCommand::Release(ReleaseCmd::Kill(k)) => ClientCommand::Kill(k.clone()),
        ClientCommand::KillAll { reason, wait, wait_timeout } => {
            ClientCommand::KillAll { reason: reason.clone(), wait: *wait, wait_timeout: *wait_timeout }
        }
        ClientCommand::UnkillAll => ClientCommand::UnkillAll,
        ClientCommand::Unkill { key } | ClientCommand::Release(ReleaseCmd::Unkill { key }) => {
            ClientCommand::Unkill { key: key.clone() }
        }
        _ => return None,
    })
}

/// Sends one kill to every `--server` and reports each instance's answer: during a store
/// outage each instance serves (and journals) only the kills it was told itself. Fails
/// with the first failure's exit code if any instance did not take it.
async fn fan_out(args: &ClientArgs, cmd: ClientCommand, token: Option<&str>) -> Result<String, CliError> {
    let mut out = String::new();
    let mut answers = Vec::new();
    let mut failure = None;
    for server in &args.servers {
        let one = ClientArgs { url: server.clone(), servers: Vec::new(), ..args.clone() };
        let Some(cmd) = kill_command(&cmd) else { break };
        let result = Box::pin(dispatch(&one, cmd, token)).await;
        match result {
            Ok(text) if args.json => answers.push(json!({"server": server, "answer": serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))})),
            Ok(text) => out.push_str(&format!("{server}: {text}")),
            Err(error) => {
                if args.json {
                    answers.push(json!({"server": server, "error": error.to_string(), "exit": error.exit_code()}));
                } else {
                    out.push_str(&format!("{server}: error: {error}\n"));
                }
                failure.get_or_insert(error);
            }
        }
    }
    let stdout = if args.json { output::render_json(&Value::Array(answers)) } else { out };
    match failure {
        None => Ok(stdout),
        Some(error) => Err(CliError::Partial { stdout, failed: Box::new(error) }),
    }
}

async fn environments(args: &ClientArgs, cmd: EnvCmd, token: Option<&str>) -> Result<String, CliError> {
    let json = args.json;
    match cmd {
        EnvCmd::List => {
            let body = CohortClient::new(&args.url, &args.env, token)?.list_environments().await?;
            Ok(if json { output::render_json(&body) } else { output::render_environments(&body) })
        }
        EnvCmd::Create { name } => {
            let body = CohortClient::new(&args.url, &args.env, token)?.create_environment(&name).await?;
            Ok(if json { output::render_json(&body) } else { format!("created environment {name}\n") })
        }
        EnvCmd::Delete { name } => {
            let body = CohortClient::new(&args.url, &name, token)?.delete_environment().await?;
            Ok(if json { output::render_json(&body) } else { format!("deleted environment {name}\n") })
        }
    }
}

async fn release(client: &CohortClient, args: &ClientArgs, cmd: ReleaseCmd) -> Result<String, CliError> {
    let json = args.json;
    match cmd {
        ReleaseCmd::List => {
            let reply = client.list_releases().await?;
            Ok(show(json, &reply, output::render_release_list))
        }
        ReleaseCmd::Get { key } => {
            let reply = client.get_release(&key).await?;
            Ok(show(json, &reply, output::render_release))
        }
        ReleaseCmd::Edit { key, dry_run } => edit::edit(client, args, &key, dry_run).await,
        ReleaseCmd::Create(create) => {
            let body = create_body(&create).await?;
            if create.dry_run {
                let action = format!("would create {} in {}", create.key, args.env);
                return Ok(dry_run(json, &action, &Value::Null, &body));
            }
            let reply = client.create_release(&body).await?;
            Ok(show(json, &reply, output::render_release))
        }
        ReleaseCmd::SetPercent { key, percents, if_match, dry_run: true } => {
            let percent = percent_map(&percents)?;
            let before = client.get_release(&key).await?;
            let revision = if_match.unwrap_or(before.value.revision);
            let mut after = before.value.allocation.clone();
            after.extend(percent);
            let action = format!("would set {key}'s percents at revision {revision}");
            Ok(dry_run(json, &action, &json!({"allocation": before.value.allocation}), &json!({"allocation": after})))
        }
        ReleaseCmd::SetPercent { key, percents, if_match, dry_run: false } => {
            set_percent(client, json, &key, &percents, if_match).await
        }
        ReleaseCmd::Kill(kill_args) => kill(client, json, kill_args).await,
        ReleaseCmd::Unkill { key } => {
            let reply = client.unkill(&key).await?;
            Ok(show(json, &reply, output::render_unkilled))
        }
        ReleaseCmd::Delete { key, if_match: _, dry_run: true } => {
            let before = client.get_release(&key).await?;
            let action = format!("would delete {key} (revision {}) from {}", before.value.revision, args.env);
            Ok(dry_run(json, &action, &edit::editable(&before.body), &Value::Null))
        }
        ReleaseCmd::Delete { key, if_match, dry_run: false } => {
            let body = client.delete_release(&key, if_match).await?;
            Ok(if json { output::render_json(&body) } else { format!("deleted {key} from {}\n", args.env) })
        }
    }
}

async fn ramp(client: &CohortClient, json: bool, cmd: RampCmd) -> Result<String, CliError> {
    let reason_body = |reason: Option<String>| reason.map_or_else(|| json!({}), |r| json!({ "reason": r }));
    let (key, reply) = match cmd {
        RampCmd::List => {
            let reply = client.list_releases().await?;
            if json {
                let active: Vec<&Value> = reply.body["releases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| matches!(r["ramp"]["state"].as_str(), Some("running" | "paused")))
                    .collect();
                return Ok(output::render_json(&json!({"environment": reply.value.environment, "ramps": active})));
            }
            return Ok(output::render_ramp_list(&reply.value, now_ms()));
        }
        RampCmd::Status { key, watch: true } => return watch_ramp(client, json, &key).await,
        RampCmd::Status { key, watch: false } => {
            let reply = client.ramp_status(&key).await?;
            return Ok(if json { output::render_json(&reply.body) } else { output::render_ramp_status(&reply.value) });
        }
        RampCmd::Start { key, candidate, steps, max_error_rate_increase, max_error_rate, min_samples, confidence } => {
            let steps: Vec<Value> = steps
                .0
                .into_iter()
                .map(|(percent, hold)| match hold {
                    Some(hold) => json!({"percent": percent, "hold": hold}),
                    None => json!({"percent": percent}),
                })
                .collect();
            let mut guard = json!({
                "max_error_rate_increase": max_error_rate_increase,
                "min_samples": min_samples,
                "confidence": confidence,
            });
            if let Some(max) = max_error_rate {
                guard["max_error_rate"] = json!(max);
            }
            let body = json!({"candidate": candidate, "steps": steps, "guard": guard});
            let reply = client.ramp_action(&key, &["ramp"], &body).await?;
            (key, reply)
        }
        RampCmd::Pause { key, reason } => {
            let reply = client.ramp_action(&key, &["ramp", "pause"], &reason_body(reason)).await?;
            (key, reply)
        }
        RampCmd::Resume { key } => {
            let reply = client.ramp_action(&key, &["ramp", "resume"], &json!({})).await?;
            (key, reply)
        }
        RampCmd::Abort { key, reason } => {
            let reply = client.ramp_action(&key, &["ramp", "abort"], &reason_body(reason)).await?;
            (key, reply)
        }
        RampCmd::Promote { key, candidate } => {
            let body = candidate.map_or_else(|| json!({}), |c| json!({ "candidate": c }));
            let reply = client.ramp_action(&key, &["promote"], &body).await?;
            (key, reply)
        }
    };
    if json {
        return Ok(output::render_json(&reply.body));
    }
    Ok(match &reply.value.ramp {
        Some(ramp) => format!(
            "{key}: ramp of {} {} at {} ({}) — revision {}\n",
            ramp.candidate,
            ramp.state,
            output::step_text(ramp),
            output::allocation_summary(&reply.value),
            reply.value.revision
        ),
        None => format!(
            "{key}: baseline is now {} — revision {}\n",
            reply.value.baseline().unwrap_or("?"),
            reply.value.revision
        ),
    })
}

/// Ramp states after which nothing moves any more.
const FINISHED: [&str; 3] = ["completed", "rolled_back", "aborted"];

/// `ramp status --watch`: polls once a second. On a terminal the screen is redrawn in
/// place; otherwise (a pipe, a log) each new state — a new revision or state — is
/// printed once, so the output reads as a history. Ends when the ramp does.
async fn watch_ramp(client: &CohortClient, json: bool, key: &str) -> Result<String, CliError> {
    use std::io::IsTerminal as _;
    let terminal = !json && std::io::stdout().is_terminal();
    let mut last: Option<(Value, Value)> = None;
    loop {
        let reply = match client.ramp_status(key).await {
            Ok(reply) => reply,
            // The ramp was there and is gone (promoted, or the release was replaced).
            Err(err) if last.is_some() && err.status().is_some_and(|s| s.as_u16() == 409) => {
                return Ok(format!("{key}: the ramp is gone ({err})\n"));
            }
            Err(err) => return Err(err.into()),
        };
        let status = &reply.value;
        let seen = (status["revision"].clone(), status["state"].clone());
        let state = status["state"].as_str().unwrap_or("?").to_owned();
        if terminal {
            super::print_stdout(&format!("\x1b[2J\x1b[H{}", output::render_ramp_status(status)));
        } else if last.as_ref() != Some(&seen) {
            let text = if json {
                serde_json::to_string(status).unwrap_or_default() + "\n"
            } else {
                output::render_ramp_status(status) + "\n"
            };
            super::print_stdout(&text);
        }
        last = Some(seen);
        if FINISHED.contains(&state.as_str()) {
            return Ok(String::new());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What `--dry-run` prints: the action, then one `field: before → after` line per
/// change (percents for allocations); with `--json`, `{dry_run, action, before, after,
/// changes}`. Nothing was sent but reads.
fn dry_run(json: bool, action: &str, before: &Value, after: &Value) -> String {
    let changes = output::render_diff(before, after);
    if json {
        return output::render_json(&json!({
            "dry_run": true, "action": action, "before": before, "after": after, "changes": changes,
        }));
    }
    let mut out = format!("dry run: {action}; nothing written\n");
    if changes.is_empty() {
        out.push_str("  no change\n");
    }
    for line in changes {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

async fn kill(client: &CohortClient, json: bool, args: KillArgs) -> Result<String, CliError> {
    let started = Instant::now();
    let reply = client.kill(&args.key, args.reason.as_deref()).await?;
    // A kill the store did not take has no revision to confirm.
    if !args.wait || !reply.value.persisted {
        return Ok(show(json, &reply, output::render_killed));
    }
    let revision = reply.value.revision;
    let kill = Killed { body: &reply.body, text: output::render_killed(&reply.value), revision };
    confirm(json, kill, wait_for_reach(client, revision, started, args.wait_timeout).await)
}

/// A kill that was made, as `--wait` reports it.
struct Killed<'a> {
    /// The server's answer (for `--json`).
    body: &'a Value,
    /// Its human rendering.
    text: String,
    revision: u64,
}

/// What `--wait` saw last.
struct Waited {
    reach: Reply<Reach>,
    elapsed: Duration,
    timed_out: bool,
}

/// Reports the kill and its confirmation: one text, or one JSON document
/// `{"kill": …, "confirmation": …}`. The kill succeeded whatever the confirmation
/// says, so it is always on stdout; the command fails (exit 6) only when a live
/// acknowledging SDK did not apply it in time.
fn confirm(json: bool, kill: Killed<'_>, waited: Result<Waited, ClientError>) -> Result<String, CliError> {
    let waited = match waited {
        Ok(waited) => waited,
        Err(source) => {
            let stdout = if json {
                let confirmation = json!({"revision": kill.revision, "error": source.to_string()});
                output::render_json(&json!({"kill": kill.body, "confirmation": confirmation}))
            } else {
                kill.text
            };
            return Err(CliError::ConfirmationFailed { stdout, source });
        }
    };
    let reach = &waited.reach.value;
    let stdout = if json {
        let mut confirmation = waited.reach.body.clone();
        if let Value::Object(fields) = &mut confirmation {
            fields.insert("elapsed_ms".into(), json!(waited.elapsed.as_millis() as u64));
            fields.insert("timed_out".into(), json!(waited.timed_out));
        }
        output::render_json(&json!({"kill": kill.body, "confirmation": confirmation}))
    } else {
        kill.text + &output::render_reach(reach, waited.elapsed, now_ms())
    };
    if reach.confirmed() {
        return Ok(stdout);
    }
    Err(CliError::NotConfirmed {
        stdout,
        revision: kill.revision,
        pending: reach.pending.len(),
        waited: waited.elapsed,
    })
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Polls `reach` until every live acknowledging SDK has applied `revision` and every
/// delivered-only subscriber was sent it, or `timeout` passes.
async fn wait_for_reach(
    client: &CohortClient,
    revision: u64,
    started: Instant,
    timeout: Duration,
) -> Result<Waited, ClientError> {
    loop {
        let reach = client.reach(revision).await?;
        let elapsed = started.elapsed();
        let settled = reach.value.settled();
        if settled || elapsed >= timeout {
            return Ok(Waited { reach, elapsed, timed_out: !settled });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the release first so the confirmation can say what each percent was, then
/// writes conditionally on that read: the before values printed are exactly the ones
/// the update replaced, or the update is refused.
async fn set_percent(
    client: &CohortClient,
    json: bool,
    key: &str,
    percents: &[PercentArg],
    if_match: Option<u64>,
) -> Result<String, CliError> {
    let percent = percent_map(percents)?;
    let before = client.get_release(key).await?;
    let revision = if_match.or(before.etag).unwrap_or(before.value.revision);
    let after = client.set_allocation(key, &percent, Some(revision)).await.map_err(|err| {
        match err.status().map(|s| s.as_u16()) {
            Some(412) => CliError::Stale { key: key.to_owned(), revision, source: err },
            _ => CliError::Client(err),
        }
    })?;
    if json {
        return Ok(output::render_json(&after.body));
    }
    let requested: Vec<String> = percent.into_keys().collect();
    Ok(output::render_percent_changes(&before.value, &after.value, &requested))
}

/// A JSON object silently keeps the last of two equal keys; `v2=5 v2=10` is more
/// likely a typo than an intent, so it is refused.
fn percent_map(percents: &[PercentArg]) -> Result<BTreeMap<String, f64>, CliError> {
    let mut map = BTreeMap::new();
    for p in percents {
        if map.insert(p.version.clone(), p.percent).is_some() {
            return Err(CliError::DuplicateVersion { version: p.version.clone() });
        }
    }
    Ok(map)
}

/// The `POST /releases` body: the `--file` object if given, with the key checked or
/// filled in and any explicit flags laid over it.
async fn create_body(args: &CreateArgs) -> Result<Value, CliError> {
    let mut body = match &args.file {
        Some(path) => read_release_file(path).await?,
        None => Map::new(),
    };
    match body.get("key") {
        None => {
            body.insert("key".to_owned(), json!(args.key));
        }
        Some(Value::String(file_key)) if *file_key == args.key => {}
        Some(other) => {
            let path = args.file.clone().unwrap_or_default();
            return Err(CliError::KeyMismatch {
                arg: args.key.clone(),
                file: other.as_str().map_or_else(|| other.to_string(), str::to_owned),
                path,
            });
        }
    }
    if !args.versions.is_empty() {
        body.insert("versions".to_owned(), json!(args.versions));
    }
    for (field, value) in [("unit", &args.unit), ("salt", &args.salt), ("description", &args.description)] {
        if let Some(value) = value {
            body.insert(field.to_owned(), json!(value));
        }
    }
    if !args.percents.is_empty() {
        let percents = percent_map(&args.percents)?;
        let allocation = body.entry("allocation").or_insert_with(|| Value::Object(Map::new()));
        let Some(allocation) = allocation.as_object_mut() else {
            return Err(CliError::BadFile {
                path: args.file.clone().unwrap_or_default(),
                reason: "\"allocation\" must be an object".to_owned(),
            });
        };
        for (version, percent) in percents {
            allocation.insert(version, json!(percent));
        }
    }
    Ok(Value::Object(body))
}

async fn read_release_file(path: &Path) -> Result<Map<String, Value>, CliError> {
    let text =
        tokio::fs::read_to_string(path).await.map_err(|source| CliError::ReadFile { path: path.to_owned(), source })?;
    let bad = |reason: String| CliError::BadFile { path: path.to_owned(), reason };
    match serde_json::from_str(&text).map_err(|e| bad(e.to_string()))? {
        Value::Object(map) => Ok(map),
        _ => Err(bad("expected a JSON object".to_owned())),
    }
}

/// The server's JSON with `--json`, the human rendering otherwise.
fn show<T>(json: bool, reply: &Reply<T>, render: impl Fn(&T) -> String) -> String {
    if json { output::render_json(&reply.body) } else { render(&reply.value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_args(key: &str) -> CreateArgs {
        CreateArgs {
            key: key.to_owned(),
            versions: vec![],
            unit: None,
            salt: None,
            percents: vec![],
            description: None,
            file: None,
            dry_run: false,
        }
    }

    fn pct(version: &str, percent: f64) -> PercentArg {
        PercentArg { version: version.to_owned(), percent }
    }

    #[tokio::test]
    async fn create_from_flags_sends_only_what_was_given() {
        let mut args = create_args("checkout");
        args.versions = vec!["v1".into(), "v2".into()];
        args.percents = vec![pct("v2", 5.0)];
        let body = create_body(&args).await.expect("body");
        assert_eq!(body, json!({"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 5.0}}));
    }

    #[tokio::test]
    async fn create_from_a_file_inserts_the_key_and_lets_flags_override() {
        let dir = std::env::temp_dir().join(format!("cohort-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("release.json");
        std::fs::write(&path, r#"{"versions": ["v1", "v2"], "allocation": {"v2": 1}, "salt": "s"}"#)
            .expect("write file");

        let mut args = create_args("checkout");
        args.file = Some(path.clone());
        args.percents = vec![pct("v2", 2.5)];
        let body = create_body(&args).await.expect("body");
        assert_eq!(body, json!({"key": "checkout", "versions": ["v1", "v2"], "allocation": {"v2": 2.5}, "salt": "s"}));

        std::fs::write(&path, r#"{"key": "search", "versions": ["v1"]}"#).expect("write file");
        let err = create_body(&args).await.expect_err("key mismatch");
        assert!(matches!(err, CliError::KeyMismatch { .. }), "{err}");
        assert_eq!(err.exit_code(), EXIT_USAGE);

        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_same_version_twice_is_refused() {
        let err = percent_map(&[pct("v2", 5.0), pct("v2", 10.0)]).expect_err("duplicate");
        assert_eq!(err.exit_code(), EXIT_USAGE);
    }
}
