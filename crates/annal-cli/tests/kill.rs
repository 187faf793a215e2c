//! Real processes, real kills: `annal import` runs as a child, is fed events, and is killed with
//! SIGKILL at a random moment; every event it acknowledged on stdout must then be in the store,
//! under `--fsync always` and `--fsync never` alike (a process crash loses nothing handed to the
//! OS). `ANNAL_KILL_ROUNDS=N` runs more rounds than CI's few.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use annal::{Options, ReadOptions, Store};

fn round(mode: &str, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["import", "--dir"])
        .arg(&dir)
        .args(["--fsync", mode, "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0..1_000_000u64 {
            let line = format!(
                "{{\"stream\":\"s-{}\",\"type\":\"E\",\"data\":{{\"n\":{i}}}}}\n",
                i % 7
            );
            if stdin.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    });
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            acked.push(line);
        }
        acked
    });
    // Let it run for a while, then kill it mid-flight.
    std::thread::sleep(Duration::from_millis(150 + seed * 37 % 400));
    child.kill().unwrap();
    child.wait().unwrap();
    let acked = reader.join().unwrap();
    let _ = feeder.join();
    assert!(
        !acked.is_empty(),
        "the child acknowledged nothing before it was killed"
    );

    let store = Store::open(&dir, Options::default()).unwrap();
    let all: Vec<_> = store
        .read_all(ReadOptions::forward())
        .unwrap()
        .collect::<annal::Result<Vec<_>>>()
        .unwrap();
    for line in &acked {
        // {"stream":"s-3","version":12,"position":80}
        let field = |name: &str| -> String {
            let key = format!("\"{name}\":");
            let at = line
                .find(&key)
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                + key.len();
            line[at..]
                .trim_start_matches('"')
                .chars()
                .take_while(|c| *c != '"' && *c != ',' && *c != '}')
                .collect()
        };
        let position: u64 = field("position").parse().unwrap();
        let version: u64 = field("version").parse().unwrap();
        let e = all.get(position as usize - 1).unwrap_or_else(|| {
            panic!(
                "{mode}: acknowledged position {position} lost ({} in store)",
                all.len()
            )
        });
        assert_eq!(
            (&*e.stream, e.version),
            (field("stream").as_str(), version),
            "{line}"
        );
    }
    assert!(all.len() >= acked.len());
    eprintln!(
        "{mode}: killed after {} acknowledged events; {} in the store",
        acked.len(),
        all.len()
    );
}

#[test]
fn killed_importer_loses_nothing_it_acknowledged() {
    let rounds: u64 = std::env::var("ANNAL_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for seed in 0..rounds {
        round("always", seed);
        round("never", seed);
    }
}
