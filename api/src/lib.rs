//! The REST API between the SBCFTP tracker and its clients: every JSON body of
//! `/api/v1`, and the values inside them that must be valid to exist.
//!
//! The tracker serialises and checks requests with these types; the peer
//! deserialises answers with them. Neither side defines a JSON shape of its
//! own, so the two cannot drift. This crate needs only `serde` and
//! `thiserror`; the `openapi` feature adds the utoipa schema derives the
//! tracker's OpenAPI document is generated from.
//!
//! # Layout
//!
//! - [`ContentHash`], [`PeerId`], [`FileName`]: values parsed once, where
//!   text enters (a JSON body, a path, a command line). A value that exists
//!   is valid, so nothing downstream checks it again. A bad one fails to
//!   deserialise with the message that says what is wrong
//!   ([`InvalidField`]).
//! - with the `sqlx` feature, the three values bind and read as text
//!   columns, parsed as they are read.
//! - [`bodies`]: the request and response bodies, one struct per JSON shape,
//!   plus [`Problem`], the RFC 9457 error body. Checks that need a whole body
//!   (unique names, the per-peer cap) belong to the tracker, which knows its
//!   limits.
//! - [`search`]: what a search query means: the folding and word splitting
//!   the tracker indexes names with and the peer builds its queries with.
//! - [`wire`]: the peer-to-peer wire format (`peer/PROTOCOL.md`), spoken by
//!   peers to each other and by the tracker's reachability check.

pub mod bodies;
mod content_hash;
mod file_name;
mod peer_id;
pub mod search;
#[cfg(feature = "sqlx")]
mod sqlx_text;
pub mod wire;

pub use bodies::*;
pub use content_hash::{ContentHash, HASH_HEX_LEN};
pub use file_name::{FileName, MAX_NAME_LEN, validate_name};
pub use peer_id::{PEER_ID_HEX_LEN, PeerId};

/// The API's path prefix.
pub const API_PREFIX: &str = "/api/v1";

/// Largest file size the tracker accepts (2^53 - 1, so JSON numbers stay exact
/// in every client, including JavaScript and `jq`).
pub const MAX_FILE_SIZE: u64 = (1 << 53) - 1;

/// Why a name, hash or id is not acceptable; the text says what a valid one
/// looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField(pub String);

impl std::fmt::Display for InvalidField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidField {}

/// At most `max` characters of untrusted text, for an error message.
fn shown(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Lowercase hex of `bytes` into `out` (twice as long).
fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// Bytes of lowercase hex `text` (exactly `N * 2` digits), or `None`.
fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// Implements `Display` (lowercase hex), `FromStr`, `TryFrom<String>`/`&str`
/// and serde (a hex string) for a fixed-size byte newtype `$t([u8; $n])`
/// whose `parse` reports the error.
macro_rules! hex_newtype {
    ($t:ident, $n:expr, $expecting:expr) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut buf = [0u8; $n * 2];
                crate::encode_hex(&self.0, &mut buf);
                // Hex digits are ASCII, so this never fails.
                f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?)
            }
        }

        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({self})", stringify!($t))
            }
        }

        impl std::str::FromStr for $t {
            type Err = crate::InvalidField;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $t::parse(s)
            }
        }

        impl TryFrom<&str> for $t {
            type Error = crate::InvalidField;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                $t::parse(s)
            }
        }

        impl TryFrom<String> for $t {
            type Error = crate::InvalidField;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $t::parse(&s)
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $t;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        $t::parse(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(Visitor)
            }
        }
    };
}
use hex_newtype;
