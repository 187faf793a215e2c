//! [`Store`]: open, append with expected versions, read, sync, close.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use std::sync::mpsc::Sender;

use crate::engine::checkpoint;
use crate::engine::commit::Commit;
use crate::engine::format::frame::{self, FrameStart};
use crate::engine::index::{StreamIndex, pack};
use crate::engine::log::{Active, Log};
use crate::engine::read::{AllEvents, ReadOptions, StreamEvents, read_event};
use crate::engine::recovery::{self, RecoverOptions, RecoveryReport};
use crate::engine::segment::Segment;
use crate::engine::state::{self, State};
use crate::error::{Error, Result};
use crate::es::aggregate::{Aggregate, Repository, StateCache};
use crate::es::codec::Codec;
use crate::es::durable::{self, DurableInfo, DurableSubscription, Registry};
use crate::es::projection::{self, Projection, RunningProjection};
use crate::es::snapshot::SnapshotStore;
use crate::es::subscription::Subscription;
use crate::event::{AppendResult, EventData, ExpectedVersion};
use crate::options::{FsyncPolicy, Options};
use crate::storage::{FsStorage, Storage};

/// Longest accepted stream name, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 1024;
/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 1024;
/// Name of the lock file in a store directory.
const LOCK_FILE: &str = "LOCK";

/// An embedded event store over one directory.
///
/// `Store` is `Send + Sync`: share it between threads with `Arc`. Appends are serialized (and
/// under [`FsyncPolicy::Always`] share fdatasyncs); reads run concurrently with them and with
/// each other. Readers see an event only once its append has been acknowledged, so a reader
/// never sees an event that a crash could take back under the store's policy.
#[derive(Debug)]
pub struct Store {
    inner: Arc<Inner>,
    flusher: Option<JoinHandle<()>>,
    indexer: Option<JoinHandle<()>>,
    closed: bool,
}

/// How far readers may read: the last acknowledged position, and the log location just past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watermark {
    pub position: u64,
    pub location: u64,
}

#[derive(Debug)]
struct Writer {
    active: Active,
    next_position: u64,
    /// Everything written to the OS so far.
    written: Watermark,
    buf: Vec<u8>,
    offsets: Vec<u32>,
    /// Sealed segments go here to get their index checkpoint written in the background.
    to_index: Option<Sender<Arc<Segment>>>,
}

/// The store's shared state; iterators hold it too.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) log: Log,
    storage: Arc<dyn Storage>,
    pub(crate) index: RwLock<StreamIndex>,
    writer: Mutex<Writer>,
    commit: Commit,
    watermark: Mutex<Watermark>,
    /// Appends written to the OS so far (counted without the writer's lock, for group commit).
    written_appends: AtomicU64,
    gather_stats: GatherStats,
    /// Signalled whenever the watermark moves or the store closes.
    published: Condvar,
    closed: AtomicBool,
    recovery: RecoveryReport,
    pub(crate) snapshots: SnapshotStore,
    pub(crate) durables: Mutex<Registry>,
    pub(crate) aggregate_cache: StateCache,
    _lock: Box<dyn Any + Send + Sync>,
}

/// A stream and its last version, from [`Store::streams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// Its last version (the number of events in it).
    pub version: u64,
}

/// Counters from [`Store::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Events in the store (acknowledged and readable).
    pub events: u64,
    /// Streams with at least one event.
    pub streams: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of log data in the segments (headers and frames, not preallocated space).
    pub bytes: u64,
    /// Position of the last event, 0 when empty.
    pub last_position: u64,
    /// Position up to which every event is known to be durable (synced).
    pub durable_position: u64,
    /// Approximate heap bytes held by the stream index and the sparse position index.
    pub index_memory_bytes: u64,
    /// Snapshots retained.
    pub snapshots: u64,
    /// Durable subscriptions, with their acknowledged positions and lag.
    pub durable_subscriptions: Vec<DurableInfo>,
    /// Bytes of snapshot files.
    pub snapshot_bytes: u64,
    /// `fdatasync` calls on segment files since the store opened. Under
    /// [`FsyncPolicy::Always`], appends divided by this is how many appends group commit
    /// shared each sync among.
    pub segment_syncs: u64,
}

impl Store {
    /// Opens (or creates) the store in `dir` on the real file system.
    ///
    /// Recovery runs first: see [`RecoveryReport`] and the README. Fails with
    /// [`Error::Locked`] when another process or `Store` has the directory open, and with
    /// [`Error::Corruption`] when the log is damaged anywhere but in a torn tail.
    ///
    /// # Errors
    ///
    /// As [`open_with_storage`](Self::open_with_storage).
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let storage = FsStorage::with_group_access(options.share_with_group);
        Self::open_with_storage(Arc::new(storage), dir, options)
    }

    /// Opens the store in `dir` on the given storage (a simulated disk, in tests).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for invalid options; [`Error::Locked`] when another process
    /// or `Store` has the directory open; [`Error::Corruption`] when the log is damaged
    /// anywhere but in a torn tail, or synced data is missing (no file is changed then);
    /// [`Error::Io`] when a file cannot be read or written (a full disk included).
    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<Store> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let read_only = options.read_only;
        let existed = storage.list(&dir).is_ok();
        if read_only && !existed {
            return Err(Error::io(
                "open read-only",
                &dir,
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        if !existed {
            storage
                .create_dir_all(&dir)
                .map_err(|e| Error::io("create directory", &dir, e))?;
            // A new directory's own entry must be durable in its parent.
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            storage
                .sync_dir(&parent)
                .map_err(|e| Error::io("fsync directory", &parent, e))?;
        }
        let lock_path = dir.join(LOCK_FILE);
        // Read-only opens take no lock: they read beside the writer and change nothing.
        let lock: Box<dyn Any + Send + Sync> = if read_only {
            Box::new(())
        } else {
            storage.lock(&lock_path).map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock => Error::Locked { path: dir.clone() },
                _ => Error::io("lock", &lock_path, e),
            })?
        };
        let mut index = StreamIndex::default();
        // Read before the directory is listed: see `RecoverOptions::state`.
        let state = state::read(storage.as_ref(), &dir)?;
        let rec = recovery::recover(
            storage.as_ref(),
            &dir,
            &RecoverOptions {
                segment_size: options.segment_size,
                use_checkpoints: options.index_checkpoints,
                state,
                read_only,
            },
            &mut index,
        )?;
        let last = rec.next_position - 1;
        let open_state = State {
            clean: false,
            durable_floor: last,
            last_ordinal: rec.active.seg.ordinal,
            last_len: rec.active.seg.capacity,
        };
        let written = Watermark {
            position: last,
            location: pack(rec.active.seg.ordinal, rec.active.offset),
        };
        let policy = options.fsync;
        let checkpoints = options.index_checkpoints && !read_only;
        let (to_index, indexed) = std::sync::mpsc::channel::<Arc<Segment>>();
        if checkpoints {
            for ord in &rec.unindexed {
                if let Some(seg) = rec.segments.get(*ord as usize - 1) {
                    let _ = to_index.send(Arc::clone(seg));
                }
            }
        }
        let snapshots = SnapshotStore::open(
            Arc::clone(&storage),
            &dir,
            options.snapshots_kept.max(1),
            !read_only,
        )?;
        let aggregate_cache = StateCache::new(options.aggregate_cache);
        let durables = Registry::open(storage.as_ref(), &dir, last, !read_only)?;
        if !read_only {
            projection::discard_beyond(storage.as_ref(), &dir, last)?;
        }
        let mut report = rec.report;
        report.readable_by_others =
            readable_by_others(storage.as_ref(), &dir, options.share_with_group)?;
        let log = Log::new(
            Arc::clone(&storage),
            &dir,
            options.segment_size,
            rec.segments,
        );
        // From here on the store is open: a crash before the next clean close is unclean.
        if !read_only {
            log.record(|s| *s = open_state)?;
        }
        let inner = Arc::new(Inner {
            snapshots,
            durables: Mutex::new(durables),
            aggregate_cache,
            log,
            storage,
            dir,
            options,
            index: RwLock::new(index),
            writer: Mutex::new(Writer {
                active: rec.active,
                next_position: rec.next_position,
                written,
                buf: Vec::new(),
                offsets: Vec::new(),
                to_index: checkpoints.then_some(to_index),
            }),
            // Recovery synced the active segment; sealed ones were synced when sealed.
            commit: Commit::new(last),
            watermark: Mutex::new(written),
            written_appends: AtomicU64::new(0),
            gather_stats: GatherStats::default(),
            published: Condvar::new(),
            closed: AtomicBool::new(false),
            recovery: report,
            _lock: lock,
        });
        let flusher = match policy {
            _ if read_only => None,
            FsyncPolicy::Interval(_) | FsyncPolicy::EveryEvents(_) => {
                let interval = match policy {
                    FsyncPolicy::Interval(d) => Some(d),
                    _ => None,
                };
                let bg = Arc::clone(&inner);
                let handle = std::thread::Builder::new()
                    .name("annal-flusher".into())
                    .spawn(move || {
                        // A failed sync poisons the store; appenders see it.
                        bg.commit.run_flusher(interval, || {
                            let _ = bg.sync();
                        });
                    })
                    .map_err(|e| Error::io("spawn flusher thread", &inner.dir, e))?;
                Some(handle)
            }
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        let indexer = if checkpoints {
            let bg = Arc::clone(&inner);
            let handle = std::thread::Builder::new()
                .name("annal-indexer".into())
                .spawn(move || {
                    // A checkpoint that fails to be written is only a slower next open.
                    for seg in indexed {
                        let _ = checkpoint::build_and_write(bg.storage.as_ref(), &bg.dir, &seg);
                    }
                })
                .map_err(|e| Error::io("spawn indexer thread", &inner.dir, e))?;
            Some(handle)
        } else {
            None
        };
        Ok(Store {
            inner,
            flusher,
            indexer,
            closed: false,
        })
    }

    /// Appends `events` to `stream` as one atomic frame, if the stream's version matches
    /// `expected`.
    ///
    /// Returns once the events are acknowledged under the store's [`FsyncPolicy`]. On a version
    /// mismatch returns [`Error::WrongExpectedVersion`] and writes nothing.
    ///
    /// **Idempotent retries.** When every event carries an id, a retry of an append that
    /// already succeeded returns the original [`AppendResult`] and writes nothing. A retry is
    /// recognised when:
    /// - with [`ExpectedVersion::Exact`]`(v)` or [`ExpectedVersion::NoStream`] (`v` = 0): the
    ///   stream's events `v+1 ..= v+n` carry exactly these ids, in order;
    /// - with [`ExpectedVersion::Any`] or [`ExpectedVersion::StreamExists`]: the stream's last
    ///   `n` events carry exactly these ids, in order (a retry after other appends to the same
    ///   stream is not recognised and appends again).
    ///
    /// Only ids are compared, not types or payloads. Events without ids are never deduplicated.
    ///
    /// # Errors
    ///
    /// [`Error::WrongExpectedVersion`] when the stream's version does not match;
    /// [`Error::InvalidArgument`] for an invalid stream name, type or size; [`Error::ReadOnly`]
    /// on a read-only store; [`Error::Io`] when the write or sync fails (the store is then
    /// poisoned) and [`Error::Poisoned`] after that.
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<AppendResult> {
        self.inner.append(stream, expected, events)
    }

    /// Reads `stream` (versions) per `opts`. An unknown stream reads as empty.
    ///
    /// # Errors
    ///
    /// None today (an unknown stream reads as empty); the iterator yields [`Error::Corruption`]
    /// or [`Error::Io`] for a record that cannot be read.
    pub fn read_stream(&self, stream: &str, opts: ReadOptions) -> Result<StreamEvents> {
        Ok(StreamEvents::new(Arc::clone(&self.inner), stream, opts))
    }

    /// Reads the whole log ("$all", positions) per `opts`.
    ///
    /// # Errors
    ///
    /// None today; the iterator yields [`Error::Corruption`] or [`Error::Io`] where the log
    /// cannot be read.
    pub fn read_all(&self, opts: ReadOptions) -> Result<AllEvents> {
        Ok(AllEvents::new(&self.inner, opts))
    }

    /// The stream's last version, `None` when it has no events.
    ///
    /// # Errors
    ///
    /// None today: the version comes from the in-memory index.
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        let wm = self.inner.watermark();
        Ok(self.inner.index.read().visible_version(stream, wm.location))
    }

    /// Whether an earlier write or sync failed, so that the store refuses appends until it is
    /// reopened (see [`Error::Poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.inner.commit.check().is_err()
    }

    /// Position of the last acknowledged event, 0 for an empty store.
    pub fn last_position(&self) -> u64 {
        self.inner.watermark().position
    }

    /// Every stream with its last version, sorted by name.
    ///
    /// # Errors
    ///
    /// None today: the list comes from the in-memory index.
    pub fn streams(&self) -> Result<Vec<StreamInfo>> {
        let wm = self.inner.watermark();
        let mut v: Vec<StreamInfo> = self
            .inner
            .index
            .read()
            .streams(wm.location)
            .into_iter()
            .map(|(name, version)| StreamInfo {
                name: name.to_string(),
                version,
            })
            .collect();
        v.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Counters: events, streams, segments, bytes, positions, index memory.
    ///
    /// # Errors
    ///
    /// None today: every counter is in memory.
    pub fn stats(&self) -> Result<Stats> {
        let wm = self.inner.watermark();
        let segments = self.inner.log.segments();
        let (streams, index_bytes) = {
            let ix = self.inner.index.read();
            (ix.stream_count() as u64, ix.memory_bytes())
        };
        let sample_bytes: usize = segments.iter().map(|s| s.sample_bytes()).sum();
        let (snapshots, snapshot_bytes) = self.inner.snapshots.stats();
        Ok(Stats {
            events: wm.position,
            streams,
            segments: segments.len() as u64,
            bytes: segments.iter().map(|s| s.end()).sum(),
            last_position: wm.position,
            durable_position: self.inner.commit.durable().min(wm.position),
            index_memory_bytes: (index_bytes + sample_bytes) as u64,
            snapshots,
            snapshot_bytes,
            durable_subscriptions: self.inner.durables.lock().list(wm.position),
            segment_syncs: self.inner.log.syncs(),
        })
    }

    /// Makes every acknowledged event durable (fdatasync), whatever the policy.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the `fdatasync` fails (the store is then poisoned),
    /// [`Error::Poisoned`] after an earlier failure.
    pub fn sync(&self) -> Result<()> {
        if self.inner.options.read_only {
            return Ok(());
        }
        self.inner.sync()
    }

    /// A repository for aggregate type `A`, its events and snapshots encoded with bincode.
    pub fn aggregate<A: Aggregate>(&self) -> Repository<'_, A> {
        Repository::new(self)
    }

    /// A repository for aggregate type `A` whose events and snapshots use codec `C`.
    pub fn aggregate_with_codec<A: Aggregate, C: Codec>(&self) -> Repository<'_, A, C> {
        Repository::new(self)
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Subscribes to the whole log from `from_position` (1: from the beginning): the history,
    /// then live events as they are acknowledged, in position order.
    ///
    /// # Errors
    ///
    /// None today; the subscription yields [`Error::Closed`] once the store closes.
    pub fn subscribe_all(&self, from_position: u64) -> Result<Subscription> {
        Ok(Subscription::all(Arc::clone(&self.inner), from_position))
    }

    /// Subscribes to one stream from `from_version` (1: from its first event).
    ///
    /// # Errors
    ///
    /// None today; the subscription yields [`Error::Closed`] once the store closes.
    pub fn subscribe_stream(&self, stream: &str, from_version: u64) -> Result<Subscription> {
        Ok(Subscription::stream(
            Arc::clone(&self.inner),
            stream,
            from_version,
        ))
    }

    /// Opens the durable subscription `name`, creating it at position 0 if it is new: a
    /// subscription to the whole log that resumes after its last
    /// [`ack`](DurableSubscription::ack)ed position, delivering at least once, in order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an invalid name or one already open; [`Error::ReadOnly`]
    /// on a read-only store; [`Error::Io`] when its ack file cannot be created or read.
    pub fn durable_subscription(&self, name: &str) -> Result<DurableSubscription> {
        durable::open(&self.inner, name)
    }

    /// Every durable subscription with its acknowledged position and lag, by name.
    ///
    /// # Errors
    ///
    /// None today: the registry is in memory.
    pub fn durable_subscriptions(&self) -> Result<Vec<DurableInfo>> {
        Ok(self.inner.durables.lock().list(self.last_position()))
    }

    /// Deletes a durable subscription (which must not be open); false if it did not exist.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an invalid name or one that is open; [`Error::ReadOnly`]
    /// on a read-only store; [`Error::Io`] when its file cannot be removed.
    pub fn delete_durable_subscription(&self, name: &str) -> Result<bool> {
        durable::delete(&self.inner, name)
    }

    /// Opens projection `P`, resuming from its checkpoint (or from position 1 when it has
    /// none, or its [`Projection::VERSION`] changed).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an invalid [`Projection::NAME`]; [`Error::Io`] when its
    /// checkpoint cannot be read.
    pub fn projection<P: Projection>(&self) -> Result<RunningProjection<P>> {
        RunningProjection::open(&self.inner)
    }

    /// What recovery did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Syncs and closes the store, reporting a failed final sync. Dropping the store does the
    /// same but cannot report. The directory lock is released once every iterator over the
    /// store has been dropped too.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the final sync or the `STATE` record fails, [`Error::Poisoned`] when
    /// the store was poisoned.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.inner.commit.shutdown();
        if self.inner.options.read_only {
            self.inner.close_subscriptions();
            return Ok(());
        }
        let synced = self.inner.sync();
        self.inner.close_subscriptions();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
        // Closing the channel lets the indexer finish what it has queued and stop.
        self.inner.writer.lock().to_index = None;
        if let Some(h) = self.indexer.take() {
            let _ = h.join();
        }
        synced?;
        self.inner.commit.check()?;
        let (last_ordinal, last_len) = {
            let w = self.inner.writer.lock();
            (w.active.seg.ordinal, w.active.seg.capacity)
        };
        let durable = self.inner.commit.durable();
        self.inner.log.record(|s| {
            *s = State {
                clean: true,
                durable_floor: durable,
                last_ordinal,
                last_len,
            }
        })
    }
}

/// The store directory and the entries in it whose mode lets others read them: anyone but
/// the owner, or anyone outside the owner's group when `group` may read.
fn readable_by_others(storage: &dyn Storage, dir: &Path, group: bool) -> Result<Vec<PathBuf>> {
    let too_open = if group { 0o004 } else { 0o044 };
    let mut names = storage.list(dir).map_err(|e| Error::io("list", dir, e))?;
    names.sort_unstable();
    let mut found = Vec::new();
    for path in std::iter::once(dir.to_path_buf()).chain(names.iter().map(|n| dir.join(n))) {
        match storage.permissions(&path) {
            Ok(Some(mode)) if mode & too_open != 0 => found.push(path),
            Ok(_) => {}
            // Removed since the listing (a writer beside a read-only open): nothing to report.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("stat", &path, e)),
        }
    }
    Ok(found)
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl Inner {
    pub(crate) fn watermark(&self) -> Watermark {
        *self.watermark.lock()
    }

    /// Makes `wm` visible to readers (never moving backwards).
    fn publish(&self, wm: Watermark) {
        let mut cur = self.watermark.lock();
        // Invariant: a position is published with the location just past it, in the log's
        // order; positions and locations move together.
        debug_assert!(
            wm.position <= cur.position || wm.location > cur.location,
            "published position moved ahead of its location"
        );
        if wm.position > cur.position {
            *cur = wm;
            self.published.notify_all();
        }
    }

    /// Fails with [`Error::ReadOnly`] for a store opened read-only.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.options.read_only {
            return Err(Error::ReadOnly {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    pub(crate) fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    pub(crate) fn watermark_guard(&self) -> MutexGuard<'_, Watermark> {
        self.watermark.lock()
    }

    /// Waits for the watermark to move (or the store to close) until `deadline`; true when
    /// the wait timed out.
    pub(crate) fn wait_published(
        &self,
        wm: &mut MutexGuard<'_, Watermark>,
        deadline: Instant,
    ) -> bool {
        self.published.wait_until(wm, deadline).timed_out()
    }

    /// Waits for the watermark to move or the store to close.
    pub(crate) fn wait_published_forever(&self, wm: &mut MutexGuard<'_, Watermark>) {
        self.published.wait(wm);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the store closed and wakes every subscriber.
    fn close_subscriptions(&self) {
        let _wm = self.watermark.lock();
        self.closed.store(true, Ordering::Release);
        self.published.notify_all();
    }

    /// Syncs everything written so far (group commit).
    fn sync(&self) -> Result<()> {
        let target = self.writer.lock().written.position;
        self.commit.sync_to(target, &mut || self.sync_written())
    }

    /// One fdatasync of the active segment, covering everything written before it started;
    /// publishes what it covered.
    fn sync_written(&self) -> Result<u64> {
        if self.options.fsync == FsyncPolicy::Always {
            self.gather();
        }
        let (seg, file, wm, appends) = {
            let w = self.writer.lock();
            (
                Arc::clone(&w.active.seg),
                Arc::clone(&w.active.file),
                w.written,
                self.written_appends.load(Ordering::Acquire),
            )
        };
        let started = Instant::now();
        self.log.sync(&file, &seg)?;
        self.gather_stats.last_sync_nanos.store(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let before = self
            .gather_stats
            .synced_appends
            .fetch_max(appends, Ordering::AcqRel);
        self.gather_stats
            .last_batch
            .store(appends.saturating_sub(before), Ordering::Relaxed);
        let every = self.options.record_durable_every;
        if every > 0 && wm.position >= self.log.recorded_floor().saturating_add(every) {
            // What was just synced goes on record, so that losing it later is detected; before
            // it is published, so a failure here fails the appends it covers.
            self.log.record(|s| {
                s.durable_floor = wm.position;
                if seg.ordinal >= s.last_ordinal {
                    s.last_ordinal = seg.ordinal;
                    s.last_len = seg.capacity;
                }
            })?;
        }
        self.publish(wm);
        Ok(wm.position)
    }

    /// Before leading a sync, waits briefly for as many appends as the previous sync covered.
    ///
    /// Threads released by one sync come back one after another; without this, the first to
    /// write would lead the next sync alone and the rest would wait a whole fdatasync more.
    /// The wait is bounded by half the last sync's duration (and 200 µs), and skipped when
    /// the last sync covered a single append, so a lone appender never waits.
    fn gather(&self) {
        let expect = self.gather_stats.last_batch.load(Ordering::Relaxed);
        if expect < 2 {
            return;
        }
        let synced = self.gather_stats.synced_appends.load(Ordering::Acquire);
        let limit =
            Duration::from_nanos(self.gather_stats.last_sync_nanos.load(Ordering::Relaxed) / 2)
                .min(MAX_GATHER);
        let start = Instant::now();
        while self
            .written_appends
            .load(Ordering::Acquire)
            .saturating_sub(synced)
            < expect
            && start.elapsed() < limit
        {
            std::thread::yield_now();
        }
    }

    /// Waits until `position` is acknowledged under the policy (durable for `Always`).
    fn wait_acknowledged(&self, position: u64) -> Result<()> {
        match self.options.fsync {
            FsyncPolicy::Always => self.commit.sync_to(position, &mut || self.sync_written()),
            _ => Ok(()),
        }
    }

    fn validate(&self, stream: &str, events: &[EventData]) -> Result<()> {
        let invalid = |why: String| Err(Error::InvalidArgument(why));
        if stream.is_empty() {
            return invalid("stream name is empty".into());
        }
        if stream.len() > MAX_STREAM_NAME_LEN {
            return invalid(format!(
                "stream name is {} bytes, more than {MAX_STREAM_NAME_LEN}",
                stream.len()
            ));
        }
        if stream.starts_with('$') {
            return invalid(format!(
                "stream {stream:?}: names starting with '$' are reserved"
            ));
        }
        if events.is_empty() {
            return invalid(format!("no events to append to stream {stream:?}"));
        }
        for (i, e) in events.iter().enumerate() {
            if e.event_type.is_empty() || e.event_type.len() > MAX_EVENT_TYPE_LEN {
                return invalid(format!(
                    "event {i} for stream {stream:?}: type must be 1 to {MAX_EVENT_TYPE_LEN} bytes"
                ));
            }
            let size = e.payload.len() + e.metadata.len();
            if size > self.options.max_event_size {
                return invalid(format!(
                    "event {i} for stream {stream:?} is {size} bytes, more than max_event_size {}",
                    self.options.max_event_size
                ));
            }
        }
        let len = frame::frame_len(stream, events);
        if u32::try_from(len).is_err() || u32::try_from(events.len()).is_err() {
            return invalid(format!(
                "append to stream {stream:?} is {len} bytes, more than one frame holds (4 GiB)"
            ));
        }
        Ok(())
    }

    fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<AppendResult> {
        self.validate(stream, events)?;
        let (result, is_retry) = self.write(stream, expected, events)?;
        if is_retry {
            self.wait_acknowledged(result.last_position)?;
            return Ok(result);
        }
        match self.options.fsync {
            FsyncPolicy::Always => {
                self.commit
                    .sync_to(result.last_position, &mut || self.sync_written())?;
            }
            FsyncPolicy::Never | FsyncPolicy::Interval(_) => {}
            FsyncPolicy::EveryEvents(max_unsynced) => {
                let durable = self.commit.durable();
                let unsynced = result.last_position.saturating_sub(durable);
                if unsynced >= (max_unsynced / 2).max(1) {
                    self.commit.request_flush();
                }
                if unsynced > max_unsynced {
                    self.commit
                        .sync_to(result.last_position - max_unsynced, &mut || {
                            self.sync_written()
                        })?;
                }
            }
        }
        Ok(result)
    }

    /// Under the writer lock: checks the expected version, encodes and writes the frame, and
    /// indexes it. Returns the result and whether it was a recognised retry (nothing written).
    fn write(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<(AppendResult, bool)> {
        self.check_writable()?;
        let mut guard = self.writer.lock();
        self.commit.check()?;
        let current = self.index.read().version(stream);
        if let Some(original) = self.find_retry(stream, expected, current, events)? {
            return Ok((original, true));
        }
        if !expected.matches(current) {
            return Err(Error::WrongExpectedVersion {
                stream: stream.to_string(),
                expected,
                actual: current,
            });
        }
        let w = &mut *guard;
        let n = events.len() as u64;
        let result = AppendResult {
            first_version: current.unwrap_or(0) + 1,
            last_version: current.unwrap_or(0) + n,
            first_position: w.next_position,
            last_position: w.next_position + n - 1,
        };
        w.buf.clear();
        w.offsets.clear();
        let start = FrameStart {
            stream,
            first_position: result.first_position,
            first_version: result.first_version,
            durable: self.commit.durable(),
            timestamp: now_micros(),
        };
        frame::encode_frame(&mut w.buf, &start, events, &mut w.offsets);
        let written = match self.log.write(&mut w.active, &w.buf, result.first_position) {
            Ok(at) => at,
            Err(e) => {
                self.commit.poison(e.to_string());
                return Err(e);
            }
        };
        if let Some(sealed) = written.sealed {
            // Sealing synced everything before this frame: it is durable, and can be visible.
            let wm = Watermark {
                position: result.first_position - 1,
                location: pack(sealed.ordinal, sealed.end()),
            };
            self.publish(wm);
            self.commit.advance(wm.position);
            if let Some(tx) = &w.to_index {
                let _ = tx.send(sealed);
            }
        }
        let (ordinal, frame_offset) = (written.ordinal, written.offset);
        self.index.write().push(
            stream,
            w.offsets
                .iter()
                .map(|&o| pack(ordinal, frame_offset + u64::from(o))),
        );
        w.next_position += n;
        self.written_appends.fetch_add(1, Ordering::AcqRel);
        w.written = Watermark {
            position: result.last_position,
            location: pack(ordinal, w.active.offset),
        };
        if self.options.fsync != FsyncPolicy::Always {
            // Handed to the OS: acknowledged under every other policy.
            self.publish(w.written);
        }
        Ok((result, false))
    }

    /// The original result, if this append is a retry of one already written.
    fn find_retry(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        current: Option<u64>,
        events: &[EventData],
    ) -> Result<Option<AppendResult>> {
        let ids: Option<Vec<u128>> = events.iter().map(|e| e.id).collect();
        let (Some(ids), Some(current)) = (ids, current) else {
            return Ok(None);
        };
        let n = ids.len() as u64;
        let after = match expected {
            ExpectedVersion::Exact(v) if v < current => v,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Any | ExpectedVersion::StreamExists => match current.checked_sub(n) {
                Some(v) => v,
                None => return Ok(None),
            },
            ExpectedVersion::Exact(_) => return Ok(None),
        };
        if after + n > current {
            return Ok(None);
        }
        let Some((name, locs)) =
            self.index
                .read()
                .locations(stream, after + 1, ids.len(), u64::MAX)
        else {
            return Ok(None);
        };
        // The matched events must be exactly one earlier append: one whole frame.
        let mut cached = crate::engine::read::SegmentCache::default();
        let mut positions = Vec::with_capacity(ids.len());
        let mut edges = Vec::with_capacity(ids.len());
        for (i, (&loc, &id)) in locs.iter().zip(&ids).enumerate() {
            let (e, edge) = read_event(self, &mut cached, &name, after + 1 + i as u64, loc)?;
            if e.id != Some(id) {
                return Ok(None);
            }
            positions.push(e.position);
            edges.push(edge);
        }
        let last = edges.len().saturating_sub(1);
        let whole_frame = edges.len() == ids.len()
            && edges.iter().enumerate().all(|(i, e)| {
                (e & frame::FLAG_FIRST != 0) == (i == 0)
                    && (e & frame::FLAG_LAST != 0) == (i == last)
            });
        match (positions.first(), positions.last()) {
            (Some(&first_position), Some(&last_position))
                if whole_frame && last_position - first_position + 1 == n =>
            {
                Ok(Some(AppendResult {
                    first_version: after + 1,
                    last_version: after + n,
                    first_position,
                    last_position,
                }))
            }
            _ => Ok(None),
        }
    }
}

/// What the last group-commit sync covered and how long it took.
#[derive(Debug, Default)]
struct GatherStats {
    /// Appends (not events) the last sync covered.
    last_batch: AtomicU64,
    /// Appends covered by syncs so far.
    synced_appends: AtomicU64,
    last_sync_nanos: AtomicU64,
}

/// The longest a sync leader waits for more appends to join.
const MAX_GATHER: Duration = Duration::from_micros(200);

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
