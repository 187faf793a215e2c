//! The v1 fixture store (`tests/fixtures/v1/`, written once by the code of format version 1):
//! every later version must keep opening it and reading every byte of it back. It has
//! several sealed segments with index checkpoints, snapshots, a durable subscription's ack
//! and a projection checkpoint.
//!
//! `cargo test --test fixture -- --ignored` writes it again (only when the format changes on
//! purpose: then add a v2 directory beside it and keep this one).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use annal::{
    Aggregate, EventData, ExpectedVersion, Health, Options, Projection, ReadOptions, RecordedEvent,
    Store,
};
use serde::{Deserialize, Serialize};

const EVENTS: u64 = 150;
const ACKED: u64 = 70;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn options() -> Options {
    Options {
        segment_size: 2048,
        snapshot_every: 10,
        projection_checkpoint_every: 0,
        ..Options::default()
    }
}

/// Event `n` (1-based): its stream, type, payload, metadata and id, all derived from `n`.
fn event(n: u64) -> (String, EventData) {
    let stream = format!("cart-{}", n % 4);
    let e = EventData::new(
        format!("Type{}", n % 3),
        format!("payload {n}: {}", "x".repeat((n % 17) as usize)).into_bytes(),
    )
    .with_metadata(if n.is_multiple_of(5) {
        Vec::new()
    } else {
        format!("meta-{n}").into_bytes()
    });
    (
        stream,
        if n.is_multiple_of(2) {
            e.with_id(u128::from(n) << 64 | 0xABCD)
        } else {
            e
        },
    )
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Counter {
    total: i64,
}

impl Aggregate for Counter {
    type Event = i64;
    type Command = i64;
    type Error = String;
    fn aggregate_type() -> &'static str {
        "Counter"
    }
    fn event_type(_: &i64) -> &'static str {
        "Added"
    }
    fn apply(&mut self, e: &i64) {
        self.total += e;
    }
    fn handle(&self, n: i64) -> Result<Vec<i64>, String> {
        Ok(vec![n])
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TypeCount {
    by_type: std::collections::BTreeMap<String, u64>,
}

impl Projection for TypeCount {
    const NAME: &'static str = "type-count";
    fn apply(&mut self, e: &RecordedEvent) {
        *self.by_type.entry(e.event_type.clone()).or_default() += 1;
    }
}

#[test]
#[ignore = "writes tests/fixtures/v1: only when the format changes on purpose"]
fn write_the_v1_fixture() {
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir, options()).unwrap();
    for n in 1..=EVENTS {
        let (stream, e) = event(n);
        store.append(&stream, ExpectedVersion::Any, &[e]).unwrap();
    }
    let counters = store.aggregate::<Counter>();
    for n in 1..=25 {
        counters.execute("counter-1", n).unwrap();
    }
    let mut sub = store.durable_subscription("relay").unwrap();
    for _ in 0..ACKED {
        sub.next_timeout(Duration::from_secs(5)).unwrap().unwrap();
    }
    sub.ack(ACKED).unwrap();
    drop(sub);
    let mut p = store.projection::<TypeCount>().unwrap();
    p.catch_up().unwrap();
    p.checkpoint().unwrap();
    drop(p);
    store.close().unwrap();
    std::fs::remove_file(dir.join("LOCK")).unwrap();
}

/// Every file of a directory and its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p.file_name().unwrap().into(), b)
        })
        .collect();
    v.sort();
    v
}

fn check_events(store: &Store) {
    let all: Vec<RecordedEvent> = store
        .read_all(ReadOptions::forward())
        .unwrap()
        .collect::<annal::Result<_>>()
        .unwrap();
    assert_eq!(all.len() as u64, EVENTS + 25);
    let mut last_ts = 0;
    for (i, e) in all.iter().take(EVENTS as usize).enumerate() {
        let n = i as u64 + 1;
        let (stream, want) = event(n);
        assert_eq!(e.position, n);
        assert_eq!(&*e.stream, stream);
        let version = if n.is_multiple_of(4) {
            n / 4
        } else {
            n / 4 + 1
        };
        assert_eq!(e.version, version, "version of {n}");
        assert_eq!(e.event_type, want.event_type);
        assert_eq!(e.payload, want.payload, "payload of {n}");
        assert_eq!(e.metadata, want.metadata, "metadata of {n}");
        assert_eq!(e.id, want.id);
        assert!(e.timestamp >= last_ts && e.timestamp > 1_700_000_000_000_000);
        last_ts = e.timestamp;
    }
    // Each stream read agrees with the log.
    for s in 0..4 {
        let name = format!("cart-{s}");
        let by_stream: Vec<u64> = store
            .read_stream(&name, ReadOptions::forward())
            .unwrap()
            .map(|e| e.unwrap().position)
            .collect();
        let want: Vec<u64> = (1..=EVENTS).filter(|n| n % 4 == s).collect();
        assert_eq!(by_stream, want, "{name}");
    }
}

#[test]
fn the_v1_fixture_opens_and_reads_back_every_byte() {
    let dir = fixture();
    let before = files(&dir);
    let names: Vec<String> = before
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    // What the fixture has to hold to be worth keeping.
    assert!(
        names.iter().filter(|n| n.ends_with(".seg")).count() >= 4,
        "{names:?}"
    );
    assert!(
        names.iter().filter(|n| n.ends_with(".idx")).count() >= 3,
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with(".snap")), "{names:?}");
    assert!(names.iter().any(|n| n == "relay.sub") && names.iter().any(|n| n == "type-count.proj"));

    let report = annal::verify(&annal::storage::FsStorage::default(), &dir).unwrap();
    assert_eq!(report.health(), Health::Healthy, "{:?}", report.findings);
    let ro = Store::open(&dir, options().read_only(true)).unwrap();
    check_events(&ro);
    // Its format-1 index checkpoints lack the query index's records: every sealed segment
    // is scanned (a writable open then checkpoints it again, below).
    let checkpoints = names.iter().filter(|n| n.ends_with(".idx")).count();
    assert_eq!(ro.recovery_report().segments_from_checkpoint, 0);
    assert!(ro.recovery_report().segments_scanned >= checkpoints);
    drop(ro);
    assert_eq!(files(&dir), before, "a read-only open changed the fixture");

    // Writable, on a copy: snapshots, the ack and the projection checkpoint are used.
    let tmp = tempfile::tempdir().unwrap();
    for (name, bytes) in &before {
        std::fs::write(tmp.path().join(name), bytes).unwrap();
    }
    let store = Store::open(tmp.path(), options()).unwrap();
    check_events(&store);
    let loaded = store.aggregate::<Counter>().load("counter-1").unwrap();
    assert_eq!(loaded.state.total, (1..=25).sum::<i64>());
    assert!(
        loaded.snapshot_version.is_some_and(|v| v >= 20),
        "{:?}",
        loaded.snapshot_version
    );
    let mut sub = store.durable_subscription("relay").unwrap();
    assert_eq!(sub.acked_position(), ACKED);
    assert_eq!(
        sub.next_timeout(Duration::ZERO).unwrap().unwrap().position,
        ACKED + 1
    );
    drop(sub);
    let p = store.projection::<TypeCount>().unwrap();
    assert!(p.resumed());
    assert_eq!(p.state().by_type.values().sum::<u64>(), EVENTS + 25);
    drop(p);
    let r = store
        .append("cart-0", ExpectedVersion::Any, &[event(1).1])
        .unwrap();
    assert_eq!(r.first_position, EVENTS + 26);
    store.close().unwrap();
    // The upgrade wrote format-2 checkpoints: the next open loads every sealed segment.
    let store = Store::open(tmp.path(), options()).unwrap();
    let report = store.recovery_report();
    assert!(report.segments_from_checkpoint >= checkpoints, "{report:?}");
    assert_eq!(
        report.segments_scanned, 1,
        "only the active one: {report:?}"
    );
    assert_eq!(store.last_position(), EVENTS + 26);
    store.close().unwrap();
}
