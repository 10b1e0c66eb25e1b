//! Shared by the persister's table tests: a scripted journal and a writer
//! run until it has written a given record.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::Command;
use persister::replica::DataDir;
use persister::writer::{self, Follow, PersisterStatus, WriterConfig};

/// Append records up to `to` (from where the journal ends): `cmd(seq)` at
/// journal time `ts_ms(seq)`, committed once.
pub fn append_journal(
    data: &DataDir,
    to: u64,
    cmd: impl Fn(u64) -> Command,
    ts_ms: impl Fn(u64) -> u64,
) {
    data.create().unwrap();
    let (mut w, _) = journal::Writer::open(journal::JournalConfig {
        segment_size: 64 * 1024,
        ..journal::JournalConfig::new(data.journal())
    })
    .unwrap();
    let mut buf = Vec::new();
    for seq in w.last_seq() + 1..=to {
        buf.clear();
        cmd(seq).encode_into(&mut buf);
        w.append(ts_ms(seq) * 1_000_000, &buf).unwrap();
    }
    w.commit().unwrap();
    w.close().unwrap();
}

/// Run a writer until it has written `to`, then stop it.
pub fn write_to(url: &str, data: &DataDir, to: u64) {
    let cfg = WriterConfig {
        max_backoff: Duration::from_millis(300),
        ..WriterConfig::new(url, data.clone())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(PersisterStatus::default());
    let h = writer::spawn(cfg, Follow::Poll, stop.clone(), status.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while status.written_seq.load(Ordering::Relaxed) < to {
        assert!(!h.is_finished(), "writer ended early: {:?}", h.join());
        assert!(Instant::now() < deadline, "writer did not reach {to}");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Release);
    h.join().unwrap().unwrap();
}

/// SplitMix64: a seeded, reproducible stream for the scripted journals.
pub fn rng(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Start this test binary's `entry` test as a child writer (it reads
/// `"<url>|<data dir>"` from `child_env`), SIGKILL it after 40-200 ms, up to
/// `rounds` times or until the checkpoints reach `last`. Asserts that at
/// least three kills landed after a first commit, i.e. mid-run.
pub async fn sigkill_writer_children(
    entry: &str,
    child_env: &str,
    db: &persister::testdb::TestDb,
    data_dir: &std::path::Path,
    rounds: u64,
    last: u64,
) {
    use std::process::{Command as Proc, Stdio};
    let exe = std::env::current_exe().unwrap();
    let (mut kills, mut mid, mut at) = (0, 0, 0i64);
    for it in 0..rounds {
        let mut child = Proc::new(&exe)
            .args(["--exact", entry, "--nocapture", "--test-threads=1"])
            .env(child_env, format!("{}|{}", db.url(), data_dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(40 + rng(it) % 160)).await;
        child.kill().unwrap();
        let _ = child.wait();
        kills += 1;
        at = db
            .client()
            .query_one(
                "SELECT coalesce(max(last_seq), 0) FROM persister_checkpoints",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if at as u64 >= last {
            break;
        }
        if at > 0 {
            mid += 1;
        }
    }
    eprintln!("{kills} kills, checkpoint {at} before the final run");
    assert!(mid >= 3, "only {mid} kills landed after a first commit");
}

/// A BTCUSDT order of the random journals (writer, settlement and
/// recovery tests): a limit order at `price` ticks (GTC, or IOC when
/// `ioc`), or a market order when `price` is 0; `qty` in base units.
pub fn btc_order(
    user: engine::UserId,
    side: engine::Side,
    price: u64,
    qty: u64,
    ioc: bool,
    stp: engine::StpMode,
) -> Command {
    use engine::*;
    let market = price == 0;
    Command::PlaceOrder(NewOrder {
        user,
        pair: PairId(1),
        side,
        kind: if market {
            OrderType::Market
        } else {
            OrderType::Limit
        },
        tif: if ioc && !market {
            TimeInForce::Ioc
        } else {
            TimeInForce::Gtc
        },
        price: Price(price),
        qty: Qty(qty),
        quote_qty: 0,
        stop_price: Price(0),
        client_id: ClientOrderId::NONE,
        stp,
    })
}

/// BTCUSDT (base asset 1, quote asset 2): tick 0.01, step 0.001, maker
/// 0.1 %, taker 0.2 %, no notional or band limits. Tests change fields with
/// `PairSpec { .., ..btcusdt() }`.
pub fn btcusdt() -> engine::PairSpec {
    const ONE: u64 = 100_000_000;
    engine::PairSpec {
        symbol: "BTCUSDT".into(),
        base: engine::AssetId(1),
        quote: engine::AssetId(2),
        tick_units: 1_000_000,
        step_units: 100_000,
        min_qty_units: 100_000,
        max_qty_units: 1_000 * ONE,
        market_max_qty_units: 1_000 * ONE,
        min_notional_units: 0,
        max_notional_units: 0,
        min_price_ticks: 1,
        max_price_ticks: 1_000_000_000,
        maker_fee_e8: 100_000,
        taker_fee_e8: 200_000,
        price_band_pct: 0,
        status: engine::PairStatus::Trading,
    }
}
