//! Binary COPY values against real Postgres: every decimal string the rows
//! are made of, sent as binary NUMERIC, reads back equal to the same
//! string parsed by Postgres as text (what the UNNEST path sends); JSON
//! sent as binary JSONB reads back as the same document.

use std::pin::pin;

use bytes::Bytes;
use persister::copy::{JsonbText, NumericText};
use persister::rows::dec;
use persister::testdb::TestDb;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

fn rng(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::test]
async fn binary_numeric_and_jsonb_equal_the_text_path() {
    let mut values: Vec<String> = [
        "0",
        "0.000000000000000000",
        "0.000000000000000001",
        "1",
        "-1",
        "10000",
        "9999",
        "0.0001",
        "0.00012345",
        "-0.5",
        "30000.12000000",
        "123456789012345678.123456789012345678",
        "18446744073709551615",
        "-184467440737.09551615",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..2_000u64 {
        let r = rng(i);
        let units = match i % 3 {
            0 => u128::from(r % 1_000),
            1 => u128::from(r),
            _ => u128::from(r) * u128::from(rng(r) % 1_000_000),
        };
        let d = (rng(r ^ 7) % 19) as u8;
        let s = dec(units, d);
        values.push(if r & 1 == 1 { format!("-{s}") } else { s });
    }
    let mut db = TestDb::create().await;
    let c = db.client_mut();
    c.batch_execute(
        "CREATE TABLE n (i int4, v numeric, v18 numeric(38,18), doc jsonb);
         CREATE TABLE t (i int4, v text)",
    )
    .await
    .unwrap();
    let tx = c.transaction().await.unwrap();
    let sink = tx
        .copy_in::<_, Bytes>("COPY n (i, v, v18, doc) FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    let mut w = pin!(BinaryCopyInWriter::new(
        sink,
        &[Type::INT4, Type::NUMERIC, Type::NUMERIC, Type::JSONB]
    ));
    for (i, v) in values.iter().enumerate() {
        // Values past numeric(38,18)'s 20 integer digits only go to `v`.
        let fits = v.trim_start_matches('-').split('.').next().unwrap().len() <= 20;
        let v18 = fits.then_some(NumericText(v));
        let doc = format!("{{\"i\":{i},\"v\":\"{v}\",\"s\":\"x\\\"y\"}}");
        w.as_mut()
            .write(&[&(i as i32), &NumericText(v), &v18, &JsonbText(&doc)])
            .await
            .unwrap();
    }
    assert_eq!(w.finish().await.unwrap(), values.len() as u64);
    let ids: Vec<i32> = (0..values.len() as i32).collect();
    tx.execute(
        "INSERT INTO t SELECT * FROM UNNEST($1::int4[], $2::text[])",
        &[&ids, &values],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let bad = c
        .query(
            "SELECT n.i, t.v, n.v::text, n.v18::text FROM n JOIN t USING (i)
             WHERE n.v IS DISTINCT FROM t.v::numeric
                OR n.v::text IS DISTINCT FROM t.v::numeric::text
                OR (n.v18 IS NOT NULL AND n.v18::text IS DISTINCT FROM t.v::numeric(38,18)::text)
                OR n.doc IS DISTINCT FROM jsonb_build_object('i', n.i, 'v', t.v, 's', 'x\"y')",
            &[],
        )
        .await
        .unwrap();
    let bad: Vec<String> = bad
        .iter()
        .take(5)
        .map(|r| {
            format!(
                "{}: {:?} -> {:?} / {:?}",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, Option<String>>(2),
                r.get::<_, Option<String>>(3)
            )
        })
        .collect();
    assert!(bad.is_empty(), "binary != text: {bad:#?}");
    db.drop_db().await;
}
