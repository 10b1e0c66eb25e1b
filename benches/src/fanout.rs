//! `mx-bench fanout`: market-data fan-out under load. N WebSocket
//! subscribers (tokio-tungstenite, one process) each open
//! `/ws/<symbol>@trade/<symbol>@depth@100ms` on a running `serve` while a
//! paced order flow makes trades: every pair of orders is a resting maker
//! sell and an IOC taker buy from two traders, so each pair is one trade,
//! and the book's few levels keep changing (see `order_flow`).
//!
//! Delivery latency is the receive time (host clock, ns) minus the event's
//! own timestamp: the trade's transaction time `T` for `@trade` (so it
//! covers journaling, matching, publishing and fan-out) and the event time
//! `E` for `@depth@100ms` (the flush, so it covers fan-out only; the up to
//! 100 ms of batching is by design). Both timestamps are whole
//! milliseconds, so every figure can read up to 1 ms high. Only messages
//! received while orders flow (plus a short grace for the last ones) count.
//!
//! Slow consumers: `--slow-subscribers K` more connections with a small
//! receive buffer that never read while orders flow; the server must drop
//! them (close 1008) without slowing anyone else. Any close seen by a
//! normal subscriber is counted too (it means that subscriber was dropped).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use crate::rest_bench::{self, Account, Conn};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: String,
    /// Lower-case symbol, e.g. `btcusdt`.
    pub symbol: String,
    pub subscribers: usize,
    pub slow_subscribers: usize,
    /// Planned orders per second (half makers, half takers).
    pub rate: u64,
    /// Keep-alive connections the orders are sent from.
    pub order_connections: usize,
    pub duration: Duration,
}

/// What was measured.
#[derive(Debug)]
pub struct Report {
    /// Trade delivery latency from `T`, ns.
    pub trade: Histogram<u64>,
    /// Depth delivery latency from `E`, ns.
    pub depth: Histogram<u64>,
    pub trade_msgs: u64,
    pub depth_msgs: u64,
    /// Seconds of the counting window (order flow + grace).
    pub window_secs: f64,
    pub orders_ok: u64,
    pub order_errors: u64,
    /// How long the order flow took (longer than planned when the server
    /// could not keep up: each request waits for its answer).
    pub flow_secs: f64,
    /// CPU this process (the subscribers and the order flow) used during
    /// the window, in cores.
    pub client_cores: f64,
    pub first_error: Option<String>,
    /// Takers that filled (one trade each).
    pub trades: u64,
    /// Normal subscribers the server closed, by close code (0: no frame).
    pub dropped: Vec<(u16, u64)>,
    /// Slow subscribers found closed at the end, and with code 1008.
    pub slow_closed: u64,
    pub slow_closed_1008: u64,
    pub connect_secs: f64,
}

const SHARDS: usize = 16;
/// After the last order, messages still count for this long.
const GRACE: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Shard {
    trade: Histogram<u64>,
    depth: Histogram<u64>,
}

#[derive(Debug)]
struct Shared {
    shards: Vec<Mutex<Shard>>,
    counting: AtomicBool,
    trade_msgs: AtomicU64,
    depth_msgs: AtomicU64,
    dropped: Mutex<Vec<u16>>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram bounds")
}

/// CPU time (user + system) of this process in seconds (Linux).
fn self_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime
            // are the 14th and 15th of the whole line.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The integer after `"key":` in a flat JSON text (first occurrence).
fn int_field(text: &str, key: &str) -> Option<u64> {
    let i = text.find(key)? + key.len();
    let digits = text[i..].bytes().take_while(u8::is_ascii_digit).count();
    text[i..i + digits].parse().ok()
}

impl Shared {
    fn record(&self, shard: usize, text: &str) {
        if !self.counting.load(Ordering::Relaxed) {
            return;
        }
        let now = now_ns();
        // (Key order is not fixed: look for the type anywhere.)
        let (is_trade, ts_ms) = if text.contains(r#""e":"trade""#) {
            (true, int_field(text, r#""T":"#))
        } else if text.contains(r#""e":"depthUpdate""#) {
            (false, int_field(text, r#""E":"#))
        } else {
            return;
        };
        let Some(ts_ms) = ts_ms else {
            return;
        };
        let lat = now
            .saturating_sub(ts_ms.saturating_mul(1_000_000))
            .max(1_000);
        let mut s = self.shards[shard % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if is_trade {
            s.trade.saturating_record(lat);
            self.trade_msgs.fetch_add(1, Ordering::Relaxed);
        } else {
            s.depth.saturating_record(lat);
            self.depth_msgs.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(addr: &str, path: &str, recv_buf: Option<u32>) -> Result<WsStream> {
    let sock_addr: std::net::SocketAddr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .with_context(|| format!("resolve {addr}"))?;
    let sock = if sock_addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(n) = recv_buf {
        sock.set_recv_buffer_size(n)?;
    }
    let stream = sock.connect(sock_addr).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{addr}{path}");
    // tungstenite zero-fills its whole read chunk before every read: keep
    // it small, the messages are a few hundred bytes.
    let cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 << 10);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(cfg))
        .await
        .with_context(|| format!("websocket handshake on {path}"))?;
    Ok(ws)
}

/// Read until the server closes or `stop` is set.
async fn subscriber(mut ws: WsStream, shard: usize, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => shared.record(shard, t.as_str()),
                Some(Ok(Message::Close(f))) => {
                    let code = f.map_or(0, |f| u16::from(f.code));
                    shared.dropped.lock().unwrap_or_else(|e| e.into_inner()).push(code);
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    shared.dropped.lock().unwrap_or_else(|e| e.into_inner()).push(0);
                    return;
                }
            },
            _ = tick.tick() => {
                if stop.load(Ordering::Relaxed) {
                    let _ = ws.close(None).await;
                    return;
                }
            }
        }
    }
}

/// A slow subscriber after the run: read what is buffered; Some(code)
/// when the server had closed it (0: without a close frame).
async fn drain_slow(mut ws: WsStream) -> Option<u16> {
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return Some(f.map_or(0, |f| u16::from(f.code))),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Some(0),
            }
        }
    })
    .await;
    r.unwrap_or(None)
}

/// Totals of the order flow.
#[derive(Debug, Default)]
struct Flow {
    ok: u64,
    errors: u64,
    trades: u64,
    first_error: Option<String>,
}

/// The paced order flow: `rate` orders/s in total for `duration`, from
/// `conns` keep-alive connections (each waits for its answers, so one
/// connection alone is capped by the journal's fsync round trip). Each
/// step is a maker SELL at one of 11 prices and then an IOC BUY taker
/// priced above them all. A connection's maker precedes its taker, so the
/// book always holds an ask when a taker arrives: every taker fills
/// (against the lowest ask), the book stays at most `conns` deep, and the
/// depth stream sees levels appear and go.
fn order_flow(
    addr: &str,
    maker: &Account,
    taker: &Account,
    symbol: &str,
    rate: u64,
    duration: Duration,
    conns: usize,
) -> Result<Flow> {
    let conns = conns.max(1);
    let step_ns = (conns as u64).saturating_mul(2_000_000_000) / rate.max(2);
    let start = Instant::now();
    let sym = symbol.to_ascii_uppercase();
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            let (addr, maker, taker, sym) =
                (addr.to_string(), maker.clone(), taker.clone(), sym.clone());
            std::thread::spawn(move || -> Result<Flow> {
                let mut c = Conn::open(&addr)?;
                let mut f = Flow::default();
                let offset = step_ns * i as u64 / conns as u64;
                for k in 0u64.. {
                    let planned = start + Duration::from_nanos(offset + k * step_ns);
                    if planned.duration_since(start) >= duration {
                        break;
                    }
                    let now = Instant::now();
                    if planned > now {
                        std::thread::sleep(planned - now);
                    }
                    let px = 29_995 + (k * conns as u64 + i as u64) % 11;
                    for (acct, params) in [
                        (
                            &maker,
                            format!("symbol={sym}&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.001&price={px}&newOrderRespType=ACK"),
                        ),
                        (
                            &taker,
                            format!("symbol={sym}&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.001&price=30010&newOrderRespType=RESULT"),
                        ),
                    ] {
                        let q = format!("{params}&timestamp={}", rest_bench::now_ms());
                        let sig = acct.sign(q.as_bytes());
                        let path = format!("/api/v3/order?{q}&signature={sig}");
                        match c.call("POST", &path, &[("X-MBX-APIKEY", &acct.key)], b"") {
                            Ok((200, body)) => {
                                f.ok += 1;
                                if body.contains(r#""status":"FILLED""#) {
                                    f.trades += 1;
                                }
                            }
                            Ok((st, body)) => {
                                f.errors += 1;
                                f.first_error.get_or_insert_with(|| format!("{st} {body}"));
                            }
                            Err(e) => {
                                f.errors += 1;
                                f.first_error.get_or_insert_with(|| e.to_string());
                                c = Conn::open(&addr)?;
                            }
                        }
                    }
                }
                Ok(f)
            })
        })
        .collect();
    let mut total = Flow::default();
    for h in handles {
        let f = h
            .join()
            .map_err(|_| anyhow::anyhow!("order thread panicked"))??;
        total.ok += f.ok;
        total.errors += f.errors;
        total.trades += f.trades;
        if total.first_error.is_none() {
            total.first_error = f.first_error;
        }
    }
    Ok(total)
}

/// Connect everyone, run the order flow, collect the numbers.
pub fn run(cfg: &Config, maker: &Account, taker: &Account) -> Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let shared = Arc::new(Shared {
        shards: (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    trade: hist(),
                    depth: hist(),
                })
            })
            .collect(),
        counting: AtomicBool::new(false),
        trade_msgs: AtomicU64::new(0),
        depth_msgs: AtomicU64::new(0),
        dropped: Mutex::new(Vec::new()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let path = format!("/ws/{0}@trade/{0}@depth@100ms", cfg.symbol);

    // Connect, 64 handshakes at a time.
    let t0 = Instant::now();
    let (readers, slow) = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        let mut pending = Vec::new();
        for i in 0..cfg.subscribers + cfg.slow_subscribers {
            let slow = i >= cfg.subscribers;
            let (addr, path, sem) = (cfg.addr.clone(), path.clone(), sem.clone());
            pending.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                connect(&addr, &path, slow.then_some(4096)).await
            }));
        }
        let mut readers = Vec::new();
        let mut slow = Vec::new();
        for (i, p) in pending.into_iter().enumerate() {
            let ws = p.await??;
            if i < cfg.subscribers {
                readers.push(tokio::spawn(subscriber(
                    ws,
                    i,
                    shared.clone(),
                    stop.clone(),
                )));
            } else {
                slow.push(ws);
            }
        }
        anyhow::Ok((readers, slow))
    })?;
    let connect_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "fanout: {} subscribers (+{} slow) connected in {connect_secs:.1} s",
        cfg.subscribers, cfg.slow_subscribers
    );

    // Let the subscriptions settle, then flow orders while counting.
    std::thread::sleep(Duration::from_millis(500));
    shared.counting.store(true, Ordering::Relaxed);
    let window = Instant::now();
    let cpu0 = self_cpu_secs();
    let flow = order_flow(
        &cfg.addr,
        maker,
        taker,
        &cfg.symbol,
        cfg.rate,
        cfg.duration,
        cfg.order_connections,
    );
    let flow_secs = window.elapsed().as_secs_f64();
    std::thread::sleep(GRACE);
    shared.counting.store(false, Ordering::Relaxed);
    let window_secs = window.elapsed().as_secs_f64();
    let client_cores = (self_cpu_secs() - cpu0) / window_secs;
    let Flow {
        ok: orders_ok,
        errors: order_errors,
        trades,
        first_error,
    } = flow?;

    stop.store(true, Ordering::Relaxed);
    let slow_codes: Vec<Option<u16>> = rt.block_on(async {
        for r in readers {
            let _ = r.await;
        }
        let mut codes = Vec::new();
        for ws in slow {
            codes.push(drain_slow(ws).await);
        }
        codes
    });
    let (mut trade, mut depth) = (hist(), hist());
    for s in &shared.shards {
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        trade.add(&s.trade)?;
        depth.add(&s.depth)?;
    }
    let mut dropped: Vec<(u16, u64)> = Vec::new();
    for code in shared
        .dropped
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        match dropped.iter_mut().find(|(c, _)| c == code) {
            Some((_, n)) => *n += 1,
            None => dropped.push((*code, 1)),
        }
    }
    dropped.sort_unstable();
    if orders_ok == 0 {
        bail!("no order was accepted: {}", first_error.unwrap_or_default());
    }
    Ok(Report {
        trade,
        depth,
        trade_msgs: shared.trade_msgs.load(Ordering::Relaxed),
        depth_msgs: shared.depth_msgs.load(Ordering::Relaxed),
        window_secs,
        orders_ok,
        order_errors,
        flow_secs,
        client_cores,
        first_error,
        trades,
        dropped,
        slow_closed: slow_codes.iter().filter(|c| c.is_some()).count() as u64,
        slow_closed_1008: slow_codes.iter().filter(|c| **c == Some(1008)).count() as u64,
        connect_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_field_reads_the_first_integer_after_a_key() {
        let t = r#"{"e":"trade","E":1700000000123,"s":"BTCUSDT","t":5,"T":1700000000120,"m":true}"#;
        assert_eq!(int_field(t, r#""T":"#), Some(1_700_000_000_120));
        assert_eq!(int_field(t, r#""E":"#), Some(1_700_000_000_123));
        assert_eq!(int_field(t, r#""X":"#), None);
    }
}
