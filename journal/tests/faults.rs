//! Fault injection on real segment files: torn, flipped, zeroed, garbage and
//! missing data. Each case must recover exactly as the crate docs specify or
//! refuse with an error that names the file and offset. Writers are dropped
//! without `close` to look like a crash (the watermark then stays behind).

mod common;

use common::*;
use journal::{Durability, JournalError, Reader, Writer};
use std::fs;
use std::path::{Path, PathBuf};

fn last_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("a segment")
}

fn open(dir: &Path) -> Result<(Writer, journal::RecoveryReport), JournalError> {
    Writer::open(cfg(dir, Durability::Os))
}

fn open_repair(dir: &Path) -> Result<(Writer, journal::RecoveryReport), JournalError> {
    Writer::open(repair(cfg(dir, Durability::Os)))
}

/// Appends records that are never committed.
fn append_pending(w: &mut Writer, n: u64, max_len: u64) {
    for _ in 0..n {
        let seq = w.last_seq() + 1;
        w.append(ts(seq), &payload(seq, max_len)).expect("append");
    }
}

/// Commits one batch of `n` records.
fn batch(w: &mut Writer, n: u64, max_len: u64) -> u64 {
    append_pending(w, n, max_len);
    w.commit().expect("commit")
}

fn continues_after(dir: &Path, last: u64, max_len: u64) {
    let (mut w, report) = open(dir).expect("reopen after recovery");
    assert_eq!(report.last_seq, last);
    assert_eq!(report.bytes_truncated, 0, "recovery is idempotent");
    assert_eq!(
        w.append(ts(last + 1), &payload(last + 1, max_len))
            .expect("append"),
        last + 1
    );
    assert_eq!(w.commit().expect("commit"), last + 1);
    drop(w);
    assert_contents(dir, 1, last + 1, max_len);
}

#[test]
fn truncated_record_at_tail_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    let committed = write_batches(&mut w, 20, 5, 300);
    append_pending(&mut w, 3, 300);
    w.write_uncommitted_for_tests().expect("write");
    drop(w);
    let seg = last_segment(dir.path());
    let recs = records(&fs::read(&seg).expect("read"));
    let tail = recs.last().expect("records");
    assert_eq!(tail.seq, committed + 3);
    // The file ends in the middle of the last (uncommitted) record.
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len((tail.offset + tail.len / 2) as u64))
        .expect("truncate");
    let (w, report) = open(dir.path()).expect("recovers");
    assert_eq!(report.last_seq, committed);
    assert!(report.bytes_truncated > 0);
    assert!(report.repair.is_none());
    assert_eq!(
        fs::metadata(&seg).expect("meta").len(),
        SEG,
        "preallocation restored"
    );
    drop(w);
    assert_contents(dir.path(), 1, committed, 300);
    continues_after(dir.path(), committed, 300);
}

#[test]
fn flipped_bit_in_uncommitted_tail_record_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    let committed = write_batches(&mut w, 10, 5, 300);
    append_pending(&mut w, 4, 300);
    w.write_uncommitted_for_tests().expect("write");
    drop(w);
    let seg = last_segment(dir.path());
    let tail = *records(&fs::read(&seg).expect("read"))
        .last()
        .expect("records");
    flip_bit(&seg, tail.offset + 20, 3);
    let (w, report) = open(dir.path()).expect("recovers");
    assert_eq!(report.last_seq, committed);
    assert!(report.bytes_truncated > 0);
    drop(w);
    continues_after(dir.path(), committed, 300);
}

#[test]
fn torn_last_batch_is_dropped_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    let before = write_batches(&mut w, 10, 5, 300);
    let last = batch(&mut w, 6, 300);
    drop(w); // crash before the watermark covers the last batch
    let seg = last_segment(dir.path());
    let recs = records(&fs::read(&seg).expect("read"));
    // Flip a bit in the last data record; its marker stays intact.
    let victim = recs.iter().rev().find(|p| !p.commit).expect("data record");
    assert_eq!(victim.seq, last);
    flip_bit(&seg, victim.offset + victim.len - 1, 0);
    let (w, report) = open(dir.path()).expect("recovers");
    assert_eq!(report.last_seq, before, "no half-visible batch");
    drop(w);
    continues_after(dir.path(), before, 300);
}

#[test]
fn flipped_bit_below_watermark_is_refused_then_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    let before = write_batches(&mut w, 10, 5, 300);
    let last = batch(&mut w, 3, 300);
    w.close().expect("close"); // watermark = last: everything was acknowledged
    let seg = last_segment(dir.path());
    let recs = records(&fs::read(&seg).expect("read"));
    let victim = *recs.iter().rev().find(|p| !p.commit).expect("data record");
    flip_bit(&seg, victim.offset + 17, 5); // inside the seq field
    let err = open(dir.path()).expect_err("must refuse");
    match &err {
        JournalError::BelowWatermark {
            file,
            offset,
            watermark,
            recovered_seq,
            ..
        } => {
            assert_eq!(file, &seg);
            assert_eq!((*watermark, *recovered_seq), (last, before));
            let batch_start = recs
                .iter()
                .find(|p| p.seq == before + 1)
                .expect("start")
                .offset;
            assert_eq!(*offset as usize, victim.offset.max(batch_start));
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&*seg.to_string_lossy()) && msg.contains("repair"),
        "{msg}"
    );

    let (w, report) = open_repair(dir.path()).expect("repair");
    let action = report.repair.expect("repair reported");
    assert_eq!((action.kept_seq, action.watermark_before), (before, last));
    assert_eq!(action.file, seg);
    assert_eq!(report.last_seq, before);
    drop(w);
    assert_contents(dir.path(), 1, before, 300);
    continues_after(dir.path(), before, 300); // the watermark was lowered
}

#[test]
fn zeroed_page_inside_last_batch_drops_that_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    let before = write_batches(&mut w, 5, 3, 100);
    // One batch spanning several pages, committed, then "crash".
    batch(&mut w, 40, 600);
    drop(w);
    let seg = last_segment(dir.path());
    let recs = records(&fs::read(&seg).expect("read"));
    let start = recs
        .iter()
        .find(|p| p.seq == before + 1)
        .expect("batch")
        .offset;
    let page = (start / 4096 + 2) * 4096;
    let marker = recs.last().expect("marker");
    assert!(
        marker.commit && marker.offset > page + 4096,
        "marker beyond the zeroed page"
    );
    let mut bytes = fs::read(&seg).expect("read");
    bytes[page..page + 4096].fill(0);
    fs::write(&seg, &bytes).expect("write");
    let (w, report) = open(dir.path()).expect("recovers");
    assert_eq!(report.last_seq, before);
    assert!(report.bytes_truncated >= (marker.offset - page) as u64);
    drop(w);
    let after = fs::read(&seg).expect("read");
    assert!(
        after[recs.iter().find(|p| p.seq == before + 1).expect("x").offset..]
            .iter()
            .all(|&b| b == 0)
    );
    continues_after(dir.path(), before, 100);
}

#[test]
fn garbage_after_tail_is_zeroed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    let committed = write_batches(&mut w, 10, 5, 300);
    drop(w);
    let seg = last_segment(dir.path());
    let mut bytes = fs::read(&seg).expect("read");
    let end = records(&bytes)
        .last()
        .map(|p| p.offset + p.len)
        .expect("records");
    for (i, b) in bytes[end..end + 5000].iter_mut().enumerate() {
        *b = mix(i as u64) as u8;
    }
    fs::write(&seg, &bytes).expect("write");
    let (w, report) = open(dir.path()).expect("recovers");
    assert_eq!(report.last_seq, committed);
    assert!(report.bytes_truncated >= 5000);
    drop(w);
    assert!(fs::read(&seg).expect("read")[end..].iter().all(|&b| b == 0));
    continues_after(dir.path(), committed, 300);
}

#[test]
fn missing_middle_segment_is_refused_even_with_repair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    write_batches(&mut w, 200, 10, 800);
    w.close().expect("close");
    let segs = segments(dir.path());
    assert!(segs.len() >= 4);
    fs::remove_file(&segs[1]).expect("remove");
    for result in [open(dir.path()), open_repair(dir.path())] {
        match result.map(|_| ()).expect_err("must refuse") {
            JournalError::MissingSegment { prev, next, .. } => {
                assert_eq!((prev, next), (segs[0].clone(), segs[2].clone()));
            }
            other => panic!("unexpected error {other}"),
        }
    }
    let err = Reader::open(dir.path(), 1).expect_err("reader refuses too");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn missing_newest_segment_is_below_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    let last = write_batches(&mut w, 200, 10, 800);
    w.close().expect("close");
    fs::remove_file(last_segment(dir.path())).expect("remove");
    let err = open(dir.path()).map(|_| ()).expect_err("must refuse");
    assert!(
        matches!(err, JournalError::BelowWatermark { watermark, .. } if watermark == last),
        "{err}"
    );
    let (_w, report) = open_repair(dir.path()).expect("repair accepts the loss");
    assert!(report.last_seq < last && report.repair.is_some());
}

#[test]
fn bit_flip_in_committed_middle_record_is_refused_then_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    let last = write_batches(&mut w, 30, 3, 100);
    drop(w); // watermark stays at 0: only the later commits show the damage
    let seg = last_segment(dir.path());
    assert_eq!(segments(dir.path()).len(), 1);
    let recs = records(&fs::read(&seg).expect("read"));
    let victim = recs[recs.len() / 2];
    let victim = if victim.commit {
        recs[recs.len() / 2 - 1]
    } else {
        victim
    };
    // The batch containing the victim starts after the previous marker.
    let kept = recs
        .iter()
        .take_while(|p| p.offset < victim.offset)
        .filter(|p| p.commit)
        .last()
        .map_or(0, |p| p.seq);
    let batch_start = recs
        .iter()
        .find(|p| p.seq == kept + 1)
        .expect("batch")
        .offset;
    flip_bit(&seg, victim.offset + 40.min(victim.len - 1), 1);

    let err = open(dir.path()).map(|_| ()).expect_err("must refuse");
    match &err {
        JournalError::Corrupt {
            file,
            offset,
            keep_seq,
            ..
        } => {
            assert_eq!(file, &seg);
            assert_eq!(*offset as usize, victim.offset);
            assert_eq!(*keep_seq, kept);
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("corrupt at offset") && msg.contains("repair"),
        "{msg}"
    );
    // Refusal changed nothing on disk.
    assert_eq!(
        records(&fs::read(&seg).expect("read")).len(),
        recs.iter().take_while(|p| p.offset < victim.offset).count()
    );

    let (w, report) = open_repair(dir.path()).expect("repair");
    let action = report.repair.expect("repair reported");
    assert_eq!(
        (action.kept_seq, action.offset as usize),
        (kept, batch_start)
    );
    assert!(kept < last);
    drop(w);
    assert_contents(dir.path(), 1, kept, 100);
    continues_after(dir.path(), kept, 100);
}

#[test]
fn rot_in_a_sealed_segment_is_reported_by_the_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    write_batches(&mut w, 200, 10, 800);
    w.close().expect("close");
    let segs = segments(dir.path());
    let recs = records(&fs::read(&segs[1]).expect("read"));
    let victim = recs[recs.len() / 3];
    flip_bit(&segs[1], victim.offset + 8, 0); // payload length field
                                              // Only the newest segment is scanned at open...
    let (w, _) = open(dir.path()).expect("open");
    drop(w);
    // ...and the reader names the damaged file and offset.
    let err = Reader::open(dir.path(), 1)
        .expect("reader")
        .collect::<Result<Vec<_>, _>>()
        .expect_err("must fail");
    match err {
        JournalError::ReadCorrupt { file, offset, .. } => {
            assert_eq!(file, segs[1]);
            assert_eq!(offset as usize, victim.offset);
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn crash_during_rollover_removes_empty_newest_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    let committed = write_batches(&mut w, 5, 5, 300);
    let n = segments(dir.path()).len();
    while segments(dir.path()).len() == n {
        append_pending(&mut w, 1, 3000);
    }
    drop(w);
    let (w, report) = open(dir.path()).expect("recovers");
    assert_eq!(report.segments_removed.len(), 1);
    assert_eq!(report.last_seq, committed);
    assert_eq!(segments(dir.path()).len(), n);
    drop(w);
    continues_after(dir.path(), committed, 300);
}

#[test]
fn damaged_segment_header_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    write_batches(&mut w, 5, 5, 300);
    drop(w);
    let seg = last_segment(dir.path());
    flip_bit(&seg, 10, 2);
    let err = open(dir.path()).map(|_| ()).expect_err("must refuse");
    assert!(
        matches!(&err, JournalError::BadSegmentHeader { file, .. } if *file == seg),
        "{err}"
    );
}

#[test]
fn damaged_watermark_file_needs_repair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = open(dir.path()).expect("open");
    let last = write_batches(&mut w, 5, 5, 300);
    w.close().expect("close");
    fs::write(dir.path().join("watermark"), [0xabu8; 64]).expect("write");
    let err = open(dir.path()).map(|_| ()).expect_err("must refuse");
    assert!(matches!(err, JournalError::BadWatermark { .. }), "{err}");
    let (_w, report) = open_repair(dir.path()).expect("repair");
    assert_eq!(report.last_seq, last);
    assert!(report.repair.is_some());
}
