//! One-shot figures that criterion's repetition doesn't suit: index memory per event and the
//! time to open a large store with and without index checkpoints.
//!
//! `cargo bench --bench open -- [EVENTS]` (default 1,000,000; 10,000 streams).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a benchmark stops at its first failure, and its sizes are small"
)]
use std::time::Instant;

use annal::{ExpectedVersion, FsyncPolicy, Options, Store};

#[path = "shared/workload.rs"]
mod workload;
use workload::*;

fn main() {
    let events: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let streams = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().fsync(FsyncPolicy::Never);
    let t = Instant::now();
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let batch = 10u64;
    let mut i = 0;
    while i < events {
        let n = batch.min(events - i);
        // Small batches of one stream, like commands that emit a few events; streams interleave.
        let s = stream_name(i / batch, streams);
        let evs: Vec<_> = (i..i + n).map(event).collect();
        store.append(&s, ExpectedVersion::Any, &evs).unwrap();
        i += n;
    }
    let stats = store.stats().unwrap();
    let write_secs = t.elapsed().as_secs_f64();
    drop(store);
    println!(
        "{events} events, {} streams, {} segments, {:.1} MB of log, written in {write_secs:.2}s ({:.0} events/s)",
        stats.streams,
        stats.segments,
        stats.bytes as f64 / 1e6,
        events as f64 / write_secs
    );
    println!(
        "index memory: {} bytes = {:.2} bytes/event",
        stats.index_memory_bytes,
        stats.index_memory_bytes as f64 / events as f64
    );
    println!(
        "bytes on disk per event: {:.1}",
        stats.bytes as f64 / events as f64
    );
    for checkpoints in [true, false, true] {
        let t = Instant::now();
        let store = Store::open(dir.path(), opts.clone().index_checkpoints(checkpoints)).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let r = store.recovery_report().clone();
        assert_eq!(store.last_position(), events);
        drop(store);
        println!(
            "open with checkpoints={checkpoints}: {:.1} ms ({} segments from checkpoints, {} scanned)",
            secs * 1e3,
            r.segments_from_checkpoint,
            r.segments_scanned
        );
    }
}
