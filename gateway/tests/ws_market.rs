//! Binance market streams over real sockets against a `serve` process: a
//! local order book kept from `@depth@100ms` + REST depth equals the REST
//! book at every quiet point; raw and combined forms; live SUBSCRIBE /
//! UNSUBSCRIBE / LIST_SUBSCRIPTIONS with integer, string and null ids; trade,
//! aggTrade and kline numbers match the trades REST reports; hostile clients
//! (malformed JSON, unknown methods, bad ids, huge frames, floods, a client
//! that never reads) get Binance's errors or are disconnected while another
//! client keeps receiving; seeded hostile control messages get one answer
//! each.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::ws::{In, Ws};
use common::{free_port, login, trader, Server, Trader, ADMIN, ADMIN_PW};

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn get(s: &Server, path: &str) -> Value {
    let r = s.req("GET", path, &[], b"");
    assert_eq!(r.status, 200, "{path}: {}", r.json);
    r.json
}

/// A gauge's value in `/metrics`.
fn gauge(s: &Server, name: &str) -> f64 {
    let r = s.req("GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

fn setup(s: &Server) -> (Trader, Trader) {
    let admin = login(s, ADMIN, ADMIN_PW);
    let alice = trader(
        s,
        &admin,
        "alice",
        &[("USDT", "1000000"), ("BTC", "100")],
        &["READ", "TRADE"],
    );
    let bob = trader(
        s,
        &admin,
        "bob",
        &[("USDT", "1000000"), ("BTC", "100")],
        &["READ", "TRADE"],
    );
    (alice, bob)
}

const GTC: &str = "symbol=BTCUSDT&type=LIMIT&timeInForce=GTC";

type Book = BTreeMap<String, String>;

/// Decimal strings compare as numbers by (integer part length, text).
fn key(p: &str) -> (usize, String) {
    (p.find('.').unwrap_or(p.len()), p.to_string())
}

fn levels(v: &Value) -> Book {
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l[0].as_str().unwrap().to_string(),
                l[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn apply(book: &mut Book, updates: &Value) {
    for l in updates.as_array().unwrap() {
        let (p, q) = (l[0].as_str().unwrap(), l[1].as_str().unwrap());
        if q.bytes().all(|b| b == b'0' || b == b'.') {
            book.remove(p);
        } else {
            book.insert(p.to_string(), q.to_string());
        }
    }
}

fn sorted(b: &Book) -> Vec<(usize, String, String)> {
    let mut v: Vec<_> = b
        .iter()
        .map(|(p, q)| {
            let (n, s) = key(p);
            (n, s, q.clone())
        })
        .collect();
    v.sort();
    v
}

/// Binance's "How to manage a local order book correctly".
struct LocalBook {
    bids: Book,
    asks: Book,
    last_u: u64,
    synced: bool,
    events: u64,
}

impl LocalBook {
    fn new(snapshot: &Value) -> LocalBook {
        LocalBook {
            bids: levels(&snapshot["bids"]),
            asks: levels(&snapshot["asks"]),
            last_u: snapshot["lastUpdateId"].as_u64().unwrap(),
            synced: false,
            events: 0,
        }
    }

    fn on_event(&mut self, e: &Value) {
        assert_eq!(e["e"], "depthUpdate", "{e}");
        assert_eq!(e["s"], "BTCUSDT");
        let (first, last) = (e["U"].as_u64().unwrap(), e["u"].as_u64().unwrap());
        assert!(first <= last, "{e}");
        if last <= self.last_u && !self.synced {
            return; // older than the snapshot
        }
        if self.synced {
            assert_eq!(
                first,
                self.last_u + 1,
                "diff events must be contiguous: {e}"
            );
        } else {
            assert!(
                first <= self.last_u + 1 && self.last_u < last,
                "first event must straddle the snapshot ({}): {e}",
                self.last_u
            );
            self.synced = true;
        }
        apply(&mut self.bids, &e["b"]);
        apply(&mut self.asks, &e["a"]);
        self.last_u = last;
        self.events += 1;
    }
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn local_order_book_from_diff_stream_matches_rest_depth() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let (alice, bob) = setup(&s);
    // Some book before the client arrives.
    for i in 0..5 {
        bob.order(
            &s,
            &format!("{GTC}&side=SELL&quantity=0.{}&price={}", i + 1, 30_010 + i),
        );
        alice.order(
            &s,
            &format!("{GTC}&side=BUY&quantity=0.{}&price={}", i + 1, 29_990 - i),
        );
    }
    let ws = Ws::connect(s.port, "/ws/btcusdt@depth@100ms");
    // An order in flight before the snapshot, to be buffered and dropped.
    bob.order(&s, &format!("{GTC}&side=SELL&quantity=0.7&price=30020"));
    std::thread::sleep(Duration::from_millis(50));
    let snap = get(&s, "/api/v3/depth?symbol=BTCUSDT&limit=5000");
    let mut local = LocalBook::new(&snap);

    let mut rng = Lcg(42);
    let mut open: Vec<(u64, &Trader)> = Vec::new();
    for round in 0..4 {
        for _ in 0..25 {
            let who = if rng.next(2) == 0 { &alice } else { &bob };
            match rng.next(5) {
                0 if !open.is_empty() => {
                    let (id, t) = open.swap_remove(rng.next(open.len() as u64) as usize);
                    // May already be filled: any answer is fine.
                    t.call(
                        &s,
                        "DELETE",
                        "/api/v3/order",
                        &format!("symbol=BTCUSDT&orderId={id}"),
                    );
                }
                _ => {
                    let side = if rng.next(2) == 0 { "BUY" } else { "SELL" };
                    // Around 30000: crossing orders trade, others rest.
                    let price = 29_980 + rng.next(41);
                    let qty = format!("0.{:03}", 1 + rng.next(300));
                    let o = who.order(
                        &s,
                        &format!("{GTC}&side={side}&quantity={qty}&price={price}"),
                    );
                    if o["status"] == "NEW" || o["status"] == "PARTIALLY_FILLED" {
                        open.push((o["orderId"].as_u64().unwrap(), who));
                    }
                }
            }
        }
        // Quiet point: the stream catches up with REST, books are equal.
        let deadline = Instant::now() + Duration::from_secs(10);
        let rest = loop {
            for e in ws.drain(Duration::from_millis(300)) {
                local.on_event(&e);
            }
            let rest = get(&s, "/api/v3/depth?symbol=BTCUSDT&limit=5000");
            if rest["lastUpdateId"].as_u64() == Some(local.last_u) {
                break rest;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: stream at {} but REST at {}",
                local.last_u,
                rest["lastUpdateId"]
            );
        };
        assert!(local.synced, "round {round}: no diff event applied");
        assert_eq!(
            sorted(&local.bids),
            sorted(&levels(&rest["bids"])),
            "round {round}: bids"
        );
        assert_eq!(
            sorted(&local.asks),
            sorted(&levels(&rest["asks"])),
            "round {round}: asks"
        );
    }
    assert!(local.events >= 4, "{} events", local.events);
}

#[test]
fn raw_and_combined_streams_subscriptions_and_trade_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let (alice, bob) = setup(&s);

    // Live subscriptions with integer, string (36 chars) and null ids.
    let live = Ws::connect(s.port, "/ws");
    live.send(
        &json!({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@kline_1m"], "id": 1}),
    );
    assert_eq!(live.reply(), json!({"result": null, "id": 1}));
    let uuid = "0b9a1b6e-4c1f-4d5e-9f3a-2a7c6d8e9f01";
    live.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": uuid}));
    assert_eq!(
        live.reply(),
        json!({"result": ["btcusdt@trade", "btcusdt@kline_1m"], "id": uuid})
    );
    live.send(&json!({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": null}));
    assert_eq!(live.reply(), json!({"result": null, "id": null}));
    live.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": 7}));
    assert_eq!(live.reply(), json!({"result": ["btcusdt@trade"], "id": 7}));
    live.send(&json!({"method": "GET_PROPERTY", "params": ["combined"], "id": 8}));
    assert_eq!(live.reply(), json!({"result": false, "id": 8}));

    // ccxt.pro's /ws/0: an empty connection that takes SUBSCRIBE.
    let ccxt = Ws::connect(s.port, "/ws/0");
    ccxt.send(&json!({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 2}));
    assert_eq!(ccxt.reply(), json!({"result": null, "id": 2}));

    let raw = Ws::connect(s.port, "/ws/btcusdt@trade/btcusdt@kline_1m");
    let combined = Ws::connect(
        s.port,
        "/stream?streams=btcusdt@trade/btcusdt@kline_1m/btcusdt@bookTicker",
    );
    combined.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": 1}));
    assert_eq!(
        combined.reply()["result"],
        json!(["btcusdt@trade", "btcusdt@kline_1m", "btcusdt@bookTicker"])
    );

    // Two makers at 30000, a taker buying both: two trades, one aggTrade.
    bob.order(&s, &format!("{GTC}&side=SELL&quantity=0.5&price=30000"));
    bob.order(&s, &format!("{GTC}&side=SELL&quantity=0.25&price=30000"));
    let o = alice.order(&s, &format!("{GTC}&side=BUY&quantity=0.75&price=30000"));
    assert_eq!(o["status"], "FILLED");
    let rest_trades = get(&s, "/api/v3/trades?symbol=BTCUSDT");
    assert_eq!(rest_trades.as_array().unwrap().len(), 2);
    let kl = get(&s, "/api/v3/klines?symbol=BTCUSDT&interval=1m");
    let k = kl.as_array().unwrap().last().unwrap().clone();

    let check_trades = |msgs: &[Value]| {
        let trades: Vec<&Value> = msgs.iter().filter(|m| m["e"] == "trade").collect();
        assert_eq!(trades.len(), 2, "{msgs:?}");
        for (t, r) in trades.iter().zip(rest_trades.as_array().unwrap()) {
            assert_eq!(t["s"], "BTCUSDT");
            assert_eq!(t["t"], r["id"]);
            assert_eq!(t["p"], r["price"]);
            assert_eq!(t["q"], r["qty"]);
            assert_eq!(t["T"], r["time"]);
            assert_eq!(t["m"], r["isBuyerMaker"]);
            assert_eq!(t["b"], o["orderId"], "the taker bought");
        }
    };
    let check_kline = |msgs: &[Value]| {
        let last = msgs.iter().rev().find(|m| m["e"] == "kline").unwrap();
        let kk = &last["k"];
        assert_eq!(
            (&kk["t"], &kk["o"], &kk["h"], &kk["l"], &kk["c"], &kk["v"]),
            (&k[0], &k[1], &k[2], &k[3], &k[4], &k[5])
        );
        assert_eq!(
            (&kk["T"], &kk["q"], &kk["n"], &kk["V"], &kk["Q"]),
            (&k[6], &k[7], &k[8], &k[9], &k[10])
        );
        assert_eq!((&kk["i"], &kk["s"]), (&json!("1m"), &json!("BTCUSDT")));
    };

    let raw_msgs = raw.drain(Duration::from_millis(700));
    check_trades(&raw_msgs);
    check_kline(&raw_msgs);

    let wrapped = combined.drain(Duration::from_millis(700));
    for w in &wrapped {
        assert!(w["stream"].is_string() && w["data"].is_object(), "{w}");
    }
    let by = |name: &str| -> Vec<Value> {
        wrapped
            .iter()
            .filter(|w| w["stream"] == name)
            .map(|w| w["data"].clone())
            .collect()
    };
    check_trades(&by("btcusdt@trade"));
    check_kline(&by("btcusdt@kline_1m"));
    let bt = by("btcusdt@bookTicker");
    assert!(!bt.is_empty());
    let depth = get(&s, "/api/v3/depth?symbol=BTCUSDT");
    assert_eq!(bt.last().unwrap()["u"], depth["lastUpdateId"]);

    let live_msgs = live.drain(Duration::from_millis(700));
    check_trades(&live_msgs);
    assert!(
        live_msgs.iter().all(|m| m["e"] == "trade"),
        "unsubscribed kline"
    );

    let agg = ccxt.drain(Duration::from_millis(700));
    assert_eq!(agg.len(), 1, "{agg:?}");
    let a = &agg[0];
    let rest_agg = get(&s, "/api/v3/aggTrades?symbol=BTCUSDT");
    let r = &rest_agg[0];
    assert_eq!(
        (&a["a"], &a["p"], &a["q"], &a["f"], &a["l"], &a["T"], &a["m"]),
        (&r["a"], &r["p"], &r["q"], &r["f"], &r["l"], &r["T"], &r["m"])
    );

    // /metrics counts them: every connection above has had its messages,
    // so it is subscribed. live 1 + ccxt 1 + raw 2 + combined 3; distinct:
    // trade, aggTrade, kline_1m, bookTicker.
    assert_eq!(gauge(&s, "mx_websocket_subscriptions"), 7.0);
    assert_eq!(gauge(&s, "mx_websocket_streams"), 4.0);
    // A closed connection's subscriptions go (aggTrade had only it).
    drop(ccxt);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gauge(&s, "mx_websocket_subscriptions") != 6.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "ccxt's subscription stayed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(gauge(&s, "mx_websocket_streams"), 3.0);

    // SET_PROPERTY combined on a raw connection wraps what follows.
    raw.send(&json!({"method": "SET_PROPERTY", "params": ["combined", true], "id": 5}));
    assert_eq!(raw.reply(), json!({"result": null, "id": 5}));
    bob.order(&s, &format!("{GTC}&side=SELL&quantity=0.1&price=30000"));
    alice.order(&s, &format!("{GTC}&side=BUY&quantity=0.1&price=30000"));
    // Every message is wrapped now; other subscribed streams (klines) may
    // come first.
    let mut found = false;
    for _ in 0..10 {
        let m = raw.json();
        assert!(m["stream"].is_string() && m["data"].is_object(), "{m}");
        if m["stream"] == "btcusdt@trade" {
            found = true;
            break;
        }
    }
    assert!(found, "no wrapped trade event");

    // Partial book and tickers arrive on their timers.
    let p = Ws::connect(
        s.port,
        "/stream?streams=btcusdt@depth5@100ms/btcusdt@ticker/!miniTicker@arr",
    );
    bob.order(&s, &format!("{GTC}&side=SELL&quantity=0.2&price=30100"));
    let msgs = p.drain(Duration::from_millis(1500));
    let d5 = msgs
        .iter()
        .rev()
        .find(|m| m["stream"] == "btcusdt@depth5@100ms")
        .unwrap();
    let depth = get(&s, "/api/v3/depth?symbol=BTCUSDT&limit=5");
    assert_eq!(d5["data"], depth);
    let t = msgs
        .iter()
        .find(|m| m["stream"] == "btcusdt@ticker")
        .unwrap();
    let rt = get(&s, "/api/v3/ticker/24hr?symbol=BTCUSDT");
    assert_eq!(
        (&t["data"]["c"], &t["data"]["n"], &t["data"]["v"]),
        (&rt["lastPrice"], &rt["count"], &rt["volume"])
    );
    let arr = msgs
        .iter()
        .find(|m| m["stream"] == "!miniTicker@arr")
        .unwrap();
    assert_eq!(arr["data"][0]["e"], "24hrMiniTicker");
}

/// Every stream of BTCUSDT (33 names).
fn btc_streams() -> Vec<String> {
    let mut v: Vec<String> = ["trade", "aggTrade", "ticker", "miniTicker", "bookTicker"]
        .iter()
        .map(|x| format!("btcusdt@{x}"))
        .collect();
    for d in ["depth", "depth5", "depth10", "depth20"] {
        for speed in ["", "@100ms", "@1000ms"] {
            v.push(format!("btcusdt@{d}{speed}"));
        }
    }
    for i in [
        "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d",
        "1w", "1M",
    ] {
        v.push(format!("btcusdt@kline_{i}"));
    }
    v
}

#[test]
fn hostile_clients_get_errors_or_are_disconnected() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        tmp.path(),
        free_port(),
        &[
            ("MX_HTTP__WS_SEND_QUEUE", "256"),
            // A small socket buffer: the sleeper is cut off after 256
            // queued messages and at most ~32 KiB of kernel buffer, long
            // before the end (with an autotuned 4 MiB buffer it once
            // absorbed every message and was never cut off).
            ("MX_HTTP__SEND_BUFFER_BYTES", "16384"),
            ("MX_HTTP__WS_MAX_SUBSCRIPTIONS", "32"),
            ("MX_HTTP__WS_MAX_MESSAGES_PER_SEC", "20"),
        ],
    );
    let (alice, bob) = setup(&s);

    let c = Ws::connect(s.port, "/ws");
    c.send_text("{not json");
    let e = c.reply();
    assert_eq!(e["code"], 3, "{e}");
    assert!(
        e["msg"].as_str().unwrap().starts_with("Invalid JSON: "),
        "{e}"
    );
    c.send(&json!({"method": "FOO", "params": [], "id": 9}));
    let e = c.reply();
    assert_eq!(e["code"], 2);
    assert_eq!(e["id"], 9);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .starts_with("Invalid request: unknown variant `FOO`, expected one of `SUBSCRIBE`"),
        "{e}"
    );
    for bad_id in [json!({"x": 1}), json!("x".repeat(37)), json!(1.5)] {
        c.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": bad_id}));
        assert_eq!(
            c.reply(),
            json!({"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"})
        );
    }
    c.send(&json!({"params": [], "id": 3}));
    assert_eq!(c.reply()["msg"], "Invalid request: missing field `method`");
    c.send(&json!({"method": "SUBSCRIBE", "params": ["nosuch@trade"], "id": 4}));
    assert_eq!(c.reply()["code"], 2);
    c.send(&json!({"method": "SET_PROPERTY", "params": ["colour", true], "id": 6}));
    assert_eq!(
        c.reply(),
        json!({"code": 0, "msg": "Unknown property", "id": 6})
    );
    c.send(&json!({"method": "SET_PROPERTY", "params": ["combined", 1], "id": 7}));
    assert_eq!(c.reply()["code"], 1);
    // Subscription limit (32 here, 1024 by default): all 33 streams of a
    // symbol are one too many, and none is subscribed.
    let all = btc_streams();
    assert_eq!(all.len(), 33);
    c.send(&json!({"method": "SUBSCRIBE", "params": all, "id": 10}));
    let e = c.reply();
    assert_eq!(e["code"], 2, "{e}");
    assert!(e["msg"]
        .as_str()
        .unwrap()
        .contains("too many subscriptions"));
    c.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": 11}));
    assert_eq!(c.reply(), json!({"result": [], "id": 11}));

    // A huge frame closes the connection.
    let big = Ws::connect(s.port, "/ws");
    big.send_text(&format!(
        "{{\"method\":\"SUBSCRIBE\",\"params\":[\"{}\"],\"id\":1}}",
        "a".repeat(100 << 10)
    ));
    if let Some((code, _)) = big.closed(Duration::from_secs(10)) {
        assert_eq!(code, 1009);
    }

    // A request flood (more than 20 messages a second) is disconnected.
    let flood = Ws::connect(s.port, "/ws");
    for i in 0..100 {
        flood.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": i}));
    }
    let (code, reason) = flood.closed(Duration::from_secs(10)).expect("close frame");
    assert_eq!(code, 1008);
    assert!(reason.contains("too many messages"), "{reason}");

    // A client that never reads is cut off; a reading client on the same
    // streams receives every trade, and the server stays responsive.
    let streams = format!("/stream?streams={}", btc_streams()[..32].join("/"));
    let sleeper = Ws::connect_with(s.port, &streams, Some(4096), false);
    let good = Ws::connect(s.port, &streams);
    good.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": 0}));
    assert_eq!(good.reply()["result"].as_array().unwrap().len(), 32);
    // A deep book makes every partial-depth message big.
    for i in 0..20 {
        bob.order(
            &s,
            &format!("{GTC}&side=SELL&quantity=1&price={}", 31_000 + i),
        );
        alice.order(
            &s,
            &format!("{GTC}&side=BUY&quantity=1&price={}", 29_000 - i),
        );
    }
    let mut trades = 0;
    let mut seen = 0;
    let mut total = 0;
    let start = Instant::now();
    for _ in 0..500 {
        bob.order(&s, &format!("{GTC}&side=SELL&quantity=0.01&price=30000"));
        alice.order(&s, &format!("{GTC}&side=BUY&quantity=0.01&price=30000"));
        trades += 1;
        let got = good.drain(Duration::from_millis(1));
        total += got.len();
        seen += got
            .iter()
            .filter(|m| m["stream"] == "btcusdt@trade")
            .count();
    }
    assert!(start.elapsed() < Duration::from_secs(60));
    let rest: Vec<Value> = good.drain(Duration::from_millis(800));
    total += rest.len();
    seen += rest
        .iter()
        .filter(|m| m["stream"] == "btcusdt@trade")
        .count();
    assert_eq!(seen, trades, "the reading client got every trade");
    // Now the sleeper reads: what was buffered, then the end.
    let _ = sleeper.out.send(Message::Binary(Vec::new().into()));
    let mut n = 0;
    let t0 = Instant::now();
    let closed = loop {
        match sleeper.next(Duration::from_secs(20)) {
            Some(In::Json(_)) => n += 1,
            Some(In::Closed(c)) => break c,
            None => panic!("sleeper not closed after {n} messages"),
        }
        if t0.elapsed() > Duration::from_secs(20) {
            panic!("sleeper still receiving after {n} of {total} messages");
        }
    };
    assert!(
        n < total / 2,
        "the sleeper was cut off early: {n} of {total} messages"
    );
    if let Some((code, reason)) = closed {
        assert_eq!(code, 1008);
        assert!(reason.contains("slow consumer"), "{reason}");
    }
    // The good client is still connected and served.
    good.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": 1}));
    assert_eq!(good.reply()["id"], 1);
}

/// xorshift for the seeded tests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A stream name: mostly valid, else unknown, malformed, huge or no string.
fn stream_name(r: &mut Rng, streams: &[String]) -> Value {
    match r.below(8) {
        0..=3 => json!(streams[r.below(streams.len() as u64) as usize]),
        4 => json!("ethusdt@kline_7m"),
        5 => json!("BTCUSDT@TRADE"),
        6 => {
            let long = "x".repeat(300);
            json!(["@", "btcusdt@", long.as_str(), "", "!ticker@arr"][r.below(5) as usize])
        }
        _ => json!(7),
    }
}

fn hostile_value(r: &mut Rng) -> Value {
    match r.below(8) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(1.5),
        3 => json!(u64::MAX),
        4 => json!("17"),
        5 => json!({"a": [1]}),
        6 => json!([]),
        _ => json!(true),
    }
}

/// Seeded hostile control messages on `/ws` and `/stream`: random methods
/// (the ones of Binance, unknown ones, missing), params (stream names
/// valid, unknown, malformed, long lists, wrong types) and ids (integers,
/// strings, floats, objects, null, missing), and text that is not JSON.
/// Each message gets exactly one answer, a result or Binance's
/// `{"code","msg"}` error, while stream payloads flow in between; the
/// connection stays open; a last `LIST_SUBSCRIPTIONS` is answered in turn.
/// `MX_FUZZ_SEEDS` sweeps other seeds.
#[test]
fn seeded_hostile_control_messages_each_get_one_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        tmp.path(),
        free_port(),
        &[("MX_HTTP__WS_MAX_MESSAGES_PER_SEC", "1000000")],
    );
    let (alice, bob) = setup(&s);
    let streams = btc_streams();
    for seed in common::fuzz_seeds(&[1, 2, 3]) {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let path = if seed % 2 == 0 {
            "/ws"
        } else {
            "/stream?streams=btcusdt@trade"
        };
        let c = Ws::connect(s.port, path);
        for n in 0..600u64 {
            let text = if r.below(25) == 0 {
                let junk = ["{", "[]", "null", "\"SUBSCRIBE\"", "{\"method\":", "\u{0}"];
                junk[r.below(junk.len() as u64) as usize].to_string()
            } else {
                let methods = [
                    "SUBSCRIBE",
                    "UNSUBSCRIBE",
                    "LIST_SUBSCRIPTIONS",
                    "SET_PROPERTY",
                    "GET_PROPERTY",
                    "subscribe",
                    "",
                    "PING",
                ];
                let method = methods[r.below(methods.len() as u64) as usize];
                let params = match r.below(6) {
                    0 => {
                        let k = r.below(4);
                        Value::Array((0..k).map(|_| stream_name(&mut r, &streams)).collect())
                    }
                    1 => {
                        let k = r.below(60);
                        Value::Array((0..k).map(|_| stream_name(&mut r, &streams)).collect())
                    }
                    2 => json!(["combined", hostile_value(&mut r)]),
                    3 => json!(["combined"]),
                    4 => hostile_value(&mut r),
                    _ => json!([stream_name(&mut r, &streams)]),
                };
                let mut m = serde_json::Map::new();
                if r.below(10) > 0 {
                    m.insert("method".into(), json!(method));
                }
                if r.below(10) > 0 {
                    m.insert("params".into(), params);
                }
                match r.below(4) {
                    0 => {}
                    1 => {
                        m.insert("id".into(), hostile_value(&mut r));
                    }
                    _ => {
                        m.insert("id".into(), json!(n));
                    }
                }
                Value::Object(m).to_string()
            };
            c.send_text(&text);
            let a = c.reply();
            let ok = a.get("result").is_some() || (a["code"].is_i64() && a["msg"].is_string());
            assert!(ok, "seed {seed}: {text} -> {a}");
            // Trades now and then, so subscribed streams carry payloads.
            if n % 100 == 0 {
                bob.order(
                    &s,
                    "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30000",
                );
                alice.order(
                    &s,
                    "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.001&price=30000",
                );
            }
        }
        c.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": 999_999}));
        let last = c.reply();
        assert_eq!(
            last["id"], 999_999,
            "seed {seed}: answers out of step: {last}"
        );
        assert!(last["result"].is_array(), "{last}");
    }
}
