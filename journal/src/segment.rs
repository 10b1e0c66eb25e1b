//! Segment files: naming, the 64-byte segment header, creation (temp file,
//! preallocation, fsync, rename, directory fsync) and the pure scanners that
//! recovery and readers run over a mapped segment. Invariants kept here: a
//! file named `<first_seq>.seg` always has a complete, checksummed header
//! (it is renamed into place only after the header is durable); the header's
//! `prev_first_seq` links each segment to its predecessor so a missing
//! middle segment is detected from headers alone; and the scanners accept a
//! batch only when every record in it is intact, the seqs are contiguous and
//! a matching commit marker closes it.

use crate::error::{io_ctx, DecodeError, JournalError};
use crate::record::{self, RecordKind, COMMIT_LEN, RECORD_ALIGN, RECORD_HEADER_LEN};
use crate::sys;
use memmap2::Mmap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::mem::{offset_of, size_of};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub(crate) const SEGMENT_MAGIC: [u8; 4] = *b"MXJS";
pub(crate) const SEGMENT_VERSION: u16 = 1;
pub(crate) const SEGMENT_HEADER_LEN: usize = 64;
pub(crate) const SEGMENT_EXT: &str = "seg";
const TEMP_SUFFIX: &str = ".seg.tmp";

/// The segment header as laid out on disk (little-endian fields).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub magic: [u8; 4],
    pub version: u16,
    pub header_len: u16,
    pub first_seq: u64,
    pub prev_first_seq: u64,
    pub segment_size: u64,
    pub reserved: [u8; 28],
    pub crc32c: u32,
}

const _: () = assert!(size_of::<SegmentHeader>() == SEGMENT_HEADER_LEN);
const _: () = assert!(offset_of!(SegmentHeader, first_seq) == 8);
const _: () = assert!(offset_of!(SegmentHeader, prev_first_seq) == 16);
const _: () = assert!(offset_of!(SegmentHeader, segment_size) == 24);
const _: () = assert!(offset_of!(SegmentHeader, reserved) == 32);
const _: () = assert!(offset_of!(SegmentHeader, crc32c) == 60);
const _: () = assert!(SEGMENT_HEADER_LEN & (RECORD_ALIGN - 1) == 0);

impl SegmentHeader {
    pub(crate) fn new(first_seq: u64, prev_first_seq: u64, segment_size: u64) -> Self {
        let mut h = SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: SEGMENT_VERSION,
            header_len: SEGMENT_HEADER_LEN as u16,
            first_seq,
            prev_first_seq,
            segment_size,
            reserved: [0; 28],
            crc32c: 0,
        };
        h.crc32c = crc32c::crc32c(&h.to_bytes()[..60]);
        h
    }

    pub(crate) fn to_bytes(self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..4].copy_from_slice(&self.magic);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.header_len.to_le_bytes());
        b[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.prev_first_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.segment_size.to_le_bytes());
        b[32..60].copy_from_slice(&self.reserved);
        b[60..64].copy_from_slice(&self.crc32c.to_le_bytes());
        b
    }

    /// Parses and validates a header; the error string is for operators.
    pub(crate) fn parse(b: &[u8]) -> Result<Self, String> {
        let Some(b) = b.first_chunk::<SEGMENT_HEADER_LEN>() else {
            return Err(format!(
                "file is {} bytes, shorter than the {SEGMENT_HEADER_LEN}-byte header",
                b.len()
            ));
        };
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        let mut reserved = [0u8; 28];
        reserved.copy_from_slice(&b[32..60]);
        let h = SegmentHeader {
            magic: [b[0], b[1], b[2], b[3]],
            version: u16::from_le_bytes([b[4], b[5]]),
            header_len: u16::from_le_bytes([b[6], b[7]]),
            first_seq: u64_at(8),
            prev_first_seq: u64_at(16),
            segment_size: u64_at(24),
            reserved,
            crc32c: u32::from_le_bytes([b[60], b[61], b[62], b[63]]),
        };
        if h.magic != SEGMENT_MAGIC {
            return Err(format!("bad magic {:02x?}", h.magic));
        }
        if h.version != SEGMENT_VERSION {
            return Err(format!("unsupported segment version {}", h.version));
        }
        let computed = crc32c::crc32c(&b[..60]);
        if computed != h.crc32c {
            return Err(format!(
                "header checksum mismatch (stored {:#010x}, computed {computed:#010x})",
                h.crc32c
            ));
        }
        if usize::from(h.header_len) != SEGMENT_HEADER_LEN {
            return Err(format!("unexpected header length {}", h.header_len));
        }
        Ok(h)
    }
}

/// File name of the segment whose first record has `first_seq`.
pub(crate) fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{SEGMENT_EXT}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment file found in the journal directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub first_seq: u64,
    pub path: PathBuf,
}

/// Lists the segment files of `dir`, sorted by first seq. Other files are
/// ignored. A missing directory is an empty journal.
pub(crate) fn list(dir: &Path) -> Result<Vec<SegmentFile>, JournalError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io(format!("listing {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_ctx(|| format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        if let Some(first_seq) = name.to_str().and_then(parse_name) {
            out.push(SegmentFile {
                first_seq,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// Reads and validates the header of a segment file, including that it
/// agrees with the file name.
pub(crate) fn read_header(seg: &SegmentFile) -> Result<SegmentHeader, JournalError> {
    let mut buf = Vec::with_capacity(SEGMENT_HEADER_LEN);
    File::open(&seg.path)
        .and_then(|f| f.take(SEGMENT_HEADER_LEN as u64).read_to_end(&mut buf))
        .map_err(io_ctx(|| {
            format!("reading header of {}", seg.path.display())
        }))?;
    let header = SegmentHeader::parse(&buf).map_err(|detail| JournalError::BadSegmentHeader {
        file: seg.path.clone(),
        detail,
    })?;
    check_first_seq(&header, seg)?;
    Ok(header)
}

fn check_first_seq(header: &SegmentHeader, seg: &SegmentFile) -> Result<(), JournalError> {
    let detail = if header.first_seq != seg.first_seq {
        format!(
            "header says first seq {} but the file name says {}",
            header.first_seq, seg.first_seq
        )
    } else if header.first_seq == 0 {
        "first seq 0 (sequence numbers start at 1)".to_string()
    } else {
        return Ok(());
    };
    Err(JournalError::BadSegmentHeader {
        file: seg.path.clone(),
        detail,
    })
}

/// Validates every header and the predecessor links between neighbours.
pub(crate) fn check_chain(segs: &[SegmentFile]) -> Result<Vec<SegmentHeader>, JournalError> {
    let headers = segs
        .iter()
        .map(read_header)
        .collect::<Result<Vec<_>, _>>()?;
    for (i, pair) in segs.windows(2).enumerate() {
        let expected_prev_first = headers[i + 1].prev_first_seq;
        if expected_prev_first != pair[0].first_seq {
            return Err(JournalError::MissingSegment {
                prev: pair[0].path.clone(),
                next: pair[1].path.clone(),
                expected_prev_first,
            });
        }
    }
    Ok(headers)
}

/// Removes leftovers of an interrupted segment creation.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<usize, JournalError> {
    let mut removed = 0;
    let entries = fs::read_dir(dir).map_err(io_ctx(|| format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_ctx(|| format!("listing {}", dir.display())))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(TEMP_SUFFIX))
        {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_ctx(|| format!("removing {}", path.display())))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Creates a preallocated, zero-filled segment with a durable header:
/// write to `<name>.tmp`, fsync, rename, fsync the directory (`sync` false
/// skips the two fsyncs, for `Durability::None`). An existing file of the
/// same name is an error unless `replace` (the caller knows it holds no
/// committed batch); the rename then swaps it atomically.
pub(crate) fn create(
    dir: &Path,
    first_seq: u64,
    prev_first_seq: u64,
    segment_size: u64,
    sync: bool,
    replace: bool,
) -> Result<(File, PathBuf), JournalError> {
    let path = dir.join(file_name(first_seq));
    let tmp = dir.join(format!("{}{TEMP_SUFFIX}", &file_name(first_seq)[..20]));
    let result = (|| {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_ctx(|| format!("creating {}", tmp.display())))?;
        sys::preallocate(&file, segment_size).map_err(io_ctx(|| {
            format!("preallocating {} bytes for {}", segment_size, tmp.display())
        }))?;
        let header = SegmentHeader::new(first_seq, prev_first_seq, segment_size);
        file.write_all(&header.to_bytes())
            .map_err(io_ctx(|| format!("writing header of {}", tmp.display())))?;
        if sync {
            file.sync_all()
                .map_err(io_ctx(|| format!("fsyncing {}", tmp.display())))?;
        }
        if !replace && path.exists() {
            return Err(JournalError::io(
                format!("creating {}", path.display()),
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "segment already exists"),
            ));
        }
        fs::rename(&tmp, &path).map_err(io_ctx(|| {
            format!("renaming {} to {}", tmp.display(), path.display())
        }))?;
        Ok(file)
    })();
    match result {
        Ok(file) => {
            if sync {
                sys::fsync_dir(dir)?;
            }
            Ok((file, path))
        }
        Err(e) => {
            // Best effort: a leftover temp file is also removed at next open.
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Why a scan or a batch verification stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopKind {
    /// Fewer bytes than a record header remain in the segment.
    EndOfSegment,
    /// The record at this offset does not decode (`Zero` = written data ends).
    Invalid(DecodeError),
    /// An intact data record with an unexpected seq.
    SeqMismatch { expected: u64, found: u64 },
    /// A commit marker that does not close the records before it.
    BadMarker(String),
}

impl StopKind {
    /// True when nothing was ever written here (clean end of data).
    #[cfg(test)]
    pub(crate) fn is_clean_end(&self) -> bool {
        matches!(
            self,
            StopKind::EndOfSegment | StopKind::Invalid(DecodeError::Zero)
        )
    }
}

impl fmt::Display for StopKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopKind::EndOfSegment => write!(f, "end of segment"),
            StopKind::Invalid(e) => write!(f, "{e}"),
            StopKind::SeqMismatch { expected, found } => {
                write!(
                    f,
                    "record has seq {found} where seq {expected} was expected"
                )
            }
            StopKind::BadMarker(s) => write!(f, "bad commit marker: {s}"),
        }
    }
}

/// Where and why a batch could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchStop {
    pub offset: usize,
    pub kind: StopKind,
}

/// A verified, committed batch inside a segment buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchSpan {
    /// Offset of the first data record.
    pub start: usize,
    /// Offset of the commit marker (end of the data records).
    pub records_end: usize,
    /// Offset just after the commit marker.
    pub end: usize,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Verifies the batch starting at `pos`, whose first record must carry
/// `expected_seq`: every record intact, seqs contiguous, closed by a commit
/// marker naming the batch's first and last seq.
pub(crate) fn verify_batch(
    buf: &[u8],
    pos: usize,
    expected_seq: u64,
) -> Result<BatchSpan, BatchStop> {
    let mut at = pos;
    let mut next = expected_seq;
    loop {
        let stop = |kind| Err(BatchStop { offset: at, kind });
        let Some(rest) = buf.get(at..).filter(|r| r.len() >= RECORD_HEADER_LEN) else {
            return stop(StopKind::EndOfSegment);
        };
        let rec = match record::decode(rest) {
            Ok(r) => r,
            Err(e) => return stop(StopKind::Invalid(e)),
        };
        match rec.kind {
            RecordKind::Data => {
                if rec.seq != next {
                    return stop(StopKind::SeqMismatch {
                        expected: next,
                        found: rec.seq,
                    });
                }
                let Some(n) = next.checked_add(1) else {
                    return stop(StopKind::BadMarker("seq overflow".into()));
                };
                next = n;
                at += rec.encoded_len();
            }
            RecordKind::Commit => {
                if next == expected_seq {
                    return stop(StopKind::BadMarker("commit marker with no records".into()));
                }
                let last = next - 1;
                let first = rec.commit_batch_first();
                if rec.seq != last || first != Some(expected_seq) {
                    return stop(StopKind::BadMarker(format!(
                        "marker for seqs {first:?}..={} does not close records {expected_seq}..={last}",
                        rec.seq
                    )));
                }
                return Ok(BatchSpan {
                    start: pos,
                    records_end: at,
                    end: at + rec.encoded_len(),
                    first_seq: expected_seq,
                    last_seq: last,
                });
            }
        }
    }
}

/// Result of scanning a whole segment from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Offset just after the last commit marker (header length if none).
    pub committed_end: usize,
    /// Last committed seq (`first_seq - 1` when the segment has none).
    pub committed_seq: u64,
    pub committed_records: u64,
    /// Where the chain of committed batches stopped.
    pub stop: BatchStop,
}

/// Walks committed batches from the segment header on.
pub(crate) fn scan(buf: &[u8], first_seq: u64) -> Scan {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut next = first_seq;
    let mut records = 0u64;
    loop {
        match verify_batch(buf, pos, next) {
            Ok(span) => {
                records += span.last_seq - span.first_seq + 1;
                next = span.last_seq + 1;
                pos = span.end;
            }
            Err(stop) => {
                return Scan {
                    committed_end: pos,
                    committed_seq: next.wrapping_sub(1),
                    committed_records: records,
                    stop,
                }
            }
        }
    }
}

/// End (8-byte aligned) of the last non-zero byte at or after `from`;
/// `from` itself when everything after it is zero.
pub(crate) fn dirty_end(buf: &[u8], from: usize) -> usize {
    const CHUNK: usize = 4096;
    let Some(tail) = buf.get(from..) else {
        return from;
    };
    let mut end = tail.len();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &tail[start..end];
        // An OR over whole words (no early exit, so it vectorises) tells a
        // zero chunk apart at memory speed; a byte-wise search from the end
        // ran at about one byte per cycle, a 256 MiB segment at every start.
        let words = chunk.chunks_exact(8);
        let rest = words.remainder().iter().fold(0u8, |a, &b| a | b);
        let any = words.fold(0u64, |a, w| {
            a | u64::from_ne_bytes(w.try_into().expect("chunks_exact(8)"))
        });
        if any != 0 || rest != 0 {
            if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
                return record::align_up(from + start + i + 1).min(buf.len());
            }
        }
        end = start;
    }
    from
}

/// Evidence that acknowledged data lies after a damaged spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evidence {
    pub offset: usize,
    pub seq: u64,
}

/// Searches `[from, end)` (8-byte steps) for intact records proving that
/// the batch after `committed_seq` was durable before the damage happened:
/// a commit marker of a later batch (the writer starts a batch only after
/// the previous one is durable), or a data record following an intact
/// marker. A single torn batch, the only thing a crash can leave, never
/// matches.
pub(crate) fn committed_after(
    buf: &[u8],
    from: usize,
    end: usize,
    committed_seq: u64,
) -> Option<Evidence> {
    let end = end.min(buf.len());
    let mut at = record::align_up(from);
    let mut marker_seq: Option<u64> = None;
    while at + RECORD_HEADER_LEN <= end {
        let Ok(rec) = record::decode(&buf[at..end]) else {
            at += RECORD_ALIGN;
            continue;
        };
        match rec.kind {
            RecordKind::Commit => {
                let later_batch = rec
                    .commit_batch_first()
                    .is_some_and(|first| first > committed_seq.saturating_add(1));
                if later_batch {
                    return Some(Evidence {
                        offset: at,
                        seq: rec.seq,
                    });
                }
                marker_seq = Some(marker_seq.map_or(rec.seq, |m| m.max(rec.seq)));
            }
            RecordKind::Data => {
                if marker_seq.is_some_and(|m| rec.seq > m) {
                    return Some(Evidence {
                        offset: at,
                        seq: rec.seq,
                    });
                }
            }
        }
        at += rec.encoded_len();
    }
    None
}

/// Space left for records in a segment of `segment_size` bytes.
pub(crate) fn capacity(segment_size: u64) -> usize {
    usize::try_from(segment_size)
        .unwrap_or(usize::MAX)
        .saturating_sub(SEGMENT_HEADER_LEN)
}

/// Largest payload that fits an empty segment together with its marker.
pub(crate) fn max_payload(segment_size: u64) -> usize {
    capacity(segment_size).saturating_sub(RECORD_HEADER_LEN + COMMIT_LEN) & !(RECORD_ALIGN - 1)
}

/// A read-only mapping of one segment, for readers and tailers.
#[derive(Debug)]
pub(crate) struct MappedSegment {
    pub first_seq: u64,
    pub path: PathBuf,
    pub map: Mmap,
    /// (device, inode) of the mapped file, to notice an atomic replacement.
    id: (u64, u64),
}

impl MappedSegment {
    pub(crate) fn open(seg: &SegmentFile) -> Result<Self, JournalError> {
        let file =
            File::open(&seg.path).map_err(io_ctx(|| format!("opening {}", seg.path.display())))?;
        let meta = file.metadata().map_err(io_ctx(|| {
            format!("reading metadata of {}", seg.path.display())
        }))?;
        let len = meta.len();
        if len < SEGMENT_HEADER_LEN as u64 {
            return Err(JournalError::BadSegmentHeader {
                file: seg.path.clone(),
                detail: format!("file is only {len} bytes"),
            });
        }
        let map = sys::map_read(&file, &seg.path)?;
        let header =
            SegmentHeader::parse(&map).map_err(|detail| JournalError::BadSegmentHeader {
                file: seg.path.clone(),
                detail,
            })?;
        check_first_seq(&header, seg)?;
        Ok(MappedSegment {
            first_seq: seg.first_seq,
            path: seg.path.clone(),
            map,
            id: (meta.dev(), meta.ino()),
        })
    }

    /// True when the path now names a different file than the one mapped
    /// (the writer replaced a segment that held no committed batch).
    pub(crate) fn replaced(&self) -> bool {
        fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) != self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode_into, encoded_len};
    use proptest::prelude::*;

    fn push(buf: &mut Vec<u8>, kind: RecordKind, seq: u64, payload: &[u8]) {
        let at = buf.len();
        buf.resize(at + encoded_len(payload.len()), 0);
        encode_into(&mut buf[at..], kind, seq, seq * 10, payload).expect("fits");
    }

    /// A segment image with batches of the given sizes starting at seq 1.
    fn image(batches: &[u64]) -> Vec<u8> {
        let mut buf = SegmentHeader::new(1, 0, 0).to_bytes().to_vec();
        let mut seq = 1;
        for &n in batches {
            let first = seq;
            for _ in 0..n {
                push(
                    &mut buf,
                    RecordKind::Data,
                    seq,
                    &seq.to_le_bytes()[..(seq % 8) as usize],
                );
                seq += 1;
            }
            push(&mut buf, RecordKind::Commit, seq - 1, &first.to_le_bytes());
        }
        buf.resize(buf.len() + 256, 0);
        buf
    }

    #[test]
    fn names_sort_numerically() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_name("1.seg"), None);
        assert_eq!(parse_name("0000000000000000000x.seg"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn header_round_trip_and_damage() {
        let h = SegmentHeader::new(5, 1, 4096);
        let b = h.to_bytes();
        assert_eq!(SegmentHeader::parse(&b), Ok(h));
        for i in 0..b.len() {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(SegmentHeader::parse(&d).is_err(), "byte {i}");
        }
    }

    #[test]
    fn scan_counts_committed_batches_only() {
        let mut img = image(&[3, 1, 4]);
        let s = scan(&img, 1);
        assert_eq!((s.committed_seq, s.committed_records), (8, 8));
        assert!(s.stop.kind.is_clean_end());
        // An unclosed batch after the last marker is not committed.
        let end = s.committed_end;
        let mut tail = Vec::new();
        push(&mut tail, RecordKind::Data, 9, b"x");
        img[end..end + tail.len()].copy_from_slice(&tail);
        let s2 = scan(&img, 1);
        assert_eq!((s2.committed_seq, s2.committed_end), (8, end));
        assert_eq!(s2.stop.kind, StopKind::Invalid(DecodeError::Zero));
    }

    #[test]
    fn evidence_only_for_later_batches() {
        let img = image(&[2, 2, 2]);
        let first_batch_end = verify_batch(&img, SEGMENT_HEADER_LEN, 1).expect("ok").end;
        // Damage in batch 2: batch 3's marker proves batch 2 was durable.
        let ev = committed_after(&img, first_batch_end + 8, img.len(), 2);
        assert!(ev.is_some());
        // Damage in the last batch: nothing after it, so it may be torn.
        let s = scan(&img, 1);
        let last_start = verify_batch(&img, first_batch_end, 3).expect("ok").end;
        assert_eq!(
            committed_after(&img, last_start + 8, s.committed_end, 4),
            None
        );
    }

    #[test]
    fn dirty_end_finds_last_non_zero_byte() {
        let mut b = vec![0u8; 10_000];
        assert_eq!(dirty_end(&b, 100), 100);
        b[5000] = 1;
        assert_eq!(dirty_end(&b, 100), 5008);
        assert_eq!(dirty_end(&b, 20_000), 20_000);
    }

    /// The word-wise scan against the obvious byte-wise one: any length
    /// (remainders of the 8-byte words and the 4 KiB chunks), any start,
    /// the last non-zero byte anywhere (or none).
    fn dirty_end_by_bytes(buf: &[u8], from: usize) -> usize {
        match buf
            .get(from..)
            .and_then(|t| t.iter().rposition(|&b| b != 0))
        {
            Some(i) => record::align_up(from + i + 1).min(buf.len()),
            None => from,
        }
    }

    proptest! {
        #[test]
        fn dirty_end_agrees_with_a_byte_scan(len in 0usize..20_000, from in 0usize..21_000,
                                             marks in proptest::collection::vec((any::<usize>(), 1u8..), 0..3)) {
            let mut b = vec![0u8; len];
            for (at, v) in marks {
                if len > 0 {
                    b[at % len] = v;
                }
            }
            prop_assert_eq!(dirty_end(&b, from), dirty_end_by_bytes(&b, from));
        }
    }

    proptest! {
        #[test]
        fn scanners_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), first in any::<u64>()) {
            let s = scan(&bytes, first);
            prop_assert!(s.committed_end <= bytes.len().max(SEGMENT_HEADER_LEN));
            let _ = committed_after(&bytes, 0, bytes.len(), first);
            let _ = dirty_end(&bytes, 0);
            let _ = SegmentHeader::parse(&bytes);
        }

        #[test]
        fn scan_of_mutated_image_never_panics(batches in proptest::collection::vec(1u64..5, 1..6),
                                               flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut img = image(&batches);
            let total: u64 = batches.iter().sum();
            for (i, x) in flips {
                let i = i % img.len();
                img[i] ^= x;
            }
            let s = scan(&img, 1);
            prop_assert!(s.committed_seq <= total);
            let _ = committed_after(&img, s.stop.offset + 8, img.len(), s.committed_seq);
        }
    }
}
