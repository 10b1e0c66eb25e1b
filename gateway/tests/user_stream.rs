//! User data streams over listen keys against a `serve` process:
//! `POST/PUT/DELETE /api/v3/userDataStream` (API key only), `/ws/<listenKey>`
//! delivering `executionReport` (NEW, then TRADE with the fill's numbers),
//! `outboundAccountPosition` equal to `GET /api/v3/account`, `balanceUpdate`
//! for a deposit, `listenKeyExpired` then close on delete and on expiry,
//! and -1125 for unknown keys; every executionReport field typed as
//! Binance types it; stop orders reported at placement, trigger, fill and
//! end; the STP fields of prevented matches (EXPIRE_TAKER, EXPIRE_MAKER,
//! EXPIRE_BOTH); REJECTED with `r` for a cancelReplace's refused new
//! order; CANCELED for every open order of a user an admin locks; and a
//! seeded random flow of two users whose executionReports
//! replay to exactly the orders GET /api/v3/allOrders reports.
#![allow(dead_code)]

mod common;

use std::time::{Duration, Instant};

use common::ws::{In, Ws};
use common::{free_port, login, trader, Server, Trader, ADMIN, ADMIN_PW};
use serde_json::{json, Value};

const GTC: &str = "symbol=BTCUSDT&type=LIMIT&timeInForce=GTC";

fn setup(s: &Server) -> (String, Trader, Trader) {
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
    (admin, alice, bob)
}

fn listen_key(s: &Server, t: &Trader) -> String {
    let r = s.req(
        "POST",
        "/api/v3/userDataStream",
        &[("X-MBX-APIKEY", &t.key)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["listenKey"].as_str().unwrap().to_string()
}

fn key_call(s: &Server, t: &Trader, method: &str, key: &str) -> common::Resp {
    s.req(
        method,
        &format!("/api/v3/userDataStream?listenKey={key}"),
        &[("X-MBX-APIKEY", &t.key)],
        b"",
    )
}

/// Stream events until `done` holds for the list (10 s at most).
fn collect(ws: &Ws, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while Instant::now() < deadline && !done(&out) {
        match ws.next(Duration::from_millis(200)) {
            Some(In::Json(v)) => out.push(v),
            Some(In::Closed(c)) => panic!("closed early: {c:?}; got {out:?}"),
            None => {}
        }
    }
    assert!(done(&out), "events so far: {out:?}");
    out
}

fn of_type<'a>(evs: &'a [Value], e: &str) -> Vec<&'a Value> {
    evs.iter().filter(|v| v["e"] == e).collect()
}

fn num(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

/// The last reported balance of every asset equals GET /api/v3/account.
fn positions_match_account(s: &Server, t: &Trader, evs: &[Value]) {
    let acct = t.call(s, "GET", "/api/v3/account", "");
    assert_eq!(acct.status, 200);
    let mut seen = 0;
    for p in of_type(evs, "outboundAccountPosition") {
        assert!(
            p["E"].as_u64().is_some() && p["u"].as_u64().is_some(),
            "{p}"
        );
        for b in p["B"].as_array().unwrap() {
            seen += 1;
            let _ = b;
        }
    }
    assert!(seen > 0, "no outboundAccountPosition in {evs:?}");
    let mut last = std::collections::BTreeMap::new();
    for p in of_type(evs, "outboundAccountPosition") {
        for b in p["B"].as_array().unwrap() {
            last.insert(b["a"].as_str().unwrap().to_string(), b.clone());
        }
    }
    for (asset, b) in last {
        let rest = acct.json["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["asset"] == asset.as_str())
            .unwrap();
        assert_eq!(b["f"], rest["free"], "{asset}");
        assert_eq!(b["l"], rest["locked"], "{asset}");
    }
}

#[test]
fn listen_key_stream_reports_orders_fills_balances_and_deposits() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let (admin, alice, bob) = setup(&s);

    // Keys: API key only; the same live key comes back; errors.
    let r = s.req("POST", "/api/v3/userDataStream", &[], b"");
    assert_eq!(r.json["code"], -2014, "{}", r.json);
    let r = s.req(
        "POST",
        "/api/v3/userDataStream",
        &[(
            "X-MBX-APIKEY",
            "nosuchkeynosuchkeynosuchkeynosuchkeynosuchkeynosuchkeynosuchkey",
        )],
        b"",
    );
    assert_eq!(r.json["code"], -2015, "{}", r.json);
    let key = listen_key(&s, &alice);
    assert_eq!(key.len(), 60);
    assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(listen_key(&s, &alice), key);
    let bob_key = listen_key(&s, &bob);
    assert_ne!(bob_key, key);
    let r = key_call(&s, &alice, "PUT", &key);
    assert_eq!((r.status, r.json.clone()), (200, json!({})));
    let unknown = "x".repeat(60);
    for m in ["PUT", "DELETE"] {
        let r = key_call(&s, &alice, m, &unknown);
        assert_eq!(r.status, 400);
        assert_eq!(
            r.json,
            json!({"code": -1125, "msg": "This listenKey does not exist."})
        );
    }
    // Another user's key is not alice's to keep alive.
    assert_eq!(key_call(&s, &alice, "PUT", &bob_key).json["code"], -1125);

    let ws = Ws::connect(s.port, &format!("/ws/{key}"));
    std::thread::sleep(Duration::from_millis(300));

    // Alice rests a buy; bob fills it.
    let placed = alice.order(
        &s,
        &format!("{GTC}&side=BUY&quantity=0.5&price=30000&newClientOrderId=alice-1"),
    );
    let oid = placed["orderId"].as_u64().unwrap();
    let evs = collect(&ws, |e| {
        !of_type(e, "executionReport").is_empty()
            && !of_type(e, "outboundAccountPosition").is_empty()
    });
    let new = of_type(&evs, "executionReport")[0].clone();
    assert_eq!(new["x"], "NEW");
    assert_eq!(new["X"], "NEW");
    assert_eq!(new["s"], "BTCUSDT");
    assert_eq!(new["c"], "alice-1");
    assert_eq!(new["S"], "BUY");
    assert_eq!(new["o"], "LIMIT");
    assert_eq!(new["f"], "GTC");
    assert_eq!(new["i"], oid);
    assert_eq!(new["q"], placed["origQty"]);
    assert_eq!(new["p"], placed["price"]);
    assert_eq!(new["t"], -1);
    assert_eq!(new["N"], Value::Null);
    assert_eq!(num(&new["z"]), 0.0);
    for f in [
        "e", "E", "s", "c", "S", "o", "f", "q", "p", "P", "F", "g", "C", "x", "X", "r", "i", "l",
        "z", "L", "n", "N", "T", "t", "I", "w", "m", "M", "O", "Z", "Y", "Q", "W", "V",
    ] {
        assert!(new.get(f).is_some(), "executionReport lacks {f}: {new}");
    }
    assert_eq!(new["w"], true);
    positions_match_account(&s, &alice, &evs);

    let sold = bob.order(&s, &format!("{GTC}&side=SELL&quantity=0.5&price=30000"));
    assert_eq!(sold["status"], "FILLED");
    let evs = collect(&ws, |e| {
        !of_type(e, "executionReport").is_empty()
            && !of_type(e, "outboundAccountPosition").is_empty()
    });
    let reports = of_type(&evs, "executionReport");
    assert_eq!(reports.len(), 1, "only alice's own order: {evs:?}");
    let tr = reports[0];
    let mine = alice.call(&s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT");
    let t = mine.json.as_array().unwrap().last().unwrap().clone();
    assert_eq!(tr["x"], "TRADE");
    assert_eq!(tr["X"], "FILLED");
    assert_eq!(tr["i"], oid);
    assert_eq!(tr["c"], "alice-1");
    assert_eq!(tr["l"], placed["origQty"]);
    assert_eq!(tr["z"], placed["origQty"]);
    assert_eq!(tr["L"], t["price"]);
    assert_eq!(tr["n"], t["commission"]);
    assert_eq!(tr["N"], t["commissionAsset"]);
    assert_eq!(tr["t"], t["id"]);
    assert_eq!(tr["m"], true);
    assert_eq!(tr["Z"], t["quoteQty"]);
    assert_eq!(tr["Y"], t["quoteQty"]);
    assert_eq!(tr["w"], false);
    positions_match_account(&s, &alice, &evs);
    let q = alice.call(
        &s,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={oid}"),
    );
    assert_eq!(q.json["status"], "FILLED");

    // Cancel: CANCELED with c = the cancel's own client id (its
    // newClientOrderId), C = the order's.
    alice.order(
        &s,
        &format!("{GTC}&side=BUY&quantity=0.1&price=20000&newClientOrderId=alice-2"),
    );
    let r = alice.call(
        &s,
        "DELETE",
        "/api/v3/order",
        "symbol=BTCUSDT&origClientOrderId=alice-2&newClientOrderId=alice-2-cancel",
    );
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        (
            r.json["clientOrderId"].as_str(),
            r.json["origClientOrderId"].as_str()
        ),
        (Some("alice-2-cancel"), Some("alice-2"))
    );
    let evs = collect(&ws, |e| {
        of_type(e, "executionReport").len() >= 2 && of_type(e, "outboundAccountPosition").len() >= 2
    });
    let reports = of_type(&evs, "executionReport");
    assert_eq!(
        (
            reports[0]["x"].as_str(),
            reports[1]["x"].as_str(),
            reports[1]["X"].as_str()
        ),
        (Some("NEW"), Some("CANCELED"), Some("CANCELED"))
    );
    assert_eq!(reports[1]["C"], "alice-2");
    assert_eq!(reports[1]["c"], "alice-2-cancel");
    positions_match_account(&s, &alice, &evs);

    // A cancel without a name gets one, the same in the answer and the
    // stream.
    alice.order(
        &s,
        &format!("{GTC}&side=BUY&quantity=0.1&price=20000&newClientOrderId=alice-3"),
    );
    let r = alice.call(
        &s,
        "DELETE",
        "/api/v3/order",
        "symbol=BTCUSDT&origClientOrderId=alice-3",
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let named = r.json["clientOrderId"].as_str().unwrap().to_string();
    assert!(!named.is_empty() && named != "alice-3", "{named}");
    let evs = collect(&ws, |e| {
        of_type(e, "executionReport").len() >= 2 && of_type(e, "outboundAccountPosition").len() >= 2
    });
    let reports = of_type(&evs, "executionReport");
    assert_eq!(reports[1]["x"], "CANCELED");
    assert_eq!(reports[1]["C"], "alice-3");
    assert_eq!(reports[1]["c"].as_str(), Some(named.as_str()));
    positions_match_account(&s, &alice, &evs);

    // A deposit: balanceUpdate, then the new position.
    let r = s.json_post(
        "/api/v1/admin/deposits",
        Some(&admin),
        &json!({"username": "alice", "asset": "USDT", "amount": "250.5",
                "tx_hash": "0xalice-extra", "confirmations": 100}),
    );
    assert_eq!(r.status, 201, "{}", r.json);
    let evs = collect(&ws, |e| {
        !of_type(e, "balanceUpdate").is_empty() && !of_type(e, "outboundAccountPosition").is_empty()
    });
    let bu = of_type(&evs, "balanceUpdate")[0];
    assert_eq!(bu["a"], "USDT");
    assert_eq!(num(&bu["d"]), 250.5);
    assert!(bu["T"].as_u64().is_some() && bu["E"].as_u64().is_some());
    positions_match_account(&s, &alice, &evs);

    // Delete: listenKeyExpired, then the connection closes; the key is gone.
    let r = key_call(&s, &alice, "DELETE", &key);
    assert_eq!((r.status, r.json.clone()), (200, json!({})));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut expired = false;
    loop {
        assert!(Instant::now() < deadline, "not closed");
        match ws.next(Duration::from_millis(200)) {
            Some(In::Json(v)) if v["e"] == "listenKeyExpired" => {
                assert_eq!(v["listenKey"], key.as_str());
                expired = true;
            }
            Some(In::Json(_)) | None => {}
            Some(In::Closed(_)) => break,
        }
    }
    assert!(expired);
    for m in ["PUT", "DELETE"] {
        assert_eq!(key_call(&s, &alice, m, &key).json["code"], -1125);
    }
    // A new POST makes a new key.
    assert_ne!(listen_key(&s, &alice), key);
}

#[test]
fn listen_key_expires_without_keepalive() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        tmp.path(),
        free_port(),
        &[("MX_AUTH__LISTEN_KEY_TTL_SECS", "2")],
    );
    let (_, alice, _) = setup(&s);
    let key = listen_key(&s, &alice);
    let ws = Ws::connect(s.port, &format!("/ws/{key}"));
    std::thread::sleep(Duration::from_millis(1200));
    // A keepalive pushes expiry out by the TTL again.
    assert_eq!(key_call(&s, &alice, "PUT", &key).json, json!({}));
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(key_call(&s, &alice, "PUT", &key).json, json!({}));
    let started = Instant::now();
    let mut expired = false;
    loop {
        assert!(started.elapsed() < Duration::from_secs(10), "not closed");
        match ws.next(Duration::from_millis(200)) {
            Some(In::Json(v)) if v["e"] == "listenKeyExpired" => expired = true,
            Some(In::Json(_)) | None => {}
            Some(In::Closed(_)) => break,
        }
    }
    assert!(expired);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(key_call(&s, &alice, "PUT", &key).json["code"], -1125);
}

// ---- executionReport fields, stop triggers, STP, replay against REST ----

/// Decimal fields of an executionReport (JSON strings).
const DECIMAL_FIELDS: &[&str] = &["q", "p", "P", "F", "l", "z", "L", "n", "Z", "Y", "Q"];
/// Other string fields.
const STRING_FIELDS: &[&str] = &["e", "s", "c", "S", "o", "f", "C", "x", "X", "r", "V"];
/// Ids and times (JSON numbers).
const NUMBER_FIELDS: &[&str] = &["E", "g", "i", "T", "t", "I", "O"];
const BOOL_FIELDS: &[&str] = &["w", "m", "M"];
/// Present only on orders that expired by self-trade prevention.
const STP_FIELDS: &[&str] = &["u", "v", "U", "A", "B", "Cs", "pl", "pL", "pY"];

fn is_decimal(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| !s.is_empty() && s.parse::<f64>().is_ok() && !s.contains(['e', 'E']))
}

/// Every field letter user-data-stream.md lists for a spot order, typed
/// as Binance types them; the conditional ones exactly when they apply.
fn check_report(r: &Value) {
    assert_eq!(r["e"], "executionReport");
    for f in DECIMAL_FIELDS {
        assert!(is_decimal(&r[f]), "{f} is not a decimal string: {r}");
    }
    for f in STRING_FIELDS {
        assert!(r[f].is_string(), "{f} is not a string: {r}");
    }
    for f in NUMBER_FIELDS {
        assert!(r[f].is_i64(), "{f} is not an integer: {r}");
    }
    for f in BOOL_FIELDS {
        assert!(r[f].is_boolean(), "{f} is not a bool: {r}");
    }
    assert_eq!(r["M"], false);
    assert_eq!(r["g"], -1);
    let trade = r["x"] == "TRADE" && r["t"].as_i64() != Some(-1);
    if trade {
        assert!(r["N"].is_string(), "{r}");
        assert!(r["t"].as_i64().unwrap() > 0, "{r}");
    } else {
        assert_eq!(r["N"], Value::Null, "{r}");
        assert_eq!(r["n"], "0", "{r}");
        assert_eq!(num(&r["l"]), 0.0, "{r}");
        assert_eq!(num(&r["L"]), 0.0, "{r}");
        assert_eq!(num(&r["Y"]), 0.0, "{r}");
        assert_eq!(r["m"], false, "{r}");
    }
    if r["x"] == "REJECTED" {
        assert_ne!(r["r"], "NONE", "{r}");
        assert_eq!(r["i"], -1, "{r}");
    } else {
        assert_eq!(r["r"], "NONE", "{r}");
        assert!(r["i"].as_i64().unwrap() > 0, "{r}");
    }
    if let Some(w) = r.get("W") {
        assert!(w.as_u64().is_some_and(|w| w > 0), "{r}");
    }
    if r["w"] == true {
        assert!(r.get("W").is_some(), "working order without W: {r}");
    }
    let stp = r["X"] == "EXPIRED_IN_MATCH";
    assert_eq!(stp, r["x"] == "TRADE_PREVENTION", "{r}");
    for f in STP_FIELDS {
        assert_eq!(r.get(*f).is_some(), stp, "{f} on {r}");
    }
    if stp {
        for f in ["u", "v", "U"] {
            assert!(r[f].is_i64(), "{f}: {r}");
        }
        for f in ["A", "B", "pl", "pL", "pY"] {
            assert!(is_decimal(&r[f]), "{f}: {r}");
        }
        assert_eq!(r["Cs"], r["s"]);
        assert_eq!(r["u"], -1, "no trade groups: {r}");
    }
    let expired = r["X"] == "EXPIRED";
    assert_eq!(r.get("eR").is_some(), expired, "{r}");
    if expired {
        let reasons = [
            "UNFILLED_IOC_QUANTITY_EXPIRED",
            "UNFILLED_FOK_ORDER_EXPIRED",
            "INSUFFICIENT_LIQUIDITY",
        ];
        assert!(reasons.contains(&r["eR"].as_str().unwrap()), "{r}");
    }
}

fn reports(evs: &[Value]) -> Vec<Value> {
    of_type(evs, "executionReport")
        .into_iter()
        .cloned()
        .collect()
}

/// Reports about order `id`.
fn about(evs: &[Value], id: u64) -> Vec<Value> {
    reports(evs).into_iter().filter(|r| r["i"] == id).collect()
}

fn get_order(s: &Server, t: &Trader, id: u64) -> Value {
    let r = t.call(
        s,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={id}"),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    r.json
}

#[test]
fn stop_orders_report_their_trigger_fills_and_end() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let (_, alice, bob) = setup(&s);
    let key = listen_key(&s, &alice);
    let ws = Ws::connect(s.port, &format!("/ws/{key}"));

    // A last price of 30000.
    alice.order(&s, &format!("{GTC}&side=BUY&quantity=0.01&price=30000"));
    bob.order(&s, &format!("{GTC}&side=SELL&quantity=0.01&price=30000"));

    // STOP_LOSS_LIMIT sell: NEW, not working, no W, the stop price in P.
    let stop = alice.order(
        &s,
        "symbol=BTCUSDT&side=SELL&type=STOP_LOSS_LIMIT&timeInForce=GTC&quantity=0.1&price=28900&stopPrice=29000&newClientOrderId=stop-1",
    );
    let stop_id = stop["orderId"].as_u64().unwrap();
    let evs = collect(&ws, |e| about(e, stop_id).len() == 1);
    let new = &about(&evs, stop_id)[0];
    check_report(new);
    assert_eq!(new["x"], "NEW");
    assert_eq!(new["X"], "NEW");
    assert_eq!(new["o"], "STOP_LOSS_LIMIT");
    assert_eq!(new["c"], "stop-1");
    assert_eq!(num(&new["P"]), 29000.0);
    assert_eq!(num(&new["p"]), 28900.0);
    assert_eq!(new["w"], false);
    assert!(new.get("W").is_none(), "{new}");
    let q = get_order(&s, &alice, stop_id);
    assert_eq!(
        (q["isWorking"].clone(), q["workingTime"].clone()),
        (json!(false), json!(-1))
    );

    // Bob bids 29000 (0.01) and 28950 (0.05); alice sells 0.01 at 29000
    // IOC: the trade at 29000 fires the stop, which takes bob's 28950 and
    // rests its remaining 0.05 at 28900.
    bob.order(&s, &format!("{GTC}&side=BUY&quantity=0.01&price=29000"));
    bob.order(&s, &format!("{GTC}&side=BUY&quantity=0.05&price=28950"));
    let ioc = alice.order(
        &s,
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=IOC&quantity=0.01&price=29000",
    );
    assert_eq!(ioc["status"], "FILLED");
    let ioc_id = ioc["orderId"].as_u64().unwrap();
    let evs = collect(&ws, |e| {
        about(e, stop_id).len() >= 2 && about(e, ioc_id).len() >= 2
    });
    for r in reports(&evs) {
        check_report(&r);
    }
    // Engine order: the IOC's NEW and fill, then the stop's trigger and fill.
    let order: Vec<(u64, String)> = reports(&evs)
        .iter()
        .map(|r| {
            (
                r["i"].as_u64().unwrap(),
                r["x"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            (ioc_id, "NEW".into()),
            (ioc_id, "TRADE".into()),
            (stop_id, "NEW".into()),
            (stop_id, "TRADE".into()),
        ]
    );
    let rep = about(&evs, stop_id);
    let (trig, fill) = (&rep[0], &rep[1]);
    assert_eq!(
        (trig["X"].as_str(), trig["o"].as_str()),
        (Some("NEW"), Some("STOP_LOSS_LIMIT"))
    );
    assert_eq!(trig["w"], true, "rests after the command: {trig}");
    assert_eq!(trig["W"], trig["T"], "works from the trigger: {trig}");
    assert!(trig["W"].as_u64().unwrap() >= trig["O"].as_u64().unwrap());
    assert_eq!(num(&trig["z"]), 0.0);
    assert_eq!(num(&trig["P"]), 29000.0);
    assert_ne!(trig["I"], new["I"], "execution ids are unique");
    assert_eq!(fill["X"], "PARTIALLY_FILLED");
    assert_eq!(fill["o"], "STOP_LOSS_LIMIT");
    assert_eq!(num(&fill["l"]), 0.05);
    assert_eq!(num(&fill["L"]), 28950.0);
    assert_eq!(fill["m"], false);
    assert_eq!(fill["w"], true);
    assert_eq!(fill["W"], trig["W"]);
    let q = get_order(&s, &alice, stop_id);
    assert_eq!(q["status"], "PARTIALLY_FILLED");
    assert_eq!(q["isWorking"], true);
    assert_eq!(q["workingTime"], trig["W"]);
    assert_eq!(q["executedQty"], fill["z"]);
    assert_eq!(q["cummulativeQuoteQty"], fill["Z"]);
    assert_eq!(q["updateTime"], fill["T"]);
    let mine = alice.call(&s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT");
    let t = mine.json.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (fill["t"].clone(), fill["n"].clone()),
        (t["id"].clone(), t["commission"].clone())
    );

    // Its cancel still describes the stop order.
    let r = alice.call(
        &s,
        "DELETE",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={stop_id}"),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let evs = collect(&ws, |e| !about(e, stop_id).is_empty());
    let c = &about(&evs, stop_id)[0];
    check_report(c);
    assert_eq!(
        (c["x"].as_str(), c["X"].as_str()),
        (Some("CANCELED"), Some("CANCELED"))
    );
    assert_eq!(
        (c["o"].as_str(), c["C"].as_str()),
        (Some("STOP_LOSS_LIMIT"), Some("stop-1"))
    );
    assert_eq!(num(&c["P"]), 29000.0);
    assert_eq!(c["w"], false);

    // A market STOP_LOSS buy at 29500 (last 29000): a trade at 29500 fires
    // it; it takes what is left at 29500 (0.015 of its 0.02) and expires.
    let mstop = alice.order(
        &s,
        "symbol=BTCUSDT&side=BUY&type=STOP_LOSS&quantity=0.02&stopPrice=29500",
    );
    let mstop_id = mstop["orderId"].as_u64().unwrap();
    bob.order(&s, &format!("{GTC}&side=SELL&quantity=0.025&price=29500"));
    let lift = alice.order(&s, &format!("{GTC}&side=BUY&quantity=0.01&price=29500"));
    assert_eq!(lift["status"], "FILLED");
    let evs = collect(&ws, |e| about(e, mstop_id).len() >= 4);
    let rep = about(&evs, mstop_id);
    for r in &rep {
        check_report(r);
        assert_eq!(r["o"], "STOP_LOSS");
        assert_eq!(num(&r["P"]), 29500.0);
    }
    let xs: Vec<(&str, &str)> = rep
        .iter()
        .map(|r| (r["x"].as_str().unwrap(), r["X"].as_str().unwrap()))
        .collect();
    assert_eq!(
        xs,
        [
            ("NEW", "NEW"),
            ("NEW", "NEW"),
            ("TRADE", "PARTIALLY_FILLED"),
            ("EXPIRED", "EXPIRED")
        ]
    );
    assert_eq!((rep[0]["w"].clone(), rep[0].get("W")), (json!(false), None));
    assert_eq!(rep[1]["w"], false, "a market stop never rests: {}", rep[1]);
    assert!(rep[1]["W"].is_u64());
    assert_eq!(num(&rep[2]["l"]), 0.015);
    assert_eq!(num(&rep[2]["L"]), 29500.0);
    assert_eq!(rep[3]["eR"], "INSUFFICIENT_LIQUIDITY");
    assert_eq!(num(&rep[3]["z"]), 0.015);
    let q = get_order(&s, &alice, mstop_id);
    assert_eq!(q["status"], "EXPIRED");
    assert_eq!(q["executedQty"], rep[3]["z"]);
    assert_eq!(q["workingTime"], rep[1]["W"]);
}

#[test]
fn self_trade_prevention_reports_carry_the_prevented_match() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let (_, alice, _) = setup(&s);
    let key = listen_key(&s, &alice);
    let ws = Ws::connect(s.port, &format!("/ws/{key}"));
    let id = |v: &Value| v["orderId"].as_u64().unwrap();

    let a1 = id(&alice.order(&s, &format!("{GTC}&side=SELL&quantity=0.1&price=30000")));
    let a2 = id(&alice.order(&s, &format!("{GTC}&side=SELL&quantity=0.05&price=30100")));

    // EXPIRE_TAKER: the buy expires at once against a1, which stays.
    let t1 = alice.order(
        &s,
        &format!("{GTC}&side=BUY&quantity=0.2&price=30100&selfTradePreventionMode=EXPIRE_TAKER"),
    );
    assert_eq!(t1["status"], "EXPIRED_IN_MATCH");
    let t1 = id(&t1);
    let evs = collect(&ws, |e| about(e, t1).len() >= 2);
    let r = &about(&evs, t1)[1];
    check_report(r);
    assert_eq!(
        (r["x"].as_str(), r["X"].as_str()),
        (Some("TRADE_PREVENTION"), Some("EXPIRED_IN_MATCH"))
    );
    assert_eq!(r["V"], "EXPIRE_TAKER");
    assert_eq!(r["U"], a1, "counter order: {r}");
    assert_eq!(r["v"], t1);
    assert_eq!((num(&r["A"]), num(&r["B"])), (0.2, 0.2));
    assert_eq!(
        (num(&r["pl"]), num(&r["pL"]), num(&r["pY"])),
        (0.1, 30000.0, 3000.0)
    );
    assert_eq!(r["w"], false);
    assert_eq!(get_order(&s, &alice, a1)["status"], "NEW");

    // EXPIRE_MAKER: a1 expires, the buy rests.
    let t2 = alice.order(
        &s,
        &format!("{GTC}&side=BUY&quantity=0.01&price=30000&selfTradePreventionMode=EXPIRE_MAKER"),
    );
    assert_eq!(t2["status"], "NEW");
    let t2 = id(&t2);
    let evs = collect(&ws, |e| {
        !about(e, a1).is_empty() && !about(e, t2).is_empty()
    });
    let r = &about(&evs, a1)[0];
    check_report(r);
    assert_eq!(r["x"], "TRADE_PREVENTION");
    assert_eq!(r["V"], "EXPIRE_MAKER", "the maker's own mode: {r}");
    assert_eq!((r["U"].clone(), r["v"].clone()), (json!(t2), json!(a1)));
    assert_eq!((num(&r["A"]), num(&r["B"])), (0.1, 0.1));
    assert_eq!(
        (num(&r["pl"]), num(&r["pL"]), num(&r["pY"])),
        (0.01, 30000.0, 300.0)
    );
    let n = &about(&evs, t2)[0];
    assert_eq!(
        (n["x"].clone(), n["w"].clone()),
        (json!("NEW"), json!(true))
    );
    assert_eq!(get_order(&s, &alice, a1)["status"], "EXPIRED_IN_MATCH");

    // EXPIRE_BOTH: a2 and the buy expire in one prevented match.
    let t3 = alice.order(
        &s,
        &format!("{GTC}&side=BUY&quantity=0.02&price=30100&selfTradePreventionMode=EXPIRE_BOTH"),
    );
    assert_eq!(t3["status"], "EXPIRED_IN_MATCH");
    let t3 = id(&t3);
    let evs = collect(&ws, |e| !about(e, a2).is_empty() && about(e, t3).len() >= 2);
    let (m, t) = (&about(&evs, a2)[0], &about(&evs, t3)[1]);
    check_report(m);
    check_report(t);
    assert_eq!(m["v"], t["v"], "one prevented match");
    assert_eq!((m["U"].clone(), t["U"].clone()), (json!(t3), json!(a2)));
    assert_eq!((num(&m["A"]), num(&t["A"])), (0.05, 0.02));
    assert_eq!((num(&t["pl"]), num(&t["pL"])), (0.02, 30100.0));
    let pos: Vec<u64> = reports(&evs)
        .iter()
        .map(|r| r["i"].as_u64().unwrap())
        .collect();
    assert_eq!(pos, vec![t3, a2, t3], "engine order: {evs:?}");
    for o in [a2, t3] {
        assert_eq!(get_order(&s, &alice, o)["status"], "EXPIRED_IN_MATCH");
    }
}

#[test]
fn cancel_replace_with_a_refused_new_order_reports_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let (_, alice, _) = setup(&s);
    let key = listen_key(&s, &alice);
    let ws = Ws::connect(s.port, &format!("/ws/{key}"));
    let old = alice.order(
        &s,
        &format!("{GTC}&side=BUY&quantity=0.1&price=20000&newClientOrderId=old-1"),
    );
    let old_id = old["orderId"].as_u64().unwrap();
    // 100 BTC at 20000 is more USDT than alice has.
    let r = alice.call(
        &s,
        "POST",
        "/api/v3/order/cancelReplace",
        &format!(
            "{GTC}&side=BUY&quantity=100&price=20000&cancelReplaceMode=STOP_ON_FAILURE&cancelOrderId={old_id}&newClientOrderId=new-1"
        ),
    );
    assert_eq!(r.json["data"]["cancelResult"], "SUCCESS", "{}", r.json);
    assert_eq!(r.json["data"]["newOrderResult"], "FAILURE", "{}", r.json);
    let evs = collect(&ws, |e| reports(e).iter().any(|r| r["x"] == "REJECTED"));
    let reps = reports(&evs);
    let xs: Vec<&str> = reps.iter().map(|r| r["x"].as_str().unwrap()).collect();
    assert_eq!(xs, ["NEW", "CANCELED", "REJECTED"]);
    for r in &reps {
        check_report(r);
    }
    let rej = &reps[2];
    assert_eq!(rej["X"], "REJECTED");
    assert_eq!(rej["r"], "INSUFFICIENT_BALANCES");
    assert_eq!(rej["c"], "new-1");
    assert_eq!(rej["i"], -1);
    assert_eq!(num(&rej["q"]), 100.0);
    assert!(rej.get("W").is_none());
    assert_eq!(reps[1]["C"], "old-1");
}

/// Locking a user (native admin API) cancels their open orders on every
/// pair in the same command: the stream reports each CANCELED, in order id
/// order, and its balances end where GET /api/v3/account does, all free.
#[test]
fn locking_a_user_reports_their_orders_canceled() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let (admin, alice, _) = setup(&s);
    let key = listen_key(&s, &alice);
    let ws = Ws::connect(s.port, &format!("/ws/{key}"));
    let mut ids = Vec::new();
    for o in [
        format!("{GTC}&side=BUY&quantity=0.1&price=20000"),
        "symbol=ETHUSDT&type=LIMIT&timeInForce=GTC&side=BUY&quantity=1&price=1500".into(),
        format!("{GTC}&side=SELL&quantity=2&price=90000"),
    ] {
        ids.push(alice.order(&s, &o)["orderId"].as_u64().unwrap());
    }
    let alice_id = common::native::user_id(&s, &admin, "alice");
    let r = s.json_post(
        &format!("/api/v1/admin/users/{alice_id}/lock"),
        Some(&admin),
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    // Three reports, then the balances they freed.
    let evs = collect(&ws, |e| {
        let canceled: Vec<usize> = (0..e.len())
            .filter(|&i| e[i]["e"] == "executionReport" && e[i]["x"] == "CANCELED")
            .collect();
        canceled.len() == 3
            && e[canceled[2]..]
                .iter()
                .any(|v| v["e"] == "outboundAccountPosition")
    });
    let canceled: Vec<Value> = reports(&evs)
        .into_iter()
        .filter(|r| r["x"] == "CANCELED")
        .collect();
    for r in &canceled {
        check_report(r);
        assert_eq!(r["X"], "CANCELED", "{r}");
        assert_eq!(num(&r["z"]), 0.0, "{r}");
    }
    let got: Vec<u64> = canceled.iter().map(|r| r["i"].as_u64().unwrap()).collect();
    assert_eq!(got, ids);
    let symbols: Vec<&str> = canceled.iter().map(|r| r["s"].as_str().unwrap()).collect();
    assert_eq!(symbols, ["BTCUSDT", "ETHUSDT", "BTCUSDT"]);
    // Unlocked, her API key reads again: nothing open, nothing locked.
    let r = s.json_post(
        &format!("/api/v1/admin/users/{alice_id}/unlock"),
        Some(&admin),
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let open = alice.call(&s, "GET", "/api/v3/openOrders", "");
    assert_eq!((open.status, open.json), (200, json!([])));
    let acct = alice.call(&s, "GET", "/api/v3/account", "");
    for b in acct.json["balances"].as_array().unwrap() {
        assert_eq!(num(&b["locked"]), 0.0, "{b}");
    }
    positions_match_account(&s, &alice, &evs);
}

/// A small deterministic generator (the flows must replay).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An order as its executionReports describe it.
#[derive(Debug, Default, Clone)]
struct Replayed {
    status: String,
    executed: String,
    cum_quote: String,
    orig_qty: String,
    price: String,
    stop_price: String,
    kind: String,
    side: String,
    tif: String,
    stp: String,
    client_id: String,
    created: u64,
    updated: u64,
    working: Option<u64>,
    sum_last_qty: f64,
    sum_last_quote: f64,
    reports: usize,
}

/// Fold a user's executionReports into order states, checking each
/// report's fields and that an order's story is coherent on the way.
fn replay(evs: &[Value]) -> std::collections::BTreeMap<u64, Replayed> {
    let mut out: std::collections::BTreeMap<u64, Replayed> = Default::default();
    for r in reports(evs) {
        check_report(&r);
        if r["x"] == "REJECTED" {
            continue;
        }
        let id = r["i"].as_u64().unwrap();
        let o = out.entry(id).or_default();
        if o.reports == 0 {
            assert_eq!(r["x"], "NEW", "an order's first report is NEW: {r}");
            o.client_id = r["c"].as_str().unwrap().to_string();
        } else {
            assert!(
                matches!(o.status.as_str(), "NEW" | "PARTIALLY_FILLED"),
                "report after the end: {r}"
            );
            assert!(
                num(&r["z"]) >= num(&Value::String(o.executed.clone())),
                "{r}"
            );
        }
        o.reports += 1;
        let s = |f: &str| r[f].as_str().unwrap().to_string();
        o.status = s("X");
        o.executed = s("z");
        o.cum_quote = s("Z");
        o.orig_qty = s("q");
        o.price = s("p");
        o.stop_price = s("P");
        o.kind = s("o");
        o.side = s("S");
        o.tif = s("f");
        o.stp = s("V");
        o.created = r["O"].as_u64().unwrap();
        o.updated = r["T"].as_u64().unwrap();
        if let Some(w) = r.get("W") {
            o.working = w.as_u64();
        }
        if r["x"] == "TRADE" {
            o.sum_last_qty += num(&r["l"]);
            o.sum_last_quote += num(&r["Y"]);
        }
    }
    out
}

/// Where the replayed orders differ from GET /api/v3/allOrders (empty:
/// identical).
fn replay_diff(
    replayed: &std::collections::BTreeMap<u64, Replayed>,
    rest: &[Value],
) -> Vec<String> {
    let mut diffs = Vec::new();
    if replayed.len() != rest.len() {
        diffs.push(format!(
            "{} orders replayed, {} from REST",
            replayed.len(),
            rest.len()
        ));
    }
    for q in rest {
        let id = q["orderId"].as_u64().unwrap();
        let Some(o) = replayed.get(&id) else {
            diffs.push(format!("order {id}: no reports"));
            continue;
        };
        let working = if q["isWorking"] == true {
            q["workingTime"].as_u64()
        } else {
            None
        };
        let pairs: [(&str, Value, Value); 15] = [
            ("status", json!(o.status), q["status"].clone()),
            ("executedQty", json!(o.executed), q["executedQty"].clone()),
            (
                "cummulativeQuoteQty",
                json!(o.cum_quote),
                q["cummulativeQuoteQty"].clone(),
            ),
            ("origQty", json!(o.orig_qty), q["origQty"].clone()),
            ("price", json!(o.price), q["price"].clone()),
            ("stopPrice", json!(o.stop_price), q["stopPrice"].clone()),
            ("type", json!(o.kind), q["type"].clone()),
            ("side", json!(o.side), q["side"].clone()),
            ("timeInForce", json!(o.tif), q["timeInForce"].clone()),
            (
                "selfTradePreventionMode",
                json!(o.stp),
                q["selfTradePreventionMode"].clone(),
            ),
            (
                "clientOrderId",
                json!(o.client_id),
                q["clientOrderId"].clone(),
            ),
            ("time", json!(o.created), q["time"].clone()),
            ("updateTime", json!(o.updated), q["updateTime"].clone()),
            ("workingTime", json!(o.working), json!(working)),
            (
                "sum of l / Y",
                json!([
                    (o.sum_last_qty * 1e8).round(),
                    (o.sum_last_quote * 1e8).round()
                ]),
                json!([
                    (num(&q["executedQty"]) * 1e8).round(),
                    (num(&q["cummulativeQuoteQty"]) * 1e8).round()
                ]),
            ),
        ];
        for (name, mine, theirs) in pairs {
            if mine != theirs {
                diffs.push(format!("order {id} {name}: stream {mine} REST {theirs}"));
            }
        }
    }
    diffs
}

#[test]
fn execution_reports_replay_to_the_order_states_rest_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let (_, alice, bob) = setup(&s);
    let users = [&alice, &bob];
    let streams: Vec<Ws> = users
        .iter()
        .map(|t| Ws::connect(s.port, &format!("/ws/{}", listen_key(&s, t))))
        .collect();
    let mut rng = Lcg(0x5eed_0005);
    let mut open: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut last_price = 30_000u64;
    let (mut placed, mut refused) = (0, 0);
    for step in 0..160 {
        let u = rng.below(2) as usize;
        let t = users[u];
        let side = if rng.below(2) == 0 { "BUY" } else { "SELL" };
        let px = 29_990 + rng.below(21);
        let qty = format!("0.{:03}", 1 + rng.below(20));
        let stp = [
            "",
            "&selfTradePreventionMode=NONE",
            "&selfTradePreventionMode=EXPIRE_TAKER",
            "&selfTradePreventionMode=EXPIRE_BOTH",
        ][rng.below(4) as usize];
        let roll = rng.below(100);
        let r = if roll < 20 && !open[u].is_empty() {
            let i = rng.below(open[u].len() as u64) as usize;
            let id = open[u].swap_remove(i);
            if rng.below(3) == 0 {
                t.call(
                    &s,
                    "POST",
                    "/api/v3/order/cancelReplace",
                    &format!("{GTC}&side={side}&quantity={qty}&price={px}&cancelReplaceMode=ALLOW_FAILURE&cancelOrderId={id}"),
                )
            } else {
                t.call(
                    &s,
                    "DELETE",
                    "/api/v3/order",
                    &format!("symbol=BTCUSDT&orderId={id}"),
                )
            }
        } else {
            let params = match roll {
                0..=49 => format!("{GTC}&side={side}&quantity={qty}&price={px}&newClientOrderId=f{step}"),
                50..=59 => format!("symbol=BTCUSDT&type=LIMIT&timeInForce=IOC&side={side}&quantity={qty}&price={px}"),
                60..=64 => format!("symbol=BTCUSDT&type=LIMIT&timeInForce=FOK&side={side}&quantity={qty}&price={px}"),
                65..=74 => {
                    if rng.below(2) == 0 {
                        format!("symbol=BTCUSDT&type=MARKET&side={side}&quantity={qty}")
                    } else {
                        format!("symbol=BTCUSDT&type=MARKET&side={side}&quoteOrderQty=100")
                    }
                }
                _ => {
                    // Stops a few ticks from the last price, so some fire.
                    let kinds = ["STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT", "STOP_LOSS", "TAKE_PROFIT"];
                    let kind = kinds[rng.below(4) as usize];
                    let up = (side == "BUY") == kind.starts_with("STOP");
                    let stop = if up { last_price + 1 + rng.below(5) } else { last_price - 1 - rng.below(5) };
                    let limit = if kind.ends_with("LIMIT") { format!("&timeInForce=GTC&price={px}") } else { String::new() };
                    format!("symbol=BTCUSDT&type={kind}&side={side}&quantity={qty}&stopPrice={stop}{limit}")
                }
            };
            t.call(&s, "POST", "/api/v3/order", &format!("{params}{stp}"))
        };
        if r.status != 200 {
            refused += 1;
            continue;
        }
        placed += 1;
        let new_id = r.json["orderId"]
            .as_u64()
            .or_else(|| r.json["newOrderResponse"]["orderId"].as_u64());
        if let Some(id) = new_id {
            open[u].push(id);
        }
        let p = s.req("GET", "/api/v3/ticker/price?symbol=BTCUSDT", &[], b"");
        if let Some(lp) = p.json["price"].as_str().and_then(|x| x.parse::<f64>().ok()) {
            if lp >= 1.0 {
                last_price = lp.round() as u64;
            }
        }
    }
    assert!(placed > 100, "placed {placed}, refused {refused}");
    let mut kinds = std::collections::BTreeSet::new();
    for (t, ws) in users.iter().zip(&streams) {
        let all = t.call(&s, "GET", "/api/v3/allOrders", "symbol=BTCUSDT&limit=1000");
        assert_eq!(all.status, 200, "{}", all.json);
        let rest = all.json.as_array().unwrap().clone();
        // Wait until the stream has told the whole story (or 10 s).
        let evs = collect(ws, |e| replay_diff(&replay(e), &rest).is_empty());
        let diffs = replay_diff(&replay(&evs), &rest);
        assert!(diffs.is_empty(), "{diffs:#?}");
        for r in reports(&evs) {
            let stop = r["o"] != "LIMIT" && r["o"] != "MARKET" && r["o"] != "LIMIT_MAKER";
            if stop && r["x"] == "NEW" && r.get("W").is_some() {
                kinds.insert("stop triggered".to_string());
            }
            kinds.insert(format!(
                "{}/{}",
                r["x"].as_str().unwrap(),
                r["X"].as_str().unwrap()
            ));
        }
        // Nothing more arrives for this user.
        assert!(
            ws.drain(Duration::from_millis(300))
                .iter()
                .all(|v| v["e"] != "executionReport"),
            "late reports"
        );
    }
    // The flow exercised the lifecycle, not just NEW.
    for k in [
        "NEW/NEW",
        "TRADE/FILLED",
        "TRADE/PARTIALLY_FILLED",
        "CANCELED/CANCELED",
        "EXPIRED/EXPIRED",
        "TRADE_PREVENTION/EXPIRED_IN_MATCH",
        "stop triggered",
    ] {
        assert!(kinds.contains(k), "no {k} in {kinds:?}");
    }
}

#[test]
fn a_listen_key_subscribed_on_a_market_connection_streams_user_events() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let (_, alice, _) = setup(&s);
    let key = listen_key(&s, &alice);
    // Raw (/ws) and combined (/stream) connections, as binance-connector's
    // user_data(listen_key) subscribes.
    let raw = Ws::connect(s.port, "/ws");
    let combined = Ws::connect(s.port, "/stream");
    for (ws, id) in [(&raw, 7), (&combined, 8)] {
        ws.send(&json!({"method": "SUBSCRIBE", "params": [key, "btcusdt@trade"], "id": id}));
        assert_eq!(ws.reply(), json!({"result": null, "id": id}));
    }
    // The listen key is listed with the streams.
    raw.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": 10}));
    assert_eq!(
        raw.reply(),
        json!({"result": ["btcusdt@trade", key], "id": 10})
    );
    let placed = alice.order(&s, &format!("{GTC}&side=BUY&quantity=0.1&price=20000"));
    let oid = placed["orderId"].as_u64().unwrap();
    let evs = collect(&raw, |e| !about(e, oid).is_empty());
    check_report(&about(&evs, oid)[0]);
    let wrapped = collect(&combined, |e| e.iter().any(|v| v["data"]["i"] == oid));
    let w = wrapped.iter().find(|v| v["data"]["i"] == oid).unwrap();
    assert_eq!(w["stream"], key.as_str());
    assert_eq!(w["data"]["e"], "executionReport");
    // UNSUBSCRIBE stops the events; deleting the key ends the others'.
    raw.send(&json!({"method": "UNSUBSCRIBE", "params": [key], "id": 9}));
    assert_eq!(raw.reply(), json!({"result": null, "id": 9}));
    raw.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": 11}));
    assert_eq!(raw.reply(), json!({"result": ["btcusdt@trade"], "id": 11}));
    let r = key_call(&s, &alice, "DELETE", &key);
    assert_eq!(r.status, 200);
    collect(&combined, |e| {
        e.iter().any(|v| v["data"]["e"] == "listenKeyExpired")
    });
    alice.order(&s, &format!("{GTC}&side=BUY&quantity=0.1&price=20000"));
    let late: Vec<Value> = raw
        .drain(Duration::from_millis(500))
        .into_iter()
        .chain(combined.drain(Duration::from_millis(300)))
        .collect();
    assert!(
        late.iter()
            .all(|v| v["e"] != "executionReport" && v["data"]["e"] != "executionReport"),
        "{late:?}"
    );
}

#[test]
fn listen_keys_survive_a_restart_encrypted_at_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let (_, alice, _) = setup(&s);
    let key = listen_key(&s, &alice);
    assert_eq!(listen_key(&s, &alice), key, "one live key per API key");
    // SIGKILL: the key was saved when it was created.
    s.kill();
    let stored = std::fs::read_to_string(tmp.path().join("listen_keys.json")).unwrap();
    assert!(
        !stored.contains(&key),
        "the listen key is stored in plain text"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tmp.path().join("listen_keys.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "listen key file mode {mode:o}");

    let s = Server::start(tmp.path(), port);
    // The same key comes back, keepalive works, and it streams.
    assert_eq!(listen_key(&s, &alice), key);
    assert_eq!(key_call(&s, &alice, "PUT", &key).status, 200);
    let ws = Ws::connect(s.port, &format!("/ws/{key}"));
    let placed = alice.order(&s, &format!("{GTC}&side=BUY&quantity=0.1&price=20000"));
    let oid = placed["orderId"].as_u64().unwrap();
    let evs = collect(&ws, |e| !about(e, oid).is_empty());
    check_report(&about(&evs, oid)[0]);
    // Deleted keys stay deleted after a restart.
    assert_eq!(key_call(&s, &alice, "DELETE", &key).status, 200);
    s.kill();
    let s = Server::start(tmp.path(), port);
    assert_eq!(key_call(&s, &alice, "PUT", &key).status, 400);
    assert_ne!(listen_key(&s, &alice), key);
}
