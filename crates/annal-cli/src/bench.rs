//! `annal bench`: a quick measurement of annal on this machine, in a temporary directory:
//! appends, a replay of the whole log, reads of random streams, and aggregate loads.

use std::path::Path;
use std::time::{Duration, Instant};

use annal::{
    Aggregate, Bincode, Codec, EventData, ExpectedVersion, FsyncPolicy, Options, ReadOptions, Store,
};
use serde::{Deserialize, Serialize};

use crate::common::{
    CliResult, Counting, Fail, fsync_name, human_duration, plural, progress_bar, thousands,
};
use crate::output::{Out, Table};

/// The arguments of `annal bench`.
#[derive(Debug, Clone, Copy)]
pub struct BenchArgs {
    /// Events to append.
    pub events: u64,
    /// Payload size in bytes.
    pub payload: usize,
    /// Streams the events are spread over.
    pub streams: u64,
    /// Events per append.
    pub batch: u64,
    /// Durability policy.
    pub fsync: FsyncPolicy,
}

/// The benchmark's events: a line added to an order, padded to the payload size.
#[derive(Serialize, Deserialize)]
enum OrderEvent {
    LineAdded { line: u64, qty: u32, note: Vec<u8> },
}

/// The aggregate loaded at the end: an order's line count and quantity.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Order {
    lines: u64,
    qty: u64,
}

impl Aggregate for Order {
    type Event = OrderEvent;
    type Command = ();
    type Error = String;

    fn aggregate_type() -> &'static str {
        "BenchOrder"
    }
    fn event_type(_: &OrderEvent) -> &'static str {
        "LineAdded"
    }
    fn apply(&mut self, OrderEvent::LineAdded { qty, .. }: &OrderEvent) {
        self.lines += 1;
        self.qty += u64::from(*qty);
    }
    fn handle(&self, _: ()) -> Result<Vec<OrderEvent>, String> {
        Ok(Vec::new())
    }
}

/// An encoded event as close to `size` bytes as the encoding allows.
fn sized_payload(line: u64, size: usize) -> CliResult<Vec<u8>> {
    let encode = |note_len: usize| {
        let e = OrderEvent::LineAdded {
            line,
            qty: (line % 5) as u32 + 1,
            note: vec![b'x'; note_len],
        };
        Bincode::encode(&e).map_err(|e| Fail::msg(format!("encoding a bench event: {e}")))
    };
    let mut note_len = size.saturating_sub(8);
    let mut bytes = encode(note_len)?;
    // The note's length prefix grows with it: a few corrections settle it.
    for _ in 0..4 {
        if bytes.len() == size {
            break;
        }
        note_len = (note_len + size).saturating_sub(bytes.len());
        bytes = encode(note_len)?;
    }
    Ok(bytes)
}

/// splitmix64: enough randomness to pick streams, with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Median and 99th percentile.
fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    let at = |q: usize| {
        v.get((v.len() * q / 100).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    (at(50), at(99))
}

/// `annal bench --json`.
#[derive(Serialize)]
struct BenchJson {
    events: u64,
    payload_bytes: usize,
    streams: u64,
    batch: u64,
    fsync: String,
    append_seconds: f64,
    append_events_per_second: f64,
    append_mb_per_second: f64,
    replay_seconds: f64,
    replay_events_per_second: f64,
    stream_reads: usize,
    read_stream_median_us: f64,
    read_stream_p99_us: f64,
    aggregate_load_median_us: f64,
    aggregate_load_p99_us: f64,
    log_bytes: u64,
    bytes_per_event: f64,
    index_bytes_per_event: f64,
    segments: u64,
}

/// Stream reads and aggregate loads measured.
const SAMPLES: usize = 1000;

/// `annal bench`. With `--dir`, the temporary directory is made inside it.
pub fn bench(dir: Option<&Path>, json: bool, args: BenchArgs) -> CliResult {
    // The batch is built in memory once; keep it well inside what a frame and RAM hold.
    if (args.payload as u64).saturating_mul(args.batch.min(args.events)) > 256 << 20 {
        return Err(Fail::msg(
            "--payload times --batch is over 256 MiB: use a smaller batch or payload",
        ));
    }
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("annal-bench-");
        b
    };
    let tmp = match dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| Fail::io(format!("cannot create {}", d.display()), e))?;
            builder.tempdir_in(d)
        }
        None => builder.tempdir(),
    }
    .map_err(|e| Fail::io("cannot create a temporary directory", e))?;
    let options = Options {
        fsync: args.fsync,
        // Every load below should replay its stream, not hit the cache.
        aggregate_cache: 0,
        ..Options::default()
    };
    let store = Store::open(tmp.path(), options)?;
    let batch = (0..args.batch.min(args.events))
        .map(|i| Ok(EventData::new("LineAdded", sized_payload(i, args.payload)?)))
        .collect::<CliResult<Vec<_>>>()?;
    let payload_bytes = batch.first().map_or(0, |e| e.payload.len());
    let mut out = Out::new();
    if !json {
        // Said first, so a long run shows what it is doing even without a terminal.
        out.line(&format!(
            "annal bench: {} events of {payload_bytes} bytes over {}, {} per append, \
             fsync {}, in {}",
            thousands(args.events),
            // Round robin, one stream per append: fewer appends than streams use fewer.
            plural_thousands(
                args.streams.min(args.events.div_ceil(args.batch.max(1))),
                "stream"
            ),
            args.batch,
            fsync_name(args.fsync),
            tmp.path().display()
        ))?;
        out.flush()?;
    }

    // 1. Appends, one stream per call, round robin over the streams.
    let pb = progress_bar(args.events, "appending", Counting::Events);
    let started = Instant::now();
    let (mut appended, mut calls) = (0u64, 0u64);
    while appended < args.events {
        let n = usize::try_from((args.events - appended).min(args.batch)).unwrap_or(usize::MAX);
        let stream = format!("order-{}", calls % args.streams);
        store.append(
            &stream,
            ExpectedVersion::Any,
            batch.get(..n).unwrap_or_default(),
        )?;
        appended += n as u64;
        calls += 1;
        pb.set_position(appended);
    }
    let append_time = started.elapsed();
    pb.finish_and_clear();
    let stats = store.stats()?;

    // 2. Replay of the whole log.
    let pb = progress_bar(args.events, "replaying", Counting::Events);
    let started = Instant::now();
    let mut replayed = 0u64;
    for e in store.read_all(ReadOptions::forward())? {
        e?;
        replayed += 1;
        if replayed.is_multiple_of(8192) {
            pb.set_position(replayed);
        }
    }
    let replay_time = started.elapsed();
    pb.finish_and_clear();
    if replayed != args.events {
        return Err(Fail::msg(format!(
            "replay read {replayed} events, {} were appended",
            args.events
        )));
    }

    // 3. Reads of random streams, then 4. aggregate loads of random streams.
    let used_streams = calls.min(args.streams).max(1);
    let mut rng = Rng(0x5EED);
    let mut reads = Vec::with_capacity(SAMPLES);
    let mut events_read = 0u64;
    for _ in 0..SAMPLES {
        let stream = format!("order-{}", rng.next() % used_streams);
        let started = Instant::now();
        for e in store.read_stream(&stream, ReadOptions::forward())? {
            e?;
            events_read += 1;
        }
        reads.push(started.elapsed());
    }
    let orders = store.aggregate::<Order>();
    let mut loads = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let stream = format!("order-{}", rng.next() % used_streams);
        let started = Instant::now();
        orders.load(&stream)?;
        loads.push(started.elapsed());
    }
    let (read_median, read_p99) = percentiles(reads);
    let (load_median, load_p99) = percentiles(loads);
    store.close()?;

    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    let events = args.events as f64;
    let per_event = |bytes: u64| bytes as f64 / events;
    if json {
        out.json(&BenchJson {
            events: args.events,
            payload_bytes,
            streams: args.streams,
            batch: args.batch,
            fsync: fsync_name(args.fsync),
            append_seconds: append_time.as_secs_f64(),
            append_events_per_second: events / secs(append_time),
            append_mb_per_second: stats.bytes as f64 / 1e6 / secs(append_time),
            replay_seconds: replay_time.as_secs_f64(),
            replay_events_per_second: events / secs(replay_time),
            stream_reads: SAMPLES,
            read_stream_median_us: read_median.as_secs_f64() * 1e6,
            read_stream_p99_us: read_p99.as_secs_f64() * 1e6,
            aggregate_load_median_us: load_median.as_secs_f64() * 1e6,
            aggregate_load_p99_us: load_p99.as_secs_f64() * 1e6,
            log_bytes: stats.bytes,
            bytes_per_event: per_event(stats.bytes),
            index_bytes_per_event: per_event(stats.index_memory_bytes),
            segments: stats.segments,
        })?;
    } else {
        let mut t = Table::new(vec!["PHASE", "TIME", "RESULT"]);
        let rate =
            |d: Duration| format!("{} events/s", thousands(rate_per_second(events, secs(d))));
        let rows = [
            [
                "append".to_string(),
                human_duration(append_time),
                format!(
                    "{}, {:.1} MB/s of log",
                    rate(append_time),
                    stats.bytes as f64 / 1e6 / secs(append_time)
                ),
            ],
            [
                "replay (read_all)".into(),
                human_duration(replay_time),
                rate(replay_time),
            ],
            [
                format!("read {SAMPLES} streams"),
                format!("median {}", human_duration(read_median)),
                format!(
                    "p99 {}, {:.0} events per stream",
                    human_duration(read_p99),
                    events_read as f64 / SAMPLES as f64
                ),
            ],
            [
                format!("load {SAMPLES} aggregates"),
                format!("median {}", human_duration(load_median)),
                format!(
                    "p99 {} (full replay, no snapshot)",
                    human_duration(load_p99)
                ),
            ],
            [
                "on disk".into(),
                format!("{:.1} MB", stats.bytes as f64 / 1e6),
                format!(
                    "{:.1} bytes per event, {}",
                    per_event(stats.bytes),
                    plural(stats.segments, "segment")
                ),
            ],
            [
                "index memory".into(),
                format!("{:.1} MB", stats.index_memory_bytes as f64 / 1e6),
                format!("{:.1} bytes per event", per_event(stats.index_memory_bytes)),
            ],
        ];
        for row in rows {
            t.row(&mut out, row.to_vec())?;
        }
        t.print(&mut out)?;
    }
    out.flush()?;
    tmp.close()
        .map_err(|e| Fail::io("cannot remove the temporary directory", e))
}

/// Events per second, rounded down (0 for an empty or instant run).
fn rate_per_second(events: f64, seconds: f64) -> u64 {
    let rate = events / seconds;
    if rate.is_finite() && rate >= 0.0 {
        // A float to integer `as` saturates: the intent here.
        #[expect(clippy::cast_possible_truncation, reason = "saturating on purpose")]
        let r = rate as u64;
        r
    } else {
        0
    }
}

/// "1 stream", "10,000 streams".
fn plural_thousands(n: u64, what: &str) -> String {
    format!("{} {what}{}", thousands(n), if n == 1 { "" } else { "s" })
}
