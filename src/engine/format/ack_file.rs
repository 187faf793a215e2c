//! A durable subscription's ack file, `NAME.sub`: two 32-byte slots written alternately,
//! each `small_file` envelope holding a sequence number and the acknowledged position, so a
//! torn write can only ever cost the newest ack.
//!
//! ```text
//! slot := "ANNALSUB" seq:u64 position:u64 reserved:u32(0) crc:u32
//! file := slot slot
//! ```
#![deny(clippy::indexing_slicing)]

use super::frame::Cursor;
use super::small_file::Kind;

/// File name suffix of an ack file.
pub(crate) const SUFFIX: &str = ".sub";
/// The folder of a store directory where followers keep the ack files of their own durable
/// subscriptions (with a `NAME.lock` beside each, held while a follower has it open).
pub(crate) const FOLLOWERS_DIR: &str = "followers";
/// The suffix of a follower's per-subscription lock file, `followers/NAME.lock`.
pub(crate) const LOCK_SUFFIX: &str = ".lock";
/// The envelope of each of an ack file's two slots (a torn slot is only passed over).
const SLOT: Kind = Kind {
    magic: *b"ANNALSUB",
    truncated: "ack slot is truncated",
    checksum: "ack slot checksum mismatch",
    wrong_magic: "not an ack slot",
};
/// Bytes of one slot.
pub(crate) const SLOT_LEN: usize = 32;

/// One slot: sequence `seq` acknowledging `position`.
pub(crate) fn encode_slot(seq: u64, position: u64) -> [u8; SLOT_LEN] {
    let mut s = [0u8; SLOT_LEN];
    let mut v = Vec::with_capacity(SLOT_LEN);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&position.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    s.copy_from_slice(&SLOT.seal(&v));
    s
}

/// A whole ack file acknowledging `position`: its first slot, sequence 0.
pub(crate) fn encode_file(position: u64) -> [u8; 2 * SLOT_LEN] {
    let mut slots = [0u8; 2 * SLOT_LEN];
    if let Some(first) = slots.get_mut(..SLOT_LEN) {
        first.copy_from_slice(&encode_slot(0, position));
    }
    slots
}

/// The valid slot with the highest sequence number: (sequence, position).
pub(crate) fn decode_slots(buf: &[u8]) -> Option<(u64, u64)> {
    let slot = |i: usize| -> Option<(u64, u64)> {
        let b = SLOT.open(buf.get(i * SLOT_LEN..(i + 1) * SLOT_LEN)?).ok()?;
        let mut c = Cursor::new(b, 0);
        let seq = c.u64()?;
        let position = c.u64()?;
        Some((seq, position))
    };
    match (slot(0), slot(1)) {
        (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn newest_valid_slot_wins_and_torn_slots_are_ignored() {
        let mut buf = [0u8; 64];
        buf[..32].copy_from_slice(&encode_slot(4, 100));
        buf[32..].copy_from_slice(&encode_slot(5, 120));
        assert_eq!(decode_slots(&buf), Some((5, 120)));
        buf[40] ^= 1; // the newer slot torn
        assert_eq!(decode_slots(&buf), Some((4, 100)));
        buf[3] ^= 1;
        assert_eq!(decode_slots(&buf), None);
    }

    #[test]
    fn a_new_file_acknowledges_its_position_in_slot_zero() {
        let f = encode_file(77);
        assert_eq!(decode_slots(&f), Some((0, 77)));
        assert!(f[SLOT_LEN..].iter().all(|&b| b == 0));
    }
}
