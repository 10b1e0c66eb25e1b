//! Shared harness for the gateway's black-box tests: a real `serve`
//! process on a free port with its own data directory, a minimal HTTP/1.1
//! client over raw sockets, and traders registered, keyed and funded through
//! the native API.
#![allow(dead_code)]

pub mod native;
pub mod ws;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway::binance::sign::hmac_sha256_hex;
use serde_json::{json, Value};

pub const ADMIN: &str = "root";
pub const ADMIN_PW: &str = "correct horse battery staple";

/// Run a `mini-exchange` subcommand on the data directory; its stdout.
pub fn cli(data: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mini-exchange"))
        .args(args)
        .env("MX_DATA_DIR", data)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A current-thread runtime and a fresh database of its own on
/// `DATABASE_URL`'s server (dropped with the `TestDb`), for the tests that
/// run `serve` with Postgres.
pub fn test_db() -> (tokio::runtime::Runtime, persister::testdb::TestDb) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(persister::testdb::TestDb::create());
    (rt, db)
}

/// Seeds for the seeded hostile-input tests: `default` unless
/// `MX_FUZZ_SEEDS` names others, as a list and/or ranges (`4-40`,
/// `7,9,100-120`), for a longer sweep by hand
/// (`MX_FUZZ_SEEDS=4-40 scripts/test -p gateway --test ws_api seeded`).
pub fn fuzz_seeds(default: &[u64]) -> Vec<u64> {
    let Ok(spec) = std::env::var("MX_FUZZ_SEEDS") else {
        return default.to_vec();
    };
    let mut seeds = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n = |t: &str| t.trim().parse::<u64>().unwrap_or_else(|_| bad_seeds(&spec));
        match part.split_once('-') {
            Some((a, b)) if n(a) <= n(b) => seeds.extend(n(a)..=n(b)),
            Some(_) => bad_seeds(&spec),
            None => seeds.push(n(part)),
        }
    }
    if seeds.is_empty() {
        bad_seeds(&spec);
    }
    seeds
}

fn bad_seeds(spec: &str) -> ! {
    panic!("MX_FUZZ_SEEDS={spec:?}: expected seeds and ranges like 4-40,7,9")
}

/// Send `sig` (`"-TERM"`, `"-KILL"` or `"-INT"`, as kill(1) spells them)
/// to process `pid` through kill(2), so the tests need no `kill` binary
/// (procps is absent from minimal images).
pub fn send_signal(pid: u32, sig: &str) {
    let n = match sig {
        "-TERM" => libc::SIGTERM,
        "-KILL" => libc::SIGKILL,
        "-INT" => libc::SIGINT,
        other => panic!("send_signal: unknown signal {other:?}"),
    };
    // SAFETY: kill(2) takes a pid and a signal number; no memory is passed.
    let rc = unsafe { libc::kill(pid as libc::pid_t, n) };
    assert_eq!(
        rc,
        0,
        "kill {sig} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// A port nothing listens on, never the same twice in this test process:
/// the kernel may hand a just-released port to the next `bind(0)`, and two
/// parallel tests given the same port end up talking to one server (the
/// other's fails to bind) - seen in CI as one test reading another's pairs.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub struct Server {
    pub child: Child,
    pub port: u16,
}

pub struct Resp {
    pub status: u16,
    pub head: String,
    pub json: Value,
    /// The body as text (for non-JSON answers such as /metrics).
    pub body: String,
}

impl Server {
    pub fn start(data: &Path, port: u16) -> Server {
        Server::start_with(data, port, &[])
    }

    /// Start with extra environment variables (config overrides).
    pub fn start_with(data: &Path, port: u16, env: &[(&str, &str)]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_mini-exchange"))
            .arg("serve")
            // A test's server persists only into the database it names
            // (scripts/test exports DATABASE_URL for the tests that make
            // their own databases; an inherited one would make every
            // server write into the shared one).
            .env_remove("DATABASE_URL")
            .envs(env.iter().copied())
            .env("MX_DATA_DIR", data)
            .env("MX_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("MX_JOURNAL__SEGMENT_SIZE_MB", "4")
            .env("MX_ADMIN_USERNAME", ADMIN)
            .env("MX_ADMIN_PASSWORD", ADMIN_PW)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if s.try_req("GET", "/api/v3/ping", &[], b"")
                .map(|r| r.status)
                .ok()
                == Some(200)
            {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not come up");
    }

    pub fn try_req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port))?;
        c.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        c.write_all(req.as_bytes())?;
        c.write_all(body)?;
        let mut buf = Vec::new();
        c.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok(Resp {
            status,
            head: head.to_ascii_lowercase(),
            json: serde_json::from_str(&body).unwrap_or(Value::Null),
            body,
        })
    }

    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.try_req(method, path, headers, body).unwrap()
    }

    pub fn json_post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            h.push(("Authorization", a.as_str()));
        }
        self.req("POST", path, &h, body.to_string().as_bytes())
    }

    /// SIGTERM, then wait (30 s at most) for the clean exit serve owes it:
    /// drain, final snapshot, exit code 0.
    pub fn terminate(mut self) {
        send_signal(self.child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert_eq!(st.code(), Some(0), "serve must exit 0 on SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "server did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((len, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A trader with an HMAC API key.
pub struct Trader {
    pub key: String,
    pub secret: String,
}

impl Trader {
    /// Signed request with params in the query string (binance-connector style).
    pub fn call(&self, s: &Server, method: &str, path: &str, params: &str) -> Resp {
        self.try_call(s, method, path, params).unwrap()
    }

    /// [`Trader::call`] that returns a connection failure (a killed server)
    /// instead of panicking.
    pub fn try_call(
        &self,
        s: &Server,
        method: &str,
        path: &str,
        params: &str,
    ) -> std::io::Result<Resp> {
        let q = if params.is_empty() {
            format!("timestamp={}", now_ms())
        } else {
            format!("{params}&timestamp={}", now_ms())
        };
        let sig = hmac_sha256_hex(self.secret.as_bytes(), q.as_bytes());
        s.try_req(
            method,
            &format!("{path}?{q}&signature={sig}"),
            &[("X-MBX-APIKEY", &self.key)],
            b"",
        )
    }

    /// Signed request with params in a form body (python-binance / ccxt style).
    pub fn call_form(&self, s: &Server, method: &str, path: &str, params: &str) -> Resp {
        let body = format!("timestamp={}&{params}", now_ms());
        let sig = hmac_sha256_hex(self.secret.as_bytes(), body.as_bytes());
        let body = format!("{body}&signature={sig}");
        s.req(
            method,
            path,
            &[
                ("X-MBX-APIKEY", &self.key),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body.as_bytes(),
        )
    }

    pub fn balance(&self, s: &Server, asset: &str) -> (String, String) {
        let r = self.call(s, "GET", "/api/v3/account", "");
        assert_eq!(r.status, 200, "{}", r.json);
        let b = r.json["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["asset"] == asset)
            .unwrap()
            .clone();
        (
            b["free"].as_str().unwrap().to_string(),
            b["locked"].as_str().unwrap().to_string(),
        )
    }

    pub fn order(&self, s: &Server, params: &str) -> Value {
        let r = self.call(s, "POST", "/api/v3/order", params);
        assert_eq!(r.status, 200, "order {params}: {}", r.json);
        r.json
    }
}

pub fn login(s: &Server, user: &str, pw: &str) -> String {
    let r = s.json_post(
        "/api/v1/auth/login",
        None,
        &json!({"username": user, "password": pw}),
    );
    assert_eq!(r.status, 200, "login {user}: {}", r.json);
    r.json["access_token"].as_str().unwrap().to_string()
}

pub fn trader(
    s: &Server,
    admin: &str,
    name: &str,
    funds: &[(&str, &str)],
    perms: &[&str],
) -> Trader {
    let pw = format!("{name}-password-1");
    let r = s.json_post(
        "/api/v1/auth/register",
        None,
        &json!({"username": name, "email": format!("{name}@example.com"), "password": pw}),
    );
    assert_eq!(r.status, 201, "register {name}: {}", r.json);
    let token = login(s, name, &pw);
    let r = s.json_post(
        "/api/v1/api-keys",
        Some(&token),
        &json!({"label": "test", "permissions": perms}),
    );
    assert_eq!(r.status, 201, "api key: {}", r.json);
    for (i, (asset, amount)) in funds.iter().enumerate() {
        let r = s.json_post(
            "/api/v1/admin/deposits",
            Some(admin),
            &json!({"username": name, "asset": asset, "amount": amount,
                    "tx_hash": format!("0x{name}{i}"), "confirmations": 100}),
        );
        assert_eq!(r.status, 201, "deposit: {}", r.json);
    }
    Trader {
        key: r.json["apiKey"].as_str().unwrap().to_string(),
        secret: r.json["secretKey"].as_str().unwrap().to_string(),
    }
}

/// Wait (60 s at most) until the in-process persister has written every
/// durable command (`/health`: lag 0 and written = durable).
pub fn wait_persisted(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = s.req("GET", "/health", &[], b"");
        let p = &h.json["persister"];
        if p["lag_seq"].as_u64() == Some(0) && h.json["journal"]["durable_seq"] == p["written_seq"]
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "persister never caught up: {}",
            h.json
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of sample `name` (with its labels, if any, as written) in a
/// Prometheus text page; panics with the page when it is missing.
pub fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing: {page}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}
