//! The storage engine: the log and nothing above it.
//!
//! [`Engine`] owns one store directory's log: its segments, the stream index, the writer and
//! group commit, and the published position readers read up to. It appends and reads events
//! by stream, position and version; aggregates, subscriptions and projections are the
//! event-sourcing layer's (`crate::es`), built on its handle. Of that layer's files the engine
//! knows only their byte layouts ([`format`]), so that [`verify`] and [`repair`] can check and
//! fix a whole store directory.
//!
//! - [`format`]: every byte layout, as pure functions;
//! - [`segment`], [`log`] (segments in order, rolls, `STATE` records), [`state`];
//! - [`append`] (the append path) and [`sync`] (the sync leader's work), over [`commit`]
//!   (group commit);
//! - [`index`] (stream index), [`checkpoint`] (index checkpoints), [`read`];
//! - [`recovery`] (what an open does), [`verify`] and [`repair`].

pub(crate) mod append;
#[cfg(feature = "async")]
pub(crate) mod async_wait;
pub(crate) mod checkpoint;
pub(crate) mod commit;
pub(crate) mod follow;
pub(crate) mod format;
pub(crate) mod index;
pub(crate) mod lifecycle;
pub(crate) mod log;
pub(crate) mod postings;
pub(crate) mod published;
pub(crate) mod query_read;
pub(crate) mod read;
pub(crate) mod recovery;
pub(crate) mod repair;
pub(crate) mod replica;
pub(crate) mod scavenge;
pub(crate) mod segment;
pub(crate) mod state;
pub(crate) mod sync;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod transaction;
pub(crate) mod verify;

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::error::{Error, Result};
use crate::options::{FsyncPolicy, Options};
use crate::storage::Storage;
use commit::Commit;
use format::replica_file::ReplicaFile;
use index::{StreamIndex, pack};
use log::{Active, Log};
use read::{AllEvents, ReadOptions, StreamEvents};
use recovery::{RecoverOptions, RecoveryReport};
use segment::Segment;
use state::State;
use sync::GatherStats;

/// Name of the lock file in a store directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// How far readers may read: the last acknowledged position, and the log location just past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watermark {
    pub position: u64,
    pub location: u64,
}

/// The writer's state, under its lock.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) active: Active,
    pub(crate) next_position: u64,
    /// Everything written to the OS so far.
    pub(crate) written: Watermark,
    pub(crate) buf: Vec<u8>,
    pub(crate) offsets: Vec<u32>,
    /// Sealed segments go here to be synced (if their roll left that for later) and get
    /// their index checkpoint written, in the background.
    pub(crate) to_seal: Option<Sender<SealJob>>,
    /// Once the active segment reaches this offset, the segment before it, which its roll
    /// left unsynced, is due for its sync.
    pub(crate) seal_due: Option<u64>,
    /// The active segment's index checkpoint, made as it is written (when `checkpoints`).
    pub(crate) checkpoint: checkpoint::Builder,
    /// Index checkpoints are written (`Options::index_checkpoints`, a writable store).
    pub(crate) checkpoints: bool,
    /// The tag numbers of the event being indexed (kept to spare an allocation per event).
    pub(crate) tag_ids: Vec<u32>,
}

impl Writer {
    /// After a roll sealed a segment: the builder of its checkpoint, replaced by a new one
    /// for the active segment the roll created (which holds at most the frame that made the
    /// roll, not yet noted).
    pub(crate) fn take_checkpoint(&mut self) -> checkpoint::Builder {
        let next = checkpoint::Builder::new(
            self.checkpoints,
            &self.active.seg,
            segment::SEGMENT_HEADER_LEN,
        );
        std::mem::replace(&mut self.checkpoint, next)
    }
}

/// A sealed segment, with the builder of its checkpoint when the writer made one.
type Sealed = (Arc<Segment>, Option<Box<checkpoint::Builder>>);

/// Work for the sealer thread.
#[derive(Debug)]
pub(crate) enum SealJob {
    /// A roll sealed this segment (or an open found it without an index checkpoint), with
    /// the builder of its checkpoint when the writer made one as it wrote (else, or if the
    /// builder gave up, the segment is scanned).
    Sealed(Arc<Segment>, Option<Box<checkpoint::Builder>>),
    /// The segment a roll left unsynced is due for its sync.
    SyncDue,
}

/// Takes the store's lock (the `LOCK` file, which then names this process), or fails with
/// [`Error::Locked`] naming the process that has it.
pub(crate) fn lock_dir(storage: &dyn Storage, dir: &Path) -> Result<Box<dyn Any + Send + Sync>> {
    let path = dir.join(LOCK_FILE);
    storage.lock(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked {
            path: dir.to_path_buf(),
            holder: crate::storage::lock_holder(storage, &path),
        },
        _ => Error::io("lock", &path, e),
    })
}

/// The log's share of `Store::stats` (see `Stats` for each counter).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogCounters {
    pub streams: u64,
    pub segments: u64,
    pub bytes: u64,
    pub last_position: u64,
    pub durable_position: u64,
    pub index_memory_bytes: u64,
    pub tag_postings: u64,
    pub tag_index_bytes: u64,
    pub segment_syncs: u64,
}

/// The background threads of an engine.
#[derive(Debug, Default)]
struct Background {
    flusher: Option<JoinHandle<()>>,
    /// Leads the syncs async appends wait for; started by the first one that waits.
    #[cfg(feature = "async")]
    syncer: Option<JoinHandle<()>>,
    sealer: Option<JoinHandle<()>>,
    /// A follower's thread, which takes in what the writer publishes.
    follower: Option<JoinHandle<()>>,
}

/// One open store directory's log; shared (`Arc`) by the store, its iterators and
/// subscriptions, and the background threads.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) log: Log,
    storage: Arc<dyn Storage>,
    pub(crate) index: RwLock<StreamIndex>,
    /// Every stream's metadata ([`lifecycle`]).
    pub(crate) lifecycle: RwLock<lifecycle::Lifecycle>,
    /// Some stream has metadata: reads need to ask [`Engine::rules`].
    pub(crate) has_lifecycle: AtomicBool,
    /// Held by the one scavenge that may run at a time.
    scavenging: Mutex<()>,
    /// Held while an index checkpoint is written and while a scavenge swaps a segment, so
    /// that no checkpoint of a segment's old file outlives the swap.
    checkpoint_lock: Mutex<()>,
    /// Index checkpoints written from what the writer noted, without a scan.
    pub(crate) checkpoints_unscanned: AtomicU64,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) commit: Commit,
    watermark: Mutex<Watermark>,
    /// Appends written to the OS so far (counted without the writer's lock, for group commit).
    pub(crate) written_appends: AtomicU64,
    pub(crate) gather_stats: GatherStats,
    /// Signalled whenever the watermark moves or the store closes.
    published: Condvar,
    /// Async subscribers' wakers, woken with the condvar; registered and drained under the
    /// watermark's lock, so that no publish slips between a check and a registration.
    #[cfg(feature = "async")]
    published_wakers: Mutex<async_wait::Wakers>,
    closed: AtomicBool,
    /// `close` has run (or is running): it runs once.
    shut: AtomicBool,
    background: Mutex<Background>,
    /// A writer's `PUBLISHED` board, for followers in other processes.
    board: Option<published::Board>,
    /// Why a follower stopped following, if it did.
    pub(crate) follow_failure: Mutex<Option<String>>,
    /// What `REPLICA` says, in a replica's directory: only its replication appends.
    pub(crate) replica: RwLock<Option<ReplicaFile>>,
    recovery: RecoveryReport,
    /// The directory lock (a read-only engine's is a placeholder), released by `close` so
    /// that the store can be opened again while old subscriptions drain; `None` once closed.
    /// Held for reading by every write beside the log (`while_open`), which so run in
    /// parallel, and for writing by `close`.
    lock: RwLock<Option<Box<dyn Any + Send + Sync>>>,
}

impl Engine {
    /// Opens (or creates) the log in `dir` on `storage` with nothing above it; see
    /// [`open_with`](Self::open_with).
    #[cfg(test)]
    pub(crate) fn open_with_storage(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<Arc<Engine>> {
        Self::open_with(storage, dir, options, |_| Ok(())).map(|(engine, ())| engine)
    }

    /// Opens (or creates) the log in `dir` on `storage`: takes the lock and runs recovery;
    /// then `upper`, the recovery step of the layer above, against the recovered log; and
    /// only when both succeeded puts the open on record in `STATE` and starts the background
    /// threads. A failed open changes nothing the next open would see.
    pub(crate) fn open_with<T>(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: Options,
        upper: impl FnOnce(&Engine) -> Result<T>,
    ) -> Result<(Arc<Engine>, T)> {
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
        // Read-only opens take no lock: they read beside the writer and change nothing.
        let lock: Box<dyn Any + Send + Sync> = if read_only {
            Box::new(())
        } else {
            lock_dir(storage.as_ref(), &dir)?
        };
        let replica = replica::read_marker(storage.as_ref(), &dir)?;
        let mut index = StreamIndex::new(options.query_index);
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
        // Recovery synced everything it recovered (the segment before the last too, if a
        // roll had left it unsynced).
        let open_state = State {
            clean: false,
            durable_floor: last,
            last_ordinal: rec.active.seg.ordinal,
            last_len: rec.active.seg.capacity,
            seal_deferred: false,
        };
        let written = Watermark {
            position: last,
            location: pack(rec.active.seg.ordinal, rec.active.offset),
        };
        let policy = options.fsync;
        let checkpoints = options.index_checkpoints && !read_only;
        let (to_seal, sealed) = std::sync::mpsc::channel::<SealJob>();
        if checkpoints {
            for ord in &rec.unindexed {
                if let Some(seg) = rec.segments.get(*ord as usize - 1) {
                    let _ = to_seal.send(SealJob::Sealed(Arc::clone(seg), None));
                }
            }
        }
        // Pages faulted in ahead are dirty zeros until written, which a sync writes too:
        // not where every append waits for a sync of its own.
        let populate_ahead = policy != FsyncPolicy::Always;
        let log = Log::new(
            Arc::clone(&storage),
            &dir,
            options.segment_size,
            rec.segments,
            populate_ahead,
        );
        let mut engine = Engine {
            log,
            storage,
            dir,
            options,
            index: RwLock::new(index),
            lifecycle: RwLock::new(lifecycle::Lifecycle::default()),
            has_lifecycle: AtomicBool::new(false),
            scavenging: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            checkpoints_unscanned: AtomicU64::new(0),
            writer: Mutex::new(Writer {
                checkpoint: checkpoint::Builder::new(
                    checkpoints,
                    &rec.active.seg,
                    rec.active.offset,
                ),
                checkpoints,
                active: rec.active.populated_ahead(populate_ahead),
                next_position: rec.next_position,
                written,
                buf: Vec::new(),
                offsets: Vec::new(),
                to_seal: (!read_only).then_some(to_seal),
                seal_due: None,
                tag_ids: Vec::new(),
            }),
            // Recovery synced the active segment, and the one before it if that had been
            // left unsynced; every earlier one was synced before the next roll.
            commit: Commit::new(last),
            watermark: Mutex::new(written),
            written_appends: AtomicU64::new(0),
            gather_stats: GatherStats::default(),
            published: Condvar::new(),
            #[cfg(feature = "async")]
            published_wakers: Mutex::new(async_wait::Wakers::default()),
            closed: AtomicBool::new(false),
            recovery: rec.report,
            shut: AtomicBool::new(false),
            background: Mutex::new(Background::default()),
            board: None,
            follow_failure: Mutex::new(None),
            replica: RwLock::new(replica),
            lock: RwLock::new(Some(lock)),
        };
        engine.load_lifecycle()?;
        let upper = upper(&engine)?;
        // After the layer above, which may have removed files.
        engine.recovery.readable_by_others = readable_by_others(
            engine.storage(),
            &engine.dir,
            engine.options.share_with_group,
        )?;
        // From here on the store is open: a crash before the next clean close is unclean.
        if !read_only {
            engine.log.record(|s| *s = open_state)?;
            engine.board = published::Board::create(engine.storage(), &engine.dir, written)?;
        }
        // A follower shows only what the writer acknowledged, though it may have read more.
        let mut start = follow::Start { epoch: None };
        let mut board = None;
        if engine.options.follow {
            board = published::Board::open(engine.storage(), &engine.dir)?;
            if let Some(b) = &board {
                start.epoch = Some(b.raw_epoch());
                // A live writer is inside an update for nanoseconds; one that stays there
                // died in it, and the files are then all there is: what recovery read stands
                // (a writer's next recovery keeps every whole frame).
                if let Some(p) = b.read_patiently(std::time::Duration::from_millis(200)) {
                    start.epoch = Some(p.epoch);
                    if p.acknowledged.position < written.position {
                        *engine.watermark.lock() = p.acknowledged;
                    }
                }
            }
        }
        let inner = Arc::new(engine);
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
        let sealer = if read_only {
            None
        } else {
            let bg = Arc::clone(&inner);
            let handle = std::thread::Builder::new()
                .name("annal-sealer".into())
                .spawn(move || bg.run_sealer(&sealed, checkpoints))
                .map_err(|e| Error::io("spawn sealer thread", &inner.dir, e))?;
            Some(handle)
        };
        let follower = if inner.options.follow {
            let bg = Arc::clone(&inner);
            let handle = std::thread::Builder::new()
                .name("annal-follower".into())
                .spawn(move || follow::run(&bg, board, start))
                .map_err(|e| Error::io("spawn follower thread", &inner.dir, e))?;
            Some(handle)
        } else {
            None
        };
        *inner.background.lock() = Background {
            flusher,
            sealer,
            follower,
            #[cfg(feature = "async")]
            syncer: None,
        };
        Ok((inner, upper))
    }
}

impl Engine {
    /// The sealer's loop, until the store closes: syncs the segment a roll left unsynced
    /// when it is due (the next one is half full: the sync's writes then keep out of the
    /// way of the roll's, and of the appends right after it), and hands synced segments to
    /// a thread of its own that writes their index checkpoints (with `checkpoints`), which
    /// are only ever written for synced segments.
    fn run_sealer(&self, jobs: &Receiver<SealJob>, checkpoints: bool) {
        std::thread::scope(|scope| {
            // Checkpoints are built on a thread of their own at a background priority: a
            // scan of a full segment is only a faster next open, and must not take the
            // CPU from the appends (or from the thread faulting pages in ahead of them).
            let (to_index, indexing) = std::sync::mpsc::channel::<Sealed>();
            let indexer = if checkpoints {
                std::thread::Builder::new()
                    .name("annal-checkpoint".into())
                    .spawn_scoped(scope, move || {
                        background_priority();
                        for (seg, ix) in indexing {
                            self.write_checkpoint(&seg, ix);
                        }
                    })
                    .ok()
            } else {
                None
            };
            let index = |(seg, ix): Sealed| {
                if !checkpoints {
                    return;
                }
                // Without its thread (it could not be made), here.
                if indexer.is_none() {
                    self.write_checkpoint(&seg, ix);
                } else if let Err(std::sync::mpsc::SendError((seg, ix))) = to_index.send((seg, ix))
                {
                    self.write_checkpoint(&seg, ix);
                }
            };
            self.seal_jobs(jobs, &index);
        });
    }

    /// Writes the index checkpoint of sealed segment `seg` (from `builder` when the writer
    /// made one that saw all of it, else from a scan of the segment), unless a scavenge has
    /// replaced the segment since (and written its own).
    fn write_checkpoint(&self, seg: &Arc<Segment>, builder: Option<Box<checkpoint::Builder>>) {
        let current = || {
            self.log
                .segment(seg.ordinal)
                .is_some_and(|now| Arc::ptr_eq(&now, seg))
        };
        if !current() {
            return;
        }
        // Made (or scanned) outside the lock, at this thread's low priority: only the write
        // holds it, so a scavenge's swap never waits for a scan. A checkpoint that cannot be
        // made or written is only a slower next open.
        let (ix, unscanned) = match builder.and_then(|b| b.finish(seg)) {
            Some(ix) => (ix, true),
            None => match checkpoint::build(seg) {
                Ok(ix) => (ix, false),
                Err(_) => return,
            },
        };
        let _swaps = self.checkpoint_lock.lock();
        if current()
            && checkpoint::write(self.storage.as_ref(), &self.dir, &ix).is_ok()
            && unscanned
        {
            self.checkpoints_unscanned.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sealer's loop: syncs sealed segments when due and hands each synced one to
    /// `index`.
    fn seal_jobs(&self, jobs: &Receiver<SealJob>, index: &dyn Fn(Sealed)) {
        let unsynced = |seg: &Segment| {
            self.log
                .unsynced()
                .is_some_and(|u| u.seg.ordinal == seg.ordinal)
        };
        // A sealed segment waiting for its sync (or for a sync someone else makes).
        let mut waiting: Option<Sealed> = None;
        for job in jobs {
            match job {
                SealJob::Sealed(seg, ix) => {
                    // A segment a scavenge rewrote comes synced: one still waiting for its
                    // sync goes on waiting.
                    if let Some(old) = waiting.take() {
                        if unsynced(&old.0) && !unsynced(&seg) {
                            waiting = Some(old);
                        } else if !unsynced(&old.0) {
                            index(old);
                        }
                    }
                    if unsynced(&seg) {
                        waiting = Some((seg, ix));
                    } else {
                        index((seg, ix));
                    }
                    self.retain_in_background();
                }
                SealJob::SyncDue => {
                    match self.log.sync_unsynced() {
                        Ok(Some(position)) => self.commit.advance(position),
                        Ok(None) => {}
                        Err(e) => {
                            // As a failed sync of the active segment would: the sealed data
                            // may be gone from the page cache, so nothing more is accepted.
                            self.commit.poison(e.to_string());
                            return;
                        }
                    }
                    if let Some(sealed) = waiting.take() {
                        index(sealed);
                    }
                }
            }
        }
        // Closing: the close synced everything it could.
        if let Some(sealed) = waiting.filter(|(seg, _)| !unsynced(seg)) {
            index(sealed);
        }
    }

    pub(crate) fn watermark(&self) -> Watermark {
        *self.watermark.lock()
    }

    /// Makes `wm` visible to readers (never moving backwards).
    pub(crate) fn publish(&self, wm: Watermark) {
        let mut cur = self.watermark.lock();
        // Invariant: a position is published with the location just past it, in the log's
        // order; positions and locations move together.
        debug_assert!(
            wm.position <= cur.position || wm.location > cur.location,
            "published position moved ahead of its location"
        );
        if wm.position > cur.position {
            *cur = wm;
            if let Some(board) = &self.board {
                board.publish(wm);
            }
            self.published.notify_all();
            self.wake_subscribers(cur);
        }
    }

    /// Lets go of the watermark's lock, waking the async subscribers (taken under the lock,
    /// woken after it: a waker may run its task at once).
    fn wake_subscribers(&self, wm: MutexGuard<'_, Watermark>) {
        #[cfg(feature = "async")]
        let woken = self.take_published_wakers();
        drop(wm);
        #[cfg(feature = "async")]
        woken.into_iter().for_each(std::task::Waker::wake);
    }

    /// Fails with [`Error::InvalidArgument`] when the query index is off.
    pub(crate) fn check_query_index(&self) -> Result<()> {
        if self.options.query_index {
            Ok(())
        } else {
            Err(Error::InvalidArgument(
                "the query index is off (Options::query_index): reads by query, category or \
                 type, query subscriptions and append conditions need it"
                    .into(),
            ))
        }
    }

    /// Fails with [`Error::ReadOnly`] for a store opened read-only, and with
    /// [`Error::IsReplica`] for a replica: appends, transactions and metadata changes.
    pub(crate) fn check_appendable(&self) -> Result<()> {
        self.check_writable()?;
        match &*self.replica.read() {
            Some(r) => Err(Error::IsReplica {
                path: self.dir.clone(),
                js_stream: r.js_stream.clone(),
            }),
            None => Ok(()),
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
    pub(crate) fn close_subscriptions(&self) {
        let wm = self.watermark.lock();
        self.closed.store(true, Ordering::Release);
        self.published.notify_all();
        self.wake_subscribers(wm);
    }

    /// The storage the log is on, to share with the layer above.
    pub(crate) fn storage_handle(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.storage)
    }

    /// The log's counters, for `Store::stats`.
    pub(crate) fn counters(&self) -> LogCounters {
        let wm = self.watermark();
        let segments = self.log.segments();
        let metadata_streams = self.metadata_count();
        let (streams, index_bytes, tag_postings, tag_bytes) = {
            let ix = self.index.read();
            (
                ix.stream_count().saturating_sub(metadata_streams) as u64,
                ix.memory_bytes(),
                ix.postings.tag_postings() as u64,
                ix.postings.tag_memory_bytes() as u64,
            )
        };
        let sample_bytes: usize = segments.iter().map(|s| s.sample_bytes()).sum();
        LogCounters {
            streams,
            segments: segments.len() as u64,
            bytes: segments.iter().map(|s| s.end()).sum(),
            last_position: wm.position,
            durable_position: self.commit.durable().min(wm.position),
            index_memory_bytes: (index_bytes + sample_bytes) as u64,
            tag_postings,
            tag_index_bytes: tag_bytes,
            segment_syncs: self.log.syncs(),
        }
    }

    /// The store's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the store was opened with.
    pub(crate) fn options(&self) -> &Options {
        &self.options
    }

    /// What recovery did when the log was opened.
    pub(crate) fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Position of the last acknowledged event, 0 for an empty log.
    pub(crate) fn last_position(&self) -> u64 {
        self.watermark().position
    }

    /// Whether an earlier write or sync failed (appends are refused until a reopen).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.commit.check().is_err()
    }

    /// Reads `stream` (versions) per `opts`; an unknown stream reads as empty.
    pub(crate) fn read_stream(self: &Arc<Self>, stream: &str, opts: ReadOptions) -> StreamEvents {
        StreamEvents::new(Arc::clone(self), stream, opts)
    }

    /// Reads the whole log (positions) per `opts`.
    pub(crate) fn read_all(self: &Arc<Self>, opts: ReadOptions) -> AllEvents {
        AllEvents::new(self, opts)
    }

    /// The stream's last acknowledged version, `None` when it has no events.
    pub(crate) fn stream_version(&self, stream: &str) -> Option<u64> {
        let wm = self.watermark();
        self.index.read().visible_version(stream, wm.location)
    }

    /// Every stream with an acknowledged event, with its last version (in no order).
    pub(crate) fn streams(&self) -> Vec<(Arc<str>, u64)> {
        let wm = self.watermark();
        self.index.read().streams(wm.location)
    }

    /// Makes every acknowledged event durable, whatever the policy (nothing when read-only).
    pub(crate) fn sync_all(&self) -> Result<()> {
        if self.options.read_only {
            return Ok(());
        }
        self.sync()
    }

    /// Syncs, stops the background threads, wakes every subscriber, and records a clean
    /// close in `STATE`. Runs once; later calls return `Ok`.
    pub(crate) fn close(&self) -> Result<()> {
        if self.shut.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let closed = self.close_log();
        // Whatever the outcome: the next open recovers what this one could not record.
        *self.lock.write() = None;
        closed
    }

    /// Runs `write`, a change to a file of the store beside the log (an ack, a checkpoint),
    /// while the store is open: never after `close` released the directory to another
    /// writer.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the store is closed, or what `write` returns.
    pub(crate) fn while_open<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        let held = self.lock.read();
        if held.is_none() {
            return Err(Error::Closed);
        }
        write()
    }

    fn close_log(&self) -> Result<()> {
        self.commit.shutdown();
        if self.options.read_only {
            self.close_subscriptions();
            let follower = self.background.lock().follower.take();
            if let Some(h) = follower {
                let _ = h.join();
            }
            return Ok(());
        }
        let synced = self.sync();
        self.close_subscriptions();
        let mut bg = std::mem::take(&mut *self.background.lock());
        if let Some(h) = bg.flusher.take() {
            let _ = h.join();
        }
        #[cfg(feature = "async")]
        if let Some(h) = bg.syncer.take() {
            let _ = h.join();
        }
        // Closing the channel lets the sealer finish what it has queued and stop.
        self.writer.lock().to_seal = None;
        if let Some(h) = bg.sealer.take() {
            let _ = h.join();
        }
        synced?;
        self.commit.check()?;
        let (last_ordinal, last_len) = {
            let w = self.writer.lock();
            (w.active.seg.ordinal, w.active.seg.capacity)
        };
        let durable = self.commit.durable();
        self.log.record(|s| {
            *s = State {
                clean: true,
                durable_floor: durable,
                last_ordinal,
                last_len,
                seal_deferred: false,
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

/// Lowers the calling thread's priority (nice 10), for background work (checkpoints, a
/// scavenge) that must give way to appends. Failing to is only work that competes at the
/// usual priority. The priority cannot be raised again without privilege: only threads that
/// do nothing else call this.
pub(crate) fn background_priority() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
}

#[cfg(test)]
mod tests {
    use super::testing::{self, DIR};
    use super::*;
    use crate::event::{EventData, ExpectedVersion};
    use crate::storage::SimDisk;

    fn types(events: impl Iterator<Item = Result<crate::event::RecordedEvent>>) -> Vec<String> {
        events
            .map(|e| e.map(|e| String::from_utf8_lossy(&e.payload).into_owned()))
            .collect::<Result<_>>()
            .unwrap()
    }

    #[test]
    fn appends_are_read_back_by_stream_and_by_position() {
        let (_disk, engine) = testing::fresh();
        let a = testing::append(&engine, "a", 2);
        let b = testing::append(&engine, "b", 1);
        assert_eq!((a.first_position, a.last_position), (1, 2));
        assert_eq!((b.first_version, b.first_position), (1, 3));
        assert_eq!(engine.stream_version("a"), Some(2));
        assert_eq!(engine.stream_version("nope"), None);
        assert_eq!(engine.last_position(), 3);
        assert_eq!(
            types(engine.read_stream("a", ReadOptions::backward())),
            ["a:1", "a:0"]
        );
        assert_eq!(
            types(engine.read_all(ReadOptions::forward_from(2))),
            ["a:1", "b:0"]
        );
        let mut streams = engine.streams();
        streams.sort();
        assert_eq!(streams, [("a".into(), 2), ("b".into(), 1)]);
    }

    #[test]
    fn a_stale_expected_version_writes_nothing() {
        let (_disk, engine) = testing::fresh();
        testing::append(&engine, "s", 1);
        let stale = engine.append("s", ExpectedVersion::NoStream, &[EventData::new("T", "x")]);
        assert!(matches!(
            stale,
            Err(Error::WrongExpectedVersion {
                actual: Some(1),
                ..
            })
        ));
        assert_eq!(engine.last_position(), 1);
    }

    #[test]
    fn a_retry_with_the_same_ids_returns_the_original_result() {
        let (_disk, engine) = testing::fresh();
        let events = [EventData::new("T", "x").with_id(9)];
        let first = engine
            .append("s", ExpectedVersion::NoStream, &events)
            .unwrap();
        let again = engine
            .append("s", ExpectedVersion::NoStream, &events)
            .unwrap();
        assert!(!first.deduplicated && again.deduplicated);
        assert_eq!(
            (first.first_position, first.last_version),
            (again.first_position, again.last_version)
        );
        assert_eq!(engine.last_position(), 1);
    }

    #[test]
    fn close_records_a_clean_state_and_a_reopen_keeps_every_event() {
        let (disk, engine) = testing::fresh();
        testing::append(&engine, "s", 3);
        engine.close().unwrap();
        let state = state::read(&disk, Path::new(DIR)).unwrap().unwrap();
        assert!(state.clean);
        assert_eq!(state.durable_floor, 3);
        // Close runs once: a second call writes nothing.
        let path = Path::new(DIR).join(state::STATE_FILE);
        disk.remove(&path).unwrap();
        engine.close().unwrap();
        assert!(disk.contents(&path).is_none(), "a second close wrote STATE");
        crate::storage::replace_file(
            &disk,
            Path::new(DIR),
            state::STATE_FILE,
            &state::encode(&state),
        )
        .unwrap();
        drop(engine);
        let engine = testing::open(&disk, testing::options());
        assert_eq!(engine.recovery_report().proven_durable, 3);
        assert_eq!(engine.recovery_report().unproven_events, 0);
        assert_eq!(engine.stream_version("s"), Some(3));
    }

    #[test]
    fn a_crash_loses_nothing_acknowledged_under_always() {
        let (disk, engine) = testing::fresh();
        testing::append(&engine, "s", 5);
        let crashed = disk.crash();
        drop(engine);
        let engine = testing::open(&crashed, testing::options());
        assert_eq!(engine.last_position(), 5);
        assert_eq!(engine.recovery_report().events, 5);
        engine.close().unwrap();
    }

    #[test]
    fn a_read_only_engine_refuses_appends_and_writes_no_file() {
        let (disk, engine) = testing::fresh();
        testing::append(&engine, "s", 1);
        engine.close().unwrap();
        drop(engine);
        let files = |disk: &SimDisk| {
            let paths = disk.paths();
            let bytes: Vec<_> = paths.iter().map(|p| disk.contents(p)).collect();
            (paths, bytes)
        };
        let before = files(&disk);
        let ro = testing::open(&disk, testing::options().read_only(true));
        let r = ro.append("s", ExpectedVersion::Any, &[EventData::new("T", "x")]);
        assert!(matches!(r, Err(Error::ReadOnly { .. })));
        assert_eq!(ro.stream_version("s"), Some(1));
        ro.close().unwrap();
        assert!(files(&disk) == before, "a read-only engine changed a file");
    }

    #[test]
    fn a_second_engine_on_the_same_directory_is_locked_out() {
        let disk = SimDisk::new(1);
        let _engine = testing::open(&disk, testing::options());
        let second =
            Engine::open_with_storage(Arc::new(disk.clone()), Path::new(DIR), testing::options());
        assert!(matches!(second, Err(Error::Locked { .. })));
        _engine.close().unwrap();
    }
}
