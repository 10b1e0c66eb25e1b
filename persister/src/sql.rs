//! The statements of one batch: multi-row UNNEST inserts/updates whose
//! values are all bind parameters (numeric columns travel as text arrays and
//! are cast in SQL, timestamps as `timestamptz[]`).

use std::time::SystemTime;

use engine::{Engine, PairStatus, UserId, UserStatus};
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

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
    SELECT u.id, NULL, u.action, u.rt, u.rid, u.nv::jsonb, u.at
    FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
        AS u(id, action, rt, rid, nv, at)";

const OUTBOX: &str = "INSERT INTO outbox_events (id, aggregate_type, aggregate_id, event_type,
        event_data, status, created_at)
    SELECT u.id, u.at_, u.aid, u.et, u.data::jsonb, 'PENDING', u.at
    FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::timestamptz[])
        AS u(id, at_, aid, et, data, at)";

const CHECKPOINT: &str = "UPDATE persister_checkpoints SET last_seq = $2, updated_at = now()
    WHERE writer = $1 AND last_seq = $3";

fn orders_insert_sql() -> String {
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
}

fn orders_update_sql() -> String {
    format!(
        "UPDATE orders o SET amount = COALESCE(u.amount::numeric, o.amount),
            filled_amount = u.filled::numeric,
            remaining_amount = GREATEST(COALESCE(u.amount::numeric, o.amount) - u.filled::numeric, 0),
            cumulative_quote_qty = u.cum::numeric, average_price = {AVG},
            status = u.status, version = u.v, updated_at = u.at {ORDERS_UPDATE_TAIL}"
    )
}

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

async fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(sql, params).await
}

/// Write every row of `batch` and move the checkpoint from
/// `batch.first_seq - 1` to `batch.last_seq`, inside `tx`. Returns false
/// when the checkpoint was not where expected (another writer moved it).
pub async fn write_batch(
    tx: &Transaction<'_>,
    writer: &str,
    engine: &Engine,
    b: &Batch,
) -> Result<bool, tokio_postgres::Error> {
    tx.batch_execute("SET LOCAL mx.journal_time = 'on'").await?;

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
        exec(
            tx,
            USERS,
            &[
                &c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6, &c.7, &c.8, &c.9, &c.10, &c.11,
            ],
        )
        .await?;
        if !roles_users.is_empty() {
            exec(tx, USER_ROLES_DELETE, &[&roles_users]).await?;
            exec(tx, USER_ROLES, &[&roles.0, &roles.1, &roles.2]).await?;
        }
    }

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
        exec(
            tx,
            ASSETS,
            &[
                &c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6, &c.7, &c.8, &c.9, &c.10, &c.11, &c.12,
            ],
        )
        .await?;
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
        exec(
            tx,
            PAIRS,
            &[
                &id, &symbol, &base, &quote, &status, &minq, &maxq, &pp, &ap, &tick, &step,
                &notional, &maker, &taker, &v, &created, &updated,
            ],
        )
        .await?;
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
        exec(
            tx,
            API_KEYS,
            &[&id, &user, &key, &label, &kind, &perms, &secret, &pk, &at],
        )
        .await?;
    }
    if !b.api_keys_revoked.is_empty() {
        let id: Vec<i64> = b.api_keys_revoked.iter().map(|r| r.0).collect();
        let at: Vec<SystemTime> = b.api_keys_revoked.iter().map(|r| r.1).collect();
        exec(tx, API_KEYS_REVOKE, &[&id, &at]).await?;
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
        exec(
            tx,
            ACCOUNTS,
            &[&id, &user, &asset, &av, &fr, &v, &created, &updated],
        )
        .await?;
    }

    let l = &b.ledger;
    if !l.id.is_empty() {
        exec(
            tx,
            LEDGER,
            &[
                &l.id,
                &l.user,
                &l.asset,
                &l.kind,
                &l.balance_type,
                &l.amount,
                &l.before,
                &l.after,
                &l.ref_type,
                &l.ref_id,
                &l.description,
                &l.created,
            ],
        )
        .await?;
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
            exec(
                tx,
                FREEZES,
                &[
                    &up.0, &up.1, &up.2, &up.3, &up.4, &up.5, &up.6, &up.7, &up.8, &up.9, &up.10,
                    &up.11,
                ],
            )
            .await?;
        }
        if !rel.0.is_empty() {
            exec(tx, FREEZES_RELEASE, &[&rel.0, &rel.1, &rel.2]).await?;
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
        exec(
            tx,
            DW,
            &[
                &id, &user, &asset, &kind, &amount, &fee, &status, &tx_hash, &addr, &conf, &req,
                &processed, &v, &created, &updated,
            ],
        )
        .await?;
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
            exec(
                tx,
                &orders_insert_sql(),
                &[
                    &ins.id,
                    &ins.user,
                    &ins.pair,
                    &ins.cid,
                    &ins.kind,
                    &ins.side,
                    &ins.tif,
                    &ins.amount,
                    &ins.price,
                    &ins.stop,
                    &ins.qoq,
                    &ins.filled,
                    &ins.cum,
                    &ins.status,
                    &ins.stp,
                    &ins.v,
                    &ins.created,
                    &ins.updated,
                ],
            )
            .await?;
        }
        if !upd.0.is_empty() {
            exec(
                tx,
                &orders_update_sql(),
                &[&upd.0, &upd.1, &upd.2, &upd.3, &upd.4, &upd.5, &upd.6],
            )
            .await?;
        }
    }

    let t = &b.trades;
    if !t.id.is_empty() {
        exec(
            tx,
            TRADES,
            &[
                &t.id,
                &t.pair,
                &t.buy_order,
                &t.sell_order,
                &t.buyer,
                &t.seller,
                &t.amount,
                &t.price,
                &t.quote,
                &t.buyer_fee,
                &t.seller_fee,
                &t.buyer_fee_asset,
                &t.seller_fee_asset,
                &t.maker_side,
                &t.created,
            ],
        )
        .await?;
    }
    let a = &b.audit;
    if !a.id.is_empty() {
        exec(
            tx,
            AUDIT,
            &[
                &a.id,
                &a.action,
                &a.resource_type,
                &a.resource_id,
                &a.new_values,
                &a.created,
            ],
        )
        .await?;
    }
    let o = &b.outbox;
    if !o.id.is_empty() {
        exec(
            tx,
            OUTBOX,
            &[
                &o.id,
                &o.aggregate_type,
                &o.aggregate_id,
                &o.event_type,
                &o.data,
                &o.created,
            ],
        )
        .await?;
    }

    let moved = exec(
        tx,
        CHECKPOINT,
        &[
            &writer,
            &(b.last_seq as i64),
            &(b.first_seq.saturating_sub(1) as i64),
        ],
    )
    .await?;
    Ok(moved == 1)
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
