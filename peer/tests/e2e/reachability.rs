//! Reachability end to end: the real tracker checks real `serve` processes,
//! lists them `reachable` or not, and `serve` says so, once per change.

use crate::helpers::*;

/// A port on `ip` where nothing listens (bound, then released).
fn closed_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_tells_reachable_peers_from_unreachable_ones() {
    // A re-check every second, so a port that opens later is noticed.
    let tracker = Tracker::start_args("1", "3", "1", &["--reachability-recheck", "1s"]).await;
    let real = PeerProc::start(&tracker, "127.0.0.2", &[("song.mp3", b"song")], &[]).await;
    // This peer advertises a port where nothing listens (a router that
    // does not forward it, say).
    let port = closed_port("127.0.0.3");
    let hidden = PeerProc::start(
        &tracker,
        "127.0.0.3",
        &[("song.mp3", b"song")],
        &["--advertise-port", &port.to_string()],
    )
    .await;
    assert_eq!(hidden.addr, format!("127.0.0.3:{port}"));

    wait_for("both peers to be checked", || async {
        let peers = tracker.peers().await;
        peers.len() == 2 && peers.iter().all(|p| p.reachable.is_some())
    })
    .await;
    let shown = tracker.peer_at("127.0.0.2").await.unwrap();
    assert_eq!(shown.reachable, Some(true));
    let shown = tracker.peer_at("127.0.0.3").await.unwrap();
    assert_eq!(shown.reachable, Some(false));
    assert_eq!(
        shown.unreachable_reason.as_deref(),
        Some("connection refused")
    );

    // The unreachable holder is listed last.
    let song = tracker
        .client
        .content(&content_hash(b"song"))
        .await
        .unwrap();
    let order: Vec<(String, Option<bool>)> = song
        .peers
        .iter()
        .map(|p| (p.addr.clone(), p.reachable))
        .collect();
    assert_eq!(
        order,
        [
            (real.addr.clone(), Some(true)),
            (hidden.addr.clone(), Some(false))
        ]
    );

    // `serve` says it, in words that say what to do.
    let line = format!(
        "the tracker could not reach you at 127.0.0.3:{port} (connection refused): \
         open TCP port {port} in your firewall or router, or pass --listen / --advertise-port"
    );
    wait_for("the unreachable peer to say so", || async {
        hidden.log_text().contains(&line)
    })
    .await;
    wait_for("the reachable peer to say so", || async {
        real.log_text()
            .contains(&format!("the tracker can reach you at {}", real.addr))
    })
    .await;

    // `peers` shows it.
    let out = peer_cmd(&tracker, &["peers"]).await;
    let (stdout, _) = text(&out);
    assert!(stdout.contains("REACHABLE"), "{stdout}");
    assert!(stdout.contains("no (connection refused)"), "{stdout}");
    assert!(stdout.contains(" yes "), "{stdout}");

    // The port opens (another real peer listens there): the re-check finds
    // it, and the peer says so once, after having said the opposite once.
    // (Two files, so the harness tells it from the other peer on this IP.)
    let _opener = PeerProc::start(
        &tracker,
        "127.0.0.3",
        &[("a", b"a"), ("b", b"b")],
        &["--listen", &format!("127.0.0.3:{port}")],
    )
    .await;
    wait_for("the hidden peer to learn it is reachable now", || async {
        hidden
            .log_text()
            .contains(&format!("the tracker can reach you at 127.0.0.3:{port}"))
    })
    .await;
    assert_eq!(
        hidden.log_text().matches(&line).count(),
        1,
        "{}",
        hidden.log_text()
    );
}
