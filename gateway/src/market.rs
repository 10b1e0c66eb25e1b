//! Market-data projection: configuration (assets, pairs), aggregated depth
//! per pair with a per-symbol update id, last price and recent trades, all
//! maintained from engine events on the publisher thread. HTTP handlers read
//! it under a short read lock; nobody reads engine state across threads.
//!
//! Depth rules mirror the engine: an order enters the book at the end of the
//! command that accepted (or triggered) it if it is still open and has a
//! limit price; trades, amends and `OrderDone` take quantity out. Each
//! command that changes a pair's book bumps that pair's `update_id` by one,
//! so diff streams built on it are contiguous per symbol.

use std::collections::{BTreeMap, HashMap, VecDeque};

use engine::{Asset, AssetId, Engine, Event, Order, OrderType, Pair, PairId, Side};

use crate::pipeline::Outcome;

/// Most recent trades kept per symbol for `/api/v3/trades`.
pub const RECENT_TRADES: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeView {
    pub id: u64,
    pub price_ticks: u64,
    pub qty_units: u64,
    pub quote_units: u64,
    pub time_ms: u64,
    pub buyer_is_maker: bool,
}

/// (price ticks, quantity units) levels, best first.
pub type Levels = Vec<(u64, u64)>;

#[derive(Debug, Clone, Default)]
pub struct DepthBook {
    /// price ticks -> total quantity (base units)
    pub bids: BTreeMap<u64, u64>,
    pub asks: BTreeMap<u64, u64>,
    pub update_id: u64,
}

impl DepthBook {
    fn side(&mut self, s: Side) -> &mut BTreeMap<u64, u64> {
        match s {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
    fn add(&mut self, s: Side, price: u64, qty: u64) {
        *self.side(s).entry(price).or_default() += qty;
    }
    fn remove(&mut self, s: Side, price: u64, qty: u64) {
        let m = self.side(s);
        if let Some(v) = m.get_mut(&price) {
            *v = v.saturating_sub(qty);
            if *v == 0 {
                m.remove(&price);
            }
        }
    }
    /// Best `limit` levels per side: bids high to low, asks low to high.
    pub fn top(&self, limit: usize) -> (Levels, Levels) {
        (
            self.bids
                .iter()
                .rev()
                .take(limit)
                .map(|(p, q)| (*p, *q))
                .collect(),
            self.asks
                .iter()
                .take(limit)
                .map(|(p, q)| (*p, *q))
                .collect(),
        )
    }
}

#[derive(Debug, Clone)]
pub struct PairView {
    pub pair: Pair,
    pub book: DepthBook,
    pub last_price: u64,
    pub trades: VecDeque<TradeView>,
}

#[derive(Debug, Clone, Copy)]
struct OrderTrack {
    pair: PairId,
    side: Side,
    price: u64,
    remaining: u64,
    in_book: bool,
    waiting_stop: bool,
}

#[derive(Debug, Default)]
pub struct Market {
    pub assets: BTreeMap<AssetId, Asset>,
    pub pairs: BTreeMap<PairId, PairView>,
    pub pair_by_symbol: HashMap<String, PairId>,
    orders: HashMap<u64, OrderTrack>,
    pub last_seq: u64,
    touched: Vec<u64>,
}

impl Market {
    /// Build the projection from a recovered engine (before the pipeline
    /// starts, on the thread that owns the engine).
    pub fn from_engine(e: &Engine) -> Market {
        let mut m = Market {
            last_seq: e.last_seq(),
            ..Market::default()
        };
        for a in e.assets() {
            m.assets.insert(a.id, a.clone());
        }
        for ps in e.pairs() {
            let id = ps.pair.id;
            m.pair_by_symbol.insert(ps.pair.spec.symbol.clone(), id);
            let mut view = PairView {
                pair: ps.pair.clone(),
                book: DepthBook::default(),
                last_price: ps.last_price,
                trades: VecDeque::new(),
            };
            for side in [Side::Buy, Side::Sell] {
                for o in e.book_orders(id, side) {
                    view.book.add(side, o.price.0, o.remaining());
                    m.orders.insert(o.id.0, track(&o, true));
                }
            }
            for (_, oid) in ps.stops_up.iter().chain(ps.stops_down.iter()) {
                if let Some(o) = e.order(engine::OrderId(*oid)) {
                    m.orders.insert(o.id.0, track(o, false));
                }
            }
            m.pairs.insert(id, view);
        }
        m
    }

    pub fn pair_by_symbol(&self, symbol: &str) -> Option<&PairView> {
        self.pair_by_symbol
            .get(symbol)
            .and_then(|id| self.pairs.get(id))
    }

    /// Apply one command's events.
    pub fn apply(&mut self, o: &Outcome) {
        self.last_seq = o.seq;
        self.touched.clear();
        let mut changed: Vec<PairId> = Vec::new();
        for ev in &o.events {
            match ev {
                Event::AssetListed(a) | Event::AssetUpdated(a) => {
                    self.assets.insert(a.id, a.clone());
                }
                Event::PairListed(p) => {
                    self.pair_by_symbol.insert(p.spec.symbol.clone(), p.id);
                    self.pairs.insert(
                        p.id,
                        PairView {
                            pair: (**p).clone(),
                            book: DepthBook::default(),
                            last_price: 0,
                            trades: VecDeque::new(),
                        },
                    );
                }
                Event::PairUpdated(p) => {
                    if let Some(v) = self.pairs.get_mut(&p.id) {
                        v.pair = (**p).clone();
                    }
                }
                Event::OrderAccepted(ord) => {
                    self.orders.insert(ord.id.0, track(&ord.to_order(), false));
                    self.touched.push(ord.id.0);
                }
                Event::StopTriggered { order, .. } => {
                    if let Some(t) = self.orders.get_mut(&order.0) {
                        t.waiting_stop = false;
                        self.touched.push(order.0);
                    }
                }
                Event::Trade(t) => {
                    for id in [t.maker_order.0, t.taker_order.0] {
                        if let Some(tr) = self.orders.get_mut(&id) {
                            tr.remaining = tr.remaining.saturating_sub(t.qty.0);
                            if tr.in_book {
                                if let Some(v) = self.pairs.get_mut(&tr.pair) {
                                    v.book.remove(tr.side, tr.price, t.qty.0);
                                }
                                changed.push(tr.pair);
                            }
                        }
                    }
                    if let Some(v) = self.pairs.get_mut(&t.pair) {
                        v.last_price = t.price.0;
                        if v.trades.len() == RECENT_TRADES {
                            v.trades.pop_front();
                        }
                        v.trades.push_back(TradeView {
                            id: t.id.0,
                            price_ticks: t.price.0,
                            qty_units: t.qty.0,
                            quote_units: t.quote_qty,
                            time_ms: o.ts_ms,
                            buyer_is_maker: t.buyer_is_maker(),
                        });
                    }
                }
                Event::OrderAmended {
                    order, qty, filled, ..
                } => {
                    if let Some(tr) = self.orders.get_mut(&order.0) {
                        let new_rem = qty.0.saturating_sub(filled.0);
                        let cut = tr.remaining.saturating_sub(new_rem);
                        tr.remaining = new_rem;
                        if tr.in_book && cut > 0 {
                            if let Some(v) = self.pairs.get_mut(&tr.pair) {
                                v.book.remove(tr.side, tr.price, cut);
                            }
                            changed.push(tr.pair);
                        }
                    }
                }
                Event::OrderDone { order, .. } => {
                    if let Some(tr) = self.orders.remove(&order.0) {
                        if tr.in_book {
                            if let Some(v) = self.pairs.get_mut(&tr.pair) {
                                v.book.remove(tr.side, tr.price, tr.remaining);
                            }
                            changed.push(tr.pair);
                        }
                    }
                }
                _ => {}
            }
        }
        // Orders accepted or triggered in this command that are still open
        // with a limit price now rest in the book.
        for i in 0..self.touched.len() {
            let id = self.touched[i];
            if let Some(tr) = self.orders.get_mut(&id) {
                if !tr.in_book && !tr.waiting_stop && tr.price > 0 && tr.remaining > 0 {
                    tr.in_book = true;
                    if let Some(v) = self.pairs.get_mut(&tr.pair) {
                        v.book.add(tr.side, tr.price, tr.remaining);
                    }
                    changed.push(tr.pair);
                } else if !tr.in_book && !tr.waiting_stop {
                    // Ended without an OrderDone only if it never had a
                    // quantity; keep the map bounded either way.
                    if tr.remaining == 0 {
                        self.orders.remove(&id);
                    }
                }
            }
        }
        changed.sort_unstable();
        changed.dedup();
        for p in changed {
            if let Some(v) = self.pairs.get_mut(&p) {
                v.book.update_id = o.seq;
            }
        }
    }
}

fn track(o: &Order, in_book: bool) -> OrderTrack {
    let waiting_stop = o.kind.is_stop() && !o.triggered;
    OrderTrack {
        pair: o.pair,
        side: o.side,
        price: if o.kind.has_limit_price() || o.kind == OrderType::Limit {
            o.price.0
        } else {
            0
        },
        remaining: o.qty.0.saturating_sub(o.filled.0),
        in_book,
        waiting_stop,
    }
}
