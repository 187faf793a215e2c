//! The in-memory index: stream name to the locations of its events, in version order, and
//! the query index ([`Postings`]) beside it.
//!
//! A location packs a segment ordinal and a byte offset into one `u64`, so an event costs
//! eight bytes of index (plus the vector's spare capacity), and locations compare in log order.

use foldhash::HashMap;
use smol_str::SmolStr;
use std::sync::Arc;

use crate::engine::postings::{Postings, key_heap_bytes};

/// Bits of a location that hold the byte offset within the segment.
const OFFSET_BITS: u32 = 40;
/// The largest segment ordinal a location can hold.
pub(crate) const MAX_ORDINAL: u32 = (1 << (64 - OFFSET_BITS)) - 1;

/// Packs a segment ordinal and an offset into a location.
pub(crate) fn pack(ordinal: u32, offset: u64) -> u64 {
    (u64::from(ordinal) << OFFSET_BITS) | (offset & ((1 << OFFSET_BITS) - 1))
}

/// Splits a location into segment ordinal and offset.
pub(crate) fn unpack(location: u64) -> (u32, u64) {
    (
        (location >> OFFSET_BITS) as u32,
        location & ((1 << OFFSET_BITS) - 1),
    )
}

/// One stream: its id (its place in `StreamIndex::names`), its shared name, and its events'
/// locations.
#[derive(Debug)]
struct Stream {
    id: u32,
    run: RunSlot,
    name: Arc<str>,
    locs: Vec<u64>,
}

/// Which run of the active segment's checkpoint builder holds a stream's events there
/// ([`Builder::run`](crate::engine::checkpoint::Builder::run)): kept with the stream, so
/// that an append finds it without a lookup of its own. Builder 0 is none.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RunSlot {
    pub(crate) builder: u32,
    pub(crate) run: u32,
}

/// Stream name to the locations of its events (entry `i` is version `i + 1`), and the
/// query index.
#[derive(Debug, Default)]
pub(crate) struct StreamIndex {
    /// Keyed by names held in place when short ([`SmolStr`]): an append's lookup compares
    /// the name inside the table, without following a pointer.
    streams: HashMap<SmolStr, Stream>,
    /// Stream id to name.
    names: Vec<Arc<str>>,
    pub(crate) postings: Postings,
}

impl StreamIndex {
    /// An empty index, with the query index unless `query_index` is false
    /// (`Options::query_index`).
    pub(crate) fn new(query_index: bool) -> Self {
        let mut ix = StreamIndex::default();
        ix.postings.off = !query_index;
        ix
    }

    /// The stream's last version, counting every written event (visible or not yet).
    pub(crate) fn version(&self, stream: &str) -> Option<u64> {
        self.streams
            .get(stream)
            .map(|s| s.locs.len() as u64)
            .filter(|&v| v > 0)
    }

    /// The stream's last version among events before `watermark` (a location).
    pub(crate) fn visible_version(&self, stream: &str, watermark: u64) -> Option<u64> {
        let locs = &self.streams.get(stream)?.locs;
        // Unpublished events are at most a few appends at the end.
        let visible = locs.len() - locs.iter().rev().take_while(|&&l| l >= watermark).count();
        (visible > 0).then_some(visible as u64)
    }

    /// Adds the next events of `stream` (in version order); returns the stream's id, for
    /// [`StreamIndex::post`].
    pub(crate) fn push(&mut self, stream: &str, locations: impl IntoIterator<Item = u64>) -> u32 {
        self.push_noting(stream, locations, |_| ()).0
    }

    /// [`StreamIndex::push`], handing `note` the stream's note of its run in the checkpoint
    /// builder; returns the stream's id and what `note` returned.
    pub(crate) fn push_noting<R>(
        &mut self,
        stream: &str,
        locations: impl IntoIterator<Item = u64>,
        note: impl FnOnce(&mut RunSlot) -> R,
    ) -> (u32, R) {
        let entry = match self.streams.get_mut(stream) {
            Some(s) => s,
            None => {
                let name: Arc<str> = Arc::from(stream);
                let id = crate::cast::u32_len(self.names.len());
                self.names.push(Arc::clone(&name));
                self.streams.entry(SmolStr::new(stream)).or_insert(Stream {
                    id,
                    run: RunSlot::default(),
                    name,
                    locs: Vec::new(),
                })
            }
        };
        let id = entry.id;
        let locs = &mut entry.locs;
        let before = locs.len();
        let last = locs.last().copied();
        locs.extend(locations);
        // Invariant: a stream's versions are dense and lie in log order.
        debug_assert!(
            locs.get(before)
                .is_none_or(|&first| last.is_none_or(|l| first > l))
                && locs
                    .get(before..)
                    .is_none_or(|new| new.windows(2).all(|w| w[0] < w[1])),
            "stream {stream:?}: locations out of log order"
        );
        (id, note(&mut entry.run))
    }

    /// Adds an event to the query index: the event at `position` (the next one), of the
    /// stream with id `stream`, at `location`. Returns the number of its type and adds those
    /// of its tags to `tag_ids` (see [`Postings::push`]).
    pub(crate) fn post<'t>(
        &mut self,
        position: u64,
        stream: u32,
        location: u64,
        event_type: &str,
        tags: impl IntoIterator<Item = &'t str>,
        tag_ids: &mut Vec<u32>,
    ) -> Option<u32> {
        let name = self.names.get(stream as usize).map_or("", |n| n.as_ref());
        self.postings.push(
            position,
            (stream, name),
            location,
            event_type,
            tags,
            tag_ids,
        )
    }

    /// The name of the stream with id `id`.
    pub(crate) fn name_of(&self, id: u32) -> Option<&Arc<str>> {
        self.names.get(id as usize)
    }

    /// The shared name of a stream and up to `max` locations starting at version `from`
    /// (1-based), among those before `watermark`.
    pub(crate) fn locations(
        &self,
        stream: &str,
        from: u64,
        max: usize,
        watermark: u64,
    ) -> Option<(Arc<str>, Vec<u64>)> {
        let entry = self.streams.get(stream)?;
        let locs = &entry.locs;
        let start = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
        let taken = locs
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take(max)
            .take_while(|&&l| l < watermark)
            .copied()
            .collect();
        Some((Arc::clone(&entry.name), taken))
    }

    /// The shared name of a stream.
    pub(crate) fn name(&self, stream: &str) -> Option<Arc<str>> {
        self.streams.get(stream).map(|s| Arc::clone(&s.name))
    }

    /// Every stream with its visible version, in no particular order.
    pub(crate) fn streams(&self, watermark: u64) -> Vec<(Arc<str>, u64)> {
        self.streams
            .values()
            .filter_map(|s| {
                Some((
                    Arc::clone(&s.name),
                    self.visible_version(&s.name, watermark)?,
                ))
            })
            .collect()
    }

    /// The names of every metadata stream (`$$` + a stream's name).
    pub(crate) fn metadata_streams(&self) -> Vec<Arc<str>> {
        self.streams
            .values()
            .filter(|s| crate::engine::lifecycle::is_system(&s.name))
            .map(|s| Arc::clone(&s.name))
            .collect()
    }

    /// Number of streams.
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Approximate heap bytes held: location vectors, names, the hash table, and the query
    /// index.
    pub(crate) fn memory_bytes(&self) -> usize {
        let per_entry = std::mem::size_of::<(SmolStr, Stream)>() + 1;
        let table = self.streams.capacity() * per_entry + self.names.capacity() * 16;
        let names_and_locs: usize = self
            .streams
            .iter()
            // An Arc<str> allocation holds two counters before the bytes.
            .map(|(k, v)| 16 + v.name.len() + key_heap_bytes(k) + v.locs.capacity() * 8)
            .sum();
        table + names_and_locs + self.postings.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_order_like_the_log() {
        assert!(pack(1, 1 << 39) < pack(2, 32));
        assert_eq!(
            unpack(pack(MAX_ORDINAL, (1 << 40) - 1)),
            (MAX_ORDINAL, (1 << 40) - 1)
        );
    }

    #[test]
    fn versions_and_visibility() {
        let mut ix = StreamIndex::default();
        assert_eq!(ix.version("a"), None);
        ix.push("a", [pack(1, 32), pack(1, 100)]);
        ix.push("b", [pack(1, 200)]);
        ix.push("a", [pack(2, 32)]);
        assert_eq!(ix.version("a"), Some(3));
        assert_eq!(ix.visible_version("a", pack(2, 32)), Some(2));
        assert_eq!(ix.visible_version("b", pack(1, 200)), None);
        let (_, l) = ix.locations("a", 2, 10, pack(3, 0)).unwrap();
        assert_eq!(l, vec![pack(1, 100), pack(2, 32)]);
        let (_, l) = ix.locations("a", 1, 10, pack(1, 100)).unwrap();
        assert_eq!(l, vec![pack(1, 32)]);
        assert_eq!(ix.stream_count(), 2);
    }
}
