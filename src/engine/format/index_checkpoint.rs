//! An index checkpoint, `NNNNNNNNNN.idx`: what one sealed segment contributes to the index
//! (its sparse position samples, each stream's run of record offsets, and each record's
//! stream, type and tags for the query index), in one `small_file` envelope.
//!
//! ```text
//! file   := "ANNALIDX" format:u16(2) flags:u16(0) ordinal:u32 base_position:u64 events:u64
//!           end:u64 last_frame_offset:u64 last_frame_header:[u8; 8]
//!           sample_count:u32 run_count:u32 sample* run*
//!           type_count:u32 name* tag_count:u32 name* record*events crc:u32
//! sample := position:u64 offset:u64
//! run    := stream_len:u16 stream first_version:u64 count:u32 offset:u64 * count
//! name   := len:u16 bytes (UTF-8)
//! record := run:u32 type:u32 tag_count:u16 tag:u32 * tag_count   (indexes into the tables)
//! ```
//! Format 3 (a scavenged segment's) adds, after the records, `generation:u32` (the
//! segment header's) and `erased_count:u32 (start:u64 end:u64)*erased_count`, the byte ranges of its erased
//! frames, and allows the type `0xFFFFFFFF` (with no tags): an erased event, which has none.
//! A run's offsets for erased events point into those ranges.
//! Format 1 ended after the runs. It is still read (without the records), so that a store
//! of format 1 opens; such a segment is scanned once for its records and checkpointed again.
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
const FORMAT_VERSION: u16 = 2;
/// Checkpoints without the records section.
const FORMAT_1: u16 = 1;
/// Checkpoints of scavenged segments: erased events and frames.
const FORMAT_3: u16 = 3;
/// The type of an erased event, in a format-3 checkpoint's records.
pub(crate) const ERASED_TYPE: u32 = u32::MAX;

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
    /// Each record's run, type and tags, in log order; `None` from a format-1 checkpoint.
    pub records: Option<Records>,
    /// The byte ranges of the segment's erased frames, in order (format 3).
    pub erased: Vec<(u64, u64)>,
    /// The scavenge generation of the segment it describes (format 3; 0 before).
    pub generation: u32,
}

/// The segment's records in log order, by index into its tables: what the query index
/// needs of each (its stream, as a run of [`SegmentIndex::runs`], its type and its tags).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Records {
    /// The distinct event types, in order of first appearance.
    pub types: Vec<Box<str>>,
    /// The distinct tags, in order of first appearance.
    pub tags: Vec<Box<str>>,
    /// Per record: its run (index into `runs`).
    pub run: Vec<u32>,
    /// Per record: its type (index into `types`).
    pub event_type: Vec<u32>,
    /// Per record: where its tags end in `tag_ids` (they start where the previous one's end).
    pub tags_end: Vec<u32>,
    /// The records' tags, back to back (indexes into `tags`).
    pub tag_ids: Vec<u32>,
}

impl Records {
    /// The tags of record `i`, as indexes into `tags`.
    pub(crate) fn tags_of(&self, i: usize) -> &[u32] {
        let start = i
            .checked_sub(1)
            .and_then(|p| self.tags_end.get(p))
            .map_or(0, |&e| e as usize);
        let end = self.tags_end.get(i).map_or(start, |&e| e as usize);
        self.tag_ids.get(start..end).unwrap_or_default()
    }
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
        let scavenged = !self.erased.is_empty()
            || self.generation > 0
            || self
                .records
                .as_ref()
                .is_some_and(|r| r.event_type.contains(&ERASED_TYPE));
        let version = if scavenged { FORMAT_3 } else { FORMAT_VERSION };
        b.extend_from_slice(&version.to_le_bytes());
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
        let none = Records::default();
        let records = self.records.as_ref().unwrap_or(&none);
        for table in [&records.types, &records.tags] {
            b.extend_from_slice(&crate::cast::u32_len(table.len()).to_le_bytes());
            for name in table {
                b.extend_from_slice(&crate::cast::u16_len(name.len()).to_le_bytes());
                b.extend_from_slice(name.as_bytes());
            }
        }
        for i in 0..records.run.len() {
            let tags = records.tags_of(i);
            b.extend_from_slice(&records.run.get(i).copied().unwrap_or(0).to_le_bytes());
            b.extend_from_slice(
                &records
                    .event_type
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .to_le_bytes(),
            );
            b.extend_from_slice(&crate::cast::u16_len(tags.len()).to_le_bytes());
            for t in tags {
                b.extend_from_slice(&t.to_le_bytes());
            }
        }
        if scavenged {
            b.extend_from_slice(&self.generation.to_le_bytes());
            b.extend_from_slice(&crate::cast::u32_len(self.erased.len()).to_le_bytes());
            for (start, end) in &self.erased {
                b.extend_from_slice(&start.to_le_bytes());
                b.extend_from_slice(&end.to_le_bytes());
            }
        }
        KIND.seal(&b)
    }

    /// Decodes a checkpoint file; `None` for anything that is not one, intact.
    pub(crate) fn decode(buf: &[u8]) -> Option<SegmentIndex> {
        let (mut c, body_len, version) = [FORMAT_VERSION, FORMAT_3, FORMAT_1]
            .into_iter()
            .find_map(|v| KIND.open_versioned(buf, v).map(|(c, len)| (c, len, v)))?;
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
        if total != events {
            return None;
        }
        let records = if version == FORMAT_1 {
            None
        } else {
            Some(decode_records(
                &mut c,
                body_len,
                &runs,
                events,
                version == FORMAT_3,
            )?)
        };
        let mut erased = Vec::new();
        let mut generation = 0;
        if version == FORMAT_3 {
            generation = c.u32()?;
            let n = c.u32()? as usize;
            if n.checked_mul(16)? > body_len - c.pos() {
                return None;
            }
            for _ in 0..n {
                let (start, end) = (c.u64()?, c.u64()?);
                if start >= end || erased.last().is_some_and(|&(_, e)| e > start) {
                    return None;
                }
                erased.push((start, end));
            }
        }
        if c.pos() != body_len {
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
            records,
            erased,
            generation,
        })
    }
}

/// The tables and per-record entries of a format-2 checkpoint, every index checked to point
/// into its table and every run to receive exactly its records.
fn decode_records(
    c: &mut Cursor<'_>,
    body_len: usize,
    runs: &[StreamRun],
    events: u64,
    scavenged: bool,
) -> Option<Records> {
    let left = |c: &Cursor<'_>| body_len - c.pos();
    let mut r = Records::default();
    for table in [&mut r.types, &mut r.tags] {
        let n = c.u32()? as usize;
        if n.checked_mul(2)? > left(c) {
            return None;
        }
        for _ in 0..n {
            let len = c.u16()? as usize;
            table.push(std::str::from_utf8(c.bytes(len)?).ok()?.into());
        }
    }
    let events = usize::try_from(events).ok()?;
    if events.checked_mul(10)? > left(c) {
        return None;
    }
    let mut per_run = vec![0usize; runs.len()];
    for _ in 0..events {
        let run = c.u32()?;
        let event_type = c.u32()?;
        let n = c.u16()?;
        *per_run.get_mut(run as usize)? += 1;
        let erased = scavenged && event_type == ERASED_TYPE && n == 0;
        if event_type as usize >= r.types.len() && !erased {
            return None;
        }
        r.run.push(run);
        r.event_type.push(event_type);
        for _ in 0..n {
            let tag = c.u32()?;
            if tag as usize >= r.tags.len() {
                return None;
            }
            r.tag_ids.push(tag);
        }
        r.tags_end.push(u32::try_from(r.tag_ids.len()).ok()?);
    }
    if per_run
        .iter()
        .zip(runs)
        .any(|(&n, run)| n != run.offsets.len())
    {
        return None;
    }
    Some(r)
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
            records: Some(Records {
                types: vec!["T".into(), "U".into()],
                tags: vec!["course:c1".into()],
                run: vec![0, 0, 1],
                event_type: vec![0, 1, 0],
                tags_end: vec![1, 1, 2],
                tag_ids: vec![0, 0],
            }),
            erased: Vec::new(),
            generation: 0,
        }
    }

    #[test]
    fn a_scavenged_segments_checkpoint_keeps_its_erased_events_and_frames() {
        let mut ix = sample();
        if let Some(r) = &mut ix.records {
            r.event_type = vec![0, ERASED_TYPE, 0];
            r.tags_end = vec![1, 1, 2];
        }
        ix.erased = vec![(200, 400), (500, 600)];
        ix.generation = 2;
        let bytes = ix.encode();
        assert_eq!(bytes[8], 3, "format 3");
        assert_eq!(SegmentIndex::decode(&bytes), Some(ix.clone()));
        // Ranges out of order, or an erased type with tags, are refused.
        let mut bad = ix.clone();
        bad.erased = vec![(500, 600), (200, 400)];
        assert_eq!(SegmentIndex::decode(&bad.encode()), None);
        let mut bad = ix.clone();
        if let Some(r) = &mut bad.records {
            r.event_type = vec![0, 0, ERASED_TYPE];
        }
        assert_eq!(
            SegmentIndex::decode(&bad.encode()),
            None,
            "an erased event has no tags"
        );
        // Format 2 has no erased type: the same records under version 2 do not decode.
        let mut v2 = bytes.clone();
        v2.truncate(v2.len() - 4 - 4 - 4 - 32);
        v2[8] = 2;
        let crc = crc32fast::hash(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentIndex::decode(&v2), None);
    }

    #[test]
    fn a_format_1_checkpoint_reads_without_records() {
        let mut ix = sample();
        ix.records = None;
        let mut v1 = ix.encode();
        // Format 1: the version word 1, and nothing after the runs (empty tables, no
        // records here: the two counts of 0 and the CRC).
        v1.truncate(v1.len() - 12);
        v1[8] = 1;
        let body_end = v1.len();
        let crc = crc32fast::hash(&v1[..body_end]);
        v1.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentIndex::decode(&v1), Some(ix));
    }

    #[test]
    fn records_must_point_into_their_tables_and_fill_their_runs() {
        let mut ix = sample();
        let good = ix.encode();
        assert!(SegmentIndex::decode(&good).is_some());
        if let Some(r) = &mut ix.records {
            r.run = vec![0, 1, 1];
        }
        assert_eq!(
            SegmentIndex::decode(&ix.encode()),
            None,
            "run a gets 1 of its 2"
        );
        let mut ix = sample();
        if let Some(r) = &mut ix.records {
            r.tag_ids = vec![0, 5];
        }
        assert_eq!(SegmentIndex::decode(&ix.encode()), None, "tag 5 of 1");
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
