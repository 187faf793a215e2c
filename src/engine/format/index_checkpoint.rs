//! An index checkpoint, `NNNNNNNNNN.idx`: what one sealed segment contributes to the stream
//! index (its sparse position samples and each stream's run of record offsets), in one
//! `small_file` envelope.
//!
//! ```text
//! file   := "ANNALIDX" format:u16(1) flags:u16(0) ordinal:u32 base_position:u64 events:u64
//!           end:u64 last_frame_offset:u64 last_frame_header:[u8; 8]
//!           sample_count:u32 run_count:u32 sample* run* crc:u32
//! sample := position:u64 offset:u64
//! run    := stream_len:u16 stream first_version:u64 count:u32 offset:u64 * count
//! ```
#![deny(clippy::indexing_slicing)]

use super::frame::{Cursor, FRAME_HEADER_LEN};
use super::small_file::Kind;

/// The envelope of an index checkpoint (a damaged one is only ignored: the words go unused).
const KIND: Kind = Kind {
    magic: *b"ANNALIDX",
    truncated: "index checkpoint is truncated",
    checksum: "index checkpoint checksum mismatch",
    wrong_magic: "not an index checkpoint",
};
const FORMAT_VERSION: u16 = 1;

/// File name of the checkpoint of segment `ordinal`.
pub(crate) fn file_name(ordinal: u32) -> String {
    format!("{ordinal:010}.idx")
}

/// The ordinal of a checkpoint file name, or `None` for any other file.
pub(crate) fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".idx")?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The events of one stream within one segment: consecutive versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamRun {
    pub stream: Box<str>,
    pub first_version: u64,
    /// Record offsets within the segment, one per version.
    pub offsets: Vec<u64>,
}

/// Everything one segment contributes to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    pub ordinal: u32,
    pub base_position: u64,
    pub events: u64,
    /// Offset just past the segment's last frame.
    pub end: u64,
    /// The last frame's offset and header bytes: identifies the segment's contents.
    pub last_frame: Option<(u64, [u8; FRAME_HEADER_LEN])>,
    pub samples: Vec<Sample>,
    pub runs: Vec<StreamRun>,
}

/// A point in the sparse position index of a segment: the frame at `offset` starts with the
/// event at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub position: u64,
    pub offset: u64,
}

impl SegmentIndex {
    /// The checkpoint file's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let offsets: usize = self.runs.iter().map(|r| r.offsets.len()).sum();
        let mut b = Vec::with_capacity(64 + self.samples.len() * 16 + offsets * 8);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&self.ordinal.to_le_bytes());
        b.extend_from_slice(&self.base_position.to_le_bytes());
        b.extend_from_slice(&self.events.to_le_bytes());
        b.extend_from_slice(&self.end.to_le_bytes());
        let (lf_offset, lf_header) = self.last_frame.unwrap_or((0, [0; FRAME_HEADER_LEN]));
        b.extend_from_slice(&lf_offset.to_le_bytes());
        b.extend_from_slice(&lf_header);
        b.extend_from_slice(&crate::cast::u32_len(self.samples.len()).to_le_bytes());
        b.extend_from_slice(&crate::cast::u32_len(self.runs.len()).to_le_bytes());
        for s in &self.samples {
            b.extend_from_slice(&s.position.to_le_bytes());
            b.extend_from_slice(&s.offset.to_le_bytes());
        }
        for r in &self.runs {
            b.extend_from_slice(&crate::cast::u16_len(r.stream.len()).to_le_bytes());
            b.extend_from_slice(r.stream.as_bytes());
            b.extend_from_slice(&r.first_version.to_le_bytes());
            b.extend_from_slice(&crate::cast::u32_len(r.offsets.len()).to_le_bytes());
            for o in &r.offsets {
                b.extend_from_slice(&o.to_le_bytes());
            }
        }
        KIND.seal(&b)
    }

    /// Decodes a checkpoint file; `None` for anything that is not one, intact.
    pub(crate) fn decode(buf: &[u8]) -> Option<SegmentIndex> {
        let (mut c, body_len) = KIND.open_versioned(buf, FORMAT_VERSION)?;
        let ordinal = c.u32()?;
        let base_position = c.u64()?;
        let events = c.u64()?;
        let end = c.u64()?;
        let lf_offset = c.u64()?;
        let lf_header: [u8; FRAME_HEADER_LEN] = c.bytes(FRAME_HEADER_LEN)?.try_into().ok()?;
        let sample_count = c.u32()? as usize;
        let run_count = c.u32()? as usize;
        // Counts are checked against the bytes left before anything is allocated.
        let left = |c: &Cursor<'_>| body_len - c.pos();
        if sample_count.checked_mul(16)? > left(&c) || run_count.checked_mul(14)? > left(&c) {
            return None;
        }
        let mut samples = Vec::with_capacity(sample_count);
        for _ in 0..sample_count {
            samples.push(Sample {
                position: c.u64()?,
                offset: c.u64()?,
            });
        }
        let mut runs = Vec::with_capacity(run_count);
        let mut total = 0u64;
        for _ in 0..run_count {
            let len = c.u16()? as usize;
            let stream = std::str::from_utf8(c.bytes(len)?).ok()?.into();
            let first_version = c.u64()?;
            let n = c.u32()? as usize;
            if n == 0 || n.checked_mul(8)? > left(&c) {
                return None;
            }
            let mut offsets = Vec::with_capacity(n);
            for _ in 0..n {
                offsets.push(c.u64()?);
            }
            total += n as u64;
            runs.push(StreamRun {
                stream,
                first_version,
                offsets,
            });
        }
        if c.pos() != body_len || total != events {
            return None;
        }
        Some(SegmentIndex {
            ordinal,
            base_position,
            events,
            end,
            last_frame: (lf_offset != 0).then_some((lf_offset, lf_header)),
            samples,
            runs,
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        SegmentIndex {
            ordinal: 3,
            base_position: 100,
            events: 3,
            end: 900,
            last_frame: Some((700, [1, 2, 3, 4, 5, 6, 7, 8])),
            samples: vec![Sample {
                position: 100,
                offset: 32,
            }],
            runs: vec![
                StreamRun {
                    stream: "a".into(),
                    first_version: 4,
                    offsets: vec![40, 300],
                },
                StreamRun {
                    stream: "b".into(),
                    first_version: 1,
                    offsets: vec![700],
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_every_flip_rejected() {
        let ix = sample();
        let bytes = ix.encode();
        assert_eq!(SegmentIndex::decode(&bytes), Some(ix));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert_eq!(SegmentIndex::decode(&b), None, "byte {i}");
        }
        for cut in 0..bytes.len() {
            assert_eq!(SegmentIndex::decode(&bytes[..cut]), None, "cut {cut}");
        }
    }
}
