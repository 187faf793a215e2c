//! A projection checkpoint, `NAME.proj`: the projection's state and the position it has
//! folded up to, in one `small_file` envelope.
//!
//! ```text
//! file := "ANNALPRJ" format:u16(1) flags:u16(0) projection_version:u32 position:u64
//!         state_len:u64 state:[u8; state_len] crc:u32
//! ```
#![deny(clippy::indexing_slicing)]

use super::small_file::Kind;

/// File name suffix of a projection checkpoint.
pub(crate) const SUFFIX: &str = ".proj";
/// The envelope of a projection checkpoint (a damaged one is only ignored).
const KIND: Kind = Kind {
    magic: *b"ANNALPRJ",
    truncated: "projection checkpoint is truncated",
    checksum: "projection checkpoint checksum mismatch",
    wrong_magic: "not a projection checkpoint",
};
const FORMAT_VERSION: u16 = 1;

/// Encodes a checkpoint: header, state, CRC.
pub(crate) fn encode(version: u32, position: u64, state: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(40 + state.len());
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&position.to_le_bytes());
    b.extend_from_slice(&(state.len() as u64).to_le_bytes());
    b.extend_from_slice(state);
    KIND.seal(&b)
}

/// Decodes a checkpoint: (projection version, position, state bytes).
pub(crate) fn decode(buf: &[u8]) -> Option<(u32, u64, &[u8])> {
    let (mut c, body_len) = KIND.open_versioned(buf, FORMAT_VERSION)?;
    let version = c.u32()?;
    let position = c.u64()?;
    let len = usize::try_from(c.u64()?).ok()?;
    let state = c.bytes(len)?;
    (c.pos() == body_len).then_some((version, position, state))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_rejected() {
        let b = encode(3, 42, b"state");
        assert_eq!(decode(&b), Some((3, 42, &b"state"[..])));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert_eq!(decode(&d), None, "byte {i}");
        }
        for len in 0..b.len() {
            assert_eq!(decode(&b[..len]), None, "cut at {len}");
        }
    }
}
