//! Per-user read model for the signed endpoints: orders (open and a bounded
//! history of closed ones, by id and by client order id), trades, and
//! balances, maintained from engine events on the publisher thread. Built at
//! startup by replaying the journal from its first record (the journal is
//! kept by default), so history survives restarts; read-your-writes holds
//! because the publisher applies a command's events before its reply is
//! rendered (the handler waits for `last_seq` to reach its command).
//! The wallet's ledger, deposits and withdrawals (`ledger.rs`) ride along.

use std::collections::{BTreeMap, HashMap, VecDeque};

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
    pub orders: BTreeMap<u64, OrderRecord>,
    pub by_client: HashMap<ClientOrderId, u64>,
    closed: VecDeque<u64>,
    pub trades: VecDeque<TradeRecord>,
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
        self.orders.get(&id)
    }
    pub fn order_by_client(&self, cid: &ClientOrderId) -> Option<&OrderRecord> {
        self.by_client.get(cid).and_then(|id| self.orders.get(id))
    }
    pub fn open_orders(&self) -> impl Iterator<Item = &OrderRecord> {
        self.orders.values().filter(|r| r.order.status.is_open())
    }
}

#[derive(Debug)]
pub struct Accounts {
    pub users: FxHashMap<UserId, UserAccount>,
    owner: FxHashMap<u64, UserId>,
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
            owner: FxHashMap::default(),
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
        self.owner.insert(o.id.0, o.user);
        let acc = self.users.entry(o.user).or_default();
        if !o.client_id.is_none() {
            acc.by_client.insert(o.client_id, o.id.0);
        }
        acc.orders.insert(
            o.id.0,
            OrderRecord {
                order: o,
                update_ms: ts,
            },
        );
    }

    fn with_order(&mut self, id: u64, f: impl FnOnce(&mut OrderRecord)) {
        if let Some(u) = self.owner.get(&id) {
            if let Some(r) = self.users.get_mut(u).and_then(|a| a.orders.get_mut(&id)) {
                f(r);
            }
        }
    }

    fn close(&mut self, id: u64) {
        let Some(user) = self.owner.get(&id).copied() else {
            return;
        };
        let acc = self.users.entry(user).or_default();
        acc.closed.push_back(id);
        while acc.closed.len() > self.orders_kept {
            acc.orders_truncated = true;
            if let Some(old) = acc.closed.pop_front() {
                if let Some(r) = acc.orders.remove(&old) {
                    if acc.by_client.get(&r.order.client_id) == Some(&old) {
                        acc.by_client.remove(&r.order.client_id);
                    }
                }
                self.owner.remove(&old);
            }
        }
    }

    fn push_trade(&mut self, user: UserId, t: TradeRecord) {
        let acc = self.users.entry(user).or_default();
        if acc.trades.len() >= self.trades_kept {
            acc.trades.pop_front();
            acc.trades_truncated = true;
        }
        acc.trades.push_back(t);
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
                    for (id, filled, is_maker) in [
                        (t.maker_order.0, t.maker_filled, true),
                        (t.taker_order.0, t.taker_filled, false),
                    ] {
                        self.with_order(id, |r| {
                            r.order.filled = filled;
                            r.order.cum_quote += t.quote_qty;
                            r.order.status = OrderStatus::PartiallyFilled;
                            r.update_ms = ts;
                        });
                        let is_buyer = is_maker != taker_buys;
                        let user = if is_maker { t.maker_user } else { t.taker_user };
                        self.push_trade(
                            user,
                            TradeRecord {
                                id: t.id.0,
                                pair: t.pair,
                                order: OrderId(id),
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
                Event::OrderAmended { order, qty, .. } => self.with_order(order.0, |r| {
                    r.order.qty = *qty;
                    r.update_ms = ts;
                }),
                Event::StopTriggered { order, .. } => self.with_order(order.0, |r| {
                    r.order.triggered = true;
                    r.order.working_ms = ts;
                    r.update_ms = ts;
                }),
                Event::OrderDone {
                    order,
                    status,
                    filled,
                    cum_quote,
                    ..
                } => {
                    self.with_order(order.0, |r| {
                        r.order.status = *status;
                        r.order.filled = *filled;
                        r.order.cum_quote = *cum_quote;
                        r.order.frozen = 0;
                        r.update_ms = ts;
                    });
                    self.close(order.0);
                }
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
