//! Binance Spot v3 signed endpoints (TRADE / USER_DATA): order entry,
//! queries, cancels, cancel-replace, open orders, history, account and
//! trades. A request is authenticated by `X-MBX-APIKEY` + signature over the
//! raw query + body (HMAC-SHA256 hex or Ed25519 base64) within
//! `recvWindow`, converted exactly into an engine command (values that would
//! need rounding are refused, never rounded), executed through the pipeline
//! (answered only once durable) and rendered with Binance's field names.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use engine::decimal::{format_units, parse_units, DecimalError};
use engine::{
    AssetId, CancelReplaceMode, ClientOrderId, Command, Event, NewOrder, Order, OrderId, OrderRef,
    OrderStatus, OrderType, Price, Qty, RejectReason, Side, StpMode, TimeInForce, UserId,
};
use serde_json::{json, Value};

use crate::accounts::{OrderRecord, TradeRecord};
use crate::binance::errors::{BinanceError, FilterFailure};
use crate::binance::params::Params;
use crate::binance::sign::{check_api_key_format, check_request_time, verify_request};
use crate::pipeline::{ExecuteError, Outcome, SubmitError};
use crate::server::{error_response, json_response, now_ms, ok_response as ok, AppState};

pub const PERM_READ: u8 = 1;
pub const PERM_TRADE: u8 = 2;
pub const PERM_WITHDRAW: u8 = 4;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v3/order",
            post(new_order).get(query_order).delete(cancel_order),
        )
        .route("/api/v3/order/test", post(test_order))
        .route("/api/v3/order/cancelReplace", post(cancel_replace))
        .route(
            "/api/v3/openOrders",
            get(open_orders).delete(cancel_open_orders),
        )
        .route("/api/v3/allOrders", get(all_orders))
        .route("/api/v3/account", get(account))
        .route("/api/v3/myTrades", get(my_trades))
}

type R<T> = Result<T, BinanceError>;

fn respond(r: R<Value>) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(e) => error_response(&e),
    }
}

/// A request authenticated as `user` (REST or WebSocket API).
pub(crate) struct Authed {
    pub user: UserId,
    /// Id of the API key that signed the request (the ORDERS limits count
    /// per key; its id, not its 64-character text, keys the counters).
    pub key_id: u64,
    pub params: Params,
    /// The key's ORDERS usage once this request was counted (or refused),
    /// for the WebSocket reply's `rateLimits` without a second look-up.
    pub order_usage: std::sync::OnceLock<crate::binance::ratelimit::Usage>,
    /// Wall-clock time the request was checked at (ms): its `timestamp`
    /// window, its order count and a generated client order id all use
    /// this one reading.
    pub now_ms: u64,
}

impl Authed {
    fn new(user: UserId, key_id: u64, params: Params, now_ms: u64) -> Authed {
        Authed {
            user,
            key_id,
            params,
            order_usage: std::sync::OnceLock::new(),
            now_ms,
        }
    }

    /// Count one new order against the key's order-rate limits (-1015).
    fn count_order(&self, st: &AppState) -> R<()> {
        match st.order_limits.check_and_add(&self.key_id, 1, self.now_ms) {
            Ok(usage) => {
                let _ = self.order_usage.set(usage);
                Ok(())
            }
            Err(limited) => {
                let _ = self.order_usage.set(limited.usage);
                Err(limited.error)
            }
        }
    }
}

/// Decode parameters, check the API key, timestamp/recvWindow, signature and
/// the key's permission. Order: key format (-2014), known key (-2015),
/// timestamp (-1021/-1102), signature (-1022), permission (-2015).
fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    need: u8,
) -> R<Authed> {
    let params = Params::parse(query.unwrap_or(""), body)?;
    let key = check_api_key_format(headers.get("X-MBX-APIKEY").and_then(|v| v.to_str().ok()))?;
    authorize(st, key, params, need)
}

/// Authenticate decoded parameters signed with API key `key` (already
/// checked for format): known key (-2015), timestamp (-1021/-1102),
/// signature (-1022), permission (-2015), active user.
pub(crate) fn authorize(st: &AppState, key: &str, params: Params, need: u8) -> R<Authed> {
    let now = now_ms();
    let (user, key_id) = check_key(st, key, &params, need, now)?;
    Ok(Authed::new(user, key_id, params, now))
}

/// [`authorize`] for a WebSocket API request, whose key is its `apiKey`
/// member (read in place, not copied), checked at `now` (ms).
pub(crate) fn authorize_ws(st: &AppState, params: Params, need: u8, now: u64) -> R<Authed> {
    let (user, key_id) = {
        let key = params
            .api_key()
            .ok_or_else(|| BinanceError::mandatory_param_missing("apiKey"))?;
        check_api_key_format(Some(key))?;
        check_key(st, key, &params, need, now)?
    };
    Ok(Authed::new(user, key_id, params, now))
}

/// The key's user and id when `key` exists, the request is timely and
/// signed by it, the key has the `need` permissions and its user is active.
fn check_key(st: &AppState, key: &str, params: &Params, need: u8, now: u64) -> R<(UserId, u64)> {
    let id = st.identity.read().expect("identity lock");
    let k = id.api_key(key).ok_or_else(BinanceError::rejected_api_key)?;
    check_request_time(params, now)?;
    verify_request(params, &k.signing)?;
    if k.permissions & need != need {
        return Err(BinanceError::rejected_api_key());
    }
    let (user, key_id) = (k.user, k.id);
    if id
        .user(user)
        .is_none_or(|u| u.status != engine::UserStatus::Active)
    {
        return Err(BinanceError::rejected_api_key());
    }
    Ok((user, key_id))
}

/// Run a command; its outcome arrives once it is durable and every read
/// model has applied it (the publisher answers), so what follows reads its
/// own write.
async fn execute(st: &AppState, cmd: Command) -> R<std::sync::Arc<Outcome>> {
    execute_cancel(st, cmd, None).await
}

async fn execute_cancel(
    st: &AppState,
    cmd: Command,
    cancel_client_id: Option<ClientOrderId>,
) -> R<std::sync::Arc<Outcome>> {
    match st.submitter.execute_cancel(cmd, cancel_client_id).await {
        Ok(o) => Ok(o),
        Err(ExecuteError::Submit(SubmitError::Full)) => Err(BinanceError::server_busy()),
        Err(_) => Err(BinanceError::service_shutting_down()),
    }
}

/// Exact decimal -> units; errors in Binance's vocabulary.
fn units(name: &str, s: &str, decimals: u32) -> R<u64> {
    parse_units(s, decimals).map_err(|e| match e {
        DecimalError::TooManyDecimals { .. } => BinanceError::bad_precision(name),
        DecimalError::Overflow => BinanceError::param_overflow(name),
        DecimalError::Empty => BinanceError::param_empty(name),
        _ => BinanceError::illegal_chars_in(name, "^([0-9]{1,20})(\\.[0-9]{1,20})?$"),
    })
}

/// A pair as an order needs it (defined with the market projection, which
/// keeps it for the order path).
type PairInfo = crate::market::PairEntry;

/// The pair named `symbol` (-1121), from the directory (no market lock).
fn pair_named(st: &AppState, symbol: &str) -> R<PairInfo> {
    st.pairs
        .get(symbol)
        .ok_or_else(BinanceError::invalid_symbol)
}

fn pair_of(st: &AppState, params: &Params) -> R<PairInfo> {
    pair_named(st, params.required_str("symbol")?)
}

impl PairInfo {
    fn price_ticks(&self, name: &str, s: &str) -> R<u64> {
        let u = units(name, s, self.quote_dec)?;
        if u % self.tick_units != 0 {
            return Err(BinanceError::filter_failure(FilterFailure::PriceFilter));
        }
        Ok(u / self.tick_units)
    }
    /// A price in ticks as quote-asset units.
    fn price_units(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(self.tick_units)
    }
    fn price(&self, ticks: u64) -> String {
        format_units(self.price_units(ticks), self.quote_dec)
    }
    fn qty(&self, u: u64) -> String {
        format_units(u, self.base_dec)
    }
    fn quote(&self, u: u64) -> String {
        format_units(u, self.quote_dec)
    }
    /// An order row of Postgres (history beyond memory) as a read-model
    /// record. Postgres does not keep whether a stop had triggered: one
    /// that traded did; workingTime is its creation time.
    fn order_from_pg(&self, user: UserId, r: &crate::history::PgOrder) -> Option<OrderRecord> {
        const STP_MODES: [StpMode; 4] = [
            StpMode::None,
            StpMode::ExpireTaker,
            StpMode::ExpireMaker,
            StpMode::ExpireBoth,
        ];
        const ORDER_STATUSES: [OrderStatus; 7] = [
            OrderStatus::New,
            OrderStatus::PartiallyFilled,
            OrderStatus::Filled,
            OrderStatus::Canceled,
            OrderStatus::Rejected,
            OrderStatus::Expired,
            OrderStatus::ExpiredInMatch,
        ];
        let kind = OrderType::ALL.into_iter().find(|t| t.as_str() == r.kind)?;
        let side = [Side::Buy, Side::Sell]
            .into_iter()
            .find(|s| s.as_str() == r.side)?;
        let tif = [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok]
            .into_iter()
            .find(|t| Some(t.as_str()) == r.tif.as_deref())
            .unwrap_or(TimeInForce::Gtc);
        let stp = STP_MODES.into_iter().find(|m| m.as_str() == r.stp)?;
        let status = ORDER_STATUSES
            .into_iter()
            .find(|s| s.as_str() == r.status)?;
        let base = |s: &str| parse_units(s, self.base_dec).ok();
        let quote = |s: &str| parse_units(s, self.quote_dec).ok();
        let ticks = |s: &Option<String>| match s {
            Some(v) => quote(v).map(|u| u / self.tick_units),
            None => Some(0),
        };
        let filled = base(&r.filled)?;
        let order = Order {
            id: OrderId(r.id),
            user,
            pair: self.id,
            side,
            kind,
            tif,
            stp,
            status,
            price: Price(ticks(&r.price)?),
            stop_price: Price(ticks(&r.stop_price)?),
            qty: Qty(base(&r.amount)?),
            filled: Qty(filled),
            quote_qty: match &r.quote_qty {
                Some(q) => quote(q)?,
                None => 0,
            },
            cum_quote: quote(&r.cum_quote)?,
            frozen: 0,
            client_id: r
                .client_id
                .as_deref()
                .and_then(|c| ClientOrderId::new(c).ok())
                .unwrap_or_default(),
            created_ms: r.created_ms,
            working_ms: r.created_ms,
            triggered: filled > 0 || status == OrderStatus::Filled,
        };
        Some(OrderRecord {
            order,
            update_ms: r.updated_ms,
        })
    }

    /// A user's side of a Postgres trade row as a read-model record.
    fn trade_from_pg(&self, t: &crate::history::PgTrade) -> Option<TradeRecord> {
        let quote = |s: &str| parse_units(s, self.quote_dec).ok();
        let asset = AssetId(u32::try_from(t.commission_asset).ok()?);
        Some(TradeRecord {
            id: t.id,
            pair: self.id,
            order: OrderId(t.order),
            price_ticks: quote(&t.price)? / self.tick_units,
            qty_units: parse_units(&t.qty, self.base_dec).ok()?,
            quote_units: quote(&t.quote)?,
            commission: if asset == self.base {
                parse_units(&t.commission, self.base_dec).ok()?
            } else {
                quote(&t.commission)?
            },
            commission_asset: asset,
            time_ms: t.time_ms,
            is_buyer: t.is_buyer,
            is_maker: t.is_maker,
        })
    }

    fn asset_sym(&self, a: AssetId) -> &str {
        if a == self.base {
            &self.base_sym
        } else {
            &self.quote_sym
        }
    }
}

static CLIENT_ID_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh client order id for orders sent without one (Binance generates
/// one too). Time + process counter: unique, 36 chars at most.
fn generate_client_id(now_ms: u64) -> ClientOrderId {
    let n = CLIENT_ID_SEQ.fetch_add(1, Ordering::Relaxed);
    client_id_of(now_ms, n)
}

/// `format!("mx{ms:x}{:06x}", n & 0xff_ffff)`, written by hand (`format!`
/// was 2% of the WebSocket API's order path).
fn client_id_of(ms: u64, n: u64) -> ClientOrderId {
    let mut buf = [0u8; 2 + 16 + 6];
    buf[..2].copy_from_slice(b"mx");
    let mut len = 2;
    let ms_digits = (64 - ms.leading_zeros()).div_ceil(4).max(1) as usize;
    for (value, digits) in [(ms, ms_digits), (n & 0xff_ffff, 6)] {
        for i in (0..digits).rev() {
            buf[len] = b"0123456789abcdef"[((value >> (4 * i)) & 0xf) as usize];
            len += 1;
        }
    }
    let s = std::str::from_utf8(&buf[..len]).unwrap_or_default();
    ClientOrderId::new(s).expect("generated id is valid")
}

fn client_id(params: &Params, name: &str) -> R<Option<ClientOrderId>> {
    match params.optional_client_order_id(name)? {
        None => Ok(None),
        Some(s) => ClientOrderId::new(s)
            .map(Some)
            .map_err(|_| BinanceError::invalid_parameter(name)),
    }
}

fn map_side(s: crate::binance::enums::Side) -> Side {
    match s {
        crate::binance::enums::Side::Buy => Side::Buy,
        crate::binance::enums::Side::Sell => Side::Sell,
    }
}

/// Parameters of a new order (POST order, order/test, cancelReplace).
struct OrderParams {
    new: NewOrder,
    resp: crate::binance::enums::NewOrderRespType,
}

const ORDER_PARAMS: &[&str] = &[
    "symbol",
    "side",
    "type",
    "timeInForce",
    "quantity",
    "quoteOrderQty",
    "price",
    "newClientOrderId",
    "stopPrice",
    "newOrderRespType",
    "selfTradePreventionMode",
    "recvWindow",
    "timestamp",
    "signature",
];

/// `now_ms`: the request's time, for a generated client order id.
fn parse_new_order(
    params: &Params,
    user: UserId,
    pair: &PairInfo,
    cid_name: &str,
    now_ms: u64,
) -> R<OrderParams> {
    use crate::binance::enums as be;
    let side = map_side(be::Side::parse(params.required_str("side")?)?);
    let bt = be::OrderType::parse(params.required_str("type")?)?;
    let kind = match bt {
        be::OrderType::Limit => OrderType::Limit,
        be::OrderType::Market => OrderType::Market,
        be::OrderType::StopLoss => OrderType::StopLoss,
        be::OrderType::StopLossLimit => OrderType::StopLossLimit,
        be::OrderType::TakeProfit => OrderType::TakeProfit,
        be::OrderType::TakeProfitLimit => OrderType::TakeProfitLimit,
        be::OrderType::LimitMaker => OrderType::LimitMaker,
    };
    let tif = if bt.requires_time_in_force() {
        match be::TimeInForce::parse(params.required_str("timeInForce")?)? {
            be::TimeInForce::Gtc => TimeInForce::Gtc,
            be::TimeInForce::Ioc => TimeInForce::Ioc,
            be::TimeInForce::Fok => TimeInForce::Fok,
        }
    } else {
        if params.contains("timeInForce") {
            return Err(BinanceError::tif_not_required());
        }
        TimeInForce::Gtc
    };
    let price = if bt.requires_price() {
        Price(pair.price_ticks("price", params.decimal_str("price")?)?)
    } else {
        params.reject_if_sent("price")?;
        Price(0)
    };
    let stop_price = if bt.requires_stop_price() {
        Price(pair.price_ticks("stopPrice", params.decimal_str("stopPrice")?)?)
    } else {
        params.reject_if_sent("stopPrice")?;
        Price(0)
    };
    let (qty, quote_qty) = if kind == OrderType::Market {
        match (
            params.optional_decimal_str("quantity")?,
            params.optional_decimal_str("quoteOrderQty")?,
        ) {
            (Some(q), None) => (units("quantity", q, pair.base_dec)?, 0),
            (None, Some(q)) => (0, units("quoteOrderQty", q, pair.quote_dec)?),
            (None, None) => {
                return Err(BinanceError::mandatory_one_of("quantity", "quoteOrderQty"))
            }
            (Some(_), Some(_)) => return Err(BinanceError::optional_params_bad_combo()),
        }
    } else {
        params.reject_if_sent("quoteOrderQty")?;
        (
            units("quantity", params.decimal_str("quantity")?, pair.base_dec)?,
            0,
        )
    };
    let stp = match params.optional_str("selfTradePreventionMode")? {
        None => StpMode::ExpireMaker,
        Some(s) => match be::SelfTradePreventionMode::parse(s)? {
            be::SelfTradePreventionMode::None => StpMode::None,
            be::SelfTradePreventionMode::ExpireTaker => StpMode::ExpireTaker,
            be::SelfTradePreventionMode::ExpireMaker => StpMode::ExpireMaker,
            be::SelfTradePreventionMode::ExpireBoth => StpMode::ExpireBoth,
        },
    };
    let resp = match params.optional_str("newOrderRespType")? {
        None => be::NewOrderRespType::default_for(bt),
        Some(s) => be::NewOrderRespType::parse(s)?,
    };
    let client_id = client_id(params, cid_name)?.unwrap_or_else(|| generate_client_id(now_ms));
    Ok(OrderParams {
        new: NewOrder {
            user,
            pair: pair.id,
            side,
            kind,
            tif,
            price,
            qty: Qty(qty),
            quote_qty,
            stop_price,
            client_id,
            stp,
        },
        resp,
    })
}

/// Engine rejection of a new order -> Binance error.
fn order_reject(r: RejectReason) -> BinanceError {
    use RejectReason::*;
    match r {
        PriceFilter | InvalidPrice | InvalidStopPrice => {
            BinanceError::filter_failure(FilterFailure::PriceFilter)
        }
        LotSize | InvalidQuantity => BinanceError::filter_failure(FilterFailure::LotSize),
        MarketLotSize => BinanceError::filter_failure(FilterFailure::MarketLotSize),
        MinNotional | MaxNotional => BinanceError::filter_failure(FilterFailure::Notional),
        PriceBand => BinanceError::filter_failure(FilterFailure::PercentPrice),
        MaxNumOrders => BinanceError::filter_failure(FilterFailure::MaxNumOrders),
        InsufficientBalance => BinanceError::insufficient_balance(),
        WouldTakeAsMaker => BinanceError::would_match_and_take(),
        DuplicateClientOrderId => BinanceError::duplicate_order(),
        StopWouldTriggerImmediately => BinanceError::order_would_trigger_immediately(),
        PairNotTrading | PairCancelOnly => BinanceError::market_closed(),
        UserSuspended => BinanceError::account_may_not_trade(),
        UnknownOrder => BinanceError::unknown_order_sent(),
        RiskOrderNotional => BinanceError::new_order_rejected(
            "Order rejected by a risk rule: its notional is above the maximum allowed.",
        ),
        other => BinanceError::new_order_rejected(format!("Order rejected: {}.", other.name())),
    }
}

fn order_type_str(o: &Order) -> &'static str {
    o.kind.as_str()
}

/// GET order / openOrders / allOrders shape.
fn order_json(p: &PairInfo, r: &OrderRecord) -> Value {
    let o = &r.order;
    json!({
        "symbol": p.symbol,
        "orderId": o.id.0,
        "orderListId": -1,
        "clientOrderId": o.client_id.as_str(),
        "price": p.price(o.price.0),
        "origQty": p.qty(o.qty.0),
        "executedQty": p.qty(o.filled.0),
        "cummulativeQuoteQty": p.quote(o.cum_quote),
        "status": o.status.as_str(),
        "timeInForce": o.tif.as_str(),
        "type": order_type_str(o),
        "side": o.side.as_str(),
        "stopPrice": p.price(o.stop_price.0),
        "icebergQty": p.qty(0),
        "time": o.created_ms,
        "updateTime": r.update_ms,
        "isWorking": !o.kind.is_stop() || o.triggered,
        "workingTime": if o.kind.is_stop() && !o.triggered { -1i64 } else { o.working_ms.max(o.created_ms) as i64 },
        "origQuoteOrderQty": p.quote(o.quote_qty),
        "selfTradePreventionMode": o.stp.as_str(),
    })
}

/// The POST order answer (ACK / RESULT / FULL) from the command's events.
fn new_order_json(
    p: &PairInfo,
    o: &Outcome,
    resp: crate::binance::enums::NewOrderRespType,
    rec: Option<&OrderRecord>,
) -> Option<String> {
    use crate::binance::enums::NewOrderRespType as T;
    use crate::json_text::Obj;
    let id = accepted_id(o)?;
    let rec = rec?;
    let ord = &rec.order;
    let mut out = String::with_capacity(if resp == T::Full { 640 } else { 400 });
    let mut v = Obj::new(&mut out);
    v.str("symbol", &p.symbol)
        .u64("orderId", id.0)
        .i64("orderListId", -1)
        .str("clientOrderId", ord.client_id.as_str())
        .u64("transactTime", o.ts_ms);
    if resp != T::Ack {
        v.units("price", p.price_units(ord.price.0), p.quote_dec)
            .units("origQty", ord.qty.0, p.base_dec)
            .units("executedQty", ord.filled.0, p.base_dec)
            .units("origQuoteOrderQty", ord.quote_qty, p.quote_dec)
            .units("cummulativeQuoteQty", ord.cum_quote, p.quote_dec)
            .str("status", ord.status.as_str())
            .str("timeInForce", ord.tif.as_str())
            .str("type", order_type_str(ord))
            .str("side", ord.side.as_str())
            .i64(
                "workingTime",
                if ord.kind.is_stop() && !ord.triggered {
                    -1
                } else {
                    o.ts_ms as i64
                },
            )
            .str("selfTradePreventionMode", ord.stp.as_str());
        if ord.kind.is_stop() {
            v.units("stopPrice", p.price_units(ord.stop_price.0), p.quote_dec);
        }
        if resp == T::Full {
            let mut fills = String::from("[");
            for t in o.events.iter().filter_map(|e| match e {
                Event::Trade(t) if t.taker_order == id => Some(t),
                _ => None,
            }) {
                if fills.len() > 1 {
                    fills.push(',');
                }
                let buys = t.taker_side == Side::Buy;
                let mut f = Obj::new(&mut fills);
                f.units("price", p.price_units(t.price.0), p.quote_dec)
                    .units("qty", t.qty.0, p.base_dec)
                    .units(
                        "commission",
                        t.taker_fee,
                        if buys { p.base_dec } else { p.quote_dec },
                    )
                    .str(
                        "commissionAsset",
                        if buys { &p.base_sym } else { &p.quote_sym },
                    )
                    .u64("tradeId", t.id.0);
                f.end();
            }
            fills.push(']');
            v.raw("fills", &fills);
        }
    }
    v.end();
    Some(out)
}

/// The id of the order this command placed, if it placed one.
fn accepted_id(o: &Outcome) -> Option<OrderId> {
    o.events.iter().find_map(|e| match e {
        Event::OrderAccepted(a) => Some(a.id),
        _ => None,
    })
}

fn first_reject(o: &Outcome) -> Option<RejectReason> {
    o.events.iter().find_map(|e| match e {
        Event::Rejected { reason } => Some(*reason),
        _ => None,
    })
}

fn record(st: &AppState, user: UserId, id: OrderId) -> Option<OrderRecord> {
    st.accounts
        .read()
        .expect("accounts lock")
        .user(user)
        .and_then(|a| a.order(id.0).copied())
}

/// The state of an order placed by the command of `o`, right after it:
/// folded from the command's own events, which always describe it (the
/// history read model may have dropped it already, or hold a later state
/// from a command published since), without taking the read model's lock.
fn placed_record(o: &Outcome, id: OrderId) -> Option<OrderRecord> {
    OrderRecord::placed_by(&o.events, id, o.ts_ms)
}

async fn new_order(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    match authenticate(&st, &headers, q.as_deref(), &body, PERM_TRADE) {
        Ok(a) => match place(&st, &a).await {
            Ok(text) => json_response(StatusCode::OK, text),
            Err(e) => error_response(&e),
        },
        Err(e) => error_response(&e),
    }
}

/// Place an order (REST POST order, WebSocket `order.place`).
/// The answer is JSON text (an order reply is built for every order, so it
/// is written directly instead of through a `Value`).
pub(crate) async fn place(st: &AppState, a: &Authed) -> R<String> {
    a.params.check_unknown(ORDER_PARAMS)?;
    let pair = pair_of(st, &a.params)?;
    let op = parse_new_order(&a.params, a.user, &pair, "newClientOrderId", a.now_ms)?;
    a.count_order(st)?;
    let o = execute(st, Command::PlaceOrder(op.new)).await?;
    if let Some(r) = first_reject(&o) {
        return Err(order_reject(r));
    }
    let id = accepted_id(&o).ok_or_else(BinanceError::unknown)?;
    let rec = placed_record(&o, id);
    new_order_json(&pair, &o, op.resp, rec.as_ref()).ok_or_else(BinanceError::unknown)
}

/// order/test: every parameter and filter check that does not need the
/// book or balances; nothing is journaled.
async fn test_order(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    match authenticate(&st, &headers, q.as_deref(), &body, PERM_TRADE) {
        Ok(a) => respond(test(&st, &a)),
        Err(e) => error_response(&e),
    }
}

/// Test an order without placing it (REST order/test, WebSocket `order.test`).
pub(crate) fn test(st: &AppState, a: &Authed) -> R<Value> {
    let mut allowed = ORDER_PARAMS.to_vec();
    allowed.push("computeCommissionRates");
    a.params.check_unknown(&allowed)?;
    let pair = pair_of(st, &a.params)?;
    let op = parse_new_order(&a.params, a.user, &pair, "newClientOrderId", a.now_ms)?;
    let m = st.market.read().expect("market lock");
    let spec = &m
        .pairs
        .get(&pair.id)
        .ok_or_else(BinanceError::invalid_symbol)?
        .pair;
    let n = &op.new;
    let s = &spec.spec;
    for p in [n.price.0, n.stop_price.0] {
        if p > 0 && (p < s.min_price_ticks || p > s.max_price_ticks) {
            return Err(order_reject(RejectReason::PriceFilter));
        }
    }
    if n.qty.0 > 0 && (n.qty.0 < s.min_qty_units || n.qty.0 % s.step_units != 0) {
        return Err(order_reject(RejectReason::LotSize));
    }
    let reference = if n.price.0 > 0 {
        n.price.0
    } else {
        n.stop_price.0
    };
    if reference > 0 && n.qty.0 > 0 {
        match spec.notional(n.qty.0, reference) {
            Some(v) if v >= s.min_notional_units => {}
            _ => return Err(order_reject(RejectReason::MinNotional)),
        }
    }
    if a.params.optional_bool("computeCommissionRates")? == Some(true) {
        let rate = |e8: u64| format_units(e8, 8);
        return Ok(json!({
            "standardCommissionForOrder": {"maker": rate(s.maker_fee_e8), "taker": rate(s.taker_fee_e8)},
            "taxCommissionForOrder": {"maker": "0.00000000", "taker": "0.00000000"},
            "discount": {"enabledForAccount": false, "enabledForSymbol": false, "discountAsset": null, "discount": "0.00000000"},
        }));
    }
    Ok(json!({}))
}

/// `orderId` or `origClientOrderId` -> reference.
fn target(params: &Params) -> R<OrderRef> {
    if let Some(id) = params.optional_u64("orderId")? {
        return Ok(OrderRef::Id(OrderId(id)));
    }
    match client_id(params, "origClientOrderId")? {
        Some(c) => Ok(OrderRef::Client(c)),
        None => Err(BinanceError::mandatory_one_of(
            "orderId",
            "origClientOrderId",
        )),
    }
}

async fn query_order(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    match authenticate(&st, &headers, q.as_deref(), b"", PERM_READ) {
        Ok(a) => respond(status(&st, &a)),
        Err(e) => error_response(&e),
    }
}

/// One order of the caller (REST GET order, WebSocket `order.status`).
pub(crate) fn status(st: &AppState, a: &Authed) -> R<Value> {
    a.params.check_unknown(&[
        "symbol",
        "orderId",
        "origClientOrderId",
        "recvWindow",
        "timestamp",
        "signature",
    ])?;
    let pair = pair_of(st, &a.params)?;
    let t = target(&a.params)?;
    let acc = st.accounts.read().expect("accounts lock");
    let u = acc.user(a.user).ok_or_else(BinanceError::no_such_order)?;
    let rec = match t {
        OrderRef::Id(id) => u.order(id.0),
        OrderRef::Client(c) => u.order_by_client(&c),
    }
    .filter(|r| r.order.pair == pair.id)
    .ok_or_else(BinanceError::no_such_order)?;
    Ok(order_json(&pair, rec))
}

/// The DELETE order answer for an order that command `out` just canceled.
fn canceled_json(p: &PairInfo, rec: &OrderRecord, out: &Outcome) -> Value {
    let o = &rec.order;
    json!({
        "symbol": p.symbol,
        "origClientOrderId": o.client_id.as_str(),
        "orderId": o.id.0,
        "orderListId": -1,
        "clientOrderId": out.cancel_client_id_for(o.id).as_str(),
        "transactTime": rec.update_ms,
        "price": p.price(o.price.0),
        "origQty": p.qty(o.qty.0),
        "executedQty": p.qty(o.filled.0),
        "origQuoteOrderQty": p.quote(o.quote_qty),
        "cummulativeQuoteQty": p.quote(o.cum_quote),
        "status": o.status.as_str(),
        "timeInForce": o.tif.as_str(),
        "type": order_type_str(o),
        "side": o.side.as_str(),
        "selfTradePreventionMode": o.stp.as_str(),
    })
}

fn done_ids(o: &Outcome) -> Vec<OrderId> {
    o.events
        .iter()
        .filter_map(|e| match e {
            Event::OrderDone { order, status, .. } if *status == OrderStatus::Canceled => {
                Some(*order)
            }
            _ => None,
        })
        .collect()
}

async fn cancel_order(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    match authenticate(&st, &headers, q.as_deref(), &body, PERM_TRADE) {
        Ok(a) => respond(cancel(&st, &a).await),
        Err(e) => error_response(&e),
    }
}

/// Cancel one order (REST DELETE order, WebSocket `order.cancel`).
pub(crate) async fn cancel(st: &AppState, a: &Authed) -> R<Value> {
    a.params.check_unknown(&[
        "symbol",
        "orderId",
        "origClientOrderId",
        "newClientOrderId",
        "cancelRestrictions",
        "recvWindow",
        "timestamp",
        "signature",
    ])?;
    let pair = pair_of(st, &a.params)?;
    let t = target(&a.params).map_err(|_| BinanceError::cancel_order_invalid())?;
    let cancel_id = client_id(&a.params, "newClientOrderId")?;
    let o = execute_cancel(
        st,
        Command::CancelOrder {
            user: a.user,
            pair: pair.id,
            target: t,
        },
        cancel_id,
    )
    .await?;
    if first_reject(&o).is_some() {
        return Err(BinanceError::unknown_order_sent());
    }
    let id = *done_ids(&o)
        .first()
        .ok_or_else(BinanceError::unknown_order_sent)?;
    let rec = record(st, a.user, id).ok_or_else(BinanceError::unknown)?;
    Ok(canceled_json(&pair, &rec, &o))
}

async fn cancel_open_orders(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    match authenticate(&st, &headers, q.as_deref(), &body, PERM_TRADE) {
        Ok(a) => respond(cancel_all(&st, &a).await),
        Err(e) => error_response(&e),
    }
}

/// Cancel every open order of a symbol (REST DELETE openOrders, WebSocket `openOrders.cancelAll`).
pub(crate) async fn cancel_all(st: &AppState, a: &Authed) -> R<Value> {
    a.params
        .check_unknown(&["symbol", "recvWindow", "timestamp", "signature"])?;
    let pair = pair_of(st, &a.params)?;
    let o = execute(
        st,
        Command::CancelAll {
            user: a.user,
            pair: pair.id,
        },
    )
    .await?;
    if let Some(r) = first_reject(&o) {
        return Err(order_reject(r));
    }
    let ids = done_ids(&o);
    if ids.is_empty() {
        // Binance answers -2011 when there was nothing to cancel.
        return Err(BinanceError::unknown_order_sent());
    }
    let list: Vec<Value> = ids
        .into_iter()
        .filter_map(|id| record(st, a.user, id))
        .map(|r| canceled_json(&pair, &r, &o))
        .collect();
    Ok(Value::Array(list))
}

async fn cancel_replace(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let a = match authenticate(&st, &headers, q.as_deref(), &body, PERM_TRADE) {
        Ok(a) => a,
        Err(e) => return error_response(&e),
    };
    match replace(&st, &a).await {
        Ok(v) => ok(v),
        Err((e, None)) => error_response(&e),
        Err((e, Some(data))) => {
            let status = StatusCode::from_u16(e.http_status).unwrap_or(StatusCode::BAD_REQUEST);
            json_response(status, e.to_json_with_data(&data))
        }
    }
}

/// Cancel an order and place another (REST order/cancelReplace, WebSocket
/// `order.cancelReplace`). A failure of either part is an error carrying
/// Binance's `data` object with both results.
pub(crate) async fn replace(
    st: &AppState,
    a: &Authed,
) -> Result<Value, (BinanceError, Option<Value>)> {
    let res = async {
        let mut allowed = ORDER_PARAMS.to_vec();
        allowed.extend([
            "cancelReplaceMode",
            "cancelOrderId",
            "cancelOrigClientOrderId",
            "cancelNewClientOrderId",
            "cancelRestrictions",
            "orderRateLimitExceededMode",
        ]);
        a.params.check_unknown(&allowed)?;
        let pair = pair_of(st, &a.params)?;
        let mode = match a.params.required_str("cancelReplaceMode")? {
            "STOP_ON_FAILURE" => CancelReplaceMode::StopOnFailure,
            "ALLOW_FAILURE" => CancelReplaceMode::AllowFailure,
            _ => return Err(BinanceError::invalid_parameter("cancelReplaceMode")),
        };
        let tgt = if let Some(id) = a.params.optional_u64("cancelOrderId")? {
            OrderRef::Id(OrderId(id))
        } else {
            match client_id(&a.params, "cancelOrigClientOrderId")? {
                Some(c) => OrderRef::Client(c),
                None => {
                    return Err(BinanceError::mandatory_one_of(
                        "cancelOrderId",
                        "cancelOrigClientOrderId",
                    ))
                }
            }
        };
        let op = parse_new_order(&a.params, a.user, &pair, "newClientOrderId", a.now_ms)?;
        let cancel_id = client_id(&a.params, "cancelNewClientOrderId")?;
        a.count_order(st)?;
        let o = execute_cancel(
            st,
            Command::CancelReplace {
                target: tgt,
                mode,
                new: op.new,
            },
            cancel_id,
        )
        .await?;
        Ok((a.user, pair, op.resp, mode, o))
    }
    .await;
    let (user, pair, resp, mode, o) = res.map_err(|e| (e, None))?;
    // Engine events: [cancel part | Rejected] then [new order part | Rejected].
    let rejects: Vec<RejectReason> = o
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Rejected { reason } => Some(*reason),
            _ => None,
        })
        .collect();
    let canceled = done_ids(&o).first().copied();
    let accepted = accepted_id(&o).is_some();
    let cancel_ok = canceled.is_some();
    let cancel_resp = match canceled.and_then(|id| record(st, user, id)) {
        Some(r) => canceled_json(&pair, &r, &o),
        None => {
            let e = BinanceError::unknown_order_sent();
            json!({"code": e.code, "msg": e.msg})
        }
    };
    let new_resp = if accepted {
        accepted_id(&o)
            .and_then(|id| placed_record(&o, id))
            .and_then(|r| new_order_json(&pair, &o, resp, Some(&r)))
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
    } else {
        match rejects.last() {
            Some(r) if !(cancel_ok && rejects.is_empty()) => {
                let e = order_reject(*r);
                json!({"code": e.code, "msg": e.msg})
            }
            _ => Value::Null,
        }
    };
    if cancel_ok && accepted {
        return Ok(json!({
            "cancelResult": "SUCCESS",
            "newOrderResult": "SUCCESS",
            "cancelResponse": cancel_resp,
            "newOrderResponse": new_resp,
        }));
    }
    let (cancel_result, new_result) = (
        if cancel_ok { "SUCCESS" } else { "FAILURE" },
        if accepted {
            "SUCCESS"
        } else if !cancel_ok && mode == CancelReplaceMode::StopOnFailure {
            "NOT_ATTEMPTED"
        } else {
            "FAILURE"
        },
    );
    let data = json!({
        "cancelResult": cancel_result,
        "newOrderResult": new_result,
        "cancelResponse": cancel_resp,
        "newOrderResponse": if new_result == "NOT_ATTEMPTED" { Value::Null } else { new_resp },
    });
    let err = if cancel_ok || accepted {
        BinanceError::cancel_replace_partially_failed()
    } else {
        BinanceError::cancel_replace_failed()
    };
    Err((err, Some(data)))
}

async fn open_orders(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    match authenticate(&st, &headers, q.as_deref(), b"", PERM_READ) {
        Ok(a) => respond(open(&st, &a)),
        Err(e) => error_response(&e),
    }
}

/// Open orders (REST GET openOrders, WebSocket `openOrders.status`).
pub(crate) fn open(st: &AppState, a: &Authed) -> R<Value> {
    a.params
        .check_unknown(&["symbol", "recvWindow", "timestamp", "signature"])?;
    let only = match a.params.optional_str("symbol")? {
        Some(s) => Some(pair_named(st, s)?),
        None => None,
    };
    let m = st.market.read().expect("market lock");
    let acc = st.accounts.read().expect("accounts lock");
    let mut out = Vec::new();
    if let Some(u) = acc.user(a.user) {
        for r in u.open_orders() {
            if only.as_ref().is_some_and(|p| p.id != r.order.pair) {
                continue;
            }
            let p = m
                .pairs
                .get(&r.order.pair)
                .map(PairInfo::of)
                .ok_or_else(BinanceError::invalid_symbol)?;
            out.push(order_json(&p, r));
        }
    }
    Ok(Value::Array(out))
}

/// Common time/id/limit filters of allOrders and myTrades.
struct HistoryFilter {
    from_id: Option<u64>,
    start: Option<u64>,
    end: Option<u64>,
    limit: usize,
}

fn history_filter(params: &Params, id_name: &str) -> R<HistoryFilter> {
    let limit = params.optional_u64("limit")?.unwrap_or(500);
    if limit == 0 {
        return Err(BinanceError::invalid_parameter("limit"));
    }
    let f = HistoryFilter {
        from_id: params.optional_u64(id_name)?,
        start: params.optional_u64("startTime")?,
        end: params.optional_u64("endTime")?,
        limit: limit.min(1000) as usize,
    };
    if let (Some(s), Some(e)) = (f.start, f.end) {
        if e < s {
            return Err(BinanceError::invalid_parameter("endTime"));
        }
    }
    Ok(f)
}

impl HistoryFilter {
    /// The same filter for a Postgres query.
    fn pg_page(&self) -> crate::history::Page {
        crate::history::Page {
            from_id: self.from_id,
            start_ms: self.start,
            end_ms: self.end,
            limit: self.limit,
        }
    }

    fn keep(&self, id: u64, time: u64) -> bool {
        self.from_id.is_none_or(|f| id >= f)
            && self.start.is_none_or(|s| time >= s)
            && self.end.is_none_or(|e| time <= e)
    }

    /// Binance paging over matching items in id order: from the given id,
    /// the first `limit`; without one, the newest `limit`.
    fn page<T>(&self, matching: Vec<T>) -> impl Iterator<Item = T> {
        let skip = if self.from_id.is_some() {
            0
        } else {
            matching.len().saturating_sub(self.limit)
        };
        matching.into_iter().skip(skip).take(self.limit)
    }
}

async fn all_orders(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    match authenticate(&st, &headers, q.as_deref(), b"", PERM_READ) {
        Ok(a) => respond(history(&st, &a).await),
        Err(e) => error_response(&e),
    }
}

/// Order history (REST allOrders, WebSocket `allOrders`).
pub(crate) async fn history(st: &AppState, a: &Authed) -> R<Value> {
    a.params.check_unknown(&[
        "symbol",
        "orderId",
        "startTime",
        "endTime",
        "limit",
        "recvWindow",
        "timestamp",
        "signature",
    ])?;
    let pair = pair_of(st, &a.params)?;
    let f = history_filter(&a.params, "orderId")?;
    let (mut matching, truncated) = {
        let acc = st.accounts.read().expect("accounts lock");
        match acc.user(a.user) {
            Some(u) => (
                u.orders
                    .values()
                    .filter(|r| r.order.pair == pair.id && f.keep(r.order.id.0, r.order.created_ms))
                    .map(|r| **r)
                    .collect::<Vec<OrderRecord>>(),
                u.orders_truncated,
            ),
            None => (Vec::new(), false),
        }
    };
    if let (true, Some(h)) = (truncated, &st.history) {
        match h.orders(a.user.0, u64::from(pair.id.0), f.pg_page()).await {
            Ok(rows) => {
                let known: std::collections::HashSet<u64> =
                    matching.iter().map(|r| r.order.id.0).collect();
                matching.extend(
                    rows.iter()
                        .filter(|row| !known.contains(&row.id))
                        .filter_map(|row| pair.order_from_pg(a.user, row)),
                );
                matching.sort_unstable_by_key(|r| r.order.id.0);
            }
            Err(e) => {
                tracing::warn!(error = %e, "allOrders: Postgres history unavailable, answering from memory")
            }
        }
    }
    Ok(Value::Array(
        f.page(matching).map(|r| order_json(&pair, &r)).collect(),
    ))
}

fn trade_json(p: &PairInfo, t: &TradeRecord) -> Value {
    json!({
        "symbol": p.symbol,
        "id": t.id,
        "orderId": t.order.0,
        "orderListId": -1,
        "price": p.price(t.price_ticks),
        "qty": p.qty(t.qty_units),
        "quoteQty": p.quote(t.quote_units),
        "commission": if t.commission_asset == p.base { p.qty(t.commission) } else { p.quote(t.commission) },
        "commissionAsset": p.asset_sym(t.commission_asset),
        "time": t.time_ms,
        "isBuyer": t.is_buyer,
        "isMaker": t.is_maker,
        "isBestMatch": true,
    })
}

async fn my_trades(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    match authenticate(&st, &headers, q.as_deref(), b"", PERM_READ) {
        Ok(a) => respond(trades(&st, &a).await),
        Err(e) => error_response(&e),
    }
}

/// Trade history (REST myTrades, WebSocket `myTrades`).
pub(crate) async fn trades(st: &AppState, a: &Authed) -> R<Value> {
    a.params.check_unknown(&[
        "symbol",
        "orderId",
        "startTime",
        "endTime",
        "fromId",
        "limit",
        "recvWindow",
        "timestamp",
        "signature",
    ])?;
    let pair = pair_of(st, &a.params)?;
    let f = history_filter(&a.params, "fromId")?;
    let order = a.params.optional_u64("orderId")?;
    let (mut matching, truncated) = {
        let acc = st.accounts.read().expect("accounts lock");
        match acc.user(a.user) {
            Some(u) => (
                u.trades
                    .iter()
                    .filter(|t| {
                        t.pair == pair.id
                            && order.is_none_or(|o| t.order.0 == o)
                            && f.keep(t.id, t.time_ms)
                    })
                    .copied()
                    .collect::<Vec<TradeRecord>>(),
                u.trades_truncated,
            ),
            None => (Vec::new(), false),
        }
    };
    if let (true, Some(h)) = (truncated, &st.history) {
        match h
            .trades(a.user.0, u64::from(pair.id.0), order, f.pg_page())
            .await
        {
            Ok(rows) => {
                let known: std::collections::HashSet<(u64, u64)> =
                    matching.iter().map(|t| (t.id, t.order.0)).collect();
                matching.extend(
                    rows.iter()
                        .filter(|row| !known.contains(&(row.id, row.order)))
                        .filter_map(|row| pair.trade_from_pg(row)),
                );
                matching.sort_unstable_by_key(|t| (t.id, t.order.0));
            }
            Err(e) => {
                tracing::warn!(error = %e, "myTrades: Postgres history unavailable, answering from memory")
            }
        }
    }
    Ok(Value::Array(
        f.page(matching).map(|t| trade_json(&pair, &t)).collect(),
    ))
}

async fn account(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    match authenticate(&st, &headers, q.as_deref(), b"", PERM_READ) {
        Ok(a) => respond(account_status(&st, &a)),
        Err(e) => error_response(&e),
    }
}

/// Balances and rates (REST account, WebSocket `account.status`).
pub(crate) fn account_status(st: &AppState, a: &Authed) -> R<Value> {
    a.params
        .check_unknown(&["omitZeroBalances", "recvWindow", "timestamp", "signature"])?;
    let omit_zero = a.params.optional_bool("omitZeroBalances")? == Some(true);
    let m = st.market.read().expect("market lock");
    let acc = st.accounts.read().expect("accounts lock");
    let u = acc.user(a.user);
    let mut balances = Vec::new();
    for asset in m.assets.values() {
        let b = u
            .and_then(|u| u.balances.get(&asset.id).copied())
            .unwrap_or_default();
        if omit_zero && b.available == 0 && b.frozen == 0 {
            continue;
        }
        let d = asset.spec.decimals as u32;
        balances.push(json!({
            "asset": asset.spec.symbol,
            "free": format_units(b.available, d),
            "locked": format_units(b.frozen, d),
        }));
    }
    // Default fee rates: the first pair's (every pair has the same by default).
    let (maker, taker) = m
        .pairs
        .values()
        .next()
        .map(|v| (v.pair.spec.maker_fee_e8, v.pair.spec.taker_fee_e8))
        .unwrap_or((0, 0));
    let ident = st.identity.read().expect("identity lock");
    let active = ident
        .user(a.user)
        .is_some_and(|u| u.status == engine::UserStatus::Active);
    Ok(json!({
        "makerCommission": maker / 10_000,
        "takerCommission": taker / 10_000,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {
            "maker": format_units(maker, 8),
            "taker": format_units(taker, 8),
            "buyer": "0.00000000",
            "seller": "0.00000000",
        },
        "canTrade": active,
        "canWithdraw": active,
        "canDeposit": true,
        "brokered": false,
        "requireSelfTradePrevention": false,
        "preventSor": false,
        "updateTime": u.map(|u| u.update_ms).unwrap_or(0),
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": a.user.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_client_ids_read_as_time_and_counter_in_hex() {
        for (ms, n) in [
            (0, 0),
            (1, 1),
            (1_767_225_600_000, 0xabc),
            (u64::MAX, u64::MAX),
            (0x10, 0x1_000_000),
        ] {
            let want = format!("mx{ms:x}{:06x}", n & 0xff_ffff);
            assert_eq!(client_id_of(ms, n).as_str(), want);
        }
    }
}
