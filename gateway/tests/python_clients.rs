//! Real Binance client libraries (binance-connector and ccxt, from PyPI,
//! pinned in tests/clients/requirements.txt and installed into `.venv` by
//! `scripts/test`) trade against a real `serve` process by changing only
//! their base URL: place, query, cancel, balances, market data, errors.

mod common;

use std::process::Command;

use common::*;

fn python() -> String {
    if let Ok(p) = std::env::var("MX_TEST_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
    assert!(
        std::path::Path::new(venv).exists(),
        "no Python virtualenv with the Binance client libraries at {venv}: run scripts/test (it creates it), or set MX_TEST_PYTHON"
    );
    venv.to_string()
}

#[test]
fn binance_connector_and_ccxt_trade_unmodified() {
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let a = trader(
        &s,
        &admin,
        "pyalice",
        &[("USDT", "100000")],
        &["READ", "TRADE"],
    );
    let b = trader(&s, &admin, "pybob", &[("BTC", "1")], &["READ", "TRADE"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/run_clients.py");
    let out = Command::new(py)
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        .args([&a.key, &a.secret, &b.key, &b.secret])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client libraries failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("binance-connector: ok") && stdout.contains("ccxt: ok"),
        "{stdout}"
    );
}
