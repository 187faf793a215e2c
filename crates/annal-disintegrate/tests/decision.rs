//! Decisions through disintegrate's `DecisionMaker` on annal, end to end: upstream's
//! `it_processes_a_decision` (a cart), and the dcb.events course subscription, where a
//! decision spans a course's capacity and a student's course limit, with racing decisions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use annal::{Options, Store};
use annal_disintegrate::{AnnalEventStore, decision_maker};
use disintegrate::serde::json::Json;
use disintegrate::{Decision, Event, EventStore, NoSnapshot, StateMutate, StateQuery, query};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
#[stream(CartEvent, [ItemAdded, ItemRemoved])]
#[stream(CourseEvent, [CourseCreated, StudentSubscribed])]
#[stream(StudentEvent, [StudentSubscribed])]
enum DomainEvent {
    ItemAdded {
        #[id]
        cart_id: String,
        #[id]
        item_id: String,
    },
    ItemRemoved {
        #[id]
        cart_id: String,
        #[id]
        item_id: String,
    },
    CourseCreated {
        #[id]
        course_id: String,
        capacity: u32,
    },
    StudentSubscribed {
        #[id]
        course_id: String,
        #[id]
        student_id: String,
    },
}

#[derive(Debug, Default, StateQuery, Clone, Serialize, Deserialize)]
#[state_query(CartEvent)]
struct Cart {
    #[id]
    cart_id: String,
    items: Vec<String>,
}

impl StateMutate for Cart {
    fn mutate(&mut self, event: Self::Event) {
        match event {
            CartEvent::ItemAdded { item_id, .. } => self.items.push(item_id),
            CartEvent::ItemRemoved { item_id, .. } => self.items.retain(|i| *i != item_id),
        }
    }
}

struct AddItem {
    cart_id: String,
    item_id: String,
}

impl Decision for AddItem {
    type Event = DomainEvent;
    type StateQuery = Cart;
    type Error = String;

    fn state_query(&self) -> Cart {
        Cart {
            cart_id: self.cart_id.clone(),
            ..Cart::default()
        }
    }

    fn process(&self, cart: &Cart) -> Result<Vec<DomainEvent>, String> {
        if cart.items.contains(&self.item_id) {
            return Err(format!("{} is in the cart already", self.item_id));
        }
        Ok(vec![DomainEvent::ItemAdded {
            cart_id: self.cart_id.clone(),
            item_id: self.item_id.clone(),
        }])
    }
}

type Events = AnnalEventStore<DomainEvent, Json<DomainEvent>>;

fn event_store() -> (tempfile::TempDir, Events) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Options::default()).unwrap();
    (tmp, AnnalEventStore::new(Arc::new(store), Json::default()))
}

#[tokio::test]
async fn it_processes_a_decision() {
    let (_tmp, events) = event_store();
    let added = |c: &str, i: &str| DomainEvent::ItemAdded {
        cart_id: c.into(),
        item_id: i.into(),
    };
    events
        .append_without_validation(vec![
            added("c1", "p1"),
            DomainEvent::ItemRemoved {
                cart_id: "c1".into(),
                item_id: "p1".into(),
            },
        ])
        .await
        .unwrap();
    let decisions = decision_maker(events.clone(), NoSnapshot);
    let persisted = decisions
        .make(AddItem {
            cart_id: "c1".into(),
            item_id: "p2".into(),
        })
        .await
        .unwrap();
    assert_eq!(persisted.len(), 1);
    assert_eq!(persisted[0].id(), 3);
    assert_eq!(*persisted[0], added("c1", "p2"));
    // The state now has p2: the same decision is refused by the domain.
    let again = decisions
        .make(AddItem {
            cart_id: "c1".into(),
            item_id: "p2".into(),
        })
        .await;
    assert!(
        matches!(again, Err(disintegrate::DecisionError::Domain(_))),
        "{again:?}"
    );
    let cart: Vec<_> = events
        .stream(&query!(CartEvent; cart_id == "c1"))
        .collect()
        .await;
    assert_eq!(cart.len(), 4, "three events and End");
}

#[derive(Debug, Default, StateQuery, Clone, Serialize, Deserialize)]
#[state_query(CourseEvent)]
struct Course {
    #[id]
    course_id: String,
    capacity: Option<u32>,
    subscribed: u32,
}

impl StateMutate for Course {
    fn mutate(&mut self, event: Self::Event) {
        match event {
            CourseEvent::CourseCreated { capacity, .. } => self.capacity = Some(capacity),
            CourseEvent::StudentSubscribed { .. } => self.subscribed += 1,
        }
    }
}

#[derive(Debug, Default, StateQuery, Clone, Serialize, Deserialize)]
#[state_query(StudentEvent)]
struct Student {
    #[id]
    student_id: String,
    courses: u32,
}

impl StateMutate for Student {
    fn mutate(&mut self, _event: Self::Event) {
        self.courses += 1;
    }
}

/// A student's course limit.
const MAX_COURSES: u32 = 2;

struct Subscribe {
    course_id: String,
    student_id: String,
}

impl Decision for Subscribe {
    type Event = DomainEvent;
    type StateQuery = (Course, Student);
    type Error = String;

    fn state_query(&self) -> (Course, Student) {
        (
            Course {
                course_id: self.course_id.clone(),
                ..Course::default()
            },
            Student {
                student_id: self.student_id.clone(),
                ..Student::default()
            },
        )
    }

    fn process(&self, (course, student): &(Course, Student)) -> Result<Vec<DomainEvent>, String> {
        let Some(capacity) = course.capacity else {
            return Err(format!("no course {}", self.course_id));
        };
        if course.subscribed >= capacity {
            return Err(format!("course {} is full", self.course_id));
        }
        if student.courses >= MAX_COURSES {
            return Err(format!(
                "student {} has {MAX_COURSES} courses",
                self.student_id
            ));
        }
        Ok(vec![DomainEvent::StudentSubscribed {
            course_id: self.course_id.clone(),
            student_id: self.student_id.clone(),
        }])
    }
}

/// Makes the decision, deciding again after each concurrency error (another decision's
/// events changed what this one read); the domain's answer otherwise.
async fn subscribe(
    decisions: &annal_disintegrate::AnnalDecisionMaker<DomainEvent, Json<DomainEvent>, NoSnapshot>,
    course: &str,
    student: &str,
) -> Result<(), String> {
    loop {
        let made = decisions
            .make(Subscribe {
                course_id: course.into(),
                student_id: student.into(),
            })
            .await;
        match made {
            Ok(_) => return Ok(()),
            Err(disintegrate::DecisionError::Domain(why)) => return Err(why),
            Err(disintegrate::DecisionError::StateStore(e))
                if e.downcast_ref::<annal_disintegrate::Error>()
                    .is_some_and(|e| matches!(e, annal_disintegrate::Error::Concurrency)) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_subscriptions_respect_the_course_capacity_and_the_student_limit() {
    let (_tmp, events) = event_store();
    let decisions = Arc::new(decision_maker(events.clone(), NoSnapshot));
    events
        .append_without_validation(
            (1..=3)
                .map(|c| DomainEvent::CourseCreated {
                    course_id: format!("c{c}"),
                    capacity: 3,
                })
                .collect(),
        )
        .await
        .unwrap();
    // 6 students race for 3 courses of 3 seats; each wants all three courses.
    let tasks: Vec<_> = (1..=6)
        .flat_map(|s| (1..=3).map(move |c| (s, c)))
        .map(|(s, c)| {
            let decisions = Arc::clone(&decisions);
            tokio::spawn(async move {
                subscribe(&decisions, &format!("c{c}"), &format!("s{s}"))
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += u32::from(t.await.unwrap());
    }
    // 9 seats, 6 students of at most 2 courses (12): every seat is taken, no more.
    assert_eq!(accepted, 9);
    for c in 1..=3 {
        let course: Vec<_> = events
            .stream(&query!(CourseEvent; course_id == format!("c{c}")))
            .collect()
            .await;
        let subscribed = course
            .iter()
            .filter(|i| {
                matches!(
                    i,
                    Ok(disintegrate::StreamItem::Event(e)) if matches!(**e, CourseEvent::StudentSubscribed { .. })
                )
            })
            .count();
        assert_eq!(subscribed, 3, "course c{c}");
    }
    for s in 1..=6 {
        let student: Vec<_> = events
            .stream(&query!(StudentEvent; student_id == format!("s{s}")))
            .collect()
            .await;
        assert!(student.len() - 1 <= MAX_COURSES as usize, "student s{s}");
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
enum Registry {
    CourseOpened {
        #[id]
        course_id: String,
    },
    StudentRegistered {
        #[id]
        student_id: String,
    },
}

/// A filter's identifier applies only to the event types that declare it (as
/// disintegrate-postgres's SQL): a query for course c1 selects every student registration,
/// which declares no course, and the course openings of c1 alone.
#[tokio::test]
async fn identifiers_apply_only_to_the_types_that_declare_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), Options::default()).unwrap());
    let events = AnnalEventStore::new(store, Json::<Registry>::default());
    let opened = |c: &str| Registry::CourseOpened {
        course_id: c.into(),
    };
    let registered = |s: &str| Registry::StudentRegistered {
        student_id: s.into(),
    };
    events
        .append_without_validation(vec![
            opened("c1"),
            opened("c2"),
            registered("s1"),
            registered("s2"),
        ])
        .await
        .unwrap();
    let got: Vec<_> = events
        .stream(&query!(Registry; course_id == "c1"))
        .map(|i| i.unwrap().id())
        .collect()
        .await;
    assert_eq!(got, [1, 3, 4, 4], "c1's opening, both registrations, End");
    // And the same for the append check: a registration after the version conflicts.
    let stale = events
        .append(vec![opened("c1")], query!(Registry; course_id == "c1"), 2)
        .await;
    assert!(
        matches!(stale, Err(annal_disintegrate::Error::Concurrency)),
        "{stale:?}"
    );
}

/// A union of filters with their own origins: each filter's events after its own origin.
#[tokio::test]
async fn each_filter_keeps_its_own_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), Options::default()).unwrap());
    let events = AnnalEventStore::new(store, Json::<Registry>::default());
    let opened = |c: &str| Registry::CourseOpened {
        course_id: c.into(),
    };
    events
        .append_without_validation(vec![opened("a"), opened("b"), opened("a"), opened("b")])
        .await
        .unwrap();
    let a = query!(Registry; course_id == "a").change_origin(1);
    let b = query!(Registry; course_id == "b").change_origin(3);
    let both: disintegrate::StreamQuery<i64, Registry> = a.union(&b);
    let got: Vec<_> = events
        .stream(&both)
        .map(|i| i.unwrap().id())
        .collect()
        .await;
    assert_eq!(got, [3, 4, 4], "a after 1 (3), b after 3 (4), End");
}

/// Events of another stream of the same annal store (another event store in it, or the
/// application's own events) are never delivered.
#[tokio::test]
async fn events_of_other_streams_are_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path(), Options::default()).unwrap());
    let mine = AnnalEventStore::new(Arc::clone(&store), Json::<Registry>::default());
    let theirs = AnnalEventStore::new(Arc::clone(&store), Json::<Registry>::default())
        .with_stream("tenant-2");
    let opened = |c: &str| Registry::CourseOpened {
        course_id: c.into(),
    };
    theirs
        .append_without_validation(vec![opened("c1")])
        .await
        .unwrap();
    mine.append_without_validation(vec![opened("c1")])
        .await
        .unwrap();
    let got: Vec<_> = mine
        .stream(&query!(Registry; course_id == "c1"))
        .map(|i| i.unwrap().id())
        .collect()
        .await;
    assert_eq!(got, [2, 2]);
}
