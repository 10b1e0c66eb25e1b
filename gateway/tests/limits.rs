//! Rate limits against a real server configured with small limits: request
//! weight per IP (-1003, HTTP 429, Retry-After, X-MBX-USED-WEIGHT-1M) and new
//! orders per API key (-1015, HTTP 429, Retry-After); refused requests change
//! nothing.

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
