//! The shared benchmark workload: 200-byte payloads, 16-byte event types, streams named like
//! `order-123`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "a benchmark stops at its first failure, and its sizes are small"
)]
#![allow(dead_code)]

use annal::EventData;

/// Bytes of every payload.
pub const PAYLOAD: usize = 200;

/// The stream of event `i` among `streams`.
pub fn stream_name(i: u64, streams: u64) -> String {
    format!("order-{}", mix(i) % streams)
}

/// Event `i`: its number in the first bytes of the payload.
pub fn event(i: u64) -> EventData {
    let mut payload = vec![0u8; PAYLOAD];
    payload[..8].copy_from_slice(&i.to_le_bytes());
    EventData::new(format!("OrderEvent{:06}", i % 1000), payload)
}

/// A cheap, fixed permutation-ish hash so streams interleave like real traffic.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}
