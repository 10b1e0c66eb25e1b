//! Shared setup for engine tests: the default assets and pairs of API.md
//! (BTC, ETH, USDT with 8 decimals; BTCUSDT, ETHUSDT, ETHBTC) and helpers to
//! drive an engine while checking invariants after every command.
#![allow(dead_code)]

use engine::*;

pub const BTC: AssetId = AssetId(1);
pub const ETH: AssetId = AssetId(2);
pub const USDT: AssetId = AssetId(3);
pub const BTCUSDT: PairId = PairId(1);
pub const ETHUSDT: PairId = PairId(2);
pub const ETHBTC: PairId = PairId(3);
pub const ONE: u64 = 100_000_000; // 1.0 in 8-decimal units

pub fn asset(symbol: &str) -> AssetSpec {
    AssetSpec {
        symbol: symbol.into(),
        name: symbol.into(),
        decimals: 8,
        min_withdraw_units: 1_000,
        withdraw_fee_units: 500,
        daily_withdraw_limit_units: 0,
        confirmations: 2,
        active: true,
    }
}

pub fn pair(
    symbol: &str,
    base: AssetId,
    quote: AssetId,
    tick: u64,
    step: u64,
    min_notional: u64,
) -> PairSpec {
    PairSpec {
        symbol: symbol.into(),
        base,
        quote,
        tick_units: tick,
        step_units: step,
        min_qty_units: step,
        max_qty_units: 9_000 * ONE,
        market_max_qty_units: 9_000 * ONE,
        min_notional_units: min_notional,
        max_notional_units: 0,
        min_price_ticks: 1,
        max_price_ticks: 100_000_000_000,
        maker_fee_e8: 100_000,
        taker_fee_e8: 100_000,
        price_band_pct: 50,
        status: PairStatus::Trading,
    }
}

pub struct Harness {
    pub e: Engine,
    pub seq: u64,
    pub ts: u64,
    pub out: Vec<Event>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_capacity(1024)
    }

    /// `orders`: open orders the engine preallocates for.
    pub fn with_capacity(orders: usize) -> Harness {
        let mut h = Harness {
            e: Engine::with_capacity(orders),
            seq: 0,
            ts: 1_700_000_000_000,
            out: Vec::new(),
        };
        for s in ["BTC", "ETH", "USDT"] {
            h.ok(Command::AddAsset {
                spec: asset(s),
                by: None,
            });
        }
        // BTCUSDT tick 0.01, step 0.00001, minNotional 5
        h.ok(Command::AddPair {
            spec: Box::new(pair("BTCUSDT", BTC, USDT, 1_000_000, 1_000, 5 * ONE)),
            by: None,
        });
        // ETHUSDT tick 0.01, step 0.0001, minNotional 5
        h.ok(Command::AddPair {
            spec: Box::new(pair("ETHUSDT", ETH, USDT, 1_000_000, 10_000, 5 * ONE)),
            by: None,
        });
        // ETHBTC tick 0.000001, step 0.001, minNotional 0.0001
        h.ok(Command::AddPair {
            spec: Box::new(pair("ETHBTC", ETH, BTC, 100, 100_000, 10_000)),
            by: None,
        });
        h
    }

    /// Apply and return this command's events; invariants checked.
    pub fn run(&mut self, cmd: Command) -> Vec<Event> {
        self.seq += 1;
        self.ts += 1;
        self.out.clear();
        self.e.apply(self.seq, self.ts, &cmd, &mut self.out);
        self.e.assert_invariants();
        self.out.clone()
    }

    pub fn ok(&mut self, cmd: Command) -> Vec<Event> {
        let ev = self.run(cmd.clone());
        if let Some(Event::Rejected { reason }) = ev.first() {
            panic!("{cmd:?} rejected: {reason:?}");
        }
        ev
    }

    pub fn reject(&mut self, cmd: Command) -> RejectReason {
        let hash = self.e.state_hash();
        let ev = self.run(cmd.clone());
        match ev.as_slice() {
            [Event::Rejected { reason }] => {
                assert_eq!(hash, self.e.state_hash(), "rejected command changed state");
                *reason
            }
            other => panic!("{cmd:?} not rejected: {other:?}"),
        }
    }

    pub fn user(&mut self, name: &str) -> UserId {
        self.ok(Command::CreateUser {
            username: name.into(),
            email: format!("{name}@example.com"),
            password_hash: "$argon2id$v=19$test".into(),
            roles: roles::TRADER,
        });
        self.e.user_by_name(name).unwrap().id
    }

    pub fn fund(&mut self, user: UserId, asset: AssetId, amount: u64) {
        let tx = format!("tx-{}-{}", self.seq, user);
        self.ok(Command::Deposit {
            user,
            asset,
            amount,
            tx_hash: tx,
            confirmations: 100,
            by: None,
        });
    }

    pub fn bal(&self, user: UserId, asset: AssetId) -> (u64, u64) {
        let b = self.e.balance(user, asset);
        (b.available, b.frozen)
    }
}

pub fn limit(user: UserId, pair: PairId, side: Side, price: u64, qty: u64) -> NewOrder {
    NewOrder {
        user,
        pair,
        side,
        kind: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price: Price(price),
        qty: Qty(qty),
        quote_qty: 0,
        stop_price: Price(0),
        client_id: ClientOrderId::NONE,
        stp: StpMode::ExpireMaker,
    }
}

pub fn market(user: UserId, pair: PairId, side: Side, qty: u64, quote_qty: u64) -> NewOrder {
    NewOrder {
        kind: OrderType::Market,
        price: Price(0),
        qty: Qty(qty),
        quote_qty,
        ..limit(user, pair, side, 0, 0)
    }
}

pub fn trades(ev: &[Event]) -> Vec<Trade> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Trade(t) => Some(*t),
            _ => None,
        })
        .collect()
}

pub fn accepted_id(ev: &[Event]) -> OrderId {
    ev.iter()
        .find_map(|e| match e {
            Event::OrderAccepted(o) => Some(o.id),
            _ => None,
        })
        .expect("order accepted")
}

pub fn done_status(ev: &[Event], id: OrderId) -> Option<OrderStatus> {
    ev.iter().find_map(|e| match e {
        Event::OrderDone { order, status, .. } if *order == id => Some(*status),
        _ => None,
    })
}
