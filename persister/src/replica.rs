//! Engine replicas: rebuild the engine's state from a data directory
//! (newest valid snapshot + replay of every later journal record). Used at
//! server startup, by `mini-exchange journal replay` / `snapshot create`, by
//! the persister and by the crash tests. Replaying is deterministic, so the
//! rebuilt `state_hash()` equals the live engine's at the same sequence.
//!
//! Data directory layout: `<data>/journal/` (segments) and
//! `<data>/snapshots/` (snapshot files whose payload is
//! `Engine::snapshot_bytes()`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::{Command, Engine, Event};

/// The on-disk layout under `MX_DATA_DIR`: `journal/` and `snapshots/`,
/// unless `journal.dir` / `snapshot.dir` put either elsewhere.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub root: PathBuf,
    journal: Option<PathBuf>,
    snapshots: Option<PathBuf>,
}

impl DataDir {
    /// The default layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir::with_dirs(root, None, None)
    }
    /// `root`, with the journal and the snapshots in the given directories
    /// where they are `Some` (config `journal.dir`, `snapshot.dir`).
    pub fn with_dirs(
        root: impl Into<PathBuf>,
        journal: Option<PathBuf>,
        snapshots: Option<PathBuf>,
    ) -> DataDir {
        DataDir {
            root: root.into(),
            journal,
            snapshots,
        }
    }
    pub fn journal(&self) -> PathBuf {
        self.journal
            .clone()
            .unwrap_or_else(|| self.root.join("journal"))
    }
    pub fn snapshots(&self) -> PathBuf {
        self.snapshots
            .clone()
            .unwrap_or_else(|| self.root.join("snapshots"))
    }
    /// Create the directories if missing.
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.journal())?;
        std::fs::create_dir_all(self.snapshots())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error("journal record {seq} does not decode as a command ({err}); the journal was written by an incompatible version or is damaged")]
    Decode {
        seq: u64,
        err: engine::command::DecodeError,
    },
    #[error("journal has a gap: expected record {expected}, found {found}")]
    Gap { expected: u64, found: u64 },
    #[error("no usable snapshot at or below seq {0}")]
    NoSnapshot(u64),
    #[error("i/o on {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

/// A snapshot that could not be used, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub seq: u64,
    pub path: PathBuf,
    pub reason: String,
}

/// Progress of a replay, reported about every second.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub seq: u64,
    pub replayed: u64,
    pub elapsed: Duration,
    pub records_per_sec: f64,
    /// Estimated seconds left when the target sequence is known.
    pub eta_secs: Option<f64>,
}

#[derive(Debug)]
pub struct Recovered {
    pub engine: Engine,
    /// Sequence of the snapshot the replay started from (0 = none).
    pub snapshot_seq: u64,
    /// Journal records applied after the snapshot.
    pub replayed: u64,
    pub skipped_snapshots: Vec<Skipped>,
    pub elapsed: Duration,
}

/// Engine capacity (open orders) to preallocate when none is configured.
pub const DEFAULT_CAPACITY: usize = 1 << 16;

/// Load the newest snapshot whose file verifies AND whose engine state
/// decodes and passes every invariant, with seq <= `max_seq`; older ones are
/// the fallback. Returns the engine (or a fresh one) and what was skipped.
pub fn load_snapshot(
    dir: &Path,
    max_seq: u64,
) -> Result<(Engine, u64, Vec<Skipped>), ReplicaError> {
    let mut skipped = Vec::new();
    if !dir.exists() {
        return Ok((Engine::with_capacity(DEFAULT_CAPACITY), 0, skipped));
    }
    for info in journal::snapshot::list(dir)?.into_iter().rev() {
        if info.seq > max_seq {
            continue;
        }
        let reason = match journal::snapshot::read(&info.path) {
            Ok((seq, bytes)) => match Engine::from_snapshot(&bytes) {
                Ok(e) if e.last_seq() == seq => return Ok((e, seq, skipped)),
                Ok(e) => format!("state is at seq {} but the file says {seq}", e.last_seq()),
                Err(err) => err.to_string(),
            },
            Err(err) => err.to_string(),
        };
        tracing::warn!(path = %info.path.display(), %reason, "skipping damaged snapshot");
        skipped.push(Skipped {
            seq: info.seq,
            path: info.path,
            reason,
        });
    }
    Ok((Engine::with_capacity(DEFAULT_CAPACITY), 0, skipped))
}

/// Apply journal records from `engine.last_seq() + 1` up to `to_seq`
/// (inclusive; `u64::MAX` = to the end of committed data). `on_events`
/// sees every record's events; `progress` is called about once a second.
pub fn replay(
    engine: &mut Engine,
    journal_dir: &Path,
    to_seq: u64,
    target_hint: Option<u64>,
    mut on_events: impl FnMut(u64, u64, &Command, &[Event]),
    mut progress: impl FnMut(Progress),
) -> Result<u64, ReplicaError> {
    let start_seq = engine.last_seq() + 1;
    if !journal_dir.exists() || to_seq < start_seq {
        return Ok(0);
    }
    let mut reader = journal::Reader::open(journal_dir, start_seq)?;
    let mut out: Vec<Event> = Vec::with_capacity(4096);
    let started = Instant::now();
    let mut last_report = started;
    let mut replayed = 0u64;
    let mut expected = start_seq;
    while let Some(entry) = reader.next_entry()? {
        if entry.seq > to_seq {
            break;
        }
        if entry.seq != expected {
            return Err(ReplicaError::Gap {
                expected,
                found: entry.seq,
            });
        }
        let cmd = Command::decode(entry.payload).map_err(|err| ReplicaError::Decode {
            seq: entry.seq,
            err,
        })?;
        let ts_ms = entry.timestamp_ns / 1_000_000;
        out.clear();
        engine.apply(entry.seq, ts_ms, &cmd, &mut out);
        on_events(entry.seq, ts_ms, &cmd, &out);
        replayed += 1;
        expected += 1;
        if replayed.is_multiple_of(65_536) && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let elapsed = started.elapsed();
            let rate = replayed as f64 / elapsed.as_secs_f64();
            progress(Progress {
                seq: entry.seq,
                replayed,
                elapsed,
                records_per_sec: rate,
                eta_secs: target_hint
                    .filter(|t| *t > entry.seq)
                    .map(|t| (t - entry.seq) as f64 / rate.max(1.0)),
            });
        }
    }
    Ok(replayed)
}

/// Full recovery: newest usable snapshot at or below `to_seq`, then replay
/// to `to_seq` (`u64::MAX` = everything committed).
pub fn recover(
    data: &DataDir,
    to_seq: u64,
    progress: impl FnMut(Progress),
) -> Result<Recovered, ReplicaError> {
    let started = Instant::now();
    let (mut engine, snapshot_seq, skipped_snapshots) = load_snapshot(&data.snapshots(), to_seq)?;
    let target = (to_seq != u64::MAX).then_some(to_seq);
    let replayed = replay(
        &mut engine,
        &data.journal(),
        to_seq,
        target,
        |_, _, _, _| {},
        progress,
    )?;
    tracing::info!(
        seq = engine.last_seq(),
        snapshot_seq,
        replayed,
        skipped_snapshots = skipped_snapshots.len(),
        state_hash = %format!("{:016x}", engine.state_hash()),
        ms = started.elapsed().as_millis() as u64,
        "state recovered"
    );
    Ok(Recovered {
        engine,
        snapshot_seq,
        replayed,
        skipped_snapshots,
        elapsed: started.elapsed(),
    })
}

/// Write a snapshot of `engine` into the data directory; returns its path.
pub fn write_snapshot(data: &DataDir, engine: &Engine) -> Result<PathBuf, ReplicaError> {
    std::fs::create_dir_all(data.snapshots()).map_err(|err| ReplicaError::Io {
        path: data.snapshots(),
        err,
    })?;
    Ok(journal::snapshot::write(
        data.snapshots(),
        engine.last_seq(),
        &engine.snapshot_bytes(),
    )?)
}

/// After a snapshot was written: delete the snapshots beyond
/// `policy.keep` (oldest first) and, with `retain_journal`, the journal
/// segments older than the oldest kept one. Returns the deleted snapshots.
pub fn prune_snapshots(
    data: &DataDir,
    policy: &SnapshotPolicy,
) -> Result<Vec<PathBuf>, ReplicaError> {
    let pruned = journal::snapshot::prune(data.snapshots(), policy.keep.max(1))?;
    if policy.retain_journal {
        if let Some(oldest) = journal::snapshot::list(data.snapshots())?.first() {
            journal::delete_segments_before(data.journal(), oldest.seq + 1)?;
        }
    }
    Ok(pruned)
}

/// When the snapshotter writes a snapshot.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    /// After this many records since the last snapshot (0: never by
    /// count)...
    pub every_records: u64,
    /// ...or this much time with at least one new record (zero: never by
    /// time).
    pub every: Duration,
    /// Snapshots kept (older ones are deleted); at least 1.
    pub keep: usize,
    /// Delete journal segments older than the oldest kept snapshot. Off by
    /// default: the journal is the history (API.md).
    pub retain_journal: bool,
}

impl SnapshotPolicy {
    /// Whether a snapshot is due `behind` records and `since` after the
    /// last one.
    pub fn due(&self, behind: u64, since: Duration) -> bool {
        behind > 0
            && ((self.every_records > 0 && behind >= self.every_records)
                || (!self.every.is_zero() && since >= self.every))
    }

    /// Whether this policy ever snapshots on its own (both intervals 0:
    /// only `serve`'s snapshot at shutdown).
    pub fn snapshots(&self) -> bool {
        self.every_records > 0 || !self.every.is_zero()
    }
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            every_records: 1_000_000,
            every: Duration::from_secs(600),
            keep: 3,
            retain_journal: false,
        }
    }
}

/// How often a [`Snapshotter`] catches up with the journal.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(20);

/// Most records a following [`Snapshotter`] applies before it looks at its
/// stop flag again.
const FOLLOW_MAX: usize = 65_536;

/// A replica engine that follows the live journal and writes snapshots, so
/// the live engine never pauses for one: it tails committed records (never
/// past the writer's durable point), applies them to its own engine, and
/// snapshots itself per [`SnapshotPolicy`].
#[derive(Debug)]
pub struct Snapshotter {
    data: DataDir,
    engine: Engine,
    tailer: journal::Tailer,
    policy: SnapshotPolicy,
    out: Vec<Event>,
    last_snapshot_seq: u64,
    last_snapshot_at: Instant,
}

impl Snapshotter {
    /// Start from the newest usable snapshot, following the journal whose
    /// writer publishes `durable`.
    pub fn start(
        data: DataDir,
        durable: journal::DurableSeq,
        policy: SnapshotPolicy,
    ) -> Result<Snapshotter, ReplicaError> {
        let (engine, snapshot_seq, _) = load_snapshot(&data.snapshots(), u64::MAX)?;
        let tailer = journal::Tailer::open(data.journal(), engine.last_seq() + 1, durable)?;
        Ok(Snapshotter {
            data,
            engine,
            tailer,
            policy,
            out: Vec::with_capacity(4096),
            last_snapshot_seq: snapshot_seq,
            last_snapshot_at: Instant::now(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Apply every record committed so far (at most `max` of them); write a
    /// snapshot if one is due. Returns the records applied and the snapshot
    /// written, if any.
    pub fn poll(&mut self, max: usize) -> Result<(usize, Option<PathBuf>), ReplicaError> {
        let mut n = 0;
        while n < max {
            let Some(entry) = self.tailer.poll()? else {
                break;
            };
            let expected = self.engine.last_seq() + 1;
            if entry.seq != expected {
                return Err(ReplicaError::Gap {
                    expected,
                    found: entry.seq,
                });
            }
            let cmd = Command::decode(entry.payload).map_err(|err| ReplicaError::Decode {
                seq: entry.seq,
                err,
            })?;
            self.out.clear();
            self.engine.apply(
                entry.seq,
                entry.timestamp_ns / 1_000_000,
                &cmd,
                &mut self.out,
            );
            n += 1;
        }
        let behind = self.engine.last_seq() - self.last_snapshot_seq;
        let written = if self.policy.due(behind, self.last_snapshot_at.elapsed()) {
            Some(self.snapshot_now()?)
        } else {
            None
        };
        Ok((n, written))
    }

    /// Write a snapshot of the replica's state now (no-op if nothing changed
    /// since the last one), prune old ones, and apply journal retention.
    pub fn snapshot_now(&mut self) -> Result<PathBuf, ReplicaError> {
        let started = Instant::now();
        let path = write_snapshot(&self.data, &self.engine)?;
        self.last_snapshot_seq = self.engine.last_seq();
        self.last_snapshot_at = Instant::now();
        let pruned = prune_snapshots(&self.data, &self.policy)?;
        tracing::info!(
            seq = self.last_snapshot_seq,
            path = %path.display(),
            ms = started.elapsed().as_millis() as u64,
            pruned = pruned.len(),
            "snapshot written"
        );
        Ok(path)
    }

    /// Follow the journal until `stop` is set. It catches up in bulk every
    /// [`FOLLOW_INTERVAL`] instead of chasing each group commit: applying a
    /// few thousand records at once costs a millisecond, while waking up
    /// for every commit cost the live server a core's worth of context
    /// switches under load (the replica only has to be current when a
    /// snapshot is due). Returns once `stop` is seen, without catching up:
    /// `serve` snapshots its live engine at shutdown itself. A policy that
    /// never snapshots ([`SnapshotPolicy::snapshots`]) leaves the replica
    /// where it is: following would only spend CPU.
    pub fn follow(&mut self, stop: &std::sync::atomic::AtomicBool) -> Result<(), ReplicaError> {
        use std::sync::atomic::Ordering;
        while !stop.load(Ordering::Acquire) {
            if !self.policy.snapshots() {
                std::thread::sleep(FOLLOW_INTERVAL);
                continue;
            }
            let (n, _) = self.poll(FOLLOW_MAX)?;
            if n < FOLLOW_MAX {
                std::thread::sleep(FOLLOW_INTERVAL);
            }
        }
        Ok(())
    }

    /// [`follow`](Self::follow) until `stop` is set, then catch up to the
    /// durable point and write a final snapshot (if anything is new since
    /// the last one).
    pub fn run(mut self, stop: &std::sync::atomic::AtomicBool) -> Result<Engine, ReplicaError> {
        self.follow(stop)?;
        while self.poll(FOLLOW_MAX)?.0 > 0 {}
        if self.engine.last_seq() > self.last_snapshot_seq {
            self.snapshot_now()?;
        }
        Ok(self.engine)
    }
}
