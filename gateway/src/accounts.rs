//! Per-user read model for the signed endpoints: orders (open and a bounded
//! history of closed ones, by id and by client order id), trades, and
//! balances, maintained from engine events on the publisher thread. Built at
//! startup by replaying the journal from its first record (the journal is
//! kept by default), so history survives restarts; read-your-writes holds
//! because the publisher applies a command's events before its reply is
//! rendered (the handler waits for `last_seq` to reach its command).
//! The wallet's ledger, deposits and withdrawals (`ledger.rs`) ride along.

use std::collections::BTreeMap;

use crate::bounded::History;
use crate::ledger::{WalletBook, LEDGER_ROWS_PER_USER};
use engine::fxhash::FxHashMap;
use engine::{
    AssetId, Balance, ClientOrderId, Engine, Event, Order, OrderId, OrderStatus, PairId, Side,
    UserId,
};

/// Closed orders kept per user (older ones fall off; Postgres keeps all).
pub const CLOSED_ORDERS_PER_USER: usize = 10_000;
/// Trades kept per user.
pub const TRADES_PER_USER: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct OrderRecord {
    pub order: Order,
    pub update_ms: u64,
}

impl OrderRecord {
    /// The order as its `OrderAccepted` event describes it.
    pub fn accepted(o: Order, ts: u64) -> OrderRecord {
        OrderRecord {
            order: o,
            update_ms: ts,
        }
    }

    /// Apply one event about this order (events about other orders and
    /// the ones that do not change an order are ignored). The only place
    /// where an order's state follows the engine's events, for the read
    /// model and for the reply to the command that placed the order.
    pub fn apply(&mut self, ev: &Event, ts: u64) {
        let id = self.order.id;
        match ev {
            Event::Trade(t) if t.maker_order == id || t.taker_order == id => {
                self.order.filled = if t.maker_order == id {
                    t.maker_filled
                } else {
                    t.taker_filled
                };
                self.order.cum_quote += t.quote_qty;
                self.order.status = OrderStatus::PartiallyFilled;
                self.update_ms = ts;
            }
            Event::OrderAmended { order, qty, .. } if *order == id => {
                self.order.qty = *qty;
                self.update_ms = ts;
            }
            Event::StopTriggered { order, .. } if *order == id => {
                self.order.triggered = true;
                self.order.working_ms = ts;
                self.update_ms = ts;
            }
            Event::OrderDone {
                order,
                status,
                filled,
                cum_quote,
                ..
            } if *order == id => {
                self.order.status = *status;
                self.order.filled = *filled;
                self.order.cum_quote = *cum_quote;
                self.order.frozen = 0;
                self.update_ms = ts;
            }
            _ => {}
        }
    }

    /// Order `id` as the events of one command leave it, if that command
    /// placed it: what the command's reply reports, whatever later
    /// commands did to the order since (and whether or not the read model
    /// still keeps it).
    pub fn placed_by(events: &[Event], id: OrderId, ts: u64) -> Option<OrderRecord> {
        let start = events
            .iter()
            .position(|ev| matches!(ev, Event::OrderAccepted(a) if a.id == id))?;
        let Event::OrderAccepted(a) = &events[start] else {
            return None;
        };
        let mut r = OrderRecord::accepted(a.to_order(), ts);
        for ev in &events[start + 1..] {
            r.apply(ev, ts);
        }
        Some(r)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeRecord {
    pub id: u64,
    pub pair: PairId,
    pub order: OrderId,
    pub price_ticks: u64,
    pub qty_units: u64,
    pub quote_units: u64,
    pub commission: u64,
    pub commission_asset: AssetId,
    pub time_ms: u64,
    pub is_buyer: bool,
    pub is_maker: bool,
}

#[derive(Debug, Default)]
pub struct UserAccount {
    /// Open orders and the newest closed ones, by id. Boxed: the tree's
    /// nodes then move 8-byte pointers, not 170-byte records, when an order
    /// joins at one end and the oldest closed one leaves at the other (the
    /// copies were 7% of the publisher thread at 80,000 orders/s).
    pub orders: BTreeMap<u64, Box<OrderRecord>>,
    /// Client order id -> id of the user's *open* orders only (the engine
    /// keeps client ids unique among them). A closed order's client id is
    /// found by scanning the closed ones newest first, as `allOrders` reads
    /// them all: a map over the whole history was two random accesses into
    /// a large table per order on the publisher thread (insert and evict; a
    /// fifth of its time at 100,000 orders/s), for a rare query.
    by_client: FxHashMap<ClientOrderId, u64>,
    closed: History<u64>,
    pub trades: History<TradeRecord>,
    pub balances: BTreeMap<AssetId, Balance>,
    pub update_ms: u64,
    /// Older closed orders fell off (or were never loaded): the full
    /// history is only in Postgres.
    pub orders_truncated: bool,
    /// Older trades fell off (or were never loaded).
    pub trades_truncated: bool,
}

impl UserAccount {
    pub fn order(&self, id: u64) -> Option<&OrderRecord> {
        self.orders.get(&id).map(|r| &**r)
    }
    /// The newest kept order with client id `cid` (an open one if any:
    /// no order newer than an open order can carry its client id).
    pub fn order_by_client(&self, cid: &ClientOrderId) -> Option<&OrderRecord> {
        if cid.is_none() {
            return None;
        }
        match self.by_client.get(cid) {
            Some(id) => self.orders.get(id).map(|r| &**r),
            None => self
                .orders
                .values()
                .rev()
                .find(|r| r.order.client_id == *cid)
                .map(|r| &**r),
        }
    }
    pub fn open_orders(&self) -> impl Iterator<Item = &OrderRecord> {
        self.orders
            .values()
            .map(|r| &**r)
            .filter(|r| r.order.status.is_open())
    }
}

#[derive(Debug)]
pub struct Accounts {
    pub users: FxHashMap<UserId, UserAccount>,
    /// Pair -> (base, quote) for commission assets.
    pair_assets: FxHashMap<PairId, (AssetId, AssetId)>,
    pub last_seq: u64,
    /// Closed orders kept per user.
    orders_kept: usize,
    /// Trades kept per user.
    trades_kept: usize,
    /// Ledger rows, deposits and withdrawals (the native wallet API).
    pub wallet: WalletBook,
}

impl Default for Accounts {
    fn default() -> Self {
        Accounts::with_retention(CLOSED_ORDERS_PER_USER, TRADES_PER_USER)
    }
}

impl Accounts {
    /// Empty, keeping at most `orders` closed orders and `trades` trades
    /// per user (at least 1 each).
    pub fn with_retention(orders: usize, trades: usize) -> Accounts {
        Accounts {
            users: FxHashMap::default(),
            pair_assets: FxHashMap::default(),
            last_seq: 0,
            orders_kept: orders.max(1),
            trades_kept: trades.max(1),
            wallet: WalletBook::default(),
        }
    }

    /// Balances and open orders of a recovered engine (no closed history,
    /// so every user's history counts as truncated): the fallback when the
    /// journal's start is no longer available.
    pub fn from_engine(e: &Engine, orders_kept: usize, trades_kept: usize) -> Accounts {
        let mut a = Accounts {
            last_seq: e.last_seq(),
            wallet: WalletBook::from_engine(e, LEDGER_ROWS_PER_USER),
            ..Accounts::with_retention(orders_kept, trades_kept)
        };
        for ps in e.pairs() {
            a.pair_assets
                .insert(ps.pair.id, (ps.pair.spec.base, ps.pair.spec.quote));
            let mut orders = e.book_orders(ps.pair.id, Side::Buy);
            orders.extend(e.book_orders(ps.pair.id, Side::Sell));
            for (_, id) in ps.stops_up.iter().chain(ps.stops_down.iter()) {
                if let Some(o) = e.order(OrderId(*id)) {
                    orders.push(*o);
                }
            }
            for o in orders {
                a.insert_order(o, o.created_ms);
            }
        }
        for u in e.users() {
            let acc = a.users.entry(u.id).or_default();
            acc.orders_truncated = true;
            acc.trades_truncated = true;
            for (asset, b) in &u.balances {
                acc.balances.insert(*asset, *b);
            }
        }
        a
    }

    pub fn user(&self, id: UserId) -> Option<&UserAccount> {
        self.users.get(&id)
    }

    fn insert_order(&mut self, o: Order, ts: u64) {
        let acc = self.users.entry(o.user).or_default();
        if !o.client_id.is_none() && o.status.is_open() {
            acc.by_client.insert(o.client_id, o.id.0);
        }
        acc.orders
            .insert(o.id.0, Box::new(OrderRecord::accepted(o, ts)));
    }

    /// Apply `ev` to order `id` of `user` if it is kept (events carry the
    /// owner, so no order -> user index is needed).
    fn update_order(&mut self, user: UserId, id: OrderId, ev: &Event, ts: u64) {
        if let Some(r) = self
            .users
            .get_mut(&user)
            .and_then(|a| a.orders.get_mut(&id.0))
        {
            r.apply(ev, ts);
        }
    }

    /// Order `id` of `user` ended (`done`, its `OrderDone` event): if the
    /// order is kept, the event is applied to it, it leaves the open
    /// orders' client ids and joins the user's closed history, and the
    /// oldest closed orders beyond the retention fall off.
    fn close(&mut self, user: UserId, id: OrderId, done: &Event, ts: u64) {
        let kept = self.orders_kept;
        let Some(acc) = self.users.get_mut(&user) else {
            return;
        };
        let Some(r) = acc.orders.get_mut(&id.0) else {
            return;
        };
        r.apply(done, ts);
        let cid = r.order.client_id;
        if let std::collections::hash_map::Entry::Occupied(e) = acc.by_client.entry(cid) {
            if *e.get() == id.0 {
                e.remove();
            }
        }
        if let Some(old) = acc.closed.push(id.0, kept) {
            acc.orders_truncated = true;
            acc.orders.remove(&old);
        }
    }

    fn push_trade(&mut self, user: UserId, t: TradeRecord) {
        let acc = self.users.entry(user).or_default();
        if acc.trades.push_evicting(t, self.trades_kept) {
            acc.trades_truncated = true;
        }
    }

    /// Apply one command's events.
    pub fn apply(&mut self, seq: u64, ts: u64, events: &[Event]) {
        self.last_seq = seq;
        for ev in events {
            match ev {
                Event::PairListed(p) => {
                    self.pair_assets.insert(p.id, (p.spec.base, p.spec.quote));
                }
                Event::OrderAccepted(a) => self.insert_order(a.to_order(), ts),
                Event::Trade(t) => {
                    let (base, quote) = self
                        .pair_assets
                        .get(&t.pair)
                        .copied()
                        .unwrap_or((AssetId(0), AssetId(0)));
                    let taker_buys = t.taker_side == Side::Buy;
                    for (id, user, is_maker) in [
                        (t.maker_order, t.maker_user, true),
                        (t.taker_order, t.taker_user, false),
                    ] {
                        self.update_order(user, id, ev, ts);
                        let is_buyer = is_maker != taker_buys;
                        self.push_trade(
                            user,
                            TradeRecord {
                                id: t.id.0,
                                pair: t.pair,
                                order: id,
                                price_ticks: t.price.0,
                                qty_units: t.qty.0,
                                quote_units: t.quote_qty,
                                commission: if is_maker { t.maker_fee } else { t.taker_fee },
                                commission_asset: if is_buyer { base } else { quote },
                                time_ms: ts,
                                is_buyer,
                                is_maker,
                            },
                        );
                    }
                }
                Event::OrderAmended { order, user, .. }
                | Event::StopTriggered { order, user, .. } => {
                    self.update_order(*user, *order, ev, ts);
                }
                Event::OrderDone { order, user, .. } => self.close(*user, *order, ev, ts),
                Event::Balance(b) => {
                    let acc = self.users.entry(b.user).or_default();
                    acc.balances.insert(
                        b.asset,
                        Balance {
                            available: b.available_after,
                            frozen: b.frozen_after,
                        },
                    );
                    acc.update_ms = ts;
                    self.wallet.balance(seq, ts, b);
                }
                Event::DepositUpdated(d) => self.wallet.deposit_updated(d),
                Event::WithdrawalUpdated(w) => self.wallet.withdrawal_updated(w),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{roles, Command, NewOrder, OrderType, Price, Qty, StpMode, TimeInForce};

    const ONE: u64 = 100_000_000;

    struct Run {
        e: Engine,
        a: Accounts,
        seq: u64,
        /// The events of the last command.
        last: Vec<Event>,
    }

    impl Run {
        fn new(orders_kept: usize) -> Run {
            let mut r = Run {
                e: Engine::new(),
                a: Accounts::with_retention(orders_kept, 100),
                seq: 0,
                last: Vec::new(),
            };
            // The default configuration's assets and pairs (BTC is asset 1,
            // BTCUSDT pair 1).
            let cfg = crate::config::load(None, &|_| None).expect("embedded default config");
            let assets = cfg.asset_specs().expect("default assets");
            for spec in &assets {
                r.ok(Command::AddAsset {
                    spec: spec.clone(),
                    by: None,
                });
            }
            for spec in cfg.pair_specs(&assets).expect("default pairs") {
                r.ok(Command::AddPair {
                    spec: Box::new(spec),
                    by: None,
                });
            }
            for name in ["maker", "taker"] {
                r.ok(Command::CreateUser {
                    username: name.into(),
                    email: String::new(),
                    password_hash: "x".into(),
                    roles: roles::TRADER,
                });
            }
            for (user, asset) in [(1, 1), (1, 3), (2, 1), (2, 3)] {
                r.ok(Command::Deposit {
                    user: UserId(user),
                    asset: AssetId(asset),
                    amount: 10_000 * ONE,
                    tx_hash: format!("t{user}{asset}"),
                    // Past any asset's confirmation threshold: credited now.
                    confirmations: 1_000,
                    by: None,
                });
            }
            r
        }

        /// Apply to the engine and the read model, as the publisher does.
        fn ok(&mut self, cmd: Command) -> Vec<Event> {
            self.seq += 1;
            let mut out = Vec::new();
            self.e.apply(self.seq, 1_000 + self.seq, &cmd, &mut out);
            assert!(
                !matches!(out.first(), Some(Event::Rejected { .. })),
                "{cmd:?}: {out:?}"
            );
            self.a.apply(self.seq, 1_000 + self.seq, &out);
            self.last = out.clone();
            out
        }

        /// Place an order and check that the reply's record (folded from
        /// the command's events) is the read model's record right after it.
        fn place(&mut self, user: u64, side: Side, price: u64, qty: u64, cid: &str) -> OrderId {
            let out = self.ok(Command::PlaceOrder(NewOrder {
                user: UserId(user),
                pair: PairId(1),
                side,
                kind: OrderType::Limit,
                tif: TimeInForce::Gtc,
                price: Price(price),
                qty: Qty(qty),
                quote_qty: 0,
                stop_price: Price(0),
                client_id: ClientOrderId::new(cid).unwrap(),
                stp: StpMode::None,
            }));
            let id = out
                .iter()
                .find_map(|ev| match ev {
                    Event::OrderAccepted(a) => Some(a.id),
                    _ => None,
                })
                .expect("accepted");
            let folded = OrderRecord::placed_by(&out, id, 1_000 + self.seq).expect("folded");
            let kept = *self.a.user(UserId(user)).unwrap().order(id.0).unwrap();
            assert_eq!(format!("{folded:?}"), format!("{kept:?}"));
            id
        }

        fn cancel(&mut self, user: u64, id: OrderId) {
            self.ok(Command::CancelOrder {
                user: UserId(user),
                pair: PairId(1),
                target: engine::OrderRef::Id(id),
            });
        }
    }

    #[test]
    fn the_reply_record_is_the_read_model_record_after_the_command() {
        let mut r = Run::new(100);
        let m1 = r.place(1, Side::Sell, 10_000, 2 * ONE, "m1");
        let m2 = r.place(1, Side::Sell, 10_100, ONE, "m2");
        // Takes all of m1 and m2 and rests its last 1 BTC: two fills, both
        // makers done, the taker partially filled.
        let t = r.place(2, Side::Buy, 10_100, 4 * ONE, "t1");
        let t_events = r.last.clone();
        let u = r.a.user(UserId(1)).unwrap();
        assert_eq!(u.order(m1.0).unwrap().order.status, OrderStatus::Filled);
        assert_eq!(
            u.order(m2.0).unwrap().order.status,
            OrderStatus::Filled,
            "m2 was taken whole"
        );
        let tr = *r.a.user(UserId(2)).unwrap().order(t.0).unwrap();
        assert_eq!(tr.order.status, OrderStatus::PartiallyFilled);
        assert_eq!(tr.order.filled, Qty(3 * ONE));
        // A later command changes the kept record, not what the placing
        // command's events say.
        let later = r.place(1, Side::Sell, 10_100, ONE, "m3");
        let kept = *r.a.user(UserId(2)).unwrap().order(t.0).unwrap();
        assert_eq!(kept.order.status, OrderStatus::Filled);
        let replied = OrderRecord::placed_by(&t_events, t, 0).expect("t placed");
        assert_eq!(replied.order.status, OrderStatus::PartiallyFilled);
        assert_eq!(replied.order.filled, Qty(3 * ONE));
        assert!(
            OrderRecord::placed_by(&t_events, m1, 0).is_none(),
            "m1 was placed earlier"
        );
        assert!(later.0 > t.0);
        assert_eq!(r.a.user(UserId(1)).unwrap().trades.len(), 3);
        assert_eq!(r.a.user(UserId(2)).unwrap().trades.len(), 3);
    }

    #[test]
    fn closed_orders_fall_off_with_their_client_ids_beyond_the_retention() {
        let mut r = Run::new(2);
        let a = r.place(1, Side::Buy, 15_000, ONE, "a");
        let b = r.place(1, Side::Buy, 15_000, ONE, "b");
        let open = r.place(1, Side::Buy, 15_000, ONE, "open");
        r.cancel(1, a);
        r.cancel(1, b);
        // "a" again, for a new order, while the old "a" is still kept.
        let a2 = r.place(1, Side::Buy, 15_000, ONE, "a");
        r.cancel(1, a2);
        // Three closed orders, two kept: the first "a" fell off, and the
        // client id "a" still finds the newer order.
        let u = r.a.user(UserId(1)).unwrap();
        assert!(u.order(a.0).is_none());
        assert!(u.orders_truncated);
        assert_eq!(u.order(b.0).unwrap().order.status, OrderStatus::Canceled);
        let cid = |s| ClientOrderId::new(s).unwrap();
        assert_eq!(u.order_by_client(&cid("a")).unwrap().order.id, a2);
        assert_eq!(u.order_by_client(&cid("b")).unwrap().order.id, b);
        // The open order is never dropped, however many close after it.
        for i in 0..5 {
            let id = r.place(1, Side::Buy, 15_000, ONE, &format!("x{i}"));
            r.cancel(1, id);
        }
        let u = r.a.user(UserId(1)).unwrap();
        assert!(u.order(b.0).is_none() && u.order_by_client(&cid("b")).is_none());
        assert!(u.order_by_client(&cid("a")).is_none());
        assert_eq!(u.order_by_client(&cid("open")).unwrap().order.id, open);
        assert_eq!(u.open_orders().count(), 1);
        assert_eq!(u.orders.len(), 3);
        // Only the open order's client id is in the map; the closed ones
        // are found by their records.
        assert_eq!(u.by_client.len(), 1);
        assert_eq!(
            u.order_by_client(&cid("x4")).unwrap().order.status,
            OrderStatus::Canceled
        );
        assert!(u.order_by_client(&ClientOrderId::NONE).is_none());
    }
}
