//! Test harness: a fresh database per test, the real tracker started with
//! `run()` on 127.0.0.1:0, and typed helpers over reqwest.
//!
//! MariaDB/MySQL and PostgreSQL come from `SBCFTP_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`) and `SBCFTP_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432`). Each test creates its own
//! `sbcftp_test_<random>` database and drops it when it ends, also when it
//! fails. An unreachable server makes the test print SKIPPED and pass, unless
//! `SBCFTP_TEST_REQUIRE_BACKENDS=1`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use reqwest::{Method, StatusCode};
use sbcftp_api::{ContentHash, FileEntry, FileName, Problem, RegisterRequest, RegisterResponse};
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::oneshot;

/// A database backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
    Postgres,
}

/// Generates `sqlite::NAME`, `mysql::NAME` and `postgres::NAME` tests from
/// `async fn NAME(backend: Backend)` bodies.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::MySql).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

fn admin_url(backend: Backend) -> (String, &'static str) {
    match backend {
        Backend::MySql => (
            std::env::var("SBCFTP_TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into()),
            "SBCFTP_TEST_MYSQL_URL",
        ),
        Backend::Postgres => (
            std::env::var("SBCFTP_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into()),
            "SBCFTP_TEST_POSTGRES_URL",
        ),
        Backend::Sqlite => (String::new(), ""),
    }
}

/// A database for one test; dropped (or deleted) when this is dropped.
#[derive(Debug)]
pub struct TestDb {
    pub backend: Backend,
    /// URL for the tracker.
    pub url: String,
    /// Server URL without a database (MySQL/Pg), for admin statements.
    pub admin: String,
    /// Database name (MySQL/Pg).
    pub name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database, or `None` if the server is unreachable and backends
    /// are not required.
    pub async fn create(backend: Backend) -> Option<Arc<TestDb>> {
        if backend == Backend::Sqlite {
            let dir = tempfile::tempdir().unwrap();
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("tracker.db").display()
            );
            return Some(Arc::new(TestDb {
                backend,
                url,
                admin: String::new(),
                name: String::new(),
                _dir: Some(dir),
            }));
        }
        let (admin, var) = admin_url(backend);
        let name = format!("sbcftp_test_{:016x}", rand::random::<u64>());
        let created = tokio::time::timeout(
            Duration::from_secs(10),
            admin_exec(backend, &admin, &format!("CREATE DATABASE {name}")),
        )
        .await;
        match created {
            Ok(Ok(())) => {}
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".into(),
                    Ok(Ok(())) => unreachable!(),
                };
                if std::env::var("SBCFTP_TEST_REQUIRE_BACKENDS").as_deref() == Ok("1") {
                    panic!(
                        "{backend:?} unreachable at {admin}: {why} (SBCFTP_TEST_REQUIRE_BACKENDS=1)"
                    );
                }
                eprintln!(
                    "SKIPPED: {backend:?} unreachable at {admin} ({why}; set {var} or start it)"
                );
                return None;
            }
        }
        let url = format!("{}/{name}", admin.trim_end_matches('/'));
        Some(Arc::new(TestDb {
            backend,
            url,
            admin,
            name,
            _dir: None,
        }))
    }

    /// Runs one statement on the server (not inside the test database).
    pub async fn admin(&self, sql: &str) {
        admin_exec(self.backend, &self.admin, sql).await.unwrap();
    }
}

async fn admin_exec(backend: Backend, admin: &str, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Executor;
    match backend {
        Backend::MySql => {
            let mut c = sqlx::MySqlConnection::connect(admin).await?;
            c.execute(sqlx::AssertSqlSafe(sql.to_owned())).await?;
            c.close().await
        }
        Backend::Postgres => {
            let mut c =
                sqlx::PgConnection::connect(&format!("{}/postgres", admin.trim_end_matches('/')))
                    .await?;
            c.execute(sqlx::AssertSqlSafe(sql.to_owned())).await?;
            c.close().await
        }
        Backend::Sqlite => Ok(()),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend == Backend::Sqlite {
            return;
        }
        let sql = match self.backend {
            Backend::MySql => format!("DROP DATABASE IF EXISTS {}", self.name),
            _ => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        };
        let (backend, admin) = (self.backend, self.admin.clone());
        // Own thread and runtime: this may run while a test runtime unwinds.
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), admin_exec(backend, &admin, &sql))
                    .await
            })
        })
        .join();
        if !matches!(joined, Ok(Ok(Ok(())))) {
            eprintln!(
                "warning: could not drop test database {}: {joined:?}",
                self.name
            );
        }
    }
}

/// A running tracker.
#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub db: Arc<TestDb>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client whose connections come from `ip` (a loopback address).
pub fn client_from(ip: &str) -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
}

/// Starts a tracker on a fresh database of `backend`; `None` if skipped.
pub async fn spawn_app(backend: Backend, args: &[&str]) -> Option<TestApp> {
    let db = TestDb::create(backend).await?;
    Some(spawn_on(db, args).await)
}

/// Starts a tracker on an existing test database (a second replica).
pub async fn spawn_on(db: Arc<TestDb>, args: &[&str]) -> TestApp {
    install_crypto();
    let mut argv = vec![
        "sbcftp-tracker",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
    ];
    argv.extend_from_slice(args);
    let config = sbcftp_tracker::Config::try_parse_from(argv).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(sbcftp_tracker::run(listener, config, async move {
        let _ = rx.await;
    }));
    let app = TestApp {
        addr,
        base: format!("http://{addr}"),
        client: client_from("127.0.0.1"),
        db,
        shutdown: Some(tx),
        handle: Some(handle),
    };
    // Ready when /healthz answers (run() migrates before serving).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = app.client.get(app.url("/healthz")).send().await
            && r.status() == StatusCode::OK
        {
            break;
        }
        if app.handle.as_ref().is_some_and(|h| h.is_finished()) {
            let mut app = app;
            let result = app.handle.take().unwrap().await;
            panic!("tracker exited during start-up: {result:?}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tracker did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app
}

/// Polls `check` until it returns true, panicking after `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A file entry whose hash is derived from `seed`.
pub fn file(name: &str, seed: &str) -> FileEntry {
    FileEntry {
        name: FileName::new(name).unwrap(),
        size: seed.len() as u64,
        hash: ContentHash::from_bytes(*blake3::hash(seed.as_bytes()).as_bytes()),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the tracker gracefully and returns what `run()` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let h = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .expect("shutdown hangs")
            .unwrap()
    }

    /// Registers from `client`; panics unless 201.
    pub async fn register_with(
        &self,
        client: &reqwest::Client,
        port: u16,
        files: Vec<FileEntry>,
    ) -> RegisterResponse {
        let r = client
            .post(self.url("/api/v1/peers"))
            .json(&RegisterRequest { port, files })
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        r.json().await.unwrap()
    }

    pub async fn register(&self, port: u16, files: Vec<FileEntry>) -> RegisterResponse {
        self.register_with(&self.client, port, files).await
    }

    /// A request with the peer's token.
    pub fn authed(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    pub async fn heartbeat(&self, peer: &RegisterResponse) -> StatusCode {
        self.authed(
            Method::POST,
            &format!("/api/v1/peers/{}/heartbeat", peer.peer_id),
            &peer.token,
        )
        .send()
        .await
        .unwrap()
        .status()
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Every item of a paginated list (`key` is `peers` or `files`).
    pub async fn walk(&self, path: &str, key: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor = String::new();
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let (s, mut page) = self.get_json(&format!("{path}{sep}cursor={cursor}")).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            items.append(page[key].as_array_mut().unwrap());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => return items,
            }
        }
    }

    /// Everything the tracker shows, without the times that heartbeats move:
    /// every peer with its files, and every content.
    pub async fn snapshot(&self) -> Value {
        let mut detailed = Vec::new();
        for p in self.walk("/api/v1/peers", "peers").await {
            let id = p["peer_id"].as_str().unwrap().to_owned();
            let (s, mut full) = self.get_json(&format!("/api/v1/peers/{id}")).await;
            assert_eq!(s, StatusCode::OK);
            full.as_object_mut().unwrap().remove("last_seen");
            detailed.push(full);
        }
        let files = self.walk("/api/v1/files", "files").await;
        serde_json::json!({ "peers": detailed, "files": files })
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts an RFC 9457 answer with this status and returns it.
pub async fn expect_problem(resp: reqwest::Response, status: u16, what: &str) -> Problem {
    let got = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.text().await.unwrap();
    assert_eq!(got, status, "{what}: status {got}, body {body}");
    assert_eq!(
        ct, "application/problem+json",
        "{what}: content type, body {body}"
    );
    let p: Problem = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
    assert_eq!(p.status, status, "{what}");
    assert!(
        p.detail.as_deref().is_some_and(|d| !d.is_empty()),
        "{what}: no detail"
    );
    p
}
