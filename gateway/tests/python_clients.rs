//! Real Binance client libraries (binance-connector and ccxt, from PyPI,
//! pinned in tests/clients/requirements.txt and installed into `.venv` by
//! `scripts/test`) trade against a real `serve` process by changing only
//! their base URL: place, query, cancel, balances, market data, errors;
//! and binance-connector's WebSocket stream client consuming the trade and
//! 100 ms diff-depth streams and a listen-key user data stream.

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

/// `<prefix>alice` with 100,000 USDT and `<prefix>bob` with 1 BTC, both
/// with READ and TRADE keys.
fn buyer_and_seller(s: &Server, prefix: &str) -> (Trader, Trader) {
    let admin = login(s, ADMIN, ADMIN_PW);
    let a = trader(
        s,
        &admin,
        &format!("{prefix}alice"),
        &[("USDT", "100000")],
        &["READ", "TRADE"],
    );
    let b = trader(
        s,
        &admin,
        &format!("{prefix}bob"),
        &[("BTC", "1")],
        &["READ", "TRADE"],
    );
    (a, b)
}

#[test]
fn binance_connector_and_ccxt_trade_unmodified() {
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let (a, b) = buyer_and_seller(&s, "py");
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

/// Run a client script; kill it after `limit` (its own waits have
/// deadlines, this only guards against a hang outside them).
fn run_script(py: &str, args: &[String], limit: std::time::Duration) -> (bool, String, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(py)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain both pipes on threads so a chatty script cannot block.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (stdout, stderr) = (out_t.join().unwrap(), err_t.join().unwrap());
    let stderr = match status {
        None => format!("killed after {limit:?}\n{stderr}"),
        Some(_) => stderr,
    };
    (status.is_some_and(|s| s.success()), stdout, stderr)
}

#[test]
fn binance_connector_streams_trades_depth_and_user_data() {
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let (a, b) = buyer_and_seller(&s, "ws");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/run_streams.py");
    let args = [
        script.to_string(),
        format!("http://127.0.0.1:{port}"),
        format!("ws://127.0.0.1:{port}"),
        a.key.clone(),
        a.secret.clone(),
        b.key.clone(),
        b.secret.clone(),
    ];
    let (ok, stdout, stderr) = run_script(&py, &args, std::time::Duration::from_secs(90));
    assert!(ok, "stream client failed:\n{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SUMMARY "))
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}\n{stderr}"));
    let sum: serde_json::Value = serde_json::from_str(line).unwrap();

    // The trade event is the trade REST reports, with Binance's typing.
    let trades = s.req("GET", "/api/v3/trades?symbol=BTCUSDT", &[], b"");
    let rest = trades.json.as_array().unwrap();
    assert_eq!(rest.len(), 1, "{}", trades.json);
    let t = &sum["trade"];
    assert_eq!(t["e"], "trade");
    assert_eq!(t["s"], "BTCUSDT");
    assert_eq!(t["t"], rest[0]["id"]);
    assert_eq!(t["p"], rest[0]["price"]);
    assert_eq!(t["q"], rest[0]["qty"]);
    assert_eq!(t["T"], rest[0]["time"]);
    assert_eq!(t["m"], rest[0]["isBuyerMaker"]);
    assert!(t["E"].is_u64());

    // The resting ask showed on the 100 ms diff stream and was removed.
    assert!(sum["depth_events"].as_u64().unwrap() >= 1);
    let asks = sum["ask_levels"].as_array().unwrap();
    assert_eq!(asks.last().unwrap()[1], "0.00000000", "{asks:?}");

    // A's executionReports: NEW, then the fill REST shows.
    let oid = sum["order_id"].as_u64().unwrap();
    let q = a.call(
        &s,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={oid}"),
    );
    assert_eq!(q.json["status"], "FILLED");
    let reps = sum["reports"].as_array().unwrap();
    assert_eq!(reps.len(), 2, "{reps:?}");
    assert_eq!(
        (reps[0]["x"].as_str(), reps[1]["X"].as_str()),
        (Some("NEW"), Some("FILLED"))
    );
    assert!(reps
        .iter()
        .all(|r| r["i"] == oid && r["c"] == "stream-buy-1"));
    let mine = a.call(&s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT");
    let m = &mine.json.as_array().unwrap()[0];
    assert_eq!(reps[1]["t"], m["id"]);
    assert_eq!(reps[1]["n"], m["commission"]);
    assert_eq!(reps[1]["N"], m["commissionAsset"]);
    assert_eq!(reps[1]["z"], q.json["executedQty"]);
    assert!(sum["positions"].as_u64().unwrap() >= 1);
    assert_eq!(sum["expired"], true);
}
