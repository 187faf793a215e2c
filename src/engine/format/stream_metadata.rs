//! A stream's metadata, as the payload of a `$metadata` event in its metadata stream
//! (`$$` + the stream's name).
//!
//! ```text
//! metadata := version:u8 (1) flags:u8 max_count:u64 max_age_micros:u64
//!             truncate_before:u64 custom_len:u32 custom:[u8; custom_len]
//! flags: bit 0 max_count set, bit 1 max_age set, bit 2 truncate_before set,
//!        bit 3 deleted (a tombstone); other bits 0. A field not set is 0.
//! ```
#![deny(clippy::indexing_slicing)]

use std::time::Duration;

use super::frame::Cursor;
use crate::lifecycle::StreamMetadata;

/// The event type of a metadata event.
pub(crate) const METADATA_TYPE: &str = "$metadata";
/// The prefix of a metadata stream's name.
pub(crate) const METADATA_PREFIX: &str = "$$";
/// Longest `custom`.
pub(crate) const MAX_CUSTOM: usize = 64 * 1024;

const VERSION: u8 = 1;
const MAX_COUNT: u8 = 1;
const MAX_AGE: u8 = 2;
const TRUNCATE_BEFORE: u8 = 4;
const DELETED: u8 = 8;

/// The metadata stream of `stream`.
pub(crate) fn metadata_stream(stream: &str) -> String {
    format!("{METADATA_PREFIX}{stream}")
}

/// The stream whose metadata stream `name` is, if it is one.
pub(crate) fn described(name: &str) -> Option<&str> {
    name.strip_prefix(METADATA_PREFIX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The payload for `m`.
pub(crate) fn encode(m: &StreamMetadata) -> Vec<u8> {
    let mut flags = 0;
    let mut set = |bit: u8, on: bool| {
        if on {
            flags |= bit;
        }
    };
    set(MAX_COUNT, m.max_count.is_some());
    set(MAX_AGE, m.max_age.is_some());
    set(TRUNCATE_BEFORE, m.truncate_before.is_some());
    set(DELETED, m.deleted);
    let mut b = Vec::with_capacity(30 + m.custom.len());
    b.push(VERSION);
    b.push(flags);
    b.extend_from_slice(&m.max_count.unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&m.max_age.map_or(0, micros).to_le_bytes());
    b.extend_from_slice(&m.truncate_before.unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&crate::cast::u32_len(m.custom.len()).to_le_bytes());
    b.extend_from_slice(&m.custom);
    b
}

/// The metadata in `payload`, or what is wrong with it.
pub(crate) fn decode(payload: &[u8]) -> Result<StreamMetadata, &'static str> {
    let mut c = Cursor::new(payload, 0);
    let short = "stream metadata is cut short";
    if c.u8().ok_or(short)? != VERSION {
        return Err("stream metadata of an unknown version");
    }
    let flags = c.u8().ok_or(short)?;
    if flags & !(MAX_COUNT | MAX_AGE | TRUNCATE_BEFORE | DELETED) != 0 {
        return Err("stream metadata has unknown flags");
    }
    let max_count = c.u64().ok_or(short)?;
    let max_age = c.u64().ok_or(short)?;
    let truncate_before = c.u64().ok_or(short)?;
    let len = c.u32().ok_or(short)? as usize;
    let custom = c.bytes(len).ok_or(short)?.to_vec();
    if c.pos() != payload.len() {
        return Err("stream metadata has bytes after its end");
    }
    let on = |bit: u8| flags & bit != 0;
    Ok(StreamMetadata {
        max_count: on(MAX_COUNT).then_some(max_count),
        max_age: on(MAX_AGE).then(|| Duration::from_micros(max_age)),
        truncate_before: on(TRUNCATE_BEFORE).then_some(truncate_before),
        custom,
        deleted: on(DELETED),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_damage_is_refused() {
        let all = StreamMetadata::new()
            .max_count(7)
            .max_age(Duration::from_micros(1_500))
            .truncate_before(3)
            .custom(b"x=1".to_vec());
        for m in [
            StreamMetadata::new(),
            all.clone(),
            StreamMetadata {
                deleted: true,
                ..all
            },
        ] {
            let b = encode(&m);
            assert_eq!(decode(&b), Ok(m.clone()));
            for cut in 0..b.len() {
                assert!(
                    decode(b.get(..cut).unwrap_or_default()).is_err(),
                    "cut at {cut}"
                );
            }
            let mut longer = b.clone();
            longer.push(0);
            assert!(decode(&longer).is_err());
        }
        let mut bad = encode(&StreamMetadata::new());
        if let Some(flags) = bad.get_mut(1) {
            *flags = 0x10;
        }
        assert!(decode(&bad).is_err());
        assert_eq!(described("$$cart-1"), Some("cart-1"));
        assert_eq!(described("cart-1"), None);
        assert_eq!(metadata_stream("a"), "$$a");
    }
}
