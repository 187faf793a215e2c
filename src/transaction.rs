//! Transactions: appends to several streams, checks on streams not written, and a condition
//! on a query (Dynamic Consistency Boundaries), committed as one atomic frame.

use smallvec::SmallVec;

use crate::event::{AppendResult, EventData, ExpectedVersion};
use crate::query::Query;

/// What [`Store::commit`](crate::Store::commit) writes and checks, all or nothing.
///
/// ```
/// use annal::{AppendCondition, EventData, ExpectedVersion, Query, QueryItem, Transaction};
/// let tx = Transaction::new()
///     .append("account-a", ExpectedVersion::Exact(3), [EventData::new("Debited", "{}")])
///     .append("account-b", ExpectedVersion::Exact(7), [EventData::new("Credited", "{}")])
///     .expect("limits-eu", ExpectedVersion::StreamExists)
///     .condition(AppendCondition::new(Query::items([QueryItem::new().tags(["account:a"])])).after(41));
/// # let _ = tx;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    pub(crate) appends: SmallVec<[(String, ExpectedVersion, Vec<EventData>); 1]>,
    pub(crate) expects: Vec<(String, ExpectedVersion)>,
    pub(crate) condition: Option<AppendCondition>,
    /// (stream, kind, state): saved once the commit succeeded, at the stream's new version.
    pub(crate) snapshots: Vec<(String, String, Vec<u8>)>,
}

impl Transaction {
    /// An empty transaction.
    #[inline]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `events` to `stream`, which must be at `expected`. Each stream at most once
    /// per transaction.
    #[inline]
    pub fn append(
        mut self,
        stream: impl Into<String>,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = EventData>,
    ) -> Self {
        self.appends
            .push((stream.into(), expected, events.into_iter().collect()));
        self
    }

    /// Checks that `stream`, which this transaction does not write, is at `expected`.
    #[inline]
    pub fn expect(mut self, stream: impl Into<String>, expected: ExpectedVersion) -> Self {
        self.expects.push((stream.into(), expected));
        self
    }

    /// Saves `state` as a snapshot of `kind` (see
    /// [`Store::save_snapshot`](crate::Store::save_snapshot)) of `stream`, which this
    /// transaction appends to, at the version the commit brings it to: the state with this
    /// transaction's events folded in. Saved after the frame, with no sync of its own; if
    /// it cannot be saved the commit still stands (a snapshot is a cache).
    #[inline]
    pub fn snapshot(
        mut self,
        stream: impl Into<String>,
        kind: impl Into<String>,
        state: impl Into<crate::event::Payload>,
    ) -> Self {
        self.snapshots
            .push((stream.into(), kind.into(), state.into().0.to_vec()));
        self
    }

    /// Fails the commit with [`Error::AppendConditionFailed`](crate::Error::AppendConditionFailed)
    /// if an event the condition's query selects was appended after its position.
    #[inline]
    pub fn condition(mut self, condition: AppendCondition) -> Self {
        self.condition = Some(condition);
        self
    }
}

/// The condition of a DCB append: no event that `query` selects may have a position after
/// [`after`](Self::after) (the last position the decision read); without `after`, no such
/// event may exist at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendCondition {
    pub(crate) query: Query,
    pub(crate) after: Option<u64>,
}

impl AppendCondition {
    /// Fails if any event `query` selects exists (until narrowed by
    /// [`after`](Self::after)).
    #[inline]
    pub fn new(query: Query) -> Self {
        AppendCondition { query, after: None }
    }

    /// Only events after `position` count: the decision saw everything up to it.
    #[inline]
    pub fn after(mut self, position: u64) -> Self {
        self.after = Some(position);
        self
    }
}

/// Where a committed transaction landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitResult {
    /// Global position of its first event.
    pub first_position: u64,
    /// Global position of its last event.
    pub last_position: u64,
    /// One per append, in the transaction's order: versions and positions in that stream.
    pub appends: Vec<AppendResult>,
    /// A retry of a transaction already in the log (every event with an id, the same ids,
    /// contents and streams): nothing was written, and the positions are the original's.
    pub deduplicated: bool,
}
