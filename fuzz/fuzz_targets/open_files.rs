//! Arbitrary bytes as a store's files (segments, index checkpoint, snapshots, `STATE`, a
//! durable subscription, a projection checkpoint): opening and reading everything must never
//! panic, hang or allocate without bound, and whatever is returned must be well-formed (dense
//! positions and versions).
//!
//! Input: records of `kind: u8, len: u16 (LE), bytes`, each becoming one file.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use annal::storage::{SimDisk, Storage};
use annal::{Options, Projection, ReadOptions, RecordedEvent, Store};
use libfuzzer_sys::fuzz_target;

const DIR: &str = "/f";
const NAMES: [&str; 8] = [
    "0000000001.seg",
    "0000000002.seg",
    "0000000001.idx",
    "0000000001.snap",
    "STATE",
    "relay.sub",
    "count.proj",
    "0000000002.idx",
];

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Count(u64);

impl Projection for Count {
    const NAME: &'static str = "count";
    fn apply(&mut self, _: &RecordedEvent) {
        self.0 += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let disk = SimDisk::new(1);
    let dir = Path::new(DIR);
    let _ = disk.create_dir_all(dir);
    let mut rest = data;
    while let [kind, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        let path = dir.join(NAMES[usize::from(*kind) % NAMES.len()]);
        if let Ok(f) = disk.create(&path) {
            let _ = f.write_all_at(bytes, 0);
            let _ = f.sync_data();
        }
        rest = next;
    }
    let _ = disk.sync_dir(dir);
    // verify reads anything without a panic, and agrees with a writable open on damage.
    let checked = annal::verify(&disk, DIR);
    for checkpoints in [true, false] {
        // Small segments: a fresh store preallocates one, and the fuzzer wants many runs a second.
        let opts = Options { index_checkpoints: checkpoints, segment_size: 4096, ..Options::default() };
        let Ok(store) = Store::open_with_storage(Arc::new(disk.clone()), DIR, opts) else {
            continue;
        };
        if !checkpoints && let Ok(r) = &checked {
            // Without checkpoints an open scans every segment, as verify does.
            assert_ne!(r.health(), annal::Health::Damaged, "verify found damage the open accepted: {:?}", r.findings);
        }
        let mut expected = 1;
        if let Ok(all) = store.read_all(ReadOptions::forward()) {
            for e in all.flatten() {
                assert_eq!(e.position, expected, "positions are dense");
                expected += 1;
            }
        }
        if let Ok(streams) = store.streams() {
            for s in streams {
                if let Ok(events) = store.read_stream(&s.name, ReadOptions::backward()) {
                    for (i, e) in events.flatten().enumerate() {
                        assert_eq!(e.version, s.version - i as u64, "versions are dense");
                    }
                }
            }
        }
        let _ = store.stats();
        let _ = store.durable_subscriptions();
        if let Ok(mut p) = store.projection::<Count>() {
            let _ = p.catch_up();
        }
        drop(store);
    }
});
