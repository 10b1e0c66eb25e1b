//! Black-box tests of the configuration loader: the embedded
//! `config/default.toml` yields exactly API.md's defaults (in engine units,
//! and accepted by a real engine), both environment forms and `--config`
//! override it in the documented order, bad values are refused with
//! messages that say where they came from, and no secret reaches `Debug`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use engine::{AssetId, AssetSpec, Command, Engine, Event, Limits, PairSpec, PairStatus};
use gateway::config::{self, Config, ConfigError, Durability, WaitStrategy};

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    config::load(None, &env_of(pairs))
}

fn defaults() -> Config {
    load_env(&[]).expect("embedded default config loads")
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn load_file(text: &str) -> (Result<Config, ConfigError>, tempfile::NamedTempFile) {
    let f = file(text);
    (config::load(Some(f.path()), &env_of(&[])), f)
}

fn err_text(r: Result<Config, ConfigError>) -> String {
    r.expect_err("config must be refused").to_string()
}

const E8: u64 = 100_000_000;

#[test]
fn embedded_default_has_the_api_md_assets() {
    let specs = defaults().asset_specs().unwrap();
    let want = [
        ("BTC", "Bitcoin", 100_000, 20_000, 100 * E8, 2),
        ("ETH", "Ethereum", E8 / 100, 200_000, 1000 * E8, 12),
        ("USDT", "Tether USD", 10 * E8, E8, 1_000_000 * E8, 12),
    ];
    assert_eq!(specs.len(), want.len());
    for (s, (sym, name, min, fee, limit, conf)) in specs.iter().zip(want) {
        assert_eq!(
            s,
            &AssetSpec {
                symbol: sym.into(),
                name: name.into(),
                decimals: 8,
                min_withdraw_units: min,
                withdraw_fee_units: fee,
                daily_withdraw_limit_units: limit,
                confirmations: conf,
                active: true,
            }
        );
    }
}

#[test]
fn embedded_default_has_the_api_md_pairs_in_engine_units() {
    let c = defaults();
    let assets = c.asset_specs().unwrap();
    let pairs = c.pair_specs(&assets).unwrap();
    let (btc, eth, usdt) = (AssetId(1), AssetId(2), AssetId(3));
    let pair =
        |symbol: &str, base, quote, tick, step, max_qty, min_notional, max_price_ticks| PairSpec {
            symbol: symbol.into(),
            base,
            quote,
            tick_units: tick,
            step_units: step,
            min_qty_units: step,
            max_qty_units: max_qty,
            market_max_qty_units: max_qty,
            min_notional_units: min_notional,
            max_notional_units: 0,
            min_price_ticks: 1,
            max_price_ticks,
            maker_fee_e8: 100_000,
            taker_fee_e8: 100_000,
            price_band_pct: 50,
            status: PairStatus::Trading,
        };
    // BTCUSDT: tick 0.01 USDT = 1_000_000 units, step 0.00001 BTC = 1_000,
    // maxQty 9000, minNotional 5 USDT, max price 1000000 / 0.01 ticks.
    assert_eq!(
        pairs[0],
        pair(
            "BTCUSDT",
            btc,
            usdt,
            1_000_000,
            1_000,
            9000 * E8,
            5 * E8,
            100_000_000
        )
    );
    // ETHUSDT: tick 0.01, step 0.0001 ETH = 10_000, minNotional 5.
    assert_eq!(
        pairs[1],
        pair(
            "ETHUSDT",
            eth,
            usdt,
            1_000_000,
            10_000,
            9000 * E8,
            5 * E8,
            100_000_000
        )
    );
    // ETHBTC: tick 0.000001 BTC = 100, step 0.001 ETH = 100_000,
    // minNotional 0.0001 BTC = 10_000, max price 1000 BTC.
    assert_eq!(
        pairs[2],
        pair(
            "ETHBTC",
            eth,
            btc,
            100,
            100_000,
            100_000 * E8,
            10_000,
            1_000_000_000
        )
    );
    assert_eq!(pairs.len(), 3);
}

#[test]
fn embedded_default_scalars() {
    let c = defaults();
    assert_eq!(c.http.addr.to_string(), "127.0.0.1:8080");
    assert_eq!(c.http.max_body_bytes, 65536);
    assert_eq!(c.http.ws_max_subscriptions, 1024);
    assert_eq!(c.http.ws_ping_interval_secs, 20);
    assert_eq!(c.http.ws_pong_timeout_secs, 60);
    assert!(c.http.ring_capacity.is_power_of_two());
    assert_eq!(c.data_dir, PathBuf::from("./data"));
    assert_eq!(c.journal_dir(), Path::new("./data").join("journal"));
    assert_eq!(c.snapshot_dir(), Path::new("./data").join("snapshots"));
    assert_eq!(c.journal.durability, Durability::Fsync);
    assert_eq!(c.journal_config().durability, journal::Durability::Fsync);
    assert_eq!(c.journal_config().segment_size, 256 << 20);
    assert_eq!(c.engine.wait_strategy, WaitStrategy::Park);
    assert_eq!(c.engine.core, None);
    assert_eq!(c.engine.price_band_pct, 50);
    assert_eq!(c.engine_limits(), Limits::default());
    assert!(!c.snapshot.retain_journal, "API.md: the journal is kept");
    assert!(c.database.url.is_none());
    assert!(!c.persister_enabled(), "no DATABASE_URL, no persister");
    assert_eq!(
        c.persister.busy_percent, None,
        "unset: chosen by where Postgres runs"
    );
    assert_eq!(c.auth.max_failed_logins, 5);
    assert_eq!(c.auth.lockout_secs, 900);
    assert!(c.auth.jwt_secret.is_none() && c.auth.secret_key.is_none());
    assert!(c.auth.admin_username.is_none() && c.auth.admin_password.is_none());
    // Generous: local tests and benchmarks never hit them.
    assert!(c.rate_limits.weight_per_minute_per_ip >= 1_000_000);
    assert!(c.rate_limits.orders_per_10s_per_key >= 1_000_000);
    assert!(c.rate_limits.orders_per_day_per_key >= 100_000_000);
}

#[test]
fn default_specs_are_accepted_by_the_engine() {
    let c = defaults();
    let assets = c.asset_specs().unwrap();
    let pairs = c.pair_specs(&assets).unwrap();
    let mut e = Engine::new();
    let mut out = Vec::new();
    let mut seq = 0;
    let cmds = assets
        .into_iter()
        .map(|spec| Command::AddAsset { spec, by: None })
        .chain(pairs.into_iter().map(|spec| Command::AddPair {
            spec: Box::new(spec),
            by: None,
        }))
        .chain([Command::SetLimits {
            limits: c.engine_limits(),
            by: None,
        }]);
    for cmd in cmds {
        seq += 1;
        out.clear();
        e.apply(seq, 1_700_000_000_000, &cmd, &mut out);
        assert!(
            !out.iter().any(|ev| matches!(ev, Event::Rejected { .. })),
            "{cmd:?} rejected: {out:?}"
        );
    }
    assert_eq!(e.assets().len(), 3);
    assert_eq!(e.pairs().len(), 3);
}

#[test]
fn long_env_names_override_the_files() {
    let c = load_env(&[
        ("MX_HTTP__ADDR", "0.0.0.0:9000"),
        ("MX_JOURNAL__DURABILITY", "os"),
        ("MX_ENGINE__WAIT_STRATEGY", "spin"),
        ("MX_ENGINE__CORE", "2"),
        ("MX_ENGINE__MAX_OPEN_ORDERS_PER_USER", "7"),
        ("MX_SNAPSHOT__RETAIN_JOURNAL", "true"),
        ("MX_RATE_LIMITS__WEIGHT_PER_MINUTE_PER_IP", "6000"),
        ("MX_AUTH__JWT_SECRET", "jwt-from-long-name"),
        ("MX_DATABASE__URL", "postgres://u@h/d"),
        ("MX_JOURNAL__SEGMENT_SIZE_MB", ""), // empty = unset
    ])
    .unwrap();
    assert_eq!(c.http.addr.to_string(), "0.0.0.0:9000");
    assert_eq!(c.journal.durability, Durability::Os);
    assert_eq!(c.journal_config().durability, journal::Durability::Os);
    assert_eq!(c.engine.wait_strategy, WaitStrategy::Spin);
    assert_eq!(c.engine.core, Some(2));
    assert_eq!(c.engine_limits().max_open_orders_per_user, 7);
    assert!(c.snapshot.retain_journal);
    assert_eq!(c.rate_limits.weight_per_minute_per_ip, 6000);
    assert_eq!(
        c.auth.jwt_secret.as_ref().map(|s| s.expose()),
        Some("jwt-from-long-name")
    );
    assert!(c.persister_enabled());
    assert_eq!(c.journal.segment_size_mb, 256);
}

#[test]
fn short_env_names_override_long_ones() {
    let c = load_env(&[
        ("MX_HTTP__ADDR", "0.0.0.0:9000"),
        ("MX_HTTP_ADDR", "127.0.0.1:9100"),
        ("MX_DATA_DIR", "/tmp/mx-data"),
        ("MX_AUTH__JWT_SECRET", "long"),
        ("MX_JWT_SECRET", "short-jwt"),
        ("MX_SECRET_KEY", "short-key"),
        ("DATABASE_URL", "postgres://mx:pw@db:5432/mx"),
        ("MX_ADMIN_USERNAME", "root"),
        ("MX_ADMIN_PASSWORD", "adminpw"),
    ])
    .unwrap();
    assert_eq!(c.http.addr.to_string(), "127.0.0.1:9100");
    assert_eq!(c.data_dir, PathBuf::from("/tmp/mx-data"));
    assert_eq!(c.journal_dir(), PathBuf::from("/tmp/mx-data/journal"));
    assert_eq!(c.auth.jwt_secret.as_ref().unwrap().expose(), "short-jwt");
    assert_eq!(c.auth.secret_key.as_ref().unwrap().expose(), "short-key");
    assert_eq!(
        c.database.url.as_ref().unwrap().expose(),
        "postgres://mx:pw@db:5432/mx"
    );
    assert!(c.persister_enabled());
    assert_eq!(c.auth.admin_username.as_deref(), Some("root"));
    assert_eq!(c.auth.admin_password.as_ref().unwrap().expose(), "adminpw");
}

#[test]
fn config_file_overrides_defaults_and_env_overrides_the_file() {
    let f = file(
        r#"
        data_dir = "/srv/mx"
        [http]
        addr = "0.0.0.0:7000"
        max_body_bytes = 1024
        [journal]
        durability = "none"
        [[assets]]
        symbol = "BTC"
        name = "Bitcoin"
        decimals = 8
        [[assets]]
        symbol = "USDC"
        name = "USD Coin"
        decimals = 6
        min_withdraw = 10
        [[pairs]]
        symbol = "BTCUSDC"
        base = "BTC"
        quote = "USDC"
        tick_size = "0.1"
        step_size = "0.0001"
        min_qty = "0.0001"
        max_qty = 100
        max_notional = "1000000"
        maker_fee = "0"
        taker_fee = "0.00075"
        price_band_pct = 10
        status = "HALT"
        "#,
    );
    let c = config::load(Some(f.path()), &env_of(&[])).unwrap();
    assert_eq!(c.http.addr.to_string(), "0.0.0.0:7000");
    assert_eq!(c.http.max_body_bytes, 1024);
    assert_eq!(
        c.http.ws_max_subscriptions, 1024,
        "untouched keys keep defaults"
    );
    assert_eq!(c.journal.durability, Durability::None);
    assert_eq!(c.data_dir, PathBuf::from("/srv/mx"));
    // Arrays replace the default ones as a whole.
    let assets = c.asset_specs().unwrap();
    assert_eq!(
        assets.iter().map(|a| a.symbol.as_str()).collect::<Vec<_>>(),
        ["BTC", "USDC"]
    );
    assert_eq!(assets[1].min_withdraw_units, 10_000_000);
    assert_eq!(assets[1].withdraw_fee_units, 0);
    assert_eq!(assets[1].confirmations, 1);
    let pairs = c.pair_specs(&assets).unwrap();
    assert_eq!(pairs.len(), 1);
    let p = &pairs[0];
    assert_eq!((p.base, p.quote), (AssetId(1), AssetId(2)));
    assert_eq!(p.tick_units, 100_000); // 0.1 USDC at 6 decimals
    assert_eq!(p.step_units, 10_000); // 0.0001 BTC
    assert_eq!(p.max_qty_units, 100 * E8);
    assert_eq!(p.market_max_qty_units, 100 * E8);
    assert_eq!(p.max_notional_units, 1_000_000_000_000);
    assert_eq!(p.min_notional_units, 0);
    assert_eq!(p.min_price_ticks, 1);
    assert_eq!(p.max_price_ticks, 10_000_000); // 1000000 / 0.1
    assert_eq!((p.maker_fee_e8, p.taker_fee_e8), (0, 75_000));
    assert_eq!(p.price_band_pct, 10);
    assert_eq!(p.status, PairStatus::Halt);

    let c = config::load(
        Some(f.path()),
        &env_of(&[
            ("MX_HTTP__ADDR", "10.0.0.1:1"),
            ("MX_HTTP__MAX_BODY_BYTES", "2048"),
        ]),
    )
    .unwrap();
    assert_eq!(c.http.addr.to_string(), "10.0.0.1:1");
    assert_eq!(c.http.max_body_bytes, 2048);
}

#[test]
fn production_toml_is_binance_like() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/production.toml");
    let c = config::load(Some(&path), &env_of(&[])).unwrap();
    assert_eq!(c.rate_limits.weight_per_minute_per_ip, 6000);
    assert_eq!(c.rate_limits.orders_per_10s_per_key, 100);
    assert_eq!(c.rate_limits.orders_per_day_per_key, 200_000);
    assert_eq!(c.http.ws_max_messages_per_sec, 5);
    assert_eq!(c.http.ws_max_subscriptions, 1024);
    assert_eq!(c.journal.durability, Durability::Fsync);
    assert_eq!(c.engine.wait_strategy, WaitStrategy::Park, "spin is opt-in");
    assert!(!c.snapshot.retain_journal);
    assert_eq!(c.pair_specs(&c.asset_specs().unwrap()).unwrap().len(), 3);
}

#[test]
fn empty_config_file_is_valid() {
    let (c, _f) = load_file("");
    assert_eq!(c.unwrap(), defaults());
}

#[test]
fn bad_durability_is_refused_naming_its_source() {
    let (r, f) = load_file("[journal]\ndurability = \"sometimes\"\n");
    let e = err_text(r);
    assert!(e.contains(&f.path().display().to_string()), "{e}");
    assert!(e.contains("unknown variant `sometimes`"), "{e}");
    assert!(
        e.contains("fsync") && e.contains("os") && e.contains("none"),
        "{e}"
    );

    let e = err_text(load_env(&[("MX_JOURNAL__DURABILITY", "sometimes")]));
    assert!(
        e.starts_with("environment variable MX_JOURNAL__DURABILITY"),
        "{e}"
    );
    assert!(
        e.contains("journal.durability") && e.contains("sometimes"),
        "{e}"
    );
}

#[test]
fn unknown_key_in_a_file_is_an_error_naming_the_file() {
    let (r, f) = load_file("[http]\nadrr = \"0.0.0.0:1\"\n");
    let e = err_text(r);
    assert!(e.contains(&f.path().display().to_string()), "{e}");
    assert!(e.contains("unknown field `adrr`"), "{e}");

    let (r, _f) = load_file("[htttp]\naddr = \"0.0.0.0:1\"\n");
    assert!(err_text(r).contains("unknown field `htttp`"));

    let (r, _f) =
        load_file("[[assets]]\nsymbol = \"X\"\nname = \"X\"\ndecimals = 2\nprecision = 3\n");
    assert!(err_text(r).contains("unknown field `precision`"));
}

#[test]
fn missing_or_malformed_file() {
    let e = config::load(Some(Path::new("/nonexistent/mx.toml")), &env_of(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/mx.toml") && e.contains("cannot read"),
        "{e}"
    );
    let (r, _f) = load_file("[http\naddr = 1");
    assert!(matches!(r, Err(ConfigError::File { .. })));
    let (r, _f) = load_file("[http]\nmax_body_bytes = \"big\"\n");
    assert!(err_text(r).contains("max_body_bytes"));
}

#[test]
fn unparsable_env_var_names_the_variable() {
    let e = err_text(load_env(&[("MX_HTTP__MAX_BODY_BYTES", "lots")]));
    assert!(e.contains("MX_HTTP__MAX_BODY_BYTES"), "{e}");
    assert!(
        e.contains("\"lots\"") && e.contains("http.max_body_bytes"),
        "{e}"
    );

    let e = err_text(load_env(&[("MX_HTTP_ADDR", "localhost:eighty")]));
    assert!(e.contains("MX_HTTP_ADDR") && e.contains("http.addr"), "{e}");

    let e = err_text(load_env(&[("MX_ENGINE__CORE", "-1")]));
    assert!(e.contains("MX_ENGINE__CORE"), "{e}");

    let e = err_text(load_env(&[("MX_SNAPSHOT__RETAIN_JOURNAL", "yes")]));
    assert!(e.contains("MX_SNAPSHOT__RETAIN_JOURNAL"), "{e}");
}

#[test]
fn env_names_that_match_no_key_are_refused() {
    config::check_env_names(["MX_HTTP__ADDR", "MX_DATA_DIR", "PATH", "MX_LOG"]).unwrap();
    let e = config::check_env_names(["MX_HTTP__ADRR"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("MX_HTTP__ADRR") && e.contains("addr"), "{e}");
    let e = config::check_env_names(["MX_PAIRS__X"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("MX_PAIRS__X") && e.contains("http"), "{e}");
    assert!(config::env_var_names().contains(&"MX_JOURNAL__DURABILITY".to_string()));
}

const ONE_PAIR_HEAD: &str = r#"
[[pairs]]
symbol = "BTCUSDT"
base = "BTC"
quote = "USDT"
"#;

fn one_pair(body: &str) -> Result<Config, ConfigError> {
    let text = format!(
        "{ONE_PAIR_HEAD}tick_size = \"0.01\"\nstep_size = \"0.00001\"\nmin_qty = \"0.00001\"\nmax_qty = \"9000\"\n{body}"
    );
    load_file(&text).0
}

#[test]
fn too_many_decimals_in_a_pair_filter() {
    let text = format!(
        "{ONE_PAIR_HEAD}tick_size = \"0.000000001\"\nstep_size = \"0.00001\"\nmin_qty = \"0.00001\"\nmax_qty = \"9000\"\n"
    );
    let r = load_file(&text).0;
    match &r {
        Err(ConfigError::Pair { pair, field, .. }) => {
            assert_eq!((pair.as_str(), field.as_str()), ("BTCUSDT", "tick_size"))
        }
        other => panic!("{other:?}"),
    }
    let e = err_text(r);
    assert!(
        e.contains("too many decimal places") && e.contains("USDT has 8"),
        "{e}"
    );

    let e = err_text(one_pair("min_notional = \"0.000000001\"\n"));
    assert!(e.contains("BTCUSDT") && e.contains("min_notional"), "{e}");

    // Off the grid: min_qty not a multiple of the step, price off the tick.
    let e = err_text(one_pair("min_price = \"0.015\"\n"));
    assert!(e.contains("min_price") && e.contains("tick_size"), "{e}");
    let text = format!(
        "{ONE_PAIR_HEAD}tick_size = \"0.01\"\nstep_size = \"0.00001\"\nmin_qty = \"0.000015\"\nmax_qty = \"9000\"\n"
    );
    let e = err_text(load_file(&text).0);
    assert!(e.contains("min_qty") && e.contains("step_size"), "{e}");
    let e = err_text(one_pair("maker_fee = \"1.5\"\n"));
    assert!(e.contains("maker_fee"), "{e}");
    let e = err_text(one_pair("max_price = \"0.001\"\n"));
    assert!(e.contains("max_price"), "{e}");
    let e = err_text(one_pair("min_notional = 5.5\n"));
    assert!(e.contains("write decimal amounts as strings"), "{e}");
}

#[test]
fn unknown_asset_in_a_pair() {
    let text = r#"
[[pairs]]
symbol = "XRPUSDT"
base = "XRP"
quote = "USDT"
tick_size = "0.0001"
step_size = "0.1"
min_qty = "0.1"
max_qty = "1000000"
"#;
    let e = err_text(load_file(text).0);
    assert!(e.contains("pair XRPUSDT: base"), "{e}");
    assert!(
        e.contains("unknown asset \"XRP\"") && e.contains("BTC, ETH, USDT"),
        "{e}"
    );
}

#[test]
fn bad_assets() {
    let asset = |extra: &str| {
        load_file(&format!(
            "[[assets]]\nsymbol = \"BTC\"\nname = \"Bitcoin\"\ndecimals = 8\n{extra}\n[[pairs]]\nsymbol = \"X\"\nbase = \"BTC\"\nquote = \"BTC\"\ntick_size = \"1\"\nstep_size = \"1\"\nmin_qty = \"1\"\nmax_qty = \"1\"\n"
        ))
        .0
    };
    let e = err_text(asset("withdraw_fee = \"0.000000001\""));
    assert!(
        e.contains("asset BTC: withdraw_fee") && e.contains("too many decimal"),
        "{e}"
    );
    // A pair needs two different assets.
    let e = err_text(asset(""));
    assert!(e.contains("must differ from base"), "{e}");
    let (r, _f) = load_file("[[assets]]\nsymbol = \"btc\"\nname = \"B\"\ndecimals = 8\n");
    assert!(err_text(r).contains("A-Z"));
    let (r, _f) = load_file("[[assets]]\nsymbol = \"B\"\nname = \"B\"\ndecimals = 19\n");
    assert!(err_text(r).contains("decimals"));
}

#[test]
fn cross_field_checks() {
    let e = err_text(load_env(&[("MX_HTTP__RING_CAPACITY", "1000")]));
    assert!(
        e.contains("http.ring_capacity") && e.contains("power of two"),
        "{e}"
    );
    let e = err_text(load_env(&[("MX_ADMIN_USERNAME", "root")]));
    assert!(e.contains("MX_ADMIN_PASSWORD"), "{e}");
    let e = err_text(load_env(&[("MX_HTTP__WS_PONG_TIMEOUT_SECS", "10")]));
    assert!(e.contains("ws_pong_timeout_secs"), "{e}");
    let e = err_text(load_env(&[("MX_JOURNAL__SEGMENT_SIZE_MB", "0")]));
    assert!(e.contains("journal.segment_size_mb"), "{e}");
    let e = err_text(load_env(&[("MX_JOURNAL__COMMIT_INTERVAL_US", "100001")]));
    assert!(e.contains("journal.commit_interval_us"), "{e}");
    let c = load_env(&[("MX_JOURNAL__COMMIT_INTERVAL_US", "100000")]).unwrap();
    assert_eq!(c.journal.commit_interval_us, 100_000);
    for bad in ["0", "101"] {
        let e = err_text(load_env(&[("MX_PERSISTER__BUSY_PERCENT", bad)]));
        assert!(
            e.contains("persister.busy_percent") && e.contains("1 to 100"),
            "{e}"
        );
    }
    let e = err_text(load_env(&[("MX_PERSISTER__BUSY_PERCENT", "300")]));
    assert!(e.contains("MX_PERSISTER__BUSY_PERCENT"), "{e}");
    let c = load_env(&[("MX_PERSISTER__BUSY_PERCENT", "100")]).unwrap();
    assert_eq!(c.persister.busy_percent, Some(100));
}

#[test]
fn debug_output_never_contains_secrets() {
    let secrets = [
        ("MX_JWT_SECRET", "jwt-SECRET-1"),
        ("MX_SECRET_KEY", "key-SECRET-2"),
        ("MX_ADMIN_USERNAME", "root"),
        ("MX_ADMIN_PASSWORD", "admin-SECRET-3"),
        ("DATABASE_URL", "postgres://mx:db-SECRET-4@db:5432/mx"),
    ];
    let c = load_env(&secrets).unwrap();
    for text in [format!("{c:?}"), format!("{c:#?}")] {
        assert!(!text.contains("SECRET"), "secret leaked: {text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert!(text.contains("postgres://mx:***@db:5432/mx"), "{text}");
        assert!(text.contains("root"), "usernames are not secret");
    }
    let url = c.database.url.as_ref().unwrap();
    assert_eq!(url.to_string(), "postgres://mx:***@db:5432/mx");
    assert_eq!(url.expose(), "postgres://mx:db-SECRET-4@db:5432/mx");

    // A libpq key=value string is masked too.
    let c = load_env(&[("DATABASE_URL", "host=db user=mx password=db-SECRET-5")]).unwrap();
    assert!(!format!("{c:?}").contains("SECRET"));
}

#[test]
fn rate_limit_ban_settings() {
    use gateway::binance::ratelimit::BanPolicy;
    let c = defaults();
    assert_eq!(c.rate_limits.ban_after_rejections, 0);
    assert_eq!(c.rate_limits.first_ban_ms, 120_000, "Binance: 2 minutes");
    assert_eq!(c.rate_limits.max_ban_ms, 3 * 86_400_000, "Binance: 3 days");
    assert_eq!(c.rate_limits.ban_policy(), None, "0 = never ban");
    let c = load_env(&[
        ("MX_RATE_LIMITS__BAN_AFTER_REJECTIONS", "3"),
        ("MX_RATE_LIMITS__FIRST_BAN_MS", "1500"),
        ("MX_RATE_LIMITS__MAX_BAN_MS", "6000"),
    ])
    .unwrap();
    assert_eq!(
        c.rate_limits.ban_policy(),
        Some(BanPolicy {
            rejections_before_ban: 3,
            first_ban_ms: 1500,
            max_ban_ms: 6000
        })
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/production.toml");
    let p = config::load(Some(&path), &env_of(&[])).unwrap();
    assert_eq!(
        p.rate_limits.ban_policy(),
        Some(BanPolicy::default()),
        "production bans like Binance"
    );
    let e = err_text(load_env(&[
        ("MX_RATE_LIMITS__BAN_AFTER_REJECTIONS", "3"),
        ("MX_RATE_LIMITS__FIRST_BAN_MS", "0"),
    ]));
    assert!(e.contains("rate_limits.first_ban_ms"), "{e}");
    let e = err_text(load_env(&[
        ("MX_RATE_LIMITS__BAN_AFTER_REJECTIONS", "3"),
        ("MX_RATE_LIMITS__FIRST_BAN_MS", "5000"),
        ("MX_RATE_LIMITS__MAX_BAN_MS", "4000"),
    ]));
    assert!(
        e.contains("rate_limits.max_ban_ms") && e.contains("5000"),
        "{e}"
    );
    // Without bans the lengths are not used, so not checked.
    load_env(&[("MX_RATE_LIMITS__FIRST_BAN_MS", "0")]).unwrap();
}

#[test]
fn market_data_settings_reach_the_projection() {
    use gateway::market::{MarketLimits, MIN_KLINES_KEPT_PER_INTERVAL};
    assert_eq!(defaults().market_data.limits(), MarketLimits::default());
    let c = load_env(&[
        ("MX_MARKET_DATA__TRADES_KEPT_PER_SYMBOL", "5"),
        ("MX_MARKET_DATA__AGG_TRADES_KEPT_PER_SYMBOL", "6"),
        ("MX_MARKET_DATA__KLINES_KEPT_PER_INTERVAL", "2000"),
        ("MX_MARKET_DATA__DEPTH_MAX_LEVELS", "7"),
        ("MX_MARKET_DATA__ORDERS_KEPT_PER_USER", "8"),
        ("MX_MARKET_DATA__TRADES_KEPT_PER_USER", "9"),
    ])
    .unwrap();
    assert_eq!(
        c.market_data.limits(),
        MarketLimits {
            trades_kept: 5,
            agg_trades_kept: 6,
            klines_kept: 2000,
            depth_max_levels: 7,
            orders_kept_per_user: 8,
            trades_kept_per_user: 9,
        }
    );
    for key in [
        "MX_MARKET_DATA__ORDERS_KEPT_PER_USER",
        "MX_MARKET_DATA__TRADES_KEPT_PER_USER",
    ] {
        assert!(load_env(&[(key, "0")]).is_err(), "{key}=0 accepted");
    }
    let min = MIN_KLINES_KEPT_PER_INTERVAL.to_string();
    load_env(&[("MX_MARKET_DATA__KLINES_KEPT_PER_INTERVAL", &min)]).unwrap();
    let below = (MIN_KLINES_KEPT_PER_INTERVAL - 1).to_string();
    let e = err_text(load_env(&[(
        "MX_MARKET_DATA__KLINES_KEPT_PER_INTERVAL",
        &below,
    )]));
    assert!(
        e.contains("market_data.klines_kept_per_interval") && e.contains(&min),
        "{e}"
    );
    for bad in ["0", "5001"] {
        let e = err_text(load_env(&[("MX_MARKET_DATA__DEPTH_MAX_LEVELS", bad)]));
        assert!(e.contains("market_data.depth_max_levels"), "{e}");
    }
    let e = err_text(load_env(&[("MX_MARKET_DATA__TRADES_KEPT_PER_SYMBOL", "0")]));
    assert!(e.contains("market_data.trades_kept_per_symbol"), "{e}");
}
