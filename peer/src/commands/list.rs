//! `files` and `peers`: what the tracker knows, as a table or as JSON (the
//! tracker's own list shapes) for scripts.

use std::io::{self, Write};

use sbcftp_api::ContentList;

use crate::cli::{FilesArgs, PeersArgs};
use crate::tracker_client::TrackerClient;
use crate::ui;

/// `files [QUERY] [--json]`.
pub async fn files(client: &TrackerClient, args: FilesArgs) -> anyhow::Result<()> {
    let files = client.all_files(args.query.as_deref(), args.limit).await?;
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
