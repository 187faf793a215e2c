//! The storage engine beneath event sourcing. For now it holds the byte layouts shared by the
//! engine's small files ([`format`]); the log, segments, recovery and group commit move here
//! next (see `docs/design.md`).

pub(crate) mod format;
