//! Followers: a read-only handle that follows a writer, tested across two real processes
//! (this test binary runs itself again as the writer) and, for what is visible when, in one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use annal::{Error, EventData, ExpectedVersion, FsyncPolicy, Options, ReadOptions, Store};

/// Segments small enough that a few hundred events roll several times.
fn options() -> Options {
    Options {
        segment_size: 16 * 1024,
        ..Options::default()
    }
}

const CHILD: &str = "ANNAL_FOLLOWER_WRITER_DIR";

/// The writer process: appends as told on stdin ("append N" or "abort"), acknowledging each
/// append on stdout once it returned. Runs only when the parent test started it.
#[test]
fn writer_process() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let store = Store::open(&dir, options()).unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "ready {}", store.last_position()).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("append"), Some(n)) => {
                for _ in 0..n.parse::<u64>().unwrap() {
                    let p = store.last_position() + 1;
                    let stream = format!("s-{}", p % 7);
                    let payload = format!("event {p}").into_bytes();
                    let r = store
                        .append(
                            &stream,
                            ExpectedVersion::Any,
                            &[EventData::new("T", payload)],
                        )
                        .unwrap();
                    writeln!(out, "acked {}", r.last_position).unwrap();
                    out.flush().unwrap();
                }
            }
            // A crash: no close, no clean STATE, nothing after this.
            (Some("abort"), _) => std::process::abort(),
            _ => break,
        }
    }
    store.close().unwrap();
}

struct Writer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Writer {
    fn start(dir: &Path) -> (Writer, u64) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "writer_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut w = Writer {
            stdout: BufReader::new(child.stdout.take().unwrap()),
            stdin,
            child,
        };
        let start = w.expect("ready");
        (w, start)
    }

    /// The next line that starts with `word`, and the number after it.
    fn expect(&mut self, word: &str) -> u64 {
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "writer ended"
            );
            // The harness may print "test writer_process ... " before the first line.
            let key = format!("{word} ");
            if let Some(at) = line.find(&key) {
                return line[at + key.len()..].trim().parse().unwrap();
            }
        }
    }

    /// Appends `n` events; returns the last acknowledged position.
    fn append(&mut self, n: u64) -> u64 {
        writeln!(self.stdin, "append {n}").unwrap();
        self.stdin.flush().unwrap();
        let mut last = 0;
        for _ in 0..n {
            last = self.expect("acked");
        }
        last
    }

    fn abort(mut self) {
        writeln!(self.stdin, "abort").unwrap();
        let _ = self.stdin.flush();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "the writer was to crash");
    }

    fn close(mut self) {
        writeln!(self.stdin, "close").unwrap();
        drop(self.stdin);
        assert!(self.child.wait().unwrap().success());
    }
}

/// Positions a subscription delivers until it reaches `last` (failing after a long wait).
fn deliver(sub: &mut annal::Subscription, last: u64) -> Vec<u64> {
    let mut got = Vec::new();
    while got.last().is_none_or(|&p| p < last) {
        match sub.next_timeout(Duration::from_secs(20)).unwrap() {
            Some(e) => {
                assert_eq!(e.payload, format!("event {}", e.position).into_bytes());
                got.push(e.position);
            }
            None => panic!(
                "the follower stopped at {:?}, waiting for {last}",
                got.last()
            ),
        }
    }
    got
}

#[test]
fn a_follower_in_another_process_sees_appends_rolls_and_a_writer_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (mut writer, start) = Writer::start(&dir);
    assert_eq!(start, 0);
    assert_eq!(writer.append(5), 5);

    let follower = Store::open_follower(&dir, Options::default()).unwrap();
    assert_eq!(follower.last_position(), 5);
    let mut sub = follower.subscribe_all(1).unwrap();
    assert_eq!(deliver(&mut sub, 5), [1, 2, 3, 4, 5]);

    // Live, across several segment rolls.
    let last = writer.append(1000);
    assert!(follower.stats().unwrap().segments >= 1);
    assert_eq!(deliver(&mut sub, last), (6..=last).collect::<Vec<_>>());
    assert!(
        follower.stats().unwrap().segments > 3,
        "the writer rolled, and the follower took in the new segments"
    );
    // Reads by stream and over the log see the same.
    let s3: Vec<u64> = follower
        .read_stream("s-3", ReadOptions::forward())
        .unwrap()
        .map(|e| e.unwrap().position)
        .collect();
    assert_eq!(s3, (1..=last).filter(|p| p % 7 == 3).collect::<Vec<_>>());
    assert_eq!(
        follower.read_all(ReadOptions::forward()).unwrap().count() as u64,
        last
    );

    // The writer crashes; a new one recovers and goes on; the follower follows it.
    writer.abort();
    let (mut writer, start) = Writer::start(&dir);
    assert_eq!(
        start, last,
        "under Always, every acknowledged event survived"
    );
    let after = writer.append(50);
    assert_eq!(
        deliver(&mut sub, after),
        (last + 1..=after).collect::<Vec<_>>()
    );
    writer.close();
    follower.close().unwrap();
}

#[test]
fn a_follower_never_shows_what_the_writer_has_not_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    for policy in [FsyncPolicy::Always, FsyncPolicy::Never] {
        let dir = tmp.path().join(format!("{policy:?}"));
        let writer = Store::open(
            &dir,
            Options {
                fsync: policy,
                ..options()
            },
        )
        .unwrap();
        writer
            .append("a", ExpectedVersion::Any, &[EventData::new("T", "x")])
            .unwrap();
        let follower = Store::open_follower(&dir, Options::default()).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..2000u32 {
                    let stream = format!("s-{}", i % 5);
                    writer
                        .append(&stream, ExpectedVersion::Any, &[EventData::new("T", "x")])
                        .unwrap();
                }
            });
            let mut seen = 0;
            while seen < 2001 {
                // The follower first: what it shows must already be acknowledged.
                seen = follower.last_position();
                let acknowledged = writer.last_position();
                assert!(
                    seen <= acknowledged,
                    "{policy:?}: showed {seen} of {acknowledged}"
                );
                std::thread::yield_now();
            }
        });
        follower.close().unwrap();
        writer.close().unwrap();
    }
}

#[test]
fn a_follower_takes_no_lock_and_needs_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        Store::open_follower(tmp.path().join("none"), Options::default()),
        Err(Error::Io { .. })
    ));
    let dir = tmp.path().join("store");
    let follower_first = {
        Store::open(&dir, options()).unwrap().close().unwrap();
        Store::open_follower(&dir, Options::default()).unwrap()
    };
    // A writer opens beside it.
    let writer = Store::open(&dir, options()).unwrap();
    writer
        .append("a", ExpectedVersion::Any, &[EventData::new("T", "x")])
        .unwrap();
    let mut sub = follower_first.subscribe_all(1).unwrap();
    let e = sub.next_timeout(Duration::from_secs(20)).unwrap().unwrap();
    assert_eq!(e.position, 1);
    assert!(matches!(
        follower_first.append("a", ExpectedVersion::Any, &[EventData::new("T", "x")]),
        Err(Error::ReadOnly { .. })
    ));
    writer.close().unwrap();
    follower_first.close().unwrap();
}
