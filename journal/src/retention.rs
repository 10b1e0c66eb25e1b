//! Retention: deleting old segments once every consumer (snapshots, views)
//! is past them. Invariant kept: only a prefix of the segment list is ever
//! deleted, oldest first, and never the newest segment (the writer's active
//! one), so the remaining segments stay contiguous and linked.

use crate::error::{io_ctx, JournalError};
use crate::segment;
use crate::sys;
use std::fs;
use std::path::{Path, PathBuf};

/// Deletes the segments whose records all have seq < `seq` (a segment
/// qualifies when the next segment starts at or below `seq`). Returns the
/// deleted paths, oldest first. Safe to run while a writer and tailers are
/// active: the newest segment is never touched and open mappings stay valid.
pub fn delete_segments_before(
    dir: impl AsRef<Path>,
    seq: u64,
) -> Result<Vec<PathBuf>, JournalError> {
    let dir = dir.as_ref();
    let segs = segment::list(dir)?;
    let mut deleted = Vec::new();
    for pair in segs.windows(2) {
        if pair[1].first_seq > seq {
            break;
        }
        let path = &pair[0].path;
        fs::remove_file(path).map_err(io_ctx(|| format!("deleting {}", path.display())))?;
        deleted.push(path.clone());
    }
    if !deleted.is_empty() {
        sys::fsync_dir(dir)?;
    }
    Ok(deleted)
}
