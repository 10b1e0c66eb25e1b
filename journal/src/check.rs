//! Read-only tail check: what `Writer::open` would decide about the newest
//! segment, without taking the lock or changing a byte. Used by
//! `mini-exchange journal verify`, which must report damage that a plain
//! reader silently stops at (the reader ends quietly at the first batch of
//! the newest segment it cannot verify, since that is normally a torn tail).

use std::fs;
use std::path::{Path, PathBuf};

use crate::segment;
use crate::watermark::Watermark;
use crate::JournalError;

/// The verdict on the newest segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCheck {
    pub segment: Option<PathBuf>,
    /// Last sequence number of an intact, committed batch.
    pub committed_seq: u64,
    /// Offset where committed data ends.
    pub committed_end: u64,
    /// Non-zero bytes after the committed data: a torn, never-acknowledged
    /// batch that recovery will cut (0 = clean).
    pub torn_bytes: u64,
    /// The durable watermark recorded by the writer.
    pub watermark: u64,
}

/// Check the newest segment of `dir` the way recovery does. Damage before
/// the tail (an intact later commit follows it) and a tail below the
/// watermark are errors naming the file and offset; a torn tail is not.
pub fn check_tail(dir: impl AsRef<Path>) -> Result<TailCheck, JournalError> {
    let dir = dir.as_ref();
    let (watermark, _) = Watermark::load(dir, false)?;
    let wm = watermark.seq();
    let segs = segment::list(dir)?;
    segment::check_chain(&segs)?;
    let Some(seg) = segs.last() else {
        return Ok(TailCheck {
            segment: None,
            committed_seq: 0,
            committed_end: 0,
            torn_bytes: 0,
            watermark: wm,
        });
    };
    let buf = fs::read(&seg.path)
        .map_err(|e| JournalError::io(format!("reading {}", seg.path.display()), e))?;
    let scan = segment::scan(&buf, seg.first_seq);
    let dirty = segment::dirty_end(&buf, scan.committed_end);
    if let Some(ev) =
        segment::committed_after(&buf, scan.stop.offset + 8, dirty, scan.committed_seq)
    {
        return Err(JournalError::Corrupt {
            file: seg.path.clone(),
            offset: scan.stop.offset as u64,
            detail: format!(
                "{}; an intact commit of a later batch (seq {}) follows at offset {}",
                scan.stop.kind, ev.seq, ev.offset
            ),
            keep_seq: scan.committed_seq,
        });
    }
    if scan.committed_seq < wm {
        return Err(JournalError::BelowWatermark {
            file: seg.path.clone(),
            offset: scan.stop.offset as u64,
            detail: format!(
                "committed data ends at seq {} ({})",
                scan.committed_seq, scan.stop.kind
            ),
            recovered_seq: scan.committed_seq,
            watermark: wm,
        });
    }
    Ok(TailCheck {
        segment: Some(seg.path.clone()),
        committed_seq: scan.committed_seq,
        committed_end: scan.committed_end as u64,
        torn_bytes: (dirty - scan.committed_end) as u64,
        watermark: wm,
    })
}
