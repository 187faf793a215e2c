//! The append path: validate, check the expected version (or recognise a retry), encode the
//! frame, write it, index it, and wait until it is acknowledged under the fsync policy.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Engine;
use super::Watermark;
use super::format::frame::{self, FrameStart};
use super::index::pack;
use super::read::{SegmentCache, read_event};
use crate::error::{Error, Result};
use crate::event::{AppendResult, EventData, ExpectedVersion};
use crate::options::FsyncPolicy;

/// Longest accepted stream name, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 1024;
/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 1024;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 1024;
/// Most tags on one event.
pub const MAX_TAGS: usize = 64;

impl Engine {
    fn validate(&self, stream: &str, events: &[EventData]) -> Result<()> {
        let invalid = |why: String| Err(Error::InvalidArgument(why));
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
        let len = frame::frame_len(stream, events);
        if u32::try_from(len).is_err() || u32::try_from(events.len()).is_err() {
            return invalid(format!(
                "append to stream {stream:?} is {len} bytes, more than one frame holds (4 GiB)"
            ));
        }
        Ok(())
    }

    pub(crate) fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<AppendResult> {
        self.validate(stream, events)?;
        let (result, is_retry) = self.write(stream, expected, events)?;
        if is_retry {
            self.wait_acknowledged(result.last_position)?;
            return Ok(result);
        }
        match self.options.fsync {
            FsyncPolicy::Always => {
                self.commit
                    .sync_to(result.last_position, &mut || self.sync_written())?;
            }
            FsyncPolicy::Never | FsyncPolicy::Interval(_) => {}
            FsyncPolicy::EveryEvents(max_unsynced) => {
                let durable = self.commit.durable();
                let unsynced = result.last_position.saturating_sub(durable);
                if unsynced >= (max_unsynced / 2).max(1) {
                    self.commit.request_flush();
                }
                if unsynced > max_unsynced {
                    self.commit
                        .sync_to(result.last_position - max_unsynced, &mut || {
                            self.sync_written()
                        })?;
                }
            }
        }
        Ok(result)
    }

    /// Under the writer lock: checks the expected version, encodes and writes the frame, and
    /// indexes it. Returns the result and whether it was a recognised retry (nothing written).
    fn write(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<(AppendResult, bool)> {
        self.check_writable()?;
        let mut guard = self.writer.lock();
        self.commit.check()?;
        let current = self.index.read().version(stream);
        if let Some(original) = self.find_retry(stream, expected, current, events)? {
            return Ok((original, true));
        }
        if !expected.matches(current) {
            return Err(Error::WrongExpectedVersion {
                stream: stream.to_string(),
                expected,
                actual: current,
            });
        }
        let w = &mut *guard;
        // Invariant: positions are dense; everything before the next one has been written.
        debug_assert_eq!(
            w.next_position,
            w.written.position + 1,
            "positions not dense"
        );
        let n = events.len() as u64;
        let result = AppendResult {
            first_version: current.unwrap_or(0) + 1,
            last_version: current.unwrap_or(0) + n,
            first_position: w.next_position,
            last_position: w.next_position + n - 1,
            deduplicated: false,
        };
        w.buf.clear();
        w.offsets.clear();
        let start = FrameStart {
            stream,
            first_position: result.first_position,
            first_version: result.first_version,
            durable: self.commit.durable(),
            timestamp: now_micros(),
        };
        frame::encode_frame(&mut w.buf, &start, events, &mut w.offsets);
        let written = match self.log.write(&mut w.active, &w.buf, result.first_position) {
            Ok(at) => at,
            Err(e) => {
                self.commit.poison(e.to_string());
                return Err(e);
            }
        };
        if let Some(sealed) = written.sealed {
            // Sealing synced everything before this frame: it is durable, and can be visible.
            let wm = Watermark {
                position: result.first_position - 1,
                location: pack(sealed.ordinal, sealed.end()),
            };
            self.publish(wm);
            self.commit.advance(wm.position);
            if let Some(tx) = &w.to_index {
                let _ = tx.send(sealed);
            }
        }
        let (ordinal, frame_offset) = (written.ordinal, written.offset);
        {
            let location = |o: &u32| pack(ordinal, frame_offset + u64::from(*o));
            let mut ix = self.index.write();
            let id = ix.push(stream, w.offsets.iter().map(location));
            for (i, (e, o)) in events.iter().zip(&w.offsets).enumerate() {
                ix.post(
                    result.first_position + i as u64,
                    id,
                    location(o),
                    &e.event_type,
                    e.tags.iter().map(String::as_str),
                );
            }
        }
        debug_assert_eq!(
            self.index.read().version(stream),
            Some(result.last_version),
            "stream {stream:?}: the index lost track of its version"
        );
        w.next_position += n;
        self.written_appends.fetch_add(1, Ordering::AcqRel);
        w.written = Watermark {
            position: result.last_position,
            location: pack(ordinal, w.active.offset),
        };
        if self.options.fsync != FsyncPolicy::Always {
            // Handed to the OS: acknowledged under every other policy.
            self.publish(w.written);
        }
        Ok((result, false))
    }

    /// The original result, if this append is a retry of one already written.
    fn find_retry(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        current: Option<u64>,
        events: &[EventData],
    ) -> Result<Option<AppendResult>> {
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
        // The matched events must be exactly one earlier append: one whole frame.
        let mut cached = SegmentCache::default();
        let mut positions = Vec::with_capacity(ids.len());
        let mut edges = Vec::with_capacity(ids.len());
        for (i, ((&loc, &id), asked)) in locs.iter().zip(&ids).zip(events).enumerate() {
            let (e, edge) = read_event(self, &mut cached, &name, after + 1 + i as u64, loc)?;
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
        let last = edges.len().saturating_sub(1);
        let whole_frame = edges.len() == ids.len()
            && edges.iter().enumerate().all(|(i, e)| {
                (e & frame::FLAG_FIRST != 0) == (i == 0)
                    && (e & frame::FLAG_LAST != 0) == (i == last)
            });
        match (positions.first(), positions.last()) {
            (Some(&first_position), Some(&last_position))
                if whole_frame && last_position - first_position + 1 == n =>
            {
                Ok(Some(AppendResult {
                    first_version: after + 1,
                    last_version: after + n,
                    first_position,
                    last_position,
                    deduplicated: true,
                }))
            }
            _ => Ok(None),
        }
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
