//! The crate's one error type.

use std::path::PathBuf;

use crate::event::ExpectedVersion;

/// Everything that can go wrong in annal, with the context a person needs to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("I/O error: {op} {path}: {source}")]
    Io {
        /// What annal was doing ("write", "fdatasync", "open", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Data on disk fails a checksum or an invariant. Never returned as if valid.
    #[error("corruption in {segment} at byte {offset}: {reason}")]
    Corruption {
        /// The file holding the bad data.
        segment: PathBuf,
        /// Byte offset of the bad frame, record or header within that file.
        offset: u64,
        /// What check failed.
        reason: String,
    },

    /// An earlier write or fdatasync failed; the store refuses writes until it is reopened.
    ///
    /// After a failed fsync the kernel may already have dropped the dirty pages, so retrying
    /// could report success for data that is gone. Reopening recovers from what is really on disk.
    #[error("store is poisoned after a failed {cause}; reopen it to recover")]
    Poisoned {
        /// The failure that poisoned the store.
        cause: String,
    },

    /// An argument was rejected before anything was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The stream's version did not match the expected version; nothing was written.
    #[error("wrong expected version for stream {stream:?}: expected {expected}, actual {}", match actual { Some(v) => v.to_string(), None => "no stream".to_string() })]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version at the time (`None`: the stream has no events).
        actual: Option<u64>,
    },

    /// A transaction's [`AppendCondition`](crate::AppendCondition) failed: an event its
    /// query selects was appended after the position the decision read. Nothing was written.
    #[error("append condition failed: the event at position {position} matches its query{}", match after { Some(a) => format!(" and is after position {a}"), None => String::new() })]
    AppendConditionFailed {
        /// The first such event.
        position: u64,
        /// The condition's position (`None`: any matching event fails it).
        after: Option<u64>,
    },

    /// Another process (or another `Store` in this one) has the directory open.
    #[error("store directory {path} is locked {}", locked_by(*holder))]
    Locked {
        /// The store directory.
        path: PathBuf,
        /// The process holding the lock, as it wrote its id into the `LOCK` file (`None`
        /// when the file names none, as on a simulated disk).
        holder: Option<u32>,
    },

    /// An event id was reused for a different event: the event the id names is already in
    /// the stream, where a retry of this append would find it, with another type, payload or
    /// metadata. Nothing was written.
    #[error(
        "event id {id:032x} names the event at position {position} of stream {stream:?}, \
         which has another type, payload or metadata: an id must name one event"
    )]
    IdReused {
        /// The stream.
        stream: String,
        /// The id.
        id: u128,
        /// Where the event with that id is.
        position: u64,
    },

    /// A follower stopped following its writer: the writer's log no longer agrees with what
    /// the follower read (a writer restarted on a shorter log), or the published bytes did not
    /// check. Reopen the follower.
    #[error("follower of {path} stopped: {reason}")]
    Diverged {
        /// The store directory.
        path: PathBuf,
        /// What happened.
        reason: String,
    },

    /// An aggregate's event or state could not be encoded or decoded.
    #[error("codec error in stream {stream:?}{}: {reason}", version.map(|v| format!(" at version {v}")).unwrap_or_default())]
    Codec {
        /// The stream involved.
        stream: String,
        /// The event's version, when it was an event.
        version: Option<u64>,
        /// What the codec said.
        reason: String,
    },

    /// The store was opened read-only ([`Options::read_only`](crate::Options::read_only)).
    #[error("store {path} is open read-only")]
    ReadOnly {
        /// The store directory.
        path: PathBuf,
    },

    /// The stream was hard-deleted ([`DeleteMode::Hard`](crate::DeleteMode::Hard)): it takes
    /// no more appends and no metadata changes.
    #[error("stream {stream:?} was deleted (hard): it takes no appends or metadata changes")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },

    /// A durable subscription or projection had not reached events that retention
    /// ([`Options::retention`](crate::Options::retention)) dropped, or an aggregate lost
    /// events to it: going on would skip them.
    #[error(
        "{name} is behind the retention point: it is at position {position}, and events before position {retained_from} were dropped by retention"
    )]
    BehindRetention {
        /// What is behind: `durable subscription "NAME"`, `projection "NAME"`, or
        /// `stream "NAME"` for an aggregate.
        name: String,
        /// Where it is: its acknowledged position (a stream: 0).
        position: u64,
        /// The first position retention kept.
        retained_from: u64,
    },

    /// The store is a replica ([`Replica`](crate::Replica)): only its replication writes
    /// to it; applications read it.
    #[error(
        "store {path} is a replica of JetStream stream {js_stream:?}: only its replication writes to it"
    )]
    IsReplica {
        /// The store directory.
        path: PathBuf,
        /// The JetStream stream it replicates.
        js_stream: String,
    },

    /// Replication (the relay to NATS JetStream, or a replica built from it) met something
    /// it must not go past: a gap or a reordering in the positions, a message that is not
    /// one a relay wrote, another store's messages, or the server's refusal.
    #[error("replication of JetStream stream {js_stream:?}{}: {reason}", if *sequence > 0 { format!(" at message {sequence}") } else { String::new() })]
    Replication {
        /// The JetStream stream.
        js_stream: String,
        /// The JetStream sequence of the message involved (0: none in particular).
        sequence: u64,
        /// What happened.
        reason: String,
    },

    /// The store has been closed.
    #[error("store is closed")]
    Closed,
}

/// `Result` with annal's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        segment: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            segment: segment.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Who holds a store's lock, in words.
fn locked_by(holder: Option<u32>) -> String {
    match holder {
        Some(pid) if pid == std::process::id() => {
            format!("by this process ({pid}): another Store handle has it open")
        }
        Some(pid) => format!("by process {pid}"),
        None => "by another process or handle".to_string(),
    }
}
