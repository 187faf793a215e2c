//! Opening a log: load or rebuild the stream index, and cut a torn tail.
//!
//! The rules, in order of how much they matter:
//! - A frame that fails its check at the very end of the last segment, with nothing valid after
//!   it, is a torn write. It was never acknowledged under `Always` (the append had not returned)
//!   and it is cut: its bytes are zeroed and the segment synced.
//! - A bad frame followed by any valid frame is corruption: the open fails and nothing is
//!   changed on disk. Truncating there would silently drop acknowledged data.
//! - A sealed segment (any but the last) must be whole: a bad frame in it is corruption, and
//!   positions must run on densely into the next segment.
//! - Sealed segments with a matching index checkpoint are not scanned at all.
#![deny(clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::frame::{self, FRAME_HEADER_LEN, FrameRead, MIN_RECORD_LEN};
use crate::index::StreamIndex;
use crate::log::Active;
use crate::segment::{self, SEGMENT_HEADER_LEN, Segment};
use crate::storage::Storage;

/// What recovery found and did when the store was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files whose frames were scanned (the active one, and sealed ones without a
    /// usable index checkpoint).
    pub segments_scanned: usize,
    /// Sealed segments whose index came from their checkpoint file, unscanned.
    pub segments_from_checkpoint: usize,
    /// Events found in the log.
    pub events: u64,
    /// Bytes of torn tail cut from the last segment (zeroed and synced); 0 after a clean close
    /// and always 0 when opened read-only.
    pub truncated_bytes: u64,
    /// Where the torn tail started, when one was cut: the segment file and byte offset. Read-only,
    /// where the readable log ends when something (another writer's append in progress, or
    /// damage) follows it.
    pub truncated_at: Option<(PathBuf, u64)>,
    /// Leftover temporary files (from a creation interrupted by a crash) removed.
    pub removed_temp_files: usize,
    /// The store directory and the files in it whose permissions let others read them: any
    /// read bit for others, or for the group too unless
    /// [`Options::share_with_group`](crate::Options::share_with_group). Empty for a store
    /// annal created (see that option), and on storage without Unix modes. Nothing is
    /// changed: fixing the modes is the owner's call.
    pub readable_by_others: Vec<PathBuf>,
}

/// The log as recovery left it.
pub(crate) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    pub active: Active,
    pub next_position: u64,
    pub report: RecoveryReport,
    /// Sealed segments that have no usable checkpoint yet.
    pub unindexed: Vec<u32>,
}

/// Recovers every segment in `dir` into `index`, creating the first segment of a new store.
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    opts: &RecoverOptions,
    index: &mut StreamIndex,
) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    let names = storage.list(dir).map_err(|e| Error::io("list", dir, e))?;
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
        if opts.read_only {
            return Err(Error::corruption(
                dir.join(segment::file_name(1)),
                0,
                "no segment files: there is no store here to open read-only",
            ));
        }
        if names.iter().any(|n| n.ends_with(".idx")) {
            return Err(Error::corruption(
                dir.join(segment::file_name(1)),
                0,
                "index checkpoints exist but every segment file is missing",
            ));
        }
        remove_temp_files(storage, dir, &names, &mut report)?;
        let (seg, file) = Segment::create(storage, dir, 1, 1, opts.segment_size)?;
        let seg = Arc::new(seg);
        return Ok(Recovered {
            segments: vec![Arc::clone(&seg)],
            active: Active::new(seg, file, SEGMENT_HEADER_LEN, !opts.read_only),
            next_position: 1,
            report,
            unindexed: Vec::new(),
        });
    };

    let mut segments = Vec::with_capacity(ordinals.len());
    let mut unindexed = Vec::new();
    let mut next_position = 1u64;
    for &ord in ordinals.iter().filter(|&&o| o != last) {
        let (seg, _file) = Segment::open(storage, dir, ord, false)?;
        check_base(&seg, next_position)?;
        let loaded = if opts.use_checkpoints {
            checkpoint::load(storage, dir, &seg)
        } else {
            None
        };
        let ix = match loaded {
            Some(ix) => {
                report.segments_from_checkpoint += 1;
                ix
            }
            None => {
                let bytes = seg.read(0, seg.capacity)?;
                let (ix, stop) = checkpoint::scan(&seg, &bytes)?;
                if let Some(stop) = stop {
                    return Err(Error::corruption(&seg.path, stop.offset, stop.reason));
                }
                report.segments_scanned += 1;
                unindexed.push(ord);
                ix
            }
        };
        ix.apply(&seg, index)?;
        next_position = advance(&seg, next_position, ix.events)?;
        segments.push(Arc::new(seg));
    }

    // The active segment: always scanned, and the only place a torn tail may be cut.
    let (seg, file) = Segment::open(storage, dir, last, !opts.read_only)?;
    check_base(&seg, next_position)?;
    let bytes = seg.read(0, seg.capacity)?;
    let (ix, stop) = checkpoint::scan(&seg, &bytes)?;
    report.segments_scanned += 1;
    let end = ix.end as usize;
    let junk_end = last_nonzero(&bytes).max(end);
    if junk_end > end {
        // Damage, then maybe valid frames. Page writeback has no order, so after a power loss
        // an unsynced frame can survive while an earlier unsynced one is lost. The damage is a
        // torn tail when nothing says the damaged position had been synced: neither a clean
        // close that synced past it, nor a later frame written after a sync covered it. Then
        // everything from the damage on was never durable, and it is all cut. Otherwise
        // synced data is damaged, and the open is refused.
        let hole = next_position + ix.events;
        let synced_by = if opts.durable_floor >= hole {
            Some("the last clean close".to_string())
        } else if opts.read_only {
            // Read-only, the file may be growing under the scan: a frame appended right at the
            // end of the scanned data would be missed and the frames after it taken for proof
            // of a hole. So only STATE's durable position (read before the scan, and never past
            // what a running writer has) can say that data here was synced.
            None
        } else {
            frames_after(&bytes, end, hole)
                .filter(|&(_, durable)| durable >= hole)
                .map(|(at, _)| format!("the frame at byte {at}"))
        };
        if let Some(witness) = synced_by {
            let what = stop.map_or("empty space", |s| s.reason);
            return Err(Error::corruption(
                &seg.path,
                end as u64,
                format!(
                    "{what} at position {hole}, which {witness} shows had been synced: \
                     refusing to drop durable data"
                ),
            ));
        }
    }
    // Only now, with the whole log checked, is anything changed on disk.
    ix.apply(&seg, index)?;
    next_position = advance(&seg, next_position, ix.events)?;
    if opts.read_only {
        // Nothing is changed: the readable log just ends before whatever follows.
        if junk_end > end {
            report.truncated_at = Some((seg.path.clone(), end as u64));
        }
    } else {
        remove_temp_files(storage, dir, &names, &mut report)?;
        repair_tail(
            &mut report,
            opts.clean,
            &seg,
            file.as_ref(),
            bytes,
            end,
            junk_end,
        )?;
    }
    let seg = Arc::new(seg);
    segments.push(Arc::clone(&seg));
    report.events = next_position - 1;
    Ok(Recovered {
        segments,
        active: Active::new(seg, file, end as u64, !opts.read_only),
        next_position,
        report,
        unindexed,
    })
}

/// Makes the active segment's tail right on disk: the data rewritten after an unclean
/// shutdown, a torn tail zeroed, and the segment synced.
fn repair_tail(
    report: &mut RecoveryReport,
    clean: bool,
    seg: &Segment,
    file: &dyn crate::storage::StorageFile,
    bytes: bytes::Bytes,
    end: usize,
    junk_end: usize,
) -> Result<()> {
    if !clean {
        // After a failed writeback the kernel may keep pages it could not write but mark them
        // clean: they read back fine and would never be written again. Rewriting the data makes
        // the sync below write it for real. Copied through a buffer: the source is a map of the
        // very pages being written.
        let data = bytes
            .get(SEGMENT_HEADER_LEN as usize..end)
            .unwrap_or_default();
        let mut at = SEGMENT_HEADER_LEN;
        let mut buf = Vec::with_capacity(1 << 20);
        for chunk in data.chunks(1 << 20) {
            buf.clear();
            buf.extend_from_slice(chunk);
            file.write_all_at(&buf, at)
                .map_err(|e| Error::io("write", &seg.path, e))?;
            at += chunk.len() as u64;
        }
    }
    drop(bytes);
    if junk_end > end {
        zero_range(file, &seg.path, end as u64, junk_end as u64)?;
        report.truncated_bytes = (junk_end - end) as u64;
        report.truncated_at = Some((seg.path.clone(), end as u64));
    }
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &seg.path, e))
}

/// How to recover.
pub(crate) struct RecoverOptions {
    pub segment_size: u64,
    pub use_checkpoints: bool,
    /// Every position up to this one was synced by a clean close.
    pub durable_floor: u64,
    /// The store was closed cleanly: nothing needs writing again.
    pub clean: bool,
    /// Change nothing: no tail is cut, no file written or removed.
    pub read_only: bool,
}

fn advance(seg: &Segment, next_position: u64, events: u64) -> Result<u64> {
    next_position
        .checked_add(events)
        .ok_or_else(|| Error::corruption(&seg.path, 0, "positions overflow"))
}

fn remove_temp_files(
    storage: &dyn Storage,
    dir: &Path,
    names: &[String],
    report: &mut RecoveryReport,
) -> Result<()> {
    for name in names.iter().filter(|n| crate::storage::is_own_temp_name(n)) {
        let p = dir.join(name);
        storage.remove(&p).map_err(|e| Error::io("remove", &p, e))?;
        report.removed_temp_files += 1;
    }
    if report.removed_temp_files > 0 {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    Ok(())
}

/// Offset just past the last non-zero byte (0 if all are zero). Compares eight bytes at a
/// time: on every open this runs over the unused, zeroed rest of the active segment.
fn last_nonzero(bytes: &[u8]) -> usize {
    let words = bytes.len() / 8;
    let (head, tail) = bytes.split_at(words * 8);
    if let Some(i) = tail.iter().rposition(|&b| b != 0) {
        return head.len() + i + 1;
    }
    let last_word = head
        .chunks_exact(8)
        .rposition(|w| u64::from_ne_bytes(w.try_into().unwrap_or([0; 8])) != 0);
    match last_word {
        Some(w) => {
            let word = head.get(w * 8..w * 8 + 8).unwrap_or_default();
            w * 8 + word.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
        }
        None => 0,
    }
}

fn check_base(seg: &Segment, next_position: u64) -> Result<()> {
    if seg.base_position == next_position {
        return Ok(());
    }
    Err(Error::corruption(
        &seg.path,
        0,
        format!(
            "segment starts at position {}, but the log before it ends at {}",
            seg.base_position,
            next_position - 1
        ),
    ))
}

/// The valid frames after damage at `from`: the offset of the first, and the highest
/// durable position any of them recorded.
fn frames_after(bytes: &[u8], from: usize, hole: u64) -> Option<(usize, u64)> {
    let first = find_valid_frame(bytes, from, hole)?;
    let mut durable = 0;
    let mut at = first;
    loop {
        match frame::read_frame(bytes, at) {
            FrameRead::Frame(f) => {
                durable = durable.max(f.durable);
                at = f.end();
            }
            _ => match find_valid_frame(bytes, at, hole) {
                Some(next) => at = next,
                None => return Some((first, durable)),
            },
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

/// The `STATE` file: whether the store was closed cleanly, and a position up to which the
/// log is known durable.
const STATE_FILE: &str = "STATE";
const STATE_MAGIC: [u8; 8] = *b"ANNALSTA";

/// What `STATE` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ShutdownState {
    pub clean: bool,
    pub durable_floor: u64,
}

/// Reads `STATE`; a missing or damaged one reads as "not clean, nothing known durable".
pub(crate) fn read_state(storage: &dyn Storage, dir: &Path) -> ShutdownState {
    let read = || -> Option<ShutdownState> {
        let f = storage.open(&dir.join(STATE_FILE), false).ok()?;
        let mut buf = [0u8; 24];
        f.read_exact_at(&mut buf, 0).ok()?;
        let mut c = frame::Cursor::new(&buf, 0);
        if c.bytes(8)? != STATE_MAGIC {
            return None;
        }
        let flags = c.u32()?;
        let floor = c.u64()?;
        let covered = buf.get(..c.pos())?;
        (crc32fast::hash(covered) == c.u32()?).then_some(ShutdownState {
            clean: flags & 1 == 1,
            durable_floor: floor,
        })
    };
    read().unwrap_or_default()
}

/// Replaces `STATE` durably (temporary file, sync, rename, directory sync).
pub(crate) fn write_state(storage: &dyn Storage, dir: &Path, state: ShutdownState) -> Result<()> {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&STATE_MAGIC);
    b.extend_from_slice(&u32::from(state.clean).to_le_bytes());
    b.extend_from_slice(&state.durable_floor.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    crate::storage::replace_file(storage, dir, STATE_FILE, &b).map(|_| ())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn last_nonzero_finds_the_end_of_data() {
        assert_eq!(last_nonzero(&[]), 0);
        assert_eq!(last_nonzero(&[0; 100]), 0);
        for len in [1usize, 7, 8, 9, 64, 65, 1000] {
            for at in [0, len / 2, len - 1] {
                let mut b = vec![0u8; len];
                b[at] = 3;
                assert_eq!(last_nonzero(&b), at + 1, "len {len} at {at}");
            }
        }
    }
}
