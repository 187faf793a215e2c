//! The relay: every position of the log, in order, to a NATS JetStream stream.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, stream};
use parking_lot::Mutex;

use super::message::{self, Outgoing};
use super::{Fault, connect, fatal, transient};
use crate::engine::async_wait::PublishedAfter;
use crate::engine::format::frame::ErasedPart;
use crate::engine::lifecycle::is_system;
use crate::engine::read::{LogEntries, Walked};
use crate::error::{Error, Result};
use crate::es::durable::DurableSubscription;
use crate::store::Store;

/// Where and how a [`Relay`] publishes.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// NATS servers, comma-separated (`nats://127.0.0.1:4222,nats://…`): any of a
    /// cluster's, the client finds the others.
    pub nats_url: String,
    /// The JetStream stream, created if missing.
    pub js_stream: String,
    /// Subjects are `<subject_prefix>.<stream token>`; the JetStream stream takes
    /// `<subject_prefix>.>`.
    pub subject_prefix: String,
    /// The durable subscription that records what JetStream acknowledged (`relay`).
    pub name: String,
    /// Replicas of a JetStream stream the relay creates (1; 3 or 5 on a cluster).
    pub replicas: usize,
    /// Messages published and not yet acknowledged, at most (4096).
    pub max_in_flight: usize,
    /// JetStream's deduplication window of a stream the relay creates (2 minutes).
    pub duplicate_window: Duration,
    /// Only the events this query matches (none of metadata streams, no erased runs), for
    /// consumers that want part of the log; `None`: every position, as a replica needs.
    pub query: Option<crate::query::Query>,
}

impl RelayOptions {
    /// Relays to `js_stream` on the servers of `nats_url`, under `subject_prefix`.
    pub fn new(
        nats_url: impl Into<String>,
        js_stream: impl Into<String>,
        subject_prefix: impl Into<String>,
    ) -> Self {
        RelayOptions {
            nats_url: nats_url.into(),
            js_stream: js_stream.into(),
            subject_prefix: subject_prefix.into(),
            name: "relay".into(),
            replicas: 1,
            max_in_flight: 4096,
            duplicate_window: Duration::from_secs(120),
            query: None,
        }
    }

    /// Relays only the events `query` matches: the stream then has gaps in positions, so no
    /// replica can be built from it. The relay still reads every event to test it.
    pub fn query(mut self, query: crate::query::Query) -> Self {
        self.query = Some(query);
        self
    }

    /// The durable subscription's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Replicas of the JetStream stream, when the relay creates it.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Messages in flight, at most (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// JetStream's deduplication window, when the relay creates the stream.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }
}

/// How far a relay has got, readable while it runs (from [`Relay::progress`]).
#[derive(Debug, Default)]
pub struct RelayProgress {
    acknowledged: AtomicU64,
    sent: AtomicU64,
    retries: AtomicU64,
    last_fault: Mutex<Option<String>>,
    latency: Mutex<Histogram>,
}

impl RelayProgress {
    /// The last position JetStream acknowledged (everything up to it is in the stream).
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Acquire)
    }

    /// The last position published (acknowledged or not yet).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// How many times the relay lost its connection or was refused and started again
    /// from what JetStream holds.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Acquire)
    }

    /// Why it last started again, if it did.
    pub fn last_fault(&self) -> Option<String> {
        self.last_fault.lock().clone()
    }

    /// The `p`-th percentile (0 to 100) of the time from an event's timestamp (when its
    /// append wrote it) to JetStream's acknowledgement of its message, over every event
    /// relayed so far; within an eighth of the true value. `None` before the first.
    pub fn latency_percentile(&self, p: f64) -> Option<Duration> {
        self.latency.lock().percentile(p)
    }
}

/// Microseconds in buckets of an eighth of a power of two.
#[derive(Debug)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 64 * 8],
            total: 0,
        }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < 8 {
            return crate::cast::usize_from(us);
        }
        let log = 63 - u64::from(us.leading_zeros());
        let sub = (us >> (log - 3)) & 7;
        crate::cast::usize_from(log * 8 + sub)
    }

    fn lower_bound(bucket: usize) -> u64 {
        if bucket < 8 {
            return bucket as u64;
        }
        let (log, sub) = ((bucket / 8) as u64, (bucket % 8) as u64);
        (8 + sub) << (log - 3)
    }

    fn record(&mut self, us: u64) {
        if let Some(c) = self.counts.get_mut(Self::bucket(us)) {
            *c += 1;
            self.total += 1;
        }
    }

    fn percentile(&self, p: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        // The rank of the percentile, at least the first: a whole number below `total`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * self.total as f64)
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(Self::lower_bound(i)));
            }
        }
        None
    }
}

/// What a relay did, when it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayReport {
    /// The last position JetStream acknowledged.
    pub acknowledged: u64,
    /// Messages JetStream acknowledged in this run.
    pub messages: u64,
}

/// Publishes every position of a store's log, in order, to a JetStream stream: each event
/// as a message (metadata streams' events too, and events their metadata hides for now),
/// each run of events a scavenge erased or a hard delete removed as "erased" messages (no
/// data); see the README's "Beyond one machine" for the guarantees.
///
/// Only what is durable in the store is published, so that JetStream never holds an event
/// a power loss could take back from the store (under a policy other than
/// [`FsyncPolicy::Always`](crate::FsyncPolicy::Always), the relay asks for the syncs). On
/// a follower ([`Options::follow`](crate::Options::follow)) it publishes what the writer
/// acknowledged: durable when the writer runs under `Always`.
#[derive(Debug)]
pub struct Relay {
    store: Arc<Store>,
    options: RelayOptions,
    js: jetstream::Context,
    sub: DurableSubscription,
    progress: Arc<RelayProgress>,
    messages: u64,
}

/// JetStream's answer to a publish.
type Acked = std::result::Result<PublishAck, PublishError>;
/// A publish's acknowledgement, awaited.
type AckFuture = Pin<Box<dyn Future<Output = Acked> + Send>>;

/// A published message waiting for JetStream's acknowledgement.
struct InFlight {
    /// The position after the message's last one.
    end: u64,
    /// The stream sequence it must get.
    sequence: u64,
    /// Its event's timestamp (0 for an erased run).
    timestamp: u64,
    ack: AckFuture,
}

impl Relay {
    /// Connects to NATS, creates the JetStream stream if it is missing, and opens the
    /// durable subscription `options.name`.
    ///
    /// # Errors
    ///
    /// [`Error::Replication`] when NATS cannot be reached, or the stream exists with other
    /// subjects than `<subject_prefix>.>` alone; [`Error::InvalidArgument`] for a
    /// prefix that is not a subject, or a durable subscription that is open already.
    pub async fn connect(store: Arc<Store>, options: RelayOptions) -> Result<Relay> {
        super::check_prefix(&options.subject_prefix)?;
        let js = connect(
            &options.nats_url,
            &options.js_stream,
            "annal relay",
            options.max_in_flight,
        )
        .await?;
        let subjects = format!("{}.>", options.subject_prefix);
        let config = stream::Config {
            name: options.js_stream.clone(),
            subjects: vec![subjects.clone()],
            num_replicas: options.replicas,
            duplicate_window: options.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let s = js.get_or_create_stream(config).await.map_err(|e| {
            super::failed(
                &options.js_stream,
                format!("cannot create or find the stream: {e}"),
            )
        })?;
        if s.cached_info().config.subjects != [subjects.clone()] {
            return Err(super::failed(
                &options.js_stream,
                format!(
                    "the stream exists with subjects {:?}: a relay's stream takes {subjects} only",
                    s.cached_info().config.subjects
                ),
            ));
        }
        let sub = store.durable_subscription(&options.name)?;
        Ok(Relay {
            store,
            options,
            js,
            sub,
            progress: Arc::new(RelayProgress::default()),
            messages: 0,
        })
    }

    /// Its progress, to watch from another task or thread.
    pub fn progress(&self) -> Arc<RelayProgress> {
        Arc::clone(&self.progress)
    }

    /// Relays until `stop` completes, then waits (up to 10 s) for the acknowledgements of
    /// what is in flight and records them. A lost connection or a refused publish is
    /// retried (from what JetStream holds, after a pause that grows to 5 s), and shows in
    /// [`RelayProgress::retries`].
    ///
    /// # Errors
    ///
    /// What cannot be retried: [`Error::Replication`] when the stream's last message is not
    /// this relay's (another writer, another store), or holds a position this store does
    /// not have; [`Error::BehindRetention`] when retention dropped events before they were
    /// relayed; errors of the store (reading the log, writing the ack file).
    pub async fn run_until(&mut self, stop: impl Future<Output = ()>) -> Result<RelayReport> {
        let mut stop = std::pin::pin!(stop);
        let mut pause = Duration::from_millis(50);
        loop {
            let before = self.messages;
            match self.session(&mut stop).await {
                Ok(()) => {
                    return Ok(self.report());
                }
                Err(Fault::Fatal(e)) => return Err(e),
                Err(Fault::Transient(why)) => {
                    self.progress.retries.fetch_add(1, Ordering::AcqRel);
                    *self.progress.last_fault.lock() = Some(why);
                    if self.messages > before {
                        pause = Duration::from_millis(50);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = &mut stop => {
                            return Ok(self.report());
                        }
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn report(&self) -> RelayReport {
        RelayReport {
            acknowledged: self.progress.acknowledged(),
            messages: self.messages,
        }
    }

    /// Where to go on from: the position after the stream's last message, and its
    /// sequence.
    async fn resync(&mut self) -> Result<(u64, u64), Fault> {
        let name = &self.options.js_stream;
        let mut s = self
            .js
            .get_stream(name)
            .await
            .map_err(|e| transient(format!("cannot find stream {name}: {e}")))?;
        let info = s
            .info()
            .await
            .map_err(|e| transient(format!("cannot read stream {name}'s state: {e}")))?;
        let last = info.state.last_sequence;
        if last == 0 {
            return Ok((1, 0));
        }
        let m = s
            .get_raw_message(last)
            .await
            .map_err(|e| transient(format!("cannot read message {last} of {name}: {e}")))?;
        let prefix = &self.options.subject_prefix;
        let end = match message::parse(prefix, &m.subject, Some(&m.headers), &m.payload) {
            Ok(i) => i.end(),
            Err(why) => {
                return Err(fatal(
                    name,
                    last,
                    format!("the stream's last message is not this relay's: {why}"),
                ));
            }
        };
        let have = self.store.last_position();
        if end - 1 > have {
            return Err(fatal(
                name,
                last,
                format!(
                    "the stream holds position {} but this store ends at {have}: it is another store's stream, or this store lost events",
                    end - 1
                ),
            ));
        }
        self.check_retention(end)?;
        Ok((end, last))
    }

    /// Fails when retention dropped positions from `next` on, which were not relayed.
    fn check_retention(&self, next: u64) -> Result<(), Fault> {
        let retained = self.store.retained_from();
        if next < retained {
            return Err(Fault::Fatal(Error::BehindRetention {
                name: format!("relay {:?}", self.options.name),
                position: next - 1,
                retained_from: retained,
            }));
        }
        Ok(())
    }

    async fn session(
        &mut self,
        stop: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), Fault> {
        let (mut next, mut sequence) = self.resync().await?;
        if self.options.query.is_some() {
            // A relay of a query also handled what it passed over since its last match.
            next = next.max(self.sub.acked_position() + 1);
            self.check_retention(next)?;
        }
        let engine = Arc::clone(self.store.engine());
        self.progress
            .acknowledged
            .store(next - 1, Ordering::Release);
        self.progress.sent.store(next - 1, Ordering::Release);
        self.sub.ack_handled(next - 1).map_err(Fault::Fatal)?;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        // Messages made from the log and not yet published (an entry can make many).
        let mut backlog: VecDeque<(Outgoing, u64, u64)> = VecDeque::new();
        let mut feed: Option<LogEntries> = None;
        let mut erased: Option<Run> = None;
        let mut last_ack_write = Instant::now();
        let max = self.options.max_in_flight;
        // The position the current feed reads up to (durable, in the writer's process).
        let mut bound = 0;
        loop {
            // Publish what the log holds, up to the window; entries that make no message
            // (a query's misses) give the runtime back now and then.
            let mut walked = 0u32;
            while in_flight.len() < max && walked < ENTRIES_PER_TURN {
                if let Some((msg, end, timestamp)) = backlog.pop_front() {
                    sequence += 1;
                    let ack = self.publish(msg, sequence).await?;
                    self.progress.sent.store(end - 1, Ordering::Release);
                    in_flight.push_back(InFlight {
                        end,
                        sequence,
                        timestamp,
                        ack,
                    });
                    continue;
                }
                if feed.is_none() {
                    // A follower relays what its writer acknowledged (durable under
                    // `Always`); the writer's process, only what is durable.
                    bound = if engine.options.follow {
                        engine.last_position()
                    } else {
                        engine.commit.durable().min(engine.last_position())
                    };
                    if bound < next {
                        break;
                    }
                    // Once the stream holds something, retention must not have dropped what
                    // comes next (a new relay publishes what it dropped as erased runs).
                    if sequence > 0 {
                        self.check_retention(next)?;
                    }
                    feed = Some(LogEntries::new(&engine, next, bound));
                }
                let Some(f) = feed.as_mut() else { break };
                walked += 1;
                match f.next() {
                    Some(Ok(w)) => {
                        next = w.end();
                        backlog.extend(self.convert(w, &engine, bound, &mut erased));
                    }
                    Some(Err(e)) => return Err(Fault::Fatal(e)),
                    None => {
                        feed = None;
                        let mut out = Vec::new();
                        flush_erased(&self.options.subject_prefix, &mut erased, &mut out);
                        if out.is_empty() {
                            break;
                        }
                        backlog.extend(out);
                    }
                }
            }
            let room = in_flight.len() < max;
            let more = room && (feed.is_some() || !backlog.is_empty());
            let caught_up = room && feed.is_none() && backlog.is_empty();
            if caught_up && in_flight.is_empty() && self.options.query.is_some() {
                // A relay of a query has handled the positions it passed over too: its
                // lag is to the end of the log, not to the last event it published.
                self.progress
                    .acknowledged
                    .fetch_max(next - 1, Ordering::AcqRel);
            }
            // An ack file write owed: what JetStream acknowledged (or a query relay passed
            // over) is past what the file says, and no message in flight will bring it.
            let owed =
                in_flight.is_empty() && self.sub.acked_position() < self.progress.acknowledged();
            let unsynced =
                !engine.options.follow && engine.last_position() > engine.commit.durable();
            let ack_due = tokio::time::Instant::from_std(last_ack_write + ACK_EVERY);
            tokio::select! {
                biased;
                () = &mut *stop => {
                    self.drain(&mut in_flight).await?;
                    return Ok(());
                }
                acked = async {
                    match in_flight.front_mut() {
                        Some(f) => f.ack.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if !in_flight.is_empty() => {
                    let Some(f) = in_flight.pop_front() else { continue };
                    self.acknowledged(&f, acked)?;
                    if last_ack_write.elapsed() >= ACK_EVERY {
                        self.sub.ack_handled(f.end - 1).map_err(Fault::Fatal)?;
                        last_ack_write = Instant::now();
                    }
                }
                () = tokio::time::sleep_until(ack_due), if owed => {
                    self.sub
                        .ack_handled(self.progress.acknowledged())
                        .map_err(Fault::Fatal)?;
                    last_ack_write = Instant::now();
                }
                () = tokio::task::yield_now(), if more => {}
                synced = self.store.sync_async(), if caught_up && unsynced => {
                    synced.map_err(Fault::Fatal)?;
                }
                () = PublishedAfter { engine: Arc::clone(&engine), seen: next - 1, slot: None }, if caught_up && !unsynced => {
                    if engine.is_closed() {
                        self.drain(&mut in_flight).await?;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The messages an entry of the log makes (with the position after each and its
    /// event's timestamp): none while it only extends a run of erased events. `bound` is
    /// the position the feed reads to: a hard delete counts once it is at or before it.
    fn convert(
        &self,
        w: Walked,
        engine: &crate::engine::Engine,
        bound: u64,
        erased: &mut Option<Run>,
    ) -> Vec<(Outgoing, u64, u64)> {
        let prefix = &self.options.subject_prefix;
        if let Some(q) = &self.options.query {
            // Its commits are not whole (what does not match is left out): no commit
            // continues past a message.
            return match w {
                Walked::Event(e, _)
                    if !is_system(&e.stream) && q.matches_event(&e) && !engine.hides(&e) =>
                {
                    vec![(
                        message::event(prefix, &e, true),
                        e.position + 1,
                        e.timestamp,
                    )]
                }
                _ => Vec::new(),
            };
        }
        let mut out = Vec::new();
        let (first, parts) = match w {
            // Events that metadata hides but may show again (a truncation, `max_count`,
            // `max_age`) are relayed as events: a replica has the same metadata and hides
            // them alike. Only a hard delete, which is for good, keeps their data here.
            Walked::Event(e, last) if !engine.deleted_as_of(&e.stream, bound) => {
                flush_erased(prefix, erased, &mut out);
                out.push((
                    message::event(prefix, &e, last),
                    e.position + 1,
                    e.timestamp,
                ));
                return out;
            }
            Walked::Event(e, _) => (
                e.position,
                vec![ErasedPart {
                    stream: e.stream.to_string(),
                    first_version: e.version,
                    count: 1,
                }],
            ),
            Walked::Erased {
                first_position,
                parts,
            } => (first_position, parts),
        };
        let mut position = first;
        for mut p in parts {
            while p.count > 0 {
                let run = erased.get_or_insert_with(|| Run {
                    first: position,
                    parts: Vec::new(),
                    count: 0,
                    listed: 0,
                });
                let take =
                    u32::try_from(u64::from(p.count).min(MAX_RUN - run.count)).unwrap_or(p.count);
                match run.parts.last_mut() {
                    Some(l)
                        if l.stream == p.stream
                            && l.first_version + u64::from(l.count) == p.first_version =>
                    {
                        l.count += take;
                    }
                    _ => {
                        run.listed += 14 + p.stream.len();
                        run.parts.push(ErasedPart {
                            stream: p.stream.clone(),
                            first_version: p.first_version,
                            count: take,
                        });
                    }
                }
                run.count += u64::from(take);
                p.first_version += u64::from(take);
                p.count -= take;
                position += u64::from(take);
                // Runs stay well under NATS's default limit of 1 MiB per message, and a
                // replica's erased frame for one under 3 MiB.
                if run.count >= MAX_RUN || run.listed > MAX_LISTED {
                    flush_erased(prefix, erased, &mut out);
                }
            }
        }
        out
    }

    async fn publish(&self, msg: Outgoing, sequence: u64) -> Result<AckFuture, Fault> {
        let mut headers = msg.headers;
        let position = headers
            .get(crate::engine::format::relay_message::POSITION)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        headers.insert(
            crate::engine::format::relay_message::EXPECTED_LAST_SEQUENCE,
            (sequence - 1).to_string(),
        );
        let ack = self
            .js
            .publish_with_headers(msg.subject, headers, msg.payload)
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::MaxPayloadExceeded => fatal(
                    &self.options.js_stream,
                    0,
                    format!(
                        "the message of position {position} is larger than the server's max_payload: {e}"
                    ),
                ),
                _ => transient(format!("publish failed: {e}")),
            })?;
        Ok(ack.into_future())
    }

    /// Records JetStream's answer for `f`, the oldest message in flight.
    fn acknowledged(&mut self, f: &InFlight, acked: Acked) -> Result<(), Fault> {
        match acked {
            Ok(a) if a.sequence == f.sequence && !a.duplicate => {
                self.messages += 1;
                self.progress
                    .acknowledged
                    .store(f.end - 1, Ordering::Release);
                if f.timestamp > 0 {
                    let now = crate::engine::lifecycle::now_micros();
                    self.progress
                        .latency
                        .lock()
                        .record(now.saturating_sub(f.timestamp));
                }
                Ok(())
            }
            Ok(a) => Err(transient(format!(
                "JetStream put the message of position {} at sequence {}{}, not {}; starting again from what it holds",
                f.end - 1,
                a.sequence,
                if a.duplicate { " (a duplicate)" } else { "" },
                f.sequence
            ))),
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => Err(fatal(
                &self.options.js_stream,
                0,
                format!(
                    "the message of position {} is larger than the server's max_payload: {e}",
                    f.end - 1
                ),
            )),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(transient(format!(
                "JetStream refused message {} (an earlier one was lost, or another writer published): {e}",
                f.sequence
            ))),
            Err(e) => Err(transient(format!(
                "no acknowledgement for message {}: {e}",
                f.sequence
            ))),
        }
    }

    /// Waits for every acknowledgement in flight (10 s at most) and records them.
    async fn drain(&mut self, in_flight: &mut VecDeque<InFlight>) -> Result<(), Fault> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Some(mut f) = in_flight.pop_front() {
            match tokio::time::timeout_at(deadline, f.ack.as_mut()).await {
                Ok(acked) => {
                    if self.acknowledged(&f, acked).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        self.sub
            .ack_handled(self.progress.acknowledged())
            .map_err(Fault::Fatal)
    }
}

/// Log entries walked before the loop looks at its stop and its acknowledgements again.
const ENTRIES_PER_TURN: u32 = 4096;
/// How often the durable subscription's file is written while acknowledgements come in.
const ACK_EVERY: Duration = Duration::from_millis(100);

/// Positions one erased message covers, at most.
const MAX_RUN: u64 = 1 << 16;
/// Bytes of one erased message's list of parts, at most (about).
const MAX_LISTED: usize = 256 * 1024;

/// A run of erased positions being gathered into one message.
struct Run {
    first: u64,
    parts: Vec<ErasedPart>,
    /// Positions it covers.
    count: u64,
    /// Bytes of its list of parts.
    listed: usize,
}

/// Moves the run of erased positions being gathered, if any, into `out` as a message.
fn flush_erased(prefix: &str, erased: &mut Option<Run>, out: &mut Vec<(Outgoing, u64, u64)>) {
    if let Some(run) = erased.take() {
        out.push((
            message::erased(prefix, run.first, &run.parts),
            run.first + run.count,
            0,
        ));
    }
}
