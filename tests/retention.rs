//! Retention of the whole log (`Options::retention`): the oldest sealed segments past it are
//! dropped (rewritten empty, numbering kept); durable subscriptions, projections and
//! aggregates that had not reached what was dropped are told, never moved on silently.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use annal::{
    Aggregate, Error, EventData, ExpectedVersion, Options, Projection, ReadOptions, RecordedEvent,
    Retention, Store,
};
use serde::{Deserialize, Serialize};

fn opts(retention: Retention) -> Options {
    Options {
        snapshot_every: 0,
        ..common::tiny(4096)
    }
    .retention(retention)
}

fn event(i: u64) -> EventData {
    EventData::new("E", format!("{i:06}-{}", "x".repeat(100)))
}

fn positions(store: &Store) -> Vec<u64> {
    common::all(store).iter().map(|e| e.position).collect()
}

#[derive(Default, Serialize, Deserialize)]
struct Count(u64);

impl Projection for Count {
    const NAME: &'static str = "count";
    fn apply(&mut self, _: &RecordedEvent) {
        self.0 += 1;
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Total(u64);

impl Aggregate for Total {
    type Event = u64;
    type Command = u64;
    type Error = String;
    fn aggregate_type() -> &'static str {
        "Total"
    }
    fn event_type(_: &u64) -> &'static str {
        "Added"
    }
    fn apply(&mut self, e: &u64) {
        self.0 += e;
    }
    fn handle(&self, c: u64) -> Result<Vec<u64>, String> {
        Ok(vec![c])
    }
}

#[test]
fn the_oldest_segments_past_max_bytes_are_dropped_and_the_behind_are_told() {
    let tmp = tempfile::tempdir().unwrap();
    let retention = Retention::new().max_bytes(16 * 1024);
    let store = Store::open(tmp.path(), opts(retention)).unwrap();
    store.aggregate::<Total>().execute("total-1", 5).unwrap();
    let mut early = store.durable_subscription("early").unwrap();
    early.next().unwrap().unwrap();
    early.ack(1).unwrap();
    drop(early);
    {
        let mut p = store.projection::<Count>().unwrap();
        p.catch_up().unwrap();
        p.checkpoint().unwrap();
    }
    for i in 0..400 {
        store
            .append(&format!("s-{}", i % 5), ExpectedVersion::Any, &[event(i)])
            .unwrap();
    }
    let before = common::all(&store);
    let segments = common::segment_files(tmp.path()).len();
    store.scavenge().unwrap();
    let after = positions(&store);
    let first = *after.first().unwrap();
    assert!(first > 100, "retention kept from {first}");
    // What is kept is what was there, from the retention point on.
    let kept: Vec<u64> = before
        .iter()
        .map(|e| e.position)
        .filter(|&p| p >= first)
        .collect();
    assert_eq!(after, kept);
    assert_eq!(after.last(), Some(&401));
    // Segments are compacted, not removed: the numbering stays whole.
    assert!(common::segment_files(tmp.path()).len() >= segments);
    let bytes: u64 = store.stats().unwrap().bytes;
    assert!(bytes > 16 * 1024, "{bytes}");

    let behind = |r: annal::Result<()>, what: &str| match r {
        Err(Error::BehindRetention {
            name,
            retained_from,
            ..
        }) => {
            assert!(name.contains(what), "{name}");
            assert_eq!(retained_from, first);
        }
        other => panic!("{what}: {other:?}"),
    };
    let mut early = store.durable_subscription("early").unwrap();
    behind(early.next().unwrap().map(|_| ()), "early");
    // A new durable subscription starts at what is kept.
    let mut fresh = store.durable_subscription("fresh").unwrap();
    assert_eq!(fresh.next().unwrap().unwrap().position, first);
    let mut p = store.projection::<Count>().unwrap();
    behind(p.catch_up().map(|_| ()), "count");
    behind(
        store.aggregate::<Total>().load("total-1").map(|_| ()),
        "total-1",
    );
    drop((early, fresh, p));
    store.close().unwrap();
    // The retention point is in the files: the same after a reopen.
    let store = Store::open(tmp.path(), opts(retention)).unwrap();
    assert_eq!(positions(&store), kept);
    let mut early = store.durable_subscription("early").unwrap();
    behind(early.next().unwrap().map(|_| ()), "early");
    let v = annal::verify(&annal::storage::FsStorage::default(), tmp.path()).unwrap();
    assert_eq!(v.health(), annal::Health::Healthy, "{v:?}");
}

#[test]
fn segments_whose_events_are_all_older_than_max_age_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let day = 86_400_000_000u64;
    let retention = Retention::new().max_age(Duration::from_secs(86_400));
    let store = Store::open(tmp.path(), opts(retention)).unwrap();
    for i in 0..150u64 {
        let e = event(i).with_timestamp(now - 3 * day + i);
        store.append("old-1", ExpectedVersion::Any, &[e]).unwrap();
    }
    for i in 0..150u64 {
        store
            .append("new-1", ExpectedVersion::Any, &[event(i)])
            .unwrap();
    }
    store.scavenge().unwrap();
    let streams: Vec<String> = common::all(&store)
        .iter()
        .map(|e| e.stream.to_string())
        .collect();
    let old = streams.iter().filter(|s| *s == "old-1").count();
    assert!(old < 40, "{old} old events kept");
    assert_eq!(streams.iter().filter(|s| *s == "new-1").count(), 150);
    // Nothing recent is dropped, even by running it again.
    store.scavenge().unwrap();
    assert_eq!(
        common::all(&store)
            .iter()
            .filter(|e| &*e.stream == "new-1")
            .count(),
        150
    );
    let read = store
        .read_stream("old-1", ReadOptions::backward().limit(1))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        read.version, 150,
        "the newest old event sits in a kept segment"
    );
}

#[test]
fn without_retention_nothing_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), opts(Retention::new())).unwrap();
    for i in 0..300 {
        store
            .append("s-1", ExpectedVersion::Any, &[event(i)])
            .unwrap();
    }
    let r = store.scavenge().unwrap();
    assert_eq!((r.segments_retired, r.events_erased), (0, 0));
    assert_eq!(positions(&store), (1..=300).collect::<Vec<_>>());
}

fn big(i: u64) -> EventData {
    EventData::new("E", format!("{i:06}-{}", "x".repeat(300)))
}

/// A scavenge applies retention first, then rewrites what is dead by metadata: a retired
/// segment stays retired, its events gone.
#[test]
fn retired_segments_stay_retired_through_the_same_scavenge() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = Options {
        snapshot_every: 0,
        ..common::tiny(4096)
    };
    {
        let store = Store::open(tmp.path(), plain.clone()).unwrap();
        // Two metadata events of one stream in segment 1: the first one is dead.
        for custom in [b"a", b"b"] {
            store
                .set_stream_metadata(
                    "m-1",
                    ExpectedVersion::Any,
                    annal::StreamMetadata::new().custom(custom.to_vec()),
                )
                .unwrap();
        }
        for i in 0..200 {
            store
                .append(&format!("s-{}", i % 3), ExpectedVersion::Any, &[big(i)])
                .unwrap();
        }
        store.close().unwrap();
    }
    let store = Store::open(
        tmp.path(),
        plain.retention(Retention::new().max_bytes(20 * 1024)),
    )
    .unwrap();
    let r = store.scavenge().unwrap();
    assert!(r.segments_retired > 0, "{r:?}");
    let first = positions(&store)[0];
    assert!(
        first > 10,
        "events of a retired segment are readable again from {first}"
    );
    let mut sub = store.durable_subscription("d").unwrap();
    assert_eq!(sub.next().unwrap().unwrap().position, first);
    assert_eq!(
        store
            .stream_metadata("m-1")
            .unwrap()
            .map(|(v, m)| (v, m.custom)),
        Some((2, b"b".to_vec()))
    );
}

/// Retention keeps the metadata its streams still need: max_count and a tombstone survive
/// the retirement of the segment that holds them, and a reopen.
#[test]
fn retention_keeps_the_current_metadata_of_every_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(Retention::new().max_bytes(20 * 1024));
    {
        let store = Store::open(tmp.path(), o.clone()).unwrap();
        store
            .set_stream_metadata(
                "x-1",
                ExpectedVersion::Any,
                annal::StreamMetadata::new().max_count(1),
            )
            .unwrap();
        store
            .append("y-1", ExpectedVersion::Any, &[big(0)])
            .unwrap();
        store
            .delete_stream("y-1", ExpectedVersion::Any, annal::DeleteMode::Hard)
            .unwrap();
        for i in 0..200 {
            let s = if i % 40 == 0 || i > 190 {
                "x-1".to_string()
            } else {
                format!("s-{}", i % 3)
            };
            store.append(&s, ExpectedVersion::Any, &[big(i)]).unwrap();
        }
        let r = store.scavenge().unwrap();
        assert!(store.retained_from() > 1 || r.segments_retired > 0, "{r:?}");
        assert_eq!(common::stream(&store, "x-1").len(), 1);
        store.close().unwrap();
    }
    let store = Store::open(tmp.path(), o).unwrap();
    assert_eq!(
        common::stream(&store, "x-1").len(),
        1,
        "max_count lost with its segment"
    );
    let y = store.append("y-1", ExpectedVersion::Any, &[big(1)]);
    assert!(
        matches!(y, Err(Error::StreamDeleted { .. })),
        "tombstone lost: {y:?}"
    );
    let v = annal::verify(&annal::storage::FsStorage::default(), tmp.path()).unwrap();
    assert_eq!(v.health(), annal::Health::Healthy, "{v:?}");
}
