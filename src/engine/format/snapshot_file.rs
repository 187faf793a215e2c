//! Snapshot files, `NNNNNNNNNN.snap`: records appended one after another, each with its own
//! length and CRC, so a torn or damaged record ends the file's readable part.
//!
//! ```text
//! record := body_len:u32 crc:u32 body       crc = CRC-32(body_len ++ body)
//! body   := stream_len:u16 stream aggregate_len:u16 aggregate codec_len:u16 codec
//!           schema:u32 version:u64 event_position:u64 event_timestamp:u64
//!           state_len:u64 state
//! ```
#![deny(clippy::indexing_slicing)]

use super::frame::Cursor;

/// File name suffix of a snapshot file.
pub(crate) const SUFFIX: &str = ".snap";
/// Bytes before a record's body: its length and CRC.
const RECORD_HEADER_LEN: usize = 8;

/// The name of snapshot file `n`.
pub(crate) fn file_name(n: u32) -> String {
    format!("{n:010}{SUFFIX}")
}

/// The number of a snapshot file, from its name.
pub(crate) fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub stream: String,
    pub aggregate: String,
    pub schema: u32,
    pub codec: String,
    /// The stream version the state includes.
    pub version: u64,
    /// Position and timestamp of the event at `version`: the history this state was folded from.
    pub event_position: u64,
    pub event_timestamp: u64,
    pub state: Vec<u8>,
}

/// One record: length, CRC, body; `None` when a name is longer than its `u16` length
/// field holds, or the record longer than its `u32` one.
pub(crate) fn encode(s: &Snapshot) -> Option<Vec<u8>> {
    let name = |b: &mut Vec<u8>, text: &str| -> Option<()> {
        b.extend_from_slice(&u16::try_from(text.len()).ok()?.to_le_bytes());
        b.extend_from_slice(text.as_bytes());
        Some(())
    };
    // Sized once: the fixed fields are 3 names' lengths and 5 numbers.
    let len = RECORD_HEADER_LEN
        + 6
        + s.stream.len()
        + s.aggregate.len()
        + s.codec.len()
        + 36
        + s.state.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    name(&mut b, &s.stream)?;
    name(&mut b, &s.aggregate)?;
    name(&mut b, &s.codec)?;
    b.extend_from_slice(&s.schema.to_le_bytes());
    b.extend_from_slice(&s.version.to_le_bytes());
    b.extend_from_slice(&s.event_position.to_le_bytes());
    b.extend_from_slice(&s.event_timestamp.to_le_bytes());
    b.extend_from_slice(&(s.state.len() as u64).to_le_bytes());
    b.extend_from_slice(&s.state);
    let body_len = u32::try_from(b.len() - RECORD_HEADER_LEN).ok()?;
    let mut h = crc32fast::Hasher::new();
    h.update(&body_len.to_le_bytes());
    h.update(b.get(RECORD_HEADER_LEN..).unwrap_or_default());
    let crc = h.finalize();
    b.get_mut(..4)?.copy_from_slice(&body_len.to_le_bytes());
    b.get_mut(4..RECORD_HEADER_LEN)?
        .copy_from_slice(&crc.to_le_bytes());
    Some(b)
}

/// Decodes the record at `offset` of `buf`: the snapshot and the record's total length.
/// `None` for anything that is not an intact record (end of data included).
pub(crate) fn decode(buf: &[u8], offset: usize) -> Option<(Snapshot, usize)> {
    let mut c = Cursor::new(buf, offset);
    let body_len = c.u32()?;
    let crc = c.u32()?;
    let body = c.bytes(body_len as usize)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&body_len.to_le_bytes());
    h.update(body);
    if body_len == 0 || h.finalize() != crc {
        return None;
    }
    let mut c = Cursor::new(body, 0);
    let string = |c: &mut Cursor<'_>| -> Option<String> {
        let n = c.u16()? as usize;
        String::from_utf8(c.bytes(n)?.to_vec()).ok()
    };
    let stream = string(&mut c)?;
    let aggregate = string(&mut c)?;
    let codec = string(&mut c)?;
    let schema = c.u32()?;
    let version = c.u64()?;
    let event_position = c.u64()?;
    let event_timestamp = c.u64()?;
    let state_len = usize::try_from(c.u64()?).ok()?;
    let state = c.bytes(state_len)?.to_vec();
    if c.pos() != body.len() || version == 0 {
        return None;
    }
    let s = Snapshot {
        stream,
        aggregate,
        schema,
        codec,
        version,
        event_position,
        event_timestamp,
        state,
    };
    Some((s, RECORD_HEADER_LEN + body_len as usize))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            stream: "cart-1".into(),
            aggregate: "Cart".into(),
            schema: 2,
            codec: "bincode2".into(),
            version: 1000,
            event_position: 5000,
            event_timestamp: 77,
            state: vec![1, 2, 3],
        }
    }

    #[test]
    fn record_round_trip_and_damage_rejected() {
        let b = encode(&snap()).unwrap();
        assert_eq!(decode(&b, 0), Some((snap(), b.len())));
        let long = Snapshot {
            aggregate: "A".repeat(70_000),
            ..snap()
        };
        assert_eq!(encode(&long), None, "a name longer than its length field");
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x08;
            assert_eq!(decode(&d, 0), None, "byte {i}");
        }
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut], 0), None);
        }
    }
}
