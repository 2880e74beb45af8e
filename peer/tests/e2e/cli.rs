//! The interactive and signal-driven parts of the CLI: `browse`, Ctrl-C
//! during `get`, and the registration key of a private tracker.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::helpers::*;

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_lists_picks_confirms_and_downloads() {
    let tracker = Tracker::start().await;
    let one = bytes(1000, 21);
    let two = bytes(2 * MIB + 1, 22);
    let _a = PeerProc::start(
        &tracker,
        "127.0.0.2",
        &[("one.txt", &one), ("two.bin", &two)],
        &[],
    )
    .await;
    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap();

    // Which number is two.bin? The list is the tracker's order; find it from `files --json`.
    let out = peer_cmd(&tracker, &["files", "--json"]).await;
    let list: sbcftp_api::ContentList = serde_json::from_slice(&out.stdout).unwrap();
    let index = list
        .files
        .iter()
        .position(|c| c.names == ["two.bin"])
        .unwrap()
        + 1;

    // A bad number is asked again, then the pick, then Enter (= yes).
    let mut child = tokio::process::Command::new(PEER_BIN)
        .env_clear()
        .args(["--tracker", &tracker.url, "browse", "--out", od])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("99\n{index}\n\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("#") && stdout.contains("one.txt") && stdout.contains("two.bin"),
        "{stdout}"
    );
    assert!(
        stdout.contains("please enter a number from 1 to 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Download two.bin (2.0 MiB) from 1 peer(s)? [Y/n]"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(dl.path().join("two.bin")).unwrap(), two);

    // "n" downloads nothing.
    let mut child = tokio::process::Command::new(PEER_BIN)
        .env_clear()
        .args(["--tracker", &tracker.url, "browse", "one", "--out", od])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"1\nn\n").await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("not downloading"));
    assert!(!dl.path().join("one.txt").exists());
}

/// Ctrl-C (SIGINT) mid-download keeps the verified blocks; the next run
/// re-verifies them and fetches only the missing ones: the bytes the source
/// served to the second run are exactly the blocks the part file lacked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_keeps_the_verified_part_and_the_next_run_resumes() {
    let tracker = Tracker::start().await;
    let data = bytes(6 * MIB + 9, 23);
    let a = PeerProc::start(
        &tracker,
        "127.0.0.2",
        &[("slow.bin", &data)],
        &["--max-upload-rate", "1MiB/s"],
    )
    .await;
    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap().to_owned();
    let part = dl.path().join(sbcftp_peer::transfer::part::part_name(
        "slow.bin",
        &content_hash(&data),
    ));

    let get = peer_spawn(&tracker, &["get", "slow.bin", "--out", &od]);
    wait_for("verified blocks in the part file", || async {
        verified_blocks_now(&part, &data) >= 2
    })
    .await;
    let pid = get.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = get.wait_with_output().await.unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("interrupted") && stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    // Sizes a person reads: "1.0 MiB of 6.0 MiB verified", not byte counts.
    assert!(stderr.contains(" MiB of 6.0 MiB verified in "), "{stderr}");
    let kept = verified_in_part(&part, &data);
    assert!(
        kept >= MIB as u64 && kept < data.len() as u64,
        "kept {kept}"
    );
    assert!(!dl.path().join("slow.bin").exists());
    let (good, _) = part_blocks(&part, &data);

    // The first run's connections, to tell its READs from the second run's.
    let before: std::collections::HashSet<u16> =
        served(&a.log_text()).iter().map(|s| s.0).collect();
    let out = peer_cmd(&tracker, &["get", "slow.bin", "--out", &od, "--json"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("resuming:"), "{stderr}");
    assert_eq!(std::fs::read(dl.path().join("slow.bin")).unwrap(), data);
    let json = summary(&out);
    assert_eq!(json["status"], "downloaded");
    assert_eq!(json["resumed"], kept);
    assert_eq!(json["received"], data.len() as u64 - kept);

    // Count the bytes served to the second run: only the missing blocks.
    let second: Vec<(u64, u64)> = served(&a.log_text())
        .into_iter()
        .filter(|s| !before.contains(&s.0))
        .map(|s| (s.1, s.2))
        .collect();
    let total: u64 = second.iter().map(|(a, b)| b - a).sum();
    assert_eq!(total, data.len() as u64 - kept, "{second:?}");
    for (start, end) in &second {
        let block = (*start / MIB as u64) as usize;
        assert!(
            !good[block],
            "block {block} ({start}..{end}) was fetched again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_tracker_needs_the_registration_key() {
    let tracker = Tracker::start_args("1", "3", "1", &["--registration-key", "s3cret"]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"f").unwrap();

    // Without the key: a clear error, non-zero exit.
    let out = peer_cmd(
        &tracker,
        &[
            "serve",
            "--share",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.2:0",
        ],
    )
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refused the registration"), "{stderr}");

    // With the key (flag form): registered.
    let _p = PeerProc::start(
        &tracker,
        "127.0.0.3",
        &[("g", b"g")],
        &["--registration-key", "s3cret"],
    )
    .await;

    // With the key in the peer's own variable: registered. The tracker's
    // variables of the same meaning are not the peer's: set to values that
    // would fail, they change nothing.
    let _q = PeerProc::start_env(
        &tracker,
        "127.0.0.4",
        &[("h", b"h")],
        &[],
        &[
            ("SBCFTP_PEER_REGISTRATION_KEY", "s3cret"),
            ("SBCFTP_REGISTRATION_KEY", "wrong"),
            ("SBCFTP_LISTEN", "not an address"),
            ("SBCFTP_MAX_CONNECTIONS", "not a number"),
        ],
    )
    .await;

    // Reading the index needs the key as well.
    let out = peer_cmd(&tracker, &["files"]).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("private"), "{stderr}");
    let out = peer_cmd(&tracker, &["--registration-key", "s3cret", "files"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains('g') && stdout.contains('h'), "{stdout}");
    let out = peer_cmd(&tracker, &["--registration-key", "s3cret", "peers"]).await;
    assert!(out.status.success(), "{}", text(&out).1);
    // A download by hash prefix looks the hash up with the key too.
    let out_dir = tempfile::tempdir().unwrap();
    let prefix = blake3::hash(b"g").to_hex()[..12].to_owned();
    let out = peer_cmd(
        &tracker,
        &[
            "--registration-key",
            "s3cret",
            "get",
            &prefix,
            "--out",
            out_dir.path().to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(std::fs::read(out_dir.path().join("g")).unwrap(), b"g");
}
