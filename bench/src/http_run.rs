//! `cohort-bench http`: wrk against cohort's evaluation, OFREP and snapshot routes on a
//! store of N releases and against the hello-world baseline, in rounds (baseline, every
//! route, baseline, …) so that each ratio compares runs minutes apart, not a whole run
//! apart; one table of medians: requests/s, p50, p99, the ratio to the baseline, and the
//! server's CPU time per request (which a busy machine disturbs far less than
//! requests/s).

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
    /// Rounds of all routes (each between two baseline runs); the table shows medians
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also record a `perf` CPU profile (cpu-clock, DWARF call graphs) of the server
    /// during each measured run, into this directory (the profiler's own cost shows in
    /// the figures of such a run: profile and measure separately)
    #[arg(long)]
    perf_dir: Option<PathBuf>,
}

/// One measured route.
struct Row {
    report: Report,
    /// Server CPU time over wall time during the measured run (1.0 = one core busy).
    cpu_share: f64,
    /// Server CPU time per request, in microseconds: unlike requests/s, it barely moves
    /// when other processes take turns on the server's core.
    cpu_us_per_request: f64,
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
    let before = sys::cpu_time(process.pid())?;
    let report = wrk::run(&url, &script, Load { duration: Duration::from_secs(args.duration), ..load })?;
    let used = sys::cpu_time(process.pid())?.saturating_sub(before);
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
    Ok(Row { report, cpu_share, cpu_us_per_request })
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

pub(crate) fn baseline_requests() -> Vec<Request> {
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

/// The cohort routes for a store of `releases`, each cycling through `variants`
/// requests: name, requests, and the status every answer must have.
pub(crate) fn cohort_routes(
    releases: usize,
    variants: usize,
    token: &str,
    etag: &str,
) -> Vec<(&'static str, Vec<Request>, u16)> {
    let n = releases.max(1);
    let variants = variants.max(1);
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
pub(crate) async fn probe(process: &Process, request: &Request, expected: u16) -> anyhow::Result<client::Response> {
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

/// The environment snapshot's current `ETag`.
pub(crate) async fn snapshot_etag(process: &Process, eval_token: &str) -> anyhow::Result<String> {
    let request = Request {
        method: "GET",
        path: format!("/v1/envs/{ENV}/snapshot"),
        headers: vec![("Authorization".into(), format!("Bearer {eval_token}"))],
        body: None,
    };
    let response = probe(process, &request, 200).await?;
    Ok(response.header("etag").context("the snapshot has no ETag")?.to_owned())
}

pub fn run(args: &HttpArgs) -> anyhow::Result<()> {
    let p = &args.placement;
    sys::check_cpus(p.server_cpu, p.client_cpu)?;
    let bin = server::cohort_binary(p.cohort_bin.as_deref())?;
    let dir = tempfile::Builder::new().prefix("cohort-bench-http-").tempdir().context("creating a temp dir")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    // Both servers stay up on the server core; only the one under load uses it.
    let baseline = runtime.block_on(server::start_baseline(dir.path(), p, &[]))?;
    eprintln!("cohort serve: seeding {} releases ...", args.releases);
    let cohort = runtime.block_on(Cohort::start(&bin, dir.path(), p))?;
    let write = cohort.mint("write")?;
    let eval = cohort.mint("eval")?;
    let took = runtime.block_on(seed::seed(cohort.process.addr, &write, args.releases))?;
    eprintln!("  seeded in {:.1} s", took.as_secs_f64());
    let etag = runtime.block_on(snapshot_etag(&cohort.process, &eval))?;
    let mut routes = Vec::new();
    let mut skipped = Vec::new();
    for (name, requests, expected) in cohort_routes(args.releases, args.variants, &eval, &etag) {
        let Some(first) = requests.first() else { continue };
        match runtime.block_on(probe(&cohort.process, first, expected)) {
            Ok(_) => routes.push((name, requests)),
            Err(error) if name.starts_with("OFREP") => {
                eprintln!("  {name}: skipped, the route does not answer as expected: {error:#}");
                skipped.push(name);
            }
            Err(error) => return Err(error.context(format!("probing {name}"))),
        }
    }

    // B R1 R2 R3 R4 B R1 … B: each round's ratios use the baselines on either side.
    let rounds = args.rounds.max(1);
    let mut baselines = vec![measure(BASELINE, &baseline, &baseline_requests(), dir.path(), args)?];
    let mut results: Vec<RouteResult> = routes.iter().map(|(name, _)| RouteResult::new(name)).collect();
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        let rows: Vec<Row> = routes
            .iter()
            .map(|(name, requests)| measure(name, &cohort.process, requests, dir.path(), args))
            .collect::<anyhow::Result<_>>()?;
        baselines.push(measure(BASELINE, &baseline, &baseline_requests(), dir.path(), args)?);
        let around = &baselines[round..round + 2];
        let rps = around.iter().map(|b| b.report.requests_per_sec).sum::<f64>() / 2.0;
        let cpu = around.iter().map(|b| b.cpu_us_per_request).sum::<f64>() / 2.0;
        for (result, row) in results.iter_mut().zip(rows) {
            result.ratios.push(row.report.requests_per_sec / rps.max(1.0));
            result.cpu_ratios.push(cpu / row.cpu_us_per_request.max(1e-9));
            result.rows.push(row);
        }
    }
    drop(cohort);
    drop(baseline);

    print_table(args, &baselines, &results, &skipped);
    let failures: u64 = baselines
        .iter()
        .chain(results.iter().flat_map(|r| &r.rows))
        .map(|r| r.report.bad_status + r.report.socket_errors)
        .sum();
    if failures > 0 {
        bail!("{failures} requests failed (non-2xx/3xx or socket errors)");
    }
    Ok(())
}

const BASELINE: &str = "baseline (hello world)";

/// Every round of one route, with its ratios to the baseline around each round.
struct RouteResult {
    name: &'static str,
    rows: Vec<Row>,
    ratios: Vec<f64>,
    cpu_ratios: Vec<f64>,
}

impl RouteResult {
    fn new(name: &'static str) -> Self {
        RouteResult { name, rows: Vec::new(), ratios: Vec::new(), cpu_ratios: Vec::new() }
    }
}

/// The median (the lower middle one of an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

fn median_of(rows: &[Row], f: impl Fn(&Row) -> f64) -> f64 {
    median(rows.iter().map(f).collect())
}

fn print_row(name: &str, rows: &[Row], ratio: Option<(f64, f64)>) {
    let seconds = |d: Duration| d.as_secs_f64();
    let errors = |f: fn(&Report) -> u64| rows.iter().map(|r| f(&r.report)).sum::<u64>();
    let (ratio, cpu_ratio) = match ratio {
        Some((r, c)) => (format!("{:.0} %", 100.0 * r), format!("{:.0} %", 100.0 * c)),
        None => ("100 %".into(), "100 %".into()),
    };
    println!(
        "| {name} | {:.0} | {} | {} | {ratio} | {:.0} % | {:.1} | {cpu_ratio} | {} | {} |",
        median_of(rows, |r| r.report.requests_per_sec),
        show(Duration::from_secs_f64(median_of(rows, |r| seconds(r.report.p50)))),
        show(Duration::from_secs_f64(median_of(rows, |r| seconds(r.report.p99)))),
        100.0 * median_of(rows, |r| r.cpu_share),
        median_of(rows, |r| r.cpu_us_per_request),
        errors(|r| r.bad_status),
        errors(|r| r.socket_errors),
    );
}

fn print_table(args: &HttpArgs, baselines: &[Row], results: &[RouteResult], skipped: &[&str]) {
    println!();
    println!(
        "cohort-bench http: {}; server and wrk pinned to cores {} and {} (nice {}); {} worker(s); {} releases; wrk -t{} -c{} -d{}s after {} s warm-up; {} round(s), medians",
        sys::machine(),
        args.placement.server_cpu,
        args.placement.client_cpu,
        args.placement.nice,
        args.placement.workers,
        args.releases,
        args.wrk_threads,
        args.connections,
        args.duration,
        args.warmup,
        args.rounds.max(1),
    );
    println!();
    println!(
        "| route | requests/s | p50 | p99 | vs baseline | server CPU | CPU µs/request | vs baseline (CPU) | non-2xx/3xx | socket errors |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    print_row(BASELINE, baselines, None);
    for result in results {
        print_row(result.name, &result.rows, Some((median(result.ratios.clone()), median(result.cpu_ratios.clone()))));
    }
    for name in skipped {
        println!("| {name} | (route not available) | | | | | | | | |");
    }
    println!();
    println!(
        "vs baseline: the route's requests/s over the mean of the baseline runs just before and after it, median over rounds; (CPU): the same with server CPU time per request. A 304 counts as success."
    );
    let rps: Vec<f64> = baselines.iter().map(|b| b.report.requests_per_sec).collect();
    let (low, high) = rps.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    println!("baseline runs: {}", rps.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", "));
    if high > low * 1.15 {
        println!(
            "warning: the baseline moved by {:.0} % during the run (a busy machine?); rerun before quoting",
            100.0 * (high - low) / high
        );
    }
    let all = baselines.iter().chain(results.iter().flat_map(|r| &r.rows));
    if all.clone().any(|r| r.cpu_share < 0.9) {
        println!(
            "note: a server below 90 % CPU shared its core with other processes (or wrk was the bottleneck): its requests/s and latencies are disturbed; CPU per request holds up better"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn medians_take_the_lower_middle() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 3.0, 2.0]), 2.0);
        assert_eq!(super::median(Vec::new()), 0.0);
    }

    #[test]
    fn durations_show_in_the_right_unit() {
        use std::time::Duration;
        assert_eq!(super::show(Duration::from_micros(250)), "250 µs");
        assert_eq!(super::show(Duration::from_micros(1_500)), "1.50 ms");
    }
}
