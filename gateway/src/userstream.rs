//! Binance user data streams over listen keys (user-data-stream.md):
//! `POST/PUT/DELETE /api/v3/userDataStream` (API key only, no signature)
//! and `/ws/<listenKey>` (ws.rs hands a live key's connection here).
//!
//! Listen keys live in memory: one per API key (POST returns the live one),
//! at most [`MAX_KEYS_PER_USER`] per user, expiring `auth.listen_key_ttl_secs`
//! after the last keepalive. A connection on an expired or deleted key gets
//! `{"e":"listenKeyExpired"}` and is closed. A live key sent as a stream
//! name in `SUBSCRIBE` on `/ws` or `/stream` (binance-connector's
//! `user_data`) gets the same events on that connection (`KeySub`).
//!
//! Events: the publisher thread (which only sees durable outcomes, in
//! sequence order) calls [`UserStreams::prepare`] before the accounts read
//! model applies the command (so each order's running state is rebuilt
//! event by event from the state before the command), then
//! [`UserStreams::deliver`] once every read model has applied it. Delivery
//! is `try_send` into each connection's bounded queue; a full queue closes
//! that connection (1008, slow consumer) without slowing anyone else.

use engine::fxhash::FxHashMap;
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
use engine::{
    BalanceCause, ClientOrderId, Command, Event, Order, OrderId, OrderStatus, Qty, RejectReason,
    Side, StpMode, TimeInForce, UserId,
};
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
    subs: FxHashMap<UserId, FxHashMap<u64, UserConn>>,
}

/// Where live listen keys are kept across restarts: a JSON file in the
/// data directory (mode 0600, replaced atomically), each key encrypted with
/// the server's secret key, so a client's key keeps working after a restart
/// until it expires.
#[derive(Debug)]
struct KeyStore {
    path: std::path::PathBuf,
    cipher: crate::auth::SecretCipher,
    /// Serialises writers so the newest state is the one left on disk.
    write: Mutex<()>,
}

/// The listen-key file's name in the data directory.
pub const LISTEN_KEYS_FILE: &str = "listen_keys.json";
const KEY_AAD: &[u8] = b"mini-exchange listen key";

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredKey {
    /// The key, encrypted (base64).
    key: String,
    user: u64,
    api_key: String,
    /// Wall-clock expiry, ms since the epoch.
    expires_ms: u64,
}

impl KeyStore {
    /// The live keys of the file; an expiry is never later than `ttl` from now.
    fn load(&self, now: Instant, ttl: Duration) -> Vec<(String, KeyEntry)> {
        use base64::Engine as _;
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the listen keys; clients must create new ones");
                return Vec::new();
            }
        };
        let stored: Vec<StoredKey> = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "damaged listen key file ignored; clients must create new ones");
                return Vec::new();
            }
        };
        let wall = now_ms();
        stored
            .into_iter()
            .filter(|k| k.expires_ms > wall)
            .filter_map(|k| {
                let blob = base64::engine::general_purpose::STANDARD
                    .decode(&k.key)
                    .ok()?;
                let key = String::from_utf8(self.cipher.decrypt(&blob, KEY_AAD).ok()?).ok()?;
                let entry = KeyEntry {
                    user: UserId(k.user),
                    api_key: k.api_key,
                    expires: now + Duration::from_millis(k.expires_ms - wall).min(ttl),
                };
                Some((key, entry))
            })
            .collect()
    }

    fn save(&self, keys: &HashMap<String, KeyEntry>) {
        use base64::Engine as _;
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let (now, wall) = (Instant::now(), now_ms());
        let stored: Vec<StoredKey> = keys
            .iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(k, e)| StoredKey {
                key: base64::engine::general_purpose::STANDARD
                    .encode(self.cipher.encrypt(k.as_bytes(), KEY_AAD)),
                user: e.user.0,
                api_key: e.api_key.clone(),
                expires_ms: wall + e.expires.duration_since(now).as_millis() as u64,
            })
            .collect();
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(serde_json::to_string(&stored)?.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot save the listen keys; they will not survive a restart");
        }
    }
}

/// Listen keys and the user-stream connections.
#[derive(Debug)]
pub struct UserStreams {
    ttl: Duration,
    store: Option<KeyStore>,
    inner: Mutex<Inner>,
    /// Open user-stream connections (0: the publisher skips all work).
    active: AtomicUsize,
    next_conn: AtomicU64,
}

/// Messages of one command, per user, ready to deliver.
#[derive(Debug, Default)]
pub struct Prepared(Vec<(UserId, Vec<Arc<str>>)>);

impl UserStreams {
    /// Keys live in memory only (tests, tools).
    pub fn new(ttl: Duration) -> UserStreams {
        UserStreams {
            ttl,
            store: None,
            inner: Mutex::new(Inner::default()),
            active: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
        }
    }

    /// Keys kept in `<data_dir>/listen_keys.json` (encrypted with
    /// `cipher`): the live ones of the previous run are loaded now.
    pub fn persistent(
        ttl: Duration,
        data_dir: &std::path::Path,
        cipher: crate::auth::SecretCipher,
    ) -> UserStreams {
        let store = KeyStore {
            path: data_dir.join(LISTEN_KEYS_FILE),
            cipher,
            write: Mutex::new(()),
        };
        let mut us = UserStreams::new(ttl);
        {
            let mut g = us.lock();
            for (key, e) in store.load(Instant::now(), ttl) {
                g.by_api_key.insert(e.api_key.clone(), key.clone());
                g.keys.insert(key, e);
            }
            if !g.keys.is_empty() {
                tracing::info!(keys = g.keys.len(), "listen keys restored");
            }
        }
        us.store = Some(store);
        us
    }

    /// Write the live keys to the store (if any), newest state last.
    fn save(&self) {
        if let Some(store) = &self.store {
            let _w = store.write.lock().unwrap_or_else(|e| e.into_inner());
            let snapshot: HashMap<String, KeyEntry> = self
                .lock()
                .keys
                .iter()
                .map(|(k, e)| {
                    (
                        k.clone(),
                        KeyEntry {
                            user: e.user,
                            api_key: e.api_key.clone(),
                            expires: e.expires,
                        },
                    )
                })
                .collect();
            // The write ends in an fsync: on a tokio worker, hand the
            // worker's other tasks to another thread while it blocks.
            match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(|| store.save(&snapshot))
                }
                _ => store.save(&snapshot),
            }
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
            drop(g);
            self.save();
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
        drop(g);
        self.save();
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
        let ok = match g.keys.get_mut(key) {
            Some(e) if e.user == user && e.expires > Instant::now() => {
                e.expires = Instant::now() + self.ttl;
                true
            }
            _ => false,
        };
        drop(g);
        if ok {
            self.save();
        }
        ok
    }

    /// Delete a live key of `user` (its connections close).
    pub fn delete(&self, user: UserId, key: &str) -> bool {
        let mut g = self.lock();
        let ok = match g.keys.get(key) {
            Some(e) if e.user == user && e.expires > Instant::now() => {
                if let Some(e) = g.keys.remove(key) {
                    g.by_api_key.remove(&e.api_key);
                }
                true
            }
            _ => false,
        };
        drop(g);
        if ok {
            self.save();
        }
        ok
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
        Event::OrderAmended { user, .. }
        | Event::OrderDone { user, .. }
        | Event::StopTriggered { user, .. } => vec![*user],
        _ => Vec::new(),
    }
}

/// Binance's `r` for an order the engine refused (user-data-stream.md,
/// "Order Reject Reason"); reasons Binance has no name for keep the
/// engine's stable name.
fn reject_reason_str(r: RejectReason) -> &'static str {
    match r {
        RejectReason::InsufficientBalance => "INSUFFICIENT_BALANCES",
        RejectReason::StopWouldTriggerImmediately => "STOP_PRICE_WOULD_TRIGGER_IMMEDIATELY",
        RejectReason::WouldTakeAsMaker => "WOULD_MATCH_IMMEDIATELY",
        other => other.name(),
    }
}

/// Binance's `eR` of an EXPIRED order (enums.md, "Expiry Reasons"). The
/// engine expires an order only at the end of its taker pass: a FOK that
/// cannot fill, an IOC remainder, or a market (or triggered market-stop)
/// order that ran out of book or funds.
fn expiry_reason(o: &Order) -> &'static str {
    if !o.kind.has_limit_price() {
        "INSUFFICIENT_LIQUIDITY"
    } else if o.tif == TimeInForce::Fok {
        "UNFILLED_FOK_ORDER_EXPIRED"
    } else {
        "UNFILLED_IOC_QUANTITY_EXPIRED"
    }
}

/// Execution ids (`I`): unique and stable across restarts, derived from
/// the id the report is about: `8 * id + kind`.
mod exec_kind {
    /// NEW at placement (order id).
    pub const NEW: u64 = 0;
    /// NEW when a stop triggers (order id).
    pub const TRIGGERED: u64 = 1;
    /// The order's end without a trade (order id).
    pub const END: u64 = 2;
    /// TRADE of the maker (trade id).
    pub const MAKER: u64 = 3;
    /// TRADE of the taker (trade id).
    pub const TAKER: u64 = 4;
    /// REPLACED, i.e. amended (command sequence: one amend per command).
    pub const AMENDED: u64 = 5;
    /// REJECTED new part of a cancelReplace (command sequence).
    pub const REJECTED: u64 = 6;
}

fn exec_id(id: u64, kind: u64) -> u64 {
    id.saturating_mul(8).saturating_add(kind)
}

/// A prevented match (self-trade prevention), for the STP fields of the
/// order it expired: `v`, `U`, `A`, `B`, `pl`, `pL`, `pY`.
#[derive(Debug, Clone, Copy)]
struct Prevented {
    /// The expired maker's order id, or the taker's when only the taker
    /// expired (EXPIRE_TAKER): every order expires at most once, so this
    /// identifies the prevented match.
    match_id: u64,
    /// The other order of the prevented match, when known.
    counter: Option<u64>,
    /// Quantity this order lost (its remaining quantity).
    qty: u64,
    /// What `l`, `L`, `Y` would have been without STP.
    exec_qty: u64,
    exec_price: u64,
}

/// What one `executionReport` says besides the order itself.
#[derive(Debug, Clone, Copy)]
struct Report<'a> {
    exec: &'static str,
    status: OrderStatus,
    exec_id: u64,
    /// `w`: the order rests on the book once the command is done.
    on_book: bool,
    /// The fill and whether this order was its maker.
    last: Option<(&'a engine::Trade, bool)>,
    reject: &'static str,
    prevented: Option<Prevented>,
    /// On CANCELED: the cancel's client order id (`c`; the order's own
    /// goes to `C`).
    cancel_cid: Option<ClientOrderId>,
}

impl<'a> Report<'a> {
    fn new(exec: &'static str, status: OrderStatus, exec_id: u64, on_book: bool) -> Report<'a> {
        Report {
            exec,
            status,
            exec_id,
            on_book,
            last: None,
            reject: "NONE",
            prevented: None,
            cancel_cid: None,
        }
    }
}

/// One `executionReport` with every field user-data-stream.md lists for
/// a spot order (decimals as strings, ids and times as numbers), plus the
/// conditional ones that apply: `W` once the order works, `eR` when it
/// expired, the STP fields when it expired in match.
fn execution_report(m: &Market, o: &Order, ts: u64, r: &Report) -> Option<Value> {
    let v = m.pairs.get(&o.pair)?;
    let p = &v.pair;
    let working = (!o.kind.is_stop() || o.triggered) && r.status != OrderStatus::Rejected;
    let (l, lp, n, na, t, maker, y) = match r.last {
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
    // A cancel names itself in `c` and the order in `C` (Binance).
    let (c, orig) = match (r.exec, &r.cancel_cid) {
        ("CANCELED", Some(x)) => (x.as_str(), cid),
        ("CANCELED", None) => (cid, cid),
        _ => (cid, ""),
    };
    let order_id = if r.status == OrderStatus::Rejected {
        -1
    } else {
        o.id.0 as i64
    };
    let mut ev = json!({
        "e": "executionReport", "E": ts, "s": p.spec.symbol,
        "c": c, "S": o.side.as_str(), "o": o.kind.as_str(), "f": o.tif.as_str(),
        "q": qty_str(m, p, o.qty.0), "p": price_str(m, p, o.price.0),
        "P": price_str(m, p, o.stop_price.0), "F": qty_str(m, p, 0), "g": -1,
        "C": orig,
        "x": r.exec, "X": r.status.as_str(), "r": r.reject, "i": order_id,
        "l": l, "z": qty_str(m, p, o.filled.0), "L": lp, "n": n, "N": na,
        "T": ts, "t": t, "I": r.exec_id, "w": r.on_book, "m": maker, "M": false,
        "O": o.created_ms, "Z": quote_str(m, p, o.cum_quote), "Y": y,
        "Q": quote_str(m, p, o.quote_qty), "V": o.stp.as_str(),
    });
    if working {
        ev["W"] = json!(o.working_ms.max(o.created_ms));
    }
    if r.status == OrderStatus::Expired {
        ev["eR"] = json!(expiry_reason(o));
    }
    if let Some(pm) = r.prevented {
        let py = p.notional(pm.exec_qty, pm.exec_price).unwrap_or(0);
        ev["u"] = json!(-1);
        ev["v"] = json!(pm.match_id);
        ev["U"] = json!(pm.counter.map_or(-1, |c| c as i64));
        ev["Cs"] = json!(p.spec.symbol);
        ev["A"] = json!(qty_str(m, p, pm.qty));
        ev["B"] = json!(qty_str(m, p, pm.qty));
        ev["pl"] = json!(qty_str(m, p, pm.exec_qty));
        ev["pL"] = json!(price_str(m, p, pm.exec_price));
        ev["pY"] = json!(quote_str(m, p, py));
    }
    Some(ev)
}

/// Base units `taker` would have taken at `price` (its remaining
/// quantity, or what its remaining quote amount buys or sells).
fn taker_want(pair: &engine::Pair, taker: &Order, price: u64) -> u64 {
    if taker.quote_qty > 0 {
        pair.affordable_qty(taker.quote_qty.saturating_sub(taker.cum_quote), price)
    } else {
        taker.qty.0.saturating_sub(taker.filled.0)
    }
}

/// The resting order an EXPIRE_TAKER taker ran into: the first order of
/// its own user, in price-time priority, on the other side of the book
/// within the taker's limit. (The engine's event for the taker does not
/// name it; it is always the taker's own order, so the user's open orders
/// as of this event decide.)
fn stp_counter(acc: &Accounts, orders: &FxHashMap<u64, Order>, taker: &Order) -> Option<Order> {
    let crosses = |o: &Order| {
        o.pair == taker.pair
            && o.side != taker.side
            && o.status.is_open()
            && (!o.kind.is_stop() || o.triggered)
            && (!taker.kind.has_limit_price()
                || match taker.side {
                    Side::Buy => o.price <= taker.price,
                    Side::Sell => o.price >= taker.price,
                })
    };
    let from_acc = acc
        .user(taker.user)
        .into_iter()
        .flat_map(|a| a.open_orders().map(|r| r.order))
        .filter(|o| !orders.contains_key(&o.id.0));
    let candidates = from_acc
        .chain(orders.values().copied().filter(|o| o.user == taker.user))
        .filter(|o| o.id != taker.id && crosses(o));
    // Best price first, then the earliest to start working.
    candidates.min_by_key(|o| {
        let price_rank = match o.side {
            Side::Buy => u64::MAX - o.price.0,
            Side::Sell => o.price.0,
        };
        (price_rank, o.working_ms.max(o.created_ms), o.id.0)
    })
}

/// All events of one outcome for the watched users, in engine order;
/// `outboundAccountPosition` closes each user's part when balances moved.
///
/// Order lifecycle as Binance reports it: NEW at placement (`w` false for
/// a stop waiting for its trigger, no `W`); when a stop triggers, NEW again
/// with `W` = the trigger time, then the triggered order's TRADEs and end;
/// TRADE per fill (X = PARTIALLY_FILLED or FILLED); CANCELED, EXPIRED
/// (with `eR`), TRADE_PREVENTION (X = EXPIRED_IN_MATCH, with the STP
/// fields); REPLACED for an amend; REJECTED (with `r`) for the new order
/// of a cancelReplace whose cancel succeeded. `w` says whether the order
/// rests on the book once the command is done.
fn build(o: &Outcome, m: &Market, acc: &Accounts, users: &[UserId]) -> Prepared {
    let ts = o.ts_ms;
    let watched = |u: UserId| users.contains(&u);
    let mut orders: FxHashMap<u64, Order> = FxHashMap::default();
    let mut out: BTreeMap<UserId, Vec<Arc<str>>> = BTreeMap::new();
    let mut moved: BTreeMap<UserId, BTreeMap<engine::AssetId, (u64, u64)>> = BTreeMap::new();
    let mut push = |u: UserId, v: Value| out.entry(u).or_default().push(Arc::from(v.to_string()));
    let known = |orders: &mut FxHashMap<u64, Order>, user: UserId, id: u64| -> bool {
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
    // Where each order ends within this command and its last fill: an
    // order's last TRADE says FILLED when its end is FILLED; an order
    // that ends here is not on the book afterwards.
    let mut done_at: FxHashMap<u64, OrderStatus> = FxHashMap::default();
    let mut last_trade: FxHashMap<u64, usize> = FxHashMap::default();
    for (i, e) in o.events.iter().enumerate() {
        match e {
            Event::Trade(t) => {
                last_trade.insert(t.maker_order.0, i);
                last_trade.insert(t.taker_order.0, i);
            }
            Event::OrderDone { order, status, .. } => {
                done_at.insert(order.0, *status);
            }
            _ => {}
        }
    }
    let on_book = |ord: &Order| -> bool {
        (!ord.kind.is_stop() || ord.triggered) && !done_at.contains_key(&ord.id.0)
    };
    // The new-order part of a cancelReplace that the engine refused after
    // the cancel went through: Binance reports it as REJECTED.
    // Risk events come after everything else (also after a refusal they
    // caused): the command's own last event is the last other one.
    let last_index = o
        .events
        .iter()
        .rposition(|e| !matches!(e, Event::RiskEventRaised(_)))
        .unwrap_or(0);
    let rejected_new = match (&o.command, o.events.get(last_index)) {
        (Command::CancelReplace { new, .. }, Some(Event::Rejected { reason }))
            if o.events.iter().any(|e| {
                matches!(e, Event::OrderDone { user, status: OrderStatus::Canceled, .. } if *user == new.user)
            }) =>
        {
            Some((new, *reason))
        }
        _ => None,
    };
    // The order working as taker, and the last maker it expired by STP.
    let mut taker: Option<u64> = None;
    let mut stp_maker: Option<(u64, u64, u64)> = None; // (id, price, remaining)
    for (i, e) in o.events.iter().enumerate() {
        match e {
            Event::OrderAccepted(a) => {
                let ord = a.to_order();
                if !ord.kind.is_stop() {
                    taker = Some(a.id.0);
                    stp_maker = None;
                }
                if watched(a.user) {
                    orders.insert(a.id.0, ord);
                    let r = Report::new(
                        "NEW",
                        OrderStatus::New,
                        exec_id(a.id.0, exec_kind::NEW),
                        on_book(&ord),
                    );
                    if let Some(v) = execution_report(m, &ord, ts, &r) {
                        push(a.user, v);
                    }
                }
            }
            Event::StopTriggered { order, user, .. } => {
                taker = Some(order.0);
                stp_maker = None;
                if !watched(*user) || !known(&mut orders, *user, order.0) {
                    continue;
                }
                let Some(ord) = orders.get_mut(&order.0) else {
                    continue;
                };
                ord.triggered = true;
                ord.working_ms = ts;
                let ord = *ord;
                let r = Report::new(
                    "NEW",
                    ord.status,
                    exec_id(order.0, exec_kind::TRIGGERED),
                    on_book(&ord),
                );
                if let Some(v) = execution_report(m, &ord, ts, &r) {
                    push(*user, v);
                }
            }
            Event::Trade(t) => {
                for (id, user, filled, is_maker) in [
                    (t.maker_order.0, t.maker_user, t.maker_filled, true),
                    (t.taker_order.0, t.taker_user, t.taker_filled, false),
                ] {
                    if !watched(user) || !known(&mut orders, user, id) {
                        continue;
                    }
                    let Some(ord) = orders.get_mut(&id) else {
                        continue;
                    };
                    ord.filled = filled;
                    ord.cum_quote += t.quote_qty;
                    let ends_filled = done_at.get(&id) == Some(&OrderStatus::Filled)
                        && last_trade.get(&id) == Some(&i);
                    ord.status = if ends_filled {
                        OrderStatus::Filled
                    } else {
                        OrderStatus::PartiallyFilled
                    };
                    let ord = *ord;
                    let kind = if is_maker {
                        exec_kind::MAKER
                    } else {
                        exec_kind::TAKER
                    };
                    let mut r =
                        Report::new("TRADE", ord.status, exec_id(t.id.0, kind), on_book(&ord));
                    r.last = Some((t, is_maker));
                    if let Some(v) = execution_report(m, &ord, ts, &r) {
                        push(user, v);
                    }
                }
            }
            Event::OrderAmended {
                order, user, qty, ..
            } => {
                if !watched(*user) || !known(&mut orders, *user, order.0) {
                    continue;
                }
                let Some(ord) = orders.get_mut(&order.0) else {
                    continue;
                };
                ord.qty = *qty;
                let ord = *ord;
                let r = Report::new(
                    "REPLACED",
                    ord.status,
                    exec_id(o.seq, exec_kind::AMENDED),
                    on_book(&ord),
                );
                if let Some(v) = execution_report(m, &ord, ts, &r) {
                    push(*user, v);
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
                let id = order.0;
                let is_taker = taker == Some(id);
                // STP is between orders of one user: an unwatched maker
                // never has a watched counter order.
                if !watched(*user) || !known(&mut orders, *user, id) {
                    continue;
                }
                let Some(before) = orders.get(&id).copied() else {
                    continue;
                };
                let mut prevented = None;
                if *status == OrderStatus::ExpiredInMatch {
                    let pair = m.pairs.get(&before.pair).map(|v| &v.pair);
                    let remaining = before.qty.0.saturating_sub(before.filled.0);
                    if is_taker {
                        // EXPIRE_BOTH: the maker expired just before;
                        // EXPIRE_TAKER: the taker's own resting order.
                        let counter = match stp_maker {
                            Some((mid, price, rem)) if before.stp == StpMode::ExpireBoth => {
                                Some((mid, price, rem, mid))
                            }
                            _ => stp_counter(acc, &orders, &before).map(|c| {
                                (c.id.0, c.price.0, c.qty.0.saturating_sub(c.filled.0), id)
                            }),
                        };
                        let (counter_id, price, counter_rem, match_id) =
                            counter.map_or((None, 0, 0, id), |(c, p, r, mid)| (Some(c), p, r, mid));
                        let want = pair.map_or(0, |p| taker_want(p, &before, price));
                        let exec_qty = if counter_rem > 0 {
                            want.min(counter_rem)
                        } else {
                            want
                        };
                        prevented = Some(Prevented {
                            match_id,
                            counter: counter_id,
                            qty: if before.quote_qty > 0 {
                                exec_qty
                            } else {
                                remaining
                            },
                            exec_qty,
                            exec_price: price,
                        });
                    } else {
                        let taker_ord = taker.and_then(|t| orders.get(&t).copied());
                        let want = match (pair, taker_ord) {
                            (Some(p), Some(t)) => taker_want(p, &t, before.price.0),
                            _ => remaining,
                        };
                        stp_maker = Some((id, before.price.0, remaining));
                        prevented = Some(Prevented {
                            match_id: id,
                            counter: taker,
                            qty: remaining,
                            exec_qty: want.min(remaining),
                            exec_price: before.price.0,
                        });
                    }
                }
                let Some(ord) = orders.get_mut(&id) else {
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
                let mut r = Report::new(exec, ord.status, exec_id(id, exec_kind::END), false);
                r.prevented = prevented;
                if *status == OrderStatus::Canceled {
                    r.cancel_cid = Some(o.cancel_client_id_for(OrderId(id)));
                }
                if let Some(v) = execution_report(m, &ord, ts, &r) {
                    push(*user, v);
                }
            }
            Event::Rejected { .. } if i == last_index => {
                let Some((new, reason)) = rejected_new else {
                    continue;
                };
                if !watched(new.user) {
                    continue;
                }
                let ord = Order {
                    id: OrderId(0),
                    user: new.user,
                    pair: new.pair,
                    side: new.side,
                    kind: new.kind,
                    tif: new.tif,
                    stp: new.stp,
                    status: OrderStatus::Rejected,
                    price: new.price,
                    stop_price: new.stop_price,
                    qty: new.qty,
                    filled: Qty(0),
                    quote_qty: new.quote_qty,
                    cum_quote: 0,
                    frozen: 0,
                    client_id: new.client_id,
                    created_ms: ts,
                    working_ms: 0,
                    triggered: false,
                };
                let mut r = Report::new(
                    "REJECTED",
                    OrderStatus::Rejected,
                    exec_id(o.seq, exec_kind::REJECTED),
                    false,
                );
                r.reject = reject_reason_str(reason);
                if let Some(v) = execution_report(m, &ord, ts, &r) {
                    push(new.user, v);
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
    let closing = st.closing.clone();
    ws.max_message_size(crate::ws::MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(crate::ws::MAX_CLIENT_MESSAGE_BYTES)
        .read_buffer_size(crate::ws::READ_BUFFER_BYTES)
        .on_upgrade(move |mut socket| async move {
            let _slot = slot;
            let (id, rx, kill) = streams.register(user, cfg.send_queue);
            let close = tokio::select! {
                c = serve(&streams, &mut socket, &key, rx, &kill, &cfg) => c,
                _ = crate::ws::until_closing(closing) => Some(crate::ws::SHUTTING_DOWN),
            };
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
                // A fill's executionReport and account position leave together.
                let write = crate::ws::write_queued(socket, msg, &mut rx, |m| m.to_string());
                tokio::select! {
                    r = write => if r.is_err() { return None },
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

// ---- A listen key subscribed on a market-stream connection ----

/// What a [`KeySub`] yields.
#[derive(Debug)]
pub(crate) enum KeyEvent {
    /// One event of the user's stream.
    Event(Arc<str>),
    /// The key expired or was deleted: send this `listenKeyExpired`; the
    /// subscription has ended.
    Expired(String),
    /// The queue overflowed: close the connection as a slow consumer.
    Slow,
}

/// A listen key given as a stream name to `SUBSCRIBE` on `/ws` or
/// `/stream` (what binance-connector's `user_data(listen_key)` sends):
/// the user's events arrive on that market-stream connection, through
/// the same bounded queue as `/ws/<listenKey>`. Dropping it unregisters.
#[derive(Debug)]
pub(crate) struct KeySub {
    streams: Arc<UserStreams>,
    user: UserId,
    key: String,
    id: u64,
    rx: mpsc::Receiver<Arc<str>>,
    kill: Arc<Kill>,
    check: tokio::time::Interval,
}

impl KeySub {
    /// Subscribe to the live key `key` (None: not a live listen key).
    pub(crate) fn open(streams: &Arc<UserStreams>, key: &str, queue: usize) -> Option<KeySub> {
        let user = streams.lookup(key)?;
        let (id, rx, kill) = streams.register(user, queue);
        let start = tokio::time::Instant::now();
        Some(KeySub {
            streams: streams.clone(),
            user,
            key: key.to_string(),
            id,
            rx,
            kill,
            check: tokio::time::interval_at(start + KEY_CHECK, KEY_CHECK),
        })
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The next event (cancel safe).
    pub(crate) async fn next(&mut self) -> KeyEvent {
        loop {
            if self.kill.killed.load(Ordering::Acquire) {
                return KeyEvent::Slow;
            }
            tokio::select! {
                _ = self.kill.notify.notified() => return KeyEvent::Slow,
                m = self.rx.recv() => match m {
                    Some(m) => return KeyEvent::Event(m),
                    // Unregistered under us: the subscription is over.
                    None => return self.expired(),
                },
                _ = self.check.tick() => {
                    if self.streams.lookup(&self.key).is_none() {
                        return self.expired();
                    }
                }
            }
        }
    }

    fn expired(&self) -> KeyEvent {
        let ev = json!({"e": "listenKeyExpired", "E": now_ms(), "listenKey": self.key});
        KeyEvent::Expired(ev.to_string())
    }

    /// [`KeySub::next`] of an optional subscription (pending when none).
    pub(crate) async fn next_of(sub: &mut Option<KeySub>) -> KeyEvent {
        match sub {
            Some(s) => s.next().await,
            None => std::future::pending().await,
        }
    }
}

impl Drop for KeySub {
    fn drop(&mut self) {
        self.streams.unregister(self.user, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SecretCipher;

    const TTL: Duration = Duration::from_secs(3600);

    #[test]
    fn stored_keys_come_back_and_bad_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cipher = SecretCipher::new(&[7; 32]);
        let a = UserStreams::persistent(TTL, dir.path(), cipher.clone());
        let k1 = a.create(UserId(1), "api-1");
        let k2 = a.create(UserId(2), "api-2");
        assert!(a.delete(UserId(2), &k2));
        let b = UserStreams::persistent(TTL, dir.path(), cipher.clone());
        assert_eq!(b.lookup(&k1), Some(UserId(1)));
        assert_eq!(b.lookup(&k2), None);
        assert_eq!(b.create(UserId(1), "api-1"), k1);
        // Another server key cannot read them: nothing is restored.
        let other = UserStreams::persistent(TTL, dir.path(), SecretCipher::new(&[8; 32]));
        assert_eq!(other.lookup(&k1), None);
        // Damaged, truncated, hostile files: ignored, never a panic.
        let path = dir.path().join(LISTEN_KEYS_FILE);
        let good = std::fs::read_to_string(&path).unwrap();
        for bad in [
            "".to_string(),
            "{".to_string(),
            "[{\"key\":1}]".to_string(),
            good[..good.len() / 2].to_string(),
            "[{\"key\":\"!!!\",\"user\":1,\"api_key\":\"a\",\"expires_ms\":18446744073709551615}]"
                .to_string(),
        ] {
            std::fs::write(&path, bad).unwrap();
            let c = UserStreams::persistent(TTL, dir.path(), cipher.clone());
            assert_eq!(c.lookup(&k1), None);
        }
        // An expiry far in the future is capped at the TTL, not trusted.
        let mut v: Value = serde_json::from_str(&good).unwrap();
        v[0]["expires_ms"] = json!(u64::MAX);
        std::fs::write(&path, v.to_string()).unwrap();
        let c = UserStreams::persistent(TTL, dir.path(), cipher.clone());
        assert_eq!(c.lookup(&k1), Some(UserId(1)));
        let g = c.lock();
        assert!(g.keys[&k1].expires <= Instant::now() + TTL);
    }

    #[test]
    fn expired_keys_are_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        let cipher = SecretCipher::new(&[7; 32]);
        let a = UserStreams::persistent(Duration::from_millis(1), dir.path(), cipher.clone());
        let k = a.create(UserId(1), "api-1");
        std::thread::sleep(Duration::from_millis(20));
        let b = UserStreams::persistent(TTL, dir.path(), cipher);
        assert_eq!(b.lookup(&k), None);
    }
}
