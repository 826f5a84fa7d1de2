//! `cohort-bench http`: wrk against the hello-world baseline, then against cohort's
//! evaluation, OFREP and snapshot routes on a store of N releases, then the baseline
//! again (so drift during the run shows); one table with requests/s, p50, p99, the ratio
//! to the baseline and the server's CPU use.

use crate::server::{self, Cohort, ENV, Process};
use crate::wrk::{self, Load, Report, Request};
use crate::{Placement, client, seed, sys};
use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct HttpArgs {
    #[command(flatten)]
    placement: Placement,
    /// Releases in the store
    #[arg(long, default_value_t = 1_000)]
    releases: usize,
    /// Measured seconds per route
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured warm-up seconds before each route
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// wrk connections
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// wrk threads
    #[arg(long, default_value_t = 1)]
    wrk_threads: usize,
    /// Distinct requests (contexts/releases) each route cycles through
    #[arg(long, default_value_t = 1_000)]
    variants: usize,
    /// Also record a `perf` CPU profile (cpu-clock, DWARF call graphs) of the server
    /// during each measured run, into this directory (the profiler's own cost shows in
    /// the figures of such a run: profile and measure separately)
    #[arg(long)]
    perf_dir: Option<PathBuf>,
}

/// One measured route.
struct Row {
    name: &'static str,
    report: Report,
    /// Server CPU time over wall time during the measured run (1.0 = one core busy).
    cpu_share: f64,
    /// Server CPU time per request, in microseconds: unlike requests/s, it barely moves
    /// when other processes take turns on the server's core.
    cpu_us_per_request: f64,
}

/// Server CPU time (user + system) of `pid`, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a constant.
    let per_sec = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    Ok(Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

/// Warm-up, then the measured run, of `requests` against `process`.
fn measure(
    name: &'static str,
    process: &Process,
    requests: &[Request],
    dir: &Path,
    args: &HttpArgs,
) -> anyhow::Result<Row> {
    let script = dir.join(format!("{}.lua", name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")));
    std::fs::write(&script, wrk::script(requests)).context("writing the wrk script")?;
    let url = format!("http://{}/", process.addr);
    let load = Load {
        cpu: args.placement.client_cpu,
        nice: args.placement.nice,
        threads: args.wrk_threads,
        connections: args.connections,
        duration: Duration::from_secs(args.warmup),
    };
    if args.warmup > 0 {
        wrk::run(&url, &script, load)?;
    }
    let profiler = match &args.perf_dir {
        Some(perf_dir) => Some(start_perf(perf_dir, &script, process.pid(), args)?),
        None => None,
    };
    let before = cpu_time(process.pid())?;
    let report = wrk::run(&url, &script, Load { duration: Duration::from_secs(args.duration), ..load })?;
    let used = cpu_time(process.pid())?.saturating_sub(before);
    if let Some(mut profiler) = profiler {
        profiler.wait().context("waiting for perf")?;
    }
    let cpu_share = used.as_secs_f64() / args.duration.max(1) as f64;
    let cpu_us_per_request = used.as_secs_f64() * 1e6 / report.requests.max(1) as f64;
    eprintln!(
        "  {name}: {:.0} req/s, p50 {}, p99 {}, server CPU {:.0} %, {cpu_us_per_request:.1} µs CPU/request",
        report.requests_per_sec,
        show(report.p50),
        show(report.p99),
        cpu_share * 100.0
    );
    Ok(Row { name, report, cpu_share, cpu_us_per_request })
}

/// `perf record` of `pid` for the measured run, on the load generator's core.
fn start_perf(perf_dir: &Path, script: &Path, pid: u32, args: &HttpArgs) -> anyhow::Result<Child> {
    std::fs::create_dir_all(perf_dir).with_context(|| format!("creating {}", perf_dir.display()))?;
    let stem = script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let output = perf_dir.join(format!("{stem}.perf.data"));
    sys::pinned(args.placement.client_cpu, 0, "perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf,8192", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&output)
        .args(["--", "sleep"])
        .arg(args.duration.to_string())
        .stdout(Stdio::null())
        .spawn()
        .context("starting perf record")
}

fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1_000.0 { format!("{:.2} ms", us / 1_000.0) } else { format!("{us:.0} µs") }
}

fn baseline_requests() -> Vec<Request> {
    vec![Request { method: "GET", path: "/".into(), headers: Vec::new(), body: None }]
}

fn json_post(path: String, token: &str, body: &serde_json::Value) -> Request {
    Request {
        method: "POST",
        path,
        headers: vec![
            ("Authorization".into(), format!("Bearer {token}")),
            ("Content-Type".into(), "application/json".into()),
        ],
        body: Some(body.to_string()),
    }
}

/// The cohort routes: name, requests, and the status every answer must have.
fn cohort_routes(args: &HttpArgs, token: &str, etag: &str) -> Vec<(&'static str, Vec<Request>, u16)> {
    let n = args.releases.max(1);
    let variants = args.variants.max(1);
    let evaluate = format!("/v1/envs/{ENV}/evaluate");
    let single = (0..variants)
        .map(|v| {
            json_post(
                evaluate.clone(),
                token,
                &json!({"context": seed::context(v), "releases": [seed::key(v * 7 % n)]}),
            )
        })
        .collect();
    let bulk = (0..variants.min(200))
        .map(|v| {
            let keys: Vec<String> = (0..100.min(n)).map(|j| seed::key((v * 37 + j) % n)).collect();
            json_post(evaluate.clone(), token, &json!({"context": seed::context(v), "releases": keys}))
        })
        .collect();
    let ofrep = (0..variants)
        .map(|v| {
            json_post(
                format!("/ofrep/v1/evaluate/flags/{}", seed::key(v * 7 % n)),
                token,
                &json!({"context": seed::context(v)}),
            )
        })
        .collect();
    let snapshot = vec![Request {
        method: "GET",
        path: format!("/v1/envs/{ENV}/snapshot"),
        headers: vec![("Authorization".into(), format!("Bearer {token}")), ("If-None-Match".into(), etag.to_owned())],
        body: None,
    }];
    vec![
        ("evaluate, 1 release", single, 200),
        ("evaluate, 100 releases", bulk, 200),
        ("OFREP, 1 flag", ofrep, 200),
        ("snapshot, ETag hit (304)", snapshot, 304),
    ]
}

/// Sends `request` once with the harness's client; its status must be `expected`.
async fn probe(process: &Process, request: &Request, expected: u16) -> anyhow::Result<client::Response> {
    let headers: Vec<(&str, &str)> = request.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let body = request.body.as_deref().map(str::as_bytes);
    let response = client::request(process.addr, request.method, &request.path, &headers, body).await?;
    if response.status != expected {
        bail!(
            "{} {} answered {} (expected {expected}): {}",
            request.method,
            request.path,
            response.status,
            response.text()
        );
    }
    Ok(response)
}

pub fn run(args: &HttpArgs) -> anyhow::Result<()> {
    let p = &args.placement;
    sys::check_cpus(p.server_cpu, p.client_cpu)?;
    let bin = server::cohort_binary(p.cohort_bin.as_deref())?;
    let dir = tempfile::Builder::new().prefix("cohort-bench-http-").tempdir().context("creating a temp dir")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut rows = Vec::new();
    let mut skipped = Vec::new();

    eprintln!("baseline (before) ...");
    {
        let baseline = runtime.block_on(server::start_baseline(dir.path(), p))?;
        rows.push(measure("baseline before", &baseline, &baseline_requests(), dir.path(), args)?);
    }

    eprintln!("cohort serve: seeding {} releases ...", args.releases);
    {
        let cohort = runtime.block_on(Cohort::start(&bin, dir.path(), p))?;
        let write = cohort.mint("write")?;
        let eval = cohort.mint("eval")?;
        let took = runtime.block_on(seed::seed(cohort.process.addr, &write, args.releases))?;
        eprintln!("  seeded in {:.1} s", took.as_secs_f64());
        let snapshot_probe = Request {
            method: "GET",
            path: format!("/v1/envs/{ENV}/snapshot"),
            headers: vec![("Authorization".into(), format!("Bearer {eval}"))],
            body: None,
        };
        let first = runtime.block_on(probe(&cohort.process, &snapshot_probe, 200))?;
        let etag = first.header("etag").context("the snapshot has no ETag")?.to_owned();
        for (name, requests, expected) in cohort_routes(args, &eval, &etag) {
            let Some(first) = requests.first() else { continue };
            if let Err(error) = runtime.block_on(probe(&cohort.process, first, expected)) {
                if name.starts_with("OFREP") {
                    eprintln!("  {name}: skipped, the route does not answer as expected: {error:#}");
                    skipped.push(name);
                    continue;
                }
                return Err(error.context(format!("probing {name}")));
            }
            rows.push(measure(name, &cohort.process, &requests, dir.path(), args)?);
        }
    }

    eprintln!("baseline (after) ...");
    {
        let baseline = runtime.block_on(server::start_baseline(dir.path(), p))?;
        rows.push(measure("baseline after", &baseline, &baseline_requests(), dir.path(), args)?);
    }

    print_table(args, &rows, &skipped);
    let failures: u64 = rows.iter().map(|r| r.report.bad_status + r.report.socket_errors).sum();
    if failures > 0 {
        bail!("{failures} requests failed (non-2xx/3xx or socket errors)");
    }
    Ok(())
}

fn print_table(args: &HttpArgs, rows: &[Row], skipped: &[&str]) {
    let baselines: Vec<f64> =
        rows.iter().filter(|r| r.name.starts_with("baseline")).map(|r| r.report.requests_per_sec).collect();
    let baseline = baselines.iter().sum::<f64>() / baselines.len().max(1) as f64;
    println!();
    println!(
        "cohort-bench http: {}; server and wrk pinned to cores {} and {} (nice {}); {} worker(s); {} releases; wrk -t{} -c{} -d{}s after {} s warm-up",
        sys::machine(),
        args.placement.server_cpu,
        args.placement.client_cpu,
        args.placement.nice,
        args.placement.workers,
        args.releases,
        args.wrk_threads,
        args.connections,
        args.duration,
        args.warmup
    );
    println!();
    let baseline_cpu = {
        let costs: Vec<f64> =
            rows.iter().filter(|r| r.name.starts_with("baseline")).map(|r| r.cpu_us_per_request).collect();
        costs.iter().sum::<f64>() / costs.len().max(1) as f64
    };
    println!(
        "| route | requests/s | p50 | p99 | vs baseline | server CPU | CPU µs/request | vs baseline (CPU) | non-2xx/3xx | socket errors |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let r = &row.report;
        println!(
            "| {} | {:.0} | {} | {} | {:.0} % | {:.0} % | {:.1} | {:.0} % | {} | {} |",
            row.name,
            r.requests_per_sec,
            show(r.p50),
            show(r.p99),
            100.0 * r.requests_per_sec / baseline.max(1.0),
            100.0 * row.cpu_share,
            row.cpu_us_per_request,
            100.0 * baseline_cpu / row.cpu_us_per_request.max(1e-9),
            r.bad_status,
            r.socket_errors
        );
    }
    for name in skipped {
        println!("| {name} | (route not available) | | | | | | | | |");
    }
    println!();
    println!(
        "vs baseline: requests/s against the mean of the two baseline runs ({baseline:.0} req/s); (CPU): the baseline's server CPU per request ({baseline_cpu:.1} µs) over the route's. A 304 counts as success."
    );
    if let [before, after] = baselines[..] {
        let drift = (after - before).abs() / before.max(after).max(1.0);
        if drift > 0.10 {
            println!(
                "warning: the baseline moved by {:.0} % during the run (a busy machine?); rerun before quoting",
                drift * 100.0
            );
        }
    }
    if rows.iter().any(|r| !r.name.starts_with("baseline") && r.cpu_share < 0.85) {
        println!(
            "note: a server below ~90 % CPU shared its core with other processes (or wrk was the bottleneck): requests/s and latencies are disturbed; the CPU-per-request ratio holds up better"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_show_in_the_right_unit() {
        use std::time::Duration;
        assert_eq!(super::show(Duration::from_micros(250)), "250 µs");
        assert_eq!(super::show(Duration::from_micros(1_500)), "1.50 ms");
    }
}
