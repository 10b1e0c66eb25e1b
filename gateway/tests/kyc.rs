//! Black-box tests of KYC on the native API against a real
//! `mini-exchange serve`: submit -> list -> an admin approves -> the user's
//! KYC level is raised (GET /api/v1/me; there is no withdrawal endpoint
//! yet); the reject path; RBAC; every bad input is a JSON 4xx that changes
//! nothing; records survive a clean restart and a SIGKILL; the document
//! number never appears in plain text in the data directory, and with
//! Postgres the `kyc_records` row holds ciphertext only.

mod common;

use std::path::{Path, PathBuf};

use common::native::{call, err_code as err};
use common::*;
use serde_json::{json, Value};

const DOC: &str = "P1234567";

fn get(s: &Server, path: &str, token: Option<&str>) -> Resp {
    call(s, "GET", path, token, b"")
}

/// POST a raw body (any bytes, not necessarily JSON).
fn post_raw(s: &Server, path: &str, token: Option<&str>, body: &[u8]) -> Resp {
    call(s, "POST", path, token, body)
}

fn register(s: &Server, name: &str) -> String {
    let pw = format!("{name}-password-1");
    let r = s.json_post(
        "/api/v1/auth/register",
        None,
        &json!({"username": name, "email": format!("{name}@example.com"), "password": pw}),
    );
    assert_eq!(r.status, 201, "register {name}: {}", r.json);
    login(s, name, &pw)
}

fn submit(s: &Server, token: &str, body: Value) -> Resp {
    s.json_post("/api/v1/kyc", Some(token), &body)
}

fn passport(level: u64) -> Value {
    json!({
        "level": level,
        "document_type": "PASSPORT",
        "document_number": DOC,
        "data": {"first_name": "Alice", "last_name": "Liddell", "country": "GB"},
    })
}

fn kyc_level(s: &Server, token: &str) -> u64 {
    let r = get(s, "/api/v1/me", Some(token));
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["kyc_level"].as_u64().unwrap()
}

fn review(s: &Server, token: &str, id: &str, action: &str, notes: Option<&str>) -> Resp {
    let path = format!("/api/v1/admin/kyc/{id}/{action}");
    match notes {
        Some(n) => s.json_post(&path, Some(token), &json!({ "notes": n })),
        None => post_raw(s, &path, Some(token), b""),
    }
}

/// Every record the admin sees, all statuses.
fn all_records(s: &Server, admin: &str) -> Vec<Value> {
    let r = get(s, "/api/v1/admin/kyc?limit=1000", Some(admin));
    assert_eq!(r.status, 200, "{}", r.json);
    r.json.as_array().unwrap().clone()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// No file of the data directory holds `plain`.
fn assert_not_stored(data: &Path, plain: &str) {
    let all = files(data);
    assert!(all.iter().any(|p| p.to_string_lossy().contains("journal")));
    for p in all {
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !bytes.windows(plain.len()).any(|w| w == plain.as_bytes()),
            "{} holds a document number in plain text",
            p.display()
        );
    }
}

#[test]
fn kyc_submit_review_reject_bad_inputs_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(tmp.path(), port);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let alice = register(&s, "kycalice");
    let bob = register(&s, "kycbob");
    let carol = register(&s, "kyccarol");

    // ---- submit -> list
    let r = submit(&s, &alice, passport(2));
    assert_eq!(r.status, 201, "{}", r.json);
    let rec = r.json.clone();
    let id = rec["id"].as_u64().unwrap();
    assert_eq!(rec["username"], "kycalice");
    assert_eq!(rec["level"], 2);
    assert_eq!(rec["document_type"], "PASSPORT");
    assert_eq!(rec["document_number"], "****4567");
    assert_eq!(rec["status"], "PENDING");
    assert_eq!(rec["data"]["country"], "GB");
    assert_eq!(rec["reviewed_at"], Value::Null);
    assert!(!r.body.contains(DOC), "plaintext in the answer: {}", r.body);
    let mine = get(&s, "/api/v1/kyc", Some(&alice));
    assert_eq!(mine.status, 200);
    assert_eq!(mine.json, json!([rec]));
    // The others see nothing of it.
    assert_eq!(get(&s, "/api/v1/kyc", Some(&bob)).json, json!([]));
    // One pending record at a time.
    assert_eq!(err(&submit(&s, &alice, passport(3))), (409, -4098));

    // ---- RBAC: traders cannot list or review; no token is 401
    assert_eq!(
        err(&get(&s, "/api/v1/admin/kyc?status=PENDING", Some(&alice))),
        (403, -4030)
    );
    for token in [&alice, &bob] {
        let r = review(&s, token, &id.to_string(), "approve", Some("me"));
        assert_eq!(err(&r), (403, -4030));
    }
    assert_eq!(err(&submit(&s, "not-a-token", passport(1))), (401, -4010));
    assert_eq!(err(&post_raw(&s, "/api/v1/kyc", None, b"{}")), (401, -4010));
    assert_eq!(err(&get(&s, "/api/v1/kyc", None)), (401, -4010));
    assert_eq!(err(&get(&s, "/api/v1/admin/kyc", None)), (401, -4010));
    for action in ["approve", "reject"] {
        let r = post_raw(
            &s,
            &format!("/api/v1/admin/kyc/{id}/{action}"),
            None,
            br#"{"notes":"x"}"#,
        );
        assert_eq!(err(&r), (401, -4010));
    }
    assert_eq!(
        get(&s, "/api/v1/kyc", Some(&alice)).json[0]["status"],
        "PENDING"
    );

    // ---- the admin queue
    let q = get(&s, "/api/v1/admin/kyc?status=PENDING", Some(&admin));
    assert_eq!(q.status, 200, "{}", q.json);
    assert_eq!(q.json, json!([rec]));
    for bad in ["status=DONE", "limit=0", "limit=1001", "limit=x"] {
        let r = get(&s, &format!("/api/v1/admin/kyc?{bad}"), Some(&admin));
        assert_eq!(err(&r), (400, -4004), "{bad}");
    }

    // ---- approve -> level raised
    assert_eq!(kyc_level(&s, &alice), 0);
    let r = review(
        &s,
        &admin,
        &id.to_string(),
        "approve",
        Some("passport checked"),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "APPROVED");
    assert_eq!(r.json["review_notes"], "passport checked");
    assert_eq!(r.json["reviewed_by_username"], ADMIN);
    assert_eq!(r.json["kyc_level"], 2);
    assert!(r.json["reviewed_at"].as_u64().unwrap() >= rec["created_at"].as_u64().unwrap());
    assert_eq!(kyc_level(&s, &alice), 2);
    assert_eq!(
        get(&s, "/api/v1/kyc", Some(&alice)).json[0]["status"],
        "APPROVED"
    );
    assert_eq!(
        get(&s, "/api/v1/admin/kyc?status=pending", Some(&admin)).json,
        json!([])
    );
    // Reviewed already, either way.
    for action in ["approve", "reject"] {
        let r = review(&s, &admin, &id.to_string(), action, Some("again"));
        assert_eq!(err(&r), (409, -4099), "{action}");
    }
    // Unknown or malformed ids.
    assert_eq!(
        err(&review(&s, &admin, "999", "approve", None)),
        (404, -4045)
    );
    for bad in ["abc", "0", "-1", "1e3", "99999999999999999999999"] {
        assert_eq!(
            err(&review(&s, &admin, bad, "approve", None)),
            (400, -4004),
            "{bad}"
        );
    }

    // ---- reject path (notes required), then a new submission is allowed
    let r = submit(
        &s,
        &bob,
        json!({"level": 1, "document_type": "id_card", "document_number": "ID-99887766"}),
    );
    assert_eq!(r.status, 201, "{}", r.json);
    let bob_id = r.json["id"].as_u64().unwrap().to_string();
    assert_eq!(r.json["document_type"], "ID_CARD");
    assert_eq!(r.json["document_number"], "****7766");
    assert_eq!(r.json["data"], json!({}));
    for notes in [None, Some(""), Some("   ")] {
        assert_eq!(
            err(&review(&s, &admin, &bob_id, "reject", notes)),
            (400, -4004),
            "{notes:?}"
        );
    }
    let long = "n".repeat(1025);
    assert_eq!(
        err(&review(&s, &admin, &bob_id, "reject", Some(&long))),
        (400, -4004)
    );
    let r = post_raw(
        &s,
        &format!("/api/v1/admin/kyc/{bob_id}/reject"),
        Some(&admin),
        br#"{"notes": 5}"#,
    );
    assert_eq!(err(&r), (400, -4000));
    let r = review(&s, &admin, &bob_id, "reject", Some("blurry scan"));
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "REJECTED");
    assert_eq!(r.json["review_notes"], "blurry scan");
    assert_eq!(r.json["kyc_level"], 0);
    assert_eq!(kyc_level(&s, &bob), 0);
    let r = submit(&s, &bob, passport(1));
    assert_eq!(r.status, 201, "{}", r.json);
    let bob_id2 = r.json["id"].as_u64().unwrap().to_string();
    let mine = get(&s, "/api/v1/kyc", Some(&bob)).json;
    let statuses: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["PENDING", "REJECTED"]);

    // ---- nobody reviews their own record (the admin may submit too)
    let r = submit(&s, &admin, passport(1));
    assert_eq!(r.status, 201, "{}", r.json);
    let admin_id = r.json["id"].as_u64().unwrap().to_string();
    assert_eq!(
        err(&review(&s, &admin, &admin_id, "approve", None)),
        (403, -4033)
    );

    // ---- bad inputs: clear JSON errors, nothing changes
    let before = all_records(&s, &admin);
    let huge_doc = "9".repeat(10_000);
    let huge_data = json!({"blob": "x".repeat(4_100)});
    let base = |k: &str, v: Value| {
        let mut b = json!({"level": 1, "document_type": "PASSPORT", "document_number": "C7654321"});
        if v.is_null() && k != "data" {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v;
        }
        b.to_string()
    };
    let cases: Vec<(String, (u16, i64))> = vec![
        ("nope".into(), (400, -4000)),
        ("[]".into(), (400, -4000)),
        ("".into(), (400, -4000)),
        ("{\"level\": 1,".into(), (400, -4000)),
        (base("level", Value::Null), (400, -4000)),
        (base("level", json!("2")), (400, -4000)),
        (base("level", json!(true)), (400, -4000)),
        (base("level", json!(0)), (400, -4004)),
        (base("level", json!(4)), (400, -4004)),
        (base("level", json!(-1)), (400, -4004)),
        (base("level", json!(2.5)), (400, -4004)),
        (
            base("level", json!(1))
                .replace("\"level\":1", "\"level\":1000000000000000000000000000000"),
            (400, -4004),
        ),
        (
            base("level", json!(1)).replace("\"level\":1", "\"level\":1e30"),
            (400, -4004),
        ),
        (base("document_type", Value::Null), (400, -4000)),
        (base("document_type", json!(3)), (400, -4000)),
        (base("document_type", json!("VISA")), (400, -4004)),
        (base("document_type", json!("")), (400, -4004)),
        (base("document_number", Value::Null), (400, -4000)),
        (base("document_number", json!(12345678)), (400, -4000)),
        (base("document_number", json!("")), (400, -4004)),
        (base("document_number", json!("   ")), (400, -4004)),
        (base("document_number", json!("x".repeat(65))), (400, -4004)),
        (base("document_number", json!(huge_doc)), (400, -4004)),
        (base("document_number", json!("AB\u{7}12")), (400, -4004)),
        (base("data", json!([1, 2])), (400, -4004)),
        (base("data", json!("text")), (400, -4004)),
        (base("data", json!(42)), (400, -4004)),
        (base("data", huge_data), (400, -4004)),
    ];
    for (body, want) in &cases {
        let r = post_raw(&s, "/api/v1/kyc", Some(&carol), body.as_bytes());
        assert_eq!(err(&r), *want, "{}", &body[..body.len().min(120)]);
    }
    // A body over the server's limit is 413, as JSON.
    let r = post_raw(
        &s,
        "/api/v1/kyc",
        Some(&carol),
        base("data", json!({"blob": "y".repeat(70_000)})).as_bytes(),
    );
    assert_eq!(err(&r), (413, -4130));
    assert_eq!(get(&s, "/api/v1/kyc", Some(&carol)).json, json!([]));
    assert_eq!(all_records(&s, &admin), before);
    assert_eq!(kyc_level(&s, &carol), 0);
    // Exactly at the bounds is fine (64 characters, a 4 KiB object).
    let mut ok = json!({"level": 3, "document_type": "residence_permit",
                        "document_number": "Z".repeat(63) + "9"});
    ok["data"] = json!({"blob": "x".repeat(4096 - 11)});
    assert_eq!(ok["data"].to_string().len(), 4096);
    let r = submit(&s, &carol, ok);
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["document_number"], "****ZZZ9");
    let carol_id = r.json["id"].as_u64().unwrap().to_string();

    // ---- nothing in the data directory holds a document number in clear
    for plain in [DOC, "ID-99887766", "C7654321"] {
        assert_not_stored(tmp.path(), plain);
    }

    // ---- restarts keep everything: clean (snapshot), then SIGKILL
    let snapshot = all_records(&s, &admin);
    assert_eq!(snapshot.len(), 5);
    s.terminate();
    let s = Server::start(tmp.path(), port);
    assert_eq!(all_records(&s, &admin), snapshot);
    assert_eq!(kyc_level(&s, &alice), 2);
    assert_eq!(
        get(&s, "/api/v1/kyc", Some(&alice)).json[0]["document_number"],
        "****4567"
    );
    // Reads see writes after the restart too; the one-pending rule holds.
    assert_eq!(err(&submit(&s, &bob, passport(2))), (409, -4098));
    let r = review(&s, &admin, &bob_id2, "approve", None);
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["review_notes"], Value::Null);
    assert_eq!(kyc_level(&s, &bob), 1);
    let snapshot = all_records(&s, &admin);
    s.kill();
    let s = Server::start(tmp.path(), port);
    assert_eq!(all_records(&s, &admin), snapshot);
    assert_eq!(kyc_level(&s, &bob), 1);
    let r = review(&s, &admin, &carol_id, "reject", Some("data incomplete"));
    assert_eq!(r.status, 200, "{}", r.json);
    for plain in [DOC, "ID-99887766"] {
        assert_not_stored(tmp.path(), plain);
    }
}

#[test]
fn kyc_rows_reach_postgres_as_ciphertext() {
    let (rt, db) = common::test_db();
    let url = db.url().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with(tmp.path(), free_port(), &[("DATABASE_URL", url.as_str())]);
    let admin = login(&s, ADMIN, ADMIN_PW);
    let alice = register(&s, "pgkycalice");
    let r = submit(&s, &alice, passport(2));
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["id"].as_i64().unwrap();
    let r = review(&s, &admin, &id.to_string(), "approve", Some("ok"));
    assert_eq!(r.status, 200, "{}", r.json);
    wait_persisted(&s);
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let row = c
            .query_one(
                "SELECT k.status, k.level, k.document_type, k.document_number, k.review_notes,
                        k.reviewed_by = (SELECT id FROM users WHERE username = $2),
                        k.reviewed_at IS NOT NULL, u.kyc_level::bigint,
                        k.submitted_data->>'country', strpos(k::text, $3)
                 FROM kyc_records k JOIN users u ON u.id = k.user_id
                 WHERE k.id = $1",
                &[&id, &ADMIN, &DOC],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "APPROVED");
        assert_eq!(row.get::<_, i16>(1), 2);
        assert_eq!(row.get::<_, String>(2), "PASSPORT");
        let doc: String = row.get(3);
        // The gateway's envelope: version 1, 12-byte nonce, ciphertext + tag.
        assert!(doc.starts_with("enc:01"), "{doc}");
        assert_eq!(doc.len(), 4 + 2 * (1 + 12 + DOC.len() + 16), "{doc}");
        assert!(!doc.contains(DOC));
        let hex: String = DOC.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!doc.contains(&hex));
        assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("ok"));
        assert!(row.get::<_, bool>(5));
        assert!(row.get::<_, bool>(6));
        assert_eq!(row.get::<_, i64>(7), 2);
        assert_eq!(row.get::<_, Option<String>>(8).as_deref(), Some("GB"));
        assert_eq!(row.get::<_, i32>(9), 0, "plaintext in the row");
    });
    drop(s);
    rt.block_on(db.drop_db());
}
