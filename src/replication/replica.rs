//! A replica: a store built from a relay's JetStream stream alone.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use super::message::{self, Incoming};
use super::{Fault, connect, failed, fatal, transient};
use crate::engine::format::frame::{ErasedPart, TxPart};
use crate::engine::format::replica_file::ReplicaFile;
use crate::error::Result;
use crate::event::EventData;
use crate::options::Options;
use crate::store::Store;

/// Messages applied before a replica settles (syncs, under `Always`), at most.
const SETTLE_EVERY: u32 = 4096;

/// Erased positions in one of a replica's erased frames, at most (its zeros: under 3 MiB).
const ERASED_FRAME_EVENTS: u32 = 1 << 16;

/// Which JetStream stream a [`Replica`] reads, and whether it keeps following it.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// NATS servers, comma-separated.
    pub nats_url: String,
    /// The relay's JetStream stream.
    pub js_stream: String,
    /// Keep reading new messages as they come ([`Replica::run_until`] then runs until
    /// stopped); without, stop once the messages the stream held at the start are applied.
    pub follow: bool,
}

impl ReplicaOptions {
    /// Replicates `js_stream` from the servers of `nats_url`, once through.
    pub fn new(nats_url: impl Into<String>, js_stream: impl Into<String>) -> Self {
        ReplicaOptions {
            nats_url: nats_url.into(),
            js_stream: js_stream.into(),
            follow: false,
        }
    }

    /// Keep following the stream.
    pub fn follow(mut self, on: bool) -> Self {
        self.follow = on;
        self
    }
}

/// What a replica's run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaReport {
    /// Messages applied in this run (those already held are passed over, not counted).
    pub applied: u64,
    /// The replica's last position.
    pub last_position: u64,
    /// The last JetStream sequence read.
    pub sequence: u64,
}

/// A store built from a relay's JetStream stream: every event with the stream, version,
/// position, id, timestamp, type, tags, data and metadata it has in the source, and the
/// source's erased positions erased. Its directory holds a `REPLICA` file, and every
/// append, transaction or metadata change an application tries on it fails with
/// [`Error::IsReplica`](crate::Error::IsReplica); applications read it (in another process,
/// as a follower: [`Store::open_follower`]).
///
/// A gap or a reordering in the messages stops it with
/// [`Error::Replication`](crate::Error::Replication), having written nothing past the last
/// good message.
#[derive(Debug)]
pub struct Replica {
    store: Arc<Store>,
    options: ReplicaOptions,
    js: jetstream::Context,
    marker: ReplicaFile,
}

/// Events of one commit read so far, waiting for its last one.
#[derive(Default)]
struct Pending {
    first_position: u64,
    events: Vec<(String, u64, EventData)>,
    /// The sequence of its first message.
    first_sequence: u64,
}

impl Replica {
    /// Opens (or creates) the replica in `dir` with `store_options`, and connects to NATS.
    ///
    /// # Errors
    ///
    /// [`Error::Replication`](crate::Error::Replication) when NATS cannot be reached or the
    /// stream does not exist or is not a relay's (its subjects are not one `PREFIX.>`);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `dir` holds a store
    /// that is not this stream's replica; the errors of [`Store::open`].
    pub async fn open(
        dir: impl AsRef<Path>,
        store_options: Options,
        options: ReplicaOptions,
    ) -> Result<Replica> {
        let js = connect(&options.nats_url, &options.js_stream, "annal replica", 16).await?;
        let name = &options.js_stream;
        let mut s = js
            .get_stream(name)
            .await
            .map_err(|e| failed(name, format!("cannot find the stream: {e}")))?;
        let info = s
            .info()
            .await
            .map_err(|e| failed(name, format!("cannot read the stream's state: {e}")))?;
        let prefix = match info.config.subjects.as_slice() {
            [one] => one.strip_suffix(".>").map(str::to_owned),
            _ => None,
        }
        .ok_or_else(|| {
            failed(
                name,
                format!(
                    "its subjects {:?} are not a relay's (one PREFIX.>)",
                    info.config.subjects
                ),
            )
        })?;
        let store = Store::open(dir, store_options)?;
        let engine = store.engine();
        let held = engine.replica.read().clone();
        let marker = match held {
            Some(m) if m.js_stream == *name && m.subject_prefix == prefix => m,
            _ => ReplicaFile {
                js_stream: name.clone(),
                subject_prefix: prefix,
                sequence: 0,
            },
        };
        engine.mark_replica(&marker)?;
        Ok(Replica {
            store: Arc::new(store),
            options,
            js,
            marker,
        })
    }

    /// The replica's store, for reading.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Applies the stream's messages until `stop` completes, or (not following) until the
    /// messages the stream held when this run started are applied. A lost connection is
    /// retried after a pause.
    ///
    /// # Errors
    ///
    /// [`Error::Replication`](crate::Error::Replication) for a gap, a reordering or a
    /// message that is not the relay's; errors of the store's writes.
    pub async fn run_until(&mut self, stop: impl Future<Output = ()>) -> Result<ReplicaReport> {
        let mut stop = std::pin::pin!(stop);
        let mut report = ReplicaReport {
            applied: 0,
            last_position: self.store.last_position(),
            sequence: self.marker.sequence,
        };
        loop {
            match self.session(&mut stop, &mut report).await {
                Ok(()) => return Ok(report),
                Err(Fault::Fatal(e)) => {
                    // What was written before the fault is good: make it what the policy
                    // promises (and visible) before stopping.
                    let engine = self.store.engine();
                    engine.settle(engine.written_position(), false)?;
                    return Err(e);
                }
                Err(Fault::Transient(_)) => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        () = &mut stop => return Ok(report),
                    }
                }
            }
        }
    }

    async fn session(
        &mut self,
        stop: &mut Pin<&mut impl Future<Output = ()>>,
        report: &mut ReplicaReport,
    ) -> Result<(), Fault> {
        let name = self.options.js_stream.clone();
        let mut s = self
            .js
            .get_stream(&name)
            .await
            .map_err(|e| transient(format!("cannot find stream {name}: {e}")))?;
        let target = s
            .info()
            .await
            .map_err(|e| transient(format!("cannot read stream {name}'s state: {e}")))?
            .state
            .last_sequence;
        let start = self.marker.sequence + 1;
        if !self.options.follow && start > target {
            return Ok(());
        }
        let c = s
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| transient(format!("cannot read stream {name}: {e}")))?;
        let mut messages = c
            .messages()
            .await
            .map_err(|e| transient(format!("cannot read stream {name}: {e}")))?;
        let mut pending = Pending::default();
        let mut last_mark = Instant::now();
        let mut unsettled: Option<u64> = None;
        let mut batch = 0u32;
        loop {
            // Settle a batch once nothing more is ready at once, or once it is large (so
            // a steady stream of messages still becomes visible and durable as it goes).
            if unsettled.is_some() && batch >= SETTLE_EVERY {
                self.settle(&mut unsettled, &pending, report, &mut last_mark, false)?;
            }
            if unsettled.is_none() {
                batch = 0;
            }
            let next = match unsettled {
                Some(_) => match tokio::time::timeout(Duration::ZERO, messages.next()).await {
                    Ok(m) => m,
                    Err(_) => {
                        self.settle(&mut unsettled, &pending, report, &mut last_mark, false)?;
                        continue;
                    }
                },
                None => tokio::select! {
                    biased;
                    () = &mut *stop => {
                        self.settle(&mut unsettled, &pending, report, &mut last_mark, true)?;
                        return Ok(());
                    }
                    m = messages.next() => m,
                },
            };
            let m = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(transient(format!("reading stream {name}: {e}"))),
                None => return Err(transient(format!("stream {name} ended its consumer"))),
            };
            let sequence = m
                .info()
                .map_err(|e| transient(format!("a message without its sequence: {e}")))?
                .stream_sequence;
            let incoming = message::parse(
                &self.marker.subject_prefix,
                m.subject.as_str(),
                m.headers.as_ref(),
                &m.payload,
            )
            .map_err(|why| {
                fatal(
                    &name,
                    sequence,
                    format!("not a message of annal's relay: {why}"),
                )
            })?;
            let expected = self.store.engine().written_position() + 1 + pending.events.len() as u64;
            // An erased run that a crash cut between its frames: go on from what is held.
            let end = incoming.end();
            let incoming = match incoming {
                Incoming::Erased {
                    first_position,
                    parts,
                } if pending.events.is_empty() && first_position < expected && expected < end => {
                    let (first_position, parts) = crate::engine::read::clip_erased(
                        first_position,
                        parts.into_iter(),
                        expected,
                        u64::MAX,
                    );
                    Incoming::Erased {
                        first_position,
                        parts,
                    }
                }
                other => other,
            };
            if incoming.end() <= expected && pending.events.is_empty() {
                // Held already (a restart re-reads from its last mark).
            } else if incoming.position() != expected {
                return Err(fatal(
                    &name,
                    sequence,
                    format!(
                        "the message holds position {}, but position {expected} comes next: {}",
                        incoming.position(),
                        if incoming.position() > expected {
                            "a gap (the stream lost messages, or limits dropped them)"
                        } else {
                            "out of order"
                        }
                    ),
                ));
            } else {
                self.apply(incoming, sequence, &mut pending, &mut unsettled)
                    .map_err(|e| fatal(&name, sequence, e.to_string()))?;
                report.applied += 1;
                batch += 1;
            }
            report.sequence = sequence;
            if pending.events.is_empty() {
                self.marker.sequence = sequence;
            }
            if !self.options.follow && sequence >= target {
                // A commit the stream holds only part of yet stays unwritten (the marker
                // points before it): a replica shows a commit whole or not at all.
                self.settle(&mut unsettled, &pending, report, &mut last_mark, true)?;
                return Ok(());
            }
        }
    }

    fn apply(
        &mut self,
        incoming: Incoming,
        sequence: u64,
        pending: &mut Pending,
        unsettled: &mut Option<u64>,
    ) -> Result<()> {
        match incoming {
            Incoming::Event {
                position,
                stream,
                version,
                event,
                commit_end,
            } => {
                if pending.events.is_empty() {
                    pending.first_position = position;
                    pending.first_sequence = sequence;
                }
                pending.events.push((stream, version, event));
                if commit_end {
                    self.flush(pending, unsettled)?;
                }
            }
            Incoming::Erased {
                first_position,
                parts,
            } => {
                self.flush(pending, unsettled)?;
                // In frames of a bounded size, however long the run a message claims.
                let mut position = first_position;
                let mut chunk: Vec<ErasedPart> = Vec::new();
                let mut in_chunk = 0u32;
                for mut p in parts {
                    while p.count > 0 {
                        let take = p.count.min(ERASED_FRAME_EVENTS - in_chunk);
                        chunk.push(ErasedPart {
                            stream: p.stream.clone(),
                            first_version: p.first_version,
                            count: take,
                        });
                        p.first_version += u64::from(take);
                        p.count -= take;
                        in_chunk += take;
                        if in_chunk == ERASED_FRAME_EVENTS {
                            let engine = self.store.engine();
                            *unsettled = Some(engine.import_erased(position, &chunk)?);
                            position += u64::from(in_chunk);
                            chunk.clear();
                            in_chunk = 0;
                        }
                    }
                }
                if !chunk.is_empty() {
                    *unsettled = Some(self.store.engine().import_erased(position, &chunk)?);
                }
            }
        }
        Ok(())
    }

    /// Writes the pending commit's events: one frame, or one per run in which no stream
    /// comes back.
    fn flush(&mut self, pending: &mut Pending, unsettled: &mut Option<u64>) -> Result<()> {
        let events = std::mem::take(&mut pending.events);
        let mut position = pending.first_position;
        let mut rest = events.as_slice();
        while !rest.is_empty() {
            let mut groups: Vec<(usize, usize)> = Vec::new();
            let mut i = 0;
            while let Some((stream, _, _)) = rest.get(i) {
                let start = i;
                while rest.get(i).is_some_and(|(s, _, _)| s == stream) {
                    i += 1;
                }
                let again = groups
                    .iter()
                    .any(|&(a, _)| rest.get(a).is_some_and(|(s, _, _)| s == stream));
                if again {
                    i = start;
                    break;
                }
                groups.push((start, i));
            }
            let datas: Vec<Vec<EventData>> = groups
                .iter()
                .map(|&(a, b)| {
                    rest.get(a..b)
                        .unwrap_or_default()
                        .iter()
                        .map(|(_, _, e)| e.clone())
                        .collect()
                })
                .collect();
            let parts: Vec<TxPart<'_>> = groups
                .iter()
                .zip(&datas)
                .filter_map(|(&(a, _), events)| {
                    let (stream, version, _) = rest.get(a)?;
                    Some(TxPart {
                        stream,
                        first_version: *version,
                        events,
                    })
                })
                .collect();
            *unsettled = Some(self.store.engine().import(position, &parts)?);
            position += i as u64;
            rest = rest.get(i..).unwrap_or_default();
        }
        Ok(())
    }

    /// Waits for what the fsync policy promises of the writes so far, then (at most once a
    /// second, or when `force`) records in `REPLICA` where to resume.
    fn settle(
        &mut self,
        unsettled: &mut Option<u64>,
        pending: &Pending,
        report: &mut ReplicaReport,
        last_mark: &mut Instant,
        force: bool,
    ) -> Result<(), Fault> {
        let engine = self.store.engine();
        if let Some(last) = unsettled.take() {
            engine.settle(last, false).map_err(Fault::Fatal)?;
        }
        report.last_position = self.store.last_position();
        if force || last_mark.elapsed() >= Duration::from_secs(1) {
            // The marker is synced: what it claims applied must be durable first.
            if engine.options.fsync != crate::options::FsyncPolicy::Always {
                engine.sync_all().map_err(Fault::Fatal)?;
            }
            let mut marker = self.marker.clone();
            if !pending.events.is_empty() {
                marker.sequence = pending.first_sequence.saturating_sub(1);
            }
            engine.mark_replica(&marker).map_err(Fault::Fatal)?;
            *last_mark = Instant::now();
        }
        Ok(())
    }
}
