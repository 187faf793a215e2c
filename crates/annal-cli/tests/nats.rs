//! The relay and replicas against a real `nats-server` (Debian's package, which `.ci/run`
//! installs): servers started here on free loopback ports with temporary directories,
//! killed with SIGKILL where a test says so, and stopped at the end. No mock of NATS.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annal::{
    AppendCondition, DeleteMode, EventData, ExpectedVersion, FsyncPolicy, Options, Query,
    QueryItem, ReadOptions, RecordedEvent, Relay, RelayOptions, Replica, ReplicaOptions, Store,
    StreamMetadata, Transaction,
};
use async_nats::jetstream;
use futures::StreamExt;

fn nats_server_binary() -> PathBuf {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nats-server is not installed: .ci/run installs Debian's nats-server package");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server with JetStream, on loopback, with its own storage directory.
struct Server {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(args: Vec<String>, port: u16, dir: tempfile::TempDir) -> Server {
        let mut s = Server {
            child: None,
            port,
            args,
            _dir: dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(nats_server_binary())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn single() -> Server {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let args = vec![
            "-js".into(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-sd".into(),
            dir.path().display().to_string(),
        ];
        Server::start(args, port, dir)
    }

    /// A cluster of three JetStream servers on loopback.
    fn cluster() -> Vec<Server> {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats://127.0.0.1:{c}"))
            .collect();
        let mut servers: Vec<Server> = ports
            .iter()
            .enumerate()
            .map(|(i, &(port, cport))| {
                let dir = tempfile::tempdir().unwrap();
                let args = vec![
                    "-js".into(),
                    "-a".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                    "-sd".into(),
                    dir.path().display().to_string(),
                    "--server_name".into(),
                    format!("n{i}"),
                    "--cluster_name".into(),
                    "annal-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{cport}"),
                    "--routes".into(),
                    routes.join(","),
                ];
                let child = Command::new(nats_server_binary())
                    .args(&args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start nats-server");
                Server {
                    child: Some(child),
                    port,
                    args,
                    _dir: dir,
                }
            })
            .collect();
        for s in &mut servers {
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(("127.0.0.1", s.port)).is_err() {
                assert!(Instant::now() < deadline, "nats-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        servers
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every message of `js_stream`: (sequence, subject, Annal-Position).
async fn messages(url: &str, js_stream: &str) -> Vec<(u64, String, u64)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    // A cluster that lost a node may still be electing its leaders: retry for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (last, c) = loop {
        let attempt = async {
            let mut s = js.get_stream(js_stream).await.map_err(|e| e.to_string())?;
            let last = s
                .info()
                .await
                .map_err(|e| e.to_string())?
                .state
                .last_sequence;
            let c = s
                .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((last, c))
        };
        match attempt.await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot read {js_stream}: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    if last == 0 {
        return Vec::new();
    }
    let mut msgs = c.messages().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = msgs.next().await {
        let m = m.unwrap();
        let seq = m.info().unwrap().stream_sequence;
        let pos = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Annal-Position"))
            .map(|v| v.as_str().parse::<u64>().unwrap())
            .unwrap();
        out.push((seq, m.subject.to_string(), pos));
        if seq >= last {
            break;
        }
    }
    out
}

fn read_all(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all(ReadOptions::forward())
        .unwrap()
        .collect::<annal::Result<_>>()
        .unwrap()
}

/// Waits (up to a minute) until JetStream acknowledged `position`.
fn wait_acknowledged(progress: &annal::RelayProgress, position: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.acknowledged() < position {
        assert!(
            Instant::now() < deadline,
            "relay stuck at {} of {position}: {:?}",
            progress.acknowledged(),
            progress.last_fault()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A store with everything a replica must copy: tags, ids, metadata, timestamps,
/// transactions over streams, stream metadata, a hard delete, scavenged and hidden events.
fn varied_store(dir: &Path) -> Store {
    let store = Store::open(dir, Options::default().segment_size(1 << 20)).unwrap();
    for i in 0..300u32 {
        let stream = format!("cart-{}", i % 7);
        let mut e = EventData::new("ItemAdded", format!("{{\"i\":{i}}}"))
            .with_metadata(vec![0u8, 1, 2, (i % 250) as u8])
            .with_tags([format!("sku-{}", i % 5), "a,b.c".into()]);
        if i % 3 == 0 {
            e = e.with_id(u128::from(i) << 64 | 7);
        }
        store.append(&stream, ExpectedVersion::Any, &[e]).unwrap();
        if i % 50 == 0 {
            let tx = Transaction::new()
                .append(
                    "acct.a b",
                    ExpectedVersion::Any,
                    vec![EventData::new("Debited", "1")],
                )
                .append(
                    "acct-*>",
                    ExpectedVersion::Any,
                    vec![EventData::new("Credited", "1"), EventData::new("Noted", "")],
                )
                .condition(AppendCondition::new(Query::items([
                    QueryItem::new().types(["Never"])
                ])));
            store.commit(tx).unwrap();
        }
    }
    store
        .delete_stream("cart-3", ExpectedVersion::Any, DeleteMode::Hard)
        .unwrap();
    store
        .set_stream_metadata(
            "cart-4",
            ExpectedVersion::Any,
            StreamMetadata::new().max_count(5),
        )
        .unwrap();
    store.scavenge().unwrap();
    store
        .set_stream_metadata(
            "cart-5",
            ExpectedVersion::Any,
            StreamMetadata::new().truncate_before(10),
        )
        .unwrap();
    store
}

#[test]
fn a_replica_equals_its_source_event_for_event_and_refuses_appends() {
    let server = Server::single();
    let rt = runtime();
    let src_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(varied_store(src_dir.path()));
    let last = store.last_position();
    rt.block_on(async {
        let mut relay = Relay::connect(
            Arc::clone(&store),
            RelayOptions::new(server.url(), "EVENTS", "shop.events"),
        )
        .await
        .unwrap();
        let progress = relay.progress();
        let watch = tokio::task::spawn_blocking(move || wait_acknowledged(&progress, last));
        let report = relay
            .run_until(async move {
                watch.await.unwrap();
            })
            .await
            .unwrap();
        assert_eq!(report.acknowledged, last);
    });
    // Every position once, in order: events, metadata, and erased runs.
    let msgs = rt.block_on(messages(&server.url(), "EVENTS"));
    assert!(
        msgs.iter()
            .any(|(_, s, _)| s == "shop.events._annal.erased")
    );
    assert!(msgs.iter().any(|(_, s, _)| s == "shop.events.acct%2Ea%20b"));
    assert!(
        msgs.windows(2)
            .all(|w| w[0].2 < w[1].2 && w[0].0 + 1 == w[1].0)
    );

    let rep_dir = tempfile::tempdir().unwrap();
    // Halfway first: a replica resumes where it stopped.
    for round in 0..2 {
        rt.block_on(async {
            let mut replica = Replica::open(
                rep_dir.path(),
                Options::default(),
                ReplicaOptions::new(server.url(), "EVENTS"),
            )
            .await
            .unwrap();
            let r = replica.run_until(std::future::pending()).await.unwrap();
            assert_eq!(r.last_position, last, "round {round}");
            if round == 1 {
                assert_eq!(r.applied, 0, "nothing new the second time");
            }
            let rep = replica.store();
            assert_eq!(read_all(rep), read_all(&store));
            for s in ["cart-3", "cart-4", "cart-5"] {
                assert_eq!(
                    rep.stream_metadata(s).unwrap(),
                    store.stream_metadata(s).unwrap(),
                    "{s}"
                );
                let a: Vec<_> = rep
                    .read_stream(s, ReadOptions::forward())
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let b: Vec<_> = store
                    .read_stream(s, ReadOptions::forward())
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                assert_eq!(a, b, "{s}");
            }
            assert_eq!(
                rep.stream_version("cart-6").unwrap(),
                store.stream_version("cart-6").unwrap()
            );
            let refused = rep.append("cart-1", ExpectedVersion::Any, &[EventData::new("X", "")]);
            assert!(
                matches!(refused, Err(annal::Error::IsReplica { .. })),
                "{refused:?}"
            );
        });
    }
    // Reopened by an application: still refused.
    let rep = Store::open(rep_dir.path(), Options::default()).unwrap();
    assert!(matches!(
        rep.commit(Transaction::new().append(
            "z",
            ExpectedVersion::Any,
            vec![EventData::new("X", "")]
        )),
        Err(annal::Error::IsReplica { .. })
    ));
    assert_eq!(read_all(&rep), read_all(&store));
}

#[test]
fn a_replica_refuses_a_gap() {
    let server = Server::single();
    let rt = runtime();
    rt.block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = jetstream::new(client);
        js.create_stream(jetstream::stream::Config {
            name: "GAPPY".into(),
            subjects: vec!["g.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        for position in [1u64, 3] {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", format!("g:{position}").as_str());
            h.insert("Annal-Position", position.to_string().as_str());
            h.insert("Annal-Stream", "s");
            h.insert("Annal-Version", position.to_string().as_str());
            h.insert("Annal-Type", "T");
            h.insert("Annal-Timestamp", "5");
            js.publish_with_headers("g.s", h, "x".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let mut replica = Replica::open(
            dir.path(),
            Options::default(),
            ReplicaOptions::new(server.url(), "GAPPY"),
        )
        .await
        .unwrap();
        let err = replica.run_until(std::future::pending()).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, annal::Error::Replication { sequence: 2, .. }),
            "{text}"
        );
        assert!(
            text.contains("position 3") && text.contains("gap"),
            "{text}"
        );
        // Nothing past the last good message.
        assert_eq!(replica.store().last_position(), 1);
    });
}

/// `annal` with `args`, in the background.
fn annal(dir: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_annal"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn kill9(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// A small deterministic random number generator (xorshift), for the kill moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Waits until JetStream's stream holds a message of position `last` (reading its last
/// message), up to a minute.
async fn wait_in_stream(url: &str, js_stream: &str, last: u64) {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = js.get_stream(js_stream).await {
            let seq = s.info().await.map(|i| i.state.last_sequence).unwrap_or(0);
            if seq > 0
                && let Ok(m) = s.get_raw_message(seq).await
                && m.headers
                    .get("Annal-Position")
                    .map(|v| v.as_str().parse::<u64>().unwrap())
                    == Some(last)
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "JetStream never got position {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_relay_killed_at_random_moments_leaves_every_event_once_in_order() {
    let server = Server::single();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // The application writes; `annal relay` follows it from another process.
    let store = Store::open(dir.path(), Options::default().fsync(FsyncPolicy::Always)).unwrap();
    let url = server.url();
    let relay_args = [
        "relay",
        "--nats-url",
        &url,
        "--js-stream",
        "KILLED",
        "--subject-prefix",
        "k",
        "--max-in-flight",
        "64",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut relay = annal(dir.path(), &relay_args);
    for round in 0..12u32 {
        let events: Vec<EventData> = (0..1 + rng.below(40))
            .map(|i| EventData::new("E", format!("{round}-{i}")))
            .collect();
        for e in events {
            store
                .append(&format!("s-{}", rng.below(5)), ExpectedVersion::Any, &[e])
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        kill9(&mut relay);
        relay = annal(dir.path(), &relay_args);
    }
    let last = store.last_position();
    rt.block_on(wait_in_stream(&url, "KILLED", last));
    // The writer sees the relay's durable subscription (a follower's) and its lag.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let subs = store.stats().unwrap().follower_subscriptions;
        if subs
            .iter()
            .any(|d| d.name == "relay" && d.acked_position == last && d.lag == 0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{subs:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill9(&mut relay);
    let msgs = rt.block_on(messages(&url, "KILLED"));
    let positions: Vec<u64> = msgs.iter().map(|m| m.2).collect();
    assert_eq!(
        positions,
        (1..=last).collect::<Vec<_>>(),
        "each event once, in position order"
    );
    // And a replica built from it reads the same.
    let rep_dir = tempfile::tempdir().unwrap();
    let mut rep = annal(
        rep_dir.path(),
        &["replica", "--nats-url", &url, "--js-stream", "KILLED"],
    );
    assert!(rep.wait().unwrap().success());
    let replica = Store::open_follower(rep_dir.path(), Options::default()).unwrap();
    assert_eq!(read_all(&replica), read_all(&store));
}

#[test]
fn a_replica_killed_midway_and_restarted_equals_its_source() {
    let server = Server::single();
    let rt = runtime();
    let src = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(src.path(), Options::default().fsync(FsyncPolicy::Never)).unwrap());
    for i in 0..20_000u32 {
        let batch: Vec<EventData> = (0..1 + i % 3)
            .map(|j| EventData::new("E", format!("{i}/{j}")))
            .collect();
        store
            .append(&format!("s-{}", i % 97), ExpectedVersion::Any, &batch)
            .unwrap();
    }
    let last = store.last_position();
    rt.block_on(async {
        let mut relay = Relay::connect(
            Arc::clone(&store),
            RelayOptions::new(server.url(), "BIG", "big"),
        )
        .await
        .unwrap();
        let progress = relay.progress();
        let watch = tokio::task::spawn_blocking(move || wait_acknowledged(&progress, last));
        relay
            .run_until(async move { watch.await.unwrap() })
            .await
            .unwrap();
    });
    let url = server.url();
    let rep_dir = tempfile::tempdir().unwrap();
    let args = [
        "replica",
        "--nats-url",
        &url,
        "--js-stream",
        "BIG",
        "--follow",
    ];
    let mut killed_midway = 0;
    for wait in [300u64, 700, 1500] {
        let mut rep = annal(rep_dir.path(), &args);
        std::thread::sleep(Duration::from_millis(wait));
        kill9(&mut rep);
        let seen = Store::open_follower(rep_dir.path(), Options::default())
            .map(|s| s.last_position())
            .unwrap_or(0);
        if seen > 0 && seen < last {
            killed_midway += 1;
        }
    }
    assert!(
        killed_midway > 0,
        "no kill landed midway: the test proves nothing"
    );
    let mut rep = annal(
        rep_dir.path(),
        &["replica", "--nats-url", &url, "--js-stream", "BIG"],
    );
    assert!(rep.wait().unwrap().success());
    let replica = Store::open_follower(rep_dir.path(), Options::default()).unwrap();
    assert_eq!(replica.last_position(), last);
    assert_eq!(read_all(&replica), read_all(&store));
}

#[test]
fn a_three_node_cluster_losing_a_node_during_the_relay_loses_nothing() {
    let mut servers = Server::cluster();
    let rt = runtime();
    let urls = servers
        .iter()
        .map(Server::url)
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for i in 0..3000u32 {
                store
                    .append(
                        &format!("s-{}", i % 11),
                        ExpectedVersion::Any,
                        &[EventData::new("E", i.to_string())],
                    )
                    .unwrap();
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    let (progress, relay_task) = rt.block_on(async {
        // The cluster elects its JetStream leader first.
        let deadline = Instant::now() + Duration::from_secs(60);
        let relay = loop {
            match Relay::connect(
                Arc::clone(&store),
                RelayOptions::new(urls.clone(), "CLUSTERED", "c").replicas(3),
            )
            .await
            {
                Ok(r) => break r,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no JetStream cluster: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        let progress = relay.progress();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut relay = relay;
            relay
                .run_until(async move {
                    let _ = rx.await;
                })
                .await
        });
        (progress, (task, tx))
    });
    // Kill a node once the relay is under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.acknowledged() < 500 {
        assert!(
            Instant::now() < deadline,
            "relay never got going: {:?}",
            progress.last_fault()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    servers[0].kill();
    writer.join().unwrap();
    let last = store.last_position();
    wait_acknowledged(&progress, last);
    let (task, tx) = relay_task;
    let _ = tx.send(());
    rt.block_on(task).unwrap().unwrap();
    let survivor = servers[1].url();
    let msgs = rt.block_on(messages(&survivor, "CLUSTERED"));
    let positions: Vec<u64> = msgs.iter().map(|m| m.2).collect();
    assert_eq!(positions, (1..=last).collect::<Vec<_>>());
}

#[test]
fn a_relay_of_a_query_publishes_only_the_events_it_matches() {
    let server = Server::single();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(varied_store(dir.path()));
    let wanted: Vec<u64> = read_all(&store)
        .iter()
        .filter(|e| e.event_type == "ItemAdded" && e.tags.contains("sku-2"))
        .map(|e| e.position)
        .collect();
    assert!(!wanted.is_empty());
    let last_wanted = *wanted.last().unwrap();
    rt.block_on(async {
        let query = Query::items([QueryItem::new().types(["ItemAdded"]).tags(["sku-2"])]);
        let mut relay = Relay::connect(
            Arc::clone(&store),
            RelayOptions::new(server.url(), "PART", "part").query(query),
        )
        .await
        .unwrap();
        let progress = relay.progress();
        // Past the last match: to the end of the log, which it handled too.
        let end = store.last_position();
        assert!(end > last_wanted);
        let watch = tokio::task::spawn_blocking(move || wait_acknowledged(&progress, end));
        relay
            .run_until(async move { watch.await.unwrap() })
            .await
            .unwrap();
    });
    let msgs = rt.block_on(messages(&server.url(), "PART"));
    assert_eq!(msgs.iter().map(|m| m.2).collect::<Vec<_>>(), wanted);
    // It handled what it passed over too: no lag left on its durable subscription.
    let relay_sub = store
        .durable_subscriptions()
        .unwrap()
        .into_iter()
        .find(|d| d.name == "relay")
        .unwrap();
    assert_eq!(
        (relay_sub.acked_position, relay_sub.lag),
        (store.last_position(), 0)
    );
}

/// Relays everything `store` holds to `js_stream`, then returns.
fn relay_all(rt: &tokio::runtime::Runtime, url: &str, store: &Arc<Store>, js_stream: &str) {
    relay_all_with(rt, store, RelayOptions::new(url, js_stream, "p"));
}

/// [`relay_all`] with these options.
fn relay_all_with(rt: &tokio::runtime::Runtime, store: &Arc<Store>, options: RelayOptions) {
    let last = store.last_position();
    rt.block_on(async {
        let mut relay = Relay::connect(Arc::clone(store), options).await.unwrap();
        let progress = relay.progress();
        let watch = tokio::task::spawn_blocking(move || wait_acknowledged(&progress, last));
        relay
            .run_until(async move { watch.await.unwrap() })
            .await
            .unwrap();
    });
}

/// Brings the replica in `dir` up to date with `js_stream`; returns its store.
fn replicate(rt: &tokio::runtime::Runtime, url: &str, dir: &Path, js_stream: &str) -> Arc<Store> {
    rt.block_on(async {
        let mut replica =
            Replica::open(dir, Options::default(), ReplicaOptions::new(url, js_stream))
                .await
                .unwrap();
        replica.run_until(std::future::pending()).await.unwrap();
        Arc::clone(replica.store())
    })
}

#[test]
fn metadata_loosened_after_the_relay_shows_the_events_again_in_both() {
    let server = Server::single();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    for i in 0..3 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                &[EventData::new("E", format!("{i}"))],
            )
            .unwrap();
    }
    store
        .set_stream_metadata(
            "s",
            ExpectedVersion::Any,
            StreamMetadata::new().max_count(1),
        )
        .unwrap();
    relay_all(&rt, &server.url(), &store, "LOOSE");
    let rep_dir = tempfile::tempdir().unwrap();
    let rep = replicate(&rt, &server.url(), rep_dir.path(), "LOOSE");
    assert_eq!(read_all(&rep).len(), 1);
    assert_eq!(read_all(&rep), read_all(&store));
    drop(rep);
    store
        .set_stream_metadata("s", ExpectedVersion::Any, StreamMetadata::new())
        .unwrap();
    relay_all(&rt, &server.url(), &store, "LOOSE");
    let rep = replicate(&rt, &server.url(), rep_dir.path(), "LOOSE");
    assert_eq!(read_all(&rep).len(), 3);
    assert_eq!(read_all(&rep), read_all(&store));
}

#[test]
fn a_scavenged_run_longer_than_one_message_is_split_and_replicated() {
    let server = Server::single();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(dir.path(), Options::default().fsync(FsyncPolicy::Never)).unwrap());
    // 5,000 streams with 1,000-byte names, each hard-deleted: one erased frame lists them
    // all, more than NATS's 1 MiB per message, and makes more messages than a window of
    // one (and the client's spare room) holds.
    for i in 0..5_000u32 {
        let name = format!("{i:0>1000}");
        store
            .append(
                &name,
                ExpectedVersion::NoStream,
                &[EventData::new("E", "x")],
            )
            .unwrap();
    }
    for i in 0..5_000u32 {
        let name = format!("{i:0>1000}");
        store
            .delete_stream(&name, ExpectedVersion::Any, DeleteMode::Hard)
            .unwrap();
    }
    store
        .append("live", ExpectedVersion::Any, &[EventData::new("E", "y")])
        .unwrap();
    store.scavenge().unwrap();
    relay_all_with(
        &rt,
        &store,
        RelayOptions::new(server.url(), "SPLIT", "p").max_in_flight(1),
    );
    let msgs = rt.block_on(messages(&server.url(), "SPLIT"));
    let erased = msgs.iter().filter(|m| m.1 == "p._annal.erased").count();
    assert!(erased >= 18, "{erased} erased messages");
    let rep_dir = tempfile::tempdir().unwrap();
    let rep = replicate(&rt, &server.url(), rep_dir.path(), "SPLIT");
    assert_eq!(read_all(&rep), read_all(&store));
    assert_eq!(rep.last_position(), store.last_position());
    let deleted = format!("{:0>1000}", 7);
    assert_eq!(
        rep.stream_version(&deleted).unwrap(),
        store.stream_version(&deleted).unwrap()
    );
    assert_eq!(
        rep.stream_metadata(&deleted).unwrap(),
        store.stream_metadata(&deleted).unwrap()
    );
    assert!(rep.stream_metadata(&deleted).unwrap().unwrap().1.deleted);
}

#[test]
fn an_event_larger_than_a_message_stops_the_relay_with_an_error() {
    let server = Server::single();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    store
        .append(
            "s",
            ExpectedVersion::Any,
            &[EventData::new("Big", vec![7u8; 1_500_000])],
        )
        .unwrap();
    let err = rt.block_on(async {
        let mut relay = Relay::connect(
            Arc::clone(&store),
            RelayOptions::new(server.url(), "BIG1", "b"),
        )
        .await
        .unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            relay.run_until(std::future::pending()),
        )
        .await
        .expect("the relay must stop, not retry for ever")
        .unwrap_err()
    });
    let text = err.to_string();
    assert!(
        matches!(err, annal::Error::Replication { .. }) && text.contains("max_payload"),
        "{text}"
    );
}

#[test]
fn a_relay_behind_the_retention_point_stops_and_says_so() {
    let server = Server::single();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .segment_size(4096)
        .retention(annal::Retention::new().max_bytes(16 * 1024));
    let store = Arc::new(Store::open(dir.path(), options).unwrap());
    let event = |i: u32| EventData::new("E", format!("{i:06}-{}", "x".repeat(100)));
    for i in 0..10 {
        store
            .append("s", ExpectedVersion::Any, &[event(i)])
            .unwrap();
    }
    relay_all(&rt, &server.url(), &store, "RETAINED");
    // Retention drops what the relay has not published yet.
    for i in 10..400 {
        store
            .append("s", ExpectedVersion::Any, &[event(i)])
            .unwrap();
    }
    store.scavenge().unwrap();
    assert!(
        store.retained_from() > 11,
        "retention kept from {}",
        store.retained_from()
    );
    let err = rt.block_on(async {
        let mut relay = Relay::connect(
            Arc::clone(&store),
            RelayOptions::new(server.url(), "RETAINED", "p"),
        )
        .await
        .unwrap();
        relay.run_until(std::future::pending()).await.unwrap_err()
    });
    assert!(
        matches!(err, annal::Error::BehindRetention { position: 10, .. }),
        "{err}"
    );
    // Nothing past what it had published reached JetStream.
    let msgs = rt.block_on(messages(&server.url(), "RETAINED"));
    assert_eq!(msgs.last().map(|m| m.2), Some(10));
}
