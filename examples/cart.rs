//! The shopping cart of the seeds: CartCreated, ItemAdded, ItemRemoved, ShippingDetailsAdded.
//! Commands are checked against the rehydrated cart; some are refused by the domain.
//!
//! `cargo run --example cart [DIR]` (default: a temporary directory).

use std::collections::BTreeMap;

use annal::{Aggregate, ExecuteError, Options, ReadOptions, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Cart {
    created: bool,
    items: BTreeMap<String, u32>,
    shipping: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum CartEvent {
    CartCreated { customer: String },
    ItemAdded { sku: String, qty: u32 },
    ItemRemoved { sku: String },
    ShippingDetailsAdded { address: String },
}

#[derive(Debug, Clone)]
enum CartCommand {
    Create { customer: String },
    AddItem { sku: String, qty: u32 },
    RemoveItem { sku: String },
    Ship { address: String },
}

#[derive(Debug, PartialEq)]
enum CartError {
    AlreadyCreated,
    NoSuchCart,
    AlreadyShipped,
    NotInCart(String),
    Empty,
}

impl std::fmt::Display for CartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CartError::AlreadyCreated => write!(f, "the cart already exists"),
            CartError::NoSuchCart => write!(f, "there is no such cart"),
            CartError::AlreadyShipped => write!(f, "the cart has shipped"),
            CartError::NotInCart(sku) => write!(f, "{sku} is not in the cart"),
            CartError::Empty => write!(f, "an empty cart can't ship"),
        }
    }
}

impl Aggregate for Cart {
    type Event = CartEvent;
    type Command = CartCommand;
    type Error = CartError;

    fn aggregate_type() -> &'static str {
        "Cart"
    }

    fn event_type(e: &CartEvent) -> &'static str {
        match e {
            CartEvent::CartCreated { .. } => "CartCreated",
            CartEvent::ItemAdded { .. } => "ItemAdded",
            CartEvent::ItemRemoved { .. } => "ItemRemoved",
            CartEvent::ShippingDetailsAdded { .. } => "ShippingDetailsAdded",
        }
    }

    fn apply(&mut self, e: &CartEvent) {
        match e {
            CartEvent::CartCreated { .. } => self.created = true,
            CartEvent::ItemAdded { sku, qty } => *self.items.entry(sku.clone()).or_default() += qty,
            CartEvent::ItemRemoved { sku } => {
                self.items.remove(sku);
            }
            CartEvent::ShippingDetailsAdded { address } => self.shipping = Some(address.clone()),
        }
    }

    fn handle(&self, c: CartCommand) -> Result<Vec<CartEvent>, CartError> {
        if let CartCommand::Create { customer } = c {
            return match self.created {
                true => Err(CartError::AlreadyCreated),
                false => Ok(vec![CartEvent::CartCreated { customer }]),
            };
        }
        if !self.created {
            return Err(CartError::NoSuchCart);
        }
        if self.shipping.is_some() {
            return Err(CartError::AlreadyShipped);
        }
        match c {
            CartCommand::Create { .. } => Err(CartError::AlreadyCreated),
            CartCommand::AddItem { sku, qty } => Ok(vec![CartEvent::ItemAdded { sku, qty }]),
            CartCommand::RemoveItem { sku } if !self.items.contains_key(&sku) => {
                Err(CartError::NotInCart(sku))
            }
            CartCommand::RemoveItem { sku } => Ok(vec![CartEvent::ItemRemoved { sku }]),
            CartCommand::Ship { .. } if self.items.is_empty() => Err(CartError::Empty),
            CartCommand::Ship { address } => Ok(vec![CartEvent::ShippingDetailsAdded { address }]),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or(tmp.path().to_path_buf(), Into::into);
    let store = Store::open(&dir, Options::default().snapshot_every(100))?;
    let carts = store.aggregate::<Cart>();
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
    let busy = store.aggregate::<Cart>().load("cart-7")?;
    println!(
        "cart-7 at version {}: from snapshot {:?}, replayed {} events, {} skus",
        busy.version,
        busy.snapshot_version,
        busy.replayed,
        busy.state.items.len()
    );
    Ok(())
}
