//! Aggregates and snapshots: loads resume from snapshots and always equal a full replay;
//! commands become events under optimistic concurrency.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use std::sync::Arc;

use annal::{Aggregate, Error, ExecuteError, ExpectedVersion, Options, ReadOptions, Store};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// A ledger whose state depends on the order of every event, so a wrong fold shows.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Ledger {
    balance: i64,
    checksum: u64,
    entries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum LedgerEvent {
    Deposited(i64),
    Withdrew(i64),
}

#[derive(Debug, Clone)]
enum Cmd {
    Deposit(i64),
    Withdraw(i64),
    /// Produces no events.
    Noop,
    /// Deposits, but first lets another writer append to the stream: a conflict every time.
    DepositRacing(i64, Arc<Store>, String),
}

impl Aggregate for Ledger {
    type Event = LedgerEvent;
    type Command = Cmd;
    type Error = String;

    fn aggregate_type() -> &'static str {
        "Ledger"
    }
    fn event_type(e: &LedgerEvent) -> &'static str {
        match e {
            LedgerEvent::Deposited(_) => "Deposited",
            LedgerEvent::Withdrew(_) => "Withdrew",
        }
    }
    fn apply(&mut self, e: &LedgerEvent) {
        let amount = match e {
            LedgerEvent::Deposited(n) => *n,
            LedgerEvent::Withdrew(n) => -n,
        };
        self.balance += amount;
        self.entries += 1;
        self.checksum = self.checksum.wrapping_mul(31).wrapping_add(amount as u64);
    }
    fn handle(&self, c: Cmd) -> Result<Vec<LedgerEvent>, String> {
        match c {
            Cmd::Deposit(n) => Ok(vec![LedgerEvent::Deposited(n)]),
            Cmd::Withdraw(n) if n > self.balance => {
                Err(format!("insufficient funds: {}", self.balance))
            }
            Cmd::Withdraw(n) => Ok(vec![LedgerEvent::Withdrew(n)]),
            Cmd::Noop => Ok(vec![]),
            Cmd::DepositRacing(n, store, stream) => {
                let e = <annal::Bincode as annal::Codec>::encode(&LedgerEvent::Deposited(1000))
                    .unwrap();
                store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        &[annal::EventData::new("Deposited", e)],
                    )
                    .unwrap();
                Ok(vec![LedgerEvent::Deposited(n)])
            }
        }
    }
}

/// The same ledger with a new state schema: its old snapshots must not be used.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LedgerV2(Ledger);

impl Aggregate for LedgerV2 {
    type Event = LedgerEvent;
    type Command = Cmd;
    type Error = String;
    const SNAPSHOT_VERSION: u32 = 2;
    fn aggregate_type() -> &'static str {
        "Ledger"
    }
    fn event_type(e: &LedgerEvent) -> &'static str {
        Ledger::event_type(e)
    }
    fn apply(&mut self, e: &LedgerEvent) {
        self.0.apply(e)
    }
    fn handle(&self, c: Cmd) -> Result<Vec<LedgerEvent>, String> {
        self.0.handle(c)
    }
}

fn opts() -> Options {
    common::tiny(1 << 20)
}

/// The state by folding every event from version 1, bypassing snapshots and caches.
fn full_replay(store: &Store, stream: &str, upto: u64) -> Ledger {
    let mut l = Ledger::default();
    for e in store
        .read_stream(stream, ReadOptions::forward().limit(upto))
        .unwrap()
    {
        let e = e.unwrap();
        let ev: LedgerEvent = <annal::Bincode as annal::Codec>::decode(&e.payload).unwrap();
        l.apply(&ev);
    }
    l
}

#[test]
fn load_resumes_from_the_latest_snapshot_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), opts()).unwrap();
    let ledger = store.aggregate::<Ledger>();
    for i in 0..10_050 {
        ledger.execute("acct-1", Cmd::Deposit(i % 7 + 1)).unwrap();
    }
    // Served from the cache while the store is open.
    let hot = ledger.load("acct-1").unwrap();
    assert!(hot.cached && hot.replayed == 0 && hot.version == 10_050);
    drop(store);
    let store = Store::open(tmp.path(), opts()).unwrap();
    let loaded = store.aggregate::<Ledger>().load("acct-1").unwrap();
    assert_eq!(loaded.version, 10_050);
    assert_eq!(loaded.snapshot_version, Some(10_000));
    assert_eq!(loaded.replayed, 50);
    assert!(!loaded.cached);
    assert_eq!(loaded.state, full_replay(&store, "acct-1", u64::MAX));
    // Past versions start from the nearest retained snapshot at or below them.
    let past = store
        .aggregate::<Ledger>()
        .load_at("acct-1", 8_500)
        .unwrap();
    assert_eq!(
        (past.version, past.snapshot_version, past.replayed),
        (8_500, Some(8_000), 500)
    );
    assert_eq!(past.state, full_replay(&store, "acct-1", 8_500));
    let stats = store.stats().unwrap();
    assert!(
        stats.snapshots >= 1 && stats.snapshots <= 4,
        "{} snapshots retained",
        stats.snapshots
    );
}

#[test]
fn commands_append_events_and_domain_errors_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), opts()).unwrap();
    let ledger = store.aggregate::<Ledger>();
    let done = ledger.execute("a", Cmd::Deposit(10)).unwrap();
    assert_eq!(
        (done.version, done.attempts, done.state.balance),
        (1, 1, 10)
    );
    assert_eq!(done.appended.unwrap().first_version, 1);
    match ledger.execute("a", Cmd::Withdraw(50)) {
        Err(ExecuteError::Domain(msg)) => assert_eq!(msg, "insufficient funds: 10"),
        other => panic!("expected a domain error, got {other:?}"),
    }
    let noop = ledger.execute("a", Cmd::Noop).unwrap();
    assert!(noop.events.is_empty() && noop.appended.is_none());
    assert_eq!(store.stream_version("a").unwrap(), Some(1));
    let e = store
        .read_stream("a", ReadOptions::forward())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(e.event_type, "Deposited");
}

#[test]
fn version_conflicts_are_retried_then_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), opts()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let ledger = store.aggregate::<Ledger>().max_retries(1000);
                let mut retried = 0;
                for _ in 0..50 {
                    retried += ledger.execute("hot", Cmd::Deposit(1)).unwrap().attempts - 1;
                }
                retried
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let loaded = store.aggregate::<Ledger>().load("hot").unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (200, 200));
    // A writer that slips in between every load and append: the conflict comes back after
    // the allowed retries, and none of the command's events were written.
    let racing = Cmd::DepositRacing(1, store.clone(), "hot".into());
    match store
        .aggregate::<Ledger>()
        .max_retries(2)
        .execute("hot", racing.clone())
    {
        Err(ExecuteError::Store(Error::WrongExpectedVersion { stream, .. })) => {
            assert_eq!(stream, "hot")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let after = store.aggregate::<Ledger>().load("hot").unwrap();
    assert_eq!((after.version, after.state.balance), (203, 3200));
    // One retry is enough when the interference stops.
    let calm = store
        .aggregate::<Ledger>()
        .execute("hot", Cmd::Deposit(1))
        .unwrap();
    assert_eq!((calm.attempts, calm.state.balance), (1, 3201));
}

#[test]
fn snapshots_of_another_schema_or_damaged_ones_are_ignored_and_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), opts().snapshot_every(100)).unwrap();
    let ledger = store.aggregate::<Ledger>();
    for i in 0..250 {
        ledger.execute("a", Cmd::Deposit(i)).unwrap();
    }
    drop(store);
    let store = Store::open(tmp.path(), opts().snapshot_every(100)).unwrap();
    // The new schema ignores the old snapshots, replays everything, and writes its own.
    let v2 = store.aggregate::<LedgerV2>().load("a").unwrap();
    assert_eq!((v2.snapshot_version, v2.replayed), (None, 250));
    assert_eq!(v2.state.0, full_replay(&store, "a", u64::MAX));
    drop(store);
    let store = Store::open(tmp.path(), opts().snapshot_every(100)).unwrap();
    let again = store.aggregate::<LedgerV2>().load("a").unwrap();
    assert_eq!((again.snapshot_version, again.replayed), (Some(250), 0));
    drop(store);
    // Damage every snapshot file's bytes: loads fall back to full replay, never a wrong state.
    for f in std::fs::read_dir(tmp.path()).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "snap") {
            let mut b = std::fs::read(&p).unwrap();
            for i in (20..b.len()).step_by(37) {
                b[i] ^= 0x5A;
            }
            std::fs::write(&p, b).unwrap();
        }
    }
    let store = Store::open(tmp.path(), opts().snapshot_every(100)).unwrap();
    let l = store.aggregate::<Ledger>().load("a").unwrap();
    assert_eq!(l.state, full_replay(&store, "a", u64::MAX));
    assert_eq!(l.replayed, 250);
    let l2 = store.aggregate::<LedgerV2>().load("a").unwrap();
    assert_eq!(l2.state.0, l.state);
}

#[test]
fn a_snapshot_from_another_history_is_never_used() {
    // Store A and store B hold the same stream name with different events; B gets A's
    // snapshot file (as if a snapshot outlived the events it covered).
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    {
        let store = Store::open(a.path(), opts().snapshot_every(10)).unwrap();
        for _ in 0..20 {
            store
                .aggregate::<Ledger>()
                .execute("x", Cmd::Deposit(100))
                .unwrap();
        }
    }
    {
        let store = Store::open(b.path(), opts().snapshot_every(0)).unwrap();
        for _ in 0..20 {
            store
                .aggregate::<Ledger>()
                .execute("x", Cmd::Deposit(1))
                .unwrap();
        }
    }
    for f in std::fs::read_dir(a.path()).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "snap") {
            std::fs::copy(&p, b.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let store = Store::open(b.path(), opts().snapshot_every(10)).unwrap();
    let l = store.aggregate::<Ledger>().load("x").unwrap();
    assert_eq!(l.state.balance, 20);
    assert_eq!(l.snapshot_version, None);
}

#[test]
fn snapshot_files_stay_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(
        tmp.path(),
        Options {
            snapshots_kept: 2,
            ..opts().snapshot_every(1)
        },
    )
    .unwrap();
    let ledger = store.aggregate::<Ledger>();
    for i in 0..24_000 {
        ledger
            .execute(&format!("s-{}", i % 3), Cmd::Deposit(1))
            .unwrap();
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.snapshots, 6);
    // Each record is about 65 bytes: without compaction, 24,000 of them would be 1.5 MB.
    // Compaction starts once dropped ones outweigh kept ones and pass 1 MiB.
    assert!(
        stats.snapshot_bytes < 1200 * 1024,
        "{} bytes of snapshots",
        stats.snapshot_bytes
    );
    drop(store);
    let store = Store::open(tmp.path(), opts().snapshot_every(1)).unwrap();
    let l = store.aggregate::<Ledger>().load("s-1").unwrap();
    assert_eq!((l.state.balance, l.snapshot_version), (8000, Some(8000)));
}

#[test]
fn corrupt_event_payload_is_an_error_not_a_state() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), opts()).unwrap();
    store
        .append(
            "a",
            ExpectedVersion::Any,
            &[annal::EventData::new("Deposited", vec![0xFFu8; 3])],
        )
        .unwrap();
    let err = store.aggregate::<Ledger>().load("a").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Codec {
                version: Some(1),
                ..
            }
        ),
        "{err:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Whatever the snapshot interval, cache size, reopen points and load targets, a load equals
    /// a full replay from version 1.
    #[test]
    fn loads_equal_full_replays(
        amounts in prop::collection::vec(-50i64..100, 1..400),
        every in 1u64..60,
        cache in 0usize..3,
        reopen_at in prop::collection::vec(0usize..400, 0..3),
        targets in prop::collection::vec(0u64..450, 1..6),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let o = Options { aggregate_cache: cache, ..opts().snapshot_every(every) };
        let mut store = Store::open(tmp.path(), o.clone()).unwrap();
        for (i, &n) in amounts.iter().enumerate() {
            if reopen_at.contains(&i) {
                drop(store);
                store = Store::open(tmp.path(), o.clone()).unwrap();
            }
            let stream = if i % 3 == 0 { "b" } else { "a" };
            let cmd = if n < 0 { Cmd::Withdraw(-n) } else { Cmd::Deposit(n) };
            let _ = store.aggregate::<Ledger>().execute(stream, cmd);
            if i % 17 == 0 {
                let l = store.aggregate::<Ledger>().load(stream).unwrap();
                prop_assert_eq!(&l.state, &full_replay(&store, stream, u64::MAX));
            }
        }
        for &t in &targets {
            for stream in ["a", "b"] {
                let l = store.aggregate::<Ledger>().load_at(stream, t).unwrap();
                let current = store.stream_version(stream).unwrap().unwrap_or(0);
                prop_assert_eq!(l.version, t.min(current));
                prop_assert_eq!(&l.state, &full_replay(&store, stream, t));
                if let Some(s) = l.snapshot_version {
                    prop_assert_eq!(l.replayed, l.version - s);
                }
            }
        }
    }
}
