//! Measuring loops for the engine workloads: a throughput pass (no per-command
//! clock reads) and a latency pass (each command timed into an
//! hdrhistogram), each on a fresh clone of the workload's start state.

use std::time::Instant;

use engine::{Engine, Event};
use hdrhistogram::Histogram;

use crate::workload::Workload;

#[derive(Debug, Clone)]
pub struct Throughput {
    pub commands: usize,
    pub elapsed_ns: u64,
    pub ops_per_sec: f64,
    pub events: u64,
    pub rejects: u64,
    pub trades: u64,
}

/// Apply every command once, timing the whole loop. Returns the final engine
/// (for checks) and the numbers.
pub fn throughput(w: &Workload) -> (Engine, Throughput) {
    let mut e = w.base.clone();
    let trades_before = e.next_trade_id();
    let mut out: Vec<Event> = Vec::with_capacity(4096);
    let mut events = 0u64;
    let mut rejects = 0u64;
    let start = Instant::now();
    for (i, c) in w.commands.iter().enumerate() {
        out.clear();
        e.apply(w.first_seq + i as u64, w.first_ts + i as u64, c, &mut out);
        events += out.len() as u64;
        if let Some(Event::Rejected { .. }) = out.first() {
            rejects += 1;
        }
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let n = w.commands.len();
    let t = Throughput {
        commands: n,
        elapsed_ns,
        ops_per_sec: n as f64 * 1e9 / elapsed_ns.max(1) as f64,
        events,
        rejects,
        trades: e.next_trade_id() - trades_before,
    };
    (e, t)
}

/// Apply every command once, timing each into a histogram of nanoseconds.
/// Includes one clock read per command (about 20 ns on this class of host).
pub fn latency(w: &Workload) -> Histogram<u64> {
    let mut e = w.base.clone();
    let mut out: Vec<Event> = Vec::with_capacity(4096);
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds");
    for (i, c) in w.commands.iter().enumerate() {
        out.clear();
        let t0 = Instant::now();
        e.apply(w.first_seq + i as u64, w.first_ts + i as u64, c, &mut out);
        let ns = t0.elapsed().as_nanos() as u64;
        h.saturating_record(ns.max(1));
    }
    h
}

/// Percentile fields of a latency histogram as JSON members.
pub fn percentiles_json(h: &Histogram<u64>) -> String {
    format!(
        "\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"p9999_ns\":{},\"max_ns\":{}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.value_at_quantile(0.9999),
        h.max()
    )
}

/// "model name, N cores" of this host, for every result line.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{model}, {cores} cores")
}

/// Resident set size of this process in bytes (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
