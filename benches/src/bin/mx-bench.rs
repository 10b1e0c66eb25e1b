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
    /// and the journal + engine pipeline: a journaler thread group-commits
    /// batches and hands them to the engine thread, as the server does.
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
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Planned orders per second, all connections together.
        #[arg(long, default_value_t = 30_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        #[arg(long, default_value_t = 32)]
        traders: usize,
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    let machine = run::machine();
    match cli.cmd {
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
            plot,
        } => {
            use benches::rest_bench;
            let mut c = rest_bench::Conn::open(&addr)?;
            let token = rest_bench::admin_token(&mut c, &admin_user, &admin_password)?;
            eprintln!("rest: creating and funding {traders} traders ...");
            let run_id = rest_bench::now_ms() % 1_000_000;
            let accounts: Vec<rest_bench::Account> = (0..traders)
                .map(|i| rest_bench::make_trader(&mut c, &token, &format!("bench{run_id}x{i}")))
                .collect::<Result<_>>()?;
            eprintln!(
                "rest: {connections} connections, {rate} orders/s planned, {duration_secs} s ..."
            );
            let r = rest_bench::run(
                &addr,
                &accounts,
                connections,
                rate,
                std::time::Duration::from_secs(duration_secs),
            )?;
            if let Some(path) = &plot {
                let title = format!("W4 REST order ack latency at {rate}/s planned ({machine})");
                std::fs::write(
                    path,
                    benches::plot::percentile_svg(&title, &[("REST", &r.hist)]),
                )?;
            }
            println!(
                "{{\"bench\":\"rest\",\"workload\":\"W4\",\"connections\":{connections},\"planned_rate\":{rate},\"sent\":{},\"ok\":{},\"errors\":{},\"ops_per_sec\":{:.0},{},\"machine\":\"{machine}\"}}",
                r.sent,
                r.ok,
                r.errors,
                r.ok as f64 / r.elapsed.as_secs_f64(),
                run::percentiles_json(&r.hist)
            );
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
