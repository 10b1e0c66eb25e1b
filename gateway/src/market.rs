//! Market-data projection: configuration (assets, pairs), aggregated depth
//! per pair with a per-symbol update id, last price, recent trades,
//! aggregate trades and klines for all 16 intervals, all maintained from
//! engine events on the publisher thread. HTTP handlers read it under a
//! short read lock; nobody reads engine state across threads. The 24 h
//! ticker (from the 1m klines) and the 5 min average price (from the 1s
//! klines) are folded at request time for a window ending at `now`.
//!
//! Depth rules mirror the engine: an order enters the book at the end of the
//! command that accepted (or triggered) it if it is still open and has a
//! limit price; trades, amends and `OrderDone` take quantity out. Each
//! command that changes a pair's book bumps that pair's `update_id` by
//! exactly one (REST depth `lastUpdateId` and the diff streams' `U`/`u` share
//! it, so diff events are contiguous per symbol), and `level_changes` lists
//! the (pair, side, price) levels the last applied command touched.
//!
//! Time inside the projection is only ever the command timestamp from the
//! journal (`ts_ms`), clamped per pair to be non-decreasing so a wall clock
//! that stepped back cannot reorder klines; replaying the journal through
//! `apply_events` therefore rebuilds exactly the same state. Memory is
//! bounded per pair by [`MarketLimits`] (the `[market_data]` config
//! section): `trades_kept` trades, `agg_trades_kept` aggregate trades and
//! `klines_kept` klines for each interval (only intervals that had trades
//! exist; empty ones are never stored); depth answers (REST and partial
//! book streams) are cut at `depth_max_levels` levels per side.

use engine::fxhash::FxHashMap;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use engine::{Asset, AssetId, Engine, Event, Order, OrderType, Pair, PairId, Side, Trade};

use crate::binance::enums::KlineInterval;
use crate::bounded;
use crate::pipeline::Outcome;

/// Default of `market_data.trades_kept_per_symbol`: recent trades kept per
/// symbol for `/api/v3/trades`.
pub const DEFAULT_TRADES_KEPT: usize = 10_000;
/// Default of `market_data.agg_trades_kept_per_symbol`: aggregate trades
/// kept per symbol for `/api/v3/aggTrades`.
pub const DEFAULT_AGG_TRADES_KEPT: usize = 10_000;
/// Default of `market_data.klines_kept_per_interval`: klines kept per
/// (symbol, interval). At most 16 x this many klines per symbol, about 112
/// bytes each.
pub const DEFAULT_KLINES_KEPT_PER_INTERVAL: usize = 5_000;
/// Default of `market_data.depth_max_levels` (Binance: 5000 per side).
pub const DEFAULT_DEPTH_MAX_LEVELS: usize = 5_000;
/// Length of the rolling window of `/api/v3/ticker/24hr`.
pub const TICKER_WINDOW_MS: u64 = 24 * 60 * MINUTE_MS;
/// `mins` of `/api/v3/avgPrice`.
pub const AVG_PRICE_MINS: u64 = 5;
/// Fewest klines per interval the projection may keep: the 24 h ticker
/// folds the 1m klines of its window and reads the one before it
/// (prevClosePrice), avgPrice folds the 1s klines of 5 minutes, and
/// eviction is by count, so the series must outlive both windows.
pub const MIN_KLINES_KEPT_PER_INTERVAL: usize = (TICKER_WINDOW_MS / MINUTE_MS) as usize + 2;

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;

const _: () = assert!(MIN_KLINES_KEPT_PER_INTERVAL as u64 > TICKER_WINDOW_MS / MINUTE_MS + 1);
const _: () = assert!(MIN_KLINES_KEPT_PER_INTERVAL as u64 > AVG_PRICE_MINS * 60 + 1);
const _: () = assert!(DEFAULT_KLINES_KEPT_PER_INTERVAL >= MIN_KLINES_KEPT_PER_INTERVAL);

/// Bounds of the projection (the `[market_data]` config section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketLimits {
    /// Recent trades kept per symbol (`/api/v3/trades`, trade history).
    pub trades_kept: usize,
    /// Aggregate trades kept per symbol (`/api/v3/aggTrades`).
    pub agg_trades_kept: usize,
    /// Klines kept per symbol and interval; raised to
    /// [`MIN_KLINES_KEPT_PER_INTERVAL`] if lower (the config refuses that).
    pub klines_kept: usize,
    /// Deepest depth answer, levels per side (`/api/v3/depth`,
    /// `<symbol>@depth<levels>`).
    pub depth_max_levels: usize,
    /// Closed orders kept per user by the history read model (accounts.rs).
    pub orders_kept_per_user: usize,
    /// Trades kept per user by the history read model.
    pub trades_kept_per_user: usize,
}

impl Default for MarketLimits {
    fn default() -> Self {
        MarketLimits {
            trades_kept: DEFAULT_TRADES_KEPT,
            agg_trades_kept: DEFAULT_AGG_TRADES_KEPT,
            klines_kept: DEFAULT_KLINES_KEPT_PER_INTERVAL,
            depth_max_levels: DEFAULT_DEPTH_MAX_LEVELS,
            orders_kept_per_user: crate::accounts::CLOSED_ORDERS_PER_USER,
            trades_kept_per_user: crate::accounts::TRADES_PER_USER,
        }
    }
}

impl MarketLimits {
    /// Every bound at least 1 and the kline series long enough for the
    /// ticker and avgPrice windows.
    fn sanitized(self) -> MarketLimits {
        MarketLimits {
            trades_kept: self.trades_kept.max(1),
            agg_trades_kept: self.agg_trades_kept.max(1),
            klines_kept: self.klines_kept.max(MIN_KLINES_KEPT_PER_INTERVAL),
            depth_max_levels: self.depth_max_levels.max(1),
            orders_kept_per_user: self.orders_kept_per_user.max(1),
            trades_kept_per_user: self.trades_kept_per_user.max(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeView {
    pub id: u64,
    pub price_ticks: u64,
    pub qty_units: u64,
    pub quote_units: u64,
    pub time_ms: u64,
    pub buyer_is_maker: bool,
}

/// Consecutive fills of one taker order at one price within one command
/// (Binance: "trades that fill at the time, from the same taker order,
/// with the same price").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggTrade {
    /// The id of its first trade. Trade ids are global and increasing, so
    /// these are unique and increasing per symbol, and they come out the
    /// same from any rebuild (a per-symbol counter would not survive a
    /// rebuild from a snapshot without the journal's start).
    pub id: u64,
    pub price_ticks: u64,
    pub qty_units: u64,
    pub first_trade_id: u64,
    pub last_trade_id: u64,
    pub time_ms: u64,
    pub buyer_is_maker: bool,
    taker_order: u64,
    seq: u64,
}

/// One candle. Only intervals that had a trade exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kline {
    pub open_time_ms: u64,
    pub open_ticks: u64,
    pub high_ticks: u64,
    pub low_ticks: u64,
    pub close_ticks: u64,
    pub volume_units: u128,
    pub quote_units: u128,
    pub taker_buy_volume_units: u128,
    pub taker_buy_quote_units: u128,
    pub trades: u64,
    pub first_trade_id: u64,
    pub last_trade_id: u64,
}

impl Kline {
    fn new(open_time_ms: u64, t: &Trade) -> Kline {
        let mut k = Kline {
            open_time_ms,
            open_ticks: t.price.0,
            high_ticks: t.price.0,
            low_ticks: t.price.0,
            close_ticks: t.price.0,
            volume_units: 0,
            quote_units: 0,
            taker_buy_volume_units: 0,
            taker_buy_quote_units: 0,
            trades: 0,
            first_trade_id: t.id.0,
            last_trade_id: t.id.0,
        };
        k.add(t);
        k
    }

    fn add(&mut self, t: &Trade) {
        let p = t.price.0;
        self.high_ticks = self.high_ticks.max(p);
        self.low_ticks = self.low_ticks.min(p);
        self.close_ticks = p;
        self.volume_units += u128::from(t.qty.0);
        self.quote_units += u128::from(t.quote_qty);
        if t.taker_side == Side::Buy {
            self.taker_buy_volume_units += u128::from(t.qty.0);
            self.taker_buy_quote_units += u128::from(t.quote_qty);
        }
        self.trades += 1;
        self.last_trade_id = t.id.0;
    }
}

/// (price ticks, quantity units) levels, best first.
pub type Levels = Vec<(u64, u64)>;

#[derive(Debug, Clone)]
pub struct DepthBook {
    /// price ticks -> total quantity (base units)
    pub bids: BTreeMap<u64, u64>,
    pub asks: BTreeMap<u64, u64>,
    pub update_id: u64,
    /// Deepest answer of [`DepthBook::top`] (`market_data.depth_max_levels`).
    max_levels: usize,
}

impl Default for DepthBook {
    fn default() -> Self {
        DepthBook::with_max_levels(DEFAULT_DEPTH_MAX_LEVELS)
    }
}

impl DepthBook {
    pub fn with_max_levels(max_levels: usize) -> DepthBook {
        DepthBook {
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            update_id: 0,
            max_levels: max_levels.max(1),
        }
    }
    /// Levels per side that [`DepthBook::top`] answers at most.
    pub fn max_levels(&self) -> usize {
        self.max_levels
    }
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
    /// Best `limit` levels per side (at most `max_levels`, like Binance
    /// truncating a deeper request): bids high to low, asks low to high.
    pub fn top(&self, limit: usize) -> (Levels, Levels) {
        let limit = limit.min(self.max_levels);
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
    /// Best bid (price ticks, quantity units).
    pub fn best_bid(&self) -> Option<(u64, u64)> {
        self.bids.iter().next_back().map(|(p, q)| (*p, *q))
    }
    /// Best ask (price ticks, quantity units).
    pub fn best_ask(&self) -> Option<(u64, u64)> {
        self.asks.iter().next().map(|(p, q)| (*p, *q))
    }
}

/// The 24 h rolling-window statistics of one pair, in integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticker24h {
    pub open_time_ms: u64,
    pub close_time_ms: u64,
    pub open_ticks: u64,
    pub high_ticks: u64,
    pub low_ticks: u64,
    pub last_ticks: u64,
    pub last_qty_units: u64,
    pub prev_close_ticks: u64,
    pub volume_units: u128,
    pub quote_units: u128,
    /// `None` when the window has no trade (Binance answers -1).
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
    pub count: u64,
}

/// What every order request needs of its pair besides the [`Pair`]: the
/// symbols and decimals of both assets. Kept per pair and shared, so a
/// request takes them with one reference count instead of three string
/// copies and two asset look-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairMeta {
    pub symbol: String,
    pub base_sym: String,
    pub quote_sym: String,
    pub base_dec: u32,
    pub quote_dec: u32,
}

impl PairMeta {
    /// From the pair and the listed assets (8 decimals and an empty symbol
    /// for an asset that is not listed, which the engine never allows).
    fn of(pair: &Pair, assets: &BTreeMap<AssetId, Asset>) -> PairMeta {
        let s = &pair.spec;
        let base = assets.get(&s.base);
        let quote = assets.get(&s.quote);
        PairMeta {
            symbol: s.symbol.clone(),
            base_sym: base.map(|a| a.spec.symbol.clone()).unwrap_or_default(),
            quote_sym: quote.map(|a| a.spec.symbol.clone()).unwrap_or_default(),
            base_dec: base.map(|a| a.spec.decimals as u32).unwrap_or(8),
            quote_dec: quote.map(|a| a.spec.decimals as u32).unwrap_or(8),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PairView {
    pub pair: Pair,
    /// Kept equal to `PairMeta::of(pair, assets)` by [`Market`].
    pub meta: Arc<PairMeta>,
    pub book: DepthBook,
    pub last_price: u64,
    pub trades: VecDeque<TradeView>,
    pub agg_trades: VecDeque<AggTrade>,
    /// One series per `KlineInterval::ALL` entry, oldest first.
    klines: Vec<VecDeque<Kline>>,
    /// Time of the latest trade (command time, never decreasing): the
    /// projection's clock for this pair. 0 before the first trade.
    pub last_trade_ms: u64,
    limits: MarketLimits,
}

fn interval_index(i: KlineInterval) -> usize {
    KlineInterval::ALL
        .iter()
        .position(|x| *x == i)
        .unwrap_or_default()
}

/// The items of a series sorted by `key` that lie in [lo, hi]: the first
/// `limit` from `lo` when it is given, else the last `limit` up to `hi`.
fn select<T: Copy>(
    items: &VecDeque<T>,
    key: impl Fn(&T) -> u64,
    lo: Option<u64>,
    hi: Option<u64>,
    limit: usize,
) -> Vec<T> {
    let end = hi.map_or(items.len(), |h| items.partition_point(|x| key(x) <= h));
    let (begin, stop) = match lo {
        Some(l) => {
            let b = items.partition_point(|x| key(x) < l);
            (b, end.min(b.saturating_add(limit)))
        }
        None => (end.saturating_sub(limit), end),
    };
    if begin >= stop {
        return Vec::new();
    }
    items.range(begin..stop).copied().collect()
}

/// Volume-weighted average price in quote units per whole base unit,
/// rounded half up; `base_scale` = 10^base decimals.
pub fn vwap_quote_units(quote_units: u128, volume_units: u128, base_scale: u64) -> u64 {
    if volume_units == 0 {
        return 0;
    }
    let num = quote_units.saturating_mul(u128::from(base_scale));
    let v = num.saturating_add(volume_units / 2) / volume_units;
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl PairView {
    /// An empty view of `pair` bounded by `limits`; its [`PairMeta`] from
    /// the listed `assets`.
    pub fn with_limits(
        pair: Pair,
        last_price: u64,
        limits: MarketLimits,
        assets: &BTreeMap<AssetId, Asset>,
    ) -> PairView {
        let limits = limits.sanitized();
        PairView {
            meta: Arc::new(PairMeta::of(&pair, assets)),
            pair,
            book: DepthBook::with_max_levels(limits.depth_max_levels),
            last_price,
            trades: VecDeque::new(),
            agg_trades: VecDeque::new(),
            klines: vec![VecDeque::new(); KlineInterval::ALL.len()],
            last_trade_ms: 0,
            limits,
        }
    }

    /// Record one trade of command `seq` at command time `ts_ms`.
    fn record_trade(&mut self, seq: u64, ts_ms: u64, t: &Trade) {
        let time_ms = ts_ms.max(self.last_trade_ms);
        self.last_trade_ms = time_ms;
        self.last_price = t.price.0;

        let prev_trade = self.trades.back().map(|x| x.id);
        match self.agg_trades.back_mut() {
            Some(a)
                if a.seq == seq
                    && a.taker_order == t.taker_order.0
                    && a.price_ticks == t.price.0
                    && prev_trade == Some(a.last_trade_id) =>
            {
                a.qty_units = a.qty_units.saturating_add(t.qty.0);
                a.last_trade_id = t.id.0;
            }
            _ => {
                let a = AggTrade {
                    id: t.id.0,
                    price_ticks: t.price.0,
                    qty_units: t.qty.0,
                    first_trade_id: t.id.0,
                    last_trade_id: t.id.0,
                    time_ms,
                    buyer_is_maker: t.buyer_is_maker(),
                    taker_order: t.taker_order.0,
                    seq,
                };
                bounded::push(&mut self.agg_trades, a, self.limits.agg_trades_kept);
            }
        }

        let view = TradeView {
            id: t.id.0,
            price_ticks: t.price.0,
            qty_units: t.qty.0,
            quote_units: t.quote_qty,
            time_ms,
            buyer_is_maker: t.buyer_is_maker(),
        };
        bounded::push(&mut self.trades, view, self.limits.trades_kept);

        for (interval, series) in KlineInterval::ALL.iter().zip(self.klines.iter_mut()) {
            let open = interval.open_time_ms(time_ms);
            match series.back_mut() {
                // `time_ms` never decreases, so the newest kline is the
                // only one a trade can land in.
                Some(k) if k.open_time_ms == open => k.add(t),
                _ => {
                    bounded::push(series, Kline::new(open, t), self.limits.klines_kept);
                }
            }
        }
    }

    /// Memory holds as many klines of `interval` as it keeps: older ones
    /// may have been dropped (Postgres keeps them all).
    pub fn klines_full(&self, interval: KlineInterval) -> bool {
        self.kline_series(interval).len() >= self.limits.klines_kept
    }

    /// Every kline kept for `interval`, oldest first.
    pub fn kline_series(&self, interval: KlineInterval) -> &VecDeque<Kline> {
        &self.klines[interval_index(interval)]
    }

    /// Klines with `start <= openTime <= end`: the first `limit` from
    /// `start` when it is given, else the most recent `limit`.
    pub fn klines(
        &self,
        interval: KlineInterval,
        start_ms: Option<u64>,
        end_ms: Option<u64>,
        limit: usize,
    ) -> Vec<Kline> {
        select(
            self.kline_series(interval),
            |k| k.open_time_ms,
            start_ms,
            end_ms,
            limit,
        )
    }

    /// The aggregate trades made by command `seq` (those at the end).
    pub fn agg_trades_of_seq(&self, seq: u64) -> impl Iterator<Item = &AggTrade> {
        let n = self
            .agg_trades
            .iter()
            .rev()
            .take_while(|a| a.seq == seq)
            .count();
        self.agg_trades.range(self.agg_trades.len() - n..)
    }

    /// Aggregate trades with `id >= from_id` (the first `limit`).
    pub fn agg_trades_from_id(&self, from_id: u64, limit: usize) -> Vec<AggTrade> {
        select(&self.agg_trades, |a| a.id, Some(from_id), None, limit)
    }

    /// Aggregate trades with `start <= T <= end`: the first `limit` from
    /// `start` when it is given, else the most recent `limit`.
    pub fn agg_trades_in(
        &self,
        start_ms: Option<u64>,
        end_ms: Option<u64>,
        limit: usize,
    ) -> Vec<AggTrade> {
        select(&self.agg_trades, |a| a.time_ms, start_ms, end_ms, limit)
    }

    /// Rolling 24 h statistics for the window ending at `now_ms`, folded
    /// from the 1m klines (minute resolution: the minute containing the
    /// window's start counts whole).
    pub fn ticker_24h(&self, now_ms: u64) -> Ticker24h {
        let open_time_ms = now_ms.saturating_sub(TICKER_WINDOW_MS);
        let from = open_time_ms - open_time_ms % MINUTE_MS;
        let series = self.kline_series(KlineInterval::M1);
        let i = series.partition_point(|k| k.open_time_ms < from);
        let mut t = Ticker24h {
            open_time_ms,
            close_time_ms: now_ms,
            open_ticks: self.last_price,
            high_ticks: 0,
            low_ticks: 0,
            last_ticks: self.last_price,
            last_qty_units: self.trades.back().map_or(0, |x| x.qty_units),
            prev_close_ticks: self.last_price,
            volume_units: 0,
            quote_units: 0,
            first_id: None,
            last_id: None,
            count: 0,
        };
        let mut window = series.range(i..).filter(|k| k.open_time_ms <= now_ms);
        let Some(first) = window.next() else {
            // A quiet window: the price stands where the last trade left
            // it, nothing traded (high/low 0, ids -1, like Binance).
            return t;
        };
        t.open_ticks = first.open_ticks;
        t.high_ticks = first.high_ticks;
        t.low_ticks = first.low_ticks;
        t.prev_close_ticks = if i > 0 { series[i - 1].close_ticks } else { 0 };
        t.first_id = Some(first.first_trade_id);
        let mut last = first;
        t.volume_units = first.volume_units;
        t.quote_units = first.quote_units;
        t.count = first.trades;
        for k in window {
            t.high_ticks = t.high_ticks.max(k.high_ticks);
            t.low_ticks = t.low_ticks.min(k.low_ticks);
            t.volume_units += k.volume_units;
            t.quote_units += k.quote_units;
            t.count += k.trades;
            last = k;
        }
        t.last_id = Some(last.last_trade_id);
        t.last_ticks = last.close_ticks;
        t
    }

    /// `/api/v3/avgPrice`: the volume-weighted average price of the trades
    /// of the last `AVG_PRICE_MINS` minutes before `now_ms` (second
    /// resolution, from the 1s klines) in quote units, or the last price
    /// when nothing traded in that window; and the last trade's time.
    pub fn avg_price(&self, now_ms: u64) -> (u64, u64) {
        let start = now_ms.saturating_sub(AVG_PRICE_MINS * MINUTE_MS);
        let from = start - start % SECOND_MS;
        let series = self.kline_series(KlineInterval::S1);
        let i = series.partition_point(|k| k.open_time_ms < from);
        let (mut quote, mut volume) = (0u128, 0u128);
        for k in series.range(i..).filter(|k| k.open_time_ms <= now_ms) {
            quote += k.quote_units;
            volume += k.volume_units;
        }
        let price = if volume > 0 {
            vwap_quote_units(quote, volume, self.pair.base_scale)
        } else {
            self.last_price.saturating_mul(self.pair.spec.tick_units)
        };
        (price, self.last_trade_ms)
    }
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

/// What an order needs of its pair, found by symbol in a [`PairDirectory`]
/// (or in the [`Market`] itself); derefs to the pair's symbols and
/// decimals.
#[derive(Debug, Clone)]
pub struct PairEntry {
    pub id: PairId,
    pub base: AssetId,
    pub tick_units: u64,
    /// Symbols and decimals, shared with the market projection.
    pub meta: Arc<PairMeta>,
}

impl PairEntry {
    pub fn of(v: &PairView) -> PairEntry {
        PairEntry {
            id: v.pair.id,
            base: v.pair.spec.base,
            tick_units: v.pair.spec.tick_units,
            meta: v.meta.clone(),
        }
    }
}

impl std::ops::Deref for PairEntry {
    type Target = PairMeta;
    fn deref(&self) -> &PairMeta {
        &self.meta
    }
}

/// Unique ids of directories (a thread's cached copy names the directory it
/// came from: servers in one process never read each other's pairs).
static NEXT_DIRECTORY: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's copy of a directory: (directory id, version, pairs).
    static DIRECTORY_COPY: RefCell<Option<(u64, u64, PairsBySymbol)>> =
        const { RefCell::new(None) };
}

type PairsBySymbol = FxHashMap<String, PairEntry>;

/// The pairs by symbol, republished by [`Market`] whenever a pair or one of
/// its assets changes. Every order looks its pair up here: each thread
/// keeps a copy (with its own reference counts) and only checks the
/// version (a plain atomic load, no write to a shared cache line), so the
/// order path never takes the market's
/// lock, which the publisher write-locks for every command and holds
/// (read) during each command's stream fan-out: an order never waits
/// behind either. With the boxed order records of the accounts read model,
/// gateway CPU per order at 60,000/s went from 7.2-7.9 to 6.9-7.0 us
/// (benches/RESULTS.md).
#[derive(Debug)]
pub struct PairDirectory {
    id: u64,
    version: AtomicU64,
    current: std::sync::RwLock<Arc<PairsBySymbol>>,
}

impl Default for PairDirectory {
    fn default() -> Self {
        PairDirectory {
            id: NEXT_DIRECTORY.fetch_add(1, Ordering::Relaxed),
            version: AtomicU64::new(0),
            current: std::sync::RwLock::new(Arc::default()),
        }
    }
}

impl PairDirectory {
    fn publish(&self, pairs: PairsBySymbol) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pairs);
        // After the new map: a reader that sees this version gets it.
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The pair named `symbol`, as of the last command published.
    pub fn get(&self, symbol: &str) -> Option<PairEntry> {
        let version = self.version.load(Ordering::Acquire);
        DIRECTORY_COPY.with(|copy| {
            let mut copy = copy.borrow_mut();
            match &*copy {
                Some((id, v, _)) if *id == self.id && *v == version => {}
                _ => {
                    let shared = self
                        .current
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    // Each thread's entries get their own `PairMeta`, so
                    // the reference count an order takes and drops lives
                    // in a cache line no other thread writes.
                    let own = shared
                        .iter()
                        .map(|(symbol, e)| {
                            let meta = Arc::new(PairMeta::clone(&e.meta));
                            (symbol.clone(), PairEntry { meta, ..e.clone() })
                        })
                        .collect();
                    *copy = Some((self.id, version, own));
                }
            }
            copy.as_ref()
                .and_then(|(_, _, pairs)| pairs.get(symbol).cloned())
        })
    }
}

#[derive(Debug, Default)]
pub struct Market {
    pub assets: BTreeMap<AssetId, Asset>,
    pub pairs: BTreeMap<PairId, PairView>,
    pub pair_by_symbol: HashMap<String, PairId>,
    /// [`Market::pairs`] by symbol for the order path.
    directory: Arc<PairDirectory>,
    orders: FxHashMap<u64, OrderTrack>,
    pub last_seq: u64,
    touched: Vec<u64>,
    /// The (pair, side, price ticks) levels the last applied command
    /// changed (possibly repeated); their quantities are in the books.
    pub level_changes: Vec<(PairId, Side, u64)>,
    limits: MarketLimits,
}

impl Market {
    /// An empty projection bounded by `limits`.
    pub fn new(limits: MarketLimits) -> Market {
        Market {
            limits: limits.sanitized(),
            ..Market::default()
        }
    }

    /// The bounds this projection keeps.
    pub fn limits(&self) -> MarketLimits {
        self.limits
    }

    /// Build the projection from a recovered engine (before the pipeline
    /// starts, on the thread that owns the engine). It knows the book and
    /// the last price only; trades and klines need a journal replay
    /// through [`Market::apply_events`].
    pub fn from_engine(e: &Engine, limits: MarketLimits) -> Market {
        let mut m = Market {
            last_seq: e.last_seq(),
            ..Market::new(limits)
        };
        for a in e.assets() {
            m.assets.insert(a.id, a.clone());
        }
        for ps in e.pairs() {
            let id = ps.pair.id;
            m.pair_by_symbol.insert(ps.pair.spec.symbol.clone(), id);
            let mut view =
                PairView::with_limits(ps.pair.clone(), ps.last_price, m.limits, &m.assets);
            // Without the journal's history the counter restarts at the
            // sequence number: never below any id served before.
            view.book.update_id = e.last_seq();
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
        m.publish_directory();
        m
    }

    /// The pairs by symbol, kept up to date by this projection.
    pub fn directory(&self) -> Arc<PairDirectory> {
        self.directory.clone()
    }

    fn publish_directory(&self) {
        let pairs = self
            .pair_by_symbol
            .iter()
            .filter_map(|(symbol, id)| Some((symbol.clone(), PairEntry::of(self.pairs.get(id)?))))
            .collect();
        self.directory.publish(pairs);
    }

    pub fn pair_by_symbol(&self, symbol: &str) -> Option<&PairView> {
        self.pair_by_symbol
            .get(symbol)
            .and_then(|id| self.pairs.get(id))
    }

    /// Apply one command's events.
    pub fn apply(&mut self, o: &Outcome) {
        self.apply_events(o.seq, o.ts_ms, &o.events);
    }

    /// Apply the events of command `seq` journaled at `ts_ms` (live from the
    /// pipeline, or from a journal replay at startup).
    pub fn apply_events(&mut self, seq: u64, ts_ms: u64, events: &[Event]) {
        self.last_seq = seq;
        self.touched.clear();
        self.level_changes.clear();
        let mut changed: Vec<PairId> = Vec::new();
        let mut pairs_changed = false;
        for ev in events {
            match ev {
                Event::AssetListed(a) | Event::AssetUpdated(a) => {
                    pairs_changed = true;
                    self.assets.insert(a.id, a.clone());
                    for v in self.pairs.values_mut() {
                        if v.pair.spec.base == a.id || v.pair.spec.quote == a.id {
                            v.meta = Arc::new(PairMeta::of(&v.pair, &self.assets));
                        }
                    }
                }
                Event::PairListed(p) => {
                    pairs_changed = true;
                    self.pair_by_symbol.insert(p.spec.symbol.clone(), p.id);
                    let view = PairView::with_limits((**p).clone(), 0, self.limits, &self.assets);
                    self.pairs.insert(p.id, view);
                }
                Event::PairUpdated(p) => {
                    pairs_changed = true;
                    if let Some(v) = self.pairs.get_mut(&p.id) {
                        v.pair = (**p).clone();
                        v.meta = Arc::new(PairMeta::of(&v.pair, &self.assets));
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
                                self.level_changes.push((tr.pair, tr.side, tr.price));
                            }
                        }
                    }
                    if let Some(v) = self.pairs.get_mut(&t.pair) {
                        v.record_trade(seq, ts_ms, t);
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
                            self.level_changes.push((tr.pair, tr.side, tr.price));
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
                            self.level_changes.push((tr.pair, tr.side, tr.price));
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
                    self.level_changes.push((tr.pair, tr.side, tr.price));
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
                v.book.update_id += 1;
            }
        }
        if pairs_changed {
            self.publish_directory();
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

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{OrderId, PairSpec, PairStatus, Price, Qty, TradeId, UserId};

    const MIN: u64 = 60_000;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    /// 2024-01-15 00:00:00 UTC, a Monday.
    const MON_2024_01_15: u64 = 1_705_276_800_000;
    /// 2024-01-01 00:00:00 UTC.
    const JAN_2024: u64 = 1_704_067_200_000;
    /// 2023-12-01 00:00:00 UTC.
    const DEC_2023: u64 = 1_701_388_800_000;
    /// One whole base unit (8 decimals).
    const BTC: u64 = 100_000_000;

    fn pair() -> Pair {
        Pair::new(
            PairId(1),
            PairSpec {
                symbol: "BTCUSDT".into(),
                base: AssetId(1),
                quote: AssetId(2),
                // 0.01 USDT with 8 decimals
                tick_units: 1_000_000,
                step_units: 1_000,
                min_qty_units: 1_000,
                max_qty_units: 9_000 * BTC,
                market_max_qty_units: 9_000 * BTC,
                min_notional_units: 5 * BTC,
                max_notional_units: 0,
                min_price_ticks: 1,
                max_price_ticks: u64::MAX / 1_000_000_000,
                maker_fee_e8: 100_000,
                taker_fee_e8: 100_000,
                price_band_pct: 0,
                status: PairStatus::Trading,
            },
            8,
        )
    }

    fn market() -> Market {
        let mut m = Market::default();
        m.apply_events(1, 0, &[Event::PairListed(Box::new(pair()))]);
        m
    }

    /// A fill of `qty` base units at `price` ticks (price in cents).
    fn fill(id: u64, taker: u64, maker: u64, price: u64, qty: u64, taker_side: Side) -> Event {
        Event::Trade(Trade {
            id: TradeId(id),
            pair: PairId(1),
            price: Price(price),
            qty: Qty(qty),
            quote_qty: pair().notional(qty, price).unwrap(),
            maker_order: OrderId(maker),
            taker_order: OrderId(taker),
            maker_user: UserId(1),
            taker_user: UserId(2),
            taker_side,
            maker_fee: 0,
            taker_fee: 0,
            maker_filled: Qty(qty),
            taker_filled: Qty(qty),
        })
    }

    /// The default configuration's first asset renamed and re-scaled.
    fn asset(id: u32, symbol: &str, decimals: u8) -> Asset {
        let cfg = crate::config::load(None, &|_| None).expect("embedded default config");
        let spec = cfg.asset_specs().expect("default assets").remove(0);
        Asset {
            id: AssetId(id),
            spec: engine::AssetSpec {
                symbol: symbol.into(),
                decimals,
                ..spec
            },
        }
    }

    #[test]
    fn pair_meta_follows_asset_and_pair_events() {
        let meta = |m: &Market| (*view(m).meta).clone();
        let expect = |sym: &str, b: &str, q: &str, bd: u32, qd: u32| PairMeta {
            symbol: sym.into(),
            base_sym: b.into(),
            quote_sym: q.into(),
            base_dec: bd,
            quote_dec: qd,
        };
        let mut m = Market::default();
        // A pair listed before its assets: the defaults, then the assets'.
        m.apply_events(1, 0, &[Event::PairListed(Box::new(pair()))]);
        assert_eq!(meta(&m), expect("BTCUSDT", "", "", 8, 8));
        m.apply_events(2, 0, &[Event::AssetListed(asset(1, "BTC", 8))]);
        m.apply_events(3, 0, &[Event::AssetListed(asset(2, "USDT", 6))]);
        assert_eq!(meta(&m), expect("BTCUSDT", "BTC", "USDT", 8, 6));
        // Another asset leaves the pair alone; an update of its own shows.
        let before = view(&m).meta.clone();
        m.apply_events(4, 0, &[Event::AssetListed(asset(3, "ETH", 18))]);
        assert!(Arc::ptr_eq(&before, &view(&m).meta));
        m.apply_events(5, 0, &[Event::AssetUpdated(asset(2, "USDT", 4))]);
        assert_eq!(meta(&m), expect("BTCUSDT", "BTC", "USDT", 8, 4));
        // A pair listed after its assets and a pair update.
        let mut m2 = Market::default();
        m2.apply_events(1, 0, &[Event::AssetListed(asset(1, "BTC", 8))]);
        m2.apply_events(2, 0, &[Event::AssetListed(asset(2, "USDT", 6))]);
        m2.apply_events(3, 0, &[Event::PairListed(Box::new(pair()))]);
        assert_eq!(meta(&m2), expect("BTCUSDT", "BTC", "USDT", 8, 6));
        let mut p = pair();
        p.spec.symbol = "XBTUSDT".into();
        m2.apply_events(4, 0, &[Event::PairUpdated(Box::new(p))]);
        assert_eq!(meta(&m2), expect("XBTUSDT", "BTC", "USDT", 8, 6));
    }

    /// The directory the order path reads follows every pair and asset
    /// event on a thread that cached an older copy, and two markets on one
    /// thread never see each other's pairs.
    #[test]
    fn the_pair_directory_follows_the_market() {
        let mut m = Market::default();
        let dir = m.directory();
        assert!(dir.get("BTCUSDT").is_none());
        m.apply_events(1, 0, &[Event::PairListed(Box::new(pair()))]);
        let e = dir.get("BTCUSDT").expect("listed pair");
        assert_eq!(
            (e.id, e.tick_units, e.meta.quote_dec),
            (PairId(1), pair().spec.tick_units, 8)
        );
        m.apply_events(2, 0, &[Event::AssetListed(asset(2, "USDT", 6))]);
        let e = dir.get("BTCUSDT").expect("listed pair");
        assert_eq!((e.meta.quote_sym.as_str(), e.meta.quote_dec), ("USDT", 6));
        let mut p = pair();
        p.spec.tick_units *= 10;
        m.apply_events(3, 0, &[Event::PairUpdated(Box::new(p))]);
        assert_eq!(
            dir.get("BTCUSDT").unwrap().tick_units,
            pair().spec.tick_units * 10
        );
        // Orders and trades leave it alone (same copy, no republish).
        let v = dir.version.load(Ordering::Relaxed);
        m.apply_events(4, 0, &[fill(1, 2, 3, 100, 1, Side::Buy)]);
        assert_eq!(dir.version.load(Ordering::Relaxed), v);
        // Another market (another server in this process) at the same
        // version number: its own, empty, directory.
        let other = Market::default();
        let odir = other.directory();
        while odir.version.load(Ordering::Relaxed) < dir.version.load(Ordering::Relaxed) {
            odir.publish(PairsBySymbol::default());
        }
        assert!(odir.get("BTCUSDT").is_none());
        assert!(dir.get("BTCUSDT").is_some());
    }

    /// The default configuration's assets and pairs through an engine:
    /// the projection built live from the events and the one rebuilt from
    /// the engine (restart from a snapshot) hold the same metadata.
    #[test]
    fn pair_meta_is_the_same_live_and_from_a_recovered_engine() {
        let cfg = crate::config::load(None, &|_| None).expect("embedded default config");
        let assets = cfg.asset_specs().expect("default assets");
        let mut cmds: Vec<engine::Command> = assets
            .iter()
            .map(|spec| engine::Command::AddAsset {
                spec: spec.clone(),
                by: None,
            })
            .collect();
        for spec in cfg.pair_specs(&assets).expect("default pairs") {
            cmds.push(engine::Command::AddPair {
                spec: Box::new(spec),
                by: None,
            });
        }
        let mut e = Engine::new();
        let mut live = Market::default();
        for (i, c) in cmds.iter().enumerate() {
            let mut out = Vec::new();
            let seq = i as u64 + 1;
            e.apply(seq, 1_000, c, &mut out);
            live.apply_events(seq, 1_000, &out);
        }
        let rebuilt = Market::from_engine(&e, MarketLimits::default());
        assert!(live.pairs.len() >= 2);
        for (id, v) in &live.pairs {
            let base = &live.assets[&v.pair.spec.base].spec;
            let quote = &live.assets[&v.pair.spec.quote].spec;
            let want = PairMeta {
                symbol: v.pair.spec.symbol.clone(),
                base_sym: base.symbol.clone(),
                quote_sym: quote.symbol.clone(),
                base_dec: base.decimals.into(),
                quote_dec: quote.decimals.into(),
            };
            assert_eq!(*v.meta, want);
            assert_eq!(*rebuilt.pairs[id].meta, want);
            // The order path's directory, live and rebuilt (published at
            // once by from_engine, before any event).
            for m in [&live, &rebuilt] {
                let e = m
                    .directory()
                    .get(&want.symbol)
                    .expect("pair in the directory");
                assert_eq!(
                    (e.id, e.base, e.tick_units, &*e.meta),
                    (*id, v.pair.spec.base, v.pair.spec.tick_units, &want)
                );
            }
        }
    }

    fn view(m: &Market) -> &PairView {
        m.pair_by_symbol("BTCUSDT").unwrap()
    }

    #[test]
    fn one_minute_and_one_hour_klines() {
        let mut m = market();
        let t0 = MON_2024_01_15 + 10 * HOUR;
        // 10:00:30 buy 1 @ 100.00; 10:00:50 sell 2 @ 90.00; 10:01:10 buy 1 @ 120.00;
        // 10:05:00 buy 1 @ 110.00 (minutes 2..4 have no trade).
        m.apply_events(2, t0 + 30_000, &[fill(1, 11, 10, 10_000, BTC, Side::Buy)]);
        m.apply_events(
            3,
            t0 + 50_000,
            &[fill(2, 12, 10, 9_000, 2 * BTC, Side::Sell)],
        );
        m.apply_events(4, t0 + 70_000, &[fill(3, 13, 10, 12_000, BTC, Side::Buy)]);
        m.apply_events(5, t0 + 5 * MIN, &[fill(4, 14, 10, 11_000, BTC, Side::Buy)]);
        let v = view(&m);
        let k1 = v.klines(KlineInterval::M1, None, None, 500);
        assert_eq!(
            k1.iter().map(|k| k.open_time_ms).collect::<Vec<_>>(),
            vec![t0, t0 + MIN, t0 + 5 * MIN],
            "empty minutes are not emitted"
        );
        let k = k1[0];
        assert_eq!(
            (k.open_ticks, k.high_ticks, k.low_ticks, k.close_ticks),
            (10_000, 10_000, 9_000, 9_000)
        );
        assert_eq!(k.volume_units, 3 * u128::from(BTC));
        // 100 + 180 USDT in quote units
        assert_eq!(k.quote_units, 280 * u128::from(BTC));
        assert_eq!(k.taker_buy_volume_units, u128::from(BTC));
        assert_eq!(k.taker_buy_quote_units, 100 * u128::from(BTC));
        assert_eq!((k.trades, k.first_trade_id, k.last_trade_id), (2, 1, 2));
        assert_eq!(
            KlineInterval::M1.close_time_ms(k.open_time_ms),
            t0 + MIN - 1
        );

        let h = v.klines(KlineInterval::H1, None, None, 500);
        assert_eq!(h.len(), 1);
        let h = h[0];
        assert_eq!(h.open_time_ms, t0);
        assert_eq!(
            (h.open_ticks, h.high_ticks, h.low_ticks, h.close_ticks),
            (10_000, 12_000, 9_000, 11_000)
        );
        assert_eq!((h.trades, h.volume_units), (4, 5 * u128::from(BTC)));
        assert_eq!(
            KlineInterval::H1.close_time_ms(h.open_time_ms),
            t0 + HOUR - 1
        );

        // startTime / endTime select by open time; limit keeps the first
        // from startTime or the most recent without it.
        let sel = |s, e, l| {
            v.klines(KlineInterval::M1, s, e, l)
                .iter()
                .map(|k| k.open_time_ms)
                .collect::<Vec<_>>()
        };
        assert_eq!(sel(Some(t0 + 1), None, 500), vec![t0 + MIN, t0 + 5 * MIN]);
        assert_eq!(sel(None, Some(t0 + MIN), 500), vec![t0, t0 + MIN]);
        assert_eq!(sel(Some(t0), None, 1), vec![t0]);
        assert_eq!(sel(None, None, 1), vec![t0 + 5 * MIN]);
        assert_eq!(sel(Some(t0 + MIN), Some(t0 + MIN), 500), vec![t0 + MIN]);
        assert_eq!(
            sel(Some(t0 + 2 * MIN), Some(t0 + 4 * MIN), 500),
            Vec::<u64>::new()
        );
        assert_eq!(sel(Some(t0 + MIN), Some(t0), 500), Vec::<u64>::new());
    }

    #[test]
    fn weekly_klines_open_on_monday() {
        let mut m = market();
        // Wednesday 2024-01-17 12:00, Sunday 2024-01-21 23:59:59.999,
        // then Monday 2024-01-22 00:00.
        m.apply_events(
            2,
            MON_2024_01_15 + 2 * DAY + 12 * HOUR,
            &[fill(1, 11, 10, 100, BTC, Side::Buy)],
        );
        m.apply_events(
            3,
            MON_2024_01_15 + 7 * DAY - 1,
            &[fill(2, 12, 10, 200, BTC, Side::Buy)],
        );
        m.apply_events(
            4,
            MON_2024_01_15 + 7 * DAY,
            &[fill(3, 13, 10, 300, BTC, Side::Buy)],
        );
        let w = view(&m).klines(KlineInterval::W1, None, None, 10);
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[0].open_time_ms, w[0].trades, w[0].close_ticks),
            (MON_2024_01_15, 2, 200)
        );
        assert_eq!(
            KlineInterval::W1.close_time_ms(w[0].open_time_ms),
            MON_2024_01_15 + 7 * DAY - 1
        );
        assert_eq!(
            (w[1].open_time_ms, w[1].trades),
            (MON_2024_01_15 + 7 * DAY, 1)
        );
        // The same trades in 1d: three separate days.
        assert_eq!(view(&m).klines(KlineInterval::D1, None, None, 10).len(), 3);
    }

    #[test]
    fn monthly_klines_follow_the_calendar_across_the_year_end() {
        let mut m = market();
        m.apply_events(
            2,
            DEC_2023 + 3 * DAY,
            &[fill(1, 11, 10, 100, BTC, Side::Buy)],
        );
        m.apply_events(3, JAN_2024 - 1, &[fill(2, 12, 10, 150, BTC, Side::Sell)]);
        m.apply_events(4, JAN_2024, &[fill(3, 13, 10, 90, BTC, Side::Buy)]);
        let mo = view(&m).klines(KlineInterval::Mo1, None, None, 10);
        assert_eq!(mo.len(), 2);
        assert_eq!(mo[0].open_time_ms, DEC_2023);
        assert_eq!(KlineInterval::Mo1.close_time_ms(DEC_2023), JAN_2024 - 1);
        assert_eq!(
            (mo[0].trades, mo[0].open_ticks, mo[0].close_ticks),
            (2, 100, 150)
        );
        assert_eq!(mo[0].taker_buy_volume_units, u128::from(BTC));
        assert_eq!(mo[1].open_time_ms, JAN_2024);
        // 2024-02-01 00:00 - 1 ms
        assert_eq!(
            KlineInterval::Mo1.close_time_ms(JAN_2024),
            JAN_2024 + 31 * DAY - 1
        );
    }

    #[test]
    fn a_clock_step_back_never_reorders_klines() {
        let mut m = market();
        let t0 = MON_2024_01_15 + 5 * MIN;
        m.apply_events(2, t0, &[fill(1, 11, 10, 100, BTC, Side::Buy)]);
        m.apply_events(3, t0 - 2 * MIN, &[fill(2, 12, 10, 200, BTC, Side::Buy)]);
        let v = view(&m);
        let k = v.klines(KlineInterval::M1, None, None, 10);
        assert_eq!(k.len(), 1);
        assert_eq!(
            (k[0].open_time_ms, k[0].trades, k[0].close_ticks),
            (t0, 2, 200)
        );
        assert_eq!(v.trades.back().unwrap().time_ms, t0);
    }

    #[test]
    fn aggregate_trades_join_one_takers_fills_at_one_price() {
        let mut m = market();
        let t = MON_2024_01_15;
        // Taker 100 sweeps makers 1 and 2 at 100.00 and maker 3 at 101.00.
        m.apply_events(
            2,
            t,
            &[
                fill(1, 100, 1, 10_000, BTC, Side::Buy),
                fill(2, 100, 2, 10_000, 2 * BTC, Side::Buy),
                fill(3, 100, 3, 10_100, BTC, Side::Buy),
            ],
        );
        // Another taker at the same price and time, another command: its own.
        m.apply_events(3, t, &[fill(4, 101, 3, 10_100, BTC, Side::Sell)]);
        // Same taker id and price but in another command (a new match):
        // not aggregated either.
        m.apply_events(4, t + 1, &[fill(5, 101, 4, 10_100, BTC, Side::Sell)]);
        let v = view(&m);
        let a: Vec<(u64, u64, u64, u64, u64, bool)> = v
            .agg_trades
            .iter()
            .map(|a| {
                (
                    a.id,
                    a.price_ticks,
                    a.qty_units,
                    a.first_trade_id,
                    a.last_trade_id,
                    a.buyer_is_maker,
                )
            })
            .collect();
        assert_eq!(
            a,
            vec![
                (1, 10_000, 3 * BTC, 1, 2, false),
                (3, 10_100, BTC, 3, 3, false),
                (4, 10_100, BTC, 4, 4, true),
                (5, 10_100, BTC, 5, 5, true),
            ]
        );
        // Queries: fromId inclusive, time range inclusive, most recent.
        let ids = |l: Vec<AggTrade>| l.iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(ids(v.agg_trades_from_id(2, 500)), vec![3, 4, 5]);
        assert_eq!(ids(v.agg_trades_from_id(3, 2)), vec![3, 4]);
        assert_eq!(ids(v.agg_trades_in(Some(t), Some(t), 500)), vec![1, 3, 4]);
        assert_eq!(ids(v.agg_trades_in(Some(t + 1), None, 500)), vec![5]);
        assert_eq!(ids(v.agg_trades_in(None, None, 2)), vec![4, 5]);
        assert_eq!(ids(v.agg_trades_in(None, Some(t), 1)), vec![4]);
    }

    #[test]
    fn an_interleaved_fill_breaks_the_aggregate() {
        let mut m = market();
        m.apply_events(
            2,
            MON_2024_01_15,
            &[
                fill(1, 100, 1, 10_000, BTC, Side::Buy),
                fill(2, 200, 1, 10_000, BTC, Side::Buy),
                fill(3, 100, 2, 10_000, BTC, Side::Buy),
            ],
        );
        assert_eq!(view(&m).agg_trades.len(), 3);
    }

    #[test]
    fn memory_is_bounded_per_series() {
        let mut m = market();
        let n = DEFAULT_KLINES_KEPT_PER_INTERVAL.max(DEFAULT_AGG_TRADES_KEPT) as u64 + 10;
        for i in 0..n {
            m.apply_events(
                i + 2,
                MON_2024_01_15 + i * MIN,
                &[fill(i + 1, 1000 + i, 1, 100, BTC, Side::Buy)],
            );
        }
        let v = view(&m);
        assert_eq!(
            v.kline_series(KlineInterval::S1).len(),
            DEFAULT_KLINES_KEPT_PER_INTERVAL
        );
        assert_eq!(
            v.kline_series(KlineInterval::M1).len(),
            DEFAULT_KLINES_KEPT_PER_INTERVAL
        );
        assert_eq!(v.agg_trades.len(), DEFAULT_AGG_TRADES_KEPT);
        assert_eq!(v.trades.len(), DEFAULT_TRADES_KEPT);
        assert_eq!(v.agg_trades.back().unwrap().id, n);
    }

    #[test]
    fn configured_limits_bound_every_series_and_the_depth_answer() {
        let limits = MarketLimits {
            trades_kept: 5,
            agg_trades_kept: 3,
            klines_kept: MIN_KLINES_KEPT_PER_INTERVAL + 1,
            depth_max_levels: 2,
            ..MarketLimits::default()
        };
        let mut m = Market::new(limits);
        assert_eq!(m.limits(), limits);
        m.apply_events(1, 0, &[Event::PairListed(Box::new(pair()))]);
        let n = MIN_KLINES_KEPT_PER_INTERVAL as u64 + 20;
        for i in 0..n {
            m.apply_events(
                i + 2,
                MON_2024_01_15 + i * MIN,
                &[fill(i + 1, 1000 + i, 1, 100, BTC, Side::Buy)],
            );
        }
        let v = view(&m);
        assert_eq!(
            v.trades.iter().map(|t| t.id).collect::<Vec<_>>(),
            (n - 4..=n).collect::<Vec<_>>()
        );
        assert_eq!(
            v.agg_trades.iter().map(|a| a.id).collect::<Vec<_>>(),
            (n - 2..=n).collect::<Vec<_>>()
        );
        assert_eq!(
            v.kline_series(KlineInterval::M1).len(),
            MIN_KLINES_KEPT_PER_INTERVAL + 1
        );
        // The depth answer is cut at depth_max_levels, the book is not.
        let mut d = DepthBook::with_max_levels(2);
        for p in 1..=4 {
            d.add(Side::Buy, p, 1);
            d.add(Side::Sell, 10 + p, 1);
        }
        assert_eq!(d.max_levels(), 2);
        assert_eq!(d.top(100), (vec![(4, 1), (3, 1)], vec![(11, 1), (12, 1)]));
        assert_eq!(d.top(1), (vec![(4, 1)], vec![(11, 1)]));
        assert_eq!(d.bids.len(), 4);
        assert_eq!(view(&m).book.max_levels(), 2);
        // Too-short kline series would break the 24 h ticker: raised.
        let m = Market::new(MarketLimits {
            klines_kept: 10,
            trades_kept: 0,
            ..MarketLimits::default()
        });
        assert_eq!(m.limits().klines_kept, MIN_KLINES_KEPT_PER_INTERVAL);
        assert_eq!(m.limits().trades_kept, 1);
    }

    #[test]
    fn ticker_24h_rolls_and_evicts() {
        let mut m = market();
        let t0 = MON_2024_01_15 + 10_000; // 00:00:10
        m.apply_events(2, t0, &[fill(1, 11, 10, 10_000, BTC, Side::Buy)]);
        m.apply_events(
            3,
            t0 + HOUR,
            &[fill(2, 12, 10, 11_000, 2 * BTC, Side::Sell)],
        );
        m.apply_events(4, t0 + 2 * HOUR, &[fill(3, 13, 10, 9_000, BTC, Side::Buy)]);
        let v = view(&m);

        let now = t0 + 3 * HOUR;
        let t = v.ticker_24h(now);
        assert_eq!((t.open_time_ms, t.close_time_ms), (now - DAY, now));
        assert_eq!(
            (
                t.open_ticks,
                t.high_ticks,
                t.low_ticks,
                t.last_ticks,
                t.prev_close_ticks
            ),
            (10_000, 11_000, 9_000, 9_000, 0)
        );
        assert_eq!((t.first_id, t.last_id, t.count), (Some(1), Some(3), 3));
        assert_eq!(t.volume_units, 4 * u128::from(BTC));
        // 100 + 220 + 90 USDT
        assert_eq!(t.quote_units, 410 * u128::from(BTC));
        assert_eq!(t.last_qty_units, BTC);
        // weighted average 410 / 4 = 102.50
        assert_eq!(
            vwap_quote_units(t.quote_units, t.volume_units, BTC),
            10_250_000_000
        );

        // 24 h + 20 s later the first trade's minute still counts whole.
        let t = v.ticker_24h(t0 + DAY + 20_000);
        assert_eq!((t.count, t.first_id), (3, Some(1)));
        // One minute later it is out, and its price is the previous close.
        let t = v.ticker_24h(t0 + DAY + MIN);
        assert_eq!((t.count, t.first_id, t.last_id), (2, Some(2), Some(3)));
        assert_eq!((t.open_ticks, t.prev_close_ticks), (11_000, 10_000));
        assert_eq!(t.volume_units, 3 * u128::from(BTC));
        // Only the last trade left.
        let t = v.ticker_24h(t0 + 2 * HOUR + DAY);
        assert_eq!(
            (t.count, t.open_ticks, t.high_ticks, t.low_ticks),
            (1, 9_000, 9_000, 9_000)
        );
        assert_eq!(t.prev_close_ticks, 11_000);
        // A quiet day: nothing traded, the price stands.
        let t = v.ticker_24h(t0 + 3 * HOUR + DAY);
        assert_eq!((t.count, t.first_id, t.last_id), (0, None, None));
        assert_eq!(
            (
                t.open_ticks,
                t.high_ticks,
                t.low_ticks,
                t.last_ticks,
                t.prev_close_ticks
            ),
            (9_000, 0, 0, 9_000, 9_000)
        );
        assert_eq!((t.volume_units, t.quote_units), (0, 0));

        // A new trade after the quiet day opens a fresh window.
        m.apply_events(5, t0 + 3 * DAY, &[fill(4, 14, 10, 9_500, BTC, Side::Buy)]);
        let t = view(&m).ticker_24h(t0 + 3 * DAY + 1);
        assert_eq!(
            (t.count, t.open_ticks, t.prev_close_ticks),
            (1, 9_500, 9_000)
        );
    }

    #[test]
    fn avg_price_weights_the_last_five_minutes() {
        let mut m = market();
        let t0 = MON_2024_01_15 + HOUR;
        // Before the window: 1 @ 500.00.
        m.apply_events(2, t0, &[fill(1, 11, 10, 50_000, BTC, Side::Buy)]);
        // In it: 1 @ 100.00 and 3 @ 200.00 -> (100 + 600) / 4 = 175.00.
        m.apply_events(3, t0 + 3 * MIN, &[fill(2, 12, 10, 10_000, BTC, Side::Buy)]);
        m.apply_events(
            4,
            t0 + 6 * MIN,
            &[fill(3, 13, 10, 20_000, 3 * BTC, Side::Sell)],
        );
        let v = view(&m);
        let now = t0 + 6 * MIN + 500;
        assert_eq!(v.avg_price(now), (17_500_000_000, t0 + 6 * MIN));
        // Window [now - 5 min, now] with 1 s resolution: the trade at
        // t0 + 3 min drops out after t0 + 8 min.
        assert_eq!(
            v.avg_price(t0 + 8 * MIN + 1_000),
            (20_000_000_000, t0 + 6 * MIN)
        );
        // Nothing in the last 5 minutes: the last price.
        assert_eq!(v.avg_price(t0 + HOUR), (20_000_000_000, t0 + 6 * MIN));
        // Never traded: 0.
        assert_eq!(
            market().pair_by_symbol("BTCUSDT").unwrap().avg_price(t0),
            (0, 0)
        );
        // Half-up rounding in quote units.
        assert_eq!(vwap_quote_units(2, 3, 1), 1);
        assert_eq!(vwap_quote_units(1, 3, 1), 0);
        assert_eq!(vwap_quote_units(5, 0, 1), 0);
    }

    #[test]
    fn best_bid_and_ask() {
        let mut d = DepthBook::default();
        assert_eq!((d.best_bid(), d.best_ask()), (None, None));
        d.add(Side::Buy, 99, 5);
        d.add(Side::Buy, 98, 7);
        d.add(Side::Sell, 101, 1);
        d.add(Side::Sell, 103, 2);
        assert_eq!(
            (d.best_bid(), d.best_ask()),
            (Some((99, 5)), Some((101, 1)))
        );
    }
}
