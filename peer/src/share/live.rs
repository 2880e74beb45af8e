//! The live share folder: the folder is watched (inotify through `notify`,
//! debounced by `notify-debouncer-full`) and every change is published as a
//! new index within about a second, for the tracker keeper to announce.
//!
//! Three rules shape it:
//!
//! - **Only stable files are announced.** A new or changed file is hashed
//!   once it is stable: it was closed after its last write (inotify's
//!   close-after-write event, later than its mtime), or it has not been
//!   written for `--settle-time` (its mtime is that old, or its stamp did
//!   not change for that long, whichever comes first). A file still being
//!   copied in is not announced, so a 2 GB copy is hashed once, after it is
//!   closed, and announced with its final hash. Meanwhile an older version
//!   under that name is withdrawn (it could not be served anyway: the server
//!   checks the stamp on every open).
//! - **Hashing is off every other path.** Files are hashed on blocking
//!   threads, at most one large file (over 256 MiB) and two small ones at a
//!   time, so a small file never waits behind a large one. The tracker
//!   keeper (heartbeats, `commands::serve`) runs in its own task and never
//!   waits for a hash; shutdown stops hashing at the next block. A large
//!   file's progress is logged every few seconds and drawn as a bar on a
//!   terminal; `--max-hash-rate` paces each file.
//! - **Nothing is hashed twice.** A survey (stat only, [`Share::survey`])
//!   reuses the hash of every file whose stamp is known, under any name, so
//!   a rename is announced without reading the file; the hash cache is
//!   written at most every few seconds.
//!
//! Surveys are rate-limited (one per `SURVEY_GAP`, 200 ms) and a finished
//! hash is published without a survey, so a folder where many files change
//! at once costs a few surveys, not one per file. The periodic rescan
//! (`--rescan-interval`) stays as a safety net for what the watcher cannot
//! see (network filesystems, an overflowed event queue, a watcher that could
//! not start, in which case the rescan runs at least every 30 s).
//!
//! This file is the runner (survey, plan, publish); the watcher's side is
//! `live/watch.rs` and hashing one file is `live/hashing.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use notify_debouncer_full::new_debouncer;
use notify_debouncer_full::notify::RecursiveMode;
use sbcftp_api::FileName;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Candidate, HashError, PROGRESS_THRESHOLD, Seen, Share, SharedFile, Stamp};
use crate::ui::human_bytes;

mod hashing;
mod watch;

use self::hashing::hash_one;
use self::watch::Watched;

/// How long the watcher lets a path's events gather before reporting them.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Least time between two surveys.
const SURVEY_GAP: Duration = Duration::from_millis(200);
/// How long finished hashes gather before they are published together.
const PUBLISH_DELAY: Duration = Duration::from_millis(50);
/// Least time between two writes of the hash cache.
const CACHE_EVERY: Duration = Duration::from_secs(5);
/// The rescan interval at most, when the folder cannot be watched.
const UNWATCHED_RESCAN: Duration = Duration::from_secs(30);
/// Added to a "stable at" deadline, so the check after it sees it passed.
const SLACK: Duration = Duration::from_millis(10);

/// How the live folder behaves.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// A file not written for this long is stable.
    pub settle: Duration,
    /// How often the whole folder is surveyed without any event.
    pub rescan_every: Duration,
    /// Most bytes per second each file is hashed at (None: unlimited).
    pub max_hash_rate: Option<u64>,
}

/// Hashing lanes: a large file never holds up the small ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Large = 0,
    Small = 1,
}

impl Lane {
    const ALL: [Lane; 2] = [Lane::Large, Lane::Small];

    fn of(size: u64) -> Self {
        if size >= PROGRESS_THRESHOLD {
            Lane::Large
        } else {
            Lane::Small
        }
    }

    /// Files hashed at once in this lane.
    fn slots(self) -> usize {
        match self {
            Lane::Large => 1,
            Lane::Small => 2,
        }
    }
}

/// Surveys the folder once, publishes what is known, starts watching, and
/// returns the task that keeps the index up to date until `shutdown`. An
/// error means the folder could not be read at all.
pub async fn start(
    share: Arc<Share>,
    config: LiveConfig,
    rescan: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let watched = Arc::new(Watched::default());
    let w = Arc::clone(&watched);
    let (dir, cache_dir) = (share.dir().to_path_buf(), share.cache_dir().to_path_buf());
    let watcher =
        new_debouncer(DEBOUNCE, None, move |r| w.receive(&dir, &cache_dir, r)).and_then(|mut d| {
            d.watch(share.dir(), RecursiveMode::NonRecursive)?;
            Ok(d)
        });
    let rescan_every = match &watcher {
        Ok(_) => {
            debug!("watching the share folder {}", share.dir().display());
            config.rescan_every
        }
        Err(e) => {
            let every = config.rescan_every.min(UNWATCHED_RESCAN);
            warn!(
                "cannot watch the share folder {} ({e}); changes are picked up by a rescan every {every:?}",
                share.dir().display()
            );
            every
        }
    };
    let mut runner = Runner::new(share, config, watched);
    runner.survey(&shutdown).await?;
    Ok(tokio::spawn(async move {
        // The watcher lives as long as the runner.
        let _watcher = watcher.ok();
        runner.run(rescan_every, &rescan, &shutdown).await;
    }))
}

/// A finished hashing job.
struct Job {
    candidate: Candidate,
    result: Result<SharedFile, HashError>,
}

/// The live folder's state; one task owns it.
struct Runner {
    share: Arc<Share>,
    config: LiveConfig,
    watched: Arc<Watched>,
    /// What the last survey saw, updated as hashes finish.
    seen: BTreeMap<FileName, Seen>,
    skipped: BTreeSet<String>,
    /// Hashes finished since the last survey, by stamp.
    done: HashMap<Stamp, Arc<SharedFile>>,
    /// Unstable files: the stamp last seen and since when.
    pending: HashMap<FileName, (Stamp, Instant)>,
    /// When each file was last closed after writing.
    closed: HashMap<FileName, SystemTime>,
    /// Stable files waiting for a hashing slot, per lane.
    queues: [VecDeque<Candidate>; 2],
    /// Files being hashed, per lane.
    running: [usize; 2],
    /// Stamps queued or being hashed.
    hashing: HashSet<Stamp>,
    /// The lane of each running job.
    lanes: HashMap<tokio::task::Id, (Lane, Stamp)>,
    /// Stamps that could not be hashed, and why (retried when they change,
    /// or at the next periodic rescan).
    failed: HashMap<Stamp, String>,
    jobs: JoinSet<Job>,
    /// Set at shutdown: running hashes stop at their next block.
    stop: Arc<AtomicBool>,
    last_survey: Instant,
    survey_at: Option<Instant>,
    /// When the first unstable file may have become stable.
    stable_at: Option<Instant>,
    publish_at: Option<Instant>,
    last_cache_write: Option<Instant>,
    cache_at: Option<Instant>,
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

impl Runner {
    fn new(share: Arc<Share>, config: LiveConfig, watched: Arc<Watched>) -> Self {
        Runner {
            share,
            config,
            watched,
            seen: BTreeMap::new(),
            skipped: BTreeSet::new(),
            done: HashMap::new(),
            pending: HashMap::new(),
            closed: HashMap::new(),
            queues: [VecDeque::new(), VecDeque::new()],
            running: [0, 0],
            hashing: HashSet::new(),
            lanes: HashMap::new(),
            failed: HashMap::new(),
            jobs: JoinSet::new(),
            stop: Arc::new(AtomicBool::new(false)),
            last_survey: Instant::now(),
            survey_at: None,
            stable_at: None,
            publish_at: None,
            last_cache_write: None,
            cache_at: None,
        }
    }

    async fn run(&mut self, rescan_every: Duration, rescan: &Notify, shutdown: &CancellationToken) {
        let every = rescan_every.max(Duration::from_secs(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.watched.wake.notified() => self.take_events(),
                _ = tick.tick() => {
                    self.failed.clear();
                    self.request_survey();
                }
                () = rescan.notified() => self.request_survey(),
                Some(joined) = self.jobs.join_next_with_id() => self.finished(joined),
                () = sleep_until(self.stable_at) => {
                    self.stable_at = None;
                    self.request_survey();
                }
                () = sleep_until(self.survey_at) => {
                    if let Err(e) = self.survey(shutdown).await {
                        warn!("cannot survey the share folder: {e:#}");
                    }
                }
                () = sleep_until(self.publish_at) => self.publish(),
                () = sleep_until(self.cache_at) => self.write_cache().await,
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        if self.cache_at.is_some() {
            self.write_cache().await;
        }
    }

    fn take_events(&mut self) {
        let inbox = self.watched.take();
        for (name, at) in inbox.closed {
            let t = self.closed.entry(name).or_insert(at);
            *t = (*t).max(at);
        }
        if inbox.changed || inbox.rescan {
            self.request_survey();
        }
    }

    fn request_survey(&mut self) {
        if self.survey_at.is_none() {
            self.survey_at = Some((self.last_survey + SURVEY_GAP).max(Instant::now()));
        }
    }

    fn request_publish(&mut self) {
        if self.publish_at.is_none() {
            self.publish_at = Some(Instant::now() + PUBLISH_DELAY);
        }
    }

    /// Surveys the folder, decides what to hash, publishes what is known.
    async fn survey(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        self.survey_at = None;
        let share = Arc::clone(&self.share);
        let done = std::mem::take(&mut self.done);
        let task = tokio::task::spawn_blocking(move || share.survey(&done));
        let survey = tokio::select! {
            r = task => r.context("the survey task failed")??,
            () = shutdown.cancelled() => return Ok(()),
        };
        self.last_survey = Instant::now();
        self.seen = survey.files;
        self.skipped = survey.skipped;
        self.plan();
        self.publish();
        self.start_jobs();
        Ok(())
    }

    /// Queues every stable unknown file for hashing; remembers when the
    /// others may be stable.
    fn plan(&mut self) {
        let seen = &self.seen;
        self.pending
            .retain(|n, _| matches!(seen.get(n), Some(Seen::Unknown(_))));
        self.closed.retain(|n, _| seen.contains_key(n));
        let unknown: Vec<Candidate> = seen
            .values()
            .filter_map(|s| match s {
                Seen::Unknown(c) => Some(c.clone()),
                Seen::Known(_) => None,
            })
            .collect();
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut stable_at: Option<Instant> = None;
        let (mut files, mut bytes) = (0usize, 0u64);
        for c in unknown {
            if self.hashing.contains(&c.stamp) {
                continue;
            }
            if let Some(why) = self.failed.get(&c.stamp) {
                self.skipped.insert(why.clone());
                continue;
            }
            match self.stable(&c, now, wall) {
                Ok(()) => {
                    self.pending.remove(&c.name);
                    self.hashing.insert(c.stamp);
                    files += 1;
                    bytes += c.stamp.size;
                    self.queues[Lane::of(c.stamp.size) as usize].push_back(c);
                }
                Err(at) => {
                    debug!("{:?} is still being written; waiting", c.name);
                    stable_at = Some(stable_at.map_or(at, |t| t.min(at)));
                }
            }
        }
        if files > 0 {
            info!(
                "hashing {files} new or changed file(s), {}",
                human_bytes(bytes)
            );
        }
        self.stable_at = stable_at;
    }

    /// Whether `c` is stable now (see the module docs), or when it may be.
    fn stable(&mut self, c: &Candidate, now: Instant, wall: SystemTime) -> Result<(), Instant> {
        let mtime = c.stamp.modified().unwrap_or(UNIX_EPOCH);
        if self.closed.get(&c.name).is_some_and(|at| *at >= mtime) {
            return Ok(());
        }
        let settle = self.config.settle;
        // None when the mtime is in the future (another machine's clock).
        let age = wall.duration_since(mtime).ok();
        if age.is_some_and(|a| a >= settle) {
            return Ok(());
        }
        let since = match self.pending.get(&c.name) {
            Some((stamp, since)) if *stamp == c.stamp => *since,
            _ => {
                self.pending.insert(c.name.clone(), (c.stamp, now));
                now
            }
        };
        if now.duration_since(since) >= settle {
            return Ok(());
        }
        let by_stamp = since + settle;
        let by_mtime = age.map_or(by_stamp, |a| now + (settle - a));
        Err(by_stamp.min(by_mtime) + SLACK)
    }

    /// Starts hashing jobs while there are free slots.
    fn start_jobs(&mut self) {
        for lane in Lane::ALL {
            let i = lane as usize;
            while self.running[i] < lane.slots() {
                let Some(c) = self.queues[i].pop_front() else {
                    break;
                };
                let current =
                    matches!(self.seen.get(&c.name), Some(Seen::Unknown(u)) if u.stamp == c.stamp);
                if !current {
                    self.hashing.remove(&c.stamp);
                    continue;
                }
                self.running[i] += 1;
                let share = Arc::clone(&self.share);
                let stop = Arc::clone(&self.stop);
                let rate = self.config.max_hash_rate;
                let stamp = c.stamp;
                let handle = self.jobs.spawn_blocking(move || {
                    let result = hash_one(&share, &c, rate, &stop);
                    Job {
                        candidate: c,
                        result,
                    }
                });
                self.lanes.insert(handle.id(), (lane, stamp));
            }
        }
    }

    /// A hashing job ended.
    fn finished(&mut self, joined: Result<(tokio::task::Id, Job), tokio::task::JoinError>) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        if let Some((lane, stamp)) = self.lanes.remove(&id) {
            self.running[lane as usize] -= 1;
            self.hashing.remove(&stamp);
        }
        match joined {
            Err(e) => {
                warn!("a hashing task failed: {e}");
                self.request_survey();
            }
            Ok((_, job)) => self.hashed(job),
        }
        self.start_jobs();
    }

    fn hashed(&mut self, job: Job) {
        let c = job.candidate;
        match job.result {
            Ok(file) => {
                let file = Arc::new(file);
                match self.seen.get_mut(&c.name) {
                    Some(seen @ Seen::Unknown(_)) => {
                        if matches!(seen, Seen::Unknown(u) if u.stamp == file.stamp) {
                            *seen = Seen::Known(Arc::clone(&file));
                            self.request_publish();
                        } else {
                            self.request_survey();
                        }
                    }
                    // Renamed or removed meanwhile: the next survey finds it by stamp.
                    _ => self.request_survey(),
                }
                self.done.insert(file.stamp, file);
            }
            Err(HashError::Gone | HashError::Changed) => self.request_survey(),
            Err(HashError::Io(_)) if self.stop.load(Ordering::Relaxed) => {}
            Err(HashError::Io(e)) => {
                let why = format!("{:?}: cannot hash: {e}", c.name);
                warn!("not sharing {why}");
                self.failed.insert(c.stamp, why.clone());
                self.skipped.insert(why);
                self.request_publish();
            }
        }
    }

    /// Makes the known files the share's index.
    fn publish(&mut self) {
        self.publish_at = None;
        let files = self.seen.values().filter_map(|s| match s {
            Seen::Known(f) => Some(Arc::clone(f)),
            Seen::Unknown(_) => None,
        });
        if self.share.publish(files, self.skipped.clone(), 0).1 && self.cache_at.is_none() {
            let earliest = self
                .last_cache_write
                .map_or_else(Instant::now, |t| t + CACHE_EVERY);
            self.cache_at = Some(earliest.max(Instant::now()));
        }
    }

    async fn write_cache(&mut self) {
        self.cache_at = None;
        self.last_cache_write = Some(Instant::now());
        let share = Arc::clone(&self.share);
        match tokio::task::spawn_blocking(move || share.save_cache()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(
                "could not write the hash cache in {}: {e}",
                self.share.cache_dir().display()
            ),
            Err(e) => warn!("the hash cache task failed: {e}"),
        }
    }
}
