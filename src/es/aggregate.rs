//! Aggregates: state folded from a stream's events, commands that become new events, and
//! loads that resume from the latest snapshot.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::Engine;
use crate::engine::read::ReadOptions;
use crate::error::{Error, Result};
use crate::es::EsState;
use crate::es::codec::{Bincode, Codec};
use crate::es::snapshot::{self, Kind};
use crate::event::{AppendResult, EventData, ExpectedVersion, RecordedEvent};

/// A consistency boundary whose state is the fold of one stream's events.
///
/// ```
/// use annal::Aggregate;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default, Clone, Serialize, Deserialize)]
/// struct Counter { value: i64 }
///
/// #[derive(Serialize, Deserialize)]
/// enum CounterEvent { Added(i64) }
///
/// struct Add(i64);
///
/// impl Aggregate for Counter {
///     type Event = CounterEvent;
///     type Command = Add;
///     type Error = String;
///     fn event_type(_: &CounterEvent) -> &'static str { "Added" }
///     fn apply(&mut self, CounterEvent::Added(n): &CounterEvent) { self.value += n }
///     fn handle(&self, Add(n): Add) -> Result<Vec<CounterEvent>, String> {
///         if self.value + n < 0 { return Err("would go negative".into()) }
///         Ok(vec![CounterEvent::Added(n)])
///     }
/// }
/// ```
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The facts this aggregate records.
    type Event: Serialize + DeserializeOwned;
    /// What it is asked to do.
    type Command;
    /// Why it refuses a command.
    type Error;
    /// The shape of the state as saved in snapshots: bump it when the state's shape changes,
    /// and snapshots of other versions are ignored (and replaced).
    const SNAPSHOT_VERSION: u32 = 1;

    /// The name snapshots are filed under; defaults to the Rust type name.
    fn aggregate_type() -> &'static str {
        std::any::type_name::<Self>()
    }
    /// The event type recorded in the log, such as `"ItemAdded"`.
    fn event_type(event: &Self::Event) -> &'static str;
    /// Folds one event into the state. Never fails: events are facts.
    fn apply(&mut self, event: &Self::Event);
    /// Decides what a command means given the current state: new events, or a refusal.
    ///
    /// # Errors
    ///
    /// `Self::Error` when the command is refused by the state: nothing is appended.
    fn handle(&self, command: Self::Command) -> std::result::Result<Vec<Self::Event>, Self::Error>;
}

/// An aggregate's state as of some version of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The stream version it includes (0: no events).
    pub version: u64,
    /// The version of the snapshot the load started from, if it started from one.
    pub snapshot_version: Option<u64>,
    /// Events folded on top of the snapshot (or cached state, or the default state).
    pub replayed: u64,
    /// Whether it started from the in-memory cache of recently used states.
    pub cached: bool,
}

/// What [`Repository::execute`] did.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The events the command produced (empty: nothing to record, nothing appended).
    pub events: Vec<A::Event>,
    /// The state after them.
    pub state: A,
    /// The stream version after them.
    pub version: u64,
    /// Where they were appended.
    pub appended: Option<AppendResult>,
    /// How many times the command was run (more than 1 after version conflicts).
    pub attempts: u32,
}

/// Why [`Repository::execute`] failed.
#[derive(Debug)]
pub enum ExecuteError<E> {
    /// The aggregate refused the command; nothing was written.
    Domain(E),
    /// The store failed, or version conflicts outlasted the retries
    /// ([`Error::WrongExpectedVersion`]).
    Store(Error),
}

impl<E: fmt::Display> fmt::Display for ExecuteError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecuteError::Domain(e) => write!(f, "command rejected: {e}"),
            ExecuteError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for ExecuteError<E> {}

impl<E> From<Error> for ExecuteError<E> {
    fn from(e: Error) -> Self {
        ExecuteError::Store(e)
    }
}

/// What an attempt at a command decided: done (no events), or append these.
enum Decision<A: Aggregate> {
    Done(Executed<A>),
    Append(Loaded<A>, Vec<A::Event>, Vec<EventData>),
}

/// Loads and runs commands against one aggregate type; from [`Store::aggregate`](crate::Store::aggregate).
pub struct Repository<'s, A, C = Bincode> {
    engine: &'s Arc<Engine>,
    es: &'s EsState,
    retries: u32,
    kind: Kind,
    _types: PhantomData<fn() -> (A, C)>,
}

impl<A, C> fmt::Debug for Repository<'_, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &self.kind.aggregate)
            .field("retries", &self.retries)
            .finish()
    }
}

impl<'s, A: Aggregate, C: Codec> Repository<'s, A, C> {
    pub(crate) fn new(engine: &'s Arc<Engine>, es: &'s EsState) -> Self {
        Repository {
            engine,
            es,
            retries: 3,
            kind: Kind {
                aggregate: A::aggregate_type().into(),
                schema: A::SNAPSHOT_VERSION,
                codec: C::NAME.into(),
            },
            _types: PhantomData,
        }
    }

    /// How many times [`execute`](Self::execute) reloads and retries after a version
    /// conflict before returning it (default 3).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The current state of `stream`: from the cache or the latest snapshot, plus the events
    /// after it. Takes a snapshot when the stream has moved `snapshot_every` events past its
    /// last one.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when an event or the snapshot cannot be decoded, [`Error::Corruption`]
    /// or [`Error::Io`] from reading the log.
    pub fn load(&self, stream: &str) -> Result<Loaded<A>> {
        let current = self.engine.stream_version(stream).unwrap_or(0);
        self.load_to(stream, current, current)
    }

    /// The state of `stream` as of `version` (or its current version, if lower), from the
    /// nearest snapshot at or below it.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub fn load_at(&self, stream: &str, version: u64) -> Result<Loaded<A>> {
        let current = self.engine.stream_version(stream).unwrap_or(0);
        self.load_to(stream, version.min(current), current)
    }

    /// Loads `stream`, lets the aggregate handle `command`, and appends the events it produces
    /// with [`ExpectedVersion::Exact`] of the version it loaded. On a version conflict it
    /// reloads and runs the command again, up to [`max_retries`](Self::max_retries) times.
    ///
    /// # Errors
    ///
    /// [`ExecuteError::Domain`] when [`Aggregate::handle`] refuses the command (nothing is
    /// written); [`ExecuteError::Store`] with [`Error::WrongExpectedVersion`] when the stream
    /// kept moving through every retry, or with any other store error (codec, I/O, a poisoned
    /// store).
    pub fn execute(
        &self,
        stream: &str,
        command: A::Command,
    ) -> std::result::Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (loaded, events, data) = match self.decide(stream, command.clone(), attempts)? {
                Decision::Done(executed) => return Ok(executed),
                Decision::Append(loaded, events, data) => (loaded, events, data),
            };
            let appended =
                self.engine
                    .append(stream, ExpectedVersion::Exact(loaded.version), &data);
            if let Some(done) = self.attempted(stream, loaded, events, &data, appended, attempts) {
                return done;
            }
        }
    }

    /// [`execute`](Self::execute) for async code (feature `async`): the append is
    /// [`Store::append_async`](crate::Store::append_async), so a task waiting for its sync
    /// holds no thread. Loading the state (the cache, a snapshot, the events after it) is
    /// done inline, as reads are.
    ///
    /// # Errors
    ///
    /// As [`execute`](Self::execute).
    #[cfg(feature = "async")]
    pub async fn execute_async(
        &self,
        stream: &str,
        command: A::Command,
    ) -> std::result::Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (loaded, events, data) = match self.decide(stream, command.clone(), attempts)? {
                Decision::Done(executed) => return Ok(executed),
                Decision::Append(loaded, events, data) => (loaded, events, data),
            };
            let appended = self
                .engine
                .append_async(stream, ExpectedVersion::Exact(loaded.version), &data)
                .await;
            if let Some(done) = self.attempted(stream, loaded, events, &data, appended, attempts) {
                return done;
            }
        }
    }

    /// What an attempt's append means: the command done (or failed), or `None` to reload
    /// and run it again after a version conflict.
    fn attempted(
        &self,
        stream: &str,
        loaded: Loaded<A>,
        events: Vec<A::Event>,
        data: &[EventData],
        appended: Result<AppendResult>,
        attempts: u32,
    ) -> Option<std::result::Result<Executed<A>, ExecuteError<A::Error>>> {
        match appended {
            Ok(r) => Some(self.record(stream, loaded, events, data, r, attempts)),
            // The append returned once the newer events were readable: reload.
            Err(Error::WrongExpectedVersion { .. }) if attempts <= self.retries => None,
            Err(e) => Some(Err(ExecuteError::Store(e))),
        }
    }

    /// One attempt's decision: loads the state and runs the command; either nothing to
    /// append, or the events with their encodings.
    fn decide(
        &self,
        stream: &str,
        command: A::Command,
        attempts: u32,
    ) -> std::result::Result<Decision<A>, ExecuteError<A::Error>> {
        let loaded = self.load(stream)?;
        let events = loaded.state.handle(command).map_err(ExecuteError::Domain)?;
        if events.is_empty() {
            return Ok(Decision::Done(Executed {
                events,
                state: loaded.state,
                version: loaded.version,
                appended: None,
                attempts,
            }));
        }
        let data = events
            .iter()
            .map(|e| {
                let bytes = C::encode(e).map_err(|reason| Error::Codec {
                    stream: stream.to_string(),
                    version: None,
                    reason,
                })?;
                Ok(EventData::new(A::event_type(e), bytes))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Decision::Append(loaded, events, data))
    }

    /// After the append: folds the appended events, caches the state and takes a snapshot
    /// if one is due.
    fn record(
        &self,
        stream: &str,
        loaded: Loaded<A>,
        events: Vec<A::Event>,
        data: &[EventData],
        r: AppendResult,
        attempts: u32,
    ) -> std::result::Result<Executed<A>, ExecuteError<A::Error>> {
        // Fold what the log holds (the events as decoded from their bytes), so the cached
        // state is what a replay gives even for a codec that does not round-trip every field.
        let mut state = loaded.state;
        for d in data {
            let e = C::decode::<A::Event>(&d.payload).map_err(|reason| Error::Codec {
                stream: stream.to_string(),
                version: None,
                reason,
            })?;
            state.apply(&e);
        }
        if self.engine.folds_whole(stream) {
            self.cache().put::<A, C>(stream, r.last_version, &state);
            self.maybe_snapshot(stream, &state, r.last_version, None)?;
        }
        Ok(Executed {
            events,
            state,
            version: r.last_version,
            appended: Some(r),
            attempts,
        })
    }

    fn cache(&self) -> &StateCache {
        &self.es.aggregate_cache
    }

    /// Loads the state as of `target`; `current` is the stream's version now.
    fn load_to(&self, stream: &str, target: u64, current: u64) -> Result<Loaded<A>> {
        self.engine.check_stream_retained(stream)?;
        let mut loaded = Loaded {
            state: A::default(),
            version: 0,
            snapshot_version: None,
            replayed: 0,
            cached: false,
        };
        // A stream whose metadata hides some of its events is the fold of the rest: no cached
        // state or snapshot (folded over every event) stands for that.
        let whole = self.engine.folds_whole(stream);
        let cached = self
            .cache()
            .get::<A, C>(stream)
            .filter(|(version, _)| whole && *version <= target);
        let floor = cached.as_ref().map_or(0, |(version, _)| *version);
        // A snapshot is only worth it when it is newer than the cached state.
        let snapshot = if whole {
            self.newest_snapshot(stream, floor, target)?
        } else {
            None
        };
        if let Some((version, state)) = snapshot {
            loaded.state = state;
            loaded.version = version;
            loaded.snapshot_version = Some(version);
        } else if let Some((version, state)) = cached {
            loaded.state = state;
            loaded.version = version;
            loaded.cached = true;
        }
        let mut last_event = None;
        if target > loaded.version {
            let opts = ReadOptions::forward_from(loaded.version + 1).limit(target - loaded.version);
            for e in self.engine.read_stream(stream, opts) {
                let e = e?;
                loaded.state.apply(&decode_event::<A, C>(&e)?);
                loaded.replayed += 1;
                loaded.version = e.version;
                last_event = Some(e);
            }
        }
        if !whole {
            // The hidden events count for the version (an append goes after them).
            loaded.version = loaded.version.max(target);
            return Ok(loaded);
        }
        if loaded.version == current && (loaded.replayed > 0 || !loaded.cached) {
            self.cache()
                .put::<A, C>(stream, loaded.version, &loaded.state);
        }
        self.maybe_snapshot(stream, &loaded.state, loaded.version, last_event.as_ref())?;
        Ok(loaded)
    }

    /// The newest usable snapshot above `floor` and at or below `target`, decoded. Unusable
    /// ones are discarded.
    fn newest_snapshot(&self, stream: &str, floor: u64, target: u64) -> Result<Option<(u64, A)>> {
        let mut floor = floor;
        // A snapshot that does not decode is as unusable as a damaged one: try older ones.
        while let Some(s) = snapshot::load(
            self.engine,
            &self.es.snapshots,
            stream,
            &self.kind,
            floor,
            target,
        )? {
            match C::decode::<A>(&s.state) {
                Ok(state) => return Ok(Some((s.version, state))),
                Err(_) => {
                    if let Some(entry) = self
                        .es
                        .snapshots
                        .candidates(stream, &self.kind, s.version)
                        .into_iter()
                        .find(|e| e.version == s.version)
                    {
                        self.es.snapshots.discard(stream, &entry);
                    } else {
                        floor = s.version;
                    }
                }
            }
        }
        Ok(None)
    }

    /// Saves a snapshot of `state` at `version` if the stream has moved `snapshot_every`
    /// events past its last one. `last_event`, when given, is the event at `version`.
    fn maybe_snapshot(
        &self,
        stream: &str,
        state: &A,
        version: u64,
        last_event: Option<&RecordedEvent>,
    ) -> Result<()> {
        let every = self.engine.options().snapshot_every;
        if every == 0 || version == 0 {
            return Ok(());
        }
        let snapshots = &self.es.snapshots;
        let last = snapshots.last_version(stream, &self.kind).unwrap_or(0);
        if version < last.saturating_add(every) {
            return Ok(());
        }
        let state = C::encode(state).map_err(|reason| Error::Codec {
            stream: stream.to_string(),
            version: Some(version),
            reason,
        })?;
        // Snapshots are a cache: failing to save one must not fail the load or the command
        // (whose events may already be appended). The next load tries again.
        let saved = snapshot::save(
            self.engine,
            snapshots,
            stream,
            &self.kind,
            version,
            state,
            last_event,
        );
        drop(saved);
        Ok(())
    }
}

fn decode_event<A: Aggregate, C: Codec>(e: &RecordedEvent) -> Result<A::Event> {
    C::decode(&e.payload).map_err(|reason| Error::Codec {
        stream: e.stream.to_string(),
        version: Some(e.version),
        reason: format!("event type {:?}: {reason}", e.event_type),
    })
}

/// A bounded cache of recently used aggregate states, by type and stream. A cached state is
/// only ever a starting point: events after its version are always replayed.
#[derive(Debug)]
pub(crate) struct StateCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<(TypeId, Box<str>), CacheEntry>,
    tick: u64,
}

#[derive(Debug)]
struct CacheEntry {
    version: u64,
    state: Arc<dyn Any + Send + Sync>,
    used: u64,
}

impl StateCache {
    pub(crate) fn new(capacity: usize) -> Self {
        StateCache {
            capacity,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    fn get<A: Aggregate, C: Codec>(&self, stream: &str) -> Option<(u64, A)> {
        let mut c = self.inner.lock();
        c.tick += 1;
        let tick = c.tick;
        let e = c
            .entries
            .get_mut(&(TypeId::of::<(A, C)>(), stream.into()))?;
        e.used = tick;
        let state = e.state.downcast_ref::<A>()?.clone();
        Some((e.version, state))
    }

    /// Drops every cached state of `stream` (it was deleted).
    pub(crate) fn forget_stream(&self, stream: &str) {
        self.inner.lock().entries.retain(|(_, s), _| &**s != stream);
    }

    fn put<A: Aggregate, C: Codec>(&self, stream: &str, version: u64, state: &A) {
        if self.capacity == 0 {
            return;
        }
        let mut c = self.inner.lock();
        c.tick += 1;
        let used = c.tick;
        let key = (TypeId::of::<(A, C)>(), stream.into());
        if c.entries.get(&key).is_some_and(|e| e.version > version) {
            return;
        }
        c.entries.insert(
            key,
            CacheEntry {
                version,
                state: Arc::new(state.clone()),
                used,
            },
        );
        if c.entries.len() > self.capacity {
            // Evict the least recently used eighth in one pass.
            let mut ages: Vec<u64> = c.entries.values().map(|e| e.used).collect();
            let cut = ages.len() / 8 + 1;
            let (_, &mut threshold, _) = ages.select_nth_unstable(cut - 1);
            c.entries.retain(|_, e| e.used > threshold);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing;
    use crate::options::Options;
    use crate::storage::Storage;
    use serde::Deserialize;

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct Counter {
        value: i64,
    }

    #[derive(Serialize, Deserialize)]
    struct Added(i64);

    impl Aggregate for Counter {
        type Event = Added;
        type Command = i64;
        type Error = String;
        fn event_type(_: &Added) -> &'static str {
            "Added"
        }
        fn apply(&mut self, Added(n): &Added) {
            self.value += n;
        }
        fn handle(&self, n: i64) -> std::result::Result<Vec<Added>, String> {
            if self.value + n < 0 {
                return Err("would go negative".into());
            }
            Ok(vec![Added(n)])
        }
    }

    fn engine_with(options: Options) -> (crate::storage::SimDisk, Arc<Engine>, EsState) {
        let disk = crate::storage::SimDisk::new(5);
        let engine = testing::open(&disk, options);
        let es = EsState::open(&engine).unwrap();
        (disk, engine, es)
    }

    #[test]
    fn commands_append_events_and_a_refusal_appends_nothing() {
        let (_disk, engine, es) = engine_with(testing::options());
        let repo = Repository::<Counter>::new(&engine, &es);
        repo.execute("c-1", 5).unwrap();
        repo.execute("c-1", -2).unwrap();
        assert!(matches!(
            repo.execute("c-1", -9),
            Err(ExecuteError::Domain(_))
        ));
        let loaded = repo.load("c-1").unwrap();
        assert_eq!((loaded.state.value, loaded.version), (3, 2));
        assert_eq!(repo.load_at("c-1", 1).unwrap().state.value, 5);
        assert_eq!(engine.last_position(), 2);
    }

    #[test]
    fn loads_resume_from_snapshots_and_equal_a_full_replay() {
        let options = testing::options().snapshot_every(3).aggregate_cache(0);
        let (disk, engine, es) = engine_with(options.clone());
        let repo = Repository::<Counter>::new(&engine, &es);
        for n in 1..=10 {
            repo.execute("c-1", n).unwrap();
        }
        assert!(es.snapshots.stats().0 > 0, "snapshots were written");
        let with_snapshots = repo.load("c-1").unwrap();
        assert_eq!(with_snapshots.state.value, 55);
        assert_eq!(with_snapshots.snapshot_version, Some(9));
        assert_eq!(with_snapshots.replayed, 1);
        engine.close().unwrap();
        drop(repo);
        drop(es);
        drop(engine);
        // Without the snapshot files, the same state comes from the events alone.
        for p in disk.paths() {
            if p.extension().is_some_and(|e| e == "snap") {
                disk.remove(&p).unwrap();
            }
        }
        let engine = testing::open(&disk, options);
        let es = EsState::open(&engine).unwrap();
        let replayed = Repository::<Counter>::new(&engine, &es)
            .load("c-1")
            .unwrap();
        assert_eq!(
            (replayed.state, replayed.version, replayed.replayed),
            (with_snapshots.state, 10, 10)
        );
    }
}
