//! [`Store`], the facade: it opens the engine, then the event-sourcing layer over it, and
//! closes them in the reverse order. It is the only module that names both layers.

use std::path::Path;
use std::sync::Arc;

use crate::engine::Engine;
use crate::engine::query_read::{QueryEvents, Selection};
use crate::engine::read::{AllEvents, ReadOptions, StreamEvents};
use crate::engine::recovery::RecoveryReport;
use crate::engine::scavenge::{ScavengeProgress, ScavengeReport};
use crate::error::Result;
use crate::es::EsState;
use crate::es::aggregate::{Aggregate, Repository};
use crate::es::codec::Codec;
use crate::es::durable::{self, DurableInfo, DurableSubscription};
use crate::es::projection::{Projection, RunningProjection};
use crate::es::snapshot::{self, StoredSnapshot};
use crate::es::subscription::Subscription;
use crate::event::{AppendResult, EventData, ExpectedVersion, Payload};
use crate::lifecycle::{DeleteMode, StreamMetadata};
use crate::options::Options;
use crate::query::Query;
use crate::storage::{FsStorage, Storage};
use crate::transaction::{CommitResult, Transaction};

/// An embedded event store over one directory.
///
/// `Store` is `Send + Sync`: share it between threads with `Arc`. Appends are serialized (and
/// under [`FsyncPolicy::Always`](crate::FsyncPolicy::Always) share fdatasyncs); reads run concurrently with them and with
/// each other. Readers see an event only once its append has been acknowledged, so a reader
/// never sees an event that a crash could take back under the store's policy.
#[derive(Debug)]
pub struct Store {
    engine: Arc<Engine>,
    es: EsState,
    closed: bool,
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
    /// Events appended and acknowledged: the last position (those that stream metadata
    /// hides, or a scavenge erased, included).
    pub events: u64,
    /// Streams with at least one event (annal's metadata streams not counted).
    pub streams: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of log data in the segments (headers and frames, not preallocated space).
    pub bytes: u64,
    /// Position of the last event, 0 when empty.
    pub last_position: u64,
    /// Position up to which every event is known to be durable (synced).
    pub durable_position: u64,
    /// Approximate heap bytes held by the stream index, the sparse position index and the
    /// query index (tags, types, categories, and the stream of each position: about 4 bytes
    /// per event plus 8 per entry of each list).
    pub index_memory_bytes: u64,
    /// (event, tag) pairs in the query index.
    pub tag_postings: u64,
    /// Heap bytes of the tag lists (part of `index_memory_bytes`): divided by
    /// `tag_postings`, the cost of one tag on one event, 8 bytes plus the lists' spare
    /// capacity and keys.
    pub tag_index_bytes: u64,
    /// Snapshots retained.
    pub snapshots: u64,
    /// Durable subscriptions, with their acknowledged positions and lag (on a follower,
    /// the followers' ones).
    pub durable_subscriptions: Vec<DurableInfo>,
    /// The durable subscriptions of followers (in the store directory's `followers/`, such
    /// as an `annal relay` running beside the writer), as the writer or a read-only open
    /// sees them; empty on a follower, whose `durable_subscriptions` are those.
    pub follower_subscriptions: Vec<DurableInfo>,
    /// Bytes of snapshot files.
    pub snapshot_bytes: u64,
    /// `fdatasync` calls on segment files since the store opened. Under
    /// [`FsyncPolicy::Always`](crate::FsyncPolicy::Always), appends divided by this is how many appends group commit
    /// shared each sync among.
    pub segment_syncs: u64,
    /// Events a [`scavenge`](Store::scavenge) would erase now (hidden by their stream's
    /// metadata, or metadata replaced by newer metadata).
    pub reclaimable_events: u64,
    /// Bytes of those events' records: what a scavenge would erase (the disk space given back
    /// is less where they share disk blocks with live events).
    pub reclaimable_bytes: u64,
}

impl Store {
    /// Opens (or creates) the store in `dir` on the real file system.
    ///
    /// Recovery runs first: see [`RecoveryReport`] and the README. Fails with
    /// [`Error::Locked`](crate::Error::Locked) when another process or `Store` has the directory open, and with
    /// [`Error::Corruption`](crate::Error::Corruption) when the log is damaged anywhere but in a torn tail.
    ///
    /// # Errors
    ///
    /// As [`open_with_storage`](Self::open_with_storage).
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let storage = FsStorage::with_group_access(options.share_with_group);
        Self::open_with_storage(Arc::new(storage), dir, options)
    }

    /// Opens a follower of the store in `dir`: a read-only handle, for another process than
    /// the writer's, on which reads, subscriptions and projections see each event as the
    /// writer acknowledges it (within about a millisecond: the README has the measured
    /// latency), and never one it has not acknowledged. It takes no lock and changes no file;
    /// it follows the writer's segment rolls and restarts. The writer publishes its
    /// acknowledged position in the shared-memory file `PUBLISHED`, so following costs the
    /// writer no system call.
    ///
    /// What a follower may have shown that a restarted writer no longer has: under
    /// [`FsyncPolicy::Always`](crate::FsyncPolicy::Always), nothing (it shows only synced
    /// events). Under the other policies it shows events once written to the OS, which a
    /// crash of the writer's process keeps, and which only an OS crash or power loss can take
    /// back; a follower that then finds the restarted writer's log shorter than what it read
    /// stops, and its subscriptions end with [`Error::Diverged`](crate::Error::Diverged).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open) read-only: [`Error::Io`](crate::Error::Io) when there is no
    /// store there, [`Error::Corruption`](crate::Error::Corruption) for damage.
    pub fn open_follower(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open(dir, options.follow(true))
    }

    /// Opens the store in `dir` on the given storage (a simulated disk, in tests).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for invalid options; [`Error::Locked`](crate::Error::Locked) when another process
    /// or `Store` has the directory open; [`Error::Corruption`](crate::Error::Corruption) when the log is damaged
    /// anywhere but in a torn tail, or synced data is missing (no file is changed then);
    /// [`Error::Io`](crate::Error::Io) when a file cannot be read or written (a full disk included).
    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<Store> {
        let (engine, es) = Engine::open_with(storage, dir, options, EsState::open)?;
        Ok(Store {
            engine,
            es,
            closed: false,
        })
    }

    /// Appends `events` to `stream` as one atomic frame, if the stream's version matches
    /// `expected`.
    ///
    /// Returns once the events are acknowledged under the store's [`FsyncPolicy`](crate::FsyncPolicy). On a version
    /// mismatch returns [`Error::WrongExpectedVersion`](crate::Error::WrongExpectedVersion) and writes nothing.
    ///
    /// **Idempotent retries.** When every event carries an id, a retry of an append that
    /// already succeeded returns the original [`AppendResult`], with
    /// [`deduplicated`](AppendResult::deduplicated) set, and writes nothing. A retry is
    /// recognised when:
    /// - with [`ExpectedVersion::Exact`]`(v)` or [`ExpectedVersion::NoStream`] (`v` = 0): the
    ///   stream's events `v+1 ..= v+n` carry exactly these ids, in order;
    /// - with [`ExpectedVersion::Any`] or [`ExpectedVersion::StreamExists`]: the stream's last
    ///   `n` events carry exactly these ids, in order (a retry after other appends to the same
    ///   stream is not recognised and appends again).
    ///
    /// Where a retry would be, an id found on an event with another type, payload or
    /// metadata is [`Error::IdReused`](crate::Error::IdReused), and one id twice in one append
    /// is [`Error::InvalidArgument`](crate::Error::InvalidArgument): an id names one event.
    /// Ids elsewhere in the stream or the store are not looked up (there is no index of
    /// ids), so the same id can be stored again by an append that is not such a retry.
    /// Events without ids are never deduplicated.
    ///
    /// # Errors
    ///
    /// [`Error::WrongExpectedVersion`](crate::Error::WrongExpectedVersion) when the stream's version does not match;
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an invalid stream name, type or size; [`Error::ReadOnly`](crate::Error::ReadOnly)
    /// on a read-only store; [`Error::Io`](crate::Error::Io) when the write or sync fails (the store is then
    /// poisoned) and [`Error::Poisoned`](crate::Error::Poisoned) after that.
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<AppendResult> {
        self.engine.append(stream, expected, events)
    }

    /// Reads `stream` (versions) per `opts`. An unknown stream reads as empty.
    ///
    /// # Errors
    ///
    /// None today (an unknown stream reads as empty); the iterator yields [`Error::Corruption`](crate::Error::Corruption)
    /// or [`Error::Io`](crate::Error::Io) for a record that cannot be read.
    pub fn read_stream(&self, stream: &str, opts: ReadOptions) -> Result<StreamEvents> {
        Ok(self.engine.read_stream(stream, opts))
    }

    /// Commits a [`Transaction`], all or nothing, as one frame (one contiguous range of
    /// positions, one sync): every append's stream must be at its expected version, every
    /// `expect`ed stream at its version, and no event the condition's query selects may
    /// have been appended after the condition's position. Retried with every event carrying
    /// an id, a transaction already in the log is recognised as for [`append`](Store::append):
    /// `deduplicated: true`, nothing written.
    ///
    /// ```
    /// use annal::{AppendCondition, EventData, ExpectedVersion, Options, Query, QueryItem, Store, Transaction};
    /// # fn main() -> annal::Result<()> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let store = Store::open(tmp.path(), Options::default())?;
    /// let r = store.commit(
    ///     Transaction::new()
    ///         .append("account-a", ExpectedVersion::NoStream, [EventData::new("Debited", "10")])
    ///         .append("account-b", ExpectedVersion::NoStream, [EventData::new("Credited", "10")]),
    /// )?;
    /// assert_eq!((r.first_position, r.last_position), (1, 2));
    /// // A decision that read up to position 2 about account a: stale once a newer event is there.
    /// let about_a = Query::items([QueryItem::new().types(["Debited"])]);
    /// store.append("account-a", ExpectedVersion::Any, &[EventData::new("Debited", "5")])?;
    /// let stale = store.commit(
    ///     Transaction::new()
    ///         .append("account-a", ExpectedVersion::Any, [EventData::new("Debited", "1")])
    ///         .condition(AppendCondition::new(about_a).after(2)),
    /// );
    /// assert!(matches!(stale, Err(annal::Error::AppendConditionFailed { position: 3, .. })));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::WrongExpectedVersion`](crate::Error::WrongExpectedVersion) naming the first
    /// stream not at its expected version; [`Error::AppendConditionFailed`](crate::Error::AppendConditionFailed)
    /// with the position of the first event that fails the condition;
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an invalid event, no
    /// append, a stream appended twice (or both appended and expected) or an id twice;
    /// [`Error::IdReused`](crate::Error::IdReused), [`Error::ReadOnly`](crate::Error::ReadOnly),
    /// [`Error::Poisoned`](crate::Error::Poisoned) and [`Error::Io`](crate::Error::Io) as for
    /// [`append`](Store::append).
    pub fn commit(&self, tx: Transaction) -> Result<CommitResult> {
        let (result, stamped) = self.engine.commit_transaction(&tx)?;
        self.save_committed_snapshots(tx, &result, stamped);
        Ok(result)
    }

    /// Saves the snapshots a committed transaction carries; `stamped`, the timestamp its
    /// frame gave its events (`None` for a recognised retry: then read from the log).
    fn save_committed_snapshots(
        &self,
        tx: Transaction,
        result: &CommitResult,
        stamped: Option<u64>,
    ) {
        for (stream, kind, state) in tx.snapshots {
            let Some(i) = tx.appends.iter().position(|(s, _, _)| *s == stream) else {
                continue;
            };
            let (Some(r), Some((_, _, events))) = (result.appends.get(i), tx.appends.get(i)) else {
                continue;
            };
            let kind = snapshot::framework_kind(&kind);
            let own = events.last().and_then(|e| e.timestamp);
            // A cache: the commit stands whether or not its snapshot could be saved.
            let saved = match own.or(stamped) {
                Some(timestamp) => snapshot::save_at(
                    &self.es.snapshots,
                    &stream,
                    &kind,
                    r.last_version,
                    state,
                    snapshot::EventAt {
                        position: r.last_position,
                        timestamp,
                    },
                )
                .map(|()| true),
                None => snapshot::save(
                    &self.engine,
                    &self.es.snapshots,
                    &stream,
                    &kind,
                    r.last_version,
                    state,
                    None,
                ),
            };
            drop(saved);
        }
    }

    /// [`append`](Store::append) for async code (feature `async`): the same checks, frame and
    /// promise, but where the fsync policy makes the append wait for a sync, the future waits
    /// instead of a thread. Group commit completes it: a background thread leads each sync,
    /// covering every append written before it began, and wakes the tasks it made durable.
    /// Any runtime will do (the future needs no reactor).
    ///
    /// What the call itself may block on, as any append does: the writer's lock, held for
    /// the encoding of a frame and its copy into the segment's map, and, under
    /// [`FsyncPolicy::Always`](crate::FsyncPolicy::Always) once per segment (64 MiB by
    /// default), the sync of the segment that the append filled.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> annal::Result<()> {
    /// use annal::{EventData, ExpectedVersion, Options, Store};
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let store = Store::open(tmp.path(), Options::default())?;
    /// let r = store
    ///     .append_async("cart-1", ExpectedVersion::NoStream, &[EventData::new("CartCreated", "{}")])
    ///     .await?;
    /// assert_eq!(r.last_version, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`append`](Store::append).
    #[cfg(feature = "async")]
    pub async fn append_async(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<AppendResult> {
        self.engine.append_async(stream, expected, events).await
    }

    /// [`commit`](Store::commit) for async code (feature `async`), completed by group commit
    /// as [`append_async`](Store::append_async) is.
    ///
    /// # Errors
    ///
    /// As [`commit`](Store::commit).
    #[cfg(feature = "async")]
    pub async fn commit_async(&self, tx: Transaction) -> Result<CommitResult> {
        let (result, stamped) = self.engine.commit_async(&tx).await?;
        self.save_committed_snapshots(tx, &result, stamped);
        Ok(result)
    }

    /// The engine beneath, for the layers beside this one (replication).
    #[cfg(feature = "nats")]
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// [`sync`](Store::sync) for async code (feature `async`): waits for group commit's sync
    /// of everything written so far instead of leading one on this thread.
    ///
    /// # Errors
    ///
    /// As [`sync`](Store::sync).
    #[cfg(feature = "async")]
    pub async fn sync_async(&self) -> Result<()> {
        self.engine.sync_async().await
    }

    /// Saves `state`, the fold of `stream` up to `version`, as a snapshot of `kind`: for
    /// frameworks that keep their aggregates' snapshots in annal (annal's own
    /// [`Repository`] saves its snapshots the same way). `kind` names what the bytes are
    /// (an aggregate type, with a schema version if it has one); a load asks for the same
    /// kind. Snapshots are a cache: written without fsync (those of up to 64 KiB in
    /// batches of about 64 KiB, the last one at [`close`](Store::close); until their batch
    /// is written they are found in memory, and a crash loses them), the newest
    /// [`Options::snapshots_kept`] per stream and kind retained, and each one checked, at
    /// its first load after an open, against the event it was folded up to, so a snapshot
    /// that outlived its events (a power loss) is never returned. Returns `false` (nothing
    /// saved) when the stream has no event at `version`.
    ///
    /// ```
    /// use annal::{EventData, ExpectedVersion, Options, Store};
    /// # fn main() -> annal::Result<()> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let store = Store::open(tmp.path(), Options::default())?;
    /// for n in 1..=5 {
    ///     store.append("counter-1", ExpectedVersion::Any, &[EventData::new("Added", n.to_string())])?;
    /// }
    /// assert!(store.save_snapshot("counter-1", "Counter/v1", 4, "10")?);
    /// let s = store.load_snapshot("counter-1", "Counter/v1", u64::MAX)?.expect("saved");
    /// assert_eq!((s.version, s.state.as_slice()), (4, &b"10"[..]));
    /// // Resume: fold the events after version 4 onto the state.
    /// assert!(store.load_snapshot("counter-1", "Counter/v1", 3)?.is_none());
    /// assert!(store.load_snapshot("counter-1", "Other", u64::MAX)?.is_none());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a `kind` longer than a
    /// snapshot record holds; [`Error::ReadOnly`](crate::Error::ReadOnly) on a read-only
    /// store; [`Error::Io`](crate::Error::Io) when the snapshot file cannot be written or the
    /// log read.
    pub fn save_snapshot(
        &self,
        stream: &str,
        kind: &str,
        version: u64,
        state: impl Into<Payload>,
    ) -> Result<bool> {
        self.engine.check_writable()?;
        snapshot::save(
            &self.engine,
            &self.es.snapshots,
            stream,
            &snapshot::framework_kind(kind),
            version,
            state.into().0.to_vec(),
            None,
        )
    }

    /// The newest usable snapshot of `stream` of `kind` at or below `at_most_version` (use
    /// `u64::MAX` for the newest), saved by [`save_snapshot`](Store::save_snapshot) or a
    /// transaction's [`snapshot`](Transaction::snapshot); `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`](crate::Error::Corruption) or [`Error::Io`](crate::Error::Io)
    /// reading the log to check it.
    pub fn load_snapshot(
        &self,
        stream: &str,
        kind: &str,
        at_most_version: u64,
    ) -> Result<Option<StoredSnapshot>> {
        snapshot::load(
            &self.engine,
            &self.es.snapshots,
            stream,
            &snapshot::framework_kind(kind),
            0,
            at_most_version,
        )
    }

    /// Sets the metadata of `stream` ([`StreamMetadata`]): which of its events stay readable
    /// (`max_count`, `max_age`, `truncate_before`) and the user's own bytes. It is appended
    /// to the stream's metadata stream (`$$` + its name) in the log, so it is as durable as
    /// an append under the fsync policy, and reads, subscriptions, projections and aggregate
    /// loads honour it from the moment it is acknowledged. `expected` is the version of the
    /// metadata stream ([`stream_metadata`](Store::stream_metadata) returns it), so that two
    /// writers of metadata cannot both win. Returns the metadata stream's new version.
    ///
    /// A stream with any of the three rules set is loaded without snapshots or cached
    /// states: they fold every event, and its state is the fold of the live ones.
    ///
    /// ```
    /// # fn main() -> annal::Result<()> {
    /// use annal::{EventData, ExpectedVersion, Options, ReadOptions, Store, StreamMetadata};
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let store = Store::open(tmp.path(), Options::default())?;
    /// for i in 0..5 {
    ///     store.append("sensor-1", ExpectedVersion::Any, &[EventData::new("Read", format!("{i}"))])?;
    /// }
    /// store.set_stream_metadata("sensor-1", ExpectedVersion::NoStream, StreamMetadata::new().max_count(2))?;
    /// let kept: Vec<u64> = store
    ///     .read_stream("sensor-1", ReadOptions::forward())?
    ///     .map(|e| e.map(|e| e.version))
    ///     .collect::<annal::Result<_>>()?;
    /// assert_eq!(kept, [4, 5]);
    /// assert_eq!(store.stream_metadata("sensor-1")?.map(|(v, m)| (v, m.max_count)), Some((1, Some(2))));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::WrongExpectedVersion`](crate::Error::WrongExpectedVersion) naming the
    /// metadata stream; [`Error::StreamDeleted`](crate::Error::StreamDeleted) after a hard
    /// delete; [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an invalid
    /// stream name, `max_count` or `truncate_before` of 0, custom bytes over 64 KiB, or
    /// `deleted` set; otherwise as [`append`](Store::append).
    pub fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<u64> {
        self.engine.set_stream_metadata(stream, expected, &metadata)
    }

    /// The metadata of `stream` and the version of its metadata stream (what
    /// [`set_stream_metadata`](Store::set_stream_metadata) expects); `None` when it has none.
    /// A deleted stream's says so ([`StreamMetadata::deleted`], or `truncate_before` past
    /// its last version after a soft delete).
    ///
    /// # Errors
    ///
    /// None today.
    pub fn stream_metadata(&self, stream: &str) -> Result<Option<(u64, StreamMetadata)>> {
        Ok(self.engine.stream_metadata(stream))
    }

    /// Deletes `stream`, which must be at `expected` (its version, as for an append):
    /// [`DeleteMode::Soft`] leaves it readable as empty, and a later append continues its
    /// versions; [`DeleteMode::Hard`] writes a tombstone, after which every append to it or
    /// change of its metadata fails with [`Error::StreamDeleted`](crate::Error::StreamDeleted).
    /// Either way its snapshots and cached aggregate states are dropped, and its events stay
    /// in the files until [`scavenge`](Store::scavenge) erases them. Returns the stream's
    /// version when it was deleted (`None`: it had no events).
    ///
    /// # Errors
    ///
    /// [`Error::WrongExpectedVersion`](crate::Error::WrongExpectedVersion);
    /// [`Error::StreamDeleted`](crate::Error::StreamDeleted) when it was hard-deleted
    /// already; otherwise as [`append`](Store::append).
    pub fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<Option<u64>> {
        let version = self.engine.delete_stream(stream, expected, mode)?;
        self.es.snapshots.forget_stream(stream);
        self.es.aggregate_cache.forget_stream(stream);
        Ok(version)
    }

    /// Erases every event that stream metadata no longer keeps (deleted streams, events before
    /// `truncate_before`, past `max_count` or `max_age`, metadata replaced by newer
    /// metadata) from the files, and gives their disk space back: see
    /// [`scavenge_with`](Store::scavenge_with).
    ///
    /// # Errors
    ///
    /// As [`scavenge_with`](Store::scavenge_with).
    pub fn scavenge(&self) -> Result<ScavengeReport> {
        self.scavenge_with(|_| true)
    }

    /// [`scavenge`](Store::scavenge), calling `progress` before each segment (and once at
    /// the end); when it returns `false` the scavenge stops there, and running it again
    /// resumes it.
    ///
    /// It seals the active segment (so that its events can be erased too; the next append
    /// starts a new one) and rewrites each sealed segment holding newly dead events, with
    /// every live event where it was: positions, versions, ids and timestamps do not change,
    /// and `$all` then has gaps where events were erased. Appends, reads and subscriptions go
    /// on meanwhile: readers never see an error or miss a live event. It is background work:
    /// its three threads run at a lower priority, and while appends come in it rests between
    /// segments, so a busy writer keeps most of its speed and the scavenge takes longer. It is crash-safe at
    /// every step (a crash leaves each segment as it was or as rewritten). Then the snapshots
    /// of streams whose events are hidden are dropped from the snapshot files, and projection
    /// checkpoints that folded an erased event are removed (those projections rebuild from
    /// the log when next opened; one running now keeps its state in memory until then).
    ///
    /// After a hard delete and a scavenge, no byte of the deleted events' payloads, metadata
    /// or tags is left in the store's files. (A follower process that has the old segment
    /// mapped keeps its old file alive, unlinked, until it moves on or closes.)
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a read-only store or follower;
    /// [`Error::Io`](crate::Error::Io) when a file cannot be written (each segment is then as
    /// it was, or rewritten: run it again); [`Error::Corruption`](crate::Error::Corruption)
    /// for a damaged segment, which it leaves alone.
    pub fn scavenge_with(
        &self,
        mut progress: impl FnMut(&ScavengeProgress) -> bool,
    ) -> Result<ScavengeReport> {
        let mut report = self.engine.scavenge(&mut progress)?;
        self.engine.while_open(|| {
            self.es
                .snapshots
                .erase(|stream| self.engine.folds_whole(stream))?;
            if let Some(first) = report.first_erased {
                report.projection_checkpoints_removed = crate::es::projection::discard_beyond(
                    self.engine.storage(),
                    &self.engine.dir,
                    first - 1,
                )?;
            }
            Ok(())
        })?;
        Ok(report)
    }

    /// The first position [`Options::retention`](crate::Options::retention) kept: events
    /// before it were dropped (1 when nothing was).
    pub fn retained_from(&self) -> u64 {
        self.engine.retained_from()
    }

    /// Reads the whole log ("$all", positions) per `opts`.
    ///
    /// # Errors
    ///
    /// None today; the iterator yields [`Error::Corruption`](crate::Error::Corruption) or [`Error::Io`](crate::Error::Io) where the log
    /// cannot be read.
    pub fn read_all(&self, opts: ReadOptions) -> Result<AllEvents> {
        Ok(self.engine.read_all(opts))
    }

    /// Reads the events `query` selects, by position (`opts.from` is a position), forward
    /// or backward, up to `opts.limit`: served by the in-memory index of tags and types,
    /// never by a scan of the log ([`Query::all`] reads the whole log, as
    /// [`read_all`](Store::read_all)).
    ///
    /// ```
    /// use annal::{EventData, ExpectedVersion, Options, Query, QueryItem, ReadOptions, Store};
    /// # fn main() -> annal::Result<()> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let store = Store::open(tmp.path(), Options::default())?;
    /// let subscribed = |s: &str| {
    ///     EventData::new("StudentSubscribed", "{}").with_tags(["course:c1", s])
    /// };
    /// store.append("enrolment-1", ExpectedVersion::Any, &[subscribed("student:s1")])?;
    /// store.append("enrolment-2", ExpectedVersion::Any, &[subscribed("student:s2")])?;
    /// let q = Query::items([QueryItem::new().tags(["course:c1"])]);
    /// let students: Vec<Vec<String>> = store
    ///     .read_query(&q, ReadOptions::forward())?
    ///     .map(|e| e.map(|e| e.tags.to_vec()))
    ///     .collect::<annal::Result<_>>()?;
    /// assert_eq!(students.len(), 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// None today; the iterator yields [`Error::Corruption`](crate::Error::Corruption) or
    /// [`Error::Io`](crate::Error::Io) for a record that cannot be read.
    pub fn read_query(&self, query: &Query, opts: ReadOptions) -> Result<QueryEvents> {
        Ok(QueryEvents::new(
            Arc::clone(&self.engine),
            Selection::Query(query.clone()),
            opts,
        ))
    }

    /// Reads the events of every stream of `category`, the streams named `CATEGORY-...`
    /// (`cart` for `cart-42`; KurrentDB's `$ce-cart`), by position as
    /// [`read_query`](Store::read_query) does, through the index.
    ///
    /// # Errors
    ///
    /// As [`read_query`](Store::read_query).
    pub fn read_category(&self, category: &str, opts: ReadOptions) -> Result<QueryEvents> {
        Ok(QueryEvents::new(
            Arc::clone(&self.engine),
            Selection::Category(category.to_string()),
            opts,
        ))
    }

    /// Reads the events of type `event_type` (KurrentDB's `$et-`), by position as
    /// [`read_query`](Store::read_query) does, through the index.
    ///
    /// # Errors
    ///
    /// As [`read_query`](Store::read_query).
    pub fn read_event_type(&self, event_type: &str, opts: ReadOptions) -> Result<QueryEvents> {
        Ok(QueryEvents::new(
            Arc::clone(&self.engine),
            Selection::EventType(event_type.to_string()),
            opts,
        ))
    }

    /// The stream's last version, `None` when it has no events.
    ///
    /// # Errors
    ///
    /// None today: the version comes from the in-memory index.
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        Ok(self.engine.stream_version(stream))
    }

    /// Whether an earlier write or sync failed, so that the store refuses appends until it is
    /// reopened (see [`Error::Poisoned`](crate::Error::Poisoned)).
    pub fn is_poisoned(&self) -> bool {
        self.engine.is_poisoned()
    }

    /// Position of the last acknowledged event, 0 for an empty store.
    pub fn last_position(&self) -> u64 {
        self.engine.last_position()
    }

    /// Every stream with its last version, sorted by name.
    ///
    /// # Errors
    ///
    /// None today: the list comes from the in-memory index.
    pub fn streams(&self) -> Result<Vec<StreamInfo>> {
        let mut v: Vec<StreamInfo> = self
            .engine
            .streams()
            .into_iter()
            // Metadata streams are annal's.
            .filter(|(name, _)| !crate::engine::lifecycle::is_system(name))
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
    /// [`Error::Io`](crate::Error::Io) when a follower cannot list its durable subscriptions'
    /// folder; every other counter is in memory.
    pub fn stats(&self) -> Result<Stats> {
        let log = self.engine.counters();
        let (reclaimable_events, reclaimable_bytes) = self.engine.reclaimable()?;
        let (snapshots, snapshot_bytes) = self.es.snapshots.stats();
        Ok(Stats {
            events: log.last_position,
            streams: log.streams,
            segments: log.segments,
            bytes: log.bytes,
            last_position: log.last_position,
            durable_position: log.durable_position,
            index_memory_bytes: log.index_memory_bytes,
            tag_postings: log.tag_postings,
            tag_index_bytes: log.tag_index_bytes,
            snapshots,
            snapshot_bytes,
            durable_subscriptions: durable::list(&self.engine, &self.es.durables)?,
            follower_subscriptions: durable::list_followers(&self.engine)?,
            segment_syncs: log.segment_syncs,
            reclaimable_events,
            reclaimable_bytes,
        })
    }

    /// Makes every acknowledged event durable (fdatasync), whatever the policy.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the `fdatasync` fails (the store is then poisoned),
    /// [`Error::Poisoned`](crate::Error::Poisoned) after an earlier failure.
    pub fn sync(&self) -> Result<()> {
        self.engine.sync_all()
    }

    /// A repository for aggregate type `A`, its events and snapshots encoded with bincode.
    pub fn aggregate<A: Aggregate>(&self) -> Repository<'_, A> {
        Repository::new(&self.engine, &self.es)
    }

    /// A repository for aggregate type `A` whose events and snapshots use codec `C`.
    pub fn aggregate_with_codec<A: Aggregate, C: Codec>(&self) -> Repository<'_, A, C> {
        Repository::new(&self.engine, &self.es)
    }

    /// Subscribes to the whole log from `from_position` (1: from the beginning): the history,
    /// then live events as they are acknowledged, in position order.
    ///
    /// # Errors
    ///
    /// None today; the subscription yields [`Error::Closed`](crate::Error::Closed) once the store closes.
    pub fn subscribe_all(&self, from_position: u64) -> Result<Subscription> {
        Ok(Subscription::all(Arc::clone(&self.engine), from_position))
    }

    /// Subscribes to one stream from `from_version` (1: from its first event).
    ///
    /// # Errors
    ///
    /// None today; the subscription yields [`Error::Closed`](crate::Error::Closed) once the store closes.
    pub fn subscribe_stream(&self, stream: &str, from_version: u64) -> Result<Subscription> {
        Ok(Subscription::stream(
            Arc::clone(&self.engine),
            stream,
            from_version,
        ))
    }

    /// Subscribes to the events `query` selects from `from_position` on: the history, then
    /// live events as they are acknowledged, in position order, with the guarantees of
    /// [`subscribe_all`](Store::subscribe_all). The query index finds them: events that do
    /// not match are never read.
    ///
    /// # Errors
    ///
    /// None today; the subscription yields [`Error::Closed`](crate::Error::Closed) once the store closes.
    pub fn subscribe_query(&self, query: Query, from_position: u64) -> Result<Subscription> {
        Ok(Subscription::query(
            Arc::clone(&self.engine),
            query,
            from_position,
        ))
    }

    /// Opens the durable subscription `name`, creating it at position 0 if it is new: a
    /// subscription to the whole log that resumes after its last
    /// [`ack`](DurableSubscription::ack)ed position, delivering at least once, in order.
    ///
    /// # Errors
    ///
    /// On a [follower](Store::open_follower) the subscription is the follower's own, kept in
    /// the store directory's `followers/` folder apart from the writer's: any follower
    /// process can open it, one at a time (each handle holds `followers/NAME.lock`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an invalid name or one already open (in this process or, on a follower,
    /// another); [`Error::ReadOnly`](crate::Error::ReadOnly) on a read-only store that is not a follower;
    /// [`Error::Io`](crate::Error::Io) when its ack file cannot be created or read.
    pub fn durable_subscription(&self, name: &str) -> Result<DurableSubscription> {
        durable::open(&self.engine, &self.es.durables, name)
    }

    /// Every durable subscription with its acknowledged position and lag, by name: on a
    /// follower, the followers' ones.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when a follower cannot list its `followers/` folder.
    pub fn durable_subscriptions(&self) -> Result<Vec<DurableInfo>> {
        durable::list(&self.engine, &self.es.durables)
    }

    /// Deletes a durable subscription (which must not be open); false if it did not exist.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an invalid name or one that is open; [`Error::ReadOnly`](crate::Error::ReadOnly)
    /// on a read-only store that is not a follower; [`Error::Io`](crate::Error::Io) when its file cannot be removed.
    pub fn delete_durable_subscription(&self, name: &str) -> Result<bool> {
        durable::delete(&self.engine, &self.es.durables, name)
    }

    /// Opens projection `P`, resuming from its checkpoint (or from position 1 when it has
    /// none, or its [`Projection::VERSION`] changed).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an invalid [`Projection::NAME`]; [`Error::Io`](crate::Error::Io) when its
    /// checkpoint cannot be read.
    pub fn projection<P: Projection>(&self) -> Result<RunningProjection<P>> {
        RunningProjection::open(&self.engine)
    }

    /// What recovery did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.engine.recovery_report()
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        self.engine.dir()
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        self.engine.options()
    }

    /// Syncs and closes the store, reporting a failed final sync. Dropping the store does the
    /// same but cannot report. The directory lock is released here, so the store can be
    /// opened again at once. Subscriptions, iterators and projections still alive go on
    /// delivering what was acknowledged before the close, then end with
    /// [`Error::Closed`](crate::Error::Closed); none of them writes to the directory any
    /// more (a durable subscription's `ack` and a projection's `checkpoint` fail with
    /// `Closed`, so checkpoint or drop projections first).
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the final sync or the `STATE` record fails, [`Error::Poisoned`](crate::Error::Poisoned) when
    /// the store was poisoned.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        // The last batch of snapshots: a cache, so a failure here fails nothing else.
        let _ = self.engine.while_open(|| self.es.snapshots.flush());
        let closed = self.engine.close();
        durable::release_held(&self.es.durables);
        closed
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
