//! mx-bench: the benchmark harness of BENCHMARKS.md. Results are one JSON
//! object per line on stdout; progress goes to stderr.

use std::time::Instant;

use anyhow::{bail, Result};
use benches::journal_bench::{self, Scratch};
use benches::{peers, run, w3, workload};
use clap::{Parser, Subcommand, ValueEnum};
use journal::Durability;

#[derive(Parser, Debug)]
#[command(
    name = "mx-bench",
    version,
    about = "mini-exchange benchmark harness: deterministic, seeded workloads; one JSON result per line on stdout, progress on stderr",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WorkloadName {
    W1,
    W2,
    W3,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PersisterMode {
    CatchUp,
    Paced,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DurabilityName {
    Fsync,
    Os,
    None,
}

impl DurabilityName {
    fn get(self) -> Durability {
        match self {
            DurabilityName::Fsync => Durability::Fsync,
            DurabilityName::Os => Durability::Os,
            DurabilityName::None => Durability::None,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Engine alone on one thread, balances and fees on.
    ///
    /// W1: one pair, 1,000 users, ~1,000 resting orders, exchange-core's mix.
    /// W2: 10,000 pairs, 1,000,000 users, 1,000,000 resting orders, Pareto-skewed.
    /// W3: one book, 70% limit / 20% cancel / 10% market, also run through the
    /// peer crates matchcore and lobster in the same process.
    Engine {
        #[arg(long, value_enum, ignore_case = true)]
        workload: WorkloadName,
        /// Measured commands (default: W1 5,000,000; W2 2,000,000; W3 1,000,000).
        #[arg(long)]
        commands: Option<usize>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Skip the per-command latency pass.
        #[arg(long)]
        no_latency: bool,
        /// Write the latency percentile plot (SVG) to this file.
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
        /// W2 only: users (default 1,000,000).
        #[arg(long)]
        w2_users: Option<usize>,
        /// W2 only: resting orders (default 1,000,000).
        #[arg(long)]
        w2_resting: Option<usize>,
        /// W2 only: bases = quotes = N, pairs = N^2 (default 100).
        #[arg(long)]
        w2_pairs_side: Option<usize>,
    },
    /// Journal append throughput per durability mode (W1 command payloads),
    /// the latency of small fsync group commits (8 records each, as the
    /// server commits under load), and the journal + engine pipeline: a
    /// journaler thread group-commits batches and hands them to the engine
    /// thread, as the server does.
    Journal {
        /// Records per mode.
        #[arg(long, default_value_t = 2_000_000)]
        commands: usize,
        /// Records per group commit.
        #[arg(long, default_value_t = 2048)]
        batch: usize,
        /// Directory for scratch journals (default: the system temp dir).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Recovery speed: W1 commands written to a journal after a snapshot of
    /// the setup state, then snapshot load + journal replay timed.
    Replay {
        #[arg(long, default_value_t = 10_000_000)]
        commands: usize,
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// W4 REST order entry against a running `serve` (start it with the
    /// journal in fsync mode and MX_ADMIN_USERNAME/MX_ADMIN_PASSWORD set):
    /// signed POST /api/v3/order from N keep-alive connections, paced
    /// open-loop; latency from the planned send time.
    Rest {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        #[arg(long, env = "MX_ADMIN_USERNAME")]
        admin_user: String,
        #[arg(long, env = "MX_ADMIN_PASSWORD")]
        admin_password: String,
        /// Keep-alive connections (HTTP/1.1: one request in flight on
        /// each, so rate x round trip must stay well below this, also
        /// when round trips briefly reach a few milliseconds: at 30,000/s
        /// 64 connections queued requests at the client in half the runs,
        /// 128 did not; benches/RESULTS.md).
        #[arg(long, default_value_t = 128)]
        connections: usize,
        /// Planned orders per second, all connections together.
        #[arg(long, default_value_t = 30_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        #[arg(long, default_value_t = 32)]
        traders: usize,
        /// How planned requests go to connections: `pool` (the next
        /// planned request goes to the first free connection, as in a
        /// client's connection pool) or `fixed` (connection i owns every
        /// N-th slot and queues behind its own slow answers).
        #[arg(long, value_enum, default_value_t = DispatchArg::Pool)]
        dispatch: DispatchArg,
        #[command(flatten)]
        out: PacedOutput,
    },
    /// W4 over the WebSocket API against a running `serve` (journal in fsync
    /// mode, MX_ADMIN_USERNAME/MX_ADMIN_PASSWORD set): signed `order.place`
    /// requests pipelined on N connections to /ws-api/v3, paced open-loop;
    /// latency from the planned send time.
    Ws {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        #[arg(long, env = "MX_ADMIN_USERNAME")]
        admin_user: String,
        #[arg(long, env = "MX_ADMIN_PASSWORD")]
        admin_password: String,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Planned orders per second, all connections together.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        #[arg(long, default_value_t = 32)]
        traders: usize,
        /// Sign each request when its tick comes instead of all of them
        /// before the run. By default every request is signed ahead, with
        /// its planned send time as timestamp, so signing does not take
        /// CPU from the server on the cores they share (the server still
        /// checks every signature); this mode measures with that cost in.
        #[arg(long)]
        sign_live: bool,
        #[command(flatten)]
        out: PacedOutput,
    },
    /// The Postgres writer (persister) under a steady trading load, into a
    /// fresh database created (and dropped) on the server of --database-url.
    ///
    /// The stream: setup (1 pair, 1,000 funded users, 400 resting orders),
    /// then 45% makers / 45% IOC takers / 10% cancels: about 0.55 trades per
    /// command and 20 rows per trade. catch-up: the whole journal exists first; the writer runs
    /// from seq 1 to its end as fast as it can (as `mini-exchange persist`),
    /// after two offline passes that split the cost (replica only; replica +
    /// row building). paced: a producer appends at --rate trades/s for
    /// --duration-secs while the writer follows in-process (as `serve`);
    /// lag sampled every 5 ms in records and seconds (age of the oldest
    /// journal-durable record not yet in Postgres). ops_per_sec = engine
    /// events persisted per second; rows_per_sec counts rows written
    /// (inserts and upserts of every table); in paced mode both count what
    /// reached Postgres while the producer ran (offered_* is what it
    /// appended).
    Persister {
        #[arg(long, value_enum, default_value = "catch-up")]
        mode: PersisterMode,
        /// catch-up: trades in the generated stream.
        #[arg(long, default_value_t = 300_000)]
        trades: u64,
        /// Trades per second: the producer's pace (paced), the spacing of
        /// journal timestamps (catch-up).
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// paced: how long the producer runs.
        #[arg(long, default_value_t = 30)]
        duration_secs: u64,
        /// Server for the fresh database (any database there works).
        #[arg(long, env = "DATABASE_URL", default_value = persister::testdb::DEFAULT_DATABASE_URL)]
        database_url: String,
        /// Writer's largest batch in records (default: the writer's).
        #[arg(long)]
        max_batch: Option<usize>,
        /// Rows of the ledger, outbox or trades in a batch from which the
        /// writer uses binary COPY instead of UNNEST (default: the
        /// writer's; 18446744073709551615 = never).
        #[arg(long)]
        copy_min_rows: Option<usize>,
        /// One writer per table domain in parallel (`persister.writers =
        /// "split"`), in catch-up and paced mode.
        #[arg(long)]
        split: bool,
        /// paced: journal durability of the producer.
        #[arg(long, value_enum, default_value = "os")]
        durability: DurabilityName,
        /// Directory for the scratch journal (default: the system temp dir).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Keep the database (its name is printed) instead of dropping it.
        #[arg(long)]
        keep_db: bool,
        /// catch-up: skip the offline passes.
        #[arg(long)]
        no_profile: bool,
    },
    /// Market-data fan-out against a running `serve` (MX_ADMIN_USERNAME /
    /// MX_ADMIN_PASSWORD set): N WebSocket subscribers on
    /// `<symbol>@trade` and `<symbol>@depth@100ms` while orders flow at a
    /// paced rate (resting maker + IOC taker pairs, one trade each).
    ///
    /// Delivery latency = receive time - the event's `T` (trade: from the
    /// trade's transaction time) or `E` (depth: from the flush); both are
    /// whole ms, so figures can read up to 1 ms high. One result line per
    /// stream: ops_per_sec = messages delivered per second to all
    /// subscribers, the latency percentiles, and the subscribers the
    /// server dropped. --slow-subscribers adds connections that never
    /// read, which the server must drop (1008) without hurting the others.
    Fanout {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        #[arg(long, env = "MX_ADMIN_USERNAME")]
        admin_user: String,
        #[arg(long, env = "MX_ADMIN_PASSWORD")]
        admin_password: String,
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 0)]
        slow_subscribers: usize,
        /// Planned orders per second (half of them make a trade).
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Keep-alive connections the orders come from (each waits for its
        /// answers).
        #[arg(long, default_value_t = 8)]
        order_connections: usize,
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        #[arg(long, default_value = "btcusdt")]
        symbol: String,
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
    },
    /// Snapshot write (serialise + checksummed file + fsync) and load (read +
    /// verify + rebuild + invariants) of the W2 state.
    Snapshot {
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// W2 users (default 1,000,000).
        #[arg(long)]
        w2_users: Option<usize>,
        /// W2 resting orders (default 1,000,000).
        #[arg(long)]
        w2_resting: Option<usize>,
    },
}

/// Which W4 order-entry client to run.
#[derive(Debug, Clone, Copy)]
enum OrderEntry {
    Rest(benches::rest_bench::Dispatch),
    Ws(benches::ws_bench::Signing),
}

/// Pacing and outputs shared by the W4 clients (`rest`, `ws`).
#[derive(clap::Args, Debug)]
struct PacedOutput {
    /// Send tick in microseconds: requests are planned on this grid (each
    /// at the first tick at or after its evenly spaced time) and sent when
    /// their tick comes; latency counts from the tick.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=1_000_000))]
    tick_us: u64,
    /// Write the latency percentile plot (SVG) to this file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Write each 10 ms window's worst latency (CSV: start_ms,worst_ms) to
    /// this file, to see when stalls happened.
    #[arg(long)]
    timeline: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DispatchArg {
    Pool,
    Fixed,
}

/// W4 order entry over REST or the WebSocket API: fund traders through
/// the native API, run the paced load, print one JSON line (and a plot).
fn order_entry(
    kind: OrderEntry,
    addr: &str,
    (admin_user, admin_password): (&str, &str),
    (connections, rate, duration_secs, traders): (usize, u64, u64, usize),
    out: &PacedOutput,
    (calib, machine): (&str, &str),
) -> Result<()> {
    let tick_us = out.tick_us;
    use benches::{rest_bench, ws_bench};
    let dispatch = match kind {
        OrderEntry::Rest(rest_bench::Dispatch::Pool) => "\"dispatch\":\"pool\",",
        OrderEntry::Rest(rest_bench::Dispatch::Fixed) => "\"dispatch\":\"fixed\",",
        OrderEntry::Ws(ws_bench::Signing::Ahead) => "\"signing\":\"ahead\",",
        OrderEntry::Ws(ws_bench::Signing::Live) => "\"signing\":\"live\",",
    };
    let (name, prefix, label, title) = match kind {
        OrderEntry::Rest(_) => ("rest", "bench", "REST", "REST"),
        OrderEntry::Ws(_) => ("ws", "wsb", "WS API", "WebSocket API"),
    };
    let mut c = rest_bench::Conn::open(addr)?;
    let token = rest_bench::admin_token(&mut c, admin_user, admin_password)?;
    eprintln!("{name}: creating and funding {traders} traders ...");
    let run_id = rest_bench::now_ms() % 1_000_000;
    let accounts: Vec<rest_bench::Account> = (0..traders)
        .map(|i| rest_bench::make_trader(&mut c, &token, &format!("{prefix}{run_id}x{i}")))
        .collect::<Result<_>>()?;
    eprintln!("{name}: {connections} connections, {rate} orders/s planned, {duration_secs} s ...");
    let duration = std::time::Duration::from_secs(duration_secs);
    let tick = std::time::Duration::from_micros(tick_us);
    let server_before = rest_bench::ServerView::scrape(addr);
    let client_before = rest_bench::own_cpu_secs();
    let r = match kind {
        OrderEntry::Rest(d) => {
            rest_bench::run(addr, &accounts, connections, rate, duration, d, tick)?
        }
        OrderEntry::Ws(signing) => {
            ws_bench::run(addr, &accounts, connections, rate, duration, tick, signing)?
        }
    };
    if let Some(e) = &r.first_error {
        eprintln!("{name}: first error: {e}");
    }
    // The server's own view (ring push to durable outcome), bucket upper
    // bounds: what the client saw beyond it is sockets, request handling
    // and the client's own queueing.
    let steal = run::steal_json(r.ticks_at_start, run::cpu_ticks());
    let client_cpu = rest_bench::own_cpu_secs() - client_before - r.setup_cpu_s;
    let server_after = rest_bench::ServerView::scrape(addr);
    let cpu = rest_bench::cpu_per_order_json(
        client_cpu,
        &server_before.threads,
        &server_after.threads,
        r.ok,
    );
    let commits = rest_bench::commit_stalls_json(&server_before.commits, &server_after.commits);
    let server_ack = |q| {
        rest_bench::bucket_quantile_ns(&server_before.acks, &server_after.acks, q)
            .map_or_else(|| "null".to_string(), |v| v.to_string())
    };
    if let Some(path) = &out.plot {
        let title = format!("W4 {title} order ack latency at {rate}/s planned ({machine})");
        std::fs::write(
            path,
            benches::plot::percentile_svg(&title, &[(label, &r.hist)]),
        )?;
    }
    if let Some(path) = &out.timeline {
        std::fs::write(path, r.timeline.csv())?;
    }
    println!(
        "{{\"bench\":\"{name}\",\"workload\":\"W4\",{dispatch}\"connections\":{connections},\"planned_rate\":{rate},\"tick_us\":{tick_us},\"sent\":{},\"ok\":{},\"errors\":{},\"ops_per_sec\":{:.0},{},\"rtt_p50_ns\":{},\"rtt_p99_ns\":{},\"rtt_max_ns\":{},\"server_ack_p50_le_ns\":{},\"server_ack_p99_le_ns\":{},{commits},{},\"client_lag_max_ns\":{},\"client_lag_at_ms\":{},{cpu},{steal}{calib}\"machine\":\"{machine}\"}}",
        r.sent,
        r.ok,
        r.errors,
        r.ok as f64 / r.elapsed.as_secs_f64(),
        run::percentiles_json(&r.hist),
        r.rtt.value_at_quantile(0.5),
        r.rtt.value_at_quantile(0.99),
        r.rtt.max(),
        server_ack(0.5),
        server_ack(0.99),
        r.timeline.json(5, 5),
        r.client_lag.0,
        r.client_lag.1,
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let machine = run::machine();
    // The load generators record how fast the host is just before their load.
    let calib = match cli.cmd {
        Cmd::Persister { .. } | Cmd::Rest { .. } | Cmd::Ws { .. } | Cmd::Fanout { .. } => {
            run::calibration_json()
        }
        _ => String::new(),
    };
    match cli.cmd {
        Cmd::Persister {
            mode,
            trades,
            rate,
            duration_secs,
            database_url,
            max_batch,
            copy_min_rows,
            split,
            durability,
            dir,
            seed,
            keep_db,
            no_profile,
        } => {
            let knobs = benches::persister_bench::Knobs {
                max_batch,
                copy_min_rows,
                split,
            };
            let copy_min = copy_min_rows.unwrap_or(persister::copy::COPY_MIN_ROWS);
            use benches::persister_bench as pb;
            let n_trades = match mode {
                PersisterMode::CatchUp => trades,
                PersisterMode::Paced => rate * duration_secs,
            };
            eprintln!("persister: generating a stream of {n_trades} trades (seed {seed}) ...");
            let t0 = Instant::now();
            let stream = pb::generate(seed, n_trades, |t| {
                eprintln!("persister: generated {t} trades")
            });
            let last = stream.len() as u64;
            eprintln!(
                "persister: {} records ({} setup), {} trades, {} events in {:.1} s",
                last,
                stream.setup,
                stream.trades_upto(last),
                stream.events_upto(last),
                t0.elapsed().as_secs_f64()
            );
            let scratch = Scratch::new(dir.as_deref(), "persister");
            let data = persister::replica::DataDir::new(&scratch.0);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let batch = max_batch.unwrap_or(20_000);
            let mode_name = match mode {
                PersisterMode::CatchUp => "catch-up",
                PersisterMode::Paced => "paced",
            };
            let ticks0 = run::cpu_ticks();
            match mode {
                PersisterMode::CatchUp => {
                    eprintln!("persister: writing the journal ...");
                    pb::write_journal(&data, &stream, rate)?;
                    if !no_profile {
                        eprintln!("persister: offline pass: replica only ...");
                        let (n, _, el) = pb::offline_pass(&data, false, batch)?;
                        println!(
                            "{{\"bench\":\"persister\",\"mode\":\"catch-up\",\"phase\":\"replica\",\"records\":{n},\"events\":{},\"elapsed_s\":{:.3},\"ops_per_sec\":{:.0},\"records_per_sec\":{:.0},\"seed\":{seed},{calib}\"machine\":\"{machine}\"}}",
                            stream.events_upto(n),
                            el.as_secs_f64(),
                            stream.events_upto(n) as f64 / el.as_secs_f64(),
                            n as f64 / el.as_secs_f64()
                        );
                        eprintln!("persister: offline pass: replica + rows ...");
                        let (n, rows, el) = pb::offline_pass(&data, true, batch / 2)?;
                        println!(
                            "{{\"bench\":\"persister\",\"mode\":\"catch-up\",\"phase\":\"rows\",\"records\":{n},\"events\":{},\"rows\":{rows},\"batch\":{batch},\"elapsed_s\":{:.3},\"ops_per_sec\":{:.0},\"records_per_sec\":{:.0},\"rows_per_sec\":{:.0},\"seed\":{seed},{calib}\"machine\":\"{machine}\"}}",
                            stream.events_upto(n),
                            el.as_secs_f64(),
                            stream.events_upto(n) as f64 / el.as_secs_f64(),
                            n as f64 / el.as_secs_f64(),
                            rows as f64 / el.as_secs_f64()
                        );
                    }
                }
                PersisterMode::Paced => {}
            }
            let db = pb::fresh_db(&rt, &database_url);
            eprintln!("persister: database {}", db.name());
            let line = match mode {
                PersisterMode::CatchUp => {
                    eprintln!("persister: writer from seq 1 to {last} ...");
                    let r = pb::catch_up(&data, db.url(), db.name(), &stream, knobs)?;
                    let secs = r.elapsed.as_secs_f64();
                    format!(
                        "{{\"bench\":\"persister\",\"mode\":\"catch-up\",\"phase\":\"postgres\",\"records\":{},\"trades\":{},\"events\":{},\"rows\":{},\"batches\":{},\"max_batch\":{batch},\"elapsed_s\":{secs:.3},\"ops_per_sec\":{:.0},\"records_per_sec\":{:.0},\"trades_per_sec\":{:.0},\"rows_per_sec\":{:.0},\"build_s\":{:.3},\"flush_s\":{:.3},\"pg_cpu_s\":{:.2},\"writer_cpu_s\":{:.2},\"rows_per_pg_cpu_s\":{:.0}",
                        r.records,
                        r.trades,
                        r.events,
                        r.rows,
                        r.batches,
                        r.events as f64 / secs,
                        r.records as f64 / secs,
                        r.trades as f64 / secs,
                        r.rows as f64 / secs,
                        r.build.as_secs_f64(),
                        r.flush.as_secs_f64(),
                        r.pg_cpu_s,
                        r.writer_cpu_s,
                        r.rows as f64 / r.pg_cpu_s.max(0.01)
                    )
                }
                PersisterMode::Paced => {
                    let r = pb::paced(
                        &data,
                        db.url(),
                        db.name(),
                        &stream,
                        rate,
                        durability.get(),
                        knobs,
                    )?;
                    let secs = r.elapsed.as_secs_f64();
                    let s = |h: &hdrhistogram::Histogram<u64>, q: f64| {
                        h.value_at_quantile(q) as f64 / 1e6
                    };
                    format!(
                        "{{\"bench\":\"persister\",\"mode\":\"paced\",\"planned_trades_per_sec\":{rate},\"durability\":\"{}\",\"offered_records\":{},\"offered_trades\":{},\"offered_trades_per_sec\":{:.0},\"records\":{},\"trades\":{},\"events\":{},\"rows\":{},\"batches\":{},\"max_batch\":{batch},\"elapsed_s\":{secs:.3},\"ops_per_sec\":{:.0},\"records_per_sec\":{:.0},\"trades_per_sec\":{:.0},\"rows_per_sec\":{:.0},\"lag_s_p50\":{:.3},\"lag_s_p99\":{:.3},\"lag_s_p999\":{:.3},\"lag_s_max\":{:.3},\"lag_seq_p50\":{},\"lag_seq_p99\":{},\"lag_seq_max\":{},\"drain_s\":{:.3},\"producer_behind_max_ms\":{:.1},\"writer_busy\":{:.2},\"build_s\":{:.3},\"flush_s\":{:.3},\"pg_cpu_s\":{:.2},\"writer_cpu_s\":{:.2}",
                        journal_bench::mode_name(durability.get()),
                        r.records,
                        r.trades,
                        r.trades as f64 / secs,
                        r.written_records,
                        r.written_trades,
                        r.written_events,
                        r.rows,
                        r.batches,
                        r.written_events as f64 / secs,
                        r.written_records as f64 / secs,
                        r.written_trades as f64 / secs,
                        r.rows as f64 / secs,
                        s(&r.lag_us, 0.5),
                        s(&r.lag_us, 0.99),
                        s(&r.lag_us, 0.999),
                        r.lag_us.max() as f64 / 1e6,
                        r.lag_seq.value_at_quantile(0.5),
                        r.lag_seq.value_at_quantile(0.99),
                        r.lag_seq.max(),
                        r.drain.as_secs_f64(),
                        r.producer_behind_ms,
                        (r.build + r.flush).as_secs_f64() / secs,
                        r.build.as_secs_f64(),
                        r.flush.as_secs_f64(),
                        r.pg_cpu_s,
                        r.writer_cpu_s
                    )
                }
            };
            let steal = run::steal_json(ticks0, run::cpu_ticks());
            // The rows are the journal's: every trade, every candle.
            let (pg_trades, kline_trades) = rt.block_on(async {
                let c = db.client();
                let t: i64 = c
                    .query_one("SELECT count(*) FROM trades", &[])
                    .await?
                    .get(0);
                let k: i64 = c
                    .query_one(
                        "SELECT coalesce(sum(trades_count), 0)::int8 FROM klines WHERE interval = '1m'",
                        &[],
                    )
                    .await?
                    .get(0);
                Ok::<_, anyhow::Error>((t, k))
            })?;
            let want = stream.trades_upto(last) as i64;
            if pg_trades != want || kline_trades != want {
                bail!("{mode_name}: Postgres has {pg_trades} trades ({kline_trades} in 1m klines), the journal {want}");
            }
            println!(
                "{line},\"copy_min_rows\":{copy_min},\"seed\":{seed},{steal}{calib}\"machine\":\"{machine}\"}}"
            );
            if keep_db {
                eprintln!("persister: kept database {}", db.name());
                std::mem::forget(db);
            } else {
                rt.block_on(db.drop_db());
            }
            Ok(())
        }
        Cmd::Journal {
            commands,
            batch,
            dir,
            seed,
        } => {
            eprintln!("journal: generating {commands} W1 commands ...");
            let w = workload::w1(seed, commands);
            let payloads: Vec<Vec<u8>> = w.commands.iter().map(engine::Command::encode).collect();
            let avg =
                payloads.iter().map(Vec::len).sum::<usize>() as f64 / payloads.len().max(1) as f64;
            for mode in [Durability::None, Durability::Os, Durability::Fsync] {
                let scratch = Scratch::new(dir.as_deref(), "journal");
                eprintln!(
                    "journal: append, durability {} ...",
                    journal_bench::mode_name(mode)
                );
                let r = journal_bench::append(&scratch.0, mode, &payloads, batch);
                let secs = r.elapsed_ns as f64 / 1e9;
                println!(
                    "{{\"bench\":\"journal\",\"phase\":\"append\",\"durability\":\"{}\",\"records\":{},\"batch\":{batch},\"avg_payload_bytes\":{avg:.1},\"ops_per_sec\":{:.0},\"mb_per_sec\":{:.1},\"commits\":{},\"elapsed_ns\":{},\"machine\":\"{machine}\"}}",
                    journal_bench::mode_name(mode),
                    r.records,
                    r.records as f64 / secs,
                    r.bytes as f64 / secs / 1e6,
                    r.commits,
                    r.elapsed_ns
                );
            }
            {
                let scratch = Scratch::new(dir.as_deref(), "commit");
                let (small, commits) = (8, 20_000);
                eprintln!("journal: {commits} commits of {small} records, fsync ...");
                let h = journal_bench::commit_latency(&scratch.0, &payloads, small, commits);
                println!(
                    "{{\"bench\":\"journal\",\"phase\":\"commit\",\"durability\":\"fsync\",\"batch\":{small},\"commits\":{commits},{},\"machine\":\"{machine}\"}}",
                    run::percentiles_json(&h)
                );
            }
            let scratch = Scratch::new(dir.as_deref(), "pipeline");
            eprintln!("journal: journal + engine pipeline, fsync group commit ...");
            let (_e, r) = journal_bench::pipeline(&scratch.0, Durability::Fsync, &w, batch);
            println!(
                "{{\"bench\":\"journal\",\"phase\":\"pipeline\",\"durability\":\"fsync\",\"commands\":{},\"max_batch\":{},\"commits\":{},\"ops_per_sec\":{:.0},\"elapsed_ns\":{},\"machine\":\"{machine}\"}}",
                r.commands,
                r.max_batch,
                r.commits,
                r.commands as f64 * 1e9 / r.elapsed_ns as f64,
                r.elapsed_ns
            );
            Ok(())
        }
        Cmd::Rest {
            addr,
            admin_user,
            admin_password,
            connections,
            rate,
            duration_secs,
            traders,
            dispatch,
            out,
        } => order_entry(
            OrderEntry::Rest(match dispatch {
                DispatchArg::Pool => benches::rest_bench::Dispatch::Pool,
                DispatchArg::Fixed => benches::rest_bench::Dispatch::Fixed,
            }),
            &addr,
            (&admin_user, &admin_password),
            (connections, rate, duration_secs, traders),
            &out,
            (&calib, &machine),
        ),
        Cmd::Ws {
            addr,
            admin_user,
            admin_password,
            connections,
            rate,
            duration_secs,
            traders,
            sign_live,
            out,
        } => order_entry(
            OrderEntry::Ws(if sign_live {
                benches::ws_bench::Signing::Live
            } else {
                benches::ws_bench::Signing::Ahead
            }),
            &addr,
            (&admin_user, &admin_password),
            (connections, rate, duration_secs, traders),
            &out,
            (&calib, &machine),
        ),
        Cmd::Fanout {
            addr,
            admin_user,
            admin_password,
            subscribers,
            slow_subscribers,
            rate,
            order_connections,
            duration_secs,
            symbol,
            plot,
        } => {
            use benches::{fanout, rest_bench};
            let mut c = rest_bench::Conn::open(&addr)?;
            let token = rest_bench::admin_token(&mut c, &admin_user, &admin_password)?;
            let run_id = rest_bench::now_ms() % 1_000_000;
            let maker = rest_bench::make_trader(&mut c, &token, &format!("fan{run_id}m"))?;
            let taker = rest_bench::make_trader(&mut c, &token, &format!("fan{run_id}t"))?;
            let cfg = fanout::Config {
                addr,
                symbol: symbol.to_ascii_lowercase(),
                subscribers,
                slow_subscribers,
                rate,
                order_connections,
                duration: std::time::Duration::from_secs(duration_secs),
            };
            eprintln!(
                "fanout: {subscribers} subscribers, {rate} orders/s planned, {duration_secs} s ..."
            );
            let ticks0 = run::cpu_ticks();
            let r = fanout::run(&cfg, &maker, &taker)?;
            let steal = run::steal_json(ticks0, run::cpu_ticks());
            if let Some(e) = &r.first_error {
                eprintln!("fanout: first order error: {e}");
            }
            if let Some(path) = &plot {
                let title = format!(
                    "fan-out delivery latency, {subscribers} subscribers, {rate} orders/s ({machine})"
                );
                std::fs::write(
                    path,
                    benches::plot::percentile_svg(
                        &title,
                        &[
                            ("trade (from T)", &r.trade),
                            ("depth@100ms (from E)", &r.depth),
                        ],
                    ),
                )?;
            }
            let dropped: u64 = r.dropped.iter().map(|(_, n)| n).sum();
            let codes: Vec<String> = r
                .dropped
                .iter()
                .map(|(c, n)| format!("\"{c}\":{n}"))
                .collect();
            for (stream, h, msgs, expected) in [
                (
                    "trade",
                    &r.trade,
                    r.trade_msgs,
                    Some(r.trades * subscribers as u64),
                ),
                ("depth@100ms", &r.depth, r.depth_msgs, None),
            ] {
                println!(
                    "{{\"bench\":\"fanout\",\"stream\":\"{stream}\",\"subscribers\":{subscribers},\"slow_subscribers\":{slow_subscribers},\"planned_rate\":{rate},\"orders_ok\":{},\"order_errors\":{},\"orders_per_sec\":{:.0},\"trades\":{},\"msgs\":{msgs},\"msgs_expected\":{},\"ops_per_sec\":{:.0},{},\"dropped\":{dropped},\"dropped_by_code\":{{{}}},\"slow_dropped\":{},\"slow_dropped_1008\":{},\"window_s\":{:.2},\"client_cores\":{:.2},\"connect_s\":{:.2},{steal}{calib}\"machine\":\"{machine}\"}}",
                    r.orders_ok,
                    r.order_errors,
                    r.orders_ok as f64 / r.flow_secs,
                    r.trades,
                    expected.map_or("null".to_string(), |e| e.to_string()),
                    msgs as f64 / r.window_secs,
                    run::percentiles_json(h),
                    codes.join(","),
                    r.slow_closed,
                    r.slow_closed_1008,
                    r.window_secs,
                    r.client_cores,
                    r.connect_secs,
                );
            }
            Ok(())
        }
        Cmd::Replay {
            commands,
            dir,
            seed,
        } => {
            eprintln!("replay: generating {commands} W1 commands ...");
            let w = workload::w1(seed, commands);
            let scratch = Scratch::new(dir.as_deref(), "replay");
            let data = persister::replica::DataDir::new(&scratch.0);
            eprintln!("replay: writing the journal ...");
            journal_bench::write_for_replay(&data, &w);
            drop(w);
            eprintln!("replay: recovering (snapshot + replay) ...");
            let rec = persister::replica::recover(&data, u64::MAX, |p| {
                eprintln!("replay: seq {} ({:.0} records/s)", p.seq, p.records_per_sec)
            })?;
            let secs = rec.elapsed.as_secs_f64();
            println!(
                "{{\"bench\":\"replay\",\"commands\":{},\"ops_per_sec\":{:.0},\"elapsed_s\":{secs:.3},\"snapshot_seq\":{},\"state_hash\":\"{:016x}\",\"machine\":\"{machine}\"}}",
                rec.replayed,
                rec.replayed as f64 / secs,
                rec.snapshot_seq,
                rec.engine.state_hash()
            );
            Ok(())
        }
        Cmd::Snapshot {
            dir,
            seed,
            w2_users,
            w2_resting,
        } => {
            let d = workload::W2Scale::default();
            let scale = workload::W2Scale {
                pairs_side: d.pairs_side,
                users: w2_users.unwrap_or(d.users),
                resting: w2_resting.unwrap_or(d.resting),
            };
            eprintln!(
                "snapshot: building the W2 state ({} users, {} resting orders) ...",
                scale.users, scale.resting
            );
            let w = workload::w2(seed, 0, scale);
            let scratch = Scratch::new(dir.as_deref(), "snapshot");
            let data = persister::replica::DataDir::new(&scratch.0);
            let t0 = Instant::now();
            let path = persister::replica::write_snapshot(&data, &w.base)?;
            let write_s = t0.elapsed().as_secs_f64();
            let bytes = std::fs::metadata(&path)?.len();
            let t1 = Instant::now();
            let (e, seq, skipped) = persister::replica::load_snapshot(&data.snapshots(), u64::MAX)?;
            let load_s = t1.elapsed().as_secs_f64();
            if seq != w.base.last_seq()
                || !skipped.is_empty()
                || e.state_hash() != w.base.state_hash()
            {
                bail!("snapshot did not load back identically");
            }
            println!(
                "{{\"bench\":\"snapshot\",\"workload\":\"W2\",\"users\":{},\"resting_orders\":{},\"bytes\":{bytes},\"write_s\":{write_s:.3},\"load_s\":{load_s:.3},\"machine\":\"{machine}\"}}",
                scale.users,
                w.base.open_order_count()
            );
            Ok(())
        }
        Cmd::Engine {
            workload,
            commands,
            seed,
            no_latency,
            plot,
            w2_users,
            w2_resting,
            w2_pairs_side,
        } => {
            match workload {
                WorkloadName::W1 | WorkloadName::W2 => {
                    let t0 = Instant::now();
                    let w = if matches!(workload, WorkloadName::W1) {
                        let n = commands.unwrap_or(5_000_000);
                        eprintln!("W1: generating {n} commands (seed {seed}) ...");
                        workload::w1(seed, n)
                    } else {
                        let n = commands.unwrap_or(2_000_000);
                        let d = workload::W2Scale::default();
                        let scale = workload::W2Scale {
                            pairs_side: w2_pairs_side.unwrap_or(d.pairs_side),
                            users: w2_users.unwrap_or(d.users),
                            resting: w2_resting.unwrap_or(d.resting),
                        };
                        eprintln!(
                            "W2: setting up {} pairs, {} users, {} resting orders, then generating {n} commands (seed {seed}) ...",
                            scale.pairs_side * scale.pairs_side,
                            scale.users,
                            scale.resting
                        );
                        workload::w2(seed, n, scale)
                    };
                    eprintln!(
                        "generated in {:.1} s; {} resting at start; rejected by the simulator: {} {:?}",
                        t0.elapsed().as_secs_f64(),
                        w.resting_at_start,
                        w.sim_rejects,
                        w.sim_reject_reasons
                    );
                    let mem = w.base.memory_report();
                    let rss0 = run::rss_bytes();
                    eprintln!("throughput pass ...");
                    let (end, t) = run::throughput(&w);
                    let rss1 = run::rss_bytes();
                    let hist = if no_latency {
                        None
                    } else {
                        eprintln!("latency pass ...");
                        Some(run::latency(&w))
                    };
                    let mut line = format!(
                        "{{\"bench\":\"engine\",\"workload\":\"{}\",\"commands\":{},\"ops_per_sec\":{:.0},\"elapsed_ns\":{},\"events\":{},\"trades\":{},\"rejects\":{},\"resting_orders_start\":{},\"resting_orders_end\":{}",
                        w.name,
                        t.commands,
                        t.ops_per_sec,
                        t.elapsed_ns,
                        t.events,
                        t.trades,
                        t.rejects,
                        w.resting_at_start,
                        end.open_order_count()
                    );
                    if let Some(h) = &hist {
                        line.push(',');
                        line.push_str(&run::percentiles_json(h));
                        if let Some(path) = &plot {
                            let title =
                                format!("engine {} per-command latency ({machine})", w.name);
                            std::fs::write(
                                path,
                                benches::plot::percentile_svg(&title, &[(w.name, h)]),
                            )?;
                            eprintln!("wrote {}", path.display());
                        }
                    }
                    if mem.open_orders > 0 {
                        line.push_str(&format!(
                            ",\"order_bytes_per_resting_order\":{:.0}",
                            mem.order_bytes() as f64 / mem.open_orders as f64
                        ));
                    }
                    line.push_str(&format!(
                        ",\"engine_clone_rss_bytes\":{},\"seed\":{seed},\"machine\":\"{machine}\"}}",
                        rss1.saturating_sub(rss0)
                    ));
                    println!("{line}");
                }
                WorkloadName::W3 => {
                    let n = commands.unwrap_or(1_000_000);
                    eprintln!("W3: generating {n} ops (seed {seed}) ...");
                    let (ops, stats) = w3::generate_with_stats(seed, n);
                    let w = workload::w3_commands(&ops);
                    // Each implementation runs REPS times on the same stream;
                    // the median run is reported (the first run of each is
                    // also its warm-up).
                    const REPS: usize = 3;
                    eprintln!("running mini-exchange x{REPS} ...");
                    let mut runs: Vec<run::Throughput> =
                        (0..REPS).map(|_| run::throughput(&w).1).collect();
                    runs.sort_by_key(|t| t.elapsed_ns);
                    let t = runs.swap_remove(REPS / 2);
                    if t.trades != stats.expected_trades {
                        bail!(
                            "W3: engine made {} trades, the stream's shadow book expects {}",
                            t.trades,
                            stats.expected_trades
                        );
                    }
                    let ours_ns = t.elapsed_ns as f64 / n as f64;
                    println!(
                        "{{\"bench\":\"peer\",\"workload\":\"W3\",\"impl\":\"mini-exchange\",\"ops\":{n},\"runs\":{REPS},\"ns_per_op\":{ours_ns:.1},\"ops_per_sec\":{:.0},\"trades\":{},\"balances_and_fees\":true,\"seed\":{seed},\"machine\":\"{machine}\"}}",
                        t.ops_per_sec, t.trades
                    );
                    for (name, f) in [
                        (
                            "matchcore",
                            peers::run_matchcore as fn(&[w3::W3Op]) -> peers::PeerResult,
                        ),
                        ("lobster", peers::run_lobster),
                    ] {
                        eprintln!("running {name} x{REPS} ...");
                        let mut rs: Vec<peers::PeerResult> = (0..REPS).map(|_| f(&ops)).collect();
                        rs.sort_by(|a, b| a.ns_per_op.total_cmp(&b.ns_per_op));
                        let r = rs.swap_remove(REPS / 2);
                        println!(
                            "{{\"bench\":\"peer\",\"workload\":\"W3\",\"impl\":\"{name}\",\"ops\":{},\"ns_per_op\":{:.1},\"ops_per_sec\":{:.0},\"trades\":{},\"balances_and_fees\":false,\"ratio_vs_mini_exchange\":{:.2},\"seed\":{seed},\"machine\":\"{machine}\"}}",
                            r.ops,
                            r.ns_per_op,
                            1e9 / r.ns_per_op.max(1e-9),
                            r.trades,
                            r.ns_per_op / ours_ns
                        );
                    }
                    if !no_latency {
                        let h = run::latency(&w);
                        if let Some(path) = &plot {
                            let title = format!("engine W3 per-command latency ({machine})");
                            std::fs::write(
                                path,
                                benches::plot::percentile_svg(&title, &[("W3", &h)]),
                            )?;
                            eprintln!("wrote {}", path.display());
                        }
                        println!(
                            "{{\"bench\":\"engine\",\"workload\":\"W3\",\"commands\":{n},\"ops_per_sec\":{:.0},{},\"seed\":{seed},\"machine\":\"{machine}\"}}",
                            t.ops_per_sec,
                            run::percentiles_json(&h)
                        );
                    }
                }
            }
            Ok(())
        }
    }
}
