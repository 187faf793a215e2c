//! # annal-disintegrate
//!
//! A [disintegrate](https://docs.rs/disintegrate) event store on
//! [annal](https://docs.rs/annal), the embedded event store: what disintegrate-postgres is
//! for PostgreSQL, with the store in your process. Disintegrate's decisions are Dynamic
//! Consistency Boundaries: a decision reads the events its state query selects by type and
//! domain identifier, and its events are appended only if no event that query selects was
//! appended since. annal does that natively: domain identifiers are annal tags, the query is
//! an annal [`Query`], and the check is an [`AppendCondition`] decided in the same
//! transaction as the append, under group commit.
//!
//! ```
//! use std::sync::Arc;
//! use annal::{Options, Store};
//! use annal_disintegrate::AnnalEventStore;
//! use disintegrate::serde::json::Json;
//! use disintegrate::{query, Event, EventStore, StreamItem};
//! use futures::StreamExt;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
//! enum CartEvent {
//!     ItemAdded { #[id] cart_id: String, #[id] item_id: String },
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! let store = Arc::new(Store::open(tmp.path(), Options::default())?);
//! let events = AnnalEventStore::new(store, Json::<CartEvent>::default());
//! let added = CartEvent::ItemAdded { cart_id: "c1".into(), item_id: "i1".into() };
//! let q = query!(CartEvent; cart_id == "c1");
//! events.append(vec![added.clone()], q.clone(), 0).await?;
//! // The same decision, taken again on what it read before (nothing): refused.
//! let stale = events.append(vec![added], q.clone(), 0).await;
//! assert!(matches!(stale, Err(annal_disintegrate::Error::Concurrency)));
//! let items: Vec<_> = events.stream(&q).collect().await;
//! assert!(matches!(items.last(), Some(Ok(StreamItem::End(1)))));
//! # Ok(()) }
//! ```
//!
//! ## How events are stored
//!
//! - Every event goes to one annal stream (`disintegrate` by default,
//!   [`with_stream`](AnnalEventStore::with_stream) to choose): disintegrate has no streams;
//!   a decision's consistency boundary is its query.
//! - An event's type is [`Event::name`], its payload is what the serializer makes of it
//!   (`Json` in the examples), and each of its domain identifiers is a tag, `ident=value`.
//! - An event's id is its annal position: ids start at 1 and increase with each append,
//!   and a stream of events ends with `StreamItem::End(id)`, the position up to which
//!   events were read (the version a decision then appends against).
//! - A query's identifiers apply, for each event type, only where that type declares them
//!   (as disintegrate-postgres does), and an event matches when its type is one of the
//!   filter's, every such identifier is on it, and its id is past the filter's origin.

mod error;
mod event_store;
mod query;

pub use error::Error;
pub use event_store::{AnnalEventId, AnnalEventStore, DEFAULT_STREAM};

use disintegrate::serde::Serde;
use disintegrate::{DecisionMaker, Event, EventSourcedStateStore, SnapshotConfig};

#[doc(no_inline)]
pub use annal::{AppendCondition, Query};

/// A decision maker on annal, as disintegrate-postgres's `PgDecisionMaker`.
pub type AnnalDecisionMaker<E, S, SN> =
    DecisionMaker<EventSourcedStateStore<AnnalEventId, E, AnnalEventStore<E, S>, SN>>;

/// A decision maker over `event_store`, with `snapshot_config` (`disintegrate::NoSnapshot`,
/// or a `WithSnapshot`), as disintegrate-postgres's `decision_maker`.
pub fn decision_maker<E, S, SN>(
    event_store: AnnalEventStore<E, S>,
    snapshot_config: SN,
) -> AnnalDecisionMaker<E, S, SN>
where
    E: Event + Send + Sync + Clone,
    S: Serde<E> + Clone + Send + Sync,
    SN: SnapshotConfig + Clone,
{
    DecisionMaker::new(EventSourcedStateStore::new(event_store, snapshot_config))
}

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
