//! Group commit: many appenders share one `fdatasync`, and a failed one poisons the store.
//!
//! Appenders wait for the durable position to reach their own last position. Whoever finds no
//! sync in flight leads the next one: it syncs everything written so far, so every thread that
//! arrived while the previous sync ran is covered by this one. Followers just wait.

use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "async")]
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};

#[derive(Debug)]
struct State {
    /// Every event at or below this position is durable.
    durable: u64,
    syncing: bool,
    poisoned: Option<String>,
    flush_requested: bool,
    shutdown: bool,
    /// Async appends waiting for the durable position to reach their target.
    #[cfg(feature = "async")]
    waiters: Vec<Waiter>,
    #[cfg(feature = "async")]
    next_waiter: u64,
}

/// An async append's wait: woken once `target` is durable (or the store is poisoned).
#[cfg(feature = "async")]
#[derive(Debug)]
struct Waiter {
    id: u64,
    target: u64,
    waker: Waker,
}

/// Wakers of async appends to wake once the state's lock is let go (a waker may run its
/// task at once, which may take the lock).
#[cfg(feature = "async")]
type Woken = Vec<Waker>;
/// Without async appends, nothing to wake.
#[cfg(not(feature = "async"))]
struct Woken;

fn wake(woken: Woken) {
    #[cfg(feature = "async")]
    woken.into_iter().for_each(Waker::wake);
    #[cfg(not(feature = "async"))]
    let Woken = woken;
}

impl State {
    /// Takes out the async waiters the durable position now covers: all of them once
    /// poisoned, or once shut down (the close's final sync then covers what it can, and
    /// the others see that the store closed).
    fn release(&mut self) -> Woken {
        #[cfg(not(feature = "async"))]
        return Woken;
        #[cfg(feature = "async")]
        {
            let (durable, all) = (self.durable, self.poisoned.is_some() || self.shutdown);
            let mut woken = Vec::new();
            self.waiters.retain(|w| {
                let done = all || w.target <= durable;
                if done {
                    woken.push(w.waker.clone());
                }
                !done
            });
            woken
        }
    }
}

/// Durability coordination for one store.
#[derive(Debug)]
pub(crate) struct Commit {
    state: Mutex<State>,
    /// `State::durable`, readable without the lock (appends record it in every frame).
    durable: AtomicU64,
    synced: Condvar,
    flusher: Condvar,
    /// Wakes the syncer thread when an async append waits for a sync.
    #[cfg(feature = "async")]
    demand: Condvar,
}

impl Commit {
    pub(crate) fn new(durable: u64) -> Self {
        Commit {
            state: Mutex::new(State {
                durable,
                syncing: false,
                poisoned: None,
                flush_requested: false,
                shutdown: false,
                #[cfg(feature = "async")]
                waiters: Vec::new(),
                #[cfg(feature = "async")]
                next_waiter: 0,
            }),
            durable: AtomicU64::new(durable),
            synced: Condvar::new(),
            flusher: Condvar::new(),
            #[cfg(feature = "async")]
            demand: Condvar::new(),
        }
    }

    /// Fails when the store is poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        poisoned_error(&self.state.lock())
    }

    /// Marks the store poisoned; every later write or sync fails.
    pub(crate) fn poison(&self, cause: String) {
        let mut st = self.state.lock();
        st.poisoned.get_or_insert(cause);
        let woken = st.release();
        self.synced.notify_all();
        drop(st);
        wake(woken);
    }

    /// The durable position.
    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Records that everything up to `position` is durable (a segment was sealed).
    pub(crate) fn advance(&self, position: u64) {
        let mut st = self.state.lock();
        if position > st.durable {
            st.durable = position;
            self.durable.store(position, Ordering::Release);
            let woken = st.release();
            self.synced.notify_all();
            drop(st);
            wake(woken);
        }
    }

    /// Returns once every event up to `target` is durable, leading syncs as needed.
    ///
    /// `sync` makes everything written so far durable and returns the position it covered.
    pub(crate) fn sync_to(&self, target: u64, sync: &mut dyn FnMut() -> Result<u64>) -> Result<()> {
        let mut st = self.state.lock();
        loop {
            poisoned_error(&st)?;
            if st.durable >= target {
                return Ok(());
            }
            if st.syncing {
                self.synced.wait(&mut st);
                continue;
            }
            st.syncing = true;
            let outcome = MutexGuard::unlocked(&mut st, || {
                // Should `sync` panic, the guard clears `syncing` on the way out: otherwise
                // every later caller would wait forever for a sync that is not running.
                let guard = SyncPanicGuard {
                    commit: self,
                    armed: true,
                };
                let outcome = sync();
                guard.disarm();
                outcome
            });
            st.syncing = false;
            self.synced.notify_all();
            match outcome {
                Ok(covered) => {
                    st.durable = st.durable.max(covered);
                    self.durable.store(st.durable, Ordering::Release);
                    let woken = st.release();
                    MutexGuard::unlocked(&mut st, || wake(woken));
                }
                Err(e) => {
                    st.poisoned.get_or_insert_with(|| e.to_string());
                    let woken = st.release();
                    drop(st);
                    wake(woken);
                    return Err(e);
                }
            }
        }
    }

    /// Asks the background flusher to sync soon.
    pub(crate) fn request_flush(&self) {
        let mut st = self.state.lock();
        if !st.flush_requested {
            st.flush_requested = true;
            self.flusher.notify_one();
        }
    }

    /// Stops the background flusher (and the syncer).
    pub(crate) fn shutdown(&self) {
        self.state.lock().shutdown = true;
        self.flusher.notify_all();
        #[cfg(feature = "async")]
        self.demand.notify_all();
    }

    /// An async append's wait for `target` to be durable: ready once it is (or with the
    /// error that poisoned the store); otherwise registers the task's waker in `slot` and
    /// asks the syncer for a sync. Never blocks but for the state's lock.
    #[cfg(feature = "async")]
    pub(crate) fn poll_durable(
        &self,
        target: u64,
        slot: &mut Option<u64>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        let mut st = self.state.lock();
        // Durable first: an append made durable before a later failure stands.
        if st.durable >= target {
            Self::forget_in(&mut st, slot);
            return Poll::Ready(Ok(()));
        }
        if let Err(e) = poisoned_error(&st) {
            Self::forget_in(&mut st, slot);
            return Poll::Ready(Err(e));
        }
        if st.shutdown {
            // Only a close that could not sync leaves a wait here: nothing will sync now.
            Self::forget_in(&mut st, slot);
            return Poll::Ready(Err(Error::Closed));
        }
        let registered = slot.and_then(|id| st.waiters.iter_mut().find(|w| w.id == id));
        match registered {
            Some(w) => {
                if !w.waker.will_wake(cx.waker()) {
                    w.waker = cx.waker().clone();
                }
            }
            None => {
                let id = st.next_waiter;
                st.next_waiter += 1;
                st.waiters.push(Waiter {
                    id,
                    target,
                    waker: cx.waker().clone(),
                });
                *slot = Some(id);
                self.demand.notify_one();
            }
        }
        Poll::Pending
    }

    /// How many async appends wait.
    #[cfg(all(test, feature = "async"))]
    pub(crate) fn waiting(&self) -> usize {
        self.state.lock().waiters.len()
    }

    /// Drops the waiter in `slot` (a future dropped before it was ready).
    #[cfg(feature = "async")]
    pub(crate) fn forget(&self, slot: &mut Option<u64>) {
        if slot.is_some() {
            Self::forget_in(&mut self.state.lock(), slot);
        }
    }

    #[cfg(feature = "async")]
    fn forget_in(st: &mut State, slot: &mut Option<u64>) {
        if let Some(id) = slot.take() {
            st.waiters.retain(|w| w.id != id);
        }
    }

    /// The syncer's wait: the highest position an async append waits for, once one waits
    /// past the durable position; `None` once the store shuts down or is poisoned.
    #[cfg(feature = "async")]
    pub(crate) fn wait_demand(&self) -> Option<u64> {
        let mut st = self.state.lock();
        loop {
            if st.shutdown || st.poisoned.is_some() {
                return None;
            }
            let wanted = st.waiters.iter().map(|w| w.target).max();
            if let Some(target) = wanted.filter(|&t| t > st.durable) {
                return Some(target);
            }
            self.demand.wait(&mut st);
        }
    }

    /// The background flusher's loop: calls `flush` when asked to, or every `interval`, until
    /// shut down or poisoned.
    pub(crate) fn run_flusher(&self, interval: Option<Duration>, mut flush: impl FnMut()) {
        loop {
            {
                let mut st = self.state.lock();
                while !st.flush_requested && !st.shutdown {
                    match interval {
                        Some(d) => {
                            if self.flusher.wait_for(&mut st, d).timed_out() {
                                break;
                            }
                        }
                        None => self.flusher.wait(&mut st),
                    }
                }
                if st.shutdown || st.poisoned.is_some() {
                    return;
                }
                st.flush_requested = false;
            }
            flush();
        }
    }
}

/// Armed while a sync runs without the lock; dropped armed only when the sync unwinds.
struct SyncPanicGuard<'a> {
    commit: &'a Commit,
    armed: bool,
}

impl SyncPanicGuard<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for SyncPanicGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The lock is free here: it is dropped before `MutexGuard::unlocked` re-locks. What
        // the panicking sync left on disk is unknown, so the store is poisoned like after a
        // failed one.
        let mut st = self.commit.state.lock();
        st.syncing = false;
        st.poisoned
            .get_or_insert_with(|| "a sync panicked".to_string());
        let woken = st.release();
        self.commit.synced.notify_all();
        drop(st);
        wake(woken);
    }
}

fn poisoned_error(st: &State) -> Result<()> {
    match &st.poisoned {
        Some(cause) => Err(Error::Poisoned {
            cause: cause.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_waiters_share_syncs() {
        let commit = Arc::new(Commit::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (commit, written, syncs) = (commit.clone(), written.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        commit
                            .sync_to(mine, &mut || {
                                syncs.fetch_add(1, Ordering::SeqCst);
                                let covered = written.load(Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(1));
                                Ok(covered)
                            })
                            .unwrap();
                        assert!(commit.durable() >= mine);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(syncs.load(Ordering::SeqCst) < 400, "no sync was shared");
    }

    #[test]
    fn a_panicking_sync_poisons_instead_of_leaving_waiters_hanging() {
        let commit = Arc::new(Commit::new(0));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit.sync_to(1, &mut || panic!("sync blew up"))
        }));
        assert!(panicked.is_err(), "the panic reaches the caller");
        let (done, outcome) = std::sync::mpsc::channel();
        let other = {
            let commit = commit.clone();
            std::thread::spawn(move || {
                let _ = done.send(commit.sync_to(1, &mut || Ok(1)));
            })
        };
        // The bound only keeps a regression from hanging the test run.
        let result = outcome
            .recv_timeout(Duration::from_secs(10))
            .expect("sync_to returned after another sync panicked");
        other.join().unwrap();
        let err = result.unwrap_err();
        assert!(
            matches!(err, Error::Poisoned { ref cause } if cause.contains("panicked")),
            "{err}"
        );
        assert!(commit.check().is_err());
        assert_eq!(commit.durable(), 0);
    }

    #[test]
    fn failed_sync_poisons_everyone() {
        let commit = Commit::new(0);
        let err = commit
            .sync_to(1, &mut || {
                Err(Error::InvalidArgument("disk on fire".into()))
            })
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        let again = commit.sync_to(1, &mut || Ok(1)).unwrap_err();
        assert!(matches!(again, Error::Poisoned { ref cause } if cause.contains("disk on fire")));
        assert!(commit.check().is_err());
        assert_eq!(commit.durable(), 0);
    }
}
