//! `get` and `browse`: find a content through the tracker and download it.
//!
//! Both share one download path (`download_content`), which runs the
//! blocking downloader on the blocking pool, shows a progress bar (bytes,
//! rate, ETA and the sources in use), turns Ctrl-C into a clean stop that
//! keeps the verified blocks, asks the tracker once more for sources when
//! every source failed, and ends with what each source sent and why any was
//! dropped (one line, or JSON with `--json`).

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use indicatif::ProgressBar;
use sbcftp_api::{Content, ContentHash, FileName};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cli::{BrowseArgs, DownloadArgs, GetArgs};
use crate::tracker_client::{TrackerClient, TrackerError, merge_entries};
use crate::transfer::download::{self, Job, Observer, Outcome, Report, Source};
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
        let content = holders(client, &hash).await?;
        let name = default_name(&content)?;
        (content, name)
    } else if let Some(content) = by_hash_prefix(client, &args.what).await? {
        let content = holders(client, &content.hash).await?;
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
        // Every holder, whatever size it claims (a name search lists them
        // by claimed size, at most 100 each).
        (holders(client, &content.hash).await?, name)
    };
    let name = match args.name {
        Some(n) => FileName::new(n.as_str())
            .map_err(|e| anyhow!("cannot save under the name {n:?}: {e}"))?,
        None => name,
    };
    download_content(client, content, name, &args.download, args.json, cancel).await
}

/// Every holder of `hash` the tracker lists, whatever size each claims.
async fn holders(client: &TrackerClient, hash: &ContentHash) -> anyhow::Result<Content> {
    match client.holders(hash).await {
        Ok(c) => Ok(c),
        Err(TrackerError::NotFound(_)) => bail!("no online peer shares {hash}"),
        Err(e) => Err(e.into()),
    }
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

/// The name a content is saved under when the user names none: the first of
/// its names that is not a dotfile, in the tracker's order (the name most
/// holders use, where the tracker orders them so), else its first name
/// without its leading dots, else its hash. Never a dotfile: a hidden file
/// (`.bashrc`, `.profile`) is not something a download should create
/// unasked; `--name` can still ask for one.
fn default_name(content: &Content) -> anyhow::Result<FileName> {
    if let Some(name) = content.names.iter().find(|n| !n.starts_with('.')) {
        return Ok(name.clone());
    }
    let stripped = content
        .names
        .first()
        .and_then(|n| FileName::new(n.trim_start_matches('.')).ok());
    match stripped {
        Some(name) => Ok(name),
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
    // One entry per hash (the listing has one per claimed size).
    let mut found = merge_entries(client.contents_with_prefix(&prefix, 10).await?);
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
    let matches: Vec<Content> = merge_entries(
        client
            .all_files(query.as_deref(), 10_000)
            .await?
            .into_iter()
            .filter(|c| c.names.iter().any(|n| n == name))
            .collect(),
    );
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
    // Every holder, not only those that claim the size of the row picked.
    let content = holders(client, &content.hash).await?;
    download_content(client, content, name, &args.download, false, cancel).await
}

/// Progress bar and source messages for a download, and the tracker to ask
/// again when every source failed.
struct BarObserver {
    bar: ProgressBar,
    tracker: TrackerClient,
    hash: ContentHash,
    runtime: tokio::runtime::Handle,
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

    fn sources(&self, n: usize) {
        self.bar
            .set_message(format!("{n} source{}", if n == 1 { "" } else { "s" }));
    }

    fn more_sources(&self) -> Vec<Source> {
        // On the download's (blocking) thread: wait for the tracker here.
        match self.runtime.block_on(self.tracker.holders(&self.hash)) {
            Ok(fresh) => {
                self.message("every source failed; trying the holders the tracker lists now");
                to_sources(&fresh)
            }
            Err(e) => {
                tracing::debug!("asking the tracker again failed: {e}");
                Vec::new()
            }
        }
    }
}

/// Downloads `content` as `name`, then says how it went (as JSON with `json`).
async fn download_content(
    client: &TrackerClient,
    content: Content,
    name: FileName,
    args: &DownloadArgs,
    json: bool,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    if content.peers.is_empty() {
        bail!("no online peer shares {} right now", content.hash);
    }
    let job = Job {
        hash: content.hash,
        name,
        out_dir: args.out.clone(),
        force: args.force,
        stall_timeout: args.stall_timeout,
        connect_timeout: args.connect_timeout,
        min_source_rate: args.min_source_rate,
        max_download_rate: args.max_download_rate,
        max_sources: usize::from(args.max_sources),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop);
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    // The listed size is only a first guess for the bar: the download takes
    // the size from an outline that proves it.
    let bar = ui::byte_bar(content.size.min(sbcftp_api::MAX_FILE_SIZE), "downloading");
    let obs = BarObserver {
        bar: bar.clone(),
        tracker: client.clone(),
        hash: content.hash,
        runtime: tokio::runtime::Handle::current(),
    };
    let sources = to_sources(&content);
    let started = Instant::now();
    let stop2 = Arc::clone(&stop);
    let (report, result) =
        tokio::task::spawn_blocking(move || download::download(&job, &sources, &stop2, &obs))
            .await
            .context("download task failed")?;
    let secs = started.elapsed().as_secs_f64();
    watcher.abort();
    bar.finish_and_clear();

    if json {
        let summary = Summary::new(&content.hash, &report, &result, secs);
        let mut out = io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out).and_then(|()| out.flush())?;
    }
    let outcome = result?;
    if json {
        return Ok(());
    }
    match outcome {
        Outcome::Done { path } => {
            let size = report.size.unwrap_or(0);
            let resumed_note = if report.resumed > 0 {
                format!(
                    ", {} resumed from an earlier run",
                    ui::human_bytes(report.resumed)
                )
            } else {
                String::new()
            };
            outln!(
                "downloaded {} ({}, {} received in {secs:.1} s{resumed_note}), verified blake3 {}",
                path.display(),
                ui::human_bytes(size),
                ui::human_bytes(report.received),
                content.hash
            );
            outln!("{}", sources_line(&report));
            Ok(())
        }
        Outcome::AlreadyThere { path } => {
            outln!(
                "{} is already there with this content; nothing to do",
                path.display()
            );
            Ok(())
        }
    }
}

/// `from 127.0.0.2:44444 600.0 MiB, 127.0.0.3:44444 424.0 MiB; dropped:
/// 127.0.0.4:44444 (peer …): stalled …`
fn sources_line(report: &Report) -> String {
    let used: Vec<String> = report
        .sources
        .iter()
        .filter(|s| s.bytes > 0)
        .map(|s| format!("{} {}", s.source.addr, ui::human_bytes(s.bytes)))
        .collect();
    let mut line = format!(
        "from {} source{}: {}",
        used.len(),
        if used.len() == 1 { "" } else { "s" },
        if used.is_empty() {
            "none (all resumed)".to_owned()
        } else {
            used.join(", ")
        }
    );
    let dropped: Vec<String> = report
        .sources
        .iter()
        .filter_map(|s| {
            let why = s.dropped.as_ref()?;
            Some(format!("{} ({}): {why}", s.source.addr, s.source.peer_id))
        })
        .collect();
    if !dropped.is_empty() {
        line.push_str(&format!("; dropped: {}", dropped.join("; ")));
    }
    line
}

/// What `get --json` prints.
#[derive(Debug, Serialize)]
struct Summary {
    /// `downloaded`, `already_there` or `failed`.
    status: &'static str,
    hash: String,
    path: Option<String>,
    /// From the outline (null if no source sent one).
    size: Option<u64>,
    received: u64,
    resumed: u64,
    secs: f64,
    sources: Vec<SourceSummary>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct SourceSummary {
    peer_id: String,
    addr: String,
    bytes: u64,
    blocks: u64,
    unused: u64,
    dropped: Option<String>,
}

impl Summary {
    fn new(
        hash: &ContentHash,
        report: &Report,
        result: &Result<Outcome, crate::transfer::error::DownloadError>,
        secs: f64,
    ) -> Self {
        let (status, path, error) = match result {
            Ok(Outcome::Done { path }) => ("downloaded", Some(path.display().to_string()), None),
            Ok(Outcome::AlreadyThere { path }) => {
                ("already_there", Some(path.display().to_string()), None)
            }
            Err(e) => ("failed", None, Some(ui::error_chain(e))),
        };
        Summary {
            status,
            hash: hash.to_string(),
            path,
            size: report.size,
            received: report.received,
            resumed: report.resumed,
            secs,
            sources: report
                .sources
                .iter()
                .map(|s| SourceSummary {
                    peer_id: s.source.peer_id.to_string(),
                    addr: s.source.addr.clone(),
                    bytes: s.bytes,
                    blocks: s.blocks,
                    unused: s.unused,
                    dropped: s.dropped.clone(),
                })
                .collect(),
            error,
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn content(names: &[&str]) -> Content {
        Content {
            hash: ContentHash::from_bytes([0xab; 32]),
            size: 1,
            names: names.iter().map(|n| FileName::new(*n).unwrap()).collect(),
            peers: Vec::new(),
        }
    }

    #[test]
    fn a_default_name_is_never_a_dotfile() {
        let name = |n: &[&str]| default_name(&content(n)).unwrap().into_string();
        assert_eq!(name(&[".bashrc", "notes.txt"]), "notes.txt");
        assert_eq!(name(&["b.txt", "a.txt"]), "b.txt", "the tracker's order");
        assert_eq!(name(&[".profile"]), "profile");
        assert_eq!(name(&["..."]), "ab".repeat(32));
        assert_eq!(name(&[]), "ab".repeat(32));
    }
}
