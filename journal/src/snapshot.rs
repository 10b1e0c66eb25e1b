//! Snapshot files: opaque state bytes tagged with the seq they include,
//! written atomically and verified on load. This module owns the snapshot
//! format and keeps these invariants: a file named `snapshot-<seq>.snap`
//! is complete and durable (written to a temp file, fsync'ed, renamed, the
//! directory fsync'ed); its header and payload each carry a CRC32C; and
//! loading never trusts a file that fails verification but falls back to
//! the next older one, reporting what it skipped and why.

use crate::error::{io_ctx, JournalError};
use crate::sys;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};

pub const SNAPSHOT_MAGIC: [u8; 4] = *b"MXSN";
pub const SNAPSHOT_VERSION: u16 = 1;
pub const SNAPSHOT_HEADER_LEN: usize = 32;
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// The snapshot header as laid out on disk (little-endian fields).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub magic: [u8; 4],
    pub version: u16,
    pub reserved: u16,
    pub seq: u64,
    pub payload_len: u64,
    /// CRC32C of the payload.
    pub payload_crc32c: u32,
    /// CRC32C of header bytes 0..28.
    pub header_crc32c: u32,
}

const _: () = assert!(size_of::<SnapshotHeader>() == SNAPSHOT_HEADER_LEN);
const _: () = assert!(offset_of!(SnapshotHeader, seq) == 8);
const _: () = assert!(offset_of!(SnapshotHeader, payload_len) == 16);
const _: () = assert!(offset_of!(SnapshotHeader, payload_crc32c) == 24);
const _: () = assert!(offset_of!(SnapshotHeader, header_crc32c) == 28);

impl SnapshotHeader {
    fn new(seq: u64, payload: &[u8]) -> Self {
        let mut h = SnapshotHeader {
            magic: SNAPSHOT_MAGIC,
            version: SNAPSHOT_VERSION,
            reserved: 0,
            seq,
            payload_len: payload.len() as u64,
            payload_crc32c: crc32c::crc32c(payload),
            header_crc32c: 0,
        };
        h.header_crc32c = crc32c::crc32c(&h.to_bytes()[..28]);
        h
    }

    fn to_bytes(self) -> [u8; SNAPSHOT_HEADER_LEN] {
        let mut b = [0u8; SNAPSHOT_HEADER_LEN];
        b[0..4].copy_from_slice(&self.magic);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.reserved.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.payload_len.to_le_bytes());
        b[24..28].copy_from_slice(&self.payload_crc32c.to_le_bytes());
        b[28..32].copy_from_slice(&self.header_crc32c.to_le_bytes());
        b
    }
}

/// A snapshot file found in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub seq: u64,
    pub path: PathBuf,
    /// File size in bytes.
    pub size: u64,
}

/// A snapshot that `load_newest_valid` did not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedSnapshot {
    pub seq: u64,
    pub path: PathBuf,
    pub reason: String,
}

/// Result of [`load_newest_valid`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedSnapshot {
    /// `(seq, state bytes)` of the newest snapshot that verified, if any.
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Newer snapshots that failed verification, newest first.
    pub skipped: Vec<SkippedSnapshot>,
}

/// File name of the snapshot taken at `seq`.
pub fn file_name(seq: u64) -> String {
    format!("{PREFIX}{seq:020}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes `bytes` as the snapshot at `seq`, atomically and durably, and
/// returns its path. An existing snapshot at the same seq is replaced.
pub fn write(dir: impl AsRef<Path>, seq: u64, bytes: &[u8]) -> Result<PathBuf, JournalError> {
    let dir = dir.as_ref();
    fs::create_dir_all(dir).map_err(io_ctx(|| format!("creating {}", dir.display())))?;
    let path = dir.join(file_name(seq));
    let tmp = dir.join(format!("{PREFIX}{seq:020}{TEMP_SUFFIX}"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_ctx(|| format!("creating {}", tmp.display())))?;
        f.write_all(&SnapshotHeader::new(seq, bytes).to_bytes())
            .and_then(|()| f.write_all(bytes))
            .map_err(io_ctx(|| format!("writing {}", tmp.display())))?;
        f.sync_all()
            .map_err(io_ctx(|| format!("fsyncing {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io_ctx(|| {
            format!("renaming {} to {}", tmp.display(), path.display())
        }))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sys::fsync_dir(dir)?;
    Ok(path)
}

/// Snapshot files in `dir`, sorted by seq ascending (a missing directory
/// has none). Temp files of interrupted writes are not listed.
pub fn list(dir: impl AsRef<Path>) -> Result<Vec<SnapshotInfo>, JournalError> {
    let dir = dir.as_ref();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io(format!("listing {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_ctx(|| format!("listing {}", dir.display())))?;
        let Some(seq) = entry.file_name().to_str().and_then(parse_name) else {
            continue;
        };
        let path = entry.path();
        let size = entry
            .metadata()
            .map_err(io_ctx(|| format!("reading metadata of {}", path.display())))?
            .len();
        out.push(SnapshotInfo { seq, path, size });
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// Checks a snapshot image; returns `(seq, payload)` or the reason.
fn check(bytes: &[u8], name_seq: Option<u64>) -> Result<(u64, &[u8]), String> {
    let Some(h) = bytes.first_chunk::<SNAPSHOT_HEADER_LEN>() else {
        return Err(format!(
            "file is {} bytes, shorter than the {SNAPSHOT_HEADER_LEN}-byte header",
            bytes.len()
        ));
    };
    if h[0..4] != SNAPSHOT_MAGIC {
        return Err(format!("bad magic {:02x?}", &h[0..4]));
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != SNAPSHOT_VERSION {
        return Err(format!("unsupported snapshot version {version}"));
    }
    let u64_at = |o: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&h[o..o + 8]);
        u64::from_le_bytes(w)
    };
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let stored = u32_at(28);
    let computed = crc32c::crc32c(&h[..28]);
    if stored != computed {
        return Err(format!(
            "header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    if u16::from_le_bytes([h[6], h[7]]) != 0 {
        return Err("non-zero reserved header field".into());
    }
    let seq = u64_at(8);
    if let Some(n) = name_seq.filter(|&n| n != seq) {
        return Err(format!(
            "header seq {seq} does not match the file name seq {n}"
        ));
    }
    let len = u64_at(16);
    let payload = &bytes[SNAPSHOT_HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(format!(
            "payload is {} bytes but the header says {len} (truncated or extended file)",
            payload.len()
        ));
    }
    let stored = u32_at(24);
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(format!(
            "payload checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    Ok((seq, payload))
}

fn read_checked(path: &Path) -> Result<(u64, Vec<u8>), JournalError> {
    let bytes = fs::read(path).map_err(io_ctx(|| format!("reading {}", path.display())))?;
    let name_seq = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_name);
    match check(&bytes, name_seq) {
        Ok((seq, payload)) => Ok((seq, payload.to_vec())),
        Err(detail) => Err(JournalError::SnapshotCorrupt {
            file: path.to_path_buf(),
            detail,
        }),
    }
}

/// Reads and fully verifies one snapshot file: `(seq, state bytes)`.
pub fn read(path: impl AsRef<Path>) -> Result<(u64, Vec<u8>), JournalError> {
    read_checked(path.as_ref())
}

/// Verifies a snapshot file completely (header, length, payload CRC, name)
/// and returns `(seq, payload length)`.
pub fn verify(path: impl AsRef<Path>) -> Result<(u64, u64), JournalError> {
    let (seq, payload) = read_checked(path.as_ref())?;
    Ok((seq, payload.len() as u64))
}

/// Loads the newest snapshot that verifies, falling back to older ones.
/// Damaged (or unreadable) newer files are listed in `skipped` with the
/// reason; none is deleted.
pub fn load_newest_valid(dir: impl AsRef<Path>) -> Result<LoadedSnapshot, JournalError> {
    let mut out = LoadedSnapshot::default();
    for info in list(dir)?.into_iter().rev() {
        match read_checked(&info.path) {
            Ok(found) => {
                out.snapshot = Some(found);
                break;
            }
            Err(e) => out.skipped.push(SkippedSnapshot {
                seq: info.seq,
                path: info.path,
                reason: e.to_string(),
            }),
        }
    }
    Ok(out)
}

/// Keeps the newest `keep` snapshots that verify and deletes every snapshot
/// older than the oldest kept one. Damaged snapshots newer than that are
/// left for inspection, and temp files are left alone (one may belong to a
/// write in progress). Returns the deleted paths. `keep` must be at least 1.
pub fn prune(dir: impl AsRef<Path>, keep: usize) -> Result<Vec<PathBuf>, JournalError> {
    let dir = dir.as_ref();
    if keep == 0 {
        return Err(JournalError::Config(
            "snapshot prune: keep must be at least 1".into(),
        ));
    }
    let snaps = list(dir)?;
    let mut valid = 0;
    let mut cut = None;
    for (i, info) in snaps.iter().enumerate().rev() {
        if verify(&info.path).is_ok() {
            valid += 1;
            if valid == keep {
                cut = Some(i);
                break;
            }
        }
    }
    let mut deleted = Vec::new();
    if let Some(cut) = cut {
        for info in &snaps[..cut] {
            fs::remove_file(&info.path)
                .map_err(io_ctx(|| format!("deleting {}", info.path.display())))?;
            deleted.push(info.path.clone());
        }
    }
    if !deleted.is_empty() {
        sys::fsync_dir(dir)?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_every_byte_of_damage() {
        assert_eq!(file_name(42), "snapshot-00000000000000000042.snap");
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert_eq!(parse_name("snapshot-42.snap"), None);
        let payload = b"state bytes".to_vec();
        let mut img = SnapshotHeader::new(42, &payload).to_bytes().to_vec();
        img.extend_from_slice(&payload);
        assert_eq!(check(&img, Some(42)), Ok((42, &payload[..])));
        assert!(check(&img, Some(43)).is_err());
        for i in 0..img.len() {
            let mut d = img.clone();
            d[i] ^= 0x01;
            assert!(check(&d, Some(42)).is_err(), "byte {i}");
        }
        assert!(check(&img[..img.len() - 1], None).is_err());
        assert!(check(&[], None).is_err());
    }
}
