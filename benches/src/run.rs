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

/// W1 commands of one calibration pass ([`host_speed`]).
pub const CALIBRATION_COMMANDS: usize = 200_000;

/// How fast this host runs the engine right now: W1 commands per second,
/// the best of `passes` throughput passes over `commands` commands (~40 ms
/// each on a fast host). Shared VMs change speed by 2x from one hour to
/// the next, so load generators measure this just before their load and
/// put it in their result line (`host_w1_ops_per_sec`): runs are then
/// compared with runs of a host in the same state.
pub fn host_speed(commands: usize, passes: usize) -> f64 {
    let w = crate::workload::w1(42, commands.max(1));
    (0..passes.max(1))
        .map(|_| throughput(&w).1.ops_per_sec)
        .fold(0.0, f64::max)
}

/// [`host_speed`] as the JSON member the load generators print before
/// `machine` (with its trailing comma), announced on stderr.
pub fn calibration_json() -> String {
    let v = host_speed(CALIBRATION_COMMANDS, 3);
    eprintln!(
        "host: W1 at {:.2}M commands/s (best of 3 passes of {CALIBRATION_COMMANDS}; \
         host_w1_ops_per_sec in the result line)",
        v / 1e6
    );
    format!("\"host_w1_ops_per_sec\":{v:.0},")
}

/// The machine's CPU time so far from /proc/stat (Linux): (steal, total)
/// in clock ticks. Steal is time the hypervisor gave this VM's virtual
/// CPUs to someone else; on a shared host it is what the load generators
/// lose without a trace in their own figures.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    steal_and_total(stat.lines().next()?)
}

/// (steal, total) of the aggregate `cpu` line of /proc/stat: user nice
/// system idle iowait irq softirq steal (guest time is inside user).
fn steal_and_total(line: &str) -> Option<(u64, u64)> {
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    (v.len() == 8).then(|| (v[7], v.iter().sum()))
}

/// Share of the machine's CPU time stolen between two [`cpu_ticks`]
/// readings, in percent, as the JSON member `host_steal_pct` (with its
/// trailing comma); empty when /proc/stat is not there.
pub fn steal_json(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> String {
    match (before, after) {
        (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => {
            let pct = 100.0 * s1.saturating_sub(s0) as f64 / (t1 - t0) as f64;
            format!("\"host_steal_pct\":{pct:.1},")
        }
        _ => String::new(),
    }
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

/// Worst latency per window of planned send time, to tell a few stalls
/// (a burst of late answers in one or two windows) from a slow steady state
/// (late answers spread over the run). Windows are `WINDOW_MS` long.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Worst latency (us) of the requests planned in each window.
    worst_us: Vec<u32>,
}

impl Timeline {
    pub const WINDOW_MS: u64 = 10;

    /// A request planned `planned_ns` after the start was answered after
    /// `latency_ns`.
    pub fn record(&mut self, planned_ns: u64, latency_ns: u64) {
        let w = (planned_ns / (Self::WINDOW_MS * 1_000_000)) as usize;
        if w >= self.worst_us.len() {
            self.worst_us.resize(w + 1, 0);
        }
        let us = (latency_ns / 1_000).min(u64::from(u32::MAX)) as u32;
        self.worst_us[w] = self.worst_us[w].max(us);
    }

    pub fn merge(&mut self, other: &Timeline) {
        for (w, &us) in other.worst_us.iter().enumerate() {
            self.record(
                w as u64 * Self::WINDOW_MS * 1_000_000,
                u64::from(us) * 1_000,
            );
        }
    }

    /// Every window as CSV lines `start_ms,worst_ms` after a header line;
    /// a window with no request planned in it reads 0.
    pub fn csv(&self) -> String {
        let mut out = String::from("start_ms,worst_ms\n");
        for (w, &us) in self.worst_us.iter().enumerate() {
            out.push_str(&format!(
                "{},{:.3}\n",
                w as u64 * Self::WINDOW_MS,
                f64::from(us) / 1_000.0
            ));
        }
        out
    }

    /// JSON members: how many windows had a request later than `slow_ms`,
    /// and the `top` worst windows as `[start_ms, worst_ms]`, worst first.
    pub fn json(&self, slow_ms: u64, top: usize) -> String {
        let slow = self
            .worst_us
            .iter()
            .filter(|&&us| u64::from(us) > slow_ms * 1_000)
            .count();
        let mut worst: Vec<(usize, u32)> = self.worst_us.iter().copied().enumerate().collect();
        worst.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let list: Vec<String> = worst
            .iter()
            .take(top)
            .map(|&(w, us)| {
                format!(
                    "[{},{:.1}]",
                    w as u64 * Self::WINDOW_MS,
                    f64::from(us) / 1_000.0
                )
            })
            .collect();
        format!(
            "\"windows_{}ms\":{},\"windows_over_{slow_ms}ms\":{slow},\"worst_windows_ms\":[{}]",
            Self::WINDOW_MS,
            self.worst_us.len(),
            list.join(",")
        )
    }
}

/// How late the load generator's own event loop ran: a task on the same
/// runtime asks to wake every millisecond from `start` to `start + duration`
/// and records its worst lateness (ns) and when (ms after `start`). A late
/// answer that coincides with a late probe is the client's stall (its thread
/// not scheduled), not the server's.
pub fn spawn_lag_probe(
    start: std::time::Instant,
    duration: std::time::Duration,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let tick = std::time::Duration::from_millis(1);
        let mut next = start;
        let (mut worst, mut at) = (0u64, 0u64);
        while next < start + duration {
            tokio::time::sleep_until(next.into()).await;
            let now = std::time::Instant::now();
            let late = now.saturating_duration_since(next).as_nanos() as u64;
            if late > worst {
                worst = late;
                at = next.saturating_duration_since(start).as_millis() as u64;
            }
            next = now.max(next) + tick;
        }
        (worst, at)
    })
}

#[cfg(test)]
mod timeline_tests {
    use super::Timeline;

    #[test]
    fn host_speed_runs_a_valid_w1_and_calibration_json_is_one_member() {
        let w = crate::workload::w1(42, 5_000);
        let (_, t) = super::throughput(&w);
        assert_eq!(t.commands, 5_000);
        assert_eq!(t.rejects, 0, "the calibration workload is valid W1");
        let v = super::host_speed(5_000, 2);
        assert!(v.is_finite() && v > 0.0, "{v}");
        let j = super::calibration_json();
        let n: f64 = j
            .strip_prefix("\"host_w1_ops_per_sec\":")
            .and_then(|r| r.strip_suffix(','))
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("{j}"));
        assert!(n >= 1.0, "{j}");
    }

    #[test]
    fn keeps_the_worst_latency_of_each_window_and_lists_the_worst_first() {
        let mut a = Timeline::default();
        a.record(0, 1_000_000); // window 0: 1 ms
        a.record(5_000_000, 3_000_000); // window 0: 3 ms
        a.record(25_000_000, 9_000_000); // window 2: 9 ms
        let mut b = Timeline::default();
        b.record(12_000_000, 7_500_000); // window 1: 7.5 ms
        b.record(26_000_000, 2_000_000); // window 2 stays 9 ms after the merge
        a.merge(&b);
        assert_eq!(
            a.json(5, 2),
            "\"windows_10ms\":3,\"windows_over_5ms\":2,\"worst_windows_ms\":[[20,9.0],[10,7.5]]"
        );
        assert_eq!(
            Timeline::default().json(5, 3),
            "\"windows_10ms\":0,\"windows_over_5ms\":0,\"worst_windows_ms\":[]"
        );
    }

    #[test]
    fn csv_lists_every_window_in_time_order() {
        let mut t = Timeline::default();
        t.record(25_000_000, 9_000_000);
        t.record(1_000_000, 1_250_000);
        assert_eq!(t.csv(), "start_ms,worst_ms\n0,1.250\n10,0.000\n20,9.000\n");
        assert_eq!(Timeline::default().csv(), "start_ms,worst_ms\n");
    }
}

#[cfg(test)]
mod steal_tests {
    use super::{cpu_ticks, steal_and_total, steal_json};

    #[test]
    fn steal_is_read_from_the_cpu_line() {
        let line = "cpu  386129 0 28252 292967 3404 0 2366 5664 0 0";
        assert_eq!(
            steal_and_total(line),
            Some((5664, 386129 + 28252 + 292967 + 3404 + 2366 + 5664))
        );
        assert_eq!(steal_and_total("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(steal_and_total("cpu 1 2 3"), None);
        assert_eq!(steal_and_total("cpu 1 2 x 4 5 6 7 8"), None);
        assert_eq!(
            steal_json(Some((10, 1000)), Some((60, 2000))),
            "\"host_steal_pct\":5.0,"
        );
        assert_eq!(steal_json(None, Some((60, 2000))), "");
        assert_eq!(steal_json(Some((10, 1000)), Some((10, 1000))), "");
        assert!(cpu_ticks().is_some(), "Linux has /proc/stat");
    }
}
