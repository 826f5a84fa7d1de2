//! `cohort-bench profile`: the same routes as `http`, each server run under valgrind's
//! callgrind with a light wrk load, one callgrind dump per route. Instructions per
//! request do not move when other processes share the machine, so this is the figure
//! to compare changes with on a busy box; the dumps show where the instructions go
//! (`callgrind_annotate --inclusive=yes <file>`). User-space only: the kernel's share
//! (sockets) is not counted, and it is the same for cohort and the baseline.

use crate::http_run::{baseline_requests, cohort_routes, probe, snapshot_etag};
use crate::server::{self, Cohort, Process};
use crate::wrk::{self, Load, Request};
use crate::{Placement, seed, sys};
use anyhow::{Context as _, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ProfileArgs {
    #[command(flatten)]
    placement: Placement,
    /// Releases in the store
    #[arg(long, default_value_t = 1_000)]
    releases: usize,
    /// Profiled seconds per route (under valgrind a request costs ~50x more)
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// wrk connections
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Distinct requests each route cycles through
    #[arg(long, default_value_t = 1_000)]
    variants: usize,
    /// Directory for the callgrind files (one per route)
    #[arg(long, default_value = "target/cohort-bench-profile")]
    out: PathBuf,
}

struct Row {
    name: &'static str,
    requests: u64,
    instructions: u64,
}

impl Row {
    fn per_request(&self) -> f64 {
        self.instructions as f64 / self.requests.max(1) as f64
    }
}

pub fn run(args: &ProfileArgs) -> anyhow::Result<()> {
    let p = &args.placement;
    sys::check_cpus(p.server_cpu, p.client_cpu)?;
    let bin = server::cohort_binary(p.cohort_bin.as_deref())?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let dir = tempfile::Builder::new().prefix("cohort-bench-profile-").tempdir().context("creating a temp dir")?;
    let wrapper: Vec<String> = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", dir.path().join("callgrind.out.%p").display()),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut rows = Vec::new();

    eprintln!("baseline under callgrind ...");
    {
        let baseline = runtime.block_on(server::start_baseline(dir.path(), p, &wrapper))?;
        rows.push(profile("baseline", &baseline, &baseline_requests(), dir.path(), &out, args)?);
    }

    eprintln!("cohort serve: seeding {} releases (natively), then restarting under callgrind ...", args.releases);
    {
        let cohort = runtime.block_on(Cohort::start(&bin, dir.path(), p))?;
        let write = cohort.mint("write")?;
        let eval = cohort.mint("eval")?;
        runtime.block_on(seed::seed(cohort.process.addr, &write, args.releases))?;
        let cohort = runtime.block_on(cohort.restart(p, &wrapper))?;
        let etag = runtime.block_on(snapshot_etag(&cohort.process, &eval))?;
        for (name, requests, expected) in cohort_routes(args.releases, args.variants, &eval, &etag) {
            let Some(first) = requests.first() else { continue };
            if let Err(error) = runtime.block_on(probe(&cohort.process, first, expected)) {
                eprintln!("  {name}: skipped: {error:#}");
                continue;
            }
            rows.push(profile(name, &cohort.process, &requests, dir.path(), &out, args)?);
        }
    }

    let baseline = rows.first().map_or(1.0, Row::per_request);
    println!();
    println!(
        "cohort-bench profile: {}; callgrind, wrk -c{} for {} s per route",
        sys::machine(),
        args.connections,
        args.seconds
    );
    println!();
    println!("| route | requests | instructions/request | vs baseline | callgrind file |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for row in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2}x | {} |",
            row.name,
            row.requests,
            row.per_request(),
            row.per_request() / baseline.max(1.0),
            out.join(file_name(row.name)).display()
        );
    }
    Ok(())
}

fn file_name(route: &str) -> String {
    format!("{}.callgrind", route.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
}

/// Warm-up, zeroed counters, a measured wrk run, a dump: instructions per request.
fn profile(
    name: &'static str,
    process: &Process,
    requests: &[Request],
    dir: &Path,
    out: &Path,
    args: &ProfileArgs,
) -> anyhow::Result<Row> {
    let script = dir.join(format!("profile-{}.lua", name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")));
    std::fs::write(&script, wrk::script(requests))?;
    let url = format!("http://{}/", process.addr);
    let load = Load {
        cpu: args.placement.client_cpu,
        nice: args.placement.nice,
        threads: 1,
        connections: args.connections,
        duration: Duration::from_secs(2),
    };
    wrk::run(&url, &script, load)?;
    callgrind_control(process.pid(), "--zero")?;
    let report = wrk::run(&url, &script, Load { duration: Duration::from_secs(args.seconds), ..load })?;
    let before: Vec<PathBuf> = dumps(dir, process.pid())?;
    // The hint goes through a shell inside callgrind_control: keep it to [A-Za-z0-9_].
    let hint = name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    callgrind_control(process.pid(), &format!("--dump={hint}"))?;
    let dump = dumps(dir, process.pid())?
        .into_iter()
        .find(|path| !before.contains(path))
        .context("callgrind wrote no dump")?;
    let instructions = totals(&std::fs::read_to_string(&dump)?).context("no totals in the callgrind dump")?;
    std::fs::rename(&dump, out.join(file_name(name))).context("moving the callgrind dump")?;
    if report.bad_status + report.socket_errors > 0 {
        bail!("{name}: {} failed requests under callgrind", report.bad_status + report.socket_errors);
    }
    let row = Row { name, requests: report.requests, instructions };
    eprintln!("  {name}: {} requests, {:.0} instructions/request", row.requests, row.per_request());
    Ok(row)
}

fn callgrind_control(pid: u32, action: &str) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .arg(action)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running callgrind_control (part of valgrind)")?;
    if !status.success() {
        bail!("callgrind_control {action} {pid} failed ({status})");
    }
    Ok(())
}

/// The dump files of `pid` in `dir` (`callgrind.out.<pid>.<n>`).
fn dumps(dir: &Path, pid: u32) -> anyhow::Result<Vec<PathBuf>> {
    let prefix = format!("callgrind.out.{pid}.");
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        .collect())
}

/// The `totals:` (or older `summary:`) instruction count of a callgrind file.
fn totals(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("totals:").or_else(|| line.strip_prefix("summary:")))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn totals_are_read_from_either_header() {
        assert_eq!(super::totals("events: Ir\nfn=main\n0 5\ntotals: 123456\n"), Some(123_456));
        assert_eq!(super::totals("summary: 42\n"), Some(42));
        assert_eq!(super::totals("events: Ir\n"), None);
    }
}
