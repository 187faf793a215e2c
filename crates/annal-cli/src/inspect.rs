//! Reading commands: `read`, `read-all`, `tail`, `streams`, `stats`.

use std::path::Path;

use std::sync::atomic::Ordering;
use std::time::Duration;

use annal::{Options, ReadOptions};
use serde::Serialize;

use crate::common::{CliResult, open_existing, thousands};
use crate::output::{EventPrinter, Out, Table};

/// Where a read starts and how much it returns.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// First version (stream) or position (`$all`); default: the first or, backward, the last.
    pub from: Option<u64>,
    /// Newest first.
    pub backward: bool,
    /// At most this many events.
    pub limit: Option<u64>,
}

impl Range {
    fn options(self) -> ReadOptions {
        let opts = if self.backward {
            ReadOptions::backward_from(self.from.unwrap_or(u64::MAX))
        } else {
            ReadOptions::forward_from(self.from.unwrap_or(1))
        };
        opts.limit(self.limit.unwrap_or(u64::MAX))
    }
}

/// `annal read STREAM`: one stream's events.
pub fn read_stream(dir: &Path, json: bool, stream: &str, range: Range) -> CliResult {
    // Read-only: works beside a process that is writing the store, and changes nothing.
    let store = open_existing(dir, Options::default().read_only(true))?;
    // As the library: a stream with no events reads as empty; said on stderr only.
    if store.stream_version(stream)?.is_none() {
        crate::warn(&format!(
            "stream {stream:?} has no events in {}",
            dir.display()
        ));
    }
    let mut printer = EventPrinter::new(json);
    for e in store.read_stream(stream, range.options())? {
        printer.event(&e?)?;
    }
    printer.finish()?;
    Ok(store.close()?)
}

/// `annal read-all`: every event in position order.
pub fn read_all(dir: &Path, json: bool, range: Range) -> CliResult {
    // Read-only: works beside a process that is writing the store, and changes nothing.
    let store = open_existing(dir, Options::default().read_only(true))?;
    let mut printer = EventPrinter::new(json);
    for e in store.read_all(range.options())? {
        printer.event(&e?)?;
    }
    printer.finish()?;
    Ok(store.close()?)
}

/// What `annal tail` follows.
#[derive(Debug, Clone)]
pub struct TailArgs {
    /// First position (or version, with `stream`); default: only events appended from now on.
    pub from: Option<u64>,
    /// One stream.
    pub stream: Option<String>,
    /// Streams whose names start with this.
    pub prefix: Option<String>,
}

/// `annal tail`: history from `--from`, then live events, until SIGINT or SIGTERM.
pub fn tail(dir: &Path, json: bool, args: TailArgs) -> CliResult {
    // A follower: no lock, beside a running writer, seeing each event it acknowledges.
    let store = open_existing(dir, Options::default().follow(true))?;
    // A signal ends the loop rather than the process, so the store is closed cleanly.
    let stop = crate::common::stop_flag()?;
    let mut sub = match &args.stream {
        Some(s) => {
            let from = match args.from {
                Some(v) => v,
                None => store.stream_version(s)?.unwrap_or(0) + 1,
            };
            store.subscribe_stream(s, from)?
        }
        None => store.subscribe_all(args.from.unwrap_or(store.last_position() + 1))?,
    };
    if let Some(p) = &args.prefix {
        sub = sub.stream_prefix(p.clone());
    }
    let what = match (&args.stream, &args.prefix) {
        (Some(s), _) => format!("stream {s:?}"),
        (None, Some(p)) => format!("streams starting with {p:?}"),
        (None, None) => "every stream".to_string(),
    };
    let from = match (&args.from, &args.stream) {
        (Some(v), Some(_)) => format!("from version {v}"),
        (Some(p), None) => format!("from position {p}"),
        (None, _) => format!(
            "waiting for events after position {}",
            store.last_position()
        ),
    };
    crate::warn(&format!(
        "following {what} of {}, {from} (Ctrl-C stops)",
        dir.display()
    ));
    let mut printer = EventPrinter::new(json);
    while !stop.load(Ordering::Relaxed) {
        // Drain what is there without waiting, flush, then wait a little for more.
        let next = match sub.try_next()? {
            Some(e) => Some(e),
            None => {
                printer.flush()?;
                sub.next_timeout(Duration::from_millis(200))?
            }
        };
        if let Some(e) = next {
            printer.event(&e)?;
        }
    }
    printer.flush()?;
    drop(sub);
    Ok(store.close()?)
}

/// `annal streams`: every stream with its version.
pub fn streams(dir: &Path, json: bool, prefix: Option<&str>) -> CliResult {
    // Read-only: works beside a process that is writing the store, and changes nothing.
    let store = open_existing(dir, Options::default().read_only(true))?;
    let mut out = Out::new();
    let mut table = Table::new(vec!["STREAM", "VERSION"]);
    #[derive(Serialize)]
    struct Line<'a> {
        stream: &'a str,
        version: u64,
    }
    for s in store.streams()? {
        if prefix.is_some_and(|p| !s.name.starts_with(p)) {
            continue;
        }
        if json {
            out.json(&Line {
                stream: &s.name,
                version: s.version,
            })?;
        } else {
            table.row(&mut out, vec![s.name.clone(), s.version.to_string()])?;
        }
    }
    if !json && table.is_empty() {
        out.line("(no streams)")?;
    }
    table.print(&mut out)?;
    out.flush()?;
    Ok(store.close()?)
}

fn durable_json(d: &annal::DurableInfo) -> DurableJson {
    DurableJson {
        name: d.name.clone(),
        acked_position: d.acked_position,
        lag: d.lag,
    }
}

/// Durable subscriptions in one line of `annal stats`.
fn subs_text(subs: &[annal::DurableInfo]) -> String {
    if subs.is_empty() {
        return "none".to_string();
    }
    subs.iter()
        .map(|d| format!("{} (acked {}, lag {})", d.name, d.acked_position, d.lag))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One durable subscription in `annal stats --json`.
#[derive(Serialize)]
struct DurableJson {
    name: String,
    acked_position: u64,
    lag: u64,
}

/// `annal stats --json`.
#[derive(Serialize)]
struct StatsJson {
    events: u64,
    streams: u64,
    segments: u64,
    bytes: u64,
    last_position: u64,
    durable_position: u64,
    snapshots: u64,
    snapshot_bytes: u64,
    index_memory_bytes: u64,
    durable_subscriptions: Vec<DurableJson>,
    /// Followers' durable subscriptions (an `annal relay` beside the writer, say).
    follower_subscriptions: Vec<DurableJson>,
    /// This open's own segment fdatasyncs: 0, as `stats` opens read-only.
    segment_syncs: u64,
    /// Events a scavenge would erase now, and the bytes of their records.
    reclaimable_events: u64,
    reclaimable_bytes: u64,
}

/// `annal stats`: counters of the store.
pub fn stats(dir: &Path, json: bool) -> CliResult {
    // Read-only: works beside a process that is writing the store, and changes nothing.
    let store = open_existing(dir, Options::default().read_only(true))?;
    let s = store.stats()?;
    let mut out = Out::new();
    if json {
        out.json(&StatsJson {
            events: s.events,
            streams: s.streams,
            segments: s.segments,
            bytes: s.bytes,
            last_position: s.last_position,
            durable_position: s.durable_position,
            snapshots: s.snapshots,
            snapshot_bytes: s.snapshot_bytes,
            index_memory_bytes: s.index_memory_bytes,
            durable_subscriptions: s.durable_subscriptions.iter().map(durable_json).collect(),
            follower_subscriptions: s.follower_subscriptions.iter().map(durable_json).collect(),
            segment_syncs: s.segment_syncs,
            reclaimable_events: s.reclaimable_events,
            reclaimable_bytes: s.reclaimable_bytes,
        })?;
    } else {
        let per_event = |bytes: u64| {
            if s.events == 0 {
                String::new()
            } else {
                format!(" ({:.1} per event)", bytes as f64 / s.events as f64)
            }
        };
        let mut t = Table::without_header(2);
        let rows = [
            ("store", dir.display().to_string()),
            ("events", thousands(s.events)),
            ("streams", thousands(s.streams)),
            ("segments", thousands(s.segments)),
            (
                "log bytes",
                format!("{}{}", thousands(s.bytes), per_event(s.bytes)),
            ),
            ("last position", s.last_position.to_string()),
            ("durable position", s.durable_position.to_string()),
            (
                "snapshots",
                format!("{} ({} bytes)", s.snapshots, thousands(s.snapshot_bytes)),
            ),
            (
                "index memory",
                format!(
                    "{} bytes{}",
                    thousands(s.index_memory_bytes),
                    per_event(s.index_memory_bytes)
                ),
            ),
            (
                "reclaimable",
                format!(
                    "{} events, {} bytes (`annal scavenge` erases them)",
                    thousands(s.reclaimable_events),
                    thousands(s.reclaimable_bytes)
                ),
            ),
            ("durable subs", subs_text(&s.durable_subscriptions)),
            ("follower subs", subs_text(&s.follower_subscriptions)),
        ];
        for (k, v) in rows {
            t.row(&mut out, vec![k.to_string(), v])?;
        }
        t.print(&mut out)?;
    }
    out.flush()?;
    Ok(store.close()?)
}
