//! Hand-written scenarios with balances checked to the unit.

mod common;
use common::*;
use engine::*;

/// BTCUSDT price 30000.00 = 3_000_000 ticks.
const P30K: u64 = 3_000_000;

#[test]
fn limit_orders_cross_with_fees_and_price_improvement() {
    let mut h = Harness::new();
    let (a, b) = (h.user("alice"), h.user("bob"));
    h.fund(a, USDT, 100_000 * ONE);
    h.fund(b, BTC, 2 * ONE);
    // Bob sells 1 BTC at 30000.
    let ev = h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Sell,
        P30K,
        ONE,
    )));
    let sell = accepted_id(&ev);
    assert_eq!(h.bal(b, BTC), (ONE, ONE));
    // Alice buys 0.5 BTC at 31000 -> fills at 30000 (maker price).
    let ev = h.ok(Command::PlaceOrder(limit(
        a,
        BTCUSDT,
        Side::Buy,
        3_100_000,
        ONE / 2,
    )));
    let buy = accepted_id(&ev);
    let t = trades(&ev);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].price, Price(P30K));
    assert_eq!(t[0].qty, Qty(ONE / 2));
    assert_eq!(t[0].quote_qty, 15_000 * ONE);
    assert_eq!(t[0].maker_order, sell);
    assert_eq!(t[0].taker_order, buy);
    // Taker fee on 0.5 BTC = 0.0005 BTC; maker fee on 15000 USDT = 15 USDT.
    assert_eq!(t[0].taker_fee, ONE / 2000);
    assert_eq!(t[0].maker_fee, 15 * ONE);
    assert_eq!(done_status(&ev, buy), Some(OrderStatus::Filled));
    // Alice paid exactly 15000 (price improvement released).
    assert_eq!(h.bal(a, USDT), (85_000 * ONE, 0));
    assert_eq!(h.bal(a, BTC), (ONE / 2 - ONE / 2000, 0));
    assert_eq!(h.bal(b, USDT), (15_000 * ONE - 15 * ONE, 0));
    assert_eq!(h.bal(b, BTC), (ONE, ONE / 2));
    let fee = h.e.fee_account();
    assert_eq!(h.bal(fee, BTC), (ONE / 2000, 0));
    assert_eq!(h.bal(fee, USDT), (15 * ONE, 0));
    // Remaining half rests.
    assert_eq!(
        h.e.order(sell).unwrap().status,
        OrderStatus::PartiallyFilled
    );
    assert_eq!(h.e.depth(BTCUSDT, Side::Sell, 10), vec![(P30K, ONE / 2)]);
}

#[test]
fn price_time_priority_across_levels() {
    let mut h = Harness::new();
    let (a, b, c) = (h.user("alice"), h.user("bob"), h.user("carol"));
    for u in [a, b] {
        h.fund(u, BTC, 10 * ONE);
    }
    h.fund(c, USDT, 1_000_000 * ONE);
    let s1 = accepted_id(&h.ok(Command::PlaceOrder(limit(
        a,
        BTCUSDT,
        Side::Sell,
        P30K + 100,
        ONE,
    ))));
    let s2 = accepted_id(&h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Sell,
        P30K,
        ONE,
    ))));
    let s3 = accepted_id(&h.ok(Command::PlaceOrder(limit(
        a,
        BTCUSDT,
        Side::Sell,
        P30K,
        ONE,
    ))));
    let ev = h.ok(Command::PlaceOrder(limit(
        c,
        BTCUSDT,
        Side::Buy,
        P30K + 100,
        2 * ONE + ONE / 2,
    )));
    let t = trades(&ev);
    let makers: Vec<_> = t.iter().map(|t| t.maker_order).collect();
    assert_eq!(makers, vec![s2, s3, s1]);
    assert_eq!(t[2].qty, Qty(ONE / 2));
    assert_eq!(t[2].price, Price(P30K + 100));
}

#[test]
fn ioc_fok_and_limit_maker() {
    let mut h = Harness::new();
    let (a, b) = (h.user("alice"), h.user("bob"));
    h.fund(a, USDT, 100_000 * ONE);
    h.fund(b, BTC, 10 * ONE);
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Sell,
        P30K,
        ONE,
    )));
    // FOK for 2 BTC cannot fill: expired, nothing traded, funds back.
    let mut o = limit(a, BTCUSDT, Side::Buy, P30K, 2 * ONE);
    o.tif = TimeInForce::Fok;
    let ev = h.ok(Command::PlaceOrder(o));
    assert!(trades(&ev).is_empty());
    assert_eq!(
        done_status(&ev, accepted_id(&ev)),
        Some(OrderStatus::Expired)
    );
    assert_eq!(h.bal(a, USDT), (100_000 * ONE, 0));
    // IOC for 2 BTC fills 1, rest expires.
    o.tif = TimeInForce::Ioc;
    let ev = h.ok(Command::PlaceOrder(o));
    assert_eq!(trades(&ev).len(), 1);
    assert_eq!(
        done_status(&ev, accepted_id(&ev)),
        Some(OrderStatus::Expired)
    );
    assert_eq!(h.bal(a, USDT), (70_000 * ONE, 0));
    // LIMIT_MAKER that would take is rejected; one that rests is fine.
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Sell,
        P30K,
        ONE,
    )));
    let mut m = limit(a, BTCUSDT, Side::Buy, P30K, ONE / 10);
    m.kind = OrderType::LimitMaker;
    assert_eq!(
        h.reject(Command::PlaceOrder(m)),
        RejectReason::WouldTakeAsMaker
    );
    m.price = Price(P30K - 1);
    h.ok(Command::PlaceOrder(m));
}

#[test]
fn market_by_quote_never_overspends() {
    let mut h = Harness::new();
    let (a, b) = (h.user("alice"), h.user("bob"));
    h.fund(a, USDT, 1_000 * ONE);
    h.fund(b, BTC, 10 * ONE);
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Sell,
        3_333_333,
        ONE,
    )));
    let ev = h.ok(Command::PlaceOrder(market(
        a,
        BTCUSDT,
        Side::Buy,
        0,
        100 * ONE,
    )));
    let t = trades(&ev);
    assert_eq!(t.len(), 1);
    assert!(t[0].quote_qty <= 100 * ONE);
    // 100 / 33333.33 = 0.003000003 -> 0.00300 BTC (step 0.00001)
    assert_eq!(t[0].qty, Qty(300_000));
    assert_eq!(
        done_status(&ev, accepted_id(&ev)),
        Some(OrderStatus::Filled)
    );
    assert_eq!(h.bal(a, USDT), (1_000 * ONE - t[0].quote_qty, 0));
}

#[test]
fn market_buy_by_qty_stops_when_funds_run_out() {
    let mut h = Harness::new();
    let (a, b) = (h.user("alice"), h.user("bob"));
    h.fund(a, USDT, 45_000 * ONE);
    h.fund(b, BTC, 10 * ONE);
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Sell,
        P30K,
        5 * ONE,
    )));
    let ev = h.ok(Command::PlaceOrder(market(
        a,
        BTCUSDT,
        Side::Buy,
        2 * ONE,
        0,
    )));
    assert_eq!(trades(&ev)[0].qty, Qty(ONE + ONE / 2));
    assert_eq!(
        done_status(&ev, accepted_id(&ev)),
        Some(OrderStatus::Expired)
    );
    assert_eq!(h.bal(a, USDT), (0, 0));
}

#[test]
fn self_trade_prevention_modes() {
    let mut h = Harness::new();
    let a = h.user("alice");
    h.fund(a, USDT, 100_000 * ONE);
    h.fund(a, BTC, 10 * ONE);
    let maker = accepted_id(&h.ok(Command::PlaceOrder(limit(
        a,
        BTCUSDT,
        Side::Sell,
        P30K,
        ONE,
    ))));
    // EXPIRE_TAKER: taker dies, maker stays.
    let mut t = limit(a, BTCUSDT, Side::Buy, P30K, ONE);
    t.stp = StpMode::ExpireTaker;
    let ev = h.ok(Command::PlaceOrder(t));
    assert_eq!(
        done_status(&ev, accepted_id(&ev)),
        Some(OrderStatus::ExpiredInMatch)
    );
    assert!(h.e.order(maker).is_some());
    // EXPIRE_MAKER: maker dies, taker rests.
    t.stp = StpMode::ExpireMaker;
    let ev = h.ok(Command::PlaceOrder(t));
    assert_eq!(done_status(&ev, maker), Some(OrderStatus::ExpiredInMatch));
    let taker = accepted_id(&ev);
    assert_eq!(h.e.order(taker).unwrap().status, OrderStatus::New);
    // NONE: trades with itself; only fees leave.
    let mut s = limit(a, BTCUSDT, Side::Sell, P30K, ONE);
    s.stp = StpMode::None;
    let ev = h.ok(Command::PlaceOrder(s));
    assert_eq!(trades(&ev).len(), 1);
}

#[test]
fn stops_trigger_on_last_price() {
    let mut h = Harness::new();
    let (a, b, c) = (h.user("alice"), h.user("bob"), h.user("carol"));
    h.fund(a, BTC, 10 * ONE);
    h.fund(b, USDT, 1_000_000 * ONE);
    h.fund(c, BTC, 10 * ONE);
    h.fund(c, USDT, 1_000_000 * ONE);
    // Establish a last price of 30000.
    h.ok(Command::PlaceOrder(limit(
        c,
        BTCUSDT,
        Side::Sell,
        P30K,
        ONE / 10,
    )));
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Buy,
        P30K,
        ONE / 10,
    )));
    // Alice: stop-loss-limit sell 1 BTC, stop 29000, limit 28900.
    let mut sl = limit(a, BTCUSDT, Side::Sell, 2_890_000, ONE);
    sl.kind = OrderType::StopLossLimit;
    sl.stop_price = Price(2_900_000);
    let stop_id = accepted_id(&h.ok(Command::PlaceOrder(sl)));
    assert_eq!(h.bal(a, BTC), (9 * ONE, ONE));
    // A stop that would fire at once is refused.
    sl.stop_price = Price(3_100_000);
    sl.price = Price(3_100_000);
    assert_eq!(
        h.reject(Command::PlaceOrder(sl)),
        RejectReason::StopWouldTriggerImmediately
    );
    // Bob bids 2 BTC at 28950; a trade at 28950 fires the stop, which sells into Bob's bid.
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Buy,
        2_895_000,
        2 * ONE,
    )));
    let ev = h.ok(Command::PlaceOrder(limit(
        c,
        BTCUSDT,
        Side::Sell,
        2_895_000,
        ONE / 10,
    )));
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::StopTriggered { order, .. } if *order == stop_id)));
    let t = trades(&ev);
    assert_eq!(t.len(), 2);
    assert_eq!(t[1].taker_order, stop_id);
    assert_eq!(t[1].qty, Qty(ONE));
    assert_eq!(done_status(&ev, stop_id), Some(OrderStatus::Filled));
}

#[test]
fn cancel_replace_amend_cancel_all_and_client_ids() {
    let mut h = Harness::new();
    let a = h.user("alice");
    h.fund(a, USDT, 100_000 * ONE);
    let mut o = limit(a, BTCUSDT, Side::Buy, P30K, ONE);
    o.client_id = ClientOrderId::new("my-1").unwrap();
    let id = accepted_id(&h.ok(Command::PlaceOrder(o)));
    assert_eq!(
        h.reject(Command::PlaceOrder(o)),
        RejectReason::DuplicateClientOrderId
    );
    // Amend down keeps priority and releases funds.
    h.ok(Command::AmendQty {
        user: a,
        pair: BTCUSDT,
        target: OrderRef::Id(id),
        new_qty: Qty(ONE / 2),
    });
    assert_eq!(h.bal(a, USDT), (85_000 * ONE, 15_000 * ONE));
    assert_eq!(
        h.reject(Command::AmendQty {
            user: a,
            pair: BTCUSDT,
            target: OrderRef::Id(id),
            new_qty: Qty(ONE)
        }),
        RejectReason::InvalidAmendQty
    );
    // Cancel-replace by client id.
    let mut n = limit(a, BTCUSDT, Side::Buy, P30K - 100, ONE);
    n.client_id = ClientOrderId::new("my-2").unwrap();
    let ev = h.ok(Command::CancelReplace {
        target: OrderRef::Client(ClientOrderId::new("my-1").unwrap()),
        mode: CancelReplaceMode::StopOnFailure,
        new: n,
    });
    assert_eq!(done_status(&ev, id), Some(OrderStatus::Canceled));
    assert!(h.e.order(id).is_none());
    // Unknown target with STOP_ON_FAILURE: nothing happens.
    assert_eq!(
        h.reject(Command::CancelReplace {
            target: OrderRef::Id(id),
            mode: CancelReplaceMode::StopOnFailure,
            new: n
        }),
        RejectReason::UnknownOrder
    );
    h.ok(Command::PlaceOrder(limit(
        a,
        BTCUSDT,
        Side::Buy,
        P30K - 200,
        ONE,
    )));
    h.ok(Command::CancelAll {
        user: a,
        pair: BTCUSDT,
    });
    assert_eq!(h.bal(a, USDT), (100_000 * ONE, 0));
    assert_eq!(h.e.open_order_count(), 0);
}

#[test]
fn filters_and_reject_order() {
    let mut h = Harness::new();
    let a = h.user("alice");
    h.fund(a, USDT, 10 * ONE);
    // Not on step.
    assert_eq!(
        h.reject(Command::PlaceOrder(limit(
            a,
            BTCUSDT,
            Side::Buy,
            P30K,
            1_500
        ))),
        RejectReason::LotSize
    );
    // Notional below 5 USDT: 0.0001 BTC at 30000 = 3 USDT.
    assert_eq!(
        h.reject(Command::PlaceOrder(limit(
            a,
            BTCUSDT,
            Side::Buy,
            P30K,
            10_000
        ))),
        RejectReason::MinNotional
    );
    // Insufficient: 0.001 BTC at 30000 = 30 USDT > 10.
    assert_eq!(
        h.reject(Command::PlaceOrder(limit(
            a,
            BTCUSDT,
            Side::Buy,
            P30K,
            100_000
        ))),
        RejectReason::InsufficientBalance
    );
    // Pair halted comes before balance.
    h.ok(Command::SetPairStatus {
        pair: BTCUSDT,
        status: PairStatus::Halt,
        by: None,
    });
    assert_eq!(
        h.reject(Command::PlaceOrder(limit(
            a,
            BTCUSDT,
            Side::Buy,
            P30K,
            100_000
        ))),
        RejectReason::PairNotTrading
    );
    h.ok(Command::SetPairStatus {
        pair: BTCUSDT,
        status: PairStatus::Trading,
        by: None,
    });
    h.ok(Command::SetUserStatus {
        user: a,
        status: UserStatus::Suspended,
        cancel_orders: true,
        by: None,
    });
    assert_eq!(
        h.reject(Command::PlaceOrder(limit(
            a,
            BTCUSDT,
            Side::Buy,
            P30K,
            100_000
        ))),
        RejectReason::UserSuspended
    );
}

/// Alice with resting orders on BTCUSDT (a bid, and a stop) and ETHUSDT
/// (an ask), beside Bob's orders at the same prices; the last BTCUSDT price
/// is 30000. Returns her order ids in placement order.
fn suspension_setup() -> (Harness, UserId, UserId, Vec<OrderId>) {
    let mut h = Harness::new();
    let (a, b) = (h.user("alice"), h.user("bob"));
    h.fund(a, USDT, 100_000 * ONE);
    h.fund(a, BTC, 3 * ONE);
    h.fund(a, ETH, 10 * ONE);
    h.fund(b, USDT, 100_000 * ONE);
    h.fund(b, BTC, 3 * ONE);
    h.fund(b, ETH, 10 * ONE);
    // A trade at 30000 sets BTCUSDT's last price, so a stop may rest.
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Sell,
        P30K,
        ONE,
    )));
    h.ok(Command::PlaceOrder(limit(a, BTCUSDT, Side::Buy, P30K, ONE)));
    let mut ids = Vec::new();
    for o in [
        limit(a, BTCUSDT, Side::Buy, 2_900_000, ONE / 2),
        limit(a, ETHUSDT, Side::Sell, 200_000, 4 * ONE),
        limit(a, BTCUSDT, Side::Buy, 2_900_000, ONE / 4),
    ] {
        ids.push(accepted_id(&h.ok(Command::PlaceOrder(o))));
    }
    let mut sl = limit(a, BTCUSDT, Side::Sell, 2_800_000, ONE / 2);
    sl.kind = OrderType::StopLossLimit;
    sl.stop_price = Price(2_850_000);
    ids.push(accepted_id(&h.ok(Command::PlaceOrder(sl))));
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Buy,
        2_900_000,
        ONE,
    )));
    h.ok(Command::PlaceOrder(limit(
        b,
        ETHUSDT,
        Side::Sell,
        200_000,
        ONE,
    )));
    (h, a, b, ids)
}

fn suspend(user: UserId, cancel_orders: bool) -> Command {
    Command::SetUserStatus {
        user,
        status: UserStatus::Suspended,
        cancel_orders,
        by: Some(UserId(1)),
    }
}

/// Format 8: suspending a user cancels their open orders on every pair,
/// resting and waiting stops, in ascending id, with the events of their own
/// cancels; funds unfreeze to the unit and the book keeps only others'.
#[test]
fn suspending_a_user_cancels_their_orders_on_every_pair() {
    let (mut h, a, b, ids) = suspension_setup();
    let free = |h: &Harness| [BTC, ETH, USDT].map(|x| h.bal(a, x).0 + h.bal(a, x).1);
    let totals = free(&h);
    assert_ne!(h.bal(a, USDT).1, 0);
    assert_ne!(h.bal(a, BTC).1, 0);
    assert_ne!(h.bal(a, ETH).1, 0);
    let bob_before = [BTC, ETH, USDT].map(|x| h.bal(b, x));
    let ev = h.ok(suspend(a, true));
    assert_eq!(
        ev[0],
        Event::UserStatusChanged {
            user: a,
            status: UserStatus::Suspended
        }
    );
    let done: Vec<OrderId> = ev
        .iter()
        .filter_map(|e| match e {
            Event::OrderDone {
                order,
                user,
                status: OrderStatus::Canceled,
                ..
            } if *user == a => Some(*order),
            _ => None,
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(done, sorted, "every order, by id");
    // Each cancel as a user cancel emits it: the release, then the end.
    let mut own = suspension_setup().0;
    let mut expected = vec![ev[0].clone()];
    for (id, pair) in sorted.iter().zip([BTCUSDT, ETHUSDT, BTCUSDT, BTCUSDT]) {
        expected.extend(own.ok(Command::CancelOrder {
            user: a,
            pair,
            target: OrderRef::Id(*id),
        }));
    }
    assert_eq!(ev, expected);
    for id in &ids {
        assert!(h.e.order(*id).is_none(), "{id:?} still open");
    }
    assert_eq!(h.e.user(a).unwrap().open_orders, 0);
    for x in [BTC, ETH, USDT] {
        assert_eq!(h.bal(a, x).1, 0, "{x:?} still frozen");
    }
    assert_eq!(free(&h), totals, "nothing but freezes moved");
    assert_eq!([BTC, ETH, USDT].map(|x| h.bal(b, x)), bob_before);
    // The book holds Bob's orders only.
    assert_eq!(h.e.depth(BTCUSDT, Side::Buy, 10), vec![(2_900_000, ONE)]);
    assert_eq!(h.e.depth(ETHUSDT, Side::Sell, 10), vec![(200_000, ONE)]);
    for pair in [BTCUSDT, ETHUSDT, ETHBTC] {
        for side in [Side::Buy, Side::Sell] {
            assert!(h.e.book_orders(pair, side).iter().all(|o| o.user == b));
        }
    }
    // Unlocking touches no order; Bob's stay.
    let open = h.e.open_order_count();
    let ev = h.ok(Command::SetUserStatus {
        user: a,
        status: UserStatus::Active,
        cancel_orders: true,
        by: Some(UserId(1)),
    });
    assert_eq!(ev.len(), 1);
    assert_eq!(h.e.open_order_count(), open);
    // Suspending a user without orders emits the status change alone.
    assert_eq!(h.ok(suspend(a, true)).len(), 1);
    h.e.assert_invariants();
}

/// Regression guard for replay: a format 7 `SetUserStatus` record (no
/// `cancel_orders`) suspended without canceling, and replays that way.
#[test]
fn a_format_7_suspension_replayed_keeps_the_orders() {
    let (mut h, a, _, ids) = suspension_setup();
    let mut v7 = vec![7u8, 0];
    v7.extend_from_slice(&8u32.to_le_bytes()); // SetUserStatus
    v7.extend_from_slice(&a.0.to_le_bytes());
    v7.extend_from_slice(&1u32.to_le_bytes()); // Suspended
    let cmd = Command::decode(&v7).unwrap();
    assert_eq!(
        cmd,
        Command::SetUserStatus {
            user: a,
            status: UserStatus::Suspended,
            cancel_orders: false,
            by: None
        }
    );
    let frozen = [BTC, ETH, USDT].map(|x| h.bal(a, x));
    let open = h.e.open_order_count();
    let ev = h.ok(cmd);
    assert_eq!(
        ev,
        vec![Event::UserStatusChanged {
            user: a,
            status: UserStatus::Suspended
        }]
    );
    assert_eq!(h.e.open_order_count(), open);
    for id in &ids {
        assert!(h.e.order(*id).is_some());
    }
    assert_eq!([BTC, ETH, USDT].map(|x| h.bal(a, x)), frozen);
    // The same state as a format 8 suspension that keeps orders.
    let mut new = suspension_setup().0;
    new.ok(suspend(a, false));
    assert_eq!(new.e.state_hash(), h.e.state_hash());
}

#[test]
fn deposits_are_idempotent_and_wait_for_confirmations() {
    let mut h = Harness::new();
    let a = h.user("alice");
    let dep = |c| Command::Deposit {
        user: a,
        asset: BTC,
        amount: ONE,
        tx_hash: "0xabc".into(),
        confirmations: c,
        by: None,
    };
    h.ok(dep(1));
    assert_eq!(h.bal(a, BTC), (0, 0));
    h.ok(dep(2));
    assert_eq!(h.bal(a, BTC), (ONE, 0));
    h.ok(dep(3));
    h.ok(dep(2));
    assert_eq!(h.bal(a, BTC), (ONE, 0));
    let other = h.user("bob");
    assert_eq!(
        h.reject(Command::Deposit {
            user: other,
            asset: BTC,
            amount: ONE,
            tx_hash: "0xabc".into(),
            confirmations: 5,
            by: None
        }),
        RejectReason::DepositUserMismatch
    );
}

#[test]
fn withdrawal_lifecycle_conserves() {
    let mut h = Harness::new();
    let a = h.user("alice");
    h.fund(a, BTC, ONE);
    let w = Command::RequestWithdrawal {
        user: a,
        asset: BTC,
        amount: ONE / 2,
        address: "bc1q".into(),
    };
    assert_eq!(h.reject(w.clone()), RejectReason::KycRequired);
    h.ok(Command::SetKycLevel {
        user: a,
        level: 1,
        by: None,
    });
    h.ok(w.clone());
    assert_eq!(h.bal(a, BTC), (ONE / 2 - 500, ONE / 2 + 500));
    h.ok(Command::RejectWithdrawal {
        withdrawal: 1,
        by: None,
    });
    assert_eq!(h.bal(a, BTC), (ONE, 0));
    h.ok(w);
    h.ok(Command::CompleteWithdrawal {
        withdrawal: 2,
        tx_hash: "0xdead".into(),
        by: None,
    });
    assert_eq!(h.bal(a, BTC), (ONE / 2 - 500, 0));
    assert_eq!(h.bal(h.e.fee_account(), BTC), (500, 0));
    assert_eq!(
        h.reject(Command::CompleteWithdrawal {
            withdrawal: 2,
            tx_hash: "0xdead".into(),
            by: None
        }),
        RejectReason::WithdrawalNotPending
    );
}

#[test]
fn snapshot_round_trip_preserves_hash_and_behaviour() {
    let mut h = Harness::new();
    let (a, b) = (h.user("alice"), h.user("bob"));
    h.fund(a, USDT, 100_000 * ONE);
    h.fund(b, BTC, 10 * ONE);
    for i in 0..20 {
        h.ok(Command::PlaceOrder(limit(
            b,
            BTCUSDT,
            Side::Sell,
            P30K + i * 100,
            ONE / 10,
        )));
    }
    let mut sl = limit(b, BTCUSDT, Side::Sell, 2_800_000, ONE / 10);
    sl.kind = OrderType::StopLossLimit;
    sl.stop_price = Price(2_900_000);
    h.ok(Command::PlaceOrder(sl));
    let bytes = h.e.snapshot_bytes();
    let restored = Engine::from_snapshot(&bytes).unwrap();
    assert_eq!(restored.state_hash(), h.e.state_hash());
    let mut h2 = Harness {
        e: restored,
        seq: h.seq,
        ts: h.ts,
        out: Vec::new(),
    };
    let cmd = Command::PlaceOrder(limit(a, BTCUSDT, Side::Buy, P30K + 1_000, ONE));
    assert_eq!(h.ok(cmd.clone()), h2.ok(cmd));
    assert_eq!(h.e.state_hash(), h2.e.state_hash());
    // Damaged snapshots are refused, never a panic.
    assert!(Engine::from_snapshot(&bytes[..bytes.len() / 2]).is_err());
    assert!(Engine::from_snapshot(b"garbage").is_err());
}

#[test]
fn command_encoding_round_trips_and_rejects_garbage() {
    let c = Command::PlaceOrder(limit(UserId(7), BTCUSDT, Side::Buy, 1, 2));
    assert_eq!(Command::decode(&c.encode()).unwrap(), c);
    assert!(Command::decode(&[]).is_err());
    assert!(Command::decode(&[1, 0, 255, 255, 255]).is_err());
    assert!(Command::decode(&[9, 9]).is_err());
}

// ------------------------------------------------ regressions (differential)

#[test]
fn limit_maker_with_ioc_tif_counts_against_open_order_limit() {
    // LIMIT_MAKER always rests (its TIF is forced to GTC), so it must count
    // against MAX_NUM_ORDERS whatever TIF the client sent.
    let mut h = Harness::new();
    let a = h.user("alice");
    h.fund(a, USDT, 100_000 * ONE);
    h.ok(Command::SetLimits {
        limits: Limits {
            max_open_orders_per_user: 2,
            ..Limits::default()
        },
        by: None,
    });
    h.ok(Command::PlaceOrder(limit(
        a,
        BTCUSDT,
        Side::Buy,
        P30K,
        ONE / 100,
    )));
    h.ok(Command::PlaceOrder(limit(
        a,
        BTCUSDT,
        Side::Buy,
        P30K - 1,
        ONE / 100,
    )));
    let mut m = limit(a, BTCUSDT, Side::Buy, P30K - 2, ONE / 100);
    m.kind = OrderType::LimitMaker;
    m.tif = TimeInForce::Ioc;
    assert_eq!(h.reject(Command::PlaceOrder(m)), RejectReason::MaxNumOrders);
    assert_eq!(h.e.user(a).unwrap().open_orders, 2);
}

#[test]
fn falling_stops_with_equal_stop_price_fire_oldest_first() {
    let mut h = Harness::new();
    let (a, b, c, d) = (
        h.user("alice"),
        h.user("bob"),
        h.user("carol"),
        h.user("dave"),
    );
    for u in [a, c, d] {
        h.fund(u, BTC, 10 * ONE);
    }
    h.fund(b, USDT, 1_000_000 * ONE);
    h.ok(Command::PlaceOrder(limit(
        c,
        BTCUSDT,
        Side::Sell,
        P30K,
        ONE / 10,
    )));
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Buy,
        P30K,
        ONE / 10,
    )));
    // Two sell stops at the same stop price: alice's first, then dave's.
    let mut sl = limit(a, BTCUSDT, Side::Sell, 2_800_000, ONE / 10);
    sl.kind = OrderType::StopLossLimit;
    sl.stop_price = Price(2_900_000);
    let first = accepted_id(&h.ok(Command::PlaceOrder(sl)));
    sl.user = d;
    let second = accepted_id(&h.ok(Command::PlaceOrder(sl)));
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Buy,
        2_890_000,
        ONE,
    )));
    let ev = h.ok(Command::PlaceOrder(limit(
        c,
        BTCUSDT,
        Side::Sell,
        2_890_000,
        ONE / 10,
    )));
    let fired: Vec<OrderId> = ev
        .iter()
        .filter_map(|e| match e {
            Event::StopTriggered { order, .. } => Some(*order),
            _ => None,
        })
        .collect();
    assert_eq!(fired, vec![first, second]);
    // The older stop also trades first.
    let t = trades(&ev);
    assert_eq!(t[1].taker_order, first);
    assert_eq!(t[2].taker_order, second);
}

#[test]
fn budget_limited_taker_keeps_partially_filled_maker_priority() {
    // ETHBTC at 25 ticks: one step (0.001 ETH) costs 2.5 sat, so per-fill
    // rounding can leave budget for one more step after a partial fill.
    // That step must come from the maker first in line, not the next one.
    let mut h = Harness::new();
    let (a, b, c) = (h.user("alice"), h.user("bob"), h.user("carol"));
    h.fund(a, ETH, 10 * ONE);
    h.fund(b, ETH, 10 * ONE);
    h.fund(c, BTC, ONE);
    let first = accepted_id(&h.ok(Command::PlaceOrder(limit(
        a,
        ETHBTC,
        Side::Sell,
        25,
        10 * ONE,
    ))));
    h.ok(Command::PlaceOrder(limit(
        b,
        ETHBTC,
        Side::Sell,
        25,
        10 * ONE,
    )));
    // 10_004 sat buys 4001 steps for 10_002 sat; the 2 sat left buy one more.
    let ev = h.ok(Command::PlaceOrder(market(c, ETHBTC, Side::Buy, 0, 10_004)));
    let t = trades(&ev);
    assert_eq!(t.len(), 2);
    assert!(t.iter().all(|t| t.maker_order == first), "{t:?}");
    assert_eq!((t[0].qty, t[1].qty), (Qty(400_100_000), Qty(100_000)));
    assert_eq!(t[0].quote_qty + t[1].quote_qty, 10_004);
    assert_eq!(
        done_status(&ev, accepted_id(&ev)),
        Some(OrderStatus::Filled)
    );
}

#[test]
fn spent_quote_taker_does_not_trigger_stp_on_own_maker() {
    // A market buy by quote that has spent its whole amount must end FILLED
    // without touching the taker's own orders further down the book.
    let mut h = Harness::new();
    let (a, b) = (h.user("alice"), h.user("bob"));
    h.fund(a, USDT, 1_000 * ONE);
    h.fund(a, BTC, ONE);
    h.fund(b, BTC, ONE);
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Sell,
        P30K,
        ONE / 100,
    )));
    let own = accepted_id(&h.ok(Command::PlaceOrder(limit(
        a,
        BTCUSDT,
        Side::Sell,
        P30K + 100,
        ONE / 100,
    ))));
    let mut buy = market(a, BTCUSDT, Side::Buy, 0, 300 * ONE); // exactly 0.01 BTC at 30000
    buy.stp = StpMode::ExpireBoth;
    let ev = h.ok(Command::PlaceOrder(buy));
    assert_eq!(trades(&ev).len(), 1);
    assert_eq!(
        done_status(&ev, accepted_id(&ev)),
        Some(OrderStatus::Filled)
    );
    assert_eq!(done_status(&ev, own), None);
    assert!(h.e.order(own).is_some());
}

#[test]
fn market_by_quote_spending_all_liquidity_exactly_is_filled() {
    let mut h = Harness::new();
    let (a, b) = (h.user("alice"), h.user("bob"));
    h.fund(a, USDT, 1_000 * ONE);
    h.fund(b, BTC, ONE);
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Sell,
        P30K,
        ONE / 100,
    )));
    // Exactly the book's only ask; the book is empty afterwards.
    let ev = h.ok(Command::PlaceOrder(market(
        a,
        BTCUSDT,
        Side::Buy,
        0,
        300 * ONE,
    )));
    assert_eq!(trades(&ev)[0].quote_qty, 300 * ONE);
    assert_eq!(
        done_status(&ev, accepted_id(&ev)),
        Some(OrderStatus::Filled)
    );
    assert_eq!(h.bal(a, USDT), (700 * ONE, 0));
    // Same for a sell by quote.
    h.fund(a, BTC, ONE);
    h.fund(b, USDT, 1_000 * ONE);
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Buy,
        P30K,
        ONE / 100,
    )));
    let ev = h.ok(Command::PlaceOrder(market(
        a,
        BTCUSDT,
        Side::Sell,
        0,
        300 * ONE,
    )));
    assert_eq!(
        done_status(&ev, accepted_id(&ev)),
        Some(OrderStatus::Filled)
    );
}

// ------------------------------------------------------------- identity

fn login(user: UserId, success: bool) -> Command {
    Command::RecordLogin { user, success }
}

/// (success, failed_logins, locked_until_ms) of a LoginRecorded.
fn login_result(ev: &[Event]) -> (bool, u32, u64) {
    match ev {
        [Event::LoginRecorded {
            success,
            failed_logins,
            locked_until_ms,
            ..
        }] => (*success, *failed_logins, *locked_until_ms),
        other => panic!("expected LoginRecorded, got {other:?}"),
    }
}

#[test]
fn failed_logins_lock_password_login_until_the_lockout_ends() {
    let mut h = Harness::new();
    let a = h.user("alice");
    let lockout = Limits::default().lockout_ms;
    assert_eq!((Limits::default().max_failed_logins, lockout), (5, 900_000));
    for n in 1..=4 {
        assert_eq!(login_result(&h.ok(login(a, false))), (false, n, 0));
    }
    // A success resets the count.
    assert_eq!(login_result(&h.ok(login(a, true))), (true, 0, 0));
    for n in 1..=4 {
        assert_eq!(login_result(&h.ok(login(a, false))).1, n);
    }
    let ev = h.ok(login(a, false));
    let until = h.ts + lockout;
    assert_eq!(login_result(&ev), (false, 5, until));
    assert_eq!(h.e.user(a).unwrap().locked_until_ms, until);
    // While locked every attempt is refused and changes nothing, even a
    // correct password.
    assert_eq!(h.reject(login(a, true)), RejectReason::UserLocked);
    assert_eq!(h.reject(login(a, false)), RejectReason::UserLocked);
    // The lock survives a snapshot.
    let restored = Engine::from_snapshot(&h.e.snapshot_bytes()).unwrap();
    assert_eq!(restored.user(a).unwrap().locked_until_ms, until);
    assert_eq!(restored.state_hash(), h.e.state_hash());
    // Just before the end: still locked; at the end: counting starts afresh.
    h.ts = until - 2;
    assert_eq!(h.reject(login(a, true)), RejectReason::UserLocked);
    h.ts = until - 1;
    assert_eq!(login_result(&h.ok(login(a, false))), (false, 1, 0));
    assert_eq!(login_result(&h.ok(login(a, true))), (true, 0, 0));
    // Nobody else, nor the exchange account, can log in.
    assert_eq!(h.reject(login(UserId(0), true)), RejectReason::UnknownUser);
    assert_eq!(
        h.reject(login(UserId(99), false)),
        RejectReason::UnknownUser
    );
}

#[test]
fn lockout_policy_comes_from_the_limits() {
    let mut h = Harness::new();
    let a = h.user("alice");
    h.ok(Command::SetLimits {
        limits: Limits {
            max_failed_logins: 2,
            lockout_ms: 1_000,
            ..Limits::default()
        },
        by: None,
    });
    h.ok(login(a, false));
    let (_, n, until) = login_result(&h.ok(login(a, false)));
    assert_eq!((n, until), (2, h.ts + 1_000));
    // 0 = never lock.
    let b = h.user("bob");
    h.ok(Command::SetLimits {
        limits: Limits {
            max_failed_logins: 0,
            ..Limits::default()
        },
        by: None,
    });
    for n in 1..=20 {
        assert_eq!(login_result(&h.ok(login(b, false))), (false, n, 0));
    }
}

fn new_key(user: UserId, api_key: &str, kind: ApiKeyKind) -> Command {
    Command::CreateApiKey {
        user,
        api_key: api_key.into(),
        label: "bot".into(),
        permissions: api_key_perms::READ | api_key_perms::TRADE,
        kind,
        secret: vec![7; 32],
    }
}

#[test]
fn api_keys_are_bounded_unique_and_revocable() {
    let mut h = Harness::new();
    let (a, b) = (h.user("alice"), h.user("bob"));
    h.ok(Command::SetLimits {
        limits: Limits {
            max_api_keys_per_user: 2,
            ..Limits::default()
        },
        by: None,
    });
    let ev = h.ok(new_key(a, "KeyA1", ApiKeyKind::Hmac));
    let created = h.ts;
    assert_eq!(
        ev,
        vec![Event::ApiKeyCreated {
            user: a,
            id: 1,
            api_key: "KeyA1".into(),
            label: "bot".into(),
            permissions: 3,
            kind: ApiKeyKind::Hmac,
            secret: vec![7; 32],
            created_ms: created,
        }]
    );
    h.ok(new_key(a, "KeyA2", ApiKeyKind::Ed25519));
    assert_eq!(
        h.reject(new_key(a, "KeyA3", ApiKeyKind::Hmac)),
        RejectReason::TooManyApiKeys
    );
    // Identifiers are unique across users.
    assert_eq!(
        h.reject(new_key(b, "KeyA1", ApiKeyKind::Hmac)),
        RejectReason::ApiKeyExists
    );
    let (owner, k) = h.e.api_key("KeyA2").unwrap();
    assert_eq!((owner, k.id, k.kind), (a, 2, ApiKeyKind::Ed25519));
    // Malformed keys are data, not panics.
    for bad in [
        new_key(a, "", ApiKeyKind::Hmac),
        new_key(a, &"k".repeat(65), ApiKeyKind::Hmac),
        new_key(a, "no-dashes", ApiKeyKind::Hmac),
        Command::CreateApiKey {
            user: b,
            api_key: "KeyB".into(),
            label: "l".repeat(65),
            permissions: 1,
            kind: ApiKeyKind::Hmac,
            secret: vec![1; 40],
        },
        Command::CreateApiKey {
            user: b,
            api_key: "KeyB".into(),
            label: String::new(),
            permissions: 8,
            kind: ApiKeyKind::Hmac,
            secret: vec![1; 40],
        },
        Command::CreateApiKey {
            user: b,
            api_key: "KeyB".into(),
            label: String::new(),
            permissions: 0,
            kind: ApiKeyKind::Hmac,
            secret: vec![1; 40],
        },
        Command::CreateApiKey {
            user: b,
            api_key: "KeyB".into(),
            label: String::new(),
            permissions: 1,
            kind: ApiKeyKind::Ed25519,
            secret: vec![1; 31],
        },
        Command::CreateApiKey {
            user: b,
            api_key: "KeyB".into(),
            label: String::new(),
            permissions: 1,
            kind: ApiKeyKind::Hmac,
            secret: vec![1; 257],
        },
    ] {
        // (Alice is at her limit: the shape is checked first.)
        assert_eq!(h.reject(bad), RejectReason::InvalidApiKey);
    }
    assert_eq!(
        h.reject(new_key(UserId(0), "KeySys", ApiKeyKind::Hmac)),
        RejectReason::UnknownUser
    );
    // Only the owner revokes; revoking frees a slot; ids are never reused.
    let revoke = |user, api_key: &str| Command::RevokeApiKey {
        user,
        api_key: api_key.into(),
    };
    assert_eq!(h.reject(revoke(b, "KeyA1")), RejectReason::UnknownApiKey);
    assert_eq!(h.reject(revoke(a, "Nope")), RejectReason::UnknownApiKey);
    assert_eq!(
        h.ok(revoke(a, "KeyA1")),
        vec![Event::ApiKeyRevoked {
            user: a,
            id: 1,
            api_key: "KeyA1".into()
        }]
    );
    assert!(h.e.api_key("KeyA1").is_none());
    assert_eq!(h.reject(revoke(a, "KeyA1")), RejectReason::UnknownApiKey);
    h.ok(new_key(a, "KeyA3", ApiKeyKind::Hmac));
    assert_eq!(h.e.api_key("KeyA3").unwrap().1.id, 3);
    // A suspended user gets no new key but may still revoke.
    h.ok(Command::SetUserStatus {
        user: a,
        status: UserStatus::Suspended,
        cancel_orders: true,
        by: None,
    });
    assert_eq!(
        h.reject(new_key(a, "KeyA4", ApiKeyKind::Hmac)),
        RejectReason::UserSuspended
    );
    h.ok(revoke(a, "KeyA3"));
    // Keys survive a snapshot, index included.
    let restored = Engine::from_snapshot(&h.e.snapshot_bytes()).unwrap();
    assert_eq!(restored.state_hash(), h.e.state_hash());
    assert_eq!(restored.api_key("KeyA2").unwrap().0, a);
}

#[test]
fn version_1_journal_records_still_decode() {
    // SetLimits as version 1 encoded it: version, variant 6, three u32.
    let mut v1 = vec![1u8, 0];
    v1.extend_from_slice(&6u32.to_le_bytes());
    for n in [7u32, 8, 9] {
        v1.extend_from_slice(&n.to_le_bytes());
    }
    assert_eq!(
        Command::decode(&v1).unwrap(),
        Command::SetLimits {
            limits: Limits {
                max_open_orders_per_user: 7,
                max_open_orders_total: 8,
                max_api_keys_per_user: 9,
                ..Limits::default()
            },
            by: None
        }
    );
    assert!(Command::decode(&v1[..10]).is_err());
    // Every other version 1 record is encoded as today.
    let c = Command::PlaceOrder(limit(UserId(7), BTCUSDT, Side::Buy, 1, 2));
    let mut old = c.encode();
    old[..2].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(Command::decode(&old).unwrap(), c);
    // The current encoding round-trips, new commands included.
    for c in [
        Command::SetLimits {
            limits: Limits::default(),
            by: None,
        },
        new_key(UserId(3), "Key", ApiKeyKind::Ed25519),
        login(UserId(3), false),
    ] {
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
    }
    assert!(Command::decode(&[3, 0, 0, 0, 0, 0]).is_err());
}

#[test]
fn the_exchange_account_name_is_reserved() {
    let mut h = Harness::new();
    for name in ["exchange", "Exchange", "EXCHANGE"] {
        assert_eq!(
            h.reject(Command::CreateUser {
                username: name.into(),
                email: String::new(),
                password_hash: String::new(),
                roles: roles::TRADER,
            }),
            RejectReason::InvalidUsername
        );
    }
    h.user("exchanger");
}

#[test]
fn stops_fire_on_any_trade_price_of_a_sweep_not_only_the_last() {
    let mut h = Harness::new();
    let (a, b, c) = (h.user("alice"), h.user("bob"), h.user("carol"));
    h.fund(a, BTC, 10 * ONE);
    h.fund(b, USDT, 1_000_000 * ONE);
    h.fund(c, USDT, 1_000_000 * ONE);
    // Last price 30000.
    h.ok(Command::PlaceOrder(limit(
        a,
        BTCUSDT,
        Side::Sell,
        3_000_000,
        ONE / 10,
    )));
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Buy,
        3_000_000,
        ONE / 10,
    )));
    // Bids at 31000 and 30000.
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Buy,
        3_100_000,
        ONE / 10,
    )));
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Buy,
        3_000_000,
        ONE / 10,
    )));
    // Carol's buy stop at 30500 (not reached at 30000).
    let mut stop = limit(c, BTCUSDT, Side::Buy, 3_150_000, ONE / 10);
    stop.kind = OrderType::StopLossLimit;
    stop.stop_price = Price(3_050_000);
    let stop_id = accepted_id(&h.ok(Command::PlaceOrder(stop)));
    // Alice's sell sweeps 31000 then 30000: the last price ends at 30000,
    // but a trade reached 31000 >= 30500, so the stop fires.
    let ev = h.ok(Command::PlaceOrder(limit(
        a,
        BTCUSDT,
        Side::Sell,
        3_000_000,
        ONE / 5,
    )));
    let prices: Vec<u64> = trades(&ev).iter().map(|t| t.price.0).collect();
    assert_eq!(prices, vec![3_100_000, 3_000_000]);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::StopTriggered { order, .. } if *order == stop_id)),
        "{ev:?}"
    );
}

#[test]
fn market_sell_by_quote_running_out_of_base_expires() {
    let mut h = Harness::new();
    let (a, b) = (h.user("alice"), h.user("bob"));
    h.fund(a, BTC, ONE / 100); // 0.01 BTC
    h.fund(b, USDT, 1_000_000 * ONE);
    h.ok(Command::PlaceOrder(limit(
        b,
        BTCUSDT,
        Side::Buy,
        3_000_000,
        ONE,
    )));
    // Wants 1000 USDT but 0.01 BTC only brings 300.
    let ev = h.ok(Command::PlaceOrder(market(
        a,
        BTCUSDT,
        Side::Sell,
        0,
        1_000 * ONE,
    )));
    assert_eq!(trades(&ev)[0].quote_qty, 300 * ONE);
    assert_eq!(
        done_status(&ev, accepted_id(&ev)),
        Some(OrderStatus::Expired)
    );
    // Enough base: spends the quote amount exactly and is FILLED.
    h.fund(a, BTC, ONE);
    let ev = h.ok(Command::PlaceOrder(market(
        a,
        BTCUSDT,
        Side::Sell,
        0,
        300 * ONE,
    )));
    assert_eq!(
        done_status(&ev, accepted_id(&ev)),
        Some(OrderStatus::Filled)
    );
}
