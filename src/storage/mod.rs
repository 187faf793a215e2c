//! The I/O seam: every file access annal makes goes through [`Storage`] and [`StorageFile`].
//!
//! [`FsStorage`] is the real implementation over `std::fs`. Tests put a simulated disk
//! underneath instead, one that can lose unsynced writes, tear writes and fail calls, so that
//! crash safety is shown by crashing.
//!
//! Methods return plain `std::io::Result`; the caller adds the path and operation to the error.
#![allow(
    unsafe_code,
    reason = "the storage module maps files (FsStorage) and hands out views of the maps \
              (FileMap): every unsafe block has a SAFETY comment"
)]

mod fs;
#[cfg(any(test, feature = "sim"))]
mod sim;

use std::any::Any;
use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use bytes::Bytes;

pub use fs::FsStorage;
#[cfg(any(test, feature = "sim"))]
pub use sim::{SimDisk, WriteFault};

/// A directory-level file system.
pub trait Storage: Send + Sync + Debug {
    /// Creates `path` and its parents if they do not exist.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates a new file, failing if it exists; opened for reading and writing.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AlreadyExists`] when the file exists; the operating system's error
    /// otherwise.
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file, for writing too when `write` is true.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when there is no such file; the operating system's error
    /// otherwise.
    fn open(&self, path: &Path, write: bool) -> io::Result<Box<dyn StorageFile>>;
    /// Removes a file.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when there is no such file; the operating system's error
    /// otherwise.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to`.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created, renamed, removed files) durable.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries in a directory, in no particular order.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when the directory does not exist; the operating system's
    /// error otherwise.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Takes an exclusive lock on `path` (created if missing), held until the guard is dropped.
    /// Fails with [`io::ErrorKind::WouldBlock`] when another holder has it.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] when another holder has it; the operating system's error
    /// otherwise.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>>;
    /// Whether files here can be mapped shared between processes
    /// ([`StorageFile::shared_words`]): what followers need. The default is false.
    fn shares_memory(&self) -> bool {
        false
    }
    /// The Unix permission bits of `path` (`mode & 0o7777`), or `None` (the default) where
    /// files have no such thing, as on a simulated disk. Opening a store uses it to report
    /// files that others may read.
    ///
    /// # Errors
    ///
    /// The operating system's error ([`io::ErrorKind::NotFound`] for a missing path).
    fn permissions(&self, path: &Path) -> io::Result<Option<u32>> {
        let _ = path;
        Ok(None)
    }
}

/// An open file.
#[allow(clippy::len_without_is_empty)] // a file's length is data, not a collection's size
pub trait StorageFile: Send + Sync + Debug {
    /// Current length in bytes.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` past the end.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::UnexpectedEof`] past the end of the file; the operating system's error
    /// otherwise.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. Not durable until [`sync_data`](Self::sync_data).
    ///
    /// # Errors
    ///
    /// The operating system's error (EIO, ENOSPC, ...): the bytes at `offset` are then
    /// unspecified.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the length, zero-filling when it grows.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes written data (and the length) durable: `fdatasync`.
    ///
    /// # Errors
    ///
    /// The operating system's error. After a failed sync the written data may be lost even
    /// though it reads back: callers must not retry as if nothing happened.
    fn sync_data(&self) -> io::Result<()>;
    /// A read-only shared memory map of the whole file as it is now, which keeps reflecting
    /// later writes within that length. `None` when the implementation has no such view;
    /// callers then read with [`read_exact_at`](Self::read_exact_at).
    ///
    /// # Errors
    ///
    /// The operating system's error (`mmap`, ENOMEM past the process's map limit).
    fn map(&self) -> io::Result<Option<FileMap>>;
    /// An offset past which the file holds no data: only holes, which read as zeros. The
    /// default is the length; [`FsStorage`] finds the end of the last data region
    /// (`SEEK_DATA`/`SEEK_HOLE`), so that an open reads only what was written.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn data_end(&self) -> io::Result<u64> {
        self.len()
    }
    /// Somewhere to write the file through without a system call per write: a shared
    /// writable map of the file's current length, on which writes land in the same page
    /// cache as [`write_all_at`](Self::write_all_at) and become durable with
    /// [`sync_data`](Self::sync_data) likewise. `None` (the default) when the implementation
    /// has none; the log then calls `write_all_at`.
    ///
    /// # Errors
    ///
    /// The operating system's error; a caller may fall back to
    /// [`write_all_at`](Self::write_all_at).
    fn write_map(&self) -> io::Result<Option<Box<dyn WriteMap>>> {
        Ok(None)
    }
    /// The file's first `count` 64-bit words as atomics, shared with every process that maps
    /// the same file: how a writer publishes its acknowledged position to followers in other
    /// processes without a system call (and without a sync: the words are never durable
    /// data). The file must be at least `count * 8` bytes long. `None` (the default) when the
    /// implementation has no shared memory.
    ///
    /// # Errors
    ///
    /// The operating system's error (`mmap`), or a file shorter than `count` words.
    fn shared_words(&self, count: usize) -> io::Result<Option<SharedWords>> {
        let _ = count;
        Ok(None)
    }
}

/// 64-bit words of a file mapped shared, read and written atomically; from
/// [`StorageFile::shared_words`]. A map made read-only (a follower that may only read the
/// file) refuses stores.
pub struct SharedWords {
    ptr: *const AtomicU64,
    count: usize,
    writable: bool,
    /// Keeps the mapping alive.
    _owner: Box<dyn Any + Send + Sync>,
}

// SAFETY: the words are only ever accessed through atomic operations, which are sound from
// any thread (and, the mapping being shared, from any process); the mapping lives as long as
// `_owner`, which is `Send + Sync`.
unsafe impl Send for SharedWords {}
// SAFETY: as for `Send`: every access is atomic.
unsafe impl Sync for SharedWords {}

impl std::fmt::Debug for SharedWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWords")
            .field("count", &self.count)
            .field("writable", &self.writable)
            .finish()
    }
}

impl SharedWords {
    /// `count` words at `ptr`, kept mapped by `owner`; `writable` when the memory may be
    /// written.
    ///
    /// # Safety
    ///
    /// `ptr` must be 8-byte aligned and `ptr .. ptr + count` readable memory (and writable,
    /// when `writable`) for as long as `owner` lives, accessed by anyone else only atomically.
    pub unsafe fn from_raw(
        ptr: *const AtomicU64,
        count: usize,
        writable: bool,
        owner: Box<dyn Any + Send + Sync>,
    ) -> Self {
        SharedWords {
            ptr,
            count,
            writable,
            _owner: owner,
        }
    }

    fn get(&self, i: usize) -> Option<&AtomicU64> {
        // SAFETY: `i < count`, so the word lies inside the mapping, which lives as long as
        // `self`; `from_raw`'s caller guaranteed alignment and atomic-only access.
        (i < self.count).then(|| unsafe { &*self.ptr.add(i) })
    }

    /// Word `i` (`None` past the end), loaded with acquire ordering. A relaxed load then a
    /// fence, which is also sound on read-only memory.
    pub fn load(&self, i: usize) -> Option<u64> {
        let v = self.get(i)?.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        Some(v)
    }

    /// Stores `v` in word `i` with release ordering; false (nothing stored) past the end or
    /// on a read-only map.
    pub fn store(&self, i: usize, v: u64) -> bool {
        match self.get(i) {
            Some(w) if self.writable => {
                w.store(v, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// Whether stores are possible.
    pub fn is_writable(&self) -> bool {
        self.writable
    }
}

/// A writable view of one file, from [`StorageFile::write_map`].
pub trait WriteMap: Send + Sync + Debug {
    /// Writes all of `buf` at `offset`, within the file's length when the view was made. An
    /// error (no space, say) leaves the bytes at `offset` unspecified, as a failed
    /// `write_all_at` would; it never faults.
    ///
    /// # Errors
    ///
    /// A write past the view's length, or the operating system's error (ENOSPC when blocks
    /// cannot be allocated).
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// From now on, faults the map's pages in on a thread of its own a little ahead of the
    /// writes, so the writing thread takes no page faults (the default does nothing). The
    /// pages made writable ahead are dirty and hold zeros until written: a sync of the file,
    /// or the kernel's own writeback of a page left long enough, writes them too. So the log
    /// asks for this only under policies that do not sync on every append, and
    /// [`FsStorage`]'s map populates nothing ahead of a writer too slow to gain from it.
    fn populate_ahead(&mut self) {}
}

/// A file that does not exist: empty, and every write fails. Stands for the first segment of
/// a store opened read-only before that segment was created.
#[derive(Debug)]
pub(crate) struct NoFile;

impl StorageFile for NoFile {
    fn len(&self) -> io::Result<u64> {
        Ok(0)
    }
    fn read_exact_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }
    fn write_all_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::ErrorKind::PermissionDenied.into())
    }
    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(io::ErrorKind::PermissionDenied.into())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn map(&self) -> io::Result<Option<FileMap>> {
        Ok(None)
    }
}

/// A read-only shared memory map of a file, from [`StorageFile::map`].
///
/// It holds no reference to the mapped bytes, only where they are: the file may be written
/// (by this process's writer, or by another process) while it is mapped, and Rust requires
/// the bytes behind a reference not to change while it lives. So views are made only of a
/// prefix that the caller knows is written for good ([`prefix`](Self::prefix),
/// [`prefix_bytes`](Self::prefix_bytes)), never of the whole map.
pub struct FileMap {
    ptr: *const u8,
    len: usize,
    /// Keeps the mapping alive (unmapped when the last view and this are gone).
    owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: `FileMap` only reads the mapping, through views whose contract (`prefix`,
// `prefix_bytes`) guarantees the bytes do not change; the mapping lives as long as `owner`,
// which is `Send + Sync`.
unsafe impl Send for FileMap {}
// SAFETY: as for `Send`: shared access only reads bytes that never change.
unsafe impl Sync for FileMap {}

impl std::fmt::Debug for FileMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileMap").field("len", &self.len).finish()
    }
}

impl FileMap {
    /// A map of `len` bytes at `ptr`, kept mapped by `owner`.
    ///
    /// # Safety
    ///
    /// `ptr .. ptr + len` must be readable memory for as long as `owner` lives.
    pub unsafe fn from_raw(ptr: *const u8, len: usize, owner: Arc<dyn Any + Send + Sync>) -> Self {
        FileMap { ptr, len, owner }
    }

    /// An empty map.
    pub fn empty() -> Self {
        FileMap {
            ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
            len: 0,
            owner: Arc::new(()),
        }
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `end` bytes (at most the map's length), borrowed.
    ///
    /// # Safety
    ///
    /// No byte of the file below `end` may change while the slice lives.
    pub unsafe fn prefix(&self, end: usize) -> &[u8] {
        // SAFETY: the range is inside the mapping (kept alive by `self.owner` for `&self`'s
        // lifetime), and the caller guarantees its bytes do not change meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr, end.min(self.len)) }
    }

    /// The first `end` bytes (at most the map's length), as a [`Bytes`] that keeps the
    /// mapping alive and can outlive this map and the file's handle.
    ///
    /// # Safety
    ///
    /// No byte of the file below `end` may ever change again, by any writer.
    pub unsafe fn prefix_bytes(&self, end: usize) -> Bytes {
        Bytes::from_owner(Prefix {
            ptr: self.ptr,
            len: end.min(self.len),
            _owner: Arc::clone(&self.owner),
        })
    }
}

/// The owner behind [`FileMap::prefix_bytes`]: a prefix of a mapping, and the mapping.
struct Prefix {
    ptr: *const u8,
    len: usize,
    _owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: see `FileMap`'s: the prefix is read-only and never changes.
unsafe impl Send for Prefix {}

impl AsRef<[u8]> for Prefix {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `FileMap::prefix_bytes`'s caller guaranteed these bytes never change, and
        // `_owner` keeps them mapped as long as this lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The process id a lock file names (what [`Storage::lock`] writes in it for whoever tries
/// next), if it names one.
pub(crate) fn lock_holder(storage: &dyn Storage, path: &Path) -> Option<u32> {
    let (bytes, _) = read_data(storage, path).ok()??;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}

/// A file's bytes up to the end of its data ([`StorageFile::data_end`]) and its length;
/// `None` when there is no such file.
pub(crate) fn read_data(
    storage: &dyn Storage,
    path: &Path,
) -> crate::Result<Option<(Vec<u8>, u64)>> {
    let f = match storage.open(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::Error::io("open", path, e)),
    };
    let len = f.len().map_err(|e| crate::Error::io("stat", path, e))?;
    let end = f
        .data_end()
        .map_err(|e| crate::Error::io("seek data", path, e))?
        .min(len);
    let mut buf = vec![0u8; usize::try_from(end).unwrap_or(usize::MAX)];
    f.read_exact_at(&mut buf, 0)
        .map_err(|e| crate::Error::io("read", path, e))?;
    Ok(Some((buf, len)))
}

/// Removes `path` if it exists (a leftover temporary file, say).
pub(crate) fn remove_if_exists(storage: &dyn Storage, path: &Path) -> crate::Result<()> {
    match storage.remove(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(crate::Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Whether `name` is one of annal's own temporary files, `<file>.tmp` for a file annal
/// replaces or creates that way: `STATE`, a segment (`NNNNNNNNNN.seg`), an index checkpoint
/// (`NNNNNNNNNN.idx`), a snapshot file (`NNNNNNNNNN.snap`), a durable subscription
/// (`NAME.sub`) or a projection checkpoint (`NAME.proj`). Recovery removes only these: any
/// other `.tmp` in the directory is someone else's.
pub(crate) fn is_own_temp_name(name: &str) -> bool {
    let Some(file) = name.strip_suffix(".tmp") else {
        return false;
    };
    if file == "STATE" {
        return true;
    }
    let numbered = |suffix: &str| {
        file.strip_suffix(suffix)
            .is_some_and(|d| d.len() == 10 && d.bytes().all(|b| b.is_ascii_digit()))
    };
    let named = |suffix: &str| {
        file.strip_suffix(suffix)
            .is_some_and(|n| crate::es::durable::validate_name("", n).is_ok())
    };
    numbered(".seg") || numbered(".idx") || numbered(".snap") || named(".sub") || named(".proj")
}

/// Replaces `dir/name` with `bytes`, atomically and durably: writes `name.tmp`, syncs it,
/// renames it over `name` and syncs the directory. A crash leaves the old file or the new one,
/// never a mix (a leftover `.tmp` is removed on the next open).
pub(crate) fn replace_file(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> crate::Result<std::path::PathBuf> {
    create_durably(storage, dir, name, bytes, 0).map(|(path, _)| path)
}

/// [`replace_file`], with the file extended (zero-filled, sparse) to `len` bytes when that is
/// longer than `bytes`; returns the new file's path and an open handle to it.
pub(crate) fn create_durably(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    len: u64,
) -> crate::Result<(std::path::PathBuf, Box<dyn StorageFile>)> {
    use crate::Error;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    // A leftover from a creation that crashed before its rename holds nothing acknowledged.
    remove_if_exists(storage, &tmp)?;
    let file = storage
        .create(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    let filled = (|| {
        file.write_all_at(bytes, 0)
            .map_err(|e| Error::io("write", &tmp, e))?;
        if len > bytes.len() as u64 {
            file.set_len(len)
                .map_err(|e| Error::io("preallocate", &tmp, e))?;
        }
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", &tmp, e))?;
        storage
            .rename(&tmp, &path)
            .map_err(|e| Error::io("rename", &tmp, e))
    })();
    if let Err(e) = filled {
        // Best effort, so a full disk leaves no empty `.tmp` behind; the first error is
        // the one worth reporting, and the next open removes a leftover anyway.
        let _ = storage.remove(&tmp);
        return Err(e);
    }
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_temp_names_are_annals_files_plus_tmp() {
        for own in [
            "STATE.tmp",
            "0000000002.seg.tmp",
            "0000000001.idx.tmp",
            "0000000013.snap.tmp",
            "orders.sub.tmp",
            "cart-activity.proj.tmp",
            "v1.2_x.proj.tmp",
        ] {
            assert!(is_own_temp_name(own), "{own}");
        }
        for other in [
            "backup.tmp",
            "notes.txt.tmp",
            "STATE",
            "state.tmp",
            "STATE.tmp.tmp",
            ".tmp",
            "0000000002.seg",
            "2.seg.tmp",
            "00000000002.seg.tmp",
            "000000000x.seg.tmp",
            "0000000001.idx.bak.tmp",
            ".sub.tmp",
            ".hidden.proj.tmp",
            "a b.sub.tmp",
            "LOCK.tmp",
        ] {
            assert!(!is_own_temp_name(other), "{other}");
        }
        let long = format!("{}.sub.tmp", "n".repeat(129));
        assert!(!is_own_temp_name(&long));
    }
}
