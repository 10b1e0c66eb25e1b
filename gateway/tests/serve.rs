//! Black-box tests of `mini-exchange serve` as a real process over real
//! sockets: first-start bootstrap from config, Binance public endpoints and
//! their errors, request-weight header, SIGTERM (drain, snapshot, exit 0),
//! restart without re-bootstrapping, SIGKILL and recovery; startup rebuilds
//! the same state and read models from a journal alone, from a journal plus
//! a snapshot, and (without history) from a snapshot plus a journal whose
//! start retention deleted. An ignored test times startup on a journal of
//! about a million commands.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(data: &Path, port: u16) -> Server {
        Server::start_bin(
            env!("CARGO_BIN_EXE_mini-exchange"),
            data,
            port,
            Stdio::null(),
        )
    }

    /// Start `bin serve` (stderr, with the logs, to `stderr`) and wait until
    /// it answers.
    fn start_bin(bin: &str, data: &Path, port: u16, stderr: Stdio) -> Server {
        let child = Command::new(bin)
            .arg("serve")
            .env("MX_DATA_DIR", data)
            .env("MX_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("MX_JOURNAL__SEGMENT_SIZE_MB", "4")
            .env("MX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let s = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(600);
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
        common::send_signal(self.child.id(), sig);
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
    assert!(body.contains("mx_websocket_connections 0"), "{body}");
    // CPU per thread name, every stage of the order path among them; the
    // threads' sum is what the kernel counts for the whole process (which
    // also holds threads that ended), and it is not zero: the first admin's
    // password was hashed (argon2id).
    let threads: Vec<(&str, f64)> = body
        .lines()
        .filter_map(|l| l.strip_prefix("mx_thread_cpu_seconds_total{thread=\""))
        .map(|l| {
            let (name, secs) = l.split_once("\"} ").unwrap();
            (name, secs.parse().unwrap())
        })
        .collect();
    for t in [
        "mx-gateway",
        "mx-journaler",
        "mx-engine",
        "mx-publisher",
        "mx-snapshotter",
    ] {
        assert!(threads.iter().any(|(n, _)| *n == t), "no {t} in {body}");
    }
    let sum: f64 = threads.iter().map(|(_, s)| s).sum();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.child.id())).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let process = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap())
        // SAFETY: sysconf reads a constant of the system; no memory is passed.
        / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    assert!(
        sum > 0.0 && sum <= process + 0.02,
        "threads {sum} s, process {process} s: {threads:?}"
    );
    // Every group commit is in the commit-time histogram: its count is the
    // batch counter, and its buckets are cumulative up to +Inf.
    let value = |name: &str| common::metric(&body, name) as u64;
    let batches = value("mx_journal_batches_total");
    assert!(batches >= 1);
    assert_eq!(value("mx_journal_commit_seconds_count"), batches);
    assert_eq!(
        value("mx_journal_commit_seconds_bucket{le=\"+Inf\"}"),
        batches
    );
    let buckets: Vec<u64> = body
        .lines()
        .filter(|l| l.starts_with("mx_journal_commit_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 13);
    // Every command the server executed and waited for is in the ack
    // histogram (the bootstrap and the first admin at least).
    assert!(value("mx_command_ack_seconds_count") >= 8);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");

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

/// The watermark's seq: the valid slot (magic, CRC32C) with the higher
/// generation, as the journal's on-disk format documents.
fn watermark_seq(journal_dir: &Path) -> u64 {
    let bytes = match std::fs::read(journal_dir.join("watermark")) {
        Ok(b) => b,
        // Created by the first store.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => panic!("reading the watermark: {e}"),
    };
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    bytes
        .chunks_exact(32)
        .filter(|slot| {
            &slot[..4] == b"MXJW" && crc32c::crc32c(&slot[..28]).to_le_bytes() == slot[28..32]
        })
        .max_by_key(|slot| u64_at(slot, 8))
        .map_or(0, |slot| u64_at(slot, 16))
}

/// The snapshot replica is background work: its thread runs under the
/// idle scheduling policy, the threads of the order path under the normal
/// one.
#[test]
fn the_snapshot_replica_thread_runs_under_the_idle_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let s = common::Server::start(tmp.path(), common::free_port());
    let policy_of = |comm: &str| -> Vec<i64> {
        std::fs::read_dir(format!("/proc/{}/task", s.child.id()))
            .unwrap()
            .filter_map(|t| {
                let dir = t.unwrap().path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?;
                (name.trim() == comm).then(|| {
                    let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
                    // policy is field 41; fields after the name start at 3.
                    let after = stat.rsplit_once(')').unwrap().1.to_string();
                    after.split_whitespace().nth(38).unwrap().parse().unwrap()
                })
            })
            .collect()
    };
    // SCHED_IDLE is 5, SCHED_OTHER 0 (sched(7)).
    assert_eq!(policy_of("mx-snapshotter"), [5], "one idle-policy replica");
    for comm in ["mx-engine", "mx-journaler", "mx-publisher"] {
        assert_eq!(policy_of(comm), [0], "{comm}");
    }
    assert!(policy_of("mx-gateway").iter().all(|&p| p == 0));
    s.kill();
}

/// The admin credits itself `amount` USDT under `tx_hash` (confirmed);
/// the answer, whatever its status.
fn admin_deposit(s: &common::Server, token: &str, amount: &str, tx_hash: &str) -> common::Resp {
    s.json_post(
        "/api/v1/admin/deposits",
        Some(token),
        &serde_json::json!({"username": common::ADMIN, "asset": "USDT",
            "amount": amount, "tx_hash": tx_hash, "confirmations": 100}),
    )
}

/// The final snapshot of a clean shutdown honours `snapshot.keep`: older
/// snapshots beyond it are deleted, as after the replica's periodic ones.
#[test]
fn the_final_snapshot_keeps_only_snapshot_keep_files() {
    let tmp = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let env = [("MX_SNAPSHOT__KEEP", "2")];
    let snaps = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(tmp.path().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".snap"))
            .collect();
        v.sort();
        v
    };
    let mut seen = Vec::new();
    for round in 0..4 {
        let s = common::Server::start_with(tmp.path(), port, &env);
        // One more journaled command per round, so each final snapshot has
        // a new seq.
        let admin = common::login(&s, common::ADMIN, common::ADMIN_PW);
        let r = admin_deposit(&s, &admin, "1", &format!("0xkeep{round}"));
        assert_eq!(r.status, 201, "{}", r.json);
        s.terminate();
        let now = snaps();
        assert!(now.len() <= 2, "round {round}: {now:?}");
        let newest = now.last().cloned().unwrap();
        assert!(!seen.contains(&newest), "round {round}: no new snapshot");
        seen.push(newest);
    }
}

/// `journal.watermark_interval` reaches the running server: with 1 the
/// durable watermark follows every group commit, while with the default
/// (64) a handful of commands leaves it behind until a clean shutdown.
#[test]
fn serve_applies_the_journal_watermark_interval() {
    for (interval, follows) in [("1", true), ("64", false)] {
        let tmp = tempfile::tempdir().unwrap();
        let s = common::Server::start_with(
            tmp.path(),
            common::free_port(),
            &[("MX_JOURNAL__WATERMARK_INTERVAL", interval)],
        );
        let admin = common::login(&s, common::ADMIN, common::ADMIN_PW);
        for i in 0..3 {
            let r = admin_deposit(&s, &admin, "1", &format!("0xwm{i}"));
            assert_eq!(r.status, 201, "{}", r.json);
        }
        let page = s.req("GET", "/metrics", &[], b"").body;
        let durable = common::metric(&page, "mx_journal_durable_seq") as u64;
        let mut wm = watermark_seq(&tmp.path().join("journal"));
        if follows {
            // The watermark is stored right after each commit, off the
            // reply path (a reply may come first): it follows at once,
            // not before the reply.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while wm < durable && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
                wm = watermark_seq(&tmp.path().join("journal"));
            }
            assert_eq!(wm, durable, "interval {interval}");
        } else {
            assert!(
                wm < durable,
                "interval {interval}: watermark {wm}, durable {durable}"
            );
        }
        s.kill();
    }
}

/// `journal.commit_interval_us` reaches the running server: bursts of
/// eight concurrent deposits make group commits wait for the interval
/// (`mx_journal_delayed_commits_total`), and with 0 none ever waits.
#[test]
fn serve_applies_the_journal_commit_interval() {
    let burst = |s: &common::Server, admin: &str, round: usize| {
        let go = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            let sent: Vec<_> = (0..8)
                .map(|i| {
                    let go = &go;
                    scope.spawn(move || {
                        go.wait();
                        admin_deposit(s, admin, "1", &format!("0xci{round}-{i}"))
                    })
                })
                .collect();
            for t in sent {
                let r = t.join().unwrap();
                assert_eq!(r.status, 201, "{}", r.json);
            }
        });
    };
    let delayed = |s: &common::Server| {
        let page = s.req("GET", "/metrics", &[], b"").body;
        common::metric(&page, "mx_journal_delayed_commits_total") as u64
    };
    for (interval, rounds) in [("0", 5), ("100000", 20)] {
        let tmp = tempfile::tempdir().unwrap();
        let s = common::Server::start_with(
            tmp.path(),
            common::free_port(),
            &[("MX_JOURNAL__COMMIT_INTERVAL_US", interval)],
        );
        let admin = common::login(&s, common::ADMIN, common::ADMIN_PW);
        let mut round = 0;
        while round < rounds && (interval == "0" || delayed(&s) == 0) {
            burst(&s, &admin, round);
            round += 1;
        }
        if interval == "0" {
            assert_eq!(delayed(&s), 0, "a commit waited with interval 0");
        } else {
            assert!(delayed(&s) >= 1, "no commit waited in {round} bursts");
        }
        s.kill();
    }
}

/// `journal.dir` and `snapshot.dir` put the journal and the snapshots
/// outside the data directory: serve writes, snapshots and recovers there,
/// and the offline subcommands find them through the same variables.
#[test]
fn journal_and_snapshot_directories_from_the_config_are_used() {
    let data = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (jdir, sdir) = (elsewhere.path().join("j"), elsewhere.path().join("s"));
    let env = [
        ("MX_JOURNAL__DIR", jdir.to_str().unwrap()),
        ("MX_SNAPSHOT__DIR", sdir.to_str().unwrap()),
    ];
    let durable = |s: &common::Server| {
        let page = s.req("GET", "/metrics", &[], b"").body;
        common::metric(&page, "mx_journal_durable_seq") as u64
    };
    let files = |dir: &Path, ext: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .filter(|n| n.ends_with(ext))
                    .collect()
            })
            .unwrap_or_default()
    };
    let port = common::free_port();
    let s = common::Server::start_with(data.path(), port, &env);
    let admin = common::login(&s, common::ADMIN, common::ADMIN_PW);
    let r = admin_deposit(&s, &admin, "5", "0xdirs");
    assert_eq!(r.status, 201, "{}", r.json);
    let seq = durable(&s);
    // SIGTERM: drain, snapshot (into snapshot.dir), exit 0.
    s.terminate();
    assert!(
        !files(&jdir, ".seg").is_empty(),
        "no segment in journal.dir"
    );
    let snap = format!("{seq:020}.snap");
    assert!(
        files(&sdir, ".snap").iter().any(|n| n.ends_with(&snap)),
        "no snapshot at seq {seq} in snapshot.dir: {:?}",
        files(&sdir, ".snap")
    );
    assert!(files(&data.path().join("journal"), ".seg").is_empty());
    assert!(files(&data.path().join("snapshots"), ".snap").is_empty());

    // The offline tools, pointed there by the same variables.
    let tool = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mini-exchange"))
            .args(args)
            .env("MX_DATA_DIR", data.path())
            .envs(env)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    tool(&["journal", "verify"]);
    assert!(tool(&["snapshot", "list"]).contains(&seq.to_string()));

    // Restart: recovered from there (nothing journaled again).
    let s = common::Server::start_with(data.path(), port, &env);
    assert_eq!(durable(&s), seq);
    let admin = common::login(&s, common::ADMIN, common::ADMIN_PW);
    let dup = admin_deposit(&s, &admin, "5", "0xdirs");
    // The same tx_hash again is the recovered deposit, not a new credit.
    assert_eq!(dup.status, 201, "{}", dup.json);
    assert_eq!(dup.json["credited_now"], false, "{}", dup.json);
    assert_eq!(dup.json["id"], 1, "{}", dup.json);
    s.kill();
}

/// Write a journal as `serve` would have: the default config's bootstrap
/// (limits, 3 assets, 3 pairs), `users` funded traders, then `orders` limit
/// orders on BTCUSDT one millisecond apart ending about now. Most alternate
/// buy/sell across 30000 so about half of them trade (partial fills,
/// several makers per taker); every fifth rests away from the market on
/// one of 40 levels a side and is cancelled 200 such orders later.
/// Returns the last sequence number.
fn write_journal(data: &Path, users: u64, orders: u64, segment_size: u64) -> u64 {
    use engine::{
        ClientOrderId, Command as Cmd, Engine, NewOrder, OrderId, OrderRef, OrderType, PairId,
        Price, Qty, Side, StpMode, TimeInForce, UserId,
    };
    let cfg = gateway::config::load(None, &|_: &str| None).unwrap();
    let assets = cfg.asset_specs().unwrap();
    let pairs = cfg.pair_specs(&assets).unwrap();
    let mut cmds = vec![Cmd::SetLimits {
        limits: cfg.engine_limits(),
        by: None,
    }];
    cmds.extend(
        assets
            .into_iter()
            .map(|spec| Cmd::AddAsset { spec, by: None }),
    );
    cmds.extend(pairs.into_iter().map(|spec| Cmd::AddPair {
        spec: Box::new(spec),
        by: None,
    }));
    for u in 0..users {
        cmds.push(Cmd::CreateUser {
            username: format!("gen{u}"),
            email: format!("gen{u}@example.com"),
            password_hash: String::new(),
            roles: engine::roles::TRADER,
        });
    }
    let writer = journal::Writer::open(journal::JournalConfig {
        segment_size,
        durability: journal::Durability::None,
        ..journal::JournalConfig::new(data.join("journal"))
    })
    .unwrap()
    .0;
    let total = cmds.len() as u64 + 2 * users + orders * 6 / 5 + 1;
    let mut g = Gen {
        writer,
        e: Engine::new(),
        out: Vec::new(),
        buf: Vec::with_capacity(256),
        base_ms: now_ms() - total,
    };
    for c in &cmds {
        g.apply(c);
    }
    let user0 = g.e.users().iter().map(|u| u.id.0).min().unwrap();
    for u in 0..users {
        for (asset, amount) in [
            (1u32, 1_000 * 100_000_000u64),
            (3, 100_000_000 * 100_000_000),
        ] {
            g.apply(&Cmd::Adjust {
                user: UserId(user0 + u),
                asset: engine::AssetId(asset),
                amount,
                credit: true,
                reason: "test funding".into(),
                by: None,
            });
        }
    }
    let order = |user: u64, side: Side, price_ticks: u64, qty_units: u64| NewOrder {
        user: UserId(user0 + user),
        pair: PairId(1),
        side,
        kind: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price: Price(price_ticks),
        qty: Qty(qty_units),
        quote_qty: 0,
        stop_price: Price(0),
        client_id: ClientOrderId::NONE,
        stp: StpMode::ExpireMaker,
    };
    let mut far: std::collections::VecDeque<(u64, u64)> = Default::default();
    for k in 0..orders {
        let user = k % users;
        let buy = k.is_multiple_of(2);
        let side = if buy { Side::Buy } else { Side::Sell };
        // 0.001 .. 0.004 BTC (step 0.00001 = 1000 units)
        let qty = 100_000 * (1 + k % 4);
        if k % 5 == 4 {
            let level = k % 40;
            let px = if buy {
                2_950_000 - level * 100
            } else {
                3_050_000 + level * 100
            };
            g.apply(&Cmd::PlaceOrder(order(user, side, px, qty)));
            let accepted = g.out.iter().find_map(|ev| match ev {
                engine::Event::OrderAccepted(o) => Some(o.id.0),
                _ => None,
            });
            if let Some(id) = accepted {
                far.push_back((id, user));
            }
            if far.len() > 200 {
                let (id, owner) = far.pop_front().unwrap();
                g.apply(&Cmd::CancelOrder {
                    user: UserId(user0 + owner),
                    pair: PairId(1),
                    target: OrderRef::Id(OrderId(id)),
                });
            }
        } else {
            // 29999..30001 sells, 30001..30003 buys (cents): they cross.
            let px = if buy { 3_000_100 } else { 2_999_900 } + (k % 3) * 100;
            g.apply(&Cmd::PlaceOrder(order(user, side, px, qty)));
        }
    }
    g.writer.commit().unwrap();
    let last = g.writer.last_seq();
    assert_eq!(g.e.last_seq(), last);
    g.writer.close().unwrap();
    last
}

/// Journal writer and engine of [`write_journal`], one record a millisecond.
struct Gen {
    writer: journal::Writer,
    e: engine::Engine,
    out: Vec<engine::Event>,
    buf: Vec<u8>,
    base_ms: u64,
}

impl Gen {
    fn apply(&mut self, cmd: &engine::Command) {
        let seq = self.e.last_seq() + 1;
        let ts_ms = self.base_ms + seq;
        self.buf.clear();
        cmd.encode_into(&mut self.buf);
        assert_eq!(
            self.writer.append(ts_ms * 1_000_000, &self.buf).unwrap(),
            seq
        );
        // Small batches: they must fit in one (small) segment.
        if seq.is_multiple_of(64) {
            self.writer.commit().unwrap();
        }
        self.out.clear();
        self.e.apply(seq, ts_ms, cmd, &mut self.out);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// What every restart must answer the same: book, trades, aggregate trades,
/// klines, tickers (the 24 h one without its request-time bounds).
fn read_models(s: &Server) -> Vec<serde_json::Value> {
    let get = |path: &str| {
        let (st, _, v) = s.get(path);
        assert_eq!(st, 200, "{path}: {v}");
        v
    };
    let mut ticker = get("/api/v3/ticker/24hr?symbol=BTCUSDT");
    let t = ticker.as_object_mut().unwrap();
    t.remove("openTime");
    t.remove("closeTime");
    vec![
        get("/api/v3/depth?symbol=BTCUSDT&limit=5000"),
        get("/api/v3/trades?symbol=BTCUSDT&limit=1000"),
        get("/api/v3/aggTrades?symbol=BTCUSDT&limit=1000"),
        get("/api/v3/klines?symbol=BTCUSDT&interval=1s&limit=1000"),
        get("/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000"),
        get("/api/v3/klines?symbol=BTCUSDT&interval=1h"),
        ticker,
        get("/api/v3/ticker/price"),
        get("/api/v3/ticker/bookTicker"),
    ]
}

#[test]
fn startup_rebuilds_the_same_read_models_with_or_without_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = tmp.path().join("gen");
    // 64 KiB segments: the journal spans many of them.
    let last = write_journal(&gen, 20, 4_000, 64 << 10);
    assert!(last > 4_000);

    // A: the journal alone (as after a SIGKILL before any snapshot).
    let a_dir = tmp.path().join("a");
    copy_dir(&gen, &a_dir);
    let port = free_port();
    let a = Server::start(&a_dir, port);
    let (_, _, h) = a.get("/health");
    assert_eq!(h["journal"]["durable_seq"], last + 1, "+ the first admin");
    assert_eq!(h["market_data"]["seq"], last + 1);
    let want = read_models(&a);
    let trades = want[1].as_array().unwrap();
    assert_eq!(trades.len(), 1000, "plenty of trades were replayed");
    assert!(!want[0]["bids"].as_array().unwrap().is_empty());
    assert!(!want[0]["asks"].as_array().unwrap().is_empty());
    // B: SIGTERM writes a snapshot at the end; the restart must not apply
    // anything twice and answers exactly the same.
    a.signal("-TERM");
    assert_eq!(a.wait(Duration::from_secs(60)), Some(0));
    let b = Server::start(&a_dir, port);
    let (_, _, h) = b.get("/health");
    assert_eq!(h["journal"]["durable_seq"], last + 1);
    assert_eq!(read_models(&b), want);
    // ... and after a SIGKILL with that snapshot left behind.
    b.signal("-KILL");
    let _ = b.wait(Duration::from_secs(10));
    let b = Server::start(&a_dir, port);
    assert_eq!(read_models(&b), want);
    b.signal("-TERM");
    assert_eq!(b.wait(Duration::from_secs(60)), Some(0));

    // C: snapshot + a journal whose start retention deleted: the state
    // (book, last prices) is the same; trade history is not rebuildable.
    let c_dir = tmp.path().join("c");
    copy_dir(&gen, &c_dir);
    let data = persister::replica::DataDir::new(&c_dir);
    let rec = persister::replica::recover(&data, u64::MAX, |_| {}).unwrap();
    assert_eq!(rec.engine.last_seq(), last);
    persister::replica::write_snapshot(&data, &rec.engine).unwrap();
    let deleted = journal::delete_segments_before(data.journal(), last + 1).unwrap();
    assert!(!deleted.is_empty());
    let c = Server::start(&c_dir, port);
    let (_, _, h) = c.get("/health");
    assert_eq!(h["journal"]["durable_seq"], last + 1);
    let got = read_models(&c);
    assert_eq!(got[0]["bids"], want[0]["bids"]);
    assert_eq!(got[0]["asks"], want[0]["asks"]);
    assert_eq!(got[7], want[7], "last prices");
    assert_eq!(got[8], want[8], "book tickers");
    assert_eq!(
        got[1],
        serde_json::json!([]),
        "no history without the journal's start"
    );
    c.signal("-TERM");
    assert_eq!(c.wait(Duration::from_secs(60)), Some(0));
}

/// A snapshot newer than the journal's end (the journal lost records) is
/// refused with a clear message, as before the single-pass startup.
#[test]
fn a_snapshot_newer_than_the_journal_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let last = write_journal(&full, 2, 50, 64 << 10);
    let data = persister::replica::DataDir::new(&full);
    let rec = persister::replica::recover(&data, u64::MAX, |_| {}).unwrap();
    // A shorter journal beside the long one's snapshot.
    let short = tmp.path().join("short");
    write_journal(&short, 2, 10, 64 << 10);
    let short_data = persister::replica::DataDir::new(&short);
    persister::replica::write_snapshot(&short_data, &rec.engine).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mini-exchange"))
        .arg("serve")
        .env("MX_DATA_DIR", &short)
        .env("MX_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("recovered state is at seq {last}"))
            && err.contains("a snapshot is newer than the journal"),
        "{err}"
    );
}

/// Startup time on a journal of about a million commands (plus a snapshot
/// on the second start). `MX_STARTUP_BENCH_BINS`: comma-separated
/// `mini-exchange` binaries to compare (default: this build's);
/// `MX_STARTUP_BENCH_ORDERS` (default 830,000 orders, about 1,000,000
/// commands with the cancels); `MX_STARTUP_BENCH_DIR` (default: a temporary
/// directory) keeps the journal and the logs. Prints one JSON line per start
/// and the server's own recovery timings.
#[test]
#[ignore = "benchmark: cargo test -p gateway --test serve -- --ignored --nocapture startup_time"]
fn startup_time_on_a_million_command_journal() {
    let orders: u64 = std::env::var("MX_STARTUP_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(830_000);
    let bins = std::env::var("MX_STARTUP_BENCH_BINS")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_mini-exchange").to_string());
    // MX_STARTUP_BENCH_DIR: keep the journal and the runs' logs there.
    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::var_os("MX_STARTUP_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let gen = root.join("gen");
    let started = Instant::now();
    let last = write_journal(&gen, 100, orders, 256 << 20);
    eprintln!(
        "journal: {last} commands written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (i, bin) in bins.split(',').enumerate() {
        for round in 0..2 {
            let dir = root.join(format!("run{i}-{round}"));
            copy_dir(&gen, &dir);
            let port = free_port();
            for (start, with_snapshot) in [("journal only", false), ("journal + snapshot", true)] {
                let log_path = dir.join(format!("serve-{with_snapshot}.log"));
                let log = std::fs::File::create(&log_path).unwrap();
                let t0 = Instant::now();
                let s = Server::start_bin(bin, &dir, port, Stdio::from(log));
                let secs = t0.elapsed().as_secs_f64();
                let (_, _, h) = s.get("/health");
                assert_eq!(h["journal"]["durable_seq"], last + 1, "+ the first admin");
                println!(
                    "{{\"bench\":\"startup\",\"bin\":\"{bin}\",\"round\":{round},\"start\":\"{start}\",\"commands\":{last},\"seconds_to_first_answer\":{secs:.3}}}"
                );
                // The server's own timings of its recovery steps.
                let log = std::fs::read_to_string(&log_path).unwrap();
                for line in log.lines().filter(|l| {
                    l.contains("recovered") || l.contains("rebuilt") || l.contains("snapshot")
                }) {
                    eprintln!("    {line}");
                }
                s.signal("-TERM");
                assert_eq!(s.wait(Duration::from_secs(120)), Some(0));
            }
        }
    }
}
