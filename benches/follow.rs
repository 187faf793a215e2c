//! Latency from an append's acknowledgement to a follower's delivery of that event.
//!
//! A writer `Store` and a follower (`Store::open_follower`) of the same directory; the
//! follower works the same whether it is in this process or another (it reads the writer's
//! shared `PUBLISHED` map and the segment files, never this process's memory). The writer
//! appends one event at a time, paced, and notes when each append returned; a subscription
//! on the follower notes when each event arrived. Prints the median and the 99th percentile.
//!
//! `cargo bench --bench follow [-- EVENTS]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a benchmark stops at its first failure, and its sizes are small"
)]

use std::time::{Duration, Instant};

use annal::{EventData, ExpectedVersion, FsyncPolicy, Options, Store};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn run(policy: FsyncPolicy, events: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let writer = Store::open(
        tmp.path(),
        Options {
            fsync: policy,
            ..Options::default()
        },
    )
    .unwrap();
    let follower = Store::open_follower(tmp.path(), Options::default()).unwrap();
    let mut sub = follower.subscribe_all(1).unwrap();
    let (acked, delivered) = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut at = Vec::with_capacity(events);
            while at.len() < events {
                let e = sub.next_timeout(Duration::from_secs(30)).unwrap().unwrap();
                assert_eq!(e.position as usize, at.len() + 1);
                at.push(Instant::now());
            }
            at
        });
        let mut acked = Vec::with_capacity(events);
        for i in 0..events {
            let stream = format!("order-{}", i % 100);
            writer
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    &[EventData::new("OrderPlaced", vec![7u8; 200])],
                )
                .unwrap();
            acked.push(Instant::now());
            // A live stream of appends, not a burst: each one is followed on its own.
            std::thread::sleep(Duration::from_micros(500));
        }
        (acked, reader.join().unwrap())
    });
    let mut lat: Vec<Duration> = acked
        .iter()
        .zip(&delivered)
        .map(|(a, d)| d.saturating_duration_since(*a))
        .collect();
    lat.sort_unstable();
    println!(
        "follow {policy:?}: {events} events, acknowledgement to delivery: median {:?}, p99 {:?}, max {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    follower.close().unwrap();
    writer.close().unwrap();
}

fn main() {
    let events = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3000);
    for policy in [FsyncPolicy::Never, FsyncPolicy::Always] {
        run(policy, events);
    }
}
