//! Event sourcing over the engine: subscriptions, durable subscriptions, projections,
//! aggregates and their snapshots.
//!
//! Every module here works through the engine's handle ([`Engine`]): it appends and reads
//! events, waits for the published position, and keeps its own small files beside the log.
//! [`EsState`] is this layer's share of an open store, and [`EsState::open`] its recovery
//! step, run once the engine has recovered the log.

pub(crate) mod aggregate;
pub(crate) mod codec;
pub(crate) mod durable;
pub(crate) mod projection;
pub(crate) mod snapshot;
pub(crate) mod subscription;

use std::sync::Arc;

use parking_lot::Mutex;

use crate::engine::Engine;
use crate::error::Result;
use aggregate::StateCache;
use durable::Registry;
use snapshot::SnapshotStore;

/// What the event-sourcing layer keeps for an open store.
#[derive(Debug)]
pub(crate) struct EsState {
    pub(crate) snapshots: SnapshotStore,
    pub(crate) durables: Arc<Mutex<Registry>>,
    pub(crate) aggregate_cache: StateCache,
}

impl EsState {
    /// The event-sourcing layer's recovery step, against the log `engine` recovered: loads
    /// the snapshot files, loads the durable subscriptions and pulls back any ack past the end
    /// of the log, and discards projection checkpoints past it (their events were lost, and
    /// new events will take those positions). A read-only engine changes no file.
    pub(crate) fn open(engine: &Engine) -> Result<EsState> {
        let options = engine.options();
        let write = !options.read_only;
        let last = engine.last_position();
        let storage = engine.storage_handle();
        let snapshots = SnapshotStore::open(
            Arc::clone(&storage),
            engine.dir(),
            options.snapshots_kept.max(1),
            write,
        )?;
        let durables = Registry::open(storage.as_ref(), engine.dir(), last, write)?;
        if write {
            projection::discard_beyond(storage.as_ref(), engine.dir(), last)?;
        }
        Ok(EsState {
            snapshots,
            durables: Arc::new(Mutex::new(durables)),
            aggregate_cache: StateCache::new(options.aggregate_cache),
        })
    }
}
