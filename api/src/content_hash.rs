//! [`ContentHash`]: what names a content everywhere, the BLAKE3 hash of its
//! bytes.

use crate::{InvalidField, decode_hex, hex_newtype, shown};

/// Length of a content hash in hex digits (BLAKE3, 32 bytes).
pub const HASH_HEX_LEN: usize = 64;

/// The BLAKE3 hash of a file's bytes: 32 bytes, written as 64 lowercase hex
/// digits on the wire and in the database.
///
/// Ordered like its hex form, so sorting hashes sorts their text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// The hash with these bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        ContentHash(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses exactly 64 lowercase hex digits; the error says what a hash
    /// looks like and shows (the start of) what was given.
    pub fn parse(text: &str) -> Result<Self, InvalidField> {
        decode_hex::<32>(text).map(ContentHash).ok_or_else(|| {
            InvalidField(format!(
                "hash {:?} is not a BLAKE3 hash: expected {HASH_HEX_LEN} lowercase hex digits",
                shown(text, 80)
            ))
        })
    }
}

hex_newtype!(ContentHash, 32, "a BLAKE3 hash: 64 lowercase hex digits");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_lowercase_hex_of_the_right_length() {
        let good = "0123456789abcdef".repeat(4);
        let h = ContentHash::parse(&good).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.to_string(), good);
        assert_eq!(h.as_bytes()[..2], [0x01, 0x23]);
        for bad in [
            "A".repeat(64),
            "a".repeat(63),
            "a".repeat(65),
            "g".repeat(64),
            String::new(),
            "é".repeat(32),
        ] {
            assert!(ContentHash::parse(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_is_the_hex_string_and_names_the_problem() {
        let h = ContentHash::from_bytes([0xab; 32]);
        let json = serde_json::to_string(&h).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        let back: ContentHash = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, h);
        let err = serde_json::from_str::<ContentHash>("\"xyz\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("hash \"xyz\" is not a BLAKE3 hash: expected 64 lowercase hex digits"),
            "{err}"
        );
        assert!(serde_json::from_str::<ContentHash>("5").is_err());
    }

    #[test]
    fn orders_like_its_text() {
        let a = ContentHash::from_bytes([0x0f; 32]);
        let b = ContentHash::from_bytes([0xf0; 32]);
        assert!(a < b && a.to_string() < b.to_string());
    }
}
