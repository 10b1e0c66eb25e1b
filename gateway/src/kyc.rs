//! KYC on the native API (API.md "Native API": `POST kyc`, `GET kyc`, and
//! the admin "KYC review (approve/reject with notes)"), and its read model.
//!
//! | route | permission | |
//! |---|---|---|
//! | `POST /api/v1/kyc` | `kyc:write` | submit {level, document_type, document_number, data}; 201 with the record |
//! | `GET /api/v1/kyc` | `kyc:read` | the caller's records, newest first |
//! | `GET /api/v1/admin/kyc?status=&limit=` | `kyc:review` | every user's records, oldest first (the review queue) |
//! | `POST /api/v1/admin/kyc/{id}/approve` | `kyc:review` | {"notes"} optional; the user's KYC level becomes the record's |
//! | `POST /api/v1/admin/kyc/{id}/reject` | `kyc:review` | {"notes"} required |
//!
//! The document number is sensitive: the handler encrypts it with the
//! server's secret key (`auth::SecretCipher`, `MX_SECRET_KEY`, bound to the
//! user by the associated data) before the command is journaled, so the
//! plaintext never reaches the journal, snapshots, Postgres or a log. The
//! [`KycView`] decrypts each record once, when it is built or when its event
//! arrives, and keeps only the masked form (`****1234`) that responses show.
//!
//! Every state change is an engine command (`SubmitKyc`, `ReviewKyc`): the
//! engine enforces the rules (one pending record per user, reviews of
//! pending records only, by someone else); the handlers validate the input
//! first so that every bad request is a clear 4xx JSON error that changes
//! nothing, and answer from the view once the publisher has applied the
//! command (read-your-writes; the view is rebuilt from the engine at start,
//! so records survive restarts).

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use engine::{
    Command, Engine, Event, KycDocumentType, KycRecord, KycStatus, RejectReason, UserId,
    KYC_DATA_MAX_LEN, KYC_MAX_LEVEL, KYC_NOTES_MAX_LEN,
};
use serde_json::{json, Map, Value};

use crate::auth::SecretCipher;
use crate::native::{
    authenticate, check, codes, execute, parse, rejected, reply, require, NativeError, Res,
};
use crate::server::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/kyc", post(submit).get(list_own))
        .route("/api/v1/admin/kyc", get(admin_list))
        .route("/api/v1/admin/kyc/{id}/approve", post(approve))
        .route("/api/v1/admin/kyc/{id}/reject", post(reject))
}

/// Longest document number accepted, in characters.
pub const DOCUMENT_NUMBER_MAX_CHARS: usize = 64;
/// Default and largest page of the admin listing.
pub const ADMIN_LIST_DEFAULT: usize = 100;
pub const ADMIN_LIST_MAX: usize = 1_000;

/// Associated data of a document number's ciphertext: binds it to its
/// owner, so a ciphertext copied into another user's record does not open.
pub fn document_aad(user: UserId) -> Vec<u8> {
    format!("mx-kyc-document-number:{}", user.0).into_bytes()
}

/// `****` and at most the last four characters, never more than half of
/// them (`P1234567` -> `****4567`, `1234` -> `****34`, `7` -> `****`).
pub fn mask_document_number(plain: &str) -> String {
    let chars: Vec<char> = plain.chars().collect();
    let shown = (chars.len() / 2).min(4);
    let mut s = String::from("****");
    s.extend(&chars[chars.len() - shown..]);
    s
}

// -------------------------------------------------------------- read model

/// A KYC record as the API shows it.
#[derive(Debug, Clone)]
pub struct KycEntry {
    pub id: u64,
    pub user: UserId,
    pub level: u8,
    pub document_type: KycDocumentType,
    /// The masked document number; the plaintext is not kept.
    pub document_masked: String,
    /// The submitted data (a JSON object).
    pub data: Value,
    pub status: KycStatus,
    pub reviewer: Option<UserId>,
    pub notes: String,
    pub created_ms: u64,
    /// 0 while pending.
    pub reviewed_ms: u64,
}

/// Every KYC record, maintained from engine events on the publisher thread
/// (like `identity::IdentityView`) and read by the handlers.
#[derive(Debug, Default)]
pub struct KycView {
    records: BTreeMap<u64, KycEntry>,
    /// Each user's record ids, ascending.
    by_user: HashMap<UserId, Vec<u64>>,
    cipher: Option<SecretCipher>,
    pub last_seq: u64,
}

impl KycView {
    /// The view of `e`'s records; document numbers are decrypted with
    /// `cipher` only to mask them (without it they show as `****`).
    pub fn from_engine(e: &Engine, cipher: Option<SecretCipher>) -> KycView {
        let mut v = KycView {
            cipher,
            last_seq: e.last_seq(),
            ..KycView::default()
        };
        for k in e.kyc_records() {
            v.insert(k);
        }
        v
    }

    fn masked(&self, k: &KycRecord) -> String {
        let plain = self
            .cipher
            .as_ref()
            .and_then(|c| c.decrypt(&k.document_number, &document_aad(k.user)).ok())
            .and_then(|p| String::from_utf8(p).ok());
        match plain {
            Some(p) => mask_document_number(&p),
            None => {
                if self.cipher.is_some() {
                    // Never the material itself.
                    tracing::error!(
                        kyc = k.id,
                        user = k.user.0,
                        "KYC document number cannot be decrypted (wrong MX_SECRET_KEY?)"
                    );
                }
                "****".to_string()
            }
        }
    }

    fn insert(&mut self, k: &KycRecord) {
        let data = match serde_json::from_str::<Value>(&k.data) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({ "unparsed": k.data }),
        };
        let entry = KycEntry {
            id: k.id,
            user: k.user,
            level: k.level,
            document_type: k.document_type,
            document_masked: self.masked(k),
            data,
            status: k.status,
            reviewer: k.reviewer,
            notes: k.notes.clone(),
            created_ms: k.created_ms,
            reviewed_ms: k.reviewed_ms,
        };
        let ids = self.by_user.entry(k.user).or_default();
        if !ids.contains(&k.id) {
            ids.push(k.id);
        }
        self.records.insert(k.id, entry);
    }

    /// The events this view applies (see `IdentityView::wants`).
    pub fn wants(ev: &Event) -> bool {
        matches!(ev, Event::KycSubmitted(_) | Event::KycReviewed { .. })
    }

    pub fn apply(&mut self, seq: u64, events: &[Event]) {
        self.last_seq = seq;
        for ev in events.iter().filter(|e| Self::wants(e)) {
            match ev {
                Event::KycSubmitted(k) => self.insert(k),
                Event::KycReviewed {
                    kyc,
                    reviewer,
                    status,
                    notes,
                    reviewed_ms,
                    ..
                } => {
                    if let Some(e) = self.records.get_mut(kyc) {
                        e.status = *status;
                        e.reviewer = Some(*reviewer);
                        e.notes = notes.clone();
                        e.reviewed_ms = *reviewed_ms;
                    }
                }
                _ => {}
            }
        }
    }

    pub fn record(&self, id: u64) -> Option<&KycEntry> {
        self.records.get(&id)
    }

    /// A user's records, oldest first.
    pub fn of_user(&self, user: UserId) -> Vec<&KycEntry> {
        self.by_user
            .get(&user)
            .map(|ids| ids.iter().filter_map(|id| self.records.get(id)).collect())
            .unwrap_or_default()
    }

    pub fn pending_of(&self, user: UserId) -> Option<&KycEntry> {
        self.of_user(user)
            .into_iter()
            .find(|e| e.status == KycStatus::Pending)
    }

    /// Records with `status` (any when None), oldest first, at most `limit`.
    pub fn list(&self, status: Option<KycStatus>, limit: usize) -> Vec<&KycEntry> {
        self.records
            .values()
            .filter(|e| status.is_none_or(|s| e.status == s))
            .take(limit)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn entry_json(st: &AppState, e: &KycEntry) -> Value {
    let ident = st.identity.read().expect("identity lock");
    let name = |u: UserId| ident.user(u).map(|u| u.username.clone());
    let reviewed = e.status != KycStatus::Pending;
    json!({
        "id": e.id,
        "user_id": e.user.0,
        "username": name(e.user),
        "level": e.level,
        "document_type": e.document_type.name(),
        "document_number": e.document_masked,
        "data": e.data,
        "status": e.status.name(),
        "review_notes": if e.notes.is_empty() { Value::Null } else { json!(e.notes) },
        "reviewed_by": e.reviewer.map(|r| r.0),
        "reviewed_by_username": e.reviewer.and_then(name),
        "reviewed_at": if reviewed { json!(e.reviewed_ms) } else { Value::Null },
        "created_at": e.created_ms,
        "updated_at": if reviewed { e.reviewed_ms } else { e.created_ms },
    })
}

// ------------------------------------------------------------- validation

fn malformed(msg: impl Into<String>) -> NativeError {
    NativeError::bad(codes::BAD_REQUEST, msg)
}

fn invalid(msg: impl Into<String>) -> NativeError {
    NativeError::bad(codes::INVALID_PARAMETER, msg)
}

/// `level`: a JSON number equal to 1, 2 or 3.
fn level_of(v: Option<&Value>) -> Result<u8, NativeError> {
    let v = v.ok_or_else(|| malformed("Missing field: level."))?;
    if !v.is_number() {
        return Err(malformed("level must be a number: 1, 2 or 3."));
    }
    v.as_u64()
        .filter(|l| (1..=KYC_MAX_LEVEL as u64).contains(l))
        .map(|l| l as u8)
        .ok_or_else(|| rejected(RejectReason::InvalidKycLevel))
}

fn document_type_of(v: Option<&Value>) -> Result<KycDocumentType, NativeError> {
    let names = || {
        KycDocumentType::ALL
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let v = v.ok_or_else(|| malformed("Missing field: document_type."))?;
    let s = v
        .as_str()
        .ok_or_else(|| malformed(format!("document_type must be a string: {}.", names())))?;
    KycDocumentType::from_name(&s.trim().to_ascii_uppercase())
        .ok_or_else(|| invalid(format!("document_type must be one of {}.", names())))
}

/// 1..=64 characters after trimming, no control characters. The value is
/// never echoed.
fn document_number_of(v: Option<&Value>) -> Result<String, NativeError> {
    let v = v.ok_or_else(|| malformed("Missing field: document_number."))?;
    let s = v
        .as_str()
        .ok_or_else(|| malformed("document_number must be a string."))?
        .trim();
    let n = s.chars().count();
    if n == 0 || n > DOCUMENT_NUMBER_MAX_CHARS || s.chars().any(char::is_control) {
        return Err(invalid(format!(
            "document_number must be 1 to {DOCUMENT_NUMBER_MAX_CHARS} characters without control characters."
        )));
    }
    Ok(s.to_string())
}

/// `data`: a JSON object of at most `KYC_DATA_MAX_LEN` bytes as compact
/// JSON; absent or null is `{}`.
fn data_of(v: Option<&Value>) -> Result<String, NativeError> {
    let obj = match v {
        None | Some(Value::Null) => return Ok("{}".to_string()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(invalid("data must be a JSON object.")),
    };
    let text = serde_json::to_string(obj).map_err(|_| invalid("data must be a JSON object."))?;
    if text.len() > KYC_DATA_MAX_LEN {
        return Err(invalid(format!(
            "data must be at most {KYC_DATA_MAX_LEN} bytes as JSON."
        )));
    }
    Ok(text)
}

/// `notes`: absent or null is empty; at most `KYC_NOTES_MAX_LEN` bytes; no
/// control characters other than line breaks and tabs.
fn notes_of(obj: &Map<String, Value>) -> Result<String, NativeError> {
    let s = match obj.get("notes") {
        None | Some(Value::Null) => return Ok(String::new()),
        Some(Value::String(s)) => s.trim(),
        Some(_) => return Err(malformed("notes must be a string.")),
    };
    if s.len() > KYC_NOTES_MAX_LEN
        || s.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(invalid(format!(
            "notes must be at most {KYC_NOTES_MAX_LEN} bytes without control characters."
        )));
    }
    Ok(s.to_string())
}

fn object(v: Value) -> Result<Map<String, Value>, NativeError> {
    match v {
        Value::Object(o) => Ok(o),
        _ => Err(malformed("The body must be a JSON object.")),
    }
}

// ---------------------------------------------------------------- handlers

async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "kyc:write")?;
    let b = object(parse::<Value>(body)?)?;
    let level = level_of(b.get("level"))?;
    let document_type = document_type_of(b.get("document_type"))?;
    let document_number = document_number_of(b.get("document_number"))?;
    let data = data_of(b.get("data"))?;
    // Cheap early answer; the engine decides for real.
    if st.kyc.read().expect("kyc lock").pending_of(user).is_some() {
        return Err(rejected(RejectReason::KycAlreadyPending));
    }
    let sealed = st
        .auth
        .cipher
        .encrypt(document_number.as_bytes(), &document_aad(user));
    drop(document_number);
    let o = execute(
        &st,
        Command::SubmitKyc {
            user,
            level,
            document_type,
            document_number: sealed,
            data,
        },
    )
    .await?;
    check(&o)?;
    let id = o
        .events
        .iter()
        .find_map(|e| match e {
            Event::KycSubmitted(k) => Some(k.id),
            _ => None,
        })
        .ok_or_else(|| NativeError::unavailable("KYC result missing."))?;
    let view = st.kyc.read().expect("kyc lock");
    let e = view
        .record(id)
        .ok_or_else(|| NativeError::unavailable("Submitted; the read model is lagging."))?;
    reply(StatusCode::CREATED, entry_json(&st, e))
}

async fn list_own(State(st): State<AppState>, headers: HeaderMap) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "kyc:read")?;
    let view = st.kyc.read().expect("kyc lock");
    let list: Vec<Value> = view
        .of_user(user)
        .into_iter()
        .rev()
        .map(|e| entry_json(&st, e))
        .collect();
    reply(StatusCode::OK, Value::Array(list))
}

async fn admin_list(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "kyc:review")?;
    let params = crate::binance::params::Params::parse(q.as_deref().unwrap_or(""), b"")
        .map_err(|_| invalid("Malformed query string."))?;
    let status = match params.get("status").map(str::to_ascii_uppercase).as_deref() {
        None | Some("") | Some("ALL") => None,
        Some("PENDING") => Some(KycStatus::Pending),
        Some("APPROVED") => Some(KycStatus::Approved),
        Some("REJECTED") => Some(KycStatus::Rejected),
        Some(_) => {
            return Err(invalid(
                "status must be PENDING, APPROVED, REJECTED or ALL.",
            ))
        }
    };
    let limit = match params.get("limit") {
        None => ADMIN_LIST_DEFAULT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=ADMIN_LIST_MAX).contains(l))
            .ok_or_else(|| invalid(format!("limit must be 1 to {ADMIN_LIST_MAX}.")))?,
    };
    let view = st.kyc.read().expect("kyc lock");
    let list: Vec<Value> = view
        .list(status, limit)
        .into_iter()
        .map(|e| entry_json(&st, e))
        .collect();
    reply(StatusCode::OK, Value::Array(list))
}

async fn approve(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    review(st, headers, path, body, true).await
}

async fn reject(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    review(st, headers, path, body, false).await
}

async fn review(
    st: AppState,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    approve: bool,
) -> Res {
    let (reviewer, roles) = authenticate(&st, &headers)?;
    require(roles, "kyc:review")?;
    let id = path
        .ok()
        .and_then(|Path(p)| p.parse::<u64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| invalid("The KYC record id must be a positive integer."))?;
    // The body is optional for an approval (no notes).
    let empty = matches!(&body, Ok(b) if b.iter().all(u8::is_ascii_whitespace));
    let notes = if empty {
        String::new()
    } else {
        notes_of(&object(parse::<Value>(body)?)?)?
    };
    if !approve && notes.is_empty() {
        return Err(invalid("notes are required to reject a KYC record."));
    }
    {
        // Cheap early answers; the engine decides for real.
        let view = st.kyc.read().expect("kyc lock");
        let e = view
            .record(id)
            .ok_or_else(|| rejected(RejectReason::UnknownKycRecord))?;
        if e.status != KycStatus::Pending {
            return Err(rejected(RejectReason::KycNotPending));
        }
        if e.user == reviewer {
            return Err(rejected(RejectReason::KycSelfReview));
        }
    }
    let o = execute(
        &st,
        Command::ReviewKyc {
            kyc: id,
            reviewer,
            approve,
            notes,
        },
    )
    .await?;
    check(&o)?;
    let view = st.kyc.read().expect("kyc lock");
    let e = view
        .record(id)
        .ok_or_else(|| NativeError::unavailable("Reviewed; the read model is lagging."))?;
    let mut v = entry_json(&st, e);
    v["kyc_level"] = json!(st
        .identity
        .read()
        .expect("identity lock")
        .user(e.user)
        .map(|u| u.kyc_level));
    reply(StatusCode::OK, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::roles;

    #[test]
    fn masks_show_at_most_four_and_at_most_half() {
        assert_eq!(mask_document_number("P1234567"), "****4567");
        assert_eq!(mask_document_number("AB-99887766"), "****7766");
        assert_eq!(mask_document_number("123456"), "****456");
        assert_eq!(mask_document_number("1234"), "****34");
        assert_eq!(mask_document_number("7"), "****");
        assert_eq!(mask_document_number("ÄÖÜ-äöü"), "****äöü");
    }

    fn run(e: &mut Engine, v: &mut KycView, cmd: Command) -> Vec<Event> {
        let mut out = Vec::new();
        let seq = e.last_seq() + 1;
        e.apply(seq, 1_000 + seq, &cmd, &mut out);
        v.apply(seq, &out);
        out
    }

    #[test]
    fn view_masks_from_events_and_from_recovered_state() {
        let cipher = SecretCipher::new(&[5; 32]);
        let mut e = Engine::new();
        let mut live = KycView::from_engine(&e, Some(cipher.clone()));
        for name in ["alice", "oscar"] {
            run(
                &mut e,
                &mut live,
                Command::CreateUser {
                    username: name.into(),
                    email: String::new(),
                    password_hash: "$argon2id$x".into(),
                    roles: roles::TRADER,
                },
            );
        }
        let alice = UserId(1);
        run(
            &mut e,
            &mut live,
            Command::SubmitKyc {
                user: alice,
                level: 2,
                document_type: KycDocumentType::IdCard,
                document_number: cipher.encrypt(b"X98765432", &document_aad(alice)),
                data: r#"{"country":"FR"}"#.into(),
            },
        );
        // Bound to its owner: the same ciphertext does not open as another's.
        let foreign = cipher.encrypt(b"X98765432", &document_aad(UserId(2)));
        run(
            &mut e,
            &mut live,
            Command::SubmitKyc {
                user: UserId(2),
                level: 1,
                document_type: KycDocumentType::Other,
                document_number: foreign,
                data: "{}".into(),
            },
        );
        run(
            &mut e,
            &mut live,
            Command::ReviewKyc {
                kyc: 1,
                reviewer: UserId(2),
                approve: true,
                notes: "ok".into(),
            },
        );
        let rebuilt = KycView::from_engine(&e, Some(cipher.clone()));
        for v in [&live, &rebuilt] {
            let r = v.record(1).unwrap();
            assert_eq!(r.document_masked, "****5432");
            assert_eq!(r.data, json!({"country": "FR"}));
            assert_eq!(
                (r.status, r.reviewer, r.notes.as_str()),
                (KycStatus::Approved, Some(UserId(2)), "ok")
            );
            assert_eq!(v.record(2).unwrap().document_masked, "****5432");
            assert!(v.pending_of(alice).is_none());
            assert_eq!(v.pending_of(UserId(2)).map(|r| r.id), Some(2));
            assert_eq!(v.list(Some(KycStatus::Pending), 10).len(), 1);
            assert_eq!(v.list(None, 1).len(), 1);
            assert_eq!(v.of_user(alice).len(), 1);
        }
        // Without the right key nothing is revealed.
        let wrong = KycView::from_engine(&e, Some(SecretCipher::new(&[6; 32])));
        assert_eq!(wrong.record(1).unwrap().document_masked, "****");
        assert_eq!(KycView::from_engine(&e, None).len(), 2);
    }

    #[test]
    fn input_rules() {
        assert_eq!(level_of(Some(&json!(2))).unwrap(), 2);
        for bad in [json!(0), json!(4), json!(-1), json!(1e30), json!(1.5)] {
            assert_eq!(
                level_of(Some(&bad)).unwrap_err().into_response().status(),
                400
            );
        }
        assert!(level_of(Some(&json!("2"))).is_err());
        assert!(level_of(None).is_err());
        assert_eq!(
            document_type_of(Some(&json!("drivers_license"))).unwrap(),
            KycDocumentType::DriversLicense
        );
        assert!(document_type_of(Some(&json!("VISA"))).is_err());
        assert!(document_type_of(Some(&json!(1))).is_err());
        assert_eq!(document_number_of(Some(&json!(" P123 "))).unwrap(), "P123");
        for bad in [
            json!(""),
            json!("   "),
            json!("x".repeat(65)),
            json!("a\u{0}b"),
            json!(5),
        ] {
            assert!(document_number_of(Some(&bad)).is_err(), "{bad}");
        }
        assert_eq!(data_of(None).unwrap(), "{}");
        assert_eq!(data_of(Some(&json!({"a": [1]}))).unwrap(), r#"{"a":[1]}"#);
        for bad in [json!([1]), json!("x"), json!(3)] {
            assert!(data_of(Some(&bad)).is_err(), "{bad}");
        }
        assert!(data_of(Some(&json!({"a": "x".repeat(KYC_DATA_MAX_LEN)}))).is_err());
        let mut m = Map::new();
        assert_eq!(notes_of(&m).unwrap(), "");
        m.insert("notes".into(), json!("line 1\nline 2"));
        assert_eq!(notes_of(&m).unwrap(), "line 1\nline 2");
        m.insert("notes".into(), json!("n".repeat(KYC_NOTES_MAX_LEN + 1)));
        assert!(notes_of(&m).is_err());
        m.insert("notes".into(), json!(["x"]));
        assert!(notes_of(&m).is_err());
    }

    use axum::response::IntoResponse;
}
