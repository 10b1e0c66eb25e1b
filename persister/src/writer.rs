//! The Postgres writer: follows the journal through an engine replica and
//! writes every record's events into the read model, exactly once.
//!
//! * Start: read (or create) this writer's row in `persister_checkpoints`,
//!   rebuild the replica at the checkpoint (newest snapshot at or below it +
//!   journal replay, writing nothing), then follow the journal from
//!   `checkpoint + 1` — with a [`journal::Tailer`] bounded by the live
//!   writer's [`journal::DurableSeq`] in-process, or a polling
//!   [`journal::Reader`] when run alone (`mini-exchange persist`).
//! * Batches: records are applied to the replica and turned into rows
//!   ([`crate::rows::Batch`]); the rows and the checkpoint move commit in ONE
//!   transaction, so a restart resumes exactly after the last commit. Batch
//!   size grows with the lag (up to [`WriterConfig::max_batch`] records).
//!   A batch costs three round trips: BEGIN, its statements (prepared once
//!   per connection, sent as one pipeline; big tables by binary COPY, see
//!   [`crate::copy`]), COMMIT. Klines and the 24 h ticker are derived from
//!   the batch's trades in the same transaction ([`crate::klines`]).
//! * Postgres down: the batch in hand is kept and retried with exponential
//!   backoff (logged at WARN); the journal keeps growing, the exchange keeps
//!   trading, and the writer catches up with bigger batches when it returns.
//!   A commit whose outcome was lost is resolved by re-reading the checkpoint.
//! * Asynchronous commit: writer connections run with
//!   `synchronous_commit = off` ([`SESSION_SETTINGS`]), so a COMMIT does not
//!   wait for the WAL fsync (a wait per batch, which bounds a writer that
//!   follows the live journal in small batches). Exactly-once still holds:
//!   a Postgres crash may lose the last few acknowledged commits, but each
//!   lost commit takes its own checkpoint move with it (same transaction),
//!   and the journal, not Postgres, is the truth, so on restart the writer
//!   reads the older checkpoint and writes those records again. A lost
//!   commit is never torn (Postgres recovers to a consistent prefix of its
//!   WAL) and the window is short (at most about three
//!   `wal_writer_delay`s). Nothing takes the checkpoint as a durability
//!   promise: journal retention follows snapshots, not the checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Command, Engine, Event};
use tokio_postgres::{Client, NoTls};

use crate::migrate;
use crate::replica::{self, DataDir, ReplicaError};
use crate::rows::{year_month, Batch, Domain, Domains};
use crate::sql::Statements;

/// Name (in logs) of the writer that owns every table.
pub const DEFAULT_WRITER: &str = "all";

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error("migrations failed: {0}")]
    Migrate(#[from] migrate::MigrateError),
    #[error("checkpoint of writer {writer} is at seq {checkpoint} but the journal ends at {journal}: Postgres is ahead of this data directory (wrong MX_DATA_DIR or DATABASE_URL?)")]
    AheadOfJournal {
        writer: String,
        checkpoint: u64,
        journal: u64,
    },
    #[error("checkpoint of writer {writer} moved to {found} behind our back (expected {expected}): is another persister running against this database?")]
    CheckpointMoved {
        writer: String,
        expected: u64,
        found: u64,
    },
    #[error("cannot start the writer runtime: {0}")]
    Runtime(std::io::Error),
}

/// Where new journal records come from.
#[derive(Debug, Clone)]
pub enum Follow {
    /// In-process: tail the live writer, never past its durable seq.
    Durable(journal::DurableSeq),
    /// Alone: poll the journal directory for committed records.
    Poll,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Name in logs and errors.
    pub writer: String,
    /// The tables this writer writes; each domain keeps its own checkpoint
    /// row (named after it), so writers of different domains run side by
    /// side, and one writer of all domains catches every domain up from
    /// its own checkpoint.
    pub domains: Domains,
    pub database_url: String,
    pub data: DataDir,
    /// Most records in one batch (when far behind).
    pub max_batch: usize,
    /// Fewest records a batch waits for when behind (latency vs throughput).
    pub min_batch: usize,
    /// Sleep when caught up.
    pub idle: Duration,
    /// Longest backoff between retries while Postgres is unreachable.
    pub max_backoff: Duration,
    /// Run the migrations at start.
    pub migrate: bool,
    /// Fewest rows of the ledger, outbox or trades in a batch that go by
    /// binary COPY rather than the pipelined UNNEST statement
    /// (`usize::MAX`: never).
    pub copy_min_rows: usize,
}

impl WriterConfig {
    /// A writer of one domain only (`persister.writers = "split"`).
    pub fn for_domain(mut self, d: Domain) -> WriterConfig {
        self.writer = d.name().into();
        self.domains = Domains::only(d);
        self
    }

    pub fn new(database_url: impl Into<String>, data: DataDir) -> WriterConfig {
        WriterConfig {
            writer: DEFAULT_WRITER.into(),
            domains: Domains::ALL,
            database_url: database_url.into(),
            data,
            max_batch: 20_000,
            min_batch: 256,
            idle: Duration::from_millis(20),
            max_backoff: Duration::from_secs(5),
            migrate: true,
            copy_min_rows: crate::copy::COPY_MIN_ROWS,
        }
    }
}

/// Progress shared with `/health` and `/metrics`.
#[derive(Debug, Default)]
pub struct PersisterStatus {
    /// Last seq committed to Postgres.
    pub written_seq: AtomicU64,
    /// Last seq known to exist in the journal.
    pub head_seq: AtomicU64,
    /// Journal time (ms) of the last committed record.
    pub written_ts_ms: AtomicU64,
    /// Journal time (ms) of the newest record read.
    pub head_ts_ms: AtomicU64,
    pub connected: AtomicBool,
    /// True once the replica is rebuilt and the writer follows the journal.
    pub running: AtomicBool,
    pub batches: AtomicU64,
    pub rows: AtomicU64,
    pub errors: AtomicU64,
    /// Time spent reading the journal, applying records to the replica and
    /// building rows (ns, summed over batches).
    pub build_ns: AtomicU64,
    /// Time spent writing batches to Postgres, retries included (ns).
    pub flush_ns: AtomicU64,
}

impl PersisterStatus {
    pub fn lag_seq(&self) -> u64 {
        self.head_seq
            .load(Ordering::Relaxed)
            .saturating_sub(self.written_seq.load(Ordering::Relaxed))
    }
    /// Journal-time distance between the newest record read and the last
    /// committed one, in seconds.
    pub fn lag_secs(&self) -> f64 {
        let h = self.head_ts_ms.load(Ordering::Relaxed);
        let w = self.written_ts_ms.load(Ordering::Relaxed);
        if self.lag_seq() == 0 {
            0.0
        } else {
            h.saturating_sub(w) as f64 / 1000.0
        }
    }
    /// The `/health` member.
    pub fn health_json(&self) -> String {
        format!(
            "{{\"written_seq\":{},\"lag_seq\":{},\"lag_s\":{:.3},\"connected\":{},\"running\":{}}}",
            self.written_seq.load(Ordering::Relaxed),
            self.lag_seq(),
            self.lag_secs(),
            self.connected.load(Ordering::Relaxed),
            self.running.load(Ordering::Relaxed),
        )
    }
}

/// The writers of one persister (one, or one per domain), as `/health`
/// and `/metrics` show them: the furthest behind sets the lag.
#[derive(Debug, Default)]
pub struct PersisterGroup {
    pub writers: Vec<(String, Arc<PersisterStatus>)>,
}

impl PersisterGroup {
    pub fn lag_seq(&self) -> u64 {
        self.writers
            .iter()
            .map(|(_, s)| s.lag_seq())
            .max()
            .unwrap_or(0)
    }
    pub fn lag_secs(&self) -> f64 {
        self.writers
            .iter()
            .map(|(_, s)| s.lag_secs())
            .fold(0.0, f64::max)
    }
    /// Every record up to this one is in every table.
    pub fn written_seq(&self) -> u64 {
        self.writers
            .iter()
            .map(|(_, s)| s.written_seq.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
    /// A counter summed over the writers.
    pub fn total(&self, f: impl Fn(&PersisterStatus) -> &AtomicU64) -> u64 {
        self.writers
            .iter()
            .map(|(_, s)| f(s).load(Ordering::Relaxed))
            .sum()
    }
    /// The `/health` member: the group, then each writer.
    pub fn health_json(&self) -> String {
        let all = |f: fn(&PersisterStatus) -> &AtomicBool| {
            self.writers
                .iter()
                .all(|(_, s)| f(s).load(Ordering::Relaxed))
        };
        let each: Vec<String> = self
            .writers
            .iter()
            .map(|(n, s)| format!("\"{n}\":{}", s.health_json()))
            .collect();
        format!(
            "{{\"written_seq\":{},\"lag_seq\":{},\"lag_s\":{:.3},\"connected\":{},\"running\":{},\"writers\":{{{}}}}}",
            self.written_seq(),
            self.lag_seq(),
            self.lag_secs(),
            all(|s| &s.connected),
            all(|s| &s.running),
            each.join(",")
        )
    }
}

enum Source {
    Tail(journal::Tailer),
    Poll(journal::Reader),
}

impl Source {
    fn next(&mut self) -> Result<Option<(u64, u64, Command)>, ReplicaError> {
        let entry = match self {
            Source::Tail(t) => t.poll()?,
            Source::Poll(r) => r.next_entry()?,
        };
        let Some(e) = entry else { return Ok(None) };
        let cmd =
            Command::decode(e.payload).map_err(|err| ReplicaError::Decode { seq: e.seq, err })?;
        Ok(Some((e.seq, e.timestamp_ns / 1_000_000, cmd)))
    }
}

/// Run the writer on this thread until `stop` is set (then it commits what
/// it holds if Postgres is reachable and returns). Builds its own
/// single-threaded tokio runtime: call it from a plain thread.
pub fn run(
    cfg: WriterConfig,
    follow: Follow,
    stop: Arc<AtomicBool>,
    status: Arc<PersisterStatus>,
) -> Result<(), WriterError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(WriterError::Runtime)?;
    rt.block_on(run_async(cfg, follow, stop, status))
}

/// Spawn [`run`] on a named thread.
pub fn spawn(
    cfg: WriterConfig,
    follow: Follow,
    stop: Arc<AtomicBool>,
    status: Arc<PersisterStatus>,
) -> std::io::Result<std::thread::JoinHandle<Result<(), WriterError>>> {
    std::thread::Builder::new()
        .name("persister".into())
        .spawn(move || {
            let r = run(cfg, follow, stop, status);
            if let Err(err) = &r {
                tracing::error!(%err, "persister stopped");
            }
            r
        })
}

/// Settings of every writer connection (run once per connection).
pub const SESSION_SETTINGS: &str = "SET synchronous_commit = off";

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::warn!(error = %migrate::describe(&err), "persister: Postgres connection lost");
        }
    });
    Ok(client)
}

struct Conn {
    cfg: WriterConfig,
    client: Option<Client>,
    /// Statements prepared on `client`.
    statements: Statements,
    backoff: Duration,
    migrated: bool,
    status: Arc<PersisterStatus>,
}

impl Conn {
    /// A connected client and its prepared statements, retrying with
    /// backoff; `None` when stopping.
    async fn get(
        &mut self,
        stop: &AtomicBool,
    ) -> Result<Option<(&mut Client, &mut Statements)>, WriterError> {
        loop {
            if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
                return Ok(self.client.as_mut().map(|c| (c, &mut self.statements)));
            }
            self.client = None;
            self.status.connected.store(false, Ordering::Relaxed);
            if stop.load(Ordering::Acquire) {
                return Ok(None);
            }
            match connect(&self.cfg.database_url).await {
                Ok(mut c) => {
                    if self.cfg.migrate && !self.migrated {
                        match migrate::run(&mut c).await {
                            Ok(report) => {
                                self.migrated = true;
                                tracing::info!(?report, "persister: migrations applied");
                            }
                            Err(migrate::MigrateError::Db(err)) => {
                                self.failed(&migrate::describe(&err), stop).await;
                                continue;
                            }
                            Err(err) => return Err(err.into()),
                        }
                    }
                    // Asynchronous commit (see the module docs): a batch's
                    // COMMIT returns without waiting for its WAL flush. Safe
                    // because the checkpoint commits in the same transaction
                    // as the rows and the journal is the truth: a Postgres
                    // crash that loses the last commits loses their
                    // checkpoint moves with them, and the writer rewrites
                    // those records on restart (no gap, no duplicate).
                    if let Err(err) = c.batch_execute(SESSION_SETTINGS).await {
                        self.failed(&migrate::describe(&err), stop).await;
                        continue;
                    }
                    if let Err(err) = c.batch_execute("SELECT create_monthly_partitions()").await {
                        self.failed(&migrate::describe(&err), stop).await;
                        continue;
                    }
                    tracing::info!("persister: connected to Postgres");
                    self.backoff = Duration::from_millis(100);
                    self.status.connected.store(true, Ordering::Relaxed);
                    self.client = Some(c);
                    self.statements.clear();
                }
                Err(err) => self.failed(&migrate::describe(&err), stop).await,
            }
        }
    }

    /// Log a failure, drop the connection and back off.
    async fn failed(&mut self, error: &str, stop: &AtomicBool) {
        self.status.errors.fetch_add(1, Ordering::Relaxed);
        self.status.connected.store(false, Ordering::Relaxed);
        self.client = None;
        tracing::warn!(
            error,
            retry_in_ms = self.backoff.as_millis() as u64,
            "persister: Postgres unavailable; the exchange keeps trading, rows will be written when it returns"
        );
        let until = Instant::now() + self.backoff;
        while Instant::now() < until && !stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.backoff = (self.backoff * 2).min(self.cfg.max_backoff);
    }
}

/// The checkpoint of each domain in `domains`, creating missing rows.
/// A database written before writers were split has only the `core` row,
/// and that writer wrote every table: a missing domain row starts at the
/// `core` row's seq (or 0 in a new database).
async fn read_checkpoints(
    c: &Client,
    domains: Domains,
) -> Result<BTreeMap<Domain, u64>, tokio_postgres::Error> {
    let all = Domains::ALL.names();
    c.execute(
        "INSERT INTO persister_checkpoints (writer, last_seq)
         SELECT d, COALESCE((SELECT last_seq FROM persister_checkpoints WHERE writer = 'core'), 0)
         FROM unnest($1::text[]) AS d
         ON CONFLICT (writer) DO NOTHING",
        &[&all],
    )
    .await?;
    let rows = c
        .query(
            "SELECT writer, last_seq FROM persister_checkpoints WHERE writer = ANY($1::text[])",
            &[&domains.names()],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let d = Domain::parse(r.get::<_, &str>(0))?;
            Some((d, r.get::<_, i64>(1) as u64))
        })
        .collect())
}

/// Another writer's checkpoint.
async fn checkpoint_at(c: &Client, d: Domain) -> Result<u64, tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT coalesce(max(last_seq), 0) FROM persister_checkpoints WHERE writer = $1",
            &[&d.name()],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Months (year * 12 + month - 1) from `min_ts` to `max_ts`.
fn months(min_ts: u64, max_ts: u64) -> (i64, i64) {
    let (y0, m0) = year_month(min_ts);
    let (y1, m1) = year_month(max_ts);
    (y0 * 12 + m0 as i64 - 1, y1 * 12 + m1 as i64 - 1)
}

fn month_date(m: i64) -> String {
    format!("{:04}-{:02}-01", m.div_euclid(12), m.rem_euclid(12) + 1)
}

async fn run_async(
    cfg: WriterConfig,
    follow: Follow,
    stop: Arc<AtomicBool>,
    status: Arc<PersisterStatus>,
) -> Result<(), WriterError> {
    let writer = cfg.writer.clone();
    let mut conn = Conn {
        cfg: cfg.clone(),
        client: None,
        statements: Statements::new(),
        backoff: Duration::from_millis(100),
        migrated: false,
        status: status.clone(),
    };
    // 1. The checkpoints (one per domain this writer owns); the replica
    // starts at the lowest.
    let mut checkpoints = loop {
        let Some((c, _)) = conn.get(&stop).await? else {
            return Ok(());
        };
        match read_checkpoints(c, cfg.domains).await {
            Ok(cps) => break cps,
            Err(err) => conn.failed(&migrate::describe(&err), &stop).await,
        }
    };
    let checkpoint = checkpoints.values().copied().min().unwrap_or(0);
    // 2. The replica at the checkpoint, without writing.
    let started = Instant::now();
    let (mut engine, snapshot_seq, _) = replica::load_snapshot(&cfg.data.snapshots(), checkpoint)?;
    replica::replay(
        &mut engine,
        &cfg.data.journal(),
        checkpoint,
        Some(checkpoint),
        |_, _, _, _| {},
        |p| {
            tracing::info!(
                seq = p.seq,
                rate = p.records_per_sec as u64,
                "persister: rebuilding replica"
            )
        },
    )?;
    if engine.last_seq() != checkpoint {
        return Err(WriterError::AheadOfJournal {
            writer,
            checkpoint,
            journal: engine.last_seq(),
        });
    }
    tracing::info!(
        writer = %writer,
        checkpoint,
        snapshot_seq,
        ms = started.elapsed().as_millis() as u64,
        "persister: replica rebuilt, following the journal"
    );
    status.written_seq.store(checkpoint, Ordering::Relaxed);
    status.head_seq.store(checkpoint, Ordering::Relaxed);
    status
        .written_ts_ms
        .store(engine.last_ts_ms(), Ordering::Relaxed);
    status.running.store(true, Ordering::Relaxed);

    // 3. Follow.
    let mut source = match &follow {
        Follow::Durable(d) => Source::Tail(journal::Tailer::open(
            cfg.data.journal(),
            checkpoint + 1,
            d.clone(),
        )?),
        Follow::Poll => {
            std::fs::create_dir_all(cfg.data.journal()).map_err(|err| ReplicaError::Io {
                path: cfg.data.journal(),
                err,
            })?;
            Source::Poll(journal::Reader::open(cfg.data.journal(), checkpoint + 1)?)
        }
    };
    let mut ensured: BTreeSet<i64> = BTreeSet::new();
    let mut events: Vec<Event> = Vec::with_capacity(4096);
    let mut idle = Duration::from_millis(1);
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let behind = match &follow {
            Follow::Durable(d) => d.get().saturating_sub(engine.last_seq()) as usize,
            Follow::Poll => cfg.max_batch,
        };
        let mut limit = (behind / 2).clamp(cfg.min_batch, cfg.max_batch);
        // Domains whose checkpoint is ahead (a writer of all domains
        // catching one up): a batch ends at the next such checkpoint, so it
        // is written for exactly the domains that are at its start.
        let at = engine.last_seq();
        if let Some(next) = checkpoints.values().copied().filter(|&c| c > at).min() {
            limit = limit.min((next - at) as usize);
        }
        let keep = checkpoints
            .iter()
            .filter(|(_, &c)| c == at)
            .fold(Domains::NONE, |k, (d, _)| k.with(*d));
        let mut batch = Batch {
            skip: keep.complement(),
            ..Batch::default()
        };
        let building = Instant::now();
        while batch.records < limit {
            let Some((seq, ts_ms, cmd)) = source.next()? else {
                break;
            };
            let expected = engine.last_seq() + 1;
            if seq != expected {
                return Err(ReplicaError::Gap {
                    expected,
                    found: seq,
                }
                .into());
            }
            events.clear();
            engine.apply(seq, ts_ms, &cmd, &mut events);
            batch.add(&engine, seq, ts_ms, &cmd, &events);
            status.head_seq.fetch_max(seq, Ordering::Relaxed);
            status.head_ts_ms.store(ts_ms, Ordering::Relaxed);
        }
        if let Follow::Durable(d) = &follow {
            status.head_seq.fetch_max(d.get(), Ordering::Relaxed);
        }
        if batch.is_empty() {
            if stopping {
                return Ok(());
            }
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(cfg.idle);
            continue;
        }
        idle = Duration::from_millis(1);
        batch.retain(keep);
        status
            .build_ns
            .fetch_add(building.elapsed().as_nanos() as u64, Ordering::Relaxed);
        // Write it, however long Postgres takes to come back.
        let flushing = Instant::now();
        let mut waited = Instant::now();
        let mut attempt = 0u32;
        loop {
            let Some((c, statements)) = conn.get(&stop).await? else {
                tracing::warn!(
                    from = batch.first_seq,
                    to = batch.last_seq,
                    "persister: stopping with an unwritten batch; it is written at the next start"
                );
                return Ok(());
            };
            // Some writes read other domains' tables: the 24 h ticker's
            // first trade id (market data reads `trades`) and a
            // settlement's gross amounts, fees and opening balances (core
            // reads `trades` and `transactions`). Such a batch waits until
            // those writers have committed the same records (in one writer
            // they share the transaction).
            let settles = keep.contains(Domain::Core) && !batch.settlements.is_empty();
            let reads = [
                (
                    Domain::Trading,
                    keep.contains(Domain::MarketData) || settles,
                ),
                (Domain::Ledger, settles),
            ];
            let mut behind = None;
            for (d, reads) in reads {
                if !reads || keep.contains(d) {
                    continue;
                }
                match checkpoint_at(c, d).await {
                    Ok(at) if at >= batch.last_seq => {}
                    other => {
                        behind = Some(other.map(|at| (d, at)));
                        break;
                    }
                }
            }
            if let Some(behind) = behind {
                match behind {
                    Ok((d, at)) => {
                        if waited.elapsed() >= Duration::from_secs(10) {
                            waited = Instant::now();
                            tracing::warn!(
                                writer = d.name(),
                                at,
                                batch = batch.last_seq,
                                "persister: a batch that reads another writer's table waits for that writer (is it running?)"
                            );
                        }
                        if stop.load(Ordering::Acquire) {
                            return Ok(());
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    Err(err) => {
                        attempt += 1;
                        conn.failed(&migrate::describe(&err), &stop).await;
                        continue;
                    }
                }
            }
            let retry = attempt > 0;
            let target = Target {
                domains: keep,
                copy_min_rows: cfg.copy_min_rows,
            };
            match flush(c, statements, target, &engine, &batch, &mut ensured, retry).await {
                Ok(FlushOutcome::Written) => break,
                Ok(FlushOutcome::Moved(found)) => {
                    return Err(WriterError::CheckpointMoved {
                        writer,
                        expected: batch.first_seq - 1,
                        found,
                    })
                }
                Err(err) => {
                    attempt += 1;
                    conn.failed(&migrate::describe(&err), &stop).await;
                }
            }
        }
        status
            .flush_ns
            .fetch_add(flushing.elapsed().as_nanos() as u64, Ordering::Relaxed);
        for d in keep.iter() {
            checkpoints.insert(d, batch.last_seq);
        }
        let written = checkpoints.values().copied().min().unwrap_or(0);
        status.written_seq.store(written, Ordering::Relaxed);
        status.written_ts_ms.store(batch.max_ts, Ordering::Relaxed);
        status.batches.fetch_add(1, Ordering::Relaxed);
        status
            .rows
            .fetch_add(batch.row_count() as u64, Ordering::Relaxed);
        tracing::debug!(
            from = batch.first_seq,
            to = batch.last_seq,
            records = batch.records,
            "persister: batch committed"
        );
    }
}

enum FlushOutcome {
    Written,
    Moved(u64),
}

/// Where and how a batch is written.
#[derive(Debug, Clone, Copy)]
struct Target {
    /// The domains whose rows (and checkpoints) the batch carries.
    domains: Domains,
    copy_min_rows: usize,
}

async fn flush(
    c: &mut Client,
    statements: &mut Statements,
    target: Target,
    engine: &Engine,
    batch: &Batch,
    ensured: &mut BTreeSet<i64>,
    retry: bool,
) -> Result<FlushOutcome, tokio_postgres::Error> {
    if retry {
        // The previous attempt may have committed before the connection
        // dropped: the checkpoint tells.
        let cps = read_checkpoints(c, target.domains).await?;
        if cps.values().all(|&cp| cp == batch.last_seq) {
            return Ok(FlushOutcome::Written);
        }
        if let Some(&cp) = cps.values().find(|&&cp| cp != batch.first_seq - 1) {
            return Ok(FlushOutcome::Moved(cp));
        }
    }
    // Partitions for the batch's months, in their own short transaction
    // (klines: from the month of the earliest candle its trades can open,
    // a `1w` or `3d` candle may open in the month before).
    let (m0, m1) = months(
        crate::klines::earliest_open_time_ms(batch.min_ts),
        batch.max_ts,
    );
    if (m0..=m1).any(|m| !ensured.contains(&m)) {
        c.execute(
            "SELECT create_monthly_partitions($1::text::date, $2::text::date)",
            &[&month_date(m0), &month_date(m1)],
        )
        .await?;
        ensured.extend(m0..=m1);
    }
    let tx = c.transaction().await?;
    let ok = crate::sql::write_batch(
        &tx,
        statements,
        &target.domains.names(),
        target.copy_min_rows,
        engine,
        batch,
    )
    .await?;
    if !ok {
        drop(tx);
        let cps = read_checkpoints(c, target.domains).await?;
        let cp = cps
            .values()
            .copied()
            .find(|&cp| cp != batch.first_seq - 1)
            .unwrap_or(batch.first_seq - 1);
        return Ok(FlushOutcome::Moved(cp));
    }
    tx.commit().await?;
    Ok(FlushOutcome::Written)
}

/// Set `stop` on SIGTERM or SIGINT (for `mini-exchange persist`).
pub fn stop_on_signals(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("persist-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::info!("persister: signal received, stopping");
                stop.store(true, Ordering::Release);
            })
        })?;
    Ok(())
}
