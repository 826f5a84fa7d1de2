//! Starts real `redis-server` processes on free loopback ports for the tests, and tears
//! them down. Never depends on a server started by hand.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A `redis-server` owned by one test. Killed on drop.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl RedisServer {
    /// Starts a server with append-only persistence (fsync always), so a kill and
    /// restart keeps every acknowledged write, like a production Redis.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. cluster mode).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut last_error = String::new();
        // A port found free may be taken before redis binds it; try a few.
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir"),
                child: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--protected-mode", "yes", "--daemonize", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot run redis-server ({e}); it is the one prerequisite of the test suite (apt-get install redis-server)")
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("redis-server exited at start with {status}"));
            }
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not answer PING within 10 s".into())
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The data directory.
    #[allow(dead_code)]
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Kills the server abruptly (an outage).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server restarts");
    }

    /// Starts a server that persists only by explicit `SAVE` (no append-only file): a
    /// restart loads the last dump, older than what was written since — as a Redis
    /// restored from a backup or restarted from its last RDB snapshot does.
    pub fn start_with_snapshots() -> RedisServer {
        Self::start_with(&["--appendonly", "no"])
    }

    /// Writes a dump (`SAVE`) that a restart will load.
    pub fn save(&self) {
        redis::cmd("SAVE").query::<()>(&mut self.connection()).expect("SAVE");
    }

    /// Empties every database (`FLUSHALL`): data loss without a restart.
    pub fn flushall(&self) {
        redis::cmd("FLUSHALL").query::<()>(&mut self.connection()).expect("FLUSHALL");
    }

    /// Stalls the server (SIGSTOP): connections stay open, nothing answers.
    pub fn stall(&self) {
        self.signal("-STOP");
    }

    /// Lets a stalled server go on (SIGCONT).
    pub fn unstall(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().expect("kill runs");
            assert!(status.success(), "kill {signal} failed");
        }
    }

    /// Starts it again after [`RedisServer::kill`] (same port, same data directory).
    pub fn start_again(&mut self) {
        self.spawn().expect("redis-server restarts");
    }

    /// A synchronous connection for assertions.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url()).and_then(|c| c.get_connection()).expect("redis connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
