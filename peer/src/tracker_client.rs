//! The tracker's REST API as seen by a peer: one method per endpoint, using
//! the request/response types shared with the tracker (`sbcftp_api`).
//!
//! Every request has a timeout. Errors keep the tracker's problem+json
//! `detail` (shown to the user) and tell apart what a caller reacts to
//! differently: the peer is unknown ([`TrackerError::NotFound`]: register
//! again), the tracker could not be reached or failed
//! ([`TrackerError::is_transient`]: retry with backoff), or the request was
//! refused (anything else: a clear error).

use std::net::IpAddr;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use sbcftp_api::{
    API_PREFIX, Content, ContentHash, ContentList, FileEntry, FilesUpdated, HeartbeatResponse,
    PatchFilesRequest, PeerId, PeerList, Problem, RegisterRequest, RegisterResponse,
    ReplaceFilesRequest,
};
use serde::de::DeserializeOwned;

/// Merges listing entries of the same hash (one per claimed size) into one
/// each, in the order the hashes first appear: peers once each, the entry
/// with the most holders first (its size and its names first).
pub fn merge_entries(entries: Vec<Content>) -> Vec<Content> {
    let mut groups: Vec<Vec<Content>> = Vec::new();
    for c in entries {
        match groups.iter_mut().find(|g| g[0].hash == c.hash) {
            Some(g) => g.push(c),
            None => groups.push(vec![c]),
        }
    }
    groups
        .into_iter()
        .map(|mut g| {
            g.sort_by_key(|c| std::cmp::Reverse(c.peers.len()));
            let mut merged = g[0].clone();
            for c in &g[1..] {
                for p in &c.peers {
                    if !merged.peers.iter().any(|q| q.peer_id == p.peer_id) {
                        merged.peers.push(p.clone());
                    }
                }
                for n in &c.names {
                    if !merged.names.contains(n) {
                        merged.names.push(n.clone());
                    }
                }
            }
            merged
        })
        .collect()
}

/// Timeout of one request to the tracker.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed tracker request.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// The tracker could not be reached or did not answer in time.
    #[error("cannot reach the tracker at {url}: {cause}")]
    Unreachable {
        /// The tracker's base URL.
        url: String,
        /// What went wrong, with its causes.
        cause: String,
    },
    /// 404: the peer (or content) is unknown to the tracker.
    #[error("{0}")]
    NotFound(String),
    /// Any other error answer.
    #[error("the tracker answered {status}: {detail}")]
    Status {
        status: StatusCode,
        /// The problem's detail (or title, or body excerpt).
        detail: String,
    },
    /// A 2xx answer whose body is not what the API says.
    #[error("the tracker's answer could not be read: {0}")]
    BadBody(String),
}

impl TrackerError {
    /// Whether retrying later may help (connection errors, timeouts, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            TrackerError::Unreachable { .. } => true,
            TrackerError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            TrackerError::NotFound(_) | TrackerError::BadBody(_) => false,
        }
    }
}

/// The tracker's base URL from what the user typed: `host:port` means
/// `http://host:port`, and a trailing `/api/v1` (copied from a curl example)
/// is dropped, since every request adds it.
fn parse_base(typed: &str) -> anyhow::Result<Url> {
    let typed = typed.trim();
    let with_scheme = if typed.contains("://") {
        typed.to_owned()
    } else {
        format!("http://{typed}")
    };
    let mut base = Url::parse(&with_scheme).map_err(|e| {
        anyhow::anyhow!(
            "--tracker {typed:?} is not a URL ({e}); write it as http://HOST:PORT, e.g. http://127.0.0.1:8080"
        )
    })?;
    if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
        anyhow::bail!(
            "--tracker {typed:?} is not an http:// or https:// URL; write it as http://HOST:PORT, e.g. http://127.0.0.1:8080"
        );
    }
    let path = base.path().trim_end_matches('/');
    let path = path.strip_suffix(API_PREFIX).unwrap_or(path);
    let path = format!("{path}/");
    base.set_path(&path);
    Ok(base)
}

/// The hex number just below `hex` (same width), or `None` for all zeros.
fn hex_predecessor(hex: &str) -> Option<String> {
    let mut digits: Vec<u8> = hex.bytes().collect();
    for d in digits.iter_mut().rev() {
        if *d == b'0' {
            *d = b'f';
        } else {
            *d = if *d == b'a' { b'9' } else { *d - 1 };
            return String::from_utf8(digits).ok();
        }
    }
    None
}

/// Why the tracker at `base` could not be reached, with what to do about it,
/// for the common cases; the error's own chain otherwise.
fn unreachable_cause(e: &reqwest::Error, base: &Url) -> String {
    let chain = crate::ui::error_chain(e);
    let refused = std::iter::successors(Some(e as &dyn std::error::Error), |c| c.source())
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    if refused || chain.contains("Connection refused") {
        return "nothing listens there; start the tracker (sbcftp-tracker) or point --tracker at it"
            .into();
    }
    if e.is_timeout() {
        return format!(
            "no answer within {}s; check that the tracker runs and that --tracker is its address",
            REQUEST_TIMEOUT.as_secs()
        );
    }
    if base.scheme() == "https"
        && (chain.contains("InvalidContentType") || chain.contains("corrupt message"))
    {
        let mut plain = base.clone();
        let _ = plain.set_scheme("http");
        return format!("it does not speak TLS; use --tracker {plain}");
    }
    if chain.contains("invalid HTTP version") || chain.contains("invalid HTTP") {
        return "it does not speak HTTP (is that a peer's port?); point --tracker at the tracker's port (8080 by default)".into();
    }
    if chain.contains("dns error") || chain.contains("failed to lookup address") {
        return "unknown host name; check the host in --tracker".into();
    }
    chain
}

/// A peer's registration: what later calls need.
#[derive(Clone)]
pub struct Registration {
    /// The tracker's id for this peer.
    pub peer_id: PeerId,
    /// Bearer token for heartbeat, file changes and leaving.
    pub token: String,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("peer_id", &self.peer_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A client of one tracker.
#[derive(Clone)]
pub struct TrackerClient {
    http: reqwest::Client,
    base: Url,
    registration_key: Option<String>,
}

impl std::fmt::Debug for TrackerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerClient")
            .field("base", &self.base.as_str())
            .field(
                "registration_key",
                &self.registration_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl TrackerClient {
    /// A client of the tracker at `base` (`http://host:port`). Requests leave
    /// from `local_ip` when given, so the tracker records that address.
    pub fn new(
        base: &str,
        registration_key: Option<String>,
        local_ip: Option<IpAddr>,
    ) -> anyhow::Result<Self> {
        let base = parse_base(base)?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // Below the tracker's idle keep-alive timeout (its --header-timeout,
            // 10 s by default), so a heartbeat never goes out on a pooled
            // connection that the tracker is closing at that very moment.
            .pool_idle_timeout(Duration::from_secs(5))
            .user_agent(concat!("sbcftp-peer/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .local_address(local_ip)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
        Ok(TrackerClient {
            http,
            base,
            registration_key,
        })
    }

    /// The tracker's base URL.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, TrackerError> {
        let full = format!("{}{path}", API_PREFIX.trim_start_matches('/'));
        let mut url = self
            .base
            .join(&full)
            .map_err(|e| TrackerError::BadBody(format!("bad URL: {e}")))?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        bearer: Option<&str>,
        body: Option<&impl serde::Serialize>,
    ) -> Result<Option<T>, TrackerError> {
        let mut req = self.http.request(method, url);
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let unreachable = |e: reqwest::Error| TrackerError::Unreachable {
            url: self.base.to_string(),
            cause: unreachable_cause(&e, &self.base),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| TrackerError::BadBody(e.to_string()));
        }
        let detail = match serde_json::from_slice::<Problem>(&bytes) {
            Ok(p) => p.detail.unwrap_or(p.title),
            Err(_) => {
                let text = String::from_utf8_lossy(&bytes);
                let text: String = text.chars().take(200).collect();
                if text.trim().is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    crate::ui::safe(text.trim())
                }
            }
        };
        if status == StatusCode::NOT_FOUND {
            return Err(TrackerError::NotFound(detail));
        }
        Err(TrackerError::Status { status, detail })
    }

    /// A `GET` of the index, with the key of a private tracker.
    async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T, TrackerError> {
        self.expect(
            Method::GET,
            url,
            self.registration_key.as_deref(),
            None::<&()>,
        )
        .await
    }

    async fn expect<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        bearer: Option<&str>,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, TrackerError> {
        self.send(method, url, bearer, body)
            .await?
            .ok_or_else(|| TrackerError::BadBody("empty answer".into()))
    }

    /// `POST /api/v1/peers`, with the registration key if one is set.
    pub async fn register(
        &self,
        port: u16,
        files: Vec<FileEntry>,
    ) -> Result<RegisterResponse, TrackerError> {
        let url = self.url("/peers", &[])?;
        let body = RegisterRequest { port, files };
        self.expect(
            Method::POST,
            url,
            self.registration_key.as_deref(),
            Some(&body),
        )
        .await
    }

    /// `POST /api/v1/peers/{id}/heartbeat`.
    pub async fn heartbeat(&self, reg: &Registration) -> Result<HeartbeatResponse, TrackerError> {
        let url = self.url(&format!("/peers/{}/heartbeat", reg.peer_id), &[])?;
        self.expect(Method::POST, url, Some(&reg.token), None::<&()>)
            .await
    }

    /// `PUT /api/v1/peers/{id}/files`.
    pub async fn replace_files(
        &self,
        reg: &Registration,
        files: Vec<FileEntry>,
    ) -> Result<FilesUpdated, TrackerError> {
        let url = self.url(&format!("/peers/{}/files", reg.peer_id), &[])?;
        let body = ReplaceFilesRequest { files };
        self.expect(Method::PUT, url, Some(&reg.token), Some(&body))
            .await
    }

    /// `PATCH /api/v1/peers/{id}/files`.
    pub async fn patch_files(
        &self,
        reg: &Registration,
        patch: &PatchFilesRequest,
    ) -> Result<FilesUpdated, TrackerError> {
        let url = self.url(&format!("/peers/{}/files", reg.peer_id), &[])?;
        self.expect(Method::PATCH, url, Some(&reg.token), Some(patch))
            .await
    }

    /// `DELETE /api/v1/peers/{id}`.
    pub async fn leave(&self, reg: &Registration) -> Result<(), TrackerError> {
        let url = self.url(&format!("/peers/{}", reg.peer_id), &[])?;
        self.send::<serde_json::Value>(Method::DELETE, url, Some(&reg.token), None::<&()>)
            .await
            .map(|_| ())
    }

    /// `GET /api/v1/files?q=&cursor=`: one page of contents.
    pub async fn list_files(
        &self,
        q: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<ContentList, TrackerError> {
        let mut query = Vec::new();
        if let Some(q) = q {
            query.push(("q", q));
        }
        if let Some(c) = cursor {
            query.push(("cursor", c));
        }
        let url = self.url("/files", &query)?;
        self.get(url).await
    }

    /// Every content matching `q`, following cursors up to `cap` rows.
    pub async fn all_files(
        &self,
        q: Option<&str>,
        cap: usize,
    ) -> Result<Vec<Content>, TrackerError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.list_files(q, cursor.as_deref()).await?;
            out.extend(page.files);
            match page.next_cursor {
                Some(c) if out.len() < cap && Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => break,
            }
        }
        out.truncate(cap);
        Ok(out)
    }

    /// The contents whose hash starts with `prefix` (lowercase hex), at most
    /// `max`. The listing is ordered by hash and its cursor is the last hash
    /// of a page, so this starts the listing just before the prefix (an
    /// indexed range on the tracker) and stops at the first hash past it.
    pub async fn contents_with_prefix(
        &self,
        prefix: &str,
        max: usize,
    ) -> Result<Vec<Content>, TrackerError> {
        let limit = (max + 1).clamp(2, 100).to_string();
        let mut cursor = hex_predecessor(&format!("{prefix:0<64}"));
        let mut out = Vec::new();
        loop {
            let mut query = vec![("limit", limit.as_str())];
            if let Some(c) = &cursor {
                query.push(("cursor", c.as_str()));
            }
            let url = self.url("/files", &query)?;
            let page: ContentList = self.get(url).await?;
            let before = out.len();
            let count = page.files.len();
            out.extend(
                page.files
                    .into_iter()
                    .take_while(|c| c.hash.to_string().starts_with(prefix)),
            );
            let all_matched = out.len() - before == count;
            match page.next_cursor {
                Some(c) if all_matched && out.len() < max && Some(&c) != cursor.as_ref() => {
                    cursor = Some(c)
                }
                _ => break,
            }
        }
        out.truncate(max);
        Ok(out)
    }

    /// Every holder of `hash` the tracker lists, whatever size each claims:
    /// `GET /files?hash=` has one entry per claimed size (a download proves
    /// the size itself, so holders that lie about it cost nothing, and the
    /// honest ones must not be left out). The entries are merged into one:
    /// each peer once, the entry with the most holders first (its size, a
    /// first guess only, and its names first). `NotFound` when none.
    pub async fn holders(&self, hash: &ContentHash) -> Result<Content, TrackerError> {
        let h = hash.to_string();
        let url = self.url("/files", &[("hash", h.as_str())])?;
        let page: ContentList = self.get(url).await?;
        merge_entries(page.files)
            .into_iter()
            .next()
            .ok_or_else(|| TrackerError::NotFound(format!("no online peer shares {h}")))
    }

    /// `GET /api/v1/files/{hash}`.
    pub async fn content(&self, hash: &ContentHash) -> Result<Content, TrackerError> {
        let url = self.url(&format!("/files/{hash}"), &[])?;
        self.get(url).await
    }

    /// Every online peer, following cursors up to `cap` rows.
    pub async fn all_peers(&self, cap: usize) -> Result<PeerList, TrackerError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = Vec::new();
            if let Some(c) = &cursor {
                query.push(("cursor", c.as_str()));
            }
            let url = self.url("/peers", &query)?;
            let page: PeerList = self.get(url).await?;
            out.extend(page.peers);
            match page.next_cursor {
                Some(c) if out.len() < cap && Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => break,
            }
        }
        out.truncate(cap);
        Ok(PeerList {
            peers: out,
            next_cursor: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base_urls_as_people_type_them() {
        let base = |s| parse_base(s).map(|u| u.to_string());
        assert_eq!(base("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080/");
        assert_eq!(base("localhost:8080").unwrap(), "http://localhost:8080/");
        assert_eq!(
            base("http://h:8080/api/v1").unwrap(),
            "http://h:8080/",
            "the API prefix is added by every request"
        );
        assert_eq!(base("http://h:8080/api/v1/").unwrap(), "http://h:8080/");
        assert_eq!(base("https://h/tracker").unwrap(), "https://h/tracker/");
        let err = base("ftp://h").unwrap_err().to_string();
        assert!(err.contains("e.g. http://127.0.0.1:8080"), "{err}");
        assert!(base("http://").is_err());
    }

    #[test]
    fn hex_predecessors() {
        assert_eq!(hex_predecessor("0000"), None);
        assert_eq!(hex_predecessor("0010").as_deref(), Some("000f"));
        assert_eq!(hex_predecessor("a000").as_deref(), Some("9fff"));
        assert_eq!(hex_predecessor("ffff").as_deref(), Some("fffe"));
    }
}
