//! cqrs-es's own integration tests (`tests/lib.rs`: the memory store's scenario and the
//! framework test) on annal, under the event, snapshot and aggregate stores; and query
//! replays (`QueryReplay`) over annal's streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use annal_es::{
    AnnalEventRepository, AnnalViewRepository, annal_aggregate_cqrs, annal_cqrs,
    annal_snapshot_cqrs,
};
use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{GenericQuery, PersistedEventStore, QueryReplay, ViewRepository};
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventEnvelope, EventStore, Query, View};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Default, Clone, PartialEq)]
struct TestAggregate {
    id: String,
    description: String,
    tests: Vec<String>,
}

#[derive(Debug, PartialEq)]
struct TestError(String);

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for TestError {}

impl Aggregate for TestAggregate {
    const TYPE: &'static str = "TestAggregate";
    type Command = TestCommand;
    type Event = TestEvent;
    type Error = TestError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _service: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            TestCommand::CreateTest { id } => {
                sink.write(TestEvent::Created { id }, self).await;
            }
            TestCommand::ConfirmTest { test_name } => {
                if self.tests.contains(&test_name) {
                    return Err(TestError("test already performed".into()));
                }
                sink.write(TestEvent::Tested { test_name }, self).await;
            }
            TestCommand::DoSomethingElse { description } => {
                sink.write(TestEvent::SomethingElse { description }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TestEvent::Created { id } => self.id = id,
            TestEvent::Tested { test_name } => self.tests.push(test_name),
            TestEvent::SomethingElse { description } => self.description = description,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
enum TestEvent {
    Created { id: String },
    Tested { test_name: String },
    SomethingElse { description: String },
}

impl DomainEvent for TestEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created { .. } => "Created",
            Self::Tested { .. } => "Tested",
            Self::SomethingElse { .. } => "SomethingElse",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

enum TestCommand {
    CreateTest { id: String },
    ConfirmTest { test_name: String },
    DoSomethingElse { description: String },
}

/// A query that keeps every event it is given.
struct Delivered(Arc<RwLock<Vec<EventEnvelope<TestAggregate>>>>);

#[async_trait]
impl Query<TestAggregate> for Delivered {
    async fn dispatch(&self, _aggregate_id: &str, events: &[EventEnvelope<TestAggregate>]) {
        self.0.write().unwrap().extend(events.iter().cloned());
    }
}

fn metadata() -> HashMap<String, String> {
    HashMap::from([("time".to_string(), "2021-03-18T12:32:45.930Z".to_string())])
}

type Stores = [(
    &'static str,
    PersistedEventStore<AnnalEventRepository, TestAggregate>,
); 3];

fn stores(repo: &AnnalEventRepository) -> Stores {
    [
        (
            "event store",
            PersistedEventStore::new_event_store(repo.clone()),
        ),
        (
            "snapshot store",
            PersistedEventStore::new_snapshot_store(repo.clone(), 2),
        ),
        (
            "aggregate store",
            PersistedEventStore::new_aggregate_store(repo.clone()),
        ),
    ]
}

/// `test_mem_store`, on each kind of store.
#[tokio::test]
async fn commits_and_loads_like_the_memory_store() {
    let (_tmp, store) = common::store();
    let repo = common::repo(&store);
    for (name, event_store) in stores(&repo) {
        let id = format!("test_id_A {name}");
        let initial_events = event_store.load_events(&id).await.unwrap();
        assert_eq!(0, initial_events.len(), "{name}");
        let agg_context = event_store.load_aggregate(&id).await.unwrap();
        event_store
            .commit(
                vec![TestEvent::Created {
                    id: "test_event_A".to_string(),
                }],
                agg_context,
                metadata(),
            )
            .await
            .unwrap();
        assert_eq!(
            1,
            event_store.load_events(&id).await.unwrap().len(),
            "{name}"
        );
        let agg_context = event_store.load_aggregate(&id).await.unwrap();
        event_store
            .commit(
                vec![
                    TestEvent::Tested {
                        test_name: "test A".to_string(),
                    },
                    TestEvent::Tested {
                        test_name: "test B".to_string(),
                    },
                    TestEvent::SomethingElse {
                        description: "something else happening here".to_string(),
                    },
                ],
                agg_context,
                metadata(),
            )
            .await
            .unwrap();
        let stored_envelopes = event_store.load_events(&id).await.unwrap();
        let mut agg = TestAggregate::default();
        for stored_envelope in stored_envelopes {
            assert_eq!(stored_envelope.metadata, metadata());
            agg.apply(stored_envelope.payload);
        }
        let want = TestAggregate {
            id: "test_event_A".to_string(),
            description: "something else happening here".to_string(),
            tests: vec!["test A".to_string(), "test B".to_string()],
        };
        assert_eq!(agg, want, "{name}");
        // And the store's own load, from its snapshot where it keeps one.
        let mut ctx = event_store.load_aggregate(&id).await.unwrap();
        use cqrs_es::AggregateContext;
        assert_eq!(ctx.aggregate(), &want, "{name}");
    }
}

/// `framework_test`: commands through the framework, queries given what was committed, a
/// refused command writing and delivering nothing.
#[tokio::test]
async fn framework_test() {
    let (_tmp, store) = common::store();
    let frameworks = |delivered: &Arc<RwLock<Vec<EventEnvelope<TestAggregate>>>>| {
        let query = || -> Vec<Box<dyn Query<TestAggregate>>> {
            vec![Box::new(Delivered(Arc::clone(delivered)))]
        };
        [
            annal_cqrs(Arc::clone(&store), query(), ()),
            annal_snapshot_cqrs(Arc::clone(&store), query(), 2, ()),
            annal_aggregate_cqrs(Arc::clone(&store), query(), ()),
        ]
    };
    let delivered = Arc::default();
    let repo = AnnalEventRepository::new(Arc::clone(&store));
    let event_store = PersistedEventStore::<_, TestAggregate>::new_event_store(repo);
    for (i, cqrs) in frameworks(&delivered).into_iter().enumerate() {
        let before = delivered.read().unwrap().len();
        let id = common::new_id();
        cqrs.execute_with_metadata(
            &id,
            TestCommand::ConfirmTest {
                test_name: id.clone(),
            },
            metadata(),
        )
        .await
        .unwrap();
        assert_eq!(1, event_store.load_events(&id).await.unwrap().len(), "{i}");
        assert_eq!(before + 1, delivered.read().unwrap().len(), "{i}");

        let test = "TEST_A";
        cqrs.execute(
            &id,
            TestCommand::ConfirmTest {
                test_name: test.to_string(),
            },
        )
        .await
        .unwrap();
        assert_eq!(before + 2, delivered.read().unwrap().len(), "{i}");
        assert_eq!(2, event_store.load_events(&id).await.unwrap().len(), "{i}");

        let err = cqrs
            .execute(
                &id,
                TestCommand::ConfirmTest {
                    test_name: test.to_string(),
                },
            )
            .await
            .unwrap_err();
        match err {
            AggregateError::UserError(payload) => assert_eq!("test already performed", payload.0),
            other => panic!("not the expected error: {other}"),
        }
        assert_eq!(before + 2, delivered.read().unwrap().len(), "{i}");
        assert_eq!(2, event_store.load_events(&id).await.unwrap().len(), "{i}");

        cqrs.execute(
            &id,
            TestCommand::CreateTest {
                id: "created".into(),
            },
        )
        .await
        .unwrap();
        cqrs.execute(
            &id,
            TestCommand::DoSomethingElse {
                description: "else".into(),
            },
        )
        .await
        .unwrap();
        let mut ctx = event_store.load_aggregate(&id).await.unwrap();
        use cqrs_es::AggregateContext;
        let want = TestAggregate {
            id: "created".into(),
            description: "else".into(),
            tests: vec![id.clone(), test.to_string()],
        };
        assert_eq!(ctx.aggregate(), &want, "{i}");
        assert_eq!(ctx.current_sequence, 4, "{i}");
    }
}

/// A view over the aggregate: a read model in an `AnnalViewRepository`.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct TestsRun {
    tests: Vec<String>,
}

impl View<TestAggregate> for TestsRun {
    fn update(&mut self, event: &EventEnvelope<TestAggregate>) {
        if let TestEvent::Tested { test_name } = &event.payload {
            self.tests.push(test_name.clone());
        }
    }
}

/// `QueryReplay`: rebuilding a view from one aggregate's events and from every event of the
/// aggregate type (annal's category index), as cqrs-es's `query_replay` test does.
#[tokio::test]
async fn query_replay_rebuilds_views_from_one_aggregate_and_from_all() {
    let (_tmp, store) = common::store();
    let cqrs = annal_cqrs::<TestAggregate>(Arc::clone(&store), vec![], ());
    for (id, tests) in [("a", &["1", "2"][..]), ("b", &["3"][..])] {
        for t in tests {
            cqrs.execute(
                id,
                TestCommand::ConfirmTest {
                    test_name: t.to_string(),
                },
            )
            .await
            .unwrap();
        }
    }
    // Another aggregate type's events in the same store: not replayed.
    store
        .append(
            "Other-a",
            annal::ExpectedVersion::Any,
            &[annal::EventData::new("Tested", "{}")],
        )
        .unwrap();
    let views = Arc::new(AnnalViewRepository::<TestsRun, TestAggregate>::new(
        "tests_run",
        Arc::clone(&store),
    ));
    let query = GenericQuery::new(Arc::clone(&views));
    let replay = QueryReplay::new(AnnalEventRepository::new(Arc::clone(&store)), query);
    replay.replay("a").await.unwrap();
    assert_eq!(views.load("a").await.unwrap().unwrap().tests, ["1", "2"]);
    assert_eq!(views.load("b").await.unwrap(), None);
    replay.replay_all().await.unwrap();
    assert_eq!(views.load("b").await.unwrap().unwrap().tests, ["3"]);
    // "a" was replayed twice: its view folded its events twice, as with any backend.
    assert_eq!(
        views.load("a").await.unwrap().unwrap().tests,
        ["1", "2", "1", "2"]
    );
}
