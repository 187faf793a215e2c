//! [`Error`], this backend's error.

/// What an [`AnnalEventStore`](crate::AnnalEventStore) fails with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An event the decision's query selects was appended after the version it read:
    /// decide again on what is there now. Nothing was appended.
    #[error("concurrent modification error")]
    Concurrency,
    /// The store failed: I/O, a poisoned or closed store, an event annal refuses (a tag,
    /// `ident=value`, over 1024 bytes).
    #[error(transparent)]
    Store(#[from] annal::Error),
    /// A stored payload the serializer cannot read.
    #[error(transparent)]
    Deserialization(#[from] disintegrate::serde::Error),
    /// A stored event that is not one of the query's event type.
    #[error("unable to map the event store event to the query event: {0}")]
    QueryEventMapping(Box<dyn std::error::Error + Send + Sync>),
    /// An id past what an `i64` holds (a position past 2^63), or a negative one.
    #[error("event id {0} is out of range")]
    IdOutOfRange(String),
}
