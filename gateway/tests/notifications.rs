//! Black-box tests of in-app notifications against a real `mini-exchange
//! serve`: a deposit and a filled order produce notifications (newest
//! first, unread count); mark read (idempotent, own only); webhook
//! registration refuses bad URLs and changes nothing; a webhook receiver
//! gets the JSON of a new notification when `http.webhook_allow_private`
//! is on, and nothing when it is off (SSRF guard); notifications, read
//! marks and the webhook survive a SIGKILL restart; bad inputs are contract
//! errors.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::native::{call, err_code as err, get};
use common::*;
use serde_json::{json, Value};

const ALLOW_PRIVATE: (&str, &str) = ("MX_HTTP__WEBHOOK_ALLOW_PRIVATE", "true");

fn post(s: &Server, path: &str, token: Option<&str>, body: &[u8]) -> Resp {
    call(s, "POST", path, token, body)
}

fn notifications(s: &Server, token: &str, query: &str) -> Value {
    let r = get(s, &format!("/api/v1/notifications{query}"), token);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json
}

fn templates_of(v: &Value) -> Vec<String> {
    v["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["template"].as_str().unwrap().to_string())
        .collect()
}

fn deposit(s: &Server, admin: &str, user: &str, amount: &str, tx: &str) {
    let r = s.json_post(
        "/api/v1/admin/deposits",
        Some(admin),
        &json!({"username": user, "asset": "USDT", "amount": amount,
                "tx_hash": tx, "confirmations": 100}),
    );
    assert_eq!(r.status, 201, "deposit: {}", r.json);
}

/// A one-shot HTTP receiver: each request's (path, body) goes to the channel.
fn receiver() -> (u16, mpsc::Receiver<(String, String)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            c.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (String::from_utf8_lossy(&buf).into_owned(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((h, b)) = text.split_once("\r\n\r\n") {
                    let len = h
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if b.len() >= len {
                        break (h.to_string(), b[..len].to_string());
                    }
                }
            };
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            if tx.send((path, body)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

#[test]
fn deposit_fill_read_webhook_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), free_port(), &[ALLOW_PRIVATE]);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let alice = trader(&s, &admin, "alice", &[("USDT", "1000")], &["READ", "TRADE"]);
    let bob = trader(&s, &admin, "bob", &[("BTC", "1")], &["READ", "TRADE"]);
    let at = login(&s, "alice", "alice-password-1");
    let bt = login(&s, "bob", "bob-password-1");

    // Deposit -> notification (newest first, after the API key's).
    let v = notifications(&s, &at, "");
    assert_eq!(templates_of(&v), ["deposit_credited", "api_key_created"]);
    assert_eq!(v["unread"], 2);
    let dep = &v["notifications"][0];
    assert_eq!(dep["status"], "SENT");
    assert_eq!(dep["type"], "IN_APP");
    assert!(
        dep["body"].as_str().unwrap().contains("1000.00000000 USDT"),
        "{dep}"
    );

    // Order filled -> a notification for both sides.
    bob.order(
        &s,
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.1&price=100",
    );
    alice.order(
        &s,
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=100",
    );
    let v = notifications(&s, &at, "?limit=1");
    assert_eq!(templates_of(&v), ["order_filled"]);
    let filled = v["notifications"][0].clone();
    assert!(
        filled["body"].as_str().unwrap().contains("BTCUSDT"),
        "{filled}"
    );
    assert!(
        filled["body"].as_str().unwrap().contains("0.10000000 BTC"),
        "{filled}"
    );
    let bv = notifications(&s, &bt, "");
    assert_eq!(templates_of(&bv)[0], "order_filled");
    let bob_note = bv["notifications"][0]["id"].as_u64().unwrap();

    // Mark read (twice: idempotent).
    let id = filled["id"].as_u64().unwrap();
    for _ in 0..2 {
        let r = post(
            &s,
            &format!("/api/v1/notifications/{id}/read"),
            Some(&at),
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json["status"], "READ");
        assert!(r.json["read_at"].as_u64().unwrap() > 0);
    }
    let v = notifications(&s, &at, "?unread=true");
    assert_eq!(v["unread"], 2);
    assert!(!templates_of(&v).contains(&"order_filled".to_string()));

    // Someone else's notification, unknown ids, bad ids, no token.
    let before = notifications(&s, &at, "");
    let r = post(
        &s,
        &format!("/api/v1/notifications/{bob_note}/read"),
        Some(&at),
        b"",
    );
    assert_eq!(err(&r), (404, -4047));
    let r = post(&s, "/api/v1/notifications/999999999/read", Some(&at), b"");
    assert_eq!(err(&r), (404, -4047));
    let r = post(&s, "/api/v1/notifications/abc/read", Some(&at), b"");
    assert_eq!(err(&r), (400, -4004));
    let r = post(&s, &format!("/api/v1/notifications/{id}/read"), None, b"");
    assert_eq!(err(&r), (401, -4010));
    for q in ["?limit=0", "?limit=501", "?unread=maybe", "?page=2"] {
        let r = get(&s, &format!("/api/v1/notifications{q}"), &at);
        assert_eq!(err(&r), (400, -4004), "{q}");
    }
    assert_eq!(
        notifications(&s, &at, ""),
        before,
        "bad requests changed nothing"
    );
    let r = bv["notifications"][0]["status"].clone();
    assert_eq!(r, "SENT", "bob's notification stays unread");

    // Webhook: bad URLs are refused and change nothing.
    let long = format!("http://example.com/{}", "a".repeat(600));
    for bad in [
        json!({"url": "ftp://example.com/x"}),
        json!({"url": "example.com/hook"}),
        json!({"url": "http://user:pw@example.com/"}),
        json!({"url": "http://example.com:99999/"}),
        json!({"url": "http://exa mple.com/"}),
        json!({"url": long}),
        json!({"url": 5}),
        json!({}),
    ] {
        let r = post(
            &s,
            "/api/v1/notifications/webhook",
            Some(&at),
            bad.to_string().as_bytes(),
        );
        assert_eq!(err(&r), (400, -4020), "{bad}");
    }
    let r = post(&s, "/api/v1/notifications/webhook", Some(&at), b"{not json");
    assert_eq!(err(&r), (400, -4000));
    let r = post(
        &s,
        "/api/v1/notifications/webhook",
        None,
        br#"{"url":"http://example.com/"}"#,
    );
    assert_eq!(err(&r), (401, -4010));
    assert_eq!(
        get(&s, "/api/v1/notifications/webhook", &at).json,
        json!({"url": null})
    );

    // A receiver gets the next notification's JSON.
    let (port, rx) = receiver();
    let url = format!("http://127.0.0.1:{port}/hook?token=abc");
    let r = s.json_post(
        "/api/v1/notifications/webhook",
        Some(&at),
        &json!({"url": url}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["url"], url);
    deposit(&s, &admin, "alice", "5", "0xhook1");
    let (path, body) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("webhook delivered");
    assert_eq!(path, "/hook?token=abc");
    let got: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got["template"], "deposit_credited");
    assert_eq!(got["type"], "IN_APP");
    assert!(
        got["body"].as_str().unwrap().contains("5.00000000 USDT"),
        "{got}"
    );
    let newest = notifications(&s, &at, "?limit=1");
    assert_eq!(got["id"], newest["notifications"][0]["id"]);
    assert!(got["user_id"].as_u64().unwrap() > 0, "{got}");

    // SIGKILL and restart: notifications, read marks and the webhook survive.
    let all_before = notifications(&s, &at, "");
    s.kill();
    let s = Server::start_with(dir.path(), free_port(), &[ALLOW_PRIVATE]);
    let at = login(&s, "alice", "alice-password-1");
    let after = notifications(&s, &at, "");
    // Logging in again adds nothing (a success is not a notification).
    assert_eq!(after, all_before);
    assert_eq!(
        get(&s, "/api/v1/notifications/webhook", &at).json["url"],
        url
    );
    let admin = login(&s, ADMIN, ADMIN_PW);
    deposit(&s, &admin, "alice", "6", "0xhook2");
    let (_, body) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("delivered after restart");
    assert!(body.contains("6.00000000 USDT"), "{body}");

    // Removing the webhook.
    let r = s.req(
        "DELETE",
        "/api/v1/notifications/webhook",
        &[("Authorization", &format!("Bearer {at}"))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["url"], Value::Null);
}

#[test]
fn private_webhook_addresses_are_not_reached_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), free_port());
    let admin = login(&s, ADMIN, ADMIN_PW);
    trader(&s, &admin, "carol", &[], &["READ"]);
    let ct = login(&s, "carol", "carol-password-1");
    let (port, rx) = receiver();
    let r = s.json_post(
        "/api/v1/notifications/webhook",
        Some(&ct),
        &json!({"url": format!("http://127.0.0.1:{port}/hook")}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    deposit(&s, &admin, "carol", "7", "0xc1");
    let started = Instant::now();
    assert!(
        rx.recv_timeout(Duration::from_secs(3)).is_err(),
        "a loopback webhook was reached without http.webhook_allow_private"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    // The notification itself is there.
    let v = notifications(&s, &ct, "?limit=1");
    assert_eq!(templates_of(&v), ["deposit_credited"]);
}

#[test]
fn admin_lists_the_built_in_templates() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), free_port());
    let admin = login(&s, ADMIN, ADMIN_PW);
    let r = get(&s, "/api/v1/admin/notifications/templates", &admin);
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json.as_array().unwrap();
    assert_eq!(list.len(), 11);
    let names: Vec<&str> = list.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for n in [
        "order_filled",
        "deposit_credited",
        "withdrawal_requested",
        "withdrawal_sent",
        "withdrawal_rejected",
        "kyc_approved",
        "kyc_rejected",
        "login_locked",
        "api_key_created",
    ] {
        assert!(names.contains(&n), "{n} missing: {names:?}");
    }
    assert!(list.iter().all(|t| t["type"] == "IN_APP"));
    let r = s.req("GET", "/api/v1/admin/notifications/templates", &[], b"");
    assert_eq!(err(&r), (401, -4010));
}

fn put(s: &Server, path: &str, token: Option<&str>, body: &[u8]) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    s.req("PUT", path, &h, body)
}

fn template<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing: {list}"))
}

/// `PUT admin/notifications/templates/{name}`: an edit is listed, renders
/// every later notification (earlier ones keep their text), survives a
/// SIGKILL restart, and deactivating a template stops its notifications;
/// unknown names, unsupported placeholders, oversized text, unknown
/// fields and callers without `notifications:write` are refused and change
/// nothing.
#[test]
fn admin_edits_a_template_and_later_notifications_use_it() {
    const PATH: &str = "/api/v1/admin/notifications/templates";
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), free_port());
    let admin = login(&s, ADMIN, ADMIN_PW);
    trader(&s, &admin, "dave", &[], &["READ"]);
    let dt = login(&s, "dave", "dave-password-1");
    deposit(&s, &admin, "dave", "1", "0xd1");

    let edit = json!({
        "subject": "Funds in: {asset}",
        "content": "You got {amount} {asset} (deposit #{deposit_id}).",
    });
    let r = put(
        &s,
        &format!("{PATH}/deposit_credited"),
        Some(&admin),
        edit.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["subject"], edit["subject"]);
    assert_eq!(r.json["content"], edit["content"]);
    assert_eq!(r.json["is_active"], true);
    assert_eq!(r.json["version"], 1);
    assert!(r.json["updated_by"].as_u64().unwrap() > 0, "{}", r.json);

    let list = get(&s, PATH, &admin).json;
    let t = template(&list, "deposit_credited");
    assert_eq!(t["content"], edit["content"]);
    assert_eq!(t["editable"], true);
    assert!(t["placeholders"]
        .as_array()
        .unwrap()
        .contains(&json!("deposit_id")));
    assert_eq!(
        template(&list, "order_filled")["subject"],
        "Order filled",
        "other templates unchanged"
    );

    deposit(&s, &admin, "dave", "7", "0xd2");
    let v = notifications(&s, &dt, "?limit=2");
    let (new, old) = (&v["notifications"][0], &v["notifications"][1]);
    assert_eq!(new["template"], "deposit_credited");
    assert_eq!(new["title"], "Funds in: USDT");
    let body = new["body"].as_str().unwrap();
    assert!(
        body.starts_with("You got 7.00000000 USDT (deposit #"),
        "{body}"
    );
    assert_eq!(old["title"], "Deposit credited", "earlier text stays");

    // Refusals: each a contract error that changes nothing.
    let before = get(&s, PATH, &admin).json;
    let r = put(
        &s,
        &format!("{PATH}/no_such_template"),
        Some(&admin),
        b"{\"subject\":\"x\"}",
    );
    assert_eq!(err(&r), (404, -4047));
    let r = put(
        &s,
        &format!("{PATH}/deposit_credited"),
        Some(&admin),
        br#"{"content":"Order {order_id} and {amount}"}"#,
    );
    assert_eq!(err(&r), (400, -4004));
    assert!(
        r.json["msg"].as_str().unwrap().contains("{order_id}"),
        "{}",
        r.body
    );
    let long = json!({ "content": "x".repeat(2001) });
    let r = put(
        &s,
        &format!("{PATH}/deposit_credited"),
        Some(&admin),
        long.to_string().as_bytes(),
    );
    assert_eq!(err(&r), (400, -4004));
    let long = json!({ "subject": "x".repeat(256) });
    let r = put(
        &s,
        &format!("{PATH}/deposit_credited"),
        Some(&admin),
        long.to_string().as_bytes(),
    );
    assert_eq!(err(&r), (400, -4004));
    for bad in [
        &br#"{"title":"x"}"#[..],
        b"{}",
        b"{not json",
        br#"{"is_active":"no"}"#,
    ] {
        let r = put(&s, &format!("{PATH}/deposit_credited"), Some(&admin), bad);
        assert_eq!(err(&r), (400, -4000), "{}", String::from_utf8_lossy(bad));
    }
    // A trader has notifications:read but not notifications:write.
    let r = put(
        &s,
        &format!("{PATH}/deposit_credited"),
        Some(&dt),
        br#"{"subject":"Hacked"}"#,
    );
    assert_eq!(err(&r), (403, -4030));
    let r = put(
        &s,
        &format!("{PATH}/deposit_credited"),
        None,
        br#"{"subject":"x"}"#,
    );
    assert_eq!(err(&r), (401, -4010));
    assert_eq!(
        get(&s, PATH, &admin).json,
        before,
        "refusals changed nothing"
    );

    // SIGKILL and restart: the edit is journaled, so it is still in force.
    s.kill();
    let s = Server::start(dir.path(), free_port());
    let admin = login(&s, ADMIN, ADMIN_PW);
    let dt = login(&s, "dave", "dave-password-1");
    assert_eq!(get(&s, PATH, &admin).json, before);
    deposit(&s, &admin, "dave", "8", "0xd3");
    let v = notifications(&s, &dt, "?limit=1");
    assert_eq!(v["notifications"][0]["title"], "Funds in: USDT");

    // Deactivated: deposits notify no more (only is_active given: the
    // text stays).
    let r = put(
        &s,
        &format!("{PATH}/deposit_credited"),
        Some(&admin),
        br#"{"is_active":false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json["is_active"], false);
    assert_eq!(r.json["content"], edit["content"]);
    assert_eq!(r.json["version"], 2);
    let count = notifications(&s, &dt, "")["notifications"]
        .as_array()
        .unwrap()
        .len();
    deposit(&s, &admin, "dave", "9", "0xd4");
    let after = notifications(&s, &dt, "")["notifications"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, count, "an inactive template notifies nobody");
}
