//! Health, metrics, the OpenAPI document, database outages and shutdown.

use reqwest::StatusCode;

use crate::helpers::{Backend, TestDb, eventually, expect_problem, file, spawn_app, spawn_on};

crate::backend_tests!(health_and_metrics, graceful_shutdown);

/// The tests for one backend only, and those without a database.
pub fn other_trials() -> Vec<libtest_mimic::Trial> {
    use crate::helpers::{backend_trial, trial};
    vec![
        trial("operations::openapi_is_in_sync", openapi_is_in_sync),
        trial(
            "operations::random_methods_add_no_series",
            random_methods_add_no_series,
        ),
        backend_trial(
            "operations",
            "outage_and_recovery",
            Backend::Postgres,
            |_| postgres_outage_and_recovery(),
        ),
        backend_trial(
            "operations",
            "connections_killed_recovers",
            Backend::MySql,
            |_| mysql_connections_killed_recovers(),
        ),
        #[cfg(unix)]
        trial(
            "operations::binary_stops_on_sigterm",
            binary_stops_on_sigterm,
        ),
    ]
}

async fn health_and_metrics(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    let (s, body) = app.get_json("/healthz").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let peer = app.register(1, vec![file("a", "a")]).await;
    assert_eq!(app.heartbeat(&peer).await, StatusCode::OK);
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("sbcftp_heartbeats_total 1\n"), "{text}");
    assert!(
        text.contains(
            r#"sbcftp_http_requests_total{method="POST",route="/api/v1/peers",status="201"}"#
        ),
        "{text}"
    );
    assert!(text.contains("sbcftp_online_peers "), "{text}");
    app.stop().await.unwrap();
}

async fn graceful_shutdown(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    app.register(1, vec![]).await;
    let addr = app.addr;
    app.stop().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}

/// 1,000 requests with random methods, on known and unknown paths, add at
/// most the `other` method to the request counter's labels.
async fn random_methods_add_no_series() {
    let Some(app) = spawn_app(Backend::Sqlite, &["--requests-per-ip", "0"]).await else {
        return;
    };
    let paths = ["/healthz", "/api/v1/peers", "/api/v1/contents", "/nowhere"];
    for i in 0..1000u32 {
        let method = format!("M{:08x}", rand::random::<u32>());
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let path = paths[i as usize % paths.len()];
        let r = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
    }
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sbcftp_http_requests_total{"))
        .collect();
    let fixed = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
    ];
    for line in &series {
        assert!(
            fixed
                .iter()
                .any(|m| line.contains(&format!("method=\"{m}\""))),
            "{line}"
        );
        assert!(!line.contains("/nowhere"), "{line}");
    }
    // Every test in this process shares the recorder: the bound is the
    // routes × methods × statuses they use, far below 1,000.
    assert!(series.len() < 200, "{} series", series.len());
    assert!(series.iter().any(|l| l.contains("method=\"other\"")));
    app.stop().await.unwrap();
}

async fn openapi_is_in_sync() {
    let generated = sbcftp_tracker::openapi::openapi_json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    if std::env::var("SBCFTP_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json differs from the code; run `SBCFTP_BLESS=1 cargo test -p sbcftp-tracker openapi_is_in_sync` and commit it"
    );
    // The served document is the same.
    let app = spawn_app(Backend::Sqlite, &[]).await.unwrap();
    let r = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), generated);
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    for p in [
        "/api/v1/peers",
        "/api/v1/peers/{peer_id}",
        "/api/v1/peers/{peer_id}/heartbeat",
        "/api/v1/peers/{peer_id}/files",
        "/api/v1/files",
        "/api/v1/files/{hash}",
        "/healthz",
        "/metrics",
        "/api/v1/openapi.json",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the document"
        );
    }
    app.stop().await.unwrap();
}

/// PostgreSQL stops accepting connections to the test database and drops
/// the tracker's: requests get 503 (not a hang), and the tracker recovers
/// by itself when connections are allowed again.
async fn postgres_outage_and_recovery() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let app = spawn_on(db.clone(), &["--db-acquire-timeout", "1s"]).await;
    let peer = app.register(1, vec![file("a", "a")]).await;
    let name = db.name.clone();
    db.admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await;
    db.admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ))
    .await;
    eventually(30, "/healthz answers 503", || async {
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    expect_problem(r, 503, "healthz while down").await;
    let r = app
        .client
        .get(app.url("/api/v1/peers"))
        .send()
        .await
        .unwrap();
    expect_problem(r, 503, "list while down").await;
    let r = app
        .client
        .post(app.url("/api/v1/peers"))
        .json(&serde_json::json!({"port": 2}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 503, "register while down").await;

    db.admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await;
    eventually(30, "/healthz recovers", || async {
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::OK
    })
    .await;
    let (s, _) = app
        .get_json(&format!("/api/v1/peers/{}", peer.peer_id))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(app.heartbeat(&peer).await, StatusCode::OK);
    app.stop().await.unwrap();
}

/// MariaDB/MySQL kills every connection of the tracker (as a server restart
/// would): the tracker goes on answering without a restart.
async fn mysql_connections_killed_recovers() {
    use sqlx::{Connection, Row};
    let Some(db) = TestDb::create(Backend::MySql).await else {
        return;
    };
    let app = spawn_on(db.clone(), &["--db-acquire-timeout", "1s"]).await;
    let peer = app.register(1, vec![file("a", "a")]).await;
    let mut admin = sqlx::MySqlConnection::connect(&db.admin).await.unwrap();
    let rows = sqlx::query(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
    )
    .bind(&db.name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!rows.is_empty(), "the tracker holds no connection to kill");
    for r in &rows {
        let id: i64 = r.try_get(0).unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("KILL {id}")))
            .execute(&mut admin)
            .await;
    }
    admin.close().await.unwrap();
    eventually(30, "the tracker answers again", || async {
        app.get_json(&format!("/api/v1/peers/{}", peer.peer_id))
            .await
            .0
            == StatusCode::OK
    })
    .await;
    let (s, _) = app.get_json("/healthz").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(app.heartbeat(&peer).await, StatusCode::OK);
    app.stop().await.unwrap();
}

/// The real binary: serves, refuses a second instance on the same port with
/// a one-line cause, and stops cleanly on SIGTERM.
#[cfg(unix)]
async fn binary_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let exe = env!("CARGO_BIN_EXE_sbcftp-tracker");
    let mut child = Command::new(exe)
        .args(["--listen", "127.0.0.1:0", "--database-url", &url])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // The start-up line names the bound address.
    let addr = loop {
        let line = lines
            .next()
            .expect("tracker exited before listening")
            .unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            // One line of settings, not a `Config { .. }` dump.
            assert!(line.contains(" config=database sqlite://"), "{line}");
            assert!(line.contains("open registration"), "{line}");
            assert!(!line.contains("Config {"), "{line}");
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let client = crate::helpers::client_from("127.0.0.1");
    let r = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let second = Command::new(exe)
        .args(["--listen", &addr, "--database-url", &url])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains(&format!("error: cannot bind {addr}")), "{err}");
    assert!(err.contains("is another tracker running?"), "{err}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("tracker stopped")),
        "{rest:?}"
    );
}
