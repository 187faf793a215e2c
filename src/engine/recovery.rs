//! Opening a log: load or rebuild the stream index, and cut a torn tail.
//!
//! The rules, in order of how much they matter:
//! - A frame that fails its check at the very end of the last segment, with nothing valid after
//!   it, is a torn write. It was never acknowledged under `Always` (the append had not returned)
//!   and it is cut: its bytes are zeroed and the segment synced.
//! - A bad frame followed by any valid frame is corruption: the open fails and nothing is
//!   changed on disk. Truncating there would silently drop acknowledged data.
//! - The segment before the last may have been sealed without a sync (`log::Seal::Defer`):
//!   damage at its end that nothing shows was synced is a torn tail too, cut together with
//!   the last segment's frames (the last segment is replaced by an empty one first).
//! - Any other sealed segment must be whole: a bad frame in it is corruption, and positions
//!   must run on densely into the next segment.
//! - Sealed segments with a matching index checkpoint are not scanned at all.
#![deny(clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::checkpoint;
use crate::engine::format::frame::{self, FRAME_HEADER_LEN, FrameRead, MIN_RECORD_LEN};
use crate::engine::index::StreamIndex;
use crate::engine::log::Active;
use crate::engine::segment::{self, SEGMENT_HEADER_LEN, Segment};
use crate::engine::state::{self, State, StateProblem};
use crate::error::{Error, Result};
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
    /// The highest position recovery could prove had been synced: by `STATE` (written at
    /// every open, segment roll and clean close, and every
    /// [`Options::record_durable_every`](crate::Options::record_durable_every) synced events)
    /// or by the durable position a later frame recorded. Losing events up to it is always
    /// detected.
    pub proven_durable: u64,
    /// Events recovered after [`proven_durable`](Self::proven_durable): the last group-commit
    /// batch (or batches) before an unclean shutdown, which no later record vouches for. Had
    /// damage hit them, it would have looked like a torn write and been cut. 0 after a clean
    /// close.
    pub unproven_events: u64,
    /// The store directory and the files in it whose permissions let others read them: any
    /// read bit for others, or for the group too unless
    /// [`Options::share_with_group`](crate::Options::share_with_group). Empty for a store
    /// annal created (see that option), and on storage without Unix modes. Nothing is
    /// changed: fixing the modes is the owner's call.
    pub readable_by_others: Vec<PathBuf>,
}

impl std::fmt::Display for RecoveryReport {
    /// One line: what was read and how, and anything cut or removed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        write!(
            f,
            "recovered {} event{} ({} segment{} scanned, {} from index checkpoints); \
             proven durable up to position {}",
            self.events,
            if self.events == 1 { "" } else { "s" },
            self.segments_scanned,
            s(self.segments_scanned),
            self.segments_from_checkpoint,
            self.proven_durable,
        )?;
        if self.unproven_events > 0 {
            write!(f, ", {} after it from the last sync", self.unproven_events)?;
        }
        if let Some((path, offset)) = &self.truncated_at {
            write!(
                f,
                "; the log ends at byte {offset} of {} ({} torn byte{} cut)",
                path.display(),
                self.truncated_bytes,
                if self.truncated_bytes == 1 { "" } else { "s" }
            )?;
        }
        if self.removed_temp_files > 0 {
            let n = self.removed_temp_files;
            write!(f, "; removed {n} leftover temporary file{}", s(n))?;
        }
        if !self.readable_by_others.is_empty() {
            let n = self.readable_by_others.len();
            write!(
                f,
                "; {n} entr{} readable by others",
                if n == 1 { "y" } else { "ies" }
            )?;
        }
        Ok(())
    }
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

/// The segment files in a directory listing, by ordinal, checked to run from 1 without gaps.
pub(crate) fn list_segments(dir: &Path, names: &[String]) -> Result<Vec<u32>> {
    let mut ordinals: Vec<u32> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .collect();
    ordinals.sort_unstable();
    for (want, &ord) in (1u32..).zip(ordinals.iter()) {
        if ord != want {
            return Err(Error::corruption(
                dir.join(segment::file_name(want)),
                0,
                "segment file is missing: the log has a gap",
            ));
        }
    }
    Ok(ordinals)
}

/// Fails when `STATE` cannot vouch for the log: missing or damaged while segments exist, or
/// recording segments that are not there.
pub(crate) fn check_state(
    dir: &Path,
    state: &std::result::Result<State, StateProblem>,
    last: Option<u32>,
) -> Result<State> {
    let path = dir.join(state::STATE_FILE);
    let state = match (state, last) {
        (Ok(s), _) => *s,
        (Err(StateProblem::Missing), None) => return Ok(State::default()),
        (Err(StateProblem::Missing), Some(_)) => {
            return Err(Error::corruption(
                path,
                0,
                "STATE is missing, so whether synced events were lost cannot be checked \
                 (`annal repair --accept-loss` rebuilds it from the log)",
            ));
        }
        (Err(StateProblem::Damaged(why)), _) => {
            return Err(Error::corruption(
                path,
                0,
                format!(
                    "{why}: whether synced events were lost cannot be checked \
                     (`annal repair --accept-loss` rebuilds it from the log)"
                ),
            ));
        }
    };
    let have = last.unwrap_or(0);
    if state.last_ordinal > have {
        let first = have + 1;
        let missing = if first == state.last_ordinal {
            segment::file_name(first)
        } else {
            format!(
                "{} to {}",
                segment::file_name(first),
                segment::file_name(state.last_ordinal)
            )
        };
        return Err(Error::corruption(
            dir.join(segment::file_name(first)),
            0,
            format!(
                "segment files {missing} are missing: STATE records segment {} as the last, \
                 with every position up to {} synced",
                state.last_ordinal, state.durable_floor
            ),
        ));
    }
    if last.is_none() && state.durable_floor > 0 {
        return Err(Error::corruption(
            dir.join(segment::file_name(1)),
            0,
            format!(
                "every segment file is missing, but STATE records positions up to {} as synced",
                state.durable_floor
            ),
        ));
    }
    Ok(state)
}

/// Fails when the active segment is shorter than `STATE` recorded: segment files never
/// shrink, so it was truncated.
pub(crate) fn check_len(seg: &Segment, state: &State) -> Result<()> {
    if state.last_ordinal == seg.ordinal && seg.capacity < state.last_len {
        return Err(Error::corruption(
            &seg.path,
            seg.capacity,
            format!(
                "segment file is {} bytes, but it was {} when STATE was written: it was \
                 truncated, and synced events may be gone",
                seg.capacity, state.last_len
            ),
        ));
    }
    Ok(())
}

/// Fails when the recovered log ends before the position `STATE` recorded as synced.
pub(crate) fn check_floor(
    seg: &Segment,
    end: u64,
    last_position: u64,
    state: &State,
) -> Result<()> {
    if last_position < state.durable_floor {
        return Err(Error::corruption(
            &seg.path,
            end,
            format!(
                "the log ends at position {last_position}, but STATE records every position up \
                 to {} as synced: positions {} to {} are lost",
                state.durable_floor,
                last_position + 1,
                state.durable_floor
            ),
        ));
    }
    Ok(())
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
    let ordinals = list_segments(dir, &names)?;
    let state = check_state(dir, &opts.state, ordinals.last().copied())?;

    let Some(&last) = ordinals.last() else {
        if names.iter().any(|n| n.ends_with(".idx")) {
            return Err(Error::corruption(
                dir.join(segment::file_name(1)),
                0,
                "index checkpoints exist but every segment file is missing",
            ));
        }
        if opts.read_only {
            // A store whose creation has not made its first segment yet (or a directory that
            // holds no store): an empty log, read without changing anything.
            let (seg, file) = Segment::empty(dir);
            let seg = Arc::new(seg);
            return Ok(Recovered {
                segments: vec![Arc::clone(&seg)],
                active: Active::new(seg, file, SEGMENT_HEADER_LEN, false),
                next_position: 1,
                report,
                unindexed: Vec::new(),
            });
        }
        remove_temp_files(storage, dir, &names, &mut report)?;
        // STATE first: a crash after the segment exists must not leave one without it.
        if opts.state.is_err() {
            state::write(storage, dir, &State::default())?;
        }
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
        // The segment before the last may have been sealed without a sync (`Seal::Defer`).
        let maybe_unsynced = ord + 1 == last && state.seal_deferred;
        let (seg, file) = Segment::open(storage, dir, ord, maybe_unsynced && !opts.read_only)?;
        check_base(&seg, next_position)?;
        let loaded = if opts.use_checkpoints {
            checkpoint::load(storage, dir, &seg)
        } else {
            None
        };
        let (ix, resync) = match loaded {
            // Checkpoints are only written for synced segments.
            Some(ix) => {
                report.segments_from_checkpoint += 1;
                (ix, None)
            }
            None => {
                let bytes = seg.scan_data()?;
                let (ix, stop) = checkpoint::scan(&seg, &bytes)?;
                let hole = next_position + ix.events;
                // Valid frames that end before the next segment starts: zeros where a torn
                // write lost the first page of a frame.
                let next_base = if maybe_unsynced {
                    Some(Segment::open(storage, dir, last, false)?.0.base_position)
                } else {
                    None
                };
                let short = next_base.is_some_and(|b| b > hole);
                if stop.is_some() || short {
                    let torn = maybe_unsynced
                        && unsynced_seal_torn(storage, dir, last, &bytes, ix.end, hole, &state)?;
                    if !torn {
                        return Err(match stop {
                            Some(stop) => Error::corruption(&seg.path, stop.offset, stop.reason),
                            None => Error::corruption(
                                &seg.path,
                                ix.end,
                                format!(
                                    "the segment's frames end at position {}, but the next \
                                     segment starts at {}, and {} shows the positions between \
                                     had been synced",
                                    hole - 1,
                                    next_base.unwrap_or(hole),
                                    if state.durable_floor >= hole {
                                        "STATE"
                                    } else {
                                        "a later frame"
                                    }
                                ),
                            ),
                        });
                    }
                    ix.apply(&seg, index)?;
                    let at = ix.end;
                    report.truncated_at = Some((seg.path.clone(), at));
                    if opts.read_only {
                        // The log ends at the tear; the last segment is not read, but must
                        // be as long as STATE says, as a writable open checks.
                        check_len(&Segment::open(storage, dir, last, false)?.0, &state)?;
                        seg.seal();
                        report.segments_scanned += 1;
                        report.events = hole - 1;
                        report.proven_durable = state.durable_floor;
                        report.unproven_events = (hole - 1).saturating_sub(state.durable_floor);
                        let seg = Arc::new(seg);
                        segments.push(Arc::clone(&seg));
                        return Ok(Recovered {
                            segments,
                            active: Active::new(seg, file, at, false),
                            next_position: hole,
                            report,
                            unindexed: Vec::new(),
                        });
                    }
                    let rewrite = Some(rewrite_after_floor(&seg, &bytes, at, &state));
                    let junk_end = last_nonzero(&bytes).max(crate::cast::usize_from(at));
                    drop(bytes);
                    let cut =
                        drop_after_torn_seal(storage, dir, opts.segment_size, last, hole, &state)?;
                    repair_tail(
                        &mut report,
                        rewrite,
                        &seg,
                        file.as_ref(),
                        crate::cast::usize_from(at),
                        junk_end,
                    )?;
                    // The log is whole now, ending in an empty last segment: recovered anew.
                    *index = StreamIndex::new(!index.postings.off);
                    drop(segments);
                    let mut again = recover(storage, dir, opts, index)?;
                    again.report.truncated_at = report.truncated_at;
                    again.report.truncated_bytes += report.truncated_bytes + cut;
                    again.report.removed_temp_files += report.removed_temp_files;
                    return Ok(again);
                }
                report.segments_scanned += 1;
                unindexed.push(ord);
                // Synced below, as the active segment is: the open puts everything recovered
                // on record as durable.
                let resync = maybe_unsynced && !opts.read_only && state.durable_floor < hole - 1;
                (ix, resync.then_some(bytes))
            }
        };
        ix.apply(&seg, index)?;
        if let Some(bytes) = resync {
            let rewrite = rewrite_after_floor(&seg, &bytes, ix.end, &state);
            drop(bytes);
            let end = crate::cast::usize_from(ix.end);
            repair_tail(&mut report, Some(rewrite), &seg, file.as_ref(), end, end)?;
        }
        seg.seal();
        next_position = advance(&seg, next_position, ix.events)?;
        segments.push(Arc::new(seg));
    }

    // The active segment: always scanned, and the only place a torn tail may be cut.
    let (seg, file) = Segment::open(storage, dir, last, !opts.read_only)?;
    check_base(&seg, next_position)?;
    check_len(&seg, &state)?;
    // Read-only, a writer may be appending to the active segment: a copy, not a view.
    let bytes = if opts.read_only {
        std::borrow::Cow::Owned(seg.read_data()?)
    } else {
        seg.scan_data()?
    };
    let (ix, stop) = checkpoint::scan(&seg, &bytes)?;
    report.segments_scanned += 1;
    let end = crate::cast::usize_from(ix.end);
    let junk_end = last_nonzero(&bytes).max(end);
    let hole = next_position + ix.events;
    let tail = judge_tail(&seg, &bytes, end, hole, state.durable_floor, opts.read_only)?;
    if junk_end > end
        && let Some(witness) = &tail.synced_by
    {
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
    check_floor(&seg, end as u64, hole - 1, &state)?;
    let last_hint = ix.last_frame.map_or(0, |(at, _)| durable_hint(&bytes, at));
    report.proven_durable = state.durable_floor.max(last_hint).min(hole - 1);
    report.unproven_events = (hole - 1).saturating_sub(report.proven_durable);
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
        let rewrite = if state.clean {
            None
        } else {
            Some(rewrite_after_floor(&seg, &bytes, end as u64, &state))
        };
        drop(bytes);
        repair_tail(&mut report, rewrite, &seg, file.as_ref(), end, junk_end)?;
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

/// How the damage (or stray bytes) after the end of the valid frames of an active segment is
/// to be taken.
pub(crate) struct TailJudgement {
    /// What shows the position at the end had been synced, if anything does: then the bytes
    /// after the end are damaged durable data, not a torn write.
    pub synced_by: Option<String>,
    /// A writer was appending there while the bytes were read: not damage, the log just ends
    /// where the read began.
    pub in_progress: bool,
}

/// Judges the bytes after `end` (the end of the valid frames, where position `hole` would
/// start) in the active segment's `bytes`.
///
/// Page writeback has no order, so after a power loss an unsynced frame can survive while an
/// earlier unsynced one is lost. The damage is a torn tail when nothing says the damaged
/// position had been synced: neither `STATE` (`floor`), nor a later frame written after a
/// sync covered it. Then everything from the damage on was never durable, and it is cut.
///
/// With `live` (a read-only open or `verify`, which may run beside a writer), a read of the
/// file can race the writer: it may see a frame half written and later frames whole. So a
/// later frame's testimony is checked by reading the file again: the writer finished the
/// frame at `end` before it wrote any later one, so if that frame is whole now, it was an
/// append in progress; if it is still bad, it is damage.
pub(crate) fn judge_tail(
    seg: &Segment,
    bytes: &[u8],
    end: usize,
    hole: u64,
    floor: u64,
    live: bool,
) -> Result<TailJudgement> {
    if floor >= hole {
        return Ok(TailJudgement {
            synced_by: Some("STATE".to_string()),
            in_progress: false,
        });
    }
    let witness = frames_after(bytes, end, hole)
        .filter(|&(_, durable)| durable >= hole)
        .map(|(at, _)| format!("the frame at byte {at}"));
    if live && witness.is_some() {
        let again = seg.read_data()?;
        if matches!(frame::read_frame(&again, end), FrameRead::Frame(_)) {
            return Ok(TailJudgement {
                synced_by: None,
                in_progress: true,
            });
        }
    }
    Ok(TailJudgement {
        synced_by: witness,
        in_progress: false,
    })
}

/// The frames of `seg` (its `bytes`, valid up to `end`) from the one holding the first
/// position past `STATE`'s durable floor: copied out, to be written again before the segment
/// is synced (see `repair_tail`). Copied so that the view is dropped before the file is
/// written.
fn rewrite_after_floor(seg: &Segment, bytes: &[u8], end: u64, state: &State) -> (u64, Vec<u8>) {
    let end = crate::cast::usize_from(end);
    let from = seg
        .offset_of(state.durable_floor + 1)
        .unwrap_or(SEGMENT_HEADER_LEN);
    let from = usize::try_from(from).unwrap_or(end).min(end);
    (
        from as u64,
        bytes.get(from..end).unwrap_or_default().to_vec(),
    )
}

/// Whether damage at the end of the valid frames (`end`, where position `hole` would start)
/// of the segment before the last (its `bytes`) is a torn write: that segment was sealed
/// without a sync (`Seal::Defer`), and nothing says the damaged position had been synced:
/// neither `STATE`, nor a later frame of that segment or of the last one, which records the
/// durable position when it was written. Then everything from the damage on, the last
/// segment's frames included, was never durable.
pub(crate) fn unsynced_seal_torn(
    storage: &dyn Storage,
    dir: &Path,
    last: u32,
    bytes: &[u8],
    end: u64,
    hole: u64,
    state: &State,
) -> Result<bool> {
    if state.durable_floor >= hole {
        return Ok(false);
    }
    let end = crate::cast::usize_from(end);
    if frames_after(bytes, end, hole).is_some_and(|(_, durable)| durable >= hole) {
        return Ok(false);
    }
    // A last segment that cannot be read vouches for nothing; what is wrong with it is
    // reported for itself.
    let Ok((next, _)) = Segment::open(storage, dir, last, false) else {
        return Ok(false);
    };
    if next.base_position < hole {
        return Ok(false);
    }
    let next_bytes = next.read_data()?;
    let from = crate::cast::usize_from(SEGMENT_HEADER_LEN).saturating_sub(1);
    // Its frames start at its own base position, which may be far past the hole.
    Ok(frames_after(&next_bytes, from, next.base_position)
        .is_none_or(|(_, durable)| durable < hole))
}

/// After a torn write at position `hole` in `seg`, the segment before the last: replaces the
/// last segment with an empty one starting at `hole` (atomically, so a crash leaves the old
/// one or the new one), so that the log, once `seg`'s tail is cut, is whole. Returns the
/// bytes of frames dropped with the old one.
pub(crate) fn drop_after_torn_seal(
    storage: &dyn Storage,
    dir: &Path,
    segment_size: u64,
    last: u32,
    hole: u64,
    state: &State,
) -> Result<u64> {
    let (next, _) = Segment::open(storage, dir, last, false)?;
    check_len(&next, state)?;
    let dropped = next.read_data()?;
    let dropped_bytes = (last_nonzero(&dropped) as u64)
        .saturating_sub(SEGMENT_HEADER_LEN.min(dropped.len() as u64));
    drop(dropped);
    let capacity = segment_size.max(next.capacity).max(state.last_len);
    drop(next);
    Segment::create(storage, dir, last, hole, capacity)?;
    Ok(dropped_bytes)
}

/// The durable position the frame at `offset` recorded (hints only grow from frame to frame,
/// so the last frame's is the highest).
fn durable_hint(bytes: &[u8], offset: u64) -> u64 {
    match usize::try_from(offset).map(|at| frame::read_frame(bytes, at)) {
        Ok(FrameRead::Frame(f)) => f.durable,
        _ => 0,
    }
}

/// Makes the active segment's tail right on disk: the data after the durable floor rewritten
/// after an unclean shutdown, a torn tail zeroed, and the segment synced.
fn repair_tail(
    report: &mut RecoveryReport,
    rewrite: Option<(u64, Vec<u8>)>,
    seg: &Segment,
    file: &dyn crate::storage::StorageFile,
    end: usize,
    junk_end: usize,
) -> Result<()> {
    if let Some((from, data)) = rewrite
        && !data.is_empty()
    {
        // After a failed writeback the kernel may keep pages it could not write but mark them
        // clean: they read back fine and would never be written again. Rewriting the same
        // bytes makes the sync below write them for real. Only what is not known synced needs
        // it (from the frame holding the first position past STATE's durable floor).
        file.write_all_at(&data, from)
            .map_err(|e| Error::io("write", &seg.path, e))?;
    }
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
    /// What `STATE` said, read before the directory was listed (a writer beside a read-only
    /// open only ever adds segments after writing a STATE that names them).
    pub state: std::result::Result<State, StateProblem>,
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
pub(crate) fn last_nonzero(bytes: &[u8]) -> usize {
    let words = bytes.len() / 8;
    let (head, tail) = bytes.split_at(words * 8);
    if let Some(i) = tail.iter().rposition(|&b| b != 0) {
        return head.len() + i + 1;
    }
    let last_word = head
        .chunks_exact(8)
        .rposition(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])) != 0);
    match last_word {
        Some(w) => {
            let word = head.get(w * 8..w * 8 + 8).unwrap_or_default();
            w * 8 + word.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
        }
        None => 0,
    }
}

/// Fails unless `seg` starts right after the log before it, which ends at `next_position - 1`.
pub(crate) fn check_base(seg: &Segment, next_position: u64) -> Result<()> {
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
pub(crate) fn find_valid_frame(bytes: &[u8], from: usize, next_position: u64) -> Option<usize> {
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
        let n = crate::cast::usize_from((to - at).min(zeros.len() as u64));
        file.write_all_at(zeros.get(..n).unwrap_or_default(), at)
            .map_err(|e| Error::io("write", path, e))?;
        at += n as u64;
    }
    Ok(())
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
