//! Reading the events a query selects, through the query index ([`postings`]): by tags and
//! types ([`Query`]), by category, or by event type. The index gives the locations; only the
//! events that match are read, each checked against its own checksum.
//!
//! [`postings`]: crate::engine::postings

use std::sync::Arc;

use smallvec::SmallVec;

use crate::engine::Engine;
use crate::engine::format::frame;
use crate::engine::index::{MAX_ORDINAL, StreamIndex, pack, unpack};
use crate::engine::postings::{PostingList, Window};
use crate::engine::read::{AllEvents, Direction, ReadOptions, SegmentCache, recorded, warm};
use crate::engine::segment::{Segment, holding};
use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::query::Query;

/// How many locations a read takes from the index at a time.
const BATCH: usize = 256;
/// How many events' streams a read looks up at once: the groups of records it touches
/// ahead ([`warm`]), so that a group's lookups go with the touch of the next.
const NAME_GROUP: usize = crate::engine::read::WARM_GROUP;

/// What a read selects.
#[derive(Debug, Clone)]
pub(crate) enum Selection {
    /// By a query's types and tags.
    Query(Query),
    /// By category: streams named `CATEGORY-...`.
    Category(String),
    /// By event type.
    EventType(String),
}

/// One item in the index's terms: events in every `required` list whose type is one of
/// `types` (any, when empty).
#[derive(Debug, Clone)]
struct Item {
    required: Vec<Key>,
    types: Vec<String>,
}

#[derive(Debug, Clone)]
enum Key {
    Tag(String),
    Category(String),
}

fn list<'a>(ix: &'a StreamIndex, key: &Key) -> &'a PostingList {
    match key {
        Key::Tag(t) => ix.postings.tags.get(t),
        Key::Category(c) => ix.postings.categories.get(c),
    }
}

/// How many locations one item examines per batch at most: the index lock is not held
/// longer than that, and a read of rare matches goes on in the next batch.
const SCAN_BUDGET: usize = 1 << 16;

impl Item {
    /// Up to `max` matching locations in `[lo, hi)`, the first ones going forward or the
    /// last ones going backward, added to `out` in no particular order. When it stopped
    /// after [`SCAN_BUDGET`] locations, returns where: every match up to there (forward) or
    /// from there (backward) is in `out`.
    fn candidates(
        &self,
        ix: &StreamIndex,
        lo: u64,
        hi: u64,
        forward: bool,
        max: usize,
        out: &mut Vec<u64>,
    ) -> Option<u64> {
        let type_lists: Vec<Window<'_>> = self
            .types
            .iter()
            .map(|t| ix.postings.types.get(t).window(lo, hi))
            .collect();
        let lists: Vec<Window<'_>> = self
            .required
            .iter()
            .map(|k| list(ix, k).window(lo, hi))
            .collect();
        let by_types: usize = type_lists.iter().map(|l| l.len()).sum();
        match shortest(&lists) {
            // Walk the shortest tag (or category) list, check the rest by binary search.
            Some((driver, others)) if type_lists.is_empty() || driver.len() <= by_types => {
                let matches = |loc: u64| {
                    others.iter().all(|l| l.contains(loc))
                        && (type_lists.is_empty() || type_lists.iter().any(|l| l.contains(loc)))
                };
                take(driver, forward, max, matches, out)
            }
            // Walk the type lists (fewer), check the tags by binary search.
            _ => {
                let matches = |loc: u64| lists.iter().all(|l| l.contains(loc));
                // Each type's list alone; the caller merges. Where one stopped early bounds
                // what all of them found.
                let mut reached: Option<u64> = None;
                for l in &type_lists {
                    if let Some(r) = take(*l, forward, max, matches, out) {
                        reached = Some(match reached {
                            None => r,
                            Some(p) if forward => p.min(r),
                            Some(p) => p.max(r),
                        });
                    }
                }
                reached
            }
        }
    }
}

/// The shortest list and the others.
fn shortest<'a>(lists: &[Window<'a>]) -> Option<(Window<'a>, Vec<Window<'a>>)> {
    let (i, &driver) = lists.iter().enumerate().min_by_key(|(_, l)| l.len())?;
    let others = lists
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, &l)| l)
        .collect();
    Some((driver, others))
}

/// Up to `max` locations of `list` that pass `keep`, from its start (forward) or its end.
/// Stops after [`SCAN_BUDGET`] locations, returning the last one it examined.
fn take(
    list: Window<'_>,
    forward: bool,
    max: usize,
    keep: impl Fn(u64) -> bool,
    out: &mut Vec<u64>,
) -> Option<u64> {
    let mut found = 0;
    let ordered: Box<dyn Iterator<Item = u64> + '_> = if forward {
        Box::new(list.iter())
    } else {
        Box::new(list.iter().rev())
    };
    for (examined, loc) in ordered.enumerate() {
        if found == max {
            return None;
        }
        if examined == SCAN_BUDGET {
            return Some(loc);
        }
        if keep(loc) {
            out.push(loc);
            found += 1;
        }
    }
    None
}

/// The events a query, category or type selects, from
/// [`Store::read_query`](crate::Store::read_query) and its kin: in position order (or its
/// reverse), from a position, up to a limit, as of the moment the read began.
#[derive(Debug)]
pub struct QueryEvents {
    read: Read,
}

#[derive(Debug)]
enum Read {
    /// [`Query::all`]: the whole log.
    All(Box<AllEvents>),
    /// Without the query index (`Options::query_index` off): the whole log, filtered.
    Scan(Box<AllEvents>, Selection, u64),
    Index(Box<IndexRead>),
    Nothing,
}

#[derive(Debug)]
struct IndexRead {
    inner: Arc<Engine>,
    items: Vec<Item>,
    forward: bool,
    /// Locations still to look at: `[lo, hi)`.
    lo: u64,
    hi: u64,
    /// Positions wanted: `first..=last`.
    first: u64,
    last: u64,
    left: u64,
    /// Locations to read, in read order, from `next` on.
    batch: Vec<u64>,
    next: usize,
    /// Records of `batch` below this index were touched ahead of reading (see `warm`).
    warmed: usize,
    /// The stream of each event of `batch` (by the position its record says), looked up
    /// ahead a group at a time, under one lock, so that those lookups' misses overlap too.
    names: Vec<Option<(u64, Arc<str>)>>,
    /// Events of `batch` below this index have their stream looked up.
    named: usize,
    /// The group being looked up: index in `batch`, position, stream id (kept for its
    /// allocation).
    group: Vec<(usize, u64, u32)>,
    cache: SegmentCache,
    done: bool,
}

impl QueryEvents {
    pub(crate) fn new(inner: Arc<Engine>, selection: Selection, opts: ReadOptions) -> Self {
        let wm = inner.watermark();
        Self::upto(inner, selection, opts, wm)
    }

    /// As [`QueryEvents::new`], over the events up to `wm` (a writer checking a condition
    /// sees what it wrote before it was published); a query of everything reads only up
    /// to what was published.
    pub(crate) fn upto(
        inner: Arc<Engine>,
        selection: Selection,
        opts: ReadOptions,
        wm: crate::engine::Watermark,
    ) -> Self {
        if !inner.options.query_index {
            let all = AllEvents::new(
                &inner,
                ReadOptions {
                    limit: u64::MAX,
                    ..opts
                },
            );
            return QueryEvents {
                read: Read::Scan(Box::new(all), selection, opts.limit),
            };
        }
        let items = match selection {
            Selection::Query(q) => match q.parts() {
                None => {
                    return QueryEvents {
                        read: Read::All(Box::new(AllEvents::new(&inner, opts))),
                    };
                }
                Some(items) => items
                    .iter()
                    .map(|i| Item {
                        required: i.tags.iter().cloned().map(Key::Tag).collect(),
                        types: i.types.to_vec(),
                    })
                    .collect(),
            },
            Selection::Category(c) => vec![Item {
                required: vec![Key::Category(c)],
                types: Vec::new(),
            }],
            Selection::EventType(t) => vec![Item {
                required: Vec::new(),
                types: vec![t],
            }],
        };
        let forward = opts.direction == Direction::Forward;
        let (first, last) = if forward {
            (opts.from.max(1), wm.position)
        } else {
            (1, opts.from.min(wm.position))
        };
        if items.is_empty() || opts.limit == 0 || first > last {
            return QueryEvents {
                read: Read::Nothing,
            };
        }
        let segments = inner.log.segments();
        // Location bounds from positions: a sample's frame at or before the first, and the
        // next sample (or segment) after the last; events just outside are skipped by
        // position once read.
        let lo = lower_bound(&segments, first);
        let hi = upper_bound(&segments, last).min(wm.location);
        QueryEvents {
            read: Read::Index(Box::new(IndexRead {
                inner,
                items,
                forward,
                lo,
                hi,
                first,
                last,
                left: opts.limit,
                batch: Vec::new(),
                next: 0,
                warmed: 0,
                names: Vec::new(),
                named: 0,
                group: Vec::new(),
                cache: SegmentCache::default(),
                done: false,
            })),
        }
    }
}

/// Whether `selection` selects `e` (the scan without the query index).
fn selected(selection: &Selection, e: &RecordedEvent) -> bool {
    match selection {
        Selection::Query(q) => q.matches_event(e),
        Selection::Category(c) => crate::engine::postings::category(&e.stream) == Some(c.as_str()),
        Selection::EventType(t) => e.event_type == *t,
    }
}

/// A location at or before the first event at `position`.
fn lower_bound(segments: &[Arc<Segment>], position: u64) -> u64 {
    match holding(segments, position) {
        Some(seg) => pack(seg.ordinal, seg.offset_of(position).unwrap_or(0)),
        None => 0,
    }
}

/// A location past the event at `position`, before any event after the next sample.
fn upper_bound(segments: &[Arc<Segment>], position: u64) -> u64 {
    let Some(seg) = holding(segments, position) else {
        return 0;
    };
    let next_sample = seg
        .chunk_of(position)
        .and_then(|c| seg.chunk_range(c, u64::MAX))
        .map(|(_, end)| end)
        .filter(|&end| end != u64::MAX);
    match next_sample {
        Some(end) => pack(seg.ordinal, end),
        // The last segment a location can name: everything.
        None if seg.ordinal >= MAX_ORDINAL => u64::MAX,
        // The rest of the segment: the next one starts after it.
        None => pack(seg.ordinal + 1, 0),
    }
}

impl IndexRead {
    fn fill(&mut self) {
        let mut found = Vec::with_capacity(BATCH * self.items.len());
        // Where an item stopped on its budget: nothing past it (this way) is known yet.
        let mut bound: Option<u64> = None;
        {
            let ix = self.inner.index.read();
            for item in &self.items {
                let reached =
                    item.candidates(&ix, self.lo, self.hi, self.forward, BATCH, &mut found);
                if let Some(r) = reached {
                    bound = Some(match bound {
                        None => r,
                        Some(b) if self.forward => b.min(r),
                        Some(b) => b.max(r),
                    });
                }
            }
        }
        if let Some(b) = bound {
            // `b` itself was not examined by the item that stopped there.
            found.retain(|&l| if self.forward { l < b } else { l > b });
        }
        found.sort_unstable();
        found.dedup();
        if self.forward {
            found.truncate(BATCH);
            match (found.len() == BATCH, found.last(), bound) {
                (true, Some(&l), _) => self.lo = l + 1,
                (_, _, Some(b)) => self.lo = b,
                (_, Some(&l), None) => self.lo = l + 1,
                (_, None, None) => self.done = true,
            }
        } else {
            let keep = found.len().saturating_sub(BATCH);
            found = found.split_off(keep);
            match (found.len() == BATCH, found.first(), bound) {
                (true, Some(&l), _) => self.hi = l,
                (_, _, Some(b)) => self.hi = b + 1,
                (_, Some(&l), None) => self.hi = l,
                (_, None, None) => self.done = true,
            }
            found.reverse();
        }
        self.names = vec![None; found.len()];
        self.batch = found;
        self.next = 0;
        self.warmed = 0;
        self.named = 0;
    }

    /// Touches the group of records of `batch` from `at` on, unless touched already (the
    /// batch is in read order whichever way the read goes).
    fn warm_from(&mut self, at: usize) {
        warm(
            &self.inner,
            &self.batch,
            &mut self.cache,
            true,
            &mut self.warmed,
            at,
        );
    }

    /// Looks up the streams of the next group of events: their positions as their records
    /// say (read unchecked here; the check comes when each is read), then the index, once.
    fn name_ahead(&mut self) {
        if self.next < self.named {
            return;
        }
        let end = (self.next + NAME_GROUP).min(self.batch.len());
        // The records of the group after this one start on their way too: the misses of
        // this group's lookups below then overlap with theirs.
        self.warm_from(end);
        let mut group = std::mem::take(&mut self.group);
        group.clear();
        group.extend((self.next..end).filter_map(|i| {
            let loc = *self.batch.get(i)?;
            Some((
                i,
                peek_position(&self.inner, &mut self.cache, loc)?,
                u32::MAX,
            ))
        }));
        {
            let ix = self.inner.index.read();
            // Pass by pass, so that each pass's cache misses overlap: an atomic increment
            // (the clone) lets no later load start before it ends, so looking up and cloning
            // one name at a time paid two misses per event, one after the other.
            for (_, position, id) in &mut group {
                *id = ix.postings.stream_of(*position).unwrap_or(u32::MAX);
            }
            let touched = group
                .iter()
                .filter_map(|&(_, _, id)| ix.name_of(id)?.as_bytes().first())
                .fold(0u8, |acc, b| acc ^ b);
            std::hint::black_box(touched);
            for &(i, position, id) in &group {
                if let Some(slot) = self.names.get_mut(i) {
                    *slot = ix.name_of(id).map(|n| (position, Arc::clone(n)));
                }
            }
        }
        self.group = group;
        self.named = end;
    }

    fn next_event(&mut self) -> Result<Option<RecordedEvent>> {
        while self.left > 0 {
            let Some(&loc) = self.batch.get(self.next) else {
                if self.done {
                    return Ok(None);
                }
                self.fill();
                continue;
            };
            // The matching events are scattered through the log: touch a group ahead so
            // that their cache misses overlap.
            self.warm_from(self.next);
            self.name_ahead();
            let hint = self.names.get_mut(self.next).and_then(Option::take);
            self.next += 1;
            let Some(e) = read_at(&self.inner, &mut self.cache, loc, hint)? else {
                // Erased by a scavenge since the lists were filled.
                continue;
            };
            if e.position < self.first || e.position > self.last {
                // Past the end going this way: nothing further can be wanted.
                if (self.forward && e.position > self.last)
                    || (!self.forward && e.position < self.first)
                {
                    return Ok(None);
                }
                continue;
            }
            if self.inner.hides(&e) {
                continue;
            }
            self.left -= 1;
            return Ok(Some(e));
        }
        Ok(None)
    }
}

/// The position of the newest event before `wm` that `query` selects, if it is after
/// `after`: found in the lists, reading at most that one record, for an append condition.
pub(crate) fn newest_match_after(
    inner: &Engine,
    query: &Query,
    wm: crate::engine::Watermark,
    after: u64,
) -> Result<Option<u64>> {
    if after >= wm.position {
        return Ok(None);
    }
    let Some(items) = query.parts() else {
        return Ok(Some(wm.position));
    };
    // Before the sample at or before `after + 1`, every event is at or before `after`: only
    // the lists' entries from there on need looking at, however long the history.
    let lo = inner.log.with_segments(|s| lower_bound(s, after + 1));
    let mut hi = wm.location;
    let mut cache = SegmentCache::default();
    loop {
        let newest = {
            let ix = inner.index.read();
            items
                .iter()
                .filter_map(|item| newest_of(&ix, item, lo, hi))
                .max()
        };
        let Some(loc) = newest else {
            // The common case of a condition that holds, decided without reading a record.
            return Ok(None);
        };
        // An event a scavenge erased (its lists keep it until the next open), or one its
        // stream's metadata hides, is not there for a decision: the next newest decides.
        match read_at(inner, &mut cache, loc, None)? {
            Some(e) if !inner.hides(&e) => {
                return Ok((e.position > after).then_some(e.position));
            }
            _ => hi = loc,
        }
    }
}

/// The newest location in `lo..hi` that matches `item`: walking its shortest list (a tag's,
/// or the types' together) back from `hi`, each candidate checked in the others by binary
/// search.
fn newest_of(ix: &StreamIndex, item: &crate::query::QueryItem, lo: u64, hi: u64) -> Option<u64> {
    // In place: a condition's check decides most appends' fate by these two lists.
    let tag_lists: SmallVec<[Window<'_>; 2]> = item
        .tags
        .iter()
        .map(|t| ix.postings.tags.get(t).window(lo, hi))
        .collect();
    let type_lists: SmallVec<[Window<'_>; 2]> = item
        .types
        .iter()
        .map(|t| ix.postings.types.get(t).window(lo, hi))
        .collect();
    let has_tags = |loc: u64| tag_lists.iter().all(|l| l.contains(loc));
    let by_types: usize = type_lists.iter().map(|l| l.len()).sum();
    match tag_lists.iter().min_by_key(|l| l.len()) {
        Some(driver) if type_lists.is_empty() || driver.len() <= by_types => {
            driver.iter().rev().find(|&loc| {
                has_tags(loc)
                    && (type_lists.is_empty() || type_lists.iter().any(|l| l.contains(loc)))
            })
        }
        // The types' lists are shorter (or there are no tags): the newest of each that has
        // the tags.
        _ => type_lists
            .iter()
            .filter_map(|l| l.iter().rev().find(|&loc| has_tags(loc)))
            .max(),
    }
}

/// The position the record at `loc` says it has, unchecked (a hint: the record is checked
/// when it is read).
fn peek_position(inner: &Engine, cache: &mut SegmentCache, loc: u64) -> Option<u64> {
    let (ordinal, offset) = unpack(loc);
    cache.segment(inner, ordinal);
    let (seg, view) = cache.parts();
    let (bytes, at) = seg?.record_source(offset, view).ok()?;
    let start = at.checked_add(frame::RECORD_HEADER_LEN)?;
    let b: [u8; 8] = bytes.get(start..start + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// Decodes the record at `loc`, checked against its checksum, and hands it (with the bytes
/// it is in) to `f`; `None` when a scavenge erased the event.
fn with_record<T>(
    inner: &Engine,
    cache: &mut SegmentCache,
    loc: u64,
    f: impl FnOnce(&frame::Record<'_>, &bytes::Bytes, &Segment) -> Result<T>,
) -> Result<Option<T>> {
    let (ordinal, offset) = unpack(loc);
    cache.segment(inner, ordinal);
    let (seg, view) = cache.parts();
    let seg = seg.ok_or_else(|| {
        Error::corruption(
            &inner.dir,
            offset,
            format!("the query index points at missing segment {ordinal}"),
        )
    })?;
    if seg.is_erased(offset) {
        return Ok(None);
    }
    let (bytes, at) = seg.record_source(offset, view)?;
    let r = frame::read_record(&bytes, at, true)
        .map_err(|reason| Error::corruption(&seg.path, offset, reason))?;
    if r.erased {
        return Ok(None);
    }
    f(&r, &bytes, seg).map(Some)
}

/// Reads and checks the record at `loc`, whose stream the index knows by its position.
/// `hint`, the stream looked up ahead for the position the record said then, is used when
/// the checked record says the same.
fn read_at(
    inner: &Engine,
    cache: &mut SegmentCache,
    loc: u64,
    hint: Option<(u64, Arc<str>)>,
) -> Result<Option<RecordedEvent>> {
    with_record(inner, cache, loc, |r, bytes, seg| {
        let stream = match hint {
            Some((position, name)) if position == r.position => Some(name),
            _ => {
                let ix = inner.index.read();
                ix.postings
                    .stream_of(r.position)
                    .and_then(|id| ix.name_of(id))
                    .cloned()
            }
        }
        .ok_or_else(|| {
            Error::corruption(
                &seg.path,
                unpack(loc).1,
                format!("position {} has no stream in the index", r.position),
            )
        })?;
        Ok(recorded(stream, r, bytes))
    })
}

impl Iterator for QueryEvents {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.read {
            Read::All(all) => all.next(),
            Read::Scan(all, selection, left) => {
                while *left > 0 {
                    match all.next()? {
                        Ok(e) if selected(selection, &e) => {
                            *left -= 1;
                            return Some(Ok(e));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            *left = 0;
                            return Some(Err(e));
                        }
                    }
                }
                None
            }
            Read::Nothing => None,
            Read::Index(read) => match read.next_event() {
                Ok(e) => e.map(Ok),
                Err(e) => {
                    read.left = 0;
                    Some(Err(e))
                }
            },
        }
    }
}
