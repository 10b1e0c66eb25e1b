//! The Postgres writer end to end, on real journals and real Postgres (each
//! test its own database):
//! * a few thousand generated commands (spanning three old months) written
//!   out: row counts and sums equal the engine's, klines and the 24 h
//!   ticker equal figures aggregated in SQL from the trades table,
//!   reconciliation is clean;
//! * candles built over many small batches equal the trades' and a run in
//!   one batch;
//! * the writer SIGKILLed many times mid-batch (child process) and restarted:
//!   the final tables (klines and ticker_24hr included) equal a clean run's;
//! * Postgres cut off through a TCP proxy the test controls, then restored:
//!   the writer retries, catches up, and the tables equal a clean run's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{rng, sigkill_writer_children};
use engine::*;
use persister::reconcile;
use persister::replica::{self, DataDir};
use persister::testdb::TestDb;
use persister::writer::{self, Follow, PersisterStatus, WriterConfig};

const CHILD_ENV: &str = "MX_PERSIST_WRITER_CHILD";
const ONE: u64 = 100_000_000;
const USERS: u64 = 8;
/// 2024-01-15T00:00:00Z: the journal starts in an old month.
const BASE_MS: u64 = 1_705_276_800_000;
/// 45 minutes between records: 3000 records span about three months.
const STEP_MS: u64 = 45 * 60 * 1000;

/// The command journaled at `seq`: a pure function of `seq`.
fn cmd_for(seq: u64) -> Command {
    let asset = |s: &str, fee: u64| AssetSpec {
        symbol: s.into(),
        name: s.into(),
        decimals: 8,
        min_withdraw_units: 0,
        withdraw_fee_units: fee,
        daily_withdraw_limit_units: 0,
        confirmations: 2,
        active: true,
    };
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
            spec: Box::new(common::btcusdt()),
            by: None,
        },
        4..=11 => Command::CreateUser {
            username: format!("trader{}", seq - 3),
            email: format!("t{}@example.com", seq - 3),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            roles: roles::TRADER,
        },
        // Each deposit posted twice: pending (1 of 2 confirmations), then credited.
        12..=43 => {
            let i = (seq - 12) / 2;
            let u = i / 2 + 1;
            Command::Deposit {
                user: UserId(u),
                asset: AssetId(1 + (i % 2) as u32),
                amount: 1_000_000 * ONE,
                tx_hash: format!("fund-{i}"),
                confirmations: 1 + ((seq - 12) % 2) as u32,
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
            match seq % 97 {
                0 => {
                    return Command::Adjust {
                        user,
                        asset: AssetId(1 + (r % 2) as u32),
                        amount: 5 * ONE,
                        credit: (r >> 5) & 1 == 0,
                        reason: format!("correction {seq}"),
                        by: None,
                    }
                }
                13 => {
                    return Command::RequestWithdrawal {
                        user,
                        asset: AssetId(1 + (r % 2) as u32),
                        amount: ONE,
                        address: format!("addr-{seq}"),
                    }
                }
                50 => {
                    return Command::CompleteWithdrawal {
                        withdrawal: 1 + (seq / 97) % 20,
                        tx_hash: format!("tx-{seq}"),
                        by: None,
                    }
                }
                70 => {
                    return Command::RejectWithdrawal {
                        withdrawal: 1 + (seq / 97 + 3) % 20,
                        by: None,
                    }
                }
                80 => {
                    return Command::SetPairStatus {
                        pair: PairId(1),
                        status: PairStatus::Trading,
                        by: None,
                    }
                }
                90 => {
                    return Command::SetKycLevel {
                        user,
                        level: 1 + (r % 3) as u8,
                        by: None,
                    }
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
                    StpMode::ExpireMaker,
                ),
                6 => common::btc_order(user, side, 0, qty, false, StpMode::ExpireMaker),
                7 => Command::AmendQty {
                    user,
                    pair: PairId(1),
                    target: OrderRef::Id(OrderId(1 + (r >> 40) % (seq / 2).max(1))),
                    new_qty: Qty(100_000),
                },
                8 => Command::CancelOrder {
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

/// Journal records `from..=to` into `data` (group commits of 50), one
/// every [`STEP_MS`].
fn write_journal(data: &DataDir, to: u64) {
    write_journal_every(data, to, STEP_MS);
}

/// The journal writer of `data` (small segments: tests cross them).
fn journal_writer(data: &DataDir) -> journal::Writer {
    data.create().unwrap();
    journal::Writer::open(journal::JournalConfig {
        segment_size: 256 * 1024,
        ..journal::JournalConfig::new(data.journal())
    })
    .unwrap()
    .0
}

/// Journal records `from..=to` into `data`, one every `step_ms`.
fn write_journal_every(data: &DataDir, to: u64, step_ms: u64) {
    let mut w = journal_writer(data);
    let mut buf = Vec::new();
    for seq in w.last_seq() + 1..=to {
        buf.clear();
        cmd_for(seq).encode_into(&mut buf);
        w.append((BASE_MS + seq * step_ms) * 1_000_000, &buf)
            .unwrap();
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

/// Run a writer (own thread, polling the journal) until it has written `to`.
fn run_writer_to(cfg: WriterConfig, to: u64, timeout: Duration) -> Arc<PersisterStatus> {
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(PersisterStatus::default());
    let h = writer::spawn(cfg, Follow::Poll, stop.clone(), status.clone()).unwrap();
    let deadline = Instant::now() + timeout;
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
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Release);
    h.join().unwrap().unwrap();
    status
}

/// [`run_writer_to`] with [`config`] from an async test (two minutes at most).
async fn write_all(url: &str, data: &DataDir, max_batch: usize, to: u64) {
    let cfg = config(url, data, max_batch);
    tokio::task::spawn_blocking(move || run_writer_to(cfg, to, Duration::from_secs(120)))
        .await
        .unwrap();
}

const TABLES: [&str; 14] = [
    "users",
    "user_roles",
    "assets",
    "trading_pairs",
    "accounts",
    "transactions",
    "balance_freezes",
    "deposit_withdrawals",
    "orders",
    "trades",
    "audit_logs",
    "outbox_events",
    "klines",
    "ticker_24hr",
];

/// Every main table as ordered row texts.
async fn dump(client: &tokio_postgres::Client) -> BTreeMap<&'static str, Vec<String>> {
    let mut out = BTreeMap::new();
    // Timestamps print in the session's zone: the same for every dump.
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    for t in TABLES {
        // Table names are the constants above; no value is spliced in.
        let rows = client
            .query(&format!("SELECT x::text FROM {t} x ORDER BY x::text"), &[])
            .await
            .unwrap();
        out.insert(t, rows.iter().map(|r| r.get::<_, String>(0)).collect());
    }
    out
}

fn assert_same(a: &BTreeMap<&str, Vec<String>>, b: &BTreeMap<&str, Vec<String>>) {
    for t in TABLES {
        let (x, y) = (&a[t], &b[t]);
        assert_eq!(x.len(), y.len(), "table {t}: row counts differ");
        for (i, (r1, r2)) in x.iter().zip(y).enumerate() {
            assert_eq!(r1, r2, "table {t}: row {i} differs");
        }
    }
}

/// [`assert_same`] on two databases' dumps, then drop both.
async fn assert_same_then_drop(a: TestDb, b: TestDb) {
    assert_same(&dump(a.client()).await, &dump(b.client()).await);
    a.drop_db().await;
    b.drop_db().await;
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
}

/// (interval, candle open time of `created_at`, its length) in SQL for a
/// session in UTC, computed independently of the persister's Rust code.
const BUCKETS: [(&str, &str, &str); 16] = [
    (
        "1s",
        "date_trunc('second', created_at)",
        "interval '1 second'",
    ),
    (
        "1m",
        "date_trunc('minute', created_at)",
        "interval '1 minute'",
    ),
    (
        "3m",
        "date_bin('3 minutes', created_at, '1970-01-01')",
        "interval '3 minutes'",
    ),
    (
        "5m",
        "date_bin('5 minutes', created_at, '1970-01-01')",
        "interval '5 minutes'",
    ),
    (
        "15m",
        "date_bin('15 minutes', created_at, '1970-01-01')",
        "interval '15 minutes'",
    ),
    (
        "30m",
        "date_bin('30 minutes', created_at, '1970-01-01')",
        "interval '30 minutes'",
    ),
    ("1h", "date_trunc('hour', created_at)", "interval '1 hour'"),
    (
        "2h",
        "date_bin('2 hours', created_at, '1970-01-01')",
        "interval '2 hours'",
    ),
    (
        "4h",
        "date_bin('4 hours', created_at, '1970-01-01')",
        "interval '4 hours'",
    ),
    (
        "6h",
        "date_bin('6 hours', created_at, '1970-01-01')",
        "interval '6 hours'",
    ),
    (
        "8h",
        "date_bin('8 hours', created_at, '1970-01-01')",
        "interval '8 hours'",
    ),
    (
        "12h",
        "date_bin('12 hours', created_at, '1970-01-01')",
        "interval '12 hours'",
    ),
    ("1d", "date_trunc('day', created_at)", "interval '1 day'"),
    (
        "3d",
        "date_bin('3 days', created_at, '1970-01-01')",
        "interval '3 days'",
    ),
    // ISO weeks start on Monday, like Binance's.
    ("1w", "date_trunc('week', created_at)", "interval '7 days'"),
    (
        "1M",
        "date_trunc('month', created_at)",
        "interval '1 month'",
    ),
];

/// The klines table equals candles aggregated here, in SQL, from the
/// trades table (open/close = price of the lowest/highest trade id).
async fn assert_klines_match_trades(c: &tokio_postgres::Client) {
    c.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let expected: Vec<String> = BUCKETS
        .iter()
        .map(|(name, bucket, len)| {
            format!(
                "SELECT trading_pair_id AS pair, '{name}'::text AS iv, {bucket} AS ot,
                    {bucket} + {len} - interval '1 millisecond' AS ct,
                    (array_agg(price ORDER BY id))[1] AS o, max(price) AS h, min(price) AS l,
                    (array_agg(price ORDER BY id DESC))[1] AS c, sum(amount) AS v,
                    sum(quote_amount) AS qv, count(*) AS n,
                    coalesce(sum(amount) FILTER (WHERE maker_side = 'SELL'), 0) AS tbv,
                    coalesce(sum(quote_amount) FILTER (WHERE maker_side = 'SELL'), 0) AS tbq,
                    (array_agg(created_at ORDER BY id DESC))[1] AS at
                 FROM trades GROUP BY 1, 2, 3"
            )
        })
        .collect();
    let expected = expected.join(" UNION ALL ");
    let diff = format!(
        "WITH e AS ({expected})
         SELECT coalesce(e.pair, k.trading_pair_id)::text || ' ' || coalesce(e.iv, k.interval)
                || ' ' || coalesce(e.ot, k.open_time)::text || ': expected '
                || coalesce(row(e.ct, e.o, e.h, e.l, e.c, e.v, e.qv, e.n, e.tbv, e.tbq, e.at)::text, 'none')
                || ' got ' || coalesce(row(k.close_time, k.open_price, k.high_price, k.low_price,
                    k.close_price, k.volume, k.quote_volume, k.trades_count, k.taker_buy_volume,
                    k.taker_buy_quote_volume, k.updated_at)::text, 'none')
         FROM e FULL JOIN klines k
           ON k.trading_pair_id = e.pair AND k.interval = e.iv AND k.open_time = e.ot
         WHERE e.pair IS NULL OR k.id IS NULL
            OR row(e.ct, e.o, e.h, e.l, e.c, e.v, e.qv, e.n, e.tbv, e.tbq, e.at)
               IS DISTINCT FROM row(k.close_time, k.open_price, k.high_price, k.low_price,
                    k.close_price, k.volume, k.quote_volume, k.trades_count, k.taker_buy_volume,
                    k.taker_buy_quote_volume, k.updated_at)
         LIMIT 5"
    );
    let rows = c.query(&diff, &[]).await.unwrap();
    let rows: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(rows.is_empty(), "klines differ from the trades: {rows:#?}");
    // Every interval has candles, and they hold every trade.
    for (name, _, _) in BUCKETS {
        let n: i64 = c
            .query_one(
                "SELECT coalesce(sum(trades_count), 0)::int8 - (SELECT count(*) FROM trades)
                 FROM klines WHERE interval = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "interval {name}: trade counts do not add up");
    }
    assert!(count(c, "SELECT count(*) FROM klines").await >= 16);
}

/// ticker_24hr equals the figures computed here, in SQL, from the trades
/// of each pair's last 24 h (whole minutes) before its last trade.
async fn assert_ticker_matches_trades(c: &tokio_postgres::Client) {
    c.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let rows = c
        .query(
            "WITH last AS (
                SELECT DISTINCT ON (trading_pair_id) trading_pair_id AS pair, id AS last_id,
                    created_at AS at
                FROM trades ORDER BY trading_pair_id, id DESC),
             e AS (
                SELECT l.pair, (array_agg(t.price ORDER BY t.id))[1] AS o, max(t.price) AS h,
                    min(t.price) AS l, (array_agg(t.price ORDER BY t.id DESC))[1] AS c,
                    sum(t.amount) AS v, sum(t.quote_amount) AS qv, count(*) AS n,
                    min(t.id) AS first_id, max(l.last_id) AS last_id,
                    max(l.at) - interval '24 hours' AS ot, max(l.at) AS ct
                FROM last l JOIN trades t ON t.trading_pair_id = l.pair
                    AND t.created_at >= date_trunc('minute', l.at - interval '24 hours')
                    AND t.created_at <= l.at
                GROUP BY l.pair)
             SELECT coalesce(e.pair, x.trading_pair_id)::text || ': expected '
                    || coalesce(row(e.o, e.h, e.l, e.c, e.v, e.qv, e.c - e.o,
                        round((e.c - e.o) * 100 / e.o, 3), e.n, e.first_id, e.last_id, e.ot, e.ct,
                        e.ct)::text, 'none')
                    || ' got ' || coalesce(row(x.open_price, x.high_price, x.low_price,
                        x.close_price, x.volume, x.quote_volume, x.price_change,
                        x.price_change_percent, x.trades_count, x.first_trade_id,
                        x.last_trade_id, x.open_time, x.close_time, x.updated_at)::text, 'none')
             FROM e FULL JOIN ticker_24hr x ON x.trading_pair_id = e.pair
             WHERE e.pair IS NULL OR x.trading_pair_id IS NULL
                OR row(e.o, e.h, e.l, e.c, e.v, e.qv, e.c - e.o,
                        round((e.c - e.o) * 100 / e.o, 3), e.n, e.first_id, e.last_id, e.ot, e.ct,
                        e.ct)
                   IS DISTINCT FROM row(x.open_price, x.high_price, x.low_price,
                        x.close_price, x.volume, x.quote_volume, x.price_change,
                        x.price_change_percent, x.trades_count, x.first_trade_id,
                        x.last_trade_id, x.open_time, x.close_time, x.updated_at)",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(rows.is_empty(), "ticker_24hr differs: {rows:#?}");
    assert_eq!(
        count(c, "SELECT count(*) FROM ticker_24hr").await,
        count(c, "SELECT count(DISTINCT trading_pair_id) FROM trades").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_every_table_and_reconciles() {
    const N: u64 = 3000;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    write_journal(&data, N);
    let mut db = TestDb::create_migrated().await;
    let cfg = config(db.url(), &data, 500);
    let status =
        tokio::task::spawn_blocking(move || run_writer_to(cfg, N, Duration::from_secs(120)))
            .await
            .unwrap();
    assert_eq!(status.lag_seq(), 0);

    // Expected figures from a replay.
    let mut e = Engine::with_capacity(1 << 12);
    let mut done: BTreeMap<&'static str, i64> = BTreeMap::new();
    let (mut accepted, mut trades, mut quote) = (0i64, 0i64, 0u128);
    replica::replay(
        &mut e,
        &data.journal(),
        u64::MAX,
        None,
        |_, _, _, evs| {
            for ev in evs {
                match ev {
                    Event::OrderAccepted(_) => accepted += 1,
                    Event::Trade(t) => {
                        trades += 1;
                        quote += t.quote_qty as u128;
                    }
                    Event::OrderDone { status, .. } => {
                        *done.entry(status.as_str()).or_default() += 1
                    }
                    _ => {}
                }
            }
        },
        |_| {},
    )
    .unwrap();
    assert!(
        trades > 100 && accepted > 500,
        "too little activity: {trades} trades"
    );
    let c = db.client();
    assert_eq!(count(c, "SELECT count(*) FROM orders").await, accepted);
    assert_eq!(count(c, "SELECT count(*) FROM trades").await, trades);
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM orders WHERE status IN ('NEW','PARTIALLY_FILLED')"
        )
        .await,
        e.open_order_count() as i64
    );
    for (status, n) in &done {
        let got: i64 = c
            .query_one("SELECT count(*) FROM orders WHERE status = $1", &[status])
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, *n, "orders {status}");
    }
    let q: String = c
        .query_one(
            "SELECT (sum(quote_amount) * 100000000)::numeric(40,0)::text FROM trades",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(q, quote.to_string());
    // Ledger: every row consistent; per account, sums equal balances.
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM (SELECT a.user_id FROM accounts a
               JOIN (SELECT user_id, asset_id,
                       sum(amount) FILTER (WHERE balance_type = 'AVAILABLE') AS av,
                       sum(amount) FILTER (WHERE balance_type = 'FROZEN') AS fr
                     FROM transactions GROUP BY 1, 2) t USING (user_id, asset_id)
               WHERE coalesce(t.av, 0) <> a.available_balance
                  OR coalesce(t.fr, 0) <> a.frozen_balance) d"
        )
        .await,
        0
    );
    assert_eq!(count(c, "SELECT count(*) FROM users").await, 9);
    assert_eq!(count(c, "SELECT count(*) FROM user_roles").await, 8);
    assert!(
        count(
            c,
            "SELECT count(*) FROM deposit_withdrawals WHERE type = 'WITHDRAWAL'"
        )
        .await
            > 0
    );
    assert!(count(c, "SELECT count(*) FROM audit_logs").await > 30);
    assert!(
        count(
            c,
            "SELECT count(*) FROM outbox_events WHERE aggregate_type = 'TRADE'"
        )
        .await
            == trades
    );
    assert!(
        count(
            c,
            "SELECT count(*) FROM balance_freezes WHERE status = 'RELEASED'"
        )
        .await
            > 0
    );
    // Candles and the ticker, recomputed here from the trades.
    assert_klines_match_trades(c).await;
    assert_ticker_matches_trades(c).await;
    // The ticker's window (24 h of a journal spanning three months) keeps
    // only the last day's trades.
    let n = count(c, "SELECT trades_count FROM ticker_24hr").await;
    assert!(n > 0 && n < trades, "ticker counts {n} of {trades} trades");
    // Old months got their partitions.
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM pg_class WHERE relname = 'orders_y2024m01'"
        )
        .await,
        1
    );
    // Checkpoint.
    assert_eq!(
        count(
            c,
            "SELECT last_seq FROM persister_checkpoints WHERE writer = 'core'"
        )
        .await,
        N as i64
    );

    let report = reconcile::reconcile(db.client_mut(), &data).await.unwrap();
    assert_eq!(report.seq, N);
    assert!(report.accounts_checked >= 16);
    assert!(
        report.differences.is_empty(),
        "differences: {:#?}",
        report.differences
    );
    // A tampered balance is reported.
    db.client()
        .execute(
            "UPDATE accounts SET available_balance = available_balance + 1 WHERE user_id = 1 AND asset_id = 1",
            &[],
        )
        .await
        .unwrap();
    let report = reconcile::reconcile(db.client_mut(), &data).await.unwrap();
    assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
    // Ledger rows of an account Postgres does not hold are reported even
    // when they net to zero (the ledger has no row-by-row foreign key).
    db.client()
        .batch_execute(
            "UPDATE accounts SET available_balance = available_balance - 1 WHERE user_id = 1 AND asset_id = 1;
             INSERT INTO transactions (id, user_id, asset_id, type, amount, balance_before, balance_after, created_at)
             VALUES (9000000000001, 424242, 1, 'ADJUSTMENT', 5, 0, 5, now()),
                    (9000000000002, 424242, 1, 'ADJUSTMENT', -5, 5, 0, now())",
        )
        .await
        .unwrap();
    let report = reconcile::reconcile(db.client_mut(), &data).await.unwrap();
    assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
    match &report.differences[0] {
        reconcile::Difference::Account {
            user, asset, what, ..
        } => assert_eq!(
            (*user, *asset, *what),
            (424242, 1, "ledger rows without an account row")
        ),
        d => panic!("unexpected difference {d:?}"),
    }
    db.drop_db().await;
}

/// Trades a few hundred ms apart, written in batches of 40 records: every
/// 1m candle is built over several transactions. The candles still equal
/// the ones aggregated from the trades, and every table equals a run in one
/// batch (which writes its ledger, outbox and trades by binary COPY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klines_merged_across_small_batches_equal_the_trades() {
    const N: u64 = 3000;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    // 3000 records 170 ms apart: about 8.5 minutes.
    write_journal_every(&data, N, 170);

    let small = TestDb::create_migrated().await;
    let cfg = config(small.url(), &data, 40);
    let status =
        tokio::task::spawn_blocking(move || run_writer_to(cfg, N, Duration::from_secs(120)))
            .await
            .unwrap();
    assert!(status.batches.load(Ordering::Relaxed) >= N / 40);
    let c = small.client();
    // The run in one batch (below) takes the binary COPY path for the
    // ledger, the outbox and trades; this one the pipelined UNNEST path.
    let trades = count(c, "SELECT count(*) FROM trades").await;
    assert!(
        trades as usize >= persister::copy::COPY_MIN_ROWS,
        "{trades} trades"
    );
    assert_klines_match_trades(c).await;
    assert_ticker_matches_trades(c).await;
    // Several 1m candles, each with trades of many batches.
    assert!(count(c, "SELECT count(*) FROM klines WHERE interval = '1m'").await >= 8);
    assert!(
        count(
            c,
            "SELECT max(trades_count) FROM klines WHERE interval = '1m'"
        )
        .await
            > 40
    );
    // The 24 h window holds every trade here.
    assert_eq!(
        count(c, "SELECT trades_count FROM ticker_24hr").await,
        count(c, "SELECT count(*) FROM trades").await
    );

    let big = TestDb::create_migrated().await;
    // max_batch 8000: one batch of all 3000 records.
    write_all(big.url(), &data, 8000, N).await;
    assert_same_then_drop(small, big).await;
}

/// The writer's own connection commits asynchronously
/// (`synchronous_commit = off`, see `writer::SESSION_SETTINGS`): a trigger
/// on the checkpoint row records the setting of the session that moves it,
/// inside each batch's transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_session_commits_asynchronously() {
    const N: u64 = 300;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    write_journal(&data, N);
    let db = TestDb::create_migrated().await;
    db.client()
        .batch_execute(
            "CREATE TABLE seen_sync (setting text NOT NULL);
             CREATE FUNCTION record_sync() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO seen_sync VALUES (current_setting('synchronous_commit')
                     || ' ' || current_setting('plan_cache_mode'));
                 RETURN NEW;
             END $$;
             CREATE TRIGGER record_sync AFTER UPDATE ON persister_checkpoints
                 FOR EACH ROW EXECUTE FUNCTION record_sync();",
        )
        .await
        .unwrap();
    // This test's own session keeps the server default.
    let own: String = db
        .client()
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(own, "on", "server default (the test expects it unchanged)");
    write_all(db.url(), &data, 50, N).await;
    let seen: Vec<String> = db
        .client()
        .query("SELECT DISTINCT setting FROM seen_sync", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Generic plans too (the 24 h ticker's statement took 3.7 ms to plan
    // per batch with custom plans: partition pruning at every bind).
    assert_eq!(seen, ["off force_generic_plan"]);
    assert!(count(db.client(), "SELECT count(*) FROM seen_sync").await >= (N / 50) as i64);
    db.drop_db().await;
}

#[test]
fn writer_child_entry() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (url, dir) = spec.split_once('|').unwrap();
        let data = DataDir::new(dir);
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(PersisterStatus::default());
        let r = writer::run(config(url, &data, 40), Follow::Poll, stop, status);
        panic!("writer returned: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_then_restart_equals_clean_run() {
    const N: u64 = 2500;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    write_journal(&data, N);
    // A snapshot in the middle: restarts rebuild from it.
    let rec = replica::recover(&data, 1234, |_| {}).unwrap();
    replica::write_snapshot(&data, &rec.engine).unwrap();

    let clean = TestDb::create_migrated().await;
    write_all(clean.url(), &data, 500, N).await;

    let crashed = TestDb::create_migrated().await;
    sigkill_writer_children("writer_child_entry", CHILD_ENV, &crashed, tmp.path(), 40, N).await;
    write_all(crashed.url(), &data, 40, N).await;
    assert_same_then_drop(clean, crashed).await;
}

/// A TCP proxy the test can cut and restore.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::Acquire) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut rx = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Proxy { port, up, cut }
    }
    fn cut(&self) {
        self.up.store(false, Ordering::Release);
        self.cut.send_modify(|v| *v += 1);
    }
    fn restore(&self) {
        self.up.store(true, Ordering::Release);
    }
}

/// `url` with its host and port replaced by 127.0.0.1:`port`.
fn via_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL form of DATABASE_URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!(
        "{scheme}://{}127.0.0.1:{port}{path}",
        user.unwrap_or_default()
    )
}

fn upstream_of(url: &str) -> String {
    let cfg: tokio_postgres::Config = url.parse().unwrap();
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_retries_and_catches_up() {
    const N: u64 = 2500;
    let (_tmp, data, clean) = journal_and_clean_run(N).await;
    let db = TestDb::create_migrated().await;
    let proxy = Proxy::start(upstream_of(db.url())).await;
    let url = via_port(db.url(), proxy.port);
    let stop = Arc::new(AtomicBool::new(false));
    let (h, status) = spawn_polling(config(&url, &data, 40), &stop);
    // Cut it off a few times while it works; it must report errors and
    // keep its place.
    for round in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let before = status.written_seq.load(Ordering::Relaxed);
        while status.written_seq.load(Ordering::Relaxed) <= before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        proxy.cut();
        let errors = status.errors.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let stalled = status.written_seq.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stalled < N {
            assert_eq!(
                status.written_seq.load(Ordering::Relaxed),
                stalled,
                "round {round}: wrote through a cut proxy"
            );
            assert!(
                status.errors.load(Ordering::Relaxed) > errors,
                "round {round}: no error seen"
            );
            assert!(!status.connected.load(Ordering::Relaxed));
        }
        proxy.restore();
    }
    finish_writers(vec![(h, status)], &stop, N).await;
    assert_same_then_drop(clean, db).await;
}

/// A journal of `n` records in a new directory, and a database that a
/// writer filled from it without interruption (the reference).
async fn journal_and_clean_run(n: u64) -> (tempfile::TempDir, DataDir, TestDb) {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    write_journal(&data, n);
    let clean = TestDb::create_migrated().await;
    write_all(clean.url(), &data, 500, n).await;
    (tmp, data, clean)
}

/// A writer on its own thread polling its journal, stopped by `stop`.
fn spawn_polling(
    cfg: WriterConfig,
    stop: &Arc<AtomicBool>,
) -> (WriterThread, Arc<PersisterStatus>) {
    let status = Arc::new(PersisterStatus::default());
    let h = writer::spawn(cfg, Follow::Poll, stop.clone(), status.clone()).unwrap();
    (h, status)
}

type WriterThread = std::thread::JoinHandle<Result<(), writer::WriterError>>;

/// Wait (two minutes at most) until every spawned writer has written `to`,
/// then stop them; each must end without error.
async fn finish_writers(
    writers: Vec<(WriterThread, Arc<PersisterStatus>)>,
    stop: &AtomicBool,
    to: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for (h, status) in &writers {
        while status.written_seq.load(Ordering::Relaxed) < to {
            assert!(
                !h.is_finished(),
                "a writer ended before the end of the journal"
            );
            assert!(Instant::now() < deadline, "did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::Release);
    for (h, _) in writers {
        tokio::task::spawn_blocking(move || h.join().unwrap().unwrap())
            .await
            .unwrap();
    }
}

/// Checkpoint of every domain row.
async fn checkpoints(c: &tokio_postgres::Client) -> BTreeMap<String, i64> {
    try_checkpoints(c).await.unwrap()
}

async fn try_checkpoints(
    c: &tokio_postgres::Client,
) -> Result<BTreeMap<String, i64>, tokio_postgres::Error> {
    let rows = c
        .query("SELECT writer, last_seq FROM persister_checkpoints", &[])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_writers_and_domain_catch_up_equal_a_single_writer() {
    use persister::rows::Domain;
    const N: u64 = 1500;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    write_journal(&data, N);

    // Reference: one writer of every domain.
    let single = TestDb::create_migrated().await;
    write_all(single.url(), &data, 300, N).await;
    let want = dump(single.client()).await;
    assert!(checkpoints(single.client())
        .await
        .values()
        .all(|&c| c == N as i64));

    // Five writers, one per domain, side by side.
    let split = TestDb::create_migrated().await;
    let mut runs = Vec::new();
    for d in Domain::ALL {
        let cfg = config(split.url(), &data, 200).for_domain(d);
        runs.push(tokio::task::spawn_blocking(move || {
            run_writer_to(cfg, N, Duration::from_secs(120))
        }));
    }
    for r in runs {
        r.await.unwrap();
    }
    assert_same(&want, &dump(split.client()).await);
    let cps = checkpoints(split.client()).await;
    assert_eq!(cps.len(), 5, "{cps:?}");
    assert!(cps.values().all(|&c| c == N as i64), "{cps:?}");
    let mut split = split;
    let report = reconcile::reconcile(split.client_mut(), &data)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);

    // Domains at different checkpoints (split writers stopped at different
    // places), then one writer of every domain catches each up from its own.
    let mixed = TestDb::create_migrated().await;
    for (d, to) in [
        (Domain::Trading, N / 2),
        (Domain::Core, N / 5),
        (Domain::Activity, N / 3),
    ] {
        let cfg = config(mixed.url(), &data, 100).for_domain(d);
        tokio::task::spawn_blocking(move || run_writer_to(cfg, to, Duration::from_secs(120)))
            .await
            .unwrap();
    }
    let before = checkpoints(mixed.client()).await;
    assert!(
        before["market_data"] == 0 && before["trading"] >= (N / 2) as i64,
        "{before:?}"
    );
    // The ledger behind the accounts: reconcile refuses to compare.
    let mut mixed = mixed;
    let err = reconcile::reconcile(mixed.client_mut(), &data)
        .await
        .expect_err("ledger behind core");
    assert!(
        matches!(
            err,
            reconcile::ReconcileError::LedgerBehind { ledger: 0, .. }
        ),
        "{err}"
    );
    // The ledger ahead of the accounts (here: only the ledger writer ran):
    // its rows after `core`'s seq are left out, so they are not reported
    // as ledger rows without accounts.
    let mut ahead = TestDb::create_migrated().await;
    let cfg = config(ahead.url(), &data, 100).for_domain(Domain::Ledger);
    tokio::task::spawn_blocking(move || run_writer_to(cfg, N, Duration::from_secs(120)))
        .await
        .unwrap();
    let cps = checkpoints(ahead.client()).await;
    assert!(cps["ledger"] == N as i64 && cps["core"] == 0, "{cps:?}");
    let ledger_rows: i64 = ahead
        .client()
        .query_one("SELECT count(*) FROM transactions", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ledger_rows > 0);
    let report = reconcile::reconcile(ahead.client_mut(), &data)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    ahead.drop_db().await;
    write_all(mixed.url(), &data, 300, N).await;
    assert_same(&want, &dump(mixed.client()).await);

    // A database from before the split: only the `core` row, and that
    // writer wrote every table. The other domains start from it.
    let legacy = TestDb::create_migrated().await;
    let cfg = config(legacy.url(), &data, 300);
    tokio::task::spawn_blocking(move || run_writer_to(cfg, N / 2, Duration::from_secs(120)))
        .await
        .unwrap();
    legacy
        .client()
        .execute(
            "DELETE FROM persister_checkpoints WHERE writer <> 'core'",
            &[],
        )
        .await
        .unwrap();
    let cfg = config(legacy.url(), &data, 300).for_domain(Domain::Trading);
    tokio::task::spawn_blocking(move || run_writer_to(cfg, N, Duration::from_secs(120)))
        .await
        .unwrap();
    write_all(legacy.url(), &data, 300, N).await;
    assert_same(&want, &dump(legacy.client()).await);

    for db in [single, split, mixed, legacy] {
        db.drop_db().await;
    }
}

/// A stop commits the batch in hand and returns without draining the
/// backlog; the next start writes the rest from the checkpoint, and the
/// tables equal a clean run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_writer_leaves_the_backlog_to_the_next_start() {
    const N: u64 = 2500;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    write_journal(&data, N);
    let clean = TestDb::create_migrated().await;
    write_all(clean.url(), &data, 500, N).await;

    let db = TestDb::create_migrated().await;
    let cfg = config(db.url(), &data, 40);
    let stopped_at = tokio::task::spawn_blocking(move || {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(PersisterStatus::default());
        let h = writer::spawn(cfg, Follow::Poll, stop.clone(), status.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while status.written_seq.load(Ordering::Relaxed) == 0 {
            assert!(!h.is_finished(), "writer ended: {:?}", h.join().unwrap());
            assert!(Instant::now() < deadline, "no batch written");
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Release);
        h.join().unwrap().unwrap();
        status.written_seq.load(Ordering::Relaxed)
    })
    .await
    .unwrap();
    // Batches of 40: the stop was seen within a few of them, far from N.
    assert!(stopped_at < N / 2, "drained to {stopped_at} of {N}");
    let cps = checkpoints(db.client()).await;
    assert!(
        cps.values().all(|&c| c as u64 == stopped_at),
        "{cps:?} vs {stopped_at}"
    );
    write_all(db.url(), &data, 500, N).await;
    assert_same_then_drop(clean, db).await;
}

/// A paced writer following a live journal rests while records arrive
/// (`busy_percent`), catches up once they stop, and writes exactly what an
/// unpaced clean run writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_writer_rests_while_records_flow_and_catches_up_after() {
    const N: u64 = 2000;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    let mut w = journal_writer(&data);
    let durable = w.durable_handle();
    let db = TestDb::create_migrated().await;
    let cfg = WriterConfig {
        busy_percent: 20,
        ..config(db.url(), &data, 500)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(PersisterStatus::default());
    let h = writer::spawn(cfg, Follow::Durable(durable), stop.clone(), status.clone()).unwrap();
    // Records flow for about two seconds: 10 every 10 ms.
    let producer = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for seq in 1..=N {
            buf.clear();
            cmd_for(seq).encode_into(&mut buf);
            w.append((BASE_MS + seq * STEP_MS) * 1_000_000, &buf)
                .unwrap();
            if seq % 10 == 0 {
                w.commit().unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        w.commit().unwrap();
        w.close().unwrap();
    });
    let status2 = status.clone();
    tokio::task::spawn_blocking(move || {
        producer.join().unwrap();
        let rested_while_flowing = status2.rest_ns.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(120);
        while status2.written_seq.load(Ordering::Relaxed) < N {
            assert!(!h.is_finished(), "writer ended: {:?}", h.join().unwrap());
            assert!(Instant::now() < deadline, "did not catch up");
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Release);
        h.join().unwrap().unwrap();
        assert!(
            rested_while_flowing > 0,
            "never rested while records flowed"
        );
        // Once the records stopped it wrote at full speed: at most the one
        // batch that saw the last records arrive rested after that.
        let rested_after = status2.rest_ns.load(Ordering::Relaxed) - rested_while_flowing;
        assert!(
            rested_after <= rested_while_flowing,
            "rested {rested_after} ns after the flow, {rested_while_flowing} during"
        );
    })
    .await
    .unwrap();

    let clean = TestDb::create_migrated().await;
    write_all(clean.url(), &data, 500, N).await;
    assert_same_then_drop(clean, db).await;
}

/// A `max_batch` below the default `min_batch` (256), as
/// `persister.batch_records = 100` gives `serve`: the writer used to panic
/// ("min > max") at its first batch; max_batch wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_batch_below_the_default_min_batch_is_honoured() {
    const N: u64 = 300;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    write_journal(&data, N);
    let db = TestDb::create_migrated().await;
    let cfg = WriterConfig {
        max_batch: 40,
        ..WriterConfig::new(db.url(), data.clone())
    };
    assert!(cfg.min_batch > cfg.max_batch);
    let status =
        tokio::task::spawn_blocking(move || run_writer_to(cfg, N, Duration::from_secs(120)))
            .await
            .unwrap();
    // 300 records in batches of at most 40.
    assert!(status.batches.load(Ordering::Relaxed) >= 8);
    db.drop_db().await;
}

/// A PostgreSQL cluster of this test's own (initdb in a temporary
/// directory, its own port and socket directory), so it can be crashed
/// without touching the server the other tests share. Nothing but the WAL
/// writer writes WAL out on its own (no autovacuum, no background writer),
/// so while the WAL writer is stopped, asynchronous commits stay in shared
/// memory, and a crash loses them.
struct PrivatePg {
    dir: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
    /// `runuser -u postgres --` when running as root (initdb and the
    /// server refuse root).
    as_user: Vec<String>,
}

impl PrivatePg {
    fn start() -> PrivatePg {
        let bin = server_bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        let as_user = if root {
            let uid = std::process::Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .unwrap();
            let uid: u32 = String::from_utf8(uid.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), None).unwrap();
            ["runuser", "-u", "postgres", "--"]
                .map(String::from)
                .to_vec()
        } else {
            Vec::new()
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePg {
            dir,
            port,
            bin,
            as_user,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        pg.ctl_start();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_string()
    }

    /// `tool` of the server's bin directory, as the cluster's owner.
    fn command(&self, tool: &str) -> std::process::Command {
        let exe = self.bin.join(tool);
        match self.as_user.split_first() {
            Some((first, rest)) => {
                let mut c = std::process::Command::new(first);
                c.args(rest).arg(&exe);
                c
            }
            None => std::process::Command::new(&exe),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl_start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c autovacuum=off -c bgwriter_lru_maxpages=0",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        );
    }

    /// The process id of the WAL writer.
    async fn walwriter_pid(&self) -> i32 {
        let (c, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

/// The bin directory of the newest PostgreSQL server on this machine
/// (Debian's layout, as scripts/ensure-postgres installs it), else
/// `pg_config --bindir`.
fn server_bin_dir() -> std::path::PathBuf {
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten();
    let newest = debian
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return bin;
    }
    let out = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("no PostgreSQL server binaries on this machine: run scripts/test (it installs them) or install PostgreSQL 15+");
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Postgres crashes while the writers work (its WAL writer stopped, then
/// killed: the last asynchronous commits are lost, rows and checkpoint
/// moves together) and recovers: a running writer finds Postgres' checkpoint behind what it
/// committed, starts over from there, and the tables end equal to a clean
/// run's. One writer of every table, then one writer per domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_that_loses_commits_is_written_again() {
    use persister::rows::Domain;
    const N: u64 = 2500;
    let (_tmp, data, clean) = journal_and_clean_run(N).await;
    let want = dump(clean.client()).await;
    let pg = PrivatePg::start();
    for split in [false, true] {
        let mut db = TestDb::create_on(&pg.url()).await;
        db.migrate().await;
        let configs: Vec<WriterConfig> = if split {
            Domain::ALL
                .into_iter()
                .map(|d| config(db.url(), &data, 40).for_domain(d))
                .collect()
        } else {
            vec![config(db.url(), &data, 40)]
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        let mut owned = Vec::new();
        for cfg in configs {
            owned.push(cfg.domains.names());
            writers.push(spawn_polling(cfg, &stop));
        }
        // Every writer busy, the furthest a third of the way.
        let deadline = Instant::now() + Duration::from_secs(60);
        let at = |writers: &[(WriterThread, Arc<PersisterStatus>)]| -> Vec<u64> {
            writers
                .iter()
                .map(|(_, s)| s.written_seq.load(Ordering::Relaxed))
                .collect()
        };
        loop {
            let now = at(&writers);
            if now.iter().all(|&w| w > 0) && now.iter().any(|&w| w >= N / 3) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "split {split}: writers at {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The WAL writer stops: the commits from now on stay in shared
        // memory. Once a writer has committed two more batches, the WAL
        // writer is killed: Postgres treats it as a crash, ends every
        // backend without writing what shared memory holds, recovers from
        // its WAL and accepts connections again by itself.
        let walwriter = pg.walwriter_pid().await;
        assert_eq!(unsafe { libc::kill(walwriter, libc::SIGSTOP) }, 0);
        let stopped = at(&writers);
        loop {
            let now = at(&writers);
            if now.iter().zip(&stopped).any(|(n, s)| *n >= s + 80) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "split {split}: writers at {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let committed = at(&writers);
        assert_eq!(unsafe { libc::kill(walwriter, libc::SIGKILL) }, 0);
        // Until Postgres has recovered, connecting or querying fails.
        let kept: BTreeMap<String, i64> = loop {
            if let Ok((c, conn)) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                let q = try_checkpoints(&c);
                if let Ok(Ok(kept)) = tokio::time::timeout(Duration::from_secs(5), q).await {
                    break kept;
                }
            }
            assert!(Instant::now() < deadline, "Postgres did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // A writer lost commits: its domains' checkpoints are behind.
        let lost = owned
            .iter()
            .zip(&committed)
            .any(|(domains, &c)| domains.iter().any(|d| (kept[*d] as u64) < c));
        eprintln!("split {split}: committed {committed:?}; Postgres kept {kept:?}");
        assert!(lost, "split {split}: kept {kept:?} of {committed:?}");
        let statuses: Vec<Arc<PersisterStatus>> = writers.iter().map(|(_, s)| s.clone()).collect();
        finish_writers(writers, &stop, N).await;
        assert!(statuses
            .iter()
            .any(|s| s.restarts.load(Ordering::Relaxed) >= 1));
        let fresh = db.connect().await;
        assert_same(&want, &dump(&fresh).await);
        drop(fresh);
        db.drop_db().await;
    }
    clean.drop_db().await;
}
