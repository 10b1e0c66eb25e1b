//! Black-box tests of the native risk API (`/api/v1/admin/risk/*`) against
//! a real `mini-exchange serve` process: an ORDER_NOTIONAL BLOCK rule makes
//! a big order over `/api/v3/order` fail with -2010 and raises an event,
//! the ALERT variant lets it through with an event; LARGE_WITHDRAWAL (BLOCK
//! -> 403 -4038, ALERT -> 201 and an event); LOGIN_FAILURE after N bad
//! passwords; events acknowledged, resolved, dismissed and filtered; RBAC
//! (no token, TRADER, an AUDITOR who reads but cannot write); every bad
//! input answered with the contract's JSON error and no state change; then
//! SIGKILL and a restart that keeps rules, events and enforcement. And a
//! cancelReplace whose new order a rule refuses: the user data stream
//! reports it REJECTED with `r` RISK_ORDER_NOTIONAL (the risk event comes
//! after the refusal among the engine's events).

mod common;

use std::time::{Duration, Instant};

use common::native::*;
use common::ws::{In, Ws};
use common::*;
use serde_json::{json, Value};

const RULES: &str = "/api/v1/admin/risk/rules";
const EVENTS: &str = "/api/v1/admin/risk/events";

/// Rules and events as the API shows them (what bad input must not change
/// and a restart must keep).
fn risk_views(s: &Server, admin: &str) -> (Value, Value) {
    (
        ok(get(s, RULES, admin)),
        ok(get(s, &format!("{EVENTS}?limit=1000"), admin)),
    )
}

fn events(s: &Server, admin: &str, query: &str) -> Vec<Value> {
    ok(get(s, &format!("{EVENTS}?{query}"), admin))["events"]
        .as_array()
        .unwrap()
        .clone()
}

fn buy(t: &Trader, s: &Server, qty: &str) -> Resp {
    t.call(
        s,
        "POST",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity={qty}&price=30000"),
    )
}

fn withdraw(s: &Server, token: &str, amount: &str) -> Resp {
    send(
        s,
        "POST",
        "/api/v1/wallet/withdrawals",
        token,
        json!({"asset": "BTC", "amount": amount, "address": "bc1qriskaddress"}),
    )
}

#[test]
fn risk_rules_events_rbac_bad_input_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let alice_key = trader(
        &s,
        &admin,
        "alice",
        &[("USDT", "200000"), ("BTC", "20")],
        &["READ", "TRADE", "WITHDRAW"],
    );
    trader(&s, &admin, "bob", &[], &["READ"]);
    trader(&s, &admin, "carol", &[], &["READ"]);
    let alice = login(&s, "alice", "alice-password-1");
    let (alice_id, bob_id, carol_id) = (
        user_id(&s, &admin, "alice"),
        user_id(&s, &admin, "bob"),
        user_id(&s, &admin, "carol"),
    );
    // carol becomes an AUDITOR (risk:read, no risk:write).
    ok(send(
        &s,
        "POST",
        &format!("/api/v1/admin/users/{carol_id}/roles"),
        &admin,
        json!({"role": "AUDITOR"}),
    ));
    let carol = login(&s, "carol", "carol-password-1");

    // ---------------------------------------------- ORDER_NOTIONAL, BLOCK
    let r = send(
        &s,
        "POST",
        RULES,
        &admin,
        json!({
            "name": "big BTC orders",
            "type": "ORDER_NOTIONAL",
            "parameters": {"max_notional": "50000", "symbol": "BTCUSDT"},
            "level": "HIGH",
            "action": "BLOCK",
            "description": "orders above 50000 USDT",
        }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let notional = r.json.clone();
    assert_eq!(notional["id"], 1);
    assert_eq!(notional["type"], "ORDER_NOTIONAL");
    assert_eq!(notional["parameters"]["max_notional"], "50000");
    assert_eq!(
        (
            &notional["level"],
            &notional["action"],
            &notional["enabled"]
        ),
        (&json!("HIGH"), &json!("BLOCK"), &json!(true))
    );
    assert_eq!(notional["version"], 1);
    assert_eq!(ok(get(&s, &format!("{RULES}/1"), &carol)), notional);

    let r = buy(&alice_key, &s, "2");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json["code"], -2010, "{}", r.body);
    assert!(
        r.json["msg"].as_str().unwrap().contains("risk rule"),
        "{}",
        r.body
    );
    let (free, locked) = alice_key.balance(&s, "USDT");
    assert_eq!(
        (free.as_str(), locked.as_str()),
        ("200000.00000000", "0.00000000")
    );
    let ev = events(&s, &admin, "");
    assert_eq!(ev.len(), 1, "{ev:?}");
    let e1 = &ev[0];
    assert_eq!(e1["id"], 1);
    assert_eq!(e1["rule_id"], 1);
    assert_eq!(e1["rule_name"], "big BTC orders");
    assert_eq!(
        (&e1["user_id"], &e1["username"]),
        (&json!(alice_id), &json!("alice"))
    );
    assert_eq!(
        (&e1["type"], &e1["level"], &e1["action"], &e1["status"]),
        (
            &json!("ORDER_NOTIONAL"),
            &json!("HIGH"),
            &json!("BLOCK"),
            &json!("OPEN")
        )
    );
    assert_eq!(e1["details"]["notional"], "60000.00000000");
    assert_eq!(e1["details"]["blocked"], true);
    // Within the maximum: through, no event.
    let r = buy(&alice_key, &s, "1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(events(&s, &admin, "").len(), 1);

    // ---------------------------------------------- ORDER_NOTIONAL, ALERT
    let r = ok(send(
        &s,
        "PUT",
        &format!("{RULES}/1"),
        &admin,
        json!({"action": "ALERT", "type": "ORDER_NOTIONAL"}),
    ));
    assert_eq!((&r["action"], &r["version"]), (&json!("ALERT"), &json!(2)));
    let r = buy(&alice_key, &s, "2");
    assert_eq!(r.status, 200, "{}", r.body);
    let order_id = r.json["orderId"].as_u64().unwrap();
    let ev = events(&s, &admin, "");
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["id"], 2, "newest first");
    assert_eq!(ev[0]["action"], "ALERT");
    assert_eq!(ev[0]["details"]["blocked"], false);
    assert_eq!(ev[0]["details"]["order_id"], order_id);

    // ---------------------------------------------- LARGE_WITHDRAWAL
    ok(send(
        &s,
        "POST",
        &format!("/api/v1/admin/users/{alice_id}/kyc-level"),
        &admin,
        json!({"level": 2}),
    ));
    let block = ok(send(
        &s,
        "POST",
        RULES,
        &admin,
        json!({"name": "huge BTC withdrawals", "type": "LARGE_WITHDRAWAL",
               "parameters": {"asset": "BTC", "threshold": "5"}, "action": "BLOCK"}),
    ));
    assert_eq!(block["level"], "MEDIUM", "default level");
    let r = withdraw(&s, &alice, "6");
    assert_err(&r, 403, -4038, "blocked withdrawal");
    assert_eq!(alice_key.balance(&s, "BTC").1, "0.00000000");
    let alert = ok(send(
        &s,
        "POST",
        RULES,
        &admin,
        json!({"name": "large BTC withdrawals", "type": "LARGE_WITHDRAWAL",
               "parameters": {"asset": "BTC", "threshold": "1"}}),
    ));
    assert_eq!(alert["action"], "ALERT", "default action");
    let r = withdraw(&s, &alice, "2");
    assert_eq!(r.status, 201, "{}", r.body);
    let ev = events(&s, &admin, "type=LARGE_WITHDRAWAL");
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(
        (&ev[1]["action"], &ev[1]["details"]["amount"]),
        (&json!("BLOCK"), &json!("6.00000000"))
    );
    assert_eq!(ev[0]["rule_id"], alert["id"]);
    assert_eq!(ev[0]["details"]["withdrawal_id"], r.json["id"]);

    // ---------------------------------------------- LOGIN_FAILURE
    let logins = ok(send(
        &s,
        "POST",
        RULES,
        &admin,
        json!({"name": "password guessing", "type": "login_failure",
               "parameters": {"max_failures": 3}, "level": "critical"}),
    ));
    for n in 1..=3 {
        let r = s.json_post(
            "/api/v1/auth/login",
            None,
            &json!({"username": "bob", "password": "wrong-password-9"}),
        );
        assert_err(&r, 401, -4011, "bad password");
        let found = events(&s, &admin, "type=LOGIN_FAILURE");
        assert_eq!(found.len(), usize::from(n == 3), "after {n} failures");
    }
    let ev = &events(&s, &admin, &format!("user={bob_id}"))[0];
    assert_eq!(
        (&ev["username"], &ev["level"], &ev["rule_id"]),
        (&json!("bob"), &json!("CRITICAL"), &logins["id"])
    );
    assert_eq!(ev["details"]["failed_logins"], 3);

    // ---------------------------------------------- event handling
    let r = ok(send(
        &s,
        "POST",
        &format!("{EVENTS}/1/acknowledge"),
        &admin,
        json!({"note": "calling the customer"}),
    ));
    assert_eq!(
        (&r["status"], &r["note"], &r["handled_by_username"]),
        (
            &json!("ACKNOWLEDGED"),
            &json!("calling the customer"),
            &json!(ADMIN)
        )
    );
    let r = ok(send(
        &s,
        "POST",
        &format!("{EVENTS}/1/resolve"),
        &admin,
        json!({"note": "legitimate"}),
    ));
    assert_eq!(r["status"], "RESOLVED");
    assert_err(
        &send(
            &s,
            "POST",
            &format!("{EVENTS}/1/resolve"),
            &admin,
            json!({}),
        ),
        409,
        -40911,
        "resolved twice",
    );
    assert_err(
        &send(
            &s,
            "POST",
            &format!("{EVENTS}/1/acknowledge"),
            &admin,
            json!({}),
        ),
        409,
        -40911,
        "acknowledge a resolved event",
    );
    // No body at all: no note.
    let r = ok(call(
        &s,
        "POST",
        &format!("{EVENTS}/2/dismiss"),
        Some(&admin),
        b"",
    ));
    assert_eq!(
        (&r["status"], &r["note"]),
        (&json!("DISMISSED"), &json!(""))
    );
    ok(send(
        &s,
        "POST",
        &format!("{EVENTS}/3/acknowledge"),
        &admin,
        json!({}),
    ));
    assert_err(
        &send(
            &s,
            "POST",
            &format!("{EVENTS}/3/acknowledge"),
            &admin,
            json!({}),
        ),
        409,
        -40911,
        "acknowledged twice",
    );
    let open: Vec<u64> = events(&s, &admin, "status=OPEN")
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(open, vec![5, 4]);
    assert_eq!(events(&s, &admin, "status=resolved").len(), 1);
    assert_eq!(events(&s, &admin, "user=alice").len(), 4);
    assert_eq!(events(&s, &admin, "user=alice&limit=2&offset=1").len(), 2);
    assert_eq!(
        events(&s, &admin, &format!("rule={}", alert["id"])).len(),
        1
    );
    assert_eq!(
        ok(get(&s, &format!("{EVENTS}/3"), &carol))["status"],
        "ACKNOWLEDGED"
    );

    // ---------------------------------------------- RBAC
    let routes: Vec<(&str, String, Value)> = vec![
        ("GET", RULES.into(), json!(null)),
        ("GET", format!("{RULES}/1"), json!(null)),
        (
            "POST",
            RULES.into(),
            json!({"name": "x", "type": "CUSTOM", "parameters": {}}),
        ),
        ("PUT", format!("{RULES}/1"), json!({"enabled": false})),
        ("DELETE", format!("{RULES}/1"), json!(null)),
        ("GET", EVENTS.into(), json!(null)),
        ("GET", format!("{EVENTS}/4"), json!(null)),
        ("POST", format!("{EVENTS}/4/acknowledge"), json!({})),
        ("POST", format!("{EVENTS}/4/resolve"), json!({})),
        ("POST", format!("{EVENTS}/4/dismiss"), json!({})),
    ];
    let before = risk_views(&s, &admin);
    for (method, path, body) in &routes {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let r = call(&s, method, path, None, &body);
        assert_err(&r, 401, -4010, &format!("{method} {path} without a token"));
        let r = call(&s, method, path, Some("not.a.jwt"), &body);
        assert_err(&r, 401, -4010, &format!("{method} {path} with a bad token"));
        let r = call(&s, method, path, Some(&alice), &body);
        assert_err(&r, 403, -4030, &format!("{method} {path} as TRADER"));
        let r = call(&s, method, path, Some(&carol), &body);
        if *method == "GET" {
            assert_eq!(r.status, 200, "{method} {path} as AUDITOR: {}", r.body);
        } else {
            assert_err(&r, 403, -4030, &format!("{method} {path} as AUDITOR"));
        }
    }
    assert_eq!(
        risk_views(&s, &admin),
        before,
        "refused calls changed nothing"
    );

    // ---------------------------------------------- bad input
    let big = "x".repeat(3_000);
    let bad_creates: Vec<(Value, u16, i64)> = vec![
        (
            json!({"name": "a", "type": "FOO", "parameters": {}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "ORDER_SIZE", "parameters": {}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "CUSTOM", "parameters": {}, "level": "SEVERE"}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "CUSTOM", "parameters": {}, "action": "DENY"}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "CUSTOM", "parameters": {}, "action": "BLOCK"}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "LOGIN_FAILURE", "parameters": {"max_failures": 3}, "action": "BLOCK"}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "CUSTOM", "parameters": [1]}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "CUSTOM", "parameters": "{}"}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "CUSTOM", "parameters": 5}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "CUSTOM", "parameters": null}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "ORDER_NOTIONAL", "parameters": {"max_notional": 50000}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "ORDER_NOTIONAL", "parameters": {"max_notional": "-1"}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "ORDER_NOTIONAL", "parameters": {"max_notional": "0"}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "ORDER_NOTIONAL", "parameters": {"max_notional": "1000000000000000000000000000000"}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "ORDER_NOTIONAL", "parameters": {"max_notional": "1e30"}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "ORDER_NOTIONAL", "parameters": {"max_notional": "1", "side": "BUY"}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "ORDER_NOTIONAL", "parameters": {"max_notional": "1", "symbol": "DOGEUSDT"}}),
            404,
            -4044,
        ),
        (
            json!({"name": "a", "type": "LARGE_WITHDRAWAL", "parameters": {"asset": "DOGE", "threshold": "1"}}),
            404,
            -4042,
        ),
        (
            json!({"name": "a", "type": "LARGE_WITHDRAWAL", "parameters": {"asset": "BTC", "threshold": "0.000000001"}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "LOGIN_FAILURE", "parameters": {"max_failures": "3"}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "LOGIN_FAILURE", "parameters": {"max_failures": 0}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "LOGIN_FAILURE", "parameters": {"max_failures": -2}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "CUSTOM", "parameters": {"blob": big}}),
            400,
            -4004,
        ),
        (
            json!({"name": "", "type": "CUSTOM", "parameters": {}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a[1]", "type": "CUSTOM", "parameters": {}}),
            400,
            -4004,
        ),
        (
            json!({"name": "n".repeat(101), "type": "CUSTOM", "parameters": {}}),
            400,
            -4004,
        ),
        (
            json!({"name": "a", "type": "CUSTOM", "parameters": {}, "description": "a\nb"}),
            400,
            -4004,
        ),
        (
            json!({"name": "BIG btc ORDERS", "type": "CUSTOM", "parameters": {}}),
            409,
            -40910,
        ),
        (json!({"type": "CUSTOM", "parameters": {}}), 400, -4000),
        (json!({"name": "a", "parameters": {}}), 400, -4000),
        (
            json!({"name": 5, "type": "CUSTOM", "parameters": {}}),
            400,
            -4000,
        ),
        (
            json!({"name": "a", "type": "CUSTOM", "parameters": {}, "enabled": "yes"}),
            400,
            -4000,
        ),
        (
            json!({"name": "a", "type": "CUSTOM", "parameters": {}, "extra": 1}),
            400,
            -4000,
        ),
    ];
    for (body, status, code) in &bad_creates {
        let r = send(&s, "POST", RULES, &admin, body.clone());
        assert_err(&r, *status, *code, &format!("create {body}"));
    }
    let raw: [(&str, &str, &[u8], u16, i64); 12] = [
        ("POST", RULES, b"not json", 400, -4000),
        ("POST", RULES, b"", 400, -4000),
        (
            "PUT",
            "/api/v1/admin/risk/rules/999",
            b"{\"enabled\":false}",
            404,
            -4046,
        ),
        (
            "PUT",
            "/api/v1/admin/risk/rules/abc",
            b"{\"enabled\":false}",
            400,
            -4004,
        ),
        ("PUT", "/api/v1/admin/risk/rules/1", b"{}", 400, -4004),
        (
            "PUT",
            "/api/v1/admin/risk/rules/1",
            b"{\"type\":\"CUSTOM\"}",
            400,
            -4004,
        ),
        (
            "PUT",
            "/api/v1/admin/risk/rules/1",
            b"{\"name\":\"PASSWORD guessing\"}",
            409,
            -40910,
        ),
        (
            "PUT",
            "/api/v1/admin/risk/rules/1",
            b"{\"parameters\":{\"max_notional\":\"x\"}}",
            400,
            -4004,
        ),
        ("DELETE", "/api/v1/admin/risk/rules/999", b"", 404, -4046),
        ("GET", "/api/v1/admin/risk/rules/999", b"", 404, -4046),
        ("GET", "/api/v1/admin/risk/events/999", b"", 404, -4049),
        (
            "POST",
            "/api/v1/admin/risk/events/999/resolve",
            b"{}",
            404,
            -4049,
        ),
    ];
    for (method, path, body, status, code) in raw {
        let r = call(&s, method, path, Some(&admin), body);
        assert_err(&r, status, code, &format!("{method} {path}"));
    }
    let note_too_long = json!({"note": "n".repeat(1025)});
    for (body, code) in [
        (note_too_long, -4004),
        (json!({"note": 5}), -4000),
        (json!({"note": "a", "x": 1}), -4000),
    ] {
        let r = send(&s, "POST", &format!("{EVENTS}/4/resolve"), &admin, body);
        assert_err(&r, 400, code, "bad note");
    }
    for q in [
        "status=bogus",
        "user=nobody",
        "limit=0",
        "limit=1001",
        "type=FOO",
        "rule=x",
        "color=red",
    ] {
        let r = get(&s, &format!("{EVENTS}?{q}"), &admin);
        let (status, code) = if q == "user=nobody" {
            (404, -4040)
        } else {
            (400, -4004)
        };
        assert_err(&r, status, code, q);
    }
    assert_err(
        &get(&s, &format!("{RULES}?enabled=maybe"), &admin),
        400,
        -4004,
        "enabled",
    );
    assert_eq!(risk_views(&s, &admin), before, "bad input changed nothing");

    // ---------------------------------------------- update and delete
    let r = ok(send(
        &s,
        "PUT",
        &format!("{RULES}/{}", logins["id"]),
        &admin,
        json!({"parameters": {"max_failures": 5}, "enabled": false, "level": "LOW",
               "description": "relaxed"}),
    ));
    assert_eq!(
        (
            &r["parameters"]["max_failures"],
            &r["enabled"],
            &r["level"],
            &r["description"]
        ),
        (&json!(5), &json!(false), &json!("LOW"), &json!("relaxed"))
    );
    let disabled = ok(get(&s, &format!("{RULES}?enabled=false"), &admin));
    assert_eq!(disabled["total"], 1);
    let r = ok(call(
        &s,
        "DELETE",
        &format!("{RULES}/{}", alert["id"]),
        Some(&admin),
        b"",
    ));
    assert_eq!(r["deleted"], true);
    assert_err(
        &get(&s, &format!("{RULES}/{}", alert["id"]), &admin),
        404,
        -4046,
        "deleted rule",
    );
    let rules = ok(get(&s, RULES, &admin));
    assert_eq!(rules["total"], 3);
    // Its events stay, without a rule name now.
    let ev = events(&s, &admin, &format!("rule={}", alert["id"]));
    assert_eq!((ev.len(), &ev[0]["rule_name"]), (1, &Value::Null));
    // Roles through GrantRole / RevokeRole: granting what carol has is a
    // no-op answer, revoking works.
    ok(send(
        &s,
        "POST",
        &format!("/api/v1/admin/users/{carol_id}/roles"),
        &admin,
        json!({"role": "AUDITOR"}),
    ));
    let r = ok(call(
        &s,
        "DELETE",
        &format!("/api/v1/admin/users/{carol_id}/roles/AUDITOR"),
        Some(&admin),
        b"",
    ));
    assert_eq!(r["roles"], json!(["TRADER"]));
    assert_err(&get(&s, RULES, &carol), 403, -4030, "carol lost AUDITOR");

    // ---------------------------------------------- restart
    let before = risk_views(&s, &admin);
    s.kill();
    let s = Server::start(tmp.path(), port);
    let admin = login(&s, ADMIN, ADMIN_PW);
    assert_eq!(
        risk_views(&s, &admin),
        before,
        "restart kept rules and events"
    );
    // Still enforced, and new events continue the numbering.
    ok(send(
        &s,
        "PUT",
        &format!("{RULES}/1"),
        &admin,
        json!({"action": "BLOCK"}),
    ));
    let r = buy(&alice_key, &s, "3");
    assert_eq!(r.json["code"], -2010, "{}", r.body);
    let ev = events(&s, &admin, "limit=1");
    assert_eq!(
        (&ev[0]["id"], &ev[0]["action"]),
        (&json!(6), &json!("BLOCK"))
    );
    let alice = login(&s, "alice", "alice-password-1");
    assert_err(
        &withdraw(&s, &alice, "7"),
        403,
        -4038,
        "block after restart",
    );
}

#[test]
fn cancel_replace_refused_by_a_risk_rule_reports_rejected_on_the_user_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), free_port());
    let admin = login(&s, ADMIN, ADMIN_PW);
    let alice = trader(
        &s,
        &admin,
        "alice",
        &[("USDT", "1000000")],
        &["READ", "TRADE"],
    );
    ok(send(
        &s,
        "POST",
        RULES,
        &admin,
        json!({"name": "cap", "type": "ORDER_NOTIONAL", "action": "BLOCK",
               "parameters": {"max_notional": "100000"}}),
    ));
    let r = s.req(
        "POST",
        "/api/v3/userDataStream",
        &[("X-MBX-APIKEY", &alice.key)],
        b"",
    );
    let key = r.json["listenKey"].as_str().unwrap().to_string();
    let ws = Ws::connect(s.port, &format!("/ws/{key}"));
    let old = alice.order(
        &s,
        "symbol=BTCUSDT&type=LIMIT&timeInForce=GTC&side=BUY&quantity=1&price=30000",
    );
    let old_id = old["orderId"].as_u64().unwrap();
    let r = alice.call(
        &s,
        "POST",
        "/api/v3/order/cancelReplace",
        &format!(
            "symbol=BTCUSDT&type=LIMIT&timeInForce=GTC&side=BUY&quantity=5&price=30000&cancelReplaceMode=STOP_ON_FAILURE&cancelOrderId={old_id}&newClientOrderId=big-1"
        ),
    );
    assert_eq!(r.json["data"]["cancelResult"], "SUCCESS", "{}", r.json);
    assert_eq!(r.json["data"]["newOrderResult"], "FAILURE", "{}", r.json);
    assert_eq!(
        r.json["data"]["newOrderResponse"]["code"], -2010,
        "{}",
        r.json
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reports = Vec::new();
    while Instant::now() < deadline && !reports.iter().any(|r: &Value| r["x"] == "REJECTED") {
        if let Some(In::Json(v)) = ws.next(Duration::from_millis(200)) {
            if v["e"] == "executionReport" {
                reports.push(v);
            }
        }
    }
    let xs: Vec<&str> = reports.iter().map(|r| r["x"].as_str().unwrap()).collect();
    assert_eq!(xs, ["NEW", "CANCELED", "REJECTED"], "{reports:?}");
    assert_eq!(reports[2]["r"], "RISK_ORDER_NOTIONAL");
    assert_eq!(reports[2]["c"], "big-1");
    let ev = events(&s, &admin, "");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["details"]["notional"], "150000.00000000");
}
