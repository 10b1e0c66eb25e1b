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
//! * Pacing ([`WriterConfig::busy_percent`], `persister.busy_percent` in
//!   `serve`): while orders flow, a writer rests after each batch so that
//!   building and writing (its Postgres backend works while it waits) take
//!   at most that share of the time, and batches are cut to about
//!   [`WriterConfig::busy_slice`] of work. On a small machine shared with
//!   Postgres this keeps the read model from starving the order path; the
//!   writer lags more under load and catches up at full speed when the
//!   orders stop. `serve`'s default ([`default_busy_percent`]) paces only
//!   when Postgres is on the same machine.
//! * Stop: the batch in hand is committed (or, with Postgres down, left to
//!   the next start), then the writer returns; whatever the journal holds
//!   beyond the checkpoint is written at the next start.
//! * Asynchronous commit: writer connections run with
//!   `synchronous_commit = off` ([`SESSION_SETTINGS`]), so a COMMIT does not
//!   wait for the WAL fsync (a wait per batch, which bounds a writer that
//!   follows the live journal in small batches). Exactly-once still holds:
//!   a Postgres crash may lose the last few acknowledged commits, but each
//!   lost commit takes its own checkpoint move with it (same transaction),
//!   and the journal, not Postgres, is the truth, so the writer reads the
//!   older checkpoint and writes those records again: at its next start,
//!   or, when it kept running while Postgres crashed and came back, as soon
//!   as it finds the checkpoint behind what it committed
//!   ([`WriterError::CheckpointBehind`]: [`run`] starts over from there,
//!   counted in `mx_persister_restarts_total`). A lost
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
    /// Postgres holds less than this writer committed: it lost its last
    /// commits (a crash with asynchronous commit, see the module docs).
    /// [`run`] starts over from the checkpoint Postgres has.
    #[error("checkpoint of writer {writer} is at seq {found}, behind the seq {expected} this writer committed: Postgres lost its last commits (a crash with asynchronous commit); writing again from seq {found}")]
    CheckpointBehind {
        writer: String,
        expected: u64,
        found: u64,
    },
    #[error("cannot start the writer runtime: {0}")]
    Runtime(std::io::Error),
}

impl WriterError {
    /// Postgres' checkpoint is `found` where this writer committed
    /// `expected`: behind (Postgres lost commits) or ahead (another writer).
    fn moved(writer: String, expected: u64, found: u64) -> WriterError {
        if found < expected {
            WriterError::CheckpointBehind {
                writer,
                expected,
                found,
            }
        } else {
            WriterError::CheckpointMoved {
                writer,
                expected,
                found,
            }
        }
    }
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
    /// Most of the wall-clock time this writer may spend building and
    /// writing batches, in percent (100: no limit). While the writer waits
    /// for a batch's COPY and COMMIT its Postgres backend works, so this
    /// bounds the CPU the pair takes: after a batch that kept it busy for
    /// `b`, the writer rests `b * (100 - p) / p`. See [`Pacing`].
    pub busy_percent: u8,
    /// While paced, a batch is cut to what took about this long to build
    /// and write last time, so the writer's busy spells stay short (a
    /// long spell of both cores busy stalls everything else on a small VM,
    /// whatever the priorities).
    pub busy_slice: Duration,
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
            busy_percent: 100,
            busy_slice: Duration::from_millis(50),
        }
    }
}

/// `persister.busy_percent` when the configuration leaves it unset: 50
/// when every host of `database_url` is this machine (a loopback address,
/// `localhost`, or a Unix socket directory), since Postgres then takes its
/// CPU from the exchange's own cores; 100 (unpaced) when Postgres runs
/// elsewhere, where pacing would only make the read model lag. A URL that
/// does not parse counts as local (the writer reports the bad URL itself).
pub fn default_busy_percent(database_url: &str) -> u8 {
    if postgres_is_local(database_url) {
        50
    } else {
        100
    }
}

/// Whether every host of a PostgreSQL URL is on this machine (see
/// [`default_busy_percent`]).
pub fn postgres_is_local(database_url: &str) -> bool {
    use tokio_postgres::config::Host;
    let Ok(cfg) = database_url.parse::<tokio_postgres::Config>() else {
        return true;
    };
    cfg.get_hosts().iter().all(|h| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }) && cfg.get_hostaddrs().iter().all(|ip| ip.is_loopback())
}

/// Duty-cycle limit of a writer ([`WriterConfig::busy_percent`]): how long
/// to rest after a batch, and how many records the next batch may take.
#[derive(Debug, Clone)]
pub struct Pacing {
    percent: u32,
    slice: Duration,
    max_batch: usize,
    /// Records per second of busy time, measured on the last batch.
    records_per_sec: Option<f64>,
    /// Whether the last batch was paced (orders were flowing): only then
    /// is the next one cut to the slice.
    pub active: bool,
}

/// Fewest records a paced batch is cut to (below this the per-transaction
/// cost dominates).
const PACED_MIN_RECORDS: usize = 64;

impl Pacing {
    pub fn new(percent: u8, slice: Duration, max_batch: usize) -> Pacing {
        Pacing {
            percent: u32::from(percent.clamp(1, 100)),
            slice,
            max_batch,
            records_per_sec: None,
            active: false,
        }
    }

    pub fn limited(&self) -> bool {
        self.percent < 100
    }

    /// Most records the next batch may take.
    pub fn limit(&self) -> usize {
        match self.records_per_sec {
            Some(rate) if self.limited() && self.active => ((rate * self.slice.as_secs_f64())
                as usize)
                .clamp(PACED_MIN_RECORDS.min(self.max_batch), self.max_batch),
            _ => self.max_batch,
        }
    }

    /// A batch of `records` kept the writer busy for `busy`: the rest that
    /// keeps its share of the time at most `percent`.
    pub fn rest(&mut self, records: usize, busy: Duration) -> Duration {
        if !self.limited() || records == 0 {
            return Duration::ZERO;
        }
        let secs = busy.as_secs_f64().max(1e-6);
        self.records_per_sec = Some(records as f64 / secs);
        busy * (100 - self.percent) / self.percent
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 before 1970); the
/// gateway's clock too (`gateway::server::now_ms`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    /// Wall-clock time (ms since the epoch) when the writer last found
    /// nothing left to read: every record since is unwritten or newer.
    pub caught_up_ms: AtomicU64,
    pub connected: AtomicBool,
    /// True once the replica is rebuilt and the writer follows the journal.
    pub running: AtomicBool,
    pub batches: AtomicU64,
    pub rows: AtomicU64,
    pub errors: AtomicU64,
    /// Times the writer started over from Postgres' checkpoint because
    /// Postgres had lost commits it had acknowledged.
    pub restarts: AtomicU64,
    /// Time spent reading the journal, applying records to the replica and
    /// building rows (ns, summed over batches).
    pub build_ns: AtomicU64,
    /// Time spent writing batches to Postgres, retries included (ns).
    pub flush_ns: AtomicU64,
    /// Time spent resting between batches to keep within
    /// [`WriterConfig::busy_percent`] (ns).
    pub rest_ns: AtomicU64,
}

impl PersisterStatus {
    pub fn lag_seq(&self) -> u64 {
        self.head_seq
            .load(Ordering::Relaxed)
            .saturating_sub(self.written_seq.load(Ordering::Relaxed))
    }
    /// Age in seconds of the oldest record in the journal but not yet in
    /// Postgres (0 when none is): at most `now` minus the later of the
    /// last written record's journal time and the moment the writer last
    /// caught up (a record unwritten now came after both), and exactly that
    /// while records flow steadily.
    pub fn lag_secs(&self) -> f64 {
        self.lag_secs_at(now_ms())
    }
    /// [`Self::lag_secs`] at wall-clock time `now_ms`.
    pub fn lag_secs_at(&self, now_ms: u64) -> f64 {
        if self.lag_seq() == 0 {
            return 0.0;
        }
        let since = self
            .written_ts_ms
            .load(Ordering::Relaxed)
            .max(self.caught_up_ms.load(Ordering::Relaxed));
        now_ms.saturating_sub(since) as f64 / 1000.0
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
    /// The writers' [`WriterConfig::busy_percent`] (0: not known).
    pub busy_percent: u8,
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
    loop {
        match rt.block_on(run_async(
            cfg.clone(),
            follow.clone(),
            stop.clone(),
            status.clone(),
        )) {
            // The records Postgres lost are in the journal: start over
            // from its checkpoint (replica rebuilt there), as a restart
            // of the writer would.
            Err(err @ WriterError::CheckpointBehind { .. }) => {
                tracing::warn!(%err, "persister: starting over from the checkpoint Postgres has");
                status.restarts.fetch_add(1, Ordering::Relaxed);
            }
            other => return other,
        }
    }
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

/// Settings of every writer connection (run once per connection):
/// asynchronous commit (module docs), and generic plans for the prepared
/// statements: with custom plans Postgres re-planned the 24 h ticker's
/// statement (partitioned `klines` and `trades`) at every batch, 3.7 ms of
/// its CPU per batch; generic ones prune partitions at execution.
/// `mx-bench persister --trades 3000 --max-batch 50`: 27,073 -> 36,600
/// rows/s, Postgres 2.82 -> 1.97 CPU-s; unchanged at 20,000-record batches.
pub const SESSION_SETTINGS: &str =
    "SET synchronous_commit = off; SET plan_cache_mode = force_generic_plan";

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

/// How often a caught-up writer checks that Postgres still holds what it
/// committed.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Postgres' checkpoint of each domain equals what this writer committed
/// (`committed`): [`WriterError::CheckpointBehind`] when Postgres lost
/// commits, `CheckpointMoved` when another writer moved it on. Waits for
/// Postgres while it is down (there is nothing to write meanwhile).
async fn check_checkpoints(
    conn: &mut Conn,
    committed: &BTreeMap<Domain, u64>,
    writer: &str,
    stop: &AtomicBool,
) -> Result<(), WriterError> {
    let Some((c, _)) = conn.get(stop).await? else {
        return Ok(());
    };
    for (&d, &expected) in committed {
        match checkpoint_at(c, d).await {
            Ok(found) if found == expected => {}
            Ok(found) => return Err(WriterError::moved(writer.to_string(), expected, found)),
            Err(err) => {
                conn.failed(&migrate::describe(&err), stop).await;
                return Ok(());
            }
        }
    }
    Ok(())
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
    let mut verified = Instant::now();
    let mut pacing = Pacing::new(cfg.busy_percent, cfg.busy_slice, cfg.max_batch);
    let mut durable_seen = match &follow {
        Follow::Durable(d) => d.get(),
        Follow::Poll => 0,
    };
    loop {
        // Stopping: the batch in hand was committed; the rest of the
        // journal is written at the next start (from the checkpoint), so a
        // shutdown never waits for a backlog.
        if stop.load(Ordering::Acquire) {
            let written = checkpoints.values().copied().min().unwrap_or(0);
            let behind = match &follow {
                Follow::Durable(d) => d.get().saturating_sub(written),
                Follow::Poll => 0,
            };
            tracing::info!(
                writer = %writer,
                written,
                behind,
                "persister: stopped; the records behind are written at the next start"
            );
            return Ok(());
        }
        let behind = match &follow {
            Follow::Durable(d) => d.get().saturating_sub(engine.last_seq()) as usize,
            Follow::Poll => cfg.max_batch,
        };
        // (min_batch above max_batch, e.g. `persister.batch_records = 100`
        // with the default 256: max_batch wins.)
        let mut limit = (behind / 2)
            .clamp(cfg.min_batch.min(cfg.max_batch), cfg.max_batch)
            .min(pacing.limit());
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
            status.caught_up_ms.store(now_ms(), Ordering::Relaxed);
            // Caught up: no next batch would show that Postgres crashed
            // and lost this writer's last commits, so check now and then.
            if verified.elapsed() >= IDLE_CHECK_EVERY {
                verified = Instant::now();
                check_checkpoints(&mut conn, &checkpoints, &writer, &stop).await?;
            }
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(cfg.idle);
            continue;
        }
        idle = Duration::from_millis(1);
        batch.retain(keep);
        let built = building.elapsed();
        status
            .build_ns
            .fetch_add(built.as_nanos() as u64, Ordering::Relaxed);
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
                    return Err(WriterError::moved(writer, batch.first_seq - 1, found))
                }
                Err(err) => {
                    attempt += 1;
                    conn.failed(&migrate::describe(&err), &stop).await;
                }
            }
        }
        let flushed = flushing.elapsed();
        status
            .flush_ns
            .fetch_add(flushed.as_nanos() as u64, Ordering::Relaxed);
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
        // Pacing: only while orders flow (the durable seq moved during the
        // batch), never while stopping, and it counts the work, not waiting
        // out an outage (a retried batch's time is mostly backoff).
        let flowing = match &follow {
            Follow::Durable(d) => {
                let now = d.get();
                let moved = now != durable_seen;
                durable_seen = now;
                moved
            }
            Follow::Poll => true,
        };
        pacing.active = flowing && attempt == 0 && !stop.load(Ordering::Acquire);
        if pacing.active {
            let rest = pacing.rest(batch.records, built + flushed);
            if !rest.is_zero() {
                status
                    .rest_ns
                    .fetch_add(rest.as_nanos() as u64, Ordering::Relaxed);
                // In short naps, so a stop is seen within one.
                let until = Instant::now() + rest;
                while !stop.load(Ordering::Acquire) {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    tokio::time::sleep(left.min(Duration::from_millis(20))).await;
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_defaults_to_half_only_for_a_postgres_on_this_machine() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/x",
            "postgres://postgres@localhost/x",
            "postgresql://u@LOCALHOST:6000/x",
            "postgres://u@[::1]:5432/x",
            "postgres://u@127.0.0.2/x",
            "postgres:///x",
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/x",
            "postgres:///x?host=/var/run/postgresql",
            "host=/tmp user=postgres dbname=x",
            "host=localhost,127.0.0.1 user=postgres",
            "postgres://u@localhost/x?hostaddr=127.0.0.1",
            "not a url at all ::",
        ] {
            assert!(postgres_is_local(url), "{url}");
            assert_eq!(default_busy_percent(url), 50, "{url}");
        }
        for url in [
            "postgres://postgres@db.example.com:5432/x",
            "postgres://u@10.0.0.7/x",
            "postgres://u@[2001:db8::1]/x",
            "host=localhost,db.example.com user=postgres",
            "postgres://u@localhost/x?hostaddr=10.0.0.7",
        ] {
            assert!(!postgres_is_local(url), "{url}");
            assert_eq!(default_busy_percent(url), 100, "{url}");
        }
    }

    #[test]
    fn unlimited_pacing_never_rests_nor_cuts_batches() {
        let mut p = Pacing::new(100, Duration::from_millis(10), 20_000);
        assert!(!p.limited());
        assert_eq!(p.rest(5_000, Duration::from_secs(2)), Duration::ZERO);
        assert_eq!(p.limit(), 20_000);
    }

    #[test]
    fn pacing_rests_for_the_share_and_cuts_batches_to_the_slice() {
        let mut p = Pacing::new(50, Duration::from_millis(10), 20_000);
        p.active = true;
        // Nothing measured yet: the first batch may be as big as allowed.
        assert_eq!(p.limit(), 20_000);
        // 1,000 records in 40 ms at 50%: rest 40 ms; the next batch is
        // cut to 10 ms of work at 25,000 records/s.
        assert_eq!(
            p.rest(1_000, Duration::from_millis(40)),
            Duration::from_millis(40)
        );
        assert_eq!(p.limit(), 250);
        // 25%: three times the busy time.
        let mut p = Pacing::new(25, Duration::from_millis(10), 20_000);
        p.active = true;
        assert_eq!(
            p.rest(100, Duration::from_millis(4)),
            Duration::from_millis(12)
        );
        assert_eq!(p.limit(), 250);
        // A slow batch never cuts the next one below the floor, and a fast
        // one never lifts it above max_batch.
        assert_eq!(p.rest(10, Duration::from_secs(1)), Duration::from_secs(3));
        assert_eq!(p.limit(), PACED_MIN_RECORDS);
        p.rest(1_000_000, Duration::from_millis(1));
        assert_eq!(p.limit(), 20_000);
        // An empty batch measures nothing and rests nothing.
        assert_eq!(p.rest(0, Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(p.limit(), 20_000);
        // Orders stopped flowing: batches are no longer cut.
        p.rest(10, Duration::from_secs(1));
        assert_eq!(p.limit(), PACED_MIN_RECORDS);
        p.active = false;
        assert_eq!(p.limit(), 20_000);
    }

    #[test]
    fn lag_in_seconds_is_the_age_of_the_oldest_unwritten_record() {
        let s = PersisterStatus::default();
        let now = 1_800_000_000_000;
        // Nothing unwritten: no lag, however old the last record is.
        s.written_seq.store(10, Ordering::Relaxed);
        s.head_seq.store(10, Ordering::Relaxed);
        s.written_ts_ms.store(now - 60_000, Ordering::Relaxed);
        assert_eq!(s.lag_secs_at(now), 0.0);
        // Behind, never caught up (a backlog at start): the record after
        // the last written one is at most this old.
        s.head_seq.store(300_000, Ordering::Relaxed);
        assert_eq!(s.lag_secs_at(now), 60.0);
        // The newest record read says nothing about the unread ones (the
        // old formula, head_ts - written_ts, read 0 here).
        s.head_ts_ms.store(now - 60_000, Ordering::Relaxed);
        assert_eq!(s.lag_secs_at(now), 60.0);
        // Caught up 2.5 s ago: everything unwritten arrived since.
        s.caught_up_ms.store(now - 2_500, Ordering::Relaxed);
        assert_eq!(s.lag_secs_at(now), 2.5);
        // Written up to a record 0.4 s old.
        s.written_ts_ms.store(now - 400, Ordering::Relaxed);
        assert_eq!(s.lag_secs_at(now), 0.4);
        // A clock behind the journal never gives a negative lag.
        assert_eq!(s.lag_secs_at(now - 1_000), 0.0);
    }

    #[test]
    fn out_of_range_percent_is_clamped() {
        let mut p = Pacing::new(0, Duration::from_millis(10), 100);
        assert_eq!(
            p.rest(10, Duration::from_millis(1)),
            Duration::from_millis(99)
        );
        assert!(!Pacing::new(200, Duration::from_millis(10), 100).limited());
    }
}
