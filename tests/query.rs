//! Reads by query, category and event type, against a naive scan of the whole log: random
//! tags, types, streams and positions, with reopens in between (so the index is rebuilt from
//! checkpoints and scans), forward and backward, from any position, with limits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a test's failure is a panic, and its sizes are small"
)]
mod common;

use annal::{EventData, ExpectedVersion, Query, QueryItem, ReadOptions, RecordedEvent, Store};
use proptest::prelude::*;

const TYPES: [&str; 3] = ["A", "B", "C"];
const TAGS: [&str; 5] = ["t0", "t1", "t2", "t3", "t4"];
const STREAMS: [&str; 4] = ["cart-1", "cart-2", "order-1", "misc"];

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        events: Vec<(usize, Vec<usize>)>,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        9 => (
            0..STREAMS.len(),
            prop::collection::vec((0..TYPES.len(), prop::collection::vec(0..TAGS.len(), 0..3)), 1..8)
        )
            .prop_map(|(stream, events)| Op::Append { stream, events }),
        1 => Just(Op::Reopen),
    ]
}

fn item() -> impl Strategy<Value = QueryItem> {
    (
        prop::collection::vec(0..TYPES.len(), 0..3),
        prop::collection::vec(0..TAGS.len(), 0..3),
    )
        .prop_map(|(types, tags)| {
            QueryItem::new()
                .types(types.into_iter().map(|t| TYPES[t]))
                .tags(tags.into_iter().map(|t| TAGS[t]))
        })
}

fn read_opts() -> impl Strategy<Value = ReadOptions> {
    (
        any::<bool>(),
        0u64..80,
        prop_oneof![Just(u64::MAX), 0u64..10],
    )
        .prop_map(|(forward, from, limit)| {
            let o = if forward {
                ReadOptions::forward_from(from)
            } else if from == 0 {
                ReadOptions::backward()
            } else {
                ReadOptions::backward_from(from)
            };
            o.limit(limit)
        })
}

/// What a naive scan of the whole log says the read returns.
fn naive(all: &[RecordedEvent], keep: impl Fn(&RecordedEvent) -> bool, o: ReadOptions) -> Vec<u64> {
    let mut v: Vec<u64> = all.iter().filter(|e| keep(e)).map(|e| e.position).collect();
    match o.direction {
        annal::Direction::Forward => v.retain(|&p| p >= o.from),
        annal::Direction::Backward => {
            v.retain(|&p| p <= o.from);
            v.reverse();
        }
    }
    v.truncate(usize::try_from(o.limit).unwrap_or(usize::MAX));
    v
}

fn positions(events: annal::QueryEvents) -> Vec<u64> {
    events.map(|e| e.unwrap().position).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn reads_by_query_category_and_type_agree_with_a_scan(
        ops in prop::collection::vec(op(), 1..200),
        queries in prop::collection::vec((prop::collection::vec(item(), 0..3), read_opts()), 1..6),
        segment_size in 400u64..3000,
        // Without the query index the same reads are a filtered scan: the same answers.
        indexed in prop::bool::weighted(0.8),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let opts = common::tiny(segment_size).query_index(indexed);
        let mut store = Store::open(tmp.path(), opts.clone()).unwrap();
        let check = |store: &Store| {
            let all: Vec<RecordedEvent> = store
                .read_all(ReadOptions::forward())
                .unwrap()
                .map(|e| e.unwrap())
                .collect();
            for (items, o) in &queries {
                let q = Query::items(items.clone());
                let got = positions(store.read_query(&q, *o).unwrap());
                let want = naive(&all, |e| q.matches_event(e), *o);
                prop_assert_eq!(got, want, "{:?} {:?}", q, o);
            }
            let o = queries[0].1;
            for c in ["cart", "order", "misc"] {
                let got = positions(store.read_category(c, o).unwrap());
                let want = naive(&all, |e| e.stream.split_once('-').is_some_and(|(k, _)| k == c), o);
                prop_assert_eq!(got, want, "category {}", c);
            }
            for t in TYPES {
                let got = positions(store.read_event_type(t, o).unwrap());
                prop_assert_eq!(got, naive(&all, |e| e.event_type == t, o), "type {}", t);
            }
            // Whole events, not just positions: what a query returns is what read_all has.
            let q = Query::items([QueryItem::new().tags(["t0"])]);
            for o in [ReadOptions::forward(), ReadOptions::backward()] {
                for e in store.read_query(&q, o).unwrap() {
                    let e = e.unwrap();
                    prop_assert_eq!(&e, &all[e.position as usize - 1]);
                }
            }
            // Append conditions against the same scan: a condition fails exactly when an
            // event its query selects comes after its position, and names the first. (Each
            // commit that passes appends an event, of a type no query names.)
            if indexed && !store.options().read_only {
                let mut all = all;
                for (items, _) in &queries {
                    let q = Query::items(items.clone());
                    for k in 0..4u64 {
                        let last = all.len() as u64;
                        let after = [0, last / 2, last.saturating_sub(1), last][k as usize];
                        let first = all
                            .iter()
                            .find(|e| e.position > after && q.matches_event(e))
                            .map(|e| e.position);
                        let tx = annal::Transaction::new()
                            .append("cond-x", ExpectedVersion::Any, [EventData::new("Cond", "c")])
                            .condition(annal::AppendCondition::new(q.clone()).after(after));
                        match (store.commit(tx), first) {
                            (Ok(r), None) => {
                                prop_assert_eq!(r.first_position, last + 1);
                                all.extend(
                                    store
                                        .read_all(ReadOptions::forward_from(last + 1))
                                        .unwrap()
                                        .map(|e| e.unwrap()),
                                );
                            }
                            (Err(annal::Error::AppendConditionFailed { position, .. }), Some(p)) => {
                                prop_assert_eq!(position, p, "{:?} after {}", q, after)
                            }
                            (got, want) => prop_assert!(
                                false,
                                "{:?} after {}: {:?}, the scan says {:?}",
                                q,
                                after,
                                got,
                                want
                            ),
                        }
                    }
                }
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Append { stream, events } => {
                    let events: Vec<EventData> = events
                        .into_iter()
                        .map(|(t, tags)| {
                            EventData::new(TYPES[t], "x").with_tags(tags.into_iter().map(|i| TAGS[i]))
                        })
                        .collect();
                    store.append(STREAMS[stream], ExpectedVersion::Any, &events).unwrap();
                }
                Op::Reopen => {
                    check(&store)?;
                    store.close().unwrap();
                    store = Store::open(tmp.path(), opts.clone()).unwrap();
                }
            }
        }
        check(&store)?;
        store.close().unwrap();
        // Once more from checkpoints written in the background, and read-only.
        let store = Store::open(tmp.path(), opts.clone().read_only(true)).unwrap();
        check(&store)?;
    }
}

#[test]
fn the_query_index_costs_at_most_eight_bytes_per_tag_and_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(1 << 20)).unwrap();
    for i in 0..5000u64 {
        let e = EventData::new("T", "x").with_tags([format!("course:c{}", i % 10), "all".into()]);
        store
            .append(&format!("s-{}", i % 7), ExpectedVersion::Any, &[e])
            .unwrap();
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.tag_postings, 10_000);
    let per_pair = stats.tag_index_bytes as f64 / stats.tag_postings as f64;
    // 4 bytes a location, plus the vectors' spare capacity (at most doubling), the runs of
    // each list and 11 keys.
    assert!(
        (4.0..=8.0).contains(&per_pair),
        "{per_pair} bytes per (event, tag)"
    );
    assert!(stats.index_memory_bytes > stats.tag_index_bytes);
}

#[test]
fn a_query_subscription_catches_up_then_follows_live_with_nothing_missed_or_repeated() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(4096)).unwrap();
    let event = |i: u64| {
        EventData::new(
            if i.is_multiple_of(3) {
                "Wanted"
            } else {
                "Other"
            },
            format!("{i}"),
        )
        .with_tags([format!("k{}", i % 2)])
    };
    for i in 1..=300 {
        store
            .append(&format!("s-{}", i % 5), ExpectedVersion::Any, &[event(i)])
            .unwrap();
    }
    let q = Query::items([QueryItem::new().types(["Wanted"]).tags(["k1"])]);
    let wanted = |i: u64| i.is_multiple_of(3) && i % 2 == 1;
    let mut sub = store.subscribe_query(q.clone(), 1).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 301..=900 {
                store
                    .append(&format!("s-{}", i % 5), ExpectedVersion::Any, &[event(i)])
                    .unwrap();
            }
        });
        let want: Vec<u64> = (1..=900).filter(|&i| wanted(i)).collect();
        let mut got = Vec::new();
        while got.len() < want.len() {
            let e = sub
                .next_timeout(std::time::Duration::from_secs(20))
                .unwrap()
                .expect("an event within the time");
            assert!(q.matches_event(&e));
            got.push(e.position);
        }
        assert_eq!(got, want);
    });
    assert!(sub.try_next().unwrap().is_none());

    // A durable subscription narrowed by the query resumes after its ack.
    let mut d = store
        .durable_subscription("wanted")
        .unwrap()
        .query(q.clone());
    let first = d.next_timeout(std::time::Duration::ZERO).unwrap().unwrap();
    assert_eq!(first.position, 3);
    d.ack(first.position).unwrap();
    drop(d);
    let mut d = store.durable_subscription("wanted").unwrap().query(q);
    assert_eq!(
        d.next_timeout(std::time::Duration::ZERO)
            .unwrap()
            .unwrap()
            .position,
        9
    );
}

#[test]
fn a_projection_with_a_query_folds_only_what_it_selects() {
    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Seen(Vec<u64>);
    impl annal::Projection for Seen {
        const NAME: &'static str = "seen";
        fn apply(&mut self, e: &RecordedEvent) {
            self.0.push(e.position);
        }
        fn query() -> Query {
            Query::items([QueryItem::new().tags(["course:c1"])])
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(4096)).unwrap();
    for i in 1..=20u64 {
        let tag = if i.is_multiple_of(4) {
            "course:c1"
        } else {
            "course:c2"
        };
        store
            .append(
                "s-1",
                ExpectedVersion::Any,
                &[EventData::new("T", "x").with_tags([tag])],
            )
            .unwrap();
    }
    let mut p = store.projection::<Seen>().unwrap();
    assert_eq!(p.catch_up().unwrap(), 5);
    assert_eq!(p.state().0, [4, 8, 12, 16, 20]);
    assert_eq!(p.position(), 20);
}

#[test]
fn rare_matches_among_long_lists_come_back_whole_across_many_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), common::tiny(1 << 22)).unwrap();
    // Two tags of 70,000 events each, more than a batch examines at once, that meet on
    // three events only; and a type on a handful.
    let n = 140_000u64;
    for chunk in 0..n / 1000 {
        let events: Vec<EventData> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| {
                let mut tags = vec![if i % 2 == 0 { "a" } else { "b" }];
                if i % 50_000 == 1 {
                    tags.push("a");
                }
                let t = if i % 30_001 == 7 { "Rare" } else { "Common" };
                EventData::new(t, "x").with_tags(tags)
            })
            .collect();
        store.append("s-1", ExpectedVersion::Any, &events).unwrap();
    }
    let both = Query::items([QueryItem::new().tags(["a", "b"])]);
    let want: Vec<u64> = vec![2, 50_002, 100_002];
    assert_eq!(
        positions(store.read_query(&both, ReadOptions::forward()).unwrap()),
        want
    );
    let back: Vec<u64> = want.iter().rev().copied().collect();
    assert_eq!(
        positions(store.read_query(&both, ReadOptions::backward()).unwrap()),
        back
    );
    assert_eq!(
        positions(
            store
                .read_query(&both, ReadOptions::forward_from(3).limit(1))
                .unwrap()
        ),
        [50_002]
    );
    // Types and tags: the few events of the type are walked, not the long tag list.
    let rare = Query::items([QueryItem::new().types(["Rare"]).tags(["b"])]);
    let want: Vec<u64> = (0..n)
        .filter(|i| i % 30_001 == 7 && i % 2 == 1)
        .map(|i| i + 1)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(
        positions(store.read_query(&rare, ReadOptions::forward()).unwrap()),
        want
    );
}

#[test]
fn without_the_query_index_reads_and_subscriptions_scan_and_conditions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let with = |on: bool| {
        let dir = tmp.path().join(format!("{on}"));
        let store = Store::open(&dir, common::tiny(1 << 20).query_index(on)).unwrap();
        for i in 0..3000u64 {
            let e = EventData::new("T", "x").with_tags([format!("k{}", i % 3)]);
            store
                .append(&format!("s-{}", i % 5), ExpectedVersion::Any, &[e])
                .unwrap();
        }
        store
    };
    let (on, off) = (with(true), with(false));
    assert!(off.stats().unwrap().index_memory_bytes < on.stats().unwrap().index_memory_bytes);
    assert_eq!(off.stats().unwrap().tag_postings, 0);
    let q = Query::items([QueryItem::new().tags(["k1"])]);
    let read = |s: &Store| positions(s.read_query(&q, ReadOptions::backward().limit(7)).unwrap());
    assert_eq!(read(&off), read(&on));
    let mut sub = off.subscribe_query(q.clone(), 1).unwrap();
    assert_eq!(sub.try_next().unwrap().unwrap().position, 2);
    let tx = annal::Transaction::new()
        .append("s-1", ExpectedVersion::Any, [EventData::new("T", "x")])
        .condition(annal::AppendCondition::new(q).after(1));
    let refused = off.commit(tx).unwrap_err();
    assert!(
        refused.to_string().contains("query index is off"),
        "{refused}"
    );
}
