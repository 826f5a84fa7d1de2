//! `cohort-bench streams`: N Server-Sent-Events subscribers on one `cohort serve`, the
//! server's RSS before and after they connect, then one release kill and the time until
//! each subscriber reads its `event: change` (p50/p99/max from the kill's HTTP response
//! and from its request).
//!
//! The subscribers are lean on purpose: a raw tokio `TcpStream` each, writing the request
//! by hand and decoding chunked SSE with a few dozen bytes of state, all on one thread
//! pinned to the client core. The kill is sent from its own blocking thread so its
//! response time is stamped when it arrives, not when the busy subscriber thread gets to
//! it.

use crate::server::{self, Cohort, ENV};
use crate::{Placement, client, seed, sys};
use anyhow::{Context as _, bail};
use clap::Args;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

#[derive(Args, Debug)]
pub struct StreamArgs {
    #[command(flatten)]
    placement: Placement,
    /// Concurrent SSE subscribers
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Releases in the store (each subscriber first receives the whole snapshot)
    #[arg(long, default_value_t = 100)]
    releases: usize,
    /// Local source addresses 127.0.0.1..=127.0.0.N the subscribers spread over
    /// (ephemeral ports are per source address)
    #[arg(long, default_value_t = 4)]
    source_addrs: u8,
    /// Connections being opened at once
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Seconds allowed for all subscribers to connect, and again for the kill to reach them
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// The release the benchmark kills.
fn victim() -> String {
    seed::key(0)
}

/// What one subscriber saw.
struct Seen {
    at: Instant,
    id: Option<u64>,
}

/// Shared progress of the subscribers.
#[derive(Default)]
struct Progress {
    connected: AtomicUsize,
    failed: AtomicUsize,
    changed: Notify,
}

impl Progress {
    fn done(&self) -> usize {
        self.connected.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

pub fn run(args: &StreamArgs) -> anyhow::Result<()> {
    let p = &args.placement;
    sys::check_cpus(p.server_cpu, p.client_cpu)?;
    // Each side (server, this process) holds one descriptor per subscriber.
    let limit = sys::raise_open_files(args.subscribers as u64 + 1_024)?;
    let bin = server::cohort_binary(p.cohort_bin.as_deref())?;
    let dir = tempfile::Builder::new().prefix("cohort-bench-streams-").tempdir().context("creating a temp dir")?;
    // Everything this process starts from here on (the runtime, the kill thread) stays
    // on the client core; the server is pinned to its own by taskset.
    sys::pin_current_thread(p.client_cpu)?;
    sys::set_nice(p.nice)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let cohort = Cohort::start(&bin, dir.path(), p).await?;
        let result = measure(args, &cohort, limit).await;
        if result.is_err() {
            eprintln!("server log (last lines):\n{}", cohort.process.log_tail());
        }
        result
    })
}

async fn measure(args: &StreamArgs, cohort: &Cohort, limit: u64) -> anyhow::Result<()> {
    let addr = cohort.process.addr;
    let pid = cohort.process.pid();
    let write = cohort.mint("write")?;
    let eval = cohort.mint("eval")?;
    let kill = cohort.mint("kill")?;
    let took = seed::seed(addr, &write, args.releases.max(1)).await?;
    eprintln!("seeded {} releases in {:.1} s; RLIMIT_NOFILE {limit}", args.releases.max(1), took.as_secs_f64());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = sys::rss_kib(pid)?;

    let request: Arc<[u8]> = format!(
        "GET /v1/envs/{ENV}/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {eval}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .into_bytes()
    .into();
    let progress = Arc::new(Progress::default());
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut subscribers = JoinSet::new();
    let started = Instant::now();
    eprintln!("connecting {} subscribers ...", args.subscribers);
    for i in 0..args.subscribers {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(args.source_addrs.max(1))) as u8);
        let (request, progress, gate) = (Arc::clone(&request), Arc::clone(&progress), Arc::clone(&gate));
        subscribers.spawn(async move {
            let result = subscribe(addr, source, &request, &progress, &gate).await;
            if result.is_err() {
                progress.failed.fetch_add(1, Ordering::Relaxed);
                progress.changed.notify_one();
            }
            result
        });
    }
    let deadline = Duration::from_secs(args.timeout);
    let all_in = async {
        while progress.done() < args.subscribers {
            progress.changed.notified().await;
        }
    };
    if tokio::time::timeout(deadline, all_in).await.is_err() {
        bail!(
            "only {} of {} subscribers connected within {deadline:?}",
            progress.connected.load(Ordering::Relaxed),
            args.subscribers
        );
    }
    let connect_time = started.elapsed();
    let failed = progress.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = first_error(&mut subscribers).await;
        bail!("{failed} subscribers could not connect; first error: {first}");
    }
    eprintln!("all {} connected in {:.1} s", args.subscribers, connect_time.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = sys::rss_kib(pid)?;
    let reported = metric_subscribers(addr).await.unwrap_or_default();

    // The kill, from a thread of its own (see the module comment).
    let cpu_before = (sys::cpu_times(pid)?, sys::cpu_time(std::process::id())?);
    let kill_thread = std::thread::spawn(move || send_kill(addr, &kill));
    let mut seen = Vec::with_capacity(args.subscribers);
    let collect = async {
        while let Some(joined) = subscribers.join_next().await {
            seen.push(joined.context("a subscriber task panicked")??);
        }
        anyhow::Ok(())
    };
    let waited = tokio::time::timeout(deadline, collect).await;
    let kill = kill_thread.join().map_err(|_| anyhow::anyhow!("the kill thread panicked"))??;
    if waited.is_err() {
        bail!("only {} of {} subscribers saw the kill within {deadline:?}", seen.len(), args.subscribers);
    }
    waited.unwrap_or(Ok(()))?;
    let server_cpu = sys::cpu_times(pid)?;
    let cpu = (
        server_cpu.0.saturating_sub(cpu_before.0.0),
        server_cpu.1.saturating_sub(cpu_before.0.1),
        sys::cpu_time(std::process::id())?.saturating_sub(cpu_before.1),
    );

    let report = Report { args, connect_time, rss_before, rss_after, reported, kill: &kill, seen: &seen, cpu };
    report.print();
    if seen.iter().any(|s| s.id != kill.revision) {
        bail!("some subscribers saw a kill event with another id than the kill's revision");
    }
    Ok(())
}

/// The first error among the subscriber tasks, for the message.
async fn first_error(subscribers: &mut JoinSet<anyhow::Result<Seen>>) -> String {
    subscribers.abort_all();
    while let Some(joined) = subscribers.join_next().await {
        if let Ok(Err(error)) = joined {
            return format!("{error:#}");
        }
    }
    "unknown".into()
}

/// `cohort_sse_subscribers{environment="production"}` from `/metrics`.
async fn metric_subscribers(addr: SocketAddr) -> anyhow::Result<u64> {
    let metrics = client::request(addr, "GET", "/metrics", &[], None).await?.text();
    metrics
        .lines()
        .find(|l| l.starts_with("cohort_sse_subscribers{") && l.contains(&format!("\"{ENV}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .context("no cohort_sse_subscribers in /metrics")
}

/// One subscriber: connect (gated), read the response head and the first event (the
/// snapshot), report itself connected, then read until the kill's change event.
async fn subscribe(
    addr: SocketAddr,
    source: Ipv4Addr,
    request: &[u8],
    progress: &Progress,
    gate: &Semaphore,
) -> anyhow::Result<Seen> {
    let permit = gate.acquire().await?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0))).with_context(|| format!("binding {source}"))?;
    let mut stream = socket.connect(addr).await.context("connecting")?;
    stream.write_all(request).await?;
    let mut decoder = SseDecoder::default();
    let mut buf = vec![0u8; 4096];
    let mut head_done = false;
    let mut first_event = true;
    let mut permit = Some(permit);
    let victim = format!("\"key\":\"{}\"", victim());
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("the stream ended before the kill arrived");
        }
        let at = Instant::now();
        decoder.feed(&buf[..n]);
        if !head_done {
            match decoder.take_head()? {
                Some(200) => head_done = true,
                Some(status) => bail!("the stream answered {status}"),
                None => continue,
            }
        }
        decoder.decode()?;
        while let Some(event) = decoder.next_event() {
            if first_event {
                first_event = false;
                permit.take();
                progress.connected.fetch_add(1, Ordering::Relaxed);
                progress.changed.notify_one();
            }
            if event.name == "change" && event.data.contains("\"killed\":true") && event.data.contains(&victim) {
                return Ok(Seen { at, id: event.id });
            }
        }
    }
}

/// One SSE event.
#[derive(Debug, PartialEq)]
struct Event {
    name: String,
    id: Option<u64>,
    data: String,
}

/// Incremental decoder of an HTTP/1.1 response carrying SSE in chunked encoding.
#[derive(Default)]
struct SseDecoder {
    /// Bytes received and not decoded yet.
    raw: Vec<u8>,
    /// Bytes left in the current chunk.
    remaining: usize,
    /// A chunk ended: its CRLF comes next.
    chunk_end: bool,
    /// Decoded SSE text not yet split into events.
    text: Vec<u8>,
    /// How far `text` is known to hold no event end (a large snapshot arrives in many
    /// reads; rescanning it from the start each time would be quadratic).
    scanned: usize,
}

impl SseDecoder {
    fn feed(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
    }

    /// The status, once the whole response head has arrived (it is then consumed).
    /// Refuses a body that is not chunked, the only encoding a stream can have here.
    fn take_head(&mut self) -> anyhow::Result<Option<u16>> {
        let Some(end) = client::find(&self.raw, b"\r\n\r\n") else { return Ok(None) };
        let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("bad status line")?;
        if status == 200 && !head.contains("transfer-encoding: chunked") {
            bail!("the stream is not chunked:\n{head}");
        }
        self.raw.drain(..end + 4);
        Ok(Some(status))
    }

    /// Moves chunk payloads from `raw` to `text`.
    fn decode(&mut self) -> anyhow::Result<()> {
        let mut at = 0;
        loop {
            let rest = &self.raw[at..];
            if self.remaining > 0 {
                let take = self.remaining.min(rest.len());
                if take == 0 {
                    break;
                }
                self.text.extend_from_slice(&rest[..take]);
                self.remaining -= take;
                at += take;
                self.chunk_end = self.remaining == 0;
            } else if self.chunk_end {
                if rest.len() < 2 {
                    break;
                }
                at += 2;
                self.chunk_end = false;
            } else {
                let Some(line_end) = client::find(rest, b"\r\n") else { break };
                let size_text = std::str::from_utf8(&rest[..line_end])?.split(';').next().unwrap_or_default().trim();
                let size =
                    usize::from_str_radix(size_text, 16).with_context(|| format!("bad chunk size {size_text:?}"))?;
                if size == 0 {
                    bail!("the stream ended");
                }
                self.remaining = size;
                at += line_end + 2;
            }
        }
        self.raw.drain(..at);
        Ok(())
    }

    /// The next complete event; comments (heartbeats) are skipped.
    fn next_event(&mut self) -> Option<Event> {
        loop {
            let from = self.scanned.saturating_sub(1);
            let Some(end) = client::find(&self.text[from..], b"\n\n").map(|at| at + from) else {
                self.scanned = self.text.len();
                return None;
            };
            self.scanned = 0;
            let block: Vec<u8> = self.text.drain(..end + 2).collect();
            if self.text.is_empty() && self.text.capacity() > 64 * 1024 {
                self.text = Vec::new(); // the snapshot was large; do not keep its buffer
            }
            let block = String::from_utf8_lossy(&block);
            let mut event = Event { name: "message".into(), id: None, data: String::new() };
            let mut any = false;
            for line in block.lines() {
                if let Some((field, value)) = line.split_once(':') {
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event.name = value.to_owned(),
                        "id" => event.id = value.trim().parse().ok(),
                        "data" => event.data.push_str(value),
                        _ => continue, // "" is a comment
                    }
                    any = true;
                }
            }
            if any {
                return Some(event);
            }
        }
    }
}

/// The kill as the harness saw it.
struct Kill {
    sent: Instant,
    answered: Instant,
    status: u16,
    revision: Option<u64>,
}

/// `POST …/releases/{victim}/kill` over a blocking socket; stamps the send and the
/// moment the whole response has arrived.
fn send_kill(addr: SocketAddr, token: &str) -> anyhow::Result<Kill> {
    let body = br#"{"reason":"cohort-bench streams"}"#;
    let head = format!(
        "POST /v1/envs/{ENV}/releases/{}/kill HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        victim(),
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(addr).context("connecting for the kill")?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let sent = Instant::now();
    stream.write_all(&request)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let answered = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break Instant::now();
        }
        raw.extend_from_slice(&buf[..n]);
        if response_complete(&raw) {
            break Instant::now();
        }
    };
    let response = client::parse(&raw)?;
    if response.status != 200 {
        bail!("the kill answered {}: {}", response.status, response.text());
    }
    let revision =
        response.header("etag").and_then(|t| t.trim_matches(|c| c == '"' || c == 'W' || c == '/').parse().ok());
    Ok(Kill { sent, answered, status: response.status, revision })
}

/// Whether `raw` holds a whole response with a Content-Length body.
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = client::find(raw, b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|length| raw.len() >= end + 4 + length)
}

struct Report<'a> {
    args: &'a StreamArgs,
    connect_time: Duration,
    rss_before: u64,
    rss_after: u64,
    reported: u64,
    kill: &'a Kill,
    seen: &'a [Seen],
    /// CPU time used by the server (user, system) and by the subscribers from the kill
    /// until the last subscriber saw it: which side the propagation time is spent on.
    cpu: (Duration, Duration, Duration),
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

impl Report<'_> {
    fn print(&self) {
        let mut from_response: Vec<Duration> =
            self.seen.iter().map(|s| s.at.saturating_duration_since(self.kill.answered)).collect();
        let mut from_request: Vec<Duration> =
            self.seen.iter().map(|s| s.at.saturating_duration_since(self.kill.sent)).collect();
        from_response.sort();
        from_request.sort();
        let early = self.seen.iter().filter(|s| s.at < self.kill.answered).count();
        let growth = self.rss_after.saturating_sub(self.rss_before);
        let n = self.args.subscribers;
        println!();
        println!(
            "cohort-bench streams: {}; server on core {}, subscribers on core {} (nice {}); {} worker(s); {} releases",
            sys::machine(),
            self.args.placement.server_cpu,
            self.args.placement.client_cpu,
            self.args.placement.nice,
            self.args.placement.workers,
            self.args.releases
        );
        println!();
        println!("| figure | value |");
        println!("| --- | ---: |");
        println!("| subscribers connected (server's `cohort_sse_subscribers`) | {n} ({}) |", self.reported);
        println!("| time to connect all (each gets the snapshot first) | {:.1} s |", self.connect_time.as_secs_f64());
        println!(
            "| server RSS before / after connecting | {:.1} MB / {:.1} MB |",
            mb(self.rss_before),
            mb(self.rss_after)
        );
        println!(
            "| RSS growth | {:.1} MB ({:.1} KB per subscriber) |",
            mb(growth),
            growth as f64 * 1.024 / n.max(1) as f64
        );
        println!(
            "| kill: status, response time | {} in {} |",
            self.kill.status,
            ms(self.kill.answered.saturating_duration_since(self.kill.sent))
        );
        println!("| subscribers that saw the kill | {} of {n} |", self.seen.len());
        for (label, values) in
            [("from the kill's response", &from_response), ("from the kill's request", &from_request)]
        {
            println!(
                "| propagation {label}: p50 / p99 / max | {} / {} / {} |",
                ms(percentile(values, 50.0)),
                ms(percentile(values, 99.0)),
                ms(percentile(values, 100.0))
            );
        }
        println!(
            "| CPU from the kill to the last receipt: server user + system / subscribers | {} + {} / {} |",
            ms(self.cpu.0),
            ms(self.cpu.1),
            ms(self.cpu.2)
        );
        println!();
        println!(
            "{early} subscribers read the event before the kill's response arrived; they count as 0 from the response."
        );
    }
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_sse_decodes_across_arbitrary_splits() {
        let mut stream =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for frame in [
            "event: snapshot\nid: 3\ndata: {\"a\":1}\n\n",
            ": heartbeat\n\n",
            "event: change\nid: 4\ndata: {\"killed\":true}\n\n",
        ] {
            stream.extend_from_slice(format!("{:x}\r\n{frame}\r\n", frame.len()).as_bytes());
        }
        for split in [1, 3, 7, 40, stream.len()] {
            let mut decoder = SseDecoder::default();
            let mut events = Vec::new();
            let mut status = None;
            for piece in stream.chunks(split) {
                decoder.feed(piece);
                if status.is_none() {
                    status = decoder.take_head().expect("head");
                    if status.is_none() {
                        continue;
                    }
                }
                decoder.decode().expect("decodes");
                while let Some(event) = decoder.next_event() {
                    events.push(event);
                }
            }
            assert_eq!(status, Some(200));
            assert_eq!(events.len(), 2, "split {split}: {events:?}");
            assert_eq!(events[0], Event { name: "snapshot".into(), id: Some(3), data: "{\"a\":1}".into() });
            assert_eq!(events[1], Event { name: "change".into(), id: Some(4), data: "{\"killed\":true}".into() });
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&values, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&values, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn a_response_is_complete_when_its_body_is() {
        assert!(!response_complete(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab"));
        assert!(response_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd"));
    }
}
