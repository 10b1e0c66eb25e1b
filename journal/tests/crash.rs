//! kill -9 crash test with real processes. The test binary re-executes
//! itself in "child" mode (env var + exact test filter): the child appends
//! batches and prints `ACK <seq>` after every commit; the parent kills it
//! with SIGKILL at a random moment, then recovers the journal and checks
//! that every acknowledged seq is present with its payload, that the
//! journal ends on a batch boundary (nothing half-visible) and that
//! appending continues from the recovered seq. Reproduce a run with
//! `JOURNAL_CRASH_SEED=<seed printed on failure>`.

mod common;

use common::*;
use journal::{Durability, JournalConfig, Reader, Writer};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CHILD_DIR_ENV: &str = "JOURNAL_CRASH_CHILD_DIR";
const CHILD_DURABILITY_ENV: &str = "JOURNAL_CRASH_CHILD_DURABILITY";
const CHILD_TEST: &str = "crash_child_process";
const MAX_LEN: u64 = 600;
const ITERATIONS: u64 = 30;

/// Batch sizes are a function of the batch's first seq, so the parent can
/// tell batch boundaries without talking to the child.
fn batch_size(first_seq: u64) -> u64 {
    1 + mix(first_seq ^ 0x5eed) % 12
}

fn child_cfg(dir: &Path, durability: Durability) -> JournalConfig {
    JournalConfig {
        segment_size: SEG,
        durability,
        watermark_interval: 4,
        ..JournalConfig::new(dir)
    }
}

fn append_batch(w: &mut Writer) -> u64 {
    let first = w.last_seq() + 1;
    for seq in first..first + batch_size(first) {
        assert_eq!(
            w.append(ts(seq), &payload(seq, MAX_LEN)).expect("append"),
            seq
        );
    }
    w.commit().expect("commit")
}

/// Child mode: a no-op unless the parent set `CHILD_DIR_ENV`.
#[test]
fn crash_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let durability = match std::env::var(CHILD_DURABILITY_ENV).as_deref() {
        Ok("fsync") => Durability::Fsync,
        _ => Durability::Os,
    };
    let (mut w, report) = Writer::open(child_cfg(Path::new(&dir), durability)).expect("child open");
    let mut out = std::io::stdout().lock();
    // Leading newline: libtest has already printed "test <name> ... ".
    writeln!(out, "\nSTART {}", report.last_seq).expect("stdout");
    out.flush().expect("stdout");
    // Bounded so an orphaned child cannot run for long (the parent waits for
    // at most a few hundred acks); a closed pipe also ends it.
    for _ in 0..20_000 {
        let acked = append_batch(&mut w);
        if writeln!(out, "ACK {acked}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
}

/// The value after `tag` in a line of child output, if the line has it.
fn tagged(line: &str, tag: &str) -> Option<u64> {
    let at = line.find(tag)?;
    line[at + tag.len()..].trim().parse().ok()
}

fn is_batch_boundary(start: u64, seq: u64) -> bool {
    let mut b = start;
    while b < seq {
        b += batch_size(b + 1);
    }
    b == seq
}

#[test]
fn kill9_at_random_moments_loses_no_acknowledged_batch() {
    let seed = std::env::var("JOURNAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut rng = seed;
    let mut next_rand = move || {
        rng = mix(rng);
        rng
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current_exe");
    let started = Instant::now();
    let mut expected_start = 0;
    let mut total_acks = 0;
    let mut total_unacked_recovered = 0;

    for iter in 0..ITERATIONS {
        let ctx = format!("seed {seed}, iteration {iter}");
        let durability = if iter % 2 == 0 { "fsync" } else { "os" };
        let mut child = Command::new(&exe)
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_DURABILITY_ENV, durability)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut next_line =
            || -> Option<String> { lines.next().map(|l| l.expect("read child stdout")) };

        let start = loop {
            let line = next_line().unwrap_or_else(|| panic!("{ctx}: child exited before START"));
            if let Some(seq) = tagged(&line, "START ") {
                break seq;
            }
        };
        assert_eq!(
            start, expected_start,
            "{ctx}: child recovered a different seq"
        );

        let target = 1 + next_rand() % 120;
        let mut acked = start;
        let mut seen = 0;
        let check_ack = |line: &str, acked: &mut u64| {
            if let Some(seq) = tagged(line, "ACK ") {
                assert!(
                    seq > *acked && is_batch_boundary(start, seq),
                    "{ctx}: bad ack {seq}"
                );
                *acked = seq;
                return true;
            }
            false
        };
        while seen < target {
            let line = next_line().unwrap_or_else(|| panic!("{ctx}: child exited early"));
            if check_ack(&line, &mut acked) {
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(next_rand() % 1500));
        child.kill().expect("SIGKILL child");
        let status = child.wait().expect("wait child");
        assert!(!status.success(), "{ctx}: child was not killed ({status})");
        // Acks the child printed before dying count too.
        while let Some(line) = next_line() {
            check_ack(&line, &mut acked);
        }
        total_acks += acked - start;

        let (mut w, report) = Writer::open(cfg(dir.path(), Durability::Os))
            .unwrap_or_else(|e| panic!("{ctx}: recovery after kill -9 failed: {e}"));
        assert!(
            report.last_seq >= acked,
            "{ctx}: acknowledged seq {acked} lost, recovered only {}",
            report.last_seq
        );
        assert!(
            is_batch_boundary(start, report.last_seq),
            "{ctx}: recovered seq {} is inside a batch",
            report.last_seq
        );
        assert!(report.repair.is_none(), "{ctx}");
        total_unacked_recovered += report.last_seq - acked;

        let mut expected = 1;
        for entry in Reader::open(dir.path(), 1).expect("reader") {
            let e = entry.unwrap_or_else(|err| panic!("{ctx}: read failed: {err}"));
            assert_eq!(e.seq, expected, "{ctx}");
            assert_eq!(e.timestamp_ns, ts(e.seq), "{ctx}");
            assert_eq!(
                e.payload,
                payload(e.seq, MAX_LEN),
                "{ctx}: payload of {}",
                e.seq
            );
            expected += 1;
        }
        assert_eq!(
            expected - 1,
            report.last_seq,
            "{ctx}: reader and recovery disagree"
        );

        // Appending continues right after the recovered seq.
        let first = report.last_seq + 1;
        let last = append_batch(&mut w);
        assert_eq!(last, first + batch_size(first) - 1, "{ctx}");
        w.close().expect("close");
        expected_start = last;
    }
    let segs = segments(dir.path()).len();
    eprintln!(
        "crash test: seed {seed}, {ITERATIONS} kills, {total_acks} acknowledged seqs, \
         {total_unacked_recovered} unacknowledged-but-committed seqs kept, {segs} segments, {:?}",
        started.elapsed()
    );
    assert!(segs > 2, "the test should cross segment rollovers");
}
