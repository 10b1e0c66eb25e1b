//! Crash loop with real processes: a child process journals commands in
//! fsync group-commit batches, applies them to an engine, snapshots now and
//! then, and prints each acknowledged (durable) sequence number; the parent
//! SIGKILLs it at random moments, many times. After every kill:
//! * recovery (newest valid snapshot + journal replay) contains every
//!   acknowledged command, byte for byte (commands are a pure function of
//!   their sequence number, so the parent regenerates them);
//! * the recovered state passes every engine invariant (conservation
//!   included) and its `state_hash()` equals a clean replay of the journal
//!   from the first record without any snapshot.
//!
//! The next child continues from the recovered state.

use std::io::{BufRead, BufReader};
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

mod common;

use engine::*;
use persister::replica::{self, DataDir};

const CHILD_ENV: &str = "MX_RECOVERY_CRASH_CHILD";

fn rng(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const ONE: u64 = 100_000_000;
const USERS: u64 = 8;

/// The command journaled at `seq`: a pure function of `seq`.
fn cmd_for(seq: u64) -> Command {
    let asset = |s: &str| AssetSpec {
        symbol: s.into(),
        name: s.into(),
        decimals: 8,
        min_withdraw_units: 0,
        withdraw_fee_units: 0,
        daily_withdraw_limit_units: 0,
        confirmations: 1,
        active: true,
    };
    match seq {
        1 => Command::AddAsset {
            spec: asset("BTC"),
            by: None,
        },
        2 => Command::AddAsset {
            spec: asset("USDT"),
            by: None,
        },
        3 => Command::AddPair {
            spec: Box::new(common::btcusdt()),
            by: None,
        },
        4..=11 => Command::CreateUser {
            username: format!("crash{}", seq - 3),
            email: String::new(),
            password_hash: String::new(),
            roles: roles::TRADER,
        },
        12..=27 => {
            let u = (seq - 12) / 2 + 1;
            Command::Deposit {
                user: UserId(u),
                asset: AssetId(1 + (seq % 2) as u32),
                amount: 1_000_000 * ONE,
                tx_hash: format!("fund-{seq}"),
                confirmations: 1,
                by: None,
            }
        }
        _ => {
            let r = rng(seq);
            let user = UserId(1 + r % USERS);
            let side = if (r >> 8) & 1 == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            let price = 3_000_000 + ((r >> 10) % 200) - 100;
            let qty = (1 + (r >> 20) % 20) * 100_000;
            match (r >> 32) % 10 {
                0..=5 => common::btc_order(
                    user,
                    side,
                    price,
                    qty,
                    (r >> 40).is_multiple_of(5),
                    StpMode::ExpireMaker,
                ),
                6 => common::btc_order(user, side, 0, qty, false, StpMode::ExpireMaker),
                7 | 8 => Command::CancelOrder {
                    user,
                    pair: PairId(1),
                    // Ids are guesses: some hit open orders, some are rejected.
                    target: OrderRef::Id(OrderId(1 + (r >> 40) % (seq / 2).max(1))),
                },
                _ => Command::CancelAll {
                    user,
                    pair: PairId(1),
                },
            }
        }
    }
}

/// Child: recover, then journal + apply + acknowledge until killed.
fn child(dir: &str) {
    let data = DataDir::new(dir);
    data.create().unwrap();
    let (mut w, _report) = journal::Writer::open(journal::JournalConfig {
        segment_size: 256 * 1024,
        ..journal::JournalConfig::new(data.journal())
    })
    .unwrap();
    let rec = replica::recover(&data, u64::MAX, |_| {}).unwrap();
    let mut e = rec.engine;
    assert_eq!(
        e.last_seq(),
        w.last_seq(),
        "recovered engine behind the journal"
    );
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let stdout = std::io::stdout();
    loop {
        let first = w.last_seq() + 1;
        let n = 1 + rng(first ^ 0xabc) % 40;
        for seq in first..first + n {
            buf.clear();
            cmd_for(seq).encode_into(&mut buf);
            let got = w.append(seq * 1_000_000, &buf).unwrap();
            assert_eq!(got, seq);
        }
        let durable = w.commit().unwrap();
        for seq in first..=durable {
            out.clear();
            e.apply(seq, seq, &cmd_for(seq), &mut out);
        }
        {
            use std::io::Write;
            let mut lock = stdout.lock();
            writeln!(lock, "ACK {durable}").unwrap();
            lock.flush().unwrap();
        }
        if rng(durable).is_multiple_of(25) {
            replica::write_snapshot(&data, &e).unwrap();
        }
    }
}

#[test]
fn crash_child_entry() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
}

#[test]
fn sigkill_loop_loses_nothing_acknowledged_and_replay_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    let exe = std::env::current_exe().unwrap();
    let seed = std::env::var("MX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64);
    eprintln!("crash loop seed {seed} (set MX_CRASH_SEED to reproduce)");
    let mut acked = 0u64;
    let iterations = 20;
    for it in 0..iterations {
        let mut child = Proc::new(&exe)
            .args([
                "--exact",
                "crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let want_acks = 1 + rng(seed ^ it) % 60;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < want_acks && Instant::now() < deadline {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(v) = l.strip_prefix("ACK ") {
                        acked = acked.max(v.trim().parse().unwrap());
                        seen += 1;
                    }
                }
                _ => break,
            }
        }
        // SAFETY-free: plain kill(2) through std.
        child.kill().unwrap();
        let _ = child.wait();
        assert!(seen > 0, "iteration {it}: child acknowledged nothing");

        let rec = replica::recover(&data, u64::MAX, |_| {}).unwrap();
        let e = &rec.engine;
        assert!(
            e.last_seq() >= acked,
            "iteration {it}: acknowledged {acked} but recovered only to {}",
            e.last_seq()
        );
        e.check_invariants().unwrap();
        // Every record, acknowledged or not, is exactly the command of its seq.
        let mut r = journal::Reader::open(data.journal(), 1).unwrap();
        let mut n = 0;
        while let Some(entry) = r.next_entry().unwrap() {
            n += 1;
            assert_eq!(entry.seq, n);
            assert_eq!(
                entry.payload,
                &cmd_for(entry.seq).encode()[..],
                "record {} differs",
                entry.seq
            );
        }
        assert_eq!(n, e.last_seq());
        // A clean replay from the first record, ignoring snapshots, agrees.
        let mut clean = Engine::with_capacity(1 << 12);
        replica::replay(
            &mut clean,
            &data.journal(),
            u64::MAX,
            None,
            |_, _, _, _| {},
            |_| {},
        )
        .unwrap();
        assert_eq!(clean.last_seq(), e.last_seq());
        assert_eq!(
            clean.state_hash(),
            e.state_hash(),
            "iteration {it}: snapshot+replay != clean replay"
        );
        eprintln!(
            "iteration {it}: acked {acked}, recovered {} (snapshot {}, replayed {})",
            e.last_seq(),
            rec.snapshot_seq,
            rec.replayed
        );
    }
    assert!(acked > 100, "the loop did too little work: {acked}");
}
