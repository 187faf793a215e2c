//! `annal::verify` and `annal::repair` on every kind of damage: what each finds, that verify
//! changes nothing, that repair cuts only when told, quarantines what it cuts and leaves a
//! store that opens and takes appends.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use annal::storage::{FsStorage, SimDisk, Storage};
use annal::{
    Error, ExpectedVersion, Health, Options, RepairOptions, Severity, Store, VerifyReport, repair,
    verify,
};
use common::*;

fn fs() -> FsStorage {
    FsStorage::default()
}

/// Every file of a directory (recursively) with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(tree(&p));
        } else {
            let b = std::fs::read(&p).unwrap();
            v.push((p, b));
        }
    }
    v.sort();
    v
}

/// verify, asserting it changed nothing.
fn checked(dir: &Path) -> VerifyReport {
    let before = tree(dir);
    let r = verify(&fs(), dir).unwrap();
    assert_eq!(tree(dir), before, "verify changed a file");
    r
}

/// Repair without `accept_loss` changes nothing and says what it would cut; with it, the
/// store opens with the events before `first_lost`, takes an append at `first_lost`, and
/// verifies clean.
fn repair_accepting_loss(dir: &Path, first_lost: u64) {
    let before = tree(dir);
    let r = repair(&fs(), dir, RepairOptions::default()).unwrap();
    assert_eq!(
        tree(dir),
        before,
        "repair without accept_loss changed a file"
    );
    assert!(!r.cut_made);
    assert_eq!(r.after.health(), Health::Damaged);
    let r = repair(&fs(), dir, RepairOptions { accept_loss: true }).unwrap();
    assert_eq!(r.after.health(), Health::Healthy, "{:?}", r.after.findings);
    if let Some(cut) = &r.cut {
        assert_eq!(cut.first_lost, first_lost, "{cut:?}");
        assert!(r.cut_made);
        let q = cut.quarantine.as_ref().unwrap();
        assert!(q.join("REPORT.txt").exists());
    }
    let store = Store::open(dir, Options::default()).unwrap();
    assert_eq!(store.last_position(), first_lost - 1);
    let got = all(&store);
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.payload.as_ref(), format!("payload-{}", i + 1).as_bytes());
    }
    let a = store
        .append("s-new", ExpectedVersion::NoStream, &[ev(0)])
        .unwrap();
    assert_eq!(a.first_position, first_lost);
    store.close().unwrap();
    assert_eq!(checked(dir).health(), Health::Healthy);
}

#[test]
fn a_healthy_store_verifies_clean_with_its_counts() {
    let tmp = closed_store(60, 1024);
    let r = checked(tmp.path());
    assert_eq!(r.health(), Health::Healthy, "{:?}", r.findings);
    assert_eq!((r.events, r.streams, r.last_position), (60, 3, 60));
    assert!(r.segments > 3);
    assert_eq!(r.checkpoints, r.segments - 1);
    assert_eq!(r.durable_subscriptions, 1);
}

#[test]
fn a_zeroed_synced_last_frame_is_lost_data_and_repair_accepts_it_only_when_told() {
    let tmp = closed_store(20, 1 << 20);
    let seg = segment_files(tmp.path()).pop().unwrap();
    let last = *frame_starts(&seg).last().unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    b[last..].fill(0);
    std::fs::write(&seg, b).unwrap();
    let r = checked(tmp.path());
    assert_eq!(r.health(), Health::Damaged);
    let f = r.first_damage().unwrap();
    assert!(f.reason.contains("positions 20 to 20 are lost"), "{f:?}");
    assert_eq!(r.last_position, 19);
    repair_accepting_loss(tmp.path(), 20);
}

#[test]
fn deleted_segments_are_lost_data() {
    let tmp = closed_store(60, 1024);
    let segs = segment_files(tmp.path());
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    let r = checked(tmp.path());
    assert_eq!(r.health(), Health::Damaged);
    assert!(
        r.findings
            .iter()
            .any(|f| f.file == *segs.last().unwrap() && f.reason.contains("missing")),
        "{:?}",
        r.findings
    );
    let first_lost = r.last_position + 1;
    repair_accepting_loss(tmp.path(), first_lost);
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_is_found_with_everything_after_it() {
    let tmp = closed_store(90, 1024);
    let segs = segment_files(tmp.path());
    // Damage a frame in the middle of segment 2, and another in segment 4.
    for seg in [&segs[1], &segs[3]] {
        let starts = frame_starts(seg);
        let mut b = std::fs::read(seg).unwrap();
        b[starts[1] + 20] ^= 0x01;
        std::fs::write(seg, b).unwrap();
    }
    let r = checked(tmp.path());
    let damaged: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Damaged)
        .collect();
    assert_eq!(damaged.len(), 2, "every problem reported: {:?}", r.findings);
    assert_eq!(damaged[0].file, segs[1]);
    assert_eq!(damaged[1].file, segs[3]);
    // Each lost one frame (one event): the events after the damage were still read.
    assert_eq!(r.events, 88);
    let (lo, hi) = damaged[0].positions.unwrap();
    assert_eq!(lo, hi);
    // Besides the two: the relay's ack (45) is past the unbroken log's end.
    let others: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity != Severity::Damaged)
        .collect();
    assert_eq!(others.len(), 1, "{others:?}");
    assert!(others[0].file.ends_with("relay.sub"));
    repair_accepting_loss(tmp.path(), lo);
}

#[test]
fn a_followers_ack_is_verified_and_repair_pulls_it_back_in_its_own_folder() {
    let tmp = closed_store(20, 1 << 20);
    let dir = tmp.path();
    {
        let follower = Store::open_follower(dir, Options::default()).unwrap();
        let mut sub = follower.durable_subscription("proj").unwrap();
        for _ in 0..20 {
            sub.next_timeout(std::time::Duration::from_secs(5))
                .unwrap()
                .unwrap();
        }
        sub.ack(20).unwrap();
        drop(sub);
        follower.close().unwrap();
    }
    assert_eq!(checked(dir).durable_subscriptions, 2);
    // The last (synced) event is lost: the follower's ack is past the end.
    let seg = segment_files(dir).pop().unwrap();
    let last = *frame_starts(&seg).last().unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    b[last..].fill(0);
    std::fs::write(&seg, b).unwrap();
    let r = checked(dir);
    assert!(
        r.findings
            .iter()
            .any(|f| f.file == dir.join("followers/proj.sub")
                && f.severity == Severity::Rebuildable
                && f.reason.contains("past the end")),
        "{:?}",
        r.findings
    );
    // While a follower has the subscription open (its lock held), repair leaves the ack.
    let lock = std::fs::File::open(dir.join("followers/proj.lock")).unwrap();
    lock.try_lock().unwrap();
    let r = repair(&fs(), dir, RepairOptions { accept_loss: true }).unwrap();
    assert!(
        r.actions
            .iter()
            .any(|a| a.starts_with("left ") && a.contains("proj.sub")),
        "{:?}",
        r.actions
    );
    assert_eq!(
        r.after.health(),
        Health::Repairable,
        "{:?}",
        r.after.findings
    );
    drop(lock);
    let r = repair(&fs(), dir, RepairOptions::default()).unwrap();
    assert_eq!(r.after.health(), Health::Healthy, "{:?}", r.after.findings);
    assert_eq!(checked(dir).health(), Health::Healthy);
    assert!(
        !dir.join("proj.sub").exists(),
        "written in the writer's place"
    );
    let follower = Store::open_follower(dir, Options::default()).unwrap();
    let subs = follower.durable_subscriptions().unwrap();
    assert_eq!(
        (subs[0].name.as_str(), subs[0].acked_position),
        ("proj", 19)
    );
    follower.close().unwrap();
}

#[test]
fn a_torn_tail_is_reported_as_what_an_open_cuts() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), tiny(1 << 20)).unwrap();
    for i in 1..=10 {
        store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    store.sync().unwrap();
    store
        .append("s", ExpectedVersion::Any, &[ev(11), ev(12)])
        .unwrap();
    let image = crash_image(tmp.path());
    drop(store);
    let seg = segment_files(image.path()).pop().unwrap();
    let last = *frame_starts(&seg).last().unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    b[last + 9] ^= 0xFF; // the unsynced last frame, torn
    std::fs::write(&seg, b).unwrap();
    let r = checked(image.path());
    assert_eq!(r.health(), Health::Repairable, "{:?}", r.findings);
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].severity, Severity::TornTail);
    assert_eq!(r.last_position, 10);
    // The open agrees: it cuts it and recovers the same log.
    let store = Store::open(image.path(), tiny(1 << 20)).unwrap();
    assert_eq!(store.last_position(), 10);
    assert!(store.recovery_report().truncated_bytes > 0);
}

#[test]
fn repair_cuts_a_torn_tail_and_removes_damaged_rebuildable_files() {
    let tmp = closed_store(60, 1024);
    let dir = tmp.path();
    let idx = segment_files(dir)[0].with_extension("idx");
    let mut b = std::fs::read(&idx).unwrap();
    b[30] ^= 4;
    std::fs::write(&idx, b).unwrap();
    std::fs::write(dir.join("0000000009.seg.tmp"), b"half").unwrap();
    std::fs::write(dir.join("backup.tmp"), b"mine").unwrap();
    let r = checked(dir);
    assert_eq!(r.health(), Health::Repairable);
    assert_eq!(r.findings.len(), 2, "{:?}", r.findings);
    let fixed = repair(&fs(), dir, RepairOptions::default()).unwrap();
    assert_eq!(
        fixed.after.health(),
        Health::Healthy,
        "{:?}",
        fixed.after.findings
    );
    assert!(!idx.exists() && !dir.join("0000000009.seg.tmp").exists());
    assert_eq!(std::fs::read(dir.join("backup.tmp")).unwrap(), b"mine");
    assert_eq!(
        Store::open(dir, Options::default())
            .unwrap()
            .last_position(),
        60
    );
}

#[test]
fn damaged_state_needs_accepting_that_loss_cannot_be_checked() {
    let tmp = closed_store(10, 1 << 20);
    std::fs::write(tmp.path().join("STATE"), b"garbage").unwrap();
    let r = checked(tmp.path());
    assert_eq!(r.health(), Health::Damaged);
    assert!(r.findings[0].file.ends_with("STATE"));
    assert!(matches!(
        Store::open(tmp.path(), Options::default()),
        Err(Error::Corruption { .. })
    ));
    repair_accepting_loss(tmp.path(), 11);
}

#[test]
fn repair_refuses_a_store_that_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Options::default()).unwrap();
    assert!(matches!(
        repair(&fs(), tmp.path(), RepairOptions::default()),
        Err(Error::Locked { .. })
    ));
    // verify reads beside it.
    assert_eq!(verify(&fs(), tmp.path()).unwrap().health(), Health::Healthy);
    drop(store);
}

#[test]
fn verify_runs_on_the_simulated_disk_and_changes_nothing() {
    let disk = SimDisk::new(7);
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let store = Store::open_with_storage(storage.clone(), "/db", tiny(700)).unwrap();
    for i in 1..=40 {
        store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    store.close().unwrap();
    let contents = |d: &SimDisk| -> Vec<_> {
        d.paths()
            .into_iter()
            .map(|p| (p.clone(), d.contents(&p)))
            .collect()
    };
    let before = contents(&disk);
    let r = verify(storage.as_ref(), "/db").unwrap();
    assert_eq!(contents(&disk), before);
    assert_eq!((r.health(), r.events), (Health::Healthy, 40));
}

#[test]
fn a_damaged_segment_header_over_intact_frames_is_rebuilt_not_cut() {
    let tmp = closed_store(60, 1024);
    let first = segment_files(tmp.path())[0].clone();
    let mut b = std::fs::read(&first).unwrap();
    b[3] ^= 0x10; // the magic
    std::fs::write(&first, b).unwrap();
    let r = checked(tmp.path());
    assert_eq!(r.health(), Health::Damaged);
    let fixed = repair(&fs(), tmp.path(), RepairOptions { accept_loss: true }).unwrap();
    assert!(!fixed.cut_made, "{:?}", fixed.cut);
    assert_eq!(
        fixed.after.health(),
        Health::Healthy,
        "{:?}",
        fixed.after.findings
    );
    assert!(
        fixed
            .actions
            .iter()
            .any(|a| a.contains("rewrote the damaged header"))
    );
    let store = Store::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(all(&store).len(), 60);
}

#[test]
fn checkpoints_without_segments_are_damage_not_rebuildable() {
    let tmp = closed_store(60, 1024);
    for seg in segment_files(tmp.path()) {
        std::fs::remove_file(seg).unwrap();
    }
    std::fs::remove_file(tmp.path().join("STATE")).unwrap();
    let r = checked(tmp.path());
    assert_eq!(r.health(), Health::Damaged, "{:?}", r.findings);
    assert!(Store::open(tmp.path(), Options::default()).is_err());
}

#[test]
fn stray_bytes_after_a_sealed_segment_are_zeroed_by_repair() {
    let tmp = closed_store(60, 4096);
    let seg = segment_files(tmp.path())[0].clone();
    let mut b = std::fs::read(&seg).unwrap();
    let end = frame_starts(&seg).last().copied().unwrap();
    let len = u32::from_le_bytes(b[end..end + 4].try_into().unwrap()) as usize;
    let file_len = b.len();
    assert!(end + 8 + len + 8 < file_len, "no room after the last frame");
    b[file_len - 1] = 0x5A;
    std::fs::write(&seg, b).unwrap();
    let r = checked(tmp.path());
    assert_eq!(r.health(), Health::Repairable, "{:?}", r.findings);
    assert_eq!(
        Store::open(tmp.path(), Options::default())
            .unwrap()
            .last_position(),
        60
    );
    let fixed = repair(&fs(), tmp.path(), RepairOptions::default()).unwrap();
    assert_eq!(
        fixed.after.health(),
        Health::Healthy,
        "{:?}",
        fixed.after.findings
    );
}

/// The real file system, but the first read of the last segment's data sees the frame at
/// `torn_at` half written (zeros from its 9th byte), as a read racing a writer's append can.
#[derive(Debug)]
struct RacingReads {
    torn_at: u64,
    done: Arc<std::sync::atomic::AtomicBool>,
    last: PathBuf,
}

#[derive(Debug)]
struct RacingFile {
    inner: Box<dyn annal::storage::StorageFile>,
    torn_at: Option<u64>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Storage for RacingReads {
    fn create_dir_all(&self, p: &Path) -> std::io::Result<()> {
        fs().create_dir_all(p)
    }
    fn create(&self, p: &Path) -> std::io::Result<Box<dyn annal::storage::StorageFile>> {
        fs().create(p)
    }
    fn open(&self, p: &Path, w: bool) -> std::io::Result<Box<dyn annal::storage::StorageFile>> {
        Ok(Box::new(RacingFile {
            inner: fs().open(p, w)?,
            torn_at: (p == self.last).then_some(self.torn_at),
            done: self.done.clone(),
        }))
    }
    fn remove(&self, p: &Path) -> std::io::Result<()> {
        fs().remove(p)
    }
    fn rename(&self, a: &Path, b: &Path) -> std::io::Result<()> {
        fs().rename(a, b)
    }
    fn sync_dir(&self, p: &Path) -> std::io::Result<()> {
        fs().sync_dir(p)
    }
    fn list(&self, d: &Path) -> std::io::Result<Vec<String>> {
        fs().list(d)
    }
    fn lock(&self, p: &Path) -> std::io::Result<Box<dyn std::any::Any + Send + Sync>> {
        fs().lock(p)
    }
}

impl annal::storage::StorageFile for RacingFile {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, offset)?;
        if let Some(at) = self.torn_at
            && offset == 0
            && buf.len() as u64 > at + 64
            && !self.done.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            buf[at as usize + 8..at as usize + 40].fill(0);
        }
        Ok(())
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn map(&self) -> std::io::Result<Option<annal::storage::FileMap>> {
        self.inner.map()
    }
    fn data_end(&self) -> std::io::Result<u64> {
        self.inner.data_end()
    }
}

#[test]
fn a_read_racing_a_writer_is_not_damage_but_damage_proven_by_later_frames_is() {
    // Under Always, frames after the 5th prove it was synced.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Options::default()).unwrap();
    for i in 1..=10 {
        store.append("s", ExpectedVersion::Any, &[ev(i)]).unwrap();
    }
    let image = crash_image(tmp.path());
    drop(store);
    let seg = segment_files(image.path()).pop().unwrap();
    let fifth = frame_starts(&seg)[4] as u64;
    let ro = Options {
        read_only: true,
        ..Options::default()
    };
    // A read that raced the writer: the next read sees the frame whole.
    let racing = |done: bool| RacingReads {
        torn_at: fifth,
        done: Arc::new(std::sync::atomic::AtomicBool::new(done)),
        last: seg.clone(),
    };
    let r = verify(&racing(false), image.path()).unwrap();
    assert_eq!(r.health(), Health::Healthy, "{:?}", r.findings);
    let store =
        Store::open_with_storage(Arc::new(racing(false)), image.path(), ro.clone()).unwrap();
    assert!(store.last_position() >= 4);
    drop(store);
    // Real damage there: both verify and a read-only open see it, like a writable open.
    let mut b = std::fs::read(&seg).unwrap();
    b[fifth as usize + 20] ^= 1;
    std::fs::write(&seg, b).unwrap();
    assert_eq!(checked(image.path()).health(), Health::Damaged);
    for opts in [ro, Options::default()] {
        assert!(matches!(
            Store::open(image.path(), opts),
            Err(Error::Corruption { .. })
        ));
    }
}

#[test]
fn verify_of_a_store_whose_first_segment_was_never_made_is_healthy_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("LOCK"), b"").unwrap();
    let r = checked(tmp.path());
    assert_eq!((r.health(), r.events, r.segments), (Health::Healthy, 0, 0));
    assert!(segment_files(tmp.path()).is_empty());
}
