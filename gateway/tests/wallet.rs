//! Black-box tests of the native wallet API (`/api/v1/wallet/*`) and the
//! admin withdrawal routes against a real `mini-exchange serve` process:
//! fund a user, raise the KYC level, withdraw (amount + fee frozen to the
//! unit), approve (the amount leaves, the fee reaches the exchange's
//! account) and reject (unfrozen), minimum amount, KYC and daily-limit
//! refusals, a ledger whose rows chain (`before + amount = after`) up to the
//! balances, history with statuses, stable deposit addresses; every bad
//! input answered with the contract's JSON error and no state change; then
//! SIGKILL and a restart that keeps all of it.

mod common;

use common::native::*;
use common::*;
use serde_json::{json, Value};

fn post_raw(s: &Server, path: &str, token: &str, body: &[u8]) -> Resp {
    call(s, "POST", path, Some(token), body)
}

/// Exact units (8 decimals) of a signed decimal string.
fn units(s: &str) -> i128 {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    assert!(frac.len() <= 8, "{s}");
    let v =
        int.parse::<i128>().unwrap() * 100_000_000 + format!("{frac:0<8}").parse::<i128>().unwrap();
    if neg {
        -v
    } else {
        v
    }
}

fn balance(s: &Server, token: &str, asset: &str) -> (String, String) {
    let r = get(s, "/api/v1/wallet/balances", token);
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == asset)
        .unwrap_or_else(|| panic!("no {asset} in {}", r.body));
    assert_eq!(
        units(b["total"].as_str().unwrap()),
        units(b["available"].as_str().unwrap()) + units(b["frozen"].as_str().unwrap())
    );
    (
        b["available"].as_str().unwrap().to_string(),
        b["frozen"].as_str().unwrap().to_string(),
    )
}

fn pair(a: &str, f: &str) -> (String, String) {
    (a.to_string(), f.to_string())
}

/// Every ledger row of `rows` (newest first) satisfies before + amount =
/// after, and rows of one (asset, bucket) chain: each row starts where the
/// previous one ended, from 0. Returns the final (available, frozen) of
/// `asset`.
#[track_caller]
fn check_ledger_chain(rows: &[Value], asset: &str) -> (i128, i128) {
    let mut last = std::collections::HashMap::new();
    for r in rows.iter().rev() {
        let (before, amount, after) = (
            units(r["balance_before"].as_str().unwrap()),
            units(r["amount"].as_str().unwrap()),
            units(r["balance_after"].as_str().unwrap()),
        );
        assert_eq!(before + amount, after, "{r}");
        assert!(before >= 0 && after >= 0, "{r}");
        let key = (
            r["asset"].as_str().unwrap().to_string(),
            r["balance_type"].as_str().unwrap().to_string(),
        );
        let prev = last.insert(key, after).unwrap_or(0);
        assert_eq!(prev, before, "row does not chain: {r}");
    }
    let get = |b: &str| {
        last.get(&(asset.to_string(), b.to_string()))
            .copied()
            .unwrap_or(0)
    };
    (get("AVAILABLE"), get("FROZEN"))
}

fn addr(s: &Server, token: &str, asset: &str) -> String {
    let r = get(s, &format!("/api/v1/wallet/deposit-address/{asset}"), token);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["asset"], asset);
    r.json["address"].as_str().unwrap().to_string()
}

fn withdraw(s: &Server, token: &str, body: Value) -> Resp {
    s.json_post("/api/v1/wallet/withdrawals", Some(token), &body)
}

fn btc(amount: &str) -> Value {
    json!({"asset": "BTC", "amount": amount, "address": "bc1qalice"})
}

/// What a restart must keep, as the user and the admin see it.
fn wallet_views(s: &Server, user: &str, admin: &str) -> Vec<Value> {
    [
        ("/api/v1/wallet/balances", user),
        ("/api/v1/wallet/history", user),
        ("/api/v1/wallet/ledger?limit=1000", user),
        ("/api/v1/wallet/deposit-address/BTC", user),
        ("/api/v1/admin/withdrawals", admin),
        ("/api/v1/admin/users/0/ledger", admin),
    ]
    .iter()
    .map(|(path, token)| {
        let r = get(s, path, token);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.json
    })
    .collect()
}

#[test]
fn withdrawals_ledger_history_errors_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let alice_keys = trader(
        &s,
        &admin,
        "alice",
        &[("BTC", "2"), ("USDT", "5000")],
        &["READ", "TRADE"],
    );
    let alice = login(&s, "alice", "alice-password-1");
    let alice_id = get(&s, "/api/v1/me", &alice).json["id"].as_u64().unwrap();
    trader(&s, &admin, "bob", &[], &["READ"]);
    let bob = login(&s, "bob", "bob-password-1");

    // Balances: every asset, to the unit, as /api/v3/account has them.
    assert_eq!(balance(&s, &alice, "BTC"), pair("2.00000000", "0.00000000"));
    assert_eq!(
        balance(&s, &alice, "USDT"),
        pair("5000.00000000", "0.00000000")
    );
    assert_eq!(balance(&s, &alice, "ETH"), pair("0.00000000", "0.00000000"));

    // Deposit addresses: deterministic per (user, asset).
    let a_btc = addr(&s, &alice, "BTC");
    assert!(a_btc.starts_with("mx") && a_btc.len() == 42, "{a_btc}");
    assert_eq!(addr(&s, &alice, "BTC"), a_btc);
    assert_ne!(addr(&s, &alice, "USDT"), a_btc);
    assert_ne!(addr(&s, &bob, "BTC"), a_btc);

    // KYC level 0: refused, nothing frozen.
    assert_err(&withdraw(&s, &alice, btc("0.5")), 403, -4032, "kyc 0");
    assert_eq!(balance(&s, &alice, "BTC"), pair("2.00000000", "0.00000000"));
    let kyc = |level: u64| {
        let r = s.json_post(
            &format!("/api/v1/admin/users/{alice_id}/kyc-level"),
            Some(&admin),
            &json!({ "level": level }),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json["kyc_level"], level);
    };
    kyc(1);

    // Below the minimum (BTC: 0.001).
    assert_err(&withdraw(&s, &alice, btc("0.0009")), 400, -4006, "min");
    // Daily limit at level 1 (100 BTC), checked before the balance.
    assert_err(
        &withdraw(&s, &alice, btc("100.00000001")),
        400,
        -4007,
        "daily",
    );
    assert_eq!(balance(&s, &alice, "BTC"), pair("2.00000000", "0.00000000"));

    // Withdraw 0.5: amount + fee (0.0002) frozen to the unit.
    let r = withdraw(&s, &alice, btc("0.5"));
    assert_eq!(r.status, 201, "{}", r.body);
    let w1 = r.json["id"].as_u64().unwrap();
    assert_eq!(r.json["status"], "PENDING");
    assert_eq!(r.json["amount"], "0.50000000");
    assert_eq!(r.json["fee"], "0.00020000");
    assert_eq!(r.json["address"], "bc1qalice");
    assert_eq!(r.json["tx_hash"], Value::Null);
    assert_eq!(balance(&s, &alice, "BTC"), pair("1.49980000", "0.50020000"));
    assert_eq!(
        alice_keys.balance(&s, "BTC"),
        pair("1.49980000", "0.50020000")
    );

    // Level 1 used 0.5 of 100 today: 99.5 more is over, whatever the balance.
    assert_err(
        &withdraw(&s, &alice, btc("99.50000001")),
        400,
        -4007,
        "daily 2",
    );
    // Level 2 has 10x: the balance refuses next.
    kyc(2);
    assert_err(&withdraw(&s, &alice, btc("99.5")), 400, -4008, "balance");
    assert_err(&withdraw(&s, &alice, btc("1.4997")), 400, -4008, "fee too");

    // A second one, to be rejected.
    let r = withdraw(&s, &alice, btc("0.3"));
    assert_eq!(r.status, 201, "{}", r.body);
    let w2 = r.json["id"].as_u64().unwrap();
    assert_eq!(balance(&s, &alice, "BTC"), pair("1.19960000", "0.80040000"));

    // The admin list shows both, newest first, filterable.
    let r = get(&s, "/api/v1/admin/withdrawals?status=PENDING", &admin);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["total"], 2);
    assert_eq!(r.json["withdrawals"][0]["id"], w2);
    assert_eq!(r.json["withdrawals"][1]["id"], w1);
    let r = get(
        &s,
        "/api/v1/admin/withdrawals?username=bob&status=PENDING",
        &admin,
    );
    assert_eq!(r.json["total"], 0, "{}", r.body);

    // Approve w1: the frozen amount + fee leave alice, the fee reaches the
    // exchange's account (user 0).
    let fee_rows_before = get(&s, "/api/v1/admin/users/0/ledger", &admin).json;
    assert_eq!(fee_rows_before, json!([]));
    let r = s.json_post(
        &format!("/api/v1/admin/withdrawals/{w1}/approve"),
        Some(&admin),
        &json!({"tx_hash": "0xsent1"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["status"], "CONFIRMED");
    assert_eq!(r.json["tx_hash"], "0xsent1");
    assert_eq!(r.json["username"], "alice");
    assert_eq!(balance(&s, &alice, "BTC"), pair("1.19960000", "0.30020000"));
    let fee_rows = get(&s, "/api/v1/admin/users/0/ledger", &admin).json;
    assert_eq!(fee_rows.as_array().unwrap().len(), 1, "{fee_rows}");
    let f = &fee_rows[0];
    assert_eq!(f["type"], "WITHDRAWAL_FEE");
    assert_eq!(f["asset"], "BTC");
    assert_eq!(f["amount"], "0.00020000");
    assert_eq!(f["balance_type"], "AVAILABLE");
    assert_eq!(f["reference_type"], "WITHDRAWAL");
    assert_eq!(f["reference_id"], w1);

    // Nobody approves their own withdrawal (the admin may withdraw too).
    let r = s.json_post(
        "/api/v1/admin/deposits",
        Some(&admin),
        &json!({"username": ADMIN, "asset": "BTC", "amount": "1", "tx_hash": "0xroot", "confirmations": 2}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let root_id = get(&s, "/api/v1/me", &admin).json["id"].as_u64().unwrap();
    let r = s.json_post(
        &format!("/api/v1/admin/users/{root_id}/kyc-level"),
        Some(&admin),
        &json!({"level": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = withdraw(&s, &admin, btc("0.1"));
    assert_eq!(r.status, 201, "{}", r.body);
    let own = r.json["id"].as_u64().unwrap();
    assert_err(
        &s.json_post(
            &format!("/api/v1/admin/withdrawals/{own}/approve"),
            Some(&admin),
            &json!({"tx_hash": "0xmine"}),
        ),
        403,
        -4030,
        "own approval",
    );
    let r = post_raw(
        &s,
        &format!("/api/v1/admin/withdrawals/{own}/reject"),
        &admin,
        b"",
    );
    assert_eq!(r.json["status"], "REJECTED", "{}", r.body);
    assert_eq!(balance(&s, &admin, "BTC"), pair("1.00000000", "0.00000000"));

    // Reject w2: unfrozen, the fee stays with alice.
    let r = post_raw(
        &s,
        &format!("/api/v1/admin/withdrawals/{w2}/reject"),
        &admin,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["status"], "REJECTED");
    assert_eq!(balance(&s, &alice, "BTC"), pair("1.49980000", "0.00000000"));

    // Neither can be processed twice; unknown ids are 404.
    for (path, body) in [
        (
            format!("/api/v1/admin/withdrawals/{w1}/approve"),
            json!({"tx_hash": "0xagain"}),
        ),
        (
            format!("/api/v1/admin/withdrawals/{w2}/approve"),
            json!({"tx_hash": "0xagain"}),
        ),
        (format!("/api/v1/admin/withdrawals/{w1}/reject"), json!({})),
        (format!("/api/v1/admin/withdrawals/{w2}/reject"), json!({})),
    ] {
        assert_err(&s.json_post(&path, Some(&admin), &body), 409, -4095, &path);
    }
    assert_eq!(balance(&s, &alice, "BTC"), pair("1.49980000", "0.00000000"));

    // History: deposits and withdrawals with statuses, newest first.
    let r = get(&s, "/api/v1/wallet/history", &alice);
    assert_eq!(r.status, 200, "{}", r.body);
    let h = r.json.as_array().unwrap();
    assert_eq!(h.len(), 4, "{}", r.body);
    let kinds: Vec<(&str, &str)> = h
        .iter()
        .map(|x| (x["type"].as_str().unwrap(), x["status"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("WITHDRAWAL", "REJECTED")), "{kinds:?}");
    assert!(kinds.contains(&("WITHDRAWAL", "CONFIRMED")), "{kinds:?}");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == ("DEPOSIT", "CONFIRMED"))
            .count(),
        2
    );
    let times: Vec<u64> = h
        .iter()
        .map(|x| x["created_at"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let r = get(&s, "/api/v1/wallet/history?type=WITHDRAWAL", &alice);
    let ids: Vec<u64> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![w2, w1]);
    let r = get(
        &s,
        "/api/v1/wallet/history?type=DEPOSIT&asset=USDT&limit=1",
        &alice,
    );
    assert_eq!(r.json.as_array().unwrap().len(), 1, "{}", r.body);
    assert_eq!(r.json[0]["amount"], "5000.00000000");
    let r = get(&s, "/api/v1/wallet/history", &bob);
    assert_eq!(r.json, json!([]), "bob sees nothing of alice's");

    // Ledger: newest first; rows chain to the balances.
    let r = get(&s, "/api/v1/wallet/ledger?asset=BTC", &alice);
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = r.json.as_array().unwrap().clone();
    let summary: Vec<(String, String, String)> = rows
        .iter()
        .rev()
        .map(|x| {
            (
                x["type"].as_str().unwrap().to_string(),
                x["balance_type"].as_str().unwrap().to_string(),
                x["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let row = |t: &str, b: &str, a: &str| (t.to_string(), b.to_string(), a.to_string());
    assert_eq!(
        summary,
        vec![
            row("DEPOSIT", "AVAILABLE", "2.00000000"),
            row("FREEZE", "AVAILABLE", "-0.50020000"),
            row("FREEZE", "FROZEN", "0.50020000"),
            row("FREEZE", "AVAILABLE", "-0.30020000"),
            row("FREEZE", "FROZEN", "0.30020000"),
            row("WITHDRAWAL", "FROZEN", "-0.50020000"),
            row("UNFREEZE", "AVAILABLE", "0.30020000"),
            row("UNFREEZE", "FROZEN", "-0.30020000"),
        ]
    );
    let ids: Vec<u64> = rows.iter().map(|x| x["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(
        check_ledger_chain(&rows, "BTC"),
        (units("1.4998"), 0),
        "the ledger ends at the balances"
    );
    let all = get(&s, "/api/v1/wallet/ledger", &alice).json;
    assert_eq!(
        check_ledger_chain(all.as_array().unwrap(), "USDT"),
        (units("5000"), 0)
    );
    // Paging.
    let r = get(&s, "/api/v1/wallet/ledger?asset=BTC&limit=3", &alice);
    assert_eq!(r.json.as_array().unwrap()[..], rows[..3]);
    let r = get(
        &s,
        &format!("/api/v1/wallet/ledger?asset=BTC&before_id={}", ids[2]),
        &alice,
    );
    assert_eq!(r.json.as_array().unwrap()[..], rows[3..]);

    // ------------------------------------------------ bad input, no change
    let views = wallet_views(&s, &alice, &admin);

    // Missing or bad credentials on every wallet route.
    for (method, path) in [
        ("GET", "/api/v1/wallet/balances"),
        ("GET", "/api/v1/wallet/deposit-address/BTC"),
        ("POST", "/api/v1/wallet/withdrawals"),
        ("GET", "/api/v1/wallet/history"),
        ("GET", "/api/v1/wallet/ledger"),
    ] {
        let body = btc("0.1").to_string();
        let r = s.req(
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_err(&r, 401, -4010, path);
        for auth in ["Bearer nonsense", "Basic abc", "Bearer", ""] {
            let r = s.req(
                method,
                path,
                &[
                    ("Authorization", auth),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            );
            assert_err(&r, 401, -4010, path);
        }
    }

    let huge = format!(
        "{{\"asset\":\"BTC\",\"amount\":\"0.1\",\"address\":\"{}\"}}",
        "a".repeat(100_000)
    );
    let long_address = "a".repeat(129);
    let bodies: Vec<(Vec<u8>, u16, i64, &str)> = vec![
        (b"".to_vec(), 400, -4000, "empty body"),
        (b"{".to_vec(), 400, -4000, "malformed"),
        (b"[]".to_vec(), 400, -4000, "array"),
        (b"null".to_vec(), 400, -4000, "null"),
        (
            br#"{"asset":"BTC","amount":"0.1"}"#.to_vec(),
            400,
            -4000,
            "no address",
        ),
        (
            br#"{"asset":"BTC","address":"x"}"#.to_vec(),
            400,
            -4000,
            "no amount",
        ),
        (
            br#"{"amount":"0.1","address":"x"}"#.to_vec(),
            400,
            -4000,
            "no asset",
        ),
        (
            br#"{"asset":"BTC","amount":"0.1","address":"x","memo":"1"}"#.to_vec(),
            400,
            -4000,
            "unknown field",
        ),
        (
            br#"{"asset":1,"amount":"0.1","address":"x"}"#.to_vec(),
            400,
            -4000,
            "asset not a string",
        ),
        (
            br#"{"asset":"BTC","amount":"0.1","address":7}"#.to_vec(),
            400,
            -4000,
            "address not a string",
        ),
        (
            br#"{"asset":"BTC","amount":"abc","address":"x"}"#.to_vec(),
            400,
            -4005,
            "non-numeric",
        ),
        (
            br#"{"asset":"BTC","amount":"","address":"x"}"#.to_vec(),
            400,
            -4005,
            "empty amount",
        ),
        (
            br#"{"asset":"BTC","amount":"-0.1","address":"x"}"#.to_vec(),
            400,
            -4005,
            "negative",
        ),
        (
            br#"{"asset":"BTC","amount":-1,"address":"x"}"#.to_vec(),
            400,
            -4005,
            "negative number",
        ),
        (
            br#"{"asset":"BTC","amount":"0","address":"x"}"#.to_vec(),
            400,
            -4005,
            "zero",
        ),
        (
            br#"{"asset":"BTC","amount":0,"address":"x"}"#.to_vec(),
            400,
            -4005,
            "zero number",
        ),
        (
            br#"{"asset":"BTC","amount":"1000000000000000000000000000000","address":"x"}"#.to_vec(),
            400,
            -4005,
            "10^30",
        ),
        (
            br#"{"asset":"BTC","amount":1000000000000000000000000000000,"address":"x"}"#.to_vec(),
            400,
            -4005,
            "10^30 number",
        ),
        (
            br#"{"asset":"BTC","amount":"1e30","address":"x"}"#.to_vec(),
            400,
            -4005,
            "1e30",
        ),
        (
            br#"{"asset":"BTC","amount":"184467440737.09551616","address":"x"}"#.to_vec(),
            400,
            -4005,
            "u64 + 1 units",
        ),
        (
            br#"{"asset":"BTC","amount":"0.000000001","address":"x"}"#.to_vec(),
            400,
            -4005,
            "9 decimals",
        ),
        (
            br#"{"asset":"BTC","amount":"NaN","address":"x"}"#.to_vec(),
            400,
            -4005,
            "NaN",
        ),
        (
            br#"{"asset":"BTC","amount":null,"address":"x"}"#.to_vec(),
            400,
            -4005,
            "null amount",
        ),
        (
            br#"{"asset":"BTC","amount":true,"address":"x"}"#.to_vec(),
            400,
            -4005,
            "bool amount",
        ),
        (
            br#"{"asset":"DOGE","amount":"1","address":"x"}"#.to_vec(),
            404,
            -4042,
            "unknown asset",
        ),
        (
            br#"{"asset":"btc","amount":"1","address":"x"}"#.to_vec(),
            404,
            -4042,
            "lower-case asset",
        ),
        (
            br#"{"asset":"BTC","amount":"0.1","address":""}"#.to_vec(),
            400,
            -4004,
            "empty address",
        ),
        (
            br#"{"asset":"BTC","amount":"0.1","address":"a b"}"#.to_vec(),
            400,
            -4004,
            "blank in address",
        ),
        (
            format!(r#"{{"asset":"BTC","amount":"0.1","address":"{long_address}"}}"#).into_bytes(),
            400,
            -4004,
            "long address",
        ),
        (huge.into_bytes(), 413, -4130, "oversized body"),
    ];
    for (body, status, code, what) in &bodies {
        let r = post_raw(&s, "/api/v1/wallet/withdrawals", &alice, body);
        assert_err(&r, *status, *code, what);
    }
    // Without the permission: an AUDITOR-only user.
    trader(&s, &admin, "audrey", &[("BTC", "1")], &["READ"]);
    let audrey_id = get(&s, "/api/v1/admin/users?role=TRADER&limit=1000", &admin).json["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "audrey")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let r = s.json_post(
        &format!("/api/v1/admin/users/{audrey_id}/roles"),
        Some(&admin),
        &json!({"role": "AUDITOR"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.req(
        "DELETE",
        &format!("/api/v1/admin/users/{audrey_id}/roles/TRADER"),
        &[("Authorization", &bearer(&admin))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["roles"], json!(["AUDITOR"]));
    let audrey = login(&s, "audrey", "audrey-password-1");
    assert_err(
        &withdraw(&s, &audrey, btc("0.1")),
        403,
        -4030,
        "auditor withdraws",
    );
    // Admin routes refuse a TRADER.
    assert_err(
        &s.json_post(
            &format!("/api/v1/admin/withdrawals/{w1}/approve"),
            Some(&alice),
            &json!({"tx_hash": "0x1"}),
        ),
        403,
        -4030,
        "trader approves",
    );
    assert_err(
        &post_raw(
            &s,
            &format!("/api/v1/admin/withdrawals/{w1}/reject"),
            &alice,
            b"",
        ),
        403,
        -4030,
        "trader rejects",
    );
    assert_err(
        &get(&s, "/api/v1/admin/withdrawals", &alice),
        403,
        -4030,
        "trader lists",
    );
    assert_err(
        &get(&s, "/api/v1/admin/users/0/ledger", &alice),
        403,
        -4030,
        "trader ledger",
    );

    // Bad approve/reject input.
    for (path, body, status, code) in [
        (
            "/api/v1/admin/withdrawals/999/approve",
            json!({"tx_hash": "0x1"}),
            404,
            -4043,
        ),
        (
            "/api/v1/admin/withdrawals/999/reject",
            json!({}),
            404,
            -4043,
        ),
        ("/api/v1/admin/withdrawals/0/reject", json!({}), 404, -4043),
        (
            "/api/v1/admin/withdrawals/abc/approve",
            json!({"tx_hash": "0x1"}),
            400,
            -4004,
        ),
        (
            "/api/v1/admin/withdrawals/-1/approve",
            json!({"tx_hash": "0x1"}),
            400,
            -4004,
        ),
        (
            "/api/v1/admin/withdrawals/1000000000000000000000000000000/reject",
            json!({}),
            400,
            -4004,
        ),
        ("/api/v1/admin/withdrawals/1/approve", json!({}), 400, -4000),
        (
            "/api/v1/admin/withdrawals/1/approve",
            json!({"tx_hash": ""}),
            400,
            -4004,
        ),
        (
            "/api/v1/admin/withdrawals/1/approve",
            json!({"tx_hash": "a b"}),
            400,
            -4004,
        ),
        (
            "/api/v1/admin/withdrawals/1/approve",
            json!({"tx_hash": "x".repeat(129)}),
            400,
            -4004,
        ),
        (
            "/api/v1/admin/withdrawals/1/approve",
            json!({"tx_hash": 5}),
            400,
            -4000,
        ),
        (
            "/api/v1/admin/withdrawals/1/reject",
            json!({"reason": "no"}),
            400,
            -4000,
        ),
    ] {
        assert_err(&s.json_post(path, Some(&admin), &body), status, code, path);
    }
    assert_err(
        &post_raw(&s, "/api/v1/admin/withdrawals/1/reject", &admin, b"{"),
        400,
        -4000,
        "malformed reject",
    );

    // Bad query parameters and unknown assets on the reads.
    for (path, status, code) in [
        ("/api/v1/wallet/deposit-address/DOGE", 404, -4042),
        ("/api/v1/wallet/deposit-address/btc", 404, -4042),
        ("/api/v1/wallet/history?limit=0", 400, -4004),
        ("/api/v1/wallet/history?limit=1001", 400, -4004),
        ("/api/v1/wallet/history?limit=abc", 400, -4004),
        ("/api/v1/wallet/history?limit=-1", 400, -4004),
        (
            "/api/v1/wallet/history?limit=1000000000000000000000000000000",
            400,
            -4004,
        ),
        ("/api/v1/wallet/history?limit=", 400, -4004),
        ("/api/v1/wallet/history?type=TRADE", 400, -4004),
        ("/api/v1/wallet/history?status=DONE", 400, -4004),
        ("/api/v1/wallet/history?asset=DOGE", 404, -4042),
        ("/api/v1/wallet/history?foo=1", 400, -4004),
        ("/api/v1/wallet/history?limit=1&limit=2", 400, -4004),
        ("/api/v1/wallet/ledger?limit=0", 400, -4004),
        ("/api/v1/wallet/ledger?limit=5000", 400, -4004),
        ("/api/v1/wallet/ledger?before_id=abc", 400, -4004),
        ("/api/v1/wallet/ledger?before_id=0", 400, -4004),
        ("/api/v1/wallet/ledger?asset=DOGE", 404, -4042),
        ("/api/v1/wallet/ledger?symbol=BTC", 400, -4004),
        ("/api/v1/wallet/ledger?%ZZ=1", 400, -4004),
    ] {
        assert_err(&get(&s, path, &alice), status, code, path);
    }
    for (path, status, code) in [
        ("/api/v1/admin/withdrawals?status=SENT", 400, -4004),
        ("/api/v1/admin/withdrawals?username=nobody", 404, -4040),
        ("/api/v1/admin/withdrawals?asset=DOGE", 404, -4042),
        ("/api/v1/admin/withdrawals?limit=0", 400, -4004),
        ("/api/v1/admin/withdrawals?offset=-1", 400, -4004),
        ("/api/v1/admin/users/999/ledger", 404, -4040),
        ("/api/v1/admin/users/x/ledger", 400, -4004),
    ] {
        assert_err(&get(&s, path, &admin), status, code, path);
    }
    assert_eq!(
        wallet_views(&s, &alice, &admin),
        views,
        "bad input changed something"
    );

    // ------------------------------------------- SIGKILL, restart: all kept
    s.kill();
    let s = Server::start(tmp.path(), port);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let alice = login(&s, "alice", "alice-password-1");
    assert_eq!(wallet_views(&s, &alice, &admin), views);
    assert_eq!(addr(&s, &alice, "BTC"), a_btc);
    // The day's usage survived too: level 2 allows 1000 - 0.5 more BTC
    // (the rejected 0.3 was given back).
    assert_err(
        &withdraw(&s, &alice, btc("999.50000001")),
        400,
        -4007,
        "daily after restart",
    );
    let r = withdraw(&s, &alice, btc("1"));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(balance(&s, &alice, "BTC"), pair("0.49960000", "1.00020000"));
    let rows = get(&s, "/api/v1/wallet/ledger?asset=BTC", &alice).json;
    assert_eq!(
        check_ledger_chain(rows.as_array().unwrap(), "BTC"),
        (units("0.4996"), units("1.0002"))
    );
}
