//! Pages of contents (one entry per distinct (hash, size)) and the search
//! by words: the read side of the file rows, kept apart from `files.rs`,
//! which writes them.
//!
//! A page of contents is two steps: the page of distinct hashes, then the
//! holders of just those hashes. Without a search the page walks the
//! `files(hash, …)` index from the cursor. With one it walks the rarest
//! query word's prefix range in `file_words`, whose key starts with the
//! hash's first hex digit (the *bucket*): bucket order is hash order, so a
//! page reads a few buckets, and the other words are tested on the same
//! row with `words LIKE '% w%'` (words hold only letters and digits, so
//! nothing needs escaping).

use sbcftp_api::search;
use sbcftp_api::{Content, ContentHash, FileName, PeerId, PeerRef};

use super::super::{IN_CHUNK, Store, built, fixed, with_pool};
use super::words::{bucket, prefix_range};

/// Rows of a word read per bucket to pick the rarest query word.
const SAMPLE: i64 = 2000;

/// Most queued peers whose not-yet-indexed files a search reads directly;
/// beyond them (more than this many peers registering over 1,000 files at
/// once), a file is found by words once its peer's words are written.
const PENDING_SCAN: i64 = 4;

/// Buckets: the first hex digit of a hash.
const BUCKETS: i16 = 16;

/// One holder of a content: a file row with its online peer's address.
#[derive(Debug, sqlx_macros::FromRow)]
struct HolderRow {
    hash: ContentHash,
    size: i64,
    peer_id: PeerId,
    addr: String,
    name: FileName,
    reachable: Option<i64>,
}

/// A queued peer and how far its indexer got.
#[derive(Debug, sqlx_macros::FromRow)]
struct QueuedRow {
    peer_id: PeerId,
    next_name: String,
}

/// A hash read alone.
#[derive(Debug, sqlx_macros::FromRow)]
struct HashRow {
    hash: ContentHash,
}

impl Store {
    /// Up to `limit` distinct hashes after `after` held by online peers, in
    /// hash order; with `search` (query words from
    /// [`search::query_words`]), only those with a name that has, for every
    /// query word, a word starting with it.
    pub async fn hash_page(
        &self,
        min_seen: i64,
        after: Option<ContentHash>,
        search: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<ContentHash>, sqlx::Error> {
        // No cursor: every hash sorts after the empty text.
        let first_bucket = after.as_ref().map_or(0, bucket);
        let after = after.map(|h| h.to_string()).unwrap_or_default();
        let Some(words) = search.filter(|w| !w.is_empty()) else {
            let rows: Vec<HashRow> = with_pool!(self, pool => {
                sqlx::query_as(fixed(&self.sql.hash_page))
                    .bind(&after)
                    .bind(min_seen)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            });
            return Ok(rows.into_iter().map(|r| r.hash).collect());
        };
        // Queued peers first: whatever their indexer writes from now on is
        // either in the word rows the walk reads or after the name read
        // here, so no file falls between the two.
        let queued: Vec<QueuedRow> = with_pool!(self, pool => {
            sqlx::query_as(fixed(&self.sql.queued_peers))
                .bind(PENDING_SCAN)
                .fetch_all(pool)
                .await?
        });
        let ranges: Vec<(String, String)> = words.iter().map(|w| prefix_range(w)).collect();
        // The driver: the word with the fewest rows in the first bucket
        // (ties: the longest), sampled up to SAMPLE rows each.
        let mut driver = 0;
        if words.len() > 1 {
            let mut best: Option<(i64, usize)> = None;
            for (i, (lower, upper)) in ranges.iter().enumerate() {
                let n: i64 = with_pool!(self, pool => {
                    sqlx::query_scalar(fixed(&self.sql.count_word))
                        .bind(first_bucket)
                        .bind(lower)
                        .bind(upper)
                        .bind(SAMPLE)
                        .fetch_one(pool)
                        .await?
                });
                let len = words[i].chars().count();
                if best.is_none_or(|(bn, blen)| n < bn || (n == bn && len > blen)) {
                    best = Some((n, len));
                    driver = i;
                }
            }
        }
        let (lower, upper) = &ranges[driver];
        let patterns: Vec<String> = words
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != driver)
            .map(|(_, w)| format!("% {w}%"))
            .collect();
        // Walk the buckets from the cursor's: one at first, then as many as
        // the matches seen so far say the rest of the page needs (all that
        // are left when none matched: a rare word).
        let mut out: Vec<ContentHash> = Vec::new();
        let mut next = first_bucket;
        let mut read = 0i64;
        while out.len() < usize::try_from(limit).unwrap_or(0) && next < BUCKETS {
            let left = BUCKETS - next;
            let need = limit - out.len() as i64;
            let take = if read == 0 {
                1
            } else if out.is_empty() {
                left
            } else {
                let per_bucket = out.len() as f64 / read as f64;
                ((1.2 * need as f64 / per_bucket).ceil() as i16).clamp(1, left)
            };
            let buckets: Vec<i16> = (next..next + take).collect();
            let rows: Vec<HashRow> = with_pool!(self, pool => {
                let mut q = sqlx::query_as(built(
                    self.sql.word_page(buckets.len(), patterns.len()),
                ));
                for b in &buckets {
                    q = q.bind(*b);
                }
                q = q.bind(lower).bind(upper).bind(&after);
                for p in &patterns {
                    q = q.bind(p);
                }
                q.bind(min_seen).bind(need).fetch_all(pool).await?
            });
            out.extend(rows.into_iter().map(|r| r.hash));
            read += i64::from(take);
            next += take;
        }
        // Files of queued peers that had no word rows when the walk began,
        // read directly (a primary-key range of each peer) and merged in
        // hash order.
        if queued.is_empty() {
            return Ok(out);
        }
        let all: Vec<String> = words.iter().map(|w| format!("% {w}%")).collect();
        for q in &queued {
            // Resumes a peer whose indexer stopped (on any replica).
            self.spawn_indexer(q.peer_id);
            let rows: Vec<HashRow> = with_pool!(self, pool => {
                let mut stmt = sqlx::query_as(built(self.sql.pending_page(all.len())))
                    .bind(q.peer_id)
                    .bind(&q.next_name)
                    .bind(&after);
                for p in &all {
                    stmt = stmt.bind(p);
                }
                stmt.bind(min_seen).bind(limit).fetch_all(pool).await?
            });
            out.extend(rows.into_iter().map(|r| r.hash));
        }
        out.sort_unstable();
        out.dedup();
        out.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(out)
    }

    /// The contents with this hash (one per size claimed for it) that an
    /// online peer holds and, with `search`, that have a name matching
    /// every query word.
    pub async fn content(
        &self,
        hash: ContentHash,
        min_seen: i64,
        search: Option<&[String]>,
        caps: &HolderCaps,
    ) -> Result<Vec<Content>, sqlx::Error> {
        let found = self.contents(&[hash], min_seen, caps).await?;
        Ok(found
            .into_iter()
            .filter(|c| search.is_none_or(|q| c.names.iter().any(|n| search::matches(n, q))))
            .collect())
    }

    /// The contents with these hashes, in hash order: one entry per (hash,
    /// size) that online peers claim, at most `caps.sizes` sizes per hash,
    /// each listing every holder peer once, at most `caps.holders` of them,
    /// and at most `caps.names` distinct names. Which holders and sizes
    /// make the cut rotates at random from one request to the next, so
    /// nobody can flood a content to pin the same few. Hashes no online
    /// peer holds are left out.
    pub async fn contents(
        &self,
        hashes: &[ContentHash],
        min_seen: i64,
        caps: &HolderCaps,
    ) -> Result<Vec<Content>, sqlx::Error> {
        let pivot = format!("{:016x}", rand::random::<u64>());
        let modulus: i64 = rand::random_range(1_000..1_000_000);
        let mut out: Vec<Content> = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(IN_CHUNK) {
            let rows: Vec<HolderRow> = with_pool!(self, pool => {
                let mut q = sqlx::query_as(built(self.sql.holders(chunk.len())))
                    .bind(&pivot)
                    .bind(modulus)
                    .bind(min_seen);
                for h in chunk {
                    q = q.bind(h);
                }
                q.bind(caps.names_per_holder)
                    .bind(caps.holders)
                    .bind(caps.sizes)
                    .fetch_all(pool)
                    .await?
            });
            for r in rows {
                let size = u64::try_from(r.size).unwrap_or(0);
                if out
                    .last()
                    .is_none_or(|c| c.hash != r.hash || c.size != size)
                {
                    out.push(Content {
                        hash: r.hash,
                        size,
                        names: Vec::new(),
                        peers: Vec::new(),
                    });
                }
                if let Some(c) = out.last_mut() {
                    if c.names.len() < caps.names && !c.names.contains(&r.name) {
                        c.names.push(r.name);
                    }
                    if c.peers.last().is_none_or(|p| p.peer_id != r.peer_id) {
                        c.peers.push(PeerRef {
                            peer_id: r.peer_id,
                            addr: r.addr,
                            reachable: r.reachable.map(|v| v == 1),
                        });
                    }
                }
            }
        }
        for c in &mut out {
            c.names.sort();
        }
        Ok(out)
    }
}

/// How much of a content a listing shows.
#[derive(Debug, Clone)]
pub struct HolderCaps {
    /// Holder peers per (hash, size).
    pub holders: i64,
    /// Names read per holder.
    pub names_per_holder: i64,
    /// Distinct names shown per (hash, size).
    pub names: usize,
    /// Sizes (entries) per hash.
    pub sizes: i64,
}
