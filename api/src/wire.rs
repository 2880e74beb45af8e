//! The peer-to-peer wire format: fixed-size request frames, fixed-size response
//! headers, and the status codes. Pure encode/decode, no I/O.
//!
//! The protocol is written down byte by byte in `peer/PROTOCOL.md`. In short
//! (all integers big-endian):
//!
//! ```text
//! request  (56 bytes): "SBCF" | version u8 | kind u8 | reserved u16 | hash [32] | offset u64 | length u64
//! response (16 bytes): "SBCF" | version u8 | status u8 | reserved u16 | length u64, then `length` bytes
//! ```
//!
//! A request has a fixed size, so the server never allocates from a length a
//! client sends. A response announces its payload length, and the client
//! checks that length against what it expects (see [`max_outline_len`],
//! [`MAX_MESSAGE_LEN`]) before it reads or allocates anything.
//!
//! It lives in this crate, not in the peer's, because the tracker speaks it
//! too: its reachability check sends one OUTLINE to a registering peer and
//! reads the answer's header, with these very functions, so the check
//! cannot drift from the protocol. The peer re-exports it as
//! `sbcftp_peer::transfer::wire`, where the OK OUTLINE payload (the
//! peer's `transfer::outline`) and the framing on a socket with deadlines
//! (its `transfer::connection`) are built on it.

use std::fmt;

use crate::ContentHash;

/// First four bytes of every request and response.
pub const MAGIC: [u8; 4] = *b"SBCF";

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// Size of a request frame in bytes.
pub const REQUEST_LEN: usize = 56;

/// Size of a response header in bytes.
pub const RESPONSE_HEADER_LEN: usize = 16;

/// Longest error message a response may carry, in bytes.
pub const MAX_MESSAGE_LEN: u64 = 1024;

/// Most blocks a file is ever split into (the peer's `transfer::outline`).
pub const MAX_BLOCKS: u64 = 1 << 16;

/// Length of a content hash or a chaining value in bytes.
pub const HASH_LEN: usize = 32;

/// Longest OK OUTLINE payload: the size (8 bytes) and [`MAX_BLOCKS`] chaining values.
pub const fn max_outline_len() -> u64 {
    8 + MAX_BLOCKS * HASH_LEN as u64
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The content's size and its block chaining values (the "outline").
    /// `offset` and `length` must be 0.
    Outline = 1,
    /// The bytes `[offset, offset + length)` of the content.
    Read = 2,
}

/// One request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    /// The content, named by its hash.
    pub hash: ContentHash,
    /// First byte wanted (READ), 0 for OUTLINE.
    pub offset: u64,
    /// Number of bytes wanted (READ), 0 for OUTLINE.
    pub length: u64,
}

/// Why a request frame was refused. Each maps to a response [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The frame does not start with [`MAGIC`]: not this protocol.
    #[error("not an SBCF request (bad magic)")]
    BadMagic,
    /// A version this server does not speak.
    #[error("protocol version {0} is not supported; this peer speaks {VERSION}")]
    UnsupportedVersion(u8),
    /// A kind byte that is neither OUTLINE nor READ.
    #[error("unknown request kind {0}")]
    UnknownKind(u8),
    /// The reserved field is not zero.
    #[error("reserved field is not zero")]
    ReservedNotZero,
    /// OUTLINE with a non-zero offset or length.
    #[error("an OUTLINE request must have offset 0 and length 0")]
    OutlineWithRange,
}

impl RequestError {
    /// The status a server answers this error with.
    pub fn status(self) -> Status {
        match self {
            RequestError::UnsupportedVersion(_) => Status::UnsupportedVersion,
            _ => Status::BadRequest,
        }
    }

    /// Whether the byte stream can still be trusted to be in frame after this
    /// error (the frame had our magic and version, so the next request starts
    /// right after it). When false the server answers and closes.
    pub fn keeps_framing(self) -> bool {
        !matches!(
            self,
            RequestError::BadMagic | RequestError::UnsupportedVersion(_)
        )
    }
}

impl Request {
    /// An OUTLINE request for `hash`.
    pub fn outline(hash: ContentHash) -> Self {
        Request {
            kind: Kind::Outline,
            hash,
            offset: 0,
            length: 0,
        }
    }

    /// A READ request for `length` bytes of `hash` from `offset`.
    pub fn read(hash: ContentHash, offset: u64, length: u64) -> Self {
        Request {
            kind: Kind::Read,
            hash,
            offset,
            length,
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = self.kind as u8;
        // b[6..8]: reserved, zero.
        b[8..40].copy_from_slice(self.hash.as_bytes());
        b[40..48].copy_from_slice(&self.offset.to_be_bytes());
        b[48..56].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Parses a frame. Checks are in wire order: magic, version, kind,
    /// reserved, then OUTLINE's range.
    pub fn decode(b: &[u8; REQUEST_LEN]) -> Result<Self, RequestError> {
        if b[0..4] != MAGIC {
            return Err(RequestError::BadMagic);
        }
        if b[4] != VERSION {
            return Err(RequestError::UnsupportedVersion(b[4]));
        }
        let kind = match b[5] {
            1 => Kind::Outline,
            2 => Kind::Read,
            k => return Err(RequestError::UnknownKind(k)),
        };
        if b[6..8] != [0, 0] {
            return Err(RequestError::ReservedNotZero);
        }
        let mut hash = [0u8; HASH_LEN];
        hash.copy_from_slice(&b[8..40]);
        let hash = ContentHash::from_bytes(hash);
        let offset = u64::from_be_bytes(array8(&b[40..48]));
        let length = u64::from_be_bytes(array8(&b[48..56]));
        if kind == Kind::Outline && (offset != 0 || length != 0) {
            return Err(RequestError::OutlineWithRange);
        }
        Ok(Request {
            kind,
            hash,
            offset,
            length,
        })
    }
}

fn array8(s: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    a
}

/// A response's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The payload is the answer.
    Ok = 0,
    /// This peer does not share that hash.
    NotFound = 1,
    /// The byte range is not inside the content.
    BadRange = 2,
    /// Too many connections; try later or another peer. The server closes.
    Busy = 3,
    /// The request frame is malformed.
    BadRequest = 4,
    /// The request's protocol version is not spoken here. The server closes.
    UnsupportedVersion = 5,
    /// The content exists but cannot be served now (changed on disk, I/O error).
    Unavailable = 6,
}

impl Status {
    /// Parses a status byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::BadRange,
            3 => Status::Busy,
            4 => Status::BadRequest,
            5 => Status::UnsupportedVersion,
            6 => Status::Unavailable,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::NotFound => "not found",
            Status::BadRange => "bad range",
            Status::Busy => "busy",
            Status::BadRequest => "bad request",
            Status::UnsupportedVersion => "unsupported version",
            Status::Unavailable => "unavailable",
        })
    }
}

/// A response header; `length` payload bytes follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The responder's protocol version.
    pub version: u8,
    pub status: Status,
    /// Payload length in bytes.
    pub length: u64,
}

/// Why a response header was refused by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The header does not start with [`MAGIC`].
    #[error("not an SBCF response (bad magic)")]
    BadMagic,
    /// A version this client does not speak.
    #[error("peer answered with protocol version {0}; this peer speaks {VERSION}")]
    UnsupportedVersion(u8),
    /// A status byte this client does not know.
    #[error("unknown response status {0}")]
    UnknownStatus(u8),
    /// The reserved field is not zero.
    #[error("reserved field is not zero")]
    ReservedNotZero,
}

impl ResponseHeader {
    /// A header with this crate's version.
    pub fn new(status: Status, length: u64) -> Self {
        ResponseHeader {
            version: VERSION,
            status,
            length,
        }
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; RESPONSE_HEADER_LEN] {
        let mut b = [0u8; RESPONSE_HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = self.version;
        b[5] = self.status as u8;
        b[8..16].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Parses a header. The caller still checks `length` against what it
    /// expects before reading the payload.
    pub fn decode(b: &[u8; RESPONSE_HEADER_LEN]) -> Result<Self, ResponseError> {
        if b[0..4] != MAGIC {
            return Err(ResponseError::BadMagic);
        }
        // A server answers UNSUPPORTED_VERSION with its own version; accept the
        // header so the client can report the status.
        let status = Status::from_u8(b[5]).ok_or(ResponseError::UnknownStatus(b[5]))?;
        if b[4] != VERSION && status != Status::UnsupportedVersion {
            return Err(ResponseError::UnsupportedVersion(b[4]));
        }
        if b[6..8] != [0, 0] {
            return Err(ResponseError::ReservedNotZero);
        }
        Ok(ResponseHeader {
            version: b[4],
            status,
            length: u64::from_be_bytes(array8(&b[8..16])),
        })
    }
}

/// An error response: header and message bytes, message cut to [`MAX_MESSAGE_LEN`]
/// on a character boundary.
pub fn encode_error(status: Status, message: &str) -> Vec<u8> {
    let mut end = message.len().min(MAX_MESSAGE_LEN as usize);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let msg = &message.as_bytes()[..end];
    let mut out = Vec::with_capacity(RESPONSE_HEADER_LEN + msg.len());
    out.extend_from_slice(&ResponseHeader::new(status, msg.len() as u64).encode());
    out.extend_from_slice(msg);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample_hash() -> ContentHash {
        let mut h = [0u8; 32];
        for (i, b) in h.iter_mut().enumerate() {
            *b = i as u8 * 7 + 1;
        }
        ContentHash::from_bytes(h)
    }

    #[test]
    fn request_round_trips() {
        for req in [
            Request::outline(sample_hash()),
            Request::read(sample_hash(), 0, 0),
            Request::read(sample_hash(), 1 << 20, 5 << 20),
            Request::read(ContentHash::from_bytes([0xff; 32]), u64::MAX, u64::MAX),
        ] {
            let bytes = req.encode();
            assert_eq!(bytes.len(), REQUEST_LEN);
            assert_eq!(Request::decode(&bytes).unwrap(), req);
        }
    }

    #[test]
    fn request_layout_is_big_endian_and_fixed() {
        let b = Request::read(sample_hash(), 0x0102030405060708, 0x1112131415161718).encode();
        assert_eq!(&b[0..4], b"SBCF");
        assert_eq!(b[4], 1);
        assert_eq!(b[5], 2);
        assert_eq!(&b[6..8], &[0, 0]);
        assert_eq!(&b[8..40], sample_hash().as_bytes());
        assert_eq!(&b[40..48], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            &b[48..56],
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
    }

    #[test]
    fn malformed_requests() {
        let good = Request::read(sample_hash(), 3, 4).encode();

        let mut b = good;
        b[0] = b'X';
        assert_eq!(Request::decode(&b), Err(RequestError::BadMagic));
        assert!(!RequestError::BadMagic.keeps_framing());
        assert_eq!(RequestError::BadMagic.status(), Status::BadRequest);

        let mut b = good;
        b[4] = 2;
        assert_eq!(
            Request::decode(&b),
            Err(RequestError::UnsupportedVersion(2))
        );
        assert_eq!(
            RequestError::UnsupportedVersion(2).status(),
            Status::UnsupportedVersion
        );
        let mut b = good;
        b[4] = 0;
        assert_eq!(
            Request::decode(&b),
            Err(RequestError::UnsupportedVersion(0))
        );

        for k in [0u8, 3, 0x7f, 0xff] {
            let mut b = good;
            b[5] = k;
            assert_eq!(Request::decode(&b), Err(RequestError::UnknownKind(k)));
            assert!(RequestError::UnknownKind(k).keeps_framing());
        }

        for (i, v) in [(6usize, 1u8), (7, 0x80)] {
            let mut b = good;
            b[i] = v;
            assert_eq!(Request::decode(&b), Err(RequestError::ReservedNotZero));
        }

        let mut b = Request::outline(sample_hash()).encode();
        b[47] = 1;
        assert_eq!(Request::decode(&b), Err(RequestError::OutlineWithRange));
        let mut b = Request::outline(sample_hash()).encode();
        b[48] = 1;
        assert_eq!(Request::decode(&b), Err(RequestError::OutlineWithRange));

        // Path-looking bytes are just a hash: they decode, and the server looks
        // the hash up in its index (where it is not).
        let mut b = good;
        b[8..40].copy_from_slice(b"../../../../etc/passwd\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(Request::decode(&b).unwrap().hash.as_bytes()[0..3], *b"../");

        // All-garbage frames never panic.
        for seed in 0..=255u8 {
            let b = [seed; REQUEST_LEN];
            let _ = Request::decode(&b);
        }
    }

    #[test]
    fn response_round_trips() {
        for status in [
            Status::Ok,
            Status::NotFound,
            Status::BadRange,
            Status::Busy,
            Status::BadRequest,
            Status::UnsupportedVersion,
            Status::Unavailable,
        ] {
            for length in [0, 1, 1024, u64::MAX] {
                let h = ResponseHeader::new(status, length);
                let b = h.encode();
                assert_eq!(b.len(), RESPONSE_HEADER_LEN);
                assert_eq!(ResponseHeader::decode(&b).unwrap(), h);
                assert_eq!(Status::from_u8(status as u8), Some(status));
            }
        }
    }

    #[test]
    fn malformed_responses() {
        let good = ResponseHeader::new(Status::Ok, 10).encode();
        let mut b = good;
        b[3] = 0;
        assert_eq!(ResponseHeader::decode(&b), Err(ResponseError::BadMagic));
        let mut b = good;
        b[4] = 9;
        assert_eq!(
            ResponseHeader::decode(&b),
            Err(ResponseError::UnsupportedVersion(9))
        );
        // UNSUPPORTED_VERSION from a newer server is still readable.
        let mut b = ResponseHeader::new(Status::UnsupportedVersion, 0).encode();
        b[4] = 9;
        assert_eq!(
            ResponseHeader::decode(&b).unwrap().status,
            Status::UnsupportedVersion
        );
        for s in [7u8, 100, 255] {
            let mut b = good;
            b[5] = s;
            assert_eq!(
                ResponseHeader::decode(&b),
                Err(ResponseError::UnknownStatus(s))
            );
        }
        let mut b = good;
        b[7] = 1;
        assert_eq!(
            ResponseHeader::decode(&b),
            Err(ResponseError::ReservedNotZero)
        );
    }

    #[test]
    fn error_messages_are_capped_on_char_boundaries() {
        let long = "é".repeat(1000); // 2000 bytes
        let out = encode_error(Status::BadRequest, &long);
        let mut h = [0u8; RESPONSE_HEADER_LEN];
        h.copy_from_slice(&out[..RESPONSE_HEADER_LEN]);
        let h = ResponseHeader::decode(&h).unwrap();
        assert_eq!(h.status, Status::BadRequest);
        assert!(h.length <= MAX_MESSAGE_LEN);
        assert_eq!(h.length as usize, out.len() - RESPONSE_HEADER_LEN);
        assert!(std::str::from_utf8(&out[RESPONSE_HEADER_LEN..]).is_ok());
    }
}
