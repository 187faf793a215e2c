//! Scavenge: its throughput beside the disk's sequential copy speed (the same segment files
//! read, written to new files and synced, measured in the same run, interleaved), and the
//! appends a writer gets while a scavenge runs, beside the appends it gets without.
//!
//! The store: `ANNAL_BENCH_EVENTS` events (default 400,000) of 200 bytes over 1,000 streams,
//! 16 MiB segments, half the streams then hard-deleted: a scavenge erases half of the log.
//!
//! `cargo bench --bench scavenge` (plain output: ratios within one run, over 3 rounds).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "a benchmark: a failure is a panic, and its figures are approximate"
)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annal::{DeleteMode, EventData, ExpectedVersion, FsyncPolicy, Options, Store};

const STREAMS: u64 = 1000;
const ROUNDS: usize = 3;

fn options() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        segment_size: 16 << 20,
        snapshot_every: 0,
        ..Options::default()
    }
}

/// A closed store of `events` events, half of whose streams are hard-deleted.
fn build(dir: &Path, events: u64) {
    let store = Store::open(dir, options()).unwrap();
    let payload = vec![b'x'; 200];
    let mut batch = Vec::with_capacity(10);
    for i in 0..events / 10 {
        batch.clear();
        for _ in 0..10 {
            batch.push(EventData::new("Happened", payload.clone()));
        }
        let stream = format!("s-{}", (i * 7919) % STREAMS);
        store.append(&stream, ExpectedVersion::Any, &batch).unwrap();
    }
    for s in (0..STREAMS).step_by(2) {
        store
            .delete_stream(&format!("s-{s}"), ExpectedVersion::Any, DeleteMode::Hard)
            .unwrap();
    }
    store.close().unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// Bytes of data in the segments (up to each one's data end, as a scavenge reads them).
fn data_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|p| {
            let b = std::fs::read(p).unwrap();
            b.iter().rposition(|&x| x != 0).map_or(0, |i| i as u64 + 1)
        })
        .sum()
}

/// Copies each file's first `len` bytes to a new file in `to`, 1 MiB at a time, and syncs
/// it: the disk's sequential copy. Returns the seconds it took.
fn copy(files: &[PathBuf], to: &Path) -> f64 {
    let started = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    for (i, f) in files.iter().enumerate() {
        let mut src = std::fs::File::open(f).unwrap();
        let mut dst = std::fs::File::create(to.join(format!("{i}.copy"))).unwrap();
        loop {
            let n = src.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n]).unwrap();
        }
        dst.sync_data().unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// Appends of 10 events to random live streams for `time`; returns appends per second.
fn appends_for(store: &Store, time: Duration, stop: Option<&AtomicBool>) -> f64 {
    let payload = vec![b'y'; 200];
    let started = Instant::now();
    let mut n = 0u64;
    let mut batch = Vec::with_capacity(10);
    while started.elapsed() < time && stop.is_none_or(|s| !s.load(Ordering::Acquire)) {
        batch.clear();
        for _ in 0..10 {
            batch.push(EventData::new("Happened", payload.clone()));
        }
        let stream = format!("s-{}", 1 + 2 * ((n * 31) % (STREAMS / 2)));
        store.append(&stream, ExpectedVersion::Any, &batch).unwrap();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let events: u64 = std::env::var("ANNAL_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400_000);
    println!(
        "scavenge: {events} events of 200 bytes over {STREAMS} streams, 16 MiB segments, half \
         the streams hard-deleted; {ROUNDS} rounds"
    );
    let mut ratios = Vec::new();
    let mut append_ratios = Vec::new();
    for round in 0..ROUNDS {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        build(&dir, events);
        let files = segments(&dir);
        let bytes = data_bytes(&files);
        let copies = tempfile::tempdir().unwrap();
        let copy_secs = copy(&files, copies.path());
        drop(copies);
        let store = Store::open(&dir, options()).unwrap();
        let started = Instant::now();
        let report = store.scavenge().unwrap();
        let scavenge_secs = started.elapsed().as_secs_f64();
        let copy_rate = bytes as f64 / copy_secs / 1e6;
        let scavenge_rate = bytes as f64 / scavenge_secs / 1e6;
        println!(
            "round {round}: {:.1} MB of segments; copy {copy_rate:.0} MB/s, scavenge \
             {scavenge_rate:.0} MB/s ({:.2}x); {} events erased, {:.1} MB of disk given back",
            bytes as f64 / 1e6,
            scavenge_rate / copy_rate,
            report.events_erased,
            report.bytes_reclaimed() as f64 / 1e6
        );
        ratios.push(scavenge_rate / copy_rate);
        drop(store);

        // Appends alone, then beside a scavenge, on a fresh copy of the same store.
        let tmp2 = tempfile::tempdir().unwrap();
        let dir2 = tmp2.path().join("store");
        build(&dir2, events);
        let store = Arc::new(Store::open(&dir2, options()).unwrap());
        let alone = appends_for(&store, Duration::from_millis(1500), None);
        let done = Arc::new(AtomicBool::new(false));
        let took = Arc::new(AtomicU64::new(0));
        let scavenger = {
            let (store, done, took) = (Arc::clone(&store), Arc::clone(&done), Arc::clone(&took));
            std::thread::spawn(move || {
                let started = Instant::now();
                store.scavenge().unwrap();
                took.store(started.elapsed().as_micros() as u64, Ordering::Release);
                done.store(true, Ordering::Release);
            })
        };
        let beside = appends_for(&store, Duration::from_secs(60), Some(&done));
        scavenger.join().unwrap();
        println!(
            "round {round}: appends of 10 events alone {alone:.0}/s, beside a scavenge \
             ({:.2} s) {beside:.0}/s ({:.2}x)",
            took.load(Ordering::Acquire) as f64 / 1e6,
            beside / alone
        );
        append_ratios.push(beside / alone);
    }
    println!(
        "median: scavenge {:.2}x the sequential copy (target >= 0.5); appends beside a \
         scavenge {:.2}x appends alone (target >= 0.7)",
        median(ratios),
        median(append_ratios)
    );
}
