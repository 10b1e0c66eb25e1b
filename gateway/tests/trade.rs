//! Black-box tests of the signed Binance endpoints against a real `serve`
//! process over real sockets: admin funding, two traders, crossing orders
//! with balances checked to the unit, partial fills, cancel, cancel-replace,
//! market by quote, post-only reject, STP, stop trigger, history, and a long
//! list of bad requests each answered with the contract's error and no
//! state change; then SIGKILL and restart with every acknowledged order and
//! balance still there.

mod common;

use common::*;
use gateway::binance::sign::hmac_sha256_hex;
use serde_json::{json, Value};

/// (what, query, headers, expected HTTP status, expected Binance code)
type AuthCase<'a> = (&'a str, String, Vec<(&'a str, String)>, u16, i64);

#[test]
fn trading_flows_errors_and_crash_recovery() {
    // Every signed request below is signed like Binance's documented HMAC
    // example (rest-api.md, "SIGNED endpoint examples"): secret, payload
    // and signature verbatim from the docs.
    assert_eq!(
        hmac_sha256_hex(
            b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
            b"symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
        ),
        "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    );
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let alice = trader(
        &s,
        &admin,
        "alice",
        &[("USDT", "100000")],
        &["READ", "TRADE"],
    );
    let bob = trader(
        &s,
        &admin,
        "bob",
        &[("BTC", "2"), ("USDT", "1000")],
        &["READ", "TRADE"],
    );
    assert_eq!(
        alice.balance(&s, "USDT"),
        ("100000.00000000".into(), "0.00000000".into())
    );

    // Bob sells 1 BTC at 30000 (resting), form body like python-binance.
    let r = bob.call_form(
        &s,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1&price=30000&newClientOrderId=bob-1",
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let sell_id = r.json["orderId"].as_u64().unwrap();
    assert_eq!(r.json["status"], "NEW");
    assert_eq!(r.json["clientOrderId"], "bob-1");
    assert_eq!(
        bob.balance(&s, "BTC"),
        ("1.00000000".into(), "1.00000000".into())
    );
    // Depth shows it.
    let d = s.req("GET", "/api/v3/depth?symbol=BTCUSDT", &[], b"");
    assert_eq!(d.json["asks"][0], json!(["30000.00000000", "1.00000000"]));

    // Alice buys 0.4 at 31000 (python float form) -> fills 0.4 at 30000.
    let o = alice.order(
        &s,
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.4&price=31000.0&newOrderRespType=FULL",
    );
    assert_eq!(o["status"], "FILLED");
    assert_eq!(o["executedQty"], "0.40000000");
    assert_eq!(o["cummulativeQuoteQty"], "12000.00000000");
    assert_eq!(o["fills"][0]["price"], "30000.00000000");
    assert_eq!(o["fills"][0]["commission"], "0.00040000");
    assert_eq!(o["fills"][0]["commissionAsset"], "BTC");
    // Balances to the unit: Alice paid 12000, received 0.4 - 0.0004 fee.
    assert_eq!(
        alice.balance(&s, "USDT"),
        ("88000.00000000".into(), "0.00000000".into())
    );
    assert_eq!(
        alice.balance(&s, "BTC"),
        ("0.39960000".into(), "0.00000000".into())
    );
    // Bob received 12000 - 12 fee; 0.6 still locked.
    assert_eq!(
        bob.balance(&s, "USDT"),
        ("12988.00000000".into(), "0.00000000".into())
    );
    assert_eq!(
        bob.balance(&s, "BTC"),
        ("1.00000000".into(), "0.60000000".into())
    );
    let q = bob.call(
        &s,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={sell_id}"),
    );
    assert_eq!(q.json["status"], "PARTIALLY_FILLED");
    assert_eq!(q.json["executedQty"], "0.40000000");
    let q = bob.call(
        &s,
        "GET",
        "/api/v3/order",
        "symbol=BTCUSDT&origClientOrderId=bob-1",
    );
    assert_eq!(q.json["orderId"], sell_id);

    // Post-only that would take: -2010.
    let r = alice.call(
        &s,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT_MAKER&quantity=0.1&price=30000",
    );
    assert_eq!((r.status, r.json["code"].as_i64()), (400, Some(-2010)));
    assert_eq!(r.json["msg"], "Order would immediately match and take.");

    // Cancel-replace Bob's remainder to 30100 for 0.5.
    let r = bob.call(&s, "POST", "/api/v3/order/cancelReplace",
        &format!("symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.5&price=30100&cancelReplaceMode=STOP_ON_FAILURE&cancelOrderId={sell_id}"));
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["cancelResult"], "SUCCESS");
    assert_eq!(r.json["cancelResponse"]["status"], "CANCELED");
    let new_sell = r.json["newOrderResponse"]["orderId"].as_u64().unwrap();
    assert_eq!(
        bob.balance(&s, "BTC"),
        ("1.10000000".into(), "0.50000000".into())
    );

    // Market buy by quote: 3010 USDT buys exactly 0.1 at 30100.
    let o = alice.order(&s, "symbol=BTCUSDT&side=BUY&type=MARKET&quoteOrderQty=3010");
    assert_eq!(o["status"], "FILLED");
    assert_eq!(o["executedQty"], "0.10000000");
    assert_eq!(
        alice.balance(&s, "USDT"),
        ("84990.00000000".into(), "0.00000000".into())
    );

    // STP: Bob buys into his own ask with EXPIRE_TAKER -> taker expires.
    let o = bob.order(&s, "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=30100&selfTradePreventionMode=EXPIRE_TAKER");
    assert_eq!(o["status"], "EXPIRED_IN_MATCH");

    // Stop: Alice places a stop-loss-limit sell that fires when price falls
    // to 29000; Bob bids 29000 and Alice's... Bob then sells into it.
    let o = alice.order(&s, "symbol=BTCUSDT&side=SELL&type=STOP_LOSS_LIMIT&timeInForce=GTC&quantity=0.1&price=28000&stopPrice=29000&newOrderRespType=FULL");
    let stop_id = o["orderId"].as_u64().unwrap();
    // An untriggered stop's reply (FULL; a stop defaults to ACK, as on
    // Binance): its stop price, and no working time yet.
    assert_eq!(o["type"], "STOP_LOSS_LIMIT", "{o}");
    assert_eq!(o["stopPrice"], "29000.00000000", "{o}");
    assert_eq!(o["workingTime"], -1, "{o}");
    assert_eq!(o["status"], "NEW", "{o}");
    assert_eq!(o["orderListId"], -1, "{o}");
    assert_eq!(o["fills"], json!([]), "{o}");
    // ACK: the order's identity only.
    let ack = bob.order(
        &s,
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.2&price=29000&newOrderRespType=ACK&newClientOrderId=bob-29k",
    );
    let keys: Vec<&str> = ack
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "clientOrderId",
            "orderId",
            "orderListId",
            "symbol",
            "transactTime"
        ],
        "{ack}"
    );
    assert_eq!(ack["clientOrderId"], "bob-29k");
    assert_eq!(ack["symbol"], "BTCUSDT");
    // Alice sells 0.05 at 29000 -> last price 29000 -> stop fires and fills.
    // A seller's fill pays its commission in the quote asset.
    let sold = alice.order(
        &s,
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.05&price=29000&newOrderRespType=FULL",
    );
    assert_eq!(sold["fills"][0]["qty"], "0.05000000", "{sold}");
    assert_eq!(sold["fills"][0]["commission"], "1.45000000", "{sold}");
    assert_eq!(sold["fills"][0]["commissionAsset"], "USDT", "{sold}");
    assert!(sold["fills"][0]["tradeId"].as_u64().is_some(), "{sold}");
    assert_eq!(sold["origQuoteOrderQty"], "0.00000000", "{sold}");
    let q = alice.call(
        &s,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={stop_id}"),
    );
    assert_eq!(q.json["status"], "FILLED", "{}", q.json);

    // Cancel Bob's open sell; cancel again: -2011.
    let r = bob.call(
        &s,
        "DELETE",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={new_sell}"),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "CANCELED");
    let r = bob.call(
        &s,
        "DELETE",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={new_sell}"),
    );
    assert_eq!((r.status, r.json["code"].as_i64()), (400, Some(-2011)));
    assert_eq!(r.json["msg"], "Unknown order sent.");
    let r = bob.call(&s, "GET", "/api/v3/order", "symbol=BTCUSDT&orderId=999999");
    assert_eq!((r.status, r.json["code"].as_i64()), (400, Some(-2013)));

    // History.
    let all = alice.call(&s, "GET", "/api/v3/allOrders", "symbol=BTCUSDT");
    assert!(all.json.as_array().unwrap().len() >= 4);
    let trades = alice.call(&s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT");
    assert!(trades.json.as_array().unwrap().len() >= 3);
    let open = bob.call(&s, "GET", "/api/v3/openOrders", "symbol=BTCUSDT");
    assert_eq!(open.status, 200);

    // ---- bad inputs: each gets the contract's error and changes nothing.
    let before_a = s_snapshot(&s, &alice);
    let before_b = s_snapshot(&s, &bob);
    let ts = now_ms();
    let bad: Vec<(&str, String, i64)> = vec![
        ("missing symbol", "side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=1".into(), -1102),
        ("missing side", "symbol=BTCUSDT&type=LIMIT&timeInForce=GTC&quantity=1&price=1".into(), -1102),
        ("missing type", "symbol=BTCUSDT&side=BUY&timeInForce=GTC&quantity=1&price=1".into(), -1102),
        ("missing tif", "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=1".into(), -1102),
        ("missing qty", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&price=1".into(), -1102),
        ("missing price", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1".into(), -1102),
        ("market no qty", "symbol=BTCUSDT&side=BUY&type=MARKET".into(), -1102),
        ("market both", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1&quoteOrderQty=1".into(), -1128),
        ("unknown symbol", "symbol=XXXUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=1".into(), -1121),
        ("bad side", "symbol=BTCUSDT&side=UP&type=LIMIT&timeInForce=GTC&quantity=1&price=1".into(), -1117),
        ("bad type", "symbol=BTCUSDT&side=BUY&type=ICEBERG&timeInForce=GTC&quantity=1&price=1".into(), -1116),
        ("bad tif", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=DAY&quantity=1&price=1".into(), -1115),
        ("tif on market", "symbol=BTCUSDT&side=BUY&type=MARKET&timeInForce=GTC&quantity=1".into(), -1114),
        ("price on market", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1&price=1".into(), -1106),
        ("too many decimals", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.000000001&price=100".into(), -1111),
        ("off step", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.000015&price=30000".into(), -1013),
        ("off tick", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30000.001".into(), -1013),
        ("zero qty", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0&price=30000".into(), -1013),
        ("zero price", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=0".into(), -1013),
        ("negative qty", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=-1&price=30000".into(), -1100),
        ("huge qty", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1000000000000000000000000000000&price=30000".into(), -1100),
        ("NaN price", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=NaN".into(), -1100),
        ("empty qty", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=&price=30000".into(), -1105),
        ("unicode qty", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=%EF%BC%91&price=30000".into(), -1100),
        ("below min notional", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.0001&price=30000".into(), -1013),
        ("above max qty", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=9001&price=1".into(), -1013),
        ("price band", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=90000".into(), -1013),
        ("insufficient", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=100&price=30000".into(), -2010),
        ("duplicate param", "symbol=BTCUSDT&symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=1".into(), -1101),
        ("unknown param", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30000&foo=bar".into(), -1104),
        ("stop fires now", "symbol=BTCUSDT&side=SELL&type=STOP_LOSS_LIMIT&timeInForce=GTC&quantity=0.001&price=35000&stopPrice=35000".into(), -2010),
        ("bad stp", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30000&selfTradePreventionMode=MAYBE".into(), -1130),
        ("bad client id", "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30000&newClientOrderId=a%20b".into(), -1100),
    ];
    assert!(bad.len() >= 30);
    let mut wrong = Vec::new();
    for (what, params, code) in &bad {
        let r = alice.call(&s, "POST", "/api/v3/order", params);
        if r.json["code"].as_i64() != Some(*code)
            || r.status != 400
            || !r.head.contains("application/json")
        {
            wrong.push(format!(
                "{what}: expected {code}, got {} {}",
                r.status, r.json
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Authentication failures.
    let good = format!("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30000&timestamp={ts}");
    let sig = hmac_sha256_hex(alice.secret.as_bytes(), good.as_bytes());
    let cases: Vec<AuthCase> = vec![
        (
            "bad signature",
            format!("{good}&signature={}", "0".repeat(64)),
            vec![("X-MBX-APIKEY", alice.key.clone())],
            400,
            -1022,
        ),
        (
            "no signature",
            good.clone(),
            vec![("X-MBX-APIKEY", alice.key.clone())],
            400,
            -1102,
        ),
        (
            "no api key",
            format!("{good}&signature={sig}"),
            vec![],
            401,
            -2014,
        ),
        (
            "unknown key",
            format!("{good}&signature={sig}"),
            vec![("X-MBX-APIKEY", "A".repeat(64))],
            401,
            -2015,
        ),
        (
            "expired",
            {
                let old = good.replace(
                    &format!("timestamp={ts}"),
                    &format!("timestamp={}", ts - 120_000),
                );
                let sg = hmac_sha256_hex(alice.secret.as_bytes(), old.as_bytes());
                format!("{old}&signature={sg}")
            },
            vec![("X-MBX-APIKEY", alice.key.clone())],
            400,
            -1021,
        ),
        (
            "future",
            {
                let f = good.replace(
                    &format!("timestamp={ts}"),
                    &format!("timestamp={}", ts + 120_000),
                );
                let sg = hmac_sha256_hex(alice.secret.as_bytes(), f.as_bytes());
                format!("{f}&signature={sg}")
            },
            vec![("X-MBX-APIKEY", alice.key.clone())],
            400,
            -1021,
        ),
        (
            "recvWindow too big",
            {
                let f = format!("{good}&recvWindow=70000");
                let sg = hmac_sha256_hex(alice.secret.as_bytes(), f.as_bytes());
                format!("{f}&signature={sg}")
            },
            vec![("X-MBX-APIKEY", alice.key.clone())],
            400,
            -1131,
        ),
    ];
    for (what, q, hdrs, status, code) in &cases {
        let h: Vec<(&str, &str)> = hdrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = s.req("POST", &format!("/api/v3/order?{q}"), &h, b"");
        assert_eq!(
            (r.status, r.json["code"].as_i64()),
            (*status, Some(*code)),
            "{what}: {}",
            r.json
        );
    }
    // A READ-only key cannot trade.
    let reader = trader(&s, &admin, "reader", &[("USDT", "1000")], &["READ"]);
    let r = reader.call(
        &s,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=30000",
    );
    assert_eq!((r.status, r.json["code"].as_i64()), (401, Some(-2015)));
    let r = reader.call(&s, "GET", "/api/v3/account", "");
    assert_eq!(r.status, 200);
    // Oversized body.
    let big = vec![b'a'; 200_000];
    let r = s.req(
        "POST",
        "/api/v3/order",
        &[("X-MBX-APIKEY", &alice.key)],
        &big,
    );
    assert_eq!(r.status, 413);
    // Nothing changed.
    assert_eq!(s_snapshot(&s, &alice), before_a);
    assert_eq!(s_snapshot(&s, &bob), before_b);

    // ---- SIGKILL: every acknowledged order and balance survives.
    let acked_orders = alice
        .call(&s, "GET", "/api/v3/allOrders", "symbol=BTCUSDT")
        .json;
    let acked_trades = alice
        .call(&s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT")
        .json;
    s.kill();
    let s = Server::start(tmp.path(), port);
    assert_eq!(s_snapshot(&s, &alice), before_a);
    assert_eq!(s_snapshot(&s, &bob), before_b);
    assert_eq!(
        alice
            .call(&s, "GET", "/api/v3/allOrders", "symbol=BTCUSDT")
            .json,
        acked_orders
    );
    assert_eq!(
        alice
            .call(&s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT")
            .json,
        acked_trades
    );
}

/// Balances and open orders of a trader, for "nothing changed" checks.
fn s_snapshot(s: &Server, t: &Trader) -> (Value, Value) {
    let a = t.call(s, "GET", "/api/v3/account", "");
    let o = t.call(s, "GET", "/api/v3/openOrders", "");
    (a.json["balances"].clone(), o.json)
}
