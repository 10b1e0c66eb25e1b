//! W4 over the WebSocket API: N connections to `/ws-api/v3` send signed
//! `order.place` requests, pipelined (a connection never waits for a reply
//! before sending the next), paced open-loop at planned send times; each
//! reply's latency is measured from its request's PLANNED time, so a stall
//! shows up in the histogram instead of silently slowing the sender
//! (coordinated omission). Request `k` of a connection carries id `k`, so
//! the reader recomputes its planned time without shared state.
//!
//! The client runs on one tokio thread (the server has the other core);
//! orders alternate buy/sell across the spread as in the REST W4, so about
//! half trade and the book stays small.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use crate::rest_bench::{now_ms, Account, LoadResult};

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
fn reply_id(text: &str) -> Option<u64> {
    let i = text.find("\"id\":")? + 5;
    let rest = &text.as_bytes()[i..];
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..n]).ok()?.parse().ok()
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
) -> Result<LoadResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let interval_ns = (conns as u64 * 1_000_000_000) / rate.max(1);
        let total_per_conn = duration.as_nanos() as u64 / interval_ns.max(1);
        let mut sockets = Vec::new();
        for _ in 0..conns {
            let url = format!("ws://{addr}/ws-api/v3");
            // TCP_NODELAY, as trading clients set it (asyncio does).
            // tungstenite zero-fills its whole read buffer (128 KiB by
            // default) before every read: 15% of this client's CPU at
            // 80,000/s. Replies are small; 32 KiB is the server's size.
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(32 << 10);
            let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
                .await
                .with_context(|| format!("connect {url}"))?;
            sockets.push(ws);
        }
        let start = Instant::now() + Duration::from_millis(200);
        let plan = crate::pacer::Plan::new(start, tick);
        let ticks = plan.ticks().context("start the send ticker")?;
        let probe = crate::run::spawn_lag_probe(start, duration);
        let mut tasks = Vec::new();
        for (i, ws) in sockets.into_iter().enumerate() {
            let acct = accounts[i % accounts.len()].clone();
            // Every connection on the same grid: each tick, each one sends
            // the requests planned for it (as the 1 ms timer wheel did).
            let planned_ns = move |k: u64| plan.at_ns(k * interval_ns);
            let planned = move |k: u64| plan.instant(planned_ns(k));
            let mut ticks = ticks.clone();
            let (mut sink, mut stream) = ws.split();
            // When each request was actually written (ns after `start`),
            // for the round-trip histogram.
            let sent_at: Arc<Vec<AtomicU64>> =
                Arc::new((0..total_per_conn).map(|_| AtomicU64::new(0)).collect());
            let sent_w = sent_at.clone();
            let sender = tokio::spawn(async move {
                let mut k = 0u64;
                while k < total_per_conn {
                    if !ticks.reached(plan.tick_of(planned_ns(k))).await {
                        // The ticker failed: stop; the rest count as lost.
                        break;
                    }
                    // Send every request whose tick has come.
                    let come = ticks.count();
                    let mut sent_any = false;
                    // One clock reading per tick's burst (the requests of
                    // a tick are written together), not two per request.
                    let timestamp = now_ms();
                    let at = Instant::now().saturating_duration_since(start).as_nanos() as u64;
                    while k < total_per_conn && plan.tick_of(planned_ns(k)) < come {
                        let buy = (k + i as u64).is_multiple_of(2);
                        let px = if buy { 30_001 } else { 29_999 } + (k % 3) - 1;
                        let req = order_request(&acct, k, buy, px, timestamp);
                        sent_w[k as usize].store(at, Ordering::Relaxed);
                        if sink.feed(Message::Text(req.into())).await.is_err() {
                            return k;
                        }
                        sent_any = true;
                        k += 1;
                    }
                    if sent_any && sink.flush().await.is_err() {
                        return k;
                    }
                }
                let _ = sink.flush().await;
                k
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
                let deadline = start + duration + Duration::from_secs(30);
                let deadline = tokio::time::Instant::from_std(deadline);
                while r.ok + r.errors < total_per_conn {
                    let msg = match tokio::time::timeout_at(deadline, stream.next()).await {
                        Ok(Some(Ok(m))) => m,
                        Ok(_) | Err(_) => break,
                    };
                    let Message::Text(t) = msg else { continue };
                    let Some(id) = reply_id(t.as_str()) else {
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
                    if t.as_str().contains("\"status\":200") {
                        r.ok += 1;
                    } else {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| t.as_str().to_string());
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
        for (s, r) in tasks {
            sent += s.await?;
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
            client_lag: probe.await?,
        })
    })
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

    #[test]
    fn reply_ids_are_read() {
        assert_eq!(reply_id(r#"{"id":42,"status":200}"#), Some(42));
        assert_eq!(reply_id(r#"{"status":200}"#), None);
    }
}
