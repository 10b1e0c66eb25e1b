//! Black-box tests of the settlement API (`/api/v1/admin/settlements`)
//! against real `mini-exchange serve` processes, with the in-process
//! persister writing to a test database of its own:
//! * RBAC: no token, a TRADER, an AUDITOR (reads, cannot run);
//! * bad input (malformed JSON, unknown field, bad dates, today, the
//!   future, an already settled day, bad ids and filters) answers the
//!   contract's JSON error and journals nothing;
//! * a past day without activity settles: 201 PENDING, then COMPLETED with
//!   zero details and a balanced reconciliation; the list is newest first;
//! * SIGKILL and restart keep every batch and keep refusing settled days;
//! * without DATABASE_URL the reports answer 503 while a run is still
//!   journaled; once the exchange restarts with a database, the persister
//!   writes that batch from the journal.
//!
//! Days with trades are settled in persister/tests/settlement.rs, from
//! journals with crafted timestamps (here the journal's clock is the wall
//! clock, and today can never be settled).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const BASE: &str = "/api/v1/admin/settlements";

fn call(s: &Server, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    s.req(method, path, &h, body)
}

fn get(s: &Server, path: &str, token: &str) -> Resp {
    call(s, "GET", path, Some(token), b"")
}

fn run(s: &Server, token: &str, date: &str) -> Resp {
    call(
        s,
        "POST",
        BASE,
        Some(token),
        json!({ "date": date }).to_string().as_bytes(),
    )
}

#[track_caller]
fn ok(r: Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(
        r.head.contains("content-type: application/json"),
        "{}",
        r.head
    );
    r.json
}

/// A JSON error with this status and native code.
#[track_caller]
fn assert_err(r: &Resp, status: u16, code: i64, what: &str) {
    assert_eq!(r.status, status, "{what}: {} {}", r.status, r.body);
    assert!(
        r.head.contains("content-type: application/json"),
        "{what}: {}",
        r.head
    );
    assert_eq!(r.json["code"].as_i64(), Some(code), "{what}: {}", r.body);
    assert!(r.json["msg"].is_string(), "{what}: {}", r.body);
}

/// The batch once the persister has written it (not PENDING any more).
fn written(s: &Server, token: &str, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = ok(get(s, &format!("{BASE}/{id}"), token), 200);
        if b["status"] != "PENDING" {
            return b;
        }
        assert!(Instant::now() < deadline, "batch {id} stays PENDING: {b}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn user_id(s: &Server, admin: &str, name: &str) -> u64 {
    let r = ok(get(s, "/api/v1/admin/users?limit=1000", admin), 200);
    r["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == name)
        .unwrap_or_else(|| panic!("no {name}: {r}"))["id"]
        .as_u64()
        .unwrap()
}

fn utc_date(ms: u64) -> String {
    engine::settlement::format_date((ms / 86_400_000) as u32)
}

/// An empty, COMPLETED batch of `date`.
#[track_caller]
fn assert_empty_completed(b: &Value, id: u64, date: &str, by: &str) {
    assert_eq!(b["id"], id, "{b}");
    assert_eq!(b["date"], date, "{b}");
    assert_eq!(b["status"], "COMPLETED", "{b}");
    assert_eq!(b["requested_by_username"], by, "{b}");
    assert_eq!(b["total_trades"], 0, "{b}");
    assert_eq!(b["total_volume"], "0", "{b}");
    assert_eq!(b["account_count"], 0, "{b}");
    assert_eq!(b["difference_count"], 0, "{b}");
    assert_eq!(b["error_message"], Value::Null, "{b}");
    assert!(b["journal_seq"].as_u64().unwrap() > 0, "{b}");
    assert_eq!(b["started_at"], b["requested_at"], "{b}");
    assert_eq!(b["completed_at"], b["requested_at"], "{b}");
}

#[test]
fn run_list_read_details_rbac_bad_input_restart_and_no_database() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(persister::testdb::TestDb::create());
    let url = db.url().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start_with(tmp.path(), port, &[("DATABASE_URL", url.as_str())]);
    let admin = login(&s, ADMIN, ADMIN_PW);
    // Some activity today (it cannot be settled: today is not over).
    let alice = trader(
        &s,
        &admin,
        "setalice",
        &[("USDT", "10000")],
        &["READ", "TRADE"],
    );
    let bob = trader(&s, &admin, "setbob", &[("BTC", "1")], &["READ", "TRADE"]);
    bob.order(
        &s,
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price=30000",
    );
    alice.order(
        &s,
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.01&price=30000",
    );
    let trader_token = login(&s, "setalice", "setalice-password-1");
    let auditor = login(&s, "setbob", "setbob-password-1");
    // The persister has migrated its database and caught up.
    wait_persisted(&s);
    let bob_id = user_id(&s, &admin, "setbob");
    ok(
        call(
            &s,
            "POST",
            &format!("/api/v1/admin/users/{bob_id}/roles"),
            Some(&admin),
            json!({"role": "AUDITOR"}).to_string().as_bytes(),
        ),
        200,
    );

    // ------------------------------------------------------------ RBAC
    let body = json!({"date": "2020-01-01"}).to_string();
    let routes: [(&str, String, &[u8]); 4] = [
        ("POST", BASE.to_string(), body.as_bytes()),
        ("GET", BASE.to_string(), b""),
        ("GET", format!("{BASE}/1"), b""),
        ("GET", format!("{BASE}/1/details"), b""),
    ];
    for (method, path, body) in &routes {
        let r = call(&s, method, path, None, body);
        assert_err(&r, 401, -4010, &format!("{method} {path} without a token"));
        let r = call(&s, method, path, Some("not.a.token"), body);
        assert_err(&r, 401, -4010, &format!("{method} {path} with a bad token"));
        let r = call(&s, method, path, Some(&trader_token), body);
        assert_err(&r, 403, -4030, &format!("{method} {path} as a TRADER"));
    }
    // An AUDITOR reads but does not run.
    let r = run(&s, &auditor, "2020-01-01");
    assert_err(&r, 403, -4030, "run as an AUDITOR");
    assert!(r.json["msg"].as_str().unwrap().contains("settlement:run"));
    let empty = ok(get(&s, BASE, &auditor), 200);
    assert_eq!(
        empty,
        json!({"total": 0, "offset": 0, "limit": 100, "batches": []})
    );

    // ------------------------------------------------------- bad input
    let now = now_ms();
    let today = utc_date(now);
    let tomorrow = utc_date(now + 86_400_000);
    let bad_bodies: Vec<(&[u8], i64, &str)> = vec![
        (b"", -4000, "empty body"),
        (b"{", -4000, "malformed JSON"),
        (b"[]", -4000, "not an object"),
        (b"{}", -4000, "no date"),
        (br#"{"date": 20200101}"#, -4000, "date as a number"),
        (
            br#"{"date": "2020-01-01", "force": true}"#,
            -4000,
            "unknown field",
        ),
        (br#"{"date": "2020-1-01"}"#, -4004, "short month"),
        (br#"{"date": "2020/01/01"}"#, -4004, "slashes"),
        (br#"{"date": "2019-02-29"}"#, -4004, "no such day"),
        (br#"{"date": "1969-12-31"}"#, -4004, "before 1970"),
        (br#"{"date": "yesterday"}"#, -4004, "a word"),
        (br#"{"date": "2020-01-01T00:00:00Z"}"#, -4004, "a timestamp"),
    ];
    for (body, code, what) in bad_bodies {
        let r = call(&s, "POST", BASE, Some(&admin), body);
        assert_err(&r, 400, code, what);
    }
    for (date, what) in [(&today, "today"), (&tomorrow, "tomorrow")] {
        let r = run(&s, &admin, date);
        assert_err(&r, 400, -4004, what);
        assert!(
            r.json["msg"].as_str().unwrap().contains("not over"),
            "{what}: {}",
            r.body
        );
    }
    // Nothing was journaled.
    assert_eq!(ok(get(&s, BASE, &admin), 200)["total"], 0);

    // ---------------------------------------------- a day that is over
    let r = ok(run(&s, &admin, "2020-01-01"), 201);
    assert_eq!(r["id"], 1, "{r}");
    assert_eq!(r["date"], "2020-01-01");
    assert_eq!(r["status"], "PENDING");
    assert_eq!(r["requested_by_username"], ADMIN);
    assert!(r["journal_seq"].as_u64().unwrap() > 0);
    let requested = r["requested_at"].as_u64().unwrap();
    assert!(requested >= now && requested <= now_ms(), "{r}");
    // Again: 409, whoever asks.
    let r = run(&s, &admin, "2020-01-01");
    assert_err(&r, 409, -4098, "already settled");
    assert!(
        r.json["msg"].as_str().unwrap().contains("batch 1"),
        "{}",
        r.body
    );
    wait_persisted(&s);
    let b1 = written(&s, &auditor, 1);
    assert_empty_completed(&b1, 1, "2020-01-01", ADMIN);
    let rec = &b1["reconciliation"];
    assert_eq!(rec["balanced"], true, "{b1}");
    assert_eq!(rec["differences"], 0);
    assert_eq!(rec["accounts"], 0);
    assert_eq!(rec["assets"], json!([]));
    assert_eq!(rec["mismatched"], json!([]));
    // Yesterday has no activity either (every trade here is today's).
    let yesterday = utc_date(now - 86_400_000);
    let r = ok(run(&s, &admin, &yesterday), 201);
    assert_eq!(r["id"], 2);
    wait_persisted(&s);
    assert_empty_completed(&written(&s, &admin, 2), 2, &yesterday, ADMIN);

    // List: newest first, paged; the list carries no reconciliation.
    let l = ok(get(&s, BASE, &auditor), 200);
    assert_eq!(l["total"], 2);
    let ids: Vec<u64> = l["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![2, 1]);
    assert_eq!(l["batches"][1]["status"], "COMPLETED");
    assert!(l["batches"][1].get("reconciliation").is_none());
    let l = ok(get(&s, &format!("{BASE}?limit=1&offset=1"), &admin), 200);
    assert_eq!(l["batches"].as_array().unwrap().len(), 1);
    assert_eq!(l["batches"][0]["id"], 1);
    assert_eq!((&l["limit"], &l["offset"]), (&json!(1), &json!(1)));

    // Details: none for an empty day, with or without filters.
    let d = ok(get(&s, &format!("{BASE}/1/details"), &auditor), 200);
    assert_eq!(
        d,
        json!({"batch_id": 1, "date": "2020-01-01", "status": "COMPLETED", "total": 0,
               "offset": 0, "limit": 100, "details": []})
    );
    let d = ok(
        get(
            &s,
            &format!("{BASE}/1/details?user=setalice&asset=BTC&limit=5"),
            &admin,
        ),
        200,
    );
    assert_eq!((&d["total"], &d["limit"]), (&json!(0), &json!(5)));
    let d = ok(
        get(&s, &format!("{BASE}/1/details?user={bob_id}"), &admin),
        200,
    );
    assert_eq!(d["details"], json!([]));

    // Bad ids and filters.
    let bad_gets: [(&str, u16, i64); 10] = [
        ("/99", 404, -4045),
        ("/99/details", 404, -4045),
        ("/0", 404, -4045),
        ("/abc", 400, -4004),
        ("/-1", 400, -4004),
        ("/99999999999999999999999", 400, -4004),
        ("/1/details?user=nobody", 404, -4040),
        ("/1/details?asset=NOPE", 404, -4042),
        ("/1/details?limit=0", 400, -4004),
        ("/1/details?colour=red", 400, -4004),
    ];
    for (path, status, code) in bad_gets {
        let r = get(&s, &format!("{BASE}{path}"), &admin);
        assert_err(&r, status, code, path);
    }
    for path in ["?limit=1001", "?limit=x", "?offset=-1", "?date=2020-01-01"] {
        let r = get(&s, &format!("{BASE}{path}"), &admin);
        assert_err(&r, 400, -4004, path);
    }
    let before = ok(get(&s, BASE, &admin), 200);

    // ------------------------------------------------- SIGKILL, restart
    s.kill();
    let s = Server::start_with(tmp.path(), port, &[("DATABASE_URL", url.as_str())]);
    let admin = login(&s, ADMIN, ADMIN_PW);
    assert_eq!(ok(get(&s, BASE, &admin), 200), before);
    let r = run(&s, &admin, "2020-01-01");
    assert_err(&r, 409, -4098, "settled before the restart");
    let r = ok(run(&s, &admin, "2020-01-03"), 201);
    assert_eq!(r["id"], 3, "the batch counter survives: {r}");
    wait_persisted(&s);
    assert_empty_completed(&written(&s, &admin, 3), 3, "2020-01-03", ADMIN);
    drop(s);

    // ------------------------------------------------- no database
    let tmp2 = tempfile::tempdir().unwrap();
    let port2 = free_port();
    // Empty: no database even when the test environment names one.
    let s = Server::start_with(tmp2.path(), port2, &[("DATABASE_URL", "")]);
    let admin = login(&s, ADMIN, ADMIN_PW);
    for path in [
        BASE.to_string(),
        format!("{BASE}/1"),
        format!("{BASE}/1/details"),
    ] {
        let r = get(&s, &path, &admin);
        assert_err(&r, 503, -5030, &path);
        assert!(
            r.json["msg"].as_str().unwrap().contains("DATABASE_URL"),
            "{}",
            r.body
        );
    }
    // Still RBAC first.
    let r = call(&s, "GET", BASE, None, b"");
    assert_err(&r, 401, -4010, "no token, no database");
    // A run is journaled all the same: the journal is the truth.
    let r = ok(run(&s, &admin, "2021-06-30"), 201);
    assert_eq!((&r["id"], &r["status"]), (&json!(1), &json!("PENDING")));
    s.kill();
    // With a database, the in-process persister writes it from the journal.
    let db2 = rt.block_on(persister::testdb::TestDb::create());
    let url2 = db2.url().to_string();
    let s = Server::start_with(tmp2.path(), port2, &[("DATABASE_URL", url2.as_str())]);
    let admin = login(&s, ADMIN, ADMIN_PW);
    wait_persisted(&s);
    assert_empty_completed(&written(&s, &admin, 1), 1, "2021-06-30", ADMIN);
    drop(s);
    rt.block_on(db.drop_db());
    rt.block_on(db2.drop_db());
}
