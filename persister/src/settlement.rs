//! Settlement batches: when a journal record settled a UTC day
//! (`Event::SettlementRequested`), the batch's transaction also writes its
//! `settlement_batches` row and one `settlement_details` row per (user,
//! asset) that moved that day, computed in SQL from the ledger
//! (`transactions`) and the day's `trades` by one statement (`INSERT ...
//! SELECT`), queued after every other row of the batch and before the
//! checkpoint.
//!
//! Exactly once and deterministic: the engine accepts a day only once it is
//! over at the command's journal time, so every ledger row of that day has a
//! smaller sequence number (journal time never goes backwards) and is
//! already committed or earlier in this transaction. The statement reads
//! only rows below the command (ledger ids `< seq << 16`, trade ids below
//! the engine's next trade id at the command), so a batch rebuilt after a
//! crash, cut at other record boundaries, writes the same rows. Row ids:
//! details `batch id << 32 | n`, n counting (user, asset) in order. No
//! wall clock: `started_at`, `completed_at`, `created_at` are the command's
//! journal time.
//!
//! Cross-writer read: the gross amounts and fees come from `trades`, so the
//! day's trades must be committed when the batch is. Today one writer
//! writes every table in one transaction. Where writers are split by table
//! domain (trades in another writer's transaction), the writer of the
//! settlement tables must first wait until the trades writer's checkpoint
//! has reached the batch's last seq, exactly as a klines/ticker batch waits
//! for it; the trade id bound already keeps later trades out.
//!
//! Per (user, asset) (migrations/0011_settlement.sql):
//! * opening / closing = available + frozen: per bucket, `balance_before`
//!   of the day's first row / `balance_after` of its last, or for a bucket
//!   without rows that day the latest `balance_after` before the day, or 0;
//! * from the day's trades: bought and sold (gross), trading fees paid;
//!   trade_amount = bought - sold, net_amount = trade_amount - fee;
//! * from the ledger: fee income (FEE_INCOME, WITHDRAWAL_FEE rows),
//!   deposits, withdrawals (WITHDRAWAL rows without the fee the fee account
//!   received for the same withdrawal), withdrawal fees paid, adjustments;
//! * difference = closing - (opening + net + fee income + deposits -
//!   withdrawals - withdrawal fees + adjustments): 0 when the ledger's own
//!   chain of balances and the trades agree.
//!
//! Outbox: the batch's `outbox_events` row (`settlement.completed` or
//! `settlement.failed`, aggregate SETTLEMENT / batch id; payload: date,
//! status, totals, account and finding counts) is written by the next
//! statement of the same transaction from the batch row just inserted.
//! Batches and the outbox are both `core` tables, so they share the
//! writer, the transaction and the checkpoint: a writer killed and
//! restarted rewrites the whole batch or nothing, and the row id comes from
//! the command's record like every outbox id (exactly once).
//!
//! Reconciliation (`reconciliation_result`, `difference_count`): details
//! with a difference; opening gaps (a bucket's first `balance_before` of the
//! day differs from its last `balance_after` before the day); and per
//! asset: trades that do not net to zero (bought != sold), fees paid !=
//! fee income, and the conservation rule (closing - opening = deposits -
//! withdrawals + adjustments summed over the accounts). Any finding makes
//! the batch FAILED with a summary in `error_message`; none, COMPLETED.

use std::time::SystemTime;

use crate::rows::{ts, ROW_ID_SHIFT};
use crate::sql::{bx, Pipeline};

/// A day settled by one journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettlementRow {
    pub id: u64,
    /// UTC day number.
    pub date: u32,
    pub requested_by: u64,
    /// Journal time of the command (ms).
    pub ts_ms: u64,
    /// Journal seq of the command.
    pub seq: u64,
    /// The engine's next trade id after the command: the day's trades are
    /// below it.
    pub trade_bound: u64,
    /// Id of the batch's `outbox_events` row (a row id of the command's
    /// record, `seq << ROW_ID_SHIFT | n`, like every outbox row).
    pub outbox_id: i64,
}

/// Details of batch `b`: ids from `b << DETAIL_ID_SHIFT`.
pub const DETAIL_ID_SHIFT: u32 = 32;

/// The computation of a batch, as the opening CTEs of a `WITH` (`r` ...
/// `f`, no trailing comma): `dd` holds the details, `js`/`mm`/`tt`/`f` the
/// batch's figures and findings. Reads only; shared by [`SETTLE`] (which
/// inserts them) and `reconcile` (which computes them again and compares).
/// Uses parameters $3 day start, $4 day end, $5 ledger id bound, $6 trade
/// id bound.
macro_rules! settle_ctes {
    () => {
        "WITH r AS MATERIALIZED (
        SELECT id, user_id, asset_id, type, balance_type, amount, balance_before,
            balance_after, reference_id
        FROM transactions
        WHERE created_at >= $3::timestamptz AND created_at < $4::timestamptz
          AND id < $5::bigint),
    tr AS MATERIALIZED (
        SELECT t.buyer_user_id, t.seller_user_id, t.amount, t.quote_amount, t.buyer_fee,
            t.seller_fee, t.buyer_fee_asset_id, t.seller_fee_asset_id,
            tp.base_asset_id AS base, tp.quote_asset_id AS quote
        FROM trades t JOIN trading_pairs tp ON tp.id = t.trading_pair_id
        WHERE t.created_at >= $3::timestamptz AND t.created_at < $4::timestamptz
          AND t.id < $6::bigint),
    legs AS (
        SELECT buyer_user_id AS user_id, base AS asset_id, amount AS bought,
            0::numeric AS sold, 0::numeric AS fee FROM tr
        UNION ALL SELECT buyer_user_id, quote, 0, quote_amount, 0 FROM tr
        UNION ALL SELECT seller_user_id, base, 0, amount, 0 FROM tr
        UNION ALL SELECT seller_user_id, quote, quote_amount, 0, 0 FROM tr
        UNION ALL SELECT buyer_user_id, buyer_fee_asset_id, 0, 0, buyer_fee FROM tr
            WHERE buyer_fee > 0
        UNION ALL SELECT seller_user_id, seller_fee_asset_id, 0, 0, seller_fee FROM tr
            WHERE seller_fee > 0),
    tl AS (
        SELECT user_id, asset_id, sum(bought) AS bought, sum(sold) AS sold, sum(fee) AS fee
        FROM legs GROUP BY user_id, asset_id),
    wf AS (
        SELECT reference_id, sum(amount) AS fee FROM r
        WHERE type = 'WITHDRAWAL_FEE' GROUP BY reference_id),
    wd AS (
        SELECT w.user_id, w.asset_id, sum(-w.moved - COALESCE(wf.fee, 0)) AS sent,
            sum(COALESCE(wf.fee, 0)) AS fee
        FROM (SELECT user_id, asset_id, reference_id, sum(amount) AS moved FROM r
              WHERE type = 'WITHDRAWAL' GROUP BY user_id, asset_id, reference_id) w
        LEFT JOIN wf ON wf.reference_id = w.reference_id
        GROUP BY w.user_id, w.asset_id),
    ty AS (
        SELECT user_id, asset_id,
            COALESCE(sum(amount) FILTER (WHERE type IN ('FEE_INCOME', 'WITHDRAWAL_FEE')), 0)
                AS fee_income,
            COALESCE(sum(amount) FILTER (WHERE type = 'DEPOSIT'), 0) AS deposits,
            COALESCE(sum(amount) FILTER (WHERE type = 'ADJUSTMENT'), 0) AS adjustments,
            min(id) AS first_id
        FROM r GROUP BY user_id, asset_id),
    bk AS (
        SELECT user_id, asset_id, balance_type,
            (array_agg(balance_before ORDER BY id))[1] AS first_before,
            (array_agg(balance_after ORDER BY id DESC))[1] AS last_after
        FROM r GROUP BY user_id, asset_id, balance_type),
    acct AS (
        SELECT user_id, asset_id FROM ty UNION SELECT user_id, asset_id FROM tl),
    bal AS (
        SELECT a.user_id, a.asset_id,
            sum(COALESCE(bk.first_before, prev.after, 0)) AS opening,
            sum(COALESCE(bk.last_after, prev.after, 0)) AS closing,
            count(*) FILTER (WHERE bk.first_before <> COALESCE(prev.after, 0)) AS gaps
        FROM acct a
        CROSS JOIN (VALUES ('AVAILABLE'), ('FROZEN')) AS b(bt)
        LEFT JOIN ty ON ty.user_id = a.user_id AND ty.asset_id = a.asset_id
        LEFT JOIN bk ON bk.user_id = a.user_id AND bk.asset_id = a.asset_id
            AND bk.balance_type = b.bt
        LEFT JOIN LATERAL (
            SELECT x.balance_after AS after FROM transactions x
            WHERE x.user_id = a.user_id AND x.asset_id = a.asset_id AND x.balance_type = b.bt
              AND x.id < COALESCE(ty.first_id, $5::bigint) AND x.created_at < $3::timestamptz
            ORDER BY x.id DESC LIMIT 1) prev ON true
        GROUP BY a.user_id, a.asset_id),
    d AS (
        SELECT a.user_id, a.asset_id, bal.opening, bal.closing, bal.gaps,
            COALESCE(tl.bought, 0) AS bought, COALESCE(tl.sold, 0) AS sold,
            COALESCE(tl.fee, 0) AS fee, COALESCE(ty.fee_income, 0) AS fee_income,
            COALESCE(ty.deposits, 0) AS deposits, COALESCE(wd.sent, 0) AS withdrawals,
            COALESCE(wd.fee, 0) AS withdrawal_fees, COALESCE(ty.adjustments, 0) AS adjustments
        FROM acct a
        JOIN bal ON bal.user_id = a.user_id AND bal.asset_id = a.asset_id
        LEFT JOIN tl ON tl.user_id = a.user_id AND tl.asset_id = a.asset_id
        LEFT JOIN ty ON ty.user_id = a.user_id AND ty.asset_id = a.asset_id
        LEFT JOIN wd ON wd.user_id = a.user_id AND wd.asset_id = a.asset_id),
    dd AS (
        SELECT d.*, d.bought - d.sold AS trade, d.bought - d.sold - d.fee AS net,
            d.closing - (d.opening + (d.bought - d.sold - d.fee) + d.fee_income + d.deposits
                - d.withdrawals - d.withdrawal_fees + d.adjustments) AS difference,
            row_number() OVER (ORDER BY d.user_id, d.asset_id) AS n
        FROM d),
    pa AS (
        SELECT asset_id, count(*) AS accounts, sum(opening) AS opening, sum(closing) AS closing,
            sum(bought) AS bought, sum(sold) AS sold, sum(fee) AS fees_paid,
            sum(withdrawal_fees) AS withdrawal_fees_paid, sum(fee_income) AS fee_income,
            sum(deposits) AS deposits, sum(withdrawals) AS withdrawals,
            sum(adjustments) AS adjustments,
            sum(bought) - sum(sold) AS trade_imbalance,
            sum(fee) + sum(withdrawal_fees) - sum(fee_income) AS fee_imbalance,
            sum(closing) - sum(opening) - (sum(deposits) - sum(withdrawals) + sum(adjustments))
                AS supply_difference,
            count(*) FILTER (WHERE difference <> 0) AS mismatches,
            sum(gaps)::bigint AS gaps
        FROM dd GROUP BY asset_id),
    js AS (
        SELECT COALESCE(jsonb_agg(jsonb_build_object(
                'asset_id', pa.asset_id, 'asset', a.symbol, 'accounts', pa.accounts,
                'opening', round(pa.opening, s.scale)::text,
                'closing', round(pa.closing, s.scale)::text,
                'bought', round(pa.bought, s.scale)::text,
                'sold', round(pa.sold, s.scale)::text,
                'fees_paid', round(pa.fees_paid, s.scale)::text,
                'withdrawal_fees_paid', round(pa.withdrawal_fees_paid, s.scale)::text,
                'fee_income', round(pa.fee_income, s.scale)::text,
                'deposits', round(pa.deposits, s.scale)::text,
                'withdrawals', round(pa.withdrawals, s.scale)::text,
                'adjustments', round(pa.adjustments, s.scale)::text,
                'trade_imbalance', trim_scale(pa.trade_imbalance)::text,
                'fee_imbalance', trim_scale(pa.fee_imbalance)::text,
                'supply_difference', trim_scale(pa.supply_difference)::text,
                'balance_mismatches', pa.mismatches, 'opening_gaps', pa.gaps)
                ORDER BY pa.asset_id), '[]'::jsonb) AS assets,
            COALESCE(sum(pa.accounts), 0)::bigint AS accounts,
            COALESCE(sum(pa.mismatches), 0)::bigint AS mismatches,
            COALESCE(sum(pa.gaps), 0)::bigint AS gaps,
            count(*) FILTER (WHERE pa.trade_imbalance <> 0) AS trade_imbalanced,
            count(*) FILTER (WHERE pa.fee_imbalance <> 0) AS fee_imbalanced,
            count(*) FILTER (WHERE pa.supply_difference <> 0) AS supply_imbalanced
        FROM pa
        LEFT JOIN assets a ON a.id = pa.asset_id
        CROSS JOIN LATERAL (SELECT COALESCE(a.decimals, 18)::int AS scale) s),
    mm AS (
        SELECT COALESCE(jsonb_agg(jsonb_build_object(
                'user_id', x.user_id, 'asset_id', x.asset_id,
                'difference', trim_scale(x.difference)::text, 'opening_gaps', x.gaps)
                ORDER BY x.user_id, x.asset_id), '[]'::jsonb) AS list
        FROM (SELECT user_id, asset_id, difference, gaps FROM dd
              WHERE difference <> 0 OR gaps > 0
              ORDER BY user_id, asset_id LIMIT 100) x),
    tt AS (
        SELECT count(*) AS trades, COALESCE(sum(quote_amount), 0) AS volume FROM tr),
    f AS (
        SELECT js.mismatches + js.gaps + js.trade_imbalanced + js.fee_imbalanced
            + js.supply_imbalanced AS n FROM js)"
    };
}
pub(crate) use settle_ctes;

/// Parameters: $1 batch id, $2 date (text), $3 day start, $4 day end,
/// $5 ledger id bound, $6 trade id bound, $7 command time, $8 requested
/// by, $9 journal seq.
pub const SETTLE: &str = concat!(
    settle_ctes!(),
    ",
    ins AS (
        INSERT INTO settlement_details (id, batch_id, user_id, asset_id, trade_amount,
            fee_amount, net_amount, opening_balance, bought_amount, sold_amount,
            fee_income_amount, deposit_amount, withdrawal_amount, withdrawal_fee_amount,
            adjustment_amount, closing_balance, difference, created_at)
        SELECT ($1::bigint << 32) + n, $1::bigint, user_id, asset_id, trade, fee, net, opening,
            bought, sold, fee_income, deposits, withdrawals, withdrawal_fees, adjustments,
            closing, difference, $7::timestamptz
        FROM dd)
    INSERT INTO settlement_batches (id, batch_date, status, total_trades, total_volume,
        reconciliation_result, error_message, started_at, completed_at, version, created_at,
        updated_at, requested_by, journal_seq, account_count, difference_count)
    SELECT $1::bigint, $2::text::date, CASE WHEN f.n = 0 THEN 'COMPLETED' ELSE 'FAILED' END,
        tt.trades, tt.volume,
        jsonb_build_object('balanced', f.n = 0, 'differences', f.n, 'accounts', js.accounts,
            'ledger_rows', (SELECT count(*) FROM r), 'trades', tt.trades,
            'balance_mismatches', js.mismatches, 'opening_gaps', js.gaps,
            'assets', js.assets, 'mismatched', mm.list, 'trade_id_bound', $6::bigint),
        CASE WHEN f.n = 0 THEN NULL ELSE format(
            'reconciliation found %s difference(s): %s account(s) whose movements do not explain the closing balance, %s opening gap(s), %s asset(s) whose trades do not net to zero, %s whose fees paid differ from the fee income, %s whose supply change differs from deposits - withdrawals + adjustments',
            f.n, js.mismatches, js.gaps, js.trade_imbalanced, js.fee_imbalanced,
            js.supply_imbalanced) END,
        $7::timestamptz, $7::timestamptz, $9::bigint, $7::timestamptz, $7::timestamptz,
        $8::bigint, $9::bigint, js.accounts, f.n
    FROM js, mm, tt, f"
);

/// The batch's outbox event, from the row [`SETTLE`] has just written in
/// the same transaction (so the status and totals are the stored ones):
/// `settlement.completed` or `settlement.failed`, aggregate SETTLEMENT /
/// batch id. Parameters: $1 batch id, $2 outbox row id.
pub const SETTLE_OUTBOX: &str = "INSERT INTO outbox_events (id, aggregate_type, aggregate_id,
        event_type, event_data, status, created_at)
    SELECT $2::bigint, 'SETTLEMENT', b.id,
        CASE WHEN b.status = 'COMPLETED' THEN 'settlement.completed' ELSE 'settlement.failed' END,
        jsonb_build_object('batch_id', b.id, 'date', b.batch_date::text, 'status', b.status,
            'total_trades', b.total_trades, 'total_volume', trim_scale(b.total_volume)::text,
            'accounts', b.account_count, 'differences', b.difference_count,
            'requested_by', b.requested_by, 'journal_seq', b.journal_seq),
        'PENDING', b.created_at
    FROM settlement_batches b WHERE b.id = $1::bigint";

/// Queue the statements of a batch's settlements (after its other rows):
/// per settlement its batch and details, then its outbox event.
pub fn push(p: &mut Pipeline<'_>, settlements: &[SettlementRow]) {
    for s in settlements {
        let day_start_ms = s.date as u64 * engine::settlement::DAY_MS;
        let t0: SystemTime = ts(day_start_ms);
        let t1: SystemTime = ts(day_start_ms + engine::settlement::DAY_MS);
        p.push(
            SETTLE,
            vec![
                bx(s.id as i64),
                bx(engine::settlement::format_date(s.date)),
                bx(t0),
                bx(t1),
                bx((s.seq << ROW_ID_SHIFT) as i64),
                bx(s.trade_bound as i64),
                bx(ts(s.ts_ms)),
                bx(s.requested_by as i64),
                bx(s.seq as i64),
            ],
        );
        p.push(SETTLE_OUTBOX, vec![bx(s.id as i64), bx(s.outbox_id)]);
    }
}
