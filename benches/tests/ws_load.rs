//! `mx-bench ws`'s client against a real server: every request it sends,
//! signed ahead or live, is answered 200 by `serve` (run in this process on
//! a loopback port, with the configuration `serve` reads from `MX_*`), and
//! it answers the server's pings (a 1 s ping interval and a 2 s pong timeout
//! would close a connection that did not, before the 4 s run ends).
//!
//! One test in this file: it sets the process environment for the server.

use std::time::{Duration, Instant};

use benches::rest_bench::{admin_token, make_trader, Conn};
use benches::ws_bench::{run, Signing};

fn start_server() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    // Under the target directory (cargo's scratch space for integration
    // tests): the server runs until this process exits, so nothing here
    // can remove it after the test.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mx-ws-load-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (k, v) in [
        ("MX_DATA_DIR", dir.to_str().expect("utf-8 temp dir")),
        ("MX_HTTP_ADDR", &addr),
        ("MX_ADMIN_USERNAME", "admin"),
        ("MX_ADMIN_PASSWORD", "adminpassword123"),
        ("MX_HTTP__WS_PING_INTERVAL_SECS", "1"),
        ("MX_HTTP__WS_PONG_TIMEOUT_SECS", "2"),
    ] {
        std::env::set_var(k, v);
    }
    std::env::remove_var("DATABASE_URL");
    std::thread::spawn(|| {
        if let Err(e) = gateway::cli::serve_cmd(None) {
            panic!("serve failed: {e:#}");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Conn::open(&addr) {
            if c.json("/api/v1/auth/login", None, "{}").is_ok() {
                return addr;
            }
        }
        assert!(Instant::now() < deadline, "serve did not answer on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_request_is_answered_signed_ahead_or_live() {
    let addr = start_server();
    let mut c = Conn::open(&addr).expect("connect");
    let token = admin_token(&mut c, "admin", "adminpassword123").expect("admin login");
    let accounts: Vec<_> = (0..2)
        .map(|i| make_trader(&mut c, &token, &format!("wsload{i}")).expect("trader"))
        .collect();
    for signing in [Signing::Ahead, Signing::Live] {
        let r = run(
            &addr,
            &accounts,
            2,
            500,
            Duration::from_secs(4),
            Duration::from_millis(1),
            signing,
        )
        .expect("load run");
        assert_eq!(r.sent, 2_000, "{signing:?}: planned requests sent");
        assert_eq!(
            (r.ok, r.errors, r.first_error.as_deref()),
            (2_000, 0, None),
            "{signing:?}: every request answered 200"
        );
        assert_eq!(r.hist.len(), 2_000, "{signing:?}: one latency per answer");
        match signing {
            Signing::Ahead => assert!(r.setup_cpu_s > 0.0, "signing ahead takes CPU"),
            Signing::Live => assert!(r.setup_cpu_s < 0.5, "live: nothing signed before"),
        }
    }
}
