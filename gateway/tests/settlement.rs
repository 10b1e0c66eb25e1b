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
//!   writes that batch from the journal;
//! * a day with deposits and a trade: the journal's clock is the wall
//!   clock and today can never be settled, so that day's journal is written
//!   here with 2024 timestamps before the first start; settled over HTTP,
//!   its details (usernames, every amount at the asset's precision,
//!   filters, paging) and reconciliation come back exactly. More cases
//!   (withdrawals, adjustments, fee income, tampering, SIGKILL) are in
//!   persister/tests/settlement.rs.

mod common;

use std::time::{Duration, Instant};

use common::native::*;
use common::*;
use serde_json::{json, Value};

const BASE: &str = "/api/v1/admin/settlements";

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
    let (rt, db) = common::test_db();
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
    assert_err(&r, 409, -4096, "already settled");
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
        ("/99", 404, -4048),
        ("/99/details", 404, -4048),
        ("/0", 404, -4048),
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
    assert_err(&r, 409, -4096, "settled before the restart");
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

// ------------------------------------------- a past day with trades

const ONE: u64 = 100_000_000;
/// 2024-01-15T00:00:00Z.
const DAY_MS: u64 = 1_705_276_800_000;

/// A journal written before the first start, its clock on 2024-01-15:
/// assets, a pair (fees 0.1 %), alice with 1 BTC, bob with 50000 USDT who
/// bids 0.5 BTC at 30000, and alice selling 0.2 BTC into that bid.
fn write_past_day(dir: &std::path::Path) {
    use engine::*;
    let data = persister::replica::DataDir::new(dir);
    data.create().unwrap();
    let (mut w, _) = journal::Writer::open(journal::JournalConfig {
        segment_size: 4 * 1024 * 1024,
        ..journal::JournalConfig::new(data.journal())
    })
    .unwrap();
    let asset = |symbol: &str| Command::AddAsset {
        spec: AssetSpec {
            symbol: symbol.into(),
            name: symbol.into(),
            decimals: 8,
            min_withdraw_units: 0,
            withdraw_fee_units: 0,
            daily_withdraw_limit_units: 0,
            confirmations: 1,
            active: true,
        },
        by: None,
    };
    let user = |name: &str| Command::CreateUser {
        username: name.into(),
        email: format!("{name}@example.com"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles: roles::TRADER,
    };
    let deposit = |user: u64, asset: u32, amount: u64| Command::Deposit {
        user: UserId(user),
        asset: AssetId(asset),
        amount,
        tx_hash: format!("past-{user}-{asset}"),
        confirmations: 1,
        by: None,
    };
    let order = |user: u64, side: Side, tif: TimeInForce, qty: u64| {
        Command::PlaceOrder(NewOrder {
            user: UserId(user),
            pair: PairId(1),
            side,
            kind: OrderType::Limit,
            tif,
            price: Price(3_000_000),
            qty: Qty(qty),
            quote_qty: 0,
            stop_price: Price(0),
            client_id: ClientOrderId::NONE,
            stp: StpMode::ExpireMaker,
        })
    };
    let commands = [
        asset("BTC"),
        asset("USDT"),
        Command::AddPair {
            spec: Box::new(PairSpec {
                symbol: "BTCUSDT".into(),
                base: AssetId(1),
                quote: AssetId(2),
                tick_units: 1_000_000,
                step_units: 1_000,
                min_qty_units: 1_000,
                max_qty_units: 9_000 * ONE,
                market_max_qty_units: 9_000 * ONE,
                min_notional_units: 5 * ONE,
                max_notional_units: 0,
                min_price_ticks: 1,
                max_price_ticks: 1_000_000_000,
                maker_fee_e8: 100_000,
                taker_fee_e8: 100_000,
                price_band_pct: 0,
                status: PairStatus::Trading,
            }),
            by: None,
        },
        user("pastalice"),
        user("pastbob"),
        deposit(1, 1, ONE),
        deposit(2, 2, 50_000 * ONE),
        order(2, Side::Buy, TimeInForce::Gtc, ONE / 2),
        order(1, Side::Sell, TimeInForce::Ioc, ONE / 5),
    ];
    let mut buf = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        buf.clear();
        c.encode_into(&mut buf);
        let ms = DAY_MS + 3_600_000 + i as u64 * 60_000;
        w.append(ms * 1_000_000, &buf).unwrap();
    }
    w.commit().unwrap();
    w.close().unwrap();
}

#[test]
fn settles_a_past_day_with_trades_over_http() {
    let (rt, db) = common::test_db();
    let url = db.url().to_string();
    let tmp = tempfile::tempdir().unwrap();
    write_past_day(tmp.path());
    let s = Server::start_with(tmp.path(), free_port(), &[("DATABASE_URL", url.as_str())]);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let r = ok(run(&s, &admin, "2024-01-15"), 201);
    assert_eq!((&r["id"], &r["status"]), (&json!(1), &json!("PENDING")));
    wait_persisted(&s);
    let b = written(&s, &admin, 1);
    assert_eq!(b["status"], "COMPLETED", "{b}");
    assert_eq!(
        (&b["total_trades"], &b["total_volume"], &b["account_count"]),
        (&json!(1), &json!("6000"), &json!(6)),
        "{b}"
    );
    let rec = &b["reconciliation"];
    assert_eq!(
        (&rec["balanced"], &rec["trades"]),
        (&json!(true), &json!(1))
    );
    let btc = rec["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["asset"] == "BTC")
        .unwrap();
    assert_eq!(
        (
            &btc["bought"],
            &btc["sold"],
            &btc["fees_paid"],
            &btc["fee_income"]
        ),
        (
            &json!("0.20000000"),
            &json!("0.20000000"),
            &json!("0.00020000"),
            &json!("0.00020000")
        )
    );

    let d = ok(get(&s, &format!("{BASE}/1/details"), &admin), 200);
    assert_eq!(
        (&d["total"], &d["status"]),
        (&json!(6), &json!("COMPLETED"))
    );
    let rows: Vec<(String, String, String, String, String)> = d["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let f = |k: &str| x[k].as_str().unwrap_or_else(|| panic!("{k} in {x}")).to_string();
            (
                f("username"),
                f("asset"),
                f("opening_balance"),
                format!(
                    "bought {} sold {} fee {} net {} income {} deposit {} withdrawal {} wfee {} adjustment {}",
                    f("bought_amount"),
                    f("sold_amount"),
                    f("fee_amount"),
                    f("net_amount"),
                    f("fee_income_amount"),
                    f("deposit_amount"),
                    f("withdrawal_amount"),
                    f("withdrawal_fee_amount"),
                    f("adjustment_amount")
                ),
                format!("{} diff {}", f("closing_balance"), f("difference")),
            )
        })
        .collect();
    let z = "0.00000000";
    let line = |b: &str, s: &str, f: &str, n: &str, i: &str, d: &str| {
        format!(
            "bought {b} sold {s} fee {f} net {n} income {i} deposit {d} withdrawal {z} wfee {z} adjustment {z}"
        )
    };
    let want = vec![
        (
            "exchange",
            "BTC",
            line(z, z, z, z, "0.00020000", z),
            "0.00020000",
        ),
        (
            "exchange",
            "USDT",
            line(z, z, z, z, "6.00000000", z),
            "6.00000000",
        ),
        (
            "pastalice",
            "BTC",
            line(z, "0.20000000", z, "-0.20000000", z, "1.00000000"),
            "0.80000000",
        ),
        (
            "pastalice",
            "USDT",
            line("6000.00000000", z, "6.00000000", "5994.00000000", z, z),
            "5994.00000000",
        ),
        (
            "pastbob",
            "BTC",
            line("0.20000000", z, "0.00020000", "0.19980000", z, z),
            "0.19980000",
        ),
        (
            "pastbob",
            "USDT",
            line(z, "6000.00000000", z, "-6000.00000000", z, "50000.00000000"),
            "44000.00000000",
        ),
    ];
    assert_eq!(rows.len(), want.len(), "{d}");
    for (got, (user, asset, moves, closing)) in rows.iter().zip(want) {
        assert_eq!(
            got,
            &(
                user.to_string(),
                asset.to_string(),
                z.to_string(),
                moves,
                format!("{closing} diff {z}")
            )
        );
    }
    // Filters and paging.
    let d = ok(
        get(&s, &format!("{BASE}/1/details?user=pastalice"), &admin),
        200,
    );
    assert_eq!(d["total"], 2);
    let d = ok(
        get(
            &s,
            &format!("{BASE}/1/details?asset=USDT&limit=1&offset=1"),
            &admin,
        ),
        200,
    );
    assert_eq!(
        (&d["total"], &d["details"][0]["username"]),
        (&json!(3), &json!("pastalice"))
    );
    let d = ok(
        get(&s, &format!("{BASE}/1/details?user=2&asset=BTC"), &admin),
        200,
    );
    assert_eq!(d["details"][0]["closing_balance"], "0.19980000");
    assert_eq!(d["total"], 1);
    drop(s);
    rt.block_on(db.drop_db());
}
