//! Async appends and subscriptions (feature `async`): futures that the log completes, with
//! no thread blocked per waiting task.
//!
//! An async append writes its frame like a blocking one (under the writer lock: an encode
//! and a copy into the segment's map), then, where the policy makes it wait for a sync,
//! registers its task's waker with group commit and returns `Pending`. One thread, the
//! syncer, leads the syncs those tasks wait for, each covering everything written before it
//! started; a sync led by a blocking appender releases them just as well. Async
//! subscribers register their wakers with the published position instead of waiting on its
//! condvar.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::Engine;
use super::append::is_conflict;
use crate::error::{Error, Result};
use crate::event::{AppendResult, EventData, ExpectedVersion};
use crate::transaction::{CommitResult, Transaction};

impl Engine {
    /// [`append`](Engine::append), completed by group commit instead of waiting for it.
    pub(crate) async fn append_async(
        self: &Arc<Self>,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<AppendResult> {
        self.validate(stream, events)?;
        let written = self.write(stream, expected, events);
        let (result, is_retry) = self.after_conflict_async(written).await?;
        self.settled(result.last_position, is_retry)?.await?;
        Ok(result)
    }

    /// [`commit_transaction`](Engine::commit_transaction), completed by group commit.
    pub(crate) async fn commit_async(
        self: &Arc<Self>,
        tx: &Transaction,
    ) -> Result<(CommitResult, Option<u64>)> {
        self.validate_transaction(tx)?;
        let written = self.write_transaction(tx);
        let (result, stamped) = self.after_conflict_async(written).await?;
        self.settled(result.last_position, stamped.is_none())?
            .await?;
        Ok((result, stamped))
    }

    /// Syncs everything written so far, as an async append under `Always` waits.
    pub(crate) async fn sync_async(self: &Arc<Self>) -> Result<()> {
        if self.options.read_only {
            return Ok(());
        }
        let target = self.writer.lock().written.position;
        self.durable_at(target)?.await
    }

    /// [`after_conflict`](Engine::after_conflict), awaited.
    async fn after_conflict_async<T>(self: &Arc<Self>, written: Result<T>) -> Result<T> {
        if is_conflict(&written)
            && let Some(target) = self.written_unacknowledged()
            && let Ok(acknowledged) = self.durable_at(target)
        {
            // The conflict is the answer; a failed sync shows in the next call.
            let _ = acknowledged.await;
        }
        written
    }

    /// What an append ending at `last_position` waits for under the policy.
    fn settled(self: &Arc<Self>, last_position: u64, is_retry: bool) -> Result<Durable> {
        // Nothing to wait for: a target of 0, ready at once.
        self.durable_at(self.settle_target(last_position, is_retry).unwrap_or(0))
    }

    /// A future ready once `target` is durable; starts the syncer if it is not running.
    fn durable_at(self: &Arc<Self>, target: u64) -> Result<Durable> {
        if self.commit.durable() < target {
            self.start_syncer()?;
        }
        Ok(Durable {
            engine: Arc::clone(self),
            target,
            slot: None,
        })
    }

    /// Spawns the syncer thread once: it leads a sync whenever an async append waits for
    /// one, until the store closes or is poisoned.
    fn start_syncer(self: &Arc<Self>) -> Result<()> {
        let mut bg = self.background.lock();
        if bg.syncer.is_some() || self.shut.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let engine = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name("annal-syncer".into())
            .spawn(move || {
                while let Some(target) = engine.commit.wait_demand() {
                    // A failed sync poisons the store and wakes every waiter with the cause.
                    let _ = engine.commit.sync_to(target, &mut || engine.sync_written());
                }
            })
            .map_err(|e| Error::io("spawn syncer thread", &self.dir, e))?;
        bg.syncer = Some(handle);
        Ok(())
    }

    /// Registers `waker`, in `slot`, to be woken when the published position passes `seen`
    /// or the store closes; false (nothing registered) when that has happened already.
    /// A subscription keeps one registration, replaced on each call and removed by
    /// [`forget_published`](Self::forget_published) when it is dropped.
    pub(crate) fn register_published(
        &self,
        seen: u64,
        waker: &Waker,
        slot: &mut Option<u64>,
    ) -> bool {
        let wm = self.watermark_guard();
        if wm.position > seen || self.is_closed() {
            return false;
        }
        let mut wakers = self.published_wakers.lock();
        let registered = slot.and_then(|id| wakers.list.iter_mut().find(|(i, _)| *i == id));
        match registered {
            Some((_, w)) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
            }
            None => {
                let id = wakers.next;
                wakers.next += 1;
                wakers.list.push((id, waker.clone()));
                *slot = Some(id);
            }
        }
        drop(wm);
        true
    }

    /// Removes the registration in `slot` (a subscription dropped while waiting).
    pub(crate) fn forget_published(&self, slot: &mut Option<u64>) {
        if let Some(id) = slot.take() {
            self.published_wakers.lock().list.retain(|(i, _)| *i != id);
        }
    }

    /// How many async subscribers wait.
    #[cfg(test)]
    pub(crate) fn published_waiters(&self) -> usize {
        self.published_wakers.lock().list.len()
    }

    /// Under the watermark's lock: takes every async subscriber's waker, for the caller to
    /// wake once it has let the lock go.
    pub(crate) fn take_published_wakers(&self) -> Vec<Waker> {
        let taken = std::mem::take(&mut self.published_wakers.lock().list);
        taken.into_iter().map(|(_, w)| w).collect()
    }
}

/// Ready once the published position passes `seen`, or the store closes.
#[cfg(feature = "nats")]
#[derive(Debug)]
pub(crate) struct PublishedAfter {
    pub(crate) engine: Arc<Engine>,
    pub(crate) seen: u64,
    pub(crate) slot: Option<u64>,
}

#[cfg(feature = "nats")]
impl Future for PublishedAfter {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this
            .engine
            .register_published(this.seen, cx.waker(), &mut this.slot)
        {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

#[cfg(feature = "nats")]
impl Drop for PublishedAfter {
    fn drop(&mut self) {
        self.engine.forget_published(&mut self.slot);
    }
}

/// Async subscribers waiting for the published position to move, each under its id.
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    next: u64,
    list: Vec<(u64, Waker)>,
}

/// Ready once the durable position reaches `target` (at once for a target of 0), or with
/// the error that poisoned the store.
#[derive(Debug)]
pub(crate) struct Durable {
    engine: Arc<Engine>,
    target: u64,
    /// This future's waiter in group commit, once registered.
    slot: Option<u64>,
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.target == 0 {
            return Poll::Ready(Ok(()));
        }
        this.engine
            .commit
            .poll_durable(this.target, &mut this.slot, cx)
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.engine.commit.forget(&mut self.slot);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use crate::engine::testing;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_dropped_append_wait_leaves_no_waiter_and_a_sync_wakes_the_others() {
        let (_disk, engine) = testing::fresh();
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        // Made by hand: no syncer, the test moves the durable position itself.
        let mut waits: Vec<_> = (1..=3)
            .map(|target| super::Durable {
                engine: Arc::clone(&engine),
                target,
                slot: None,
            })
            .collect();
        for w in &mut waits {
            assert!(std::pin::Pin::new(w).poll(&mut cx).is_pending());
        }
        assert_eq!(engine.commit.waiting(), 3);
        drop(waits.pop());
        assert_eq!(engine.commit.waiting(), 2);
        engine.commit.advance(2);
        assert_eq!(
            (engine.commit.waiting(), count.0.load(Ordering::SeqCst)),
            (0, 2)
        );
        for w in &mut waits {
            assert!(matches!(
                std::pin::Pin::new(w).poll(&mut cx),
                Poll::Ready(Ok(()))
            ));
        }
    }
}
