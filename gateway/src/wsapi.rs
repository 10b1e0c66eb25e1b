//! Binance WebSocket API (web-socket-api.md) at `/ws-api/v3`: requests
//! `{"id","method","params"}` in text frames, replies `{"id","status",
//! "result"|"error","rateLimits"}`, user data events `{"subscriptionId",
//! "event"}`.
//!
//! Every method answers exactly what its REST twin answers (trade.rs,
//! rest.rs build both); signed methods carry `apiKey`, `timestamp` and
//! `signature` in `params`, signed over the params sorted by name
//! (`binance::sign::ws_signing_payload`).
//!
//! Pipelining: a session reads requests while earlier ones are still in
//! flight (up to [`MAX_IN_FLIGHT`]); each request is checked and submitted
//! to the ring at its first poll, and requests are first polled in arrival
//! order, so the engine sees a session's commands in the order they were
//! sent. Replies leave as their commands become durable. When the limit is
//! reached the session stops reading until a reply is out, so a client
//! that floods it only slows itself.
//!
//! Weights count against the IP's REQUEST_WEIGHT like REST (2 for the
//! connection itself); order methods also against the API key's ORDERS
//! limits. User data subscriptions (`userDataStream.subscribe.signature`)
//! take a bounded queue from [`UserStreams`]; a subscription whose queue
//! overflows closes the session as a slow consumer.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use engine::UserId;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::{FutureExt, SinkExt};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Notify};

use crate::binance::errors::BinanceError;
use crate::binance::params::{Params, ValueKind};
use crate::binance::ratelimit::{request_weight, RateLimiter, Usage};
use crate::server::{error_response, json_response, now_ms, AppState};
use crate::trade::{self, Authed, PERM_READ, PERM_TRADE};
use crate::userstream::UserStreams;

/// Requests of one session being executed at once.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Longest string request id.
pub const MAX_ID_LEN: usize = 64;
/// Subscriptions a session may hold at once (Binance: 1,000).
pub const MAX_SUBSCRIPTIONS: usize = 1000;
/// Subscription ids a session may use over its life (Binance: 65,535).
pub const MAX_SUBSCRIPTION_IDS: u32 = 65_535;
/// Events queued for a session from all its subscriptions.
const EVENT_QUEUE: usize = 4096;
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A client that takes longer than this to take one frame (it stopped
/// reading) is disconnected as a slow consumer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// REQUEST_WEIGHT of opening a connection beyond the 1 every HTTP request
/// costs (web-socket-api.md: 2 in all).
const CONNECT_WEIGHT: u64 = 1;

/// Read chunk of a WebSocket API connection: an order-entry client sends
/// bursts of pipelined requests (~330 bytes each), and every chunk is one
/// `recvfrom`. At 100k orders/s over 4 connections, 4 KiB (the stream
/// connections' size) took 35k reads per 4 s, 16 KiB 12.5k, 32 KiB 6.2k.
/// tungstenite zero-fills the chunk before each read attempt (1.5% of the
/// gateway threads at 32 KiB): cheaper than the reads it saves, and a
/// session reading little (a user data stream) is woken per event, far
/// less often than a stream connection with 1,000 peers.
const READ_BUFFER_BYTES: usize = 32 << 10;

pub fn routes() -> Router<AppState> {
    Router::new().route("/ws-api/v3", get(upgrade))
}

async fn upgrade(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = peer.ip();
    if let Err(limited) = st.weights.check_and_add(&ip, CONNECT_WEIGHT, now_ms()) {
        let mut resp = error_response(&limited.error);
        if let Ok(v) = limited.retry_after_secs.to_string().parse() {
            resp.headers_mut().insert("Retry-After", v);
        }
        return resp;
    }
    let Some(slot) = crate::ws::acquire_slot(&st.hub) else {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"code":-1003,"msg":"Too many WebSocket connections."}"#.into(),
        );
    };
    ws.max_message_size(crate::ws::MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(crate::ws::MAX_CLIENT_MESSAGE_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            Session::new(st, ip).run(socket).await;
        })
        .into_response()
}

/// One active user data subscription of a session.
struct Subscription {
    id: u32,
    user: UserId,
    queue: u64,
    forward: tokio::task::JoinHandle<()>,
}

type Reply = Pin<Box<dyn Future<Output = String> + Send>>;

struct Session {
    st: AppState,
    ip: IpAddr,
    subs: Vec<Subscription>,
    next_sub: u32,
    events_tx: mpsc::Sender<String>,
    events_rx: mpsc::Receiver<String>,
    /// Notified when a subscription's queue overflowed.
    slow: Arc<Notify>,
}

/// The close code and reason a session ends with.
type Close = Option<(u16, &'static str)>;

impl Session {
    fn new(st: AppState, ip: IpAddr) -> Session {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Session {
            st,
            ip,
            subs: Vec::new(),
            next_sub: 0,
            events_tx,
            events_rx,
            slow: Arc::new(Notify::new()),
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let close = self.serve(&mut socket).await;
        for s in self.subs.drain(..) {
            s.forward.abort();
            self.st.user_streams.unregister(s.user, s.queue);
        }
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
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> Close {
        const SLOW: (u16, &str) = (1008, "slow consumer: send queue full");
        let cfg = self.st.hub.cfg.clone();
        let start = tokio::time::Instant::now();
        let mut ping = tokio::time::interval_at(start + cfg.ping_interval, cfg.ping_interval);
        let mut last_pong = Instant::now();
        let mut in_flight: FuturesUnordered<Reply> = FuturesUnordered::new();
        // Replies ready together, sent in one write (reused, not one
        // vector per batch).
        let mut batch: Vec<String> = Vec::new();
        let slow = self.slow.clone();
        let mut closing = self.st.closing.clone();
        loop {
            if *closing.borrow_and_update() {
                let ev = format!(
                    "{{\"event\":{{\"e\":\"serverShutdown\",\"E\":{}}}}}",
                    now_ms()
                );
                let _ = send(socket, ev).await;
                return Some(crate::ws::SHUTTING_DOWN);
            }
            tokio::select! {
                r = closing.changed() => {
                    if r.is_err() {
                        return Some(crate::ws::SHUTTING_DOWN);
                    }
                    continue;
                }
                _ = slow.notified() => return Some(SLOW),
                Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                    // Replies that are ready too leave in the same write.
                    batch.push(reply);
                    while let Some(Some(r)) = in_flight.next().now_or_never() {
                        batch.push(r);
                    }
                    if let Err(c) = send_all(socket, batch.drain(..)).await { return c; }
                }
                Some(ev) = self.events_rx.recv() => {
                    if let Err(c) = send(socket, ev).await { return c; }
                }
                _ = ping.tick() => {
                    if last_pong.elapsed() > cfg.pong_timeout {
                        return Some((1001, "pong timeout"));
                    }
                    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Bytes::from_static(b"mx")))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return None,
                        Err(_) => return Some(SLOW),
                    }
                }
                incoming = socket.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                    // The frame's own text, not a copy of it.
                    let (frame_text, lossy);
                    let text: &str = match incoming {
                        None | Some(Ok(Message::Close(_))) => return None,
                        Some(Err(e)) => {
                            let e = e.to_string();
                            return if e.contains("too long") || e.contains("too big") || e.contains("Space limit") {
                                Some((1009, "message too big"))
                            } else {
                                None
                            };
                        }
                        Some(Ok(Message::Pong(_))) => {
                            last_pong = Instant::now();
                            continue;
                        }
                        Some(Ok(Message::Ping(_))) => continue,
                        Some(Ok(Message::Text(t))) => {
                            frame_text = t;
                            frame_text.as_str()
                        }
                        Some(Ok(Message::Binary(b))) => {
                            lossy = String::from_utf8_lossy(&b).into_owned();
                            &lossy
                        }
                    };
                    match self.request(text) {
                        Dispatch::Now(reply) => if let Err(c) = send(socket, reply).await { return c; },
                        Dispatch::Later(fut) => in_flight.push(fut),
                    }
                }
            }
        }
    }

    /// Decode one request; session methods are answered at once, the rest
    /// become a future that is submitted at its first poll.
    fn request(&mut self, text: &str) -> Dispatch {
        let req = match decode(text) {
            Ok(r) => r,
            Err((id, e)) => {
                return Dispatch::Now(error_reply(&id, &e, None, None, Limiters::of(&self.st)))
            }
        };
        let Request {
            id,
            method,
            params: obj,
        } = req;
        let return_limits = !obj
            .iter()
            .any(|m| m == ("returnRateLimits", ValueKind::Json, "false"));
        let params = match Params::from_json(obj) {
            Ok(p) => p,
            Err(e) => {
                return Dispatch::Now(error_reply(&id, &e, None, None, Limiters::of(&self.st)))
            }
        };
        let Some(spec) = method_spec(&method) else {
            return Dispatch::Now(error_reply(
                &id,
                &BinanceError::unsupported_operation(),
                None,
                None,
                Limiters::of(&self.st),
            ));
        };
        let weight = spec.weight(&params);
        // One clock reading for the whole request (weights, timestamp
        // window, order count, generated client order id).
        let now = now_ms();
        let usage = match self.st.weights.check_and_add(&self.ip, weight, now) {
            Ok(u) => u,
            Err(limited) => {
                let data = json!({"retryAfter": now + limited.retry_after_secs * 1000});
                let limits = return_limits.then(|| Limits::weight(limited.usage));
                return Dispatch::Now(error_reply(
                    &id,
                    &limited.error,
                    Some(&data),
                    limits,
                    Limiters::of(&self.st),
                ));
            }
        };
        let limits = return_limits.then(|| Limits::weight(usage));
        match spec.kind {
            Kind::Session => {
                let api_key = params.api_key().map(str::to_owned);
                let r = self.session_method(&method, params, api_key);
                Dispatch::Now(reply(&id, r, limits, Limiters::of(&self.st)))
            }
            Kind::Public(f) => Dispatch::Now(reply(
                &id,
                f(&self.st, &params),
                limits,
                Limiters::of(&self.st),
            )),
            Kind::Klines => {
                let st = self.st.clone();
                Dispatch::Later(Box::pin(async move {
                    let r = crate::rest::klines_json(&st, &params).await;
                    reply(&id, r, limits, Limiters::of(&st))
                }))
            }
            Kind::Signed(need, call) => {
                let st = self.st.clone();
                let a = match trade::authorize_ws(&st, params, need, now) {
                    Ok(a) => a,
                    Err(e) => {
                        return Dispatch::Now(error_reply(&id, &e, None, limits, Limiters::of(&st)))
                    }
                };
                Dispatch::Later(Box::pin(async move {
                    let r = call.run(&st, &a).await;
                    let limits = limits.map(|l| {
                        if call.counts_orders() {
                            l.with_orders(&st.order_limits, &a)
                        } else {
                            l
                        }
                    });
                    let lim = Limiters::of(&st);
                    match r {
                        Ok(v) => ok_reply(&id, &v, limits, lim),
                        Err((e, data)) => error_reply(&id, &e, data.as_ref(), limits, lim),
                    }
                }))
            }
        }
    }

    /// `userDataStream.*` and `session.subscriptions`.
    fn session_method(
        &mut self,
        method: &str,
        params: Params,
        api_key: Option<String>,
    ) -> Result<Value, BinanceError> {
        match method {
            "userDataStream.subscribe.signature" => {
                params.check_unknown(&["timestamp", "recvWindow", "signature"])?;
                let key = api_key.ok_or_else(|| BinanceError::mandatory_param_missing("apiKey"))?;
                crate::binance::sign::check_api_key_format(Some(&key))?;
                let a = trade::authorize(&self.st, &key, params, 0)?;
                self.subscribe(a.user)
            }
            "userDataStream.unsubscribe" => {
                params.check_unknown(&["subscriptionId"])?;
                match params.optional_u64("subscriptionId")? {
                    None => {
                        for s in self.subs.drain(..) {
                            s.forward.abort();
                            self.st.user_streams.unregister(s.user, s.queue);
                        }
                        Ok(json!({}))
                    }
                    Some(id) => {
                        let pos = self
                            .subs
                            .iter()
                            .position(|s| u64::from(s.id) == id)
                            .ok_or_else(subscription_inactive)?;
                        let s = self.subs.remove(pos);
                        s.forward.abort();
                        self.st.user_streams.unregister(s.user, s.queue);
                        Ok(json!({}))
                    }
                }
            }
            "session.subscriptions" => {
                params.check_unknown(&[])?;
                Ok(Value::Array(
                    self.subs
                        .iter()
                        .map(|s| json!({"subscriptionId": s.id}))
                        .collect(),
                ))
            }
            "userDataStream.start" => {
                params.check_unknown(&[])?;
                let (user, key) = crate::userstream::api_key_user(&self.st, api_key.as_deref())?;
                Ok(json!({"listenKey": self.st.user_streams.create(user, &key)}))
            }
            "userDataStream.ping" | "userDataStream.stop" => {
                params.check_unknown(&["listenKey"])?;
                let (user, _) = crate::userstream::api_key_user(&self.st, api_key.as_deref())?;
                let lk = params.required_str("listenKey")?;
                let done = if method == "userDataStream.ping" {
                    self.st.user_streams.keepalive(user, lk)
                } else {
                    self.st.user_streams.delete(user, lk)
                };
                if done {
                    Ok(json!({}))
                } else {
                    Err(BinanceError::invalid_listen_key())
                }
            }
            _ => Err(BinanceError::unsupported_operation()),
        }
    }

    fn subscribe(&mut self, user: UserId) -> Result<Value, BinanceError> {
        if self.subs.iter().any(|s| s.user == user) {
            return Err(BinanceError::new(
                -2035,
                "User Data Stream subscription already active.",
                400,
            ));
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(BinanceError::new(
                -1191,
                format!(
                    "Too many subscriptions. Connection may create up to '{MAX_SUBSCRIPTIONS}' subscriptions at a time."
                ),
                400,
            ));
        }
        if self.next_sub >= MAX_SUBSCRIPTION_IDS {
            return Err(BinanceError::new(
                -2042,
                "Maximum subscription ID reached for this connection.",
                400,
            ));
        }
        let id = self.next_sub;
        self.next_sub += 1;
        let streams: &UserStreams = &self.st.user_streams;
        let (queue, mut rx, kill) = streams.register(user, self.st.hub.cfg.send_queue);
        let tx = self.events_tx.clone();
        let slow = self.slow.clone();
        let forward = tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = rx.recv() => {
                        let Some(m) = m else { return };
                        let ev = format!("{{\"subscriptionId\":{id},\"event\":{m}}}");
                        if tx.try_send(ev).is_err() {
                            slow.notify_one();
                            return;
                        }
                    }
                    _ = kill.notify.notified() => {
                        slow.notify_one();
                        return;
                    }
                }
            }
        });
        self.subs.push(Subscription {
            id,
            user,
            queue,
            forward,
        });
        Ok(json!({ "subscriptionId": id }))
    }
}

/// Send one text frame. `Err` ends the session: `Err(None)` when the
/// client is gone, `Err(Some(close))` when it stopped reading.
async fn send(socket: &mut WebSocket, text: String) -> Result<(), Close> {
    send_all(socket, std::iter::once(text)).await
}

/// Send text frames with one flush (one write for a burst of replies).
async fn send_all(
    socket: &mut WebSocket,
    texts: impl Iterator<Item = String>,
) -> Result<(), Close> {
    let write = async {
        for t in texts {
            socket.feed(Message::Text(t.into())).await?;
        }
        socket.flush().await
    };
    match tokio::time::timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some((1008, "slow consumer: send timed out"))),
    }
}

fn subscription_inactive() -> BinanceError {
    BinanceError::new(-2036, "User Data Stream subscription not active.", 400)
}

enum Dispatch {
    Now(String),
    Later(Reply),
}

type Request<'a> = crate::binance::ws_frame::Frame<'a>;

fn invalid_json(msg: &str) -> BinanceError {
    BinanceError::new(-1135, msg, 400)
}

/// Decode a request frame. On error, the id to answer with (null when it
/// could not be read) and the error. Plain requests take the one-pass
/// decoder; everything else (and every error) the general one below.
fn decode(text: &str) -> Result<Request<'_>, (Value, BinanceError)> {
    match crate::binance::ws_frame::decode_fast(text, MAX_ID_LEN) {
        Some(r) => Ok(r),
        None => decode_value(text),
    }
}

/// The general decoder, through a `serde_json::Value`.
fn decode_value(text: &str) -> Result<Request<'static>, (Value, BinanceError)> {
    let v: Value = serde_json::from_str(text)
        .map_err(|_| (Value::Null, invalid_json("Invalid JSON Request")))?;
    let Value::Object(mut obj) = v else {
        return Err((
            Value::Null,
            invalid_json("Invalid JSON Request; expected an object."),
        ));
    };
    let id = match obj.remove("id") {
        Some(Value::String(s)) if s.len() <= MAX_ID_LEN => Value::String(s),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n),
        None | Some(Value::Null) => Value::Null,
        Some(_) => {
            return Err((
                Value::Null,
                invalid_json(&format!(
                    "Invalid 'id' in JSON request; expected an integer, a string of at most {MAX_ID_LEN} characters, or null."
                )),
            ))
        }
    };
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => {
            return Err((
                id,
                invalid_json("Invalid 'method' in JSON request; expected a string."),
            ))
        }
        None => return Err((id, BinanceError::mandatory_param_missing("method"))),
    };
    let method = method
        .strip_prefix("v3/")
        .unwrap_or(&method)
        .to_string()
        .into();
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err((
                id,
                invalid_json("Invalid 'params' in JSON request; expected an object."),
            ))
        }
    };
    if let Some(k) = obj.keys().next() {
        return Err((
            id,
            invalid_json(&format!("Unknown field '{}' in JSON request.", truncate(k))),
        ));
    }
    Ok(Request {
        id,
        method,
        params: crate::binance::params::json_members(params),
    })
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What a method is and how much it weighs.
struct MethodSpec {
    kind: Kind,
    /// The REST twin (method, path) whose weight rules apply.
    rest: (&'static str, &'static str),
    /// Weight when the REST twin has no rule.
    weight: u64,
}

impl MethodSpec {
    fn weight(&self, params: &Params) -> u64 {
        request_weight(self.rest.0, self.rest.1, params).unwrap_or(self.weight)
    }
}

type PublicFn = fn(&AppState, &Params) -> Result<Value, BinanceError>;

enum Kind {
    /// Handled by the session itself (subscriptions, listen keys).
    Session,
    Public(PublicFn),
    /// `klines`/`uiKlines`: may read Postgres for klines memory dropped.
    Klines,
    Signed(u8, Call),
}

/// The signed methods, all answered by trade.rs.
#[derive(Clone, Copy)]
enum Call {
    Place,
    Test,
    Cancel,
    Replace,
    Status,
    Open,
    CancelAll,
    History,
    Trades,
    Account,
}

/// The result as JSON text, or the error and its `data`.
type CallResult = Result<String, (BinanceError, Option<Value>)>;

impl Call {
    async fn run(self, st: &AppState, a: &Authed) -> CallResult {
        let plain = |r: Result<Value, BinanceError>| {
            r.map(|v| crate::json_text::of_value(&v))
                .map_err(|e| (e, None))
        };
        match self {
            Call::Place => trade::place(st, a).await.map_err(|e| (e, None)),
            Call::Test => plain(trade::test(st, a)),
            Call::Cancel => plain(trade::cancel(st, a).await),
            Call::Replace => trade::replace(st, a)
                .await
                .map(|v| crate::json_text::of_value(&v)),
            Call::Status => plain(trade::status(st, a)),
            Call::Open => plain(trade::open(st, a)),
            Call::CancelAll => plain(trade::cancel_all(st, a).await),
            // Boxed: their futures (Postgres queries) are three times an
            // order's, and every request's future is as large as the
            // largest arm (its whole size is copied when it is boxed).
            Call::History => plain(Box::pin(trade::history(st, a)).await),
            Call::Trades => plain(Box::pin(trade::trades(st, a)).await),
            Call::Account => plain(trade::account_status(st, a)),
        }
    }

    fn counts_orders(self) -> bool {
        matches!(self, Call::Place | Call::Replace)
    }
}

fn method_spec(method: &str) -> Option<MethodSpec> {
    use crate::rest::*;
    let public = |f: PublicFn, path: &'static str, weight: u64| MethodSpec {
        kind: Kind::Public(f),
        rest: ("GET", path),
        weight,
    };
    let signed = |need: u8, call: Call, m: &'static str, path: &'static str| MethodSpec {
        kind: Kind::Signed(need, call),
        rest: (m, path),
        weight: 1,
    };
    let session = |weight: u64| MethodSpec {
        kind: Kind::Session,
        rest: ("", ""),
        weight,
    };
    Some(match method {
        "ping" => public(
            |_, p| p.check_unknown(&[]).map(|_| json!({})),
            "/api/v3/ping",
            1,
        ),
        "time" => public(
            |_, p| {
                p.check_unknown(&[])?;
                Ok(json!({ "serverTime": now_ms() }))
            },
            "/api/v3/time",
            1,
        ),
        "exchangeInfo" => public(exchange_info_json, "/api/v3/exchangeInfo", 20),
        "depth" => public(depth_json, "/api/v3/depth", 5),
        "trades.recent" => public(trades_json, "/api/v3/trades", 25),
        "trades.aggregate" => public(agg_trades_json, "/api/v3/aggTrades", 4),
        "klines" | "uiKlines" => MethodSpec {
            kind: Kind::Klines,
            rest: ("GET", "/api/v3/klines"),
            weight: 2,
        },
        "avgPrice" => public(avg_price_json, "/api/v3/avgPrice", 2),
        "ticker.24hr" => public(ticker_24hr_json, "/api/v3/ticker/24hr", 2),
        "ticker.price" => public(ticker_price_json, "/api/v3/ticker/price", 2),
        "ticker.book" => public(book_ticker_json, "/api/v3/ticker/bookTicker", 2),
        "order.place" => signed(PERM_TRADE, Call::Place, "POST", "/api/v3/order"),
        "order.test" => signed(PERM_TRADE, Call::Test, "POST", "/api/v3/order/test"),
        "order.cancel" => signed(PERM_TRADE, Call::Cancel, "DELETE", "/api/v3/order"),
        "order.cancelReplace" => signed(
            PERM_TRADE,
            Call::Replace,
            "POST",
            "/api/v3/order/cancelReplace",
        ),
        "order.status" => signed(PERM_READ, Call::Status, "GET", "/api/v3/order"),
        "openOrders.status" => signed(PERM_READ, Call::Open, "GET", "/api/v3/openOrders"),
        "openOrders.cancelAll" => {
            signed(PERM_TRADE, Call::CancelAll, "DELETE", "/api/v3/openOrders")
        }
        "allOrders" => signed(PERM_READ, Call::History, "GET", "/api/v3/allOrders"),
        "myTrades" => signed(PERM_READ, Call::Trades, "GET", "/api/v3/myTrades"),
        "account.status" => signed(PERM_READ, Call::Account, "GET", "/api/v3/account"),
        "userDataStream.subscribe.signature"
        | "userDataStream.unsubscribe"
        | "session.subscriptions"
        | "userDataStream.start"
        | "userDataStream.ping"
        | "userDataStream.stop" => session(2),
        _ => return None,
    })
}

/// What a reply's `rateLimits` reports: the REQUEST_WEIGHT usage the
/// request was counted with and, for requests that place orders, the
/// ORDERS usage of its API key. Counts only: the entries are written
/// straight into the reply when it is built, with no text of their own.
#[derive(Debug, Clone, Copy)]
struct Limits {
    weight: Usage,
    orders: Option<Usage>,
}

impl Limits {
    fn weight(weight: Usage) -> Limits {
        Limits {
            weight,
            orders: None,
        }
    }

    /// With the ORDERS entries of the request's API key: the usage its
    /// order was counted with, or (when it never got that far) the
    /// current one.
    fn with_orders(self, l: &RateLimiter<u64>, a: &trade::Authed) -> Limits {
        let usage = match a.order_usage.get() {
            Some(u) => *u,
            None => l.usage(&a.key_id, now_ms()),
        };
        Limits {
            orders: Some(usage),
            ..self
        }
    }

    /// Room for the entries (about 100 bytes each).
    fn text_len(&self) -> usize {
        let n = self.weight.as_slice().len() + self.orders.map_or(0, |o| o.as_slice().len());
        26 + 112 * n
    }
}

/// The limiters whose windows [`Limits`] counts.
#[derive(Clone, Copy)]
struct Limiters<'a> {
    weight: &'a RateLimiter<IpAddr>,
    orders: &'a RateLimiter<u64>,
}

impl<'a> Limiters<'a> {
    fn of(st: &'a AppState) -> Limiters<'a> {
        Limiters {
            weight: &st.weights,
            orders: &st.order_limits,
        }
    }
}

fn reply(
    id: &Value,
    r: Result<Value, BinanceError>,
    limits: Option<Limits>,
    lim: Limiters,
) -> String {
    match r {
        Ok(v) => ok_reply(id, &crate::json_text::of_value(&v), limits, lim),
        Err(e) => error_reply(id, &e, None, limits, lim),
    }
}

/// A success reply; `result` is JSON text.
fn ok_reply(id: &Value, result: &str, limits: Option<Limits>, lim: Limiters) -> String {
    let room = limits.as_ref().map_or(0, Limits::text_len);
    let mut out = String::with_capacity(result.len() + 48 + room);
    out.push_str("{\"id\":");
    push_id(&mut out, id);
    out.push_str(",\"status\":200,\"result\":");
    out.push_str(result);
    push_limits(&mut out, limits, lim);
    out
}

/// A request id as JSON text: integer and string ids (what clients send)
/// without an intermediate `String`; anything else through serde_json.
fn push_id(out: &mut String, id: &Value) {
    match id {
        Value::Number(n) if n.is_u64() => {
            engine::decimal::push_units(out, u128::from(n.as_u64().unwrap_or(0)), 0)
        }
        Value::String(s) => crate::json_text::push_str_lit(out, s),
        v => out.push_str(&serde_json::to_string(v).unwrap_or_default()),
    }
}

fn error_reply(
    id: &Value,
    e: &BinanceError,
    data: Option<&Value>,
    limits: Option<Limits>,
    lim: Limiters,
) -> String {
    let error = match data {
        Some(d) => e.to_json_with_data(d),
        None => e.to_json(),
    };
    let mut out = format!(
        "{{\"id\":{id},\"status\":{},\"error\":{error}",
        e.http_status
    );
    push_limits(&mut out, limits, lim);
    out
}

/// `,"rateLimits":[..]` (when asked for) and the reply's closing brace.
fn push_limits(out: &mut String, limits: Option<Limits>, lim: Limiters) {
    if let Some(l) = limits {
        out.push_str(",\"rateLimits\":[");
        lim.weight.push_rate_limits_json(out, &l.weight);
        if let Some(o) = &l.orders {
            lim.orders.push_rate_limits_json(out, o);
        }
        out.push(']');
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).expect("valid JSON")
    }

    #[test]
    fn request_ids_are_written_as_serde_json_writes_them() {
        for id in [
            json!(0),
            json!(7),
            json!(u64::MAX),
            json!(-5),
            json!(1.5),
            json!(null),
            json!("abc"),
            json!("a\"b\\c\n\u{1}\u{7f}é/"),
        ] {
            let mut out = String::new();
            push_id(&mut out, &id);
            assert_eq!(out, serde_json::to_string(&id).unwrap(), "{id}");
        }
    }

    #[test]
    fn decode_accepts_the_documented_shapes() {
        let r = decode(r#"{"id":"a-1","method":"v3/order.place","params":{"symbol":"X"}}"#)
            .unwrap_or_else(|_| panic!("decodes"));
        assert_eq!(r.id, json!("a-1"));
        assert_eq!(r.method, "order.place");
        assert_eq!(
            r.params.iter().collect::<Vec<_>>(),
            vec![("symbol", ValueKind::Str, "X")]
        );
        let r = decode(r#"{"id":7,"method":"ping"}"#).unwrap_or_else(|_| panic!("decodes"));
        assert_eq!(r.id, json!(7));
        assert!(r.params.is_empty());
        let r = decode(r#"{"id":null,"method":"time","params":null}"#)
            .unwrap_or_else(|_| panic!("decodes"));
        assert_eq!(r.id, Value::Null);
    }

    /// The one-pass decoder answers only where the general one accepts,
    /// and then with the same request; plain requests do take it.
    #[test]
    fn fast_decoder_agrees_with_the_general_one() {
        use crate::binance::ws_frame::decode_fast;
        let plain = [
            r#"{"id":"a-1","method":"v3/order.place","params":{"symbol":"BTCUSDT","side":"BUY","quantity":"0.1","price":1.50,"timestamp":1700000000000,"recvWindow":5000,"newOrderRespType":null,"returnRateLimits":false,"x":true,"y":-0,"z":1e5,"big":18446744073709551615,"neg":-9223372036854775808}}"#,
            r#"{"id":7,"method":"ping"}"#,
            r#" {"method":"time","params":null,"id":null} "#,
            r#"{"id":"\u0041\n","method":"v3\/x","params":{"b\u00e9":"\"q\"","a":"\u00e9t\u00e9"}}"#,
            r#"{"params":{},"method":"depth","id":18446744073709551615}"#,
        ];
        let hostile = [
            "{",
            "[1,2]",
            "\"x\"",
            "null",
            "",
            " ",
            "{}",
            r#"{"id":1.5,"method":"ping"}"#,
            r#"{"id":{"a":1},"method":"ping"}"#,
            r#"{"id":1,"method":5}"#,
            r#"{"id":1}"#,
            r#"{"id":"x","method":"ping","params":[1]}"#,
            r#"{"id":2,"method":"ping","extra":1}"#,
            r#"{"id":2,"id":3,"method":"ping"}"#,
            r#"{"id":null,"id":null,"method":"ping"}"#,
            r#"{"id":2,"method":"ping","method":"time"}"#,
            r#"{"id":2,"method":"ping","params":{"a":1,"a":2}}"#,
            r#"{"id":2,"method":"ping","params":{"a":[1,{"b":2}]}}"#,
            r#"{"id":2,"method":"ping","params":{"a":{"b":null}}}"#,
            r#"{"id":2,"method":"ping","params":{},"params":{}}"#,
            r#"{"id":2,"method":"ping"} trailing"#,
            r#"{"id":2,"method":"ping","params":{"a":1e999}}"#,
            r#"{"id":-1,"method":"ping"}"#,
        ];
        let check = |frame: &str| -> bool {
            match decode_fast(frame, MAX_ID_LEN) {
                Some(fast) => {
                    let general = decode_value(frame).unwrap_or_else(|(_, e)| {
                        panic!("{frame}: fast accepts, general says {}", e.msg)
                    });
                    assert_eq!(fast, general, "{frame}");
                    true
                }
                None => false,
            }
        };
        for f in plain {
            assert!(check(f), "{f} should take the fast path");
        }
        // The method is the frame's own text unless it was escaped.
        fn m(f: &str) -> std::borrow::Cow<'_, str> {
            decode_fast(f, MAX_ID_LEN).expect("plain").method
        }
        assert!(matches!(
            m(plain[0]),
            std::borrow::Cow::Borrowed("order.place")
        ));
        assert!(matches!(m(plain[1]), std::borrow::Cow::Borrowed("ping")));
        assert_eq!(m(plain[3]), "x");
        for f in hostile {
            check(f);
        }
        let long_id = format!(
            r#"{{"id":"{}","method":"ping"}}"#,
            "x".repeat(MAX_ID_LEN + 1)
        );
        assert!(!check(&long_id));
        // Seeded mutations of the plain frames: cut, duplicated or replaced
        // bytes.
        let mut x: u64 = 0x243F_6A88_85A3_08D3;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let pieces = [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "null",
            "1",
            "-",
            ".",
            "e",
            "\\",
            "\"id\"",
            "\"params\"",
            " ",
        ];
        for round in 0..20_000 {
            let base = plain[round % plain.len()];
            let mut bytes = base.as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(bytes.len() + 1);
                match next(3) {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => {
                        let p = pieces[next(pieces.len())].as_bytes();
                        bytes.splice(at..at, p.iter().copied());
                    }
                    _ => {
                        let end = (at + next(8)).min(bytes.len());
                        let seg = bytes[at.min(end)..end].to_vec();
                        bytes.splice(at..at, seg);
                    }
                }
            }
            if let Ok(frame) = std::str::from_utf8(&bytes) {
                check(frame);
            }
        }
    }

    #[test]
    fn decode_rejects_hostile_frames_with_binance_errors() {
        for (frame, code, id) in [
            ("{", -1135, Value::Null),
            ("[1,2]", -1135, Value::Null),
            ("\"x\"", -1135, Value::Null),
            (r#"{"id":1.5,"method":"ping"}"#, -1135, Value::Null),
            (r#"{"id":{"a":1},"method":"ping"}"#, -1135, Value::Null),
            (r#"{"id":1,"method":5}"#, -1135, json!(1)),
            (r#"{"id":1}"#, -1102, json!(1)),
            (
                r#"{"id":"x","method":"ping","params":[1]}"#,
                -1135,
                json!("x"),
            ),
            (r#"{"id":2,"method":"ping","extra":1}"#, -1135, json!(2)),
        ] {
            match decode(frame) {
                Ok(_) => panic!("{frame} accepted"),
                Err((got_id, e)) => {
                    assert_eq!(e.code, code, "{frame}");
                    assert_eq!(got_id, id, "{frame}");
                }
            }
        }
        let long = format!(
            r#"{{"id":"{}","method":"ping"}}"#,
            "a".repeat(MAX_ID_LEN + 1)
        );
        assert!(decode(&long).is_err());
    }

    #[test]
    fn reply_shapes() {
        use crate::binance::ratelimit::LimiterConfig;
        let weight = RateLimiter::<IpAddr>::new(LimiterConfig::binance_request_weight()).unwrap();
        let orders = RateLimiter::<u64>::new(LimiterConfig::binance_orders()).unwrap();
        let lim = Limiters {
            weight: &weight,
            orders: &orders,
        };
        let ok = parse(&ok_reply(&json!(3), r#"{"a":1}"#, None, lim));
        assert_eq!(ok, json!({"id": 3, "status": 200, "result": {"a": 1}}));
        let ip: IpAddr = [127, 0, 0, 1].into();
        let wu = weight.check_and_add(&ip, 7, now_ms()).unwrap();
        let ou = orders.check_and_add(&9, 1, now_ms()).unwrap();
        let entry = |kind: &str, interval: &str, num: u64, limit: u64, count: u64| json!({"rateLimitType": kind, "interval": interval, "intervalNum": num, "limit": limit, "count": count});
        let e = BinanceError::invalid_symbol();
        let err = parse(&error_reply(
            &json!("q"),
            &e,
            None,
            Some(Limits::weight(wu)),
            lim,
        ));
        assert_eq!(
            err,
            json!({"id": "q", "status": 400, "error": {"code": -1121, "msg": "Invalid symbol."},
                   "rateLimits": [entry("REQUEST_WEIGHT", "MINUTE", 1, 6000, 7)]})
        );
        // An order's reply: the weight entries, then the ORDERS ones.
        let both = Limits {
            weight: wu,
            orders: Some(ou),
        };
        let ok = parse(&ok_reply(&json!(4), r#"{"a":1}"#, Some(both), lim));
        assert_eq!(
            ok,
            json!({"id": 4, "status": 200, "result": {"a": 1}, "rateLimits": [
                entry("REQUEST_WEIGHT", "MINUTE", 1, 6000, 7),
                entry("ORDERS", "SECOND", 10, 100, 1),
                entry("ORDERS", "DAY", 1, 200000, 1)]})
        );
        let text = ok_reply(&json!(4), r#"{"a":1}"#, Some(both), lim);
        assert!(text.len() <= text.capacity() && text.capacity() <= 48 + 7 + both.text_len());
        let data = json!({"cancelResult": "FAILURE"});
        let err = parse(&error_reply(&Value::Null, &e, Some(&data), None, lim));
        assert_eq!(err["error"]["data"], data);
        assert_eq!(err["id"], Value::Null);
    }

    #[test]
    fn every_documented_method_is_known() {
        for m in [
            "ping",
            "time",
            "exchangeInfo",
            "depth",
            "trades.recent",
            "trades.aggregate",
            "klines",
            "uiKlines",
            "avgPrice",
            "ticker.24hr",
            "ticker.price",
            "ticker.book",
            "order.place",
            "order.test",
            "order.cancel",
            "order.cancelReplace",
            "order.status",
            "openOrders.status",
            "openOrders.cancelAll",
            "allOrders",
            "myTrades",
            "account.status",
            "userDataStream.subscribe.signature",
            "userDataStream.unsubscribe",
            "session.subscriptions",
            "userDataStream.start",
            "userDataStream.ping",
            "userDataStream.stop",
        ] {
            assert!(method_spec(m).is_some(), "{m}");
        }
        assert!(method_spec("order.nuke").is_none());
    }
}
