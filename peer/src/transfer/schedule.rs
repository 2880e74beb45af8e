//! Which source fetches which block: the download's shared to-do list.
//!
//! Blocks are handed out one at a time to whichever source asks
//! ([`Scheduler::take`]), lowest index first, so a fast source, which asks
//! more often, gets more of them than a slow one, and no source is given a
//! share up front that it could sit on. A source asks again as soon as its
//! window of requests in flight has room.
//!
//! A block is *held* by every source that asked for it and has not yet
//! answered, and stays held while its answer waits to be verified (*in
//! transit*, [`Scheduler::arrived`]). When nothing is left to hand out, a
//! source whose window is empty enters the endgame: it is given a block that
//! others hold and that has not arrived yet, the one held by the fewest, so
//! one slow or frozen source cannot hold up the finish. The first copy
//! that verifies wins ([`Scheduler::completed`] says whether a copy was the
//! first); later copies are dropped.
//!
//! A block goes back on the list when its last holder lets go of it without
//! a verified copy ([`Scheduler::release`]): the source failed, was dropped,
//! or sent it corrupt.
//!
//! Sources that have nothing to do wait on a condition variable
//! ([`Scheduler::wait`]) and are woken when a block comes back, when the
//! endgame could give them something, or when the download stops.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// What a waiting source should do next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Ask [`Scheduler::take`] again: there may be work.
    Look,
    /// The download is over (complete or stopped): end.
    Finished,
}

/// The shared to-do list (see the module docs).
#[derive(Debug)]
pub(super) struct Scheduler {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug)]
struct State {
    /// Missing blocks that no source holds.
    queue: BTreeSet<u64>,
    /// Per block: how many sources hold it.
    holders: Vec<u32>,
    /// Per block: a verified copy is in.
    done: Vec<bool>,
    /// Per block: a copy arrived and waits to be verified.
    arrived: Vec<bool>,
    /// Blocks without a verified copy.
    left: u64,
    /// The list was filled (the outline is known).
    started: bool,
    /// The download stopped (cancelled, failed): hand out nothing more.
    stopped: bool,
}

impl Scheduler {
    /// An empty to-do list: nothing is handed out until [`start`](Scheduler::start).
    pub(super) fn new() -> Self {
        Scheduler {
            state: Mutex::new(State {
                queue: BTreeSet::new(),
                holders: Vec::new(),
                done: Vec::new(),
                arrived: Vec::new(),
                left: 0,
                started: false,
                stopped: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Fills the list with blocks `0..done.len()`, where `done[i]` says block
    /// `i` is already verified, and wakes the sources waiting for it.
    pub(super) fn start(&self, done: Vec<bool>) {
        let mut s = self.lock();
        s.queue = (0u64..)
            .zip(&done)
            .filter(|&(_, d)| !d)
            .map(|(i, _)| i)
            .collect();
        s.left = s.queue.len() as u64;
        s.holders = vec![0; done.len()];
        s.arrived = vec![false; done.len()];
        s.done = done;
        s.started = true;
        self.wake.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A block for a source that holds `mine` (its requests in flight), or
    /// `None` when there is nothing for it now. The endgame (a block others
    /// hold) is only for a source that holds nothing.
    pub(super) fn take(&self, mine: &[u64]) -> Option<u64> {
        let mut s = self.lock();
        if s.is_over() || !s.started {
            return None;
        }
        let next = match s.queue.pop_first() {
            Some(i) => i,
            None if mine.is_empty() => s.endgame_pick()?,
            None => return None,
        };
        if let Some(h) = usize::try_from(next)
            .ok()
            .and_then(|i| s.holders.get_mut(i))
        {
            *h += 1;
        }
        Some(next)
    }

    /// Waits (at most `timeout`) until there may be work for a source, or
    /// the download is over.
    pub(super) fn wait(&self, timeout: Duration) -> Next {
        let s = self.lock();
        if s.is_over() {
            return Next::Finished;
        }
        let (s, _) = match self.wake.wait_timeout(s, timeout) {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        if s.is_over() {
            Next::Finished
        } else {
            Next::Look
        }
    }

    /// Whether the list was filled.
    pub(super) fn started(&self) -> bool {
        self.lock().started
    }

    /// A copy of block `i` arrived and waits to be verified: the endgame
    /// does not ask for it again meanwhile.
    pub(super) fn arrived(&self, i: u64) {
        let mut s = self.lock();
        if let Some(a) = usize::try_from(i).ok().and_then(|x| s.arrived.get_mut(x)) {
            *a = true;
        }
    }

    /// A verified copy of block `i` is in. Returns whether it is the first
    /// (a later copy is a duplicate, to be dropped).
    pub(super) fn completed(&self, i: u64) -> bool {
        let mut s = self.lock();
        let Some(idx) = usize::try_from(i).ok().filter(|&x| x < s.done.len()) else {
            return false;
        };
        s.holders[idx] = s.holders[idx].saturating_sub(1);
        s.arrived[idx] = false;
        if s.done[idx] {
            return false;
        }
        s.done[idx] = true;
        s.left -= 1;
        s.queue.remove(&i);
        // A source may now find an endgame block (or the end).
        self.wake.notify_all();
        true
    }

    /// A source lets go of block `i` without a verified copy (it failed,
    /// was dropped, or sent it corrupt). With no holder left, the block goes
    /// back on the list.
    pub(super) fn release(&self, i: u64) {
        let mut s = self.lock();
        let Some(idx) = usize::try_from(i).ok().filter(|&x| x < s.done.len()) else {
            return;
        };
        s.holders[idx] = s.holders[idx].saturating_sub(1);
        s.arrived[idx] = false;
        if !s.done[idx] && s.holders[idx] == 0 {
            s.queue.insert(i);
        }
        self.wake.notify_all();
    }

    /// Whether block `i` already has a verified copy.
    pub(super) fn is_done(&self, i: u64) -> bool {
        let s = self.lock();
        usize::try_from(i)
            .ok()
            .and_then(|x| s.done.get(x).copied())
            .unwrap_or(false)
    }

    /// Blocks without a verified copy.
    pub(super) fn left(&self) -> u64 {
        self.lock().left
    }

    /// Stops handing out blocks and wakes every waiting source.
    pub(super) fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_all();
    }
}

impl State {
    fn is_over(&self) -> bool {
        self.stopped || (self.started && self.left == 0)
    }

    /// The endgame's pick: a missing block that has not arrived, held by the
    /// fewest sources (the lowest such index), or `None` when there is none.
    fn endgame_pick(&self) -> Option<u64> {
        (0u64..)
            .zip(self.done.iter().zip(&self.arrived).zip(&self.holders))
            .filter(|&(_, ((done, arrived), _))| !done && !arrived)
            .min_by_key(|&(i, (_, holders))| (*holders, i))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_go_out_once_lowest_first_skipping_the_done_ones() {
        let s = Scheduler::new();
        assert_eq!(s.take(&[]), None, "nothing before the start");
        assert_eq!(s.wait(Duration::from_millis(1)), Next::Look);
        s.start(vec![false, true, false, false]);
        assert!(s.started());
        assert_eq!(s.left(), 3);
        assert_eq!(s.take(&[]), Some(0));
        assert_eq!(s.take(&[0]), Some(2));
        assert_eq!(s.take(&[]), Some(3));
        // Nothing queued: a source with requests in flight gets nothing more.
        assert_eq!(s.take(&[3]), None);
        assert!(s.completed(2));
        assert!(s.is_done(2) && !s.is_done(0));
        assert_eq!(s.left(), 2);
    }

    #[test]
    fn a_released_block_goes_back_and_the_endgame_doubles_up() {
        let s = Scheduler::new();
        s.start(vec![false; 3]);
        // Source A: 0, 1.
        assert_eq!([s.take(&[]), s.take(&[0])], [Some(0), Some(1)]);
        assert_eq!(s.take(&[]), Some(2)); // source B
        assert!(s.completed(2));
        // B is idle, nothing is queued: the endgame gives it a block A holds.
        assert_eq!(s.take(&[]), Some(0));
        // The next idle source gets the block held by the fewest (1, held once).
        assert_eq!(s.take(&[]), Some(1));
        // B's copy of 0 arrives first (and wins); A's later copy is a duplicate.
        s.arrived(0);
        assert_eq!(s.take(&[]), Some(1), "0 is not asked for again meanwhile");
        s.release(1);
        assert!(s.completed(0));
        assert!(!s.completed(0));
        // A fails: it lets go of 1, which the third source still holds.
        s.release(1);
        assert_eq!(s.take(&[5]), None, "1 is still held, not queued");
        // The third source sends 1 corrupt: nobody holds it, back on the list.
        s.release(1);
        assert_eq!(s.take(&[5]), Some(1));
        assert!(s.completed(1));
        assert_eq!(s.left(), 0);
        assert_eq!(s.take(&[]), None);
        assert_eq!(s.wait(Duration::from_secs(5)), Next::Finished);
    }

    #[test]
    fn stop_wakes_waiters_and_hands_out_nothing() {
        let s = std::sync::Arc::new(Scheduler::new());
        s.start(vec![false; 2]);
        assert_eq!(s.take(&[]), Some(0));
        assert_eq!(s.take(&[0]), Some(1));
        let waiter = {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || s.wait(Duration::from_secs(60)))
        };
        // Whether the waiter is already waiting or not, it sees the stop.
        s.stop();
        assert_eq!(waiter.join().ok(), Some(Next::Finished));
        s.release(0);
        assert_eq!(s.take(&[]), None);
    }
}
