//! Round trips over real files: many batches across segment rollovers,
//! reopen and replay, a tailer following a writer thread, and retention.

mod common;

use common::*;
use journal::{delete_segments_before, Durability, JournalError, Reader, Tailer, Writer};
use std::time::{Duration, Instant};

#[test]
fn many_batches_across_rollovers_read_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, report) = Writer::open(cfg(dir.path(), Durability::Os)).expect("open");
    assert_eq!((report.first_seq, report.last_seq), (1, 0));
    let last = write_batches(&mut w, 400, 16, 700);
    assert_eq!(w.durable_seq(), last);
    w.close().expect("close");
    assert!(segments(dir.path()).len() >= 10, "expected many rollovers");

    let (mut w, report) = Writer::open(cfg(dir.path(), Durability::Os)).expect("reopen");
    assert_eq!(report.last_seq, last);
    assert_eq!(report.records_recovered, last);
    assert_eq!(report.bytes_truncated, 0);
    assert_eq!(report.watermark, last);
    assert!(report.repair.is_none());
    assert_contents(dir.path(), 1, last, 700);
    assert_contents(dir.path(), last / 2, last, 700);
    // Appending continues from the recovered seq.
    let more = write_batches(&mut w, 20, 16, 700);
    drop(w);
    assert_contents(dir.path(), 1, more, 700);
}

#[test]
fn fsync_durability_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = Writer::open(cfg(dir.path(), Durability::Fsync)).expect("open");
    let last = write_batches(&mut w, 40, 30, 3000);
    drop(w); // no clean close: everything committed was flushed per batch
    let (_w, report) = Writer::open(cfg(dir.path(), Durability::Fsync)).expect("reopen");
    assert_eq!(report.last_seq, last);
    assert_contents(dir.path(), 1, last, 3000);
}

#[test]
fn durability_none_still_commits_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = Writer::open(cfg(dir.path(), Durability::None)).expect("open");
    let last = write_batches(&mut w, 100, 10, 500);
    drop(w);
    let (_w, report) = Writer::open(cfg(dir.path(), Durability::None)).expect("reopen");
    assert_eq!(report.last_seq, last);
    assert_contents(dir.path(), 1, last, 500);
}

#[test]
fn readers_never_see_uncommitted_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = Writer::open(cfg(dir.path(), Durability::Os)).expect("open");
    let committed = write_batches(&mut w, 3, 5, 100);
    let mut tailer = Tailer::open(dir.path(), 1, w.durable_handle()).expect("tailer");
    // A pending batch large enough to force a rollover while uncommitted.
    let start_segments = segments(dir.path()).len();
    let mut pending = 0;
    while segments(dir.path()).len() == start_segments {
        let seq = w.last_seq() + 1;
        w.append(ts(seq), &payload(seq, 100).repeat(20))
            .expect("append");
        pending += 1;
    }
    let mut seen = 0;
    while let Some(e) = tailer.poll().expect("poll") {
        assert!(e.seq <= committed);
        seen += 1;
    }
    assert_eq!(seen, committed);
    let from_reader = read_all(dir.path(), 1);
    assert_eq!(from_reader.len() as u64, committed);

    assert_eq!(w.commit().expect("commit"), committed + pending);
    let mut seqs = Vec::new();
    while let Some(e) = tailer.poll().expect("poll") {
        seqs.push(e.seq);
    }
    assert_eq!(
        seqs,
        (committed + 1..=committed + pending).collect::<Vec<_>>()
    );
    assert_eq!(read_all(dir.path(), 1).len() as u64, committed + pending);
}

#[test]
fn tailer_follows_writer_thread_in_order_and_never_past_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = Writer::open(cfg(dir.path(), Durability::Fsync)).expect("open");
    let durable = w.durable_handle();
    let mut tailer = Tailer::open(dir.path(), 1, durable.clone()).expect("tailer");
    let writer = std::thread::spawn(move || {
        let last = write_batches(&mut w, 150, 20, 1500);
        w.close().expect("close");
        last
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut expected = 1;
    loop {
        match tailer.poll().expect("poll") {
            Some(e) => {
                assert_eq!(e.seq, expected);
                assert!(e.seq <= durable.get(), "read past the durable seq");
                assert_eq!(e.timestamp_ns, ts(e.seq));
                assert_eq!(e.payload, &payload(e.seq, 1500)[..]);
                expected += 1;
            }
            None if writer.is_finished() && durable.get() < expected => break,
            None => {
                assert!(Instant::now() < deadline, "tailer stalled at {expected}");
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
    let last = writer.join().expect("writer thread");
    assert_eq!(expected - 1, last);
    assert!(segments(dir.path()).len() > 3);
}

#[test]
fn reader_catches_up_with_later_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = Writer::open(cfg(dir.path(), Durability::Os)).expect("open");
    let first = write_batches(&mut w, 5, 5, 200);
    let mut reader = Reader::open(dir.path(), 1).expect("reader");
    let mut n = 0;
    while let Some(e) = reader.next_entry().expect("read") {
        assert_eq!(e.payload, &payload(e.seq, 200)[..]);
        n += 1;
    }
    assert_eq!(n, first);
    // More batches, across rollovers: the same reader continues.
    let last = write_batches(&mut w, 200, 10, 900);
    let rest: Vec<u64> = reader.map(|e| e.expect("read").seq).collect();
    assert_eq!(rest, (first + 1..=last).collect::<Vec<_>>());
}

#[test]
fn retention_deletes_whole_old_segments_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut w, _) = Writer::open(cfg(dir.path(), Durability::Os)).expect("open");
    let last = write_batches(&mut w, 300, 10, 800);
    let before = segments(dir.path());
    assert!(before.len() >= 5);
    let cut = last / 2;
    let deleted = delete_segments_before(dir.path(), cut).expect("retention");
    assert!(!deleted.is_empty());
    let after = segments(dir.path());
    assert_eq!(after.len() + deleted.len(), before.len());
    let oldest: u64 = after[0]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment name");
    assert!(oldest <= cut, "a segment holding seq {cut} was deleted");
    // Records from `cut` on are all still readable; older ones are gone.
    assert_contents(dir.path(), cut, last, 800);
    let err = Reader::open(dir.path(), 1).expect_err("pruned");
    assert!(matches!(err, JournalError::SeqPruned { .. }), "{err}");
    // Never deletes the active segment, even when asked for everything.
    let all = delete_segments_before(dir.path(), u64::MAX).expect("retention");
    assert_eq!(all.len(), after.len() - 1);
    let last2 = write_batches(&mut w, 5, 5, 800);
    w.close().expect("close");
    let (_w, report) = Writer::open(cfg(dir.path(), Durability::Os)).expect("reopen");
    assert_eq!(report.last_seq, last2);
    assert!(report.first_seq > 1);
}
