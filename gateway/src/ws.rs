//! Binance market streams (web-socket-streams.md): `/ws`, `/ws/<s1>/<s2>`
//! (raw payloads), `/stream?streams=a/b` (combined `{"stream","data"}`
//! wrapper), live `SUBSCRIBE` / `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS` /
//! `SET_PROPERTY` / `GET_PROPERTY`.
//!
//! Data flow: the publisher thread applies each engine `Outcome` to the
//! market projection and, still under the projection's write lock, hands it
//! to [`Hub::on_outcome`], which formats the real-time streams (trade,
//! aggTrade, kline, bookTicker) for streams someone subscribed to and folds
//! the changed price levels into the diff-depth accumulators. A 100 ms
//! ticker task ([`run_ticker`]) flushes the `@depth@100ms` diffs, the
//! partial books, and every 1000 ms the `@depth`/`@depth@1000ms` diffs and
//! the tickers. Delivery is `try_send` into each connection's bounded queue
//! (`http.ws_send_queue`): the publisher never waits for a client; a full
//! queue marks that connection as a slow consumer, which is closed with
//! code 1008 and a reason. Lock order is always market, then hub.
//!
//! Diff events carry `U`/`u` on the per-symbol `update_id` counter that REST
//! depth reports as `lastUpdateId` (one step per book-changing command), and
//! every level a command touched is sent with its quantity after the last
//! command of the window (0 = removed), so Binance's documented local book
//! procedure reproduces the engine's book exactly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use engine::{Event, PairId, Side};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::binance::enums::KlineInterval;
use crate::market::{vwap_quote_units, Market, PairView};
use crate::pipeline::Outcome;
use crate::rest::{
    percent_str, price_str, qty_str, qty_str_wide, quote_str, quote_str_wide, signed_price_str,
};
use crate::server::{json_response, now_ms, AppState};

/// Largest client message or frame accepted (bigger ones close the
/// connection with 1009).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 64 << 10;
/// Read chunk of a stream connection. tungstenite zero-fills this much
/// before every read attempt, and a connection re-polls its socket each
/// time an outgoing message wakes it: with the 128 KiB default, zeroing
/// was ~45% of `serve`'s CPU with 1,000 subscribers. Client messages are
/// small; bigger ones are still read, in more chunks.
pub const READ_BUFFER_BYTES: usize = 4 << 10;
/// Longest string request id (Binance: alphanumeric, at most 36).
pub const MAX_ID_LEN: usize = 36;
const TICK: Duration = Duration::from_millis(100);
/// How long a close frame may take to leave before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Limits of the stream endpoints (config `http.ws_*`).
#[derive(Debug, Clone)]
pub struct WsConfig {
    pub max_connections: usize,
    pub max_subscriptions: usize,
    pub max_messages_per_sec: u32,
    pub send_queue: usize,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig::from_http(&crate::config::HttpConfig::default())
    }
}

impl WsConfig {
    pub fn from_http(h: &crate::config::HttpConfig) -> WsConfig {
        WsConfig {
            max_connections: h.ws_max_connections as usize,
            max_subscriptions: h.ws_max_subscriptions as usize,
            max_messages_per_sec: h.ws_max_messages_per_sec,
            send_queue: h.ws_send_queue.max(1),
            ping_interval: Duration::from_secs(h.ws_ping_interval_secs.max(1)),
            pong_timeout: Duration::from_secs(h.ws_pong_timeout_secs.max(1)),
        }
    }
}

/// Update speed of the depth streams in ms.
type Speed = u16;

/// A parsed stream name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKey {
    Trade(PairId),
    AggTrade(PairId),
    /// Diff depth at 100 or 1000 ms.
    Diff(PairId, Speed),
    /// Top 5/10/20 levels at 100 or 1000 ms.
    Partial(PairId, usize, Speed),
    Kline(PairId, KlineInterval),
    Ticker(PairId),
    MiniTicker(PairId),
    BookTicker(PairId),
    AllTickers,
    AllMiniTickers,
}

/// Parse a Binance stream name against the listed pairs (symbols are
/// lower case in names; upper case is accepted too).
pub fn parse_stream(name: &str, m: &Market) -> Option<StreamKey> {
    match name {
        "!ticker@arr" => return Some(StreamKey::AllTickers),
        "!miniTicker@arr" => return Some(StreamKey::AllMiniTickers),
        _ => {}
    }
    let (sym, rest) = name.split_once('@')?;
    if sym.is_empty() || !sym.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let pair = *m.pair_by_symbol.get(&sym.to_ascii_uppercase())?;
    let (base, speed) = match rest.split_once('@') {
        None => (rest, None),
        Some((b, "100ms")) => (b, Some(100)),
        Some((b, "1000ms")) => (b, Some(1000)),
        Some(_) => return None,
    };
    let depth_only = |k: StreamKey| {
        if speed.is_some() {
            None
        } else {
            Some(k)
        }
    };
    match base {
        "depth" => Some(StreamKey::Diff(pair, speed.unwrap_or(1000))),
        "depth5" | "depth10" | "depth20" => {
            let n = base["depth".len()..].parse().ok()?;
            Some(StreamKey::Partial(pair, n, speed.unwrap_or(1000)))
        }
        "trade" => depth_only(StreamKey::Trade(pair)),
        "aggTrade" => depth_only(StreamKey::AggTrade(pair)),
        "ticker" => depth_only(StreamKey::Ticker(pair)),
        "miniTicker" => depth_only(StreamKey::MiniTicker(pair)),
        "bookTicker" => depth_only(StreamKey::BookTicker(pair)),
        _ => {
            let i = base.strip_prefix("kline_")?;
            let i = KlineInterval::parse(i).ok()?;
            depth_only(StreamKey::Kline(pair, i))
        }
    }
}

/// One stream payload, shared by every connection subscribed to it.
#[derive(Debug)]
pub struct StreamMsg {
    pub stream: Arc<str>,
    pub data: String,
}

#[derive(Debug, Default)]
struct Kill {
    killed: AtomicBool,
    notify: Notify,
}

impl Kill {
    fn kill(&self) {
        if !self.killed.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }
}

#[derive(Debug, Clone)]
struct ConnHandle {
    tx: mpsc::Sender<Arc<StreamMsg>>,
    kill: Arc<Kill>,
}

#[derive(Debug)]
struct Sub {
    name: Arc<str>,
    key: StreamKey,
    conns: HashMap<u64, ConnHandle>,
}

impl Sub {
    fn send(&self, data: String) {
        let msg = Arc::new(StreamMsg {
            stream: self.name.clone(),
            data,
        });
        for c in self.conns.values() {
            if let Err(mpsc::error::TrySendError::Full(_)) = c.tx.try_send(msg.clone()) {
                c.kill.kill();
            }
        }
    }
}

/// Levels changed during one window of a diff stream.
#[derive(Debug, Default)]
struct DiffAcc {
    first: u64,
    last: u64,
    bids: BTreeMap<u64, u64>,
    asks: BTreeMap<u64, u64>,
}

#[derive(Debug, Default)]
struct HubInner {
    streams: HashMap<Arc<str>, Sub>,
    diff: HashMap<(PairId, Speed), DiffAcc>,
    /// Pairs whose ticker changed (trade or book) since the last second.
    ticker_dirty: HashSet<PairId>,
    ticks: u64,
}

/// Subscriptions and the stream state of every connection.
#[derive(Debug)]
pub struct Hub {
    pub cfg: WsConfig,
    inner: Mutex<HubInner>,
    /// Distinct subscribed stream names (0: nothing to format).
    active: AtomicUsize,
    connections: AtomicUsize,
    next_conn: AtomicU64,
}

/// Why a subscription request failed.
#[derive(Debug, PartialEq, Eq)]
enum SubError {
    TooMany,
}

impl Hub {
    pub fn new(cfg: WsConfig) -> Hub {
        Hub {
            cfg,
            inner: Mutex::new(HubInner::default()),
            active: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
        }
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// (distinct subscribed stream names, subscriptions: stream names
    /// summed over the connections that hold them), for `/metrics`.
    pub fn subscriptions(&self) -> (usize, usize) {
        let g = self.lock();
        let subs = g.streams.values().map(|s| s.conns.len()).sum();
        (g.streams.len(), subs)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscribe(&self, conn: u64, h: &ConnHandle, names: &[(String, StreamKey)]) {
        let mut g = self.lock();
        for (name, key) in names {
            let name: Arc<str> = Arc::from(name.as_str());
            if let StreamKey::Diff(p, s) = key {
                g.diff.entry((*p, *s)).or_default();
            }
            g.streams
                .entry(name.clone())
                .or_insert_with(|| Sub {
                    name,
                    key: *key,
                    conns: HashMap::new(),
                })
                .conns
                .insert(conn, h.clone());
        }
        self.active.store(g.streams.len(), Ordering::Relaxed);
    }

    fn unsubscribe(&self, conn: u64, names: &[String]) {
        let mut g = self.lock();
        for n in names {
            if let Some(s) = g.streams.get_mut(n.as_str()) {
                s.conns.remove(&conn);
                if s.conns.is_empty() {
                    g.streams.remove(n.as_str());
                }
            }
        }
        let wanted: HashSet<(PairId, Speed)> = g
            .streams
            .values()
            .filter_map(|s| match s.key {
                StreamKey::Diff(p, sp) => Some((p, sp)),
                _ => None,
            })
            .collect();
        g.diff.retain(|k, _| wanted.contains(k));
        self.active.store(g.streams.len(), Ordering::Relaxed);
    }

    /// Fold one applied command into the streams (publisher thread, under
    /// the market write lock). Never blocks on a client.
    pub fn on_outcome(&self, m: &Market, o: &Outcome) {
        if self.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        let mut book_pairs: Vec<PairId> = m.level_changes.iter().map(|c| c.0).collect();
        book_pairs.sort_unstable();
        book_pairs.dedup();
        let mut trade_pairs: Vec<PairId> = o
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Trade(t) => Some(t.pair),
                _ => None,
            })
            .collect();
        trade_pairs.sort_unstable();
        trade_pairs.dedup();
        for &(pair, side, price) in &m.level_changes {
            let Some(v) = m.pairs.get(&pair) else {
                continue;
            };
            let book = match side {
                Side::Buy => &v.book.bids,
                Side::Sell => &v.book.asks,
            };
            let qty = book.get(&price).copied().unwrap_or(0);
            for speed in [100, 1000] {
                if let Some(acc) = inner.diff.get_mut(&(pair, speed)) {
                    if acc.first == 0 {
                        acc.first = v.book.update_id;
                    }
                    acc.last = v.book.update_id;
                    match side {
                        Side::Buy => acc.bids.insert(price, qty),
                        Side::Sell => acc.asks.insert(price, qty),
                    };
                }
            }
        }
        inner.ticker_dirty.extend(book_pairs.iter().copied());
        inner.ticker_dirty.extend(trade_pairs.iter().copied());
        if book_pairs.is_empty() && trade_pairs.is_empty() {
            return;
        }
        let event_ms = o.ts_ms;
        for sub in inner.streams.values() {
            match sub.key {
                StreamKey::Trade(p) if trade_pairs.contains(&p) => {
                    let Some(v) = m.pairs.get(&p) else { continue };
                    for e in &o.events {
                        if let Event::Trade(t) = e {
                            if t.pair == p {
                                sub.send(trade_json(m, v, t, event_ms).to_string());
                            }
                        }
                    }
                }
                StreamKey::AggTrade(p) if trade_pairs.contains(&p) => {
                    let Some(v) = m.pairs.get(&p) else { continue };
                    for a in v.agg_trades_of_seq(o.seq) {
                        let pr = &v.pair;
                        sub.send(
                            json!({
                                "e": "aggTrade", "E": event_ms, "s": pr.spec.symbol,
                                "a": a.id, "p": price_str(m, pr, a.price_ticks),
                                "q": qty_str(m, pr, a.qty_units),
                                "f": a.first_trade_id, "l": a.last_trade_id,
                                "T": a.time_ms, "m": a.buyer_is_maker, "M": true,
                            })
                            .to_string(),
                        );
                    }
                }
                StreamKey::Kline(p, i) if trade_pairs.contains(&p) => {
                    let Some(v) = m.pairs.get(&p) else { continue };
                    if let Some(k) = kline_json(m, v, i, event_ms) {
                        sub.send(k.to_string());
                    }
                }
                StreamKey::BookTicker(p) if book_pairs.contains(&p) => {
                    let Some(v) = m.pairs.get(&p) else { continue };
                    sub.send(book_ticker_json(m, v).to_string());
                }
                _ => {}
            }
        }
    }

    /// One 100 ms tick (ticker task, under the market read lock): flush the
    /// 100 ms diffs and partial books, and every tenth tick the 1000 ms
    /// ones and the tickers.
    pub fn tick(&self, m: &Market, now: u64) {
        let mut g = self.lock();
        // Every tenth tick is a second.
        g.ticks = (g.ticks + 1) % 10;
        let second = g.ticks == 0;
        if self.active.load(Ordering::Relaxed) == 0 {
            if second {
                g.ticker_dirty.clear();
            }
            return;
        }
        let inner = &mut *g;
        let due = |s: Speed| s == 100 || second;
        for sub in inner.streams.values() {
            match sub.key {
                StreamKey::Diff(p, s) if due(s) => {
                    let (Some(acc), Some(v)) = (inner.diff.get(&(p, s)), m.pairs.get(&p)) else {
                        continue;
                    };
                    if acc.first == 0 {
                        continue;
                    }
                    let lv = |side: &BTreeMap<u64, u64>| -> Vec<Value> {
                        side.iter()
                            .map(|(p, q)| {
                                json!([price_str(m, &v.pair, *p), qty_str(m, &v.pair, *q)])
                            })
                            .collect()
                    };
                    sub.send(
                        json!({
                            "e": "depthUpdate", "E": now, "s": v.pair.spec.symbol,
                            "U": acc.first, "u": acc.last,
                            "b": lv(&acc.bids), "a": lv(&acc.asks),
                        })
                        .to_string(),
                    );
                }
                StreamKey::Partial(p, n, s) if due(s) => {
                    let Some(v) = m.pairs.get(&p) else { continue };
                    let (bids, asks) = v.book.top(n);
                    let lv = |l: Vec<(u64, u64)>| -> Vec<Value> {
                        l.into_iter()
                            .map(|(p, q)| json!([price_str(m, &v.pair, p), qty_str(m, &v.pair, q)]))
                            .collect()
                    };
                    sub.send(
                        json!({"lastUpdateId": v.book.update_id, "bids": lv(bids), "asks": lv(asks)})
                            .to_string(),
                    );
                }
                StreamKey::Ticker(p) if second && inner.ticker_dirty.contains(&p) => {
                    if let Some(v) = m.pairs.get(&p) {
                        sub.send(ticker_json(m, v, now).to_string());
                    }
                }
                StreamKey::MiniTicker(p) if second && inner.ticker_dirty.contains(&p) => {
                    if let Some(v) = m.pairs.get(&p) {
                        sub.send(mini_ticker_json(m, v, now).to_string());
                    }
                }
                StreamKey::AllTickers | StreamKey::AllMiniTickers
                    if second && !inner.ticker_dirty.is_empty() =>
                {
                    let list: Vec<Value> = m
                        .pairs
                        .values()
                        .filter(|v| inner.ticker_dirty.contains(&v.pair.id))
                        .map(|v| {
                            if sub.key == StreamKey::AllTickers {
                                ticker_json(m, v, now)
                            } else {
                                mini_ticker_json(m, v, now)
                            }
                        })
                        .collect();
                    sub.send(Value::Array(list).to_string());
                }
                _ => {}
            }
        }
        for ((_, s), acc) in inner.diff.iter_mut() {
            if due(*s) {
                *acc = DiffAcc::default();
            }
        }
        if second {
            inner.ticker_dirty.clear();
        }
    }
}

fn trade_json(m: &Market, v: &PairView, t: &engine::Trade, event_ms: u64) -> Value {
    let p = &v.pair;
    let (buyer, seller) = match t.taker_side {
        Side::Buy => (t.taker_order.0, t.maker_order.0),
        Side::Sell => (t.maker_order.0, t.taker_order.0),
    };
    json!({
        "e": "trade", "E": event_ms, "s": p.spec.symbol, "t": t.id.0,
        "p": price_str(m, p, t.price.0), "q": qty_str(m, p, t.qty.0),
        "b": buyer, "a": seller, "T": v.last_trade_ms,
        "m": t.buyer_is_maker(), "M": true,
    })
}

fn kline_json(m: &Market, v: &PairView, i: KlineInterval, event_ms: u64) -> Option<Value> {
    let k = v.kline_series(i).back()?;
    let p = &v.pair;
    let close = i.close_time_ms(k.open_time_ms);
    Some(json!({
        "e": "kline", "E": event_ms, "s": p.spec.symbol,
        "k": {
            "t": k.open_time_ms, "T": close, "s": p.spec.symbol, "i": i.as_str(),
            "f": k.first_trade_id, "L": k.last_trade_id,
            "o": price_str(m, p, k.open_ticks), "c": price_str(m, p, k.close_ticks),
            "h": price_str(m, p, k.high_ticks), "l": price_str(m, p, k.low_ticks),
            "v": qty_str_wide(m, p, k.volume_units), "n": k.trades,
            "x": close < event_ms,
            "q": quote_str_wide(m, p, k.quote_units),
            "V": qty_str_wide(m, p, k.taker_buy_volume_units),
            "Q": quote_str_wide(m, p, k.taker_buy_quote_units),
            "B": "0",
        }
    }))
}

fn book_ticker_json(m: &Market, v: &PairView) -> Value {
    let p = &v.pair;
    let (bid, ask) = (v.book.best_bid(), v.book.best_ask());
    json!({
        "u": v.book.update_id, "s": p.spec.symbol,
        "b": price_str(m, p, bid.map_or(0, |b| b.0)), "B": qty_str(m, p, bid.map_or(0, |b| b.1)),
        "a": price_str(m, p, ask.map_or(0, |a| a.0)), "A": qty_str(m, p, ask.map_or(0, |a| a.1)),
    })
}

fn ticker_json(m: &Market, v: &PairView, now: u64) -> Value {
    let p = &v.pair;
    let t = v.ticker_24h(now);
    let id = |x: Option<u64>| x.map_or(json!(-1), |i| json!(i));
    let (bid, ask) = (v.book.best_bid(), v.book.best_ask());
    let change = i128::from(t.last_ticks) - i128::from(t.open_ticks);
    json!({
        "e": "24hrTicker", "E": now, "s": p.spec.symbol,
        "p": signed_price_str(m, p, change),
        "P": percent_str(t.open_ticks, t.last_ticks),
        "w": quote_str(m, p, vwap_quote_units(t.quote_units, t.volume_units, p.base_scale)),
        "x": price_str(m, p, t.prev_close_ticks),
        "c": price_str(m, p, t.last_ticks),
        "Q": qty_str(m, p, t.last_qty_units),
        "b": price_str(m, p, bid.map_or(0, |b| b.0)), "B": qty_str(m, p, bid.map_or(0, |b| b.1)),
        "a": price_str(m, p, ask.map_or(0, |a| a.0)), "A": qty_str(m, p, ask.map_or(0, |a| a.1)),
        "o": price_str(m, p, t.open_ticks), "h": price_str(m, p, t.high_ticks),
        "l": price_str(m, p, t.low_ticks),
        "v": qty_str_wide(m, p, t.volume_units), "q": quote_str_wide(m, p, t.quote_units),
        "O": t.open_time_ms, "C": t.close_time_ms,
        "F": id(t.first_id), "L": id(t.last_id), "n": t.count,
    })
}

fn mini_ticker_json(m: &Market, v: &PairView, now: u64) -> Value {
    let p = &v.pair;
    let t = v.ticker_24h(now);
    json!({
        "e": "24hrMiniTicker", "E": now, "s": p.spec.symbol,
        "c": price_str(m, p, t.last_ticks), "o": price_str(m, p, t.open_ticks),
        "h": price_str(m, p, t.high_ticks), "l": price_str(m, p, t.low_ticks),
        "v": qty_str_wide(m, p, t.volume_units), "q": quote_str_wide(m, p, t.quote_units),
    })
}

/// Flush the periodic streams every 100 ms until the runtime stops.
pub async fn run_ticker(hub: Arc<Hub>, market: Arc<RwLock<Market>>) {
    let mut iv = tokio::time::interval(TICK);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        iv.tick().await;
        let m = market.read().unwrap_or_else(|e| e.into_inner());
        hub.tick(&m, now_ms());
    }
}

// ---- endpoints ----

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws", get(ws_root))
        .route("/ws/", get(ws_root))
        .route("/ws/{*rest}", get(ws_path))
        .route("/stream", get(ws_combined))
        .route("/stream/", get(ws_combined))
}

async fn ws_root(State(st): State<AppState>, ws: WebSocketUpgrade) -> Response {
    upgrade(st, ws, Vec::new(), false)
}

/// `/ws/<s1>/<s2>`: raw streams when every part is a stream name; anything
/// else (ccxt.pro's `/ws/0`) is an empty connection waiting for SUBSCRIBE.
async fn ws_path(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    // A live listen key opens that user's data stream (userstream.rs).
    if let Some(user) = st.user_streams.lookup(&rest) {
        return crate::userstream::upgrade(st, ws, rest, user);
    }
    let names: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let all_valid = {
        let m = st.market.read().unwrap_or_else(|e| e.into_inner());
        !names.is_empty() && names.iter().all(|n| parse_stream(n, &m).is_some())
    };
    upgrade(st, ws, if all_valid { names } else { Vec::new() }, false)
}

/// `/stream?streams=a/b/c`: combined payloads; unknown names are skipped.
async fn ws_combined(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let mut names = Vec::new();
    for kv in q.as_deref().unwrap_or("").split('&') {
        if let Some(v) = kv.strip_prefix("streams=") {
            let v = v
                .replace("%2F", "/")
                .replace("%2f", "/")
                .replace("%40", "@");
            names.extend(v.split('/').filter(|s| !s.is_empty()).map(str::to_string));
        }
    }
    upgrade(st, ws, names, true)
}

/// Holds one slot of `http.ws_max_connections`.
struct ConnSlot(Arc<Hub>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One slot of `http.ws_max_connections` for another kind of stream
/// connection (user data streams); `None` when none is free.
pub(crate) fn acquire_slot(hub: &Arc<Hub>) -> Option<impl Drop + Send + 'static> {
    let n = hub.connections.fetch_add(1, Ordering::AcqRel);
    let slot = ConnSlot(hub.clone());
    (n < hub.cfg.max_connections).then_some(slot)
}

fn upgrade(st: AppState, ws: WebSocketUpgrade, initial: Vec<String>, combined: bool) -> Response {
    let hub = st.hub.clone();
    let n = hub.connections.fetch_add(1, Ordering::AcqRel);
    let slot = ConnSlot(hub.clone());
    if n >= hub.cfg.max_connections {
        drop(slot);
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"code":-1003,"msg":"Too many WebSocket connections."}"#.into(),
        );
    }
    let market = st.market.clone();
    let users = st.user_streams.clone();
    let closing = st.closing.clone();
    ws.max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            Conn::new(hub, market, users, combined)
                .run(socket, initial, closing)
                .await;
        })
        .into_response()
}

/// The close a stream connection ends with when the server shuts down.
pub(crate) const SHUTTING_DOWN: (u16, &str) = (1001, "server shutting down");

/// Resolves once the server is shutting down (SIGTERM/SIGINT).
pub(crate) async fn until_closing(mut closing: tokio::sync::watch::Receiver<bool>) {
    while !*closing.borrow_and_update() {
        if closing.changed().await.is_err() {
            return;
        }
    }
}

/// One client connection.
struct Conn {
    id: u64,
    hub: Arc<Hub>,
    market: Arc<RwLock<Market>>,
    combined: bool,
    subs: Vec<String>,
    handle: ConnHandle,
    rx: mpsc::Receiver<Arc<StreamMsg>>,
    users: Arc<crate::userstream::UserStreams>,
    /// A listen key subscribed as a stream name (binance-connector's
    /// `user_data`): that user's events on this connection.
    user: Option<crate::userstream::KeySub>,
}

/// The close code and reason a connection ends with.
type Close = Option<(u16, &'static str)>;

/// Most queued stream messages written with one flush.
const MAX_WRITE_BATCH: usize = 64;

/// Write `first` and every message already queued behind it (up to
/// `MAX_WRITE_BATCH`), then flush once: one write, and with TCP_NODELAY
/// one packet, for a burst instead of one per message.
pub(crate) async fn write_queued<T>(
    socket: &mut WebSocket,
    first: T,
    rx: &mut mpsc::Receiver<T>,
    text: impl Fn(&T) -> String,
) -> Result<(), axum::Error> {
    let mut next = Some(first);
    let mut fed = 0;
    while let Some(m) = next.take() {
        socket.feed(Message::Text(text(&m).into())).await?;
        fed += 1;
        if fed < MAX_WRITE_BATCH {
            next = rx.try_recv().ok();
        }
    }
    socket.flush().await
}

/// A stream message as sent: its data, or the combined wrapper
/// `{"stream":..,"data":..}` of `/stream?streams=`.
fn stream_text(combined: bool, stream: &str, data: &str) -> String {
    if combined {
        format!("{{\"stream\":\"{stream}\",\"data\":{data}}}")
    } else {
        data.to_owned()
    }
}

impl Conn {
    fn new(
        hub: Arc<Hub>,
        market: Arc<RwLock<Market>>,
        users: Arc<crate::userstream::UserStreams>,
        combined: bool,
    ) -> Conn {
        let (tx, rx) = mpsc::channel(hub.cfg.send_queue);
        Conn {
            id: hub.next_conn.fetch_add(1, Ordering::Relaxed),
            hub,
            market,
            combined,
            subs: Vec::new(),
            handle: ConnHandle {
                tx,
                kill: Arc::new(Kill::default()),
            },
            rx,
            users,
            user: None,
        }
    }

    async fn run(
        mut self,
        mut socket: WebSocket,
        initial: Vec<String>,
        closing: tokio::sync::watch::Receiver<bool>,
    ) {
        if !initial.is_empty() {
            // Names in the URL: the first `max_subscriptions` count.
            let max = self.hub.cfg.max_subscriptions;
            let _ = self.subscribe(&initial[..initial.len().min(max)]);
        }
        let close = tokio::select! {
            c = self.serve(&mut socket) => c,
            _ = until_closing(closing) => Some(SHUTTING_DOWN),
        };
        self.hub.unsubscribe(self.id, &self.subs);
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            // Closing handshake: send the reason, then read (and drop)
            // until the client's close, so unread client data does not turn
            // our close into a reset that loses the frame.
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                if socket.send(Message::Close(Some(frame))).await.is_ok() {
                    while let Some(Ok(m)) = socket.recv().await {
                        if matches!(m, Message::Close(_)) {
                            break;
                        }
                    }
                }
            })
            .await;
        }
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> Close {
        const SLOW: (u16, &str) = (1008, "slow consumer: send queue full");
        let cfg = self.hub.cfg.clone();
        let kill = self.handle.kill.clone();
        let start = tokio::time::Instant::now();
        let mut ping = tokio::time::interval_at(start + cfg.ping_interval, cfg.ping_interval);
        let mut last_pong = Instant::now();
        let mut window = Instant::now();
        let mut in_window = 0u32;
        loop {
            tokio::select! {
                _ = kill.notify.notified() => return Some(SLOW),
                msg = self.rx.recv() => {
                    let msg = msg?;
                    // Messages already queued behind it leave in the same
                    // write (one flush): with TCP_NODELAY each flush is a
                    // packet, and a burst of stream updates should not be
                    // one packet per message.
                    let combined = self.combined;
                    let write = write_queued(socket, msg, &mut self.rx, |m| stream_text(combined, &m.stream, &m.data));
                    tokio::select! {
                        r = write => if r.is_err() { return None },
                        _ = kill.notify.notified() => return Some(SLOW),
                    }
                }
                ev = crate::userstream::KeySub::next_of(&mut self.user) => {
                    use crate::userstream::KeyEvent;
                    let (data, end) = match ev {
                        KeyEvent::Slow => return Some(SLOW),
                        KeyEvent::Expired(t) => (Arc::<str>::from(t), true),
                        KeyEvent::Event(m) => (m, false),
                    };
                    let text = match &self.user {
                        Some(u) => stream_text(self.combined, u.key(), &data),
                        None => data.to_string(),
                    };
                    if end {
                        self.user = None;
                    }
                    tokio::select! {
                        r = socket.send(Message::Text(text.into())) => if r.is_err() { return None },
                        _ = kill.notify.notified() => return Some(SLOW),
                    }
                }
                _ = ping.tick() => {
                    if last_pong.elapsed() > cfg.pong_timeout {
                        return Some((1001, "pong timeout"));
                    }
                    tokio::select! {
                        r = socket.send(Message::Ping(Bytes::from_static(b"mx"))) => if r.is_err() { return None },
                        _ = kill.notify.notified() => return Some(SLOW),
                    }
                }
                incoming = socket.recv() => {
                    let msg = match incoming {
                        None => return None,
                        Some(Err(e)) => {
                            let e = e.to_string();
                            return if e.contains("too long") || e.contains("too big") || e.contains("Space limit") {
                                Some((1009, "message too big"))
                            } else {
                                None
                            };
                        }
                        Some(Ok(m)) => m,
                    };
                    if window.elapsed() >= Duration::from_secs(1) {
                        window = Instant::now();
                        in_window = 0;
                    }
                    in_window += 1;
                    if in_window > cfg.max_messages_per_sec {
                        return Some((1008, "too many messages per second"));
                    }
                    let reply = match msg {
                        Message::Text(t) => Some(self.request(t.as_str())),
                        Message::Binary(b) => Some(match std::str::from_utf8(&b) {
                            Ok(t) => self.request(t),
                            Err(_) => error_json(3, "Invalid JSON: expected value at line 1 column 1", None),
                        }),
                        Message::Pong(_) => {
                            last_pong = Instant::now();
                            None
                        }
                        Message::Ping(_) => None,
                        Message::Close(_) => return None,
                    };
                    if let Some(reply) = reply {
                        tokio::select! {
                            r = socket.send(Message::Text(reply.into())) => if r.is_err() { return None },
                            _ = kill.notify.notified() => return Some(SLOW),
                        }
                    }
                }
            }
        }
    }

    /// Subscribe to the valid names of `names`; `Err` when the per
    /// connection limit would be exceeded (nothing is subscribed then).
    fn subscribe(&mut self, names: &[String]) -> Result<(), SubError> {
        let parsed: Vec<(String, StreamKey)> = {
            let m = self.market.read().unwrap_or_else(|e| e.into_inner());
            names
                .iter()
                .filter(|n| !self.subs.contains(n))
                .filter_map(|n| parse_stream(n, &m).map(|k| (n.clone(), k)))
                .collect()
        };
        let mut fresh: Vec<(String, StreamKey)> = Vec::with_capacity(parsed.len());
        for (n, k) in parsed {
            if !fresh.iter().any(|(f, _)| *f == n) {
                fresh.push((n, k));
            }
        }
        if self.subs.len() + fresh.len() > self.hub.cfg.max_subscriptions {
            return Err(SubError::TooMany);
        }
        self.hub.subscribe(self.id, &self.handle, &fresh);
        self.subs.extend(fresh.into_iter().map(|(n, _)| n));
        Ok(())
    }

    /// Answer one client request (text frame).
    fn request(&mut self, text: &str) -> String {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return error_json(3, &format!("Invalid JSON: {e}"), None),
        };
        let Value::Object(obj) = v else {
            return error_json(2, "Invalid request: expected a JSON object", None);
        };
        let id = match obj.get("id") {
            Some(Value::Null) => Value::Null,
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n.clone()),
            Some(Value::String(s)) if s.len() <= MAX_ID_LEN && !s.is_empty() => {
                Value::String(s.clone())
            }
            _ => {
                return error_json(
                    2,
                    "Invalid request: request ID must be an unsigned integer",
                    None,
                )
            }
        };
        let method = match obj.get("method") {
            Some(Value::String(m)) => m.as_str(),
            None => {
                return error_json(2, "Invalid request: missing field `method`", Some(&id));
            }
            Some(_) => {
                return error_json(2, "Invalid request: method must be a string", Some(&id));
            }
        };
        let params = obj.get("params");
        let names = || -> Result<Vec<String>, String> {
            match params {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str().map(str::to_string).ok_or_else(|| {
                            error_json(
                                2,
                                "Invalid request: stream names must be strings",
                                Some(&id),
                            )
                        })
                    })
                    .collect(),
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(_) => Err(error_json(
                    2,
                    "Invalid request: params must be an array of stream names",
                    Some(&id),
                )),
            }
        };
        match method {
            "SUBSCRIBE" => {
                let list = match names() {
                    Ok(l) => l,
                    Err(e) => return e,
                };
                // Live listen keys subscribe to that user's data stream.
                let (keys, list): (Vec<String>, Vec<String>) = list
                    .into_iter()
                    .partition(|n| self.users.lookup(n).is_some());
                {
                    let m = self.market.read().unwrap_or_else(|e| e.into_inner());
                    if let Some(bad) = list.iter().find(|n| parse_stream(n, &m).is_none()) {
                        return error_json(
                            2,
                            &format!("Invalid request: unknown stream name `{}`", truncate(bad)),
                            Some(&id),
                        );
                    }
                }
                if let Some(k) = keys.last() {
                    if self.user.as_ref().map(|u| u.key()) != Some(k.as_str()) {
                        let q = self.hub.cfg.send_queue;
                        self.user = crate::userstream::KeySub::open(&self.users, k, q);
                    }
                }
                match self.subscribe(&list) {
                    Ok(()) => result_json(Value::Null, &id),
                    Err(SubError::TooMany) => error_json(
                        2,
                        &format!(
                            "Invalid request: too many subscriptions (at most {} streams per connection)",
                            self.hub.cfg.max_subscriptions
                        ),
                        Some(&id),
                    ),
                }
            }
            "UNSUBSCRIBE" => {
                let list = match names() {
                    Ok(l) => l,
                    Err(e) => return e,
                };
                if self
                    .user
                    .as_ref()
                    .is_some_and(|u| list.iter().any(|n| n == u.key()))
                {
                    self.user = None;
                }
                let gone: Vec<String> = list
                    .into_iter()
                    .filter(|n| self.subs.contains(n))
                    .collect();
                self.hub.unsubscribe(self.id, &gone);
                self.subs.retain(|s| !gone.contains(s));
                result_json(Value::Null, &id)
            }
            "LIST_SUBSCRIPTIONS" => {
                // A subscribed listen key is listed like a stream name.
                let mut all = self.subs.clone();
                all.extend(self.user.as_ref().map(|u| u.key().to_string()));
                result_json(json!(all), &id)
            }
            "SET_PROPERTY" | "GET_PROPERTY" => {
                let p = match params {
                    Some(Value::Array(a)) => a.as_slice(),
                    _ => &[],
                };
                let max = if method == "SET_PROPERTY" { 2 } else { 1 };
                if p.len() > max {
                    return error_json(2, "Invalid request: too many parameters", Some(&id));
                }
                match p.first() {
                    Some(Value::String(s)) if s == "combined" => {}
                    Some(Value::String(_)) => return error_json(0, "Unknown property", Some(&id)),
                    _ => {
                        return error_json(
                            2,
                            "Invalid request: property name must be a string",
                            Some(&id),
                        )
                    }
                }
                if method == "GET_PROPERTY" {
                    return result_json(json!(self.combined), &id);
                }
                match p.get(1) {
                    Some(Value::Bool(b)) => {
                        self.combined = *b;
                        result_json(Value::Null, &id)
                    }
                    _ => error_json(1, "Invalid value type: expected Boolean", Some(&id)),
                }
            }
            other => error_json(
                2,
                &format!(
                    "Invalid request: unknown variant `{}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
                    truncate(other)
                ),
                Some(&id),
            ),
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn result_json(result: Value, id: &Value) -> String {
    json!({"result": result, "id": id}).to_string()
}

/// `{"code","msg"}` plus the request's `id` when it was readable.
fn error_json(code: i64, msg: &str, id: Option<&Value>) -> String {
    match id {
        Some(id) => json!({"code": code, "msg": msg, "id": id}).to_string(),
        None => json!({"code": code, "msg": msg}).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_and_result_shapes() {
        assert_eq!(
            result_json(Value::Null, &json!(1)),
            r#"{"id":1,"result":null}"#
        );
        assert_eq!(
            error_json(3, "Invalid JSON: x", None),
            r#"{"code":3,"msg":"Invalid JSON: x"}"#
        );
        assert_eq!(truncate(&"a".repeat(100)).len(), 64);
    }
}
