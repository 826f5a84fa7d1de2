//! `cohort apply -f FILE`: makes the server match a configuration file.
//!
//! It reads every environment the file names, prints a plan (environments to create,
//! releases to create, update or delete with a field-level diff, kills), and then writes
//! each change through the ordinary API — so every rule the server enforces (validation,
//! the ramp guard, auth scopes) applies, and every write gets its own audit entry. Each
//! update and delete carries `If-Match` with the revision read when planning: a release
//! that changed since stops the apply with a conflict. A second apply of the same file
//! finds nothing to do.
//!
//! Decisions (README, "Backups and configuration as code"):
//! - releases with a running or paused ramp are not touched unless `--include-ramped`;
//! - releases on the server but not in the file are listed and left alone unless `--prune`;
//! - an environment missing on the server is created (that takes an `admin` token);
//! - kills: `killed: true` in the file kills (the safe direction; a killed release being
//!   restored is created serving only its baseline, killed, then given its definition,
//!   so it never serves a candidate); a release or environment killed on the server
//!   stays killed unless `--allow-unkill` (a kill is an incident action);
//! - ramp plans are reported, never started: a ramp moves real traffic on a schedule and
//!   is started by a person (`cohort ramp start`).

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde::Deserialize as _;
use thiserror::Error;

use super::client::{ClientError, CohortClient, Reply};
use super::config_file::{self, ConfigFile, EnvSpec, FieldChange, ReleaseSpec, ServerEnv, ServerRelease};
use super::export::read_environment;
use super::views::ReleaseView;
use super::{EXIT_CONFLICT, EXIT_USAGE};

/// `cohort apply` options.
#[derive(clap::Args, Debug, Clone)]
pub struct ApplyArgs {
    /// the configuration file (`-` reads stdin), as `cohort export` writes it
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// print the plan and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// delete releases that are on the server but not in the file
    #[arg(long)]
    pub prune: bool,
    /// also change releases whose ramp is running or paused (the server still refuses
    /// any change that moves the ramp's allocation)
    #[arg(long)]
    pub include_ramped: bool,
    /// unkill releases (and environments) that are killed on the server but not in the
    /// file; without it a kill is never undone by an apply
    #[arg(long)]
    pub allow_unkill: bool,
}

/// Why an apply stopped.
#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a cohort configuration file: {reason}", .path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("environment `{env}` is not in {}", .path.display())]
    EnvNotInFile { env: String, path: PathBuf },
    #[error(
        "{keys} has a running or paused ramp and would change; nothing was written. Pass --include-ramped to \
         change it anyway (the server still refuses any change that moves a ramp's allocation)"
    )]
    RampActive { keys: String },
    #[error(
        "{env}/{key} changed since the plan was made (it was at revision {planned}): {source}\nnothing more was \
         written; run `cohort apply` again to see a fresh plan"
    )]
    ChangedSincePlan { env: String, key: String, planned: u64, source: Box<ClientError> },
    #[error(
        "the kill of {env}/{key} is served but not yet stored (the store is unavailable); nothing more was written"
    )]
    KillNotPersisted { env: String, key: String },
    #[error("{what} failed: {source}; the changes listed before it were made")]
    Failed { what: String, source: ClientError },
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl ApplyError {
    /// The process exit code (see the `EXIT_*` constants).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Read { .. } | Self::BadFile { .. } | Self::EnvNotInFile { .. } => EXIT_USAGE,
            Self::RampActive { .. } | Self::ChangedSincePlan { .. } => EXIT_CONFLICT,
            Self::KillNotPersisted { .. } => super::EXIT_UNAVAILABLE,
            Self::Failed { source, .. } | Self::Client(source) => source.exit_code(),
        }
    }
}

/// What happens to one release.
#[derive(Debug)]
enum Change {
    Create {
        spec: Box<ReleaseSpec>,
    },
    Update {
        spec: Box<ReleaseSpec>,
        current: Box<ReleaseSpec>,
        revision: u64,
        fields: Vec<FieldChange>,
        kill: bool,
        unkill: bool,
    },
    Delete {
        revision: u64,
    },
}

#[derive(Debug)]
struct ReleaseChange {
    key: String,
    change: Change,
    /// The server's release has a running or paused ramp.
    ramped: bool,
}

/// What happens to one environment.
#[derive(Debug)]
struct EnvPlan {
    name: String,
    create: bool,
    kill_all: Option<Option<String>>,
    unkill_all: bool,
    releases: Vec<ReleaseChange>,
    unchanged: usize,
    notes: Vec<String>,
}

impl EnvPlan {
    fn changes(&self) -> usize {
        usize::from(self.create)
            + usize::from(self.kill_all.is_some())
            + usize::from(self.unkill_all)
            + self.releases.len()
    }
}

/// Runs `cohort apply`: prints the plan and the writes as they happen on stdout.
pub(super) async fn apply(client: &CohortClient, only: Option<&str>, args: &ApplyArgs) -> Result<String, ApplyError> {
    let file = read_file(&args.file)?;
    let envs: Vec<(&String, &EnvSpec)> = match only {
        Some(env) => vec![
            file.environments
                .get_key_value(env)
                .ok_or_else(|| ApplyError::EnvNotInFile { env: env.to_owned(), path: args.file.clone() })?,
        ],
        None => file.environments.iter().collect(),
    };

    let mut plans = Vec::new();
    for (name, spec) in envs {
        let server = match read_environment(client, name).await {
            Ok(server) => Some(server),
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => None,
            Err(err) => return Err(err.into()),
        };
        plans.push(plan_env(name, spec, server.as_ref(), args));
    }

    let total: usize = plans.iter().map(EnvPlan::changes).sum();
    let mut text = String::new();
    for plan in &plans {
        render_plan(plan, &mut text);
    }
    if total == 0 {
        text.push_str("no changes\n");
        return Ok(text);
    }
    let refused: Vec<String> = plans
        .iter()
        .flat_map(|p| p.releases.iter().filter(|r| r.ramped).map(move |r| format!("{}/{}", p.name, r.key)))
        .collect();
    if !refused.is_empty() && !args.include_ramped {
        super::print_stdout(&text);
        return Err(ApplyError::RampActive { keys: refused.join(", ") });
    }
    if args.dry_run {
        text.push_str(&format!("dry run: {total} change(s) planned, nothing was written\n"));
        return Ok(text);
    }
    text.push_str("applying:\n");
    super::print_stdout(&text);

    let mut written = 0;
    for plan in &plans {
        written += execute(client, plan).await?;
    }
    Ok(format!("applied: {written} write(s)\n"))
}

fn read_file(path: &Path) -> Result<ConfigFile, ApplyError> {
    let text =
        if path == Path::new("-") { std::io::read_to_string(std::io::stdin()) } else { std::fs::read_to_string(path) }
            .map_err(|source| ApplyError::Read { path: path.to_owned(), source })?;
    config_file::parse(&text).map_err(|reason| ApplyError::BadFile { path: path.to_owned(), reason })
}

fn plan_env(name: &str, spec: &EnvSpec, server: Option<&ServerEnv>, args: &ApplyArgs) -> EnvPlan {
    let mut plan = EnvPlan {
        name: name.to_owned(),
        create: server.is_none(),
        kill_all: None,
        unkill_all: false,
        releases: Vec::new(),
        unchanged: 0,
        notes: Vec::new(),
    };
    let server_kill_all = server.is_some_and(|s| s.kill_all);
    if spec.kill_all && !server_kill_all {
        plan.kill_all = Some(spec.kill_reason.clone());
    } else if !spec.kill_all && server_kill_all {
        if args.allow_unkill {
            plan.unkill_all = true;
        } else {
            plan.notes
                .push("kill-all is on here and off in the file: it stays on (--allow-unkill turns it off)".into());
        }
    }

    let on_server = |key: &str| server.and_then(|s| s.releases.iter().find(|r| r.key == key));
    for (key, wanted) in &spec.releases {
        let Some(current) = on_server(key) else {
            plan.releases.push(ReleaseChange {
                key: key.clone(),
                change: Change::Create { spec: Box::new(wanted.clone()) },
                ramped: false,
            });
            if wanted.ramp.is_some() {
                plan.notes.push(ramp_note(key));
            }
            continue;
        };
        if let Some(change) = plan_update(key, wanted, current, args, &mut plan.notes) {
            plan.releases.push(change);
        } else {
            plan.unchanged += 1;
        }
    }
    for current in server.map(|s| s.releases.as_slice()).unwrap_or_default() {
        if spec.releases.contains_key(&current.key) {
            continue;
        }
        if args.prune {
            plan.releases.push(ReleaseChange {
                key: current.key.clone(),
                change: Change::Delete { revision: current.revision },
                ramped: current.active_ramp().is_some(),
            });
        } else {
            plan.notes.push(format!("release {} is not in the file: left alone (--prune deletes it)", current.key));
        }
    }
    plan
}

fn ramp_note(key: &str) -> String {
    format!("release {key} has a ramp plan in the file: apply does not start ramps (`cohort ramp start {key} …`)")
}

fn plan_update(
    key: &str,
    wanted: &ReleaseSpec,
    current: &ServerRelease,
    args: &ApplyArgs,
    notes: &mut Vec<String>,
) -> Option<ReleaseChange> {
    let current_spec = current.to_spec();
    let fields = config_file::definition_changes(key, Some(&current_spec), wanted);
    let kill = wanted.killed && !current.killed;
    let unkill = !wanted.killed && current.killed && args.allow_unkill;
    if !wanted.killed && current.killed && !args.allow_unkill {
        notes.push(format!(
            "release {key} is killed here and not in the file: it stays killed (--allow-unkill unkills it)"
        ));
    }
    let active = current.active_ramp();
    match (&wanted.ramp, active) {
        (Some(plan), Some(ramp)) if plan.candidate == ramp.candidate => {}
        (Some(_), _) => notes.push(ramp_note(key)),
        (None, Some(ramp)) => notes.push(format!(
            "release {key} has a {} ramp of {} that the file does not describe",
            ramp.state.as_str(),
            ramp.candidate
        )),
        (None, None) => {}
    }
    if fields.is_empty() && !kill && !unkill {
        return None;
    }
    Some(ReleaseChange {
        key: key.to_owned(),
        change: Change::Update {
            spec: Box::new(wanted.clone()),
            current: Box::new(current_spec),
            revision: current.revision,
            fields,
            kill,
            unkill,
        },
        ramped: active.is_some(),
    })
}

fn render_plan(plan: &EnvPlan, out: &mut String) {
    out.push_str(&format!("environment {}:\n", plan.name));
    if plan.create {
        out.push_str("  + create the environment\n");
    }
    if let Some(reason) = &plan.kill_all {
        out.push_str(&format!("  ! kill-all{}\n", reason_suffix(reason.as_deref())));
    }
    for release in &plan.releases {
        let ramped = if release.ramped { " [ramp active]" } else { "" };
        match &release.change {
            Change::Create { spec } => {
                out.push_str(&format!("  + create {}{ramped}\n", release.key));
                render_fields(&config_file::definition_changes(&release.key, None, spec), out);
                if spec.killed {
                    out.push_str(&format!("      killed{}\n", reason_suffix(spec.kill_reason.as_deref())));
                }
            }
            Change::Update { spec, revision, fields, kill, unkill, .. } => {
                out.push_str(&format!("  ~ update {} (revision {revision}){ramped}\n", release.key));
                if *kill {
                    out.push_str(&format!("      kill{}\n", reason_suffix(spec.kill_reason.as_deref())));
                }
                render_fields(fields, out);
                if *unkill {
                    out.push_str("      unkill\n");
                }
            }
            Change::Delete { revision } => {
                out.push_str(&format!("  - delete {} (revision {revision}){ramped}\n", release.key));
            }
        }
    }
    if plan.unkill_all {
        out.push_str("  ! unkill-all\n");
    }
    if plan.unchanged > 0 {
        out.push_str(&format!("  = {} release(s) unchanged\n", plan.unchanged));
    }
    for note in &plan.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
}

fn render_fields(fields: &[FieldChange], out: &mut String) {
    for field in fields {
        match &field.from {
            Some(from) => out.push_str(&format!("      {}: {from} → {}\n", field.field, field.to)),
            None => out.push_str(&format!("      {}: {}\n", field.field, field.to)),
        }
    }
}

fn reason_suffix(reason: Option<&str>) -> String {
    reason.map(|r| format!(" ({r})")).unwrap_or_default()
}

/// Writes one environment's changes, printing each as it is made; answers how many
/// writes were made.
async fn execute(client: &CohortClient, plan: &EnvPlan) -> Result<usize, ApplyError> {
    let env = plan.name.as_str();
    let client = client.for_env(env);
    let mut writes = 0;
    let failed = |what: String| move |source: ClientError| ApplyError::Failed { what, source };
    if plan.create {
        client.create_environment(env).await.map_err(failed(format!("creating environment {env}")))?;
        done(&mut writes, format!("created environment {env}"));
    }
    if let Some(reason) = &plan.kill_all {
        let reply = client.kill_all(reason.as_deref()).await.map_err(failed(format!("kill-all of {env}")))?;
        if !reply.value.persisted {
            return Err(ApplyError::KillNotPersisted { env: env.to_owned(), key: "(kill-all)".into() });
        }
        done(&mut writes, format!("killed all of {env}"));
    }
    for release in &plan.releases {
        let key = release.key.as_str();
        let stale = |planned: u64| {
            move |source: ClientError| {
                if source.status() == Some(StatusCode::PRECONDITION_FAILED) {
                    ApplyError::ChangedSincePlan {
                        env: env.to_owned(),
                        key: key.to_owned(),
                        planned,
                        source: Box::new(source),
                    }
                } else {
                    ApplyError::Failed { what: format!("writing {env}/{key}"), source }
                }
            }
        };
        match &release.change {
            Change::Create { spec } if spec.killed => {
                let bare = config_file::baseline_only_body(key, spec);
                let created = client.create_release(&bare).await.map_err(failed(format!("creating {env}/{key}")))?;
                done(
                    &mut writes,
                    format!("created {env}/{key} serving its baseline (revision {})", created.value.revision),
                );
                let killed = kill(&client, env, key, spec).await?;
                done(&mut writes, format!("killed {env}/{key} (revision {})", killed.value.revision));
                let full = config_file::release_body(key, spec);
                if full != bare {
                    let revision = killed.value.revision;
                    let reply = client.replace_release(key, &full, Some(revision)).await.map_err(stale(revision))?;
                    done(
                        &mut writes,
                        format!("updated {env}/{key} to its definition (revision {})", reply.value.revision),
                    );
                }
            }
            Change::Create { spec } => {
                let body = config_file::release_body(key, spec);
                let reply = client.create_release(&body).await.map_err(failed(format!("creating {env}/{key}")))?;
                done(&mut writes, format!("created {env}/{key} (revision {})", reply.value.revision));
            }
            Change::Update { spec, current, revision, fields, kill: must_kill, unkill } => {
                let mut revision = *revision;
                if *must_kill {
                    let killed = kill(&client, env, key, spec).await?;
                    // A kill takes no If-Match: what it answers must still be what was
                    // planned against, or someone changed the release in between.
                    let after = ServerRelease::deserialize(&killed.body).map_err(|e| ClientError::BadResponse {
                        url: client.base().to_owned(),
                        status: StatusCode::OK,
                        cause: e.to_string(),
                    })?;
                    if !config_file::definition_changes(key, Some(&after.to_spec()), current).is_empty() {
                        return Err(ApplyError::ChangedSincePlan {
                            env: env.to_owned(),
                            key: key.to_owned(),
                            planned: revision,
                            source: Box::new(ClientError::Api {
                                status: StatusCode::PRECONDITION_FAILED,
                                code: Some("changed_since_plan".into()),
                                message: format!(
                                    "{key} was killed as planned, but its definition differs from the plan"
                                ),
                            }),
                        });
                    }
                    revision = killed.value.revision;
                    done(&mut writes, format!("killed {env}/{key} (revision {revision})"));
                }
                if !fields.is_empty() {
                    let body = config_file::release_body(key, spec);
                    let reply = client.replace_release(key, &body, Some(revision)).await.map_err(stale(revision))?;
                    done(&mut writes, format!("updated {env}/{key} (revision {})", reply.value.revision));
                }
                if *unkill {
                    let reply = client.unkill(key).await.map_err(failed(format!("unkilling {env}/{key}")))?;
                    done(&mut writes, format!("unkilled {env}/{key} (revision {})", reply.value.revision));
                }
            }
            Change::Delete { revision } => {
                client.delete_release(key, Some(*revision)).await.map_err(stale(*revision))?;
                done(&mut writes, format!("deleted {env}/{key}"));
            }
        }
    }
    if plan.unkill_all {
        client.unkill_all().await.map_err(failed(format!("unkill-all of {env}")))?;
        done(&mut writes, format!("unkilled all of {env}"));
    }
    Ok(writes)
}

async fn kill(
    client: &CohortClient,
    env: &str,
    key: &str,
    spec: &ReleaseSpec,
) -> Result<Reply<ReleaseView>, ApplyError> {
    let reply = client
        .kill(key, spec.kill_reason.as_deref())
        .await
        .map_err(|source| ApplyError::Failed { what: format!("killing {env}/{key}"), source })?;
    if !reply.value.persisted {
        return Err(ApplyError::KillNotPersisted { env: env.to_owned(), key: key.to_owned() });
    }
    Ok(reply)
}

/// Prints one write as soon as it is made, so a later failure leaves a true record.
fn done(writes: &mut usize, line: String) {
    *writes += 1;
    super::print_stdout(&format!("  {line}\n"));
}
