//! Klines (candles for the 16 Binance intervals) and the rolling 24 h
//! ticker, derived from the trades the writer persists.
//!
//! Everything is a function of the journal alone: a trade falls in the
//! candles of its record's journaled timestamp (never the wall clock);
//! within a candle, "open" and "close" are the prices of its lowest and
//! highest trade id (trade ids grow with the sequence, so they are the
//! first and last trade written), and `updated_at` is the time of the
//! highest-id trade.
//!
//! Exactly once: a [`Klines`] collects a batch's trades in one-second
//! buckets and rolls them up into candles at write time. The upsert
//! merges a candle with the row already stored (high/low by comparison,
//! volumes and counts added, close replaced, open kept), in the same
//! transaction that moves the checkpoint. Every trade of the stored row has
//! a lower id than every trade of the batch (the checkpoint guarantees each
//! trade is in exactly one committed batch, in sequence order), so the
//! merge equals a candle computed from all its trades at once, whatever the
//! batch boundaries were — a restart after a crash gives the rows of a
//! clean run.
//!
//! Intervals: `1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d` are fixed
//! lengths aligned to the Unix epoch (UTC), `1w` opens on Mondays 00:00
//! UTC, `1M` on the first of the month 00:00 UTC. `close_time` is the next
//! open time minus 1 ms, as Binance reports it. A candle exists only if it
//! had a trade.
//!
//! Row ids: `open_time_secs << 28 | (pair & 0xFF_FFFF) << 4 | interval
//! index`, unique per (pair, interval, open_time) for pairs below 2^24 and
//! the same in every rebuild.
//!
//! ticker_24hr: one row per pair, rewritten by every batch with trades of
//! that pair, "as of" `T` = the journal time of the pair's last trade
//! (highest id) in the batch. The window is the gateway's
//! `/api/v3/ticker/24hr` window ending at `T`: `open_time` = `T - 24 h`,
//! and the figures fold the pair's `1m` candles whose open time is in
//! `[floor_to_minute(T - 24 h), T]` (minute resolution: the minute holding
//! the window's start counts whole; the whole hours in between are read
//! from the equal 1h candles). open = the first of those candles'
//! open, close = the last one's close (the last trade), high/low/volume/
//! quote volume/count over them; `price_change` = close - open,
//! `price_change_percent` = 100 x change / open rounded to 3 decimals;
//! `first_trade_id` is the earliest trade (journal time, then id) of the
//! window and `last_trade_id` the pair's last trade; `close_time` =
//! `updated_at` = `T`. All of it is read in the writing transaction, after
//! the batch's trades and candles, so it too is a function of the journal
//! up to the checkpoint.

use std::collections::BTreeMap;
use std::time::SystemTime;

use engine::Trade;

use crate::rows::{dec, ts};
use crate::sql::{bx, Pipeline};

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
/// 1970-01-01 was a Thursday; the first Monday is 4 days later.
const FIRST_MONDAY_MS: u64 = 4 * DAY_MS;
/// Length of the ticker window.
pub const TICKER_WINDOW_MS: u64 = DAY_MS;

/// The intervals of the `klines_interval_check` constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interval {
    S1,
    M1,
    M3,
    M5,
    M15,
    M30,
    H1,
    H2,
    H4,
    H6,
    H8,
    H12,
    D1,
    D3,
    W1,
    Mo1,
}

impl Interval {
    pub const ALL: [Interval; 16] = [
        Interval::S1,
        Interval::M1,
        Interval::M3,
        Interval::M5,
        Interval::M15,
        Interval::M30,
        Interval::H1,
        Interval::H2,
        Interval::H4,
        Interval::H6,
        Interval::H8,
        Interval::H12,
        Interval::D1,
        Interval::D3,
        Interval::W1,
        Interval::Mo1,
    ];

    /// The `interval` column value.
    pub fn name(self) -> &'static str {
        match self {
            Interval::S1 => "1s",
            Interval::M1 => "1m",
            Interval::M3 => "3m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::M30 => "30m",
            Interval::H1 => "1h",
            Interval::H2 => "2h",
            Interval::H4 => "4h",
            Interval::H6 => "6h",
            Interval::H8 => "8h",
            Interval::H12 => "12h",
            Interval::D1 => "1d",
            Interval::D3 => "3d",
            Interval::W1 => "1w",
            Interval::Mo1 => "1M",
        }
    }

    /// Position in [`Interval::ALL`] (part of the row id).
    pub fn index(self) -> u8 {
        self as u8
    }

    /// Length in ms; `None` for `1M` (a calendar month).
    pub fn fixed_ms(self) -> Option<u64> {
        Some(match self {
            Interval::S1 => SECOND_MS,
            Interval::M1 => MINUTE_MS,
            Interval::M3 => 3 * MINUTE_MS,
            Interval::M5 => 5 * MINUTE_MS,
            Interval::M15 => 15 * MINUTE_MS,
            Interval::M30 => 30 * MINUTE_MS,
            Interval::H1 => HOUR_MS,
            Interval::H2 => 2 * HOUR_MS,
            Interval::H4 => 4 * HOUR_MS,
            Interval::H6 => 6 * HOUR_MS,
            Interval::H8 => 8 * HOUR_MS,
            Interval::H12 => 12 * HOUR_MS,
            Interval::D1 => DAY_MS,
            Interval::D3 => 3 * DAY_MS,
            Interval::W1 => 7 * DAY_MS,
            Interval::Mo1 => return None,
        })
    }

    /// Open time (UTC ms) of the candle holding `ts_ms`. Times before the
    /// first Monday after the epoch map to 0 for `1w`.
    pub fn open_time_ms(self, ts_ms: u64) -> u64 {
        match self {
            Interval::W1 if ts_ms < FIRST_MONDAY_MS => 0,
            Interval::W1 => ts_ms - (ts_ms - FIRST_MONDAY_MS) % (7 * DAY_MS),
            Interval::Mo1 => {
                let (y, m, _) = civil_from_days((ts_ms / DAY_MS) as i64);
                days_to_ms(days_from_civil(y, m, 1))
            }
            fixed => {
                let len = fixed.fixed_ms().unwrap_or(SECOND_MS);
                ts_ms - ts_ms % len
            }
        }
    }

    /// Open time of the candle after the one holding `ts_ms`.
    pub fn next_open_time_ms(self, ts_ms: u64) -> u64 {
        match self {
            Interval::W1 if ts_ms < FIRST_MONDAY_MS => FIRST_MONDAY_MS,
            Interval::Mo1 => {
                let (y, m, _) = civil_from_days((ts_ms / DAY_MS) as i64);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_to_ms(days_from_civil(ny, nm, 1))
            }
            fixed => {
                let len = fixed.fixed_ms().unwrap_or(SECOND_MS);
                fixed.open_time_ms(ts_ms).saturating_add(len)
            }
        }
    }
}

/// The earliest candle open time any trade at `ts_ms` lands in (the month
/// partitions of `klines` must cover it: a `1w` or `3d` candle can open in
/// the month before its trades).
pub fn earliest_open_time_ms(ts_ms: u64) -> u64 {
    Interval::ALL
        .iter()
        .map(|i| i.open_time_ms(ts_ms))
        .min()
        .unwrap_or(ts_ms)
}

fn days_to_ms(days: i64) -> u64 {
    let ms = i128::from(days) * i128::from(DAY_MS);
    u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The trades of one candle (or of a one-second bucket). Prices are in
/// quote units (ticks x tick size), volumes in base / quote units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candle {
    pub first_id: u64,
    pub last_id: u64,
    pub open: u128,
    pub high: u128,
    pub low: u128,
    pub close: u128,
    pub volume: u128,
    pub quote_volume: u128,
    pub taker_buy_volume: u128,
    pub taker_buy_quote_volume: u128,
    pub trades: u64,
    /// Journal time of the `last_id` trade.
    pub last_ms: u64,
}

impl Candle {
    fn of(id: u64, price: u128, qty: u64, quote: u64, taker_buy: bool, ts_ms: u64) -> Candle {
        let (bv, bq) = if taker_buy {
            (u128::from(qty), u128::from(quote))
        } else {
            (0, 0)
        };
        Candle {
            first_id: id,
            last_id: id,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: u128::from(qty),
            quote_volume: u128::from(quote),
            taker_buy_volume: bv,
            taker_buy_quote_volume: bq,
            trades: 1,
            last_ms: ts_ms,
        }
    }

    /// Fold `o` in; open/close follow the trade ids, so the order of
    /// merging does not matter.
    fn merge(&mut self, o: &Candle) {
        if o.first_id < self.first_id {
            self.first_id = o.first_id;
            self.open = o.open;
        }
        if o.last_id > self.last_id {
            self.last_id = o.last_id;
            self.close = o.close;
            self.last_ms = o.last_ms;
        }
        self.high = self.high.max(o.high);
        self.low = self.low.min(o.low);
        self.volume += o.volume;
        self.quote_volume += o.quote_volume;
        self.taker_buy_volume += o.taker_buy_volume;
        self.taker_buy_quote_volume += o.taker_buy_quote_volume;
        self.trades += o.trades;
    }
}

/// Decimals of a pair's assets, as the trade rows were formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairDecimals {
    pub base: u8,
    pub quote: u8,
}

/// A batch's trades in one-second buckets per pair.
#[derive(Debug, Default)]
pub struct Klines {
    /// (pair, open second) -> bucket.
    seconds: BTreeMap<(u32, u64), Candle>,
    decimals: BTreeMap<u32, PairDecimals>,
}

/// One candle ready to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KlineRow {
    pub pair: u32,
    pub interval: Interval,
    pub open_ms: u64,
    pub candle: Candle,
}

impl KlineRow {
    /// The deterministic row id (see the module docs).
    pub fn id(&self) -> i64 {
        let secs = self.open_ms / SECOND_MS;
        ((secs << 28) | (u64::from(self.pair & 0xFF_FFFF) << 4) | u64::from(self.interval.index()))
            as i64
    }
}

impl Klines {
    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }

    /// Add one trade at journal time `ts_ms`; `price_units` is its price in
    /// quote units.
    pub fn add(&mut self, t: &Trade, ts_ms: u64, price_units: u128, decimals: PairDecimals) {
        let c = Candle::of(
            t.id.0,
            price_units,
            t.qty.0,
            t.quote_qty,
            t.taker_side == engine::Side::Buy,
            ts_ms,
        );
        self.decimals.entry(t.pair.0).or_insert(decimals);
        self.seconds
            .entry((t.pair.0, ts_ms / SECOND_MS))
            .and_modify(|b| b.merge(&c))
            .or_insert(c);
    }

    /// Every candle the batch touches, for all 16 intervals, ordered by
    /// (pair, interval, open time).
    pub fn rows(&self) -> Vec<KlineRow> {
        let mut out: BTreeMap<(u32, Interval, u64), Candle> = BTreeMap::new();
        for (&(pair, sec), b) in &self.seconds {
            let ms = sec * SECOND_MS;
            for i in Interval::ALL {
                out.entry((pair, i, i.open_time_ms(ms)))
                    .and_modify(|c| c.merge(b))
                    .or_insert(*b);
            }
        }
        out.into_iter()
            .map(|((pair, interval, open_ms), candle)| KlineRow {
                pair,
                interval,
                open_ms,
                candle,
            })
            .collect()
    }

    /// Per pair with trades: (pair, journal time of its last trade, that
    /// trade's id).
    pub fn last_trades(&self) -> Vec<(u32, u64, u64)> {
        let mut last: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for (&(pair, _), b) in &self.seconds {
            let e = last.entry(pair).or_insert((b.last_id, b.last_ms));
            if b.last_id > e.0 {
                *e = (b.last_id, b.last_ms);
            }
        }
        last.into_iter()
            .map(|(pair, (id, ms))| (pair, ms, id))
            .collect()
    }

    /// Rows [`Klines::push_into`] writes (candles plus tickers).
    pub fn row_count(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        self.rows().len() + self.decimals.len()
    }

    /// Upsert the candles, then the tickers of the pairs that traded, as
    /// the next statements of the batch's pipeline (after its trades).
    pub fn push_into(&self, p: &mut Pipeline<'_>) {
        if self.is_empty() {
            return;
        }
        let rows = self.rows();
        let mut c = KlineCols::with_capacity(rows.len());
        for r in &rows {
            let d = self
                .decimals
                .get(&r.pair)
                .copied()
                .unwrap_or(PairDecimals { base: 8, quote: 8 });
            let k = &r.candle;
            c.id.push(r.id());
            c.pair.push(i64::from(r.pair));
            c.interval.push(r.interval.name());
            c.open_time.push(ts(r.open_ms));
            c.close_time.push(ts(r
                .interval
                .next_open_time_ms(r.open_ms)
                .saturating_sub(1)));
            c.open.push(dec(k.open, d.quote));
            c.high.push(dec(k.high, d.quote));
            c.low.push(dec(k.low, d.quote));
            c.close.push(dec(k.close, d.quote));
            c.volume.push(dec(k.volume, d.base));
            c.quote_volume.push(dec(k.quote_volume, d.quote));
            c.trades.push(k.trades as i64);
            c.taker_buy_volume.push(dec(k.taker_buy_volume, d.base));
            c.taker_buy_quote_volume
                .push(dec(k.taker_buy_quote_volume, d.quote));
            c.updated.push(ts(k.last_ms));
        }
        p.push(
            KLINES,
            vec![
                bx(c.id),
                bx(c.pair),
                bx(c.interval),
                bx(c.open_time),
                bx(c.close_time),
                bx(c.open),
                bx(c.high),
                bx(c.low),
                bx(c.close),
                bx(c.volume),
                bx(c.quote_volume),
                bx(c.trades),
                bx(c.taker_buy_volume),
                bx(c.taker_buy_quote_volume),
                bx(c.updated),
            ],
        );

        let last = self.last_trades();
        let mut pair = Vec::with_capacity(last.len());
        let mut at = Vec::with_capacity(last.len());
        let mut from = Vec::with_capacity(last.len());
        let mut open_time = Vec::with_capacity(last.len());
        let mut last_id = Vec::with_capacity(last.len());
        let mut hours_from = Vec::with_capacity(last.len());
        let mut hours_to = Vec::with_capacity(last.len());
        for (pr, ms, id) in last {
            let start = ms.saturating_sub(TICKER_WINDOW_MS);
            let from_ms = start - start % MINUTE_MS;
            pair.push(i64::from(pr));
            at.push(ts(ms));
            from.push(ts(from_ms));
            open_time.push(ts(start));
            last_id.push(id as i64);
            // Whole hours of the window come from the 1h candles.
            hours_from.push(ts(from_ms.div_ceil(HOUR_MS) * HOUR_MS));
            hours_to.push(ts(ms - ms % HOUR_MS));
        }
        p.push(
            TICKER,
            vec![
                bx(pair),
                bx(at),
                bx(from),
                bx(open_time),
                bx(last_id),
                bx(hours_from),
                bx(hours_to),
            ],
        );
    }
}

struct KlineCols {
    id: Vec<i64>,
    pair: Vec<i64>,
    interval: Vec<&'static str>,
    open_time: Vec<SystemTime>,
    close_time: Vec<SystemTime>,
    open: Vec<String>,
    high: Vec<String>,
    low: Vec<String>,
    close: Vec<String>,
    volume: Vec<String>,
    quote_volume: Vec<String>,
    trades: Vec<i64>,
    taker_buy_volume: Vec<String>,
    taker_buy_quote_volume: Vec<String>,
    updated: Vec<SystemTime>,
}

impl KlineCols {
    fn with_capacity(n: usize) -> KlineCols {
        KlineCols {
            id: Vec::with_capacity(n),
            pair: Vec::with_capacity(n),
            interval: Vec::with_capacity(n),
            open_time: Vec::with_capacity(n),
            close_time: Vec::with_capacity(n),
            open: Vec::with_capacity(n),
            high: Vec::with_capacity(n),
            low: Vec::with_capacity(n),
            close: Vec::with_capacity(n),
            volume: Vec::with_capacity(n),
            quote_volume: Vec::with_capacity(n),
            trades: Vec::with_capacity(n),
            taker_buy_volume: Vec::with_capacity(n),
            taker_buy_quote_volume: Vec::with_capacity(n),
            updated: Vec::with_capacity(n),
        }
    }
}

/// Candle upsert: the stored row holds only earlier trades (see the module
/// docs), so open stays, close and updated_at move, the rest folds.
const KLINES: &str = "INSERT INTO klines AS k (id, trading_pair_id, interval, open_time,
        close_time, open_price, high_price, low_price, close_price, volume, quote_volume,
        trades_count, taker_buy_volume, taker_buy_quote_volume, updated_at)
    SELECT u.id, u.pair, u.iv, u.ot, u.ct, u.o::numeric, u.h::numeric, u.l::numeric,
        u.c::numeric, u.v::numeric, u.qv::numeric, u.n, u.tbv::numeric, u.tbq::numeric, u.at
    FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::timestamptz[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[],
        $13::text[], $14::text[], $15::timestamptz[])
        AS u(id, pair, iv, ot, ct, o, h, l, c, v, qv, n, tbv, tbq, at)
    ON CONFLICT (trading_pair_id, interval, open_time) DO UPDATE SET
        high_price = GREATEST(k.high_price, EXCLUDED.high_price),
        low_price = LEAST(k.low_price, EXCLUDED.low_price),
        close_price = EXCLUDED.close_price,
        volume = k.volume + EXCLUDED.volume,
        quote_volume = k.quote_volume + EXCLUDED.quote_volume,
        trades_count = k.trades_count + EXCLUDED.trades_count,
        taker_buy_volume = k.taker_buy_volume + EXCLUDED.taker_buy_volume,
        taker_buy_quote_volume = k.taker_buy_quote_volume + EXCLUDED.taker_buy_quote_volume,
        updated_at = EXCLUDED.updated_at";

/// The 24 h ticker of each pair that traded in the batch, folded from its
/// candles (see the module docs for the window): the whole hours inside the
/// window from the 1h candles, the minutes at either end from the 1m ones,
/// so at most about 143 rows are read instead of 1,441.
const TICKER: &str = "INSERT INTO ticker_24hr AS t (trading_pair_id, open_price, high_price,
        low_price, close_price, volume, quote_volume, price_change, price_change_percent,
        trades_count, first_trade_id, last_trade_id, open_time, close_time, updated_at)
    SELECT u.pair, k.o, k.h, k.l, k.c, k.v, k.qv, k.c - k.o, round((k.c - k.o) * 100 / k.o, 3),
        k.n, f.id, u.last_id, u.open_time, u.at, u.at
    FROM UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[],
        $5::bigint[], $6::timestamptz[], $7::timestamptz[])
        AS u(pair, at, from_, open_time, last_id, h0, h1)
    CROSS JOIN LATERAL (
        SELECT (array_agg(w.open_price ORDER BY w.open_time))[1] AS o,
            max(w.high_price) AS h, min(w.low_price) AS l,
            (array_agg(w.close_price ORDER BY w.open_time DESC))[1] AS c,
            sum(w.volume) AS v, sum(w.quote_volume) AS qv, sum(w.trades_count) AS n
        FROM (
            SELECT open_time, open_price, high_price, low_price, close_price, volume,
                quote_volume, trades_count
            FROM klines WHERE trading_pair_id = u.pair AND interval = '1m'
                AND open_time >= u.from_ AND open_time < u.h0
            UNION ALL
            SELECT open_time, open_price, high_price, low_price, close_price, volume,
                quote_volume, trades_count
            FROM klines WHERE trading_pair_id = u.pair AND interval = '1h'
                AND open_time >= u.h0 AND open_time < u.h1
            UNION ALL
            SELECT open_time, open_price, high_price, low_price, close_price, volume,
                quote_volume, trades_count
            FROM klines WHERE trading_pair_id = u.pair AND interval = '1m'
                AND open_time >= u.h1 AND open_time <= u.at) w) k
    LEFT JOIN LATERAL (
        SELECT id FROM trades
        WHERE trading_pair_id = u.pair AND created_at >= u.from_ AND created_at <= u.at
        ORDER BY created_at, id LIMIT 1) f ON true
    ON CONFLICT (trading_pair_id) DO UPDATE SET open_price = EXCLUDED.open_price,
        high_price = EXCLUDED.high_price, low_price = EXCLUDED.low_price,
        close_price = EXCLUDED.close_price, volume = EXCLUDED.volume,
        quote_volume = EXCLUDED.quote_volume, price_change = EXCLUDED.price_change,
        price_change_percent = EXCLUDED.price_change_percent,
        trades_count = EXCLUDED.trades_count, first_trade_id = EXCLUDED.first_trade_id,
        last_trade_id = EXCLUDED.last_trade_id, open_time = EXCLUDED.open_time,
        close_time = EXCLUDED.close_time, updated_at = EXCLUDED.updated_at";

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-02-29T13:47:12.345Z (a Thursday, leap day).
    const TS: u64 = 1_709_214_432_345;

    #[test]
    fn open_times_of_every_interval() {
        let m = |i: Interval| i.open_time_ms(TS);
        assert_eq!(m(Interval::S1), 1_709_214_432_000);
        assert_eq!(m(Interval::M1), 1_709_214_420_000); // 13:47
        assert_eq!(m(Interval::M15), 1_709_214_300_000); // 13:45
        assert_eq!(m(Interval::H4), 1_709_208_000_000); // 12:00
        assert_eq!(m(Interval::D1), 1_709_164_800_000); // 02-29
        assert_eq!(m(Interval::W1), 1_708_905_600_000); // Mon 02-26
        assert_eq!(m(Interval::Mo1), 1_706_745_600_000); // 02-01
        assert_eq!(Interval::Mo1.next_open_time_ms(TS), 1_709_251_200_000); // 03-01
        assert_eq!(
            Interval::Mo1.next_open_time_ms(1_703_980_800_000), // 2023-12-31
            1_704_067_200_000                                   // 2024-01-01
        );
        for i in Interval::ALL {
            let o = i.open_time_ms(TS);
            let n = i.next_open_time_ms(TS);
            assert!(o <= TS && TS < n, "{}", i.name());
            assert_eq!(i.open_time_ms(o), o, "{}", i.name());
            assert_eq!(i.open_time_ms(n), n, "{}", i.name());
            if let Some(len) = i.fixed_ms() {
                assert_eq!(n - o, len, "{}", i.name());
            }
        }
        // 3d candles are epoch-aligned and can open in the previous month.
        assert!(earliest_open_time_ms(1_709_251_200_000) < 1_709_251_200_000);
    }

    fn trade(id: u64, price: u64, qty: u64, buy: bool) -> Trade {
        Trade {
            id: engine::TradeId(id),
            pair: engine::PairId(1),
            price: engine::Price(price),
            qty: engine::Qty(qty),
            quote_qty: price * qty,
            maker_order: engine::OrderId(1),
            taker_order: engine::OrderId(2),
            maker_user: engine::UserId(1),
            taker_user: engine::UserId(2),
            taker_side: if buy {
                engine::Side::Buy
            } else {
                engine::Side::Sell
            },
            maker_fee: 0,
            taker_fee: 0,
            maker_filled: engine::Qty(qty),
            taker_filled: engine::Qty(qty),
        }
    }

    #[test]
    fn rollup_follows_trade_ids_and_splits_batches_exactly() {
        let d = PairDecimals { base: 8, quote: 8 };
        let trades: Vec<(Trade, u64)> = (1..=50u64)
            .map(|i| {
                (
                    trade(i, 100 + (i * 37) % 23, 1 + i % 4, i % 3 == 0),
                    TS + i * 700,
                )
            })
            .collect();
        let mut all = Klines::default();
        for (t, at) in &trades {
            all.add(t, *at, u128::from(t.price.0), d);
        }
        let whole = all.rows();
        let m1: Vec<&KlineRow> = whole
            .iter()
            .filter(|r| r.interval == Interval::M1)
            .collect();
        let total: u64 = m1.iter().map(|r| r.candle.trades).sum();
        assert_eq!(total, 50);
        let mo = whole
            .iter()
            .find(|r| r.interval == Interval::Mo1)
            .expect("month candle");
        assert_eq!(mo.candle.open, 100 + 37 % 23);
        assert_eq!(mo.candle.close, 100 + (50 * 37) % 23);
        assert_eq!(mo.candle.last_ms, TS + 50 * 700);
        // Two batches merged as the SQL upsert merges them.
        let mut a = Klines::default();
        let mut b = Klines::default();
        for (t, at) in &trades {
            let k = if t.id.0 <= 17 { &mut a } else { &mut b };
            k.add(t, *at, u128::from(t.price.0), d);
        }
        let mut merged: BTreeMap<(u32, Interval, u64), Candle> = BTreeMap::new();
        for r in a.rows().into_iter().chain(b.rows()) {
            merged
                .entry((r.pair, r.interval, r.open_ms))
                .and_modify(|c| {
                    // The upsert: open kept, close/updated_at replaced.
                    let stored = *c;
                    c.merge(&r.candle);
                    assert_eq!(c.open, stored.open);
                })
                .or_insert(r.candle);
        }
        let again: Vec<KlineRow> = merged
            .into_iter()
            .map(|((pair, interval, open_ms), candle)| KlineRow {
                pair,
                interval,
                open_ms,
                candle,
            })
            .collect();
        assert_eq!(again, whole);
        let ids: std::collections::BTreeSet<i64> = whole.iter().map(KlineRow::id).collect();
        assert_eq!(ids.len(), whole.len());
    }
}
