//! Scavenge: what metadata hides is erased from the files and its disk space given back;
//! every live event keeps its position, version, id and timestamp; readers and writers go
//! on meanwhile; a stopped scavenge resumes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annal::{
    AppendCondition, DeleteMode, EventData, ExpectedVersion, Health, Options, Query, QueryItem,
    ReadOptions, RecordedEvent, Store, StreamMetadata, Transaction,
};

/// Every file of `dir`, recursively, with its bytes.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Stream, version, position, id, timestamp, payload and metadata.
type Fingerprint = (String, u64, u64, Option<u128>, u64, Vec<u8>, Vec<u8>);

/// What identifies a live event, byte for byte.
fn fingerprint(e: &RecordedEvent) -> Fingerprint {
    (
        e.stream.to_string(),
        e.version,
        e.position,
        e.id,
        e.timestamp,
        e.payload.to_vec(),
        e.metadata.to_vec(),
    )
}

fn everything(store: &Store) -> Vec<Fingerprint> {
    common::all(store).iter().map(fingerprint).collect()
}

fn secret(i: u64) -> EventData {
    EventData::new("Secret", format!("SECRET-PAYLOAD-{i:04}"))
        .with_metadata(format!("SECRET-META-{i:04}"))
        .with_tags([format!("SECRET-TAG-{i:04}")])
}

fn plain(stream: &str, i: u64) -> EventData {
    EventData::new("Plain", format!("{stream}-payload-{i}"))
        .with_id(u128::from(i) << 64 | u128::from(stream.len() as u64))
        .with_tags(["kept"])
}

/// `n` events, every `k`-th of stream `gone-1` and the others of `live-1`; then `gone-1`
/// deleted with `mode`.
fn interleave_and_delete(store: &Store, n: u64, k: u64, mode: DeleteMode) {
    for i in 0..n {
        let s = if i % k == 0 { "gone-1" } else { "live-1" };
        store
            .append(s, ExpectedVersion::Any, &[plain(s, i)])
            .unwrap();
    }
    store
        .delete_stream("gone-1", ExpectedVersion::Any, mode)
        .unwrap();
}

fn blocks(dir: &Path) -> u64 {
    common::segment_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().blocks() * 512)
        .sum()
}

#[test]
fn after_a_hard_delete_and_a_scavenge_no_byte_of_the_deleted_events_is_left() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        snapshot_every: 0,
        ..common::tiny(16 * 1024)
    };
    let store = Store::open(tmp.path(), opts.clone()).unwrap();
    for i in 0..200u64 {
        store
            .append("secret-1", ExpectedVersion::Any, &[secret(i)])
            .unwrap();
        store
            .append(
                &format!("kept-{}", i % 7),
                ExpectedVersion::Any,
                &[plain("kept", i)],
            )
            .unwrap();
        if i % 50 == 0 {
            // A transaction over a deleted and a kept stream: half of its frame stays.
            store
                .commit(
                    Transaction::new()
                        .append("secret-1", ExpectedVersion::Any, [secret(1000 + i)])
                        .append("kept-tx", ExpectedVersion::Any, [plain("tx", i)]),
                )
                .unwrap();
        }
    }
    // A stretch of big events of the deleted stream alone: whole disk blocks come back.
    for i in 0..40u64 {
        let big = format!("SECRET-PAYLOAD-BIG-{i:04}-{}", "x".repeat(3000));
        store
            .append(
                "secret-1",
                ExpectedVersion::Any,
                &[EventData::new("Secret", big)],
            )
            .unwrap();
    }
    assert!(
        store
            .save_snapshot("secret-1", "fw", 3, "SECRET-PAYLOAD-SNAP")
            .unwrap()
    );
    store
        .set_stream_metadata(
            "secret-1",
            ExpectedVersion::Any,
            StreamMetadata::new().custom(b"SECRET-CUSTOM".to_vec()),
        )
        .unwrap();
    let before = everything(&store)
        .into_iter()
        .filter(|e| e.0 != "secret-1")
        .collect::<Vec<_>>();
    store
        .delete_stream("secret-1", ExpectedVersion::Any, DeleteMode::Hard)
        .unwrap();
    assert_eq!(everything(&store), before);
    let disk_before = blocks(tmp.path());
    let report = store.scavenge().unwrap();
    assert_eq!(report.events_erased, 200 + 4 + 40 + 1, "{report:?}");
    assert!(
        report.segments_rewritten > 0 && !report.stopped,
        "{report:?}"
    );
    assert!(report.bytes_reclaimed() > 0, "{report:?}");
    assert_eq!(everything(&store), before);
    // The disk gave the blocks back.
    assert!(
        blocks(tmp.path()) < disk_before,
        "{} vs {disk_before}",
        blocks(tmp.path())
    );
    // Positions have gaps now, and stay unique and increasing.
    let positions: Vec<u64> = everything(&store).iter().map(|e| e.2).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert!(positions.windows(2).any(|w| w[1] > w[0] + 1));
    // Backward too.
    let mut back: Vec<_> = store
        .read_all(ReadOptions::backward())
        .unwrap()
        .map(|e| fingerprint(&e.unwrap()))
        .collect();
    back.reverse();
    assert_eq!(back, before);
    store.close().unwrap();

    for (path, bytes) in files(tmp.path()) {
        for needle in [
            &b"SECRET-PAYLOAD"[..],
            b"SECRET-META",
            b"SECRET-TAG",
            b"SECRET-CUSTOM",
        ] {
            assert!(
                !contains(&bytes, needle),
                "{} still holds {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    let v = annal::verify(&annal::storage::FsStorage::default(), tmp.path()).unwrap();
    assert_eq!(v.health(), Health::Healthy, "{v:?}");
    let store = Store::open(tmp.path(), opts.clone()).unwrap();
    assert_eq!(everything(&store), before);
    assert!(common::stream(&store, "secret-1").is_empty());
    // The query index, rebuilt, has no trace of them; the kept tag still finds every event.
    let tagged = store
        .read_query(
            &Query::items([QueryItem::new().tags(["kept"])]),
            ReadOptions::forward(),
        )
        .unwrap()
        .count();
    assert_eq!(tagged, before.len());
    assert_eq!(
        store
            .read_query(
                &Query::items([QueryItem::new().tags(["SECRET-TAG-0001"])]),
                ReadOptions::forward()
            )
            .unwrap()
            .count(),
        0
    );
    // Nothing more to do.
    let again = store.scavenge().unwrap();
    assert_eq!(
        (again.events_erased, again.segments_rewritten),
        (0, 0),
        "{again:?}"
    );
    drop(store);
    // Without index checkpoints, the segments are scanned: the same.
    let store = Store::open(
        tmp.path(),
        Options {
            index_checkpoints: false,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(everything(&store), before);
}

#[test]
fn every_rule_is_scavenged_and_reads_are_the_same_before_and_after() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = common::tiny(8 * 1024);
    let store = Store::open(tmp.path(), opts.clone()).unwrap();
    let hour = 3_600_000_000u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    for i in 0..120u64 {
        for s in ["count-1", "trunc-1", "soft-1", "age-1", "free-1"] {
            let mut e = plain(s, i);
            if s == "age-1" {
                e = e.with_timestamp(now - (120 - i) * hour / 10);
            }
            store.append(s, ExpectedVersion::Any, &[e]).unwrap();
        }
    }
    let set = |s: &str, m: StreamMetadata| {
        store
            .set_stream_metadata(s, ExpectedVersion::Any, m)
            .unwrap();
    };
    set("count-1", StreamMetadata::new().max_count(10));
    set("trunc-1", StreamMetadata::new().truncate_before(100));
    set(
        "age-1",
        StreamMetadata::new().max_age(std::time::Duration::from_secs(3 * 3600)),
    );
    // Metadata replaced: the older event is dead too.
    set("free-1", StreamMetadata::new().custom(b"one".to_vec()));
    set("free-1", StreamMetadata::new().custom(b"two".to_vec()));
    store
        .delete_stream("soft-1", ExpectedVersion::Any, DeleteMode::Soft)
        .unwrap();
    let read = |store: &Store| {
        let mut v = everything(store);
        for s in ["count-1", "trunc-1", "soft-1", "age-1", "free-1"] {
            v.extend(common::stream(store, s).iter().map(fingerprint));
        }
        v
    };
    let before = read(&store);
    assert_eq!(common::stream(&store, "count-1").len(), 10);
    assert_eq!(common::stream(&store, "trunc-1").len(), 21);
    assert_eq!(common::stream(&store, "age-1").len(), 29);
    let stats = store.stats().unwrap();
    assert_eq!(stats.reclaimable_events, 110 + 99 + 120 + 91 + 1);
    assert!(stats.reclaimable_bytes > stats.reclaimable_events * 40);
    assert_eq!(stats.streams, 5, "metadata streams are not counted");
    let report = store.scavenge().unwrap();
    assert_eq!(report.events_erased, 110 + 99 + 120 + 91 + 1, "{report:?}");
    let stats = store.stats().unwrap();
    assert_eq!((stats.reclaimable_events, stats.reclaimable_bytes), (0, 0));
    assert_eq!(read(&store), before);
    // Lifting a rule cannot bring erased events back: they are gone.
    set("trunc-1", StreamMetadata::new());
    let versions: Vec<u64> = common::stream(&store, "trunc-1")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (100..=120).collect::<Vec<_>>());
    set("trunc-1", StreamMetadata::new().truncate_before(100));
    store.close().unwrap();
    let store = Store::open(tmp.path(), opts).unwrap();
    assert_eq!(read(&store), before);
    assert_eq!(
        store
            .stream_metadata("free-1")
            .unwrap()
            .map(|(v, m)| (v, m.custom)),
        Some((2, b"two".to_vec()))
    );
    // Appends go on after the gaps, and versions continue.
    let r = store
        .append(
            "soft-1",
            ExpectedVersion::Exact(120),
            &[plain("soft-1", 121)],
        )
        .unwrap();
    assert_eq!(r.first_version, 121);
    assert_eq!(common::stream(&store, "soft-1").len(), 1);
    let v = annal::verify(&annal::storage::FsStorage::default(), tmp.path()).unwrap();
    assert_eq!(v.health(), Health::Healthy, "{v:?}");
}

#[test]
fn append_conditions_and_retries_see_through_erased_events() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(8 * 1024)).unwrap();
    let tagged = |n: u64| EventData::new("T", format!("{n}")).with_tags(["course:1"]);
    store
        .append("kept-1", ExpectedVersion::Any, &[tagged(1)])
        .unwrap();
    let kept = store.last_position();
    for i in 0..50 {
        store
            .append("gone-1", ExpectedVersion::Any, &[tagged(i)])
            .unwrap();
    }
    store
        .delete_stream("gone-1", ExpectedVersion::Any, DeleteMode::Hard)
        .unwrap();
    store.scavenge().unwrap();
    let q = Query::items([QueryItem::new().tags(["course:1"])]);
    // The newest match is the kept event: a condition after it holds, one before fails.
    let tx = |after: u64| {
        Transaction::new()
            .append("kept-2", ExpectedVersion::Any, [tagged(99)])
            .condition(AppendCondition::new(q.clone()).after(after))
    };
    let failed = store.commit(tx(kept - 1));
    assert!(
        matches!(failed, Err(annal::Error::AppendConditionFailed { position, .. }) if position == kept),
        "{failed:?}"
    );
    store.commit(tx(kept)).unwrap();
}

#[test]
fn readers_and_writers_go_on_while_a_scavenge_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), common::tiny(16 * 1024)).unwrap());
    interleave_and_delete(&store, 600, 2, DeleteMode::Soft);
    let live_before: Vec<_> = common::stream(&store, "live-1")
        .iter()
        .map(fingerprint)
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop, expect) = (Arc::clone(&store), Arc::clone(&stop), live_before.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::Acquire) || rounds < 3 {
                let got: Vec<_> = store
                    .read_stream("live-1", ReadOptions::forward().limit(300))
                    .unwrap()
                    .map(|e| fingerprint(&e.unwrap()))
                    .collect();
                assert_eq!(got, expect);
                let all: Vec<_> = store
                    .read_all(ReadOptions::forward())
                    .unwrap()
                    .map(|e| e.unwrap())
                    .filter(|e| &*e.stream == "live-1")
                    .map(|e| fingerprint(&e))
                    .collect();
                assert_eq!(all.get(..300), Some(&expect[..]));
                rounds += 1;
            }
            rounds
        })
    };
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) || n < 50 {
                store
                    .append("new-1", ExpectedVersion::Any, &[plain("new-1", n)])
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let mut sub = store.subscribe_all(0).unwrap();
    let report = store.scavenge().unwrap();
    stop.store(true, Ordering::Release);
    assert_eq!(report.events_erased, 300);
    assert!(reader.join().unwrap() >= 3);
    let written = writer.join().unwrap();
    assert_eq!(common::stream(&store, "new-1").len() as u64, written);
    // A subscription started before sees each live event once, in order.
    let mut seen = Vec::new();
    while seen.len() < 300 + written as usize {
        let e = sub.next().unwrap().unwrap();
        assert_ne!(&*e.stream, "gone-1");
        seen.push(e.position);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn a_stopped_scavenge_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(4 * 1024)).unwrap();
    interleave_and_delete(&store, 300, 3, DeleteMode::Hard);
    let before = everything(&store);
    let mut calls = 0;
    let first = store
        .scavenge_with(|p| {
            calls += 1;
            assert!(p.done <= p.total);
            p.done < 2
        })
        .unwrap();
    assert!(first.stopped && first.segments_scanned == 2, "{first:?}");
    assert_eq!(calls, 3);
    assert_eq!(everything(&store), before);
    let mut last = None;
    let rest = store
        .scavenge_with(|p| {
            last = Some(*p);
            true
        })
        .unwrap();
    assert!(!rest.stopped);
    let last = last.unwrap();
    assert_eq!(last.done, last.total);
    assert_eq!(
        first.events_erased + rest.events_erased,
        100,
        "{first:?} {rest:?}"
    );
    assert_eq!(everything(&store), before);
}

#[test]
fn projection_checkpoints_that_folded_erased_events_are_removed() {
    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Everything(Vec<String>);
    impl annal::Projection for Everything {
        const NAME: &'static str = "everything";
        fn apply(&mut self, e: &RecordedEvent) {
            self.0
                .push(String::from_utf8_lossy(&e.payload).into_owned());
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(8 * 1024)).unwrap();
    for i in 0..20 {
        store
            .append("secret-1", ExpectedVersion::Any, &[secret(i)])
            .unwrap();
        store
            .append("kept-1", ExpectedVersion::Any, &[plain("kept-1", i)])
            .unwrap();
    }
    {
        let mut p = store.projection::<Everything>().unwrap();
        p.catch_up().unwrap();
        assert_eq!(p.state().0.len(), 40);
    }
    store
        .delete_stream("secret-1", ExpectedVersion::Any, DeleteMode::Hard)
        .unwrap();
    let report = store.scavenge().unwrap();
    assert_eq!(report.projection_checkpoints_removed, 1);
    let mut p = store.projection::<Everything>().unwrap();
    assert!(!p.resumed());
    p.catch_up().unwrap();
    assert_eq!(p.state().0.len(), 20);
    assert!(p.state().0.iter().all(|s| !s.contains("SECRET")));
}

/// Appends written while a scavenge runs, and lost in a crash before their sync, must not
/// have decided what it erased (max_count counts durable events only).
#[test]
fn a_scavenge_judges_by_durable_events_only() {
    use annal::storage::SimDisk;
    for seed in 0..30 {
        let disk = SimDisk::new(seed);
        let opts = Options {
            fsync: annal::FsyncPolicy::Never,
            segment_size: 4096,
            snapshot_every: 0,
            ..Options::default()
        };
        let open = |disk: &SimDisk| {
            Store::open_with_storage(Arc::new(disk.clone()), "/sim/s", opts.clone()).unwrap()
        };
        let store = open(&disk);
        store
            .set_stream_metadata(
                "s-1",
                ExpectedVersion::Any,
                StreamMetadata::new().max_count(2),
            )
            .unwrap();
        for i in 0..5 {
            store
                .append("s-1", ExpectedVersion::Any, &[plain("s-1", i)])
                .unwrap();
        }
        store.sync().unwrap();
        let mut first = true;
        store
            .scavenge_with(|_| {
                if std::mem::take(&mut first) {
                    let more = [plain("s-1", 10), plain("s-1", 11)];
                    store.append("s-1", ExpectedVersion::Any, &more).unwrap();
                }
                true
            })
            .unwrap();
        disk.halt_after(1);
        drop(store);
        let store = open(&disk.crash());
        let versions: Vec<u64> = common::stream(&store, "s-1")
            .iter()
            .map(|e| e.version)
            .collect();
        assert!(
            versions == [4, 5] || versions == [6, 7],
            "seed {seed}: {versions:?}"
        );
    }
}

/// A progress callback that panics ends the scavenge (the panic goes on up), and the store
/// takes the next one.
#[test]
fn a_panicking_progress_callback_leaves_no_scavenge_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(4 * 1024)).unwrap();
    interleave_and_delete(&store, 100, 2, DeleteMode::Hard);
    let before = everything(&store);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.scavenge_with(|p| {
            assert!(p.done < 1, "stop here");
            true
        })
    }));
    assert!(panicked.is_err());
    let r = store.scavenge().unwrap();
    assert!(r.events_erased > 0, "{r:?}");
    assert_eq!(everything(&store), before);
}
