//! The watcher's side of the live share: the debouncer's thread turns a
//! batch of filesystem events into an [`Inbox`] (something changed, rescan
//! everything, files closed after writing) and wakes the runner.
//!
//! Kept apart from `live.rs` (the runner that surveys, hashes and
//! publishes) because it runs on another thread and only ever records what
//! happened; every decision is the runner's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use notify_debouncer_full::DebounceEventResult;
use notify_debouncer_full::notify::EventKind;
use notify_debouncer_full::notify::event::{AccessKind, AccessMode};
use sbcftp_api::FileName;
use tokio::sync::Notify;
use tracing::warn;

use crate::transfer::part::PART_SUFFIX;

/// Most close-after-write events kept between two surveys.
const MAX_CLOSED: usize = 100_000;

/// What the watcher reported since the runner last looked.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    /// A relevant entry was created, written, renamed or removed.
    pub(super) changed: bool,
    /// The watcher lost events (or failed): survey everything.
    pub(super) rescan: bool,
    /// When each file was last closed after writing.
    pub(super) closed: HashMap<FileName, SystemTime>,
}

/// The watcher's side: its thread fills the inbox and wakes the runner.
#[derive(Debug, Default)]
pub(super) struct Watched {
    inbox: Mutex<Inbox>,
    pub(super) wake: Notify,
}

impl Watched {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called on the debouncer's thread with a batch of events.
    pub(super) fn receive(&self, dir: &Path, cache_dir: &Path, result: DebounceEventResult) {
        let mut inbox = self.lock();
        match result {
            Ok(events) => {
                for ev in events {
                    if ev.need_rescan() {
                        inbox.rescan = true;
                        continue;
                    }
                    let closed = matches!(
                        ev.kind,
                        EventKind::Access(AccessKind::Close(AccessMode::Write))
                    );
                    // Opens and reads (every served READ opens the file) change nothing.
                    if matches!(ev.kind, EventKind::Access(_)) && !closed {
                        continue;
                    }
                    let at = SystemTime::now()
                        .checked_sub(ev.time.elapsed())
                        .unwrap_or(UNIX_EPOCH);
                    for path in &ev.paths {
                        let Some(name) = relevant(dir, cache_dir, path) else {
                            continue;
                        };
                        inbox.changed = true;
                        if closed && inbox.closed.len() < MAX_CLOSED {
                            let t = inbox.closed.entry(name).or_insert(at);
                            *t = (*t).max(at);
                        }
                    }
                }
            }
            Err(errors) => {
                for e in errors {
                    warn!("watching the share folder: {e}; rescanning");
                }
                inbox.rescan = true;
            }
        }
        drop(inbox);
        self.wake.notify_one();
    }

    pub(super) fn take(&self) -> Inbox {
        std::mem::take(&mut *self.lock())
    }
}

/// The name of a path the share cares about: directly in the folder, not
/// the cache folder, not a download's part file.
fn relevant(dir: &Path, cache_dir: &Path, path: &Path) -> Option<FileName> {
    if path.parent() != Some(dir) || path == cache_dir {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    if name.ends_with(PART_SUFFIX) {
        return None;
    }
    FileName::new(name).ok()
}
