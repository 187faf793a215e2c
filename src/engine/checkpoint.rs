//! Index checkpoints: what one sealed segment contributes to the stream index, saved beside it.
//!
//! When a segment is sealed, a background thread (at a low priority) writes
//! `NNNNNNNNNN.idx` (checksummed; written under a temporary name, synced, renamed, and the
//! directory synced): from what the writer noted as it wrote the segment ([`Builder`]), or,
//! for a segment the writer did not see whole, from a scan of it. On open, recovery loads
//! these instead of scanning sealed segments, so open time follows the unsealed tail rather
//! than the size of the log. Each checkpoint is
//! written once and never replaced, so checkpointing costs O(new data), not O(log) per seal.
//!
//! A checkpoint that is missing, fails its checksum, or does not match its segment (checked
//! against the segment's last frame header) is ignored: that segment is scanned instead. The
//! log is always the source of truth.
#![deny(clippy::indexing_slicing)]

use foldhash::{HashMap, HashMapExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::engine::format::frame::{self, FRAME_HEADER_LEN, FrameRead};
pub(crate) use crate::engine::format::index_checkpoint::{
    ERASED_TYPE, Records, SegmentIndex, StreamRun, file_name, parse_file_name,
};
use crate::engine::index::{RunSlot, StreamIndex, pack};
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

/// The index of no frame of `seg`, from `position` at `offset` on.
fn empty(seg: &Segment, position: u64, offset: u64) -> SegmentIndex {
    SegmentIndex {
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
    }
}

/// [`scan`] from the frame at `offset`, whose first position must be `position` (`verify`
/// resumes there after damage). `base_position` of the result is `position`.
pub(crate) fn scan_from(
    seg: &Segment,
    bytes: &[u8],
    offset: u64,
    position: u64,
) -> Result<(SegmentIndex, Option<Stop>)> {
    let mut ix = empty(seg, position, offset);
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

/// What the writer learns of the active segment as it writes it: enough to make the segment's
/// checkpoint when it is sealed without scanning it again, exactly the [`SegmentIndex`] a
/// [`scan`] would make (a test checks that they agree). It numbers streams, types and tags
/// by the query index's numbers, so an append hashes no name for it, and keeps 12 bytes per
/// record (plus 4 per tag); [`Builder::finish`] lays it out as the checkpoint, on the
/// checkpoint thread. Without the query index (`Options::query_index(false)`), for a
/// segment it did not see from its first frame, or one with a frame it cannot describe (a
/// replica's erased runs), it gives up and the sealed segment is scanned as before.
#[derive(Debug)]
pub(crate) struct Builder {
    /// What the checkpoint says of the segment but its runs' offsets and records; `None`
    /// once given up.
    ix: Option<SegmentIndex>,
    /// Per record, in log order: its offset in the segment, its run, its type (this
    /// segment's number).
    offsets: Vec<u32>,
    run: Vec<u32>,
    event_type: Vec<u32>,
    /// (record, where its tags end in `tag_ids`) for each record with tags.
    tagged: Vec<(u32, u32)>,
    tag_ids: Vec<u32>,
    /// This segment's types and tags, in order of first appearance.
    types: Vec<Box<str>>,
    tags: Vec<Box<str>>,
    /// Each run's next version: its first plus its records so far.
    next_version: Vec<u64>,
    /// This builder's number, which the streams' [`RunSlot`]s name (0: none).
    number: u32,
    /// Type number (the query index's) to this segment's, `u32::MAX` for none yet.
    type_of: Vec<u32>,
    /// Tag number (the query index's) to this segment's.
    tag_of: HashMap<u32, u32>,
}

/// Builders numbered so far in this process.
static BUILDERS: AtomicU32 = AtomicU32::new(0);

impl Builder {
    /// For `seg`, when checkpoints are written (`on`) and nothing is written in it yet (`end`
    /// is the header's end); else one that has given up.
    pub(crate) fn new(on: bool, seg: &Segment, end: u64) -> Self {
        // Offsets are kept in 4 bytes.
        let fresh = on && end == SEGMENT_HEADER_LEN && u32::try_from(seg.capacity).is_ok();
        let mut b = Builder::given_up();
        // Numbers are never used twice in a process, else a stream's slot could name a run
        // of another stream; once they are all used (after 4 billion segments), every
        // segment is scanned.
        let number = fresh
            .then(|| {
                BUILDERS
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
                    .ok()
            })
            .flatten()
            .map(|n| n + 1);
        if let Some(n) = number {
            b.number = n;
            b.ix = Some(empty(seg, seg.base_position, end));
        }
        b
    }

    /// One that has given up: the segment will be scanned.
    pub(crate) fn given_up() -> Self {
        Builder {
            ix: None,
            offsets: Vec::new(),
            run: Vec::new(),
            event_type: Vec::new(),
            tagged: Vec::new(),
            tag_ids: Vec::new(),
            types: Vec::new(),
            tags: Vec::new(),
            next_version: Vec::new(),
            number: 0,
            type_of: Vec::new(),
            tag_of: HashMap::new(),
        }
    }

    /// The segment has a frame this builder cannot describe.
    #[cfg(feature = "nats")]
    pub(crate) fn give_up(&mut self) {
        self.ix = None;
    }

    /// The run of `stream` in this segment, whose next event has version `version`: its
    /// index, `None` once given up (or when the versions do not follow on, which then gives
    /// up). `slot` is the stream's note of its run, kept with the stream in the index so
    /// that an append finds it without a lookup of its own.
    pub(crate) fn run(&mut self, stream: &str, version: u64, slot: &mut RunSlot) -> Option<u32> {
        let ix = self.ix.as_mut()?;
        if slot.builder == self.number {
            let r = slot.run;
            if self.next_version.get(r as usize) == Some(&version) {
                return Some(r);
            }
            self.ix = None;
            return None;
        }
        let r = crate::cast::u32_len(ix.runs.len());
        ix.runs.push(StreamRun {
            stream: stream.into(),
            first_version: version,
            offsets: Vec::new(),
        });
        self.next_version.push(version);
        *slot = RunSlot {
            builder: self.number,
            run: r,
        };
        Some(r)
    }

    /// The next record, of run `run`, at `offset` in the segment: of type number `type_id`
    /// (named `event_type`) with the tags numbered `tag_ids` (named `tags`), as the query
    /// index numbers them; `None` for the type when the query index is off (the builder
    /// then gives up).
    pub(crate) fn record<'t>(
        &mut self,
        run: u32,
        offset: u64,
        type_id: Option<u32>,
        event_type: &str,
        tag_ids: &[u32],
        tags: impl IntoIterator<Item = &'t str>,
    ) {
        let (true, Some(type_id), Ok(offset), Some(next)) = (
            self.ix.is_some(),
            type_id,
            u32::try_from(offset),
            self.next_version.get_mut(run as usize),
        ) else {
            self.ix = None;
            return;
        };
        *next += 1;
        self.offsets.push(offset);
        self.run.push(run);
        let t = type_id as usize;
        let local = match self.type_of.get(t) {
            Some(&l) if l != u32::MAX => l,
            _ => {
                if self.type_of.len() <= t {
                    self.type_of.resize(t + 1, u32::MAX);
                }
                let l = crate::cast::u32_len(self.types.len());
                self.types.push(event_type.into());
                if let Some(slot) = self.type_of.get_mut(t) {
                    *slot = l;
                }
                l
            }
        };
        self.event_type.push(local);
        if tag_ids.is_empty() {
            return;
        }
        for (&id, tag) in tag_ids.iter().zip(tags) {
            let tags = &mut self.tags;
            let local = *self.tag_of.entry(id).or_insert_with(|| {
                tags.push(tag.into());
                crate::cast::u32_len(tags.len() - 1)
            });
            self.tag_ids.push(local);
        }
        let record = crate::cast::u32_len(self.run.len() - 1);
        self.tagged
            .push((record, crate::cast::u32_len(self.tag_ids.len())));
    }

    /// After its records: the frame at `offset`, of `count` events from `first_position`,
    /// whose header is `header` and which ends at `end`.
    pub(crate) fn frame(
        &mut self,
        offset: u64,
        header: &[u8],
        first_position: u64,
        count: u64,
        end: u64,
    ) {
        let Some(ix) = self.ix.as_mut() else {
            return;
        };
        let (Ok(header), true) = (
            <[u8; FRAME_HEADER_LEN]>::try_from(header),
            first_position == ix.base_position + ix.events && offset == ix.end,
        ) else {
            self.ix = None;
            return;
        };
        if sample_due(&ix.samples, offset) {
            ix.samples.push(Sample {
                position: first_position,
                offset,
            });
        }
        ix.last_frame = Some((offset, header));
        ix.events += count;
        ix.end = end;
    }

    /// The checkpoint of `seg`, now sealed, if this builder saw all of it.
    pub(crate) fn finish(self, seg: &Segment) -> Option<SegmentIndex> {
        let mut ix = self.ix.filter(|ix| {
            ix.ordinal == seg.ordinal
                && ix.base_position == seg.base_position
                && ix.generation == seg.generation
                && ix.end == seg.end()
                && self.run.len() as u64 == ix.events
        })?;
        for (run, &next) in ix.runs.iter_mut().zip(&self.next_version) {
            let len = next.saturating_sub(run.first_version);
            run.offsets.reserve_exact(crate::cast::usize_from(len));
        }
        for (&r, &offset) in self.run.iter().zip(&self.offsets) {
            ix.runs.get_mut(r as usize)?.offsets.push(u64::from(offset));
        }
        // Each record's tags end where the last tagged record's before it (or it) end.
        let mut tags_end = Vec::with_capacity(self.run.len());
        let mut tagged = self.tagged.iter().peekable();
        let mut end = 0;
        for i in 0..self.run.len() {
            if let Some(&(_, e)) = tagged.next_if(|&&(r, _)| r as usize == i) {
                end = e;
            }
            tags_end.push(end);
        }
        ix.records = Some(Records {
            types: self.types,
            tags: self.tags,
            run: self.run,
            event_type: self.event_type,
            tags_end,
            tag_ids: self.tag_ids,
        });
        Some(ix)
    }
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

/// The checkpoint of a sealed segment, from a scan of it.
pub(crate) fn build(seg: &Segment) -> Result<SegmentIndex> {
    let bytes = seg.read(0, seg.end())?;
    let (ix, stop) = scan(seg, &bytes)?;
    if let Some(stop) = stop {
        return Err(Error::corruption(&seg.path, stop.offset, stop.reason));
    }
    Ok(ix)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "a test"
)]
mod tests {
    use super::*;
    use crate::engine::testing;
    use crate::event::{EventData, ExpectedVersion};
    use crate::options::FsyncPolicy;
    use crate::storage::SimDisk;
    use crate::transaction::Transaction;
    use std::sync::atomic::Ordering;

    /// Random small appends, transactions, tags (some repeated within an event) and
    /// metadata over several small segments, with reopens between rounds: every checkpoint
    /// the writer made is exactly what a scan of its sealed segment makes.
    #[test]
    fn checkpoints_made_while_writing_equal_a_scan_of_the_segment() {
        for seed in 0..24u64 {
            let disk = SimDisk::new(seed);
            let policy = [FsyncPolicy::Never, FsyncPolicy::Always][seed as usize % 2];
            let options = testing::options().segment_size(16 << 10).fsync(policy);
            let mut unscanned = 0;
            for round in 0..3 {
                let engine = testing::open(&disk, options.clone());
                for i in 0..300u64 {
                    let stream = format!("s{}-{}", disk.random(3), disk.random(12));
                    let event = |k: u64| {
                        let tags: Vec<String> = (0..disk.random(4))
                            .map(|_| format!("t{}", disk.random(6)))
                            .collect();
                        EventData::new(format!("T{}", disk.random(5)), vec![k as u8; 40])
                            .with_tags(tags)
                    };
                    match disk.random(10) {
                        0 => {
                            let other = format!("o-{}", disk.random(4));
                            let tx = Transaction::new()
                                .append(stream.as_str(), ExpectedVersion::Any, [event(i)])
                                .append(other.as_str(), ExpectedVersion::Any, [event(i + 1)]);
                            if stream != other {
                                engine.commit_transaction(&tx).unwrap();
                            }
                        }
                        1 => {
                            let m = crate::lifecycle::StreamMetadata {
                                max_count: Some(1 + disk.random(5)),
                                ..Default::default()
                            };
                            engine
                                .set_stream_metadata(&stream, ExpectedVersion::Any, &m)
                                .unwrap();
                        }
                        _ => {
                            let n = 1 + disk.random(6);
                            let events: Vec<EventData> = (0..n).map(|k| event(i + k)).collect();
                            engine
                                .append(&stream, ExpectedVersion::Any, &events)
                                .unwrap();
                        }
                    }
                }
                engine.close().unwrap();
                unscanned += engine.checkpoints_unscanned.load(Ordering::Relaxed);
                let storage: &dyn Storage = &disk;
                let sealed = engine.log.segments();
                let sealed = &sealed[..sealed.len() - 1];
                assert!(
                    sealed.len() > 2 * (round + 1),
                    "seed {seed}: too few segments"
                );
                for seg in sealed {
                    let made = load(storage, Path::new(testing::DIR), seg)
                        .unwrap_or_else(|| panic!("seed {seed}: segment {} has none", seg.ordinal));
                    let bytes = seg.read(0, seg.end()).unwrap();
                    let (scanned, stop) = scan(seg, &bytes).unwrap();
                    assert!(stop.is_none());
                    assert_eq!(made, scanned, "seed {seed}: segment {}", seg.ordinal);
                }
            }
            assert!(
                unscanned > 6,
                "seed {seed}: only {unscanned} made while writing"
            );
        }
    }
}
