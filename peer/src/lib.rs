//! SBCFTP peer: shares a folder over its own TCP protocol, finds files through
//! the tracker's REST API, and downloads them directly from other peers,
//! verifying every block against the content's BLAKE3 hash.
//!
//! # Layout
//!
//! - [`transfer`]: everything on the peer-to-peer wire, both sides. The wire
//!   format ([`transfer::wire`], written down in `PROTOCOL.md`), block
//!   outlines ([`transfer::outline`]), the one [`Connection`] type that owns
//!   framing and deadlines ([`transfer::connection`]), the TCP server
//!   ([`transfer::server`]), and the swarm download ([`transfer::download`],
//!   from every holder at once, with the part file [`transfer::part`]). Its
//!   module doc says which code is blocking and where async starts.
//! - [`share`]: the share folder, its index (by hash) and the hash cache;
//!   [`share::live`] keeps the index live (watched, stable files only,
//!   hashing on its own threads).
//! - [`tracker_client`]: the tracker's REST API, with the request/response
//!   types shared with the tracker (`sbcftp_api`).
//! - [`commands`]: one module per subcommand: [`commands::serve`] (start the
//!   live folder and the server, register, heartbeat, announce changes,
//!   say whether the tracker can reach us, leave),
//!   [`commands::list`] (`files`, `peers`), [`commands::get`] (`get`,
//!   `browse`).
//! - [`cli`]: the command-line arguments; [`ui`]: tables, progress bars, and
//!   error chains on one line.
//!
//! [`Connection`]: transfer::connection::Connection
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
    // An empty key (as an unset variable in compose or systemd gives) means none.
    let key = cli.registration_key.filter(|k| !k.trim().is_empty());
    // A private tracker wants the key on every read as well.
    let client = || TrackerClient::new(&cli.tracker, key.clone(), None);
    match cli.command {
        Command::Serve(args) => commands::serve::run(args, &cli.tracker, key, shutdown).await,
        Command::Files(args) => commands::list::files(&client()?, args).await,
        Command::Peers(args) => commands::list::peers(&client()?, args).await,
        Command::Get(args) => commands::get::get(&client()?, args, shutdown).await,
        Command::Browse(args) => commands::get::browse(&client()?, args, shutdown).await,
    }
}
