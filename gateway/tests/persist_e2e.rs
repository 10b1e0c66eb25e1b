//! End to end with PostgreSQL: `serve` with DATABASE_URL (its own test
//! database) runs the persister in-process; trading over the Binance REST
//! API is written to Postgres; /health reports the persister caught up;
//! `mini-exchange reconcile` finds zero differences; the rows match what the
//! API reported.

mod common;

use common::*;

#[test]
fn serve_with_postgres_persists_and_reconciles() {
    persists_and_reconciles("single");
}

/// One writer per domain (`persister.writers = "split"`), each with its own
/// checkpoint: the same rows, zero differences.
#[test]
fn split_writers_persist_and_reconcile() {
    persists_and_reconciles("split");
}

fn persists_and_reconciles(writers: &str) {
    let (rt, db) = common::test_db();
    let url = db.url().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // The split run also sets the pacing explicitly (the single one leaves
    // it to the default, as history_pg.rs checks).
    let mut env = vec![
        ("DATABASE_URL", url.as_str()),
        ("MX_PERSISTER__WRITERS", writers),
    ];
    if writers == "split" {
        env.push(("MX_PERSISTER__BUSY_PERCENT", "100"));
    }
    let s = Server::start_with(tmp.path(), port, &env);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let a = trader(
        &s,
        &admin,
        "pgalice",
        &[("USDT", "100000")],
        &["READ", "TRADE"],
    );
    let b = trader(&s, &admin, "pgbob", &[("BTC", "5")], &["READ", "TRADE"]);
    for i in 0..20u64 {
        b.order(
            &s,
            &format!(
                "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price={}",
                30000 + i
            ),
        );
    }
    for _ in 0..10 {
        a.order(
            &s,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.015&price=30020",
        );
    }
    let r = b.call(&s, "DELETE", "/api/v3/openOrders", "symbol=BTCUSDT");
    assert_eq!(r.status, 200, "{}", r.json);
    let trades = a.call(&s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT&limit=1000");
    let n_trades = trades.json.as_array().unwrap().len();
    assert!(n_trades >= 10);

    wait_persisted(&s);
    let h = s.req("GET", "/health", &[], b"");
    let ws = h.json["persister"]["writers"].as_object().unwrap();
    let names: Vec<&str> = ws.keys().map(|k| k.as_str()).collect();
    if writers == "split" {
        let m = s.req("GET", "/metrics", &[], b"");
        assert!(
            m.body.contains("mx_persister_busy_percent 100\n"),
            "an explicit persister.busy_percent wins over the default: {}",
            m.body
        );
        assert_eq!(names.len(), 5, "{}", h.json);
        for n in ["core", "ledger", "trading", "market_data", "activity"] {
            assert_eq!(ws[n]["lag_seq"], 0, "{}", h.json);
        }
    } else {
        assert_eq!(names, ["all"], "{}", h.json);
    }
    assert_eq!(h.json["persister"]["lag_seq"], 0, "{}", h.json);

    // Reconcile (the server keeps running; the check reads the journal).
    cli(tmp.path(), &["reconcile"], &[("DATABASE_URL", &url)]);

    // Rows match the API: trades and the buyer's USDT balance.
    let (free, locked) = a.balance(&s, "USDT");
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let row = c
            .query_one(
                "SELECT count(*) FROM trades t JOIN users u ON u.id = t.buyer_user_id WHERE u.username = 'pgalice'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0) as usize, n_trades);
        let row = c
            .query_one(
                "SELECT a.available_balance::text, a.frozen_balance::text FROM accounts a \
                 JOIN users u ON u.id = a.user_id JOIN assets s ON s.id = a.asset_id \
                 WHERE u.username = 'pgalice' AND s.symbol = 'USDT'",
                &[],
            )
            .await
            .unwrap();
        let as_f = |v: String| v.parse::<f64>().unwrap();
        assert_eq!(as_f(row.get(0)), free.parse::<f64>().unwrap());
        assert_eq!(as_f(row.get(1)), locked.parse::<f64>().unwrap());
        // Every domain's checkpoint is at the journal's end.
        let cps = c
            .query("SELECT writer, last_seq FROM persister_checkpoints", &[])
            .await
            .unwrap();
        assert_eq!(cps.len(), 5);
        let seqs: Vec<i64> = cps.iter().map(|r| r.get(1)).collect();
        assert!(seqs.iter().all(|&q| q == seqs[0] && q > 0), "{seqs:?}");
    });
    drop(s);
    rt.block_on(db.drop_db());
}
