//! Server configuration (API.md "Operations contract"): typed sections with
//! a default for every key, loaded in layers, each overriding the previous:
//! built-in defaults <- `config/default.toml` (embedded) <- `--config FILE`
//! <- environment `MX_<SECTION>__<KEY>` <- the short names (`MX_HTTP_ADDR`,
//! `MX_DATA_DIR`, `DATABASE_URL`, `MX_ADMIN_USERNAME`, `MX_ADMIN_PASSWORD`,
//! `MX_SECRET_KEY`, `MX_JWT_SECRET`).
//!
//! Invariants: a [`Config`] returned by [`load`] has passed every check here,
//! including the exact conversion of its assets and pairs to engine specs
//! (so [`Config::asset_specs`] and [`Config::pair_specs`] succeed on it);
//! unknown keys in a file are errors naming the file; an environment value
//! that does not parse is an error naming the variable; money is never a
//! float (decimal strings go through `engine::decimal`, nothing is rounded);
//! the `Debug` output never contains a secret (see [`Secret`],
//! [`DatabaseUrl`]).

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use engine::decimal::{parse_fee_rate, parse_on_step, parse_units, pow10, DecimalError};
use engine::{AssetId, AssetSpec, Limits, PairSpec, PairStatus};
use serde::de::{self, DeserializeOwned, Visitor};
use serde::Deserialize;
use toml::{Table, Value};

/// `config/default.toml`, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
/// How the embedded file is named in error messages.
pub const DEFAULT_TOML_NAME: &str = "config/default.toml (embedded)";

/// Largest `decimals` of an asset (the engine refuses more).
const MAX_ASSET_DECIMALS: u8 = 18;
/// Largest journal segment, MiB (64 GiB; mmap offsets stay far from limits).
const MAX_SEGMENT_SIZE_MB: u64 = 64 << 10;
/// `journal.commit_interval_us` at most: 100 ms (a wait this long already
/// dominates every acknowledgement).
const MAX_COMMIT_INTERVAL_US: u64 = 100_000;
/// `journal.commit_interval_us` by default: under load a group commit
/// gathers what arrives within 0.5 ms of the previous one's start (half the
/// fdatasyncs and wake-ups at 100,000 orders/s on 2 vCPUs; ~0.1 ms more
/// p50 at 20,000/s; none when idle: benches/RESULTS.md).
pub const DEFAULT_COMMIT_INTERVAL_US: u64 = 500;
/// Default `max_price` of a pair, in whole quote units (Binance's usual).
const DEFAULT_MAX_PRICE_WHOLE: u64 = 1_000_000;
/// Deepest `market_data.depth_max_levels` (Binance answers at most 5000
/// levels per side, and so does `/api/v3/depth`).
const MAX_DEPTH_LEVELS: usize = 5_000;

// ------------------------------------------------------------------ errors

/// Why a configuration was refused. Every message names where the bad value
/// came from: the file, the environment variable, or the asset/pair field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: {message}", .path.display())]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config {key}: {message}")]
    Invalid { key: String, message: String },
    #[error("asset {asset}: {field}: {message}")]
    Asset {
        asset: String,
        field: String,
        message: String,
    },
    #[error("pair {pair}: {field}: {message}")]
    Pair {
        pair: String,
        field: String,
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

// ----------------------------------------------------------------- secrets

/// A secret string: usable through [`Secret::expose`], printed by `Debug`
/// and `Display` as `<redacted>` so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A PostgreSQL connection string (URL or `key=value` form). `Debug` and
/// `Display` mask its password; [`DatabaseUrl::expose`] gives the real one.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(s: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The connection string with every password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_connection_string(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Mask the password of `postgres://user:PASSWORD@host/db` and every
/// `password=VALUE` (URL query or libpq `key=value` form, quoted or not).
fn redact_connection_string(s: &str) -> String {
    let mut out = s.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    let mut from = 0;
    while let Some(i) = out[from..].to_ascii_lowercase().find("password") {
        let mut v = from + i + "password".len();
        let bytes = out.as_bytes();
        while v < bytes.len() && bytes[v] == b' ' {
            v += 1;
        }
        if v >= bytes.len() || bytes[v] != b'=' {
            from = v;
            continue;
        }
        v += 1;
        while v < out.len() && out.as_bytes()[v] == b' ' {
            v += 1;
        }
        let end = if out.as_bytes().get(v) == Some(&b'\'') {
            // libpq quoting: '...' with \' escapes.
            let b = out.as_bytes();
            let mut j = v + 1;
            while j < b.len() && b[j] != b'\'' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(b.len())
        } else {
            out[v..].find(['&', ' ', '#']).map_or(out.len(), |j| v + j)
        };
        out.replace_range(v..end, "***");
        from = v + 3;
    }
    out
}

// ------------------------------------------------------- decimal strings

/// A decimal amount as written in the config: a string ("0.001") or a
/// whole number (9000). Floats are refused: they are not exact.
#[derive(Clone, PartialEq, Eq)]
pub struct DecimalStr(pub String);

impl DecimalStr {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DecimalStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&str> for DecimalStr {
    fn from(s: &str) -> Self {
        DecimalStr(s.to_string())
    }
}

impl<'de> Deserialize<'de> for DecimalStr {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DecimalStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string such as \"0.001\" or a whole number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DecimalStr, E> {
                Ok(DecimalStr(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DecimalStr, E> {
                Ok(DecimalStr(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DecimalStr, E> {
                Ok(DecimalStr(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DecimalStr, E> {
                Err(E::custom(format!(
                    "{v} is a float; write decimal amounts as strings, e.g. \"{v}\" (floats are not exact)"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------- sections

/// The whole configuration. See `config/default.toml` for every key.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Journal and snapshots live under it (env `MX_DATA_DIR`).
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub engine: EngineConfig,
    pub journal: JournalSection,
    pub snapshot: SnapshotConfig,
    pub database: DatabaseConfig,
    pub persister: PersisterConfig,
    pub auth: AuthConfig,
    pub rate_limits: RateLimitsConfig,
    pub market_data: MarketDataConfig,
    pub assets: Vec<AssetConfig>,
    pub pairs: Vec<PairConfig>,
}

impl Default for Config {
    /// Built-in defaults: every scalar as in `config/default.toml`, but no
    /// assets and no pairs (those come from the file).
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            http: HttpConfig::default(),
            engine: EngineConfig::default(),
            journal: JournalSection::default(),
            snapshot: SnapshotConfig::default(),
            database: DatabaseConfig::default(),
            persister: PersisterConfig::default(),
            auth: AuthConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            market_data: MarketDataConfig::default(),
            assets: Vec::new(),
            pairs: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub max_body_bytes: usize,
    pub max_connections: u32,
    /// Socket send buffer of every connection in bytes (0: the kernel's
    /// autotuning, up to net.ipv4.tcp_wmem's maximum).
    pub send_buffer_bytes: u32,
    pub request_timeout_ms: u64,
    /// Slots of the gateway -> sequencer ring (power of two).
    pub ring_capacity: usize,
    pub ws_max_connections: u32,
    pub ws_max_subscriptions: u32,
    pub ws_max_messages_per_sec: u32,
    /// Outgoing messages queued per WebSocket connection.
    pub ws_send_queue: usize,
    pub ws_ping_interval_secs: u64,
    pub ws_pong_timeout_secs: u64,
    /// Notification webhooks may connect to loopback, private, link-local
    /// and other non-public addresses (off: SSRF protection; tests turn it on).
    pub webhook_allow_private: bool,
    /// One webhook delivery attempt (connect + request + answer).
    pub webhook_timeout_ms: u64,
    /// Attempts per notification (backoff 250 ms, doubling) before it is dropped.
    pub webhook_max_attempts: u32,
    /// PEM file of extra root certificates trusted for https webhooks,
    /// besides the compiled-in Mozilla roots (a private CA; tests).
    pub webhook_extra_ca_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 << 10,
            max_connections: 10_000,
            send_buffer_bytes: 256 << 10,
            request_timeout_ms: 30_000,
            ring_capacity: 1 << 16,
            ws_max_connections: 10_000,
            ws_max_subscriptions: 1024,
            ws_max_messages_per_sec: 100,
            ws_send_queue: 1024,
            ws_ping_interval_secs: 20,
            ws_pong_timeout_secs: 60,
            webhook_allow_private: false,
            webhook_timeout_ms: 5_000,
            webhook_max_attempts: 3,
            webhook_extra_ca_file: None,
        }
    }
}

/// How the engine thread waits for work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitStrategy {
    /// Sleep when idle (no CPU when idle, microseconds of wake-up latency).
    #[default]
    Park,
    /// Busy-poll (lowest latency, one full core).
    Spin,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// CPU to pin the engine thread to; `None`: not pinned.
    pub core: Option<usize>,
    pub wait_strategy: WaitStrategy,
    pub max_open_orders_total: u32,
    pub max_open_orders_per_user: u32,
    pub max_api_keys_per_user: u32,
    /// Default price band of pairs that do not set one (0 = off).
    pub price_band_pct: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let l = Limits::default();
        EngineConfig {
            core: None,
            wait_strategy: WaitStrategy::Park,
            max_open_orders_total: l.max_open_orders_total,
            max_open_orders_per_user: l.max_open_orders_per_user,
            max_api_keys_per_user: l.max_api_keys_per_user,
            price_band_pct: 50,
        }
    }
}

/// When an acknowledged command counts as durable (see `journal::Durability`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Fsync,
    Os,
    None,
}

impl From<Durability> for journal::Durability {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Fsync => journal::Durability::Fsync,
            Durability::Os => journal::Durability::Os,
            Durability::None => journal::Durability::None,
        }
    }
}

/// The `[journal]` section (named so it does not clash with the crate).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSection {
    /// `None`: `<data_dir>/journal`.
    pub dir: Option<PathBuf>,
    pub segment_size_mb: u64,
    pub durability: Durability,
    /// Most commands per group commit.
    pub max_batch: usize,
    pub watermark_interval: u32,
    /// Least microseconds between the starts of two group commits while
    /// commands keep coming (0: none; default
    /// [`DEFAULT_COMMIT_INTERVAL_US`]).
    pub commit_interval_us: u64,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            dir: None,
            segment_size_mb: journal::JournalConfig::DEFAULT_SEGMENT_SIZE >> 20,
            durability: Durability::Fsync,
            max_batch: 1024,
            watermark_interval: journal::JournalConfig::DEFAULT_WATERMARK_INTERVAL,
            commit_interval_us: DEFAULT_COMMIT_INTERVAL_US,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// `None`: `<data_dir>/snapshots`.
    pub dir: Option<PathBuf>,
    /// Snapshot after this many records (0 = never by count).
    pub interval_records: u64,
    /// Snapshot after this many seconds with new records (0 = never by time).
    pub interval_secs: u64,
    /// Snapshots kept.
    pub keep: u32,
    /// Delete journal segments older than the oldest kept snapshot.
    pub retain_journal: bool,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            dir: None,
            interval_records: 1_000_000,
            interval_secs: 3600,
            keep: 3,
            retain_journal: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `None`: no Postgres, no persister (env `DATABASE_URL`).
    pub url: Option<DatabaseUrl>,
    pub pool_size: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            pool_size: 16,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersisterConfig {
    /// Run the in-process persister when `database.url` is set.
    pub enabled: bool,
    /// Most journal records per Postgres transaction (batches grow with
    /// the lag up to this).
    pub batch_records: usize,
    /// Longest wait before records that arrived are written, when caught up.
    pub flush_interval_ms: u64,
    /// `single`: one writer thread writes every table; `split`: one writer
    /// per domain (core, trading, market_data, activity), each with its own
    /// checkpoint, in parallel.
    pub writers: String,
    /// While orders flow: most of the time each writer spends building and
    /// writing batches (its Postgres backend works meanwhile), in percent,
    /// 1 to 100 (100: unpaced). See `persister::writer::Pacing`. `None`:
    /// 50 when Postgres is on this machine, 100 when it is elsewhere
    /// (`persister::writer::default_busy_percent`).
    pub busy_percent: Option<u8>,
}

impl Default for PersisterConfig {
    fn default() -> Self {
        PersisterConfig {
            enabled: true,
            batch_records: 20_000,
            flush_interval_ms: 20,
            writers: "single".into(),
            busy_percent: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `None`: generated once into the data directory (env `MX_JWT_SECRET`).
    pub jwt_secret: Option<Secret>,
    /// `None`: generated once into the data directory (env `MX_SECRET_KEY`).
    pub secret_key: Option<Secret>,
    pub access_token_ttl_secs: u64,
    pub listen_key_ttl_secs: u64,
    pub max_failed_logins: u32,
    pub lockout_secs: u64,
    /// First admin (env `MX_ADMIN_USERNAME`); set with `admin_password`.
    pub admin_username: Option<String>,
    /// Env `MX_ADMIN_PASSWORD`.
    pub admin_password: Option<Secret>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            secret_key: None,
            access_token_ttl_secs: 3600,
            listen_key_ttl_secs: 3600,
            max_failed_logins: 5,
            lockout_secs: 900,
            admin_username: None,
            admin_password: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    pub weight_per_minute_per_ip: u64,
    pub orders_per_10s_per_key: u64,
    pub orders_per_day_per_key: u64,
    /// Refusals within a window that trigger an IP ban (0 = never ban).
    pub ban_after_rejections: u32,
    /// Length of an IP's first ban; each later one lasts twice as long ...
    pub first_ban_ms: u64,
    /// ... up to this.
    pub max_ban_ms: u64,
    pub max_tracked_keys: usize,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            weight_per_minute_per_ip: 100_000_000,
            orders_per_10s_per_key: 10_000_000,
            orders_per_day_per_key: 1_000_000_000,
            ban_after_rejections: 0,
            first_ban_ms: 2 * 60_000,
            max_ban_ms: 3 * 86_400_000,
            max_tracked_keys: 100_000,
        }
    }
}

impl RateLimitsConfig {
    /// The request-weight auto-ban (HTTP 418), or `None` when
    /// `ban_after_rejections` is 0 (refuse with 429, never ban).
    pub fn ban_policy(&self) -> Option<crate::binance::ratelimit::BanPolicy> {
        (self.ban_after_rejections > 0).then_some(crate::binance::ratelimit::BanPolicy {
            rejections_before_ban: self.ban_after_rejections,
            first_ban_ms: self.first_ban_ms,
            max_ban_ms: self.max_ban_ms,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarketDataConfig {
    pub trades_kept_per_symbol: usize,
    pub agg_trades_kept_per_symbol: usize,
    pub klines_kept_per_interval: usize,
    pub depth_max_levels: usize,
    pub orders_kept_per_user: usize,
    pub trades_kept_per_user: usize,
}

impl MarketDataConfig {
    /// The projection's bounds (market.rs).
    pub fn limits(&self) -> crate::market::MarketLimits {
        crate::market::MarketLimits {
            trades_kept: self.trades_kept_per_symbol,
            agg_trades_kept: self.agg_trades_kept_per_symbol,
            klines_kept: self.klines_kept_per_interval,
            depth_max_levels: self.depth_max_levels,
            orders_kept_per_user: self.orders_kept_per_user,
            trades_kept_per_user: self.trades_kept_per_user,
        }
    }
}

impl Default for MarketDataConfig {
    fn default() -> Self {
        MarketDataConfig {
            trades_kept_per_symbol: 10_000,
            agg_trades_kept_per_symbol: 10_000,
            klines_kept_per_interval: 5_000,
            depth_max_levels: 5_000,
            orders_kept_per_user: 10_000,
            trades_kept_per_user: 10_000,
        }
    }
}

fn zero() -> DecimalStr {
    DecimalStr::from("0")
}
fn default_fee() -> DecimalStr {
    DecimalStr::from("0.001")
}
fn default_confirmations() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// One `[[assets]]` entry; amounts are decimal strings of the asset.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    pub symbol: String,
    pub name: String,
    pub decimals: u8,
    #[serde(default = "zero")]
    pub min_withdraw: DecimalStr,
    #[serde(default = "zero")]
    pub withdraw_fee: DecimalStr,
    /// "0" = unlimited.
    #[serde(default = "zero")]
    pub daily_withdraw_limit: DecimalStr,
    #[serde(default = "default_confirmations")]
    pub confirmations: u32,
    #[serde(default = "yes")]
    pub active: bool,
}

/// Pair status as written in the config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PairStatusConfig {
    #[default]
    Trading,
    Halt,
    CancelOnly,
}

impl From<PairStatusConfig> for PairStatus {
    fn from(s: PairStatusConfig) -> Self {
        match s {
            PairStatusConfig::Trading => PairStatus::Trading,
            PairStatusConfig::Halt => PairStatus::Halt,
            PairStatusConfig::CancelOnly => PairStatus::CancelOnly,
        }
    }
}

/// One `[[pairs]]` entry (Binance filters as decimal strings).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairConfig {
    pub symbol: String,
    pub base: String,
    pub quote: String,
    pub tick_size: DecimalStr,
    pub step_size: DecimalStr,
    pub min_qty: DecimalStr,
    pub max_qty: DecimalStr,
    /// Default: `max_qty`.
    #[serde(default)]
    pub market_max_qty: Option<DecimalStr>,
    #[serde(default = "zero")]
    pub min_notional: DecimalStr,
    #[serde(default)]
    pub max_notional: Option<DecimalStr>,
    /// Default: one tick.
    #[serde(default)]
    pub min_price: Option<DecimalStr>,
    /// Default: 1000000 rounded down to the tick grid.
    #[serde(default)]
    pub max_price: Option<DecimalStr>,
    #[serde(default = "default_fee")]
    pub maker_fee: DecimalStr,
    #[serde(default = "default_fee")]
    pub taker_fee: DecimalStr,
    /// Default: `engine.price_band_pct`.
    #[serde(default)]
    pub price_band_pct: Option<u32>,
    #[serde(default)]
    pub status: PairStatusConfig,
}

// ----------------------------------------------------------------- loading

/// Environment variables with a short name, applied after the long forms.
const SHORT_NAMES: &[(&str, &str, &str)] = &[
    ("MX_HTTP_ADDR", "http", "addr"),
    ("MX_DATA_DIR", "", "data_dir"),
    ("DATABASE_URL", "database", "url"),
    ("MX_ADMIN_USERNAME", "auth", "admin_username"),
    ("MX_ADMIN_PASSWORD", "auth", "admin_password"),
    ("MX_SECRET_KEY", "auth", "secret_key"),
    ("MX_JWT_SECRET", "auth", "jwt_secret"),
];

/// Keys whose values must never appear in an error message.
const SECRET_KEYS: &[(&str, &str)] = &[
    ("auth", "jwt_secret"),
    ("auth", "secret_key"),
    ("auth", "admin_password"),
    ("database", "url"),
];

/// Top-level keys that are not sections settable from the environment.
const NOT_ENV_SECTIONS: &[&str] = &["data_dir", "assets", "pairs"];

/// Load the configuration: defaults <- embedded `config/default.toml` <-
/// `config_file` <- `env` (`MX_<SECTION>__<KEY>`, then the short names).
/// `env` looks a variable up; empty values count as unset. The result is
/// fully validated, assets and pairs included.
pub fn load(
    config_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut merged = parse_layer(DEFAULT_TOML, Path::new(DEFAULT_TOML_NAME))?;
    if let Some(path) = config_file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        merge(&mut merged, parse_layer(&text, path)?);
    }
    for (var, section, key) in env_bindings() {
        let Some(value) = env(&var).filter(|v| !v.is_empty()) else {
            continue;
        };
        apply_env(&mut merged, &var, section, key, &value)?;
    }
    let config: Config = merged
        .try_into()
        .map_err(|e| invalid("(merged)", e.to_string()))?;
    config.validate()?;
    Ok(config)
}

/// [`load`] with the process environment. Also refuses any variable that
/// looks like `MX_<SECTION>__<KEY>` but names no key (a typo would otherwise
/// be ignored silently) and known variables that are not valid UTF-8.
pub fn load_from_process_env(config_file: Option<&Path>) -> Result<Config, ConfigError> {
    let mut names = Vec::new();
    for (k, v) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if v.to_str().is_none() && is_known_env_var(k) {
            return Err(ConfigError::Env {
                var: k.to_string(),
                message: "value is not valid UTF-8".into(),
            });
        }
        names.push(k.to_string());
    }
    check_env_names(names.iter().map(String::as_str))?;
    load(config_file, &|k| std::env::var(k).ok())
}

/// Every environment variable the loader reads, long forms first.
pub fn env_var_names() -> Vec<String> {
    env_bindings().into_iter().map(|(var, _, _)| var).collect()
}

/// Refuse names of the form `MX_<SECTION>__<KEY>` that are not
/// configuration variables.
pub fn check_env_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), ConfigError> {
    for name in names {
        let Some(rest) = name.strip_prefix("MX_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        if is_known_env_var(name) {
            continue;
        }
        let section = section.to_ascii_lowercase();
        let message = match section_fields(&section) {
            Some(fields) => format!(
                "section [{section}] has no key `{}` (keys: {})",
                key.to_ascii_lowercase(),
                fields.join(", ")
            ),
            None => format!(
                "no config section [{section}] settable from the environment (sections: {})",
                env_sections().collect::<Vec<_>>().join(", ")
            ),
        };
        return Err(ConfigError::Env {
            var: name.to_string(),
            message,
        });
    }
    Ok(())
}

fn is_known_env_var(name: &str) -> bool {
    env_var_names().iter().any(|n| n == name)
}

/// Parse one layer, checking it on its own against the schema so that
/// unknown keys and wrong types are reported with this file's name.
fn parse_layer(text: &str, path: &Path) -> Result<Table, ConfigError> {
    let file_err = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    toml::from_str::<Config>(text).map_err(|e| file_err(e.to_string()))?;
    text.parse::<Table>().map_err(|e| file_err(e.to_string()))
}

/// Tables merge key by key; anything else (arrays included) is replaced.
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Sections settable from the environment, in declaration order.
fn env_sections() -> impl Iterator<Item = &'static str> {
    struct_fields::<Config>()
        .iter()
        .copied()
        .filter(|s| !NOT_ENV_SECTIONS.contains(s))
}

/// (variable, section, key); section "" is the top level.
fn env_bindings() -> Vec<(String, &'static str, &'static str)> {
    let mut out = Vec::new();
    for section in env_sections() {
        for key in section_fields(section).unwrap_or(&[]) {
            let var = format!(
                "MX_{}__{}",
                section.to_ascii_uppercase(),
                key.to_ascii_uppercase()
            );
            out.push((var, section, *key));
        }
    }
    for (var, section, key) in SHORT_NAMES {
        out.push((var.to_string(), *section, *key));
    }
    out
}

/// The keys of a section (from its serde derive, so never out of date).
fn section_fields(section: &str) -> Option<&'static [&'static str]> {
    Some(match section {
        "http" => struct_fields::<HttpConfig>(),
        "engine" => struct_fields::<EngineConfig>(),
        "journal" => struct_fields::<JournalSection>(),
        "snapshot" => struct_fields::<SnapshotConfig>(),
        "database" => struct_fields::<DatabaseConfig>(),
        "persister" => struct_fields::<PersisterConfig>(),
        "auth" => struct_fields::<AuthConfig>(),
        "rate_limits" => struct_fields::<RateLimitsConfig>(),
        "market_data" => struct_fields::<MarketDataConfig>(),
        _ => return None,
    })
}

/// Set `section.key` from an environment value, typed by the field: the
/// value is tried as a string first (strings, paths, enums, addresses),
/// then as an integer or boolean.
fn apply_env(
    merged: &mut Table,
    var: &str,
    section: &str,
    key: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let mut candidates = vec![Value::String(value.to_string())];
    if let Ok(i) = value.trim().parse::<i64>() {
        candidates.push(Value::Integer(i));
    }
    match value.trim() {
        "true" => candidates.push(Value::Boolean(true)),
        "false" => candidates.push(Value::Boolean(false)),
        _ => {}
    }
    let mut last_err = String::new();
    for candidate in candidates {
        let mut trial = merged.clone();
        let slot = if section.is_empty() {
            &mut trial
        } else {
            let t = trial
                .entry(section.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            let Value::Table(t) = t else {
                // parse_layer checked every layer against the schema.
                return Err(invalid(section, "is not a table"));
            };
            t
        };
        slot.insert(key.to_string(), candidate);
        match trial.clone().try_into::<Config>() {
            Ok(_) => {
                *merged = trial;
                return Ok(());
            }
            Err(e) => last_err = e.message().trim().to_string(),
        }
    }
    let secret = SECRET_KEYS.contains(&(section, key));
    let message = if secret {
        format!("invalid value for {}", dotted(section, key))
    } else {
        format!(
            "invalid value {value:?} for {}: {last_err}",
            dotted(section, key)
        )
    };
    Err(ConfigError::Env {
        var: var.to_string(),
        message,
    })
}

fn dotted(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    }
}

// ------------------------------------------------------------- validation

fn nonzero(key: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(())
}

impl Config {
    /// Cross-field checks and the exact conversion of assets and pairs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        nonzero("http.max_body_bytes", h.max_body_bytes as u64)?;
        nonzero("http.max_connections", h.max_connections.into())?;
        nonzero("http.request_timeout_ms", h.request_timeout_ms)?;
        if h.ring_capacity < 2 || !h.ring_capacity.is_power_of_two() {
            return Err(invalid(
                "http.ring_capacity",
                format!("must be a power of two >= 2, got {}", h.ring_capacity),
            ));
        }
        nonzero("http.ws_max_connections", h.ws_max_connections.into())?;
        nonzero("http.ws_max_subscriptions", h.ws_max_subscriptions.into())?;
        nonzero(
            "http.ws_max_messages_per_sec",
            h.ws_max_messages_per_sec.into(),
        )?;
        nonzero("http.ws_send_queue", h.ws_send_queue as u64)?;
        nonzero("http.ws_ping_interval_secs", h.ws_ping_interval_secs)?;
        nonzero("http.webhook_timeout_ms", h.webhook_timeout_ms)?;
        nonzero("http.webhook_max_attempts", h.webhook_max_attempts.into())?;
        if h.ws_pong_timeout_secs <= h.ws_ping_interval_secs {
            return Err(invalid(
                "http.ws_pong_timeout_secs",
                format!(
                    "must be longer than http.ws_ping_interval_secs ({} <= {})",
                    h.ws_pong_timeout_secs, h.ws_ping_interval_secs
                ),
            ));
        }

        let e = &self.engine;
        nonzero(
            "engine.max_open_orders_total",
            e.max_open_orders_total.into(),
        )?;
        nonzero(
            "engine.max_open_orders_per_user",
            e.max_open_orders_per_user.into(),
        )?;
        if e.max_open_orders_per_user > e.max_open_orders_total {
            return Err(invalid(
                "engine.max_open_orders_per_user",
                "must not exceed engine.max_open_orders_total",
            ));
        }
        if e.price_band_pct > 10_000 {
            return Err(invalid("engine.price_band_pct", "must be at most 10000"));
        }
        if let Some(core) = e.core {
            if core >= 4096 {
                return Err(invalid(
                    "engine.core",
                    format!("CPU {core} is out of range"),
                ));
            }
        }

        let j = &self.journal;
        if !(1..=MAX_SEGMENT_SIZE_MB).contains(&j.segment_size_mb) {
            return Err(invalid(
                "journal.segment_size_mb",
                format!(
                    "must be 1 to {MAX_SEGMENT_SIZE_MB}, got {}",
                    j.segment_size_mb
                ),
            ));
        }
        nonzero("journal.max_batch", j.max_batch as u64)?;
        nonzero("journal.watermark_interval", j.watermark_interval.into())?;
        if j.commit_interval_us > MAX_COMMIT_INTERVAL_US {
            return Err(invalid(
                "journal.commit_interval_us",
                format!(
                    "must be 0 to {MAX_COMMIT_INTERVAL_US} (microseconds), got {}",
                    j.commit_interval_us
                ),
            ));
        }

        nonzero("snapshot.keep", self.snapshot.keep.into())?;
        nonzero("database.pool_size", self.database.pool_size.into())?;
        nonzero(
            "persister.batch_records",
            self.persister.batch_records as u64,
        )?;
        nonzero(
            "persister.flush_interval_ms",
            self.persister.flush_interval_ms,
        )?;
        if let Some(p) = self.persister.busy_percent {
            if !(1..=100).contains(&p) {
                return Err(invalid(
                    "persister.busy_percent",
                    format!("must be 1 to 100, got {p}"),
                ));
            }
        }
        if !matches!(self.persister.writers.as_str(), "single" | "split") {
            return Err(invalid(
                "persister.writers",
                format!(
                    "must be \"single\" or \"split\", not {:?}",
                    self.persister.writers
                ),
            ));
        }

        let a = &self.auth;
        nonzero("auth.access_token_ttl_secs", a.access_token_ttl_secs)?;
        nonzero("auth.listen_key_ttl_secs", a.listen_key_ttl_secs)?;
        nonzero("auth.max_failed_logins", a.max_failed_logins.into())?;
        nonzero("auth.lockout_secs", a.lockout_secs)?;
        match (&a.admin_username, &a.admin_password) {
            (Some(_), None) => {
                return Err(invalid(
                    "auth.admin_password",
                    "auth.admin_username is set but the password is not (MX_ADMIN_PASSWORD)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "auth.admin_username",
                    "auth.admin_password is set but the username is not (MX_ADMIN_USERNAME)",
                ))
            }
            _ => {}
        }

        let r = &self.rate_limits;
        nonzero(
            "rate_limits.weight_per_minute_per_ip",
            r.weight_per_minute_per_ip,
        )?;
        nonzero(
            "rate_limits.orders_per_10s_per_key",
            r.orders_per_10s_per_key,
        )?;
        nonzero(
            "rate_limits.orders_per_day_per_key",
            r.orders_per_day_per_key,
        )?;
        nonzero("rate_limits.max_tracked_keys", r.max_tracked_keys as u64)?;
        if r.ban_after_rejections > 0 {
            nonzero("rate_limits.first_ban_ms", r.first_ban_ms)?;
            if r.max_ban_ms < r.first_ban_ms {
                return Err(invalid(
                    "rate_limits.max_ban_ms",
                    format!(
                        "must be at least rate_limits.first_ban_ms ({}), got {}",
                        r.first_ban_ms, r.max_ban_ms
                    ),
                ));
            }
        }

        let m = &self.market_data;
        nonzero(
            "market_data.trades_kept_per_symbol",
            m.trades_kept_per_symbol as u64,
        )?;
        nonzero(
            "market_data.agg_trades_kept_per_symbol",
            m.agg_trades_kept_per_symbol as u64,
        )?;
        nonzero(
            "market_data.orders_kept_per_user",
            m.orders_kept_per_user as u64,
        )?;
        nonzero(
            "market_data.trades_kept_per_user",
            m.trades_kept_per_user as u64,
        )?;
        let min_klines = crate::market::MIN_KLINES_KEPT_PER_INTERVAL;
        if m.klines_kept_per_interval < min_klines {
            return Err(invalid(
                "market_data.klines_kept_per_interval",
                format!(
                    "must be at least {min_klines} (the 24 h ticker folds a day of 1m klines \
                     and the one before it), got {}",
                    m.klines_kept_per_interval
                ),
            ));
        }
        if !(1..=MAX_DEPTH_LEVELS).contains(&m.depth_max_levels) {
            return Err(invalid(
                "market_data.depth_max_levels",
                format!(
                    "must be 1 to {MAX_DEPTH_LEVELS} (Binance's deepest /api/v3/depth), got {}",
                    m.depth_max_levels
                ),
            ));
        }

        let assets = self.asset_specs()?;
        self.pair_specs(&assets)?;
        Ok(())
    }

    /// The assets as engine specs, in config order (their ids are 1, 2, ...).
    pub fn asset_specs(&self) -> Result<Vec<AssetSpec>, ConfigError> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(self.assets.len());
        for (i, a) in self.assets.iter().enumerate() {
            let name = if a.symbol.is_empty() {
                format!("#{}", i + 1)
            } else {
                a.symbol.clone()
            };
            let err = |field: &str, message: String| ConfigError::Asset {
                asset: name.clone(),
                field: field.to_string(),
                message,
            };
            if !valid_symbol(&a.symbol) {
                return Err(err(
                    "symbol",
                    format!("{:?} must be 1 to 20 of A-Z and 0-9", a.symbol),
                ));
            }
            if !seen.insert(a.symbol.as_str()) {
                return Err(err("symbol", "listed twice".into()));
            }
            if a.name.trim().is_empty() || a.name.len() > 64 {
                return Err(err("name", "must be 1 to 64 characters".into()));
            }
            if a.decimals > MAX_ASSET_DECIMALS {
                return Err(err(
                    "decimals",
                    format!("{} is more than {MAX_ASSET_DECIMALS}", a.decimals),
                ));
            }
            let amount = |field: &str, v: &DecimalStr| {
                parse_units(v.as_str(), a.decimals.into())
                    .map_err(|e| err(field, amount_message(v, &e, &a.symbol, a.decimals)))
            };
            out.push(AssetSpec {
                symbol: a.symbol.clone(),
                name: a.name.clone(),
                decimals: a.decimals,
                min_withdraw_units: amount("min_withdraw", &a.min_withdraw)?,
                withdraw_fee_units: amount("withdraw_fee", &a.withdraw_fee)?,
                daily_withdraw_limit_units: amount(
                    "daily_withdraw_limit",
                    &a.daily_withdraw_limit,
                )?,
                confirmations: a.confirmations,
                active: a.active,
            });
        }
        Ok(out)
    }

    /// The pairs as engine specs, in config order, against `assets` (as
    /// returned by [`Config::asset_specs`]; asset ids are positions + 1).
    pub fn pair_specs(&self, assets: &[AssetSpec]) -> Result<Vec<PairSpec>, ConfigError> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(self.pairs.len());
        for (i, p) in self.pairs.iter().enumerate() {
            let name = if p.symbol.is_empty() {
                format!("#{}", i + 1)
            } else {
                p.symbol.clone()
            };
            out.push(self.pair_spec(p, &name, assets, &mut seen)?);
        }
        Ok(out)
    }

    fn pair_spec<'a>(
        &self,
        p: &'a PairConfig,
        name: &str,
        assets: &[AssetSpec],
        seen: &mut HashSet<&'a str>,
    ) -> Result<PairSpec, ConfigError> {
        let err = |field: &str, message: String| ConfigError::Pair {
            pair: name.to_string(),
            field: field.to_string(),
            message,
        };
        if !valid_symbol(&p.symbol) {
            return Err(err(
                "symbol",
                format!("{:?} must be 1 to 20 of A-Z and 0-9", p.symbol),
            ));
        }
        if !seen.insert(p.symbol.as_str()) {
            return Err(err("symbol", "listed twice".into()));
        }
        let find = |field: &str, sym: &str| {
            assets
                .iter()
                .position(|a| a.symbol == sym)
                .map(|i| (AssetId(i as u32 + 1), &assets[i]))
                .ok_or_else(|| {
                    let known: Vec<&str> = assets.iter().map(|a| a.symbol.as_str()).collect();
                    err(
                        field,
                        format!(
                            "unknown asset {sym:?} (configured assets: {})",
                            known.join(", ")
                        ),
                    )
                })
        };
        let (base_id, base) = find("base", &p.base)?;
        let (quote_id, quote) = find("quote", &p.quote)?;
        if base_id == quote_id {
            return Err(err("quote", "must differ from base".into()));
        }
        let (bd, qd) = (u32::from(base.decimals), u32::from(quote.decimals));

        // Exact amount of `asset`, refusing more decimals than it has.
        let units = |field: &str, v: &DecimalStr, asset: &AssetSpec| {
            parse_units(v.as_str(), asset.decimals.into())
                .map_err(|e| err(field, amount_message(v, &e, &asset.symbol, asset.decimals)))
        };
        let positive = |field: &str, v: u64, what: &DecimalStr| {
            if v == 0 {
                Err(err(field, format!("{what:?} must be greater than 0")))
            } else {
                Ok(v)
            }
        };
        let tick_units = positive(
            "tick_size",
            units("tick_size", &p.tick_size, quote)?,
            &p.tick_size,
        )?;
        let step_units = positive(
            "step_size",
            units("step_size", &p.step_size, base)?,
            &p.step_size,
        )?;

        // A base quantity on the step grid.
        let qty = |field: &str, v: &DecimalStr| {
            parse_on_step(v.as_str(), bd, step_units).map_err(|e| {
                err(
                    field,
                    match e {
                        DecimalError::NotOnStep { step } => format!(
                            "{v:?} is not a multiple of step_size {step} {}",
                            base.symbol
                        ),
                        e => amount_message(v, &e, &base.symbol, base.decimals),
                    },
                )
            })
        };
        let min_qty_units = positive("min_qty", qty("min_qty", &p.min_qty)?, &p.min_qty)?;
        let max_qty_units = qty("max_qty", &p.max_qty)?;
        if max_qty_units < min_qty_units {
            return Err(err("max_qty", "must be at least min_qty".into()));
        }
        let market_max_qty_units = match &p.market_max_qty {
            Some(v) => qty("market_max_qty", v)?,
            None => max_qty_units,
        };
        if market_max_qty_units < min_qty_units {
            return Err(err("market_max_qty", "must be at least min_qty".into()));
        }

        let min_notional_units = units("min_notional", &p.min_notional, quote)?;
        let max_notional_units = match &p.max_notional {
            Some(v) => positive("max_notional", units("max_notional", v, quote)?, v)?,
            None => 0,
        };
        if max_notional_units != 0 && max_notional_units < min_notional_units {
            return Err(err("max_notional", "must be at least min_notional".into()));
        }

        // A price on the tick grid, in ticks.
        let ticks = |field: &str, v: &DecimalStr| {
            parse_on_step(v.as_str(), qd, tick_units)
                .map(|u| u / tick_units)
                .map_err(|e| {
                    err(
                        field,
                        match e {
                            DecimalError::NotOnStep { step } => format!(
                                "{v:?} is not a multiple of tick_size {step} {}",
                                quote.symbol
                            ),
                            e => amount_message(v, &e, &quote.symbol, quote.decimals),
                        },
                    )
                })
        };
        let min_price_ticks = match &p.min_price {
            Some(v) => positive("min_price", ticks("min_price", v)?, v)?,
            None => 1,
        };
        let max_price_ticks = match &p.max_price {
            Some(v) => ticks("max_price", v)?,
            None => (DEFAULT_MAX_PRICE_WHOLE as u128 * pow10(qd) as u128 / tick_units as u128)
                .clamp(1, u64::MAX as u128) as u64,
        };
        if max_price_ticks < min_price_ticks {
            return Err(err("max_price", "must be at least min_price".into()));
        }

        let fee = |field: &str, v: &DecimalStr| {
            parse_fee_rate(v.as_str()).map_err(|e| {
                err(
                    field,
                    match e {
                        DecimalError::Overflow => format!("{v:?} is more than 1 (100%)"),
                        DecimalError::TooManyDecimals { .. } => {
                            format!("{v:?} has more than 8 decimal places")
                        }
                        e => format!("{v:?}: {e}"),
                    },
                )
            })
        };
        let maker_fee_e8 = fee("maker_fee", &p.maker_fee)?;
        let taker_fee_e8 = fee("taker_fee", &p.taker_fee)?;
        let price_band_pct = p.price_band_pct.unwrap_or(self.engine.price_band_pct);
        if price_band_pct > 10_000 {
            return Err(err("price_band_pct", "must be at most 10000".into()));
        }

        Ok(PairSpec {
            symbol: p.symbol.clone(),
            base: base_id,
            quote: quote_id,
            tick_units,
            step_units,
            min_qty_units,
            max_qty_units,
            market_max_qty_units,
            min_notional_units,
            max_notional_units,
            min_price_ticks,
            max_price_ticks,
            maker_fee_e8,
            taker_fee_e8,
            price_band_pct,
            status: p.status.into(),
        })
    }

    /// Engine-wide limits for `Command::SetLimits`.
    pub fn engine_limits(&self) -> Limits {
        Limits {
            max_open_orders_per_user: self.engine.max_open_orders_per_user,
            max_open_orders_total: self.engine.max_open_orders_total,
            max_api_keys_per_user: self.engine.max_api_keys_per_user,
            max_failed_logins: self.auth.max_failed_logins,
            lockout_ms: self.auth.lockout_secs.saturating_mul(1_000),
        }
    }

    /// The data directory's layout: `data_dir`, with the journal and the
    /// snapshots where `journal.dir` / `snapshot.dir` put them.
    pub fn layout(&self) -> persister::replica::DataDir {
        persister::replica::DataDir::with_dirs(
            &self.data_dir,
            self.journal.dir.clone(),
            self.snapshot.dir.clone(),
        )
    }

    /// `journal.dir`, or `<data_dir>/journal`.
    pub fn journal_dir(&self) -> PathBuf {
        self.layout().journal()
    }

    /// `snapshot.dir`, or `<data_dir>/snapshots`.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.layout().snapshots()
    }

    /// How to open the journal writer.
    pub fn journal_config(&self) -> journal::JournalConfig {
        journal::JournalConfig {
            segment_size: self.journal.segment_size_mb << 20,
            durability: self.journal.durability.into(),
            watermark_interval: self.journal.watermark_interval,
            ..journal::JournalConfig::new(self.journal_dir())
        }
    }

    /// Whether `serve` runs the in-process persister.
    pub fn persister_enabled(&self) -> bool {
        self.persister.enabled && self.database.url.is_some()
    }
}

/// Same rule as the engine's symbols (it refuses anything else).
fn valid_symbol(s: &str) -> bool {
    (1..=20).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn amount_message(v: &DecimalStr, e: &DecimalError, asset: &str, decimals: u8) -> String {
    match e {
        DecimalError::TooManyDecimals { .. } | DecimalError::NotOnStep { .. } => {
            format!("{v:?} has too many decimal places ({asset} has {decimals} decimals)")
        }
        DecimalError::Overflow => format!("{v:?} is too large for {asset} at {decimals} decimals"),
        e => format!("{v:?}: {e}"),
    }
}

// ------------------------------------------------------ field introspection

/// The field names of a derived `Deserialize` struct, read from the
/// `deserialize_struct` call its derive makes (nothing is deserialized).
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldGrabber { out: &mut fields });
    fields.unwrap_or(&[])
}

struct FieldGrabber<'a> {
    out: &'a mut Option<&'static [&'static str]>,
}

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field introspection")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> de::Deserializer<'de> for FieldGrabber<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.out = Some(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Keys mentioned in `text` as `key =` or `# key =` lines, by section
/// (documentation check: every key of every section appears in
/// `config/default.toml`).
#[cfg(test)]
fn documented_keys(text: &str) -> std::collections::BTreeSet<(String, String)> {
    let mut section = String::new();
    let mut out = std::collections::BTreeSet::new();
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            if !line.starts_with('#') {
                section = s.trim_matches(['[', ']']).to_string();
            }
            continue;
        }
        if let Some((k, _)) = l.split_once('=') {
            let k = k.trim();
            if !k.is_empty()
                && k.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
            {
                out.insert((section.clone(), k.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn introspection_sees_every_section_and_key() {
        let top = struct_fields::<Config>();
        assert_eq!(
            top,
            [
                "data_dir",
                "http",
                "engine",
                "journal",
                "snapshot",
                "database",
                "persister",
                "auth",
                "rate_limits",
                "market_data",
                "assets",
                "pairs"
            ]
        );
        for s in env_sections() {
            let f = section_fields(s).unwrap_or_else(|| panic!("section {s} not mapped"));
            assert!(!f.is_empty(), "{s}");
        }
        assert!(struct_fields::<HttpConfig>().contains(&"ws_pong_timeout_secs"));
        let names = env_var_names();
        for v in [
            "MX_HTTP__ADDR",
            "MX_JOURNAL__DURABILITY",
            "MX_ENGINE__WAIT_STRATEGY",
            "MX_AUTH__JWT_SECRET",
            "MX_MARKET_DATA__DEPTH_MAX_LEVELS",
            "MX_HTTP_ADDR",
            "DATABASE_URL",
        ] {
            assert!(names.iter().any(|n| n == v), "{v} missing");
        }
        assert!(!names.iter().any(|n| n.starts_with("MX_ASSETS")));
    }

    #[test]
    fn default_toml_equals_builtin_defaults_and_documents_every_key() {
        let mut c = load(None, &no_env).unwrap();
        assert_eq!(c.assets.len(), 3);
        assert_eq!(c.pairs.len(), 3);
        c.assets.clear();
        c.pairs.clear();
        assert_eq!(c, Config::default());

        let documented = documented_keys(DEFAULT_TOML);
        for s in env_sections() {
            for k in section_fields(s).unwrap() {
                assert!(
                    documented.contains(&(s.to_string(), k.to_string())),
                    "config/default.toml does not document [{s}] {k}"
                );
            }
        }
        for k in struct_fields::<PairConfig>() {
            assert!(DEFAULT_TOML.contains(k), "pair key {k} undocumented");
        }
        for k in struct_fields::<AssetConfig>() {
            assert!(DEFAULT_TOML.contains(k), "asset key {k} undocumented");
        }
    }

    #[test]
    fn empty_file_is_valid() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
    }

    #[test]
    fn merge_replaces_arrays_and_merges_tables() {
        let mut a: Table = "x = 1\n[t]\na = 1\nb = 2\n[[arr]]\nv = 1\n[[arr]]\nv = 2"
            .parse()
            .unwrap();
        let b: Table = "[t]\nb = 3\n[[arr]]\nv = 9".parse().unwrap();
        merge(&mut a, b);
        let want: Table = "x = 1\n[t]\na = 1\nb = 3\n[[arr]]\nv = 9".parse().unwrap();
        assert_eq!(a, want);
    }

    #[test]
    fn redacts_connection_strings() {
        let r = redact_connection_string;
        assert_eq!(
            r("postgres://mx:s3cr%40t@db.local:5432/mx?sslmode=disable"),
            "postgres://mx:***@db.local:5432/mx?sslmode=disable"
        );
        assert_eq!(
            r("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(
            r("postgresql://h/db?user=u&password=hunter2&sslmode=require"),
            "postgresql://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            r("host=h user=u password=hunter2 dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(
            r("host=h password = 'hun ter\\'2' dbname=d"),
            "host=h password = *** dbname=d"
        );
        assert_eq!(r("postgres://u:p@w:rd@h/d"), "postgres://u:***@h/d");
        assert_eq!(r("PASSWORD=x"), "PASSWORD=***");
    }

    #[test]
    fn decimal_strings_accept_integers_refuse_floats() {
        #[derive(Deserialize)]
        struct T {
            v: DecimalStr,
        }
        assert_eq!(toml::from_str::<T>("v = 9000").unwrap().v.as_str(), "9000");
        assert_eq!(
            toml::from_str::<T>("v = \"0.1\"").unwrap().v.as_str(),
            "0.1"
        );
        let e = toml::from_str::<T>("v = 0.1").err().unwrap().to_string();
        assert!(e.contains("write decimal amounts as strings"), "{e}");
    }

    #[test]
    fn env_typing_tries_string_then_scalars() {
        let mut t = Table::new();
        apply_env(&mut t, "MX_ENGINE__CORE", "engine", "core", "3").unwrap();
        apply_env(
            &mut t,
            "MX_SNAPSHOT__RETAIN_JOURNAL",
            "snapshot",
            "retain_journal",
            "true",
        )
        .unwrap();
        apply_env(&mut t, "MX_DATA_DIR", "", "data_dir", "123").unwrap();
        let c: Config = t.try_into().unwrap();
        assert_eq!(c.engine.core, Some(3));
        assert!(c.snapshot.retain_journal);
        assert_eq!(c.data_dir, PathBuf::from("123"));
    }

    #[test]
    fn env_errors_name_the_value_and_field() {
        let mut t = Table::new();
        let e = apply_env(
            &mut t,
            "MX_DATABASE__POOL_SIZE",
            "database",
            "pool_size",
            "-1",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("MX_DATABASE__POOL_SIZE"), "{e}");
        assert!(
            e.contains("\"-1\"") && e.contains("database.pool_size"),
            "{e}"
        );
        assert!(t.is_empty(), "a failed value leaves the table unchanged");
    }
}
