//! Segment files: a header, then frames, then zeroed (preallocated) space.
//!
//! A segment is created whole (header written and synced under a temporary name, then renamed
//! and the directory synced), preallocated to its capacity, and mapped read-only for its whole
//! life. Writes go through positional writes; the shared map sees them. Once the writer moves on
//! to the next segment, a segment is sealed: synced and never written again.
#![deny(clippy::indexing_slicing)]

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;
use std::sync::OnceLock;

use crate::engine::format::frame::{Cursor, RECORD_HEADER_LEN};
pub(crate) use crate::engine::format::index_checkpoint::Sample;
use crate::engine::format::segment_header::decode_header;
pub(crate) use crate::engine::format::segment_header::{
    RETIRED, SEGMENT_HEADER_BYTES, SEGMENT_HEADER_LEN, encode_header, file_name, parse_file_name,
};
use crate::error::{Error, Result};
use crate::storage::{FileMap, Storage, StorageFile};

/// A sparse-index sample is taken at the first frame that starts this many bytes past the
/// previous sample, bounding how far a read by position scans.
pub(crate) const SAMPLE_BYTES: u64 = 4096;

/// How much of a segment past the end of its data (as `SEEK_DATA` reports it) is read to
/// check that it is really empty.
const DATA_END_CHECK: u64 = 64 << 10;

/// The segment of `segments` (in order) that holds `position`: the last one whose base is
/// at or before it.
pub(crate) fn holding(segments: &[Arc<Segment>], position: u64) -> Option<&Arc<Segment>> {
    let i = segments
        .partition_point(|s| s.base_position <= position)
        .checked_sub(1)?;
    segments.get(i)
}

/// Whether `offset` lies in one of `ranges` (sorted, not overlapping, end exclusive).
pub(crate) fn in_ranges(ranges: &[(u64, u64)], offset: u64) -> bool {
    let i = ranges.partition_point(|&(start, _)| start <= offset);
    i.checked_sub(1)
        .and_then(|i| ranges.get(i))
        .is_some_and(|&(_, end)| offset < end)
}

/// Whether a frame at `offset` gets a sample, given the samples so far.
pub(crate) fn sample_due(samples: &[Sample], offset: u64) -> bool {
    samples
        .last()
        .is_none_or(|s| offset >= s.offset + SAMPLE_BYTES)
}

#[derive(Debug)]
enum Data {
    /// A read-only map of the whole (preallocated) file. Reads go through views of the
    /// written prefix only (below [`Segment::end`]), whose bytes never change again: the
    /// writer writes only past it.
    Mapped {
        map: FileMap,
        /// A view of the prefix written for good once the segment is sealed: reads of sealed
        /// segments (most of them) borrow it without a lock or a reference count.
        sealed: OnceLock<Bytes>,
        /// A view of a written prefix of the active segment, grown when a read needs more.
        written: RwLock<Bytes>,
    },
    /// No map available from the storage: read with positional reads.
    File(Arc<dyn StorageFile>),
}

/// One segment file, shared by the writer and readers.
#[derive(Debug)]
pub(crate) struct Segment {
    pub ordinal: u32,
    pub base_position: u64,
    pub path: PathBuf,
    pub capacity: u64,
    data: Data,
    /// The file itself, for reads that must never go through the map (recovery reads parts
    /// that may never have been written: on tmpfs a mapped read of such a page allocates it,
    /// and on a full one that is SIGBUS).
    file: Arc<dyn StorageFile>,
    /// End of the frames written into this segment so far.
    end: AtomicU64,
    samples: RwLock<Vec<Sample>>,
    /// The byte ranges of erased frames (a scavenged segment's, once known), in order: a
    /// location in one is an erased event's. `has_erased` says whether there are any, so
    /// that reads of other segments do not take the lock.
    erased: RwLock<Vec<(u64, u64)>>,
    has_erased: std::sync::atomic::AtomicBool,
    /// Retention dropped all its events ([`crate::Retention`]).
    pub retired: bool,
    /// How many times a scavenge rewrote it (its index checkpoint must say the same).
    pub generation: u32,
}

impl Segment {
    /// Creates segment `ordinal` of `capacity` bytes in `dir`, durably, and returns it with
    /// its file opened for writing.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        ordinal: u32,
        base_position: u64,
        capacity: u64,
    ) -> Result<(Segment, Arc<dyn StorageFile>)> {
        let (path, file) = crate::storage::create_durably(
            storage,
            dir,
            &file_name(ordinal),
            &encode_header(ordinal, base_position),
            capacity,
        )?;
        let file: Arc<dyn StorageFile> = Arc::from(file);
        let seg = Segment::with_file(path, ordinal, base_position, &file)?;
        seg.end.store(SEGMENT_HEADER_LEN, Ordering::Release);
        Ok((seg, file))
    }

    /// Opens an existing segment and checks its header against the name it was listed under.
    pub(crate) fn open(
        storage: &dyn Storage,
        dir: &Path,
        ordinal: u32,
        write: bool,
    ) -> Result<(Segment, Arc<dyn StorageFile>)> {
        let path = dir.join(file_name(ordinal));
        let file: Arc<dyn StorageFile> = Arc::from(
            storage
                .open(&path, write)
                .map_err(|e| Error::io("open", &path, e))?,
        );
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        if len < SEGMENT_HEADER_LEN {
            return Err(Error::corruption(
                &path,
                0,
                "segment is shorter than its header",
            ));
        }
        file.read_exact_at(&mut header, 0)
            .map_err(|e| Error::io("read", &path, e))?;
        let h = decode_header(&header).map_err(|r| Error::corruption(&path, 0, r))?;
        let (found, base) = (h.ordinal, h.base_position);
        if found != ordinal {
            return Err(Error::corruption(
                &path,
                0,
                format!("header says segment {found}, file name says {ordinal}"),
            ));
        }
        let mut seg = Segment::with_file(path, ordinal, base, &file)?;
        seg.retired = h.flags & RETIRED != 0;
        seg.generation = h.generation;
        Ok((seg, file))
    }

    fn with_file(
        path: PathBuf,
        ordinal: u32,
        base_position: u64,
        file: &Arc<dyn StorageFile>,
    ) -> Result<Segment> {
        let capacity = file.len().map_err(|e| Error::io("stat", &path, e))?;
        let data = match file.map().map_err(|e| Error::io("mmap", &path, e))? {
            Some(map) => Data::Mapped {
                map,
                sealed: OnceLock::new(),
                written: RwLock::new(Bytes::new()),
            },
            None => Data::File(Arc::clone(file)),
        };
        Ok(Segment {
            ordinal,
            base_position,
            path,
            capacity,
            data,
            file: Arc::clone(file),
            end: AtomicU64::new(SEGMENT_HEADER_LEN),
            samples: RwLock::new(Vec::new()),
            erased: RwLock::new(Vec::new()),
            has_erased: std::sync::atomic::AtomicBool::new(false),
            retired: false,
            generation: 0,
        })
    }

    /// Bytes `[offset, offset + len)` of the file: a view of the map, or a fresh read.
    pub(crate) fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.capacity)
            .ok_or_else(|| {
                Error::corruption(&self.path, offset, "read runs past the end of the segment")
            })?;
        match &self.data {
            Data::Mapped { .. } => {
                let view = self.view(end)?;
                Ok(view.slice(crate::cast::usize_from(offset)..crate::cast::usize_from(end)))
            }
            Data::File(file) => {
                let mut buf = vec![0u8; crate::cast::usize_from(len)];
                file.read_exact_at(&mut buf, offset)
                    .map_err(|e| Error::io("read", &self.path, e))?;
                Ok(Bytes::from(buf))
            }
        }
    }

    /// Bytes `[offset, offset + len)` read with `pread`, never through the map; fewer at the
    /// end of the file.
    pub(crate) fn pread(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.pread_into(offset, len, &mut buf)?;
        Ok(buf)
    }

    /// [`pread`](Self::pread) into `buf`, whose allocation (and pages, already faulted in) it
    /// reuses: only bytes past its old length are zeroed first.
    pub(crate) fn pread_into(&self, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        let len = usize::try_from(len.min(self.capacity.saturating_sub(offset))).map_err(|_| {
            Error::corruption(&self.path, offset, "read larger than the address space")
        })?;
        buf.truncate(len);
        buf.resize(len, 0);
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io("read", &self.path, e))
    }

    /// The file's bytes from offset 0 up to the end of its last data (past it the file is a
    /// hole, which reads as zeros), read with `pread`: what `verify`, `repair` and a
    /// read-only open scan, where a writer may be writing the file meanwhile.
    pub(crate) fn read_data(&self) -> Result<Vec<u8>> {
        let end = self.data_end()?;
        self.pread(0, end)
    }

    /// The same bytes as [`read_data`](Self::read_data), borrowed from the map when there is
    /// one, for the scans of an open. Only the file's data is viewed, never a hole after it
    /// (on tmpfs a mapped read of a hole allocates a page, and on a full one that is SIGBUS).
    ///
    /// The caller must not let anything write the file while the view lives: it is for
    /// sealed segments, and for the active one of a writable open, whose recovery drops the
    /// view before it writes.
    #[expect(unsafe_code, reason = "a view of the map's written data (see SAFETY)")]
    pub(crate) fn scan_data(&self) -> Result<std::borrow::Cow<'_, [u8]>> {
        let end = self.data_end()?;
        match &self.data {
            Data::Mapped { map, .. } => {
                let end = usize::try_from(end)
                    .ok()
                    .filter(|&e| e <= map.len())
                    .ok_or_else(|| Error::corruption(&self.path, end, "data past the map"))?;
                // SAFETY: nothing writes this file while the view lives (the contract above:
                // sealed segments are never written again, and a writable open holds the
                // store's lock and writes the active segment only after dropping the view).
                Ok(std::borrow::Cow::Borrowed(unsafe { map.prefix(end) }))
            }
            Data::File(_) => self.pread(0, end).map(std::borrow::Cow::Owned),
        }
    }

    /// The end of the file's data, by `SEEK_DATA`/`SEEK_HOLE`, checked rather than trusted:
    /// data right after it means the file system under-reports (a bug some have had), and
    /// then it is the whole file.
    pub(crate) fn data_end(&self) -> Result<u64> {
        let end = self
            .file
            .data_end()
            .map_err(|e| Error::io("seek data", &self.path, e))?
            .min(self.capacity);
        let after = self.pread(end, DATA_END_CHECK)?;
        if after.iter().any(|&b| b != 0) {
            return Ok(self.capacity);
        }
        Ok(end)
    }

    /// A buffer holding the record at `offset` (header and content, not yet checked) and the
    /// record's offset in it: the whole map when mapped (no copy, no reference count touched),
    /// else a buffer read for it.
    pub(crate) fn record_source<'a>(
        &'a self,
        offset: u64,
        cached: &'a mut Bytes,
    ) -> Result<(Cow<'a, Bytes>, usize)> {
        match &self.data {
            Data::Mapped { sealed, .. } => {
                let view = match sealed.get() {
                    Some(v) => Cow::Borrowed(v),
                    None => {
                        // The active segment: a view kept by the reader, renewed only when
                        // the record lies past it.
                        let need = offset.saturating_add(RECORD_HEADER_LEN as u64 + 1);
                        if (cached.len() as u64) < need {
                            *cached = self.view(self.end())?;
                        }
                        Cow::Borrowed(&*cached)
                    }
                };
                match usize::try_from(offset) {
                    Ok(at) if at < view.len() => Ok((view, at)),
                    _ => Err(Error::corruption(
                        &self.path,
                        offset,
                        "read runs past the written end of the segment",
                    )),
                }
            }
            Data::File(_) => {
                let header = self.read(offset, RECORD_HEADER_LEN as u64)?;
                let len = Cursor::new(&header, 0).u32().unwrap_or(0);
                let record = self.read(offset, RECORD_HEADER_LEN as u64 + u64::from(len))?;
                Ok((Cow::Owned(record), 0))
            }
        }
    }

    /// Loads the first cache lines of the record at `offset` and returns a value made of them,
    /// for the caller to pass to [`std::hint::black_box`]. A read of many scattered records
    /// first touches a group of them with independent loads, which the CPU overlaps, so that
    /// their memory latencies are paid together instead of one by one. Reads nothing for
    /// unmapped segments or offsets out of range.
    pub(crate) fn touch(&self, offset: u64, cached: &mut Bytes) -> u8 {
        let Data::Mapped { sealed, .. } = &self.data else {
            return 0;
        };
        let map = match sealed.get() {
            Some(v) => v,
            None => {
                if (cached.len() as u64) <= offset {
                    match self.view(self.end()) {
                        Ok(v) => *cached = v,
                        Err(_) => return 0,
                    }
                }
                &*cached
            }
        };
        let Ok(start) = usize::try_from(offset) else {
            return 0;
        };
        // Four lines cover the header and most of a typical small event.
        (0..4)
            .filter_map(|line| map.get(start.saturating_add(line * 64)))
            .fold(0, |acc, b| acc ^ b)
    }

    /// A view of the mapped bytes `[0, end)`, which must all be written (`end` at most
    /// [`end`](Self::end)): such bytes never change again, so the view is sound.
    #[expect(
        unsafe_code,
        reason = "a view of the map's written prefix (see SAFETY)"
    )]
    fn view(&self, end: u64) -> Result<Bytes> {
        let Data::Mapped {
            map,
            sealed,
            written,
        } = &self.data
        else {
            return Err(Error::corruption(&self.path, end, "segment is not mapped"));
        };
        let past = || {
            Error::corruption(
                &self.path,
                end,
                "read runs past the written end of the segment",
            )
        };
        let written_end = self.end();
        if end > written_end {
            return Err(past());
        }
        let end = usize::try_from(end).map_err(|_| past())?;
        if let Some(v) = sealed.get() {
            return if end <= v.len() {
                Ok(v.clone())
            } else {
                Err(past())
            };
        }
        {
            let v = written.read();
            if v.len() >= end {
                return Ok(v.clone());
            }
        }
        let mut v = written.write();
        if v.len() < end {
            let upto = usize::try_from(written_end).map_err(|_| past())?;
            if upto > map.len() {
                return Err(past());
            }
            // SAFETY: bytes below the segment's end are frames written for good: the writer
            // only writes past it, and nothing in annal rewrites them while the store is open
            // (recovery writes the same bytes again before any reader exists; a scavenge
            // writes a new file and renames it over this one, whose inode stays as it is).
            *v = unsafe { map.prefix_bytes(upto) };
        }
        Ok(v.clone())
    }

    /// Notes where erased frames are (from a scan or checkpoint of the segment, or of the
    /// part of it a follower took in): after those known already.
    pub(crate) fn set_erased(&self, ranges: Vec<(u64, u64)>) {
        let Some(&(first, _)) = ranges.first() else {
            return;
        };
        let mut known = self.erased.write();
        known.retain(|&(start, _)| start < first);
        known.extend(ranges);
        self.has_erased.store(true, Ordering::Release);
    }

    /// Whether `offset` lies in an erased frame: the location of an event a scavenge erased.
    pub(crate) fn is_erased(&self, offset: u64) -> bool {
        self.has_erased.load(Ordering::Acquire) && in_ranges(&self.erased.read(), offset)
    }

    /// Marks the segment sealed: never written again. Its written bytes get one view that
    /// every later read borrows.
    #[expect(unsafe_code, reason = "a view of a sealed segment's map (see SAFETY)")]
    pub(crate) fn seal(&self) {
        if let Data::Mapped { map, sealed, .. } = &self.data
            && let Ok(end) = usize::try_from(self.end())
            && end <= map.len()
        {
            // SAFETY: a sealed segment is never written again (see `view`).
            let _ = sealed.set(unsafe { map.prefix_bytes(end) });
        }
    }

    /// End of the frames written so far.
    pub(crate) fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    pub(crate) fn set_end(&self, end: u64) {
        // Invariant: the written end only grows, and stays within the file.
        debug_assert!(end >= self.end(), "segment end moved back");
        debug_assert!(end <= self.capacity, "segment end past the file");
        self.end.store(end, Ordering::Release);
    }

    /// Records that the frame at `offset` starts at `position`, if a sample is due.
    pub(crate) fn note_frame(&self, position: u64, offset: u64) {
        let mut samples = self.samples.write();
        // Invariant: frames come in position and offset order.
        debug_assert!(
            samples
                .last()
                .is_none_or(|s| s.position < position && s.offset < offset),
            "frame out of order"
        );
        if sample_due(&samples, offset) {
            samples.push(Sample { position, offset });
        }
    }

    /// Replaces the sparse position index (from a scan or a checkpoint).
    pub(crate) fn set_samples(&self, samples: Vec<Sample>) {
        *self.samples.write() = samples;
    }

    /// The sample chunk holding `position`: its index, or `None` when the segment has no frame.
    pub(crate) fn chunk_of(&self, position: u64) -> Option<usize> {
        let samples = self.samples.read();
        let n = samples.partition_point(|s| s.position <= position);
        n.checked_sub(1)
    }

    /// Byte range of chunk `i`: from its sample to the next one (or to `end`).
    pub(crate) fn chunk_range(&self, i: usize, end: u64) -> Option<(u64, u64)> {
        let samples = self.samples.read();
        let start = samples.get(i)?.offset;
        let stop = samples.get(i + 1).map_or(end, |s| s.offset).min(end);
        (start < stop).then_some((start, stop))
    }

    /// Byte range that a forward read from `position` decodes at once: from the sample before
    /// it to `end` when the segment is mapped (a view costs nothing), else just its chunk.
    pub(crate) fn forward_range(&self, position: u64, end: u64) -> Option<(u64, u64)> {
        let i = self.chunk_of(position)?;
        let (start, stop) = self.chunk_range(i, end)?;
        match self.data {
            Data::Mapped { .. } => Some((start, end.max(stop))),
            Data::File(_) => Some((start, stop)),
        }
    }

    /// The offset of the frame that holds `position`, or one before it in the same segment
    /// (the sample at or before it), if the segment has frames.
    pub(crate) fn offset_of(&self, position: u64) -> Option<u64> {
        let i = self.chunk_of(position)?;
        self.samples.read().get(i).map(|s| s.offset)
    }

    /// A segment with no file behind it, standing for the log of a store whose first segment
    /// was never created, read-only: no frames, nothing to write.
    pub(crate) fn empty(dir: &Path) -> (Segment, Arc<dyn StorageFile>) {
        let file: Arc<dyn StorageFile> = Arc::new(crate::storage::NoFile);
        let seg = Segment {
            ordinal: 1,
            base_position: 1,
            path: dir.join(file_name(1)),
            capacity: 0,
            data: Data::File(Arc::clone(&file)),
            file: Arc::clone(&file),
            end: AtomicU64::new(SEGMENT_HEADER_LEN),
            samples: RwLock::new(Vec::new()),
            erased: RwLock::new(Vec::new()),
            has_erased: std::sync::atomic::AtomicBool::new(false),
            retired: false,
            generation: 0,
        };
        (seg, file)
    }

    /// Bytes of memory held by the sparse position index.
    pub(crate) fn sample_bytes(&self) -> usize {
        self.samples.read().capacity() * std::mem::size_of::<Sample>()
    }
}
