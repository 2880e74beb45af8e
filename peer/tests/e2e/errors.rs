//! Messages a newcomer meets first: mistakes in `--tracker`, `--out` and
//! `--listen`, a tracker that is down, `--help`, and what `serve` logs. Each
//! error is one line that says what to do next, from the real binary.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::helpers::*;

/// Runs `sbcftp-peer ARGS…` (no `--tracker` added) to completion.
async fn run(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(PEER_BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("command did not finish")
        .unwrap()
}

/// The one line of a failed command's stderr, which must contain `wanted`.
fn one_error_line(out: &Output, wanted: &str) -> String {
    let (stdout, stderr) = text(out);
    assert!(!out.status.success(), "succeeded: {stdout}{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(lines[0].contains(wanted), "{wanted:?} not in: {stderr}");
    lines[0].to_owned()
}

/// A loopback port nothing listens on (bound, then released).
fn free_port(ip: &str) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_urls_as_people_type_them() {
    let tracker = Tracker::start().await;
    let _a = PeerProc::start(&tracker, "127.0.0.2", &[("hello.txt", b"hi")], &[]).await;
    let bare = tracker.url.trim_start_matches("http://").to_owned();
    // No scheme means http://; a copied /api/v1 suffix is dropped.
    for url in [bare.clone(), format!("{}/api/v1", tracker.url)] {
        let out = run(&["--tracker", &url, "files"]).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{url}: {stderr}");
        assert!(stdout.contains("hello.txt"), "{url}: {stdout}");
    }
    let line = one_error_line(
        &run(&["--tracker", "ftp://127.0.0.1:8080", "files"]).await,
        "is not an http:// or https:// URL; write it as http://HOST:PORT, e.g. http://127.0.0.1:8080",
    );
    assert!(line.starts_with("sbcftp-peer: --tracker"), "{line}");

    // https:// to this plain-HTTP tracker.
    let https = format!("https://{bare}");
    one_error_line(
        &run(&["--tracker", &https, "files"]).await,
        &format!("it does not speak TLS; use --tracker http://{bare}/"),
    );

    // A peer's port instead of the tracker's.
    let peer = tracker.peers().await.remove(0).addr;
    one_error_line(
        &run(&["--tracker", &peer, "files"]).await,
        "it does not speak HTTP (is that a peer's port?); point --tracker at the tracker's port",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_down_says_to_start_it() {
    let url = format!("http://127.0.0.1:{}", free_port("127.0.0.1"));
    let line = one_error_line(
        &run(&["--tracker", &url, "files"]).await,
        &format!(
            "cannot reach the tracker at {url}/: nothing listens there; start the tracker (sbcftp-tracker) or point --tracker at it"
        ),
    );
    assert!(!line.contains("os error"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_must_be_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let f = file.to_str().unwrap();
    // Checked before the tracker is asked anything (none runs here).
    for cmd in ["get", "browse"] {
        let mut args = vec!["--tracker", "127.0.0.1:1", cmd];
        if cmd == "get" {
            args.push("x.bin");
        }
        args.extend(["--out", f]);
        one_error_line(
            &run(&args).await,
            &format!("--out {f} is a file; --out takes a folder to save into (created if missing)"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_listen_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().to_str().unwrap();
    // No port: clap's error carries our example.
    let out = run(&["serve", "--share", share, "--listen", "127.0.0.5"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no port; write IP:PORT, e.g. 127.0.0.5:44444 (port 0 picks a free one)"),
        "{stderr}"
    );

    // The port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.6:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    one_error_line(
        &run(&[
            "--tracker",
            "127.0.0.1:1",
            "serve",
            "--share",
            share,
            "--listen",
            &addr,
        ])
        .await,
        &format!(
            "cannot listen on {addr}: the port is in use (another sbcftp-peer serve?); stop it or pass another --listen port"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_has_examples_and_global_options_apart() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["files", "--help"],
        vec!["peers", "--help"],
        vec!["get", "--help"],
        vec!["browse", "--help"],
    ] {
        let out = run(&args).await;
        let (help, _) = text(&out);
        assert!(out.status.success(), "{args:?}");
        assert!(
            help.contains("\nExamples:\n  sbcftp-peer "),
            "{args:?}: {help}"
        );
        assert!(help.contains("\nGlobal options:\n"), "{args:?}: {help}");
        let global = help.split("\nGlobal options:\n").nth(1).unwrap();
        assert!(global.contains("--tracker <TRACKER>"), "{args:?}: {help}");
        assert!(
            !help.contains("ContentList") && !help.contains("PeerList"),
            "{args:?}: {help}"
        );
    }
    let (help, _) = text(&run(&["get", "--help"]).await);
    assert!(
        help.contains("every command sends it as `Authorization: Bearer"),
        "{help}"
    );
}

/// A `serve` process on `ip:0`, killed when dropped.
struct Serve {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(tracker: &str, ip: &str, share: &Path, log: &Path) -> Serve {
        let logf = std::fs::File::create(log).unwrap();
        let child = std::process::Command::new(PEER_BIN)
            .env_clear()
            .args([
                "--tracker",
                tracker,
                "serve",
                "--listen",
                &format!("{ip}:0"),
            ])
            .arg("--share")
            .arg(share)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap();
        Serve {
            child,
            log: log.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_log(&self, what: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !self.log().contains(what) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what:?} in:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An in-process tracker on `addr` over the SQLite file `db`; stops when the
/// sender is dropped or sent to.
async fn tracker_on(
    addr: &str,
    db: &str,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let config = <sbcftp_tracker::Config as clap::Parser>::try_parse_from([
        "sbcftp-tracker",
        "--database-url",
        db,
        "--heartbeat-interval",
        "1",
        "--peer-ttl",
        "120",
    ])
    .unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(sbcftp_tracker::run(listener, config, async move {
        let _ = rx.await;
    }));
    (url, tx, handle)
}

/// The tracker goes away and comes back with its database: the peer says
/// heartbeats failed, then that they resumed (no new registration needed).
/// Its log lines do not repeat their values as fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_resumed_after_an_outage() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("f.txt"), b"f").unwrap();
    let (url, tx, handle) = tracker_on("127.0.0.1:0", &db).await;
    let peer = Serve::start(&url, "127.0.0.8", &share, &dir.path().join("peer.log"));
    peer.wait_log("registered with the tracker").await;

    let _ = tx.send(());
    handle.await.unwrap().unwrap();
    peer.wait_log("heartbeat failed").await;
    let (_url, tx, handle) = tracker_on(url.trim_start_matches("http://"), &db).await;
    peer.wait_log("heartbeats resumed after").await;
    let log = peer.log();
    assert!(!log.contains("registering again"), "{log}");
    for line in log
        .lines()
        .filter(|l| l.contains("listening on") || l.contains("registered"))
    {
        assert!(
            !line.contains("addr=") && !line.contains("peer_id="),
            "{line}"
        );
    }
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
}

/// Runs `sbcftp-peer --tracker URL browse ARGS…` with `input` on stdin.
async fn browse_with(tracker: &Tracker, args: &[&str], input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(PEER_BIN)
        .env_clear()
        .args(["--tracker", &tracker.url, "browse"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("browse did not finish")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_asks_again_and_repeats_the_query() {
    let tracker = Tracker::start().await;
    let _a = PeerProc::start(&tracker, "127.0.0.2", &[("one.txt", b"one")], &[]).await;
    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap();

    // A query nothing matches is repeated, with what to do.
    let out = browse_with(&tracker, &["nosuchthing", "--out", od], "").await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(
            "no files match nosuchthing; `sbcftp-peer browse` without a query lists them all"
        ),
        "{stdout}"
    );

    // An answer that is neither yes nor no is asked again; then "n".
    let out = browse_with(&tracker, &["--out", od], "1\nmaybe\nn\n").await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("please answer y or n [Y/n]"), "{stdout}");
    assert!(stdout.contains("not downloading"), "{stdout}");
    assert!(!dl.path().join("one.txt").exists());

    // Asked again, then "y": downloaded.
    let out = browse_with(&tracker, &["--out", od], "1\nwhat\ny\n").await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("please answer y or n"), "{stdout}");
    assert_eq!(std::fs::read(dl.path().join("one.txt")).unwrap(), b"one");
}
