//! Shared test helpers: event builders, a model of the store, and a storage that fails on cue.
#![allow(dead_code)]

use std::any::Any;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use annal::storage::{FsStorage, Storage, StorageFile};
use annal::{EventData, ExpectedVersion, Options, ReadOptions, RecordedEvent, Store};

/// Options with tiny segments and no fsync per append, for fast tests that roll often.
pub fn tiny(segment_size: u64) -> Options {
    Options {
        fsync: annal::FsyncPolicy::Never,
        segment_size,
        ..Options::default()
    }
}

/// An event whose payload encodes `n`, so reads can be checked byte for byte.
pub fn ev(n: u64) -> EventData {
    EventData::new(format!("T{}", n % 3), format!("payload-{n}").into_bytes())
        .with_metadata(format!("m{}", n % 5).into_bytes())
}

pub fn all(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all(ReadOptions::forward())
        .unwrap()
        .collect::<annal::Result<Vec<_>>>()
        .unwrap()
}

pub fn stream(store: &Store, name: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(name, ReadOptions::forward())
        .unwrap()
        .collect::<annal::Result<Vec<_>>>()
        .unwrap()
}

/// Segment files of a store directory, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Offset just past the last non-zero byte of a file.
pub fn data_end(path: &Path) -> usize {
    let b = std::fs::read(path).unwrap();
    b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1)
}

/// Every file of a directory and its bytes (but the empty lock file), to check that a failed
/// open changed nothing.
pub fn snapshot_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "LOCK"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// Switches that make a [`FaultyStorage`] fail.
#[derive(Debug, Default)]
pub struct Faults {
    pub fail_sync: AtomicBool,
    pub fail_write: AtomicBool,
    pub syncs: AtomicU64,
    /// Each fdatasync takes at least this long (µs): a slow disk, whatever the real one is.
    pub sync_delay_micros: AtomicU64,
    /// While set, every fdatasync waits (a disk that stalls), until cleared.
    pub hold_sync: AtomicBool,
}

/// The real file system, with writes and fdatasyncs that fail when told to.
#[derive(Debug, Default, Clone)]
pub struct FaultyStorage {
    pub faults: Arc<Faults>,
}

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn StorageFile>,
    faults: Arc<Faults>,
}

impl Storage for FaultyStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage::default().create_dir_all(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(FaultyFile {
            inner: FsStorage::default().create(path)?,
            faults: self.faults.clone(),
        }))
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(FaultyFile {
            inner: FsStorage::default().open(path, write)?,
            faults: self.faults.clone(),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        FsStorage::default().remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FsStorage::default().rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        FsStorage::default().sync_dir(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        FsStorage::default().list(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        FsStorage::default().lock(path)
    }
    fn permissions(&self, path: &Path) -> io::Result<Option<u32>> {
        FsStorage::default().permissions(path)
    }
}

impl StorageFile for FaultyFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.faults.fail_write.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.inner.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        while self.faults.hold_sync.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let delay = self.faults.sync_delay_micros.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_micros(delay));
        }
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        self.inner.sync_data()
    }
    fn map(&self) -> io::Result<Option<annal::storage::FileMap>> {
        // No map: exercises the positional-read path.
        Ok(None)
    }
}

/// What the disk would hold if the process died now: a copy of every file of an open store's
/// directory (the page cache's view, which survives a process crash), without its lock.
pub fn crash_image(dir: &Path) -> tempfile::TempDir {
    let image = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() && p.file_name().is_some_and(|n| n != "LOCK") {
            std::fs::copy(&p, image.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    image
}

/// A store of `n` single-event appends over 3 streams under `Always`, closed cleanly.
pub fn closed_store(n: u64, segment_size: u64) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(
        tmp.path(),
        Options {
            segment_size,
            ..Options::default()
        },
    )
    .unwrap();
    for i in 1..=n {
        store
            .append(&format!("s-{}", i % 3), ExpectedVersion::Any, &[ev(i)])
            .unwrap();
    }
    let mut sub = store.durable_subscription("relay").unwrap();
    for _ in 0..n / 2 {
        sub.next_timeout(std::time::Duration::from_secs(5))
            .unwrap()
            .unwrap();
    }
    sub.ack(n / 2).unwrap();
    drop(sub);
    store.close().unwrap();
    tmp
}

/// The offsets at which the frames of a segment file start.
pub fn frame_starts(seg: &Path) -> Vec<usize> {
    let bytes = std::fs::read(seg).unwrap();
    let mut at = 32;
    let mut starts = Vec::new();
    while at + 8 <= bytes.len() && u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) != 0 {
        starts.push(at);
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    starts
}
