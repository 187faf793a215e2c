//! A meeting room's schedule, booked through commands: a schedule can be reserved once; a second
//! Reserve is refused until the reservation is cancelled.
//!
//! `cargo run --example reservation`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "an example stops at its first failure, and its sizes are small"
)]
use annal::{Aggregate, ExecuteError, Json, Options, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
enum Status {
    #[default]
    Open,
    Reserved,
    Cancelled,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Schedule {
    status: Status,
    visitor: Option<String>,
    slot: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ScheduleEvent {
    Reserved {
        visitor: String,
        start: u32,
        end: u32,
    },
    ReservationCancelled {
        reason: String,
    },
}

#[derive(Debug, Clone)]
enum ScheduleCommand {
    Reserve {
        visitor: String,
        start: u32,
        end: u32,
    },
    CancelReservation {
        reason: String,
    },
}

impl Aggregate for Schedule {
    type Event = ScheduleEvent;
    type Command = ScheduleCommand;
    type Error = String;

    fn aggregate_type() -> &'static str {
        "Schedule"
    }

    fn event_type(e: &ScheduleEvent) -> &'static str {
        match e {
            ScheduleEvent::Reserved { .. } => "Reserved",
            ScheduleEvent::ReservationCancelled { .. } => "ReservationCancelled",
        }
    }

    // Event handlers never validate: the event already happened.
    fn apply(&mut self, e: &ScheduleEvent) {
        match e {
            ScheduleEvent::Reserved {
                visitor,
                start,
                end,
            } => {
                self.status = Status::Reserved;
                self.visitor = Some(visitor.clone());
                self.slot = Some((*start, *end));
            }
            ScheduleEvent::ReservationCancelled { .. } => {
                self.status = Status::Cancelled;
                self.visitor = None;
            }
        }
    }

    // Command executors validate against the rehydrated state and produce events.
    fn handle(&self, c: ScheduleCommand) -> Result<Vec<ScheduleEvent>, String> {
        match c {
            ScheduleCommand::Reserve { .. } if self.status == Status::Reserved => Err(format!(
                "already reserved by {}",
                self.visitor.as_deref().unwrap_or("someone")
            )),
            ScheduleCommand::Reserve {
                visitor,
                start,
                end,
            } if start < end => Ok(vec![ScheduleEvent::Reserved {
                visitor,
                start,
                end,
            }]),
            ScheduleCommand::Reserve { .. } => Err("a reservation must end after it starts".into()),
            ScheduleCommand::CancelReservation { .. } if self.status != Status::Reserved => {
                Err("nothing to cancel".into())
            }
            ScheduleCommand::CancelReservation { reason } => {
                Ok(vec![ScheduleEvent::ReservationCancelled { reason }])
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let store = Store::open(tmp.path(), Options::default())?;
    // JSON events, so `annal read` shows them as written (`store.aggregate` would use bincode).
    let schedules = store.aggregate_with_codec::<Schedule, Json>();
    use ScheduleCommand::*;
    let stream = "schedule-2024-05-01-room-3";

    let r = schedules.execute(
        stream,
        Reserve {
            visitor: "patient-17".into(),
            start: 900,
            end: 930,
        },
    )?;
    println!("reserved at version {}", r.version);
    match schedules.execute(
        stream,
        Reserve {
            visitor: "patient-18".into(),
            start: 900,
            end: 930,
        },
    ) {
        Err(ExecuteError::Domain(why)) => println!("second reservation refused: {why}"),
        other => println!("unexpected: {other:?}"),
    }
    schedules.execute(
        stream,
        CancelReservation {
            reason: "patient called".into(),
        },
    )?;
    let r = schedules.execute(
        stream,
        Reserve {
            visitor: "patient-18".into(),
            start: 900,
            end: 930,
        },
    )?;
    println!("re-reserved at version {}: {:?}", r.version, r.state);
    // The audit trail: every change, in order.
    for e in store.read_stream(stream, annal::ReadOptions::forward())? {
        let e = e?;
        println!("  v{} {}", e.version, e.event_type);
    }
    Ok(())
}
