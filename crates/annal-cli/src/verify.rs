//! `annal verify` and `annal repair`: the library's [`annal::verify`] and [`annal::repair`],
//! printed as a table or JSON lines, with exit codes a script can act on.

use std::path::Path;

use annal::storage::FsStorage;
use annal::{Finding, Health, RepairOptions, VerifyReport};
use serde::Serialize;

use crate::common::{CliResult, Fail, check_store_dir, counted, plural};
use crate::output::{Out, Table};

/// Exit status of `verify` (and `repair`, for what is left) when synced data is damaged or
/// lost: opens refuse the store until `annal repair --accept-loss`.
pub const EXIT_DAMAGED: u8 = crate::common::exit::DAMAGED;
/// Exit status when only rebuildable files are damaged or a torn tail is there: an open
/// handles it by itself (`annal repair` does it now).
pub const EXIT_REPAIRABLE: u8 = crate::common::exit::REPAIRABLE;

/// One finding, as printed with `--json`.
#[derive(Serialize)]
struct FindingJson<'a> {
    severity: &'static str,
    file: String,
    offset: Option<u64>,
    positions: Option<(u64, u64)>,
    reason: &'a str,
}

impl<'a> From<&'a Finding> for FindingJson<'a> {
    fn from(f: &'a Finding) -> Self {
        FindingJson {
            severity: f.severity.as_str(),
            file: f.file.display().to_string(),
            offset: f.offset,
            positions: f.positions,
            reason: &f.reason,
        }
    }
}

/// The last line of `verify --json`.
#[derive(Serialize)]
struct SummaryJson {
    health: &'static str,
    ok: bool,
    events: u64,
    streams: u64,
    last_position: u64,
    segments: usize,
    checkpoints: usize,
    snapshot_files: usize,
    durable_subscriptions: usize,
    projections: usize,
    findings: usize,
}

fn health_word(h: Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Repairable => "repairable",
        Health::Damaged => "damaged",
    }
}

fn print_findings(out: &mut Out, findings: &[Finding], json: bool) -> CliResult {
    if json {
        for f in findings {
            out.json(&FindingJson::from(f))?;
        }
        return Ok(());
    }
    let mut t = Table::new(vec!["SEVERITY", "FILE", "OFFSET", "POSITIONS", "WHAT"]);
    for f in findings {
        let file = f.file.file_name().map_or_else(
            || f.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        t.row(
            out,
            vec![
                f.severity.as_str().into(),
                file,
                f.offset.map_or("-".into(), |o| format!("byte {o}")),
                f.positions.map_or("-".into(), |(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                }),
                f.reason.clone(),
            ],
        )?;
    }
    t.print(out)
}

fn summary_line(dir: &Path, r: &VerifyReport) -> String {
    let verdict = match r.health() {
        Health::Healthy => "ok".to_string(),
        Health::Repairable => format!(
            "{}: an open fixes them by itself (or run `annal repair`)",
            plural(r.findings.len(), "repairable finding")
        ),
        Health::Damaged => format!(
            "DAMAGED, {}: opens refuse this store (see `annal repair`)",
            plural(r.findings.len(), "finding")
        ),
    };
    format!(
        "{}: {}, {}, {}, {}, {}: {verdict}",
        dir.display(),
        counted(r.events, "event"),
        counted(r.streams, "stream"),
        plural(r.segments, "segment"),
        plural(r.checkpoints, "index checkpoint"),
        plural(r.snapshot_files, "snapshot file"),
    )
}

fn summary_json(r: &VerifyReport) -> SummaryJson {
    SummaryJson {
        health: health_word(r.health()),
        ok: r.health() == Health::Healthy,
        events: r.events,
        streams: r.streams,
        last_position: r.last_position,
        segments: r.segments,
        checkpoints: r.checkpoints,
        snapshot_files: r.snapshot_files,
        durable_subscriptions: r.durable_subscriptions,
        projections: r.projections,
        findings: r.findings.len(),
    }
}

/// The exit a report calls for.
fn verdict(dir: &Path, r: &VerifyReport) -> CliResult {
    match r.health() {
        Health::Healthy => Ok(()),
        Health::Repairable => Err(Fail::exit(
            EXIT_REPAIRABLE,
            format!(
                "verify found {} in {} (nothing lost)",
                plural(r.findings.len(), "repairable finding"),
                dir.display()
            ),
        )),
        Health::Damaged => Err(Fail::exit(
            EXIT_DAMAGED,
            format!(
                "verify found damaged or lost data in {}: {}",
                dir.display(),
                r.first_damage().map_or(String::new(), |f| format!(
                    "{} at {}: {}",
                    f.file.display(),
                    f.offset.map_or("-".into(), |o| format!("byte {o}")),
                    f.reason
                ))
            ),
        )),
    }
}

/// `annal verify`.
pub fn verify(dir: &Path, json: bool) -> CliResult {
    check_store_dir(dir)?;
    let report = annal::verify(&FsStorage::default(), dir)?;
    let mut out = Out::new();
    print_findings(&mut out, &report.findings, json)?;
    if json {
        out.json(&summary_json(&report))?;
    } else {
        out.line(&summary_line(dir, &report))?;
    }
    out.flush()?;
    verdict(dir, &report)
}

/// The last line of `repair --json`.
#[derive(Serialize)]
struct RepairJson {
    actions: Vec<String>,
    cut_made: bool,
    cut: Option<CutJson>,
    before: SummaryJson,
    after: SummaryJson,
}

#[derive(Serialize)]
struct CutJson {
    segment: String,
    offset: u64,
    first_lost: u64,
    last_lost: u64,
    bytes: u64,
    streams: Vec<(String, u64, u64)>,
    quarantine: Option<String>,
}

/// `annal repair [--accept-loss]`.
pub fn repair(dir: &Path, json: bool, accept_loss: bool) -> CliResult {
    check_store_dir(dir)?;
    let r = annal::repair(&FsStorage::default(), dir, RepairOptions { accept_loss })?;
    let mut out = Out::new();
    if json {
        out.json(&RepairJson {
            actions: r.actions.clone(),
            cut_made: r.cut_made,
            cut: r.cut.as_ref().map(|c| CutJson {
                segment: c.segment.display().to_string(),
                offset: c.offset,
                first_lost: c.first_lost,
                last_lost: c.last_lost,
                bytes: c.bytes,
                streams: c.streams.clone(),
                quarantine: c.quarantine.as_ref().map(|q| q.display().to_string()),
            }),
            before: summary_json(&r.before),
            after: summary_json(&r.after),
        })?;
    } else {
        print_findings(&mut out, &r.before.findings, false)?;
        for a in &r.actions {
            out.line(&format!("repair: {a}"))?;
        }
        if let (Some(c), false) = (&r.cut, r.cut_made) {
            out.line(&format!(
                "repair: would cut {} at byte {}: {} ({} bytes; streams: {}). Nothing was \
                 cut: run again with --accept-loss to cut it (every byte cut is copied to a \
                 quarantine folder first)",
                c.segment.display(),
                c.offset,
                c.lost_words(),
                c.bytes,
                if c.streams.is_empty() {
                    "none readable".to_string()
                } else {
                    c.streams
                        .iter()
                        .map(|(s, a, b)| format!("{s} v{a}-{b}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))?;
        }
        if r.actions.is_empty() && r.cut.is_none() {
            out.line("repair: nothing to do")?;
        }
        out.line(&summary_line(dir, &r.after))?;
    }
    out.flush()?;
    verdict(dir, &r.after)
}
