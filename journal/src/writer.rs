//! The single journal writer and its recovery. It owns the active segment's
//! file (recovery alone maps it, to scan it and to zero a torn tail) and
//! keeps these invariants:
//! seqs are assigned contiguously from the recovered last seq; every byte of
//! the active segment after the last commit is zero; a batch lives in one
//! segment and reaches the file only at its commit, records and commit
//! marker in one `pwrite` (and, with `Durability::Fsync`, then
//! `fdatasync`); `durable_seq` is published only after that; the watermark
//! is stored only for seqs already durable; and after any failed write or
//! flush the writer is poisoned and refuses all further work.
//!
//! Why `pwrite` and not stores through the mapping: a page written through
//! a shared mapping is dirty in the page table, and `msync` has to
//! write-protect it again and flush the TLB of every CPU running one of the
//! process's threads (an inter-processor interrupt per commit, a VM exit
//! each under virtualization), after which the next append faults to make
//! it writable again. On the 2-core VM of `benches/RESULTS.md` that was a
//! third of the journaler's CPU; with `pwrite` + `fdatasync` the server used
//! 7.5% less CPU at 100,000 WebSocket orders/s and the median
//! acknowledgement fell from 3.4 to 2.6 ms. Readers still map the segments
//! (the page cache is the same) and read committed batches in place.

use crate::error::{io_ctx, JournalError};
use crate::record::{self, RecordKind, COMMIT_LEN};
use crate::segment::{self, SegmentFile, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::sys;
use crate::watermark::Watermark;
use crate::DurableSeq;
use memmap2::MmapMut;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

/// Smallest accepted segment size.
pub const MIN_SEGMENT_SIZE: u64 = 4096;

/// Zeros written ahead of the commits, per chunk (fsync durability only).
/// A fresh segment's blocks are fallocated but unwritten, and the first
/// write into an unwritten block makes the next fdatasync also convert the
/// extent (a metadata write): every commit paid it. Writing zeros ahead in
/// chunks moves that work to one commit per chunk. fdatasync of 16 KiB
/// commits on the dev VM: p50 267 -> 121 us, mean 293 -> 144 us
/// (benches/RESULTS.md, 2026-11-27 12:30). Zeros are what unwritten bytes
/// read as, so readers and recovery see no difference.
const ZERO_CHUNK: usize = 256 * 1024;
/// A chunk of zeros is written when fewer than this many zeroed bytes are
/// left ahead of the last commit.
const ZERO_LOW: usize = 64 * 1024;
static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];

/// When a committed batch counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Group commit: one `fdatasync` per `commit` (after the batch's
    /// `pwrite`); survives power loss. The default.
    #[default]
    Fsync,
    /// Page cache only: survives a process crash (kill -9), not power loss.
    /// The watermark is still written (unsynced), so after a power loss
    /// recovery may refuse to start until the operator accepts the loss with
    /// `repair`.
    Os,
    /// No flushes and no watermark updates at all (benchmarks).
    None,
}

/// How to open a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Journal directory (created if missing).
    pub dir: PathBuf,
    /// Size of each preallocated segment file in bytes (multiple of 8, at
    /// least [`MIN_SEGMENT_SIZE`]). Default 256 MiB.
    pub segment_size: u64,
    pub durability: Durability,
    /// Allow recovery to cut committed records or go below the watermark
    /// (explicit operator decision; reported in [`RecoveryReport::repair`]).
    pub repair: bool,
    /// Commits between watermark updates (1 = every commit; each update is
    /// one extra fdatasync under `Fsync`). Default 64. Also stored by
    /// [`Writer::close`].
    pub watermark_interval: u32,
}

impl JournalConfig {
    pub const DEFAULT_SEGMENT_SIZE: u64 = 256 << 20;
    pub const DEFAULT_WATERMARK_INTERVAL: u32 = 64;

    /// Defaults: 256 MiB segments, `Durability::Fsync`, no repair.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            segment_size: Self::DEFAULT_SEGMENT_SIZE,
            durability: Durability::Fsync,
            repair: false,
            watermark_interval: Self::DEFAULT_WATERMARK_INTERVAL,
        }
    }

    fn validate(&self) -> Result<(), JournalError> {
        if self.segment_size < MIN_SEGMENT_SIZE || self.segment_size & 7 != 0 {
            return Err(JournalError::Config(format!(
                "segment_size {} must be a multiple of 8 and at least {MIN_SEGMENT_SIZE}",
                self.segment_size
            )));
        }
        if usize::try_from(self.segment_size).is_err() || i64::try_from(self.segment_size).is_err()
        {
            return Err(JournalError::Config(format!(
                "segment_size {} does not fit in memory addresses",
                self.segment_size
            )));
        }
        if self.watermark_interval == 0 {
            return Err(JournalError::Config(
                "watermark_interval must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Oldest seq still in the journal (the first segment's first seq).
    pub first_seq: u64,
    /// Last committed seq after recovery (0 for an empty journal).
    pub last_seq: u64,
    /// Committed records available, `first_seq..=last_seq`.
    pub records_recovered: u64,
    /// Bytes of torn or uncommitted tail that were zeroed.
    pub bytes_truncated: u64,
    /// Tail segments removed because they held no committed batch (a crash
    /// during rollover).
    pub segments_removed: Vec<PathBuf>,
    /// Watermark found on disk before recovery.
    pub watermark: u64,
    /// Set when `repair` had to cut committed data or lower the watermark.
    pub repair: Option<RepairAction>,
}

/// What an explicitly requested repair cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairAction {
    /// Segment where the journal now ends.
    pub file: PathBuf,
    /// Offset in `file` where the journal now ends.
    pub offset: u64,
    /// Last seq kept.
    pub kept_seq: u64,
    /// Watermark before the repair (it is rewritten to `kept_seq`).
    pub watermark_before: u64,
    /// Human-readable list of what was wrong.
    pub reasons: Vec<String>,
}

#[derive(Debug)]
struct Active {
    path: PathBuf,
    first_seq: u64,
    prev_first_seq: u64,
    /// Commits are written here (`pwrite`, `fdatasync`).
    file: File,
    /// Size of the (preallocated) segment file in bytes.
    len: usize,
    /// End of what this writer wrote into the segment: commits, then the
    /// zeros written ahead of them (kept up to date under fsync
    /// durability, the only policy that writes zeros ahead).
    written_to: usize,
}

/// The single writer of a journal directory (guarded by an flock).
///
/// Dropping a writer releases its resources and nothing else: pending
/// (uncommitted) records are discarded by the next recovery, exactly as
/// after a crash. Call [`Writer::close`] for a clean shutdown.
#[derive(Debug)]
pub struct Writer {
    cfg: JournalConfig,
    _lock: File,
    active: Active,
    /// Start of the pending batch (end of the last commit marker).
    batch_start: usize,
    last_seq: u64,
    last_ts: u64,
    committed_seq: u64,
    durable: DurableSeq,
    watermark: Watermark,
    commits_since_watermark: u32,
    poisoned: Option<String>,
    max_payload: usize,
    /// The pending batch's encoded records, written to the active segment
    /// at `batch_start` at commit.
    pending: Vec<u8>,
    #[cfg(test)]
    fail_next_flush: bool,
}

impl Writer {
    /// Opens (or creates) the journal in `cfg.dir`, running recovery on the
    /// newest segment first. See the crate docs for the recovery rules.
    pub fn open(cfg: JournalConfig) -> Result<(Writer, RecoveryReport), JournalError> {
        cfg.validate()?;
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir).map_err(io_ctx(|| format!("creating {}", dir.display())))?;
        let lock = sys::lock_dir(&dir)?;
        if segment::remove_temp_files(&dir)? > 0 {
            sys::fsync_dir(&dir)?;
        }
        let (mut watermark, wm_note) = Watermark::load(&dir, cfg.repair)?;
        let wm = watermark.seq();
        let mut report = RecoveryReport {
            watermark: wm,
            ..RecoveryReport::default()
        };
        let mut reasons: Vec<String> = wm_note.into_iter().collect();

        let mut segs = segment::list(&dir)?;
        let mut headers = segment::check_chain(&segs)?;
        if segs.is_empty() {
            if wm > 0 {
                let detail = "no segment files".to_string();
                if !cfg.repair {
                    return Err(JournalError::BelowWatermark {
                        file: dir.clone(),
                        offset: 0,
                        detail,
                        recovered_seq: 0,
                        watermark: wm,
                    });
                }
                reasons.push(detail);
            }
            let sync = cfg.durability != Durability::None;
            segment::create(&dir, 1, 0, cfg.segment_size, sync, false)?;
            segs = segment::list(&dir)?;
            headers = segment::check_chain(&segs)?;
        }

        let (seg, header, file, map, scan) = loop {
            let (seg, header) = match (segs.last(), headers.last()) {
                (Some(s), Some(h)) => (s.clone(), *h),
                _ => {
                    return Err(JournalError::Config(
                        "internal: segment list became empty during recovery".into(),
                    ))
                }
            };
            let (file, mut map) = open_for_write(&seg, &header)?;
            let scan = segment::scan(&map, seg.first_seq);
            let dirty = segment::dirty_end(&map, scan.committed_end);
            let evidence =
                segment::committed_after(&map, scan.stop.offset + 8, dirty, scan.committed_seq);
            if let Some(ev) = evidence {
                let detail = format!(
                    "{}; an intact commit of a later batch (seq {}) follows at offset {}",
                    scan.stop.kind, ev.seq, ev.offset
                );
                if !cfg.repair {
                    return Err(JournalError::Corrupt {
                        file: seg.path.clone(),
                        offset: scan.stop.offset as u64,
                        detail,
                        keep_seq: scan.committed_seq,
                    });
                }
                reasons.push(format!(
                    "{} offset {}: {detail}",
                    seg.path.display(),
                    scan.stop.offset
                ));
            }
            let has_committed = scan.committed_records > 0;
            if !has_committed && segs.len() > 1 {
                if seg.first_seq <= wm {
                    let detail = format!("segment holds no committed batch ({})", scan.stop.kind);
                    if !cfg.repair {
                        return Err(JournalError::BelowWatermark {
                            file: seg.path.clone(),
                            offset: scan.stop.offset as u64,
                            detail,
                            recovered_seq: seg.first_seq - 1,
                            watermark: wm,
                        });
                    }
                    reasons.push(format!("{}: {detail}", seg.path.display()));
                }
                drop(map);
                drop(file);
                fs::remove_file(&seg.path)
                    .map_err(io_ctx(|| format!("removing {}", seg.path.display())))?;
                sys::fsync_dir(&dir)?;
                report.segments_removed.push(seg.path.clone());
                segs.pop();
                headers.pop();
                continue;
            }
            if scan.committed_seq < wm {
                let detail = scan.stop.kind.to_string();
                if !cfg.repair {
                    return Err(JournalError::BelowWatermark {
                        file: seg.path.clone(),
                        offset: scan.stop.offset as u64,
                        detail,
                        recovered_seq: scan.committed_seq,
                        watermark: wm,
                    });
                }
                reasons.push(format!(
                    "{} offset {}: journal ends at seq {} below watermark {wm} ({detail})",
                    seg.path.display(),
                    scan.stop.offset,
                    scan.committed_seq
                ));
            }
            if dirty > scan.committed_end {
                map[scan.committed_end..dirty].fill(0);
                map.flush_range(scan.committed_end, dirty - scan.committed_end)
                    .map_err(io_ctx(|| {
                        format!("flushing truncated tail of {}", seg.path.display())
                    }))?;
                report.bytes_truncated += (dirty - scan.committed_end) as u64;
            }
            break (seg, header, file, map, scan);
        };

        let committed = scan.committed_seq;
        if cfg.durability != Durability::None {
            // Committed batches found in the page cache (written under `Os`,
            // or whose flush was cut short) become durable before we build
            // on them or raise the watermark.
            map.flush()
                .map_err(io_ctx(|| format!("flushing {}", seg.path.display())))?;
        }
        if !reasons.is_empty() {
            watermark.store(committed, true)?;
            report.repair = Some(RepairAction {
                file: seg.path.clone(),
                offset: scan.committed_end as u64,
                kept_seq: committed,
                watermark_before: wm,
                reasons,
            });
        } else if cfg.durability != Durability::None && committed > wm {
            watermark.store(committed, cfg.durability == Durability::Fsync)?;
        }

        report.first_seq = segs.first().map_or(1, |s| s.first_seq);
        report.last_seq = committed;
        report.records_recovered = (committed + 1).saturating_sub(report.first_seq);

        let max_payload = segment::max_payload(cfg.segment_size);
        let writer = Writer {
            active: Active {
                path: seg.path,
                first_seq: seg.first_seq,
                prev_first_seq: header.prev_first_seq,
                file,
                len: map.len(),
                written_to: scan.committed_end,
            },
            batch_start: scan.committed_end,
            last_seq: committed,
            last_ts: 0,
            committed_seq: committed,
            durable: DurableSeq::new(committed),
            watermark,
            commits_since_watermark: 0,
            poisoned: None,
            max_payload,
            pending: Vec::with_capacity(1 << 16),
            _lock: lock,
            cfg,
            #[cfg(test)]
            fail_next_flush: false,
        };
        Ok((writer, report))
    }

    /// Appends one record to the pending batch and returns its seq. The
    /// record is neither visible to readers nor durable until [`commit`].
    /// On `BatchTooLarge` nothing was appended: commit and retry.
    ///
    /// [`commit`]: Writer::commit
    pub fn append(&mut self, timestamp_ns: u64, payload: &[u8]) -> Result<u64, JournalError> {
        self.check_poison()?;
        if payload.len() > self.max_payload {
            return Err(JournalError::PayloadTooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        let seq = self
            .last_seq
            .checked_add(1)
            .ok_or(JournalError::SeqExhausted {
                last_seq: self.last_seq,
            })?;
        let rec_len = record::encoded_len(payload.len());
        // Room is always kept for the batch's commit marker.
        if self.write_pos() + rec_len + COMMIT_LEN > self.active.len {
            self.roll_over(rec_len)?;
        }
        self.encode_pending(rec_len, RecordKind::Data, seq, timestamp_ns, payload)?;
        self.last_seq = seq;
        self.last_ts = timestamp_ns;
        Ok(seq)
    }

    /// Closes the pending batch with a commit marker, makes it durable per
    /// the configured policy, publishes it to [`DurableSeq`] handles and
    /// returns the durable seq. A no-op when nothing is pending. If the
    /// flush fails the writer is poisoned and the batch is not published.
    pub fn commit(&mut self) -> Result<u64, JournalError> {
        let seq = self.commit_batch()?;
        self.store_watermark_if_due();
        Ok(seq)
    }

    /// [`Writer::commit`] without the periodic watermark update, for a
    /// caller that first hands the durable batch on and then calls
    /// [`Writer::store_watermark_if_due`], so that the watermark's own
    /// fdatasync (every `watermark_interval` commits) is not on the batch's
    /// reply path.
    pub fn commit_batch(&mut self) -> Result<u64, JournalError> {
        self.check_poison()?;
        if self.last_seq == self.committed_seq {
            return Ok(self.committed_seq);
        }
        let batch_first = self.committed_seq + 1;
        self.encode_pending(
            COMMIT_LEN,
            RecordKind::Commit,
            self.last_seq,
            self.last_ts,
            &batch_first.to_le_bytes(),
        )?;
        if let Err(e) = self.write_pending() {
            return Err(self.poison(
                format!("writing batch {batch_first}..={}", self.last_seq),
                e,
            ));
        }
        if self.cfg.durability == Durability::Fsync {
            if let Err(e) = self.zero_ahead() {
                return Err(self.poison("writing zeros ahead of the commits".into(), e));
            }
            if let Err(e) = self.sync_data() {
                return Err(self.poison(
                    format!("fdatasync of batch {batch_first}..={}", self.last_seq),
                    e,
                ));
            }
        }
        self.committed_seq = self.last_seq;
        self.batch_start = self.write_pos();
        self.pending.clear();
        self.durable.publish(self.committed_seq);
        self.commits_since_watermark += 1;
        Ok(self.committed_seq)
    }

    /// Store the durable seq as the watermark when `watermark_interval`
    /// commits have passed since the last store. The batch itself is
    /// already durable and published, so a failure here does not undo it;
    /// the failed fsync still poisons every later call.
    pub fn store_watermark_if_due(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        if self.cfg.durability != Durability::None
            && self.commits_since_watermark >= self.cfg.watermark_interval
        {
            self.commits_since_watermark = 0;
            let sync = self.cfg.durability == Durability::Fsync;
            if let Err(e) = self.watermark.store(self.committed_seq, sync) {
                let _ = self.poison("storing the watermark".into(), e);
            }
        }
    }

    /// Highest seq that is durable (committed and flushed per policy).
    pub fn durable_seq(&self) -> u64 {
        self.durable.get()
    }

    /// A cloneable handle other threads (tailers) read the durable seq from.
    pub fn durable_handle(&self) -> DurableSeq {
        self.durable.clone()
    }

    /// Last seq assigned by [`Writer::append`] (pending records included).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Largest payload accepted by [`Writer::append`].
    pub fn max_payload_len(&self) -> usize {
        self.max_payload
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// The active segment file (diagnostics and tests).
    pub fn active_segment(&self) -> &Path {
        &self.active.path
    }

    /// Fault-injection support for recovery tests: writes the pending
    /// batch's records to the segment file without their commit marker, as
    /// a crash between the records and the marker reaching the file leaves
    /// them (the batch stays pending). Not for production use.
    #[doc(hidden)]
    pub fn write_uncommitted_for_tests(&mut self) -> Result<(), JournalError> {
        use std::os::unix::fs::FileExt;
        self.active
            .file
            .write_all_at(&self.pending, self.batch_start as u64)
            .map_err(|e| JournalError::io("writing the pending batch", e))
    }

    /// Clean shutdown: flushes the active segment (except under
    /// `Durability::None`) and stores the watermark at the last committed
    /// seq. Pending records are discarded.
    pub fn close(mut self) -> Result<(), JournalError> {
        self.check_poison()?;
        if self.cfg.durability == Durability::None {
            return Ok(());
        }
        self.sync_data()?;
        self.watermark.store(self.committed_seq, true)
    }

    fn check_poison(&self) -> Result<(), JournalError> {
        match &self.poisoned {
            None => Ok(()),
            Some(cause) => Err(JournalError::Poisoned {
                cause: cause.clone(),
                durable_seq: self.durable.get(),
            }),
        }
    }

    fn poison(&mut self, what: String, err: JournalError) -> JournalError {
        self.poisoned = Some(format!("{what}: {err}"));
        err
    }

    /// End of the written bytes in the active segment, the pending batch
    /// (still in memory) included.
    fn write_pos(&self) -> usize {
        self.batch_start + self.pending.len()
    }

    /// Encode one record of at most `max_len` bytes at the end of the
    /// pending batch; returns its length.
    fn encode_pending(
        &mut self,
        max_len: usize,
        kind: RecordKind,
        seq: u64,
        timestamp_ns: u64,
        payload: &[u8],
    ) -> Result<usize, JournalError> {
        let at = self.pending.len();
        self.pending.resize(at + max_len, 0);
        match record::encode_into(&mut self.pending[at..], kind, seq, timestamp_ns, payload) {
            Some(n) => {
                self.pending.truncate(at + n);
                Ok(n)
            }
            None => {
                self.pending.truncate(at);
                Err(JournalError::Config(
                    "internal: record longer than its encoded_len".into(),
                ))
            }
        }
    }

    /// The pending batch (records and commit marker) into the file at
    /// `batch_start`, in one `pwrite` (repeated only if the kernel writes
    /// less).
    fn write_pending(&mut self) -> Result<(), JournalError> {
        use std::os::unix::fs::FileExt;
        let (at, len) = (self.batch_start, self.pending.len());
        let path = &self.active.path;
        self.active
            .file
            .write_all_at(&self.pending, at as u64)
            .map_err(io_ctx(|| {
                format!("writing {len} bytes at offset {at} of {}", path.display())
            }))
    }

    /// After the pending batch was written: if fewer than [`ZERO_LOW`]
    /// zeroed bytes are left ahead of it, write the next [`ZERO_CHUNK`] of
    /// zeros (never past the segment's end), so that later commits land on
    /// written blocks. Only ever writes beyond the batch just written.
    /// Not after a batch of [`ZERO_LOW`] bytes or more: such a commit
    /// converts its blocks once for many records anyway, and zeros would
    /// double what each flush writes (a catch-up burst of 2,048-record
    /// commits lost 14% of its throughput to them).
    fn zero_ahead(&mut self) -> Result<(), JournalError> {
        use std::os::unix::fs::FileExt;
        let end = self.batch_start + self.pending.len();
        let a = &mut self.active;
        a.written_to = a.written_to.max(end);
        if self.pending.len() >= ZERO_LOW || a.written_to >= end + ZERO_LOW || a.written_to >= a.len
        {
            return Ok(());
        }
        let n = ZERO_CHUNK.min(a.len - a.written_to);
        let at = a.written_to;
        a.file
            .write_all_at(&ZEROS[..n], at as u64)
            .map_err(io_ctx(|| {
                format!(
                    "writing {n} zero bytes at offset {at} of {}",
                    a.path.display()
                )
            }))?;
        a.written_to += n;
        Ok(())
    }

    fn sync_data(&mut self) -> Result<(), JournalError> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_flush) {
            return Err(JournalError::io(
                "injected flush failure",
                std::io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        let path = &self.active.path;
        self.active
            .file
            .sync_data()
            .map_err(io_ctx(|| format!("fdatasync of {}", path.display())))
    }

    /// Moves the pending batch to a fresh segment so that the batch (plus a
    /// record of `rec_len` bytes and its marker) stays in one segment.
    fn roll_over(&mut self, rec_len: usize) -> Result<(), JournalError> {
        let pending = self.pending.len();
        let capacity = segment::capacity(self.cfg.segment_size);
        let needed = pending + rec_len + COMMIT_LEN;
        if needed > capacity {
            return Err(JournalError::BatchTooLarge {
                bytes: needed,
                max: capacity,
            });
        }
        let first_seq = self.committed_seq + 1;
        match self.roll_over_inner(first_seq) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.poison(format!("rolling over to segment {first_seq}"), e)),
        }
    }

    fn roll_over_inner(&mut self, first_seq: u64) -> Result<(), JournalError> {
        let dir = self.cfg.dir.clone();
        let sync = self.cfg.durability != Durability::None;
        // An active segment without any committed batch has the same name
        // as its successor (it only happens when an older, smaller segment
        // size is still active): replace it instead of linking to it.
        let replace = self.batch_start == SEGMENT_HEADER_LEN;
        let prev_first_seq = if replace {
            self.active.prev_first_seq
        } else {
            self.active.first_seq
        };
        let (file, path) = segment::create(
            &dir,
            first_seq,
            prev_first_seq,
            self.cfg.segment_size,
            sync,
            replace,
        )?;
        // The pending batch never reached the old segment (it is written
        // at its commit), so nothing there needs undoing: it moves with
        // `pending` to the new one.
        self.active = Active {
            path,
            first_seq,
            prev_first_seq,
            file,
            // `validate` checked that the segment size fits a usize.
            len: self.cfg.segment_size as usize,
            written_to: SEGMENT_HEADER_LEN,
        };
        self.batch_start = SEGMENT_HEADER_LEN;
        Ok(())
    }
}

/// Opens the newest segment read-write, restoring its preallocated size if
/// the file was cut short (the cut bytes read as zero, i.e. a torn tail).
fn open_for_write(
    seg: &SegmentFile,
    header: &SegmentHeader,
) -> Result<(File, MmapMut), JournalError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg.path)
        .map_err(io_ctx(|| format!("opening {}", seg.path.display())))?;
    let len = file
        .metadata()
        .map_err(io_ctx(|| {
            format!("reading metadata of {}", seg.path.display())
        }))?
        .len();
    if len < header.segment_size {
        sys::preallocate(&file, header.segment_size).map_err(io_ctx(|| {
            format!("restoring the size of {}", seg.path.display())
        }))?;
        // Not a repair by itself: whether acknowledged data was lost is
        // decided by the scan and the watermark, as for any torn tail.
    }
    let map = sys::map_mut(&file, &seg.path)?;
    Ok((file, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, durability: Durability) -> JournalConfig {
        JournalConfig {
            segment_size: 8192,
            durability,
            ..JournalConfig::new(dir)
        }
    }

    /// A batch reaches the segment file only at its commit, records and
    /// marker together, and only through the file (never through the
    /// mapping, whose dirty pages cost TLB shootdowns at every flush).
    #[test]
    fn a_batch_reaches_the_file_whole_at_its_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut w, _) = Writer::open(cfg(dir.path(), Durability::Fsync)).expect("open");
        let seg = w.active.path.clone();
        let file_after_header =
            || std::fs::read(&seg).expect("read")[SEGMENT_HEADER_LEN..].to_vec();
        for seq in 1..=3u64 {
            w.append(seq, b"payload").expect("append");
        }
        assert!(
            file_after_header().iter().all(|&b| b == 0),
            "pending records reached the file"
        );
        assert_eq!(w.commit().expect("commit"), 3);
        let bytes = std::fs::read(&seg).expect("read");
        let scan = segment::scan(&bytes, 1);
        assert_eq!(scan.committed_seq, 3);
        assert_eq!(scan.committed_end, w.write_pos());
        assert!(bytes[scan.committed_end..].iter().all(|&b| b == 0));
        // A reader's mapping shows the same bytes.
        let file = File::open(&seg).expect("open");
        let map = sys::map_read(&file, &seg).expect("map");
        assert_eq!(&map[..w.write_pos()], &bytes[..w.write_pos()]);
        assert!(w.pending.is_empty());
    }

    /// `commit_batch` makes the batch durable and published but leaves the
    /// periodic watermark to `store_watermark_if_due`; `commit` does both.
    #[test]
    fn commit_batch_defers_the_watermark_to_store_watermark_if_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stored = || Watermark::load(dir.path(), false).expect("load").0.seq();
        let (mut w, _) = Writer::open(JournalConfig {
            watermark_interval: 2,
            ..cfg(dir.path(), Durability::Fsync)
        })
        .expect("open");
        for seq in 1..=2u64 {
            w.append(seq, b"x").expect("append");
            assert_eq!(w.commit_batch().expect("commit"), seq);
            assert_eq!(w.durable_seq(), seq);
        }
        assert_eq!(stored(), 0, "commit_batch stored the watermark");
        w.store_watermark_if_due();
        assert_eq!(stored(), 2);
        // Not due again until two more commits.
        w.append(3, b"x").expect("append");
        w.commit_batch().expect("commit");
        w.store_watermark_if_due();
        assert_eq!(stored(), 2);
        w.append(4, b"x").expect("append");
        assert_eq!(w.commit().expect("commit"), 4);
        assert_eq!(stored(), 4);
    }

    #[test]
    fn failed_flush_poisons_and_does_not_publish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut w, _) = Writer::open(cfg(dir.path(), Durability::Fsync)).expect("open");
        w.append(1, b"a").expect("append");
        assert_eq!(w.commit().expect("commit"), 1);
        w.append(2, b"b").expect("append");
        w.fail_next_flush = true;
        assert!(matches!(w.commit(), Err(JournalError::Io { .. })));
        assert_eq!(w.durable_seq(), 1);
        let err = w.append(3, b"c").expect_err("poisoned");
        assert!(
            matches!(err, JournalError::Poisoned { durable_seq: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("restart"));
        assert!(w.commit().is_err());
        assert!(w.close().is_err());
    }

    #[test]
    fn config_is_validated() {
        let dir = tempfile::tempdir().expect("tempdir");
        for size in [0, 4095, 4100, u64::MAX] {
            let c = JournalConfig {
                segment_size: size,
                ..JournalConfig::new(dir.path())
            };
            assert!(
                matches!(Writer::open(c), Err(JournalError::Config(_))),
                "{size}"
            );
        }
    }

    #[test]
    fn second_writer_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_w, _) = Writer::open(cfg(dir.path(), Durability::None)).expect("open");
        let err = Writer::open(cfg(dir.path(), Durability::None)).expect_err("locked");
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    }

    #[test]
    fn payload_and_batch_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut w, _) = Writer::open(cfg(dir.path(), Durability::None)).expect("open");
        let max = w.max_payload_len();
        assert!(matches!(
            w.append(0, &vec![0u8; max + 1]),
            Err(JournalError::PayloadTooLarge { .. })
        ));
        assert_eq!(w.append(0, &vec![7u8; max]).expect("max fits"), 1);
        let err = w.append(0, b"more").expect_err("batch too large");
        assert!(matches!(err, JournalError::BatchTooLarge { .. }), "{err}");
        // Not poisoned: commit the pending batch and continue.
        assert_eq!(w.commit().expect("commit"), 1);
        assert_eq!(w.append(0, b"more").expect("append"), 2);
        assert_eq!(w.commit().expect("commit"), 2);
    }

    #[test]
    fn larger_segment_size_replaces_an_empty_smaller_active_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (w, _) = Writer::open(cfg(dir.path(), Durability::Fsync)).expect("open");
        drop(w);
        let big = JournalConfig {
            segment_size: 65536,
            ..cfg(dir.path(), Durability::Fsync)
        };
        let (mut w, _) = Writer::open(big.clone()).expect("reopen");
        let mut tailer = crate::Tailer::open(dir.path(), 1, w.durable_handle()).expect("tailer");
        let mut reader = crate::Reader::open(dir.path(), 1).expect("reader");
        assert_eq!(tailer.poll().expect("poll"), None);
        assert_eq!(reader.next_entry().expect("read"), None);
        let payload = vec![5u8; 20_000];
        assert_eq!(w.append(9, &payload).expect("append"), 1);
        assert_eq!(w.commit().expect("commit"), 1);
        assert_eq!(w.append(9, &payload).expect("append"), 2);
        assert_eq!(w.append(9, &payload).expect("append"), 3);
        assert_eq!(w.append(9, &payload).expect("append"), 4);
        assert_eq!(w.commit().expect("commit"), 4);
        for seq in 1..=4 {
            assert_eq!(tailer.poll().expect("poll").map(|e| e.seq), Some(seq));
            assert_eq!(reader.next_entry().expect("read").map(|e| e.seq), Some(seq));
        }
        assert_eq!(tailer.poll().expect("poll"), None);
        drop(w);
        let (_w, report) = Writer::open(big).expect("reopen");
        assert_eq!(report.last_seq, 4);
        let all: Vec<_> = crate::Reader::open(dir.path(), 1)
            .expect("reader")
            .map(|e| e.expect("read").payload.len())
            .collect();
        assert_eq!(all, vec![20_000; 4]);
    }

    #[test]
    fn empty_commit_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut w, report) = Writer::open(cfg(dir.path(), Durability::Fsync)).expect("open");
        assert_eq!(
            (report.first_seq, report.last_seq, report.records_recovered),
            (1, 0, 0)
        );
        assert_eq!(w.commit().expect("commit"), 0);
        assert_eq!(w.durable_seq(), 0);
    }

    /// Under fsync durability zeros are written ahead of the commits in
    /// chunks (never over a commit, never past the segment's end, not at
    /// all under the other policies), and every record reads back intact,
    /// through a rollover and a reopen.
    #[test]
    fn zeros_are_written_ahead_of_the_commits_in_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = 4 * ZERO_CHUNK as u64;
        let c = JournalConfig {
            segment_size: size,
            ..cfg(dir.path(), Durability::Fsync)
        };
        let (mut w, _) = Writer::open(c.clone()).expect("open");
        let payload = |seq: u64| vec![(seq % 251) as u8 + 1; 3000 + (seq % 7) as usize * 1000];
        let mut chunks_written = 0;
        let mut seq = 0u64;
        let mut first_segment_written_to = Vec::new();
        while w.active.first_seq == 1 {
            let before = w.active.written_to;
            for _ in 0..5 {
                seq += 1;
                w.append(seq, &payload(seq)).expect("append");
            }
            if w.active.first_seq != 1 {
                break;
            }
            w.commit().expect("commit");
            let a = &w.active;
            assert!(a.written_to >= w.write_pos(), "zeros behind the commit");
            assert!(a.written_to <= a.len, "zeros past the segment's end");
            if a.written_to > w.write_pos().max(before) {
                chunks_written += 1;
                assert!(
                    a.written_to == a.len || a.written_to - w.write_pos() >= ZERO_LOW,
                    "a chunk leaves at least ZERO_LOW zeroed bytes ahead"
                );
            }
            first_segment_written_to.push(a.written_to);
        }
        assert!(
            chunks_written >= 3,
            "one chunk per ~{ZERO_CHUNK} bytes of commits, got {chunks_written}"
        );
        assert_eq!(first_segment_written_to.last(), Some(&(size as usize)));
        // The new segment starts its own zeros.
        w.commit().expect("commit");
        assert!(w.active.first_seq > 1);
        assert!(w.active.written_to >= w.write_pos() + ZERO_LOW);
        drop(w);
        let (_w, report) = Writer::open(c).expect("reopen");
        assert_eq!(report.last_seq, seq);
        let back: Vec<_> = crate::Reader::open(dir.path(), 1)
            .expect("reader")
            .map(|e| {
                let e = e.expect("read");
                (e.seq, e.payload.to_vec())
            })
            .collect();
        assert_eq!(back.len() as u64, seq);
        for (s, p) in back {
            assert_eq!(p, payload(s), "record {s}");
        }

        // A large commit writes no zeros after it; a small one again does.
        let dir = tempfile::tempdir().expect("tempdir");
        let c = JournalConfig {
            segment_size: size,
            ..cfg(dir.path(), Durability::Fsync)
        };
        let (mut w, _) = Writer::open(c).expect("open");
        for seq in 1..=10u64 {
            w.append(seq, &[7u8; 8000]).expect("append");
        }
        w.commit().expect("commit");
        assert_eq!(
            w.active.written_to,
            w.write_pos(),
            "zeros after a large commit"
        );
        w.append(11, &[7u8; 100]).expect("append");
        w.commit().expect("commit");
        assert_eq!(w.active.written_to, w.write_pos() + ZERO_CHUNK);

        // The other policies write no zeros.
        for durability in [Durability::Os, Durability::None] {
            let dir = tempfile::tempdir().expect("tempdir");
            let c = JournalConfig {
                segment_size: size,
                ..cfg(dir.path(), durability)
            };
            let (mut w, _) = Writer::open(c).expect("open");
            w.append(1, &payload(1)).expect("append");
            w.commit().expect("commit");
            assert_eq!(w.active.written_to, SEGMENT_HEADER_LEN);
        }
    }
}
