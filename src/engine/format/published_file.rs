//! `PUBLISHED`: the writer's acknowledged position, for followers in other processes.
//!
//! Eight little-endian 64-bit words, mapped shared by the writer and every follower and
//! accessed only atomically; never synced (it is not durable data: after a crash the next
//! writer rewrites it at its open). A seqlock guards the words after it: the writer makes
//! `seq` odd, writes, and makes it even again; a reader retries while `seq` is odd or moved.
//!
//! ```text
//! word 0  magic "ANNALPUB"
//! word 1  seq                 odd while the writer updates the words below
//! word 2  epoch               1 + the previous writer's: one per writable open
//! word 3  epoch_start         the last position this writer's recovery found
//! word 4  position            the last acknowledged position
//! word 5  location            the log location just past it (segment ordinal << 40 | offset)
//! word 6  pid                 the writer's process id
//! word 7  reserved (0)
//! ```

/// The file's name in the store directory.
pub(crate) const PUBLISHED_FILE: &str = "PUBLISHED";
/// Words in the file.
pub(crate) const WORDS: usize = 8;
/// Word 0.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"ANNALPUB");
/// Word indices.
pub(crate) const SEQ: usize = 1;
pub(crate) const EPOCH: usize = 2;
pub(crate) const EPOCH_START: usize = 3;
pub(crate) const POSITION: usize = 4;
pub(crate) const LOCATION: usize = 5;
pub(crate) const PID: usize = 6;
