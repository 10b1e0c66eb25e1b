//! Settlement batches written by the persister, from journals written here
//! with crafted timestamps, into real Postgres (each test its own
//! database):
//! * a scripted three-day journal (deposits, trades with maker and taker
//!   fees and a buyer's price improvement, a withdrawal with its fee, one
//!   pending over midnight, adjustments both ways, an order resting across
//!   midnight): every detail of two settled days and the reconciliation
//!   result are checked exactly against figures worked out by hand; an
//!   empty day settles COMPLETED with no details; refused settlements
//!   (again, today, unknown requester) write nothing; the same journal
//!   written in one batch, one record per batch, or with the writer
//!   stopped and restarted after every record gives identical rows;
//! * a tampered ledger (a fee row deleted, a balance chain broken, an
//!   earlier day's balance changed) makes the next batch FAILED with each
//!   finding counted and named;
//! * a generated five-day journal (thousands of orders, trades, deposits,
//!   withdrawals, adjustments; a settlement at every midnight): every batch
//!   reconciles, every detail equals an independent computation from the
//!   engine's events, and a writer SIGKILLed many times mid-batch and
//!   restarted writes exactly the rows of a clean run;
//! * `reconcile` checks the batches against the engine's settled days and
//!   a recomputation: clean after settlement (also from a snapshot taken
//!   after some settlements); a changed detail figure, a deleted detail, a
//!   deleted batch row and a batch row for a day never settled are each
//!   reported;
//! * every accepted settlement writes one `outbox_events` row
//!   (`settlement.completed` / `settlement.failed`) in its batch's
//!   transaction, exactly once across restarts and SIGKILLs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{rng, sigkill_writer_children};
use engine::*;
use persister::reconcile::{self, Difference};
use persister::replica::{self, DataDir};
use persister::testdb::TestDb;
use persister::writer::{self, Follow, PersisterStatus, WriterConfig};

const CHILD_ENV: &str = "MX_SETTLEMENT_WRITER_CHILD";
const ONE: u64 = 100_000_000;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 86_400_000;
/// 2024-01-14T00:00:00Z: the scripted journal's first day.
const D0: u64 = 1_705_190_400_000;
const BTC: AssetId = AssetId(1);
const USDT: AssetId = AssetId(2);

// ------------------------------------------------------------------ helpers

fn asset(symbol: &str, withdraw_fee_units: u64) -> AssetSpec {
    AssetSpec {
        symbol: symbol.into(),
        name: symbol.into(),
        decimals: 8,
        min_withdraw_units: 0,
        withdraw_fee_units,
        daily_withdraw_limit_units: 0,
        confirmations: 1,
        active: true,
    }
}

/// BTCUSDT: tick 0.01, step 0.00001, maker 0.1 %, taker 0.2 %.
fn btcusdt() -> PairSpec {
    PairSpec {
        step_units: 1_000,
        min_qty_units: 1_000,
        ..common::btcusdt()
    }
}

fn user(name: &str, roles: u32) -> Command {
    Command::CreateUser {
        username: name.into(),
        email: format!("{name}@example.com"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles,
    }
}

/// A limit order: `price` in whole USDT, `qty` in BTC units.
fn limit(user: u64, side: Side, tif: TimeInForce, price: u64, qty: u64) -> Command {
    Command::PlaceOrder(NewOrder {
        user: UserId(user),
        pair: PairId(1),
        side,
        kind: OrderType::Limit,
        tif,
        price: Price(price * 100),
        qty: Qty(qty),
        quote_qty: 0,
        stop_price: Price(0),
        client_id: ClientOrderId::NONE,
        stp: StpMode::ExpireMaker,
    })
}

fn deposit(user: u64, asset: AssetId, amount: u64, tx: &str) -> Command {
    Command::Deposit {
        user: UserId(user),
        asset,
        amount,
        tx_hash: tx.into(),
        confirmations: 1,
        by: None,
    }
}

fn settle(date: u64, by: u64) -> Command {
    Command::RunSettlement {
        date: date as u32,
        requested_by: UserId(by),
    }
}

/// Append records `last + 1 ..= upto` of `records` ((journal ms, command),
/// seq = index + 1) to the journal of `data`.
fn write_records(data: &DataDir, records: &[(u64, Command)], upto: usize) {
    data.create().unwrap();
    let (mut w, _) = journal::Writer::open(journal::JournalConfig {
        segment_size: 256 * 1024,
        ..journal::JournalConfig::new(data.journal())
    })
    .unwrap();
    let mut buf = Vec::new();
    for seq in w.last_seq() + 1..=upto as u64 {
        let (ts_ms, cmd) = &records[seq as usize - 1];
        buf.clear();
        cmd.encode_into(&mut buf);
        w.append(ts_ms * 1_000_000, &buf).unwrap();
        if seq % 50 == 0 {
            w.commit().unwrap();
        }
    }
    w.commit().unwrap();
    w.close().unwrap();
}

fn config(url: &str, data: &DataDir, max_batch: usize) -> WriterConfig {
    WriterConfig {
        max_batch,
        min_batch: max_batch.min(64),
        max_backoff: Duration::from_millis(300),
        ..WriterConfig::new(url, data.clone())
    }
}

/// Run a writer (own thread, polling the journal) until it has written
/// `to`, then stop it.
fn run_writer_to(cfg: WriterConfig, to: u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(PersisterStatus::default());
    let h = writer::spawn(cfg, Follow::Poll, stop.clone(), status.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while status.written_seq.load(Ordering::Relaxed) < to {
        assert!(
            !h.is_finished(),
            "writer ended early: {:?}",
            h.join().unwrap()
        );
        assert!(
            Instant::now() < deadline,
            "writer reached only {} of {to}",
            status.written_seq.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Release);
    h.join().unwrap().unwrap();
}

async fn write_all(url: &str, data: &DataDir, max_batch: usize, to: u64) {
    let cfg = config(url, data, max_batch);
    tokio::task::spawn_blocking(move || run_writer_to(cfg, to))
        .await
        .unwrap();
}

const TABLES: [&str; 6] = [
    "settlement_batches",
    "settlement_details",
    "transactions",
    "trades",
    "audit_logs",
    "outbox_events",
];

/// The settlement tables (and what they are computed from) as ordered row
/// texts.
async fn dump(c: &tokio_postgres::Client) -> BTreeMap<&'static str, Vec<String>> {
    c.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let mut out = BTreeMap::new();
    for t in TABLES {
        // Table names are the constants above.
        let rows = c
            .query(&format!("SELECT x::text FROM {t} x ORDER BY x::text"), &[])
            .await
            .unwrap();
        out.insert(t, rows.iter().map(|r| r.get::<_, String>(0)).collect());
    }
    out
}

#[track_caller]
fn assert_same(a: &BTreeMap<&str, Vec<String>>, b: &BTreeMap<&str, Vec<String>>, what: &str) {
    for t in TABLES {
        let (x, y) = (&a[t], &b[t]);
        assert_eq!(x.len(), y.len(), "{what}: table {t}: row counts differ");
        for (i, (r1, r2)) in x.iter().zip(y).enumerate() {
            assert_eq!(r1, r2, "{what}: table {t}: row {i} differs");
        }
    }
}

/// "12.5" -> units (8 decimals), signed.
fn u(s: &str) -> i128 {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let v =
        int.parse::<i128>().unwrap() * ONE as i128 + format!("{frac:0<8}").parse::<i128>().unwrap();
    if neg {
        -v
    } else {
        v
    }
}

/// One `settlement_details` row in units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Detail {
    opening: i128,
    bought: i128,
    sold: i128,
    trade: i128,
    fee: i128,
    net: i128,
    fee_income: i128,
    deposit: i128,
    withdrawal: i128,
    withdrawal_fee: i128,
    adjustment: i128,
    closing: i128,
    difference: i128,
}

const DETAIL_COLUMNS: [&str; 13] = [
    "opening_balance",
    "bought_amount",
    "sold_amount",
    "trade_amount",
    "fee_amount",
    "net_amount",
    "fee_income_amount",
    "deposit_amount",
    "withdrawal_amount",
    "withdrawal_fee_amount",
    "adjustment_amount",
    "closing_balance",
    "difference",
];

/// Details of a batch by (user, asset), amounts in units.
async fn details(c: &tokio_postgres::Client, batch: i64) -> BTreeMap<(u64, u32), Detail> {
    let cols: Vec<String> = DETAIL_COLUMNS
        .iter()
        .map(|c| format!("({c} * 100000000)::numeric(48,0)::text"))
        .collect();
    let rows = c
        .query(
            &format!(
                "SELECT user_id, asset_id, id, {} FROM settlement_details
                 WHERE batch_id = $1 ORDER BY user_id, asset_id",
                cols.join(", ")
            ),
            &[&batch],
        )
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        // Ids: batch << 32 | n, n counting (user, asset) in order.
        assert_eq!(r.get::<_, i64>(2), (batch << 32) + i as i64 + 1);
        let v = |k: usize| r.get::<_, String>(3 + k).parse::<i128>().unwrap();
        out.insert(
            (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u32),
            Detail {
                opening: v(0),
                bought: v(1),
                sold: v(2),
                trade: v(3),
                fee: v(4),
                net: v(5),
                fee_income: v(6),
                deposit: v(7),
                withdrawal: v(8),
                withdrawal_fee: v(9),
                adjustment: v(10),
                closing: v(11),
                difference: v(12),
            },
        );
    }
    out
}

/// A detail from its movements: trade = bought - sold, net = trade - fee.
#[allow(clippy::too_many_arguments)]
fn detail(
    opening: &str,
    bought: &str,
    sold: &str,
    fee: &str,
    fee_income: &str,
    deposit: &str,
    withdrawal: &str,
    withdrawal_fee: &str,
    adjustment: &str,
    closing: &str,
) -> Detail {
    let (bought, sold, fee) = (u(bought), u(sold), u(fee));
    Detail {
        opening: u(opening),
        bought,
        sold,
        trade: bought - sold,
        fee,
        net: bought - sold - fee,
        fee_income: u(fee_income),
        deposit: u(deposit),
        withdrawal: u(withdrawal),
        withdrawal_fee: u(withdrawal_fee),
        adjustment: u(adjustment),
        closing: u(closing),
        difference: 0,
    }
}

/// (status, date, total_trades, total_volume, account_count,
/// difference_count, journal_seq, requested_by, started_at ms,
/// completed_at ms, error_message, reconciliation_result).
type BatchRow = (
    String,
    String,
    i64,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    serde_json::Value,
);

async fn batch(c: &tokio_postgres::Client, id: i64) -> BatchRow {
    let r = c
        .query_one(
            "SELECT status, batch_date::text, total_trades, trim_scale(total_volume)::text,
                account_count, difference_count, journal_seq, requested_by,
                (extract(epoch FROM started_at) * 1000)::bigint,
                (extract(epoch FROM completed_at) * 1000)::bigint, error_message,
                reconciliation_result::text
             FROM settlement_batches WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
        r.get(7),
        r.get(8),
        r.get(9),
        r.get(10),
        serde_json::from_str(&r.get::<_, String>(11)).unwrap(),
    )
}

/// The SETTLEMENT outbox rows: (id, aggregate id, event type, status,
/// created ms, payload), by id.
async fn settlement_outbox(
    c: &tokio_postgres::Client,
) -> Vec<(i64, i64, String, String, i64, serde_json::Value)> {
    c.query(
        "SELECT id, aggregate_id, event_type, status,
            (extract(epoch FROM created_at) * 1000)::bigint, event_data::text
         FROM outbox_events WHERE aggregate_type = 'SETTLEMENT' ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            serde_json::from_str(&r.get::<_, String>(5)).unwrap(),
        )
    })
    .collect()
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
}

// ---------------------------------------------------------- the script

/// Three days, by the hour. Users: 1 alice, 2 bob, 3 carol, 4 root
/// (ADMIN); the fee account is the exchange's own, user 0.
fn script() -> Vec<(u64, Command)> {
    let d1 = D0 + DAY;
    let d2 = D0 + 2 * DAY;
    let day = |ms: u64| ms / DAY;
    vec![
        // ---- D0 2024-01-14
        (
            D0 + HOUR,
            Command::AddAsset {
                spec: asset("BTC", 10_000),
                by: None,
            },
        ), // 1
        (
            D0 + HOUR,
            Command::AddAsset {
                spec: asset("USDT", ONE),
                by: None,
            },
        ), // 2
        (
            D0 + HOUR,
            Command::AddPair {
                spec: Box::new(btcusdt()),
                by: None,
            },
        ), // 3
        (D0 + HOUR, user("alice", roles::TRADER)), // 4
        (D0 + HOUR, user("bob", roles::TRADER)),   // 5
        (D0 + HOUR, user("carol", roles::TRADER)), // 6
        (D0 + HOUR, user("root", roles::ADMIN)),   // 7
        (D0 + 2 * HOUR, deposit(1, BTC, 10 * ONE, "a-btc")), // 8
        (D0 + 2 * HOUR, deposit(2, USDT, 100_000 * ONE, "b-usdt")), // 9
        (
            D0 + 2 * HOUR,
            Command::SetKycLevel {
                user: UserId(1),
                level: 1,
                by: None,
            },
        ), // 10
        (
            D0 + 2 * HOUR,
            Command::SetKycLevel {
                user: UserId(2),
                level: 1,
                by: None,
            },
        ), // 11
        // Bob bids 2 BTC at 30000 (60000 USDT frozen); it rests across midnight.
        (
            D0 + 3 * HOUR,
            limit(2, Side::Buy, TimeInForce::Gtc, 30_000, 2 * ONE),
        ), // 12
        // Trade 1: alice sells 0.1 to it (taker fee 6 USDT, bob's 0.0001 BTC).
        (
            D0 + 4 * HOUR,
            limit(1, Side::Sell, TimeInForce::Ioc, 30_000, ONE / 10),
        ), // 13
        // ---- D1 2024-01-15
        (d1 + HOUR, deposit(3, USDT, 20_000 * ONE, "c-usdt")), // 14
        // Yesterday is settled while today goes on: batch 1.
        (d1 + 2 * HOUR, settle(day(D0), 4)), // 15
        // Trade 2: alice sells 1 BTC to bob's bid (60 USDT, 0.001 BTC fees).
        (
            d1 + 3 * HOUR,
            limit(1, Side::Sell, TimeInForce::Gtc, 30_000, ONE),
        ), // 16
        // Trade 3: alice asks 0.5 at 31000; carol bids 31500 and pays 31000
        // (250 USDT of price improvement released; fees 15.5 USDT, 0.001 BTC).
        (
            d1 + 4 * HOUR,
            limit(1, Side::Sell, TimeInForce::Gtc, 31_000, ONE / 2),
        ), // 17
        (
            d1 + 5 * HOUR,
            limit(3, Side::Buy, TimeInForce::Gtc, 31_500, ONE / 2),
        ), // 18
        // Alice withdraws 1 BTC (fee 0.0001 BTC), sent the same day.
        (
            d1 + 6 * HOUR,
            Command::RequestWithdrawal {
                user: UserId(1),
                asset: BTC,
                amount: ONE,
                address: "bc1-alice".into(),
            },
        ), // 19
        (
            d1 + 7 * HOUR,
            Command::CompleteWithdrawal {
                withdrawal: 1,
                tx_hash: "tx-w1".into(),
                by: None,
            },
        ), // 20
        (
            d1 + 8 * HOUR,
            Command::Adjust {
                user: UserId(3),
                asset: USDT,
                amount: ONE,
                credit: true,
                reason: "goodwill".into(),
                by: None,
            },
        ), // 21
        // Bob asks to withdraw 100 USDT (+1 fee frozen); sent tomorrow.
        (
            d1 + 9 * HOUR,
            Command::RequestWithdrawal {
                user: UserId(2),
                asset: USDT,
                amount: 100 * ONE,
                address: "0xbob".into(),
            },
        ), // 22
        (
            d1 + 10 * HOUR,
            Command::Adjust {
                user: UserId(1),
                asset: USDT,
                amount: 450_000_000,
                credit: false,
                reason: "correction".into(),
                by: None,
            },
        ), // 23
        // ---- D2 2024-01-16
        // Trade 4, on D2: carol sells 0.1 to bob's bid.
        (
            d2 + HOUR,
            limit(3, Side::Sell, TimeInForce::Ioc, 30_000, ONE / 10),
        ), // 24
        (
            d2 + 2 * HOUR,
            Command::CompleteWithdrawal {
                withdrawal: 2,
                tx_hash: "tx-w2".into(),
                by: None,
            },
        ), // 25
        (d2 + 3 * HOUR, settle(day(d1), 4)),      // 26: batch 2
        (d2 + 4 * HOUR, settle(day(d1), 4)),      // 27: already settled
        (d2 + 5 * HOUR, settle(day(d2), 4)),      // 28: today is not over
        (d2 + 6 * HOUR, settle(day(D0) - 9, 4)),  // 29: 2024-01-05, batch 3
        (d2 + 7 * HOUR, settle(day(D0) - 8, 99)), // 30: unknown requester
    ]
}

/// The D0 batch, worked out by hand.
fn expected_d0() -> BTreeMap<(u64, u32), Detail> {
    let z = "0";
    BTreeMap::from([
        // Fee account: 0.0001 BTC from bob, 6 USDT from alice.
        ((0, 1), detail(z, z, z, z, "0.0001", z, z, z, z, "0.0001")),
        ((0, 2), detail(z, z, z, z, "6", z, z, z, z, "6")),
        // Alice: deposit 10 BTC, sold 0.1; received 3000 - 6 USDT.
        ((1, 1), detail(z, z, "0.1", z, z, "10", z, z, z, "9.9")),
        ((1, 2), detail(z, "3000", z, "6", z, z, z, z, z, "2994")),
        // Bob: bought 0.1 BTC - 0.0001; deposit 100000, paid 3000 USDT.
        (
            (2, 1),
            detail(z, "0.1", z, "0.0001", z, z, z, z, z, "0.0999"),
        ),
        (
            (2, 2),
            detail(z, z, "3000", z, z, "100000", z, z, z, "97000"),
        ),
    ])
}

/// The D1 batch, worked out by hand.
fn expected_d1() -> BTreeMap<(u64, u32), Detail> {
    let z = "0";
    BTreeMap::from([
        // Fee account: 0.001 (bob) + 0.001 (carol) + 0.0001 (withdrawal)
        // BTC; 60 + 15.5 USDT (alice).
        (
            (0, 1),
            detail("0.0001", z, z, z, "0.0021", z, z, z, z, "0.0022"),
        ),
        ((0, 2), detail("6", z, z, z, "75.5", z, z, z, z, "81.5")),
        // Alice: sold 1 + 0.5 BTC, withdrew 1 (+0.0001 fee); received
        // 30000 + 15500 USDT less 60 + 15.5 fees, 4.5 debited.
        (
            (1, 1),
            detail("9.9", z, "1.5", z, z, z, "1", "0.0001", z, "7.3999"),
        ),
        (
            (1, 2),
            detail("2994", "45500", z, "75.5", z, z, z, z, "-4.5", "48414"),
        ),
        // Bob: bought 1 BTC less 0.001; paid 30000 USDT from the bid frozen
        // since D0; 101 USDT frozen for a withdrawal stays in the balance.
        (
            (2, 1),
            detail("0.0999", "1", z, "0.001", z, z, z, z, z, "1.0989"),
        ),
        (
            (2, 2),
            detail("97000", z, "30000", z, z, z, z, z, z, "67000"),
        ),
        // Carol: bought 0.5 BTC less 0.001; deposit 20000, paid 15500,
        // credited 1 USDT.
        ((3, 1), detail(z, "0.5", z, "0.001", z, z, z, z, z, "0.499")),
        (
            (3, 2),
            detail(z, z, "15500", z, z, "20000", z, z, "1", "4501"),
        ),
    ])
}

fn asset_json(v: &serde_json::Value, symbol: &str) -> serde_json::Value {
    v["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["asset"] == symbol)
        .unwrap_or_else(|| panic!("no {symbol} in {v}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settles_scripted_days_exactly_and_deterministically() {
    let records = script();
    let n = records.len();
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    write_records(&data, &records, n);
    let db = TestDb::create_migrated().await;
    write_all(db.url(), &data, 1_000, n as u64).await;
    let c = db.client();

    // Three batches: D0, D1 and the empty day; the refusals wrote nothing.
    assert_eq!(count(c, "SELECT count(*) FROM settlement_batches").await, 3);
    let d0 = batch(c, 1).await;
    assert_eq!(
        (
            &d0.0[..],
            &d0.1[..],
            d0.2,
            &d0.3[..],
            d0.4,
            d0.5,
            d0.6,
            d0.7
        ),
        ("COMPLETED", "2024-01-14", 1, "3000", 6, 0, 15, 4)
    );
    let at = (D0 + DAY + 2 * HOUR) as i64;
    assert_eq!((d0.8, d0.9), (at, at));
    assert_eq!(d0.10, None);
    assert_eq!(details(c, 1).await, expected_d0());

    let d1 = batch(c, 2).await;
    assert_eq!(
        (
            &d1.0[..],
            &d1.1[..],
            d1.2,
            &d1.3[..],
            d1.4,
            d1.5,
            d1.6,
            d1.7
        ),
        ("COMPLETED", "2024-01-15", 2, "45500", 8, 0, 26, 4)
    );
    assert_eq!(d1.8, (D0 + 2 * DAY + 3 * HOUR) as i64);
    assert_eq!(d1.10, None);
    assert_eq!(details(c, 2).await, expected_d1());
    // The reconciliation result: per asset sums, all checks at zero.
    let r = &d1.11;
    assert_eq!(r["balanced"], true, "{r}");
    assert_eq!(r["differences"], 0);
    assert_eq!(r["accounts"], 8);
    assert_eq!(r["trades"], 2);
    assert_eq!(r["balance_mismatches"], 0);
    assert_eq!(r["opening_gaps"], 0);
    assert_eq!(r["mismatched"], serde_json::json!([]));
    let ledger_rows = count(
        c,
        "SELECT count(*) FROM transactions
         WHERE created_at >= '2024-01-15T00:00:00Z' AND created_at < '2024-01-16T00:00:00Z'",
    )
    .await;
    assert_eq!(r["ledger_rows"], ledger_rows);
    assert_eq!(
        asset_json(r, "BTC"),
        serde_json::json!({
            "asset_id": 1, "asset": "BTC", "accounts": 4,
            "opening": "10.00000000", "closing": "9.00000000",
            "bought": "1.50000000", "sold": "1.50000000",
            "fees_paid": "0.00200000", "withdrawal_fees_paid": "0.00010000",
            "fee_income": "0.00210000", "deposits": "0.00000000",
            "withdrawals": "1.00000000", "adjustments": "0.00000000",
            "trade_imbalance": "0", "fee_imbalance": "0", "supply_difference": "0",
            "balance_mismatches": 0, "opening_gaps": 0
        })
    );
    assert_eq!(
        asset_json(r, "USDT"),
        serde_json::json!({
            "asset_id": 2, "asset": "USDT", "accounts": 4,
            "opening": "100000.00000000", "closing": "119996.50000000",
            "bought": "45500.00000000", "sold": "45500.00000000",
            "fees_paid": "75.50000000", "withdrawal_fees_paid": "0.00000000",
            "fee_income": "75.50000000", "deposits": "20000.00000000",
            "withdrawals": "0.00000000", "adjustments": "-3.50000000",
            "trade_imbalance": "0", "fee_imbalance": "0", "supply_difference": "0",
            "balance_mismatches": 0, "opening_gaps": 0
        })
    );

    // A day without activity: COMPLETED, nothing to detail.
    let empty = batch(c, 3).await;
    assert_eq!(
        (
            &empty.0[..],
            &empty.1[..],
            empty.2,
            &empty.3[..],
            empty.4,
            empty.5
        ),
        ("COMPLETED", "2024-01-05", 0, "0", 0, 0)
    );
    assert_eq!(empty.11["assets"], serde_json::json!([]));
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM settlement_details WHERE batch_id = 3"
        )
        .await,
        0
    );
    // One outbox event per accepted settlement, in the batch's transaction,
    // with the stored status and totals; its id is a row id of the
    // settling record.
    let ob = settlement_outbox(c).await;
    assert_eq!(ob.len(), 3, "{ob:?}");
    let (id, aggregate, kind, status, created, payload) = &ob[0];
    assert_eq!(*id, 15 << 16);
    assert_eq!(
        (*aggregate, &kind[..], &status[..]),
        (1, "settlement.completed", "PENDING")
    );
    assert_eq!(*created, (D0 + DAY + 2 * HOUR) as i64);
    assert_eq!(
        *payload,
        serde_json::json!({
            "batch_id": 1, "date": "2024-01-14", "status": "COMPLETED",
            "total_trades": 1, "total_volume": "3000", "accounts": 6,
            "differences": 0, "requested_by": 4, "journal_seq": 15
        })
    );
    assert_eq!(
        (ob[1].0, ob[1].1, &ob[1].2[..]),
        (26 << 16, 2, "settlement.completed")
    );
    assert_eq!(ob[1].5["total_volume"], "45500");
    assert_eq!(ob[1].5["accounts"], 8);
    assert_eq!(
        (ob[2].1, &ob[2].5["date"]),
        (3, &serde_json::json!("2024-01-05"))
    );
    assert_eq!(ob[2].5["total_trades"], 0);
    // Audited once per accepted settlement.
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM audit_logs WHERE action = 'settlement.run' AND resource_type = 'SETTLEMENT'"
        )
        .await,
        3
    );
    // ... each naming the admin who ran it.
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM audit_logs WHERE action = 'settlement.run' AND user_id = 4"
        )
        .await,
        3
    );

    // The same journal one record per transaction, and with the writer
    // stopped and restarted after every record: the same rows.
    let clean = dump(c).await;
    let single = TestDb::create_migrated().await;
    write_all(single.url(), &data, 1, n as u64).await;
    assert_same(&clean, &dump(single.client()).await, "one record per batch");
    let tmp2 = tempfile::tempdir().unwrap();
    let data2 = DataDir::new(tmp2.path());
    let restarted = TestDb::create_migrated().await;
    for k in 1..=n {
        write_records(&data2, &records, k);
        write_all(restarted.url(), &data2, 1_000, k as u64).await;
    }
    assert_same(
        &clean,
        &dump(restarted.client()).await,
        "restart per record",
    );
    single.drop_db().await;
    restarted.drop_db().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_ledger_fails_reconciliation_with_each_finding() {
    let records = script();
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    // Up to the record before D1's settlement.
    write_records(&data, &records, 25);
    let db = TestDb::create_migrated().await;
    write_all(db.url(), &data, 1_000, 25).await;
    let c = db.client();
    c.batch_execute(
        // The fee account's 15.5 USDT of trade 3 vanishes: fees paid no
        // longer match the fee income, the supply is 15.5 short.
        "DELETE FROM transactions WHERE user_id = 0 AND asset_id = 2 AND type = 'FEE_INCOME'
            AND reference_id = 3;
         -- Carol's adjustment row starts 1 USDT above where her balance was.
         UPDATE transactions SET balance_before = balance_before + 1,
            balance_after = balance_after + 1
            WHERE user_id = 3 AND asset_id = 2 AND type = 'ADJUSTMENT';
         -- Bob's BTC on D0 ends 0.5 above where D1 starts.
         UPDATE transactions SET balance_before = balance_before + 0.5,
            balance_after = balance_after + 0.5
            WHERE user_id = 2 AND asset_id = 1 AND type = 'TRADE' AND reference_id = 1;",
    )
    .await
    .unwrap();
    write_records(&data, &records, records.len());
    write_all(db.url(), &data, 1_000, records.len() as u64).await;

    let b = batch(c, 2).await;
    assert_eq!((&b.0[..], b.4, b.5), ("FAILED", 8, 4), "{:?}", b);
    let msg = b.10.clone().unwrap();
    assert!(
        msg.starts_with("reconciliation found 4 difference(s): 1 account(s) whose movements do not explain the closing balance, 1 opening gap(s), 0 asset(s) whose trades do not net to zero, 1 whose fees paid differ from the fee income, 1 whose supply change"),
        "{msg}"
    );
    let r = &b.11;
    assert_eq!(r["balanced"], false);
    assert_eq!(r["differences"], 4);
    assert_eq!(r["balance_mismatches"], 1);
    assert_eq!(r["opening_gaps"], 1);
    assert_eq!(
        r["mismatched"],
        serde_json::json!([
            {"user_id": 2, "asset_id": 1, "difference": "0", "opening_gaps": 1},
            {"user_id": 3, "asset_id": 2, "difference": "1", "opening_gaps": 0}
        ])
    );
    let usdt = asset_json(r, "USDT");
    assert_eq!(
        (
            &usdt["fees_paid"],
            &usdt["fee_income"],
            &usdt["fee_imbalance"],
            &usdt["supply_difference"],
            &usdt["balance_mismatches"]
        ),
        (
            &serde_json::json!("75.50000000"),
            &serde_json::json!("60.00000000"),
            &serde_json::json!("15.5"),
            &serde_json::json!("-14.5"),
            &serde_json::json!(1)
        )
    );
    assert_eq!(asset_json(r, "BTC")["opening_gaps"], 1);
    // The details say where: carol's USDT is 1 unexplained, the fee
    // account's USDT lacks the 15.5.
    let d = details(c, 2).await;
    assert_eq!(d[&(3, 2)].difference, u("1"));
    assert_eq!(d[&(0, 2)].fee_income, u("60"));
    assert_eq!(d[&(0, 2)].difference, 0);
    // The batch written before the tampering is untouched.
    assert_eq!(batch(c, 1).await.0, "COMPLETED");
    // The outbox says so too.
    let ob = settlement_outbox(c).await;
    assert_eq!(
        ob.iter()
            .map(|o| (
                o.1,
                &o.2[..],
                o.5["status"].as_str().unwrap(),
                o.5["differences"].as_i64().unwrap()
            ))
            .collect::<Vec<_>>(),
        vec![
            (1, "settlement.completed", "COMPLETED", 0),
            (2, "settlement.failed", "FAILED", 4),
            (3, "settlement.completed", "COMPLETED", 0)
        ]
    );
    db.drop_db().await;
}

/// The settlement differences of a reconciliation, as display lines.
fn settlement_lines(r: &reconcile::Report) -> Vec<String> {
    r.differences
        .iter()
        .filter(|d| matches!(d, Difference::Settlement(_)))
        .map(|d| d.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_checks_every_settlement_against_the_engine_and_a_recomputation() {
    let records = script();
    let n = records.len();
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    write_records(&data, &records, n);
    let mut db = TestDb::create_migrated().await;
    write_all(db.url(), &data, 1_000, n as u64).await;

    let r = reconcile::reconcile(db.client_mut(), &data).await.unwrap();
    assert_eq!(r.seq, n as u64);
    assert_eq!(r.settlements_checked, 3);
    assert!(r.differences.is_empty(), "{:#?}", r.differences);

    // A stored figure changed (the difference column kept consistent, so
    // only the recomputation can tell).
    db.client()
        .batch_execute(
            "UPDATE settlement_details SET closing_balance = closing_balance + 1,
                difference = difference + 1
             WHERE batch_id = 2 AND user_id = 3 AND asset_id = 2",
        )
        .await
        .unwrap();
    let r = reconcile::reconcile(db.client_mut(), &data).await.unwrap();
    let lines = settlement_lines(&r);
    assert_eq!(r.differences.len(), lines.len(), "{lines:?}");
    assert_eq!(
        lines,
        [
            "settlement 2024-01-15 user 3 asset 2 closing_balance: expected 4501 != postgres 4502",
            "settlement 2024-01-15 user 3 asset 2 difference: expected 0 != postgres 1",
        ]
    );
    // A detail row gone.
    db.client()
        .batch_execute(
            "DELETE FROM settlement_details WHERE batch_id = 1 AND user_id = 0 AND asset_id = 2",
        )
        .await
        .unwrap();
    let lines = settlement_lines(&reconcile::reconcile(db.client_mut(), &data).await.unwrap());
    assert_eq!(
        lines,
        [
            "settlement 2024-01-14 user 0 asset 2 detail row: expected present != postgres none",
            "settlement 2024-01-15 user 3 asset 2 closing_balance: expected 4501 != postgres 4502",
            "settlement 2024-01-15 user 3 asset 2 difference: expected 0 != postgres 1",
        ]
    );
    // The batch row of a settled day deleted (its details go with it), and
    // a batch row for a day the engine never settled.
    db.client()
        .batch_execute(
            "DELETE FROM settlement_batches WHERE id = 2;
             INSERT INTO settlement_batches (id, batch_date, status, started_at)
             VALUES (99, '2024-01-13', 'COMPLETED', '2024-01-14T01:00:00Z');",
        )
        .await
        .unwrap();
    let r = reconcile::reconcile(db.client_mut(), &data).await.unwrap();
    assert_eq!(r.settlements_checked, 4);
    let lines = settlement_lines(&r);
    assert_eq!(
        lines,
        [
            "settlement 2024-01-13 batch row: expected none (the engine never settled this day) != postgres batch 99 (COMPLETED)",
            "settlement 2024-01-14 user 0 asset 2 detail row: expected present != postgres none",
            "settlement 2024-01-15 batch row: expected batch 2 != postgres none",
        ]
    );
    // Account differences are still reported alongside.
    db.client()
        .batch_execute(
            "UPDATE accounts SET available_balance = available_balance + 1 WHERE user_id = 1 AND asset_id = 1",
        )
        .await
        .unwrap();
    let r = reconcile::reconcile(db.client_mut(), &data).await.unwrap();
    assert_eq!(r.differences.len(), 4, "{:#?}", r.differences);
    db.drop_db().await;
}

// ------------------------------------------------------ generated journal

const USERS: u64 = 8;
/// 4 minutes between records: 360 a day, the first of each day at midnight.
const STEP_MS: u64 = 4 * 60 * 1000;
const GENERATED: u64 = 1_850;

fn gen_ts(seq: u64) -> u64 {
    D0 + seq * STEP_MS
}

/// The command journaled at `seq`: a pure function of `seq`. At every
/// midnight the day before is settled (by a trader: the engine does not
/// check roles), right after it a second time (refused), an hour later
/// today (refused).
fn gen_cmd(seq: u64) -> Command {
    let day = gen_ts(seq) / DAY;
    let first_of_day = gen_ts(seq - 1) / DAY != day;
    let day_of_prev = gen_ts(seq.saturating_sub(2)) / DAY;
    match seq {
        1 => Command::AddAsset {
            spec: asset("BTC", 10_000),
            by: None,
        },
        2 => Command::AddAsset {
            spec: asset("USDT", ONE),
            by: None,
        },
        3 => Command::AddPair {
            spec: Box::new(btcusdt()),
            by: None,
        },
        4..=11 => user(&format!("trader{}", seq - 3), roles::TRADER),
        12..=27 => {
            let i = seq - 12;
            deposit(
                i / 2 + 1,
                AssetId(1 + (i % 2) as u32),
                1_000_000 * ONE,
                &format!("fund-{i}"),
            )
        }
        28..=35 => Command::SetKycLevel {
            user: UserId(seq - 27),
            level: 1,
            by: None,
        },
        _ if first_of_day => settle(day - 1, 1 + seq % USERS),
        _ if day_of_prev != day && gen_ts(seq - 1) / DAY == day => settle(day - 1, 1),
        _ if seq % 360 == 15 => settle(day, 2),
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
            match seq % 41 {
                0 => {
                    return Command::Adjust {
                        user,
                        asset: AssetId(1 + (r % 2) as u32),
                        amount: 5 * ONE + r % 1000,
                        credit: (r >> 5) & 1 == 0,
                        reason: format!("correction {seq}"),
                        by: None,
                    }
                }
                7 => {
                    return Command::RequestWithdrawal {
                        user,
                        asset: AssetId(1 + (r % 2) as u32),
                        amount: ONE + r % 1000,
                        address: format!("addr-{seq}"),
                    }
                }
                // Withdrawal k is requested at 41k + 7: sent (odd k) or
                // rejected (even k) at 41k + 19, refused again at 41k + 30.
                19 | 30 if (seq / 41) % 2 == 1 => {
                    return Command::CompleteWithdrawal {
                        withdrawal: seq / 41,
                        tx_hash: format!("tx-{seq}"),
                        by: None,
                    }
                }
                19 | 30 => {
                    return Command::RejectWithdrawal {
                        withdrawal: seq / 41,
                        by: None,
                    }
                }
                33 => {
                    return deposit(
                        user.0,
                        AssetId(1 + (r % 2) as u32),
                        ONE,
                        &format!("d-{seq}"),
                    )
                }
                _ => {}
            }
            match (r >> 32) % 10 {
                0..=5 => common::btc_order(
                    user,
                    side,
                    price,
                    qty,
                    (r >> 40).is_multiple_of(5),
                    if (r >> 44).is_multiple_of(7) {
                        StpMode::None
                    } else {
                        StpMode::ExpireMaker
                    },
                ),
                6 => common::btc_order(user, side, 0, qty, false, StpMode::ExpireMaker),
                7 => Command::CancelOrder {
                    user,
                    pair: PairId(1),
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

fn generated() -> Vec<(u64, Command)> {
    (1..=GENERATED).map(|s| (gen_ts(s), gen_cmd(s))).collect()
}

/// Details of every settled day computed from the engine's events (not
/// from SQL): date -> (user, asset) -> detail.
/// Settled date -> (batch id, details by (user, asset)).
type Expected = BTreeMap<u32, (u64, BTreeMap<(u64, u32), Detail>)>;

fn model(data: &DataDir) -> (Expected, usize) {
    let mut e = Engine::with_capacity(1 << 12);
    let mut running: BTreeMap<(u64, u32), i128> = BTreeMap::new();
    let mut days: BTreeMap<u64, BTreeMap<(u64, u32), Detail>> = BTreeMap::new();
    let mut settled = BTreeMap::new();
    let mut trades = 0usize;
    replica::replay(
        &mut e,
        &data.journal(),
        u64::MAX,
        None,
        |_, ts, _, evs| {
            let day = days.entry(ts / DAY).or_default();
            // First movement of the day: opening = closing = the balance so far.
            let touch = |day: &mut BTreeMap<(u64, u32), Detail>,
                         running: &BTreeMap<(u64, u32), i128>,
                         key: (u64, u32)| {
                let open = running.get(&key).copied().unwrap_or(0);
                day.entry(key).or_insert_with(|| Detail {
                    opening: open,
                    closing: open,
                    ..Detail::default()
                });
            };
            for ev in evs {
                match ev {
                    Event::Trade(t) => {
                        trades += 1;
                        let (buyer, seller) = if t.buyer_is_maker() {
                            (t.maker_user, t.taker_user)
                        } else {
                            (t.taker_user, t.maker_user)
                        };
                        let (buyer_fee, seller_fee) = if t.buyer_is_maker() {
                            (t.maker_fee, t.taker_fee)
                        } else {
                            (t.taker_fee, t.maker_fee)
                        };
                        let legs = [
                            ((buyer.0, 1), t.qty.0 as i128, 0, buyer_fee as i128),
                            ((buyer.0, 2), 0, t.quote_qty as i128, 0),
                            ((seller.0, 1), 0, t.qty.0 as i128, 0),
                            ((seller.0, 2), t.quote_qty as i128, 0, seller_fee as i128),
                        ];
                        for (key, bought, sold, fee) in legs {
                            touch(day, &running, key);
                            let a = day.get_mut(&key).unwrap();
                            a.bought += bought;
                            a.sold += sold;
                            a.fee += fee;
                        }
                    }
                    Event::Balance(b) => {
                        let key = (b.user.0, b.asset.0);
                        let before = b.available_before as i128 + b.frozen_before as i128;
                        let after = b.available_after as i128 + b.frozen_after as i128;
                        let moved = (b.available_before != b.available_after)
                            || (b.frozen_before != b.frozen_after);
                        assert_eq!(running.get(&key).copied().unwrap_or(0), before);
                        if moved {
                            touch(day, &running, key);
                        }
                        running.insert(key, after);
                        let Some(a) = day.get_mut(&key) else { continue };
                        a.closing = after;
                        let delta = after - before;
                        match b.cause {
                            BalanceCause::TradeFee(_) => a.fee_income += delta,
                            BalanceCause::Deposit(_) => a.deposit += delta,
                            BalanceCause::Adjustment => a.adjustment += delta,
                            BalanceCause::WithdrawalSent(w) => {
                                // The fee goes to the fee account in the
                                // same command.
                                let fee = evs
                                    .iter()
                                    .find_map(|x| match x {
                                        Event::Balance(f)
                                            if f.cause == BalanceCause::WithdrawalFee(w) =>
                                        {
                                            Some(
                                                f.available_after as i128
                                                    - f.available_before as i128,
                                            )
                                        }
                                        _ => None,
                                    })
                                    .unwrap_or(0);
                                a.withdrawal += -delta - fee;
                                a.withdrawal_fee += fee;
                            }
                            BalanceCause::WithdrawalFee(_) => a.fee_income += delta,
                            _ => {}
                        }
                    }
                    Event::SettlementRequested { id, date, .. } => {
                        settled.insert(*date, (*id, BTreeMap::new()));
                    }
                    _ => {}
                }
            }
        },
        |_| {},
    )
    .unwrap();
    // Settled days are over before their batch: fill them in at the end.
    for (date, (_, out)) in settled.iter_mut() {
        for (key, d) in days.get(&(*date as u64)).into_iter().flatten() {
            let mut d = d.clone();
            d.trade = d.bought - d.sold;
            d.net = d.trade - d.fee;
            out.insert(*key, d);
        }
    }
    (settled, trades)
}

#[test]
fn settlement_writer_child_entry() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (url, dir) = spec.split_once('|').unwrap();
        let data = DataDir::new(dir);
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(PersisterStatus::default());
        let r = writer::run(config(url, &data, 7), Follow::Poll, stop, status);
        panic!("writer returned: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_days_reconcile_match_the_engine_and_survive_sigkill() {
    let records = generated();
    let n = records.len() as u64;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    write_records(&data, &records, records.len());
    // A snapshot in the middle (settled days in it): restarts rebuild from it.
    let rec = replica::recover(&data, 900, |_| {}).unwrap();
    assert!(rec.engine.settlements().count() >= 2);
    replica::write_snapshot(&data, &rec.engine).unwrap();

    let clean = TestDb::create_migrated().await;
    write_all(clean.url(), &data, 500, n).await;
    let c = clean.client();

    // Every batch reconciles and equals the engine-side computation.
    let (expected, trades) = model(&data);
    assert!(trades > 300, "too little activity: {trades} trades");
    assert_eq!(expected.len(), 5, "{:?}", expected.keys());
    assert_eq!(
        count(c, "SELECT count(*) FROM settlement_batches").await,
        expected.len() as i64
    );
    for (date, (id, want)) in &expected {
        let b = batch(c, *id as i64).await;
        assert_eq!(b.1, engine::settlement::format_date(*date));
        assert_eq!(
            (&b.0[..], b.5),
            ("COMPLETED", 0),
            "batch {id}: {:?} {}",
            b.10,
            b.11
        );
        assert_eq!(b.4, want.len() as i64, "batch {id}");
        let got = details(c, *id as i64).await;
        for (key, w) in want {
            assert_eq!(got.get(key), Some(w), "batch {id} (user, asset) {key:?}");
        }
        assert_eq!(got.len(), want.len());
        assert!(
            got.values()
                .any(|d| d.withdrawal > 0 && d.withdrawal_fee > 0),
            "batch {id} without a withdrawal"
        );
        // From the second day on, the fee account opens with a balance.
        assert!(
            *date == (D0 / DAY) as u32 || got.values().any(|d| d.fee_income > 0 && d.opening > 0)
        );
    }
    assert!(
        count(
            c,
            "SELECT count(*) FROM settlement_details WHERE adjustment_amount < 0"
        )
        .await
            > 0
    );

    // SIGKILL the writer many times mid-batch; restart; same rows.
    let crashed = TestDb::create_migrated().await;
    sigkill_writer_children(
        "settlement_writer_child_entry",
        CHILD_ENV,
        &crashed,
        tmp.path(),
        60,
        n,
    )
    .await;
    write_all(crashed.url(), &data, 7, n).await;
    assert_same(&dump(c).await, &dump(crashed.client()).await, "SIGKILL");
    // Reconcile from the snapshot (settlements before it checked with the
    // bounds stored in their batch rows, later ones with the replay's).
    let mut clean = clean;
    let r = reconcile::reconcile(clean.client_mut(), &data)
        .await
        .unwrap();
    assert_eq!(r.settlements_checked, expected.len());
    assert!(r.differences.is_empty(), "{:#?}", r.differences);
    // Exactly one outbox event per batch after all those restarts.
    assert_eq!(
        count(
            crashed.client(),
            "SELECT count(DISTINCT aggregate_id) FROM outbox_events WHERE aggregate_type = 'SETTLEMENT'"
        )
        .await,
        expected.len() as i64
    );
    assert_eq!(
        count(
            crashed.client(),
            "SELECT count(*) FROM outbox_events WHERE aggregate_type = 'SETTLEMENT'"
        )
        .await,
        expected.len() as i64
    );
    clean.drop_db().await;
    crashed.drop_db().await;
}
