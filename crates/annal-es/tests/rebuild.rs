//! When annal-es has cqrs-es rebuild an aggregate from its events instead of trusting a
//! snapshot: events stored at an older `event_version` that an upcaster changes, events
//! migrated in without a snapshot, a snapshot record this version cannot read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use annal_es::AnnalEventRepository;
use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, SemanticVersionEventUpcaster, SerializedEvent,
};
use cqrs_es::{Aggregate, AggregateContext, DomainEvent, EventStore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Account {
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: u64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        "Deposited".into()
    }
    /// 2.0: the amount in cents; 1.0 stored dollars.
    fn event_version(&self) -> String {
        "2.0".into()
    }
}

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for Refused {}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = u64;
    type Event = AccountEvent;
    type Error = Refused;
    type Services = ();
    async fn handle(
        &mut self,
        cents: u64,
        _: &(),
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Refused> {
        sink.write(AccountEvent::Deposited { amount: cents }, self)
            .await;
        Ok(())
    }
    fn apply(&mut self, e: AccountEvent) {
        match e {
            AccountEvent::Deposited { amount } => self.cents += amount,
        }
    }
}

fn dollars_to_cents() -> Box<SemanticVersionEventUpcaster> {
    Box::new(SemanticVersionEventUpcaster::new(
        "Deposited",
        "2.0.0",
        Box::new(|mut v: Value| {
            let dollars = v["Deposited"]["amount"].as_u64().unwrap();
            v["Deposited"]["amount"] = json!(dollars * 100);
            v
        }),
    ))
}

fn old_deposit(id: &str, sequence: usize, dollars: u64) -> SerializedEvent {
    SerializedEvent {
        aggregate_id: id.into(),
        sequence,
        aggregate_type: "Account".into(),
        event_type: "Deposited".into(),
        event_version: "1.0".into(),
        payload: json!({"Deposited": {"amount": dollars}}),
        metadata: json!({}),
    }
}

fn cents(mut ctx: cqrs_es::persist::EventStoreAggregateContext<Account>) -> (usize, u64) {
    (ctx.current_sequence, ctx.aggregate().cents)
}

/// Old events that deserialize as they are but mean something else once upcast: the
/// repository, which does not see the upcasters, saves no snapshot it would have folded
/// from them, and every store loads what the upcast events say.
#[tokio::test]
async fn events_an_upcaster_changes_are_never_folded_into_a_snapshot() {
    let (_tmp, store) = common::store();
    let repo = AnnalEventRepository::new(store);
    repo.insert_events(&[old_deposit("a", 1, 5)]).await.unwrap();
    for (name, es) in [
        (
            "snapshot store",
            PersistedEventStore::<_, Account>::new_snapshot_store(repo.clone(), 2),
        ),
        (
            "aggregate store",
            PersistedEventStore::new_aggregate_store(repo.clone()),
        ),
    ] {
        let es = es.with_upcasters(vec![dollars_to_cents()]);
        // The snapshot store first (events 1 and 2), then the aggregate store (event 3).
        let before = if name == "snapshot store" {
            (1, 500)
        } else {
            (2, 501)
        };
        let ctx = es.load_aggregate("a").await.unwrap();
        assert_eq!(cents(ctx), before, "{name}");
        let ctx = es.load_aggregate("a").await.unwrap();
        es.commit(
            vec![AccountEvent::Deposited { amount: 1 }],
            ctx,
            HashMap::new(),
        )
        .await
        .unwrap();
        let after = (before.0 + 1, before.1 + 1);
        assert_eq!(
            cents(es.load_aggregate("a").await.unwrap()),
            after,
            "{name}"
        );
    }
    let events = PersistedEventStore::<_, Account>::new_event_store(repo)
        .with_upcasters(vec![dollars_to_cents()]);
    assert_eq!(cents(events.load_aggregate("a").await.unwrap()), (3, 502));
}

/// Events at the version the application writes now are folded: the aggregate store's
/// snapshot then holds them, and a load reads no event.
#[tokio::test]
async fn current_events_are_folded_into_the_snapshot() {
    let (_tmp, store) = common::store();
    let repo = AnnalEventRepository::new(store);
    let events = PersistedEventStore::<_, Account>::new_event_store(repo.clone());
    for amount in [10, 20] {
        let ctx = events.load_aggregate("b").await.unwrap();
        events
            .commit(
                vec![AccountEvent::Deposited { amount }],
                ctx,
                HashMap::new(),
            )
            .await
            .unwrap();
    }
    let aggregates = PersistedEventStore::<_, Account>::new_aggregate_store(repo.clone());
    // Events, no snapshot yet: rebuilt from the events (not a fresh aggregate at sequence
    // 0, whose commands would all conflict).
    let ctx = aggregates.load_aggregate("b").await.unwrap();
    assert_eq!(cents(ctx), (2, 30));
    let ctx = aggregates.load_aggregate("b").await.unwrap();
    aggregates
        .commit(
            vec![AccountEvent::Deposited { amount: 3 }],
            ctx,
            HashMap::new(),
        )
        .await
        .unwrap();
    let s = repo.get_snapshot::<Account>("b").await.unwrap().unwrap();
    assert_eq!((s.aggregate, s.current_sequence), (json!({"cents": 33}), 3));
}

/// Events migrated in with `insert_events` (no snapshot, no tag) take commands under the
/// aggregate store.
#[tokio::test]
async fn migrated_aggregates_take_commands_under_the_aggregate_store() {
    let (_tmp, store) = common::store();
    let repo = AnnalEventRepository::new(std::sync::Arc::clone(&store));
    let mut migrated = old_deposit("m", 1, 7);
    migrated.event_version = "2.0".into();
    repo.insert_events(&[migrated]).await.unwrap();
    let cqrs = annal_es::annal_aggregate_cqrs::<Account>(store, vec![], ());
    cqrs.execute("m", 1).await.unwrap();
    cqrs.execute("m", 1).await.unwrap();
    let es = PersistedEventStore::<_, Account>::new_aggregate_store(repo);
    assert_eq!(cents(es.load_aggregate("m").await.unwrap()), (3, 9));
}

/// A snapshot record this version cannot read (damaged, or written by another program)
/// makes a rebuild, not an aggregate that can never be loaded.
#[tokio::test]
async fn an_unreadable_snapshot_record_makes_a_rebuild() {
    let (_tmp, store) = common::store();
    let repo = AnnalEventRepository::new(std::sync::Arc::clone(&store));
    let cqrs = annal_es::annal_aggregate_cqrs::<Account>(std::sync::Arc::clone(&store), vec![], ());
    cqrs.execute("u", 4).await.unwrap();
    assert!(
        store
            .save_snapshot("Account-u", "cqrs-es", 1, "not json")
            .unwrap()
    );
    let es = PersistedEventStore::<_, Account>::new_aggregate_store(repo);
    assert_eq!(cents(es.load_aggregate("u").await.unwrap()), (1, 4));
    cqrs.execute("u", 1).await.unwrap();
    assert_eq!(cents(es.load_aggregate("u").await.unwrap()), (2, 5));
}

/// A batch whose first sequence is taken by a stored event (not by one of the batch):
/// refused by the store's expected version, nothing written.
#[tokio::test]
async fn a_sequence_taken_by_a_stored_event_is_an_optimistic_lock_error() {
    let (_tmp, store) = common::store();
    let repo = AnnalEventRepository::new(std::sync::Arc::clone(&store));
    let mut e = old_deposit("t", 1, 1);
    e.event_version = "2.0".into();
    repo.insert_events(&[
        e.clone(),
        SerializedEvent {
            sequence: 2,
            ..e.clone()
        },
    ])
    .await
    .unwrap();
    let err = repo
        .insert_events(&[SerializedEvent {
            sequence: 2,
            ..e.clone()
        }])
        .await
        .unwrap_err();
    assert!(
        matches!(err, annal_es::AnnalAggregateError::OptimisticLock),
        "{err:?}"
    );
    let gap = repo
        .insert_events(&[SerializedEvent { sequence: 4, ..e }])
        .await
        .unwrap_err();
    assert!(
        matches!(gap, annal_es::AnnalAggregateError::OptimisticLock),
        "{gap:?}"
    );
    assert_eq!(repo.get_events::<Account>("t").await.unwrap().len(), 2);
    assert_eq!(store.last_position(), 2);
}
