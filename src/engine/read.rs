//! Reading: one stream through the index, or the whole log ("$all") in position order.

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::format::frame::{self, FrameRead};
use crate::engine::index::unpack;
use crate::engine::segment::Segment;
use crate::engine::{Engine, Watermark};
use crate::error::{Error, Result};
use crate::event::RecordedEvent;

/// Which way a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

/// Where a read starts, which way it goes, and how many events it returns at most.
///
/// `from` is a stream version for [`Store::read_stream`](crate::Store::read_stream) and a global
/// position for [`Store::read_all`](crate::Store::read_all); the event at `from` is included.
/// Reading up to version or position N gives the state as of N ("time travel").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Direction of the read.
    pub direction: Direction,
    /// First version or position returned (backward reads start at `min(from, last)`).
    pub from: u64,
    /// Maximum number of events returned.
    pub limit: u64,
}

impl ReadOptions {
    /// Forward from `from` (1 is the beginning).
    pub fn forward_from(from: u64) -> Self {
        ReadOptions {
            direction: Direction::Forward,
            from,
            limit: u64::MAX,
        }
    }
    /// Backward from `from` (use [`ReadOptions::backward`] for the end).
    pub fn backward_from(from: u64) -> Self {
        ReadOptions {
            direction: Direction::Backward,
            from,
            limit: u64::MAX,
        }
    }
    /// Forward from the beginning.
    pub fn forward() -> Self {
        Self::forward_from(1)
    }
    /// Backward from the end.
    pub fn backward() -> Self {
        Self::backward_from(u64::MAX)
    }
    /// At most `n` events.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = n;
        self
    }
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self::forward()
    }
}

/// Versions (or positions) `[lo, hi]` that a read covers, given the last visible one.
fn span(opts: &ReadOptions, last: u64) -> Option<(u64, u64)> {
    span_within(opts, 1, last)
}

/// `opts` without its limit: reads count the events they return against it themselves, so
/// that events hidden or erased inside the range do not use it up.
fn unlimited(opts: &ReadOptions) -> ReadOptions {
    ReadOptions {
        limit: if opts.limit == 0 { 0 } else { u64::MAX },
        ..*opts
    }
}

/// Versions `[lo, hi]` that a read covers among `[first, last]`: the limit counts from the
/// first one it reads.
fn span_within(opts: &ReadOptions, first: u64, last: u64) -> Option<(u64, u64)> {
    let first = first.max(1);
    if opts.limit == 0 || last < first {
        return None;
    }
    let n = opts.limit - 1;
    match opts.direction {
        Direction::Forward => {
            let lo = opts.from.max(first);
            (lo <= last).then(|| (lo, lo.saturating_add(n).min(last)))
        }
        Direction::Backward => {
            let hi = opts.from.min(last);
            (hi >= first).then(|| (hi.saturating_sub(n).max(first), hi))
        }
    }
}

/// How many locations a stream read copies out of the index at a time.
const STREAM_CHUNK: u64 = 1024;

/// The events of one stream, from [`Store::read_stream`](crate::Store::read_stream).
///
/// Each record's own checksum is verified as it is read.
#[derive(Debug)]
pub struct StreamEvents {
    inner: Arc<Engine>,
    stream: Option<Arc<str>>,
    forward: bool,
    /// Versions still to read, inclusive.
    lo: u64,
    hi: u64,
    done: bool,
    locations: Vec<u64>,
    /// Version of `locations[0]`.
    chunk_version: u64,
    segment: SegmentCache,
    /// Indices into `locations` below this one (forward) or above it (backward) were touched.
    warmed: usize,
    /// Events older than this (a timestamp) are skipped: the stream's `max_age`.
    oldest: u64,
    /// Events still to return (the limit counts returned events, not the versions skipped).
    left: u64,
}

impl StreamEvents {
    pub(crate) fn new(inner: Arc<Engine>, stream: &str, opts: ReadOptions) -> Self {
        let wm = inner.watermark();
        let (name, visible) = {
            let ix = inner.index.read();
            (ix.name(stream), ix.visible_version(stream, wm.location))
        };
        let last = visible.unwrap_or(0);
        let rules = inner
            .rules(stream, last, wm.position)
            .unwrap_or(crate::engine::lifecycle::Rules::ALL);
        let range = span_within(&unlimited(&opts), rules.first_live, last);
        let (lo, hi) = range.unwrap_or((1, 0));
        StreamEvents {
            oldest: rules.oldest,
            left: opts.limit,
            inner,
            stream: name,
            forward: opts.direction == Direction::Forward,
            lo,
            hi,
            done: range.is_none(),
            locations: Vec::new(),
            chunk_version: 0,
            segment: SegmentCache::default(),
            warmed: 0,
        }
    }

    /// Going forward, the version after the last one read or skipped (every version below
    /// it was either returned or hidden).
    pub(crate) fn next_version(&self) -> u64 {
        self.lo
    }

    fn next_event(&mut self) -> Result<Option<RecordedEvent>> {
        if self.left == 0 {
            return Ok(None);
        }
        loop {
            match self.next_stored()? {
                None => return Ok(None),
                // Erased by a scavenge, or too old for the stream's `max_age`.
                Some(None) => {}
                Some(Some(e)) if e.timestamp < self.oldest => {}
                Some(Some(e)) => {
                    self.left -= 1;
                    return Ok(Some(e));
                }
            }
        }
    }

    /// The next version in the range: its event (live or, by age, not), or `Some(None)`
    /// when a scavenge erased it.
    fn next_stored(&mut self) -> Result<Option<Option<RecordedEvent>>> {
        if self.done || self.lo > self.hi {
            return Ok(None);
        }
        let Some(stream) = self.stream.as_ref() else {
            return Ok(None);
        };
        let version = if self.forward { self.lo } else { self.hi };
        let in_chunk = version >= self.chunk_version
            && version < self.chunk_version + self.locations.len() as u64;
        if !in_chunk {
            let start = if self.forward {
                self.lo
            } else {
                self.hi.saturating_sub(STREAM_CHUNK - 1).max(self.lo)
            };
            let len = (self.hi - self.lo + 1).min(STREAM_CHUNK) as usize;
            let (_, locs) = self
                .inner
                .index
                .read()
                .locations(stream, start, len, u64::MAX)
                .unwrap_or_default();
            if locs.is_empty() {
                return Ok(None);
            }
            self.locations = locs;
            self.chunk_version = start;
            self.warmed = if self.forward {
                0
            } else {
                self.locations.len()
            };
        }
        let at = crate::cast::usize_from(version - self.chunk_version);
        warm(
            &self.inner,
            &self.locations,
            &mut self.segment,
            self.forward,
            &mut self.warmed,
            at,
        );
        let loc = self.locations.get(at).copied().unwrap_or(0);
        let event = read_event(&self.inner, &mut self.segment, stream, version, loc)?;
        if self.forward {
            self.lo += 1;
        } else {
            self.hi -= 1;
        }
        Ok(Some(event.map(|(e, _)| e)))
    }
}

/// Touches the next [`WARM_GROUP`] records of `locations` from index `at` on (in read order)
/// once a stream read reaches records not yet touched; `warmed` is where touching stopped. A
/// stream's events are scattered through the log, so each is a cache miss; touching a group
/// with independent loads lets the CPU wait for those misses together.
pub(crate) fn warm(
    inner: &Engine,
    locations: &[u64],
    cache: &mut SegmentCache,
    forward: bool,
    warmed: &mut usize,
    at: usize,
) {
    let range = if forward {
        if at < *warmed {
            return;
        }
        let end = (at + WARM_GROUP).min(locations.len());
        *warmed = end;
        at..end
    } else {
        if at >= *warmed {
            return;
        }
        let start = (at + 1).saturating_sub(WARM_GROUP);
        *warmed = start;
        start..at + 1
    };
    let mut acc = 0u8;
    for &loc in locations.get(range).unwrap_or_default() {
        let (ordinal, offset) = unpack(loc);
        cache.segment(inner, ordinal);
        if let (Some(s), view) = cache.parts() {
            acc ^= s.touch(offset, view);
        }
    }
    std::hint::black_box(acc);
}

/// How many records a stream read touches ahead at a time (see [`warm`]).
pub(crate) const WARM_GROUP: usize = 32;

impl Iterator for StreamEvents {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_event() {
            Ok(e) => e.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The segment a stream read is in, and a view of the active segment's written bytes, kept
/// from one event to the next.
#[derive(Debug, Default)]
pub(crate) struct SegmentCache {
    seg: Option<Arc<Segment>>,
    view: bytes::Bytes,
}

impl SegmentCache {
    /// The segment switched to last, and the view, borrowed together.
    pub(crate) fn parts(&mut self) -> (Option<&Segment>, &mut bytes::Bytes) {
        (self.seg.as_deref(), &mut self.view)
    }

    /// Segment `ordinal`, switching to it (and dropping the view) if it is another one.
    pub(crate) fn segment(&mut self, inner: &Engine, ordinal: u32) -> Option<&Arc<Segment>> {
        if self.seg.as_ref().is_none_or(|s| s.ordinal != ordinal) {
            self.seg = inner.log.segment(ordinal);
            self.view = bytes::Bytes::new();
        }
        self.seg.as_ref()
    }
}

/// Reads and checks the record at index location `loc`, which must be `version` of `stream`.
/// Also returns where the record sits in its frame ([`frame::FLAG_FIRST`], [`frame::FLAG_LAST`]).
/// `None` when a scavenge erased the event.
pub(crate) fn read_event(
    inner: &Engine,
    cached: &mut SegmentCache,
    stream: &Arc<str>,
    version: u64,
    loc: u64,
) -> Result<Option<(RecordedEvent, u8)>> {
    let (ordinal, offset) = unpack(loc);
    cached.segment(inner, ordinal);
    let (seg, view) = cached.parts();
    let seg = seg.ok_or_else(|| {
        Error::corruption(
            &inner.dir,
            offset,
            format!("stream {stream:?} version {version} points at missing segment {ordinal}"),
        )
    })?;
    if seg.is_erased(offset) {
        return Ok(None);
    }
    let (bytes, at) = seg.record_source(offset, view)?;
    let r = frame::read_record(&bytes, at, true)
        .map_err(|reason| Error::corruption(&seg.path, offset, reason))?;
    if r.version != version {
        return Err(Error::corruption(
            &seg.path,
            offset,
            format!(
                "record has version {}, expected version {version} of stream {stream:?}",
                r.version
            ),
        ));
    }
    if r.erased {
        return Ok(None);
    }
    Ok(Some((recorded(Arc::clone(stream), &r, &bytes), r.edges)))
}

/// The event a decoded record describes; payload and metadata are views of `bytes`.
pub(crate) fn recorded(
    stream: Arc<str>,
    r: &frame::Record<'_>,
    bytes: &bytes::Bytes,
) -> RecordedEvent {
    RecordedEvent {
        stream,
        version: r.version,
        position: r.position,
        event_type: r.event_type.to_owned(),
        payload: bytes.slice(r.payload.clone()),
        metadata: bytes.slice(r.metadata.clone()),
        id: r.id,
        tags: crate::event::Tags::from_section(bytes.slice(r.tags.range.clone()), r.tags.count),
        timestamp: r.timestamp,
    }
}

/// Every event in position order, from [`Store::read_all`](crate::Store::read_all).
///
/// Reads whole frames and verifies each frame's checksum before decoding its events.
#[derive(Debug)]
pub struct AllEvents {
    engine: Arc<Engine>,
    dir: PathBuf,
    segments: Vec<Arc<Segment>>,
    wm: Watermark,
    forward: bool,
    /// Positions still to read, inclusive.
    lo: u64,
    hi: u64,
    done: bool,
    /// Forward: the frames being decoded, event by event.
    cursor: Option<FrameCursor>,
    /// Backward: decoded events of the current chunk; the next one to return is last.
    buf: Vec<RecordedEvent>,
    /// Events still to return (the limit counts returned events, not positions skipped).
    left: u64,
    /// A walk of every position ([`LogEntries`]): nothing hidden, erased events reported.
    raw: bool,
}

/// One position range of the log, as [`LogEntries`] walks it.
#[derive(Debug, Clone)]
pub(crate) enum Walked {
    /// An event, whatever its stream (metadata streams too) and whether or not its stream's
    /// metadata hides it; and whether it is the last event of its frame (its commit).
    Event(
        RecordedEvent,
        #[cfg_attr(not(feature = "nats"), allow(dead_code))] bool,
    ),
    /// Events a scavenge erased: from `first_position` on, each part's versions in turn.
    Erased {
        first_position: u64,
        parts: Vec<frame::ErasedPart>,
    },
}

impl Walked {
    /// The position after the entry's last one.
    pub(crate) fn end(&self) -> u64 {
        match self {
            Walked::Event(e, _) => e.position + 1,
            Walked::Erased {
                first_position,
                parts,
            } => first_position + parts.iter().map(|p| u64::from(p.count)).sum::<u64>(),
        }
    }

    fn first_position(&self) -> u64 {
        match self {
            Walked::Event(e, _) => e.position,
            Walked::Erased { first_position, .. } => *first_position,
        }
    }
}

/// Every position of the log from a given one, in order, for replication: each event
/// (metadata streams' and hidden ones included) and each run of erased events with their
/// streams and versions, so that a copy can take the same positions and versions.
#[cfg(feature = "nats")]
#[derive(Debug)]
pub(crate) struct LogEntries(AllEvents);

#[cfg(feature = "nats")]
impl LogEntries {
    /// From `from` up to `to` (at most the published position as of now).
    pub(crate) fn new(inner: &Arc<Engine>, from: u64, to: u64) -> Self {
        let mut all = AllEvents::new(inner, ReadOptions::forward_from(from));
        all.raw = true;
        all.hi = all.hi.min(to);
        LogEntries(all)
    }
}

#[cfg(feature = "nats")]
impl Iterator for LogEntries {
    type Item = Result<Walked>;

    fn next(&mut self) -> Option<Self::Item> {
        let all = &mut self.0;
        if all.done || all.lo > all.hi {
            return None;
        }
        match all.next_forward() {
            Ok(Some(w)) => Some(Ok(w)),
            Ok(None) => None,
            Err(e) => {
                all.done = true;
                Some(Err(e))
            }
        }
    }
}

impl AllEvents {
    pub(crate) fn new(inner: &Arc<Engine>, opts: ReadOptions) -> Self {
        let wm = inner.watermark();
        // Listed after the watermark was taken, so every segment it covers is here.
        let segments = inner.log.segments();
        let range = span(&unlimited(&opts), wm.position);
        let (lo, hi) = range.unwrap_or((1, 0));
        AllEvents {
            left: opts.limit,
            engine: Arc::clone(inner),
            dir: inner.dir.clone(),
            segments,
            wm,
            forward: opts.direction == Direction::Forward,
            lo,
            hi,
            done: range.is_none(),
            cursor: None,
            buf: Vec::new(),
            raw: false,
        }
    }

    /// Going forward, the position after the last one read or skipped (every position below
    /// it was either returned, hidden or erased).
    pub(crate) fn next_position(&self) -> u64 {
        self.lo
    }

    /// The segment holding `position` and the end of its visible frames.
    fn segment_of(&self, position: u64) -> Result<(Arc<Segment>, u64)> {
        let seg = crate::engine::segment::holding(&self.segments, position).ok_or_else(|| {
            Error::corruption(
                &self.dir,
                0,
                format!("no segment holds position {position}"),
            )
        })?;
        let (wm_ordinal, wm_offset) = unpack(self.wm.location);
        let end = if seg.ordinal == wm_ordinal {
            wm_offset
        } else {
            seg.end()
        };
        Ok((Arc::clone(seg), end))
    }

    fn missing(seg: &Segment, offset: u64, position: u64) -> Error {
        Error::corruption(
            &seg.path,
            offset,
            format!("position {position} is not in its segment"),
        )
    }

    /// The next event going forward (or, walking raw, erased run): decoded straight from
    /// the frames, no buffering.
    fn next_forward(&mut self) -> Result<Option<Walked>> {
        loop {
            let cursor = match &mut self.cursor {
                Some(c) => c,
                None => {
                    let (seg, end) = self.segment_of(self.lo)?;
                    let range = seg
                        .forward_range(self.lo, end)
                        .ok_or_else(|| Self::missing(&seg, end, self.lo))?;
                    let mut cursor = FrameCursor::new(seg, range)?;
                    cursor.raw = self.raw;
                    self.cursor.insert(cursor)
                }
            };
            match cursor.next(self.lo, self.hi)? {
                // Positions between `lo` and the event's were erased, in frames the cursor
                // walked (it checks that positions are dense).
                Some(w)
                    if w.first_position() == self.lo || (!self.raw && cursor.covers(self.lo)) =>
                {
                    self.lo = w.end();
                    return Ok(Some(w));
                }
                // The cursor skips positions below `lo`, so the event is past it: a gap.
                Some(_) => {
                    return Err(Error::corruption(
                        &cursor.seg.path,
                        cursor.start,
                        format!("position {} is missing from the log", self.lo),
                    ));
                }
                // Nothing more here: the range ended at `lo`, or what was walked past it was
                // erased.
                None if cursor.first.is_some_and(|f| f <= self.lo) && cursor.walked >= self.lo => {
                    self.lo = cursor.walked;
                    self.cursor = None;
                }
                None => {
                    return Err(Self::missing(&cursor.seg, cursor.start, self.lo));
                }
            }
        }
    }

    /// Decodes the sample chunk holding the next position to return, going backward.
    fn fill_backward(&mut self) -> Result<()> {
        self.buf.clear();
        let target = self.hi;
        let (seg, end) = self.segment_of(target)?;
        let range = seg
            .chunk_of(target)
            .and_then(|c| seg.chunk_range(c, end))
            .ok_or_else(|| Self::missing(&seg, end, target))?;
        let mut cursor = FrameCursor::new(Arc::clone(&seg), range)?;
        while let Some(w) = cursor.next(self.lo, self.hi)? {
            if let Walked::Event(e, _) = w {
                self.buf.push(e);
            }
        }
        // Every position up to `target` must have been walked (those not returned were
        // erased); with none returned, the chunk's are all erased: go on before it.
        if !cursor.covers(target) {
            return Err(Error::corruption(
                &seg.path,
                range.0,
                format!("position {target} is missing from the log"),
            ));
        }
        if self.buf.is_empty() {
            match cursor.first.filter(|&p| p > 1) {
                Some(p) => self.hi = p - 1,
                None => self.done = true,
            }
        }
        Ok(())
    }

    fn next_backward(&mut self) -> Result<Option<RecordedEvent>> {
        while self.buf.is_empty() {
            if self.done || self.lo > self.hi {
                return Ok(None);
            }
            self.fill_backward()?;
        }
        let Some(e) = self.buf.pop() else {
            return Ok(None);
        };
        self.hi = e.position.saturating_sub(1);
        if e.position == 1 {
            self.done = true;
        }
        Ok(Some(e))
    }
}

impl Iterator for AllEvents {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done || self.lo > self.hi || self.left == 0 {
                return None;
            }
            let next = if self.forward {
                self.next_forward().map(|w| match w {
                    Some(Walked::Event(e, _)) => Some(e),
                    // Only a raw walk reports erased runs.
                    Some(Walked::Erased { .. }) | None => None,
                })
            } else {
                self.next_backward()
            };
            match next {
                // Metadata streams' events, and those their metadata no longer keeps.
                Ok(Some(e)) if self.engine.hides(&e) => {}
                Ok(Some(e)) => {
                    self.left -= 1;
                    return Some(Ok(e));
                }
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Decodes events in position order from a byte range of frames of one segment, verifying
/// each frame's checksum when it reaches the frame, and checking that positions are dense.
#[derive(Debug)]
struct FrameCursor {
    seg: Arc<Segment>,
    bytes: bytes::Bytes,
    /// Segment offset of `bytes[0]`.
    start: u64,
    /// Offset in `bytes` of the next frame.
    offset: usize,
    /// Position the next frame must start at.
    expected: Option<u64>,
    /// The current frame's stream, shared by its events.
    stream: Option<Arc<str>>,
    /// Offset in `bytes` of the current frame's next record, and how many are left.
    record: usize,
    left: u32,
    /// Position and version the next record must have.
    position: u64,
    version: u64,
    /// The parts of a transaction's frame still to read: stream, first version, count and
    /// offset of the first record.
    pending: std::collections::VecDeque<(Arc<str>, u64, u32, usize)>,
    /// The first position of the first frame walked.
    first: Option<u64>,
    /// The position after the last frame walked (erased or not).
    walked: u64,
    /// Report erased frames and records ([`Walked::Erased`]) instead of skipping them.
    raw: bool,
}

impl FrameCursor {
    fn new(seg: Arc<Segment>, (start, stop): (u64, u64)) -> Result<Self> {
        let bytes = seg.read(start, stop - start)?;
        Ok(FrameCursor {
            seg,
            bytes,
            start,
            offset: 0,
            expected: None,
            stream: None,
            record: 0,
            left: 0,
            position: 0,
            version: 0,
            pending: std::collections::VecDeque::new(),
            first: None,
            walked: 0,
            raw: false,
        })
    }

    /// Whether the frames walked so far hold `position`.
    fn covers(&self, position: u64) -> bool {
        self.first.is_some_and(|f| f <= position) && position < self.walked
    }

    fn corrupt(&self, at: usize, reason: &'static str) -> Error {
        Error::corruption(&self.seg.path, self.start + at as u64, reason)
    }

    /// The next event with a position in `[lo, hi]` (walking raw, or erased run, cut to the
    /// range); `None` at the end of the range or once past `hi`.
    fn next(&mut self, lo: u64, hi: u64) -> Result<Option<Walked>> {
        loop {
            if self.left == 0
                && let Some((stream, version, count, record)) = self.pending.pop_front()
            {
                // The next part of a transaction's frame.
                self.stream = Some(stream);
                self.version = version;
                self.left = count;
                self.record = record;
                continue;
            }
            if self.left == 0 {
                if self.offset >= self.bytes.len() {
                    return Ok(None);
                }
                let at = self.offset;
                let f = match frame::read_frame(&self.bytes, at) {
                    FrameRead::Frame(f) => f,
                    FrameRead::End => {
                        return Err(self.corrupt(at, "empty space inside written data"));
                    }
                    FrameRead::Bad(reason) | FrameRead::Malformed(reason) => {
                        return Err(self.corrupt(at, reason));
                    }
                };
                if self.expected.is_some_and(|p| p != f.first_position) {
                    return Err(self.corrupt(at, "frame positions are not dense"));
                }
                self.expected = Some(f.last_position() + 1);
                self.first.get_or_insert(f.first_position);
                self.walked = f.last_position() + 1;
                self.offset = f.end();
                if f.erased {
                    if self.raw && f.last_position() >= lo && f.first_position <= hi {
                        let parts = f.parts().map(|p| frame::ErasedPart {
                            stream: p.stream.to_owned(),
                            first_version: p.first_version,
                            count: p.count,
                        });
                        let (first_position, parts) = clip_erased(f.first_position, parts, lo, hi);
                        return Ok(Some(Walked::Erased {
                            first_position,
                            parts,
                        }));
                    }
                    continue;
                }
                if f.first_position > hi {
                    self.offset = self.bytes.len();
                    return Ok(None);
                }
                if f.last_position() < lo {
                    continue;
                }
                if self.stream.as_deref() != Some(f.stream) {
                    self.stream = Some(Arc::from(f.stream));
                }
                self.record = f.records_offset;
                self.position = f.first_position;
                self.version = f.first_version;
                match f.parts.split_first() {
                    None => self.left = f.count,
                    Some((first, rest)) => {
                        self.left = first.count;
                        self.pending = rest
                            .iter()
                            .map(|p| {
                                (
                                    Arc::from(p.stream),
                                    p.first_version,
                                    p.count,
                                    p.records_offset,
                                )
                            })
                            .collect();
                    }
                }
                continue;
            }
            let at = self.record;
            let r = frame::read_record(&self.bytes, at, false)
                .map_err(|reason| self.corrupt(at, reason))?;
            if r.position != self.position || r.version != self.version {
                return Err(
                    self.corrupt(at, "record's position or version disagrees with its frame")
                );
            }
            self.record = r.end;
            self.left -= 1;
            self.position += 1;
            self.version += 1;
            if r.position < lo || (r.erased && !self.raw) {
                continue;
            }
            if r.position > hi {
                self.left = 0;
                self.offset = self.bytes.len();
                return Ok(None);
            }
            let Some(stream) = &self.stream else {
                return Err(self.corrupt(at, "record outside a frame"));
            };
            if r.erased {
                return Ok(Some(Walked::Erased {
                    first_position: r.position,
                    parts: vec![frame::ErasedPart {
                        stream: stream.to_string(),
                        first_version: r.version,
                        count: 1,
                    }],
                }));
            }
            let last = r.edges & frame::FLAG_LAST != 0;
            return Ok(Some(Walked::Event(
                recorded(Arc::clone(stream), &r, &self.bytes),
                last,
            )));
        }
    }
}

/// The events of an erased frame from `first_position` on (`parts` in order) that lie in
/// `[lo, hi]`: the position of the first one kept, and the parts cut to them.
pub(crate) fn clip_erased(
    first_position: u64,
    parts: impl Iterator<Item = frame::ErasedPart>,
    lo: u64,
    hi: u64,
) -> (u64, Vec<frame::ErasedPart>) {
    let mut kept = Vec::new();
    let mut position = first_position;
    for mut p in parts {
        let (start, end) = (position, position + u64::from(p.count));
        position = end;
        let (from, to) = (start.max(lo), end.min(hi.saturating_add(1)));
        if from >= to {
            continue;
        }
        p.first_version += from - start;
        p.count = u32::try_from(to - from).unwrap_or(p.count);
        kept.push(p);
    }
    (first_position.max(lo), kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erased_frames_are_cut_to_the_range() {
        let part = |s: &str, v, c| frame::ErasedPart {
            stream: s.into(),
            first_version: v,
            count: c,
        };
        let parts = || vec![part("a", 1, 3), part("b", 7, 2), part("a", 4, 1)].into_iter();
        let (first, kept) = clip_erased(10, parts(), 12, 14);
        assert_eq!(first, 12);
        assert_eq!(kept, vec![part("a", 3, 1), part("b", 7, 2)]);
        assert_eq!(
            clip_erased(10, parts(), 1, 100).1,
            parts().collect::<Vec<_>>()
        );
    }

    #[test]
    fn spans() {
        let f = ReadOptions::forward_from;
        assert_eq!(span(&f(1), 10), Some((1, 10)));
        assert_eq!(span(&f(0), 10), Some((1, 10)));
        assert_eq!(span(&f(11), 10), None);
        assert_eq!(span(&f(3).limit(2), 10), Some((3, 4)));
        assert_eq!(span(&f(3).limit(0), 10), None);
        assert_eq!(span(&ReadOptions::backward(), 10), Some((1, 10)));
        assert_eq!(span(&ReadOptions::backward().limit(3), 10), Some((8, 10)));
        assert_eq!(
            span(&ReadOptions::backward_from(2).limit(5), 10),
            Some((1, 2))
        );
        assert_eq!(span(&ReadOptions::backward_from(0), 10), None);
        assert_eq!(span(&f(1), 0), None);
    }
}
