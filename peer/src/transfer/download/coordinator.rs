//! The download's coordinator: the loop on the download's own thread that
//! starts and replaces sources, adopts the first proven outline, verifies
//! every block against its CV and hands verified blocks to the writer.
//!
//! Kept apart from `download.rs`, which holds the public job, report and
//! observer types and the shared [`Swarm`] state the source threads use,
//! so that each file reads as one concern.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rand::seq::SliceRandom;

use super::super::error::{LocalError, RemoteError, Violation};
use super::super::outline::{self, Outline, OutlineError};
use super::super::part::PartFile;
use super::super::pipeline::Writer;
use super::super::source;
use super::{Event, Observer, Report, Source, SourceReport, Swarm};

/// How the download's loop ended.
#[derive(Debug)]
pub(super) enum End {
    Complete,
    Cancelled,
    NoSourceLeft,
    Local(LocalError),
}

/// The download's own thread: starts sources, verifies blocks, keeps the
/// report.
pub(super) struct Coordinator<'s, 'a, 'r> {
    swarm: &'s Swarm<'a>,
    part: &'s PartFile,
    obs: &'s dyn Observer,
    report: &'r mut Report,
    /// Sources not started yet, in the order to try them.
    waiting: VecDeque<Source>,
    /// Source threads running.
    active: usize,
    asked_for_more: bool,
    pub(super) writer: Option<Writer<'s>>,
}

/// How often the loop looks at the cancel flag when nothing happens.
const POLL: Duration = Duration::from_millis(100);

impl<'s, 'a, 'r> Coordinator<'s, 'a, 'r> {
    /// A coordinator for `swarm` that tries `waiting` in order.
    pub(super) fn new(
        swarm: &'s Swarm<'a>,
        part: &'s PartFile,
        obs: &'s dyn Observer,
        report: &'r mut Report,
        waiting: VecDeque<Source>,
    ) -> Self {
        Coordinator {
            swarm,
            part,
            obs,
            report,
            waiting,
            active: 0,
            asked_for_more: false,
            writer: None,
        }
    }

    pub(super) fn run(
        &mut self,
        scope: &'s std::thread::Scope<'s, '_>,
        inbox: &mpsc::Receiver<Event>,
        cancel: &AtomicBool,
    ) -> End {
        self.start_sources(scope);
        if self.active == 0 {
            return End::NoSourceLeft;
        }
        loop {
            if cancel.load(Ordering::Relaxed) {
                return End::Cancelled;
            }
            if self.swarm.sched.started() && self.swarm.sched.left() == 0 {
                return End::Complete;
            }
            let event = match inbox.recv_timeout(POLL) {
                Ok(e) => e,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                // Never: the swarm holds a sender.
                Err(mpsc::RecvTimeoutError::Disconnected) => return End::NoSourceLeft,
            };
            match event {
                Event::Outline { id, outline, last } => {
                    if let Err(e) = self.outline(scope, id, outline, last) {
                        return End::Local(e);
                    }
                }
                Event::Block { id, index, data } => self.block(id, index, data),
                Event::Ended { id, result } => {
                    self.active -= 1;
                    if let Err(why) = result {
                        self.drop_source(id, &why);
                    }
                    self.start_sources(scope);
                    if self.active == 0 && !self.refill(scope) {
                        // Blocks verified just now may have completed it.
                        return if self.swarm.sched.started() && self.swarm.sched.left() == 0 {
                            End::Complete
                        } else {
                            End::NoSourceLeft
                        };
                    }
                    self.obs.sources(self.active);
                }
                Event::WriteFailed => return End::Local(write_failed()),
            }
        }
    }

    /// Starts waiting sources while fewer than the cap run.
    fn start_sources(&mut self, scope: &'s std::thread::Scope<'s, '_>) {
        while self.active < self.swarm.job.max_sources.max(1) {
            let Some(source) = self.waiting.pop_front() else {
                break;
            };
            let id = self.report.sources.len();
            self.report.sources.push(SourceReport {
                source: source.clone(),
                bytes: 0,
                blocks: 0,
                unused: 0,
                dropped: None,
            });
            self.active += 1;
            let swarm = self.swarm;
            let spawned = std::thread::Builder::new()
                .name(format!("source-{id}"))
                .spawn_scoped(scope, move || {
                    let result = source::run(swarm, id, &source);
                    let _ = swarm.events.send(Event::Ended { id, result });
                });
            if let Err(e) = spawned {
                self.active -= 1;
                tracing::warn!("cannot start a thread for source {id}: {e}");
                break;
            }
        }
        self.obs.sources(self.active);
    }

    /// Every source ended: asks the observer once for more, and starts those
    /// not tried yet. Returns whether any started.
    fn refill(&mut self, scope: &'s std::thread::Scope<'s, '_>) -> bool {
        if self.asked_for_more {
            return false;
        }
        self.asked_for_more = true;
        let tried: HashSet<&str> = self
            .report
            .sources
            .iter()
            .map(|s| s.source.addr.as_str())
            .collect();
        let mut fresh: Vec<Source> = self
            .obs
            .more_sources()
            .into_iter()
            .filter(|s| !tried.contains(s.addr.as_str()))
            .collect();
        fresh.dedup_by(|a, b| a.addr == b.addr);
        fresh.shuffle(&mut rand::rng());
        self.waiting.extend(fresh);
        self.start_sources(scope);
        self.active > 0
    }

    /// Source `id`'s outline (it merged) and its proof, the last block as it
    /// places it (`None`: the part file holds it). The first proven outline
    /// is adopted; a source whose proof fails lied and is dropped; later
    /// proofs are copies of a block already in.
    fn outline(
        &mut self,
        scope: &'s std::thread::Scope<'s, '_>,
        id: usize,
        outline: Outline,
        last: Option<Vec<u8>>,
    ) -> Result<(), LocalError> {
        let index = outline.block_count() - 1;
        if let Some(adopted) = self.swarm.outline.get() {
            if let Some(data) = last {
                self.report.sources[id].unused += data.len() as u64;
            }
            if adopted.size() != outline.size() {
                // Both merge, so only the proven size is true.
                let why = Violation::from(OutlineError::WrongSize {
                    announced: outline.size(),
                    expected: adopted.size(),
                });
                self.drop_source(id, &why.into());
                self.swarm.ban(id);
            }
            return Ok(());
        }
        match last {
            None => self.adopt(scope, outline, None),
            Some(data) if outline.verify_block(index, &data) => {
                self.adopt(scope, outline, Some((id, data)))
            }
            Some(data) => {
                self.report.sources[id].unused += data.len() as u64;
                let (start, end) = outline.block_range(index);
                let why = RemoteError::CorruptBlock { index, start, end };
                self.drop_source(id, &why);
                self.swarm.ban(id);
                Ok(())
            }
        }
    }

    /// The proven outline: checks the part file against it, then lets the
    /// sources start on the missing blocks. `probe` is the verified last
    /// block and the source that sent it.
    fn adopt(
        &mut self,
        scope: &'s std::thread::Scope<'s, '_>,
        outline: Outline,
        probe: Option<(usize, Vec<u8>)>,
    ) -> Result<(), LocalError> {
        let size = outline.size();
        tracing::debug!(size, "outline proven");
        let checking = std::time::Instant::now();
        let mut done = self.part.verified_blocks(&outline)?;
        tracing::debug!(
            secs = checking.elapsed().as_secs_f64(),
            blocks = done.iter().filter(|d| **d).count(),
            "part file re-verified"
        );
        let resumed: u64 = (0u64..)
            .zip(&done)
            .filter(|&(_, d)| *d)
            .map(|(i, _)| {
                let (s, e) = outline.block_range(i);
                e - s
            })
            .sum();
        if resumed > 0 {
            self.obs.message(&format!(
                "resuming: {resumed} of {size} bytes already verified in {}",
                self.part.path().display()
            ));
        }
        self.report.size = Some(size);
        self.report.resumed = resumed;
        self.obs.start(size, resumed);
        let sources = self.active + self.waiting.len();
        self.swarm.pool.size_for(
            outline::block_size(size),
            sources.min(self.swarm.job.max_sources),
        );
        let (pool, part, obs) = (&self.swarm.pool, self.part, self.obs);
        let events = self.swarm.events.clone();
        let writer = Writer::start(scope, part, pool, obs, move || {
            let _ = events.send(Event::WriteFailed);
        });
        let last = outline.block_count() - 1;
        if let Some((id, data)) = probe {
            let len = data.len() as u64;
            let (start, _) = outline.block_range(last);
            if let Some(d) = usize::try_from(last).ok().and_then(|i| done.get_mut(i))
                && !*d
            {
                *d = true;
                let r = &mut self.report.sources[id];
                r.bytes += len;
                r.blocks += 1;
                self.report.received += len;
                writer.write(start, data);
            }
        }
        self.writer = Some(writer);
        let _ = self.swarm.outline.set(outline);
        self.swarm.sched.start(done);
        Ok(())
    }

    /// A block as received from source `id`: verify it, and pass it on if it
    /// is the first good copy.
    fn block(&mut self, id: usize, index: u64, data: Vec<u8>) {
        let (swarm, len) = (self.swarm, data.len() as u64);
        let Some(outline) = swarm.outline.get() else {
            swarm.pool.put(data);
            return;
        };
        if swarm.sched.is_done(index) {
            // A second copy (endgame): only let go of it.
            swarm.sched.completed(index);
            swarm.pool.put(data);
            self.report.sources[id].unused += len;
            return;
        }
        if !outline.verify_block(index, &data) {
            swarm.pool.put(data);
            self.report.sources[id].unused += len;
            let (start, end) = outline.block_range(index);
            self.drop_source(id, &RemoteError::CorruptBlock { index, start, end });
            swarm.ban(id);
            // After the source is marked dropped: its thread's own error
            // (the closed connection) is not reported.
            swarm.sched.release(index);
            return;
        }
        swarm.sched.completed(index);
        let (start, _) = outline.block_range(index);
        let r = &mut self.report.sources[id];
        r.bytes += len;
        r.blocks += 1;
        self.report.received += len;
        match &self.writer {
            Some(w) if w.write(start, data) => {}
            // The writer stopped; its error ends the loop.
            _ => {}
        }
    }

    /// Records why source `id` was dropped (the first reason only: a
    /// corrupt block also breaks the connection it came on) and tells the
    /// observer.
    fn drop_source(&mut self, id: usize, why: &RemoteError) {
        let r = &mut self.report.sources[id];
        if r.dropped.is_some() {
            return;
        }
        r.dropped = Some(crate::ui::error_chain(why));
        tracing::debug!(peer = %r.source.peer_id, addr = %r.source.addr, "source dropped: {why}");
        self.obs.dropped(&r.source, why);
    }
}

/// The error a writer that stopped is reported with when it cannot be
/// joined for its own.
fn write_failed() -> LocalError {
    LocalError::Io {
        what: "cannot write the part file".into(),
        source: std::io::Error::other("the writer stopped"),
    }
}
