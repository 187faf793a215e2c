//! Stream lifecycle in the engine: every stream's metadata (the last event of its metadata
//! stream, `$$` + its name), kept in memory from the log, and which events it leaves live.
//!
//! Reads ask [`Engine::rules`] before they return an event; the append path refuses a
//! hard-deleted stream; the scavenger erases what the rules no longer keep.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use foldhash::HashMap;

use super::Engine;
use super::format::frame::TxPart;
use super::format::stream_metadata::{self, METADATA_PREFIX, METADATA_TYPE};
use super::index::unpack;
use super::read::{SegmentCache, read_event};
use crate::error::{Error, Result};
use crate::event::{EventData, ExpectedVersion, RecordedEvent};
use crate::lifecycle::{DeleteMode, StreamMetadata};
use crate::transaction::Transaction;

/// The metadata of every stream that has some, by stream name, with the position of the
/// event that set it.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    streams: HashMap<Arc<str>, (u64, StreamMetadata)>,
    /// The metadata each stream had before its current one was written: what reads go by
    /// until the current one is acknowledged (published).
    previous: HashMap<Arc<str>, StreamMetadata>,
}

impl Lifecycle {
    /// The metadata of `stream` that reads go by when `visible` is the published position:
    /// the current one once it is acknowledged, the one before until then.
    fn visible(&self, stream: &str, visible: u64) -> Option<&StreamMetadata> {
        let (position, current) = self.streams.get(stream)?;
        if *position <= visible {
            Some(current)
        } else {
            self.previous.get(stream)
        }
    }
}

/// Which events of one stream are live now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    /// Versions below this are not.
    pub first_live: u64,
    /// Events with a timestamp below this (microseconds since the epoch) are not.
    pub oldest: u64,
}

impl Rules {
    /// Every event.
    pub(crate) const ALL: Rules = Rules {
        first_live: 1,
        oldest: 0,
    };

    /// Only version `last` (and any after it): a metadata stream's.
    pub(crate) fn last_only(last: u64) -> Rules {
        Rules {
            first_live: last.max(1),
            oldest: 0,
        }
    }

    /// Whether the event with this version and timestamp is live.
    pub(crate) fn keeps(&self, version: u64, timestamp: u64) -> bool {
        version >= self.first_live && timestamp >= self.oldest
    }

    /// The rules of a stream at version `last` with metadata `m`, at time `now`.
    pub(crate) fn of(m: &StreamMetadata, last: u64, now: u64) -> Rules {
        if m.deleted {
            return Rules {
                first_live: u64::MAX,
                oldest: u64::MAX,
            };
        }
        let by_count = m
            .max_count
            .map_or(1, |n| last.saturating_sub(n.max(1)).saturating_add(1));
        Rules {
            first_live: m.truncate_before.unwrap_or(1).max(by_count).max(1),
            oldest: m.max_age.map_or(0, |age| {
                now.saturating_sub(u64::try_from(age.as_micros()).unwrap_or(u64::MAX))
            }),
        }
    }
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Whether `stream` is a metadata stream (annal's, not the user's).
pub(crate) fn is_system(stream: &str) -> bool {
    stream.starts_with(METADATA_PREFIX)
}

impl Engine {
    /// Which events of `stream` are live, with its last version `last`, for a read that sees
    /// up to position `visible` (metadata not acknowledged by then does not apply yet);
    /// `None` when all are. A metadata stream keeps only its last event.
    pub(crate) fn rules(&self, stream: &str, last: u64, visible: u64) -> Option<Rules> {
        if is_system(stream) {
            return Some(Rules::last_only(last));
        }
        if !self.has_lifecycle.load(Ordering::Acquire) {
            return None;
        }
        let l = self.lifecycle.read();
        let m = l.visible(stream, visible)?;
        Some(Rules::of(m, last, now_micros()))
    }

    /// Whether a read of the whole log (or by query) leaves `e` out: an event of a metadata
    /// stream, or one its stream's metadata no longer keeps.
    pub(crate) fn hides(&self, e: &RecordedEvent) -> bool {
        if is_system(&e.stream) {
            return true;
        }
        if !self.has_lifecycle.load(Ordering::Acquire) {
            return false;
        }
        if !self.lifecycle.read().streams.contains_key(&*e.stream) {
            return false;
        }
        // The version a read of the stream sees now, so that `$all` and the stream agree;
        // taken with no other lock held.
        let wm = self.watermark();
        let last = self
            .index
            .read()
            .visible_version(&e.stream, wm.location)
            .unwrap_or(0);
        let l = self.lifecycle.read();
        l.visible(&e.stream, wm.position)
            .is_some_and(|m| !Rules::of(m, last, now_micros()).keeps(e.version, e.timestamp))
    }

    /// Whether `stream` was hard-deleted by a metadata event at or before `position`.
    #[cfg(feature = "nats")]
    pub(crate) fn deleted_as_of(&self, stream: &str, position: u64) -> bool {
        self.has_lifecycle.load(Ordering::Acquire)
            && self
                .lifecycle
                .read()
                .streams
                .get(stream)
                .is_some_and(|(at, m)| m.deleted && *at <= position)
    }

    /// Whether every event `stream` has written is live and stays so: its metadata (if
    /// any) sets no rule that hides events. Only then do snapshots and cached states,
    /// folded over every event, stand for it.
    pub(crate) fn folds_whole(&self, stream: &str) -> bool {
        self.metadata_of(stream).is_none_or(|m| {
            !m.deleted
                && m.max_count.is_none()
                && m.max_age.is_none()
                && m.truncate_before.is_none()
        })
    }

    /// The metadata of `stream`, if it has any.
    pub(crate) fn metadata_of(&self, stream: &str) -> Option<StreamMetadata> {
        if !self.has_lifecycle.load(Ordering::Acquire) {
            return None;
        }
        self.lifecycle
            .read()
            .streams
            .get(stream)
            .map(|(_, m)| m.clone())
    }

    /// The metadata of `stream` and the position of the event that set it, if it has any.
    pub(crate) fn metadata_with_position(&self, stream: &str) -> Option<(u64, StreamMetadata)> {
        if !self.has_lifecycle.load(Ordering::Acquire) {
            return None;
        }
        self.lifecycle.read().streams.get(stream).cloned()
    }

    /// Fails with [`Error::StreamDeleted`] when `stream` was hard-deleted.
    pub(crate) fn check_not_deleted(&self, stream: &str) -> Result<()> {
        if self.metadata_of(stream).is_some_and(|m| m.deleted) {
            return Err(Error::StreamDeleted {
                stream: stream.to_string(),
            });
        }
        Ok(())
    }

    /// After a frame whose first event is at `first_position` is written: takes in the
    /// metadata its parts set.
    pub(crate) fn note_metadata(&self, parts: &[TxPart<'_>], first_position: u64) {
        let mut position = first_position;
        for part in parts {
            position += part.events.len() as u64;
            if let (Some(stream), Some(last)) =
                (stream_metadata::described(part.stream), part.events.last())
                && let Ok(m) = stream_metadata::decode(&last.payload)
            {
                self.set_rules(stream, position - 1, m);
            }
        }
    }

    fn set_rules(&self, stream: &str, position: u64, m: StreamMetadata) {
        let name: Arc<str> = Arc::from(stream);
        let mut l = self.lifecycle.write();
        if let Some((_, old)) = l.streams.insert(Arc::clone(&name), (position, m)) {
            l.previous.insert(name, old);
        }
        self.has_lifecycle.store(true, Ordering::Release);
    }

    /// Reads the metadata of `stream` from the log (the last event of its metadata stream)
    /// into memory; at open, for every metadata stream, and on a follower for those a frame
    /// it takes in writes.
    pub(crate) fn load_metadata(&self, metadata_stream: &str) -> Result<()> {
        let Some(stream) = stream_metadata::described(metadata_stream) else {
            return Ok(());
        };
        let found = {
            let ix = self.index.read();
            ix.version(metadata_stream).and_then(|v| {
                ix.locations(metadata_stream, v, 1, u64::MAX)
                    .and_then(|(name, locs)| Some((name, v, *locs.first()?)))
            })
        };
        let Some((name, version, loc)) = found else {
            return Ok(());
        };
        // A scavenge keeps the last event of a metadata stream.
        let Some((e, _)) = read_event(self, &mut SegmentCache::default(), &name, version, loc)?
        else {
            return Ok(());
        };
        let m = stream_metadata::decode(&e.payload).map_err(|reason| {
            let (ordinal, offset) = unpack(loc);
            let path = self
                .log
                .segment(ordinal)
                .map_or_else(|| self.dir.clone(), |s| s.path.clone());
            Error::corruption(
                path,
                offset,
                format!("metadata of stream {stream:?} (version {version} of {metadata_stream:?}): {reason}"),
            )
        })?;
        self.set_rules(stream, e.position, m);
        Ok(())
    }

    /// At open: every stream's metadata.
    pub(crate) fn load_lifecycle(&self) -> Result<()> {
        let names: Vec<Arc<str>> = self.index.read().metadata_streams();
        for name in names {
            self.load_metadata(&name)?;
        }
        Ok(())
    }

    /// How many streams have metadata (each has a metadata stream in the index).
    pub(crate) fn metadata_count(&self) -> usize {
        self.lifecycle.read().streams.len()
    }

    /// What a scavenge would erase now: events whose stream's metadata no longer keeps them,
    /// and older events of metadata streams, not erased yet; their count and the bytes of
    /// their records. Reads the record of each candidate (not of live events).
    pub(crate) fn reclaimable(&self) -> Result<(u64, u64)> {
        if !self.has_lifecycle.load(Ordering::Acquire) {
            return Ok((0, 0));
        }
        let now = now_micros();
        let mut streams: Vec<String> = Vec::new();
        for s in self.lifecycle.read().streams.keys() {
            streams.push(s.to_string());
            streams.push(stream_metadata::metadata_stream(s));
        }
        let (mut events, mut bytes) = (0, 0);
        let mut cache = SegmentCache::default();
        for stream in streams {
            let Some((last, locs)) = ({
                let ix = self.index.read();
                ix.version(&stream)
                    .and_then(|v| Some((v, ix.locations(&stream, 1, usize::MAX, u64::MAX)?.1)))
            }) else {
                continue;
            };
            let Some(rules) = self.rules_at(&stream, last, now) else {
                continue;
            };
            for (i, &loc) in locs.iter().enumerate() {
                let version = i as u64 + 1;
                if version >= rules.first_live && rules.oldest == 0 {
                    break;
                }
                if let Some((timestamp, len)) = record_at(self, &mut cache, loc)?
                    && !rules.keeps(version, timestamp)
                {
                    events += 1;
                    bytes += len;
                }
            }
        }
        Ok((events, bytes))
    }

    /// `Store::stream_metadata`: the metadata of `stream` and the version of its metadata
    /// stream (what `set_stream_metadata` expects), if it has any.
    pub(crate) fn stream_metadata(&self, stream: &str) -> Option<(u64, StreamMetadata)> {
        let version = self
            .index
            .read()
            .version(&stream_metadata::metadata_stream(stream))?;
        Some((version, self.metadata_of(stream)?))
    }

    /// `Store::set_stream_metadata`: appends `m` to the metadata stream of `stream`, which
    /// must be at `expected`; returns the metadata stream's new version.
    pub(crate) fn set_stream_metadata(
        self: &Arc<Self>,
        stream: &str,
        expected: ExpectedVersion,
        m: &StreamMetadata,
    ) -> Result<u64> {
        self.validate(stream, &[EventData::new("x", "")])?;
        if m.deleted {
            return Err(Error::InvalidArgument(format!(
                "stream {stream:?}: `deleted` is set by delete_stream, not by metadata"
            )));
        }
        validate_metadata(stream, m)?;
        let tx = Transaction::new().append(
            stream_metadata::metadata_stream(stream),
            expected,
            [metadata_event(m)],
        );
        let (r, _) = self.commit_system(&tx)?;
        Ok(r.appends.first().map_or(0, |a| a.last_version))
    }

    /// `Store::delete_stream`: checks that `stream` is at `expected` and writes its
    /// deletion (soft: `truncate_before` past its last version; hard: a tombstone) in one
    /// frame. Returns the stream's version when it was deleted.
    pub(crate) fn delete_stream(
        self: &Arc<Self>,
        stream: &str,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<Option<u64>> {
        self.validate(stream, &[EventData::new("x", "")])?;
        let meta_stream = stream_metadata::metadata_stream(stream);
        // Read, then commit on exactly what was read; a writer in between means once more.
        loop {
            self.check_not_deleted(stream)?;
            let (current, meta_version) = {
                let ix = self.index.read();
                (ix.version(stream), ix.version(&meta_stream))
            };
            crate::engine::append::check_expected(stream, expected, current)?;
            let mut m = self.metadata_of(stream).unwrap_or_default();
            match mode {
                DeleteMode::Soft => m.truncate_before = Some(current.unwrap_or(0) + 1),
                DeleteMode::Hard => {
                    m = StreamMetadata {
                        deleted: true,
                        ..StreamMetadata::default()
                    };
                }
            }
            let exact =
                |v: Option<u64>| v.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            let tx = Transaction::new()
                .append(
                    meta_stream.clone(),
                    exact(meta_version),
                    [metadata_event(&m)],
                )
                .expect(stream, exact(current));
            match self.commit_system(&tx) {
                Ok(_) => return Ok(current),
                Err(Error::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Commits a transaction of annal's own (to metadata streams, which `validate` refuses).
    fn commit_system(
        self: &Arc<Self>,
        tx: &Transaction,
    ) -> Result<(crate::transaction::CommitResult, Option<u64>)> {
        let written = self.write_transaction(tx);
        let (result, stamped) = self.after_conflict(written)?;
        self.settle(result.last_position, stamped.is_none())?;
        Ok((result, stamped))
    }
}

/// The timestamp and record length of the event at `loc`; `None` when it was erased.
fn record_at(engine: &Engine, cache: &mut SegmentCache, loc: u64) -> Result<Option<(u64, u64)>> {
    let (ordinal, offset) = unpack(loc);
    cache.segment(engine, ordinal);
    let (Some(seg), view) = cache.parts() else {
        return Ok(None);
    };
    if seg.is_erased(offset) {
        return Ok(None);
    }
    let (bytes, at) = seg.record_source(offset, view)?;
    let r = super::format::frame::read_record(&bytes, at, false)
        .map_err(|reason| Error::corruption(&seg.path, offset, reason))?;
    Ok((!r.erased).then(|| (r.timestamp, (r.end - at) as u64)))
}

fn metadata_event(m: &StreamMetadata) -> EventData {
    EventData::new(METADATA_TYPE, stream_metadata::encode(m))
}

fn validate_metadata(stream: &str, m: &StreamMetadata) -> Result<()> {
    let invalid = |why: String| Err(Error::InvalidArgument(format!("stream {stream:?}: {why}")));
    if m.max_count == Some(0) {
        return invalid("max_count must be at least 1".into());
    }
    if m.truncate_before == Some(0) {
        return invalid("truncate_before must be at least 1 (versions start at 1)".into());
    }
    if m.custom.len() > stream_metadata::MAX_CUSTOM {
        return invalid(format!(
            "custom metadata is {} bytes, more than {}",
            m.custom.len(),
            stream_metadata::MAX_CUSTOM
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rules_keep_what_every_rule_keeps() {
        let none = StreamMetadata::new();
        assert_eq!(Rules::of(&none, 10, 1000), Rules::ALL);
        let r = Rules::of(&StreamMetadata::new().max_count(3), 10, 1000);
        assert!(!r.keeps(7, 0) && r.keeps(8, 0) && r.keeps(10, 0));
        let r = Rules::of(&StreamMetadata::new().max_count(30), 10, 1000);
        assert!(r.keeps(1, 0));
        let r = Rules::of(
            &StreamMetadata::new().truncate_before(5).max_count(8),
            10,
            1000,
        );
        assert_eq!(r.first_live, 5);
        let r = Rules::of(
            &StreamMetadata::new().max_age(Duration::from_micros(100)),
            10,
            1000,
        );
        assert!(!r.keeps(10, 899) && r.keeps(10, 900));
        let dead = StreamMetadata {
            deleted: true,
            ..StreamMetadata::new()
        };
        assert!(!Rules::of(&dead, 10, 1000).keeps(10, u64::MAX - 1));
    }
}
