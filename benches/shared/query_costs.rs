//! The consistency model's costs, measured side by side in one run, interleaved (timings on a
//! shared machine drift: only the ratios within a run mean much):
//! - a conditional append (a one-item query) against a plain append;
//! - reading the ~100 events of one tag against reading a ~100-event stream;
//! - replay of records with tags (format 2) against records without (format 1);
//! - the query index's memory per (event, tag) pair.
//!
//! Shared by `cargo bench --bench query` and the side-by-side benchmark (`bench-compare
//! --workload dcb`), which include this file.

use std::time::{Duration, Instant};

use annal::{
    AppendCondition, EventData, ExpectedVersion, FsyncPolicy, Options, Query, QueryItem,
    ReadOptions, Store, Transaction,
};

use crate::workload::{PAYLOAD, event, mix};

/// The ratios a run measured (each 0 when its part did not run).
#[derive(Debug, Default, Clone, Copy)]
pub struct Figures {
    /// A conditional append's rate over a plain append's (target >= 0.8).
    pub conditional_over_plain: f64,
    /// Reading a tag's ~100 events, its time over reading a ~100-event stream (target <= 1.2).
    pub tag_read_over_stream_read: f64,
    /// Replay of tagged records, its rate over untagged ones (target >= 0.9).
    pub tagged_replay_over_untagged: f64,
    /// Heap bytes of the tag lists per (event, tag) pair (target <= 8).
    pub bytes_per_tag: f64,
}

fn options() -> Options {
    Options::default().fsync(FsyncPolicy::Never)
}

fn tagged(i: u64, tags: u64) -> EventData {
    let e = event(i);
    e.with_tags((0..2).map(|k| format!("tag-{}", mix(i * 2 + k) % tags)))
}

/// The median of `rounds` alternating runs of `a` and `b`, each returning its own time.
fn interleaved(
    rounds: usize,
    mut a: impl FnMut() -> Duration,
    mut b: impl FnMut() -> Duration,
) -> (Duration, Duration) {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    // Each goes first in every other round: what one run leaves behind (caches, the
    // write-back of its files) weighs on both alike.
    for round in 0..rounds {
        if round % 2 == 0 {
            ta.push(a());
            tb.push(b());
        } else {
            tb.push(b());
            ta.push(a());
        }
    }
    ta.sort();
    tb.sort();
    (ta[rounds / 2], tb[rounds / 2])
}

fn per(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e9 / n as f64
}

/// Runs the parts `want` accepts (`append`, `read`, `replay`) at `scale` (1: quick, 5: full),
/// printing each as it ends; returns the figures.
pub fn run(scale: u64, want: impl Fn(&str) -> bool) -> Figures {
    let mut f = Figures::default();

    // 1. Conditional append against plain append, each on a store of its own.
    let n = 20_000 * scale;
    if want("append") {
        let (plain, conditional) = interleaved(
            5,
            || {
                let tmp = tempfile::tempdir().unwrap();
                let store = Store::open(tmp.path(), options()).unwrap();
                let start = Instant::now();
                for i in 0..n {
                    store
                        .append(
                            &format!("order-{}", i % 1000),
                            ExpectedVersion::Any,
                            &[tagged(i, 1000)],
                        )
                        .unwrap();
                }
                start.elapsed()
            },
            || {
                let tmp = tempfile::tempdir().unwrap();
                let store = Store::open(tmp.path(), options()).unwrap();
                let start = Instant::now();
                for i in 0..n {
                    let e = tagged(i, 1000);
                    // The decision's boundary: its first tag; it read up to the previous event.
                    let q = Query::items([QueryItem::new().tags([e.tags[0].clone()])]);
                    let tx = Transaction::new()
                        .append(format!("order-{}", i % 1000), ExpectedVersion::Any, [e])
                        .condition(AppendCondition::new(q).after(i));
                    store.commit(tx).unwrap();
                }
                start.elapsed()
            },
        );
        f.conditional_over_plain = plain.as_secs_f64() / conditional.as_secs_f64();
        println!(
            "append, one event:        plain {:>8.0} ns   conditional (one-item query) {:>8.0} ns   ratio {:.2}x the plain rate",
            per(plain, n),
            per(conditional, n),
            f.conditional_over_plain
        );
    }

    // 2. ~100 events of a tag against a ~100-event stream, in one store of 1,000 of each.
    let events = 100_000 * scale;
    if want("read") {
        let groups = events / 100;
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), options()).unwrap();
        for i in 0..events {
            let e = event(i).with_tags([format!("tag-{}", mix(i ^ 0xA5A5) % groups)]);
            store
                .append(
                    &format!("order-{}", mix(i) % groups),
                    ExpectedVersion::Any,
                    &[e],
                )
                .unwrap();
        }
        // Reads measured on a quiet store: not beside the write-back of what was appended.
        store.sync().unwrap();
        let reads = 2_000u64;
        let (by_stream, by_tag) = interleaved(
            7,
            || {
                let start = Instant::now();
                let mut seen = 0;
                for k in 0..reads {
                    let s = format!("order-{}", mix(k * 7 + 1) % groups);
                    for e in store.read_stream(&s, ReadOptions::forward()).unwrap() {
                        seen += e.unwrap().payload.len();
                    }
                }
                assert!(seen > 0);
                start.elapsed()
            },
            || {
                let start = Instant::now();
                let mut seen = 0;
                for k in 0..reads {
                    let q = Query::items([
                        QueryItem::new().tags([format!("tag-{}", mix(k * 7 + 1) % groups)])
                    ]);
                    for e in store.read_query(&q, ReadOptions::forward()).unwrap() {
                        seen += e.unwrap().payload.len();
                    }
                }
                assert!(seen > 0);
                start.elapsed()
            },
        );
        f.tag_read_over_stream_read = by_tag.as_secs_f64() / by_stream.as_secs_f64();
        println!(
            "read ~100 events:         a stream {:>8.1} µs   a tag {:>8.1} µs   ratio {:.2}x the stream's time",
            by_stream.as_secs_f64() * 1e6 / reads as f64,
            by_tag.as_secs_f64() * 1e6 / reads as f64,
            f.tag_read_over_stream_read
        );
        let stats = store.stats().unwrap();
        f.bytes_per_tag = stats.tag_index_bytes as f64 / stats.tag_postings as f64;
        println!(
            "index memory:             {} (event, tag) pairs, {:.1} bytes each (the tag lists' heap, spare capacity included); {:.1} bytes per event in all",
            stats.tag_postings,
            f.bytes_per_tag,
            stats.index_memory_bytes as f64 / stats.events as f64
        );
        drop(store);
    }

    // 3. Replay of format-2 records (two tags each) against format-1 records (none).
    if !want("replay") {
        return f;
    }
    let events = 100_000 * scale;
    let stores: Vec<(tempfile::TempDir, Store)> = [false, true]
        .into_iter()
        .map(|with_tags| {
            let tmp = tempfile::tempdir().unwrap();
            let store = Store::open(tmp.path(), options()).unwrap();
            for i in 0..events {
                let e = if with_tags { tagged(i, 1000) } else { event(i) };
                store
                    .append(
                        &format!("order-{}", mix(i) % 10_000),
                        ExpectedVersion::Any,
                        &[e],
                    )
                    .unwrap();
            }
            (tmp, store)
        })
        .collect();
    let replay = |store: &Store| {
        let start = Instant::now();
        let mut sum = 0u64;
        for e in store.read_all(ReadOptions::forward()).unwrap() {
            sum += e.unwrap().payload.len() as u64;
        }
        assert_eq!(sum, events * PAYLOAD as u64);
        start.elapsed()
    };
    let (v1, v2) = interleaved(7, || replay(&stores[0].1), || replay(&stores[1].1));
    f.tagged_replay_over_untagged = v1.as_secs_f64() / v2.as_secs_f64();
    println!(
        "replay:                   format 1 {:>6.0} ns/event   format 2 (2 tags) {:>6.0} ns/event   ratio {:.2}x the format-1 rate",
        per(v1, events),
        per(v2, events),
        f.tagged_replay_over_untagged
    );
    f
}
