//! What the background task and every clone of the client share: the snapshot in use
//! (swapped atomically), the watches that announce it, and how fresh it is.

use super::freshness::Freshness;
use crate::snapshot::Snapshot;
use arc_swap::{ArcSwap, Guard};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The snapshot in use and its announcements. Only the background task (and the
/// builder, for the bootstrap) writes; readers load without locking.
pub(crate) struct Shared {
    snapshot: ArcSwap<Snapshot>,
    revision: watch::Sender<u64>,
    ready: watch::Sender<bool>,
    freshness: Freshness,
}

impl Shared {
    /// Empty until the first snapshot: every release is unknown. `max_staleness` as
    /// the builder was given it (`None`: off).
    pub(crate) fn new(max_staleness: Option<Duration>) -> Self {
        Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            revision: watch::Sender::new(0),
            ready: watch::Sender::new(false),
            freshness: Freshness::new(max_staleness),
        }
    }

    /// When the service was last heard from.
    #[inline]
    pub(crate) fn freshness(&self) -> &Freshness {
        &self.freshness
    }

    #[inline]
    pub(crate) fn load(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The snapshot in use, as an owned handle (for building the next one).
    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Puts `snapshot` in use and announces it.
    pub(crate) fn install(&self, snapshot: Snapshot) {
        let revision = snapshot.revision();
        self.snapshot.store(Arc::new(snapshot));
        self.revision.send_if_modified(|current| {
            let changed = *current != revision;
            *current = revision;
            changed
        });
        self.ready.send_if_modified(|ready| !std::mem::replace(ready, true));
    }

    pub(crate) fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub(crate) fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    pub(crate) fn revisions(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }
}
