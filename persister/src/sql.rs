//! The statements of one batch: multi-row UNNEST inserts/updates whose
//! values are all bind parameters (numeric columns travel as text arrays and
//! are cast in SQL, timestamps as `timestamptz[]`), prepared once per
//! connection and sent as one [`Pipeline`]. The ledger, the outbox and
//! trades go through binary COPY instead when a batch has many of them
//! ([`crate::copy`]).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::SystemTime;

use engine::{Engine, KycStatus, PairStatus, UserId, UserStatus};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Statement, Transaction};

use crate::copy;
use crate::rows::{self, dec, ts, Batch};

const USERS: &str = "INSERT INTO users (id, username, email, password_hash, status, kyc_level,
        failed_login_attempts, locked_until, last_login_at, version, created_at, updated_at)
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::int2[], $7::int4[], $8::timestamptz[], $9::timestamptz[], $10::bigint[],
        $11::timestamptz[], $12::timestamptz[])
    ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, email = EXCLUDED.email,
        password_hash = EXCLUDED.password_hash, status = EXCLUDED.status,
        kyc_level = EXCLUDED.kyc_level, failed_login_attempts = EXCLUDED.failed_login_attempts,
        locked_until = EXCLUDED.locked_until,
        last_login_at = COALESCE(EXCLUDED.last_login_at, users.last_login_at),
        version = EXCLUDED.version, updated_at = EXCLUDED.updated_at";

const USER_ROLES_DELETE: &str = "DELETE FROM user_roles WHERE user_id = ANY($1::bigint[])";
const USER_ROLES: &str = "INSERT INTO user_roles (user_id, role_id, granted_at)
    SELECT u.user_id, r.id, u.at
    FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[]) AS u(user_id, role, at)
    JOIN roles r ON r.name = u.role";

/// Inserted on submission, updated by the review (status, notes, reviewer,
/// time); the document number stays the journaled ciphertext.
const KYC: &str = "INSERT INTO kyc_records (id, user_id, level, status, document_type,
        document_number, submitted_data, review_notes, reviewed_by, reviewed_at, version,
        created_at, updated_at)
    SELECT u.id, u.user_id, u.level, u.status, u.dt, u.doc, u.data::jsonb, u.notes, u.rb, u.ra,
        u.v, u.created, u.updated
    FROM UNNEST($1::bigint[], $2::bigint[], $3::int2[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::bigint[], $10::timestamptz[], $11::bigint[],
        $12::timestamptz[], $13::timestamptz[])
        AS u(id, user_id, level, status, dt, doc, data, notes, rb, ra, v, created, updated)
    ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status,
        review_notes = EXCLUDED.review_notes, reviewed_by = EXCLUDED.reviewed_by,
        reviewed_at = EXCLUDED.reviewed_at, version = EXCLUDED.version,
        updated_at = EXCLUDED.updated_at";

const API_KEYS: &str = "INSERT INTO api_keys (id, user_id, api_key, label, key_type, permissions,
        secret_ciphertext, public_key, created_at, updated_at)
    SELECT u.id, u.user_id, u.api_key, u.label, u.key_type, u.perms::text[], u.secret, u.pk, u.at, u.at
    FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::bytea[], $8::text[], $9::timestamptz[])
        AS u(id, user_id, api_key, label, key_type, perms, secret, pk, at)";
const API_KEYS_REVOKE: &str = "UPDATE api_keys a SET revoked_at = u.at, updated_at = u.at
    FROM UNNEST($1::bigint[], $2::timestamptz[]) AS u(id, at) WHERE a.id = u.id";

const ASSETS: &str = "INSERT INTO assets (id, symbol, name, type, decimals, is_active,
        min_withdraw_amount, withdraw_fee, daily_withdraw_limit, required_confirmations,
        version, created_at, updated_at)
    SELECT u.id, u.symbol, u.name, u.type, u.decimals, u.active, u.minw::numeric, u.fee::numeric,
        u.daily::numeric, u.conf, u.v, u.created, u.updated
    FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::bool[],
        $7::text[], $8::text[], $9::text[], $10::int4[], $11::bigint[], $12::timestamptz[],
        $13::timestamptz[])
        AS u(id, symbol, name, type, decimals, active, minw, fee, daily, conf, v, created, updated)
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, type = EXCLUDED.type,
        is_active = EXCLUDED.is_active, min_withdraw_amount = EXCLUDED.min_withdraw_amount,
        withdraw_fee = EXCLUDED.withdraw_fee, daily_withdraw_limit = EXCLUDED.daily_withdraw_limit,
        required_confirmations = EXCLUDED.required_confirmations, version = EXCLUDED.version,
        updated_at = EXCLUDED.updated_at";

const PAIRS: &str = "INSERT INTO trading_pairs (id, symbol, base_asset_id, quote_asset_id, status,
        min_order_amount, max_order_amount, price_precision, amount_precision, tick_size,
        step_size, min_notional, maker_fee, taker_fee, version, created_at, updated_at)
    SELECT u.id, u.symbol, u.base, u.quote, u.status, u.minq::numeric, u.maxq::numeric, u.pp, u.ap,
        u.tick::numeric, u.step::numeric, u.notional::numeric, u.maker::numeric, u.taker::numeric,
        u.v, u.created, u.updated
    FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],
        $7::text[], $8::int2[], $9::int2[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::bigint[], $16::timestamptz[], $17::timestamptz[])
        AS u(id, symbol, base, quote, status, minq, maxq, pp, ap, tick, step, notional, maker,
             taker, v, created, updated)
    ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status,
        min_order_amount = EXCLUDED.min_order_amount, max_order_amount = EXCLUDED.max_order_amount,
        min_notional = EXCLUDED.min_notional, maker_fee = EXCLUDED.maker_fee,
        taker_fee = EXCLUDED.taker_fee, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at";

const ACCOUNTS: &str = "INSERT INTO accounts (id, user_id, asset_id, available_balance,
        frozen_balance, version, created_at, updated_at)
    SELECT u.id, u.user_id, u.asset_id, u.av::numeric, u.fr::numeric, u.v, u.created, u.updated
    FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
        $7::timestamptz[], $8::timestamptz[]) AS u(id, user_id, asset_id, av, fr, v, created, updated)
    ON CONFLICT (user_id, asset_id) DO UPDATE SET available_balance = EXCLUDED.available_balance,
        frozen_balance = EXCLUDED.frozen_balance, version = EXCLUDED.version,
        updated_at = EXCLUDED.updated_at";

const LEDGER: &str = "INSERT INTO transactions (id, user_id, asset_id, type, balance_type, amount,
        balance_before, balance_after, reference_type, reference_id, description, created_at)
    SELECT u.id, u.user_id, u.asset_id, u.type, u.bt, u.amount::numeric, u.before::numeric,
        u.after::numeric, u.rt, u.rid, u.descr, u.at
    FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::timestamptz[])
        AS u(id, user_id, asset_id, type, bt, amount, before, after, rt, rid, descr, at)";

const FREEZES: &str = "INSERT INTO balance_freezes (id, user_id, asset_id, amount, reason,
        reference_type, reference_id, status, version, created_at, updated_at, released_at)
    SELECT u.id, u.user_id, u.asset_id, u.amount::numeric, u.reason, u.rt, u.rid, u.status, u.v,
        u.created, u.updated, u.released
    FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
        $7::bigint[], $8::text[], $9::bigint[], $10::timestamptz[], $11::timestamptz[],
        $12::timestamptz[])
        AS u(id, user_id, asset_id, amount, reason, rt, rid, status, v, created, updated, released)
    ON CONFLICT (id) DO UPDATE SET amount = balance_freezes.amount + EXCLUDED.amount,
        status = CASE WHEN EXCLUDED.status = 'RELEASED' THEN 'RELEASED' ELSE balance_freezes.status END,
        released_at = COALESCE(EXCLUDED.released_at, balance_freezes.released_at),
        version = EXCLUDED.version, updated_at = EXCLUDED.updated_at";
const FREEZES_RELEASE: &str = "UPDATE balance_freezes f SET status = 'RELEASED',
        released_at = u.at, updated_at = u.at, version = u.v
    FROM UNNEST($1::bigint[], $2::timestamptz[], $3::bigint[]) AS u(id, at, v)
    WHERE f.id = u.id AND f.status = 'ACTIVE'";

const DW: &str =
    "INSERT INTO deposit_withdrawals (id, user_id, asset_id, type, amount, fee, status,
        tx_hash, address, confirmations, required_confirmations, processed_at, version,
        created_at, updated_at)
    SELECT u.id, u.user_id, u.asset_id, u.type, u.amount::numeric, u.fee::numeric, u.status,
        u.tx, u.addr, u.conf, u.req, u.processed, u.v, u.created, u.updated
    FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::int4[], $11::int4[], $12::timestamptz[],
        $13::bigint[], $14::timestamptz[], $15::timestamptz[])
        AS u(id, user_id, asset_id, type, amount, fee, status, tx, addr, conf, req, processed, v,
             created, updated)
    ON CONFLICT (id) DO UPDATE SET amount = EXCLUDED.amount, fee = EXCLUDED.fee,
        status = EXCLUDED.status, tx_hash = EXCLUDED.tx_hash, address = EXCLUDED.address,
        confirmations = EXCLUDED.confirmations,
        required_confirmations = EXCLUDED.required_confirmations,
        processed_at = EXCLUDED.processed_at, version = EXCLUDED.version,
        updated_at = EXCLUDED.updated_at";

const AVG: &str = "NULLIF(CASE WHEN u.filled::numeric > 0
        THEN round(u.cum::numeric / u.filled::numeric, 18) END, 0)";

const ORDERS_UPDATE_TAIL: &str = "
    FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
        $7::timestamptz[]) AS u(id, amount, filled, cum, status, v, at)
    WHERE o.id = u.id";

const TRADES: &str = "INSERT INTO trades (id, trading_pair_id, buy_order_id, sell_order_id,
        buyer_user_id, seller_user_id, amount, price, quote_amount, buyer_fee, seller_fee,
        buyer_fee_asset_id, seller_fee_asset_id, maker_side, created_at)
    SELECT u.id, u.pair, u.bo, u.so, u.bu, u.su, u.amount::numeric, u.price::numeric,
        u.quote::numeric, u.bf::numeric, u.sf::numeric, u.bfa, u.sfa, u.ms, u.at
    FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
        $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
        $12::bigint[], $13::bigint[], $14::text[], $15::timestamptz[])
        AS u(id, pair, bo, so, bu, su, amount, price, quote, bf, sf, bfa, sfa, ms, at)";

const AUDIT: &str = "INSERT INTO audit_logs (id, user_id, action, resource_type, resource_id,
        new_values, created_at)
    SELECT u.id, u.uid, u.action, u.rt, u.rid, u.nv::jsonb, u.at
    FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
        $7::bigint[])
        AS u(id, action, rt, rid, nv, at, uid)";

/// A deleted rule's row stays (its events reference it), inactive and
/// renamed out of the way (`risk_rules.name` is UNIQUE and the engine frees
/// the name): `<first 60 characters> [deleted <id>]`. Live names cannot
/// contain brackets, so this never collides.
const RETIRED_NAME: &str = "left(%s, 60) || ' [deleted ' || %i || ']'";

/// Rules the batch writes are first renamed to `#<id>` (live names cannot
/// contain `#`), so renames and reuses of names within one batch never
/// trip the UNIQUE name on an intermediate row. `version = -1` keeps the
/// trigger from bumping it; the upsert then sets the engine's version.
const RISK_RULES_PARK: &str =
    "UPDATE risk_rules SET name = '#' || id, version = -1 WHERE id = ANY($1::bigint[])";

static RISK_RULES_RETIRE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE risk_rules r SET is_active = FALSE, name = {}, version = r.version + 1,
            updated_at = u.at
        FROM UNNEST($1::bigint[], $2::timestamptz[]) AS u(id, at) WHERE r.id = u.id",
        RETIRED_NAME.replace("%s", "r.name").replace("%i", "r.id")
    )
});

static RISK_RULES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO risk_rules (id, name, type, parameters, is_active, description, version,
            created_at, updated_at)
        SELECT u.id, CASE WHEN u.deleted THEN {} ELSE u.name END, u.type, u.params::jsonb,
            u.active AND NOT u.deleted, u.descr, u.v, u.created, u.updated
        FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::bool[],
            $7::text[], $8::bigint[], $9::timestamptz[], $10::timestamptz[])
            AS u(id, name, type, params, active, deleted, descr, v, created, updated)
        ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, parameters = EXCLUDED.parameters,
            is_active = EXCLUDED.is_active, description = EXCLUDED.description,
            version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
        RETIRED_NAME.replace("%s", "u.name").replace("%i", "u.id")
    )
});

const RISK_EVENTS: &str = "INSERT INTO risk_events (id, user_id, rule_id, type, level, details,
        status, resolved_by, created_at, updated_at, resolved_at)
    SELECT u.id, u.uid, u.rid, u.type, u.level, u.details::jsonb, u.status, u.rb, u.created,
        u.updated, u.resolved
    FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::bigint[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[])
        AS u(id, uid, rid, type, level, details, status, rb, created, updated, resolved)";

const RISK_EVENTS_UPDATE: &str = "UPDATE risk_events e SET status = u.status,
        resolved_by = u.rb, resolved_at = u.resolved, updated_at = u.at,
        details = e.details || u.extra::jsonb
    FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::timestamptz[], $5::timestamptz[],
        $6::text[]) AS u(id, status, rb, resolved, at, extra)
    WHERE e.id = u.id";

const OUTBOX: &str = "INSERT INTO outbox_events (id, aggregate_type, aggregate_id, event_type,
        event_data, status, created_at)
    SELECT u.id, u.at_, u.aid, u.et, u.data::jsonb, 'PENDING', u.at
    FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::timestamptz[])
        AS u(id, at_, aid, et, data, at)";

const NOTIFICATIONS: &str = "INSERT INTO notifications (id, user_id, template_id, type, title,
        content, status, sent_at, created_at, updated_at)
    SELECT u.id, u.uid, u.tid, 'IN_APP', u.title, u.content, 'SENT', u.at, u.at, u.at
    FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
        $6::timestamptz[]) AS u(id, uid, tid, title, content, at)";

/// Read marks; the owner must match (the gateway checked it, the row says it
/// again), and a second mark keeps the first `read_at`.
const NOTIFICATIONS_READ: &str = "UPDATE notifications n SET status = 'READ', read_at = u.at,
        updated_at = u.at
    FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[]) AS u(id, uid, at)
    WHERE n.id = u.id AND n.user_id = u.uid AND n.status <> 'READ'";

/// Template edits: the text, whether active, and the journal time of the
/// edit (`mx.journal_time` keeps it). A name without a row (the gateway
/// only journals edits of built-in templates) updates nothing.
const NOTIFICATION_TEMPLATES: &str = "UPDATE notification_templates t SET subject = u.subject,
        content = u.content, is_active = u.active, updated_at = u.at
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[])
        AS u(name, subject, content, active, at)
    WHERE t.name = u.name";

const CHECKPOINT: &str = "UPDATE persister_checkpoints SET last_seq = $2, updated_at = now()
    WHERE writer = ANY($1::text[]) AND last_seq = $3";

static ORDERS_INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO orders (id, user_id, trading_pair_id, client_order_id, type, side,
            time_in_force, amount, price, stop_price, quote_order_qty, remaining_amount,
            filled_amount, cumulative_quote_qty, average_price, status,
            self_trade_prevention_mode, version, created_at, updated_at)
        SELECT u.id, u.user_id, u.pair, u.cid, u.type, u.side, u.tif, u.amount::numeric,
            u.price::numeric, u.stop::numeric, u.qoq::numeric,
            GREATEST(u.amount::numeric - u.filled::numeric, 0), u.filled::numeric, u.cum::numeric,
            {AVG}, u.status, u.stp, u.v, u.created, u.updated
        FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::text[], $15::text[], $16::bigint[], $17::timestamptz[], $18::timestamptz[])
            AS u(id, user_id, pair, cid, type, side, tif, amount, price, stop, qoq, filled, cum,
                 status, stp, v, created, updated)"
    )
});

static ORDERS_UPDATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE orders o SET amount = COALESCE(u.amount::numeric, o.amount),
            filled_amount = u.filled::numeric,
            remaining_amount = GREATEST(COALESCE(u.amount::numeric, o.amount) - u.filled::numeric, 0),
            cumulative_quote_qty = u.cum::numeric, average_price = {AVG},
            status = u.status, version = u.v, updated_at = u.at {ORDERS_UPDATE_TAIL}"
    )
});

fn is_stablecoin(symbol: &str) -> bool {
    matches!(
        symbol,
        "USDT" | "USDC" | "BUSD" | "DAI" | "TUSD" | "FDUSD" | "USDP"
    )
}

fn precision(decimals: u8, units: u64) -> i16 {
    let mut tz = 0i16;
    let mut u = units;
    while u > 0 && u.is_multiple_of(10) {
        u /= 10;
        tz += 1;
    }
    (decimals as i16 - tz).max(0)
}

fn asset_decimals(e: &Engine, id: engine::AssetId) -> u8 {
    e.asset(id).map_or(8, |a| a.spec.decimals)
}

/// A bind parameter of a pipelined statement.
pub type Param<'a> = Box<dyn ToSql + Sync + 'a>;

/// Box a bind parameter.
pub fn bx<'a, T: ToSql + Sync + 'a>(v: T) -> Param<'a> {
    Box::new(v)
}

/// Prepared statements of one connection, by SQL text. Statements are
/// prepared once per connection (a new connection starts empty).
pub type Statements = HashMap<&'static str, Statement>;

/// The statements of one batch with their parameters, sent to the server
/// together (pipelined: one round trip instead of one per statement) and
/// executed by it in order.
#[derive(Default)]
pub struct Pipeline<'a> {
    items: Vec<(&'static str, Vec<Param<'a>>)>,
}

impl std::fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.items.iter().map(|(sql, p)| (sql, p.len())))
            .finish()
    }
}

impl<'a> Pipeline<'a> {
    pub fn push(&mut self, sql: &'static str, params: Vec<Param<'a>>) {
        self.items.push((sql, params));
    }

    /// Run every statement in `tx`; returns their row counts, in order.
    pub async fn run(
        &self,
        tx: &Transaction<'_>,
        statements: &mut Statements,
    ) -> Result<Vec<u64>, tokio_postgres::Error> {
        // Prepare first (once per connection): a statement prepared inside
        // the pipeline would wait for its Parse and lose its place.
        for (sql, _) in &self.items {
            if !statements.contains_key(sql) {
                let st = tx.prepare(sql).await?;
                statements.insert(sql, st);
            }
        }
        let runs = self.items.iter().map(|(sql, params)| {
            let st = statements.get(sql);
            async move {
                let st = st.expect("prepared above");
                tx.execute_raw(st, params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)))
                    .await
            }
        });
        futures_util::future::try_join_all(runs).await
    }
}

/// Settings of a batch's transaction:
/// * journal time in `updated_at` (see `set_updated_at()` in 0001);
/// * no sequential scans. Every statement here is driven by keys (UPDATE
///   ... FROM UNNEST joins on primary keys, the ticker's index range
///   scans), but on fast-growing partitions whose statistics lag the
///   planner hash-joined the orders UPDATE against a sequential scan of the
///   whole orders partition on every batch (measured: 723 scans reading
///   15.7M rows in a 20 s run at 2,000 trades/s).
const TX_SETTINGS: &str = "SELECT set_config('mx.journal_time', 'on', true),
    set_config('enable_seqscan', 'off', true)";

/// Write every row of `batch` and move the checkpoint from
/// `batch.first_seq - 1` to `batch.last_seq`, inside `tx`; tables with at
/// least `copy_min_rows` rows in the batch go by binary COPY. Returns false
/// when the checkpoint was not where expected (another writer moved it).
pub async fn write_batch(
    tx: &Transaction<'_>,
    statements: &mut Statements,
    writers: &[&str],
    copy_min_rows: usize,
    engine: &Engine,
    b: &Batch,
) -> Result<bool, tokio_postgres::Error> {
    let mut p = Pipeline::default();
    p.push(TX_SETTINGS, Vec::new());

    // Users: their state after the batch, from the replica.
    if !b.users.is_empty() {
        let mut c = (
            Vec::<i64>::new(),
            Vec::<String>::new(),
            Vec::<Option<String>>::new(),
            Vec::<String>::new(),
            Vec::<&str>::new(),
            Vec::<i16>::new(),
            Vec::<i32>::new(),
            Vec::<Option<SystemTime>>::new(),
            Vec::<Option<SystemTime>>::new(),
            Vec::<i64>::new(),
            Vec::<SystemTime>::new(),
            Vec::<SystemTime>::new(),
        );
        let mut roles = (
            Vec::<i64>::new(),
            Vec::<&str>::new(),
            Vec::<SystemTime>::new(),
        );
        let mut roles_users = Vec::<i64>::new();
        for (id, t) in &b.users {
            let Some(u) = engine.user(UserId(*id)) else {
                continue;
            };
            c.0.push(*id as i64);
            c.1.push(u.username.clone());
            c.2.push((!u.email.is_empty()).then(|| u.email.clone()));
            c.3.push(u.password_hash.clone());
            c.4.push(match u.status {
                UserStatus::Active => "ACTIVE",
                UserStatus::Suspended => "SUSPENDED",
            });
            c.5.push(u.kyc_level as i16);
            c.6.push(u.failed_logins.min(i32::MAX as u32) as i32);
            c.7.push((u.locked_until_ms != 0).then(|| ts(u.locked_until_ms)));
            c.8.push(t.login_ts.map(ts));
            c.9.push(t.seq as i64);
            c.10.push(ts(u.created_ms));
            c.11.push(ts(t.ts));
            if let Some(at) = t.roles_ts {
                roles_users.push(*id as i64);
                for (bit, name) in engine::roles::NAMES {
                    if u.roles & bit != 0 {
                        roles.0.push(*id as i64);
                        roles.1.push(name);
                        roles.2.push(ts(at));
                    }
                }
            }
        }
        p.push(
            USERS,
            vec![
                bx(c.0),
                bx(c.1),
                bx(c.2),
                bx(c.3),
                bx(c.4),
                bx(c.5),
                bx(c.6),
                bx(c.7),
                bx(c.8),
                bx(c.9),
                bx(c.10),
                bx(c.11),
            ],
        );
        if !roles_users.is_empty() {
            p.push(USER_ROLES_DELETE, vec![bx(roles_users)]);
            p.push(USER_ROLES, vec![bx(roles.0), bx(roles.1), bx(roles.2)]);
        }
    }

    // KYC records: their state after the batch, from the replica.
    if !b.kyc.is_empty() {
        let mut c = (
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i16>::new(),
            Vec::<&str>::new(),
            Vec::<&str>::new(),
            Vec::<String>::new(),
            Vec::<String>::new(),
            Vec::<Option<&str>>::new(),
            Vec::<Option<i64>>::new(),
            Vec::<Option<SystemTime>>::new(),
            Vec::<i64>::new(),
            Vec::<SystemTime>::new(),
            Vec::<SystemTime>::new(),
        );
        for (id, (seq, at)) in &b.kyc {
            let Some(k) = engine.kyc_record(*id) else {
                continue;
            };
            let reviewed = k.status != KycStatus::Pending;
            c.0.push(*id as i64);
            c.1.push(k.user.0 as i64);
            c.2.push(k.level as i16);
            c.3.push(k.status.name());
            c.4.push(k.document_type.name());
            c.5.push(rows::kyc_document_text(&k.document_number));
            c.6.push(rows::kyc_data_json(&k.data));
            c.7.push((!k.notes.is_empty()).then_some(k.notes.as_str()));
            c.8.push(k.reviewer.map(|r| r.0 as i64));
            c.9.push(reviewed.then(|| ts(k.reviewed_ms)));
            c.10.push(*seq as i64);
            c.11.push(ts(k.created_ms));
            c.12.push(ts(*at));
        }
        p.push(
            KYC,
            vec![
                bx(c.0),
                bx(c.1),
                bx(c.2),
                bx(c.3),
                bx(c.4),
                bx(c.5),
                bx(c.6),
                bx(c.7),
                bx(c.8),
                bx(c.9),
                bx(c.10),
                bx(c.11),
                bx(c.12),
            ],
        );
    }
    push_risk(&mut p, b);

    if !b.assets.is_empty() {
        let mut c = (
            Vec::<i64>::new(),
            Vec::<&str>::new(),
            Vec::<&str>::new(),
            Vec::<&str>::new(),
            Vec::<i16>::new(),
            Vec::<bool>::new(),
            Vec::<String>::new(),
            Vec::<String>::new(),
            Vec::<Option<String>>::new(),
            Vec::<i32>::new(),
            Vec::<i64>::new(),
            Vec::<SystemTime>::new(),
            Vec::<SystemTime>::new(),
        );
        for (a, created, seq, at) in b.assets.values() {
            let s = &a.spec;
            c.0.push(a.id.0 as i64);
            c.1.push(&s.symbol);
            c.2.push(&s.name);
            c.3.push(if is_stablecoin(&s.symbol) {
                "STABLECOIN"
            } else {
                "CRYPTO"
            });
            c.4.push(s.decimals as i16);
            c.5.push(s.active);
            c.6.push(dec(s.min_withdraw_units as u128, s.decimals));
            c.7.push(dec(s.withdraw_fee_units as u128, s.decimals));
            c.8.push(
                (s.daily_withdraw_limit_units != 0)
                    .then(|| dec(s.daily_withdraw_limit_units as u128, s.decimals)),
            );
            c.9.push(s.confirmations.min(i32::MAX as u32) as i32);
            c.10.push(*seq as i64);
            c.11.push(ts(*created));
            c.12.push(ts(*at));
        }
        p.push(
            ASSETS,
            vec![
                bx(c.0),
                bx(c.1),
                bx(c.2),
                bx(c.3),
                bx(c.4),
                bx(c.5),
                bx(c.6),
                bx(c.7),
                bx(c.8),
                bx(c.9),
                bx(c.10),
                bx(c.11),
                bx(c.12),
            ],
        );
    }

    if !b.pairs.is_empty() {
        let mut id = Vec::<i64>::new();
        let mut symbol = Vec::<&str>::new();
        let mut base = Vec::<i64>::new();
        let mut quote = Vec::<i64>::new();
        let mut status = Vec::<&str>::new();
        let mut minq = Vec::<String>::new();
        let mut maxq = Vec::<Option<String>>::new();
        let mut pp = Vec::<i16>::new();
        let mut ap = Vec::<i16>::new();
        let mut tick = Vec::<String>::new();
        let mut step = Vec::<String>::new();
        let mut notional = Vec::<String>::new();
        let mut maker = Vec::<String>::new();
        let mut taker = Vec::<String>::new();
        let mut v = Vec::<i64>::new();
        let mut created = Vec::<SystemTime>::new();
        let mut updated = Vec::<SystemTime>::new();
        for (p, c, seq, at) in b.pairs.values() {
            let s = &p.spec;
            let (bd, qd) = (
                asset_decimals(engine, s.base),
                asset_decimals(engine, s.quote),
            );
            id.push(p.id.0 as i64);
            symbol.push(&s.symbol);
            base.push(s.base.0 as i64);
            quote.push(s.quote.0 as i64);
            status.push(match s.status {
                PairStatus::Trading => "TRADING",
                PairStatus::Halt => "HALT",
                PairStatus::CancelOnly => "CANCEL_ONLY",
            });
            minq.push(dec(s.min_qty_units as u128, bd));
            maxq.push((s.max_qty_units != 0).then(|| dec(s.max_qty_units as u128, bd)));
            pp.push(precision(qd, s.tick_units));
            ap.push(precision(bd, s.step_units));
            tick.push(dec(s.tick_units as u128, qd));
            step.push(dec(s.step_units as u128, bd));
            notional.push(dec(s.min_notional_units as u128, qd));
            maker.push(dec(s.maker_fee_e8 as u128, 8));
            taker.push(dec(s.taker_fee_e8 as u128, 8));
            v.push(*seq as i64);
            created.push(ts(*c));
            updated.push(ts(*at));
        }
        p.push(
            PAIRS,
            vec![
                bx(id),
                bx(symbol),
                bx(base),
                bx(quote),
                bx(status),
                bx(minq),
                bx(maxq),
                bx(pp),
                bx(ap),
                bx(tick),
                bx(step),
                bx(notional),
                bx(maker),
                bx(taker),
                bx(v),
                bx(created),
                bx(updated),
            ],
        );
    }

    if !b.api_keys.is_empty() {
        let k = &b.api_keys;
        let id: Vec<i64> = k.iter().map(|r| r.id).collect();
        let user: Vec<i64> = k.iter().map(|r| r.user).collect();
        let key: Vec<&str> = k.iter().map(|r| r.api_key.as_str()).collect();
        let label: Vec<&str> = k.iter().map(|r| r.label.as_str()).collect();
        let kind: Vec<&str> = k.iter().map(|r| r.kind).collect();
        let perms: Vec<&str> = k.iter().map(|r| r.permissions.as_str()).collect();
        let secret: Vec<Option<&[u8]>> = k.iter().map(|r| r.secret.as_deref()).collect();
        let pk: Vec<Option<&str>> = k.iter().map(|r| r.public_key.as_deref()).collect();
        let at: Vec<SystemTime> = k.iter().map(|r| r.created).collect();
        p.push(
            API_KEYS,
            vec![
                bx(id),
                bx(user),
                bx(key),
                bx(label),
                bx(kind),
                bx(perms),
                bx(secret),
                bx(pk),
                bx(at),
            ],
        );
    }
    if !b.api_keys_revoked.is_empty() {
        let id: Vec<i64> = b.api_keys_revoked.iter().map(|r| r.0).collect();
        let at: Vec<SystemTime> = b.api_keys_revoked.iter().map(|r| r.1).collect();
        p.push(API_KEYS_REVOKE, vec![bx(id), bx(at)]);
    }

    if !b.accounts.is_empty() {
        let mut id = Vec::<i64>::new();
        let mut user = Vec::<i64>::new();
        let mut asset = Vec::<i64>::new();
        let mut av = Vec::<String>::new();
        let mut fr = Vec::<String>::new();
        let mut v = Vec::<i64>::new();
        let mut created = Vec::<SystemTime>::new();
        let mut updated = Vec::<SystemTime>::new();
        for ((u, a), t) in &b.accounts {
            let d = asset_decimals(engine, engine::AssetId(*a));
            id.push(rows::account_id(UserId(*u), engine::AssetId(*a)));
            user.push(*u as i64);
            asset.push(*a as i64);
            av.push(dec(t.available as u128, d));
            fr.push(dec(t.frozen as u128, d));
            v.push(t.seq as i64);
            created.push(ts(t.first_ts));
            updated.push(ts(t.ts));
        }
        p.push(
            ACCOUNTS,
            vec![
                bx(id),
                bx(user),
                bx(asset),
                bx(av),
                bx(fr),
                bx(v),
                bx(created),
                bx(updated),
            ],
        );
    }

    let l = &b.ledger;
    if l.id.len() >= copy_min_rows {
        copy::ledger(tx, l).await?;
    } else if !l.id.is_empty() {
        p.push(
            LEDGER,
            vec![
                bx(&l.id),
                bx(&l.user),
                bx(&l.asset),
                bx(&l.kind),
                bx(&l.balance_type),
                bx(&l.amount),
                bx(&l.before),
                bx(&l.after),
                bx(&l.ref_type),
                bx(&l.ref_id),
                bx(&l.description),
                bx(&l.created),
            ],
        );
    }

    if !b.freezes.is_empty() {
        let mut up = (
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<String>::new(),
            Vec::<&str>::new(),
            Vec::<&str>::new(),
            Vec::<i64>::new(),
            Vec::<&str>::new(),
            Vec::<i64>::new(),
            Vec::<SystemTime>::new(),
            Vec::<SystemTime>::new(),
            Vec::<Option<SystemTime>>::new(),
        );
        let mut rel = (
            Vec::<i64>::new(),
            Vec::<SystemTime>::new(),
            Vec::<i64>::new(),
        );
        for (id, f) in &b.freezes {
            if f.added == 0 {
                if let Some(r) = f.released_ts {
                    rel.0.push(*id);
                    rel.1.push(ts(r));
                    rel.2.push(f.seq as i64);
                }
                continue;
            }
            let d = asset_decimals(engine, f.asset);
            up.0.push(*id);
            up.1.push(f.user.0 as i64);
            up.2.push(f.asset.0 as i64);
            up.3.push(dec(f.added as u128, d));
            up.4.push(f.reason);
            up.5.push(f.ref_type);
            up.6.push(f.ref_id as i64);
            up.7.push(if f.released_ts.is_some() {
                "RELEASED"
            } else {
                "ACTIVE"
            });
            up.8.push(f.seq as i64);
            up.9.push(ts(f.created_ts));
            up.10.push(ts(f.ts));
            up.11.push(f.released_ts.map(ts));
        }
        if !up.0.is_empty() {
            p.push(
                FREEZES,
                vec![
                    bx(up.0),
                    bx(up.1),
                    bx(up.2),
                    bx(up.3),
                    bx(up.4),
                    bx(up.5),
                    bx(up.6),
                    bx(up.7),
                    bx(up.8),
                    bx(up.9),
                    bx(up.10),
                    bx(up.11),
                ],
            );
        }
        if !rel.0.is_empty() {
            p.push(FREEZES_RELEASE, vec![bx(rel.0), bx(rel.1), bx(rel.2)]);
        }
    }

    if !b.dw.is_empty() {
        let r: Vec<&rows::DwRow> = b.dw.values().collect();
        let id: Vec<i64> = r.iter().map(|x| x.id).collect();
        let user: Vec<i64> = r.iter().map(|x| x.user.0 as i64).collect();
        let asset: Vec<i64> = r.iter().map(|x| x.asset.0 as i64).collect();
        let kind: Vec<&str> = r.iter().map(|x| x.kind).collect();
        let amount: Vec<String> = r
            .iter()
            .map(|x| dec(x.amount as u128, asset_decimals(engine, x.asset)))
            .collect();
        let fee: Vec<String> = r
            .iter()
            .map(|x| dec(x.fee as u128, asset_decimals(engine, x.asset)))
            .collect();
        let status: Vec<&str> = r.iter().map(|x| x.status).collect();
        let tx_hash: Vec<Option<&str>> = r.iter().map(|x| x.tx_hash.as_deref()).collect();
        let addr: Vec<Option<&str>> = r.iter().map(|x| x.address.as_deref()).collect();
        let conf: Vec<i32> = r.iter().map(|x| x.confirmations).collect();
        let req: Vec<i32> = r.iter().map(|x| x.required).collect();
        let processed: Vec<Option<SystemTime>> = r.iter().map(|x| x.processed_ms.map(ts)).collect();
        let v: Vec<i64> = r.iter().map(|x| x.seq as i64).collect();
        let created: Vec<SystemTime> = r.iter().map(|x| ts(x.created_ms)).collect();
        let updated: Vec<SystemTime> = r.iter().map(|x| ts(x.updated_ms)).collect();
        p.push(
            DW,
            vec![
                bx(id),
                bx(user),
                bx(asset),
                bx(kind),
                bx(amount),
                bx(fee),
                bx(status),
                bx(tx_hash),
                bx(addr),
                bx(conf),
                bx(req),
                bx(processed),
                bx(v),
                bx(created),
                bx(updated),
            ],
        );
    }

    if !b.orders.is_empty() {
        let mut ins = OrderCols::default();
        let mut upd = (
            Vec::<i64>::new(),
            Vec::<Option<String>>::new(),
            Vec::<String>::new(),
            Vec::<String>::new(),
            Vec::<&str>::new(),
            Vec::<i64>::new(),
            Vec::<SystemTime>::new(),
        );
        for (id, o) in &b.orders {
            // Decimals of the order's pair (pairs are never removed).
            let (bd, qd, tick) = match engine.pair(o.pair) {
                Some(p) => (
                    asset_decimals(engine, p.pair.spec.base),
                    asset_decimals(engine, p.pair.spec.quote),
                    p.pair.spec.tick_units,
                ),
                None => (8, 8, 1),
            };
            match o.accepted {
                Some(a) => {
                    ins.id.push(a.id.0 as i64);
                    ins.user.push(a.user.0 as i64);
                    ins.pair.push(a.pair.0 as i64);
                    ins.cid
                        .push((!a.client_id.is_none()).then(|| a.client_id.as_str().to_owned()));
                    ins.kind.push(a.kind.as_str());
                    ins.side.push(a.side.as_str());
                    ins.tif
                        .push(a.kind.has_limit_price().then(|| a.tif.as_str()));
                    ins.amount.push(dec(o.qty.unwrap_or(a.qty.0) as u128, bd));
                    ins.price.push(
                        a.kind
                            .has_limit_price()
                            .then(|| dec(a.price.0 as u128 * tick as u128, qd)),
                    );
                    ins.stop.push(
                        a.kind
                            .is_stop()
                            .then(|| dec(a.stop_price.0 as u128 * tick as u128, qd)),
                    );
                    ins.qoq
                        .push((a.quote_qty > 0).then(|| dec(a.quote_qty as u128, qd)));
                    ins.filled.push(dec(o.filled as u128, bd));
                    ins.cum.push(dec(o.cum_quote as u128, qd));
                    ins.status.push(o.status.as_str());
                    ins.stp.push(a.stp.as_str());
                    ins.v.push(o.seq as i64);
                    ins.created.push(ts(o.accepted_ts));
                    ins.updated.push(ts(o.ts));
                }
                None => {
                    upd.0.push(*id as i64);
                    upd.1.push(o.qty.map(|q| dec(q as u128, bd)));
                    upd.2.push(dec(o.filled as u128, bd));
                    upd.3.push(dec(o.cum_quote as u128, qd));
                    upd.4.push(o.status.as_str());
                    upd.5.push(o.seq as i64);
                    upd.6.push(ts(o.ts));
                }
            }
        }
        if !ins.id.is_empty() {
            p.push(
                ORDERS_INSERT.as_str(),
                vec![
                    bx(ins.id),
                    bx(ins.user),
                    bx(ins.pair),
                    bx(ins.cid),
                    bx(ins.kind),
                    bx(ins.side),
                    bx(ins.tif),
                    bx(ins.amount),
                    bx(ins.price),
                    bx(ins.stop),
                    bx(ins.qoq),
                    bx(ins.filled),
                    bx(ins.cum),
                    bx(ins.status),
                    bx(ins.stp),
                    bx(ins.v),
                    bx(ins.created),
                    bx(ins.updated),
                ],
            );
        }
        if !upd.0.is_empty() {
            p.push(
                ORDERS_UPDATE.as_str(),
                vec![
                    bx(upd.0),
                    bx(upd.1),
                    bx(upd.2),
                    bx(upd.3),
                    bx(upd.4),
                    bx(upd.5),
                    bx(upd.6),
                ],
            );
        }
    }

    let t = &b.trades;
    if t.id.len() >= copy_min_rows {
        copy::trades(tx, t).await?;
    } else if !t.id.is_empty() {
        p.push(
            TRADES,
            vec![
                bx(&t.id),
                bx(&t.pair),
                bx(&t.buy_order),
                bx(&t.sell_order),
                bx(&t.buyer),
                bx(&t.seller),
                bx(&t.amount),
                bx(&t.price),
                bx(&t.quote),
                bx(&t.buyer_fee),
                bx(&t.seller_fee),
                bx(&t.buyer_fee_asset),
                bx(&t.seller_fee_asset),
                bx(&t.maker_side),
                bx(&t.created),
            ],
        );
    }
    // After the trades: the ticker reads them.
    b.klines.push_into(&mut p);
    let a = &b.audit;
    if !a.id.is_empty() {
        p.push(
            AUDIT,
            vec![
                bx(&a.id),
                bx(&a.action),
                bx(&a.resource_type),
                bx(&a.resource_id),
                bx(&a.new_values),
                bx(&a.created),
                bx(&a.user),
            ],
        );
    }
    let o = &b.outbox;
    if o.id.len() >= copy_min_rows {
        copy::outbox(tx, o).await?;
    } else if !o.id.is_empty() {
        p.push(
            OUTBOX,
            vec![
                bx(&o.id),
                bx(&o.aggregate_type),
                bx(&o.aggregate_id),
                bx(&o.event_type),
                bx(&o.data),
                bx(&o.created),
            ],
        );
    }

    let n = &b.notifications;
    if !n.id.is_empty() {
        p.push(
            NOTIFICATIONS,
            vec![
                bx(&n.id),
                bx(&n.user),
                bx(&n.template_id),
                bx(&n.title),
                bx(&n.content),
                bx(&n.created),
            ],
        );
    }
    // After the inserts: a mark may name a notification of this batch.
    let r = &b.notification_reads;
    if !r.id.is_empty() {
        p.push(
            NOTIFICATIONS_READ,
            vec![bx(&r.id), bx(&r.user), bx(&r.read_at)],
        );
    }

    let t = &b.notification_templates.by_name;
    if !t.is_empty() {
        let mut c = (
            Vec::<&str>::new(),
            Vec::<&str>::new(),
            Vec::<&str>::new(),
            Vec::<bool>::new(),
            Vec::<SystemTime>::new(),
        );
        for x in t.values() {
            c.0.push(&x.name);
            c.1.push(&x.subject);
            c.2.push(&x.content);
            c.3.push(x.active);
            c.4.push(ts(x.updated_ms));
        }
        p.push(
            NOTIFICATION_TEMPLATES,
            vec![bx(c.0), bx(c.1), bx(c.2), bx(c.3), bx(c.4)],
        );
    }

    // After every other row: a settlement reads the ledger and trades.
    crate::settlement::push(&mut p, &b.settlements);
    p.push(
        CHECKPOINT,
        vec![
            bx(writers.to_vec()),
            bx(b.last_seq as i64),
            bx(b.first_seq.saturating_sub(1) as i64),
        ],
    );
    let counts = p.run(tx, statements).await?;
    // The checkpoint statement is the last one: every row moved.
    Ok(counts.last() == Some(&(writers.len() as u64)))
}

#[derive(Default)]
struct OrderCols {
    id: Vec<i64>,
    user: Vec<i64>,
    pair: Vec<i64>,
    cid: Vec<Option<String>>,
    kind: Vec<&'static str>,
    side: Vec<&'static str>,
    tif: Vec<Option<&'static str>>,
    amount: Vec<String>,
    price: Vec<Option<String>>,
    stop: Vec<Option<String>>,
    qoq: Vec<Option<String>>,
    filled: Vec<String>,
    cum: Vec<String>,
    status: Vec<&'static str>,
    stp: Vec<&'static str>,
    v: Vec<i64>,
    created: Vec<SystemTime>,
    updated: Vec<SystemTime>,
}

/// `risk_rules` (upsert; deleted rules retired) and `risk_events` (insert
/// when raised, update on status changes).
fn push_risk<'a>(p: &mut Pipeline<'a>, b: &'a Batch) {
    if !b.risk_rules.is_empty() {
        let park: Vec<i64> = b
            .risk_rules
            .iter()
            .filter(|(_, t)| t.rule.is_some())
            .map(|(id, _)| *id as i64)
            .collect();
        let mut retire = (Vec::<i64>::new(), Vec::<SystemTime>::new());
        let mut c = (
            Vec::<i64>::new(),
            Vec::<&str>::new(),
            Vec::<&str>::new(),
            Vec::<String>::new(),
            Vec::<bool>::new(),
            Vec::<bool>::new(),
            Vec::<Option<&str>>::new(),
            Vec::<i64>::new(),
            Vec::<SystemTime>::new(),
            Vec::<SystemTime>::new(),
        );
        for (id, t) in &b.risk_rules {
            let Some(r) = &t.rule else {
                if t.deleted {
                    retire.0.push(*id as i64);
                    retire.1.push(ts(t.ts));
                }
                continue;
            };
            c.0.push(*id as i64);
            c.1.push(&r.name);
            c.2.push(r.kind.name());
            c.3.push(rows::json_object_text(&r.parameters));
            c.4.push(r.enabled);
            c.5.push(t.deleted);
            c.6.push((!r.description.is_empty()).then_some(r.description.as_str()));
            c.7.push((r.version + u64::from(t.deleted)) as i64);
            c.8.push(ts(r.created_ms));
            c.9.push(ts(t.ts));
        }
        if !park.is_empty() {
            p.push(RISK_RULES_PARK, vec![bx(park)]);
        }
        if !retire.0.is_empty() {
            p.push(RISK_RULES_RETIRE.as_str(), vec![bx(retire.0), bx(retire.1)]);
        }
        if !c.0.is_empty() {
            p.push(
                RISK_RULES.as_str(),
                vec![
                    bx(c.0),
                    bx(c.1),
                    bx(c.2),
                    bx(c.3),
                    bx(c.4),
                    bx(c.5),
                    bx(c.6),
                    bx(c.7),
                    bx(c.8),
                    bx(c.9),
                ],
            );
        }
    }
    if !b.risk_events.is_empty() {
        let mut ins = (
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<i64>::new(),
            Vec::<&str>::new(),
            Vec::<&str>::new(),
            Vec::<String>::new(),
            Vec::<&str>::new(),
            Vec::<Option<i64>>::new(),
            Vec::<SystemTime>::new(),
            Vec::<SystemTime>::new(),
            Vec::<Option<SystemTime>>::new(),
        );
        let mut upd = (
            Vec::<i64>::new(),
            Vec::<&str>::new(),
            Vec::<Option<i64>>::new(),
            Vec::<Option<SystemTime>>::new(),
            Vec::<SystemTime>::new(),
            Vec::<String>::new(),
        );
        for (id, t) in &b.risk_events {
            let resolved_by = t
                .status
                .is_final()
                .then_some(t.handled_by)
                .flatten()
                .map(|u| u.0 as i64);
            let added = t.details_added();
            match &t.raised {
                Some(r) => {
                    let mut details =
                        match serde_json::from_str(&rows::json_object_text(&r.details)) {
                            Ok(serde_json::Value::Object(m)) => m,
                            _ => serde_json::Map::new(),
                        };
                    details.insert("action".into(), r.action.name().into());
                    details.extend(added);
                    ins.0.push(*id as i64);
                    ins.1.push(r.user.0 as i64);
                    ins.2.push(r.rule as i64);
                    ins.3.push(r.kind.name());
                    ins.4.push(r.level.name());
                    ins.5.push(serde_json::Value::Object(details).to_string());
                    ins.6.push(t.status.name());
                    ins.7.push(resolved_by);
                    ins.8.push(ts(r.created_ms));
                    ins.9.push(ts(t.updated_ms));
                    ins.10.push(t.resolved_ms().map(ts));
                }
                None => {
                    upd.0.push(*id as i64);
                    upd.1.push(t.status.name());
                    upd.2.push(resolved_by);
                    upd.3.push(t.resolved_ms().map(ts));
                    upd.4.push(ts(t.updated_ms));
                    upd.5.push(serde_json::Value::Object(added).to_string());
                }
            }
        }
        if !ins.0.is_empty() {
            p.push(
                RISK_EVENTS,
                vec![
                    bx(ins.0),
                    bx(ins.1),
                    bx(ins.2),
                    bx(ins.3),
                    bx(ins.4),
                    bx(ins.5),
                    bx(ins.6),
                    bx(ins.7),
                    bx(ins.8),
                    bx(ins.9),
                    bx(ins.10),
                ],
            );
        }
        if !upd.0.is_empty() {
            p.push(
                RISK_EVENTS_UPDATE,
                vec![
                    bx(upd.0),
                    bx(upd.1),
                    bx(upd.2),
                    bx(upd.3),
                    bx(upd.4),
                    bx(upd.5),
                ],
            );
        }
    }
}
