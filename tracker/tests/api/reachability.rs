//! The reachability check on every backend: the tracker connects to a
//! registering peer's advertised port, records `reachable`,
//! `reachable_checked_at` and why not, lists unreachable holders last, tells
//! the peer in heartbeat answers, re-checks, and can be turned off.
//!
//! The "peer" here is a socket on 127.0.0.x that answers one request in the
//! peer protocol the way a real peer's server does for a hash it does not
//! share (NOT_FOUND), built from the same `sbcftp_api::wire` code; the real
//! peer is checked end to end in `peer/tests/e2e/reachability.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sbcftp_api::wire::{REQUEST_LEN, Status, encode_error};
use sbcftp_api::{Content, Peer, PeerList, RegisterResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, TestApp, client_from, eventually, file, spawn_app, spawn_on};

crate::backend_tests!(
    reachable_and_unreachable_peers_are_told_apart_and_ordered,
    a_port_opened_later_is_found_by_the_recheck,
    the_check_can_be_turned_off,
    another_replicas_result_reaches_the_heartbeat,
);

/// Listens on `ip:port` (0: any) and answers every request frame with
/// NOT_FOUND, as a peer does for a hash it does not share. Counts the
/// connections it accepted.
async fn answering_peer(ip: &str, port: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut frame = [0u8; REQUEST_LEN];
                while s.read_exact(&mut frame).await.is_ok() {
                    let answer =
                        encode_error(Status::NotFound, "this peer does not share that hash");
                    if s.write_all(&answer).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, accepted)
}

/// A port on `ip` where nothing listens (bound, then released).
fn closed_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn peer(app: &TestApp, reg: &RegisterResponse) -> Peer {
    app.get_as(&format!("/api/v1/peers/{}", reg.peer_id)).await
}

/// Waits until the peer's reachability is recorded, and returns the peer.
async fn checked(app: &TestApp, reg: &RegisterResponse) -> Peer {
    eventually(30, "the reachability check", || async {
        peer(app, reg).await.reachable.is_some()
    })
    .await;
    peer(app, reg).await
}

async fn reachable_and_unreachable_peers_are_told_apart_and_ordered(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    let song = file("song.mp3", "song bytes");
    let (port, _) = answering_peer("127.0.0.2", 0).await;
    let (from2, from3) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    // Reachable and unreachable holders of one content, a pair at a time,
    // until an unreachable one's id sorts before a reachable one's (so id
    // order alone would list it first).
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    while !bad.iter().any(|b: &RegisterResponse| {
        good.iter()
            .any(|g: &RegisterResponse| b.peer_id < g.peer_id)
    }) {
        assert!(good.len() < 10, "ids never interleaved");
        good.push(app.register_with(&from2, port, vec![song.clone()]).await);
        let closed = closed_port("127.0.0.3");
        bad.push(app.register_with(&from3, closed, vec![song.clone()]).await);
    }
    for reg in &good {
        let shown = checked(&app, reg).await;
        assert_eq!(shown.reachable, Some(true));
        assert!(shown.reachable_checked_at.is_some_and(|t| t.ends_with('Z')));
        assert_eq!(shown.unreachable_reason, None);
        assert_eq!(app.heartbeat_answer(reg).await.reachable, Some(true));
    }
    for reg in &bad {
        let shown = checked(&app, reg).await;
        assert_eq!(shown.reachable, Some(false));
        assert!(shown.reachable_checked_at.is_some());
        assert_eq!(
            shown.unreachable_reason.as_deref(),
            Some("connection refused")
        );
        let hb = app.heartbeat_answer(reg).await;
        assert_eq!(hb.reachable, Some(false));
        assert_eq!(hb.unreachable_reason.as_deref(), Some("connection refused"));
    }

    // Holders: every reachable one first, whatever the ids say.
    let content: Content = app.get_as(&format!("/api/v1/files/{}", song.hash)).await;
    let flags: Vec<Option<bool>> = content.peers.iter().map(|p| p.reachable).collect();
    let mut want = vec![Some(true); good.len()];
    want.extend(vec![Some(false); bad.len()]);
    assert_eq!(flags, want);
    let first: Vec<String> = content.peers[..good.len()]
        .iter()
        .map(|p| p.peer_id.to_string())
        .collect();
    assert!(
        good.iter().all(|g| first.contains(&g.peer_id.to_string())),
        "{first:?}"
    );
    let (_, page) = app.get_json("/api/v1/files").await;
    assert_eq!(page["files"][0]["peers"][0]["reachable"], true);

    // The list shows it too.
    let list: PeerList = app.get_as("/api/v1/peers").await;
    let count = |v: Option<bool>| list.peers.iter().filter(|p| p.reachable == v).count();
    assert_eq!(
        (count(Some(true)), count(Some(false))),
        (good.len(), bad.len())
    );
}

async fn a_port_opened_later_is_found_by_the_recheck(backend: Backend) {
    let Some(app) = spawn_app(backend, &["--reachability-recheck", "1s"]).await else {
        return;
    };
    let port = closed_port("127.0.0.4");
    let reg = app
        .register_with(&client_from("127.0.0.4"), port, vec![file("a", "a")])
        .await;
    assert_eq!(checked(&app, &reg).await.reachable, Some(false));
    // The peer opens its port: a re-check finds it, and its heartbeat says so.
    let (_, accepted) = answering_peer("127.0.0.4", port).await;
    eventually(30, "the re-check to find the peer reachable", || async {
        app.heartbeat_answer(&reg).await.reachable == Some(true)
    })
    .await;
    assert!(accepted.load(Ordering::SeqCst) >= 1);
    let shown = peer(&app, &reg).await;
    assert_eq!(shown.reachable, Some(true));
    assert_eq!(shown.unreachable_reason, None);
}

async fn the_check_can_be_turned_off(backend: Backend) {
    let Some(app) = spawn_app(backend, &["--reachability-check", "false"]).await else {
        return;
    };
    let (port, accepted) = answering_peer("127.0.0.5", 0).await;
    let reg = app
        .register_with(&client_from("127.0.0.5"), port, vec![file("a", "a")])
        .await;
    let hb = app.heartbeat_answer(&reg).await;
    assert_eq!((hb.reachable, hb.unreachable_reason), (None, None));
    let shown = peer(&app, &reg).await;
    assert_eq!(shown.reachable, None);
    assert_eq!(shown.reachable_checked_at, None);
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    let (_, body) = app
        .get_json(&format!("/api/v1/files/{}", file("a", "a").hash))
        .await;
    assert_eq!(body["peers"][0]["reachable"], serde_json::Value::Null);
}

/// Two replicas on one database: a peer registered (and checked) through
/// one sees the result in the heartbeat answers of the other.
async fn another_replicas_result_reaches_the_heartbeat(backend: Backend) {
    let Some(a) = spawn_app(backend, &["--reachability-timeout", "60s"]).await else {
        return;
    };
    let b = spawn_on(Arc::clone(&a.db), &[]).await;
    // A "peer" that reads a's request and holds it until told, then closes
    // without an answer: b's first heartbeat surely loads the peer before
    // any result.
    let held = tokio::net::TcpListener::bind("127.0.0.6:0").await.unwrap();
    let port = held.local_addr().unwrap().port();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if let Ok((mut conn, _)) = held.accept().await {
            let mut frame = [0u8; REQUEST_LEN];
            let _ = conn.read_exact(&mut frame).await;
            let _ = released.await;
            drop(conn);
        }
    });
    let reg = a
        .register_with(&client_from("127.0.0.6"), port, vec![])
        .await;
    assert_eq!(b.heartbeat_answer(&reg).await.reachable, None);
    release.send(()).unwrap();
    assert_eq!(checked(&a, &reg).await.reachable, Some(false));
    eventually(30, "replica b to learn the result", || async {
        b.heartbeat_answer(&reg).await.reachable == Some(false)
    })
    .await;
    assert_eq!(
        b.heartbeat_answer(&reg).await.unreachable_reason.as_deref(),
        Some("the connection was closed without an answer")
    );
}
