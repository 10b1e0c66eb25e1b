//! Reconciliation of settlement batches: the days the engine replica has
//! settled at the checkpoint against `settlement_batches` /
//! `settlement_details` in Postgres.
//!
//! * Every day the engine settled has exactly one batch row, with the
//!   engine's batch id, requester and command time; no batch row names a
//!   day the engine never settled.
//! * Every batch is computed again now, by the same SQL that wrote it
//!   ([`crate::settlement`]'s CTEs) over the same rows (ledger ids below the
//!   command's `journal_seq << 16`, trades below the command's trade id
//!   bound): the stored details must equal the recomputed ones row for row
//!   and column for column (a missing or extra (user, asset) included), and
//!   the stored status, trade count, volume, account and finding counts the
//!   recomputed ones. The ledger is append-only and the bounds exclude every
//!   later record, so a batch that was right when written stays equal.
//! * A batch that is not COMPLETED is reported too: it found differences
//!   in the ledger when it ran.
//!
//! Bounds: the command's seq and trade id bound come from the replay when
//! the command lies after the replica's snapshot (`seen`), otherwise from
//! the batch row (`journal_seq`, `reconciliation_result.trade_id_bound`);
//! a batch written before the bound was stored is computed with the day's
//! time window alone (equal unless the host clock stepped back across a
//! midnight).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use engine::settlement::{format_date, DAY_MS};
use engine::Engine;
use tokio_postgres::Transaction;

use crate::rows::{ts, ROW_ID_SHIFT};
use crate::settlement::settle_ctes;

/// What the replay saw of a settling record: (journal seq, trade id bound).
pub(super) type Seen = BTreeMap<u32, (u64, u64)>;

/// One settlement finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementDifference {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// (user, asset) of a detail row.
    pub account: Option<(u64, u32)>,
    /// The column or fact compared.
    pub what: String,
    /// What the engine says or the recomputation gives.
    pub expected: String,
    /// What Postgres holds.
    pub postgres: String,
}

impl std::fmt::Display for SettlementDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "settlement {}", self.date)?;
        if let Some((user, asset)) = self.account {
            write!(f, " user {user} asset {asset}")?;
        }
        write!(
            f,
            " {}: expected {} != postgres {}",
            self.what, self.expected, self.postgres
        )
    }
}

/// Detail columns: (stored column, recomputed CTE column).
const DETAIL_COLUMNS: [(&str, &str); 13] = [
    ("trade_amount", "trade"),
    ("fee_amount", "fee"),
    ("net_amount", "net"),
    ("opening_balance", "opening"),
    ("bought_amount", "bought"),
    ("sold_amount", "sold"),
    ("fee_income_amount", "fee_income"),
    ("deposit_amount", "deposits"),
    ("withdrawal_amount", "withdrawals"),
    ("withdrawal_fee_amount", "withdrawal_fees"),
    ("adjustment_amount", "adjustments"),
    ("closing_balance", "closing"),
    ("difference", "difference"),
];

/// The batch figures computed again. Parameters as [`crate::settlement::SETTLE`]
/// ($1 batch id, $2 date, $3..$6 window and bounds).
const RECOMPUTE_BATCH: &str = concat!(
    settle_ctes!(),
    "
    SELECT $2::text, CASE WHEN f.n = 0 THEN 'COMPLETED' ELSE 'FAILED' END, tt.trades,
        trim_scale(tt.volume)::text, js.accounts, f.n, $1::bigint
    FROM js, tt, f"
);

/// Stored details that differ from the recomputed ones ($1 batch id).
fn recompute_details_sql() -> String {
    let stored: Vec<String> = DETAIL_COLUMNS
        .iter()
        .map(|(s, _)| format!("s.{s}"))
        .collect();
    let again: Vec<String> = DETAIL_COLUMNS
        .iter()
        .map(|(_, d)| format!("dd.{d}"))
        .collect();
    let text = |cols: &[String]| {
        cols.iter()
            .map(|c| format!("trim_scale({c})::text"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{},
    s AS (SELECT * FROM settlement_details WHERE batch_id = $1::bigint)
    SELECT $2::text, COALESCE(dd.user_id, s.user_id), COALESCE(dd.asset_id, s.asset_id),
        dd.user_id IS NOT NULL, s.user_id IS NOT NULL,
        ARRAY[{}]::text[], ARRAY[{}]::text[]
    FROM dd FULL JOIN s ON s.user_id = dd.user_id AND s.asset_id = dd.asset_id
    WHERE dd.user_id IS NULL OR s.user_id IS NULL OR ({}) IS DISTINCT FROM ({})
    ORDER BY 2, 3",
        settle_ctes!(),
        text(&again),
        text(&stored),
        again.join(", "),
        stored.join(", ")
    )
}

struct BatchRow {
    id: i64,
    date: String,
    status: String,
    requested_by: Option<i64>,
    journal_seq: Option<i64>,
    started_ms: Option<i64>,
    error: Option<String>,
    trades: i64,
    volume: String,
    accounts: i64,
    findings: i64,
    trade_bound: Option<i64>,
}

/// Compare the engine's settled days with Postgres (inside the
/// reconciliation's REPEATABLE READ transaction). Returns the number of
/// settlements checked (engine's and Postgres' days together).
pub(super) async fn check(
    tx: &Transaction<'_>,
    engine: &Engine,
    seen: &Seen,
    out: &mut Vec<SettlementDifference>,
) -> Result<usize, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT id, batch_date::text, status, requested_by, journal_seq,
                (extract(epoch FROM started_at) * 1000)::bigint, error_message, total_trades,
                trim_scale(total_volume)::text, account_count, difference_count,
                (reconciliation_result ->> 'trade_id_bound')::bigint
             FROM settlement_batches ORDER BY batch_date, id",
            &[],
        )
        .await?;
    let mut pg: BTreeMap<String, Vec<BatchRow>> = BTreeMap::new();
    for r in &rows {
        let b = BatchRow {
            id: r.get(0),
            date: r.get(1),
            status: r.get(2),
            requested_by: r.get(3),
            journal_seq: r.get(4),
            started_ms: r.get(5),
            error: r.get(6),
            trades: r.get(7),
            volume: r.get(8),
            accounts: r.get(9),
            findings: r.get(10),
            trade_bound: r.get(11),
        };
        pg.entry(b.date.clone()).or_default().push(b);
    }
    let eng: BTreeMap<String, &engine::settlement::Settlement> = engine
        .settlements()
        .map(|s| (format_date(s.date), s))
        .collect();
    let dates: BTreeSet<&String> = pg.keys().chain(eng.keys()).collect();
    let details_sql = recompute_details_sql();
    for date in &dates {
        let diff = |account, what: &str, expected: String, postgres: String| SettlementDifference {
            date: (*date).clone(),
            account,
            what: what.to_owned(),
            expected,
            postgres,
        };
        let batches = pg.get(*date).map(Vec::as_slice).unwrap_or_default();
        let Some(s) = eng.get(*date) else {
            for b in batches {
                out.push(diff(
                    None,
                    "batch row",
                    "none (the engine never settled this day)".into(),
                    format!("batch {} ({})", b.id, b.status),
                ));
            }
            continue;
        };
        let b = match batches {
            [] => {
                out.push(diff(
                    None,
                    "batch row",
                    format!("batch {}", s.id),
                    "none".into(),
                ));
                continue;
            }
            [b] => b,
            many => {
                out.push(diff(None, "batch rows", "1".into(), many.len().to_string()));
                continue;
            }
        };
        let mut same = |what: &str, expected: String, postgres: String| {
            if expected != postgres {
                out.push(diff(None, what, expected, postgres));
            }
        };
        let opt = |v: Option<i64>| v.map_or("NULL".to_owned(), |v| v.to_string());
        same("batch id", s.id.to_string(), b.id.to_string());
        same(
            "requested_by",
            s.requested_by.0.to_string(),
            opt(b.requested_by),
        );
        same(
            "started_at (ms)",
            s.requested_ms.to_string(),
            opt(b.started_ms),
        );
        let (seq, trade_bound) = match seen.get(&s.date) {
            Some(&(seq, bound)) => {
                same("journal_seq", seq.to_string(), opt(b.journal_seq));
                (Some(seq), Some(bound))
            }
            None => (
                b.journal_seq.map(|v| v as u64),
                b.trade_bound.map(|v| v as u64),
            ),
        };
        if b.status != "COMPLETED" {
            out.push(diff(
                None,
                "status",
                "COMPLETED".into(),
                format!(
                    "{} ({})",
                    b.status,
                    b.error.as_deref().unwrap_or("no message")
                ),
            ));
        }
        let Some(seq) = seq else {
            out.push(diff(
                None,
                "journal_seq",
                "the settling record's seq".into(),
                "NULL (cannot compute the batch again)".into(),
            ));
            continue;
        };
        let day0 = s.date as u64 * DAY_MS;
        let (t0, t1): (SystemTime, SystemTime) = (ts(day0), ts(day0 + DAY_MS));
        let ledger_bound = (seq << ROW_ID_SHIFT) as i64;
        let trade_bound = trade_bound.map_or(i64::MAX, |v| v as i64);
        let r = tx
            .query_one(
                RECOMPUTE_BATCH,
                &[&b.id, *date, &t0, &t1, &ledger_bound, &trade_bound],
            )
            .await?;
        let (status, trades, volume, accounts, findings): (String, i64, String, i64, i64) =
            (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        // Figures of the stored batch against the recomputation (the status
        // of a non-COMPLETED batch is reported above already).
        let mut same = |what: &str, expected: String, postgres: String| {
            if expected != postgres {
                out.push(diff(
                    None,
                    &format!("{what} (recomputed)"),
                    expected,
                    postgres,
                ));
            }
        };
        same("status", status, b.status.clone());
        same("total_trades", trades.to_string(), b.trades.to_string());
        same("total_volume", volume, b.volume.clone());
        same(
            "account_count",
            accounts.to_string(),
            b.accounts.to_string(),
        );
        same(
            "difference_count",
            findings.to_string(),
            b.findings.to_string(),
        );
        for r in tx
            .query(
                details_sql.as_str(),
                &[&b.id, *date, &t0, &t1, &ledger_bound, &trade_bound],
            )
            .await?
        {
            let account = Some((r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u32));
            let (computed, stored): (bool, bool) = (r.get(3), r.get(4));
            if !computed || !stored {
                out.push(diff(
                    account,
                    "detail row",
                    if computed { "present" } else { "none" }.into(),
                    if stored { "present" } else { "none" }.into(),
                ));
                continue;
            }
            let again: Vec<Option<String>> = r.get(5);
            let kept: Vec<Option<String>> = r.get(6);
            for ((col, _), (e, p)) in DETAIL_COLUMNS.iter().zip(again.into_iter().zip(kept)) {
                if e != p {
                    let show = |v: Option<String>| v.unwrap_or_else(|| "NULL".into());
                    out.push(diff(account, col, show(e), show(p)));
                }
            }
        }
    }
    Ok(dates.len())
}
