//! Journal benchmarks: raw append throughput per durability mode, the
//! journal + engine pipeline (a journaler thread group-committing batches and
//! handing them to the engine thread, as the server does), replay speed
//! (recovery), and snapshot write/load of a large state.

use std::path::{Path, PathBuf};
use std::time::Instant;

use engine::{Command, Engine, Event};
use journal::{Durability, JournalConfig, Writer};

use crate::workload::Workload;

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(base: Option<&Path>, name: &str) -> Scratch {
        let base = base
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let p = base.join(format!("mx-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn mode_name(d: Durability) -> &'static str {
    match d {
        Durability::Fsync => "fsync",
        Durability::Os => "os",
        Durability::None => "none",
    }
}

fn open(dir: &Path, durability: Durability) -> Writer {
    let cfg = JournalConfig {
        durability,
        ..JournalConfig::new(dir)
    };
    Writer::open(cfg).expect("open journal").0
}

#[derive(Debug, Clone)]
pub struct AppendResult {
    pub records: usize,
    pub bytes: u64,
    pub elapsed_ns: u64,
    pub commits: u64,
}

/// Append pre-encoded payloads in batches of `batch`, committing each.
pub fn append(
    dir: &Path,
    durability: Durability,
    payloads: &[Vec<u8>],
    batch: usize,
) -> AppendResult {
    let mut w = open(dir, durability);
    let mut bytes = 0u64;
    let mut commits = 0u64;
    let t0 = Instant::now();
    for (i, chunk) in payloads.chunks(batch).enumerate() {
        let ts = (1_700_000_000_000 + i as u64) * 1_000_000;
        for p in chunk {
            w.append(ts, p).expect("append");
            bytes += p.len() as u64;
        }
        w.commit().expect("commit");
        commits += 1;
    }
    let elapsed_ns = t0.elapsed().as_nanos() as u64;
    w.close().expect("close");
    AppendResult {
        records: payloads.len(),
        bytes,
        elapsed_ns,
        commits,
    }
}

/// Latency of small group commits (`batch` records each, as the server
/// commits under load) under `Durability::Fsync`: append + `pwrite` +
/// `fdatasync` per commit, one at a time. Returns the per-commit durations
/// (ns).
pub fn commit_latency(
    dir: &Path,
    payloads: &[Vec<u8>],
    batch: usize,
    commits: usize,
) -> hdrhistogram::Histogram<u64> {
    let mut w = open(dir, Durability::Fsync);
    let mut next = payloads.iter().cycle();
    let mut ts = 1_700_000_000_000_000_000u64;
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
        .expect("histogram bounds");
    for _ in 0..commits {
        for _ in 0..batch {
            ts += 1_000;
            w.append(ts, next.next().expect("payloads"))
                .expect("append");
        }
        let t = Instant::now();
        w.commit().expect("commit");
        h.saturating_record((t.elapsed().as_nanos() as u64).max(1_000));
    }
    w.close().expect("close");
    h
}

#[derive(Debug, Clone)]
pub struct PipelineResult {
    pub commands: usize,
    pub elapsed_ns: u64,
    pub commits: u64,
    pub max_batch: usize,
}

/// Journaler thread: append up to `batch` commands, commit (durable per
/// policy), hand the batch's range to the engine thread over a bounded
/// channel; the engine thread applies in order. Timed until the engine has
/// applied the last command.
pub fn pipeline(
    dir: &Path,
    durability: Durability,
    w: &Workload,
    batch: usize,
) -> (Engine, PipelineResult) {
    let mut writer = open(dir, durability);
    let encoded: Vec<Vec<u8>> = w.commands.iter().map(Command::encode).collect();
    let (tx, rx) = crossbeam::channel::bounded::<(usize, usize, u64)>(64);
    let mut engine = w.base.clone();
    let first_seq = w.first_seq;
    let mut commits = 0u64;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let cmds = &w.commands;
        let eng = &mut engine;
        let consumer = s.spawn(move || {
            let mut out: Vec<Event> = Vec::with_capacity(4096);
            while let Ok((from, to, ts_ms)) = rx.recv() {
                for (i, c) in cmds[from..to].iter().enumerate() {
                    out.clear();
                    eng.apply(first_seq + (from + i) as u64, ts_ms, c, &mut out);
                }
            }
        });
        let mut i = 0;
        while i < encoded.len() {
            let end = (i + batch).min(encoded.len());
            let ts_ms = w.first_ts + i as u64;
            for p in &encoded[i..end] {
                writer.append(ts_ms * 1_000_000, p).expect("append");
            }
            writer.commit().expect("commit");
            commits += 1;
            tx.send((i, end, ts_ms)).expect("engine thread alive");
            i = end;
        }
        drop(tx);
        consumer.join().expect("engine thread");
    });
    let elapsed_ns = t0.elapsed().as_nanos() as u64;
    writer.close().expect("close");
    (
        engine,
        PipelineResult {
            commands: w.commands.len(),
            elapsed_ns,
            commits,
            max_batch: batch,
        },
    )
}

/// Write the workload's commands to a journal (as if live: seq after the
/// setup prefix replayed by `persister::replica`), so replay can be timed.
/// The setup state goes in as a snapshot at `first_seq - 1`.
pub fn write_for_replay(data: &persister::replica::DataDir, w: &Workload) {
    data.create().expect("create data dir");
    let mut writer = Writer::open(JournalConfig {
        durability: Durability::None,
        ..JournalConfig::new(data.journal())
    })
    .expect("open journal")
    .0;
    assert_eq!(writer.last_seq(), 0);
    let base_seq = w.first_seq - 1;
    // The setup state is the snapshot at `base_seq`; the journal's numbering
    // must line up with it, so its first `base_seq` records are fillers
    // (never replayed: replay starts after the snapshot).
    let filler = Command::CancelAll {
        user: engine::UserId(u64::MAX),
        pair: engine::PairId(1),
    }
    .encode();
    for _ in 0..base_seq {
        writer.append(0, &filler).expect("append");
    }
    writer.commit().expect("commit");
    let mut buf = Vec::with_capacity(256);
    for (i, c) in w.commands.iter().enumerate() {
        buf.clear();
        c.encode_into(&mut buf);
        writer
            .append((w.first_ts + i as u64) * 1_000_000, &buf)
            .expect("append");
        if i % 4096 == 4095 {
            writer.commit().expect("commit");
        }
    }
    writer.commit().expect("commit");
    writer.close().expect("close");
    persister::replica::write_snapshot(data, &w.base).expect("snapshot");
}
