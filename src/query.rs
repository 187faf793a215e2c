//! Queries: which events a read, a subscription or an append condition is about, by event
//! type and tag, with the semantics of Dynamic Consistency Boundaries (dcb.events).

use smallvec::SmallVec;

use crate::event::RecordedEvent;

/// A selection of events: those that match any of its items. [`Query::all`] matches every
/// event.
///
/// ```
/// use annal::{Query, QueryItem};
/// // What a "subscribe student to course" decision depends on.
/// let q = Query::items([
///     QueryItem::new().types(["CourseDefined", "CourseCapacityChanged"]).tags(["course:c1"]),
///     QueryItem::new().types(["StudentSubscribed"]).tags(["course:c1"]),
///     QueryItem::new().types(["StudentSubscribed"]).tags(["student:s7"]),
/// ]);
/// assert!(q.matches("StudentSubscribed", &["course:c2", "student:s7"]));
/// assert!(!q.matches("StudentSubscribed", &["course:c2", "student:s8"]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `None`: every event.
    items: Option<SmallVec<[QueryItem; 1]>>,
}

/// One part of a [`Query`]: events of one of its types (any type when none is given) that
/// carry all of its tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryItem {
    pub(crate) types: SmallVec<[String; 1]>,
    pub(crate) tags: SmallVec<[String; 1]>,
}

impl QueryItem {
    /// An item that matches every event, until narrowed by [`types`](Self::types) and
    /// [`tags`](Self::tags).
    #[inline]
    pub fn new() -> Self {
        Self::default()
    }

    /// Only events of one of these types (added to any given before).
    #[inline]
    pub fn types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Only events that carry all of these tags (added to any given before).
    #[inline]
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Whether an event of type `event_type` with `tags` matches this item.
    pub fn matches<S: AsRef<str>>(&self, event_type: &str, tags: &[S]) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self
                .tags
                .iter()
                .all(|want| tags.iter().any(|t| t.as_ref() == want))
    }

    /// Whether a recorded event matches this item.
    pub fn matches_event(&self, e: &RecordedEvent) -> bool {
        (self.types.is_empty() || self.types.contains(&e.event_type))
            && self.tags.iter().all(|want| e.tags.contains(want))
    }

    /// Whether it matches every event.
    fn is_all(&self) -> bool {
        self.types.is_empty() && self.tags.is_empty()
    }
}

impl Query {
    /// Every event.
    #[inline]
    pub fn all() -> Self {
        Query { items: None }
    }

    /// The events that match any of `items` (none: no event at all).
    #[inline]
    pub fn items(items: impl IntoIterator<Item = QueryItem>) -> Self {
        let items: SmallVec<[QueryItem; 1]> = items.into_iter().collect();
        if items.iter().any(QueryItem::is_all) {
            return Query::all();
        }
        Query { items: Some(items) }
    }

    /// Whether it matches every event.
    pub fn is_all(&self) -> bool {
        self.items.is_none()
    }

    /// Its items; `None` for [`Query::all`].
    pub(crate) fn parts(&self) -> Option<&[QueryItem]> {
        self.items.as_deref()
    }

    /// Whether an event of type `event_type` with `tags` matches.
    pub fn matches<S: AsRef<str>>(&self, event_type: &str, tags: &[S]) -> bool {
        match &self.items {
            None => true,
            Some(items) => items.iter().any(|i| i.matches(event_type, tags)),
        }
    }

    /// Whether a recorded event matches.
    pub fn matches_event(&self, e: &RecordedEvent) -> bool {
        match &self.items {
            None => true,
            Some(items) => items.iter().any(|i| i.matches_event(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_needs_one_of_its_types_and_all_its_tags() {
        let item = QueryItem::new().types(["A", "B"]).tags(["x", "y"]);
        assert!(item.matches("B", &["y", "z", "x"]));
        assert!(!item.matches("B", &["x"]));
        assert!(!item.matches("C", &["x", "y"]));
        assert!(QueryItem::new().tags(["x"]).matches("Any", &["x"]));
        assert!(QueryItem::new().types(["A"]).matches::<&str>("A", &[]));
        let none: &[&str] = &[];
        assert!(!Query::items([]).matches("A", none), "no items: nothing");
        assert!(Query::all().matches("A", none));
        assert!(Query::items([QueryItem::new(), QueryItem::new().tags(["x"])]).is_all());
    }
}
