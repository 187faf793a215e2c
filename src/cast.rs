//! Integer conversions the code relies on being lossless, in one place, so that the
//! `cast_possible_truncation` lint can be denied everywhere else.
//!
//! annal supports 64-bit targets only (checked at compile time below): a `u64` offset or
//! length always fits a `usize` there. Length fields of the on-disk format are narrower than
//! `usize`; every length written into one was bounded before (an append is validated, names
//! are limited), and a length that did not fit would fail the record's own checks when read,
//! never be read as valid.

const _: () = assert!(usize::BITS >= 64, "annal needs a 64-bit target");

/// `n` as a `usize`: lossless on the 64-bit targets annal builds for.
pub(crate) fn usize_from(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A length for a `u32` field of the format, which the caller has bounded.
pub(crate) fn u32_len(n: usize) -> u32 {
    debug_assert!(
        u32::try_from(n).is_ok(),
        "length {n} does not fit its u32 field"
    );
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A length for a `u16` field of the format, which the caller has bounded.
pub(crate) fn u16_len(n: usize) -> u16 {
    debug_assert!(
        u16::try_from(n).is_ok(),
        "length {n} does not fit its u16 field"
    );
    u16::try_from(n).unwrap_or(u16::MAX)
}
