//! The relay to NATS JetStream, measured against a real local `nats-server` (started here on
//! a free loopback port with a temporary directory, stopped at the end):
//!
//! 1. throughput: a store of 200,000 events of 200 bytes (10,000 streams) relayed from the
//!    start, in events per second, with 4096 messages in flight;
//! 2. lag: 20,000 events appended live at about 5,000 per second (one per append, under
//!    `Always`) while the relay runs: the time from each event's timestamp (its append
//!    writing it) to JetStream's acknowledgement, median and 99th percentile.
//!
//! `cargo bench -p annal-cli --bench relay`; `ANNAL_RELAY_EVENTS=N` changes the first
//! figure's event count.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a benchmark's failure is a panic"
)]

use std::future::IntoFuture;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annal::{EventData, ExpectedVersion, FsyncPolicy, Options, Relay, RelayOptions, Store};

fn main() {
    let events: u64 = std::env::var("ANNAL_RELAY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nats-server is not installed (Debian's nats-server package)");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let js_dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(js_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("nats://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // 1. Throughput from history.
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(dir.path(), Options::default().fsync(FsyncPolicy::Never)).unwrap());
    let payload = vec![b'x'; 200];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..events {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        store
            .append(
                &format!("s-{}", state % 10_000),
                ExpectedVersion::Any,
                &[EventData::new("E", payload.clone())],
            )
            .unwrap();
    }
    store.sync().unwrap();
    let last = store.last_position();
    let elapsed = rt.block_on(async {
        let in_flight = std::env::var("ANNAL_RELAY_IN_FLIGHT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4096);
        let mut relay = Relay::connect(
            Arc::clone(&store),
            RelayOptions::new(url.clone(), "BENCH", "bench").max_in_flight(in_flight),
        )
        .await
        .unwrap();
        let progress = relay.progress();
        let started = Instant::now();
        let cpu = server_cpu(server.id());
        relay
            .run_until(async move {
                while progress.acknowledged() < last {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .unwrap();
        (started.elapsed(), server_cpu(server.id()) - cpu)
    });
    let (elapsed, server_secs) = elapsed;
    let relay_rate = last as f64 / elapsed.as_secs_f64();
    println!(
        "relay throughput: {last} events in {:.2} s = {relay_rate:.0} events/s (nats-server used {server_secs:.2} s of CPU)",
        elapsed.as_secs_f64(),
    );
    // The NATS client alone, publishing as many messages of the same size with the same
    // headers and window: what the server and client allow on this machine.
    let raw = rt.block_on(raw_publish(&url, last));
    println!(
        "async-nats alone, same messages: {raw:.0} messages/s; relay / client alone = {:.2}",
        relay_rate / raw
    );

    // 1b. A replica built from that stream.
    let rep_dir = tempfile::tempdir().unwrap();
    let (applied, took) = rt.block_on(async {
        let started = Instant::now();
        let mut replica = annal::Replica::open(
            rep_dir.path(),
            Options::default(),
            annal::ReplicaOptions::new(url.clone(), "BENCH"),
        )
        .await
        .unwrap();
        let r = replica.run_until(std::future::pending()).await.unwrap();
        (r.applied, started.elapsed())
    });
    println!(
        "replica from JetStream (fsync always, settled in batches): {applied} events in {:.2} s = {:.0} events/s",
        took.as_secs_f64(),
        applied as f64 / took.as_secs_f64()
    );

    // 2. Lag of live appends.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let live = 20_000u64;
    let (p50, p99) = rt.block_on(async {
        let mut relay = Relay::connect(
            Arc::clone(&store),
            RelayOptions::new(url.clone(), "LIVE", "live"),
        )
        .await
        .unwrap();
        let progress = relay.progress();
        let writer = {
            let store = Arc::clone(&store);
            let payload = payload.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                for i in 0..live {
                    let due = started + Duration::from_micros(i * 200);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    store
                        .append(
                            &format!("s-{}", i % 100),
                            ExpectedVersion::Any,
                            &[EventData::new("E", payload.clone())],
                        )
                        .unwrap();
                }
            })
        };
        let watched = Arc::clone(&progress);
        relay
            .run_until(async move {
                while watched.acknowledged() < live {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .unwrap();
        writer.join().unwrap();
        (
            progress.latency_percentile(50.0).unwrap(),
            progress.latency_percentile(99.0).unwrap(),
        )
    });
    println!(
        "relay lag (event written to JetStream ack), {live} live events at ~5k/s: p50 {p50:?}, p99 {p99:?}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// Publishes `n` messages like the relay's (200-byte payload, the same headers, 4096 in
/// flight) straight from the client; messages per second.
async fn raw_publish(url: &str, n: u64) -> f64 {
    use async_nats::jetstream;
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(5000)
        .backpressure_on_inflight(true)
        .build(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: "RAW".into(),
        subjects: vec!["raw.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; 200]);
    let mut acks = std::collections::VecDeque::new();
    let started = Instant::now();
    for i in 0..n {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("raw:{}", i + 1));
        h.insert("Annal-Position", (i + 1).to_string());
        h.insert("Annal-Stream", format!("s-{}", i % 10_000));
        h.insert("Annal-Version", (i / 10_000 + 1).to_string());
        h.insert("Annal-Type", "E");
        h.insert("Annal-Timestamp", "1764643200000000");
        h.insert("Nats-Expected-Last-Sequence", i.to_string());
        let ack = js
            .publish_with_headers(format!("raw.s-{}", i % 10_000), h, payload.clone())
            .await
            .unwrap();
        acks.push_back(ack.into_future());
        if acks.len() >= 4096 {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    while let Some(a) = acks.pop_front() {
        a.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// CPU seconds process `pid` used so far (user and system, from /proc).
fn server_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}
