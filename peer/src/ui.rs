//! What the user sees: human sizes, tables for `files` and `peers`, and the
//! progress bars (bytes, rate, ETA) used by hashing and downloads.
//!
//! Tables go to stdout (they are the command's output); progress bars go to
//! stderr and are hidden when stderr is not a terminal.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sbcftp_api::{Content, Peer};

/// `1536` → `"1.5 KiB"`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// A progress bar over `total` bytes on stderr, showing bytes, rate and ETA,
/// then its message (a download shows the sources in use there).
pub fn byte_bar(total: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(prefix.to_owned());
    bar
}

/// Writes rows as aligned columns; the last column is not padded.
pub fn write_table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[String]| -> io::Result<()> {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 < cells.len() {
                let pad = widths[i].saturating_sub(c.chars().count());
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            } else {
                s.push_str(c);
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(
        out,
        &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
    )?;
    for r in rows {
        line(out, r)?;
    }
    Ok(())
}

/// An error and its causes on one line, `a: b: c`, for the user. A cause
/// whose text an outer error already shows is not repeated (many errors put
/// their cause in their own message too).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Shows a name from the network safely (control characters escaped).
pub fn safe(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.escape_debug().to_string()
    } else {
        s.to_owned()
    }
}

/// The rows of a `files` table: name(s), size, hash prefix, sources.
pub fn content_rows(contents: &[Content], numbered: bool) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut header = vec!["NAME", "SIZE", "HASH", "SOURCES"];
    if numbered {
        header.insert(0, "#");
    }
    let digits = short_hash_len(contents);
    let rows = contents
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut names = c
                .names
                .iter()
                .map(|n| safe(n))
                .collect::<Vec<_>>()
                .join(", ");
            if names.is_empty() {
                names = "-".into();
            }
            let mut row = vec![
                names,
                human_bytes(c.size),
                c.hash.to_string().chars().take(digits).collect(),
                c.peers.len().to_string(),
            ];
            if numbered {
                row.insert(0, (i + 1).to_string());
            }
            row
        })
        .collect();
    (header, rows)
}

/// Hex digits of the hashes a table shows: 12, or more where two listed
/// hashes share their first 12, so each short hash names one content
/// (`get`, `files` and `browse` take it back).
pub fn short_hash_len(contents: &[Content]) -> usize {
    let mut hashes: Vec<String> = contents.iter().map(|c| c.hash.to_string()).collect();
    hashes.sort();
    hashes
        .windows(2)
        .map(|w| {
            let common = w[0].bytes().zip(w[1].bytes()).take_while(|(a, b)| a == b);
            common.count() + 1
        })
        .fold(12, usize::max)
        .min(64)
}

/// The rows of a `peers` table: id, address, whether the tracker can reach
/// it, files, last seen.
pub fn peer_rows(peers: &[Peer]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec!["PEER", "ADDRESS", "REACHABLE", "FILES", "LAST SEEN"];
    let rows = peers
        .iter()
        .map(|p| {
            vec![
                p.peer_id.to_string(),
                safe(&p.addr),
                reachable(p.reachable, p.unreachable_reason.as_deref()),
                p.file_count.to_string(),
                last_seen(&p.last_seen),
            ]
        })
        .collect();
    (header, rows)
}

/// `yes`, `no (connection refused)`, or `not checked`.
fn reachable(reachable: Option<bool>, reason: Option<&str>) -> String {
    match (reachable, reason) {
        (Some(true), _) => "yes".into(),
        (Some(false), Some(why)) => format!("no ({})", safe(why)),
        (Some(false), None) => "no".into(),
        (None, _) => "not checked".into(),
    }
}

/// `"2026-01-01T00:00:00.000Z"` → `"3s ago"` (or the raw text if it does not parse).
fn last_seen(ts: &str) -> String {
    match humantime::parse_rfc3339_weak(ts) {
        Ok(t) => match SystemTime::now().duration_since(t) {
            Ok(d) => format!(
                "{} ago",
                humantime::format_duration(Duration::from_secs(d.as_secs()))
            ),
            Err(_) => "just now".into(),
        },
        Err(_) => safe(ts),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn short_hashes_grow_until_unique() {
        let content = |hex: &str| Content {
            hash: sbcftp_api::ContentHash::parse(&format!("{hex:0<64}")).unwrap(),
            size: 1,
            names: Vec::new(),
            peers: Vec::new(),
        };
        assert_eq!(short_hash_len(&[]), 12);
        assert_eq!(short_hash_len(&[content("ab"), content("cd")]), 12);
        // Equal in the first 14 digits: 15 tell them apart.
        let (a, b) = (content("0123456789abcd1"), content("0123456789abcd2"));
        assert_eq!(short_hash_len(&[a.clone(), content("ff"), b.clone()]), 15);
        let (_, rows) = content_rows(&[a, b], false);
        assert_eq!(rows[0][2], "0123456789abcd1");
        assert_eq!(rows[1][2], "0123456789abcd2");
    }

    #[test]
    fn tables_align() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]],
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "A    BB\nxxx  y\nz    w\n");
        assert_eq!(safe("a\nb"), "a\\nb");
    }

    #[test]
    fn error_chains_fit_on_one_line_without_repeats() {
        let inner = io::Error::other("disk full");
        let outer = anyhow::Error::new(inner).context("cannot write x.part");
        let outer = outer.context("download failed");
        assert_eq!(
            error_chain(outer.as_ref()),
            "download failed: cannot write x.part: disk full"
        );
        // A cause the message already shows is not repeated.
        let e = crate::transfer::error::LocalError::io("cannot write x.part")(io::Error::other(
            "disk full",
        ));
        assert_eq!(error_chain(&e), "cannot write x.part: disk full");
    }
}
