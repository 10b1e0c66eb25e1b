//! Binance user data streams over listen keys (user-data-stream.md):
//! `POST/PUT/DELETE /api/v3/userDataStream` (API key only, no signature)
//! and `/ws/<listenKey>` (ws.rs hands a live key's connection here).
//!
//! Listen keys live in memory: one per API key (POST returns the live one),
//! at most [`MAX_KEYS_PER_USER`] per user, expiring `auth.listen_key_ttl_secs`
//! after the last keepalive. A connection on an expired or deleted key gets
//! `{"e":"listenKeyExpired"}` and is closed.
//!
//! Events: the publisher thread (which only sees durable outcomes, in
//! sequence order) calls [`UserStreams::prepare`] before the accounts read
//! model applies the command (so each order's running state is rebuilt
//! event by event from the state before the command), then
//! [`UserStreams::deliver`] once every read model has applied it. Delivery
//! is `try_send` into each connection's bounded queue; a full queue closes
//! that connection (1008, slow consumer) without slowing anyone else.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use engine::{BalanceCause, Event, Order, OrderStatus, Side, UserId};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::accounts::Accounts;
use crate::binance::errors::BinanceError;
use crate::binance::params::Params;
use crate::market::Market;
use crate::pipeline::Outcome;
use crate::rest::{price_str, qty_str, quote_str};
use crate::server::{error_response, json_response, now_ms, AppState};

/// Live listen keys per user (the oldest is dropped beyond this).
pub const MAX_KEYS_PER_USER: usize = 10;
/// Listen key length (Binance: 60 alphanumeric characters).
pub const LISTEN_KEY_LEN: usize = 60;
/// How often a connection checks that its key is still alive.
const KEY_CHECK: Duration = Duration::from_millis(500);
const CLOSE_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct KeyEntry {
    user: UserId,
    api_key: String,
    expires: Instant,
}

/// Set (and notified) when a connection's queue overflowed.
#[derive(Debug, Default)]
pub(crate) struct Kill {
    pub(crate) killed: AtomicBool,
    pub(crate) notify: Notify,
}

#[derive(Debug)]
struct UserConn {
    tx: mpsc::Sender<Arc<str>>,
    kill: Arc<Kill>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<String, KeyEntry>,
    by_api_key: HashMap<String, String>,
    /// Connections per user, by connection id.
    subs: HashMap<UserId, HashMap<u64, UserConn>>,
}

/// Listen keys and the user-stream connections.
#[derive(Debug)]
pub struct UserStreams {
    ttl: Duration,
    inner: Mutex<Inner>,
    /// Open user-stream connections (0: the publisher skips all work).
    active: AtomicUsize,
    next_conn: AtomicU64,
}

/// Messages of one command, per user, ready to deliver.
#[derive(Debug, Default)]
pub struct Prepared(Vec<(UserId, Vec<Arc<str>>)>);

impl UserStreams {
    pub fn new(ttl: Duration) -> UserStreams {
        UserStreams {
            ttl,
            inner: Mutex::new(Inner::default()),
            active: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live key of `api_key`, or a new one (keepalive either way).
    pub fn create(&self, user: UserId, api_key: &str) -> String {
        let now = Instant::now();
        let mut g = self.lock();
        g.keys.retain(|_, e| e.expires > now);
        let inner = &mut *g;
        inner.by_api_key.retain(|_, k| inner.keys.contains_key(k));
        if let Some(k) = g.by_api_key.get(api_key).cloned() {
            if let Some(e) = g.keys.get_mut(&k) {
                e.expires = now + self.ttl;
            }
            return k;
        }
        let mut mine: Vec<(Instant, String)> = g
            .keys
            .iter()
            .filter(|(_, e)| e.user == user)
            .map(|(k, e)| (e.expires, k.clone()))
            .collect();
        mine.sort();
        while mine.len() >= MAX_KEYS_PER_USER {
            let (_, old) = mine.remove(0);
            if let Some(e) = g.keys.remove(&old) {
                g.by_api_key.remove(&e.api_key);
            }
        }
        let key = crate::auth::random_alnum(LISTEN_KEY_LEN);
        g.keys.insert(
            key.clone(),
            KeyEntry {
                user,
                api_key: api_key.to_string(),
                expires: now + self.ttl,
            },
        );
        g.by_api_key.insert(api_key.to_string(), key.clone());
        key
    }

    /// The user of a live key.
    pub fn lookup(&self, key: &str) -> Option<UserId> {
        let g = self.lock();
        g.keys
            .get(key)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.user)
    }

    /// Extend a live key of `user`.
    pub fn keepalive(&self, user: UserId, key: &str) -> bool {
        let mut g = self.lock();
        match g.keys.get_mut(key) {
            Some(e) if e.user == user && e.expires > Instant::now() => {
                e.expires = Instant::now() + self.ttl;
                true
            }
            _ => false,
        }
    }

    /// Delete a live key of `user` (its connections close).
    pub fn delete(&self, user: UserId, key: &str) -> bool {
        let mut g = self.lock();
        match g.keys.get(key) {
            Some(e) if e.user == user && e.expires > Instant::now() => {
                if let Some(e) = g.keys.remove(key) {
                    g.by_api_key.remove(&e.api_key);
                }
                true
            }
            _ => false,
        }
    }

    /// Users with at least one open stream.
    fn watched(&self) -> Vec<UserId> {
        self.lock().subs.keys().copied().collect()
    }

    /// Build the events of one outcome for the users that have a stream
    /// open. Call before `accounts` applies the outcome.
    pub fn prepare(
        &self,
        o: &Outcome,
        market: &RwLock<Market>,
        accounts: &RwLock<Accounts>,
    ) -> Prepared {
        if self.active.load(Ordering::Relaxed) == 0 {
            return Prepared::default();
        }
        let users = self.watched();
        let touches = |u: UserId| users.contains(&u);
        let relevant = o
            .events
            .iter()
            .any(|e| event_user(e).into_iter().any(touches));
        if !relevant {
            return Prepared::default();
        }
        let m = market.read().unwrap_or_else(|e| e.into_inner());
        let acc = accounts.read().unwrap_or_else(|e| e.into_inner());
        build(o, &m, &acc, &users)
    }

    /// Queue prepared events (publisher thread, never waits).
    pub fn deliver(&self, p: Prepared) {
        if p.0.is_empty() {
            return;
        }
        let g = self.lock();
        for (user, msgs) in p.0 {
            let Some(conns) = g.subs.get(&user) else {
                continue;
            };
            for c in conns.values() {
                for msg in &msgs {
                    if c.tx.try_send(msg.clone()).is_err() {
                        if !c.kill.killed.swap(true, Ordering::AcqRel) {
                            c.kill.notify.notify_one();
                        }
                        break;
                    }
                }
            }
        }
    }

    /// A new event queue for `user` (a `/ws/<listenKey>` connection or a
    /// WebSocket API subscription): its id, receiver and overflow flag.
    pub(crate) fn register(
        &self,
        user: UserId,
        queue: usize,
    ) -> (u64, mpsc::Receiver<Arc<str>>, Arc<Kill>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let kill = Arc::new(Kill::default());
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut g = self.lock();
        g.subs.entry(user).or_default().insert(
            id,
            UserConn {
                tx,
                kill: kill.clone(),
            },
        );
        self.active.fetch_add(1, Ordering::AcqRel);
        (id, rx, kill)
    }

    pub(crate) fn unregister(&self, user: UserId, id: u64) {
        let mut g = self.lock();
        if let Some(c) = g.subs.get_mut(&user) {
            if c.remove(&id).is_some() {
                self.active.fetch_sub(1, Ordering::AcqRel);
            }
            if c.is_empty() {
                g.subs.remove(&user);
            }
        }
    }
}

/// The users an event concerns.
fn event_user(e: &Event) -> Vec<UserId> {
    match e {
        Event::Balance(b) => vec![b.user],
        Event::OrderAccepted(a) => vec![a.user],
        Event::Trade(t) => vec![t.maker_user, t.taker_user],
        Event::OrderAmended { user, .. } | Event::OrderDone { user, .. } => vec![*user],
        _ => Vec::new(),
    }
}

fn status_str(s: OrderStatus) -> &'static str {
    s.as_str()
}

/// One `executionReport`.
fn execution_report(
    m: &Market,
    o: &Order,
    ts: u64,
    exec: &str,
    status: &str,
    last: Option<(&engine::Trade, bool)>,
) -> Option<Value> {
    let v = m.pairs.get(&o.pair)?;
    let p = &v.pair;
    let working = !o.kind.is_stop() || o.triggered;
    let (l, lp, n, na, t, maker, y) = match last {
        Some((tr, is_maker)) => {
            let is_buyer = is_maker != (tr.taker_side == Side::Buy);
            let fee = if is_maker { tr.maker_fee } else { tr.taker_fee };
            let (fee_s, asset) = if is_buyer {
                (qty_str(m, p, fee), p.spec.base)
            } else {
                (quote_str(m, p, fee), p.spec.quote)
            };
            let sym = m
                .assets
                .get(&asset)
                .map(|a| Value::String(a.spec.symbol.clone()))
                .unwrap_or(Value::Null);
            (
                qty_str(m, p, tr.qty.0),
                price_str(m, p, tr.price.0),
                fee_s,
                sym,
                tr.id.0 as i64,
                is_maker,
                quote_str(m, p, tr.quote_qty),
            )
        }
        None => (
            qty_str(m, p, 0),
            price_str(m, p, 0),
            "0".to_string(),
            Value::Null,
            -1,
            false,
            quote_str(m, p, 0),
        ),
    };
    let cid = o.client_id.as_str();
    let canceled = exec == "CANCELED";
    let mut ev = json!({
        "e": "executionReport", "E": ts, "s": p.spec.symbol,
        "c": cid, "S": o.side.as_str(), "o": o.kind.as_str(), "f": o.tif.as_str(),
        "q": qty_str(m, p, o.qty.0), "p": price_str(m, p, o.price.0),
        "P": price_str(m, p, o.stop_price.0), "F": qty_str(m, p, 0), "g": -1,
        "C": if canceled { cid } else { "" },
        "x": exec, "X": status, "r": "NONE", "i": o.id.0,
        "l": l, "z": qty_str(m, p, o.filled.0), "L": lp, "n": n, "N": na,
        "T": ts, "t": t, "I": ts, "w": working && o.status.is_open(), "m": maker, "M": false,
        "O": o.created_ms, "Z": quote_str(m, p, o.cum_quote), "Y": y,
        "Q": quote_str(m, p, o.quote_qty), "V": o.stp.as_str(),
    });
    if working {
        ev["W"] = json!(o.working_ms.max(o.created_ms));
    }
    Some(ev)
}

/// All events of one outcome for the watched users, in engine order;
/// `outboundAccountPosition` closes each user's part when balances moved.
fn build(o: &Outcome, m: &Market, acc: &Accounts, users: &[UserId]) -> Prepared {
    let ts = o.ts_ms;
    let watched = |u: UserId| users.contains(&u);
    let mut orders: HashMap<u64, Order> = HashMap::new();
    let mut out: BTreeMap<UserId, Vec<Arc<str>>> = BTreeMap::new();
    let mut moved: BTreeMap<UserId, BTreeMap<engine::AssetId, (u64, u64)>> = BTreeMap::new();
    let mut push = |u: UserId, v: Value| out.entry(u).or_default().push(Arc::from(v.to_string()));
    let known = |orders: &mut HashMap<u64, Order>, user: UserId, id: u64| -> bool {
        if orders.contains_key(&id) {
            return true;
        }
        match acc.user(user).and_then(|a| a.order(id)) {
            Some(r) => {
                orders.insert(id, r.order);
                true
            }
            None => false,
        }
    };
    // Whether the next event about order `id` after index `i` is its FILLED end.
    let filled_next = |i: usize, id: u64| -> bool {
        for e in &o.events[i + 1..] {
            match e {
                Event::Trade(t) if t.maker_order.0 == id || t.taker_order.0 == id => return false,
                Event::OrderDone { order, status, .. } if order.0 == id => {
                    return *status == OrderStatus::Filled
                }
                _ => {}
            }
        }
        false
    };
    for (i, e) in o.events.iter().enumerate() {
        match e {
            Event::OrderAccepted(a) => {
                let ord = a.to_order();
                orders.insert(a.id.0, ord);
                if watched(a.user) {
                    if let Some(v) = execution_report(m, &ord, ts, "NEW", "NEW", None) {
                        push(a.user, v);
                    }
                }
            }
            Event::Trade(t) => {
                for (id, user, filled, is_maker) in [
                    (t.maker_order.0, t.maker_user, t.maker_filled, true),
                    (t.taker_order.0, t.taker_user, t.taker_filled, false),
                ] {
                    if !known(&mut orders, user, id) {
                        continue;
                    }
                    let Some(ord) = orders.get_mut(&id) else {
                        continue;
                    };
                    ord.filled = filled;
                    ord.cum_quote += t.quote_qty;
                    ord.status = if filled_next(i, id) {
                        OrderStatus::Filled
                    } else {
                        OrderStatus::PartiallyFilled
                    };
                    if watched(user) {
                        let ord = *ord;
                        if let Some(v) = execution_report(
                            m,
                            &ord,
                            ts,
                            "TRADE",
                            status_str(ord.status),
                            Some((t, is_maker)),
                        ) {
                            push(user, v);
                        }
                    }
                }
            }
            Event::OrderAmended {
                order, user, qty, ..
            } if known(&mut orders, *user, order.0) => {
                let Some(ord) = orders.get_mut(&order.0) else {
                    continue;
                };
                ord.qty = *qty;
                let ord = *ord;
                if watched(*user) {
                    if let Some(v) =
                        execution_report(m, &ord, ts, "REPLACED", status_str(ord.status), None)
                    {
                        push(*user, v);
                    }
                }
            }
            Event::OrderDone {
                order,
                user,
                status,
                filled,
                cum_quote,
                ..
            } => {
                if !known(&mut orders, *user, order.0) {
                    continue;
                }
                let Some(ord) = orders.get_mut(&order.0) else {
                    continue;
                };
                let was_filled = ord.status == OrderStatus::Filled;
                ord.status = *status;
                ord.filled = *filled;
                ord.cum_quote = *cum_quote;
                let ord = *ord;
                // A FILLED end was already reported by its last TRADE.
                if *status == OrderStatus::Filled && was_filled {
                    continue;
                }
                let exec = match status {
                    OrderStatus::Canceled => "CANCELED",
                    OrderStatus::ExpiredInMatch => "TRADE_PREVENTION",
                    OrderStatus::Filled => "TRADE",
                    _ => "EXPIRED",
                };
                if watched(*user) {
                    if let Some(v) =
                        execution_report(m, &ord, ts, exec, status_str(ord.status), None)
                    {
                        push(*user, v);
                    }
                }
            }
            Event::Balance(b) if watched(b.user) => {
                moved
                    .entry(b.user)
                    .or_default()
                    .insert(b.asset, (b.available_after, b.frozen_after));
                let external = matches!(
                    b.cause,
                    BalanceCause::Deposit(_)
                        | BalanceCause::WithdrawalFreeze(_)
                        | BalanceCause::WithdrawalRelease(_)
                        | BalanceCause::Adjustment
                );
                if external && b.available_after != b.available_before {
                    if let Some(a) = m.assets.get(&b.asset) {
                        let d = a.spec.decimals as u32;
                        let delta = if b.available_after >= b.available_before {
                            engine::decimal::format_units(b.available_after - b.available_before, d)
                        } else {
                            format!(
                                "-{}",
                                engine::decimal::format_units(
                                    b.available_before - b.available_after,
                                    d
                                )
                            )
                        };
                        push(
                            b.user,
                            json!({"e": "balanceUpdate", "E": ts, "a": a.spec.symbol, "d": delta, "T": ts}),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    for (user, assets) in moved {
        let list: Vec<Value> = assets
            .iter()
            .filter_map(|(asset, (f, l))| {
                let a = m.assets.get(asset)?;
                let d = a.spec.decimals as u32;
                Some(json!({
                    "a": a.spec.symbol,
                    "f": engine::decimal::format_units(*f, d),
                    "l": engine::decimal::format_units(*l, d),
                }))
            })
            .collect();
        push(
            user,
            json!({"e": "outboundAccountPosition", "E": ts, "u": ts, "B": list}),
        );
    }
    Prepared(out.into_iter().collect())
}

// ---- REST: /api/v3/userDataStream ----

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/v3/userDataStream",
        post(create_key).put(keepalive).delete(delete_key),
    )
}

/// The user of the request's API key (no signature needed).
fn api_user(st: &AppState, headers: &HeaderMap) -> Result<(UserId, String), BinanceError> {
    api_key_user(
        st,
        headers.get("X-MBX-APIKEY").and_then(|v| v.to_str().ok()),
    )
}

/// The active user of an API key (no signature needed: USER_STREAM).
pub(crate) fn api_key_user(
    st: &AppState,
    key: Option<&str>,
) -> Result<(UserId, String), BinanceError> {
    let key = crate::binance::sign::check_api_key_format(key)?;
    let id = st.identity.read().expect("identity lock");
    let k = id.api_key(key).ok_or_else(BinanceError::rejected_api_key)?;
    let user = k.user;
    if id
        .user(user)
        .is_none_or(|u| u.status != engine::UserStatus::Active)
    {
        return Err(BinanceError::rejected_api_key());
    }
    Ok((user, key.to_string()))
}

fn listen_key_param(q: Option<&str>, body: &[u8]) -> Result<String, BinanceError> {
    let params = Params::parse(q.unwrap_or(""), body)?;
    Ok(params.required_str("listenKey")?.to_string())
}

fn answer(r: Result<Value, BinanceError>) -> Response {
    match r {
        Ok(v) => json_response(StatusCode::OK, v.to_string()),
        Err(e) => error_response(&e),
    }
}

async fn create_key(State(st): State<AppState>, headers: HeaderMap) -> Response {
    answer(
        api_user(&st, &headers)
            .map(|(user, api_key)| json!({"listenKey": st.user_streams.create(user, &api_key)})),
    )
}

async fn keepalive(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    answer((|| {
        let (user, _) = api_user(&st, &headers)?;
        let key = listen_key_param(q.as_deref(), &body)?;
        if st.user_streams.keepalive(user, &key) {
            Ok(json!({}))
        } else {
            Err(BinanceError::invalid_listen_key())
        }
    })())
}

async fn delete_key(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    answer((|| {
        let (user, _) = api_user(&st, &headers)?;
        let key = listen_key_param(q.as_deref(), &body)?;
        if st.user_streams.delete(user, &key) {
            Ok(json!({}))
        } else {
            Err(BinanceError::invalid_listen_key())
        }
    })())
}

// ---- WebSocket: /ws/<listenKey> ----

/// Serve `/ws/<key>` for the live key `key` of `user`.
pub fn upgrade(st: AppState, ws: WebSocketUpgrade, key: String, user: UserId) -> Response {
    let Some(slot) = crate::ws::acquire_slot(&st.hub) else {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"code":-1003,"msg":"Too many WebSocket connections."}"#.into(),
        );
    };
    let streams = st.user_streams.clone();
    let cfg = st.hub.cfg.clone();
    ws.max_message_size(crate::ws::MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(crate::ws::MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |mut socket| async move {
            let _slot = slot;
            let (id, rx, kill) = streams.register(user, cfg.send_queue);
            let close = serve(&streams, &mut socket, &key, rx, &kill, &cfg).await;
            streams.unregister(user, id);
            if let Some((code, reason)) = close {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
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
        })
        .into_response()
}

async fn serve(
    streams: &UserStreams,
    socket: &mut WebSocket,
    key: &str,
    mut rx: mpsc::Receiver<Arc<str>>,
    kill: &Kill,
    cfg: &crate::ws::WsConfig,
) -> Option<(u16, &'static str)> {
    const SLOW: (u16, &str) = (1008, "slow consumer: send queue full");
    let start = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(start + cfg.ping_interval, cfg.ping_interval);
    let mut check = tokio::time::interval_at(start + KEY_CHECK, KEY_CHECK);
    let mut last_pong = Instant::now();
    loop {
        tokio::select! {
            _ = kill.notify.notified() => return Some(SLOW),
            msg = rx.recv() => {
                let msg = msg?;
                tokio::select! {
                    r = socket.send(Message::Text(msg.as_ref().into())) => if r.is_err() { return None },
                    _ = kill.notify.notified() => return Some(SLOW),
                }
            }
            _ = check.tick() => {
                if streams.lookup(key).is_none() {
                    let ev = json!({"e": "listenKeyExpired", "E": now_ms(), "listenKey": key});
                    let _ = tokio::time::timeout(
                        CLOSE_GRACE,
                        socket.send(Message::Text(ev.to_string().into())),
                    )
                    .await;
                    return Some((1000, "listenKey expired"));
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
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(_)) => {}
            },
        }
    }
}
