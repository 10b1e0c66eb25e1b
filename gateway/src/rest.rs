//! Binance Spot v3 public REST endpoints served from the market-data
//! projection: ping, time, exchangeInfo, depth, trades. Field names, string
//! vs number typing and error codes follow Binance (API.md).

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use engine::decimal::format_units;
use engine::{OrderType, Pair, PairStatus};
use serde_json::{json, Value};

use crate::binance::errors::BinanceError;
use crate::binance::params::Params;
use crate::market::{Market, PairView};
use crate::server::{error_response, json_response, now_ms, AppState};

pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v3/ping", get(ping))
        .route("/api/v3/time", get(time))
        .route("/api/v3/exchangeInfo", get(exchange_info))
        .route("/api/v3/depth", get(depth))
        .route("/api/v3/trades", get(trades))
}

/// Signed (TRADE / USER_DATA) endpoints: see `trade.rs`.
pub fn signed_routes() -> Router<AppState> {
    crate::trade::routes()
}

fn ok(v: Value) -> Response {
    json_response(StatusCode::OK, v.to_string())
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
    let params = match Params::parse(q.as_deref().unwrap_or(""), b"") {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let m = st.market.read().expect("market lock");
    // symbol=X or symbols=["X","Y"] narrow the list (unknown -> -1121).
    let mut wanted: Option<Vec<String>> = None;
    if let Some(s) = params.get("symbol") {
        wanted = Some(vec![s.to_string()]);
    } else if let Some(s) = params.get("symbols") {
        match serde_json::from_str::<Vec<String>>(s) {
            Ok(v) => wanted = Some(v),
            Err(_) => return error_response(&BinanceError::invalid_parameter("symbols")),
        }
    }
    let symbols: Vec<Value> = match &wanted {
        Some(list) => {
            let mut out = Vec::new();
            for s in list {
                match m.pair_by_symbol(s) {
                    Some(v) => out.push(symbol_json(&m, v)),
                    None => return error_response(&BinanceError::invalid_symbol()),
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
    ok(json!({
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
    let res = (|| {
        let params = Params::parse(q.as_deref().unwrap_or(""), b"")?;
        params.check_unknown(&["symbol", "limit"])?;
        let m = st.market.read().expect("market lock");
        let v = pair_param(&m, &params)?;
        let limit = limit_param(&params, 100, 5000)?;
        let (bids, asks) = v.book.top(limit);
        let lvl = |(p, q): (u64, u64)| json!([price_str(&m, &v.pair, p), qty_str(&m, &v.pair, q)]);
        Ok::<Value, BinanceError>(json!({
            "lastUpdateId": v.book.update_id,
            "bids": bids.into_iter().map(lvl).collect::<Vec<_>>(),
            "asks": asks.into_iter().map(lvl).collect::<Vec<_>>(),
        }))
    })();
    match res {
        Ok(v) => ok(v),
        Err(e) => error_response(&e),
    }
}

async fn trades(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let res = (|| {
        let params = Params::parse(q.as_deref().unwrap_or(""), b"")?;
        params.check_unknown(&["symbol", "limit"])?;
        let m = st.market.read().expect("market lock");
        let v = pair_param(&m, &params)?;
        let limit = limit_param(&params, 500, 1000)?;
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
        Ok::<Value, BinanceError>(Value::Array(list))
    })();
    match res {
        Ok(v) => ok(v),
        Err(e) => error_response(&e),
    }
}
