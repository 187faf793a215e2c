//! [`AnnalEventRepository`]: cqrs-es's [`PersistedEventRepository`] on an annal [`Store`].

use std::path::Path;
use std::sync::Arc;

use annal::{
    EventData, ExpectedVersion, Options, ReadOptions, RecordedEvent, Store, StoredSnapshot,
    Transaction,
};
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::AnnalAggregateError;
use crate::names;

/// How many events a replay stream buffers by default, as postgres-es.
pub const DEFAULT_STREAMING_CHANNEL_SIZE: usize = 200;

/// The snapshot kind (annal's name for what a snapshot's bytes are) of cqrs-es's snapshots.
const SNAPSHOT_KIND: &str = "cqrs-es";

/// The tag on the last event of every commit that carried a snapshot: how a load finds out
/// that the snapshot it got is older than the newest one committed (see
/// [`AnnalEventRepository::get_snapshot`]).
pub const SNAPSHOT_TAG: &str = "cqrs-es:snapshot";

/// The prefix of the tag that carries an event's `event_version`.
pub const EVENT_VERSION_TAG: &str = "cqrs-es:event_version=";

/// A snapshot as this crate stores it with annal's snapshot API.
#[derive(Serialize, Deserialize)]
struct SnapshotRecord<A = Value> {
    /// cqrs-es's count of snapshots of the aggregate (its optimistic lock).
    current_snapshot: usize,
    aggregate: A,
}

/// A snapshot record's count alone (of a record whose aggregate does not deserialize).
#[derive(Deserialize)]
struct SnapshotCount {
    current_snapshot: usize,
}

/// cqrs-es's event repository on annal: each aggregate instance is one annal stream,
/// `TYPE-ID` (so the aggregate type is the stream's category), whose versions are cqrs-es's
/// sequences. An event's type, payload (JSON) and metadata (JSON) are the annal event's
/// type, payload and metadata; its `event_version` is a tag, [`EVENT_VERSION_TAG`]`VERSION`.
/// A commit is one annal transaction: its events and, for snapshot and aggregate stores,
/// its snapshot (annal's snapshot API), with one sync.
///
/// The same API as postgres-es's `PostgresEventRepository`: a postgres-es user switches by
/// renaming (and [`insert_events`](Self::insert_events) is public here, to migrate events in
/// from another backend).
#[derive(Debug, Clone)]
pub struct AnnalEventRepository {
    store: Arc<Store>,
    stream_channel_size: usize,
}

impl AnnalEventRepository {
    /// A repository on an open store (which the application may use for anything else too).
    pub fn new(store: Arc<Store>) -> Self {
        AnnalEventRepository {
            store,
            stream_channel_size: DEFAULT_STREAMING_CHANNEL_SIZE,
        }
    }

    /// Opens (or creates) the store in `dir` and a repository on it.
    ///
    /// # Errors
    ///
    /// What [`Store::open`] fails with, converted: [`AnnalAggregateError::ConnectionError`]
    /// for I/O errors and a directory another process has open.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Self, AnnalAggregateError> {
        Ok(Self::new(Arc::new(Store::open(dir, options)?)))
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// How many events [`stream_events`](PersistedEventRepository::stream_events) and
    /// [`stream_all_events`](PersistedEventRepository::stream_all_events) read ahead of
    /// their consumer (default [`DEFAULT_STREAMING_CHANNEL_SIZE`]; at least 1).
    pub fn with_streaming_channel_size(self, stream_channel_size: usize) -> Self {
        AnnalEventRepository {
            stream_channel_size: stream_channel_size.max(1),
            ..self
        }
    }

    /// Appends `events`, all or nothing, in one transaction: for each aggregate instance in
    /// the batch, its events must have consecutive sequences that continue its stream. Events
    /// of several aggregates (of any types) may share a batch: how events are migrated in
    /// from another backend. The transaction's frame holds them grouped by aggregate, in the
    /// order each aggregate first appears in the batch (so positions follow that order, and
    /// each aggregate's events keep theirs).
    ///
    /// # Errors
    ///
    /// [`AnnalAggregateError::OptimisticLock`] when an aggregate's first sequence in the
    /// batch does not follow its stored events (taken already, or leaving a gap) or a
    /// sequence repeats an earlier one of the batch; [`AnnalAggregateError::UnknownError`]
    /// for a gap between the batch's own sequences, or an event annal refuses (an empty
    /// type);
    /// [`AnnalAggregateError::ConnectionError`] when the store cannot be written. Nothing is
    /// written then.
    pub async fn insert_events(
        &self,
        events: &[SerializedEvent],
    ) -> Result<(), AnnalAggregateError> {
        self.commit(events, None).await
    }

    /// Commits `events` and, if given, `(stream, snapshot bytes)` with them (empty bytes:
    /// no snapshot, but the stream's last event is tagged as if there were one).
    async fn commit(
        &self,
        events: &[SerializedEvent],
        snapshot: Option<(String, Vec<u8>)>,
    ) -> Result<(), AnnalAggregateError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = Transaction::new();
        for (stream, group) in group_by_stream(events)? {
            let first = group.first().map_or(1, |e| e.sequence);
            let snapshotted = snapshot.as_ref().is_some_and(|(s, _)| *s == stream);
            let data = group
                .iter()
                .enumerate()
                .map(|(i, e)| event_data(e, snapshotted && i + 1 == group.len()))
                .collect::<Result<Vec<_>, _>>()?;
            let expected = ExpectedVersion::Exact(u64::try_from(first - 1).map_err(|_| {
                AnnalAggregateError::unknown(format!(
                    "stream {stream}: sequence {first} out of range"
                ))
            })?);
            tx = tx.append(stream, expected, data);
        }
        if let Some((stream, bytes)) = snapshot.filter(|(_, bytes)| !bytes.is_empty()) {
            tx = tx.snapshot(stream, SNAPSHOT_KIND, bytes);
        }
        self.store.commit_async(tx).await?;
        Ok(())
    }

    /// The newest snapshot of `stream` that this version can read, with cqrs-es's snapshot
    /// count.
    fn snapshot_record(
        &self,
        stream: &str,
    ) -> Result<Option<(StoredSnapshot, SnapshotRecord)>, AnnalAggregateError> {
        match self.store.load_snapshot(stream, SNAPSHOT_KIND, u64::MAX)? {
            // A record this version cannot read is as good as none: rebuild from the events.
            Some(s) => Ok(serde_json::from_slice(&s.state)
                .ok()
                .map(|record| (s, record))),
            None => Ok(None),
        }
    }

    /// The aggregate's state after `batch` (its events about to be committed), from `start`
    /// (the previous snapshot's state and version) and the stored events after it; `None` when a stored event may
    /// need one of cqrs-es's upcasters (which the repository does not see) to mean what it
    /// means: one that does not deserialize as `A::Event`, or whose stored `event_version`
    /// is not the one the application gives that event now.
    fn fold<A: Aggregate>(
        &self,
        stream: &str,
        start: Option<(A, u64)>,
        batch: &[&SerializedEvent],
    ) -> Result<Option<A>, AnnalAggregateError> {
        let (mut state, from) = start.unwrap_or_else(|| (A::default(), 0));
        let first = batch.first().map_or(1, |e| e.sequence);
        let first = u64::try_from(first).unwrap_or(u64::MAX);
        if first > from + 1 {
            let stored = ReadOptions::forward_from(from + 1).limit(first - from - 1);
            for e in self.store.read_stream(stream, stored)? {
                let e = e?;
                let Ok(event) = serde_json::from_slice::<A::Event>(&e.payload) else {
                    return Ok(None);
                };
                if stored_event_version(&e) != event.event_version() {
                    return Ok(None);
                }
                state.apply(event);
            }
        }
        // The batch is the application's own, as it writes events now.
        for e in batch {
            match serde_json::from_value::<A::Event>(e.payload.clone()) {
                Ok(event) => state.apply(event),
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(state))
    }

    fn read_events(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: usize,
    ) -> Result<Vec<SerializedEvent>, AnnalAggregateError> {
        let stream = names::aggregate_stream(aggregate_type, aggregate_id);
        let from = u64::try_from(after).map_or(u64::MAX, |a| a.saturating_add(1));
        self.store
            .read_stream(&stream, ReadOptions::forward_from(from))?
            .map(|e| serialized(aggregate_type, aggregate_id, &e?))
            .collect()
    }
}

impl PersistedEventRepository for AnnalEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        Ok(self.read_events(A::TYPE, aggregate_id, 0)?)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        Ok(self.read_events(A::TYPE, aggregate_id, last_sequence)?)
    }

    /// The newest snapshot. Where the snapshot cannot be trusted to be the aggregate's
    /// newest state, this returns one whose state `A` cannot deserialize instead: cqrs-es
    /// then rebuilds the aggregate from all its events, with its upcasters, as it does after
    /// a change of the aggregate's structure. (An aggregate store would otherwise resume
    /// from it, or from nothing, and apply no event after it, and fail every command with a
    /// conflict.) That is the case:
    /// - when the aggregate's last event says it was committed with a newer snapshot than
    ///   the one found: snapshots are annal's, written after their events' frame without a
    ///   sync of their own, so a crash or power loss can take the newest one away while its
    ///   events stay (and a load racing a commit can find its events before its snapshot);
    /// - when the aggregate has events but no snapshot this version can read (events
    ///   migrated in with [`insert_events`](AnnalEventRepository::insert_events), or
    ///   written by an event store before the switch to an aggregate store).
    ///
    /// A snapshot store's loads rebuild from all events in both cases anyway.
    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let stream = names::aggregate_stream(A::TYPE, aggregate_id);
        let found = self.snapshot_record(&stream)?;
        let snapshot_version = found.as_ref().map_or(0, |(s, _)| s.version);
        let current = self
            .store
            .stream_version(&stream)
            .map_err(AnnalAggregateError::from)?
            .unwrap_or(0);
        let distrust = if current == 0 || (found.is_some() && current <= snapshot_version) {
            // No events, or the snapshot is at the last one: nothing to read.
            None
        } else if found.is_none() {
            Some(format!(
                "annal-es: {stream} has events up to version {current} and no snapshot: \
                 rebuild from the events"
            ))
        } else {
            let last = self
                .store
                .read_stream(&stream, ReadOptions::backward().limit(1))
                .map_err(AnnalAggregateError::from)?
                .next()
                .transpose()
                .map_err(AnnalAggregateError::from)?;
            last.filter(|last| {
                last.version > snapshot_version && last.tags.iter().any(|t| t == SNAPSHOT_TAG)
            })
            .map(|last| {
                format!(
                    "annal-es: the snapshot of {stream} committed with version {} is missing \
                     (the newest found is at version {snapshot_version}): rebuild from the \
                     events",
                    last.version
                )
            })
        };
        if let Some(why) = distrust {
            return Ok(Some(SerializedSnapshot {
                aggregate_id: aggregate_id.to_string(),
                aggregate: undeserializable::<A>(why)?,
                current_sequence: usize::try_from(current).unwrap_or(usize::MAX),
                current_snapshot: found.map_or(0, |(_, r)| r.current_snapshot),
            }));
        }
        Ok(found.map(|(s, record)| SerializedSnapshot {
            aggregate_id: aggregate_id.to_string(),
            aggregate: record.aggregate,
            current_sequence: usize::try_from(s.version).unwrap_or(usize::MAX),
            current_snapshot: record.current_snapshot,
        }))
    }

    /// Appends the events; with a snapshot update `(aggregate_id, state, n)`, saves the
    /// aggregate's `n`th snapshot in the same transaction, after checking that the one
    /// stored is the `n - 1`th (`n` = 1: the first; it replaces any older one).
    ///
    /// The snapshot saved is not `state` but the fold of the aggregate's events up to the
    /// batch's last one: the previous snapshot (if any), the stored events after it and the
    /// batch's, applied with `A::apply`. cqrs-es 0.5.0 hands over a state that has each
    /// event its command wrote through the `EventSink` applied twice (the sink applies it,
    /// then the store again before snapshotting), and, for a snapshot store, one that stops
    /// at a multiple of the snapshot size while the commit goes on. Should a stored event
    /// need one of cqrs-es's upcasters (which the repository does not see; see `fold`), no
    /// snapshot is saved, and the next load rebuilds the aggregate from its events.
    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some((aggregate_id, _handed_over, current_snapshot)) = snapshot_update else {
            return Ok(self.commit(events, None).await?);
        };
        let stream = names::aggregate_stream(A::TYPE, &aggregate_id);
        // The same stream exactly when the same type and id (the names are one to one).
        let batch: Vec<&SerializedEvent> = events
            .iter()
            .filter(|e| e.aggregate_type == A::TYPE && e.aggregate_id == aggregate_id)
            .collect();
        if batch.is_empty() {
            return Err(AnnalAggregateError::unknown(format!(
                "aggregate {stream}: a snapshot is saved with the events it follows, and \
                 the batch has none of this aggregate"
            ))
            .into());
        }
        // Parsed straight into `A`: the fold starts from it.
        let previous = self
            .store
            .load_snapshot(&stream, SNAPSHOT_KIND, u64::MAX)
            .map_err(AnnalAggregateError::from)?;
        let (count, start) = match &previous {
            Some(s) => match serde_json::from_slice::<SnapshotRecord<A>>(&s.state) {
                Ok(r) => (Some(r.current_snapshot), Some((r.aggregate, s.version))),
                Err(_) => (
                    serde_json::from_slice::<SnapshotCount>(&s.state)
                        .ok()
                        .map(|c| c.current_snapshot),
                    None,
                ),
            },
            None => (None, None),
        };
        if current_snapshot > 1 && count != Some(current_snapshot - 1) {
            return Err(PersistenceError::OptimisticLockError);
        }
        let snapshot = match self.fold::<A>(&stream, start, &batch)? {
            Some(aggregate) => serde_json::to_vec(&SnapshotRecord {
                current_snapshot,
                aggregate: &aggregate,
            })
            .map_err(serialization)?,
            // Tagged all the same: the next load sees that a snapshot is missing.
            None => Vec::new(),
        };
        Ok(self.commit(events, Some((stream, snapshot))).await?)
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let stream = names::aggregate_stream(A::TYPE, aggregate_id);
        let events = self
            .store
            .read_stream(&stream, ReadOptions::forward())
            .map_err(AnnalAggregateError::from)?;
        let id = aggregate_id.to_string();
        Ok(self.replay(events.map(move |e| {
            e.map_err(AnnalAggregateError::from)
                .and_then(|e| serialized(A::TYPE, &id, &e))
        })))
    }

    /// Every event of aggregate type `A`, in the order they were committed, read through
    /// annal's category index (the other types' events are never read).
    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let category = names::category(A::TYPE);
        let events = self
            .store
            .read_category(&category, ReadOptions::forward())
            .map_err(AnnalAggregateError::from)?;
        Ok(self.replay(events.map(move |e| {
            let e = e.map_err(AnnalAggregateError::from)?;
            let id = names::aggregate_id(&category, &e.stream).ok_or_else(|| {
                AnnalAggregateError::unknown(format!(
                    "stream {} is not one of {category}",
                    e.stream
                ))
            })?;
            serialized(A::TYPE, id, &e)
        })))
    }
}

impl AnnalEventRepository {
    /// A replay stream fed by a task that reads `events` and stops when the consumer drops
    /// the stream.
    fn replay(
        &self,
        events: impl Iterator<Item = Result<SerializedEvent, AnnalAggregateError>> + Send + 'static,
    ) -> ReplayStream {
        let (mut feed, stream) = ReplayStream::new(self.stream_channel_size);
        tokio::spawn(async move {
            for e in events {
                if feed.push(e.map_err(PersistenceError::from)).await.is_err() {
                    return;
                }
            }
        });
        stream
    }
}

/// A JSON value that `A` does not deserialize from, carrying `why`: the first of a string,
/// a number and an array that fails. An aggregate that accepts all three (a hand-written
/// `Deserialize`) gets the error instead, which its load then reports.
fn undeserializable<A: Aggregate>(why: String) -> Result<Value, AnnalAggregateError> {
    let candidates = [
        Value::String(why.clone()),
        Value::from(-1.5),
        Value::Array(vec![Value::String(why.clone()), Value::Null]),
    ];
    candidates
        .into_iter()
        .find(|v| serde_json::from_value::<A>(v.clone()).is_err())
        .ok_or_else(|| AnnalAggregateError::DeserializationError(why.into()))
}

/// The batch's events by stream, in the order each stream first appears, each group checked
/// for consecutive sequences.
fn group_by_stream(
    events: &[SerializedEvent],
) -> Result<Vec<(String, Vec<&SerializedEvent>)>, AnnalAggregateError> {
    let mut groups: Vec<(String, Vec<&SerializedEvent>)> = Vec::new();
    for e in events {
        let stream = names::aggregate_stream(&e.aggregate_type, &e.aggregate_id);
        match groups.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, group)) => {
                let previous = group.last().map_or(0, |p| p.sequence);
                if e.sequence <= previous {
                    // Taken by an earlier event of the batch: as a unique key would say.
                    return Err(AnnalAggregateError::OptimisticLock);
                }
                if e.sequence != previous + 1 {
                    return Err(AnnalAggregateError::unknown(format!(
                        "aggregate {stream}: sequence {} follows {previous} in the batch: an \
                         aggregate's sequences are consecutive",
                        e.sequence
                    )));
                }
                group.push(e);
            }
            None => {
                if e.sequence == 0 {
                    return Err(AnnalAggregateError::unknown(format!(
                        "aggregate {stream}: sequences start at 1"
                    )));
                }
                groups.push((stream, vec![e]));
            }
        }
    }
    Ok(groups)
}

/// The annal event for `e`; `snapshotted` for the last event of a commit that carries a
/// snapshot.
fn event_data(e: &SerializedEvent, snapshotted: bool) -> Result<EventData, AnnalAggregateError> {
    let payload = serde_json::to_vec(&e.payload).map_err(serialization)?;
    let metadata = serde_json::to_vec(&e.metadata).map_err(serialization)?;
    let version = format!("{EVENT_VERSION_TAG}{}", e.event_version);
    let tags = std::iter::once(version).chain(snapshotted.then(|| SNAPSHOT_TAG.to_string()));
    Ok(EventData::new(e.event_type.clone(), payload)
        .with_metadata(metadata)
        .with_tags(tags))
}

/// The `event_version` an event was stored with ("" for an event written without one).
fn stored_event_version(e: &RecordedEvent) -> &str {
    e.tags
        .iter()
        .find_map(|t| t.strip_prefix(EVENT_VERSION_TAG))
        .unwrap_or_default()
}

/// A value that JSON cannot hold (a map with keys that are not strings): not a
/// deserialization problem.
fn serialization(e: serde_json::Error) -> AnnalAggregateError {
    AnnalAggregateError::UnknownError(Box::new(e))
}

fn serialized(
    aggregate_type: &str,
    aggregate_id: &str,
    e: &RecordedEvent,
) -> Result<SerializedEvent, AnnalAggregateError> {
    let event_version = stored_event_version(e).to_string();
    let metadata = if e.metadata.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&e.metadata)?
    };
    Ok(SerializedEvent {
        aggregate_id: aggregate_id.to_string(),
        sequence: usize::try_from(e.version).map_err(|_| {
            AnnalAggregateError::unknown(format!(
                "stream {}: version {} out of range",
                e.stream, e.version
            ))
        })?,
        aggregate_type: aggregate_type.to_string(),
        event_type: e.event_type.clone(),
        event_version,
        payload: serde_json::from_slice(&e.payload)?,
        metadata,
    })
}
