//! In-app notifications on the native API (API.md "Native API":
//! `GET notifications`, `POST notifications/webhook`, admin "notification
//! templates"), their read model and webhook delivery.
//!
//! | route | permission | |
//! |---|---|---|
//! | `GET /api/v1/notifications?unread=&limit=` | `notifications:read` | the caller's notifications, newest first, and the unread count |
//! | `POST /api/v1/notifications/{id}/read` | `notifications:read` | mark one of the caller's notifications read (idempotent) |
//! | `GET /api/v1/notifications/webhook` | `notifications:read` | the caller's webhook URL (or null) |
//! | `POST /api/v1/notifications/webhook` | `notifications:read` | {url}: register the caller's webhook |
//! | `DELETE /api/v1/notifications/webhook` | `notifications:read` | remove it |
//! | `GET /api/v1/admin/notifications/templates` | `notifications:read` | every template with its current text and the placeholders it supports |
//! | `PUT /api/v1/admin/notifications/templates/{name}` | `notifications:write` | {subject?, content?, is_active?}: edit a template |
//!
//! The notifications themselves are not journaled: they are a pure function
//! of the journal (`persister::notify::derive`, shared with the persister's
//! `notifications` rows), so the [`NotificationsView`] rebuilds them at
//! start by the same replay that rebuilds the history read models, and the
//! publisher derives each new record's (`notify::derive_drafts`: an order's
//! end under its built-in text is rendered when it is read, not for every
//! fill). What the *user* changes is
//! journaled, through two small engine commands: `MarkNotificationsRead`
//! (read marks survive restarts and reach Postgres as status READ) and
//! `SetNotificationWebhook`. The engine keeps no notification state for
//! those (it checks the user and the bounds); this module checks ownership
//! and the URL first, so every bad request is a 4xx that changes nothing.
//!
//! Template edits are journaled too (`SetNotificationTemplate`, kept as
//! engine state so they survive snapshots): this module checks that the
//! template exists, the lengths, and that the new text uses only the
//! placeholders the template supports (`notify::check_placeholders`); the
//! view's catalog follows the edit's event, so every notification of a
//! later record, here and in Postgres, renders the new text.
//!
//! Webhooks: the publisher only `try_send`s each new notification of a user
//! with a webhook onto a bounded queue (dropped, counted and logged when
//! full: the publisher never waits); a background task POSTs it as JSON with
//! a timeout and bounded retries. Addresses are resolved and checked before
//! connecting (to the checked address, so DNS cannot swap it): loopback,
//! private, link-local, CGNAT, multicast and other non-public addresses are
//! refused unless `http.webhook_allow_private` is set. Redirects are not
//! followed. https URLs are delivered over TLS ([`tls`]: rustls, certificates
//! verified against the compiled-in Mozilla roots plus
//! `http.webhook_extra_ca_file`) on the same vetted connection, with the
//! same request, timeout and retries; a certificate that does not verify is
//! a failed attempt like any other.

use crate::bounded::History;
use engine::fxhash::FxHashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::Router;
use engine::{
    Command, Engine, Event, NotificationTemplate, UserId, NOTIFY_TEMPLATE_CONTENT_MAX_LEN,
    NOTIFY_TEMPLATE_SUBJECT_MAX_LEN, NOTIFY_WEBHOOK_MAX_LEN,
};
use persister::notify::{self, Catalog, CatalogView, Draft};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::native::{
    authenticate, check, codes, execute, parse, query, reply, require, u64_param, NativeError, Res,
};
use crate::server::AppState;

pub mod tls;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/notifications", get(list_own))
        .route("/api/v1/notifications/{id}/read", post(mark_read))
        .route(
            "/api/v1/notifications/webhook",
            post(set_webhook).get(get_webhook).delete(delete_webhook),
        )
        .route("/api/v1/admin/notifications/templates", get(templates))
        .route(
            "/api/v1/admin/notifications/templates/{name}",
            put(set_template),
        )
}

/// Notifications kept per user (oldest dropped first).
pub const KEPT_PER_USER: usize = 500;
/// Default and largest page of `GET notifications`.
pub const LIST_DEFAULT: u64 = 50;
pub const LIST_MAX: u64 = 500;
/// Webhook deliveries waiting for the delivery task.
pub const DELIVERY_QUEUE: usize = 4096;
/// Deliveries in flight at once.
pub const DELIVERY_CONCURRENCY: usize = 32;

// -------------------------------------------------------------- read model

/// A notification as the API shows it. Its text is rendered when it is
/// read ([`entry_json`]).
#[derive(Debug, Clone)]
pub struct NotificationEntry {
    pub n: Draft,
    /// Journal time of the read mark.
    pub read_ms: Option<u64>,
}

/// A notification to POST to a webhook.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub url: String,
    pub body: String,
}

/// Every user's recent notifications and webhook URL, maintained by the
/// publisher thread (and by recovery) from each journal record.
#[derive(Debug)]
pub struct NotificationsView {
    catalog: CatalogView,
    by_user: FxHashMap<UserId, History<NotificationEntry>>,
    webhooks: FxHashMap<UserId, String>,
    kept_per_user: usize,
    pub last_seq: u64,
}

impl NotificationsView {
    pub fn new(kept_per_user: usize) -> NotificationsView {
        NotificationsView {
            catalog: CatalogView::default(),
            by_user: FxHashMap::default(),
            webhooks: FxHashMap::default(),
            kept_per_user: kept_per_user.max(1),
            last_seq: 0,
        }
    }

    /// When the journal's start is gone (retention): the catalog from `e`,
    /// no history and no webhooks (they live in the journal only).
    pub fn from_engine(e: &Engine, kept_per_user: usize) -> NotificationsView {
        NotificationsView {
            catalog: CatalogView::from_engine(e),
            last_seq: e.last_seq(),
            ..NotificationsView::new(kept_per_user)
        }
    }

    /// Apply journal record `seq`; returns the webhook deliveries of the
    /// notifications it produced.
    pub fn apply(
        &mut self,
        seq: u64,
        ts_ms: u64,
        cmd: &Command,
        events: &[Event],
    ) -> Vec<Delivery> {
        if seq <= self.last_seq {
            return Vec::new();
        }
        self.last_seq = seq;
        self.catalog.observe(events);
        for ev in events {
            match ev {
                Event::NotificationWebhookSet { user, url } => {
                    if url.is_empty() {
                        self.webhooks.remove(user);
                    } else {
                        self.webhooks.insert(*user, url.clone());
                    }
                }
                Event::NotificationsRead { user, ids, read_ms } => {
                    if let Some(list) = self.by_user.get_mut(user) {
                        for e in list.iter_mut() {
                            if e.read_ms.is_none() && ids.contains(&e.n.id) {
                                e.read_ms = Some(*read_ms);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        let (catalog, by_user, webhooks) = (&self.catalog, &mut self.by_user, &self.webhooks);
        let kept = self.kept_per_user;
        notify::derive_drafts(catalog, seq, ts_ms, cmd, events, |n| {
            if let Some(url) = webhooks.get(&n.user) {
                out.push(Delivery {
                    url: url.clone(),
                    body: webhook_json(&n, catalog).to_string(),
                });
            }
            let list = by_user.entry(n.user).or_default();
            list.push_evicting(NotificationEntry { n, read_ms: None }, kept);
        });
        out
    }

    /// The user's notifications, newest first.
    pub fn list(&self, user: UserId, unread_only: bool, limit: usize) -> Vec<&NotificationEntry> {
        self.by_user.get(&user).map_or_else(Vec::new, |l| {
            l.iter()
                .rev()
                .filter(|e| !unread_only || e.read_ms.is_none())
                .take(limit)
                .collect()
        })
    }

    pub fn unread_count(&self, user: UserId) -> usize {
        self.by_user
            .get(&user)
            .map_or(0, |l| l.iter().filter(|e| e.read_ms.is_none()).count())
    }

    /// The user's notification `id` (another user's is `None`).
    pub fn find(&self, user: UserId, id: u64) -> Option<&NotificationEntry> {
        self.by_user
            .get(&user)
            .and_then(|l| l.iter().find(|e| e.n.id == id))
    }

    pub fn webhook(&self, user: UserId) -> Option<&str> {
        self.webhooks.get(&user).map(String::as_str)
    }

    /// The newest journaled edit of template `name` (None: built-in text).
    pub fn template_edit(&self, name: &str) -> Option<&NotificationTemplate> {
        self.catalog.template_edit(name)
    }

    /// What renders this view's notifications ([`entry_json`]).
    pub fn catalog(&self) -> &CatalogView {
        &self.catalog
    }
}

/// A notification as the API shows it (`catalog`: its view's).
pub fn entry_json(e: &NotificationEntry, catalog: &dyn Catalog) -> Value {
    let (title, body) = e.n.render(catalog);
    json!({
        "id": e.n.id,
        "type": "IN_APP",
        "template": e.n.template.name,
        "title": title,
        "body": body,
        "status": if e.read_ms.is_some() { "READ" } else { "SENT" },
        "created_at": e.n.created_ms,
        "read_at": e.read_ms,
    })
}

/// What a webhook receives.
pub fn webhook_json(n: &Draft, catalog: &dyn Catalog) -> Value {
    let (title, body) = n.render(catalog);
    json!({
        "id": n.id,
        "user_id": n.user.0,
        "type": "IN_APP",
        "template": n.template.name,
        "title": title,
        "body": body,
        "created_at": n.created_ms,
    })
}

// ------------------------------------------------------------ URL checking

/// A webhook URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub https: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

/// Parse and validate a webhook URL strictly: `http://` or `https://`, at
/// most `NOTIFY_WEBHOOK_MAX_LEN` bytes of visible ASCII, a host name
/// (letters, digits, `-`, `.`) or an IP literal, an optional port 1..=65535,
/// no user info (credentials), no fragment.
pub fn parse_webhook_url(url: &str) -> Result<WebhookUrl, &'static str> {
    if url.is_empty() || url.len() > NOTIFY_WEBHOOK_MAX_LEN {
        return Err("url must be 1 to 512 bytes.");
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("url must be visible ASCII without spaces.");
    }
    let lower = url.to_ascii_lowercase();
    let (https, rest) = if lower.starts_with("https://") {
        (true, &url[8..])
    } else if lower.starts_with("http://") {
        (false, &url[7..])
    } else {
        return Err("url must start with http:// or https://.");
    };
    if url.contains('#') {
        return Err("url must not have a fragment.");
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err("url must not contain credentials.");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']').ok_or("url has a malformed IPv6 host.")?;
        let ip: std::net::Ipv6Addr = v6[..close]
            .parse()
            .map_err(|_| "url has a malformed IPv6 host.")?;
        (ip.to_string(), &v6[close + 1..])
    } else {
        let colon = authority.find(':').unwrap_or(authority.len());
        (authority[..colon].to_ascii_lowercase(), &authority[colon..])
    };
    let port = match port {
        "" => {
            if https {
                443
            } else {
                80
            }
        }
        p => p
            .strip_prefix(':')
            .filter(|d| !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u16>().ok())
            .filter(|p| *p > 0)
            .ok_or("url has an invalid port.")?,
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (host.parse::<IpAddr>().is_ok()
            || host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if !host_ok {
        return Err("url has an invalid host.");
    }
    let path = if tail.is_empty() {
        "/".to_owned()
    } else if tail.starts_with('?') {
        format!("/{tail}")
    } else {
        tail.to_owned()
    };
    Ok(WebhookUrl {
        https,
        host,
        port,
        path,
    })
}

/// Whether `ip` is a public unicast address (what a webhook may reach when
/// private addresses are not allowed).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible
        }
    }
}

// ---------------------------------------------------------------- delivery

/// `http.webhook_*`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub allow_private: bool,
    pub timeout: Duration,
    pub max_attempts: u32,
    /// TLS client of https webhooks ([`tls::client_config`]).
    pub tls: Arc<tokio_rustls::rustls::ClientConfig>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_private: false,
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            tls: tls::client_config(None).expect("the compiled-in roots make a TLS client"),
        }
    }
}

/// The publisher's end of the delivery queue.
#[derive(Debug, Clone)]
pub struct Deliverer {
    tx: tokio::sync::mpsc::Sender<Delivery>,
    pub dropped: Arc<AtomicU64>,
}

impl Deliverer {
    /// A queue and its receiving end (run it with [`run_deliveries`]).
    pub fn new() -> (Deliverer, tokio::sync::mpsc::Receiver<Delivery>) {
        let (tx, rx) = tokio::sync::mpsc::channel(DELIVERY_QUEUE);
        (
            Deliverer {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Never waits: a full queue drops the delivery (the notification itself
    /// stays in the read model and in Postgres).
    pub fn offer(&self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            if self.tx.try_send(d).is_err() {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(dropped_total = n, "webhook queue full: delivery dropped");
            }
        }
    }
}

/// Deliver queued notifications until the queue closes.
pub async fn run_deliveries(mut rx: tokio::sync::mpsc::Receiver<Delivery>, cfg: WebhookConfig) {
    let slots = Arc::new(tokio::sync::Semaphore::new(DELIVERY_CONCURRENCY));
    while let Some(d) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let cfg = cfg.clone();
        tokio::spawn(async move {
            deliver(&d, &cfg).await;
            drop(permit);
        });
    }
}

/// POST one notification, retrying (250 ms, doubling) up to
/// `max_attempts` times while the attempt fails or the answer is not 2xx.
pub async fn deliver(d: &Delivery, cfg: &WebhookConfig) -> bool {
    let mut backoff = Duration::from_millis(250);
    for attempt in 1..=cfg.max_attempts.max(1) {
        let res = tokio::time::timeout(cfg.timeout, post_once(d, cfg)).await;
        let err = match res {
            Ok(Ok(status)) if (200..300).contains(&status) => return true,
            Ok(Ok(status)) => format!("answered HTTP {status}"),
            Ok(Err(e)) => e,
            Err(_) => "timed out".to_owned(),
        };
        // The URL may carry a token in its path: log the host only.
        let host = parse_webhook_url(&d.url)
            .map(|u| u.host)
            .unwrap_or_default();
        tracing::warn!(host, attempt, error = %err, "webhook delivery failed");
        if err.starts_with("refused") {
            return false;
        }
        if attempt < cfg.max_attempts {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    false
}

async fn post_once(d: &Delivery, cfg: &WebhookConfig) -> Result<u16, String> {
    let allow_private = cfg.allow_private;
    let u = parse_webhook_url(&d.url).map_err(|e| format!("refused: {e}"))?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((u.host.as_str(), u.port))
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    // Connect to the address that was checked (no second lookup).
    let addr = addrs
        .iter()
        .copied()
        .find(|a| allow_private || is_public(a.ip()))
        .ok_or_else(|| {
            if addrs.is_empty() {
                "cannot resolve: no address".to_owned()
            } else {
                "refused: the host resolves to a non-public address".to_owned()
            }
        })?;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    if u.https {
        let stream = tls::connect(&cfg.tls, &u.host, stream).await?;
        post_over(stream, &u, d).await
    } else {
        post_over(stream, &u, d).await
    }
}

/// The request and its answer over a connected stream (plain or TLS).
async fn post_over<S>(stream: S, u: &WebhookUrl, d: &Delivery) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Full};
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let host_header = if u.host.contains(':') {
        format!("[{}]:{}", u.host, u.port)
    } else {
        format!("{}:{}", u.host, u.port)
    };
    let req = axum::http::Request::post(u.path.as_str())
        .header(axum::http::header::HOST, host_header)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .header(axum::http::header::USER_AGENT, "mini-exchange-webhook/1")
        .body(Full::new(Bytes::from(d.body.clone())))
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    // Read (and discard) a bounded answer so the connection ends cleanly.
    let _ = http_body_util::Limited::new(resp.into_body(), 64 << 10)
        .collect()
        .await;
    Ok(status)
}

// ---------------------------------------------------------------- handlers

fn invalid_url(msg: &str) -> NativeError {
    NativeError::bad(codes::INVALID_WEBHOOK_URL, msg)
}

fn unknown_notification() -> NativeError {
    NativeError::new(
        StatusCode::NOT_FOUND,
        codes::UNKNOWN_NOTIFICATION,
        "Unknown notification.",
    )
}

async fn list_own(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "notifications:read")?;
    let p = query(q.as_deref(), &["unread", "limit"])?;
    let unread = match p.get("unread").map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => {
            return Err(NativeError::bad(
                codes::INVALID_PARAMETER,
                "unread must be true or false.",
            ))
        }
    };
    let limit = u64_param(&p, "limit", 1..=LIST_MAX)?.unwrap_or(LIST_DEFAULT) as usize;
    // Copied out under the lock and rendered after it: the publisher
    // writes this view for every command, and up to LIST_MAX bodies are
    // rendered here.
    let (entries, unread_count, catalog) = {
        let view = st.notifications.read().expect("notifications lock");
        let entries: Vec<NotificationEntry> = view
            .list(user, unread, limit)
            .into_iter()
            .cloned()
            .collect();
        (entries, view.unread_count(user), view.catalog().clone())
    };
    let list: Vec<Value> = entries.iter().map(|e| entry_json(e, &catalog)).collect();
    reply(
        StatusCode::OK,
        json!({ "unread": unread_count, "notifications": list }),
    )
}

async fn mark_read(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "notifications:read")?;
    let id = path
        .ok()
        .and_then(|Path(p)| p.parse::<u64>().ok())
        .ok_or_else(|| {
            NativeError::bad(
                codes::INVALID_PARAMETER,
                "The notification id must be a non-negative integer.",
            )
        })?;
    {
        let view = st.notifications.read().expect("notifications lock");
        let e = view.find(user, id).ok_or_else(unknown_notification)?;
        if e.read_ms.is_some() {
            // Already read: nothing to journal.
            return reply(StatusCode::OK, entry_json(e, view.catalog()));
        }
    }
    let o = execute(
        &st,
        Command::MarkNotificationsRead {
            user,
            ids: vec![id],
        },
    )
    .await?;
    check(&o)?;
    let view = st.notifications.read().expect("notifications lock");
    let e = view.find(user, id).ok_or_else(unknown_notification)?;
    reply(StatusCode::OK, entry_json(e, view.catalog()))
}

async fn get_webhook(State(st): State<AppState>, headers: HeaderMap) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "notifications:read")?;
    let view = st.notifications.read().expect("notifications lock");
    reply(StatusCode::OK, json!({ "url": view.webhook(user) }))
}

async fn set_webhook(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "notifications:read")?;
    let b = parse::<Value>(body)?;
    let url = match b.as_object().map(|o| o.get("url")) {
        None => {
            return Err(NativeError::bad(
                codes::BAD_REQUEST,
                "The body must be a JSON object.",
            ))
        }
        Some(Some(Value::String(s))) => s.clone(),
        Some(_) => return Err(invalid_url("url (a string) is required.")),
    };
    parse_webhook_url(&url).map_err(invalid_url)?;
    store_webhook(&st, user, url).await
}

async fn delete_webhook(State(st): State<AppState>, headers: HeaderMap) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "notifications:read")?;
    store_webhook(&st, user, String::new()).await
}

async fn store_webhook(st: &AppState, user: UserId, url: String) -> Res {
    let o = execute(st, Command::SetNotificationWebhook { user, url }).await?;
    check(&o)?;
    let view = st.notifications.read().expect("notifications lock");
    reply(StatusCode::OK, json!({ "url": view.webhook(user) }))
}

/// A template as the admin API shows it: its current text (the newest
/// edit, else the built-in one) and the placeholders it supports.
fn template_json(t: &notify::Template, edit: Option<&NotificationTemplate>) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "type": "IN_APP",
        "subject": edit.map_or(t.subject, |e| e.subject.as_str()),
        "content": edit.map_or(t.content, |e| e.content.as_str()),
        "is_active": edit.is_none_or(|e| e.active),
        "editable": true,
        "placeholders": t.placeholders,
        "version": edit.map_or(0, |e| e.version),
        "updated_at": edit.map(|e| e.updated_ms),
        "updated_by": edit.map(|e| e.updated_by.0),
    })
}

async fn templates(State(st): State<AppState>, headers: HeaderMap) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "notifications:read")?;
    let view = st.notifications.read().expect("notifications lock");
    let list: Vec<Value> = notify::TEMPLATES
        .iter()
        .map(|t| template_json(t, view.template_edit(t.name)))
        .collect();
    reply(StatusCode::OK, Value::Array(list))
}

/// `PUT admin/notifications/templates/{name}`: any of the fields; the
/// others keep their current value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateReq {
    subject: Option<String>,
    content: Option<String>,
    is_active: Option<bool>,
}

/// The checks the engine makes too (bounds, control characters), as clear
/// 400s, then the placeholders (which only this side knows).
fn check_template_text(
    t: &notify::Template,
    subject: &str,
    content: &str,
) -> Result<(), NativeError> {
    let bad = |msg: String| NativeError::bad(codes::INVALID_PARAMETER, &msg);
    if subject.trim().is_empty() || subject.len() > NOTIFY_TEMPLATE_SUBJECT_MAX_LEN {
        return Err(bad(format!(
            "subject must be 1 to {NOTIFY_TEMPLATE_SUBJECT_MAX_LEN} bytes and not blank."
        )));
    }
    if content.trim().is_empty() || content.len() > NOTIFY_TEMPLATE_CONTENT_MAX_LEN {
        return Err(bad(format!(
            "content must be 1 to {NOTIFY_TEMPLATE_CONTENT_MAX_LEN} bytes and not blank."
        )));
    }
    if subject.chars().any(char::is_control) {
        return Err(bad("subject must not contain control characters.".into()));
    }
    if content.chars().any(|c| c.is_control() && c != '\n') {
        return Err(bad(
            "content must not contain control characters other than newlines.".into(),
        ));
    }
    for (field, text) in [("subject", subject), ("content", content)] {
        if let Err(key) = notify::check_placeholders(t, text) {
            let supported: Vec<String> =
                t.placeholders.iter().map(|p| format!("{{{p}}}")).collect();
            return Err(bad(format!(
                "{field} uses the placeholder {{{key}}}, which template {} does not support (supported: {}).",
                t.name,
                supported.join(", ")
            )));
        }
    }
    Ok(())
}

async fn set_template(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, roles) = authenticate(&st, &headers)?;
    require(roles, "notifications:write")?;
    let unknown = || {
        NativeError::new(
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_NOTIFICATION,
            "Unknown notification template.",
        )
    };
    let Path(name) = path.map_err(|_| unknown())?;
    let t = notify::template(&name).ok_or_else(unknown)?;
    let r: TemplateReq = parse(body)?;
    if r.subject.is_none() && r.content.is_none() && r.is_active.is_none() {
        return Err(NativeError::bad(
            codes::BAD_REQUEST,
            "Give at least one of subject, content, is_active.",
        ));
    }
    let (subject, content, active) = {
        let view = st.notifications.read().expect("notifications lock");
        let edit = view.template_edit(t.name);
        (
            r.subject
                .unwrap_or_else(|| edit.map_or(t.subject, |e| e.subject.as_str()).to_owned()),
            r.content
                .unwrap_or_else(|| edit.map_or(t.content, |e| e.content.as_str()).to_owned()),
            r.is_active.unwrap_or(edit.is_none_or(|e| e.active)),
        )
    };
    check_template_text(t, &subject, &content)?;
    let o = execute(
        &st,
        Command::SetNotificationTemplate {
            by: caller,
            name: t.name.to_owned(),
            subject,
            content,
            active,
        },
    )
    .await?;
    check(&o)?;
    let view = st.notifications.read().expect("notifications lock");
    reply(StatusCode::OK, template_json(t, view.template_edit(t.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked_strictly() {
        let ok = parse_webhook_url("http://127.0.0.1:8081/hook?x=1").unwrap();
        assert_eq!(
            (ok.https, ok.host.as_str(), ok.port, ok.path.as_str()),
            (false, "127.0.0.1", 8081, "/hook?x=1")
        );
        let ok = parse_webhook_url("HTTPS://Example.COM").unwrap();
        assert_eq!(
            (ok.https, ok.host.as_str(), ok.port, ok.path.as_str()),
            (true, "example.com", 443, "/")
        );
        let ok = parse_webhook_url("http://[::1]:9/").unwrap();
        assert_eq!((ok.host.as_str(), ok.port), ("::1", 9));
        for bad in [
            "",
            "ftp://example.com/",
            "example.com/hook",
            "http://",
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "http://example.com:0/",
            "http://example.com:65536/",
            "http://example.com:abc/",
            "http://exa mple.com/",
            "http://example.com/a b",
            "http://example.com/#frag",
            "http://-bad-.com/",
            "http://ex_ample.com/",
            "http://[::1/",
            "javascript:alert(1)",
        ] {
            assert!(parse_webhook_url(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("http://example.com/{}", "a".repeat(NOTIFY_WEBHOOK_MAX_LEN));
        assert!(parse_webhook_url(&long).is_err());
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
