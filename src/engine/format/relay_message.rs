//! The messages the relay publishes to NATS JetStream (feature `nats`), one per event or
//! per run of erased events, and what a replica reads back from them.
//!
//! An event's message: subject `<prefix>.<token of its stream>`, payload the event's data,
//! and the headers named below. A run of erased events (a scavenge's, or events of a
//! hard-deleted stream when the relay reaches them): subject `<prefix>._annal.erased`,
//! headers `Nats-Msg-Id`, [`POSITION`] (the first) and [`ERASED`] (how many), and a payload
//! listing their streams and versions:
//!
//! ```text
//! erased := count:u32 part*count
//! part   := stream_len:u16 stream first_version:u64 count:u32
//! ```
//!
//! Tokens: a stream name (or event type, or tag) is written as its UTF-8 bytes with every
//! byte outside `A-Z a-z 0-9 - _` as `%` and two upper-case hex digits; so the result is
//! one valid subject token and a valid header value, and decodes back to the name.
#![deny(clippy::indexing_slicing)]

use super::frame::{Cursor, ErasedPart};

/// `Nats-Msg-Id`: `<prefix>:<position>`, JetStream's key for deduplication.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";
/// The sequence JetStream must be at: so a lost message fails every one after it.
pub(crate) const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
/// The event's global position (an erased run's first).
pub(crate) const POSITION: &str = "Annal-Position";
/// The event's stream, as a token.
pub(crate) const STREAM: &str = "Annal-Stream";
/// The event's stream version.
pub(crate) const VERSION: &str = "Annal-Version";
/// The event's type, as a token.
pub(crate) const TYPE: &str = "Annal-Type";
/// The event's id, 32 lower-case hex digits (absent when it has none).
pub(crate) const ID: &str = "Annal-Id";
/// The event's timestamp, microseconds since the Unix epoch.
pub(crate) const TIMESTAMP: &str = "Annal-Timestamp";
/// The event's metadata, standard base64 (absent when empty).
pub(crate) const METADATA: &str = "Annal-Metadata";
/// The event's tags, tokens separated by `,` (absent when none).
pub(crate) const TAGS: &str = "Annal-Tags";
/// `1` on every event of a commit (a frame) but its last: a replica writes a commit whole.
/// (Absent on the last, so an append of one event, the usual case, carries no such header.)
pub(crate) const COMMIT_MORE: &str = "Annal-Commit-More";
/// An erased run: how many positions it covers.
pub(crate) const ERASED: &str = "Annal-Erased";
/// The subject, after the prefix, of erased runs (two tokens: no stream's subject).
pub(crate) const ERASED_SUBJECT: &str = "_annal.erased";

fn safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `name` as a subject token (see the module docs).
pub(crate) fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if safe(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 15));
        }
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The name a token stands for; `None` for anything [`token`] does not write.
pub(crate) fn untoken(token: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(token.len());
    let mut it = token.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hi = hex_value(it.next()?)?;
            let lo = hex_value(it.next()?)?;
            let v = hi << 4 | lo;
            if safe(v) {
                return None;
            }
            bytes.push(v);
        } else if safe(b) {
            bytes.push(b);
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// Tags as one header value.
pub(crate) fn tags_value<'a>(tags: impl Iterator<Item = &'a str>) -> String {
    tags.map(token).collect::<Vec<_>>().join(",")
}

/// The tags of a header value.
pub(crate) fn tags_of(value: &str) -> Option<Vec<String>> {
    value.split(',').map(untoken).collect()
}

/// The payload of an erased run.
pub(crate) fn encode_erased(parts: &[ErasedPart]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&crate::cast::u32_len(parts.len()).to_le_bytes());
    for p in parts {
        let len = u16::try_from(p.stream.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(p.stream.as_bytes());
        out.extend_from_slice(&p.first_version.to_le_bytes());
        out.extend_from_slice(&p.count.to_le_bytes());
    }
    out
}

/// The parts of an erased run's payload, checked: at least one, each with a name and a
/// count, and nothing after them.
pub(crate) fn decode_erased(buf: &[u8]) -> Result<Vec<ErasedPart>, &'static str> {
    let short = "erased run's payload is truncated";
    let mut c = Cursor::new(buf, 0);
    let n = c.u32().ok_or(short)?;
    if n == 0 {
        return Err("erased run lists no events");
    }
    let mut parts = Vec::new();
    for _ in 0..n {
        let len = c.u16().ok_or(short)?;
        let name = c.bytes(usize::from(len)).ok_or(short)?;
        let stream = std::str::from_utf8(name)
            .map_err(|_| "erased run names a stream that is not UTF-8")?
            .to_owned();
        let first_version = c.u64().ok_or(short)?;
        let count = c.u32().ok_or(short)?;
        if stream.is_empty() || first_version == 0 || count == 0 {
            return Err("erased run has an empty part");
        }
        parts.push(ErasedPart {
            stream,
            first_version,
            count,
        });
    }
    if c.pos() != buf.len() {
        return Err("erased run's payload has bytes after its parts");
    }
    Ok(parts)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_subject_safe_and_reversible() {
        for name in [
            "cart-42", "a.b", "*", ">", "x y", "$$cart-1", "%41", "ü", "a_b",
        ] {
            let t = token(name);
            assert!(t.bytes().all(|b| safe(b) || b == b'%'), "{t}");
            assert_eq!(untoken(&t).as_deref(), Some(name));
        }
        assert_eq!(token("cart-42"), "cart-42");
        assert_eq!(token("a.b"), "a%2Eb");
        // Only what `token` writes decodes: no escaped safe byte, no bad digit, no empty.
        for bad in ["%41", "%2e", "%2", "a.b", "", "%FF"] {
            assert_eq!(untoken(bad), None, "{bad}");
        }
        assert_eq!(
            tags_of(&tags_value(["a,b", "c"].into_iter())),
            Some(vec!["a,b".to_string(), "c".to_string()])
        );
    }

    #[test]
    fn erased_runs_round_trip_and_damage_is_refused() {
        let parts = vec![
            ErasedPart {
                stream: "a".into(),
                first_version: 3,
                count: 2,
            },
            ErasedPart {
                stream: "$$b".into(),
                first_version: 1,
                count: 1,
            },
        ];
        let b = encode_erased(&parts);
        assert_eq!(decode_erased(&b), Ok(parts));
        for cut in 0..b.len() {
            assert!(decode_erased(&b[..cut]).is_err());
        }
        assert!(decode_erased(&[0, 0, 0, 0]).is_err());
    }
}
