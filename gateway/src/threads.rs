//! CPU time of this process's threads by name, for `/metrics`
//! (`mx_thread_cpu_seconds_total{thread="mx-engine"}` ...): on a small
//! machine the order path's latency tail comes from one of its stages
//! running out of CPU (benches/RESULTS.md, session of 2026-11-28 02:54),
//! and this shows which one. Threads of one name (the tokio workers
//! `mx-gateway`, the persister writers) are summed. Linux only: elsewhere
//! the list is empty.

use std::collections::BTreeMap;

/// User + system CPU seconds per thread name, sorted by name.
pub fn cpu_by_name() -> Vec<(String, f64)> {
    let tick = clock_ticks_per_sec();
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    for task in dir.flatten() {
        let path = task.path();
        // A thread that ended between the listing and the read is skipped.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        if let Some(ticks) = stat_cpu_ticks(&stat) {
            *by.entry(comm.trim().to_string()).or_default() += ticks;
        }
    }
    by.into_iter()
        .map(|(name, t)| (name, t as f64 / tick))
        .collect()
}

/// utime + stime (clock ticks) of a `/proc/.../stat` line. The command
/// name in parentheses may itself hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    // After the name: state (0), ppid, pgrp, session, tty_nr, tpgid, flags,
    // minflt, cminflt, majflt, cmajflt, utime (11), stime (12).
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
pub fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4711 (mx (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 9 0 100";
        assert_eq!(stat_cpu_ticks(line), Some(281));
        assert_eq!(stat_cpu_ticks("4711 (x) S 1 2"), None);
        assert_eq!(stat_cpu_ticks("no parenthesis"), None);
        assert_eq!(
            stat_cpu_ticks("1 (x) S 1 2 3 4 5 6 7 8 9 10 abc 3"),
            None,
            "a field that is not a number"
        );
    }

    #[test]
    fn a_busy_named_thread_shows_its_cpu_time() {
        let t = std::thread::Builder::new()
            .name("mx-cputest".into())
            .spawn(|| {
                // Busy until this thread has used 100 ms of CPU, however
                // loaded the machine is (its own CPU clock, not wall time).
                let own_cpu = || {
                    let mut ts = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    // SAFETY: ts is a valid timespec for the call to fill.
                    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
                    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
                };
                let mut x = 0u64;
                while own_cpu() < 0.1 {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                }
                let cpu = cpu_by_name();
                (x, cpu)
            })
            .unwrap();
        let (_, cpu) = t.join().unwrap();
        let mine = cpu
            .iter()
            .find(|(n, _)| n == "mx-cputest")
            .unwrap_or_else(|| panic!("{cpu:?}"));
        assert!(mine.1 >= 0.05, "{cpu:?}");
        assert!(
            cpu.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, one entry per name"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("mx-engine"), "mx-engine");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
