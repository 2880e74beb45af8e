//! The address a peer is recorded under: where its request came from.
//!
//! The IP is the TCP peer of the connection, so nobody can register an
//! address they do not own. Only when that TCP peer is a configured trusted
//! proxy is `X-Forwarded-For` believed, and then its right-most hop that is
//! not itself a trusted proxy (the left part of the header is written by the
//! client and can say anything). IPv4-mapped IPv6 addresses are shown as
//! IPv4; IPv6 addresses are written `[v6]:port`.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use crate::config::Config;
use crate::error::Error;

/// The client's IP for a request that arrived from `socket`.
pub fn client_ip(
    config: &Config,
    socket: SocketAddr,
    headers: &HeaderMap,
) -> Result<IpAddr, Error> {
    let direct = socket.ip().to_canonical();
    if !config.is_trusted_proxy(direct) {
        return Ok(direct);
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value
            .to_str()
            .map_err(|_| Error::BadRequest("X-Forwarded-For is not visible ASCII".into()))?;
        for part in text.split(',') {
            hops.push(parse_hop(part.trim())?);
        }
    }
    if let Some(hop) = hops.iter().rev().find(|ip| !config.is_trusted_proxy(**ip)) {
        return Ok(*hop);
    }
    // Every hop is a trusted proxy: the left-most is the closest we know to
    // the client; without the header the proxy itself is the client.
    Ok(hops.first().copied().unwrap_or(direct))
}

fn parse_hop(hop: &str) -> Result<IpAddr, Error> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Ok(ip.to_canonical());
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Ok(sa.ip().to_canonical());
    }
    let shown: String = hop.chars().take(60).collect();
    Err(Error::BadRequest(format!(
        "X-Forwarded-For hop {shown:?} is not an IP address"
    )))
}

/// `ip:port`, or `[v6]:port`.
pub fn format_addr(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(trusted: &str) -> Config {
        Config::try_parse_from(["t", "--trusted-proxies", trusted])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            xff.parse().unwrap_or_else(|e| panic!("{e}")),
        );
        h
    }

    #[test]
    fn untrusted_socket_ignores_header() {
        let c = config("10.0.0.0/8");
        let s: SocketAddr = "192.0.2.1:5000".parse().unwrap_or_else(|e| panic!("{e}"));
        let ip = client_ip(&c, s, &headers("1.2.3.4")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ip.to_string(), "192.0.2.1");
    }

    #[test]
    fn trusted_takes_rightmost_untrusted() {
        let c = config("10.0.0.0/8");
        let s: SocketAddr = "10.0.0.1:5000".parse().unwrap_or_else(|e| panic!("{e}"));
        let ip = client_ip(&c, s, &headers("6.6.6.6, 1.2.3.4, 10.0.0.2"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ip.to_string(), "1.2.3.4");
        assert!(client_ip(&c, s, &headers("nonsense")).is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(
            format_addr("::1".parse().unwrap_or_else(|e| panic!("{e}")), 7),
            "[::1]:7"
        );
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format_addr(mapped.to_canonical(), 7), "1.2.3.4:7");
    }
}
