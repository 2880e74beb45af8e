//! The tracker's configuration: one typed struct parsed by clap from flags and
//! `SBCFTP_…` environment variables.
//!
//! Every flag has an environment variable of the same name, a default that
//! works out of the box (an embedded SQLite file, port 8080) and a doc comment
//! that is its `--help` text. Durations accept plain seconds (`45`) or units
//! (`45s`, `2m`, `500ms`). [`Config::validate`] checks what clap cannot (for
//! example that the TTL leaves room for heartbeats) before anything starts.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use ipnet::IpNet;

const EXAMPLES: &str = "\
Examples:
  sbcftp-tracker                                   SQLite file ./sbcftp-tracker.db, port 8080
  sbcftp-tracker --listen 127.0.0.1:9000 --peer-ttl 60s
  sbcftp-tracker --database-url postgres://sbcftp:PASS@db/sbcftp
  SBCFTP_REGISTRATION_KEY=secret sbcftp-tracker    private: peers need the key to register
It runs until Ctrl-C or SIGTERM: start it in its own terminal.";

/// SBCFTP tracker: the REST index of online peers and the files they share.
///
/// Every flag can also be given as the environment variable shown with it.
#[derive(Clone, Parser)]
#[command(name = "sbcftp-tracker", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "SBCFTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Database URL: `sqlite://FILE?mode=rwc`, `mysql://USER:PASS@HOST/DB` (MySQL or
    /// MariaDB) or `postgres://USER:PASS@HOST/DB`. Migrations run at start-up.
    #[arg(
        long,
        env = "SBCFTP_DATABASE_URL",
        default_value = "sqlite://sbcftp-tracker.db?mode=rwc",
        hide_env_values = true
    )]
    pub database_url: String,

    /// How often peers are told to send a heartbeat (capped at a third of the TTL).
    #[arg(long, env = "SBCFTP_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// How long after its last heartbeat a peer is considered gone and swept (at least 2s).
    #[arg(long, env = "SBCFTP_PEER_TTL", default_value = "45s", value_parser = parse_duration)]
    pub peer_ttl: Duration,

    /// How often the sweep of stale peers runs (one replica sweeps per interval).
    #[arg(long, env = "SBCFTP_SWEEP_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub sweep_interval: Duration,

    /// Comma-separated exact addresses (or CIDRs) of reverse proxies whose
    /// `X-Forwarded-For` header is believed (for example `172.18.0.1`). Give
    /// each proxy's own address, not a private range: a client inside a
    /// trusted range can claim any address, and so point other peers'
    /// downloads at a victim. Empty: the header is ignored.
    #[arg(long, env = "SBCFTP_TRUSTED_PROXIES", default_value = "", value_parser = parse_proxies)]
    pub trusted_proxies: ProxyList,

    /// Secret that makes the tracker private: registering, every read of
    /// `/api/v1` and `/metrics` must send `Authorization: Bearer <key>`
    /// (`/healthz`, `/livez` and the OpenAPI document stay open). Unset or
    /// empty: a public tracker.
    #[arg(long, env = "SBCFTP_REGISTRATION_KEY", hide_env_values = true)]
    pub registration_key: Option<String>,

    /// Most files one peer may share.
    #[arg(long, env = "SBCFTP_MAX_FILES_PER_PEER", default_value_t = 100_000)]
    pub max_files_per_peer: usize,

    /// Most peers registered from one client address at once (0: no limit).
    /// A NAT or an office shares one address, so the default leaves room for
    /// tens of peers behind it.
    #[arg(long, env = "SBCFTP_MAX_PEERS_PER_IP", default_value_t = 64)]
    pub max_peers_per_ip: u64,

    /// Most file entries across all peers registered from one client address
    /// (0: no limit).
    #[arg(long, env = "SBCFTP_MAX_FILES_PER_IP", default_value_t = 1_000_000)]
    pub max_files_per_ip: u64,

    /// Sustained requests per second one client address may send (0: no
    /// limit). Heartbeats, `/healthz` and `/livez` are never limited.
    #[arg(long, env = "SBCFTP_REQUESTS_PER_IP", default_value_t = 50)]
    pub requests_per_ip: u32,

    /// Requests one client address may send at once above the sustained
    /// rate (at least `--requests-per-ip`).
    #[arg(long, env = "SBCFTP_REQUESTS_BURST", default_value_t = 200)]
    pub requests_burst: u32,

    /// Page size of lists when the request gives no `limit`.
    #[arg(long, env = "SBCFTP_DEFAULT_PAGE_SIZE", default_value_t = 100)]
    pub default_page_size: u32,

    /// Largest `limit` a list request may ask for.
    #[arg(long, env = "SBCFTP_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: u32,

    /// Largest request body in bytes (a registration with many files is the largest).
    #[arg(long, env = "SBCFTP_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most requests handled at once, over the whole service; more wait up
    /// to the request timeout, then get 503.
    #[arg(long, env = "SBCFTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Most TCP connections open at once; one more is closed when accepted.
    /// Keep it under the process's open-file limit (`ulimit -n`).
    #[arg(long, env = "SBCFTP_MAX_OPEN_CONNECTIONS", default_value_t = 4096)]
    pub max_open_connections: usize,

    /// Time a client has to send a request's head, from when the connection
    /// opens or the previous answer was sent: closes slowloris connections,
    /// and is the idle keep-alive timeout.
    #[arg(long, env = "SBCFTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Time a client may leave an answer unread before it is disconnected.
    #[arg(long, env = "SBCFTP_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Time limit for one request, including waiting for the database.
    #[arg(long, env = "SBCFTP_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Size of the database connection pool.
    #[arg(long, env = "SBCFTP_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a request waits for a database connection before it is answered 503.
    #[arg(long, env = "SBCFTP_DB_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub db_acquire_timeout: Duration,

    /// Check that each registering peer can be reached at the address it is
    /// listed under: one TCP connection to its advertised port, one request
    /// in the peer protocol, one answer. The result is shown in listings
    /// (`reachable`) and told to the peer. `false` turns it off.
    #[arg(
        long,
        env = "SBCFTP_REACHABILITY_CHECK",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub reachability_check: bool,

    /// How long the reachability check waits to connect, and then for the answer.
    #[arg(long, env = "SBCFTP_REACHABILITY_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub reachability_timeout: Duration,

    /// How often an online peer's reachability is checked again (0: only at
    /// registration).
    #[arg(long, env = "SBCFTP_REACHABILITY_RECHECK", default_value = "5m", value_parser = parse_duration)]
    pub reachability_recheck: Duration,

    /// Log format: `text` (multi-field, human) or `compact`. Levels come from `RUST_LOG` (default `info`).
    #[arg(long, env = "SBCFTP_LOG_FORMAT", default_value = "text", value_parser = ["text", "compact"])]
    pub log_format: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("peer_ttl", &self.peer_ttl)
            .field("sweep_interval", &self.sweep_interval)
            .field("trusted_proxies", &self.trusted_proxies)
            .field(
                "registration_key",
                &self.registration_key().map(|_| "<redacted>"),
            )
            .field("max_files_per_peer", &self.max_files_per_peer)
            .field("max_peers_per_ip", &self.max_peers_per_ip)
            .field("max_files_per_ip", &self.max_files_per_ip)
            .field("requests_per_ip", &self.requests_per_ip)
            .field("requests_burst", &self.requests_burst)
            .field("default_page_size", &self.default_page_size)
            .field("max_page_size", &self.max_page_size)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_connections", &self.max_connections)
            .field("max_open_connections", &self.max_open_connections)
            .field("header_timeout", &self.header_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("db_max_connections", &self.db_max_connections)
            .field("db_acquire_timeout", &self.db_acquire_timeout)
            .field("reachability_check", &self.reachability_check)
            .field("reachability_timeout", &self.reachability_timeout)
            .field("reachability_recheck", &self.reachability_recheck)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl Config {
    /// The settings on one line for the start-up log, secrets redacted
    /// (the database password, the registration key).
    pub fn summary(&self) -> String {
        let secs = |d: Duration| humantime::format_duration(d).to_string();
        let mib = 1024 * 1024;
        let body = if self.max_body_bytes.is_multiple_of(mib) {
            format!("{} MiB", self.max_body_bytes / mib)
        } else {
            format!("{} B", self.max_body_bytes)
        };
        let proxies = if self.trusted_proxies.0.is_empty() {
            "none".to_owned()
        } else {
            self.trusted_proxies
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "database {}, {}, heartbeat {}, peer TTL {}, sweep {}, trusted proxies {proxies}, \
             max {} files/peer, pages {} (max {}), body max {body}, {} requests at once, \
             request timeout {}, DB pool {} (wait {}), log {}",
            redact_url(&self.database_url),
            if self.registration_key().is_some() {
                "private (registration key set)"
            } else {
                "open registration"
            },
            secs(self.heartbeat_interval),
            secs(self.peer_ttl),
            secs(self.sweep_interval),
            self.max_files_per_peer,
            self.default_page_size,
            self.max_page_size,
            self.max_connections,
            secs(self.request_timeout),
            self.db_max_connections,
            secs(self.db_acquire_timeout),
            self.log_format,
        )
    }

    /// Checks the values clap cannot check one by one.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.peer_ttl < Duration::from_secs(2) {
            bail!("--peer-ttl must be at least 2s (got {:?})", self.peer_ttl);
        }
        if self.sweep_interval.is_zero() {
            bail!("--sweep-interval must be more than 0");
        }
        if self.heartbeat_interval.is_zero() {
            bail!("--heartbeat-interval must be more than 0");
        }
        if self.max_page_size == 0 || self.default_page_size == 0 {
            bail!("--max-page-size and --default-page-size must be more than 0");
        }
        if self.default_page_size > self.max_page_size {
            bail!(
                "--default-page-size ({}) is larger than --max-page-size ({})",
                self.default_page_size,
                self.max_page_size
            );
        }
        if self.max_connections == 0 || self.db_max_connections == 0 {
            bail!("--max-connections and --db-max-connections must be more than 0");
        }
        if self.max_open_connections == 0 {
            bail!("--max-open-connections must be more than 0");
        }
        if self.header_timeout.is_zero() || self.write_timeout.is_zero() {
            bail!("--header-timeout and --write-timeout must be more than 0");
        }
        if self.max_body_bytes < 1024 {
            bail!("--max-body-bytes must be at least 1024");
        }
        if self.request_timeout.is_zero() || self.db_acquire_timeout.is_zero() {
            bail!("--request-timeout and --db-acquire-timeout must be more than 0");
        }
        if self.reachability_check && self.reachability_timeout.is_zero() {
            bail!(
                "--reachability-timeout must be more than 0 (or pass --reachability-check false)"
            );
        }
        Ok(())
    }

    /// The heartbeat interval peers are told, in whole seconds: the configured
    /// one, but at most a third of the TTL and at least one second.
    pub fn effective_heartbeat_secs(&self) -> u64 {
        let cap = self.peer_ttl.as_secs() / 3;
        self.heartbeat_interval.as_secs().min(cap).max(1)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.0.iter().any(|net| net.contains(&ip))
    }

    /// The registration key, if one is set (an empty value, as a compose file
    /// passes for an unset variable, means none).
    pub fn registration_key(&self) -> Option<&str> {
        self.registration_key.as_deref().filter(|k| !k.is_empty())
    }
}

/// Parses a duration: plain seconds (`45`) or with units (`45s`, `2m`, `500ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("{s:?} is not a duration ({e}); use seconds (45) or units (45s, 2m, 500ms)")
    })
}

/// The trusted proxies: CIDRs (or single addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyList(pub Vec<IpNet>);

/// Parses a comma-separated list of CIDRs; empty entries are ignored.
fn parse_proxies(s: &str) -> Result<ProxyList, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse_cidr)
        .collect::<Result<_, _>>()
        .map(ProxyList)
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|e| format!("{s:?} is not a CIDR or IP address ({e}), e.g. 10.0.0.0/8"))
}

/// The URL with any password replaced, for logs and `Debug`.
pub(crate) fn redact_url(url: &str) -> String {
    // scheme://user:password@host/... → scheme://user:<redacted>@host/...
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn empty_values_mean_unset() {
        let c = Config::try_parse_from(["t", "--trusted-proxies", "", "--registration-key", ""])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.trusted_proxies, ProxyList::default());
        assert_eq!(c.registration_key(), None);
        let c = Config::try_parse_from(["t", "--trusted-proxies", "10.0.0.0/8, ,::1"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.trusted_proxies.0.len(), 2);
        assert!(Config::try_parse_from(["t", "--trusted-proxies", "10.0.0.0/33"]).is_err());
    }

    #[test]
    fn redacts() {
        assert_eq!(
            redact_url("mysql://root:pw@db/x"),
            "mysql://root:<redacted>@db/x"
        );
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
        let c = Config::try_parse_from([
            "sbcftp-tracker",
            "--registration-key",
            "sekrit",
            "--database-url",
            "postgres://u:pw@h/d",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sekrit") && !dbg.contains("pw@"), "{dbg}");
        let line = c.summary();
        assert!(!line.contains("sekrit") && !line.contains("pw@"), "{line}");
        assert!(line.contains("private (registration key set)"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}
