//! [`AnnalEventStore`]: disintegrate's [`EventStore`] on an annal [`Store`].

use std::error::Error as StdError;
use std::marker::PhantomData;
use std::sync::Arc;

use annal::{
    AppendCondition, EventData, ExpectedVersion, ReadOptions, RecordedEvent, Store, Transaction,
};
use async_trait::async_trait;
use disintegrate::serde::Serde;
use disintegrate::{Event, EventStore, PersistedEvent, StreamItem, StreamQuery};
use futures::stream::{self, BoxStream, StreamExt};

use crate::error::Error;
use crate::query;

/// An event's id: its annal position, as an `i64` (disintegrate-postgres's `PgEventId`).
pub type AnnalEventId = i64;

/// The annal stream the events go to unless [`AnnalEventStore::with_stream`] says another.
pub const DEFAULT_STREAM: &str = "disintegrate";

/// Disintegrate's event store on annal; see the crate's docs for how events are stored.
///
/// Reads (`stream`) run inline in the stream's polls, from the segments' maps; appends are
/// annal's async transactions, completed by group commit.
pub struct AnnalEventStore<E, S> {
    store: Arc<Store>,
    serde: S,
    stream: String,
    _events: PhantomData<fn() -> E>,
}

impl<E, S: Clone> Clone for AnnalEventStore<E, S> {
    fn clone(&self) -> Self {
        AnnalEventStore {
            store: Arc::clone(&self.store),
            serde: self.serde.clone(),
            stream: self.stream.clone(),
            _events: PhantomData,
        }
    }
}

impl<E, S> std::fmt::Debug for AnnalEventStore<E, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnalEventStore")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl<E: Event + Clone, S: Serde<E>> AnnalEventStore<E, S> {
    /// An event store in `store` (which the application may use for anything else too),
    /// encoding events with `serde` (`disintegrate::serde::json::Json::<E>::default()`).
    pub fn new(store: Arc<Store>, serde: S) -> Self {
        AnnalEventStore {
            store,
            serde,
            stream: DEFAULT_STREAM.to_string(),
            _events: PhantomData,
        }
    }

    /// Keeps the events in the annal stream `stream` (several event stores can share one
    /// annal store, each in its own stream; their events of the same types and identifiers
    /// still count for each other's append checks).
    pub fn with_stream(self, stream: impl Into<String>) -> Self {
        AnnalEventStore {
            stream: stream.into(),
            ..self
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn event_data(&self, e: &E) -> EventData {
        let tags = e
            .domain_ids()
            .iter()
            .map(|(ident, value)| query::tag(ident, value))
            .collect::<Vec<_>>();
        EventData::new(e.name(), self.serde.serialize(e.clone())).with_tags(tags)
    }

    /// The appended events with their ids, `first` being the first one's position.
    fn persisted(
        events: Vec<E>,
        first: u64,
    ) -> Result<Vec<PersistedEvent<AnnalEventId, E>>, Error> {
        events
            .into_iter()
            .zip(first..)
            .map(|(e, position)| Ok(PersistedEvent::new(to_id(position)?, e)))
            .collect()
    }
}

fn to_id(position: u64) -> Result<AnnalEventId, Error> {
    AnnalEventId::try_from(position).map_err(|_| Error::IdOutOfRange(position.to_string()))
}

fn to_position(id: AnnalEventId) -> Result<u64, Error> {
    u64::try_from(id).map_err(|_| Error::IdOutOfRange(id.to_string()))
}

#[async_trait]
impl<E, S> EventStore<AnnalEventId, E> for AnnalEventStore<E, S>
where
    E: Event + Clone + Send + Sync,
    S: Serde<E> + Send + Sync,
{
    type Error = Error;

    /// The events `query` selects, in id order, then `End` with the position read up to:
    /// the store's acknowledged position when the stream began, a position no later append
    /// can come before.
    fn stream<'a, QE>(
        &'a self,
        query: &'a StreamQuery<AnnalEventId, QE>,
    ) -> BoxStream<'a, Result<StreamItem<AnnalEventId, QE>, Self::Error>>
    where
        QE: TryFrom<E> + Event + 'static + Clone + Send + Sync,
        <QE as TryFrom<E>>::Error: StdError + 'static + Send + Sync,
    {
        let epoch = self.store.last_position();
        let origin = query
            .filters()
            .iter()
            .map(|f| f.origin())
            .min()
            .unwrap_or_default();
        let from = u64::try_from(origin).unwrap_or(0).saturating_add(1);
        let selection = query::to_annal(query);
        let read = self
            .store
            .read_query(&selection, ReadOptions::forward_from(from))
            .map_err(Error::from);
        let events = match read {
            Ok(events) => events,
            Err(e) => return stream::once(async move { Err(e) }).boxed(),
        };
        let matching = events
            .take_while(move |e| e.as_ref().map_or(true, |e| e.position <= epoch))
            .filter_map(move |e| self.decode(query, e).transpose());
        stream::iter(matching)
            .chain(stream::once(
                async move { to_id(epoch).map(StreamItem::End) },
            ))
            .boxed()
    }

    /// Appends `events` if no event `query` selects was appended after `last_event_id`
    /// (else [`Error::Concurrency`], nothing appended): one annal transaction whose append
    /// condition is the query, decided under the writer's lock with the append.
    async fn append<QE>(
        &self,
        events: Vec<E>,
        query: StreamQuery<AnnalEventId, QE>,
        last_event_id: AnnalEventId,
    ) -> Result<Vec<PersistedEvent<AnnalEventId, E>>, Self::Error>
    where
        E: Clone + 'async_trait,
        QE: Event + 'static + Clone + Send + Sync,
    {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let data: Vec<EventData> = events.iter().map(|e| self.event_data(e)).collect();
        let mut tx = Transaction::new().append(self.stream.clone(), ExpectedVersion::Any, data);
        if !query.filters().is_empty() {
            let selection = query::to_annal(&query);
            tx = tx.condition(AppendCondition::new(selection).after(to_position(last_event_id)?));
        }
        match self.store.commit_async(tx).await {
            Ok(r) => Self::persisted(events, r.first_position),
            Err(annal::Error::AppendConditionFailed { .. }) => Err(Error::Concurrency),
            Err(e) => Err(Error::Store(e)),
        }
    }

    /// Appends `events` without a check.
    async fn append_without_validation(
        &self,
        events: Vec<E>,
    ) -> Result<Vec<PersistedEvent<AnnalEventId, E>>, Self::Error>
    where
        E: Clone + 'async_trait,
    {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let data: Vec<EventData> = events.iter().map(|e| self.event_data(e)).collect();
        let r = self
            .store
            .append_async(&self.stream, ExpectedVersion::Any, &data)
            .await?;
        Self::persisted(events, r.first_position)
    }
}

impl<E, S> AnnalEventStore<E, S>
where
    E: Event + Clone + Send + Sync,
    S: Serde<E> + Send + Sync,
{
    /// `e` as the query's event, if it is one of this store's and one the query selects
    /// (origins included).
    fn decode<QE>(
        &self,
        query: &StreamQuery<AnnalEventId, QE>,
        e: annal::Result<RecordedEvent>,
    ) -> Result<Option<StreamItem<AnnalEventId, QE>>, Error>
    where
        QE: TryFrom<E> + Event + Clone,
        <QE as TryFrom<E>>::Error: StdError + 'static + Send + Sync,
    {
        let e = e?;
        if *e.stream != *self.stream {
            return Ok(None);
        }
        let id = to_id(e.position)?;
        let tags: Vec<&str> = e.tags.iter().collect();
        if !query::matches(query, id, &e.event_type, &tags) {
            return Ok(None);
        }
        let event: E = self.serde.deserialize(e.payload.to_vec())?;
        let event = QE::try_from(event).map_err(|err| Error::QueryEventMapping(Box::new(err)))?;
        Ok(Some(StreamItem::Event(PersistedEvent::new(id, event))))
    }
}
