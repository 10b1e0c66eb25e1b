//! Error types of the journal. This module owns the wording operators see:
//! every variant that stops a process names the file (and offset when there
//! is one) and says what to do next. Decoding never panics; it returns a
//! [`DecodeError`], which the callers wrap with file and offset.

use std::io;
use std::path::PathBuf;

/// Why a byte range is not a valid record. Carries no location: the caller
/// knows the file and offset and wraps it into a [`JournalError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The 32 header bytes are all zero: the end of written data.
    #[error("all-zero record header (end of written data)")]
    Zero,
    /// Fewer bytes than a record header (or than the declared record) remain.
    #[error("record needs {needed} bytes but only {available} remain")]
    Short { needed: usize, available: usize },
    #[error("bad record magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported record format version {found}")]
    BadVersion { found: u8 },
    #[error("unknown record kind {found}")]
    BadKind { found: u8 },
    #[error("non-zero reserved header field {found:#06x}")]
    Reserved { found: u16 },
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc { stored: u32, computed: u32 },
    #[error("non-zero padding after the payload")]
    Padding,
}

/// Every failure the journal reports. Messages are written for the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error("journal I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("invalid journal configuration: {0}")]
    Config(String),

    #[error(
        "journal directory {dir} is locked by another writer (flock on {dir}/LOCK): \
         stop the other process first; only one writer may own a journal"
    )]
    Locked { dir: PathBuf },

    #[error(
        "journal segment {file} is corrupt at offset {offset} ({detail}); committed records \
         follow it, so this is damage, not a torn tail: refusing to start. Restore the segment \
         from a replica or backup, or run with repair to truncate the journal after seq \
         {keep_seq} (every record after it is lost)"
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        detail: String,
        keep_seq: u64,
    },

    #[error(
        "journal segment {file}: recovery stops at offset {offset} ({detail}) with last seq \
         {recovered_seq}, below the durable watermark {watermark} (records up to the watermark \
         were acknowledged): refusing to start. Restore from a replica or backup, or run with \
         repair to truncate there and lower the watermark"
    )]
    BelowWatermark {
        file: PathBuf,
        offset: u64,
        detail: String,
        recovered_seq: u64,
        watermark: u64,
    },

    #[error(
        "journal segment missing between {prev} and {next}: {next} records that the segment \
         before it starts at seq {expected_prev_first}, which is not in the directory. Restore \
         that segment file; repair cannot recreate lost records"
    )]
    MissingSegment {
        prev: PathBuf,
        next: PathBuf,
        expected_prev_first: u64,
    },

    #[error(
        "journal segment {file} has an invalid header ({detail}); restore the file or move it \
         out of the journal directory"
    )]
    BadSegmentHeader { file: PathBuf, detail: String },

    #[error(
        "journal watermark file {file} is unreadable ({detail}); run with repair to rebuild \
         it from the segments"
    )]
    BadWatermark { file: PathBuf, detail: String },

    #[error(
        "journal segment {file} cannot be read at offset {offset}: {detail}; restore the \
         segment from a replica or backup"
    )]
    ReadCorrupt {
        file: PathBuf,
        offset: u64,
        detail: String,
    },

    #[error(
        "seq {seq} is no longer in the journal (the oldest segment starts at seq {oldest}); \
         start from a newer snapshot"
    )]
    SeqPruned { seq: u64, oldest: u64 },

    #[error("payload of {len} bytes exceeds the maximum of {max} for this segment size; raise segment_size")]
    PayloadTooLarge { len: usize, max: usize },

    #[error(
        "batch of {bytes} bytes does not fit in one segment ({max} bytes of space); commit \
         the pending records first, send smaller batches or raise segment_size"
    )]
    BatchTooLarge { bytes: usize, max: usize },

    #[error("sequence number space exhausted (last seq {last_seq})")]
    SeqExhausted { last_seq: u64 },

    #[error(
        "journal writer is poisoned after a failed flush ({cause}); nothing after seq \
         {durable_seq} is known to be durable and no further writes are accepted: restart the \
         process (recovery keeps every durable record)"
    )]
    Poisoned { cause: String, durable_seq: u64 },

    #[error("snapshot {file} is invalid: {detail}")]
    SnapshotCorrupt { file: PathBuf, detail: String },
}

impl JournalError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        JournalError::Io {
            context: context.into(),
            source,
        }
    }
}

/// `map_err` helper: `.map_err(io_ctx(|| format!("reading {}", p.display())))`.
pub(crate) fn io_ctx<F, S>(context: F) -> impl FnOnce(io::Error) -> JournalError
where
    F: FnOnce() -> S,
    S: Into<String>,
{
    move |source| JournalError::io(context(), source)
}
