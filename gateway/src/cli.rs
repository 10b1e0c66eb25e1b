//! Command line of `mini-exchange` (API.md "Operations contract"): one
//! binary, one subcommand per operation, every option documented in
//! `--help`, errors that say what to do.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use persister::replica::{self, DataDir, Progress};

#[derive(Parser, Debug)]
#[command(
    name = "mini-exchange",
    version,
    about = "mini-exchange: a spot crypto exchange core (deterministic matching engine, mmap journal, Binance-compatible API)",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

// The doc comments are clap's help text, where `MX_<SECTION>__<KEY>` must
// read as written (no Markdown backticks), so rustdoc's HTML check is off.
#[allow(rustdoc::invalid_html_tags)]
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the exchange: recover state (snapshot + journal), then serve the
    /// Binance-compatible and native APIs until SIGTERM (drain, durable,
    /// snapshot, exit 0). Embedded default: no PostgreSQL needed.
    Serve {
        /// Configuration file layered over config/default.toml (env vars
        /// MX_<SECTION>__<KEY> and MX_HTTP_ADDR, MX_DATA_DIR, ... override it).
        #[arg(long, env = "MX_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply the SQL migrations of migrations/ to DATABASE_URL (idempotent;
    /// concurrent runs are safe).
    Migrate {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Run the persister alone: migrate DATABASE_URL, then follow the
    /// journal of MX_DATA_DIR into Postgres until SIGTERM.
    Persist {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[command(flatten)]
        data: DataArgs,
        /// Write only this domain's tables, with its own checkpoint: core,
        /// ledger, trading, market_data or activity (several processes, one
        /// per domain, may run side by side). Default: every table.
        #[arg(long, value_parser = ["core", "ledger", "trading", "market_data", "activity"])]
        domain: Option<String>,
        /// Run one writer thread per domain in this process.
        #[arg(long, conflicts_with = "domain")]
        split: bool,
    },
    /// Compare Postgres with the engine state rebuilt from MX_DATA_DIR at the
    /// persister's lowest checkpoint; print every difference; exit 0 only
    /// when there are none.
    Reconcile {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Read the command journal: inspect records, verify it, replay it.
    Journal {
        #[command(subcommand)]
        cmd: JournalCmd,
    },
    /// Engine state snapshots: create one now, list them, verify them.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Data directory holding journal/ and snapshots/.
    #[arg(long, env = "MX_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Journal directory, when serve's config puts it outside the data
    /// directory (`journal.dir`).
    #[arg(long, env = "MX_JOURNAL__DIR")]
    pub journal_dir: Option<PathBuf>,
    /// Snapshot directory, when serve's config puts it outside the data
    /// directory (`snapshot.dir`).
    #[arg(long, env = "MX_SNAPSHOT__DIR")]
    pub snapshot_dir: Option<PathBuf>,
}

impl DataArgs {
    /// The layout these options name.
    pub fn layout(&self) -> DataDir {
        DataDir::with_dirs(
            &self.data_dir,
            self.journal_dir.clone(),
            self.snapshot_dir.clone(),
        )
    }
}

#[derive(Subcommand, Debug)]
pub enum JournalCmd {
    /// Print records in human-readable form (one line each).
    Inspect {
        #[command(flatten)]
        data: DataArgs,
        /// First sequence number to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Check every record's CRC, sequence continuity and command encoding;
    /// exit 1 on the first problem, naming the file and offset.
    Verify {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Truncate a damaged journal at the first bad record, even below the
    /// durable watermark (acknowledged commands after it are LOST). Copy the
    /// data directory aside first; prints what was cut.
    Repair {
        #[command(flatten)]
        data: DataArgs,
        /// Required: confirms that records after the damage may be discarded.
        #[arg(long)]
        yes_discard_records: bool,
    },
    /// Rebuild the engine state up to a sequence number and print its state
    /// hash and a summary.
    Replay {
        #[command(flatten)]
        data: DataArgs,
        /// Last sequence number to apply (default: everything committed).
        #[arg(long)]
        to: Option<u64>,
        /// Ignore snapshots and replay from the first record.
        #[arg(long)]
        no_snapshot: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Rebuild the current state (snapshot + journal) and write a new snapshot.
    Create {
        #[command(flatten)]
        data: DataArgs,
    },
    /// List snapshot files with their sequence and size.
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Verify every snapshot (checksum, decoding, engine invariants) and print
    /// its state hash; exit 1 if any is damaged.
    Verify {
        #[command(flatten)]
        data: DataArgs,
    },
}

fn print_progress(p: Progress) {
    match p.eta_secs {
        Some(eta) => eprintln!(
            "replay: seq {} ({} records, {:.0} records/s, ETA {:.0} s)",
            p.seq, p.replayed, p.records_per_sec, eta
        ),
        None => eprintln!(
            "replay: seq {} ({} records, {:.0} records/s)",
            p.seq, p.replayed, p.records_per_sec
        ),
    }
}

/// One line of state summary: seq, hash, counts and per-asset supply.
pub fn state_summary(e: &engine::Engine) -> String {
    let supply: Vec<String> = e
        .assets()
        .iter()
        .map(|a| {
            let total: u128 = e
                .users()
                .iter()
                .map(|u| {
                    let b = u.balance(a.id);
                    b.available as u128 + b.frozen as u128
                })
                .sum();
            format!(
                "{}={}",
                a.spec.symbol,
                engine::decimal::format_units_u128(total, a.spec.decimals as u32)
            )
        })
        .collect();
    format!(
        "seq={} state_hash={:016x} users={} pairs={} open_orders={} next_order_id={} next_trade_id={} supply[{}]",
        e.last_seq(),
        e.state_hash(),
        e.users().len() - 1,
        e.pairs().len(),
        e.open_order_count(),
        e.next_order_id(),
        e.next_trade_id(),
        supply.join(" ")
    )
}

fn journal_cmd(cmd: JournalCmd) -> Result<()> {
    match cmd {
        JournalCmd::Inspect { data, from, limit } => {
            let dir = data.layout().journal();
            let mut r = journal::Reader::open(&dir, from)
                .with_context(|| format!("cannot open the journal in {}", dir.display()))?;
            let mut n = 0;
            while n < limit {
                let Some(e) = r.next_entry()? else { break };
                match engine::Command::decode(e.payload) {
                    Ok(c) => println!("{} {} {:?}", e.seq, e.timestamp_ns / 1_000_000, c),
                    Err(err) => println!(
                        "{} {} <undecodable: {err}>",
                        e.seq,
                        e.timestamp_ns / 1_000_000
                    ),
                }
                n += 1;
            }
            Ok(())
        }
        JournalCmd::Verify { data } => {
            let dir = data.layout().journal();
            // The newest segment first, as recovery would judge it.
            let tail = journal::check_tail(&dir).with_context(|| {
                "the journal is damaged and a server start would refuse it; copy the data directory aside, then `mini-exchange journal repair` truncates it at the damage"
            })?;
            let mut r = journal::Reader::open(&dir, 1)
                .with_context(|| format!("cannot open the journal in {}", dir.display()))?;
            let (mut n, mut bytes, mut first, mut last) = (0u64, 0u64, 0u64, 0u64);
            let started = std::time::Instant::now();
            while let Some(e) = r.next_entry()? {
                if first == 0 {
                    first = e.seq;
                } else if e.seq != last + 1 {
                    bail!("sequence gap: record {} follows {}", e.seq, last);
                }
                if let Err(err) = engine::Command::decode(e.payload) {
                    bail!(
                        "record {} has a valid CRC but does not decode as a command: {err}",
                        e.seq
                    );
                }
                last = e.seq;
                n += 1;
                bytes += e.payload.len() as u64;
                if n % 1_000_000 == 0 {
                    eprintln!("verify: {n} records ...");
                }
            }
            if last != tail.committed_seq {
                bail!(
                    "the reader stopped at seq {last} but the newest segment commits up to {}",
                    tail.committed_seq
                );
            }
            println!(
                "journal OK: {n} records, seq {first}..{last}, {bytes} payload bytes, watermark {}, torn tail {} bytes, verified in {:.2} s",
                tail.watermark,
                tail.torn_bytes,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        JournalCmd::Repair {
            data,
            yes_discard_records,
        } => {
            if !yes_discard_records {
                bail!("repair can discard acknowledged records; re-run with --yes-discard-records after copying the data directory aside");
            }
            let dir = data.layout().journal();
            let (w, report) = journal::Writer::open(journal::JournalConfig {
                repair: true,
                ..journal::JournalConfig::new(&dir)
            })?;
            w.close()?;
            println!("{report:#?}");
            Ok(())
        }
        JournalCmd::Replay {
            data,
            to,
            no_snapshot,
        } => {
            let dd = data.layout();
            let to = to.unwrap_or(u64::MAX);
            let rec = if no_snapshot {
                let mut e = engine::Engine::with_capacity(replica::DEFAULT_CAPACITY);
                let t = std::time::Instant::now();
                let n = replica::replay(
                    &mut e,
                    &dd.journal(),
                    to,
                    (to != u64::MAX).then_some(to),
                    |_, _, _, _| {},
                    print_progress,
                )?;
                replica::Recovered {
                    engine: e,
                    snapshot_seq: 0,
                    replayed: n,
                    skipped_snapshots: Vec::new(),
                    elapsed: t.elapsed(),
                }
            } else {
                replica::recover(&dd, to, print_progress)?
            };
            for s in &rec.skipped_snapshots {
                eprintln!(
                    "skipped snapshot {} ({}): {}",
                    s.seq,
                    s.path.display(),
                    s.reason
                );
            }
            rec.engine
                .check_invariants()
                .map_err(|e| anyhow::anyhow!("replayed state violates an invariant: {e}"))?;
            eprintln!(
                "replayed {} records after snapshot {} in {:.2} s",
                rec.replayed,
                rec.snapshot_seq,
                rec.elapsed.as_secs_f64()
            );
            println!("{}", state_summary(&rec.engine));
            Ok(())
        }
    }
}

fn snapshot_cmd(cmd: SnapshotCmd) -> Result<()> {
    match cmd {
        SnapshotCmd::Create { data } => {
            let dd = data.layout();
            let rec = replica::recover(&dd, u64::MAX, print_progress)?;
            let path = replica::write_snapshot(&dd, &rec.engine)?;
            println!("wrote {}: {}", path.display(), state_summary(&rec.engine));
            Ok(())
        }
        SnapshotCmd::List { data } => {
            let dir = data.layout().snapshots();
            if !dir.exists() {
                println!("no snapshots in {}", dir.display());
                return Ok(());
            }
            for s in journal::snapshot::list(&dir)? {
                println!("{:>12} {:>12} bytes  {}", s.seq, s.size, s.path.display());
            }
            Ok(())
        }
        SnapshotCmd::Verify { data } => {
            let dir = data.layout().snapshots();
            let mut bad = 0;
            let list = if dir.exists() {
                journal::snapshot::list(&dir)?
            } else {
                Vec::new()
            };
            for s in &list {
                let res = journal::snapshot::read(&s.path)
                    .map_err(|e| e.to_string())
                    .and_then(|(_, b)| {
                        engine::Engine::from_snapshot(&b).map_err(|e| e.to_string())
                    });
                match res {
                    Ok(e) => println!("OK   {}: {}", s.path.display(), state_summary(&e)),
                    Err(err) => {
                        bad += 1;
                        println!("BAD  {}: {err}", s.path.display());
                    }
                }
            }
            if bad > 0 {
                bail!("{bad} of {} snapshots are damaged", list.len());
            }
            println!("{} snapshots verified", list.len());
            Ok(())
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Variables the subcommands read through clap: an empty one means unset,
/// as it does for the configuration's own `MX_` variables.
const CLI_ENV: [&str; 5] = [
    "MX_CONFIG",
    "MX_DATA_DIR",
    "MX_JOURNAL__DIR",
    "MX_SNAPSHOT__DIR",
    "DATABASE_URL",
];

pub fn main() -> Result<()> {
    for name in CLI_ENV {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            // Before any thread exists: nothing else reads the environment.
            std::env::remove_var(name);
        }
    }
    let cli = Cli::parse();
    init_tracing();
    match cli.cmd {
        Cmd::Migrate { database_url } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = rt
                .block_on(persister::migrate::run_url(&database_url))
                .with_context(|| {
                    "migration failed; check that DATABASE_URL points at a reachable PostgreSQL 15+ server you may create tables in"
                })?;
            if report.is_noop() {
                println!(
                    "schema up to date ({} migrations applied earlier)",
                    report.already_applied.len()
                );
            } else {
                for m in &report.applied {
                    println!("applied {} ({} ms)", m.name, m.duration.as_millis());
                }
            }
            Ok(())
        }
        Cmd::Persist {
            database_url,
            data,
            domain,
            split,
        } => {
            use persister::rows::Domain;
            use persister::writer::{Follow, PersisterStatus, WriterConfig};
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            persister::writer::stop_on_signals(stop.clone())?;
            let base = WriterConfig::new(database_url, data.layout());
            let configs: Vec<WriterConfig> =
                match (domain.as_deref().and_then(Domain::parse), split) {
                    (Some(d), _) => vec![base.for_domain(d)],
                    (None, true) => Domain::ALL
                        .into_iter()
                        .map(|d| base.clone().for_domain(d))
                        .collect(),
                    (None, false) => vec![base],
                };
            let threads = configs
                .into_iter()
                .map(|cfg| {
                    let status = std::sync::Arc::new(PersisterStatus::default());
                    persister::writer::spawn(cfg, Follow::Poll, stop.clone(), status)
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            // A writer that fails stops the others (then the error is shown).
            while !threads.iter().all(|t| t.is_finished()) {
                if threads.iter().any(|t| t.is_finished()) {
                    stop.store(true, std::sync::atomic::Ordering::Release);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let mut failed = None;
            for t in threads {
                match t.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        failed.get_or_insert(e);
                    }
                    Err(_) => anyhow::bail!("a persister thread panicked"),
                }
            }
            match failed {
                Some(e) => Err(e.into()),
                None => Ok(()),
            }
        }
        Cmd::Reconcile { database_url, data } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let dir = data.layout();
            let report = rt.block_on(persister::reconcile::reconcile_url(&database_url, &dir))?;
            for d in &report.differences {
                println!("{d}");
            }
            println!(
                "reconciled at seq {}: {} accounts, {} settlements, {} differences",
                report.seq,
                report.accounts_checked,
                report.settlements_checked,
                report.differences.len()
            );
            if !report.differences.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Serve { config } => serve_cmd(config),
        Cmd::Journal { cmd } => journal_cmd(cmd),
        Cmd::Snapshot { cmd } => snapshot_cmd(cmd),
    }
}

/// `mini-exchange serve`: the configuration from `config` and the process
/// environment (`MX_*`), then [`crate::server::serve`] until SIGTERM/SIGINT.
/// Public for the load generators' tests, which run a server in-process.
pub fn serve_cmd(config: Option<PathBuf>) -> Result<()> {
    use crate::binance::ratelimit::{IntervalUnit, LimiterConfig, LimiterKind, WindowLimit};
    use crate::config;
    let cfg = config::load_from_process_env(config.as_deref())
        .map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    tracing::info!(config = ?cfg.http, data_dir = %cfg.data_dir.display(), "starting mini-exchange");
    let assets = cfg
        .asset_specs()
        .map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    let pairs = cfg
        .pair_specs(&assets)
        .map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    // Issued by the server itself at first start: no acting admin.
    let by = None;
    let mut bootstrap = vec![engine::Command::SetLimits {
        limits: cfg.engine_limits(),
        by,
    }];
    bootstrap.extend(
        assets
            .into_iter()
            .map(|spec| engine::Command::AddAsset { spec, by }),
    );
    bootstrap.extend(pairs.into_iter().map(|spec| engine::Command::AddPair {
        spec: Box::new(spec),
        by,
    }));
    let rl = &cfg.rate_limits;
    let opts = crate::server::ServeOptions {
        addr: cfg.http.addr,
        data: cfg.layout(),
        journal: cfg.journal_config(),
        pipeline: crate::pipeline::PipelineConfig {
            ring_capacity: cfg.http.ring_capacity,
            max_batch: cfg.journal.max_batch,
            wait: match cfg.engine.wait_strategy {
                config::WaitStrategy::Park => crate::pipeline::WaitStrategy::Park,
                config::WaitStrategy::Spin => crate::pipeline::WaitStrategy::Spin,
            },
            engine_core: cfg.engine.core,
            commit_interval: std::time::Duration::from_micros(cfg.journal.commit_interval_us),
        },
        snapshot: replica::SnapshotPolicy {
            every_records: cfg.snapshot.interval_records,
            every: std::time::Duration::from_secs(cfg.snapshot.interval_secs),
            keep: cfg.snapshot.keep.max(1) as usize,
            retain_journal: cfg.snapshot.retain_journal,
        },
        max_body_bytes: cfg.http.max_body_bytes,
        max_connections: cfg.http.max_connections as usize,
        request_timeout: std::time::Duration::from_millis(cfg.http.request_timeout_ms),
        send_buffer_bytes: cfg.http.send_buffer_bytes,
        bootstrap,
        weight_limit: LimiterConfig {
            kind: LimiterKind::RequestWeight,
            windows: vec![WindowLimit::new(
                1,
                IntervalUnit::Minute,
                rl.weight_per_minute_per_ip,
            )],
            max_tracked_keys: rl.max_tracked_keys,
            ban: rl.ban_policy(),
        },
        order_limit: LimiterConfig {
            kind: LimiterKind::Orders,
            windows: vec![
                WindowLimit::new(10, IntervalUnit::Second, rl.orders_per_10s_per_key),
                WindowLimit::new(1, IntervalUnit::Day, rl.orders_per_day_per_key),
            ],
            max_tracked_keys: rl.max_tracked_keys,
            ban: None,
        },
        rate_limits: vec![
            (
                "REQUEST_WEIGHT".into(),
                "MINUTE".into(),
                1,
                rl.weight_per_minute_per_ip,
            ),
            (
                "ORDERS".into(),
                "SECOND".into(),
                10,
                rl.orders_per_10s_per_key,
            ),
            ("ORDERS".into(), "DAY".into(), 1, rl.orders_per_day_per_key),
        ],
        auth: cfg.auth.clone(),
        ws: crate::ws::WsConfig::from_http(&cfg.http),
        database_url: cfg
            .persister_enabled()
            .then(|| cfg.database.url.as_ref().map(|u| u.expose().to_owned()))
            .flatten(),
        database_pool_size: cfg.database.pool_size as usize,
        persister: cfg.persister.clone(),
        market_data: cfg.market_data.limits(),
        default_price_band_pct: cfg.engine.price_band_pct,
        webhooks: crate::notifications::WebhookConfig {
            allow_private: cfg.http.webhook_allow_private,
            timeout: std::time::Duration::from_millis(cfg.http.webhook_timeout_ms),
            max_attempts: cfg.http.webhook_max_attempts,
            tls: crate::notifications::tls::client_config(
                cfg.http.webhook_extra_ca_file.as_deref(),
            )
            .map_err(|e| anyhow::anyhow!("configuration error: {e}"))?,
        },
    };
    crate::server::serve(opts)
}
