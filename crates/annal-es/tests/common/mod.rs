//! Fixtures of the cqrs repository's backend tests (postgres-es, mysql-es and dynamo-es share
//! them), rewritten for annal: `TestAggregate` and `TestEvent`, `TestView`, and the
//! `Customer` aggregate of the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use annal::{FsyncPolicy, Options, Store};
use annal_es::AnnalEventRepository;
use cqrs_es::persist::{SerializedEvent, SerializedSnapshot};
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope, View};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A fresh store (fsync on every commit, as a production store) in a temporary directory.
pub fn store() -> (tempfile::TempDir, Arc<Store>) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(
        tmp.path(),
        Options {
            fsync: FsyncPolicy::Always,
            ..Options::default()
        },
    )
    .unwrap();
    (tmp, Arc::new(store))
}

pub fn repo(store: &Arc<Store>) -> AnnalEventRepository {
    AnnalEventRepository::new(Arc::clone(store)).with_streaming_channel_size(1)
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TestAggregate {
    pub id: String,
    pub description: String,
    pub tests: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TestEvent {
    Created(Created),
    Tested(Tested),
    SomethingElse(SomethingElse),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tested {
    pub test_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SomethingElse {
    pub description: String,
}

impl DomainEvent for TestEvent {
    fn event_type(&self) -> String {
        match self {
            TestEvent::Created(_) => "Created",
            TestEvent::Tested(_) => "Tested",
            TestEvent::SomethingElse(_) => "SomethingElse",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, PartialEq)]
pub struct TestError(pub String);

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for TestError {}

pub enum TestCommand {}

pub struct TestServices;

impl Aggregate for TestAggregate {
    const TYPE: &'static str = "TestAggregate";
    type Command = TestCommand;
    type Event = TestEvent;
    type Error = TestError;
    type Services = TestServices;

    async fn handle(
        &mut self,
        _command: Self::Command,
        _services: &Self::Services,
        _sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    fn apply(&mut self, _e: Self::Event) {}
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TestView {
    pub events: Vec<TestEvent>,
}

impl View<TestAggregate> for TestView {
    fn update(&mut self, event: &EventEnvelope<TestAggregate>) {
        self.events.push(event.payload.clone());
    }
}

/// An event of `TestAggregate` as the repository stores it (metadata: JSON null, as the
/// upstream fixture).
pub fn test_event_envelope(id: &str, sequence: usize, event: TestEvent) -> SerializedEvent {
    let payload: Value = serde_json::to_value(&event).unwrap();
    SerializedEvent {
        aggregate_id: id.to_string(),
        sequence,
        aggregate_type: TestAggregate::TYPE.to_string(),
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload,
        metadata: Value::default(),
    }
}

pub fn snapshot_context(
    aggregate_id: String,
    current_sequence: usize,
    current_snapshot: usize,
    aggregate: Value,
) -> SerializedSnapshot {
    SerializedSnapshot {
        aggregate_id,
        aggregate,
        current_sequence,
        current_snapshot,
    }
}

pub fn new_test_metadata() -> HashMap<String, String> {
    HashMap::from([("time".to_string(), "2021-03-18T12:32:45.930Z".to_string())])
}

// The integration tests' aggregate.

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Customer {
    pub customer_id: String,
    pub name: String,
    pub email: String,
    pub data_populated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CustomerEvent {
    NameAdded { name: String },
    EmailUpdated { new_email: String },
    CustomerDataPopulated,
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> String {
        match self {
            CustomerEvent::NameAdded { .. } => "NameAdded",
            CustomerEvent::EmailUpdated { .. } => "EmailUpdated",
            // Sic, as upstream.
            CustomerEvent::CustomerDataPopulated => "CustomerDataPoplated",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

pub enum CustomerCommand {
    AddCustomerName { name: String },
    UpdateEmail { new_email: String },
}

impl Aggregate for Customer {
    const TYPE: &'static str = "Customer";
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = TestError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &(),
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            CustomerCommand::AddCustomerName { name } => {
                if !self.name.is_empty() {
                    return Err(TestError(
                        "a name has already been added for this customer".into(),
                    ));
                }
                sink.write(CustomerEvent::NameAdded { name }, self).await;
            }
            CustomerCommand::UpdateEmail { new_email } => {
                sink.write(CustomerEvent::EmailUpdated { new_email }, self)
                    .await;
            }
        }
        if !self.data_populated && !self.name.is_empty() && !self.email.is_empty() {
            sink.write(CustomerEvent::CustomerDataPopulated, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CustomerEvent::NameAdded { name } => self.name = name,
            CustomerEvent::EmailUpdated { new_email } => self.email = new_email,
            CustomerEvent::CustomerDataPopulated => self.data_populated = true,
        }
    }
}
