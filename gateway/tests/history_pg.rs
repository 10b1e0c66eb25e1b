//! History beyond memory: `serve` with DATABASE_URL (its own test database)
//! keeps only 3 closed orders and 3 trades per user in memory; once the
//! persister has written the rest, allOrders and myTrades (REST and the
//! WebSocket API) answer the whole history from memory + Postgres, with the
//! same fields the orders had when they were placed, and Binance paging.

mod common;

use common::*;
use serde_json::Value;

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| o["orderId"].as_u64().unwrap())
        .collect()
}

#[test]
fn all_orders_and_my_trades_reach_past_memory_into_postgres() {
    let (rt, db) = common::test_db();
    let url = db.url().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start_with(
        tmp.path(),
        port,
        &[
            ("DATABASE_URL", url.as_str()),
            ("MX_MARKET_DATA__ORDERS_KEPT_PER_USER", "3"),
            ("MX_MARKET_DATA__TRADES_KEPT_PER_USER", "3"),
            ("MX_DATABASE__POOL_SIZE", "5"),
        ],
    );
    let admin = login(&s, ADMIN, ADMIN_PW);
    let a = trader(
        &s,
        &admin,
        "histalice",
        &[("USDT", "100000")],
        &["READ", "TRADE"],
    );
    let b = trader(&s, &admin, "histbob", &[("BTC", "5")], &["READ", "TRADE"]);
    for i in 0..10 {
        b.order(
            &s,
            &format!(
                "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.01&price={}",
                30000 + i
            ),
        );
    }
    // Alice: 10 IOC buys that each take one level, then 2 that find nothing.
    let mut placed = Vec::new();
    for i in 0..12 {
        let price = if i < 10 { 30000 + i } else { 29000 };
        placed.push(a.order(
            &s,
            &format!(
                "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.01&price={price}&newClientOrderId=h{i}&newOrderRespType=RESULT"
            ),
        ));
    }
    assert!(placed[..10].iter().all(|o| o["status"] == "FILLED"));
    assert!(placed[10..].iter().all(|o| o["status"] == "EXPIRED"));
    wait_persisted(&s);
    // /metrics shows the persister's progress and a zero lag.
    let m = s.req("GET", "/metrics", &[], b"");
    assert!(m.body.contains("mx_persister_lag_seq 0"), "{}", m.body);
    assert!(m.body.contains("mx_persister_lag_seconds 0"), "{}", m.body);
    assert!(
        m.body.contains("mx_persister_rest_seconds_total "),
        "pacing (persister.busy_percent) is reported: {}",
        m.body
    );
    let paced = persister::writer::default_busy_percent(&url);
    assert!(
        m.body
            .contains(&format!("mx_persister_busy_percent {paced}\n")),
        "busy_percent unset: chosen by where Postgres runs ({paced}): {}",
        m.body
    );
    assert!(
        m.body.contains("mx_history_pool_max_connections 5"),
        "database.pool_size sizes the read pool: {}",
        m.body
    );
    let rows = metric(&m.body, "mx_persister_rows_total");
    assert!(rows > 50.0, "{}", m.body);

    // Every order, oldest first, as it was answered when placed.
    let all = a.call(&s, "GET", "/api/v3/allOrders", "symbol=BTCUSDT&limit=1000");
    assert_eq!(all.status, 200, "{}", all.json);
    let list = all.json.as_array().unwrap();
    assert_eq!(list.len(), 12, "{}", all.json);
    for (got, want) in list.iter().zip(&placed) {
        for field in [
            "orderId",
            "clientOrderId",
            "price",
            "origQty",
            "executedQty",
            "cummulativeQuoteQty",
            "status",
            "timeInForce",
            "type",
            "side",
            "selfTradePreventionMode",
            "origQuoteOrderQty",
        ] {
            assert_eq!(got[field], want[field], "{field} of {got}");
        }
        assert_eq!(got["symbol"], "BTCUSDT");
        assert_eq!(got["isWorking"], true);
    }
    // Paging: the newest 5; from the 3rd id, 4 of them.
    let want: Vec<u64> = placed
        .iter()
        .map(|o| o["orderId"].as_u64().unwrap())
        .collect();
    let r = a.call(&s, "GET", "/api/v3/allOrders", "symbol=BTCUSDT&limit=5");
    assert_eq!(ids(&r.json), want[7..].to_vec());
    let r = a.call(
        &s,
        "GET",
        "/api/v3/allOrders",
        &format!("symbol=BTCUSDT&orderId={}&limit=4", want[2]),
    );
    assert_eq!(ids(&r.json), want[2..6].to_vec());

    // Trades: all 10 of Alice's fills with their commission in BTC, and
    // Bob's 10 in USDT.
    let t = a.call(&s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT&limit=1000");
    let trades = t.json.as_array().unwrap();
    assert_eq!(trades.len(), 10, "{}", t.json);
    for (i, tr) in trades.iter().enumerate() {
        assert_eq!(tr["orderId"].as_u64().unwrap(), want[i]);
        assert_eq!(tr["price"], format!("{}.00000000", 30000 + i));
        assert_eq!(tr["qty"], "0.01000000");
        assert_eq!(tr["commission"], "0.00001000");
        assert_eq!(tr["commissionAsset"], "BTC");
        assert_eq!(tr["isBuyer"], true);
        assert_eq!(tr["isMaker"], false);
    }
    let t = b.call(&s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT&limit=1000");
    let bob = t.json.as_array().unwrap();
    assert_eq!(bob.len(), 10);
    assert!(bob
        .iter()
        .all(|tr| tr["commissionAsset"] == "USDT" && tr["isMaker"] == true));
    assert_eq!(bob[0]["commission"], "0.30000000");
    // One order's fills.
    let t = a.call(
        &s,
        "GET",
        "/api/v3/myTrades",
        &format!("symbol=BTCUSDT&orderId={}", want[1]),
    );
    assert_eq!(t.json.as_array().unwrap().len(), 1);
    assert_eq!(t.json[0]["orderId"].as_u64().unwrap(), want[1]);

    // Klines: what the persister wrote, read back the way the klines
    // endpoint reads what memory dropped, prints exactly what memory
    // prints, for every interval, both directions.
    let h = gateway::history::PgHistory::new(&url, 2).unwrap();
    for interval in [
        "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d",
        "1w", "1M",
    ] {
        let mem = s.req(
            "GET",
            &format!("/api/v3/klines?symbol=BTCUSDT&interval={interval}"),
            &[],
            b"",
        );
        let mem = mem.json.as_array().unwrap().clone();
        assert!(!mem.is_empty(), "{interval}");
        for ascending in [true, false] {
            let mut pg = rt
                .block_on(h.klines(&gateway::history::KlinePage {
                    pair: 1,
                    interval,
                    start_ms: None,
                    end_ms: None,
                    ascending,
                    limit: 1000,
                    base_dec: 8,
                    quote_dec: 8,
                }))
                .unwrap();
            if !ascending {
                pg.reverse();
            }
            assert_eq!(pg.len(), mem.len(), "{interval}");
            for (k, m) in pg.iter().zip(&mem) {
                let got = serde_json::json!([
                    k.open_ms,
                    k.open,
                    k.high,
                    k.low,
                    k.close,
                    k.volume,
                    m[6],
                    k.quote_volume,
                    k.trades,
                    k.taker_buy_volume,
                    k.taker_buy_quote_volume,
                    "0"
                ]);
                assert_eq!(&got, m, "{interval}");
            }
        }
        // A window that starts after the first kline: only the later ones.
        let first = mem[0][0].as_u64().unwrap();
        let later = rt
            .block_on(h.klines(&gateway::history::KlinePage {
                pair: 1,
                interval,
                start_ms: Some(first + 1),
                end_ms: None,
                ascending: true,
                limit: 1000,
                base_dec: 8,
                quote_dec: 8,
            }))
            .unwrap();
        assert_eq!(later.len(), mem.len() - 1, "{interval}");
    }

    // The audit log, read back from Postgres: the two admin deposits of
    // each trader, newest first; filters and bad input.
    let audit = |q: &str, token: &str| {
        let h = format!("Bearer {token}");
        s.req(
            "GET",
            &format!("/api/v1/admin/audit-logs{q}"),
            &[("Authorization", h.as_str())],
            b"",
        )
    };
    let r = audit("?action=deposit.post&resource_type=DEPOSIT", &admin);
    assert_eq!(r.status, 200, "{}", r.body);
    let logs = r.json["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2, "{}", r.body);
    assert!(logs
        .iter()
        .all(|l| l["action"] == "deposit.post" && l["resource_type"] == "DEPOSIT"));
    assert!(logs[0]["created_at"].as_u64() >= logs[1]["created_at"].as_u64());
    let r = audit("?limit=1", &admin);
    assert_eq!(r.json["logs"].as_array().unwrap().len(), 1, "{}", r.body);
    let newest = r.json["logs"][0]["id"].as_i64().unwrap();
    let r = audit(&format!("?before={newest}&limit=1000"), &admin);
    assert!(r.json["logs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["id"].as_i64().unwrap() < newest));
    let r = audit("?startTime=0&endTime=1", &admin);
    assert_eq!(r.json["logs"], serde_json::json!([]), "{}", r.body);
    for q in [
        "?resource_type=BOGUS",
        "?action=a%3Bdrop",
        "?limit=0",
        "?limit=1001",
        "?user=-1",
        "?startTime=5&endTime=1",
        "?nope=1",
        "?resource_id=",
    ] {
        let r = audit(q, &admin);
        assert_eq!(
            (r.status, r.json["code"].as_i64()),
            (400, Some(-4004)),
            "{q}: {}",
            r.body
        );
    }
    // Role changes and template edits name the acting admin (journaled
    // with the command since format 7), and since format 8 so do the other
    // admin commands: deposits, a lock and an unlock.
    let h = format!("Bearer {admin}");
    let auth = [
        ("Authorization", h.as_str()),
        ("Content-Type", "application/json"),
    ];
    let admin_id = s.req("GET", "/api/v1/me", &auth, b"").json["id"].clone();
    assert!(admin_id.as_u64().is_some(), "{admin_id}");
    let users = s
        .req("GET", "/api/v1/admin/users?limit=100", &auth, b"")
        .json;
    let bob_id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "histbob")
        .unwrap_or_else(|| panic!("{users}"))["id"]
        .clone();
    let r = s.req(
        "POST",
        &format!("/api/v1/admin/users/{bob_id}/roles"),
        &auth,
        br#"{"role":"AUDITOR"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.req(
        "DELETE",
        &format!("/api/v1/admin/users/{bob_id}/roles/AUDITOR"),
        &auth,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.req(
        "PUT",
        "/api/v1/admin/notifications/templates/order_filled",
        &auth,
        br#"{"subject":"Filled: {symbol}"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for path in ["lock", "unlock"] {
        let r = s.req(
            "POST",
            &format!("/api/v1/admin/users/{bob_id}/{path}"),
            &auth,
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_persisted(&s);
    let r = audit("?action=deposit.post", &admin);
    let logs = r.json["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2, "{}", r.body);
    assert!(logs.iter().all(|l| l["user_id"] == admin_id), "{}", r.body);
    let r = audit("?resource_type=USER", &admin);
    let logs = r.json["logs"].as_array().unwrap();
    let acts: Vec<(&str, &Value)> = logs
        .iter()
        .map(|l| (l["action"].as_str().unwrap(), &l["user_id"]))
        .collect();
    assert_eq!(
        acts,
        vec![
            ("user.set_status", &admin_id),
            ("user.set_status", &admin_id)
        ],
        "{}",
        r.body
    );
    assert_eq!(
        logs[1]["new_values"]["SetUserStatus"]["status"],
        "Suspended"
    );
    assert_eq!(
        logs[1]["new_values"]["SetUserStatus"]["cancel_orders"],
        true
    );
    let r = audit("?resource_type=ROLE", &admin);
    let logs = r.json["logs"].as_array().unwrap();
    let acts: Vec<(&str, &str, &Value)> = logs
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap(),
                l["resource_id"].as_str().unwrap(),
                &l["user_id"],
            )
        })
        .collect();
    let bob = bob_id.to_string();
    assert_eq!(
        acts,
        vec![
            ("user.revoke_role", bob.as_str(), &admin_id),
            ("user.grant_role", bob.as_str(), &admin_id),
        ],
        "{}",
        r.body
    );
    let r = audit("?resource_type=NOTIFICATION_TEMPLATE", &admin);
    let logs = r.json["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1, "{}", r.body);
    assert_eq!(logs[0]["action"], "notification_template.update");
    assert_eq!(logs[0]["resource_id"], "order_filled");
    assert_eq!(logs[0]["user_id"], admin_id);

    // A trader has no audit:read; no token is 401.
    let alice_token = login(&s, "histalice", "histalice-password-1");
    let r = audit("", &alice_token);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = s.req("GET", "/api/v1/admin/audit-logs", &[], b"");
    assert_eq!(r.status, 401, "{}", r.body);

    drop(s);
    rt.block_on(db.drop_db());
}
