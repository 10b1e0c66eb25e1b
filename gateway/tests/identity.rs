//! Black-box tests of the native identity API (`/api/v1`) against a real
//! `mini-exchange serve` process: register, login, refresh, me, lockout
//! (journaled, so it survives restarts), API keys (HMAC and Ed25519; the
//! HMAC secret never stored or logged in plain text), RBAC on the admin
//! deposit route, idempotent deposits, first-admin bootstrap, and JSON
//! 40x errors (never 500) on bad input.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::free_port;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Start on `data` with `env`; stdout and stderr go to `log`.
    fn start(data: &Path, port: u16, log: &Path, env: &[(&str, &str)]) -> Server {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mini-exchange"));
        cmd.arg("serve")
            .env("MX_DATA_DIR", data)
            .env("MX_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("MX_JOURNAL__SEGMENT_SIZE_MB", "4")
            .env("MX_LOG", "debug")
            .env_remove("MX_ADMIN_USERNAME")
            .env_remove("MX_ADMIN_PASSWORD")
            .env_remove("MX_SECRET_KEY")
            .env_remove("MX_JWT_SECRET")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let s = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok((200, _)) = s.try_request("GET", "/api/v3/ping", None, b"") {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "server did not come up on port {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port))?;
        c.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        c.write_all(head.as_bytes())?;
        // A server may answer (413) before reading a large body.
        let _ = c.write_all(body);
        let mut buf = Vec::new();
        c.read_to_end(&mut buf)?;
        let buf = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_string()))
    }

    /// (status, JSON body); asserts the body is JSON.
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        let (status, text) = self.try_request(method, path, token, body).unwrap();
        let json = text
            .find(['{', '['])
            .map(|i| &text[i..])
            .and_then(|b| {
                let end = b.rfind(['}', ']'])?;
                serde_json::from_str(&b[..=end]).ok()
            })
            .unwrap_or_else(|| panic!("{method} {path}: {status} without a JSON body: {text:?}"));
        assert_ne!(status, 500, "{method} {path}: {json}");
        (status, json)
    }

    fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call("POST", path, token, body.to_string().as_bytes())
    }

    fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", path, Some(token), b"")
    }

    fn login(&self, username: &str, password: &str) -> (u16, Value) {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({ "username": username, "password": password }),
        )
    }

    fn token(&self, username: &str, password: &str) -> String {
        let (st, v) = self.login(username, password);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["token_type"], "Bearer");
        assert!(v["expires_in"].as_u64().unwrap() > 0);
        v["access_token"].as_str().unwrap().to_string()
    }

    fn register(&self, username: &str, email: &str, password: &str) -> (u16, Value) {
        self.post(
            "/api/v1/auth/register",
            None,
            json!({ "username": username, "email": email, "password": password }),
        )
    }

    fn signal(&self, sig: &str) {
        common::send_signal(self.child.id(), sig);
    }

    fn stop(mut self, sig: &str) {
        self.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                if sig == "-TERM" {
                    assert_eq!(st.code(), Some(0));
                }
                return;
            }
            assert!(Instant::now() < deadline, "server did not exit");
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

fn code(v: &Value) -> i64 {
    v["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no code in {v}"))
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// No file of the data directory holds `secret` in plain text.
fn assert_not_stored(data: &Path, secret: &str) {
    let all = files(data);
    assert!(all.iter().any(|p| p.to_string_lossy().contains("journal")));
    for p in all {
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "{} holds a secret in plain text",
            p.display()
        );
    }
}

const ADMIN: (&str, &str) = ("root", "root-password-1");

fn admin_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("MX_ADMIN_USERNAME", ADMIN.0),
        ("MX_ADMIN_PASSWORD", ADMIN.1),
    ]
}

#[test]
fn identity_api_keys_lockout_and_deposits_survive_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    let log = |n: u32| logs.path().join(format!("server{n}.log"));
    let port = free_port();
    let s = Server::start(&data, port, &log(1), &admin_env());

    // ---- register
    let (st, alice) = s.register("alice", "alice@example.com", "alice-password");
    assert_eq!(st, 201, "{alice}");
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["roles"], json!(["TRADER"]));
    assert_eq!(alice["status"], "ACTIVE");
    let alice_id = alice["id"].as_u64().unwrap();
    let (st, v) = s.register("ALICE", "other@example.com", "alice-password");
    assert_eq!((st, code(&v)), (409, -4090));
    let (st, v) = s.register("alice2", "Alice@Example.com", "alice-password");
    assert_eq!((st, code(&v)), (409, -4091));
    let (st, v) = s.register("a", "a@example.com", "alice-password");
    assert_eq!((st, code(&v)), (400, -4001));
    let (st, v) = s.register("carol", "not-an-email", "carol-password");
    assert_eq!((st, code(&v)), (400, -4002));
    let (st, v) = s.register("carol", "carol@example.com", "short");
    assert_eq!((st, code(&v)), (400, -4003));
    let (st, v) = s.register("carol", "carol@example.com", &"p".repeat(129));
    assert_eq!((st, code(&v)), (400, -4003));

    // ---- malformed, missing, mistyped, oversized: JSON 40x, never 500
    for body in [
        &b"{"[..],
        b"",
        b"null",
        b"[]",
        b"{\"username\":\"carol\"}",
        b"{\"username\":5,\"email\":\"c@d.ef\",\"password\":\"12345678\"}",
        b"\xff\xfe",
    ] {
        let (st, v) = s.call("POST", "/api/v1/auth/register", None, body);
        assert_eq!((st, code(&v)), (400, -4000), "{body:?}: {v}");
        let (st, v) = s.call("POST", "/api/v1/auth/login", None, body);
        assert_eq!(st, 400, "{v}");
    }
    let big = json!({ "username": "x", "email": "x@y.zz", "password": "p".repeat(70_000) });
    let (st, v) = s.post("/api/v1/auth/register", None, big);
    assert_eq!(st, 413, "{v}");
    assert!(v["code"].as_i64().unwrap() < 0);

    // ---- login, me, refresh
    let alice_tok = s.token("alice", "alice-password");
    let (st, me) = s.get("/api/v1/me", &alice_tok);
    assert_eq!(st, 200, "{me}");
    assert_eq!(me["id"].as_u64(), Some(alice_id));
    assert!(me["permissions"]
        .as_array()
        .unwrap()
        .contains(&json!("api_keys:write")));
    let (st, r) = s.call("POST", "/api/v1/auth/refresh", Some(&alice_tok), b"");
    assert_eq!(st, 200, "{r}");
    let refreshed = r["access_token"].as_str().unwrap().to_string();
    assert_eq!(s.get("/api/v1/me", &refreshed).1["username"], "alice");
    let (st, v) = s.login("alice", "wrong-password");
    assert_eq!((st, code(&v)), (401, -4011));
    let (st, v) = s.login("nobody", "whatever-pass");
    assert_eq!((st, code(&v)), (401, -4011));
    let (st, v) = s.call("GET", "/api/v1/me", None, b"");
    assert_eq!((st, code(&v)), (401, -4010));
    let (st, v) = s.get("/api/v1/me", "not.a.token");
    assert_eq!((st, code(&v)), (401, -4010));
    let mut forged = alice_tok.clone();
    forged.pop();
    forged.push(if alice_tok.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(s.get("/api/v1/me", &forged).0, 401);

    // ---- API keys
    let (st, hmac) = s.post(
        "/api/v1/api-keys",
        Some(&alice_tok),
        json!({ "label": "bot", "permissions": ["READ", "TRADE"] }),
    );
    assert_eq!(st, 201, "{hmac}");
    assert_eq!(hmac["type"], "HMAC");
    assert_eq!(hmac["permissions"], json!(["READ", "TRADE"]));
    let hmac_key = hmac["apiKey"].as_str().unwrap().to_string();
    let hmac_secret = hmac["secretKey"].as_str().unwrap().to_string();
    for k in [&hmac_key, &hmac_secret] {
        assert_eq!(k.len(), 64);
        assert!(k.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
    let ed = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let pem = {
        use base64::Engine as _;
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(&ed.verifying_key().to_bytes());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    };
    let (st, edk) = s.post(
        "/api/v1/api-keys",
        Some(&alice_tok),
        json!({ "label": "ed", "permissions": ["READ"], "type": "ED25519", "public_key": pem }),
    );
    assert_eq!(st, 201, "{edk}");
    assert_eq!(edk["type"], "ED25519");
    assert!(edk.get("secretKey").is_none());
    let ed_key = edk["apiKey"].as_str().unwrap().to_string();
    for (body, want) in [
        (json!({ "permissions": ["FLY"] }), -4004),
        (json!({ "permissions": [] }), -4004),
        (json!({ "type": "RSA" }), -4004),
        (json!({ "type": "ED25519" }), -4004),
        (
            json!({ "type": "ED25519", "public_key": "bm9wZQ==" }),
            -4004,
        ),
        (json!({ "label": "x".repeat(65) }), -4004),
        (json!({ "permissions": "READ" }), -4000),
    ] {
        let (st, v) = s.post("/api/v1/api-keys", Some(&alice_tok), body.clone());
        assert_eq!((st, code(&v)), (400, want), "{body}: {v}");
    }
    let (st, v) = s.post("/api/v1/api-keys", None, json!({}));
    assert_eq!((st, code(&v)), (401, -4010));
    let (st, list) = s.get("/api/v1/api-keys", &alice_tok);
    assert_eq!(st, 200);
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["apiKey"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [hmac_key.as_str(), ed_key.as_str()]);
    assert!(!list.to_string().contains(&hmac_secret));
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("secretKey").is_none()));
    let (st, v) = s.call(
        "DELETE",
        &format!("/api/v1/api-keys/{ed_key}"),
        Some(&alice_tok),
        b"",
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["revoked"], true);
    let (st, v) = s.call(
        "DELETE",
        &format!("/api/v1/api-keys/{ed_key}"),
        Some(&alice_tok),
        b"",
    );
    assert_eq!((st, code(&v)), (404, -4041));
    assert_eq!(
        s.get("/api/v1/api-keys", &alice_tok)
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // ---- RBAC: a TRADER may not fund accounts; the admin may
    let deposit = |conf: u32, amount: &str| {
        json!({ "username": "alice", "asset": "USDT", "amount": amount,
                "tx_hash": "0xfeed", "confirmations": conf })
    };
    let (st, v) = s.post(
        "/api/v1/admin/deposits",
        Some(&alice_tok),
        deposit(99, "1000"),
    );
    assert_eq!((st, code(&v)), (403, -4030), "{v}");
    let admin_tok = s.token(ADMIN.0, ADMIN.1);
    let (_, me) = s.get("/api/v1/me", &admin_tok);
    assert_eq!(me["roles"], json!(["ADMIN"]));
    let (st, d) = s.post(
        "/api/v1/admin/deposits",
        Some(&admin_tok),
        deposit(1, "1000"),
    );
    assert_eq!(st, 201, "{d}");
    let required = d["required_confirmations"].as_u64().unwrap() as u32;
    assert!(required > 2, "{d}");
    assert_eq!(
        (&d["status"], &d["credited_now"]),
        (&json!("PENDING"), &json!(false))
    );
    let (st, d) = s.post(
        "/api/v1/admin/deposits",
        Some(&admin_tok),
        deposit(required - 1, "1000"),
    );
    assert_eq!(
        (st, &d["status"], &d["confirmations"]),
        (201, &json!("PENDING"), &json!(required - 1))
    );
    let (st, d) = s.post(
        "/api/v1/admin/deposits",
        Some(&admin_tok),
        deposit(required, "1000"),
    );
    assert_eq!(st, 201, "{d}");
    assert_eq!(
        (&d["status"], &d["credited_now"]),
        (&json!("CONFIRMED"), &json!(true))
    );
    assert_eq!(d["amount"], "1000.00000000");
    let id = d["id"].clone();
    for conf in [required, required + 5, 1] {
        let (st, d) = s.post(
            "/api/v1/admin/deposits",
            Some(&admin_tok),
            deposit(conf, "1000"),
        );
        assert_eq!(st, 201, "{d}");
        assert_eq!(
            (&d["status"], &d["credited_now"], &d["id"]),
            (&json!("CONFIRMED"), &json!(false), &id)
        );
    }
    let (st, v) = s.post(
        "/api/v1/admin/deposits",
        Some(&admin_tok),
        deposit(99, "999"),
    );
    assert_eq!((st, code(&v)), (409, -4094));
    for (body, want) in [
        (
            json!({ "username": "nobody", "asset": "USDT", "amount": "1", "tx_hash": "t1", "confirmations": 1 }),
            (404, -4040),
        ),
        (
            json!({ "username": "alice", "asset": "DOGE", "amount": "1", "tx_hash": "t1", "confirmations": 1 }),
            (404, -4042),
        ),
        (
            json!({ "username": "alice", "asset": "USDT", "amount": "-1", "tx_hash": "t1", "confirmations": 1 }),
            (400, -4005),
        ),
        (
            json!({ "username": "alice", "asset": "USDT", "amount": "0.000000001", "tx_hash": "t1", "confirmations": 1 }),
            (400, -4005),
        ),
        (
            json!({ "username": "alice", "asset": "USDT", "amount": "1", "tx_hash": "", "confirmations": 1 }),
            (400, -4004),
        ),
        (
            json!({ "username": "alice", "asset": "USDT", "amount": "1", "tx_hash": "t1", "confirmations": -1 }),
            (400, -4000),
        ),
        (
            json!({ "username": "alice", "asset": "USDT", "amount": "1", "tx_hash": "t1" }),
            (400, -4000),
        ),
    ] {
        let (st, v) = s.post("/api/v1/admin/deposits", Some(&admin_tok), body.clone());
        assert_eq!((st, code(&v)), want, "{body}: {v}");
    }

    // ---- lockout: 5 failures lock password login, even the right password
    let (st, _) = s.register("bob", "bob@example.com", "bob-password");
    assert_eq!(st, 201);
    for _ in 0..4 {
        let (st, v) = s.login("bob", "bad-password");
        assert_eq!((st, code(&v)), (401, -4011));
    }
    let (st, v) = s.login("bob", "bad-password");
    assert_eq!((st, code(&v)), (423, -4230), "{v}");
    let locked_until = v["locked_until"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        locked_until > now + 14 * 60 * 1000,
        "{locked_until} vs {now}"
    );
    let (st, v) = s.login("bob", "bob-password");
    assert_eq!((st, code(&v)), (423, -4230));
    assert_eq!(v["locked_until"].as_u64(), Some(locked_until));

    // ---- restart (clean), then SIGKILL: users, keys and the lock persist
    s.stop("-TERM");
    for (n, how) in [(2, "-KILL"), (3, "-TERM")] {
        let s = Server::start(&data, port, &log(n), &admin_env());
        let (st, v) = s.login("bob", "bob-password");
        assert_eq!((st, code(&v)), (423, -4230), "restart {n}: {v}");
        assert_eq!(v["locked_until"].as_u64(), Some(locked_until));
        // Tokens outlive restarts (the JWT key is kept in the data dir).
        assert_eq!(s.get("/api/v1/me", &alice_tok).0, 200);
        let tok = s.token("alice", "alice-password");
        let (_, list) = s.get("/api/v1/api-keys", &tok);
        let keys: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["apiKey"].as_str().unwrap())
            .collect();
        assert_eq!(keys[0], hmac_key, "restart {n}");
        assert_eq!(keys.len(), if n == 2 { 1 } else { 2 }, "restart {n}");
        // The deposit was credited exactly once, also after replay.
        let admin_tok = s.token(ADMIN.0, ADMIN.1);
        let (st, d) = s.post(
            "/api/v1/admin/deposits",
            Some(&admin_tok),
            deposit(99, "1000"),
        );
        assert_eq!(
            (st, &d["credited_now"], &d["status"]),
            (201, &json!(false), &json!("CONFIRMED"))
        );
        if n == 2 {
            // A key created just before SIGKILL survives it.
            let (st, _) = s.post("/api/v1/api-keys", Some(&tok), json!({ "label": "late" }));
            assert_eq!(st, 201);
        }
        s.stop(how);
    }
    let s = Server::start(&data, port, &log(4), &admin_env());
    let tok = s.token("alice", "alice-password");
    assert_eq!(
        s.get("/api/v1/api-keys", &tok).1.as_array().unwrap().len(),
        2
    );
    s.stop("-TERM");

    // ---- secrets: never in the data directory, never in the logs
    assert_not_stored(&data, &hmac_secret);
    assert_not_stored(&data, "alice-password");
    assert!(data.join("secret.key").exists() && data.join("jwt.key").exists());
    for n in 1..=4 {
        let text = std::fs::read_to_string(log(n)).unwrap();
        assert!(text.contains("listening"), "log {n} empty?");
        for secret in [
            hmac_secret.as_str(),
            "alice-password",
            ADMIN.1,
            alice_tok.as_str(),
        ] {
            assert!(!text.contains(secret), "log {n} holds a secret");
        }
    }
}

#[test]
fn without_admin_credentials_a_one_time_password_is_printed_once() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let logs = tempfile::tempdir().unwrap();
    let (log1, log2) = (logs.path().join("1.log"), logs.path().join("2.log"));
    let port = free_port();
    let s = Server::start(&data, port, &log1, &[]);
    let text = std::fs::read_to_string(&log1).unwrap();
    let marker = "one-time password: ";
    let at = text.find(marker).unwrap_or_else(|| panic!("{text}"));
    let password: String = text[at + marker.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    assert_eq!(password.len(), 20);
    assert_eq!(
        text.matches(&password).count(),
        1,
        "printed once, never logged"
    );
    let tok = s.token("admin", &password);
    let (_, me) = s.get("/api/v1/me", &tok);
    assert_eq!(me["roles"], json!(["ADMIN"]));
    for f in ["secret.key", "jwt.key"] {
        let mode = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    s.stop("-TERM");
    // Restart: the admin exists, nothing is printed again.
    let s = Server::start(&data, port, &log2, &[]);
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(!text.contains(marker) && !text.contains(&password));
    s.token("admin", &password);
    // The same keys are reused: the old token still works.
    assert_eq!(s.get("/api/v1/me", &tok).0, 200);
    s.stop("-TERM");
}
