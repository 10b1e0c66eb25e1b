//! Black-box tests of the `mini-exchange` CLI over a real data directory:
//! journal verify / inspect / replay, snapshot create / list / verify, a
//! damaged snapshot falling back, and a corrupt journal refused.

use std::path::Path;
use std::process::Command as Proc;

use engine::*;
use persister::replica::DataDir;

fn bin() -> Proc {
    Proc::new(env!("CARGO_BIN_EXE_mini-exchange"))
}

fn run(args: &[&str], data: &Path) -> (bool, String, String) {
    let out = bin().args(args).env("MX_DATA_DIR", data).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn hash_of(summary: &str) -> String {
    summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix("state_hash="))
        .unwrap_or_else(|| panic!("no hash in {summary:?}"))
        .to_string()
}

/// Journal ~230 commands: assets, a pair, users, deposits, crossing orders.
fn populate(data: &DataDir) -> u64 {
    data.create().unwrap();
    let (mut w, _) = journal::Writer::open(journal::JournalConfig::new(data.journal())).unwrap();
    let asset = |s: &str| AssetSpec {
        symbol: s.into(),
        name: s.into(),
        decimals: 8,
        min_withdraw_units: 0,
        withdraw_fee_units: 0,
        daily_withdraw_limit_units: 0,
        confirmations: 1,
        active: true,
    };
    let mut cmds = vec![
        Command::AddAsset {
            spec: asset("BTC"),
            by: None,
        },
        Command::AddAsset {
            spec: asset("USDT"),
            by: None,
        },
        Command::AddPair {
            spec: Box::new(PairSpec {
                symbol: "BTCUSDT".into(),
                base: AssetId(1),
                quote: AssetId(2),
                tick_units: 1_000_000,
                step_units: 1_000,
                min_qty_units: 1_000,
                max_qty_units: 900_000_000_000,
                market_max_qty_units: 900_000_000_000,
                min_notional_units: 500_000_000,
                max_notional_units: 0,
                min_price_ticks: 1,
                max_price_ticks: 100_000_000_000,
                maker_fee_e8: 100_000,
                taker_fee_e8: 100_000,
                price_band_pct: 50,
                status: PairStatus::Trading,
            }),
            by: None,
        },
    ];
    for u in 1..=4u64 {
        cmds.push(Command::CreateUser {
            username: format!("cli{u}"),
            email: String::new(),
            password_hash: String::new(),
            roles: roles::TRADER,
        });
        for a in 1..=2u32 {
            cmds.push(Command::Deposit {
                user: UserId(u),
                asset: AssetId(a),
                amount: 1_000_000_000_000_000,
                tx_hash: format!("tx{u}{a}"),
                confirmations: 1,
                by: None,
            });
        }
    }
    for i in 0..200u64 {
        cmds.push(Command::PlaceOrder(NewOrder {
            user: UserId(1 + i % 4),
            pair: PairId(1),
            side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
            kind: OrderType::Limit,
            tif: TimeInForce::Gtc,
            price: Price(3_000_000 + (i * 7919) % 50),
            qty: Qty(100_000),
            quote_qty: 0,
            stop_price: Price(0),
            client_id: ClientOrderId::NONE,
            stp: StpMode::None,
        }));
    }
    for (i, c) in cmds.iter().enumerate() {
        w.append(
            1_700_000_000_000_000_000 + i as u64 * 1_000_000,
            &c.encode(),
        )
        .unwrap();
        if i % 16 == 15 {
            w.commit().unwrap();
        }
    }
    let last = w.commit().unwrap();
    w.close().unwrap();
    last
}

#[test]
fn journal_and_snapshot_commands_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    let last = populate(&data);

    let (ok, out, err) = run(&["journal", "verify"], tmp.path());
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{last} records")), "{out}");
    // An empty variable is unset, as for the configuration's variables.
    let out = bin()
        .args(["journal", "verify"])
        .env("MX_DATA_DIR", tmp.path())
        .env("MX_JOURNAL__DIR", "")
        .env("MX_SNAPSHOT__DIR", "")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("{last} records")), "{text}");

    let (ok, out, _) = run(
        &["journal", "inspect", "--from", "3", "--limit", "2"],
        tmp.path(),
    );
    assert!(ok);
    assert_eq!(out.lines().count(), 2);
    assert!(out.starts_with("3 ") && out.contains("AddPair"), "{out}");

    let (ok, full, err) = run(&["journal", "replay", "--no-snapshot"], tmp.path());
    assert!(ok, "{err}");
    assert!(full.contains(&format!("seq={last} ")), "{full}");
    let (ok, mid, _) = run(&["journal", "replay", "--to", "100"], tmp.path());
    assert!(ok);
    assert!(mid.contains("seq=100 "));
    assert_ne!(hash_of(&mid), hash_of(&full));

    let (ok, created, err) = run(&["snapshot", "create"], tmp.path());
    assert!(ok, "{err}");
    assert_eq!(hash_of(&created), hash_of(&full));
    let (ok, list, _) = run(&["snapshot", "list"], tmp.path());
    assert!(ok && list.lines().count() == 1, "{list}");
    let (ok, verified, _) = run(&["snapshot", "verify"], tmp.path());
    assert!(
        ok && verified.contains("1 snapshots verified"),
        "{verified}"
    );

    // Replay through the snapshot gives the same state as a clean replay.
    let (ok, via_snap, err) = run(&["journal", "replay"], tmp.path());
    assert!(ok);
    assert!(err.contains(&format!("after snapshot {last}")), "{err}");
    assert_eq!(hash_of(&via_snap), hash_of(&full));

    // A damaged snapshot is reported and skipped; replay still agrees.
    let snap = std::fs::read_dir(data.snapshots())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&snap).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&snap, &bytes).unwrap();
    let (ok, out, _) = run(&["snapshot", "verify"], tmp.path());
    assert!(!ok && out.contains("BAD"), "{out}");
    let (ok, again, err) = run(&["journal", "replay"], tmp.path());
    assert!(ok, "{err}");
    assert!(err.contains("skipped snapshot"), "{err}");
    assert_eq!(hash_of(&again), hash_of(&full));
}

#[test]
fn corrupt_journal_is_refused_with_its_location() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    populate(&data);
    let seg = std::fs::read_dir(data.journal())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Flip a byte inside the first record's payload (after the 64-byte
    // segment header and the 32-byte record header).
    bytes[64 + 32 + 4] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let (ok, _, err) = run(&["journal", "verify"], tmp.path());
    assert!(!ok, "corruption not detected");
    assert!(err.contains(".seg"), "error does not name the file: {err}");
    // Repair needs the explicit flag, then cuts at the damage.
    let (ok, _, err) = run(&["journal", "repair"], tmp.path());
    assert!(!ok && err.contains("--yes-discard-records"), "{err}");
    let (ok, out, err) = run(&["journal", "repair", "--yes-discard-records"], tmp.path());
    assert!(ok, "{err}");
    assert!(out.contains("repair"), "{out}");
    let (ok, out, err) = run(&["journal", "verify"], tmp.path());
    assert!(ok, "{err}");
    assert!(out.contains("journal OK: 0 records"), "{out}");
}

#[test]
fn help_documents_every_subcommand() {
    let out = bin().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["migrate", "journal", "snapshot"] {
        assert!(text.contains(sub), "--help lacks {sub}");
    }
    for args in [["journal", "--help"], ["snapshot", "--help"]] {
        let out = bin().args(args).output().unwrap();
        assert!(out.status.success());
    }
}
