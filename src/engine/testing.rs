//! Unit-test helpers: an engine alone on a simulated disk, for the tests of the engine and of
//! the layer above it.

use std::path::Path;
use std::sync::Arc;

use super::Engine;
use crate::event::{AppendResult, EventData, ExpectedVersion};
use crate::options::Options;
use crate::storage::SimDisk;

/// The store directory every test engine uses on its own disk.
pub(crate) const DIR: &str = "/store";

/// Opens an engine in [`DIR`] on `disk`.
pub(crate) fn open(disk: &SimDisk, options: Options) -> Arc<Engine> {
    match Engine::open_with_storage(Arc::new(disk.clone()), Path::new(DIR), options) {
        Ok(e) => e,
        Err(e) => panic!("open engine: {e}"),
    }
}

/// Default options but for 64 KiB segments: the simulated disk keeps every byte in memory.
pub(crate) fn options() -> Options {
    Options::default().segment_size(64 << 10)
}

/// A new disk and an engine on it with [`options`].
pub(crate) fn fresh() -> (SimDisk, Arc<Engine>) {
    let disk = SimDisk::new(7);
    let engine = open(&disk, options());
    (disk, engine)
}

/// Appends `n` events of type `T` to `stream`, whatever its version.
pub(crate) fn append(engine: &Arc<Engine>, stream: &str, n: usize) -> AppendResult {
    let events: Vec<EventData> = (0..n)
        .map(|i| EventData::new("T", format!("{stream}:{i}").into_bytes()))
        .collect();
    match engine.append(stream, ExpectedVersion::Any, &events) {
        Ok(r) => r,
        Err(e) => panic!("append to {stream}: {e}"),
    }
}
