//! The envelope of annal's small files: an 8-byte magic, the body, and a CRC-32 (IEEE) of
//! every byte before it, little-endian, at the very end.
//!
//! ```text
//! small_file := magic:[u8; 8] body crc:u32     crc = CRC-32(magic ++ body)
//! ```
//!
//! Whatever a file keeps in its body (a format version first, for most) is its own; the
//! envelope only says the bytes are whole and are that kind of file.
#![deny(clippy::indexing_slicing)]

use super::frame::Cursor;

/// One kind of small file: its magic and how its faults are worded.
#[derive(Debug)]
pub(crate) struct Kind {
    pub magic: [u8; 8],
    /// Shorter than an envelope.
    pub truncated: &'static str,
    /// The checksum does not match.
    pub checksum: &'static str,
    /// Whole, but another kind of file.
    pub wrong_magic: &'static str,
}

/// Bytes of the envelope around a body: magic and checksum.
pub(crate) const OVERHEAD: usize = 8 + 4;

impl Kind {
    /// `magic ++ body ++ crc`.
    pub(crate) fn seal(&self, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(OVERHEAD + body.len());
        b.extend_from_slice(&self.magic);
        b.extend_from_slice(body);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// The body of a sealed `buf`, once its length, checksum and magic are checked.
    pub(crate) fn open<'a>(&self, buf: &'a [u8]) -> Result<&'a [u8], &'static str> {
        let covered_len = buf
            .len()
            .checked_sub(4)
            .filter(|&n| n >= 8)
            .ok_or(self.truncated)?;
        let (covered, crc) = buf.split_at(covered_len);
        let crc: [u8; 4] = crc.try_into().map_err(|_| self.truncated)?;
        if crc32fast::hash(covered) != u32::from_le_bytes(crc) {
            return Err(self.checksum);
        }
        let (magic, body) = covered.split_at(8);
        if magic != self.magic {
            return Err(self.wrong_magic);
        }
        Ok(body)
    }

    /// The body of a sealed `buf` whose first fields are a format version (which must be
    /// `version`) and 16 bits of flags: a cursor just past them, and the body's length.
    /// `None` for anything else.
    pub(crate) fn open_versioned<'a>(
        &self,
        buf: &'a [u8],
        version: u16,
    ) -> Option<(Cursor<'a>, usize)> {
        let body = self.open(buf).ok()?;
        let mut c = Cursor::new(body, 0);
        if c.u16()? != version {
            return None;
        }
        let _flags = c.u16()?;
        Some((c, body.len()))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const TEST: Kind = Kind {
        magic: *b"ANNALTST",
        truncated: "truncated",
        checksum: "checksum",
        wrong_magic: "magic",
    };

    #[test]
    fn round_trip_and_every_fault_named() {
        let sealed = TEST.seal(b"body bytes");
        assert_eq!(sealed.len(), OVERHEAD + 10);
        assert_eq!(TEST.open(&sealed), Ok(&b"body bytes"[..]));
        for i in 0..sealed.len() {
            let mut b = sealed.clone();
            b[i] ^= 1;
            assert_eq!(TEST.open(&b), Err("checksum"), "byte {i}");
        }
        for cut in 0..sealed.len() {
            assert!(TEST.open(&sealed[..cut]).is_err(), "cut {cut}");
        }
        let other = Kind {
            magic: *b"ANNALXXX",
            ..TEST
        };
        assert_eq!(TEST.open(&other.seal(b"x")), Err("magic"));
        assert_eq!(TEST.open(&TEST.seal(b"")), Ok(&b""[..]));
    }
}
