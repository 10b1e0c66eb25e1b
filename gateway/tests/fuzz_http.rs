//! Seeded random hostile requests against every REST route of a real
//! `serve` process (tests/clients/fuzz_http.py: malformed, missing,
//! oversized, negative, overflowing, unicode and injection-like values in
//! query strings, form and JSON bodies and path segments; good, bad and
//! missing credentials and signatures; wrong methods). Every answer must
//! be the contract's JSON error (or a success), never a 500, a non-JSON
//! body or a dropped connection, and the server must stay up. Once on the
//! embedded journal alone and once with Postgres (the routes that read the
//! persister's database).

mod common;

use std::process::Command;

use common::*;

/// The script needs only Python's standard library.
fn python() -> String {
    std::env::var("MX_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn fuzz(s: &Server, requests: u32, seed: u64) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/fuzz_http.py");
    let out = Command::new(python())
        .arg(script)
        .arg(s.port.to_string())
        .arg(requests.to_string())
        .arg(seed.to_string())
        .args([ADMIN, ADMIN_PW])
        .output()
        .expect("run python3 (set MX_TEST_PYTHON to another interpreter)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hostile requests broke the contract (seed {seed}):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("done {requests} bad 0")),
        "{stdout}"
    );
}

/// After all of it the process is alive, healthy and still trades.
fn still_trading(s: &mut Server) {
    assert!(s.child.try_wait().unwrap().is_none(), "serve exited");
    assert_eq!(s.req("GET", "/health", &[], b"").status, 200);
    let admin = login(s, ADMIN, ADMIN_PW);
    let t = trader(
        s,
        &admin,
        "afterfuzz",
        &[("USDT", "1000")],
        &["READ", "TRADE"],
    );
    let o = t.order(
        s,
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=20000",
    );
    assert_eq!(o["status"], "NEW", "{o}");
    assert_eq!(
        t.balance(s, "USDT"),
        ("980.00000000".to_string(), "20.00000000".to_string())
    );
}

#[test]
fn hostile_requests_on_every_route_get_json_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(tmp.path(), free_port());
    for seed in fuzz_seeds(&[1, 2, 3]) {
        fuzz(&s, 4_000, seed);
    }
    still_trading(&mut s);
}

#[test]
fn hostile_requests_with_postgres_get_json_errors() {
    let (_rt, db) = common::test_db();
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(tmp.path(), free_port(), &[("DATABASE_URL", db.url())]);
    for seed in fuzz_seeds(&[11]) {
        fuzz(&s, 4_000, seed);
    }
    still_trading(&mut s);
}
