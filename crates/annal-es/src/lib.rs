//! # annal-es
//!
//! [cqrs-es](https://docs.rs/cqrs-es) persistence on [annal](https://docs.rs/annal), the
//! embedded event store: what postgres-es is for PostgreSQL, with the store in your
//! process. The public API mirrors postgres-es's, so a postgres-es application switches by
//! renaming: `PostgresEventRepository::new(pool)` becomes
//! [`AnnalEventRepository::new`]`(store)`, `PostgresViewRepository` becomes
//! [`AnnalViewRepository`], `postgres_cqrs` becomes [`annal_cqrs`].
//!
//! ```
//! use std::sync::Arc;
//! use annal::{Options, Store};
//! use annal_es::{annal_cqrs, AnnalViewRepository};
//! use cqrs_es::doc::{MyAggregate, MyCommands, MyService};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! let store = Arc::new(Store::open(tmp.path(), Options::default())?);
//! let cqrs = annal_cqrs::<MyAggregate>(Arc::clone(&store), vec![], MyService);
//! cqrs.execute("agg-1", MyCommands::DoSomething).await?;
//! assert_eq!(store.stream_version("MyAggregate-agg-1")?, Some(1));
//! # Ok(()) }
//! ```
//!
//! ## How aggregates are stored
//!
//! - Each aggregate instance is one annal stream, `TYPE-ID` (the type escaped so that it
//!   holds no `-`), whose versions are cqrs-es's sequences; the aggregate type is the
//!   stream's category, so `stream_all_events` reads through annal's category index.
//! - An event's type, payload and metadata (both JSON) are the annal event's; its
//!   `event_version` is a tag, `cqrs-es:event_version=VERSION`.
//! - A commit is one annal transaction, all or nothing: its events with the version the
//!   aggregate was loaded at as the expected version (a stale one is
//!   [`AnnalAggregateError::OptimisticLock`], cqrs-es's `AggregateConflict`), and, for
//!   snapshot and aggregate stores, the snapshot, through annal's snapshot API. Commits are
//!   completed by annal's group commit (`Store::commit_async`): concurrent commands share
//!   fsyncs, and no thread waits per command.
//! - Snapshots are annal's: a cache, written after the commit's frame without a sync of
//!   their own. If a crash takes the newest one away, the next load rebuilds the aggregate
//!   from its events (see [`AnnalEventRepository`]'s `get_snapshot`).
//! - Views ([`AnnalViewRepository`]) are streams too, `view~NAME-ID`: each update appends the
//!   whole view.

mod error;
mod event_repository;
mod names;
mod view_repository;

use std::sync::Arc;

use annal::Store;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, CqrsFramework, Query};

pub use error::AnnalAggregateError;
pub use event_repository::{
    AnnalEventRepository, DEFAULT_STREAMING_CHANNEL_SIZE, EVENT_VERSION_TAG, SNAPSHOT_TAG,
};
pub use view_repository::AnnalViewRepository;

/// A cqrs-es framework on annal, as postgres-es's `PostgresCqrs`.
pub type AnnalCqrs<A> = CqrsFramework<A, PersistedEventStore<AnnalEventRepository, A>>;

/// A cqrs-es framework whose aggregates are rebuilt from all their events on each command.
pub fn annal_cqrs<A: Aggregate>(
    store: Arc<Store>,
    query_processor: Vec<Box<dyn Query<A>>>,
    services: A::Services,
) -> AnnalCqrs<A> {
    let repo = AnnalEventRepository::new(store);
    CqrsFramework::new(
        PersistedEventStore::new_event_store(repo),
        query_processor,
        services,
    )
}

/// A cqrs-es framework that snapshots each aggregate every `snapshot_size` events and
/// loads from the newest snapshot plus the events after it.
pub fn annal_snapshot_cqrs<A: Aggregate>(
    store: Arc<Store>,
    query_processor: Vec<Box<dyn Query<A>>>,
    snapshot_size: usize,
    services: A::Services,
) -> AnnalCqrs<A> {
    let repo = AnnalEventRepository::new(store);
    CqrsFramework::new(
        PersistedEventStore::new_snapshot_store(repo, snapshot_size),
        query_processor,
        services,
    )
}

/// A cqrs-es framework that snapshots each aggregate with every commit and loads from the
/// snapshot alone.
pub fn annal_aggregate_cqrs<A: Aggregate>(
    store: Arc<Store>,
    query_processor: Vec<Box<dyn Query<A>>>,
    services: A::Services,
) -> AnnalCqrs<A> {
    let repo = AnnalEventRepository::new(store);
    CqrsFramework::new(
        PersistedEventStore::new_aggregate_store(repo),
        query_processor,
        services,
    )
}

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
