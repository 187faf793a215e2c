//! A scavenge crashed at every operation that changes the disk: afterwards every live event
//! is there exactly once, byte for byte at its position, and once a scavenge runs to its end,
//! no byte of a scavenged event is left in any file.
//!
//! `ANNAL_SCAVENGE_SEEDS=N` runs N workloads (default 8, on two threads), each crashed at
//! every step of its scavenge (about 90 of them); `ANNAL_SCAVENGE_SEED=S` replays one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]

use std::path::Path;
use std::sync::Arc;

use annal::storage::{SimDisk, Storage};
use annal::{
    DeleteMode, EventData, ExpectedVersion, FsyncPolicy, Health, Options, ReadOptions, Store,
    StreamMetadata, Transaction,
};

const DIR: &str = "/sim/store";

/// Stream, version, position, id, timestamp, payload, metadata and tags of a live event.
type Fingerprint = (
    String,
    u64,
    u64,
    Option<u128>,
    u64,
    Vec<u8>,
    Vec<u8>,
    Vec<String>,
);

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

fn open(disk: &SimDisk, opts: &Options) -> annal::Result<Store> {
    Store::open_with_storage(Arc::new(disk.clone()), DIR, opts.clone())
}

/// A store on a fresh disk, written by the workload of `seed`, with metadata that leaves some
/// events dead; returns it with its options, the markers of the dead events' bytes, and how
/// many events die.
fn workload(seed: u64) -> (SimDisk, Store, Options, Vec<String>) {
    let mut rng = Rng(seed);
    let disk = SimDisk::new(seed ^ 0xC0FFEE);
    let opts = Options {
        fsync: if rng.below(2) == 0 {
            FsyncPolicy::Always
        } else {
            FsyncPolicy::Never
        },
        segment_size: 1024 + rng.below(6000),
        index_checkpoints: rng.below(3) != 0,
        snapshot_every: 0,
        ..Options::default()
    };
    let store = open(&disk, &opts).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let hour = 3_600_000_000;
    let mut n = 0u64;
    let mut event = |rng: &mut Rng, stream: usize| {
        n += 1;
        let mut e = EventData::new(
            format!("T{}", rng.below(3)),
            format!("EV{n:05}S{stream}-{}", "p".repeat(rng.below(300) as usize)),
        )
        .with_metadata(format!("MD{n:05}S{stream}"))
        .with_tags([format!("TG{n:05}S{stream}"), "common".to_string()]);
        if rng.below(2) == 0 {
            e = e.with_id(u128::from(n));
        }
        if stream == 4 {
            // Old and new events for the stream with a max_age.
            e = e.with_timestamp(now - rng.below(4) * hour);
        }
        e
    };
    let appends = 40 + rng.below(60);
    for _ in 0..appends {
        let s = rng.below(6) as usize;
        if rng.below(8) == 0 {
            let t = (s + 1 + rng.below(5) as usize) % 6;
            store
                .commit(
                    Transaction::new()
                        .append(format!("s-{s}"), ExpectedVersion::Any, [event(&mut rng, s)])
                        .append(format!("s-{t}"), ExpectedVersion::Any, [event(&mut rng, t)]),
                )
                .unwrap();
        } else {
            let k = 1 + rng.below(3);
            let events: Vec<EventData> = (0..k).map(|_| event(&mut rng, s)).collect();
            store
                .append(&format!("s-{s}"), ExpectedVersion::Any, &events)
                .unwrap();
        }
    }
    store.save_snapshot("s-3", "fw", 1, "SNAPSECRET").unwrap();
    let meta = |s: &str, m: StreamMetadata| {
        store
            .set_stream_metadata(s, ExpectedVersion::Any, m)
            .unwrap();
    };
    meta("s-0", StreamMetadata::new().max_count(1 + rng.below(4)));
    meta(
        "s-1",
        StreamMetadata::new().truncate_before(1 + rng.below(8)),
    );
    store
        .delete_stream("s-2", ExpectedVersion::Any, DeleteMode::Soft)
        .unwrap();
    meta(
        "s-3",
        StreamMetadata::new().custom(b"CUSTOMSECRET".to_vec()),
    );
    store
        .delete_stream("s-3", ExpectedVersion::Any, DeleteMode::Hard)
        .unwrap();
    meta(
        "s-4",
        StreamMetadata::new().max_age(std::time::Duration::from_secs(2 * 3600 + 60)),
    );
    store.sync().unwrap();
    // The markers of every dead event (its payload, metadata and tag): written, not read back.
    let live: std::collections::HashSet<String> = fingerprints(&store)
        .iter()
        .map(|f| String::from_utf8_lossy(f.5.get(2..7).unwrap_or_default()).into_owned())
        .collect();
    let mut dead = vec!["SNAPSECRET".to_string(), "CUSTOMSECRET".to_string()];
    for i in 1..=n {
        if !live.contains(&format!("{i:05}")) {
            dead.extend(["EV", "MD", "TG"].map(|m| format!("{m}{i:05}")));
        }
    }
    assert!(!live.is_empty());
    (disk, store, opts, dead)
}

/// Every live event: the whole log in both directions (which must agree) and each stream.
fn fingerprints(store: &Store) -> Vec<Fingerprint> {
    let of = |e: annal::RecordedEvent| -> Fingerprint {
        (
            e.stream.to_string(),
            e.version,
            e.position,
            e.id,
            e.timestamp,
            e.payload.to_vec(),
            e.metadata.to_vec(),
            e.tags.to_vec(),
        )
    };
    let forward: Vec<Fingerprint> = store
        .read_all(ReadOptions::forward())
        .unwrap()
        .map(|e| of(e.unwrap()))
        .collect();
    let mut backward: Vec<Fingerprint> = store
        .read_all(ReadOptions::backward())
        .unwrap()
        .map(|e| of(e.unwrap()))
        .collect();
    backward.reverse();
    assert_eq!(forward, backward, "$all forward and backward disagree");
    let mut by_stream: Vec<Fingerprint> = (0..6)
        .flat_map(|s| {
            store
                .read_stream(&format!("s-{s}"), ReadOptions::forward())
                .unwrap()
                .map(|e| of(e.unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    by_stream.sort_by_key(|f| f.2);
    assert_eq!(forward, by_stream, "$all and the streams disagree");
    forward
}

/// Files of the simulated disk that hold any of `markers` (each `EV`, `MD` or `TG` and five
/// digits, or a longer word).
fn holding(disk: &SimDisk, markers: &[String]) -> Vec<(String, String)> {
    let (short, long): (Vec<&String>, Vec<&String>) = markers.iter().partition(|m| m.len() == 7);
    let short: std::collections::HashSet<&[u8]> = short.iter().map(|m| m.as_bytes()).collect();
    let mut found = Vec::new();
    for path in disk.paths() {
        let bytes = disk.contents(&path).unwrap_or_default();
        let name = path.display().to_string();
        for w in bytes.windows(7) {
            if matches!(w[0], b'E' | b'M' | b'T') && short.contains(w) {
                found.push((name.clone(), String::from_utf8_lossy(w).into_owned()));
            }
        }
        for m in &long {
            if bytes.windows(m.len()).any(|w| w == m.as_bytes()) {
                found.push((name.clone(), (*m).clone()));
            }
        }
    }
    found
}

fn check_seed(seed: u64) {
    let (_, _, _, dead) = workload(seed);
    let mut step = 1;
    loop {
        let (disk, store, opts, _) = workload(seed);
        let live = fingerprints(&store);
        let before = disk.changes();
        disk.halt_after(step);
        let result = store.scavenge();
        let reached = disk.changes() >= before + step;
        drop(store);
        let disk = disk.crash();
        let ctx = format!("seed {seed}, crashed at change {step} of the scavenge");
        let store = open(&disk, &opts).unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
        assert_eq!(fingerprints(&store), live, "{ctx}: live events changed");
        let report = annal::verify(&disk, Path::new(DIR)).unwrap();
        assert_ne!(report.health(), Health::Damaged, "{ctx}: {report:?}");
        // Run again to its end: then nothing dead is left anywhere.
        store
            .scavenge()
            .unwrap_or_else(|e| panic!("{ctx}: the resumed scavenge failed: {e}"));
        assert_eq!(
            fingerprints(&store),
            live,
            "{ctx}: after the resumed scavenge"
        );
        store.close().unwrap();
        let left = holding(&disk, &dead);
        assert!(left.is_empty(), "{ctx}: still on disk: {left:?}");
        let store = open(&disk, &opts).unwrap();
        assert_eq!(fingerprints(&store), live, "{ctx}: after a reopen");
        let report = annal::verify(&disk, Path::new(DIR)).unwrap();
        assert_eq!(report.health(), Health::Healthy, "{ctx}: {report:?}");
        drop(store);
        if !reached {
            // The scavenge ended before the halt: every step of it was crashed at.
            assert!(result.is_ok(), "{ctx}: {result:?}");
            assert!(step > 5, "seed {seed}: a scavenge of only {step} steps");
            break;
        }
        step += 1;
    }
}

#[test]
fn a_scavenge_crashed_at_every_step_loses_no_live_event_and_leaves_nothing_dead() {
    let seeds: Vec<u64> = match std::env::var("ANNAL_SCAVENGE_SEED") {
        Ok(s) => vec![s.parse().expect("ANNAL_SCAVENGE_SEED must be a number")],
        Err(_) => {
            let n = std::env::var("ANNAL_SCAVENGE_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(8u64);
            (0..n).collect()
        }
    };
    let (even, odd): (Vec<u64>, Vec<u64>) = seeds.iter().partition(|&&s| s % 2 == 0);
    std::thread::scope(|scope| {
        for half in [even, odd] {
            scope.spawn(move || half.into_iter().for_each(check_seed));
        }
    });
}

/// Scavenged events are erased; with nothing dead, a scavenge changes nothing but the seal of
/// the active segment.
#[test]
fn the_workload_has_dead_events_and_a_scavenge_erases_them() {
    let (disk, store, _, dead) = workload(7);
    assert!(dead.len() > 10, "{dead:?}");
    assert!(!holding(&disk, &dead).is_empty());
    let r = store.scavenge().unwrap();
    assert!(r.events_erased > 0, "{r:?}");
    assert!(holding(&disk, &dead).is_empty());
    let _ = Storage::list(&disk, Path::new(DIR)).unwrap();
}
