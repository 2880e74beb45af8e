//! Test harness: a real tracker in-process on 127.0.0.1:0 with its own SQLite
//! file, real `sbcftp-peer` processes on their own loopback addresses, real
//! share folders in temp dirs. Everything is polled with generous deadlines;
//! nothing is synchronised by sleeping.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sbcftp_api::{Content, ContentHash, Peer};
use sbcftp_peer::tracker_client::TrackerClient;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// Generous deadline for anything polled.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The peer binary under test.
pub const PEER_BIN: &str = env!("CARGO_BIN_EXE_sbcftp-peer");

/// A running tracker.
pub struct Tracker {
    pub url: String,
    pub client: TrackerClient,
    _dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Tracker {
    /// Starts a tracker with 1 s heartbeats, a 3 s TTL and a 1 s sweep.
    pub async fn start() -> Tracker {
        Self::start_with("1", "3", "1").await
    }

    /// Starts a tracker with these heartbeat interval, TTL and sweep interval.
    pub async fn start_with(heartbeat: &str, ttl: &str, sweep: &str) -> Tracker {
        Self::start_args(heartbeat, ttl, sweep, &[]).await
    }

    /// Starts a tracker with these liveness settings and extra flags.
    pub async fn start_args(heartbeat: &str, ttl: &str, sweep: &str, extra: &[&str]) -> Tracker {
        Self::start_at("127.0.0.1:0", heartbeat, ttl, sweep, extra).await
    }

    /// Starts a tracker listening on `bind` (an `IP:PORT`), with these
    /// liveness settings and extra flags.
    pub async fn start_at(
        bind: &str,
        heartbeat: &str,
        ttl: &str,
        sweep: &str,
        extra: &[&str],
    ) -> Tracker {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let db = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("tracker.db").display()
        );
        let mut argv = vec![
            "sbcftp-tracker",
            "--database-url",
            &db,
            "--heartbeat-interval",
            heartbeat,
            "--peer-ttl",
            ttl,
            "--sweep-interval",
            sweep,
        ];
        argv.extend_from_slice(extra);
        let config = <sbcftp_tracker::Config as clap::Parser>::try_parse_from(argv).unwrap();
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(sbcftp_tracker::run(listener, config, async move {
            let _ = rx.await;
        }));
        // On a private tracker the test's own look-ups send the key too.
        let key = extra
            .windows(2)
            .find(|w| w[0] == "--registration-key")
            .map(|w| w[1].to_owned());
        let client = TrackerClient::new(&url, key, None).unwrap();
        let t = Tracker {
            url,
            client,
            _dir: dir,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        wait_for("tracker to answer", || async {
            t.client.all_peers(10).await.is_ok()
        })
        .await;
        t
    }

    /// Online peers.
    pub async fn peers(&self) -> Vec<Peer> {
        self.client.all_peers(1000).await.unwrap().peers
    }

    /// The peer registered from `ip`, if any.
    pub async fn peer_at(&self, ip: &str) -> Option<Peer> {
        let prefix = format!("{ip}:");
        self.peers()
            .await
            .into_iter()
            .find(|p| p.addr.starts_with(&prefix))
    }

    /// Every content.
    pub async fn contents(&self) -> Vec<Content> {
        self.client.all_files(None, 1000).await.unwrap()
    }

    /// Stops the tracker and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A running `sbcftp-peer serve` process.
pub struct PeerProc {
    pub child: Child,
    pub share: PathBuf,
    pub log: PathBuf,
    /// `ip:port` as the tracker recorded it (once registered).
    pub addr: String,
    pub peer_id: String,
    _dir: TempDir,
}

impl PeerProc {
    /// Starts a peer on `ip:0` sharing the files `files` (name, bytes), and
    /// waits until the tracker lists it with that many files.
    pub async fn start(
        tracker: &Tracker,
        ip: &str,
        files: &[(&str, &[u8])],
        extra: &[&str],
    ) -> PeerProc {
        Self::start_env(tracker, ip, files, extra, &[]).await
    }

    /// [`PeerProc::start`] with extra environment variables.
    pub async fn start_env(
        tracker: &Tracker,
        ip: &str,
        files: &[(&str, &[u8])],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> PeerProc {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("DistShared");
        std::fs::create_dir(&share).unwrap();
        for (name, data) in files {
            std::fs::write(share.join(name), data).unwrap();
        }
        Self::start_in(tracker, ip, dir, share, files.len() as u64, extra, env).await
    }

    /// Starts a peer on an existing share folder inside `dir`, expecting
    /// `count` files listed. The listening address is passed in the peer's
    /// own variable, `SBCFTP_PEER_LISTEN`.
    pub async fn start_in(
        tracker: &Tracker,
        ip: &str,
        dir: TempDir,
        share: PathBuf,
        count: u64,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> PeerProc {
        let log = dir.path().join("peer.log");
        let logf = std::fs::File::create(&log).unwrap();
        let listen = format!("{ip}:0");
        let mut cmd = Command::new(PEER_BIN);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SBCFTP_PEER_LISTEN", &listen)
            .envs(env.iter().copied())
            .args([
                "--tracker",
                &tracker.url,
                "--log",
                "sbcftp_peer=debug,info",
                "serve",
                "--share",
            ])
            .arg(&share)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let child = cmd.spawn().unwrap();
        let mut p = PeerProc {
            child,
            share,
            log,
            addr: String::new(),
            peer_id: String::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + DEADLINE;
        let prefix = format!("{ip}:");
        loop {
            // Another peer may share this IP (with another file count).
            if let Some(found) = tracker
                .peers()
                .await
                .into_iter()
                .find(|p| p.addr.starts_with(&prefix) && p.file_count == count)
            {
                p.addr = found.addr;
                p.peer_id = found.peer_id.to_string();
                break;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("peer on {ip} exited with {status}:\n{}", p.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "peer on {ip} never registered:\n{}",
                p.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    /// Whether the process is still running.
    pub fn child_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The peer's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "peer did not exit:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        let _ = self.signal_quiet("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PeerProc {
    fn signal_quiet(&self, sig: &str) -> std::io::Result<std::process::ExitStatus> {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status()
    }
}

/// Runs `sbcftp-peer --tracker URL ARGS…` to completion.
pub async fn peer_cmd(tracker: &Tracker, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(PEER_BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["--tracker", &tracker.url])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("command did not finish")
        .unwrap()
}

/// Starts `sbcftp-peer --tracker URL ARGS…` in the background.
pub fn peer_spawn(tracker: &Tracker, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(PEER_BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["--tracker", &tracker.url])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Output of a finished command as text, for assertion messages.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Polls `cond` until it is true or the deadline passes.
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The content hash of `data`.
pub fn content_hash(data: &[u8]) -> ContentHash {
    ContentHash::from_bytes(*blake3::hash(data).as_bytes())
}

/// Hex BLAKE3 of `data`.
pub fn hash_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Block size of the test contents (all under 64 GiB).
pub const BLOCK: usize = 1 << 20;

/// For each block of `data`, whether the part file at `part` holds it
/// intact. A block that is neither intact nor absent (zeros past the end or
/// in a hole) is reported in the second list: the part file must never
/// hold one once the download has ended.
pub fn part_blocks(part: &Path, data: &[u8]) -> (Vec<bool>, Vec<usize>) {
    let bytes = std::fs::read(part).unwrap_or_default();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, want) in data.chunks(BLOCK).enumerate() {
        let start = i * BLOCK;
        let have = bytes
            .get(start..(start + want.len()).min(bytes.len()))
            .unwrap_or(&[]);
        let intact = have == want;
        if !intact && have.iter().any(|b| *b != 0) {
            bad.push(i);
        }
        good.push(intact);
    }
    (good, bad)
}

/// Verified bytes a part file holds; panics if it holds anything else.
pub fn verified_in_part(part: &Path, data: &[u8]) -> u64 {
    let (good, bad) = part_blocks(part, data);
    assert!(
        bad.is_empty(),
        "unverified data in blocks {bad:?} of {}",
        part.display()
    );
    good.iter()
        .zip(data.chunks(BLOCK))
        .filter(|(g, _)| **g)
        .map(|(_, b)| b.len() as u64)
        .sum()
}

/// The READ answers a serving peer logged as complete: `(client port,
/// first byte, end)`.
pub fn served(log: &str) -> Vec<(u16, u64, u64)> {
    log.lines()
        .filter(|l| l.contains(" served \""))
        .filter_map(|l| {
            let range = l.split(" bytes ").nth(1)?.split(' ').next()?;
            let (a, b) = range.split_once("..")?;
            let port = l.split(" to 127.").nth(1)?.split([':', ' ']).nth(1)?;
            Some((port.parse().ok()?, a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// The JSON `get --json` printed.
pub fn summary(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", text(out)))
}

/// Blocks of `data` the part file holds intact right now (while a download
/// writes it: a block being written counts once complete).
pub fn verified_blocks_now(part: &Path, data: &[u8]) -> usize {
    part_blocks(part, data).0.iter().filter(|g| **g).count()
}
