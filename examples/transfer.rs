//! A money transfer as a two-stream transaction: each account is a stream, a transfer
//! debits one and credits the other in one atomic frame, with each stream at the version the
//! decision read. Racing transfers conflict and retry; money is neither made nor lost, and no
//! balance goes below zero.
//!
//! `cargo run --example transfer`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "an example stops at its first failure, and its sizes are small"
)]
use annal::{Error, EventData, ExpectedVersion, Options, ReadOptions, Store, Transaction};

/// An account's balance and version, folded from its stream.
fn balance(store: &Store, account: &str) -> (i64, u64) {
    let mut total = 0;
    let mut version = 0;
    for e in store.read_stream(account, ReadOptions::forward()).unwrap() {
        let e = e.unwrap();
        let amount: i64 = std::str::from_utf8(&e.payload).unwrap().parse().unwrap();
        total += if e.event_type == "Debited" {
            -amount
        } else {
            amount
        };
        version = e.version;
    }
    (total, version)
}

/// Moves `amount` from one account to the other if it has enough; retries on a conflict.
fn transfer(store: &Store, from: &str, to: &str, amount: i64) -> Result<u64, String> {
    loop {
        let (available, from_version) = balance(store, from);
        let (_, to_version) = balance(store, to);
        if available < amount {
            return Err(format!("{from} has {available}, not {amount}"));
        }
        let tx = Transaction::new()
            .append(
                from,
                ExpectedVersion::Exact(from_version),
                [EventData::new("Debited", amount.to_string())],
            )
            .append(
                to,
                ExpectedVersion::Exact(to_version),
                [EventData::new("Credited", amount.to_string())],
            );
        match store.commit(tx) {
            Ok(r) => return Ok(r.first_position),
            Err(Error::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let store = Store::open(tmp.path(), Options::default())?;
    let accounts = ["account-ada", "account-grace", "account-alan"];
    for a in accounts {
        store.append(
            a,
            ExpectedVersion::NoStream,
            &[EventData::new("Credited", "100")],
        )?;
    }
    let refused = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        for t in 0..3usize {
            let (store, refused) = (&store, &refused);
            s.spawn(move || {
                for i in 0..60usize {
                    let from = accounts[(t + i) % 3];
                    let to = accounts[(t + i + 1) % 3];
                    if transfer(store, from, to, 1 + ((t * 7 + i * 13) % 50) as i64).is_err() {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let balances: Vec<i64> = accounts.iter().map(|a| balance(&store, a).0).collect();
    println!(
        "balances {balances:?} after 180 racing transfers ({} refused for lack of funds)",
        refused.into_inner()
    );
    assert_eq!(
        balances.iter().sum::<i64>(),
        300,
        "money neither made nor lost"
    );
    assert!(balances.iter().all(|&b| b >= 0));
    // Every debit has its credit right after it: they were committed as one frame.
    let all: Vec<annal::RecordedEvent> = store
        .read_all(ReadOptions::forward())?
        .collect::<annal::Result<_>>()?;
    for pair in all[3..].chunks(2) {
        assert_eq!(
            (pair[0].event_type.as_str(), pair[1].event_type.as_str()),
            ("Debited", "Credited")
        );
        assert_eq!(pair[0].payload, pair[1].payload);
    }
    store.close()?;
    Ok(())
}
