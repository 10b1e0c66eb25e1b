//! Black-box tests of the native administration API (`/api/v1/admin/*`)
//! against a real `mini-exchange serve` process: RBAC (no token, a TRADER,
//! an OPERATOR without `roles:grant`), users (paged list, lock: password
//! login, bearer tokens, API keys and orders refused, open orders on every
//! pair canceled and their funds freed; unlock; grant and
//! revoke roles; the last ADMIN kept), trading pairs (HALT and CANCEL_ONLY
//! refuse new orders over the Binance REST API, filters and the fee
//! schedule change what exchangeInfo, /api/v3/account and trades show, a
//! new pair trades), assets (create, update); every bad input answered with
//! the contract's JSON error and no state change; then SIGKILL and a
//! restart that keeps all of it.

mod common;

use common::native::*;
use common::*;
use serde_json::{json, Value};

fn symbol_info(s: &Server, symbol: &str) -> Value {
    let r = s.req(
        "GET",
        &format!("/api/v3/exchangeInfo?symbol={symbol}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json["symbols"][0].clone()
}

fn filter(info: &Value, kind: &str) -> Value {
    info["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["filterType"] == kind)
        .unwrap()
        .clone()
}

/// What a restart must keep, and what bad input must not change.
fn admin_views(s: &Server, admin: &str) -> Vec<Value> {
    [
        "/api/v1/admin/users?limit=1000",
        "/api/v1/admin/pairs",
        "/api/v1/admin/assets",
        "/api/v1/admin/fees",
    ]
    .iter()
    .map(|p| ok(get(s, p, admin)))
    .collect()
}

#[test]
fn users_pairs_assets_rbac_errors_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let admin = login(&s, ADMIN, ADMIN_PW);
    // Without DATABASE_URL the audit log (a Postgres read model) is 503.
    assert_err(
        &get(&s, "/api/v1/admin/audit-logs", &admin),
        503,
        -5030,
        "audit log without a database",
    );
    let alice_key = trader(
        &s,
        &admin,
        "alice",
        &[("USDT", "100000")],
        &["READ", "TRADE"],
    );
    let bob_key = trader(
        &s,
        &admin,
        "bob",
        &[("BTC", "10"), ("USDT", "1000")],
        &["READ", "TRADE"],
    );
    let alice = login(&s, "alice", "alice-password-1");
    let (alice_id, bob_id) = (user_id(&s, &admin, "alice"), user_id(&s, &admin, "bob"));
    let root_id = user_id(&s, &admin, ADMIN);

    // ------------------------------------------------------------ RBAC
    let routes: Vec<(&str, String, Value)> = vec![
        ("GET", "/api/v1/admin/users".into(), json!(null)),
        ("GET", format!("/api/v1/admin/users/{bob_id}"), json!(null)),
        (
            "GET",
            format!("/api/v1/admin/users/{bob_id}/ledger"),
            json!(null),
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{bob_id}/lock"),
            json!({}),
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{bob_id}/unlock"),
            json!({}),
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{bob_id}/roles"),
            json!({"role": "ADMIN"}),
        ),
        (
            "DELETE",
            format!("/api/v1/admin/users/{bob_id}/roles/TRADER"),
            json!(null),
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{alice_id}/kyc-level"),
            json!({"level": 3}),
        ),
        ("GET", "/api/v1/admin/withdrawals".into(), json!(null)),
        (
            "POST",
            "/api/v1/admin/withdrawals/1/approve".into(),
            json!({"tx_hash": "0x1"}),
        ),
        (
            "POST",
            "/api/v1/admin/withdrawals/1/reject".into(),
            json!({}),
        ),
        (
            "POST",
            "/api/v1/admin/pairs".into(),
            json!({"symbol": "XUSDT"}),
        ),
        (
            "PATCH",
            "/api/v1/admin/pairs/BTCUSDT".into(),
            json!({"min_qty": "1"}),
        ),
        (
            "POST",
            "/api/v1/admin/pairs/BTCUSDT/status".into(),
            json!({"status": "HALT"}),
        ),
        (
            "PUT",
            "/api/v1/admin/fees/BTCUSDT".into(),
            json!({"maker_fee": "0"}),
        ),
        (
            "POST",
            "/api/v1/admin/assets".into(),
            json!({"symbol": "X"}),
        ),
        (
            "PATCH",
            "/api/v1/admin/assets/BTC".into(),
            json!({"active": false}),
        ),
        (
            "POST",
            "/api/v1/admin/deposits".into(),
            json!({"username": "alice"}),
        ),
    ];
    for (method, path, body) in &routes {
        let b = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        assert_err(
            &call(&s, method, path, None, b.as_bytes()),
            401,
            -4010,
            path,
        );
        assert_err(
            &call(&s, method, path, Some("not.a.token"), b.as_bytes()),
            401,
            -4010,
            path,
        );
        // A TRADER holds none of these permissions.
        assert_err(
            &call(&s, method, path, Some(&alice), b.as_bytes()),
            403,
            -4030,
            path,
        );
    }
    // Reads a TRADER has (pairs:read, assets:read, fees:read) are open.
    for path in [
        "/api/v1/admin/pairs",
        "/api/v1/admin/assets",
        "/api/v1/admin/fees",
    ] {
        ok(get(&s, path, &alice));
    }

    // ----------------------------------------------------------- users
    let r = ok(get(&s, "/api/v1/admin/users", &admin));
    assert_eq!(r["total"], 3, "{r}");
    let names: Vec<&str> = r["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![ADMIN, "alice", "bob"]);
    let r = ok(get(&s, "/api/v1/admin/users?offset=1&limit=1", &admin));
    assert_eq!(
        (r["total"].as_u64(), r["users"][0]["username"].as_str()),
        (Some(3), Some("alice"))
    );
    let r = ok(get(&s, "/api/v1/admin/users?role=ADMIN", &admin));
    assert_eq!(r["total"], 1);
    let r = ok(get(&s, &format!("/api/v1/admin/users/{bob_id}"), &admin));
    assert_eq!(r["roles"], json!(["TRADER"]));
    assert!(
        r["balances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["asset"] == "BTC" && b["available"] == "10.00000000"),
        "{r}"
    );

    // Alice rests bids on two pairs; bob's book stays empty.
    let mut resting = Vec::new();
    for o in [
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.5&price=20000",
        "symbol=ETHUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=2&price=1500",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.25&price=19000",
    ] {
        let o = alice_key.order(&s, o);
        assert_eq!(o["status"], "NEW", "{o}");
        resting.push(o["orderId"].as_u64().unwrap());
    }
    let usdt = |key: &Trader| {
        let r = key.call(&s, "GET", "/api/v3/account", "");
        assert_eq!(r.status, 200, "{}", r.json);
        let b = r.json["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["asset"] == "USDT")
            .cloned()
            .unwrap();
        (
            b["free"].as_str().unwrap().to_string(),
            b["locked"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        usdt(&alice_key),
        ("82250.00000000".into(), "17750.00000000".into())
    );

    // Lock alice: login, her token, her API key and her orders are refused.
    let r = ok(send(
        &s,
        "POST",
        &format!("/api/v1/admin/users/{alice_id}/lock"),
        &admin,
        json!({}),
    ));
    assert_eq!(r["status"], "SUSPENDED");
    let r = s.json_post(
        "/api/v1/auth/login",
        None,
        &json!({"username": "alice", "password": "alice-password-1"}),
    );
    assert_err(&r, 403, -4031, "locked login");
    assert_err(&get(&s, "/api/v1/me", &alice), 403, -4031, "locked token");
    assert_err(
        &get(&s, "/api/v1/wallet/balances", &alice),
        403,
        -4031,
        "locked wallet",
    );
    let order = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=30000";
    let r = alice_key.call(&s, "POST", "/api/v3/order", order);
    assert_eq!(
        (r.status, r.json["code"].as_i64()),
        (401, Some(-2015)),
        "{}",
        r.body
    );
    let r = ok(get(&s, "/api/v1/admin/users?status=SUSPENDED", &admin));
    assert_eq!(r["users"][0]["username"], "alice");
    // Unlock: all of it works again.
    let r = ok(call(
        &s,
        "POST",
        &format!("/api/v1/admin/users/{alice_id}/unlock"),
        Some(&admin),
        b"",
    ));
    assert_eq!(r["status"], "ACTIVE");
    // The lock canceled her open orders, every pair, and freed their funds
    // (to the unit: nothing traded); the books no longer show them.
    let r = alice_key.call(&s, "GET", "/api/v3/openOrders", "");
    assert_eq!((r.status, r.json.clone()), (200, json!([])));
    assert_eq!(
        usdt(&alice_key),
        ("100000.00000000".into(), "0.00000000".into())
    );
    for (id, symbol) in resting.iter().zip(["BTCUSDT", "ETHUSDT", "BTCUSDT"]) {
        let r = alice_key.call(
            &s,
            "GET",
            "/api/v3/order",
            &format!("symbol={symbol}&orderId={id}"),
        );
        assert_eq!(r.json["status"], "CANCELED", "{}", r.json);
        let d = s.req("GET", &format!("/api/v3/depth?symbol={symbol}"), &[], b"");
        assert_eq!(d.json["bids"], json!([]), "{symbol}: {}", d.json);
    }
    ok(get(&s, "/api/v1/wallet/balances", &alice));
    login(&s, "alice", "alice-password-1");
    let o = alice_key.order(&s, order);
    assert_eq!(o["status"], "NEW");
    let buy_id = o["orderId"].as_u64().unwrap();

    // Nobody locks themselves; unknown and malformed ids.
    assert_err(
        &send(
            &s,
            "POST",
            &format!("/api/v1/admin/users/{root_id}/lock"),
            &admin,
            json!({}),
        ),
        409,
        -4097,
        "self lock",
    );
    for (path, status, code) in [
        ("/api/v1/admin/users/999/lock", 404, -4040),
        ("/api/v1/admin/users/0/lock", 404, -4040),
        ("/api/v1/admin/users/abc/lock", 400, -4004),
        ("/api/v1/admin/users/-1/lock", 400, -4004),
        ("/api/v1/admin/users/1.5/unlock", 400, -4004),
        (
            "/api/v1/admin/users/1000000000000000000000000000000/lock",
            400,
            -4004,
        ),
        ("/api/v1/admin/users/999/roles", 404, -4040),
        ("/api/v1/admin/users/999/kyc-level", 404, -4040),
    ] {
        assert_err(
            &send(
                &s,
                "POST",
                path,
                &admin,
                json!({"role": "SUPPORT", "level": 1}),
            ),
            status,
            code,
            path,
        );
    }
    assert_err(
        &get(&s, "/api/v1/admin/users/999", &admin),
        404,
        -4040,
        "get unknown",
    );
    assert_err(
        &send(
            &s,
            "POST",
            &format!("/api/v1/admin/users/{bob_id}/lock"),
            &admin,
            json!({"why": 1}),
        ),
        400,
        -4000,
        "lock with a body",
    );

    // Roles: grant OPERATOR to bob; he can then read withdrawals and lock a
    // trader, but not a staff account and not grant roles.
    let r = ok(send(
        &s,
        "POST",
        &format!("/api/v1/admin/users/{bob_id}/roles"),
        &admin,
        json!({"role": "operator"}),
    ));
    assert_eq!(r["roles"], json!(["OPERATOR", "TRADER"]));
    let bob = login(&s, "bob", "bob-password-1");
    ok(get(&s, "/api/v1/admin/withdrawals", &bob));
    assert_err(
        &send(
            &s,
            "POST",
            &format!("/api/v1/admin/users/{alice_id}/roles"),
            &bob,
            json!({"role": "ADMIN"}),
        ),
        403,
        -4030,
        "operator grants",
    );
    assert_err(
        &send(
            &s,
            "POST",
            &format!("/api/v1/admin/users/{root_id}/lock"),
            &bob,
            json!({}),
        ),
        403,
        -4030,
        "operator locks admin",
    );
    ok(send(
        &s,
        "POST",
        &format!("/api/v1/admin/users/{alice_id}/lock"),
        &bob,
        json!({}),
    ));
    ok(send(
        &s,
        "POST",
        &format!("/api/v1/admin/users/{alice_id}/unlock"),
        &bob,
        json!({}),
    ));
    let alice = login(&s, "alice", "alice-password-1");
    // That lock canceled her bid too; she bids again.
    let r = alice_key.call(
        &s,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={buy_id}"),
    );
    assert_eq!(r.json["status"], "CANCELED", "{}", r.json);
    let buy_id = alice_key.order(&s, order)["orderId"].as_u64().unwrap();
    // Granting again changes nothing.
    let r = ok(send(
        &s,
        "POST",
        &format!("/api/v1/admin/users/{bob_id}/roles"),
        &admin,
        json!({"role": "OPERATOR"}),
    ));
    assert_eq!(r["roles"], json!(["OPERATOR", "TRADER"]));
    let r = ok(call(
        &s,
        "DELETE",
        &format!("/api/v1/admin/users/{bob_id}/roles/OPERATOR"),
        Some(&admin),
        b"",
    ));
    assert_eq!(r["roles"], json!(["TRADER"]));
    assert_err(
        &get(&s, "/api/v1/admin/withdrawals", &bob),
        403,
        -4030,
        "revoked",
    );
    // The last active ADMIN keeps ADMIN.
    assert_err(
        &call(
            &s,
            "DELETE",
            &format!("/api/v1/admin/users/{root_id}/roles/ADMIN"),
            Some(&admin),
            b"",
        ),
        409,
        -4097,
        "last admin",
    );
    for (method, path, body, status, code) in [
        (
            "POST",
            format!("/api/v1/admin/users/{bob_id}/roles"),
            json!({"role": "KING"}),
            400,
            -4004,
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{bob_id}/roles"),
            json!({"role": ""}),
            400,
            -4004,
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{bob_id}/roles"),
            json!({"role": 16}),
            400,
            -4000,
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{bob_id}/roles"),
            json!({}),
            400,
            -4000,
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{bob_id}/roles"),
            json!({"role": "ADMIN", "x": 1}),
            400,
            -4000,
        ),
        (
            "DELETE",
            format!("/api/v1/admin/users/{bob_id}/roles/KING"),
            json!(null),
            400,
            -4004,
        ),
        (
            "DELETE",
            "/api/v1/admin/users/999/roles/TRADER".to_string(),
            json!(null),
            404,
            -4040,
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{alice_id}/kyc-level"),
            json!({"level": 4}),
            400,
            -4004,
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{alice_id}/kyc-level"),
            json!({"level": -1}),
            400,
            -4000,
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{alice_id}/kyc-level"),
            json!({"level": 1e30}),
            400,
            -4000,
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{alice_id}/kyc-level"),
            json!({"level": "2"}),
            400,
            -4000,
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{alice_id}/kyc-level"),
            json!({}),
            400,
            -4000,
        ),
    ] {
        let b = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        assert_err(
            &call(&s, method, &path, Some(&admin), b.as_bytes()),
            status,
            code,
            &path,
        );
    }
    let r = ok(send(
        &s,
        "POST",
        &format!("/api/v1/admin/users/{alice_id}/kyc-level"),
        &admin,
        json!({"level": 2}),
    ));
    assert_eq!(r["kyc_level"], 2);
    for (path, status, code) in [
        ("/api/v1/admin/users?limit=0", 400, -4004),
        ("/api/v1/admin/users?limit=1001", 400, -4004),
        ("/api/v1/admin/users?offset=abc", 400, -4004),
        ("/api/v1/admin/users?status=LOCKED", 400, -4004),
        ("/api/v1/admin/users?role=KING", 400, -4004),
        ("/api/v1/admin/users?page=2", 400, -4004),
    ] {
        assert_err(&get(&s, path, &admin), status, code, path);
    }

    // ----------------------------------------------------- pair status
    let pair_status = |status: &str| {
        let r = ok(send(
            &s,
            "POST",
            "/api/v1/admin/pairs/BTCUSDT/status",
            &admin,
            json!({ "status": status }),
        ));
        assert_eq!(r["status"], status);
        assert_eq!(symbol_info(&s, "BTCUSDT")["status"], status);
    };
    pair_status("HALT");
    let r = alice_key.call(&s, "POST", "/api/v3/order", order);
    assert_eq!(
        (r.status, r.json["code"].as_i64()),
        (400, Some(-2010)),
        "{}",
        r.body
    );
    assert_eq!(r.json["msg"], "Market is closed.");
    pair_status("CANCEL_ONLY");
    let r = alice_key.call(&s, "POST", "/api/v3/order", order);
    assert_eq!(
        (r.status, r.json["code"].as_i64()),
        (400, Some(-2010)),
        "{}",
        r.body
    );
    // ... but cancelling works.
    let r = alice_key.call(
        &s,
        "DELETE",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={buy_id}"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["status"], "CANCELED");
    pair_status("TRADING");
    for body in [
        json!({"status": "CLOSED"}),
        json!({"status": "halt"}),
        json!({}),
        json!({"status": 1}),
    ] {
        assert_err(
            &send(
                &s,
                "POST",
                "/api/v1/admin/pairs/BTCUSDT/status",
                &admin,
                body,
            ),
            400,
            -4000,
            "bad status",
        );
    }
    assert_err(
        &send(
            &s,
            "POST",
            "/api/v1/admin/pairs/DOGEUSDT/status",
            &admin,
            json!({"status": "HALT"}),
        ),
        404,
        -4044,
        "unknown pair",
    );
    assert_err(
        &send(
            &s,
            "POST",
            "/api/v1/admin/pairs/99/status",
            &admin,
            json!({"status": "HALT"}),
        ),
        404,
        -4044,
        "unknown pair id",
    );
    assert_eq!(symbol_info(&s, "BTCUSDT")["status"], "TRADING");

    // ------------------------------------------------------ fee schedule
    let r = ok(send(
        &s,
        "PUT",
        "/api/v1/admin/fees/BTCUSDT",
        &admin,
        json!({"maker_fee": "0.002", "taker_fee": "0.003"}),
    ));
    assert_eq!(
        r,
        json!({"symbol": "BTCUSDT", "maker_fee": "0.00200000", "taker_fee": "0.00300000"})
    );
    let acct = alice_key.call(&s, "GET", "/api/v3/account", "");
    assert_eq!(
        acct.json["commissionRates"]["maker"], "0.00200000",
        "{}",
        acct.body
    );
    assert_eq!(acct.json["commissionRates"]["taker"], "0.00300000");
    assert_eq!(acct.json["makerCommission"], 20);
    assert_eq!(acct.json["takerCommission"], 30);
    let fees = ok(get(&s, "/api/v1/admin/fees", &alice));
    assert_eq!(fees[0]["taker_fee"], "0.00300000");
    assert_eq!(fees[1]["taker_fee"], "0.00100000", "other pairs unchanged");
    // A trade charges the new rates: bob makes (0.002 of USDT received),
    // alice takes (0.003 of BTC received).
    bob_key.order(
        &s,
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.1&price=30000",
    );
    let o = alice_key.order(&s, "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=30000&newOrderRespType=FULL");
    assert_eq!(o["status"], "FILLED", "{o}");
    assert_eq!(o["fills"][0]["commission"], "0.00030000");
    assert_eq!(
        bob_key.balance(&s, "USDT"),
        ("3994.00000000".to_string(), "0.00000000".to_string())
    );
    for body in [
        json!({"maker_fee": "2"}),
        json!({"maker_fee": "1.00000001"}),
        json!({"taker_fee": "-0.001"}),
        json!({"taker_fee": "0.000000001"}),
        json!({"taker_fee": "abc"}),
        json!({"taker_fee": "1000000000000000000000000000000"}),
        json!({"taker_fee": ""}),
    ] {
        assert_err(
            &send(
                &s,
                "PUT",
                "/api/v1/admin/fees/BTCUSDT",
                &admin,
                body.clone(),
            ),
            400,
            -4004,
            &body.to_string(),
        );
    }
    for body in [
        json!({}),
        json!({"taker_fee": 0.1}),
        json!({"taker_fee": 1e30}),
        json!({"fee": "0.1"}),
        json!([]),
    ] {
        let code = if body == json!({}) { -4004 } else { -4000 };
        assert_err(
            &send(
                &s,
                "PUT",
                "/api/v1/admin/fees/BTCUSDT",
                &admin,
                body.clone(),
            ),
            400,
            code,
            &body.to_string(),
        );
    }
    assert_err(
        &send(
            &s,
            "PUT",
            "/api/v1/admin/fees/NOPE",
            &admin,
            json!({"maker_fee": "0"}),
        ),
        404,
        -4044,
        "fees unknown pair",
    );

    // ----------------------------------------------------- pair filters
    let r = ok(send(
        &s,
        "PATCH",
        "/api/v1/admin/pairs/BTCUSDT",
        &admin,
        json!({"min_notional": "10", "max_qty": "100"}),
    ));
    assert_eq!(r["min_notional"], "10.00000000");
    assert_eq!(r["maker_fee"], "0.00200000", "fees kept");
    let info = symbol_info(&s, "BTCUSDT");
    assert_eq!(filter(&info, "NOTIONAL")["minNotional"], "10.00000000");
    assert_eq!(filter(&info, "LOT_SIZE")["maxQty"], "100.00000000");
    // 0.0003 x 30000 = 9 USDT < 10.
    let r = alice_key.call(
        &s,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.0003&price=30000",
    );
    assert_eq!(r.json["code"], -1013, "{}", r.body);
    let before = admin_views(&s, &admin);
    for (body, code) in [
        (json!({"min_qty": "0.000001"}), -4004),
        (json!({"min_qty": "200"}), -4004),
        (json!({"min_qty": "0"}), -4004),
        (json!({"min_qty": "-1"}), -4004),
        (json!({"min_qty": "abc"}), -4004),
        (json!({"max_qty": "1000000000000000000000000000000"}), -4004),
        (json!({"min_price": "0.001"}), -4004),
        (json!({"maker_fee": "5"}), -4004),
        (json!({"price_band_pct": 10001}), -4004),
        (json!({"price_band_pct": -1}), -4000),
        (json!({"tick_size": "0.1"}), -4000),
        (json!({"symbol": "BTCUSD"}), -4000),
        (json!({"min_qty": 0.5}), -4000),
        (json!({"status": "OPEN"}), -4000),
    ] {
        assert_err(
            &send(
                &s,
                "PATCH",
                "/api/v1/admin/pairs/BTCUSDT",
                &admin,
                body.clone(),
            ),
            400,
            code,
            &body.to_string(),
        );
    }
    assert_err(
        &call(
            &s,
            "PATCH",
            "/api/v1/admin/pairs/BTCUSDT",
            Some(&admin),
            b"{",
        ),
        400,
        -4000,
        "malformed",
    );
    assert_err(
        &call(
            &s,
            "PATCH",
            "/api/v1/admin/pairs/BTCUSDT",
            Some(&admin),
            b"",
        ),
        400,
        -4000,
        "empty",
    );
    assert_err(
        &send(
            &s,
            "PATCH",
            "/api/v1/admin/pairs/NOPE",
            &admin,
            json!({"min_qty": "1"}),
        ),
        404,
        -4044,
        "unknown",
    );
    let big = format!("{{\"min_qty\":\"{}\"}}", "1".repeat(100_000));
    assert_err(
        &call(
            &s,
            "PATCH",
            "/api/v1/admin/pairs/BTCUSDT",
            Some(&admin),
            big.as_bytes(),
        ),
        413,
        -4130,
        "oversized",
    );
    assert_eq!(
        admin_views(&s, &admin),
        before,
        "bad pair input changed something"
    );

    // ------------------------------------------------ assets and a pair
    let sol = json!({"symbol": "SOL", "name": "Solana", "decimals": 8, "min_withdraw": "0.1",
                     "withdraw_fee": "0.01", "daily_withdraw_limit": "1000", "confirmations": 3});
    let r = ok(send(
        &s,
        "POST",
        "/api/v1/admin/assets",
        &admin,
        sol.clone(),
    ));
    assert_eq!(
        (
            r["id"].as_u64(),
            r["symbol"].as_str(),
            r["active"].as_bool()
        ),
        (Some(4), Some("SOL"), Some(true))
    );
    assert_err(
        &send(&s, "POST", "/api/v1/admin/assets", &admin, sol.clone()),
        409,
        -4096,
        "asset exists",
    );
    let before = admin_views(&s, &admin);
    let with = |k: &str, v: Value| {
        let mut b = sol.clone();
        b["symbol"] = json!("ADA");
        b[k] = v;
        b
    };
    for (body, code) in [
        (with("symbol", json!("ada")), -4004),
        (with("symbol", json!("")), -4004),
        (with("symbol", json!("A".repeat(21))), -4004),
        (with("decimals", json!(19)), -4004),
        (with("decimals", json!(300)), -4000),
        (with("decimals", json!(-1)), -4000),
        (with("name", json!("")), -4004),
        (with("min_withdraw", json!("abc")), -4004),
        (with("min_withdraw", json!("-1")), -4004),
        (with("withdraw_fee", json!("0.000000001")), -4004),
        (
            with(
                "daily_withdraw_limit",
                json!("1000000000000000000000000000000"),
            ),
            -4004,
        ),
        (with("confirmations", json!(1e30)), -4000),
        (with("colour", json!("red")), -4000),
        (json!({"symbol": "ADA"}), -4000),
    ] {
        assert_err(
            &send(&s, "POST", "/api/v1/admin/assets", &admin, body.clone()),
            400,
            code,
            &body.to_string(),
        );
    }
    assert_eq!(
        admin_views(&s, &admin),
        before,
        "bad asset input changed something"
    );
    let r = ok(send(
        &s,
        "PATCH",
        "/api/v1/admin/assets/SOL",
        &admin,
        json!({"withdraw_fee": "0.02", "active": false}),
    ));
    assert_eq!(
        (r["withdraw_fee"].as_str(), r["active"].as_bool()),
        (Some("0.02000000"), Some(false))
    );
    assert_eq!(
        ok(get(&s, "/api/v1/admin/assets/4", &admin))["withdraw_fee"],
        "0.02000000"
    );
    let before = admin_views(&s, &admin);
    for (body, code) in [
        (json!({"decimals": 6}), -4000),
        (json!({"symbol": "SOL2"}), -4000),
        (json!({"min_withdraw": "0.000000001"}), -4004),
        (json!({"confirmations": -1}), -4000),
        (json!({"active": "yes"}), -4000),
        (json!({"name": ""}), -4004),
    ] {
        assert_err(
            &send(
                &s,
                "PATCH",
                "/api/v1/admin/assets/SOL",
                &admin,
                body.clone(),
            ),
            400,
            code,
            &body.to_string(),
        );
    }
    assert_err(
        &send(
            &s,
            "PATCH",
            "/api/v1/admin/assets/DOGE",
            &admin,
            json!({"active": true}),
        ),
        404,
        -4042,
        "unknown asset",
    );
    assert_eq!(
        admin_views(&s, &admin),
        before,
        "bad asset update changed something"
    );
    ok(send(
        &s,
        "PATCH",
        "/api/v1/admin/assets/SOL",
        &admin,
        json!({"active": true}),
    ));

    let solusdt = json!({"symbol": "SOLUSDT", "base": "SOL", "quote": "USDT", "tick_size": "0.01",
                         "step_size": "0.01", "min_qty": "0.01", "max_qty": "10000", "min_notional": "1"});
    let r = ok(send(
        &s,
        "POST",
        "/api/v1/admin/pairs",
        &admin,
        solusdt.clone(),
    ));
    assert_eq!(
        (
            r["symbol"].as_str(),
            r["status"].as_str(),
            r["taker_fee"].as_str()
        ),
        (Some("SOLUSDT"), Some("TRADING"), Some("0.00100000"))
    );
    assert_eq!(symbol_info(&s, "SOLUSDT")["baseAsset"], "SOL");
    assert_err(
        &send(&s, "POST", "/api/v1/admin/pairs", &admin, solusdt.clone()),
        409,
        -4096,
        "pair exists",
    );
    let before = admin_views(&s, &admin);
    let with = |k: &str, v: Value| {
        let mut b = solusdt.clone();
        b["symbol"] = json!("SOLBTC");
        b[k] = v;
        b
    };
    for (body, status, code) in [
        (with("base", json!("DOGE")), 404, -4042),
        (with("quote", json!("SOL")), 400, -4004),
        (with("tick_size", json!("0")), 400, -4004),
        (with("step_size", json!("0.000000001")), 400, -4004),
        (with("min_qty", json!("0.005")), 400, -4004),
        (with("max_qty", json!("0.001")), 400, -4004),
        (with("symbol", json!("sol/btc")), 400, -4004),
        (with("maker_fee", json!("1.5")), 400, -4004),
        (with("status", json!("OPEN")), 400, -4000),
        (with("tick_size", json!(0.01)), 400, -4000),
        (with("extra", json!(1)), 400, -4000),
        (json!({"symbol": "SOLBTC", "base": "SOL"}), 400, -4000),
    ] {
        assert_err(
            &send(&s, "POST", "/api/v1/admin/pairs", &admin, body.clone()),
            status,
            code,
            &body.to_string(),
        );
    }
    assert_eq!(
        admin_views(&s, &admin),
        before,
        "bad new pair changed something"
    );
    // The new pair trades.
    ok(s.json_post(
        "/api/v1/admin/deposits",
        Some(&admin),
        &json!({"username": "bob", "asset": "SOL", "amount": "5", "tx_hash": "0xsol", "confirmations": 3}),
    ));
    bob_key.order(
        &s,
        "symbol=SOLUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=2&price=150",
    );
    let o = alice_key.order(&s, "symbol=SOLUSDT&side=BUY&type=MARKET&quantity=2");
    assert_eq!(o["status"], "FILLED", "{o}");
    assert_eq!(
        alice_key.balance(&s, "SOL"),
        ("1.99800000".to_string(), "0.00000000".to_string())
    );

    let views = admin_views(&s, &admin);
    let pairs = &views[1];
    assert_eq!(pairs.as_array().unwrap().len(), 4);

    // ------------------------------------------- SIGKILL, restart: all kept
    s.kill();
    let s = Server::start(tmp.path(), port);
    let admin = login(&s, ADMIN, ADMIN_PW);
    assert_eq!(admin_views(&s, &admin), views);
    let info = symbol_info(&s, "BTCUSDT");
    assert_eq!(filter(&info, "NOTIONAL")["minNotional"], "10.00000000");
    let acct = alice_key.call(&s, "GET", "/api/v3/account", "");
    assert_eq!(acct.json["commissionRates"]["taker"], "0.00300000");
    let alice = login(&s, "alice", "alice-password-1");
    assert_eq!(ok(get(&s, "/api/v1/me", &alice))["kyc_level"], 2);
    // Locking after the restart still bites at once.
    ok(send(
        &s,
        "POST",
        &format!("/api/v1/admin/users/{alice_id}/lock"),
        &admin,
        json!({}),
    ));
    let r = alice_key.call(&s, "POST", "/api/v3/order", order);
    assert_eq!(
        (r.status, r.json["code"].as_i64()),
        (401, Some(-2015)),
        "{}",
        r.body
    );
}

/// A pair created without `price_band_pct` gets the server's
/// `engine.price_band_pct`, like the pairs of the config.
#[test]
fn a_new_pair_takes_the_configured_price_band() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        tmp.path(),
        free_port(),
        &[("MX_ENGINE__PRICE_BAND_PCT", "20")],
    );
    let admin = login(&s, ADMIN, ADMIN_PW);
    let r = ok(send(
        &s,
        "POST",
        "/api/v1/admin/pairs",
        &admin,
        json!({"symbol": "BTCETH", "base": "BTC", "quote": "ETH", "tick_size": "0.01",
               "step_size": "0.0001", "min_qty": "0.0001", "max_qty": "1000",
               "min_notional": "0.001"}),
    ));
    assert_eq!(r["price_band_pct"], 20, "{r}");
    let r = ok(get(&s, "/api/v1/admin/pairs/BTCUSDT", &admin));
    assert_eq!(r["price_band_pct"], 20, "{r}");
}
