//! The query index: for each tag, each event type and each category (a stream name's prefix
//! up to its first `-`), the locations of the events that have it, in log order; and for
//! each position, the stream of its event.
//!
//! A posting is one location (8 bytes), so a tag costs 8 bytes per event that carries it
//! (plus the vector's spare capacity). Reads by query pick the shortest list an item needs
//! and check the others by binary search: no event is decoded to be rejected.

use std::collections::HashMap;

/// One list per key, appended to in log order.
#[derive(Debug, Default)]
pub(crate) struct Lists {
    by_key: HashMap<Box<str>, Vec<u64>>,
}

impl Lists {
    fn push(&mut self, key: &str, location: u64) {
        match self.by_key.get_mut(key) {
            Some(list) => list.push(location),
            None => {
                self.by_key.insert(key.into(), vec![location]);
            }
        }
    }

    /// The locations of the events with `key`, in log order (empty for an unknown key).
    pub(crate) fn get(&self, key: &str) -> &[u64] {
        self.by_key.get(key).map_or(&[], Vec::as_slice)
    }

    fn postings(&self) -> usize {
        self.by_key.values().map(Vec::len).sum()
    }

    fn memory_bytes(&self) -> usize {
        let per_entry = std::mem::size_of::<(Box<str>, Vec<u64>)>() + 1;
        self.by_key.capacity() * per_entry
            + self
                .by_key
                .iter()
                .map(|(k, v)| k.len() + v.capacity() * 8)
                .sum::<usize>()
    }
}

/// The category of a stream: its name up to the first `-` (`cart` for `cart-42`); none for
/// a name without one.
pub(crate) fn category(stream: &str) -> Option<&str> {
    stream.split_once('-').map(|(c, _)| c)
}

/// Tags, types, categories, and the stream of each position.
#[derive(Debug, Default)]
pub(crate) struct Postings {
    pub(crate) tags: Lists,
    pub(crate) types: Lists,
    pub(crate) categories: Lists,
    /// The stream id (see `StreamIndex`) of the event at position `i + 1`.
    stream_of: Vec<u32>,
}

impl Postings {
    /// Adds the event at `position` (the next one: positions come in order), of stream
    /// `stream` (its id and name), at `location`.
    pub(crate) fn push<'t>(
        &mut self,
        position: u64,
        stream: (u32, &str),
        location: u64,
        event_type: &str,
        tags: impl IntoIterator<Item = &'t str>,
    ) {
        // Invariant: positions are dense and indexed in order.
        debug_assert_eq!(
            position,
            self.stream_of.len() as u64 + 1,
            "posting out of order"
        );
        self.stream_of.push(stream.0);
        self.types.push(event_type, location);
        if let Some(c) = category(stream.1) {
            self.categories.push(c, location);
        }
        for tag in tags {
            self.tags.push(tag, location);
        }
    }

    /// The stream id of the event at `position`.
    pub(crate) fn stream_of(&self, position: u64) -> Option<u32> {
        let i = usize::try_from(position.checked_sub(1)?).ok()?;
        self.stream_of.get(i).copied()
    }

    /// (event, tag) pairs indexed.
    pub(crate) fn tag_postings(&self) -> usize {
        self.tags.postings()
    }

    /// Heap bytes held by the tag lists alone.
    pub(crate) fn tag_memory_bytes(&self) -> usize {
        self.tags.memory_bytes()
    }

    /// Approximate heap bytes held.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.tags.memory_bytes()
            + self.types.memory_bytes()
            + self.categories.memory_bytes()
            + self.stream_of.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_by_key_in_log_order_and_streams_by_position() {
        let mut p = Postings::default();
        p.push(1, (0, "cart-1"), 10, "Added", ["a", "b"]);
        p.push(2, (1, "user"), 20, "Added", []);
        p.push(3, (0, "cart-1"), 30, "Removed", ["b"]);
        assert_eq!(p.tags.get("b"), [10, 30]);
        assert_eq!(p.tags.get("a"), [10]);
        assert!(p.tags.get("zzz").is_empty());
        assert_eq!(p.types.get("Added"), [10, 20]);
        assert_eq!(p.categories.get("cart"), [10, 30]);
        assert!(p.categories.get("user").is_empty(), "no '-', no category");
        assert_eq!(
            (p.stream_of(1), p.stream_of(2), p.stream_of(4)),
            (Some(0), Some(1), None)
        );
        assert_eq!(p.tag_postings(), 3);
        assert_eq!(category("order-eu-7"), Some("order"));
    }
}
