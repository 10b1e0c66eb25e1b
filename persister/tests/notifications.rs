//! In-app notifications reach `notifications` on real Postgres
//! (`DATABASE_URL`, own database): one IN_APP row per derived notification
//! (`persister::notify::derive`) with the deterministic id, the journal
//! time as `created_at` and status SENT; a `MarkNotificationsRead` turns
//! the owner's row READ (also within the batch that inserts it, and never
//! another user's); the template seed is there; every row satisfies the
//! table's CHECKs (the inserts would fail otherwise).

mod common;

use common::{append_journal, write_to};
use engine::*;
use persister::replica::DataDir;
use persister::rows::ROW_ID_SHIFT;
use persister::testdb::TestDb;

/// 2024-03-01T00:00:00Z.
const BASE_MS: u64 = 1_709_251_200_000;
const ONE: u64 = 100_000_000;

fn nid(seq: u64) -> u64 {
    seq << ROW_ID_SHIFT
}

fn deposit(tx: &str, amount: u64) -> Command {
    Command::Deposit {
        user: UserId(1),
        asset: AssetId(1),
        amount,
        tx_hash: tx.into(),
        confirmations: 1,
        by: None,
    }
}

fn user(name: &str) -> Command {
    Command::CreateUser {
        username: name.into(),
        email: format!("{name}@example.com"),
        password_hash: "$argon2id$v=19$x".into(),
        roles: roles::TRADER,
    }
}

fn cmd(seq: u64) -> Command {
    match seq {
        1 => Command::AddAsset {
            spec: AssetSpec {
                symbol: "USDT".into(),
                name: "Tether".into(),
                decimals: 8,
                min_withdraw_units: 0,
                withdraw_fee_units: 0,
                daily_withdraw_limit_units: 0,
                confirmations: 1,
                active: true,
            },
            by: None,
        },
        2 => user("alice"),
        3 => deposit("0xa", 100 * ONE),
        4 => Command::MarkNotificationsRead {
            user: UserId(1),
            ids: vec![nid(3)],
        },
        5 => deposit("0xb", 5 * ONE),
        // Read in the batch that inserts it.
        6 => Command::MarkNotificationsRead {
            user: UserId(1),
            ids: vec![nid(5)],
        },
        7 => Command::SetNotificationWebhook {
            user: UserId(1),
            url: "http://example.com/hook".into(),
        },
        8 => user("bob"),
        9 => deposit("0xc", ONE),
        // Bob cannot mark Alice's notification.
        10 => Command::MarkNotificationsRead {
            user: UserId(2),
            ids: vec![nid(9)],
        },
        // Read again: the first read_at stays.
        _ => Command::MarkNotificationsRead {
            user: UserId(1),
            ids: vec![nid(3)],
        },
    }
}

fn ts_of(seq: u64) -> u64 {
    BASE_MS + seq * 60_000
}

type Row = (
    i64,
    i64,
    Option<i64>,
    String,
    Option<String>,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
);

async fn rows(c: &tokio_postgres::Client) -> Vec<Row> {
    c.query(
        "SELECT id, user_id, template_id, type, title, content, status,
                (extract(epoch FROM created_at) * 1000)::bigint,
                (extract(epoch FROM sent_at) * 1000)::bigint,
                (extract(epoch FROM read_at) * 1000)::bigint,
                (extract(epoch FROM updated_at) * 1000)::bigint
         FROM notifications ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
            r.get(7),
            r.get(8),
            r.get(9),
            r.get(10),
        )
    })
    .collect()
}

fn row(seq: u64, amount: &str, read: Option<u64>) -> Row {
    let t = ts_of(seq) as i64;
    (
        nid(seq) as i64,
        1,
        Some(4),
        "IN_APP".into(),
        Some("Deposit credited".into()),
        format!(
            "{amount} USDT were credited to your account (deposit {}).",
            match seq {
                3 => 1,
                5 => 2,
                _ => 3,
            }
        ),
        if read.is_some() { "READ" } else { "SENT" }.into(),
        t,
        Some(t),
        read.map(|r| ts_of(r) as i64),
        read.map_or(t, |r| ts_of(r) as i64),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_rows_land_and_follow_read_marks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    let db = TestDb::create_migrated().await;
    let c = db.client();

    let templates: i64 = c
        .query_one(
            "SELECT count(*) FROM notification_templates WHERE type = 'IN_APP' AND is_active",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(templates as usize, persister::notify::TEMPLATES.len());

    // Batch 1: the first deposit.
    append_journal(&data, 3, cmd, ts_of);
    let (url, d) = (db.url().to_owned(), data.clone());
    tokio::task::spawn_blocking(move || write_to(&url, &d, 3))
        .await
        .unwrap();
    assert_eq!(rows(c).await, vec![row(3, "100.00000000", None)]);

    // Batch 2: read marks across batches and within one; another user's
    // mark changes nothing; a second mark keeps the first read time.
    append_journal(&data, 11, cmd, ts_of);
    let (url, d) = (db.url().to_owned(), data.clone());
    tokio::task::spawn_blocking(move || write_to(&url, &d, 11))
        .await
        .unwrap();
    assert_eq!(
        rows(c).await,
        vec![
            row(3, "100.00000000", Some(4)),
            row(5, "5.00000000", Some(6)),
            row(9, "1.00000000", None),
        ]
    );
    let partitions: i64 = c
        .query_one("SELECT count(DISTINCT tableoid) FROM notifications", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitions, 1, "rows live in the month's partition");
}

/// Journal of the template-edit test: alice (1) gets deposits, admin (2)
/// edits `deposit_credited` between them, then deactivates it.
fn edit_cmd(seq: u64) -> Command {
    let edit = |content: &str, active| Command::SetNotificationTemplate {
        by: UserId(2),
        name: "deposit_credited".into(),
        subject: "Funds in: {asset}".into(),
        content: content.into(),
        active,
    };
    match seq {
        1 | 2 => cmd(seq),
        3 => Command::CreateUser {
            username: "admin".into(),
            email: "admin@example.com".into(),
            password_hash: "$argon2id$v=19$x".into(),
            roles: roles::ADMIN,
        },
        4 => deposit("0xa", ONE),
        5 => edit("+{amount} {asset} (#{deposit_id})", true),
        6 => deposit("0xb", 2 * ONE),
        7 => edit("+{amount} {asset} (#{deposit_id})", false),
        _ => deposit("0xc", 3 * ONE),
    }
}

async fn text_rows(c: &tokio_postgres::Client) -> Vec<(i64, Option<String>, String)> {
    c.query(
        "SELECT id, title, content FROM notifications ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// A journaled template edit renders every later notification with the new
/// text (earlier ones keep the old), an inactive template produces none,
/// the `notification_templates` row follows the edit (journal time as
/// `updated_at`), each edit has an audit row naming the admin, and a replay
/// into an empty database writes the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_edits_render_later_notifications_and_update_the_template_row() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    let db = TestDb::create_migrated().await;
    let c = db.client();

    append_journal(&data, 4, edit_cmd, ts_of);
    let (url, d) = (db.url().to_owned(), data.clone());
    tokio::task::spawn_blocking(move || write_to(&url, &d, 4))
        .await
        .unwrap();
    append_journal(&data, 8, edit_cmd, ts_of);
    let (url, d) = (db.url().to_owned(), data.clone());
    tokio::task::spawn_blocking(move || write_to(&url, &d, 8))
        .await
        .unwrap();

    let expected = vec![
        (
            nid(4) as i64,
            Some("Deposit credited".to_owned()),
            "1.00000000 USDT were credited to your account (deposit 1).".to_owned(),
        ),
        (
            nid(6) as i64,
            Some("Funds in: USDT".to_owned()),
            "+2.00000000 USDT (#2)".to_owned(),
        ),
    ];
    assert_eq!(text_rows(c).await, expected);

    let t = c
        .query_one(
            "SELECT subject, content, is_active,
                    (extract(epoch FROM updated_at) * 1000)::bigint
             FROM notification_templates WHERE name = 'deposit_credited'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        t.get::<_, Option<String>>(0).as_deref(),
        Some("Funds in: {asset}")
    );
    assert_eq!(t.get::<_, String>(1), "+{amount} {asset} (#{deposit_id})");
    assert!(!t.get::<_, bool>(2));
    assert_eq!(t.get::<_, i64>(3), ts_of(7) as i64);
    // The other templates are untouched.
    let untouched: i64 = c
        .query_one(
            "SELECT count(*) FROM notification_templates WHERE is_active",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(untouched as usize, persister::notify::TEMPLATES.len() - 1);

    let audit: Vec<String> = c
        .query(
            "SELECT id || ' ' || action || ' ' || resource_type || ' ' || resource_id || ' '
                    || coalesce(user_id::text, '-')
             FROM audit_logs WHERE resource_type = 'NOTIFICATION_TEMPLATE' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        audit,
        vec![
            "5 notification_template.update NOTIFICATION_TEMPLATE deposit_credited 2",
            "7 notification_template.update NOTIFICATION_TEMPLATE deposit_credited 2",
        ]
    );

    // Deterministic: a replay of the same journal in one go writes the same.
    let db2 = TestDb::create_migrated().await;
    let (url, d) = (db2.url().to_owned(), data.clone());
    tokio::task::spawn_blocking(move || write_to(&url, &d, 8))
        .await
        .unwrap();
    assert_eq!(text_rows(db2.client()).await, expected);
}
