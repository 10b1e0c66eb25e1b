//! Audit log query (`GET /api/v1/admin/audit-logs`, JWT bearer,
//! `audit:read`): the persister's `audit_logs` rows, newest first, filtered
//! by acting user, resource type and id, action and a time window.
//!
//! The audit log is a Postgres read model (the journal is the truth; the
//! persister writes a row for every admin command that changed something),
//! so without `DATABASE_URL` this answers 503 (-5030) saying so.
//!
//! Parameters: `user` (acting user id), `resource_type` (USER, ROLE,
//! API_KEY, KYC, ASSET, TRADING_PAIR, ACCOUNT, ORDER, TRADE, DEPOSIT,
//! WITHDRAWAL, RISK_RULE, RISK_EVENT, SETTLEMENT, NOTIFICATION_TEMPLATE,
//! FEE, SYSTEM), `resource_id` (at most 64 characters), `action` (e.g.
//! `pair.set_status`), `startTime` / `endTime` (ms, inclusive), `before`
//! (an entry id: older entries only, for paging), `limit` (1..=1000,
//! default 100). A bad value is -4004 with the rule it broke.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::native::{authenticate, codes, query, reply, require, u64_param, NativeError, Res};
use crate::server::AppState;

pub const RESOURCE_TYPES: [&str; 17] = [
    "USER",
    "ROLE",
    "API_KEY",
    "KYC",
    "ASSET",
    "TRADING_PAIR",
    "ACCOUNT",
    "ORDER",
    "TRADE",
    "DEPOSIT",
    "WITHDRAWAL",
    "RISK_RULE",
    "RISK_EVENT",
    "SETTLEMENT",
    "NOTIFICATION_TEMPLATE",
    "FEE",
    "SYSTEM",
];

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/admin/audit-logs", get(list))
}

const SQL: &str = "SELECT id, user_id, action, resource_type, resource_id, new_values::text,
        (extract(epoch FROM created_at) * 1000)::bigint
    FROM audit_logs
    WHERE ($1::bigint IS NULL OR user_id = $1)
      AND ($2::text IS NULL OR resource_type = $2)
      AND ($3::text IS NULL OR resource_id = $3)
      AND ($4::text IS NULL OR action = $4)
      AND ($5::float8 IS NULL OR created_at >= to_timestamp($5::float8 / 1000))
      AND ($6::float8 IS NULL OR created_at <= to_timestamp($6::float8 / 1000))
      AND ($7::bigint IS NULL OR id < $7)
    ORDER BY created_at DESC, id DESC
    LIMIT $8";

fn bad(msg: &str) -> NativeError {
    NativeError::new(StatusCode::BAD_REQUEST, codes::INVALID_PARAMETER, msg)
}

/// `action` as the audit table's CHECK allows it.
fn valid_action(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:".contains(&b))
}

async fn list(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "audit:read")?;
    let p = query(
        q.as_deref(),
        &[
            "user",
            "resource_type",
            "resource_id",
            "action",
            "startTime",
            "endTime",
            "before",
            "limit",
        ],
    )?;
    let max = i64::MAX as u64;
    let user = u64_param(&p, "user", 0..=max)?;
    let start = u64_param(&p, "startTime", 0..=max)?;
    let end = u64_param(&p, "endTime", 0..=max)?;
    let before = u64_param(&p, "before", 1..=max)?;
    let limit = u64_param(&p, "limit", 1..=1000)?.unwrap_or(100);
    let text = |name: &str| {
        p.optional_str(name)
            .map_err(|_| bad(&format!("{name} must be text.")))
    };
    let resource_type = text("resource_type")?;
    if let Some(t) = resource_type {
        if !RESOURCE_TYPES.contains(&t) {
            return Err(bad(&format!(
                "resource_type must be one of {}.",
                RESOURCE_TYPES.join(", ")
            )));
        }
    }
    let resource_id = text("resource_id")?;
    if resource_id.is_some_and(|r| r.is_empty() || r.len() > 64) {
        return Err(bad("resource_id must be 1 to 64 characters."));
    }
    let action = text("action")?;
    if action.is_some_and(|a| !valid_action(a)) {
        return Err(bad(
            "action must be a letter then letters, digits, '_', '.' or ':' (at most 64).",
        ));
    }
    if let (Some(a), Some(b)) = (start, end) {
        if a > b {
            return Err(bad("startTime must not be after endTime."));
        }
    }
    let Some(h) = &st.history else {
        return Err(NativeError::unavailable(
            "The audit log is read from the persister's database: start the exchange with DATABASE_URL set.",
        ));
    };
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "audit log query: Postgres unavailable");
        NativeError::unavailable(
            "The audit log cannot be read now (the persister's database is unreachable); retry later.",
        )
    };
    let c = h.pool().get().await.map_err(|e| unavailable(&e))?;
    let ms = |v: Option<u64>| v.map(|x| x as f64);
    let rows = c
        .query(
            SQL,
            &[
                &user.map(|u| u as i64),
                &resource_type,
                &resource_id,
                &action,
                &ms(start),
                &ms(end),
                &before.map(|b| b as i64),
                &(limit as i64),
            ],
        )
        .await
        .map_err(|e| unavailable(&e))?;
    let mut logs = Vec::with_capacity(rows.len());
    for r in rows {
        let get = || -> Result<Value, tokio_postgres::Error> {
            let values: Option<String> = r.try_get(5)?;
            Ok(json!({
                "id": r.try_get::<_, i64>(0)?,
                "user_id": r.try_get::<_, Option<i64>>(1)?,
                "action": r.try_get::<_, String>(2)?,
                "resource_type": r.try_get::<_, String>(3)?,
                "resource_id": r.try_get::<_, Option<String>>(4)?,
                "new_values": values.and_then(|t| serde_json::from_str::<Value>(&t).ok()),
                "created_at": r.try_get::<_, i64>(6)?,
            }))
        };
        logs.push(get().map_err(|e| unavailable(&e))?);
    }
    reply(StatusCode::OK, json!({ "logs": logs }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_the_table_check() {
        for ok in ["pair.set_status", "risk_rule.create", "a", "x:y.z_1"] {
            assert!(valid_action(ok), "{ok}");
        }
        for bad in ["", "1abc", "a b", "a;drop", "é", &"a".repeat(65)] {
            assert!(!valid_action(bad), "{bad}");
        }
    }
}
