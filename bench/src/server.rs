//! Servers under test as child processes: building the release `cohort` binary, starting
//! `cohort serve` (embedded store in a temp dir, a fresh HS256 secret, pinned with
//! `taskset`) or the baseline, waiting until they answer, minting tokens, and stopping
//! them (SIGTERM, then SIGKILL) when dropped.

use crate::{Placement, client};
use anyhow::{Context as _, bail};
use std::ffi::OsString;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment every benchmark uses.
pub const ENV: &str = "production";
/// How long a server may take to answer its first request (valgrind takes a while).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// The workspace root (this crate lives in `bench/`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `cohort` binary: `given`, or a fresh `cargo build --release -p cohort`.
pub fn cohort_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_file() {
            bail!("--cohort-bin {}: no such file", path.display());
        }
        return Ok(path.to_owned());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    eprintln!("building cohort (cargo build --release -p cohort --bin cohort) ...");
    let output = Command::new(cargo)
        .args(["build", "--release", "-p", "cohort", "--bin", "cohort", "--message-format=json-render-diagnostics"])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !output.status.success() {
        bail!("cargo build --release -p cohort failed");
    }
    executable_from_cargo_messages(&String::from_utf8_lossy(&output.stdout))
        .context("cargo build did not report the cohort executable")
}

/// The `executable` of the `cohort` binary target in cargo's JSON messages.
fn executable_from_cargo_messages(stdout: &str) -> Option<PathBuf> {
    stdout.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()).find_map(|message| {
        let target = message.get("target")?;
        let is_bin = target.get("kind")?.as_array()?.iter().any(|k| k == "bin");
        if message.get("reason")? == "compiler-artifact" && target.get("name")? == "cohort" && is_bin {
            message.get("executable")?.as_str().map(PathBuf::from)
        } else {
            None
        }
    })
}

/// A random HS256 secret (hex of 32 bytes from the kernel).
pub fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A child process that is stopped when dropped.
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Process {
    /// Its process id (taskset execs the program, so this is the server itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its output, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until `GET ready_path` answers 200.
    async fn wait_ready(&mut self, ready_path: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited during start-up ({status}):\n{}", self.name, self.log_tail());
            }
            if let Ok(response) = client::request(self.addr, "GET", ready_path, &[], None).await
                && response.status == 200
            {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("{} did not become ready within {START_TIMEOUT:?}:\n{}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, up to ten seconds for a graceful stop, then SIGKILL.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What to start: `program args` pinned to `cpu`, output to `log`, ready when
/// `GET ready_path` on `port` answers 200.
struct Launch<'a> {
    name: &'static str,
    cpu: usize,
    nice: i32,
    program: &'a Path,
    args: Vec<String>,
    /// A command that runs the program (e.g. `valgrind --tool=callgrind`), or empty.
    wrapper: &'a [String],
    envs: Vec<(&'a str, &'a str)>,
    log: PathBuf,
    ready_path: &'a str,
    port: u16,
}

/// Spawns a [`Launch`] and waits for readiness.
async fn spawn(launch: Launch<'_>) -> anyhow::Result<Process> {
    let Launch { name, cpu, nice, program, args, wrapper, envs, log, ready_path, port } = launch;
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut command = crate::sys::pinned(cpu, nice, first);
            command.args(rest).arg(program);
            command
        }
        None => crate::sys::pinned(cpu, nice, program),
    };
    let child = command
        .args(&args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {name} with taskset (is util-linux installed?)"))?;
    let mut process = Process { name, child, log, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)) };
    process.wait_ready(ready_path).await?;
    Ok(process)
}

/// A `cohort serve` with an embedded store in `data_dir`.
pub struct Cohort {
    pub process: Process,
    bin: PathBuf,
    secret: String,
    data_dir: PathBuf,
}

impl Cohort {
    /// Starts `cohort serve` on a free loopback port, pinned where `placement` says.
    pub async fn start(bin: &Path, data_dir: &Path, placement: &Placement) -> anyhow::Result<Cohort> {
        Cohort::launch(bin, data_dir, placement, random_secret()?, &[]).await
    }

    /// Stops this server and starts it again on the same data and secret, through
    /// `wrapper` (e.g. a profiler), so a store seeded at full speed can be profiled.
    pub async fn restart(mut self, placement: &Placement, wrapper: &[String]) -> anyhow::Result<Cohort> {
        self.process.stop();
        Cohort::launch(&self.bin, &self.data_dir, placement, self.secret.clone(), wrapper).await
    }

    async fn launch(
        bin: &Path,
        data_dir: &Path,
        placement: &Placement,
        secret: String,
        wrapper: &[String],
    ) -> anyhow::Result<Cohort> {
        let port = crate::sys::free_port()?;
        let args: Vec<String> = [
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--workers",
            &placement.workers.to_string(),
            "--data-dir",
            &data_dir.join("store").display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        let process = spawn(Launch {
            name: "cohort serve",
            cpu: placement.server_cpu,
            nice: placement.nice,
            program: bin,
            args,
            wrapper,
            envs: vec![("COHORT_AUTH__HS256_SECRET", secret.as_str())],
            log: data_dir.join("cohort.log"),
            ready_path: "/readyz",
            port,
        })
        .await?;
        Ok(Cohort { process, bin: bin.to_owned(), secret, data_dir: data_dir.to_owned() })
    }

    /// Mints a token for [`ENV`] with `scope`, with the real CLI (`cohort token mint`).
    pub fn mint(&self, scope: &str) -> anyhow::Result<String> {
        let output = Command::new(&self.bin)
            .args(["token", "mint", "--sub", "cohort-bench", "--env", ENV, "--scope", scope, "--ttl", "2h"])
            .arg("--data-dir")
            .arg(self.data_dir.join("store"))
            .env("COHORT_AUTH__HS256_SECRET", &self.secret)
            .output()
            .context("running cohort token mint")?;
        if !output.status.success() {
            bail!("cohort token mint failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let token = String::from_utf8(output.stdout)?.trim().to_owned();
        if token.is_empty() {
            bail!("cohort token mint printed nothing");
        }
        Ok(token)
    }
}

/// Starts the baseline (this binary's `baseline` subcommand) where `placement` says,
/// through `wrapper` unless it is empty.
pub async fn start_baseline(dir: &Path, placement: &Placement, wrapper: &[String]) -> anyhow::Result<Process> {
    let me = std::env::current_exe().context("locating cohort-bench itself")?;
    let port = crate::sys::free_port()?;
    let args: Vec<String> =
        vec!["baseline".into(), "--port".into(), port.to_string(), "--workers".into(), placement.workers.to_string()];
    spawn(Launch {
        name: "baseline",
        cpu: placement.server_cpu,
        nice: placement.nice,
        program: &me,
        args,
        wrapper,
        envs: Vec::new(),
        log: dir.join("baseline.log"),
        ready_path: "/",
        port,
    })
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_executable_is_found_in_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"cohort"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"cohort"},"executable":"/t/release/cohort"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        let found = super::executable_from_cargo_messages(messages);
        assert_eq!(found.as_deref(), Some(std::path::Path::new("/t/release/cohort")));
    }
}
