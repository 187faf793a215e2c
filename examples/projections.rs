//! Two read models, folded from the whole log:
//! - "products that were added to a cart and removed again", a question plain CRUD
//!   can't answer because the removal erased the addition;
//! - a dashboard count of orders awaiting shipping, followed live on a thread.
//!
//! `cargo run --example projections`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "an example stops at its first failure, and its sizes are small"
)]
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use annal::{EventData, ExpectedVersion, Options, Projection, RecordedEvent, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct AddedThenRemoved {
    /// Per cart, products added and not yet removed.
    in_cart: BTreeMap<String, Vec<String>>,
    /// Products removed after being added, with how often.
    removed: BTreeMap<String, u32>,
}

impl Projection for AddedThenRemoved {
    const NAME: &'static str = "added-then-removed";
    fn apply(&mut self, e: &RecordedEvent) {
        let product = String::from_utf8_lossy(&e.payload).to_string();
        let cart = self.in_cart.entry(e.stream.to_string()).or_default();
        match e.event_type.as_str() {
            "ItemAdded" => cart.push(product),
            "ItemRemoved" => {
                if let Some(i) = cart.iter().position(|p| *p == product) {
                    cart.remove(i);
                    *self.removed.entry(product).or_default() += 1;
                }
            }
            _ => {}
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AwaitingShipping {
    count: i64,
}

impl Projection for AwaitingShipping {
    const NAME: &'static str = "awaiting-shipping";
    fn apply(&mut self, e: &RecordedEvent) {
        match e.event_type.as_str() {
            "OrderPlaced" => self.count += 1,
            "OrderShipped" => self.count -= 1,
            _ => {}
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let store = Arc::new(Store::open(
        tmp.path(),
        Options::default().fsync(annal::FsyncPolicy::Never),
    )?);
    let cart = |stream: &str, ty: &str, product: &str| {
        store.append(
            stream,
            ExpectedVersion::Any,
            &[EventData::new(ty, product.as_bytes().to_vec())],
        )
    };
    cart("cart-1", "ItemAdded", "tea")?;
    cart("cart-1", "ItemAdded", "mug")?;
    cart("cart-1", "ItemRemoved", "tea")?;
    cart("cart-2", "ItemAdded", "tea")?;
    cart("cart-2", "ItemRemoved", "tea")?;
    cart("cart-2", "ItemAdded", "spoon")?;

    let mut removed = store.projection::<AddedThenRemoved>()?;
    removed.catch_up()?;
    println!("added then removed: {:?}", removed.state().removed);
    println!("still in carts: {:?}", removed.state().in_cart);

    // The dashboard follows live events on its own thread.
    let follower = {
        let store = store.clone();
        std::thread::spawn(move || -> annal::Result<i64> {
            let mut dashboard = store.projection::<AwaitingShipping>()?;
            let mut idle = 0;
            while idle < 3 {
                if dashboard.follow(Duration::from_millis(100))? == 0 {
                    idle += 1;
                }
            }
            Ok(dashboard.state().count)
        })
    };
    for i in 0..10 {
        store.append(
            &format!("order-{i}"),
            ExpectedVersion::NoStream,
            &[EventData::new("OrderPlaced", &b""[..])],
        )?;
    }
    for i in 0..4 {
        store.append(
            &format!("order-{i}"),
            ExpectedVersion::Exact(1),
            &[EventData::new("OrderShipped", &b""[..])],
        )?;
    }
    let awaiting = follower.join().map_err(|_| "dashboard thread panicked")??;
    println!("orders awaiting shipping: {awaiting}");
    Ok(())
}
