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

use foldhash::{HashMap, HashMapExt};
use std::path::{Path, PathBuf};

use crate::engine::format::frame::{self, FRAME_HEADER_LEN, FrameRead};
pub(crate) use crate::engine::format::index_checkpoint::{
    ERASED_TYPE, Records, SegmentIndex, StreamRun, file_name, parse_file_name,
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
        records: None,
        erased: Vec::new(),
        generation: seg.generation,
    };
    let mut records = Records::default();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    let mut types: HashMap<&str, u32> = HashMap::new();
    let mut tags: HashMap<&str, u32> = HashMap::new();
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
        let mut i = 0u64;
        let mut at = f.records_offset;
        for part in f.parts() {
            let run_index = match runs.get(part.stream) {
                Some(&i) => i,
                None => {
                    runs.insert(part.stream, ix.runs.len());
                    ix.runs.push(StreamRun {
                        stream: part.stream.into(),
                        first_version: part.first_version,
                        offsets: Vec::new(),
                    });
                    ix.runs.len() - 1
                }
            };
            let run = ix
                .runs
                .get_mut(run_index)
                .ok_or_else(|| bad("internal: lost a stream run".into()))?;
            if part.first_version != run.first_version + run.offsets.len() as u64 {
                return Err(bad(format!(
                    "frame of stream {:?} starts at version {}, but the stream is at {}",
                    part.stream,
                    part.first_version,
                    run.first_version + run.offsets.len() as u64 - 1
                )));
            }
            if f.erased {
                // Its events are gone: each keeps its version with a location inside the
                // erased frame (which `erased_frame_fits` leaves room for).
                for _ in 0..part.count {
                    run.offsets.push((f.offset as u64) + i);
                    records.run.push(crate::cast::u32_len(run_index));
                    records.event_type.push(ERASED_TYPE);
                    records
                        .tags_end
                        .push(crate::cast::u32_len(records.tag_ids.len()));
                    i += 1;
                }
                continue;
            }
            at = part.records_offset;
            for j in 0..u64::from(part.count) {
                let r = frame::read_record(bytes, at, false)
                    .map_err(|reason| Error::corruption(&seg.path, at as u64, reason))?;
                if r.position != f.first_position + i || r.version != part.first_version + j {
                    return Err(Error::corruption(
                        &seg.path,
                        at as u64,
                        "record's position or version disagrees with its frame",
                    ));
                }
                run.offsets.push(at as u64);
                records.run.push(crate::cast::u32_len(run_index));
                records.event_type.push(if r.erased {
                    ERASED_TYPE
                } else {
                    intern(&mut types, &mut records.types, r.event_type)
                });
                for tag in r.tags.iter() {
                    let id = intern(&mut tags, &mut records.tags, tag);
                    records.tag_ids.push(id);
                }
                records
                    .tags_end
                    .push(crate::cast::u32_len(records.tag_ids.len()));
                at = r.end;
                i += 1;
            }
        }
        if f.erased {
            ix.erased.push((f.offset as u64, f.end() as u64));
        } else if at != f.end() {
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
    ix.records = Some(records);
    Ok((ix, stop))
}

/// The index of `name` in `table`, adding it the first time.
fn intern<'a>(ids: &mut HashMap<&'a str, u32>, table: &mut Vec<Box<str>>, name: &'a str) -> u32 {
    *ids.entry(name).or_insert_with(|| {
        table.push(name.into());
        crate::cast::u32_len(table.len() - 1)
    })
}

impl SegmentIndex {
    /// Adds this segment's events to `index` and its samples to `seg`, checking that every
    /// stream continues from the version the index has.
    pub(crate) fn apply(&self, seg: &Segment, index: &mut StreamIndex) -> Result<()> {
        self.push_into(seg, index, 0)?;
        seg.set_samples(self.samples.clone());
        seg.set_erased(self.erased.clone());
        seg.set_end(self.end);
        Ok(())
    }

    /// Adds this index's events to `index` (each stream's run, then every record to the
    /// query index, in log order), each record offset shifted by `base` (where in the
    /// segment the scanned bytes began), checking that every stream continues from the
    /// version the index has.
    pub(crate) fn push_into(
        &self,
        seg: &Segment,
        index: &mut StreamIndex,
        base: u64,
    ) -> Result<()> {
        let bad = |at: u64, why: String| Error::corruption(&seg.path, base + at, why);
        let records = self
            .records
            .as_ref()
            .ok_or_else(|| bad(0, "internal: an index without its records".into()))?;
        let mut ids = Vec::with_capacity(self.runs.len());
        for run in &self.runs {
            let have = index.version(&run.stream).unwrap_or(0);
            if run.first_version != have + 1 {
                return Err(bad(
                    run.offsets.first().copied().unwrap_or(0),
                    format!(
                        "stream {:?} continues at version {} but was at {have}",
                        run.stream, run.first_version
                    ),
                ));
            }
            ids.push(index.push(
                &run.stream,
                run.offsets.iter().map(|&o| pack(self.ordinal, base + o)),
            ));
        }
        if index.postings.off {
            return Ok(());
        }
        // The segment's tables, numbered in the index once: then each event is added
        // without hashing.
        let postings = &mut index.postings;
        let type_ids: Vec<u32> = records
            .types
            .iter()
            .map(|t| postings.types.id_of(t))
            .collect();
        let tag_ids: Vec<u32> = records
            .tags
            .iter()
            .map(|t| postings.tags.id_of(t))
            .collect();
        let categories: Vec<Option<u32>> = self
            .runs
            .iter()
            .map(|run| {
                crate::engine::postings::category(&run.stream).map(|c| postings.categories.id_of(c))
            })
            .collect();
        let mut tags = Vec::new();
        // The records in log order: the next offset of each one's run.
        let mut next = vec![0usize; self.runs.len()];
        let mut previous = 0u64;
        for (i, &run) in records.run.iter().enumerate() {
            let r = run as usize;
            let (Some(id), Some(taken), Some(offsets)) = (
                ids.get(r),
                next.get_mut(r),
                self.runs.get(r).map(|run| &run.offsets),
            ) else {
                return Err(bad(
                    0,
                    format!("record {i} names run {r}, of {}", ids.len()),
                ));
            };
            let offset = offsets
                .get(*taken)
                .copied()
                .ok_or_else(|| bad(0, format!("record {i}: run {r} has no more records")))?;
            *taken += 1;
            if records.event_type.get(i) == Some(&ERASED_TYPE) {
                // An erased event: in its stream's versions, in no list of the query index.
                index
                    .postings
                    .push_erased(self.base_position + i as u64, *id);
                continue;
            }
            let event_type = records
                .event_type
                .get(i)
                .and_then(|&t| type_ids.get(t as usize))
                .copied()
                .ok_or_else(|| bad(offset, format!("record {i} has no type")))?;
            tags.clear();
            tags.extend(
                records
                    .tags_of(i)
                    .iter()
                    .filter_map(|&t| tag_ids.get(t as usize)),
            );
            let location = pack(self.ordinal, base + offset);
            // The query index's lists must come out in log order.
            if location <= previous {
                return Err(bad(
                    offset,
                    format!("record {i} of the index is out of log order"),
                ));
            }
            previous = location;
            index.postings.push_ids(&crate::engine::postings::Numbered {
                position: self.base_position + i as u64,
                stream: *id,
                location,
                event_type,
                category: categories.get(r).copied().flatten(),
                tags: &tags,
            });
        }
        Ok(())
    }

    /// Whether this checkpoint describes `seg` as it is on disk: same ordinal and base, the
    /// same last frame header at the same place, and empty space right after it.
    pub(crate) fn matches(&self, seg: &Segment) -> bool {
        // A file cut short inside what the checkpoint covers has lost synced frames.
        // A scavenge rewrites a segment with its live records where they were: only the
        // generation tells a checkpoint of the old file from one of the new.
        if self.ordinal != seg.ordinal
            || self.base_position != seg.base_position
            || self.generation != seg.generation
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
    // A format-1 checkpoint lacks what the query index needs: the segment is scanned, and
    // checkpointed again.
    SegmentIndex::decode(&buf).filter(|ix| ix.records.is_some() && ix.matches(seg))
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
