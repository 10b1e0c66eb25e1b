//! Risk rules and risk events in the engine: every evaluated rule type
//! (ORDER_NOTIONAL, LARGE_WITHDRAWAL, LOGIN_FAILURE, SELF_TRADE) with ALERT
//! and BLOCK, rule CRUD and its validation, event status changes, role
//! grants and revokes, and the state's persistence (snapshot, state hash,
//! journal encoding). Every command also goes through the reference model,
//! which must emit the same events.

mod common;
use common::*;
use engine::reference::ReferenceEngine;
use engine::*;

/// The harness plus the reference model fed the same commands.
struct Both {
    h: Harness,
    r: ReferenceEngine,
    admin: UserId,
}

impl Both {
    fn new() -> Both {
        let h = Harness::new();
        let mut r = ReferenceEngine::new();
        // Replay the harness's setup into the reference.
        let setup: Vec<Command> = vec![
            Command::AddAsset {
                spec: asset("BTC"),
                by: None,
            },
            Command::AddAsset {
                spec: asset("ETH"),
                by: None,
            },
            Command::AddAsset {
                spec: asset("USDT"),
                by: None,
            },
            Command::AddPair {
                spec: Box::new(pair("BTCUSDT", BTC, USDT, 1_000_000, 1_000, 5 * ONE)),
                by: None,
            },
            Command::AddPair {
                spec: Box::new(pair("ETHUSDT", ETH, USDT, 1_000_000, 10_000, 5 * ONE)),
                by: None,
            },
            Command::AddPair {
                spec: Box::new(pair("ETHBTC", ETH, BTC, 100, 100_000, 10_000)),
                by: None,
            },
        ];
        let mut out = Vec::new();
        for (i, c) in setup.iter().enumerate() {
            r.apply(i as u64 + 1, h.ts - 5 + i as u64, c, &mut out);
        }
        assert_eq!(h.seq, setup.len() as u64);
        let mut b = Both {
            h,
            r,
            admin: UserId(0),
        };
        b.admin = b.user_with("root", roles::ADMIN);
        b
    }

    fn run(&mut self, cmd: Command) -> Vec<Event> {
        let ev = self.h.run(cmd.clone());
        let mut out = Vec::new();
        self.r.apply(self.h.seq, self.h.ts, &cmd, &mut out);
        assert_eq!(ev, out, "engine and reference differ on {cmd:?}");
        ev
    }

    fn ok(&mut self, cmd: Command) -> Vec<Event> {
        let ev = self.run(cmd.clone());
        if let Some(Event::Rejected { reason }) = ev.first() {
            panic!("{cmd:?} rejected: {reason:?}");
        }
        ev
    }

    /// A refusal that changed nothing at all.
    fn reject(&mut self, cmd: Command) -> RejectReason {
        let hash = self.h.e.state_hash();
        match self.run(cmd.clone()).as_slice() {
            [Event::Rejected { reason }] => {
                assert_eq!(hash, self.h.e.state_hash(), "{cmd:?} changed state");
                *reason
            }
            other => panic!("{cmd:?} not rejected: {other:?}"),
        }
    }

    fn user_with(&mut self, name: &str, roles: u32) -> UserId {
        self.ok(Command::CreateUser {
            username: name.into(),
            email: format!("{name}@example.com"),
            password_hash: "$argon2id$v=19$test".into(),
            roles,
        });
        self.h.e.user_by_name(name).unwrap().id
    }

    fn user(&mut self, name: &str) -> UserId {
        self.user_with(name, roles::TRADER)
    }

    fn fund(&mut self, user: UserId, asset: AssetId, amount: u64) {
        let tx = format!("tx-{}-{}", self.h.seq, user);
        self.ok(Command::Deposit {
            user,
            asset,
            amount,
            tx_hash: tx,
            confirmations: 100,
            by: None,
        });
    }

    fn rule(
        &mut self,
        name: &str,
        kind: RiskRuleType,
        parameters: &str,
        action: RiskAction,
    ) -> RiskRule {
        let ev = self.ok(create(self.admin, name, kind, parameters, action));
        match ev.as_slice() {
            [Event::RiskRuleCreated(r)] => (**r).clone(),
            other => panic!("{other:?}"),
        }
    }
}

fn create(
    by: UserId,
    name: &str,
    kind: RiskRuleType,
    parameters: &str,
    action: RiskAction,
) -> Command {
    Command::CreateRiskRule {
        by,
        name: name.into(),
        kind,
        parameters: parameters.into(),
        level: RiskLevel::High,
        action,
        enabled: true,
        description: String::new(),
    }
}

fn raised(ev: &[Event]) -> Vec<RiskEvent> {
    ev.iter()
        .filter_map(|e| match e {
            Event::RiskEventRaised(r) => Some((**r).clone()),
            _ => None,
        })
        .collect()
}

fn details(ev: &RiskEvent) -> serde_json::Value {
    serde_json::from_str(&ev.details).expect("details are JSON")
}

const PRICE_30K: u64 = 3_000_000; // 30000.00 in ticks of 0.01

#[test]
fn order_notional_block_refuses_the_order_and_raises_an_event() {
    let mut b = Both::new();
    let alice = b.user("alice");
    b.fund(alice, USDT, 200_000 * ONE);
    let rule = b.rule(
        "big BTC orders",
        RiskRuleType::OrderNotional,
        r#"{"max_notional":"50000","symbol":"BTCUSDT"}"#,
        RiskAction::Block,
    );
    assert_eq!(rule.id, 1);
    assert_eq!(
        rule.limit,
        RiskLimit::OrderNotional {
            pair: Some(BTCUSDT),
            max_e18: 50_000 * 10u128.pow(18)
        }
    );
    let before = b.h.bal(alice, USDT);
    let next_order = b.h.e.next_order_id();
    // 2 BTC at 30000 = 60000 USDT > 50000.
    let ev = b.run(Command::PlaceOrder(limit(
        alice,
        BTCUSDT,
        Side::Buy,
        PRICE_30K,
        2 * ONE,
    )));
    assert!(matches!(
        ev[0],
        Event::Rejected {
            reason: RejectReason::RiskOrderNotional
        }
    ));
    assert_eq!(ev.len(), 2, "{ev:?}");
    let r = &raised(&ev)[0];
    assert_eq!((r.id, r.rule, r.user), (1, rule.id, alice));
    assert_eq!(
        (r.kind, r.level, r.action, r.status),
        (
            RiskRuleType::OrderNotional,
            RiskLevel::High,
            RiskAction::Block,
            RiskEventStatus::Open
        )
    );
    let d = details(r);
    assert_eq!(d["symbol"], "BTCUSDT");
    assert_eq!(d["notional"], "60000.00000000");
    assert_eq!(d["max_notional"], "50000");
    assert_eq!(d["blocked"], true);
    assert!(d.get("order_id").is_none());
    // Nothing else changed: no freeze, no order id used.
    assert_eq!(b.h.bal(alice, USDT), before);
    assert_eq!(b.h.e.next_order_id(), next_order);
    assert_eq!(b.h.e.open_risk_events().count(), 1);
    // Exactly at the maximum passes; another pair is not covered.
    let ev = b.ok(Command::PlaceOrder(limit(
        alice,
        BTCUSDT,
        Side::Buy,
        5_000_000,
        ONE,
    )));
    assert!(raised(&ev).is_empty());
    let ev = b.ok(Command::PlaceOrder(limit(
        alice,
        ETHUSDT,
        Side::Buy,
        1_000_000,
        10 * ONE,
    )));
    assert!(raised(&ev).is_empty(), "100000 USDT on ETHUSDT: {ev:?}");
    // The new part of a cancel-replace is checked like a placement.
    let ev = b.run(Command::CancelReplace {
        target: OrderRef::Id(OrderId(1)),
        mode: CancelReplaceMode::StopOnFailure,
        new: limit(alice, BTCUSDT, Side::Buy, PRICE_30K, 3 * ONE),
    });
    let n = ev.len();
    assert!(
        matches!(
            ev[n - 2],
            Event::Rejected {
                reason: RejectReason::RiskOrderNotional
            }
        ),
        "{ev:?}"
    );
    assert!(matches!(ev[n - 1], Event::RiskEventRaised(_)));
    // A disabled rule is not evaluated.
    b.ok(Command::UpdateRiskRule {
        by: b.admin,
        rule: rule.id,
        changes: RiskRuleChanges {
            enabled: Some(false),
            ..Default::default()
        },
    });
    let ev = b.ok(Command::PlaceOrder(limit(
        alice,
        BTCUSDT,
        Side::Buy,
        PRICE_30K,
        2 * ONE,
    )));
    assert!(raised(&ev).is_empty());
}

#[test]
fn order_notional_alert_lets_the_order_through_with_an_event() {
    let mut b = Both::new();
    let (alice, bob) = (b.user("alice"), b.user("bob"));
    b.fund(alice, USDT, 500_000 * ONE);
    b.fund(bob, BTC, 10 * ONE);
    // No symbol: every pair, in its quote asset.
    let rule = b.rule(
        "alert",
        RiskRuleType::OrderNotional,
        r#"{"max_notional":"40000"}"#,
        RiskAction::Alert,
    );
    let ev = b.ok(Command::PlaceOrder(limit(
        bob,
        BTCUSDT,
        Side::Sell,
        PRICE_30K,
        2 * ONE,
    )));
    let r = &raised(&ev)[0];
    assert!(matches!(ev.last(), Some(Event::RiskEventRaised(_))));
    assert_eq!(
        (r.rule, r.user, r.action),
        (rule.id, bob, RiskAction::Alert)
    );
    let d = details(r);
    assert_eq!(d["blocked"], false);
    assert_eq!(d["order_id"], accepted_id(&ev).0);
    assert_eq!(d["side"], "SELL");
    // Market by quote amount: the quote amount is the notional.
    let ev = b.ok(Command::PlaceOrder(market(
        alice,
        BTCUSDT,
        Side::Buy,
        0,
        45_000 * ONE,
    )));
    assert_eq!(details(&raised(&ev)[0])["notional"], "45000.00000000");
    assert!(!trades(&ev).is_empty());
    // Market by quantity: at the last trade price (30000) x 1.5.
    b.ok(Command::PlaceOrder(limit(
        bob,
        BTCUSDT,
        Side::Sell,
        PRICE_30K,
        2 * ONE,
    )));
    let ev = b.ok(Command::PlaceOrder(market(
        alice,
        BTCUSDT,
        Side::Buy,
        150_000_000,
        0,
    )));
    assert_eq!(details(&raised(&ev)[0])["notional"], "45000.00000000");
    // Below the maximum: nothing.
    let ev = b.ok(Command::PlaceOrder(limit(
        alice,
        BTCUSDT,
        Side::Buy,
        PRICE_30K,
        ONE,
    )));
    assert!(raised(&ev).is_empty());
    // Two matching rules: two events; one BLOCK among them refuses.
    b.rule(
        "block",
        RiskRuleType::OrderNotional,
        r#"{"max_notional":"100000","symbol":"BTCUSDT"}"#,
        RiskAction::Block,
    );
    let ev = b.run(Command::PlaceOrder(limit(
        alice,
        BTCUSDT,
        Side::Buy,
        PRICE_30K,
        4 * ONE,
    )));
    assert!(matches!(ev[0], Event::Rejected { .. }));
    let rs = raised(&ev);
    assert_eq!(rs.len(), 2);
    assert_eq!(
        (rs[0].action, rs[1].action),
        (RiskAction::Alert, RiskAction::Block)
    );
    assert_eq!(details(&rs[0])["blocked"], true);
}

#[test]
fn large_withdrawal_alert_and_block() {
    let mut b = Both::new();
    let alice = b.user("alice");
    b.fund(alice, BTC, 100 * ONE);
    b.ok(Command::SetKycLevel {
        user: alice,
        level: 2,
        by: None,
    });
    let withdraw = |amount| Command::RequestWithdrawal {
        user: alice,
        asset: BTC,
        amount,
        address: "bc1qexample".into(),
    };
    let alert = b.rule(
        "large BTC",
        RiskRuleType::LargeWithdrawal,
        r#"{"asset":"BTC","threshold":"10"}"#,
        RiskAction::Alert,
    );
    // Below: nothing. At the threshold: an event, the withdrawal goes on.
    assert!(raised(&b.ok(withdraw(10 * ONE - 1))).is_empty());
    let ev = b.ok(withdraw(10 * ONE));
    let r = &raised(&ev)[0];
    assert_eq!(
        (r.rule, r.user, r.kind),
        (alert.id, alice, RiskRuleType::LargeWithdrawal)
    );
    let d = details(r);
    assert_eq!(d["amount"], "10.00000000");
    assert_eq!(d["threshold"], "10.00000000");
    assert_eq!(d["withdrawal_id"], 2);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::WithdrawalUpdated(w) if w.id == 2)));
    // BLOCK at 20: refused with the event, nothing frozen.
    let block = b.rule(
        "huge BTC",
        RiskRuleType::LargeWithdrawal,
        r#"{"asset":"BTC","threshold":"20"}"#,
        RiskAction::Block,
    );
    let before = b.h.bal(alice, BTC);
    let ev = b.run(withdraw(25 * ONE));
    assert!(matches!(
        ev[0],
        Event::Rejected {
            reason: RejectReason::RiskLargeWithdrawal
        }
    ));
    let rs = raised(&ev);
    assert_eq!(
        rs.iter().map(|r| r.rule).collect::<Vec<_>>(),
        vec![alert.id, block.id]
    );
    assert!(rs.iter().all(|r| details(r)["blocked"] == true));
    assert_eq!(b.h.bal(alice, BTC), before);
    assert!(b.h.e.withdrawal(3).is_none());
    // Another asset is not covered; an unknown asset or too many decimals
    // are refused at creation.
    b.fund(alice, ETH, 100 * ONE);
    assert!(raised(&b.ok(Command::RequestWithdrawal {
        user: alice,
        asset: ETH,
        amount: 50 * ONE,
        address: "0xabc".into(),
    }))
    .is_empty());
    assert_eq!(
        b.reject(create(
            b.admin,
            "x",
            RiskRuleType::LargeWithdrawal,
            r#"{"asset":"DOGE","threshold":"1"}"#,
            RiskAction::Alert
        )),
        RejectReason::UnknownAsset
    );
    assert_eq!(
        b.reject(create(
            b.admin,
            "x",
            RiskRuleType::LargeWithdrawal,
            r#"{"asset":"BTC","threshold":"0.000000001"}"#,
            RiskAction::Alert
        )),
        RejectReason::InvalidRiskRule
    );
}

#[test]
fn login_failure_raises_once_per_streak() {
    let mut b = Both::new();
    let alice = b.user("alice");
    let rule = b.rule(
        "3 bad passwords",
        RiskRuleType::LoginFailure,
        r#"{"max_failures":3}"#,
        RiskAction::Alert,
    );
    let login = |success| Command::RecordLogin {
        user: alice,
        success,
    };
    for _ in 0..2 {
        assert!(raised(&b.ok(login(false))).is_empty());
    }
    let ev = b.ok(login(false));
    assert!(matches!(
        ev[0],
        Event::LoginRecorded {
            failed_logins: 3,
            ..
        }
    ));
    let r = &raised(&ev)[0];
    assert_eq!(
        (r.rule, r.user, r.action),
        (rule.id, alice, RiskAction::Alert)
    );
    assert_eq!(details(r)["failed_logins"], 3);
    assert!(raised(&b.ok(login(false))).is_empty(), "4th: same streak");
    b.ok(login(true));
    for _ in 0..2 {
        assert!(raised(&b.ok(login(false))).is_empty());
    }
    assert_eq!(raised(&b.ok(login(false))).len(), 1, "a new streak");
    // BLOCK means nothing for a login: refused at creation.
    assert_eq!(
        b.reject(create(
            b.admin,
            "x",
            RiskRuleType::LoginFailure,
            r#"{"max_failures":3}"#,
            RiskAction::Block
        )),
        RejectReason::InvalidRiskRule
    );
}

#[test]
fn self_trade_prevention_expiry_raises_an_event() {
    let mut b = Both::new();
    let alice = b.user("alice");
    b.fund(alice, BTC, 10 * ONE);
    b.fund(alice, USDT, 100_000 * ONE);
    // Without a rule, no event.
    b.ok(Command::PlaceOrder(limit(
        alice,
        BTCUSDT,
        Side::Sell,
        PRICE_30K,
        ONE,
    )));
    let ev = b.ok(Command::PlaceOrder(limit(
        alice,
        BTCUSDT,
        Side::Buy,
        PRICE_30K,
        ONE,
    )));
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::OrderDone {
            status: OrderStatus::ExpiredInMatch,
            ..
        }
    )));
    assert!(raised(&ev).is_empty());
    let rule = b.rule(
        "self trades",
        RiskRuleType::SelfTrade,
        r#"{"symbol":"BTCUSDT"}"#,
        RiskAction::Alert,
    );
    // Two of her asks expire in one command: one event counting both.
    for p in [PRICE_30K, PRICE_30K + 100] {
        b.ok(Command::PlaceOrder(limit(
            alice,
            BTCUSDT,
            Side::Sell,
            p,
            ONE,
        )));
    }
    let ev = b.ok(Command::PlaceOrder(limit(
        alice,
        BTCUSDT,
        Side::Buy,
        PRICE_30K + 100,
        2 * ONE,
    )));
    let rs = raised(&ev);
    assert_eq!(rs.len(), 1, "{ev:?}");
    assert_eq!((rs[0].rule, rs[0].user), (rule.id, alice));
    let d = details(&rs[0]);
    assert_eq!(d["stp_expiries"], 2);
    assert_eq!(d["stp_mode"], "EXPIRE_MAKER");
    assert!(matches!(ev.last(), Some(Event::RiskEventRaised(_))));
    // The rule names BTCUSDT: ETHBTC self-trades raise nothing.
    b.fund(alice, ETH, 10 * ONE);
    b.ok(Command::PlaceOrder(limit(
        alice,
        ETHBTC,
        Side::Sell,
        66_000,
        ONE,
    )));
    let ev = b.ok(Command::PlaceOrder(NewOrder {
        stp: StpMode::ExpireTaker,
        ..limit(alice, ETHBTC, Side::Buy, 66_000, ONE)
    }));
    assert!(raised(&ev).is_empty());
    assert_eq!(
        b.reject(create(
            b.admin,
            "x",
            RiskRuleType::SelfTrade,
            "{}",
            RiskAction::Block
        )),
        RejectReason::InvalidRiskRule
    );
}

#[test]
fn rules_are_validated_updated_and_deleted() {
    let mut b = Both::new();
    let admin = b.admin;
    let alice = b.user("alice");
    use RiskRuleType::*;
    let cases: Vec<(Command, RejectReason)> = vec![
        (
            create(admin, "", Custom, "{}", RiskAction::Alert),
            RejectReason::InvalidRiskRule,
        ),
        (
            create(admin, "a[1]", Custom, "{}", RiskAction::Alert),
            RejectReason::InvalidRiskRule,
        ),
        (
            create(admin, "x", Custom, "[]", RiskAction::Alert),
            RejectReason::InvalidRiskRule,
        ),
        (
            create(admin, "x", OrderSize, "{}", RiskAction::Alert),
            RejectReason::InvalidRiskRule,
        ),
        (
            create(admin, "x", Custom, "{}", RiskAction::Block),
            RejectReason::InvalidRiskRule,
        ),
        (
            create(
                admin,
                "x",
                OrderNotional,
                r#"{"max_notional":"1e30"}"#,
                RiskAction::Alert,
            ),
            RejectReason::InvalidRiskRule,
        ),
        (
            create(
                admin,
                "x",
                OrderNotional,
                r#"{"max_notional":"1","symbol":"XYZUSDT"}"#,
                RiskAction::Alert,
            ),
            RejectReason::UnknownPair,
        ),
        (
            create(UserId(0), "x", Custom, "{}", RiskAction::Alert),
            RejectReason::UnknownUser,
        ),
        (
            create(UserId(99), "x", Custom, "{}", RiskAction::Alert),
            RejectReason::UnknownUser,
        ),
        (
            Command::CreateRiskRule {
                by: admin,
                name: "x".into(),
                kind: Custom,
                parameters: "{}".into(),
                level: RiskLevel::Low,
                action: RiskAction::Alert,
                enabled: true,
                description: "a\u{0}b".into(),
            },
            RejectReason::InvalidRiskRule,
        ),
    ];
    for (cmd, want) in cases {
        assert_eq!(b.reject(cmd.clone()), want, "{cmd:?}");
    }
    let custom = b.rule("Custom rule", Custom, r#"{"k":[1,2]}"#, RiskAction::Alert);
    assert_eq!(custom.limit, RiskLimit::None);
    assert_eq!(
        b.reject(create(
            admin,
            "custom RULE",
            Custom,
            "{}",
            RiskAction::Alert
        )),
        RejectReason::RiskRuleNameTaken
    );
    let notional = b.rule(
        "n",
        OrderNotional,
        r#"{"max_notional":"10"}"#,
        RiskAction::Alert,
    );
    let update = |rule, changes| Command::UpdateRiskRule {
        by: admin,
        rule,
        changes,
    };
    assert_eq!(
        b.reject(update(notional.id, RiskRuleChanges::default())),
        RejectReason::InvalidRiskRule
    );
    assert_eq!(
        b.reject(update(
            99,
            RiskRuleChanges {
                enabled: Some(false),
                ..Default::default()
            }
        )),
        RejectReason::UnknownRiskRule
    );
    assert_eq!(
        b.reject(update(
            notional.id,
            RiskRuleChanges {
                name: Some("CUSTOM rule".into()),
                ..Default::default()
            }
        )),
        RejectReason::RiskRuleNameTaken
    );
    assert_eq!(
        b.reject(update(
            notional.id,
            RiskRuleChanges {
                parameters: Some(r#"{"max_notional":"-1"}"#.into()),
                ..Default::default()
            }
        )),
        RejectReason::InvalidRiskRule
    );
    assert_eq!(
        b.reject(update(
            custom.id,
            RiskRuleChanges {
                action: Some(RiskAction::Block),
                ..Default::default()
            }
        )),
        RejectReason::InvalidRiskRule
    );
    let ev = b.ok(update(
        notional.id,
        RiskRuleChanges {
            name: Some("notional".into()),
            parameters: Some(r#"{"max_notional":"20","symbol":"ETHBTC"}"#.into()),
            level: Some(RiskLevel::Critical),
            action: Some(RiskAction::Block),
            description: Some("ETHBTC orders above 20 BTC".into()),
            enabled: None,
        },
    ));
    let Event::RiskRuleUpdated(r) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (r.name.as_str(), r.level, r.action, r.version, r.enabled),
        ("notional", RiskLevel::Critical, RiskAction::Block, 2, true)
    );
    assert_eq!(
        r.limit,
        RiskLimit::OrderNotional {
            pair: Some(ETHBTC),
            max_e18: 20 * 10u128.pow(18)
        }
    );
    // Delete: gone, its id never reused, its name free again.
    let ev = b.ok(Command::DeleteRiskRule {
        by: admin,
        rule: custom.id,
    });
    assert!(matches!(&ev[..], [Event::RiskRuleDeleted { rule, .. }] if *rule == custom.id));
    assert_eq!(
        b.reject(Command::DeleteRiskRule {
            by: admin,
            rule: custom.id
        }),
        RejectReason::UnknownRiskRule
    );
    let again = b.rule("Custom rule", Custom, "{}", RiskAction::Alert);
    assert_eq!(again.id, 3);
    assert_eq!(b.h.e.risk_rules().count(), 2);
    // A suspended staff member cannot change rules.
    b.ok(Command::SetUserStatus {
        user: alice,
        status: UserStatus::Suspended,
        cancel_orders: true,
        by: None,
    });
    assert_eq!(
        b.reject(Command::DeleteRiskRule {
            by: alice,
            rule: again.id
        }),
        RejectReason::UserSuspended
    );
}

#[test]
fn risk_events_are_acknowledged_resolved_and_dismissed() {
    let mut b = Both::new();
    let admin = b.admin;
    let alice = b.user("alice");
    b.rule(
        "logins",
        RiskRuleType::LoginFailure,
        r#"{"max_failures":1}"#,
        RiskAction::Alert,
    );
    for _ in 0..3 {
        b.ok(Command::RecordLogin {
            user: alice,
            success: false,
        });
        b.ok(Command::RecordLogin {
            user: alice,
            success: true,
        });
    }
    assert_eq!(b.h.e.open_risk_events().count(), 3);
    let set = |event, status, note: &str| Command::SetRiskEventStatus {
        by: admin,
        event,
        status,
        note: note.into(),
    };
    let ev = b.ok(set(1, RiskEventStatus::Acknowledged, "looking"));
    assert_eq!(
        ev,
        vec![Event::RiskEventStatusChanged {
            event: 1,
            user: alice,
            status: RiskEventStatus::Acknowledged,
            by: admin,
            note: "looking".into(),
            updated_ms: b.h.ts,
        }]
    );
    assert_eq!(
        b.reject(set(1, RiskEventStatus::Acknowledged, "")),
        RejectReason::InvalidRiskEventStatus
    );
    assert_eq!(
        b.reject(set(1, RiskEventStatus::Open, "")),
        RejectReason::InvalidRiskEventStatus
    );
    assert_eq!(
        b.reject(set(1, RiskEventStatus::Resolved, &"n".repeat(1025))),
        RejectReason::InvalidRiskEventStatus
    );
    b.ok(set(
        1,
        RiskEventStatus::Resolved,
        "user forgot the password",
    ));
    b.ok(set(2, RiskEventStatus::Dismissed, ""));
    for (id, want) in [
        (1, RejectReason::RiskEventClosed),
        (2, RejectReason::RiskEventClosed),
        (0, RejectReason::UnknownRiskEvent),
        (4, RejectReason::UnknownRiskEvent),
    ] {
        assert_eq!(b.reject(set(id, RiskEventStatus::Acknowledged, "")), want);
    }
    let open: Vec<(u64, RiskEventStatus)> =
        b.h.e.open_risk_events().map(|e| (e.id, e.status)).collect();
    assert_eq!(open, vec![(3, RiskEventStatus::Open)]);
    assert_eq!(
        b.reject(Command::SetRiskEventStatus {
            by: UserId(0),
            event: 3,
            status: RiskEventStatus::Resolved,
            note: String::new()
        }),
        RejectReason::UnknownUser
    );
}

#[test]
fn roles_are_granted_and_revoked_one_at_a_time() {
    let mut b = Both::new();
    let admin = b.admin;
    let alice = b.user("alice");
    let grant = |user, role| Command::GrantRole {
        user,
        role,
        by: Some(admin),
    };
    let revoke = |user, role| Command::RevokeRole {
        user,
        role,
        by: Some(admin),
    };
    for bad in [0, 3, 32, roles::ALL] {
        assert_eq!(b.reject(grant(alice, bad)), RejectReason::InvalidRole);
    }
    assert_eq!(
        b.reject(grant(UserId(0), roles::ADMIN)),
        RejectReason::UnknownUser
    );
    assert_eq!(
        b.reject(grant(UserId(77), roles::ADMIN)),
        RejectReason::UnknownUser
    );
    assert_eq!(
        b.reject(grant(alice, roles::TRADER)),
        RejectReason::RoleUnchanged
    );
    assert_eq!(
        b.reject(revoke(alice, roles::AUDITOR)),
        RejectReason::RoleUnchanged
    );
    // Two grants of different roles (what two admins may send at once)
    // both count.
    b.ok(grant(alice, roles::OPERATOR));
    let ev = b.ok(grant(alice, roles::AUDITOR));
    assert_eq!(
        ev,
        vec![Event::UserRolesChanged {
            user: alice,
            roles: roles::TRADER | roles::OPERATOR | roles::AUDITOR
        }]
    );
    b.ok(revoke(alice, roles::TRADER));
    assert_eq!(
        b.h.e.user(alice).unwrap().roles,
        roles::OPERATOR | roles::AUDITOR
    );
    assert_eq!(b.r.roles_of(alice), Some(roles::OPERATOR | roles::AUDITOR));
    // The last active admin keeps ADMIN; with a second one it may go, and
    // a suspended admin does not count.
    assert_eq!(
        b.reject(revoke(admin, roles::ADMIN)),
        RejectReason::LastActiveAdmin
    );
    b.ok(grant(alice, roles::ADMIN));
    b.ok(Command::SetUserStatus {
        user: alice,
        status: UserStatus::Suspended,
        cancel_orders: true,
        by: None,
    });
    assert_eq!(
        b.reject(revoke(admin, roles::ADMIN)),
        RejectReason::LastActiveAdmin
    );
    b.ok(revoke(alice, roles::ADMIN));
    b.ok(grant(alice, roles::ADMIN));
    b.ok(Command::SetUserStatus {
        user: alice,
        status: UserStatus::Active,
        cancel_orders: true,
        by: None,
    });
    b.ok(revoke(admin, roles::ADMIN));
    assert_eq!(
        b.reject(revoke(alice, roles::ADMIN)),
        RejectReason::LastActiveAdmin
    );
}

#[test]
fn risk_state_survives_snapshots_and_is_in_the_state_hash() {
    let mut b = Both::new();
    let alice = b.user("alice");
    b.fund(alice, USDT, 100_000 * ONE);
    let rule = b.rule(
        "n",
        RiskRuleType::OrderNotional,
        r#"{"max_notional":"1000"}"#,
        RiskAction::Alert,
    );
    b.rule(
        "w",
        RiskRuleType::LargeWithdrawal,
        r#"{"asset":"USDT","threshold":"5000"}"#,
        RiskAction::Block,
    );
    b.ok(Command::PlaceOrder(limit(
        alice,
        BTCUSDT,
        Side::Buy,
        PRICE_30K,
        ONE,
    )));
    b.ok(Command::SetRiskEventStatus {
        by: b.admin,
        event: 1,
        status: RiskEventStatus::Acknowledged,
        note: "seen".into(),
    });
    let hash = b.h.e.state_hash();
    let mut restored = Engine::from_snapshot(&b.h.e.snapshot_bytes()).unwrap();
    assert_eq!(restored.state_hash(), hash);
    assert_eq!(
        restored.risk_rules().collect::<Vec<_>>(),
        b.h.e.risk_rules().collect::<Vec<_>>()
    );
    assert_eq!(restored.open_risk_events().next().unwrap().note, "seen");
    // The restored engine evaluates the same rules with the same counters.
    let cmd = Command::PlaceOrder(limit(alice, BTCUSDT, Side::Buy, PRICE_30K, ONE));
    let ev = b.ok(cmd.clone());
    let mut out = Vec::new();
    restored.apply(b.h.seq, b.h.ts, &cmd, &mut out);
    assert_eq!(out, ev);
    assert_eq!(raised(&ev)[0].id, 2);
    // Toggling a rule changes the hash; toggling back restores it.
    let h0 = b.h.e.state_hash();
    let admin = b.admin;
    let toggle = |on| Command::UpdateRiskRule {
        by: admin,
        rule: rule.id,
        changes: RiskRuleChanges {
            enabled: Some(on),
            ..Default::default()
        },
    };
    b.ok(toggle(false));
    assert_ne!(b.h.e.state_hash(), h0);
}

#[test]
fn new_commands_round_trip_through_the_journal_encoding() {
    let cmds = vec![
        create(
            UserId(1),
            "r",
            RiskRuleType::Custom,
            "{}",
            RiskAction::Alert,
        ),
        Command::UpdateRiskRule {
            by: UserId(1),
            rule: 7,
            changes: RiskRuleChanges {
                name: Some("x".into()),
                parameters: None,
                level: Some(RiskLevel::Low),
                action: None,
                enabled: Some(false),
                description: Some(String::new()),
            },
        },
        Command::DeleteRiskRule {
            by: UserId(1),
            rule: 7,
        },
        Command::SetRiskEventStatus {
            by: UserId(1),
            event: 3,
            status: RiskEventStatus::Dismissed,
            note: "n".into(),
        },
        Command::GrantRole {
            user: UserId(2),
            role: roles::AUDITOR,
            by: Some(UserId(1)),
        },
        Command::RevokeRole {
            user: UserId(2),
            role: roles::AUDITOR,
            by: None,
        },
    ];
    for c in cmds {
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
    }
    // A version 2 record (written before these commands existed) decodes.
    let old = Command::RecordLogin {
        user: UserId(3),
        success: false,
    };
    let mut bytes = old.encode();
    bytes[..2].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(Command::decode(&bytes).unwrap(), old);
    // So do the later versions; a newer one than this binary's is refused.
    let current = engine::command::COMMAND_FORMAT_VERSION;
    for v in 3..=current {
        bytes[..2].copy_from_slice(&v.to_le_bytes());
        assert_eq!(Command::decode(&bytes).unwrap(), old);
    }
    bytes[..2].copy_from_slice(&(current + 1).to_le_bytes());
    assert!(matches!(
        Command::decode(&bytes),
        Err(engine::command::DecodeError::Version(v)) if v == current + 1
    ));
}
