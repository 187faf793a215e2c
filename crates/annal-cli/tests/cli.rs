//! The `annal` binary, run as a user would: every command, and the ways they fail (unknown
//! stream, stale expected version, locked directory, corrupt segment, bad input lines).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use annal::{EventData, ExpectedVersion, FsyncPolicy, Options, Store};
use common::run_with;
use serde_json::Value;

fn run(dir: &Path, args: &[&str]) -> Output {
    run_with(dir, args, b"")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts success and returns stdout.
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts exit status 1 with one line on stderr that contains `needle`; returns that line.
fn fails(o: &Output, needle: &str) -> String {
    fails_with(o, 1, needle)
}

/// Asserts exit status `code` with one line on stderr that contains `needle`.
fn fails_with(o: &Output, code: i32, needle: &str) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {err}",
        stdout(o)
    );
    assert_eq!(
        err.lines().count(),
        1,
        "more than one line on stderr: {err}"
    );
    assert!(err.starts_with("annal: "), "{err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    err
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// A path for a store that does not exist yet.
fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    (tmp, dir)
}

/// A new, empty store with small segments. Opening a store reads its whole active segment,
/// which takes most of a second for a default 64 MiB one in a debug build: small segments
/// keep the many runs of the binary below fast.
fn small_store() -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = store_dir();
    Store::open(&dir, small_segments())
        .unwrap()
        .close()
        .unwrap();
    (tmp, dir)
}

fn small_segments() -> Options {
    Options {
        segment_size: 64 * 1024,
        ..Options::default()
    }
}

#[test]
fn append_then_read_a_stream() {
    let (_tmp, dir) = small_store();
    let id = "0190a5e4-7c3b-7d2e-8f41-2b6c9d0e1f23";
    let first = ok(run(
        &dir,
        &[
            "append",
            "cart-1",
            "--type",
            "CartCreated",
            "--data",
            r#"{"customer":"ada"}"#,
            "--id",
            id,
            "--json",
        ],
    ));
    assert_eq!(
        json_lines(&first),
        [serde_json::json!({"stream": "cart-1", "version": 1, "position": 1})]
    );
    let args = [
        "append",
        "cart-1",
        "--type",
        "ItemAdded",
        "--data",
        r#"{"sku":"tea"}"#,
        "--metadata",
        r#"{"user":"u-7"}"#,
        "--expected-version",
        "1",
    ];
    ok(run(&dir, &args));
    ok(run(
        &dir,
        &[
            "append",
            "cart-2",
            "--type",
            "CartCreated",
            "--expected-version",
            "no-stream",
        ],
    ));

    let events = json_lines(&ok(run(&dir, &["read", "cart-1", "--json"])));
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "CartCreated");
    assert_eq!(events[0]["id"], id);
    // The id in the uuid crate's form, for the library's `u128`.
    let store = Store::open(&dir, small_segments().read_only(true)).unwrap();
    let stored = store
        .read_stream("cart-1", annal::ReadOptions::forward())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.id,
        Some(uuid::Uuid::parse_str(id).unwrap().as_u128())
    );
    store.close().unwrap();
    assert_eq!(events[0]["data"]["customer"], "ada");
    assert_eq!(events[0]["metadata"], Value::Null);
    assert_eq!(events[1]["version"], 2);
    assert_eq!(events[1]["position"], 2);
    assert_eq!(events[1]["metadata"]["user"], "u-7");
    assert!(events[1]["timestamp"].as_u64().unwrap() > 1_600_000_000_000_000);

    let backward = json_lines(&ok(run(
        &dir,
        &["read", "cart-1", "--backward", "--limit", "1", "--json"],
    )));
    assert_eq!(backward.len(), 1);
    assert_eq!(backward[0]["version"], 2);

    let table = ok(run(&dir, &["read", "cart-1"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("POSITION"), "{table}");
    assert!(
        lines[2].contains("ItemAdded") && lines[2].contains(r#"{"sku":"tea"}"#),
        "{table}"
    );

    let all = json_lines(&ok(run(&dir, &["read-all", "--from", "2", "--json"])));
    let positions: Vec<u64> = all
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [2, 3]);
}

#[test]
fn streams_and_stats() {
    let (_tmp, dir) = small_store();
    let input = (0..7)
        .map(|i| {
            format!(
                r#"{{"stream":"order-{}","type":"Placed","data":{i}}}"#,
                i % 3
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    ok(run_with(
        &dir,
        &["import", "--fsync", "never"],
        input.as_bytes(),
    ));
    let streams = json_lines(&ok(run(&dir, &["streams", "--json"])));
    let listed: Vec<(String, u64)> = streams
        .iter()
        .map(|s| {
            (
                s["stream"].as_str().unwrap().to_string(),
                s["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("order-0".into(), 3),
            ("order-1".into(), 2),
            ("order-2".into(), 2)
        ]
    );
    assert!(ok(run(&dir, &["streams"])).contains("order-2  2"));
    let stats = json_lines(&ok(run(&dir, &["stats", "--json"])));
    assert_eq!(stats[0]["events"], 7);
    assert_eq!(stats[0]["streams"], 3);
    assert_eq!(stats[0]["last_position"], 7);
    assert!(stats[0]["bytes"].as_u64().unwrap() > 7 * 30);
    assert!(stats[0]["index_memory_bytes"].as_u64().unwrap() > 0);
    // Every field of the library's `Stats`; a read-only open syncs nothing.
    assert_eq!(stats[0]["segment_syncs"], 0);
    let table = ok(run(&dir, &["stats"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("events") && l.ends_with(" 7")),
        "{table}"
    );
}

#[test]
fn unknown_stream_and_missing_store_are_one_line_errors() {
    let (_tmp, dir) = store_dir();
    // No store yet: reading must not create one.
    fails(&run(&dir, &["read-all"]), "does not exist");
    fails(&run(&dir, &["stats"]), "does not exist");
    assert!(!dir.exists());
    ok(run(&dir, &["append", "s", "--type", "T"]));
    // A stream with no events reads as empty, as in the library: status 0, a note on stderr.
    let o = run(&dir, &["read", "nope", "--json"]);
    assert!(o.status.success());
    assert!(stdout(&o).is_empty());
    assert!(
        stderr(&o).contains("stream \"nope\" has no events"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn wrong_expected_version_is_refused() {
    let (_tmp, dir) = small_store();
    let append = |expected: &str| {
        run(
            &dir,
            &["append", "s", "--type", "T", "--expected-version", expected],
        )
    };
    ok(append("no-stream"));
    fails_with(&append("no-stream"), 5, "wrong expected version");
    let err = fails_with(&append("5"), 5, "wrong expected version");
    assert!(err.contains("expected 5, actual 1"), "{err}");
    ok(append("1"));
    ok(append("exists"));
    assert_eq!(
        json_lines(&ok(run(&dir, &["read", "s", "--json"]))).len(),
        3
    );
}

#[test]
fn usage_errors_exit_with_2() {
    let (_tmp, dir) = store_dir();
    for args in [
        &["append", "s"][..],
        &["append", "s", "--type", "T", "--data", "not json"],
        &["append", "s", "--type", "T", "--id", "123"],
        &["append", "s", "--type", "T", "--expected-version", "soon"],
        &["import", "--fsync", "sometimes"],
        &["frobnicate"],
    ] {
        let o = run(&dir, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert!(!dir.exists());
}

#[test]
fn a_locked_directory_is_reported() {
    let (_tmp, dir) = store_dir();
    let store = Store::open(&dir, small_segments()).unwrap();
    store
        .append(
            "s",
            ExpectedVersion::Any,
            &[EventData::new("T", &b"{}"[..])],
        )
        .unwrap();
    for args in [&["append", "s", "--type", "T"][..], &["repair"]] {
        fails_with(&run(&dir, args), 6, "locked by process");
    }
    // verify only reads: it runs beside the writer.
    ok(run(&dir, &["verify"]));
    // Reading commands open read-only, beside the writer.
    assert_eq!(json_lines(&ok(run(&dir, &["read-all", "--json"]))).len(), 1);
    ok(run(&dir, &["stats"]));
    drop(store);
    assert_eq!(json_lines(&ok(run(&dir, &["read-all", "--json"]))).len(), 1);
}

/// A store of several segments, closed cleanly (so every sealed segment has its checkpoint).
fn segmented_store(dir: &Path) -> Vec<PathBuf> {
    let options = Options {
        fsync: FsyncPolicy::Never,
        segment_size: 4096,
        ..Options::default()
    };
    let store = Store::open(dir, options).unwrap();
    for i in 0..200u32 {
        let data = format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(40));
        store
            .append(
                &format!("s-{}", i % 5),
                ExpectedVersion::Any,
                &[EventData::new("T", data.into_bytes())],
            )
            .unwrap();
    }
    store.close().unwrap();
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    for s in &segments[..segments.len() - 1] {
        assert!(s.with_extension("idx").exists(), "no checkpoint for {s:?}");
    }
    segments
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn verify_passes_on_a_clean_store_and_names_a_corrupt_frame() {
    let (_tmp, dir) = store_dir();
    let segments = segmented_store(&dir);
    let clean = ok(run(&dir, &["verify"]));
    assert!(clean.trim_end().ends_with(": ok"), "{clean}");
    assert!(clean.contains("200 events, 5 streams"), "{clean}");

    // A byte inside the first frame of the second (sealed) segment: its payload, past the
    // 8-byte frame header and the 30-byte body header.
    let damaged = &segments[1];
    flip_byte(damaged, 32 + 8 + 40);
    let before = snapshot_files(&dir);
    let o = run(&dir, &["verify", "--json"]);
    fails_with(&o, 3, "damaged or lost data");
    assert_eq!(snapshot_files(&dir), before, "verify changed a file");
    let reports = json_lines(&stdout(&o));
    assert_eq!(reports.len(), 2, "{reports:?}");
    let problem = &reports[0];
    assert_eq!(problem["severity"], "damaged");
    assert!(
        problem["file"]
            .as_str()
            .unwrap()
            .ends_with("0000000002.seg"),
        "{problem}"
    );
    assert_eq!(problem["offset"], 32);
    assert_eq!(reports.last().unwrap()["ok"], false);
    assert_eq!(reports.last().unwrap()["health"], "damaged");
    let table = run(&dir, &["verify"]);
    assert!(
        stdout(&table).contains("0000000002.seg  byte 32"),
        "{}",
        stdout(&table)
    );

    // read-all gets the first segment's events out, then stops at the damage.
    let o = run(&dir, &["read-all", "--json"]);
    let err = fails_with(&o, 3, "corruption");
    assert!(err.contains("0000000002.seg"), "{err}");
    let read = json_lines(&stdout(&o));
    assert!(!read.is_empty());
    for (i, e) in read.iter().enumerate() {
        assert_eq!(e["position"], i as u64 + 1);
    }
}

#[test]
fn verify_reports_a_damaged_checkpoint() {
    let (_tmp, dir) = store_dir();
    let segments = segmented_store(&dir);
    let idx = segments[0].with_extension("idx");
    flip_byte(&idx, 20);
    let o = run(&dir, &["verify"]);
    fails_with(&o, 4, "1 repairable finding");
    let out = stdout(&o);
    assert!(
        out.contains("0000000001.idx") && out.contains("index checkpoint is damaged"),
        "{out}"
    );
    // repair removes it (the next open rebuilds it), and verify is clean again.
    let fixed = ok(run(&dir, &["repair"]));
    assert!(fixed.contains("removed"), "{fixed}");
    assert!(!idx.exists());
    ok(run(&dir, &["verify"]));
}

#[test]
fn a_corrupt_single_segment_closed_cleanly_is_refused() {
    let (_tmp, dir) = small_store();
    ok(run(
        &dir,
        &["append", "s", "--type", "T", "--data", r#"{"a":1}"#],
    ));
    ok(run(
        &dir,
        &["append", "s", "--type", "T", "--data", r#"{"a":2}"#],
    ));
    flip_byte(&dir.join("0000000001.seg"), 32 + 8 + 35);
    let err = fails_with(&run(&dir, &["read-all"]), 3, "corruption");
    assert!(err.contains("0000000001.seg at byte 32"), "{err}");
    let o = run(&dir, &["verify"]);
    fails_with(&o, 3, "damaged");
    assert!(stdout(&o).contains("byte 32"), "{}", stdout(&o));
}

#[test]
fn import_round_trips_through_read_all() {
    let (_tmp, dir) = small_store();
    let lines = [
        r#"{"stream":"cart-1","type":"CartCreated","data":{"customer": "ada", "tags": [1, 2.5, null]}}"#,
        r#"{"stream":"cart-1","type":"ItemAdded","data":{"sku":"tea"},"metadata":{"by":"x"},"id":"0190a5e4-7c3b-7d2e-8f41-2b6c9d0e1f23"}"#,
        r#"{"stream":"cart-2","type":"Blob","data_b64":"AP8Qbm90IGpzb24=","expected_version":"no-stream"}"#,
        r#"{"stream":"cart-1","type":"Note","data":"just a string","expected_version":2}"#,
    ];
    let acks = json_lines(&ok(run_with(
        &dir,
        &["import", "--batch", "10", "--json"],
        lines.join("\n").as_bytes(),
    )));
    let acked: Vec<(String, u64, u64)> = acks
        .iter()
        .map(|a| {
            (
                a["stream"].as_str().unwrap().into(),
                a["version"].as_u64().unwrap(),
                a["position"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        acked,
        [
            ("cart-1".into(), 1, 1),
            ("cart-1".into(), 2, 2),
            ("cart-2".into(), 1, 3),
            ("cart-1".into(), 3, 4)
        ]
    );
    let events = json_lines(&ok(run(&dir, &["read-all", "--json"])));
    assert_eq!(events.len(), 4);
    for (line, event) in lines.iter().zip(&events) {
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["stream"], event["stream"]);
        assert_eq!(line["type"], event["type"]);
        assert_eq!(line["data"], event["data"]);
        assert_eq!(line["data_b64"], event["data_b64"]);
    }
    assert_eq!(events[1]["metadata"]["by"], "x");
    assert_eq!(events[1]["id"], "0190a5e4-7c3b-7d2e-8f41-2b6c9d0e1f23");
    // Bytes that are not JSON come back as base64 only.
    assert!(events[2].get("data").is_none());

    // What read-all printed imports into another store as the same events.
    let (_tmp2, copy) = small_store();
    let export = ok(run(&dir, &["read-all", "--json"]));
    ok(run_with(&copy, &["import"], export.as_bytes()));
    let copied = json_lines(&ok(run(&copy, &["read-all", "--json"])));
    for (a, b) in events.iter().zip(&copied) {
        for key in [
            "stream", "version", "position", "type", "id", "metadata", "data", "data_b64",
        ] {
            assert_eq!(a.get(key), b.get(key), "{key}");
        }
    }
}

#[test]
fn binary_data_comes_back_as_base64() {
    let (tmp, dir) = small_store();
    let file = tmp.path().join("blob.bin");
    std::fs::write(&file, [0u8, 159, 146, 150, b'{']).unwrap();
    ok(run(
        &dir,
        &[
            "append",
            "b",
            "--type",
            "Blob",
            "--data-file",
            file.to_str().unwrap(),
        ],
    ));
    let events = json_lines(&ok(run(&dir, &["read", "b", "--json"])));
    assert_eq!(events[0]["data_b64"], "AJ+Slns=");
    assert!(events[0].get("data").is_none());
    assert!(ok(run(&dir, &["read", "b"])).contains("<5 bytes>"));
}

#[test]
fn import_reports_bad_lines_and_goes_on() {
    let (_tmp, dir) = small_store();
    let input = [
        r#"{"stream":"a","type":"T","data":1}"#,
        r#"{"stream":"a","type":"T","data":"#,
        r#"{"stream":"a","type":"T","data":3}"#,
        r#"{"stream":"a","type":"T","data":4,"expected_version":"no-stream"}"#,
        r#"{"stream":"a","data":5}"#,
        r#"{"stream":"a","type":"T","data":6}"#,
    ]
    .join("\n");
    let o = run_with(
        &dir,
        &["import", "--batch", "3", "--json"],
        input.as_bytes(),
    );
    // The good lines are stored, and the status says some were not.
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(
        err.lines().last(),
        Some("annal: imported 3 events; 3 lines failed"),
        "{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("annal: line 2: ")),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("annal: line 4: wrong expected version")),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("annal: line 5: missing \"type\"")),
        "{err}"
    );
    let acked: Vec<u64> = json_lines(&stdout(&o))
        .iter()
        .map(|a| a["position"].as_u64().unwrap())
        .collect();
    assert_eq!(acked, [1, 2, 3]);
    let data: Vec<Value> = json_lines(&ok(run(&dir, &["read", "a", "--json"])))
        .iter()
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(data, [1, 3, 6]);
}

#[test]
fn a_line_refused_by_the_store_fails_alone_in_its_batch() {
    let (_tmp, dir) = small_store();
    ok(run_with(
        &dir,
        &["import"],
        br#"{"stream":"a","type":"T","data":0}"#,
    ));
    // Line 1's expected version is stale; lines 2 and 3 ride in its batch.
    let input = [
        r#"{"stream":"a","type":"T","data":1,"expected_version":"no-stream"}"#,
        r#"{"stream":"a","type":"T","data":2}"#,
        r#"{"stream":"a","type":"T","data":3}"#,
    ]
    .join("\n");
    let o = run_with(&dir, &["import", "--batch", "10"], input.as_bytes());
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("annal: line 1: wrong expected version"),
        "{err}"
    );
    assert_eq!(lines[1], "annal: imported 2 events; 1 line failed");
    let data: Vec<Value> = json_lines(&ok(run(&dir, &["read", "a", "--json"])))
        .iter()
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(data, [0, 2, 3]);
}

#[test]
fn exit_statuses_tell_a_conflict_a_lock_and_damage_apart() {
    let (_tmp, dir) = small_store();
    let o = run_with(&dir, &["import"], br#"{"stream":"a","type":"T"}"#);
    assert!(
        stderr(&o).starts_with("annal: imported 1 event in ")
            && stderr(&o).trim_end().ends_with(" events/s)"),
        "one summary line: {}",
        stderr(&o)
    );
    ok(o);
    let conflict = run(
        &dir,
        &[
            "append",
            "a",
            "--type",
            "T",
            "--expected-version",
            "no-stream",
        ],
    );
    fails_with(&conflict, 5, "wrong expected version");
    // A writer holding the store: another writer is told who has it.
    let mut holder = std::process::Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["--dir", dir.to_str().unwrap(), "import", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"{\"stream\":\"b\",\"type\":\"T\"}\n").unwrap();
    // Its acknowledgement means it holds the lock.
    let mut ack = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut ack,
    )
    .unwrap();
    assert!(ack.contains("\"position\":2"), "{ack}");
    let locked = run(&dir, &["append", "a", "--type", "T"]);
    fails_with(&locked, 6, &format!("locked by process {}", holder.id()));
    drop(stdin);
    assert!(holder.wait().unwrap().success());
    // Damage an open refuses: a sealed segment's frame bytes flipped.
    let seg = dir.join("0000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    fails_with(&run(&dir, &["append", "a", "--type", "T"]), 3, "corrupt");
}

#[test]
fn import_stops_on_error_when_asked() {
    let (_tmp, dir) = small_store();
    let input = "{\"stream\":\"a\",\"type\":\"T\"}\n{\"stream\":\"a\",\"type\":\"T\"}\nnot json\n{\"stream\":\"a\",\"type\":\"T\"}\n";
    let o = run_with(
        &dir,
        &["import", "--batch", "10", "--stop-on-error", "--json"],
        input.as_bytes(),
    );
    fails(&o, "line 3: not a JSON object");
    // The lines before the bad one were appended and acknowledged; the one after was not.
    assert_eq!(json_lines(&stdout(&o)).len(), 2);
    let stats = json_lines(&ok(run(&dir, &["stats", "--json"])));
    assert_eq!(stats[0]["events"], 2);
}

#[test]
fn tail_follows_until_interrupted() {
    let (_tmp, dir) = small_store();
    ok(run_with(
        &dir,
        &["import", "--fsync", "never"],
        b"{\"stream\":\"a\",\"type\":\"T\"}\n{\"stream\":\"b\",\"type\":\"T\"}\n{\"stream\":\"a\",\"type\":\"U\"}\n",
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_annal"))
        .arg("--dir")
        .arg(&dir)
        .args(["tail", "--from", "1", "--prefix", "a", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let second: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (first["position"].as_u64(), second["position"].as_u64()),
        (Some(1), Some(3))
    );
    // Still following, and holding no lock: a writer appends beside it, and tail shows it.
    ok(run(&dir, &["append", "a-2", "--type", "T"]));
    let third: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (third["position"].as_u64(), third["stream"].as_str()),
        (Some(4), Some("a-2"))
    );
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.starts_with("annal: following streams starting with \"a\" of ")
            && err.contains("from position 1"),
        "{err}"
    );
}

#[test]
fn tail_beside_a_running_writer_starts_at_the_end_and_waits() {
    let (_tmp, dir) = small_store();
    ok(run_with(
        &dir,
        &["import"],
        b"{\"stream\":\"old\",\"type\":\"T\"}\n",
    ));
    // A writer that stays open: `import` reading a pipe.
    let mut writer = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["--dir", dir.to_str().unwrap(), "import", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to_writer = writer.stdin.take().unwrap();
    let mut acks = BufReader::new(writer.stdout.take().unwrap()).lines();
    std::io::Write::write_all(&mut to_writer, b"{\"stream\":\"x\",\"type\":\"T\"}\n").unwrap();
    assert!(acks.next().unwrap().unwrap().contains("\"position\":2"));
    // tail starts beside it (no lock), at the end, and says it is waiting.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_annal"))
        .args(["--dir", dir.to_str().unwrap(), "tail", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut header = String::new();
    BufReader::new(tail.stderr.take().unwrap())
        .read_line(&mut header)
        .unwrap();
    assert!(
        header.contains("following every stream")
            && header.contains("waiting for events after position 2"),
        "{header}"
    );
    let mut shown = BufReader::new(tail.stdout.take().unwrap()).lines();
    for i in 0..3 {
        let line = format!("{{\"stream\":\"live-{i}\",\"type\":\"T\"}}\n");
        std::io::Write::write_all(&mut to_writer, line.as_bytes()).unwrap();
        let ack: Value = serde_json::from_str(&acks.next().unwrap().unwrap()).unwrap();
        let event: Value = serde_json::from_str(&shown.next().unwrap().unwrap()).unwrap();
        assert_eq!(event["position"], ack["position"]);
        assert_eq!(event["stream"], format!("live-{i}"));
    }
    drop(to_writer);
    assert!(writer.wait().unwrap().success());
    let interrupted = Command::new("kill")
        .args(["-INT", &tail.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    assert!(tail.wait().unwrap().success());
}

#[test]
fn demo_shows_a_load_resuming_from_a_snapshot_and_verifies_clean() {
    let (_tmp, dir) = store_dir();
    let out = ok(run(&dir, &["demo", "--fsync", "never"]));
    assert!(
        out.contains(
            "cart-7 loaded at version 2050 from the snapshot at version 2000, replayed 50 events"
        ),
        "{out}"
    );
    assert!(out.contains("refused  cart-42  remove cake"), "{out}");
    assert!(
        out.contains("projection cart-activity resumed from its checkpoint: true"),
        "{out}"
    );
    // The store it leaves has snapshots and a projection checkpoint: all of it checks out.
    let verified = ok(run(&dir, &["verify"]));
    assert!(verified.contains("1 snapshot file: ok"), "{verified}");
    fails(&run(&dir, &["demo"]), "fresh directory");
    // What the carts stored reads as the JSON they wrote.
    let history = json_lines(&ok(run(&dir, &["read", "cart-42", "--json"])));
    assert_eq!(history[1]["data"]["type"], "ItemAdded");
    assert_eq!(history[1]["data"]["sku"], "tea");
    assert_eq!(history[1]["data"]["qty"], 2);
    // Timings form a column: every timed line has its time first, right-aligned.
    for line in out
        .lines()
        .filter(|l| l.contains(" µs  ") || l.contains(" ms  "))
    {
        let c: Vec<char> = line.chars().collect();
        assert_eq!((c[8], c[9], c[10]), ('s', ' ', ' '), "{line:?}");
    }
}

#[test]
fn demo_speaks_json_and_keeps_its_temporary_store_only_when_asked() {
    // Without --dir the demo works in a temporary directory of its own.
    let demo = |extra: &[&str]| -> Vec<Value> {
        let o = Command::new(env!("CARGO_BIN_EXE_annal"))
            .args(["demo", "--fsync", "never", "--json"])
            .args(extra)
            .output()
            .unwrap();
        json_lines(&ok(o))
    };
    let dir_of = |facts: &[Value]| PathBuf::from(facts[0]["dir"].as_str().unwrap());
    let gone = demo(&[]);
    assert!(gone.iter().all(|f| f["step"].is_string()), "{gone:?}");
    assert!(gone.iter().any(|f| f["step"] == "command"
        && f["outcome"] == "refused"
        && f["reason"] == "cake is not in the cart"));
    let load = gone.iter().find(|f| f["step"] == "load").unwrap();
    assert_eq!(
        (load["snapshot_version"].as_u64(), load["replayed"].as_u64()),
        (Some(2000), Some(50))
    );
    assert_eq!(gone.last().unwrap()["kept"], false);
    assert!(!dir_of(&gone).exists(), "removed at the end");
    let kept = demo(&["--keep"]);
    let dir = dir_of(&kept);
    assert!(dir.join("0000000001.seg").exists(), "kept");
    ok(run(&dir, &["verify"]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_runs_small() {
    let (tmp, _) = store_dir();
    let args = [
        "bench",
        "--events",
        "300",
        "--streams",
        "7",
        "--batch",
        "10",
        "--payload",
        "64",
        "--json",
    ];
    let report = json_lines(&ok(run(tmp.path(), &args)));
    let r = &report[0];
    assert_eq!(r["events"], 300);
    assert_eq!(r["payload_bytes"], 64);
    assert!(r["append_events_per_second"].as_f64().unwrap() > 0.0);
    assert!(r["bytes_per_event"].as_f64().unwrap() > 64.0);
    let table = ok(run(tmp.path(), &["bench", "--events", "100"]));
    assert!(table.lines().any(|l| l.starts_with("append")), "{table}");
    // One append of 100 events reaches one stream, whatever --streams says.
    assert!(
        table.contains("100 events of 200 bytes over 1 stream, 100 per append"),
        "{table}"
    );
    // The temporary directories it made inside --dir are gone.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// Every file of a store and its bytes, but `LOCK`, which names whoever last held it.
fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with("LOCK"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn repair_cuts_only_when_told_and_quarantines_what_it_cuts() {
    let (_tmp, dir) = store_dir();
    let segments = segmented_store(&dir);
    // Damage in the middle of the log: the second segment's first frame.
    flip_byte(&segments[1], 32 + 8 + 40);
    let before = snapshot_files(&dir);
    let o = run(&dir, &["repair"]);
    fails_with(&o, 3, "damaged");
    let out = stdout(&o);
    assert!(
        out.contains("would cut") && out.contains("--accept-loss"),
        "{out}"
    );
    assert_eq!(
        snapshot_files(&dir),
        before,
        "repair without --accept-loss cut something"
    );
    fails_with(&run(&dir, &["read-all"]), 3, "corruption");

    let o = run(&dir, &["repair", "--accept-loss", "--json"]);
    let report = json_lines(&ok(o));
    let r = &report[0];
    assert_eq!(r["cut_made"], true);
    assert_eq!(r["after"]["health"], "healthy");
    let cut = &r["cut"];
    let first_lost = cut["first_lost"].as_u64().unwrap();
    assert!(first_lost > 1 && first_lost <= 200, "{cut}");
    assert_eq!(cut["last_lost"], 200, "{cut}");
    let quarantine = PathBuf::from(cut["quarantine"].as_str().unwrap());
    assert!(quarantine.starts_with(&dir));
    // Every segment it cut is in the quarantine, byte for byte as it was.
    for seg in &segments[1..] {
        let name = seg.file_name().unwrap();
        let was = before.iter().find(|(p, _)| p == seg).unwrap();
        assert_eq!(std::fs::read(quarantine.join(name)).unwrap(), was.1);
    }
    let text = std::fs::read_to_string(quarantine.join("REPORT.txt")).unwrap();
    assert!(
        text.contains(&format!("lost: positions {first_lost} to 200")),
        "{text}"
    );
    // The store opens, holds exactly the events before the damage, and takes appends.
    let events = json_lines(&ok(run(&dir, &["read-all", "--json"])));
    assert_eq!(events.len() as u64, first_lost - 1);
    ok(run(&dir, &["append", "s-0", "--type", "T", "--data", "{}"]));
    ok(run(&dir, &["verify"]));
}

#[test]
fn a_store_others_can_read_is_opened_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, dir) = small_store();
    ok(run(&dir, &["append", "s", "--type", "T", "--data", "{}"]));
    let quiet = run(&dir, &["stats"]);
    assert!(stderr(&quiet).is_empty(), "{}", stderr(&quiet));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for args in [
        &["stats"][..],
        &["append", "s", "--type", "T", "--data", "{}"],
    ] {
        let o = run(&dir, args);
        assert!(o.status.success());
        assert!(
            stderr(&o).contains("other users can read this store"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn one_id_is_one_event_on_import_and_append() {
    let (_tmp, dir) = small_store();
    let id = "0b3c6e8a-7f4e-4d5a-9b1c-2d3e4f5a6b7c";
    // Three lines with one id: the first is stored, the same event again is a retry, the
    // third, with other data, fails alone.
    let input = [
        format!(r#"{{"stream":"a","type":"T","data":1,"id":"{id}"}}"#),
        format!(r#"{{"stream":"a","type":"T","data":1,"id":"{id}"}}"#),
        format!(r#"{{"stream":"a","type":"T","data":2,"id":"{id}"}}"#),
    ]
    .join("\n");
    let o = run_with(
        &dir,
        &["import", "--batch", "10", "--json"],
        input.as_bytes(),
    );
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    let acks = json_lines(&stdout(&o));
    assert_eq!(acks.len(), 2);
    assert_eq!(
        (acks[0]["position"].as_u64(), acks[0].get("deduplicated")),
        (Some(1), None)
    );
    assert_eq!(
        (
            acks[1]["position"].as_u64(),
            acks[1]["deduplicated"].as_bool()
        ),
        (Some(1), Some(true))
    );
    assert!(
        stderr(&o).contains("names the event at position 1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        json_lines(&ok(run(&dir, &["read", "a", "--json"]))).len(),
        1
    );
    // `append` says so too, in JSON and in its table.
    let again = ok(run(
        &dir,
        &[
            "append", "a", "--type", "T", "--data", "1", "--id", id, "--json",
        ],
    ));
    assert_eq!(json_lines(&again)[0]["deduplicated"], true);
    let table = ok(run(
        &dir,
        &["append", "a", "--type", "T", "--data", "1", "--id", id],
    ));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[0].starts_with("STREAM") && rows[0].contains("POSITION"),
        "{table}"
    );
    assert!(
        rows[1].starts_with("a ") && rows[1].contains(" 1 ") && rows[1].contains("deduplicated"),
        "{table}"
    );
}

#[test]
fn help_about_help_is_help() {
    let (_tmp, dir) = store_dir();
    for args in [&["help", "--help"][..], &["help", "-h"], &["--help"]] {
        let out = ok(run(&dir, args));
        assert!(out.contains("Usage: annal"), "{args:?}: {out}");
    }
}

#[test]
fn writing_commands_take_segment_and_event_sizes() {
    let (_tmp, dir) = store_dir();
    let big = "x".repeat(2000);
    let input: String = (0..100)
        .map(|i| {
            format!(
                "{{\"stream\":\"s\",\"type\":\"T\",\"data\":{{\"i\":{i},\"pad\":\"{big}\"}}}}\n"
            )
        })
        .collect();
    ok(run_with(
        &dir,
        &["import", "--fsync", "never", "--segment-size", "64K"],
        input.as_bytes(),
    ));
    let stats = json_lines(&ok(run(&dir, &["stats", "--json"])));
    assert!(stats[0]["segments"].as_u64().unwrap() >= 3, "{stats:?}");
    // An event larger than --max-event-size fails; a larger limit takes it.
    let line = format!("{{\"stream\":\"s\",\"type\":\"T\",\"data\":\"{big}\"}}\n");
    let o = run_with(&dir, &["import", "--max-event-size", "1K"], line.as_bytes());
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("more than max_event_size 1024"),
        "{}",
        stderr(&o)
    );
    ok(run_with(
        &dir,
        &["import", "--max-event-size", "1M"],
        line.as_bytes(),
    ));
    let o = run(
        &dir,
        &["append", "s", "--type", "T", "--max-event-size", "12Q"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn tables_keep_one_line_per_row_and_a_bounded_width() {
    let (_tmp, dir) = store_dir();
    let long = "L".repeat(1024);
    let input = format!(
        "{{\"stream\":\"two\\nlines\",\"type\":\"T\"}}\n{{\"stream\":\"{long}\",\"type\":\"T\"}}\n{{\"stream\":\"short\",\"type\":\"T\"}}\n"
    );
    ok(run_with(&dir, &["import"], input.as_bytes()));
    let table = ok(run(&dir, &["streams"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three rows: {table}");
    assert!(
        lines.iter().any(|l| l.starts_with("two\\nlines")),
        "{table}"
    );
    assert!(lines.iter().all(|l| l.chars().count() < 100), "{table}");
    // JSON keeps every byte.
    let streams = json_lines(&ok(run(&dir, &["streams", "--json"])));
    assert!(streams.iter().any(|s| s["stream"] == long));
    assert!(streams.iter().any(|s| s["stream"] == "two\nlines"));
}

#[test]
fn writing_commands_create_stores_only_where_nothing_else_lives() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("notes");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("todo.txt"), "milk").unwrap();
    let o = run(&dir, &["append", "s", "--type", "T"]);
    fails(&o, "is not an annal store and not empty (1 file)");
    assert!(!dir.join("STATE").exists(), "nothing was created");
    ok(run(&dir, &["append", "s", "--type", "T", "--create"]));
    // Now it is a store: no --create needed.
    ok(run(&dir, &["append", "s", "--type", "T"]));
    // --dir at a regular file.
    let file = tmp.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    fails(
        &run(&file, &["append", "s", "--type", "T"]),
        "is a file, not a store directory",
    );
}

#[test]
fn read_all_json_imported_into_an_empty_store_is_the_same_store_byte_for_byte() {
    let (_t, dir) = small_store();
    let events: Vec<(&str, EventData)> = vec![
        (
            "cart-1",
            EventData::new("CartCreated", r#"{"customer": "ada"}"#),
        ),
        // Bytes that are JSON only with the space around them trimmed, several lines of
        // JSON, `null`, not JSON at all, and nothing.
        (
            "cart-1",
            EventData::new("T", " [1, 2] ").with_metadata("null"),
        ),
        (
            "cart-2",
            EventData::new("T", "{\n  \"pretty\": true\n}").with_id(7),
        ),
        (
            "cart-2",
            EventData::new("T", "null").with_metadata(r#"{"by":"bob"}"#),
        ),
        (
            "cart-1",
            EventData::new("T", vec![0xff, 0, 1]).with_metadata(vec![0xfe]),
        ),
        ("cart-3", EventData::new("T", "").with_id(u128::MAX)),
        (
            "cart-3",
            EventData::new("T", "{}").with_tags(["course:c1", "student:ü"]),
        ),
    ];
    {
        let store = Store::open(&dir, small_segments()).unwrap();
        for (stream, e) in &events {
            store
                .append(stream, ExpectedVersion::Any, std::slice::from_ref(e))
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        store.close().unwrap();
    }
    let backup = ok(run(&dir, &["read-all", "--json"]));
    let (_t2, copy) = store_dir();
    let o = run_with(&copy, &["import", "--batch", "3"], backup.as_bytes());
    ok(o);
    let all = |dir: &Path| -> Vec<annal::RecordedEvent> {
        let store = Store::open(dir, small_segments().read_only(true)).unwrap();
        let v = store
            .read_all(annal::ReadOptions::forward())
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        store.close().unwrap();
        v
    };
    let (original, restored) = (all(&dir), all(&copy));
    assert_eq!(original.len(), events.len());
    assert_eq!(
        restored, original,
        "every field of every event, timestamps too"
    );
}

#[test]
fn delete_metadata_and_scavenge() {
    let (_tmp, dir) = small_store();
    let input = (0..30)
        .map(|i| {
            let stream = ["keep-1", "gone-1", "trim-1"][i % 3];
            format!(r#"{{"stream":"{stream}","type":"E","data":{{"secret":"S{i:03}-{stream}"}}}}"#)
        })
        .collect::<Vec<_>>()
        .join("\n");
    ok(run_with(
        &dir,
        &["import", "--fsync", "never"],
        input.as_bytes(),
    ));
    // Metadata: none yet, then set and shown, as JSON and as a table.
    let none = json_lines(&ok(run(&dir, &["metadata", "trim-1", "--json"])));
    assert_eq!(none[0]["version"], Value::Null);
    let set = json_lines(&ok(run(
        &dir,
        &[
            "metadata",
            "trim-1",
            "--set",
            r#"{"max_count":3,"max_age":86400.5,"custom":"owner=ops"}"#,
            "--expected-version",
            "no-stream",
            "--json",
        ],
    )));
    assert_eq!(set[0]["version"], 1);
    assert_eq!(set[0]["max_count"], 3);
    assert_eq!(set[0]["max_age"], 86400.5);
    assert_eq!(set[0]["custom"], "owner=ops");
    let table = ok(run(&dir, &["metadata", "trim-1"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("max_count") && l.ends_with(" 3")),
        "{table}"
    );
    let stale = run(
        &dir,
        &[
            "metadata",
            "trim-1",
            "--set",
            "{}",
            "--expected-version",
            "no-stream",
        ],
    );
    fails_with(&stale, 5, "expected");
    fails(
        &run(
            &dir,
            &["metadata", "trim-1", "--set", r#"{"max_count":"x"}"#],
        ),
        "--set",
    );
    fails(
        &run(
            &dir,
            &["metadata", "trim-1", "--set", r#"{"deleted":true}"#],
        ),
        "annal delete",
    );
    let trimmed = json_lines(&ok(run(&dir, &["read", "trim-1", "--json"])));
    assert_eq!(
        trimmed
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [8, 9, 10]
    );

    // A hard delete: a tombstone, then refused appends with their own exit status.
    let wrong = run(
        &dir,
        &["delete", "gone-1", "--hard", "--expected-version", "3"],
    );
    fails_with(&wrong, 5, "expected");
    let deleted = json_lines(&ok(run(
        &dir,
        &[
            "delete",
            "gone-1",
            "--hard",
            "--expected-version",
            "10",
            "--json",
        ],
    )));
    assert_eq!(deleted[0]["version"], 10);
    assert_eq!(deleted[0]["hard"], true);
    let refused = run(&dir, &["append", "gone-1", "--type", "E", "--data", "{}"]);
    fails_with(&refused, 9, "deleted");
    assert!(json_lines(&ok(run(&dir, &["read", "gone-1", "--json"]))).is_empty());
    let shown = json_lines(&ok(run(&dir, &["metadata", "gone-1", "--json"])));
    assert_eq!(shown[0]["deleted"], true);

    // stats says what a scavenge would erase; scavenge erases it, and the bytes are gone.
    let stats = json_lines(&ok(run(&dir, &["stats", "--json"])));
    assert_eq!(stats[0]["reclaimable_events"], 10 + 7);
    assert!(stats[0]["reclaimable_bytes"].as_u64().unwrap() > 17 * 40);
    let report = json_lines(&ok(run(&dir, &["scavenge", "--json"])));
    assert_eq!(report[0]["events_erased"], 17);
    assert!(report[0]["segments_rewritten"].as_u64().unwrap() >= 1);
    let stats = json_lines(&ok(run(&dir, &["stats", "--json"])));
    assert_eq!(stats[0]["reclaimable_events"], 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes
                .windows(10)
                .any(|w| w.ends_with(b"-gone-1") && w[0] == b'S')
        );
    }
    let kept = json_lines(&ok(run(&dir, &["read-all", "--json"])));
    assert_eq!(kept.len(), 10 + 3);
    let again = ok(run(&dir, &["scavenge"]));
    assert!(again.contains("0 events erased"), "{again}");
    // A soft delete: empty, and appends continue.
    ok(run(&dir, &["delete", "keep-1"]));
    assert!(json_lines(&ok(run(&dir, &["read", "keep-1", "--json"]))).is_empty());
    let next = json_lines(&ok(run(
        &dir,
        &["append", "keep-1", "--type", "E", "--data", "{}", "--json"],
    )));
    assert_eq!(next[0]["version"], 11);
}
