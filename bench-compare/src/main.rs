//! annal side by side with the raw-disk limit, SQLite, redb and fjall, measured in one run on
//! the same workload: 200-byte payloads, 16-byte event types, streams named like `order-123`.
//!
//! `cargo run --release -- [--events N] [--fsync-events M] [--runs R] [--json FILE] [--only a,b]
//! [--workload standard|small|dcb|all]` from `bench-compare/`. `small` is the small-append
//! workload alone: 1 or 10 events per call to random streams, with the rate of each 200k-event
//! lap; `dcb` the consistency model's costs, annal against itself. Each system runs in a process of its own, in `R` rounds (default 3)
//! of all systems in turn; the table shows each figure's median over the rounds, with ratios,
//! and the figures are written as JSON.

// The consistency model's costs (annal alone: conditional appends, tag reads, tagged
// replay), shared with `cargo bench --bench query`.
#[path = "../../benches/shared/workload.rs"]
mod workload;

#[path = "../../benches/shared/query_costs.rs"]
mod query_costs;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 200;
const STREAMS: u64 = 10_000;

fn payload(i: u64) -> Vec<u8> {
    let mut p = vec![0xA5u8; PAYLOAD];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

fn event_type(i: u64) -> String {
    format!("OrderEvent{:06}", i % 1000)
}

/// The batches of a workload: (stream, first index, count). Batches of one stream each, streams
/// taken round robin so each stream's events are scattered through the log.
fn batches(events: u64, batch: u64) -> Vec<(String, u64, u64)> {
    let mut v = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < events {
        let n = batch.min(events - i);
        v.push((format!("order-{}", k % STREAMS), i, n));
        i += n;
        k += 1;
    }
    v
}

/// One system under test.
trait System {
    fn name(&self) -> &'static str;
    /// Appends `events` in batches; `sync` makes every batch durable before the next.
    fn append(&mut self, dir: &Path, batches: &[(String, u64, u64)], sync: bool);
    /// Reads every event back in order, verifying and decoding; returns the count.
    fn replay(&mut self) -> u64;
    /// Reads one whole stream; returns its length.
    fn read_stream(&mut self, stream: &str) -> u64;
    /// Closes everything before the directory goes away.
    fn close(&mut self);
    /// `threads` threads each append `per_thread` single events, each durable before the call
    /// returns; returns the elapsed time.
    fn append_concurrent(&mut self, dir: &Path, threads: u64, per_thread: u64) -> Duration;
}

/// Runs `per_thread` calls of `f(thread, i)` on each of `threads` threads; the elapsed time.
fn on_threads(threads: u64, per_thread: u64, f: impl Fn(u64, u64) + Sync) -> Duration {
    let t = Instant::now();
    std::thread::scope(|s| {
        for k in 0..threads {
            let f = &f;
            s.spawn(move || (0..per_thread).for_each(|i| f(k, i)));
        }
    });
    t.elapsed()
}

/// A raw-log record (`len, crc, stream, type, payload`) for event `i`, written into `rec`.
fn record_into(rec: &mut Vec<u8>, stream: &str, i: u64) {
    rec.clear();
    rec.extend_from_slice(&[0; 8]);
    rec.extend_from_slice(&(stream.len() as u16).to_le_bytes());
    rec.extend_from_slice(stream.as_bytes());
    let t = event_type(i);
    rec.extend_from_slice(&(t.len() as u16).to_le_bytes());
    rec.extend_from_slice(t.as_bytes());
    rec.extend_from_slice(&payload(i));
    let body = (rec.len() - 8) as u32;
    let crc = crc32fast::hash(&rec[8..]);
    rec[..4].copy_from_slice(&body.to_le_bytes());
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
}

// ---------------------------------------------------------------- raw log: the disk's limit

#[derive(Default)]
struct Raw {
    file: Option<File>,
    index: HashMap<String, Vec<(u64, u32)>>,
    len: u64,
}

impl System for Raw {
    fn name(&self) -> &'static str {
        "raw log"
    }
    fn append(&mut self, dir: &Path, batches: &[(String, u64, u64)], sync: bool) {
        let path = dir.join("raw.log");
        let file = File::create(&path).unwrap();
        let mut w = BufWriter::with_capacity(1 << 16, file.try_clone().unwrap());
        let mut at = 0u64;
        let mut rec = Vec::with_capacity(512);
        for (stream, first, n) in batches {
            for i in *first..first + n {
                record_into(&mut rec, stream, i);
                w.write_all(&rec).unwrap();
                self.index
                    .entry(stream.clone())
                    .or_default()
                    .push((at, rec.len() as u32));
                at += rec.len() as u64;
            }
            if sync {
                w.flush().unwrap();
                file.sync_data().unwrap();
            }
        }
        w.flush().unwrap();
        self.len = at;
        self.file = Some(File::open(&path).unwrap());
    }
    fn replay(&mut self) -> u64 {
        let mut buf = vec![0u8; self.len as usize];
        self.file
            .as_ref()
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        let mut at = 0;
        let mut n = 0;
        while at + 8 <= buf.len() {
            let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(buf[at + 4..at + 8].try_into().unwrap());
            let body = &buf[at + 8..at + 8 + len];
            assert_eq!(crc32fast::hash(body), crc);
            let sl = u16::from_le_bytes([body[0], body[1]]) as usize;
            std::hint::black_box(std::str::from_utf8(&body[2..2 + sl]).unwrap());
            at += 8 + len;
            n += 1;
        }
        n
    }
    fn read_stream(&mut self, stream: &str) -> u64 {
        let file = self.file.as_ref().unwrap();
        let mut n = 0;
        let mut buf = vec![0u8; 512];
        for &(at, len) in self
            .index
            .get(stream)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let b = &mut buf[..len as usize];
            file.read_exact_at(b, at).unwrap();
            let crc = u32::from_le_bytes(b[4..8].try_into().unwrap());
            assert_eq!(crc32fast::hash(&b[8..]), crc);
            n += 1;
        }
        n
    }
    fn close(&mut self) {
        self.file = None;
        self.index.clear();
    }
    fn append_concurrent(&mut self, dir: &Path, threads: u64, per_thread: u64) -> Duration {
        // What a bolt-on log does: a mutex around write + fdatasync, no group commit.
        let file = std::sync::Mutex::new(File::create(dir.join("raw-mt.log")).unwrap());
        on_threads(threads, per_thread, |k, i| {
            let mut rec = Vec::with_capacity(512);
            record_into(&mut rec, &format!("order-{k}"), i);
            let mut f = file.lock().unwrap();
            f.write_all(&rec).unwrap();
            f.sync_data().unwrap();
        })
    }
}

// ---------------------------------------------------------------- annal

#[derive(Default)]
struct Annal {
    store: Option<annal::Store>,
}

impl System for Annal {
    fn name(&self) -> &'static str {
        "annal"
    }
    fn append(&mut self, dir: &Path, batches: &[(String, u64, u64)], sync: bool) {
        let fsync = if sync {
            annal::FsyncPolicy::Always
        } else {
            annal::FsyncPolicy::Never
        };
        let store =
            annal::Store::open(dir.join("annal"), annal::Options::default().fsync(fsync)).unwrap();
        let mut evs = Vec::new();
        for (stream, first, n) in batches {
            evs.clear();
            evs.extend(
                (*first..first + n).map(|i| annal::EventData::new(event_type(i), payload(i))),
            );
            store
                .append(stream, annal::ExpectedVersion::Any, &evs)
                .unwrap();
        }
        self.store = Some(store);
    }
    fn replay(&mut self) -> u64 {
        let mut n = 0;
        for e in self
            .store
            .as_ref()
            .unwrap()
            .read_all(annal::ReadOptions::forward())
            .unwrap()
        {
            std::hint::black_box(e.unwrap());
            n += 1;
        }
        n
    }
    fn read_stream(&mut self, stream: &str) -> u64 {
        let mut n = 0;
        for e in self
            .store
            .as_ref()
            .unwrap()
            .read_stream(stream, annal::ReadOptions::forward())
            .unwrap()
        {
            std::hint::black_box(e.unwrap());
            n += 1;
        }
        n
    }
    fn close(&mut self) {
        self.store = None;
    }
    fn append_concurrent(&mut self, dir: &Path, threads: u64, per_thread: u64) -> Duration {
        let store = annal::Store::open(dir.join("annal-mt"), annal::Options::default()).unwrap();
        on_threads(threads, per_thread, |k, i| {
            let e = annal::EventData::new(event_type(i), payload(i));
            store
                .append(&format!("order-{k}"), annal::ExpectedVersion::Any, &[e])
                .unwrap();
        })
    }
}

// ---------------------------------------------------------------- SQLite

#[derive(Default)]
struct Sqlite {
    db: Option<rusqlite::Connection>,
}

/// A new SQLite database of events at `path`: WAL, `synchronous` FULL with `sync`, else OFF.
fn sqlite_open(path: &Path, sync: bool) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(path).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.pragma_update(None, "synchronous", if sync { "FULL" } else { "OFF" })
        .unwrap();
    db.execute_batch(
        "CREATE TABLE events(position INTEGER PRIMARY KEY, stream TEXT NOT NULL, \
         version INTEGER NOT NULL, type TEXT NOT NULL, payload BLOB NOT NULL, UNIQUE(stream, version));",
    )
    .unwrap();
    db
}

impl System for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite"
    }
    fn append(&mut self, dir: &Path, batches: &[(String, u64, u64)], sync: bool) {
        let mut db = sqlite_open(&dir.join("sqlite.db"), sync);
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for (stream, first, n) in batches {
            let tx = db.transaction().unwrap();
            {
                let mut st = tx
                    .prepare_cached("INSERT INTO events(stream, version, type, payload) VALUES (?1, ?2, ?3, ?4)")
                    .unwrap();
                for i in *first..first + n {
                    let v = versions.entry(stream.as_str()).or_default();
                    *v += 1;
                    st.execute(rusqlite::params![
                        stream,
                        *v as i64,
                        event_type(i),
                        payload(i)
                    ])
                    .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        self.db = Some(db);
    }
    fn replay(&mut self) -> u64 {
        let db = self.db.as_ref().unwrap();
        let mut st = db
            .prepare(
                "SELECT position, stream, version, type, payload FROM events ORDER BY position",
            )
            .unwrap();
        let mut rows = st.query([]).unwrap();
        let mut n = 0;
        while let Some(r) = rows.next().unwrap() {
            let s: String = r.get(1).unwrap();
            let p: Vec<u8> = r.get(4).unwrap();
            std::hint::black_box((s, p));
            n += 1;
        }
        n
    }
    fn read_stream(&mut self, stream: &str) -> u64 {
        let db = self.db.as_ref().unwrap();
        let mut st = db
            .prepare_cached(
                "SELECT version, type, payload FROM events WHERE stream = ?1 ORDER BY version",
            )
            .unwrap();
        let mut rows = st.query([stream]).unwrap();
        let mut n = 0;
        while let Some(r) = rows.next().unwrap() {
            let p: Vec<u8> = r.get(2).unwrap();
            std::hint::black_box(p);
            n += 1;
        }
        n
    }
    fn close(&mut self) {
        self.db = None;
    }
    fn append_concurrent(&mut self, dir: &Path, threads: u64, per_thread: u64) -> Duration {
        let db = sqlite_open(&dir.join("sqlite-mt.db"), true);
        // One connection shared behind a mutex: SQLite serializes writers anyway.
        let db = std::sync::Mutex::new(db);
        on_threads(threads, per_thread, |k, i| {
            let db = db.lock().unwrap();
            db.execute(
                "INSERT INTO events(stream, version, type, payload) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    format!("order-{k}"),
                    i as i64 + 1,
                    event_type(i),
                    payload(i)
                ],
            )
            .unwrap();
        })
    }
}

// ---------------------------------------------------------------- redb

const REDB_EVENTS: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("events");

#[derive(Default)]
struct Redb {
    db: Option<redb::Database>,
}

fn value(i: u64) -> Vec<u8> {
    let t = event_type(i);
    let mut v = Vec::with_capacity(2 + t.len() + PAYLOAD);
    v.extend_from_slice(&(t.len() as u16).to_le_bytes());
    v.extend_from_slice(t.as_bytes());
    v.extend_from_slice(&payload(i));
    v
}

impl System for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn append(&mut self, dir: &Path, batches: &[(String, u64, u64)], sync: bool) {
        let db = redb::Database::create(dir.join("redb.db")).unwrap();
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for (stream, first, n) in batches {
            let mut tx = db.begin_write().unwrap();
            if !sync {
                tx.set_durability(redb::Durability::None).unwrap();
            }
            {
                let mut t = tx.open_table(REDB_EVENTS).unwrap();
                for i in *first..first + n {
                    let v = versions.entry(stream.as_str()).or_default();
                    *v += 1;
                    t.insert((stream.as_str(), *v), value(i).as_slice())
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        self.db = Some(db);
    }
    fn replay(&mut self) -> u64 {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.as_ref().unwrap().begin_read().unwrap();
        let t = tx.open_table(REDB_EVENTS).unwrap();
        let mut n = 0;
        for kv in t.iter().unwrap() {
            let (k, v) = kv.unwrap();
            std::hint::black_box((k.value(), v.value()));
            n += 1;
        }
        n
    }
    fn read_stream(&mut self, stream: &str) -> u64 {
        use redb::ReadableDatabase;
        let tx = self.db.as_ref().unwrap().begin_read().unwrap();
        let t = tx.open_table(REDB_EVENTS).unwrap();
        let mut n = 0;
        for kv in t.range((stream, 0u64)..=(stream, u64::MAX)).unwrap() {
            let (_, v) = kv.unwrap();
            std::hint::black_box(v.value());
            n += 1;
        }
        n
    }
    fn close(&mut self) {
        self.db = None;
    }
    fn append_concurrent(&mut self, dir: &Path, threads: u64, per_thread: u64) -> Duration {
        let db = redb::Database::create(dir.join("redb-mt.db")).unwrap();
        on_threads(threads, per_thread, |k, i| {
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(REDB_EVENTS).unwrap();
                let stream = format!("order-{k}");
                t.insert((stream.as_str(), i + 1), value(i).as_slice())
                    .unwrap();
            }
            tx.commit().unwrap();
        })
    }
}

// ---------------------------------------------------------------- fjall

#[derive(Default)]
struct Fjall {
    db: Option<(fjall::Database, fjall::Keyspace)>,
}

/// A new fjall database at `path` and its events keyspace.
fn fjall_open(path: &Path) -> (fjall::Database, fjall::Keyspace) {
    let db = fjall::Database::builder(path).open().unwrap();
    let ks = db
        .keyspace("events", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    (db, ks)
}

fn fjall_key(stream: &str, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 9);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

impl System for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn append(&mut self, dir: &Path, batches: &[(String, u64, u64)], sync: bool) {
        let (db, ks) = fjall_open(&dir.join("fjall"));
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for (stream, first, n) in batches {
            let mut b = db
                .batch()
                .durability(sync.then_some(fjall::PersistMode::SyncData));
            for i in *first..first + n {
                let v = versions.entry(stream.as_str()).or_default();
                *v += 1;
                b.insert(&ks, fjall_key(stream, *v), value(i));
            }
            b.commit().unwrap();
        }
        self.db = Some((db, ks));
    }
    fn replay(&mut self) -> u64 {
        let (_, ks) = self.db.as_ref().unwrap();
        let mut n = 0;
        for kv in ks.iter() {
            std::hint::black_box(kv.into_inner().unwrap());
            n += 1;
        }
        n
    }
    fn read_stream(&mut self, stream: &str) -> u64 {
        let (_, ks) = self.db.as_ref().unwrap();
        let mut prefix = stream.as_bytes().to_vec();
        prefix.push(0);
        let mut n = 0;
        for kv in ks.prefix(&prefix) {
            std::hint::black_box(kv.into_inner().unwrap());
            n += 1;
        }
        n
    }
    fn close(&mut self) {
        self.db = None;
    }
    fn append_concurrent(&mut self, dir: &Path, threads: u64, per_thread: u64) -> Duration {
        let (db, ks) = fjall_open(&dir.join("fjall-mt"));
        on_threads(threads, per_thread, |k, i| {
            let mut b = db.batch().durability(Some(fjall::PersistMode::SyncData));
            b.insert(&ks, fjall_key(&format!("order-{k}"), i + 1), value(i));
            b.commit().unwrap();
        })
    }
}

// ---------------------------------------------------------------- small appends

/// The calls of the small-append workload: `per_call` events each (the last call may hold
/// fewer) to a random one of the [`STREAMS`] streams, as one command appends to one entity.
fn small_calls(events: u64, per_call: u64) -> Vec<(String, u64, u64)> {
    let mut v = Vec::new();
    let (mut i, mut k) = (0u64, 0u64);
    while i < events {
        let n = per_call.min(events - i);
        // A fixed scrambling of call numbers: random streams, the same every run.
        v.push((format!("order-{}", workload::mix(k) % STREAMS), i, n));
        i += n;
        k += 1;
    }
    v
}

/// Runs `call` on every call in order and returns the throughput (events/s) of each lap of
/// `lap` events, so that a rate falling as the log grows shows.
fn lapped(
    calls: &[(String, u64, u64)],
    lap: u64,
    mut call: impl FnMut(&str, u64, u64),
) -> Vec<f64> {
    let total: u64 = calls.iter().map(|c| c.2).sum();
    let mut laps = Vec::new();
    let (mut done, mut in_lap) = (0u64, 0u64);
    let mut t = Instant::now();
    for (stream, first, n) in calls {
        call(stream, *first, *n);
        done += n;
        in_lap += n;
        if in_lap >= lap || done == total {
            laps.push(rate(in_lap, t.elapsed()));
            in_lap = 0;
            t = Instant::now();
        }
    }
    laps
}

/// One contender of the small-append workload: each call appends `n` events to one stream,
/// without fsync, and returns only once the system has what it promises for that call.
trait SmallAppends {
    fn name(&self) -> &'static str;
    /// Appends `calls` into a new store in `dir`; the rate of each lap of `lap` events.
    fn append_laps(&mut self, dir: &Path, calls: &[(String, u64, u64)], lap: u64) -> Vec<f64>;
}

/// The raw log with one `write(2)` per call: what survives kill -9 once the call returns,
/// annal's promise under `Never`.
struct RawWritePerCall;

impl SmallAppends for RawWritePerCall {
    fn name(&self) -> &'static str {
        "raw, write/call"
    }
    fn append_laps(&mut self, dir: &Path, calls: &[(String, u64, u64)], lap: u64) -> Vec<f64> {
        let mut file = File::create(dir.join("raw.log")).unwrap();
        let mut index: HashMap<String, Vec<(u64, u32)>> = HashMap::new();
        let (mut rec, mut buf, mut at) = (Vec::with_capacity(512), Vec::new(), 0u64);
        lapped(calls, lap, |stream, first, n| {
            buf.clear();
            let positions = index.entry_ref(stream);
            for i in first..first + n {
                record_into(&mut rec, stream, i);
                positions.push((at + buf.len() as u64, rec.len() as u32));
                buf.extend_from_slice(&rec);
            }
            file.write_all(&buf).unwrap();
            at += buf.len() as u64;
        })
    }
}

/// The raw log buffering in user space (`BufWriter`): the disk's limit, but a process crash
/// loses what is in the buffer.
struct RawBuffered;

impl SmallAppends for RawBuffered {
    fn name(&self) -> &'static str {
        "raw, buffered"
    }
    fn append_laps(&mut self, dir: &Path, calls: &[(String, u64, u64)], lap: u64) -> Vec<f64> {
        let file = File::create(dir.join("raw.log")).unwrap();
        let mut w = BufWriter::with_capacity(1 << 16, file);
        let mut index: HashMap<String, Vec<(u64, u32)>> = HashMap::new();
        let (mut rec, mut at) = (Vec::with_capacity(512), 0u64);
        let laps = lapped(calls, lap, |stream, first, n| {
            let positions = index.entry_ref(stream);
            for i in first..first + n {
                record_into(&mut rec, stream, i);
                w.write_all(&rec).unwrap();
                positions.push((at, rec.len() as u32));
                at += rec.len() as u64;
            }
        });
        w.flush().unwrap();
        laps
    }
}

/// A stream's entry in a map keyed by owned names, allocating the name only when new.
trait EntryRef<V> {
    fn entry_ref(&mut self, key: &str) -> &mut V;
}

impl<V: Default> EntryRef<V> for HashMap<String, V> {
    fn entry_ref(&mut self, key: &str) -> &mut V {
        if !self.contains_key(key) {
            self.insert(key.to_string(), V::default());
        }
        self.get_mut(key).unwrap()
    }
}

impl SmallAppends for Annal {
    fn name(&self) -> &'static str {
        "annal"
    }
    fn append_laps(&mut self, dir: &Path, calls: &[(String, u64, u64)], lap: u64) -> Vec<f64> {
        let options = annal::Options::default().fsync(annal::FsyncPolicy::Never);
        let store = annal::Store::open(dir.join("annal"), options).unwrap();
        let mut evs = Vec::new();
        let laps = lapped(calls, lap, |stream, first, n| {
            evs.clear();
            evs.extend(
                (first..first + n).map(|i| annal::EventData::new(event_type(i), payload(i))),
            );
            store
                .append(stream, annal::ExpectedVersion::Any, &evs)
                .unwrap();
        });
        drop(store);
        laps
    }
}

/// SQLite's best batched case: WAL, `synchronous=OFF`, 1000 events per transaction whatever
/// the call size (a call is not durable, nor even visible, until its transaction commits).
struct SqliteBatched;

impl SmallAppends for SqliteBatched {
    fn name(&self) -> &'static str {
        "SQLite, 1000/tx"
    }
    fn append_laps(&mut self, dir: &Path, calls: &[(String, u64, u64)], lap: u64) -> Vec<f64> {
        let db = sqlite_open(&dir.join("sqlite.db"), false);
        let mut versions: HashMap<String, u64> = HashMap::new();
        let mut in_tx = 0u64;
        db.execute_batch("BEGIN").unwrap();
        let laps = lapped(calls, lap, |stream, first, n| {
            let mut st = db
                .prepare_cached(
                    "INSERT INTO events(stream, version, type, payload) VALUES (?1, ?2, ?3, ?4)",
                )
                .unwrap();
            for i in first..first + n {
                let v = versions.entry_ref(stream);
                *v += 1;
                st.execute(rusqlite::params![
                    stream,
                    *v as i64,
                    event_type(i),
                    payload(i)
                ])
                .unwrap();
                in_tx += 1;
                if in_tx == 1000 {
                    db.execute_batch("COMMIT; BEGIN").unwrap();
                    in_tx = 0;
                }
            }
        });
        db.execute_batch("COMMIT").unwrap();
        laps
    }
}

/// fjall with a batch per call and no fsync (its journal is written on commit).
struct FjallPerCall;

impl SmallAppends for FjallPerCall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn append_laps(&mut self, dir: &Path, calls: &[(String, u64, u64)], lap: u64) -> Vec<f64> {
        let (db, ks) = fjall_open(&dir.join("fjall"));
        let mut versions: HashMap<String, u64> = HashMap::new();
        lapped(calls, lap, |stream, first, n| {
            let mut b = db.batch().durability(None);
            let v = versions.entry_ref(stream);
            for i in first..first + n {
                *v += 1;
                b.insert(&ks, fjall_key(stream, *v), value(i));
            }
            b.commit().unwrap();
        })
    }
}

fn small_contenders() -> Vec<Box<dyn SmallAppends>> {
    vec![
        Box::new(RawWritePerCall),
        Box::new(RawBuffered),
        Box::new(Annal::default()),
        Box::new(SqliteBatched),
        Box::new(FjallPerCall),
    ]
}

/// One contender's laps at 1 and at 10 events per call.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct SmallFigures {
    per_call_1: Vec<f64>,
    per_call_10: Vec<f64>,
}

impl SmallFigures {
    fn overall(laps: &[f64]) -> f64 {
        // Each lap holds the same number of events: the overall rate is the harmonic mean.
        laps.len() as f64 / laps.iter().map(|r| 1.0 / r).sum::<f64>()
    }
}

fn measure_small(sys: &mut dyn SmallAppends, events: u64, lap: u64, sizes: &[u64]) -> SmallFigures {
    let mut f = SmallFigures::default();
    for &per_call in sizes {
        eprintln!("{}: small appends, {per_call} per call", sys.name());
        let tmp = tempfile::tempdir().unwrap();
        let laps = sys.append_laps(tmp.path(), &small_calls(events, per_call), lap);
        if per_call == 1 {
            f.per_call_1 = laps;
        } else {
            f.per_call_10 = laps;
        }
    }
    f
}

/// The small-append table: every contender in a process of its own, `runs` interleaved
/// rounds, each lap's median.
fn small_table(exe: &Path, events: u64, runs: usize, only: &Option<String>) -> serde_json::Value {
    const LAP: u64 = 200_000;
    let names: Vec<&'static str> = small_contenders()
        .iter()
        .map(|s| s.name())
        .filter(|n| selected(n, only))
        .collect();
    let mut all: Vec<Vec<SmallFigures>> = vec![Vec::new(); names.len()];
    for round in 1..=runs.max(1) {
        for (i, &name) in names.iter().enumerate() {
            eprintln!("small appends, round {round} of {runs}: {name}");
            let out = std::process::Command::new(exe)
                .args(["--small-child", name, "--events", &events.to_string()])
                .args(["--lap", &LAP.to_string()])
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap();
            assert!(out.status.success(), "{name} failed: {}", out.status);
            all[i].push(serde_json::from_slice(&out.stdout).unwrap());
        }
    }
    let median_laps = |runs: &[SmallFigures], pick: fn(&SmallFigures) -> &Vec<f64>| {
        let laps = runs.first().map_or(0, |r| pick(r).len());
        (0..laps)
            .map(|k| {
                let mut v: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| pick(r).get(k).copied())
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
            .collect::<Vec<f64>>()
    };
    println!(
        "\nsmall appends: {events} events, 1 or 10 per call, each call to a random one of {STREAMS} \
         streams, no fsync; M events/s per lap of {LAP} (median of {runs} rounds)\n"
    );
    let mut json = Vec::new();
    let mut overall: Vec<(&str, f64, f64)> = Vec::new();
    for (&name, runs) in names.iter().zip(&all) {
        for (per_call, pick) in [
            (
                1,
                (|f: &SmallFigures| &f.per_call_1) as fn(&SmallFigures) -> &Vec<f64>,
            ),
            (10, |f: &SmallFigures| &f.per_call_10),
        ] {
            let laps = median_laps(runs, pick);
            let all_rate = SmallFigures::overall(&laps);
            print!(
                "{:<18}{:>3}/call {:>7.2}  laps:",
                name,
                per_call,
                all_rate / 1e6
            );
            for l in &laps {
                print!(" {:>5.2}", l / 1e6);
            }
            let decay = laps.last().unwrap_or(&f64::NAN) / laps.first().unwrap_or(&f64::NAN);
            println!("   last/first {decay:.2}");
            json.push(serde_json::json!({
                "system": name, "per_call": per_call, "events_per_s": all_rate,
                "laps_events_per_s": laps, "last_over_first_lap": decay,
            }));
        }
        let f = |k: fn(&SmallFigures) -> &Vec<f64>| SmallFigures::overall(&median_laps(runs, k));
        overall.push((name, f(|f| &f.per_call_1), f(|f| &f.per_call_10)));
    }
    let get = |n: &str| overall.iter().find(|o| o.0 == n).map(|o| (o.1, o.2));
    if let Some((a1, a10)) = get("annal") {
        println!();
        println!("annal, 10/call over 1/call: {:.2}x", a10 / a1);
        if let Some((w1, w10)) = get("raw, write/call") {
            println!(
                "annal over the write-per-call raw log: {:.2}x at 1/call, {:.2}x at 10/call",
                a1 / w1,
                a10 / w10
            );
        }
        if let Some((s1, s10)) = get("SQLite, 1000/tx") {
            println!(
                "annal over SQLite (1000 per transaction): {:.2}x at 1/call, {:.2}x at 10/call",
                a1 / s1,
                a10 / s10
            );
        }
    }
    serde_json::Value::Array(json)
}

/// The consistency model's costs, annal against itself (each ratio against its target).
fn dcb_table() -> serde_json::Value {
    println!("\nconsistency model (annal alone, interleaved in one run, full size):\n");
    let f = query_costs::run(5, |_| true);
    println!(
        "\n  conditional / plain append rate {:.2}x (target >= 0.8); tag / stream read time {:.2}x \
         (target <= 1.2); tagged / untagged replay rate {:.2}x (target >= 0.9); {:.1} bytes per \
         (event, tag) (target <= 8)",
        f.conditional_over_plain,
        f.tag_read_over_stream_read,
        f.tagged_replay_over_untagged,
        f.bytes_per_tag
    );
    serde_json::json!({
        "conditional_over_plain_append": f.conditional_over_plain,
        "tag_read_over_stream_read_time": f.tag_read_over_stream_read,
        "tagged_over_untagged_replay": f.tagged_replay_over_untagged,
        "tag_index_bytes_per_pair": f.bytes_per_tag,
    })
}

fn selected(name: &str, only: &Option<String>) -> bool {
    only.as_ref().is_none_or(|o| {
        o.split(',')
            .any(|p| name.to_lowercase().starts_with(&p.to_lowercase()))
    })
}

// ---------------------------------------------------------------- the run

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Figures {
    append_1000: f64,
    append_10: f64,
    replay: f64,
    read_median_us: f64,
    read_p99_us: f64,
    fsync_1: f64,
    append_1: f64,
    append_100: f64,
    fsync_2_threads: f64,
    fsync_4_threads: f64,
    fsync_8_threads: f64,
    fsync_16_threads: f64,
    bytes_per_event: f64,
    /// Peak resident set of the process that ran this system alone (`VmHWM`), MiB: heap and
    /// the file pages it mapped.
    peak_rss_mib: f64,
    /// Most anonymous memory (heap) seen after each workload on the 1M-event store, MiB.
    peak_anon_mib: f64,
}

/// Each figure's median over several runs (this machine's timings are noisy).
fn median(runs: &[Figures]) -> Figures {
    let maps: Vec<serde_json::Map<String, serde_json::Value>> = runs
        .iter()
        .filter_map(|f| match serde_json::to_value(f) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ => None,
        })
        .collect();
    let mut out = serde_json::Map::new();
    for key in maps
        .first()
        .map(|m| m.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let mut v: Vec<f64> = maps
            .iter()
            .filter_map(|m| m.get(&key).and_then(serde_json::Value::as_f64))
            .collect();
        v.sort_by(f64::total_cmp);
        let mid = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
        out.insert(key, mid.into());
    }
    serde_json::from_value(serde_json::Value::Object(out)).unwrap()
}

/// A field of `/proc/self/status` in MiB (Linux; NaN elsewhere).
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn measure(sys: &mut dyn System, events: u64, fsync_events: u64) -> Figures {
    let mut f = Figures::default();
    // Batches of 1 and 100 on a tenth of the events: a million single-event transactions
    // would take the peers minutes here.
    let small = (events / 10).max(1000);
    for (batch, n) in [(1000, events), (100, small), (1, small)] {
        eprintln!("{}: append, batches of {batch}", sys.name());
        let tmp = tempfile::tempdir().unwrap();
        let b = batches(n, batch);
        let t = Instant::now();
        sys.append(tmp.path(), &b, false);
        let r = rate(n, t.elapsed());
        match batch {
            1000 => f.append_1000 = r,
            100 => f.append_100 = r,
            _ => f.append_1 = r,
        }
        sys.close();
    }

    eprintln!("{}: append, batches of 10", sys.name());
    let tmp = tempfile::tempdir().unwrap();
    let b = batches(events, 10);
    let t = Instant::now();
    sys.append(tmp.path(), &b, false);
    f.append_10 = rate(events, t.elapsed());
    f.peak_anon_mib = status_mib("RssAnon:");

    eprintln!("{}: replay", sys.name());
    sys.replay(); // warm the cache
    let t = Instant::now();
    let n = sys.replay();
    f.replay = rate(n, t.elapsed());
    assert_eq!(n, events, "{} replayed {n} of {events}", sys.name());
    f.peak_anon_mib = f.peak_anon_mib.max(status_mib("RssAnon:"));

    eprintln!("{}: read 1000 streams", sys.name());
    let mut lat = Vec::with_capacity(1000);
    let mut x = 12345u64;
    for _ in 0..1000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let s = format!("order-{}", (x >> 33) % STREAMS.min(events / 10).max(1));
        let t = Instant::now();
        let n = sys.read_stream(&s);
        lat.push(t.elapsed());
        assert!(n > 0, "{}: stream {s} empty", sys.name());
    }
    f.peak_anon_mib = f.peak_anon_mib.max(status_mib("RssAnon:"));
    lat.sort();
    f.read_median_us = lat[lat.len() / 2].as_secs_f64() * 1e6;
    f.read_p99_us = lat[lat.len() * 99 / 100].as_secs_f64() * 1e6;
    sys.close();
    // After close, so whatever a system keeps in memory until then is counted once written.
    f.bytes_per_event = dir_bytes(tmp.path()) as f64 / events as f64;
    drop(tmp);

    eprintln!("{}: one event per call, fsync each", sys.name());
    let tmp = tempfile::tempdir().unwrap();
    let b = batches(fsync_events, 1);
    let t = Instant::now();
    sys.append(tmp.path(), &b, true);
    f.fsync_1 = rate(fsync_events, t.elapsed());
    sys.close();
    drop(tmp);

    for threads in [2u64, 4, 8, 16] {
        eprintln!(
            "{}: {threads} threads, one event per call, fsync each",
            sys.name()
        );
        let tmp = tempfile::tempdir().unwrap();
        let per = fsync_events / threads;
        let r = rate(
            per * threads,
            sys.append_concurrent(tmp.path(), threads, per),
        );
        match threads {
            2 => f.fsync_2_threads = r,
            4 => f.fsync_4_threads = r,
            8 => f.fsync_8_threads = r,
            _ => f.fsync_16_threads = r,
        }
    }
    f.peak_rss_mib = status_mib("VmHWM:");
    f
}

/// Bytes the files under `dir` take on disk (allocated blocks, so sparse preallocation
/// doesn't count).
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.blocks() * 512
        };
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let events: u64 = arg("--events").map_or(1_000_000, |v| v.replace('_', "").parse().unwrap());
    let fsync_events: u64 = arg("--fsync-events").map_or(2_000, |v| v.parse().unwrap());
    let only = arg("--only");
    let systems = || -> [Box<dyn System>; 5] {
        [
            Box::new(Raw::default()),
            Box::new(Annal::default()),
            Box::new(Sqlite::default()),
            Box::new(Redb::default()),
            Box::new(Fjall::default()),
        ]
    };
    // A child runs one system and prints its figures as JSON: each system gets a process of
    // its own, so peak memory is its own and no system runs on another's leftover heap.
    let runs: usize = arg("--runs").map_or(3, |v| v.parse().unwrap());
    if let Some(name) = arg("--small-child") {
        let mut sys = small_contenders()
            .into_iter()
            .find(|s| s.name() == name)
            .expect("unknown system");
        let lap: u64 = arg("--lap").map_or(200_000, |v| v.parse().unwrap());
        // `--per-call N`: that size only (for a profiler).
        let sizes: Vec<u64> = arg("--per-call").map_or(vec![1, 10], |v| vec![v.parse().unwrap()]);
        let f = measure_small(sys.as_mut(), events, lap, &sizes);
        println!("{}", serde_json::to_string(&f).unwrap());
        return;
    }
    if let Some(name) = arg("--child") {
        let mut sys = systems()
            .into_iter()
            .find(|s| s.name() == name)
            .expect("unknown system");
        let f = measure(sys.as_mut(), events, fsync_events);
        println!("{}", serde_json::to_string(&f).unwrap());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let workload = arg("--workload").unwrap_or_else(|| "all".into());
    let out = arg("--json").unwrap_or_else(|| "results.json".into());
    let dcb = match workload.as_str() {
        "all" | "dcb" => dcb_table(),
        _ => serde_json::Value::Null,
    };
    if workload == "dcb" {
        let doc = serde_json::json!({"consistency_model": dcb});
        std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        eprintln!("figures written to {out}");
        return;
    }
    let small = match workload.as_str() {
        "all" | "small" => small_table(&exe, events, runs, &only),
        "standard" => serde_json::Value::Null,
        other => panic!("--workload {other}: expected standard, small, dcb or all"),
    };
    if workload == "small" {
        let doc = serde_json::json!({"events": events, "small_appends": small});
        std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        eprintln!("figures written to {out}");
        return;
    }
    let names: Vec<&'static str> = systems()
        .iter()
        .map(|s| s.name())
        .filter(|n| selected(n, &only))
        .collect();
    // Rounds of every system in turn, so that a slow spell of this noisy machine hits all of
    // them alike; each figure is the median over the rounds.
    let mut all: Vec<Vec<Figures>> = vec![Vec::new(); names.len()];
    for round in 1..=runs.max(1) {
        for (i, &name) in names.iter().enumerate() {
            eprintln!("round {round} of {runs}: {name}");
            let out = std::process::Command::new(&exe)
                .args(["--child", name, "--events", &events.to_string()])
                .args(["--fsync-events", &fsync_events.to_string()])
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap();
            assert!(out.status.success(), "{name} failed: {}", out.status);
            all[i].push(serde_json::from_slice(&out.stdout).unwrap());
        }
    }
    let results: Vec<(&'static str, Figures)> = names
        .iter()
        .zip(&all)
        .map(|(&name, runs)| (name, median(runs)))
        .collect();

    let rows: [(&str, fn(&Figures) -> f64, bool); 15] = [
        ("append, batch 1, no fsync (events/s)", |f| f.append_1, true),
        (
            "append, batch 10, no fsync (events/s)",
            |f| f.append_10,
            true,
        ),
        (
            "append, batch 100, no fsync (events/s)",
            |f| f.append_100,
            true,
        ),
        (
            "append, batch 1000, no fsync (events/s)",
            |f| f.append_1000,
            true,
        ),
        ("replay, verified + decoded (events/s)", |f| f.replay, true),
        (
            "read one stream ~100 events, median (µs)",
            |f| f.read_median_us,
            false,
        ),
        (
            "read one stream ~100 events, p99 (µs)",
            |f| f.read_p99_us,
            false,
        ),
        (
            "1 event per call, fdatasync each (events/s)",
            |f| f.fsync_1,
            true,
        ),
        ("same, 2 threads (events/s)", |f| f.fsync_2_threads, true),
        ("same, 4 threads (events/s)", |f| f.fsync_4_threads, true),
        ("same, 8 threads (events/s)", |f| f.fsync_8_threads, true),
        ("same, 16 threads (events/s)", |f| f.fsync_16_threads, true),
        (
            "bytes on disk per event (batch-10 store)",
            |f| f.bytes_per_event,
            false,
        ),
        ("peak RSS, whole run (MiB)", |f| f.peak_rss_mib, false),
        (
            "peak heap, 1M-event store open (MiB)",
            |f| f.peak_anon_mib,
            false,
        ),
    ];
    println!(
        "\n{events} events ({PAYLOAD}-byte payloads, 16-byte types, {STREAMS} streams); fsync workload {fsync_events} events\n"
    );
    print!("{:<46}", "workload");
    for (name, _) in &results {
        print!("{name:>12}");
    }
    println!("{:>12}{:>14}", "annal/raw", "annal/best");
    let get =
        |n: &str, f: fn(&Figures) -> f64| results.iter().find(|(s, _)| *s == n).map(|(_, r)| f(r));
    for (label, f, higher) in rows {
        print!("{label:<46}");
        for (_, r) in &results {
            let v = f(r);
            if higher {
                print!("{:>12.0}", v)
            } else {
                print!("{:>12.1}", v)
            }
        }
        let annal = get("annal", f);
        let raw = get("raw log", f);
        let peers: Vec<f64> = results
            .iter()
            .filter(|(s, _)| !["annal", "raw log"].contains(s))
            .map(|(_, r)| f(r))
            .collect();
        let best = if higher {
            peers.iter().cloned().fold(f64::NAN, f64::max)
        } else {
            peers.iter().cloned().fold(f64::NAN, f64::min)
        };
        let ratio = |a: Option<f64>, b: f64| match a {
            Some(a) if b.is_finite() && b > 0.0 => {
                if higher {
                    format!("{:.2}x", a / b)
                } else {
                    format!("{:.2}x", b / a)
                }
            }
            _ => "-".into(),
        };
        println!(
            "{:>12}{:>14}",
            ratio(annal, raw.unwrap_or(f64::NAN)),
            ratio(annal, best)
        );
    }
    println!(
        "\n(ratios: above 1 means annal is better; for latencies, the other's time over annal's)"
    );
    let json: Vec<_> = results
        .iter()
        .map(|(s, f)| {
            serde_json::json!({
                "system": s, "append_batch_1000_per_s": f.append_1000, "append_batch_10_per_s": f.append_10,
                "replay_per_s": f.replay, "read_stream_median_us": f.read_median_us,
                "read_stream_p99_us": f.read_p99_us, "fsync_each_per_s": f.fsync_1,
                "fsync_each_8_threads_per_s": f.fsync_8_threads, "bytes_on_disk_per_event": f.bytes_per_event,
                "append_batch_1_per_s": f.append_1, "append_batch_100_per_s": f.append_100,
                "fsync_each_2_threads_per_s": f.fsync_2_threads, "fsync_each_4_threads_per_s": f.fsync_4_threads,
                "fsync_each_16_threads_per_s": f.fsync_16_threads,
                "peak_rss_mib": f.peak_rss_mib, "peak_heap_mib": f.peak_anon_mib,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "events": events, "results": json, "small_appends": small, "consistency_model": dcb,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    eprintln!("figures written to {out}");
}
