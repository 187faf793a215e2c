//! Criterion benchmarks of annal alone: append by batch size, group commit by thread count,
//! replay of the whole log, and one-stream reads. `cargo bench --bench store`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a benchmark stops at its first failure, and its sizes are small"
)]
#![allow(
    missing_docs,
    reason = "criterion_group! defines an undocumented function"
)]
use std::sync::Arc;
use std::time::{Duration, Instant};

use annal::{ExpectedVersion, FsyncPolicy, Options, ReadOptions, Store};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

#[path = "shared/workload.rs"]
mod workload;
use workload::*;

const STREAMS: u64 = 10_000;

fn append_batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_no_fsync");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for batch in [1u64, 10, 100, 1000] {
        g.throughput(Throughput::Elements(batch));
        g.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            b.iter_custom(|iters| {
                let tmp = tempfile::tempdir().unwrap();
                let store =
                    Store::open(tmp.path(), Options::default().fsync(FsyncPolicy::Never)).unwrap();
                let batches: Vec<_> = (0..64)
                    .map(|k| (0..batch).map(|i| event(k * batch + i)).collect::<Vec<_>>())
                    .collect();
                let start = Instant::now();
                for i in 0..iters {
                    let s = stream_name(i, STREAMS);
                    store
                        .append(&s, ExpectedVersion::Any, &batches[i as usize % 64])
                        .unwrap();
                }
                let t = start.elapsed();
                drop(store);
                t
            })
        });
    }
    g.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_fsync_always");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    for threads in [1u64, 2, 4, 8, 16] {
        g.bench_with_input(
            BenchmarkId::new("threads", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let tmp = tempfile::tempdir().unwrap();
                    let store = Arc::new(Store::open(tmp.path(), Options::default()).unwrap());
                    let per = iters.div_ceil(threads);
                    let start = Instant::now();
                    let hs: Vec<_> = (0..threads)
                        .map(|t| {
                            let store = store.clone();
                            std::thread::spawn(move || {
                                for i in 0..per {
                                    let s = stream_name(t * per + i, STREAMS);
                                    store.append(&s, ExpectedVersion::Any, &[event(i)]).unwrap();
                                }
                            })
                        })
                        .collect();
                    for h in hs {
                        h.join().unwrap();
                    }
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

fn filled_store(events: u64, batch: u64) -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Options::default().fsync(FsyncPolicy::Never)).unwrap();
    for k in 0..events / batch {
        let s = stream_name(k, STREAMS);
        let evs: Vec<_> = (0..batch).map(|i| event(k * batch + i)).collect();
        store.append(&s, ExpectedVersion::Any, &evs).unwrap();
    }
    (tmp, store)
}

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let n = 200_000u64;
    for batch in [1u64, 100] {
        let (_tmp, store) = filled_store(n, batch);
        g.throughput(Throughput::Elements(n));
        g.bench_function(
            BenchmarkId::new("read_all_written_in_batches_of", batch),
            |b| {
                b.iter(|| {
                    let mut sum = 0u64;
                    for e in store.read_all(ReadOptions::forward()).unwrap() {
                        sum += e.unwrap().payload.len() as u64;
                    }
                    assert_eq!(sum, n * PAYLOAD as u64);
                })
            },
        );
    }
    g.finish();
}

fn stream_read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_stream");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    // 1M single-event appends over 10k streams: ~100 events per stream, scattered in the log.
    let (_tmp, store) = filled_store(1_000_000, 1);
    let mut k = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_stream_of_100", |b| {
        b.iter(|| {
            k += 1;
            let s = format!("order-{}", mix(k) % STREAMS);
            let mut n = 0;
            for e in store.read_stream(&s, ReadOptions::forward()).unwrap() {
                n += e.unwrap().payload.len();
            }
            assert!(n > 0);
        })
    });
    g.finish();
}

/// An order aggregate whose events carry the workload's 200-byte payloads.
#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
struct Order {
    events: u64,
    bytes: u64,
}

impl annal::Aggregate for Order {
    type Event = Vec<u8>;
    type Command = ();
    type Error = ();
    fn event_type(_: &Vec<u8>) -> &'static str {
        "OrderEvent"
    }
    fn apply(&mut self, e: &Vec<u8>) {
        self.events += 1;
        self.bytes += e.len() as u64;
    }
    fn handle(&self, _: ()) -> Result<Vec<Vec<u8>>, ()> {
        Ok(vec![vec![0; PAYLOAD]])
    }
}

fn aggregate_load(c: &mut Criterion) {
    let mut g = c.benchmark_group("aggregate_load_100k_events");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let payload = <annal::Bincode as annal::Codec>::encode(&vec![7u8; PAYLOAD]).unwrap();
    for (name, every) in [("with_snapshots", 1000u64), ("without_snapshots", 0)] {
        let tmp = tempfile::tempdir().unwrap();
        let opts = Options::default()
            .fsync(FsyncPolicy::Never)
            .snapshot_every(every)
            .aggregate_cache(0);
        let store = Store::open(tmp.path(), opts).unwrap();
        let batch: Vec<_> = (0..1000)
            .map(|_| annal::EventData::new("OrderEvent", payload.clone()))
            .collect();
        for _ in 0..100 {
            store
                .append("order-1", ExpectedVersion::Any, &batch)
                .unwrap();
        }
        // The first load takes the snapshot at 100,000; then 500 more events arrive.
        store.aggregate::<Order>().load("order-1").unwrap();
        store
            .append("order-1", ExpectedVersion::Any, &batch[..500])
            .unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let l = store.aggregate::<Order>().load("order-1").unwrap();
                assert_eq!(l.state.events, 100_500);
                assert!(every == 0 || l.replayed == 500);
            })
        });
    }
    g.finish();
}

fn subscription_delivery(c: &mut Criterion) {
    let mut g = c.benchmark_group("live_delivery_while_appending");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    for subscribers in [1usize, 8] {
        g.bench_with_input(
            BenchmarkId::new("subscribers", subscribers),
            &subscribers,
            |b, &n| {
                b.iter_custom(|iters| {
                    let tmp = tempfile::tempdir().unwrap();
                    let store = Arc::new(
                        Store::open(tmp.path(), Options::default().fsync(FsyncPolicy::Never))
                            .unwrap(),
                    );
                    let barrier = Arc::new(std::sync::Barrier::new(n + 1));
                    let readers: Vec<_> = (0..n)
                        .map(|_| {
                            let (store, barrier) = (store.clone(), barrier.clone());
                            std::thread::spawn(move || {
                                let mut sub = store.subscribe_all(1).unwrap();
                                barrier.wait();
                                for _ in 0..iters {
                                    sub.next_timeout(Duration::from_secs(60)).unwrap().unwrap();
                                }
                            })
                        })
                        .collect();
                    barrier.wait();
                    let start = Instant::now();
                    // Appends in batches of 10, as a busy service would produce them.
                    let batch: Vec<_> = (0..10).map(event).collect();
                    let mut left = iters;
                    let mut k = 0;
                    while left > 0 {
                        let take = left.min(10) as usize;
                        store
                            .append(
                                &stream_name(k, STREAMS),
                                ExpectedVersion::Any,
                                &batch[..take],
                            )
                            .unwrap();
                        left -= take as u64;
                        k += 1;
                    }
                    for r in readers {
                        r.join().unwrap();
                    }
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    append_batches,
    group_commit,
    replay,
    stream_read,
    aggregate_load,
    subscription_delivery
);
criterion_main!(benches);
