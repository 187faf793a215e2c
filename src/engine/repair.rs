//! [`repair`]: the one operation that changes a damaged store, and only as far as it is told.
//!
//! Without `accept_loss` it does what an open would do anyway (rebuildable files removed so
//! they are rebuilt, leftover temporary files removed, a torn unsynced tail cut) and, when
//! synced data is damaged or lost, changes nothing at all and says what it would cut.
//! With `accept_loss` it cuts the log at the first damage in synced data, after copying every
//! segment it cuts (and the old `STATE`) into a quarantine folder in the store directory,
//! with a report of the positions and streams lost, and leaves a store that opens and takes
//! appends.
#![deny(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::format::frame::{self, FrameRead};
use crate::engine::recovery;
use crate::engine::segment::{self, SEGMENT_HEADER_BYTES, SEGMENT_HEADER_LEN, Segment};
use crate::engine::state::{self, State};
use crate::engine::verify::{Severity, VerifyReport, verify};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// What [`repair`] may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairOptions {
    /// Cut the log at the first damage in synced data (after quarantining what is cut), and
    /// accept that whatever `STATE` recorded as synced but is missing is gone.
    pub accept_loss: bool,
}

/// Where the log is (or would be) cut, and what that loses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The segment the log now ends in (or would): its file.
    pub segment: PathBuf,
    /// Byte offset in it where the cut starts; everything from here on, and every later
    /// segment, is cut.
    pub offset: u64,
    /// The first position lost.
    pub first_lost: u64,
    /// The last position known to be lost: the highest position found in the cut data or
    /// recorded as synced by `STATE`.
    pub last_lost: u64,
    /// Bytes of log data cut.
    pub bytes: u64,
    /// Streams with events in the readable part of what is cut: name, first and last version.
    pub streams: Vec<(String, u64, u64)>,
    /// Where the cut bytes were copied, once cut.
    pub quarantine: Option<PathBuf>,
}

impl Cut {
    /// The positions lost, first and last; `None` when the cut loses none known (only bytes
    /// that held no event, or events already missing from the files).
    pub fn lost(&self) -> Option<(u64, u64)> {
        (self.last_lost >= self.first_lost).then_some((self.first_lost, self.last_lost))
    }

    /// [`lost`](Self::lost) in words.
    pub fn lost_words(&self) -> String {
        match self.lost() {
            Some((a, b)) => format!("positions {a} to {b}"),
            None => "no positions known to be lost".to_string(),
        }
    }
}

/// What [`repair`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// [`verify`] before the repair.
    pub before: VerifyReport,
    /// What was changed, one line each.
    pub actions: Vec<String>,
    /// The cut made (with `accept_loss`) or the one that would be made (without).
    pub cut: Option<Cut>,
    /// Whether [`cut`](Self::cut) was made.
    pub cut_made: bool,
    /// [`verify`] after the repair.
    pub after: VerifyReport,
}

/// Repairs the store in `dir` on `storage`; see the module docs for what it changes.
///
/// Takes the store's lock, so it never runs beside a writer.
///
/// # Errors
///
/// [`Error::Locked`] when the store is open elsewhere; [`Error::Io`] when a file cannot be
/// read, written or removed (a repair that fails part way leaves a store that [`verify`]
/// judges as before or better: every step is durable before the next).
pub fn repair(
    storage: &dyn Storage,
    dir: impl AsRef<Path>,
    options: RepairOptions,
) -> Result<RepairReport> {
    let dir = dir.as_ref();
    if storage.list(dir).is_err() {
        return Err(Error::io("open", dir, std::io::ErrorKind::NotFound.into()));
    }
    let _lock = super::lock_dir(storage, dir)?;
    let before = verify(storage, dir)?;
    let mut r = Repairer {
        storage,
        dir,
        actions: Vec::new(),
        removed: false,
        quarantine: None,
    };
    let damaged = before
        .findings
        .iter()
        .any(|f| f.severity == Severity::Damaged);
    // A torn end of a segment sealed without a sync is cut first, as an open would, when
    // anything may be changed: a cut for damage elsewhere then starts from a whole log.
    let last = r.list()?.1.last().copied();
    let torn_seal = before.findings.iter().find(|f| {
        f.severity == Severity::TornTail
            && f.file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(segment::parse_file_name)
                .is_some_and(|o| Some(o) != last)
    });
    let mut before_cut = None;
    if let Some(torn) = torn_seal
        && (!damaged || options.accept_loss)
    {
        r.cut_torn_tail(torn.file.clone(), torn.offset.unwrap_or(SEGMENT_HEADER_LEN))?;
        before_cut = Some(verify(storage, dir)?);
    }
    let original = before;
    let before = before_cut.clone().unwrap_or_else(|| original.clone());
    let damaged = before
        .findings
        .iter()
        .any(|f| f.severity == Severity::Damaged);
    // With damaged synced data and no leave to cut, nothing at all is touched: the user may
    // still restore a missing or damaged file from a backup, against the store as it was.
    if !damaged || options.accept_loss {
        r.rebuildables(&before)?;
    }
    let mut cut = None;
    let mut cut_made = false;
    if damaged {
        // A damaged segment header over intact frames is rebuilt rather than cut.
        let mut current = before.clone();
        if options.accept_loss && r.rebuild_headers(&before)? {
            current = verify(storage, dir)?;
        }
        let still_damaged = current
            .findings
            .iter()
            .any(|f| f.severity == Severity::Damaged);
        let planned = if still_damaged {
            r.plan_cut(&current)?
        } else {
            None
        };
        if options.accept_loss && !still_damaged {
            r.rebuildables(&current)?;
        } else if options.accept_loss {
            r.make_cut(&current, planned.as_ref())?;
            // What the shorter log makes stale: acks, snapshots, projection checkpoints.
            let cut_log = verify(storage, dir)?;
            r.rebuildables(&cut_log)?;
            cut_made = planned.is_some();
            cut = planned;
            if let Some(c) = &mut cut {
                c.quarantine = r.quarantine.clone();
            }
        } else {
            cut = planned;
        }
    } else if let Some(torn) = before
        .findings
        .iter()
        .find(|f| f.severity == Severity::TornTail)
    {
        r.cut_torn_tail(torn.file.clone(), torn.offset.unwrap_or(SEGMENT_HEADER_LEN))?;
    }
    if r.removed {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    let after = verify(storage, dir)?;
    Ok(RepairReport {
        before: original,
        actions: r.actions,
        cut,
        cut_made,
        after,
    })
}

struct Repairer<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    actions: Vec<String>,
    /// A file was removed: the directory needs a sync.
    removed: bool,
    /// Where the cut bytes were copied.
    quarantine: Option<PathBuf>,
}

impl Repairer<'_> {
    fn remove(&mut self, path: &Path, why: &str) -> Result<()> {
        match self.storage.remove(path) {
            Ok(()) => {
                self.removed = true;
                self.actions
                    .push(format!("removed {} ({why})", path.display()));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    /// Removes the damaged files an open rebuilds or ignores, so they are rebuilt.
    fn rebuildables(&mut self, report: &VerifyReport) -> Result<()> {
        for f in report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Rebuildable)
        {
            let name = f
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let why = if crate::storage::is_own_temp_name(&name) {
                "leftover temporary file"
            } else if name.ends_with(".idx") {
                "damaged or stale index checkpoint: rebuilt in the background"
            } else if name.ends_with(crate::engine::format::projection_file::SUFFIX) {
                "damaged or stale projection checkpoint: the projection rebuilds"
            } else if name.ends_with(crate::engine::format::snapshot_file::SUFFIX) {
                "damaged snapshot file, or one folding events past the end of the log: \
                 snapshots are a cache"
            } else if let (Some(sub), Some((first, _))) = (
                name.strip_suffix(crate::engine::format::ack_file::SUFFIX),
                f.positions,
            ) {
                // An ack past the end of the log: pulled back to it, as an open would. It
                // may be a follower's, in its folder, under the lock a follower holds while
                // it has the subscription open.
                let folder = f.file.parent().unwrap_or(self.dir);
                let _held = if folder == self.dir {
                    None
                } else {
                    let lock = folder.join(format!(
                        "{sub}{}",
                        crate::engine::format::ack_file::LOCK_SUFFIX
                    ));
                    match self.storage.lock(&lock) {
                        Ok(held) => Some(held),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            self.actions.push(format!(
                                "left {}: a follower has it open (it pulls the ack back \
                                 itself when it next opens it)",
                                f.file.display()
                            ));
                            continue;
                        }
                        Err(e) => return Err(Error::io("lock", &lock, e)),
                    }
                };
                crate::storage::replace_file(
                    self.storage,
                    folder,
                    &name,
                    &crate::engine::format::ack_file::encode_file(first - 1),
                )?;
                self.actions.push(format!(
                    "pulled the acknowledged position of durable subscription {sub:?} back to \
                     the end of the log ({})",
                    first - 1
                ));
                continue;
            } else if let (Some(ordinal), Some(at)) = (segment::parse_file_name(&name), f.offset) {
                // Stray bytes after a sealed segment's last frame, where no event is.
                let seg = self.open_segment(ordinal)?;
                let zeroed = self.zero_from(&seg, at)?;
                self.actions.push(format!(
                    "zeroed {zeroed} stray bytes after the last frame of {}",
                    seg.path.display()
                ));
                continue;
            } else {
                // An open handles it and there is nothing to remove.
                continue;
            };
            self.remove(&f.file, why)?;
        }
        Ok(())
    }

    /// Zeroes a segment from `at` to the end of its data and syncs it; returns the bytes
    /// zeroed.
    fn zero_from(&self, seg: &Segment, at: u64) -> Result<u64> {
        let end = seg.data_end()?;
        let f = self
            .storage
            .open(&seg.path, true)
            .map_err(|e| Error::io("open", &seg.path, e))?;
        if end > at {
            f.write_all_at(&vec![0u8; clamp(end - at)], at)
                .map_err(|e| Error::io("write", &seg.path, e))?;
        }
        f.sync_data()
            .map_err(|e| Error::io("fdatasync", &seg.path, e))?;
        Ok(end.saturating_sub(at))
    }

    /// Writes a damaged segment header again when the frames after it are intact: its
    /// ordinal is in the file name and its base position in the first frame. Returns whether
    /// any was rewritten.
    fn rebuild_headers(&mut self, report: &VerifyReport) -> Result<bool> {
        let mut rebuilt = false;
        for f in report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Damaged && f.offset == Some(0))
        {
            let Some(ordinal) = f
                .file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(segment::parse_file_name)
            else {
                continue;
            };
            if self.open_segment(ordinal).is_ok() {
                continue;
            }
            let Ok(Some((bytes, _))) = crate::storage::read_data(self.storage, &f.file) else {
                continue;
            };
            let FrameRead::Frame(first) = frame::read_frame(&bytes, SEGMENT_HEADER_BYTES) else {
                continue;
            };
            let old: String = bytes
                .iter()
                .take(SEGMENT_HEADER_BYTES)
                .map(|b| format!("{b:02x}"))
                .collect();
            let header = segment::encode_header(ordinal, first.first_position);
            let file = self
                .storage
                .open(&f.file, true)
                .map_err(|e| Error::io("open", &f.file, e))?;
            file.write_all_at(&header, 0)
                .map_err(|e| Error::io("write", &f.file, e))?;
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", &f.file, e))?;
            self.actions.push(format!(
                "rewrote the damaged header of {} (segment {ordinal}, base position {}; the \
                 old header was {old})",
                f.file.display(),
                first.first_position
            ));
            rebuilt = true;
        }
        Ok(rebuilt)
    }

    /// The directory's names, and its segment ordinals in order.
    fn list(&self) -> Result<(Vec<String>, Vec<u32>)> {
        let names = self
            .storage
            .list(self.dir)
            .map_err(|e| Error::io("list", self.dir, e))?;
        let mut ordinals: Vec<u32> = names
            .iter()
            .filter_map(|n| segment::parse_file_name(n))
            .collect();
        ordinals.sort_unstable();
        Ok((names, ordinals))
    }

    fn open_segment(&self, ordinal: u32) -> Result<Segment> {
        Segment::open(self.storage, self.dir, ordinal, true).map(|(s, _)| s)
    }

    /// Where the log would be cut for the first damage `report` found, and what is lost.
    fn plan_cut(&self, report: &VerifyReport) -> Result<Option<Cut>> {
        let (_, ordinals) = self.list()?;
        let floor = state::read(self.storage, self.dir)?.map_or(0, |s| s.durable_floor);
        // The first damage inside the log (STATE-only findings cut nothing).
        let first = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Damaged)
            .filter_map(|f| {
                let name = f.file.file_name()?.to_str()?;
                Some((segment::parse_file_name(name)?, f.offset.unwrap_or(0)))
            })
            .min();
        let Some((ordinal, offset)) = first else {
            return Ok(None);
        };
        // A missing segment, or damage in a segment's header: the cut is at the end of the
        // segment before.
        let (ordinal, offset) = if !ordinals.contains(&ordinal) || offset < SEGMENT_HEADER_LEN {
            match ordinal.checked_sub(1).filter(|&o| o > 0) {
                Some(prev) => (prev, u64::MAX),
                None => (0, 0),
            }
        } else {
            (ordinal, offset)
        };
        let (segment, cut_at, first_lost, data) = if ordinal == 0 {
            (self.dir.join(segment::file_name(1)), 0, 1, Vec::new())
        } else {
            let seg = self.open_segment(ordinal)?;
            let data = seg.read_data()?;
            let (at, first_lost) = frame_boundary(&data, offset, seg.base_position);
            (seg.path.clone(), at, first_lost, data)
        };
        let mut cut = Cut {
            segment,
            offset: cut_at,
            first_lost,
            last_lost: first_lost.saturating_sub(1).max(floor),
            bytes: 0,
            streams: Vec::new(),
            quarantine: None,
        };
        let mut streams = BTreeMap::new();
        let mut note = |bytes: &[u8], from: usize, cut: &mut Cut| {
            cut.bytes += bytes.len().saturating_sub(from) as u64;
            let last = readable_frames(bytes, from, &mut streams);
            cut.last_lost = cut.last_lost.max(last);
        };
        note(
            &data,
            usize::try_from(cut_at).unwrap_or(usize::MAX),
            &mut cut,
        );
        for &later in ordinals.iter().filter(|&&o| o > ordinal) {
            let bytes = match self.open_segment(later) {
                Ok(seg) => seg.read_data()?,
                Err(Error::Corruption { .. }) => {
                    let path = self.dir.join(segment::file_name(later));
                    crate::storage::read_data(self.storage, &path)?
                        .map(|(b, _)| b)
                        .unwrap_or_default()
                }
                Err(e) => return Err(e),
            };
            note(&bytes, SEGMENT_HEADER_BYTES, &mut cut);
        }
        cut.streams = streams.into_iter().map(|(s, (a, b))| (s, a, b)).collect();
        Ok(Some(cut))
    }

    /// Cuts the log as planned (quarantining first) and rewrites `STATE` to the log left.
    fn make_cut(&mut self, report: &VerifyReport, cut: Option<&Cut>) -> Result<()> {
        let (names, ordinals) = self.list()?;
        // A cut at byte 0 (the first segment missing or its header damaged) leaves no segment.
        let cut_ordinal = cut
            .filter(|c| c.offset > 0)
            .and_then(|c| {
                c.segment
                    .file_name()?
                    .to_str()
                    .and_then(segment::parse_file_name)
            })
            .unwrap_or(0);
        if let Some(c) = cut {
            let q = self.make_quarantine(report, c, &ordinals, cut_ordinal)?;
            self.quarantine = Some(q);
            for &o in ordinals.iter().filter(|&&o| o > cut_ordinal) {
                self.remove(&self.dir.join(segment::file_name(o)), "cut: quarantined")?;
            }
            if cut_ordinal > 0 {
                let seg = self.open_segment(cut_ordinal)?;
                self.zero_from(&seg, c.offset)?;
                self.actions.push(format!(
                    "cut {} at byte {}: {} (copied to {})",
                    seg.path.display(),
                    c.offset,
                    c.lost_words(),
                    self.quarantine
                        .as_ref()
                        .map_or(String::new(), |q| q.display().to_string())
                ));
            }
            for name in names.iter().filter(|n| {
                crate::engine::checkpoint::parse_file_name(n).is_some_and(|o| o >= cut_ordinal)
            }) {
                self.remove(&self.dir.join(name), "checkpoint of a cut segment")?;
            }
        }
        if self.removed {
            self.storage
                .sync_dir(self.dir)
                .map_err(|e| Error::io("fsync directory", self.dir, e))?;
        }
        self.rewrite_state()
    }

    /// `STATE` describing the log as it is now, everything in it synced: first every
    /// segment that holds positions past the old `STATE`'s durable position is synced (the
    /// one a roll left unsynced among them, whose writes may still be only in the page
    /// cache; without a readable old `STATE`, every segment).
    fn rewrite_state(&mut self) -> Result<()> {
        let (_, ordinals) = self.list()?;
        let last = ordinals.last().copied();
        let floor = state::read(self.storage, self.dir)?.map_or(0, |s| s.durable_floor);
        for &o in ordinals.iter().rev() {
            let (seg, file) = Segment::open(self.storage, self.dir, o, true)?;
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", &seg.path, e))?;
            if seg.base_position <= floor {
                break;
            }
        }
        let now = verify(self.storage, self.dir)?;
        let state = match last {
            None => State::default(),
            Some(o) => {
                let seg = self.open_segment(o)?;
                State {
                    clean: true,
                    durable_floor: now.last_position,
                    last_ordinal: o,
                    last_len: seg.capacity,
                    seal_deferred: false,
                }
            }
        };
        state::write(self.storage, self.dir, &state)?;
        self.actions.push(format!(
            "rewrote STATE: the log ends at position {}, all of it synced",
            state.durable_floor
        ));
        Ok(())
    }

    /// Copies every segment the cut touches, the old `STATE` and a report into a new
    /// quarantine folder; returns it.
    fn make_quarantine(
        &mut self,
        report: &VerifyReport,
        cut: &Cut,
        ordinals: &[u32],
        cut_ordinal: u32,
    ) -> Result<PathBuf> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut q = self.dir.join(format!("quarantine-{secs}"));
        let mut n = 1;
        while self.storage.list(&q).is_ok() {
            n += 1;
            q = self.dir.join(format!("quarantine-{secs}-{n}"));
        }
        self.storage
            .create_dir_all(&q)
            .map_err(|e| Error::io("create directory", &q, e))?;
        let copy = |name: String| -> Result<()> {
            let Some((buf, len)) = crate::storage::read_data(self.storage, &self.dir.join(&name))?
            else {
                return Ok(());
            };
            let to = q.join(&name);
            let dst = self
                .storage
                .create(&to)
                .map_err(|e| Error::io("create", &to, e))?;
            dst.write_all_at(&buf, 0)
                .map_err(|e| Error::io("write", &to, e))?;
            if len > buf.len() as u64 {
                dst.set_len(len)
                    .map_err(|e| Error::io("set length", &to, e))?;
            }
            dst.sync_data().map_err(|e| Error::io("fdatasync", &to, e))
        };
        for &o in ordinals.iter().filter(|&&o| o >= cut_ordinal) {
            copy(segment::file_name(o))?;
        }
        copy(state::STATE_FILE.to_string())?;
        let text = quarantine_report(report, cut);
        let path = q.join("REPORT.txt");
        let f = self
            .storage
            .create(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        f.write_all_at(text.as_bytes(), 0)
            .map_err(|e| Error::io("write", &path, e))?;
        f.sync_data()
            .map_err(|e| Error::io("fdatasync", &path, e))?;
        self.storage
            .sync_dir(&q)
            .map_err(|e| Error::io("fsync directory", &q, e))?;
        self.storage
            .sync_dir(self.dir)
            .map_err(|e| Error::io("fsync directory", self.dir, e))?;
        self.actions
            .push(format!("copied what is cut to {}", q.display()));
        Ok(q)
    }

    /// Cuts a torn tail as an open would: its bytes zeroed, the data before it written again
    /// and synced, and `STATE` rewritten.
    fn cut_torn_tail(&mut self, file: PathBuf, offset: u64) -> Result<()> {
        let ordinal = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(segment::parse_file_name)
            .ok_or_else(|| Error::corruption(&file, offset, "torn tail outside a segment"))?;
        let seg = self.open_segment(ordinal)?;
        let (_, ordinals) = self.list()?;
        if let Some(&last) = ordinals.last().filter(|&&l| l > ordinal) {
            // A segment sealed without a sync, torn: the last segment's frames follow the
            // tear and go with it, the segment replaced by an empty one first (as an open
            // would), so that a crash in between leaves a store an open still repairs.
            let data = seg.pread(0, seg.capacity)?;
            let (_, hole) = frame_boundary(&data, offset, seg.base_position);
            drop(data);
            // Its length is not checked against STATE: it is replaced by an empty one.
            let state = State {
                last_len: 0,
                ..state::read(self.storage, self.dir)?.unwrap_or_default()
            };
            let dropped =
                recovery::drop_after_torn_seal(self.storage, self.dir, 0, last, hole, &state)?;
            self.actions.push(format!(
                "replaced {} with an empty segment starting at position {hole} ({dropped} \
                 bytes of unsynced writes after the torn end of the segment before)",
                self.dir.join(segment::file_name(last)).display()
            ));
        }
        // Written again (synced by `zero_from`): pages a failed writeback left clean but
        // unwritten get written.
        let before = seg.pread(
            SEGMENT_HEADER_LEN,
            offset.saturating_sub(SEGMENT_HEADER_LEN),
        )?;
        self.storage
            .open(&seg.path, true)
            .and_then(|f| f.write_all_at(&before, SEGMENT_HEADER_LEN))
            .map_err(|e| Error::io("write", &seg.path, e))?;
        let zeroed = self.zero_from(&seg, offset)?;
        self.actions.push(format!(
            "cut the torn tail of {} at byte {offset} ({zeroed} bytes of unsynced writes)",
            seg.path.display()
        ));
        self.rewrite_state()
    }
}

fn clamp(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

/// The frame boundary at or before `offset` in a segment's `data` (valid frames up to the
/// damage), and the first position after the frames before it.
fn frame_boundary(data: &[u8], offset: u64, base: u64) -> (u64, u64) {
    let mut at = SEGMENT_HEADER_BYTES;
    let mut position = base;
    while (at as u64) < offset {
        match frame::read_frame(data, at) {
            FrameRead::Frame(f) if (f.end() as u64) <= offset => {
                position = f.last_position() + 1;
                at = f.end();
            }
            _ => break,
        }
    }
    (at as u64, position)
}

/// Records the streams of the valid frames in `bytes[from..]` (skipping damage) into
/// `streams` as version ranges; returns the highest position seen (0 if none).
fn readable_frames(bytes: &[u8], from: usize, streams: &mut BTreeMap<String, (u64, u64)>) -> u64 {
    let mut at = from;
    let mut last = 0;
    loop {
        match frame::read_frame(bytes, at) {
            FrameRead::Frame(f) => {
                for part in f.parts() {
                    let lo = part.first_version;
                    let hi = part.first_version + u64::from(part.count) - 1;
                    let e = streams.entry(part.stream.to_string()).or_insert((lo, hi));
                    e.0 = e.0.min(lo);
                    e.1 = e.1.max(hi);
                }
                last = last.max(f.last_position());
                at = f.end();
            }
            _ => match recovery::find_valid_frame(bytes, at, 1) {
                Some(next) if next > at => at = next,
                _ => return last,
            },
        }
    }
}

/// The quarantine's `REPORT.txt`.
fn quarantine_report(report: &VerifyReport, cut: &Cut) -> String {
    let mut s = String::new();
    s.push_str("annal repair --accept-loss: what was cut from the log\n\n");
    s.push_str(&format!(
        "cut at: {} byte {}\nlost: {}\nbytes cut: {}\n\n",
        cut.segment.display(),
        cut.offset,
        cut.lost_words(),
        cut.bytes
    ));
    s.push_str(
        "streams with readable events in what was cut (stream, first version, last version):\n",
    );
    for (name, lo, hi) in &cut.streams {
        s.push_str(&format!("  {name:?} {lo} {hi}\n"));
    }
    s.push_str("\nwhat verify found before the cut:\n");
    for f in &report.findings {
        s.push_str(&format!(
            "  {} {} {} {}\n",
            f.severity,
            f.file.display(),
            f.offset.map_or("-".to_string(), |o| format!("byte {o}")),
            f.reason
        ));
    }
    s.push_str(
        "\nThe files here are copies of the segments as they were (the cut one and every later \
         one) and the old STATE. Readable events can be read from them with any tool that \
         follows FORMAT.md.\n",
    );
    s
}
