//! SBCFTP peer: shares a folder over its own TCP protocol, finds files through
//! the tracker's REST API, and downloads them directly from other peers,
//! verifying every block against the content's BLAKE3 hash.
//!
//! # Layout
//!
//! - [`protocol`]: the wire format (fixed 56-byte requests, 16-byte response
//!   headers, status codes); pure encode/decode. Written down in `PROTOCOL.md`.
//! - [`outline`]: a file's BLAKE3 tree cut into blocks; the block chaining
//!   values ("outline") that let every block be verified on its own.
//! - [`share`]: the share folder, its index (by hash) and the hash cache.
//! - [`server`]: the TCP server (accept loop, connection cap, deadlines, one
//!   blocking thread per connection on the data path).
//! - [`tracker_client`]: the tracker's REST API, with the tracker's own types
//!   (`sbcftp_tracker::api`).
//! - [`serve`]: `sbcftp-peer serve`: scan, register, heartbeat, rescan, leave.
//! - [`download`]: verified, resumable download from one source after another.
//! - [`commands`]: `files`, `peers`, `get`, `browse`.
//! - [`cli`]: the command-line arguments; [`ui`]: tables and progress bars.
//!
//! The binary (`main.rs`) only parses arguments, sets up logging and signals,
//! and calls [`run`].

pub mod cli;
pub mod commands;
pub mod share;
pub mod tracker_client;
pub mod transfer;
pub mod ui;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};
use crate::tracker_client::TrackerClient;

/// Runs one command. `shutdown` is cancelled on Ctrl-C or SIGTERM.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            // An empty key (as an unset variable in compose or systemd gives) means none.
            let key = cli.registration_key.filter(|k| !k.trim().is_empty());
            commands::serve::run(args, &cli.tracker, key, shutdown).await
        }
        Command::Files(args) => commands::files(&client(&cli.tracker)?, args).await,
        Command::Peers(args) => commands::peers(&client(&cli.tracker)?, args).await,
        Command::Get(args) => commands::get(&client(&cli.tracker)?, args, shutdown).await,
        Command::Browse(args) => commands::browse(&client(&cli.tracker)?, args, shutdown).await,
    }
}

fn client(tracker: &str) -> anyhow::Result<TrackerClient> {
    TrackerClient::new(tracker, None, None)
}
