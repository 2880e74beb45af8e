//! End-to-end tests: a real tracker, real `sbcftp-peer serve` processes on
//! 127.0.0.2, 127.0.0.3, … with real share folders, and the real CLI.
#![allow(clippy::unwrap_used)]

mod cli;
mod errors;
mod helpers;
mod hostile;
mod live;
mod prefix;
mod reachability;
mod swarm;

use std::time::Duration;

use helpers::*;

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_download_and_no_clobber() {
    let tracker = Tracker::start().await;
    let big = bytes(5 * MIB + 123, 1);
    let small = b"hello, world\n".to_vec();
    let a = PeerProc::start(
        &tracker,
        "127.0.0.2",
        &[("big.bin", &big), ("hello.txt", &small), ("empty", b"")],
        &["--rescan-interval", "1"],
    )
    .await;
    // Things that must not be shared: a subfolder, a symlink leading outside.
    std::fs::create_dir(a.share.join("sub")).unwrap();
    std::fs::write(a.share.join("sub").join("inner.txt"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", a.share.join("outside")).unwrap();
    // A second peer that shares the same big file under another name.
    let _b = PeerProc::start(&tracker, "127.0.0.3", &[("copy of big.bin", &big)], &[]).await;

    // A file dropped into the share folder appears after a rescan; the
    // skipped entries never do.
    std::fs::write(a.share.join("late.txt"), b"late").unwrap();
    wait_for("late.txt to be listed", || async {
        tracker
            .contents()
            .await
            .iter()
            .any(|c| c.names.iter().any(|n| n == "late.txt"))
    })
    .await;

    let out = peer_cmd(&tracker, &["files", "--json"]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let list: sbcftp_api::ContentList = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<String> = list
        .files
        .iter()
        .flat_map(|c| c.names.iter().map(|n| n.to_string()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "big.bin",
            "copy of big.bin",
            "empty",
            "hello.txt",
            "late.txt"
        ]
    );
    let big_row = list
        .files
        .iter()
        .find(|c| c.hash.to_string() == hash_hex(&big))
        .unwrap();
    assert_eq!(big_row.size, big.len() as u64);
    assert_eq!(big_row.peers.len(), 2);
    let log = a.log_text();
    assert!(log.contains("\"sub\": subfolders are not shared"), "{log}");
    assert!(log.contains("\"outside\": symlink leads outside"), "{log}");

    let out = peer_cmd(&tracker, &["files", "big"]).await;
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.starts_with("NAME"), "{stdout}");
    assert!(
        stdout.contains("5.0 MiB") && stdout.contains(&hash_hex(&big)[..12]),
        "{stdout}"
    );
    assert!(!stdout.contains("hello.txt"), "{stdout}");

    let out = peer_cmd(&tracker, &["peers", "--json"]).await;
    let peers: sbcftp_api::PeerList = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(peers.peers.len(), 2);
    let out = peer_cmd(&tracker, &["peers"]).await;
    assert!(text(&out).0.contains(&a.addr), "{:?}", text(&out));

    // Download by name, byte for byte.
    let dl = tempfile::tempdir().unwrap();
    let out_dir = dl.path().join("Downloads");
    let od = out_dir.to_str().unwrap();
    let out = peer_cmd(&tracker, &["get", "big.bin", "--out", od]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(std::fs::read(out_dir.join("big.bin")).unwrap(), big);
    // Nothing else left behind (no part file).
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 1);

    // Again: same content already there, success, nothing rewritten.
    let out = peer_cmd(&tracker, &["get", "big.bin", "--out", od]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("already there"), "{:?}", text(&out));

    // By hash, and the empty file.
    let out = peer_cmd(&tracker, &["get", &hash_hex(&small), "--out", od]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(std::fs::read(out_dir.join("hello.txt")).unwrap(), small);
    let out = peer_cmd(&tracker, &["get", "empty", "--out", od]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(std::fs::read(out_dir.join("empty")).unwrap(), b"");

    // A different file under the name is never overwritten silently.
    std::fs::write(out_dir.join("late.txt"), b"mine").unwrap();
    let out = peer_cmd(&tracker, &["get", "late.txt", "--out", od]).await;
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("already exists with different content"),
        "{:?}",
        text(&out)
    );
    assert_eq!(std::fs::read(out_dir.join("late.txt")).unwrap(), b"mine");
    let out = peer_cmd(&tracker, &["get", "late.txt", "--out", od, "--force"]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(std::fs::read(out_dir.join("late.txt")).unwrap(), b"late");

    // Unknown names are a clear error.
    let out = peer_cmd(&tracker, &["get", "nothing-like-this", "--out", od]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("no content is named"),
        "{:?}",
        text(&out)
    );

    // The servers logged the transfers, one READ per block: who, what, how much.
    let log = a.log_text() + &_b.log_text();
    assert!(
        log.contains("bytes 0..1048576 (1.0 MiB) to 127.0.0.1:"),
        "{log}"
    );
    let last = 5 * MIB as u64;
    assert!(
        log.contains(&format!(
            "bytes {last}..{} (123 B) to 127.0.0.1:",
            big.len()
        )),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_name_lists_the_candidates() {
    let tracker = Tracker::start().await;
    let _a = PeerProc::start(&tracker, "127.0.0.2", &[("same.txt", b"one")], &[]).await;
    let _b = PeerProc::start(&tracker, "127.0.0.3", &[("same.txt", b"two")], &[]).await;
    let dl = tempfile::tempdir().unwrap();
    let out = peer_cmd(
        &tracker,
        &["get", "same.txt", "--out", dl.path().to_str().unwrap()],
    )
    .await;
    assert!(!out.status.success());
    let (_, err) = text(&out);
    assert!(
        err.contains("2 different contents are named same.txt"),
        "{err}"
    );
    assert!(
        err.contains(&hash_hex(b"one")) && err.contains(&hash_hex(b"two")),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dl.path()).unwrap().count(), 0);
}

/// The only source is killed mid-transfer: the command says so and keeps the
/// verified part; run again when another peer has it, it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_the_source_is_killed() {
    let tracker = Tracker::start().await;
    let data = bytes(8 * MIB + 7, 2);
    let mut a = PeerProc::start(
        &tracker,
        "127.0.0.2",
        &[("movie.bin", &data)],
        &["--max-upload-rate", "1048576"],
    )
    .await;
    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap().to_owned();
    let part = dl.path().join(sbcftp_peer::transfer::part::part_name(
        "movie.bin",
        &content_hash(&data),
    ));

    let get = peer_spawn(&tracker, &["get", "movie.bin", "--out", &od]);
    wait_for("a verified block in the part file", || async {
        verified_blocks_now(&part, &data) >= 2
    })
    .await;
    a.signal("KILL");
    a.wait_exit().await;
    let out = get.wait_with_output().await.unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("no source left") && err.contains("run the same command again to resume"),
        "{err}"
    );
    // Only whole verified blocks are kept.
    let kept = verified_in_part(&part, &data);
    assert!(
        kept >= MIB as u64 && kept < data.len() as u64,
        "kept {kept}"
    );
    assert!(!dl.path().join("movie.bin").exists());

    let _c = PeerProc::start(&tracker, "127.0.0.4", &[("movie.bin", &data)], &[]).await;
    // The killed peer may still be listed until its TTL; the download skips it.
    let out = peer_cmd(&tracker, &["get", "movie.bin", "--out", &od]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("resuming:"), "{stderr}");
    assert!(stdout.contains("resumed from an earlier run"), "{stdout}");
    assert_eq!(std::fs::read(dl.path().join("movie.bin")).unwrap(), data);
    assert!(!part.exists());
}

/// A source that freezes (SIGSTOP: no FIN, no RST) mid-transfer is detected by
/// the stall timeout and the same run continues from another peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_source_fails_over_in_the_same_run() {
    let tracker = Tracker::start().await;
    let data = bytes(6 * MIB + 3, 3);
    let a = PeerProc::start(
        &tracker,
        "127.0.0.2",
        &[("data.bin", &data)],
        &["--max-upload-rate", "1048576"],
    )
    .await;
    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap().to_owned();
    let part = dl.path().join(sbcftp_peer::transfer::part::part_name(
        "data.bin",
        &content_hash(&data),
    ));

    let get = peer_spawn(
        &tracker,
        &["get", "data.bin", "--out", &od, "--stall-timeout", "2s"],
    );
    wait_for("a verified block in the part file", || async {
        verified_blocks_now(&part, &data) >= 2
    })
    .await;
    // Another source appears, then the first one freezes.
    let _b = PeerProc::start(&tracker, "127.0.0.3", &[("data.bin", &data)], &[]).await;
    a.signal("STOP");
    let out = get.wait_with_output().await.unwrap();
    a.signal("CONT");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("source {}", a.addr)) && stderr.contains("stalled"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(dl.path().join("data.bin")).unwrap(), data);
}

/// A source whose file rotted on disk (same size and mtime, one byte flipped)
/// is caught at the bad block, before it is written, and named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_source_is_detected_and_reported() {
    let tracker = Tracker::start().await;
    let data = bytes(4 * MIB + 11, 4);
    let a = PeerProc::start(&tracker, "127.0.0.2", &[("rot.bin", &data)], &[]).await;
    // Flip one byte in block 2 behind the peer's back, keeping size and mtime.
    let path = a.share.join("rot.bin");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let at = 2 * MIB as u64 + 12345;
        f.write_all_at(&[data[at as usize] ^ 0x40], at).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap().to_owned();
    let part = dl.path().join(sbcftp_peer::transfer::part::part_name(
        "rot.bin",
        &content_hash(&data),
    ));
    let out = peer_cmd(&tracker, &["get", "rot.bin", "--out", &od]).await;
    let (_, err) = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("source {} ({})", a.addr, a.peer_id)),
        "{err}"
    );
    assert!(err.contains("corrupt data: block 2"), "{err}");
    // Good blocks are kept; the bad block never was written.
    let (good, bad) = part_blocks(&part, &data);
    assert!(bad.is_empty() && !good[2], "{good:?} {bad:?}");
    assert!(good[0] && good[1], "{good:?}");
    assert!(!dl.path().join("rot.bin").exists());

    // A good source appears: the download resumes at block 2.
    let _b = PeerProc::start(&tracker, "127.0.0.3", &[("rot.bin", &data)], &[]).await;
    let out = peer_cmd(&tracker, &["get", &hash_hex(&data), "--out", &od]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(std::fs::read(dl.path().join("rot.bin")).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_exit_leaves_the_tracker_at_once() {
    // A long TTL: only an explicit leave can make the peer disappear quickly.
    let tracker = Tracker::start_with("200", "600", "1").await;
    let mut a = PeerProc::start(&tracker, "127.0.0.2", &[("f", b"f")], &[]).await;
    let _b = PeerProc::start(&tracker, "127.0.0.3", &[("g", b"g")], &[]).await;
    a.signal("TERM");
    let status = a.wait_exit().await;
    assert!(status.success(), "{status}\n{}", a.log_text());
    assert!(
        tracker.peer_at("127.0.0.2").await.is_none(),
        "{}",
        a.log_text()
    );
    assert!(tracker.peer_at("127.0.0.3").await.is_some());
    assert!(a.log_text().contains("left the tracker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_peer_disappears_after_the_ttl() {
    let tracker = Tracker::start().await;
    let mut a = PeerProc::start(&tracker, "127.0.0.2", &[("f", b"f")], &[]).await;
    let _b = PeerProc::start(&tracker, "127.0.0.3", &[("g", b"g")], &[]).await;
    a.signal("KILL");
    a.wait_exit().await;
    wait_for("the killed peer to be swept", || async {
        tracker.peer_at("127.0.0.2").await.is_none()
    })
    .await;
    // The live one keeps heartbeating through several TTLs.
    assert!(tracker.peer_at("127.0.0.3").await.is_some());
    assert!(
        tracker
            .contents()
            .await
            .iter()
            .all(|c| c.hash.to_string() != hash_hex(b"f"))
    );
}

/// The tracker restarts with an empty database: the peer notices (connection
/// errors, then 404) and registers again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_registers_again_after_a_tracker_restart() {
    // The port is bound again after the stop. A loopback address of its own
    // and a port below the kernel's ephemeral range (32768 and up) keep it
    // free in between: on 127.0.0.1 an outgoing connection, and with port 0
    // another test process's `bind(…:0)`, could take it (seen as AddrInUse).
    let port = (0..200u16)
        .map(|i| 20_000 + (u16::try_from(std::process::id() % 10_000).unwrap() + i * 37) % 10_000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.77", *p)).is_ok())
        .expect("a free port on 127.0.0.77");
    let bind = format!("127.0.0.77:{port}");
    let tracker = Tracker::start_at(&bind, "1", "3", "1", &[]).await;
    let url = tracker.url.clone();
    let a = PeerProc::start(&tracker, "127.0.0.2", &[("f", b"f")], &[]).await;
    tracker.stop().await;
    // A new tracker, new database, same address.
    let addr = url.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("t2.db").display());
    let config = <sbcftp_tracker::Config as clap::Parser>::try_parse_from([
        "sbcftp-tracker",
        "--database-url",
        &db,
        "--heartbeat-interval",
        "1",
        "--peer-ttl",
        "3",
        "--sweep-interval",
        "1",
    ])
    .unwrap();
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(sbcftp_tracker::run(listener, config, async move {
        let _ = rx.await;
    }));
    let client = sbcftp_peer::tracker_client::TrackerClient::new(&url, None, None).unwrap();
    wait_for("the peer to register with the new tracker", || async {
        client
            .all_peers(10)
            .await
            .map(|l| {
                l.peers
                    .iter()
                    .any(|p| p.addr == a.addr && p.file_count == 1)
            })
            .unwrap_or(false)
    })
    .await;
    assert!(
        a.log_text().contains("registering again"),
        "{}",
        a.log_text()
    );
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
}

/// SIGTERM while a transfer is running: the peer leaves the tracker, gives
/// the transfer its grace period, aborts it cleanly and exits 0; the
/// downloader keeps its verified part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_transfer_leaves_and_aborts_cleanly() {
    let tracker = Tracker::start_with("200", "600", "1").await;
    let data = bytes(6 * MIB + 1, 5);
    let mut a = PeerProc::start(
        &tracker,
        "127.0.0.2",
        &[("x.bin", &data)],
        &["--max-upload-rate", "1048576", "--shutdown-grace", "1s"],
    )
    .await;
    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap().to_owned();
    let part = dl.path().join(sbcftp_peer::transfer::part::part_name(
        "x.bin",
        &content_hash(&data),
    ));
    let get = peer_spawn(&tracker, &["get", "x.bin", "--out", &od]);
    wait_for("a verified block in the part file", || async {
        verified_blocks_now(&part, &data) >= 2
    })
    .await;
    a.signal("TERM");
    let status = a.wait_exit().await;
    assert!(status.success(), "{status}\n{}", a.log_text());
    assert!(tracker.peer_at("127.0.0.2").await.is_none());
    let log = a.log_text();
    assert!(log.contains("left the tracker"), "{log}");
    // The block being sent when the shutdown began is finished (or, past the
    // grace period, aborted); no further request is read.
    assert!(
        log.contains("waiting up to 1s for 1 connection(s) to finish"),
        "{log}"
    );

    let out = get.wait_with_output().await.unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("no source left"), "{stderr}");
    let kept = verified_in_part(&part, &data);
    assert!(
        kept >= MIB as u64 && kept < data.len() as u64,
        "kept {kept}"
    );
}
