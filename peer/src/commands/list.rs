//! `files` and `peers`: what the tracker knows, as a table or as JSON (the
//! tracker's own list shapes) for scripts.
//!
//! A query of 8 or more hex digits also matches hashes that start with it,
//! as git and docker take short ids: the table shows short hashes, and
//! they must lead back to their content.

use std::io::{self, Write};

use sbcftp_api::{Content, ContentList};

use crate::cli::{FilesArgs, PeersArgs};
use crate::tracker_client::TrackerClient;
use crate::ui;

/// Fewest hex digits a hash prefix needs (4 billion choices).
pub const MIN_PREFIX: usize = 8;

/// `query` as a hash prefix (lowercase), if it is 8 to 63 hex digits.
pub fn hash_prefix(query: &str) -> Option<String> {
    let q = query.trim();
    ((MIN_PREFIX..64).contains(&q.len()) && q.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| q.to_ascii_lowercase())
}

/// The contents a query finds: those whose hash starts with it (when it is
/// a hash prefix), then those with a name that has its words (the tracker's
/// search, `sbcftp_api::search`); each (hash, size) once.
pub async fn find(
    client: &TrackerClient,
    query: Option<&str>,
    cap: usize,
) -> anyhow::Result<Vec<Content>> {
    let mut found = match query.and_then(hash_prefix) {
        Some(prefix) => client.contents_with_prefix(&prefix, cap).await?,
        None => Vec::new(),
    };
    for c in client.all_files(query, cap).await? {
        if found.len() >= cap {
            break;
        }
        if !found.iter().any(|f| f.hash == c.hash && f.size == c.size) {
            found.push(c);
        }
    }
    Ok(found)
}

/// `files [QUERY] [--json]`.
pub async fn files(client: &TrackerClient, args: FilesArgs) -> anyhow::Result<()> {
    let files = find(client, args.query.as_deref(), args.limit).await?;
    let mut out = io::stdout().lock();
    if args.json {
        let list = ContentList {
            files,
            next_cursor: None,
        };
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
    } else if files.is_empty() {
        writeln!(
            out,
            "no files{}",
            match &args.query {
                Some(q) => format!(" matching {}", ui::safe(q)),
                None => String::new(),
            }
        )?;
    } else {
        let (header, rows) = ui::content_rows(&files, false);
        ui::write_table(&mut out, &header, &rows)?;
    }
    out.flush()?;
    Ok(())
}

/// `peers [--json]`.
pub async fn peers(client: &TrackerClient, args: PeersArgs) -> anyhow::Result<()> {
    let list = client.all_peers(args.limit).await?;
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
    } else if list.peers.is_empty() {
        writeln!(out, "no peers online")?;
    } else {
        let (header, rows) = ui::peer_rows(&list.peers);
        ui::write_table(&mut out, &header, &rows)?;
    }
    out.flush()?;
    Ok(())
}
