//! Risk rules and risk events in Postgres (real server, own database): a
//! journal with rules created, updated, deleted (and the name reused),
//! events raised by ORDER_NOTIONAL (BLOCK and ALERT), LARGE_WITHDRAWAL and
//! LOGIN_FAILURE rules, acknowledged, resolved and dismissed, and role
//! grants. The writer puts them into `risk_rules` / `risk_events` (every
//! CHECK holds, or the batch would fail), with audit rows naming the acting
//! admin, as for a deposit, an asset and a pair change and a user lock
//! (command format 8); written in small batches and in one, the tables are
//! identical.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::*;
use persister::replica::DataDir;
use persister::testdb::TestDb;
use persister::writer::{self, Follow, PersisterStatus, WriterConfig};
use serde_json::Value;

const ONE: u64 = 100_000_000;
/// 2024-03-10T00:00:00Z.
const BASE_MS: u64 = 1_710_028_800_000;
const ROOT: UserId = UserId(1);
const ALICE: UserId = UserId(2);

fn asset(symbol: &str) -> AssetSpec {
    AssetSpec {
        symbol: symbol.into(),
        name: symbol.into(),
        decimals: 8,
        min_withdraw_units: 0,
        withdraw_fee_units: 0,
        daily_withdraw_limit_units: 0,
        confirmations: 1,
        active: true,
    }
}

fn rule(name: &str, kind: RiskRuleType, parameters: &str, action: RiskAction) -> Command {
    Command::CreateRiskRule {
        by: ROOT,
        name: name.into(),
        kind,
        parameters: parameters.into(),
        level: RiskLevel::High,
        action,
        enabled: true,
        description: format!("{name} rule"),
    }
}

fn buy(qty: u64) -> Command {
    Command::PlaceOrder(NewOrder {
        user: ALICE,
        pair: PairId(1),
        side: Side::Buy,
        kind: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price: Price(3_000_000), // 30000.00
        qty: Qty(qty),
        quote_qty: 0,
        stop_price: Price(0),
        client_id: ClientOrderId::NONE,
        stp: StpMode::ExpireMaker,
    })
}

fn set_status(event: u64, status: RiskEventStatus, note: &str) -> Command {
    Command::SetRiskEventStatus {
        by: ROOT,
        event,
        status,
        note: note.into(),
    }
}

fn commands() -> Vec<Command> {
    let user = |name: &str, roles| Command::CreateUser {
        username: name.into(),
        email: format!("{name}@example.com"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles,
    };
    vec![
        Command::AddAsset {
            spec: asset("BTC"),
            by: None,
        },
        Command::AddAsset {
            spec: asset("USDT"),
            by: None,
        },
        Command::AddPair {
            spec: Box::new(PairSpec {
                step_units: 1_000,
                min_qty_units: 1_000,
                max_qty_units: 9_000 * ONE,
                market_max_qty_units: 9_000 * ONE,
                min_notional_units: 5 * ONE,
                max_price_ticks: 100_000_000_000,
                taker_fee_e8: 100_000,
                price_band_pct: 50,
                ..common::btcusdt()
            }),
            by: None,
        },
        user("root", roles::ADMIN),
        user("alice", roles::TRADER),
        Command::Deposit {
            user: ALICE,
            asset: AssetId(2),
            amount: 500_000 * ONE,
            tx_hash: "fund-usdt".into(),
            confirmations: 1,
            by: None,
        },
        Command::Deposit {
            user: ALICE,
            asset: AssetId(1),
            amount: 50 * ONE,
            tx_hash: "fund-btc".into(),
            confirmations: 1,
            by: None,
        },
        Command::SetKycLevel {
            user: ALICE,
            level: 2,
            by: None,
        },
        // Rules 1..=4.
        rule(
            "block big BTC orders",
            RiskRuleType::OrderNotional,
            r#"{"max_notional":"100000","symbol":"BTCUSDT"}"#,
            RiskAction::Block,
        ),
        rule(
            "watch orders",
            RiskRuleType::OrderNotional,
            r#"{"max_notional":"50000"}"#,
            RiskAction::Alert,
        ),
        rule(
            "large BTC",
            RiskRuleType::LargeWithdrawal,
            r#"{"asset":"BTC","threshold":"10"}"#,
            RiskAction::Block,
        ),
        rule(
            "logins",
            RiskRuleType::LoginFailure,
            r#"{"max_failures":2}"#,
            RiskAction::Alert,
        ),
        // Events 1 (rule 1, BLOCK) and 2 (rule 2, ALERT): refused; event 3
        // (rule 2): accepted.
        buy(4 * ONE),
        buy(2 * ONE),
        // Event 4: refused withdrawal.
        Command::RequestWithdrawal {
            user: ALICE,
            asset: AssetId(1),
            amount: 12 * ONE,
            address: "bc1q-risk".into(),
        },
        // Event 5: the second failed login.
        Command::RecordLogin {
            user: ALICE,
            success: false,
        },
        Command::RecordLogin {
            user: ALICE,
            success: false,
        },
        set_status(1, RiskEventStatus::Acknowledged, "looking"),
        set_status(1, RiskEventStatus::Resolved, "customer called"),
        set_status(2, RiskEventStatus::Dismissed, ""),
        set_status(4, RiskEventStatus::Acknowledged, "pending review"),
        Command::UpdateRiskRule {
            by: ROOT,
            rule: 2,
            changes: RiskRuleChanges {
                parameters: Some(r#"{"max_notional":"75000"}"#.into()),
                level: Some(RiskLevel::Critical),
                enabled: Some(false),
                ..Default::default()
            },
        },
        // Rule 3 deleted; rule 5 takes its name.
        Command::DeleteRiskRule { by: ROOT, rule: 3 },
        rule(
            "large BTC",
            RiskRuleType::LargeWithdrawal,
            r#"{"asset":"BTC","threshold":"20"}"#,
            RiskAction::Alert,
        ),
        rule(
            "notes",
            RiskRuleType::Custom,
            r#"{"k":[1,2]}"#,
            RiskAction::Alert,
        ),
        // By an admin: the audit rows name them.
        Command::GrantRole {
            user: ALICE,
            role: roles::AUDITOR,
            by: Some(ROOT),
        },
        Command::RevokeRole {
            user: ALICE,
            role: roles::AUDITOR,
            by: Some(ROOT),
        },
        // Format 8 admin commands name their admin too (the bootstrap
        // above names nobody). The lock cancels Alice's resting bid.
        Command::Deposit {
            user: ALICE,
            asset: AssetId(1),
            amount: ONE,
            tx_hash: "admin-btc".into(),
            confirmations: 1,
            by: Some(ROOT),
        },
        Command::UpdateAsset {
            asset: AssetId(1),
            spec: AssetSpec {
                name: "Bitcoin".into(),
                ..asset("BTC")
            },
            by: Some(ROOT),
        },
        Command::SetPairStatus {
            pair: PairId(1),
            status: PairStatus::Trading,
            by: Some(ROOT),
        },
        Command::SetUserStatus {
            user: ALICE,
            status: UserStatus::Suspended,
            cancel_orders: true,
            by: Some(ROOT),
        },
    ]
}

/// Apply the commands to an engine (every one must pass, or be the
/// refusals the comments above expect) and journal them.
fn write_journal(data: &DataDir, cmds: &[Command]) {
    let mut e = Engine::new();
    let mut out = Vec::new();
    for (i, c) in cmds.iter().enumerate() {
        out.clear();
        e.apply(i as u64 + 1, BASE_MS + i as u64 * 1_000, c, &mut out);
        if let Some(Event::Rejected { reason }) = out.first() {
            assert!(
                matches!(
                    reason,
                    RejectReason::RiskOrderNotional | RejectReason::RiskLargeWithdrawal
                ),
                "{c:?}: {reason:?}"
            );
        }
    }
    assert_eq!(e.next_risk_ids(), (7, 6), "rules and events as planned");
    data.create().unwrap();
    let (mut w, _) = journal::Writer::open(journal::JournalConfig::new(data.journal())).unwrap();
    let mut buf = Vec::new();
    for (i, c) in cmds.iter().enumerate() {
        buf.clear();
        c.encode_into(&mut buf);
        w.append((BASE_MS + i as u64 * 1_000) * 1_000_000, &buf)
            .unwrap();
    }
    w.commit().unwrap();
    w.close().unwrap();
}

fn run_writer(url: &str, data: &DataDir, max_batch: usize, to: u64) {
    let cfg = WriterConfig {
        max_batch,
        min_batch: 1,
        max_backoff: Duration::from_millis(300),
        ..WriterConfig::new(url, data.clone())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(PersisterStatus::default());
    let h = writer::spawn(cfg, Follow::Poll, stop.clone(), status.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while status.written_seq.load(Ordering::Relaxed) < to {
        assert!(!h.is_finished(), "writer ended: {:?}", h.join().unwrap());
        assert!(Instant::now() < deadline, "writer too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Release);
    h.join().unwrap().unwrap();
}

async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

async fn json_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Value> {
    rows(c, sql)
        .await
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risk_rules_and_events_land_in_postgres() {
    let cmds = commands();
    let n = cmds.len() as u64;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    write_journal(&data, &cmds);

    let mut dumps = Vec::new();
    for max_batch in [3, 1_000] {
        let db = TestDb::create_migrated().await;
        let url = db.url().to_string();
        let d2 = data.clone();
        tokio::task::spawn_blocking(move || run_writer(&url, &d2, max_batch, n))
            .await
            .unwrap();
        let c = db.client();
        c.batch_execute("SET TimeZone = 'UTC'").await.unwrap();

        let rules = json_rows(
            c,
            "SELECT row_to_json(r)::text FROM (SELECT id, name, type, parameters, is_active,
                description, version FROM risk_rules ORDER BY id) r",
        )
        .await;
        let brief: Vec<(u64, &str, &str, bool, u64)> = rules
            .iter()
            .map(|r| {
                (
                    r["id"].as_u64().unwrap(),
                    r["name"].as_str().unwrap(),
                    r["type"].as_str().unwrap(),
                    r["is_active"].as_bool().unwrap(),
                    r["version"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            brief,
            vec![
                (1, "block big BTC orders", "ORDER_NOTIONAL", true, 1),
                (2, "watch orders", "ORDER_NOTIONAL", false, 2),
                (3, "large BTC [deleted 3]", "LARGE_WITHDRAWAL", false, 2),
                (4, "logins", "LOGIN_FAILURE", true, 1),
                (5, "large BTC", "LARGE_WITHDRAWAL", true, 1),
                (6, "notes", "CUSTOM", true, 1),
            ],
            "max_batch {max_batch}"
        );
        assert_eq!(rules[1]["parameters"]["max_notional"], "75000");
        assert_eq!(rules[5]["parameters"]["k"][1], 2);
        assert_eq!(rules[0]["description"], "block big BTC orders rule");

        let events = json_rows(
            c,
            "SELECT row_to_json(e)::text FROM (SELECT id, user_id, rule_id, type, level, details,
                status, resolved_by, created_at, updated_at, resolved_at FROM risk_events
                ORDER BY id) e",
        )
        .await;
        type EventBrief<'a> = (u64, u64, &'a str, &'a str, Option<u64>, bool);
        let brief: Vec<EventBrief> = events
            .iter()
            .map(|e| {
                (
                    e["id"].as_u64().unwrap(),
                    e["rule_id"].as_u64().unwrap(),
                    e["type"].as_str().unwrap(),
                    e["status"].as_str().unwrap(),
                    e["resolved_by"].as_u64(),
                    e["resolved_at"].is_string(),
                )
            })
            .collect();
        assert_eq!(
            brief,
            vec![
                (1, 1, "ORDER_NOTIONAL", "RESOLVED", Some(ROOT.0), true),
                (2, 2, "ORDER_NOTIONAL", "DISMISSED", Some(ROOT.0), true),
                (3, 2, "ORDER_NOTIONAL", "OPEN", None, false),
                (4, 3, "LARGE_WITHDRAWAL", "ACKNOWLEDGED", None, false),
                (5, 4, "LOGIN_FAILURE", "OPEN", None, false),
            ],
            "max_batch {max_batch}"
        );
        assert!(events.iter().all(|e| e["user_id"] == ALICE.0));
        assert!(events.iter().all(|e| e["level"] == "HIGH"));
        let d1 = &events[0]["details"];
        assert_eq!(d1["notional"], "120000.00000000");
        assert_eq!(d1["blocked"], true);
        assert_eq!(d1["action"], "BLOCK");
        assert_eq!(d1["acknowledged_note"], "looking");
        assert_eq!(d1["resolved_note"], "customer called");
        assert_eq!(d1["resolved_by"], ROOT.0);
        assert_eq!(events[1]["details"]["action"], "ALERT");
        assert_eq!(events[1]["details"]["dismissed_note"], "");
        assert_eq!(events[2]["details"]["order_id"], 1);
        assert_eq!(events[3]["details"]["amount"], "12.00000000");
        assert_eq!(events[3]["details"]["acknowledged_by"], ROOT.0);
        assert_eq!(events[4]["details"]["failed_logins"], 2);
        // Journal time, not the wall clock: event 3 (the 14th command).
        assert_eq!(
            events[2]["created_at"].as_str().unwrap()[..19],
            *"2024-03-10T00:00:13"
        );

        let audit = rows(
            c,
            "SELECT action || ' ' || resource_type || ' ' || coalesce(resource_id, '-') || ' '
                || coalesce(user_id::text, '-') FROM audit_logs
                WHERE resource_type IN ('RISK_RULE', 'RISK_EVENT', 'ROLE') ORDER BY id",
        )
        .await;
        assert_eq!(
            audit,
            vec![
                "risk_rule.create RISK_RULE 1 1",
                "risk_rule.create RISK_RULE 2 1",
                "risk_rule.create RISK_RULE 3 1",
                "risk_rule.create RISK_RULE 4 1",
                "risk_event.acknowledge RISK_EVENT 1 1",
                "risk_event.resolve RISK_EVENT 1 1",
                "risk_event.dismiss RISK_EVENT 2 1",
                "risk_event.acknowledge RISK_EVENT 4 1",
                "risk_rule.update RISK_RULE 2 1",
                "risk_rule.delete RISK_RULE 3 1",
                "risk_rule.create RISK_RULE 5 1",
                "risk_rule.create RISK_RULE 6 1",
                "user.grant_role ROLE 2 1",
                "user.revoke_role ROLE 2 1",
            ]
        );
        let audit = rows(
            c,
            "SELECT action || ' ' || resource_type || ' ' || coalesce(resource_id, '-') || ' '
                || coalesce(user_id::text, '-') FROM audit_logs
                WHERE resource_type NOT IN ('RISK_RULE', 'RISK_EVENT', 'ROLE') ORDER BY id",
        )
        .await;
        assert_eq!(
            audit,
            vec![
                "asset.add ASSET BTC -",
                "asset.add ASSET USDT -",
                "pair.add TRADING_PAIR BTCUSDT -",
                "deposit.post DEPOSIT 2 -",
                "deposit.post DEPOSIT 2 -",
                "user.set_kyc_level KYC 2 -",
                "deposit.post DEPOSIT 2 1",
                "asset.update ASSET 1 1",
                "pair.set_status TRADING_PAIR 1 1",
                "user.set_status USER 2 1",
            ]
        );
        // The lock canceled Alice's one open order, in the same record.
        let alice_orders = rows(
            c,
            "SELECT status FROM orders WHERE user_id = 2 AND status NOT IN ('REJECTED')
                ORDER BY id",
        )
        .await;
        assert_eq!(alice_orders, vec!["CANCELED"]);
        let roles = rows(
            c,
            "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id
                WHERE ur.user_id = 2 ORDER BY 1",
        )
        .await;
        assert_eq!(roles, vec!["TRADER"]);
        let outbox = rows(
            c,
            "SELECT event_type FROM outbox_events WHERE aggregate_type = 'RISK' ORDER BY id",
        )
        .await;
        assert_eq!(outbox.len(), 9, "{outbox:?}");

        let dump = rows(c, "SELECT r::text FROM risk_rules r ORDER BY id").await;
        let dump_events = rows(c, "SELECT e::text FROM risk_events e ORDER BY id").await;
        dumps.push((dump, dump_events));
        db.drop_db().await;
    }
    assert_eq!(dumps[0], dumps[1], "small batches and one batch differ");
}
