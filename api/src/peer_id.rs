//! [`PeerId`]: the tracker's name for a registered peer.

use crate::{InvalidField, decode_hex, hex_newtype, shown};

/// Length of a peer id in hex digits.
pub const PEER_ID_HEX_LEN: usize = 16;

/// A peer's id: 8 random bytes chosen by the tracker at registration,
/// written as 16 lowercase hex digits.
///
/// Ordered like its hex form, which is the order of peer listings.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId([u8; 8]);

impl PeerId {
    /// The id with these bytes.
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        PeerId(bytes)
    }

    /// Parses exactly 16 lowercase hex digits.
    pub fn parse(text: &str) -> Result<Self, InvalidField> {
        decode_hex::<8>(text).map(PeerId).ok_or_else(|| {
            InvalidField(format!(
                "{:?} is not a peer id: expected {PEER_ID_HEX_LEN} lowercase hex digits",
                shown(text, 40)
            ))
        })
    }
}

hex_newtype!(PeerId, 8, "a peer id: 16 lowercase hex digits");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sixteen_lowercase_hex_digits() {
        let id = PeerId::parse("0f75a38ed6c1d653").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.to_string(), "0f75a38ed6c1d653");
        for bad in [
            "",
            "nothex",
            "../../etc",
            "0F75A38ED6C1D653",
            "0f75a38ed6c1d6530",
        ] {
            assert!(PeerId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let json = serde_json::to_string(&id).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json, "\"0f75a38ed6c1d653\"");
        assert!(serde_json::from_str::<PeerId>("\"zz\"").is_err());
    }
}
