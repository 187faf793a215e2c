//! A transactional outbox: the store is the record of what was published. A relay loop around
//! a durable subscription hands each event to a "broker" (here a channel and a file) and
//! acknowledges it afterwards, so after a crash it resumes where it left off: at least once,
//! in order. The consumer deduplicates by position.
//!
//! `cargo run --example outbox`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "an example stops at its first failure, and its sizes are small"
)]
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use annal::{EventData, ExpectedVersion, Options, Store};

fn relay(
    store: &Store,
    broker: &mpsc::Sender<(u64, String)>,
    log: &mut std::fs::File,
) -> annal::Result<u64> {
    let mut sub = store.durable_subscription("broker-relay")?;
    let mut relayed = 0;
    // Drain what is there, then stop (a real relay would loop forever).
    while let Some(e) = sub.next_timeout(Duration::from_millis(200))? {
        let message = format!("{} {} v{}", e.event_type, e.stream, e.version);
        // Publish first, acknowledge after: a crash in between means a redelivery, never a loss.
        broker.send((e.position, message.clone())).ok();
        writeln!(log, "{} {message}", e.position).ok();
        sub.ack(e.position)?;
        relayed += 1;
    }
    Ok(relayed)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let published_log = tmp.path().join("published.txt");
    let mut log = std::fs::File::create(&published_log)?;
    let (broker, inbox) = mpsc::channel();

    let store = Arc::new(Store::open(tmp.path().join("store"), Options::default())?);
    for i in 0..5 {
        store.append(
            &format!("order-{i}"),
            ExpectedVersion::NoStream,
            &[EventData::new("OrderPlaced", &b"{}"[..])],
        )?;
    }
    println!("relayed {} events", relay(&store, &broker, &mut log)?);

    // More commands run; the relay restarts (a new process, say) and picks up after its ack.
    store.append(
        "order-1",
        ExpectedVersion::Exact(1),
        &[EventData::new("OrderShipped", &b"{}"[..])],
    )?;
    println!("relayed {} more", relay(&store, &broker, &mut log)?);
    println!("lag now: {:?}", store.durable_subscriptions()?);

    // The consumer side: dedup by position (at-least-once delivery can repeat a message).
    drop(broker);
    let mut seen = std::collections::BTreeSet::new();
    for (position, message) in inbox {
        if seen.insert(position) {
            println!("broker got #{position}: {message}");
        }
    }
    println!("published log: {}", published_log.display());
    Ok(())
}
