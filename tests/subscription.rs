//! Subscriptions, durable subscriptions and projections.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use annal::{Error, EventData, ExpectedVersion, Projection, RecordedEvent, Store};
use common::*;
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(20);

fn append_n(store: &Store, stream: &str, n: u64) {
    for i in 0..n {
        store
            .append(stream, ExpectedVersion::Any, &[ev(i)])
            .unwrap();
    }
}

#[test]
fn catch_up_then_live_under_concurrent_appends_exactly_once_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), tiny(2048)).unwrap());
    const TOTAL: u64 = 3000;
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            let mut k = 0u64;
            while n < TOTAL {
                k += 1;
                let batch = (k % 3 + 1).min(TOTAL - n);
                let events: Vec<_> = (0..batch).map(|i| ev(n + i)).collect();
                store
                    .append(&format!("s-{}", k % 5), ExpectedVersion::Any, &events)
                    .unwrap();
                n += batch;
                if k.is_multiple_of(50) {
                    std::thread::yield_now();
                }
            }
        })
    };
    // Subscribers start at different points of the log and at different moments.
    let subscribers: Vec<_> = (0..8u64)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i * 3));
                let from = 1 + (i * 397) % 2000;
                let mut sub = store.subscribe_all(from).unwrap();
                let mut expected = from;
                while expected <= TOTAL {
                    let e = sub
                        .next_timeout(WAIT)
                        .unwrap()
                        .expect("no event within the timeout");
                    assert_eq!(e.position, expected, "subscriber from {from}");
                    expected += 1;
                }
                assert_eq!(sub.try_next().unwrap(), None);
            })
        })
        .collect();
    writer.join().unwrap();
    for s in subscribers {
        s.join().unwrap();
    }
}

#[test]
fn stream_and_filtered_subscriptions() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    for i in 0..30u64 {
        let stream = if i % 3 == 0 {
            format!("cart-{}", i % 2)
        } else {
            format!("order-{i}")
        };
        store
            .append(&stream, ExpectedVersion::Any, &[ev(i)])
            .unwrap();
    }
    let mut by_stream = store.subscribe_stream("cart-0", 2).unwrap();
    let versions: Vec<u64> = std::iter::from_fn(|| by_stream.try_next().unwrap())
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [2, 3, 4, 5]);
    let mut carts = store.subscribe_all(1).unwrap().stream_prefix("cart-");
    let got: Vec<RecordedEvent> = std::iter::from_fn(|| carts.try_next().unwrap()).collect();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|e| e.stream.starts_with("cart-")));
    assert!(got.windows(2).all(|w| w[0].position < w[1].position));
    let mut typed = store
        .subscribe_all(1)
        .unwrap()
        .event_types(["T1"])
        .stream_prefix("order-");
    let got: Vec<RecordedEvent> = std::iter::from_fn(|| typed.try_next().unwrap()).collect();
    assert!(
        !got.is_empty()
            && got
                .iter()
                .all(|e| e.event_type == "T1" && e.stream.starts_with("order-"))
    );
    // A live event for the stream subscription.
    store
        .append("cart-0", ExpectedVersion::Any, &[ev(99)])
        .unwrap();
    assert_eq!(by_stream.next_timeout(WAIT).unwrap().unwrap().version, 6);
    assert_eq!(
        by_stream.next_timeout(Duration::from_millis(20)).unwrap(),
        None
    );
}

#[test]
fn subscriptions_end_cleanly_when_the_store_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    append_n(&store, "s", 3);
    let sub = store.subscribe_all(1).unwrap();
    let reader = std::thread::spawn(move || sub.map(|e| e.unwrap().position).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(50));
    store.append("s", ExpectedVersion::Any, &[ev(9)]).unwrap();
    store.close().unwrap();
    assert_eq!(reader.join().unwrap(), [1, 2, 3, 4]);
}

#[test]
fn slow_subscribers_never_block_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(1 << 16)).unwrap();
    let mut idle = store.subscribe_all(1).unwrap();
    append_n(&store, "s", 5000);
    // The idle subscriber held no queue; it reads everything from the log when it gets to it.
    let mut n = 0;
    while let Some(e) = idle.try_next().unwrap() {
        n += 1;
        assert_eq!(e.position, n);
    }
    assert_eq!(n, 5000);
}

#[test]
fn durable_subscription_resumes_after_its_ack_at_least_once() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = tiny(4096).fsync(annal::FsyncPolicy::Always);
    {
        let store = Store::open(tmp.path(), opts.clone()).unwrap();
        append_n(&store, "s", 10);
        let mut sub = store.durable_subscription("shipping").unwrap();
        assert!(matches!(
            store.durable_subscription("shipping"),
            Err(Error::InvalidArgument(_))
        ));
        for _ in 0..6 {
            sub.next_timeout(WAIT).unwrap().unwrap();
        }
        sub.ack(4).unwrap(); // handled 1..=4; 5 and 6 were delivered but not acknowledged
        assert!(
            matches!(sub.ack(7), Err(Error::InvalidArgument(_))),
            "ack beyond delivery"
        );
        sub.ack(2).unwrap(); // going back is a no-op
        assert_eq!(sub.acked_position(), 4);
        let stats = store.stats().unwrap();
        assert_eq!(stats.durable_subscriptions.len(), 1);
        assert_eq!(
            (
                stats.durable_subscriptions[0].acked_position,
                stats.durable_subscriptions[0].lag
            ),
            (4, 6)
        );
        // A crash now: the directory as the disk holds it, copied while the store is open.
        let crash = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(tmp.path()).unwrap() {
            let p = f.unwrap().path();
            std::fs::copy(&p, crash.path().join(p.file_name().unwrap())).unwrap();
        }
        std::fs::remove_file(crash.path().join("LOCK")).unwrap();
        let crashed = Store::open(crash.path(), opts.clone()).unwrap();
        let mut again = crashed.durable_subscription("shipping").unwrap();
        assert_eq!(again.next_timeout(WAIT).unwrap().unwrap().position, 5);
    }
    let store = Store::open(tmp.path(), opts).unwrap();
    let mut sub = store.durable_subscription("shipping").unwrap();
    let redelivered: Vec<u64> = (0..6)
        .map(|_| sub.next_timeout(WAIT).unwrap().unwrap().position)
        .collect();
    assert_eq!(redelivered, [5, 6, 7, 8, 9, 10]);
    sub.ack(10).unwrap();
    drop(sub);
    assert_eq!(store.durable_subscriptions().unwrap()[0].lag, 0);
    assert!(store.delete_durable_subscription("shipping").unwrap());
    assert!(!store.delete_durable_subscription("shipping").unwrap());
    assert!(store.durable_subscriptions().unwrap().is_empty());
    // Recreated: from the beginning.
    let mut fresh = store.durable_subscription("shipping").unwrap();
    assert_eq!(fresh.next_timeout(WAIT).unwrap().unwrap().position, 1);
    assert!(matches!(
        store.durable_subscription("no/slashes"),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn an_ack_past_a_lost_log_tail_is_pulled_back() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = Store::open(tmp.path(), tiny(4096)).unwrap();
        // STATE as the open wrote it: what a power loss before the clean close leaves.
        let state_at_open = std::fs::read(tmp.path().join("STATE")).unwrap();
        append_n(&store, "s", 7);
        store.sync().unwrap();
        let seg = segment_files(tmp.path()).pop().unwrap();
        let keep = data_end(&seg);
        append_n(&store, "s", 3);
        let mut sub = store.durable_subscription("relay").unwrap();
        for _ in 0..10 {
            sub.next_timeout(WAIT).unwrap().unwrap();
        }
        sub.ack(10).unwrap();
        drop(sub);
        drop(store);
        // Power loss: the ack reached the disk, the last three events did not.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[keep..].fill(0);
        std::fs::write(&seg, bytes).unwrap();
        std::fs::write(tmp.path().join("STATE"), state_at_open).unwrap();
    }
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    assert_eq!(store.last_position(), 7);
    assert_eq!(store.durable_subscriptions().unwrap()[0].acked_position, 7);
    append_n(&store, "t", 3);
    let mut sub = store.durable_subscription("relay").unwrap();
    let got: Vec<_> = (0..3)
        .map(|_| sub.next_timeout(WAIT).unwrap().unwrap())
        .collect();
    assert!(
        got.iter().all(|e| e.stream.as_ref() == "t"),
        "new events at reused positions were skipped"
    );
}

/// Seed 000's query plain CRUD can't answer: products added to a cart and removed again.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AddedThenRemoved {
    in_carts: std::collections::BTreeMap<String, u32>,
    removed: std::collections::BTreeMap<String, u32>,
}

impl Projection for AddedThenRemoved {
    const NAME: &'static str = "added-then-removed";
    fn apply(&mut self, e: &RecordedEvent) {
        let product = String::from_utf8_lossy(&e.payload).to_string();
        match e.event_type.as_str() {
            "ItemAdded" => *self.in_carts.entry(product).or_default() += 1,
            "ItemRemoved" => *self.removed.entry(product).or_default() += 1,
            _ => {}
        }
    }
}

/// The same fold under another name and version, to compare a resumed run with a rebuild.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Rebuilt(AddedThenRemoved);

impl Projection for Rebuilt {
    const NAME: &'static str = "rebuilt";
    const VERSION: u32 = 7;
    fn apply(&mut self, e: &RecordedEvent) {
        self.0.apply(e)
    }
}

fn cart_events(store: &Store, from: u64, to: u64) {
    for i in from..to {
        let ty = if i % 4 == 3 {
            "ItemRemoved"
        } else {
            "ItemAdded"
        };
        let product = format!("p{}", i % 7);
        store
            .append(
                &format!("cart-{}", i % 13),
                ExpectedVersion::Any,
                &[EventData::new(ty, product.into_bytes())],
            )
            .unwrap();
    }
}

#[test]
fn projections_resume_from_checkpoints_and_equal_a_full_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = tiny(8192);
    {
        let store = Store::open(tmp.path(), opts.clone()).unwrap();
        cart_events(&store, 0, 2500);
        let mut p = store.projection::<AddedThenRemoved>().unwrap();
        assert!(!p.resumed());
        assert_eq!(p.catch_up().unwrap(), 2500);
        // Checkpointed at 1000 and 2000 on its own; a crash image now resumes from 2000.
        let crash = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(tmp.path()).unwrap() {
            let path = f.unwrap().path();
            std::fs::copy(&path, crash.path().join(path.file_name().unwrap())).unwrap();
        }
        std::fs::remove_file(crash.path().join("LOCK")).unwrap();
        let crashed = Store::open(crash.path(), opts.clone()).unwrap();
        let mut c = crashed.projection::<AddedThenRemoved>().unwrap();
        assert!(c.resumed());
        assert_eq!(c.position(), 2000);
        assert_eq!(c.catch_up().unwrap(), 500);
        assert_eq!(c.state(), p.state());
    } // dropped: checkpoint at 2500
    let store = Store::open(tmp.path(), opts).unwrap();
    cart_events(&store, 2500, 2600);
    let mut p = store.projection::<AddedThenRemoved>().unwrap();
    assert!(p.resumed());
    assert_eq!(p.position(), 2500);
    assert_eq!(p.catch_up().unwrap(), 100);
    let mut full = store.projection::<Rebuilt>().unwrap();
    assert_eq!(full.catch_up().unwrap(), 2600);
    assert_eq!(&full.state().0, p.state());
    assert!(p.state().removed.values().sum::<u32>() > 0);
    // Following live events from another thread.
    let follower = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut n = 0;
            while n < 50 {
                n += p.follow(Duration::from_millis(100)).unwrap();
            }
            n
        });
        cart_events(&store, 2600, 2650);
        h.join().unwrap()
    });
    assert_eq!(follower, 50);
}

#[test]
fn changing_a_projection_version_rebuilds_it() {
    #[derive(Default, Serialize, Deserialize)]
    struct CountV1(u64);
    impl Projection for CountV1 {
        const NAME: &'static str = "count";
        fn apply(&mut self, _: &RecordedEvent) {
            self.0 += 1;
        }
    }
    #[derive(Default, Serialize, Deserialize)]
    struct CountV2(u64);
    impl Projection for CountV2 {
        const NAME: &'static str = "count";
        const VERSION: u32 = 2;
        fn apply(&mut self, _: &RecordedEvent) {
            self.0 += 2;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(8192)).unwrap();
    append_n(&store, "s", 10);
    {
        let mut p = store.projection::<CountV1>().unwrap();
        p.catch_up().unwrap();
        assert_eq!(p.state().0, 10);
    }
    let mut v2 = store.projection::<CountV2>().unwrap();
    assert!(!v2.resumed());
    v2.catch_up().unwrap();
    assert_eq!(v2.state().0, 20);
}

#[test]
fn filters_that_reject_whole_batches_still_reach_later_events() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(1 << 16)).unwrap();
    append_n(&store, "other", 1500);
    store
        .append("order-1", ExpectedVersion::Any, &[ev(1)])
        .unwrap();
    let mut orders = store.subscribe_all(1).unwrap().stream_prefix("order-");
    let e = orders.next_timeout(Duration::from_millis(200)).unwrap();
    assert_eq!(e.map(|e| e.position), Some(1501));
    // At close, everything acknowledged before it is delivered, however much is filtered out.
    append_n(&store, "other", 1500);
    store
        .append("order-2", ExpectedVersion::Any, &[ev(2)])
        .unwrap();
    let late = store.subscribe_all(1502).unwrap().stream_prefix("order-");
    let reader = std::thread::spawn(move || late.map(|e| e.unwrap().position).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(20));
    store.close().unwrap();
    assert_eq!(reader.join().unwrap(), [3002]);
}

#[test]
fn following_without_a_time_limit_ends_when_the_store_closes() {
    #[derive(Default, Serialize, Deserialize)]
    struct Count(u64);
    impl Projection for Count {
        const NAME: &'static str = "unbounded-count";
        fn apply(&mut self, _: &RecordedEvent) {
            self.0 += 1;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(8192)).unwrap();
    append_n(&store, "s", 3);
    let mut p = store.projection::<Count>().unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let follower = std::thread::spawn(move || {
        // Duration::MAX has no deadline to add to now: it must wait, not overflow.
        let outcome = p.follow(Duration::MAX);
        let _ = done.send(());
        (outcome, p)
    });
    append_n(&store, "s", 4);
    store.close().unwrap();
    finished
        .recv_timeout(WAIT)
        .expect("follow(Duration::MAX) ended when the store closed");
    let (outcome, p) = follower
        .join()
        .expect("follow(Duration::MAX) did not panic");
    assert!(matches!(outcome, Err(Error::Closed)), "{outcome:?}");
    assert_eq!(p.state().0, 7, "every acknowledged event was applied first");
    assert_eq!(p.position(), 7);
}

#[test]
fn close_releases_the_directory_while_old_handles_drain_and_write_nothing_more() {
    #[derive(Default, Serialize, Deserialize)]
    struct Seen(u64);
    impl Projection for Seen {
        const NAME: &'static str = "seen";
        fn apply(&mut self, _: &RecordedEvent) {
            self.0 += 1;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(8192)).unwrap();
    append_n(&store, "s", 3);
    let mut live = store.subscribe_all(1).unwrap();
    let mut durable = store.durable_subscription("mailer").unwrap();
    let mut projection = store.projection::<Seen>().unwrap();
    projection.catch_up().unwrap();
    durable.next_timeout(WAIT).unwrap().unwrap();
    store.close().unwrap();

    // The directory is free at once: a new writer opens it beside the old handles.
    let reopened = Store::open(tmp.path(), tiny(8192)).unwrap();
    append_n(&reopened, "s", 2);
    // The old subscription delivers what was acknowledged before the close, then ends.
    let got: Vec<u64> = live.by_ref().map(|e| e.unwrap().position).collect();
    assert_eq!(got, [1, 2, 3]);
    assert!(matches!(live.next_timeout(WAIT), Err(Error::Closed)));
    // Nothing of the closed store writes into the directory that is now another's.
    assert!(matches!(durable.ack(1), Err(Error::Closed)));
    assert!(matches!(projection.checkpoint(), Err(Error::Closed)));
    drop((durable, projection));
    let subs = reopened.durable_subscriptions().unwrap();
    assert_eq!(
        (subs[0].name.as_str(), subs[0].acked_position),
        ("mailer", 0)
    );
    assert!(!reopened.projection::<Seen>().unwrap().resumed());
    reopened.close().unwrap();
}
