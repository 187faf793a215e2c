//! Stream lifecycle: a stream's metadata (how many and how old of its events stay
//! readable, where it was truncated, the user's own bytes) and deletion.
//!
//! Metadata lives in the log itself, as the last event of the stream's metadata stream
//! (`$$` followed by the stream's name), so it is as durable as any append and crash-safe
//! with it. Reads, subscriptions, projections and aggregate loads honour it from the moment
//! it is acknowledged; [`Store::scavenge`](crate::Store::scavenge) then erases what it hides.

use std::time::Duration;

/// What a stream keeps readable, and the user's own bytes.
///
/// An event of the stream is *live* when every rule set here keeps it; reads return live
/// events only, and a scavenge erases the rest.
///
/// ```
/// use annal::StreamMetadata;
/// use std::time::Duration;
/// let m = StreamMetadata::new()
///     .max_count(100)
///     .max_age(Duration::from_secs(86_400))
///     .custom(b"owner=billing".to_vec());
/// assert_eq!(m.max_count, Some(100));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamMetadata {
    /// Keep only the newest `n` events (n ≥ 1).
    pub max_count: Option<u64>,
    /// Keep only events whose timestamp is at most this old (whole microseconds).
    pub max_age: Option<Duration>,
    /// Keep only events of this version and later (soft delete sets it past the end).
    pub truncate_before: Option<u64>,
    /// The user's own bytes, stored and returned as given (at most 64 KiB).
    pub custom: Vec<u8>,
    /// The stream was hard-deleted ([`DeleteMode::Hard`]): nothing is readable and every
    /// append or metadata change fails with [`Error::StreamDeleted`](crate::Error::StreamDeleted).
    /// Set only by [`Store::delete_stream`](crate::Store::delete_stream).
    pub deleted: bool,
}

impl StreamMetadata {
    /// No rules, no bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps only the newest `n` events.
    pub fn max_count(mut self, n: u64) -> Self {
        self.max_count = Some(n);
        self
    }

    /// Keeps only events at most `age` old.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Keeps only events from `version` on.
    pub fn truncate_before(mut self, version: u64) -> Self {
        self.truncate_before = Some(version);
        self
    }

    /// The user's own bytes.
    pub fn custom(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.custom = bytes.into();
        self
    }
}

/// How [`Store::delete_stream`](crate::Store::delete_stream) deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// The stream reads as empty; a later append continues its versions (and makes the
    /// stream readable again from there). Sets `truncate_before` past its last version.
    Soft,
    /// A tombstone: the stream reads as empty, and every later append to it or change of its
    /// metadata fails with [`Error::StreamDeleted`](crate::Error::StreamDeleted). Final.
    Hard,
}
