//! `annal verify`: every checksum and invariant of a store, with the file and byte offset of
//! each problem.
//!
//! The log is checked through the library: opened without index checkpoints (so every segment
//! is scanned and every frame checked on open), then read whole (`read_all`: frame CRCs, dense
//! positions and versions) and stream by stream (record CRCs, versions dense from 1). The
//! files the library tolerates damage in (index checkpoints, snapshots, `STATE`, acks,
//! projection checkpoints) are parsed here, and a normal open, with checkpoints, must give the
//! same index as the scan.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annal::{Options, ReadOptions, Store};
use serde::Serialize;

use crate::common::{CliResult, Fail, check_store_dir, counted, plural, progress_bar, spinner};
use crate::files::{self, FRAME_HEADER_LEN, Finding, SEGMENT_HEADER_LEN};
use crate::output::{Out, Table};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Severity {
    /// Data fails a checksum or an invariant: `verify` exits with 1.
    Problem,
    /// Something the library expects after a crash and handles on its own.
    Warning,
}

/// One finding, as printed.
#[derive(Debug, Serialize)]
struct Report {
    severity: Severity,
    file: String,
    offset: Option<u64>,
    reason: String,
}

/// The end of `verify --json`.
#[derive(Serialize)]
struct Summary {
    ok: bool,
    events: u64,
    streams: u64,
    segments: usize,
    checkpoints: usize,
    snapshot_files: usize,
    problems: usize,
    warnings: usize,
}

/// The store directory's files, by kind.
#[derive(Default)]
struct Listing {
    segments: BTreeMap<u32, PathBuf>,
    checkpoints: BTreeMap<u32, PathBuf>,
    snapshots: Vec<PathBuf>,
    /// `STATE`, `*.sub` and `*.proj`, read before the store is opened (opening rewrites them).
    small: Vec<(PathBuf, Vec<u8>)>,
}

/// A 10-digit file number with the given suffix (`0000000012.seg` is 12).
fn numbered(name: &str, suffix: &str) -> Option<u32> {
    let digits = name.strip_suffix(suffix)?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn list(dir: &Path) -> CliResult<Listing> {
    let mut l = Listing::default();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Fail::io(format!("cannot list {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if let Some(n) = numbered(&name, ".seg") {
            l.segments.insert(n, path);
        } else if let Some(n) = numbered(&name, ".idx") {
            l.checkpoints.insert(n, path);
        } else if numbered(&name, ".snap").is_some() {
            l.snapshots.push(path);
        } else if name == "STATE" || name.ends_with(".sub") || name.ends_with(".proj") {
            let bytes = std::fs::read(&path)
                .map_err(|e| Fail::io(format!("cannot read {}", path.display()), e))?;
            l.small.push((path, bytes));
        }
    }
    l.snapshots.sort();
    l.small.sort();
    Ok(l)
}

/// Reads `len` bytes at `offset` of a file (fewer at its end).
fn read_at(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(buf.get_mut(got..).unwrap_or_default(), offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Collects findings while the checks run.
struct Verifier {
    dir: PathBuf,
    reports: Vec<Report>,
    /// Whether the log passed every check so far (the comparison with a normal open needs it).
    log_ok: bool,
    /// Events in the log, as read.
    events: u64,
    /// Every stream: version and position of its last event, as `read_all` found them.
    streams: HashMap<Arc<str>, (u64, u64)>,
}

impl Verifier {
    fn add(&mut self, severity: Severity, file: &Path, offset: Option<u64>, reason: String) {
        let report = Report {
            severity,
            file: file.display().to_string(),
            offset,
            reason,
        };
        // The same damage can be met twice (reading the log, then a stream): say it once.
        let seen = self.reports.iter().any(|r| {
            (r.severity, &r.file, r.offset, &r.reason)
                == (report.severity, &report.file, report.offset, &report.reason)
        });
        if !seen {
            self.reports.push(report);
        }
    }

    fn problem(&mut self, file: &Path, offset: Option<u64>, reason: impl Into<String>) {
        self.add(Severity::Problem, file, offset, reason.into());
    }

    fn warning(&mut self, file: &Path, offset: Option<u64>, reason: impl Into<String>) {
        self.add(Severity::Warning, file, offset, reason.into());
    }

    /// A problem in the log; the library's corruption errors name the file and offset.
    fn log_error(&mut self, e: annal::Error) {
        self.log_ok = false;
        match e {
            annal::Error::Corruption {
                segment,
                offset,
                reason,
            } => self.problem(&segment, Some(offset), reason),
            other => {
                let dir = self.dir.clone();
                self.problem(&dir, None, other.to_string());
            }
        }
    }

    fn finding(&mut self, severity: Severity, file: &Path, f: Finding, why: &str) {
        self.add(severity, file, f.offset, format!("{}{why}", f.reason));
    }

    /// Reads the whole log in position order, then every stream.
    fn check_log(&mut self, store: &Store) -> CliResult {
        let last = store.last_position();
        let dir = self.dir.clone();
        let pb = progress_bar(last, "reading log");
        let mut next = 1u64;
        for e in store.read_all(ReadOptions::forward())? {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    self.log_error(err);
                    break;
                }
            };
            if e.position != next {
                self.problem(
                    &dir,
                    None,
                    format!("position {} follows {}", e.position, next - 1),
                );
                self.log_ok = false;
                break;
            }
            let entry = self.streams.entry(Arc::clone(&e.stream)).or_insert((0, 0));
            let previous = entry.0;
            if e.version != previous + 1 {
                self.problem(
                    &dir,
                    None,
                    format!(
                        "stream {:?}: version {} at position {} follows version {previous}",
                        e.stream, e.version, e.position
                    ),
                );
                self.log_ok = false;
                break;
            }
            *entry = (e.version, e.position);
            next += 1;
            if next.is_multiple_of(4096) {
                pb.set_position(next);
            }
        }
        pb.finish_and_clear();
        self.events = next - 1;
        if self.log_ok && self.events != last {
            self.problem(
                &dir,
                None,
                format!("read {} events, the store has {last}", self.events),
            );
            self.log_ok = false;
        }

        let listed = store.streams()?;
        let pb = progress_bar(listed.len() as u64, "reading streams");
        for s in &listed {
            pb.inc(1);
            let mut version = 0u64;
            let mut last_position = 0u64;
            for e in store.read_stream(&s.name, ReadOptions::forward())? {
                match e {
                    Ok(e) if e.version == version + 1 && *e.stream == *s.name => {
                        version = e.version;
                        last_position = e.position;
                    }
                    Ok(e) => {
                        self.problem(
                            &dir,
                            None,
                            format!(
                                "stream {:?}: read version {} of {:?} after version {version}",
                                s.name, e.version, e.stream
                            ),
                        );
                        self.log_ok = false;
                        break;
                    }
                    Err(err) => {
                        self.log_error(err);
                        break;
                    }
                }
            }
            let scanned = self.streams.get(s.name.as_str()).copied();
            if version != s.version {
                self.problem(
                    &dir,
                    None,
                    format!(
                        "stream {:?}: {version} events read, its version is {}",
                        s.name, s.version
                    ),
                );
                self.log_ok = false;
            } else if self.log_ok && scanned != Some((version, last_position)) {
                self.problem(
                    &dir,
                    None,
                    format!(
                        "stream {:?}: its index and the log disagree on its last event",
                        s.name
                    ),
                );
                self.log_ok = false;
            }
        }
        pb.finish_and_clear();
        if self.log_ok && listed.len() != self.streams.len() {
            self.problem(
                &dir,
                None,
                format!(
                    "the index has {} streams, the log {}",
                    listed.len(),
                    self.streams.len()
                ),
            );
            self.log_ok = false;
        }
        let report = store.recovery_report();
        if let Some((file, offset)) = &report.truncated_at {
            self.warning(
                file,
                Some(*offset),
                format!(
                    "a torn write of {} bytes at the end of the log was cut on open (an append \
                     that was never acknowledged, or within the fsync policy's window)",
                    report.truncated_bytes
                ),
            );
        }
        if report.removed_temp_files > 0 {
            self.warning(
                &dir,
                None,
                format!(
                    "{} leftover temporary files were removed on open",
                    report.removed_temp_files
                ),
            );
        }
        Ok(())
    }

    /// Parses every snapshot file and compares each snapshot with the event it was folded up to.
    fn check_snapshots(&mut self, store: &Store, files_: &[PathBuf]) -> CliResult {
        for path in files_ {
            let bytes = std::fs::read(path)
                .map_err(|e| Fail::io(format!("cannot read {}", path.display()), e))?;
            let (records, bad) = files::snapshots(&bytes);
            if let Some(f) = bad {
                let why = " (loads ignore it and the rest of this file)";
                self.finding(Severity::Problem, path, f, why);
            }
            for r in records {
                let event = store
                    .read_stream(&r.stream, ReadOptions::forward_from(r.version).limit(1))?
                    .next();
                let matches = matches!(
                    &event,
                    Some(Ok(e)) if e.position == r.event_position && e.timestamp == r.event_timestamp
                );
                if !matches {
                    self.warning(
                        path,
                        Some(r.offset),
                        format!(
                            "snapshot of {:?} ({}) at version {} does not match the log; \
                             loads ignore it",
                            r.stream, r.aggregate, r.version
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Checks each index checkpoint and that it describes its segment as it is on disk.
    fn check_checkpoints(&mut self, listing: &Listing) {
        let last_segment = listing.segments.keys().next_back().copied();
        let base = |ordinal: u32| -> Option<u64> {
            let path = listing.segments.get(&ordinal)?;
            let header = read_at(path, 0, SEGMENT_HEADER_LEN as usize).ok()?;
            files::segment_header(&header).ok().map(|(_, base)| base)
        };
        for (&ordinal, path) in &listing.checkpoints {
            let ignored = "; it is ignored and the segment scanned on open";
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => {
                    self.problem(path, None, format!("cannot read: {e}"));
                    continue;
                }
            };
            let cp = match files::checkpoint(&bytes) {
                Ok(cp) => cp,
                Err(f) => {
                    self.finding(Severity::Problem, path, f, ignored);
                    continue;
                }
            };
            let Some(seg_path) = listing.segments.get(&ordinal) else {
                self.problem(
                    path,
                    None,
                    "checkpoint of a segment file that does not exist",
                );
                continue;
            };
            if Some(ordinal) == last_segment {
                self.warning(
                    path,
                    None,
                    "checkpoint of the active (last) segment; it is ignored on open",
                );
                continue;
            }
            let (lf_offset, lf_header) = cp.last_frame;
            let mismatch = if cp.ordinal != ordinal {
                Some(format!("it describes segment {}", cp.ordinal))
            } else if base(ordinal) != Some(cp.base_position) {
                Some(format!(
                    "base position {} differs from the segment's",
                    cp.base_position
                ))
            } else if base(ordinal + 1).map(|next| next - cp.base_position.min(next))
                != Some(cp.events)
            {
                Some(format!("{} events differ from the segment's", cp.events))
            } else if lf_offset == 0 && (cp.end != SEGMENT_HEADER_LEN || cp.events != 0) {
                Some("it records no last frame for a segment with events".into())
            } else if lf_offset != 0
                && read_at(seg_path, lf_offset, FRAME_HEADER_LEN)
                    .ok()
                    .as_deref()
                    != Some(&lf_header[..])
            {
                Some(format!(
                    "the last frame's header at byte {lf_offset} differs"
                ))
            } else if read_at(seg_path, cp.end, FRAME_HEADER_LEN)
                .map_or(true, |b| b.iter().any(|&x| x != 0))
            {
                Some(format!(
                    "the segment has data past its recorded end {}",
                    cp.end
                ))
            } else if cp
                .record_offsets
                .iter()
                .any(|&o| o < SEGMENT_HEADER_LEN || o >= cp.end)
            {
                Some("a record offset lies outside the segment's frames".into())
            } else {
                None
            };
            if let Some(what) = mismatch {
                self.problem(
                    path,
                    None,
                    format!(
                        "checkpoint does not match {}: {what}{ignored}",
                        seg_path.display()
                    ),
                );
            }
        }
    }

    /// Opens the store normally (index from checkpoints) and compares the index with the scan.
    fn check_normal_open(&mut self) -> CliResult {
        let dir = self.dir.clone();
        let store = match Store::open(&dir, Options::default()) {
            Ok(s) => s,
            Err(e) => {
                self.log_error(e);
                return Ok(());
            }
        };
        let from_checkpoints = store.recovery_report().segments_from_checkpoint;
        if store.last_position() != self.events {
            self.problem(
                &dir,
                None,
                format!(
                    "opened with checkpoints, the log ends at position {}, not {}",
                    store.last_position(),
                    self.events
                ),
            );
        }
        let listed = store.streams()?;
        let pb = progress_bar(listed.len() as u64, "checking index");
        for s in &listed {
            pb.inc(1);
            let scanned = self.streams.get(s.name.as_str()).map(|v| v.0);
            if scanned != Some(s.version) {
                self.problem(
                    &dir,
                    None,
                    format!(
                        "opened with checkpoints, stream {:?} is at version {}, the scan found {}",
                        s.name,
                        s.version,
                        scanned.unwrap_or(0)
                    ),
                );
                continue;
            }
            // Only an index loaded from checkpoints can differ from the scan.
            if from_checkpoints == 0 {
                continue;
            }
            let mut version = 0;
            for e in store.read_stream(&s.name, ReadOptions::forward())? {
                match e {
                    Ok(e) if e.version == version + 1 => version = e.version,
                    Ok(e) => {
                        self.problem(
                            &dir,
                            None,
                            format!(
                                "opened with checkpoints, stream {:?} gives version {} after {version}",
                                s.name, e.version
                            ),
                        );
                        break;
                    }
                    Err(err) => {
                        self.log_error(err);
                        break;
                    }
                }
            }
        }
        pb.finish_and_clear();
        if listed.len() != self.streams.len() {
            self.problem(
                &dir,
                None,
                format!(
                    "opened with checkpoints, the index has {} streams, the scan {}",
                    listed.len(),
                    self.streams.len()
                ),
            );
        }
        Ok(store.close()?)
    }

    /// `STATE`, acks and projection checkpoints, as they were before the store was opened.
    fn check_small_files(&mut self, small: &[(PathBuf, Vec<u8>)], log_end: Option<u64>) {
        for (path, bytes) in small {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            if name == "STATE" {
                if let Err(f) = files::state(bytes) {
                    let why = " (the store is then treated as not closed cleanly)";
                    self.finding(Severity::Problem, path, f, why);
                }
            } else if name.ends_with(".sub") {
                let (acked, damaged) = files::subscription(bytes);
                match (acked, damaged) {
                    (None, Some(f)) => {
                        let why = ": no valid ack is left, delivery restarts from position 1";
                        self.finding(Severity::Problem, path, f, why);
                    }
                    (Some(_), Some(f)) => {
                        let why = " (a torn ack write: the other slot is used)";
                        self.finding(Severity::Warning, path, f, why);
                    }
                    _ => {}
                }
                if let (Some(acked), Some(end)) = (acked, log_end)
                    && acked > end
                {
                    self.warning(
                        path,
                        None,
                        format!(
                            "acknowledged position {acked} was past the end of the log \
                             ({end}); it was pulled back on open"
                        ),
                    );
                }
            } else if name.ends_with(".proj") {
                match files::projection(bytes) {
                    Err(f) => {
                        let why = " (the projection is rebuilt from position 1)";
                        self.finding(Severity::Problem, path, f, why);
                    }
                    Ok(position) if log_end.is_some_and(|end| position > end) => {
                        self.warning(
                            path,
                            None,
                            format!(
                                "checkpoint at position {position} was past the end of the \
                                 log; it was discarded on open"
                            ),
                        );
                    }
                    Ok(_) => {}
                }
            }
        }
    }
}

/// `annal verify`.
pub fn verify(dir: &Path, json: bool) -> CliResult {
    check_store_dir(dir)?;
    let listing = list(dir)?;
    let mut v = Verifier {
        dir: dir.to_path_buf(),
        reports: Vec::new(),
        log_ok: true,
        events: 0,
        streams: HashMap::new(),
    };
    let scanning = spinner("scanning segments");
    let opened = Store::open(
        dir,
        Options {
            index_checkpoints: false,
            ..Options::default()
        },
    );
    scanning.finish_and_clear();
    let mut log_end = None;
    match opened {
        Err(e @ annal::Error::Corruption { .. }) => v.log_error(e),
        // Locked, I/O: nothing can be checked.
        Err(e) => return Err(e.into()),
        Ok(store) => {
            v.check_log(&store)?;
            log_end = v.log_ok.then_some(v.events);
            v.check_snapshots(&store, &listing.snapshots)?;
            v.check_checkpoints(&listing);
            store.close()?;
            if v.log_ok {
                v.check_normal_open()?;
            }
        }
    }
    v.check_small_files(&listing.small, log_end);
    print(&v, &listing, json)
}

fn print(v: &Verifier, listing: &Listing, json: bool) -> CliResult {
    let problems = v
        .reports
        .iter()
        .filter(|r| r.severity == Severity::Problem)
        .count();
    let warnings = v.reports.len() - problems;
    let mut out = Out::new();
    if json {
        for r in &v.reports {
            out.json(r)?;
        }
        out.json(&Summary {
            ok: problems == 0,
            events: v.events,
            streams: v.streams.len() as u64,
            segments: listing.segments.len(),
            checkpoints: listing.checkpoints.len(),
            snapshot_files: listing.snapshots.len(),
            problems,
            warnings,
        })?;
    } else {
        let mut t = Table::new(vec!["SEVERITY", "FILE", "OFFSET", "WHAT"]);
        for r in &v.reports {
            let severity = match r.severity {
                Severity::Problem => "problem",
                Severity::Warning => "warning",
            };
            let offset = r.offset.map_or("-".into(), |o| format!("byte {o}"));
            t.row(
                &mut out,
                vec![severity.into(), r.file.clone(), offset, r.reason.clone()],
            )?;
        }
        t.print(&mut out)?;
        out.line(&format!(
            "{}: {}, {}, {}, {}, {}: {}",
            v.dir.display(),
            counted(v.events, "event"),
            counted(v.streams.len() as u64, "stream"),
            plural(listing.segments.len(), "segment"),
            plural(listing.checkpoints.len(), "index checkpoint"),
            plural(listing.snapshots.len(), "snapshot file"),
            match (problems, warnings) {
                (0, 0) => "ok".to_string(),
                (0, w) => format!("ok, {}", plural(w, "warning")),
                (p, w) => format!("{}, {}", plural(p, "problem"), plural(w, "warning")),
            }
        ))?;
    }
    out.flush()?;
    if problems > 0 {
        return Err(Fail::msg(format!(
            "verify found {} in {}",
            plural(problems, "problem"),
            v.dir.display()
        )));
    }
    Ok(())
}
