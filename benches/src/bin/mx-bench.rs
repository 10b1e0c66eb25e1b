//! mx-bench: the benchmark harness of BENCHMARKS.md. Results are one JSON
//! object per line on stdout; progress goes to stderr.

use std::time::Instant;

use anyhow::{bail, Result};
use benches::{peers, run, w3, workload};
use clap::{Parser, Subcommand, ValueEnum};

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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Engine {
            workload,
            commands,
            seed,
            no_latency,
            w2_users,
            w2_resting,
            w2_pairs_side,
        } => {
            let machine = run::machine();
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
                    eprintln!("running mini-exchange ...");
                    let (_end, t) = run::throughput(&w);
                    if t.trades != stats.expected_trades {
                        bail!(
                            "W3: engine made {} trades, the stream's shadow book expects {}",
                            t.trades,
                            stats.expected_trades
                        );
                    }
                    let ours_ns = t.elapsed_ns as f64 / n as f64;
                    println!(
                        "{{\"bench\":\"peer\",\"workload\":\"W3\",\"impl\":\"mini-exchange\",\"ops\":{n},\"ns_per_op\":{ours_ns:.1},\"ops_per_sec\":{:.0},\"trades\":{},\"balances_and_fees\":true,\"seed\":{seed},\"machine\":\"{machine}\"}}",
                        t.ops_per_sec, t.trades
                    );
                    for (name, f) in [
                        ("matchcore", peers::run_matchcore as fn(&[w3::W3Op]) -> peers::PeerResult),
                        ("lobster", peers::run_lobster),
                    ] {
                        eprintln!("running {name} ...");
                        let r = f(&ops);
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
                        println!(
                            "{{\"bench\":\"engine\",\"workload\":\"W3\",\"commands\":{n},\"ops_per_sec\":{:.0},{},\"seed\":{seed},\"machine\":\"{machine}\"}}",
                            t.ops_per_sec,
                            run::percentiles_json(&h)
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
