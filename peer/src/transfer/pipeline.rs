//! The stages a block goes through between the network and the disk, and
//! the buffers it travels in.
//!
//! 1. a source's thread reads the block off its connection into a buffer
//!    from the [`Pool`] (`source.rs`);
//! 2. the download's own thread verifies it against the outline and decides
//!    whether it is the first good copy (`download.rs`);
//! 3. the [`Writer`] thread writes verified blocks to the part file at their
//!    place, and hands the buffer back to the pool.
//!
//! The stages overlap on plain threads, so the network, hashing and the disk
//! run at once (one source alone reaches the speed of a plain file→TCP→file
//! copy only that way; see BENCHMARKS.md). The pool holds a fixed number of
//! buffers that circulate between the stages: there is no allocation (and no
//! page fault) per block, and the memory in flight is bounded whatever the
//! number of sources. A source that finds no free buffer waits for one.

use std::sync::mpsc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::{Scope, ScopedJoinHandle};

use super::download::Observer;
use super::error::LocalError;
use super::part::PartFile;

/// Memory the pool may hold in buffers, in bytes (at least [`MIN_BUFFERS`]
/// buffers whatever the block size).
const POOL_BYTES: u64 = 64 << 20;

/// Fewest buffers in a pool: one being read, one being verified, one being
/// written, and one spare.
const MIN_BUFFERS: usize = 4;

/// Block buffers shared by all stages (see the module docs).
#[derive(Debug)]
pub(super) struct Pool {
    state: Mutex<PoolState>,
    freed: Condvar,
}

#[derive(Debug)]
struct PoolState {
    free: Vec<Vec<u8>>,
    /// Buffers made so far (free or in use).
    made: usize,
    /// Most buffers to make.
    limit: usize,
    stopped: bool,
}

impl Pool {
    /// An empty pool; [`size_for`](Pool::size_for) sets how many buffers it
    /// may make once the block size is known.
    pub(super) fn new() -> Self {
        Pool {
            state: Mutex::new(PoolState {
                free: Vec::new(),
                made: 0,
                limit: MIN_BUFFERS,
                stopped: false,
            }),
            freed: Condvar::new(),
        }
    }

    /// Sizes the pool for blocks of `block_size` bytes and `sources` sources
    /// at once: a buffer per source and [`MIN_BUFFERS`] more, within
    /// [`POOL_BYTES`].
    pub(super) fn size_for(&self, block_size: u64, sources: usize) {
        let fit = usize::try_from(POOL_BYTES / block_size.max(1)).unwrap_or(usize::MAX);
        self.lock().limit = fit.min(sources + MIN_BUFFERS).max(MIN_BUFFERS);
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A buffer of `len` bytes, waiting for one to be handed back if all are
    /// in use. `None` once the pool is stopped, or if the memory cannot be had.
    pub(super) fn take(&self, len: usize) -> Option<Vec<u8>> {
        let mut s = self.lock();
        let mut buf = loop {
            if s.stopped {
                return None;
            }
            if let Some(b) = s.free.pop() {
                break b;
            }
            if s.made < s.limit {
                s.made += 1;
                break Vec::new();
            }
            s = match self.freed.wait(s) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        };
        drop(s);
        if buf.len() != len {
            if buf.capacity() < len && buf.try_reserve_exact(len - buf.len()).is_err() {
                self.put(buf);
                return None;
            }
            buf.resize(len, 0);
        }
        Some(buf)
    }

    /// Hands a buffer back.
    pub(super) fn put(&self, buf: Vec<u8>) {
        self.lock().free.push(buf);
        self.freed.notify_one();
    }

    /// Wakes every waiting source with `None`, for good.
    pub(super) fn stop(&self) {
        self.lock().stopped = true;
        self.freed.notify_all();
    }
}

/// The disk stage: a thread that writes verified blocks to the part file.
#[derive(Debug)]
pub(super) struct Writer<'scope> {
    blocks: mpsc::Sender<(u64, Vec<u8>)>,
    thread: ScopedJoinHandle<'scope, (u64, Result<(), LocalError>)>,
}

impl<'scope> Writer<'scope> {
    /// Starts the writer thread in `scope`. It reports each block written to
    /// `obs`, and hands buffers back to `pool`.
    pub(super) fn start(
        scope: &'scope Scope<'scope, '_>,
        part: &'scope PartFile,
        pool: &'scope Pool,
        obs: &'scope dyn Observer,
        failed: impl FnOnce() + Send + 'scope,
    ) -> Self {
        let (blocks, rx) = mpsc::channel::<(u64, Vec<u8>)>();
        let thread = scope.spawn(move || {
            let mut written = 0u64;
            for (start, data) in rx {
                if let Err(e) = part.write_at(start, &data) {
                    failed();
                    return (written, Err(e));
                }
                let n = data.len() as u64;
                written += n;
                obs.advance(n);
                pool.put(data);
            }
            (written, Ok(()))
        });
        Writer { blocks, thread }
    }

    /// Queues a verified block that starts at byte `start`. `false` if the
    /// writer has stopped (its error comes from [`finish`](Writer::finish)).
    pub(super) fn write(&self, start: u64, data: Vec<u8>) -> bool {
        self.blocks.send((start, data)).is_ok()
    }

    /// Writes what is queued, then returns the bytes written and the first
    /// write error.
    pub(super) fn finish(self) -> (u64, Result<(), LocalError>) {
        drop(self.blocks);
        self.thread.join().unwrap_or_else(|_| {
            (
                0,
                Err(LocalError::Io {
                    what: "the writer thread failed".into(),
                    source: std::io::Error::other("panic"),
                }),
            )
        })
    }
}
