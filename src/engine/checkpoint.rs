//! Index checkpoints: what one sealed segment contributes to the stream index, saved beside it.
//!
//! When a segment is sealed, a background thread scans it once and writes
//! `NNNNNNNNNN.idx` (checksummed; written under a temporary name, synced, renamed, and the
//! directory synced). On open, recovery loads these instead of scanning sealed segments, so
//! open time follows the unsealed tail rather than the size of the log. Each checkpoint is
//! written once and never replaced, so checkpointing costs O(new data), not O(log) per seal.
//!
//! A checkpoint that is missing, fails its checksum, or does not match its segment (checked
//! against the segment's last frame header) is ignored: that segment is scanned instead. The
//! log is always the source of truth.
#![deny(clippy::indexing_slicing)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::engine::format::frame::{self, Cursor, FRAME_HEADER_LEN, FrameRead};
use crate::engine::format::small_file::Kind;
use crate::engine::index::{StreamIndex, pack};
use crate::engine::segment::{SEGMENT_HEADER_LEN, Sample, Segment, sample_due};
use crate::error::{Error, Result};
use crate::storage::Storage;

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

/// Where and why a scan stopped before reaching empty space.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stop {
    pub offset: u64,
    pub reason: &'static str,
}

/// Scans the frames of `seg` (whose bytes from offset 0 are `bytes`) until empty space or the
/// first frame that fails its check. Frames that pass their checksum but break an invariant
/// (positions, versions, record layout) are corruption.
pub(crate) fn scan(seg: &Segment, bytes: &[u8]) -> Result<(SegmentIndex, Option<Stop>)> {
    scan_from(seg, bytes, SEGMENT_HEADER_LEN, seg.base_position)
}

/// [`scan`] from the frame at `offset`, whose first position must be `position` (`verify`
/// resumes there after damage). `base_position` of the result is `position`.
pub(crate) fn scan_from(
    seg: &Segment,
    bytes: &[u8],
    offset: u64,
    position: u64,
) -> Result<(SegmentIndex, Option<Stop>)> {
    let mut ix = SegmentIndex {
        ordinal: seg.ordinal,
        base_position: position,
        events: 0,
        end: offset,
        last_frame: None,
        samples: Vec::new(),
        runs: Vec::new(),
    };
    let mut runs: HashMap<&str, usize> = HashMap::new();
    let mut offset = usize::try_from(offset)
        .map_err(|_| Error::corruption(&seg.path, offset, "offset beyond the address space"))?;
    let stop = loop {
        let f = match frame::read_frame(bytes, offset) {
            FrameRead::End => break None,
            FrameRead::Bad(reason) => {
                break Some(Stop {
                    offset: offset as u64,
                    reason,
                });
            }
            FrameRead::Malformed(reason) => {
                return Err(Error::corruption(&seg.path, offset as u64, reason));
            }
            FrameRead::Frame(f) => f,
        };
        let bad = |reason: String| Error::corruption(&seg.path, f.offset as u64, reason);
        let expected = ix.base_position + ix.events;
        if f.first_position != expected {
            return Err(bad(format!(
                "frame starts at position {}, expected {expected}",
                f.first_position
            )));
        }
        let run = match runs.get(f.stream) {
            Some(&i) => ix.runs.get_mut(i),
            None => {
                runs.insert(f.stream, ix.runs.len());
                ix.runs.push(StreamRun {
                    stream: f.stream.into(),
                    first_version: f.first_version,
                    offsets: Vec::new(),
                });
                ix.runs.last_mut()
            }
        }
        .ok_or_else(|| bad("internal: lost a stream run".into()))?;
        if f.first_version != run.first_version + run.offsets.len() as u64 {
            return Err(bad(format!(
                "frame of stream {:?} starts at version {}, but the stream is at {}",
                f.stream,
                f.first_version,
                run.first_version + run.offsets.len() as u64 - 1
            )));
        }
        let mut at = f.records_offset;
        for i in 0..u64::from(f.count) {
            let r = frame::read_record(bytes, at, false)
                .map_err(|reason| Error::corruption(&seg.path, at as u64, reason))?;
            if r.position != f.first_position + i || r.version != f.first_version + i {
                return Err(Error::corruption(
                    &seg.path,
                    at as u64,
                    "record's position or version disagrees with its frame",
                ));
            }
            run.offsets.push(at as u64);
            at = r.end;
        }
        if at != f.end() {
            return Err(bad("frame has bytes after its last record".into()));
        }
        if sample_due(&ix.samples, f.offset as u64) {
            ix.samples.push(Sample {
                position: f.first_position,
                offset: f.offset as u64,
            });
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        if let Some(h) = bytes.get(f.offset..f.offset + FRAME_HEADER_LEN) {
            header.copy_from_slice(h);
        }
        ix.last_frame = Some((f.offset as u64, header));
        ix.events += u64::from(f.count);
        offset = f.end();
        ix.end = offset as u64;
    };
    Ok((ix, stop))
}

impl SegmentIndex {
    /// Adds this segment's events to `index` and its samples to `seg`, checking that every
    /// stream continues from the version the index has.
    pub(crate) fn apply(&self, seg: &Segment, index: &mut StreamIndex) -> Result<()> {
        for run in &self.runs {
            let have = index.version(&run.stream).unwrap_or(0);
            if run.first_version != have + 1 {
                return Err(Error::corruption(
                    &seg.path,
                    run.offsets.first().copied().unwrap_or(0),
                    format!(
                        "stream {:?} continues at version {} but was at {have}",
                        run.stream, run.first_version
                    ),
                ));
            }
            index.push(
                &run.stream,
                run.offsets.iter().map(|&o| pack(self.ordinal, o)),
            );
        }
        seg.set_samples(self.samples.clone());
        seg.set_end(self.end);
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
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
        b.extend_from_slice(&(self.samples.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.runs.len() as u32).to_le_bytes());
        for s in &self.samples {
            b.extend_from_slice(&s.position.to_le_bytes());
            b.extend_from_slice(&s.offset.to_le_bytes());
        }
        for r in &self.runs {
            b.extend_from_slice(&(r.stream.len() as u16).to_le_bytes());
            b.extend_from_slice(r.stream.as_bytes());
            b.extend_from_slice(&r.first_version.to_le_bytes());
            b.extend_from_slice(&(r.offsets.len() as u32).to_le_bytes());
            for o in &r.offsets {
                b.extend_from_slice(&o.to_le_bytes());
            }
        }
        KIND.seal(&b)
    }

    /// Decodes a checkpoint file; `None` for anything that is not one, intact.
    pub(crate) fn decode(buf: &[u8]) -> Option<SegmentIndex> {
        let body = KIND.open(buf).ok()?;
        let body_len = body.len();
        let mut c = Cursor::new(body, 0);
        if c.u16()? != FORMAT_VERSION {
            return None;
        }
        let _flags = c.u16()?;
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

    /// Whether this checkpoint describes `seg` as it is on disk: same ordinal and base, the
    /// same last frame header at the same place, and empty space right after it.
    pub(crate) fn matches(&self, seg: &Segment) -> bool {
        // A file cut short inside what the checkpoint covers has lost synced frames.
        if self.ordinal != seg.ordinal
            || self.base_position != seg.base_position
            || seg.capacity < self.end
        {
            return false;
        }
        // Read with pread: the bytes after the end may be a hole that a mapped read would
        // have to allocate (tmpfs).
        let tail_ok = |bytes: &[u8]| matches!(frame::read_frame(bytes, 0), FrameRead::End);
        let after = seg
            .pread(self.end, FRAME_HEADER_LEN as u64)
            .is_ok_and(|b| tail_ok(&b));
        let last = match self.last_frame {
            None => self.end == SEGMENT_HEADER_LEN && self.events == 0,
            Some((offset, header)) => seg
                .pread(offset, FRAME_HEADER_LEN as u64)
                .is_ok_and(|b| b.as_slice() == header),
        };
        after && last
    }
}

/// Loads the checkpoint of `seg` if there is one that matches it.
pub(crate) fn load(storage: &dyn Storage, dir: &Path, seg: &Segment) -> Option<SegmentIndex> {
    let path = dir.join(file_name(seg.ordinal));
    let file = storage.open(&path, false).ok()?;
    let len = usize::try_from(file.len().ok()?).ok()?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0).ok()?;
    SegmentIndex::decode(&buf).filter(|ix| ix.matches(seg))
}

/// Writes the checkpoint of a sealed segment durably (temporary file, sync, rename, directory
/// sync).
pub(crate) fn write(storage: &dyn Storage, dir: &Path, ix: &SegmentIndex) -> Result<PathBuf> {
    crate::storage::replace_file(storage, dir, &file_name(ix.ordinal), &ix.encode())
}

/// Scans a sealed segment and writes its checkpoint.
pub(crate) fn build_and_write(storage: &dyn Storage, dir: &Path, seg: &Segment) -> Result<()> {
    let bytes = seg.read(0, seg.end())?;
    let (ix, stop) = scan(seg, &bytes)?;
    if let Some(stop) = stop {
        return Err(Error::corruption(&seg.path, stop.offset, stop.reason));
    }
    write(storage, dir, &ix).map(|_| ())
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
