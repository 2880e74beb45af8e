//! Search by words, and honest listings, on every backend.
//!
//! What search means (README "Search"): every query word must start a word
//! of a name, in any order, after NFKC and lowercasing; words are runs of
//! letters and digits. Listings group holders by (hash, size) and list each
//! holder peer once.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use sbcftp_api::{
    Content, ContentHash, ContentList, FileEntry, FileName, PatchFilesRequest, PeerId,
    RegisterResponse, ReplaceFilesRequest,
};

use crate::helpers::{
    Backend, TestApp, TestDb, client_from, eventually, expect_problem, file, spawn_app,
};

crate::backend_tests!(
    search_by_words,
    search_pages_in_hash_order,
    search_follows_file_changes,
    trailing_spaces_make_distinct_names,
    holders_grouped_by_size_and_listed_once,
    a_flood_of_holders_rotates,
    word_rows_go_with_their_files,
    large_registrations_are_found_at_once,
);

/// `pairs` as a URL query string, every byte but the unreserved ones
/// percent-encoded.
fn query_string(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Every page of `/files` for the query `q` (with `extra` query pairs).
async fn search_all(app: &TestApp, q: &str, limit: u32, extra: &[(&str, &str)]) -> Vec<Content> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut query: Vec<(&str, String)> =
            vec![("q", q.to_owned()), ("limit", limit.to_string())];
        query.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let r = app
            .client
            .get(app.url(&format!("/api/v1/files{}", query_string(&query))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "q={q:?}");
        let page: ContentList = r.json().await.unwrap();
        out.extend(page.files);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("pagination does not end");
}

/// A PUT or PATCH of the peer's files; the status.
async fn change(
    app: &TestApp,
    peer: &RegisterResponse,
    method: Method,
    body: &impl serde::Serialize,
) -> StatusCode {
    let path = format!("/api/v1/peers/{}/files", peer.peer_id);
    let r = app.authed(method, &path, &peer.token).json(body);
    r.send().await.unwrap().status()
}

/// The peer leaves; the status.
async fn leave(app: &TestApp, peer: &RegisterResponse) -> StatusCode {
    let path = format!("/api/v1/peers/{}", peer.peer_id);
    let r = app.authed(Method::DELETE, &path, &peer.token);
    r.send().await.unwrap().status()
}

/// The sorted names of every content a query finds.
async fn names(app: &TestApp, q: &str) -> Vec<String> {
    let mut v: Vec<String> = search_all(app, q, 100, &[])
        .await
        .into_iter()
        .flat_map(|c| c.names)
        .map(String::from)
        .collect();
    v.sort();
    v
}

async fn search_by_words(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    app.register(
        1,
        vec![
            file("concert_budget 2014 (00042).mkv", "cb"),
            file("\u{c4}rger im B\u{fc}ro.txt", "a1"),
            file("A\u{308}rger zwei.txt", "a2"),
            file("50%_off.txt", "p"),
            file("notes.txt", "n"),
            file("quokka-rare.jpg", "q"),
            file("ＦＵＬＬ width.txt", "fw"),
        ],
    )
    .await;
    app.register(
        2,
        vec![file("Budget CONCERT.pdf", "bc"), file("concerts.txt", "cs")],
    )
    .await;
    let both = ["Budget CONCERT.pdf", "concert_budget 2014 (00042).mkv"];
    // A rare word.
    assert_eq!(names(&app, "quokka").await, ["quokka-rare.jpg"]);
    // Two words, in either order, any case, as prefixes.
    assert_eq!(names(&app, "concert budget").await, both);
    assert_eq!(names(&app, "budget concert").await, both);
    assert_eq!(names(&app, "BUD con").await, both);
    assert_eq!(
        names(&app, "conc").await,
        [both[0], both[1], "concerts.txt"]
    );
    // Words, not substrings: "ert" starts no word.
    assert!(names(&app, "ert").await.is_empty());
    // Digits are words; punctuation separates.
    assert_eq!(names(&app, "00042").await, [both[1]]);
    assert_eq!(names(&app, "(2014)").await, [both[1]]);
    assert_eq!(names(&app, "50 off").await, ["50%_off.txt"]);
    assert_eq!(names(&app, "off_50!").await, ["50%_off.txt"]);
    assert!(names(&app, "0 off").await.is_empty());
    // Unicode: composed and decomposed names, found by either spelling in
    // any case; diacritics count.
    let aerger = ["A\u{308}rger zwei.txt", "\u{c4}rger im B\u{fc}ro.txt"];
    assert_eq!(names(&app, "\u{e4}rger").await, aerger);
    assert_eq!(names(&app, "\u{c4}RGER").await, aerger);
    assert_eq!(names(&app, "a\u{308}rg").await, aerger);
    assert!(names(&app, "arger").await.is_empty());
    assert_eq!(names(&app, "b\u{fc}ro").await, [aerger[1]]);
    assert_eq!(names(&app, "full").await, ["ＦＵＬＬ width.txt"]);
    assert!(names(&app, "nothing").await.is_empty());
    // An empty q is no filter.
    assert_eq!(names(&app, "").await.len(), 9);
    // A query of only punctuation, or of too many words: 400 saying why.
    for (q, why) in [
        ("%_!", "letter or digit"),
        ("...", "letter or digit"),
        ("a b c d e f g h i", "at most 8"),
    ] {
        let r = app
            .client
            .get(app.url(&format!(
                "/api/v1/files{}",
                query_string(&[("q", q.to_owned())])
            )))
            .send()
            .await
            .unwrap();
        let p = expect_problem(r, 400, q).await;
        assert!(p.detail.unwrap_or_default().contains(why), "{q}");
    }
    // With a hash filter, the words still decide.
    let cb = file("x", "cb").hash.to_string();
    assert_eq!(search_all(&app, "bud", 10, &[("hash", &cb)]).await.len(), 1);
    assert!(
        search_all(&app, "quokka", 10, &[("hash", &cb)])
            .await
            .is_empty()
    );
    app.stop().await.unwrap();
}

async fn search_pages_in_hash_order(backend: Backend) {
    let Some(app) = spawn_app(
        backend,
        &["--max-page-size", "10", "--default-page-size", "10"],
    )
    .await
    else {
        return;
    };
    // 80 matching contents spread over every bucket, 40 that do not match.
    let files: Vec<FileEntry> = (0..80)
        .map(|i| file(&format!("common item {i}.dat"), &format!("m{i}")))
        .chain((0..40).map(|i| file(&format!("other item {i}.dat"), &format!("o{i}"))))
        .collect();
    app.register(1, files.clone()).await;
    for (q, want) in [
        ("common", 80),
        ("item common", 80),
        ("common 1", 11),
        ("it", 120),
    ] {
        let expected: BTreeSet<ContentHash> = files
            .iter()
            .filter(|f| {
                let q = sbcftp_api::search::query_words(q).unwrap();
                sbcftp_api::search::matches(&f.name, &q)
            })
            .map(|f| f.hash)
            .collect();
        assert_eq!(expected.len(), want, "{q}");
        for limit in [1, 7, 10] {
            let got: Vec<ContentHash> = search_all(&app, q, limit, &[])
                .await
                .into_iter()
                .map(|c| c.hash)
                .collect();
            let mut sorted = got.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(got, sorted, "{q}: hash order without duplicates");
            assert_eq!(
                got.into_iter().collect::<BTreeSet<_>>(),
                expected,
                "{q} limit {limit}"
            );
        }
    }
    app.stop().await.unwrap();
}

async fn search_follows_file_changes(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    let a = app
        .register(
            1,
            vec![file("alpha one.txt", "a1"), file("alpha two.txt", "a2")],
        )
        .await;
    let b = app.register(2, vec![file("alpha three.txt", "a3")]).await;
    assert_eq!(names(&app, "alpha").await.len(), 3);
    // PATCH: remove one, add one.
    assert_eq!(
        change(
            &app,
            &a,
            Method::PATCH,
            &PatchFilesRequest {
                add: vec![file("beta four.txt", "b4")],
                remove: vec![FileName::new("alpha one.txt").unwrap()],
            }
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        names(&app, "alpha").await,
        ["alpha three.txt", "alpha two.txt"]
    );
    assert_eq!(names(&app, "beta").await, ["beta four.txt"]);
    // PUT: the whole list replaced.
    assert_eq!(
        change(
            &app,
            &a,
            Method::PUT,
            &ReplaceFilesRequest {
                files: vec![file("gamma.txt", "g")],
            }
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(names(&app, "alpha").await, ["alpha three.txt"]);
    assert!(names(&app, "beta").await.is_empty());
    assert_eq!(names(&app, "gamma").await, ["gamma.txt"]);
    // The peer leaves: its words go with it; the same names can come back.
    assert_eq!(leave(&app, &b).await, StatusCode::NO_CONTENT);
    assert!(names(&app, "alpha").await.is_empty());
    app.register(3, vec![file("alpha three.txt", "a3")]).await;
    assert_eq!(names(&app, "alpha three").await, ["alpha three.txt"]);
    app.stop().await.unwrap();
}

async fn trailing_spaces_make_distinct_names(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    // On MariaDB a PAD SPACE collation made these a duplicate key.
    let peer = app
        .register(
            1,
            vec![
                file("song", "s1"),
                file("song ", "s2"),
                file("song  ", "s3"),
            ],
        )
        .await;
    let (s, shown) = app
        .get_json(&format!("/api/v1/peers/{}", peer.peer_id))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shown["file_count"], 3);
    let found = names(&app, "song").await;
    assert_eq!(found, ["song", "song ", "song  "]);
    // Removing one removes only that one.
    assert_eq!(
        change(
            &app,
            &peer,
            Method::PATCH,
            &PatchFilesRequest {
                add: vec![],
                remove: vec![FileName::new("song ").unwrap()],
            }
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(names(&app, "song").await, ["song", "song  "]);
    app.stop().await.unwrap();
}

/// `n` peers from distinct addresses, each sharing `files`.
async fn peers_sharing(
    app: &TestApp,
    n: u16,
    first_port: u16,
    files: Vec<FileEntry>,
) -> Vec<PeerId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let from = client_from(&format!("127.0.{}.{}", 1 + i / 200, 1 + i % 200));
        ids.push(
            app.register_with(&from, first_port + i, files.clone())
                .await
                .peer_id,
        );
    }
    ids
}

async fn holders_grouped_by_size_and_listed_once(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    let real = FileEntry {
        name: FileName::new("movie.mkv").unwrap(),
        size: 3 << 20,
        hash: file("x", "movie").hash,
    };
    // The honest peer holds it under two names: listed once, both names shown.
    let honest = app
        .register_with(
            &client_from("127.0.0.2"),
            9000,
            vec![
                real.clone(),
                FileEntry {
                    name: FileName::new("movie copy.mkv").unwrap(),
                    ..real.clone()
                },
            ],
        )
        .await;
    // 30 peers claim the same hash is 1 byte.
    let liar = FileEntry {
        size: 1,
        name: FileName::new("movie.mkv").unwrap(),
        ..real.clone()
    };
    let fakes = peers_sharing(&app, 30, 10000, vec![liar]).await;
    let hash = real.hash.to_string();
    for listed in [
        search_all(&app, "movie", 100, &[]).await,
        search_all(&app, "", 100, &[("hash", &hash)]).await,
    ] {
        assert_eq!(listed.len(), 2, "one entry per (hash, size)");
        let mut sizes: Vec<u64> = listed.iter().map(|c| c.size).collect();
        sizes.sort();
        assert_eq!(sizes, [1, 3 << 20]);
        let honest_entry = listed.iter().find(|c| c.size == 3 << 20).unwrap();
        let ids: Vec<PeerId> = honest_entry.peers.iter().map(|p| p.peer_id).collect();
        assert_eq!(ids, [honest.peer_id], "the honest holder, once");
        let names: Vec<&str> = honest_entry.names.iter().map(|n| n.as_str()).collect();
        assert_eq!(names, ["movie copy.mkv", "movie.mkv"]);
        let fake_entry = listed.iter().find(|c| c.size == 1).unwrap();
        let got: BTreeSet<PeerId> = fake_entry.peers.iter().map(|p| p.peer_id).collect();
        assert_eq!(got, fakes.iter().copied().collect::<BTreeSet<_>>());
        assert_eq!(fake_entry.peers.len(), 30);
    }
    app.stop().await.unwrap();
}

async fn a_flood_of_holders_rotates(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    // 130 holders, 100 shown: which ones changes from request to request,
    // so a flood cannot pin the same 100.
    let all = peers_sharing(&app, 130, 10000, vec![file("popular.iso", "pop")]).await;
    let hash = file("x", "pop").hash;
    let mut seen: BTreeSet<PeerId> = BTreeSet::new();
    for _ in 0..40 {
        let (s, c) = app.get_json(&format!("/api/v1/files/{hash}")).await;
        assert_eq!(s, StatusCode::OK);
        let c: Content = serde_json::from_value(c).unwrap();
        assert_eq!(c.peers.len(), 100);
        let ids: BTreeSet<PeerId> = c.peers.iter().map(|p| p.peer_id).collect();
        assert_eq!(ids.len(), 100, "each holder once");
        seen.extend(ids);
        if seen.len() == all.len() {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        all.len(),
        "every holder shows up within 40 requests"
    );
    app.stop().await.unwrap();
}

/// Rows in `file_words`, read straight from the database: the word table
/// has no foreign key, so the tracker must delete its rows itself.
async fn word_rows(db: &TestDb) -> i64 {
    const COUNT: &str = "SELECT COUNT(*) FROM file_words";
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            let n = sqlx::query_scalar(COUNT).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        Backend::MySql => {
            let pool = sqlx::MySqlPool::connect(&db.url).await.unwrap();
            let n = sqlx::query_scalar(COUNT).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let n = sqlx::query_scalar(COUNT).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }
}

async fn word_rows_go_with_their_files(backend: Backend) {
    let Some(app) = spawn_app(backend, &["--peer-ttl", "3", "--sweep-interval", "1"]).await else {
        return;
    };
    // 4 words (`txt` is one) + 2.
    let kept = app.register(1, vec![file("one two three.txt", "k")]).await;
    let silent = app.register(2, vec![file("four five", "s")]).await;
    assert_eq!(word_rows(&app.db).await, 6);
    // PATCH and PUT replace the words of the files they change.
    assert_eq!(
        change(
            &app,
            &silent,
            Method::PUT,
            &ReplaceFilesRequest {
                files: vec![file("six", "s6"), file("seven eight", "s7")],
            }
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(word_rows(&app.db).await, 7);
    assert_eq!(
        change(
            &app,
            &silent,
            Method::PATCH,
            &PatchFilesRequest {
                add: vec![file("nine ten", "s9")],
                remove: vec![FileName::new("six").unwrap()],
            }
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(word_rows(&app.db).await, 8);
    // The silent peer is swept with its word rows; the other keeps beating.
    eventually(30, "the silent peer's words are swept", || async {
        assert_eq!(app.heartbeat(&kept).await, StatusCode::OK);
        word_rows(&app.db).await == 4
    })
    .await;
    // Leaving removes the rest.
    assert_eq!(leave(&app, &kept).await, StatusCode::NO_CONTENT);
    assert_eq!(word_rows(&app.db).await, 0);
    app.stop().await.unwrap();
}

/// The hashes a query finds, and those it should find among `files`.
async fn found_and_expected(
    app: &TestApp,
    q: &str,
    files: &[FileEntry],
) -> (BTreeSet<ContentHash>, BTreeSet<ContentHash>) {
    let words = sbcftp_api::search::query_words(q).unwrap();
    let expected = files
        .iter()
        .filter(|f| sbcftp_api::search::matches(&f.name, &words))
        .map(|f| f.hash)
        .collect();
    let found = search_all(app, q, 1000, &[])
        .await
        .into_iter()
        .map(|c| c.hash)
        .collect();
    (found, expected)
}

async fn large_registrations_are_found_at_once(backend: Backend) {
    let Some(app) = spawn_app(backend, &[]).await else {
        return;
    };
    // Over 1,000 files: the word rows are written after the response, and
    // searches meanwhile read the files not yet indexed directly.
    let files: Vec<FileEntry> = (0..2500)
        .map(|i| file(&format!("bulk item {i}.dat"), &format!("b{i}")))
        .collect();
    let peer = app.register(1, files.clone()).await;
    for q in ["bulk", "item 12", "dat bulk 2499"] {
        let (found, expected) = found_and_expected(&app, q, &files).await;
        assert!(!expected.is_empty());
        assert!(
            found == expected,
            "{q}, right after the registration: found {}, expected {}, {} in common",
            found.len(),
            expected.len(),
            found.intersection(&expected).count()
        );
    }
    // Files added while the indexer may still be at work: those named
    // before where it got are indexed by the PATCH, the others by the
    // indexer, none twice.
    assert_eq!(
        change(
            &app,
            &peer,
            Method::PATCH,
            &PatchFilesRequest {
                add: vec![file("aaa early", "e"), file("zzz late", "l")],
                remove: vec![],
            }
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(names(&app, "early").await, ["aaa early"]);
    assert_eq!(names(&app, "late").await, ["zzz late"]);
    eventually(120, "every word row is written", || async {
        word_rows(&app.db).await == 2500 * 4 + 4
    })
    .await;
    let (found, expected) = found_and_expected(&app, "item 12", &files).await;
    assert!(
        found == expected,
        "once indexed: found {} of {}",
        found.len(),
        expected.len()
    );
    // A replacement over 1,000 files is queued again, from the start.
    let files: Vec<FileEntry> = (0..1500)
        .map(|i| file(&format!("next lot {i}.bin"), &format!("n{i}")))
        .collect();
    assert_eq!(
        change(
            &app,
            &peer,
            Method::PUT,
            &ReplaceFilesRequest {
                files: files.clone(),
            }
        )
        .await,
        StatusCode::OK
    );
    let (found, expected) = found_and_expected(&app, "lot 14", &files).await;
    assert!(
        found == expected,
        "right after the replacement: found {} of {}",
        found.len(),
        expected.len()
    );
    assert!(names(&app, "bulk").await.is_empty());
    eventually(120, "every word row of the new list is written", || async {
        word_rows(&app.db).await == 1500 * 4
    })
    .await;
    app.stop().await.unwrap();
}
