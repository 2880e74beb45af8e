//! What can go wrong in a download, grouped by whose fault it is (the
//! iroh-blobs `get/error.rs` way), so a caller can react to the kind and
//! not to a string:
//!
//! - [`RemoteError`]: the source failed or misbehaved. The download drops
//!   that source and goes on with the next one; the kind says whether the
//!   source could not be reached, stalled, refused with a status, broke the
//!   protocol, or sent a corrupt block (and which).
//! - [`LocalError`]: this machine's disk or folder. The download stops.
//! - [`DownloadError`]: how a whole download ended without the file.
//!
//! Messages are what the user reads: each says what happened and, where the
//! user can act, what to do.

use std::fmt;
use std::io;

use super::outline::OutlineError;
use super::wire::{ResponseError, Status};

/// A source's failure or misbehaviour. Its display text finishes the
/// sentence "source ADDR (PEER) dropped: …".
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The source's address does not parse or resolve.
    #[error("bad address: {0}")]
    BadAddress(#[source] io::Error),
    /// The source's address resolves to no address at all.
    #[error("address resolves to nothing")]
    NoAddress,
    /// No connection could be opened (refused, unreachable, timed out).
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    /// Nothing arrived (or nothing could be sent) for the stall timeout: a
    /// frozen process or a dead link.
    #[error("stalled (no data before the stall timeout)")]
    Stalled,
    /// A block did not arrive within its deadline, though data kept coming:
    /// a source that trickles below the rate floor.
    #[error(
        "too slow: {got} of {len} bytes of a block in {secs} s, below the rate floor (--min-source-rate)"
    )]
    TooSlow { got: u64, len: u64, secs: u64 },
    /// The source closed the connection before its answer was complete.
    #[error("closed the connection early")]
    Closed,
    /// The connection failed otherwise (reset, …).
    #[error(transparent)]
    Lost(io::Error),
    /// The source answered with an error status (BUSY, NOT_FOUND, …) and its
    /// message, if it sent a readable one.
    #[error("answered {status}{}", Message(message))]
    Refused { status: Status, message: String },
    /// A block did not match its chaining value; it was not written.
    #[error(
        "sent corrupt data: block {index} (bytes {start}..{end}) does not match the content hash"
    )]
    CorruptBlock { index: u64, start: u64, end: u64 },
    /// The source's answer does not follow the protocol.
    #[error(transparent)]
    Protocol(#[from] Violation),
}

impl RemoteError {
    /// Whether connecting again may help: the connection could not be
    /// opened or was lost, or the source was busy. A source that stalled,
    /// trickled, refused the content or sent bad data is not asked again.
    pub fn is_retryable(&self) -> bool {
        match self {
            RemoteError::Connect(_) | RemoteError::Closed | RemoteError::Lost(_) => true,
            RemoteError::Refused { status, .. } => {
                matches!(status, Status::Busy | Status::Unavailable)
            }
            _ => false,
        }
    }
}

/// `: message`, or nothing for an empty message.
struct Message<'a>(&'a str);

impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, ": {}", self.0)
        }
    }
}

/// How a source broke the protocol.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    /// A response header that does not parse.
    #[error("protocol error: {0}")]
    BadHeader(#[from] ResponseError),
    /// An OK answer to READ whose length is not the length asked for.
    #[error("answered {actual} bytes for a request of {expected}")]
    WrongLength { expected: u64, actual: u64 },
    /// An OK answer to OUTLINE whose length no outline has.
    #[error("sent an outline of {actual} bytes, which no content has")]
    OutlineLength { actual: u64 },
    /// An outline that does not belong to the content.
    #[error(transparent)]
    Outline(#[from] OutlineError),
    /// An empty content announced for a hash that is not the empty content's.
    #[error("announced an empty file for a non-empty hash")]
    NotEmpty,
}

impl From<io::Error> for RemoteError {
    /// Sorts an I/O error on the connection by kind: a timeout is a stall,
    /// an early end of stream is a close.
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => RemoteError::Stalled,
            io::ErrorKind::UnexpectedEof => RemoteError::Closed,
            _ => RemoteError::Lost(e),
        }
    }
}

/// A failure on this machine (its disk, its download folder).
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Another download of the same content into the same folder is running.
    #[error("another download is already writing {part}; wait for it to finish")]
    Busy { part: String },
    /// A different file already has the name.
    #[error(
        "{path} already exists with different content; not overwriting it (use --force to replace it, or --out to download elsewhere)"
    )]
    Exists { path: String },
    /// The part file's path is not a plain file of ours: a symbolic link, a
    /// hard link, another user's file, or not a regular file. Nothing is
    /// written through it.
    #[error(
        "refusing to write {path}: {why}; someone may be trying to redirect the download (remove it, or use --out to download elsewhere)"
    )]
    Unsafe { path: String, why: &'static str },
    /// The disk (or the user's quota) is full.
    #[error("cannot write {path}: the disk is full")]
    DiskFull {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A file operation failed; `what` says which, on which path.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl LocalError {
    /// A function that wraps an I/O error as "`what`: error", for `map_err`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> LocalError {
        let what = what.into();
        move |source| LocalError::Io { what, source }
    }
}

/// Why a download did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No source sent an outline that merges to the hash, so nothing could be
    /// fetched (every holder is gone, or none of them has the content).
    #[error(
        "no source sent the content's outline ({tried} tried); ask `sbcftp-peer files` whether anyone still shares it, then run the same command again"
    )]
    NoOutline { tried: usize },
    /// The user interrupted before any source sent the outline: nothing was
    /// kept.
    #[error("interrupted before the download started; nothing was kept")]
    InterruptedEarly,
    /// Every source failed; the verified part is kept.
    #[error(
        "no source left ({tried} tried); {} of {} verified in {part}; run the same command again to resume",
        crate::ui::human_bytes(*verified),
        crate::ui::human_bytes(*size)
    )]
    NoSourceLeft {
        /// How many sources were tried.
        tried: usize,
        /// Verified bytes kept in the part file.
        verified: u64,
        size: u64,
        part: String,
    },
    /// The user interrupted; the verified part is kept.
    #[error(
        "interrupted; {} of {} verified in {part}; run the same command again to resume",
        crate::ui::human_bytes(*verified),
        crate::ui::human_bytes(*size)
    )]
    Interrupted {
        /// Verified bytes kept in the part file.
        verified: u64,
        size: u64,
        part: String,
    },
    /// A local failure once blocks were being written (a full disk, …); the
    /// verified part is kept.
    #[error(
        "{cause}; {} of {} verified in {part}; run the same command again to resume once that is fixed",
        crate::ui::human_bytes(*verified),
        crate::ui::human_bytes(*size)
    )]
    Stopped {
        #[source]
        cause: LocalError,
        verified: u64,
        size: u64,
        part: String,
    },
    /// A local failure (disk, folder, an existing file).
    #[error(transparent)]
    Local(#[from] LocalError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_sorted_by_kind() {
        let kind = |k: io::ErrorKind| RemoteError::from(io::Error::from(k));
        assert!(matches!(
            kind(io::ErrorKind::TimedOut),
            RemoteError::Stalled
        ));
        assert!(matches!(
            kind(io::ErrorKind::WouldBlock),
            RemoteError::Stalled
        ));
        assert!(matches!(
            kind(io::ErrorKind::UnexpectedEof),
            RemoteError::Closed
        ));
        assert!(matches!(
            kind(io::ErrorKind::ConnectionReset),
            RemoteError::Lost(_)
        ));
    }

    #[test]
    fn messages_name_the_kind() {
        let refused = |message: &str| RemoteError::Refused {
            status: Status::Busy,
            message: message.into(),
        };
        assert_eq!(refused("").to_string(), "answered busy");
        assert_eq!(refused("try later").to_string(), "answered busy: try later");
        assert!(RemoteError::Closed.is_retryable());
        assert!(refused("").is_retryable());
        assert!(!RemoteError::Stalled.is_retryable());
        assert!(
            !RemoteError::Refused {
                status: Status::NotFound,
                message: String::new()
            }
            .is_retryable()
        );
        let corrupt = RemoteError::CorruptBlock {
            index: 2,
            start: 2 << 20,
            end: 3 << 20,
        };
        assert!(
            corrupt
                .to_string()
                .starts_with("sent corrupt data: block 2 ")
        );
        assert_eq!(
            RemoteError::from(Violation::WrongLength {
                expected: 5,
                actual: 6
            })
            .to_string(),
            "answered 6 bytes for a request of 5"
        );
    }
}
