//! The whole life of a peer through the API, and the cases that must work.

use reqwest::{Method, StatusCode};
use sbcftp_api::{Content, ContentList, FilesUpdated, HeartbeatResponse, Peer, PeerList};
use serde_json::json;

use crate::helpers::{Backend, client_from, file, spawn_app};

crate::backend_tests!(full_lifecycle, big_registration, case_sensitive_names);

async fn full_lifecycle(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    let from2 = client_from("127.0.0.2");
    let a = file("song.mp3", "song bytes");
    let b = file("notes.txt", "notes");
    let peer = app
        .register_with(&from2, 44444, vec![a.clone(), b.clone()])
        .await;
    assert_eq!(peer.addr, "127.0.0.2:44444");
    assert_eq!(peer.peer_id.to_string().len(), 16);
    assert_eq!(peer.token.len(), 64);
    assert_eq!((peer.heartbeat_interval_secs, peer.ttl_secs), (15, 45));

    // A second peer shares the same song under another name.
    let other = app
        .register_with(
            &client_from("127.0.0.3"),
            5000,
            vec![file("Track 01.mp3", "song bytes")],
        )
        .await;
    assert_eq!(other.addr, "127.0.0.3:5000");

    let shown: Peer = app
        .client
        .get(app.url(&format!("/api/v1/peers/{}", peer.peer_id)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown.addr, "127.0.0.2:44444");
    assert_eq!(shown.file_count, 2);
    let files = app.peer_files(&peer.peer_id, 1).await;
    assert_eq!(files, vec![b.clone(), a.clone()]);
    assert!(
        shown.registered_at.ends_with('Z'),
        "{}",
        shown.registered_at
    );

    let list: PeerList = app
        .client
        .get(app.url("/api/v1/peers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.peers.len(), 2);
    assert_eq!(list.next_cursor, None);

    // One row per content, with every holder.
    let all: ContentList = app
        .client
        .get(app.url("/api/v1/files"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.files.len(), 2);
    let song = all.files.iter().find(|c| c.hash == a.hash).unwrap();
    assert_eq!(
        song.names,
        vec!["Track 01.mp3".to_owned(), "song.mp3".to_owned()]
    );
    assert_eq!(song.size, a.size);
    assert_eq!(song.peers.len(), 2);

    let one: Content = app
        .client
        .get(app.url(&format!("/api/v1/files/{}", a.hash)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(&one, song);
    let by_hash: ContentList = app
        .client
        .get(app.url(&format!("/api/v1/files?hash={}", b.hash)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_hash.files.len(), 1);
    assert_eq!(by_hash.files[0].names, vec!["notes.txt".to_owned()]);

    // Heartbeat.
    let r = app
        .authed(
            Method::POST,
            &format!("/api/v1/peers/{}/heartbeat", peer.peer_id),
            &peer.token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let hb: HeartbeatResponse = r.json().await.unwrap();
    assert_eq!((hb.heartbeat_interval_secs, hb.ttl_secs), (15, 45));

    // PATCH: remove one, add one, overwrite one by name.
    let c = file("video.mkv", "video");
    let a2 = file("song.mp3", "song bytes v2");
    let r = app
        .authed(
            Method::PATCH,
            &format!("/api/v1/peers/{}/files", peer.peer_id),
            &peer.token,
        )
        .json(&json!({"add": [c, a2], "remove": ["notes.txt", "not-there"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<FilesUpdated>().await.unwrap().file_count, 2);
    let shown: Peer = app
        .client
        .get(app.url(&format!("/api/v1/peers/{}", peer.peer_id)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<_> = app
        .peer_files(&peer.peer_id, 100)
        .await
        .into_iter()
        .map(|f| (f.name, f.hash))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![(a2.name.clone(), a2.hash), (c.name.clone(), c.hash)]
    );
    assert_eq!(shown.file_count, 2);
    let r = app
        .client
        .get(app.url(&format!("/api/v1/files/{}", b.hash)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // PUT replaces everything.
    let r = app
        .authed(
            Method::PUT,
            &format!("/api/v1/peers/{}/files", peer.peer_id),
            &peer.token,
        )
        .json(&json!({"files": [b]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<FilesUpdated>().await.unwrap().file_count, 1);
    let all: ContentList = app
        .client
        .get(app.url("/api/v1/files"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut hashes: Vec<_> = all.files.iter().map(|c| c.hash).collect();
    hashes.sort();
    let mut want = vec![a.hash, b.hash];
    want.sort();
    assert_eq!(hashes, want, "the other peer's song and this peer's notes");

    // Leave.
    let r = app
        .authed(
            Method::DELETE,
            &format!("/api/v1/peers/{}", peer.peer_id),
            &peer.token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .client
        .get(app.url(&format!("/api/v1/peers/{}", peer.peer_id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.heartbeat(&peer).await, StatusCode::NOT_FOUND);
    let all: ContentList = app
        .client
        .get(app.url("/api/v1/files"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.files.len(), 1, "only the other peer's song is left");
    assert_eq!(all.files[0].peers.len(), 1);
    assert_eq!(all.files[0].peers[0].peer_id, other.peer_id);
    app.stop().await.unwrap();
}

async fn big_registration(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    let files: Vec<_> = (0..10_000)
        .map(|i| file(&format!("file-{i:05}.bin"), &format!("content {i}")))
        .collect();
    let peer = app.register(44444, files).await;
    let shown: Peer = app
        .client
        .get(app.url(&format!("/api/v1/peers/{}", peer.peer_id)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown.file_count, 10_000);
    // A page at a time, never the whole list in one answer.
    let files = app.peer_files(&peer.peer_id, 1000).await;
    assert_eq!(files.len(), 10_000);
    assert!(files.windows(2).all(|w| w[0].name < w[1].name));
    let (s, page) = app
        .get_json(&format!("/api/v1/peers/{}/files?limit=1001", peer.peer_id))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    let (s, page) = app
        .get_json(&format!("/api/v1/peers/{}/files?cursor=zz", peer.peer_id))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    // Replace with another large list, then shrink it.
    let files: Vec<_> = (0..5_000)
        .map(|i| file(&format!("other-{i:05}.bin"), &format!("other {i}")))
        .collect();
    let r = app
        .authed(
            Method::PUT,
            &format!("/api/v1/peers/{}/files", peer.peer_id),
            &peer.token,
        )
        .json(&json!({ "files": files }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<FilesUpdated>().await.unwrap().file_count, 5_000);
    let remove: Vec<_> = (0..1_200).map(|i| format!("other-{i:05}.bin")).collect();
    let r = app
        .authed(
            Method::PATCH,
            &format!("/api/v1/peers/{}/files", peer.peer_id),
            &peer.token,
        )
        .json(&json!({ "remove": remove }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<FilesUpdated>().await.unwrap().file_count, 3_800);
    app.stop().await.unwrap();
}

async fn case_sensitive_names(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    // Names differing only in case (or in Unicode) are distinct on every backend.
    let peer = app
        .register(
            1,
            vec![
                file("Readme", "1"),
                file("README", "2"),
                file("readme", "3"),
                file("ünï 名前.txt", "4"),
            ],
        )
        .await;
    let shown: Peer = app
        .client
        .get(app.url(&format!("/api/v1/peers/{}", peer.peer_id)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown.file_count, 4);
    let mut names: Vec<_> = app
        .peer_files(&peer.peer_id, 1)
        .await
        .into_iter()
        .map(|f| f.name)
        .collect();
    names.sort();
    assert_eq!(names, vec!["README", "Readme", "readme", "ünï 名前.txt"]);
    app.stop().await.unwrap();
}
