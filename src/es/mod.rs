//! Event sourcing over the engine: subscriptions, durable subscriptions, projections,
//! aggregates and their snapshots.

pub(crate) mod aggregate;
pub(crate) mod codec;
pub(crate) mod durable;
pub(crate) mod projection;
pub(crate) mod snapshot;
pub(crate) mod subscription;
