//! Group commit under `FsyncPolicy::Always` for async callers, beside threads: appends per
//! second and appends per fdatasync for 16 threads calling `append`, 16 tokio tasks calling
//! `append_async` (on one thread and on two), 16 tasks calling the blocking `append` inline
//! or through `spawn_blocking`; and how late a task sleeping 1 ms wakes on a one-thread
//! runtime while 16 tasks append.
//!
//! `cargo bench --bench async_commit` (plain output, no criterion: the figures are ratios
//! within one run, interleaved over rounds). `ANNAL_BENCH_APPENDS` sets appends per run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use annal::{EventData, ExpectedVersion, FsyncPolicy, Options, Store};

const TASKS: u64 = 16;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    Threads,
    TasksOneThread,
    TasksTwoThreads,
    BlockingInline,
    SpawnBlocking,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Threads => "16 threads, append",
            Way::TasksOneThread => "16 tasks, append_async, 1-thread runtime",
            Way::TasksTwoThreads => "16 tasks, append_async, 2-thread runtime",
            Way::BlockingInline => "16 tasks, append inline, 1-thread runtime",
            Way::SpawnBlocking => "16 tasks, spawn_blocking(append), 2-thread runtime",
        }
    }
}

struct Run {
    appends_per_sec: f64,
    appends_per_sync: f64,
    /// Lateness of a 1 ms sleeper on the same runtime (one-thread runtimes only): p50, max.
    sleeper: Option<(Duration, Duration)>,
}

fn event() -> EventData {
    EventData::new("Appended", vec![7u8; 200])
}

fn run(way: Way, appends: u64) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            tmp.path(),
            Options {
                fsync: FsyncPolicy::Always,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let per = appends / TASKS;
    let start = Instant::now();
    let mut sleeper = None;
    match way {
        Way::Threads => {
            let hs: Vec<_> = (0..TASKS)
                .map(|t| {
                    let store = Arc::clone(&store);
                    std::thread::spawn(move || {
                        let s = format!("s-{t}");
                        for _ in 0..per {
                            store.append(&s, ExpectedVersion::Any, &[event()]).unwrap();
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        }
        Way::TasksOneThread | Way::TasksTwoThreads | Way::BlockingInline | Way::SpawnBlocking => {
            let rt = match way {
                Way::TasksOneThread | Way::BlockingInline => {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                }
                _ => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build(),
            }
            .unwrap();
            let measure_sleeper = matches!(way, Way::TasksOneThread | Way::BlockingInline);
            sleeper = rt.block_on(async {
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let late = measure_sleeper.then(|| {
                    let done = Arc::clone(&done);
                    tokio::spawn(async move {
                        let mut late = Vec::new();
                        while !done.load(std::sync::atomic::Ordering::Relaxed) {
                            let t = Instant::now();
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            late.push(t.elapsed().saturating_sub(Duration::from_millis(1)));
                        }
                        late
                    })
                });
                let tasks: Vec<_> = (0..TASKS)
                    .map(|t| {
                        let store = Arc::clone(&store);
                        tokio::spawn(async move {
                            let s = format!("s-{t}");
                            for _ in 0..per {
                                match way {
                                    Way::TasksOneThread | Way::TasksTwoThreads => {
                                        store
                                            .append_async(&s, ExpectedVersion::Any, &[event()])
                                            .await
                                            .unwrap();
                                    }
                                    Way::BlockingInline => {
                                        store.append(&s, ExpectedVersion::Any, &[event()]).unwrap();
                                        // As a handler would between commands.
                                        tokio::task::yield_now().await;
                                    }
                                    _ => {
                                        let (store, s) = (Arc::clone(&store), s.clone());
                                        tokio::task::spawn_blocking(move || {
                                            store.append(&s, ExpectedVersion::Any, &[event()])
                                        })
                                        .await
                                        .unwrap()
                                        .unwrap();
                                    }
                                }
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                match late {
                    Some(h) => {
                        let mut late = h.await.unwrap();
                        late.sort_unstable();
                        let p50 = late.get(late.len() / 2).copied().unwrap_or_default();
                        let max = late.last().copied().unwrap_or_default();
                        Some((p50, max))
                    }
                    None => None,
                }
            });
        }
    }
    let elapsed = start.elapsed();
    let stats = store.stats().unwrap();
    Run {
        appends_per_sec: stats.events as f64 / elapsed.as_secs_f64(),
        appends_per_sync: stats.events as f64 / stats.segment_syncs.max(1) as f64,
        sleeper,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let appends: u64 = std::env::var("ANNAL_BENCH_APPENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3200);
    let ways = [
        Way::Threads,
        Way::TasksOneThread,
        Way::TasksTwoThreads,
        Way::BlockingInline,
        Way::SpawnBlocking,
    ];
    let rounds = 3;
    let mut results: Vec<Vec<Run>> = ways.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, way) in ways.iter().enumerate() {
            results[i].push(run(*way, appends));
        }
    }
    println!(
        "FsyncPolicy::Always, {appends} appends of one 200-byte event, {rounds} rounds interleaved (median)"
    );
    println!(
        "{:<52} {:>12} {:>14} {:>22}",
        "", "appends/s", "appends/sync", "1 ms sleeper late p50/max"
    );
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    for (way, runs) in ways.iter().zip(&results) {
        let rate = median(runs.iter().map(|r| r.appends_per_sec).collect());
        let share = median(runs.iter().map(|r| r.appends_per_sync).collect());
        let late = runs
            .iter()
            .filter_map(|r| r.sleeper)
            .max_by_key(|(_, max)| *max)
            .map(|(p50, max)| {
                format!(
                    "{:.2} / {:.1} ms",
                    p50.as_secs_f64() * 1e3,
                    max.as_secs_f64() * 1e3
                )
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<52} {:>12.0} {:>14.1} {:>22}",
            way.name(),
            rate,
            share,
            late
        );
    }
}
