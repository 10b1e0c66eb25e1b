//! Black-box tests of `mini-exchange serve` as a real process over real
//! sockets: first-start bootstrap from config, Binance public endpoints and
//! their errors, request-weight header, SIGTERM (drain, snapshot, exit 0),
//! restart without re-bootstrapping, SIGKILL and recovery.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(data: &Path, port: u16) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_mini-exchange"))
            .arg("serve")
            .env("MX_DATA_DIR", data)
            .env("MX_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("MX_JOURNAL__SEGMENT_SIZE_MB", "4")
            .env("MX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok((200, _, _)) = s.try_get("/api/v3/ping") {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not come up on port {port}");
    }

    fn try_get(&self, path: &str) -> std::io::Result<(u16, String, String)> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port))?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        c.read_to_string(&mut buf)?;
        let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, head.to_ascii_lowercase(), body.to_string()))
    }

    fn get(&self, path: &str) -> (u16, String, serde_json::Value) {
        let (status, head, body) = self.try_get(path).unwrap();
        // Chunked bodies: keep the JSON part.
        let json = body
            .find(['{', '['])
            .map(|i| &body[i..])
            .and_then(|b| {
                let end = b.rfind(['}', ']'])?;
                serde_json::from_str(&b[..=end]).ok()
            })
            .unwrap_or(serde_json::Value::Null);
        (status, head, json)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn wait(mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_bootstraps_answers_and_shuts_down_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);

    let (st, head, info) = s.get("/api/v3/exchangeInfo");
    assert_eq!(st, 200);
    assert!(head.contains("x-mbx-used-weight-1m:"), "{head}");
    assert!(head.contains("content-type: application/json"));
    let symbols: Vec<&str> = info["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(symbols, ["BTCUSDT", "ETHUSDT", "ETHBTC"]);
    let btc = &info["symbols"][0];
    assert_eq!(btc["status"], "TRADING");
    assert_eq!(btc["baseAssetPrecision"], 8);
    let filter = |t: &str| {
        btc["filters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["filterType"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(filter("PRICE_FILTER")["tickSize"], "0.01000000");
    assert_eq!(filter("LOT_SIZE")["stepSize"], "0.00001000");
    assert_eq!(filter("LOT_SIZE")["minQty"], "0.00001000");
    assert_eq!(filter("LOT_SIZE")["maxQty"], "9000.00000000");
    assert_eq!(filter("NOTIONAL")["minNotional"], "5.00000000");
    let ethbtc = &info["symbols"][2];
    let f = ethbtc["filters"].as_array().unwrap();
    assert_eq!(f[0]["tickSize"], "0.00000100");
    assert_eq!(f[1]["stepSize"], "0.00100000");

    let (st, _, one) = s.get("/api/v3/exchangeInfo?symbol=ETHUSDT");
    assert_eq!(st, 200);
    assert_eq!(one["symbols"].as_array().unwrap().len(), 1);

    let (st, _, d) = s.get("/api/v3/depth?symbol=BTCUSDT&limit=5");
    assert_eq!(st, 200);
    assert!(d["bids"].as_array().unwrap().is_empty());
    assert!(d["lastUpdateId"].is_u64());
    let (st, _, e) = s.get("/api/v3/depth?symbol=NOPE");
    assert_eq!((st, e["code"].as_i64()), (400, Some(-1121)));
    let (st, _, e) = s.get("/api/v3/depth");
    assert_eq!((st, e["code"].as_i64()), (400, Some(-1102)));
    let (st, _, e) = s.get("/api/v3/depth?symbol=BTCUSDT&limit=abc");
    assert_eq!(st, 400, "{e}");
    let (st, _, e) = s.get("/api/v3/depth?symbol=BTCUSDT&symbol=ETHUSDT");
    assert_eq!((st, e["code"].as_i64()), (400, Some(-1101)));
    let (st, _, e) = s.get("/api/v3/depth?symbol=BTCUSDT&foo=1");
    assert_eq!(st, 400, "{e}");
    let (st, _, e) = s.get("/api/v3/trades?symbol=BTCUSDT");
    assert_eq!(st, 200);
    assert!(e.as_array().unwrap().is_empty());
    let (st, _, e) = s.get("/api/v3/nope");
    assert_eq!((st, e["code"].as_i64()), (404, Some(-1000)));
    let (st, _, t) = s.get("/api/v3/time");
    assert_eq!(st, 200);
    assert!(t["serverTime"].as_u64().unwrap() > 1_600_000_000_000);
    let (st, _, h) = s.get("/health");
    assert_eq!(st, 200);
    assert_eq!(
        h["journal"]["durable_seq"], 8,
        "limits + 3 assets + 3 pairs + the first admin"
    );
    let (st, _, body) = s.try_get("/metrics").unwrap();
    assert_eq!(st, 200);
    assert!(body.contains("mx_journal_durable_seq 8"), "{body}");

    // SIGTERM: drain, snapshot, exit 0.
    s.signal("-TERM");
    assert_eq!(s.wait(Duration::from_secs(30)), Some(0));
    let snaps: Vec<_> = std::fs::read_dir(tmp.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        snaps
            .iter()
            .any(|n| n.ends_with("00000000000000000008.snap")),
        "{snaps:?}"
    );

    // Restart: state recovered, bootstrap not journaled again.
    let s = Server::start(tmp.path(), port);
    let (_, _, h) = s.get("/health");
    assert_eq!(h["journal"]["durable_seq"], 8);
    let (_, _, info2) = s.get("/api/v3/exchangeInfo");
    assert_eq!(info2["symbols"], info["symbols"]);
    // SIGKILL, then recover from the journal (+ snapshot) again.
    s.signal("-KILL");
    let _ = s.wait(Duration::from_secs(10));
    let s = Server::start(tmp.path(), port);
    let (_, _, h) = s.get("/health");
    assert_eq!(h["journal"]["durable_seq"], 8);
    s.signal("-TERM");
    assert_eq!(s.wait(Duration::from_secs(30)), Some(0));
}

#[test]
fn a_bad_configuration_is_refused_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mini-exchange"))
        .arg("serve")
        .env("MX_DATA_DIR", tmp.path())
        .env("MX_JOURNAL__DURABILITY", "sometimes")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MX_JOURNAL__DURABILITY"), "{err}");
}
