//! The async API (feature `async`): appends, transactions and aggregate commands completed
//! by group commit, and subscriptions as streams, on tokio's runtimes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annal::{
    AppendCondition, Error, EventData, ExpectedVersion, FsyncPolicy, Options, Query, QueryItem,
    Store, Transaction,
};
use common::{FaultyStorage, all, ev, stream};
use futures::StreamExt;

fn options(fsync: FsyncPolicy) -> Options {
    Options {
        fsync,
        ..Options::default()
    }
}

/// A store under `Always` on storage that fails or holds its syncs when told to.
fn faulty_store() -> (tempfile::TempDir, Arc<common::Faults>, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::default();
    let faults = Arc::clone(&storage.faults);
    let store =
        Store::open_with_storage(Arc::new(storage), tmp.path(), options(FsyncPolicy::Always))
            .unwrap();
    (tmp, faults, store)
}

#[tokio::test]
async fn async_appends_are_acknowledged_under_every_policy() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Never,
        FsyncPolicy::EveryEvents(3),
        FsyncPolicy::Interval(Duration::from_millis(5)),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), options(policy)).unwrap();
        for n in 1..=10u64 {
            let r = store
                .append_async("s-1", ExpectedVersion::Exact(n - 1), &[ev(n)])
                .await
                .unwrap();
            assert_eq!((r.first_version, r.first_position), (n, n), "{policy:?}");
        }
        let stale = store
            .append_async("s-1", ExpectedVersion::Exact(3), &[ev(11)])
            .await;
        assert!(
            matches!(
                stale,
                Err(Error::WrongExpectedVersion {
                    actual: Some(10),
                    ..
                })
            ),
            "{policy:?}: {stale:?}"
        );
        if policy == FsyncPolicy::Always {
            assert_eq!(store.stats().unwrap().durable_position, 10);
        }
        if let FsyncPolicy::EveryEvents(n) = policy {
            // At most n acknowledged events are unsynced.
            let stats = store.stats().unwrap();
            assert!(
                stats.last_position - stats.durable_position <= n,
                "{stats:?}"
            );
        }
        store.sync_async().await.unwrap();
        assert_eq!(store.stats().unwrap().durable_position, 10, "{policy:?}");
        let payloads: Vec<Vec<u8>> = stream(&store, "s-1")
            .into_iter()
            .map(|e| e.payload.to_vec())
            .collect();
        let want: Vec<Vec<u8>> = (1..=10).map(|n| ev(n).payload.to_vec()).collect();
        assert_eq!(payloads, want, "{policy:?}");
        drop(store);
        let reopened = Store::open(tmp.path(), options(policy)).unwrap();
        assert_eq!(all(&reopened).len(), 10, "{policy:?}");
    }
}

/// Sixteen tasks on one thread, each appending under `Always`: every append is durable when
/// acknowledged, and group commit shares the syncs between the tasks waiting at the time.
#[tokio::test(flavor = "current_thread")]
async fn sixteen_tasks_on_one_thread_share_the_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), options(FsyncPolicy::Always)).unwrap());
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for n in 0..25u64 {
                    let r = store
                        .append_async(&format!("task-{t}"), ExpectedVersion::Exact(n), &[ev(n)])
                        .await
                        .unwrap();
                    // Acknowledged under `Always`: durable.
                    assert!(store.stats().unwrap().durable_position >= r.last_position);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.events, 400);
    // One thread blocking per append would make 400 syncs; tasks waiting together share
    // them. (How many share each one depends on the disk; 4 is far below what 16 give.)
    assert!(
        stats.segment_syncs * 4 <= 400,
        "{} syncs for 400 appends: group commit did not share them",
        stats.segment_syncs
    );
    for t in 0..16 {
        assert_eq!(
            store.stream_version(&format!("task-{t}")).unwrap(),
            Some(25)
        );
    }
}

/// While a sync is stuck, the task waiting for it holds no thread: on a one-thread runtime,
/// other tasks (this test's body among them) keep running, and the append completes once
/// the sync does.
#[tokio::test(flavor = "current_thread")]
async fn a_task_waiting_for_its_sync_leaves_the_thread_to_others() {
    let (_tmp, faults, store) = faulty_store();
    let store = Arc::new(store);
    faults.hold_sync.store(true, Ordering::SeqCst);
    // Should the append block the runtime's only thread, nothing below runs until this
    // watchdog lets the sync go; it then says so, and the test fails.
    let watchdog_fired = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (faults, fired) = (Arc::clone(&faults), Arc::clone(&watchdog_fired));
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(20));
            if faults.hold_sync.swap(false, Ordering::SeqCst) {
                fired.store(true, Ordering::SeqCst);
            }
        })
    };
    let appending = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append_async("held", ExpectedVersion::NoStream, &[ev(1)])
                .await
        })
    };
    let second = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append_async("other", ExpectedVersion::NoStream, &[ev(2)])
                .await
        })
    };
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(
        !watchdog_fired.load(Ordering::SeqCst),
        "an async append blocked the runtime"
    );
    assert!(
        !appending.is_finished() && !second.is_finished(),
        "acknowledged before its sync"
    );
    // Written, not yet acknowledged: readers do not see it under `Always`.
    assert_eq!(store.last_position(), 0);
    faults.hold_sync.store(false, Ordering::SeqCst);
    let a = appending.await.unwrap().unwrap();
    let b = second.await.unwrap().unwrap();
    assert_eq!(
        {
            let mut p = [a.first_position, b.first_position];
            p.sort_unstable();
            p
        },
        [1, 2]
    );
    assert_eq!(store.stats().unwrap().durable_position, 2);
    assert!(!watchdog_fired.load(Ordering::SeqCst));
    drop(watchdog);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_fails_every_waiting_task_and_poisons_the_store() {
    let (_tmp, faults, store) = faulty_store();
    let store = Arc::new(store);
    store
        .append_async("before", ExpectedVersion::NoStream, &[ev(0)])
        .await
        .unwrap();
    faults.fail_sync.store(true, Ordering::SeqCst);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .append_async(&format!("t-{t}"), ExpectedVersion::Any, &[ev(t)])
                    .await
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(
            matches!(r, Err(Error::Io { .. } | Error::Poisoned { .. })),
            "acknowledged without its sync: {r:?}"
        );
    }
    assert!(store.is_poisoned());
    let after = store
        .append_async("after", ExpectedVersion::Any, &[ev(9)])
        .await;
    assert!(matches!(after, Err(Error::Poisoned { .. })), "{after:?}");
    assert_eq!(
        store.last_position(),
        1,
        "only the synced append is visible"
    );
}

#[tokio::test]
async fn async_transactions_and_conditions() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), options(FsyncPolicy::Always)).unwrap();
    let r = store
        .commit_async(
            Transaction::new()
                .append(
                    "account-a",
                    ExpectedVersion::NoStream,
                    [EventData::new("Debited", "10").with_tags(["account:a"])],
                )
                .append(
                    "account-b",
                    ExpectedVersion::NoStream,
                    [EventData::new("Credited", "10").with_tags(["account:b"])],
                )
                .snapshot("account-a", "Balance", "-10"),
        )
        .await
        .unwrap();
    assert_eq!((r.first_position, r.last_position), (1, 2));
    let snap = store
        .load_snapshot("account-a", "Balance", u64::MAX)
        .unwrap()
        .expect("saved with the transaction");
    assert_eq!((snap.version, snap.state.as_slice()), (1, &b"-10"[..]));
    let about_a = Query::items([QueryItem::new().tags(["account:a"])]);
    let stale = store
        .commit_async(
            Transaction::new()
                .append(
                    "account-a",
                    ExpectedVersion::Any,
                    [EventData::new("Debited", "1")],
                )
                .condition(AppendCondition::new(about_a.clone()).after(0)),
        )
        .await;
    assert!(
        matches!(stale, Err(Error::AppendConditionFailed { position: 1, .. })),
        "{stale:?}"
    );
    store
        .commit_async(
            Transaction::new()
                .append(
                    "account-a",
                    ExpectedVersion::Exact(1),
                    [EventData::new("Debited", "1")],
                )
                .condition(AppendCondition::new(about_a).after(2)),
        )
        .await
        .unwrap();
    assert_eq!(store.last_position(), 3);
}

#[tokio::test]
async fn a_retried_async_append_returns_the_original() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), options(FsyncPolicy::Always)).unwrap();
    let events = [ev(1).with_id(7), ev(2).with_id(8)];
    let first = store
        .append_async("s", ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    let again = store
        .append_async("s", ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    assert!(again.deduplicated && !first.deduplicated);
    assert_eq!(
        (again.first_position, again.last_position),
        (first.first_position, first.last_position)
    );
    assert_eq!(all(&store).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_streams_history_then_live_events_then_ends_at_close() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), options(FsyncPolicy::Always)).unwrap());
    for n in 1..=3 {
        store.append("s", ExpectedVersion::Any, &[ev(n)]).unwrap();
    }
    let mut sub = store.subscribe_all(2).unwrap().into_stream();
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for n in 4..=40 {
                store
                    .append_async(&format!("s-{}", n % 4), ExpectedVersion::Any, &[ev(n)])
                    .await
                    .unwrap();
                if n % 8 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    let mut positions = Vec::new();
    while positions.len() < 39 {
        let e = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("a live event was not delivered")
            .expect("the stream ended early")
            .unwrap();
        positions.push(e.position);
    }
    writer.await.unwrap();
    assert_eq!(positions, (2..=40).collect::<Vec<u64>>());
    // Nothing more: the stream waits (pending), it does not end.
    let idle = tokio::time::timeout(Duration::from_millis(20), sub.next()).await;
    assert!(idle.is_err(), "{idle:?}");
    // A stream waiting at the close ends once the store is gone.
    let waiting =
        tokio::spawn(async move { sub.next_async().await.map(|e| e.map(|e| e.position)) });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let store = Arc::try_unwrap(store).expect("the writer task is done");
    store.close().unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("close did not wake the stream")
        .unwrap();
    assert!(end.is_none(), "{end:?}");
}

#[tokio::test]
async fn query_and_durable_subscriptions_stream_too() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), options(FsyncPolicy::Never)).unwrap();
    for n in 1..=6u64 {
        let e = EventData::new(if n % 2 == 0 { "Even" } else { "Odd" }, n.to_string());
        store
            .append_async("s", ExpectedVersion::Any, &[e])
            .await
            .unwrap();
    }
    let evens = Query::items([QueryItem::new().types(["Even"])]);
    let sub = store.subscribe_query(evens, 1).unwrap().into_stream();
    let got: Vec<u64> = sub.take(3).map(|e| e.unwrap().position).collect().await;
    assert_eq!(got, [2, 4, 6]);
    let mut durable = store.durable_subscription("relay").unwrap().into_stream();
    let first = durable.next_async().await.unwrap().unwrap();
    let second = durable.next().await.unwrap().unwrap();
    assert_eq!((first.position, second.position), (1, 2));
    durable.ack(2).unwrap();
    drop(durable);
    let mut resumed = store.durable_subscription("relay").unwrap();
    assert_eq!(resumed.next_async().await.unwrap().unwrap().position, 3);
}

/// A future dropped before its sync (a cancelled request): the append was written, so it may
/// be in the log, as after a crash before the acknowledgement; nothing else is disturbed.
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_append_future_leaves_the_store_working() {
    let (_tmp, faults, store) = faulty_store();
    faults.hold_sync.store(true, Ordering::SeqCst);
    {
        let events = [ev(1)];
        let fut = store.append_async("cancelled", ExpectedVersion::NoStream, &events);
        let timed_out = tokio::time::timeout(Duration::from_millis(10), fut).await;
        assert!(timed_out.is_err(), "acknowledged before its sync");
    }
    faults.hold_sync.store(false, Ordering::SeqCst);
    let r = store
        .append_async("next", ExpectedVersion::NoStream, &[ev(2)])
        .await
        .unwrap();
    assert_eq!(r.first_position, 2, "the cancelled append was written");
    assert_eq!(store.stream_version("cancelled").unwrap(), Some(1));
}

mod counter {
    use annal::Aggregate;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Default, Clone, Serialize, Deserialize)]
    pub struct Counter {
        pub total: u64,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Added(pub u64);

    impl Aggregate for Counter {
        type Event = Added;
        type Command = u64;
        type Error = String;
        fn aggregate_type() -> &'static str {
            "counter"
        }
        fn event_type(_: &Added) -> &'static str {
            "Added"
        }
        fn apply(&mut self, e: &Added) {
            self.total += e.0;
        }
        fn handle(&self, add: u64) -> Result<Vec<Added>, String> {
            if self.total + add > 100 {
                return Err(format!("{} + {add} is over 100", self.total));
            }
            Ok(vec![Added(add)])
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_commands_run_async_and_retry_on_conflicts() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), options(FsyncPolicy::Always)).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let repo = store.aggregate::<counter::Counter>().max_retries(100);
                for _ in 0..5 {
                    repo.execute_async("counter-1", 2).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let repo = store.aggregate::<counter::Counter>();
    assert_eq!(repo.load("counter-1").unwrap().state.total, 80);
    let refused = repo.execute_async("counter-1", 30).await;
    assert!(
        matches!(refused, Err(annal::ExecuteError::Domain(_))),
        "{refused:?}"
    );
    assert_eq!(store.stream_version("counter-1").unwrap(), Some(40));
}

/// A conflict returns once the events it conflicts with are acknowledged: a caller that
/// reloads then reads them (under `Always` their sync may still be running when the
/// conflicting write is refused).
#[tokio::test(flavor = "current_thread")]
async fn a_conflict_returns_once_the_winning_append_is_readable() {
    let (_tmp, faults, store) = faulty_store();
    let store = Arc::new(store);
    faults.hold_sync.store(true, Ordering::SeqCst);
    let winner = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append_async("cart-1", ExpectedVersion::NoStream, &[ev(1)])
                .await
        })
    };
    let loser = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append_async("cart-1", ExpectedVersion::NoStream, &[ev(2)])
                .await
        })
    };
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(!winner.is_finished());
    assert!(
        !loser.is_finished(),
        "the conflict returned before the winner was readable"
    );
    faults.hold_sync.store(false, Ordering::SeqCst);
    let lost = loser.await.unwrap();
    assert!(
        matches!(
            lost,
            Err(Error::WrongExpectedVersion {
                actual: Some(1),
                ..
            })
        ),
        "{lost:?}"
    );
    // Readable by the time the conflict is reported.
    assert_eq!(stream(&store, "cart-1").len(), 1);
    winner.await.unwrap().unwrap();
}
