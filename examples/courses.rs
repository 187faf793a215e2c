//! Course subscriptions, the example of dcb.events: a student may subscribe to a course
//! while the course has room and the student has fewer than three courses. The decision
//! spans two consistency boundaries at once (the course's and the student's), so it is made
//! from a query over tagged events and appended with a condition, not through one stream.
//! Racing threads try to fill one course; exactly its capacity get in.
//!
//! `cargo run --example courses`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "an example stops at its first failure, and its sizes are small"
)]
use annal::{
    AppendCondition, Codec, Error, EventData, ExpectedVersion, Json, Options, Query, QueryItem,
    ReadOptions, Store, Transaction,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum CourseEvent {
    CourseDefined { course: String, capacity: u32 },
    StudentSubscribed { student: String, course: String },
}

fn tagged(e: &CourseEvent) -> EventData {
    let (event_type, tags) = match e {
        CourseEvent::CourseDefined { course, .. } => {
            ("CourseDefined", vec![format!("course:{course}")])
        }
        CourseEvent::StudentSubscribed { student, course } => (
            "StudentSubscribed",
            vec![format!("course:{course}"), format!("student:{student}")],
        ),
    };
    EventData::new(event_type, Json::encode(e).unwrap()).with_tags(tags)
}

/// What the decision needs to know, folded from the events its query selects.
#[derive(Default)]
struct Decision {
    capacity: Option<u32>,
    course_subscriptions: u32,
    student_courses: u32,
    already: bool,
}

const MAX_COURSES_PER_STUDENT: u32 = 3;

/// Subscribes `student` to `course`: reads its boundary, decides, appends on condition that
/// nothing in the boundary changed since; on a conflict, reads and decides again.
fn subscribe(store: &Store, student: &str, course: &str) -> Result<u64, String> {
    let (c, s) = (format!("course:{course}"), format!("student:{student}"));
    let boundary = Query::items([
        QueryItem::new().types(["CourseDefined"]).tags([c.clone()]),
        QueryItem::new()
            .types(["StudentSubscribed"])
            .tags([c.clone()]),
        QueryItem::new()
            .types(["StudentSubscribed"])
            .tags([s.clone()]),
    ]);
    loop {
        let mut d = Decision::default();
        let mut last = 0;
        for e in store.read_query(&boundary, ReadOptions::forward()).unwrap() {
            let e = e.unwrap();
            last = e.position;
            match Json::decode::<CourseEvent>(&e.payload).unwrap() {
                CourseEvent::CourseDefined { capacity, .. } => d.capacity = Some(capacity),
                CourseEvent::StudentSubscribed {
                    student: who,
                    course: what,
                } => {
                    if what == course {
                        d.course_subscriptions += 1;
                    }
                    if who == student {
                        d.student_courses += 1;
                        d.already |= what == course;
                    }
                }
            }
        }
        let Some(capacity) = d.capacity else {
            return Err(format!("there is no course {course}"));
        };
        if d.already {
            return Err(format!("{student} is already in {course}"));
        }
        if d.course_subscriptions >= capacity {
            return Err(format!("{course} is full"));
        }
        if d.student_courses >= MAX_COURSES_PER_STUDENT {
            return Err(format!(
                "{student} has {MAX_COURSES_PER_STUDENT} courses already"
            ));
        }
        let event = tagged(&CourseEvent::StudentSubscribed {
            student: student.into(),
            course: course.into(),
        });
        let tx = Transaction::new()
            .append(
                format!("subscriptions-{student}"),
                ExpectedVersion::Any,
                [event],
            )
            .condition(AppendCondition::new(boundary.clone()).after(last));
        match store.commit(tx) {
            Ok(r) => return Ok(r.first_position),
            // Someone else changed the boundary: decide again on what is there now.
            Err(Error::AppendConditionFailed { .. }) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let store = Store::open(tmp.path(), Options::default())?;
    let courses = [
        ("algebra", 10),
        ("poetry", 2),
        ("rust", 30),
        ("latin", 30),
        ("music", 30),
    ];
    for (course, capacity) in courses {
        let e = tagged(&CourseEvent::CourseDefined {
            course: course.into(),
            capacity,
        });
        store.append(&format!("course-{course}"), ExpectedVersion::NoStream, &[e])?;
    }

    // Twenty-five students race for algebra's ten places.
    let admitted = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        for i in 0..25 {
            let (store, admitted) = (&store, &admitted);
            s.spawn(move || {
                if subscribe(store, &format!("s{i}"), "algebra").is_ok() {
                    admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let admitted = admitted.into_inner();
    println!("algebra: {admitted} of 25 racing students admitted (capacity 10)");
    assert_eq!(admitted, 10);

    // A student's own boundary: at most three courses, and not one twice; a course's: its
    // capacity.
    let try_ = |student: &str, course: &str| {
        let outcome = subscribe(&store, student, course);
        println!("{student} -> {course}: {outcome:?}");
        outcome
    };
    for course in ["rust", "latin", "music"] {
        assert!(try_("ada", course).is_ok());
    }
    assert!(try_("ada", "rust").is_err_and(|e| e.contains("already")));
    assert!(try_("ada", "poetry").is_err_and(|e| e.contains("3 courses")));
    assert!(try_("grace", "poetry").is_ok());
    assert!(try_("alan", "poetry").is_ok());
    assert!(try_("hedy", "poetry").is_err_and(|e| e.contains("full")));
    assert!(try_("hedy", "latin-ii").is_err_and(|e| e.contains("no course")));
    store.close()?;
    Ok(())
}
