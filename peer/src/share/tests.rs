//! Unit tests of the share folder scan and hash cache, kept in their own
//! file so that `share/mod.rs` holds only the share itself.

#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn scan_shares_regular_files_and_caches_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("DistShared");
    std::fs::create_dir(&share).unwrap();
    let big: Vec<u8> = (0..(3u32 << 20) + 5).map(|i| (i % 251) as u8).collect();
    std::fs::write(share.join("big.bin"), &big).unwrap();
    std::fs::write(share.join("a.txt"), b"a").unwrap();
    std::fs::create_dir(share.join("sub")).unwrap();
    std::os::unix::fs::symlink(share.join("a.txt"), share.join("link-inside")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", share.join("link-outside")).unwrap();
    std::os::unix::fs::symlink(share.join("nowhere"), share.join("broken")).unwrap();
    std::fs::write(share.join(format!(".x{PART_SUFFIX}")), b"partial").unwrap();
    let fifo_ok = std::process::Command::new("mkfifo")
        .arg(share.join("fifo"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);

    let s1 = Share::new(&share, None).unwrap();
    let (idx, _) = s1.scan().unwrap();
    let names: Vec<&str> = idx.files().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["a.txt", "big.bin", "link-inside"]);
    assert_eq!(idx.hashed(), 3);
    let f = idx
        .by_hash(&ContentHash::from_bytes(*blake3::hash(&big).as_bytes()))
        .unwrap();
    assert_eq!(f.name, "big.bin");
    assert_eq!(f.outline.block_count(), 4);
    let skipped: Vec<&String> = idx.skipped().collect();
    assert!(
        skipped.iter().any(|s| s.contains("\"sub\": subfolders")),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("\"link-outside\": symlink leads outside")),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("\"broken\": broken symlink")),
        "{skipped:?}"
    );
    if fifo_ok {
        assert!(
            skipped
                .iter()
                .any(|s| s.contains("\"fifo\": not a regular file")),
            "{skipped:?}"
        );
    }

    // A rescan with nothing changed hashes nothing.
    let (idx2, _) = s1.scan().unwrap();
    assert_eq!(idx2.hashed(), 0);

    // A restart (a new Share on the same folder) re-hashes nothing unchanged...
    let s2 = Share::new(&share, None).unwrap();
    let (idx3, _) = s2.scan().unwrap();
    assert_eq!(idx3.hashed(), 0);
    assert_eq!(idx3.entries(), idx.entries());

    // ...but a changed file is hashed again, and the diff says so.
    std::fs::write(share.join("a.txt"), b"changed").unwrap();
    std::fs::remove_file(share.join("link-inside")).unwrap();
    let (idx4, old) = s2.scan().unwrap();
    assert_eq!(idx4.hashed(), 1);
    let (add, remove) = idx4.diff(&old);
    assert_eq!(add.len(), 1);
    assert_eq!(add[0].name, "a.txt");
    assert_eq!(
        add[0].hash.to_string(),
        blake3::hash(b"changed").to_hex().as_str()
    );
    assert_eq!(remove, ["link-inside"]);

    // The served file is re-checked: a file changed behind the index's back is refused.
    let f = idx3.files().find(|f| f.name == "a.txt").unwrap();
    assert!(f.open_checked().unwrap().is_none());
    let f = idx4.files().find(|f| f.name == "a.txt").unwrap();
    assert!(f.open_checked().unwrap().is_some());
}
