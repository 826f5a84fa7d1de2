//! `cohort kill --wait` against a fleet of 20 real SDK clients: all 20 confirm a kill;
//! then one of them — a separate process — is frozen (SIGSTOP), and the next kill is
//! confirmed by 19/20 with the frozen one named.
//!
//! The frozen client must be its own process, so this test binary re-executes itself
//! with `COHORT_TEST_FOLLOWER_URL` set: the "test" `sdk_follower_child_process` then
//! runs an SDK client until its parent goes, and returns at once in a normal run.

use crate::helpers::{Backend, TestApp, eventually, reach, run_cohort, sdk_with_id as sdk, spawn_app, token};
use crate::sse::DEADLINE;
use cohort_sdk::client::Client;
use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const FOLLOWER_URL: &str = "COHORT_TEST_FOLLOWER_URL";
const FOLLOWER_ID: &str = "COHORT_TEST_FOLLOWER_ID";
const FOLLOWER_TOKEN: &str = "COHORT_TEST_FOLLOWER_TOKEN";
const FOLLOWER_TEST: &str = "sdk_fleet::sdk_follower_child_process";
const FROZEN: &str = "web-frozen";

/// Not a test on its own: the body of the child process `spawn_follower` starts. An
/// SDK client that follows the server, acknowledging what it applies, until its parent
/// closes its stdin (or dies) or five minutes pass.
#[test]
fn sdk_follower_child_process() {
    let (Ok(url), Ok(id), Ok(token)) =
        (std::env::var(FOLLOWER_URL), std::env::var(FOLLOWER_ID), std::env::var(FOLLOWER_TOKEN))
    else {
        return;
    };
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = Client::builder(url, "production", token)
            .sdk_id(id)
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
            .build()
            .expect("client");
        client.wait_ready(DEADLINE).await;
        tokio::time::sleep(Duration::from_secs(300)).await;
    });
    std::process::exit(0);
}

/// The follower child; SIGKILLed (which works on a stopped process too) when dropped.
struct Follower(Child);

impl Follower {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid()]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {}", self.pid());
    }

    /// The process state letter of `/proc/<pid>/stat` (`T` = stopped).
    fn state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // `pid (comm) state …`; comm may hold spaces, so read after the last `)`.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_follower(app: &TestApp, id: &str) -> Follower {
    let exe = std::env::current_exe().expect("the test binary");
    let child = Command::new(exe)
        .args([FOLLOWER_TEST, "--exact", "--nocapture", "--test-threads", "1"])
        .env(FOLLOWER_URL, &app.address)
        .env(FOLLOWER_ID, id)
        .env(FOLLOWER_TOKEN, token("sdk", "production", "eval"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the follower starts");
    Follower(child)
}

async fn cohort(app: &TestApp, args: &[&str]) -> Output {
    run_cohort(app, token("oncall", "production", "kill"), args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_wait_confirms_20_of_20_sdks_then_names_the_one_whose_process_is_frozen() {
    let app = spawn_app(Backend::Embedded).await;
    app.given_release("production", "checkout", 50.0).await;
    app.given_release("production", "search", 50.0).await;
    let follower = spawn_follower(&app, FROZEN);
    let clients: Vec<Client> = (0..19).map(|i| sdk(&app, &format!("web-{i:02}"))).collect();
    let all_acknowledged = eventually(DEADLINE, || async {
        let r = reach(&app, 2).await;
        r["connected"] == 20 && r["applied"] == 20
    })
    .await;
    assert!(all_acknowledged, "20 SDKs (one in a child process) acknowledged: {}", reach(&app, 2).await);

    let o = cohort(&app, &["kill", "checkout", "--reason", "pager", "--wait", "--wait-timeout", "20s"]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("killed checkout at revision 3"), "{stdout}");
    assert!(stdout.contains("applied by 20/20 connected SDKs in"), "{stdout}");

    // Freeze the child's process: its connections stay open, it applies nothing more.
    follower.signal("-STOP");
    assert!(eventually(DEADLINE, || async { follower.state() == Some('T') }).await, "the follower is stopped");

    let o = cohort(&app, &["kill", "search", "--wait", "--wait-timeout", "4s"]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let all = format!("{stdout}{stderr}");
    assert_eq!(o.status.code(), Some(6), "not confirmed everywhere: {all}");
    assert!(all.contains("applied by 19/20 connected SDKs"), "{all}");
    assert!(all.contains(FROZEN), "the frozen SDK is named: {all}");
    assert!(!all.contains("web-00") && !all.contains("web-18"), "only the frozen one: {all}");
    assert!(clients.iter().all(|c| c.revision() == 4), "the others have the kill");
    drop(follower);
}
