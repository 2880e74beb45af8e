//! The server in-process against many random and mutated request streams:
//! it answers each with a well-formed response or closes, never panics, never
//! leaks a slot, and serves a valid request correctly afterwards.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use sbcftp_api::ContentHash;
use sbcftp_peer::share::Share;
use sbcftp_peer::transfer::server::{self, ServerConfig};
use sbcftp_peer::transfer::wire::{REQUEST_LEN, Request, ResponseHeader, Status};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Reads every response on the connection until the server closes it; checks
/// each is well-formed and that error messages are bounded.
fn drain(s: &mut TcpStream) -> Vec<Status> {
    let mut statuses = Vec::new();
    loop {
        let mut h = [0u8; 16];
        if s.read_exact(&mut h).is_err() {
            return statuses;
        }
        let h = ResponseHeader::decode(&h).expect("malformed response header");
        if h.status != Status::Ok {
            assert!(h.length <= 1024, "error message of {} bytes", h.length);
        }
        let mut left = h.length;
        let mut buf = [0u8; 8192];
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            match s.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return statuses,
                Ok(n) => left -= n as u64,
            }
        }
        statuses.push(h.status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_requests_never_break_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(2u32 << 20) + 77)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(dir.path().join("f.bin"), &data).unwrap();
    let share = Arc::new(Share::new(dir.path(), None).unwrap());
    let s2 = Arc::clone(&share);
    tokio::task::spawn_blocking(move || s2.scan().unwrap())
        .await
        .unwrap();
    let hash = ContentHash::from_bytes(*blake3::hash(&data).as_bytes());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let config = ServerConfig {
        max_connections: 4,
        max_per_address: 4,
        idle_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let server = tokio::spawn(server::run(
        listener,
        share,
        config,
        stop.clone(),
        Arc::new(Notify::new()),
    ));

    let seen = tokio::task::spawn_blocking(move || {
        let mut rng = Rng(0x9E3779B97F4A7C15);
        let mut seen = std::collections::BTreeSet::new();
        let valid = [
            Request::outline(hash).encode(),
            Request::read(hash, 0, 10).encode(),
            Request::read(hash, (1 << 20) - 3, 7).encode(),
        ];
        for _ in 0..300 {
            // A stream of one to four frames: valid ones, mutated ones, or noise.
            let mut stream = Vec::new();
            for _ in 0..=rng.below(4) {
                match rng.below(4) {
                    0 => {
                        let len = rng.below(3 * REQUEST_LEN as u64) as usize;
                        stream.extend((0..len).map(|_| rng.next() as u8));
                    }
                    1 => stream.extend_from_slice(&valid[rng.below(3) as usize]),
                    _ => {
                        let mut f = valid[rng.below(3) as usize];
                        for _ in 0..=rng.below(3) {
                            let i = rng.below(REQUEST_LEN as u64) as usize;
                            f[i] = rng.next() as u8;
                        }
                        let cut = if rng.below(5) == 0 {
                            rng.below(REQUEST_LEN as u64) as usize
                        } else {
                            REQUEST_LEN
                        };
                        stream.extend_from_slice(&f[..cut]);
                    }
                }
            }
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            // The server may close early (bad magic); a failed write is fine.
            let _ = s.write_all(&stream);
            let _ = s.shutdown(Shutdown::Write);
            for st in drain(&mut s) {
                seen.insert(format!("{st}"));
            }
        }
        // Slots all came back, and a valid request is served right.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s.write_all(&Request::read(hash, 5, 1000).encode()).unwrap();
            let mut h = [0u8; 16];
            s.read_exact(&mut h).unwrap();
            let h = ResponseHeader::decode(&h).unwrap();
            if h.status == Status::Busy {
                // Connections of the last rounds may still be closing: poll.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            assert_eq!((h.status, h.length), (Status::Ok, 1000));
            let mut got = vec![0u8; 1000];
            s.read_exact(&mut got).unwrap();
            assert_eq!(got, data[5..1005]);
            return seen;
        }
        panic!("server never became free again");
    })
    .await
    .unwrap();
    // The random streams exercised the answers that matter.
    for st in ["ok", "bad request", "not found", "bad range"] {
        assert!(seen.contains(st), "never saw {st}: {seen:?}");
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap();
}
