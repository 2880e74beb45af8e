//! One source's part in a download, on a thread of its own: connect, fetch
//! the outline (while the download has none), then keep a window of READ
//! requests in flight and read their answers, block by block, into buffers
//! from the pool, handing each to the download's thread to be verified.
//!
//! - **Pipelining.** A source is asked for one block per READ, and up to
//!   [`window`] of them are in flight at once: while one answer is being
//!   read, the next ones are already on their way, so the pipe stays full
//!   without a round trip per block (the server answers requests in order).
//! - **Deadlines.** A response header must come within the stall timeout; a
//!   block must arrive within the stall timeout plus its length at the rate
//!   floor (`--min-source-rate`), so a source that trickles is dropped even
//!   though each read sees a few bytes ([`Connection::read_payload_within`]).
//! - **Retries.** A connection that cannot be opened, breaks, or is answered
//!   BUSY or UNAVAILABLE is opened again, at most [`RETRIES`] times in a row
//!   without a block delivered, after a short backoff (a server closes a
//!   connection after its `--connection-lifetime` with BUSY: that costs a
//!   reconnection, not the source). Anything else (a stall, a trickle, a
//!   refusal, a protocol violation) ends the source at once.
//!
//! When the source ends, the blocks it had asked for and not received go
//! back on the to-do list (`schedule.rs`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::connection::{Connection, Deadlines};
use super::download::{Event, Source, Swarm};
use super::error::{RemoteError, Violation};
use super::outline::{self, Outline};
use super::schedule::Next;
use super::wire::Request;

/// Connections opened again after a failure, in a row without a block
/// delivered in between.
pub(super) const RETRIES: u32 = 3;

/// How long an idle source waits before it looks for work again (it is also
/// woken whenever work may have appeared).
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// Bytes a source should have requested and not yet received.
const WINDOW_BYTES: u64 = 4 << 20;

/// Requests a source keeps in flight for blocks of `block_size` bytes: about
/// [`WINDOW_BYTES`], and at least two, so the next answer is always on its way.
pub(super) fn window(block_size: u64) -> usize {
    usize::try_from(WINDOW_BYTES / block_size.max(1))
        .unwrap_or(2)
        .max(2)
}

/// Runs `source` (number `id` in this download) until the download needs
/// nothing more from it (`Ok`) or it failed for good (`Err`, the reason it
/// is dropped).
pub(super) fn run(swarm: &Swarm<'_>, id: usize, source: &Source) -> Result<(), RemoteError> {
    let mut retries = 0;
    let mut delivered = 0u64;
    loop {
        let before = delivered;
        let failure = match session(swarm, id, source, &mut delivered) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if delivered > before {
            retries = 0;
        }
        if swarm.is_stopped() {
            // The download ended and closed this connection: not a failure.
            return Ok(());
        }
        if !failure.is_retryable() || retries >= RETRIES || swarm.is_banned(id) {
            return Err(failure);
        }
        retries += 1;
        tracing::debug!(source = id, retries, "connecting again after: {failure}");
        // Back off 250 ms, 500 ms, 1 s; waking early if the download ends.
        let until = Instant::now() + Duration::from_millis(125 << retries);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if swarm.sched.wait(left) == Next::Finished {
                return Ok(());
            }
        }
    }
}

/// One connection's worth of work.
/// `delivered` counts the blocks received on it.
fn session(
    swarm: &Swarm<'_>,
    id: usize,
    source: &Source,
    delivered: &mut u64,
) -> Result<(), RemoteError> {
    let job = swarm.job;
    let mut conn = Connection::connect(
        &source.addr,
        job.connect_timeout,
        Deadlines::client(job.stall_timeout),
    )?;
    let Some(_open) = swarm.opened(id, &conn) else {
        return Ok(()); // The download is over.
    };
    // While no outline is proven: this source's own, with its proof.
    if swarm.outline.get().is_none() {
        let outline = fetch_outline(&mut conn, swarm)?;
        let last = outline.block_count() - 1;
        let held = swarm.part.verified_blocks_in(&outline, last..last + 1);
        let proof = if matches!(held.as_deref(), Ok([true])) {
            None
        } else if swarm.outline.get().is_some() {
            Some(Vec::new()) // Proven meanwhile: no need to fetch it.
        } else {
            Some(probe(&mut conn, swarm, &outline)?)
        };
        let event = Event::Outline {
            id,
            outline,
            last: proof,
        };
        if swarm.events.send(event).is_err() {
            return Ok(());
        }
    }
    // The download's thread checks the part file against the proven
    // outline before any block is handed out.
    let outline = loop {
        if let (Some(o), true) = (swarm.outline.get(), swarm.sched.started()) {
            break o;
        }
        if swarm.sched.wait(IDLE_WAIT) == Next::Finished {
            return Ok(());
        }
    };
    let mut in_flight = VecDeque::new();
    let result = pump(swarm, id, &mut conn, outline, &mut in_flight, delivered);
    for i in in_flight {
        swarm.sched.release(i);
    }
    result
}

/// Keeps the window full and reads the answers, until there is nothing left
/// to fetch or the connection fails. `in_flight` holds the blocks asked for
/// and not yet received, in the order asked.
fn pump(
    swarm: &Swarm<'_>,
    id: usize,
    conn: &mut Connection,
    outline: &Outline,
    in_flight: &mut VecDeque<u64>,
    delivered: &mut u64,
) -> Result<(), RemoteError> {
    let job = swarm.job;
    let depth = window(outline::block_size(outline.size()));
    let mut requests = Vec::with_capacity(depth);
    loop {
        while in_flight.len() < depth {
            let Some(i) = swarm.sched.take(in_flight.make_contiguous()) else {
                break;
            };
            in_flight.push_back(i);
            let (start, end) = outline.block_range(i);
            requests.push(Request::read(job.hash, start, end - start));
        }
        if !requests.is_empty() {
            conn.send_all(&requests)?;
            requests.clear();
        }
        let Some(&index) = in_flight.front() else {
            if swarm.sched.wait(IDLE_WAIT) == Next::Finished {
                return Ok(());
            }
            continue;
        };
        let (start, end) = outline.block_range(index);
        let len = end - start;
        read_answer_header(conn, len)?;
        let Some(mut data) = usize::try_from(len).ok().and_then(|n| swarm.pool.take(n)) else {
            return Ok(()); // Stopped (or no memory for a block: let others try).
        };
        if let Err(e) =
            conn.read_payload_within(&mut data, block_limit(swarm, len), swarm.pacer.as_ref())
        {
            swarm.pool.put(data);
            return Err(e);
        }
        in_flight.pop_front();
        *delivered += 1;
        swarm.sched.arrived(index);
        if swarm.events.send(Event::Block { id, index, data }).is_err() {
            return Ok(());
        }
    }
}

/// Reads the header of a READ answer, which must be OK with `len` bytes.
fn read_answer_header(conn: &mut Connection, len: u64) -> Result<u64, RemoteError> {
    let answered = conn.read_ok_header()?;
    if answered != len {
        return Err(Violation::WrongLength {
            expected: len,
            actual: answered,
        }
        .into());
    }
    Ok(answered)
}

/// How long a block of `len` bytes may take: the stall timeout plus its
/// length at the rate floor.
fn block_limit(swarm: &Swarm<'_>, len: u64) -> Duration {
    let job = swarm.job;
    job.stall_timeout + Duration::from_secs_f64(len as f64 / job.min_rate() as f64)
}

/// Fetches the last block as `outline` (this source's own) places it: the
/// proof of its size (see [`Outline::from_payload_unsized`]).
fn probe(
    conn: &mut Connection,
    swarm: &Swarm<'_>,
    outline: &Outline,
) -> Result<Vec<u8>, RemoteError> {
    let (start, end) = outline.block_range(outline.block_count() - 1);
    let len = end - start;
    conn.send(&Request::read(swarm.job.hash, start, len))?;
    let answered = read_answer_header(conn, len)?;
    // One block of a content whose outline merged: its size is bounded by
    // the largest content's block size.
    let mut data = Vec::new();
    let n = usize::try_from(len).map_err(|_| Violation::WrongLength {
        expected: len,
        actual: answered,
    })?;
    if data.try_reserve_exact(n).is_err() {
        return Err(RemoteError::Lost(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            "no memory for a block",
        )));
    }
    data.resize(n, 0);
    conn.read_payload_within(&mut data, block_limit(swarm, len), swarm.pacer.as_ref())?;
    Ok(data)
}

/// Fetches the outline of the content (its size not known yet: taken from
/// the outline, which counts only if it merges to the hash).
fn fetch_outline(conn: &mut Connection, swarm: &Swarm<'_>) -> Result<Outline, RemoteError> {
    let hash = swarm.job.hash;
    conn.send(&Request::outline(hash))?;
    let answered = conn.read_ok_header()?;
    if !outline::outline_len_is_possible(answered) {
        return Err(Violation::OutlineLength { actual: answered }.into());
    }
    // At most 8 + 32 * 2^16 bytes: safe to allocate.
    let len =
        usize::try_from(answered).map_err(|_| Violation::OutlineLength { actual: answered })?;
    let mut buf = vec![0u8; len];
    conn.read_payload(&mut buf)?;
    Ok(Outline::from_payload_unsized(&buf, &hash).map_err(Violation::from)?)
}
