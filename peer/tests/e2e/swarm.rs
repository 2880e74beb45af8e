//! The swarm download: one content from every holder at once. Real peers on
//! 127.0.0.x, a real tracker, and, where a source must misbehave in ways a
//! real peer does not, small servers in the test that speak the wire
//! protocol: a relay that corrupts READ answers on their way from a real
//! peer, and holders that lie about the size. Those are registered as
//! holders through the tracker's real API, from their own addresses.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use sbcftp_api::{FileEntry, FileName};
use sbcftp_peer::tracker_client::TrackerClient;
use sbcftp_peer::transfer::wire::{REQUEST_LEN, Request, ResponseHeader, Status};

use crate::helpers::*;

const MIB: usize = 1 << 20;

/// Registers a holder of `data` (claiming `size` bytes) at `ip:port` through
/// the tracker's API, as a peer of its own would. Returns its peer id.
async fn register_holder(tracker: &Tracker, ip: &str, port: u16, data: &[u8], size: u64) -> String {
    let ip: IpAddr = ip.parse().unwrap();
    let client = TrackerClient::new(&tracker.url, None, Some(ip)).unwrap();
    let files = vec![FileEntry {
        name: FileName::new("swarm.bin").unwrap(),
        size,
        hash: content_hash(data),
    }];
    client
        .register(port, files)
        .await
        .unwrap()
        .peer_id
        .to_string()
}

/// A relay on `ip` that forwards every connection to `upstream` (a real
/// peer) and flips one byte in the payload of every READ answer. Returns
/// its port, the count of answers it corrupted, and of connections that
/// asked it for a READ (the tracker's reachability check connects too).
fn corrupting_relay(ip: &str, upstream: String) -> (u16, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let flipped = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&flipped);
    let connections = Arc::new(AtomicU64::new(0));
    let accepted = Arc::clone(&connections);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let accepted = Arc::clone(&accepted);
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            // Requests go up as they are; their kinds tell the answers apart.
            let (kinds, kinds_rx) = mpsc::channel::<u8>();
            let (mut from_client, mut to_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut frame = [0u8; REQUEST_LEN];
                let mut reader = false;
                while from_client.read_exact(&mut frame).is_ok() {
                    if frame[5] == 2 && !reader {
                        reader = true;
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = kinds.send(frame[5]);
                    if to_server.write_all(&frame).is_err() {
                        break;
                    }
                }
                let _ = to_server.shutdown(Shutdown::Write);
            });
            let (mut from_server, mut to_client) = (server, client);
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                let mut h = [0u8; 16];
                while from_server.read_exact(&mut h).is_ok() {
                    let header = ResponseHeader::decode(&h).unwrap();
                    let kind = kinds_rx.recv().unwrap_or(0);
                    // The upstream is a real peer: its lengths are honest.
                    let mut payload = vec![0u8; header.length as usize];
                    if to_client.write_all(&h).is_err()
                        || from_server.read_exact(&mut payload).is_err()
                    {
                        break;
                    }
                    if header.status == Status::Ok && kind == 2 && !payload.is_empty() {
                        let mid = payload.len() / 2;
                        payload[mid] ^= 0x20;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    if to_client.write_all(&payload).is_err() {
                        break;
                    }
                }
                let _ = to_client.shutdown(Shutdown::Both);
            });
        }
    });
    (port, flipped, connections)
}

/// A holder on `ip` that claims the content `hash` is one byte long: its
/// OUTLINE is that size and one CV, the hash itself, which "merges" (a
/// single CV is its own root); its READ answers are garbage. Returns its port.
fn size_liar(ip: &str, hash: sbcftp_api::ContentHash) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut frame = [0u8; REQUEST_LEN];
                while conn.read_exact(&mut frame).is_ok() {
                    let Ok(req) = Request::decode(&frame) else {
                        return;
                    };
                    let mut answer = Vec::new();
                    if frame[5] == 1 {
                        answer.extend_from_slice(&ResponseHeader::new(Status::Ok, 40).encode());
                        answer.extend_from_slice(&1u64.to_be_bytes());
                        answer.extend_from_slice(hash.as_bytes());
                    } else {
                        let len = req.length.min(MIB as u64);
                        answer.extend_from_slice(&ResponseHeader::new(Status::Ok, len).encode());
                        answer.resize(answer.len() + len as usize, 0x5a);
                    }
                    if conn.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The report of the source at `addr` in a `get --json` summary.
fn source_at<'a>(json: &'a serde_json::Value, addr: &str) -> &'a serde_json::Value {
    json["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["addr"] == addr)
        .unwrap_or_else(|| panic!("no source {addr} in {json:#}"))
}

/// Four real peers, each capped at 4 MiB/s: the content comes from all four
/// at once, byte-exact, and the summary accounts for every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_sources_at_once_byte_exact() {
    let tracker = Tracker::start().await;
    let data = bytes(24 * MIB + 333, 30);
    let mut peers = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        peers.push(
            PeerProc::start(
                &tracker,
                ip,
                &[("swarm.bin", &data)],
                &["--max-upload-rate", "4MiB/s"],
            )
            .await,
        );
    }
    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap();
    let out = peer_cmd(&tracker, &["get", &hash_hex(&data), "--out", od, "--json"]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(std::fs::read(dl.path().join("swarm.bin")).unwrap(), data);
    assert_eq!(
        std::fs::read_dir(dl.path()).unwrap().count(),
        1,
        "no part file left"
    );

    let json = summary(&out);
    assert_eq!(json["status"], "downloaded");
    assert_eq!(json["size"], data.len() as u64);
    assert_eq!(json["received"], data.len() as u64);
    let mut total = 0;
    for p in &peers {
        let s = source_at(&json, &p.addr);
        assert_eq!(s["peer_id"], p.peer_id.as_str());
        assert!(s["dropped"].is_null(), "{json:#}");
        let sent = s["bytes"].as_u64().unwrap();
        assert!(sent > 0, "every source sent blocks: {json:#}");
        total += sent;
    }
    assert_eq!(total, data.len() as u64);
    // Each served one READ per block, pipelined on one connection each.
    let reads: usize = peers.iter().map(|p| served(&p.log_text()).len()).sum();
    assert!(reads >= 25, "{reads} READs for 25 blocks");
}

/// `--max-sources 1`: one source at a time, the other holder waits as a
/// replacement and is never needed; `--max-download-rate` is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_sources_caps_the_sources_in_use() {
    let tracker = Tracker::start().await;
    let data = bytes(3 * MIB + 1, 34);
    let _a = PeerProc::start(&tracker, "127.0.0.2", &[("swarm.bin", &data)], &[]).await;
    let _b = PeerProc::start(&tracker, "127.0.0.3", &[("swarm.bin", &data)], &[]).await;
    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap();
    let out = peer_cmd(
        &tracker,
        &[
            "get",
            "swarm.bin",
            "--out",
            od,
            "--json",
            "--max-sources",
            "1",
            "--max-download-rate",
            "1GiB/s",
        ],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(std::fs::read(dl.path().join("swarm.bin")).unwrap(), data);
    let json = summary(&out);
    let sources = json["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{json:#}");
    assert_eq!(sources[0]["bytes"], data.len() as u64);

    let out = peer_cmd(&tracker, &["get", "swarm.bin", "--max-sources", "0"]).await;
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

/// The sources of the worst case, at once: one corrupts every READ
/// answer (a relay in front of a real peer), one freezes mid-transfer
/// (SIGSTOP), one dies mid-transfer (SIGKILL), one trickles 4 KiB/s; and a
/// healthy one, so that the content has somewhere to come from. One run,
/// byte-exact, and the corrupting source named with its block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_frozen_killed_and_trickling_sources_in_one_run() {
    // A long TTL: the relay's registration sends no heartbeats.
    let tracker = Tracker::start_with("1", "600", "1").await;
    let data = bytes(32 * MIB + 5, 31);
    let file: &[(&str, &[u8])] = &[("swarm.bin", &data)];
    let healthy = PeerProc::start(
        &tracker,
        "127.0.0.2",
        file,
        &["--max-upload-rate", "8MiB/s"],
    )
    .await;
    let frozen = PeerProc::start(
        &tracker,
        "127.0.0.3",
        file,
        &["--max-upload-rate", "2MiB/s"],
    )
    .await;
    let mut killed = PeerProc::start(
        &tracker,
        "127.0.0.4",
        file,
        &["--max-upload-rate", "2MiB/s"],
    )
    .await;
    let _trickler =
        PeerProc::start(&tracker, "127.0.0.5", file, &["--max-upload-rate", "4096"]).await;
    let (relay_port, flipped, relay_connections) =
        corrupting_relay("127.0.0.6", healthy.addr.clone());
    let relay_id =
        register_holder(&tracker, "127.0.0.6", relay_port, &data, data.len() as u64).await;
    let relay_addr = format!("127.0.0.6:{relay_port}");

    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap().to_owned();
    let get = peer_spawn(
        &tracker,
        &[
            "get",
            &hash_hex(&data),
            "--out",
            &od,
            "--stall-timeout",
            "2s",
            "--json",
        ],
    );
    wait_for("the peer to be frozen to serve a block", || async {
        !served(&frozen.log_text()).is_empty()
    })
    .await;
    frozen.signal("STOP");
    wait_for("the peer to be killed to serve a block", || async {
        !served(&killed.log_text()).is_empty()
    })
    .await;
    killed.signal("KILL");
    killed.wait_exit().await;

    let out = get.wait_with_output().await.unwrap();
    frozen.signal("CONT");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(std::fs::read(dl.path().join("swarm.bin")).unwrap(), data);
    assert!(flipped.load(Ordering::Relaxed) > 0);
    // Dropped for what it sent, it is not connected to again.
    assert_eq!(relay_connections.load(Ordering::Relaxed), 1);

    // The corrupting source is named: address, peer id, block.
    let named = format!("source {relay_addr} ({relay_id}) dropped: sent corrupt data: block ");
    assert!(stderr.contains(&named), "{stderr}");
    let json = summary(&out);
    let relay = source_at(&json, &relay_addr);
    assert!(
        relay["dropped"]
            .as_str()
            .unwrap()
            .starts_with("sent corrupt data: block "),
        "{json:#}"
    );
    assert_eq!(relay["bytes"], 0, "nothing the relay sent was used");
    let used: u64 = json["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(used, data.len() as u64);
    assert!(source_at(&json, &healthy.addr)["bytes"].as_u64().unwrap() > 0);
}

/// A part-file name planted as a symbolic link in the download folder (say,
/// by another user of a shared folder) is refused; its target is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_part_file_link_is_refused() {
    let tracker = Tracker::start().await;
    let data = bytes(2 * MIB + 1, 32);
    let _a = PeerProc::start(&tracker, "127.0.0.2", &[("swarm.bin", &data)], &[]).await;
    let dl = tempfile::tempdir().unwrap();
    let out_dir = dl.path().join("Downloads");
    std::fs::create_dir(&out_dir).unwrap();
    let victim = dl.path().join("victim.txt");
    std::fs::write(&victim, b"keep me").unwrap();
    let planted = out_dir.join(sbcftp_peer::transfer::part::part_name(
        "swarm.bin",
        &content_hash(&data),
    ));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();

    let out = peer_cmd(
        &tracker,
        &["get", "swarm.bin", "--out", out_dir.to_str().unwrap()],
    )
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("refusing to write") && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert!(!out_dir.join("swarm.bin").exists());
    assert!(planted.symlink_metadata().unwrap().file_type().is_symlink());
}

/// Thirty registrations claim the content is one byte long (half of them
/// answer with a one-byte outline that "merges", half are not there at
/// all); one honest peer has it. The download takes the size from the
/// outline it can prove, and succeeds in one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_holders_lying_about_the_size_and_one_honest() {
    let tracker = Tracker::start_with("1", "600", "1").await;
    let data = bytes(3 * MIB + 17, 33);
    let hash = content_hash(&data);
    let honest = PeerProc::start(&tracker, "127.0.0.2", &[("swarm.bin", &data)], &[]).await;
    for n in 0..30 {
        let ip = format!("127.0.0.{}", 10 + n);
        let port = if n % 2 == 0 {
            size_liar(&ip, hash)
        } else {
            // Nothing listens there.
            let l = TcpListener::bind((ip.as_str(), 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        register_holder(&tracker, &ip, port, &data, 1).await;
    }
    // The tracker's one-content answer is the size most holders claim: the
    // liars'. The downloader asks for every claimed size.
    let listed = tracker.client.content(&hash).await.unwrap();
    assert_eq!((listed.size, listed.peers.len()), (1, 30));
    let all = tracker.client.holders(&hash).await.unwrap();
    assert_eq!(all.peers.len(), 31);

    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap();
    let out = peer_cmd(&tracker, &["get", &hash.to_string(), "--out", od, "--json"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(std::fs::read(dl.path().join("swarm.bin")).unwrap(), data);
    let json = summary(&out);
    assert_eq!(json["size"], data.len() as u64);
    assert_eq!(json["sources"].as_array().unwrap().len(), 31);
    assert_eq!(source_at(&json, &honest.addr)["bytes"], data.len() as u64);
}
