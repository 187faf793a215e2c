//! How a store is opened: durability policy, segment size, limits.

use std::time::Duration;

use crate::error::{Error, Result};

/// When appended data is made durable with `fdatasync`.
///
/// Under every policy an append hands its bytes to the operating system before it returns, so an
/// acknowledged append survives a crash of the process (`kill -9`). The policies differ in what
/// survives a crash of the operating system or a power loss:
///
/// | policy | process crash | OS crash / power loss |
/// |---|---|---|
/// | `Always` | nothing acknowledged is lost | nothing acknowledged is lost |
/// | `EveryEvents(n)` | nothing acknowledged is lost | at most the last `n` acknowledged events are lost |
/// | `Interval(d)` | nothing acknowledged is lost | events acknowledged in about the last `d` (plus one fdatasync) may be lost |
/// | `Never` | nothing acknowledged is lost | anything since the last `sync()`, close or background sync of a full segment may be lost |
///
/// Whatever is lost is always a suffix: after recovery the log is a prefix of what was
/// acknowledged, with no gaps and no half-written append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// An append returns only after its data is durable. Concurrent appenders share one
    /// `fdatasync` (group commit), so throughput grows with the number of appending threads.
    Always,
    /// Appends return once written to the OS; a background thread makes them durable every
    /// `Duration`.
    Interval(Duration),
    /// Appends return once written to the OS; a background thread syncs as events accumulate,
    /// and an append waits for a sync rather than let more than `n` acknowledged events be
    /// unsynced.
    EveryEvents(u64),
    /// The OS decides when data reaches the disk; [`Store::sync`](crate::Store::sync) and
    /// closing the store flush, and a full segment is synced in the background once the next
    /// one is half full.
    Never,
}

/// Options for [`Store::open`](crate::Store::open).
///
/// A plain struct with public fields: `Options { fsync: FsyncPolicy::Never, ..Options::default() }`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Durability policy; default [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
    /// Maximum size of a segment file in bytes (default 64 MiB). Segments are created
    /// sparse at this size, and disk blocks are allocated a few MiB ahead of the writes. A
    /// single append must fit in one segment.
    pub segment_size: u64,
    /// Maximum size of one event's payload plus metadata in bytes (default 16 MiB).
    pub max_event_size: usize,
    /// Write an index checkpoint for each sealed segment and load them on open (default
    /// true). Without them, every open scans the whole log.
    pub index_checkpoints: bool,
    /// Keep the query index (default true): the lists of events by tag, type and category
    /// behind [`Store::read_query`](crate::Store::read_query), `read_category`,
    /// `read_event_type`, `subscribe_query` and append conditions. About 13 bytes per event
    /// plus 6 per tag, and the time to rebuild them at open. Off, those fail with
    /// [`Error::InvalidArgument`]; tags are still stored and read back.
    pub query_index: bool,
    /// An aggregate's state is saved as a snapshot once its stream has moved this many events
    /// past its last snapshot (checked on load and execute). Default 1000; 0 turns snapshots
    /// off.
    pub snapshot_every: u64,
    /// How many snapshots are kept per stream and aggregate type (default 4): the newest serves
    /// loads, older ones serve loads of past versions. At least 1.
    pub snapshots_kept: usize,
    /// How many recently used aggregate states are cached in memory (default 1024; 0: none).
    pub aggregate_cache: usize,
    /// A running projection saves its state and position every this many events (default
    /// 1000; 0: only when asked and when dropped).
    pub projection_checkpoint_every: u64,
    /// Open without the directory lock and without changing any file (default false), to read
    /// a store that another process may be writing: the store shows the log as it was at open
    /// (a later append by the other process is not seen), an append in progress at the end of
    /// the active segment ends the log there (nothing is cut; damage that `STATE` or a later
    /// frame shows was synced still fails the open, as a writable open would), and appends,
    /// durable subscriptions and checkpoints fail with [`Error::ReadOnly`].
    pub read_only: bool,
    /// While the store is open, `STATE` records the synced position again once it has moved
    /// this many events past the last record (default 4096; 0: only at open, segment rolls
    /// and close). Each record is a durable file replacement (two `fdatasync`s), made by the
    /// sync that got there. It bounds what a crash can hide: synced events at the end of the
    /// log that vanish entirely after a crash (zeroed, or the file cut at a frame boundary)
    /// are detected when `STATE` or a later frame vouches for them, so at most this many
    /// (plus the last group-commit batch) can go unnoticed.
    pub record_durable_every: u64,
    /// Let the owner's group read the store (default false). [`Store::open`](crate::Store::open)
    /// creates every directory 0700 and every file 0600, the owner only, whatever the umask;
    /// with this on, 0750 and 0640. Existing files keep their modes, and on opening, files
    /// that are more readable than this allows are listed in
    /// [`RecoveryReport::readable_by_others`](crate::RecoveryReport::readable_by_others).
    /// With [`Store::open_with_storage`](crate::Store::open_with_storage) the storage decides
    /// the modes ([`FsStorage::with_group_access`](crate::storage::FsStorage::with_group_access));
    /// this still sets what the check allows.
    pub share_with_group: bool,
    /// Follow a writer in another process (default false; implies [`read_only`]): reads,
    /// subscriptions and projections see each event the writer acknowledges, shortly after it
    /// does, and never one it has not. Takes no lock and changes no file. See
    /// [`Store::open_follower`](crate::Store::open_follower).
    ///
    /// [`read_only`]: Options::read_only
    pub follow: bool,
    /// How much of the whole log to keep (default: all of it). See [`Retention`].
    pub retention: Retention,
}

/// How much of the whole log a store keeps ([`Options::retention`]), as Kafka's retention
/// does: the oldest sealed segments past it have their events dropped (each rewritten as one
/// erased frame: its positions stay taken, its disk space comes back), after every segment
/// roll and at every [`Store::scavenge`](crate::Store::scavenge). Durable subscriptions and
/// projections that had not reached the dropped events are told
/// ([`Error::BehindRetention`](crate::Error::BehindRetention)), never moved on silently, and
/// so is a load of an aggregate that lost events to it.
///
/// ```
/// use annal::{Options, Retention};
/// use std::time::Duration;
/// let opts = Options::default().retention(
///     Retention::new().max_age(Duration::from_secs(7 * 86_400)).max_bytes(10 << 30),
/// );
/// assert_eq!(opts.retention.max_bytes, Some(10 << 30));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Drop a sealed segment once its newest event is older than this.
    pub max_age: Option<Duration>,
    /// Drop the oldest sealed segments while the segments not dropped hold more than this
    /// many bytes of frames (the active segment and the newest sealed one are always kept).
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// Keep everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drop segments whose events are all older than `age`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Drop the oldest segments beyond `bytes` of log.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Whether it keeps everything.
    pub fn keeps_all(&self) -> bool {
        self.max_age.is_none() && self.max_bytes.is_none()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: FsyncPolicy::Always,
            segment_size: 64 * 1024 * 1024,
            max_event_size: 16 * 1024 * 1024,
            index_checkpoints: true,
            query_index: true,
            snapshot_every: 1000,
            snapshots_kept: 4,
            aggregate_cache: 1024,
            projection_checkpoint_every: 1000,
            read_only: false,
            record_durable_every: 4096,
            share_with_group: false,
            follow: false,
            retention: Retention::new(),
        }
    }
}

/// Smallest accepted segment size; tiny segments are for tests that want frequent rolls.
pub const MIN_SEGMENT_SIZE: u64 = 256;
/// Largest accepted segment size: event locations keep 40 bits of offset.
pub const MAX_SEGMENT_SIZE: u64 = (1 << 40) - 1;

impl Options {
    /// Sets the fsync policy.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// Sets how much of the whole log to keep ([`Retention`]).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets the segment size in bytes.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Sets the maximum payload plus metadata size of one event.
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.max_event_size = bytes;
        self
    }

    /// Turns the query index on or off (see [`Options::query_index`]).
    pub fn query_index(mut self, on: bool) -> Self {
        self.query_index = on;
        self
    }

    /// Turns index checkpoints on or off.
    pub fn index_checkpoints(mut self, on: bool) -> Self {
        self.index_checkpoints = on;
        self
    }

    /// Sets how many events apart snapshots are taken (0: never).
    pub fn snapshot_every(mut self, events: u64) -> Self {
        self.snapshot_every = events;
        self
    }

    /// Opens read-only (see [`Options::read_only`]).
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// Follows a writer in another process (see [`Options::follow`]); implies read-only.
    pub fn follow(mut self, on: bool) -> Self {
        self.follow = on;
        if on {
            self.read_only = true;
        }
        self
    }

    /// Lets the owner's group read the store (see [`Options::share_with_group`]).
    pub fn share_with_group(mut self, on: bool) -> Self {
        self.share_with_group = on;
        self
    }

    /// Sets how many aggregate states are cached in memory.
    pub fn aggregate_cache(mut self, states: usize) -> Self {
        self.aggregate_cache = states;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(Error::InvalidArgument(format!(
                "segment_size {} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                self.segment_size
            )));
        }
        if self.follow && !self.read_only {
            return Err(Error::InvalidArgument(
                "Options::follow needs read_only too (Options::follow(true) sets both)".into(),
            ));
        }
        match self.fsync {
            FsyncPolicy::EveryEvents(0) => Err(Error::InvalidArgument(
                "FsyncPolicy::EveryEvents(0): use FsyncPolicy::Always".into(),
            )),
            FsyncPolicy::Interval(d) if d.is_zero() => Err(Error::InvalidArgument(
                "FsyncPolicy::Interval(0): use FsyncPolicy::Always".into(),
            )),
            _ => Ok(()),
        }
    }
}
