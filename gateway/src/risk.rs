//! Native risk administration (`/api/v1/admin/risk/*`, JWT bearer) and the
//! risk read model.
//!
//! | route | permission |
//! |---|---|
//! | `GET admin/risk/rules` (`type`, `enabled`, `offset`, `limit`) | `risk:read` |
//! | `POST admin/risk/rules` `{name, type, parameters, level?, action?, enabled?, description?}` -> 201 | `risk:write` |
//! | `GET admin/risk/rules/{id}` | `risk:read` |
//! | `PUT admin/risk/rules/{id}` (any of `name`, `parameters`, `level`, `action`, `enabled`, `description`) | `risk:write` |
//! | `DELETE admin/risk/rules/{id}` | `risk:write` |
//! | `GET admin/risk/events` (`status`, `user` (id or username), `rule`, `type`, `offset`, `limit`), newest first | `risk:read` |
//! | `GET admin/risk/events/{id}` | `risk:read` |
//! | `POST admin/risk/events/{id}/acknowledge` / `resolve` / `dismiss` `{note?}` | `risk:write` |
//!
//! Rule types, levels (LOW, MEDIUM (default), HIGH, CRITICAL), actions
//! (ALERT (default), BLOCK) and statuses use the schema's names. What each
//! type's `parameters` object takes, and what the engine evaluates, is in
//! `engine::risk`: ORDER_NOTIONAL `{"max_notional": "50000", "symbol"?:
//! "BTCUSDT"}`, LARGE_WITHDRAWAL `{"asset": "BTC", "threshold": "10"}`,
//! LOGIN_FAILURE `{"max_failures": 5}`, SELF_TRADE `{"symbol"?: ...}`,
//! CUSTOM (any object, not evaluated). Decimals are strings. Every input is
//! validated here with the engine's own rules before anything is journaled
//! (400 -4004 with what is wrong); the engine checks again.
//!
//! The read model ([`RiskView`]) holds every rule and the newest
//! [`MAX_EVENTS_KEPT`] risk events (Postgres, when configured, keeps them
//! all). It is rebuilt at startup by the journal replay that rebuilds the
//! other read models, or, when the journal's start is gone, from the
//! engine (rules and the events still open), and kept current by the
//! publisher before a command's reply is released, so a client reads its
//! own writes.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use engine::decimal::decimal_to_units;
use engine::risk::{valid_risk_text, valid_rule_name, RISK_PARAMETERS_MAX_LEN};
use engine::{
    Command, Engine, Event, RejectReason, RiskAction, RiskEvent, RiskEventStatus, RiskLevel,
    RiskParams, RiskRule, RiskRuleChanges, RiskRuleType, UserId,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::{page, paged, path_id};
use crate::native::{
    authenticate, check, codes, execute, parse, query, rejected, reply, require, NativeError, Res,
};
use crate::server::AppState;

/// Risk events the read model keeps (the oldest go first).
pub const MAX_EVENTS_KEPT: usize = 100_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/admin/risk/rules",
            get(list_rules).post(create_rule),
        )
        .route(
            "/api/v1/admin/risk/rules/{id}",
            get(get_rule).put(update_rule).delete(delete_rule),
        )
        .route("/api/v1/admin/risk/events", get(list_events))
        .route("/api/v1/admin/risk/events/{id}", get(get_event))
        .route(
            "/api/v1/admin/risk/events/{id}/acknowledge",
            post(acknowledge_event),
        )
        .route(
            "/api/v1/admin/risk/events/{id}/resolve",
            post(resolve_event),
        )
        .route(
            "/api/v1/admin/risk/events/{id}/dismiss",
            post(dismiss_event),
        )
}

// ------------------------------------------------------------ read model

#[derive(Debug, Default)]
pub struct RiskView {
    /// Live rules by id (deleted ones are gone).
    pub rules: BTreeMap<u64, RiskRule>,
    /// Risk events by id, at most [`MAX_EVENTS_KEPT`].
    pub events: BTreeMap<u64, RiskEvent>,
    pub last_seq: u64,
}

impl RiskView {
    /// What the engine still holds: every rule, the open events.
    pub fn from_engine(e: &Engine) -> RiskView {
        RiskView {
            rules: e.risk_rules().map(|r| (r.id, r.clone())).collect(),
            events: e.open_risk_events().map(|v| (v.id, v.clone())).collect(),
            last_seq: e.last_seq(),
        }
    }

    /// The events this view applies (see `IdentityView::wants`).
    pub fn wants(ev: &Event) -> bool {
        matches!(
            ev,
            Event::RiskRuleCreated(_)
                | Event::RiskRuleUpdated(_)
                | Event::RiskRuleDeleted { .. }
                | Event::RiskEventRaised(_)
                | Event::RiskEventStatusChanged { .. }
        )
    }

    pub fn apply(&mut self, seq: u64, events: &[Event]) {
        for ev in events.iter().filter(|e| Self::wants(e)) {
            match ev {
                Event::RiskRuleCreated(r) | Event::RiskRuleUpdated(r) => {
                    self.rules.insert(r.id, (**r).clone());
                }
                Event::RiskRuleDeleted { rule, .. } => {
                    self.rules.remove(rule);
                }
                Event::RiskEventRaised(r) => {
                    self.events.insert(r.id, (**r).clone());
                    while self.events.len() > MAX_EVENTS_KEPT {
                        self.events.pop_first();
                    }
                }
                Event::RiskEventStatusChanged {
                    event,
                    status,
                    by,
                    note,
                    updated_ms,
                    ..
                } => {
                    if let Some(e) = self.events.get_mut(event) {
                        e.status = *status;
                        e.handled_by = Some(*by);
                        e.note = note.clone();
                        e.updated_ms = *updated_ms;
                    }
                }
                _ => {}
            }
        }
        self.last_seq = self.last_seq.max(seq);
    }
}

// ---------------------------------------------------------------- JSON

/// Rule parameters or event details (JSON object text) as JSON.
fn object(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "unparsed": text }),
    }
}

fn rule_json(r: &RiskRule) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "type": r.kind.name(),
        "parameters": object(&r.parameters),
        "level": r.level.name(),
        "action": r.action.name(),
        "enabled": r.enabled,
        "description": r.description,
        "created_by": r.created_by.0,
        "updated_by": r.updated_by.0,
        "created_at": r.created_ms,
        "updated_at": r.updated_ms,
        "version": r.version,
    })
}

fn event_json(st: &AppState, e: &RiskEvent) -> Value {
    let rule_name = st
        .risk
        .read()
        .expect("risk lock")
        .rules
        .get(&e.rule)
        .map(|r| r.name.clone());
    let ident = st.identity.read().expect("identity lock");
    let name = |u: UserId| ident.user(u).map(|v| v.username.clone());
    json!({
        "id": e.id,
        "rule_id": e.rule,
        "rule_name": rule_name,
        "user_id": e.user.0,
        "username": name(e.user),
        "type": e.kind.name(),
        "level": e.level.name(),
        "action": e.action.name(),
        "status": e.status.name(),
        "details": object(&e.details),
        "handled_by": e.handled_by.map(|u| u.0),
        "handled_by_username": e.handled_by.and_then(name),
        "note": e.note,
        "created_at": e.created_ms,
        "updated_at": e.updated_ms,
    })
}

// ------------------------------------------------------------ validation

fn bad(msg: impl Into<String>) -> NativeError {
    NativeError::bad(codes::INVALID_PARAMETER, msg)
}

fn rule_type(s: &str) -> Result<RiskRuleType, NativeError> {
    RiskRuleType::from_name(&s.to_ascii_uppercase()).ok_or_else(|| {
        let names: Vec<&str> = RiskRuleType::ALL.iter().map(|t| t.name()).collect();
        bad(format!("type must be one of {}.", names.join(", ")))
    })
}

fn level(s: &str) -> Result<RiskLevel, NativeError> {
    RiskLevel::from_name(&s.to_ascii_uppercase())
        .ok_or_else(|| bad("level must be LOW, MEDIUM, HIGH or CRITICAL."))
}

fn action(s: &str, kind: RiskRuleType) -> Result<RiskAction, NativeError> {
    let a = RiskAction::from_name(&s.to_ascii_uppercase())
        .ok_or_else(|| bad("action must be ALERT or BLOCK."))?;
    if a == RiskAction::Block && !kind.can_block() {
        return Err(bad(format!(
            "action BLOCK is only for ORDER_NOTIONAL and LARGE_WITHDRAWAL rules, not {}.",
            kind.name()
        )));
    }
    Ok(a)
}

fn name(s: &str) -> Result<String, NativeError> {
    if valid_rule_name(s) {
        Ok(s.to_string())
    } else {
        Err(bad(
            "name must be 1 to 100 of A-Z a-z 0-9 space _ . : - (no leading or trailing space).",
        ))
    }
}

fn text(what: &str, s: &str) -> Result<String, NativeError> {
    if valid_risk_text(s) {
        Ok(s.to_string())
    } else {
        Err(bad(format!(
            "{what} must be at most 1024 bytes without control characters."
        )))
    }
}

/// `parameters` of a `kind` rule: a JSON object the engine accepts, whose
/// symbols exist (404 otherwise); returns the text to journal.
fn parameters(st: &AppState, kind: RiskRuleType, v: &Value) -> Result<String, NativeError> {
    if !v.is_object() {
        return Err(bad("parameters must be a JSON object."));
    }
    let text = v.to_string();
    if text.len() > RISK_PARAMETERS_MAX_LEN {
        return Err(bad(format!(
            "parameters must be at most {RISK_PARAMETERS_MAX_LEN} bytes of JSON."
        )));
    }
    let params = RiskParams::parse(kind, &text).map_err(bad)?;
    let m = st.market.read().expect("market lock");
    let pair_known = |s: &Option<String>| s.as_ref().is_none_or(|s| m.pair_by_symbol(s).is_some());
    match &params {
        RiskParams::OrderNotional { symbol, .. } | RiskParams::SelfTrade { symbol }
            if !pair_known(symbol) =>
        {
            return Err(rejected(RejectReason::UnknownPair));
        }
        RiskParams::LargeWithdrawal { asset, threshold } => {
            let a = m
                .assets
                .values()
                .find(|a| a.spec.symbol == *asset)
                .ok_or_else(|| rejected(RejectReason::UnknownAsset))?;
            let d = a.spec.decimals as u32;
            if decimal_to_units(*threshold, d).is_err() {
                return Err(bad(format!(
                    "parameters.threshold must fit {asset} ({d} decimals)."
                )));
            }
        }
        _ => {}
    }
    Ok(text)
}

// --------------------------------------------------------------- rules

/// Rules by id. Parameters: `type`, `enabled` (true | false), `offset`,
/// `limit`.
async fn list_rules(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "risk:read")?;
    let p = query(q.as_deref(), &["type", "enabled", "offset", "limit"])?;
    let kind = p.get("type").map(rule_type).transpose()?;
    let enabled = match p.get("enabled") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(bad("enabled must be true or false.")),
    };
    let (offset, limit) = page(&p)?;
    let view = st.risk.read().expect("risk lock");
    let matching: Vec<&RiskRule> = view
        .rules
        .values()
        .filter(|r| kind.is_none_or(|k| k == r.kind) && enabled.is_none_or(|e| e == r.enabled))
        .collect();
    let total = matching.len();
    let items = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(rule_json)
        .collect();
    drop(view);
    reply(StatusCode::OK, paged(total, offset, limit, "rules", items))
}

fn rule_reply(status: StatusCode, events: &[Event]) -> Res {
    let r = events
        .iter()
        .find_map(|e| match e {
            Event::RiskRuleCreated(r) | Event::RiskRuleUpdated(r) => Some(r),
            _ => None,
        })
        .ok_or_else(|| NativeError::unavailable("Risk rule result missing."))?;
    reply(status, rule_json(r))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRuleReq {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    parameters: Value,
    level: Option<String>,
    action: Option<String>,
    enabled: Option<bool>,
    description: Option<String>,
}

async fn create_rule(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (by, roles) = authenticate(&st, &headers)?;
    require(roles, "risk:write")?;
    let r: NewRuleReq = parse(body)?;
    let kind = rule_type(&r.kind)?;
    let cmd = Command::CreateRiskRule {
        by,
        name: name(&r.name)?,
        kind,
        level: level(r.level.as_deref().unwrap_or("MEDIUM"))?,
        action: action(r.action.as_deref().unwrap_or("ALERT"), kind)?,
        parameters: parameters(&st, kind, &r.parameters)?,
        enabled: r.enabled.unwrap_or(true),
        description: text("description", r.description.as_deref().unwrap_or(""))?,
    };
    let o = execute(&st, cmd).await?;
    check(&o)?;
    rule_reply(StatusCode::CREATED, &o.events)
}

/// The rule of the path, from the read model (404 when unknown).
fn rule_of(
    st: &AppState,
    path: Result<Path<String>, PathRejection>,
) -> Result<RiskRule, NativeError> {
    let id = path_id(path, "risk rule")?;
    st.risk
        .read()
        .expect("risk lock")
        .rules
        .get(&id)
        .cloned()
        .ok_or_else(|| rejected(RejectReason::UnknownRiskRule))
}

async fn get_rule(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "risk:read")?;
    reply(StatusCode::OK, rule_json(&rule_of(&st, path)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRuleReq {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    parameters: Option<Value>,
    level: Option<String>,
    action: Option<String>,
    enabled: Option<bool>,
    description: Option<String>,
}

/// Change any of name, parameters, level, action, enabled, description;
/// `type` may be repeated but not changed.
async fn update_rule(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (by, roles) = authenticate(&st, &headers)?;
    require(roles, "risk:write")?;
    let cur = rule_of(&st, path)?;
    let r: UpdateRuleReq = parse(body)?;
    if let Some(t) = &r.kind {
        if rule_type(t)? != cur.kind {
            return Err(bad("type cannot change; create a new rule instead."));
        }
    }
    let changes = RiskRuleChanges {
        name: r.name.as_deref().map(name).transpose()?,
        parameters: r
            .parameters
            .as_ref()
            .map(|p| parameters(&st, cur.kind, p))
            .transpose()?,
        level: r.level.as_deref().map(level).transpose()?,
        action: r
            .action
            .as_deref()
            .map(|a| action(a, cur.kind))
            .transpose()?,
        enabled: r.enabled,
        description: r
            .description
            .as_deref()
            .map(|d| text("description", d))
            .transpose()?,
    };
    if changes.is_empty() {
        return Err(bad(
            "Nothing to change: give any of name, parameters, level, action, enabled, description.",
        ));
    }
    let o = execute(
        &st,
        Command::UpdateRiskRule {
            by,
            rule: cur.id,
            changes,
        },
    )
    .await?;
    check(&o)?;
    rule_reply(StatusCode::OK, &o.events)
}

async fn delete_rule(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    let (by, roles) = authenticate(&st, &headers)?;
    require(roles, "risk:write")?;
    let cur = rule_of(&st, path)?;
    let o = execute(&st, Command::DeleteRiskRule { by, rule: cur.id }).await?;
    check(&o)?;
    reply(
        StatusCode::OK,
        json!({ "id": cur.id, "name": cur.name, "deleted": true }),
    )
}

// --------------------------------------------------------------- events

/// Risk events, newest first. Parameters: `status`, `user` (a user id or a
/// username), `rule` (id), `type`, `offset`, `limit` (1..=1000, default
/// 100).
async fn list_events(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "risk:read")?;
    let p = query(
        q.as_deref(),
        &["status", "user", "rule", "type", "offset", "limit"],
    )?;
    let status = match p.get("status") {
        None => None,
        Some(s) => Some(
            RiskEventStatus::from_name(&s.to_ascii_uppercase())
                .ok_or_else(|| bad("status must be OPEN, ACKNOWLEDGED, RESOLVED or DISMISSED."))?,
        ),
    };
    let user = match p.get("user") {
        None => None,
        Some(u) => {
            let ident = st.identity.read().expect("identity lock");
            let by_id = u
                .parse::<u64>()
                .ok()
                .filter(|id| ident.user(UserId(*id)).is_some())
                .map(UserId);
            Some(
                by_id
                    .or_else(|| ident.user_by_name(u).map(|v| v.id))
                    .ok_or_else(|| rejected(RejectReason::UnknownUser))?,
            )
        }
    };
    let rule = crate::native::u64_param(&p, "rule", 1..=u64::MAX)?;
    let kind = p.get("type").map(rule_type).transpose()?;
    let (offset, limit) = page(&p)?;
    let view = st.risk.read().expect("risk lock");
    let matching: Vec<RiskEvent> = view
        .events
        .values()
        .rev()
        .filter(|e| {
            status.is_none_or(|s| s == e.status)
                && user.is_none_or(|u| u == e.user)
                && rule.is_none_or(|r| r == e.rule)
                && kind.is_none_or(|k| k == e.kind)
        })
        .cloned()
        .collect();
    drop(view);
    let total = matching.len();
    let items = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|e| event_json(&st, e))
        .collect();
    reply(StatusCode::OK, paged(total, offset, limit, "events", items))
}

fn event_of(
    st: &AppState,
    path: Result<Path<String>, PathRejection>,
) -> Result<RiskEvent, NativeError> {
    let id = path_id(path, "risk event")?;
    st.risk
        .read()
        .expect("risk lock")
        .events
        .get(&id)
        .cloned()
        .ok_or_else(|| rejected(RejectReason::UnknownRiskEvent))
}

async fn get_event(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "risk:read")?;
    let e = event_of(&st, path)?;
    reply(StatusCode::OK, event_json(&st, &e))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoteReq {
    #[serde(default)]
    note: String,
}

/// An optional body `{"note": "..."}` (no body: no note).
fn note(body: Result<Bytes, BytesRejection>) -> Result<String, NativeError> {
    let empty = matches!(&body, Ok(b) if b.iter().all(u8::is_ascii_whitespace));
    let r: NoteReq = if empty {
        NoteReq::default()
    } else {
        parse(body)?
    };
    text("note", &r.note)
}

async fn set_status(
    st: AppState,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    status: RiskEventStatus,
) -> Res {
    let (by, roles) = authenticate(&st, &headers)?;
    require(roles, "risk:write")?;
    let id = path_id(path, "risk event")?;
    let note = note(body)?;
    let o = execute(
        &st,
        Command::SetRiskEventStatus {
            by,
            event: id,
            status,
            note,
        },
    )
    .await?;
    check(&o)?;
    // The read model may have let a very old event go; answer from the
    // command's own result then.
    let e = st.risk.read().expect("risk lock").events.get(&id).cloned();
    match e {
        Some(e) => reply(StatusCode::OK, event_json(&st, &e)),
        None => reply(
            StatusCode::OK,
            json!({ "id": id, "status": status.name(), "handled_by": by.0 }),
        ),
    }
}

async fn acknowledge_event(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    set_status(st, headers, path, body, RiskEventStatus::Acknowledged).await
}

async fn resolve_event(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    set_status(st, headers, path, body, RiskEventStatus::Resolved).await
}

async fn dismiss_event(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    set_status(st, headers, path, body, RiskEventStatus::Dismissed).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::RiskLimit;

    fn rule(id: u64) -> RiskRule {
        RiskRule {
            id,
            name: format!("r{id}"),
            kind: RiskRuleType::Custom,
            parameters: "{}".into(),
            limit: RiskLimit::None,
            level: RiskLevel::Low,
            action: RiskAction::Alert,
            enabled: true,
            description: String::new(),
            created_by: UserId(1),
            updated_by: UserId(1),
            created_ms: 1,
            updated_ms: 1,
            version: 1,
        }
    }

    fn event(id: u64) -> RiskEvent {
        RiskEvent {
            id,
            rule: 1,
            user: UserId(2),
            kind: RiskRuleType::LoginFailure,
            level: RiskLevel::High,
            action: RiskAction::Alert,
            details: "{}".into(),
            status: RiskEventStatus::Open,
            created_ms: id,
            updated_ms: id,
            handled_by: None,
            note: String::new(),
        }
    }

    #[test]
    fn the_view_follows_events_and_keeps_the_newest() {
        let mut v = RiskView::default();
        v.apply(
            1,
            &[
                Event::RiskRuleCreated(Box::new(rule(1))),
                Event::RiskRuleCreated(Box::new(rule(2))),
            ],
        );
        v.apply(
            2,
            &[Event::RiskRuleDeleted {
                rule: 2,
                name: "r2".into(),
            }],
        );
        assert_eq!(v.rules.keys().copied().collect::<Vec<_>>(), vec![1]);
        for id in 1..=(MAX_EVENTS_KEPT as u64 + 2) {
            v.apply(3, &[Event::RiskEventRaised(Box::new(event(id)))]);
        }
        assert_eq!(v.events.len(), MAX_EVENTS_KEPT);
        assert_eq!(v.events.keys().next(), Some(&3));
        v.apply(
            4,
            &[Event::RiskEventStatusChanged {
                event: 3,
                user: UserId(2),
                status: RiskEventStatus::Resolved,
                by: UserId(1),
                note: "done".into(),
                updated_ms: 99,
            }],
        );
        let e = &v.events[&3];
        assert_eq!(
            (e.status, e.handled_by, e.note.as_str(), e.updated_ms),
            (RiskEventStatus::Resolved, Some(UserId(1)), "done", 99)
        );
        assert_eq!(v.last_seq, 4);
    }

    #[test]
    fn objects_stay_objects() {
        assert_eq!(object(r#"{"a":1}"#)["a"], 1);
        assert_eq!(object("[1]")["unparsed"], "[1]");
    }
}
