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
#[command(
    name = "sbcftp-peer",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    /// The tracker's URL: `http://HOST:PORT` (`HOST:PORT` means http://).
    #[arg(
        long,
        global = true,
        env = "SBCFTP_TRACKER",
        default_value = "http://127.0.0.1:8080",
        help_heading = GLOBAL
    )]
    pub tracker: String,

    /// Key of a private tracker; every command sends it as `Authorization: Bearer
    /// <key>` (`serve` to register, the others to list, search and look up).
    #[arg(
        long,
        global = true,
        env = "SBCFTP_PEER_REGISTRATION_KEY",
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    pub registration_key: Option<String>,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info`, `sbcftp_peer=debug`).
    /// Falls back to `RUST_LOG`, then to `info` for `serve` and `warn` for the
    /// other commands.
    #[arg(long, global = true, env = "SBCFTP_LOG", help_heading = GLOBAL)]
    pub log: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The heading of the options every subcommand takes.
const GLOBAL: &str = "Global options";

const EXAMPLES: &str = "\
Examples:
  sbcftp-peer serve --share ./DistShared     share a folder (runs until Ctrl-C)
  sbcftp-peer files                          what the tracker lists
  sbcftp-peer get report.pdf                 download by name into ./Downloads
  sbcftp-peer browse report                  pick from a numbered list
  sbcftp-peer --tracker 10.0.0.5:8080 peers  another tracker";

const SERVE_EXAMPLES: &str = "\
Examples:
  sbcftp-peer serve --share ./DistShared
  sbcftp-peer serve --share ~/Public --listen 192.168.1.20:44444
  sbcftp-peer --tracker http://10.0.0.5:8080 serve --listen 127.0.0.2:0   (port 0: any free port)";

const FILES_EXAMPLES: &str = "\
Examples:
  sbcftp-peer files
  sbcftp-peer files report          names containing \"report\"
  sbcftp-peer files --json | jq -r '.files[].hash'   full hashes";

const PEERS_EXAMPLES: &str = "\
Examples:
  sbcftp-peer peers
  sbcftp-peer peers --json | jq '.peers[].addr'";

const GET_EXAMPLES: &str = "\
Examples:
  sbcftp-peer get report.pdf
  sbcftp-peer get report.pdf --out ~/Downloads --name report-v2.pdf
  sbcftp-peer get 6667692419a6              a hash prefix, as `files` shows it";

const BROWSE_EXAMPLES: &str = "\
Examples:
  sbcftp-peer browse
  sbcftp-peer browse .iso --out ~/Downloads";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Share a folder: hash it, register with the tracker, heartbeat, and serve
    /// its files to other peers until Ctrl-C or SIGTERM.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// List the contents the tracker knows (optionally matching QUERY).
    #[command(after_help = FILES_EXAMPLES)]
    Files(FilesArgs),
    /// List the online peers.
    #[command(after_help = PEERS_EXAMPLES)]
    Peers(PeersArgs),
    /// Download a content by hash or by exact name.
    #[command(after_help = GET_EXAMPLES)]
    Get(GetArgs),
    /// Pick a content from a numbered list and download it.
    #[command(after_help = BROWSE_EXAMPLES)]
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
    #[arg(long, env = "SBCFTP_PEER_LISTEN", default_value = "0.0.0.0:44444", value_parser = parse_listen)]
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

    /// How often the whole share folder is rescanned without any event (stat
    /// only). The folder is watched, so changes are seen within a second;
    /// the rescan is a safety net (at least every 30s if watching fails).
    #[arg(long, env = "SBCFTP_RESCAN_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub rescan_interval: Duration,

    /// A new or changed file is announced once it was closed after writing,
    /// or has not been written for this long.
    #[arg(long, env = "SBCFTP_SETTLE_TIME", default_value = "1s", value_parser = parse_duration)]
    pub settle_time: Duration,

    /// Most bytes per second a file is hashed at (unlimited by default), so a
    /// large copy into the folder does not take the whole disk.
    #[arg(long, env = "SBCFTP_MAX_HASH_RATE")]
    pub max_hash_rate: Option<u64>,

    /// Most connections served at once; more are answered BUSY.
    #[arg(long, env = "SBCFTP_PEER_MAX_CONNECTIONS", default_value_t = 64)]
    pub max_connections: usize,

    /// Most connections served at once to one address (an IPv6 /64 counts as
    /// one); more are answered BUSY. Default: an eighth of
    /// --max-connections, at least 2.
    #[arg(long, env = "SBCFTP_PEER_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,

    /// How long one connection may be used; its next request after that is
    /// answered BUSY and the connection closed (the client reconnects).
    #[arg(long, env = "SBCFTP_CONNECTION_LIFETIME", default_value = "10m", value_parser = parse_duration)]
    pub connection_lifetime: Duration,

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
    /// Only contents with a name that has words starting with each word of
    /// this query, in any order, ignoring case (`con bud` finds
    /// `Concert_Budget.mkv`; words are runs of letters and digits), or, 8+
    /// hex digits, whose hash starts with it.
    pub query: Option<String>,
    /// Print the tracker's answer as JSON (`{"files": [...]}`, full hashes) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Most rows to fetch.
    #[arg(long, env = "SBCFTP_LIMIT", default_value_t = 1000)]
    pub limit: usize,
}

/// `peers`.
#[derive(Debug, Args)]
pub struct PeersArgs {
    /// Print the tracker's answer as JSON (`{"peers": [...]}`) instead of a table.
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
    /// A content's hash: all 64 hex digits, or a unique prefix of 8 or more
    /// (the HASH column of `files`); or a file name that exactly one content has.
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
    /// Only list contents with a name that has words starting with each
    /// word of this query, in any order, ignoring case.
    pub query: Option<String>,
    #[command(flatten)]
    pub download: DownloadArgs,
}

/// Parses `IP:PORT`; a bare IP gets an example with a port.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => Err(format!(
            "no port; write IP:PORT, e.g. {} (port 0 picks a free one)",
            SocketAddr::new(ip, 44444)
        )),
        Err(_) => {
            Err("write IP:PORT, e.g. 0.0.0.0:44444 or 127.0.0.2:0 (port 0 picks a free one)".into())
        }
    }
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
