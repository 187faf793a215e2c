//! Opening a log: scan the segments, rebuild the stream index, and cut a torn tail.
//!
//! The rules, in order of how much they matter:
//! - A frame that fails its check at the very end of the last segment, with nothing valid after
//!   it, is a torn write. It was never acknowledged under `Always` (the append had not returned)
//!   and it is cut: its bytes are zeroed and the segment synced.
//! - A bad frame followed by any valid frame is corruption: the open fails and nothing is
//!   changed on disk. Truncating there would silently drop acknowledged data.
//! - A sealed segment (any but the last) must be whole: a bad frame in it is corruption, and
//!   positions must run on densely into the next segment.
#![deny(clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::frame::{self, FRAME_HEADER_LEN, FrameRead, MIN_RECORD_LEN};
use crate::index::{StreamIndex, pack};
use crate::log::Active;
use crate::segment::{self, SEGMENT_HEADER_LEN, Segment};
use crate::storage::Storage;

/// What recovery found and did when the store was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments_scanned: usize,
    /// Events found in the log.
    pub events: u64,
    /// Bytes of torn tail cut from the last segment (zeroed and synced); 0 after a clean close.
    pub truncated_bytes: u64,
    /// Where the torn tail started, when one was cut: the segment file and byte offset.
    pub truncated_at: Option<(PathBuf, u64)>,
    /// Leftover temporary files (from a segment creation interrupted by a crash) removed.
    pub removed_temp_files: usize,
}

/// The log as recovery left it.
pub(crate) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    pub active: Active,
    pub next_position: u64,
    pub report: RecoveryReport,
}

/// Scans every segment in `dir` into `index`, creating the first segment of a new store.
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    segment_size: u64,
    index: &mut StreamIndex,
) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    let names = storage.list(dir).map_err(|e| Error::io("list", dir, e))?;
    for name in names.iter().filter(|n| n.ends_with(".seg.tmp")) {
        let p = dir.join(name);
        storage.remove(&p).map_err(|e| Error::io("remove", &p, e))?;
        report.removed_temp_files += 1;
    }
    if report.removed_temp_files > 0 {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    let mut ordinals: Vec<u32> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .collect();
    ordinals.sort_unstable();
    for (i, &ord) in ordinals.iter().enumerate() {
        let want = i as u32 + 1;
        if ord != want {
            return Err(Error::corruption(
                dir.join(segment::file_name(want)),
                0,
                "segment file is missing: the log has a gap",
            ));
        }
    }

    let Some(&last) = ordinals.last() else {
        let (seg, file) = Segment::create(storage, dir, 1, 1, segment_size)?;
        let seg = Arc::new(seg);
        return Ok(Recovered {
            segments: vec![Arc::clone(&seg)],
            active: Active {
                seg,
                file,
                offset: SEGMENT_HEADER_LEN,
            },
            next_position: 1,
            report,
        });
    };

    let mut segments = Vec::with_capacity(ordinals.len());
    let mut next_position = 1u64;
    let mut active = None;
    for &ord in &ordinals {
        let is_last = ord == last;
        let (seg, file) = Segment::open(storage, dir, ord, is_last)?;
        if seg.base_position != next_position {
            return Err(Error::corruption(
                &seg.path,
                0,
                format!(
                    "segment starts at position {}, but the log before it ends at {}",
                    seg.base_position,
                    next_position - 1
                ),
            ));
        }
        let bytes = seg.read(0, seg.capacity)?;
        let end = scan_segment(&seg, &bytes, &mut next_position, index)?;
        if let Some(reason) = end.stopped
            && !is_last
        {
            return Err(Error::corruption(&seg.path, end.offset as u64, reason));
        }
        if is_last {
            // Anything non-zero past the last good frame is either a torn write, to be cut, or
            // (when a valid frame follows) corruption, to be refused.
            let junk_end = bytes
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |i| i + 1)
                .max(end.offset);
            if junk_end > end.offset {
                if let Some(at) = find_valid_frame(&bytes, end.offset, next_position) {
                    let what = end.stopped.unwrap_or("empty space");
                    return Err(Error::corruption(
                        &seg.path,
                        end.offset as u64,
                        format!(
                            "{what}, but a valid frame follows at byte {at}: refusing to drop it"
                        ),
                    ));
                }
                drop(bytes);
                zero_range(file.as_ref(), &seg.path, end.offset as u64, junk_end as u64)?;
                report.truncated_bytes = (junk_end - end.offset) as u64;
                report.truncated_at = Some((seg.path.clone(), end.offset as u64));
            }
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", &seg.path, e))?;
        }
        let end_of_data = end.offset;
        seg.set_end(end_of_data as u64);
        let seg = Arc::new(seg);
        if is_last {
            active = Some(Active {
                seg: Arc::clone(&seg),
                file,
                offset: end_of_data as u64,
            });
        }
        segments.push(seg);
        report.segments_scanned += 1;
    }
    report.events = next_position - 1;
    let active = active.ok_or_else(|| Error::corruption(dir, 0, "no active segment"))?;
    Ok(Recovered {
        segments,
        active,
        next_position,
        report,
    })
}

struct ScanEnd {
    /// Offset just past the last good frame.
    offset: usize,
    /// Why the scan stopped before the empty space, if it did.
    stopped: Option<&'static str>,
}

/// Indexes every valid frame of one segment; stops at empty space or the first bad frame.
fn scan_segment(
    seg: &Segment,
    bytes: &[u8],
    next_position: &mut u64,
    index: &mut StreamIndex,
) -> Result<ScanEnd> {
    let mut offset = SEGMENT_HEADER_LEN as usize;
    loop {
        match frame::read_frame(bytes, offset) {
            FrameRead::End => {
                return Ok(ScanEnd {
                    offset,
                    stopped: None,
                });
            }
            FrameRead::Bad(reason) => {
                return Ok(ScanEnd {
                    offset,
                    stopped: Some(reason),
                });
            }
            FrameRead::Malformed(reason) => {
                return Err(Error::corruption(&seg.path, offset as u64, reason));
            }
            FrameRead::Frame(f) => {
                let bad = |reason: String| Error::corruption(&seg.path, f.offset as u64, reason);
                if f.first_position != *next_position {
                    return Err(bad(format!(
                        "frame starts at position {}, expected {}",
                        f.first_position, next_position
                    )));
                }
                let have = index.version(f.stream).unwrap_or(0);
                if f.first_version != have + 1 {
                    return Err(bad(format!(
                        "frame of stream {:?} starts at version {}, but the stream is at {}",
                        f.stream, f.first_version, have
                    )));
                }
                let mut at = f.records_offset;
                let mut locations = Vec::with_capacity(f.count as usize);
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
                    locations.push(pack(seg.ordinal, at as u64));
                    at = r.end;
                }
                if at != f.end() {
                    return Err(bad("frame has bytes after its last record".into()));
                }
                index.push(f.stream, locations);
                seg.note_frame(f.first_position, f.offset as u64);
                *next_position += u64::from(f.count);
                offset = f.end();
            }
        }
    }
}

/// The offset of a frame after `from` that passes its checksum and could continue the log
/// (its first position is plausible), if there is one.
fn find_valid_frame(bytes: &[u8], from: usize, next_position: u64) -> Option<usize> {
    let max_position = next_position.saturating_add((bytes.len() / MIN_RECORD_LEN) as u64);
    let mut o = from + 1;
    while o + FRAME_HEADER_LEN <= bytes.len() {
        // A frame's length field has a non-zero byte: skip runs of zeros quickly.
        let skip = bytes.get(o..)?.iter().position(|&b| b != 0)?;
        if skip > 3 {
            o += skip - 3;
            continue;
        }
        let mut c = frame::Cursor::new(bytes, o);
        let len = c.u32().unwrap_or(0) as usize;
        let _crc = c.u32();
        let first = c.u64().unwrap_or(0);
        if len >= MIN_RECORD_LEN
            && (next_position..=max_position).contains(&first)
            && matches!(frame::read_frame(bytes, o), FrameRead::Frame(_))
        {
            return Some(o);
        }
        o += 1;
    }
    None
}

fn zero_range(
    file: &dyn crate::storage::StorageFile,
    path: &Path,
    from: u64,
    to: u64,
) -> Result<()> {
    let zeros = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(zeros.get(..n).unwrap_or_default(), at)
            .map_err(|e| Error::io("write", path, e))?;
        at += n as u64;
    }
    Ok(())
}
