//! `mini-exchange serve`: recover before the port opens (one pass over the
//! journal rebuilds the engine and the history read models together; a
//! snapshot + replay of the rest when retention deleted the journal's
//! start), bootstrap the configured assets and pairs on first start, run the
//! order pipeline, the market-data projection and the snapshotter, serve
//! HTTP, and shut down cleanly on SIGTERM/SIGINT (drain the ring, make the
//! journal durable, write a snapshot, exit 0). SIGKILL at any moment loses
//! nothing acknowledged: replies leave only after their batch is durable.
//!
//! The publisher thread is the only writer of the market projection: it
//! holds the write lock just to apply a command's events, and fans the
//! streams out under a read lock, so REST readers never wait on fan-out.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use engine::{Command, Event};
use persister::replica::{self, DataDir, SnapshotPolicy, Snapshotter};

use crate::accounts::Accounts;
use crate::binance::errors::BinanceError;
use crate::binance::params::Params;
use crate::binance::ratelimit::{request_weight, LimiterConfig, RateLimiter};
use crate::identity::IdentityView;
use crate::market::Market;
use crate::pipeline::{Pipeline, PipelineConfig, Submitter};

/// Everything `serve` needs, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// `data_dir` and where its journal and snapshots are
    /// (`Config::layout`).
    pub data: DataDir,
    /// The `[journal]` section as the writer takes it (`Config::journal_config`:
    /// segment size, durability, watermark interval). Its `dir` is not
    /// read: the writer opens `data.journal()`, where the replicas read.
    pub journal: journal::JournalConfig,
    pub pipeline: PipelineConfig,
    pub snapshot: SnapshotPolicy,
    pub max_body_bytes: usize,
    /// Open connections, REST and WebSocket (`http.max_connections`).
    pub max_connections: usize,
    /// A request not answered within this time gets 503
    /// (`http.request_timeout_ms`).
    pub request_timeout: Duration,
    /// Socket send buffer per connection, 0: autotuned
    /// (`http.send_buffer_bytes`).
    pub send_buffer_bytes: u32,
    /// Commands journaled once, when the engine has no assets yet.
    pub bootstrap: Vec<Command>,
    pub weight_limit: LimiterConfig,
    /// New orders per API key (-1015 when exceeded).
    pub order_limit: LimiterConfig,
    /// exchangeInfo `rateLimits`: (type, interval, intervalNum, limit).
    pub rate_limits: Vec<(String, String, u32, u64)>,
    /// Server keys, token lifetime, first admin.
    pub auth: crate::config::AuthConfig,
    /// Market stream limits (`http.ws_*`).
    pub ws: crate::ws::WsConfig,
    /// Postgres of the in-process persister (None: no persister).
    pub database_url: Option<String>,
    /// Connections of the history/admin read pool (`database.pool_size`).
    pub database_pool_size: usize,
    /// Its batch size, flush interval and writer split (`[persister]`).
    pub persister: crate::config::PersisterConfig,
    /// Bounds of the market-data projection (`[market_data]`).
    pub market_data: crate::market::MarketLimits,
    /// Notification webhook delivery (`http.webhook_*`).
    pub webhooks: crate::notifications::WebhookConfig,
    /// Price band of a pair created through the admin API without one
    /// (`engine.price_band_pct`).
    pub default_price_band_pct: u32,
}

/// Shared by every HTTP handler: one pointer, so the per-request clone
/// that axum's `State` extractor and middleware make is a single reference
/// count instead of one per field (measured at ~5% of the gateway's CPU
/// under W4 REST load).
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

/// What [`AppState`] points to.
#[allow(missing_debug_implementations)]
pub struct Shared {
    pub market: Arc<RwLock<Market>>,
    /// The market's pairs by symbol, read by every order without the
    /// market's lock.
    pub pairs: Arc<crate::market::PairDirectory>,
    pub identity: Arc<RwLock<IdentityView>>,
    /// KYC records (kyc.rs), masked document numbers only.
    pub kyc: Arc<RwLock<crate::kyc::KycView>>,
    /// In-app notifications and webhook URLs (notifications.rs).
    pub notifications: Arc<RwLock<crate::notifications::NotificationsView>>,
    pub accounts: Arc<RwLock<Accounts>>,
    pub submitter: Submitter,
    pub durable: journal::DurableSeq,
    pub weights: Arc<RateLimiter<std::net::IpAddr>>,
    pub rate_limits: Arc<Vec<(String, String, u32, u64)>>,
    pub order_limits: Arc<RateLimiter<u64>>,
    pub started: Instant,
    /// Server keys (JWT, secrets at rest) and the password hasher.
    pub auth: Arc<crate::auth::Auth>,
    /// Market stream subscriptions and fan-out (ws.rs).
    pub hub: Arc<crate::ws::Hub>,
    /// Progress of the in-process persister, when one runs.
    pub persister: Option<Arc<persister::writer::PersisterGroup>>,
    /// Listen keys and user data streams (userstream.rs).
    pub user_streams: Arc<crate::userstream::UserStreams>,
    /// Becomes true on SIGTERM/SIGINT: WebSocket sessions say goodbye
    /// (close 1001, the WebSocket API's `serverShutdown` event) and end.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// Order and trade history in Postgres, when `DATABASE_URL` is set.
    pub history: Option<Arc<crate::history::PgHistory>>,
    /// `engine.price_band_pct`: the band of a pair created without one.
    pub default_price_band_pct: u32,
    /// Risk rules and risk events (risk.rs).
    pub risk: Arc<RwLock<crate::risk::RiskView>>,
    /// Settlement batches the engine accepted (settlement.rs).
    pub settlements: Arc<RwLock<crate::settlement::Batches>>,
    /// Open and refused connections (`http.max_connections`).
    pub connections: Arc<crate::listener::Stats>,
    /// `http.request_timeout_ms`.
    pub request_timeout: Duration,
}

/// Wall-clock milliseconds since the Unix epoch (the persister's clock).
pub use persister::writer::now_ms;

/// A Binance-style JSON error response.
pub fn error_response(e: &BinanceError) -> Response {
    let status = StatusCode::from_u16(e.http_status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        e.to_json(),
    )
        .into_response()
}

/// 200 with `v` as the JSON body.
pub fn ok_response(v: serde_json::Value) -> Response {
    json_response(StatusCode::OK, crate::json_text::of_value(&v))
}

/// A JSON body with the right content type.
pub fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Request weight per IP for /api/v3 (429 + Retry-After when exceeded), and
/// `X-MBX-USED-WEIGHT-1M` on every response.
async fn weigh(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    // Only GET endpoints and order/test weigh by their parameters; order
    // entry and cancels skip parsing the query twice (the handler parses it).
    let query = if req.method() == axum::http::Method::GET || path.ends_with("/order/test") {
        req.uri().query().unwrap_or("")
    } else {
        ""
    };
    let params = Params::parse(query, b"").ok();
    let weight = params
        .as_ref()
        .and_then(|p| request_weight(req.method().as_str(), &path, p))
        .unwrap_or(1);
    let usage = match st.weights.check_and_add(&peer.ip(), weight, now_ms()) {
        Ok(u) => u,
        Err(limited) => {
            let mut resp = error_response(&limited.error);
            if let Ok(v) = HeaderValue::from_str(&limited.retry_after_secs.to_string()) {
                resp.headers_mut().insert("Retry-After", v);
            }
            add_usage_headers(&st, &limited.usage, &mut resp);
            return resp;
        }
    };
    // Past the deadline the request is answered 503 and its future dropped:
    // a command already on the ring still executes (status unknown, as
    // Binance's -1007 says); a WebSocket upgrade answers at once and its
    // connection lives on in its own task.
    let native = path.starts_with("/api/v1/");
    let mut resp = match tokio::time::timeout(st.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) if native => crate::native::NativeError::unavailable(
            "The request timed out (http.request_timeout_ms); its outcome is unknown: check before retrying.",
        )
        .into_response(),
        Err(_) => error_response(&BinanceError::timeout()),
    };
    // Framework-generated errors (body too large, bad method) get the
    // contract's JSON body too.
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        match resp.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                resp = error_response(&BinanceError::payload_too_large());
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                resp = json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    r#"{"code":-1000,"msg":"Method not allowed for this endpoint."}"#.into(),
                );
            }
            _ => {}
        }
    }
    if resp.status() == StatusCode::TOO_MANY_REQUESTS && !resp.headers().contains_key("Retry-After")
    {
        // Order-count refusals (-1015): the 10 s window rolls over next.
        let secs = 10 - (now_ms() / 1000) % 10;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert("Retry-After", v);
        }
    }
    add_usage_headers(&st, &usage, &mut resp);
    resp
}

fn add_usage_headers(st: &AppState, usage: &crate::binance::ratelimit::Usage, resp: &mut Response) {
    for (name, v) in st.weights.headers(usage) {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&v.to_string()),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        r#"{"code":-1000,"msg":"Unknown endpoint."}"#.to_string(),
    )
}

async fn health(State(st): State<AppState>) -> Response {
    let m = st.market.read().expect("market lock");
    let durable = st.durable.get();
    let lag = durable.saturating_sub(m.last_seq);
    let stats = st.submitter.stats();
    let ok = !st.submitter.is_poisoned();
    let body = format!(
        "{{\"status\":\"{}\",\"uptime_s\":{},\"journal\":{{\"durable_seq\":{durable},\"poisoned\":{}}},\"engine\":{{\"applied\":{},\"queued\":{}}},\"market_data\":{{\"seq\":{},\"lag_seq\":{lag}}},\"persister\":{}}}",
        if ok { "ok" } else { "journal_failed" },
        st.started.elapsed().as_secs(),
        !ok,
        stats.applied.load(Ordering::Relaxed),
        st.submitter.queued(),
        m.last_seq,
        st.persister
            .as_ref()
            .map_or_else(|| "null".to_string(), |p| p.health_json()),
    );
    json_response(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

async fn metrics(State(st): State<AppState>) -> Response {
    // Reading /proc/self/task/*/{comm,stat} is file I/O (two reads per
    // thread): off the tokio workers, before any lock is taken.
    let threads = tokio::task::spawn_blocking(crate::threads::cpu_by_name)
        .await
        .unwrap_or_default();
    let s = st.submitter.stats();
    let m = st.market.read().expect("market lock");
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, v: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    };
    metric(
        "mx_commands_submitted_total",
        "Commands accepted onto the ring.",
        "counter",
        s.submitted.load(Ordering::Relaxed) as f64,
    );
    metric(
        "mx_commands_rejected_ring_full_total",
        "Commands refused because the ring was full (HTTP 503).",
        "counter",
        s.rejected_full.load(Ordering::Relaxed) as f64,
    );
    metric(
        "mx_journal_batches_total",
        "Group commits.",
        "counter",
        s.batches.load(Ordering::Relaxed) as f64,
    );
    metric(
        "mx_journal_delayed_commits_total",
        "Group commits that waited for journal.commit_interval_us to gather commands queued during the previous one.",
        "counter",
        s.delayed_commits.load(Ordering::Relaxed) as f64,
    );
    metric(
        "mx_journal_records_total",
        "Commands journaled.",
        "counter",
        s.journaled.load(Ordering::Relaxed) as f64,
    );
    metric(
        "mx_journal_durable_seq",
        "Highest durable sequence number.",
        "gauge",
        st.durable.get() as f64,
    );
    metric(
        "mx_journal_last_commit_microseconds",
        "Duration of the last group commit.",
        "gauge",
        s.last_commit_us.load(Ordering::Relaxed) as f64,
    );
    metric(
        "mx_journal_last_batch_size",
        "Commands in the last group commit.",
        "gauge",
        s.last_batch_size.load(Ordering::Relaxed) as f64,
    );
    metric(
        "mx_engine_applied_total",
        "Commands applied by the engine.",
        "counter",
        s.applied.load(Ordering::Relaxed) as f64,
    );
    if let Some(p) = &st.persister {
        metric(
            "mx_persister_lag_seq",
            "Journal records not yet written to Postgres.",
            "gauge",
            p.lag_seq() as f64,
        );
        metric(
            "mx_persister_lag_seconds",
            "Journal time between the newest record read and the last one written to Postgres.",
            "gauge",
            p.lag_secs(),
        );
        metric(
            "mx_persister_written_seq",
            "Last journal sequence committed to Postgres.",
            "gauge",
            p.written_seq() as f64,
        );
        metric(
            "mx_persister_batches_total",
            "Batches committed to Postgres.",
            "counter",
            p.total(|s| &s.batches) as f64,
        );
        metric(
            "mx_persister_rows_total",
            "Rows written to Postgres.",
            "counter",
            p.total(|s| &s.rows) as f64,
        );
        metric(
            "mx_persister_errors_total",
            "Failed Postgres writes (retried).",
            "counter",
            p.total(|s| &s.errors) as f64,
        );
        metric(
            "mx_persister_restarts_total",
            "Times a writer started over from Postgres' checkpoint because Postgres lost commits it had acknowledged (a crash with asynchronous commit).",
            "counter",
            p.total(|s| &s.restarts) as f64,
        );
        metric(
            "mx_persister_build_seconds_total",
            "Time reading the journal, replaying and building rows.",
            "counter",
            p.total(|s| &s.build_ns) as f64 / 1e9,
        );
        metric(
            "mx_persister_flush_seconds_total",
            "Time writing batches to Postgres, retries included.",
            "counter",
            p.total(|s| &s.flush_ns) as f64 / 1e9,
        );
        metric(
            "mx_persister_rest_seconds_total",
            "Time resting between batches to stay within persister.busy_percent.",
            "counter",
            p.total(|s| &s.rest_ns) as f64 / 1e9,
        );
        metric(
            "mx_persister_busy_percent",
            "Pacing while orders flow (persister.busy_percent, or the default chosen by where Postgres runs; 100: unpaced).",
            "gauge",
            f64::from(p.busy_percent),
        );
    }
    metric(
        "mx_http_connections",
        "Open connections, REST and WebSocket (bounded by http.max_connections).",
        "gauge",
        st.connections.open() as f64,
    );
    metric(
        "mx_http_connections_refused_total",
        "Connections answered 503 because http.max_connections were open.",
        "counter",
        st.connections.refused() as f64,
    );
    if let Some(h) = &st.history {
        let (max, open) = h.pool_sizes();
        metric(
            "mx_history_pool_max_connections",
            "Most connections of the history/admin Postgres pool (database.pool_size).",
            "gauge",
            max as f64,
        );
        metric(
            "mx_history_pool_connections",
            "Open connections of the history/admin Postgres pool.",
            "gauge",
            open as f64,
        );
    }
    metric(
        "mx_websocket_connections",
        "Open WebSocket connections (streams, user data, WebSocket API).",
        "gauge",
        st.hub.connections() as f64,
    );
    let (streams, subscriptions) = st.hub.subscriptions();
    metric(
        "mx_websocket_streams",
        "Distinct market streams with at least one subscriber.",
        "gauge",
        streams as f64,
    );
    metric(
        "mx_websocket_subscriptions",
        "Market stream subscriptions over all connections (a stream held by two connections counts twice).",
        "gauge",
        subscriptions as f64,
    );
    metric(
        "mx_ring_queued",
        "Commands waiting on the ring.",
        "gauge",
        st.submitter.queued() as f64,
    );
    metric(
        "mx_market_data_lag_seq",
        "Sequences the market-data projection is behind the journal.",
        "gauge",
        st.durable.get().saturating_sub(m.last_seq) as f64,
    );
    let mut histogram = |name: &str, help: &str, h: &crate::pipeline::LatencyHistogram| {
        use std::fmt::Write as _;
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        let counts = h.cumulative();
        for (bound, count) in crate::pipeline::LATENCY_BUCKETS_US.iter().zip(&counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {count}",
                *bound as f64 / 1e6
            );
        }
        let total = counts[counts.len() - 1];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", h.sum_us() as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {total}");
    };
    histogram(
        "mx_journal_commit_seconds",
        "Group commit durations (append and flush to disk).",
        &s.commit_time,
    );
    histogram(
        "mx_command_ack_seconds",
        "From a command's push onto the ring to its request resuming with the durable outcome.",
        &s.ack_time,
    );
    drop(m);
    if !threads.is_empty() {
        use std::fmt::Write as _;
        let name = "mx_thread_cpu_seconds_total";
        let _ = write!(
            out,
            "# HELP {name} CPU time (user + system) of the server's threads by name (the tokio workers are mx-gateway): which stage of the order path is short of CPU.\n# TYPE {name} counter\n"
        );
        for (thread, secs) in threads {
            let _ = writeln!(
                out,
                "{name}{{thread=\"{}\"}} {secs}",
                crate::threads::label_value(&thread)
            );
        }
    }
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

pub fn router(st: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .merge(crate::rest::public_routes())
        .merge(crate::rest::signed_routes())
        .merge(crate::native::routes())
        .merge(crate::ws::routes())
        .merge(crate::userstream::routes())
        .merge(crate::wsapi::routes())
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(st.clone(), weigh))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(st)
}

async fn shutdown_signal(stop: Arc<AtomicBool>, closing: tokio::sync::watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining and shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: draining and shutting down"),
    }
    stop.store(true, Ordering::Release);
    closing.send_replace(true);
}

/// The state startup rebuilt from the data directory, all at the journal's
/// last sequence number.
struct Recovered {
    engine: engine::Engine,
    accounts: Accounts,
    market: Market,
    notifications: crate::notifications::NotificationsView,
    risk: crate::risk::RiskView,
}

/// Recover the engine and the read models that keep history (per-user
/// orders and trades, market data: trades, aggregate trades, klines,
/// tickers) in one pass over the journal:
///
/// * the journal holds every record from seq 1 (the default: no
///   retention): one fresh engine replays it, and each record's events feed
///   the read models as they come out, so history survives restarts and
///   nothing is applied twice. A snapshot would only shorten the engine's
///   part of a pass the history needs anyway; by determinism the engine
///   ends in the state snapshot + replay would give.
/// * the journal's start was deleted by retention (or cannot be read before
///   the newest snapshot): newest snapshot + replay of the rest, and the read
///   models hold what that engine knows (open orders, balances, the book,
///   last prices), as before.
///
/// `journal_last_seq` is where the journal writer found the end; a usable
/// snapshot newer than that is refused (the journal lost records).
fn recover(
    data: &DataDir,
    journal_last_seq: u64,
    limits: crate::market::MarketLimits,
) -> Result<Recovered> {
    refuse_snapshot_newer_than(data, journal_last_seq)?;
    let started = Instant::now();
    let mut accounts =
        Accounts::with_retention(limits.orders_kept_per_user, limits.trades_kept_per_user);
    let mut market = Market::new(limits);
    let mut notifications =
        crate::notifications::NotificationsView::new(crate::notifications::KEPT_PER_USER);
    let mut risk = crate::risk::RiskView::default();
    let mut engine = engine::Engine::with_capacity(replica::DEFAULT_CAPACITY);
    let res = replica::replay(
        &mut engine,
        &data.journal(),
        journal_last_seq,
        Some(journal_last_seq),
        |seq, ts, cmd, events| {
            accounts.apply(seq, ts, events);
            market.apply_events(seq, ts, events);
            // Recovered notifications are history: no webhook deliveries.
            let _ = notifications.apply(seq, ts, cmd, events);
            risk.apply(seq, events);
        },
        |p| {
            tracing::info!(
                seq = p.seq,
                records_per_sec = p.records_per_sec as u64,
                eta_secs = p.eta_secs.map(|s| s as u64),
                "replaying journal (engine, order history, market data)"
            )
        },
    );
    match res {
        Ok(replayed) if engine.last_seq() == journal_last_seq => {
            market.last_seq = journal_last_seq;
            accounts.last_seq = journal_last_seq;
            notifications.last_seq = journal_last_seq;
            tracing::info!(
                seq = journal_last_seq,
                replayed,
                state_hash = %format!("{:016x}", engine.state_hash()),
                ms = started.elapsed().as_millis() as u64,
                "state, order history and market data recovered from the whole journal"
            );
            return Ok(Recovered {
                engine,
                accounts,
                market,
                notifications,
                risk,
            });
        }
        Err(replica::ReplicaError::Journal(journal::JournalError::SeqPruned {
            oldest, ..
        })) => {
            tracing::info!(
                oldest,
                "the journal's start was deleted by retention: recovering from the newest snapshot"
            );
        }
        other => {
            tracing::warn!(
                result = ?other.map(|_| engine.last_seq()),
                "the journal cannot be replayed from its start: recovering from the newest snapshot"
            );
        }
    }
    drop((engine, accounts, market, notifications, risk));
    let rec = replica::recover(data, u64::MAX, |p| {
        tracing::info!(
            seq = p.seq,
            records_per_sec = p.records_per_sec as u64,
            "replaying journal"
        )
    })?;
    for s in &rec.skipped_snapshots {
        tracing::warn!(seq = s.seq, path = %s.path.display(), reason = %s.reason, "damaged snapshot skipped");
    }
    if rec.engine.last_seq() != journal_last_seq {
        bail!(
            "recovered state is at seq {} but the journal ends at {journal_last_seq}: a snapshot is newer than the journal; move the newer snapshots aside",
            rec.engine.last_seq(),
        );
    }
    tracing::warn!(
        "history not rebuildable from the journal; serving open orders, balances and the book only"
    );
    Ok(Recovered {
        accounts: Accounts::from_engine(
            &rec.engine,
            limits.orders_kept_per_user,
            limits.trades_kept_per_user,
        ),
        market: Market::from_engine(&rec.engine, limits),
        notifications: crate::notifications::NotificationsView::from_engine(
            &rec.engine,
            crate::notifications::KEPT_PER_USER,
        ),
        risk: crate::risk::RiskView::from_engine(&rec.engine),
        engine: rec.engine,
    })
}

/// Refuse to start when a usable snapshot is newer than the journal's end
/// (records the snapshot saw are gone from the journal). Costs a directory
/// listing unless such a snapshot file exists.
fn refuse_snapshot_newer_than(data: &DataDir, journal_last_seq: u64) -> Result<()> {
    let dir = data.snapshots();
    if !dir.exists() {
        return Ok(());
    }
    let newer = journal::snapshot::list(&dir)?
        .iter()
        .any(|s| s.seq > journal_last_seq);
    if !newer {
        return Ok(());
    }
    // Damaged snapshots are skipped, as recovery would skip them.
    let (_, seq, _) = replica::load_snapshot(&dir, u64::MAX)?;
    if seq > journal_last_seq {
        bail!(
            "recovered state is at seq {seq} but the journal ends at {journal_last_seq}: a snapshot is newer than the journal; move the newer snapshots aside"
        );
    }
    Ok(())
}

/// Whether the kernel hands out transparent huge pages to every process
/// (`[always]` selected in `/sys/kernel/mm/transparent_hugepage/enabled`).
fn thp_always(enabled: &str) -> bool {
    enabled.split_whitespace().any(|w| w == "[always]")
}

/// The allocator never asks for transparent huge pages (mimalloc is built
/// with `no_thp`), but a kernel in mode `always` gives them anyway, and each
/// fresh 2 MiB page is zeroed inside the allocation that first touches it,
/// on whatever thread that is (acknowledgements stalled for tens of ms).
/// `MIMALLOC_ALLOW_THP=0` makes the allocator turn THP off for the process.
fn warn_if_thp_always() {
    let Ok(enabled) = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled") else {
        return;
    };
    let opted_out = std::env::var("MIMALLOC_ALLOW_THP").is_ok_and(|v| v.trim() == "0");
    if thp_always(&enabled) && !opted_out {
        tracing::warn!(
            "transparent huge pages are `always` on this host: expect latency spikes of tens of ms while memory grows; start serve with MIMALLOC_ALLOW_THP=0 to turn them off for this process"
        );
    }
}

/// Run the exchange until SIGTERM/SIGINT.
pub fn serve(opts: ServeOptions) -> Result<()> {
    warn_if_thp_always();
    let data = opts.data.clone();
    data.create()
        .with_context(|| format!("cannot create the data directory {}", data.root.display()))?;
    let (writer, report) = journal::Writer::open(journal::JournalConfig {
        dir: data.journal(),
        ..opts.journal.clone()
    })
    .with_context(|| "cannot open the journal (if it is damaged: `mini-exchange journal verify`, then `journal repair` after copying the data directory aside)")?;
    tracing::info!(
        last_seq = report.last_seq,
        truncated_bytes = report.bytes_truncated,
        "journal opened"
    );
    let rec = recover(&data, writer.last_seq(), opts.market_data)?;
    let (accounts, market) = (rec.accounts, rec.market);
    let risk = Arc::new(RwLock::new(rec.risk));
    let r2 = risk.clone();
    let pairs = market.directory();
    let market = Arc::new(RwLock::new(market));
    let auth = Arc::new(crate::auth::Auth::load(&opts.auth, &data.root)?);
    let identity = Arc::new(RwLock::new(IdentityView::with_secret_key(
        &rec.engine,
        auth.cipher.clone(),
    )));
    let kyc = Arc::new(RwLock::new(crate::kyc::KycView::from_engine(
        &rec.engine,
        Some(auth.cipher.clone()),
    )));
    let accounts = Arc::new(RwLock::new(accounts));
    let notifications = Arc::new(RwLock::new(rec.notifications));
    let n2 = notifications.clone();
    let (deliverer, deliveries) = crate::notifications::Deliverer::new();
    let fresh = rec.engine.assets().is_empty();
    let m2 = market.clone();
    let hub = Arc::new(crate::ws::Hub::new(opts.ws.clone()));
    let h2 = hub.clone();
    let i2 = identity.clone();
    let k2 = kyc.clone();
    let a2 = accounts.clone();
    let user_streams = Arc::new(crate::userstream::UserStreams::persistent(
        Duration::from_secs(opts.auth.listen_key_ttl_secs),
        &data.root,
        auth.cipher.clone(),
    ));
    let u2 = user_streams.clone();
    let settlements = Arc::new(RwLock::new(crate::settlement::Batches::from_engine(
        &rec.engine,
    )));
    let s2 = settlements.clone();
    let (pipeline, submitter) =
        Pipeline::start(writer, rec.engine, opts.pipeline.clone(), move |o| {
            m2.write().expect("market lock").apply(&o);
            // Stream fan-out (try_send only, never waits on a client) under
            // a read lock, so REST readers never wait on it. This thread is
            // the market's only writer, so between the write lock and this
            // read lock nothing changes: fan-out sees exactly the state
            // (and `level_changes`) this command left.
            h2.on_outcome(&m2.read().expect("market lock"), &o);
            // Views that no trading event touches are locked only for
            // commands that change them: signed requests read `identity`
            // on every call, and an order must not make them wait.
            if o.events.iter().any(IdentityView::wants) {
                i2.write().expect("identity lock").apply(o.seq, &o.events);
            }
            if o.events.iter().any(crate::kyc::KycView::wants) {
                k2.write().expect("kyc lock").apply(o.seq, &o.events);
            }
            // Webhook deliveries are queued with try_send: never waits.
            let deliveries = n2
                .write()
                .expect("notifications lock")
                .apply(o.seq, o.ts_ms, &o.command, &o.events);
            if !deliveries.is_empty() {
                deliverer.offer(deliveries);
            }
            if o.events.iter().any(crate::risk::RiskView::wants) {
                r2.write().expect("risk lock").apply(o.seq, &o.events);
            }
            if o.events.iter().any(crate::settlement::Batches::wants) {
                s2.write().expect("settlements lock").apply(&o.events);
            }
            // User data streams: built from the state before the command,
            // delivered once every read model has applied it.
            let user_events = u2.prepare(&o, &m2, &a2);
            a2.write()
                .expect("accounts lock")
                .apply(o.seq, o.ts_ms, &o.events);
            u2.deliver(user_events);
        });
    let durable = pipeline.durable_handle();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mx-gateway")
        .build()?;
    let weights = Arc::new(
        RateLimiter::new(opts.weight_limit.clone())
            .map_err(|e| anyhow::anyhow!("bad rate limit configuration: {e:?}"))?,
    );
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let history = match &opts.database_url {
        Some(url) => Some(Arc::new(
            crate::history::PgHistory::new(url, opts.database_pool_size)
                .context("DATABASE_URL is not a valid PostgreSQL URL")?,
        )),
        None => None,
    };
    let mut st = Shared {
        default_price_band_pct: opts.default_price_band_pct,
        risk,
        history,
        settlements,
        closing: closing_rx,
        market,
        pairs,
        identity,
        kyc,
        notifications,
        accounts,
        submitter: submitter.clone(),
        durable: durable.clone(),
        weights,
        rate_limits: Arc::new(opts.rate_limits.clone()),
        order_limits: Arc::new(
            RateLimiter::new(opts.order_limit.clone())
                .map_err(|e| anyhow::anyhow!("bad order rate limit configuration: {e:?}"))?,
        ),
        started: Instant::now(),
        auth,
        hub: hub.clone(),
        persister: None,
        user_streams,
        connections: crate::listener::Stats::new(opts.max_connections),
        request_timeout: opts.request_timeout,
    };
    // The persister follows the journal (never the engine thread), so a slow
    // or absent Postgres never blocks trading.
    let stop_persist = Arc::new(AtomicBool::new(false));
    let persist_threads = match &opts.database_url {
        Some(url) => {
            use persister::rows::Domain;
            use persister::writer::{PersisterGroup, PersisterStatus, WriterConfig};
            let busy_percent = match opts.persister.busy_percent {
                Some(p) => p,
                None => {
                    let p = persister::writer::default_busy_percent(url);
                    tracing::info!(
                        busy_percent = p,
                        postgres_is_local = p < 100,
                        "persister.busy_percent unset: pacing the writers while orders flow only when Postgres shares this machine"
                    );
                    p
                }
            };
            let base = WriterConfig {
                max_batch: opts.persister.batch_records.max(1),
                idle: Duration::from_millis(opts.persister.flush_interval_ms.max(1)),
                busy_percent,
                ..WriterConfig::new(url.clone(), data.clone())
            };
            let configs: Vec<WriterConfig> = if opts.persister.writers == "split" {
                Domain::ALL
                    .into_iter()
                    .map(|d| base.clone().for_domain(d))
                    .collect()
            } else {
                vec![base]
            };
            let mut group = PersisterGroup {
                busy_percent,
                ..PersisterGroup::default()
            };
            let mut threads = Vec::new();
            for cfg in configs {
                let status = Arc::new(PersisterStatus::default());
                group.writers.push((cfg.writer.clone(), status.clone()));
                threads.push(persister::writer::spawn(
                    cfg,
                    persister::writer::Follow::Durable(durable.clone()),
                    stop_persist.clone(),
                    status,
                )?);
            }
            st.persister = Some(Arc::new(group));
            threads
        }
        None => Vec::new(),
    };
    let st = AppState::new(st);
    let stop_snap = Arc::new(AtomicBool::new(false));
    let snapshotter = Snapshotter::start(data.clone(), durable.clone(), opts.snapshot)?;
    let s2 = stop_snap.clone();
    let snap_thread = std::thread::Builder::new()
        .name("mx-snapshotter".into())
        .spawn(move || {
            let mut snapshotter = snapshotter;
            // Background work (~0.07 cores at WS 100k/s) that only has to
            // be current when a snapshot is due: it runs on CPU time the
            // order path leaves idle (benches/RESULTS.md, sessions of
            // 2026-11-27 06:13 and 2026-11-27 21:18).
            crate::pipeline::run_in_background();
            snapshotter.follow(&s2)
        })?;

    let stop = Arc::new(AtomicBool::new(false));
    let served: Result<()> = rt.block_on(async {
        if fresh && !opts.bootstrap.is_empty() {
            tracing::info!(
                commands = opts.bootstrap.len(),
                "first start: journaling the configured assets and pairs"
            );
            for c in &opts.bootstrap {
                let o = submitter
                    .execute(c.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("bootstrap failed: {e}"))?;
                if let Some(Event::Rejected { reason }) = o.events.first() {
                    bail!("bootstrap command {c:?} was rejected: {}", reason.name());
                }
            }
        }
        crate::native::bootstrap_admin(&st, &opts.auth).await?;
        tokio::spawn(crate::ws::run_ticker(hub.clone(), st.market.clone()));
        tokio::spawn(crate::notifications::run_deliveries(
            deliveries,
            opts.webhooks.clone(),
        ));
        let listener =
            crate::listener::bind(opts.addr, opts.send_buffer_bytes).with_context(|| {
                format!(
                    "cannot listen on {} (set MX_HTTP_ADDR to another address)",
                    opts.addr
                )
            })?;
        tracing::info!(addr = %opts.addr, "listening");
        let listener = crate::listener::Bounded::new(listener, st.connections.clone());
        let app = router(st, opts.max_body_bytes);
        axum::serve(
            // tap_io: axum's ConnectInfo<SocketAddr> comes with it for any
            // listener whose address is a SocketAddr.
            axum::serve::ListenerExt::tap_io(listener, |_| {}),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal(stop.clone(), closing_tx))
        .await?;
        // Upgraded WebSocket connections are not HTTP connections any more:
        // give them a moment to send their close frames.
        let deadline = Instant::now() + Duration::from_secs(2);
        while hub.connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    });
    // Drain: nothing new is accepted, everything queued becomes durable and
    // applied, then the final state is snapshotted.
    let (engine, writer) = pipeline.shutdown();
    // The replica stops first (it may be writing a due snapshot; the two
    // must not write the same file at once); the live engine is current.
    stop_snap.store(true, Ordering::Release);
    match snap_thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "snapshotter stopped with an error"),
        Err(_) => tracing::warn!("snapshotter thread panicked"),
    }
    let path = replica::write_snapshot(&data, &engine)?;
    if let Err(e) = replica::prune_snapshots(&data, &opts.snapshot) {
        tracing::warn!(error = %e, "pruning old snapshots after the final one failed");
    }
    tracing::info!(
        seq = engine.last_seq(),
        state_hash = %format!("{:016x}", engine.state_hash()),
        path = %path.display(),
        "final snapshot written"
    );
    writer.close()?;
    stop_persist.store(true, Ordering::Release);
    for h in persist_threads {
        if h.join().is_err() {
            tracing::warn!("persister thread panicked");
        }
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    served?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::thp_always;

    #[test]
    fn thp_mode_always_is_read_from_the_sysfs_line() {
        assert!(thp_always("[always] madvise never\n"));
        assert!(!thp_always("always [madvise] never\n"));
        assert!(!thp_always("always madvise [never]\n"));
        assert!(!thp_always(""));
    }
}
