//! Test harness: a fresh database per test, the real tracker started with
//! `run()` on 127.0.0.1:0, and typed helpers over reqwest.
//!
//! This target has its own `main` (`harness = false`, libtest-mimic) so
//! that a backend nobody can reach is reported as such: its tests show as
//! `ignored, <why>` and a `backend ...` line says what ran and what did
//! not, where plain `#[test]`s could only pass silently.
//!
//! MariaDB/MySQL and PostgreSQL come from `SBCFTP_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`) and `SBCFTP_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432`). Each test creates its own
//! `sbcftp_test_<random>` database and drops it when it ends, also when it
//! fails. An unreachable server makes its tests ignored with the reason, or
//! failed when `SBCFTP_TEST_REQUIRE_BACKENDS=1`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Parser;
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use reqwest::{Method, StatusCode};
use sbcftp_api::{
    ContentHash, FileEntry, FileName, HeartbeatResponse, Problem, RegisterRequest, RegisterResponse,
};
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

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Sqlite, Backend::MySql, Backend::Postgres];

    /// The name in test paths (`lifecycle::mysql::full_lifecycle`).
    pub fn key(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::MySql => "mysql",
            Backend::Postgres => "postgres",
        }
    }
}

/// Defines this module's `pub fn trials()`: `MODULE::sqlite::NAME`,
/// `MODULE::mysql::NAME` and `MODULE::postgres::NAME` from
/// `async fn NAME(backend: Backend)` bodies. A new test module adds one
/// `trials.extend(module::trials())` line to `main.rs`. (A `#[test]` or
/// `#[tokio::test]` here would never run: this target has its own `main`.)
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        /// This module's tests, once per backend (collected by `main`).
        pub fn trials() -> Vec<libtest_mimic::Trial> {
            let module = $crate::helpers::module_name(module_path!());
            let mut trials = Vec::new();
            for backend in $crate::helpers::Backend::ALL {
                $(
                    trials.push($crate::helpers::backend_trial(
                        module,
                        stringify!($name),
                        backend,
                        $name,
                    ));
                )*
            }
            trials
        }
    };
}

/// `lifecycle` from `api::lifecycle`.
pub fn module_name(path: &'static str) -> &'static str {
    path.split_once("::").map_or(path, |(_, m)| m)
}

/// Runs a test body on its own runtime, as `#[tokio::test]` would.
fn block_on<Fut: Future<Output = ()>>(body: Fut) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(body)
}

/// `MODULE::BACKEND::NAME`, run only when `backend` is reachable: ignored
/// with the reason otherwise, or failed if backends are required.
pub fn backend_trial<F, Fut>(module: &str, name: &str, backend: Backend, test: F) -> Trial
where
    F: FnOnce(Backend) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::ignorable_test(format!("{module}::{}::{name}", backend.key()), move || {
        if let Err(why) = reachable(backend) {
            return if backends_required() {
                Err(Failed::from(format!(
                    "{why} (SBCFTP_TEST_REQUIRE_BACKENDS=1 requires it)"
                )))
            } else {
                Ok(Completion::ignored_with(why))
            };
        }
        block_on(test(backend));
        Ok(Completion::Completed)
    })
}

/// A test that needs no database.
pub fn trial<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::test(name, move || {
        block_on(test());
        Ok(())
    })
}

fn backends_required() -> bool {
    std::env::var("SBCFTP_TEST_REQUIRE_BACKENDS").as_deref() == Ok("1")
}

/// Whether `backend`'s server answers, probed once per run; `Err` says why
/// not and what to do.
pub fn reachable(backend: Backend) -> &'static Result<(), String> {
    static STATE: [OnceLock<Result<(), String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    STATE[backend as usize].get_or_init(|| {
        if backend == Backend::Sqlite {
            return Ok(());
        }
        let (admin, var) = admin_url(backend);
        // Own thread and runtime: this may be first called inside a test's.
        install_crypto();
        let probe = {
            let admin = admin.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime")
                    .block_on(async {
                        tokio::time::timeout(
                            Duration::from_secs(10),
                            admin_exec(backend, &admin, "SELECT 1"),
                        )
                        .await
                    })
            })
            .join()
        };
        let why = match probe {
            Ok(Ok(Ok(()))) => return Ok(()),
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(_)) => "no answer in 10 s".into(),
            Err(panic) => format!(
                "the probe panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            ),
        };
        Err(format!(
            "{} unreachable at {admin}: {why}; start it or set {var}",
            backend.key()
        ))
    })
}

/// Prints one line per backend that the selected tests use: where it runs,
/// or why its tests are ignored (or will fail). Libtest's own output stays
/// as it is, so `--list` and `--format json` are left alone.
pub fn print_backends(args: &Arguments, trials: &[Trial]) {
    if args.list
        || args
            .format
            .is_some_and(|f| f == libtest_mimic::FormatSetting::Json)
    {
        return;
    }
    for backend in Backend::ALL {
        let marker = format!("::{}::", backend.key());
        let count = trials
            .iter()
            .filter(|t| t.name().contains(&marker) && !args.is_filtered_out(t))
            .count();
        if count == 0 {
            continue;
        }
        match reachable(backend) {
            Ok(()) if backend == Backend::Sqlite => {
                println!("backend sqlite: {count} tests run (temporary files)")
            }
            Ok(()) => println!(
                "backend {}: {count} tests run on {}",
                backend.key(),
                admin_url(backend).0
            ),
            Err(why) if backends_required() => println!(
                "backend {}: {count} tests FAIL: {why} (SBCFTP_TEST_REQUIRE_BACKENDS=1)",
                backend.key()
            ),
            Err(why) => println!(
                "backend {}: {count} tests SKIPPED (shown as ignored): {why}",
                backend.key()
            ),
        }
    }
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
    /// are not required (its tests are then reported as ignored, never run).
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
        let (admin, _) = admin_url(backend);
        if reachable(backend).is_err() {
            // backend_trial reports these as ignored (or failed) before this.
            assert!(!backends_required(), "{backend:?} is required");
            return None;
        }
        let name = format!("sbcftp_test_{:016x}", rand::random::<u64>());
        tokio::time::timeout(
            Duration::from_secs(10),
            admin_exec(backend, &admin, &format!("CREATE DATABASE {name}")),
        )
        .await
        .unwrap_or_else(|_| panic!("CREATE DATABASE on {admin} timed out"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE on {admin}: {e}"));
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
    // Tests send hundreds of requests a second from 127.0.0.1: no request
    // rate unless the test sets one (tests/api/limits.rs does).
    if !args.contains(&"--requests-per-ip") {
        argv.extend_from_slice(&["--requests-per-ip", "0"]);
    }
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

    fn heartbeat_request(&self, peer: &RegisterResponse) -> reqwest::RequestBuilder {
        self.authed(
            Method::POST,
            &format!("/api/v1/peers/{}/heartbeat", peer.peer_id),
            &peer.token,
        )
    }

    pub async fn heartbeat(&self, peer: &RegisterResponse) -> StatusCode {
        self.heartbeat_request(peer).send().await.unwrap().status()
    }

    /// A heartbeat's answer; panics unless 200.
    pub async fn heartbeat_answer(&self, peer: &RegisterResponse) -> HeartbeatResponse {
        let r = self.heartbeat_request(peer).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// `GET path` read as `T`; panics unless 200.
    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.unwrap()
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

    /// Every file of a peer, walked `limit` at a time (so in name order).
    pub async fn peer_files(&self, peer_id: &sbcftp_api::PeerId, limit: u32) -> Vec<FileEntry> {
        self.walk(
            &format!("/api/v1/peers/{peer_id}/files?limit={limit}"),
            "files",
        )
        .await
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
    }

    /// Everything the tracker shows, without what moves by itself (the
    /// times heartbeats move, the reachability checks' results): every peer
    /// with its files, and every content.
    pub async fn snapshot(&self) -> Value {
        let mut detailed = Vec::new();
        for p in self.walk("/api/v1/peers", "peers").await {
            let id = p["peer_id"].as_str().unwrap().to_owned();
            let (s, mut full) = self.get_json(&format!("/api/v1/peers/{id}")).await;
            assert_eq!(s, StatusCode::OK);
            let full_obj = full.as_object_mut().unwrap();
            for moving in [
                "last_seen",
                "reachable",
                "reachable_checked_at",
                "unreachable_reason",
            ] {
                full_obj.remove(moving);
            }
            let files = self
                .walk(&format!("/api/v1/peers/{id}/files?limit=7"), "files")
                .await;
            full["files"] = Value::Array(files);
            detailed.push(full);
        }
        let mut files = self.walk("/api/v1/files", "files").await;
        for c in &mut files {
            for p in c["peers"].as_array_mut().unwrap() {
                p.as_object_mut().unwrap().remove("reachable");
            }
        }
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
