//! Runs one workload's throughput pass several times, for `perf record`:
//! `cargo run --release -p benches --example profile_engine -- W3 5`.
use benches::{run, w3, workload};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "W1".into());
    let reps: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let w = match name.as_str() {
        "W3" => workload::w3_commands(&w3::generate(42, 1_000_000)),
        "W2" => workload::w2(
            42,
            500_000,
            workload::W2Scale {
                pairs_side: 30,
                users: 100_000,
                resting: 100_000,
            },
        ),
        _ => workload::w1(42, 2_000_000),
    };
    for _ in 0..reps {
        let (_, t) = run::throughput(&w);
        eprintln!(
            "{name}: {:.0} cmds/s ({:.1} ns/cmd)",
            t.ops_per_sec,
            1e9 / t.ops_per_sec
        );
    }
}
