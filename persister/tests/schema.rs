//! The schema of `migrations/` against real Postgres (`DATABASE_URL`).

use persister::testdb::TestDb;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

const DESIGN_TABLES: [&str; 24] = [
    "users",
    "roles",
    "permissions",
    "user_roles",
    "role_permissions",
    "kyc_records",
    "assets",
    "accounts",
    "transactions",
    "balance_freezes",
    "deposit_withdrawals",
    "trading_pairs",
    "orders",
    "trades",
    "klines",
    "ticker_24hr",
    "risk_rules",
    "risk_events",
    "settlement_batches",
    "settlement_details",
    "notification_templates",
    "notifications",
    "outbox_events",
    "audit_logs",
];

const PARTITIONED: [(&str, &str); 5] = [
    ("orders", "created_at"),
    ("trades", "created_at"),
    ("klines", "open_time"),
    ("notifications", "created_at"),
    ("audit_logs", "created_at"),
];

/// Runs `sql` and asserts it fails with `code` on `constraint`.
async fn expect_violation(client: &Client, sql: &str, code: &SqlState, constraint: &str) {
    let err = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("should violate {constraint}: {sql}"));
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {err:?}"));
    assert_eq!(db.code(), code, "{}", db.message());
    assert_eq!(db.constraint(), Some(constraint), "{}", db.message());
}

async fn scalar_i64(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn scalar_bool(client: &Client, sql: &str) -> bool {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn scalar_text(client: &Client, sql: &str) -> String {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Two users, two assets, accounts: the smallest valid wallet.
const WALLET: &str = "
    INSERT INTO users (id, username, email, password_hash, created_at, updated_at) VALUES
        (1, 'alice', 'alice@example.com', '$argon2id$v=19$m=19456,t=2,p=1$x$y', '2026-01-01Z', '2026-01-01Z'),
        (2, 'bob',   'bob@example.com',   '$argon2id$v=19$m=19456,t=2,p=1$x$y', '2026-01-01Z', '2026-01-01Z');
    INSERT INTO assets (id, symbol, name, decimals) VALUES
        (1, 'BTC', 'Bitcoin', 8), (2, 'USDT', 'Tether', 8);
    INSERT INTO accounts (id, user_id, asset_id, available_balance, frozen_balance) VALUES
        (1, 1, 1, 1.5, 0.25), (2, 1, 2, 1000, 0), (3, 2, 2, 250.5, 49.5);
";

#[tokio::test]
async fn every_table_exists_and_five_are_partitioned() {
    let db = TestDb::create_migrated().await;
    let c = db.client();

    let mut expected: Vec<&str> = DESIGN_TABLES.to_vec();
    expected.extend(["api_keys", "persister_checkpoints", "schema_migrations"]);
    for table in &expected {
        let kind: i8 = c
            .query_opt(
                "SELECT relkind FROM pg_class WHERE oid = to_regclass($1)",
                &[table],
            )
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("table {table} is missing"))
            .get(0);
        assert!(
            kind == b'r' as i8 || kind == b'p' as i8,
            "{table} has relkind {kind}"
        );
    }

    let rows = c
        .query(
            "SELECT c.relname::text, pg_get_partkeydef(c.oid) FROM pg_partitioned_table p \
             JOIN pg_class c ON c.oid = p.partrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    found.sort();
    let mut want: Vec<(String, String)> = PARTITIONED
        .iter()
        .map(|(t, k)| (t.to_string(), format!("RANGE ({k})")))
        .collect();
    want.sort();
    assert_eq!(found, want);

    // Primary keys of partitioned tables are (id, <partition key>).
    for (table, key) in PARTITIONED {
        let pk: String = c
            .query_one(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
                 WHERE conrelid = to_regclass($1) AND contype = 'p'",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(pk, format!("PRIMARY KEY (id, {key})"), "{table}");
    }

    // Money columns are NUMERIC, never floating point.
    let floats = scalar_i64(
        c,
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() \
         AND data_type IN ('real', 'double precision')",
    )
    .await;
    assert_eq!(floats, 0);
    assert_eq!(
        scalar_text(
            c,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'trading_pairs'::regclass AND attname = 'maker_fee'"
        )
        .await,
        "numeric(10,8)"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn partitions_exist_from_the_current_month_on() {
    let db = TestDb::create_migrated().await;
    let c = db.client();

    // The migration already created them, so a second call creates nothing.
    assert_eq!(
        scalar_i64(c, "SELECT create_monthly_partitions()::int8").await,
        0
    );
    for (table, _) in PARTITIONED {
        for months_ahead in 0..=3i32 {
            let row = c
                .query_one(
                    "WITH m AS (SELECT date_trunc('month', now() AT TIME ZONE 'UTC') \
                                       + make_interval(months => $2) AS start) \
                     SELECT $1::text || to_char(m.start, '\"_y\"YYYY\"m\"MM'), \
                            EXISTS (SELECT 1 FROM pg_inherits i \
                                    WHERE i.inhparent = to_regclass($1::text) \
                                      AND i.inhrelid = to_regclass($1::text || to_char(m.start, '\"_y\"YYYY\"m\"MM'))) \
                     FROM m",
                    &[&table, &months_ahead],
                )
                .await
                .unwrap();
            let (name, exists): (String, bool) = (row.get(0), row.get(1));
            assert!(exists, "partition {name} missing");
        }
    }
    db.drop_db().await;
}

#[tokio::test]
async fn create_monthly_partition_is_idempotent() {
    let db = TestDb::create_migrated().await;
    let c = db.client();
    let count = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'trades'::regclass";
    let before = scalar_i64(c, count).await;
    let first = scalar_text(c, "SELECT create_monthly_partition('trades', '2030-05-17')").await;
    let second = scalar_text(c, "SELECT create_monthly_partition('trades', '2030-05-01')").await;
    assert_eq!(first, "trades_y2030m05");
    assert_eq!(second, first);
    assert_eq!(scalar_i64(c, count).await, before + 1);

    // The range variant: 2 months x 5 tables, then nothing new.
    let created = "SELECT create_monthly_partitions('2031-02-10', '2031-03-01')::int8";
    assert_eq!(scalar_i64(c, created).await, 10);
    assert_eq!(scalar_i64(c, created).await, 0);

    // Only the five partitioned tables are accepted.
    let err = c
        .batch_execute("SELECT create_monthly_partition('users', '2030-01-01')")
        .await
        .expect_err("users is not partitioned");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PARAMETER_VALUE));
    db.drop_db().await;
}

#[tokio::test]
async fn december_to_january_boundary_lands_in_the_right_partitions() {
    let db = TestDb::create_migrated().await;
    let c = db.client();
    // A session time zone far from UTC must not move the month boundaries.
    c.batch_execute(
        "SET TIME ZONE 'Pacific/Auckland';
         SELECT create_monthly_partitions('2026-12-01', '2027-01-31');",
    )
    .await
    .unwrap();
    c.batch_execute(
        "INSERT INTO orders (id, user_id, trading_pair_id, type, side, time_in_force, amount, price,
                             remaining_amount, created_at, updated_at) VALUES
            (1, 1, 1, 'LIMIT', 'BUY', 'GTC', 1, 100, 1, '2026-12-31 23:59:59.999999+00', '2026-12-31 23:59:59.999999+00'),
            (2, 1, 1, 'LIMIT', 'SELL', 'GTC', 1, 100, 1, '2027-01-01 00:00:00+00', '2027-01-01 00:00:00+00');
         INSERT INTO trades (id, trading_pair_id, buy_order_id, sell_order_id, buyer_user_id, seller_user_id,
                             amount, price, quote_amount, buyer_fee_asset_id, seller_fee_asset_id, maker_side, created_at) VALUES
            (1, 1, 1, 2, 1, 2, 1, 100, 100, 1, 2, 'BUY', '2026-12-31 23:59:59.999999+00'),
            (2, 1, 1, 2, 1, 2, 1, 100, 100, 1, 2, 'SELL', '2027-01-01 00:00:00+00');
         INSERT INTO klines (id, trading_pair_id, interval, open_time, close_time, open_price, high_price,
                             low_price, close_price, updated_at) VALUES
            (1, 1, '1m', '2026-12-31 23:59:00+00', '2026-12-31 23:59:59.999+00', 1, 1, 1, 1, now()),
            (2, 1, '1m', '2027-01-01 00:00:00+00', '2027-01-01 00:00:59.999+00', 1, 1, 1, 1, now());
         INSERT INTO notifications (id, user_id, type, content, created_at, updated_at) VALUES
            (1, 1, 'IN_APP', 'x', '2026-12-31 23:59:59.999999+00', now()),
            (2, 1, 'IN_APP', 'y', '2027-01-01 00:00:00+00', now());
         INSERT INTO audit_logs (id, action, resource_type, created_at) VALUES
            (1, 'order.place', 'ORDER', '2026-12-31 23:59:59.999999+00'),
            (2, 'order.place', 'ORDER', '2027-01-01 00:00:00+00');",
    )
    .await
    .unwrap();

    for table in ["orders", "trades", "klines", "notifications", "audit_logs"] {
        let rows = c
            .query(
                &format!("SELECT id, tableoid::regclass::text FROM {table} ORDER BY id"),
                &[],
            )
            .await
            .unwrap();
        let placed: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            placed,
            vec![
                (1, format!("{table}_y2026m12")),
                (2, format!("{table}_y2027m01"))
            ],
            "{table}"
        );
    }

    // Bounds are exactly the UTC month boundaries.
    c.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    let bound = scalar_text(
        c,
        "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'orders_y2026m12'",
    )
    .await;
    assert_eq!(
        bound,
        "FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00')"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn a_month_without_partition_rejects_rows() {
    // No DEFAULT partition: rows for an uncovered month fail loudly.
    let db = TestDb::create_migrated().await;
    let err = db
        .client()
        .batch_execute(
            "INSERT INTO audit_logs (id, action, resource_type, created_at) \
             VALUES (1, 'x', 'SYSTEM', '2099-06-01Z')",
        )
        .await
        .expect_err("no partition for 2099-06");
    assert_eq!(err.code(), Some(&SqlState::CHECK_VIOLATION), "{err:?}");
    db.drop_db().await;
}

#[tokio::test]
async fn constraints_reject_bad_rows() {
    let db = TestDb::create_migrated().await;
    let c = db.client();
    c.batch_execute(WALLET).await.unwrap();

    expect_violation(
        c,
        "INSERT INTO accounts (id, user_id, asset_id, available_balance) VALUES (10, 2, 1, -0.000000000000000001)",
        &SqlState::CHECK_VIOLATION,
        "accounts_balance_check",
    )
    .await;
    expect_violation(
        c,
        "UPDATE accounts SET frozen_balance = frozen_balance - 1 WHERE id = 1",
        &SqlState::CHECK_VIOLATION,
        "accounts_balance_check",
    )
    .await;
    expect_violation(
        c,
        "INSERT INTO accounts (id, user_id, asset_id) VALUES (11, 1, 1)",
        &SqlState::UNIQUE_VIOLATION,
        "accounts_user_id_asset_id_key",
    )
    .await;

    // Ledger: before + amount must equal after.
    c.batch_execute(
        "INSERT INTO transactions (id, user_id, asset_id, type, amount, balance_before, balance_after,
                                   reference_type, reference_id)
         VALUES (1, 1, 1, 'DEPOSIT', 1.5, 0, 1.5, 'DEPOSIT', 1)",
    )
    .await
    .unwrap();
    expect_violation(
        c,
        "INSERT INTO transactions (id, user_id, asset_id, type, amount, balance_before, balance_after)
         VALUES (2, 1, 1, 'ADJUSTMENT', 1, 1.5, 2.4)",
        &SqlState::CHECK_VIOLATION,
        "transactions_balance_consistency_check",
    )
    .await;

    // Enum-like columns.
    expect_violation(
        c,
        "UPDATE users SET status = 'DELETED' WHERE id = 1",
        &SqlState::CHECK_VIOLATION,
        "users_status_check",
    )
    .await;
    expect_violation(
        c,
        "INSERT INTO orders (id, user_id, trading_pair_id, type, side, amount, price, remaining_amount,
                             status, created_at, updated_at)
         VALUES (1, 1, 1, 'LIMIT', 'BUY', 1, 1, 1, 'CANCELLED', now(), now())",
        &SqlState::CHECK_VIOLATION,
        "orders_status_check",
    )
    .await;
    expect_violation(
        c,
        "INSERT INTO orders (id, user_id, trading_pair_id, type, side, amount, price, remaining_amount,
                             created_at, updated_at)
         VALUES (1, 1, 1, 'LIMIT', 'HOLD', 1, 1, 1, now(), now())",
        &SqlState::CHECK_VIOLATION,
        "orders_side_check",
    )
    .await;
    expect_violation(
        c,
        "INSERT INTO balance_freezes (id, user_id, asset_id, amount, reason, status)
         VALUES (1, 1, 1, 1, 'ORDER', 'FROZEN')",
        &SqlState::CHECK_VIOLATION,
        "balance_freezes_status_check",
    )
    .await;
    expect_violation(
        c,
        "INSERT INTO deposit_withdrawals (id, user_id, asset_id, type, amount, status)
         VALUES (1, 1, 1, 'DEPOSIT', 1, 'APPROVED')",
        &SqlState::CHECK_VIOLATION,
        "deposit_withdrawals_deposit_status_check",
    )
    .await;
    expect_violation(
        c,
        "INSERT INTO risk_events (id, user_id, type, level) VALUES (1, 1, 'ORDER_RATE', 'SEVERE')",
        &SqlState::CHECK_VIOLATION,
        "risk_events_level_check",
    )
    .await;
    expect_violation(
        c,
        "INSERT INTO trading_pairs (id, symbol, base_asset_id, quote_asset_id, status, tick_size, step_size)
         VALUES (1, 'BTCUSDT', 1, 2, 'OPEN', 0.01, 0.00001)",
        &SqlState::CHECK_VIOLATION,
        "trading_pairs_status_check",
    )
    .await;

    // One settlement batch per date.
    c.batch_execute("INSERT INTO settlement_batches (id, batch_date) VALUES (1, '2026-11-01')")
        .await
        .unwrap();
    expect_violation(
        c,
        "INSERT INTO settlement_batches (id, batch_date) VALUES (2, '2026-11-01')",
        &SqlState::UNIQUE_VIOLATION,
        "settlement_batches_batch_date_key",
    )
    .await;

    // A deposit is identified by (asset, tx_hash).
    c.batch_execute(
        "INSERT INTO deposit_withdrawals (id, user_id, asset_id, type, amount, tx_hash)
         VALUES (1, 1, 1, 'DEPOSIT', 1, '0xabc')",
    )
    .await
    .unwrap();
    expect_violation(
        c,
        "INSERT INTO deposit_withdrawals (id, user_id, asset_id, type, amount, tx_hash)
         VALUES (2, 2, 1, 'DEPOSIT', 5, '0xabc')",
        &SqlState::UNIQUE_VIOLATION,
        "idx_deposit_withdrawals_deposit_tx",
    )
    .await;

    // Emails: several users may have none (''), a non-empty one is unique.
    c.batch_execute(
        "INSERT INTO users (id, username, email, password_hash) VALUES
             (0, 'exchange', '', 'x'), (3, 'admin', '', 'x'), (4, 'nomail', NULL, 'x')",
    )
    .await
    .unwrap();
    expect_violation(
        c,
        "INSERT INTO users (id, username, email, password_hash) VALUES (5, 'alice2', 'alice@example.com', 'x')",
        &SqlState::UNIQUE_VIOLATION,
        "users_email_key",
    )
    .await;

    // API key material must match its type.
    expect_violation(
        c,
        "INSERT INTO api_keys (id, user_id, api_key, key_type, public_key) VALUES (1, 1, 'k1', 'HMAC', 'pk')",
        &SqlState::CHECK_VIOLATION,
        "api_keys_material_check",
    )
    .await;
    db.drop_db().await;
}

#[tokio::test]
async fn foreign_keys_are_deferred_to_commit() {
    let mut db = TestDb::create_migrated().await;
    let c = db.client_mut();

    // Children before parents inside one transaction: fine at COMMIT.
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(
        "INSERT INTO transactions (id, user_id, asset_id, type, amount, balance_before, balance_after)
             VALUES (1, 7, 3, 'DEPOSIT', 2, 0, 2);
         INSERT INTO accounts (id, user_id, asset_id, available_balance) VALUES (1, 7, 3, 2);
         INSERT INTO assets (id, symbol, name) VALUES (3, 'ETH', 'Ether');
         INSERT INTO users (id, username, password_hash) VALUES (7, 'carol', 'x');",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // An account of a user that never appears fails at COMMIT. (The ledger
    // itself no longer checks `accounts` row by row, 0012: reconcile
    // reports a ledger total without its account.)
    let tx = c.transaction().await.unwrap();
    tx.batch_execute(
        "INSERT INTO accounts (id, user_id, asset_id, available_balance) VALUES (2, 8, 3, 2)",
    )
    .await
    .expect("deferred: accepted until commit");
    let err = tx.commit().await.expect_err("no such user at commit");
    assert_eq!(err.code(), Some(&SqlState::FOREIGN_KEY_VIOLATION));
    db.drop_db().await;
}

#[tokio::test]
async fn updated_at_trigger_uses_wall_clock_unless_journal_time_is_on() {
    let db = TestDb::create_migrated().await;
    let c = db.client();
    c.batch_execute(WALLET).await.unwrap();

    let row = c
        .query_one(
            "UPDATE users SET failed_login_attempts = 1 WHERE id = 1 \
             RETURNING version, updated_at > '2026-01-02Z'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, bool>(1)), (1, true));

    c.batch_execute("SET mx.journal_time = 'on'").await.unwrap();
    let row = c
        .query_one(
            "UPDATE users SET status = 'LOCKED', updated_at = '2026-01-05Z' WHERE id = 1 \
             RETURNING version, updated_at = '2026-01-05Z'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, bool>(1)), (2, true));

    // Writers may set version themselves (the engine's own counter).
    let version: i64 = c
        .query_one(
            "UPDATE users SET version = 42 WHERE id = 2 RETURNING version",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 42);
    db.drop_db().await;
}

#[tokio::test]
async fn views_report_balances_and_pair_stats() {
    let db = TestDb::create_migrated().await;
    let c = db.client();
    c.batch_execute(WALLET).await.unwrap();
    c.batch_execute(
        "SELECT create_monthly_partitions('2026-10-01', '2026-10-31');
         INSERT INTO assets (id, symbol, name) VALUES (3, 'ETH', 'Ether');
         INSERT INTO trading_pairs (id, symbol, base_asset_id, quote_asset_id, tick_size, step_size) VALUES
             (1, 'BTCUSDT', 1, 2, 0.01, 0.00001),
             (2, 'ETHUSDT', 3, 2, 0.01, 0.0001);
         UPDATE trading_pairs SET status = 'HALT' WHERE id = 2;
         INSERT INTO ticker_24hr (trading_pair_id, open_price, high_price, low_price, close_price,
                                  volume, quote_volume, price_change, price_change_percent, trades_count)
             VALUES (1, 100, 120, 90, 110, 3, 330, 10, 10, 3);
         INSERT INTO trades (id, trading_pair_id, buy_order_id, sell_order_id, buyer_user_id, seller_user_id,
                             amount, price, quote_amount, buyer_fee_asset_id, seller_fee_asset_id, maker_side, created_at)
         VALUES (1, 1, 1, 2, 1, 2, 1, 100, 100, 1, 2, 'BUY',  '2026-10-05Z'),
                (2, 1, 3, 2, 1, 2, 1, 110, 110, 1, 2, 'SELL', '2026-10-06Z'),
                (3, 1, 4, 5, 2, 1, 1, 120, 120, 1, 2, 'SELL', now());",
    )
    .await
    .unwrap();

    let rows = c
        .query(
            "SELECT username, symbol, trim_scale(available)::text, trim_scale(frozen)::text, \
                    trim_scale(total)::text \
             FROM user_balances ORDER BY username, symbol",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let want = [
        ("alice", "BTC", "1.5", "0.25", "1.75"),
        ("alice", "USDT", "1000", "0", "1000"),
        ("bob", "USDT", "250.5", "49.5", "300"),
    ];
    let want: Vec<(String, String, String, String, String)> = want
        .iter()
        .map(|(a, b, c, d, e)| {
            (
                a.to_string(),
                b.to_string(),
                c.to_string(),
                d.to_string(),
                e.to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);

    let rows = c
        .query(
            "SELECT symbol, status, base_asset, quote_asset, trim_scale(last_price)::text, \
                    trim_scale(volume_24h)::text, trades_count_24h, total_trades \
             FROM trading_pair_stats ORDER BY symbol",
            &[],
        )
        .await
        .unwrap();
    let btc = &rows[0];
    assert_eq!(btc.get::<_, &str>(0), "BTCUSDT");
    assert_eq!(btc.get::<_, &str>(1), "TRADING");
    assert_eq!(
        (btc.get::<_, &str>(2), btc.get::<_, &str>(3)),
        ("BTC", "USDT")
    );
    assert_eq!(btc.get::<_, Option<String>>(4).as_deref(), Some("110"));
    assert_eq!(btc.get::<_, String>(5), "3");
    assert_eq!((btc.get::<_, i64>(6), btc.get::<_, i64>(7)), (3, 3));
    let eth = &rows[1];
    assert_eq!(eth.get::<_, &str>(0), "ETHUSDT");
    assert_eq!(eth.get::<_, &str>(1), "HALT");
    assert_eq!(eth.get::<_, Option<String>>(4), None, "no ticker yet");
    assert_eq!(eth.get::<_, String>(5), "0");
    assert_eq!((eth.get::<_, i64>(6), eth.get::<_, i64>(7)), (0, 0));
    assert_eq!(rows.len(), 2);
    db.drop_db().await;
}

#[tokio::test]
async fn base_data_roles_and_permissions() {
    let db = TestDb::create_migrated().await;
    let c = db.client();

    let roles: Vec<String> = c
        .query("SELECT name::text FROM roles ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(roles, ["ADMIN", "OPERATOR", "SUPPORT", "AUDITOR", "TRADER"]);

    let permissions: Vec<String> = c
        .query("SELECT name::text FROM permissions ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for required in [
        "users:read",
        "users:write",
        "users:lock",
        "roles:grant",
        "assets:read",
        "assets:write",
        "pairs:read",
        "pairs:write",
        "kyc:read",
        "kyc:review",
        "deposits:write",
        "withdrawals:read",
        "withdrawals:approve",
        "risk:read",
        "risk:write",
        "settlement:read",
        "settlement:run",
        "notifications:read",
        "notifications:write",
        "audit:read",
        "fees:read",
        "fees:write",
        "orders:read",
        "orders:write",
        "orders:cancel_any",
        "accounts:read",
        "accounts:adjust",
        "api_keys:read",
        "api_keys:write",
    ] {
        assert!(
            permissions.iter().any(|p| p == required),
            "missing {required}"
        );
    }
    assert!(
        scalar_bool(
            c,
            "SELECT bool_and(name = resource || ':' || action) FROM permissions"
        )
        .await
    );

    let missing_for_admin = scalar_i64(
        c,
        "SELECT count(*) FROM permissions p WHERE NOT EXISTS (
             SELECT 1 FROM role_permissions rp JOIN roles r ON r.id = rp.role_id
             WHERE r.name = 'ADMIN' AND rp.permission_id = p.id)",
    )
    .await;
    assert_eq!(missing_for_admin, 0, "ADMIN has every permission");

    let auditor = "SELECT p.action::text FROM role_permissions rp JOIN roles r ON r.id = rp.role_id
                   JOIN permissions p ON p.id = rp.permission_id WHERE r.name = 'AUDITOR'";
    let actions: Vec<String> = c
        .query(auditor, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!actions.is_empty());
    assert!(
        actions.iter().all(|a| a == "read"),
        "AUDITOR is read-only: {actions:?}"
    );
    assert_eq!(
        actions.len() as i64,
        scalar_i64(c, "SELECT count(*) FROM permissions WHERE action = 'read'").await,
        "AUDITOR reads everything, audit log included"
    );

    let trader_has = |perm: &'static str| {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM role_permissions rp JOIN roles r ON r.id = rp.role_id
             JOIN permissions p ON p.id = rp.permission_id WHERE r.name = 'TRADER' AND p.name = '{perm}')"
        );
        async move { scalar_bool(c, &sql).await }
    };
    assert!(trader_has("orders:write").await);
    assert!(trader_has("api_keys:write").await);
    assert!(!trader_has("orders:cancel_any").await);
    assert!(!trader_has("accounts:adjust").await);
    assert!(!trader_has("users:read").await);

    // No assets or pairs are seeded: they come through the journal.
    assert_eq!(scalar_i64(c, "SELECT count(*) FROM assets").await, 0);
    assert_eq!(scalar_i64(c, "SELECT count(*) FROM trading_pairs").await, 0);
    db.drop_db().await;
}

/// migrations/README.md carries the role matrix for the gateway; it must say
/// exactly what the base data does.
#[tokio::test]
async fn readme_matrix_matches_base_data() {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations/README.md"
    ))
    .expect("migrations/README.md");
    let mut documented: Vec<(String, String)> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    let mut in_matrix = false;
    for line in readme.lines() {
        let cells: Vec<String> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(|s| s.trim().trim_matches('`').to_string())
            .collect();
        if line.trim_start().starts_with("| permission") {
            header = cells;
            in_matrix = true;
            continue;
        }
        if !in_matrix {
            continue;
        }
        if !line.trim_start().starts_with('|') {
            in_matrix = false;
            continue;
        }
        if cells[0].starts_with("---") {
            continue;
        }
        for (role, mark) in header.iter().zip(&cells).skip(1) {
            if mark == "x" {
                documented.push((role.clone(), cells[0].clone()));
            }
        }
    }
    documented.sort();
    assert!(
        !documented.is_empty(),
        "no matrix found in migrations/README.md"
    );

    let db = TestDb::create_migrated().await;
    let rows = db
        .client()
        .query(
            "SELECT r.name::text, p.name::text FROM role_permissions rp
             JOIN roles r ON r.id = rp.role_id JOIN permissions p ON p.id = rp.permission_id
             ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let seeded: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(documented, seeded);
    db.drop_db().await;
}
