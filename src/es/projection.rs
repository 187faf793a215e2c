//! Projections: read models folded from the whole log, checkpointed so they resume.
//!
//! A projection's state and position are saved in `NAME.proj` (checksummed; written under a
//! temporary name, synced, renamed, directory synced) every
//! [`Options::projection_checkpoint_every`](crate::Options::projection_checkpoint_every)
//! events and when it is dropped. On restart it resumes from there instead of replaying the
//! whole log; a checkpoint of another [`Projection::VERSION`], a damaged one, or one past the
//! end of the log (its events lost in a power failure) is discarded and the projection is
//! rebuilt from position 1.
#![deny(clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::Engine;
use crate::engine::format::projection_file::{SUFFIX, decode, encode};
use crate::error::{Error, Result};
use crate::es::codec::{Bincode, Codec};
use crate::es::durable::validate_name;
use crate::es::subscription::Subscription;
use crate::event::RecordedEvent;
use crate::query::Query;
use crate::storage::Storage;

/// A read model: the fold of the events of the whole log, in position order.
///
/// ```
/// use annal::{Projection, RecordedEvent};
/// use serde::{Deserialize, Serialize};
///
/// /// A dashboard: orders placed but not shipped yet.
/// #[derive(Default, Serialize, Deserialize)]
/// struct AwaitingShipping { count: i64 }
///
/// impl Projection for AwaitingShipping {
///     const NAME: &'static str = "awaiting-shipping";
///     fn apply(&mut self, e: &RecordedEvent) {
///         match e.event_type.as_str() {
///             "OrderPlaced" => self.count += 1,
///             "OrderShipped" => self.count -= 1,
///             _ => {}
///         }
///     }
/// }
/// ```
pub trait Projection: Default + Serialize + DeserializeOwned + Send + 'static {
    /// The name its checkpoint is stored under (1 to 128 of `A-Z a-z 0-9 - _ .`).
    const NAME: &'static str;
    /// Bump it when `apply` or the state changes: the projection is then rebuilt from
    /// position 1.
    const VERSION: u32 = 1;
    /// Folds one event into the read model.
    fn apply(&mut self, event: &RecordedEvent);
    /// The events it folds (default: all). A narrower query is served by the query index:
    /// the events it does not select are never read, let alone decoded.
    fn query() -> Query {
        Query::all()
    }
}

fn path_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{SUFFIX}"))
}

fn read_file(storage: &dyn Storage, path: &Path) -> Option<Vec<u8>> {
    let f = storage.open(path, false).ok()?;
    let mut buf = vec![0u8; usize::try_from(f.len().ok()?).ok()?];
    f.read_exact_at(&mut buf, 0).ok()?;
    Some(buf)
}

/// Removes projection checkpoints that are past `last_position`: past the end of the
/// recovered log (the events they folded were lost, and new events will take those
/// positions), or past an event a scavenge erased (they hold what was folded from it).
/// Returns how many it removed.
pub(crate) fn discard_beyond(storage: &dyn Storage, dir: &Path, last_position: u64) -> Result<u64> {
    let mut removed = 0;
    for name in storage.list(dir).map_err(|e| Error::io("list", dir, e))? {
        if !name.ends_with(SUFFIX) {
            continue;
        }
        let path = dir.join(&name);
        let beyond = read_file(storage, &path)
            .and_then(|b| decode(&b).map(|(_, position, _)| position > last_position))
            .unwrap_or(false);
        if beyond {
            storage
                .remove(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    Ok(removed)
}

/// A projection being kept up to date; from [`Store::projection`](crate::Store::projection).
///
/// Apply new events with [`catch_up`](Self::catch_up) (everything acknowledged so far) or
/// [`follow`](Self::follow) (waiting for live events), read the model with
/// [`state`](Self::state). It checkpoints on its own and when dropped.
#[derive(Debug)]
pub struct RunningProjection<P: Projection> {
    inner: Arc<Engine>,
    sub: Subscription,
    state: P,
    position: u64,
    /// Where the last checkpoint was taken.
    checkpointed: u64,
    /// Whether it resumed from a checkpoint.
    resumed: bool,
}

impl<P: Projection> RunningProjection<P> {
    pub(crate) fn open(inner: &Arc<Engine>) -> Result<Self> {
        validate_name("projection", P::NAME)?;
        let path = path_of(&inner.dir, P::NAME);
        let last = inner.watermark().position;
        let saved = read_file(inner.storage(), &path).and_then(|buf| {
            let (version, position, state) = decode(&buf)?;
            if version != P::VERSION || position > last {
                return None;
            }
            Some((position, Bincode::decode::<P>(state).ok()?))
        });
        let resumed = saved.is_some();
        let (position, state) = saved.unwrap_or_default();
        let mut sub = Subscription::query(Arc::clone(inner), P::query(), position + 1);
        sub.guard_retention(format!("projection {:?}", P::NAME));
        Ok(RunningProjection {
            inner: Arc::clone(inner),
            sub,
            state,
            position,
            checkpointed: position,
            resumed,
        })
    }

    /// The read model.
    pub fn state(&self) -> &P {
        &self.state
    }

    /// Position of the last event applied (0: none).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whether this run started from a saved checkpoint (rather than from position 1).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Applies every event acknowledged so far; returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] or [`Error::Io`] from reading the log, and the errors of
    /// [`checkpoint`](Self::checkpoint) when one is due.
    pub fn catch_up(&mut self) -> Result<u64> {
        let mut n = 0;
        while let Some(e) = self.sub.try_next()? {
            self.apply(&e)?;
            n += 1;
        }
        Ok(n)
    }

    /// Applies events as they arrive for up to `duration`; returns how many. Ends early with
    /// [`Error::Closed`] when the store closes. A `duration` too long to add to now
    /// ([`Duration::MAX`]) waits with no time limit. Call it in a loop on a thread of its own to
    /// follow the log.
    ///
    /// # Errors
    ///
    /// As [`catch_up`](Self::catch_up), and [`Error::Closed`] when the store closes.
    pub fn follow(&mut self, duration: Duration) -> Result<u64> {
        // No representable deadline (`Duration::MAX`, say): wait without one.
        let deadline = Instant::now().checked_add(duration);
        let mut n = 0;
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            match self.sub.next_timeout(left)? {
                Some(e) => {
                    self.apply(&e)?;
                    n += 1;
                }
                None => return Ok(n),
            }
        }
    }

    fn apply(&mut self, e: &RecordedEvent) -> Result<()> {
        self.state.apply(e);
        self.position = e.position;
        let every = self.inner.options.projection_checkpoint_every;
        if every > 0 && self.position - self.checkpointed >= every {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Saves the state and position now.
    ///
    /// A projection over a store opened read-only is never saved: this does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when the state cannot be encoded; [`Error::Io`] when the checkpoint
    /// file cannot be written durably; [`Error::Closed`] once the store is closed (what
    /// was not saved is replayed at the next open).
    pub fn checkpoint(&mut self) -> Result<()> {
        if self.inner.options.read_only || (self.position == self.checkpointed && self.resumed) {
            return Ok(());
        }
        let state = Bincode::encode(&self.state).map_err(|reason| Error::Codec {
            stream: format!("$projection-{}", P::NAME),
            version: None,
            reason,
        })?;
        self.inner.while_open(|| {
            crate::storage::replace_file(
                self.inner.storage(),
                &self.inner.dir,
                &format!("{}{SUFFIX}", P::NAME),
                &encode(P::VERSION, self.position, &state),
            )
        })?;
        self.checkpointed = self.position;
        self.resumed = true;
        Ok(())
    }
}

impl<P: Projection> Drop for RunningProjection<P> {
    fn drop(&mut self) {
        // Best effort: a lost checkpoint only means replaying from the previous one.
        let _ = self.checkpoint();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{self, DIR};
    use serde::Deserialize;

    #[derive(Default, Serialize, Deserialize)]
    struct Count {
        n: u64,
    }

    impl Projection for Count {
        const NAME: &'static str = "count";
        fn apply(&mut self, _: &RecordedEvent) {
            self.n += 1;
        }
    }

    #[test]
    fn resumes_from_its_checkpoint_without_replaying() {
        let (disk, engine) = testing::fresh();
        testing::append(&engine, "a", 4);
        let mut p = RunningProjection::<Count>::open(&engine).unwrap();
        assert!(!p.resumed());
        p.catch_up().unwrap();
        assert_eq!((p.state().n, p.position()), (4, 4));
        drop(p); // checkpoints
        testing::append(&engine, "a", 1);
        engine.close().unwrap();
        drop(engine);
        let engine = testing::open(&disk, testing::options());
        let mut p = RunningProjection::<Count>::open(&engine).unwrap();
        assert!(p.resumed());
        assert_eq!(p.position(), 4);
        p.catch_up().unwrap();
        assert_eq!(p.state().n, 5);
    }

    #[test]
    fn a_checkpoint_past_the_end_of_the_log_is_discarded() {
        let (disk, engine) = testing::fresh();
        testing::append(&engine, "a", 2);
        let dir = Path::new(DIR);
        let state = Bincode::encode(&Count { n: 50 }).unwrap();
        crate::storage::replace_file(&disk, dir, "count.proj", &encode(1, 50, &state)).unwrap();
        discard_beyond(&disk, dir, 2).unwrap();
        assert!(disk.contents(&dir.join("count.proj")).is_none());
        let mut p = RunningProjection::<Count>::open(&engine).unwrap();
        assert!(!p.resumed());
        p.catch_up().unwrap();
        assert_eq!(p.state().n, 2);
    }
}
