//! Snapshot files: saved aggregate states, so loads replay only the events after them.
//!
//! Snapshots are a cache over the log, never a source of truth. They live in append-only,
//! CRC-framed files `NNNNNNNNNN.snap` in the store directory, are written without fsync and,
//! up to 64 KiB at a time, in batches (a lost snapshot costs a longer replay, nothing else;
//! until its batch is written a snapshot is found in memory), and are ignored whenever anything about
//! them is off: checksum, aggregate type, schema version, codec, or the fingerprint of the
//! event they claim to cover (which catches a snapshot that outlived its events in a power
//! loss). Only the newest `snapshots_kept` per stream and aggregate type are retained; when
//! dropped ones outweigh live ones the files are compacted into a new one, synced before the
//! old files are deleted unless the policy is `FsyncPolicy::Never` (a scavenge's erasure of
//! snapshots is synced under every policy).
#![deny(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use foldhash::HashMap;
use parking_lot::Mutex;
use smol_str::SmolStr;

use crate::engine::Engine;
use crate::engine::format::snapshot_file::{Snapshot, decode, encode, file_name, parse_file_name};
use crate::engine::read::ReadOptions;
use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::storage::{Storage, StorageFile};

/// A snapshot file stops taking new records past this size.
const FILE_MAX: u64 = 64 * 1024 * 1024;
/// Compaction waits until at least this many dead bytes have accumulated.
const COMPACT_MIN_DEAD: u64 = 1024 * 1024;
/// Snapshots whose state is kept in memory are written in batches of about this size (one
/// write for many): until then a load finds them in memory, and a crash loses them, which
/// costs a longer replay.
const BATCH: usize = 64 * 1024;
/// A compaction reads and writes the snapshot files in pieces of this size.
const COPY_CHUNK: usize = 1024 * 1024;
/// The file number of an entry still in the batch (its offset is within the batch).
const PENDING: u32 = u32::MAX;
/// A snapshot's state is kept in memory, beside its place in the files, up to this size...
const CACHE_ONE_MAX: usize = 64 * 1024;
/// ...while the kept states total at most this much: a load of a recent snapshot then reads
/// no file.
const CACHE_TOTAL_MAX: usize = 32 * 1024 * 1024;
/// What a snapshot is of: which aggregate type, state schema and codec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Kind {
    pub aggregate: Arc<str>,
    pub schema: u32,
    pub codec: Arc<str>,
}

/// Where a snapshot is, and what it is of.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub kind: Kind,
    pub version: u64,
    file: u32,
    offset: u64,
    len: u64,
    /// Checked against the log during this run (or written in it, for an event read from
    /// the log): the log cannot lose the event while the store is open, so it need not be
    /// checked again.
    verified: bool,
    /// Its state, for a snapshot written in this run (within the cache's bounds).
    state: Option<Arc<[u8]>>,
}

impl Entry {
    fn cached_bytes(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.len())
    }
}

#[derive(Debug)]
struct File {
    handle: Arc<dyn StorageFile>,
    path: PathBuf,
    len: u64,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<u32, File>,
    /// The file new snapshots are appended to; `None`: start a new one.
    active: Option<u32>,
    /// Per stream, retained snapshots ordered by version.
    by_stream: HashMap<SmolStr, Vec<Entry>>,
    live_bytes: u64,
    total_bytes: u64,
    /// Bytes of the states kept in entries.
    cached_bytes: usize,
    /// Encoded records not yet written, and the stream of each with its offset in `batch`.
    batch: Vec<u8>,
    batched: Vec<(SmolStr, u64)>,
    /// The distinct (aggregate, codec) names, shared by every entry of that kind.
    names: Vec<(Arc<str>, Arc<str>)>,
    /// Opened read-only: snapshots are read, never written.
    read_only: bool,
}

/// All snapshots of a store.
#[derive(Debug)]
pub(crate) struct SnapshotStore {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    keep: usize,
    /// A compaction to drop dead records syncs its new file before it deletes the old ones
    /// (every policy but `FsyncPolicy::Never`, which syncs only on `sync()`, `close()` and
    /// full segments): without, a power loss soon after one may take every snapshot. An
    /// erasure's compaction always syncs.
    durable_compaction: bool,
    state: Mutex<State>,
}

impl State {
    fn kind(&mut self, aggregate: &str, schema: u32, codec: &str) -> Kind {
        // Share the strings with the entries of the same kind (there are few kinds).
        let existing = self
            .names
            .iter()
            .find(|(a, c)| &**a == aggregate && &**c == codec);
        let (aggregate, codec) = match existing {
            Some((a, c)) => (Arc::clone(a), Arc::clone(c)),
            None => {
                let names: (Arc<str>, Arc<str>) = (aggregate.into(), codec.into());
                self.names
                    .push((Arc::clone(&names.0), Arc::clone(&names.1)));
                names
            }
        };
        Kind {
            aggregate,
            schema,
            codec,
        }
    }

    fn forget(&mut self, old: &Entry) {
        self.live_bytes = self.live_bytes.saturating_sub(old.len);
        self.cached_bytes = self.cached_bytes.saturating_sub(old.cached_bytes());
    }

    /// Retained snapshots of `stream` of this kind at or below `max_version`, newest first.
    fn newest_first<'a>(
        &'a self,
        stream: &str,
        kind: &'a Kind,
        max_version: u64,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.by_stream
            .get(stream)
            .into_iter()
            .flatten()
            .rev()
            .filter(move |e| e.version <= max_version && e.kind == *kind)
    }

    /// Indexes a snapshot, dropping the oldest of its stream and aggregate beyond `keep`.
    fn add(&mut self, stream: &str, entry: Entry, keep: usize) {
        self.live_bytes += entry.len;
        self.cached_bytes += entry.cached_bytes();
        let entries = match self.by_stream.get_mut(stream) {
            Some(e) => e,
            None => self.by_stream.entry(SmolStr::new(stream)).or_default(),
        };
        // What the dropped entries held, taken off once the borrow of `entries` ends.
        let (mut freed, mut uncached) = (0u64, 0usize);
        let mut drop_at = |entries: &mut Vec<Entry>, i: usize| {
            let old = entries.remove(i);
            freed += old.len;
            uncached += old.cached_bytes();
        };
        // Same stream, aggregate and version: the newer record replaces the older.
        if let Some(i) = entries
            .iter()
            .position(|e| e.version == entry.version && e.kind == entry.kind)
        {
            drop_at(entries, i);
        }
        let at = entries.partition_point(|e| e.version <= entry.version);
        // Retention counts per aggregate and codec: a schema bump retires the old schema's
        // snapshots, and a framework's (codec "bytes") never crowd out a repository's.
        let (aggregate, codec) = (
            Arc::clone(&entry.kind.aggregate),
            Arc::clone(&entry.kind.codec),
        );
        entries.insert(at, entry);
        let same = |e: &Entry| e.kind.aggregate == aggregate && e.kind.codec == codec;
        let mut over = entries
            .iter()
            .filter(|e| same(e))
            .count()
            .saturating_sub(keep);
        // The oldest go first: entries are in version order.
        while over > 0 {
            let Some(i) = entries.iter().position(same) else {
                break;
            };
            drop_at(entries, i);
            over -= 1;
        }
        self.live_bytes = self.live_bytes.saturating_sub(freed);
        self.cached_bytes = self.cached_bytes.saturating_sub(uncached);
    }
}

impl SnapshotStore {
    /// Opens the snapshot files of `dir`, indexing every intact record. A record that fails its
    /// checks ends what is read of that file; new snapshots then go to a new file.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        keep: usize,
        write: bool,
        durable_compaction: bool,
    ) -> Result<Self> {
        let mut numbers: Vec<u32> = storage
            .list(dir)
            .map_err(|e| Error::io("list", dir, e))?
            .iter()
            .filter_map(|n| parse_file_name(n))
            .collect();
        numbers.sort_unstable();
        let mut st = State::default();
        let mut last_clean = false;
        for n in numbers {
            let path = dir.join(file_name(n));
            let handle: Arc<dyn StorageFile> = Arc::from(
                storage
                    .open(&path, write)
                    .map_err(|e| Error::io("open", &path, e))?,
            );
            let len = handle.len().map_err(|e| Error::io("stat", &path, e))?;
            let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
            handle
                .read_exact_at(&mut buf, 0)
                .map_err(|e| Error::io("read", &path, e))?;
            let mut offset = 0usize;
            while let Some((s, rec_len)) = decode(&buf, offset) {
                let kind = st.kind(&s.aggregate, s.schema, &s.codec);
                let entry = Entry {
                    kind,
                    version: s.version,
                    file: n,
                    offset: offset as u64,
                    len: rec_len as u64,
                    verified: false,
                    state: None,
                };
                st.add(&s.stream, entry, keep);
                offset += rec_len;
            }
            last_clean = offset as u64 == len;
            st.total_bytes += len;
            st.files.insert(n, File { handle, path, len });
        }
        if last_clean {
            st.active = st.files.keys().next_back().copied();
        }
        st.read_only = !write;
        Ok(SnapshotStore {
            storage,
            dir: dir.to_path_buf(),
            keep: keep.max(1),
            durable_compaction,
            state: Mutex::new(st),
        })
    }

    /// Retained snapshots of `stream` of this kind at or below `max_version`, newest first.
    pub(crate) fn candidates(&self, stream: &str, kind: &Kind, max_version: u64) -> Vec<Entry> {
        let st = self.state.lock();
        st.newest_first(stream, kind, max_version)
            .cloned()
            .collect()
    }

    /// The newest retained snapshot of `stream` of this kind above `floor` and at or below
    /// `max_version`, when it needs neither a read nor a check: already checked against the
    /// log in this run, with its state in memory. Its version and a copy of its state.
    /// A load's common case, without cloning the candidates.
    fn newest_ready(
        &self,
        stream: &str,
        kind: &Kind,
        floor: u64,
        max_version: u64,
    ) -> Option<(u64, Vec<u8>)> {
        let st = self.state.lock();
        let e = st.newest_first(stream, kind, max_version).next()?;
        match (&e.state, e.verified && e.version > floor) {
            (Some(state), true) => Some((e.version, state.to_vec())),
            _ => None,
        }
    }

    /// Version of the newest retained snapshot of `stream` of this kind.
    pub(crate) fn last_version(&self, stream: &str, kind: &Kind) -> Option<u64> {
        let st = self.state.lock();
        st.newest_first(stream, kind, u64::MAX)
            .next()
            .map(|e| e.version)
    }

    /// Reads a snapshot; `None` when it no longer passes its checks.
    pub(crate) fn read(&self, entry: &Entry) -> Result<Option<Snapshot>> {
        let handle = {
            let st = self.state.lock();
            match st.files.get(&entry.file) {
                Some(f) => Arc::clone(&f.handle),
                None => return Ok(None),
            }
        };
        let mut buf = vec![0u8; usize::try_from(entry.len).unwrap_or(0)];
        if handle.read_exact_at(&mut buf, entry.offset).is_err() {
            return Ok(None);
        }
        Ok(decode(&buf, 0).map(|(s, _)| s))
    }

    /// Records that `entry` passed its check against the log, so later loads skip it: in
    /// the writer only, whose log cannot lose the event while it runs (a read-only open or
    /// a follower checks every time: its writer may restart with a shorter log).
    fn mark_verified(&self, stream: &str, entry: &Entry) {
        let mut st = self.state.lock();
        if st.read_only {
            return;
        }
        if let Some(e) = st.by_stream.get_mut(stream).and_then(|v| {
            v.iter_mut()
                .find(|e| e.file == entry.file && e.offset == entry.offset)
        }) {
            e.verified = true;
        }
    }

    /// Drops the snapshots of every stream `keep` refuses and rewrites the snapshot files
    /// without them (a scavenge: their bytes must not stay on disk).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the files cannot be rewritten.
    pub(crate) fn erase(&self, keep: impl Fn(&str) -> bool) -> Result<()> {
        let mut st = self.state.lock();
        self.flush_locked(&mut st)?;
        let gone: Vec<SmolStr> = st.by_stream.keys().filter(|s| !keep(s)).cloned().collect();
        for stream in &gone {
            for old in st.by_stream.remove(stream).unwrap_or_default() {
                st.forget(&old);
            }
        }
        if st.total_bytes > st.live_bytes {
            // Synced whatever the policy: a power loss must not bring an erased snapshot's
            // file back.
            self.compact(&mut st, true)?;
        }
        Ok(())
    }

    /// Forgets every snapshot of `stream` (it was deleted); the records become dead bytes,
    /// gone from the files at the next compaction.
    pub(crate) fn forget_stream(&self, stream: &str) {
        let mut st = self.state.lock();
        for old in st.by_stream.remove(stream).unwrap_or_default() {
            st.forget(&old);
        }
    }

    /// Forgets a snapshot that failed verification, so a fresh one will be taken.
    pub(crate) fn discard(&self, stream: &str, entry: &Entry) {
        let mut st = self.state.lock();
        let mut freed = Vec::new();
        if let Some(v) = st.by_stream.get_mut(stream) {
            v.retain(|e| {
                let same = e.file == entry.file && e.offset == entry.offset;
                if same {
                    freed.push(e.clone());
                }
                !same
            });
        }
        for old in &freed {
            st.forget(old);
        }
    }

    /// Appends a snapshot (no fsync: snapshots are a cache), then compacts if dead records
    /// outweigh live ones.
    pub(crate) fn write(&self, s: &Snapshot) -> Result<()> {
        let bytes = encode(s).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "snapshot of stream {:?}: its aggregate type or codec name is longer than a \
                 snapshot record holds (65,535 bytes)",
                s.stream
            ))
        })?;
        let mut st = self.state.lock();
        if st.read_only {
            return Ok(());
        }
        let kind = st.kind(&s.aggregate, s.schema, &s.codec);
        let keep_state =
            s.state.len() <= CACHE_ONE_MAX && st.cached_bytes + s.state.len() <= CACHE_TOTAL_MAX;
        let (file, offset) = if keep_state {
            // Loads find it in memory until the batch is written.
            let offset = st.batch.len() as u64;
            st.batch.extend_from_slice(&bytes);
            st.batched.push((SmolStr::new(&s.stream), offset));
            (PENDING, offset)
        } else {
            self.flush_locked(&mut st)?;
            self.append_bytes(&mut st, &bytes)?
        };
        let entry = Entry {
            kind,
            version: s.version,
            file,
            offset,
            len: bytes.len() as u64,
            // Written for the event `save` read from the log.
            verified: true,
            state: keep_state.then(|| Arc::from(s.state.as_slice())),
        };
        st.add(&s.stream, entry, self.keep);
        if file != PENDING {
            // Nothing is pending (the batch was written first): compaction may run.
            self.maybe_compact(&mut st)?;
        } else if st.batch.len() >= BATCH {
            self.flush_locked(&mut st)?;
        }
        Ok(())
    }

    /// Compacts once dropped records outweigh the kept ones and pass 1 MiB. Only with no
    /// record pending: compaction copies records from the files.
    fn maybe_compact(&self, st: &mut State) -> Result<()> {
        let dead = st.total_bytes.saturating_sub(st.live_bytes);
        if st.batch.is_empty() && dead > st.live_bytes && dead >= COMPACT_MIN_DEAD {
            self.compact(st, self.durable_compaction)?;
        }
        Ok(())
    }

    /// Writes the batch of snapshots not yet written (on close, and whenever it fills).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the snapshot file cannot be written.
    pub(crate) fn flush(&self) -> Result<()> {
        self.flush_locked(&mut self.state.lock())
    }

    fn flush_locked(&self, st: &mut State) -> Result<()> {
        if st.batch.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut st.batch);
        let written = self.append_bytes(st, &batch);
        // Emptied either way; its capacity serves the next batch.
        batch.clear();
        st.batch = batch;
        let batched = std::mem::take(&mut st.batched);
        let (n, base) = match written {
            Ok(at) => at,
            Err(e) => {
                // A cache: the batch's snapshots are dropped, not kept to be written again
                // (and again) while the disk fails.
                for (stream, offset) in batched {
                    let gone: Vec<Entry> =
                        st.by_stream.get_mut(&stream).map_or_else(Vec::new, |v| {
                            let (gone, kept) = std::mem::take(v)
                                .into_iter()
                                .partition(|e| e.file == PENDING && e.offset == offset);
                            *v = kept;
                            gone
                        });
                    for old in &gone {
                        st.forget(old);
                    }
                }
                return Err(e);
            }
        };
        for (stream, offset) in batched {
            // Gone already when retention or a check dropped it: a dead record then.
            if let Some(e) = st.by_stream.get_mut(&stream).and_then(|v| {
                v.iter_mut()
                    .find(|e| e.file == PENDING && e.offset == offset)
            }) {
                e.file = n;
                e.offset = base + offset;
            }
        }
        self.maybe_compact(st)
    }

    /// Writes `bytes` (whole records) at the end of the active file; returns the file and
    /// the offset they start at.
    fn append_bytes(&self, st: &mut State, bytes: &[u8]) -> Result<(u32, u64)> {
        let n = self.active_file(st)?;
        let file = st
            .files
            .get_mut(&n)
            .ok_or_else(|| Error::corruption(&self.dir, 0, "snapshot file vanished"))?;
        let offset = file.len;
        file.handle
            .write_all_at(bytes, offset)
            .map_err(|e| Error::io("write", &file.path, e))?;
        file.len += bytes.len() as u64;
        st.total_bytes += bytes.len() as u64;
        Ok((n, offset))
    }

    /// The file new records go to, a new one when the active one is full.
    fn active_file(&self, st: &mut State) -> Result<u32> {
        match st
            .active
            .filter(|n| st.files.get(n).is_some_and(|f| f.len < FILE_MAX))
        {
            Some(n) => Ok(n),
            None => self.new_file(st),
        }
    }

    fn new_file(&self, st: &mut State) -> Result<u32> {
        let n = st.files.keys().next_back().map_or(1, |n| n + 1);
        let path = self.dir.join(file_name(n));
        let handle: Arc<dyn StorageFile> = Arc::from(
            self.storage
                .create(&path)
                .map_err(|e| Error::io("create", &path, e))?,
        );
        st.files.insert(
            n,
            File {
                handle,
                path,
                len: 0,
            },
        );
        st.active = Some(n);
        Ok(n)
    }

    /// Copies the retained snapshots into a new file and removes the old files; `durable`:
    /// the new file and the directory are synced before the old files go, and after.
    fn compact(&self, st: &mut State, durable: bool) -> Result<()> {
        let n = st.files.keys().next_back().map_or(1, |n| n + 1);
        let path = self.dir.join(file_name(n));
        let tmp = self.dir.join(format!("{}.tmp", file_name(n)));
        crate::storage::remove_if_exists(self.storage.as_ref(), &tmp)?;
        let out = self
            .storage
            .create(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        // In file order, read and written in pieces of COPY_CHUNK: a record at a time was
        // two system calls per retained snapshot.
        let mut order: Vec<(u32, u64, u64, &str, usize)> = st
            .by_stream
            .iter()
            .flat_map(|(stream, entries)| {
                entries
                    .iter()
                    .enumerate()
                    .map(move |(i, e)| (e.file, e.offset, e.len, &**stream, i))
            })
            .collect();
        order.sort_unstable_by_key(|&(file, offset, ..)| (file, offset));
        let (mut window_file, mut window_start, mut window) = (0u32, 0u64, Vec::new());
        let mut pending: Vec<u8> = Vec::new();
        let (mut len, mut written) = (0u64, 0u64);
        let mut moved: Vec<(SmolStr, usize, u64)> = Vec::with_capacity(order.len());
        let write = |pending: &mut Vec<u8>, written: &mut u64| -> Result<()> {
            out.write_all_at(pending, *written)
                .map_err(|err| Error::io("write", &tmp, err))?;
            *written += pending.len() as u64;
            pending.clear();
            Ok(())
        };
        for (file, offset, e_len, stream, i) in order {
            let Some(f) = st.files.get(&file) else {
                continue;
            };
            let inside = window_file == file
                && offset >= window_start
                && offset.saturating_add(e_len) <= window_start + window.len() as u64;
            if !inside {
                let want = e_len.max(f.len.saturating_sub(offset).min(COPY_CHUNK as u64));
                window.resize(usize::try_from(want).unwrap_or(0), 0);
                f.handle
                    .read_exact_at(&mut window, offset)
                    .map_err(|err| Error::io("read", &f.path, err))?;
                (window_file, window_start) = (file, offset);
            }
            let at = usize::try_from(offset - window_start).unwrap_or(usize::MAX);
            let record = at
                .checked_add(usize::try_from(e_len).unwrap_or(usize::MAX))
                .and_then(|end| window.get(at..end))
                .ok_or_else(|| {
                    Error::corruption(&f.path, offset, "snapshot record out of reach")
                })?;
            pending.extend_from_slice(record);
            moved.push((SmolStr::new(stream), i, len));
            len += e_len;
            if pending.len() >= COPY_CHUNK {
                write(&mut pending, &mut written)?;
            }
        }
        write(&mut pending, &mut written)?;
        let io = |op, p: &Path, e| Error::io(op, p, e);
        let sync_dir = || {
            if durable {
                self.storage
                    .sync_dir(&self.dir)
                    .map_err(|e| io("fsync directory", &self.dir, e))?;
            }
            Ok::<(), Error>(())
        };
        if durable {
            out.sync_data()
                .map_err(|e| Error::io("fdatasync", &tmp, e))?;
        }
        drop(out);
        self.storage
            .rename(&tmp, &path)
            .map_err(|e| io("rename", &tmp, e))?;
        sync_dir()?;
        for (stream, i, offset) in moved {
            if let Some(e) = st.by_stream.get_mut(&stream).and_then(|v| v.get_mut(i)) {
                e.file = n;
                e.offset = offset;
            }
        }
        // The index points into the new file from here on; old files go one by one, and one
        // that can't be removed stays listed (and counted) rather than forgotten.
        let old: Vec<u32> = st.files.keys().copied().collect();
        for k in old {
            if let Some(f) = st.files.get(&k) {
                self.storage
                    .remove(&f.path)
                    .map_err(|e| io("remove", &f.path, e))?;
            }
            if let Some(f) = st.files.remove(&k) {
                st.total_bytes = st.total_bytes.saturating_sub(f.len);
            }
        }
        sync_dir()?;
        let handle: Arc<dyn StorageFile> = Arc::from(
            self.storage
                .open(&path, true)
                .map_err(|e| io("open", &path, e))?,
        );
        st.files.insert(n, File { handle, path, len });
        st.active = Some(n);
        st.total_bytes += len;
        st.live_bytes = len;
        Ok(())
    }

    /// Number of retained snapshots and bytes of snapshot files.
    pub(crate) fn stats(&self) -> (u64, u64) {
        let st = self.state.lock();
        let count = st.by_stream.values().map(|v| v.len() as u64).sum();
        (count, st.total_bytes)
    }
}

/// A saved state, as [`Store::load_snapshot`](crate::Store::load_snapshot) returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// The stream version the state includes.
    pub version: u64,
    /// The state's bytes, as saved.
    pub state: Vec<u8>,
}

/// The kind of snapshot an outside framework saves under `name`: no schema or codec of
/// annal's (the framework's name says what the bytes are).
pub(crate) fn framework_kind(name: &str) -> Kind {
    Kind {
        aggregate: name.into(),
        schema: 0,
        codec: "bytes".into(),
    }
}

/// Saves `state`, the fold of `stream` up to `version`, as a snapshot of `kind`, with the
/// fingerprint of the event at `version` (`event`, or read from the log). `false` when the
/// stream has no event at `version` (nothing saved).
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a name too long for a snapshot record; errors reading the
/// log. A failed write of the snapshot file is an error too: the caller decides whether a
/// snapshot matters (the aggregate repository ignores it).
pub(crate) fn save(
    engine: &Arc<Engine>,
    snapshots: &SnapshotStore,
    stream: &str,
    kind: &Kind,
    version: u64,
    state: Vec<u8>,
    event: Option<&RecordedEvent>,
) -> Result<bool> {
    if !engine.folds_whole(stream) {
        return Ok(false);
    }
    let event = match event {
        Some(e) if e.version == version && *e.stream == *stream => e.clone(),
        _ => match engine
            .read_stream(stream, ReadOptions::forward_from(version).limit(1))
            .next()
        {
            Some(e) => e?,
            None => return Ok(false),
        },
    };
    if event.version != version {
        return Ok(false);
    }
    let at = EventAt {
        position: event.position,
        timestamp: event.timestamp,
    };
    save_at(snapshots, stream, kind, version, state, at)?;
    Ok(true)
}

/// Where the event a snapshot is folded up to is, and its timestamp: its fingerprint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventAt {
    pub position: u64,
    pub timestamp: u64,
}

/// [`save`], for an event the caller knows is at `version` of `stream` with this
/// fingerprint (it just appended it), so the log need not be read.
///
/// # Errors
///
/// As [`save`].
pub(crate) fn save_at(
    snapshots: &SnapshotStore,
    stream: &str,
    kind: &Kind,
    version: u64,
    state: Vec<u8>,
    at: EventAt,
) -> Result<()> {
    snapshots.write(&Snapshot {
        stream: stream.to_string(),
        aggregate: kind.aggregate.to_string(),
        schema: kind.schema,
        codec: kind.codec.to_string(),
        version,
        event_position: at.position,
        event_timestamp: at.timestamp,
        state,
    })
}

/// The newest usable snapshot of `stream` of `kind` above version `floor` and at or below
/// `target`: its version and state bytes. A snapshot whose event is not the one in the log
/// now (it outlived its events) is discarded, as is a damaged one.
///
/// # Errors
///
/// Errors reading the log.
pub(crate) fn load(
    engine: &Arc<Engine>,
    snapshots: &SnapshotStore,
    stream: &str,
    kind: &Kind,
    floor: u64,
    target: u64,
) -> Result<Option<StoredSnapshot>> {
    // A snapshot folds every event up to its version: with some of them hidden by the
    // stream's metadata, it is not the fold of what the stream holds.
    if !engine.folds_whole(stream) {
        return Ok(None);
    }
    if let Some((version, state)) = snapshots.newest_ready(stream, kind, floor, target) {
        return Ok(Some(StoredSnapshot { version, state }));
    }
    for entry in snapshots
        .candidates(stream, kind, target)
        .into_iter()
        .take_while(|e| e.version > floor)
    {
        match usable(engine, snapshots, stream, kind, &entry)? {
            Some(s) => {
                return Ok(Some(StoredSnapshot {
                    version: entry.version,
                    state: s,
                }));
            }
            None => snapshots.discard(stream, &entry),
        }
    }
    Ok(None)
}

/// A snapshot's state, if it is what it says and the event it was folded up to is the one in
/// the log now.
fn usable(
    engine: &Arc<Engine>,
    snapshots: &SnapshotStore,
    stream: &str,
    kind: &Kind,
    entry: &Entry,
) -> Result<Option<Vec<u8>>> {
    if entry.verified
        && let Some(state) = &entry.state
    {
        return Ok(Some(state.to_vec()));
    }
    let Some(s) = snapshots.read(entry)? else {
        return Ok(None);
    };
    let matches = s.stream == stream
        && s.version == entry.version
        && *s.aggregate == *kind.aggregate
        && s.schema == kind.schema
        && *s.codec == *kind.codec;
    if !matches {
        return Ok(None);
    }
    if entry.verified {
        return Ok(Some(s.state));
    }
    let event = engine
        .read_stream(stream, ReadOptions::forward_from(s.version).limit(1))
        .next()
        .transpose()?;
    Ok(match event {
        Some(e) if e.position == s.event_position && e.timestamp == s.event_timestamp => {
            snapshots.mark_verified(stream, entry);
            Some(s.state)
        }
        _ => None,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::engine::testing::DIR;
    use crate::storage::SimDisk;

    fn snap(stream: &str, version: u64) -> Snapshot {
        Snapshot {
            stream: stream.into(),
            aggregate: "Cart".into(),
            schema: 1,
            codec: "bincode2".into(),
            version,
            event_position: version,
            event_timestamp: 0,
            state: vec![7; 16],
        }
    }

    fn open(disk: &SimDisk, keep: usize) -> SnapshotStore {
        disk.create_dir_all(Path::new(DIR)).unwrap();
        SnapshotStore::open(Arc::new(disk.clone()), Path::new(DIR), keep, true, true).unwrap()
    }

    #[test]
    fn keeps_the_newest_per_stream_and_reads_them_after_a_reopen() {
        let disk = SimDisk::new(3);
        let store = open(&disk, 2);
        for v in [10, 20, 30] {
            store.write(&snap("cart-1", v)).unwrap();
        }
        store.write(&snap("cart-2", 5)).unwrap();
        let kind = kind();
        assert_eq!(store.last_version("cart-1", &kind), Some(30));
        let versions: Vec<u64> = store
            .candidates("cart-1", &kind, u64::MAX)
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, [30, 20], "newest first, only `keep` of them");
        store.flush().unwrap();
        drop(store);
        let again = open(&disk, 2);
        let newest = again.candidates("cart-1", &kind, 25);
        let read = again.read(&newest[0]).unwrap().unwrap();
        assert_eq!(read, snap("cart-1", 20));
    }

    fn kind() -> Kind {
        Kind {
            aggregate: "Cart".into(),
            schema: 1,
            codec: "bincode2".into(),
        }
    }

    #[test]
    fn a_damaged_record_ends_what_is_read_of_its_file() {
        let disk = SimDisk::new(4);
        let store = open(&disk, 8);
        store.write(&snap("a", 1)).unwrap();
        store.write(&snap("a", 2)).unwrap();
        store.flush().unwrap();
        drop(store);
        let path = Path::new(DIR).join(file_name(1));
        let len = disk.contents(&path).unwrap().len() as u64;
        assert!(disk.flip_bit(&path, len - 3, 0));
        let again = open(&disk, 8);
        let versions: Vec<u64> = again
            .candidates("a", &kind(), u64::MAX)
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, [1]);
    }

    #[test]
    fn batched_snapshots_are_found_in_memory_and_written_by_flush() {
        let disk = SimDisk::new(5);
        let store = open(&disk, 4);
        store.write(&snap("a", 1)).unwrap();
        let path = Path::new(DIR).join(file_name(1));
        assert!(
            disk.contents(&path).is_none_or(|c| c.is_empty()),
            "not written yet"
        );
        let found = store.candidates("a", &kind(), u64::MAX);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].state.as_deref(), Some(&[7u8; 16][..]));
        // Without a flush the batch is lost with the process, as a cache may be.
        let lost = open(&disk, 4);
        assert!(lost.candidates("a", &kind(), u64::MAX).is_empty());
        drop(lost);
        store.flush().unwrap();
        let kept = open(&disk, 4);
        let found = kept.candidates("a", &kind(), u64::MAX);
        assert_eq!(kept.read(&found[0]).unwrap().unwrap(), snap("a", 1));
        // A full batch is written without a flush.
        for v in 2..2000 {
            store.write(&snap("b", v)).unwrap();
        }
        let written = disk.contents(&path).map_or(0, |c| c.len());
        assert!(written >= BATCH, "{written} bytes written");
    }

    #[test]
    fn compaction_keeps_every_retained_snapshot_whole_over_many_files_and_sizes() {
        // States from a few bytes to past the compaction's read piece (1 MiB) and the
        // cache's bound, so that records come from the batch, straight writes and several
        // files, and some do not fit a piece.
        let state = |stream: usize, v: u64| -> Vec<u8> {
            let len = match (stream as u64 + v) % 7 {
                0 => COPY_CHUNK + 300,
                1 => 70 * 1024,
                k => 20 + usize::from(k.to_le_bytes()[0]) * 97,
            };
            let seed = (v ^ stream as u64).to_le_bytes()[0];
            (0..len).map(|i: usize| i.to_le_bytes()[0] ^ seed).collect()
        };
        let disk = SimDisk::new(11);
        let store = open(&disk, 2);
        for v in 1..=30u64 {
            for stream in 0..12 {
                store
                    .write(&Snapshot {
                        state: state(stream, v),
                        ..snap(&format!("s-{stream}"), v)
                    })
                    .unwrap();
            }
        }
        store.flush().unwrap();
        let (count, bytes) = store.stats();
        assert_eq!(count, 24);
        // About 55 MB written: compaction ran (and more than once).
        assert!(bytes < 40 << 20, "{bytes} bytes of snapshot files");
        drop(store);
        let again = open(&disk, 2);
        for stream in 0..12 {
            let name = format!("s-{stream}");
            let found = again.candidates(&name, &kind(), u64::MAX);
            let versions: Vec<u64> = found.iter().map(|e| e.version).collect();
            assert_eq!(versions, [30, 29], "{name}");
            for e in &found {
                let read = again.read(e).unwrap().unwrap();
                assert_eq!(
                    read.state,
                    state(stream, e.version),
                    "{name} v{}",
                    e.version
                );
                assert_eq!(
                    (read.stream.as_str(), read.version),
                    (name.as_str(), e.version)
                );
            }
        }
    }

    #[test]
    fn snapshots_too_big_for_the_batch_are_compacted_too() {
        let disk = SimDisk::new(6);
        let store = open(&disk, 4);
        for v in 1..=200 {
            let big = Snapshot {
                state: vec![9; 100 * 1024],
                ..snap("a", v)
            };
            store.write(&big).unwrap();
        }
        let (count, bytes) = store.stats();
        assert_eq!(count, 4);
        // 20 MB written: kept are 4 of 100 KiB, and dead records are compacted from 1 MiB.
        assert!(bytes < 2 << 20, "{bytes} bytes of snapshot files");
    }

    /// Writes 200 snapshots of 100 KiB to one stream (compactions run), on a disk whose next
    /// `sync_data` fails if `fail_sync`; returns the first error.
    fn compact_200(disk: &SimDisk, durable: bool, fail_sync: bool) -> Result<SnapshotStore> {
        disk.create_dir_all(Path::new(DIR)).unwrap();
        let store =
            SnapshotStore::open(Arc::new(disk.clone()), Path::new(DIR), 4, true, durable).unwrap();
        if fail_sync {
            disk.fail_sync_after(1);
        }
        for v in 1..=200u64 {
            store.write(&Snapshot {
                state: vec![v.to_le_bytes()[0]; 100 * 1024],
                ..snap("a", v)
            })?;
        }
        let (_, bytes) = store.stats();
        assert!(
            bytes < 2 << 20,
            "compacted: {bytes} bytes of snapshot files"
        );
        Ok(store)
    }

    #[test]
    fn a_compaction_syncs_its_file_unless_the_policy_is_never() {
        // Durable: the first compaction's sync of its file fails, and so does the write.
        let err = compact_200(&SimDisk::new(8), true, true).err();
        assert!(
            matches!(&err, Some(Error::Io { op, .. }) if *op == "fdatasync"),
            "{err:?}"
        );
        // Under `Never`: no sync at all, so none fails.
        compact_200(&SimDisk::new(9), false, true).unwrap();
        // Durable, crashed right after: the last compaction's file was synced, so its
        // snapshots are there (those written after it may not be), each whole.
        for seed in 0..6 {
            let disk = SimDisk::new(seed);
            drop(compact_200(&disk, true, false).unwrap());
            let again = open(&disk.crash(), 4);
            let found = again.candidates("a", &kind(), u64::MAX);
            assert!(
                !found.is_empty(),
                "seed {seed}: no snapshot after the crash"
            );
            for e in found {
                let read = again.read(&e).unwrap().unwrap();
                assert_eq!(read.state, vec![e.version.to_le_bytes()[0]; 100 * 1024]);
            }
        }
    }

    #[test]
    fn an_erasure_is_synced_whatever_the_policy() {
        let secret = b"SECRET-STATE-".repeat(100);
        for seed in 0..12 {
            let disk = SimDisk::new(seed);
            disk.create_dir_all(Path::new(DIR)).unwrap();
            // Not durable (`Never`): the erasure's compaction syncs all the same.
            let store = SnapshotStore::open(Arc::new(disk.clone()), Path::new(DIR), 4, true, false)
                .unwrap();
            for v in 1..=3 {
                store
                    .write(&Snapshot {
                        state: secret.clone(),
                        ..snap("secret-1", v)
                    })
                    .unwrap();
                store.write(&snap("kept-1", v)).unwrap();
            }
            store.flush().unwrap();
            // Written back, as the operating system would in time: the secret is durable.
            for path in disk.paths() {
                Storage::open(&disk, &path, false)
                    .and_then(|f| f.sync_data())
                    .unwrap();
            }
            Storage::sync_dir(&disk, Path::new(DIR)).unwrap();
            store.erase(|s| s != "secret-1").unwrap();
            drop(store);
            let after = disk.crash();
            for path in after.paths() {
                let bytes = after.contents(&path).unwrap_or_default();
                assert!(
                    !bytes.windows(13).any(|w| w == b"SECRET-STATE-"),
                    "seed {seed}: {} holds an erased snapshot after a crash",
                    path.display()
                );
            }
        }
    }
}
