//! Differential tests: the fast `Engine` and the naive `ReferenceEngine` are
//! driven by the same generated command streams and must emit identical
//! events for every command; the engine's invariants (conservation of every
//! asset included) are checked after every command, and the full state
//! (balances, books, open orders, wallet records) is compared along the way
//! and at the end. A second property restores the engine from a snapshot
//! taken mid-stream and demands the same hash and the same events after it.
//!
//! The generator produces abstract actions that are resolved against the
//! live state when they are applied (so cancels and amends mostly hit real
//! open orders and client ids). It is biased towards matching: 3-6 users
//! with funds, the default pairs of API.md, prices clustered a few ticks
//! around a centre, every order type, TIF and STP mode, and a sprinkling of
//! commands that must be rejected.
//!
//! Cases: 256 per property by default (a few seconds in debug); set
//! PROPTEST_CASES for longer hunts.

mod common;
use common::*;
use engine::reference::ReferenceEngine;
use engine::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeMap;

// ------------------------------------------------------------------ actions

/// A new order, in abstract terms resolved against the state at run time.
#[derive(Clone, Copy, Debug)]
struct Spec {
    user: u8,
    pair: u8,
    sell: bool,
    kind: u8,
    tif: u8,
    /// Ticks from the pair's centre price.
    price: i8,
    qty: u16,
    /// 10.. = market by quote amount.
    quote: u8,
    /// Ticks from the centre for the stop price.
    stop: i8,
    cid: u8,
    stp: u8,
    /// Small values select a malformed variant.
    odd: u8,
}

/// An order reference: mostly an open order, sometimes a stale or bogus one.
#[derive(Clone, Copy, Debug)]
struct Target {
    pick: u16,
    mode: u8,
}

#[derive(Clone, Copy, Debug)]
enum Act {
    Place(Spec),
    Cancel(Target),
    CancelAll {
        user: u8,
        pair: u8,
    },
    Replace {
        target: Target,
        allow_failure: bool,
        new: Spec,
    },
    Amend {
        target: Target,
        qty: u8,
    },
    Deposit {
        user: u8,
        asset: u8,
        amount: u8,
        tx: u8,
        conf: u8,
    },
    Withdraw {
        user: u8,
        asset: u8,
        amount: u8,
        address: bool,
    },
    Complete {
        pick: u8,
        tx_ok: bool,
    },
    RejectWithdrawal {
        pick: u8,
    },
    Adjust {
        user: u8,
        asset: u8,
        amount: u8,
        credit: bool,
        reason: bool,
    },
    /// Configuration and identity commands.
    Admin {
        what: u8,
        x: u8,
        y: u8,
    },
    /// API keys and login results.
    Identity {
        what: u8,
        user: u8,
        key: u8,
        x: u8,
    },
    /// KYC submissions and reviews.
    Kyc {
        what: u8,
        user: u8,
        pick: u8,
        x: u8,
    },
    /// Risk rules, risk event status changes, role grants and revokes.
    Risk {
        what: u8,
        x: u8,
        y: u8,
    },
    /// Settle the UTC day `back` days before the current one (0: today,
    /// refused; 255: tomorrow), requested by `user`.
    Settle {
        back: u8,
        user: u8,
    },
}

#[derive(Clone, Debug)]
struct Scenario {
    users: u8,
    /// Per pair: trade once at the centre during setup, so stops and bands
    /// have a last price from the start.
    seed_last_price: [bool; 4],
    /// List a fourth pair (odd tick and step, so notionals round).
    extra_pair: bool,
    /// (action, clock step selector)
    acts: Vec<(Act, u8)>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (0u8..40, 0u8..40, any::<bool>(), 0u8..16, 0u8..10, -5i8..=5),
        (0u16..1000, 0u8..20, -9i8..=9, 0u8..14, 0u8..4, 0u8..150),
    )
        .prop_map(
            |((user, pair, sell, kind, tif, price), (qty, quote, stop, cid, stp, odd))| Spec {
                user,
                pair,
                sell,
                kind,
                tif,
                price,
                qty,
                quote,
                stop,
                cid,
                stp,
                odd,
            },
        )
}

fn target() -> impl Strategy<Value = Target> {
    (any::<u16>(), 0u8..14).prop_map(|(pick, mode)| Target { pick, mode })
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        80 => spec().prop_map(Act::Place),
        5 => target().prop_map(Act::Cancel),
        1 => (0u8..40, 0u8..40).prop_map(|(user, pair)| Act::CancelAll { user, pair }),
        4 => (target(), any::<bool>(), spec()).prop_map(|(target, allow_failure, new)| Act::Replace {
            target,
            allow_failure,
            new
        }),
        4 => (target(), 0u8..10).prop_map(|(target, qty)| Act::Amend { target, qty }),
        4 => (0u8..40, 0u8..8, 0u8..10, 0u8..10, 0u8..5).prop_map(|(user, asset, amount, tx, conf)| {
            Act::Deposit { user, asset, amount, tx, conf }
        }),
        4 => (0u8..40, 0u8..8, 0u8..8, 0u8..10).prop_map(|(user, asset, amount, a)| Act::Withdraw {
            user,
            asset,
            amount,
            address: a > 0
        }),
        2 => (any::<u8>(), 0u8..10).prop_map(|(pick, t)| Act::Complete { pick, tx_ok: t > 0 }),
        2 => any::<u8>().prop_map(|pick| Act::RejectWithdrawal { pick }),
        2 => (0u8..40, 0u8..8, 0u8..8, any::<bool>(), 0u8..10).prop_map(
            |(user, asset, amount, credit, r)| Act::Adjust { user, asset, amount, credit, reason: r > 0 }
        ),
        7 => (0u8..16, any::<u8>(), any::<u8>()).prop_map(|(what, x, y)| Act::Admin { what, x, y }),
        10 => (0u8..10, 0u8..40, 0u8..16, any::<u8>()).prop_map(|(what, user, key, x)| Act::Identity {
            what,
            user,
            key,
            x
        }),
        6 => (0u8..8, 0u8..40, any::<u8>(), any::<u8>()).prop_map(|(what, user, pick, x)| Act::Kyc {
            what,
            user,
            pick,
            x
        }),
        7 => (0u8..20, any::<u8>(), any::<u8>()).prop_map(|(what, x, y)| Act::Risk { what, x, y }),
        1 => (prop_oneof![0u8..4, Just(255u8)], 0u8..40).prop_map(|(back, user)| Act::Settle { back, user }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        3u8..=6,
        any::<[bool; 4]>(),
        any::<bool>(),
        prop::collection::vec((act(), 0u8..100), 50..400),
    )
        .prop_map(|(users, seed_last_price, extra_pair, acts)| Scenario {
            users,
            seed_last_price,
            extra_pair,
            acts,
        })
}

// ------------------------------------------------------------------ driver

const KINDS: [OrderType; 16] = [
    OrderType::Limit,
    OrderType::Limit,
    OrderType::Limit,
    OrderType::Limit,
    OrderType::Limit,
    OrderType::Limit,
    OrderType::Limit,
    OrderType::Limit,
    OrderType::Market,
    OrderType::Market,
    OrderType::Market,
    OrderType::LimitMaker,
    OrderType::StopLossLimit,
    OrderType::StopLoss,
    OrderType::TakeProfit,
    OrderType::TakeProfitLimit,
];
const STPS: [StpMode; 4] = [
    StpMode::None,
    StpMode::ExpireTaker,
    StpMode::ExpireMaker,
    StpMode::ExpireBoth,
];
const DAY_MS: u64 = 86_400_000;

/// Centre price (ticks) and a typical lot (base units) of a pair, by symbol.
fn market(symbol: &str) -> (u64, u64) {
    match symbol {
        "BTCUSDT" => (3_000_000, 100_000), // 30000.00, 0.001 BTC
        "ETHUSDT" => (200_000, 1_000_000), // 2000.00, 0.01 ETH
        "ETHBTC" => (66_003, 400_000),     // 0.066003 (notional rounds), 0.004 ETH
        "ETHBTCX" => (94_286, 180_000),    // odd tick and step
        "SOLUSDT" => (15_000, 10_000_000), // 150.00, 0.1 SOL
        _ => (1_000, 1_000),
    }
}

/// The extra pair an `AddPair` may list: odd tick and step, so notional
/// rounding matters, and no maker fee.
fn pair_ethbtcx() -> PairSpec {
    let mut p = pair("ETHBTCX", ETH, BTC, 70, 3_000, 10_000);
    p.maker_fee_e8 = 0;
    p.taker_fee_e8 = 250_000;
    p
}

fn default_pair_spec(symbol: &str) -> Option<PairSpec> {
    Some(match symbol {
        "BTCUSDT" => pair("BTCUSDT", BTC, USDT, 1_000_000, 1_000, 5 * ONE),
        "ETHUSDT" => pair("ETHUSDT", ETH, USDT, 1_000_000, 10_000, 5 * ONE),
        "ETHBTC" => pair("ETHBTC", ETH, BTC, 100, 100_000, 10_000),
        "ETHBTCX" => pair_ethbtcx(),
        "SOLUSDT" => pair("SOLUSDT", AssetId(4), USDT, 1_000_000, 1_000_000, 5 * ONE),
        _ => return None,
    })
}

/// Counts of what the streams exercised (for the coverage test).
#[derive(Default, Debug)]
struct Stats {
    commands: usize,
    rejects: BTreeMap<&'static str, usize>,
    done: BTreeMap<OrderStatus, usize>,
    trades: usize,
    stops_triggered: usize,
    amended: usize,
    accepted: BTreeMap<OrderType, usize>,
    deposits_credited: usize,
    withdrawals_sent: usize,
    partial_rejects: usize,
    api_keys_created: usize,
    api_keys_revoked: usize,
    logins_locked: usize,
    kyc_submitted: usize,
    kyc_approved: usize,
    kyc_rejected: usize,
    risk_rules_created: usize,
    risk_events_raised: usize,
    risk_events_handled: usize,
    settlements: usize,
    /// Orders canceled by a suspension (`SetUserStatus` with
    /// `cancel_orders`).
    suspension_cancels: usize,
}

struct Driver {
    e: Engine,
    r: ReferenceEngine,
    /// Engine restored from a snapshot, driven alongside once present.
    restored: Option<Engine>,
    seq: u64,
    ts: u64,
    users: u64,
    /// (id, user, pair, client id) of every accepted order.
    known: Vec<(OrderId, UserId, PairId, ClientOrderId)>,
    withdrawals: Vec<u64>,
    ev_e: Vec<Event>,
    ev_r: Vec<Event>,
    ev_s: Vec<Event>,
    stats: Stats,
}

type TestResult = Result<(), TestCaseError>;

/// The first difference of two event lists, with a little context.
fn diff_events(engine: &[Event], other: &[Event]) -> String {
    let first = engine
        .iter()
        .zip(other)
        .position(|(a, b)| a != b)
        .unwrap_or(engine.len().min(other.len()));
    let mut s = format!(
        "{} events from Engine, {} from the other; first difference at #{first}\n",
        engine.len(),
        other.len()
    );
    let start = first.saturating_sub(2);
    for (i, e) in engine.iter().enumerate().take(first).skip(start) {
        s += &format!("  same   [{i}] {e:?}\n");
    }
    for i in first..(first + 3) {
        if let Some(e) = engine.get(i) {
            s += &format!("  Engine [{i}] {e:?}\n");
        }
        if let Some(e) = other.get(i) {
            s += &format!("  other  [{i}] {e:?}\n");
        }
    }
    s
}

impl Driver {
    fn new(users: u8) -> Driver {
        Driver {
            e: Engine::new(),
            r: ReferenceEngine::new(),
            restored: None,
            seq: 0,
            ts: 1_700_000_000_000,
            users: users as u64,
            known: Vec::new(),
            withdrawals: Vec::new(),
            ev_e: Vec::new(),
            ev_r: Vec::new(),
            ev_s: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Apply one command to every engine and demand identical events.
    fn step(&mut self, idx: usize, cmd: &Command) -> TestResult {
        self.seq += 1;
        self.ev_e.clear();
        self.ev_r.clear();
        let hash_before = self.e.state_hash();
        self.e.apply(self.seq, self.ts, cmd, &mut self.ev_e);
        self.r.apply(self.seq, self.ts, cmd, &mut self.ev_r);
        if self.ev_e != self.ev_r {
            return Err(TestCaseError::fail(format!(
                "events differ at command #{idx} (seq {}): {cmd:?}\n{}",
                self.seq,
                diff_events(&self.ev_e, &self.ev_r)
            )));
        }
        if let Err(msg) = self.e.check_invariants() {
            return Err(TestCaseError::fail(format!(
                "invariant violated after command #{idx} {cmd:?}: {msg}"
            )));
        }
        if let [Event::Rejected { .. }] = self.ev_e.as_slice() {
            prop_assert_eq!(
                hash_before,
                self.e.state_hash(),
                "rejected command #{} changed state: {:?}",
                idx,
                cmd
            );
        }
        if let Some(s) = self.restored.as_mut() {
            self.ev_s.clear();
            s.apply(self.seq, self.ts, cmd, &mut self.ev_s);
            if self.ev_e != self.ev_s {
                return Err(TestCaseError::fail(format!(
                    "restored engine differs at command #{idx}: {cmd:?}\n{}",
                    diff_events(&self.ev_e, &self.ev_s)
                )));
            }
        }
        self.observe();
        Ok(())
    }

    /// Setup commands must succeed.
    fn setup(&mut self, cmd: Command) -> TestResult {
        self.step(usize::MAX, &cmd)?;
        if let Some(Event::Rejected { reason }) = self.ev_e.first() {
            return Err(TestCaseError::fail(format!(
                "setup {cmd:?} rejected: {reason:?}"
            )));
        }
        Ok(())
    }

    fn observe(&mut self) {
        let st = &mut self.stats;
        st.commands += 1;
        if let Some(Event::UserStatusChanged {
            status: UserStatus::Suspended,
            ..
        }) = self.ev_e.first()
        {
            st.suspension_cancels += self.ev_e[1..]
                .iter()
                .filter(|e| matches!(e, Event::OrderDone { .. }))
                .count();
        }
        let mut rejected_part = false;
        for ev in &self.ev_e {
            match ev {
                Event::Rejected { reason } => {
                    *st.rejects.entry(reason.name()).or_default() += 1;
                    rejected_part = true;
                }
                Event::OrderAccepted(o) => {
                    self.known.push((o.id, o.user, o.pair, o.client_id));
                    *st.accepted.entry(o.kind).or_default() += 1;
                }
                Event::OrderDone { status, .. } => *st.done.entry(*status).or_default() += 1,
                Event::Trade(_) => st.trades += 1,
                Event::StopTriggered { .. } => st.stops_triggered += 1,
                Event::OrderAmended { .. } => st.amended += 1,
                Event::Balance(BalanceChange {
                    cause: BalanceCause::Deposit(_),
                    ..
                }) => st.deposits_credited += 1,
                Event::ApiKeyCreated { .. } => st.api_keys_created += 1,
                Event::ApiKeyRevoked { .. } => st.api_keys_revoked += 1,
                Event::RiskRuleCreated(_) => st.risk_rules_created += 1,
                Event::RiskEventRaised(_) => st.risk_events_raised += 1,
                Event::RiskEventStatusChanged { .. } => st.risk_events_handled += 1,
                Event::LoginRecorded {
                    locked_until_ms, ..
                } if *locked_until_ms > 0 => st.logins_locked += 1,
                Event::KycSubmitted(_) => st.kyc_submitted += 1,
                Event::KycReviewed { status, .. } => match status {
                    KycStatus::Approved => st.kyc_approved += 1,
                    _ => st.kyc_rejected += 1,
                },
                Event::SettlementRequested { .. } => st.settlements += 1,
                Event::WithdrawalUpdated(w) => {
                    if !self.withdrawals.contains(&w.id) {
                        self.withdrawals.push(w.id);
                    }
                    if w.status == WithdrawalStatus::Sent {
                        st.withdrawals_sent += 1;
                    }
                }
                _ => {}
            }
        }
        if rejected_part && self.ev_e.len() > 1 {
            st.partial_rejects += 1;
        }
    }

    fn advance_clock(&mut self, sel: u8) {
        self.ts = match sel {
            0..=89 => self.ts + 1 + sel as u64 * 7,
            90..=95 => self.ts + DAY_MS,
            // The host clock stepped back; the engine must not.
            _ => self.ts - 5_000,
        };
    }

    // ------------------------------------------------------- resolution

    fn user(&self, sel: u8) -> UserId {
        match sel {
            0..=37 => UserId(1 + sel as u64 % self.users),
            38 => UserId(0),
            // A user created during the stream, or nobody.
            _ => UserId(self.users + 1),
        }
    }

    fn pair(&self, sel: u8) -> PairId {
        match sel {
            0..=14 => BTCUSDT,
            15..=22 => ETHUSDT,
            23..=30 => ETHBTC,
            31..=38 if self.e.pairs().len() >= 4 => PairId(4),
            31..=38 => ETHBTC,
            _ => PairId(9),
        }
    }

    fn asset(&self, sel: u8) -> AssetId {
        match sel {
            0 | 1 => BTC,
            2 | 3 => ETH,
            4 | 5 => USDT,
            6 => AssetId(4),
            _ => AssetId(77),
        }
    }

    fn pair_info(&self, pair: PairId) -> Option<&Pair> {
        self.e.pair(pair).map(|p| &p.pair)
    }

    fn new_order(&self, s: &Spec, user: UserId, pair: PairId) -> NewOrder {
        let (center, unit, step, p) = match self.pair_info(pair) {
            Some(p) => {
                let (c, u) = market(&p.spec.symbol);
                (c, u, p.spec.step_units, Some(p))
            }
            None => (1_000, 1_000, 1_000, None),
        };
        let kind = KINDS[s.kind as usize % KINDS.len()];
        let side = if s.sell { Side::Sell } else { Side::Buy };
        let near = |off: i8| center.saturating_add_signed(off as i64);
        // Limit prices lean one tick towards the other side, so books cross.
        let lean = if s.sell { -1 } else { 1 };
        let mut price = if kind.has_limit_price() {
            near(s.price + lean)
        } else {
            0
        };
        let mut stop = if kind.is_stop() { near(s.stop) } else { 0 };
        let q = s.qty as u64;
        let mut qty = match s.qty {
            0..=739 => (1 + q % 25) * unit,
            740..=939 => (1 + q % 400) * step,
            940..=954 => 0,
            955..=964 => unit + 1,
            965..=972 => u64::MAX,
            973..=980 => u64::MAX - u64::MAX % step,
            981..=990 => 9_000 * ONE,
            _ => 300 * unit,
        };
        let mut quote_qty = 0;
        if kind == OrderType::Market && s.quote >= 10 {
            let notional = |q: u64, at: u64| p.and_then(|p| p.notional(q, at)).unwrap_or(1_000);
            qty = 0;
            quote_qty = match s.quote {
                10..=14 => notional(unit * (s.quote as u64 - 9), center),
                15..=17 => notional(unit * (s.quote as u64 - 14), near(s.price)),
                18 => 1,
                _ => u64::MAX,
            };
        }
        match s.odd {
            0 => price = if price == 0 { center } else { 0 },
            1 => price = u64::MAX,
            2 => price = center * 3,
            3 => price = center / 3,
            4 => stop = if stop == 0 { center } else { 0 },
            5 => quote_qty = 5 * ONE,
            6 => stop = u64::MAX,
            7 => price = 100_000_000_001,
            8 => price = 100_000_000_000,
            _ => {}
        }
        NewOrder {
            user,
            pair,
            side,
            kind,
            tif: match s.tif {
                0..=5 => TimeInForce::Gtc,
                6 | 7 => TimeInForce::Ioc,
                _ => TimeInForce::Fok,
            },
            price: Price(price),
            qty: Qty(qty),
            quote_qty,
            stop_price: Price(stop),
            client_id: if s.cid < 8 {
                ClientOrderId::NONE
            } else {
                ClientOrderId::new(&format!("c{}", s.cid - 8)).expect("valid")
            },
            stp: STPS[s.stp as usize % 4],
        }
    }

    fn open_known(&self) -> Vec<(OrderId, UserId, PairId, ClientOrderId)> {
        self.known
            .iter()
            .filter(|k| self.e.order(k.0).is_some())
            .copied()
            .collect()
    }

    /// (user, pair, reference) for a cancel/amend target.
    fn target(&self, t: &Target) -> (UserId, PairId, OrderRef) {
        let open = self.open_known();
        let closed: Vec<_> = self
            .known
            .iter()
            .filter(|k| self.e.order(k.0).is_none())
            .copied()
            .collect();
        let pick = |v: &[(OrderId, UserId, PairId, ClientOrderId)]| {
            (!v.is_empty()).then(|| v[t.pick as usize % v.len()])
        };
        let bogus = (UserId(1), BTCUSDT, OrderRef::Id(OrderId(999_999)));
        match t.mode {
            0..=7 => pick(&open).map_or(bogus, |o| (o.1, o.2, OrderRef::Id(o.0))),
            8 | 9 => pick(&open).map_or(bogus, |o| {
                let r = if o.3.is_none() {
                    OrderRef::Id(o.0)
                } else {
                    OrderRef::Client(o.3)
                };
                (o.1, o.2, r)
            }),
            10 => pick(&closed).map_or(bogus, |o| (o.1, o.2, OrderRef::Id(o.0))),
            // Someone else's order, or the right order on the wrong pair.
            11 => pick(&open).map_or(bogus, |o| {
                (UserId(1 + o.1 .0 % self.users), o.2, OrderRef::Id(o.0))
            }),
            12 => pick(&open).map_or(bogus, |o| (o.1, PairId(1 + o.2 .0 % 3), OrderRef::Id(o.0))),
            _ => (
                UserId(1),
                BTCUSDT,
                OrderRef::Client(ClientOrderId::new("c5").expect("valid")),
            ),
        }
    }

    fn amount(sel: u8) -> u64 {
        [
            ONE / 100,
            ONE / 10,
            ONE,
            5 * ONE,
            999,
            0,
            u64::MAX,
            100 * ONE,
        ][sel as usize % 8]
    }

    fn command(&self, act: &Act) -> Command {
        match *act {
            Act::Place(s) => {
                Command::PlaceOrder(self.new_order(&s, self.user(s.user), self.pair(s.pair)))
            }
            Act::Cancel(t) => {
                let (user, pair, target) = self.target(&t);
                Command::CancelOrder { user, pair, target }
            }
            Act::CancelAll { user, pair } => Command::CancelAll {
                user: self.user(user),
                pair: self.pair(pair),
            },
            Act::Replace {
                target,
                allow_failure,
                new,
            } => {
                let (user, pair, target) = self.target(&target);
                // Mostly the same user and pair (the cancel must match them).
                let (user, pair) = if new.odd < 135 {
                    (user, pair)
                } else {
                    (self.user(new.user), self.pair(new.pair))
                };
                Command::CancelReplace {
                    target,
                    mode: if allow_failure {
                        CancelReplaceMode::AllowFailure
                    } else {
                        CancelReplaceMode::StopOnFailure
                    },
                    new: self.new_order(&new, user, pair),
                }
            }
            Act::Amend { target, qty } => {
                let (user, pair, t) = self.target(&target);
                let id = match t {
                    OrderRef::Id(id) => Some(id),
                    OrderRef::Client(c) => self.e.order_by_client_id(user, &c).map(|o| o.id),
                };
                let (o_qty, filled, step) = id
                    .and_then(|id| self.e.order(id))
                    .map(|o| {
                        let step = self.pair_info(o.pair).map_or(1, |p| p.spec.step_units);
                        (o.qty.0, o.filled.0, step)
                    })
                    .unwrap_or((ONE, 0, 1_000));
                let rem = o_qty - filled;
                let new_qty = match qty {
                    0..=5 => {
                        let keep = (rem * (qty as u64 + 1) / 8) / step * step;
                        filled + keep.max(step)
                    }
                    6 => o_qty,
                    7 => filled,
                    8 => filled + step + 1,
                    _ => 0,
                };
                Command::AmendQty {
                    user,
                    pair,
                    target: t,
                    new_qty: Qty(new_qty),
                }
            }
            Act::Deposit {
                user,
                asset,
                amount,
                tx,
                conf,
            } => Command::Deposit {
                user: self.user(user),
                asset: self.asset(asset),
                amount: [
                    ONE,
                    10 * ONE,
                    100 * ONE,
                    1_000 * ONE,
                    50_000 * ONE,
                    0,
                    u64::MAX / 2,
                    u64::MAX,
                    7,
                    123_456_789,
                ][amount as usize % 10],
                tx_hash: match tx {
                    0..=7 => format!("tx-{tx}"),
                    8 => String::new(),
                    _ => "f".repeat(200),
                },
                confirmations: conf as u32,
                by: None,
            },
            Act::Withdraw {
                user,
                asset,
                amount,
                address,
            } => Command::RequestWithdrawal {
                user: self.user(user),
                asset: self.asset(asset),
                amount: Self::amount(amount),
                address: if address {
                    "bc1qaddr".into()
                } else {
                    String::new()
                },
            },
            Act::Complete { pick, tx_ok } => Command::CompleteWithdrawal {
                withdrawal: self.withdrawal(pick),
                tx_hash: if tx_ok {
                    format!("0xsent{pick}")
                } else {
                    String::new()
                },
                by: None,
            },
            Act::RejectWithdrawal { pick } => Command::RejectWithdrawal {
                withdrawal: self.withdrawal(pick),
                by: None,
            },
            Act::Adjust {
                user,
                asset,
                amount,
                credit,
                reason,
            } => Command::Adjust {
                user: self.user(user),
                asset: self.asset(asset),
                amount: Self::amount(amount),
                credit,
                reason: if reason {
                    "correction".into()
                } else {
                    String::new()
                },
                by: None,
            },
            Act::Admin { what, x, y } => self.admin(what, x, y),
            Act::Identity { what, user, key, x } => self.identity(what, user, key, x),
            Act::Kyc {
                what,
                user,
                pick,
                x,
            } => self.kyc(what, user, pick, x),
            Act::Risk { what, x, y } => self.risk(what, x, y),
            Act::Settle { back, user } => {
                let today = self.ts / DAY_MS;
                Command::RunSettlement {
                    date: if back == 255 {
                        today + 1
                    } else {
                        today.saturating_sub(back as u64)
                    } as u32,
                    requested_by: self.user(user),
                }
            }
        }
    }

    /// KYC commands, concentrated on three users so that second submissions
    /// while one is pending happen; reviews mostly hit pending records, by
    /// someone else than the owner.
    fn kyc(&self, what: u8, user_sel: u8, pick: u8, x: u8) -> Command {
        let user = if user_sel < 34 {
            UserId(1 + user_sel as u64 % 3)
        } else {
            self.user(user_sel)
        };
        if what < 4 {
            return Command::SubmitKyc {
                user,
                level: [1, 2, 3, 1, 2, 1, 2, 3, 1, 2, 3, 0, 4, 255][x as usize % 14],
                document_type: KycDocumentType::ALL[x as usize % 5],
                document_number: match (x / 9) % 12 {
                    0..=9 => vec![x; 29 + x as usize % 60],
                    10 => Vec::new(),
                    _ => vec![x; 513],
                },
                data: match pick % 10 {
                    0..=6 => format!("{{\"name\":\"u{x}\"}}"),
                    7 => "  { }  ".into(),
                    8 => "[1]".into(),
                    _ => format!("{{\"pad\":\"{}\"}}", "x".repeat(4090)),
                },
            };
        }
        let records: Vec<&KycRecord> = self.e.kyc_records().collect();
        let pending: Vec<&KycRecord> = records
            .iter()
            .copied()
            .filter(|k| k.status == KycStatus::Pending)
            .collect();
        let chosen = match pick % 8 {
            0..=4 if !pending.is_empty() => Some(pending[pick as usize % pending.len()]),
            0..=6 if !records.is_empty() => Some(records[pick as usize % records.len()]),
            _ => None,
        };
        let (kyc, owner) = chosen.map_or((999, UserId(1)), |k| (k.id, k.user));
        let reviewer = match x % 16 {
            // The owner reviewing their own record.
            0 => owner,
            1 => UserId(0),
            2 => UserId(77),
            // Another of the setup users.
            _ => UserId(1 + (owner.0 + x as u64 % (self.users - 1)) % self.users),
        };
        Command::ReviewKyc {
            kyc,
            reviewer,
            approve: !x.is_multiple_of(3),
            notes: match (x / 16) % 8 {
                0 => String::new(),
                1 => "n".repeat(1025),
                2 => "   ".into(),
                _ => format!("checked {x}"),
            },
        }
    }

    fn risk(&self, what: u8, x: u8, y: u8) -> Command {
        // Mostly a live user; the engine checks activity, not roles.
        let by = self.user(x % 40);
        let (next_rule, next_event) = self.e.next_risk_ids();
        let rule = (y as u64 % (next_rule + 1)).max(1);
        let action = if y.is_multiple_of(3) {
            RiskAction::Block
        } else {
            RiskAction::Alert
        };
        let level = RiskLevel::ALL[y as usize % 4];
        let create = |kind, parameters: String, action| Command::CreateRiskRule {
            by,
            name: match x % 8 {
                7 => "bad[name]".to_string(),
                n => format!("rule {n}"),
            },
            kind,
            parameters,
            level,
            action,
            enabled: !y.is_multiple_of(7),
            description: String::new(),
        };
        match what {
            0..=3 => {
                let (max, symbol) = match y % 8 {
                    0 => ("20", Some("BTCUSDT")),
                    1 => ("100", Some("BTCUSDT")),
                    2 => ("1000", None),
                    3 => ("100", Some("ETHUSDT")),
                    4 => ("0.0005", Some("ETHBTC")),
                    5 => ("0.01", None),
                    6 => ("5", Some("NOPEUSDT")),
                    _ => ("-1", None),
                };
                let params = match symbol {
                    Some(s) => format!(r#"{{"max_notional":"{max}","symbol":"{s}"}}"#),
                    None => format!(r#"{{"max_notional":"{max}"}}"#),
                };
                create(RiskRuleType::OrderNotional, params, action)
            }
            4 | 5 => {
                let asset = ["BTC", "ETH", "USDT", "DOGE"][x as usize % 4];
                let threshold = ["0.01", "1", "0.1", "0.000000001"][y as usize % 4];
                create(
                    RiskRuleType::LargeWithdrawal,
                    format!(r#"{{"asset":"{asset}","threshold":"{threshold}"}}"#),
                    action,
                )
            }
            6 => create(
                RiskRuleType::LoginFailure,
                format!(r#"{{"max_failures":{}}}"#, y % 4),
                action,
            ),
            7 => create(
                RiskRuleType::SelfTrade,
                if y.is_multiple_of(2) {
                    "{}".to_string()
                } else {
                    r#"{"symbol":"BTCUSDT"}"#.to_string()
                },
                action,
            ),
            8 => create(
                [RiskRuleType::Custom, RiskRuleType::OrderSize][y as usize % 2],
                ["{}", "[1]", r#"{"a":1}"#][x as usize % 3].to_string(),
                RiskAction::Alert,
            ),
            9 | 10 => Command::UpdateRiskRule {
                by,
                rule,
                changes: match x % 6 {
                    0 => RiskRuleChanges {
                        enabled: Some(!y.is_multiple_of(2)),
                        ..Default::default()
                    },
                    1 => RiskRuleChanges {
                        action: Some(action),
                        level: Some(level),
                        ..Default::default()
                    },
                    2 => RiskRuleChanges {
                        parameters: Some(r#"{"max_notional":"50"}"#.into()),
                        ..Default::default()
                    },
                    3 => RiskRuleChanges {
                        name: Some(format!("rule {}", y % 8)),
                        ..Default::default()
                    },
                    4 => RiskRuleChanges::default(),
                    _ => RiskRuleChanges {
                        description: Some("watch".into()),
                        enabled: Some(true),
                        ..Default::default()
                    },
                },
            },
            11 => Command::DeleteRiskRule { by, rule },
            12..=15 => Command::SetRiskEventStatus {
                by,
                event: y as u64 % (next_event + 1),
                status: RiskEventStatus::ALL[x as usize % 4],
                note: if x % 16 == 15 {
                    "\n".repeat(3)
                } else {
                    "ok".into()
                },
            },
            16 => Command::GrantRole {
                user: self.user(x % 40),
                role: [1, 2, 4, 8, 16, 3, 0][y as usize % 7],
                by: y.is_multiple_of(2).then(|| self.user(y % 40)),
            },
            17 => Command::RevokeRole {
                user: self.user(x % 40),
                role: [1, 1, 2, 4, 8, 16, 32][y as usize % 7],
                by: y.is_multiple_of(2).then(|| self.user(y % 40)),
            },
            // Template edits: a few names (one invalid), good and bad text.
            _ => Command::SetNotificationTemplate {
                by,
                name: [
                    "deposit_credited",
                    "order_filled",
                    "Bad Name",
                    "kyc_approved",
                ][y as usize % 4]
                    .into(),
                subject: ["Funds", "", "Done\n"][x as usize % 3].into(),
                content: match y % 5 {
                    0 => "x".repeat(engine::NOTIFY_TEMPLATE_CONTENT_MAX_LEN + 1),
                    1 => "line\n{amount}".into(),
                    _ => "{amount} {asset}".into(),
                },
                active: !y.is_multiple_of(6),
            },
        }
    }

    /// API key identifiers from a small pool (so duplicates and revokes of
    /// live keys happen), plus malformed ones.
    fn api_key(sel: u8) -> String {
        match sel {
            0..=12 => format!("Key{sel}"),
            13 => String::new(),
            14 => "k".repeat(65),
            _ => "bad-key".into(),
        }
    }

    fn identity(&self, what: u8, user_sel: u8, key: u8, x: u8) -> Command {
        let user = self.user(user_sel);
        match what {
            0..=3 => {
                let (kind, secret) = match (x / 10) % 12 {
                    0..=6 => (ApiKeyKind::Hmac, vec![x; 60]),
                    7..=9 => (ApiKeyKind::Ed25519, vec![x; 32]),
                    10 => (ApiKeyKind::Ed25519, vec![x; 31]),
                    _ if x.is_multiple_of(2) => (ApiKeyKind::Hmac, Vec::new()),
                    _ => (ApiKeyKind::Hmac, vec![x; 257]),
                };
                Command::CreateApiKey {
                    // Concentrated on two users so the key limit is reached.
                    user: if user_sel < 30 {
                        UserId(1 + user_sel as u64 % 2)
                    } else {
                        user
                    },
                    api_key: Self::api_key(key),
                    label: if x % 16 == 15 {
                        "l".repeat(65)
                    } else {
                        format!("bot {x}")
                    },
                    permissions: [1, 2, 3, 4, 5, 6, 7, 3, 1, 3, 7, 0, 8][x as usize % 13],
                    kind,
                    secret,
                }
            }
            4 | 5 => {
                // Mostly the key's owner, sometimes someone else.
                let api_key = Self::api_key(key);
                let user = match self.e.api_key(&api_key) {
                    Some((owner, _)) if !x.is_multiple_of(4) => owner,
                    _ => user,
                };
                Command::RevokeApiKey { user, api_key }
            }
            _ => Command::RecordLogin {
                // Concentrated on two users so lockouts happen.
                user: if user_sel < 36 {
                    UserId(1 + user_sel as u64 % 2)
                } else {
                    user
                },
                success: x.is_multiple_of(6),
            },
        }
    }

    fn withdrawal(&self, pick: u8) -> u64 {
        let n = self.withdrawals.len();
        let i = pick as usize % (n + 1);
        if i == n {
            999
        } else {
            self.withdrawals[i]
        }
    }

    fn admin(&self, what: u8, x: u8, y: u8) -> Command {
        match what {
            0..=2 => Command::SetPairStatus {
                pair: self.pair(x % 40),
                status: match y % 16 {
                    0..=12 => PairStatus::Trading,
                    13 | 14 => PairStatus::Halt,
                    _ => PairStatus::CancelOnly,
                },
                by: Some(UserId(1)),
            },
            3 | 4 => Command::SetUserStatus {
                user: self.user(x % 40),
                status: if y.is_multiple_of(8) {
                    UserStatus::Suspended
                } else {
                    UserStatus::Active
                },
                // Both a format 8 suspension (cancels the user's orders)
                // and one replayed from format 7 or before (keeps them).
                cancel_orders: !y.is_multiple_of(16),
                by: None,
            },
            5 => Command::SetKycLevel {
                user: self.user(x % 40),
                level: y % 5,
                by: None,
            },
            6 => Command::SetUserRoles {
                user: self.user(x % 40),
                roles: if y.is_multiple_of(3) {
                    64
                } else {
                    y as u32 % 32
                },
                by: None,
            },
            7 => Command::SetLimits {
                limits: Limits {
                    max_open_orders_per_user: match x % 10 {
                        0 => 0,
                        1 => 4,
                        2 => 12,
                        _ => 1_000,
                    },
                    max_open_orders_total: match y % 10 {
                        0 => 0,
                        1 => 15,
                        2 => 60,
                        _ => 10_000_000,
                    },
                    max_api_keys_per_user: match y % 7 {
                        0 => 0,
                        1 | 2 => 2,
                        _ => 30,
                    },
                    max_failed_logins: match x % 7 {
                        0 => 0,
                        1 | 2 => 2,
                        _ => 5,
                    },
                    lockout_ms: match y % 5 {
                        0 => 0,
                        1 => 1_000,
                        _ => 900_000,
                    },
                },
                by: None,
            },
            8 => Command::SetFeeAccount {
                user: if x.is_multiple_of(3) {
                    UserId(0)
                } else {
                    self.user(x % 40)
                },
                by: None,
            },
            9 | 10 => self.update_pair(self.pair(x % 40), y),
            11 | 15 => self.update_asset(self.asset(x % 8), y),
            12 => {
                let mut a = asset("SOL");
                match y % 6 {
                    0 => {}
                    1 => a = asset("BTC"),
                    2 => a.symbol = "sol".into(),
                    3 => a.decimals = 19,
                    4 => {
                        a.symbol = "DOGE".into();
                        a.decimals = 0;
                    }
                    _ => a.symbol = String::new(),
                }
                Command::AddAsset { spec: a, by: None }
            }
            13 => Command::AddPair {
                spec: Box::new(match y % 6 {
                    0 => pair_ethbtcx(),
                    1 => default_pair_spec("BTCUSDT").expect("known"),
                    2 => pair("BTCETH", BTC, ETH, 0, 1_000, 1),
                    3 => pair("XYZUSDT", AssetId(99), USDT, 1, 1, 1),
                    4 => pair("BTCBTC", BTC, BTC, 1, 1, 1),
                    _ => default_pair_spec("SOLUSDT").expect("known"),
                }),
                by: None,
            },
            _ => {
                let (username, email, roles) = match y % 8 {
                    0..=3 => (
                        format!("trader{}", x % 8),
                        format!("trader{}@ex.com", x % 8),
                        16,
                    ),
                    4 => (format!("TRADER{}", x % 8), format!("x{x}@ex.com"), 16),
                    5 => ("ab".to_string(), "ab@ex.com".to_string(), 16),
                    6 => (format!("mail{x}"), "USER1@example.com".to_string(), 16),
                    _ => (
                        "exchange".to_string(),
                        String::new(),
                        if x.is_multiple_of(2) { 64 } else { 0 },
                    ),
                };
                Command::CreateUser {
                    username,
                    email,
                    password_hash: "$argon2id$v=19$x".into(),
                    roles,
                }
            }
        }
    }

    fn update_pair(&self, id: PairId, y: u8) -> Command {
        let Some(p) = self.pair_info(id) else {
            return Command::UpdatePair {
                pair: id,
                spec: Box::new(default_pair_spec("BTCUSDT").expect("known")),
                by: None,
            };
        };
        let mut s = p.spec.clone();
        let (_, unit) = market(&s.symbol);
        match y % 15 {
            0 => (s.maker_fee_e8, s.taker_fee_e8) = (0, 0),
            1 => (s.maker_fee_e8, s.taker_fee_e8) = (100_000, 100_000),
            2 => (s.maker_fee_e8, s.taker_fee_e8) = (0, 2_000_000),
            3 => (s.maker_fee_e8, s.taker_fee_e8) = (50_000_000, FEE_RATE_SCALE),
            4 => s.price_band_pct = 0,
            5 => s.price_band_pct = 5,
            6 => s.price_band_pct = 50,
            7 => s.min_notional_units = 0,
            8 => s.max_notional_units = (s.min_notional_units * 40).max(20 * ONE),
            9 => s.max_notional_units = 0,
            10 => s.status = PairStatus::Halt,
            11 => s.tick_units += 1,
            12 => s.min_qty_units += 1,
            13 => s.market_max_qty_units = (5 * unit).max(s.min_qty_units),
            _ => s = default_pair_spec(&s.symbol).unwrap_or(s),
        }
        Command::UpdatePair {
            pair: id,
            spec: Box::new(s),
            by: Some(UserId(1)),
        }
    }

    fn update_asset(&self, id: AssetId, y: u8) -> Command {
        let mut s = match self.e.asset(id) {
            Some(a) => a.spec.clone(),
            None => asset("NOPE"),
        };
        match y % 12 {
            0 => s.withdraw_fee_units = 0,
            1 => s.withdraw_fee_units = 500,
            2 => s.withdraw_fee_units = 10 * ONE,
            3 => s.daily_withdraw_limit_units = 2 * ONE,
            4 => s.daily_withdraw_limit_units = 0,
            5 => s.min_withdraw_units = ONE,
            6 => s.active = false,
            7 => s.active = true,
            8 => s.confirmations = 1,
            9 => s.confirmations = 3,
            10 => s.symbol.push('X'),
            _ => s.decimals += 1,
        }
        Command::UpdateAsset {
            asset: id,
            spec: s,
            by: None,
        }
    }

    // ------------------------------------------------------------ running

    fn run_setup(&mut self, s: &Scenario) -> TestResult {
        // Lockouts that outlast the clock's day jumps, so attempts during a
        // lock happen (SetLimits in the stream brings short ones), and few
        // keys per user, so the limit is reached.
        self.setup(Command::SetLimits {
            limits: Limits {
                lockout_ms: 30 * DAY_MS,
                max_api_keys_per_user: 3,
                ..Limits::default()
            },
            by: None,
        })?;
        for sym in ["BTC", "ETH", "USDT"] {
            let mut spec = asset(sym);
            if sym == "ETH" {
                // 3 ETH a day at KYC level 1, 30 at level 2.
                spec.daily_withdraw_limit_units = 3 * ONE;
            }
            self.setup(Command::AddAsset { spec, by: None })?;
        }
        for sym in ["BTCUSDT", "ETHUSDT", "ETHBTC"] {
            self.setup(Command::AddPair {
                spec: Box::new(default_pair_spec(sym).expect("known")),
                by: None,
            })?;
        }
        for i in 1..=self.users {
            self.setup(Command::CreateUser {
                username: format!("user{i}"),
                email: format!("user{i}@example.com"),
                password_hash: "$argon2id$v=19$test".into(),
                roles: roles::TRADER,
            })?;
            for (a, amount) in [(BTC, 5 * ONE), (ETH, 100 * ONE), (USDT, 200_000 * ONE)] {
                self.setup(Command::Deposit {
                    user: UserId(i),
                    asset: a,
                    amount,
                    tx_hash: format!("setup-{i}-{}", a.0),
                    confirmations: 6,
                    by: None,
                })?;
            }
            if i % 2 == 1 || i == 2 {
                self.setup(Command::SetKycLevel {
                    user: UserId(i),
                    level: if i == 2 { 2 } else { 1 },
                    by: None,
                })?;
            }
        }
        let mut pairs = vec![BTCUSDT, ETHUSDT, ETHBTC];
        if s.extra_pair {
            self.setup(Command::AddPair {
                spec: Box::new(pair_ethbtcx()),
                by: None,
            })?;
            pairs.push(PairId(4));
        }
        for (k, pair) in pairs.into_iter().enumerate() {
            let sym = &self.pair_info(pair).expect("listed").spec.symbol;
            let (center, unit) = market(sym);
            if s.seed_last_price[k] {
                for (user, side) in [(UserId(1), Side::Sell), (UserId(2), Side::Buy)] {
                    self.setup(Command::PlaceOrder(limit(user, pair, side, center, unit)))?;
                }
            }
            // A small ladder on both sides, from different users.
            for i in 1..=3u64 {
                let user = UserId(1 + i % self.users);
                let bid = limit(user, pair, Side::Buy, center - i, 2 * unit);
                let ask = limit(
                    UserId(1 + (i + 1) % self.users),
                    pair,
                    Side::Sell,
                    center + i,
                    2 * unit,
                );
                self.setup(Command::PlaceOrder(bid))?;
                self.setup(Command::PlaceOrder(ask))?;
            }
        }
        Ok(())
    }

    fn run_act(&mut self, idx: usize, act: &Act, clock: u8) -> TestResult {
        self.advance_clock(clock);
        let cmd = self.command(act);
        self.step(idx, &cmd)?;
        if idx % 25 == 24 {
            self.compare_state()?;
        }
        Ok(())
    }

    /// Everything observable must agree: balances, books, open orders,
    /// users and wallet records.
    fn compare_state(&self) -> TestResult {
        let (e, r) = (&self.e, &self.r);
        prop_assert_eq!(e.users().len(), r.user_count(), "user count");
        prop_assert_eq!(e.assets().len(), r.asset_count(), "asset count");
        prop_assert_eq!(e.pairs().len(), r.pair_count(), "pair count");
        prop_assert_eq!(e.fee_account(), r.fee_account(), "fee account");
        for u in e.users() {
            for a in 1..=e.assets().len() as u32 {
                prop_assert_eq!(
                    e.balance(u.id, AssetId(a)),
                    r.balance(u.id, AssetId(a)),
                    "balance of user {} in asset {}",
                    u.id,
                    a
                );
            }
            let open = r.open_orders_of(u.id);
            prop_assert_eq!(u.open_orders as usize, open, "open orders of user {}", u.id);
            prop_assert_eq!(
                Some((u.api_keys.clone(), u.failed_logins, u.locked_until_ms)),
                r.login_state(u.id),
                "API keys and login state of user {}",
                u.id
            );
            for k in &u.api_keys {
                prop_assert_eq!(e.api_key(&k.api_key).map(|(o, _)| o), Some(u.id));
            }
        }
        for ps in e.pairs() {
            let id = ps.pair.id;
            prop_assert_eq!(
                Some(ps.last_price),
                r.last_price(id),
                "last price of pair {}",
                id
            );
            for side in [Side::Buy, Side::Sell] {
                prop_assert_eq!(
                    e.book_orders(id, side),
                    r.book_orders(id, side),
                    "book {} {:?}",
                    id,
                    side
                );
            }
        }
        prop_assert_eq!(
            e.open_order_count(),
            r.open_order_count(),
            "open order count"
        );
        for (id, ..) in &self.known {
            prop_assert_eq!(e.order(*id).copied(), r.order(*id), "open order {}", id);
        }
        let deposits: Vec<Deposit> = e.deposits().cloned().collect();
        prop_assert_eq!(deposits, r.deposits(), "deposits");
        let withdrawals: Vec<Withdrawal> = e.withdrawals().cloned().collect();
        prop_assert_eq!(withdrawals, r.withdrawals(), "withdrawals");
        let kyc: Vec<KycRecord> = e.kyc_records().cloned().collect();
        prop_assert_eq!(kyc, r.kyc_records(), "KYC records");
        for u in e.users() {
            prop_assert_eq!(
                Some(u.kyc_level),
                r.kyc_level(u.id),
                "KYC level of {}",
                u.id
            );
        }
        let rules: Vec<RiskRule> = e.risk_rules().cloned().collect();
        prop_assert_eq!(rules, r.risk_rules(), "risk rules");
        let open: Vec<RiskEvent> = e.open_risk_events().cloned().collect();
        prop_assert_eq!(open, r.open_risk_events(), "open risk events");
        for u in e.users() {
            prop_assert_eq!(Some(u.roles), r.roles_of(u.id), "roles of user {}", u.id);
        }
        let settlements: Vec<Settlement> = e.settlements().copied().collect();
        prop_assert_eq!(settlements, r.settlements(), "settlements");
        Ok(())
    }
}

fn run(s: &Scenario, snapshot_at: Option<usize>) -> Result<Stats, TestCaseError> {
    let mut d = Driver::new(s.users);
    d.run_setup(s)?;
    for (i, (act, clock)) in s.acts.iter().enumerate() {
        if snapshot_at == Some(i) {
            let bytes = d.e.snapshot_bytes();
            let restored = Engine::from_snapshot(&bytes)
                .map_err(|err| TestCaseError::fail(format!("snapshot before #{i}: {err}")))?;
            prop_assert_eq!(
                restored.state_hash(),
                d.e.state_hash(),
                "hash after restore"
            );
            prop_assert_eq!(restored.last_seq(), d.e.last_seq());
            d.restored = Some(restored);
        }
        d.run_act(i, act, *clock)?;
    }
    d.compare_state()?;
    if let Some(restored) = &d.restored {
        prop_assert_eq!(restored.state_hash(), d.e.state_hash(), "hash at end");
    }
    Ok(d.stats)
}

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn engine_matches_reference(s in scenario()) {
        run(&s, None)?;
    }

    #[test]
    fn snapshot_restore_mid_stream(s in scenario(), cut in any::<Index>()) {
        let at = cut.index(s.acts.len());
        run(&s, Some(at))?;
    }
}

/// The generator must keep exercising what the property is about: a fixed
/// sample of streams has to produce trades, triggered stops, STP and FOK
/// expiries, fills by quote, amendments and a broad set of rejections.
#[test]
fn generator_covers_the_rules() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = scenario();
    let mut total = Stats::default();
    for _ in 0..60 {
        let s = strategy.new_tree(&mut runner).expect("scenario").current();
        let st = run(&s, None).expect("streams agree");
        total.commands += st.commands;
        total.trades += st.trades;
        total.stops_triggered += st.stops_triggered;
        total.amended += st.amended;
        total.deposits_credited += st.deposits_credited;
        total.withdrawals_sent += st.withdrawals_sent;
        total.partial_rejects += st.partial_rejects;
        total.api_keys_created += st.api_keys_created;
        total.api_keys_revoked += st.api_keys_revoked;
        total.logins_locked += st.logins_locked;
        total.kyc_submitted += st.kyc_submitted;
        total.kyc_approved += st.kyc_approved;
        total.kyc_rejected += st.kyc_rejected;
        total.risk_rules_created += st.risk_rules_created;
        total.risk_events_raised += st.risk_events_raised;
        total.risk_events_handled += st.risk_events_handled;
        total.settlements += st.settlements;
        total.suspension_cancels += st.suspension_cancels;
        for (k, v) in st.rejects {
            *total.rejects.entry(k).or_default() += v;
        }
        for (k, v) in st.done {
            *total.done.entry(k).or_default() += v;
        }
        for (k, v) in st.accepted {
            *total.accepted.entry(k).or_default() += v;
        }
    }
    println!("{total:#?}");
    assert!(total.trades > 300, "trades: {}", total.trades);
    assert!(
        total.stops_triggered > 5,
        "stops: {}",
        total.stops_triggered
    );
    assert!(total.amended > 10);
    assert!(total.deposits_credited > 5);
    assert!(total.withdrawals_sent > 0);
    assert!(total.partial_rejects > 5);
    assert!(total.api_keys_created > 20, "{}", total.api_keys_created);
    assert!(total.api_keys_revoked > 5, "{}", total.api_keys_revoked);
    assert!(total.logins_locked > 3, "{}", total.logins_locked);
    assert!(total.kyc_submitted > 20, "{}", total.kyc_submitted);
    assert!(total.kyc_approved > 5, "{}", total.kyc_approved);
    assert!(total.kyc_rejected > 3, "{}", total.kyc_rejected);
    assert!(
        total.risk_rules_created > 20,
        "{}",
        total.risk_rules_created
    );
    assert!(
        total.risk_events_raised > 20,
        "{}",
        total.risk_events_raised
    );
    assert!(
        total.risk_events_handled > 3,
        "{}",
        total.risk_events_handled
    );
    assert!(total.settlements > 5, "{}", total.settlements);
    assert!(total.suspension_cancels > 5, "{}", total.suspension_cancels);
    for kind in OrderType::ALL {
        assert!(
            total.accepted.get(&kind).copied().unwrap_or(0) > 5,
            "{kind:?} accepted"
        );
    }
    for status in [
        OrderStatus::Filled,
        OrderStatus::Canceled,
        OrderStatus::Expired,
        OrderStatus::ExpiredInMatch,
    ] {
        assert!(
            total.done.get(&status).copied().unwrap_or(0) > 5,
            "{status:?}"
        );
    }
    use RejectReason::*;
    for reason in [
        UnknownUser,
        UserSuspended,
        UnknownPair,
        UnknownAsset,
        PriceFilter,
        LotSize,
        MarketLotSize,
        MinNotional,
        PriceBand,
        InvalidPrice,
        InvalidStopPrice,
        InvalidQuantity,
        InvalidOrderParams,
        StopWouldTriggerImmediately,
        WouldTakeAsMaker,
        DuplicateClientOrderId,
        UnknownOrder,
        InvalidAmendQty,
        InsufficientBalance,
        InvalidAmount,
        KycRequired,
        BelowMinWithdraw,
        UnknownWithdrawal,
        WithdrawalNotPending,
        DepositUserMismatch,
        DailyWithdrawLimit,
        AssetInactive,
        PairNotTrading,
        PairCancelOnly,
        MaxNumOrders,
        Overflow,
        UnknownApiKey,
        ApiKeyExists,
        TooManyApiKeys,
        InvalidApiKey,
        UserLocked,
        InvalidKycLevel,
        InvalidKycSubmission,
        KycAlreadyPending,
        UnknownKycRecord,
        KycNotPending,
        InvalidKycReview,
        KycSelfReview,
        InvalidRiskRule,
        UnknownRiskRule,
        RiskRuleNameTaken,
        RiskOrderNotional,
        RiskLargeWithdrawal,
        InvalidRole,
        RoleUnchanged,
        SettlementDayNotOver,
        AlreadySettled,
    ] {
        assert!(
            total.rejects.contains_key(reason.name()),
            "never rejected with {reason:?}"
        );
    }
}
