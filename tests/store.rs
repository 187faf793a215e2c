//! The store API: versions, expected versions, idempotent retries, validation, reads, locking,
//! policies, poisoning and concurrency.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use annal::{
    AppendResult, Error, EventData, ExpectedVersion, FsyncPolicy, Options, ReadOptions, Store,
};
use common::*;

#[test]
fn versions_and_positions_are_dense_across_many_segment_rolls() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(512)).unwrap();
    let mut n = 0u64;
    for round in 0..300u64 {
        let batch: Vec<_> = (0..(round % 4 + 1))
            .map(|_| {
                n += 1;
                ev(n)
            })
            .collect();
        store
            .append(&format!("s-{}", round % 7), ExpectedVersion::Any, &batch)
            .unwrap();
    }
    let check = |store: &Store| {
        let events = all(store);
        assert_eq!(events.len() as u64, n);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.position, i as u64 + 1);
            assert_eq!(
                e.payload.as_ref(),
                format!("payload-{}", e.position).as_bytes()
            );
            assert_eq!(
                e.metadata.as_ref(),
                format!("m{}", e.position % 5).as_bytes()
            );
        }
        let mut total = 0;
        for s in 0..7 {
            let es = stream(store, &format!("s-{s}"));
            for (i, e) in es.iter().enumerate() {
                assert_eq!(e.version, i as u64 + 1);
                assert_eq!(e.stream.as_ref(), format!("s-{s}"));
            }
            total += es.len();
        }
        assert_eq!(total as u64, n);
        let backward: Vec<u64> = store
            .read_all(ReadOptions::backward())
            .unwrap()
            .map(|e| e.unwrap().position)
            .collect();
        assert_eq!(backward, (1..=n).rev().collect::<Vec<_>>());
    };
    check(&store);
    assert!(store.stats().unwrap().segments > 50);
    drop(store);
    let store = Store::open(tmp.path(), tiny(512)).unwrap();
    check(&store);
    assert_eq!(store.recovery_report().events, n);
}

#[test]
fn multi_event_append_is_one_atomic_frame_with_consecutive_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    store
        .append("a", ExpectedVersion::NoStream, &[ev(1)])
        .unwrap();
    let r = store
        .append("b", ExpectedVersion::NoStream, &[ev(2), ev(3), ev(4)])
        .unwrap();
    assert_eq!(
        r,
        AppendResult {
            first_version: 1,
            last_version: 3,
            first_position: 2,
            last_position: 4,
            deduplicated: false,
        }
    );
    let b = stream(&store, "b");
    assert_eq!(
        b.iter()
            .map(|e| (e.version, e.position))
            .collect::<Vec<_>>(),
        [(1, 2), (2, 3), (3, 4)]
    );
    assert!(b.windows(2).all(|w| w[0].timestamp == w[1].timestamp));
}

#[test]
fn an_append_bigger_than_a_segment_gets_a_segment_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(512)).unwrap();
    let big = EventData::new("Big", vec![7u8; 5000]);
    store.append("s", ExpectedVersion::Any, &[ev(1)]).unwrap();
    store
        .append("s", ExpectedVersion::Any, &[big.clone(), big])
        .unwrap();
    store.append("s", ExpectedVersion::Any, &[ev(4)]).unwrap();
    drop(store);
    let store = Store::open(tmp.path(), tiny(512)).unwrap();
    let s = stream(&store, "s");
    assert_eq!(s.len(), 4);
    assert_eq!(s[1].payload.len(), 5000);
}

#[test]
fn expected_version_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    let wrong = |r: annal::Result<AppendResult>, exp: ExpectedVersion, act: Option<u64>| match r {
        Err(Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!((stream.as_str(), expected, actual), ("s", exp, act));
        }
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    };
    wrong(
        store.append("s", ExpectedVersion::StreamExists, &[ev(1)]),
        ExpectedVersion::StreamExists,
        None,
    );
    wrong(
        store.append("s", ExpectedVersion::Exact(1), &[ev(1)]),
        ExpectedVersion::Exact(1),
        None,
    );
    assert_eq!(store.stream_version("s").unwrap(), None);
    assert_eq!(store.last_position(), 0);
    store
        .append("s", ExpectedVersion::Exact(0), &[ev(1)])
        .unwrap();
    wrong(
        store.append("s", ExpectedVersion::NoStream, &[ev(2)]),
        ExpectedVersion::NoStream,
        Some(1),
    );
    wrong(
        store.append("s", ExpectedVersion::Exact(0), &[ev(2)]),
        ExpectedVersion::Exact(0),
        Some(1),
    );
    wrong(
        store.append("s", ExpectedVersion::Exact(2), &[ev(2)]),
        ExpectedVersion::Exact(2),
        Some(1),
    );
    store
        .append("s", ExpectedVersion::Exact(1), &[ev(2)])
        .unwrap();
    store
        .append("s", ExpectedVersion::StreamExists, &[ev(3)])
        .unwrap();
    store.append("s", ExpectedVersion::Any, &[ev(4)]).unwrap();
    assert_eq!(store.stream_version("s").unwrap(), Some(4));
    assert_eq!(store.last_position(), 4, "failed appends wrote nothing");
    assert_eq!(all(&store).len(), 4);
}

#[test]
fn retried_appends_with_ids_are_recognised() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    let batch = |a: u128, b: u128| [ev(1).with_id(a), ev(2).with_id(b)];
    let first = store
        .append("s", ExpectedVersion::NoStream, &batch(1, 2))
        .unwrap();
    assert!(!first.deduplicated);
    let retried = |r: AppendResult| AppendResult {
        deduplicated: true,
        ..r
    };
    // The same append again (a retry after a lost reply): same result, nothing written.
    assert_eq!(
        store
            .append("s", ExpectedVersion::NoStream, &batch(1, 2))
            .unwrap(),
        retried(first)
    );
    let second = store
        .append("s", ExpectedVersion::Exact(2), &batch(3, 4))
        .unwrap();
    store
        .append("other", ExpectedVersion::Any, &[ev(9)])
        .unwrap();
    // Exact retries are recognised even after later appends.
    assert_eq!(
        store
            .append("s", ExpectedVersion::Exact(2), &batch(3, 4))
            .unwrap(),
        retried(second)
    );
    assert_eq!(
        store
            .append("s", ExpectedVersion::NoStream, &batch(1, 2))
            .unwrap(),
        retried(first)
    );
    // Any: recognised when they are the stream's last events.
    assert_eq!(
        store
            .append("s", ExpectedVersion::Any, &batch(3, 4))
            .unwrap(),
        retried(second)
    );
    assert_eq!(store.last_position(), 5);
    // Different ids at that version: a genuine conflict.
    assert!(matches!(
        store.append("s", ExpectedVersion::Exact(2), &batch(3, 5)),
        Err(Error::WrongExpectedVersion { .. })
    ));
    // Without ids nothing is deduplicated.
    assert!(matches!(
        store.append("s", ExpectedVersion::NoStream, &[ev(1), ev(2)]),
        Err(Error::WrongExpectedVersion { .. })
    ));
    // Any with ids that are not the last events: appended anew.
    let again = store
        .append("s", ExpectedVersion::Any, &batch(1, 2))
        .unwrap();
    assert_eq!(again.first_version, 5);
    // Matches must be one whole earlier append, not pieces of several or part of one.
    store
        .append("u", ExpectedVersion::Any, &[ev(1).with_id(21)])
        .unwrap();
    store.append("x", ExpectedVersion::Any, &[ev(1)]).unwrap();
    store
        .append("u", ExpectedVersion::Any, &[ev(1).with_id(22)])
        .unwrap();
    assert!(matches!(
        store.append(
            "u",
            ExpectedVersion::NoStream,
            &[ev(1).with_id(21), ev(1).with_id(22)]
        ),
        Err(Error::WrongExpectedVersion { .. })
    ));
    store
        .append("w", ExpectedVersion::NoStream, &batch(31, 32))
        .unwrap();
    assert!(matches!(
        store.append("w", ExpectedVersion::NoStream, &[ev(1).with_id(31)]),
        Err(Error::WrongExpectedVersion { .. })
    ));
    let before = store.last_position();
    // Survives a reopen: the ids are read from the log.
    drop(store);
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    assert_eq!(
        store
            .append("s", ExpectedVersion::Exact(2), &batch(3, 4))
            .unwrap(),
        retried(second)
    );
    assert_eq!(store.last_position(), before);
}

#[test]
fn invalid_arguments_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096).max_event_size(100)).unwrap();
    let invalid = |r: annal::Result<AppendResult>| {
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    };
    invalid(store.append("", ExpectedVersion::Any, &[ev(1)]));
    invalid(store.append(
        &"x".repeat(annal::MAX_STREAM_NAME_LEN + 1),
        ExpectedVersion::Any,
        &[ev(1)],
    ));
    invalid(store.append("$all", ExpectedVersion::Any, &[ev(1)]));
    invalid(store.append("s", ExpectedVersion::Any, &[]));
    invalid(store.append("s", ExpectedVersion::Any, &[EventData::new("", &b"x"[..])]));
    invalid(store.append(
        "s",
        ExpectedVersion::Any,
        &[ev(1), EventData::new("Big", vec![0u8; 101])],
    ));
    assert_eq!(store.last_position(), 0);
    store
        .append(
            &"x".repeat(annal::MAX_STREAM_NAME_LEN),
            ExpectedVersion::Any,
            &[EventData::new("Ok", vec![0u8; 100])],
        )
        .unwrap();
    for bad in [
        Options {
            segment_size: 10,
            ..Options::default()
        },
        Options {
            fsync: FsyncPolicy::EveryEvents(0),
            ..Options::default()
        },
        Options {
            fsync: FsyncPolicy::Interval(Duration::ZERO),
            ..Options::default()
        },
    ] {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            Store::open(t.path(), bad),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn reads_forward_backward_from_and_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(600)).unwrap();
    for i in 1..=50u64 {
        store
            .append(
                if i % 2 == 0 { "even" } else { "odd" },
                ExpectedVersion::Any,
                &[ev(i)],
            )
            .unwrap();
    }
    let versions = |opts: ReadOptions| -> Vec<u64> {
        store
            .read_stream("even", opts)
            .unwrap()
            .map(|e| e.unwrap().version)
            .collect()
    };
    assert_eq!(versions(ReadOptions::forward_from(23)), [23, 24, 25]);
    assert_eq!(versions(ReadOptions::forward_from(3).limit(2)), [3, 4]);
    assert_eq!(versions(ReadOptions::backward().limit(3)), [25, 24, 23]);
    assert_eq!(versions(ReadOptions::backward_from(2)), [2, 1]);
    assert_eq!(versions(ReadOptions::backward_from(100).limit(1)), [25]);
    assert!(versions(ReadOptions::forward_from(26)).is_empty());
    assert!(
        store
            .read_stream("nope", ReadOptions::forward())
            .unwrap()
            .next()
            .is_none()
    );
    let positions = |opts: ReadOptions| -> Vec<u64> {
        store
            .read_all(opts)
            .unwrap()
            .map(|e| e.unwrap().position)
            .collect()
    };
    assert_eq!(positions(ReadOptions::forward_from(48)), [48, 49, 50]);
    assert_eq!(
        positions(ReadOptions::forward_from(10).limit(3)),
        [10, 11, 12]
    );
    assert_eq!(
        positions(ReadOptions::backward_from(30).limit(4)),
        [30, 29, 28, 27]
    );
    assert_eq!(positions(ReadOptions::backward().limit(2)), [50, 49]);
    assert!(positions(ReadOptions::forward_from(51)).is_empty());
    // Time travel: the even stream as of position 20 is its events up to there.
    let as_of_20: Vec<u64> = store
        .read_all(ReadOptions::forward().limit(20))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.stream.as_ref() == "even")
        .map(|e| e.version)
        .collect();
    assert_eq!(as_of_20, (1..=10).collect::<Vec<_>>());
    let names: Vec<_> = store
        .streams()
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.version))
        .collect();
    assert_eq!(names, [("even".to_string(), 25), ("odd".to_string(), 25)]);
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.events, stats.streams, stats.last_position),
        (50, 2, 50)
    );
    assert!(stats.segments > 2 && stats.bytes > 50 * 40 && stats.index_memory_bytes >= 50 * 8);
}

#[test]
fn second_open_of_a_directory_is_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Options::default()).unwrap();
    assert!(matches!(
        Store::open(tmp.path(), Options::default()),
        Err(Error::Locked { path, holder: Some(pid) })
            if path == tmp.path() && pid == std::process::id()
    ));
    let message = Store::open(tmp.path(), Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&format!("by this process ({})", std::process::id())),
        "{message}"
    );
    store.close().unwrap();
    Store::open(tmp.path(), Options::default()).unwrap();
}

#[test]
fn failed_fsync_poisons_the_store_and_reopen_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = FaultyStorage::default();
    let opts = Options {
        segment_size: 4096,
        ..Options::default()
    };
    let store = Store::open_with_storage(Arc::new(disk.clone()), tmp.path(), opts.clone()).unwrap();
    let ok = store
        .append("s", ExpectedVersion::NoStream, &[ev(1)])
        .unwrap();
    disk.faults.fail_sync.store(true, Ordering::SeqCst);
    let failed = store.append("s", ExpectedVersion::Exact(1), &[ev(2)]);
    assert!(
        matches!(
            failed,
            Err(Error::Io {
                op: "fdatasync",
                ..
            })
        ),
        "{failed:?}"
    );
    // Even once the disk "works" again, nothing more is acknowledged.
    disk.faults.fail_sync.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        let r = store.append("t", ExpectedVersion::Any, &[ev(3)]);
        assert!(
            matches!(r, Err(Error::Poisoned { ref cause }) if cause.contains("fdatasync")),
            "{r:?}"
        );
    }
    assert!(matches!(store.sync(), Err(Error::Poisoned { .. })));
    // Readers never saw the unacknowledged event.
    assert_eq!(all(&store).len(), 1);
    assert_eq!(store.stream_version("s").unwrap(), Some(1));
    drop(store);
    let store = Store::open(tmp.path(), opts).unwrap();
    let events = all(&store);
    assert!(!events.is_empty() && events.len() <= 2);
    assert_eq!(events[0].position, ok.first_position);
    store.append("s", ExpectedVersion::Any, &[ev(4)]).unwrap();
}

#[test]
fn failed_write_poisons_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = FaultyStorage::default();
    let store = Store::open_with_storage(Arc::new(disk.clone()), tmp.path(), tiny(4096)).unwrap();
    store.append("s", ExpectedVersion::Any, &[ev(1)]).unwrap();
    disk.faults.fail_write.store(true, Ordering::SeqCst);
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, &[ev(2)]),
        Err(Error::Io { op: "write", .. })
    ));
    disk.faults.fail_write.store(false, Ordering::SeqCst);
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, &[ev(3)]),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(all(&store).len(), 1);
}

#[test]
fn a_full_disk_while_replacing_a_file_says_so_and_leaves_no_temporary_file() {
    let disk = annal::storage::SimDisk::new(7);
    let dir = std::path::Path::new("/store");
    let store = Store::open_with_storage(Arc::new(disk.clone()), dir, Options::default()).unwrap();
    store.append("s", ExpectedVersion::Any, &[ev(1)]).unwrap();
    // Closing writes nothing to the log (it is synced already), then replaces STATE.
    disk.fail_write_after(1, annal::storage::WriteFault::NoSpace);
    let err = store.close().unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("No space left on device"),
        "says the disk is full: {err}"
    );
    let paths = disk.paths();
    assert!(
        !paths.iter().any(|p| p.to_string_lossy().ends_with(".tmp")),
        "no temporary file left: {paths:?}"
    );
    assert!(paths.contains(&dir.join("STATE")), "the old STATE stays");
}

#[test]
fn group_commit_many_threads_every_event_present_once() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = FaultyStorage::default();
    let store = Arc::new(
        Store::open_with_storage(
            Arc::new(disk.clone()),
            tmp.path(),
            Options {
                segment_size: 8192,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    // A disk as slow to sync as a real one, so appends arrive while a sync is in flight
    // even where fsync costs nothing (tmpfs).
    disk.faults.sync_delay_micros.store(300, Ordering::SeqCst);
    let syncs_before = disk.faults.syncs.load(Ordering::SeqCst);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|i| {
                        let r = store
                            .append(&format!("t-{t}"), ExpectedVersion::Exact(i), &[ev(i)])
                            .unwrap();
                        assert!(store.stats().unwrap().durable_position >= r.last_position);
                        r.first_position
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut positions: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=320).collect::<Vec<_>>());
    let syncs = disk.faults.syncs.load(Ordering::SeqCst) - syncs_before;
    assert!(syncs >= 1);
    assert_eq!(all(&store).len(), 320);
    // Segment syncs as the store counts them (the faulty storage also counts directory and
    // other files' syncs): group commit shared some among the 320 appends.
    let segment_syncs = store.stats().unwrap().segment_syncs;
    assert!(segment_syncs >= 1 && segment_syncs <= syncs);
    assert!(segment_syncs < 320, "{segment_syncs} syncs for 320 appends");
}

#[test]
fn racing_exact_appends_exactly_one_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), tiny(1 << 16)).unwrap());
    for round in 0..100u64 {
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.append("hot", ExpectedVersion::Exact(round), &[ev(round)])
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}"
        );
        assert!(results.iter().any(|r| matches!(r, Err(Error::WrongExpectedVersion { actual: Some(v), .. }) if *v == round + 1)));
    }
    assert_eq!(store.stream_version("hot").unwrap(), Some(100));
}

#[test]
fn readers_run_alongside_the_writer_and_see_only_whole_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), tiny(2048)).unwrap());
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..400u64 {
                store
                    .append("s", ExpectedVersion::Any, &[ev(2 * i), ev(2 * i + 1)])
                    .unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                while last < 800 {
                    let events = all(&store);
                    assert_eq!(events.len() % 2, 0, "half an append was visible");
                    assert!(events.len() >= last);
                    for (i, e) in events.iter().enumerate() {
                        assert_eq!(e.position, i as u64 + 1);
                    }
                    let v = store.stream_version("s").unwrap().unwrap_or(0);
                    assert!(v >= events.len() as u64);
                    last = events.len();
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn background_policies_acknowledge_and_bound_unsynced_events() {
    for policy in [
        FsyncPolicy::EveryEvents(10),
        FsyncPolicy::Interval(Duration::from_millis(5)),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let opts = Options {
            fsync: policy,
            segment_size: 4096,
            ..Options::default()
        };
        let store = Store::open(tmp.path(), opts.clone()).unwrap();
        for i in 1..=200u64 {
            let r = store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
            if let FsyncPolicy::EveryEvents(n) = policy {
                let durable = store.stats().unwrap().durable_position;
                assert!(
                    r.last_position - durable <= n,
                    "{} unsynced",
                    r.last_position - durable
                );
            }
        }
        store.sync().unwrap();
        assert_eq!(store.stats().unwrap().durable_position, 200);
        store.close().unwrap();
        let store = Store::open(tmp.path(), opts).unwrap();
        assert_eq!(all(&store).len(), 200);
    }
}

#[test]
fn read_only_opens_read_beside_the_writer_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = Store::open(tmp.path(), tiny(512).fsync(FsyncPolicy::Always)).unwrap();
    for i in 1..=10 {
        writer.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    let before = snapshot_dir(tmp.path());
    let reader = Store::open(tmp.path(), tiny(512).read_only(true)).unwrap();
    assert_eq!(all(&reader).len(), 10);
    assert_eq!(reader.stream_version("s").unwrap(), Some(10));
    assert!(matches!(
        reader.append("s", ExpectedVersion::Any, &[ev(11)]),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(
        reader.durable_subscription("x"),
        Err(Error::ReadOnly { .. })
    ));
    reader.sync().unwrap();
    // The reader sees the log as of its open.
    writer.append("s", ExpectedVersion::Any, &[ev(11)]).unwrap();
    assert_eq!(all(&reader).len(), 10);
    reader.close().unwrap();
    drop(writer);
    // A torn tail is not cut by a read-only open: the log just ends before it.
    let image = tempfile::tempdir().unwrap();
    for (p, b) in &before {
        std::fs::write(image.path().join(p.file_name().unwrap()), b).unwrap();
    }
    let seg = segment_files(image.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = data_end(&seg);
    bytes[end - 5] ^= 0xFF;
    std::fs::write(&seg, &bytes).unwrap();
    let untouched = snapshot_dir(image.path());
    let reader = Store::open(image.path(), tiny(512).read_only(true)).unwrap();
    assert_eq!(all(&reader).len(), 9);
    assert!(reader.recovery_report().truncated_at.is_some());
    drop(reader);
    assert_eq!(
        snapshot_dir(image.path()),
        untouched,
        "a read-only open changed files"
    );
    assert!(!image.path().join("LOCK").exists());
    let missing = tmp.path().join("nope");
    assert!(Store::open(&missing, tiny(512).read_only(true)).is_err());
    assert!(!missing.exists());
}

#[test]
fn read_only_opens_succeed_while_a_writer_is_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = Arc::new(
        Store::open(
            tmp.path(),
            Options {
                segment_size: 1 << 16,
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appenders: Vec<_> = (0..4)
        .map(|t| {
            let (writer, stop) = (writer.clone(), stop.clone());
            std::thread::spawn(move || {
                // Bounded, so that on a disk whose fsync costs nothing (tmpfs) the log stays
                // small while the readers open it again and again.
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && i < 3000 {
                    writer
                        .append(&format!("t-{t}"), ExpectedVersion::Any, &[ev(i)])
                        .unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    let mut seen = 0;
    for _ in 0..40 {
        let reader = Store::open(
            tmp.path(),
            Options {
                segment_size: 1 << 16,
                ..Options::default()
            }
            .read_only(true),
        )
        .expect("a read-only open beside a busy writer");
        let events = all(&reader);
        assert!(
            events
                .iter()
                .enumerate()
                .all(|(i, e)| e.position == i as u64 + 1)
        );
        assert!(events.len() >= seen, "went backwards");
        seen = events.len();
    }
    stop.store(true, Ordering::SeqCst);
    for a in appenders {
        a.join().unwrap();
    }
    assert!(seen > 0);
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Opens a new store at `dir` with `options`, appends, rolls a segment and closes it, so
/// that it has a STATE, a lock file, segments and an index checkpoint.
#[cfg(unix)]
fn fill_store(dir: &std::path::Path, options: Options) {
    let store = Store::open(dir, options).unwrap();
    assert_eq!(
        store.recovery_report().readable_by_others,
        Vec::<std::path::PathBuf>::new()
    );
    for i in 0..40 {
        store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    assert!(segment_files(dir).len() > 1, "rolled");
    store.close().unwrap();
}

#[cfg(unix)]
#[test]
fn new_stores_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("parent").join("store");
    fill_store(&dir, tiny(1024));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(
        mode(dir.parent().unwrap()),
        0o700,
        "a parent annal created too"
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for name in ["STATE", "LOCK", "0000000001.seg", "0000000002.seg"] {
        assert!(names.contains(&dir.join(name)), "{name} in {names:?}");
    }
    for path in &names {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
}

#[cfg(unix)]
#[test]
fn share_with_group_lets_the_group_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let options = Options {
        share_with_group: true,
        ..tiny(1024)
    };
    fill_store(&dir, options.clone());
    assert_eq!(mode(&dir), 0o750);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for name in ["STATE", "LOCK", "0000000001.seg"] {
        assert!(files.contains(&dir.join(name)), "{name} in {files:?}");
    }
    for path in &files {
        assert_eq!(mode(path), 0o640, "{}", path.display());
    }
    let store = Store::open(&dir, options).unwrap();
    assert!(store.recovery_report().readable_by_others.is_empty());
    drop(store);
    // The same store opened private-only: the group's bits are too open.
    let store = Store::open(&dir, tiny(1024)).unwrap();
    let reported = &store.recovery_report().readable_by_others;
    assert!(reported.contains(&dir), "{reported:?}");
    assert!(
        reported.contains(&dir.join("0000000001.seg")),
        "{reported:?}"
    );
}

#[cfg(unix)]
#[test]
fn files_others_can_read_are_reported_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    fill_store(&dir, tiny(1024));
    let opened_up = [dir.join("0000000001.seg"), dir.join("LOCK")];
    for path in &opened_up {
        set_mode(path, 0o644);
    }
    for read_only in [false, true] {
        let store = Store::open(&dir, tiny(1024).read_only(read_only)).unwrap();
        let reported = &store.recovery_report().readable_by_others;
        assert_eq!(reported, &opened_up.to_vec(), "read-only: {read_only}");
    }
    set_mode(&dir, 0o755);
    let store = Store::open(&dir, tiny(1024)).unwrap();
    let reported = &store.recovery_report().readable_by_others;
    assert_eq!(reported.first(), Some(&dir), "{reported:?}");
    assert_eq!(reported.len(), 3, "{reported:?}");
}

#[test]
fn an_open_that_fails_in_the_event_sourcing_step_changes_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    for i in 0..200 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                &[EventData::new("T", vec![i as u8; 64])],
            )
            .unwrap();
    }
    store.close().unwrap();
    // Without their index checkpoints, an open that got far enough would write them again.
    let image = tempfile::tempdir().unwrap();
    for (p, b) in snapshot_dir(tmp.path()) {
        if !p.to_string_lossy().ends_with(".idx") {
            std::fs::write(image.path().join(p.file_name().unwrap()), b).unwrap();
        }
    }
    // An ack "file" that cannot be read fails the durable-subscription step.
    std::fs::create_dir(image.path().join("bad.sub")).unwrap();
    let before = snapshot_dir(image.path());
    assert!(matches!(
        Store::open(image.path(), tiny(4096)),
        Err(Error::Io { .. })
    ));
    let after = snapshot_dir(image.path());
    let changed: Vec<_> = after
        .iter()
        .filter(|f| !before.contains(f))
        .map(|(p, _)| p.clone())
        .collect();
    assert!(changed.is_empty(), "a failed open changed {changed:?}");
    assert_eq!(
        after.len(),
        before.len(),
        "a failed open added or removed files"
    );
    std::fs::remove_dir(image.path().join("bad.sub")).unwrap();
    let store = Store::open(image.path(), tiny(4096)).unwrap();
    assert_eq!(store.last_position(), 200);
    assert_eq!(store.recovery_report().segments_from_checkpoint, 0);
}

#[test]
fn event_bytes_come_from_owned_or_borrowed_values_and_reports_print() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    let borrowed = String::from("{\"n\":1}");
    let events = [
        EventData::new("A", b"{}"),
        EventData::new("B", borrowed.as_str()).with_metadata(&b"m"[..]),
        EventData::new("C", vec![1u8, 2]),
        EventData::new("D", annal::Bytes::from_static(b"x")),
    ];
    drop(borrowed);
    store
        .append("s", ExpectedVersion::NoStream, &events)
        .unwrap();
    let read: Vec<_> = store
        .read_stream("s", ReadOptions::forward())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(read[1].payload, &b"{\"n\":1}"[..]);
    assert_eq!(read[1].metadata, &b"m"[..]);
    assert_eq!(read[2].payload, &[1u8, 2][..]);
    store.close().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    let line = store.recovery_report().to_string();
    assert!(
        line.starts_with("recovered 4 events (1 segment scanned, 0 from index checkpoints)"),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn an_id_names_one_event() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    store
        .append("s", ExpectedVersion::NoStream, &[ev(1).with_id(7)])
        .unwrap();
    // The same id where a retry would be, with another payload: an error, nothing written.
    let reused = store.append("s", ExpectedVersion::NoStream, &[ev(2).with_id(7)]);
    assert!(
        matches!(
            reused,
            Err(Error::IdReused {
                id: 7,
                position: 1,
                ..
            })
        ),
        "{reused:?}"
    );
    let reused = store.append(
        "s",
        ExpectedVersion::Any,
        &[ev(1).with_metadata("m").with_id(7)],
    );
    assert!(matches!(reused, Err(Error::IdReused { .. })), "{reused:?}");
    // One id twice in one append.
    let twice = store.append(
        "t",
        ExpectedVersion::Any,
        &[ev(3).with_id(8), ev(4).with_id(8)],
    );
    assert!(
        matches!(&twice, Err(Error::InvalidArgument(m)) if m.contains("events 1 and 2")),
        "{twice:?}"
    );
    assert_eq!(store.last_position(), 1);
}

#[test]
fn a_given_timestamp_is_kept_and_part_of_what_a_retry_compares() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(1 << 16)).unwrap();
    let old = EventData::new("T", "x").with_id(1).with_timestamp(42);
    let now = EventData::new("T", "y");
    store
        .append("s", ExpectedVersion::NoStream, &[old.clone(), now])
        .unwrap();
    let got: Vec<u64> = store
        .read_stream("s", ReadOptions::forward())
        .unwrap()
        .map(|e| e.unwrap().timestamp)
        .collect();
    assert_eq!(got[0], 42, "given: kept, though older than the next");
    assert!(
        got[1] > 1_700_000_000_000_000,
        "not given: the time of the append"
    );
    let retry = store
        .append("s", ExpectedVersion::NoStream, std::slice::from_ref(&old))
        .unwrap_err();
    // Not the same append (it had two events), so not a retry; the same id with another
    // time is another event.
    assert!(
        matches!(retry, Error::WrongExpectedVersion { .. }),
        "{retry:?}"
    );
    store
        .append("t", ExpectedVersion::NoStream, std::slice::from_ref(&old))
        .unwrap();
    let same = store
        .append("t", ExpectedVersion::NoStream, std::slice::from_ref(&old))
        .unwrap();
    assert!(same.deduplicated);
    let other_time = store
        .append("t", ExpectedVersion::NoStream, &[old.with_timestamp(43)])
        .unwrap_err();
    assert!(
        matches!(other_time, Error::IdReused { .. }),
        "{other_time:?}"
    );
    store.close().unwrap();
}

#[test]
fn a_uuid_id_is_its_u128_and_comes_back_as_the_same_uuid() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(1 << 16)).unwrap();
    let id = uuid::Uuid::new_v4();
    let e = EventData::new("T", "x").with_uuid(id);
    assert_eq!(e.id, Some(id.as_u128()));
    store
        .append("s", ExpectedVersion::NoStream, std::slice::from_ref(&e))
        .unwrap();
    // A retry with the same UUID is recognised.
    let again = store
        .append("s", ExpectedVersion::NoStream, std::slice::from_ref(&e))
        .unwrap();
    assert!(again.deduplicated);
    let read = store
        .read_stream("s", ReadOptions::forward())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(read.uuid(), Some(id));
    store.close().unwrap();
}

#[test]
fn tags_are_stored_read_back_after_a_reopen_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let tagged = |n: u64| {
        EventData::new("StudentSubscribed", format!("{n}"))
            .with_id(u128::from(n))
            .with_tags([format!("course:c{}", n % 3), format!("student:s{n}")])
    };
    {
        let store = Store::open(tmp.path(), tiny(2048)).unwrap();
        for n in 1..=60 {
            store
                .append(
                    "s",
                    ExpectedVersion::Any,
                    &[tagged(n), EventData::new("Plain", "x")],
                )
                .unwrap();
        }
        // A retry must bring the same tags.
        store
            .append("t", ExpectedVersion::NoStream, &[tagged(61)])
            .unwrap();
        assert!(
            store
                .append("t", ExpectedVersion::NoStream, &[tagged(61)])
                .unwrap()
                .deduplicated
        );
        let err = store
            .append(
                "t",
                ExpectedVersion::NoStream,
                &[tagged(61).with_tags(["course:other"])],
            )
            .unwrap_err();
        assert!(matches!(err, Error::IdReused { .. }), "{err:?}");
        for (bad, why) in [
            (
                EventData::new("T", "x").with_tags([""]),
                "tag 1 must be 1 to",
            ),
            (
                EventData::new("T", "x").with_tags(["y".repeat(annal::MAX_TAG_LEN + 1)]),
                "tag 1 must be 1 to",
            ),
            (
                EventData::new("T", "x").with_tags((0..=annal::MAX_TAGS).map(|i| i.to_string())),
                "tags, more than",
            ),
            (
                EventData {
                    tags: vec!["a".into(), "a".into()],
                    ..EventData::new("T", "x")
                },
                "twice",
            ),
        ] {
            let err = store.append("s", ExpectedVersion::Any, &[bad]).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        store.close().unwrap();
    }
    // Sealed segments come back through their index checkpoints, the active one by a scan.
    let store = Store::open(tmp.path(), tiny(2048)).unwrap();
    assert!(store.stats().unwrap().segments > 3);
    let events: Vec<_> = store
        .read_stream("s", ReadOptions::forward())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(events.len(), 120);
    for (i, e) in events.iter().enumerate() {
        let n = i as u64 / 2 + 1;
        if i % 2 == 0 {
            assert_eq!(
                e.tags,
                [format!("course:c{}", n % 3), format!("student:s{n}")]
            );
        } else {
            assert!(e.tags.is_empty());
        }
    }
    let all: Vec<_> = store
        .read_all(ReadOptions::backward())
        .unwrap()
        .map(|e| e.unwrap().tags)
        .collect();
    assert_eq!(all[0], ["course:c1", "student:s61"]);
    assert_eq!(all[2], ["course:c0", "student:s60"]);
    store.close().unwrap();
    assert_eq!(
        annal::verify(&annal::storage::FsStorage::default(), tmp.path())
            .unwrap()
            .health(),
        annal::Health::Healthy
    );
}
