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
#[cfg(feature = "async")]
pub(crate) mod event_stream;
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
            options.fsync != crate::options::FsyncPolicy::Never,
        )?;
        // A follower keeps its own durable subscriptions apart from the writer's.
        let durables = if options.follow {
            Registry::open_shared(engine.dir())
        } else {
            Registry::open(storage.as_ref(), engine.dir(), last, write)?
        };
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::engine::format::{ack_file, projection_file};
    use crate::engine::testing::{self, DIR};

    #[test]
    fn the_recovery_step_pulls_back_acks_and_drops_checkpoints_past_the_log() {
        let (disk, engine) = testing::fresh();
        testing::append(&engine, "a", 3);
        let dir = Path::new(DIR);
        let write = |name: &str, bytes: &[u8]| {
            crate::storage::replace_file(&disk, dir, name, bytes).unwrap();
        };
        write("ahead.sub", &ack_file::encode_file(10));
        write("behind.sub", &ack_file::encode_file(2));
        write("ahead.proj", &projection_file::encode(1, 10, b""));
        write("behind.proj", &projection_file::encode(1, 3, b""));
        let es = EsState::open(&engine).unwrap();
        let acked: Vec<(String, u64)> = es
            .durables
            .lock()
            .list(3)
            .into_iter()
            .map(|d| (d.name, d.acked_position))
            .collect();
        assert_eq!(acked, [("ahead".into(), 3), ("behind".into(), 2)]);
        assert!(disk.contents(&dir.join("ahead.proj")).is_none());
        assert!(disk.contents(&dir.join("behind.proj")).is_some());
        engine.close().unwrap();
    }

    #[test]
    fn a_read_only_recovery_step_changes_no_file() {
        let (disk, engine) = testing::fresh();
        testing::append(&engine, "a", 1);
        engine.close().unwrap();
        drop(engine);
        let dir = Path::new(DIR);
        crate::storage::replace_file(&disk, dir, "x.sub", &ack_file::encode_file(10)).unwrap();
        crate::storage::replace_file(&disk, dir, "x.proj", &projection_file::encode(1, 10, b""))
            .unwrap();
        let before: Vec<_> = disk.paths().iter().map(|p| disk.contents(p)).collect();
        let ro = testing::open(&disk, testing::options().read_only(true));
        let es = EsState::open(&ro).unwrap();
        // Read as if pulled back, but left as it is on disk.
        assert_eq!(es.durables.lock().list(1)[0].acked_position, 1);
        let after: Vec<_> = disk.paths().iter().map(|p| disk.contents(p)).collect();
        assert!(after == before, "a read-only recovery step changed a file");
    }
}
