//! Stream lifecycle commands: `delete`, `metadata` (show or `--set`) and `scavenge`.

use std::path::Path;
use std::time::{Duration, Instant};

use annal::{DeleteMode, ExpectedVersion, Options, StreamMetadata};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::common::{
    CliResult, Counting, Fail, human_duration, open_existing, plural, progress_bar, thousands,
};
use crate::output::{Out, Table};

/// A stream's metadata as `annal metadata` prints it and `--set` reads it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataJson {
    /// The stream (printed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    /// The metadata stream's version: what `--expected-version` of the next `--set` is
    /// (printed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(default)]
    max_count: Option<u64>,
    /// In seconds (fractions allowed).
    #[serde(default)]
    max_age: Option<f64>,
    #[serde(default)]
    truncate_before: Option<u64>,
    /// The user's bytes, when they are UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom: Option<String>,
    /// The user's bytes, in base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_b64: Option<String>,
    /// Hard-deleted (printed only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

impl MetadataJson {
    fn of(stream: &str, version: Option<u64>, m: &StreamMetadata) -> MetadataJson {
        let (custom, custom_b64) = match std::str::from_utf8(&m.custom) {
            _ if m.custom.is_empty() => (None, None),
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(BASE64.encode(&m.custom))),
        };
        MetadataJson {
            stream: Some(stream.to_string()),
            version,
            max_count: m.max_count,
            max_age: m.max_age.map(|d| d.as_secs_f64()),
            truncate_before: m.truncate_before,
            custom,
            custom_b64,
            deleted: m.deleted,
        }
    }

    fn parse(json: &str) -> Result<StreamMetadata, Fail> {
        let bad = |why: String| Fail::msg(format!("--set: {why}"));
        let j: MetadataJson = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        if j.stream.is_some() || j.version.is_some() || j.deleted {
            return Err(bad(
                "\"stream\", \"version\" and \"deleted\" are printed, not set (delete with `annal delete`)"
                    .into(),
            ));
        }
        let max_age = match j.max_age {
            None => None,
            Some(s) if s.is_finite() && s >= 0.0 => {
                Some(Duration::try_from_secs_f64(s).map_err(|e| bad(format!("max_age: {e}")))?)
            }
            Some(s) => return Err(bad(format!("max_age {s} is not a number of seconds"))),
        };
        let custom = match (j.custom, j.custom_b64) {
            (Some(_), Some(_)) => return Err(bad("give custom or custom_b64, not both".into())),
            (Some(s), None) => s.into_bytes(),
            (None, Some(b)) => BASE64
                .decode(b)
                .map_err(|e| bad(format!("custom_b64: {e}")))?,
            (None, None) => Vec::new(),
        };
        Ok(StreamMetadata {
            max_count: j.max_count,
            max_age,
            truncate_before: j.truncate_before,
            custom,
            deleted: false,
        })
    }
}

/// `annal metadata STREAM [--set JSON]`: prints the stream's metadata, or sets it first.
pub fn metadata(
    dir: &Path,
    json: bool,
    stream: &str,
    set: Option<&str>,
    expected: ExpectedVersion,
) -> CliResult {
    let store = match set {
        Some(_) => open_existing(dir, Options::default())?,
        None => open_existing(dir, Options::default().read_only(true))?,
    };
    if let Some(text) = set {
        let m = MetadataJson::parse(text)?;
        store.set_stream_metadata(stream, expected, m)?;
    }
    let (version, m) = match store.stream_metadata(stream)? {
        Some((v, m)) => (Some(v), m),
        None => (None, StreamMetadata::default()),
    };
    let shown = MetadataJson::of(stream, version, &m);
    let mut out = Out::new();
    if json {
        out.json(&shown)?;
    } else {
        let or_none = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let mut t = Table::without_header(2);
        let rows = [
            ("stream", stream.to_string()),
            (
                "version",
                version.map_or_else(|| "none (never set)".into(), |v| v.to_string()),
            ),
            ("max_count", or_none(m.max_count.map(|n| n.to_string()))),
            (
                "max_age",
                or_none(
                    m.max_age
                        .map(|d| format!("{} ({})", d.as_secs_f64(), human_duration(d))),
                ),
            ),
            (
                "truncate_before",
                or_none(m.truncate_before.map(|n| n.to_string())),
            ),
            (
                "custom",
                or_none(
                    shown
                        .custom
                        .clone()
                        .or(shown.custom_b64.map(|b| format!("base64:{b}"))),
                ),
            ),
            (
                "deleted",
                if m.deleted { "yes (hard)" } else { "no" }.into(),
            ),
        ];
        for (k, v) in rows {
            t.row(&mut out, vec![k.to_string(), v])?;
        }
        t.print(&mut out)?;
    }
    out.flush()?;
    Ok(store.close()?)
}

/// What `annal delete` prints.
#[derive(Serialize)]
struct Deleted<'a> {
    stream: &'a str,
    /// Its version when it was deleted.
    version: Option<u64>,
    hard: bool,
}

/// `annal delete STREAM [--hard] [--expected-version V]`.
pub fn delete(
    dir: &Path,
    json: bool,
    stream: &str,
    hard: bool,
    expected: ExpectedVersion,
) -> CliResult {
    let store = open_existing(dir, Options::default())?;
    let mode = if hard {
        DeleteMode::Hard
    } else {
        DeleteMode::Soft
    };
    let version = store.delete_stream(stream, expected, mode)?;
    let mut out = Out::new();
    if json {
        out.json(&Deleted {
            stream,
            version,
            hard,
        })?;
    } else {
        out.line(&format!(
            "deleted {stream:?} ({}) at version {}: {}",
            if hard { "hard" } else { "soft" },
            version.map_or_else(|| "none".into(), |v| v.to_string()),
            if hard {
                "it takes no more appends; `annal scavenge` erases its events"
            } else {
                "it reads as empty, and a later append continues its versions; `annal scavenge` erases its events"
            }
        ))?;
    }
    out.flush()?;
    Ok(store.close()?)
}

/// What `annal scavenge --json` prints.
#[derive(Serialize)]
struct ScavengeJson {
    segments_scanned: u64,
    segments_rewritten: u64,
    events_erased: u64,
    bytes_reclaimed: u64,
    projection_checkpoints_removed: u64,
    seconds: f64,
}

/// `annal scavenge`: erases what stream metadata hides, with a progress bar over the
/// segments, and reports what it gave back.
pub fn scavenge(dir: &Path, json: bool) -> CliResult {
    let store = open_existing(dir, Options::default())?;
    let started = Instant::now();
    let mut bar = None;
    let report = store.scavenge_with(|p| {
        let b = bar.get_or_insert_with(|| progress_bar(p.total, "scavenging", Counting::Segments));
        b.set_position(p.done);
        true
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let elapsed = started.elapsed();
    let mut out = Out::new();
    if json {
        out.json(&ScavengeJson {
            segments_scanned: report.segments_scanned,
            segments_rewritten: report.segments_rewritten,
            events_erased: report.events_erased,
            bytes_reclaimed: report.bytes_reclaimed(),
            projection_checkpoints_removed: report.projection_checkpoints_removed,
            seconds: elapsed.as_secs_f64(),
        })?;
    } else {
        out.line(&format!(
            "scavenged {} ({} rewritten) in {}: {} erased, {} bytes of disk given back{}",
            plural(report.segments_scanned, "segment"),
            report.segments_rewritten,
            human_duration(elapsed),
            plural(report.events_erased, "event"),
            thousands(report.bytes_reclaimed()),
            if report.projection_checkpoints_removed > 0 {
                format!(
                    "; {} removed (rebuilt when next opened)",
                    plural(
                        report.projection_checkpoints_removed,
                        "projection checkpoint"
                    )
                )
            } else {
                String::new()
            }
        ))?;
    }
    out.flush()?;
    Ok(store.close()?)
}
