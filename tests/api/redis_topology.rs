//! Hermetic highly available Redis topologies for the tests, on free loopback ports: a
//! Redis Cluster (3 masters, 3 replicas) and a Sentinel set (a primary, a replica, three
//! sentinels). Both stop their processes on drop.
//!
//! Every process is spawned by one long-lived thread with `PR_SET_PDEATHSIG = SIGKILL`,
//! so the kernel kills it when the test binary ends, however it ends — which matters for
//! topologies kept in a `static` (never dropped) and shared by a whole test binary.
//! (The death signal follows the *thread* that forked, hence the dedicated thread.)

use std::collections::HashSet;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The thread that spawns every topology process; it lives as long as the test binary.
static SPAWNER: LazyLock<Mutex<mpsc::Sender<SpawnRequest>>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("redis-spawner".into())
        .spawn(move || {
            for (mut command, reply) in rx {
                let _ = reply.send(command.spawn());
            }
        })
        .expect("spawner thread");
    Mutex::new(tx)
});

/// Spawns `command` so that it dies with the test binary (SIGKILL on the parent's exit).
pub fn spawn_reaped(mut command: Command) -> io::Result<Child> {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    SPAWNER.lock().unwrap_or_else(|e| e.into_inner()).send((command, tx)).map_err(|_| io::Error::other("spawner"))?;
    rx.recv().map_err(|_| io::Error::other("spawner gone"))?
}

/// Ports handed out by this binary, so two topologies started at once never pick the same.
static TAKEN: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Default::default);

/// A free loopback port whose cluster bus port (`port + 10000`) is free too.
fn free_port_pair() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().expect("local addr").port();
        if port > 55_000 || TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
            continue;
        }
        if TAKEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// One `redis-server` process of a topology: its port, directory and arguments, so it
/// can be killed and started again as it was.
struct Node {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    /// Starts a node on a fresh port pair, with the arguments `args` gives for that port.
    /// A port found free may be taken before redis binds it (by an outgoing connection's
    /// ephemeral port, on a busy machine): then another pair is tried, a few times.
    fn start_fresh(root: &Path, args: impl Fn(u16) -> Vec<String>) -> Node {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port_pair();
            let mut node = Node::new(root, port, args(port));
            match node.spawn() {
                Ok(()) => return node,
                Err(error) => last_error = error,
            }
        }
        panic!("no redis-server node would start: {last_error}");
    }

    fn new(root: &Path, port: u16, args: Vec<String>) -> Node {
        let dir = root.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node dir");
        Node { port, dir, args, child: None }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new("redis-server");
        command.args(&self.args).current_dir(&self.dir).stdout(Stdio::null()).stderr(Stdio::null());
        let child = spawn_reaped(command).map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("redis-server on {} exited at start with {status}", self.port));
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("redis-server on {} did not answer PING within 10 s", self.port))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

fn connection(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(url(port))?;
    let conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(conn)
}

fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    cmd.query(&mut connection(port)?)
}

fn ping(port: u16) -> bool {
    query::<String>(port, &redis::cmd("PING")).is_ok()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn base_args(port: u16) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--dir",
        ".",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A master's view of one node, from `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// Slot ranges it serves (masters only), inclusive.
    pub slots: Vec<(u16, u16)>,
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let addr = fields.get(1)?;
            let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = fields.get(2)?;
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(ClusterNode {
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") || flags.contains("noaddr"),
                slots,
            })
        })
        .collect()
}

/// A Redis Cluster of 3 masters and 3 replicas on loopback, node timeout 1 s.
pub struct RedisCluster {
    nodes: Vec<Node>,
    _root: TempDir,
}

impl RedisCluster {
    /// Cluster node timeout: how long until a silent master counts as failed.
    pub const NODE_TIMEOUT_MS: u64 = 1_000;

    /// Starts six nodes, creates the cluster with `redis-cli --cluster create`, and
    /// waits until every node says `cluster_state:ok` and every replica is in sync.
    pub fn start() -> RedisCluster {
        let root = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<Node> = (0..6).map(|_| Node::start_fresh(root.path(), Self::node_args)).collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes, _root: root };
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// A cluster node's command line.
    fn node_args(port: u16) -> Vec<String> {
        let mut args = base_args(port);
        args.extend(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &Self::NODE_TIMEOUT_MS.to_string(),
                // A replica takes over however long it was cut off from its master: the
                // tests kill masters on purpose.
                "--cluster-replica-validity-factor",
                "0",
            ]
            .map(str::to_owned),
        );
        args
    }

    #[allow(dead_code)] // for the failover tests
    /// Starts a fresh node (no data, no cluster configuration) and joins it as a replica
    /// of the master serving `key`'s slot (`redis-cli --cluster add-node … --cluster-slave
    /// --cluster-master-id`), as a supervisor replacing a failed node would; waits until
    /// the cluster is healthy with it in sync. Unlike a restarted old master, a fresh
    /// node never claims the slots it once served, with the data it held then.
    pub fn add_replica_of(&mut self, key: &str) {
        let master = self.master_of(key);
        let id: String = query(master, redis::cmd("CLUSTER").arg("MYID")).expect("CLUSTER MYID");
        let node = Node::start_fresh(self._root.path(), Self::node_args);
        let port = node.port;
        let output = Command::new("redis-cli")
            .args(["--cluster", "add-node", &format!("127.0.0.1:{port}"), &format!("127.0.0.1:{master}")])
            .args(["--cluster-slave", "--cluster-master-id", &id])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster add-node failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.nodes.push(node);
        wait_until("the new replica in sync", Duration::from_secs(30), || {
            !is_master(port) && replica_in_sync(port) && self.is_healthy()
        });
    }

    /// The seed URLs, one per node (`redis://127.0.0.1:<port>/`).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| url(n.port)).collect()
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.alive()).map(|n| n.port).collect()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).expect("CLUSTER KEYSLOT")
    }

    /// The cluster as one live node sees it (`CLUSTER NODES`).
    pub fn nodes_seen_by(&self, port: u16) -> redis::RedisResult<Vec<ClusterNode>> {
        let text: String = query(port, redis::cmd("CLUSTER").arg("NODES"))?;
        Ok(parse_cluster_nodes(&text))
    }

    /// The port of the master serving `key`'s slot, as a live node sees it.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot = self.slot_of(key);
        let port = self.live_ports()[0];
        let nodes = self.nodes_seen_by(port).expect("CLUSTER NODES");
        nodes
            .iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// Kills (SIGKILL) the master serving `key`'s slot; returns its port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let port = self.master_of(key);
        self.kill(port);
        port
    }

    /// Kills (SIGKILL) the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.kill();
        }
    }

    #[allow(dead_code)] // for the failover tests
    /// Stalls (SIGSTOP) or resumes (SIGCONT) the node on `port`.
    pub fn signal(&self, port: u16, signal: &str) {
        if let Some(child) = self.nodes.iter().find(|n| n.port == port).and_then(|n| n.child.as_ref()) {
            let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().expect("kill runs");
            assert!(status.success(), "kill {signal} failed");
        }
    }

    /// Waits until a replica took over every slot a killed master served and every live
    /// node says `cluster_state:ok` (at most 30 s).
    pub fn wait_for_failover(&self) {
        self.wait_healthy(Duration::from_secs(30));
    }

    /// Starts a killed node again with its data and cluster configuration; it rejoins
    /// (as a replica, when its replica took over). Waits until the cluster is healthy.
    pub fn restart(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).expect("a node of this cluster");
        node.kill();
        node.spawn().expect("cluster node restarts");
        self.wait_healthy(Duration::from_secs(30));
    }

    /// Every live node: `cluster_state:ok`, all 16384 slots served by live masters, and
    /// each live master's live replicas in sync.
    pub fn is_healthy(&self) -> bool {
        let live = self.live_ports();
        live.iter().all(|&port| {
            let Ok(info) = query::<String>(port, redis::cmd("CLUSTER").arg("INFO")) else { return false };
            if !info.contains("cluster_state:ok") {
                return false;
            }
            let Ok(nodes) = self.nodes_seen_by(port) else { return false };
            let served: u32 = nodes
                .iter()
                .filter(|n| n.master && !n.failed && live.contains(&n.port))
                .flat_map(|n| n.slots.iter())
                .map(|&(a, b)| u32::from(b - a) + 1)
                .sum();
            served == 16_384 && replica_in_sync(port)
        })
    }

    fn wait_healthy(&self, timeout: Duration) {
        wait_until("a healthy cluster", timeout, || self.is_healthy());
    }
}

/// A replica is attached and in sync with its master (`ROLE`); a master passes.
fn replica_in_sync(port: u16) -> bool {
    let Ok(role) = query::<redis::Value>(port, &redis::cmd("ROLE")) else { return false };
    let redis::Value::Array(fields) = role else { return false };
    match fields.first() {
        Some(redis::Value::BulkString(r)) if r == b"slave" => {
            matches!(fields.get(3), Some(redis::Value::BulkString(s)) if s == b"connected")
        }
        Some(_) => true,
        None => false,
    }
}

/// A Sentinel-managed primary and replica, watched by three sentinels (quorum 2,
/// `down-after-milliseconds` 1000).
pub struct RedisSentinelSet {
    data: Vec<Node>,
    sentinels: Vec<Node>,
    _root: TempDir,
}

impl RedisSentinelSet {
    /// The monitored master's name.
    pub const MASTER_NAME: &'static str = "cohort";

    /// Starts the primary, its replica and three sentinels; waits until every sentinel
    /// sees the replica and the other sentinels.
    pub fn start() -> RedisSentinelSet {
        let root = tempfile::tempdir().expect("temp dir");
        let primary = Node::start_fresh(root.path(), base_args);
        let primary_port = primary.port;
        let replica = Node::start_fresh(root.path(), |port| replica_args(port, primary_port));
        let replica_port = replica.port;
        wait_until("the replica in sync", Duration::from_secs(20), || replica_in_sync(replica_port));
        let sentinels = (0..3)
            .map(|_| {
                Node::start_fresh(root.path(), |port| {
                    let dir = root.path().join(port.to_string());
                    std::fs::create_dir_all(&dir).expect("sentinel dir");
                    let config = dir.join("sentinel.conf");
                    std::fs::write(&config, sentinel_config(port, primary_port)).expect("sentinel config");
                    vec![config.display().to_string(), "--sentinel".into()]
                })
            })
            .collect();
        let set = RedisSentinelSet { data: vec![primary, replica], sentinels, _root: root };
        set.wait_settled(Duration::from_secs(30));
        set
    }

    /// The sentinels' URLs.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(|n| url(n.port)).collect()
    }

    /// The monitored master's name (`cohort`).
    pub fn master_name(&self) -> &'static str {
        Self::MASTER_NAME
    }

    #[allow(dead_code)] // for the failover tests
    /// The data nodes' ports (primary and replica, in start order).
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|n| n.port).collect()
    }

    /// The primary's port, as the first sentinel that answers reports it.
    pub fn primary_port(&self) -> u16 {
        self.sentinels
            .iter()
            .filter(|s| s.alive())
            .find_map(|s| master_addr(s.port))
            .expect("a sentinel names the primary")
    }

    #[allow(dead_code)] // for the failover tests
    /// Starts a fresh data node (no data) as a replica of the primary the sentinels name,
    /// as a supervisor replacing a failed node would; waits until it is in sync. (The
    /// sentinels find it through the primary.)
    pub fn add_replica(&mut self) {
        let primary = self.primary_port();
        let node = Node::start_fresh(self._root.path(), |port| replica_args(port, primary));
        let port = node.port;
        self.data.push(node);
        wait_until("the new replica in sync", Duration::from_secs(30), || replica_in_sync(port));
    }

    /// Kills (SIGKILL) the current primary; returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        if let Some(node) = self.data.iter_mut().find(|n| n.port == port) {
            node.kill();
        }
        port
    }

    /// Waits until the sentinels promoted a live node and it answers as master (at most
    /// 30 s); returns its port.
    pub fn wait_for_new_primary(&self) -> u16 {
        let mut primary = 0;
        wait_until("a new primary", Duration::from_secs(30), || {
            let live: Vec<u16> = self.data.iter().filter(|n| n.alive()).map(|n| n.port).collect();
            let named: Vec<Option<u16>> =
                self.sentinels.iter().filter(|s| s.alive()).map(|s| master_addr(s.port)).collect();
            let Some(Some(port)) = named.first().copied() else { return false };
            primary = port;
            named.iter().all(|n| *n == Some(port)) && live.contains(&port) && is_master(port)
        });
        primary
    }

    /// Starts a killed data node again as a replica of the primary the sentinels name,
    /// as a supervisor bringing a failed node back would; waits until it is in sync. (Left
    /// to come back as a master, it waits for the sentinels to demote it: they wait to see
    /// it report that role for a while first, and not at all while in TILT mode, which a
    /// loaded machine sets off: a full-suite run once waited over 30 s.)
    pub fn restart(&mut self, port: u16) {
        let primary = self.primary_port();
        let node = self.data.iter_mut().find(|n| n.port == port).expect("a data node of this set");
        node.kill();
        node.args = replica_args(port, primary);
        node.spawn().expect("data node restarts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while is_master(port) || !replica_in_sync(port) {
            if Instant::now() > deadline {
                let role = |p: u16| format!("{:?}", query::<redis::Value>(p, &redis::cmd("ROLE")));
                panic!(
                    "timed out after 30s waiting for {port} to sync as a replica of {primary}: its role {}, the primary's {}, the sentinels name {:?}",
                    role(port),
                    role(primary),
                    self.sentinels.iter().map(|s| master_addr(s.port)).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_settled(&self, timeout: Duration) {
        wait_until("the sentinels to see the replica and each other", timeout, || {
            self.sentinels.iter().all(|s| {
                let replicas: redis::RedisResult<Vec<redis::Value>> =
                    query(s.port, redis::cmd("SENTINEL").arg("REPLICAS").arg(Self::MASTER_NAME));
                let others: redis::RedisResult<Vec<redis::Value>> =
                    query(s.port, redis::cmd("SENTINEL").arg("SENTINELS").arg(Self::MASTER_NAME));
                matches!((replicas, others), (Ok(r), Ok(o)) if !r.is_empty() && o.len() == 2)
            })
        });
    }
}

/// A data node's arguments as a replica of `primary`.
fn replica_args(port: u16, primary: u16) -> Vec<String> {
    let mut args = base_args(port);
    args.extend(["--replicaof".into(), "127.0.0.1".into(), primary.to_string()]);
    args
}

fn sentinel_config(port: u16, primary_port: u16) -> String {
    let name = RedisSentinelSet::MASTER_NAME;
    format!(
        "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir .\n\
         sentinel monitor {name} 127.0.0.1 {primary_port} 2\n\
         sentinel down-after-milliseconds {name} 1000\n\
         sentinel failover-timeout {name} 3000\n\
         sentinel parallel-syncs {name} 1\n"
    )
}

fn master_addr(sentinel_port: u16) -> Option<u16> {
    let addr: Option<(String, String)> =
        query(sentinel_port, redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(RedisSentinelSet::MASTER_NAME))
            .ok()?;
    addr.and_then(|(_, port)| port.parse().ok())
}

fn is_master(port: u16) -> bool {
    matches!(
        query::<redis::Value>(port, &redis::cmd("ROLE")),
        Ok(redis::Value::Array(f)) if matches!(f.first(), Some(redis::Value::BulkString(r)) if r == b"master")
    )
}

#[test]
fn a_cluster_starts_fails_over_and_takes_a_node_back() {
    let mut cluster = RedisCluster::start();
    let key = "cohort:{production}:rev";
    let before = cluster.master_of(key);
    let killed = cluster.kill_master_of(key);
    assert_eq!(killed, before);
    cluster.wait_for_failover();
    let after = cluster.master_of(key);
    assert_ne!(after, before, "a replica took over the slot");
    cluster.restart(killed);
    assert_eq!(cluster.master_of(key), after, "the old master came back as a replica");
}

#[test]
fn a_sentinel_set_starts_and_promotes_the_replica() {
    let mut set = RedisSentinelSet::start();
    let old = set.kill_primary();
    let new = set.wait_for_new_primary();
    assert_ne!(old, new);
    set.restart(old);
    assert_eq!(set.primary_port(), new);
}
