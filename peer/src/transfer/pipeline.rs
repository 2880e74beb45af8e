//! Moving one READ answer from the network to the part file, in three stages
//! that overlap on plain threads:
//!
//! 1. the network thread reads the answer block by block
//!    ([`Connection::read_payload`]);
//! 2. the calling thread verifies each block against the outline, in order;
//! 3. the writer thread writes verified blocks to the part file, in order.
//!
//! A fixed pool of block buffers circulates between the stages, so there is
//! no allocation (and no page fault) per block, and the memory in flight is
//! bounded: [`BUFFERS`] blocks. Because blocks are written in order and only
//! once verified, the part file stays a verified prefix whatever stops the
//! transfer: a corrupt block, a failed source, a full disk, Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::connection::Connection;
use super::download::Observer;
use super::error::{LocalError, RemoteError};
use super::outline::Outline;
use super::part::PartFile;

/// Block buffers in flight between the stages.
const BUFFERS: usize = 6;

/// One block read from the network, or why the source failed.
type Block = Result<(u64, Vec<u8>), RemoteError>;

/// Why a source's transfer stopped before the end.
#[derive(Debug)]
pub(super) enum Stop {
    /// The source failed or misbehaved: try the next one.
    Remote(RemoteError),
    /// This machine failed (disk): stop the download.
    Local(LocalError),
    /// The user interrupted.
    Cancelled,
}

impl From<RemoteError> for Stop {
    fn from(e: RemoteError) -> Self {
        Stop::Remote(e)
    }
}

impl From<LocalError> for Stop {
    fn from(e: LocalError) -> Self {
        Stop::Local(e)
    }
}

/// Receives blocks `first_block..` of `outline`'s content on `conn` (whose
/// READ answer header has been read), verifies them and writes them to
/// `part`. Returns the bytes written (a verified run that starts at
/// `first_block`), and why it stopped early, if it did.
pub(super) fn run(
    conn: Connection,
    outline: &Outline,
    part: &PartFile,
    first_block: u64,
    cancel: &AtomicBool,
    obs: &dyn Observer,
) -> (u64, Result<(), Stop>) {
    let closer = match conn.closer() {
        Ok(c) => c,
        Err(e) => return (0, Err(Stop::Remote(e.into()))),
    };
    let n_blocks = outline.block_count();
    let (tx, rx) = mpsc::sync_channel::<Block>(BUFFERS);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    let (write_tx, write_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(BUFFERS);
    for _ in 0..BUFFERS {
        let _ = free_tx.send(Vec::new());
    }

    std::thread::scope(|scope| {
        scope.spawn(move || read_blocks(conn, outline, first_block, &tx, &free_rx));
        let free_back = free_tx.clone();
        let writer = scope.spawn(move || -> (u64, Result<(), LocalError>) {
            let mut written = 0u64;
            for (start, data) in write_rx {
                if let Err(e) = part.write_at(start, &data) {
                    return (written, Err(e));
                }
                written += data.len() as u64;
                obs.advance(data.len() as u64);
                let _ = free_back.send(data);
            }
            (written, Ok(()))
        });

        let verified = (|| -> Result<(), Stop> {
            let mut expect = first_block;
            while expect < n_blocks {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Stop::Cancelled);
                }
                let (index, data) = match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(block) => block?,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(RemoteError::Closed.into());
                    }
                };
                if index != expect || !outline.verify_block(index, &data) {
                    let (start, end) = outline.block_range(index);
                    return Err(RemoteError::CorruptBlock { index, start, end }.into());
                }
                let (start, _) = outline.block_range(index);
                if write_tx.send((start, data)).is_err() {
                    // The writer stopped: its error is reported below.
                    return Ok(());
                }
                expect += 1;
            }
            Ok(())
        })();
        // Stop the network thread whatever happened (it may be blocked in a read).
        if verified.is_err() {
            closer.shutdown(std::net::Shutdown::Both);
        }
        drop(rx);
        drop(write_tx);
        drop(free_tx);
        let (written, write_result) = writer.join().unwrap_or((0, Ok(())));
        (written, write_result.map_err(Stop::Local).and(verified))
    })
}

/// The network stage: reads blocks `first..` of the READ answer into buffers
/// from the pool, and hands them on (or the error that stopped it).
fn read_blocks(
    mut conn: Connection,
    outline: &Outline,
    first: u64,
    tx: &mpsc::SyncSender<Block>,
    free: &mpsc::Receiver<Vec<u8>>,
) {
    for i in first..outline.block_count() {
        let (start, end) = outline.block_range(i);
        let len = usize::try_from(end - start).unwrap_or(usize::MAX);
        // Blocks until the writer hands a buffer back (or has stopped).
        let Ok(mut buf) = free.recv() else { return };
        if buf.len() != len {
            if buf.capacity() < len && buf.try_reserve_exact(len - buf.len()).is_err() {
                let _ = tx.send(Err(RemoteError::Lost(std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    "block too large",
                ))));
                return;
            }
            buf.resize(len, 0);
        }
        let r = conn.read_payload(&mut buf);
        let failed = r.is_err();
        if tx.send(r.map(|()| (i, buf))).is_err() || failed {
            return;
        }
    }
}
