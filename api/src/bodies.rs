//! The request and response bodies of `/api/v1`, one struct per JSON shape.
//!
//! Requests refuse unknown fields, so a misspelt field is an error rather
//! than silently ignored. Names, hashes and peer ids are the parsed types of
//! this crate, so a body that deserialises holds only valid ones.

use serde::{Deserialize, Serialize};

use crate::{ContentHash, FileName, InvalidField, MAX_FILE_SIZE, PeerId};

/// One file a peer shares: its name in the share folder, its size in bytes and
/// the lowercase hex BLAKE3 hash of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// File name: one path component, 1 to 255 bytes, no `/`, `\`, NUL or
    /// control characters, not `.` or `..`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "holiday.mp4"))]
    pub name: FileName,
    /// Size in bytes.
    #[cfg_attr(feature = "openapi", schema(example = 1048576))]
    pub size: u64,
    /// Lowercase hex BLAKE3 of the file's bytes (64 digits).
    #[cfg_attr(
        feature = "openapi",
        schema(
            value_type = String,
            example = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        )
    )]
    pub hash: ContentHash,
}

impl FileEntry {
    /// Checks what the types cannot: the size is at most [`MAX_FILE_SIZE`].
    pub fn check_size(&self) -> Result<(), InvalidField> {
        if self.size > MAX_FILE_SIZE {
            return Err(InvalidField(format!(
                "file {:?} has size {}; the limit is {MAX_FILE_SIZE}",
                self.name, self.size
            )));
        }
        Ok(())
    }
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
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub peer_id: PeerId,
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
    /// Whether the tracker could reach the peer's address with the peer
    /// protocol at its last check; `null` when not checked (yet, or the
    /// tracker's check is off). Checked shortly after registration and
    /// again now and then.
    #[serde(default)]
    pub reachable: Option<bool>,
    /// Why the last check failed (`"connection refused"`, `"connection
    /// timed out"`, …); `null` unless `reachable` is false.
    #[serde(default)]
    pub unreachable_reason: Option<String>,
}

/// `PUT /api/v1/peers/{peer_id}/files`: replace the peer's whole file list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReplaceFilesRequest {
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
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub remove: Vec<FileName>,
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
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub peer_id: PeerId,
    /// Where the peer serves files, `ip:port` (`[v6]:port`).
    pub addr: String,
    /// When the peer registered, RFC 3339 UTC.
    pub registered_at: String,
    /// When the tracker last heard from the peer, RFC 3339 UTC.
    pub last_seen: String,
    /// How many files the peer shares; `GET /api/v1/peers/{peer_id}/files`
    /// lists them a page at a time.
    pub file_count: u64,
    /// Whether the tracker could reach `addr` with the peer protocol at its
    /// last check; `null` when not checked (yet, or the check is off).
    #[serde(default)]
    pub reachable: Option<bool>,
    /// When reachability was last checked, RFC 3339 UTC; `null` if never.
    #[serde(default)]
    pub reachable_checked_at: Option<String>,
    /// Why the last check failed; `null` unless `reachable` is false.
    #[serde(default)]
    pub unreachable_reason: Option<String>,
}

/// `GET /api/v1/peers/{peer_id}/files`: a page of one peer's files, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerFileList {
    pub files: Vec<FileEntry>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/peers`: a page of online peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerList {
    pub peers: Vec<Peer>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A peer that holds some content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerRef {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub peer_id: PeerId,
    /// Where to download from, `ip:port` (`[v6]:port`).
    pub addr: String,
    /// Whether the tracker could reach it at its last check (`null`: not
    /// checked). Holders are listed reachable first, unreachable last.
    #[serde(default)]
    pub reachable: Option<bool>,
}

/// One distinct content (one hash) and every online peer that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Content {
    /// Lowercase hex BLAKE3 of the content.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: ContentHash,
    /// Size in bytes.
    pub size: u64,
    /// The distinct names peers share it under, sorted.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub names: Vec<FileName>,
    /// The online peers that hold it: reachable ones first, then those not
    /// checked, then unreachable ones.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_entry_fails_to_deserialise_with_the_reason() {
        let hash = "ab".repeat(32);
        let ok = format!(r#"{{"name": "a.txt", "size": 3, "hash": "{hash}"}}"#);
        let f: FileEntry = serde_json::from_str(&ok).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.name, "a.txt");
        assert!(f.check_size().is_ok());
        let bad = format!(r#"{{"name": "..", "size": 3, "hash": "{hash}"}}"#);
        let err = serde_json::from_str::<FileEntry>(&bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("file name \"..\" is not allowed"), "{err}");
        let huge = FileEntry {
            size: MAX_FILE_SIZE + 1,
            ..f
        };
        assert!(huge.check_size().is_err());
    }
}
