//! Black-box tests of the market-data endpoints against a real `serve`
//! process: crossing orders at known prices and quantities, then klines
//! (1s, 1m, 1h), aggTrades (a taker sweeping two makers at one price is one
//! aggregate), ticker/24hr (FULL and MINI), ticker/price, bookTicker and
//! avgPrice checked to the unit; the parameter errors of each endpoint;
//! and, after SIGTERM and a restart, the same answers rebuilt from the
//! journal, with new trades landing in the same klines.

mod common;

use common::*;
use serde_json::{json, Value};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;

fn get(s: &Server, path: &str) -> Value {
    let r = s.req("GET", path, &[], b"");
    assert_eq!(r.status, 200, "GET {path}: {}", r.json);
    r.json
}

/// Status, code and message of a request that must fail.
fn fail(s: &Server, path: &str) -> (u16, i64, String) {
    let r = s.req("GET", path, &[], b"");
    assert!(r.head.contains("application/json"), "{path}: {}", r.head);
    (
        r.status,
        r.json["code"].as_i64().unwrap_or(0),
        r.json["msg"].as_str().unwrap_or("").to_string(),
    )
}

/// Units of an 8-decimal string ("30000.00000000").
fn units(s: &Value) -> u128 {
    let s = s.as_str().unwrap();
    let (int, frac) = s.split_once('.').unwrap();
    assert_eq!(frac.len(), 8, "{s}");
    int.parse::<u128>().unwrap() * 100_000_000 + frac.parse::<u128>().unwrap()
}

fn dec(u: u128) -> String {
    format!("{}.{:08}", u / 100_000_000, u % 100_000_000)
}

/// Klines computed in the test from `/api/v3/trades` (oldest first) for a
/// fixed interval length: what the server must answer, whatever minute or
/// hour boundary the test happened to cross.
fn expected_klines(trades: &[Value], len_ms: u64) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut cur: Option<(u64, Vec<&Value>)> = None;
    let mut flush = |open: u64, ts: &[&Value]| {
        let price = |t: &Value| units(&t["price"]);
        let sum = |f: &dyn Fn(&Value) -> u128| ts.iter().map(|t| f(t)).sum::<u128>();
        let buy = |t: &Value| t["isBuyerMaker"] == false;
        out.push(json!([
            open,
            ts[0]["price"],
            dec(ts.iter().map(|t| price(t)).max().unwrap()),
            dec(ts.iter().map(|t| price(t)).min().unwrap()),
            ts[ts.len() - 1]["price"],
            dec(sum(&|t| units(&t["qty"]))),
            open + len_ms - 1,
            dec(sum(&|t| units(&t["quoteQty"]))),
            ts.len(),
            dec(sum(&|t| if buy(t) { units(&t["qty"]) } else { 0 })),
            dec(sum(&|t| if buy(t) { units(&t["quoteQty"]) } else { 0 })),
            "0",
        ]));
    };
    for t in trades {
        let time = t["time"].as_u64().unwrap();
        let open = time - time % len_ms;
        match &mut cur {
            Some((o, list)) if *o == open => list.push(t),
            _ => {
                if let Some((o, list)) = cur.take() {
                    flush(o, &list);
                }
                cur = Some((open, vec![t]));
            }
        }
    }
    if let Some((o, list)) = cur.take() {
        flush(o, &list);
    }
    out
}

/// The 24 h ticker without its request-time window bounds.
fn ticker_body(mut v: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    let (open, close) = (
        o.remove("openTime").unwrap(),
        o.remove("closeTime").unwrap(),
    );
    assert_eq!(
        close.as_u64().unwrap() - open.as_u64().unwrap(),
        24 * HOUR,
        "rolling 24 h window"
    );
    v
}

fn btc_trades(s: &Server) -> Vec<Value> {
    get(s, "/api/v3/trades?symbol=BTCUSDT&limit=1000")
        .as_array()
        .unwrap()
        .clone()
}

/// Everything the restart must preserve.
fn snapshot_of(s: &Server) -> Vec<Value> {
    vec![
        get(s, "/api/v3/klines?symbol=BTCUSDT&interval=1m"),
        get(s, "/api/v3/klines?symbol=BTCUSDT&interval=1h"),
        get(s, "/api/v3/klines?symbol=BTCUSDT&interval=1s"),
        get(s, "/api/v3/klines?symbol=BTCUSDT&interval=1M"),
        get(s, "/api/v3/uiKlines?symbol=BTCUSDT&interval=1w"),
        ticker_body(get(s, "/api/v3/ticker/24hr?symbol=BTCUSDT")),
        get(s, "/api/v3/aggTrades?symbol=BTCUSDT"),
        get(s, "/api/v3/trades?symbol=BTCUSDT"),
        get(s, "/api/v3/ticker/price"),
        get(s, "/api/v3/ticker/bookTicker"),
        get(s, "/api/v3/depth?symbol=BTCUSDT"),
    ]
}

#[test]
fn market_data_endpoints_and_rebuild_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let admin = login(&s, ADMIN, ADMIN_PW);
    let alice = trader(
        &s,
        &admin,
        "alice",
        &[("USDT", "50000")],
        &["READ", "TRADE"],
    );
    let bob = trader(
        &s,
        &admin,
        "bob",
        &[("BTC", "2"), ("USDT", "20000")],
        &["READ", "TRADE"],
    );

    // Nothing traded yet: empty lists, a quiet ticker.
    assert_eq!(
        get(&s, "/api/v3/klines?symbol=BTCUSDT&interval=1m"),
        json!([])
    );
    assert_eq!(get(&s, "/api/v3/aggTrades?symbol=BTCUSDT"), json!([]));
    let t = get(&s, "/api/v3/ticker/24hr?symbol=BTCUSDT");
    assert_eq!(
        (&t["firstId"], &t["lastId"], &t["count"], &t["volume"]),
        (&json!(-1), &json!(-1), &json!(0), &json!("0.00000000"))
    );

    // Bob offers 0.5 and 0.3 at 30000 and 0.2 at 30100; Alice buys 1 at
    // 30100 and sweeps all three: one aggregate for the two makers at
    // 30000, one at 30100.
    let gtc = "symbol=BTCUSDT&type=LIMIT&timeInForce=GTC";
    bob.order(&s, &format!("{gtc}&side=SELL&quantity=0.5&price=30000"));
    bob.order(&s, &format!("{gtc}&side=SELL&quantity=0.3&price=30000"));
    bob.order(&s, &format!("{gtc}&side=SELL&quantity=0.2&price=30100"));
    let o = alice.order(&s, &format!("{gtc}&side=BUY&quantity=1&price=30100"));
    assert_eq!(o["status"], "FILLED", "{o}");
    assert_eq!(o["fills"].as_array().unwrap().len(), 3);
    // A taker SELL: Bob bids 0.1 at 29900, Alice hits it.
    bob.order(&s, &format!("{gtc}&side=BUY&quantity=0.1&price=29900"));
    let o = alice.order(&s, &format!("{gtc}&side=SELL&quantity=0.1&price=29900"));
    assert_eq!(o["status"], "FILLED", "{o}");
    // Resting orders for the book tickers.
    bob.order(&s, &format!("{gtc}&side=BUY&quantity=0.25&price=29800"));
    bob.order(&s, &format!("{gtc}&side=SELL&quantity=0.4&price=30500"));

    let trades = btc_trades(&s);
    assert_eq!(trades.len(), 4);
    let ids: Vec<u64> = trades.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    let times: Vec<u64> = trades.iter().map(|t| t["time"].as_u64().unwrap()).collect();
    let (t1, t2, t3, t4) = (ids[0], ids[1], ids[2], ids[3]);

    // ---- aggTrades ----
    let agg = get(&s, "/api/v3/aggTrades?symbol=BTCUSDT");
    assert_eq!(
        agg,
        json!([
            {"a": t1, "p": "30000.00000000", "q": "0.80000000", "f": t1, "l": t2,
             "T": times[0], "m": false, "M": true},
            {"a": t3, "p": "30100.00000000", "q": "0.20000000", "f": t3, "l": t3,
             "T": times[2], "m": false, "M": true},
            {"a": t4, "p": "29900.00000000", "q": "0.10000000", "f": t4, "l": t4,
             "T": times[3], "m": true, "M": true},
        ])
    );
    assert_eq!(times[0], times[1]);
    assert_eq!(times[1], times[2]);
    let a_ids = |v: Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["a"].as_u64().unwrap())
            .collect()
    };
    let q = |p: &str| a_ids(get(&s, &format!("/api/v3/aggTrades?symbol=BTCUSDT&{p}")));
    assert_eq!(q(&format!("fromId={t3}")), vec![t3, t4]);
    assert_eq!(q(&format!("fromId={t2}&limit=1")), vec![t3]);
    assert_eq!(q("limit=1"), vec![t4]);
    assert_eq!(
        q("limit=1001"),
        vec![t1, t3, t4],
        "limit above 1000 is capped"
    );
    // Two commands may share a millisecond: expect by time, inclusive.
    let by_time = |lo: u64, hi: u64| -> Vec<u64> {
        [(t1, times[0]), (t3, times[2]), (t4, times[3])]
            .iter()
            .filter(|(_, t)| (lo..=hi).contains(t))
            .map(|(a, _)| *a)
            .collect()
    };
    assert_eq!(
        q(&format!("startTime={}&endTime={}", times[0], times[0])),
        by_time(times[0], times[0])
    );
    assert_eq!(
        q(&format!("startTime={}", times[3])),
        by_time(times[3], u64::MAX)
    );
    assert_eq!(q(&format!("endTime={}", times[3])), vec![t1, t3, t4]);
    assert_eq!(q(&format!("endTime={}", times[0] - 1)), Vec::<u64>::new());

    // ---- klines ----
    let k1m = get(&s, "/api/v3/klines?symbol=BTCUSDT&interval=1m");
    assert_eq!(k1m, json!(expected_klines(&trades, MINUTE)));
    let k1h = get(&s, "/api/v3/klines?symbol=BTCUSDT&interval=1h");
    assert_eq!(k1h, json!(expected_klines(&trades, HOUR)));
    let k1s = get(&s, "/api/v3/klines?symbol=BTCUSDT&interval=1s&limit=1000");
    assert_eq!(k1s, json!(expected_klines(&trades, 1_000)));
    // The common case, spelled out: all four trades in one minute.
    let one_candle = |len: u64| {
        let open = times[0] - times[0] % len;
        json!([[
            open,
            "30000.00000000",
            "30100.00000000",
            "29900.00000000",
            "29900.00000000",
            "1.10000000",
            open + len - 1,
            "33010.00000000",
            4,
            "1.00000000",
            "30020.00000000",
            "0"
        ]])
    };
    if times[3] / MINUTE == times[0] / MINUTE {
        assert_eq!(k1m, one_candle(MINUTE));
    }
    if times[3] / HOUR == times[0] / HOUR {
        assert_eq!(k1h, one_candle(HOUR));
    }
    // uiKlines answers the same; 16 intervals are accepted.
    assert_eq!(get(&s, "/api/v3/uiKlines?symbol=BTCUSDT&interval=1m"), k1m);
    for i in [
        "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d",
        "1w", "1M",
    ] {
        let k = get(&s, &format!("/api/v3/klines?symbol=BTCUSDT&interval={i}"));
        let k = k.as_array().unwrap();
        let n: u64 = k.iter().map(|c| c[8].as_u64().unwrap()).sum();
        assert_eq!(n, 4, "{i}: every trade in exactly one kline");
        for c in k {
            let (open, close) = (c[0].as_u64().unwrap(), c[6].as_u64().unwrap());
            assert!(
                open <= times[3] && close >= times[0] && close > open,
                "{i}: {c}"
            );
        }
    }
    // startTime/endTime select by open time; limit keeps the most recent.
    let last_open = k1m.as_array().unwrap().last().unwrap()[0].as_u64().unwrap();
    let sel = |p: &str| {
        get(
            &s,
            &format!("/api/v3/klines?symbol=BTCUSDT&interval=1m&{p}"),
        )
    };
    assert_eq!(sel(&format!("startTime={}", last_open + 1)), json!([]));
    assert_eq!(
        sel(&format!("endTime={}", last_open - 1))
            .as_array()
            .unwrap()
            .len(),
        k1m.as_array().unwrap().len() - 1
    );
    assert_eq!(
        sel("limit=1"),
        json!([k1m.as_array().unwrap().last().unwrap()])
    );
    assert_eq!(
        sel(&format!("startTime={last_open}&endTime={last_open}"))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // timeZone: 0 and offsets that move no boundary of the interval.
    assert_eq!(sel("timeZone=0"), k1m);
    assert_eq!(sel("timeZone=%2B08:00"), k1m);
    assert_eq!(sel("timeZone=-5"), k1m);

    // ---- ticker/24hr ----
    let full = get(&s, "/api/v3/ticker/24hr?symbol=BTCUSDT");
    let now = now_ms();
    let close = full["closeTime"].as_u64().unwrap();
    assert!(
        close <= now && close + 60_000 > now,
        "closeTime is the request time"
    );
    assert_eq!(
        ticker_body(full.clone()),
        json!({
            "symbol": "BTCUSDT",
            "priceChange": "-100.00000000",
            "priceChangePercent": "-0.333",
            "weightedAvgPrice": "30009.09090909",
            "prevClosePrice": "0.00000000",
            "lastPrice": "29900.00000000",
            "lastQty": "0.10000000",
            "bidPrice": "29800.00000000",
            "bidQty": "0.25000000",
            "askPrice": "30500.00000000",
            "askQty": "0.40000000",
            "openPrice": "30000.00000000",
            "highPrice": "30100.00000000",
            "lowPrice": "29900.00000000",
            "volume": "1.10000000",
            "quoteVolume": "33010.00000000",
            "firstId": t1,
            "lastId": t4,
            "count": 4,
        })
    );
    let mini = get(&s, "/api/v3/ticker/24hr?symbol=BTCUSDT&type=MINI");
    assert_eq!(
        ticker_body(mini),
        json!({
            "symbol": "BTCUSDT",
            "openPrice": "30000.00000000",
            "highPrice": "30100.00000000",
            "lowPrice": "29900.00000000",
            "lastPrice": "29900.00000000",
            "volume": "1.10000000",
            "quoteVolume": "33010.00000000",
            "firstId": t1,
            "lastId": t4,
            "count": 4,
        })
    );
    let all = get(&s, "/api/v3/ticker/24hr");
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 3, "every configured pair");
    let eth = all.iter().find(|t| t["symbol"] == "ETHUSDT").unwrap();
    assert_eq!(
        (
            &eth["count"],
            &eth["firstId"],
            &eth["lastId"],
            &eth["lastPrice"]
        ),
        (&json!(0), &json!(-1), &json!(-1), &json!("0.00000000"))
    );
    let two = get(
        &s,
        "/api/v3/ticker/24hr?symbols=%5B%22ETHBTC%22,%22BTCUSDT%22%5D&type=MINI",
    );
    let names: Vec<&str> = two
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ETHBTC", "BTCUSDT"]);
    assert_eq!(
        get(
            &s,
            "/api/v3/ticker/24hr?symbol=BTCUSDT&symbolStatus=TRADING"
        )["count"],
        4
    );

    // ---- ticker/price, bookTicker, avgPrice ----
    assert_eq!(
        get(&s, "/api/v3/ticker/price?symbol=BTCUSDT"),
        json!({"symbol": "BTCUSDT", "price": "29900.00000000"})
    );
    let prices = get(&s, "/api/v3/ticker/price");
    assert_eq!(prices.as_array().unwrap().len(), 3);
    assert!(prices
        .as_array()
        .unwrap()
        .contains(&json!({"symbol": "ETHUSDT", "price": "0.00000000"})));
    assert_eq!(
        get(&s, "/api/v3/ticker/price?symbols=%5B%22BTCUSDT%22%5D"),
        json!([{"symbol": "BTCUSDT", "price": "29900.00000000"}])
    );
    assert_eq!(
        get(&s, "/api/v3/ticker/bookTicker?symbol=BTCUSDT"),
        json!({"symbol": "BTCUSDT", "bidPrice": "29800.00000000", "bidQty": "0.25000000",
               "askPrice": "30500.00000000", "askQty": "0.40000000"})
    );
    let books = get(&s, "/api/v3/ticker/bookTicker");
    assert!(books
        .as_array()
        .unwrap()
        .contains(&json!({"symbol": "ETHBTC",
        "bidPrice": "0.00000000", "bidQty": "0.00000000",
        "askPrice": "0.00000000", "askQty": "0.00000000"})));
    // (15000 + 9000 + 6020 + 2990) / 1.1 = 30009.090909...
    assert_eq!(
        get(&s, "/api/v3/avgPrice?symbol=BTCUSDT"),
        json!({"mins": 5, "price": "30009.09090909", "closeTime": times[3]})
    );

    // ---- errors: Binance codes, never 500 ----
    let cases: Vec<(&str, (u16, i64))> = vec![
        ("/api/v3/klines?symbol=BTCUSDT&interval=2m", (400, -1120)),
        ("/api/v3/klines?symbol=BTCUSDT&interval=1D", (400, -1120)),
        ("/api/v3/klines?symbol=BTCUSDT", (400, -1102)),
        ("/api/v3/klines?interval=1m", (400, -1102)),
        ("/api/v3/klines?symbol=NOPE&interval=1m", (400, -1121)),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&foo=1",
            (400, -1104),
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&interval=1h",
            (400, -1101),
        ),
        ("/api/v3/klines?symbol=BTCUSDT&interval=", (400, -1105)),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=0",
            (400, -1130),
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=-1",
            (400, -1100),
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=abc",
            (400, -1100),
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=99999999999999999999999",
            (400, -1100),
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&timeZone=15",
            (400, -1130),
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1d&timeZone=8",
            (400, -1130),
        ),
        (
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&timeZone=abc",
            (400, -1130),
        ),
        ("/api/v3/uiKlines?symbol=BTCUSDT&interval=7m", (400, -1120)),
        ("/api/v3/aggTrades", (400, -1102)),
        ("/api/v3/aggTrades?symbol=NOPE", (400, -1121)),
        ("/api/v3/aggTrades?symbol=BTCUSDT&fromId=x", (400, -1100)),
        (
            "/api/v3/aggTrades?symbol=BTCUSDT&fromId=1&startTime=1",
            (400, -1128),
        ),
        ("/api/v3/aggTrades?symbol=BTCUSDT&limit=0", (400, -1130)),
        ("/api/v3/aggTrades?symbol=BTCUSDT&bogus=1", (400, -1104)),
        ("/api/v3/ticker/24hr?symbol=NOPE", (400, -1121)),
        (
            "/api/v3/ticker/24hr?symbol=BTCUSDT&symbols=%5B%22BTCUSDT%22%5D",
            (400, -1128),
        ),
        ("/api/v3/ticker/24hr?symbols=BTCUSDT", (400, -1100)),
        (
            "/api/v3/ticker/24hr?symbols=%5B%22BTCUSDT%22,%22NOPE%22%5D",
            (400, -1121),
        ),
        ("/api/v3/ticker/24hr?symbols=%5B%5D", (400, -1102)),
        ("/api/v3/ticker/24hr?type=FOO", (400, -1139)),
        (
            "/api/v3/ticker/24hr?symbol=BTCUSDT&symbolStatus=HALT",
            (400, -1220),
        ),
        ("/api/v3/ticker/24hr?symbolStatus=NOPE", (400, -1122)),
        ("/api/v3/ticker/24hr?symbol=", (400, -1105)),
        ("/api/v3/ticker/price?symbol=NOPE", (400, -1121)),
        ("/api/v3/ticker/price?type=MINI", (400, -1104)),
        (
            "/api/v3/ticker/bookTicker?symbols=%5B%22NOPE%22%5D",
            (400, -1121),
        ),
        ("/api/v3/avgPrice", (400, -1102)),
        ("/api/v3/avgPrice?symbol=NOPE", (400, -1121)),
        (
            "/api/v3/avgPrice?symbol=BTCUSDT&symbol=BTCUSDT",
            (400, -1101),
        ),
    ];
    for (path, want) in cases {
        let (status, code, msg) = fail(&s, path);
        assert_eq!((status, code), want, "{path}: {msg}");
    }
    assert_eq!(
        fail(&s, "/api/v3/klines?symbol=BTCUSDT&interval=2m").2,
        "Invalid interval."
    );
    assert_eq!(
        fail(&s, "/api/v3/avgPrice?symbol=NOPE").2,
        "Invalid symbol."
    );

    // ---- restart: SIGTERM, start again, the same answers ----
    let before = snapshot_of(&s);
    let avg_before = get(&s, "/api/v3/avgPrice?symbol=BTCUSDT");
    s.terminate();
    let s = Server::start(tmp.path(), free_port());
    let after = snapshot_of(&s);
    for (b, a) in before.iter().zip(after.iter()) {
        assert_eq!(a, b, "rebuilt after restart");
    }
    assert_eq!(get(&s, "/api/v3/avgPrice?symbol=BTCUSDT"), avg_before);

    // Trading goes on into the same klines and aggregates.
    let o = alice.order(&s, &format!("{gtc}&side=BUY&quantity=0.1&price=30500"));
    assert_eq!(o["status"], "FILLED", "{o}");
    let trades = btc_trades(&s);
    assert_eq!(trades.len(), 5);
    assert_eq!(
        get(&s, "/api/v3/klines?symbol=BTCUSDT&interval=1m"),
        json!(expected_klines(&trades, MINUTE))
    );
    assert_eq!(
        get(&s, "/api/v3/klines?symbol=BTCUSDT&interval=1h"),
        json!(expected_klines(&trades, HOUR))
    );
    let t = get(&s, "/api/v3/ticker/24hr?symbol=BTCUSDT");
    assert_eq!(
        (
            &t["count"],
            &t["volume"],
            &t["quoteVolume"],
            &t["highPrice"],
            &t["lastPrice"]
        ),
        (
            &json!(5),
            &json!("1.20000000"),
            &json!("36060.00000000"),
            &json!("30500.00000000"),
            &json!("30500.00000000")
        )
    );
    assert_eq!(t["askQty"], "0.30000000");
    let agg = get(&s, "/api/v3/aggTrades?symbol=BTCUSDT");
    assert_eq!(agg.as_array().unwrap().len(), 4);
    assert_eq!(agg[3]["q"], "0.10000000");
}

/// The `[market_data]` bounds take effect, live and after a restart:
/// `trades_kept_per_symbol = 5` -> `/api/v3/trades` keeps the 5 newest of 8
/// trades, `agg_trades_kept_per_symbol = 3` -> `/api/v3/aggTrades` the 3
/// newest, `depth_max_levels = 3` -> `/api/v3/depth` (any `limit`) and the
/// partial-book answer at most 3 levels a side.
#[test]
fn market_data_config_bounds_trades_agg_trades_and_depth() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = [
        ("MX_MARKET_DATA__TRADES_KEPT_PER_SYMBOL", "5"),
        ("MX_MARKET_DATA__AGG_TRADES_KEPT_PER_SYMBOL", "3"),
        ("MX_MARKET_DATA__DEPTH_MAX_LEVELS", "3"),
    ];
    let s = Server::start_with(tmp.path(), port, &env);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let seller = trader(&s, &admin, "seller", &[("BTC", "1")], &["READ", "TRADE"]);
    let buyer = trader(
        &s,
        &admin,
        "buyer",
        &[("USDT", "100000")],
        &["READ", "TRADE"],
    );
    // 8 asks, each taken by its own buy: 8 trades, 8 aggregate trades.
    for i in 0..8 {
        seller.order(
            &s,
            &format!(
                "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price={}",
                30_000 + i
            ),
        );
    }
    for _ in 0..8 {
        let o = buyer.order(
            &s,
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.001&price=30010",
        );
        assert_eq!(o["status"], "FILLED", "{o}");
    }
    // 5 levels a side rest.
    for i in 0..5 {
        seller.order(
            &s,
            &format!(
                "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price={}",
                30_100 + i
            ),
        );
        buyer.order(
            &s,
            &format!(
                "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price={}",
                29_900 - i
            ),
        );
    }
    let check = |s: &Server| {
        let trades = get(s, "/api/v3/trades?symbol=BTCUSDT&limit=1000");
        let prices: Vec<&str> = trades
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["price"].as_str().unwrap())
            .collect();
        assert_eq!(
            prices,
            [
                "30003.00000000",
                "30004.00000000",
                "30005.00000000",
                "30006.00000000",
                "30007.00000000"
            ],
            "{trades}"
        );
        let ids: Vec<u64> = trades
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
        let agg = get(s, "/api/v3/aggTrades?symbol=BTCUSDT&limit=1000");
        let agg_ids: Vec<u64> = agg
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["a"].as_u64().unwrap())
            .collect();
        assert_eq!(agg_ids, ids[2..], "{agg}");
        for limit in ["", "&limit=5", "&limit=100", "&limit=5000"] {
            let d = get(s, &format!("/api/v3/depth?symbol=BTCUSDT{limit}"));
            let px = |side: &str| -> Vec<String> {
                d[side]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l[0].as_str().unwrap().to_string())
                    .collect()
            };
            assert_eq!(
                px("bids"),
                ["29900.00000000", "29899.00000000", "29898.00000000"],
                "{d}"
            );
            assert_eq!(
                px("asks"),
                ["30100.00000000", "30101.00000000", "30102.00000000"],
                "{d}"
            );
        }
        // A shallower request still gets what it asked for.
        let d = get(s, "/api/v3/depth?symbol=BTCUSDT&limit=1");
        assert_eq!(d["bids"].as_array().unwrap().len(), 1);
        assert_eq!(d["asks"].as_array().unwrap().len(), 1);
        // The 24 h ticker still counts every trade (it reads the klines).
        let t = get(s, "/api/v3/ticker/24hr?symbol=BTCUSDT");
        assert_eq!(t["count"], 8, "{t}");
    };
    check(&s);
    // Rebuilt from the journal at startup under the same bounds.
    s.terminate();
    let s = Server::start_with(tmp.path(), port, &env);
    check(&s);
}
