//! The backend tests of the cqrs repository's persistence crates (postgres-es, mysql-es,
//! dynamo-es: the event, snapshot and view repository tests, and their integration tests),
//! rewritten for annal, with what annal adds: atomic snapshot updates, migration batches of
//! several aggregates, persistence across a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use annal::Store;
use annal_es::{AnnalAggregateError, AnnalEventRepository, AnnalViewRepository, annal_cqrs};
use common::*;
use cqrs_es::persist::{
    GenericQuery, PersistedEventRepository, PersistedEventStore, PersistenceError,
    SemanticVersionEventUpcaster, SerializedEvent, ViewContext, ViewRepository,
};
use cqrs_es::{Aggregate, EventStore};
use serde_json::{Value, json};

type TestQueryRepository =
    GenericQuery<AnnalViewRepository<TestView, TestAggregate>, TestView, TestAggregate>;

#[tokio::test]
async fn event_repositories() {
    let (_tmp, store) = store();
    let id = new_id();
    let event_repo = repo(&store);
    let events = event_repo.get_events::<TestAggregate>(&id).await.unwrap();
    assert!(events.is_empty());

    event_repo
        .insert_events(&[
            test_event_envelope(&id, 1, TestEvent::Created(Created { id: id.clone() })),
            test_event_envelope(
                &id,
                2,
                TestEvent::Tested(Tested {
                    test_name: "a test was run".to_string(),
                }),
            ),
        ])
        .await
        .unwrap();
    let events = event_repo.get_events::<TestAggregate>(&id).await.unwrap();
    assert_eq!(2, events.len());
    events.iter().for_each(|e| assert_eq!(&id, &e.aggregate_id));

    // Sequence 2 is taken: the whole batch is refused.
    let result = event_repo
        .insert_events(&[
            test_event_envelope(
                &id,
                3,
                TestEvent::SomethingElse(SomethingElse {
                    description: "this should not persist".to_string(),
                }),
            ),
            test_event_envelope(
                &id,
                2,
                TestEvent::SomethingElse(SomethingElse {
                    description: "bad sequence number".to_string(),
                }),
            ),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(result, AnnalAggregateError::OptimisticLock),
        "{result:?}"
    );
    let events = event_repo.get_events::<TestAggregate>(&id).await.unwrap();
    assert_eq!(2, events.len());

    // As dynamo-es: the events after a sequence.
    let last = event_repo
        .get_last_events::<TestAggregate>(&id, 1)
        .await
        .unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].sequence, 2);

    verify_replay_stream(&id, &event_repo).await;
}

async fn verify_replay_stream(id: &str, event_repo: &AnnalEventRepository) {
    let mut stream = event_repo.stream_events::<TestAggregate>(id).await.unwrap();
    let mut found_in_stream = 0;
    while stream.next::<TestAggregate>(&[]).await.is_some() {
        found_in_stream += 1;
    }
    assert_eq!(found_in_stream, 2);

    let mut stream = event_repo
        .stream_all_events::<TestAggregate>()
        .await
        .unwrap();
    let mut found_in_stream = 0;
    while stream.next::<TestAggregate>(&[]).await.is_some() {
        found_in_stream += 1;
    }
    assert!(found_in_stream >= 2);
}

/// The same scenario as upstream's, with two differences: each snapshot is saved with an
/// event (annal keeps a snapshot with the event it was folded up to), and what is saved is
/// the fold of the aggregate's events, not the state handed over (see `persist`): for this
/// fixture, whose `apply` does nothing, the default state.
#[tokio::test]
async fn snapshot_repositories() {
    let (_tmp, store) = store();
    let id = new_id();
    let repo = repo(&store);
    let snapshot = repo.get_snapshot::<TestAggregate>(&id).await.unwrap();
    assert_eq!(None, snapshot);

    let test_description = "some test snapshot here".to_string();
    let test_tests = vec!["testA".to_string(), "testB".to_string()];
    let created = TestEvent::Created(Created { id: id.clone() });
    let first = serde_json::to_value(TestAggregate {
        id: id.clone(),
        description: test_description.clone(),
        tests: test_tests.clone(),
    })
    .unwrap();
    repo.persist::<TestAggregate>(
        &[test_event_envelope(&id, 1, created)],
        Some((id.clone(), first.clone(), 1)),
    )
    .await
    .unwrap();
    let folded = serde_json::to_value(TestAggregate::default()).unwrap();
    assert_ne!(first, folded);
    let snapshot = repo.get_snapshot::<TestAggregate>(&id).await.unwrap();
    assert_eq!(
        Some(snapshot_context(id.clone(), 1, 1, folded.clone())),
        snapshot
    );

    // Update the snapshot.
    let test_description = "a test description that should be saved".to_string();
    let saved = serde_json::to_value(TestAggregate {
        id: id.clone(),
        description: test_description.clone(),
        tests: test_tests.clone(),
    })
    .unwrap();
    let tested = |n: &str| {
        TestEvent::Tested(Tested {
            test_name: n.to_string(),
        })
    };
    repo.persist::<TestAggregate>(
        &[test_event_envelope(&id, 2, tested("a"))],
        Some((id.clone(), saved, 2)),
    )
    .await
    .unwrap();
    let snapshot = repo.get_snapshot::<TestAggregate>(&id).await.unwrap();
    assert_eq!(
        Some(snapshot_context(id.clone(), 2, 2, folded.clone())),
        snapshot
    );

    // Snapshot version 2 again: stale.
    let not_saved = serde_json::to_value(TestAggregate {
        id: id.clone(),
        description: "a test description that should not be saved".to_string(),
        tests: test_tests.clone(),
    })
    .unwrap();
    let err = repo
        .persist::<TestAggregate>(
            &[test_event_envelope(&id, 3, tested("b"))],
            Some((id.clone(), not_saved, 2)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, PersistenceError::OptimisticLockError),
        "{err:?}"
    );
    let snapshot = repo.get_snapshot::<TestAggregate>(&id).await.unwrap();
    assert_eq!(Some(snapshot_context(id.clone(), 2, 2, folded)), snapshot);
    // Unlike postgres-es, whose events stay committed when the snapshot update fails, the
    // transaction wrote nothing.
    assert_eq!(
        repo.get_events::<TestAggregate>(&id).await.unwrap().len(),
        2
    );

    // A snapshot without events of its aggregate is refused, not dropped.
    let err = repo
        .persist::<TestAggregate>(&[], Some((id.clone(), json!({}), 3)))
        .await
        .unwrap_err();
    assert!(matches!(err, PersistenceError::UnknownError(_)), "{err:?}");
}

/// Upstream's `snapshot_repositories` as it is: snapshots saved with no event (postgres-es's
/// crate-private `insert` and `update`, here `persist` with an empty batch) and read back as
/// given.
#[tokio::test]
#[ignore = "by design: annal keeps a snapshot with the event it was folded up to, so a \
            snapshot without events is refused; and annal-es saves the fold of the events, not \
            the state handed over, because cqrs-es 0.5.0 hands over states with events applied \
            twice or missing (see snapshot_repositories and AnnalEventRepository::persist)"]
async fn snapshot_repositories_as_upstream() {
    let (_tmp, store) = store();
    let id = new_id();
    let repo = repo(&store);
    assert_eq!(None, repo.get_snapshot::<TestAggregate>(&id).await.unwrap());
    let first = serde_json::to_value(TestAggregate {
        id: id.clone(),
        description: "some test snapshot here".to_string(),
        tests: vec!["testA".to_string(), "testB".to_string()],
    })
    .unwrap();
    repo.persist::<TestAggregate>(&[], Some((id.clone(), first.clone(), 1)))
        .await
        .unwrap();
    let snapshot = repo.get_snapshot::<TestAggregate>(&id).await.unwrap();
    assert_eq!(Some(snapshot_context(id.clone(), 0, 1, first)), snapshot);
    let saved = serde_json::to_value(TestAggregate {
        id: id.clone(),
        description: "a test description that should be saved".to_string(),
        tests: vec!["testA".to_string(), "testB".to_string()],
    })
    .unwrap();
    repo.persist::<TestAggregate>(&[], Some((id.clone(), saved.clone(), 2)))
        .await
        .unwrap();
    let snapshot = repo.get_snapshot::<TestAggregate>(&id).await.unwrap();
    assert_eq!(
        Some(snapshot_context(id.clone(), 0, 2, saved.clone())),
        snapshot
    );
    let err = repo
        .persist::<TestAggregate>(&[], Some((id.clone(), json!({}), 2)))
        .await
        .unwrap_err();
    assert!(matches!(err, PersistenceError::OptimisticLockError));
    let snapshot = repo.get_snapshot::<TestAggregate>(&id).await.unwrap();
    assert_eq!(Some(snapshot_context(id.clone(), 0, 2, saved)), snapshot);
}

#[tokio::test]
async fn test_valid_view_repository() {
    let (_tmp, store) = store();
    let repo = AnnalViewRepository::<TestView, TestAggregate>::new("test_view", Arc::clone(&store));
    let test_view_id = new_id();

    let view = TestView {
        events: vec![TestEvent::Created(Created {
            id: "just a test event for this view".to_string(),
        })],
    };
    repo.update_view(
        view.clone_view(),
        ViewContext::new(test_view_id.to_string(), 0),
    )
    .await
    .unwrap();
    let (found, context) = repo
        .load_with_context(&test_view_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, view);
    assert_eq!(context.version, 1);
    assert_eq!(repo.load(&test_view_id).await.unwrap(), Some(view));

    let updated_view = TestView {
        events: vec![TestEvent::Created(Created {
            id: "a totally different view".to_string(),
        })],
    };
    repo.update_view(updated_view.clone_view(), context)
        .await
        .unwrap();
    let found_option = repo.load(&test_view_id).await.unwrap();
    assert_eq!(found_option.unwrap(), updated_view);

    // A second update from the same (now stale) context: refused, as postgres-es's
    // `version = ctx.version` condition would.
    let stale = repo
        .update_view(
            TestView::default(),
            ViewContext::new(test_view_id.to_string(), 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(stale, PersistenceError::OptimisticLockError),
        "{stale:?}"
    );
    assert_eq!(repo.load("no-such-view").await.unwrap(), None);
}

trait CloneView {
    fn clone_view(&self) -> Self;
}

impl CloneView for TestView {
    fn clone_view(&self) -> Self {
        TestView {
            events: self.events.clone(),
        }
    }
}

#[tokio::test]
async fn test_valid_cqrs_framework() {
    let (_tmp, store) = store();
    let view_repo =
        AnnalViewRepository::<TestView, TestAggregate>::new("test_view", Arc::clone(&store));
    let query = TestQueryRepository::new(Arc::new(view_repo));
    let _ps = annal_cqrs(Arc::clone(&store), vec![Box::new(query)], TestServices);
}

// The integration tests (tests/lib.rs of postgres-es and mysql-es, and dynamo-es's).

async fn commit_and_load_events(event_store: PersistedEventStore<AnnalEventRepository, Customer>) {
    let id = new_id();
    let events = event_store.load_events(&id).await.unwrap();
    assert_eq!(0, events.len());
    let context = event_store.load_aggregate(&id).await.unwrap();

    event_store
        .commit(
            vec![
                CustomerEvent::NameAdded {
                    name: "test_event_A".to_string(),
                },
                CustomerEvent::EmailUpdated {
                    new_email: "email A".to_string(),
                },
            ],
            context,
            Default::default(),
        )
        .await
        .unwrap();
    let events = event_store.load_events(&id).await.unwrap();
    assert_eq!(2, events.len());
    let context = event_store.load_aggregate(&id).await.unwrap();

    event_store
        .commit(
            vec![CustomerEvent::EmailUpdated {
                new_email: "email B".to_string(),
            }],
            context,
            Default::default(),
        )
        .await
        .unwrap();
    let events = event_store.load_events(&id).await.unwrap();
    assert_eq!(3, events.len());
    let mut context = event_store.load_aggregate(&id).await.unwrap();
    use cqrs_es::AggregateContext;
    assert_eq!(context.aggregate().email, "email B");
    assert_eq!(context.aggregate().name, "test_event_A");
}

#[tokio::test]
async fn commit_and_load_events_event_store() {
    let (_tmp, store) = store();
    commit_and_load_events(PersistedEventStore::new_event_store(repo(&store))).await;
}

#[tokio::test]
async fn commit_and_load_events_snapshot_store() {
    let (_tmp, store) = store();
    commit_and_load_events(PersistedEventStore::new_aggregate_store(repo(&store))).await;
}

#[tokio::test]
async fn commit_and_load_events_snapshot_every_two() {
    let (_tmp, store) = store();
    commit_and_load_events(PersistedEventStore::new_snapshot_store(repo(&store), 2)).await;
}

#[tokio::test]
async fn commit_no_events() {
    let (_tmp, store) = store();
    let event_store = PersistedEventStore::<_, Customer>::new_event_store(repo(&store));
    let context = event_store.load_aggregate(&new_id()).await.unwrap();
    event_store
        .commit(vec![], context, Default::default())
        .await
        .unwrap();
    assert_eq!(store.last_position(), 0);
}

#[tokio::test]
async fn dynamo_commit_and_load_events_with_metadata() {
    let (_tmp, store) = store();
    let repo = repo(&store);
    let id = new_id();
    let event_store = PersistedEventStore::<_, Customer>::new_event_store(repo.clone());
    let context = event_store.load_aggregate(&id).await.unwrap();
    event_store
        .commit(
            vec![CustomerEvent::NameAdded { name: "a".into() }],
            context,
            new_test_metadata(),
        )
        .await
        .unwrap();
    let events = event_store.load_events(&id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].metadata, new_test_metadata());
    // Stored as first-class fields: the annal event's type, JSON payload and JSON metadata.
    let raw = store
        .read_stream(&format!("Customer-{id}"), annal::ReadOptions::forward())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(raw.event_type, "NameAdded");
    assert_eq!(
        serde_json::from_slice::<Value>(&raw.metadata).unwrap(),
        json!({"time": "2021-03-18T12:32:45.930Z"})
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&raw.payload).unwrap(),
        json!({"NameAdded": {"name": "a"}})
    );
    assert_eq!(
        raw.tags.iter().collect::<Vec<_>>(),
        ["cqrs-es:event_version=1.0"]
    );
}

#[tokio::test]
async fn upcasted_event() {
    let (_tmp, store) = store();
    let repo = repo(&store);
    // The row the upstream tests' database is seeded with.
    repo.insert_events(&[SerializedEvent {
        aggregate_id: "previous_event_in_need_of_upcast".to_string(),
        sequence: 1,
        aggregate_type: "Customer".to_string(),
        event_type: "NameAdded".to_string(),
        event_version: "1.0".to_string(),
        payload: json!({"NameAdded": {}}),
        metadata: json!({}),
    }])
    .await
    .unwrap();
    let upcaster = SemanticVersionEventUpcaster::new(
        "NameAdded",
        "1.0.1",
        Box::new(|mut event| match event.get_mut("NameAdded").unwrap() {
            Value::Object(object) => {
                object.insert("name".to_string(), Value::String("UNKNOWN".to_string()));
                event
            }
            _ => panic!("not the expected object"),
        }),
    );
    let event_store = PersistedEventStore::<_, Customer>::new_event_store(repo)
        .with_upcasters(vec![Box::new(upcaster)]);
    let mut context = event_store
        .load_aggregate("previous_event_in_need_of_upcast")
        .await
        .unwrap();
    assert_eq!(1, context.current_sequence);
    assert_eq!(None, context.current_snapshot);
    use cqrs_es::AggregateContext;
    assert_eq!(context.aggregate().name, "UNKNOWN");
}

/// `insert_events` for a migration: several aggregates, of two types, in one batch, all
/// or nothing.
#[tokio::test]
async fn a_migration_batch_of_several_aggregates_is_one_transaction() {
    let (_tmp, store) = store();
    let repo = repo(&store);
    let (a, b) = (new_id(), new_id());
    let created = |id: &str| TestEvent::Created(Created { id: id.to_string() });
    // Metadata an envelope can be read back with (the upstream fixture's is JSON null).
    let test_event_envelope = |id: &str, sequence, e| SerializedEvent {
        metadata: json!({}),
        ..test_event_envelope(id, sequence, e)
    };
    let mut customer = test_event_envelope(&a, 1, created(&a));
    customer.aggregate_type = "Customer".into();
    customer.event_type = "NameAdded".into();
    customer.payload = json!({"NameAdded": {"name": "migrated"}});
    repo.insert_events(&[
        test_event_envelope(&a, 1, created(&a)),
        test_event_envelope(&b, 1, created(&b)),
        test_event_envelope(&a, 2, created(&a)),
        customer.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(repo.get_events::<TestAggregate>(&a).await.unwrap().len(), 2);
    assert_eq!(repo.get_events::<TestAggregate>(&b).await.unwrap().len(), 1);
    assert_eq!(repo.get_events::<Customer>(&a).await.unwrap().len(), 1);
    // One frame: contiguous positions.
    assert_eq!(store.last_position(), 4);

    // A gap in one aggregate's sequences fails the whole batch.
    let err = repo
        .insert_events(&[
            test_event_envelope(&b, 2, created(&b)),
            test_event_envelope(&a, 4, created(&a)),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AnnalAggregateError::OptimisticLock),
        "{err:?}"
    );
    let err = repo
        .insert_events(&[
            test_event_envelope(&b, 2, created(&b)),
            test_event_envelope(&b, 4, created(&b)),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AnnalAggregateError::UnknownError(_)),
        "{err:?}"
    );
    assert_eq!(store.last_position(), 4);

    // stream_all_events: one type's events, in commit order, through the category index;
    // a batch's events are grouped by aggregate in one frame (in the order each aggregate
    // first appears), so each aggregate's stay in sequence order.
    let mut all = repo.stream_all_events::<TestAggregate>().await.unwrap();
    let mut seen = Vec::new();
    while let Some(e) = all.next::<TestAggregate>(&[]).await {
        let e = e.unwrap();
        seen.push((e.aggregate_id, e.sequence));
    }
    assert_eq!(seen, [(a.clone(), 1), (a.clone(), 2), (b.clone(), 1)]);
}

#[tokio::test]
async fn types_whose_names_share_a_prefix_or_hold_dashes_are_kept_apart() {
    macro_rules! aggregate {
        ($name:ident, $type:literal) => {
            #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
            struct $name;
            impl Aggregate for $name {
                const TYPE: &'static str = $type;
                type Command = ();
                type Event = TestEvent;
                type Error = TestError;
                type Services = ();
                async fn handle(
                    &mut self,
                    _: (),
                    _: &(),
                    _: &cqrs_es::event_sink::EventSink<Self>,
                ) -> Result<(), TestError> {
                    Ok(())
                }
                fn apply(&mut self, _: TestEvent) {}
            }
        };
    }
    // Unescaped, type "Test" with id "Aggregate-1" and type "Test-Aggregate" with id "1"
    // would both be the stream "Test-Aggregate-1".
    aggregate!(Short, "Test");
    aggregate!(Dashed, "Test-Aggregate");
    let (_tmp, store) = store();
    let repo = repo(&store);
    let created = |id: &str| TestEvent::Created(Created { id: id.to_string() });
    let event = |aggregate_type: &str, id: &str| SerializedEvent {
        metadata: json!({}),
        aggregate_type: aggregate_type.to_string(),
        ..test_event_envelope(id, 1, created(id))
    };
    repo.insert_events(&[event(Short::TYPE, "Aggregate-1"), event(Dashed::TYPE, "1")])
        .await
        .unwrap();
    let short = repo.get_events::<Short>("Aggregate-1").await.unwrap();
    let dashed = repo.get_events::<Dashed>("1").await.unwrap();
    assert_eq!((short.len(), dashed.len()), (1, 1));
    assert_eq!(short[0].payload, json!({"Created": {"id": "Aggregate-1"}}));
    assert_eq!(dashed[0].payload, json!({"Created": {"id": "1"}}));
    assert!(
        repo.get_events::<Short>("Aggregate")
            .await
            .unwrap()
            .is_empty()
    );
    // Each type's category holds its own aggregates only.
    for (all, want) in [
        (
            repo.stream_all_events::<Short>().await.unwrap(),
            "Aggregate-1",
        ),
        (repo.stream_all_events::<Dashed>().await.unwrap(), "1"),
    ] {
        let mut all = all;
        let e = all.next::<Short>(&[]).await.unwrap().unwrap();
        assert_eq!((e.aggregate_id.as_str(), e.sequence), (want, 1));
        assert!(all.next::<Short>(&[]).await.is_none());
    }
}

#[tokio::test]
async fn committed_events_and_snapshots_survive_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let id = new_id();
    {
        let repo = AnnalEventRepository::open(tmp.path(), annal::Options::default()).unwrap();
        let es = PersistedEventStore::<_, Customer>::new_aggregate_store(repo.clone());
        let ctx = es.load_aggregate(&id).await.unwrap();
        es.commit(
            vec![CustomerEvent::NameAdded {
                name: "kept".into(),
            }],
            ctx,
            Default::default(),
        )
        .await
        .unwrap();
        let store = Arc::clone(repo.store());
        drop((es, repo));
        Arc::try_unwrap(store).unwrap().close().unwrap();
    }
    let repo = AnnalEventRepository::open(tmp.path(), annal::Options::default()).unwrap();
    let snapshot = repo.get_snapshot::<Customer>(&id).await.unwrap().unwrap();
    assert_eq!(
        (snapshot.current_sequence, snapshot.current_snapshot),
        (1, 1)
    );
    assert_eq!(snapshot.aggregate["name"], "kept");
    let _: &Arc<Store> = repo.store();
}
