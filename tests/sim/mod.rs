//! The crash simulation engine: a random workload on a simulated disk that crashes, fails and
//! rots, checked after every recovery against a model of what was acknowledged. Driven by a
//! seed (tests/simulation.rs) or by fuzzer bytes (fuzz/fuzz_targets/simulation.rs).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use annal::storage::{SimDisk, Storage, WriteFault};
use annal::{
    Aggregate, Error, EventData, ExpectedVersion, FsyncPolicy, Health, Options, ReadOptions,
    RecordedEvent, RepairOptions, Store, VerifyReport,
};
use serde::{Deserialize, Serialize};

/// Where the simulation's choices come from: a seed, or bytes (a fuzzer's input, then a seed
/// derived from them once they run out).
pub struct Rng {
    state: u64,
    bytes: Vec<u8>,
    at: usize,
}

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng {
            state: seed,
            bytes: Vec::new(),
            at: 0,
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Rng {
        let seed = bytes
            .iter()
            .fold(0u64, |h, &b| h.wrapping_mul(131).wrapping_add(u64::from(b)));
        Rng {
            state: seed,
            bytes: bytes.to_vec(),
            at: 0,
        }
    }

    fn next(&mut self) -> u64 {
        if let Some(&b) = self.bytes.get(self.at) {
            // One input byte per choice keeps the fuzzer's mutations meaningful.
            self.at += 1;
            return (u64::from(b) * 0x0101_0101_0101_0101) ^ self.at as u64;
        }
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Account {
    balance: i64,
    history: u64,
}

impl Aggregate for Account {
    type Event = i64;
    type Command = i64;
    type Error = ();
    fn aggregate_type() -> &'static str {
        "Account"
    }
    fn event_type(_: &i64) -> &'static str {
        "Deposited"
    }
    fn apply(&mut self, e: &i64) {
        self.balance += e;
        self.history = self.history.wrapping_mul(31).wrapping_add(*e as u64);
    }
    fn handle(&self, n: i64) -> Result<Vec<i64>, ()> {
        Ok(vec![n])
    }
}

/// One acknowledged (or possibly written) event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ev {
    stream: String,
    version: u64,
    event_type: String,
    payload: Vec<u8>,
    id: Option<u128>,
    tags: Vec<String>,
}

impl Ev {
    fn of(e: &RecordedEvent) -> Ev {
        Ev {
            stream: e.stream.to_string(),
            version: e.version,
            event_type: e.event_type.clone(),
            payload: e.payload.to_vec(),
            id: e.id,
            tags: e.tags.to_vec(),
        }
    }
}

/// What the store promised: every acknowledged event by position, and where appends end.
#[derive(Debug, Default)]
struct Model {
    events: Vec<Ev>,
    /// Positions where an acknowledged append ends.
    boundaries: Vec<u64>,
    /// An append that failed with an I/O error: it may or may not be on disk.
    maybe: Option<Vec<Ev>>,
    /// Every event up to here was synced.
    synced: u64,
    /// The last acknowledged position of the durable subscription, if any.
    acked: Option<u64>,
    /// A command's append failed: one more append, whose bytes the model doesn't know, may
    /// be on disk after the acknowledged events.
    unknown_tail: bool,
    last_append: Option<(String, ExpectedVersion, Vec<EventData>, annal::AppendResult)>,
}

impl Model {
    /// After an acknowledged append: what the policy promised is durable by then.
    fn acknowledged(&mut self, policy: FsyncPolicy) {
        let len = self.events.len() as u64;
        match policy {
            FsyncPolicy::Always => self.synced = len,
            FsyncPolicy::EveryEvents(n) => self.synced = self.synced.max(len.saturating_sub(n)),
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => {}
        }
    }

    fn version(&self, stream: &str) -> u64 {
        self.events.iter().filter(|e| e.stream == stream).count() as u64
    }
}

const DIR: &str = "/sim/store";
const STREAMS: [&str; 4] = ["cart-1", "cart-2", "order-1", "acct-1"];

fn options(rng: &mut Rng) -> Options {
    Options {
        fsync: match rng.below(10) {
            0..=3 => FsyncPolicy::Always,
            4..=6 => FsyncPolicy::Never,
            // Background syncs, and (EveryEvents) appends that wait to bound what is unsynced.
            7 | 8 => FsyncPolicy::EveryEvents(1 + rng.below(12)),
            _ => FsyncPolicy::Interval(Duration::from_millis(1 + rng.below(4))),
        },
        segment_size: 300 + rng.below(3000),
        index_checkpoints: rng.chance(50),
        snapshot_every: 1 + rng.below(5),
        // Often small, so that STATE's records during the run are exercised; 0: never.
        record_durable_every: rng.below(8),
        ..Options::default()
    }
}

fn open(disk: &SimDisk, opts: &Options) -> Result<Store, String> {
    Store::open_with_storage(std::sync::Arc::new(disk.clone()), DIR, opts.clone())
        .map_err(|e| format!("open failed: {e}"))
}

/// After a recovery: what is there must be a prefix of what was written, with everything the
/// policy promised, dense, whole appends only, identical bytes.
fn verify(store: &Store, model: &mut Model, opts: &Options, crashed: bool) -> Result<(), String> {
    let got: Vec<RecordedEvent> = store
        .read_all(ReadOptions::forward())
        .map_err(|e| e.to_string())?
        .collect::<annal::Result<_>>()
        .map_err(|e| format!("read_all after recovery: {e}"))?;
    for (i, e) in got.iter().enumerate() {
        if e.position != i as u64 + 1 {
            return Err(format!("position {} at index {i}", e.position));
        }
    }
    let acked = model.events.len() as u64;
    let len = got.len() as u64;
    let must_have = if opts.fsync == FsyncPolicy::Always || !crashed {
        acked
    } else {
        model.synced
    };
    if len < must_have {
        return Err(format!(
            "{len} events after recovery, but {must_have} were promised"
        ));
    }
    let maybe = model.maybe.take().unwrap_or_default();
    if std::mem::take(&mut model.unknown_tail) && len == acked + 1 {
        // The failed command's single event made it; it must be whole and in its stream.
        let e = got.last().ok_or("no events")?;
        if &*e.stream != "acct-1" || e.event_type != "Deposited" {
            return Err(format!(
                "unexpected event after the acknowledged ones: {e:?}"
            ));
        }
        model.events.push(Ev::of(e));
        model.boundaries.push(len);
    }
    let acked = model.events.len() as u64;
    if len > acked + maybe.len() as u64 {
        return Err(format!(
            "{len} events after recovery, only {acked} acknowledged"
        ));
    }
    let expected = model.events.iter().chain(maybe.iter());
    for (e, want) in got.iter().zip(expected) {
        if Ev::of(e) != *want {
            return Err(format!(
                "position {}: got {:?}, want {want:?}",
                e.position,
                Ev::of(e)
            ));
        }
    }
    let boundary = len == 0
        || model.boundaries.contains(&len)
        || (len == acked + maybe.len() as u64 && !maybe.is_empty());
    if !boundary {
        return Err(format!("recovered {len} events: half an append"));
    }
    // The stream index agrees with the log.
    for s in STREAMS {
        let by_stream: Vec<Ev> = store
            .read_stream(s, ReadOptions::forward())
            .map_err(|e| e.to_string())?
            .map(|e| e.map(|e| Ev::of(&e)))
            .collect::<annal::Result<_>>()
            .map_err(|e| format!("read_stream {s}: {e}"))?;
        let want: Vec<Ev> = got.iter().filter(|e| &*e.stream == s).map(Ev::of).collect();
        if by_stream != want {
            return Err(format!("stream {s} disagrees with the log"));
        }
        if by_stream
            .iter()
            .enumerate()
            .any(|(i, e)| e.version != i as u64 + 1)
        {
            return Err(format!("stream {s} versions are not dense"));
        }
    }
    // Snapshots never change a load.
    let loaded = store
        .aggregate::<Account>()
        .load("acct-1")
        .map_err(|e| e.to_string())?;
    let mut full = Account::default();
    for e in got.iter().filter(|e| &*e.stream == "acct-1") {
        if e.event_type == "Deposited"
            && let Ok(n) = <annal::Bincode as annal::Codec>::decode::<i64>(&e.payload)
        {
            full.apply(&n);
        }
    }
    if loaded.state != full {
        return Err(format!(
            "aggregate load {:?} != full replay {full:?}",
            loaded.state
        ));
    }
    // Durable subscriptions resume at or before their acknowledged position.
    if let Some(acked_pos) = model.acked {
        let mut sub = store
            .durable_subscription("relay")
            .map_err(|e| e.to_string())?;
        let resumed = sub.acked_position();
        if resumed > len {
            return Err(format!(
                "durable subscription resumes after {resumed}, but the log ends at {len}"
            ));
        }
        if resumed > acked_pos {
            return Err(format!(
                "durable subscription resumed after {resumed}, acked {acked_pos}"
            ));
        }
        if let Some(e) = sub
            .next_timeout(Duration::ZERO)
            .map_err(|e| e.to_string())?
            && e.position != resumed + 1
        {
            return Err(format!("durable subscription skipped to {}", e.position));
        }
        model.acked = Some(resumed);
    }
    // What is there now is the history.
    model.events = got.iter().map(Ev::of).collect();
    model.boundaries.retain(|&b| b <= len);
    if !model.boundaries.contains(&len) {
        model.boundaries.push(len);
    }
    model.synced = len;
    model.last_append = None;
    Ok(())
}

/// Runs one simulated history; the error says what broke and at which step.
pub fn run(mut rng: Rng) -> Result<(), String> {
    let opts = options(&mut rng);
    let disk_seed = rng.next() ^ 0x5EED;
    let mut disk = SimDisk::new(disk_seed);
    // Half the histories write through the storage's write map, half with write_all_at.
    disk.set_write_maps(disk_seed & 1 == 0);
    let mut store = Some(open(&disk, &opts)?);
    let mut model = Model::default();
    let mut poisoned = false;
    let steps = 30 + rng.below(120);
    let mut next_id = 1u128;
    for step in 0..steps {
        let s = store.as_ref().ok_or("no store")?;
        let roll = rng.below(100);
        if std::env::var("ANNAL_SIM_TRACE").is_ok() {
            eprintln!(
                "step {step}: roll {roll}, {} events, acked {:?}, poisoned {poisoned}",
                model.events.len(),
                model.acked
            );
        }
        let ctx = |e: String| format!("step {step}: {e}");
        if roll < 50 {
            // An append, or a retry of the last one.
            let (stream, expected, events) = match &model.last_append {
                Some((st, ex, evs, _)) if rng.chance(10) => (st.clone(), *ex, evs.clone()),
                _ => {
                    let stream = STREAMS[rng.below(3) as usize].to_string();
                    let v = model.version(&stream);
                    let expected = match rng.below(10) {
                        0..=3 => ExpectedVersion::Any,
                        4..=6 => ExpectedVersion::Exact(v),
                        7 => ExpectedVersion::Exact(v + 1 + rng.below(2)),
                        8 => ExpectedVersion::NoStream,
                        _ => ExpectedVersion::StreamExists,
                    };
                    let n = 1 + rng.below(3);
                    let with_ids = rng.chance(50);
                    let events = (0..n)
                        .map(|_| {
                            next_id += 1;
                            let mut payload = vec![0u8; rng.below(200) as usize];
                            payload.iter_mut().for_each(|b| *b = rng.below(256) as u8);
                            // Record format 2 (tags) and 1 (none) side by side.
                            let tags: Vec<String> = (0..rng.below(4))
                                .map(|_| format!("tag-{}", rng.below(5)))
                                .collect();
                            let e = EventData::new(format!("T{}", rng.below(3)), payload)
                                .with_tags(tags);
                            if with_ids { e.with_id(next_id) } else { e }
                        })
                        .collect();
                    (stream, expected, events)
                }
            };
            let current = model.version(&stream);
            let is_retry =
                model.last_append.as_ref().is_some_and(|(st, ex, evs, _)| {
                    *st == stream && *ex == expected && *evs == events
                }) && events.iter().all(|e| e.id.is_some());
            let matches = match expected {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => current == 0,
                ExpectedVersion::StreamExists => current > 0,
                ExpectedVersion::Exact(v) => v == current,
            };
            match s.append(&stream, expected, &events) {
                Ok(r) => {
                    if poisoned {
                        return Err(ctx("an append succeeded on a poisoned store".into()));
                    }
                    if is_retry {
                        // The original's positions and versions, and said to be a retry.
                        let original =
                            model
                                .last_append
                                .as_ref()
                                .map(|(_, _, _, r)| annal::AppendResult {
                                    deduplicated: true,
                                    ..*r
                                });
                        if Some(r) != original {
                            return Err(ctx(format!("retry gave {r:?}, original {original:?}")));
                        }
                        continue;
                    }
                    if !matches {
                        return Err(ctx(format!("{expected} accepted at version {current}")));
                    }
                    if r.first_position != model.events.len() as u64 + 1
                        || r.first_version != current + 1
                    {
                        return Err(ctx(format!("append landed at {r:?}")));
                    }
                    for (i, e) in events.iter().enumerate() {
                        model.events.push(Ev {
                            stream: stream.clone(),
                            version: current + 1 + i as u64,
                            event_type: e.event_type.clone(),
                            payload: e.payload.to_vec(),
                            id: e.id,
                            tags: e.tags.clone(),
                        });
                    }
                    model.boundaries.push(model.events.len() as u64);
                    model.acknowledged(opts.fsync);
                    model.last_append = Some((stream, expected, events, r));
                }
                Err(Error::WrongExpectedVersion { .. }) if !matches && !is_retry => {}
                // Poisoned by a failure this append did not see: the background sync of a
                // sealed segment.
                Err(Error::Io { .. } | Error::Poisoned { .. }) if !poisoned => {
                    poisoned = true;
                    if matches {
                        let first_version = current + 1;
                        model.maybe = Some(
                            events
                                .iter()
                                .enumerate()
                                .map(|(i, e)| Ev {
                                    stream: stream.clone(),
                                    version: first_version + i as u64,
                                    event_type: e.event_type.clone(),
                                    payload: e.payload.to_vec(),
                                    id: e.id,
                                    tags: e.tags.clone(),
                                })
                                .collect(),
                        );
                    }
                }
                Err(Error::Poisoned { .. }) if poisoned => {}
                Err(e) => return Err(ctx(format!("append {expected}: unexpected {e}"))),
            }
        } else if roll < 58 {
            // Reads agree with the model; a poisoned store still serves what was acknowledged.
            let got: Vec<Ev> = s
                .read_all(ReadOptions::forward())
                .map_err(|e| e.to_string())?
                .map(|e| e.map(|e| Ev::of(&e)))
                .collect::<annal::Result<_>>()
                .map_err(|e| ctx(format!("read_all: {e}")))?;
            // An append whose sync failed (under EveryEvents) may have been published first.
            let with_maybe = model
                .maybe
                .as_ref()
                .map(|m| model.events.iter().chain(m).cloned().collect::<Vec<Ev>>());
            // So may the event of a command whose append failed in its sync.
            let unknown_tail = model.unknown_tail
                && got.len() == model.events.len() + 1
                && got.starts_with(&model.events);
            if got != model.events && Some(&got) != with_maybe.as_ref() && !unknown_tail {
                return Err(ctx(format!(
                    "read_all: {} events, model {}",
                    got.len(),
                    model.events.len()
                )));
            }
        } else if roll < 63 {
            match s.sync() {
                Ok(()) if !poisoned => model.synced = model.events.len() as u64,
                Ok(()) => return Err(ctx("sync succeeded on a poisoned store".into())),
                Err(Error::Io { .. } | Error::Poisoned { .. }) => poisoned = true,
                Err(e) => return Err(ctx(format!("sync: {e}"))),
            }
        } else if roll < 66 && !poisoned {
            // A transaction over two streams: one frame, all or nothing.
            let a = STREAMS[rng.below(3) as usize].to_string();
            let b = format!("tx-{}", rng.below(2));
            let parts: Vec<(String, Vec<EventData>)> = [a, b]
                .into_iter()
                .map(|stream| {
                    let events = (0..1 + rng.below(2))
                        .map(|_| {
                            let payload: Vec<u8> =
                                (0..rng.below(60)).map(|_| rng.below(256) as u8).collect();
                            EventData::new("Tx", payload)
                                .with_tags([format!("tag-{}", rng.below(5))])
                        })
                        .collect();
                    (stream, events)
                })
                .collect();
            let tx = parts
                .iter()
                .fold(annal::Transaction::new(), |tx, (stream, events)| {
                    tx.append(stream.clone(), ExpectedVersion::Any, events.clone())
                });
            let evs: Vec<Ev> = parts
                .iter()
                .flat_map(|(stream, events)| {
                    let first = model.version(stream) + 1;
                    events.iter().enumerate().map(move |(i, e)| Ev {
                        stream: stream.clone(),
                        version: first + i as u64,
                        event_type: e.event_type.clone(),
                        payload: e.payload.to_vec(),
                        id: e.id,
                        tags: e.tags.clone(),
                    })
                })
                .collect();
            match s.commit(tx) {
                Ok(r) => {
                    if r.first_position != model.events.len() as u64 + 1
                        || r.last_position != model.events.len() as u64 + evs.len() as u64
                    {
                        return Err(ctx(format!("transaction landed at {r:?}")));
                    }
                    model.events.extend(evs);
                    model.boundaries.push(model.events.len() as u64);
                    model.acknowledged(opts.fsync);
                    model.last_append = None;
                }
                Err(Error::Io { .. } | Error::Poisoned { .. }) => {
                    poisoned = true;
                    model.maybe = Some(evs);
                }
                Err(e) => return Err(ctx(format!("commit: unexpected {e}"))),
            }
        } else if roll < 70 && !poisoned {
            // A command through the aggregate (snapshots every few events).
            let before = model.events.len() as u64;
            match s
                .aggregate::<Account>()
                .execute("acct-1", 1 + rng.below(9) as i64)
            {
                Ok(done) => {
                    let r = done.appended.ok_or("execute appended nothing")?;
                    if r.first_position != before + 1 {
                        return Err(ctx(format!("execute landed at {r:?}")));
                    }
                    let e = s
                        .read_all(ReadOptions::forward_from(r.first_position).limit(1))
                        .map_err(|e| e.to_string())?
                        .next()
                        .ok_or("appended event missing")?
                        .map_err(|e| e.to_string())?;
                    model.events.push(Ev::of(&e));
                    model.boundaries.push(model.events.len() as u64);
                    model.acknowledged(opts.fsync);
                    model.last_append = None;
                }
                Err(annal::ExecuteError::Store(Error::Io { .. } | Error::Poisoned { .. })) => {
                    // The append failed (after writing or not): like a failed plain append.
                    poisoned = s.is_poisoned();
                    if !poisoned {
                        return Err(ctx(
                            "execute failed with I/O but the store is not poisoned".into()
                        ));
                    }
                    model.maybe = None;
                    model.unknown_tail = true;
                }
                Err(e) => return Err(ctx(format!("execute: {e:?}"))),
            }
        } else if roll < 76 && !poisoned {
            // The relay consumes some events and acknowledges them.
            let mut sub = match s.durable_subscription("relay") {
                Ok(sub) => sub,
                // An injected failure while creating its file: nothing acknowledged changed.
                Err(Error::Io { .. }) => continue,
                Err(e) => return Err(ctx(e.to_string())),
            };
            let mut last = None;
            for _ in 0..rng.below(6) {
                match sub
                    .next_timeout(Duration::ZERO)
                    .map_err(|e| ctx(e.to_string()))?
                {
                    Some(e) => last = Some(e.position),
                    None => break,
                }
            }
            match last.map(|p| (p, sub.ack(p))) {
                Some((_, Ok(()))) => model.acked = Some(sub.acked_position()),
                // A failed ack may or may not have reached the file: the consumer asked for
                // it, so resuming after it is allowed, and resuming before it is redelivery.
                Some((p, Err(Error::Io { .. }))) => {
                    model.acked = Some(model.acked.unwrap_or(0).max(p))
                }
                Some((_, Err(e))) => return Err(ctx(format!("ack: {e}"))),
                None => model.acked = Some(model.acked.unwrap_or(0)),
            }
        } else if roll < 80 {
            match rng.below(4) {
                0 => disk.fail_write_after(1 + rng.below(3), WriteFault::Io),
                1 => disk.fail_write_after(1 + rng.below(3), WriteFault::NoSpace),
                2 => disk.fail_write_after(1 + rng.below(3), WriteFault::Short),
                _ => disk.fail_sync_after(1 + rng.below(3)),
            }
        } else if roll < 92 {
            // Crash: the process and the machine; reopen on what the disk kept.
            disk = disk.crash();
            drop(store.take());
            disk.clear_faults();
            // Sometimes the crash also rots the last frame: the last group-commit batch,
            // which no later record can vouch for.
            // (Under Always, where every acknowledged event was synced.)
            let rotted = opts.fsync == FsyncPolicy::Always
                && rng.chance(15)
                && rot_last_frame(&disk, &mut rng);
            // Or whole synced frames at the end vanish (zeroed): detected exactly when STATE
            // vouches for them.
            let vanished = if opts.fsync == FsyncPolicy::Always && !rotted && rng.chance(10) {
                zero_tail_frames(&disk, &mut rng)
            } else {
                None
            };
            if let Some((first, floor)) = vanished {
                let refused = matches!(open(&disk, &opts), Err(e) if e.contains("corruption"));
                if refused != (first <= floor) {
                    return Err(ctx(format!(
                        "frames from position {first} zeroed, STATE floor {floor}: refused {refused}"
                    )));
                }
                if refused {
                    let r = annal::repair(&disk, DIR, RepairOptions { accept_loss: true })
                        .map_err(|e| ctx(format!("repair: {e}")))?;
                    if r.after.health() != Health::Healthy {
                        return Err(ctx(format!("after repair: {:?}", r.after.findings)));
                    }
                }
                accept_loss(&mut model, first - 1);
            }
            let mut checked = verified(&disk).map_err(ctx)?;
            let reopened = match open(&disk, &opts) {
                Ok(s) => s,
                Err(e) if rotted && e.contains("corruption") => {
                    if checked.health() != Health::Damaged {
                        return Err(ctx(format!(
                            "the open refused ({e}) but verify said {:?}",
                            checked.health()
                        )));
                    }
                    // Rot in synced data, proven synced: accept the loss and go on.
                    let r = annal::repair(&disk, DIR, RepairOptions { accept_loss: true })
                        .map_err(|e| ctx(format!("repair: {e}")))?;
                    if r.after.health() != Health::Healthy {
                        return Err(ctx(format!("after repair: {:?}", r.after.findings)));
                    }
                    let s = open(&disk, &opts).map_err(ctx)?;
                    accept_loss(&mut model, s.last_position());
                    checked = r.after;
                    s
                }
                Err(e) => return Err(ctx(e)),
            };
            agrees(&checked, &reopened).map_err(ctx)?;
            if rotted && (reopened.last_position() as usize) < model.events.len() {
                // The window that cannot be closed: an acknowledged batch cut as torn. It must
                // be counted as unproven, and lost as a whole.
                let r = reopened.recovery_report();
                if r.proven_durable > reopened.last_position() || r.truncated_bytes == 0 {
                    return Err(ctx(format!(
                        "rot in the last batch cut without a trace: {r:?}"
                    )));
                }
                accept_loss(&mut model, reopened.last_position());
            }
            verify(&reopened, &mut model, &opts, true).map_err(ctx)?;
            store = Some(reopened);
            poisoned = false;
        } else {
            // A clean restart (or, when poisoned, the restart that recovers).
            drop(store.take());
            disk.clear_faults();
            let reopened = open(&disk, &opts).map_err(ctx)?;
            // A poisoned store could not sync at close: what it acknowledged is still in the
            // page cache, which is what a restart without a crash reads.
            verify(&reopened, &mut model, &opts, false).map_err(ctx)?;
            store = Some(reopened);
            poisoned = false;
        }
    }
    // Rot: damage durable log bytes; every read either returns the right event or says
    // Corruption. First a clean restart, so the model is exactly what is on disk.
    drop(store.take());
    disk.clear_faults();
    let reopened = open(&disk, &opts)?;
    verify(&reopened, &mut model, &opts, false).map_err(|e| format!("final restart: {e}"))?;
    drop(reopened);
    let segs = segment_paths(&disk);
    if rng.chance(40) {
        return check_loss(&disk, &opts, &model, &segs, &mut rng);
    }
    if let Some(seg) = segs.get(rng.below(segs.len() as u64) as usize) {
        let len = disk.contents(seg).map_or(0, |c| c.len() as u64);
        let used = disk
            .contents(seg)
            .and_then(|c| c.iter().rposition(|&b| b != 0))
            .unwrap_or(0) as u64;
        if used > 32 && len > 0 {
            let at = 32 + rng.below(used - 32);
            let bit = rng.below(8) as u8;
            if std::env::var("ANNAL_SIM_TRACE").is_ok() {
                eprintln!(
                    "rot: {} byte {at} bit {bit} (data ends at {used})",
                    seg.display()
                );
            }
            disk.flip_bit(seg, at, bit);
            check_rot(&disk, &opts, &model, seg)?;
        }
    }
    Ok(())
}

fn check_rot(disk: &SimDisk, opts: &Options, model: &Model, seg: &Path) -> Result<(), String> {
    let store = match open(disk, opts) {
        Ok(s) => s,
        Err(e) if e.contains("corruption") => return Ok(()),
        Err(e) => return Err(format!("after rot in {}: {e}", seg.display())),
    };
    let check = |r: annal::Result<RecordedEvent>| -> Result<(), String> {
        match r {
            Ok(e) => {
                let want = model.events.get(e.position as usize - 1);
                if want != Some(&Ev::of(&e)) {
                    return Err(format!(
                        "rot in {} returned as data at position {}: got {:?}, want {want:?}",
                        seg.display(),
                        e.position,
                        Ev::of(&e)
                    ));
                }
                Ok(())
            }
            Err(Error::Corruption { .. }) => Ok(()),
            Err(e) => Err(format!("after rot: {e}")),
        }
    };
    let mut seen = 0;
    let mut corrupt = false;
    for r in store
        .read_all(ReadOptions::forward())
        .map_err(|e| e.to_string())?
    {
        corrupt |= r.is_err();
        seen += u64::from(r.is_ok());
        check(r)?;
    }
    // Nothing acknowledged and synced may silently disappear: fewer events is only allowed
    // with an error saying why.
    if !corrupt && seen != model.events.len() as u64 {
        return Err(format!(
            "rot in {} silently dropped events: {seen} of {}",
            seg.display(),
            model.events.len()
        ));
    }
    for s in STREAMS {
        for r in store
            .read_stream(s, ReadOptions::forward())
            .map_err(|e| e.to_string())?
        {
            check(r)?;
        }
    }
    Ok(())
}

/// `annal::verify` on the disk, checking that it changed nothing.
fn verified(disk: &SimDisk) -> Result<VerifyReport, String> {
    let contents = |d: &SimDisk| -> Vec<_> {
        d.paths()
            .into_iter()
            .map(|p| (p.clone(), d.contents(&p)))
            .collect()
    };
    let before = contents(disk);
    let r = annal::verify(disk, DIR).map_err(|e| format!("verify: {e}"))?;
    if contents(disk) != before {
        return Err("verify changed the disk".into());
    }
    Ok(r)
}

/// What verify said agrees with what the open did.
fn agrees(checked: &VerifyReport, store: &Store) -> Result<(), String> {
    if checked.health() == Health::Damaged {
        return Err(format!(
            "verify found damage the open accepted: {:?}",
            checked.findings
        ));
    }
    if checked.last_position != store.last_position() {
        return Err(format!(
            "verify says the log ends at {}, the open recovered {}: {:?}",
            checked.last_position,
            store.last_position(),
            checked.findings
        ));
    }
    Ok(())
}

/// Acknowledged events after `len` are gone, by a loss the store detected and was told to
/// accept (or the undetectable window): the model forgets them.
fn accept_loss(model: &mut Model, len: u64) {
    model.events.truncate(len as usize);
    model.boundaries.retain(|&b| b <= len);
    if !model.boundaries.contains(&len) {
        model.boundaries.push(len);
    }
    model.synced = model.synced.min(len);
    model.maybe = None;
    model.unknown_tail = false;
    model.last_append = None;
    if let Some(a) = &mut model.acked {
        *a = (*a).min(len);
    }
}

/// The segment files, oldest first.
fn segment_paths(disk: &SimDisk) -> Vec<PathBuf> {
    // Only the store's own: not the copies a repair put in a quarantine folder.
    let mut v: Vec<PathBuf> = disk
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg") && p.parent() == Some(Path::new(DIR)))
        .collect();
    v.sort();
    v
}

/// Offsets of the frames of a segment's bytes, by their length fields.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut at = 32;
    let mut v = Vec::new();
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap_or([0; 4])) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break;
        }
        // Only frames that pass their checksum (length and body): not a torn one.
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[at..at + 4]);
        h.update(&bytes[at + 8..at + 8 + len]);
        if h.finalize().to_le_bytes() != bytes[at + 4..at + 8] {
            break;
        }
        v.push(at);
        at += 8 + len;
    }
    v
}

/// Flips a bit in the last frame of the last segment, durably; false if it has none.
fn rot_last_frame(disk: &SimDisk, rng: &mut Rng) -> bool {
    let Some(seg) = segment_paths(disk).pop() else {
        return false;
    };
    let bytes = disk.contents(&seg).unwrap_or_default();
    let offsets = frame_offsets(&bytes);
    let Some(&last) = offsets.last() else {
        return false;
    };
    let len = u32::from_le_bytes(bytes[last..last + 4].try_into().unwrap_or([0; 4])) as u64;
    let at = last as u64 + 8 + rng.below(len);
    disk.flip_bit(&seg, at, rng.below(8) as u8)
}

/// After a clean close: synced data vanishes (a segment deleted, the last one truncated or
/// cut at a frame boundary, its last frame zeroed). verify and every open must say so and
/// change nothing; repair without leave changes nothing; repair with it leaves a store that
/// opens with a prefix of the model and takes an append.
fn check_loss(
    disk: &SimDisk,
    opts: &Options,
    model: &Model,
    segs: &[PathBuf],
    rng: &mut Rng,
) -> Result<(), String> {
    let Some(last) = segs.last() else {
        return Ok(());
    };
    let bytes = disk.contents(last).unwrap_or_default();
    let offsets = frame_offsets(&bytes);
    let trace = std::env::var("ANNAL_SIM_TRACE").is_ok();
    let kind = rng.below(4);
    let dir = Path::new(DIR);
    let io = |e: std::io::Error| e.to_string();
    match kind {
        // A whole segment deleted: the last one, or any.
        0 | 1 => {
            let victim = if kind == 0 {
                last
            } else {
                &segs[rng.below(segs.len() as u64) as usize]
            };
            if trace {
                eprintln!("loss: delete {}", victim.display());
            }
            disk.remove(victim).map_err(io)?;
            disk.sync_dir(dir).map_err(io)?;
        }
        // The last segment truncated at a frame boundary (shorter file), or cut there with
        // zeros (same length).
        _ => {
            let Some(&cut) = offsets.get(rng.below(offsets.len() as u64) as usize) else {
                return Ok(());
            };
            if trace {
                eprintln!(
                    "loss: {} {} at {cut}",
                    if kind == 2 { "truncate" } else { "zero" },
                    last.display()
                );
            }
            let f = disk.open(last, true).map_err(io)?;
            if kind == 2 {
                f.set_len(cut as u64).map_err(io)?;
            } else {
                f.write_all_at(&vec![0u8; bytes.len() - cut], cut as u64)
                    .map_err(io)?;
            }
            f.sync_data().map_err(io)?;
        }
    }
    let checked = verified(disk)?;
    if checked.health() != Health::Damaged {
        return Err(format!(
            "loss {kind} not found by verify: {:?}",
            checked.findings
        ));
    }
    for read_only in [false, true] {
        let o = Options {
            read_only,
            ..opts.clone()
        };
        match open(disk, &o) {
            Err(e) if e.contains("corruption") => {}
            Err(e) => return Err(format!("loss {kind}: open failed oddly: {e}")),
            Ok(s) => {
                return Err(format!(
                    "loss {kind}: the open (read-only {read_only}) accepted it, {} events of {}",
                    s.last_position(),
                    model.events.len()
                ));
            }
        }
    }
    let r = annal::repair(disk, DIR, RepairOptions::default()).map_err(|e| e.to_string())?;
    if r.cut_made || verified(disk)?.findings != checked.findings {
        return Err("repair without accept_loss changed the store".into());
    }
    let r = annal::repair(disk, DIR, RepairOptions { accept_loss: true })
        .map_err(|e| format!("repair: {e}"))?;
    if r.after.health() != Health::Healthy {
        return Err(format!("after repair: {:?}", r.after.findings));
    }
    let store = open(disk, opts)?;
    let got: Vec<Ev> = store
        .read_all(ReadOptions::forward())
        .map_err(|e| e.to_string())?
        .map(|e| e.map(|e| Ev::of(&e)))
        .collect::<annal::Result<_>>()
        .map_err(|e| format!("read_all after repair: {e}"))?;
    if got.len() > model.events.len() || got[..] != model.events[..got.len()] {
        return Err(format!(
            "after repair: {} events, not a prefix of the model",
            got.len()
        ));
    }
    let a = store
        .append(
            "cart-9",
            ExpectedVersion::NoStream,
            &[EventData::new("T", &b"after"[..])],
        )
        .map_err(|e| format!("append after repair: {e}"))?;
    if a.first_position != got.len() as u64 + 1 {
        return Err(format!(
            "append after repair landed at {}",
            a.first_position
        ));
    }
    Ok(())
}

/// Zeroes (durably) the last few whole frames of the last segment; returns the first position
/// zeroed and STATE's durable position, if there were frames.
fn zero_tail_frames(disk: &SimDisk, rng: &mut Rng) -> Option<(u64, u64)> {
    let seg = segment_paths(disk).pop()?;
    let bytes = disk.contents(&seg)?;
    let offsets = frame_offsets(&bytes);
    if offsets.is_empty() {
        return None;
    }
    let keep = offsets.len() - 1 - rng.below(offsets.len().min(3) as u64) as usize;
    let at = *offsets.get(keep)?;
    let first = u64::from_le_bytes(bytes.get(at + 8..at + 16)?.try_into().ok()?);
    let state = disk.contents(&Path::new(DIR).join("STATE"))?;
    let floor = u64::from_le_bytes(state.get(12..20)?.try_into().ok()?);
    let f = disk.open(&seg, true).ok()?;
    let end = offsets.last().map(|&o| {
        o + 8 + u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap_or([0; 4])) as usize
    })?;
    f.write_all_at(&vec![0u8; end - at], at as u64).ok()?;
    f.sync_data().ok()?;
    Some((first, floor))
}
