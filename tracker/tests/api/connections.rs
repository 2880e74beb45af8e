//! Connection-level limits: slowloris and idle connections are closed after
//! the header timeout, clients that never read cost a bounded amount of
//! memory and are dropped after the write timeout, and `--max-connections`
//! is one limit over the whole service. None of this touches the database
//! beyond what any request does, so SQLite is enough.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{Backend, TestApp, TestDb, expect_problem, file, spawn_app};

/// This module's tests (no database of their own beyond SQLite).
pub fn trials() -> Vec<libtest_mimic::Trial> {
    use crate::helpers::trial;
    vec![
        trial(
            "connections::slowloris_and_idle_connections_are_closed",
            slowloris_and_idle_connections_are_closed,
        ),
        trial(
            "connections::max_connections_is_one_limit_for_the_whole_service",
            max_connections_is_one_limit_for_the_whole_service,
        ),
        trial(
            "connections::clients_that_never_read_cost_bounded_memory",
            clients_that_never_read_cost_bounded_memory,
        ),
    ]
}

/// A TCP connection to the tracker from `ip`.
async fn connect_from(ip: &str, to: std::net::SocketAddr) -> TcpStream {
    connect_with(ip, to, None).await
}

/// The same with a receive buffer of `rcvbuf` bytes (a small one makes the
/// tracker's writes block as soon as the client stops reading).
async fn connect_with(ip: &str, to: std::net::SocketAddr, rcvbuf: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// How long `/healthz` takes to answer 200, on a new connection (a pooled
/// one may be closing just then: the idle timeout here is 1 s).
async fn healthz_latency(app: &TestApp) -> Duration {
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .unwrap();
    let start = Instant::now();
    let r = fresh.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    start.elapsed()
}

/// Waits until the server closes `conn` (EOF or reset), discarding what it
/// sends; panics after `limit`.
async fn closed_within(conn: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

async fn slowloris_and_idle_connections_are_closed() {
    let Some(app) = spawn_app(Backend::Sqlite, &["--header-timeout", "1s"]).await else {
        return;
    };
    let start = Instant::now();
    let mut conns = Vec::new();
    for i in 0..300 {
        let mut c = connect_from("127.0.0.6", app.addr).await;
        if i % 2 == 0 {
            // A head that never ends; the other half send nothing at all.
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
                .await
                .unwrap();
        }
        conns.push(c);
    }
    let latency = healthz_latency(&app).await;
    // A keep-alive connection that goes idle after one answer.
    let mut idle = connect_from("127.0.0.6", app.addr).await;
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    // Ten times the header timeout is the generous bound; the log shows
    // the real figure.
    for c in &mut conns {
        closed_within(c, Duration::from_secs(10)).await;
    }
    closed_within(&mut idle, Duration::from_secs(10)).await;
    eprintln!(
        "300 slowloris/idle connections: /healthz in {latency:?} meanwhile, all closed {:?} after opening",
        start.elapsed()
    );
    assert!(healthz_latency(&app).await < Duration::from_secs(5));
    app.stop().await.unwrap();
}

async fn max_connections_is_one_limit_for_the_whole_service() {
    let Some(app) = spawn_app(
        Backend::Sqlite,
        &["--max-connections", "1", "--request-timeout", "3s"],
    )
    .await
    else {
        return;
    };
    // A registration whose body never finishes holds a slot until the
    // request timeout.
    let slow = |app: &TestApp| {
        let addr = app.addr;
        async move {
            let mut c = connect_from("127.0.0.7", addr).await;
            c.write_all(
                b"POST /api/v1/peers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 1000\r\n\r\n{\"port\":",
            )
            .await
            .unwrap();
            c
        }
    };
    // A holds the one slot; B queues behind it and gets the slot when A
    // times out, then holds it for a whole timeout as well.
    let a = slow(&app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = slow(&app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // C, on another route, queues behind B and gives up first.
    let r = app
        .client
        .get(app.url("/api/v1/peers"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("1".to_owned())
    );
    let p = expect_problem(r, 503, "a request over --max-connections").await;
    assert!(p.detail.unwrap().contains("--max-connections"));
    drop((a, b));
    app.stop().await.unwrap();
}

/// Waits until the tracker's `metric` (unlabelled) passes `check`.
async fn metric_reaches(
    client: &reqwest::Client,
    base: &str,
    metric: &str,
    what: &str,
    mut check: impl FnMut(f64) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let open = text
            .lines()
            .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if check(open) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what} ({open} open)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads what the server still sends until it closes `conn`; the bytes read.
async fn drain_until_closed(conn: &mut TcpStream, limit: Duration) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return total,
            Ok(Ok(n)) => total += n as u64,
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

/// A `kB` line of `/proc/PID/status` (`VmHWM`: peak resident memory,
/// `VmRSS`: resident now), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The real binary (for its own memory figures), 300 clients that ask for
/// the largest page and never read it.
async fn clients_that_never_read_cost_bounded_memory() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sbcftp-tracker"))
        .args([
            "--listen",
            &addr.to_string(),
            "--database-url",
            &db.url,
            "--requests-per-ip",
            "0",
            "--write-timeout",
            "2s",
            // Only the write timeout may close them.
            "--header-timeout",
            "120s",
        ])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let client = crate::helpers::client_from("127.0.0.1");
    let base = format!("http://{addr}");
    crate::helpers::eventually(60, "the tracker answers", || {
        let (client, url) = (client.clone(), format!("{base}/healthz"));
        async move {
            client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    // The largest page: 1,000 files with names of 200 bytes.
    let files: Vec<_> = (0..1000)
        .map(|i| file(&format!("{i:04}{}", "n".repeat(196)), &format!("c{i}")))
        .collect();
    let r = client
        .post(format!("{base}/api/v1/peers"))
        .json(&sbcftp_api::RegisterRequest { port: 1, files })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let peer: sbcftp_api::RegisterResponse = r.json().await.unwrap();
    let path = format!("/api/v1/peers/{}/files?limit=1000", peer.peer_id);
    let page = client.get(format!("{base}{path}")).send().await.unwrap();
    let page_bytes = page.bytes().await.unwrap().len() as u64;
    let before = status_kib(pid, "VmRSS");

    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut conns = Vec::new();
    for _ in 0..300 {
        let mut c = connect_with("127.0.0.8", addr, Some(4096)).await;
        c.write_all(request.as_bytes()).await.unwrap();
        conns.push(c);
    }
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let start = Instant::now();
        let r = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        worst = worst.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = status_kib(pid, "VmHWM");
    eprintln!(
        "300 non-reading clients of a {page_bytes}-byte page: RSS {before} KiB before, peak {peak} KiB; \
         /healthz worst {worst:?}"
    );
    // The bound: a page per connection on top of what the tracker used.
    let bound = before + 300 * (page_bytes / 1024 + 64) + 64 * 1024;
    assert!(
        peak < bound,
        "peak RSS {peak} KiB over the bound {bound} KiB"
    );
    assert!(worst < Duration::from_secs(2), "/healthz took {worst:?}");
    drop(conns);
    metric_reaches(
        &client,
        &base,
        "sbcftp_open_connections",
        "the 300 closed their side",
        |n| n <= 2.0,
    )
    .await;
    let mut failed_before = 0.0;
    metric_reaches(
        &client,
        &base,
        "sbcftp_connections_failed_total",
        "a count",
        |n| {
            failed_before = n;
            true
        },
    )
    .await;

    // A page fits in the kernel's socket buffers (up to 4 MiB here), so to
    // block the tracker's writes a few clients pipeline 20 pages each and
    // never read. Only the write timeout can drop them (the header timeout
    // is far longer): the tracker counts five more failed connections, and
    // what is left to read ends early.
    let mut stuck = Vec::new();
    for _ in 0..5 {
        let mut c = connect_with("127.0.0.9", addr, Some(4096)).await;
        for _ in 0..20 {
            c.write_all(request.as_bytes()).await.unwrap();
        }
        stuck.push(c);
    }
    let opened = Instant::now();
    metric_reaches(
        &client,
        &base,
        "sbcftp_connections_failed_total",
        "the stuck ones are dropped",
        |n| n >= failed_before + 5.0,
    )
    .await;
    let dropped_after = opened.elapsed();
    for c in &mut stuck {
        let received = drain_until_closed(c, Duration::from_secs(10)).await;
        assert!(received < 20 * page_bytes, "every page was delivered");
    }
    eprintln!(
        "5 clients with 20 unread pages each: dropped {dropped_after:?} after the requests (--write-timeout 2s)"
    );
    child.kill().await.unwrap();
}
