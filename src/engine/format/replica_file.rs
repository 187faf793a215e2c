//! `REPLICA`: marks a store directory as a replica of a JetStream stream, and says how far
//! the replication had read.
//!
//! ```text
//! file := "ANNALREP" version:u16(1) flags:u16(0) sequence:u64
//!         js_stream_len:u16 js_stream subject_prefix_len:u16 subject_prefix crc:u32
//! ```
//!
//! `sequence` is a JetStream message sequence at or before the first message not yet
//! applied: a hint where to resume (the replica skips what it already holds, by position).
#![deny(clippy::indexing_slicing)]

use super::frame::Cursor;
use super::small_file::Kind;

/// The file's name in a store directory.
pub(crate) const FILE_NAME: &str = "REPLICA";
const KIND: Kind = Kind {
    magic: *b"ANNALREP",
    truncated: "REPLICA is truncated",
    checksum: "REPLICA checksum mismatch",
    wrong_magic: "REPLICA is not a replica marker",
};
const VERSION: u16 = 1;

/// What `REPLICA` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaFile {
    /// The JetStream stream replicated.
    pub js_stream: String,
    /// The subject prefix of its messages.
    pub subject_prefix: String,
    /// Where to resume reading (see the module docs).
    pub sequence: u64,
}

/// The file's bytes.
#[cfg(any(feature = "nats", test))]
pub(crate) fn encode(r: &ReplicaFile) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&VERSION.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&r.sequence.to_le_bytes());
    for s in [&r.js_stream, &r.subject_prefix] {
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(s.as_bytes().get(..usize::from(len)).unwrap_or_default());
    }
    KIND.seal(&body)
}

/// The file's contents, checked.
pub(crate) fn decode(buf: &[u8]) -> Result<ReplicaFile, &'static str> {
    let body = KIND.open(buf)?;
    let mut c = Cursor::new(body, 0);
    let short = "REPLICA is too short";
    if c.u16().ok_or(short)? != VERSION {
        return Err("REPLICA has an unknown format version (written by a newer annal?)");
    }
    if c.u16().ok_or(short)? != 0 {
        return Err("REPLICA has unknown flags");
    }
    let sequence = c.u64().ok_or(short)?;
    let mut text = || -> Result<String, &'static str> {
        let len = c.u16().ok_or(short)?;
        let bytes = c.bytes(usize::from(len)).ok_or(short)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| "REPLICA holds a name that is not UTF-8")
    };
    let js_stream = text()?;
    let subject_prefix = text()?;
    if c.pos() != body.len() {
        return Err("REPLICA has bytes after its fields");
    }
    Ok(ReplicaFile {
        js_stream,
        subject_prefix,
        sequence,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let r = ReplicaFile {
            js_stream: "EVENTS".into(),
            subject_prefix: "annal.shop".into(),
            sequence: 42,
        };
        let mut b = encode(&r);
        assert_eq!(decode(&b), Ok(r));
        b[12] ^= 1;
        assert_eq!(decode(&b), Err("REPLICA checksum mismatch"));
        assert!(decode(&b[..10]).is_err());
    }
}
