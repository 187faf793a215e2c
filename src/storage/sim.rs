//! A simulated disk for crash testing: a [`Storage`] that keeps, per file, what is durable and
//! what is only written, and can crash, fail and rot on command.
//!
//! - **Crash** ([`SimDisk::crash`]): every write since a file's last `sync_data` is lost, kept,
//!   kept in part (a random prefix, or a random subset: page writeback has no order), or torn
//!   (at a 512-byte sector boundary or at any byte), chosen per file from the disk's seed.
//!   Names created, renamed or removed since their directory's last `sync_dir` revert.
//!   Handles from before the crash fail from then on; reopen on the returned disk.
//! - **Fail** ([`SimDisk::fail_write_after`], [`SimDisk::fail_sync_after`]): the n-th next
//!   write returns EIO, ENOSPC, or writes only part of its bytes first; the n-th next
//!   `sync_data` returns EIO (and, as Linux may, forgets the dirty data it failed to write).
//! - **Halt** ([`SimDisk::halt_after`]): from the n-th next operation that changes the disk
//!   (create, write, set_len, sync, remove, rename, directory sync) on, every one fails with
//!   EIO: the machine is dead, and [`SimDisk::crash`] brings it back. Stepping `n` through
//!   every operation of some work crashes it at each one.
//! - **Rot** ([`SimDisk::flip_bit`]): flips a bit of a file's durable and visible bytes.
//!
//! Everything is deterministic given the seed and the sequence of calls.

use std::any::Any;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileMap, Storage, StorageFile, WriteMap};

/// One pending change to a file's contents.
#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default, Clone)]
struct File {
    /// What reads see.
    live: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Changes since the last `sync_data`, in order.
    pending: Vec<Op>,
}

/// How a write fails when told to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// EIO; nothing written.
    Io,
    /// ENOSPC; nothing written.
    NoSpace,
    /// Part of the bytes are written, then EIO.
    Short,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    rng: u64,
    files: BTreeMap<u64, File>,
    next_id: u64,
    /// Names visible now.
    names: BTreeMap<PathBuf, u64>,
    /// Names as of each directory's last sync.
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: Vec<PathBuf>,
    locks: Vec<PathBuf>,
    write_fault: Option<(u64, WriteFault)>,
    sync_fault: Option<u64>,
    writes: u64,
    syncs: u64,
    /// Operations that change the disk, so far (see [`SimDisk::halt_after`]).
    changes: u64,
    /// The change from which every one fails, until the next crash.
    halt_at: Option<u64>,
    /// Files offer a write map (see [`SimDisk::set_write_maps`]).
    no_write_maps: bool,
}

impl State {
    fn next(&mut self) -> u64 {
        // splitmix64: small, fast, and good enough to pick crash outcomes.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// Counts an operation that changes the disk; EIO once the disk is halted.
    fn change(&mut self) -> io::Result<()> {
        self.changes += 1;
        match self.halt_at {
            Some(at) if self.changes >= at => Err(io::Error::from_raw_os_error(5)),
            _ => Ok(()),
        }
    }
}

fn apply(buf: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let end = crate::cast::usize_from(*offset) + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            if let Some(dst) = buf.get_mut(crate::cast::usize_from(*offset)..end) {
                dst.copy_from_slice(data);
            }
        }
        Op::SetLen(len) => buf.resize(crate::cast::usize_from(*len), 0),
    }
}

/// A simulated disk; cheap to clone (clones share the disk).
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
    generation: u64,
}

#[derive(Debug, Clone)]
struct SimFile {
    state: Arc<Mutex<State>>,
    generation: u64,
    id: u64,
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    generation: u64,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if st.generation == self.generation {
            st.locks.retain(|p| p != &self.path);
        }
    }
}

fn stale() -> io::Error {
    io::Error::other("simulated disk: handle from before a crash")
}

impl SimDisk {
    /// An empty disk whose random choices follow `seed`.
    pub fn new(seed: u64) -> Self {
        let st = State {
            rng: seed,
            ..State::default()
        };
        SimDisk {
            state: Arc::new(Mutex::new(st)),
            generation: 0,
        }
    }

    /// Crashes the machine: keeps what was durable plus a random part of the rest (see the
    /// module docs), and returns the disk as it comes back. Every handle from before fails.
    pub fn crash(&self) -> SimDisk {
        let mut st = self.state.lock();
        st.generation += 1;
        st.locks.clear();
        st.write_fault = None;
        st.sync_fault = None;
        st.halt_at = None;
        st.names = st.durable_names.clone();
        let ids: Vec<u64> = st.files.keys().copied().collect();
        for id in ids {
            let mode = st.below(6);
            let Some(file) = st.files.get(&id).cloned() else {
                continue;
            };
            let mut content = file.durable.clone();
            let n = file.pending.len() as u64;
            match mode {
                // Nothing since the last sync reached the disk.
                0 => {}
                // Everything did.
                1 => file.pending.iter().for_each(|op| apply(&mut content, op)),
                // A prefix did.
                2 => {
                    let k = crate::cast::usize_from(st.below(n + 1));
                    file.pending
                        .iter()
                        .take(k)
                        .for_each(|op| apply(&mut content, op));
                }
                // Any subset did, in any order (whole writes).
                3 => {
                    for op in &file.pending {
                        if st.below(2) == 0 {
                            apply(&mut content, op);
                        }
                    }
                }
                // A prefix, then the next write torn: some of its sectors, or some of its bytes.
                _ => {
                    let k = crate::cast::usize_from(st.below(n + 1));
                    file.pending
                        .iter()
                        .take(k)
                        .for_each(|op| apply(&mut content, op));
                    if let Some(Op::Write { offset, data }) = file.pending.get(k) {
                        if mode == 4 {
                            for (i, sector) in data.chunks(512).enumerate() {
                                if st.below(2) == 0 {
                                    let op = Op::Write {
                                        offset: offset + (i * 512) as u64,
                                        data: sector.to_vec(),
                                    };
                                    apply(&mut content, &op);
                                }
                            }
                        } else {
                            let cut = crate::cast::usize_from(st.below(data.len() as u64 + 1));
                            let op = Op::Write {
                                offset: *offset,
                                data: data.get(..cut).unwrap_or_default().to_vec(),
                            };
                            apply(&mut content, &op);
                        }
                    }
                }
            }
            if let Some(f) = st.files.get_mut(&id) {
                f.live = content.clone();
                f.durable = content;
                f.pending.clear();
            }
        }
        SimDisk {
            state: Arc::clone(&self.state),
            generation: st.generation,
        }
    }

    /// Makes the `n`-th next write (1: the next one) fail with `fault`.
    pub fn fail_write_after(&self, n: u64, fault: WriteFault) {
        let mut st = self.state.lock();
        let at = st.writes + n.max(1);
        st.write_fault = Some((at, fault));
    }

    /// Makes the `n`-th next `sync_data` (1: the next one) fail with EIO.
    pub fn fail_sync_after(&self, n: u64) {
        let mut st = self.state.lock();
        let at = st.syncs + n.max(1);
        st.sync_fault = Some(at);
    }

    /// Halts the disk at the `n`-th next operation that changes it (1: the next one): that
    /// one and every later one fail with EIO, until [`crash`](Self::crash).
    pub fn halt_after(&self, n: u64) {
        let mut st = self.state.lock();
        let at = st.changes + n.max(1);
        st.halt_at = Some(at);
    }

    /// How many operations that change the disk were made so far (failed ones included).
    pub fn changes(&self) -> u64 {
        self.state.lock().changes
    }

    /// Whether files offer a write map ([`StorageFile::write_map`]; on by default). Its writes
    /// behave exactly like `write_all_at`; turning it off drives the callers' other path.
    pub fn set_write_maps(&self, on: bool) {
        self.state.lock().no_write_maps = !on;
    }

    /// Cancels write and sync failures that have not happened yet.
    pub fn clear_faults(&self) {
        let mut st = self.state.lock();
        st.write_fault = None;
        st.sync_fault = None;
    }

    /// Flips bit `bit` (0-7) of byte `offset` of `path`, durably: rot.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> bool {
        let mut st = self.state.lock();
        let Some(&id) = st.names.get(path) else {
            return false;
        };
        let Some(f) = st.files.get_mut(&id) else {
            return false;
        };
        let mut flipped = false;
        for buf in [&mut f.live, &mut f.durable] {
            if let Some(b) = buf.get_mut(crate::cast::usize_from(offset)) {
                *b ^= 1 << (bit % 8);
                flipped = true;
            }
        }
        flipped
    }

    /// The visible bytes of `path`, if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.lock();
        let id = st.names.get(path)?;
        st.files.get(id).map(|f| f.live.clone())
    }

    /// Paths of the files that exist now.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.lock().names.keys().cloned().collect()
    }

    /// A random number from the disk's seeded generator (for tests that want one stream of
    /// randomness).
    pub fn random(&self, below: u64) -> u64 {
        self.state.lock().below(below)
    }

    fn check(&self, st: &State) -> io::Result<()> {
        if st.generation == self.generation {
            Ok(())
        } else {
            Err(stale())
        }
    }

    fn file(&self, id: u64) -> Box<dyn StorageFile> {
        Box::new(SimFile {
            state: Arc::clone(&self.state),
            generation: self.generation,
            id,
        })
    }
}

impl Storage for SimDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        self.check(&st)?;
        if !st.dirs.iter().any(|d| d == path) {
            st.dirs.push(path.to_path_buf());
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut st = self.state.lock();
        self.check(&st)?;
        st.change()?;
        if st.names.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        st.next_id += 1;
        let id = st.next_id;
        st.files.insert(id, File::default());
        st.names.insert(path.to_path_buf(), id);
        Ok(self.file(id))
    }

    fn open(&self, path: &Path, _write: bool) -> io::Result<Box<dyn StorageFile>> {
        let st = self.state.lock();
        self.check(&st)?;
        let id = *st.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(self.file(id))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        self.check(&st)?;
        st.change()?;
        st.names
            .remove(path)
            .map(|_| ())
            .ok_or(io::ErrorKind::NotFound.into())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        self.check(&st)?;
        st.change()?;
        let id = st.names.remove(from).ok_or(io::ErrorKind::NotFound)?;
        st.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        self.check(&st)?;
        st.change()?;
        let in_dir = |p: &Path| p.parent() == Some(dir);
        st.durable_names.retain(|p, _| !in_dir(p));
        let live: Vec<(PathBuf, u64)> = st
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, &id)| (p.clone(), id))
            .collect();
        st.durable_names.extend(live);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        self.check(&st)?;
        if !st.dirs.iter().any(|d| d == dir) && !st.names.keys().any(|p| p.parent() == Some(dir)) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        let mut st = self.state.lock();
        self.check(&st)?;
        if st.locks.iter().any(|p| p == path) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        st.locks.push(path.to_path_buf());
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            generation: self.generation,
            path: path.to_path_buf(),
        }))
    }
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.state.lock();
        if st.generation != self.generation {
            return Err(stale());
        }
        f(&mut st, self.id)
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|st, id| Ok(st.files.get(&id).map_or(0, |f| f.live.len() as u64)))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|st, id| {
            let f = st.files.get(&id).ok_or(io::ErrorKind::NotFound)?;
            let src = f
                .live
                .get(crate::cast::usize_from(offset)..crate::cast::usize_from(offset) + buf.len())
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|st, id| {
            st.change()?;
            st.writes += 1;
            let fault = match st.write_fault {
                Some((at, fault)) if at == st.writes => {
                    st.write_fault = None;
                    Some(fault)
                }
                _ => None,
            };
            let data = match fault {
                Some(WriteFault::Io) => return Err(io::Error::from_raw_os_error(5)),
                Some(WriteFault::NoSpace) => return Err(io::Error::from_raw_os_error(28)),
                Some(WriteFault::Short) => buf.get(..buf.len() / 2).unwrap_or_default(),
                None => buf,
            };
            let op = Op::Write {
                offset,
                data: data.to_vec(),
            };
            let f = st.files.get_mut(&id).ok_or(io::ErrorKind::NotFound)?;
            apply(&mut f.live, &op);
            f.pending.push(op);
            match fault {
                Some(_) => Err(io::Error::from_raw_os_error(5)),
                None => Ok(()),
            }
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|st, id| {
            st.change()?;
            let f = st.files.get_mut(&id).ok_or(io::ErrorKind::NotFound)?;
            let op = Op::SetLen(len);
            apply(&mut f.live, &op);
            f.pending.push(op);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|st, id| {
            st.change()?;
            st.syncs += 1;
            if st.sync_fault == Some(st.syncs) {
                st.sync_fault = None;
                // Like Linux after a failed writeback: the pages are dropped from the dirty
                // set, so a later sync "succeeds" without writing them.
                if let Some(f) = st.files.get_mut(&id) {
                    f.pending.clear();
                }
                return Err(io::Error::from_raw_os_error(5));
            }
            let f = st.files.get_mut(&id).ok_or(io::ErrorKind::NotFound)?;
            let pending = std::mem::take(&mut f.pending);
            for op in &pending {
                apply(&mut f.durable, op);
            }
            Ok(())
        })
    }

    fn map(&self) -> io::Result<Option<FileMap>> {
        Ok(None)
    }

    fn write_map(&self) -> io::Result<Option<Box<dyn WriteMap>>> {
        if self.state.lock().no_write_maps {
            return Ok(None);
        }
        // A stand-in with the same faults and crash behaviour as `write_all_at`, so that the
        // simulation drives the log's write-map path too.
        Ok(Some(Box::new(SimWriteMap(self.clone()))))
    }
}

/// [`SimFile`]'s write map: writes go through the simulated file's `write_all_at`.
#[derive(Debug)]
struct SimWriteMap(SimFile);

impl WriteMap for SimWriteMap {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
}
