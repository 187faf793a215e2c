//! The `STATE` file: what the log was known to hold, so that an open can tell data that was
//! lost from data that was never written.
//!
//! It is replaced durably (temporary file, sync, rename, directory sync) at every open (after
//! recovery), at every segment roll, and at every clean close. Each time it records the
//! position up to which everything was synced, the last segment and that segment's length.
//! An open whose recovered log ends before any of these fails instead of starting over from a
//! shorter log (see `recovery`).
#![deny(clippy::indexing_slicing)]

use std::path::Path;

pub(crate) use crate::engine::format::state_file::{STATE_FILE, State, decode, encode};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// Why `STATE` could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateProblem {
    /// There is no `STATE` file.
    Missing,
    /// It exists but is not a `STATE` file annal wrote, intact: the reason.
    Damaged(&'static str),
}

/// Reads `STATE`.
pub(crate) fn read(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<std::result::Result<State, StateProblem>> {
    let path = dir.join(STATE_FILE);
    let file = match storage.open(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(StateProblem::Missing));
        }
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    if len > 4096 {
        return Ok(Err(StateProblem::Damaged(
            "STATE is longer than any STATE file",
        )));
    }
    let mut buf = vec![0u8; crate::cast::usize_from(len)];
    file.read_exact_at(&mut buf, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    Ok(decode(&buf).map_err(StateProblem::Damaged))
}

/// Replaces `STATE` durably (temporary file, sync, rename, directory sync).
pub(crate) fn write(storage: &dyn Storage, dir: &Path, state: &State) -> Result<()> {
    crate::storage::replace_file(storage, dir, STATE_FILE, &encode(state)).map(|_| ())
}
