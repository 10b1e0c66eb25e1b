//! User data streams over listen keys against a `serve` process:
//! `POST/PUT/DELETE /api/v3/userDataStream` (API key only), `/ws/<listenKey>`
//! delivering `executionReport` (NEW, then TRADE with the fill's numbers),
//! `outboundAccountPosition` equal to `GET /api/v3/account`, `balanceUpdate`
//! for a deposit, `listenKeyExpired` then close on delete and on expiry,
//! and -1125 for unknown keys.
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

    // Cancel: CANCELED with C = the order's client id.
    alice.order(
        &s,
        &format!("{GTC}&side=BUY&quantity=0.1&price=20000&newClientOrderId=alice-2"),
    );
    let r = alice.call(
        &s,
        "DELETE",
        "/api/v3/order",
        "symbol=BTCUSDT&origClientOrderId=alice-2",
    );
    assert_eq!(r.status, 200, "{}", r.json);
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
