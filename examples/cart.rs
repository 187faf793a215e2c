//! A shopping cart: CartCreated, ItemAdded, ItemRemoved, ShippingDetailsAdded.
//! Commands are checked against the rehydrated cart; some are refused by the domain.
//!
//! `cargo run --example cart [DIR]` (default: a temporary directory).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "an example stops at its first failure, and its sizes are small"
)]
use annal::{ExecuteError, Options, ReadOptions, Store};

// The cart domain is shared with `annal demo`.
#[allow(dead_code)]
#[path = "../crates/annal-cli/src/cart.rs"]
mod cart;
use cart::CartCommand;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or(tmp.path().to_path_buf(), Into::into);
    let store = Store::open(&dir, Options::default().snapshot_every(100))?;
    let carts = cart::carts(&store);
    use CartCommand::*;

    carts.execute(
        "cart-42",
        Create {
            customer: "ada".into(),
        },
    )?;
    carts.execute(
        "cart-42",
        AddItem {
            sku: "tea".into(),
            qty: 2,
        },
    )?;
    carts.execute(
        "cart-42",
        AddItem {
            sku: "mug".into(),
            qty: 1,
        },
    )?;
    carts.execute("cart-42", RemoveItem { sku: "tea".into() })?;
    match carts.execute("cart-42", RemoveItem { sku: "cake".into() }) {
        Err(ExecuteError::Domain(e)) => println!("refused: {e}"),
        other => println!("unexpected: {other:?}"),
    }
    carts.execute(
        "cart-42",
        Ship {
            address: "1 Analytical Engine Way".into(),
        },
    )?;
    match carts.execute(
        "cart-42",
        AddItem {
            sku: "spoon".into(),
            qty: 1,
        },
    ) {
        Err(ExecuteError::Domain(e)) => println!("refused: {e}"),
        other => println!("unexpected: {other:?}"),
    }

    // A busy cart: enough events for snapshots to matter.
    carts.execute(
        "cart-7",
        Create {
            customer: "grace".into(),
        },
    )?;
    for i in 0..1_050 {
        carts.execute(
            "cart-7",
            AddItem {
                sku: format!("sku-{}", i % 10),
                qty: 1,
            },
        )?;
    }

    for e in store.read_stream("cart-42", ReadOptions::forward())? {
        let e = e?;
        println!("cart-42 v{} @{} {}", e.version, e.position, e.event_type);
    }
    let cart = carts.load("cart-42")?;
    println!("cart-42 at version {}: {:?}", cart.version, cart.state);
    drop(carts);
    drop(store);

    // After a restart, the load starts from the latest snapshot.
    let store = Store::open(&dir, Options::default().snapshot_every(100))?;
    let busy = cart::carts(&store).load("cart-7")?;
    println!(
        "cart-7 at version {}: from snapshot {:?}, replayed {} events, {} skus",
        busy.version,
        busy.snapshot_version,
        busy.replayed,
        busy.state.items.len()
    );
    Ok(())
}
