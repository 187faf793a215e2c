//! A replica's own writes: a source's events at the positions and versions they have
//! there, and runs of events the source erased; and the `REPLICA` marker that keeps every
//! other writer out.
//!
//! The replication layer above checks the order of what it reads; this layer checks again,
//! under the writer lock, that each write starts at the next position and continues each
//! stream from its version, so nothing out of order or with a gap is ever written.

use std::path::Path;

#[cfg(feature = "nats")]
use super::Engine;
#[cfg(feature = "nats")]
use super::format::frame::{self, ErasedPart, TxPart};
use super::format::replica_file::{self, FILE_NAME, ReplicaFile};
#[cfg(feature = "nats")]
use super::index::pack;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// What `dir`'s `REPLICA` says, if it has one.
pub(crate) fn read_marker(storage: &dyn Storage, dir: &Path) -> Result<Option<ReplicaFile>> {
    let path = dir.join(FILE_NAME);
    match crate::storage::read_data(storage, &path)? {
        None => Ok(None),
        Some((bytes, _)) => replica_file::decode(&bytes)
            .map(Some)
            .map_err(|reason| Error::corruption(&path, 0, reason)),
    }
}

#[cfg(feature = "nats")]
impl Engine {
    /// Makes this store a replica of `marker.js_stream` (it must be empty, or already that
    /// stream's replica), or records how far its replication read.
    pub(crate) fn mark_replica(&self, marker: &ReplicaFile) -> Result<()> {
        self.check_writable()?;
        let mut current = self.replica.write();
        match &*current {
            Some(r)
                if r.js_stream != marker.js_stream || r.subject_prefix != marker.subject_prefix =>
            {
                return Err(Error::InvalidArgument(format!(
                    "store {} is a replica of JetStream stream {:?} (subjects {}.>), not of {:?} ({}.>)",
                    self.dir.display(),
                    r.js_stream,
                    r.subject_prefix,
                    marker.js_stream,
                    marker.subject_prefix
                )));
            }
            Some(r) if r == marker => return Ok(()),
            Some(_) => {}
            None if self.last_position() > 0 => {
                return Err(Error::InvalidArgument(format!(
                    "store {} already holds events: a replica starts empty",
                    self.dir.display()
                )));
            }
            None => {}
        }
        self.while_open(|| {
            crate::storage::replace_file(
                self.storage(),
                &self.dir,
                FILE_NAME,
                &replica_file::encode(marker),
            )
        })?;
        *current = Some(marker.clone());
        Ok(())
    }

    /// The last position written (visible or not yet: under `Always`, not before
    /// [`settle`](Self::settle)).
    pub(crate) fn written_position(&self) -> u64 {
        self.writer.lock().next_position - 1
    }

    /// Writes one commit of the source: `parts` (each stream's events, the timestamps and
    /// ids they had in the source), as one frame starting at `first_position`. Returns its
    /// last position; [`settle`](Self::settle) then waits for what the fsync policy
    /// promises, once for a batch of writes.
    pub(crate) fn import(&self, first_position: u64, parts: &[TxPart<'_>]) -> Result<u64> {
        for p in parts {
            self.validate_with(p.stream, p.events, true)?;
        }
        let last = {
            let mut guard = self.writer.lock();
            self.commit.check()?;
            self.check_continues(
                &guard,
                first_position,
                parts
                    .iter()
                    .map(|p| (p.stream, p.first_version, p.events.len() as u64)),
            )?;
            let (_, last, _) = self.put(&mut guard, parts)?;
            last
        };
        Ok(last)
    }

    /// Writes a run of events the source erased: an erased frame at `first_position` for
    /// `parts` (their positions and versions taken, nothing else kept). Returns its last
    /// position, as [`import`](Self::import).
    pub(crate) fn import_erased(&self, first_position: u64, parts: &[ErasedPart]) -> Result<u64> {
        let n: u64 = parts.iter().map(|p| u64::from(p.count)).sum();
        if parts.is_empty() || n == 0 {
            return Err(Error::InvalidArgument("an erased run of no events".into()));
        }
        let len = frame::erased_frame_len(parts);
        if !frame::erased_frame_fits(len, parts) {
            return Err(Error::InvalidArgument(format!(
                "an erased run of {n} events at position {first_position} is too long for one frame"
            )));
        }
        let last = {
            let mut guard = self.writer.lock();
            self.commit.check()?;
            self.check_continues(
                &guard,
                first_position,
                parts
                    .iter()
                    .map(|p| (p.stream.as_str(), p.first_version, u64::from(p.count))),
            )?;
            let w = &mut *guard;
            w.buf.clear();
            w.buf.resize(len, 0);
            frame::erase_frame(&mut w.buf, first_position, self.commit.durable(), parts);
            let (ordinal, offset) = self.place(w, first_position)?;
            // A checkpoint of erased frames is the scan's to make.
            w.checkpoint.give_up();
            if w.active.seg.ordinal == ordinal {
                w.active.seg.set_erased(vec![(offset, offset + len as u64)]);
            }
            {
                let mut ix = self.index.write();
                let mut i = 0u64;
                let mut position = first_position;
                for p in parts {
                    let locations: Vec<u64> = (0..u64::from(p.count))
                        .map(|j| pack(ordinal, offset + i + j))
                        .collect();
                    i += u64::from(p.count);
                    let id = ix.push(&p.stream, locations);
                    for _ in 0..p.count {
                        ix.postings.push_erased(position, id);
                        position += 1;
                    }
                }
            }
            self.written_through(w, n, ordinal);
            first_position + n - 1
        };
        Ok(last)
    }

    /// Fails unless a write at `first_position` of `streams` (each with its first version
    /// and count, in order; a stream may come back in an erased run) comes next.
    fn check_continues<'a>(
        &self,
        w: &super::Writer,
        first_position: u64,
        streams: impl Iterator<Item = (&'a str, u64, u64)>,
    ) -> Result<()> {
        let refuse = |reason: String| {
            Err(Error::InvalidArgument(format!(
                "replica {}: {reason}",
                self.dir.display()
            )))
        };
        if first_position != w.next_position {
            return refuse(format!(
                "a write at position {first_position}, but the next position is {}",
                w.next_position
            ));
        }
        let ix = self.index.read();
        let mut seen: Vec<(&str, u64)> = Vec::new();
        for (stream, first_version, count) in streams {
            let have = match seen.iter().rev().find(|(s, _)| *s == stream) {
                Some(&(_, v)) => v,
                None => ix.version(stream).unwrap_or(0),
            };
            if first_version != have + 1 {
                return refuse(format!(
                    "stream {stream:?} would continue at version {first_version}, but it is at {have}"
                ));
            }
            seen.push((stream, first_version + count - 1));
        }
        Ok(())
    }
}
