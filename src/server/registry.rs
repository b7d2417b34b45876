//! [`Registry`]: every live connection, what it is doing and since when, so
//! the server can close the one that has waited longest when it is full.
//!
//! A connection is *idle* while it waits for its next request, and
//! *stalled* while a write of its has waited for the peer to take bytes
//! (the peer stopped reading). Both cost a slot and do nothing for anyone,
//! so both can be evicted to make room: idle ones first, longest first,
//! then writers stalled for at least [`Registry::evict_one`]'s threshold. A
//! connection that is transferring (its peer keeps taking bytes) is never
//! evicted. State changes are atomic stores, so the hot path (every write
//! of a transfer) never takes a lock; only eviction scans the table.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Stop;
use crate::connection::StallWatch;

const BUSY: u8 = 0;
const IDLE: u8 = 1;
const STALLED: u8 = 2;

/// One connection's state, shared between its task and the registry.
#[derive(Debug)]
pub(crate) struct ConnState {
    state: AtomicU8,
    /// When the current idle or stalled wait began, in ms since `epoch`.
    since_ms: AtomicU64,
    epoch: Instant,
    evict: CancellationToken,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn enter(&self, state: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.state.store(state, Ordering::Release);
    }

    fn leave(&self) {
        self.state.store(BUSY, Ordering::Release);
    }

    /// Marks the connection idle (waiting for its next request) or busy,
    /// for front-ends that wait for requests inside a library (HTTP)
    /// rather than through [`ConnHandle::wait`].
    pub(crate) fn set_idle(&self, idle: bool) {
        if idle {
            if self.state.load(Ordering::Acquire) != IDLE {
                self.enter(IDLE);
            }
        } else {
            self.leave();
        }
    }
}

impl StallWatch for ConnState {
    fn waiting(&self, yes: bool) {
        if yes {
            self.enter(STALLED);
        } else {
            self.leave();
        }
    }
}

/// The table of live connections.
#[derive(Debug)]
pub(crate) struct Registry {
    next_id: AtomicU64,
    epoch: Instant,
    conns: Arc<Mutex<HashMap<u64, Arc<ConnState>>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            conns: Arc::default(),
        }
    }
}

impl Registry {
    /// Registers a new connection (busy until it starts waiting).
    pub(crate) fn register(&self) -> ConnHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            state: AtomicU8::new(BUSY),
            since_ms: AtomicU64::new(0),
            epoch: self.epoch,
            evict: CancellationToken::new(),
        });
        self.lock().insert(id, state.clone());
        ConnHandle {
            id,
            state,
            conns: self.conns.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection that has waited longest for its next request,
    /// or else the one whose writes have waited longest for a peer that
    /// stopped reading, if that wait is at least `stalled_for`. Returns
    /// false if no connection qualifies (all are transferring).
    pub(crate) fn evict_one(&self, stalled_for: Duration) -> bool {
        let mut conns = self.lock();
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let threshold = u64::try_from(stalled_for.as_millis()).unwrap_or(u64::MAX);
        let oldest = |want: u8, min_age: u64| {
            conns
                .iter()
                .filter(|(_, c)| c.state.load(Ordering::Acquire) == want)
                .map(|(id, c)| (*id, c.since_ms.load(Ordering::Relaxed)))
                .filter(|(_, since)| now.saturating_sub(*since) >= min_age)
                .min_by_key(|(_, since)| *since)
                .map(|(id, _)| id)
        };
        let victim = oldest(IDLE, 0).or_else(|| oldest(STALLED, threshold));
        match victim.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                c.evict.cancel();
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
    state: Arc<ConnState>,
    conns: Arc<Mutex<HashMap<u64, Arc<ConnState>>>>,
}

impl ConnHandle {
    /// The token cancelled when this connection is evicted.
    pub(crate) fn evict_token(&self) -> CancellationToken {
        self.state.evict.clone()
    }

    /// What its writes report their waits to.
    pub(crate) fn stall_watch(&self) -> Arc<dyn StallWatch> {
        self.state.clone()
    }

    /// Its state, for front-ends that track idleness themselves.
    pub(crate) fn state(&self) -> Arc<ConnState> {
        self.state.clone()
    }

    /// Runs `fut` (a read of the peer's next request) as an idle, evictable
    /// wait, bounded by `timeout` and interrupted by `shutdown`.
    ///
    /// # Errors
    ///
    /// The [`Stop`] reason if `fut` did not finish.
    pub(crate) async fn wait<F: Future>(
        &self,
        timeout: Duration,
        shutdown: &CancellationToken,
        fut: F,
    ) -> Result<F::Output, Stop> {
        if self.state.evict.is_cancelled() {
            return Err(Stop::Evicted);
        }
        self.state.enter(IDLE);
        let res = tokio::select! {
            biased;
            () = shutdown.cancelled() => Err(Stop::Shutdown),
            () = self.state.evict.cancelled() => Err(Stop::Evicted),
            r = tokio::time::timeout(timeout, fut) => r.map_err(|_| Stop::Timeout),
        };
        self.state.leave();
        res
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_before_stalled_and_busy_never() {
        let reg = Registry::default();
        let busy = reg.register();
        assert!(
            !reg.evict_one(Duration::ZERO),
            "a busy connection was evicted"
        );
        let stalled = reg.register();
        stalled.state.waiting(true);
        let idle = reg.register();
        idle.state.enter(IDLE);
        // Idle goes first, however long the writer has been stalled.
        assert!(reg.evict_one(Duration::ZERO));
        assert!(idle.state.evict.is_cancelled());
        assert!(!stalled.state.evict.is_cancelled());
        // A stalled writer only once its stall is old enough.
        assert!(!reg.evict_one(Duration::from_secs(3600)));
        assert!(reg.evict_one(Duration::ZERO));
        assert!(stalled.state.evict.is_cancelled());
        assert!(!busy.state.evict.is_cancelled());
        assert!(!reg.evict_one(Duration::ZERO));
    }
}
