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
//!     EventData::new("CartCreated", &b"{}"[..]),
//!     EventData::new("ItemAdded", &br#"{"sku":"A-1"}"#[..]),
//! ])?;
//! assert_eq!((r.first_version, r.last_version), (1, 2));
//!
//! // A second writer that loaded version 1 loses: nothing is written.
//! let stale = store.append("cart-42", ExpectedVersion::Exact(1), &[
//!     EventData::new("ItemRemoved", &b"{}"[..]),
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
//! ## Durability
//! Choose an [`FsyncPolicy`] in [`Options`]. The default, [`FsyncPolicy::Always`], returns from
//! an append only once its frame is on disk; concurrent appenders share one `fdatasync`
//! (group commit). Every policy survives a crash of the process. Readers only ever see
//! acknowledged events. After a failed write or sync the store is poisoned
//! ([`Error::Poisoned`]) until reopened.
//!
//! ## Recovery
//! Opening a store scans its segments. A torn write at the very end of the log is cut (see
//! [`RecoveryReport`]); damage anywhere else fails the open with [`Error::Corruption`], naming
//! the file and byte offset, and changes nothing on disk.
//!
//! ## Layout
//! One module per concept: [`storage`] (the I/O seam), `frame` (byte layouts, see FORMAT.md),
//! `segment`, `log` (write path), `recovery`, `commit` (group commit), `index` (stream index),
//! `read`, `store`.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod aggregate;
mod checkpoint;
mod codec;
mod commit;
mod durable;
mod error;
mod event;
mod frame;
mod index;
mod log;
mod options;
mod projection;
mod read;
mod recovery;
mod segment;
mod snapshot;
pub mod storage;
mod store;
mod subscription;

pub use aggregate::{Aggregate, ExecuteError, Executed, Loaded, Repository};
pub use codec::{Bincode, Codec};
pub use durable::{DurableInfo, DurableSubscription};
pub use error::{Error, Result};
pub use event::{AppendResult, EventData, ExpectedVersion, RecordedEvent};
pub use options::{FsyncPolicy, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, Options};
pub use projection::{Projection, RunningProjection};
pub use read::{AllEvents, Direction, ReadOptions, StreamEvents};
pub use recovery::RecoveryReport;
pub use store::{MAX_EVENT_TYPE_LEN, MAX_STREAM_NAME_LEN, Stats, Store, StreamInfo};
pub use subscription::Subscription;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
