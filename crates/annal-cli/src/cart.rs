//! A shopping cart, for `annal demo` and `examples/cart.rs`: an aggregate whose commands are
//! checked against the rehydrated cart (some are refused), and a projection over all carts.

use std::collections::BTreeMap;
use std::fmt;

use annal::{Aggregate, Codec, Json, Projection, RecordedEvent, Repository, Store};
use serde::{Deserialize, Serialize};

/// A cart: created or not, its items with quantities, and where it ships to once it has.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Cart {
    created: bool,
    /// Quantity per SKU.
    pub items: BTreeMap<String, u32>,
    shipping: Option<String>,
}

/// What happened to a cart. Stored as JSON (the `Json` codec), tagged with its type:
/// `{"type":"ItemAdded","sku":"tea","qty":2}`, so `annal read` shows it as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CartEvent {
    /// The cart was opened for a customer.
    CartCreated {
        /// Who it belongs to.
        customer: String,
    },
    /// Some of a product went in.
    ItemAdded {
        /// The product.
        sku: String,
        /// How many.
        qty: u32,
    },
    /// A product was taken out.
    ItemRemoved {
        /// The product.
        sku: String,
    },
    /// The cart shipped to an address; it takes no more changes.
    ShippingDetailsAdded {
        /// Where to.
        address: String,
    },
}

/// What a customer asks of a cart.
#[derive(Debug, Clone)]
pub enum CartCommand {
    /// Open the cart.
    Create {
        /// Who it belongs to.
        customer: String,
    },
    /// Put some of a product in.
    AddItem {
        /// The product.
        sku: String,
        /// How many.
        qty: u32,
    },
    /// Take a product out.
    RemoveItem {
        /// The product.
        sku: String,
    },
    /// Ship the cart.
    Ship {
        /// Where to.
        address: String,
    },
}

impl fmt::Display for CartCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CartCommand::Create { customer } => write!(f, "create for {customer}"),
            CartCommand::AddItem { sku, qty } => write!(f, "add {qty} x {sku}"),
            CartCommand::RemoveItem { sku } => write!(f, "remove {sku}"),
            CartCommand::Ship { address } => write!(f, "ship to {address}"),
        }
    }
}

/// Why a cart refuses a command.
#[derive(Debug, PartialEq)]
pub enum CartError {
    /// Create, twice.
    AlreadyCreated,
    /// Anything but create, before create.
    NoSuchCart,
    /// Anything after shipping.
    AlreadyShipped,
    /// Removing a product that is not in the cart.
    NotInCart(String),
    /// Shipping nothing.
    Empty,
}

impl fmt::Display for CartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// The carts of `store`: events and snapshots in JSON.
pub fn carts(store: &Store) -> Repository<'_, Cart, Json> {
    store.aggregate_with_codec::<Cart, Json>()
}

/// A read model over every cart: how many were created and shipped, how many items went in,
/// and which products were taken out again (a question a table of current carts can't answer).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CartActivity {
    /// Carts created.
    pub carts: u64,
    /// Carts shipped.
    pub shipped: u64,
    /// `ItemAdded` events.
    pub items_added: u64,
    /// The quantities they added up to.
    pub pieces_added: u64,
    /// Products removed from a cart (each `ItemRemoved` takes a product out whatever its
    /// quantity), with how many times.
    pub removed: BTreeMap<String, u32>,
}

impl Projection for CartActivity {
    const NAME: &'static str = "cart-activity";
    // 2: JSON events, and added events counted apart from their quantities.
    const VERSION: u32 = 2;

    fn apply(&mut self, e: &RecordedEvent) {
        // Events of other aggregates (or other encodings) are not this model's business.
        match Json::decode::<CartEvent>(&e.payload) {
            Ok(CartEvent::CartCreated { .. }) => self.carts += 1,
            Ok(CartEvent::ItemAdded { qty, .. }) => {
                self.items_added += 1;
                self.pieces_added += u64::from(qty);
            }
            Ok(CartEvent::ItemRemoved { sku }) => *self.removed.entry(sku).or_default() += 1,
            Ok(CartEvent::ShippingDetailsAdded { .. }) => self.shipped += 1,
            Err(_) => {}
        }
    }
}
