//! `annal relay` (the log to NATS JetStream) and `annal replica` (a store from it).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annal::{FsyncPolicy, Options, Relay, RelayOptions, Replica, ReplicaOptions, Store};

use crate::common::{CliResult, Fail, open_existing, stop_flag};
use crate::output::Out;

/// What `annal relay` was given.
pub struct RelayArgs {
    pub nats_url: String,
    pub js_stream: String,
    pub subject_prefix: String,
    pub name: String,
    pub replicas: usize,
    pub max_in_flight: usize,
    pub event_types: Vec<String>,
    pub tags: Vec<String>,
}

/// Completes once `flag` is set (looked at every 50 ms).
async fn stopped(flag: Arc<AtomicBool>) {
    while !flag.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Fail::io("starting the async runtime", e))
}

/// `annal relay`: until SIGINT or SIGTERM, with its progress on stderr every 5 s.
pub fn relay(dir: &Path, json: bool, args: RelayArgs) -> CliResult {
    // The store's writer when nobody else has it open; beside a running writer, a
    // follower (relaying what the writer acknowledged).
    let store = match open_existing(dir, Options::default()) {
        Ok(s) => s,
        Err(Fail::Exit(status, _)) if status == crate::common::exit::LOCKED => {
            open_existing(dir, Options::default().follow(true))?
        }
        Err(f) => return Err(f),
    };
    let store = Arc::new(store);
    let stop = stop_flag()?;
    let options = RelayOptions::new(args.nats_url, args.js_stream, args.subject_prefix)
        .name(args.name)
        .replicas(args.replicas)
        .max_in_flight(args.max_in_flight);
    let options = if args.event_types.is_empty() && args.tags.is_empty() {
        options
    } else {
        options.query(annal::Query::items([annal::QueryItem::new()
            .types(args.event_types)
            .tags(args.tags)]))
    };
    let rt = runtime()?;
    let report = rt.block_on(async {
        let mut relay = Relay::connect(Arc::clone(&store), options).await?;
        let progress = relay.progress();
        let watched = Arc::clone(&store);
        let reporter = tokio::spawn(async move {
            let mut retries = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let acked = progress.acknowledged();
                let last = watched.last_position();
                let mut line = format!(
                    "relay: JetStream holds up to position {acked} of {last} (lag {} events)",
                    last.saturating_sub(acked)
                );
                if let Some(p50) = progress.latency_percentile(50.0) {
                    line.push_str(&format!(", latency p50 {p50:?}"));
                }
                if progress.retries() > retries {
                    retries = progress.retries();
                    line.push_str(&format!(
                        "; started again ({retries} times so far): {}",
                        progress.last_fault().unwrap_or_default()
                    ));
                }
                crate::warn(&line);
            }
        });
        let report = relay.run_until(stopped(stop)).await;
        reporter.abort();
        report
    })?;
    let mut out = Out::new();
    if json {
        out.json(&serde_json::json!({
            "acknowledged": report.acknowledged,
            "messages": report.messages,
        }))?;
    } else {
        out.line(&format!(
            "relay stopped: JetStream holds up to position {} ({} messages in this run)",
            report.acknowledged, report.messages
        ))?;
    }
    drop(rt);
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close()?;
    }
    Ok(())
}

/// `annal replica`: applies the stream's messages (and with --follow, keeps doing so until
/// SIGINT or SIGTERM).
pub fn replica(
    dir: &Path,
    json: bool,
    nats_url: String,
    js_stream: String,
    follow: bool,
    fsync: FsyncPolicy,
) -> CliResult {
    let stop = stop_flag()?;
    let rt = runtime()?;
    let (report, store) = rt.block_on(async {
        let options = ReplicaOptions::new(nats_url, js_stream).follow(follow);
        let mut replica = Replica::open(dir, Options::default().fsync(fsync), options).await?;
        let report = replica.run_until(stopped(stop)).await?;
        Ok::<_, annal::Error>((report, Arc::clone(replica.store())))
    })?;
    let mut out = Out::new();
    if json {
        out.json(&serde_json::json!({
            "applied": report.applied,
            "last_position": report.last_position,
            "sequence": report.sequence,
        }))?;
    } else {
        out.line(&format!(
            "replica at position {} (JetStream message {}; {} applied in this run)",
            report.last_position, report.sequence, report.applied
        ))?;
    }
    drop(rt);
    if let Ok(store) = Arc::try_unwrap(store) {
        Store::close(store)?;
    }
    Ok(())
}
