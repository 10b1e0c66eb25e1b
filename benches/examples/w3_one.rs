//! Runs one W3 implementation REPS times on the same stream, for
//! instruction counting under `valgrind --tool=callgrind` (noise-free on a
//! shared machine): the difference between REPS=2 and REPS=1 is the cost of
//! one pass. `cargo run --release -p benches --example w3_one -- ours 200000 1`
use benches::{peers, run, w3, workload};

fn main() {
    let mut a = std::env::args().skip(1);
    let which = a.next().unwrap_or_else(|| "ours".into());
    let n: usize = a.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let reps: usize = a.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let ops = w3::generate(42, n);
    let w = workload::w3_commands(&ops);
    let mut trades = 0u64;
    for _ in 0..reps {
        trades += match which.as_str() {
            "matchcore" => peers::run_matchcore(&ops).trades,
            "lobster" => peers::run_lobster(&ops).trades,
            _ => run::throughput(&w).1.trades,
        };
    }
    println!("{which} n={n} reps={reps} trades={trades}");
}
