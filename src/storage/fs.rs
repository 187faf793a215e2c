//! [`Storage`] over the real file system.

use std::any::Any;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

#[cfg(target_os = "linux")]
use super::WriteMap;
use super::{FileMap, SharedWords, Storage, StorageFile};

/// The real file system (`std::fs`, `fdatasync`, `mmap`).
///
/// Every directory it creates is mode 0700 and every file 0600 (the owner only), or
/// 0750 and 0640 with [`with_group_access`](Self::with_group_access)`(true)`, whatever the
/// process umask: the mode is given at creation and set again explicitly after it, since the
/// umask may have stripped bits. Existing files and directories keep their modes.
/// `FsStorage::default()` is owner-only.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FsStorage {
    group_access: bool,
}

impl FsStorage {
    /// Storage whose new directories and files the owner's group may also read (0750 and
    /// 0640) when `group` is true; owner-only (0700 and 0600) when false, as
    /// [`FsStorage::default`].
    pub fn with_group_access(group: bool) -> Self {
        FsStorage {
            group_access: group,
        }
    }

    fn dir_mode(self) -> u32 {
        if self.group_access { 0o750 } else { 0o700 }
    }

    fn file_mode(self) -> u32 {
        if self.group_access { 0o640 } else { 0o600 }
    }

    /// Opens `path` for reading and writing, creating it when `create_new` (failing if it
    /// exists) with this storage's mode, set again after creation past the umask.
    fn create_file(self, path: &Path) -> io::Result<File> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(self.file_mode())
            .open(path)?;
        f.set_permissions(std::fs::Permissions::from_mode(self.file_mode()))?;
        Ok(f)
    }
}

#[derive(Debug)]
struct FsFile(File);

/// What keeps a [`SharedWords`] mapping alive: writable for a writer, read-only for a
/// follower that may only read the file.
#[allow(dead_code, reason = "held only to keep the mapping alive")]
enum MapOwner {
    Mut(memmap2::MmapMut),
    Ro(Mmap),
}

impl Storage for FsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Outermost first, each missing one created here, so each gets the mode; ancestors
        // that exist are not annal's to change.
        let mut missing: Vec<&Path> = path
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !p.is_dir())
            .collect();
        missing.reverse();
        for dir in missing {
            match std::fs::DirBuilder::new().mode(self.dir_mode()).create(dir) {
                Ok(()) => {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(self.dir_mode()))?
                }
                // Created by someone else meanwhile: theirs, mode included.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(FsFile(self.create_file(path)?)))
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Box<dyn StorageFile>> {
        let f = OpenOptions::new().read(true).write(write).open(path)?;
        Ok(Box::new(FsFile(f)))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        // Created apart from opening, so only a lock file made here gets this storage's mode.
        let f = match self.create_file(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                OpenOptions::new().read(true).write(true).open(path)?
            }
            other => other?,
        };
        match f.try_lock() {
            Ok(()) => {
                // Named in the file, so that the next one to try can say who has it.
                f.set_len(0)?;
                FileExt::write_all_at(&f, format!("{}\n", std::process::id()).as_bytes(), 0)?;
                Ok(Box::new(f))
            }
            Err(TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    fn shares_memory(&self) -> bool {
        true
    }

    fn permissions(&self, path: &Path) -> io::Result<Option<u32>> {
        Ok(Some(std::fs::metadata(path)?.permissions().mode() & 0o7777))
    }
}

impl StorageFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    #[cfg(target_os = "linux")]
    fn data_end(&self) -> io::Result<u64> {
        use rustix::fs::{SeekFrom, seek};
        let len = self.len()?;
        let mut end = 0;
        // Data regions are few (a segment is written front to back); the bound only guards
        // against a pathological file, which is then read whole.
        for _ in 0..4096 {
            let data = match seek(&self.0, SeekFrom::Data(end)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => return Ok(end),
                // No SEEK_DATA on this file system: all of it may be data.
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => return Ok(len),
                Err(e) => return Err(e.into()),
            };
            end = seek(&self.0, SeekFrom::Hole(data))?;
            if end >= len {
                return Ok(len);
            }
        }
        Ok(len)
    }

    fn map(&self) -> io::Result<Option<FileMap>> {
        if self.len()? == 0 {
            // A zero-length mapping is an error on Linux; an empty view needs no map.
            return Ok(Some(FileMap::empty()));
        }
        // SAFETY: the map is read-only and private to this handle's caller; `FileMap` makes
        // no reference to it, only views of prefixes its caller knows never change again (see
        // `FileMap::prefix`). Another program truncating the file while it is mapped would
        // make reads of the lost pages fault (SIGBUS); the README states that limit.
        let map = unsafe { Mmap::map(&self.0)? };
        let (ptr, len) = (map.as_ptr(), map.len());
        // SAFETY: `ptr .. ptr + len` is the mapping, which `map`, moved into the owner, keeps
        // alive for as long as the `FileMap` and any view of it.
        Ok(Some(unsafe { FileMap::from_raw(ptr, len, Arc::new(map)) }))
    }

    fn shared_words(&self, count: usize) -> io::Result<Option<SharedWords>> {
        let bytes = count.saturating_mul(8);
        if self.len()? < bytes as u64 || count == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let writable = self.0.try_clone()?;
        // SAFETY: a shared map of the file's first words. Nothing in this process makes a
        // reference to its bytes other than the `AtomicU64`s of `SharedWords`, and the other
        // processes that map the file (annal writers and followers) also access it only
        // atomically; the file is never shrunk below `bytes` while mapped.
        let map = match unsafe { memmap2::MmapOptions::new().len(bytes).map_mut(&writable) } {
            Ok(m) => MapOwner::Mut(m),
            // A follower may only have read access: it only loads.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                // SAFETY: as above, read-only: only atomic loads are made of it.
                MapOwner::Ro(unsafe { memmap2::MmapOptions::new().len(bytes).map(&self.0)? })
            }
            Err(e) => return Err(e),
        };
        let (ptr, writable) = match &map {
            MapOwner::Mut(m) => (m.as_ptr(), true),
            MapOwner::Ro(m) => (m.as_ptr(), false),
        };
        let ptr = ptr.cast::<std::sync::atomic::AtomicU64>();
        if !ptr.is_aligned() {
            return Err(io::Error::other("shared map is not 8-byte aligned"));
        }
        // SAFETY: `ptr .. ptr + count` is the mapping (page-aligned, so 8-byte aligned as
        // checked), which `map`, moved into the owner, keeps alive as long as the words.
        Ok(Some(unsafe {
            SharedWords::from_raw(ptr, count, writable, Box::new(map))
        }))
    }

    #[cfg(target_os = "linux")]
    fn write_map(&self) -> io::Result<Option<Box<dyn WriteMap>>> {
        // Only where allocating blocks ahead means a write fault needs no more space: not on
        // copy-on-write file systems (btrfs, ZFS, reflinked XFS), which allocate on every
        // write and would raise SIGBUS on a full disk.
        const EXT4: i64 = 0xEF53;
        const TMPFS: i64 = 0x0102_1994;
        let kind = rustix::fs::fstatfs(&self.0)?.f_type as i64;
        if ![EXT4, TMPFS].contains(&kind) || self.len()? == 0 {
            return Ok(None);
        }
        let file = self.0.try_clone()?;
        // Making a raw map is safe; writing through it (`write_at`) relies on this: the map
        // must not be written past the file's length (the populating thread's handle may
        // outlive it, but only asks the kernel to fault pages in, which fails rather than
        // raising a signal), and nothing may hold a reference to bytes written through it.
        // annal never shrinks a segment while it is open (tail repair happens at open, before
        // the map is made), and `write_at` copies through a raw pointer, never through
        // `&mut [u8]` of the map, into bytes past what readers view (the populating thread
        // only faults pages in, which changes no byte). Other programs changing the segment
        // files are outside what annal supports (README, Limits).
        let map = Arc::new(memmap2::MmapOptions::new().map_raw(&file)?);
        Ok(Some(Box::new(FsWriteMap {
            file,
            map,
            allocated: 0,
            fallback: false,
            populator: None,
            populated: 0,
            stepped: std::time::Instant::now(),
            lead_refused: None,
        })))
    }
}

/// How far ahead of a write [`FsWriteMap`] allocates disk blocks, in aligned steps, so a write
/// through the map never lands on a hole that the file system then fails to fill (SIGBUS on
/// a full disk). A multiple of the largest page-cache folio (2 MiB), so a fault never spans
/// allocated and unallocated blocks.
#[cfg(target_os = "linux")]
const ALLOCATE_AHEAD: u64 = 4 << 20;

/// The least step [`FsWriteMap`] allocates when the disk has no room for a whole
/// [`ALLOCATE_AHEAD`]: the largest page-cache folio.
#[cfg(target_os = "linux")]
const ALLOCATE_MIN: u64 = 2 << 20;

/// How far ahead of the writes [`FsWriteMap::populate_ahead`] keeps the map's pages faulted
/// in (and their blocks allocated, which it needs first).
#[cfg(target_os = "linux")]
const POPULATE_LEAD: u64 = 8 << 20;

/// The populating thread's unit of work. Handing it one wakes the thread, which costs the
/// writer a system call and, on a virtual machine, an interrupt to another CPU: the writer
/// hands over whole steps only, a few to a lead.
#[cfg(target_os = "linux")]
const POPULATE_STEP: u64 = 4 << 20;

/// A writer that took longer than this to fill the last step is slow: its page faults cost
/// it little, while pages populated ahead would sit dirty (zeros) long enough for the kernel
/// to write them back before the data, doubling what reaches the disk. It populates nothing
/// until it is fast again.
#[cfg(target_os = "linux")]
const POPULATE_SLOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes at least this long go through `pwrite` (into the same page cache): copying a large
/// frame in the kernel costs less than taking a page fault on each of its fresh pages.
#[cfg(target_os = "linux")]
const PWRITE_FROM: usize = 64 << 10;

/// A shared writable map of a segment file whose blocks are allocated (`fallocate`) ahead of
/// the writes, so that a full disk is an `ENOSPC` error from `write_at`, never a fault.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct FsWriteMap {
    file: File,
    map: Arc<memmap2::MmapRaw>,
    /// Bytes from the start known to have blocks allocated.
    allocated: u64,
    /// The file system cannot allocate ahead: every write goes through `pwrite`.
    fallback: bool,
    /// The thread faulting pages in ahead of the writes ([`WriteMap::populate_ahead`]): it
    /// takes byte ranges of the map and ends when this sender is dropped (it holds the map
    /// until then, past this map's own drop; a range it populates after the file shrank, or
    /// after the segment was removed, only fails the `madvise`).
    populator: Option<std::sync::mpsc::Sender<(usize, usize)>>,
    /// Where the pages handed to the populating thread (or passed over: see
    /// [`POPULATE_SLOW`]) end; never below the page of the last write through the map.
    populated: u64,
    /// When the last step was handed over (or passed over).
    stepped: std::time::Instant,
    /// `allocated` when allocating the lead failed for want of space: not tried again
    /// until the writes themselves have allocated more.
    lead_refused: Option<u64>,
}

#[cfg(target_os = "linux")]
impl FsWriteMap {
    /// Allocates blocks from `allocated` to at least `end`: a whole aligned step ahead when
    /// the disk has room, else the least aligned step that covers `end`.
    fn allocate(&mut self, end: u64) -> io::Result<()> {
        let map_len = self.map.len() as u64;
        let ahead = end
            .max(self.allocated + ALLOCATE_AHEAD)
            .next_multiple_of(ALLOCATE_AHEAD)
            .min(map_len);
        let least = end.next_multiple_of(ALLOCATE_MIN).min(map_len);
        let flags = rustix::fs::FallocateFlags::empty();
        let mut outcome = Ok(());
        for upto in [ahead, least] {
            outcome =
                rustix::fs::fallocate(&self.file, flags, self.allocated, upto - self.allocated);
            match outcome {
                Ok(()) => {
                    self.allocated = upto;
                    return Ok(());
                }
                Err(e) if e != rustix::io::Errno::NOSPC => break,
                Err(_) => {}
            }
        }
        match outcome {
            // No fallocate here (a file system without it, a sandbox without the call):
            // writes go through pwrite from now on.
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                self.fallback = true;
                Ok(())
            }
            other => other.map_err(io::Error::from),
        }
    }

    /// Hands the populating thread, if there is one, whole steps of the allocated pages up
    /// to a lead past `end` (and the rest of the map once the lead reaches its end), from the
    /// page of the write at `offset` on (the pages before it were written).
    fn populate_to(&mut self, offset: u64, end: u64) {
        let Some(tx) = &self.populator else {
            return;
        };
        // Pages before this write's were written already (by it, or by `pwrite`s of large
        // frames that populate nothing): never populated again.
        self.populated = self.populated.max(offset - offset % 4096);
        let map_len = self.map.len() as u64;
        let upto = end.saturating_add(POPULATE_LEAD).min(self.allocated);
        let due = |populated: u64| {
            populated < upto && (populated + POPULATE_STEP <= upto || upto == map_len)
        };
        if !due(self.populated) {
            return;
        }
        if self.stepped.elapsed() > POPULATE_SLOW {
            // Slow: pass the lead over; the writer faults its pages itself.
            self.populated = upto;
            self.stepped = std::time::Instant::now();
            return;
        }
        while due(self.populated) {
            let len = POPULATE_STEP.min(upto - self.populated);
            let (Ok(at), Ok(n)) = (usize::try_from(self.populated), usize::try_from(len)) else {
                return;
            };
            if tx.send((at, n)).is_err() {
                // The thread is gone (it could not populate): the writer faults pages itself.
                self.populator = None;
                return;
            }
            #[cfg(test)]
            tests::STEPS_HANDED.with(|s| s.set(s.get() + 1));
            self.populated += len;
        }
        self.stepped = std::time::Instant::now();
    }
}

#[cfg(target_os = "linux")]
impl WriteMap for FsWriteMap {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let out_of_range = || io::Error::new(io::ErrorKind::InvalidInput, "write past the map");
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(out_of_range)?;
        let map_len = self.map.len() as u64;
        if end > map_len {
            return Err(out_of_range());
        }
        // Only writes through the map fault; a `pwrite` fills the page cache itself, and
        // pages populated under it are zeroed for nothing and contended for.
        let through_map = !self.fallback && buf.len() < PWRITE_FROM;
        if !self.fallback {
            // Populating needs blocks a lead ahead; failing to allocate those (a nearly full
            // disk) only populates less, while failing to allocate this write's is its error.
            let lead = match self.populator {
                Some(_) if through_map && self.lead_refused != Some(self.allocated) => {
                    end.saturating_add(POPULATE_LEAD).min(map_len)
                }
                _ => end,
            };
            if lead > self.allocated {
                match self.allocate(lead) {
                    Ok(()) => {}
                    Err(_) if lead > end => {
                        self.lead_refused = Some(self.allocated);
                        if end > self.allocated {
                            self.allocate(end)?;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            if through_map {
                self.populate_to(offset, end);
            }
        }
        if !through_map {
            return FileExt::write_all_at(&self.file, buf, offset);
        }
        let at = usize::try_from(offset).map_err(|_| out_of_range())?;
        // SAFETY: `at .. at + buf.len()` is inside the map (`end <= map_len` above), and no
        // reference to the mapped bytes is made: readers hold views of the written prefix
        // only (bytes below the segment's end, which this writer never writes again), so
        // copying through a raw pointer into bytes past it aliases nothing.
        unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), self.map.as_mut_ptr().add(at), buf.len());
        }
        Ok(())
    }

    fn populate_ahead(&mut self) {
        if self.populator.is_some() || self.fallback {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel::<(usize, usize)>();
        let map = Arc::clone(&self.map);
        let spawned = std::thread::Builder::new()
            .name("annal-populate".into())
            .spawn(move || {
                for (at, len) in rx {
                    // MADV_POPULATE_WRITE (Linux 5.14): write faults on every page, as the
                    // writer's copy would take them, with no byte changed. Older kernels
                    // refuse it, and the writer then takes its faults itself.
                    if map
                        .advise_range(memmap2::Advice::PopulateWrite, at, len)
                        .is_err()
                    {
                        return;
                    }
                }
            });
        if spawned.is_ok() {
            self.populator = Some(tx);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    thread_local! {
        /// Steps this thread's write maps handed to their populating threads.
        pub(super) static STEPS_HANDED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn write_map_writes_what_reads_see_and_allocates_ahead() {
        write_map_round_trip(false);
    }

    #[test]
    fn write_map_populating_ahead_writes_what_reads_see() {
        write_map_round_trip(true);
    }

    #[allow(clippy::unwrap_used, clippy::expect_used, reason = "a test")]
    fn write_map_round_trip(populate: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("seg");
        let file = FsStorage::default().create(&path).unwrap();
        let len = 32 << 20;
        file.set_len(len).unwrap();
        // The test directory is on ext4 or tmpfs here (CI and development machines).
        let mut map = file
            .write_map()
            .unwrap()
            .expect("a write map on ext4 or tmpfs");
        if populate {
            map.populate_ahead();
        }
        let blocks = || std::fs::metadata(&path).unwrap().blocks() * 512;
        assert_eq!(blocks(), 0, "created sparse");

        map.write_at(b"first", 100).unwrap();
        assert!(blocks() >= ALLOCATE_AHEAD, "allocated ahead of the write");
        if populate {
            assert!(
                blocks() >= POPULATE_LEAD,
                "allocated ahead of the pages populated"
            );
        }
        assert!(blocks() < len, "not the whole file");
        // Across the allocation boundary, a frame large enough for pwrite, and the last byte.
        let straddle = vec![7u8; 64];
        map.write_at(&straddle, ALLOCATE_AHEAD - 32).unwrap();
        let large = vec![9u8; PWRITE_FROM];
        map.write_at(&large, 6 << 20).unwrap();
        map.write_at(b"!", len - 1).unwrap();
        assert_eq!(blocks(), len, "allocated up to the end, no further");

        let mut back = vec![0u8; 5];
        file.read_exact_at(&mut back, 100).unwrap();
        assert_eq!(back, b"first");
        let mut back = vec![0u8; 64];
        file.read_exact_at(&mut back, ALLOCATE_AHEAD - 32).unwrap();
        assert_eq!(back, straddle);
        let mut back = vec![0u8; PWRITE_FROM];
        file.read_exact_at(&mut back, 6 << 20).unwrap();
        assert_eq!(back, large);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len() as u64, len, "the length never changes");
        assert_eq!(on_disk[usize::try_from(len).unwrap() - 1], b'!');

        // Past the end is an error, not a fault or a longer file.
        let err = map.write_at(b"xy", len - 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(map.write_at(b"x", u64::MAX).is_err());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);

        // A segment filled front to back in small frames, as the log does: every byte reads
        // back (with the populating thread faulting pages in just ahead of the copies).
        let path = tmp.path().join("seg2");
        let file = FsStorage::default().create(&path).unwrap();
        let len = 9 << 20;
        file.set_len(len).unwrap();
        let mut map = file.write_map().unwrap().unwrap();
        if populate {
            map.populate_ahead();
        }
        STEPS_HANDED.with(|s| s.set(0));
        let mut expected = vec![0u8; usize::try_from(len).unwrap()];
        let mut at = 0usize;
        let mut i = 0u32;
        while at + 333 <= expected.len() {
            let frame: Vec<u8> = (0..333u32).map(|k| (k ^ i).to_le_bytes()[0] | 1).collect();
            map.write_at(&frame, at as u64).unwrap();
            expected[at..at + 333].copy_from_slice(&frame);
            at += 333;
            i += 1;
        }
        drop(map);
        assert!(
            std::fs::read(&path).unwrap() == expected,
            "every frame reads back"
        );
        // Whole steps, not one hand-over per write: 9 MiB is three steps (the last short).
        let steps = STEPS_HANDED.with(std::cell::Cell::get);
        if populate {
            assert!((1..=3).contains(&steps), "{steps} steps handed over");
        } else {
            assert_eq!(steps, 0);
        }
    }

    /// A new 32 MiB file `name` in `dir` and its write map, populating ahead, with this
    /// thread's count of steps handed over reset.
    #[allow(clippy::unwrap_used, reason = "a test")]
    fn populating(dir: &Path, name: &str) -> (Box<dyn StorageFile>, Box<dyn WriteMap>) {
        let file = FsStorage::default().create(&dir.join(name)).unwrap();
        file.set_len(32 << 20).unwrap();
        let mut map = file.write_map().unwrap().unwrap();
        map.populate_ahead();
        STEPS_HANDED.with(|s| s.set(0));
        (file, map)
    }

    /// A writer slower than a step a second populates nothing ahead (the zeros would be
    /// written back before its data), and populates again once it is fast; frames written
    /// with `pwrite` populate nothing.
    #[test]
    fn populating_ahead_passes_over_slow_writers_and_pwrite_frames() {
        let tmp = tempfile::tempdir().unwrap();
        let (file, mut map) = populating(tmp.path(), "seg");
        std::thread::sleep(POPULATE_SLOW + std::time::Duration::from_millis(100));
        map.write_at(b"late", 100).unwrap();
        assert_eq!(
            STEPS_HANDED.with(std::cell::Cell::get),
            0,
            "slow: passed over"
        );
        // Fast again: a step's worth of writes at once, and steps are handed over.
        let frame = vec![5u8; 4000];
        let mut at = 4096u64;
        while at < 12 << 20 {
            map.write_at(&frame, at).unwrap();
            at += 4000;
        }
        assert!(
            STEPS_HANDED.with(std::cell::Cell::get) >= 1,
            "fast: populated again"
        );
        let mut back = vec![0u8; 4];
        file.read_exact_at(&mut back, 100).unwrap();
        assert_eq!(back, b"late");

        // Frames large enough for `pwrite` fault nothing: nothing is populated for them.
        let (_file, mut map) = populating(tmp.path(), "seg2");
        map.write_at(b"first", 0).unwrap();
        STEPS_HANDED.with(|s| s.set(0));
        let large = vec![6u8; PWRITE_FROM];
        for k in 1..=300u64 {
            map.write_at(&large, k * PWRITE_FROM as u64).unwrap();
        }
        assert_eq!(STEPS_HANDED.with(std::cell::Cell::get), 0);
        // A small frame after them populates from its own page on, not the pages the large
        // ones wrote: the steps of one lead.
        map.write_at(b"small", 301 * PWRITE_FROM as u64).unwrap();
        let steps = STEPS_HANDED.with(std::cell::Cell::get);
        assert!((1..=2).contains(&steps), "{steps} steps handed over");
    }
}
