//! Segmented, memory-mapped, append-only journal of sequenced records, plus
//! snapshot files: bytes in, bytes out. This crate owns the on-disk formats
//! below and keeps three invariants: (1) seqs are contiguous from the oldest
//! segment's first record to the newest record; (2) a batch is visible to
//! readers only once its commit marker is written after its records (and,
//! under [`Durability::Fsync`], flushed), so it is wholly visible or not at
//! all; (3) recovery never cuts below the durable watermark, nor through
//! damage followed by committed data, unless repair is explicitly requested.
//!
//! ```no_run
//! # fn main() -> Result<(), journal::JournalError> {
//! use journal::{JournalConfig, Reader, Writer};
//! let (mut w, report) = Writer::open(JournalConfig::new("/var/lib/mx/journal"))?;
//! let seq = w.append(1_700_000_000_000_000_000, b"command bytes")?;
//! assert_eq!(w.commit()?, seq); // durable (group commit) and published
//! for entry in Reader::open("/var/lib/mx/journal", report.first_seq)? {
//!     let entry = entry?; // seq, timestamp_ns, payload
//! #   let _ = entry;
//! }
//! # Ok(()) }
//! ```
//!
//! # On-disk format (version 1; every integer is little-endian)
//!
//! A journal directory holds:
//!
//! ```text
//! 00000000000000000001.seg   segment; the name is the seq of its first record,
//! 00000000000000004711.seg   zero-padded to 20 digits so name order = seq order
//! watermark                  durable watermark
//! LOCK                       flock(2)ed by the single writer
//! ```
//!
//! ## Segment file
//!
//! Preallocated to `segment_size` bytes (posix_fallocate, so writes through
//! the mapping cannot hit a full disk), created as `<name>.seg.tmp`, header
//! written and fsync'ed, renamed, directory fsync'ed. Under fsync
//! durability the writer also writes zeros a chunk ahead of its small
//! commits, so a commit's fdatasync does not also convert fallocated
//! extents (the bytes read as zero either way). Header at offset 0:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `"MXJS"` |
//! | 4 | 2 | version = 1 |
//! | 6 | 2 | header length = 64 |
//! | 8 | 8 | first seq (equals the file name) |
//! | 16 | 8 | first seq of the previous segment (0 for the first one ever); a mismatch with the file before it means a segment is missing |
//! | 24 | 8 | segment size at creation |
//! | 32 | 28 | reserved, zero |
//! | 60 | 4 | CRC32C of bytes 0..60 |
//!
//! Records follow from offset 64, back to back. Every record starts at a
//! multiple of 8. Written data ends at the first all-zero record header;
//! everything after it is zero.
//!
//! ## Record
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `"MXJR"` |
//! | 4 | 1 | version = 1 |
//! | 5 | 1 | kind: 1 = data, 2 = commit marker |
//! | 6 | 2 | reserved, zero |
//! | 8 | 4 | payload length n (padding excluded) |
//! | 12 | 4 | CRC32C over header bytes 0..12, header bytes 16..32, then the payload |
//! | 16 | 8 | seq |
//! | 24 | 8 | timestamp, ns (supplied by the caller, never read from a clock here) |
//! | 32 | n | payload, then 0..7 zero bytes of padding to a multiple of 8 |
//!
//! ## Batches and the commit marker
//!
//! A batch is one or more data records with consecutive seqs followed by a
//! commit marker: kind 2, seq = last seq of the batch, timestamp = that of
//! the last record, 8-byte payload = first seq of the batch. The writer
//! keeps an open batch in memory and writes records and marker into the
//! segment file together at commit (one `pwrite`); under `Fsync` it then
//! calls `fdatasync` (one flush per batch: group commit), and only then is
//! the batch published to [`DurableSeq`] and acknowledged. Readers map the
//! segments and read committed batches in place. A batch never spans
//! segments: when a record does not fit, the open batch goes to a new
//! segment (first seq = first seq of the batch) instead.
//!
//! ## Watermark file
//!
//! Two 32-byte slots at offsets 0 and 32, written alternately; the valid slot
//! with the higher generation wins, so a torn write leaves the older value.
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `"MXJW"` |
//! | 4 | 2 | version = 1 |
//! | 6 | 2 | reserved |
//! | 8 | 8 | generation |
//! | 16 | 8 | watermark seq: every seq up to it was durable (and may have been acknowledged) |
//! | 24 | 4 | reserved |
//! | 28 | 4 | CRC32C of bytes 0..28 |
//!
//! The writer stores it, after the batch's flush, every
//! `watermark_interval` commits, at [`Writer::close`] and after recovery.
//!
//! ## Recovery ([`Writer::open`])
//!
//! Headers of all segments are checked (magic, CRC, name, predecessor
//! link: a gap is [`JournalError::MissingSegment`]). The newest segment is
//! scanned batch by batch; the journal ends after the last batch whose
//! records are all intact, contiguous and closed by a valid marker.
//! Everything after that point is a torn or uncommitted tail and is zeroed,
//! unless (a) an intact marker of a *later* batch, or a record after an
//! intact marker, lies beyond the damage: a crash can tear only the one
//! batch in flight, so this is damage to committed data
//! ([`JournalError::Corrupt`]); or (b) the end lies below the watermark
//! ([`JournalError::BelowWatermark`]). Both refuse to start, naming file and
//! offset, unless `repair` is set; repair truncates there, lowers the
//! watermark and says so in [`RecoveryReport::repair`]. A newest segment
//! without any committed batch (crash during rollover) is deleted.
//! Older segments are verified by readers as they read them.
//!
//! ## Snapshot file `snapshot-<seq, 20 digits>.snap`
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `"MXSN"` |
//! | 4 | 2 | version = 1 |
//! | 6 | 2 | reserved, zero |
//! | 8 | 8 | seq the state includes |
//! | 16 | 8 | payload length |
//! | 24 | 4 | CRC32C of the payload |
//! | 28 | 4 | CRC32C of header bytes 0..28 |
//! | 32 | n | payload (opaque state bytes) |
//!
//! Written to `.snap.tmp`, fsync'ed, renamed, directory fsync'ed.

mod check;
mod error;
mod reader;
pub mod record;
mod retention;
mod segment;
pub mod snapshot;
mod sys;
mod watermark;
mod writer;

pub use check::{check_tail, TailCheck};
pub use error::{DecodeError, JournalError};
pub use reader::{Entry, OwnedEntry, Reader, Tailer};
pub use retention::delete_segments_before;
pub use writer::{
    Durability, JournalConfig, RecoveryReport, RepairAction, Writer, MIN_SEGMENT_SIZE,
};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Shared, read-only view of a writer's durable seq. The writer stores with
/// release ordering after the batch is written (and flushed); readers load
/// with acquire ordering, so every byte up to that seq is visible to them.
#[derive(Debug, Clone)]
pub struct DurableSeq(Arc<AtomicU64>);

impl DurableSeq {
    pub(crate) fn new(seq: u64) -> Self {
        DurableSeq(Arc::new(AtomicU64::new(seq)))
    }

    /// Highest durable seq (0 = nothing yet).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn publish(&self, seq: u64) {
        self.0.store(seq, Ordering::Release);
    }
}
