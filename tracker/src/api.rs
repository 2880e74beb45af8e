//! The REST API's request and response bodies, shared by the tracker and the peer.
//!
//! This module is the single definition of every JSON shape in `/api/v1`: the
//! tracker serialises and validates with it, the peer (which depends on this
//! crate with `default-features = false`) deserialises with it. It needs only
//! `serde`; the OpenAPI schema derives are switched on by the `openapi` feature.
//!
//! Validation lives here too ([`validate_name`], [`validate_hash`]), so a peer
//! can tell before registering which files of its share folder the tracker would
//! refuse.

use serde::{Deserialize, Serialize};

/// The API's path prefix.
pub const API_PREFIX: &str = "/api/v1";

/// Longest file name, in bytes, that the tracker accepts.
pub const MAX_NAME_LEN: usize = 255;

/// Largest file size the tracker accepts (2^53 - 1, so JSON numbers stay exact
/// in every client, including JavaScript and `jq`).
pub const MAX_FILE_SIZE: u64 = (1 << 53) - 1;

/// Length of a content hash in hex digits (BLAKE3, 32 bytes).
pub const HASH_HEX_LEN: usize = 64;

/// One file a peer shares: its name in the share folder, its size in bytes and
/// the lowercase hex BLAKE3 hash of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// File name: one path component, 1 to 255 bytes, no `/`, `\`, NUL or
    /// control characters, not `.` or `..`.
    #[cfg_attr(feature = "openapi", schema(example = "holiday.mp4"))]
    pub name: String,
    /// Size in bytes.
    #[cfg_attr(feature = "openapi", schema(example = 1048576))]
    pub size: u64,
    /// Lowercase hex BLAKE3 of the file's bytes (64 digits).
    #[cfg_attr(
        feature = "openapi",
        schema(example = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
    )]
    pub hash: String,
}

/// `POST /api/v1/peers`: register a peer and its file list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// TCP port the peer serves files on. The IP is the one the request came from.
    #[cfg_attr(
        feature = "openapi",
        schema(example = 44444, minimum = 1, maximum = 65535)
    )]
    pub port: u16,
    /// Files the peer shares. Names must be unique within the list.
    #[serde(default)]
    pub files: Vec<FileEntry>,
}

/// Answer to a registration (201 Created).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    /// The peer's identifier, used in every later path.
    pub peer_id: String,
    /// Secret bearer token; only its holder can heartbeat, change files or leave.
    /// It is shown once and stored hashed.
    pub token: String,
    /// The address the tracker recorded for this peer, `ip:port` (`[v6]:port`).
    pub addr: String,
    /// How often the peer should send a heartbeat, in seconds.
    pub heartbeat_interval_secs: u64,
    /// How long after its last heartbeat a peer is swept, in seconds.
    pub ttl_secs: u64,
}

/// Answer to a heartbeat (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// How often the peer should send a heartbeat, in seconds.
    pub heartbeat_interval_secs: u64,
    /// How long after its last heartbeat a peer is swept, in seconds.
    pub ttl_secs: u64,
}

/// `PUT /api/v1/peers/{peer_id}/files`: replace the peer's whole file list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReplaceFilesRequest {
    /// The new file list.
    pub files: Vec<FileEntry>,
}

/// `PATCH /api/v1/peers/{peer_id}/files`: add (or overwrite by name) and remove
/// files. Removals apply first, then additions; a name may not appear in both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatchFilesRequest {
    /// Files to add; an existing file of the same name is replaced.
    #[serde(default)]
    pub add: Vec<FileEntry>,
    /// Names of files to remove; unknown names are ignored.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Answer to `PUT`/`PATCH` of a file list: how many files the peer now shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilesUpdated {
    /// Number of files the peer shares after the change.
    pub file_count: u64,
}

/// A peer as the tracker knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Peer {
    /// The peer's identifier.
    pub peer_id: String,
    /// Where the peer serves files, `ip:port` (`[v6]:port`).
    pub addr: String,
    /// When the peer registered, RFC 3339 UTC.
    pub registered_at: String,
    /// When the tracker last heard from the peer, RFC 3339 UTC.
    pub last_seen: String,
    /// Number of files the peer shares.
    pub file_count: u64,
    /// The peer's files (only in `GET /api/v1/peers/{peer_id}`; omitted in lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileEntry>>,
}

/// `GET /api/v1/peers`: a page of online peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerList {
    /// The peers on this page.
    pub peers: Vec<Peer>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A peer that holds some content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerRef {
    /// The peer's identifier.
    pub peer_id: String,
    /// Where to download from, `ip:port` (`[v6]:port`).
    pub addr: String,
}

/// One distinct content (one hash) and every online peer that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Content {
    /// Lowercase hex BLAKE3 of the content.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// The distinct names peers share it under, sorted.
    pub names: Vec<String>,
    /// The online peers that hold it.
    pub peers: Vec<PeerRef>,
}

/// `GET /api/v1/files`: a page of contents, ordered by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContentList {
    /// The contents on this page.
    pub files: Vec<Content>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// An RFC 9457 problem document (`application/problem+json`), the body of
/// every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI reference naming the problem type (`about:blank` or a tag URI).
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request and what to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Why a name or hash is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField(pub String);

impl std::fmt::Display for InvalidField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidField {}

/// Checks a shared file name: one path component, 1 to [`MAX_NAME_LEN`] bytes,
/// no `/`, `\`, NUL or other control characters, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), InvalidField> {
    if name.is_empty() {
        return Err(InvalidField("file name is empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidField(format!(
            "file name is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(InvalidField(format!("file name {name:?} is not allowed")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == '\\' || c.is_control())
    {
        return Err(InvalidField(format!(
            "file name {name:?} contains {c:?}; a name is one path component without \
             slashes, backslashes or control characters"
        )));
    }
    Ok(())
}

/// Checks a content hash: exactly 64 lowercase hex digits.
pub fn validate_hash(hash: &str) -> Result<(), InvalidField> {
    if hash.len() != HASH_HEX_LEN
        || !hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        let shown: String = hash.chars().take(80).collect();
        return Err(InvalidField(format!(
            "hash {shown:?} is not a BLAKE3 hash: expected {HASH_HEX_LEN} lowercase hex digits"
        )));
    }
    Ok(())
}

/// Checks one file entry (name, size and hash).
pub fn validate_file(file: &FileEntry) -> Result<(), InvalidField> {
    validate_name(&file.name)?;
    validate_hash(&file.hash)?;
    if file.size > MAX_FILE_SIZE {
        return Err(InvalidField(format!(
            "file {:?} has size {}; the limit is {MAX_FILE_SIZE}",
            file.name, file.size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("a.txt").is_ok());
        assert!(validate_name("ünïcødé file (1).mp4").is_ok());
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", "a\nb", "\u{7f}"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn hashes() {
        let good = "a".repeat(64);
        assert!(validate_hash(&good).is_ok());
        assert!(validate_hash(&"A".repeat(64)).is_err());
        assert!(validate_hash(&"a".repeat(63)).is_err());
        assert!(validate_hash(&"g".repeat(64)).is_err());
        assert!(validate_hash("").is_err());
    }
}
