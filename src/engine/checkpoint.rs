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

use crate::engine::format::frame::{self, FRAME_HEADER_LEN, FrameRead};
pub(crate) use crate::engine::format::index_checkpoint::{
    SegmentIndex, StreamRun, file_name, parse_file_name,
};
use crate::engine::index::{StreamIndex, pack};
use crate::engine::segment::{SEGMENT_HEADER_LEN, Sample, Segment, sample_due};
use crate::error::{Error, Result};
use crate::storage::Storage;

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
        self.push_runs(seg, index, 0)?;
        seg.set_samples(self.samples.clone());
        seg.set_end(self.end);
        Ok(())
    }

    /// Adds this index's runs to `index`, each record offset shifted by `base` (where in the
    /// segment the scanned bytes began), checking that every stream continues from the
    /// version the index has.
    pub(crate) fn push_runs(
        &self,
        seg: &Segment,
        index: &mut StreamIndex,
        base: u64,
    ) -> Result<()> {
        for run in &self.runs {
            let have = index.version(&run.stream).unwrap_or(0);
            if run.first_version != have + 1 {
                return Err(Error::corruption(
                    &seg.path,
                    base + run.offsets.first().copied().unwrap_or(0),
                    format!(
                        "stream {:?} continues at version {} but was at {have}",
                        run.stream, run.first_version
                    ),
                ));
            }
            index.push(
                &run.stream,
                run.offsets.iter().map(|&o| pack(self.ordinal, base + o)),
            );
        }
        Ok(())
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
