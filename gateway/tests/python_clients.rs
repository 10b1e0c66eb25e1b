//! Real Binance client libraries from PyPI (pinned in
//! tests/clients/requirements.txt and installed into `.venv` by
//! `scripts/test`) and npm against a real `serve` process, configured only by
//! their URLs, each from its own script in tests/clients/:
//! - binance-connector and ccxt (REST): place, query, cancel, balances,
//!   market data, errors (run_clients.py); binance-connector's stream client
//!   on the trade and 100 ms diff-depth streams and a listen-key user data
//!   stream (run_streams.py); its WebSocket API client trading over
//!   `/ws-api/v3` (run_connector_wsapi.py);
//! - python-binance: REST `Client`, then `AsyncClient` with its socket
//!   manager and the WebSocket API (run_python_binance.py);
//! - binance-sdk-spot, Binance's official SDK with strictly typed models:
//!   REST, WebSocket API and streams (run_binance_sdk.py);
//! - ccxt.pro: local order book, trades, ticker, candles, orders and
//!   balance over WebSockets, orders with `create_order_ws`
//!   (run_ccxt_pro.py);
//! - Node.js, the npm package `binance` (pinned by node/package-lock.json,
//!   installed into node/node_modules by `scripts/test`): REST, WebSocket
//!   API orders and user data, trade and diff-depth streams
//!   (node/run_binance_node.js).

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

/// What a client script left: the server it ran against, its two traders,
/// its stdout and its `SUMMARY ` JSON line.
struct ScriptRun {
    s: Server,
    a: Trader,
    b: Trader,
    stdout: String,
    sum: serde_json::Value,
    _tmp: tempfile::TempDir,
}

impl ScriptRun {
    /// The script printed `marker` (its line for a stage that passed).
    fn assert_printed(&self, marker: &str) {
        assert!(
            self.stdout.contains(marker),
            "no {marker:?} in:\n{}",
            self.stdout
        );
    }
}

/// Start a server with `<prefix>alice` (USDT) and `<prefix>bob` (BTC) and
/// run `tests/clients/<script> BASE_URL WS_URL KEY_A SECRET_A KEY_B
/// SECRET_B`, which must succeed and print a `SUMMARY ` line.
/// A `.js` script runs under Node.js from tests/clients/node (its packages
/// in node_modules there, installed by `scripts/test`).
fn run_client_script(script: &str, prefix: &str, limit_secs: u64) -> ScriptRun {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");
    let (interpreter, path) = if script.ends_with(".js") {
        let modules = format!("{dir}/node/node_modules");
        assert!(
            std::path::Path::new(&modules).exists(),
            "no {modules}: run scripts/test (it runs npm ci there)"
        );
        ("node".to_string(), format!("{dir}/node/{script}"))
    } else {
        (python(), format!("{dir}/{script}"))
    };
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let (a, b) = buyer_and_seller(&s, prefix);
    let args = [
        path,
        format!("http://127.0.0.1:{port}"),
        format!("ws://127.0.0.1:{port}"),
        a.key.clone(),
        a.secret.clone(),
        b.key.clone(),
        b.secret.clone(),
    ];
    let limit = std::time::Duration::from_secs(limit_secs);
    let (ok, stdout, stderr) = run_script(&interpreter, &args, limit);
    assert!(ok, "{script} failed:\n{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SUMMARY "))
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}\n{stderr}"));
    let sum: serde_json::Value = serde_json::from_str(line).unwrap();
    ScriptRun {
        s,
        a,
        b,
        stdout,
        sum,
        _tmp: tmp,
    }
}

#[test]
fn binance_connector_streams_trades_depth_and_user_data() {
    // (Bound whole: a `let ScriptRun { s, .. }` would drop the data
    // directory at once, under the running server.)
    let run = run_client_script("run_streams.py", "ws", 90);
    let (s, a, sum) = (&run.s, &run.a, &run.sum);

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
        s,
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
    let mine = a.call(s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT");
    let m = &mine.json.as_array().unwrap()[0];
    assert_eq!(reps[1]["t"], m["id"]);
    assert_eq!(reps[1]["n"], m["commission"]);
    assert_eq!(reps[1]["N"], m["commissionAsset"]);
    assert_eq!(reps[1]["z"], q.json["executedQty"]);
    assert!(sum["positions"].as_u64().unwrap() >= 1);
    assert_eq!(sum["expired"], true);
}

/// binance-connector's WebSocket API client (`SpotWebsocketAPIClient`):
/// market data, place, status, cancel-replace, cancel, errors, account,
/// history, cancel-all and a listen key, all over `/ws-api/v3`.
#[test]
fn binance_connector_websocket_api_trades_unmodified() {
    let run = run_client_script("run_connector_wsapi.py", "wsapi", 90);
    run.assert_printed("binance-connector ws-api: ok");
    let (s, a, b, sum) = (&run.s, &run.a, &run.b, &run.sum);
    let q = a.call(
        s,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={}", sum["buy_order_id"]),
    );
    assert_eq!(q.json["status"], "FILLED", "{}", q.json);
    let mine = a.call(s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT");
    assert_eq!(mine.json[0]["id"], sum["trade_id"], "{}", mine.json);
    let moved = b.call(
        s,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={}", sum["moved_order_id"]),
    );
    assert_eq!(moved.json["status"], "CANCELED", "{}", moved.json);
    assert_eq!(moved.json["price"], "30500.00000000");
    let open = a.call(s, "GET", "/api/v3/openOrders", "symbol=BTCUSDT");
    assert_eq!(open.json, serde_json::json!([]));
}

/// python-binance (REST `Client`, then `AsyncClient` with its socket
/// manager): REST trading and market data, orders over the WebSocket API,
/// the trade, diff-depth and combined sockets, the user socket that it
/// opens through `userDataStream.subscribe.signature`, and its
/// `DepthCacheManager` equal to REST's book.
#[test]
fn python_binance_trades_and_streams_unmodified() {
    let run = run_client_script("run_python_binance.py", "pb", 120);
    run.assert_printed("python-binance rest: ok");
    // REST traded once; the streamed trade is the second one.
    check_streamed_fill(&run, 1);
}

/// binance-sdk-spot (Binance's official SDK: REST, WebSocket API and
/// streams, with strictly typed response models).
#[test]
fn binance_sdk_spot_trades_and_streams_unmodified() {
    let run = run_client_script("run_binance_sdk.py", "sdk", 120);
    run.assert_printed("binance-sdk-spot rest: ok");
    check_streamed_fill(&run, 1);
}

/// The npm package `binance` (Node.js): REST, WebSocket API orders and
/// the trade and diff-depth streams.
#[test]
fn node_binance_trades_and_streams_unmodified() {
    let run = run_client_script("run_binance_node.js", "node", 90);
    run.assert_printed("binance node: ok");
    check_streamed_fill(&run, 1);
}

/// ccxt.pro (`binance`): its local order book from the diff stream and a
/// REST snapshot, trades, ticker, candles, its own orders and balance from
/// the user data stream, and orders placed with `create_order_ws`.
#[test]
fn ccxt_pro_watches_book_trades_and_orders() {
    let run = run_client_script("run_ccxt_pro.py", "pro", 120);
    let (s, a, sum) = (&run.s, &run.a, &run.sum);
    let trades = s.req("GET", "/api/v3/trades?symbol=BTCUSDT", &[], b"");
    let rest = trades.json.as_array().unwrap();
    assert_eq!(rest.len(), 1, "{}", trades.json);
    assert_eq!(sum["trade_id"], rest[0]["id"].to_string(), "{sum}");
    // ccxt's book: the sell's remainder, at the update id REST reports.
    let depth = s.req("GET", "/api/v3/depth?symbol=BTCUSDT", &[], b"");
    assert_eq!(
        sum["nonce"], depth.json["lastUpdateId"],
        "{sum} {}",
        depth.json
    );
    assert_eq!(sum["asks"], serde_json::json!([[31000.0, 0.002]]));
    let q = a.call(
        s,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={}", sum["buy_id"].as_str().unwrap()),
    );
    assert_eq!(q.json["status"], "FILLED");
    assert_eq!(sum["order_status"], "closed");
    // ccxt's 1 m candle (checked against REST's in the script): the trade.
    assert_eq!(sum["candle"][4], 31000.0, "{sum}");
    assert_eq!(sum["candle"][5], 0.001, "{sum}");
}

/// The scripts' common second part, checked against REST: B rested a sell
/// over the WebSocket API, A's IOC buy filled part of it (after `earlier`
/// trades), the script saw that trade, the diffs and A's executionReports,
/// and the sell's remainder is what the book holds (or was canceled).
fn check_streamed_fill(run: &ScriptRun, earlier: usize) {
    let (s, a, b, sum) = (&run.s, &run.a, &run.b, &run.sum);
    let trades = s.req("GET", "/api/v3/trades?symbol=BTCUSDT", &[], b"");
    let rest = trades.json.as_array().unwrap();
    assert_eq!(rest.len(), earlier + 1, "{}", trades.json);
    let t = &sum["trade"];
    assert_eq!(t["t"], rest[earlier]["id"]);
    assert_eq!(t["p"], rest[earlier]["price"]);
    assert_eq!(t["q"], rest[earlier]["qty"]);
    assert_eq!(t["T"], rest[earlier]["time"]);

    // The diffs continued the REST snapshot, never past the book's id now.
    assert!(sum["diffs"].as_u64().unwrap() >= 1, "{sum}");
    let depth = s.req("GET", "/api/v3/depth?symbol=BTCUSDT", &[], b"");
    assert!(
        sum["last_u"].as_u64().unwrap() <= depth.json["lastUpdateId"].as_u64().unwrap(),
        "{sum} {}",
        depth.json
    );

    // A's executionReports are its WebSocket API buy, filled by that trade.
    let execs = sum["executions"].as_array().unwrap();
    let q = a.call(
        s,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={}", execs[1]["i"]),
    );
    assert_eq!(q.json["status"], "FILLED");
    assert_eq!(q.json["clientOrderId"], execs[1]["c"]);
    assert_eq!(execs[1]["z"], q.json["executedQty"]);
    assert_eq!(execs[1]["Z"], q.json["cummulativeQuoteQty"]);
    let mine = a.call(s, "GET", "/api/v3/myTrades", "symbol=BTCUSDT");
    let last = mine.json.as_array().unwrap().last().unwrap().clone();
    assert_eq!(execs[1]["t"], last["id"]);
    assert_eq!(execs[1]["n"], last["commission"]);

    let sell = b.call(
        s,
        "GET",
        "/api/v3/order",
        &format!("symbol=BTCUSDT&orderId={}", sum["sell_order_id"]),
    );
    assert_eq!(sell.json["executedQty"], "0.00100000", "{}", sell.json);
    let asks = depth.json["asks"].as_array().unwrap();
    match sell.json["status"].as_str() {
        Some("CANCELED") => assert!(
            asks.iter().all(|l| l[0] != "31000.00000000"),
            "{}",
            depth.json
        ),
        Some("PARTIALLY_FILLED") => assert_eq!(
            asks,
            &vec![serde_json::json!(["31000.00000000", "0.00200000"])],
            "{}",
            depth.json
        ),
        other => panic!("sell status {other:?}: {}", sell.json),
    }
}
