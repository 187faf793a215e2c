//! [`AnnalAggregateError`], this backend's error, and its conversions into cqrs-es's.

use cqrs_es::AggregateError;
use cqrs_es::persist::PersistenceError;

/// What can go wrong persisting or loading through annal; it converts into cqrs-es's
/// [`PersistenceError`] and [`AggregateError`] as postgres-es's error does.
#[derive(Debug, thiserror::Error)]
pub enum AnnalAggregateError {
    /// Another command changed the aggregate first (a stale sequence, or a stale snapshot
    /// version): reload and try again. Nothing of the batch was written.
    #[error("optimistic lock error")]
    OptimisticLock,
    /// The store cannot be written or read: an I/O error, a store poisoned by a failed
    /// sync, a closed or read-only store, or a directory another process has open.
    #[error(transparent)]
    ConnectionError(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A payload, metadata or snapshot is not the JSON expected.
    #[error(transparent)]
    DeserializationError(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Anything else: damaged data, an invalid argument (a batch whose sequences are not
    /// consecutive, an event type annal does not accept).
    #[error(transparent)]
    UnknownError(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl AnnalAggregateError {
    pub(crate) fn unknown(why: impl Into<String>) -> Self {
        AnnalAggregateError::UnknownError(why.into().into())
    }
}

impl From<annal::Error> for AnnalAggregateError {
    fn from(e: annal::Error) -> Self {
        match e {
            annal::Error::WrongExpectedVersion { .. }
            | annal::Error::AppendConditionFailed { .. } => AnnalAggregateError::OptimisticLock,
            annal::Error::Io { .. }
            | annal::Error::Poisoned { .. }
            | annal::Error::Closed
            | annal::Error::ReadOnly { .. }
            | annal::Error::Locked { .. } => AnnalAggregateError::ConnectionError(Box::new(e)),
            other => AnnalAggregateError::UnknownError(Box::new(other)),
        }
    }
}

impl From<serde_json::Error> for AnnalAggregateError {
    fn from(e: serde_json::Error) -> Self {
        match e.classify() {
            serde_json::error::Category::Data | serde_json::error::Category::Syntax => {
                AnnalAggregateError::DeserializationError(Box::new(e))
            }
            serde_json::error::Category::Io | serde_json::error::Category::Eof => {
                AnnalAggregateError::UnknownError(Box::new(e))
            }
        }
    }
}

impl From<AnnalAggregateError> for PersistenceError {
    fn from(e: AnnalAggregateError) -> Self {
        match e {
            AnnalAggregateError::OptimisticLock => PersistenceError::OptimisticLockError,
            AnnalAggregateError::ConnectionError(e) => PersistenceError::ConnectionError(e),
            AnnalAggregateError::DeserializationError(e) => {
                PersistenceError::DeserializationError(e)
            }
            AnnalAggregateError::UnknownError(e) => PersistenceError::UnknownError(e),
        }
    }
}

impl<T: std::error::Error> From<AnnalAggregateError> for AggregateError<T> {
    fn from(e: AnnalAggregateError) -> Self {
        match e {
            AnnalAggregateError::OptimisticLock => AggregateError::AggregateConflict,
            AnnalAggregateError::ConnectionError(e) => AggregateError::DatabaseConnectionError(e),
            AnnalAggregateError::DeserializationError(e) => AggregateError::DeserializationError(e),
            AnnalAggregateError::UnknownError(e) => AggregateError::UnexpectedError(e),
        }
    }
}
