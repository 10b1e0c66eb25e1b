//! Binance-style rate limits: request weight per IP (`X-MBX-USED-WEIGHT-1M`)
//! and unfilled-order counts per API key (`X-MBX-ORDER-COUNT-10S`, `-1D`),
//! both in fixed windows aligned to the clock like Binance's, plus the
//! per-endpoint weight table from rest-api.md.
//!
//! Invariants: a key's counter in a window never exceeds the window's limit
//! (a request that would pass it is refused and not counted); each call
//! costs one hash, one shard lock and O(windows) work, except a sweep of
//! one shard when that shard is full, at most once per second per shard;
//! memory is bounded by `max_tracked_keys` entries, and idle entries (all
//! windows over, no ban) are evicted. When a shard is full of live entries a
//! new key is refused with -1003 "Too many requests queued." (fail closed:
//! a flood of new IPs cannot reset everyone's counters). Locks are
//! `std::sync::Mutex`, held only for that O(1) step, and poisoning is
//! ignored (the counters stay consistent at every await-free step).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};

use super::errors::BinanceError;
use super::params::Params;

/// Most windows one limiter tracks (Binance uses 1 for weight, 2 for
/// orders).
pub const MAX_WINDOWS: usize = 4;
const MAX_SHARDS: usize = 64;
/// A full shard is swept again at most this often.
const SWEEP_BACKOFF_MS: u64 = 1000;

/// Unit of a rate-limit interval, as exchangeInfo's `rateLimits` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalUnit {
    Second,
    Minute,
    Hour,
    Day,
}

impl IntervalUnit {
    pub fn millis(self) -> u64 {
        match self {
            IntervalUnit::Second => 1_000,
            IntervalUnit::Minute => 60_000,
            IntervalUnit::Hour => 3_600_000,
            IntervalUnit::Day => 86_400_000,
        }
    }

    /// Header letter: S, M, H, D.
    pub fn letter(self) -> char {
        match self {
            IntervalUnit::Second => 'S',
            IntervalUnit::Minute => 'M',
            IntervalUnit::Hour => 'H',
            IntervalUnit::Day => 'D',
        }
    }

    /// exchangeInfo's `interval`: SECOND, MINUTE, HOUR, DAY.
    pub fn as_str(self) -> &'static str {
        match self {
            IntervalUnit::Second => "SECOND",
            IntervalUnit::Minute => "MINUTE",
            IntervalUnit::Hour => "HOUR",
            IntervalUnit::Day => "DAY",
        }
    }
}

/// One fixed window: at most `limit` per `interval_num` `unit`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    pub interval_num: u32,
    pub unit: IntervalUnit,
    pub limit: u64,
}

impl WindowLimit {
    pub fn new(interval_num: u32, unit: IntervalUnit, limit: u64) -> Self {
        WindowLimit {
            interval_num,
            unit,
            limit,
        }
    }

    pub fn interval_ms(&self) -> u64 {
        u64::from(self.interval_num).saturating_mul(self.unit.millis())
    }
}

/// What a limiter counts, which decides its header names and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterKind {
    /// Request weight per IP: `X-MBX-USED-WEIGHT-<n><u>`, -1003 / 429.
    RequestWeight,
    /// New orders per account or key: `X-MBX-ORDER-COUNT-<n><u>`, -1015 / 429.
    Orders,
}

impl LimiterKind {
    fn header_prefix(self) -> &'static str {
        match self {
            LimiterKind::RequestWeight => "X-MBX-USED-WEIGHT-",
            LimiterKind::Orders => "X-MBX-ORDER-COUNT-",
        }
    }

    /// The `rateLimitType` of Binance's `rateLimits` entries.
    pub fn json_name(self) -> &'static str {
        match self {
            LimiterKind::RequestWeight => "REQUEST_WEIGHT",
            LimiterKind::Orders => "ORDERS",
        }
    }
}

/// Auto-ban after repeated refusals (HTTP 418), Binance's "from 2 minutes
/// to 3 days" escalation: the first ban lasts `first_ban_ms`, each next one
/// twice as long, capped at `max_ban_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanPolicy {
    /// Refusals within one window of the first limit that trigger a ban.
    pub rejections_before_ban: u32,
    pub first_ban_ms: u64,
    pub max_ban_ms: u64,
}

impl Default for BanPolicy {
    fn default() -> Self {
        BanPolicy {
            rejections_before_ban: 100,
            first_ban_ms: 2 * 60_000,
            max_ban_ms: 3 * 86_400_000,
        }
    }
}

/// A limiter's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterConfig {
    pub kind: LimiterKind,
    /// 1..=MAX_WINDOWS windows, all enforced.
    pub windows: Vec<WindowLimit>,
    /// Upper bound on keys tracked at once (memory bound).
    pub max_tracked_keys: usize,
    /// `None`: never ban, only refuse.
    pub ban: Option<BanPolicy>,
}

impl LimiterConfig {
    /// Binance's production request weight: 6000 per minute per IP.
    pub fn binance_request_weight() -> Self {
        LimiterConfig {
            kind: LimiterKind::RequestWeight,
            windows: vec![WindowLimit::new(1, IntervalUnit::Minute, 6000)],
            max_tracked_keys: 100_000,
            ban: Some(BanPolicy::default()),
        }
    }

    /// Binance's production order counts: 100 per 10 s, 200000 per day.
    pub fn binance_orders() -> Self {
        LimiterConfig {
            kind: LimiterKind::Orders,
            windows: vec![
                WindowLimit::new(10, IntervalUnit::Second, 100),
                WindowLimit::new(1, IntervalUnit::Day, 200_000),
            ],
            max_tracked_keys: 100_000,
            ban: None,
        }
    }
}

/// A configuration the limiter cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("a rate limiter needs 1 to {MAX_WINDOWS} windows, got {0}")]
    WindowCount(usize),
    #[error("rate limit window {0} has a zero interval")]
    ZeroInterval(usize),
    #[error("max_tracked_keys must be at least 1")]
    ZeroCapacity,
}

/// Counts in each window after a request (or before a refused one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    used: [u64; MAX_WINDOWS],
    len: usize,
}

impl Usage {
    fn zero(len: usize) -> Self {
        Usage {
            used: [0; MAX_WINDOWS],
            len,
        }
    }

    /// One count per configured window, in configuration order.
    pub fn as_slice(&self) -> &[u64] {
        &self.used[..self.len]
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReason {
    /// Window `index` of the configuration is full.
    Window { index: usize },
    /// The key is auto-banned until `until_ms`.
    Banned { until_ms: u64 },
    /// The limiter tracks as many keys as it may.
    Capacity,
}

/// A refused request: send `error` (its status is 429 or 418) with
/// `Retry-After: retry_after_secs` and the usage headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub reason: LimitReason,
    pub retry_after_secs: u64,
    pub usage: Usage,
    pub error: BinanceError,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    window_start_ms: u64,
    used: u64,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    counters: [Counter; MAX_WINDOWS],
    rejections: u32,
    rejections_window_start_ms: u64,
    ban_until_ms: u64,
    ban_level: u32,
}

#[derive(Debug)]
struct Shard<K> {
    map: HashMap<K, Entry>,
    next_sweep_ms: u64,
}

/// Fixed-window counters per key, sharded for concurrent use.
pub struct RateLimiter<K> {
    config: LimiterConfig,
    interval_ms: Vec<u64>,
    header_names: Vec<String>,
    /// Per window, the constant head of its `rateLimits` entry (everything
    /// before the count), written once here instead of on every reply.
    json_heads: Vec<String>,
    shards: Box<[Mutex<Shard<K>>]>,
    per_shard_cap: usize,
    hasher: RandomState,
}

impl<K> std::fmt::Debug for RateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.config)
            .field("shards", &self.shards.len())
            .field("per_shard_cap", &self.per_shard_cap)
            .finish()
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(config: LimiterConfig) -> Result<Self, ConfigError> {
        let n = config.windows.len();
        if n == 0 || n > MAX_WINDOWS {
            return Err(ConfigError::WindowCount(n));
        }
        if let Some(i) = config.windows.iter().position(|w| w.interval_ms() == 0) {
            return Err(ConfigError::ZeroInterval(i));
        }
        if config.max_tracked_keys == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        // Largest power of two <= min(MAX_SHARDS, max_tracked_keys), so that
        // shards * per_shard_cap never exceeds max_tracked_keys.
        let limit = config.max_tracked_keys.min(MAX_SHARDS);
        let shard_count = 1usize << (usize::BITS - 1 - limit.leading_zeros());
        let per_shard_cap = config.max_tracked_keys / shard_count;
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::new(),
                    next_sweep_ms: 0,
                })
            })
            .collect();
        let header_names = config
            .windows
            .iter()
            .map(|w| {
                format!(
                    "{}{}{}",
                    config.kind.header_prefix(),
                    w.interval_num,
                    w.unit.letter()
                )
            })
            .collect();
        let json_heads = config
            .windows
            .iter()
            .map(|w| {
                format!(
                    "{{\"rateLimitType\":\"{}\",\"interval\":\"{}\",\"intervalNum\":{},\"limit\":{},\"count\":",
                    config.kind.json_name(),
                    w.unit.as_str(),
                    w.interval_num,
                    w.limit
                )
            })
            .collect();
        Ok(RateLimiter {
            interval_ms: config
                .windows
                .iter()
                .map(WindowLimit::interval_ms)
                .collect(),
            config,
            header_names,
            json_heads,
            shards,
            per_shard_cap,
            hasher: RandomState::new(),
        })
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// `usage`'s entries of a `rateLimits` array, appended to `out` as
    /// JSON objects separated by commas (a comma first unless `out` is
    /// empty or ends with the array's `[`): `{"rateLimitType":"ORDERS",
    /// "interval":"SECOND","intervalNum":10,"limit":100,"count":3}`.
    pub fn push_rate_limits_json(&self, out: &mut String, usage: &Usage) {
        for (head, count) in self.json_heads.iter().zip(usage.as_slice()) {
            if !out.is_empty() && !out.ends_with('[') {
                out.push(',');
            }
            out.push_str(head);
            engine::decimal::push_units(out, u128::from(*count), 0);
            out.push('}');
        }
    }

    /// Header names, one per window: `X-MBX-USED-WEIGHT-1M`, ...
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// `(header name, value)` pairs for a usage.
    pub fn headers<'a>(&'a self, usage: &'a Usage) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        self.header_names
            .iter()
            .map(String::as_str)
            .zip(usage.as_slice().iter().copied())
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K>> {
        let h = self.hasher.hash_one(key) as usize;
        let shard = &self.shards[h & (self.shards.len() - 1)];
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Count `weight` for `key` at `now_ms` if every window has room, and
    /// return the counts after it; otherwise count nothing and say why.
    pub fn check_and_add(&self, key: &K, weight: u64, now_ms: u64) -> Result<Usage, Limited> {
        let mut shard = self.shard(key);
        if let Some(entry) = shard.map.get_mut(key) {
            return self.apply(entry, weight, now_ms);
        }
        if shard.map.len() >= self.per_shard_cap {
            if now_ms >= shard.next_sweep_ms {
                shard.map.retain(|_, e| !self.is_idle(e, now_ms));
            }
            if shard.map.len() >= self.per_shard_cap {
                shard.next_sweep_ms = now_ms.saturating_add(SWEEP_BACKOFF_MS);
                return Err(Limited {
                    reason: LimitReason::Capacity,
                    retry_after_secs: 1,
                    usage: Usage::zero(self.interval_ms.len()),
                    error: BinanceError::too_many_requests_queued(),
                });
            }
        }
        let entry = shard.map.entry(key.clone()).or_default();
        self.apply(entry, weight, now_ms)
    }

    /// Current counts for `key` without counting anything (a `&str` for a
    /// `String`-keyed limiter: nothing is allocated).
    pub fn usage<Q>(&self, key: &Q, now_ms: u64) -> Usage
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        match shard.map.get(key) {
            Some(entry) => self.current(entry, now_ms),
            None => Usage::zero(self.interval_ms.len()),
        }
    }

    /// The counts of `entry`'s windows that are still running at `now_ms`.
    fn current(&self, entry: &Entry, now_ms: u64) -> Usage {
        let mut usage = Usage::zero(self.interval_ms.len());
        for (i, &ms) in self.interval_ms.iter().enumerate() {
            let c = entry.counters[i];
            if now_ms < c.window_start_ms.saturating_add(ms) {
                usage.used[i] = c.used;
            }
        }
        usage
    }

    /// Evict every idle entry; returns how many went. For a periodic task.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = shard.map.len();
            shard.map.retain(|_, e| !self.is_idle(e, now_ms));
            removed += before - shard.map.len();
        }
        removed
    }

    /// Keys tracked right now (locks each shard in turn).
    pub fn tracked_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }

    fn is_idle(&self, entry: &Entry, now_ms: u64) -> bool {
        entry.ban_until_ms <= now_ms
            && self.interval_ms.iter().enumerate().all(|(i, &ms)| {
                let c = entry.counters[i];
                c.used == 0 || now_ms >= c.window_start_ms.saturating_add(ms)
            })
    }

    fn apply(&self, entry: &mut Entry, weight: u64, now_ms: u64) -> Result<Usage, Limited> {
        let n = self.interval_ms.len();
        if entry.ban_until_ms > now_ms {
            // Refused without counting; the headers still show the weight
            // used in the running window, as on every response.
            let usage = self.current(entry, now_ms);
            return Err(self.banned(entry.ban_until_ms, now_ms, usage));
        }
        let mut usage = Usage::zero(n);
        let mut refused: Option<(usize, u64)> = None;
        for (i, &ms) in self.interval_ms.iter().enumerate() {
            let c = &mut entry.counters[i];
            let start = now_ms - now_ms % ms;
            // A clock that went back keeps the newer window (conservative).
            if start > c.window_start_ms {
                *c = Counter {
                    window_start_ms: start,
                    used: 0,
                };
            }
            usage.used[i] = c.used;
            let limit = self.config.windows[i].limit;
            if c.used.checked_add(weight).is_none_or(|total| total > limit) {
                let end = c.window_start_ms.saturating_add(ms);
                let wait_secs = end.saturating_sub(now_ms).div_ceil(1000).max(1);
                if refused.is_none_or(|(_, w)| wait_secs > w) {
                    refused = Some((i, wait_secs));
                }
            }
        }
        let Some((index, retry_after_secs)) = refused else {
            for (i, c) in entry.counters[..n].iter_mut().enumerate() {
                c.used = c.used.saturating_add(weight);
                usage.used[i] = c.used;
            }
            return Ok(usage);
        };
        if let Some(ban) = self.config.ban {
            let first_window_start = entry.counters[0].window_start_ms;
            if entry.rejections_window_start_ms != first_window_start {
                entry.rejections_window_start_ms = first_window_start;
                entry.rejections = 0;
            }
            entry.rejections = entry.rejections.saturating_add(1);
            if entry.rejections > ban.rejections_before_ban {
                let factor = 1u64.checked_shl(entry.ban_level).unwrap_or(u64::MAX);
                let duration = ban.first_ban_ms.saturating_mul(factor).min(ban.max_ban_ms);
                entry.ban_until_ms = now_ms.saturating_add(duration.max(1));
                entry.ban_level = entry.ban_level.saturating_add(1);
                entry.rejections = 0;
                return Err(self.banned(entry.ban_until_ms, now_ms, usage));
            }
        }
        let w = self.config.windows[index];
        let error = match self.config.kind {
            LimiterKind::RequestWeight => {
                BinanceError::too_much_request_weight(w.limit, w.interval_num, w.unit.as_str())
            }
            LimiterKind::Orders => {
                BinanceError::too_many_orders(w.limit, w.interval_num, w.unit.as_str())
            }
        };
        Err(Limited {
            reason: LimitReason::Window { index },
            retry_after_secs,
            usage,
            error,
        })
    }

    fn banned(&self, until_ms: u64, now_ms: u64, usage: Usage) -> Limited {
        let error = match self.config.kind {
            LimiterKind::RequestWeight => BinanceError::ip_banned(until_ms),
            LimiterKind::Orders => BinanceError::too_many_new_orders(),
        };
        Limited {
            reason: LimitReason::Banned { until_ms },
            retry_after_secs: until_ms.saturating_sub(now_ms).div_ceil(1000).max(1),
            usage,
            error,
        }
    }
}

/// Request weight of a REST call (rest-api.md, checked 2026-07), or `None`
/// for a path this table does not know. `path` is the full path
/// (`/api/v3/depth`); the weight depends on some parameters, read leniently
/// here because weight is charged even when validation later fails.
pub fn request_weight(method: &str, path: &str, params: &Params) -> Option<u64> {
    let endpoint = path.strip_prefix("/api/v3/")?;
    let has = |name: &str| params.get(name).is_some_and(|v| !v.is_empty());
    let weight = match (method, endpoint) {
        ("GET", "ping") | ("GET", "time") => 1,
        ("GET", "exchangeInfo") => 20,
        ("GET", "depth") => {
            let limit = params
                .get("limit")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(100);
            match limit {
                0..=100 => 5,
                101..=500 => 25,
                501..=1000 => 50,
                _ => 250,
            }
        }
        ("GET", "trades") => 25,
        ("GET", "aggTrades") => 4,
        ("GET", "klines") | ("GET", "avgPrice") => 2,
        ("GET", "ticker/24hr") => {
            if has("symbol") {
                2
            } else if let Some(symbols) = params.get("symbols") {
                match count_symbols(symbols) {
                    0..=20 => 2,
                    21..=100 => 40,
                    _ => 80,
                }
            } else {
                80
            }
        }
        ("GET", "ticker/price") | ("GET", "ticker/bookTicker") => {
            if has("symbol") {
                2
            } else {
                4
            }
        }
        ("POST", "order") | ("DELETE", "order") => 1,
        ("POST", "order/test") => {
            if params
                .get("computeCommissionRates")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                20
            } else {
                1
            }
        }
        ("GET", "order") => 4,
        ("POST", "order/cancelReplace") => 1,
        ("DELETE", "openOrders") => 1,
        ("GET", "openOrders") => {
            if has("symbol") {
                6
            } else {
                80
            }
        }
        ("GET", "allOrders") | ("GET", "account") => 20,
        ("GET", "myTrades") => {
            if has("orderId") {
                5
            } else {
                20
            }
        }
        ("POST", "userDataStream") | ("PUT", "userDataStream") | ("DELETE", "userDataStream") => 2,
        _ => return None,
    };
    Some(weight)
}

/// Elements of a `symbols` value such as `["BTCUSDT","BNBBTC"]`.
fn count_symbols(value: &str) -> usize {
    let inner = value.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .filter(|s| !s.trim().trim_matches('"').is_empty())
        .count()
}

/// Unfilled-order count a REST call adds (rest-api.md "Unfilled Order
/// Count"): 1 for a new order and for cancelReplace, else 0.
pub fn unfilled_order_count(method: &str, path: &str) -> u64 {
    match (method, path) {
        ("POST", "/api/v3/order") | ("POST", "/api/v3/order/cancelReplace") => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    fn weight_limiter(limit: u64, max_keys: usize, ban: Option<BanPolicy>) -> RateLimiter<IpAddr> {
        RateLimiter::new(LimiterConfig {
            kind: LimiterKind::RequestWeight,
            windows: vec![WindowLimit::new(1, IntervalUnit::Minute, limit)],
            max_tracked_keys: max_keys,
            ban,
        })
        .unwrap()
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    const T0: u64 = 1_700_000_080_000; // 40 s into a minute

    #[test]
    fn weight_accumulates_within_the_minute_and_resets_on_the_boundary() {
        let rl = weight_limiter(6000, 1000, None);
        assert_eq!(rl.header_names(), ["X-MBX-USED-WEIGHT-1M"]);
        assert_eq!(rl.check_and_add(&ip(1), 20, T0).unwrap().as_slice(), [20]);
        assert_eq!(
            rl.check_and_add(&ip(1), 5, T0 + 1).unwrap().as_slice(),
            [25]
        );
        assert_eq!(rl.check_and_add(&ip(2), 1, T0).unwrap().as_slice(), [1]);
        assert_eq!(rl.usage(&ip(1), T0 + 2).as_slice(), [25]);
        // Fixed window: the next minute starts at 0, not 60 s after T0.
        let next_minute = T0 - T0 % 60_000 + 60_000;
        assert_eq!(rl.usage(&ip(1), next_minute).as_slice(), [0]);
        assert_eq!(
            rl.check_and_add(&ip(1), 1, next_minute).unwrap().as_slice(),
            [1]
        );
        assert_eq!(rl.usage(&ip(99), T0).as_slice(), [0]);
        let usage = rl.check_and_add(&ip(3), 7, T0).unwrap();
        let headers: Vec<(&str, u64)> = rl.headers(&usage).collect();
        assert_eq!(headers, [("X-MBX-USED-WEIGHT-1M", 7)]);
    }

    #[test]
    fn over_limit_is_refused_uncounted_with_retry_after() {
        let rl = weight_limiter(100, 1000, None);
        assert!(rl.check_and_add(&ip(1), 100, T0).is_ok());
        let limited = rl.check_and_add(&ip(1), 1, T0).unwrap_err();
        assert_eq!(limited.reason, LimitReason::Window { index: 0 });
        assert_eq!(limited.retry_after_secs, 20); // 40 s into the minute
        assert_eq!(limited.usage.as_slice(), [100]);
        assert_eq!(
            (limited.error.code, limited.error.http_status),
            (-1003, 429)
        );
        assert_eq!(
            limited.error.msg,
            "Too much request weight used; current limit is 100 request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
        );
        assert_eq!(rl.usage(&ip(1), T0).as_slice(), [100]);
        // Partial second rounds up; never 0.
        let limited = rl.check_and_add(&ip(1), 1, T0 + 19_999).unwrap_err();
        assert_eq!(limited.retry_after_secs, 1);
        let limited = rl.check_and_add(&ip(1), 1, T0 + 18_500).unwrap_err();
        assert_eq!(limited.retry_after_secs, 2);
        // A weight larger than the limit is always refused.
        assert!(rl.check_and_add(&ip(2), 101, T0).is_err());
        // Weight 0 never is, and counts nothing.
        assert_eq!(rl.check_and_add(&ip(1), 0, T0).unwrap().as_slice(), [100]);
        // Huge weights are refused instead of overflowing.
        let big = weight_limiter(u64::MAX, 10, None);
        assert!(big.check_and_add(&ip(1), u64::MAX, T0).is_ok());
        assert!(big.check_and_add(&ip(1), u64::MAX, T0).is_err());
    }

    #[test]
    fn order_counts_two_windows() {
        let rl: RateLimiter<String> = RateLimiter::new(LimiterConfig {
            kind: LimiterKind::Orders,
            windows: vec![
                WindowLimit::new(10, IntervalUnit::Second, 3),
                WindowLimit::new(1, IntervalUnit::Day, 5),
            ],
            max_tracked_keys: 10,
            ban: None,
        })
        .unwrap();
        assert_eq!(
            rl.header_names(),
            ["X-MBX-ORDER-COUNT-10S", "X-MBX-ORDER-COUNT-1D"]
        );
        let key = "api-key-1".to_owned();
        let t = 1_700_006_400_000u64; // a day boundary (1700006400 / 86400 = 19676)
        assert_eq!(t % 86_400_000, 0);
        for i in 1..=3 {
            assert_eq!(
                rl.check_and_add(&key, 1, t + 1000).unwrap().as_slice(),
                [i, i]
            );
        }
        let limited = rl.check_and_add(&key, 1, t + 2000).unwrap_err();
        assert_eq!(limited.reason, LimitReason::Window { index: 0 });
        assert_eq!(limited.retry_after_secs, 8);
        assert_eq!(
            (limited.error.code, limited.error.http_status),
            (-1015, 429)
        );
        assert_eq!(
            limited.error.msg,
            "Too many new orders; current limit is 3 orders per 10 SECOND."
        );
        // Next 10 s window: 2 more fit the day, then the day is full.
        assert!(rl.check_and_add(&key, 1, t + 10_000).is_ok());
        assert!(rl.check_and_add(&key, 1, t + 10_001).is_ok());
        let limited = rl.check_and_add(&key, 1, t + 20_000).unwrap_err();
        assert_eq!(limited.reason, LimitReason::Window { index: 1 });
        assert_eq!(limited.retry_after_secs, (86_400_000 - 20_000) / 1000);
        assert!(limited.error.msg.contains("5 orders per 1 DAY"));
        // Next day.
        assert_eq!(
            rl.check_and_add(&key, 1, t + 86_400_000)
                .unwrap()
                .as_slice(),
            [1, 1]
        );
        let usage = rl.usage(&key, t + 86_400_000);
        // Looked up by `&str`, a String key is the same entry.
        assert_eq!(rl.usage(key.as_str(), t + 86_400_000), usage);
        let headers: Vec<(&str, u64)> = rl.headers(&usage).collect();
        assert_eq!(
            headers,
            [("X-MBX-ORDER-COUNT-10S", 1), ("X-MBX-ORDER-COUNT-1D", 1)]
        );
    }

    #[test]
    fn auto_ban_escalates_and_expires() {
        let ban = BanPolicy {
            rejections_before_ban: 2,
            first_ban_ms: 120_000,
            max_ban_ms: 300_000,
        };
        let rl = weight_limiter(10, 100, Some(ban));
        let k = ip(7);
        assert!(rl.check_and_add(&k, 10, T0).is_ok());
        assert_eq!(
            rl.check_and_add(&k, 1, T0).unwrap_err().error.http_status,
            429
        );
        assert_eq!(
            rl.check_and_add(&k, 1, T0).unwrap_err().error.http_status,
            429
        );
        let banned = rl.check_and_add(&k, 1, T0).unwrap_err();
        assert_eq!(
            banned.reason,
            LimitReason::Banned {
                until_ms: T0 + 120_000
            }
        );
        assert_eq!(banned.retry_after_secs, 120);
        assert_eq!((banned.error.code, banned.error.http_status), (-1003, 418));
        assert!(banned
            .error
            .msg
            .contains(&format!("IP banned until {}", T0 + 120_000)));
        // Banned requests count nothing; their headers show the weight of
        // the running window.
        let again = rl.check_and_add(&k, 1, T0 + 1_000).unwrap_err();
        assert_eq!(again.error.http_status, 418);
        assert_eq!(again.usage.as_slice(), [10]);
        assert_eq!(rl.usage(&k, T0 + 1_000).as_slice(), [10]);
        // Still banned in the next minute, with the remaining time.
        let later = rl.check_and_add(&k, 1, T0 + 60_000).unwrap_err();
        assert_eq!(later.retry_after_secs, 60);
        assert_eq!(later.error.http_status, 418);
        assert_eq!(later.usage.as_slice(), [0]);
        // A banned entry is not idle, so it is not swept.
        assert_eq!(rl.sweep(T0 + 100_000), 0);
        // Ban over; offend again: twice as long, capped.
        let t1 = T0 + 120_000;
        assert!(rl.check_and_add(&k, 10, t1).is_ok());
        for _ in 0..2 {
            assert_eq!(
                rl.check_and_add(&k, 1, t1).unwrap_err().error.http_status,
                429
            );
        }
        let banned = rl.check_and_add(&k, 1, t1).unwrap_err();
        assert_eq!(
            banned.reason,
            LimitReason::Banned {
                until_ms: t1 + 240_000
            }
        );
        let t2 = t1 + 240_000;
        assert!(rl.check_and_add(&k, 10, t2).is_ok());
        for _ in 0..2 {
            assert!(rl.check_and_add(&k, 1, t2).is_err());
        }
        let banned = rl.check_and_add(&k, 1, t2).unwrap_err();
        assert_eq!(
            banned.reason,
            LimitReason::Banned {
                until_ms: t2 + 300_000
            }
        );
    }

    #[test]
    fn rejections_reset_each_window() {
        let ban = BanPolicy {
            rejections_before_ban: 2,
            ..BanPolicy::default()
        };
        let rl = weight_limiter(1, 100, Some(ban));
        let k = ip(8);
        let mut t = T0;
        for _ in 0..5 {
            assert!(rl.check_and_add(&k, 1, t).is_ok());
            for _ in 0..2 {
                assert_eq!(
                    rl.check_and_add(&k, 1, t).unwrap_err().error.http_status,
                    429
                );
            }
            t += 60_000;
        }
    }

    #[test]
    fn memory_is_bounded_and_idle_entries_are_evicted() {
        let rl = weight_limiter(100, 64, None);
        let mut refused = 0;
        for n in 0..10_000u32 {
            match rl.check_and_add(&ip(n), 1, T0) {
                Ok(_) => {}
                Err(l) => {
                    assert_eq!(l.reason, LimitReason::Capacity);
                    assert_eq!((l.error.code, l.error.http_status), (-1003, 429));
                    assert_eq!(l.retry_after_secs, 1);
                    refused += 1;
                }
            }
        }
        assert!(rl.tracked_keys() <= 64);
        assert!(refused >= 10_000 - 64);
        // Known keys keep working while full.
        let known = (0..10_000u32)
            .find(|n| rl.usage(&ip(*n), T0).as_slice() == [1])
            .unwrap();
        assert_eq!(rl.check_and_add(&ip(known), 1, T0).unwrap().as_slice(), [2]);
        // Next minute every entry is idle: new keys get in again.
        let next = T0 - T0 % 60_000 + 60_000;
        assert!(rl.check_and_add(&ip(20_000), 1, next).is_ok());
        let before = rl.tracked_keys();
        assert_eq!(rl.sweep(next), before - 1);
        assert_eq!(rl.tracked_keys(), 1);
        assert_eq!(rl.usage(&ip(20_000), next).as_slice(), [1]);
        // Small caps are respected exactly.
        let tiny = weight_limiter(100, 3, None);
        for n in 0..100 {
            let _ = tiny.check_and_add(&ip(n), 1, T0);
        }
        assert!(tiny.tracked_keys() <= 3);
    }

    #[test]
    fn config_validation_and_presets() {
        let bad = |windows: Vec<WindowLimit>, max| {
            RateLimiter::<u64>::new(LimiterConfig {
                kind: LimiterKind::RequestWeight,
                windows,
                max_tracked_keys: max,
                ban: None,
            })
            .unwrap_err()
        };
        let w = WindowLimit::new(1, IntervalUnit::Minute, 1);
        assert_eq!(bad(vec![], 1), ConfigError::WindowCount(0));
        assert_eq!(bad(vec![w; 5], 1), ConfigError::WindowCount(5));
        assert_eq!(
            bad(vec![w, WindowLimit::new(0, IntervalUnit::Second, 1)], 1),
            ConfigError::ZeroInterval(1)
        );
        assert_eq!(bad(vec![w], 0), ConfigError::ZeroCapacity);
        assert!(!ConfigError::ZeroCapacity.to_string().is_empty());
        let weight = RateLimiter::<IpAddr>::new(LimiterConfig::binance_request_weight()).unwrap();
        assert_eq!(weight.config().windows[0].limit, 6000);
        assert_eq!(weight.header_names(), ["X-MBX-USED-WEIGHT-1M"]);
        assert!(format!("{weight:?}").contains("RateLimiter"));
        let orders = RateLimiter::<String>::new(LimiterConfig::binance_orders()).unwrap();
        assert_eq!(
            orders.header_names(),
            ["X-MBX-ORDER-COUNT-10S", "X-MBX-ORDER-COUNT-1D"]
        );
        assert_eq!(
            WindowLimit::new(1, IntervalUnit::Hour, 1).interval_ms(),
            3_600_000
        );
        assert_eq!(IntervalUnit::Hour.letter(), 'H');
        assert_eq!(IntervalUnit::Day.as_str(), "DAY");
    }

    #[test]
    fn rate_limits_json_entries() {
        let orders = RateLimiter::<u64>::new(LimiterConfig::binance_orders()).unwrap();
        orders.check_and_add(&7, 1, T0).unwrap();
        let usage = orders.check_and_add(&7, 1, T0).unwrap();
        let weight = weight_limiter(6000, 10, None);
        let wu = weight.check_and_add(&ip(1), 12, T0).unwrap();
        let mut out = String::new();
        weight.push_rate_limits_json(&mut out, &wu);
        orders.push_rate_limits_json(&mut out, &usage);
        let parsed: serde_json::Value = serde_json::from_str(&format!("[{out}]")).unwrap();
        let expected: Vec<serde_json::Value> = [
            ("REQUEST_WEIGHT", &weight.config().windows, &wu),
            ("ORDERS", &orders.config().windows, &usage),
        ]
        .into_iter()
        .flat_map(|(kind, windows, u)| {
            windows.iter().zip(u.as_slice()).map(move |(w, c)| {
                serde_json::json!({"rateLimitType": kind, "interval": w.unit.as_str(),
                        "intervalNum": w.interval_num, "limit": w.limit, "count": c})
            })
        })
        .collect();
        assert_eq!(parsed, serde_json::Value::Array(expected));
        assert_eq!(parsed[0]["count"], 12);
        assert_eq!(parsed[1]["count"], 2);
        assert_eq!(parsed[2]["interval"], "DAY");
    }

    #[test]
    fn clock_going_backwards_keeps_counting() {
        let rl = weight_limiter(10, 10, None);
        assert!(rl.check_and_add(&ip(1), 6, T0 + 60_000).is_ok());
        // An earlier minute does not reset the newer counter.
        assert!(rl.check_and_add(&ip(1), 6, T0).is_err());
        assert!(rl.check_and_add(&ip(1), 4, T0).is_ok());
    }

    #[test]
    fn concurrent_callers_never_exceed_the_limit() {
        let rl = Arc::new(weight_limiter(5000, 1000, None));
        // Track the shared key first so that the other keys cannot crowd
        // its shard out.
        assert!(rl.check_and_add(&ip(1), 0, T0).is_ok());
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let rl = Arc::clone(&rl);
                std::thread::spawn(move || {
                    let mut ok = 0u64;
                    for i in 0..1000u32 {
                        if rl.check_and_add(&ip(1), 1, T0).is_ok() {
                            ok += 1;
                        }
                        let _ = rl.check_and_add(&ip(100 + t * 1000 + i), 1, T0);
                    }
                    ok
                })
            })
            .collect();
        let accepted: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(accepted, 5000);
        assert_eq!(rl.usage(&ip(1), T0).as_slice(), [5000]);
    }

    #[test]
    fn endpoint_weights_match_binance_docs() {
        let w = |method: &str, path: &str, q: &str| {
            request_weight(method, path, &Params::parse(q, b"").unwrap())
        };
        let cases: &[(&str, &str, &str, Option<u64>)] = &[
            ("GET", "/api/v3/ping", "", Some(1)),
            ("GET", "/api/v3/time", "", Some(1)),
            ("GET", "/api/v3/exchangeInfo", "", Some(20)),
            ("GET", "/api/v3/depth", "symbol=BTCUSDT", Some(5)),
            ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=100", Some(5)),
            ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=101", Some(25)),
            ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=500", Some(25)),
            (
                "GET",
                "/api/v3/depth",
                "symbol=BTCUSDT&limit=1000",
                Some(50),
            ),
            (
                "GET",
                "/api/v3/depth",
                "symbol=BTCUSDT&limit=5000",
                Some(250),
            ),
            ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=abc", Some(5)),
            ("GET", "/api/v3/trades", "symbol=BTCUSDT", Some(25)),
            ("GET", "/api/v3/aggTrades", "symbol=BTCUSDT", Some(4)),
            (
                "GET",
                "/api/v3/klines",
                "symbol=BTCUSDT&interval=1m",
                Some(2),
            ),
            ("GET", "/api/v3/avgPrice", "symbol=BTCUSDT", Some(2)),
            ("GET", "/api/v3/ticker/24hr", "symbol=BTCUSDT", Some(2)),
            ("GET", "/api/v3/ticker/24hr", "", Some(80)),
            (
                "GET",
                "/api/v3/ticker/24hr",
                "symbols=[\"A\",\"B\"]",
                Some(2),
            ),
            ("GET", "/api/v3/ticker/price", "symbol=BTCUSDT", Some(2)),
            ("GET", "/api/v3/ticker/price", "", Some(4)),
            ("GET", "/api/v3/ticker/price", "symbols=[\"A\"]", Some(4)),
            (
                "GET",
                "/api/v3/ticker/bookTicker",
                "symbol=BTCUSDT",
                Some(2),
            ),
            ("GET", "/api/v3/ticker/bookTicker", "", Some(4)),
            ("POST", "/api/v3/order", "", Some(1)),
            ("POST", "/api/v3/order/test", "", Some(1)),
            (
                "POST",
                "/api/v3/order/test",
                "computeCommissionRates=true",
                Some(20),
            ),
            ("GET", "/api/v3/order", "", Some(4)),
            ("DELETE", "/api/v3/order", "", Some(1)),
            ("POST", "/api/v3/order/cancelReplace", "", Some(1)),
            ("DELETE", "/api/v3/openOrders", "symbol=BTCUSDT", Some(1)),
            ("GET", "/api/v3/openOrders", "symbol=BTCUSDT", Some(6)),
            ("GET", "/api/v3/openOrders", "", Some(80)),
            ("GET", "/api/v3/allOrders", "symbol=BTCUSDT", Some(20)),
            ("GET", "/api/v3/account", "", Some(20)),
            ("GET", "/api/v3/myTrades", "symbol=BTCUSDT", Some(20)),
            (
                "GET",
                "/api/v3/myTrades",
                "symbol=BTCUSDT&orderId=1",
                Some(5),
            ),
            ("POST", "/api/v3/userDataStream", "", Some(2)),
            ("PUT", "/api/v3/userDataStream", "", Some(2)),
            ("DELETE", "/api/v3/userDataStream", "", Some(2)),
            ("GET", "/api/v3/nope", "", None),
            ("PATCH", "/api/v3/order", "", None),
            ("GET", "/api/v1/ping", "", None),
            ("GET", "ping", "", None),
        ];
        for (method, path, q, expected) in cases {
            assert_eq!(w(method, path, q), *expected, "{method} {path}?{q}");
        }
        let many = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("\"S{i}\"")).collect();
            format!("symbols=[{}]", list.join(","))
        };
        assert_eq!(w("GET", "/api/v3/ticker/24hr", &many(20)), Some(2));
        assert_eq!(w("GET", "/api/v3/ticker/24hr", &many(21)), Some(40));
        assert_eq!(w("GET", "/api/v3/ticker/24hr", &many(100)), Some(40));
        assert_eq!(w("GET", "/api/v3/ticker/24hr", &many(101)), Some(80));
    }

    #[test]
    fn order_counts_per_endpoint() {
        assert_eq!(unfilled_order_count("POST", "/api/v3/order"), 1);
        assert_eq!(
            unfilled_order_count("POST", "/api/v3/order/cancelReplace"),
            1
        );
        assert_eq!(unfilled_order_count("POST", "/api/v3/order/test"), 0);
        assert_eq!(unfilled_order_count("DELETE", "/api/v3/order"), 0);
        assert_eq!(count_symbols("[]"), 0);
        assert_eq!(count_symbols("[\"A\", \"B\"]"), 2);
        assert_eq!(count_symbols("A,B,C"), 3);
    }
}
