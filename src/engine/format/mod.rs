//! Every byte layout annal writes, as pure functions without I/O: the single implementation
//! of what `FORMAT.md` describes. The layers above only ever encode and decode through here.
//!
//! - [`frame`]: the log's frames and records (an append's events), inside segments;
//! - [`segment_header`]: segment file names and the header before the frames;
//! - [`small_file`]: the envelope (magic, body, CRC) every small file shares:
//!   - [`state_file`]: `STATE`, what the log was known to hold;
//!   - [`index_checkpoint`]: `NNNNNNNNNN.idx`, a sealed segment's index;
//!   - [`ack_file`]: `NAME.sub`, a durable subscription's acknowledged position;
//!   - [`projection_file`]: `NAME.proj`, a projection's checkpoint;
//!   - [`replica_file`]: `REPLICA`, what a replica replicates and how far it read;
//! - [`snapshot_file`]: `NNNNNNNNNN.snap`, appended snapshot records;
//! - [`stream_metadata`]: a stream's metadata, the payload of its metadata stream's events;
//! - [`published_file`]: `PUBLISHED`, the writer's acknowledged position, mapped shared;
//! - `relay_message` (feature `nats`): the subjects and headers of the messages the relay
//!   publishes to NATS JetStream, and the payload of an erased run.

pub(crate) mod ack_file;
pub(crate) mod frame;
pub(crate) mod index_checkpoint;
pub(crate) mod projection_file;
pub(crate) mod published_file;
#[cfg(feature = "nats")]
pub(crate) mod relay_message;
pub(crate) mod replica_file;
pub(crate) mod segment_header;
pub(crate) mod small_file;
pub(crate) mod snapshot_file;
pub(crate) mod state_file;
pub(crate) mod stream_metadata;
