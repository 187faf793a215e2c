//! Recovery on open: torn tails are cut, corruption is refused, zeroed space is empty space.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use annal::{Error, EventData, ExpectedVersion, Options, Store};
use common::*;

/// The crash image of a store with 20 single-event frames (synced) and one 3-event frame at
/// the end (not synced); returns the image, its last segment, and the byte range of the last
/// frame.
fn store_with_last_frame() -> (tempfile::TempDir, std::path::PathBuf, usize, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    for i in 1..=20 {
        store
            .append(&format!("s-{}", i % 4), ExpectedVersion::Any, &[ev(i)])
            .unwrap();
    }
    store.sync().unwrap();
    let start = data_end(&segment_files(tmp.path()).pop().unwrap());
    store
        .append(
            "s-last",
            ExpectedVersion::NoStream,
            &[ev(21), ev(22), ev(23)],
        )
        .unwrap();
    let image = crash_image(tmp.path());
    drop(store);
    let seg = segment_files(image.path()).pop().unwrap();
    let end = data_end(&seg);
    assert!(end > start);
    (image, seg, start, end)
}

#[test]
fn torn_tail_of_every_length_recovers_to_the_frames_before_it() {
    let (tmp, seg, start, end) = store_with_last_frame();
    let original = snapshot_dir(tmp.path());
    let restore = || {
        for (p, b) in &original {
            std::fs::write(p, b).unwrap();
        }
    };
    for garbage in [0u8, 0xAB] {
        for cut in 0..(end - start) {
            // The write reached the disk up to `cut`; the rest is zeros or stale sectors.
            restore();
            let mut bytes = std::fs::read(&seg).unwrap();
            bytes[start + cut..end].fill(garbage);
            std::fs::write(&seg, &bytes).unwrap();
            let store = Store::open(tmp.path(), tiny(4096)).unwrap();
            let events = all(&store);
            assert_eq!(events.len(), 20, "cut {cut} garbage {garbage:#x}");
            assert!(events.iter().all(|e| e.stream.as_ref() != "s-last"));
            assert_eq!(store.stream_version("s-last").unwrap(), None);
            let report = store.recovery_report().clone();
            assert!(report.truncated_bytes <= (end - start) as u64);
            if garbage != 0 || bytes[start..end].iter().any(|&b| b != 0) {
                assert!(
                    report.truncated_bytes > 0,
                    "cut {cut}: nothing reported cut"
                );
                assert_eq!(report.truncated_at.as_ref().unwrap().1, start as u64);
            }
            // The log continues where the good frames ended.
            let r = store
                .append("s-new", ExpectedVersion::NoStream, &[ev(99)])
                .unwrap();
            assert_eq!(r.first_position, 21);
            drop(store);
            let store = Store::open(tmp.path(), tiny(4096)).unwrap();
            assert_eq!(store.recovery_report().truncated_bytes, 0);
            assert_eq!(all(&store).len(), 21);
            drop(store);
        }
    }
    // The untouched image still holds all three events of the last append.
    restore();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    assert_eq!(stream(&store, "s-last").len(), 3);
}

#[test]
fn flipped_byte_in_an_earlier_frame_is_corruption_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(1024)).unwrap();
    for i in 1..=60 {
        store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    drop(store);
    let segs = segment_files(tmp.path());
    assert!(segs.len() >= 3);
    let first_frame = 32usize;
    let expect_corruption = |err: Error, seg: &std::path::Path| match err {
        Error::Corruption {
            segment, offset, ..
        } => {
            assert_eq!(segment, seg);
            assert_eq!(offset, first_frame as u64);
        }
        other => panic!("expected corruption, got {other:?}"),
    };
    // Without index checkpoints every segment is scanned on open; with them only the active
    // one is, and damage in a sealed segment is found when it is read (or by `verify`).
    for checkpoints in [false, true] {
        let opts = tiny(1024).index_checkpoints(checkpoints);
        for (i, seg) in [&segs[0], segs.last().unwrap()].into_iter().enumerate() {
            let original = std::fs::read(seg).unwrap();
            let mut bytes = original.clone();
            bytes[first_frame + 20] ^= 0x01;
            std::fs::write(seg, &bytes).unwrap();
            let before = snapshot_dir(tmp.path());
            let sealed_with_checkpoint = checkpoints && i == 0;
            if sealed_with_checkpoint {
                let store = Store::open(tmp.path(), opts.clone()).unwrap();
                assert_eq!(store.recovery_report().segments_scanned, 1);
                let err = store
                    .read_all(annal::ReadOptions::forward())
                    .unwrap()
                    .find_map(Result::err)
                    .expect("damage in a sealed segment must surface on read");
                expect_corruption(err, seg);
            } else {
                expect_corruption(Store::open(tmp.path(), opts.clone()).unwrap_err(), seg);
                assert_eq!(
                    snapshot_dir(tmp.path()),
                    before,
                    "a failed open changed files"
                );
            }
            std::fs::write(seg, &original).unwrap();
        }
    }
    let store = Store::open(tmp.path(), tiny(1024)).unwrap();
    assert_eq!(all(&store).len(), 60);
}

#[test]
fn index_checkpoints_are_used_and_never_trusted_blindly() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = tiny(700);
    let store = Store::open(tmp.path(), opts.clone()).unwrap();
    for i in 1..=200 {
        store
            .append(&format!("s-{}", i % 9), ExpectedVersion::Any, &[ev(i)])
            .unwrap();
    }
    let stats = store.stats().unwrap();
    drop(store); // waits for the background indexer
    let segs = segment_files(tmp.path());
    let idx = |seg: &std::path::Path| seg.with_extension("idx");
    for seg in &segs[..segs.len() - 1] {
        assert!(idx(seg).exists(), "no checkpoint for {}", seg.display());
    }
    assert!(!idx(segs.last().unwrap()).exists());
    let reference = {
        let store = Store::open(tmp.path(), opts.clone().index_checkpoints(false)).unwrap();
        assert_eq!(store.recovery_report().segments_from_checkpoint, 0);
        (all(&store), store.streams().unwrap())
    };
    let check = |want_from_checkpoint: usize| {
        let store = Store::open(tmp.path(), opts.clone()).unwrap();
        let r = store.recovery_report();
        assert_eq!(r.segments_from_checkpoint, want_from_checkpoint);
        assert_eq!(r.segments_from_checkpoint + r.segments_scanned, segs.len());
        assert_eq!((all(&store), store.streams().unwrap()), reference);
        for s in 0..9 {
            let name = format!("s-{s}");
            let es = stream(&store, &name);
            assert!(
                es.iter()
                    .enumerate()
                    .all(|(i, e)| e.version == i as u64 + 1)
            );
        }
        assert_eq!(store.stats().unwrap().events, stats.events);
    };
    check(segs.len() - 1);
    // A corrupt checkpoint, a missing one, and a stale one (from another segment) are ignored.
    let mut b = std::fs::read(idx(&segs[1])).unwrap();
    b[40] ^= 1;
    std::fs::write(idx(&segs[1]), b).unwrap();
    std::fs::remove_file(idx(&segs[2])).unwrap();
    std::fs::copy(idx(&segs[5]), idx(&segs[4])).unwrap();
    check(segs.len() - 4);
    // Opening rewrote them in the background.
    check(segs.len() - 1);
}

#[test]
fn corruption_found_by_reads_is_an_error_never_data() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(1 << 20)).unwrap();
    for i in 1..=10 {
        store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    // Rot under a live store: flip a payload byte of event 5 behind its back.
    let seg = segment_files(tmp.path()).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let needle = b"payload-5";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"X", at as u64).unwrap();
    let by_stream: Vec<_> = store
        .read_stream("s", annal::ReadOptions::forward())
        .unwrap()
        .collect();
    assert_eq!(by_stream.iter().filter(|r| r.is_ok()).count(), 4);
    assert!(matches!(by_stream[4], Err(Error::Corruption { .. })));
    assert_eq!(by_stream.len(), 5, "iteration stops at the first error");
    // Forward, $all decodes frame by frame: the four verified events before the damage, then
    // the error naming the segment, then nothing.
    let by_all: Vec<_> = store
        .read_all(annal::ReadOptions::forward())
        .unwrap()
        .collect();
    let positions: Vec<u64> = by_all.iter().flatten().map(|e| e.position).collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    assert_eq!(by_all.len(), 5, "iteration stops at the first error");
    assert!(
        matches!(&by_all[4], Err(Error::Corruption { segment, .. }) if *segment == seg),
        "{:?}",
        by_all[4]
    );
    // Backward, the damaged frame is met before event 5 is returned, and nothing after it
    // (events 6 to 10 share the damaged chunk here) is returned unverified.
    let backward: Vec<_> = store
        .read_all(annal::ReadOptions::backward())
        .unwrap()
        .collect();
    assert!(backward.iter().flatten().all(|e| e.position != 5));
    assert!(matches!(
        backward.last(),
        Some(Err(Error::Corruption { .. }))
    ));
    drop(store);
    assert!(matches!(
        Store::open(tmp.path(), tiny(1 << 20)),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn zeroed_space_after_the_log_is_empty_space() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    store.append("s", ExpectedVersion::Any, &[ev(1)]).unwrap();
    drop(store);
    let seg = segment_files(tmp.path()).pop().unwrap();
    // A longer preallocation than the options ask for is just more empty space.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(1 << 20).unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    assert_eq!(store.recovery_report().truncated_bytes, 0);
    assert_eq!(all(&store).len(), 1);
}

#[test]
fn damage_to_synced_data_followed_by_valid_frames_is_corruption() {
    let (tmp, seg, start, _end) = store_with_last_frame();
    // Zero the 20th frame, which was synced before the last frame was written: the last
    // frame's durability hint says so, and the open is refused.
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[start - 40..start].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    let before = snapshot_dir(tmp.path());
    let err = Store::open(tmp.path(), Options::default()).unwrap_err();
    assert!(
        matches!(&err, Error::Corruption { reason, .. } if reason.contains("synced")),
        "{err:?}"
    );
    assert_eq!(snapshot_dir(tmp.path()), before);
}

#[test]
fn power_loss_of_unsynced_frames_in_any_order_is_a_torn_tail() {
    // Ten synced appends, then ten that were never synced; after a power loss the page cache
    // may have written any of the later ones and lost others.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(1 << 16)).unwrap();
    let mut ends = vec![];
    let seg_path = segment_files(tmp.path()).pop().unwrap();
    for i in 1..=20 {
        store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
        if i == 10 {
            store.sync().unwrap();
        }
        ends.push(data_end(&seg_path));
    }
    let image = crash_image(tmp.path());
    drop(store);
    let seg = segment_files(image.path()).pop().unwrap();
    let original = snapshot_dir(image.path());
    for lost in 11..=20usize {
        for (p, b) in &original {
            std::fs::write(p, b).unwrap();
        }
        // Frame `lost` never reached the disk; the frames after it did.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[ends[lost - 2]..ends[lost - 1]].fill(0);
        std::fs::write(&seg, &bytes).unwrap();
        let store = Store::open(image.path(), tiny(1 << 16)).unwrap();
        assert_eq!(store.last_position(), lost as u64 - 1, "frame {lost} lost");
        assert!(store.recovery_report().truncated_bytes > 0 || lost == 20);
        let r = store.append("s", ExpectedVersion::Any, &[ev(99)]).unwrap();
        assert_eq!(r.first_position, lost as u64);
    }
}

#[test]
fn missing_segment_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(512)).unwrap();
    for i in 1..=30 {
        store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    drop(store);
    let segs = segment_files(tmp.path());
    std::fs::remove_file(&segs[1]).unwrap();
    let err = Store::open(tmp.path(), tiny(512)).unwrap_err();
    assert!(
        matches!(&err, Error::Corruption { segment, .. } if segment == &segs[1]),
        "{err:?}"
    );
}

#[test]
fn leftover_temporary_segment_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    store.append("s", ExpectedVersion::Any, &[ev(1)]).unwrap();
    drop(store);
    std::fs::write(tmp.path().join("0000000002.seg.tmp"), b"half a header").unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    assert_eq!(store.recovery_report().removed_temp_files, 1);
    assert!(!tmp.path().join("0000000002.seg.tmp").exists());
    let r = store
        .append(
            "s",
            ExpectedVersion::Exact(1),
            &[EventData::new("T", &b"x"[..])],
        )
        .unwrap();
    assert_eq!(r.first_position, 2);
}

/// Opening, writable and read-only, fails with corruption whose message contains `needle`,
/// and changes no file.
fn refused(dir: &std::path::Path, needle: &str) {
    let before = snapshot_dir(dir);
    for read_only in [false, true] {
        let opts = Options {
            read_only,
            ..Options::default()
        };
        let err = Store::open(dir, opts).unwrap_err();
        assert!(
            matches!(&err, Error::Corruption { .. }) && err.to_string().contains(needle),
            "read_only {read_only}: {err}"
        );
        assert_eq!(snapshot_dir(dir), before, "a refused open changed a file");
    }
}

#[test]
fn synced_last_frame_replaced_by_zeros_is_detected() {
    let tmp = closed_store(20, 1 << 20);
    let seg = segment_files(tmp.path()).pop().unwrap();
    let starts = frame_starts(&seg);
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = *starts.last().unwrap();
    bytes[last..].fill(0);
    std::fs::write(&seg, bytes).unwrap();
    refused(tmp.path(), "positions 20 to 20 are lost");
}

#[test]
fn segment_truncated_at_a_frame_boundary_is_detected() {
    let tmp = closed_store(20, 1 << 20);
    let seg = segment_files(tmp.path()).pop().unwrap();
    let starts = frame_starts(&seg);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(starts[10] as u64).unwrap();
    refused(tmp.path(), "truncated");
    // Cut to the boundary but kept at full length (zeros after it): the floor catches it.
    f.set_len(1 << 20).unwrap();
    refused(tmp.path(), "positions 11 to 20 are lost");
}

#[test]
fn deleted_last_segment_is_detected() {
    let tmp = closed_store(60, 1024);
    let segs = segment_files(tmp.path());
    assert!(segs.len() > 3);
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    let name = segs
        .last()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    refused(tmp.path(), &name);
}

#[test]
fn deleted_only_segment_is_detected_and_no_new_store_is_made() {
    let tmp = closed_store(5, 1 << 20);
    std::fs::remove_file(&segment_files(tmp.path())[0]).unwrap();
    refused(tmp.path(), "missing");
    assert!(segment_files(tmp.path()).is_empty());
}

#[test]
fn deleted_segment_after_a_crash_is_detected_by_the_state_a_roll_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(
        tmp.path(),
        Options {
            segment_size: 1024,
            ..Options::default()
        },
    )
    .unwrap();
    for i in 1..=60 {
        store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    // A crash (no clean close) after several rolls.
    let image = crash_image(tmp.path());
    drop(store);
    let segs = segment_files(image.path());
    assert!(segs.len() > 3);
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    refused(image.path(), "are missing");
}

#[test]
fn missing_or_damaged_state_is_refused() {
    let tmp = closed_store(5, 1 << 20);
    let state = tmp.path().join("STATE");
    let good = std::fs::read(&state).unwrap();
    let mut bad = good.clone();
    bad[20] ^= 1;
    std::fs::write(&state, bad).unwrap();
    refused(tmp.path(), "STATE checksum mismatch");
    std::fs::remove_file(&state).unwrap();
    refused(tmp.path(), "STATE is missing");
    std::fs::write(&state, good).unwrap();
    assert_eq!(
        Store::open(tmp.path(), Options::default())
            .unwrap()
            .last_position(),
        5
    );
}

#[test]
fn a_store_whose_first_segment_was_never_created_reads_as_empty() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::open(tmp.path(), Options::default()).unwrap());
    // A power cut between STATE and the first segment.
    std::fs::remove_file(&segment_files(tmp.path())[0]).unwrap();
    std::fs::write(
        tmp.path().join("STATE"),
        std::fs::read(tmp.path().join("STATE")).unwrap(),
    )
    .unwrap();
    let ro = Options {
        read_only: true,
        ..Options::default()
    };
    // STATE from the clean close names segment 1, so this is a loss...
    assert!(Store::open(tmp.path(), ro.clone()).is_err());
    // ...but a STATE from before the first segment is an empty store, not corruption.
    std::fs::remove_file(tmp.path().join("STATE")).unwrap();
    let store = Store::open(tmp.path(), ro.clone()).unwrap();
    assert_eq!(store.last_position(), 0);
    assert_eq!(all(&store).len(), 0);
    assert!(store.streams().unwrap().is_empty());
    drop(store);
    assert!(
        segment_files(tmp.path()).is_empty(),
        "a read-only open created a segment"
    );
    let store = Store::open(tmp.path(), Options::default()).unwrap();
    store
        .append("s", ExpectedVersion::NoStream, &[ev(1)])
        .unwrap();
}

#[test]
fn recovery_counts_the_events_no_later_record_vouches_for() {
    let (tmp, _seg, _start, _end) = store_with_last_frame();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    let r = store.recovery_report().clone();
    // 20 synced single-event frames; the 3-event frame after them may or may not be there.
    assert!(r.proven_durable <= 20);
    assert_eq!(r.events - r.proven_durable, r.unproven_events);
    drop(store);
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    assert_eq!(
        store.recovery_report().unproven_events,
        0,
        "after a clean close"
    );
}

#[test]
fn only_annals_own_temporary_files_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    store.append("s", ExpectedVersion::Any, &[ev(1)]).unwrap();
    drop(store);
    let theirs = ["backup.tmp", "notes.txt.tmp"];
    let ours = ["STATE.tmp", "0000000002.seg.tmp"];
    for name in theirs.iter().chain(&ours) {
        std::fs::write(tmp.path().join(name), b"something").unwrap();
    }
    let store = Store::open(tmp.path(), tiny(4096)).unwrap();
    assert_eq!(store.recovery_report().removed_temp_files, ours.len());
    for name in theirs {
        assert_eq!(
            std::fs::read(tmp.path().join(name)).unwrap(),
            b"something",
            "{name} is not annal's: left alone"
        );
    }
    for name in ours {
        assert!(
            !tmp.path().join(name).exists(),
            "{name} is annal's: removed"
        );
    }
    assert_eq!(all(&store).len(), 1);
}

#[test]
fn a_sealed_segment_cut_short_is_refused_even_with_its_checkpoint() {
    let tmp = closed_store(90, 1024);
    let segs = segment_files(tmp.path());
    assert!(segs[1].with_extension("idx").exists());
    let len = std::fs::metadata(&segs[1]).unwrap().len();
    let end = data_end(&segs[1]) as u64;
    assert!(end < len);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[1])
        .unwrap();
    f.set_len(end - 10).unwrap();
    refused(tmp.path(), "0000000002.seg");
}

#[test]
fn synced_frames_that_vanish_after_a_crash_are_detected_once_state_records_them() {
    for every in [0, 5] {
        let tmp = tempfile::tempdir().unwrap();
        let opts = Options {
            record_durable_every: every,
            ..Options::default()
        };
        let store = Store::open(tmp.path(), opts.clone()).unwrap();
        for i in 1..=20 {
            store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
        }
        let image = crash_image(tmp.path());
        drop(store);
        // The last ten synced frames vanish whole (zeroed).
        let seg = segment_files(image.path()).pop().unwrap();
        let starts = frame_starts(&seg);
        let mut b = std::fs::read(&seg).unwrap();
        b[starts[10]..].fill(0);
        std::fs::write(&seg, b).unwrap();
        if every == 0 {
            // Only the open's record: the documented window, a shorter log.
            let store = Store::open(image.path(), opts).unwrap();
            assert_eq!(store.last_position(), 10);
        } else {
            // STATE recorded position 20 (or at least 15) as synced.
            refused(image.path(), "are lost");
        }
    }
}

/// `STATE` as a crash could leave it (format version 2, see FORMAT.md): not clean, every
/// position up to `durable` synced, segment `last` of `last_len` bytes the last, and (with
/// `deferred`) the segment before it sealed without a sync.
fn write_state(dir: &std::path::Path, durable: u64, last: u32, last_len: u64, deferred: bool) {
    let mut b = Vec::with_capacity(40);
    b.extend_from_slice(b"ANNALSTA");
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&if deferred { 2u16 } else { 0 }.to_le_bytes());
    b.extend_from_slice(&durable.to_le_bytes());
    b.extend_from_slice(&last.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&last_len.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.join("STATE"), b).unwrap();
}

/// The crash image of a store under `Never` taken right after a roll, before the sealed
/// segment's background sync is on record: the sealed segment (the one before the last)
/// with its last frame lost, as a power loss may leave it, and the last segment holding the
/// one frame whose append rolled. Returns the image, the position of the lost frame, and
/// the synced position `STATE` is made to record.
fn torn_unsynced_seal(floor: impl Fn(u64) -> u64, deferred: bool) -> (tempfile::TempDir, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        index_checkpoints: false,
        ..tiny(1024)
    };
    let store = Store::open(tmp.path(), opts).unwrap();
    let mut i = 0;
    while segment_files(tmp.path()).len() < 3 {
        i += 1;
        store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    let image = crash_image(tmp.path());
    drop(store);
    let segs = segment_files(image.path());
    let sealed = &segs[1];
    let starts = frame_starts(sealed);
    // Single-event frames: the sealed segment's last frame holds position i - 1.
    let mut b = std::fs::read(sealed).unwrap();
    let last = *starts.last().unwrap();
    b[last + 8..last + 20].fill(0xEE);
    std::fs::write(sealed, b).unwrap();
    let last_len = std::fs::metadata(&segs[2]).unwrap().len();
    write_state(image.path(), floor(i - 1), 3, last_len, deferred);
    (image, i - 1)
}

#[test]
fn a_torn_write_in_a_segment_sealed_without_a_sync_is_cut_with_what_follows() {
    let (image, lost) = torn_unsynced_seal(|_| 0, true);
    let report = annal::verify(&annal::storage::FsStorage::default(), image.path()).unwrap();
    assert_eq!(report.health(), annal::Health::Repairable, "{report:?}");
    assert_eq!(report.last_position, lost - 1);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.severity == annal::Severity::TornTail && f.reason.contains("sealed")),
        "{report:?}"
    );
    // A read-only open reads up to the tear and changes nothing.
    let before = snapshot_dir(image.path());
    {
        let ro = Store::open(image.path(), Options::default().read_only(true)).unwrap();
        assert_eq!(ro.last_position(), lost - 1);
        assert_eq!(all(&ro).len() as u64, lost - 1);
    }
    assert_eq!(snapshot_dir(image.path()), before);
    let store = Store::open(image.path(), tiny(1024)).unwrap();
    assert_eq!(store.last_position(), lost - 1);
    let report = store.recovery_report();
    assert!(report.truncated_bytes > 0, "{report:?}");
    let (cut_in, _) = report.truncated_at.clone().unwrap();
    assert!(cut_in.ends_with("0000000002.seg"), "{cut_in:?}");
    let events = all(&store);
    assert_eq!(events.len() as u64, lost - 1);
    assert!(
        events
            .iter()
            .zip(1..)
            .all(|(e, i)| e.payload == ev(i).payload)
    );
    // The log goes on from the tear, in the last segment.
    let r = store.append("s", ExpectedVersion::Any, &[ev(500)]).unwrap();
    assert_eq!((r.first_position, r.first_version), (lost, lost));
    store.close().unwrap();
    assert_eq!(
        annal::verify(&annal::storage::FsStorage::default(), image.path())
            .unwrap()
            .health(),
        annal::Health::Healthy
    );
    let store = Store::open(image.path(), tiny(1024)).unwrap();
    assert_eq!(store.last_position(), lost);
    assert_eq!(segment_files(image.path()).len(), 3);
}

#[test]
fn a_torn_write_in_a_sealed_segment_that_state_records_synced_is_refused() {
    // STATE vouches for the position, or says no roll left a segment unsynced.
    for (floor, deferred) in [(true, true), (false, false)] {
        let (image, _) = torn_unsynced_seal(|lost| if floor { lost } else { 0 }, deferred);
        let report = annal::verify(&annal::storage::FsStorage::default(), image.path()).unwrap();
        assert_eq!(report.health(), annal::Health::Damaged, "{report:?}");
        refused(image.path(), "0000000002.seg");
    }
}

#[test]
fn repair_cuts_a_torn_write_in_a_segment_sealed_without_a_sync_as_an_open_would() {
    let (image, lost) = torn_unsynced_seal(|_| 0, true);
    let fs = annal::storage::FsStorage::default();
    let r = annal::repair(&fs, image.path(), annal::RepairOptions::default()).unwrap();
    assert_eq!(r.after.health(), annal::Health::Healthy, "{r:?}");
    assert_eq!(r.after.last_position, lost - 1);
    assert!(r.cut.is_none() && !r.cut_made);
    let store = Store::open(image.path(), tiny(1024)).unwrap();
    assert_eq!(store.last_position(), lost - 1);
    assert_eq!(store.recovery_report().truncated_bytes, 0);
    let r = store.append("s", ExpectedVersion::Any, &[ev(500)]).unwrap();
    assert_eq!(r.first_position, lost);
}

#[test]
fn synced_frames_lost_from_a_segment_sealed_without_a_sync_are_refused_on_a_later_frames_word() {
    // Every append synced before the next: each frame's durable hint covers all before it,
    // the last segment's first frame included, however far its position is from the loss.
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        index_checkpoints: false,
        ..tiny(64 << 10)
    };
    let store = Store::open(tmp.path(), opts.clone()).unwrap();
    let mut i = 0;
    while segment_files(tmp.path()).len() < 3 {
        i += 1;
        store.sync().unwrap();
        store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    let image = crash_image(tmp.path());
    drop(store);
    let segs = segment_files(image.path());
    // Everything after the sealed segment's first frame vanishes (zeroed).
    let starts = frame_starts(&segs[1]);
    assert!(starts.len() > 100, "{} frames", starts.len());
    let mut b = std::fs::read(&segs[1]).unwrap();
    b[starts[1]..].fill(0);
    std::fs::write(&segs[1], b).unwrap();
    // The last segment sparse after its one frame, as `pwrite` leaves a file: its data is
    // a few hundred bytes, its first position hundreds past the loss.
    let last_len = std::fs::metadata(&segs[2]).unwrap().len();
    let written = std::fs::read(&segs[2]).unwrap()[..data_end(&segs[2])].to_vec();
    std::fs::write(&segs[2], &written).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[2])
        .unwrap()
        .set_len(last_len)
        .unwrap();
    write_state(image.path(), 0, 3, last_len, true);
    let report = annal::verify(&annal::storage::FsStorage::default(), image.path()).unwrap();
    assert_eq!(report.health(), annal::Health::Damaged, "{report:?}");
    refused(image.path(), "0000000002.seg");
}

#[test]
fn repair_accepting_loss_cuts_a_torn_seal_even_when_the_last_segment_is_short() {
    let (image, lost) = torn_unsynced_seal(|_| 0, true);
    // STATE remembers the last segment longer than it is: damage a plain open refuses.
    let last = segment_files(image.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    write_state(image.path(), 0, 3, len + 4096, true);
    let fs = annal::storage::FsStorage::default();
    let r = annal::repair(
        &fs,
        image.path(),
        annal::RepairOptions { accept_loss: true },
    )
    .unwrap();
    assert_eq!(r.after.health(), annal::Health::Healthy, "{r:?}");
    let store = Store::open(image.path(), tiny(1024)).unwrap();
    assert_eq!(store.last_position(), lost - 1);
}
