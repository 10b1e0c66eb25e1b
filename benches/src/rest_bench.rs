//! W4 REST order entry: N client connections (keep-alive HTTP/1.1 over
//! loopback) send signed `POST /api/v3/order` requests, paced open-loop at a
//! planned send time; latency is measured from the PLANNED time, so a stall
//! shows up in the histogram instead of silently slowing the sender
//! (coordinated omission). Setup registers traders, creates API keys and
//! funds them through the native API with an admin account.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: &str) -> Result<Conn> {
        let s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    /// Send one request, return (status, body).
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, String)> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(k);
            req.push_str(": ");
            req.push_str(v);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let mut buf = req.into_bytes();
        buf.extend_from_slice(body);
        self.w.write_all(&buf)?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    pub fn json(&mut self, path: &str, token: Option<&str>, body: &str) -> Result<(u16, String)> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        self.call("POST", path, &h, body.as_bytes())
    }
}

fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let start = json.find(&key)? + key.len();
    let end = json[start..].find('"')? + start;
    Some(&json[start..end])
}

pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Wall clock, ns since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// API key and secret of a funded trader.
#[derive(Debug, Clone)]
pub struct Account {
    pub key: String,
    pub secret: String,
    /// The secret as an HMAC key, its two pad blocks hashed once: signing
    /// at 100,000 orders/s is the load generator's biggest cost, and it
    /// shares the 2 cores with the server it measures.
    signer: ring::hmac::Key,
}

impl Account {
    pub fn new(key: String, secret: String) -> Account {
        let signer = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        Account {
            key,
            secret,
            signer,
        }
    }

    /// Lower-case hex HMAC-SHA256 of `payload` under the secret: what
    /// `gateway::binance::sign::hmac_sha256_hex` computes, faster.
    pub fn sign(&self, payload: &[u8]) -> String {
        gateway::binance::sign::hex_lower(ring::hmac::sign(&self.signer, payload).as_ref())
    }
}

/// Register `name`, create a TRADE key, fund it with BTC and USDT.
pub fn make_trader(c: &mut Conn, admin_token: &str, name: &str) -> Result<Account> {
    let pw = format!("{name}-bench-password");
    let (st, body) = c.json(
        "/api/v1/auth/register",
        None,
        &format!(r#"{{"username":"{name}","email":"{name}@bench.local","password":"{pw}"}}"#),
    )?;
    if st != 201 && st != 409 {
        bail!("register {name}: {st} {body}");
    }
    let (st, body) = c.json(
        "/api/v1/auth/login",
        None,
        &format!(r#"{{"username":"{name}","password":"{pw}"}}"#),
    )?;
    let token = field(&body, "access_token")
        .with_context(|| format!("login {name}: {st} {body}"))?
        .to_string();
    let (st, body) = c.json(
        "/api/v1/api-keys",
        Some(&token),
        r#"{"label":"bench","permissions":["READ","TRADE"]}"#,
    )?;
    let key = field(&body, "apiKey").with_context(|| format!("api key: {st} {body}"))?;
    let secret = field(&body, "secretKey").context("secret")?;
    for (asset, amount) in [("BTC", "100000"), ("USDT", "100000000")] {
        let (st, body) = c.json(
            "/api/v1/admin/deposits",
            Some(admin_token),
            &format!(
                r#"{{"username":"{name}","asset":"{asset}","amount":"{amount}","tx_hash":"bench-{name}-{asset}-{}","confirmations":1000}}"#,
                now_ms()
            ),
        )?;
        if st != 201 {
            bail!("deposit: {st} {body}");
        }
    }
    Ok(Account::new(key.to_string(), secret.to_string()))
}

pub fn admin_token(c: &mut Conn, user: &str, password: &str) -> Result<String> {
    let (st, body) = c.json(
        "/api/v1/auth/login",
        None,
        &format!(r#"{{"username":"{user}","password":"{password}"}}"#),
    )?;
    Ok(field(&body, "access_token")
        .with_context(|| {
            format!("admin login failed ({st}): {body}; pass --admin-user/--admin-password")
        })?
        .to_string())
}

#[derive(Debug)]
pub struct LoadResult {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// First error answer seen, for the report.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// From the planned send time to the answer (what the paced client saw).
    pub hist: Histogram<u64>,
    /// From the actual write of the request to its answer: the server's
    /// round trip without the client's own pacing delay (timer granularity,
    /// a connection still busy with its previous request).
    pub rtt: Histogram<u64>,
    /// Worst latency per window of planned time (where the tail came from).
    pub timeline: crate::run::Timeline,
    /// CPU seconds the client spent before the timed run began (signing
    /// ahead), left out of its CPU per order.
    pub setup_cpu_s: f64,
    /// The machine's CPU ticks when the timed run began
    /// ([`crate::run::cpu_ticks`]), for its steal share.
    pub ticks_at_start: Option<(u64, u64)>,
    /// The client's own worst event-loop lateness (ns) and when (ms after
    /// the start): see [`crate::run::spawn_lag_probe`].
    pub client_lag: (u64, u64),
}

/// One order request of connection `conn`, number `k`: sides alternate at
/// prices that cross the other side's resting orders, so about half of the
/// orders trade and the book stays small (no open-order limit is reached).
fn order_request(acct: &Account, conn: usize, k: u64) -> Vec<u8> {
    let buy = (k + conn as u64).is_multiple_of(2);
    let side = if buy { "BUY" } else { "SELL" };
    let px = if buy { 30_001 } else { 29_999 } + (k % 3) as i64 - 1;
    let q = format!(
        "symbol=BTCUSDT&side={side}&type=LIMIT&timeInForce=GTC&quantity=0.001&price={px}&newOrderRespType=ACK&timestamp={}",
        now_ms()
    );
    let sig = acct.sign(q.as_bytes());
    format!(
        "POST /api/v3/order?{q}&signature={sig} HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\nX-MBX-APIKEY: {}\r\n\r\n",
        acct.key
    )
    .into_bytes()
}

/// Read one HTTP/1.1 response: its status and body.
async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<(u16, String)> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad status line")?;
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// How planned requests are given to connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Like a client's connection pool: one global schedule, and the next
    /// planned request goes to whichever connection is free first. A slow
    /// answer delays only its own request (latency still counts from the
    /// planned time, so a request that waits for a free connection shows
    /// it).
    Pool,
    /// Connection `i` owns every `conns`-th slot of the schedule and sends
    /// its next request only when its previous answer is in: one slow
    /// answer delays every later request of that connection (head-of-line
    /// blocking), even while the other connections are idle.
    Fixed,
}

/// Open-loop paced load: `conns` keep-alive connections driven by one
/// tokio thread (the server has the other core), `rate` orders/s in total,
/// for `duration`. A connection sends a request when its previous answer
/// is in and the request's planned time has come; `dispatch` decides which
/// planned request a free connection takes.
pub fn run(
    addr: &str,
    accounts: &[Account],
    conns: usize,
    rate: u64,
    duration: Duration,
    dispatch: Dispatch,
    tick: Duration,
) -> Result<LoadResult> {
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let interval_ns = 1_000_000_000 / rate.max(1);
        let per_conn_interval_ns = (conns as u64 * 1_000_000_000) / rate.max(1);
        let next_slot = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let ticks_at_start = crate::run::cpu_ticks();
        let start = Instant::now() + Duration::from_millis(200);
        let plan = crate::pacer::Plan::new(start, tick);
        let ticks = plan.ticks().context("start the send ticker")?;
        let probe = crate::run::spawn_lag_probe(start, duration);
        let mut tasks = Vec::new();
        for i in 0..conns {
            let acct = accounts[i % accounts.len()].clone();
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connect {addr}"))?;
            stream.set_nodelay(true)?;
            let next_slot = next_slot.clone();
            let mut ticks = ticks.clone();
            tasks.push(tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut r = tokio::io::BufReader::new(r);
                let mut h = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
                    .expect("histogram bounds");
                let mut rtt = h.clone();
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut first_error = None;
                let mut timeline = crate::run::Timeline::default();
                let offset = per_conn_interval_ns * i as u64 / conns as u64;
                let mut k = 0u64;
                loop {
                    let at_ns = plan.at_ns(match dispatch {
                        Dispatch::Fixed => offset + k * per_conn_interval_ns,
                        Dispatch::Pool => {
                            k = next_slot.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            k * interval_ns
                        }
                    });
                    let planned = plan.instant(at_ns);
                    if planned.duration_since(start) >= duration {
                        break;
                    }
                    if !ticks.reached(plan.tick_of(at_ns)).await {
                        errors += 1;
                        first_error.get_or_insert_with(|| "the send ticker stopped".into());
                        break;
                    }
                    let req = order_request(&acct, i, k);
                    let sent = Instant::now();
                    let res = match w.write_all(&req).await {
                        Ok(()) => read_response(&mut r).await,
                        Err(e) => Err(e.into()),
                    };
                    let lat = planned.elapsed().as_nanos() as u64;
                    h.saturating_record(lat.max(1_000));
                    timeline.record(at_ns, lat);
                    rtt.saturating_record((sent.elapsed().as_nanos() as u64).max(1_000));
                    match res {
                        Ok((200, _)) => ok += 1,
                        Ok((st, body)) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{st} {body}"));
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                            break;
                        }
                    }
                    k += 1;
                }
                (ok, errors, h, rtt, first_error, timeline)
            }));
        }
        let mut total = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
        let mut rtt = total.clone();
        let (mut ok, mut errors) = (0, 0);
        let mut first_error = None;
        let mut timeline = crate::run::Timeline::default();
        for t in tasks {
            let (o, e, hist, r, fe, tl) = t.await?;
            timeline.merge(&tl);
            ok += o;
            errors += e;
            total.add(&hist)?;
            rtt.add(&r)?;
            if first_error.is_none() {
                first_error = fe;
            }
        }
        Ok(LoadResult {
            sent: ok + errors,
            ok,
            errors,
            first_error,
            elapsed: start.elapsed(),
            hist: total,
            rtt,
            timeline,
            setup_cpu_s: 0.0,
            ticks_at_start,
            client_lag: probe.await?,
        })
    })
}

/// The cumulative buckets `(upper bound in seconds, count)` of histogram
/// `name` in a Prometheus text page, `+Inf` last (as `f64::INFINITY`).
pub fn scrape_histogram(page: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    page.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// What the W4 result line reads from the server's `/metrics` page, before
/// and after a run (one scrape each; empty when the page cannot be read:
/// an older server).
#[derive(Debug, Default, Clone)]
pub struct ServerView {
    /// `mx_command_ack_seconds`: ring push to durable, applied outcome.
    pub acks: Vec<(f64, u64)>,
    /// `mx_journal_commit_seconds`: each group commit (append + fdatasync).
    pub commits: Vec<(f64, u64)>,
    /// `mx_thread_cpu_seconds_total` by thread name.
    pub threads: Vec<(String, f64)>,
}

impl ServerView {
    pub fn scrape(addr: &str) -> ServerView {
        let page = Conn::open(addr)
            .and_then(|mut c| c.call("GET", "/metrics", &[], b""))
            .map(|(_, page)| page)
            .unwrap_or_default();
        ServerView::of_page(&page)
    }

    pub fn of_page(page: &str) -> ServerView {
        ServerView {
            acks: scrape_histogram(page, "mx_command_ack_seconds"),
            commits: scrape_histogram(page, "mx_journal_commit_seconds"),
            threads: scrape_labelled(page, "mx_thread_cpu_seconds_total", "thread"),
        }
    }
}

/// The journal's group commits during a run, as result-line fields:
/// `"journal_commits":N,"journal_commits_over_50ms":M,
/// "journal_commit_max_le_ns":X` (`X` the upper bound of the slowest
/// commit's bucket, `null` past the last bound or with no commit). A run
/// whose acknowledgement tail comes from the disk (one fdatasync that
/// stalled for 100 ms holds every order of those 100 ms: 1% of a 10 s run)
/// shows it here, apart from the server's own CPU.
pub fn commit_stalls_json(before: &[(f64, u64)], after: &[(f64, u64)]) -> String {
    let (commits, over) = count_over(before, after, 0.05);
    let max = bucket_quantile_ns(before, after, 1.0)
        .map_or_else(|| "null".to_string(), |v| v.to_string());
    format!(
        "\"journal_commits\":{commits},\"journal_commits_over_50ms\":{over},\"journal_commit_max_le_ns\":{max}"
    )
}

/// `(samples, samples above threshold_s)` that histogram `before` ->
/// `after` gained; `threshold_s` must be one of its bucket bounds (else
/// `above` counts from the next lower bound).
pub(crate) fn count_over(
    before: &[(f64, u64)],
    after: &[(f64, u64)],
    threshold_s: f64,
) -> (u64, u64) {
    let delta = gained(before, after);
    let total = delta.last().map_or(0, |b| b.1);
    let within = delta
        .iter()
        .take_while(|b| b.0 <= threshold_s)
        .last()
        .map_or(0, |b| b.1);
    (total, total.saturating_sub(within))
}

/// The cumulative buckets of the samples counted between two scrapes of
/// one histogram.
fn gained(before: &[(f64, u64)], after: &[(f64, u64)]) -> Vec<(f64, u64)> {
    after
        .iter()
        .map(|&(le, n)| {
            let was = before.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
            (le, n.saturating_sub(was))
        })
        .collect()
}

/// `(label value, sample)` of every sample of metric `name` that carries
/// the one label `label` in a Prometheus text page.
pub fn scrape_labelled(page: &str, name: &str, label: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}{{{label}=\"");
    page.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (value, sample) = rest.split_once("\"} ")?;
            Some((value.to_string(), sample.trim().parse().ok()?))
        })
        .collect()
}

/// CPU seconds (user + system) this process has used.
pub fn own_cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// `"cpu_us_per_order":{...}`: microseconds of CPU per order answered, of
/// this client and of each server thread (from two scrapes of
/// `mx_thread_cpu_seconds_total`, 10 ms resolution), so that runs on a
/// host whose speed changes compare by the work done, not only by latency.
pub fn cpu_per_order_json(
    client_secs: f64,
    before: &[(String, f64)],
    after: &[(String, f64)],
    orders: u64,
) -> String {
    let per = |secs: f64| secs * 1e6 / orders.max(1) as f64;
    let mut out = format!("\"cpu_us_per_order\":{{\"client\":{:.2}", per(client_secs));
    for (thread, now) in after {
        let was = before
            .iter()
            .find(|(t, _)| t == thread)
            .map_or(0.0, |b| b.1);
        out.push_str(&format!(",\"{thread}\":{:.2}", per((now - was).max(0.0))));
    }
    out.push('}');
    out
}

/// The upper bound (ns) of the bucket holding quantile `q` of the samples
/// counted between two scrapes of one cumulative histogram; `None` when
/// nothing was counted, or the quantile lies past the last finite bound.
pub fn bucket_quantile_ns(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<u64> {
    let delta = gained(before, after);
    let total = delta.last()?.1;
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).ceil() as u64;
    let (le, _) = delta.iter().find(|(_, n)| *n >= want.max(1))?;
    le.is_finite().then(|| (le * 1e9).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE mx_command_ack_seconds histogram\n\
        mx_command_ack_seconds_bucket{le=\"0.001\"} 10\n\
        mx_command_ack_seconds_bucket{le=\"0.005\"} 90\n\
        mx_command_ack_seconds_bucket{le=\"0.01\"} 99\n\
        mx_command_ack_seconds_bucket{le=\"+Inf\"} 100\n\
        mx_command_ack_seconds_sum 0.5\n\
        mx_other_bucket{le=\"1\"} 5\n";

    #[test]
    fn thread_cpu_per_order_is_scraped_and_divided() {
        let page = "mx_thread_cpu_seconds_total{thread=\"mx-engine\"} 1.5\n\
            mx_thread_cpu_seconds_total{thread=\"mx-gateway\"} 7\n\
            mx_other{thread=\"x\"} 9\n";
        let after = scrape_labelled(page, "mx_thread_cpu_seconds_total", "thread");
        assert_eq!(
            after,
            vec![
                ("mx-engine".to_string(), 1.5),
                ("mx-gateway".to_string(), 7.0)
            ]
        );
        let before = vec![("mx-engine".to_string(), 0.5)];
        assert_eq!(
            cpu_per_order_json(2.0, &before, &after, 1_000_000),
            "\"cpu_us_per_order\":{\"client\":2.00,\"mx-engine\":1.00,\"mx-gateway\":7.00}"
        );
        assert!(own_cpu_secs() > 0.0);
    }

    #[test]
    fn account_signatures_are_the_gateways_hmac() {
        for secret in ["S", &"long secret ".repeat(12)] {
            let acct = Account::new("K".into(), secret.to_string());
            for payload in ["", "symbol=BTCUSDT&side=BUY&timestamp=1"] {
                assert_eq!(
                    acct.sign(payload.as_bytes()),
                    gateway::binance::sign::hmac_sha256_hex(secret.as_bytes(), payload.as_bytes())
                );
            }
        }
    }

    #[test]
    fn server_histogram_quantiles_come_from_the_scrape_difference() {
        let after = scrape_histogram(PAGE, "mx_command_ack_seconds");
        assert_eq!(
            after,
            vec![(0.001, 10), (0.005, 90), (0.01, 99), (f64::INFINITY, 100)]
        );
        let before = vec![(0.001, 10), (0.005, 10), (0.01, 10), (f64::INFINITY, 10)];
        // Between the scrapes: 0 under 1 ms, 80 under 5 ms, 89 under 10 ms,
        // 90 in all.
        assert_eq!(bucket_quantile_ns(&before, &after, 0.5), Some(5_000_000));
        assert_eq!(bucket_quantile_ns(&before, &after, 0.98), Some(10_000_000));
        assert_eq!(bucket_quantile_ns(&before, &after, 0.999), None, "+Inf");
        assert_eq!(bucket_quantile_ns(&after, &after, 0.5), None, "nothing new");
        assert_eq!(bucket_quantile_ns(&[], &[], 0.5), None);
    }

    #[test]
    fn commit_stalls_are_counted_from_the_scrape_difference() {
        let page = "mx_journal_commit_seconds_bucket{le=\"0.001\"} 900\n\
            mx_journal_commit_seconds_bucket{le=\"0.05\"} 995\n\
            mx_journal_commit_seconds_bucket{le=\"0.1\"} 998\n\
            mx_journal_commit_seconds_bucket{le=\"0.25\"} 1000\n\
            mx_journal_commit_seconds_bucket{le=\"+Inf\"} 1000\n\
            mx_thread_cpu_seconds_total{thread=\"mx-journaler\"} 2\n";
        let after = ServerView::of_page(&format!("{PAGE}{page}"));
        assert_eq!(after.acks.len(), 4);
        assert_eq!(after.threads, vec![("mx-journaler".to_string(), 2.0)]);
        let before = vec![
            (0.001, 100),
            (0.05, 100),
            (0.1, 100),
            (0.25, 100),
            (f64::INFINITY, 100),
        ];
        // Between the scrapes: 900 commits, 895 within 50 ms, 3 in
        // (50, 100] ms and 2 in (100, 250] ms.
        assert_eq!(count_over(&before, &after.commits, 0.05), (900, 5));
        assert_eq!(count_over(&before, &after.commits, 0.1), (900, 2));
        assert_eq!(
            commit_stalls_json(&before, &after.commits),
            "\"journal_commits\":900,\"journal_commits_over_50ms\":5,\"journal_commit_max_le_ns\":250000000"
        );
        // Nothing scraped (an older server): zero commits, no maximum.
        assert_eq!(
            commit_stalls_json(&[], &ServerView::of_page("").commits),
            "\"journal_commits\":0,\"journal_commits_over_50ms\":0,\"journal_commit_max_le_ns\":null"
        );
    }
}
