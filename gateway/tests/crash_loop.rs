//! SIGKILL of the real `serve` process while clients trade over REST and
//! the WebSocket API, round after round: after every restart each
//! acknowledged order is there, at least as far along as its acknowledgement
//! said (exactly, once it was final), no order appears that no client sent,
//! and at the end the journal verifies and replays (with and without
//! snapshots) to one state hash with every asset conserved.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::ws::{sign, In, Ws};
use common::{cli, free_port, login, trader, Server, Trader, ADMIN, ADMIN_PW};
use serde_json::{json, Value};

/// SIGKILLs of the server (each after 100-600 ms of load).
const ROUNDS: u32 = 10;

/// Orders a client sends at most per round: over ten rounds a user's orders
/// stay within the closed orders `serve` keeps in memory per user without
/// Postgres (10,000, `CLOSED_ORDERS_PER_USER`), so allOrders lists them all.
const MAX_ORDERS_PER_ROUND: u64 = 800;

/// What a client was told about one of its orders.
#[derive(Clone, Debug)]
struct Acked {
    trader: usize,
    client_id: String,
    order_id: u64,
    /// Base units filled at the acknowledgement (8 decimals for BTC).
    executed: u64,
    status: String,
}

fn units(v: &Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}"));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<8}");
    int.parse::<u64>().unwrap() * 100_000_000 + frac[..8].parse::<u64>().unwrap()
}

fn final_status(s: &str) -> bool {
    matches!(s, "FILLED" | "CANCELED" | "EXPIRED" | "REJECTED")
}

/// xorshift: the rounds' timing and order mix, reproducible from the seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Every order of a trader, by client order id (allOrders, paged by id).
fn orders_of(s: &Server, t: &Trader) -> HashMap<String, Value> {
    let mut all = HashMap::new();
    let mut from = 0u64;
    loop {
        let r = t.call(
            s,
            "GET",
            "/api/v3/allOrders",
            &format!("symbol=BTCUSDT&orderId={from}&limit=1000"),
        );
        assert_eq!(r.status, 200, "allOrders: {}", r.json);
        let page = r.json.as_array().unwrap().clone();
        let n = page.len();
        for o in page {
            from = from.max(o["orderId"].as_u64().unwrap() + 1);
            let cid = o["clientOrderId"].as_str().unwrap().to_string();
            assert!(all.insert(cid.clone(), o).is_none(), "{cid} listed twice");
        }
        if n < 1000 {
            return all;
        }
    }
}

/// An order or cancel answer as acknowledged.
fn acked_of(who: usize, o: &Value) -> Acked {
    Acked {
        trader: who,
        // A cancel's own clientOrderId is the cancel's id.
        client_id: o
            .get("origClientOrderId")
            .unwrap_or(&o["clientOrderId"])
            .as_str()
            .unwrap_or_else(|| panic!("no client order id: {o}"))
            .to_string(),
        order_id: o["orderId"].as_u64().unwrap(),
        executed: units(&o["executedQty"]),
        status: o["status"].as_str().unwrap().to_string(),
    }
}

/// A limit order around 20,000 that often crosses the others':
/// (side, price, quantity in 0.01 BTC, client order id).
fn order_params(rng: &mut u64, round: u32, who: usize, n: u64) -> (&'static str, u64, u64, String) {
    let side = if next(rng).is_multiple_of(2) {
        "BUY"
    } else {
        "SELL"
    };
    let price = 19_995 + next(rng) % 11;
    let qty = 1 + next(rng) % 5;
    (side, price, qty, format!("r{round}t{who}n{n}"))
}

/// Which client of which round (and the run's seed).
#[derive(Clone, Copy)]
struct Client {
    who: usize,
    round: u32,
    seed: u64,
}

/// One WebSocket API client: `order.place` pipelined eight deep until the
/// connection drops.
fn ws_trade_until_killed(port: u16, t: &Trader, c: Client, started: &AtomicUsize) -> Vec<Acked> {
    let Client { who, round, seed } = c;
    let mut rng = seed ^ ((who as u64 + 1) << 32) ^ u64::from(round) | 1;
    let ws = Ws::connect(port, "/ws-api/v3");
    let mut acked = Vec::new();
    let (mut sent, mut in_flight) = (0u64, 0);
    loop {
        if sent == MAX_ORDERS_PER_ROUND && in_flight == 0 {
            return acked;
        }
        while in_flight < 8 && sent < MAX_ORDERS_PER_ROUND {
            let (side, price, qty, cid) = order_params(&mut rng, round, who, sent);
            let params = json!({"symbol": "BTCUSDT", "side": side, "type": "LIMIT",
                "timeInForce": "GTC", "quantity": format!("0.0{qty}"), "price": price.to_string(),
                "newClientOrderId": cid, "newOrderRespType": "RESULT"});
            ws.send(&json!({"id": sent, "method": "order.place", "params": sign(t, params)}));
            sent += 1;
            in_flight += 1;
        }
        match ws.next(Duration::from_secs(10)) {
            Some(In::Json(v)) => {
                assert_eq!(v["status"], 200, "{v}");
                acked.push(acked_of(who, &v["result"]));
                if acked.len() == 1 {
                    started.fetch_add(1, Ordering::Relaxed);
                }
                in_flight -= 1;
            }
            Some(In::Closed(_)) => return acked,
            None => panic!("no answer and no close in 10 s"),
        }
    }
}

/// One client thread: limit orders around 20,000 that often cross the
/// others', and a cancel of one of its own open orders now and then, until
/// the server stops answering. Returns what it was acknowledged.
fn trade_until_killed(s: &Server, t: &Trader, c: Client, started: &AtomicUsize) -> Vec<Acked> {
    let Client { who, round, seed } = c;
    let mut rng = seed ^ ((who as u64 + 1) << 32) ^ u64::from(round) | 1;
    let mut acked = Vec::new();
    let mut open: Vec<String> = Vec::new();
    for n in 0..MAX_ORDERS_PER_ROUND {
        let r = if n % 5 == 4 && !open.is_empty() {
            let cid = open.swap_remove(next(&mut rng) as usize % open.len());
            let q = format!("symbol=BTCUSDT&origClientOrderId={cid}");
            t.try_call(s, "DELETE", "/api/v3/order", &q)
        } else {
            let (side, price, qty, cid) = order_params(&mut rng, round, who, n);
            let q = format!(
                "symbol=BTCUSDT&side={side}&type=LIMIT&timeInForce=GTC&quantity=0.0{qty}&price={price}&newClientOrderId={cid}&newOrderRespType=RESULT"
            );
            t.try_call(s, "POST", "/api/v3/order", &q)
        };
        let Ok(r) = r else { break };
        match r.status {
            200 => {
                let a = acked_of(who, &r.json);
                if a.status == "NEW" || a.status == "PARTIALLY_FILLED" {
                    open.push(a.client_id.clone());
                }
                acked.push(a);
                if acked.len() == 1 {
                    started.fetch_add(1, Ordering::Relaxed);
                }
            }
            // The order it cancels was filled meanwhile (-2011).
            400 => assert_eq!(r.json["code"], -2011, "{}", r.json),
            // A reply cut off by the kill: not acknowledged.
            0 => break,
            other => panic!("unexpected answer {other}: {}", r.body),
        }
    }
    acked
}

/// The crash loop's outcome: the server after its last restart (running)
/// and its data directory.
struct Survivor {
    tmp: tempfile::TempDir,
    s: Server,
    /// Orders listed by allOrders after the last restart, all traders.
    orders: usize,
}

/// Trade, SIGKILL, restart and check, ROUNDS times; `env` configures serve.
fn crash_loop(env: &[(&str, &str)]) -> Survivor {
    let seed = std::env::var("MX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("serve crash loop seed {seed} (set MX_CRASH_SEED to reproduce)");
    let mut rng = seed | 1;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut s = Server::start_with(tmp.path(), port, env);
    let admin = login(&s, ADMIN, ADMIN_PW);
    // Four REST clients and one on the WebSocket API (the last).
    let traders: Vec<Trader> = (0..5)
        .map(|i| {
            trader(
                &s,
                &admin,
                &format!("crash{i}"),
                &[("USDT", "10000000"), ("BTC", "1000")],
                &["READ", "TRADE"],
            )
        })
        .collect();
    let mut acked: Vec<Acked> = Vec::new();
    let mut orders = 0;
    for round in 0..ROUNDS {
        let got = Mutex::new(Vec::new());
        // Clients that have had their first answer.
        let started = AtomicUsize::new(0);
        let pid = s.child.id();
        let load_ms = 100 + next(&mut rng) % 500;
        std::thread::scope(|sc| {
            for (who, t) in traders.iter().enumerate() {
                let (s, got, started) = (&s, &got, &started);
                let c = Client { who, round, seed };
                let ws = who == traders.len() - 1;
                sc.spawn(move || {
                    let a = if ws {
                        ws_trade_until_killed(port, t, c, started)
                    } else {
                        trade_until_killed(s, t, c, started)
                    };
                    got.lock().unwrap().extend(a);
                });
            }
            // The load window starts once every client has had an answer
            // (on a loaded machine the first ones may take a while; the
            // WebSocket client must have connected before the kill).
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while started.load(Ordering::Relaxed) < traders.len()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(load_ms));
            common::send_signal(pid, "-KILL");
        });
        // It died of the SIGKILL (not of anything else, and not later).
        let status = s.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "round {round}: serve ended with {status}"
        );
        drop(s);
        let got = got.into_inner().unwrap();
        assert!(
            !got.is_empty(),
            "round {round}: nothing acknowledged in {load_ms} ms"
        );
        acked.extend(got);
        s = Server::start_with(tmp.path(), port, env);
        // Every acknowledged order survived, as far along as acknowledged.
        let books: Vec<HashMap<String, Value>> = traders.iter().map(|t| orders_of(&s, t)).collect();
        for a in &acked {
            let o = books[a.trader].get(&a.client_id).unwrap_or_else(|| {
                panic!(
                    "round {round} (seed {seed}): acknowledged order lost: {a:?} ({} orders listed)",
                    books[a.trader].len()
                )
            });
            assert_eq!(o["orderId"].as_u64(), Some(a.order_id), "{a:?}: {o}");
            let status = o["status"].as_str().unwrap();
            let executed = units(&o["executedQty"]);
            if final_status(&a.status) {
                assert_eq!(
                    (status, executed),
                    (a.status.as_str(), a.executed),
                    "{a:?}: {o}"
                );
            } else {
                assert!(executed >= a.executed, "{a:?} went back: {o}");
            }
        }
        // Nothing appears that no client sent.
        for (i, book) in books.iter().enumerate() {
            for cid in book.keys() {
                let ours = cid.starts_with('r') && cid.contains(&format!("t{i}n"));
                assert!(
                    ours,
                    "round {round}: order {cid} of trader {i} was never sent"
                );
            }
        }
        orders = books.iter().map(HashMap::len).sum();
        // Cancels acknowledged: the order's last acknowledged state is CANCELED.
        let mut last: HashMap<(usize, &str), &Acked> = HashMap::new();
        for a in &acked {
            last.insert((a.trader, a.client_id.as_str()), a);
        }
        for ((who, cid), a) in last {
            if a.status == "CANCELED" {
                assert_eq!(books[who][cid]["status"], "CANCELED", "{a:?}");
            }
        }
    }
    eprintln!(
        "{} acknowledged answers over {ROUNDS} SIGKILL rounds, {orders} orders",
        acked.len()
    );
    Survivor { tmp, s, orders }
}

/// Stop serve cleanly; the journal verifies and replays (with the snapshots
/// serve wrote and without) to one state line, every asset's supply as
/// deposited (replay also checks the engine's invariants, conservation
/// included, and fails otherwise). Returns the state line.
fn journal_agrees(v: Survivor) -> String {
    let Survivor { tmp, s, .. } = v;
    s.terminate();
    let data = tmp.path();
    cli(data, &["journal", "verify"], &[]);
    let with = cli(data, &["journal", "replay"], &[]);
    let without = cli(data, &["journal", "replay", "--no-snapshot"], &[]);
    assert!(with.contains("state_hash="), "{with}");
    assert_eq!(with, without);
    assert!(
        with.contains("BTC=5000.00000000") && with.contains("USDT=50000000.00000000"),
        "supply changed: {with}"
    );
    with
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_order() {
    journal_agrees(crash_loop(&[]));
}

/// The same with the persister running inside serve (one writer per
/// domain), killed with it mid-batch each round: once it has caught up,
/// Postgres holds every order and trade exactly once and
/// `mini-exchange reconcile` finds no difference in balances and ledger.
#[test]
fn sigkill_under_load_with_postgres_persists_exactly_once() {
    let (rt, db) = common::test_db();
    let url = db.url().to_string();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("MX_PERSISTER__WRITERS", "split"),
    ];
    let v = crash_loop(&env);
    common::wait_persisted(&v.s);
    cli(v.tmp.path(), &["reconcile"], &[("DATABASE_URL", &url)]);
    let (orders, trades) = rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let count = |sql: &'static str| {
            let c = &c;
            async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as u64 }
        };
        (
            count("SELECT count(*) FROM orders").await,
            count("SELECT count(*) FROM trades").await,
        )
    });
    assert_eq!(orders as usize, v.orders, "orders in Postgres vs allOrders");
    let state = journal_agrees(v);
    let next_trade: u64 = state
        .split_whitespace()
        .find_map(|f| f.strip_prefix("next_trade_id="))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        trades,
        next_trade - 1,
        "trades in Postgres vs the engine: {state}"
    );
}
