//! [`Registry`]: which connections are waiting for a request, and since when,
//! so the server can evict the longest-waiting one when it is full.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Shared, Stop};

#[derive(Debug, Default)]
struct Waiting {
    /// Connection id → (waiting since, its eviction token).
    by_id: HashMap<u64, (Instant, CancellationToken)>,
}

/// The set of live connections that are waiting for input.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    next_id: AtomicU64,
    waiting: Arc<Mutex<Waiting>>,
}

impl Registry {
    /// Registers a new connection.
    pub(crate) fn register(&self) -> ConnHandle {
        ConnHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            evict: CancellationToken::new(),
            waiting: self.waiting.clone(),
        }
    }

    /// Closes the connection that has waited longest for input. Returns
    /// false if no connection is waiting (all are transferring).
    pub(crate) fn evict_oldest_waiting(&self) -> bool {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = w
            .by_id
            .iter()
            .min_by_key(|(_, (since, _))| *since)
            .map(|(id, _)| *id);
        match oldest.and_then(|id| w.by_id.remove(&id)) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// One connection's entry in the [`Registry`]; removed when dropped.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    id: u64,
    evict: CancellationToken,
    waiting: Arc<Mutex<Waiting>>,
}

impl ConnHandle {
    fn set_waiting(&self, waiting: bool) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting {
            w.by_id
                .insert(self.id, (Instant::now(), self.evict.clone()));
        } else {
            w.by_id.remove(&self.id);
        }
    }

    /// Runs `fut` (a read of the peer's next request) as a waiting, evictable
    /// connection, bounded by the idle timeout and interrupted by shutdown.
    ///
    /// # Errors
    ///
    /// The [`Stop`] reason if `fut` did not finish.
    pub(crate) async fn wait<F: Future>(&self, shared: &Shared, fut: F) -> Result<F::Output, Stop> {
        if self.evict.is_cancelled() {
            return Err(Stop::Evicted);
        }
        self.set_waiting(true);
        let res = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => Err(Stop::Shutdown),
            () = self.evict.cancelled() => Err(Stop::Evicted),
            r = tokio::time::timeout(shared.config.idle_timeout, fut) => r.map_err(|_| Stop::Timeout),
        };
        self.set_waiting(false);
        res
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}
