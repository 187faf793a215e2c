//! Transactions: several streams in one atomic frame, expected versions on streams written and
//! not written, DCB append conditions, retries, and threads racing conditional appends.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use annal::{
    AppendCondition, Error, EventData, ExpectedVersion, Health, Options, Query, QueryItem,
    ReadOptions, Store, Transaction,
};

fn ev(t: &str, n: u64) -> EventData {
    EventData::new(t, format!("{n}"))
}

fn versions(store: &Store, stream: &str) -> Vec<(u64, u64)> {
    store
        .read_stream(stream, ReadOptions::forward())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.version, e.position)
        })
        .collect()
}

#[test]
fn a_transaction_is_one_range_of_positions_over_its_streams_and_survives_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = common::tiny(2048);
    let store = Store::open(tmp.path(), opts.clone()).unwrap();
    for round in 0..40u64 {
        let r = store
            .commit(
                Transaction::new()
                    .append("account-a", ExpectedVersion::Any, [ev("Debited", round)])
                    .append(
                        "account-b",
                        ExpectedVersion::Any,
                        [ev("Credited", round), ev("Noted", round)],
                    )
                    .append(
                        "ledger",
                        ExpectedVersion::Exact(round),
                        [ev("Moved", round)],
                    ),
            )
            .unwrap();
        assert_eq!(r.first_position, round * 5 + 1);
        assert_eq!(r.last_position, round * 5 + 4);
        assert_eq!(r.appends.len(), 3);
        assert_eq!(
            (r.appends[1].first_version, r.appends[1].last_version),
            (round * 2 + 1, round * 2 + 2)
        );
        assert_eq!(r.appends[2].first_position, round * 5 + 4);
        // A single append between transactions.
        store
            .append("other", ExpectedVersion::Any, &[ev("X", round)])
            .unwrap();
    }
    let check = |store: &Store| {
        assert_eq!(store.last_position(), 200);
        let b = versions(store, "account-b");
        assert_eq!(b.len(), 80);
        assert_eq!(b[2], (3, 7));
        let all: Vec<(String, u64)> = store
            .read_all(ReadOptions::forward())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.stream.to_string(), e.version)
            })
            .collect();
        assert_eq!(
            all[5..10],
            [
                ("account-a".to_string(), 2),
                ("account-b".to_string(), 3),
                ("account-b".to_string(), 4),
                ("ledger".to_string(), 2),
                ("other".to_string(), 2)
            ]
        );
        let back: Vec<u64> = store
            .read_all(ReadOptions::backward().limit(6))
            .unwrap()
            .map(|e| e.unwrap().position)
            .collect();
        assert_eq!(back, [200, 199, 198, 197, 196, 195]);
        assert_eq!(
            store
                .read_event_type("Credited", ReadOptions::forward())
                .unwrap()
                .count(),
            40
        );
    };
    check(&store);
    store.close().unwrap();
    // Sealed segments from checkpoints, the active one by a scan; then verify.
    let store = Store::open(tmp.path(), opts.clone()).unwrap();
    assert!(store.stats().unwrap().segments > 3);
    check(&store);
    store.close().unwrap();
    let report = annal::verify(&annal::storage::FsStorage::default(), tmp.path()).unwrap();
    assert_eq!(report.health(), Health::Healthy, "{:?}", report.findings);
    assert_eq!(report.events, 200);
}

#[test]
fn a_failed_check_writes_nothing_and_names_the_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Options::default()).unwrap();
    store
        .append("limits", ExpectedVersion::NoStream, &[ev("Set", 1)])
        .unwrap();
    let tx = |expect: ExpectedVersion| {
        Transaction::new()
            .append("a", ExpectedVersion::NoStream, [ev("T", 1)])
            .append("b", ExpectedVersion::NoStream, [ev("T", 2)])
            .expect("limits", expect)
    };
    match store.commit(tx(ExpectedVersion::Exact(2))) {
        Err(Error::WrongExpectedVersion { stream, actual, .. }) => {
            assert_eq!((stream.as_str(), actual), ("limits", Some(1)))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.last_position(), 1, "nothing written");
    store.commit(tx(ExpectedVersion::Exact(1))).unwrap();
    match store.commit(tx(ExpectedVersion::Exact(1))) {
        Err(Error::WrongExpectedVersion { stream, .. }) => assert_eq!(stream, "a"),
        other => panic!("{other:?}"),
    }
    for (bad, why) in [
        (Transaction::new(), "at least one stream"),
        (
            Transaction::new()
                .append("a", ExpectedVersion::Any, [ev("T", 1)])
                .append("a", ExpectedVersion::Any, [ev("T", 2)]),
            "twice",
        ),
        (
            Transaction::new()
                .append("a", ExpectedVersion::Any, [ev("T", 1)])
                .expect("a", ExpectedVersion::Any),
            "both appends to and expects",
        ),
        (
            Transaction::new()
                .append("a", ExpectedVersion::Any, [ev("T", 1).with_id(9)])
                .append("b", ExpectedVersion::Any, [ev("T", 1).with_id(9)]),
            "id",
        ),
        (
            Transaction::new().append("a", ExpectedVersion::Any, []),
            "no events",
        ),
    ] {
        let err = store.commit(bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(_)) && err.to_string().contains(why),
            "{err}"
        );
    }
    assert_eq!(store.last_position(), 3);
}

#[test]
fn an_append_condition_fails_on_a_matching_event_after_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Options::default()).unwrap();
    let course = |t: &str| EventData::new(t, "{}").with_tags(["course:c1"]);
    let q = Query::items([QueryItem::new().tags(["course:c1"])]);
    let decide = |after: Option<u64>| {
        let mut c = AppendCondition::new(q.clone());
        if let Some(a) = after {
            c = c.after(a);
        }
        Transaction::new()
            .append(
                "course-c1",
                ExpectedVersion::Any,
                [course("StudentSubscribed")],
            )
            .condition(c)
    };
    // Nothing matches yet: a condition without a position passes.
    store.commit(decide(None)).unwrap();
    match store.commit(decide(None)) {
        Err(Error::AppendConditionFailed { position, after }) => {
            assert_eq!((position, after), (1, None));
        }
        other => panic!("{other:?}"),
    }
    // Unrelated events do not fail it.
    store
        .append(
            "other",
            ExpectedVersion::Any,
            &[EventData::new("StudentSubscribed", "{}").with_tags(["course:c2"])],
        )
        .unwrap();
    store.commit(decide(Some(1))).unwrap();
    match store.commit(decide(Some(1))) {
        Err(Error::AppendConditionFailed { position, .. }) => assert_eq!(position, 3),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.last_position(), 3);
    // Query::all: any event after the position fails it.
    let all = Transaction::new()
        .append("x", ExpectedVersion::Any, [ev("T", 1)])
        .condition(AppendCondition::new(Query::all()).after(2));
    assert!(matches!(
        store.commit(all),
        Err(Error::AppendConditionFailed { position: 3, .. })
    ));
}

#[test]
fn a_retried_transaction_is_recognised_whole_and_only_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Options::default()).unwrap();
    let tx = || {
        Transaction::new()
            .append("a", ExpectedVersion::NoStream, [ev("T", 1).with_id(1)])
            .append(
                "b",
                ExpectedVersion::NoStream,
                [ev("T", 2).with_id(2), ev("T", 3).with_id(3)],
            )
    };
    let first = store.commit(tx()).unwrap();
    assert!(!first.deduplicated);
    let again = store.commit(tx()).unwrap();
    assert!(again.deduplicated);
    assert_eq!(
        (
            again.first_position,
            again.last_position,
            again.appends.len()
        ),
        (1, 3, 2)
    );
    assert_eq!(store.last_position(), 3);
    // The same ids with other contents are another event.
    let changed = Transaction::new()
        .append("a", ExpectedVersion::NoStream, [ev("T", 9).with_id(1)])
        .append(
            "b",
            ExpectedVersion::NoStream,
            [ev("T", 2).with_id(2), ev("T", 3).with_id(3)],
        );
    assert!(matches!(store.commit(changed), Err(Error::IdReused { .. })));
    // Part of it is not a retry of it: a conflict.
    let part = Transaction::new().append(
        "b",
        ExpectedVersion::NoStream,
        [ev("T", 2).with_id(2), ev("T", 3).with_id(3)],
    );
    assert!(matches!(
        store.commit(part),
        Err(Error::WrongExpectedVersion { .. })
    ));
    // Two single appends that happen to be adjacent are not one transaction.
    store
        .append("c", ExpectedVersion::NoStream, &[ev("T", 4).with_id(4)])
        .unwrap();
    store
        .append("d", ExpectedVersion::NoStream, &[ev("T", 5).with_id(5)])
        .unwrap();
    let glued = Transaction::new()
        .append("c", ExpectedVersion::NoStream, [ev("T", 4).with_id(4)])
        .append("d", ExpectedVersion::NoStream, [ev("T", 5).with_id(5)]);
    assert!(matches!(
        store.commit(glued),
        Err(Error::WrongExpectedVersion { .. })
    ));
    assert_eq!(store.last_position(), 5);
}

/// Threads race decisions over overlapping consistency boundaries: each reads the last event
/// of its tag, then appends with a condition after it. Every winner must have seen the event
/// before it: in the log, each event's recorded `after` is the previous event of its tag.
#[test]
fn racing_conditional_appends_let_exactly_the_non_conflicting_ones_win() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(1 << 16)).unwrap();
    let tags = ["k0", "k1", "k2"];
    let wins = std::sync::atomic::AtomicU64::new(0);
    let losses = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..6usize {
            let (store, wins, losses) = (&store, &wins, &losses);
            s.spawn(move || {
                for i in 0..150usize {
                    // Overlapping boundaries: one tag, or two of them.
                    let mine: Vec<&str> = if i % 3 == 0 {
                        vec![tags[t % 3], tags[(t + 1) % 3]]
                    } else {
                        vec![tags[t % 3]]
                    };
                    let q = Query::items(mine.iter().map(|tag| QueryItem::new().tags([*tag])));
                    let seen = store
                        .read_query(&q, ReadOptions::backward().limit(1))
                        .unwrap()
                        .next()
                        .map_or(0, |e| e.unwrap().position);
                    let e = EventData::new("Decided", format!("{seen}")).with_tags(mine.clone());
                    let tx = Transaction::new()
                        .append(format!("t-{t}"), ExpectedVersion::Any, [e])
                        .condition(AppendCondition::new(q).after(seen));
                    match store.commit(tx) {
                        Ok(_) => wins.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        Err(Error::AppendConditionFailed { position, .. }) => {
                            assert!(position > seen);
                            losses.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        }
                        Err(e) => panic!("{e}"),
                    };
                }
            });
        }
    });
    let events: Vec<annal::RecordedEvent> = store
        .read_all(ReadOptions::forward())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(
        events.len() as u64,
        wins.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(
        losses.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no race happened"
    );
    // Each winner's decision saw the latest event of its boundary.
    for e in &events {
        let seen: u64 = std::str::from_utf8(&e.payload).unwrap().parse().unwrap();
        let latest_before = events
            .iter()
            .filter(|o| o.position < e.position && o.tags.iter().any(|t| e.tags.contains(t)))
            .map(|o| o.position)
            .max()
            .unwrap_or(0);
        assert_eq!(
            seen, latest_before,
            "event {} decided on a stale read",
            e.position
        );
    }
}

#[test]
fn snapshots_for_any_framework_are_saved_alone_or_with_a_transaction_and_checked_on_load() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(1 << 16)).unwrap();
    for n in 1..=10 {
        store
            .append("order-1", ExpectedVersion::Any, &[ev("Added", n)])
            .unwrap();
    }
    assert!(
        store
            .save_snapshot("order-1", "Order/v2", 4, "state@4")
            .unwrap()
    );
    assert!(
        store
            .save_snapshot("order-1", "Order/v2", 8, "state@8")
            .unwrap()
    );
    assert!(
        !store.save_snapshot("order-1", "Order/v2", 11, "x").unwrap(),
        "no version 11"
    );
    assert!(!store.save_snapshot("nothing", "Order/v2", 1, "x").unwrap());
    let at = |v: u64| store.load_snapshot("order-1", "Order/v2", v).unwrap();
    assert_eq!(
        at(u64::MAX).map(|s| (s.version, s.state)),
        Some((8, b"state@8".to_vec()))
    );
    assert_eq!(at(7).map(|s| s.version), Some(4));
    assert_eq!(at(3), None);
    assert_eq!(
        store
            .load_snapshot("order-1", "Order/v1", u64::MAX)
            .unwrap(),
        None
    );

    // With a transaction: the state after its events, at the version it brings the stream to.
    let r = store
        .commit(
            Transaction::new()
                .append("order-1", ExpectedVersion::Exact(10), [ev("Added", 11)])
                .append("audit", ExpectedVersion::Any, [ev("Noted", 1)])
                .snapshot("order-1", "Order/v2", "state@11"),
        )
        .unwrap();
    assert_eq!(r.appends[0].last_version, 11);
    assert_eq!(
        at(u64::MAX).map(|s| (s.version, s.state)),
        Some((11, b"state@11".to_vec()))
    );
    let stray = Transaction::new()
        .append("a", ExpectedVersion::Any, [ev("T", 1)])
        .snapshot("b", "K", "x");
    assert!(matches!(
        store.commit(stray),
        Err(Error::InvalidArgument(_))
    ));
    store.close().unwrap();

    // A snapshot that outlived its events is never returned: lose the transaction's frame
    // (and repair, accepting the loss), append another version 11: not that snapshot.
    let store = Store::open(tmp.path(), common::tiny(1 << 16)).unwrap();
    assert_eq!(
        store
            .load_snapshot("order-1", "Order/v2", u64::MAX)
            .unwrap()
            .map(|s| s.version),
        Some(11),
        "kept across a reopen"
    );
    store.close().unwrap();
    let seg = common::segment_files(tmp.path()).pop().unwrap();
    let starts = common::frame_starts(&seg);
    let tx_frame = starts[starts.len() - 1];
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[tx_frame..].fill(0);
    std::fs::write(&seg, bytes).unwrap();
    let fs = annal::storage::FsStorage::default();
    annal::repair(&fs, tmp.path(), annal::RepairOptions { accept_loss: true }).unwrap();
    let store = Store::open(tmp.path(), common::tiny(1 << 16)).unwrap();
    assert_eq!(store.last_position(), 10, "the transaction's frame is gone");
    store
        .append(
            "order-1",
            ExpectedVersion::Exact(10),
            [ev("Other", 11)].as_slice(),
        )
        .unwrap();
    let left = store
        .load_snapshot("order-1", "Order/v2", u64::MAX)
        .unwrap();
    assert!(
        left.as_ref().is_none_or(|s| s.version <= 10),
        "version 11 is another event now: {left:?}"
    );
    store.close().unwrap();
}

#[test]
fn a_retry_that_lists_its_streams_in_another_order_is_still_the_same_transaction() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Options::default()).unwrap();
    let a = || ("a", ExpectedVersion::Any, [ev("T", 1).with_id(1)]);
    let b = || ("b", ExpectedVersion::Any, [ev("T", 2).with_id(2)]);
    let (sa, ea, va) = a();
    let (sb, eb, vb) = b();
    let first = store
        .commit(Transaction::new().append(sa, ea, va).append(sb, eb, vb))
        .unwrap();
    let (sa, ea, va) = a();
    let (sb, eb, vb) = b();
    let again = store
        .commit(Transaction::new().append(sb, eb, vb).append(sa, ea, va))
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(store.last_position(), 2, "nothing written twice");
    assert_eq!(
        (again.first_position, again.last_position),
        (first.first_position, first.last_position)
    );
    // Its appends in its own order: b first.
    assert_eq!(
        again.appends[0],
        annal::AppendResult {
            deduplicated: true,
            ..first.appends[1]
        }
    );
}

#[test]
fn a_frameworks_snapshots_never_crowd_out_a_repositorys_of_the_same_name() {
    #[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
    struct Counter(u64);
    impl annal::Aggregate for Counter {
        type Event = u64;
        type Command = u64;
        type Error = String;
        fn aggregate_type() -> &'static str {
            "Counter"
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
    let tmp = tempfile::tempdir().unwrap();
    let options = Options::default().snapshot_every(5).aggregate_cache(0);
    let store = Store::open(tmp.path(), options).unwrap();
    let counters = store.aggregate::<Counter>();
    for n in 1..=10 {
        counters.execute("counter-1", n).unwrap();
    }
    counters.load("counter-1").unwrap();
    // A framework saves many of its own under the same name.
    for v in 1..=10 {
        assert!(store.save_snapshot("counter-1", "Counter", v, "x").unwrap());
    }
    let loaded = counters.load_at("counter-1", 10).unwrap();
    assert_eq!(
        loaded.snapshot_version,
        Some(10),
        "the repository's snapshot is still there"
    );
    assert_eq!(loaded.state.0, 55);
    assert_eq!(
        store
            .load_snapshot("counter-1", "Counter", 7)
            .unwrap()
            .map(|s| s.version),
        Some(7)
    );
}

/// A conflict found while the winning append's sync still runs returns once that sync is
/// done, so the loser's reload reads the winner: for a wrong expected version and for a
/// failed append condition, from blocking calls.
#[test]
fn a_blocking_conflict_returns_once_the_winner_is_readable() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let storage = common::FaultyStorage::default();
    let faults = std::sync::Arc::clone(&storage.faults);
    let store = std::sync::Arc::new(
        Store::open_with_storage(std::sync::Arc::new(storage), tmp.path(), Options::default())
            .unwrap(),
    );
    faults.hold_sync.store(true, Ordering::SeqCst);
    let syncs = faults.syncs.load(Ordering::SeqCst);
    let winner = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || {
            store.append(
                "course-1",
                ExpectedVersion::NoStream,
                &[EventData::new("Opened", "{}").with_tags(["course:1"])],
            )
        })
    };
    // Written, and its sync started (and held).
    while faults.syncs.load(Ordering::SeqCst) == syncs {
        std::thread::yield_now();
    }
    let (done, finished) = std::sync::mpsc::channel();
    let loser = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || {
            let stale = store.append(
                "course-1",
                ExpectedVersion::NoStream,
                &[EventData::new("Opened", "{}")],
            );
            let condition = store.commit(
                Transaction::new()
                    .append(
                        "course-2",
                        ExpectedVersion::Any,
                        [EventData::new("Opened", "{}")],
                    )
                    .condition(
                        AppendCondition::new(Query::items([QueryItem::new().tags(["course:1"])]))
                            .after(0),
                    ),
            );
            let _ = done.send(());
            (stale, condition)
        })
    };
    assert!(
        finished.recv_timeout(Duration::from_millis(100)).is_err(),
        "a conflict returned before the winner was readable"
    );
    faults.hold_sync.store(false, Ordering::SeqCst);
    let (stale, condition) = loser.join().unwrap();
    assert!(
        matches!(
            stale,
            Err(Error::WrongExpectedVersion {
                actual: Some(1),
                ..
            })
        ),
        "{stale:?}"
    );
    assert!(
        matches!(
            condition,
            Err(Error::AppendConditionFailed { position: 1, .. })
        ),
        "{condition:?}"
    );
    winner.join().unwrap().unwrap();
    assert_eq!(store.last_position(), 1);
}
