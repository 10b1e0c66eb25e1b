//! W4 over the WebSocket API: N connections to `/ws-api/v3` send signed
//! `order.place` requests, pipelined (a connection never waits for a reply
//! before sending the next), paced open-loop at planned send times; each
//! reply's latency is measured from its request's PLANNED time, so a stall
//! shows up in the histogram instead of silently slowing the sender
//! (coordinated omission). Request `k` of a connection carries id `k`, so
//! the reader recomputes its planned time without shared state.
//!
//! The client shares the 2 cores with the server it measures, so it costs
//! as little as it can: one tokio thread; the WebSocket spoken by hand
//! (handshake, masked client frames, the server's unmasked frames, pongs),
//! so a tick's requests leave in one write of bytes built beforehand; and
//! by default every request signed before the run ([`Signing::Ahead`]),
//! timestamped with its planned send time (the server's `recvWindow` check
//! sees what a live client would send). Signing in the loop cost the client
//! 4.4-4.6 us of CPU per order at 70,000/s on the Xeon host of 2026-11-28,
//! signing ahead 1.1-1.8 us; `--sign-live` measures with that cost in.
//! Orders alternate buy/sell across the spread as in the REST W4, so about
//! half trade and the book stays small.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use std::ops::Range;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use crate::rest_bench::{now_ms, Account, LoadResult};
use crate::w3::Rng;

/// Build one signed `order.place` request (params sorted by name, as the
/// WebSocket API signs them). Written with `push_str`, not `format!`
/// (formatting was 9% of this load generator's CPU at 80,000/s).
pub fn order_request(acct: &Account, id: u64, buy: bool, price: u64, timestamp: u64) -> String {
    let num = |out: &mut String, n: u64| engine::decimal::push_units(out, u128::from(n), 0);
    let side = if buy { "BUY" } else { "SELL" };
    // Sorted by name: apiKey, newOrderRespType, price, quantity, side,
    // symbol, timeInForce, timestamp, type.
    let mut payload = String::with_capacity(256);
    payload.push_str("apiKey=");
    payload.push_str(&acct.key);
    payload.push_str("&newOrderRespType=ACK&price=");
    num(&mut payload, price);
    payload.push_str("&quantity=0.001&side=");
    payload.push_str(side);
    payload.push_str("&symbol=BTCUSDT&timeInForce=GTC&timestamp=");
    num(&mut payload, timestamp);
    payload.push_str("&type=LIMIT");
    let sig = acct.sign(payload.as_bytes());
    let mut out = String::with_capacity(payload.len() + sig.len() + 160);
    out.push_str(r#"{"id":"#);
    num(&mut out, id);
    out.push_str(r#","method":"order.place","params":{"symbol":"BTCUSDT","side":""#);
    out.push_str(side);
    out.push_str(r#"","type":"LIMIT","timeInForce":"GTC","quantity":"0.001","price":""#);
    num(&mut out, price);
    out.push_str(r#"","newOrderRespType":"ACK","timestamp":"#);
    num(&mut out, timestamp);
    out.push_str(r#","apiKey":""#);
    out.push_str(&acct.key);
    out.push_str(r#"","signature":""#);
    out.push_str(&sig);
    out.push_str(r#""}}"#);
    out
}

/// `"id":N` of a reply.
fn reply_id(text: &[u8]) -> Option<u64> {
    let i = find(text, b"\"id\":")? + 5;
    let digits = text[i..].iter().take_while(|b| b.is_ascii_digit());
    let mut n = 0u64;
    let mut any = false;
    for b in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Append a client frame (FIN set, `opcode`, masked with `mask` as RFC 6455
/// 5.3 requires of every client frame) carrying `payload`.
fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0x80 | 126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// A frame's masking key.
fn mask(rng: &mut Rng) -> [u8; 4] {
    (rng.next_u64() as u32).to_le_bytes()
}

/// Request `k` of connection `conn` (signed, timestamped `timestamp`) as a
/// frame appended to `out`. Orders alternate buy/sell across the spread.
fn push_request(
    out: &mut Vec<u8>,
    acct: &Account,
    conn: usize,
    k: u64,
    timestamp: u64,
    masks: &mut Rng,
) {
    let buy = (k + conn as u64).is_multiple_of(2);
    let px = if buy { 30_001 } else { 29_999 } + (k % 3) - 1;
    let req = order_request(acct, k, buy, px, timestamp);
    push_frame(out, 0x1, req.as_bytes(), mask(masks));
}

/// Every request of a connection, signed before the run with its planned
/// send time as timestamp, as contiguous frames: request `k` is
/// `bytes[ends[k-1]..ends[k]]`, so a tick's requests leave in one write.
struct Prepared {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Prepared {
    /// Requests `0..total` of connection `conn`, request `k` timestamped
    /// `timestamp(k)`.
    fn new(acct: &Account, conn: usize, total: u64, timestamp: impl Fn(u64) -> u64) -> Prepared {
        let mut masks = Rng::new(conn as u64);
        let mut p = Prepared {
            bytes: Vec::with_capacity(total as usize * 420),
            ends: Vec::with_capacity(total as usize),
        };
        for k in 0..total {
            push_request(&mut p.bytes, acct, conn, k, timestamp(k), &mut masks);
            p.ends.push(p.bytes.len());
        }
        p
    }

    fn range(&self, from: u64, to: u64) -> &[u8] {
        let at = |k: u64| if k == 0 { 0 } else { self.ends[k as usize - 1] };
        &self.bytes[at(from)..at(to)]
    }
}

/// How requests are signed: all of them before the run (the default: on
/// the 2 cores the load generator shares with the server, signing in the
/// loop cost more CPU per order than the server's own HMAC check), or each
/// when its tick comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    Ahead,
    Live,
}

/// Open a WebSocket to `/ws-api/v3` by hand (the load generator writes
/// pre-built frames straight to the socket); TCP_NODELAY, as trading
/// clients set it. Returns the socket and any bytes read past the
/// handshake.
async fn connect(addr: &str) -> Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr} (is `mini-exchange serve` running there?)"))?;
    s.set_nodelay(true)?;
    let req = format!(
        "GET /ws-api/v3 HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        anyhow::ensure!(
            n > 0,
            "{addr} closed the connection during the WebSocket handshake"
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            anyhow::ensure!(
                buf.starts_with(b"HTTP/1.1 101"),
                "{addr}/ws-api/v3 refused the WebSocket upgrade: {}",
                String::from_utf8_lossy(&buf[..p])
                    .lines()
                    .next()
                    .unwrap_or("")
            );
            return Ok((s, buf.split_off(p + 4)));
        }
        anyhow::ensure!(buf.len() < 16 << 10, "{addr}: handshake answer too long");
    }
}

/// Server frames (never masked) from a socket's read half.
struct Frames {
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

impl Frames {
    const MAX: usize = 16 << 20;

    fn new(leftover: Vec<u8>) -> Frames {
        let len = leftover.len();
        let mut buf = leftover;
        buf.resize(len.max(64 << 10), 0);
        Frames { buf, pos: 0, len }
    }

    /// The first complete frame of `b`: (opcode, payload start, end).
    fn parse(b: &[u8]) -> Result<Option<(u8, usize, usize)>> {
        if b.len() < 2 {
            return Ok(None);
        }
        anyhow::ensure!(b[0] & 0x80 != 0, "fragmented frame from the server");
        anyhow::ensure!(b[1] & 0x80 == 0, "masked frame from the server");
        let (head, n) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (4, usize::from(u16::from_be_bytes([b[2], b[3]]))),
            127 if b.len() >= 10 => {
                let n = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                (10, usize::try_from(n).unwrap_or(usize::MAX))
            }
            126 | 127 => return Ok(None),
            n => (2, usize::from(n)),
        };
        anyhow::ensure!(n <= Self::MAX, "frame of {n} bytes from the server");
        Ok((b.len() >= head + n).then_some((b[0] & 0x0f, head, head + n)))
    }

    /// The next frame: its opcode and where its payload is in `self.buf`;
    /// `None` at end of stream.
    async fn next(&mut self, r: &mut OwnedReadHalf) -> Result<Option<(u8, Range<usize>)>> {
        loop {
            if let Some((op, s, e)) = Self::parse(&self.buf[self.pos..self.len])? {
                let payload = self.pos + s..self.pos + e;
                self.pos += e;
                return Ok(Some((op, payload)));
            }
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.len, 0);
                self.len -= self.pos;
                self.pos = 0;
            }
            if self.len == self.buf.len() {
                let grown = (self.buf.len() * 2).min(Self::MAX + 16);
                anyhow::ensure!(grown > self.buf.len(), "server frame too large");
                self.buf.resize(grown, 0);
            }
            let n = r.read(&mut self.buf[self.len..]).await?;
            if n == 0 {
                return Ok(None);
            }
            self.len += n;
        }
    }
}

struct ConnResult {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
    rtt: Histogram<u64>,
    timeline: crate::run::Timeline,
}

/// Open-loop paced load: `conns` connections, `rate` orders/s in total,
/// for `duration`.
pub fn run(
    addr: &str,
    accounts: &[Account],
    conns: usize,
    rate: u64,
    duration: Duration,
    tick: Duration,
    signing: Signing,
) -> Result<LoadResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let interval_ns = (conns as u64 * 1_000_000_000) / rate.max(1);
        let total_per_conn = duration.as_nanos() as u64 / interval_ns.max(1);
        let cpu0 = crate::rest_bench::own_cpu_secs();
        let mut sockets = Vec::new();
        for _ in 0..conns {
            sockets.push(connect(addr).await?);
        }
        let accts: Vec<Account> = (0..conns).map(|i| accounts[i % accounts.len()].clone()).collect();
        // Wall clock at `start` (ns), for the planned timestamps.
        let (now, wall_now) = (Instant::now(), crate::rest_bench::now_ns());
        let lead = match signing {
            Signing::Live => Duration::from_millis(200),
            Signing::Ahead => sign_ahead_time(&accts[0], total_per_conn * conns as u64)?,
        };
        let start = now + lead;
        let start_wall_ns = wall_now + lead.as_nanos() as u64;
        let plan = crate::pacer::Plan::new(start, tick);
        let planned_ns = move |k: u64| plan.at_ns(k * interval_ns);
        let planned = move |k: u64| plan.instant(planned_ns(k));
        let timestamp = move |k: u64| (start_wall_ns + planned_ns(k)) / 1_000_000;
        let prepared: Vec<Option<Prepared>> = match signing {
            Signing::Live => (0..conns).map(|_| None).collect(),
            Signing::Ahead => {
                let t0 = Instant::now();
                eprintln!(
                    "ws: signing {} requests ahead (each timestamped with its planned send time) ...",
                    total_per_conn * conns as u64
                );
                let prepared = std::thread::scope(|s| {
                    let handles: Vec<_> = accts
                        .iter()
                        .enumerate()
                        .map(|(i, acct)| {
                            s.spawn(move || Some(Prepared::new(acct, i, total_per_conn, timestamp)))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("signing thread"))
                        .collect()
                });
                let late = Instant::now().saturating_duration_since(start);
                anyhow::ensure!(
                    late.is_zero(),
                    "signing ahead took {:.1} s, {:.1} s longer than planned: the run would start late; use --sign-live or a shorter --duration-secs",
                    t0.elapsed().as_secs_f64(),
                    late.as_secs_f64()
                );
                eprintln!("ws: signed in {:.1} s", t0.elapsed().as_secs_f64());
                prepared
            }
        };
        let setup_cpu_s = crate::rest_bench::own_cpu_secs() - cpu0;
        let ticks_at_start = crate::run::cpu_ticks();
        let ticks = plan.ticks().context("start the send ticker")?;
        let probe = crate::run::spawn_lag_probe(start, duration);
        let mut tasks = Vec::new();
        for (i, (((sock, leftover), acct), prepared)) in sockets
            .into_iter()
            .zip(accts)
            .zip(prepared)
            .enumerate()
        {
            // Every connection on the same grid: each tick, each one sends
            // the requests planned for it (as the 1 ms timer wheel did).
            let mut ticks = ticks.clone();
            let (mut rd, wr) = sock.into_split();
            let wr = Arc::new(tokio::sync::Mutex::new(wr));
            let wr2 = wr.clone();
            // When each request was actually written (ns after `start`),
            // for the round-trip histogram.
            let sent_at: Arc<Vec<AtomicU64>> =
                Arc::new((0..total_per_conn).map(|_| AtomicU64::new(0)).collect());
            let sent_w = sent_at.clone();
            let sender = tokio::spawn(async move {
                let mut masks = Rng::new(0x5EED_0000 + i as u64);
                let mut live = Vec::new();
                let mut k = 0u64;
                while k < total_per_conn {
                    if !ticks.reached(plan.tick_of(planned_ns(k))).await {
                        // The ticker failed: stop; the rest count as lost.
                        break;
                    }
                    // Send every request whose tick has come, in one write.
                    let come = ticks.count();
                    let from = k;
                    while k < total_per_conn && plan.tick_of(planned_ns(k)) < come {
                        k += 1;
                    }
                    let at = Instant::now().saturating_duration_since(start).as_nanos() as u64;
                    for s in &sent_w[from as usize..k as usize] {
                        s.store(at, Ordering::Relaxed);
                    }
                    let bytes = match &prepared {
                        Some(p) => p.range(from, k),
                        None => {
                            live.clear();
                            // One clock reading per tick's burst.
                            let ts = now_ms();
                            for j in from..k {
                                push_request(&mut live, &acct, i, j, ts, &mut masks);
                            }
                            &live[..]
                        }
                    };
                    if wr.lock().await.write_all(bytes).await.is_err() {
                        return (from, prepared);
                    }
                }
                // The prepared requests go back to the caller, which frees
                // them after every reply is in: freeing ~75 MB per
                // connection here stalled this runtime's readers ~20 ms
                // at the end of each 100,000/s run.
                (k, prepared)
            });
            let reader = tokio::spawn(async move {
                let mut r = ConnResult {
                    ok: 0,
                    errors: 0,
                    first_error: None,
                    hist: Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
                        .expect("histogram bounds"),
                    rtt: Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
                        .expect("histogram bounds"),
                    timeline: crate::run::Timeline::default(),
                };
                let mut frames = Frames::new(leftover);
                let mut masks = Rng::new(0xB0B0_0000 + i as u64);
                let deadline = start + duration + Duration::from_secs(30);
                let deadline = tokio::time::Instant::from_std(deadline);
                while r.ok + r.errors < total_per_conn {
                    let (op, payload) =
                        match tokio::time::timeout_at(deadline, frames.next(&mut rd)).await {
                            Ok(Ok(Some(f))) => f,
                            Ok(Err(e)) => {
                                r.first_error.get_or_insert_with(|| e.to_string());
                                break;
                            }
                            Ok(Ok(None)) | Err(_) => break,
                        };
                    let t = &frames.buf[payload];
                    match op {
                        0x1 => {}
                        0x8 => {
                            r.first_error.get_or_insert_with(|| {
                                format!("server closed the connection: {}", String::from_utf8_lossy(t))
                            });
                            break;
                        }
                        0x9 => {
                            let mut pong = Vec::new();
                            push_frame(&mut pong, 0xA, t, mask(&mut masks));
                            if wr2.lock().await.write_all(&pong).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        _ => continue,
                    }
                    let Some(id) = reply_id(t) else {
                        continue;
                    };
                    // One clock reading per reply for both histograms.
                    let now = Instant::now();
                    let lat = now.saturating_duration_since(planned(id)).as_nanos() as u64;
                    r.hist.saturating_record(lat.max(1_000));
                    r.timeline.record(planned_ns(id), lat);
                    if let Some(at) = sent_at.get(id as usize) {
                        let sent = start + Duration::from_nanos(at.load(Ordering::Relaxed));
                        let rtt = now.saturating_duration_since(sent).as_nanos() as u64;
                        r.rtt.saturating_record(rtt.max(1_000));
                    }
                    if find(t, b"\"status\":200").is_some() {
                        r.ok += 1;
                    } else {
                        r.errors += 1;
                        r.first_error
                            .get_or_insert_with(|| String::from_utf8_lossy(t).into_owned());
                    }
                }
                r
            });
            tasks.push((sender, reader));
        }
        let mut total = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
        let mut rtt = total.clone();
        let (mut ok, mut errors, mut sent) = (0, 0, 0);
        let mut first_error = None;
        let mut timeline = crate::run::Timeline::default();
        let mut spent = Vec::new();
        for (s, r) in tasks {
            let (n, prepared) = s.await?;
            sent += n;
            spent.push(prepared);
            let r = r.await?;
            ok += r.ok;
            errors += r.errors;
            total.add(&r.hist)?;
            rtt.add(&r.rtt)?;
            timeline.merge(&r.timeline);
            if first_error.is_none() {
                first_error = r.first_error;
            }
        }
        drop(spent);
        let lost = sent - (ok + errors).min(sent);
        if lost > 0 {
            first_error.get_or_insert_with(|| format!("{lost} requests got no reply"));
        }
        Ok(LoadResult {
            sent,
            ok,
            errors: errors + lost,
            first_error,
            elapsed: start.elapsed(),
            hist: total,
            rtt,
            timeline,
            setup_cpu_s,
            ticks_at_start,
            client_lag: probe.await?,
        })
    })
}

/// How long signing `total` requests ahead will take (timed on a sample,
/// with margin, on every core), so the planned start leaves room for it.
/// Refuses a run whose requests would not fit in memory comfortably.
fn sign_ahead_time(acct: &Account, total: u64) -> Result<Duration> {
    const SAMPLE: u64 = 2_000;
    let mut out = Vec::with_capacity(SAMPLE as usize * 420);
    let mut masks = Rng::new(1);
    let t = Instant::now();
    for k in 0..SAMPLE {
        push_request(&mut out, acct, 0, k, now_ms(), &mut masks);
    }
    let per = t.elapsed().as_secs_f64() / SAMPLE as f64;
    let bytes = out.len() as u64 / SAMPLE * total;
    anyhow::ensure!(
        bytes < 8 << 30,
        "signing {total} requests ahead needs {} MiB: use a shorter --duration-secs or --sign-live",
        bytes >> 20
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Ok(Duration::from_secs_f64(
        per * total as f64 / cores * 1.6 + 0.5,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_signature_covers_the_sorted_params() {
        let acct = Account::new("K".into(), "S".into());
        let req = order_request(&acct, 7, true, 30_001, 1_700_000_000_000);
        let v: serde_json::Value = serde_json::from_str(&req).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["method"], "order.place");
        let params = v["params"].as_object().unwrap();
        for (k, want) in [
            ("symbol", serde_json::json!("BTCUSDT")),
            ("side", serde_json::json!("BUY")),
            ("type", serde_json::json!("LIMIT")),
            ("timeInForce", serde_json::json!("GTC")),
            ("quantity", serde_json::json!("0.001")),
            ("price", serde_json::json!("30001")),
            ("newOrderRespType", serde_json::json!("ACK")),
            ("timestamp", serde_json::json!(1_700_000_000_000u64)),
            ("apiKey", serde_json::json!("K")),
        ] {
            assert_eq!(params[k], want, "{k}");
        }
        assert_eq!(params.len(), 10);
        let sell = order_request(&acct, 8, false, 29_999, 1);
        let v: serde_json::Value = serde_json::from_str(&sell).unwrap();
        assert_eq!(
            (v["id"].as_u64(), v["params"]["side"].as_str()),
            (Some(8), Some("SELL"))
        );
        let payload = gateway::binance::sign::ws_signing_payload(params);
        assert_eq!(
            params["signature"].as_str().unwrap(),
            gateway::binance::sign::hmac_sha256_hex(b"S", payload.as_bytes())
        );
    }

    /// A client frame's payload, unmasked, and the frame's length.
    fn unframe(f: &[u8]) -> (u8, Vec<u8>, usize) {
        assert_eq!(f[0] & 0x80, 0x80, "FIN");
        assert_eq!(f[1] & 0x80, 0x80, "masked");
        let (head, n) = match f[1] & 0x7f {
            126 => (4, usize::from(u16::from_be_bytes([f[2], f[3]]))),
            127 => (
                10,
                u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
            ),
            n => (2, usize::from(n)),
        };
        let m = &f[head..head + 4];
        let payload = f[head + 4..head + 4 + n]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ m[i & 3])
            .collect();
        (f[0] & 0x0f, payload, head + 4 + n)
    }

    #[test]
    fn client_frames_carry_their_payload_masked() {
        for n in [0, 1, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            push_frame(&mut out, 0x1, &payload, [0xA5, 0x01, 0xFF, 0x3C]);
            let (op, got, len) = unframe(&out);
            assert_eq!((op, len), (0x1, out.len()), "{n} bytes");
            assert!(got == payload, "{n} bytes: payload round trip");
            if n > 3 {
                assert_ne!(&out[out.len() - n..], &payload[..], "{n} bytes: masked");
            }
        }
    }

    /// Signed ahead: request k is frame k, with id k and the planned
    /// timestamp, and a range of requests is their frames back to back.
    #[test]
    fn prepared_requests_are_the_planned_frames() {
        let acct = Account::new("K".into(), "S".into());
        let p = Prepared::new(&acct, 1, 50, |k| 1_700_000_000_000 + 7 * k);
        let mut at = 0;
        for k in 0..50u64 {
            let (op, payload, len) = unframe(&p.bytes[at..]);
            assert_eq!(op, 0x1);
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(v["id"], k);
            assert_eq!(v["params"]["timestamp"], 1_700_000_000_000 + 7 * k);
            // Sides alternate across connections and requests.
            let buy = (k + 1) % 2 == 0;
            assert_eq!(v["params"]["side"], if buy { "BUY" } else { "SELL" });
            let params = v["params"].as_object().unwrap();
            let signed = gateway::binance::sign::ws_signing_payload(params);
            assert_eq!(
                params["signature"].as_str().unwrap(),
                gateway::binance::sign::hmac_sha256_hex(b"S", signed.as_bytes())
            );
            assert_eq!(p.range(k, k + 1), &p.bytes[at..at + len]);
            at += len;
        }
        assert_eq!(at, p.bytes.len());
        assert_eq!(p.range(0, 50), &p.bytes[..]);
        assert_eq!(p.range(10, 10), b"");
    }

    #[test]
    fn server_frames_are_read_whole() {
        assert_eq!(Frames::parse(b"\x81").unwrap(), None);
        assert_eq!(Frames::parse(b"\x81\x03ab").unwrap(), None);
        assert_eq!(Frames::parse(b"\x81\x03abcX").unwrap(), Some((0x1, 2, 5)));
        assert_eq!(Frames::parse(b"\x89\x00").unwrap(), Some((0x9, 2, 2)));
        let mut long = vec![0x81, 126, 0x01, 0x00];
        assert_eq!(Frames::parse(&long).unwrap(), None);
        long.resize(4 + 256, b'x');
        assert_eq!(Frames::parse(&long).unwrap(), Some((0x1, 4, 260)));
        assert!(Frames::parse(b"\x01\x01a").is_err(), "fragment");
        assert!(Frames::parse(b"\x81\x81abcda").is_err(), "masked");
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(Frames::parse(&huge).is_err(), "over the limit");
    }

    #[test]
    fn reply_ids_are_read() {
        assert_eq!(reply_id(br#"{"id":42,"status":200}"#), Some(42));
        assert_eq!(reply_id(br#"{"status":200}"#), None);
        assert_eq!(reply_id(br#"{"id":99999999999999999999}"#), None);
    }
}
