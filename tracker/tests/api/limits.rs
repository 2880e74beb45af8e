//! Per-address limits: quotas of peers and files, the request rate, and
//! heartbeats that no limit refuses.

use reqwest::{Method, StatusCode};
use sbcftp_api::{RegisterRequest, ReplaceFilesRequest};

use crate::helpers::{Backend, client_from, expect_problem, file, spawn_app};

crate::backend_tests!(
    peers_per_ip,
    files_per_ip,
    heartbeats_are_never_rate_limited
);

/// A 429 with `Retry-After` and a detail naming `flag`.
async fn expect_limited(r: reqwest::Response, flag: &str, what: &str) {
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let p = expect_problem(r, 429, what).await;
    let secs: u64 = retry
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .parse()
        .unwrap();
    assert!(secs >= 1, "{what}: Retry-After {secs}");
    let detail = p.detail.unwrap();
    assert!(detail.contains(flag), "{what}: {detail}");
}

async fn peers_per_ip(backend: Backend) {
    let Some(app) = spawn_app(backend, &["--max-peers-per-ip", "3"]).await else {
        return;
    };
    let nat = client_from("127.0.0.2");
    let mut peers = Vec::new();
    for i in 0..3 {
        peers.push(
            app.register_with(&nat, 7000 + i, vec![file("a", "a")])
                .await,
        );
    }
    let body = RegisterRequest {
        port: 7100,
        files: vec![file("b", "b")],
    };
    let r = nat
        .post(app.url("/api/v1/peers"))
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_limited(r, "--max-peers-per-ip", "fourth peer of one address").await;

    // The peers already there keep working; other addresses are not affected.
    for p in &peers {
        assert_eq!(app.heartbeat(p).await, StatusCode::OK);
    }
    let r = app
        .authed(
            Method::PUT,
            &format!("/api/v1/peers/{}/files", peers[0].peer_id),
            &peers[0].token,
        )
        .json(&ReplaceFilesRequest {
            files: vec![file("c", "c")],
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    app.register_with(&client_from("127.0.0.3"), 7000, vec![])
        .await;

    // One leaves: there is room again.
    let r = app
        .authed(
            Method::DELETE,
            &format!("/api/v1/peers/{}", peers[2].peer_id),
            &peers[2].token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    app.register_with(&nat, 7100, vec![file("b", "b")]).await;
    app.stop().await.unwrap();
}

async fn files_per_ip(backend: Backend) {
    let Some(app) = spawn_app(backend, &["--max-files-per-ip", "5"]).await else {
        return;
    };
    let nat = client_from("127.0.0.2");
    let three = |p: &str| {
        (0..3)
            .map(|i| file(&format!("{p}{i}"), &format!("{p}{i}")))
            .collect()
    };
    let a = app.register_with(&nat, 7000, three("a")).await;
    let r = nat
        .post(app.url("/api/v1/peers"))
        .json(&RegisterRequest {
            port: 7001,
            files: three("b"),
        })
        .send()
        .await
        .unwrap();
    expect_limited(r, "--max-files-per-ip", "6 files from one address").await;
    let b = app
        .register_with(&nat, 7001, vec![file("b0", "b0"), file("b1", "b1")])
        .await;

    let patch = |peer: &sbcftp_api::RegisterResponse, add: Vec<sbcftp_api::FileEntry>| {
        app.authed(
            Method::PATCH,
            &format!("/api/v1/peers/{}/files", peer.peer_id),
            &peer.token,
        )
        .json(&serde_json::json!({ "add": add, "remove": [] }))
    };
    let r = patch(&a, vec![file("a9", "a9")]).send().await.unwrap();
    expect_limited(r, "--max-files-per-ip", "patch past the address quota").await;
    // Overwriting a name by patch adds no entry: allowed at the quota.
    let r = patch(&a, vec![file("a0", "new")]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    // Shrinking one peer makes room for the other.
    let r = app
        .authed(
            Method::PUT,
            &format!("/api/v1/peers/{}/files", a.peer_id),
            &a.token,
        )
        .json(&ReplaceFilesRequest {
            files: vec![file("a0", "a0")],
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = patch(&b, vec![file("b2", "b2"), file("b3", "b3")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    // The quota is per address: another one has its own.
    app.register_with(&client_from("127.0.0.3"), 7000, three("c"))
        .await;
    app.stop().await.unwrap();
}

async fn heartbeats_are_never_rate_limited(backend: Backend) {
    let Some(app) = spawn_app(
        backend,
        &[
            "--requests-per-ip",
            "1",
            "--requests-burst",
            "1",
            "--heartbeat-interval",
            "1s",
        ],
    )
    .await
    else {
        return;
    };
    let nat = client_from("127.0.0.2");
    let peer = app.register_with(&nat, 7000, vec![]).await;

    // Other requests of the address are limited: the first one over gets 429.
    let mut limited = None;
    for _ in 0..1000 {
        let r = nat.get(app.url("/api/v1/peers")).send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = limited.expect("1000 lists at 1 per second were never limited");
    expect_limited(r, "--requests-per-ip", "list over the rate").await;

    // Heartbeats of the same address, as fast as they go (far more than
    // 10 times the 1 s interval): never 429.
    let path = format!("/api/v1/peers/{}/heartbeat", peer.peer_id);
    for i in 0..200 {
        let r = nat
            .post(app.url(&path))
            .bearer_auth(&peer.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "heartbeat {i}");
    }
    // Probes too.
    for _ in 0..20 {
        let r = nat.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    app.stop().await.unwrap();
}
