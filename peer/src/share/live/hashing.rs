//! Hashing one file for the live share, on a blocking thread: progress in
//! the log (and as a bar on a terminal) for a large file, pacing to
//! `--max-hash-rate`, and stopping at the next block on shutdown.
//!
//! Kept apart from `live.rs`, which decides *what* to hash and when; this is
//! only *how* one file is hashed.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::info;

use super::super::{Candidate, HashError, PROGRESS_THRESHOLD, Share, SharedFile};
use crate::ui::human_bytes;

/// How often a large file's hashing progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Hashes one file (blocking), with progress in the log and on a terminal
/// for a large one, paced by `rate`, stopped by `stop`.
pub(super) fn hash_one(
    share: &Share,
    c: &Candidate,
    rate: Option<u64>,
    stop: &AtomicBool,
) -> Result<SharedFile, HashError> {
    let total = c.stamp.size;
    let large = total >= PROGRESS_THRESHOLD;
    let size = human_bytes(total);
    if large {
        info!("hashing {:?} ({size})", c.name);
    }
    let bar = large.then(|| {
        crate::ui::byte_bar(
            total,
            &format!("hashing {}", crate::ui::safe(c.name.as_str())),
        )
    });
    let started = Instant::now();
    let done = AtomicU64::new(0);
    let last_log = Mutex::new(started);
    let progress = |n: u64| -> io::Result<()> {
        let so_far = done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &bar {
            b.inc(n);
        }
        if large {
            let mut last = last_log.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= PROGRESS_EVERY {
                *last = Instant::now();
                info!(
                    "hashing {:?}: {}% ({} of {size})",
                    c.name,
                    so_far.saturating_mul(100) / total.max(1),
                    human_bytes(so_far)
                );
            }
        }
        if let Some(rate) = rate {
            pace(started, so_far, rate, stop)?;
        }
        if stop.load(Ordering::Relaxed) {
            return Err(stopped());
        }
        Ok(())
    };
    let result = share.hash(c, &progress);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if large && result.is_ok() {
        let secs = started.elapsed().as_secs_f64();
        info!("hashed {:?} ({size}) in {secs:.1}s", c.name);
    }
    result
}

/// Sleeps until `done` bytes are due at `rate` bytes per second since
/// `started`, waking to check `stop`.
fn pace(started: Instant, done: u64, rate: u64, stop: &AtomicBool) -> io::Result<()> {
    let due = Duration::from_secs_f64(done as f64 / rate.max(1) as f64);
    loop {
        let elapsed = started.elapsed();
        if elapsed >= due {
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            return Err(stopped());
        }
        std::thread::sleep((due - elapsed).min(Duration::from_millis(200)));
    }
}

fn stopped() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        "stopped: the peer is shutting down",
    )
}
