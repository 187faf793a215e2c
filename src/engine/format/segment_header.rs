//! A segment file's name and its 32-byte header, in a `small_file` envelope; the frames
//! follow it (see [`frame`](super::frame)).
//!
//! ```text
//! header := "ANNALSEG" format:u16 flags:u16(0) ordinal:u32 base_position:u64
//!           reserved:u32(0) crc:u32
//! (format 3: flags bit 0 = retired by retention; `reserved` is the scavenge generation,
//!  1 for the first rewrite of the segment and one more at each later one)
//! format := 1 (records of format 1 only) | 2 (records may carry tags)
//!         | 3 (rewritten by a scavenge: may hold erased frames and records)
//! ```
#![deny(clippy::indexing_slicing)]

use super::frame::Cursor;
use super::small_file::Kind;

/// Length of the segment header.
pub(crate) const SEGMENT_HEADER_LEN: u64 = SEGMENT_HEADER_BYTES as u64;
/// Length of the segment header, as a buffer length.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 32;
/// The envelope of a segment header.
const HEADER: Kind = Kind {
    magic: *b"ANNALSEG",
    truncated: "segment header is truncated",
    checksum: "segment header checksum mismatch",
    wrong_magic: "segment header has the wrong magic",
};
/// The format of segments written now: their records may carry tags.
const FORMAT_VERSION: u16 = 2;
/// The format of a segment a scavenge rewrote: it may hold erased frames and records.
const SCAVENGED_FORMAT_VERSION: u16 = 3;
/// Segments created as format 1: their records are format 1, except those appended after an
/// upgrade, which may carry tags (see FORMAT.md); both read the same.
const OLDEST_FORMAT_VERSION: u16 = 1;
const SUFFIX: &str = ".seg";
/// File name of segment `ordinal`.
pub(crate) fn file_name(ordinal: u32) -> String {
    format!("{ordinal:010}{SUFFIX}")
}

/// The ordinal of a segment file name, or `None` for any other file.
pub(crate) fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment header: segment `ordinal`, whose first frame holds `base_position`.
pub(crate) fn encode_header(ordinal: u32, base_position: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    encode_versioned(ordinal, base_position, FORMAT_VERSION, 0, 0)
}

/// Flag of a format-3 header: retention dropped every event of the segment.
pub(crate) const RETIRED: u16 = 1;

/// The header of segment `ordinal` as a scavenge rewrites it (format 3) for the
/// `generation`-th time; `retired` when retention dropped all its events.
pub(crate) fn encode_scavenged_header(
    ordinal: u32,
    base_position: u64,
    retired: bool,
    generation: u32,
) -> [u8; SEGMENT_HEADER_BYTES] {
    let flags = if retired { RETIRED } else { 0 };
    encode_versioned(
        ordinal,
        base_position,
        SCAVENGED_FORMAT_VERSION,
        flags,
        generation,
    )
}

/// What a segment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub ordinal: u32,
    pub base_position: u64,
    pub flags: u16,
    /// How many times a scavenge rewrote the segment (0: never).
    pub generation: u32,
}

fn encode_versioned(
    ordinal: u32,
    base_position: u64,
    version: u16,
    flags: u16,
    generation: u32,
) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut body = Vec::with_capacity(20);
    body.extend_from_slice(&version.to_le_bytes());
    body.extend_from_slice(&flags.to_le_bytes());
    body.extend_from_slice(&ordinal.to_le_bytes());
    body.extend_from_slice(&base_position.to_le_bytes());
    body.extend_from_slice(&generation.to_le_bytes());
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h.copy_from_slice(&HEADER.seal(&body));
    h
}

/// What a segment header says.
pub(crate) fn decode_header(buf: &[u8]) -> std::result::Result<Header, &'static str> {
    let short = HEADER.truncated;
    let body = HEADER.open(buf.get(..SEGMENT_HEADER_BYTES).ok_or(short)?)?;
    let mut c = Cursor::new(body, 0);
    let version = c.u16().ok_or(short)?;
    let flags = c.u16().ok_or(short)?;
    let ordinal = c.u32().ok_or(short)?;
    let base = c.u64().ok_or(short)?;
    let reserved = c.u32().ok_or(short)?;
    if !(OLDEST_FORMAT_VERSION..=SCAVENGED_FORMAT_VERSION).contains(&version) {
        return Err("unsupported segment format version (written by a newer annal?)");
    }
    if base == 0 {
        return Err("segment base position is zero");
    }
    let known = if version == SCAVENGED_FORMAT_VERSION {
        RETIRED
    } else {
        0
    };
    if flags & !known != 0 {
        return Err("segment header has unknown flags");
    }
    Ok(Header {
        ordinal,
        base_position: base,
        flags,
        generation: if version == SCAVENGED_FORMAT_VERSION {
            reserved
        } else {
            0
        },
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checks() {
        let h = encode_header(7, 1234);
        let plain = Header {
            ordinal: 7,
            base_position: 1234,
            flags: 0,
            generation: 0,
        };
        assert_eq!(decode_header(&h), Ok(plain));
        let r = encode_scavenged_header(7, 1234, true, 3);
        assert_eq!(
            decode_header(&r),
            Ok(Header {
                flags: RETIRED,
                generation: 3,
                ..plain
            })
        );
        for i in 0..h.len() {
            let mut b = h;
            b[i] ^= 0x10;
            assert!(decode_header(&b).is_err(), "byte {i}");
        }
        assert!(decode_header(&h[..20]).is_err());
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name(12), "0000000012.seg");
        assert_eq!(parse_file_name("0000000012.seg"), Some(12));
        assert_eq!(parse_file_name("0000000012.seg.tmp"), None);
        assert_eq!(parse_file_name("12.seg"), None);
        assert_eq!(parse_file_name("LOCK"), None);
    }
}
