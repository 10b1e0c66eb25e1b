//! The only module with `unsafe`: memory maps, block preallocation and the
//! writer lock. It owns the contract around each mapping: segment files are
//! never truncated or shrunk while mapped (retention deletes whole files,
//! which keeps existing mappings valid), and a byte range is only read
//! concurrently with the writer once the writer has published it through a
//! commit (release/acquire on [`crate::DurableSeq`]) and will not touch it
//! again. Directory fsync lives here too, as every file creation needs it.

use crate::error::{io_ctx, JournalError};
use memmap2::{Mmap, MmapMut};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Maps a whole segment file read-write (shared, so writes reach the file).
pub(crate) fn map_mut(file: &File, path: &Path) -> Result<MmapMut, JournalError> {
    // SAFETY: the journal never truncates a segment file while it is mapped;
    // the single writer (enforced by `lock_dir`) is the only process writing
    // through a mutable mapping, and readers only interpret bytes the writer
    // has published and no longer modifies. Any other byte a reader sees is
    // validated by CRC before use, so a concurrent change is at worst a
    // decode error, never an out-of-bounds access.
    unsafe { MmapMut::map_mut(file) }.map_err(io_ctx(|| format!("mapping {}", path.display())))
}

/// Maps a whole segment file read-only (shared).
pub(crate) fn map_read(file: &File, path: &Path) -> Result<Mmap, JournalError> {
    // SAFETY: as for `map_mut`: the file is never shrunk while mapped, and
    // readers only trust bytes that are published (seq <= durable, or a
    // batch closed by a valid commit marker) and CRC-checked.
    unsafe { Mmap::map(file) }.map_err(io_ctx(|| format!("mapping {}", path.display())))
}

/// Reserves real disk blocks for `len` bytes so that a later write through
/// the mapping cannot fail with SIGBUS on a full disk. Falls back to a sparse
/// `set_len` on file systems without fallocate support.
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len_off = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size too large"))?;
    loop {
        // SAFETY: plain syscall on a descriptor that `file` keeps open for
        // the duration of the call; no memory of ours is passed.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len_off) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            libc::EOPNOTSUPP | libc::EINVAL => return file.set_len(len),
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// Takes an exclusive, non-blocking flock on `<dir>/LOCK`. The lock lives as
/// long as the returned file (the kernel drops it when the process dies).
pub(crate) fn lock_dir(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_ctx(|| format!("opening lock file {}", path.display())))?;
    // SAFETY: plain syscall on a descriptor that `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(file);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(JournalError::Locked {
            dir: dir.to_path_buf(),
        });
    }
    Err(JournalError::io(format!("locking {}", path.display()), err))
}

/// fsyncs a directory so that file creations, renames and deletions in it
/// survive a power loss.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_ctx(|| format!("fsyncing directory {}", dir.display())))
}
