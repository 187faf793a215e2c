//! The storage engine: the log and nothing above it.

pub(crate) mod checkpoint;
pub(crate) mod commit;
pub(crate) mod format;
pub(crate) mod index;
pub(crate) mod log;
pub(crate) mod read;
pub(crate) mod recovery;
pub(crate) mod repair;
pub(crate) mod segment;
pub(crate) mod state;
pub(crate) mod verify;
