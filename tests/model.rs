//! Property test: random appends over many streams with random expected versions (and
//! retries with ids), checked against a plain in-memory model on every read, across reopens.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use std::collections::HashMap;

use annal::{Error, EventData, ExpectedVersion, ReadOptions, Store};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u8,
        expected: u8,
        offset: i8,
        batch: u8,
        with_ids: bool,
    },
    /// Repeat an earlier append exactly (a client retry).
    Retry(usize),
    Reopen,
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..6, 0u8..4, -2i8..2, 1u8..5, any::<bool>()).prop_map(|(stream, expected, offset, batch, with_ids)| Op::Append { stream, expected, offset, batch, with_ids }),
        2 => any::<usize>().prop_map(Op::Retry),
        1 => Just(Op::Reopen),
        1 => Just(Op::Sync),
    ]
}

#[derive(Default)]
struct Model {
    /// Event at position i+1: (stream, payload, id).
    log: Vec<(String, Vec<u8>, Option<u128>)>,
    streams: HashMap<String, Vec<u64>>,
}

impl Model {
    fn version(&self, s: &str) -> Option<u64> {
        self.streams
            .get(s)
            .map(|v| v.len() as u64)
            .filter(|&v| v > 0)
    }

    /// The same rules as the store: retries by id, then the expected-version check.
    fn append(
        &mut self,
        s: &str,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<(u64, u64), ()> {
        let current = self.version(s);
        let ids: Option<Vec<u128>> = events.iter().map(|e| e.id).collect();
        if let (Some(ids), Some(cur)) = (ids, current) {
            let n = ids.len() as u64;
            let after = match expected {
                ExpectedVersion::Exact(v) if v < cur => Some(v),
                ExpectedVersion::NoStream => Some(0),
                ExpectedVersion::Any | ExpectedVersion::StreamExists => cur.checked_sub(n),
                ExpectedVersion::Exact(_) => None,
            };
            if let Some(after) = after.filter(|a| a + n <= cur) {
                let positions = &self.streams[s][after as usize..(after + n) as usize];
                if positions
                    .iter()
                    .zip(&ids)
                    .all(|(&p, &id)| self.log[p as usize - 1].2 == Some(id))
                {
                    return Ok((positions[0], after + 1));
                }
            }
        }
        if !expected.matches(current) {
            return Err(());
        }
        let first = self.log.len() as u64 + 1;
        for e in events {
            self.log.push((s.to_string(), e.payload.to_vec(), e.id));
            let p = self.log.len() as u64;
            self.streams.entry(s.to_string()).or_default().push(p);
        }
        Ok((first, current.unwrap_or(0) + 1))
    }

    fn check(&self, store: &Store) {
        let all: Vec<_> = store
            .read_all(ReadOptions::forward())
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(all.len(), self.log.len());
        for (e, (s, p, id)) in all.iter().zip(&self.log) {
            assert_eq!(
                (e.stream.as_ref(), e.payload.as_ref(), e.id),
                (s.as_str(), p.as_slice(), *id)
            );
        }
        for (s, positions) in &self.streams {
            assert_eq!(
                store.stream_version(s).unwrap(),
                Some(positions.len() as u64)
            );
            let got: Vec<u64> = store
                .read_stream(s, ReadOptions::forward())
                .unwrap()
                .map(|e| e.unwrap().position)
                .collect();
            assert_eq!(&got, positions);
            let back: Vec<u64> = store
                .read_stream(s, ReadOptions::backward().limit(3))
                .unwrap()
                .map(|e| e.unwrap().position)
                .collect();
            assert_eq!(
                back,
                positions.iter().rev().take(3).copied().collect::<Vec<_>>()
            );
        }
        if let Some(mid) = (self.log.len() as u64).checked_div(2).filter(|&m| m > 0) {
            let back: Vec<u64> = store
                .read_all(ReadOptions::backward_from(mid).limit(5))
                .unwrap()
                .map(|e| e.unwrap().position)
                .collect();
            assert_eq!(
                back,
                (mid.saturating_sub(4).max(1)..=mid)
                    .rev()
                    .collect::<Vec<_>>()
            );
        }
        assert_eq!(store.stats().unwrap().streams as usize, self.streams.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_a_model(ops in prop::collection::vec(op(), 1..120), segment_size in 300u64..3000, checkpoints: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let opts = common::tiny(segment_size).index_checkpoints(checkpoints);
        let mut store = Store::open(tmp.path(), opts.clone()).unwrap();
        let mut model = Model::default();
        let mut history: Vec<(String, ExpectedVersion, Vec<EventData>)> = Vec::new();
        let mut next_id = 1u128;
        for op in ops {
            let (s, expected, events) = match op {
                Op::Reopen => {
                    drop(store);
                    store = Store::open(tmp.path(), opts.clone()).unwrap();
                    model.check(&store);
                    continue;
                }
                Op::Sync => {
                    store.sync().unwrap();
                    continue;
                }
                Op::Retry(i) if !history.is_empty() => history[i % history.len()].clone(),
                Op::Retry(_) => continue,
                Op::Append { stream, expected, offset, batch, with_ids } => {
                    let s = format!("s-{stream}");
                    let cur = model.version(&s).unwrap_or(0);
                    let expected = match expected {
                        0 => ExpectedVersion::Any,
                        1 => ExpectedVersion::NoStream,
                        2 => ExpectedVersion::StreamExists,
                        _ => ExpectedVersion::Exact(cur.saturating_add_signed(offset.into())),
                    };
                    let events: Vec<EventData> = (0..batch).map(|_| {
                        next_id += 1;
                        let e = EventData::new("E", next_id.to_le_bytes().to_vec());
                        if with_ids { e.with_id(next_id) } else { e }
                    }).collect();
                    (s, expected, events)
                }
            };
            let want = model.append(&s, expected, &events);
            let got = store.append(&s, expected, &events);
            match (want, got) {
                (Ok((p, v)), Ok(r)) => {
                    prop_assert_eq!((r.first_position, r.first_version), (p, v));
                    prop_assert_eq!(r.last_version - r.first_version + 1, events.len() as u64);
                }
                (Err(()), Err(Error::WrongExpectedVersion { .. })) => {}
                (w, g) => prop_assert!(false, "model {:?} store {:?}", w, g),
            }
            history.push((s, expected, events));
            if history.len().is_multiple_of(16) {
                model.check(&store);
            }
        }
        model.check(&store);
        drop(store);
        let store = Store::open(tmp.path(), opts).unwrap();
        model.check(&store);
    }
}
