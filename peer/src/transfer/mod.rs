//! Moving content between peers: the peer-to-peer protocol on both sides.
//!
//! # Layout
//!
//! - [`wire`]: the byte format of requests, response headers and statuses;
//!   pure encode/decode. `peer/PROTOCOL.md` is its specification. It is
//!   `sbcftp_api::wire`, re-exported: the tracker's reachability check
//!   speaks it too.
//! - [`outline`]: a content cut into blocks, the blocks' chaining values, and
//!   the [`Outline`](outline::Outline) that verifies each block on its own.
//! - [`connection`]: one [`Connection`](connection::Connection) type owns the
//!   framing on a TCP stream and its deadlines, for the server and the
//!   downloader alike.
//! - [`server`]: the accept loop, connection cap and shutdown, and the answers
//!   to OUTLINE and READ.
//! - [`download`]: a download from every source at once (the job, the
//!   report, the state its threads share; `download/coordinator.rs`: the
//!   download's own thread: sources started, blocks verified); `source`:
//!   one source's thread (connect, outline, pipelined READs, deadlines,
//!   retries); `schedule`: which block goes to which source (dynamic
//!   hand-out, endgame); `pipeline`: the buffer pool and the writer thread;
//!   [`part`]: the part file (opened without following links, locked,
//!   re-verified on resume, finished without overwriting).
//! - [`pace`]: a rate limit shared by threads (upload and download limits).
//! - [`error`]: why a download failed, by whose fault: the source's
//!   ([`RemoteError`](error::RemoteError): corrupt block, stalled, refused,
//!   protocol violation, …) or this machine's.
//!
//! # Blocking and async
//!
//! Everything that moves file bytes is blocking std I/O on plain threads:
//! [`Connection`](connection::Connection), the server's per-connection
//! answers, the download, its pipeline and the part file. Measured here,
//! `tokio::io::copy` over `tokio::fs::File` moves about a tenth of what plain
//! reads and writes with 1 MiB buffers do (8 KiB chunks through a thread
//! pool); see BENCHMARKS.md.
//!
//! Async starts at the edges, where waiting is cheap and cancellation
//! matters:
//!
//! - [`server::run`] is an async accept loop (a tokio listener, the connection
//!   cap, a `CancellationToken`); it hands each accepted connection to tokio's
//!   blocking pool and answers connections over the cap with BUSY without
//!   taking a thread.
//! - The `get` and `browse` commands run [`download::download`] on the
//!   blocking pool and turn Ctrl-C into an `AtomicBool` that the download
//!   polls between blocks. The download starts a thread per source (at most
//!   `--max-sources`), all scoped to the call: when it returns, every
//!   connection is closed and every thread has ended (a source still
//!   connecting holds the end back for at most `--connect-timeout`).

pub mod connection;
pub mod download;
pub mod error;
pub mod outline;
pub mod pace;
pub mod part;
mod pipeline;
mod schedule;
pub mod server;
mod source;
pub use sbcftp_api::wire;
