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
fn a_followers_durable_subscription_resumes_after_a_restart_of_both_and_is_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (mut writer, _) = Writer::start(&dir);
    writer.append(20);

    let follower = Store::open_follower(&dir, Options::default()).unwrap();
    let mut sub = follower.durable_subscription("projector").unwrap();
    let mut handled = Vec::new();
    while handled.len() < 12 {
        let e = sub.next_timeout(Duration::from_secs(20)).unwrap().unwrap();
        handled.push(e.position);
    }
    sub.ack(12).unwrap();
    // One process at a time has it: a second follower (as another process would) cannot.
    let other = Store::open_follower(&dir, Options::default()).unwrap();
    let refused = other.durable_subscription("projector").unwrap_err();
    assert!(
        refused
            .to_string()
            .contains(&std::process::id().to_string()),
        "names the process that has it: {refused}"
    );
    drop(sub);
    follower.close().unwrap();

    // The writer restarts and appends more; a new follower resumes after the ack, live.
    writer.close();
    let (mut writer, _) = Writer::start(&dir);
    let last = writer.append(10);
    let follower = Store::open_follower(&dir, Options::default()).unwrap();
    assert_eq!(
        follower.durable_subscriptions().unwrap()[0].acked_position,
        12
    );
    let mut sub = follower.durable_subscription("projector").unwrap();
    let mut got = Vec::new();
    while got.last().is_none_or(|&p| p < last) {
        got.push(
            sub.next_timeout(Duration::from_secs(20))
                .unwrap()
                .unwrap()
                .position,
        );
    }
    assert_eq!(got, (13..=last).collect::<Vec<_>>());
    drop(sub);
    writer.close();
    other.close().unwrap();
    follower.close().unwrap();

    // A follower that closes lets go of its names, even while a handle lives on.
    let first = Store::open_follower(&dir, Options::default()).unwrap();
    let mut kept = first.durable_subscription("projector").unwrap();
    first.close().unwrap();
    let second = Store::open_follower(&dir, Options::default()).unwrap();
    assert_eq!(
        second
            .durable_subscription("projector")
            .unwrap()
            .acked_position(),
        12
    );
    // It still delivers what was acknowledged before the close, but acks no more.
    let e = kept.next_timeout(Duration::from_secs(20)).unwrap().unwrap();
    assert_eq!(e.position, 13);
    assert!(matches!(kept.ack(13), Err(Error::Closed)));
    drop(kept);
    second.close().unwrap();

    // The writer's own durable subscriptions are apart from the followers'.
    let store = Store::open(&dir, options()).unwrap();
    assert!(store.durable_subscriptions().unwrap().is_empty());
    assert_eq!(
        store
            .durable_subscription("projector")
            .unwrap()
            .acked_position(),
        0
    );
    store.close().unwrap();
}

#[test]
fn nothing_in_the_followers_folder_fails_a_followers_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    Store::open(&dir, options()).unwrap().close().unwrap();
    // Not even a file where the folder should be: only durable subscriptions fail.
    std::fs::write(dir.join("followers"), b"").unwrap();
    let follower = Store::open_follower(&dir, Options::default()).unwrap();
    assert_eq!(follower.last_position(), 0);
    assert!(matches!(
        follower.durable_subscription("p"),
        Err(Error::Io { .. })
    ));
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
    // What the follower took in is in its query index too.
    writer
        .append(
            "b-1",
            ExpectedVersion::Any,
            &[EventData::new("T", "y").with_tags(["k"])],
        )
        .unwrap();
    sub.next_timeout(Duration::from_secs(20)).unwrap().unwrap();
    let q = annal::Query::items([annal::QueryItem::new().tags(["k"])]);
    let tagged: Vec<u64> = follower_first
        .read_query(&q, ReadOptions::forward())
        .unwrap()
        .map(|e| e.unwrap().position)
        .collect();
    assert_eq!(tagged, [2]);
    assert_eq!(
        follower_first
            .read_category("b", ReadOptions::forward())
            .unwrap()
            .count(),
        1
    );
    assert!(matches!(
        follower_first.append("a", ExpectedVersion::Any, &[EventData::new("T", "x")]),
        Err(Error::ReadOnly { .. })
    ));
    writer.close().unwrap();
    follower_first.close().unwrap();
}

#[test]
fn followers_opened_while_the_writer_appends_and_rolls_catch_up_and_never_run_ahead() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let writer = Store::open(
        &dir,
        Options {
            segment_size: 4096,
            ..options()
        },
    )
    .unwrap();
    let total = 1500u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..total {
                let stream = format!("s-{}", i % 7);
                let payload = format!("event {}", i + 1).into_bytes();
                writer
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        &[EventData::new("T", payload)],
                    )
                    .unwrap();
            }
        });
        // Followers open at every moment of the run: mid-append, mid-roll.
        let mut opened = 0;
        while writer.last_position() < total || opened < 3 {
            let follower = Store::open_follower(&dir, Options::default()).unwrap();
            let shown = follower.last_position();
            assert!(shown <= writer.last_position(), "showed {shown} at open");
            let mut sub = follower.subscribe_all(1).unwrap();
            let target = writer.last_position().max(1);
            let got = deliver(&mut sub, target);
            assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
            drop(sub);
            follower.close().unwrap();
            opened += 1;
        }
    });
    let follower = Store::open_follower(&dir, Options::default()).unwrap();
    let mut sub = follower.subscribe_all(1).unwrap();
    assert_eq!(deliver(&mut sub, total).len() as u64, total);
    drop(sub);
    follower.close().unwrap();
    writer.close().unwrap();
}

#[test]
fn a_board_left_mid_update_by_a_dead_writer_neither_hides_the_log_nor_stops_the_follower() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let writer = Store::open(&dir, options()).unwrap();
    for _ in 0..3 {
        writer
            .append("a", ExpectedVersion::Any, &[EventData::new("T", "event")])
            .unwrap();
    }
    writer.close().unwrap();
    // The writer "died" inside an update: `seq` (word 1) left odd.
    let board = dir.join("PUBLISHED");
    let mut words = std::fs::read(&board).unwrap();
    let seq = u64::from_le_bytes(words[8..16].try_into().unwrap());
    words[8..16].copy_from_slice(&(seq | 1).to_le_bytes());
    std::fs::write(&board, &words).unwrap();
    let follower = Store::open_follower(&dir, Options::default()).unwrap();
    assert_eq!(follower.last_position(), 3, "what recovery read stands");
    // The next writer repairs the board and goes on; the follower follows it.
    let writer = Store::open(&dir, options()).unwrap();
    writer
        .append("a", ExpectedVersion::Any, &[EventData::new("T", "event")])
        .unwrap();
    let mut sub = follower.subscribe_all(4).unwrap();
    let e = sub.next_timeout(Duration::from_secs(20)).unwrap().unwrap();
    assert_eq!(e.position, 4);
    drop(sub);
    follower.close().unwrap();
    writer.close().unwrap();
}

#[test]
fn a_writer_restarted_on_a_shorter_log_stops_the_follower_with_diverged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let writer = Store::open(&dir, options()).unwrap();
    for _ in 0..5 {
        writer
            .append("a", ExpectedVersion::Any, &[EventData::new("T", "event")])
            .unwrap();
    }
    writer.close().unwrap();
    let follower = Store::open_follower(&dir, Options::default()).unwrap();
    assert_eq!(follower.last_position(), 5);
    let mut sub = follower.subscribe_all(6).unwrap();
    // What a power loss would do: the log's tail gone, and a writer recovering without it
    // (repair with accept_loss stands in for the lost data being cut).
    let seg = dir.join("0000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - bytes.iter().rev().position(|&b| b != 0).unwrap() - 3;
    bytes[at] ^= 0xFF;
    std::fs::write(&seg, &bytes).unwrap();
    annal::repair(
        &annal::storage::FsStorage::default(),
        &dir,
        annal::RepairOptions { accept_loss: true },
    )
    .unwrap();
    let writer = Store::open(&dir, options()).unwrap();
    assert!(writer.last_position() < 5);
    let end = loop {
        match sub.next_timeout(Duration::from_secs(20)) {
            Ok(Some(_)) => {}
            other => break other,
        }
    };
    assert!(matches!(end, Err(Error::Diverged { .. })), "{end:?}");
    drop(sub);
    follower.close().unwrap();
    writer.close().unwrap();
}

/// Writes words of `PUBLISHED` as a writer would: `seq` odd, the words, `seq` even.
fn publish_by_hand(dir: &Path, words: &[(usize, u64)]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("PUBLISHED"))
        .unwrap();
    let mut seq = [0u8; 8];
    f.read_exact_at(&mut seq, 8).unwrap();
    let seq = u64::from_le_bytes(seq) | 1;
    f.write_all_at(&seq.to_le_bytes(), 8).unwrap();
    for &(i, v) in words {
        f.write_all_at(&v.to_le_bytes(), (i * 8) as u64).unwrap();
    }
    f.write_all_at(&(seq + 1).to_le_bytes(), 8).unwrap();
}

#[test]
fn a_follower_that_read_into_an_unpublished_segment_takes_in_nothing_past_the_board() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let small = Options {
        segment_size: 4096,
        ..options()
    };
    let writer = Store::open(&dir, small.clone()).unwrap();
    while writer.stats().unwrap().segments < 2 {
        writer
            .append(
                "a",
                ExpectedVersion::Any,
                &[EventData::new(
                    "T",
                    format!("event {}", writer.last_position() + 1),
                )],
            )
            .unwrap();
    }
    let last = writer.last_position();
    writer.close().unwrap();
    // Segment 2 as a roll leaves it before the writer publishes: frames, then an append in
    // progress (bytes that are no frame yet).
    let seg2 = dir.join("0000000002.seg");
    let mut bytes = std::fs::read(&seg2).unwrap();
    let end2 = bytes.len() - bytes.iter().rev().position(|&b| b != 0).unwrap();
    bytes[end2 + 1..end2 + 40].fill(0xAB);
    std::fs::write(&seg2, &bytes).unwrap();
    let base2 = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let seg1 = std::fs::read(dir.join("0000000001.seg")).unwrap();
    let end1 = (seg1.len() - seg1.iter().rev().position(|&b| b != 0).unwrap()) as u64;
    // The board still says nothing is acknowledged.
    publish_by_hand(&dir, &[(4, 0), (5, (1 << 40) | 32)]);
    let follower = Store::open_follower(&dir, Options::default()).unwrap();
    assert_eq!(follower.last_position(), 0);
    // The writer publishes the end of segment 1 (the roll's first publish).
    publish_by_hand(&dir, &[(4, base2 - 1), (5, (1 << 40) | end1)]);
    let mut sub = follower.subscribe_all(1).unwrap();
    assert_eq!(deliver(&mut sub, base2 - 1).len() as u64, base2 - 1);
    // Then the rest: the follower had read it at open, and shows it now.
    publish_by_hand(&dir, &[(4, last), (5, (2 << 40) | end2 as u64)]);
    assert_eq!(deliver(&mut sub, last), (base2..=last).collect::<Vec<_>>());
    drop(sub);
    follower.close().unwrap();
}
