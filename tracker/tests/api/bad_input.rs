//! Every class of bad input gets a 4xx problem document and changes nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, expect_problem, file, spawn_app};

crate::backend_tests!(bad_input_is_rejected_and_changes_nothing);

async fn bad_input_is_rejected_and_changes_nothing(backend: Backend) {
    let Some(app) = spawn_app(
        backend,
        &[
            "--max-files-per-peer",
            "5",
            "--max-body-bytes",
            "4096",
            "--max-page-size",
            "50",
            "--default-page-size",
            "10",
        ],
    )
    .await
    else {
        return;
    };
    let peer = app
        .register(
            44444,
            vec![file("keep.txt", "keep"), file("also.txt", "also")],
        )
        .await;
    let before = app.snapshot().await;

    let good_hash = file("x", "x").hash;
    let entry =
        |name: Value, size: Value, hash: Value| json!({"name": name, "size": size, "hash": hash});
    let ok = |name: &str| entry(json!(name), json!(1), json!(good_hash));
    let too_many: Vec<_> = (0..6).map(|i| ok(&format!("f{i}"))).collect();
    let bad_files: Vec<(&str, Value, u16)> = vec![
        (
            "hash too short",
            entry(json!("a"), json!(1), json!("abc")),
            422,
        ),
        (
            "hash upper case",
            entry(
                json!("a"),
                json!(1),
                json!(good_hash.to_string().to_uppercase()),
            ),
            422,
        ),
        (
            "hash not hex",
            entry(json!("a"), json!(1), json!("g".repeat(64))),
            422,
        ),
        (
            "hash wrong type",
            entry(json!("a"), json!(1), json!(5)),
            422,
        ),
        (
            "empty name",
            entry(json!(""), json!(1), json!(good_hash)),
            422,
        ),
        (
            "long name",
            entry(json!("x".repeat(256)), json!(1), json!(good_hash)),
            422,
        ),
        (
            "slash",
            entry(json!("a/b"), json!(1), json!(good_hash)),
            422,
        ),
        (
            "backslash",
            entry(json!("a\\b"), json!(1), json!(good_hash)),
            422,
        ),
        (
            "NUL",
            entry(json!("a\u{0}b"), json!(1), json!(good_hash)),
            422,
        ),
        (
            "control",
            entry(json!("a\u{1b}b"), json!(1), json!(good_hash)),
            422,
        ),
        (
            "dot dot",
            entry(json!(".."), json!(1), json!(good_hash)),
            422,
        ),
        (
            "negative size",
            entry(json!("a"), json!(-1), json!(good_hash)),
            422,
        ),
        (
            "size too large",
            entry(json!("a"), json!(1u64 << 53), json!(good_hash)),
            422,
        ),
        (
            "fractional size",
            entry(json!("a"), json!(1.5), json!(good_hash)),
            422,
        ),
        (
            "size as string",
            entry(json!("a"), json!("1"), json!(good_hash)),
            422,
        ),
        (
            "unknown field",
            json!({"name": "a", "size": 1, "hash": good_hash, "path": "/etc"}),
            422,
        ),
        ("missing field", json!({"name": "a", "size": 1}), 422),
    ];

    // Registration.
    for (what, bad, status) in &bad_files {
        let r = app
            .client
            .post(app.url("/api/v1/peers"))
            .json(&json!({"port": 1, "files": [ok("fine"), bad]}))
            .send()
            .await
            .unwrap();
        expect_problem(r, *status, &format!("register: {what}")).await;
    }
    // A bad value says where it is and why, in the words of its parser.
    let r = app
        .client
        .post(app.url("/api/v1/peers"))
        .json(&json!({"port": 1, "files": [ok("fine"), entry(json!("a/b"), json!(1), json!(good_hash))]}))
        .send()
        .await
        .unwrap();
    let p = expect_problem(r, 422, "register: slash").await;
    assert_eq!(
        p.detail.as_deref(),
        Some(
            "files[1].name: file name \"a/b\" contains '/'; a name is one path component \
             without slashes, backslashes or control characters"
        )
    );
    let raw_cases: Vec<(&str, Option<&str>, String, u16)> = vec![
        (
            "malformed JSON",
            Some("application/json"),
            "{\"port\": 1,".into(),
            400,
        ),
        (
            "not an object",
            Some("application/json"),
            "[1,2]".into(),
            422,
        ),
        (
            "port wrong type",
            Some("application/json"),
            "{\"port\": \"80\"}".into(),
            422,
        ),
        (
            "port out of range",
            Some("application/json"),
            "{\"port\": 70000}".into(),
            422,
        ),
        (
            "port zero",
            Some("application/json"),
            "{\"port\": 0}".into(),
            422,
        ),
        (
            "missing port",
            Some("application/json"),
            "{\"files\": []}".into(),
            422,
        ),
        ("no content type", None, "{\"port\": 1}".into(), 415),
        (
            "text content type",
            Some("text/plain"),
            "{\"port\": 1}".into(),
            415,
        ),
        (
            "too many files",
            Some("application/json"),
            json!({"port": 1, "files": too_many}).to_string(),
            422,
        ),
        (
            "duplicate names",
            Some("application/json"),
            json!({"port": 1, "files": [ok("d"), ok("d")]}).to_string(),
            422,
        ),
        (
            "oversized body",
            Some("application/json"),
            json!({"port": 1, "files": [ok(&"y".repeat(200))], "pad": "z".repeat(5000)})
                .to_string(),
            413,
        ),
    ];
    for (what, ct, body, status) in &raw_cases {
        let mut req = app.client.post(app.url("/api/v1/peers")).body(body.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", *ct);
        }
        expect_problem(
            req.send().await.unwrap(),
            *status,
            &format!("register: {what}"),
        )
        .await;
    }

    // File-list changes by the owner.
    let files_path = format!("/api/v1/peers/{}/files", peer.peer_id);
    for (what, bad, status) in &bad_files {
        let r = app
            .authed(Method::PUT, &files_path, &peer.token)
            .json(&json!({"files": [ok("fine"), bad]}))
            .send()
            .await
            .unwrap();
        expect_problem(r, *status, &format!("put: {what}")).await;
        let r = app
            .authed(Method::PATCH, &files_path, &peer.token)
            .json(&json!({"add": [ok("fine"), bad]}))
            .send()
            .await
            .unwrap();
        expect_problem(r, *status, &format!("patch: {what}")).await;
    }
    let r = app
        .authed(Method::PUT, &files_path, &peer.token)
        .json(&json!({"files": too_many}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 422, "put: too many").await;
    // 2 existing + 4 new = 6 > 5: rejected after the fact, rolled back.
    let four: Vec<_> = (0..4).map(|i| ok(&format!("n{i}"))).collect();
    let r = app
        .authed(Method::PATCH, &files_path, &peer.token)
        .json(&json!({"add": four}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 422, "patch: over the cap").await;
    let r = app
        .authed(Method::PATCH, &files_path, &peer.token)
        .json(&json!({"add": [ok("x")], "remove": ["x"]}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 422, "patch: add and remove one name").await;
    for bad in ["", "a/b", "..", "a\u{0}"] {
        let r = app
            .authed(Method::PATCH, &files_path, &peer.token)
            .json(&json!({"remove": [bad]}))
            .send()
            .await
            .unwrap();
        expect_problem(r, 422, &format!("patch: remove {bad:?}")).await;
    }
    let r = app
        .authed(Method::PUT, &files_path, &peer.token)
        .header("content-type", "application/json")
        .body("{\"files\": [")
        .send()
        .await
        .unwrap();
    expect_problem(r, 400, "put: malformed").await;
    let r = app
        .authed(Method::PATCH, &files_path, &peer.token)
        .json(&json!({"add": "nope"}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 422, "patch: wrong type").await;
    let r = app
        .authed(Method::PUT, &files_path, &peer.token)
        .json(&json!({"files": [], "pad": "z".repeat(5000)}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 413, "put: oversized").await;

    // Unknown peers.
    for id in ["0123456789abcdef", "nothex", "../../etc"] {
        let r = app
            .authed(
                Method::POST,
                &format!("/api/v1/peers/{id}/heartbeat"),
                &peer.token,
            )
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(status == 404, "heartbeat {id}: {status}");
        expect_problem(r, 404, "heartbeat unknown").await;
    }
    let r = app
        .authed(
            Method::DELETE,
            "/api/v1/peers/0123456789abcdef",
            &peer.token,
        )
        .send()
        .await
        .unwrap();
    expect_problem(r, 404, "leave unknown").await;
    let r = app
        .authed(
            Method::PUT,
            "/api/v1/peers/0123456789abcdef/files",
            &peer.token,
        )
        .json(&json!({"files": []}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 404, "put unknown").await;
    let r = app
        .client
        .get(app.url("/api/v1/peers/0123456789abcdef"))
        .send()
        .await
        .unwrap();
    expect_problem(r, 404, "get unknown").await;

    // Bad queries.
    for (path, status) in [
        ("/api/v1/files?cursor=zzz", 400),
        ("/api/v1/files?cursor=%00", 400),
        ("/api/v1/files?limit=0", 400),
        ("/api/v1/files?limit=51", 400),
        ("/api/v1/files?limit=-1", 400),
        ("/api/v1/files?limit=ten", 400),
        ("/api/v1/files?hash=abc", 400),
        ("/api/v1/peers?cursor=zzz", 400),
        ("/api/v1/peers?limit=100000", 400),
        ("/api/v1/files/abc", 400),
        ("/api/v1/files/ABCDEF", 400),
        ("/api/v1/nothing", 404),
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        expect_problem(r, status, path).await;
    }
    let r = app
        .client
        .request(Method::PUT, app.url("/api/v1/files"))
        .send()
        .await
        .unwrap();
    expect_problem(r, 405, "wrong method").await;
    let long_q = format!("/api/v1/files?q={}", "q".repeat(300));
    expect_problem(
        app.client.get(app.url(&long_q)).send().await.unwrap(),
        400,
        "long q",
    )
    .await;

    assert_eq!(
        app.snapshot().await,
        before,
        "a rejected request changed the database"
    );
    app.stop().await.unwrap();
}
