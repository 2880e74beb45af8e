//! Hostile bytes on the peer port: every malformed request is answered with an
//! explicit status or the connection is closed, slow senders and idle
//! connections lose their slot, the cap answers BUSY, and the server keeps
//! serving real downloads afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;

use sbcftp_api::ContentHash;
use sbcftp_peer::transfer::wire::{REQUEST_LEN, Request, ResponseHeader, Status};

use crate::helpers::*;

/// Reads a response header, or `None` if the server closed the connection.
fn header(s: &mut TcpStream) -> Option<ResponseHeader> {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).ok()?;
    Some(ResponseHeader::decode(&h).expect("server sent a malformed header"))
}

/// Reads a whole error answer: its status and message.
fn answer(s: &mut TcpStream) -> Option<(Status, String)> {
    let h = header(s)?;
    assert!(h.length <= 1024, "error message too long: {}", h.length);
    let mut msg = vec![0u8; h.length as usize];
    s.read_exact(&mut msg).ok()?;
    Some((h.status, String::from_utf8(msg).unwrap()))
}

/// True once the server has closed the connection (EOF or reset).
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_answered_or_dropped_and_serving_goes_on() {
    let tracker = Tracker::start().await;
    let data = bytes(3 * (1 << 20) + 5, 9);
    let hash = content_hash(&data);
    let mut a = PeerProc::start(
        &tracker,
        "127.0.0.2",
        &[("real.bin", &data)],
        &["--io-timeout", "1s", "--idle-timeout", "3s"],
    )
    .await;
    // A second peer with a cap of two connections, used only for the cap.
    let cap_data = bytes(1000, 10);
    let cap_hash = content_hash(&cap_data);
    let capped = PeerProc::start(
        &tracker,
        "127.0.0.3",
        &[("cap.bin", &cap_data)],
        &["--max-connections", "2"],
    )
    .await;
    let cap_addr = capped.addr.clone();
    let addr = a.addr.clone();
    let expected = data.clone();

    let results = tokio::task::spawn_blocking(move || {
        let conn = || {
            let s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s
        };

        // Pure garbage, one frame's worth: BAD_REQUEST, then close.
        let mut s = conn();
        s.write_all(&[0xAB; REQUEST_LEN]).unwrap();
        assert_eq!(answer(&mut s).map(|a| a.0), Some(Status::BadRequest));
        assert!(closed(&mut s));

        // Text (an HTTP request) with `../` in it.
        let mut s = conn();
        s.write_all(b"GET /../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let got = answer(&mut s);
        assert!(
            matches!(got, None | Some((Status::BadRequest, _))),
            "{got:?}"
        );
        assert!(closed(&mut s));

        // Unsupported version: explicit status, then close.
        let mut s = conn();
        let mut f = Request::outline(hash).encode();
        f[4] = 99;
        s.write_all(&f).unwrap();
        assert_eq!(
            answer(&mut s).map(|a| a.0),
            Some(Status::UnsupportedVersion)
        );
        assert!(closed(&mut s));

        // On one connection: framing errors that keep the stream in frame are
        // answered and the connection goes on.
        let mut s = conn();
        let mut f = Request::read(hash, 0, 1).encode();
        f[5] = 77; // unknown kind
        s.write_all(&f).unwrap();
        assert_eq!(answer(&mut s).map(|a| a.0), Some(Status::BadRequest));
        let mut f = Request::read(hash, 0, 1).encode();
        f[6] = 1; // reserved
        s.write_all(&f).unwrap();
        assert_eq!(answer(&mut s).map(|a| a.0), Some(Status::BadRequest));
        // A "hash" that is a path: not found (it is only ever looked up by hash).
        let mut path_hash = [0u8; 32];
        path_hash.copy_from_slice(b"../../../../../../../etc/passwd\0");
        s.write_all(&Request::read(ContentHash::from_bytes(path_hash), 0, 100).encode())
            .unwrap();
        assert_eq!(answer(&mut s).map(|a| a.0), Some(Status::NotFound));
        s.write_all(&Request::outline(ContentHash::from_bytes(path_hash)).encode())
            .unwrap();
        assert_eq!(answer(&mut s).map(|a| a.0), Some(Status::NotFound));
        // Huge lengths and overflowing ranges: BAD_RANGE, nothing allocated.
        s.write_all(&Request::read(hash, 0, u64::MAX).encode())
            .unwrap();
        assert_eq!(answer(&mut s).map(|a| a.0), Some(Status::BadRange));
        s.write_all(&Request::read(hash, u64::MAX, 2).encode())
            .unwrap();
        assert_eq!(answer(&mut s).map(|a| a.0), Some(Status::BadRange));
        s.write_all(&Request::read(hash, data.len() as u64, 1).encode())
            .unwrap();
        assert_eq!(answer(&mut s).map(|a| a.0), Some(Status::BadRange));
        // OUTLINE with a range is malformed.
        let mut f = Request::outline(hash).encode();
        f[55] = 1;
        s.write_all(&f).unwrap();
        assert_eq!(answer(&mut s).map(|a| a.0), Some(Status::BadRequest));
        // And a real READ on the same connection still works.
        s.write_all(&Request::read(hash, 1000, 10).encode())
            .unwrap();
        let h = header(&mut s).unwrap();
        assert_eq!((h.status, h.length), (Status::Ok, 10));
        let mut got = [0u8; 10];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, &data[1000..1010]);
        drop(s);

        // Truncated frame, then the sender goes away: nothing to answer.
        let mut s = conn();
        s.write_all(&Request::outline(hash).encode()[..20]).unwrap();
        drop(s);

        // A slow sender (half a frame, then nothing) loses the connection.
        let mut s = conn();
        s.write_all(&Request::outline(hash).encode()[..30]).unwrap();
        let got = answer(&mut s);
        assert!(
            matches!(got, None | Some((Status::BadRequest, _))),
            "{got:?}"
        );
        assert!(closed(&mut s));

        // An idle connection is closed after the idle timeout.
        let mut s = conn();
        assert!(closed(&mut s));

        // The cap: two connections being served hold both slots...
        let conn = || {
            let s = TcpStream::connect(&cap_addr).unwrap();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s
        };
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = conn();
            s.write_all(&Request::read(cap_hash, 0, 1).encode())
                .unwrap();
            let h = header(&mut s).unwrap();
            assert_eq!(h.status, Status::Ok);
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            held.push(s);
        }
        // ...so a third is answered BUSY and closed.
        let mut s = conn();
        let _ = s.write_all(&Request::outline(cap_hash).encode());
        let got = answer(&mut s);
        assert_eq!(got.map(|a| a.0), Some(Status::Busy));
        assert!(closed(&mut s));
        drop(held);
    })
    .await;
    if let Err(e) = results {
        panic!("{e:?}\npeer log:\n{}", a.log_text());
    }

    // The server still serves a real download (slots came back).
    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap();
    let mut out = peer_cmd(&tracker, &["get", "real.bin", "--out", od]).await;
    // The two held connections may take a moment to be released.
    let deadline = std::time::Instant::now() + DEADLINE;
    while !out.status.success() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        out = peer_cmd(&tracker, &["get", "real.bin", "--out", od]).await;
    }
    assert!(out.status.success(), "{:?}\n{}", text(&out), a.log_text());
    assert_eq!(std::fs::read(dl.path().join("real.bin")).unwrap(), expected);
    assert!(a.child_alive());
    // The capped peer serves again once the held connections are gone.
    let mut out = peer_cmd(&tracker, &["get", "cap.bin", "--out", od]).await;
    while !out.status.success() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        out = peer_cmd(&tracker, &["get", "cap.bin", "--out", od]).await;
    }
    assert!(
        out.status.success(),
        "{:?}\n{}",
        text(&out),
        capped.log_text()
    );
    assert_eq!(std::fs::read(dl.path().join("cap.bin")).unwrap(), cap_data);
}
