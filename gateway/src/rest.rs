//! Binance Spot v3 public REST endpoints served from the market-data
//! projection: ping, time, exchangeInfo, depth, trades, aggTrades, klines,
//! uiKlines, ticker/24hr, ticker/price, ticker/bookTicker, avgPrice. Field
//! names, string vs number typing and error codes follow Binance (API.md,
//! rest-api.md). Handlers hold the projection's read lock only while they
//! copy what they answer; the wall clock is read only here, to end the
//! rolling windows (24 h ticker, 5 min average price) at request time.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use engine::decimal::{format_units, format_units_u128};
use engine::{OrderType, Pair, PairStatus};
use serde_json::{json, Value};

use crate::binance::enums::KlineInterval;
use crate::binance::errors::BinanceError;
use crate::binance::params::Params;
use crate::market::{vwap_quote_units, AggTrade, Kline, Market, PairView, AVG_PRICE_MINS};
use crate::server::{error_response, now_ms, ok_response as ok, AppState};

pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v3/ping", get(ping))
        .route("/api/v3/time", get(time))
        .route("/api/v3/exchangeInfo", get(exchange_info))
        .route("/api/v3/depth", get(depth))
        .route("/api/v3/trades", get(trades))
        .route("/api/v3/aggTrades", get(agg_trades))
        .route("/api/v3/klines", get(klines))
        .route("/api/v3/uiKlines", get(klines))
        .route("/api/v3/ticker/24hr", get(ticker_24hr))
        .route("/api/v3/ticker/price", get(ticker_price))
        .route("/api/v3/ticker/bookTicker", get(book_ticker))
        .route("/api/v3/avgPrice", get(avg_price))
}

/// Signed (TRADE / USER_DATA) endpoints: see `trade.rs`.
pub fn signed_routes() -> Router<AppState> {
    crate::trade::routes()
}

async fn ping() -> Response {
    ok(json!({}))
}

async fn time() -> Response {
    ok(json!({ "serverTime": now_ms() }))
}

/// Decimals of a pair's base and quote assets.
pub fn decimals(m: &Market, p: &Pair) -> (u32, u32) {
    let d = |a| {
        m.assets
            .get(&a)
            .map(|x| x.spec.decimals as u32)
            .unwrap_or(8)
    };
    (d(p.spec.base), d(p.spec.quote))
}

/// Price in ticks as a Binance decimal string.
pub fn price_str(m: &Market, p: &Pair, ticks: u64) -> String {
    let (_, qd) = decimals(m, p);
    format_units(ticks.saturating_mul(p.spec.tick_units), qd)
}

pub fn qty_str(m: &Market, p: &Pair, units: u64) -> String {
    let (bd, _) = decimals(m, p);
    format_units(units, bd)
}

pub fn quote_str(m: &Market, p: &Pair, units: u64) -> String {
    let (_, qd) = decimals(m, p);
    format_units(units, qd)
}

fn symbol_json(m: &Market, v: &PairView) -> Value {
    let p = &v.pair;
    let s = &p.spec;
    let (bd, qd) = decimals(m, p);
    let sym = |a| {
        m.assets
            .get(&a)
            .map(|x| x.spec.symbol.clone())
            .unwrap_or_default()
    };
    let order_types: Vec<&str> = OrderType::ALL.iter().map(|t| t.as_str()).collect();
    let max_notional = if s.max_notional_units == 0 {
        format_units(u64::MAX / 10u64.pow(qd.min(19)) * 10u64.pow(qd.min(19)), qd)
    } else {
        quote_str(m, p, s.max_notional_units)
    };
    json!({
        "symbol": s.symbol,
        "status": s.status.as_str(),
        "baseAsset": sym(s.base),
        "baseAssetPrecision": bd,
        "quoteAsset": sym(s.quote),
        "quotePrecision": qd,
        "quoteAssetPrecision": qd,
        "baseCommissionPrecision": bd,
        "quoteCommissionPrecision": qd,
        "orderTypes": order_types,
        "icebergAllowed": false,
        "ocoAllowed": false,
        "otoAllowed": false,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": false,
        "cancelReplaceAllowed": true,
        "amendAllowed": true,
        "isSpotTradingAllowed": s.status == PairStatus::Trading,
        "isMarginTradingAllowed": false,
        "filters": [
            {"filterType": "PRICE_FILTER",
             "minPrice": price_str(m, p, s.min_price_ticks),
             "maxPrice": price_str(m, p, s.max_price_ticks),
             "tickSize": quote_str(m, p, s.tick_units)},
            {"filterType": "LOT_SIZE",
             "minQty": qty_str(m, p, s.min_qty_units),
             "maxQty": qty_str(m, p, s.max_qty_units),
             "stepSize": qty_str(m, p, s.step_units)},
            {"filterType": "MARKET_LOT_SIZE",
             "minQty": qty_str(m, p, s.min_qty_units),
             "maxQty": qty_str(m, p, s.market_max_qty_units),
             "stepSize": qty_str(m, p, s.step_units)},
            {"filterType": "MIN_NOTIONAL",
             "minNotional": quote_str(m, p, s.min_notional_units),
             "applyToMarket": true,
             "avgPriceMins": 5},
            {"filterType": "NOTIONAL",
             "minNotional": quote_str(m, p, s.min_notional_units),
             "applyMinToMarket": true,
             "maxNotional": max_notional,
             "applyMaxToMarket": false,
             "avgPriceMins": 5},
            {"filterType": "PERCENT_PRICE_BY_SIDE",
             "bidMultiplierUp": format!("{:.2}", 1.0 + s.price_band_pct as f64 / 100.0),
             "bidMultiplierDown": format!("{:.2}", (1.0 - s.price_band_pct as f64 / 100.0).max(0.0)),
             "askMultiplierUp": format!("{:.2}", 1.0 + s.price_band_pct as f64 / 100.0),
             "askMultiplierDown": format!("{:.2}", (1.0 - s.price_band_pct as f64 / 100.0).max(0.0)),
             "avgPriceMins": 0},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    })
}

async fn exchange_info(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    answer(|| exchange_info_json(&st, &parse_query(&q)?))
}

pub(crate) fn exchange_info_json(st: &AppState, params: &Params) -> Result<Value, BinanceError> {
    let m = st.market.read().expect("market lock");
    // symbol=X or symbols=["X","Y"] narrow the list (unknown -> -1121).
    let mut wanted: Option<Vec<String>> = None;
    if let Some(s) = params.get("symbol") {
        wanted = Some(vec![s.to_string()]);
    } else if let Some(s) = params.get("symbols") {
        match serde_json::from_str::<Vec<String>>(s) {
            Ok(v) => wanted = Some(v),
            Err(_) => return Err(BinanceError::invalid_parameter("symbols")),
        }
    }
    let symbols: Vec<Value> = match &wanted {
        Some(list) => {
            let mut out = Vec::new();
            for s in list {
                match m.pair_by_symbol(s) {
                    Some(v) => out.push(symbol_json(&m, v)),
                    None => return Err(BinanceError::invalid_symbol()),
                }
            }
            out
        }
        None => m.pairs.values().map(|v| symbol_json(&m, v)).collect(),
    };
    let limits: Vec<Value> = st
        .rate_limits
        .iter()
        .map(|(kind, interval, num, limit)| {
            json!({"rateLimitType": kind, "interval": interval, "intervalNum": num, "limit": limit})
        })
        .collect();
    Ok(json!({
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": limits,
        "exchangeFilters": [],
        "symbols": symbols,
    }))
}

fn pair_param<'a>(m: &'a Market, params: &Params) -> Result<&'a PairView, BinanceError> {
    let s = params.required_str("symbol")?;
    m.pair_by_symbol(s).ok_or_else(BinanceError::invalid_symbol)
}

fn limit_param(params: &Params, default: u64, max: u64) -> Result<usize, BinanceError> {
    let l = params.optional_u64("limit")?.unwrap_or(default);
    if l == 0 {
        return Err(BinanceError::invalid_parameter("limit"));
    }
    Ok(l.min(max) as usize)
}

async fn depth(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    answer(|| depth_json(&st, &parse_query(&q)?))
}

pub(crate) fn depth_json(st: &AppState, params: &Params) -> Result<Value, BinanceError> {
    params.check_unknown(&["symbol", "limit"])?;
    let m = st.market.read().expect("market lock");
    let v = pair_param(&m, params)?;
    let limit = limit_param(params, 100, 5000)?;
    let (bids, asks) = v.book.top(limit);
    let lvl = |(p, q): (u64, u64)| json!([price_str(&m, &v.pair, p), qty_str(&m, &v.pair, q)]);
    Ok(json!({
        "lastUpdateId": v.book.update_id,
        "bids": bids.into_iter().map(lvl).collect::<Vec<_>>(),
        "asks": asks.into_iter().map(lvl).collect::<Vec<_>>(),
    }))
}

async fn trades(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    answer(|| trades_json(&st, &parse_query(&q)?))
}

pub(crate) fn trades_json(st: &AppState, params: &Params) -> Result<Value, BinanceError> {
    params.check_unknown(&["symbol", "limit"])?;
    let m = st.market.read().expect("market lock");
    let v = pair_param(&m, params)?;
    let limit = limit_param(params, 500, 1000)?;
    let skip = v.trades.len().saturating_sub(limit);
    let list: Vec<Value> = v
        .trades
        .iter()
        .skip(skip)
        .map(|t| {
            json!({
                "id": t.id,
                "price": price_str(&m, &v.pair, t.price_ticks),
                "qty": qty_str(&m, &v.pair, t.qty_units),
                "quoteQty": quote_str(&m, &v.pair, t.quote_units),
                "time": t.time_ms,
                "isBuyerMaker": t.buyer_is_maker,
                "isBestMatch": true,
            })
        })
        .collect();
    Ok(Value::Array(list))
}

/// Run a handler body that answers JSON or a Binance error.
fn answer(f: impl FnOnce() -> Result<Value, BinanceError>) -> Response {
    match f() {
        Ok(v) => ok(v),
        Err(e) => error_response(&e),
    }
}

fn parse_query(q: &Option<String>) -> Result<Params, BinanceError> {
    Params::parse(q.as_deref().unwrap_or(""), b"")
}

/// Base-asset amount held in u128 (sums) as a decimal string.
pub(crate) fn qty_str_wide(m: &Market, p: &Pair, units: u128) -> String {
    format_units_u128(units, decimals(m, p).0)
}

pub(crate) fn quote_str_wide(m: &Market, p: &Pair, units: u128) -> String {
    format_units_u128(units, decimals(m, p).1)
}

/// A price difference in ticks (may be negative).
pub(crate) fn signed_price_str(m: &Market, p: &Pair, diff_ticks: i128) -> String {
    let abs = diff_ticks.unsigned_abs() * u128::from(p.spec.tick_units);
    let s = quote_str_wide(m, p, abs);
    if diff_ticks < 0 {
        format!("-{s}")
    } else {
        s
    }
}

/// Binance's `priceChangePercent`: 100 x change / open with 3 decimals,
/// rounded half away from zero; "0.000" without an open price.
pub(crate) fn percent_str(open_ticks: u64, last_ticks: u64) -> String {
    if open_ticks == 0 {
        return "0.000".into();
    }
    let diff = i128::from(last_ticks) - i128::from(open_ticks);
    let open = i128::from(open_ticks);
    let milli = (diff.abs() * 100_000 + open / 2) / open;
    let sign = if diff < 0 && milli != 0 { "-" } else { "" };
    format!("{sign}{}.{:03}", milli / 1000, milli % 1000)
}

// ---- aggTrades ----

fn agg_json(m: &Market, p: &Pair, a: &AggTrade) -> Value {
    json!({
        "a": a.id,
        "p": price_str(m, p, a.price_ticks),
        "q": qty_str(m, p, a.qty_units),
        "f": a.first_trade_id,
        "l": a.last_trade_id,
        "T": a.time_ms,
        "m": a.buyer_is_maker,
        "M": true,
    })
}

async fn agg_trades(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    answer(|| agg_trades_json(&st, &parse_query(&q)?))
}

pub(crate) fn agg_trades_json(st: &AppState, params: &Params) -> Result<Value, BinanceError> {
    params.check_unknown(&["symbol", "fromId", "startTime", "endTime", "limit"])?;
    let m = st.market.read().expect("market lock");
    let v = pair_param(&m, params)?;
    let from_id = params.optional_u64("fromId")?;
    let start = params.optional_u64("startTime")?;
    let end = params.optional_u64("endTime")?;
    let limit = limit_param(params, 500, 1000)?;
    if from_id.is_some() && (start.is_some() || end.is_some()) {
        return Err(BinanceError::optional_params_bad_combo());
    }
    let list = match from_id {
        Some(id) => v.agg_trades_from_id(id, limit),
        None => v.agg_trades_in(start, end, limit),
    };
    Ok(Value::Array(
        list.iter().map(|a| agg_json(&m, &v.pair, a)).collect(),
    ))
}

// ---- klines / uiKlines ----

/// Minutes east of UTC of a Binance `timeZone` value: hours (`8`, `-1`)
/// or hours and minutes (`05:45`, `-1:00`), optionally signed, within
/// [-12:00, +14:00]; -1130 otherwise.
fn parse_time_zone(s: &str) -> Result<i64, BinanceError> {
    let bad = || BinanceError::invalid_parameter("timeZone");
    let digits = |x: &str, max_len: usize| {
        if x.is_empty() || x.len() > max_len || !x.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            x.parse::<i64>().ok()
        }
    };
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let (h, mins) = match rest.split_once(':') {
        Some((h, mm)) if mm.len() == 2 => (digits(h, 2), digits(mm, 2)),
        Some(_) => (None, None),
        None => (digits(rest, 2), Some(0)),
    };
    let (Some(h), Some(mins)) = (h, mins) else {
        return Err(bad());
    };
    if mins >= 60 {
        return Err(bad());
    }
    let total = sign * (h * 60 + mins);
    if !(-12 * 60..=14 * 60).contains(&total) {
        return Err(bad());
    }
    Ok(total)
}

fn kline_json(m: &Market, p: &Pair, interval: KlineInterval, k: &Kline) -> Value {
    json!([
        k.open_time_ms,
        price_str(m, p, k.open_ticks),
        price_str(m, p, k.high_ticks),
        price_str(m, p, k.low_ticks),
        price_str(m, p, k.close_ticks),
        qty_str_wide(m, p, k.volume_units),
        interval.close_time_ms(k.open_time_ms),
        quote_str_wide(m, p, k.quote_units),
        k.trades,
        qty_str_wide(m, p, k.taker_buy_volume_units),
        quote_str_wide(m, p, k.taker_buy_quote_units),
        "0",
    ])
}

/// `/api/v3/klines` and `/api/v3/uiKlines` (same data here). Klines are
/// kept in UTC; a non-zero `timeZone` is served when it shifts no interval
/// boundary (e.g. `8` for 1s..1h), and refused with -1130 otherwise.
async fn klines(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let r = match parse_query(&q) {
        Ok(p) => klines_json(&st, &p).await,
        Err(e) => Err(e),
    };
    match r {
        Ok(v) => ok(v),
        Err(e) => error_response(&e),
    }
}

/// What a klines request asks for and what memory answers.
struct KlinesQuery {
    pair: u64,
    interval: KlineInterval,
    start: Option<u64>,
    end: Option<u64>,
    limit: usize,
    /// (open time, row) from memory, oldest first.
    memory: Vec<(u64, Value)>,
    /// The oldest open time memory keeps, when memory is full (older klines
    /// were dropped) and the request reaches before it: Postgres has those.
    older_than: Option<u64>,
    base_dec: u32,
    quote_dec: u32,
}

fn klines_query(st: &AppState, params: &Params) -> Result<KlinesQuery, BinanceError> {
    params.check_unknown(&[
        "symbol",
        "interval",
        "startTime",
        "endTime",
        "timeZone",
        "limit",
    ])?;
    let symbol = params.required_str("symbol")?;
    let interval = KlineInterval::parse(params.required_str("interval")?)?;
    let start = params.optional_u64("startTime")?;
    let end = params.optional_u64("endTime")?;
    if let Some(tz) = params.optional_str("timeZone")? {
        let offset_ms = parse_time_zone(tz)?.unsigned_abs() * 60_000;
        let aligned = interval
            .fixed_millis()
            .is_some_and(|len| interval != KlineInterval::W1 && offset_ms % len == 0);
        if offset_ms != 0 && !aligned {
            return Err(BinanceError::invalid_parameter("timeZone"));
        }
    }
    let limit = limit_param(params, 500, 1000)?;
    let m = st.market.read().expect("market lock");
    let v = m
        .pair_by_symbol(symbol)
        .ok_or_else(BinanceError::invalid_symbol)?;
    let memory: Vec<(u64, Value)> = v
        .klines(interval, start, end, limit)
        .iter()
        .map(|k| (k.open_time_ms, kline_json(&m, &v.pair, interval, k)))
        .collect();
    let oldest = v
        .kline_series(interval)
        .front()
        .map(|k| k.open_time_ms)
        .filter(|_| v.klines_full(interval));
    // From startTime: Postgres has the ones before memory's oldest.
    // Without: memory's newest `limit` fall short, older ones may exist.
    let older_than = oldest.filter(|&o| match start {
        Some(s) => s < o,
        None => memory.len() < limit,
    });
    let (base_dec, quote_dec) = decimals(&m, &v.pair);
    Ok(KlinesQuery {
        pair: u64::from(v.pair.id.0),
        interval,
        start,
        end,
        limit,
        memory,
        older_than,
        base_dec,
        quote_dec,
    })
}

/// A Postgres kline as the REST row.
fn pg_kline_row(interval: KlineInterval, k: crate::history::PgKline) -> (u64, Value) {
    let close = interval.close_time_ms(k.open_ms);
    let row = json!([
        k.open_ms,
        k.open,
        k.high,
        k.low,
        k.close,
        k.volume,
        close,
        k.quote_volume,
        k.trades,
        k.taker_buy_volume,
        k.taker_buy_quote_volume,
        "0"
    ]);
    (k.open_ms, row)
}

/// Postgres's klines older than `older_than` followed by memory's (memory
/// wins on a shared open time), cut like Binance: the first `limit` when
/// the request gave startTime, else the last `limit`.
fn merge_klines(
    old: Vec<(u64, Value)>,
    mut memory: Vec<(u64, Value)>,
    older_than: u64,
    from_start: bool,
    limit: usize,
) -> Vec<(u64, Value)> {
    let mut all: Vec<(u64, Value)> = old.into_iter().filter(|(t, _)| *t < older_than).collect();
    all.sort_by_key(|(t, _)| *t);
    all.dedup_by_key(|(t, _)| *t);
    all.append(&mut memory);
    if from_start {
        all.truncate(limit);
    } else if all.len() > limit {
        all.drain(..all.len() - limit);
    }
    all
}

/// Klines from memory and, for the part memory no longer keeps, from
/// Postgres when it is configured (REST klines/uiKlines, WebSocket
/// `klines`). A Postgres failure answers from memory alone and is logged.
pub(crate) async fn klines_json(st: &AppState, params: &Params) -> Result<Value, BinanceError> {
    let q = klines_query(st, params)?;
    let mut rows = q.memory;
    if let (Some(older_than), Some(h)) = (q.older_than, &st.history) {
        let want = crate::history::KlinePage {
            pair: q.pair,
            interval: q.interval.as_str(),
            start_ms: q.start,
            // Strictly before what memory holds.
            end_ms: Some(q.end.map_or(older_than.saturating_sub(1), |e| {
                e.min(older_than.saturating_sub(1))
            })),
            ascending: q.start.is_some(),
            limit: q.limit,
            base_dec: q.base_dec,
            quote_dec: q.quote_dec,
        };
        match h.klines(&want).await {
            Ok(old) => {
                let old = old
                    .into_iter()
                    .map(|k| pg_kline_row(q.interval, k))
                    .collect();
                rows = merge_klines(old, rows, older_than, q.start.is_some(), q.limit);
            }
            Err(e) => {
                tracing::warn!(error = %e, "klines: Postgres history unavailable, answering from memory")
            }
        }
    }
    Ok(Value::Array(rows.into_iter().map(|(_, v)| v).collect()))
}

// ---- tickers ----

/// Which symbols a ticker request names.
enum Selection {
    One(String),
    Many(Vec<String>),
    All,
}

/// Binance's legal range for `symbols`.
const SYMBOLS_RANGE: &str = r#"^\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\]$"#;

fn selection(params: &Params) -> Result<Selection, BinanceError> {
    match (
        params.optional_str("symbol")?,
        params.optional_str("symbols")?,
    ) {
        (Some(_), Some(_)) => Err(BinanceError::new(
            -1128,
            "Combination of optional parameters invalid. Recommendation: 'symbol' and 'symbols' cannot both be sent.",
            400,
        )),
        (Some(s), None) => Ok(Selection::One(s.to_string())),
        (None, Some(list)) => {
            let v: Vec<String> = serde_json::from_str(list)
                .map_err(|_| BinanceError::illegal_chars_in("symbols", SYMBOLS_RANGE))?;
            if v.is_empty() {
                return Err(BinanceError::mandatory_param_missing("symbols"));
            }
            Ok(Selection::Many(v))
        }
        (None, None) => Ok(Selection::All),
    }
}

/// The pairs a ticker request asks for (-1121 for an unknown symbol),
/// filtered by `symbolStatus` (-1122 for a bad value, -1220 when the one
/// requested symbol does not match). `Ok((pairs, true))` for a single
/// symbol, answered as an object rather than an array.
fn ticker_pairs<'a>(
    m: &'a Market,
    params: &Params,
) -> Result<(Vec<&'a PairView>, bool), BinanceError> {
    let sel = selection(params)?;
    let status = match params.optional_str("symbolStatus")? {
        None => None,
        Some(s @ ("TRADING" | "HALT" | "BREAK")) => Some(s),
        Some(_) => return Err(BinanceError::invalid_symbol_status()),
    };
    let matches = |v: &PairView| status.is_none_or(|s| v.pair.spec.status.as_str() == s);
    match sel {
        Selection::One(s) => {
            let v = m
                .pair_by_symbol(&s)
                .ok_or_else(BinanceError::invalid_symbol)?;
            if !matches(v) {
                return Err(BinanceError::new(
                    -1220,
                    "The symbol's status does not match the requested symbolStatus.",
                    400,
                ));
            }
            Ok((vec![v], true))
        }
        Selection::Many(list) => {
            let mut out = Vec::with_capacity(list.len());
            for s in &list {
                let v = m
                    .pair_by_symbol(s)
                    .ok_or_else(BinanceError::invalid_symbol)?;
                if matches(v) {
                    out.push(v);
                }
            }
            Ok((out, false))
        }
        Selection::All => Ok((m.pairs.values().filter(|v| matches(v)).collect(), false)),
    }
}

fn one_or_many(list: Vec<Value>, single: bool) -> Value {
    if single {
        list.into_iter().next().unwrap_or(Value::Null)
    } else {
        Value::Array(list)
    }
}

fn ticker_24h_json(m: &Market, v: &PairView, now: u64, full: bool) -> Value {
    let p = &v.pair;
    let t = v.ticker_24h(now);
    let id = |x: Option<u64>| x.map_or(json!(-1), |i| json!(i));
    let symbol = p.spec.symbol.as_str();
    if !full {
        return json!({
            "symbol": symbol,
            "openPrice": price_str(m, p, t.open_ticks),
            "highPrice": price_str(m, p, t.high_ticks),
            "lowPrice": price_str(m, p, t.low_ticks),
            "lastPrice": price_str(m, p, t.last_ticks),
            "volume": qty_str_wide(m, p, t.volume_units),
            "quoteVolume": quote_str_wide(m, p, t.quote_units),
            "openTime": t.open_time_ms,
            "closeTime": t.close_time_ms,
            "firstId": id(t.first_id),
            "lastId": id(t.last_id),
            "count": t.count,
        });
    }
    let (bid, ask) = (v.book.best_bid(), v.book.best_ask());
    let change = i128::from(t.last_ticks) - i128::from(t.open_ticks);
    json!({
        "symbol": symbol,
        "priceChange": signed_price_str(m, p, change),
        "priceChangePercent": percent_str(t.open_ticks, t.last_ticks),
        "weightedAvgPrice": quote_str(m, p, vwap_quote_units(t.quote_units, t.volume_units, p.base_scale)),
        "prevClosePrice": price_str(m, p, t.prev_close_ticks),
        "lastPrice": price_str(m, p, t.last_ticks),
        "lastQty": qty_str(m, p, t.last_qty_units),
        "bidPrice": price_str(m, p, bid.map_or(0, |b| b.0)),
        "bidQty": qty_str(m, p, bid.map_or(0, |b| b.1)),
        "askPrice": price_str(m, p, ask.map_or(0, |a| a.0)),
        "askQty": qty_str(m, p, ask.map_or(0, |a| a.1)),
        "openPrice": price_str(m, p, t.open_ticks),
        "highPrice": price_str(m, p, t.high_ticks),
        "lowPrice": price_str(m, p, t.low_ticks),
        "volume": qty_str_wide(m, p, t.volume_units),
        "quoteVolume": quote_str_wide(m, p, t.quote_units),
        "openTime": t.open_time_ms,
        "closeTime": t.close_time_ms,
        "firstId": id(t.first_id),
        "lastId": id(t.last_id),
        "count": t.count,
    })
}

async fn ticker_24hr(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    answer(|| ticker_24hr_json(&st, &parse_query(&q)?))
}

pub(crate) fn ticker_24hr_json(st: &AppState, params: &Params) -> Result<Value, BinanceError> {
    params.check_unknown(&["symbol", "symbols", "type", "symbolStatus"])?;
    let full = match params.optional_str("type")? {
        None | Some("FULL") => true,
        Some("MINI") => false,
        Some(_) => return Err(BinanceError::new(-1139, "Invalid ticker type.", 400)),
    };
    let now = now_ms();
    let m = st.market.read().expect("market lock");
    let (pairs, single) = ticker_pairs(&m, params)?;
    let list = pairs
        .iter()
        .map(|v| ticker_24h_json(&m, v, now, full))
        .collect();
    Ok(one_or_many(list, single))
}

async fn ticker_price(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    answer(|| ticker_price_json(&st, &parse_query(&q)?))
}

pub(crate) fn ticker_price_json(st: &AppState, params: &Params) -> Result<Value, BinanceError> {
    params.check_unknown(&["symbol", "symbols", "symbolStatus"])?;
    let m = st.market.read().expect("market lock");
    let (pairs, single) = ticker_pairs(&m, params)?;
    let list = pairs
        .iter()
        .map(|v| {
            json!({
                "symbol": v.pair.spec.symbol,
                "price": price_str(&m, &v.pair, v.last_price),
            })
        })
        .collect();
    Ok(one_or_many(list, single))
}

async fn book_ticker(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    answer(|| book_ticker_json(&st, &parse_query(&q)?))
}

pub(crate) fn book_ticker_json(st: &AppState, params: &Params) -> Result<Value, BinanceError> {
    params.check_unknown(&["symbol", "symbols", "symbolStatus"])?;
    let m = st.market.read().expect("market lock");
    let (pairs, single) = ticker_pairs(&m, params)?;
    let list = pairs
        .iter()
        .map(|v| {
            let p = &v.pair;
            let (bid, ask) = (v.book.best_bid(), v.book.best_ask());
            json!({
                "symbol": p.spec.symbol,
                "bidPrice": price_str(&m, p, bid.map_or(0, |b| b.0)),
                "bidQty": qty_str(&m, p, bid.map_or(0, |b| b.1)),
                "askPrice": price_str(&m, p, ask.map_or(0, |a| a.0)),
                "askQty": qty_str(&m, p, ask.map_or(0, |a| a.1)),
            })
        })
        .collect();
    Ok(one_or_many(list, single))
}

async fn avg_price(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    answer(|| avg_price_json(&st, &parse_query(&q)?))
}

pub(crate) fn avg_price_json(st: &AppState, params: &Params) -> Result<Value, BinanceError> {
    params.check_unknown(&["symbol"])?;
    let now = now_ms();
    let m = st.market.read().expect("market lock");
    let v = pair_param(&m, params)?;
    let (price_units, close_time) = v.avg_price(now);
    Ok(json!({
        "mins": AVG_PRICE_MINS,
        "price": quote_str(&m, &v.pair, price_units),
        "closeTime": close_time,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(times: &[u64]) -> Vec<(u64, Value)> {
        times.iter().map(|&t| (t, json!([t]))).collect()
    }

    fn times(v: &[(u64, Value)]) -> Vec<u64> {
        v.iter().map(|(t, _)| *t).collect()
    }

    #[test]
    fn klines_from_postgres_come_before_memory_and_are_cut_like_binance() {
        // Memory keeps 10..=14; Postgres has 1..=12 (overlap: memory wins).
        let memory = rows(&[10, 11, 12, 13, 14]);
        let old = rows(&[12, 11, 1, 2, 3, 10, 4]);
        let all = merge_klines(old.clone(), memory.clone(), 10, true, 100);
        assert_eq!(times(&all), [1, 2, 3, 4, 10, 11, 12, 13, 14]);
        // From startTime: the first `limit`.
        let first = merge_klines(old.clone(), memory.clone(), 10, true, 3);
        assert_eq!(times(&first), [1, 2, 3]);
        // Without: the last `limit`.
        let last = merge_klines(old.clone(), memory.clone(), 10, false, 7);
        assert_eq!(times(&last), [3, 4, 10, 11, 12, 13, 14]);
        // Nothing in memory (the window ends before it).
        let only_old = merge_klines(old, Vec::new(), 10, false, 2);
        assert_eq!(times(&only_old), [3, 4]);
        // Duplicates from Postgres collapse.
        let dup = merge_klines(rows(&[2, 2, 1]), rows(&[5]), 5, true, 10);
        assert_eq!(times(&dup), [1, 2, 5]);
    }
}
