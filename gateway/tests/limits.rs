//! Rate limits against a real server configured with small limits: request
//! weight per IP (-1003, HTTP 429, Retry-After, X-MBX-USED-WEIGHT-1M) and new
//! orders per API key (-1015, HTTP 429, Retry-After); refused requests change
//! nothing. An IP that keeps sending after its 429s is auto-banned (HTTP 418,
//! -1003 "IP banned until ...", Retry-After) for an escalating time, and the
//! ban expires.

mod common;

use common::*;

#[test]
fn weight_and_order_limits_answer_429_with_retry_after() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start_with(
        tmp.path(),
        port,
        &[
            ("MX_RATE_LIMITS__WEIGHT_PER_MINUTE_PER_IP", "500"),
            ("MX_RATE_LIMITS__ORDERS_PER_10S_PER_KEY", "3"),
        ],
    );
    let admin = login(&s, ADMIN, ADMIN_PW);
    let t = trader(
        &s,
        &admin,
        "limited",
        &[("USDT", "100000")],
        &["READ", "TRADE"],
    );
    // Orders: 3 pass in a 10 s window, the 4th is refused. (A window may
    // roll over mid-test; retry the whole sequence once if so.)
    let mut refused = None;
    for _attempt in 0..2 {
        let mut statuses = Vec::new();
        for i in 0..4 {
            let r = t.call(
                &s,
                "POST",
                "/api/v3/order",
                &format!(
                    "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price={}",
                    20000 + i
                ),
            );
            statuses.push((r.status, r.json.clone(), r.head.clone()));
        }
        if statuses[..3].iter().all(|(st, _, _)| *st == 200) && statuses[3].0 == 429 {
            refused = Some(statuses.pop().unwrap());
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(10));
    }
    let (_, json, head) = refused.expect("4th order in a 10 s window was not refused");
    assert_eq!(json["code"].as_i64(), Some(-1015), "{json}");
    assert!(head.contains("retry-after:"), "{head}");
    let open = t.call(&s, "GET", "/api/v3/openOrders", "symbol=BTCUSDT");
    assert!(open.json.as_array().unwrap().len() <= 6);
    // Weight: exchangeInfo costs 20; 500 per minute runs out.
    let mut last = None;
    for _ in 0..40 {
        let r = s.req("GET", "/api/v3/exchangeInfo", &[], b"");
        if r.status == 429 {
            last = Some(r);
            break;
        }
        assert!(r.head.contains("x-mbx-used-weight-1m:"));
    }
    let r = last.expect("request weight never ran out");
    assert_eq!(r.json["code"].as_i64(), Some(-1003), "{}", r.json);
    assert!(r.head.contains("retry-after:"), "{}", r.head);
}

/// `msg` of a 418 names the end of the ban in epoch ms.
fn banned_until(msg: &str) -> u64 {
    let rest = msg
        .strip_prefix("Way too much request weight used; IP banned until ")
        .unwrap_or_else(|| panic!("not a ban message: {msg}"));
    let (until, tail) = rest.split_once('.').unwrap();
    assert_eq!(
        tail,
        " Please use WebSocket Streams for live updates to avoid bans."
    );
    until.parse().unwrap()
}

fn retry_after(head: &str) -> u64 {
    head.lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .unwrap_or_else(|| panic!("no Retry-After: {head}"))
        .trim()
        .parse()
        .unwrap()
}

/// Requests until one is answered `status`; every answer before it must be
/// 200 or 429, and every answer carries the weight header.
fn ping_until(s: &Server, status: u16, max: usize) -> Resp {
    for _ in 0..max {
        let r = s.req("GET", "/api/v3/ping", &[], b"");
        assert!(r.head.contains("x-mbx-used-weight-1m:"), "{}", r.head);
        if r.status == status {
            return r;
        }
        assert!(
            r.status == 200 || r.status == 429,
            "{} {}",
            r.status,
            r.json
        );
    }
    panic!("no {status} within {max} requests");
}

#[test]
fn an_ip_that_keeps_hammering_after_429_is_banned_with_418_until_the_ban_expires() {
    // Weight 30 per minute (ping weighs 1), the 3rd refusal in a window
    // bans, first ban 1.5 s, doubling up to 10 s.
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start_with(
        tmp.path(),
        port,
        &[
            ("MX_RATE_LIMITS__WEIGHT_PER_MINUTE_PER_IP", "30"),
            ("MX_RATE_LIMITS__BAN_AFTER_REJECTIONS", "2"),
            ("MX_RATE_LIMITS__FIRST_BAN_MS", "1500"),
            ("MX_RATE_LIMITS__MAX_BAN_MS", "10000"),
        ],
    );
    // Refusals are counted per minute window: keep the first phase inside
    // one by starting early in a minute.
    let into_minute = now_ms() % 60_000;
    if into_minute > 45_000 {
        std::thread::sleep(std::time::Duration::from_millis(60_500 - into_minute));
    }
    let r = ping_until(&s, 429, 40);
    assert_eq!(r.json["code"].as_i64(), Some(-1003), "{}", r.json);
    assert_eq!(
        r.json["msg"],
        "Too much request weight used; current limit is 30 request weight per 1 MINUTE. \
         Please use WebSocket Streams for live updates to avoid polling the API."
    );
    assert!(retry_after(&r.head) >= 1);
    assert!(r.head.contains("x-mbx-used-weight-1m: 30"), "{}", r.head);
    // Second refusal: still 429.
    let r = s.req("GET", "/api/v3/ping", &[], b"");
    assert_eq!(r.status, 429, "{}", r.json);
    // Third: banned.
    let before = now_ms();
    let r = s.req("GET", "/api/v3/ping", &[], b"");
    assert_eq!(r.status, 418, "{}", r.json);
    assert!(
        r.head.contains("content-type: application/json"),
        "{}",
        r.head
    );
    assert_eq!(r.json["code"].as_i64(), Some(-1003), "{}", r.json);
    let until = banned_until(r.json["msg"].as_str().unwrap());
    assert!(
        until >= before + 1_400 && until <= now_ms() + 1_600,
        "ban until {until}, asked at {before}"
    );
    assert_eq!(retry_after(&r.head), 2, "1.5 s rounds up");
    assert!(r.head.contains("x-mbx-used-weight-1m:"), "{}", r.head);
    // Every endpoint is refused while the ban lasts, with the same end.
    let r = s.req("GET", "/api/v3/exchangeInfo", &[], b"");
    assert_eq!(r.status, 418, "{}", r.json);
    assert_eq!(banned_until(r.json["msg"].as_str().unwrap()), until);
    assert!(retry_after(&r.head) <= 2);

    // The ban expires: the answer is no longer 418 (429 while this minute's
    // weight is used up, 200 once a new minute began).
    let wait = until.saturating_sub(now_ms()) + 100;
    std::thread::sleep(std::time::Duration::from_millis(wait));
    let r = s.req("GET", "/api/v3/ping", &[], b"");
    assert!(
        r.status == 429 || r.status == 200,
        "{} {}",
        r.status,
        r.json
    );
    if r.status == 429 {
        assert!(
            r.json["msg"]
                .as_str()
                .unwrap()
                .starts_with("Too much request weight used"),
            "{}",
            r.json
        );
    }

    // Hammering again bans again, twice as long (3 s).
    let before = now_ms();
    let r = ping_until(&s, 418, 80);
    let until = banned_until(r.json["msg"].as_str().unwrap());
    assert!(
        until >= before + 2_900 && until <= now_ms() + 3_100,
        "second ban until {until}, started at {before}"
    );
    assert_eq!(retry_after(&r.head), 3);
}

/// A kept-alive connection that has been served once (so it holds one of the
/// server's connection slots).
fn open_conn(port: u16) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    c.write_all(b"GET /api/v3/ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"{}") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200 "));
    c
}

#[test]
fn connections_over_max_connections_get_503_and_a_freed_slot_is_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start_with(tmp.path(), port, &[("MX_HTTP__MAX_CONNECTIONS", "3")]);
    // Readiness polling may leave a closing connection behind: wait until
    // three kept-alive connections are in.
    let mut held = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while held.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "3 slots never free");
        match s.try_req("GET", "/api/v3/ping", &[], b"") {
            Ok(r) if r.status == 200 => held.push(open_conn(port)),
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    // Full: the next one is answered 503 with the contract's JSON error
    // and closed, and the held connections still work.
    let r = s.req("GET", "/api/v3/ping", &[], b"");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json["code"], -1008, "{}", r.body);
    assert!(r.json["msg"]
        .as_str()
        .unwrap()
        .contains("http.max_connections"));
    assert!(r.head.contains("retry-after: 1"), "{}", r.head);
    {
        use std::io::{Read, Write};
        let c = &mut held[0];
        c.write_all(b"GET /api/v3/time HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 "));
    }
    // A closed connection frees its slot: /metrics, on it, counts the
    // refusal and three open connections (two held and its own).
    drop(held.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let metrics = loop {
        let r = s.req("GET", "/metrics", &[], b"");
        if r.status == 200 {
            break r.body;
        }
        assert_eq!(r.status, 503);
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let value = |name: &str| metric(&metrics, name);
    assert!(value("mx_http_connections_refused_total") >= 1.0);
    assert_eq!(value("mx_http_connections"), 3.0);
}

/// A TCP server that accepts connections and never answers: a PostgreSQL
/// that hangs.
fn black_hole() -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            held.push(c);
        }
    });
    port
}

#[test]
fn requests_not_answered_within_request_timeout_get_503() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // History and audit reads go to a database that never answers; the
    // request deadline (1.5 s) comes before the pool's own (2 s).
    let db = format!("postgres://postgres@127.0.0.1:{}/hangs", black_hole());
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("MX_MARKET_DATA__ORDERS_KEPT_PER_USER", "1"),
    ];
    // The setup runs with the default deadline: logins hash with argon2id
    // (about 35 ms in a test build, but seconds on a machine busy with a
    // parallel build), so a 1.5 s deadline could cut the login itself.
    let s = Server::start_with(tmp.path(), port, &env);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let trader = trader(
        &s,
        &admin,
        "patient",
        &[("USDT", "1000")],
        &["READ", "TRADE"],
    );
    // Two orders placed and canceled: memory keeps one closed order, so
    // allOrders needs Postgres for the other.
    for price in ["20000", "20001"] {
        let o = trader.order(
            &s,
            &format!(
                "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price={price}"
            ),
        );
        let id = o["orderId"].as_u64().unwrap();
        let r = trader.call(
            &s,
            "DELETE",
            "/api/v3/order",
            &format!("symbol=BTCUSDT&orderId={id}"),
        );
        assert_eq!(r.status, 200, "{}", r.json);
    }
    // The same data directory (journal, keys, secrets) with the short
    // deadline; the admin's session and the trader's key carry over.
    s.kill();
    let port = free_port();
    let mut env = env.to_vec();
    env.push(("MX_HTTP__REQUEST_TIMEOUT_MS", "1500"));
    let s = Server::start_with(tmp.path(), port, &env);
    let t = Instant::now();
    let r = trader.call(&s, "GET", "/api/v3/allOrders", "symbol=BTCUSDT");
    let took = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.json);
    assert_eq!(r.json["code"], -1007, "{}", r.json);
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(15),
        "{took:?}"
    );
    // The native API answers its own error form.
    let r = s.req(
        "GET",
        "/api/v1/admin/audit-logs",
        &[("Authorization", &format!("Bearer {admin}"))],
        b"",
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.json["msg"]
            .as_str()
            .unwrap()
            .contains("http.request_timeout_ms"),
        "{}",
        r.json
    );
    // Requests that do not wait on the database are served as before.
    let r = s.req("GET", "/api/v3/time", &[], b"");
    assert_eq!(r.status, 200);
}
