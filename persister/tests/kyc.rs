//! KYC records reach `kyc_records` on real Postgres (`DATABASE_URL`, own
//! database): inserted at submission, updated by the review in a later
//! batch (status, reviewer, review time, notes), the document number as the
//! journaled ciphertext and never the plaintext; `users.kyc_level` follows
//! an approval; outbox and audit rows are written; a record whose data is
//! not a JSON object cannot wedge the writer.

mod common;

use common::{append_journal, write_to};
use engine::*;
use persister::replica::DataDir;
use persister::rows::kyc_document_text;
use persister::testdb::TestDb;

/// 2024-03-01T00:00:00Z.
const BASE_MS: u64 = 1_709_251_200_000;
const PLAINTEXT: &str = "P1234567";

/// Stands in for the gateway's AEAD envelope (version byte, nonce,
/// ciphertext + tag): opaque bytes that do not contain the plaintext.
fn ciphertext(seed: u8) -> Vec<u8> {
    let mut v = vec![1u8];
    v.extend((0..12 + PLAINTEXT.len() + 16).map(|i| {
        seed.wrapping_mul(31)
            .wrapping_add((i as u8).wrapping_mul(7))
            | 0x80
    }));
    v
}

fn cmd(seq: u64) -> Command {
    match seq {
        1 => Command::CreateUser {
            username: "alice".into(),
            email: "alice@example.com".into(),
            password_hash: "$argon2id$v=19$x".into(),
            roles: roles::TRADER,
        },
        2 => Command::CreateUser {
            username: "oscar".into(),
            email: String::new(),
            password_hash: "$argon2id$v=19$x".into(),
            roles: roles::OPERATOR,
        },
        3 => Command::SubmitKyc {
            user: UserId(1),
            level: 2,
            document_type: KycDocumentType::Passport,
            document_number: ciphertext(1),
            data: r#"{"first_name":"Alice","country":"DE"}"#.into(),
        },
        // Braces but not JSON: the engine stores it; the writer must cope.
        4 => Command::SubmitKyc {
            user: UserId(2),
            level: 1,
            document_type: KycDocumentType::Other,
            document_number: ciphertext(2),
            data: "{ not json }".into(),
        },
        5 => Command::ReviewKyc {
            kyc: 1,
            reviewer: UserId(2),
            approve: true,
            notes: "documents match".into(),
        },
        6 => Command::ReviewKyc {
            kyc: 2,
            reviewer: UserId(1),
            approve: false,
            notes: "blurry scan".into(),
        },
        // Rejected (already reviewed): changes no row.
        _ => Command::ReviewKyc {
            kyc: 1,
            reviewer: UserId(2),
            approve: false,
            notes: "again".into(),
        },
    }
}

fn ts_of(seq: u64) -> u64 {
    BASE_MS + seq * 60_000
}

type Row = (
    i64,
    i64,
    i16,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
);

async fn rows(c: &tokio_postgres::Client) -> Vec<Row> {
    c.query(
        "SELECT id, user_id, level, status, document_type, document_number,
                submitted_data::text, review_notes, reviewed_by,
                (extract(epoch FROM reviewed_at) * 1000)::bigint,
                (extract(epoch FROM created_at) * 1000)::bigint, version
         FROM kyc_records ORDER BY id",
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
            r.get(11),
        )
    })
    .collect()
}

async fn scalar(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kyc_records_are_inserted_then_reviewed_with_ciphertext_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    let db = TestDb::create_migrated().await;
    let c = db.client();

    // Batch 1: the submissions.
    append_journal(&data, 4, cmd, ts_of);
    let (url, d) = (db.url().to_owned(), data.clone());
    tokio::task::spawn_blocking(move || write_to(&url, &d, 4))
        .await
        .unwrap();
    let doc1 = kyc_document_text(&ciphertext(1));
    let doc2 = kyc_document_text(&ciphertext(2));
    assert!(doc1.starts_with("enc:01"), "{doc1}");
    assert_eq!(
        rows(c).await,
        vec![
            (
                1,
                1,
                2,
                "PENDING".into(),
                "PASSPORT".into(),
                doc1.clone(),
                r#"{"country": "DE", "first_name": "Alice"}"#.into(),
                None,
                None,
                None,
                ts_of(3) as i64,
                3
            ),
            (
                2,
                2,
                1,
                "PENDING".into(),
                "OTHER".into(),
                doc2.clone(),
                r#"{"unparsed": "{ not json }"}"#.into(),
                None,
                None,
                None,
                ts_of(4) as i64,
                4
            ),
        ]
    );
    assert_eq!(
        scalar(c, "SELECT kyc_level::bigint FROM users WHERE id = 1").await,
        0
    );

    // Batch 2: the reviews update the same rows.
    append_journal(&data, 7, cmd, ts_of);
    let (url, d) = (db.url().to_owned(), data.clone());
    tokio::task::spawn_blocking(move || write_to(&url, &d, 7))
        .await
        .unwrap();
    let r = rows(c).await;
    assert_eq!(r.len(), 2);
    let (a, b) = (&r[0], &r[1]);
    assert_eq!(
        (a.3.as_str(), a.7.as_deref(), a.8, a.9, a.11),
        (
            "APPROVED",
            Some("documents match"),
            Some(2),
            Some(ts_of(5) as i64),
            5
        )
    );
    assert_eq!(
        (b.3.as_str(), b.7.as_deref(), b.8, b.9, b.11),
        (
            "REJECTED",
            Some("blurry scan"),
            Some(1),
            Some(ts_of(6) as i64),
            6
        )
    );
    // Submission columns are untouched by the review.
    assert_eq!((a.5.as_str(), a.10), (doc1.as_str(), ts_of(3) as i64));
    assert_eq!(b.5, doc2);
    // The approval raised alice's level; the rejection left oscar's.
    assert_eq!(
        scalar(c, "SELECT kyc_level::bigint FROM users WHERE id = 1").await,
        2
    );
    assert_eq!(
        scalar(c, "SELECT kyc_level::bigint FROM users WHERE id = 2").await,
        0
    );
    // Ciphertext only: the plaintext appears nowhere in the row, in any
    // encoding the column could hold.
    let hex_plain: String = PLAINTEXT.bytes().map(|b| format!("{b:02x}")).collect();
    for needle in [PLAINTEXT.to_owned(), hex_plain] {
        assert_eq!(
            c.query_one(
                "SELECT count(*) FROM kyc_records k WHERE strpos(k::text, $1) > 0",
                &[&needle]
            )
            .await
            .unwrap()
            .get::<_, i64>(0),
            0
        );
    }
    // Outbox events and the review's audit rows.
    assert_eq!(
        scalar(
            c,
            "SELECT count(*) FROM outbox_events WHERE aggregate_type = 'KYC'
               AND event_type IN ('kyc.submitted', 'kyc.approved', 'kyc.rejected')"
        )
        .await,
        4
    );
    assert_eq!(
        scalar(
            c,
            "SELECT count(*) FROM audit_logs WHERE action = 'kyc.review' AND resource_type = 'KYC'"
        )
        .await,
        2
    );
    // Each review names its reviewer (records 5 and 6: admins 2 and 1).
    let reviewers: String = c
        .query_one(
            "SELECT string_agg(user_id::text, ',' ORDER BY created_at, id) FROM audit_logs
             WHERE action = 'kyc.review'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reviewers, "2,1");
    db.drop_db().await;
}
