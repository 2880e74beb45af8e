//! Tokens, the registration key, and the address a peer is recorded under.

use reqwest::{Method, StatusCode};
use sbcftp_api::RegisterRequest;
use serde_json::json;

use crate::helpers::{Backend, client_from, expect_problem, file, spawn_app};

crate::backend_tests!(
    private_means_private,
    tokens_guard_every_change,
    registration_key,
    forwarded_for
);

async fn tokens_guard_every_change(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    let a = app.register(1, vec![file("a", "a")]).await;
    let b = app.register(2, vec![file("b", "b")]).await;
    let before = app.snapshot().await;
    let id = &a.peer_id;
    let cases = [
        (Method::POST, format!("/api/v1/peers/{id}/heartbeat"), None),
        (
            Method::PUT,
            format!("/api/v1/peers/{id}/files"),
            Some(json!({"files": []})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/peers/{id}/files"),
            Some(json!({"remove": ["a"]})),
        ),
        (Method::DELETE, format!("/api/v1/peers/{id}"), None),
    ];
    for (method, path, body) in &cases {
        let with = |req: reqwest::RequestBuilder| match body {
            Some(b) => req.json(b),
            None => req,
        };
        let r = with(app.client.request(method.clone(), app.url(path)))
            .send()
            .await
            .unwrap();
        expect_problem(r, 401, &format!("{method} {path} without token")).await;
        let r = with(
            app.client
                .request(method.clone(), app.url(path))
                .header("authorization", "Basic abc"),
        )
        .send()
        .await
        .unwrap();
        expect_problem(r, 401, &format!("{method} {path} with basic auth")).await;
        let r = with(app.authed(method.clone(), path, &"0".repeat(64)))
            .send()
            .await
            .unwrap();
        expect_problem(r, 403, &format!("{method} {path} with a wrong token")).await;
        // Another peer's valid token.
        let r = with(app.authed(method.clone(), path, &b.token))
            .send()
            .await
            .unwrap();
        expect_problem(r, 403, &format!("{method} {path} with b's token")).await;
    }
    assert_eq!(app.snapshot().await, before);
    assert_eq!(app.heartbeat(&a).await, StatusCode::OK);
    app.stop().await.unwrap();
}

async fn registration_key(backend: Backend) {
    let Some(app) = spawn_app(backend, &["--registration-key", "let-me-in"]).await else {
        return;
    };
    let body = RegisterRequest {
        port: 1,
        files: vec![file("a", "a")],
    };
    let r = app
        .client
        .post(app.url("/api/v1/peers"))
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_problem(r, 401, "no key").await;
    let r = app
        .client
        .post(app.url("/api/v1/peers"))
        .bearer_auth("let-me-out")
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_problem(r, 403, "wrong key").await;
    let r = app
        .client
        .get(app.url("/api/v1/peers"))
        .bearer_auth("let-me-in")
        .send()
        .await
        .unwrap();
    let peers: serde_json::Value = r.json().await.unwrap();
    assert_eq!(peers["peers"].as_array().unwrap().len(), 0);
    let r = app
        .client
        .post(app.url("/api/v1/peers"))
        .bearer_auth("let-me-in")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    app.stop().await.unwrap();
}

/// With `--registration-key`, every list, search and look-up, and
/// `/metrics`, needs the key; probes and the OpenAPI document stay open;
/// failed checks are throttled per address.
async fn private_means_private(backend: Backend) {
    let key = "let-me-in";
    let Some(app) = spawn_app(backend, &["--registration-key", key]).await else {
        return;
    };
    let r = app
        .client
        .post(app.url("/api/v1/peers"))
        .bearer_auth(key)
        .json(&RegisterRequest {
            port: 1,
            files: vec![file("alpha", "alpha")],
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let peer: sbcftp_api::RegisterResponse = r.json().await.unwrap();
    let hash = file("alpha", "alpha").hash;
    let guarded = [
        "/api/v1/peers".to_owned(),
        "/api/v1/peers?limit=1".to_owned(),
        format!("/api/v1/peers/{}", peer.peer_id),
        format!("/api/v1/peers/{}/files", peer.peer_id),
        "/api/v1/files".to_owned(),
        "/api/v1/files?q=alp".to_owned(),
        format!("/api/v1/files?hash={hash}"),
        format!("/api/v1/files/{hash}"),
        "/metrics".to_owned(),
    ];
    for path in &guarded {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        expect_problem(r, 401, &format!("{path} without the key")).await;
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path} with the key");
        let body = r.text().await.unwrap();
        if path.contains("files") {
            assert!(body.contains(&hash.to_string()), "{path}: {body}");
        }
    }
    for path in ["/healthz", "/livez", "/api/v1/openapi.json"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path} stays open");
    }
    // The peer's own calls need its token, not the key.
    assert_eq!(app.heartbeat(&peer).await, StatusCode::OK);

    // Wrong keys from one address: after a burst, 429 before the key is
    // even compared, so the right key waits too; other addresses are not
    // affected.
    let guesser = client_from("127.0.0.11");
    let mut throttled = None;
    for i in 0..50 {
        let r = guesser
            .get(app.url("/api/v1/files"))
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(i);
            assert!(r.headers().contains_key("retry-after"));
            break;
        }
        expect_problem(r, 403, "a wrong key").await;
    }
    let after = throttled.expect("50 wrong keys were never throttled");
    assert!(after >= 10, "throttled after {after} failures");
    let r = guesser
        .get(app.url("/api/v1/files"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    expect_problem(r, 429, "the right key from a throttled address").await;
    let r = guesser
        .post(app.url("/api/v1/peers"))
        .bearer_auth(key)
        .json(&RegisterRequest {
            port: 2,
            files: vec![],
        })
        .send()
        .await
        .unwrap();
    expect_problem(r, 429, "registration from a throttled address").await;
    let r = app
        .client
        .get(app.url("/api/v1/files"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.stop().await.unwrap();
}

async fn forwarded_for(backend: Backend) {
    let Some(app) = spawn_app(backend, &["--trusted-proxies", "127.0.0.3/32,127.0.0.4"]).await
    else {
        return;
    };
    let register = |client: reqwest::Client, xff: Option<&'static str>| {
        let url = app.url("/api/v1/peers");
        async move {
            let mut req = client.post(url).json(&RegisterRequest {
                port: 7000,
                files: vec![],
            });
            if let Some(x) = xff {
                req = req.header("x-forwarded-for", x);
            }
            req.send().await.unwrap()
        }
    };
    let addr = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<sbcftp_api::RegisterResponse>().await.unwrap().addr
    };
    // Untrusted client: the header is ignored.
    assert_eq!(
        addr(register(client_from("127.0.0.2"), Some("203.0.113.9")).await).await,
        "127.0.0.2:7000"
    );
    // Trusted proxy: the right-most hop that is not a trusted proxy.
    assert_eq!(
        addr(register(client_from("127.0.0.3"), Some("198.51.100.1, 203.0.113.9")).await).await,
        "203.0.113.9:7000"
    );
    assert_eq!(
        addr(register(client_from("127.0.0.3"), Some("203.0.113.9, 127.0.0.4")).await).await,
        "203.0.113.9:7000"
    );
    assert_eq!(
        addr(register(client_from("127.0.0.3"), Some("2001:db8::1")).await).await,
        "[2001:db8::1]:7000"
    );
    assert_eq!(
        addr(register(client_from("127.0.0.3"), Some("::ffff:192.0.2.7")).await).await,
        "192.0.2.7:7000"
    );
    // A trusted proxy without the header: the proxy's own address.
    assert_eq!(
        addr(register(client_from("127.0.0.3"), None).await).await,
        "127.0.0.3:7000"
    );
    // A malformed header from a trusted proxy.
    expect_problem(
        register(client_from("127.0.0.3"), Some("not-an-ip")).await,
        400,
        "bad XFF",
    )
    .await;
    expect_problem(
        register(client_from("127.0.0.3"), Some("1.2.3.4,,5.6.7.8")).await,
        400,
        "empty hop",
    )
    .await;
    app.stop().await.unwrap();
}
