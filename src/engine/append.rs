//! The append path: validate, check the expected version (or recognise a retry), encode the
//! frame, write it, index it, and wait until it is acknowledged under the fsync policy.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Engine;
use super::SealJob;
use super::Watermark;
use super::Writer;
use super::format::frame::{self, FRAME_HEADER_LEN, FrameStart, TxPart};
use super::format::stream_metadata;
use super::index::pack;
use super::log::Seal;
use super::read::{SegmentCache, read_event};
use crate::error::{Error, Result};
use crate::event::{AppendResult, EventData, ExpectedVersion};
use crate::options::FsyncPolicy;
use crate::transaction::AppendCondition;

/// Longest accepted stream name, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 1024;
/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 1024;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 1024;
/// Most tags on one event.
pub const MAX_TAGS: usize = 64;

impl Engine {
    pub(crate) fn validate(&self, stream: &str, events: &[EventData]) -> Result<()> {
        self.validate_with(stream, events, false)
    }

    /// [`validate`](Self::validate); with `system`, metadata streams' names (`$$` and a
    /// stream's name) are accepted too (a replica writes them as its source did).
    pub(crate) fn validate_with(
        &self,
        stream: &str,
        events: &[EventData],
        system: bool,
    ) -> Result<()> {
        let invalid = |why: String| Err(Error::InvalidArgument(why));
        let system = system && crate::engine::lifecycle::is_system(stream);
        let stream_name = stream;
        let stream = if system {
            stream.get(2..).unwrap_or_default()
        } else {
            stream
        };
        if stream.is_empty() {
            return invalid("stream name is empty".into());
        }
        if stream.len() > MAX_STREAM_NAME_LEN {
            return invalid(format!(
                "stream name is {} bytes, more than {MAX_STREAM_NAME_LEN}",
                stream.len()
            ));
        }
        if stream.starts_with('$') {
            return invalid(format!(
                "stream {stream:?}: names starting with '$' are reserved"
            ));
        }
        if events.is_empty() {
            return invalid(format!("no events to append to stream {stream:?}"));
        }
        for (i, e) in events.iter().enumerate() {
            if e.event_type.is_empty() || e.event_type.len() > MAX_EVENT_TYPE_LEN {
                return invalid(format!(
                    "event {} of {} for stream {stream:?}: type must be 1 to {MAX_EVENT_TYPE_LEN} bytes",
                    i + 1,
                    events.len()
                ));
            }
            if e.tags.len() > MAX_TAGS {
                return invalid(format!(
                    "event {} of {} for stream {stream:?} has {} tags, more than {MAX_TAGS}",
                    i + 1,
                    events.len(),
                    e.tags.len()
                ));
            }
            for (j, tag) in e.tags.iter().enumerate() {
                if tag.is_empty() || tag.len() > MAX_TAG_LEN {
                    return invalid(format!(
                        "event {} of {} for stream {stream:?}: tag {} must be 1 to \
                         {MAX_TAG_LEN} bytes",
                        i + 1,
                        events.len(),
                        j + 1
                    ));
                }
                if e.tags.get(..j).is_some_and(|before| before.contains(tag)) {
                    return invalid(format!(
                        "event {} of {} for stream {stream:?} has the tag {tag:?} twice",
                        i + 1,
                        events.len()
                    ));
                }
            }
            let size = e.payload.len() + e.metadata.len();
            if size > self.options.max_event_size {
                return invalid(format!(
                    "event {} of {} for stream {stream:?} is {size} bytes, more than max_event_size {}",
                    i + 1,
                    events.len(),
                    self.options.max_event_size
                ));
            }
        }
        let mut ids: Vec<(u128, usize)> = events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.id.map(|id| (id, i)))
            .collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
            return invalid(format!(
                "events {} and {} of the append to stream {stream:?} share the id {:032x}: an \
                 id names one event",
                pair[0].1 + 1,
                pair[1].1 + 1,
                pair[0].0
            ));
        }
        let len = frame::frame_len(stream_name, events);
        if u32::try_from(len).is_err() || u32::try_from(events.len()).is_err() {
            return invalid(format!(
                "append to stream {stream:?} is {len} bytes, more than one frame holds (4 GiB)"
            ));
        }
        Ok(())
    }

    pub(crate) fn append(
        self: &Arc<Self>,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<AppendResult> {
        self.validate(stream, events)?;
        let written = self.write(stream, expected, events);
        let (result, is_retry) = self.after_conflict(written)?;
        self.settle(result.last_position, is_retry)?;
        Ok(result)
    }

    /// A write that failed its expected version or condition returns once the events it
    /// conflicts with are acknowledged (under `Always`, their sync may still be running):
    /// a caller that reloads and retries then reads them, instead of failing on the same
    /// conflict again and again while that sync runs.
    pub(crate) fn after_conflict<T>(&self, written: Result<T>) -> Result<T> {
        if is_conflict(&written) {
            // The conflict is the answer; a failed sync shows in the next call.
            let _ = self.sync_to_target(self.written_unacknowledged());
        }
        written
    }

    /// After a write under the writer lock: waits for what the fsync policy promises of the
    /// events up to `last_position` (a recognised retry: until the original is acknowledged).
    pub(crate) fn settle(&self, last_position: u64, is_retry: bool) -> Result<()> {
        self.sync_to_target(self.settle_target(last_position, is_retry))
    }

    /// Returns once `target` (if any) is durable, leading syncs as group commit does.
    fn sync_to_target(&self, target: Option<u64>) -> Result<()> {
        match target {
            Some(target) => self.commit.sync_to(target, &mut || self.sync_written()),
            None => Ok(()),
        }
    }

    /// The last position written but not yet acknowledged, under `Always` (under the other
    /// policies a write is acknowledged at once).
    pub(crate) fn written_unacknowledged(&self) -> Option<u64> {
        if self.options.fsync != FsyncPolicy::Always {
            return None;
        }
        let written = self.writer.lock().written.position;
        (written > self.commit.durable()).then_some(written)
    }

    /// The position that must be durable before an append ending at `last_position` is
    /// acknowledged under the fsync policy, if any; asks the flusher for a sync when the
    /// policy wants one soon.
    pub(crate) fn settle_target(&self, last_position: u64, is_retry: bool) -> Option<u64> {
        if is_retry {
            // The original is acknowledged once it is, under the policy.
            return (self.options.fsync == FsyncPolicy::Always).then_some(last_position);
        }
        match self.options.fsync {
            FsyncPolicy::Always => Some(last_position),
            FsyncPolicy::Never | FsyncPolicy::Interval(_) => None,
            FsyncPolicy::EveryEvents(max_unsynced) => {
                let durable = self.commit.durable();
                let unsynced = last_position.saturating_sub(durable);
                if unsynced >= (max_unsynced / 2).max(1) {
                    self.commit.request_flush();
                }
                (unsynced > max_unsynced).then(|| last_position - max_unsynced)
            }
        }
    }

    /// Under the writer lock: checks the expected version, encodes and writes the frame, and
    /// indexes it. Returns the result and whether it was a recognised retry (nothing written).
    pub(crate) fn write(
        self: &Arc<Self>,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<(AppendResult, bool)> {
        self.write_one(stream, expected, events, &[], None)
            .map(|(r, stamped)| (r, stamped.is_none()))
    }

    /// [`write`](Engine::write) with a transaction's other checks: the streams it `expects`
    /// and its condition (a one-stream transaction, a conditional append most often, needs
    /// none of a transaction's sets and vectors). Returns the result and the timestamp its
    /// events were given (`None` for a recognised retry).
    pub(crate) fn write_one(
        self: &Arc<Self>,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
        expects: &[(String, ExpectedVersion)],
        condition: Option<&AppendCondition>,
    ) -> Result<(AppendResult, Option<u64>)> {
        self.check_appendable()?;
        let mut guard = self.writer.lock();
        self.commit.check()?;
        self.check_stream_live(stream)?;
        let current = self.index.read().version(stream);
        if let Some(original) = self.find_retry(stream, expected, current, events)? {
            return Ok((original, None));
        }
        check_expected(stream, expected, current)?;
        self.check_expects(expects)?;
        let w = &mut *guard;
        if let Some(condition) = condition {
            self.check_condition(condition, w.written)?;
        }
        // Invariant: positions are dense; everything before the next one has been written.
        debug_assert_eq!(
            w.next_position,
            w.written.position + 1,
            "positions not dense"
        );
        let n = events.len() as u64;
        let first_version = current.unwrap_or(0) + 1;
        let parts = [TxPart {
            stream,
            first_version,
            events,
        }];
        let (first_position, last_position, timestamp) = self.put(w, &parts)?;
        Ok((
            AppendResult {
                first_version,
                last_version: first_version + n - 1,
                first_position,
                last_position,
                deduplicated: false,
            },
            Some(timestamp),
        ))
    }

    /// [`Error::StreamDeleted`] if `stream` was hard-deleted, or is the metadata stream
    /// (annal's own appends) of one that was.
    pub(crate) fn check_stream_live(&self, stream: &str) -> Result<()> {
        self.check_not_deleted(stream_metadata::described(stream).unwrap_or(stream))
    }

    /// Under the writer lock: each stream a transaction `expect`s (and does not write) is at
    /// its expected version.
    pub(crate) fn check_expects(&self, expects: &[(String, ExpectedVersion)]) -> Result<()> {
        for (stream, expected) in expects {
            let current = self.index.read().version(stream);
            check_expected(stream, *expected, current)?;
        }
        Ok(())
    }

    /// Under the writer lock, once every check passed: encodes `parts` as one frame (a
    /// transaction's frame when there are several), writes it, indexes it and, unless every
    /// append waits for its sync, publishes it. Returns its first and last positions, and the
    /// timestamp of its events that bring none of their own.
    pub(crate) fn put(&self, w: &mut Writer, parts: &[TxPart<'_>]) -> Result<(u64, u64, u64)> {
        let n: u64 = parts.iter().map(|p| p.events.len() as u64).sum();
        let first_position = w.next_position;
        let last_position = first_position + n - 1;
        w.buf.clear();
        w.offsets.clear();
        let durable = self.commit.durable();
        let timestamp = now_micros();
        match parts {
            [one] => {
                let start = FrameStart {
                    stream: one.stream,
                    first_position,
                    first_version: one.first_version,
                    durable,
                    timestamp,
                };
                frame::encode_frame(&mut w.buf, &start, one.events, &mut w.offsets);
            }
            _ => frame::encode_tx_frame(
                &mut w.buf,
                first_position,
                durable,
                timestamp,
                parts,
                &mut w.offsets,
            ),
        }
        let (ordinal, frame_offset) = self.place(w, first_position)?;
        {
            let location = |o: &u32| pack(ordinal, frame_offset + u64::from(*o));
            let mut ix = self.index.write();
            let mut rest: &[u32] = &w.offsets;
            let mut position = first_position;
            let tag_ids = &mut w.tag_ids;
            for part in parts {
                let (mine, after) = rest.split_at(part.events.len().min(rest.len()));
                rest = after;
                let checkpoint = &mut w.checkpoint;
                let (id, run) = ix.push_noting(part.stream, mine.iter().map(location), |slot| {
                    checkpoint.run(part.stream, part.first_version, slot)
                });
                for (e, o) in part.events.iter().zip(mine) {
                    tag_ids.clear();
                    let type_id = ix.post(
                        position,
                        id,
                        location(o),
                        &e.event_type,
                        e.tags.iter().map(String::as_str),
                        tag_ids,
                    );
                    if let Some(run) = run {
                        w.checkpoint.record(
                            run,
                            frame_offset + u64::from(*o),
                            type_id,
                            &e.event_type,
                            tag_ids,
                            e.tags.iter().map(String::as_str),
                        );
                    }
                    position += 1;
                }
                debug_assert_eq!(
                    ix.version(part.stream),
                    Some(part.first_version + part.events.len() as u64 - 1),
                    "stream {:?}: the index lost track of its version",
                    part.stream
                );
            }
        }
        let header = w.buf.get(..FRAME_HEADER_LEN).unwrap_or_default();
        let end = frame_offset + w.buf.len() as u64;
        w.checkpoint
            .frame(frame_offset, header, first_position, n, end);
        self.note_metadata(parts, first_position);
        self.written_through(w, n, ordinal);
        Ok((first_position, last_position, timestamp))
    }

    /// Under the writer lock: writes the frame in `w.buf`, whose first position is
    /// `first_position` (the next one), rolling to a new segment when the active one is full.
    /// Returns the segment ordinal and offset the frame went to.
    pub(crate) fn place(&self, w: &mut Writer, first_position: u64) -> Result<(u32, u64)> {
        // Under `Always` every append waits for a sync anyway, and the one a roll makes
        // covers the appends waiting in the full segment; under the other policies the
        // full segment is synced in the background.
        let seal = if self.options.fsync == FsyncPolicy::Always {
            Seal::Sync
        } else {
            Seal::Defer
        };
        let written = match self.log.write(&mut w.active, &w.buf, first_position, seal) {
            Ok(at) => at,
            Err(e) => {
                self.commit.poison(e.to_string());
                return Err(e);
            }
        };
        if let Some(settled) = written.settled {
            self.commit.advance(settled);
        }
        if let Some(sealed) = written.sealed {
            if seal == Seal::Sync {
                // Sealing synced everything before this frame: it is durable, and visible.
                let wm = Watermark {
                    position: first_position - 1,
                    location: pack(sealed.ordinal, sealed.end()),
                };
                self.publish(wm);
                self.commit.advance(wm.position);
            }
            if seal == Seal::Defer {
                // Under `Never` once the next segment is half full, out of the way of the
                // roll's writes; under the policies that bound what is unsynced, at once.
                w.seal_due = Some(if self.options.fsync == FsyncPolicy::Never {
                    w.active.seg.capacity / 2
                } else {
                    0
                });
            }
            let ix = Some(Box::new(w.take_checkpoint()));
            if let Some(tx) = &w.to_seal {
                let _ = tx.send(SealJob::Sealed(sealed, ix));
            }
        }
        Ok((written.ordinal, written.offset))
    }

    /// Under the writer lock, once a frame of `n` events was written to segment `ordinal`
    /// and indexed: moves the written position past it and, unless every append waits for
    /// its sync, publishes it.
    pub(crate) fn written_through(&self, w: &mut Writer, n: u64, ordinal: u32) {
        w.next_position += n;
        self.written_appends.fetch_add(1, Ordering::AcqRel);
        w.written = Watermark {
            position: w.next_position - 1,
            location: pack(ordinal, w.active.offset),
        };
        if w.seal_due.is_some_and(|due| w.active.offset >= due) {
            w.seal_due = None;
            if let Some(tx) = &w.to_seal {
                let _ = tx.send(SealJob::SyncDue);
            }
        }
        if self.options.fsync != FsyncPolicy::Always {
            // Handed to the OS: acknowledged under every other policy.
            self.publish(w.written);
        }
    }

    /// The original result, if this append is a retry of one already written.
    fn find_retry(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        current: Option<u64>,
        events: &[EventData],
    ) -> Result<Option<AppendResult>> {
        let Some((result, edges)) = self.match_retry(stream, expected, current, events)? else {
            return Ok(None);
        };
        // The matched events must be exactly one earlier append: one whole frame.
        Ok(whole_frame(&edges).then_some(result))
    }

    /// Where an earlier append of these events (every one with an id) would be, if they are
    /// there at the versions `expected` implies, in consecutive positions: the result it had
    /// and each record's place in its frame ([`frame::FLAG_FIRST`], [`frame::FLAG_LAST`]).
    /// The same id on another event there is [`Error::IdReused`].
    pub(crate) fn match_retry(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        current: Option<u64>,
        events: &[EventData],
    ) -> Result<Option<(AppendResult, Vec<u8>)>> {
        let ids: Option<Vec<u128>> = events.iter().map(|e| e.id).collect();
        let (Some(ids), Some(current)) = (ids, current) else {
            return Ok(None);
        };
        let n = ids.len() as u64;
        let after = match expected {
            ExpectedVersion::Exact(v) if v < current => v,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Any | ExpectedVersion::StreamExists => match current.checked_sub(n) {
                Some(v) => v,
                None => return Ok(None),
            },
            ExpectedVersion::Exact(_) => return Ok(None),
        };
        if after + n > current {
            return Ok(None);
        }
        let Some((name, locs)) =
            self.index
                .read()
                .locations(stream, after + 1, ids.len(), u64::MAX)
        else {
            return Ok(None);
        };
        let mut cached = SegmentCache::default();
        let mut positions = Vec::with_capacity(ids.len());
        let mut edges = Vec::with_capacity(ids.len());
        for (i, ((&loc, &id), asked)) in locs.iter().zip(&ids).zip(events).enumerate() {
            // An erased event was no earlier append of these.
            let Some((e, edge)) = read_event(self, &mut cached, &name, after + 1 + i as u64, loc)?
            else {
                return Ok(None);
            };
            if e.id != Some(id) {
                return Ok(None);
            }
            if e.event_type != asked.event_type
                || e.payload != asked.payload
                || e.metadata != asked.metadata
                || e.tags != asked.tags
                || asked.timestamp.is_some_and(|t| t != e.timestamp)
            {
                return Err(Error::IdReused {
                    stream: stream.to_string(),
                    id,
                    position: e.position,
                });
            }
            positions.push(e.position);
            edges.push(edge);
        }
        match (positions.first(), positions.last()) {
            (Some(&first_position), Some(&last_position))
                if edges.len() == ids.len() && last_position - first_position + 1 == n =>
            {
                Ok(Some((
                    AppendResult {
                        first_version: after + 1,
                        last_version: after + n,
                        first_position,
                        last_position,
                        deduplicated: true,
                    },
                    edges,
                )))
            }
            _ => Ok(None),
        }
    }
}

/// Fails with [`Error::WrongExpectedVersion`] unless `stream`, at `actual`, is where
/// `expected` says.
pub(crate) fn check_expected(
    stream: &str,
    expected: ExpectedVersion,
    actual: Option<u64>,
) -> Result<()> {
    if expected.matches(actual) {
        Ok(())
    } else {
        Err(Error::WrongExpectedVersion {
            stream: stream.to_string(),
            expected,
            actual,
        })
    }
}

/// Whether a write failed its expected version or its append condition.
pub(crate) fn is_conflict<T>(written: &Result<T>) -> bool {
    matches!(
        written,
        Err(Error::WrongExpectedVersion { .. } | Error::AppendConditionFailed { .. })
    )
}

/// Whether records with these edge flags, in order, are exactly one frame: the first flagged
/// first, the last flagged last, and none other either.
pub(crate) fn whole_frame(edges: &[u8]) -> bool {
    let last = edges.len().saturating_sub(1);
    !edges.is_empty()
        && edges.iter().enumerate().all(|(i, e)| {
            (e & frame::FLAG_FIRST != 0) == (i == 0) && (e & frame::FLAG_LAST != 0) == (i == last)
        })
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
