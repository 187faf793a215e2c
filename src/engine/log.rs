//! The segment log: the ordered list of segments and the write path that fills and rolls them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::engine::index::MAX_ORDINAL;
use crate::engine::segment::{SEGMENT_HEADER_LEN, Segment};
use crate::engine::state::{self, State};
use crate::error::{Error, Result};
use crate::storage::{Storage, StorageFile, WriteMap};

/// The segment being written.
#[derive(Debug)]
pub(crate) struct Active {
    pub seg: Arc<Segment>,
    pub file: Arc<dyn StorageFile>,
    /// Where the next frame goes.
    pub offset: u64,
    /// Where frames are written when the storage offers it: no system call per append.
    map: Option<Box<dyn WriteMap>>,
}

impl Active {
    /// The segment `seg` written from `offset` on; through a write map when `writable` and the
    /// storage has one (a map is only a faster way in: without one, `write_all_at` is used).
    pub(crate) fn new(
        seg: Arc<Segment>,
        file: Arc<dyn StorageFile>,
        offset: u64,
        writable: bool,
    ) -> Self {
        // Failing to make a map (no address space, say) is deliberately not an error:
        // write_all_at is equally correct, only slower.
        let map = if writable {
            file.write_map().ok().flatten()
        } else {
            None
        };
        Active {
            seg,
            file,
            offset,
            map,
        }
    }

    /// Has the write map, if there is one, fault its pages in ahead of the writes on a thread
    /// of its own when `on` (see [`WriteMap::populate_ahead`]).
    pub(crate) fn populated_ahead(mut self, on: bool) -> Self {
        if let (true, Some(map)) = (on, self.map.as_mut()) {
            map.populate_ahead();
        }
        self
    }
}

/// Where a frame was written.
#[derive(Debug)]
pub(crate) struct Written {
    pub ordinal: u32,
    pub offset: u64,
    /// The segment this write sealed by rolling past it, if it did.
    pub sealed: Option<Arc<Segment>>,
    /// The last position of a sealed segment that an earlier roll left unsynced and this
    /// write's roll synced (and put on record in `STATE`), if it did.
    pub settled: Option<u64>,
}

/// How a roll treats the segment it seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seal {
    /// Synced before the next segment is created (`Always`: the appends waiting for their
    /// sync are covered by it).
    Sync,
    /// Left for [`Log::sync_unsynced`], off the appending thread. Until then recovery treats
    /// its unsynced end like the active segment's (see `recovery`).
    Defer,
}

/// A sealed segment whose writes may not all be synced yet: the roll that sealed it left its
/// sync for later ([`Seal::Defer`]). At most one at a time: a roll syncs the previous one
/// first if it is still waiting.
#[derive(Debug, Clone)]
pub(crate) struct Unsynced {
    pub seg: Arc<Segment>,
    pub file: Arc<dyn StorageFile>,
    /// Its last position.
    pub last_position: u64,
}

/// All segments, in order; segment ordinals start at 1 and are contiguous.
#[derive(Debug)]
pub(crate) struct Log {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    segment_size: u64,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Every fdatasync of a segment holds this, and a failure sticks in it. Linux reports a
    /// writeback error to only one of two syncs racing on a file, so without it a sync that
    /// starts next to a failing one could return success for the lost data.
    sync_failure: Mutex<Option<String>>,
    /// Segment fdatasyncs so far.
    syncs: AtomicU64,
    /// What `STATE` says now (written by this log's open, rolls, syncs and close); the lock
    /// serializes its replacements, which share one temporary name.
    recorded: Mutex<State>,
    /// `recorded`'s durable position, readable without the lock.
    recorded_floor: AtomicU64,
    /// The sealed segment whose sync a roll left for later, if any.
    unsynced: Mutex<Option<Unsynced>>,
    /// New active segments fault their pages in ahead of the writes
    /// ([`Active::populated_ahead`]).
    populate_ahead: bool,
}

impl Log {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        dir: &Path,
        segment_size: u64,
        segments: Vec<Arc<Segment>>,
        populate_ahead: bool,
    ) -> Self {
        Log {
            storage,
            dir: dir.to_path_buf(),
            segment_size,
            segments: RwLock::new(segments),
            sync_failure: Mutex::new(None),
            syncs: AtomicU64::new(0),
            recorded: Mutex::new(State::default()),
            recorded_floor: AtomicU64::new(0),
            unsynced: Mutex::new(None),
            populate_ahead,
        }
    }

    /// Segment `ordinal`, if it exists.
    pub(crate) fn segment(&self, ordinal: u32) -> Option<Arc<Segment>> {
        let i = usize::try_from(ordinal.checked_sub(1)?).ok()?;
        self.segments.read().get(i).cloned()
    }

    /// A follower takes in segment `seg`, which another process created: the next one, or
    /// one standing for a placeholder (a store whose first segment did not exist yet).
    pub(crate) fn adopt(&self, seg: Arc<Segment>) -> Result<()> {
        let mut segments = self.segments.write();
        let at = usize::try_from(seg.ordinal.saturating_sub(1)).unwrap_or(usize::MAX);
        match at.cmp(&segments.len()) {
            std::cmp::Ordering::Less => {
                if let Some(slot) = segments.get_mut(at) {
                    *slot = seg;
                }
                Ok(())
            }
            std::cmp::Ordering::Equal => {
                segments.push(seg);
                Ok(())
            }
            std::cmp::Ordering::Greater => Err(Error::corruption(
                &seg.path,
                0,
                format!("segment {} follows segment {}", seg.ordinal, segments.len()),
            )),
        }
    }

    /// All segments, oldest first.
    pub(crate) fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().clone()
    }

    /// `f` of all segments, oldest first, without copying the list.
    pub(crate) fn with_segments<T>(&self, f: impl FnOnce(&[Arc<Segment>]) -> T) -> T {
        f(&self.segments.read())
    }

    /// Writes one frame whose first event is `first_position`, rolling to a new segment when
    /// it does not fit (sealing the full one as `seal` says).
    ///
    /// Any error leaves the active segment in an unknown state: the caller must poison.
    pub(crate) fn write(
        &self,
        active: &mut Active,
        frame: &[u8],
        first_position: u64,
        seal: Seal,
    ) -> Result<Written> {
        let len = frame.len() as u64;
        let mut sealed = None;
        let mut settled = None;
        if active.offset + len > active.seg.capacity {
            sealed = Some(Arc::clone(&active.seg));
            settled = self.roll(active, len, first_position, seal)?;
        }
        let offset = active.offset;
        // Invariant: frames go after the header, within the segment, after what is written.
        debug_assert!(offset >= SEGMENT_HEADER_LEN && offset + len <= active.seg.capacity);
        debug_assert!(offset >= active.seg.end(), "writing over written frames");
        match &mut active.map {
            Some(map) => map.write_at(frame, offset),
            None => active.file.write_all_at(frame, offset),
        }
        .map_err(|e| Error::io("write", &active.seg.path, e))?;
        active.offset += len;
        active.seg.note_frame(first_position, offset);
        active.seg.set_end(active.offset);
        Ok(Written {
            ordinal: active.seg.ordinal,
            offset,
            sealed,
            settled,
        })
    }

    /// A scavenge puts a rewritten segment in the place of the one it replaces.
    pub(crate) fn replace(&self, seg: Arc<Segment>) {
        let mut segments = self.segments.write();
        let at = usize::try_from(seg.ordinal.saturating_sub(1)).unwrap_or(usize::MAX);
        if let Some(slot) = segments.get_mut(at) {
            *slot = seg;
        }
    }

    /// Seals the active segment now, synced, and starts the next at `base_position` (a
    /// scavenge, to rewrite what was the active segment). Returns what [`Log::write`]'s
    /// roll would: the last position of an earlier unsynced segment it synced.
    ///
    /// An error leaves the active segment in an unknown state: the caller must poison.
    pub(crate) fn seal_now(&self, active: &mut Active, base_position: u64) -> Result<Option<u64>> {
        self.roll(active, 0, base_position, Seal::Sync)
    }

    /// The sealed segment a roll left unsynced, if it still is.
    pub(crate) fn unsynced(&self) -> Option<Unsynced> {
        self.unsynced.lock().clone()
    }

    /// Syncs the sealed segment a roll left unsynced, if there is one, and puts its last
    /// position on record in `STATE` (every segment before it was synced already). Returns
    /// that position: the caller may count everything up to it durable.
    pub(crate) fn sync_unsynced(&self) -> Result<Option<u64>> {
        let Some(u) = self.unsynced() else {
            return Ok(None);
        };
        self.sync(&u.file, &u.seg)?;
        // The flag stays: the floor now vouches for this segment, and a later roll may
        // already be leaving the next one unsynced.
        self.record(|s| s.durable_floor = s.durable_floor.max(u.last_position))?;
        let mut slot = self.unsynced.lock();
        if slot
            .as_ref()
            .is_some_and(|x| x.seg.ordinal == u.seg.ordinal)
        {
            *slot = None;
        }
        Ok(Some(u.last_position))
    }

    /// Records in `STATE` what `update` makes of the current record, durably. Records only
    /// grow: a durable position or last segment lower than the current one is kept.
    pub(crate) fn record(&self, update: impl FnOnce(&mut State)) -> Result<()> {
        let mut cur = self.recorded.lock();
        let mut next = *cur;
        update(&mut next);
        next.durable_floor = next.durable_floor.max(cur.durable_floor);
        if next.last_ordinal < cur.last_ordinal {
            next.last_ordinal = cur.last_ordinal;
            next.last_len = cur.last_len;
        }
        state::write(self.storage.as_ref(), &self.dir, &next)?;
        *cur = next;
        self.recorded_floor
            .store(next.durable_floor, Ordering::Release);
        Ok(())
    }

    /// The durable position `STATE` records now.
    pub(crate) fn recorded_floor(&self) -> u64 {
        self.recorded_floor.load(Ordering::Acquire)
    }

    /// Segment fdatasyncs so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// fdatasync of a segment's file, serialized with every other, and refused for good after
    /// one has failed.
    pub(crate) fn sync(&self, file: &Arc<dyn StorageFile>, seg: &Segment) -> Result<()> {
        let mut failure = self.sync_failure.lock();
        if let Some(cause) = &*failure {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        file.sync_data().map_err(|e| {
            let err = Error::io("fdatasync", &seg.path, e);
            *failure = Some(err.to_string());
            err
        })
    }

    /// Seals the active segment (it is never written again; synced now or left unsynced, as
    /// `seal` says) and starts the next, big enough for a frame of `need` bytes starting at
    /// `base_position`. Returns the last position of an earlier unsynced segment it synced.
    fn roll(
        &self,
        active: &mut Active,
        need: u64,
        base_position: u64,
        seal: Seal,
    ) -> Result<Option<u64>> {
        // At most one segment is left unsynced: recovery looks for a torn end only in the
        // segment before the last.
        let settled = self.sync_unsynced()?;
        if seal == Seal::Sync {
            self.sync(&active.file, &active.seg)?;
        } else if !self.recorded.lock().seal_deferred {
            // On record before the next segment exists: an open that finds one after this
            // segment then knows this one's end may be torn. (Once set, it stays until the
            // next open or close: where the floor covers a segment, a tear in it is refused
            // anyway.)
            self.record(|s| {
                s.clean = false;
                s.seal_deferred = true;
            })?;
        }
        active.seg.seal();
        let ordinal = active.seg.ordinal + 1;
        if ordinal > MAX_ORDINAL {
            return Err(Error::InvalidArgument(format!(
                "the log is full: at most {MAX_ORDINAL} segments"
            )));
        }
        let capacity = self.segment_size.max(SEGMENT_HEADER_LEN + need);
        let (seg, file) = Segment::create(
            self.storage.as_ref(),
            &self.dir,
            ordinal,
            base_position,
            capacity,
        )?;
        // The new last segment goes on record (with everything before it synced, when it
        // is): losing it, or synced data, is then detected on open even after a crash.
        self.record(|s| {
            s.clean = false;
            if seal == Seal::Sync {
                s.durable_floor = base_position - 1;
            }
            s.seal_deferred |= seal == Seal::Defer;
            s.last_ordinal = ordinal;
            s.last_len = capacity;
        })?;
        let seg = Arc::new(seg);
        self.segments.write().push(Arc::clone(&seg));
        let next =
            Active::new(seg, file, SEGMENT_HEADER_LEN, true).populated_ahead(self.populate_ahead);
        let old = std::mem::replace(active, next);
        if seal == Seal::Defer {
            *self.unsynced.lock() = Some(Unsynced {
                seg: old.seg,
                file: old.file,
                last_position: base_position - 1,
            });
        }
        Ok(settled)
    }
}
