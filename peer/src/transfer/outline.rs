//! Verified blocks: a file's BLAKE3 tree cut at a fixed block size.
//!
//! A file of `size` bytes is split into aligned blocks of `2^k` bytes, with
//! `k = max(20, ceil(log2(size)) - 16)`, so a block is at least 1 MiB (1024
//! BLAKE3 chunks) and a file never has more than 2^16 blocks. Both sides derive
//! `k` from the size alone. Each block (the last may be short) is a complete
//! subtree of BLAKE3's tree, and BLAKE3 splits a tree at the largest power of
//! two strictly below its length, which for whole blocks is the largest power
//! of two of blocks strictly below the block count. So the blocks' chaining
//! values (CVs) merge up to exactly the file's BLAKE3 hash ([`root`]), its
//! [`ContentHash`]. A CV is not a content hash, even where the bytes agree
//! (a single-block file's one CV is its hash): the types keep them apart.
//!
//! The list of CVs is the file's *outline* (32 bytes per block). A downloader
//! fetches the outline, checks that it merges to the hash it asked for (an
//! [`Outline`] exists only once that check passed), and then checks every
//! block against its CV before writing it ([`Outline::verify_block`]), so a
//! corrupt byte is caught per block, and blocks may come from any peer in any
//! order. A single-block file's outline is its hash itself.
//!
//! Hashing a file here ([`hash_file`]) reads and hashes blocks in parallel on
//! the rayon pool and yields both the hash and the outline in one pass.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
use rayon::prelude::*;
use sbcftp_api::ContentHash;

/// A block's chaining value: a node of the content's BLAKE3 tree (32 bytes).
pub use blake3::hazmat::ChainingValue;

/// Smallest block size exponent (1 MiB).
pub const MIN_BLOCK_LOG: u32 = 20;

/// Largest piece read from disk at once while hashing a block.
const READ_PIECE: usize = 1 << 20;

/// Block size exponent `k` for a file of `size` bytes.
pub fn block_log(size: u64) -> u32 {
    if size <= 1 {
        return MIN_BLOCK_LOG;
    }
    // ceil(log2(size)) for size >= 2.
    let ceil_log = 64 - (size - 1).leading_zeros();
    MIN_BLOCK_LOG.max(ceil_log.saturating_sub(16))
}

/// Block size in bytes for a file of `size` bytes.
pub fn block_size(size: u64) -> u64 {
    1u64 << block_log(size)
}

/// Number of blocks of a file of `size` bytes (an empty file has one empty block).
pub fn block_count(size: u64) -> u64 {
    size.div_ceil(block_size(size)).max(1)
}

/// Length of an OK OUTLINE payload for a file of `size` bytes.
pub fn outline_len(size: u64) -> u64 {
    8 + 32 * block_count(size)
}

/// Whether an OUTLINE payload may be `len` bytes long (for some size up to
/// the largest content): checked before a payload of unknown size is read.
pub fn outline_len_is_possible(len: u64) -> bool {
    len >= 8 + 32 && (len - 8).is_multiple_of(32) && len <= outline_len(sbcftp_api::MAX_FILE_SIZE)
}

/// The byte range `[start, end)` of block `index` of a file of `size` bytes.
pub fn block_range(size: u64, index: u64) -> (u64, u64) {
    let bs = block_size(size);
    let start = index.saturating_mul(bs);
    (start.min(size), size.min(start.saturating_add(bs)))
}

/// The CV of one block's bytes. For a single-block file this is the root hash.
pub fn block_cv(size: u64, index: u64, data: &[u8]) -> ChainingValue {
    if block_count(size) == 1 {
        return *blake3::hash(data).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(index * block_size(size));
    h.update(data);
    h.finalize_non_root()
}

/// Merges an outline up to the content's hash. `None` for an empty list.
pub fn root(cvs: &[ChainingValue]) -> Option<ContentHash> {
    let root = match cvs.len() {
        0 => return None,
        // A single block is the whole tree: its CV is the root hash.
        1 => cvs[0],
        n => {
            let left = largest_power_of_two_below(n);
            let l = merge(&cvs[..left]);
            let r = merge(&cvs[left..]);
            *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
        }
    };
    Some(ContentHash::from_bytes(root))
}

/// Merges a non-empty run of CVs into a non-root subtree CV.
fn merge(cvs: &[ChainingValue]) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left = largest_power_of_two_below(cvs.len());
    merge_subtrees_non_root(&merge(&cvs[..left]), &merge(&cvs[left..]), Mode::Hash)
}

/// Largest power of two strictly less than `n` (n >= 2).
fn largest_power_of_two_below(n: usize) -> usize {
    let p = n.next_power_of_two();
    if p == n { n / 2 } else { p / 2 }
}

/// Whether `cvs` is a well-formed outline of `hash` for a file of `size` bytes.
fn outline_matches(size: u64, cvs: &[ChainingValue], hash: &ContentHash) -> bool {
    cvs.len() as u64 == block_count(size) && root(cvs).as_ref() == Some(hash)
}

/// A content's outline, checked against the content's hash: a value of this
/// type always merges to the hash it was made for, so a block that
/// [`verify_block`](Outline::verify_block) accepts is a block of that content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outline {
    size: u64,
    cvs: Vec<ChainingValue>,
}

/// Why an OUTLINE payload from a peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutlineError {
    /// The payload's size field is not the size the content should have.
    #[error("has {announced} bytes of this content; the tracker says {expected}")]
    WrongSize { announced: u64, expected: u64 },
    /// The payload's length does not fit the size it announces.
    #[error("sent an outline of {length} bytes for a content of {announced} bytes")]
    BadLength { announced: u64, length: u64 },
    /// The chaining values do not merge to the content hash.
    #[error("sent an outline that does not match the content hash")]
    NoMatch,
}

impl Outline {
    /// The outline `cvs` of a content of `size` bytes, if it is one of `hash`.
    pub fn verified(size: u64, cvs: Vec<ChainingValue>, hash: &ContentHash) -> Option<Outline> {
        outline_matches(size, &cvs, hash).then_some(Outline { size, cvs })
    }

    /// The content's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The block chaining values, one per block.
    pub fn cvs(&self) -> &[ChainingValue] {
        &self.cvs
    }

    /// Number of blocks (see [`block_count`]).
    pub fn block_count(&self) -> u64 {
        block_count(self.size)
    }

    /// The byte range `[start, end)` of block `index`.
    pub fn block_range(&self, index: u64) -> (u64, u64) {
        block_range(self.size, index)
    }

    /// Whether `data` is block `index` of the content.
    pub fn verify_block(&self, index: u64, data: &[u8]) -> bool {
        let (start, end) = self.block_range(index);
        let Some(expected) = usize::try_from(index).ok().and_then(|i| self.cvs.get(i)) else {
            return false;
        };
        data.len() as u64 == end - start && block_cv(self.size, index, data) == *expected
    }

    /// The payload of an OK OUTLINE answer: the size (u64, big-endian), then
    /// the chaining values; [`outline_len`] bytes.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.cvs.len() * 32);
        out.extend_from_slice(&self.size.to_be_bytes());
        for cv in &self.cvs {
            out.extend_from_slice(cv);
        }
        out
    }

    /// Reads an OK OUTLINE payload for the content `hash` when its size is not
    /// known: the size is the payload's own, and the chaining values must
    /// merge to `hash`. The caller has checked the payload's length with
    /// [`outline_len_is_possible`] before reading it.
    ///
    /// Merging proves the CVs and their number, not the exact size: the root
    /// does not depend on the block size or on the last block's length (a
    /// single CV "merges" for any size up to a block). The size is proven
    /// once the last block, fetched as this outline places it, verifies
    /// ([`Outline::verify_block`] of `block_count() - 1`): its CV covers its
    /// length and its offset. Until then the outline is a candidate.
    pub fn from_payload_unsized(
        payload: &[u8],
        hash: &ContentHash,
    ) -> Result<Outline, OutlineError> {
        let announced = payload
            .get(..8)
            .and_then(|h| <[u8; 8]>::try_from(h).ok())
            .map(u64::from_be_bytes)
            .ok_or(OutlineError::NoMatch)?;
        if announced > sbcftp_api::MAX_FILE_SIZE || outline_len(announced) != payload.len() as u64 {
            return Err(OutlineError::BadLength {
                announced,
                length: payload.len() as u64,
            });
        }
        Outline::from_payload(payload, announced, hash)
    }

    /// Reads an OK OUTLINE payload for the content `hash` of `size` bytes.
    /// The caller has checked that the payload is [`outline_len`]`(size)`
    /// bytes long before reading it.
    pub fn from_payload(
        payload: &[u8],
        size: u64,
        hash: &ContentHash,
    ) -> Result<Outline, OutlineError> {
        let (head, body) = payload.split_at(payload.len().min(8));
        let announced = <[u8; 8]>::try_from(head)
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        if announced != size {
            return Err(OutlineError::WrongSize {
                announced,
                expected: size,
            });
        }
        if body.len() % 32 != 0 {
            return Err(OutlineError::NoMatch);
        }
        let cvs = body
            .chunks_exact(32)
            .map(|c| {
                let mut cv = [0u8; 32];
                cv.copy_from_slice(c);
                cv
            })
            .collect();
        Outline::verified(size, cvs, hash).ok_or(OutlineError::NoMatch)
    }
}

/// Hashes an open file of `size` bytes: its BLAKE3 hash and its outline.
/// Blocks are read with positional reads and hashed in parallel on the rayon pool;
/// `progress` is called with each block's byte count once it is hashed.
pub fn hash_file(
    file: &File,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<(ContentHash, Outline)> {
    hash_file_with(file, size, &|n| {
        progress(n);
        Ok(())
    })
}

/// [`hash_file`] whose `progress` may stop the hashing by returning an error
/// (which is returned): the share folder's hashing uses it to pace itself
/// and to stop at shutdown.
pub fn hash_file_with(
    file: &File,
    size: u64,
    progress: &(dyn Fn(u64) -> io::Result<()> + Sync),
) -> io::Result<(ContentHash, Outline)> {
    let n = block_count(size);
    let cvs = (0..n)
        .into_par_iter()
        .map(|i| {
            let (start, end) = block_range(size, i);
            let cv = hash_block(file, size, i, start, end)?;
            progress(end - start)?;
            Ok(cv)
        })
        .collect::<io::Result<Vec<ChainingValue>>>()?;
    let hash = root(&cvs).ok_or_else(|| io::Error::other("empty outline"))?;
    Ok((hash, Outline { size, cvs }))
}

fn hash_block(
    file: &File,
    size: u64,
    index: u64,
    start: u64,
    end: u64,
) -> io::Result<ChainingValue> {
    let single = block_count(size) == 1;
    let mut h = blake3::Hasher::new();
    if !single {
        h.set_input_offset(start);
    }
    let len = usize::try_from(end - start).map_err(io::Error::other)?;
    let mut buf = vec![0u8; len.min(READ_PIECE)];
    let mut pos = start;
    while pos < end {
        let want = usize::try_from(end - pos)
            .map_err(io::Error::other)?
            .min(buf.len());
        let got = file.read_at(&mut buf[..want], pos)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank while hashing block {index}"),
            ));
        }
        h.update(&buf[..got]);
        pos += got as u64;
    }
    Ok(if single {
        *h.finalize().as_bytes()
    } else {
        h.finalize_non_root()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn block_sizes() {
        assert_eq!(block_size(0), 1 << 20);
        assert_eq!(block_count(0), 1);
        assert_eq!(block_count(1), 1);
        assert_eq!(block_count(1 << 20), 1);
        assert_eq!(block_count((1 << 20) + 1), 2);
        assert_eq!(block_size(1 << 30), 1 << 20);
        assert_eq!(block_count(1 << 30), 1024);
        assert_eq!(block_size(1 << 36), 1 << 20);
        assert_eq!(block_count(1 << 36), 1 << 16);
        assert_eq!(block_size((1 << 36) + 1), 1 << 21);
        // No overflow at the extremes.
        assert_eq!(block_range(u64::MAX, block_count(u64::MAX) - 1).1, u64::MAX);
        let max = sbcftp_api::MAX_FILE_SIZE;
        assert!(block_count(max) <= 1 << 16);
        for size in [1u64, 1000, 1 << 20, 3 << 20, (1 << 40) + 7, max] {
            assert!(
                block_count(size) <= super::super::wire::MAX_BLOCKS,
                "{size}"
            );
            assert!(outline_len(size) <= super::super::wire::max_outline_len());
        }
    }

    #[test]
    fn outline_merges_to_blake3_hash() {
        let mb = 1usize << 20;
        for len in [
            0,
            1,
            1024,
            1025,
            mb - 1,
            mb,
            mb + 1,
            2 * mb,
            3 * mb + 17,
            5 * mb,
            8 * mb + 1,
        ] {
            let d = data(len);
            let size = len as u64;
            let cvs: Vec<ChainingValue> = (0..block_count(size))
                .map(|i| {
                    let (s, e) = block_range(size, i);
                    block_cv(size, i, &d[s as usize..e as usize])
                })
                .collect();
            let expected = ContentHash::from_bytes(*blake3::hash(&d).as_bytes());
            assert_eq!(root(&cvs), Some(expected), "len {len}");
            let outline = Outline::verified(size, cvs.clone(), &expected).unwrap();

            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&d).unwrap();
            let (h, hashed) = hash_file(&f, size, &|_| {}).unwrap();
            assert_eq!(h, expected, "hash_file len {len}");
            assert_eq!(hashed, outline);

            for i in 0..block_count(size) {
                let (s, e) = block_range(size, i);
                let mut blk = d[s as usize..e as usize].to_vec();
                assert!(outline.verify_block(i, &blk));
                if !blk.is_empty() {
                    blk[0] ^= 1;
                    assert!(!outline.verify_block(i, &blk));
                }
            }
        }
    }

    #[test]
    fn bad_outlines_are_refused() {
        let d = data(3 << 20);
        let size = d.len() as u64;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&d).unwrap();
        let (h, outline) = hash_file(&f, size, &|_| {}).unwrap();
        let cvs = outline.cvs().to_vec();
        let mut bad = cvs.clone();
        bad[1][0] ^= 1;
        assert!(Outline::verified(size, bad, &h).is_none());
        assert!(Outline::verified(size, cvs[..2].to_vec(), &h).is_none());
        assert!(Outline::verified(size + (1 << 20), cvs.clone(), &h).is_none());
        assert!(!outline.verify_block(7, &d[..10]));
        // A block swapped into another position does not verify.
        assert!(!outline.verify_block(1, &d[..1 << 20]));
    }

    #[test]
    fn outline_payload_round_trips_and_is_checked() {
        let d = data((2 << 20) + 5);
        let size = d.len() as u64;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&d).unwrap();
        let (h, outline) = hash_file(&f, size, &|_| {}).unwrap();
        let p = outline.to_payload();
        assert_eq!(p.len() as u64, outline_len(size));
        assert_eq!(p[..8], size.to_be_bytes());
        assert_eq!(Outline::from_payload(&p, size, &h), Ok(outline));

        assert_eq!(
            Outline::from_payload(&p, size + 1, &h),
            Err(OutlineError::WrongSize {
                announced: size,
                expected: size + 1
            })
        );
        let mut bad = p.clone();
        bad[40] ^= 1;
        assert_eq!(
            Outline::from_payload(&bad, size, &h),
            Err(OutlineError::NoMatch)
        );
        assert_eq!(
            Outline::from_payload(&p[..p.len() - 1], size, &h),
            Err(OutlineError::NoMatch)
        );
        assert!(Outline::from_payload(&[], 0, &h).is_err());

        // Without a size: the payload's own counts once the CVs merge.
        assert!(outline_len_is_possible(p.len() as u64));
        assert!(!outline_len_is_possible(p.len() as u64 - 1));
        assert!(!outline_len_is_possible(8));
        assert_eq!(Outline::from_payload_unsized(&p, &h).unwrap().size(), size);
        // A lie about the size (one block's worth) is refused.
        let mut lie = p.clone();
        lie[..8].copy_from_slice(&1u64.to_be_bytes());
        assert!(matches!(
            Outline::from_payload_unsized(&lie, &h),
            Err(OutlineError::BadLength { announced: 1, .. })
        ));
        lie.truncate(40);
        assert_eq!(
            Outline::from_payload_unsized(&lie, &h),
            Err(OutlineError::NoMatch)
        );
        assert!(Outline::from_payload_unsized(&[1, 2], &h).is_err());
    }
}
