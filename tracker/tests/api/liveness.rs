//! Heartbeats, the sweep, and replicas sharing one database.

use std::time::Duration;

use reqwest::StatusCode;
use sbcftp_api::PeerId;

use crate::helpers::{Backend, TestApp, eventually, file, spawn_app, spawn_on};

crate::backend_tests!(
    sweep_removes_silent_peers,
    two_replicas_one_view,
    heartbeats_are_flushed_at_shutdown
);

async fn peer_status(app: &TestApp, id: &PeerId) -> StatusCode {
    app.client
        .get(app.url(&format!("/api/v1/peers/{id}")))
        .send()
        .await
        .unwrap()
        .status()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .trim()
        .parse()
        .unwrap()
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn sweep_removes_silent_peers(backend: Backend) {
    let Some(app) = spawn_app(backend, &["--peer-ttl", "3", "--sweep-interval", "1"]).await else {
        return;
    };
    let alive = app.register(1, vec![file("alive", "alive")]).await;
    let silent = app.register(2, vec![file("silent", "silent")]).await;
    assert_eq!(
        alive.heartbeat_interval_secs, 1,
        "capped at a third of the TTL"
    );
    assert_eq!(alive.ttl_secs, 3);

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beating = {
        let (client, url, token, done) = (
            app.client.clone(),
            app.url(&format!("/api/v1/peers/{}/heartbeat", alive.peer_id)),
            alive.token.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client.post(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK, "the beating peer was swept");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    eventually(30, "the silent peer is swept", || async {
        peer_status(&app, &silent.peer_id).await == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(
        app.heartbeat(&silent).await,
        StatusCode::NOT_FOUND,
        "heartbeat after the sweep"
    );
    let r = app
        .client
        .get(app.url(&format!("/api/v1/files/{}", file("silent", "silent").hash)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "its files went with it");
    assert_eq!(peer_status(&app, &alive.peer_id).await, StatusCode::OK);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    beating.await.unwrap();
    // Listings hide it as soon as its TTL passes; the sweep then deletes the row.
    eventually(30, "the sweep deletes the row", || async {
        metric(&metrics(&app).await, "sbcftp_peers_swept_total") == 1
    })
    .await;
    assert_eq!(metric(&metrics(&app).await, "sbcftp_sweep_errors_total"), 0);
    app.stop().await.unwrap();
}

async fn two_replicas_one_view(backend: Backend) {
    let args = ["--peer-ttl", "2", "--sweep-interval", "1"];
    let Some(a) = spawn_app(backend, &args).await else {
        return;
    };
    let b = spawn_on(a.db.clone(), &args).await;
    let mut peers = Vec::new();
    for i in 0..6 {
        peers.push(
            a.register(
                100 + i,
                vec![file(&format!("f{i}"), &format!("shared {}", i % 2))],
            )
            .await,
        );
    }
    // Registered via A, visible and usable via B.
    for p in &peers {
        assert_eq!(peer_status(&b, &p.peer_id).await, StatusCode::OK);
        assert_eq!(b.heartbeat(p).await, StatusCode::OK);
    }
    let (_, files) = b.get_json("/api/v1/files").await;
    assert_eq!(files["files"].as_array().unwrap().len(), 2);
    // Leave via B; A no longer shows it.
    let gone = peers.pop().unwrap();
    let r = b
        .authed(
            reqwest::Method::DELETE,
            &format!("/api/v1/peers/{}", gone.peer_id),
            &gone.token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(peer_status(&a, &gone.peer_id).await, StatusCode::NOT_FOUND);

    // Silence: both replicas sweep; every peer is removed exactly once.
    for app in [&a, &b] {
        eventually(30, "all peers swept", || async {
            let (_, list) = app.get_json("/api/v1/peers").await;
            list["peers"].as_array().is_some_and(|p| p.is_empty())
        })
        .await;
    }
    eventually(30, "the sweeps deleted every row", || async {
        let (ma, mb) = (metrics(&a).await, metrics(&b).await);
        metric(&ma, "sbcftp_peers_swept_total") + metric(&mb, "sbcftp_peers_swept_total") == 5
    })
    .await;
    // Let both replicas run a few more sweep rounds on the empty table.
    let sweeps = |m: &str| metric(m, "sbcftp_sweeps_total");
    let start = sweeps(&metrics(&a).await) + sweeps(&metrics(&b).await);
    eventually(30, "more sweeps ran", || async {
        sweeps(&metrics(&a).await) + sweeps(&metrics(&b).await) >= start + 3
    })
    .await;
    for app in [&a, &b] {
        let m = metrics(app).await;
        assert_eq!(metric(&m, "sbcftp_sweep_errors_total"), 0);
        assert_eq!(metric(&m, "sbcftp_heartbeat_flush_errors_total"), 0);
    }
    let (ma, mb) = (metrics(&a).await, metrics(&b).await);
    assert_eq!(
        metric(&ma, "sbcftp_peers_swept_total") + metric(&mb, "sbcftp_peers_swept_total"),
        5,
        "a peer was removed twice"
    );
    // A replica that did not sweep a peer may accept one more heartbeat
    // from its cache; the flush then finds the row gone and the next one is 404.
    for p in &peers {
        for app in [&a, &b] {
            eventually(30, "heartbeat of a swept peer is 404", || async {
                app.heartbeat(p).await == StatusCode::NOT_FOUND
            })
            .await;
        }
    }
    let (_, list) = a.get_json("/api/v1/peers").await;
    assert_eq!(
        list["peers"].as_array().unwrap().len(),
        0,
        "a late heartbeat revived a swept peer"
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

async fn heartbeats_are_flushed_at_shutdown(backend: Backend) {
    // The periodic flush runs every second; a heartbeat just before stopping
    // is written by the shutdown flush, which a fresh tracker then reads.
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    let peer = app.register(1, vec![]).await;
    let (_, before) = app
        .get_json(&format!("/api/v1/peers/{}", peer.peer_id))
        .await;
    // Not synchronisation: only makes the heartbeat's millisecond differ
    // from the registration's.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(app.heartbeat(&peer).await, StatusCode::OK);
    let db = app.db.clone();
    app.stop().await.unwrap();
    let again = spawn_on(db, &[]).await;
    let (s, after) = again
        .get_json(&format!("/api/v1/peers/{}", peer.peer_id))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        after["last_seen"].as_str().unwrap() > before["last_seen"].as_str().unwrap(),
        "heartbeat lost at shutdown: {before} vs {after}"
    );
    again.stop().await.unwrap();
}
