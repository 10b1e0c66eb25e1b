//! W3 "peer stream": one order book, a deterministic seeded stream of
//! 70% limit / 20% cancel / 10% market commands, run through our engine and
//! through the peer crates `matchcore` and `lobster` (see `crate::peers`) so
//! their cost per command can be compared on exactly the same input.
//!
//! # Stream shape (see [`describe`])
//!
//! * Prices are integer ticks within `10_000 +- 50` ([`MIN_PRICE`]..=[`MAX_PRICE`]).
//! * **Pre-fill**: the first [`PREFILL_OPS`] commands (or all of them if the
//!   stream is shorter) are non-crossing GTC limits alternating buy/sell, bids at
//!   `10_000 - U[1,50]`, asks at `10_000 + U[1,50]`, so the book starts with
//!   about 500 resting orders a side.
//! * After that each command is drawn: 70% limit, 20% cancel, 10% market.
//!   Sides are 50/50.
//! * **Limits**: 20% are priced to take: at the opposite best price plus
//!   `U[0,`[`CROSS_TICKS`]`]` ticks through it (clamped to the band); any
//!   remainder rests at the limit price. The other 80% are priced not to cross:
//!   a buy at `min(9_999, best_ask - 1) - U[0,49]`, a sell at
//!   `max(10_001, best_bid + 1) + U[0,49]` (clamped to the band).
//! * **Cancels**: half name a uniformly random resting order (so old and
//!   deep orders get cancelled too and do not pile up), half a random id from
//!   a bounded ring of the last [`CANCEL_RING`] ids that came to rest, with a
//!   few retries to find one still resting; such a cancel may still name an
//!   order already filled or cancelled (about 10% of all cancels), which every
//!   implementation rejects or ignores.
//! * **Sizes**: resting (maker) limits use `1 + a*b*c` with `a, b, c` uniform in
//!   `[0,5]` (1..=126, mean ~16.6). Takers (crossing limits and markets) use the
//!   same distribution while the book holds fewer than [`TARGET_RESTING`]
//!   orders and `U[1,100]` while it holds more: this keeps the book near its
//!   pre-fill depth (like W1's "about 1,000 resting orders kept near target")
//!   instead of growing without bound, so the cost per command does not drift
//!   with the stream length.
//! * Ids of limit and market orders are strictly increasing from 1; cancels
//!   carry the id of the order they target.
//!
//! The generator prices orders against an exact shadow book (plain price-time
//! priority, integer ticks), so "crossing" and "resting" are facts, not guesses,
//! and [`W3Stats::expected_trades`] is the number of maker fills a correct
//! price-time engine must report for the stream.
//!
//! The PRNG is splitmix64 (seeding) + xorshift64* (stream), implemented here
//! so the stream depends on no external crate and never changes under us.

use std::collections::VecDeque;

/// Reference price the stream is centred on, in ticks.
pub const CENTER_PRICE: u64 = 10_000;
/// Half-width of the price band, in ticks.
pub const BAND_TICKS: u64 = 50;
/// Lowest price any order in the stream carries.
pub const MIN_PRICE: u64 = CENTER_PRICE - BAND_TICKS;
/// Highest price any order in the stream carries.
pub const MAX_PRICE: u64 = CENTER_PRICE + BAND_TICKS;
/// Number of leading non-crossing limits that build both sides of the book.
pub const PREFILL_OPS: usize = 1_000;
/// Resting-order count the size feedback steers the book towards.
pub const TARGET_RESTING: usize = 1_000;
/// How many ticks through the opposite best a crossing limit may be priced.
pub const CROSS_TICKS: u64 = 10;
/// Size of the ring of recently rested ids that cancels pick from.
pub const CANCEL_RING: usize = 4_096;

/// Percentages of the command mix after the pre-fill.
const LIMIT_PCT: u64 = 70;
const CANCEL_PCT: u64 = 20;
/// Percentage of limits priced to take.
const CROSSING_PCT: u64 = 20;
/// Attempts to find a still-resting id for a cancel.
const CANCEL_TRIES: usize = 8;

const LEVELS: usize = (MAX_PRICE - MIN_PRICE + 1) as usize;

/// Order side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Bid.
    Buy,
    /// Ask.
    Sell,
}

impl Side {
    #[inline]
    fn idx(self) -> usize {
        match self {
            Side::Buy => 0,
            Side::Sell => 1,
        }
    }

    #[inline]
    fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// One command of the W3 stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum W3Op {
    /// GTC limit order; `price` in ticks.
    Limit {
        /// Order id (strictly increasing from 1 across limits and markets).
        id: u64,
        /// Side.
        side: Side,
        /// Limit price in ticks, within [`MIN_PRICE`]..=[`MAX_PRICE`].
        price: u64,
        /// Quantity, >= 1.
        qty: u64,
    },
    /// Market order: takes what it can, the rest is cancelled (IOC).
    Market {
        /// Order id (strictly increasing from 1 across limits and markets).
        id: u64,
        /// Side.
        side: Side,
        /// Quantity, >= 1.
        qty: u64,
    },
    /// Cancel of a previously placed limit (it may already be filled or
    /// cancelled: the implementation then rejects or ignores it).
    Cancel {
        /// Id of the order to cancel.
        id: u64,
    },
}

/// Facts about a generated stream, computed on the generator's shadow book.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct W3Stats {
    /// Commands generated.
    pub ops: usize,
    /// Limit orders (pre-fill included).
    pub limits: usize,
    /// Limit orders that traded on arrival (priced at or through the opposite best).
    pub crossing_limits: usize,
    /// Market orders.
    pub markets: usize,
    /// Cancels.
    pub cancels: usize,
    /// Cancels naming an order that was no longer resting.
    pub stale_cancels: usize,
    /// Maker fills (one per resting order touched by a taker) that a correct
    /// price-time engine reports for the whole stream.
    pub expected_trades: u64,
    /// Resting orders after the last command.
    pub final_resting: usize,
    /// Largest number of resting orders seen after the pre-fill.
    pub max_resting: usize,
    /// Smallest number of resting orders seen after the pre-fill.
    pub min_resting: usize,
}

/// Generate `n` W3 commands from `seed`. Same seed and `n`, same stream.
pub fn generate(seed: u64, n: usize) -> Vec<W3Op> {
    generate_with_stats(seed, n).0
}

/// [`generate`], also returning facts about the stream ([`W3Stats`]).
pub fn generate_with_stats(seed: u64, n: usize) -> (Vec<W3Op>, W3Stats) {
    let mut rng = Rng::new(seed);
    let mut book = ShadowBook::new();
    let mut ops = Vec::with_capacity(n);
    let mut stats = W3Stats {
        ops: n,
        min_resting: usize::MAX,
        ..W3Stats::default()
    };
    let mut ring = RecentRing::default();
    let mut next_id: u64 = 1;

    for i in 0..n {
        if i < PREFILL_OPS {
            // Pre-fill: alternate sides, never crossing (bids < 10,000 < asks).
            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
            let d = rng.range_incl(1, BAND_TICKS);
            let price = match side {
                Side::Buy => CENTER_PRICE - d,
                Side::Sell => CENTER_PRICE + d,
            };
            let qty = maker_qty(&mut rng);
            let id = next_id;
            next_id += 1;
            place_limit(&mut book, &mut stats, &mut ring, id, side, price, qty);
            ops.push(W3Op::Limit {
                id,
                side,
                price,
                qty,
            });
            continue;
        }

        let roll = rng.below(100);
        if roll < LIMIT_PCT {
            let side = rng.side();
            let opp_best = book.best(side.opposite());
            let crossing = opp_best.is_some() && rng.below(100) < CROSSING_PCT;
            let (price, qty) = if crossing {
                let best = opp_best.unwrap_or(CENTER_PRICE);
                let through = rng.range_incl(0, CROSS_TICKS);
                let price = match side {
                    Side::Buy => (best + through).min(MAX_PRICE),
                    Side::Sell => best.saturating_sub(through).max(MIN_PRICE),
                };
                (price, taker_qty(&mut rng, book.resting))
            } else {
                let d = rng.range_incl(0, BAND_TICKS - 1);
                let price = match side {
                    Side::Buy => {
                        let top = opp_best.map_or(CENTER_PRICE - 1, |a| a.saturating_sub(1));
                        top.min(CENTER_PRICE - 1).saturating_sub(d).max(MIN_PRICE)
                    }
                    Side::Sell => {
                        let bottom = opp_best.map_or(CENTER_PRICE + 1, |b| b + 1);
                        (bottom.max(CENTER_PRICE + 1) + d).min(MAX_PRICE)
                    }
                };
                (price, maker_qty(&mut rng))
            };
            let id = next_id;
            next_id += 1;
            place_limit(&mut book, &mut stats, &mut ring, id, side, price, qty);
            ops.push(W3Op::Limit {
                id,
                side,
                price,
                qty,
            });
        } else if roll < LIMIT_PCT + CANCEL_PCT {
            stats.cancels += 1;
            let id = if rng.below(2) == 0 && book.resting > 0 {
                // Any resting order, uniformly: old and deep orders get
                // cancelled too, as real makers eventually do.
                book.live_ids[rng.below(book.live_ids.len() as u64) as usize]
            } else {
                // A recently rested order, probably (not certainly) still
                // resting: a few tries, then whatever was drawn last.
                let mut pick = None;
                for _ in 0..CANCEL_TRIES {
                    let Some(id) = ring.pick(&mut rng) else { break };
                    pick = Some(id);
                    if book.is_resting(id) {
                        break;
                    }
                }
                // Before anything rested: the latest id, which is not resting.
                pick.unwrap_or_else(|| next_id.saturating_sub(1).max(1))
            };
            if !book.cancel(id) {
                stats.stale_cancels += 1;
            }
            ops.push(W3Op::Cancel { id });
        } else {
            let side = rng.side();
            let qty = taker_qty(&mut rng, book.resting);
            let id = next_id;
            next_id += 1;
            stats.markets += 1;
            book.take(side, None, qty);
            ops.push(W3Op::Market { id, side, qty });
        }
        stats.max_resting = stats.max_resting.max(book.resting);
        stats.min_resting = stats.min_resting.min(book.resting);
    }

    if stats.min_resting == usize::MAX {
        stats.min_resting = book.resting;
    }
    stats.expected_trades = book.trades;
    stats.final_resting = book.resting;
    (ops, stats)
}

/// One-paragraph description of the workload, for `--help` and result files.
pub fn describe() -> &'static str {
    "W3 peer stream: one book, prices in ticks within 10,000 +- 50. The first 1,000 \
     commands are non-crossing GTC limits alternating buy/sell (about 500 resting a \
     side); then 70% limit / 20% cancel / 10% market, sides 50/50. 20% of limits are \
     priced at the opposite best plus 0..10 ticks through it (they take; any remainder \
     rests at the limit), the others rest without crossing. Half the cancels target a \
     random resting order, half a random id among the last 4,096 that came to rest \
     (some already filled: rejected/ignored). Maker sizes are \
     1 + a*b*c (a,b,c uniform in [0,5]); taker sizes use the same law below 1,000 \
     resting orders and 1..=100 above, keeping the book near 1,000 orders. Ids strictly \
     increase from 1. Seeded splitmix64/xorshift64*: same seed, same stream."
}

fn place_limit(
    book: &mut ShadowBook,
    stats: &mut W3Stats,
    ring: &mut RecentRing,
    id: u64,
    side: Side,
    price: u64,
    qty: u64,
) {
    stats.limits += 1;
    let crossing = match (side, book.best(side.opposite())) {
        (Side::Buy, Some(ask)) => price >= ask,
        (Side::Sell, Some(bid)) => price <= bid,
        _ => false,
    };
    if crossing {
        stats.crossing_limits += 1;
    }
    let rest = book.take(side, Some(price), qty);
    if rest > 0 {
        book.rest(id, side, price, rest);
        ring.push(id);
    }
}

/// The last [`CANCEL_RING`] ids that came to rest (some may have left since).
#[derive(Debug, Default)]
struct RecentRing {
    ids: Vec<u64>,
    next: usize,
}

impl RecentRing {
    fn push(&mut self, id: u64) {
        if self.ids.len() < CANCEL_RING {
            self.ids.push(id);
        } else {
            self.ids[self.next] = id;
            self.next = (self.next + 1) % CANCEL_RING;
        }
    }

    fn pick(&self, rng: &mut Rng) -> Option<u64> {
        if self.ids.is_empty() {
            None
        } else {
            Some(self.ids[rng.below(self.ids.len() as u64) as usize])
        }
    }
}

/// `1 + a*b*c`, `a, b, c` uniform in `[0,5]`.
#[inline]
fn maker_qty(rng: &mut Rng) -> u64 {
    1 + rng.below(6) * rng.below(6) * rng.below(6)
}

#[inline]
fn taker_qty(rng: &mut Rng, resting: usize) -> u64 {
    if resting > TARGET_RESTING {
        rng.range_incl(1, 100)
    } else {
        maker_qty(rng)
    }
}

/// splitmix64 for seeding, xorshift64* for the stream.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 step: spreads any seed (including 0) into a non-zero state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, n)` (multiply-shift; bias < n / 2^64).
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    #[inline]
    pub(crate) fn range_incl(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    #[inline]
    fn side(&mut self) -> Side {
        if self.next_u64() >> 63 == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }
}

/// Exact price-time book over the W3 band, used only by the generator.
/// Levels hold ids FIFO; cancelled ids are skipped lazily.
#[derive(Debug)]
struct ShadowBook {
    /// `[side][level]` FIFO of ids (may contain ids no longer resting).
    queues: [Vec<VecDeque<u64>>; 2],
    /// `[side][level]` number of resting orders.
    live: [Vec<u32>; 2],
    /// Per id: remaining quantity (0: not resting), side, level and position
    /// in `live_ids` (the last three valid while resting).
    slots: Vec<Slot>,
    /// Ids of all resting orders, unordered (swap-remove).
    live_ids: Vec<u64>,
    best: [Option<usize>; 2],
    resting: usize,
    trades: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    remaining: u64,
    side: u8,
    level: u8,
    pos: u32,
}

impl ShadowBook {
    fn new() -> Self {
        ShadowBook {
            queues: [vec![VecDeque::new(); LEVELS], vec![VecDeque::new(); LEVELS]],
            live: [vec![0; LEVELS], vec![0; LEVELS]],
            slots: Vec::new(),
            live_ids: Vec::new(),
            best: [None, None],
            resting: 0,
            trades: 0,
        }
    }

    #[inline]
    fn level(price: u64) -> usize {
        debug_assert!((MIN_PRICE..=MAX_PRICE).contains(&price));
        (price - MIN_PRICE) as usize
    }

    fn best(&self, side: Side) -> Option<u64> {
        self.best[side.idx()].map(|l| MIN_PRICE + l as u64)
    }

    fn is_resting(&self, id: u64) -> bool {
        self.slots.get(id as usize).is_some_and(|s| s.remaining > 0)
    }

    fn rest(&mut self, id: u64, side: Side, price: u64, qty: u64) {
        let s = side.idx();
        let lvl = Self::level(price);
        let idx = id as usize;
        if self.slots.len() <= idx {
            self.slots.resize(idx + 1, Slot::default());
        }
        self.slots[idx] = Slot {
            remaining: qty,
            side: s as u8,
            level: lvl as u8,
            pos: self.live_ids.len() as u32,
        };
        self.live_ids.push(id);
        self.queues[s][lvl].push_back(id);
        self.live[s][lvl] += 1;
        self.resting += 1;
        let better = match (side, self.best[s]) {
            (_, None) => true,
            (Side::Buy, Some(b)) => lvl > b,
            (Side::Sell, Some(b)) => lvl < b,
        };
        if better {
            self.best[s] = Some(lvl);
        }
    }

    /// Bookkeeping for an order leaving the book (its queue entry is
    /// dropped by the caller or lazily).
    fn unlive(&mut self, id: u64) {
        let slot = self.slots[id as usize];
        let pos = slot.pos as usize;
        self.live_ids.swap_remove(pos);
        if let Some(&moved) = self.live_ids.get(pos) {
            self.slots[moved as usize].pos = pos as u32;
        }
        self.slots[id as usize].remaining = 0;
        self.live[slot.side as usize][slot.level as usize] -= 1;
        self.resting -= 1;
    }

    fn cancel(&mut self, id: u64) -> bool {
        if !self.is_resting(id) {
            return false;
        }
        let Slot { side, level, .. } = self.slots[id as usize];
        let (s, lvl) = (side as usize, level as usize);
        self.unlive(id);
        if self.live[s][lvl] == 0 {
            self.queues[s][lvl].clear();
            if self.best[s] == Some(lvl) {
                self.recompute_best(s, lvl);
            }
        }
        true
    }

    /// Next non-empty level of side `s` at or behind `from`, scanning away
    /// from the spread.
    fn recompute_best(&mut self, s: usize, from: usize) {
        self.best[s] = if s == 0 {
            (0..=from).rev().find(|&l| self.live[0][l] > 0)
        } else {
            (from..LEVELS).find(|&l| self.live[1][l] > 0)
        };
    }

    /// Match a taker against the opposite side up to `limit` (None: market);
    /// returns the quantity left over.
    fn take(&mut self, side: Side, limit: Option<u64>, mut qty: u64) -> u64 {
        let m = side.opposite().idx();
        while qty > 0 {
            let Some(lvl) = self.best[m] else { break };
            let price = MIN_PRICE + lvl as u64;
            if let Some(limit) = limit {
                let reachable = match side {
                    Side::Buy => price <= limit,
                    Side::Sell => price >= limit,
                };
                if !reachable {
                    break;
                }
            }
            while qty > 0 {
                let Some(&id) = self.queues[m][lvl].front() else {
                    break;
                };
                let rem = self.slots[id as usize].remaining;
                if rem == 0 {
                    // cancelled earlier
                    self.queues[m][lvl].pop_front();
                    continue;
                }
                let fill = rem.min(qty);
                self.trades += 1;
                qty -= fill;
                if rem == fill {
                    self.queues[m][lvl].pop_front();
                    self.unlive(id);
                } else {
                    self.slots[id as usize].remaining = rem - fill;
                }
            }
            if self.live[m][lvl] == 0 {
                self.queues[m][lvl].clear();
                self.recompute_best(m, lvl);
            }
        }
        qty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a = generate(42, 50_000);
        let b = generate(42, 50_000);
        assert_eq!(a, b);
        let c = generate(43, 50_000);
        assert_ne!(a, c);
    }

    #[test]
    fn mix_ratios_on_100k() {
        let n = 100_000;
        let (ops, stats) = generate_with_stats(7, n);
        assert_eq!(ops.len(), n);
        let (mut limits, mut cancels, mut markets) = (0usize, 0usize, 0usize);
        let mut last_id = 0u64;
        let mut placed = std::collections::HashSet::new();
        for op in &ops {
            match *op {
                W3Op::Limit { id, price, qty, .. } => {
                    limits += 1;
                    assert!(id > last_id, "ids strictly increasing");
                    last_id = id;
                    placed.insert(id);
                    assert!((MIN_PRICE..=MAX_PRICE).contains(&price));
                    assert!(qty >= 1);
                }
                W3Op::Market { id, qty, .. } => {
                    markets += 1;
                    assert!(id > last_id, "ids strictly increasing");
                    last_id = id;
                    assert!(qty >= 1);
                }
                W3Op::Cancel { id } => {
                    cancels += 1;
                    assert!(placed.contains(&id), "cancel names a placed limit");
                }
            }
        }
        assert_eq!(stats.limits, limits);
        assert_eq!(stats.cancels, cancels);
        assert_eq!(stats.markets, markets);
        let pct = |x: usize, of: usize| x as f64 * 100.0 / of as f64;
        let within = |got: f64, want: f64| (got - want).abs() <= 3.0;
        assert!(within(pct(limits, n), 70.0), "limits {}%", pct(limits, n));
        assert!(
            within(pct(cancels, n), 20.0),
            "cancels {}%",
            pct(cancels, n)
        );
        assert!(
            within(pct(markets, n), 10.0),
            "markets {}%",
            pct(markets, n)
        );
        let crossing = pct(stats.crossing_limits, limits);
        assert!(within(crossing, 20.0), "crossing {crossing}% of limits");
        // Most cancels hit a resting order; the book stays near its target.
        assert!(stats.stale_cancels * 4 < cancels, "{stats:?}");
        assert!(stats.max_resting < 3 * TARGET_RESTING, "{stats:?}");
        assert!(stats.min_resting > TARGET_RESTING / 4, "{stats:?}");
        assert!(stats.expected_trades > 0);
    }

    #[test]
    fn prefill_builds_both_sides_without_crossing() {
        let (ops, stats) = generate_with_stats(1, PREFILL_OPS);
        assert_eq!(stats.crossing_limits, 0);
        assert_eq!(stats.expected_trades, 0);
        assert_eq!(stats.final_resting, PREFILL_OPS);
        for op in ops {
            match op {
                W3Op::Limit {
                    side: Side::Buy,
                    price,
                    ..
                } => assert!(price < CENTER_PRICE),
                W3Op::Limit {
                    side: Side::Sell,
                    price,
                    ..
                } => assert!(price > CENTER_PRICE),
                other => panic!("pre-fill must be limits only: {other:?}"),
            }
        }
    }

    #[test]
    fn short_streams_work() {
        assert!(generate(3, 0).is_empty());
        assert_eq!(generate(3, 10).len(), 10);
        assert!(!describe().is_empty());
    }
}
