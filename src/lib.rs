//! # annal: an embedded, append-only event store
//!
//! annal stores events, grouped into streams, in a log of CRC-checked segment files inside
//! your process. Every append gets a dense global *position* and a dense per-stream *version*;
//! appends check an [`ExpectedVersion`] so two writers can't both win; reads go through an
//! in-memory stream index, or over the whole log in position order.
//!
//! ```
//! use annal::{EventData, ExpectedVersion, Options, ReadOptions, Store};
//!
//! # fn main() -> annal::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path();
//! let store = Store::open(dir, Options::default())?;
//!
//! // A new stream: expect that it does not exist yet.
//! let r = store.append("cart-42", ExpectedVersion::NoStream, &[
//!     EventData::new("CartCreated", "{}"),
//!     EventData::new("ItemAdded", &br#"{"sku":"A-1"}"#[..]),
//! ])?;
//! assert_eq!((r.first_version, r.last_version), (1, 2));
//!
//! // A second writer that loaded version 1 loses: nothing is written.
//! let stale = store.append("cart-42", ExpectedVersion::Exact(1), &[
//!     EventData::new("ItemRemoved", "{}"),
//! ]);
//! assert!(matches!(stale, Err(annal::Error::WrongExpectedVersion { actual: Some(2), .. })));
//!
//! // Rehydrate: fold the stream's events.
//! let types: Vec<String> = store
//!     .read_stream("cart-42", ReadOptions::forward_from(1))?
//!     .map(|e| e.map(|e| e.event_type))
//!     .collect::<annal::Result<_>>()?;
//! assert_eq!(types, ["CartCreated", "ItemAdded"]);
//! assert_eq!(store.stream_version("cart-42")?, Some(2));
//! # Ok(()) }
//! ```
//!
//! ## Aggregates and snapshots
//! An [`Aggregate`] is state folded from one stream's events, with commands that produce new
//! events. [`Store::aggregate`] gives a [`Repository`]: [`Repository::load`] rehydrates from
//! the latest snapshot (saved every [`Options::snapshot_every`] events, 1000 by default) plus
//! the events after it, [`Repository::load_at`] gives the state as of a past version, and
//! [`Repository::execute`] runs a command and appends its events with
//! [`ExpectedVersion::Exact`], retrying on conflicts. Snapshots are a cache: a load always
//! equals a full replay.
//!
//! ## Subscriptions and projections
//! [`Store::subscribe_all`] and [`Store::subscribe_stream`] deliver the history from a point,
//! then live events, in order, with no gap and no duplicate. [`Store::durable_subscription`]
//! remembers what its consumer acknowledged and resumes after it (at least once, in order).
//! A [`Projection`] folds the whole log into a read model and checkpoints as it goes.
//!
//! ## Durability
//! Choose an [`FsyncPolicy`] in [`Options`]. The default, [`FsyncPolicy::Always`], returns from
//! an append only once its frame is on disk; concurrent appenders share one `fdatasync`
//! (group commit). Every policy survives a crash of the process; the policy decides what
//! survives an OS crash or power loss (see the table on [`FsyncPolicy`]). Readers of a
//! `Store` only ever see acknowledged events (a read-only open in another process sees every
//! complete frame in the files, acknowledged or not yet: see the README's Limits). After a
//! failed write or sync the store is poisoned ([`Error::Poisoned`]) until reopened.
//!
//! ## Recovery, verify and repair
//! Opening a store scans its active segment (sealed ones come from index checkpoints). A torn
//! tail, even one of several frames reordered by a power loss, is cut (see
//! [`RecoveryReport`]); damage to data known to have been synced, and synced data that is
//! missing (a deleted or truncated segment: the `STATE` file records what was durable),
//! fails the open with [`Error::Corruption`], naming the file and byte offset, and changes
//! nothing on disk. [`verify`] checks a store directory without changing anything and reports
//! every problem; [`repair`] fixes what an open would, and cuts damaged synced data only with
//! [`RepairOptions::accept_loss`], after copying it to a quarantine folder.
//!
//! ## Testing crash safety
//! `storage::SimDisk` (feature `sim`) is a simulated disk that loses, tears and reorders
//! unsynced writes, fails calls and rots bits; the test suite runs thousands of crash
//! simulations on it.
//!
//! ## Design and format
//! [`docs::format`] (the repository's `FORMAT.md`) describes every byte annal writes, and
//! [`docs::design`] (`docs/design.md`) the layers, the invariants, the lock order and the
//! recovery rules.
//!
//! ## Features
//! - `json` (on by default): the [`Json`] codec, and with it the `serde_json` dependency.
//!   `annal = { version = "0.1", default-features = false }` leaves both out; the store, the
//!   [`Bincode`] codec and everything else stay.
//! - `uuid` (off): [`EventData::with_uuid`] and [`RecordedEvent::uuid`], for ids that are
//!   `uuid::Uuid`s (an id is a `u128` either way).
//! - `async` (off): [`Store::append_async`], [`Store::commit_async`],
//!   [`Repository::execute_async`] and subscriptions as `futures::Stream`s
//!   ([`Subscription::into_stream`]), completed by group commit with no thread blocked per
//!   waiting task, on any runtime; adds the `futures-core` dependency.
//! - `sim` (off): `storage::SimDisk`, the simulated disk of the crash tests, for testing
//!   your own code's crash safety over annal.
//!
//! ## Layout
//! Everything is re-exported at the crate root; the public modules are [`storage`] and
//! [`docs`] (the format and the design, to read).
//! - The store: [`Store`], [`Options`] and [`FsyncPolicy`], [`Stats`], [`StreamInfo`].
//! - Events: [`EventData`] (what you append, its bytes any [`Payload`]), [`RecordedEvent`]
//!   (what you read, its bytes [`Bytes`], re-exported from the `bytes` crate),
//!   [`ExpectedVersion`], [`AppendResult`]; reads take [`ReadOptions`] (with a
//!   [`Direction`]) and return [`StreamEvents`] or [`AllEvents`]; the limits
//!   [`MAX_STREAM_NAME_LEN`], [`MAX_EVENT_TYPE_LEN`], [`MAX_TAG_LEN`], [`MAX_TAGS`],
//!   [`MIN_SEGMENT_SIZE`] and
//!   [`MAX_SEGMENT_SIZE`].
//! - Event sourcing: [`Aggregate`] and [`Repository`] (with [`Loaded`], [`Executed`],
//!   [`ExecuteError`]), [`Codec`] with [`Bincode`] and [`Json`], [`Subscription`], [`DurableSubscription`]
//!   and [`DurableInfo`], [`Projection`] and [`RunningProjection`].
//! - Integrity: [`RecoveryReport`]; [`verify`] and its [`VerifyReport`] of [`Finding`]s,
//!   each of a [`Severity`], with an overall [`Health`]; [`repair`] with [`RepairOptions`], and
//!   its [`RepairReport`] with the [`Cut`] it made or would make.
//! - Errors: one [`Error`] enum, with [`Result`].
//! - [`storage`]: the I/O seam every file access goes through, and (feature `sim`) the
//!   simulated disk.
//!
//! Inside, an engine (the log) sits beneath the event-sourcing layer, beneath the facade:
//! `docs/design.md` draws it.

mod cast;
pub mod docs;
mod engine;
mod error;
mod es;
mod event;
mod lifecycle;
mod options;
mod query;
#[cfg(feature = "nats")]
mod replication;
pub mod storage;
mod store;
mod transaction;

pub use bytes::Bytes;
pub use engine::append::{MAX_EVENT_TYPE_LEN, MAX_STREAM_NAME_LEN, MAX_TAG_LEN, MAX_TAGS};
pub use engine::query_read::QueryEvents;
pub use engine::read::{AllEvents, Direction, ReadOptions, StreamEvents};
pub use engine::recovery::RecoveryReport;
pub use engine::repair::{Cut, RepairOptions, RepairReport, repair};
pub use engine::scavenge::{ScavengeProgress, ScavengeReport};
pub use engine::verify::{Finding, Health, Severity, VerifyReport, verify};
pub use error::{Error, Result};
pub use es::aggregate::{Aggregate, ExecuteError, Executed, Loaded, Repository};
#[cfg(feature = "json")]
pub use es::codec::Json;
pub use es::codec::{Bincode, Codec};
pub use es::durable::{DurableInfo, DurableSubscription};
#[cfg(feature = "async")]
pub use es::event_stream::EventStream;
pub use es::projection::{Projection, RunningProjection};
pub use es::snapshot::StoredSnapshot;
pub use es::subscription::Subscription;
pub use event::{AppendResult, EventData, ExpectedVersion, Payload, RecordedEvent, Tags};
pub use lifecycle::{DeleteMode, StreamMetadata};
pub use options::{FsyncPolicy, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, Options, Retention};
pub use query::{Query, QueryItem};
#[cfg(feature = "nats")]
pub use replication::{
    Relay, RelayOptions, RelayProgress, RelayReport, Replica, ReplicaOptions, ReplicaReport,
};
pub use store::{Stats, Store, StreamInfo};
pub use transaction::{AppendCondition, CommitResult, Transaction};

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
