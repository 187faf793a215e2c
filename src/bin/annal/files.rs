//! Checks of the store's files other than the log's frames, byte by byte as FORMAT.md
//! describes them, for `annal verify`. The library tolerates damage in these files (it
//! ignores or rebuilds them), so it does not report it; `verify` does.

/// A finding about one file: where (byte offset, if one applies) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Byte offset within the file.
    pub offset: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

fn finding(offset: impl Into<Option<u64>>, reason: impl Into<String>) -> Finding {
    Finding {
        offset: offset.into(),
        reason: reason.into(),
    }
}

/// Little-endian reads over a byte slice; `None` past its end.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos }
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    fn string(&mut self) -> Option<String> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.bytes(n)?.to_vec()).ok()
    }
}

/// Length of a segment header; frames start right after it.
pub const SEGMENT_HEADER_LEN: u64 = 32;
/// Length of a frame header (`body_len`, CRC).
pub const FRAME_HEADER_LEN: usize = 8;

/// A segment file's header: (ordinal, base position).
pub fn segment_header(buf: &[u8]) -> Result<(u32, u64), Finding> {
    let mut c = Cursor::new(buf, 0);
    let bad = |why: &str| finding(0, format!("segment header: {why}"));
    if c.bytes(8) != Some(b"ANNALSEG") {
        return Err(bad("bad magic"));
    }
    let (version, _flags, ordinal, base, _reserved) =
        (|| Some((c.u16()?, c.u16()?, c.u32()?, c.u64()?, c.u32()?)))()
            .ok_or_else(|| bad("too short"))?;
    let crc = c.u32().ok_or_else(|| bad("too short"))?;
    if buf.get(..28).map(crc32fast::hash) != Some(crc) {
        return Err(bad("fails its CRC"));
    }
    if version != 1 {
        return Err(bad(&format!("unknown format version {version}")));
    }
    Ok((ordinal, base))
}

/// What an index checkpoint says about its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The segment it describes.
    pub ordinal: u32,
    /// The segment's base position.
    pub base_position: u64,
    /// Events in the segment.
    pub events: u64,
    /// Offset just past the segment's last frame.
    pub end: u64,
    /// The last frame's offset and its 8 header bytes (offset 0: the segment has no frame).
    pub last_frame: (u64, [u8; FRAME_HEADER_LEN]),
    /// Every record offset it lists.
    pub record_offsets: Vec<u64>,
}

/// Parses an index checkpoint (`NNNNNNNNNN.idx`) and checks its CRC and counts.
pub fn checkpoint(buf: &[u8]) -> Result<Checkpoint, Finding> {
    let body_len = buf
        .len()
        .checked_sub(4)
        .ok_or_else(|| finding(0, "checkpoint is too short"))?;
    let body = buf.get(..body_len).unwrap_or_default();
    let crc = Cursor::new(buf, body_len).u32();
    if crc != Some(crc32fast::hash(body)) {
        return Err(finding(body_len as u64, "checkpoint fails its CRC"));
    }
    let mut c = Cursor::new(body, 0);
    if c.bytes(8) != Some(b"ANNALIDX") {
        return Err(finding(0, "checkpoint has a bad magic"));
    }
    let short = |c: &Cursor<'_>| finding(c.pos as u64, "checkpoint ends early");
    let version = c.u16().ok_or_else(|| short(&c))?;
    if version != 1 {
        return Err(finding(8, format!("unknown checkpoint version {version}")));
    }
    let fields = (|| {
        let _flags = c.u16()?;
        let ordinal = c.u32()?;
        let base = c.u64()?;
        let events = c.u64()?;
        let end = c.u64()?;
        let lf_offset = c.u64()?;
        let lf_header: [u8; FRAME_HEADER_LEN] = c.array()?;
        let samples = c.u32()?;
        let runs = c.u32()?;
        Some((
            ordinal,
            base,
            events,
            end,
            (lf_offset, lf_header),
            samples,
            runs,
        ))
    })();
    let (ordinal, base_position, events, end, last_frame, samples, runs) =
        fields.ok_or_else(|| short(&c))?;
    // Counts are checked against the bytes left before anything is allocated.
    let samples_len = (samples as usize)
        .checked_mul(16)
        .filter(|&n| n <= body_len - c.pos)
        .ok_or_else(|| finding(c.pos as u64, "sample count exceeds the file"))?;
    c.bytes(samples_len).ok_or_else(|| short(&c))?;
    let mut record_offsets = Vec::new();
    for _ in 0..runs {
        let at = c.pos as u64;
        let run = (|| {
            let _stream = c.string()?;
            let _first_version = c.u64()?;
            Some(c.u32()? as usize)
        })();
        let n = run.ok_or_else(|| finding(at, "stream run is cut short or not UTF-8"))?;
        if n == 0 || n.checked_mul(8).is_none_or(|len| len > body_len - c.pos) {
            return Err(finding(at, format!("stream run has a bad count {n}")));
        }
        for _ in 0..n {
            record_offsets.push(c.u64().ok_or_else(|| short(&c))?);
        }
    }
    if c.pos != body_len {
        return Err(finding(c.pos as u64, "bytes after the last stream run"));
    }
    if record_offsets.len() as u64 != events {
        return Err(finding(
            24,
            format!(
                "lists {} records but counts {events} events",
                record_offsets.len()
            ),
        ));
    }
    Ok(Checkpoint {
        ordinal,
        base_position,
        events,
        end,
        last_frame,
        record_offsets,
    })
}

/// A snapshot record as stored in a `.snap` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Where the record starts in its file.
    pub offset: u64,
    /// The aggregate's stream.
    pub stream: String,
    /// The aggregate type it is of.
    pub aggregate: String,
    /// The stream version the state includes.
    pub version: u64,
    /// Position of the event at that version.
    pub event_position: u64,
    /// Timestamp of the event at that version.
    pub event_timestamp: u64,
}

/// Parses every record of a snapshot file; the first record that fails its checks ends it.
pub fn snapshots(buf: &[u8]) -> (Vec<SnapshotRecord>, Option<Finding>) {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < buf.len() {
        let mut c = Cursor::new(buf, offset);
        let header = (c.u32(), c.u32());
        let (Some(body_len), Some(crc)) = header else {
            return (
                records,
                Some(finding(
                    offset as u64,
                    "snapshot record header is cut short",
                )),
            );
        };
        let Some(body) = c.bytes(body_len as usize) else {
            return (
                records,
                Some(finding(
                    offset as u64,
                    "snapshot record runs past the end of the file",
                )),
            );
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&body_len.to_le_bytes());
        h.update(body);
        if body_len == 0 || h.finalize() != crc {
            return (
                records,
                Some(finding(offset as u64, "snapshot record fails its CRC")),
            );
        }
        let mut b = Cursor::new(body, 0);
        let parsed = (|| {
            let stream = b.string()?;
            let aggregate = b.string()?;
            let _codec = b.string()?;
            let _schema = b.u32()?;
            let version = b.u64()?;
            let event_position = b.u64()?;
            let event_timestamp = b.u64()?;
            let state_len = usize::try_from(b.u64()?).ok()?;
            b.bytes(state_len)?;
            (b.pos == body.len() && version >= 1).then_some(SnapshotRecord {
                offset: offset as u64,
                stream,
                aggregate,
                version,
                event_position,
                event_timestamp,
            })
        })();
        match parsed {
            Some(r) => records.push(r),
            None => {
                return (
                    records,
                    Some(finding(
                        offset as u64,
                        "snapshot record passes its CRC but does not parse",
                    )),
                );
            }
        }
        offset += FRAME_HEADER_LEN + body_len as usize;
    }
    (records, None)
}

/// Parses `STATE`: (closed cleanly, durable position).
pub fn state(buf: &[u8]) -> Result<(bool, u64), Finding> {
    let mut c = Cursor::new(buf, 0);
    if c.bytes(8) != Some(b"ANNALSTA") {
        return Err(finding(0, "STATE has a bad magic"));
    }
    let (Some(flags), Some(durable), Some(crc)) = (c.u32(), c.u64(), c.u32()) else {
        return Err(finding(0, "STATE is too short"));
    };
    if buf.get(..20).map(crc32fast::hash) != Some(crc) {
        return Err(finding(20, "STATE fails its CRC"));
    }
    Ok((flags & 1 == 1, durable))
}

/// A durable subscription's ack file (`NAME.sub`): the acknowledged position of the newest
/// valid slot, and a finding for a damaged slot.
pub fn subscription(buf: &[u8]) -> (Option<u64>, Option<Finding>) {
    let mut best: Option<(u64, u64)> = None;
    let mut damaged = None;
    for i in 0..2usize {
        let Some(slot) = buf.get(i * 32..i * 32 + 32) else {
            continue;
        };
        if slot.iter().all(|&b| b == 0) {
            continue; // never written
        }
        let mut c = Cursor::new(slot, 0);
        let ok = (|| {
            if c.bytes(8)? != b"ANNALSUB" {
                return None;
            }
            let (seq, position, _reserved, crc) = (c.u64()?, c.u64()?, c.u32()?, c.u32()?);
            (crc32fast::hash(slot.get(..28)?) == crc).then_some((seq, position))
        })();
        match ok {
            Some((seq, position)) if best.is_none_or(|(s, _)| seq > s) => {
                best = Some((seq, position));
            }
            Some(_) => {}
            None => damaged = Some(finding((i * 32) as u64, "ack slot fails its check")),
        }
    }
    (best.map(|(_, p)| p), damaged)
}

/// A projection checkpoint (`NAME.proj`): the position it was taken at.
pub fn projection(buf: &[u8]) -> Result<u64, Finding> {
    let body_len = buf
        .len()
        .checked_sub(4)
        .ok_or_else(|| finding(0, "projection checkpoint is too short"))?;
    let body = buf.get(..body_len).unwrap_or_default();
    if Cursor::new(buf, body_len).u32() != Some(crc32fast::hash(body)) {
        return Err(finding(
            body_len as u64,
            "projection checkpoint fails its CRC",
        ));
    }
    let mut c = Cursor::new(body, 0);
    let parsed = (|| {
        if c.bytes(8)? != b"ANNALPRJ" || c.u16()? != 1 {
            return None;
        }
        let (_flags, _version, position) = (c.u16()?, c.u32()?, c.u64()?);
        let len = usize::try_from(c.u64()?).ok()?;
        c.bytes(len)?;
        (c.pos == body_len).then_some(position)
    })();
    parsed.ok_or_else(|| finding(0, "projection checkpoint passes its CRC but does not parse"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_crc(mut b: Vec<u8>) -> Vec<u8> {
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn state_and_subscription_files() {
        let mut s = b"ANNALSTA".to_vec();
        s.extend_from_slice(&1u32.to_le_bytes());
        s.extend_from_slice(&42u64.to_le_bytes());
        let s = with_crc(s);
        assert_eq!(state(&s), Ok((true, 42)));
        let mut bad = s.clone();
        bad[12] ^= 1;
        assert!(state(&bad).is_err());

        let slot = |seq: u64, pos: u64| {
            let mut b = b"ANNALSUB".to_vec();
            b.extend_from_slice(&seq.to_le_bytes());
            b.extend_from_slice(&pos.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            with_crc(b)
        };
        let mut sub = slot(2, 7);
        sub.extend(slot(3, 9));
        assert_eq!(subscription(&sub), (Some(9), None));
        sub[40] ^= 1;
        let (pos, damaged) = subscription(&sub);
        assert_eq!(pos, Some(7));
        assert_eq!(damaged.and_then(|f| f.offset), Some(32));
    }

    #[test]
    fn snapshot_records_stop_at_damage() {
        let record = |stream: &str| {
            let mut body = Vec::new();
            for s in [stream, "Cart", "bincode2"] {
                body.extend_from_slice(&(s.len() as u16).to_le_bytes());
                body.extend_from_slice(s.as_bytes());
            }
            body.extend_from_slice(&1u32.to_le_bytes());
            for v in [5u64, 9, 1234, 2] {
                body.extend_from_slice(&v.to_le_bytes());
            }
            body.extend_from_slice(&[7, 7]);
            let len = (body.len() as u32).to_le_bytes();
            let mut h = crc32fast::Hasher::new();
            h.update(&len);
            h.update(&body);
            let mut r = len.to_vec();
            r.extend_from_slice(&h.finalize().to_le_bytes());
            r.extend(body);
            r
        };
        let mut file = record("cart-1");
        let second = file.len();
        file.extend(record("cart-2"));
        let (records, bad) = snapshots(&file);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].offset, second as u64);
        assert_eq!((records[0].version, records[0].event_position), (5, 9));
        assert!(bad.is_none());
        file[second + 12] ^= 1;
        let (records, bad) = snapshots(&file);
        assert_eq!(records.len(), 1);
        assert_eq!(bad.and_then(|f| f.offset), Some(second as u64));
    }
}
