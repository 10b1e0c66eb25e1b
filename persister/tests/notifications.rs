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
        1 => Command::AddAsset(AssetSpec {
            symbol: "USDT".into(),
            name: "Tether".into(),
            decimals: 8,
            min_withdraw_units: 0,
            withdraw_fee_units: 0,
            daily_withdraw_limit_units: 0,
            confirmations: 1,
            active: true,
        }),
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
