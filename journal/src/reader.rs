//! Readers of a journal: [`Reader`] replays committed batches in seq order
//! (recovery, replay, catch-up) and [`Tailer`] follows a live writer. Both
//! own read-only mappings and keep one invariant: they never hand out a
//! record past the durable point. The `Reader` yields a record only after it
//! has verified its whole batch up to an intact commit marker; the `Tailer`
//! yields a record only when its seq is at most the [`DurableSeq`] it was
//! given. Every record handed out passed its CRC check.

use crate::error::JournalError;
use crate::record::{self, RecordKind, RECORD_HEADER_LEN};
use crate::segment::{self, BatchSpan, MappedSegment, SegmentFile, SEGMENT_HEADER_LEN};
use crate::DurableSeq;
use std::path::{Path, PathBuf};

/// One record, borrowing its payload from the reader's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub seq: u64,
    pub timestamp_ns: u64,
    pub payload: &'a [u8],
}

impl Entry<'_> {
    /// Copies the payload out of the mapping.
    pub fn into_owned(self) -> OwnedEntry {
        OwnedEntry {
            seq: self.seq,
            timestamp_ns: self.timestamp_ns,
            payload: self.payload.to_vec(),
        }
    }
}

/// One record with an owned payload (what the `Iterator` impl yields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEntry {
    pub seq: u64,
    pub timestamp_ns: u64,
    pub payload: Vec<u8>,
}

/// Location of a record payload inside the current mapping.
struct Found {
    seq: u64,
    timestamp_ns: u64,
    start: usize,
    len: usize,
}

fn entry_from<'a>(cur: Option<&'a MappedSegment>, f: &Found) -> Result<Entry<'a>, JournalError> {
    let payload = cur
        .and_then(|c| c.map.get(f.start..f.start + f.len))
        .ok_or_else(|| JournalError::Config("internal: reader lost its segment".into()))?;
    Ok(Entry {
        seq: f.seq,
        timestamp_ns: f.timestamp_ns,
        payload,
    })
}

fn read_corrupt(seg: &MappedSegment, offset: usize, detail: String) -> JournalError {
    JournalError::ReadCorrupt {
        file: seg.path.clone(),
        offset: offset as u64,
        detail,
    }
}

/// Sequential reader of committed records from `from_seq` on.
///
/// Meant for a journal nobody is writing (startup replay, after
/// [`crate::Writer::open`] recovered it) or for catching up behind a writer
/// in another process: at the end it returns `None`, and a later call picks
/// up batches committed since. Damage in a sealed (non-newest) segment or a
/// gap between segments is an error naming the file and offset. In the
/// newest segment the reader stops before the first batch it cannot verify:
/// that is the writer's tail, and [`crate::Writer::open`] decides whether it
/// is torn (cut) or damaged (refused). The `Iterator` impl yields owned
/// copies and ends after the first error.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    segs: Vec<SegmentFile>,
    idx: usize,
    cur: Option<MappedSegment>,
    pos: usize,
    batch: Option<BatchSpan>,
    /// Seq of the next record in file order.
    next_seq: u64,
    from_seq: u64,
    /// Set once the `Iterator` impl has returned an error.
    failed: bool,
}

impl Reader {
    /// Opens a reader that yields records with seq >= `from_seq` (0 is
    /// treated as 1). Fails if `from_seq` was already deleted by retention
    /// or if a segment is missing.
    pub fn open(dir: impl AsRef<Path>, from_seq: u64) -> Result<Reader, JournalError> {
        let dir = dir.as_ref().to_path_buf();
        let from_seq = from_seq.max(1);
        let segs = segment::list(&dir)?;
        segment::check_chain(&segs)?;
        let idx = match segs.first() {
            Some(oldest) if from_seq < oldest.first_seq => {
                return Err(JournalError::SeqPruned {
                    seq: from_seq,
                    oldest: oldest.first_seq,
                })
            }
            _ => segs
                .iter()
                .rposition(|s| s.first_seq <= from_seq)
                .unwrap_or(0),
        };
        let next_seq = segs.get(idx).map_or(1, |s| s.first_seq);
        Ok(Reader {
            dir,
            segs,
            idx,
            cur: None,
            pos: SEGMENT_HEADER_LEN,
            batch: None,
            next_seq,
            from_seq,
            failed: false,
        })
    }

    /// Seq of the next record this reader would yield.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.max(self.from_seq)
    }

    /// Next committed record, or `None` at the end of committed data.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_>>, JournalError> {
        let found = loop {
            if self.cur.is_none() {
                let Some(seg) = self.segs.get(self.idx) else {
                    if self.refresh()? {
                        continue;
                    }
                    return Ok(None);
                };
                self.cur = Some(MappedSegment::open(seg)?);
                self.pos = SEGMENT_HEADER_LEN;
                self.batch = None;
            }
            let Some(cur) = self.cur.as_ref() else {
                continue;
            };
            if let Some(span) = self.batch {
                if self.pos < span.records_end {
                    let rec = record::decode_verified(&cur.map[self.pos..])
                        .map_err(|e| read_corrupt(cur, self.pos, e.to_string()))?;
                    let start = self.pos + RECORD_HEADER_LEN;
                    self.pos += rec.encoded_len();
                    if rec.seq < self.from_seq {
                        continue;
                    }
                    break Found {
                        seq: rec.seq,
                        timestamp_ns: rec.timestamp_ns,
                        start,
                        len: rec.payload.len(),
                    };
                }
                self.pos = span.end;
                self.batch = None;
            }
            // Crossing into the next segment happens by seq, before reading:
            // bytes after the last commit of a sealed segment are never trusted.
            if let Some(next) = self.segs.get(self.idx + 1) {
                if self.next_seq == next.first_seq {
                    self.idx += 1;
                    self.cur = None;
                    continue;
                }
                if self.next_seq > next.first_seq {
                    return Err(read_corrupt(
                        cur,
                        self.pos,
                        format!(
                            "segment continues past seq {} where {} begins",
                            next.first_seq - 1,
                            next.path.display()
                        ),
                    ));
                }
            }
            match segment::verify_batch(&cur.map, self.pos, self.next_seq) {
                Ok(span) => {
                    self.next_seq = span.last_seq + 1;
                    self.batch = Some(span);
                }
                Err(stop) => {
                    if let Some(next) = self.segs.get(self.idx + 1) {
                        return Err(read_corrupt(
                            cur,
                            stop.offset,
                            format!(
                                "{} while expecting seq {}; the next segment {} starts at seq {}",
                                stop.kind,
                                self.next_seq,
                                next.path.display(),
                                next.first_seq
                            ),
                        ));
                    }
                    if cur.replaced() {
                        // The writer swapped this segment (it held no
                        // committed batch) for a larger one: re-read it
                        // without yielding any seq twice.
                        self.from_seq = self.from_seq.max(self.next_seq);
                        self.next_seq = cur.first_seq;
                        self.cur = None;
                        continue;
                    }
                    if self.refresh()? {
                        continue;
                    }
                    return Ok(None);
                }
            }
        };
        entry_from(self.cur.as_ref(), &found).map(Some)
    }

    /// Picks up segments created since the last listing. True if any.
    fn refresh(&mut self) -> Result<bool, JournalError> {
        let newest = self.segs.last().map_or(0, |s| s.first_seq);
        let fresh = segment::list(&self.dir)?;
        let added: Vec<SegmentFile> = fresh.into_iter().filter(|s| s.first_seq > newest).collect();
        if added.is_empty() {
            return Ok(false);
        }
        if self.segs.is_empty() {
            self.next_seq = added[0].first_seq.max(1);
        }
        self.segs.extend(added);
        Ok(true)
    }
}

impl Iterator for Reader {
    type Item = Result<OwnedEntry, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self
            .next_entry()
            .map(|o| o.map(Entry::into_owned))
            .transpose();
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

/// Follows a live writer in the same process, across segment rollovers,
/// never reading past the [`DurableSeq`] it was given. [`Tailer::poll`]
/// returns `Ok(None)` when caught up; the caller backs off and polls again.
#[derive(Debug)]
pub struct Tailer {
    dir: PathBuf,
    durable: DurableSeq,
    want: u64,
    cur: Option<MappedSegment>,
    /// First seq of the segment after `cur`, if one existed when mapped.
    next_first: Option<u64>,
    pos: usize,
}

impl Tailer {
    /// Starts following at `from_seq` (0 is treated as 1).
    pub fn open(
        dir: impl AsRef<Path>,
        from_seq: u64,
        durable: DurableSeq,
    ) -> Result<Tailer, JournalError> {
        let dir = dir.as_ref().to_path_buf();
        let from_seq = from_seq.max(1);
        let segs = segment::list(&dir)?;
        segment::check_chain(&segs)?;
        if let Some(oldest) = segs.first() {
            if from_seq < oldest.first_seq {
                return Err(JournalError::SeqPruned {
                    seq: from_seq,
                    oldest: oldest.first_seq,
                });
            }
        }
        Ok(Tailer {
            dir,
            durable,
            want: from_seq,
            cur: None,
            next_first: None,
            pos: SEGMENT_HEADER_LEN,
        })
    }

    /// Seq of the next record this tailer will return.
    pub fn next_seq(&self) -> u64 {
        self.want
    }

    /// The next durable record, or `None` when caught up with the writer.
    pub fn poll(&mut self) -> Result<Option<Entry<'_>>, JournalError> {
        if self.want > self.durable.get() {
            return Ok(None);
        }
        let found = loop {
            let must_move = self.next_first.is_some_and(|f| self.want >= f);
            if self.cur.is_none() || must_move {
                self.locate()?;
            }
            let Some(cur) = self.cur.as_ref() else {
                continue;
            };
            let detail = match cur
                .map
                .get(self.pos..)
                .filter(|r| r.len() >= RECORD_HEADER_LEN)
            {
                None => "end of segment".to_string(),
                Some(rest) => match record::decode(rest) {
                    Ok(rec) if rec.kind == RecordKind::Commit || rec.seq < self.want => {
                        self.pos += rec.encoded_len();
                        continue;
                    }
                    Ok(rec) if rec.seq == self.want => {
                        let start = self.pos + RECORD_HEADER_LEN;
                        self.pos += rec.encoded_len();
                        self.want += 1;
                        break Found {
                            seq: rec.seq,
                            timestamp_ns: rec.timestamp_ns,
                            start,
                            len: rec.payload.len(),
                        };
                    }
                    Ok(rec) => {
                        format!("found seq {} where seq {} was expected", rec.seq, self.want)
                    }
                    Err(e) => e.to_string(),
                },
            };
            // `want` is durable but does not continue this segment: the
            // writer must have rolled over to a segment starting at `want`.
            // (A replaced segment is never mapped here: it held no
            // committed batch, so no durable seq ever pointed into it.)
            let segs = segment::list(&self.dir)?;
            match segs
                .iter()
                .position(|s| s.first_seq == self.want && s.first_seq > cur.first_seq)
            {
                Some(i) => self.map_segment(&segs, i)?,
                None => {
                    return Err(read_corrupt(
                        cur,
                        self.pos,
                        format!("durable seq {} not found ({detail})", self.want),
                    ))
                }
            }
        };
        entry_from(self.cur.as_ref(), &found).map(Some)
    }

    /// Maps the segment that must contain `want`.
    fn locate(&mut self) -> Result<(), JournalError> {
        let segs = segment::list(&self.dir)?;
        let Some(i) = segs.iter().rposition(|s| s.first_seq <= self.want) else {
            return match segs.first() {
                Some(oldest) => Err(JournalError::SeqPruned {
                    seq: self.want,
                    oldest: oldest.first_seq,
                }),
                None => Err(JournalError::ReadCorrupt {
                    file: self.dir.clone(),
                    offset: 0,
                    detail: format!("durable seq {} but no segment files", self.want),
                }),
            };
        };
        self.map_segment(&segs, i)
    }

    fn map_segment(&mut self, segs: &[SegmentFile], i: usize) -> Result<(), JournalError> {
        self.cur = Some(MappedSegment::open(&segs[i])?);
        self.next_first = segs.get(i + 1).map(|s| s.first_seq);
        self.pos = SEGMENT_HEADER_LEN;
        Ok(())
    }
}
