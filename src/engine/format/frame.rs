//! The byte layout of frames and event records; `FORMAT.md` describes the same bytes in prose.
//!
//! One append is one frame, so its events become durable, or vanish in a crash, together:
//!
//! ```text
//! frame  := body_len:u32 crc:u32 body            crc = CRC-32(body_len bytes ++ body)
//! body   := first_position:u64 first_version:u64 durable:u64 count:u32 stream_len:u16 stream
//!           record*count
//!         | first_position:u64 0:u64 durable:u64 count:u32 0:u16 part_count:u16 part*part_count
//!           (a transaction over several streams, format 2: stream_len 0 marks it)
//!         | first_position:u64 0:u64 durable:u64 count:u32 0:u16 0:u16 erased_count:u32
//!           erased*erased_count zero*
//!           (an erased frame, format 3: where a scavenge erased whole frames; its events
//!            are gone, the rest of the body is zeros)
//! part   := stream_len:u16 stream first_version:u64 count:u32 record*count
//! erased := stream_len:u16 stream first_version:u64 count:u32
//! record := content_len:u32 content_crc:u32 content    content_crc = CRC-32(content)
//! content:= position:u64 version:u64 timestamp_us:u64 flags:u8 [id:u128]
//!           [tag_count:u16 (tag_len:u16 tag)*tag_count]
//!           (flags: 1 = id present, 2 = first record of its frame, 4 = last record,
//!            8 = tags present: record format 2; a record without tags is as in format 1)
//!           type_len:u16 type metadata_len:u32 metadata payload_len:u32 payload
//!         | position:u64 version:u64 0:u64 flags:u8 zero*
//!           (flags 16 = erased, format 3, with 2 and 4 as above: the event was scavenged)
//! ```
//! All integers are little-endian. A frame whose eight header bytes are all zero is empty
//! space (the unwritten, preallocated rest of a segment), never a frame.
#![deny(clippy::indexing_slicing)]

use std::ops::Range;

use crate::event::EventData;

/// Bytes before a frame's body.
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// Bytes of a body before the stream name.
const BODY_FIXED_LEN: usize = 8 + 8 + 8 + 4 + 2;
/// Bytes before a record's content.
pub(crate) const RECORD_HEADER_LEN: usize = 8;
/// Bytes of a record's content besides the id, type, metadata and payload.
const CONTENT_FIXED_LEN: usize = 8 + 8 + 8 + 1 + 2 + 4 + 4;
/// The smallest possible encoded record (one-byte type, nothing else).
pub(crate) const MIN_RECORD_LEN: usize = RECORD_HEADER_LEN + CONTENT_FIXED_LEN + 1;
const FLAG_HAS_ID: u8 = 1;
/// The record carries tags (record format 2).
const FLAG_HAS_TAGS: u8 = 8;
/// The record is the first of its frame.
pub(crate) const FLAG_FIRST: u8 = 2;
/// The record is the last of its frame.
pub(crate) const FLAG_LAST: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_HAS_ID | FLAG_FIRST | FLAG_LAST | FLAG_HAS_TAGS;
/// The record was erased by a scavenge (format 3): only its position, version and edges
/// remain, then zeros.
const FLAG_ERASED: u8 = 16;
/// Bytes of an erased record's content before its zeros.
const ERASED_CONTENT_LEN: usize = 8 + 8 + 8 + 1;
/// Bytes of an erased frame's body before its list of erased parts.
const ERASED_BODY_FIXED_LEN: usize = BODY_FIXED_LEN + 2 + 4;

/// Encoded size of one event's record.
pub(crate) fn record_len(e: &EventData) -> usize {
    RECORD_HEADER_LEN
        + CONTENT_FIXED_LEN
        + if e.id.is_some() { 16 } else { 0 }
        + tags_len(&e.tags)
        + e.event_type.len()
        + e.metadata.len()
        + e.payload.len()
}

/// Encoded size of an event's tags section (none without tags).
fn tags_len(tags: &[String]) -> usize {
    if tags.is_empty() {
        0
    } else {
        2 + tags.iter().map(|t| 2 + t.len()).sum::<usize>()
    }
}

/// Encoded size of a frame holding `events` of `stream`.
pub(crate) fn frame_len(stream: &str, events: &[EventData]) -> usize {
    FRAME_HEADER_LEN + BODY_FIXED_LEN + stream.len() + events.iter().map(record_len).sum::<usize>()
}

/// Where an append's events start and what they are numbered.
pub(crate) struct FrameStart<'a> {
    pub stream: &'a str,
    pub first_position: u64,
    pub first_version: u64,
    /// Position up to which the log was known durable when this frame was written. Recovery
    /// uses it to tell a multi-frame torn tail (nothing after the damage was ever durable) from
    /// damage to data that had been synced.
    pub durable: u64,
    /// The time of the append, for events that bring no timestamp of their own.
    pub timestamp: u64,
}

/// Appends the frame for `events` to `buf` and the offset of each record (relative to the
/// frame's start) to `record_offsets`. Lengths must already be validated to fit their fields.
pub(crate) fn encode_frame(
    buf: &mut Vec<u8>,
    start: &FrameStart<'_>,
    events: &[EventData],
    record_offsets: &mut Vec<u32>,
) {
    let frame_start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    buf.extend_from_slice(&start.first_position.to_le_bytes());
    buf.extend_from_slice(&start.first_version.to_le_bytes());
    buf.extend_from_slice(&start.durable.to_le_bytes());
    buf.extend_from_slice(&crate::cast::u32_len(events.len()).to_le_bytes());
    buf.extend_from_slice(&crate::cast::u16_len(start.stream.len()).to_le_bytes());
    buf.extend_from_slice(start.stream.as_bytes());
    let last = events.len().saturating_sub(1);
    for (i, e) in events.iter().enumerate() {
        record_offsets.push(crate::cast::u32_len(buf.len() - frame_start));
        let edges = edges(i == 0, i == last);
        let (position, version) = (
            start.first_position + i as u64,
            start.first_version + i as u64,
        );
        encode_record(buf, position, version, start.timestamp, edges, e);
    }
    seal_frame(buf, frame_start);
}

/// One stream's events in a transaction's frame.
pub(crate) struct TxPart<'a> {
    pub stream: &'a str,
    pub first_version: u64,
    pub events: &'a [EventData],
}

/// Encoded size of a transaction's frame over `parts`.
pub(crate) fn tx_frame_len(parts: &[TxPart<'_>]) -> usize {
    FRAME_HEADER_LEN
        + BODY_FIXED_LEN
        + 2
        + parts
            .iter()
            .map(|p| 2 + p.stream.len() + 8 + 4 + p.events.iter().map(record_len).sum::<usize>())
            .sum::<usize>()
}

/// Appends the frame of a transaction over several streams to `buf` (one atomic frame, one
/// contiguous range of positions from `first_position`, the parts in order) and the offset
/// of each record, relative to the frame's start, to `record_offsets`.
pub(crate) fn encode_tx_frame(
    buf: &mut Vec<u8>,
    first_position: u64,
    durable: u64,
    timestamp: u64,
    parts: &[TxPart<'_>],
    record_offsets: &mut Vec<u32>,
) {
    let frame_start = buf.len();
    let count: usize = parts.iter().map(|p| p.events.len()).sum();
    buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    buf.extend_from_slice(&first_position.to_le_bytes());
    buf.extend_from_slice(&0u64.to_le_bytes());
    buf.extend_from_slice(&durable.to_le_bytes());
    buf.extend_from_slice(&crate::cast::u32_len(count).to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf.extend_from_slice(&crate::cast::u16_len(parts.len()).to_le_bytes());
    let mut i = 0usize;
    for part in parts {
        buf.extend_from_slice(&crate::cast::u16_len(part.stream.len()).to_le_bytes());
        buf.extend_from_slice(part.stream.as_bytes());
        buf.extend_from_slice(&part.first_version.to_le_bytes());
        buf.extend_from_slice(&crate::cast::u32_len(part.events.len()).to_le_bytes());
        for (j, e) in part.events.iter().enumerate() {
            record_offsets.push(crate::cast::u32_len(buf.len() - frame_start));
            let edges = edges(i == 0, i + 1 == count);
            let position = first_position + i as u64;
            encode_record(
                buf,
                position,
                part.first_version + j as u64,
                timestamp,
                edges,
                e,
            );
            i += 1;
        }
    }
    seal_frame(buf, frame_start);
}

fn edges(first: bool, last: bool) -> u8 {
    (if first { FLAG_FIRST } else { 0 }) | (if last { FLAG_LAST } else { 0 })
}

/// Appends one record.
fn encode_record(
    buf: &mut Vec<u8>,
    position: u64,
    version: u64,
    timestamp: u64,
    edges: u8,
    e: &EventData,
) {
    let record_start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    buf.extend_from_slice(&position.to_le_bytes());
    buf.extend_from_slice(&version.to_le_bytes());
    buf.extend_from_slice(&e.timestamp.unwrap_or(timestamp).to_le_bytes());
    let mut flags = edges;
    if e.id.is_some() {
        flags |= FLAG_HAS_ID;
    }
    if !e.tags.is_empty() {
        flags |= FLAG_HAS_TAGS;
    }
    buf.push(flags);
    if let Some(id) = e.id {
        buf.extend_from_slice(&id.to_le_bytes());
    }
    if !e.tags.is_empty() {
        buf.extend_from_slice(&crate::cast::u16_len(e.tags.len()).to_le_bytes());
        for tag in &e.tags {
            buf.extend_from_slice(&crate::cast::u16_len(tag.len()).to_le_bytes());
            buf.extend_from_slice(tag.as_bytes());
        }
    }
    buf.extend_from_slice(&crate::cast::u16_len(e.event_type.len()).to_le_bytes());
    buf.extend_from_slice(e.event_type.as_bytes());
    buf.extend_from_slice(&crate::cast::u32_len(e.metadata.len()).to_le_bytes());
    buf.extend_from_slice(&e.metadata);
    buf.extend_from_slice(&crate::cast::u32_len(e.payload.len()).to_le_bytes());
    buf.extend_from_slice(&e.payload);
    let content = buf
        .get(record_start + RECORD_HEADER_LEN..)
        .unwrap_or_default();
    let crc = crc32fast::hash(content);
    let content_len = crate::cast::u32_len(content.len());
    put_u32(buf, record_start, content_len);
    put_u32(buf, record_start + 4, crc);
}

/// Overwrites the record of `content_len` content bytes at the start of `out` (a whole
/// record, header included) with an erased record of the same length: position, version
/// and edges kept, everything else zero.
pub(crate) fn erase_record(out: &mut [u8], position: u64, version: u64, edges: u8) {
    out.fill(0);
    let Some(content) = out.get_mut(RECORD_HEADER_LEN..) else {
        return;
    };
    let mut fixed = [0u8; ERASED_CONTENT_LEN];
    for (dst, src) in fixed.iter_mut().zip(
        position
            .to_le_bytes()
            .into_iter()
            .chain(version.to_le_bytes()),
    ) {
        *dst = src;
    }
    if let Some(flags) = fixed.last_mut() {
        *flags = FLAG_ERASED | (edges & (FLAG_FIRST | FLAG_LAST));
    }
    if let Some(dst) = content.get_mut(..ERASED_CONTENT_LEN) {
        dst.copy_from_slice(&fixed);
    }
    let crc = crc32fast::hash(content);
    let content_len = crate::cast::u32_len(content.len());
    put_u32(out, 0, content_len);
    put_u32(out, 4, crc);
}

/// One stream's events in an erased frame: `count` versions from `first_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErasedPart {
    pub stream: String,
    pub first_version: u64,
    pub count: u32,
}

/// Whether an erased frame listing `parts` fits in `len` bytes (header included) with room
/// for a distinct offset per event (each erased event's location stays inside the frame).
pub(crate) fn erased_frame_fits(len: usize, parts: &[ErasedPart]) -> bool {
    erased_frame_len(parts) <= len && u32::try_from(len).is_ok()
}

/// The shortest length an erased frame listing `parts` can have: room for its list, and
/// for a distinct offset per event.
pub(crate) fn erased_frame_len(parts: &[ErasedPart]) -> usize {
    let listed: usize = parts.iter().map(|p| 2 + p.stream.len() + 12).sum();
    let count: usize = parts.iter().map(|p| p.count as usize).sum();
    (FRAME_HEADER_LEN + ERASED_BODY_FIXED_LEN + listed)
        .max(FRAME_HEADER_LEN + BODY_FIXED_LEN + count * MIN_RECORD_LEN)
}

/// Writes an erased frame over all of `out` (its header included): the events of `parts`,
/// from `first_position` on, are gone. `erased_frame_fits` must hold.
pub(crate) fn erase_frame(out: &mut [u8], first_position: u64, durable: u64, parts: &[ErasedPart]) {
    out.fill(0);
    let count: u64 = parts.iter().map(|p| u64::from(p.count)).sum();
    let mut body = Vec::with_capacity(ERASED_BODY_FIXED_LEN + parts.len() * 24);
    body.extend_from_slice(&first_position.to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&durable.to_le_bytes());
    body.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&crate::cast::u32_len(parts.len()).to_le_bytes());
    for p in parts {
        body.extend_from_slice(&crate::cast::u16_len(p.stream.len()).to_le_bytes());
        body.extend_from_slice(p.stream.as_bytes());
        body.extend_from_slice(&p.first_version.to_le_bytes());
        body.extend_from_slice(&p.count.to_le_bytes());
    }
    if let Some(dst) = out.get_mut(FRAME_HEADER_LEN..FRAME_HEADER_LEN + body.len()) {
        dst.copy_from_slice(&body);
    }
    let body_len = crate::cast::u32_len(out.len().saturating_sub(FRAME_HEADER_LEN));
    // The checksum covers the list, not the zeros after it: those are holes in the file,
    // never read (reading them through a map would allocate them again, on tmpfs).
    let mut h = crc32fast::Hasher::new();
    h.update(&body_len.to_le_bytes());
    h.update(&body);
    let crc = h.finalize();
    put_u32(out, 0, body_len);
    put_u32(out, 4, crc);
}

/// Computes again the checksum of the whole frame in `frame` (header included), after some
/// of its records were erased.
pub(crate) fn reseal_frame(frame: &mut [u8]) {
    let body = frame.get(FRAME_HEADER_LEN..).unwrap_or_default();
    let covered = erased_list(body).map_or(body, |n| body.get(..n).unwrap_or(body));
    let mut h = crc32fast::Hasher::new();
    h.update(frame.get(..4).unwrap_or_default());
    h.update(covered);
    let crc = h.finalize();
    put_u32(frame, 4, crc);
}

/// Writes the frame header (length and CRC) of the frame that starts at `frame_start`.
fn seal_frame(buf: &mut [u8], frame_start: usize) {
    let body_len = crate::cast::u32_len(buf.len() - frame_start - FRAME_HEADER_LEN);
    let mut h = crc32fast::Hasher::new();
    h.update(&body_len.to_le_bytes());
    h.update(
        buf.get(frame_start + FRAME_HEADER_LEN..)
            .unwrap_or_default(),
    );
    put_u32(buf, frame_start, body_len);
    put_u32(buf, frame_start + 4, h.finalize());
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(dst) = buf.get_mut(at..at + 4) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

/// A bounds-checked little-endian reader: malformed input yields `None`, never a panic.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos }
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.array()?))
    }
}

/// A frame that passed its checksum, borrowed from the segment's bytes.
#[derive(Debug, Clone)]
pub(crate) struct Frame<'a> {
    /// Offset of the frame's header in the buffer it was read from.
    pub offset: usize,
    /// Total encoded length (header and body).
    pub len: usize,
    pub first_position: u64,
    pub first_version: u64,
    pub durable: u64,
    pub count: u32,
    /// The stream of the frame (of its first part, in a transaction's frame).
    pub stream: &'a str,
    /// Offset (in the same buffer) of the first record (of the first part).
    pub records_offset: usize,
    /// A transaction's frame: every part, the first included (empty for one stream). An
    /// erased frame: its erased parts (with no records: `records_offset` 0).
    pub parts: Vec<Part<'a>>,
    /// An erased frame (format 3): its events are gone; nothing follows its parts but zeros.
    pub erased: bool,
}

/// The events of one stream in a frame: `count` consecutive versions from `first_version`,
/// their records from `records_offset` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part<'a> {
    pub stream: &'a str,
    pub first_version: u64,
    pub count: u32,
    pub records_offset: usize,
}

/// The outcome of reading a frame at some offset.
#[derive(Debug)]
pub(crate) enum FrameRead<'a> {
    /// A frame that passed its checksum and parsed.
    Frame(Frame<'a>),
    /// Empty space: eight zero bytes, or the end of the buffer.
    End,
    /// Not a complete frame: a short header, a length running past the end, or a checksum
    /// mismatch. At the end of the log this is what a torn write looks like.
    Bad(&'static str),
    /// The checksum passed but the contents are not a frame annal writes.
    Malformed(&'static str),
}

/// Reads the frame at `offset` of `buf`.
pub(crate) fn read_frame(buf: &[u8], offset: usize) -> FrameRead<'_> {
    read_frame_checking(buf, offset, true)
}

/// Reads the frame at `offset` of `buf` as [`read_frame`] does, but without computing its
/// checksum: for bytes whose frame passed it before and that nothing has written since.
pub(crate) fn read_frame_checked_before(buf: &[u8], offset: usize) -> FrameRead<'_> {
    read_frame_checking(buf, offset, false)
}

fn read_frame_checking(buf: &[u8], offset: usize, check: bool) -> FrameRead<'_> {
    let rest = buf.get(offset..).unwrap_or_default();
    if rest.is_empty() {
        return FrameRead::End;
    }
    let mut c = Cursor::new(buf, offset);
    let (Some(len), Some(crc)) = (c.u32(), c.u32()) else {
        return if rest.iter().all(|&b| b == 0) {
            FrameRead::End
        } else {
            FrameRead::Bad("truncated frame header")
        };
    };
    if len == 0 && crc == 0 {
        return FrameRead::End;
    }
    let Some(body) = c.bytes(len as usize) else {
        return FrameRead::Bad("frame length runs past the end of the segment");
    };
    if check {
        let mut h = crc32fast::Hasher::new();
        h.update(&len.to_le_bytes());
        h.update(erased_list(body).map_or(body, |n| body.get(..n).unwrap_or(body)));
        if h.finalize() != crc {
            return FrameRead::Bad("frame checksum mismatch");
        }
    }
    match parse_body(buf, offset, len as usize) {
        Some(f) => FrameRead::Frame(f),
        None => FrameRead::Malformed("frame body does not parse"),
    }
}

fn parse_body(buf: &[u8], offset: usize, body_len: usize) -> Option<Frame<'_>> {
    let end = offset + FRAME_HEADER_LEN + body_len;
    let buf = buf.get(..end)?;
    let mut c = Cursor::new(buf, offset + FRAME_HEADER_LEN);
    let first_position = c.u64()?;
    let first_version = c.u64()?;
    let durable = c.u64()?;
    let count = c.u32()?;
    let stream_len = c.u16()? as usize;
    if count == 0 || first_position == 0 {
        return None;
    }
    // Numbers that would overflow are not numbers annal writes.
    first_position.checked_add(u64::from(count))?;
    // Every record takes at least MIN_RECORD_LEN bytes, which bounds `count` by the body.
    if (count as usize).checked_mul(MIN_RECORD_LEN)? > end - c.pos() {
        return None;
    }
    if stream_len == 0 {
        if first_version != 0 {
            return None;
        }
        if Cursor::new(buf, c.pos()).u16()? == 0 {
            return parse_erased(buf, &mut c, offset, first_position, durable, count);
        }
        let parts = parse_parts(buf, &mut c, count)?;
        let first = *parts.first()?;
        return Some(Frame {
            offset,
            len: FRAME_HEADER_LEN + body_len,
            first_position,
            first_version: first.first_version,
            durable,
            count,
            stream: first.stream,
            records_offset: first.records_offset,
            parts,
            erased: false,
        });
    }
    let stream = std::str::from_utf8(c.bytes(stream_len)?).ok()?;
    if first_version == 0 {
        return None;
    }
    first_version.checked_add(u64::from(count))?;
    Some(Frame {
        offset,
        len: FRAME_HEADER_LEN + body_len,
        first_position,
        first_version,
        durable,
        count,
        stream,
        records_offset: c.pos(),
        parts: Vec::new(),
        erased: false,
    })
}

/// Where the list of an erased frame's body ends, if `body` has the shape of one (first
/// version, stream name length and part count 0): what its checksum covers.
fn erased_list(body: &[u8]) -> Option<usize> {
    let mut c = Cursor::new(body, 8);
    if c.u64()? != 0 {
        return None;
    }
    let mut c = Cursor::new(body, BODY_FIXED_LEN - 2);
    if c.u16()? != 0 || c.u16()? != 0 {
        return None;
    }
    let n = c.u32()?;
    for _ in 0..n {
        let len = c.u16()? as usize;
        c.bytes(len.checked_add(12)?)?;
    }
    Some(c.pos())
}

/// The rest of an erased frame's body, from its part count of 0: the erased parts (in log
/// order, a stream possibly more than once), holding `count` events in all, then zeros
/// (not covered by the checksum, and not read).
fn parse_erased<'a>(
    buf: &'a [u8],
    c: &mut Cursor<'a>,
    offset: usize,
    first_position: u64,
    durable: u64,
    count: u32,
) -> Option<Frame<'a>> {
    c.u16()?;
    let n = c.u32()? as usize;
    if n == 0 || n.checked_mul(14)? > buf.len() - c.pos() {
        return None;
    }
    let mut parts = Vec::with_capacity(n);
    let mut total = 0u64;
    for _ in 0..n {
        let len = c.u16()? as usize;
        let stream = std::str::from_utf8(c.bytes(len)?).ok()?;
        let first_version = c.u64()?;
        let k = c.u32()?;
        if stream.is_empty() || first_version == 0 || k == 0 {
            return None;
        }
        first_version.checked_add(u64::from(k))?;
        total += u64::from(k);
        parts.push(Part {
            stream,
            first_version,
            count: k,
            records_offset: 0,
        });
    }
    if total != u64::from(count) {
        return None;
    }
    let first = *parts.first()?;
    Some(Frame {
        offset,
        len: buf.len() - offset,
        first_position,
        first_version: first.first_version,
        durable,
        count,
        stream: first.stream,
        records_offset: 0,
        parts,
        erased: true,
    })
}

/// The parts of a transaction's frame, each header checked and its records skipped by their
/// lengths (their contents are checked when read); they must hold `count` records in all.
fn parse_parts<'a>(buf: &'a [u8], c: &mut Cursor<'a>, count: u32) -> Option<Vec<Part<'a>>> {
    let part_count = c.u16()?;
    if part_count < 2 {
        return None;
    }
    let mut parts = Vec::with_capacity(usize::from(part_count));
    let mut streams = std::collections::HashSet::with_capacity(usize::from(part_count));
    let mut total = 0u64;
    for _ in 0..part_count {
        let len = c.u16()? as usize;
        let stream = std::str::from_utf8(c.bytes(len)?).ok()?;
        let first_version = c.u64()?;
        let n = c.u32()?;
        if stream.is_empty() || first_version == 0 || n == 0 {
            return None;
        }
        first_version.checked_add(u64::from(n))?;
        if !streams.insert(stream) {
            return None;
        }
        let records_offset = c.pos();
        for _ in 0..n {
            let content_len = Cursor::new(buf, c.pos()).u32()? as usize;
            c.bytes(RECORD_HEADER_LEN.checked_add(content_len)?)?;
        }
        total += u64::from(n);
        parts.push(Part {
            stream,
            first_version,
            count: n,
            records_offset,
        });
    }
    (total == u64::from(count) && c.pos() == buf.len()).then_some(parts)
}

impl<'a> Frame<'a> {
    /// Its parts: one per stream, in order (one part for an append to one stream).
    pub(crate) fn parts(&self) -> impl Iterator<Item = Part<'a>> + '_ {
        let single = self.parts.is_empty().then_some(Part {
            stream: self.stream,
            first_version: self.first_version,
            count: self.count,
            records_offset: self.records_offset,
        });
        single.into_iter().chain(self.parts.iter().copied())
    }

    /// Offset just past the frame.
    pub(crate) fn end(&self) -> usize {
        self.offset + self.len
    }
    /// Position of the frame's last event.
    pub(crate) fn last_position(&self) -> u64 {
        self.first_position + u64::from(self.count) - 1
    }
}

/// One event record, decoded. Ranges index the buffer it was decoded from.
#[derive(Debug, Clone)]
pub(crate) struct Record<'a> {
    pub position: u64,
    pub version: u64,
    pub timestamp: u64,
    pub id: Option<u128>,
    /// The tags, in the order given (none for a format-1 record).
    pub tags: Tags<'a>,
    /// [`FLAG_FIRST`] and [`FLAG_LAST`]: where the record sits in its frame.
    pub edges: u8,
    pub event_type: &'a str,
    pub metadata: Range<usize>,
    pub payload: Range<usize>,
    /// Offset just past the record.
    pub end: usize,
    /// An erased record (format 3): only position, version and edges are left; no type,
    /// metadata, payload, id or tags.
    pub erased: bool,
}

/// A record's tags: the encoded section, checked when the record was decoded (each tag
/// non-empty UTF-8).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tags<'a> {
    bytes: &'a [u8],
    /// Where `bytes` is in the buffer the record was decoded from.
    pub range: Range<usize>,
    pub count: u16,
}

impl<'a> Tags<'a> {
    /// Each tag, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        tags_in(self.bytes, self.count)
    }
}

/// The tags of a record's tags section (`count` of them, as `read_record` checked them).
pub(crate) fn tags_in(section: &[u8], count: u16) -> impl Iterator<Item = &str> {
    let mut c = Cursor::new(section, 0);
    (0..count).map_while(move |_| {
        let len = c.u16()? as usize;
        std::str::from_utf8(c.bytes(len)?).ok()
    })
}

/// Decodes the record at `offset` of `buf`, checking its own checksum when `verify` is set
/// (a frame's checksum already covers its records).
pub(crate) fn read_record(
    buf: &[u8],
    offset: usize,
    verify: bool,
) -> Result<Record<'_>, &'static str> {
    let mut c = Cursor::new(buf, offset);
    let content_len = c.u32().ok_or("truncated record header")? as usize;
    let crc = c.u32().ok_or("truncated record header")?;
    let content_start = c.pos();
    let content = c.bytes(content_len).ok_or("record runs past its segment")?;
    if verify && crc32fast::hash(content) != crc {
        return Err("record checksum mismatch");
    }
    let end = c.pos();
    let mut c = Cursor::new(buf.get(..end).ok_or("record out of range")?, content_start);
    let bad = "record content does not parse";
    let position = c.u64().ok_or(bad)?;
    let version = c.u64().ok_or(bad)?;
    let timestamp = c.u64().ok_or(bad)?;
    let flags = c.u8().ok_or(bad)?;
    if flags & FLAG_ERASED != 0 {
        if flags & !(FLAG_ERASED | FLAG_FIRST | FLAG_LAST) != 0 {
            return Err("erased record has other flags");
        }
        let rest = buf.get(c.pos()..end).ok_or(bad)?;
        if timestamp != 0 || rest.iter().any(|&b| b != 0) {
            return Err("erased record is not zero after its header");
        }
        return Ok(Record {
            position,
            version,
            timestamp: 0,
            id: None,
            tags: Tags::default(),
            edges: flags & (FLAG_FIRST | FLAG_LAST),
            event_type: "",
            metadata: end..end,
            payload: end..end,
            end,
            erased: true,
        });
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err("record has unknown flags");
    }
    let id = match flags & FLAG_HAS_ID {
        0 => None,
        _ => Some(c.u128().ok_or(bad)?),
    };
    let tags = match flags & FLAG_HAS_TAGS {
        0 => Tags::default(),
        _ => {
            let count = c.u16().ok_or(bad)?;
            let start = c.pos();
            for _ in 0..count {
                let len = c.u16().ok_or(bad)? as usize;
                let tag = c.bytes(len).ok_or(bad)?;
                if tag.is_empty() {
                    return Err("record has an empty tag");
                }
                std::str::from_utf8(tag).map_err(|_| "tag is not UTF-8")?;
            }
            let bytes = buf.get(start..c.pos()).ok_or(bad)?;
            if count == 0 {
                return Err("record says it has tags and has none");
            }
            Tags {
                bytes,
                range: start..c.pos(),
                count,
            }
        }
    };
    let type_len = c.u16().ok_or(bad)? as usize;
    let event_type = std::str::from_utf8(c.bytes(type_len).ok_or(bad)?)
        .map_err(|_| "event type is not UTF-8")?;
    let meta_len = c.u32().ok_or(bad)? as usize;
    let meta_start = c.pos();
    c.bytes(meta_len).ok_or(bad)?;
    let payload_len = c.u32().ok_or(bad)? as usize;
    let payload_start = c.pos();
    c.bytes(payload_len).ok_or(bad)?;
    if c.pos() != end {
        return Err("record length disagrees with its fields");
    }
    Ok(Record {
        position,
        version,
        timestamp,
        id,
        tags,
        edges: flags & (FLAG_FIRST | FLAG_LAST),
        event_type,
        metadata: meta_start..meta_start + meta_len,
        payload: payload_start..payload_start + payload_len,
        end,
        erased: false,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Vec<u32>) {
        let events = vec![
            EventData::new("Created", &b"abc"[..])
                .with_id(7)
                .with_tags(["course:c1", "student:ü"]),
            EventData::new("Added", &b""[..]).with_metadata(&b"m"[..]),
        ];
        let mut buf = vec![];
        let mut offs = vec![];
        let start = FrameStart {
            stream: "s-1",
            first_position: 5,
            first_version: 2,
            durable: 4,
            timestamp: 9,
        };
        encode_frame(&mut buf, &start, &events, &mut offs);
        assert_eq!(buf.len(), frame_len("s-1", &events));
        (buf, offs)
    }

    #[test]
    fn round_trip() {
        let (buf, offs) = sample();
        let FrameRead::Frame(f) = read_frame(&buf, 0) else {
            panic!("not a frame")
        };
        assert_eq!(
            (f.first_position, f.first_version, f.count, f.stream),
            (5, 2, 2, "s-1")
        );
        assert_eq!(f.len, buf.len());
        let r0 = read_record(&buf, offs[0] as usize, true).unwrap();
        assert_eq!(
            (r0.position, r0.version, r0.timestamp, r0.id, r0.event_type),
            (5, 2, 9, Some(7), "Created")
        );
        assert_eq!(&buf[r0.payload.clone()], b"abc");
        assert_eq!(
            r0.tags.iter().collect::<Vec<_>>(),
            ["course:c1", "student:ü"]
        );
        assert_eq!(r0.edges, FLAG_FIRST);
        let r1 = read_record(&buf, r0.end, true).unwrap();
        assert_eq!(r1.edges, FLAG_LAST);
        assert_eq!(r0.end, offs[1] as usize);
        assert_eq!(
            (r1.position, r1.version, r1.id, r1.event_type),
            (6, 3, None, "Added")
        );
        assert_eq!(&buf[r1.metadata.clone()], b"m");
        assert_eq!(r1.tags.iter().count(), 0);
        assert_eq!(r1.end, buf.len());
    }

    #[test]
    fn an_erased_record_keeps_its_length_position_version_and_edges_only() {
        let (mut buf, offs) = sample();
        let (a, b) = (offs[0] as usize, offs[1] as usize);
        erase_record(&mut buf[a..b], 5, 2, FLAG_FIRST);
        reseal_frame(&mut buf);
        let FrameRead::Frame(f) = read_frame(&buf, 0) else {
            panic!("not a frame")
        };
        assert!(!f.erased);
        let r0 = read_record(&buf, a, true).unwrap();
        assert!(r0.erased);
        assert_eq!(
            (r0.position, r0.version, r0.edges, r0.end),
            (5, 2, FLAG_FIRST, b)
        );
        assert_eq!((r0.id, r0.event_type, r0.payload.len()), (None, "", 0));
        assert!(
            buf[a + RECORD_HEADER_LEN + ERASED_CONTENT_LEN..b]
                .iter()
                .all(|&x| x == 0)
        );
        let r1 = read_record(&buf, b, true).unwrap();
        assert!(!r1.erased && r1.event_type == "Added");
        // Anything but zeros after its header is refused.
        let mut bad = buf.clone();
        bad[b - 1] = 1;
        let crc = crc32fast::hash(&bad[a + RECORD_HEADER_LEN..b]);
        bad[a + 4..a + 8].copy_from_slice(&crc.to_le_bytes());
        assert!(read_record(&bad, a, true).is_err());
    }

    #[test]
    fn an_erased_frame_lists_its_streams_and_is_zeros_after() {
        let (buf, _) = sample();
        let (tx, _) = tx_sample();
        let mut run = [buf.clone(), tx.clone()].concat();
        let parts = vec![
            ErasedPart {
                stream: "s-1".into(),
                first_version: 2,
                count: 2,
            },
            ErasedPart {
                stream: "acct-a".into(),
                first_version: 4,
                count: 1,
            },
        ];
        assert!(erased_frame_fits(run.len(), &parts));
        erase_frame(&mut run, 5, 4, &parts);
        let FrameRead::Frame(f) = read_frame(&run, 0) else {
            panic!("not a frame")
        };
        assert!(f.erased);
        assert_eq!(
            (f.first_position, f.count, f.len, f.durable),
            (5, 3, run.len(), 4)
        );
        let listed: Vec<(&str, u64, u32)> = f
            .parts()
            .map(|p| (p.stream, p.first_version, p.count))
            .collect();
        assert_eq!(listed, [("s-1", 2, 2), ("acct-a", 4, 1)]);
        // Most of it is zeros: the blocks a file system need not keep.
        assert!(run.iter().filter(|&&b| b == 0).count() > run.len() / 2);
        // Counts that disagree, or bytes after the list, are not a frame annal writes.
        let mut wrong = run.clone();
        erase_frame(&mut wrong, 5, 4, &parts[..1]);
        wrong[8 + 24..8 + 28].copy_from_slice(&3u32.to_le_bytes());
        reseal_frame(&mut wrong);
        assert!(matches!(read_frame(&wrong, 0), FrameRead::Malformed(_)));
        // The zeros after the list are neither covered nor read: a flipped bit in the list
        // is caught, one in the zeros changes nothing.
        let mut in_list = run.clone();
        in_list[8 + 40] ^= 1;
        assert!(matches!(read_frame(&in_list, 0), FrameRead::Bad(_)));
        let mut in_zeros = run.clone();
        let last = in_zeros.len() - 1;
        in_zeros[last] = 1;
        assert!(
            matches!(read_frame(&in_zeros, 0), FrameRead::Frame(f) if f.erased && f.count == 3)
        );
        // Too small a span for the list is refused before writing.
        assert!(!erased_frame_fits(40, &parts));
    }

    #[test]
    fn a_record_without_tags_is_byte_for_byte_a_format_1_record() {
        // Format 1's layout, written out by hand: nothing between the flags and the type.
        let e = EventData::new("T", &b"p"[..]).with_id(3);
        let mut buf = vec![];
        let start = FrameStart {
            stream: "s",
            first_position: 1,
            first_version: 1,
            durable: 0,
            timestamp: 2,
        };
        encode_frame(&mut buf, &start, std::slice::from_ref(&e), &mut vec![]);
        let record = &buf[FRAME_HEADER_LEN + BODY_FIXED_LEN + 1 + RECORD_HEADER_LEN..];
        let mut v1 = vec![];
        v1.extend_from_slice(&1u64.to_le_bytes());
        v1.extend_from_slice(&1u64.to_le_bytes());
        v1.extend_from_slice(&2u64.to_le_bytes());
        v1.push(FLAG_HAS_ID | FLAG_FIRST | FLAG_LAST);
        v1.extend_from_slice(&3u128.to_le_bytes());
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(b"T");
        v1.extend_from_slice(&0u32.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(b"p");
        assert_eq!(record, &v1[..]);
    }

    #[test]
    fn malformed_tags_are_refused() {
        let tagged = |tags: &[&[u8]], count: u16| {
            let mut content = vec![];
            content.extend_from_slice(&1u64.to_le_bytes());
            content.extend_from_slice(&1u64.to_le_bytes());
            content.extend_from_slice(&0u64.to_le_bytes());
            content.push(FLAG_HAS_TAGS | FLAG_FIRST | FLAG_LAST);
            content.extend_from_slice(&count.to_le_bytes());
            for t in tags {
                content.extend_from_slice(&crate::cast::u16_len(t.len()).to_le_bytes());
                content.extend_from_slice(t);
            }
            content.extend_from_slice(&1u16.to_le_bytes());
            content.extend_from_slice(b"T");
            content.extend_from_slice(&0u32.to_le_bytes());
            content.extend_from_slice(&0u32.to_le_bytes());
            let mut rec = vec![];
            rec.extend_from_slice(&crate::cast::u32_len(content.len()).to_le_bytes());
            rec.extend_from_slice(&crc32fast::hash(&content).to_le_bytes());
            rec.extend_from_slice(&content);
            rec
        };
        let good = tagged(&[b"a", b"b"], 2);
        let r = read_record(&good, 0, true).unwrap();
        assert_eq!(r.tags.iter().collect::<Vec<_>>(), ["a", "b"]);
        for (bad, why) in [
            (tagged(&[], 0), "says it has tags"),
            (tagged(&[b""], 1), "empty tag"),
            (tagged(&[&[0xff]], 1), "not UTF-8"),
            (tagged(&[b"a"], 2), "does not parse"),
        ] {
            let err = read_record(&bad, 0, true).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    fn tx_sample() -> (Vec<u8>, Vec<u32>) {
        let a = [EventData::new("Debited", &b"10"[..]).with_id(1)];
        let b = [
            EventData::new("Credited", &b"10"[..]),
            EventData::new("Noted", &b""[..]).with_tags(["t"]),
        ];
        let parts = [
            TxPart {
                stream: "account-a",
                first_version: 4,
                events: &a,
            },
            TxPart {
                stream: "account-b",
                first_version: 1,
                events: &b,
            },
        ];
        let (mut buf, mut offs) = (vec![], vec![]);
        encode_tx_frame(&mut buf, 11, 10, 99, &parts, &mut offs);
        assert_eq!(buf.len(), tx_frame_len(&parts));
        (buf, offs)
    }

    #[test]
    fn a_transactions_frame_reads_back_part_by_part() {
        let (buf, offs) = tx_sample();
        let FrameRead::Frame(f) = read_frame(&buf, 0) else {
            panic!("not a frame")
        };
        assert_eq!((f.first_position, f.count, f.len), (11, 3, buf.len()));
        let parts: Vec<_> = f
            .parts()
            .map(|p| (p.stream, p.first_version, p.count))
            .collect();
        assert_eq!(parts, [("account-a", 4, 1), ("account-b", 1, 2)]);
        let mut at = 0;
        for (i, (want_pos, want_ver, edges)) in
            [(11, 4, FLAG_FIRST), (12, 1, 0), (13, 2, FLAG_LAST)]
                .into_iter()
                .enumerate()
        {
            let r = read_record(&buf, offs[i] as usize, true).unwrap();
            assert_eq!(
                (r.position, r.version, r.edges),
                (want_pos, want_ver, edges)
            );
            at = r.end;
        }
        assert_eq!(at, buf.len());
        // Every flipped bit fails the frame; every cut leaves no frame.
        for i in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(!matches!(read_frame(&b, 0), FrameRead::Frame(_)), "bit {i}");
        }
        for cut in 1..buf.len() {
            assert!(
                !matches!(read_frame(&buf[..cut], 0), FrameRead::Frame(_)),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_malformed_transactions_frame_is_not_a_frame() {
        // Rewrites a body field and the frame's CRC, as a writer with a bug would.
        let reseal = |mut b: Vec<u8>| {
            let body_len = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
            let mut h = crc32fast::Hasher::new();
            h.update(&b[..4]);
            h.update(&b[8..8 + body_len]);
            b[4..8].copy_from_slice(&h.finalize().to_le_bytes());
            b
        };
        let (buf, _) = tx_sample();
        let parts_at = FRAME_HEADER_LEN + BODY_FIXED_LEN;
        let mut one_part = buf.clone();
        one_part[parts_at..parts_at + 2].copy_from_slice(&1u16.to_le_bytes());
        let mut versioned = buf.clone();
        versioned[FRAME_HEADER_LEN + 8..FRAME_HEADER_LEN + 16].copy_from_slice(&1u64.to_le_bytes());
        let mut miscounted = buf.clone();
        miscounted[FRAME_HEADER_LEN + 24..FRAME_HEADER_LEN + 28]
            .copy_from_slice(&2u32.to_le_bytes());
        // The second part renamed to the first's stream.
        let mut twice = buf.clone();
        let second = twice.windows(9).rposition(|w| w == b"account-b").unwrap();
        twice[second + 8] = b'a';
        for (bad, what) in [
            (one_part, "one part"),
            (versioned, "a first version in the header"),
            (miscounted, "counts that disagree"),
            (twice, "one stream twice"),
        ] {
            assert!(
                matches!(read_frame(&reseal(bad), 0), FrameRead::Malformed(_)),
                "{what}"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let (buf, offs) = sample();
        for i in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(!matches!(read_frame(&b, 0), FrameRead::Frame(_)), "bit {i}");
            if i / 8 >= offs[0] as usize {
                // Records carry their own checksum for point reads.
                let r0 = read_record(&b, offs[0] as usize, true);
                let r1 = read_record(&b, offs[1] as usize, true);
                assert!(r0.is_err() || r1.is_err(), "bit {i}");
            }
        }
    }

    #[test]
    fn every_truncation_is_bad_not_a_frame() {
        let (buf, _) = sample();
        for cut in 1..buf.len() {
            let mut b = buf[..cut].to_vec();
            assert!(matches!(read_frame(&b, 0), FrameRead::Bad(_)), "cut {cut}");
            b.resize(buf.len() + 16, 0);
            // Lost bytes that were zeros anyway leave the frame whole, and that is correct.
            if b[..buf.len()] != buf[..] {
                assert!(
                    matches!(read_frame(&b, 0), FrameRead::Bad(_)),
                    "zero-padded cut {cut}"
                );
            }
        }
        assert!(matches!(read_frame(&[0u8; 16], 0), FrameRead::End));
        assert!(matches!(read_frame(&[], 0), FrameRead::End));
    }
}
