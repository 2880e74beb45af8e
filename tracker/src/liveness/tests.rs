//! The heartbeat cache against a real (in-memory SQLite) store: what is
//! answered from memory, what goes to the database, what a flush writes and
//! forgets, and that a failed flush loses no heartbeat.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sbcftp_api::PeerId;

use super::{AuthError, Liveness, hash_token};
use crate::clock::now_ms;
use crate::store::{NewPeer, Store};

const TTL_MS: i64 = 45_000;

async fn store() -> Store {
    let store = Store::connect("sqlite::memory:", 1, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    store.migrate().await.unwrap_or_else(|e| panic!("{e:#}"));
    store
}

/// Registers a peer with token `token`, last seen at `seen` (unix millis).
async fn insert(store: &Store, id: u8, token: &str, seen: i64) -> PeerId {
    let peer_id = PeerId::from_bytes([id; 8]);
    let hash = hash_token(token).to_hex();
    let peer = NewPeer {
        peer_id,
        token_hash: hash.as_str(),
        addr: "127.0.0.2:44444",
        now: seen,
        reachable_checked_at: 0,
    };
    store
        .insert_peer(&peer, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    peer_id
}

fn knows(l: &Liveness, id: &PeerId) -> bool {
    l.read_tokens().contains_key(id)
}

fn pending(l: &Liveness) -> usize {
    l.lock_pending().len()
}

#[tokio::test]
async fn a_remembered_peer_is_answered_from_memory() {
    let store = store().await;
    let l = Liveness::default();
    // Not in the database at all: only the cache can vouch for it.
    let ghost = PeerId::from_bytes([9; 8]);
    l.remember(&ghost, hash_token("secret"), now_ms());
    assert!(
        l.authenticate(&store, &ghost, "secret", TTL_MS)
            .await
            .is_ok()
    );
    assert!(matches!(
        l.authenticate(&store, &ghost, "guess", TTL_MS).await,
        Err(AuthError::WrongToken(id)) if id == ghost
    ));
}

#[tokio::test]
async fn an_entry_older_than_the_ttl_is_checked_against_the_database() {
    let store = store().await;
    let l = Liveness::default();
    let ghost = PeerId::from_bytes([9; 8]);
    l.remember(&ghost, hash_token("secret"), now_ms() - 2 * TTL_MS);
    assert!(matches!(
        l.authenticate(&store, &ghost, "secret", TTL_MS).await,
        Err(AuthError::UnknownPeer(id)) if id == ghost
    ));
    assert!(!knows(&l, &ghost), "a peer found dead is forgotten");
}

#[tokio::test]
async fn a_miss_loads_the_peer_from_the_database() {
    let store = store().await;
    let l = Liveness::default();
    let alive = insert(&store, 1, "tok", now_ms()).await;
    assert!(l.authenticate(&store, &alive, "tok", TTL_MS).await.is_ok());
    assert!(knows(&l, &alive));
    assert!(matches!(
        l.authenticate(&store, &alive, "other", TTL_MS).await,
        Err(AuthError::WrongToken(_))
    ));
    // Silent for longer than the TTL: dead, although not swept yet.
    let silent = insert(&store, 2, "tok", now_ms() - 2 * TTL_MS).await;
    assert!(matches!(
        l.authenticate(&store, &silent, "tok", TTL_MS).await,
        Err(AuthError::UnknownPeer(_))
    ));
    assert!(!knows(&l, &silent));
}

#[tokio::test]
async fn a_flush_writes_beats_and_forgets_peers_that_are_gone() {
    let store = store().await;
    let l = Liveness::default();
    let long_ago = now_ms() - 10_000;
    let alive = insert(&store, 1, "tok", long_ago).await;
    let gone = PeerId::from_bytes([9; 8]);
    for id in [alive, gone] {
        l.remember(&id, hash_token("tok"), now_ms());
        l.beat(&id);
    }
    l.beat(&alive);
    assert_eq!(pending(&l), 2, "one pending entry per peer");
    assert_eq!(l.stats.heartbeats.load(Ordering::Relaxed), 3);

    l.flush(&store).await;
    assert_eq!(pending(&l), 0);
    let row = store
        .get_peer(&alive, long_ago + 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("the beat was not written"));
    assert!(row.last_seen > long_ago);
    assert!(knows(&l, &alive));
    assert!(
        !knows(&l, &gone),
        "a beat for a missing row forgets the peer"
    );
}

#[tokio::test]
async fn a_failed_flush_keeps_the_beats_for_the_next_one() {
    let store = store().await;
    let l = Liveness::default();
    let id = PeerId::from_bytes([1; 8]);
    l.remember(&id, hash_token("tok"), now_ms());
    l.beat(&id);
    store.close().await;
    l.flush(&store).await;
    assert_eq!(l.stats.flush_errors.load(Ordering::Relaxed), 1);
    assert_eq!(pending(&l), 1, "the beat is kept for the next flush");
}
