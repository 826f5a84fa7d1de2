//! Server-Sent Events fan-out: a subscriber of an environment gets the snapshot (or only
//! the changes it missed, when it resumes), then every change as this instance applies
//! it, with heartbeat comments in between.
//!
//! Push, not poll: one fan-out task reads the announcements of [`Snapshots`] and hands
//! each frame — serialised once, shared by every subscriber — to each subscriber's own
//! bounded channel with `try_send`. A subscriber whose channel is full (it stopped
//! reading, or reads slower than changes come) is dropped on the spot: its stream ends
//! after what it has buffered and it resumes with `Last-Event-ID`. Nobody ever waits
//! for a slow subscriber, and a stuck one costs at most its buffer.
//!
//! Ordering without a lock on the read path: a subscriber is registered, and its
//! starting state read, under the registry mutex that the fan-out task also takes to
//! deliver. Each subscriber records the revision it already has (`from`); the fan-out
//! skips anything at or below it, so nothing is sent twice and nothing is missed.
//!
//! Kill confirmation needs to know who is listening, so every open stream is also a
//! `Connection` until its body is dropped (the client closed, a write failed, the
//! server ended it): who is on the other end ([`Listener`]) and the highest revision
//! whose event was handed to its socket. A connection outlives its place in the fan-out
//! (a subscriber that fell behind still drains its buffer), so the two are kept apart.

use crate::snapshots::{Announcement, EnvSnapshot, Snapshots, Update};
use crate::store::{Change, ChangeKind, EnvName};
use actix_web::web::Bytes;
use futures_util::Stream;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// How streams behave.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    /// Time between heartbeat comments on an idle stream.
    pub heartbeat: Duration,
    /// Events buffered per subscriber before it counts as fallen behind and is dropped.
    pub buffer: usize,
}

/// Handle to subscribe to environments' changes; cheap to clone.
#[derive(Clone)]
pub struct Streams {
    shared: Arc<Shared>,
}

/// The fan-out task's half: run it once ([`Fanout::run`]) for the life of the server.
pub struct Fanout {
    shared: Arc<Shared>,
    announcements: broadcast::Receiver<Announcement>,
}

struct Shared {
    snapshots: Arc<Snapshots>,
    settings: StreamSettings,
    registry: Mutex<Registry>,
    /// The latest snapshot frame of each environment, so that a thousand subscribers
    /// arriving together (say, after a restart) cost one serialisation.
    snapshot_frames: Mutex<HashMap<EnvName, (u64, Bytes)>>,
}

#[derive(Default)]
struct Registry {
    closed: bool,
    next_id: u64,
    envs: HashMap<EnvName, Vec<Subscriber>>,
    /// Every open stream by environment and id, fed by the fan-out or not.
    connections: HashMap<EnvName, HashMap<u64, Connection>>,
}

struct Subscriber {
    id: u64,
    /// The revision this subscriber has (or has queued): anything at or below is skipped.
    from: u64,
    tx: mpsc::Sender<(u64, Bytes)>,
}

/// Who is on the other end of a stream: what the server may conclude from having
/// written an event to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listener {
    /// A cohort SDK that named itself (`X-Cohort-Sdk-Id`) and acknowledges each
    /// revision it applies: it is counted through its acknowledgements, not its socket.
    Sdk {
        /// The id it acknowledges under.
        sdk_id: String,
        /// Which of the SDK's stream connections this is (it counts them), so that
        /// the end of an old one never forgets an acknowledgement sent over a newer one.
        connection: u64,
    },
    /// An OFREP provider, a browser's `EventSource`, any raw SSE client: the server
    /// knows an event was written to it, never that it was applied.
    DeliveredOnly,
    /// A person's console page following the environment: it serves nobody, so kill
    /// confirmation neither waits for it nor counts it as reached.
    Console,
}

/// An open stream, as kill confirmation sees it.
struct Connection {
    listener: Listener,
    /// The highest revision whose event was handed to the socket (0 before any).
    written: Arc<AtomicU64>,
}

/// The delivered-only streams of an environment on this instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveredOnly {
    /// Streams that were written an event at or past the revision asked about.
    pub written: usize,
    /// Every open delivered-only stream.
    pub open: usize,
}

/// Size of the slices the initial frames are written in.
const SLICE: usize = 4_096;

/// One subscriber's stream: the frames to send first, then whatever the fan-out hands
/// it, with heartbeats while idle. Dropping it unregisters the subscriber.
pub struct Subscription {
    /// Slices of the first frames; the last slice of each frame carries its revision.
    initial: VecDeque<(Option<u64>, Bytes)>,
    started: bool,
    rx: mpsc::Receiver<(u64, Bytes)>,
    heartbeat: Interval,
    /// Shared with this stream's [`Connection`]: raised as each event goes out.
    written: Arc<AtomicU64>,
    _registration: Registration,
}

struct Registration {
    shared: Arc<Shared>,
    env: EnvName,
    id: u64,
}

impl Streams {
    /// Streams over `snapshots`, and the fan-out task that feeds them. The fan-out
    /// subscribes to announcements here, so nothing applied before it runs is lost.
    pub fn new(snapshots: Arc<Snapshots>, settings: StreamSettings) -> (Streams, Fanout) {
        let announcements = snapshots.subscribe();
        let shared = Arc::new(Shared {
            snapshots,
            settings,
            registry: Mutex::new(Registry::default()),
            snapshot_frames: Mutex::new(HashMap::new()),
        });
        (Streams { shared: Arc::clone(&shared) }, Fanout { shared, announcements })
    }

    /// Subscribes to `env`. With `last_event_id` (the revision the subscriber has), it
    /// first gets only the changes after it when they are all still held, otherwise
    /// (unknown, too old, before a reload) a fresh snapshot. After [`Streams::close`],
    /// the stream ends at once. `listener` says who asked, for kill confirmation.
    pub fn subscribe(&self, env: &EnvName, last_event_id: Option<u64>, listener: Listener) -> Subscription {
        let (tx, rx) = mpsc::channel(self.shared.settings.buffer.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let (current, id, closed) = {
            let mut registry = self.shared.registry();
            let current = self.shared.snapshots.get(env).unwrap_or_default();
            let id = registry.next_id;
            registry.next_id += 1;
            if !registry.closed {
                let from = current.revision();
                registry.envs.entry(env.clone()).or_default().push(Subscriber { id, from, tx });
                let connection = Connection { listener, written: Arc::clone(&written) };
                registry.connections.entry(env.clone()).or_default().insert(id, connection);
            }
            (current, id, registry.closed)
        };
        // Built outside the lock: everything after `current` reaches the channel, so
        // these frames and the fan-out's never overlap nor leave a gap.
        let initial: VecDeque<(Option<u64>, Bytes)> = if closed {
            VecDeque::new()
        } else {
            // Hand the initial frames (a whole snapshot can be megabytes) to actix in 4 KiB
            // zero-copy slices: actix-http copies each chunk into a per-connection write
            // buffer it never shrinks (actix/actix-web#3367), so one large chunk would pin
            // snapshot-sized memory per subscriber for the life of the connection.
            self.shared
                .initial_frames(env, &current, last_event_id)
                .into_iter()
                .flat_map(|(revision, f)| {
                    (0..f.len()).step_by(SLICE).map(move |i| {
                        let end = (i + SLICE).min(f.len());
                        // Only once its last slice is out has the event been written.
                        (Some(revision).filter(|_| end == f.len()), f.slice(i..end))
                    })
                })
                .collect()
        };
        let period = self.shared.settings.heartbeat;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Subscription {
            initial,
            started: false,
            rx,
            heartbeat,
            written,
            _registration: Registration { shared: Arc::clone(&self.shared), env: env.clone(), id },
        }
    }

    /// How many subscribers `env` has on this instance.
    pub fn subscribers(&self, env: &EnvName) -> usize {
        self.shared.registry().envs.get(env).map_or(0, Vec::len)
    }

    /// How many of `env`'s delivered-only streams on this instance were written an
    /// event at or past `revision`, of how many are open.
    pub fn delivered_only(&self, env: &EnvName, revision: u64) -> DeliveredOnly {
        let registry = self.shared.registry();
        let mut counts = DeliveredOnly::default();
        for connection in registry.connections.get(env).into_iter().flat_map(HashMap::values) {
            if connection.listener == Listener::DeliveredOnly {
                counts.open += 1;
                if connection.written.load(Ordering::Relaxed) >= revision {
                    counts.written += 1;
                }
            }
        }
        counts
    }

    /// Ends every stream (after what each has buffered) and refuses new ones: the
    /// first step of a graceful shutdown, so that clients see a clean end and reconnect
    /// elsewhere instead of the server waiting on streams that never finish.
    pub fn close(&self) {
        let mut registry = self.shared.registry();
        registry.closed = true;
        let count: usize = registry.envs.values().map(Vec::len).sum();
        registry.envs.clear();
        tracing::info!(subscribers = count, "event streams closed");
    }
}

impl Fanout {
    /// Delivers every announcement until `shutdown` flips to true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let announcement = tokio::select! {
                _ = shutdown.changed() => break,
                announcement = self.announcements.recv() => announcement,
            };
            match announcement {
                Ok(announcement) => self.shared.deliver(&announcement),
                Err(RecvError::Lagged(missed)) => {
                    // Some announcements are gone: every environment may have changed in
                    // ways we cannot replay, so everyone gets the current snapshot.
                    tracing::warn!(missed, "event fan-out lagged; sending fresh snapshots");
                    let envs: Vec<EnvName> = self.shared.registry().envs.keys().cloned().collect();
                    for env in envs {
                        self.shared.deliver_snapshot(&env);
                    }
                }
                Err(RecvError::Closed) => break,
            }
        }
    }
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // The registry stays consistent even if a holder panicked: every update is one
        // push, one retain or one clear.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn has_subscribers(&self, env: &EnvName) -> bool {
        self.registry().envs.contains_key(env)
    }

    /// The first frames of a subscriber, each with the revision it brings it to.
    fn initial_frames(
        &self,
        env: &EnvName,
        current: &EnvSnapshot,
        last_event_id: Option<u64>,
    ) -> VecDeque<(u64, Bytes)> {
        if let Some(missed) = last_event_id.and_then(|after| current.history.after(after)) {
            let frames: Option<VecDeque<(u64, Bytes)>> =
                missed.map(|change| change_frame(change).map(|f| (change.revision, f))).collect();
            if let Some(frames) = frames {
                return frames;
            }
        }
        self.snapshot_frame(env, current).map(|f| (current.revision(), f)).into_iter().collect()
    }

    fn snapshot_frame(&self, env: &EnvName, current: &EnvSnapshot) -> Option<Bytes> {
        let revision = current.revision();
        let cached = self.snapshot_frames.lock().unwrap_or_else(|p| p.into_inner()).get(env).cloned();
        if let Some((_, frame)) = cached.filter(|(at, _)| *at == revision) {
            return Some(frame);
        }
        // The same bytes `GET …/snapshot` serves, rendered once per revision.
        let json = current.wire_json();
        if json.is_empty() {
            tracing::error!(%env, revision, "the snapshot cannot be serialised; its subscribers are dropped");
            return None;
        }
        let frame = raw_frame("snapshot", revision, &json);
        self.snapshot_frames.lock().unwrap_or_else(|p| p.into_inner()).insert(env.clone(), (revision, frame.clone()));
        Some(frame)
    }

    fn deliver(&self, announcement: &Announcement) {
        if !self.has_subscribers(&announcement.env) {
            return;
        }
        match &announcement.update {
            Update::Applied(change) => match change_frame(change) {
                Some(frame) => self.dispatch(&announcement.env, change.revision, &frame),
                None => self.drop_all(&announcement.env),
            },
            Update::Reloaded => self.deliver_snapshot(&announcement.env),
        }
    }

    /// Sends the current snapshot to the subscribers of `env` that are behind it.
    fn deliver_snapshot(&self, env: &EnvName) {
        let current = self.snapshots.get(env).unwrap_or_default();
        match self.snapshot_frame(env, &current) {
            Some(frame) => self.dispatch(env, current.revision(), &frame),
            None => self.drop_all(env),
        }
    }

    /// Hands `frame` (the state at `revision`) to every subscriber of `env` that does
    /// not have it yet, dropping those whose buffer is full.
    fn dispatch(&self, env: &EnvName, revision: u64, frame: &Bytes) {
        let mut registry = self.registry();
        let Some(subscribers) = registry.envs.get_mut(env) else { return };
        let mut fell_behind = 0_usize;
        subscribers.retain_mut(|subscriber| {
            if revision <= subscriber.from {
                return true;
            }
            match subscriber.tx.try_send((revision, frame.clone())) {
                Ok(()) => {
                    subscriber.from = revision;
                    true
                }
                Err(TrySendError::Full(_)) => {
                    fell_behind += 1;
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
        if subscribers.is_empty() {
            registry.envs.remove(env);
        }
        drop(registry);
        if fell_behind > 0 {
            tracing::warn!(%env, revision, dropped = fell_behind, "subscribers fell behind and were dropped; they resume with Last-Event-ID");
        }
    }

    /// Ends every stream of `env`: what they would get next cannot be produced, so they
    /// must reconnect rather than silently miss it.
    fn drop_all(&self, env: &EnvName) {
        self.registry().envs.remove(env);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = self.shared.registry();
        if let Some(subscribers) = registry.envs.get_mut(&self.env) {
            subscribers.retain(|s| s.id != self.id);
            if subscribers.is_empty() {
                registry.envs.remove(&self.env);
            }
        }
        // The stream is over: whoever was on it is no longer reached through it.
        if let Some(connections) = registry.connections.get_mut(&self.env) {
            connections.remove(&self.id);
            if connections.is_empty() {
                registry.connections.remove(&self.env);
            }
        }
    }
}

impl Subscription {
    /// The SSE body: initial frames, then changes and heartbeats until the fan-out
    /// drops this subscriber or the streams close.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + 'static {
        futures_util::stream::unfold(self, |mut sub| async move {
            if let Some((revision, frame)) = sub.initial.pop_front() {
                // Let actix flush between slices so its write buffer stays small.
                if sub.started {
                    tokio::task::yield_now().await;
                }
                sub.started = true;
                if let Some(revision) = revision {
                    sub.written.fetch_max(revision, Ordering::Relaxed);
                }
                return Some((Ok(frame), sub));
            }
            tokio::select! {
                biased;
                frame = sub.rx.recv() => frame.map(|(revision, frame)| {
                    sub.written.fetch_max(revision, Ordering::Relaxed);
                    (Ok(frame), sub)
                }),
                _ = sub.heartbeat.tick() => Some((Ok(Bytes::from_static(HEARTBEAT)), sub)),
            }
        })
    }
}

/// One SSE event: `event: {event}`, `id: {id}`, `data: {json}`. Compact JSON has no raw
/// newline, so the data is always one line. `None` only if the value cannot be
/// serialised, which the model's types never cause.
/// A change as subscribers get it. A revocation goes out without the revocation itself —
/// event streams are read with public `eval` tokens — so SDKs only move their revision.
fn change_frame(change: &Change) -> Option<Bytes> {
    match &change.kind {
        ChangeKind::Revoke { .. } => {
            frame("change", change.revision, &serde_json::json!({"revision": change.revision, "type": "revoke"}))
        }
        _ => frame("change", change.revision, change),
    }
}

fn frame(event: &str, id: u64, data: &impl Serialize) -> Option<Bytes> {
    match serde_json::to_vec(data) {
        Ok(json) => Some(raw_frame(event, id, &json)),
        Err(error) => {
            tracing::error!(event, id, %error, "cannot serialise an event; its subscribers are dropped");
            None
        }
    }
}

/// An SSE frame around `json` (serde_json writes no newlines, so one `data:` line).
fn raw_frame(event: &str, id: u64, json: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(json.len() + 48);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(event.as_bytes());
    buf.extend_from_slice(b"\nid: ");
    buf.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Change, ChangeKind, EnvData};
    use futures_util::StreamExt;

    fn env() -> EnvName {
        EnvName::parse("production").expect("env")
    }

    fn kill(revision: u64) -> Change {
        Change { revision, kind: ChangeKind::KillAll { on: revision % 2 == 1, reason: None } }
    }

    fn setup(buffer: usize) -> (Arc<Snapshots>, Streams, tokio::task::JoinHandle<()>, watch::Sender<bool>) {
        let snapshots = Arc::new(Snapshots::with_history(4));
        snapshots.replace(&env(), EnvData::default());
        let (streams, fanout) =
            Streams::new(Arc::clone(&snapshots), StreamSettings { heartbeat: Duration::from_secs(3600), buffer });
        let (stop, stopped) = watch::channel(false);
        (snapshots, streams, tokio::spawn(fanout.run(stopped)), stop)
    }

    fn text(frame: &Bytes) -> &str {
        std::str::from_utf8(frame).expect("utf-8")
    }

    async fn next(stream: &mut (impl Stream<Item = Result<Bytes, Infallible>> + Unpin)) -> Option<String> {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("an event in time");
        item.map(|frame| text(&frame.unwrap_or_else(|never| match never {})).to_owned())
    }

    #[tokio::test]
    async fn a_new_subscriber_gets_the_snapshot_then_changes() {
        let (snapshots, streams, _fanout, _stop) = setup(8);
        let mut stream = Box::pin(streams.subscribe(&env(), None, Listener::DeliveredOnly).into_stream());
        assert!(next(&mut stream).await.expect("snapshot").starts_with("event: snapshot\nid: 0\ndata: {"));
        snapshots.apply(&env(), &kill(1));
        let change = next(&mut stream).await.expect("change");
        assert!(change.starts_with("event: change\nid: 1\ndata: {\"revision\":1,\"type\":\"kill_all\""), "{change}");
    }

    #[tokio::test]
    async fn resuming_replays_only_what_was_missed_or_sends_a_snapshot_when_too_old() {
        let (snapshots, streams, _fanout, _stop) = setup(8);
        for revision in 1..=6 {
            snapshots.apply(&env(), &kill(revision));
        }
        let mut resumed = Box::pin(streams.subscribe(&env(), Some(4), Listener::DeliveredOnly).into_stream());
        assert!(next(&mut resumed).await.expect("5").starts_with("event: change\nid: 5\n"));
        assert!(next(&mut resumed).await.expect("6").starts_with("event: change\nid: 6\n"));
        // History holds 3..=6 only (4 changes): after 1 is too old.
        let mut old = Box::pin(streams.subscribe(&env(), Some(1), Listener::DeliveredOnly).into_stream());
        assert!(next(&mut old).await.expect("snapshot").starts_with("event: snapshot\nid: 6\n"));
        // Ahead of the server (another store, a lagging instance): a snapshot too.
        let mut ahead = Box::pin(streams.subscribe(&env(), Some(60), Listener::DeliveredOnly).into_stream());
        assert!(next(&mut ahead).await.expect("snapshot").starts_with("event: snapshot\nid: 6\n"));
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_dropped_and_others_get_everything() {
        let (snapshots, streams, _fanout, _stop) = setup(2);
        let stuck = streams.subscribe(&env(), None, Listener::DeliveredOnly);
        let mut reader = Box::pin(streams.subscribe(&env(), None, Listener::DeliveredOnly).into_stream());
        assert!(next(&mut reader).await.expect("snapshot").starts_with("event: snapshot"));
        assert_eq!(streams.subscribers(&env()), 2);
        for revision in 1..=10 {
            snapshots.apply(&env(), &kill(revision));
            let event = next(&mut reader).await.expect("change");
            assert!(event.starts_with(&format!("event: change\nid: {revision}\n")), "{event}");
        }
        assert_eq!(streams.subscribers(&env()), 1, "the stuck subscriber was dropped");
        // Its stream ends after what it had buffered: the snapshot and two changes.
        let mut stuck = Box::pin(stuck.into_stream());
        let mut events = Vec::new();
        while let Some(event) = next(&mut stuck).await {
            events.push(event);
        }
        assert_eq!(events.len(), 3, "{events:?}");
    }

    #[tokio::test]
    async fn a_reload_sends_a_fresh_snapshot_and_close_ends_every_stream() {
        let (snapshots, streams, _fanout, _stop) = setup(8);
        let mut stream = Box::pin(streams.subscribe(&env(), None, Listener::DeliveredOnly).into_stream());
        assert!(next(&mut stream).await.expect("snapshot").starts_with("event: snapshot\nid: 0\n"));
        snapshots.replace(&env(), EnvData { revision: 9, kill_all: true, ..EnvData::default() });
        let snapshot = next(&mut stream).await.expect("fresh snapshot");
        assert!(snapshot.starts_with("event: snapshot\nid: 9\ndata: {\"revision\":9,\"kill_all\":true"), "{snapshot}");
        streams.close();
        assert_eq!(next(&mut stream).await, None);
        let mut late = Box::pin(streams.subscribe(&env(), None, Listener::DeliveredOnly).into_stream());
        assert_eq!(next(&mut late).await, None, "no new stream after close");
    }

    #[tokio::test]
    async fn delivered_only_counts_streams_written_the_revision_and_forgets_ended_ones() {
        let (snapshots, streams, _fanout, _stop) = setup(8);
        let mut web = Box::pin(streams.subscribe(&env(), None, Listener::DeliveredOnly).into_stream());
        let sdk = Listener::Sdk { sdk_id: "web-1".into(), connection: 1 };
        let mut from_sdk = Box::pin(streams.subscribe(&env(), None, sdk).into_stream());
        next(&mut web).await.expect("snapshot");
        next(&mut from_sdk).await.expect("snapshot");
        let at_1 = streams.delivered_only(&env(), 1);
        assert_eq!(at_1, DeliveredOnly { written: 0, open: 1 }, "the SDK's stream is not counted, revision 0 was sent");
        snapshots.apply(&env(), &kill(1));
        assert_eq!(streams.delivered_only(&env(), 1).written, 0, "queued is not written");
        assert!(next(&mut web).await.expect("change").starts_with("event: change\nid: 1\n"));
        assert_eq!(streams.delivered_only(&env(), 1), DeliveredOnly { written: 1, open: 1 });
        drop(web);
        assert_eq!(streams.delivered_only(&env(), 1), DeliveredOnly::default(), "gone with its stream");
    }

    #[tokio::test]
    async fn a_console_page_following_the_stream_is_not_counted_as_reached() {
        let (_snapshots, streams, _fanout, _stop) = setup(8);
        let _console = streams.subscribe(&env(), None, Listener::Console);
        assert_eq!(streams.subscribers(&env()), 1);
        assert_eq!(streams.delivered_only(&env(), 0), DeliveredOnly { written: 0, open: 0 });
    }
}
