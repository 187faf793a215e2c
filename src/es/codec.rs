//! The codec seam: how aggregates' events and states become bytes.
//!
//! The log format never depends on it: to the log a payload is opaque bytes. [`Bincode`]
//! (bincode 2, serde) is the default: compact and fast. `Json` (feature `json`, on by
//! default) stores what `annal read` and any JSON tool can show. Either, or a codec of your
//! own, is chosen per aggregate type with
//! [`Store::aggregate_with_codec`](crate::Store::aggregate_with_codec); the events of one
//! stream must all be in one codec.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes and decodes values for the aggregate layer.
pub trait Codec: Send + Sync + 'static {
    /// A short name stored with snapshots, so that a snapshot written by another codec is
    /// ignored rather than misread.
    const NAME: &'static str;

    /// Encodes a value.
    ///
    /// # Errors
    ///
    /// The codec's message when the value cannot be encoded.
    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String>;

    /// Decodes a value from exactly `bytes`.
    ///
    /// # Errors
    ///
    /// The codec's message when the bytes are not a valid encoding of `T`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String>;
}

/// bincode 2 with its standard configuration (varint integers, little-endian), limited to
/// 1 GiB per value so corrupt input cannot ask for unbounded memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

const LIMIT: usize = 1 << 30;

impl Codec for Bincode {
    const NAME: &'static str = "bincode2";

    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
        let config = bincode::config::standard().with_limit::<LIMIT>();
        bincode::serde::encode_to_vec(value, config).map_err(|e| e.to_string())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        let config = bincode::config::standard().with_limit::<LIMIT>();
        let (value, used) =
            bincode::serde::decode_from_slice(bytes, config).map_err(|e| e.to_string())?;
        if used != bytes.len() {
            return Err(format!(
                "{} trailing bytes after the value",
                bytes.len() - used
            ));
        }
        Ok(value)
    }
}

/// JSON (serde_json): events and states as the JSON text serde writes for them, readable by
/// `annal read` and any JSON tool, at some cost in size and speed against [`Bincode`].
/// Decoding takes exactly one JSON value (whitespace around it allowed).
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl Codec for Json {
    const NAME: &'static str = "json";

    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(value).map_err(|e| e.to_string())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trips_as_readable_text_and_refuses_what_it_did_not_write() {
        let value = (42u64, String::from("cart-1"), vec![1u8, 2, 3]);
        let bytes = Json::encode(&value).unwrap();
        assert_eq!(bytes, br#"[42,"cart-1",[1,2,3]]"#);
        assert_eq!(
            Json::decode::<(u64, String, Vec<u8>)>(&bytes).unwrap(),
            value
        );
        assert!(Json::decode::<(u64, String, Vec<u8>)>(&bytes[..bytes.len() - 1]).is_err());
        assert!(Json::decode::<u64>(b"1 2").is_err(), "one value only");
        assert!(Json::decode::<u64>(&Bincode::encode(&7u64).unwrap()).is_err());
    }

    #[test]
    fn bincode_round_trips_and_refuses_what_it_did_not_write() {
        let value = (42u64, String::from("cart-1"), vec![1u8, 2, 3]);
        let bytes = Bincode::encode(&value).unwrap();
        assert_eq!(
            Bincode::decode::<(u64, String, Vec<u8>)>(&bytes).unwrap(),
            value
        );
        assert!(Bincode::decode::<(u64, String, Vec<u8>)>(&bytes[..bytes.len() - 1]).is_err());
        assert!(Bincode::decode::<u64>(&[]).is_err());
    }
}
