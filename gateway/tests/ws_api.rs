//! The WebSocket API (`/ws-api/v3`) against a real `serve` process over
//! real sockets: every method answers what its REST twin answers, requests
//! are signed over their params sorted by name (signed here independently
//! of the server's code), user data arrives as `{"subscriptionId","event"}`,
//! pipelined requests reach the engine in the order they were sent, and
//! hostile or invalid requests get Binance's error object with their id
//! and change nothing.

mod common;

use std::time::Duration;

use common::ws::{sign, In, Ws};
use common::{free_port, fuzz_seeds, login, now_ms, trader, Server, Trader, ADMIN, ADMIN_PW};
use serde_json::{json, Map, Value};

/// A reply whose id is `id`, skipping user data events.
fn reply_to(ws: &Ws, id: &Value) -> Value {
    loop {
        match ws.next(Duration::from_secs(10)) {
            Some(In::Json(v)) if v.get("subscriptionId").is_some() && v.get("event").is_some() => {
                continue
            }
            Some(In::Json(v)) => {
                assert_eq!(&v["id"], id, "reply out of order: {v}");
                return v;
            }
            other => panic!("expected the reply to {id}, got {other:?}"),
        }
    }
}

fn call(ws: &Ws, id: Value, method: &str, params: Value) -> Value {
    ws.send(&json!({"id": id, "method": method, "params": params}));
    reply_to(ws, &id)
}

fn ok(ws: &Ws, id: u64, method: &str, params: Value) -> Value {
    let r = call(ws, json!(id), method, params);
    assert_eq!(r["status"], 200, "{method}: {r}");
    r["result"].clone()
}

fn err(ws: &Ws, id: Value, method: &str, params: Value) -> (u64, i64, Value) {
    let r = call(ws, id, method, params);
    assert!(r.get("result").is_none(), "{method} succeeded: {r}");
    (
        r["status"].as_u64().unwrap(),
        r["error"]["code"].as_i64().unwrap(),
        r,
    )
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

fn rest(s: &Server, t: &Trader, method: &str, path: &str, params: &str) -> Value {
    let r = t.call(s, method, path, params);
    assert_eq!(r.status, 200, "{path}: {}", r.json);
    r.json
}

/// Drop the fields that differ between two reads of the same state
/// (server time, a freshly generated cancel clientOrderId).
fn stable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("serverTime");
    }
    v
}

/// An `order.place` reply's `rateLimits` carry the key's ORDERS usage with
/// that order counted: 1 after the first, 2 after the second; and when
/// orders are pipelined, each reply keeps the count of its own order (not
/// the key's usage when the reply is written, after later orders counted).
#[test]
fn order_replies_count_the_keys_orders() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let (alice, _bob) = setup(&s);
    let ws = Ws::connect(port, "/ws-api/v3");
    // The count of every ORDERS window of a reply.
    let order_counts = |r: &Value| -> Vec<u64> {
        r["rateLimits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["rateLimitType"] == "ORDERS")
            .map(|l| l["count"].as_u64().unwrap())
            .collect()
    };
    for n in 1..=2u64 {
        let r = call(
            &ws,
            json!(n),
            "order.place",
            sign(
                &alice,
                json!({"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT",
                       "timeInForce": "GTC", "price": "30000", "quantity": "0.1"}),
            ),
        );
        assert_eq!(r["status"], 200, "{r}");
        let orders = order_counts(&r);
        assert!(!orders.is_empty(), "no ORDERS entry: {r}");
        assert!(orders.iter().all(|&c| c == n), "order {n}: {r}");
    }
    // Six more sent at once: replies come after each order's group commit,
    // by when the later ones have long been counted.
    for n in 3..=8u64 {
        ws.send(&json!({"id": n, "method": "order.place", "params": sign(
            &alice,
            json!({"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT",
                   "timeInForce": "GTC", "price": "30000", "quantity": "0.1"}),
        )}));
    }
    let mut counts = Vec::new();
    while counts.len() < 6 {
        let Some(In::Json(r)) = ws.next(Duration::from_secs(10)) else {
            panic!("a pipelined order got no reply");
        };
        if r.get("subscriptionId").is_some() {
            continue;
        }
        assert_eq!(r["status"], 200, "{r}");
        let windows = order_counts(&r);
        assert!(!windows.is_empty(), "no ORDERS entry: {r}");
        // Every ORDERS window counted the same orders.
        assert!(windows.windows(2).all(|w| w[0] == w[1]), "{r}");
        counts.push(windows[0]);
    }
    counts.sort_unstable();
    assert_eq!(counts, (3..=8).collect::<Vec<u64>>(), "one count per order");
}

#[test]
fn every_method_answers_like_its_rest_twin() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let (alice, bob) = setup(&s);
    let ws = Ws::connect(port, "/ws-api/v3");

    // General and market data.
    let r = call(&ws, json!("p-1"), "ping", json!({}));
    assert_eq!(r["result"], json!({}));
    assert_eq!(r["status"], 200);
    let limits = r["rateLimits"].as_array().unwrap();
    assert!(limits
        .iter()
        .any(|l| l["rateLimitType"] == "REQUEST_WEIGHT" && l["count"].as_u64().unwrap() >= 1));
    let t = ok(&ws, 1, "time", json!({}));
    assert!(t["serverTime"].as_u64().unwrap() >= now_ms() - 10_000);
    // The "v3/" prefix is accepted and no params at all is fine.
    ws.send(&json!({"id": 2, "method": "v3/ping"}));
    assert_eq!(reply_to(&ws, &json!(2))["result"], json!({}));
    let info = ok(&ws, 3, "exchangeInfo", json!({"symbol": "BTCUSDT"}));
    assert_eq!(info["symbols"].as_array().unwrap().len(), 1);
    assert_eq!(info["symbols"][0]["symbol"], "BTCUSDT");
    let info = ok(
        &ws,
        4,
        "exchangeInfo",
        json!({"symbols": ["BTCUSDT", "ETHUSDT"]}),
    );
    assert_eq!(info["symbols"].as_array().unwrap().len(), 2);

    // Alice rests a sell; its status reads the same over both APIs.
    let placed = ok(
        &ws,
        10,
        "order.place",
        sign(
            &alice,
            json!({"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
                   "price": "30000", "quantity": "1", "newClientOrderId": "alice-1"}),
        ),
    );
    assert_eq!(placed["status"], "NEW");
    assert_eq!(placed["clientOrderId"], "alice-1");
    let id = placed["orderId"].as_u64().unwrap();
    let status = ok(
        &ws,
        11,
        "order.status",
        sign(&alice, json!({"symbol": "BTCUSDT", "orderId": id})),
    );
    assert_eq!(
        status,
        rest(
            &s,
            &alice,
            "GET",
            "/api/v3/order",
            &format!("symbol=BTCUSDT&orderId={id}")
        )
    );

    // Bob follows his account, then takes 0.4 of it with a FULL answer.
    let sub = ok(
        &ws,
        12,
        "userDataStream.subscribe.signature",
        sign(&bob, json!({})),
    );
    assert_eq!(sub["subscriptionId"], 0);
    let (st, code, _) = err(
        &ws,
        json!(13),
        "userDataStream.subscribe.signature",
        sign(&bob, json!({})),
    );
    assert_eq!((st, code), (400, -2035));
    ws.send(
        &json!({"id": 14, "method": "order.place", "params": sign(&bob,
        json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
               "price": "30000", "quantity": "0.4", "newOrderRespType": "FULL"}))}),
    );
    let mut reply = None;
    let mut events = Vec::new();
    while reply.is_none()
        || !events
            .iter()
            .any(|e: &Value| e["e"] == "outboundAccountPosition")
    {
        match ws.next(Duration::from_secs(10)) {
            Some(In::Json(v)) if v.get("event").is_some() => {
                assert_eq!(v["subscriptionId"], 0, "{v}");
                events.push(v["event"].clone());
            }
            Some(In::Json(v)) => {
                assert_eq!(v["id"], 14);
                reply = Some(v);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let reply = reply.unwrap();
    assert_eq!(reply["status"], 200, "{reply}");
    let taken = &reply["result"];
    assert_eq!(taken["status"], "FILLED");
    assert_eq!(taken["executedQty"], "0.40000000");
    assert_eq!(taken["fills"][0]["price"], "30000.00000000");
    assert_eq!(taken["fills"][0]["commissionAsset"], "BTC");
    let reports: Vec<&Value> = events
        .iter()
        .filter(|e| e["e"] == "executionReport")
        .collect();
    assert!(reports
        .iter()
        .any(|e| e["x"] == "TRADE" && e["X"] == "FILLED" && e["l"] == "0.40000000"));
    // Alice's events do not reach Bob's subscription.
    assert!(reports.iter().all(|e| e["c"] != "alice-1"));

    // Depth agrees with REST.
    let depth = ok(&ws, 20, "depth", json!({"symbol": "BTCUSDT", "limit": 5}));
    assert_eq!(depth["asks"], json!([["30000.00000000", "0.60000000"]]));
    let r = s.req("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5", &[], b"");
    assert_eq!(depth, r.json);
    for (m, p, path) in [
        (
            "trades.recent",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/trades?symbol=BTCUSDT",
        ),
        (
            "trades.aggregate",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/aggTrades?symbol=BTCUSDT",
        ),
        (
            "klines",
            json!({"symbol": "BTCUSDT", "interval": "1m"}),
            "/api/v3/klines?symbol=BTCUSDT&interval=1m",
        ),
        (
            "ticker.price",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/ticker/price?symbol=BTCUSDT",
        ),
        (
            "ticker.book",
            json!({"symbol": "BTCUSDT"}),
            "/api/v3/ticker/bookTicker?symbol=BTCUSDT",
        ),
    ] {
        let got = ok(&ws, 21, m, p);
        assert_eq!(got, s.req("GET", path, &[], b"").json, "{m}");
    }
    let tick = ok(&ws, 22, "ticker.24hr", json!({"symbol": "BTCUSDT"}));
    assert_eq!(tick["lastPrice"], "30000.00000000");
    assert_eq!(tick["volume"], "0.40000000");
    let avg = ok(&ws, 23, "avgPrice", json!({"symbol": "BTCUSDT"}));
    assert_eq!(avg["price"], "30000.00000000");

    // Open orders, history, trades and account agree with REST.
    for (m, path, q) in [
        (
            "openOrders.status",
            "/api/v3/openOrders",
            json!({"symbol": "BTCUSDT"}),
        ),
        (
            "allOrders",
            "/api/v3/allOrders",
            json!({"symbol": "BTCUSDT"}),
        ),
        ("myTrades", "/api/v3/myTrades", json!({"symbol": "BTCUSDT"})),
        ("account.status", "/api/v3/account", json!({})),
    ] {
        let got = ok(&ws, 30, m, sign(&alice, q.clone()));
        let query = if q["symbol"].is_string() {
            "symbol=BTCUSDT"
        } else {
            ""
        };
        assert_eq!(
            stable(got),
            stable(rest(&s, &alice, "GET", path, query)),
            "{m}"
        );
    }
    let open = ok(
        &ws,
        31,
        "openOrders.status",
        sign(&alice, json!({"symbol": "BTCUSDT"})),
    );
    assert_eq!(open[0]["status"], "PARTIALLY_FILLED");
    assert_eq!(open[0]["executedQty"], "0.40000000");

    // Cancel-replace the rest of Alice's order, then cancel the new one.
    let cr = ok(
        &ws,
        40,
        "order.cancelReplace",
        sign(
            &alice,
            json!({"symbol": "BTCUSDT", "cancelReplaceMode": "STOP_ON_FAILURE", "cancelOrderId": id,
                   "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "price": "31000",
                   "quantity": "0.6"}),
        ),
    );
    assert_eq!(cr["cancelResult"], "SUCCESS");
    assert_eq!(cr["newOrderResult"], "SUCCESS");
    assert_eq!(cr["cancelResponse"]["status"], "CANCELED");
    let new_id = cr["newOrderResponse"]["orderId"].as_u64().unwrap();
    // A second attempt on the canceled order fails whole: 400 with data.
    let (st, code, r) = err(
        &ws,
        json!(41),
        "order.cancelReplace",
        sign(
            &alice,
            json!({"symbol": "BTCUSDT", "cancelReplaceMode": "STOP_ON_FAILURE", "cancelOrderId": id,
                   "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "price": "31000",
                   "quantity": "0.6"}),
        ),
    );
    assert_eq!((st, code), (400, -2022), "{r}");
    assert_eq!(r["error"]["data"]["cancelResult"], "FAILURE");
    assert_eq!(r["error"]["data"]["newOrderResult"], "NOT_ATTEMPTED");
    let canceled = ok(
        &ws,
        42,
        "order.cancel",
        sign(&alice, json!({"symbol": "BTCUSDT", "orderId": new_id})),
    );
    assert_eq!(canceled["status"], "CANCELED");
    assert_eq!(canceled["origQty"], "0.60000000");
    let (st, code, _) = err(
        &ws,
        json!(43),
        "openOrders.cancelAll",
        sign(&alice, json!({"symbol": "BTCUSDT"})),
    );
    assert_eq!((st, code), (400, -2011));
    // cancelAll with something to cancel.
    for p in ["20000", "20001"] {
        ok(
            &ws,
            44,
            "order.place",
            sign(
                &alice,
                json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                       "price": p, "quantity": "0.01"}),
            ),
        );
    }
    let all = ok(
        &ws,
        45,
        "openOrders.cancelAll",
        sign(&alice, json!({"symbol": "BTCUSDT"})),
    );
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["status"] == "CANCELED"));
    assert_eq!(
        ok(
            &ws,
            46,
            "order.test",
            sign(
                &alice,
                json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                       "price": "20000", "quantity": "0.01"}),
            ),
        ),
        json!({})
    );

    // Balances to the unit: Alice sold 0.4 BTC at 30000, paying 0.1% in USDT.
    assert_eq!(
        alice.balance(&s, "BTC"),
        ("99.60000000".into(), "0.00000000".into())
    );
    assert_eq!(
        alice.balance(&s, "USDT"),
        ("1011988.00000000".into(), "0.00000000".into())
    );
    assert_eq!(
        bob.balance(&s, "BTC"),
        ("100.39960000".into(), "0.00000000".into())
    );

    // Subscriptions: listed, then closed.
    assert_eq!(
        ok(&ws, 50, "session.subscriptions", json!({})),
        json!([{"subscriptionId": 0}])
    );
    let (st, code, _) = err(
        &ws,
        json!(51),
        "userDataStream.unsubscribe",
        json!({"subscriptionId": 7}),
    );
    assert_eq!((st, code), (400, -2036));
    assert_eq!(
        ok(
            &ws,
            52,
            "userDataStream.unsubscribe",
            json!({"subscriptionId": 0})
        ),
        json!({})
    );
    assert_eq!(ok(&ws, 53, "session.subscriptions", json!({})), json!([]));
    // Listen keys over the WebSocket API too.
    let lk = ok(&ws, 54, "userDataStream.start", json!({"apiKey": bob.key}));
    let key = lk["listenKey"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 60);
    ok(
        &ws,
        55,
        "userDataStream.ping",
        json!({"apiKey": bob.key, "listenKey": key}),
    );
    ok(
        &ws,
        56,
        "userDataStream.stop",
        json!({"apiKey": bob.key, "listenKey": key}),
    );
    let (_, code, _) = err(
        &ws,
        json!(57),
        "userDataStream.ping",
        json!({"apiKey": bob.key, "listenKey": key}),
    );
    assert_eq!(code, -1125);
}

#[test]
fn bad_requests_get_binance_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let (alice, _bob) = setup(&s);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let reader = trader(&s, &admin, "reader", &[("USDT", "1000")], &["READ"]);
    let before = (alice.balance(&s, "BTC"), alice.balance(&s, "USDT"));
    let ws = Ws::connect(port, "/ws-api/v3");
    let order = || {
        json!({"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
               "price": "30000", "quantity": "1"})
    };

    // Frames that are not requests: the error carries id null.
    for frame in [
        "{",
        "[]",
        "42",
        r#"{"id":1.5,"method":"ping"}"#,
        r#"{"id":[1],"method":"ping"}"#,
    ] {
        ws.send_text(frame);
        let r = reply_to(&ws, &Value::Null);
        assert_eq!(r["status"], 400, "{frame}: {r}");
        assert_eq!(r["error"]["code"], -1135, "{frame}: {r}");
    }
    // Requests with an id: the error echoes it.
    let cases: Vec<(Value, &str, Value, u64, i64)> = vec![
        (json!("m"), "order.nuke", json!({}), 400, -1020),
        (json!(2), "depth", json!({}), 400, -1102),
        (json!(3), "depth", json!({"symbol": "NOPE"}), 400, -1121),
        (
            json!(4),
            "depth",
            json!({"symbol": "BTCUSDT", "limit": -1}),
            400,
            -1100,
        ),
        (
            json!(5),
            "depth",
            json!({"symbol": "BTCUSDT", "bogus": 1}),
            400,
            -1104,
        ),
        (json!(6), "ping", json!({"x": "a\u{1}b"}), 400, -1100),
        // Signed methods: missing key, bad format, unknown key.
        (json!(7), "order.place", order(), 400, -1102),
        (
            json!(8),
            "order.place",
            {
                let mut p = order();
                p["apiKey"] = json!("bad key!");
                p
            },
            401,
            -2014,
        ),
        (
            json!(9),
            "account.status",
            json!({"apiKey": "x".repeat(64), "timestamp": now_ms(), "signature": "00"}),
            401,
            -2015,
        ),
        // Bad signature, expired and future timestamps, no signature.
        (
            json!(10),
            "order.place",
            {
                let mut p = sign(&alice, order());
                p["signature"] = json!("0".repeat(64));
                p
            },
            400,
            -1022,
        ),
        (
            json!(11),
            "order.place",
            {
                let mut p = sign(&alice, order());
                p["quantity"] = json!("2");
                p
            },
            400,
            -1022,
        ),
        (
            json!(12),
            "order.place",
            sign(&alice, {
                let mut p = order();
                p["timestamp"] = json!(now_ms() - 120_000);
                p
            }),
            400,
            -1021,
        ),
        (
            json!(13),
            "order.place",
            sign(&alice, {
                let mut p = order();
                p["timestamp"] = json!(now_ms() + 60_000);
                p
            }),
            400,
            -1021,
        ),
        (
            json!(14),
            "order.place",
            {
                let mut p = sign(&alice, order());
                p.as_object_mut().unwrap().remove("signature");
                p
            },
            400,
            -1102,
        ),
        // A READ key cannot trade.
        (json!(15), "order.place", sign(&reader, order()), 401, -2015),
        // Order content errors.
        (
            json!(16),
            "order.place",
            sign(&alice, {
                let mut p = order();
                p["price"] = json!("30000.000000001");
                p
            }),
            400,
            -1111,
        ),
        (
            json!("16b"),
            "order.place",
            sign(&alice, {
                let mut p = order();
                p["price"] = json!("30000.001");
                p
            }),
            400,
            -1013,
        ),
        (
            json!(17),
            "order.place",
            sign(&alice, {
                let mut p = order();
                p["quantity"] = json!("1000000000000000000000000000000");
                p
            }),
            400,
            -1100,
        ),
        (
            json!(18),
            "order.place",
            sign(&alice, {
                let mut p = order();
                p["quantity"] = json!("1000");
                p
            }),
            400,
            -2010,
        ),
        (
            json!(19),
            "order.place",
            sign(&alice, {
                let mut p = order();
                p["side"] = json!("UP");
                p
            }),
            400,
            -1117,
        ),
        (
            json!(20),
            "order.cancel",
            sign(&alice, json!({"symbol": "BTCUSDT", "orderId": 999_999})),
            400,
            -2011,
        ),
        (
            json!(21),
            "order.status",
            sign(&alice, json!({"symbol": "BTCUSDT", "orderId": 999_999})),
            400,
            -2013,
        ),
        (
            json!(22),
            "userDataStream.subscribe.signature",
            json!({"apiKey": alice.key, "timestamp": now_ms(), "signature": "0".repeat(64)}),
            400,
            -1022,
        ),
        (json!(23), "userDataStream.start", json!({}), 401, -2014),
    ];
    for (id, method, params, status, code) in cases {
        let (st, c, r) = err(&ws, id.clone(), method, params);
        assert_eq!((st, c), (status, code), "{id} {method}: {r}");
        assert!(r["error"]["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // params that is not an object, a method that is not a string.
    ws.send_text(r#"{"id":"x","method":"ping","params":[1]}"#);
    let r = reply_to(&ws, &json!("x"));
    assert_eq!(r["error"]["code"], -1135);
    ws.send_text(r#"{"id":"y","method":5}"#);
    let r = reply_to(&ws, &json!("y"));
    assert_eq!(r["error"]["code"], -1135);
    // returnRateLimits=false leaves rateLimits out.
    let r = call(&ws, json!(30), "ping", json!({"returnRateLimits": false}));
    assert_eq!(r, json!({"id": 30, "status": 200, "result": {}}));

    // Nothing changed: no order, same balances.
    assert_eq!(
        (alice.balance(&s, "BTC"), alice.balance(&s, "USDT")),
        before
    );
    let r = alice.call(&s, "GET", "/api/v3/allOrders", "symbol=BTCUSDT");
    assert_eq!(r.json, json!([]));

    // A frame over the size limit closes the connection with 1009.
    ws.send_text(&format!(
        r#"{{"id":1,"method":"ping","params":{{"x":"{}"}}}}"#,
        "a".repeat(70_000)
    ));
    assert_eq!(ws.closed(Duration::from_secs(10)).map(|c| c.0), Some(1009));
    // The server still answers others.
    let ws2 = Ws::connect(port, "/ws-api/v3");
    assert_eq!(call(&ws2, json!(1), "ping", json!({}))["status"], 200);
}

#[test]
fn pipelined_requests_reach_the_engine_in_sending_order() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let (alice, _bob) = setup(&s);
    let ws = Ws::connect(port, "/ws-api/v3");
    // 300 orders sent without waiting, each followed at once by the cancel
    // of every third one by its client id: every cancel finds its order.
    let n = 300u64;
    let mut expected = 0;
    for i in 0..n {
        ws.send(
            &json!({"id": format!("p{i}"), "method": "order.place", "params": sign(&alice,
            json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                   "price": format!("{}", 10000 + i), "quantity": "0.001",
                   "newClientOrderId": format!("c{i}"), "newOrderRespType": "ACK"}))}),
        );
        expected += 1;
        if i % 3 == 0 {
            ws.send(
                &json!({"id": format!("x{i}"), "method": "order.cancel", "params": sign(&alice,
                json!({"symbol": "BTCUSDT", "origClientOrderId": format!("c{i}")}))}),
            );
            expected += 1;
        }
    }
    let mut order_ids = vec![0u64; n as usize];
    let mut cancels = 0;
    for _ in 0..expected {
        let r = match ws.next(Duration::from_secs(30)) {
            Some(In::Json(v)) => v,
            other => panic!("missing replies: {other:?}"),
        };
        assert_eq!(r["status"], 200, "{r}");
        let id = r["id"].as_str().unwrap();
        let i: usize = id[1..].parse().unwrap();
        if id.starts_with('p') {
            order_ids[i] = r["result"]["orderId"].as_u64().unwrap();
        } else {
            assert_eq!(r["result"]["status"], "CANCELED");
            cancels += 1;
        }
    }
    assert_eq!(cancels, n.div_ceil(3));
    // Order ids (engine sequence) follow the sending order.
    assert!(order_ids.windows(2).all(|w| w[0] < w[1]), "{order_ids:?}");
    let open = alice.call(&s, "GET", "/api/v3/openOrders", "symbol=BTCUSDT");
    assert_eq!(
        open.json.as_array().unwrap().len() as u64,
        n - n.div_ceil(3)
    );
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let (alice, _bob) = setup(&s);
    // A sleeper with a tiny receive buffer asks for big answers and never
    // reads them.
    let sleeper = Ws::connect_with(port, "/ws-api/v3", Some(4096), false);
    for i in 0..2000 {
        sleeper.send(&json!({"id": i, "method": "exchangeInfo"}));
    }
    // Meanwhile another session trades and reads normally.
    let good = Ws::connect(port, "/ws-api/v3");
    for i in 0..50u64 {
        let r = ok(
            &good,
            i,
            "order.place",
            sign(
                &alice,
                json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                       "price": "20000", "quantity": "0.001", "newOrderRespType": "ACK"}),
            ),
        );
        assert!(r["orderId"].as_u64().is_some());
    }
    // The sleeper's session gives up on it (send timeout): once it reads,
    // it gets part of its answers and then the end of the connection.
    std::thread::sleep(Duration::from_secs(12));
    let _ = sleeper
        .out
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            Vec::new().into(),
        ));
    let mut n = 0;
    let closed = loop {
        match sleeper.next(Duration::from_secs(20)) {
            Some(In::Json(_)) => n += 1,
            Some(In::Closed(c)) => break c,
            None => panic!("sleeper not closed after {n} replies"),
        }
    };
    assert!(n < 2000, "the sleeper was cut off: {n} replies");
    if let Some((code, reason)) = closed {
        assert_eq!(code, 1008);
        assert!(reason.contains("slow consumer"), "{reason}");
    }
    assert_eq!(call(&good, json!("end"), "ping", json!({}))["status"], 200);
}

#[test]
fn sigterm_says_server_shutdown_and_closes_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let (alice, _bob) = setup(&s);
    let ws = Ws::connect(port, "/ws-api/v3");
    assert_eq!(call(&ws, json!(1), "ping", json!({}))["status"], 200);
    // A market stream and a listen-key user stream close too.
    let market = Ws::connect(port, "/ws/btcusdt@trade");
    let r = s.req(
        "POST",
        "/api/v3/userDataStream",
        &[("X-MBX-APIKEY", &alice.key)],
        b"",
    );
    let key = r.json["listenKey"].as_str().unwrap().to_string();
    let user = Ws::connect(port, &format!("/ws/{key}"));
    common::send_signal(s.child.id(), "-TERM");
    match ws.next(Duration::from_secs(10)) {
        Some(In::Json(v)) => {
            assert_eq!(v["event"]["e"], "serverShutdown", "{v}");
            assert!(v["event"]["E"].as_u64().unwrap() > 0);
        }
        other => panic!("expected serverShutdown, got {other:?}"),
    }
    for conn in [&ws, &market, &user] {
        assert_eq!(
            conn.closed(Duration::from_secs(10)),
            Some((1001, "server shutting down".to_string()))
        );
    }
    let mut s = s;
    let st = s.child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
}

/// A small deterministic generator (xorshift64*), so a failure names its
/// seed and replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

fn hostile_value(r: &mut Rng) -> Value {
    const TEXT: &[&str] = &[
        "",
        "0",
        "-1",
        "1",
        "0.001",
        "30000",
        "1e400",
        "NaN",
        "inf",
        "-0",
        "0x10",
        " 1",
        "99999999999999999999999999999999999",
        "18446744073709551616",
        "-9223372036854775809",
        "0.000000000000000000000001",
        "BTCUSDT",
        "btcusdt",
        "ETHBTC",
        "NOPE",
        "BUY",
        "SELL",
        "LIMIT",
        "MARKET",
        "LIMIT_MAKER",
        "STOP_LOSS_LIMIT",
        "GTC",
        "IOC",
        "FOK",
        "ACK",
        "FULL",
        "EXPIRE_BOTH",
        "STOP_ON_FAILURE",
        "\u{0}",
        "\u{202e}",
        "😀",
        "%zz",
        "' OR 1=1 --",
        "../../etc/passwd",
        "true",
        "null",
        "[]",
        "1m",
        "1M",
        "7x",
    ];
    match r.below(10) {
        0..=5 => json!(r.pick(TEXT)),
        6 => json!(r.pick(&[0i64, -1, 1, i64::MAX, i64::MIN])),
        7 => json!(r.pick(&[1e308, -0.5, 0.1, 1e-30])),
        8 => r
            .pick(&[json!(true), json!(false), Value::Null, json!([]), json!({})])
            .clone(),
        _ => json!("A".repeat(r.below(6000))),
    }
}

/// A valid request's params, its method under `_method`.
fn valid_params(r: &mut Rng) -> Map<String, Value> {
    let side = *r.pick(&["BUY", "SELL"]);
    let price = format!("{}", 29_990 + r.below(20));
    let v = match r.below(8) {
        0 | 1 => json!({"_method": "order.place", "symbol": "BTCUSDT", "side": side,
            "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001", "price": price}),
        2 => json!({"_method": "order.place", "symbol": "BTCUSDT", "side": side,
            "type": "MARKET", "quoteOrderQty": "50"}),
        3 => json!({"_method": "order.cancel", "symbol": "BTCUSDT", "orderId": r.below(50)}),
        4 => json!({"_method": "order.cancelReplace", "symbol": "BTCUSDT", "side": side,
            "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.002", "price": price,
            "cancelReplaceMode": "ALLOW_FAILURE", "cancelOrderId": r.below(50)}),
        5 => json!({"_method": "order.status", "symbol": "BTCUSDT", "orderId": r.below(50)}),
        6 => json!({"_method": "myTrades", "symbol": "BTCUSDT", "limit": 5}),
        _ => json!({"_method": "openOrders.cancelAll", "symbol": "BTCUSDT"}),
    };
    v.as_object().unwrap().clone()
}

/// Seeded random hostile requests: every method (and unknown ones), ids of
/// every JSON type, parameters with hostile values, signed and unsigned,
/// and text that is not a request at all. Each gets exactly one answer with
/// a status and either a result or Binance's error object, never a 5xx
/// other than the documented ones; the session stays open; the server
/// still trades afterwards.
#[test]
fn seeded_hostile_requests_each_get_one_well_formed_answer() {
    const METHODS: &[&str] = &[
        "order.place",
        "order.test",
        "order.cancel",
        "order.cancelReplace",
        "order.status",
        "openOrders.status",
        "openOrders.cancelAll",
        "account.status",
        "myTrades",
        "allOrders",
        "time",
        "ping",
        "exchangeInfo",
        "depth",
        "trades.recent",
        "trades.aggregate",
        "klines",
        "avgPrice",
        "ticker.24hr",
        "ticker.price",
        "ticker.book",
        "userDataStream.subscribe.signature",
        "userDataStream.unsubscribe",
        "session.logon",
        "session.status",
        "session.logout",
        "nope",
        "",
    ];
    const NAMES: &[&str] = &[
        "symbol",
        "side",
        "type",
        "quantity",
        "price",
        "timeInForce",
        "newClientOrderId",
        "origClientOrderId",
        "orderId",
        "quoteOrderQty",
        "stopPrice",
        "icebergQty",
        "selfTradePreventionMode",
        "newOrderRespType",
        "cancelReplaceMode",
        "cancelOrderId",
        "limit",
        "fromId",
        "startTime",
        "endTime",
        "interval",
        "symbols",
        "recvWindow",
        "timestamp",
        "subscriptionId",
        "apiKey",
        "signature",
        "returnRateLimits",
        "x",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let (alice, _) = setup(&s);
    let mut ws = Ws::connect(s.port, "/ws-api/v3");
    for seed in fuzz_seeds(&[1, 2, 3]) {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        for n in 0..1_500 {
            let text = if r.below(20) == 0 {
                r.pick(&[
                    "{",
                    "[]",
                    "null",
                    "1",
                    "\"x\"",
                    "{\"id\":1}",
                    "{\"method\":7}",
                ])
                .to_string()
            } else {
                // Half the time a valid request of its method with one or
                // two fields made hostile, so the deep checks run too.
                let template = r.below(2) == 0;
                let mut params = if template {
                    valid_params(&mut r)
                } else {
                    Map::new()
                };
                let method = if template {
                    params
                        .remove("_method")
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_string()
                } else {
                    r.pick(METHODS).to_string()
                };
                for _ in 0..if template { 1 + r.below(2) } else { r.below(8) } {
                    params.insert(r.pick(NAMES).to_string(), hostile_value(&mut r));
                }
                if !template && r.below(3) > 0 {
                    params.insert("symbol".into(), json!("BTCUSDT"));
                }
                let params = match r.below(if template { 8 } else { 4 }) {
                    0 => Value::Object(params),
                    1 => hostile_value(&mut r),
                    _ => sign(&alice, Value::Object(params)),
                };
                let id = match r.below(5) {
                    0 => json!(n),
                    1 => json!(format!("req-{n}")),
                    2 => Value::Null,
                    3 => hostile_value(&mut r),
                    _ => json!(n as i64 * -7),
                };
                let mut req = Map::new();
                req.insert("id".into(), id);
                req.insert("method".into(), json!(method));
                if r.below(10) > 0 {
                    req.insert("params".into(), params);
                }
                Value::Object(req).to_string()
            };
            ws.send_text(&text);
            let answer = loop {
                match ws.next(Duration::from_secs(10)) {
                    // User data events of a subscription the fuzz opened.
                    Some(In::Json(v)) if v.get("event").is_some() && v.get("status").is_none() => {
                        continue
                    }
                    Some(In::Json(v)) => break v,
                    other => panic!("seed {seed} request {n} {text:.300}: got {other:?}"),
                }
            };
            let status = answer["status"].as_u64().unwrap_or_else(|| {
                panic!("seed {seed} request {n} {text:.300}: no status in {answer}")
            });
            assert!(
                status < 500 || status == 503,
                "seed {seed} request {n} {text:.300}: {answer}"
            );
            if status != 200 {
                assert!(
                    answer["error"]["code"].is_i64() && answer["error"]["msg"].is_string(),
                    "seed {seed} request {n} {text:.300}: {answer}"
                );
            } else {
                assert!(answer.get("result").is_some(), "{answer}");
            }
        }
        // The session is still open and answers.
        assert_eq!(ok(&ws, 1, "ping", json!({})), json!({}));
        ws = Ws::connect(s.port, "/ws-api/v3");
    }
    // The exchange still trades.
    let placed = ok(
        &ws,
        2,
        "order.place",
        sign(
            &alice,
            json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                   "quantity": "0.001", "price": "20000"}),
        ),
    );
    assert_eq!(placed["status"], "NEW", "{placed}");
}
