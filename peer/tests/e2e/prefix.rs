//! Short hashes: the table's HASH column, and 8+ hex digits of a hash, name
//! a content for `get`, `files` and `browse`; an ambiguous prefix lists the
//! candidates.

use std::collections::HashMap;

use crate::helpers::*;

/// Two different small contents whose hashes share their first 8 hex
/// digits (a birthday search: about 2^16 tries).
fn colliding_pair() -> (Vec<u8>, Vec<u8>) {
    let mut seen: HashMap<[u8; 4], u64> = HashMap::new();
    for seed in 0u64.. {
        let data = seed.to_le_bytes();
        let h = blake3::hash(&data);
        let key: [u8; 4] = h.as_bytes()[..4].try_into().unwrap();
        if let Some(other) = seen.insert(key, seed) {
            return (other.to_le_bytes().to_vec(), data.to_vec());
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_prefixes_name_contents() {
    let (a, b) = colliding_pair();
    let (ha, hb) = (hash_hex(&a), hash_hex(&b));
    let common = &ha[..8];
    assert_eq!(common, &hb[..8]);
    let c = b"the third file\n".to_vec();
    let tracker = Tracker::start().await;
    let _p = PeerProc::start(
        &tracker,
        "127.0.0.2",
        &[("a.bin", &a), ("b.bin", &b), ("c.txt", &c)],
        &[],
    )
    .await;
    let dl = tempfile::tempdir().unwrap();
    let od = dl.path().to_str().unwrap();

    // The short hash the table shows downloads that content.
    let out = peer_cmd(&tracker, &["files"]).await;
    let (table, _) = text(&out);
    let row = table.lines().find(|l| l.starts_with("c.txt")).unwrap();
    let short = row.split_whitespace().nth(3).unwrap().to_owned();
    assert!(
        short.len() >= 12 && hash_hex(&c).starts_with(&short),
        "{table}"
    );
    let out = peer_cmd(&tracker, &["get", &short, "--out", od]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(std::fs::read(dl.path().join("c.txt")).unwrap(), c);

    // Eight shared digits: ambiguous, both candidates listed in full.
    let out = peer_cmd(&tracker, &["get", common, "--out", od]).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "hash prefix {common} is ambiguous; give more digits of one of these:"
        )),
        "{stderr}"
    );
    assert!(stderr.contains(&ha) && stderr.contains(&hb), "{stderr}");

    // `files` finds both by the prefix, upper case too.
    let out = peer_cmd(&tracker, &["files", &common.to_ascii_uppercase()]).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("a.bin") && stdout.contains("b.bin"),
        "{stdout}"
    );
    assert!(!stdout.contains("c.txt"), "{stdout}");

    // Enough digits to tell them apart.
    let out = peer_cmd(&tracker, &["get", &ha[..20], "--out", od]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(std::fs::read(dl.path().join("a.bin")).unwrap(), a);

    // A prefix nobody has.
    let absent = if ha.starts_with("00000000") {
        "ffffffff"
    } else {
        "00000000"
    };
    let out = peer_cmd(&tracker, &["get", absent, "--out", od]).await;
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains(&format!(
            "no shared content has a hash starting with {absent} or is named so"
        )),
        "{stderr}"
    );
}
