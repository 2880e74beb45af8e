//! `get` and `browse`: find a content through the tracker and download it.
//!
//! Both share one download path (`download_content`), which runs the
//! blocking downloader on the blocking pool, shows a progress bar, turns
//! Ctrl-C into a clean stop that keeps the verified part, and asks the
//! tracker once more for sources when every source failed.

use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, anyhow, bail};
use indicatif::ProgressBar;
use sbcftp_api::{Content, ContentHash, FileName};
use tokio_util::sync::CancellationToken;

use crate::cli::{BrowseArgs, DownloadArgs, GetArgs};
use crate::tracker_client::{TrackerClient, TrackerError};
use crate::transfer::download::{self, Job, Observer, Outcome, Source};
use crate::transfer::error::DownloadError;
use crate::ui;

/// `println!` that returns the error instead of panicking (a closed pipe
/// must not crash the command; `main` treats it as success).
macro_rules! outln {
    ($($arg:tt)*) => {{
        let mut o = io::stdout().lock();
        writeln!(o, $($arg)*).and_then(|()| o.flush())?
    }};
}

/// `print!` (then flush) that returns the error instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        let mut o = io::stdout().lock();
        write!(o, $($arg)*).and_then(|()| o.flush())?
    }};
}

/// `get <HASH|NAME>`.
pub async fn get(
    client: &TrackerClient,
    args: GetArgs,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    check_out_dir(&args.download.out)?;
    let lowered = args.what.to_ascii_lowercase();
    let (content, name) = if let Ok(hash) = ContentHash::parse(&lowered) {
        let content = match client.content(&hash).await {
            Ok(c) => c,
            Err(TrackerError::NotFound(_)) => bail!("no online peer shares {lowered}"),
            Err(e) => return Err(e.into()),
        };
        let name = default_name(&content)?;
        (content, name)
    } else if let Some(content) = by_hash_prefix(client, &args.what).await? {
        let name = default_name(&content)?;
        (content, name)
    } else {
        let content = find_by_name(client, &args.what).await?;
        let name = content
            .names
            .iter()
            .find(|n| **n == args.what)
            .cloned()
            .context("the tracker's answer does not have the name asked for")?;
        (content, name)
    };
    let name = match args.name {
        Some(n) => FileName::new(n.as_str())
            .map_err(|e| anyhow!("cannot save under the name {n:?}: {e}"))?,
        None => name,
    };
    download_content(client, content, name, &args.download, cancel).await
}

/// Refuses an `--out` that exists but is not a folder, before anything is
/// asked of the tracker (a missing folder is created by the download).
fn check_out_dir(out: &std::path::Path) -> anyhow::Result<()> {
    if out.exists() && !out.is_dir() {
        bail!(
            "--out {} is a file; --out takes a folder to save into (created if missing), e.g. --out ./Downloads",
            out.display()
        );
    }
    Ok(())
}

/// The name a content is saved under when the user names none: its first
/// name, or its hash when it has none.
fn default_name(content: &Content) -> anyhow::Result<FileName> {
    match content.names.first() {
        Some(name) => Ok(name.clone()),
        None => Ok(FileName::new(content.hash.to_string())?),
    }
}

/// The one content whose hash starts with `what`, if it is a hash prefix
/// (8+ hex digits) that some content has; `None` if it is not a prefix or
/// none has it (it may then be a name). Several: an error listing them.
async fn by_hash_prefix(client: &TrackerClient, what: &str) -> anyhow::Result<Option<Content>> {
    let Some(prefix) = super::list::hash_prefix(what) else {
        return Ok(None);
    };
    let mut found = client.contents_with_prefix(&prefix, 10).await?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => {
            let more = if n >= 10 { " (first 10)" } else { "" };
            let mut msg = format!(
                "hash prefix {prefix} is ambiguous; give more digits of one of these{more}:"
            );
            push_candidates(&mut msg, &found);
            bail!(msg)
        }
    }
}

/// Appends one line per content: full hash, size, names.
fn push_candidates(msg: &mut String, contents: &[Content]) {
    for c in contents {
        msg.push_str(&format!(
            "\n  {}  {:>10}  {}",
            c.hash,
            ui::human_bytes(c.size),
            c.names
                .iter()
                .map(|n| ui::safe(n))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

/// The one content that has exactly this name. The tracker is asked for the
/// name's words (the search semantics of `sbcftp_api::search`: every name
/// with this one's words, among others), and the answer is narrowed to the
/// exact name here; a name with no letter or digit is looked for in the
/// unfiltered listing.
async fn find_by_name(client: &TrackerClient, name: &str) -> anyhow::Result<Content> {
    let query = sbcftp_api::search::query_for_name(name);
    let matches: Vec<Content> = client
        .all_files(query.as_deref(), 10_000)
        .await?
        .into_iter()
        .filter(|c| c.names.iter().any(|n| n == name))
        .collect();
    match matches.len() {
        0 if super::list::hash_prefix(name).is_some() => bail!(
            "no shared content has a hash starting with {} or is named so; `sbcftp-peer files` lists what is shared",
            ui::safe(name)
        ),
        0 => bail!(
            "no content is named {}; `sbcftp-peer files {}` lists names with its words",
            ui::safe(name),
            ui::safe(name)
        ),
        1 => Ok(matches.into_iter().next().context("no match")?),
        n => {
            let mut msg = format!(
                "{n} different contents are named {}; pick one by hash (8 or more digits):",
                ui::safe(name)
            );
            push_candidates(&mut msg, &matches);
            bail!(msg)
        }
    }
}

/// `browse [QUERY]`: numbered list, pick, confirm, download.
pub async fn browse(
    client: &TrackerClient,
    args: BrowseArgs,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    check_out_dir(&args.download.out)?;
    let files = super::list::find(client, args.query.as_deref(), 1000).await?;
    if files.is_empty() {
        match &args.query {
            Some(q) => outln!(
                "no files match {}; `sbcftp-peer browse` without a query lists them all",
                ui::safe(q)
            ),
            None => outln!(
                "no files to download: no online peer shares any (`sbcftp-peer serve` shares a folder)"
            ),
        }
        return Ok(());
    }
    {
        let mut out = io::stdout().lock();
        let (header, rows) = ui::content_rows(&files, true);
        ui::write_table(&mut out, &header, &rows)?;
        out.flush()?;
    }
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    let content = loop {
        out!("Enter the number of the file to download (q to quit): ");
        let Some(line) = lines.next().transpose()? else {
            bail!("no file chosen");
        };
        let line = line.trim();
        if line.eq_ignore_ascii_case("q") {
            return Ok(());
        }
        match line.parse::<usize>() {
            Ok(i) if (1..=files.len()).contains(&i) => break files[i - 1].clone(),
            _ => outln!("please enter a number from 1 to {}", files.len()),
        }
    };
    let name = default_name(&content)?;
    out!(
        "Download {} ({}) from {} peer(s)? [Y/n] ",
        ui::safe(&name),
        ui::human_bytes(content.size),
        content.peers.len()
    );
    io::stdout().flush()?;
    // Enter means yes, and so does the end of input at the first question
    // (`echo 2 | sbcftp-peer browse`); anything but y/n is asked again.
    let mut asked_again = false;
    loop {
        let Some(answer) = lines.next().transpose()? else {
            if asked_again {
                outln!("\nnot downloading");
                return Ok(());
            }
            break;
        };
        let answer = answer.trim();
        if answer.is_empty()
            || answer.eq_ignore_ascii_case("y")
            || answer.eq_ignore_ascii_case("yes")
        {
            break;
        }
        if answer.eq_ignore_ascii_case("n") || answer.eq_ignore_ascii_case("no") {
            outln!("not downloading");
            return Ok(());
        }
        out!("please answer y or n [Y/n] ");
        asked_again = true;
    }
    download_content(client, content, name, &args.download, cancel).await
}

/// Progress bar and source messages for a download.
struct BarObserver {
    bar: ProgressBar,
}

impl Observer for BarObserver {
    fn start(&self, size: u64, done: u64) {
        self.bar.set_length(size);
        self.bar.set_position(done);
        self.bar.reset_eta();
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn message(&self, msg: &str) {
        self.bar.suspend(|| eprintln!("sbcftp-peer: {msg}"));
    }
}

/// Downloads `content` as `name`, retrying once with sources the tracker
/// knows by then if every source failed.
async fn download_content(
    client: &TrackerClient,
    content: Content,
    name: FileName,
    args: &DownloadArgs,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    if content.size > sbcftp_api::MAX_FILE_SIZE {
        bail!(
            "the tracker announced an impossible size ({} bytes)",
            content.size
        );
    }
    if content.peers.is_empty() {
        bail!("no online peer shares {} right now", content.hash);
    }
    let job = Arc::new(Job {
        hash: content.hash,
        size: content.size,
        name,
        out_dir: args.out.clone(),
        force: args.force,
        stall_timeout: args.stall_timeout,
        connect_timeout: args.connect_timeout,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop);
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let obs = Arc::new(BarObserver {
        bar: ui::byte_bar(content.size, "downloading"),
    });

    let mut tried: HashSet<String> = HashSet::new();
    let mut sources: Vec<Source> = to_sources(&content);
    let mut result;
    let mut round = 0;
    // `sources` is never empty here: the content has peers, and a second
    // round starts only with new ones.
    loop {
        round += 1;
        tried.extend(sources.iter().map(|s| s.addr.clone()));
        let (job2, stop2, obs2, srcs) = (
            Arc::clone(&job),
            Arc::clone(&stop),
            Arc::clone(&obs),
            sources.clone(),
        );
        result =
            tokio::task::spawn_blocking(move || download::download(&job2, &srcs, &stop2, &*obs2))
                .await
                .context("download task failed")?;
        // Every source failed: ask the tracker once more for sources not tried yet.
        if round >= 2
            || !matches!(result, Err(DownloadError::NoSourceLeft { .. }))
            || stop.load(Ordering::Relaxed)
        {
            break;
        }
        match client.content(&content.hash).await {
            Ok(fresh) => {
                sources = to_sources(&fresh)
                    .into_iter()
                    .filter(|s| !tried.contains(&s.addr))
                    .collect();
                if sources.is_empty() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    watcher.abort();
    obs.bar.finish_and_clear();
    match result {
        Ok(Outcome::Done {
            path,
            received,
            resumed,
        }) => {
            let resumed_note = if resumed > 0 {
                format!(", {} resumed from an earlier run", ui::human_bytes(resumed))
            } else {
                String::new()
            };
            outln!(
                "downloaded {} ({}, {} received{resumed_note}), verified blake3 {}",
                path.display(),
                ui::human_bytes(content.size),
                ui::human_bytes(received),
                content.hash
            );
            Ok(())
        }
        Ok(Outcome::AlreadyThere { path }) => {
            outln!(
                "{} is already there with this content; nothing to do",
                path.display()
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn to_sources(content: &Content) -> Vec<Source> {
    content
        .peers
        .iter()
        .map(|p| Source {
            peer_id: p.peer_id,
            addr: p.addr.clone(),
        })
        .collect()
}
