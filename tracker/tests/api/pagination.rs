//! Cursor pagination (search: `search.rs`).

use std::collections::{BTreeMap, BTreeSet};

use sbcftp_api::{ContentHash, ContentList, PeerId, PeerList};

use crate::helpers::{Backend, TestApp, file, spawn_app};

crate::backend_tests!(walk_every_page);

async fn walk_files(app: &TestApp, query: &str, limit: u32) -> Vec<sbcftp_api::Content> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/api/v1/files?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: ContentList = app
            .client
            .get(app.url(&path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(page.files.len() <= limit as usize);
        out.extend(page.files);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("pagination does not end");
}

async fn walk_every_page(backend: Backend) {
    let Some(app) = spawn_app(
        backend,
        &["--max-page-size", "10", "--default-page-size", "4"],
    )
    .await
    else {
        return;
    };
    // 3 peers, 25 distinct contents, some held by several peers.
    let mut expected: BTreeMap<ContentHash, BTreeSet<PeerId>> = BTreeMap::new();
    let mut peers = Vec::new();
    for p in 0..3 {
        let files: Vec<_> = (0..12)
            .map(|i| file(&format!("p{p}-{i}.dat"), &format!("c{}", i + p * 6)))
            .collect();
        let reg = app.register(1000 + p, files.clone()).await;
        for f in &files {
            expected.entry(f.hash).or_default().insert(reg.peer_id);
        }
        peers.push(reg.peer_id);
    }
    assert_eq!(expected.len(), 24);
    for limit in [1, 7, 10] {
        let all = walk_files(&app, "", limit).await;
        let hashes: Vec<_> = all.iter().map(|c| c.hash).collect();
        let mut sorted = hashes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(hashes, sorted, "pages are in hash order without duplicates");
        let got: BTreeMap<ContentHash, BTreeSet<PeerId>> = all
            .into_iter()
            .map(|c| (c.hash, c.peers.into_iter().map(|p| p.peer_id).collect()))
            .collect();
        assert_eq!(got, expected, "limit {limit}");
    }
    // Default page size.
    let page: ContentList = app
        .client
        .get(app.url("/api/v1/files"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page.files.len(), 4);
    assert!(page.next_cursor.is_some());

    // Peers.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: PeerList = app
            .client
            .get(app.url(&format!("/api/v1/peers?limit=2&cursor={cursor}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(page.peers.len() <= 2);
        seen.extend(page.peers.into_iter().map(|p| p.peer_id));
        match page.next_cursor {
            Some(c) => cursor = c,
            None => break,
        }
    }
    peers.sort();
    assert_eq!(seen, peers);
    app.stop().await.unwrap();
}
