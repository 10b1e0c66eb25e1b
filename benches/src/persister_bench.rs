//! `mx-bench persister`: the Postgres writer (`persister::writer`) under a
//! steady trading load, against a fresh database.
//!
//! The stream (deterministic, seeded): setup (limits, BTC and USDT, the
//! pair BTCUSDT, 1,000 users funded by admin adjustments, 200 resting
//! orders a side), then a steady mix driven by a simulator engine so that
//! it keeps trading: 45% makers (GTC limit 1..20 ticks behind the last
//! price, 1..10 lots), 45% takers (IOC 10 ticks through the last price,
//! 1..8 lots; each fills one or more makers), 10% cancels of a random open
//! order (more when the book grows past its target). About 0.55 trades
//! per command (seed 42: 100,000 trades in 185,633 commands, 12 engine
//! events per trade); every trade also moves balances (ledger rows for
//! both sides and the fees), freezes, orders and the outbox, so a trade
//! costs about 20 rows (more in small batches, where an account touched
//! twice is upserted twice).
//!
//! Modes:
//! * `catch-up`: the whole journal exists before the writer starts
//!   (journal timestamps spaced for `--rate` trades/s); the writer runs from
//!   seq 1 to the end as fast as it can (`Follow::Poll`, as
//!   `mini-exchange persist`). Before it, two offline passes split the cost:
//!   replica only (decode + apply) and replica + row building (no
//!   Postgres).
//! * `paced`: a producer thread appends the steady stream to the journal at
//!   `--rate` trades/s (group commits about every millisecond, wall-clock
//!   timestamps, as the sequencer does) while the writer follows the durable
//!   seq in-process (`Follow::Durable`, as `serve`). Lag is sampled every
//!   5 ms: in sequences (durable - written) and in seconds (age of the
//!   oldest record committed to the journal but not yet to Postgres).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use engine::*;
use hdrhistogram::Histogram;
use journal::{Durability, JournalConfig};
use persister::replica::DataDir;
use persister::rows::Batch;
use persister::writer::{self, Follow, PersisterGroup, PersisterStatus, WriterConfig};

use crate::w3::Rng;
use crate::workload::ONE;

/// 2026-01-01T00:00:00Z: journal time of the catch-up stream's first record.
pub const T0_MS: u64 = 1_767_225_600_000;
const USERS: u64 = 1_000;
const CENTER: u64 = 3_000_000;
const LOT: u64 = 100_000;
/// Resting orders the generator keeps the book near (both sides).
const TARGET_OPEN: usize = 400;
const PAIR: PairId = PairId(1);

/// The encoded commands of a run: records `1..=len()` of the journal.
#[derive(Debug, Default)]
pub struct Stream {
    buf: Vec<u8>,
    ends: Vec<usize>,
    /// Records of the setup (the first ones).
    pub setup: usize,
    /// Trades / engine events in records `1..=i` at index `i - 1`.
    trades_cum: Vec<u64>,
    events_cum: Vec<u64>,
}

impl Stream {
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    /// Payload of record `seq` (1-based).
    pub fn payload(&self, seq: u64) -> &[u8] {
        let i = seq as usize - 1;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }
    /// Trades made by records `1..=seq`.
    pub fn trades_upto(&self, seq: u64) -> u64 {
        cum(&self.trades_cum, seq)
    }
    /// Engine events of records `1..=seq`.
    pub fn events_upto(&self, seq: u64) -> u64 {
        cum(&self.events_cum, seq)
    }
}

fn cum(v: &[u64], seq: u64) -> u64 {
    match seq as usize {
        0 => 0,
        n => v[n.min(v.len()) - 1],
    }
}

struct Gen {
    e: Engine,
    seq: u64,
    out: Vec<Event>,
    open: Vec<OrderId>,
    rng: Rng,
    s: Stream,
    trades: u64,
    events: u64,
}

impl Gen {
    fn push(&mut self, cmd: &Command) {
        self.seq += 1;
        self.out.clear();
        // The engine's behaviour for these commands does not depend on
        // time; the journal gets its own timestamps.
        self.e.apply(self.seq, self.seq, cmd, &mut self.out);
        self.events += self.out.len() as u64;
        for ev in &self.out {
            match ev {
                Event::Trade(_) => self.trades += 1,
                // Setup (before `setup` is known) must not be rejected; in
                // the steady stream a reject is data.
                Event::Rejected { reason } if self.s.setup == 0 => {
                    panic!("setup command {} rejected: {reason:?}", self.seq)
                }
                Event::OrderAccepted(o) => self.open.push(o.id),
                _ => {}
            }
        }
        cmd.encode_into(&mut self.s.buf);
        self.s.ends.push(self.s.buf.len());
        self.s.trades_cum.push(self.trades);
        self.s.events_cum.push(self.events);
    }

    /// A random open order (ids of closed ones are dropped on the way).
    fn pick_open(&mut self) -> Option<Order> {
        while !self.open.is_empty() {
            let i = self.rng.below(self.open.len() as u64) as usize;
            match self.e.order(self.open[i]) {
                Some(o) => return Some(*o),
                None => {
                    self.open.swap_remove(i);
                }
            }
        }
        None
    }

    fn limit(&mut self, side: Side, price: u64, lots: u64, tif: TimeInForce) -> Command {
        Command::PlaceOrder(NewOrder {
            user: UserId(1 + self.rng.below(USERS)),
            pair: PAIR,
            side,
            kind: OrderType::Limit,
            tif,
            price: Price(price.max(1)),
            qty: Qty(lots * LOT),
            quote_qty: 0,
            stop_price: Price(0),
            client_id: ClientOrderId::NONE,
            stp: StpMode::ExpireMaker,
        })
    }

    fn side(&mut self) -> Side {
        if self.rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    fn maker(&mut self) -> Command {
        let last = self.last();
        let side = self.side();
        let off = 1 + self.rng.below(20);
        let price = match side {
            Side::Buy => last.saturating_sub(off),
            Side::Sell => last + off,
        };
        let lots = 1 + self.rng.below(10);
        self.limit(side, price, lots, TimeInForce::Gtc)
    }

    fn last(&self) -> u64 {
        match self.e.pairs()[0].last_price {
            0 => CENTER,
            p => p,
        }
    }
}

/// Generate the setup and steady commands until they made `trades` trades.
/// `progress` gets the trades so far about every 100,000 commands.
pub fn generate(seed: u64, trades: u64, mut progress: impl FnMut(u64)) -> Stream {
    let mut g = Gen {
        e: Engine::with_capacity(1 << 16),
        seq: 0,
        out: Vec::with_capacity(1024),
        open: Vec::new(),
        rng: Rng::new(seed),
        s: Stream::default(),
        trades: 0,
        events: 0,
    };
    for c in crate::workload::btcusdt_setup() {
        g.push(&c);
    }
    for i in 0..USERS {
        g.push(&Command::CreateUser {
            username: format!("pbench{i}"),
            email: String::new(),
            password_hash: String::new(),
            roles: roles::TRADER,
        });
    }
    for u in 1..=USERS {
        for (asset, amount) in [(1, 100_000 * ONE), (2, 100_000_000 * ONE)] {
            g.push(&Command::Adjust {
                user: UserId(u),
                asset: AssetId(asset),
                amount,
                credit: true,
                reason: "bench funding".into(),
                by: None,
            });
        }
    }
    for i in 0..TARGET_OPEN as u64 {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let off = 1 + g.rng.below(20);
        let price = match side {
            Side::Buy => CENTER - off,
            Side::Sell => CENTER + off,
        };
        let lots = 1 + g.rng.below(10);
        let c = g.limit(side, price, lots, TimeInForce::Gtc);
        g.push(&c);
    }
    g.s.setup = g.s.len();
    let base = g.trades;
    let mut n = 0u64;
    while g.trades - base < trades {
        let open = g.e.open_order_count();
        let r = g.rng.below(100);
        let c = if open > 2 * TARGET_OPEN || (open > TARGET_OPEN / 2 && r < 10) {
            match g.pick_open() {
                Some(o) => Command::CancelOrder {
                    user: o.user,
                    pair: PAIR,
                    target: OrderRef::Id(o.id),
                },
                None => g.maker(),
            }
        } else if open < TARGET_OPEN / 2 || r < 55 {
            g.maker()
        } else {
            let last = g.last();
            let side = g.side();
            let price = match side {
                Side::Buy => last + 10,
                Side::Sell => last.saturating_sub(10),
            };
            let lots = 1 + g.rng.below(8);
            g.limit(side, price, lots, TimeInForce::Ioc)
        };
        g.push(&c);
        n += 1;
        if n.is_multiple_of(100_000) {
            progress(g.trades - base);
        }
    }
    g.s
}

fn open_journal(data: &DataDir, durability: Durability) -> Result<journal::Writer> {
    data.create()?;
    let (w, _) = journal::Writer::open(JournalConfig {
        durability,
        ..JournalConfig::new(data.journal())
    })?;
    Ok(w)
}

/// Journal time of record `seq` in catch-up mode: setup at one record per
/// ms from [`T0_MS`], then the steady records evenly spaced so that they
/// carry `rate` trades per journal second.
fn catch_up_ts_ns(s: &Stream, seq: u64, rate: u64) -> u64 {
    let setup = s.setup as u64;
    let t_setup = T0_MS * 1_000_000 + seq.min(setup) * 1_000_000;
    if seq <= setup {
        return t_setup;
    }
    let steady = (s.len() as u64 - setup).max(1);
    let trades = (s.trades_upto(s.len() as u64) - s.trades_upto(setup)).max(1);
    // ns per steady record = (trades / rate) s / steady records.
    let per = trades as f64 * 1e9 / rate.max(1) as f64 / steady as f64;
    t_setup + ((seq - setup) as f64 * per) as u64
}

/// Write the whole stream as a journal (catch-up mode).
pub fn write_journal(data: &DataDir, s: &Stream, rate: u64) -> Result<()> {
    let mut w = open_journal(data, Durability::None)?;
    for seq in 1..=s.len() as u64 {
        w.append(catch_up_ts_ns(s, seq, rate), s.payload(seq))?;
        if seq % 4096 == 0 {
            w.commit()?;
        }
    }
    w.commit()?;
    w.close()?;
    Ok(())
}

/// Offline pass over the journal: decode + apply (+ build rows in batches
/// of `batch` records when `rows`). Returns (records, rows built, elapsed).
pub fn offline_pass(data: &DataDir, rows: bool, batch: usize) -> Result<(u64, u64, Duration)> {
    let mut r = journal::Reader::open(data.journal(), 1)?;
    let mut e = Engine::with_capacity(1 << 16);
    let mut out: Vec<Event> = Vec::with_capacity(4096);
    let mut b = Batch::default();
    let (mut n, mut built) = (0u64, 0u64);
    let t0 = Instant::now();
    while let Some(entry) = r.next_entry()? {
        let cmd = Command::decode(entry.payload)
            .map_err(|err| anyhow::anyhow!("record {}: {err:?}", entry.seq))?;
        let ts_ms = entry.timestamp_ns / 1_000_000;
        out.clear();
        e.apply(entry.seq, ts_ms, &cmd, &mut out);
        n += 1;
        if rows {
            b.add(&e, entry.seq, ts_ms, &cmd, &out);
            if b.records >= batch {
                built += b.row_count() as u64;
                b = Batch::default();
            }
        }
    }
    if rows {
        built += b.row_count() as u64;
    }
    Ok((n, built, t0.elapsed()))
}

/// A fresh, migrated database on the server of `url` (dropped with it).
pub fn fresh_db(rt: &tokio::runtime::Runtime, url: &str) -> persister::testdb::TestDb {
    rt.block_on(async {
        let mut db = persister::testdb::TestDb::create_on(url).await;
        db.migrate().await;
        db
    })
}

/// Writer settings the bench varies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Knobs {
    /// Largest batch in records (default: the writer's).
    pub max_batch: Option<usize>,
    /// Rows from which a table goes by binary COPY (default: the writer's).
    pub copy_min_rows: Option<usize>,
    /// One writer per table domain, in parallel (`persister.writers =
    /// "split"`), instead of one writer of every table.
    pub split: bool,
}

/// The writers of a run: one, or one per domain.
fn bench_writers(url: &str, data: &DataDir, knobs: Knobs) -> Vec<WriterConfig> {
    let base = bench_writer_config(url, data, knobs);
    if knobs.split {
        persister::rows::Domain::ALL
            .into_iter()
            .map(|d| base.clone().for_domain(d))
            .collect()
    } else {
        vec![base]
    }
}

fn bench_writer_config(url: &str, data: &DataDir, knobs: Knobs) -> WriterConfig {
    let mut cfg = WriterConfig::new(url, data.clone());
    if let Some(m) = knobs.max_batch {
        cfg.max_batch = m;
    }
    if let Some(c) = knobs.copy_min_rows {
        cfg.copy_min_rows = c;
    }
    cfg.migrate = false;
    cfg
}

/// CPU time (s) used so far by the Postgres backends serving database
/// `db` and by this process' `persister` thread, from /proc (Linux;
/// clock ticks of 1/100 s). Unlike wall time it hardly moves with the
/// neighbours' load, so it compares runs on a shared host.
#[derive(Debug, Default)]
pub struct CpuProbe {
    db: String,
    /// Last seen ticks per backend pid (a backend's ticks never decrease;
    /// one that exited keeps its last value).
    backends: std::collections::BTreeMap<u32, u64>,
    /// Per writer thread (one per domain when split).
    writer_ticks: std::collections::BTreeMap<String, u64>,
}

fn stat_ticks(path: &std::path::Path) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command: state is field 3; utime and
    // stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

impl CpuProbe {
    pub fn new(db: &str) -> CpuProbe {
        CpuProbe {
            db: db.to_owned(),
            ..CpuProbe::default()
        }
    }

    /// Refresh; returns (Postgres backends, writer thread) CPU seconds.
    pub fn sample(&mut self) -> (f64, f64) {
        let needle = format!(" {} ", self.db);
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                    continue;
                };
                let cmd = String::from_utf8_lossy(&cmd);
                if cmd.starts_with("postgres: ") && cmd.contains(&needle) {
                    if let Some(t) = stat_ticks(&e.path().join("stat")) {
                        let v = self.backends.entry(pid).or_default();
                        *v = (*v).max(t);
                    }
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for e in dir.flatten() {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                if comm.trim() == "persister" {
                    if let Some(t) = stat_ticks(&e.path().join("stat")) {
                        let tid = e.file_name().to_string_lossy().into_owned();
                        let v = self.writer_ticks.entry(tid).or_default();
                        *v = (*v).max(t);
                    }
                }
            }
        }
        (
            self.backends.values().sum::<u64>() as f64 / 100.0,
            self.writer_ticks.values().sum::<u64>() as f64 / 100.0,
        )
    }
}

#[derive(Debug, Clone)]
pub struct CatchUp {
    pub records: u64,
    pub trades: u64,
    pub events: u64,
    pub rows: u64,
    pub batches: u64,
    pub elapsed: Duration,
    pub build: Duration,
    pub flush: Duration,
    /// CPU seconds of the Postgres backend(s) and of the writer thread.
    pub pg_cpu_s: f64,
    pub writer_cpu_s: f64,
}

/// The writer from seq 1 to the end of the journal, as fast as it goes.
pub fn catch_up(
    data: &DataDir,
    url: &str,
    db_name: &str,
    s: &Stream,
    knobs: Knobs,
) -> Result<CatchUp> {
    let mut probe = CpuProbe::new(db_name);
    let (pg0, _) = probe.sample();
    let last = s.len() as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for cfg in bench_writers(url, data, knobs) {
        let status = Arc::new(PersisterStatus::default());
        let h = writer::spawn(cfg, Follow::Poll, stop.clone(), status.clone())?;
        writers.push((h, status));
    }
    let sum = |f: fn(&PersisterStatus) -> &std::sync::atomic::AtomicU64| -> u64 {
        writers
            .iter()
            .map(|(_, st)| f(st).load(Ordering::Relaxed))
            .sum()
    };
    let written = || {
        writers
            .iter()
            .map(|(_, st)| st.written_seq.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    };
    let mut next_report = Instant::now() + Duration::from_secs(2);
    let (mut prev_rows, mut prev_at) = (0u64, Instant::now());
    while written() < last {
        if writers.iter().any(|(h, _)| h.is_finished()) {
            bail!("a writer stopped early");
        }
        std::thread::sleep(Duration::from_millis(2));
        if Instant::now() >= next_report {
            probe.sample();
            let rows = sum(|st| &st.rows);
            let w = written();
            eprintln!(
                "persister: catch-up at seq {w} of {last} ({:.0}%), {:.0} rows/s, {} batches",
                w as f64 * 100.0 / last as f64,
                (rows - prev_rows) as f64 / prev_at.elapsed().as_secs_f64(),
                sum(|st| &st.batches)
            );
            (prev_rows, prev_at) = (rows, Instant::now());
            next_report += Duration::from_secs(2);
        }
    }
    let elapsed = t0.elapsed();
    let (pg1, writer_cpu_s) = probe.sample();
    stop.store(true, Ordering::Release);
    let (rows, batches) = (sum(|st| &st.rows), sum(|st| &st.batches));
    let (build_ns, flush_ns) = (sum(|st| &st.build_ns), sum(|st| &st.flush_ns));
    for (h, _) in writers {
        h.join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    Ok(CatchUp {
        pg_cpu_s: pg1 - pg0,
        writer_cpu_s,
        records: last,
        trades: s.trades_upto(last),
        events: s.events_upto(last),
        rows,
        batches,
        elapsed,
        build: Duration::from_nanos(build_ns),
        flush: Duration::from_nanos(flush_ns),
    })
}

#[derive(Debug)]
pub struct Paced {
    /// Steady records appended (offered) and their trades.
    pub records: u64,
    pub trades: u64,
    /// Records / trades / events / rows written to Postgres while the
    /// producer ran.
    pub written_records: u64,
    pub written_trades: u64,
    pub written_events: u64,
    pub rows: u64,
    pub batches: u64,
    pub elapsed: Duration,
    /// How far the producer fell behind its schedule (ms, worst).
    pub producer_behind_ms: f64,
    /// Lag samples: seconds in microseconds, sequences.
    pub lag_us: Histogram<u64>,
    pub lag_seq: Histogram<u64>,
    /// Time from the last append until Postgres had it.
    pub drain: Duration,
    pub build: Duration,
    pub flush: Duration,
    /// CPU seconds of the Postgres backend(s) and of the writer thread
    /// while the producer ran.
    pub pg_cpu_s: f64,
    pub writer_cpu_s: f64,
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The producer appends the steady part of `s` at `rate` trades/s while
/// the writer follows the durable seq; lag sampled every 5 ms.
pub fn paced(
    data: &DataDir,
    url: &str,
    db_name: &str,
    s: &Stream,
    rate: u64,
    durability: Durability,
    knobs: Knobs,
) -> Result<Paced> {
    let last = s.len() as u64;
    let setup = s.setup as u64;
    let mut w = open_journal(data, durability)?;
    let mut ts_last = 0u64;
    for seq in 1..=setup {
        ts_last = wall_ns().max(ts_last);
        w.append(ts_last, s.payload(seq))?;
    }
    w.commit()?;
    let durable = w.durable_handle();
    let stop = Arc::new(AtomicBool::new(false));
    // One writer, or one per domain (`--split`): the group's written seq is
    // the lowest, its counters the sums.
    let mut status = PersisterGroup::default();
    let mut handles = Vec::new();
    for cfg in bench_writers(url, data, knobs) {
        let st = Arc::new(PersisterStatus::default());
        status.writers.push((cfg.writer.clone(), st.clone()));
        handles.push(writer::spawn(
            cfg,
            Follow::Durable(durable.clone()),
            stop.clone(),
            st,
        )?);
    }
    let finished = |handles: &mut Vec<std::thread::JoinHandle<_>>| -> Result<()> {
        if let Some(i) = handles.iter().position(|h| h.is_finished()) {
            bail!("writer stopped: {:?}", handles.swap_remove(i).join());
        }
        Ok(())
    };
    eprintln!("persister: paced: writing the setup ({setup} records) ...");
    while status.written_seq() < setup {
        finished(&mut handles)?;
        std::thread::sleep(Duration::from_millis(5));
    }
    let steady = last - setup;
    let trades = s.trades_upto(last) - s.trades_upto(setup);
    // Commands per second that carry `rate` trades per second on average.
    let cmd_rate = rate as f64 * steady as f64 / trades.max(1) as f64;
    eprintln!(
        "persister: paced: {steady} records at {cmd_rate:.0} records/s ({rate} trades/s planned) ..."
    );
    // (last seq of a commit, ns since `start` when it was durable)
    let commits: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::with_capacity(1 << 16));
    let behind_max_ns = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let rows0 = status.total(|s| &s.rows);
    let batches0 = status.total(|s| &s.batches);
    let build0 = status.total(|s| &s.build_ns);
    let flush0 = status.total(|s| &s.flush_ns);
    let mut probe = CpuProbe::new(db_name);
    let (pg0, w0) = probe.sample();
    let start = Instant::now();
    let (lag_us, lag_seq, elapsed) = std::thread::scope(|scope| -> Result<_> {
        let (commits, behind_max_ns, done) = (&commits, &behind_max_ns, &done);
        let prod = scope.spawn(move || -> Result<journal::Writer> {
            let r = produce(&mut w, s, setup, cmd_rate, start, commits, behind_max_ns);
            done.store(true, Ordering::Release);
            r.map(|()| w)
        });
        let lag = sample(&status, &durable, commits, done, start, last, &mut probe);
        let w = prod
            .join()
            .map_err(|_| anyhow::anyhow!("producer panicked"))??;
        w.close()?;
        lag
    })?;
    let (pg1, w1) = probe.sample();
    // Rows are counted just after `written_seq` moves: read them first.
    let rows = status.total(|s| &s.rows) - rows0;
    let written = status.written_seq().max(setup);
    let batches = status.total(|s| &s.batches) - batches0;
    let build = status.total(|s| &s.build_ns) - build0;
    let flush = status.total(|s| &s.flush_ns) - flush0;
    let drain_from = Instant::now();
    while status.written_seq() < last {
        finished(&mut handles)?;
        std::thread::sleep(Duration::from_millis(1));
    }
    let drain = drain_from.elapsed();
    stop.store(true, Ordering::Release);
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    Ok(Paced {
        records: steady,
        trades,
        written_records: written - setup,
        written_trades: s.trades_upto(written) - s.trades_upto(setup),
        written_events: s.events_upto(written) - s.events_upto(setup),
        rows,
        batches,
        elapsed,
        producer_behind_ms: behind_max_ns.load(Ordering::Relaxed) as f64 / 1e6,
        lag_us,
        lag_seq,
        drain,
        build: Duration::from_nanos(build),
        flush: Duration::from_nanos(flush),
        pg_cpu_s: pg1 - pg0,
        writer_cpu_s: w1 - w0,
    })
}

/// Append records `setup + 1..` on schedule (`cmd_rate` records/s from
/// `start`), one group commit per wake-up (about every 0.5 ms).
fn produce(
    w: &mut journal::Writer,
    s: &Stream,
    setup: u64,
    cmd_rate: f64,
    start: Instant,
    commits: &Mutex<Vec<(u64, u64)>>,
    behind_max_ns: &AtomicU64,
) -> Result<()> {
    let last = s.len() as u64;
    let mut seq = setup;
    let mut ts_last = 0u64;
    while seq < last {
        let now = start.elapsed();
        let due = ((now.as_secs_f64() * cmd_rate) as u64 + setup).min(last);
        if due > seq {
            // How late the oldest record of this commit is.
            let planned = Duration::from_secs_f64((seq + 1 - setup) as f64 / cmd_rate);
            behind_max_ns.fetch_max(
                now.saturating_sub(planned).as_nanos() as u64,
                Ordering::Relaxed,
            );
            while seq < due {
                seq += 1;
                ts_last = wall_ns().max(ts_last);
                w.append(ts_last, s.payload(seq))?;
            }
            let d = w.commit()?;
            let at = start.elapsed().as_nanos() as u64;
            commits
                .lock()
                .map_err(|_| anyhow::anyhow!("commit log poisoned"))?
                .push((d, at));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(())
}

type LagSamples = (Histogram<u64>, Histogram<u64>, Duration);

/// Sample lag every 5 ms until the producer is done; progress every 2 s.
fn sample(
    status: &PersisterGroup,
    durable: &journal::DurableSeq,
    commits: &Mutex<Vec<(u64, u64)>>,
    done: &AtomicBool,
    start: Instant,
    last: u64,
    probe: &mut CpuProbe,
) -> Result<LagSamples> {
    let mut lag_us = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut lag_seq = Histogram::<u64>::new_with_bounds(1, u64::MAX >> 2, 3)?;
    let mut next_report = Instant::now() + Duration::from_secs(2);
    let (mut worst_us, mut worst_seq) = (0u64, 0u64);
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(5));
        let written = status.written_seq();
        let d = durable.get();
        let now_ns = start.elapsed().as_nanos() as u64;
        let (us, seqs) = if written >= d {
            (0, 0)
        } else {
            let c = commits
                .lock()
                .map_err(|_| anyhow::anyhow!("commit log poisoned"))?;
            // The first commit that made `written + 1` durable.
            let i = c.partition_point(|&(s, _)| s <= written);
            let at = c.get(i).map_or(now_ns, |x| x.1);
            (now_ns.saturating_sub(at) / 1_000, d - written)
        };
        lag_us.saturating_record(us.max(1));
        lag_seq.saturating_record(seqs.max(1));
        worst_us = worst_us.max(us);
        worst_seq = worst_seq.max(seqs);
        if Instant::now() >= next_report {
            probe.sample();
            eprintln!(
                "persister: paced: durable {d} of {last}, written {written}, worst lag in the last 2 s {:.3} s / {worst_seq} records",
                worst_us as f64 / 1e6
            );
            (worst_us, worst_seq) = (0, 0);
            next_report += Duration::from_secs(2);
        }
    }
    Ok((lag_us, lag_seq, start.elapsed()))
}
