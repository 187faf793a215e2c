//! [`verify`]: every checksum and invariant of a store directory, read-only.
//!
//! It opens no store, takes no lock, and never creates, changes or deletes a file, so it runs
//! on a read-only mount, on a full disk, beside a running writer and on the simulated disk.
//! Where an open stops at the first problem, it goes on past damage (to the next frame that
//! passes its checksum) and reports every problem it finds, each with its file, byte offset,
//! the positions it affects, and how bad it is ([`Severity`]).
#![deny(clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt};
use std::path::{Path, PathBuf};

use crate::engine::checkpoint::{self, SegmentIndex};
use crate::engine::format::ack_file::FOLLOWERS_DIR;
use crate::engine::format::frame::{self, FrameRead};
use crate::engine::format::{ack_file, projection_file, snapshot_file};
use crate::engine::recovery;
use crate::engine::segment::{self, SEGMENT_HEADER_LEN, Segment};
use crate::engine::state::{self, State, StateProblem};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// How much a [`Finding`] matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// Unsynced writes at the end of the log, torn by a crash: nothing shows they were ever
    /// acknowledged as durable, and an open cuts them.
    TornTail,
    /// Damage in a file annal rebuilds or ignores on its own (an index checkpoint, a snapshot,
    /// a projection checkpoint, a durable subscription's ack, a leftover temporary file):
    /// nothing in the log is lost.
    Rebuildable,
    /// Log data that was synced is damaged or missing, or `STATE`, which vouches for it, is:
    /// opens refuse the store until [`repair`](crate::repair) is run. (An open does not read
    /// sealed segments whose index checkpoint matches them: damage inside one is found here,
    /// and by a read of the damaged events, which returns [`Error::Corruption`].)
    Damaged,
}

impl Severity {
    /// A word for it: `torn-tail`, `rebuildable` or `damaged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::TornTail => "torn-tail",
            Severity::Rebuildable => "rebuildable",
            Severity::Damaged => "damaged",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// The file it is in (or, for a missing file, the file that should be there).
    pub file: PathBuf,
    /// Byte offset in that file, when it is at one place.
    pub offset: Option<u64>,
    /// The log positions it affects (first, last), when known.
    pub positions: Option<(u64, u64)>,
    /// What is wrong, and what an open or a repair does about it.
    pub reason: String,
}

/// The overall verdict of a [`VerifyReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No finding at all.
    Healthy,
    /// Only torn tails and rebuildable files: an open fixes them by itself.
    Repairable,
    /// Synced data is damaged or lost: opens refuse the store.
    Damaged,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events in frames that passed their checks, damaged stretches skipped.
    pub events: u64,
    /// Streams among those events.
    pub streams: u64,
    /// Segment files present.
    pub segments: usize,
    /// The last position of the unbroken log from position 1: what an open recovers when
    /// nothing is [`Severity::Damaged`] (a torn tail excluded).
    pub last_position: u64,
    /// Index checkpoint files present.
    pub checkpoints: usize,
    /// Snapshot files present.
    pub snapshot_files: usize,
    /// Durable subscription files present.
    pub durable_subscriptions: usize,
    /// Projection checkpoint files present.
    pub projections: usize,
    /// Every problem, log first, in file order.
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    /// The overall verdict: the worst finding.
    pub fn health(&self) -> Health {
        match self.findings.iter().map(|f| f.severity).max() {
            None => Health::Healthy,
            Some(Severity::Damaged) => Health::Damaged,
            Some(_) => Health::Repairable,
        }
    }

    /// The first finding of damaged log data, in log order, if any: where
    /// [`repair`](crate::repair) with `accept_loss` cuts.
    pub fn first_damage(&self) -> Option<&Finding> {
        self.findings
            .iter()
            .find(|f| f.severity == Severity::Damaged)
    }
}

/// Checks the store in `dir` on `storage` without changing anything, and reports every
/// problem.
///
/// Every segment is scanned in full (frame and record checksums, dense positions and
/// versions, segment headers and base positions), the log is checked against what `STATE`
/// recorded as synced, and every index checkpoint is compared with a scan of its segment;
/// snapshots, durable subscriptions' acks and projection checkpoints are parsed.
///
/// Run beside a writer, the writer's append in progress can show as a torn tail.
///
/// # Errors
///
/// [`Error::Io`] when the directory cannot be listed or a file cannot be read: problems
/// with the data itself are findings, not errors.
pub fn verify(storage: &dyn Storage, dir: impl AsRef<Path>) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    // Read before the listing, as an open does: a writer only adds segments after a STATE
    // naming them.
    let state = state::read(storage, dir)?;
    let names = storage.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut v = Verifier {
        storage,
        dir,
        report: VerifyReport::default(),
        broken: false,
        streams: HashMap::new(),
        scans: BTreeMap::new(),
        torn_seal: false,
    };
    let mut files = Files::classify(&names);
    // Followers keep their durable subscriptions in a folder of their own.
    let followers = dir.join(FOLLOWERS_DIR);
    if let Ok(names) = storage.list(&followers) {
        let mut subs: Vec<String> = names
            .into_iter()
            .filter(|n| n.ends_with(ack_file::SUFFIX))
            .map(|n| format!("{FOLLOWERS_DIR}/{n}"))
            .collect();
        subs.sort();
        files.subs.extend(subs);
    }
    v.report.segments = files.segments.len();
    v.report.checkpoints = files.checkpoints.len();
    v.report.snapshot_files = files.snapshots.len();
    v.report.durable_subscriptions = files.subs.len();
    v.report.projections = files.projs.len();
    let state = v.check_state(&state, &files);
    v.check_log(&files, &state)?;
    v.report.streams = v.streams.len() as u64;
    v.check_checkpoints(&files)?;
    v.check_snapshots(&files)?;
    v.check_small_files(&files)?;
    for name in &files.temps {
        v.add(
            Severity::Rebuildable,
            dir.join(name),
            None,
            None,
            "leftover temporary file from an interrupted write: an open removes it".into(),
        );
    }
    Ok(v.report)
}

/// The store directory's files, by kind.
#[derive(Default)]
struct Files {
    segments: BTreeSet<u32>,
    checkpoints: BTreeMap<u32, String>,
    snapshots: Vec<String>,
    subs: Vec<String>,
    projs: Vec<String>,
    temps: Vec<String>,
}

impl Files {
    fn classify(names: &[String]) -> Files {
        let mut f = Files::default();
        for name in names {
            if let Some(n) = segment::parse_file_name(name) {
                f.segments.insert(n);
            } else if let Some(n) = checkpoint::parse_file_name(name) {
                f.checkpoints.insert(n, name.clone());
            } else if snapshot_file::parse_file_name(name).is_some() {
                f.snapshots.push(name.clone());
            } else if name.ends_with(ack_file::SUFFIX) {
                f.subs.push(name.clone());
            } else if name.ends_with(projection_file::SUFFIX) {
                f.projs.push(name.clone());
            } else if crate::storage::is_own_temp_name(name) {
                f.temps.push(name.clone());
            }
        }
        f.snapshots.sort();
        f.subs.sort();
        f.projs.sort();
        f.temps.sort();
        f
    }
}

struct Verifier<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    report: VerifyReport,
    /// Damage has been found in the log: what follows is not part of the unbroken log, and
    /// version gaps after it are its consequence, not new findings.
    broken: bool,
    /// Each stream's last version seen.
    streams: HashMap<Box<str>, u64>,
    /// Full, undamaged scans of sealed segments, to compare checkpoints with.
    scans: BTreeMap<u32, SegmentIndex>,
    /// The segment before the last ends in a torn write (it was sealed without a sync): an
    /// open cuts it there and drops the last segment's frames.
    torn_seal: bool,
}

impl Verifier<'_> {
    fn add(
        &mut self,
        severity: Severity,
        file: PathBuf,
        offset: Option<u64>,
        positions: Option<(u64, u64)>,
        reason: String,
    ) {
        self.report.findings.push(Finding {
            severity,
            file,
            offset,
            positions,
            reason,
        });
    }

    /// A damaged-log finding from a corruption error of the engine's own checks.
    fn damaged(&mut self, e: Error, positions: Option<(u64, u64)>) -> Result<()> {
        self.broken = true;
        match e {
            Error::Corruption {
                segment,
                offset,
                reason,
            } => {
                self.add(Severity::Damaged, segment, Some(offset), positions, reason);
                Ok(())
            }
            other => Err(other),
        }
    }

    /// A damaged-log finding about what is missing after the log's end (or about `STATE`):
    /// the log up to there is still unbroken.
    fn at_end(&mut self, e: Error) {
        let (file, offset, reason) = match e {
            Error::Corruption {
                segment,
                offset,
                reason,
            } => (segment, Some(offset), reason),
            other => (self.dir.to_path_buf(), None, other.to_string()),
        };
        self.add(Severity::Damaged, file, offset, None, reason);
    }

    fn check_state(
        &mut self,
        state: &std::result::Result<State, StateProblem>,
        files: &Files,
    ) -> State {
        let last = files.segments.last().copied();
        match recovery::check_state(self.dir, state, last) {
            Ok(s) => s,
            Err(e) => {
                self.at_end(e);
                // A STATE that names missing segments still says what was synced.
                state.unwrap_or_default()
            }
        }
    }

    fn check_log(&mut self, files: &Files, state: &State) -> Result<()> {
        let Some(&last) = files.segments.last() else {
            if !files.checkpoints.is_empty() {
                self.add(
                    Severity::Damaged,
                    self.dir.join(segment::file_name(1)),
                    Some(0),
                    None,
                    "index checkpoints exist but every segment file is missing".into(),
                );
            }
            return Ok(());
        };
        let mut next = 1u64;
        for ord in 1..=last {
            if !files.segments.contains(&ord) {
                self.broken = true;
                self.add(
                    Severity::Damaged,
                    self.dir.join(segment::file_name(ord)),
                    Some(0),
                    None,
                    "segment file is missing: the log has a gap".into(),
                );
                continue;
            }
            let seg = match Segment::open(self.storage, self.dir, ord, false) {
                Ok((seg, _)) => seg,
                Err(e) => {
                    self.damaged(e, None)?;
                    continue;
                }
            };
            if ord == last && self.torn_seal {
                let bytes = seg.read_data()?;
                let end = recovery::last_nonzero(&bytes) as u64;
                self.add(
                    Severity::TornTail,
                    seg.path.clone(),
                    Some(SEGMENT_HEADER_LEN),
                    None,
                    format!(
                        "{} bytes of writes after the torn end of the segment before: an open \
                         replaces this segment with an empty one starting at position {next}",
                        end.saturating_sub(SEGMENT_HEADER_LEN)
                    ),
                );
                if let Err(e) = recovery::check_len(&seg, state) {
                    self.at_end(e);
                }
                continue;
            }
            if seg.base_position != next {
                let lost = (seg.base_position > next).then(|| (next, seg.base_position - 1));
                self.broken = true;
                self.add(
                    Severity::Damaged,
                    seg.path.clone(),
                    Some(0),
                    lost,
                    format!(
                        "segment starts at position {}, but the log before it ends at {}",
                        seg.base_position,
                        next - 1
                    ),
                );
            }
            let active = ord == last;
            if active && let Err(e) = recovery::check_len(&seg, state) {
                self.at_end(e);
            }
            let bytes = seg.read_data()?;
            // Where the next segment says this one ends, if it says anything.
            let next_base = (!active)
                .then(|| Segment::open(self.storage, self.dir, ord + 1, false).ok())
                .flatten()
                .map(|(s, _)| s.base_position);
            // Sealed without a sync, maybe: its end is judged like the active segment's.
            let unsynced = ord + 1 == last && state.seal_deferred;
            next = self.check_segment(&seg, &bytes, active, state, next_base, unsynced)?;
        }
        Ok(())
    }

    /// Scans one segment past any damage; returns the position after its last event.
    fn check_segment(
        &mut self,
        seg: &Segment,
        bytes: &[u8],
        active: bool,
        state: &State,
        next_base: Option<u64>,
        unsynced: bool,
    ) -> Result<u64> {
        let mut offset = SEGMENT_HEADER_LEN;
        let mut position = seg.base_position;
        let mut whole = true;
        loop {
            let (ix, damage) = match checkpoint::scan_from(seg, bytes, offset, position) {
                Ok((ix, stop)) => {
                    let end = usize::try_from(ix.end).unwrap_or(usize::MAX);
                    let damage = match stop {
                        Some(stop) => Some((stop.offset, stop.reason.to_string(), false)),
                        // Zeros, then more bytes: empty space inside written data.
                        None if recovery::last_nonzero(bytes) > end => {
                            Some((ix.end, STRAY.to_string(), false))
                        }
                        None => None,
                    };
                    (ix, damage)
                }
                // A frame that passed its checksum but breaks an invariant: never torn. The
                // frames before it are scanned again, with the bytes cut where it starts.
                Err(Error::Corruption {
                    offset: at, reason, ..
                }) => {
                    let prefix = bytes.get(..clamp(at)).unwrap_or(bytes);
                    let (ix, _) = checkpoint::scan_from(seg, prefix, offset, position)?;
                    (ix, Some((at, reason, true)))
                }
                Err(e) => return Err(e),
            };
            self.absorb(seg, bytes, &ix)?;
            position += ix.events;
            if !self.broken {
                self.report.last_position = position - 1;
            }
            let short = !active && whole && next_base.is_some_and(|b| b > position);
            if unsynced
                && !self.broken
                && (short || damage.as_ref().is_some_and(|d| !d.2 && d.1 != STRAY))
                && recovery::unsynced_seal_torn(
                    self.storage,
                    self.dir,
                    seg.ordinal + 1,
                    bytes,
                    ix.end,
                    position,
                    state,
                )?
            {
                let what = if damage.is_some() {
                    "damage"
                } else {
                    "the frames end"
                };
                self.torn_seal = true;
                self.add(
                    Severity::TornTail,
                    seg.path.clone(),
                    Some(ix.end),
                    next_base.and_then(|b| (b > position).then(|| (position, b - 1))),
                    format!(
                        "{what} at position {position}, in a segment sealed without a sync, \
                         after the last synced write: a torn tail that an open cuts"
                    ),
                );
                return Ok(position);
            }
            let Some((at, reason, malformed)) = damage else {
                if active && let Err(e) = recovery::check_floor(seg, ix.end, position - 1, state) {
                    self.damaged(e, None)?;
                }
                if whole && !active {
                    self.scans.insert(seg.ordinal, ix);
                }
                return Ok(position);
            };
            whole = false;
            let at_usize = clamp(at);
            let next = recovery::find_valid_frame(bytes, at_usize, position);
            if active && !malformed {
                let judged = recovery::judge_tail(
                    seg,
                    bytes,
                    at_usize,
                    position,
                    state.durable_floor,
                    true,
                )?;
                if judged.in_progress {
                    // A writer's append, caught half written: the log read ends here.
                    return Ok(position);
                }
                let last_seen = frames_end_position(bytes, next).unwrap_or(position - 1);
                match judged.synced_by {
                    None => {
                        self.add(
                            Severity::TornTail,
                            seg.path.clone(),
                            Some(at),
                            (last_seen >= position).then_some((position, last_seen)),
                            format!(
                                "{reason} at position {position}, after the last synced write: \
                                 a torn tail that an open cuts"
                            ),
                        );
                        if let Err(e) = recovery::check_floor(seg, at, position - 1, state) {
                            self.at_end(e);
                        }
                    }
                    Some(witness) => {
                        self.broken = true;
                        self.add(
                            Severity::Damaged,
                            seg.path.clone(),
                            Some(at),
                            Some((position, last_seen.max(state.durable_floor).max(position))),
                            format!(
                                "{reason} at position {position}, which {witness} shows had been \
                                 synced: opens refuse the store"
                            ),
                        );
                    }
                }
                return Ok(last_seen.max(position - 1) + 1);
            }
            if !active && reason == STRAY && (next.is_none() || next_base == Some(position)) {
                // Past a sealed segment's last frame (the next segment's base position
                // confirms where it ends), in space that holds no event.
                self.add(
                    Severity::Rebuildable,
                    seg.path.clone(),
                    Some(at),
                    None,
                    "stray bytes after the segment's last frame, where no event is: ignored".into(),
                );
                return Ok(position);
            }
            self.broken = true;
            let Some(resume) = next else {
                let end = frames_end_position(bytes, None).unwrap_or(position - 1);
                self.add(
                    Severity::Damaged,
                    seg.path.clone(),
                    Some(at),
                    None,
                    format!("{reason}; no valid frame follows in this segment"),
                );
                return Ok(end.max(position - 1) + 1);
            };
            let first = first_position(bytes, resume).unwrap_or(position);
            self.add(
                Severity::Damaged,
                seg.path.clone(),
                Some(at),
                (first > position).then(|| (position, first - 1)),
                reason,
            );
            offset = resume as u64;
            position = first;
        }
    }

    /// Counts a scanned stretch's events, checks its records' own checksums and its streams'
    /// versions against what came before.
    fn absorb(&mut self, seg: &Segment, bytes: &[u8], ix: &SegmentIndex) -> Result<()> {
        self.report.events += ix.events;
        for run in &ix.runs {
            for &at in &run.offsets {
                // An erased frame's events have no record to check (the frame's checksum
                // covered it).
                if crate::engine::segment::in_ranges(&ix.erased, at) {
                    continue;
                }
                if let Err(reason) = frame::read_record(bytes, clamp(at), true) {
                    self.broken = true;
                    self.add(
                        Severity::Damaged,
                        seg.path.clone(),
                        Some(at),
                        None,
                        format!("{reason} in stream {:?}", run.stream),
                    );
                }
            }
            let have = self.streams.get(&run.stream).copied().unwrap_or(0);
            if run.first_version != have + 1 && !self.broken {
                self.broken = true;
                self.add(
                    Severity::Damaged,
                    seg.path.clone(),
                    run.offsets.first().copied(),
                    None,
                    format!(
                        "stream {:?} continues at version {} but was at {have}",
                        run.stream, run.first_version
                    ),
                );
            }
            let last = run.first_version + run.offsets.len() as u64 - 1;
            self.streams.insert(run.stream.clone(), last);
        }
        Ok(())
    }

    /// A small file's bytes; `None` when it is gone since the listing (a writer beside
    /// verify deleted a subscription or compacted snapshots).
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(crate::storage::read_data(self.storage, &self.dir.join(name))?.map(|(b, _)| b))
    }

    fn check_checkpoints(&mut self, files: &Files) -> Result<()> {
        let last = files.segments.last().copied().unwrap_or(0);
        for (&ord, name) in &files.checkpoints {
            let path = self.dir.join(name);
            if ord >= last {
                self.add(
                    Severity::Rebuildable,
                    path,
                    None,
                    None,
                    format!(
                        "index checkpoint of segment {ord}, which is not a sealed segment: ignored"
                    ),
                );
                continue;
            }
            let Some(bytes) = self.read(name)? else {
                continue;
            };
            match SegmentIndex::decode(&bytes) {
                None => self.add(
                    Severity::Rebuildable,
                    path,
                    Some(0),
                    None,
                    "index checkpoint is damaged: an open scans its segment instead".into(),
                ),
                // A format-1 checkpoint has no records to compare: the rest must agree (an
                // open scans such a segment once and checkpoints it again).
                Some(ix) => match self.scans.get(&ord) {
                    Some(scan)
                        if *scan
                            != (SegmentIndex {
                                records: ix.records.clone().or_else(|| scan.records.clone()),
                                ..ix
                            }) =>
                    {
                        self.add(
                        Severity::Rebuildable,
                        path,
                        Some(0),
                        None,
                        "index checkpoint disagrees with its segment: an open scans the segment \
                         instead"
                            .into(),
                    )
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }

    fn check_snapshots(&mut self, files: &Files) -> Result<()> {
        for name in &files.snapshots {
            let Some(bytes) = self.read(name)? else {
                continue;
            };
            let mut at = 0;
            while at < bytes.len() {
                match snapshot_file::decode(&bytes, at) {
                    Some((snap, len)) => {
                        if snap.event_position > self.report.last_position {
                            self.add(
                                Severity::Rebuildable,
                                self.dir.join(name),
                                Some(at as u64),
                                None,
                                format!(
                                    "snapshot of stream {:?} at version {} folds events past the \
                                     end of the log: ignored",
                                    snap.stream, snap.version
                                ),
                            );
                        }
                        at += len;
                    }
                    None => {
                        if bytes.get(at..).unwrap_or_default().iter().any(|&b| b != 0) {
                            self.add(
                                Severity::Rebuildable,
                                self.dir.join(name),
                                Some(at as u64),
                                None,
                                "damaged snapshot record: it and the snapshots after it in this \
                                 file are ignored (snapshots are a cache)"
                                    .into(),
                            );
                        }
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn check_small_files(&mut self, files: &Files) -> Result<()> {
        let end = self.report.last_position;
        for name in &files.subs {
            let Some(bytes) = self.read(name)? else {
                continue;
            };
            let path = self.dir.join(name);
            match ack_file::decode_slots(&bytes) {
                None => self.add(
                    Severity::Rebuildable,
                    path,
                    Some(0),
                    None,
                    "durable subscription's acknowledged position is unreadable: it resumes \
                     from position 1 (redelivery, not loss)"
                        .into(),
                ),
                Some((_, acked)) if acked > end => self.add(
                    Severity::Rebuildable,
                    path,
                    None,
                    Some((end + 1, acked)),
                    format!(
                        "acknowledged position {acked} is past the end of the log ({end}): an open \
                         pulls it back"
                    ),
                ),
                Some(_) => {}
            }
        }
        for name in &files.projs {
            let Some(bytes) = self.read(name)? else {
                continue;
            };
            let path = self.dir.join(name);
            match projection_file::decode(&bytes) {
                None => self.add(
                    Severity::Rebuildable,
                    path,
                    Some(0),
                    None,
                    "projection checkpoint is damaged: the projection rebuilds from position 1"
                        .into(),
                ),
                Some((_, at, _)) if at > end => self.add(
                    Severity::Rebuildable,
                    path,
                    None,
                    Some((end + 1, at)),
                    format!(
                        "projection checkpoint at position {at} is past the end of the log \
                         ({end}): an open discards it"
                    ),
                ),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Zeros, then more bytes, after a segment's frames.
const STRAY: &str = "empty space inside written data";

fn clamp(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

/// The first position of the frame at `at`.
fn first_position(bytes: &[u8], at: usize) -> Option<u64> {
    match frame::read_frame(bytes, at) {
        FrameRead::Frame(f) => Some(f.first_position),
        _ => None,
    }
}

/// The last position of the valid frames from `from` on (skipping damage), if any.
fn frames_end_position(bytes: &[u8], from: Option<usize>) -> Option<u64> {
    let mut at = from?;
    let mut last = None;
    loop {
        match frame::read_frame(bytes, at) {
            FrameRead::Frame(f) => {
                last = Some(f.last_position());
                at = f.end();
            }
            _ => match recovery::find_valid_frame(bytes, at, last.map_or(0, |p| p + 1)) {
                Some(next) => at = next,
                None => return last,
            },
        }
    }
}
