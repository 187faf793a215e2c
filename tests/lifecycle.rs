//! Stream lifecycle: metadata (max_count, max_age, truncate_before, custom bytes), soft and
//! hard delete, honoured by every read at once and after reopens.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test's failure is a panic"
)]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use annal::{
    Aggregate, DeleteMode, Error, EventData, ExpectedVersion, Query, QueryItem, ReadOptions, Store,
    StreamMetadata, Transaction,
};
use serde::{Deserialize, Serialize};

fn ev(n: u64) -> EventData {
    EventData::new("Counted", format!("{n}")).with_tags([format!("n:{}", n % 2)])
}

fn versions(store: &Store, stream: &str, opts: ReadOptions) -> Vec<u64> {
    store
        .read_stream(stream, opts)
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect()
}

fn all_of(store: &Store, stream: &str) -> Vec<u64> {
    common::all(store)
        .into_iter()
        .filter(|e| &*e.stream == stream)
        .map(|e| e.version)
        .collect()
}

fn fill(store: &Store, stream: &str, n: u64) {
    for i in 1..=n {
        store
            .append(stream, ExpectedVersion::Any, &[ev(i)])
            .unwrap();
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
        .try_into()
        .unwrap()
}

#[test]
fn max_count_and_truncate_before_bound_every_read_and_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(4096)).unwrap();
    fill(&store, "s-1", 10);
    fill(&store, "other-1", 3);
    assert_eq!(store.stream_metadata("s-1").unwrap(), None);
    let v = store
        .set_stream_metadata(
            "s-1",
            ExpectedVersion::NoStream,
            StreamMetadata::new().max_count(4),
        )
        .unwrap();
    assert_eq!(v, 1);
    assert_eq!(
        versions(&store, "s-1", ReadOptions::forward()),
        [7, 8, 9, 10]
    );
    // A limit counts live events, from the first one read.
    assert_eq!(
        versions(&store, "s-1", ReadOptions::forward().limit(2)),
        [7, 8]
    );
    assert_eq!(
        versions(&store, "s-1", ReadOptions::forward_from(2).limit(2)),
        [7, 8]
    );
    assert_eq!(
        versions(&store, "s-1", ReadOptions::backward().limit(2)),
        [10, 9]
    );
    assert_eq!(
        versions(&store, "s-1", ReadOptions::backward()),
        [10, 9, 8, 7]
    );
    assert_eq!(all_of(&store, "s-1"), [7, 8, 9, 10]);
    assert_eq!(all_of(&store, "other-1"), [1, 2, 3]);
    // Metadata streams are annal's: not in $all, queries or the stream list.
    assert!(
        common::all(&store)
            .iter()
            .all(|e| !e.stream.starts_with('$'))
    );
    let names: Vec<String> = store
        .streams()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["other-1", "s-1"]);
    let by_tag: Vec<(String, u64)> = store
        .read_query(
            &Query::items([QueryItem::new().tags(["n:0"])]),
            ReadOptions::forward(),
        )
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.stream.to_string(), e.version)
        })
        .collect();
    assert_eq!(
        by_tag,
        [("s-1".into(), 8), ("s-1".into(), 10), ("other-1".into(), 2)]
    );
    let by_type = store
        .read_event_type("$metadata", ReadOptions::forward())
        .unwrap()
        .count();
    assert_eq!(by_type, 0);
    // The window moves with appends.
    fill(&store, "s-1", 2);
    assert_eq!(
        versions(&store, "s-1", ReadOptions::forward()),
        [9, 10, 11, 12]
    );
    // A stale expected version on the metadata stream fails.
    let stale = store.set_stream_metadata("s-1", ExpectedVersion::NoStream, StreamMetadata::new());
    assert!(
        matches!(stale, Err(Error::WrongExpectedVersion { .. })),
        "{stale:?}"
    );
    store
        .set_stream_metadata(
            "s-1",
            ExpectedVersion::Exact(1),
            StreamMetadata::new()
                .truncate_before(11)
                .custom(b"owner=me".to_vec()),
        )
        .unwrap();
    assert_eq!(versions(&store, "s-1", ReadOptions::forward()), [11, 12]);
    store.close().unwrap();

    let store = Store::open(tmp.path(), common::tiny(4096)).unwrap();
    assert_eq!(versions(&store, "s-1", ReadOptions::forward()), [11, 12]);
    let (v, m) = store.stream_metadata("s-1").unwrap().unwrap();
    assert_eq!(v, 2);
    assert_eq!(
        m,
        StreamMetadata::new()
            .truncate_before(11)
            .custom(b"owner=me".to_vec())
    );
    // Lifting the rules shows what is still in the log (nothing was scavenged).
    store
        .set_stream_metadata("s-1", ExpectedVersion::Exact(2), StreamMetadata::new())
        .unwrap();
    assert_eq!(versions(&store, "s-1", ReadOptions::forward()).len(), 12);
}

#[test]
fn max_age_hides_old_events_by_their_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(1 << 20)).unwrap();
    let hour = 3_600_000_000;
    for (i, age) in [5 * hour, 3 * hour, 0].iter().enumerate() {
        store
            .append(
                "t-1",
                ExpectedVersion::Any,
                &[EventData::new("E", format!("{i}")).with_timestamp(now() - age)],
            )
            .unwrap();
    }
    store
        .set_stream_metadata(
            "t-1",
            ExpectedVersion::Any,
            StreamMetadata::new().max_age(Duration::from_secs(4 * 3600)),
        )
        .unwrap();
    assert_eq!(versions(&store, "t-1", ReadOptions::forward()), [2, 3]);
    assert_eq!(versions(&store, "t-1", ReadOptions::backward()), [3, 2]);
    assert_eq!(all_of(&store, "t-1"), [2, 3]);
}

#[test]
fn a_soft_deleted_stream_reads_empty_and_continues_its_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(4096)).unwrap();
    fill(&store, "c-1", 5);
    let wrong = store.delete_stream("c-1", ExpectedVersion::Exact(4), DeleteMode::Soft);
    assert!(
        matches!(wrong, Err(Error::WrongExpectedVersion { .. })),
        "{wrong:?}"
    );
    assert_eq!(
        store
            .delete_stream("c-1", ExpectedVersion::Exact(5), DeleteMode::Soft)
            .unwrap(),
        Some(5)
    );
    assert!(versions(&store, "c-1", ReadOptions::forward()).is_empty());
    assert!(all_of(&store, "c-1").is_empty());
    assert_eq!(store.stream_version("c-1").unwrap(), Some(5));
    let r = store
        .append("c-1", ExpectedVersion::Exact(5), &[ev(6)])
        .unwrap();
    assert_eq!(r.first_version, 6);
    assert_eq!(versions(&store, "c-1", ReadOptions::forward()), [6]);
    store.close().unwrap();
    let store = Store::open(tmp.path(), common::tiny(4096)).unwrap();
    assert_eq!(versions(&store, "c-1", ReadOptions::forward()), [6]);
    let (_, m) = store.stream_metadata("c-1").unwrap().unwrap();
    assert_eq!(m.truncate_before, Some(6));
}

#[test]
fn a_hard_deleted_stream_refuses_appends_metadata_and_transactions_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(4096)).unwrap();
    fill(&store, "h-1", 3);
    store
        .set_stream_metadata(
            "h-1",
            ExpectedVersion::Any,
            StreamMetadata::new().custom(b"pii".to_vec()),
        )
        .unwrap();
    store
        .delete_stream("h-1", ExpectedVersion::Any, DeleteMode::Hard)
        .unwrap();
    let check = |store: &Store| {
        assert!(versions(store, "h-1", ReadOptions::forward()).is_empty());
        assert!(all_of(store, "h-1").is_empty());
        let deleted = |r: annal::Result<()>| {
            assert!(
                matches!(&r, Err(Error::StreamDeleted { stream }) if stream == "h-1"),
                "{r:?}"
            );
        };
        deleted(
            store
                .append("h-1", ExpectedVersion::Any, &[ev(9)])
                .map(|_| ()),
        );
        deleted(
            store
                .set_stream_metadata("h-1", ExpectedVersion::Any, StreamMetadata::new())
                .map(|_| ()),
        );
        deleted(
            store
                .delete_stream("h-1", ExpectedVersion::Any, DeleteMode::Soft)
                .map(|_| ()),
        );
        deleted(
            store
                .commit(
                    Transaction::new()
                        .append("h-1", ExpectedVersion::Any, [ev(1)])
                        .append("x-1", ExpectedVersion::Any, [ev(1)]),
                )
                .map(|_| ()),
        );
        let (_, m) = store.stream_metadata("h-1").unwrap().unwrap();
        assert!(m.deleted);
        assert!(m.custom.is_empty(), "a tombstone keeps no user bytes");
    };
    check(&store);
    store.close().unwrap();
    let store = Store::open(tmp.path(), common::tiny(4096)).unwrap();
    check(&store);
    // The refused transaction wrote nothing.
    assert_eq!(store.stream_version("x-1").unwrap(), None);
}

#[test]
fn metadata_is_refused_when_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(4096)).unwrap();
    for bad in [
        StreamMetadata::new().max_count(0),
        StreamMetadata::new().truncate_before(0),
        StreamMetadata::new().custom(vec![0; 64 * 1024 + 1]),
        StreamMetadata {
            deleted: true,
            ..StreamMetadata::new()
        },
    ] {
        let r = store.set_stream_metadata("a-1", ExpectedVersion::Any, bad);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    }
    let r = store.set_stream_metadata("$$a-1", ExpectedVersion::Any, StreamMetadata::new());
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    let r = store.append("$$a-1", ExpectedVersion::Any, &[ev(1)]);
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Tally {
    sum: u64,
    events: u64,
}

impl Aggregate for Tally {
    type Event = u64;
    type Command = u64;
    type Error = String;
    fn aggregate_type() -> &'static str {
        "Tally"
    }
    fn event_type(_: &u64) -> &'static str {
        "Added"
    }
    fn apply(&mut self, e: &u64) {
        self.sum += e;
        self.events += 1;
    }
    fn handle(&self, c: u64) -> Result<Vec<u64>, String> {
        Ok(vec![c])
    }
}

#[test]
fn aggregates_load_only_live_events_and_deletes_drop_their_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = annal::Options {
        snapshot_every: 4,
        ..common::tiny(1 << 20)
    };
    let store = Store::open(tmp.path(), opts.clone()).unwrap();
    let repo = store.aggregate::<Tally>();
    for i in 1..=10 {
        repo.execute("tally-1", i).unwrap();
    }
    assert_eq!(repo.load("tally-1").unwrap().state.sum, 55);
    assert!(
        store
            .load_snapshot("tally-1", "x", u64::MAX)
            .unwrap()
            .is_none()
    );
    store
        .delete_stream("tally-1", ExpectedVersion::Exact(10), DeleteMode::Soft)
        .unwrap();
    let loaded = repo.load("tally-1").unwrap();
    assert_eq!(
        (loaded.state.clone(), loaded.version),
        (Tally::default(), 10)
    );
    assert_eq!(loaded.snapshot_version, None);
    let done = repo.execute("tally-1", 100).unwrap();
    assert_eq!(done.version, 11);
    assert_eq!(
        done.state,
        Tally {
            sum: 100,
            events: 1
        }
    );
    store.close().unwrap();
    // After a reopen no snapshot or cache brings the deleted events back.
    let store = Store::open(tmp.path(), opts).unwrap();
    let repo = store.aggregate::<Tally>();
    let loaded = repo.load("tally-1").unwrap();
    assert_eq!(
        (loaded.state, loaded.version),
        (
            Tally {
                sum: 100,
                events: 1
            },
            11
        )
    );

    // max_count: the state is the fold of the newest events.
    for i in 1..=6 {
        repo.execute("tally-2", i).unwrap();
    }
    store
        .set_stream_metadata(
            "tally-2",
            ExpectedVersion::Any,
            StreamMetadata::new().max_count(2),
        )
        .unwrap();
    let loaded = repo.load("tally-2").unwrap();
    assert_eq!((loaded.state.sum, loaded.version), (11, 6));
    assert_eq!(repo.execute("tally-2", 7).unwrap().state.sum, 18);
    assert_eq!(repo.load("tally-2").unwrap().state.sum, 13);
}

#[test]
fn framework_snapshots_of_a_deleted_stream_are_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(1 << 20)).unwrap();
    fill(&store, "f-1", 3);
    assert!(store.save_snapshot("f-1", "k", 3, "state").unwrap());
    assert!(store.load_snapshot("f-1", "k", u64::MAX).unwrap().is_some());
    store
        .delete_stream("f-1", ExpectedVersion::Any, DeleteMode::Soft)
        .unwrap();
    assert!(store.load_snapshot("f-1", "k", u64::MAX).unwrap().is_none());
    fill(&store, "f-1", 1);
    assert!(!store.save_snapshot("f-1", "k", 4, "state").unwrap());
}

#[test]
fn subscriptions_skip_hidden_events_live_and_caught_up() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(1 << 20)).unwrap();
    fill(&store, "gone-1", 2);
    fill(&store, "kept-1", 2);
    store
        .delete_stream("gone-1", ExpectedVersion::Any, DeleteMode::Hard)
        .unwrap();
    let mut sub = store.subscribe_all(0).unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(sub.next().unwrap().unwrap().stream.to_string());
    }
    store
        .append("kept-1", ExpectedVersion::Any, &[ev(3)])
        .unwrap();
    seen.push(sub.next().unwrap().unwrap().stream.to_string());
    assert_eq!(seen, ["kept-1", "kept-1", "kept-1"]);
}

#[test]
fn a_subscription_moves_past_long_runs_of_hidden_events() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(1 << 20)).unwrap();
    let many: Vec<EventData> = (0..1500).map(ev).collect();
    store.append("gone-1", ExpectedVersion::Any, &many).unwrap();
    let hour = 3_600_000_000;
    let old: Vec<EventData> = (0..1200)
        .map(|i| ev(i).with_timestamp(now() - 5 * hour))
        .collect();
    store.append("aged-1", ExpectedVersion::Any, &old).unwrap();
    store
        .append("aged-1", ExpectedVersion::Any, &[ev(1)])
        .unwrap();
    store
        .append("kept-1", ExpectedVersion::Any, &[ev(1)])
        .unwrap();
    store
        .delete_stream("gone-1", ExpectedVersion::Any, DeleteMode::Soft)
        .unwrap();
    store
        .set_stream_metadata(
            "aged-1",
            ExpectedVersion::Any,
            StreamMetadata::new().max_age(Duration::from_secs(3600)),
        )
        .unwrap();
    let mut all = store.subscribe_all(0).unwrap();
    let first = all.next_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!((&*first.stream, first.version), ("aged-1", 1201));
    let second = all.next_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(&*second.stream, "kept-1");
    let mut one = store.subscribe_stream("aged-1", 1).unwrap();
    let e = one.next_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(e.version, 1201);
    let mut query = store
        .subscribe_query(Query::items([QueryItem::new().types(["Counted"])]), 0)
        .unwrap();
    let e = query.next_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(e.version, 1201);
}

#[test]
fn a_limit_counts_the_events_returned_not_the_positions_hidden() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(1 << 20)).unwrap();
    // Position 1 is the metadata stream's event, which `$all` never shows.
    store
        .set_stream_metadata(
            "a-1",
            ExpectedVersion::Any,
            StreamMetadata::new().custom(b"z".to_vec()),
        )
        .unwrap();
    fill(&store, "gone-1", 5);
    fill(&store, "a-1", 3);
    store
        .delete_stream("gone-1", ExpectedVersion::Any, DeleteMode::Soft)
        .unwrap();
    let page: Vec<u64> = store
        .read_all(ReadOptions::forward_from(1).limit(2))
        .unwrap()
        .map(|e| e.unwrap().position)
        .collect();
    assert_eq!(page, [7, 8]);
    let back: Vec<u64> = store
        .read_all(ReadOptions::backward().limit(4))
        .unwrap()
        .map(|e| e.unwrap().position)
        .collect();
    assert_eq!(back, [9, 8, 7]);
    let hour = 3_600_000_000;
    for i in 0..6 {
        let t = if i % 2 == 0 { now() - 5 * hour } else { now() };
        store
            .append("t-1", ExpectedVersion::Any, &[ev(i).with_timestamp(t)])
            .unwrap();
    }
    store
        .set_stream_metadata(
            "t-1",
            ExpectedVersion::Any,
            StreamMetadata::new().max_age(Duration::from_secs(3600)),
        )
        .unwrap();
    assert_eq!(
        versions(&store, "t-1", ReadOptions::forward().limit(2)),
        [2, 4]
    );
    assert_eq!(
        versions(&store, "t-1", ReadOptions::backward().limit(2)),
        [6, 4]
    );
}

#[test]
fn append_conditions_do_not_count_hidden_events() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(1 << 20)).unwrap();
    let tagged = |n: u64| EventData::new("T", format!("{n}")).with_tags(["course:1"]);
    store
        .append("kept-1", ExpectedVersion::Any, &[tagged(1)])
        .unwrap();
    let kept = store.last_position();
    for i in 0..3 {
        store
            .append("gone-1", ExpectedVersion::Any, &[tagged(i)])
            .unwrap();
    }
    let q = Query::items([QueryItem::new().tags(["course:1"])]);
    let tx = |after: u64| {
        Transaction::new()
            .append("kept-2", ExpectedVersion::Any, [tagged(9)])
            .condition(annal::AppendCondition::new(q.clone()).after(after))
    };
    // Before the delete the newest match fails a decision made at the kept event.
    let failed = store.commit(tx(kept));
    assert!(
        matches!(failed, Err(Error::AppendConditionFailed { .. })),
        "{failed:?}"
    );
    store
        .delete_stream("gone-1", ExpectedVersion::Any, DeleteMode::Soft)
        .unwrap();
    // Hidden now: a decision that read everything readable holds, before any scavenge.
    store.commit(tx(kept)).unwrap();
}

/// Under `Always`, metadata not yet synced (and so not acknowledged) does not hide events
/// from readers: a crash could still take it back.
#[test]
fn reads_go_by_metadata_once_it_is_acknowledged() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().unwrap();
    let storage = common::FaultyStorage::default();
    let faults = Arc::clone(&storage.faults);
    let store = Arc::new(
        Store::open_with_storage(
            Arc::new(storage),
            tmp.path(),
            annal::Options {
                fsync: annal::FsyncPolicy::Always,
                ..annal::Options::default()
            },
        )
        .unwrap(),
    );
    fill(&store, "s-1", 4);
    faults.hold_sync.store(true, Ordering::SeqCst);
    let setter = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            store
                .set_stream_metadata(
                    "s-1",
                    ExpectedVersion::Any,
                    StreamMetadata::new().max_count(1),
                )
                .unwrap();
        })
    };
    // Written (the store knows it), waiting for its sync: readers still see every event.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stream_metadata("s-1").unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the metadata was never written"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!setter.is_finished());
    assert_eq!(
        versions(&store, "s-1", ReadOptions::forward()),
        [1, 2, 3, 4]
    );
    assert_eq!(all_of(&store, "s-1"), [1, 2, 3, 4]);
    faults.hold_sync.store(false, Ordering::SeqCst);
    setter.join().unwrap();
    assert_eq!(versions(&store, "s-1", ReadOptions::forward()), [4]);
    assert_eq!(all_of(&store, "s-1"), [4]);
}
