//! The `STATE` file's 40 bytes (version 2) in a `small_file` envelope; version 1's 24 bytes
//! still decode.
//!
//! ```text
//! v2 := "ANNALSTA" version:u16(2) flags:u16 durable_floor:u64 last_ordinal:u32
//!       reserved:u32(0) last_len:u64 crc:u32          flags bit 0: closed cleanly,
//!                                                     bit 1: a seal was left unsynced
//! v1 := "ANNALSTA" flags:u32 durable_floor:u64 crc:u32
//! ```
#![deny(clippy::indexing_slicing)]

use super::frame::Cursor;
use super::small_file::Kind;

/// The file's name in the store directory.
pub(crate) const STATE_FILE: &str = "STATE";
const MAGIC: [u8; 8] = *b"ANNALSTA";
/// Version 1 (24 bytes) had no version field: magic, flags u32, durable u64, CRC.
const V1_LEN: usize = 24;
const VERSION: u16 = 2;
/// Length of a version-2 file.
const V2_LEN: usize = 40;

/// What `STATE` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct State {
    /// The store was closed cleanly: everything acknowledged was synced.
    pub clean: bool,
    /// Every position up to this one was synced.
    pub durable_floor: u64,
    /// The last segment when this was written (0: none yet, or a version-1 file). Every
    /// segment up to it must exist.
    pub last_ordinal: u32,
    /// The length of segment `last_ordinal`'s file (0: unknown). Segment files never shrink.
    pub last_len: u64,
    /// A roll may have sealed the segment before the last without syncing it (set before the
    /// first such roll creates the next segment, cleared by the next open or clean close):
    /// its end past `durable_floor` may be torn.
    pub seal_deferred: bool,
}

/// Flag bit 0: closed cleanly.
const CLEAN: u16 = 1;
/// Flag bit 1: [`State::seal_deferred`].
const SEAL_DEFERRED: u16 = 2;

/// The envelope of `STATE`.
const KIND: Kind = Kind {
    magic: MAGIC,
    truncated: "STATE is truncated",
    checksum: "STATE checksum mismatch",
    wrong_magic: "STATE has the wrong magic",
};

/// Encodes a version-2 `STATE` file.
pub(crate) fn encode(state: &State) -> Vec<u8> {
    let mut b = Vec::with_capacity(V2_LEN);
    b.extend_from_slice(&VERSION.to_le_bytes());
    let flags = if state.clean { CLEAN } else { 0 }
        | if state.seal_deferred {
            SEAL_DEFERRED
        } else {
            0
        };
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&state.durable_floor.to_le_bytes());
    b.extend_from_slice(&state.last_ordinal.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&state.last_len.to_le_bytes());
    KIND.seal(&b)
}

/// Decodes a `STATE` file of either version.
pub(crate) fn decode(buf: &[u8]) -> std::result::Result<State, &'static str> {
    let body = KIND.open(buf)?;
    let mut c = Cursor::new(body, 0);
    let bad = "STATE does not parse";
    if buf.len() == V1_LEN {
        let flags = c.u32().ok_or(bad)?;
        return Ok(State {
            clean: flags & 1 == 1,
            durable_floor: c.u64().ok_or(bad)?,
            last_ordinal: 0,
            last_len: 0,
            // Version 1 was written by annal versions that synced every seal.
            seal_deferred: false,
        });
    }
    if buf.len() != V2_LEN || c.u16() != Some(VERSION) {
        return Err("unsupported STATE version");
    }
    let flags = c.u16().ok_or(bad)?;
    let durable_floor = c.u64().ok_or(bad)?;
    let last_ordinal = c.u32().ok_or(bad)?;
    let _reserved = c.u32().ok_or(bad)?;
    let last_len = c.u64().ok_or(bad)?;
    Ok(State {
        clean: flags & CLEAN != 0,
        durable_floor,
        last_ordinal,
        last_len,
        seal_deferred: flags & SEAL_DEFERRED != 0,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_flip_and_cut_rejected() {
        let s = State {
            clean: true,
            durable_floor: 12_345,
            last_ordinal: 7,
            last_len: 64 << 20,
            seal_deferred: false,
        };
        let b = encode(&s);
        assert_eq!(b.len(), V2_LEN);
        assert_eq!(decode(&b), Ok(s));
        let deferred = State {
            clean: false,
            seal_deferred: true,
            ..s
        };
        assert_eq!(decode(&encode(&deferred)), Ok(deferred));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x04;
            assert!(decode(&d).is_err(), "byte {i}");
        }
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn version_1_files_still_read() {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&99u64.to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&b),
            Ok(State {
                clean: true,
                durable_floor: 99,
                last_ordinal: 0,
                last_len: 0,
                seal_deferred: false,
            })
        );
    }
}
