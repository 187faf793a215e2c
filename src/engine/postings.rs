//! The query index: for each tag, each event type and each category (a stream name's prefix
//! up to its first `-`), the locations of the events that have it, in log order; and for
//! each position, the stream of its event.
//!
//! A posting is one location kept in 4 bytes (its low half; runs of postings that share
//! the high half, which is the segment and the top of the offset, note it once), so a tag
//! costs about 4 bytes per event that carries it, plus the vector's spare capacity. Reads
//! by query pick the shortest list an item needs and check the others by binary search: no
//! event is decoded to be rejected.

use foldhash::HashMap;
use smol_str::SmolStr;

/// The locations of the events with one key, in log order, 4 bytes each.
#[derive(Debug, Default)]
pub(crate) struct PostingList {
    /// (high 32 bits of a location, index of the first posting with them), in order.
    runs: Vec<(u32, u32)>,
    /// The low 32 bits of each location.
    low: Vec<u32>,
}

static EMPTY: PostingList = PostingList {
    runs: Vec::new(),
    low: Vec::new(),
};

/// The halves of a location.
fn halves(location: u64) -> (u32, u32) {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "split in halves on purpose"
    )]
    ((location >> 32) as u32, location as u32)
}

impl PostingList {
    fn push(&mut self, location: u64) {
        let (high, low) = halves(location);
        if self.runs.last().is_none_or(|r| r.0 != high) {
            self.runs.push((high, crate::cast::u32_len(self.low.len())));
        }
        self.low.push(low);
    }

    /// How many postings.
    pub(crate) fn len(&self) -> usize {
        self.low.len()
    }

    /// Where run `r` starts and ends in `low`.
    fn run_span(&self, r: usize) -> (usize, usize) {
        let start = self.runs.get(r).map_or(self.low.len(), |x| x.1 as usize);
        let end = self
            .runs
            .get(r + 1)
            .map_or(self.low.len(), |x| x.1 as usize);
        (start, end)
    }

    /// Posting `i`.
    pub(crate) fn get(&self, i: usize) -> Option<u64> {
        let low = *self.low.get(i)?;
        let r = self
            .runs
            .partition_point(|x| x.1 as usize <= i)
            .checked_sub(1)?;
        let high = self.runs.get(r)?.0;
        Some((u64::from(high) << 32) | u64::from(low))
    }

    /// The index of the first posting at or after `location`.
    pub(crate) fn lower_bound(&self, location: u64) -> usize {
        let (high, low) = halves(location);
        let r = self.runs.partition_point(|x| x.0 < high);
        match self.runs.get(r) {
            None => self.low.len(),
            Some(&(h, start)) if h > high => start as usize,
            Some(_) => {
                let (start, end) = self.run_span(r);
                let within = self.low.get(start..end).unwrap_or_default();
                start + within.partition_point(|&x| x < low)
            }
        }
    }

    /// The postings in `[lo, hi)`.
    pub(crate) fn window(&self, lo: u64, hi: u64) -> Window<'_> {
        let start = self.lower_bound(lo);
        let end = self.lower_bound(hi).max(start);
        Window {
            list: self,
            start,
            end,
        }
    }

    fn memory_bytes(&self) -> usize {
        self.runs.capacity() * 8 + self.low.capacity() * 4
    }
}

/// A range of a posting list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window<'a> {
    list: &'a PostingList,
    start: usize,
    end: usize,
}

impl<'a> Window<'a> {
    /// How many postings.
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether `location` is a posting of the window.
    pub(crate) fn contains(&self, location: u64) -> bool {
        let i = self.list.lower_bound(location);
        i < self.end && i >= self.start && self.list.get(i) == Some(location)
    }

    /// The postings, in log order (reversible).
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = u64> + 'a {
        let list = self.list;
        (self.start..self.end).filter_map(move |i| list.get(i))
    }

    /// The newest posting.
    #[cfg(test)]
    pub(crate) fn last(&self) -> Option<u64> {
        self.end
            .checked_sub(1)
            .filter(|&i| i >= self.start)
            .and_then(|i| self.list.get(i))
    }
}

/// One list per key, appended to in log order; each key has a number, so that an open can
/// resolve a segment's table of keys once and then add its events without hashing.
#[derive(Debug, Default)]
pub(crate) struct Lists {
    /// Keys held in place when short ([`SmolStr`]): the lookup of an append's event type
    /// compares it inside the table, without following a pointer.
    ids: HashMap<SmolStr, u32>,
    lists: Vec<PostingList>,
}

impl Lists {
    /// The number of `key`, given one if it has none.
    pub(crate) fn id_of(&mut self, key: &str) -> u32 {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = crate::cast::u32_len(self.lists.len());
        self.ids.insert(SmolStr::new(key), id);
        self.lists.push(PostingList::default());
        id
    }

    fn push_id(&mut self, id: u32, location: u64) {
        if let Some(list) = self.lists.get_mut(id as usize) {
            list.push(location);
        }
    }

    /// The postings of the events with `key` (empty for an unknown key).
    pub(crate) fn get(&self, key: &str) -> &PostingList {
        self.ids
            .get(key)
            .and_then(|&id| self.lists.get(id as usize))
            .unwrap_or(&EMPTY)
    }

    fn postings(&self) -> usize {
        self.lists.iter().map(PostingList::len).sum()
    }

    fn memory_bytes(&self) -> usize {
        let per_entry = std::mem::size_of::<(SmolStr, u32)>() + 1;
        self.ids.capacity() * per_entry
            + self.ids.keys().map(key_heap_bytes).sum::<usize>()
            + self.lists.capacity() * std::mem::size_of::<PostingList>()
            + self
                .lists
                .iter()
                .map(PostingList::memory_bytes)
                .sum::<usize>()
    }
}

/// Heap bytes of an index key beside its table entry: none when it is held in place; else
/// an `Arc<str>` of its own, two counters before the bytes.
pub(crate) fn key_heap_bytes(key: &SmolStr) -> usize {
    if key.is_heap_allocated() {
        16 + key.len()
    } else {
        0
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
    /// Off (`Options::query_index`): nothing is kept.
    pub(crate) off: bool,
    pub(crate) tags: Lists,
    pub(crate) types: Lists,
    pub(crate) categories: Lists,
    /// The stream id (see `StreamIndex`) of the event at position `i + 1`.
    stream_of: Vec<u32>,
    /// Stream id to the number of its category in `categories` ([`NO_CATEGORY`] for none,
    /// [`UNKNOWN`] not yet looked up): an append then hashes no category name.
    category_of: Vec<u32>,
}

/// In `Postings::category_of`: the stream's name has no category.
const NO_CATEGORY: u32 = u32::MAX;
/// In `Postings::category_of`: not looked up yet.
const UNKNOWN: u32 = u32::MAX - 1;

/// An event for [`Postings::push_ids`]: its keys already numbered.
pub(crate) struct Numbered<'a> {
    pub position: u64,
    pub stream: u32,
    pub location: u64,
    pub event_type: u32,
    pub category: Option<u32>,
    pub tags: &'a [u32],
}

impl Postings {
    /// Adds the event at `position` (the next one: positions come in order), of stream
    /// `stream` (its id and name), at `location`. Returns the number of its type and adds
    /// those of its tags to `tag_ids`, in order; `None` when the query index is off.
    pub(crate) fn push<'t>(
        &mut self,
        position: u64,
        stream: (u32, &str),
        location: u64,
        event_type: &str,
        tags: impl IntoIterator<Item = &'t str>,
        tag_ids: &mut Vec<u32>,
    ) -> Option<u32> {
        if !self.take_position(position, stream.0) {
            return None;
        }
        let type_id = self.types.id_of(event_type);
        self.types.push_id(type_id, location);
        if let Some(c) = self.category_id(stream) {
            self.categories.push_id(c, location);
        }
        for tag in tags {
            let id = self.tags.id_of(tag);
            self.tags.push_id(id, location);
            tag_ids.push(id);
        }
        Some(type_id)
    }

    /// [`Postings::push`], with every key already numbered (an open, from a segment's tables).
    pub(crate) fn push_ids(&mut self, e: &Numbered<'_>) {
        if !self.take_position(e.position, e.stream) {
            return;
        }
        self.types.push_id(e.event_type, e.location);
        self.note_category(e.stream, e.category);
        if let Some(c) = e.category {
            self.categories.push_id(c, e.location);
        }
        for &t in e.tags {
            self.tags.push_id(t, e.location);
        }
    }

    /// Notes the position of an erased event (of stream `stream`): it is in no list.
    pub(crate) fn push_erased(&mut self, position: u64, stream: u32) {
        self.take_position(position, stream);
    }

    /// Notes that the event at `position` (the next one) is of stream `stream`; `false`
    /// when the query index is off.
    fn take_position(&mut self, position: u64, stream: u32) -> bool {
        if self.off {
            return false;
        }
        // Invariant: positions are dense and indexed in order.
        debug_assert_eq!(
            position,
            self.stream_of.len() as u64 + 1,
            "posting out of order"
        );
        self.stream_of.push(stream);
        true
    }

    /// The number of the category of `stream` (its id and name), looked up once per stream.
    fn category_id(&mut self, stream: (u32, &str)) -> Option<u32> {
        let known = self.category_of.get(stream.0 as usize).copied();
        let id = match known {
            Some(id) if id != UNKNOWN => id,
            _ => {
                let id = category(stream.1).map_or(NO_CATEGORY, |c| self.categories.id_of(c));
                self.note_category(stream.0, (id != NO_CATEGORY).then_some(id));
                id
            }
        };
        (id != NO_CATEGORY).then_some(id)
    }

    fn note_category(&mut self, stream: u32, category: Option<u32>) {
        let i = stream as usize;
        if self.category_of.len() <= i {
            self.category_of.resize(i + 1, UNKNOWN);
        }
        if let Some(slot) = self.category_of.get_mut(i) {
            *slot = category.unwrap_or(NO_CATEGORY);
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
            + self.category_of.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_by_key_in_log_order_and_streams_by_position() {
        let mut p = Postings::default();
        let mut ids = Vec::new();
        let added = p.push(1, (0, "cart-1"), 10, "Added", ["a", "b"], &mut ids);
        assert_eq!(p.push(2, (1, "user"), 20, "Added", [], &mut ids), added);
        let removed = p.push(3, (0, "cart-1"), 30, "Removed", ["b"], &mut ids);
        assert_ne!(removed, added);
        // Each event's tags numbered in order, the same tag the same number.
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[2], ids[1]);
        assert_ne!(ids[0], ids[1]);
        let all = |l: &PostingList| l.window(0, u64::MAX).iter().collect::<Vec<u64>>();
        assert_eq!(all(p.tags.get("b")), [10, 30]);
        assert_eq!(all(p.tags.get("a")), [10]);
        assert_eq!(p.tags.get("zzz").len(), 0);
        assert_eq!(all(p.types.get("Added")), [10, 20]);
        assert_eq!(all(p.categories.get("cart")), [10, 30]);
        assert_eq!(p.categories.get("user").len(), 0, "no '-', no category");
        assert_eq!(
            (p.stream_of(1), p.stream_of(2), p.stream_of(4)),
            (Some(0), Some(1), None)
        );
        assert_eq!(p.tag_postings(), 3);
        assert_eq!(category("order-eu-7"), Some("order"));
    }

    #[test]
    fn a_posting_list_is_a_sorted_list_of_locations_in_half_the_bytes() {
        use crate::engine::index::pack;
        // Locations over several segments, and past 4 GiB within one.
        let locs: Vec<u64> = [
            (1, 32),
            (1, 900),
            (2, 40),
            (2, 1 << 33),
            (2, (1 << 33) + 5),
            (7, 32),
        ]
        .iter()
        .map(|&(o, off)| pack(o, off))
        .collect();
        let mut l = PostingList::default();
        for &loc in &locs {
            l.push(loc);
        }
        assert_eq!(l.len(), locs.len());
        for (i, &loc) in locs.iter().enumerate() {
            assert_eq!(l.get(i), Some(loc));
            assert!(l.window(0, u64::MAX).contains(loc));
            assert!(!l.window(0, u64::MAX).contains(loc + 1));
            assert_eq!(l.lower_bound(loc), i);
            assert_eq!(l.lower_bound(loc + 1), i + 1);
        }
        assert_eq!(l.lower_bound(0), 0);
        assert_eq!(l.lower_bound(u64::MAX), locs.len());
        let w = l.window(pack(2, 0), pack(7, 0));
        assert_eq!(w.iter().collect::<Vec<_>>(), locs[2..5]);
        assert_eq!(w.iter().next_back(), Some(locs[4]));
        assert_eq!(w.last(), Some(locs[4]));
        assert!(w.contains(locs[3]) && !w.contains(locs[0]) && !w.contains(locs[5]));
        assert_eq!(l.window(pack(3, 0), pack(4, 0)).len(), 0);
        assert_eq!(l.window(pack(3, 0), pack(4, 0)).last(), None);
    }
}
