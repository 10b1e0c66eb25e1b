//! Send ticks for the paced W4 clients (`mx-bench rest` and `ws`).
//!
//! A client runs on one tokio thread, and tokio's timer wheel has a 1 ms
//! granularity that is not aligned with the run's start: a request planned
//! 40 us after a wake-up was sent at the next wheel tick, up to 1 ms later,
//! and since latency counts from the PLANNED time, every request carried
//! that client-side quantization (on average 0.5 ms; the 1 ms gap between
//! `p99` and `rtt_p99` of the earlier WS runs). So requests are planned on
//! a grid of ticks instead (each at the first tick at or after its evenly
//! spaced time, which keeps the rate), and senders wake on the grid itself:
//! a periodic `timerfd` (CLOCK_MONOTONIC, the clock of `Instant`) in tokio's
//! reactor, one wake-up per tick for the whole client, as before. The wire
//! pattern is the one the 1 ms wheel produced (every connection's due
//! requests leave together at each tick); what changes is that a request is
//! no longer charged for the client's own timer rounding. A late tick (the
//! client thread busy) still counts from the planned instant.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::watch;

/// The request schedule: evenly spaced times rounded up to `tick`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub start: Instant,
    tick_ns: u64,
}

impl Plan {
    /// `tick` of at least 1 us.
    pub fn new(start: Instant, tick: Duration) -> Plan {
        Plan {
            start,
            tick_ns: (tick.as_nanos() as u64).max(1_000),
        }
    }

    /// Planned time (ns after start) of a request whose evenly spaced time
    /// is `even_ns`: the first tick at or after it.
    pub fn at_ns(&self, even_ns: u64) -> u64 {
        even_ns.div_ceil(self.tick_ns) * self.tick_ns
    }

    /// The tick at which a request planned at `at_ns` is sent.
    pub fn tick_of(&self, at_ns: u64) -> u64 {
        at_ns / self.tick_ns
    }

    pub fn instant(&self, at_ns: u64) -> Instant {
        self.start + Duration::from_nanos(at_ns)
    }

    /// Start the ticker (a task on the current runtime) for this plan.
    pub fn ticks(&self) -> io::Result<Ticks> {
        spawn_ticker(self.start, Duration::from_nanos(self.tick_ns))
    }
}

/// How far the ticker has come; clone one per sender.
#[derive(Debug, Clone)]
pub struct Ticks(watch::Receiver<u64>);

impl Ticks {
    /// Ticks that have come (tick `j` has come when this is above `j`).
    pub fn count(&self) -> u64 {
        *self.0.borrow()
    }

    /// Wait until tick `j` (the instant start + j x tick) has come: true
    /// then, false if the ticker stopped first (its timer failed; it also
    /// stops once every `Ticks` is dropped), so a sender never hangs.
    pub async fn reached(&mut self, j: u64) -> bool {
        loop {
            if *self.0.borrow_and_update() > j {
                return true;
            }
            if self.0.changed().await.is_err() {
                return false;
            }
        }
    }
}

/// `Instant` as a CLOCK_MONOTONIC timespec (Rust's `Instant` reads that
/// clock on Linux; the offset is taken from two back-to-back reads).
fn monotonic_timespec(at: Instant) -> io::Result<libc::timespec> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let now_instant = Instant::now();
    let now_ns = i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec);
    let delta = if at >= now_instant {
        (at - now_instant).as_nanos() as i128
    } else {
        -((now_instant - at).as_nanos() as i128)
    };
    let ns = (now_ns + delta).max(1);
    Ok(libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    })
}

fn duration_timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// A periodic timer firing at `start`, `start + tick`, ...; the returned
/// `Ticks` sees the number of ticks that have come. Must be called inside
/// a tokio runtime with I/O enabled.
fn spawn_ticker(start: Instant, tick: Duration) -> io::Result<Ticks> {
    // SAFETY: plain syscall; the result is checked before use.
    let raw = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor this function owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let spec = libc::itimerspec {
        it_interval: duration_timespec(tick),
        it_value: monotonic_timespec(start)?,
    };
    // SAFETY: `fd` is a timerfd, `spec` a valid itimerspec, no old value asked.
    let rc = unsafe {
        libc::timerfd_settime(
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the AsyncFd owns `fd` (an OwnedFd, open until it is dropped
    // with the AsyncFd), so the descriptor stays valid and the same.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut reached = 0u64;
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return;
            };
            let mut expirations = [0u8; 8];
            let read = guard.try_io(|fd| {
                // SAFETY: reads at most 8 bytes into an 8-byte buffer.
                let n = unsafe { libc::read(fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
                if n == 8 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
            match read {
                Ok(Ok(())) => {
                    reached += u64::from_ne_bytes(expirations);
                    if tx.send(reached).is_err() {
                        return;
                    }
                }
                Ok(Err(_)) => return,
                Err(_would_block) => continue,
            }
        }
    });
    Ok(Ticks(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_planned_at_the_first_tick_at_or_after_their_even_time() {
        let p = Plan::new(Instant::now(), Duration::from_millis(1));
        assert_eq!(p.at_ns(0), 0);
        assert_eq!(p.at_ns(1), 1_000_000);
        assert_eq!(p.at_ns(40_000), 1_000_000);
        assert_eq!(p.at_ns(1_000_000), 1_000_000);
        assert_eq!(p.at_ns(1_000_001), 2_000_000);
        assert_eq!(p.tick_of(p.at_ns(1_500_000)), 2);
        // The rate is kept: 25 requests 40 us apart fill exactly one tick.
        let per_tick = (1..=25)
            .filter(|k| p.at_ns(k * 40_000) == 1_000_000)
            .count();
        assert_eq!(per_tick, 25);
    }

    #[test]
    fn ticks_come_on_time_and_never_early() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let start = Instant::now() + Duration::from_millis(20);
            let plan = Plan::new(start, Duration::from_micros(500));
            let mut ticks = plan.ticks().unwrap();
            for j in [0u64, 1, 7, 40] {
                assert!(ticks.reached(j).await);
                // Never before the tick's instant (the timer is absolute).
                assert!(
                    Instant::now() >= plan.instant(j * 500_000),
                    "tick {j} early"
                );
            }
        });
    }
}
