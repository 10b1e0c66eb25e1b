//! Reconciliation: the engine state rebuilt from the data directory at the
//! persister's checkpoint of accounts and the ledger (the `core` domain;
//! with one writer of every domain, its lowest checkpoint) against Postgres — every account's
//! available and frozen balance, and the sum of the ledger per (user, asset,
//! bucket); and every settlement batch (`settlement`): one row per day the
//! engine settled and none for another day, its figures and details equal
//! to the same computation done again now. Zero differences is the
//! expected result.

use std::collections::BTreeMap;

use engine::Event;
use tokio_postgres::Client;

use crate::replica::{self, DataDir, ReplicaError};

mod settlement;

pub use settlement::SettlementDifference;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Postgres: {}", crate::migrate::describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("no persister checkpoint in the database: nothing was persisted yet")]
    NoCheckpoint,
    #[error("the journal ends at {journal} but the checkpoint is {checkpoint}")]
    JournalShort { checkpoint: u64, journal: u64 },
    #[error("the ledger writer is at seq {ledger}, behind the core writer at {core}: let the persister catch up (or start it), then reconcile again")]
    LedgerBehind { ledger: u64, core: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// An account's balance or ledger sum.
    Account {
        user: u64,
        asset: u32,
        /// `available`, `frozen`, `ledger AVAILABLE`, `ledger FROZEN`, or
        /// `ledger rows without an account row`.
        what: &'static str,
        /// In base units of the asset.
        engine: u128,
        postgres: i128,
    },
    /// A settlement batch or one of its details.
    Settlement(SettlementDifference),
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Account {
                user,
                asset,
                what,
                engine,
                postgres,
            } => write!(
                f,
                "user {user} asset {asset} {what}: engine {engine} != postgres {postgres} (base units)"
            ),
            Difference::Settlement(d) => d.fmt(f),
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub seq: u64,
    pub accounts_checked: usize,
    /// Settled days compared (the engine's and Postgres' together).
    pub settlements_checked: usize,
    pub differences: Vec<Difference>,
}

type Key = (u64, u32);

/// Compare Postgres with the replica at the `core` writer's checkpoint
/// (the lowest one when a single writer runs; the ledger's rows are taken
/// up to the same seq). Reads
/// Postgres in one REPEATABLE READ transaction (held open while the
/// replica is rebuilt, so the settlement checks see the same snapshot).
pub async fn reconcile(client: &mut Client, data: &DataDir) -> Result<Report, ReconcileError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let row = tx
        // The checkpoint of the domain that owns accounts and the ledger
        // (`core`). One writer of every domain moves all checkpoints
        // together, so this is also the lowest; split writers may differ,
        // and the accounts are exactly at `core`'s.
        .query_one(
            "SELECT max(last_seq) FROM persister_checkpoints WHERE writer = 'core'",
            &[],
        )
        .await?;
    let seq = row
        .get::<_, Option<i64>>(0)
        .ok_or(ReconcileError::NoCheckpoint)? as u64;
    // Split writers keep the ledger on its own checkpoint; it must have
    // reached `core`'s, and its rows after that seq are left out (a row's
    // id is its record's seq << ROW_ID_SHIFT | index). No `ledger` row:
    // the core writer wrote the ledger (before 0013), so it is at `core`.
    let ledger_at = tx
        .query_one(
            "SELECT max(last_seq) FROM persister_checkpoints WHERE writer = 'ledger'",
            &[],
        )
        .await?
        .get::<_, Option<i64>>(0)
        .map_or(seq, |s| s as u64);
    if ledger_at < seq {
        return Err(ReconcileError::LedgerBehind {
            ledger: ledger_at,
            core: seq,
        });
    }
    let ledger_end = if ledger_at > seq {
        i64::try_from(u128::from(seq + 1) << crate::rows::ROW_ID_SHIFT).unwrap_or(i64::MAX)
    } else {
        // Level with `core`: every row counts, so one with an id no
        // record of the journal can have is a difference too.
        i64::MAX
    };
    // Integers of base units, computed in SQL from the exact NUMERICs.
    let units = |col: &str| format!("trunc({col} * power(10::numeric, s.decimals))::text");
    let accounts = tx
        .query(
            &format!(
                "SELECT a.user_id, a.asset_id, {}, {} FROM accounts a JOIN assets s ON s.id = a.asset_id",
                units("a.available_balance"),
                units("a.frozen_balance")
            ),
            &[],
        )
        .await?;
    let ledger = tx
        .query(
            &format!(
                "SELECT t.user_id, t.asset_id, t.balance_type, {} FROM
                   (SELECT user_id, asset_id, balance_type, sum(amount) AS total
                    FROM transactions WHERE id < $1 GROUP BY 1, 2, 3) t
                 JOIN assets s ON s.id = t.asset_id",
                units("t.total")
            ),
            &[&ledger_end],
        )
        .await?;

    let parse = |s: &str| s.parse::<i128>().unwrap_or(i128::MIN);
    let mut pg: BTreeMap<Key, [i128; 4]> = BTreeMap::new();
    let mut has_account = std::collections::BTreeSet::<Key>::new();
    for r in &accounts {
        let k = (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u32);
        has_account.insert(k);
        let e = pg.entry(k).or_default();
        e[0] = parse(r.get(2));
        e[1] = parse(r.get(3));
    }
    for r in &ledger {
        let k = (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u32);
        let bt: &str = r.get(2);
        let e = pg.entry(k).or_default();
        e[if bt == "FROZEN" { 3 } else { 2 }] = parse(r.get(3));
    }

    let (mut engine, _, _) = replica::load_snapshot(&data.snapshots(), seq)?;
    // Settling records replayed here: their seq and trade id bound.
    let mut seen = settlement::Seen::new();
    let mut next_trade = engine.next_trade_id();
    replica::replay(
        &mut engine,
        &data.journal(),
        seq,
        Some(seq),
        |at, _, _, events| {
            for ev in events {
                match ev {
                    Event::Trade(t) => next_trade = next_trade.max(t.id.0 + 1),
                    Event::SettlementRequested { date, .. } => {
                        seen.insert(*date, (at, next_trade));
                    }
                    _ => {}
                }
            }
        },
        |_| {},
    )?;
    if engine.last_seq() != seq {
        return Err(ReconcileError::JournalShort {
            checkpoint: seq,
            journal: engine.last_seq(),
        });
    }
    let mut eng: BTreeMap<Key, [u128; 2]> = BTreeMap::new();
    for u in engine.users() {
        for (a, b) in &u.balances {
            eng.insert((u.id.0, a.0), [b.available as u128, b.frozen as u128]);
        }
    }
    let mut differences = Vec::new();
    let keys: std::collections::BTreeSet<Key> = pg.keys().chain(eng.keys()).copied().collect();
    for k in &keys {
        let e = eng.get(k).copied().unwrap_or_default();
        let p = pg.get(k).copied().unwrap_or_default();
        for (i, what) in ["available", "frozen", "ledger AVAILABLE", "ledger FROZEN"]
            .into_iter()
            .enumerate()
        {
            let ev = e[i % 2];
            if ev as i128 != p[i] {
                differences.push(Difference::Account {
                    user: k.0,
                    asset: k.1,
                    what,
                    engine: ev,
                    postgres: p[i],
                });
            }
        }
    }
    // The ledger has no row-by-row foreign key to `accounts` (0012): a
    // ledger row of an account Postgres does not hold is a difference even
    // when its amounts net to zero.
    for (k, p) in &pg {
        if !has_account.contains(k) {
            differences.push(Difference::Account {
                user: k.0,
                asset: k.1,
                what: "ledger rows without an account row",
                engine: eng.get(k).map_or(0, |e| e[0] + e[1]),
                postgres: p[2] + p[3],
            });
        }
    }
    let mut settled = Vec::new();
    let settlements_checked = settlement::check(&tx, &engine, &seen, &mut settled).await?;
    tx.commit().await?;
    differences.extend(settled.into_iter().map(Difference::Settlement));
    Ok(Report {
        seq,
        accounts_checked: keys.len(),
        settlements_checked,
        differences,
    })
}

/// [`reconcile`] over a new connection to `database_url` (inside a tokio runtime).
pub async fn reconcile_url(database_url: &str, data: &DataDir) -> Result<Report, ReconcileError> {
    let (mut client, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(conn);
    let report = reconcile(&mut client, data).await;
    drop(client);
    let _ = driver.await;
    report
}
