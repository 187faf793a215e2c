//! Byte layouts as pure functions, without I/O. `FORMAT.md` describes the same bytes.
//!
//! [`small_file`] is the envelope every small file of the engine shares: `STATE`, index
//! checkpoints, projection checkpoints, the segment header and each durable-subscription
//! slot.

pub(crate) mod frame;
pub(crate) mod small_file;
