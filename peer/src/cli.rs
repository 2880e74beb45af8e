//! Command-line interface: the parsed arguments of every subcommand.
//!
//! Every flag has an `SBCFTP_…` environment variable. None of them shares a
//! name with a tracker variable: where both programs have the same flag
//! (`--listen`, `--max-connections`, `--registration-key`), the peer's
//! variable is `SBCFTP_PEER_…`, so one environment (a shell profile, a
//! compose file) can configure both. Durations accept plain
//! seconds (`10`) or units (`10s`, `2m`, `500ms`). These are the raw parsed
//! arguments; each command validates what it needs (ripgrep keeps parsed and
//! validated arguments apart the same way).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// SBCFTP peer: share a folder, find files through the tracker, download them
/// directly from other peers, verified.
#[derive(Debug, Parser)]
#[command(name = "sbcftp-peer", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The tracker's base URL.
    #[arg(
        long,
        global = true,
        env = "SBCFTP_TRACKER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub tracker: String,

    /// Key for a private tracker, sent as `Authorization: Bearer <key>` when registering.
    #[arg(
        long,
        global = true,
        env = "SBCFTP_PEER_REGISTRATION_KEY",
        hide_env_values = true
    )]
    pub registration_key: Option<String>,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info`, `sbcftp_peer=debug`).
    /// Falls back to `RUST_LOG`, then to `info` for `serve` and `warn` for the
    /// other commands.
    #[arg(long, global = true, env = "SBCFTP_LOG")]
    pub log: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Share a folder: hash it, register with the tracker, heartbeat, and serve
    /// its files to other peers until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// List the contents the tracker knows (optionally matching QUERY).
    Files(FilesArgs),
    /// List the online peers.
    Peers(PeersArgs),
    /// Download a content by hash or by exact name.
    Get(GetArgs),
    /// Pick a content from a numbered list and download it.
    Browse(BrowseArgs),
}

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The folder whose files are shared (only regular files directly in it).
    #[arg(long, env = "SBCFTP_SHARE", default_value = "./DistShared")]
    pub share: PathBuf,

    /// Address to serve files on. A specific IP is also the address requests to
    /// the tracker leave from. Port 0 picks a free port (it is logged and registered).
    #[arg(long, env = "SBCFTP_PEER_LISTEN", default_value = "0.0.0.0:44444")]
    pub listen: SocketAddr,

    /// Port to tell the tracker, when it differs from the listening port (NAT, port forwarding).
    #[arg(long, env = "SBCFTP_ADVERTISE_PORT")]
    pub advertise_port: Option<u16>,

    // The help text is an attribute, not a doc comment: rustdoc would read
    // `<share>` as an HTML tag.
    #[arg(
        long,
        env = "SBCFTP_CACHE_DIR",
        help = "Where the hash cache is kept [default: <share>/.sbcftp]"
    )]
    pub cache_dir: Option<PathBuf>,

    /// How often the share folder is rescanned (stat only; changed files are
    /// re-hashed and the tracker is told).
    #[arg(long, env = "SBCFTP_RESCAN_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub rescan_interval: Duration,

    /// Most connections served at once; more are answered BUSY.
    #[arg(long, env = "SBCFTP_PEER_MAX_CONNECTIONS", default_value_t = 64)]
    pub max_connections: usize,

    /// Upload limit for all connections together, in bytes per second
    /// (`50MB/s`, `1MiB/s`, `500k`, or a plain number; unlimited by default).
    #[arg(long, env = "SBCFTP_MAX_UPLOAD_RATE", value_parser = parse_rate)]
    pub max_upload_rate: Option<u64>,

    /// How long a connection may stay idle between requests.
    #[arg(long, env = "SBCFTP_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long a request frame may take to arrive, and writing each 1 MiB of an answer may take.
    #[arg(long, env = "SBCFTP_IO_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub io_timeout: Duration,

    /// On shutdown, how long transfers in flight may go on before they are aborted.
    #[arg(long, env = "SBCFTP_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// `files`.
#[derive(Debug, Args)]
pub struct FilesArgs {
    /// Only contents whose name contains this text.
    pub query: Option<String>,
    /// Print JSON (the tracker's `ContentList` shape) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Most rows to fetch.
    #[arg(long, env = "SBCFTP_LIMIT", default_value_t = 1000)]
    pub limit: usize,
}

/// `peers`.
#[derive(Debug, Args)]
pub struct PeersArgs {
    /// Print JSON (the tracker's `PeerList` shape) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Most rows to fetch.
    #[arg(long, env = "SBCFTP_LIMIT", default_value_t = 1000)]
    pub limit: usize,
}

/// Options shared by `get` and `browse`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Folder to download into (created if missing).
    #[arg(long, env = "SBCFTP_OUT", default_value = "./Downloads")]
    pub out: PathBuf,

    /// Replace an existing file of the same name that has different content.
    #[arg(long)]
    pub force: bool,

    /// A source that sends nothing for this long is dropped (its blocks go
    /// to the other sources).
    #[arg(long, env = "SBCFTP_STALL_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    /// How long connecting to a source may take.
    #[arg(long, env = "SBCFTP_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// The rate floor: a source that sends a block slower than this (after
    /// the stall timeout's grace) is dropped, even if it never goes silent.
    #[arg(long, env = "SBCFTP_MIN_SOURCE_RATE", default_value = "16KiB/s", value_parser = parse_rate)]
    pub min_source_rate: u64,

    /// Download limit for all sources together, in bytes per second
    /// (`50MB/s`, `1MiB/s`, `500k`, or a plain number; unlimited by default).
    #[arg(long, env = "SBCFTP_MAX_DOWNLOAD_RATE", value_parser = parse_rate)]
    pub max_download_rate: Option<u64>,

    /// Most sources to download from at once; the other holders replace
    /// sources that fail.
    #[arg(long, env = "SBCFTP_MAX_SOURCES", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_sources: u16,
}

/// `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// A content's hash (64 hex digits) or a file name that matches exactly one content.
    pub what: String,
    /// Save under this name instead of the content's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Print the outcome as JSON on stdout (size, bytes per source, sources
    /// dropped and why), whether the download succeeds or not.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub download: DownloadArgs,
}

/// `browse`.
#[derive(Debug, Args)]
pub struct BrowseArgs {
    /// Only list contents whose name contains this text.
    pub query: Option<String>,
    #[command(flatten)]
    pub download: DownloadArgs,
}

/// Parses `10`, `10s`, `2m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration (e.g. 10, 10s, 2m): {e}"))
}

/// Parses a rate in bytes per second: `1048576`, `500k`, `50MB/s`,
/// `1MiB/s` (k, M, G are powers of 1000; Ki, Mi, Gi of 1024).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a rate (e.g. 1048576, 500k, 50MB/s, 1MiB/s)");
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim() {
        "" => 1,
        "k" | "K" => 1000,
        "M" | "m" => 1000 * 1000,
        "G" | "g" => 1000 * 1000 * 1000,
        "Ki" | "ki" | "KI" => 1 << 10,
        "Mi" | "mi" | "MI" => 1 << 20,
        "Gi" | "gi" | "GI" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_rate("50MB/s").unwrap(), 50_000_000);
        assert_eq!(parse_rate("1MiB/s").unwrap(), 1 << 20);
        assert_eq!(parse_rate("16KiB/s").unwrap(), 16 << 10);
        assert_eq!(parse_rate("500k").unwrap(), 500_000);
        assert_eq!(parse_rate("2 GiB/s").unwrap(), 2 << 30);
        for bad in ["fast", "", "5 parsecs", "-1", "99999999999999999999G"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
