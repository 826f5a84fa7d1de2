//! A TCP proxy on loopback that the tests put between cohort and Redis, and tell at run
//! time to misbehave: add latency, drop connections, partition (blackhole) and heal.
//!
//! Written here rather than taken from a registry: what the tests need is in-process
//! control with exact semantics (a partition is a connection that *hangs*, both ways,
//! not one that is refused), and the toxiproxy-style crates are separate servers driven
//! over HTTP or are unmaintained.
//!
//! Semantics, per forwarded chunk and direction:
//! - **latency**: each chunk is written on this long after it was read (so a round trip
//!   pays it twice; throughput is not throttled);
//! - **drops**: each chunk closes its connection, both sides, with this probability
//!   (the chunk is lost), and a new connection is closed at once with it too;
//! - **partition**: connections are still accepted (and connected upstream), but nothing
//!   is forwarded either way: bytes wait in the proxy and the kernel's buffers, as in a
//!   network that drops every packet while TCP keeps retransmitting;
//! - **heal**: forwarding resumes, and what waited is delivered late — as TCP delivers
//!   its retransmissions when a partition ends. A command the client gave up on may so
//!   still reach the server after the partition;
//! - **reset**: every open connection is closed (TCP giving up on a long partition);
//! - **hold**: chunks that contain a byte pattern wait until heal, and what follows them
//!   on their connection waits behind them — one command held in the network while the
//!   rest goes through. [`FaultProxy::answers_after_hold`] counts the answers that came
//!   back on a connection after its held chunk was delivered: the server ran it.

use rand::Rng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The faults in force.
#[derive(Debug, Clone, Default)]
struct Faults {
    latency: Duration,
    drop_rate: f64,
    partitioned: bool,
    /// Chunks containing this wait until heal.
    hold: Option<Vec<u8>>,
    /// Bumped by [`FaultProxy::reset`]: connections older than it close.
    epoch: u64,
}

impl Faults {
    fn holds(&self, chunk: &[u8]) -> bool {
        self.hold.as_deref().is_some_and(|p| !p.is_empty() && chunk.windows(p.len()).any(|w| w == p))
    }
}

/// A proxy forwarding `127.0.0.1:<port>` to a target, stopped on drop.
pub struct FaultProxy {
    port: u16,
    faults: Arc<watch::Sender<Faults>>,
    answers_after_hold: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `target`, with no fault.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port for the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let faults = Arc::new(watch::Sender::new(Faults::default()));
        let answers_after_hold = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept(listener, target, faults.clone(), answers_after_hold.clone()));
        FaultProxy { port, faults, answers_after_hold, task }
    }

    /// Starts a proxy in front of a Redis URL `redis://host:port/…`.
    pub async fn in_front_of(redis_url: &str) -> FaultProxy {
        let address = redis_url
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("a redis://ip:port/ URL");
        FaultProxy::start(address).await
    }

    /// `redis://127.0.0.1:<proxy port>/`: the URL to give the client.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Adds `latency` to every chunk, each way.
    pub fn latency(&self, latency: Duration) {
        self.faults.send_modify(|f| f.latency = latency);
    }

    /// Closes connections: each chunk (and each new connection) with probability `rate`.
    pub fn drop_connections(&self, rate: f64) {
        self.faults.send_modify(|f| f.drop_rate = rate.clamp(0.0, 1.0));
    }

    /// Blackholes: accept, forward nothing either way, until [`FaultProxy::heal`].
    pub fn partition(&self) {
        self.faults.send_modify(|f| f.partitioned = true);
    }

    /// Holds every chunk that contains `pattern` (and what follows it on its
    /// connection) until [`FaultProxy::heal`].
    pub fn hold(&self, pattern: &[u8]) {
        self.faults.send_modify(|f| f.hold = Some(pattern.to_vec()));
    }

    /// How many connections answered after a chunk held on them was delivered.
    pub fn answers_after_hold(&self) -> u64 {
        self.answers_after_hold.load(Ordering::SeqCst)
    }

    /// Ends every fault (latency, drops, partition, holds); what waited is delivered.
    pub fn heal(&self) {
        self.faults.send_modify(|f| {
            f.latency = Duration::ZERO;
            f.drop_rate = 0.0;
            f.partitioned = false;
            f.hold = None;
        });
    }

    /// Closes every open connection.
    #[allow(dead_code)]
    pub fn reset(&self) {
        self.faults.send_modify(|f| f.epoch += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Connections see the sender go and close.
        self.faults.send_modify(|f| f.epoch += 1);
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    faults: Arc<watch::Sender<Faults>>,
    answers_after_hold: Arc<AtomicU64>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        let faults = faults.subscribe();
        if rand::rng().random_bool(faults.borrow().drop_rate) {
            continue; // dropped: the stream closes here
        }
        let answers_after_hold = answers_after_hold.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            relay(inbound, outbound, faults, answers_after_hold).await;
        });
    }
}

/// Forwards both ways until either side closes, a drop or a reset: then closes both.
async fn relay(
    inbound: TcpStream,
    outbound: TcpStream,
    faults: watch::Receiver<Faults>,
    answers_after_hold: Arc<AtomicU64>,
) {
    let epoch = faults.borrow().epoch;
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let mut reset = faults.clone();
    // Set when a held request went on to the server; its answer (the next chunk back)
    // is counted.
    let released = Arc::new(AtomicBool::new(false));
    let requests = Direction::Requests { released: released.clone() };
    let answers = Direction::Answers { released, counted: answers_after_hold };
    tokio::select! {
        _ = pump(in_read, out_write, faults.clone(), requests) => {}
        _ = pump(out_read, in_write, faults, answers) => {}
        _ = reset.wait_for(|f| f.epoch != epoch) => {}
    }
}

/// Which way a pump forwards, for holds.
enum Direction {
    /// Client to server: chunks may be held.
    Requests { released: Arc<AtomicBool> },
    /// Server to client: the first chunk after a held request was released is its answer.
    Answers { released: Arc<AtomicBool>, counted: Arc<AtomicU64> },
}

/// One direction, as a delay line: chunks are stamped when read and written on once
/// their latency has passed (so latency does not throttle throughput), after any
/// partition, unless a drop closes the connection.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
    direction: Direction,
) {
    let (line, mut due) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(64);
    let mut latency_of = faults.clone();
    let read = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let latency = latency_of.borrow_and_update().latency;
            if line.send((Instant::now() + latency, buffer[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some((deadline, chunk)) = due.recv().await {
            tokio::time::sleep_until(deadline).await;
            let held = matches!(direction, Direction::Requests { .. }) && faults.borrow().holds(&chunk);
            let holds = |f: &Faults| held && f.holds(&chunk);
            if faults.wait_for(|f| !f.partitioned && !holds(f)).await.is_err() {
                return;
            }
            let drop_rate = faults.borrow().drop_rate;
            if rand::rng().random_bool(drop_rate) {
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            match &direction {
                Direction::Requests { released } if held => released.store(true, Ordering::SeqCst),
                Direction::Answers { released, counted } if released.swap(false, Ordering::SeqCst) => {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    };
    // The reader ending (EOF) lets the writer drain the line; the writer ending (a drop,
    // a closed peer) or this direction being dropped stops the reader.
    let reader = AbortOnDrop(tokio::spawn(read));
    write.await;
    drop(reader);
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
