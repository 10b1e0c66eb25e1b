//! Native administration API (`/api/v1/admin/*`, JWT bearer): withdrawals
//! (list, approve with a tx hash, reject = unfreeze), users (list, lock,
//! unlock, grant and revoke roles, set the KYC level), trading pairs (list,
//! create, update filters, status, fee schedule) and assets (list, create,
//! update). Admin deposits live in `native.rs`.
//!
//! Every route checks `resource:action` permissions of the matrix
//! (`auth::PERMISSIONS`, mirrored from migrations/README.md), never a role
//! name. Every change is an engine command through the pipeline; reads come
//! from the read models (market: assets and pairs; identity: users;
//! accounts: balances, deposits, withdrawals).
//!
//! `GET admin/users/{id}/ledger` reads any account's ledger, user 0 (the
//! exchange's own account, which receives trading and withdrawal fees)
//! included.
//!
//! Asset and pair definitions are validated exactly as the config file's
//! `[[assets]]` / `[[pairs]]` entries are (`config::Config::asset_specs` /
//! `pair_specs`), so the API and the file accept the same values.
//!
//! Guards beyond the matrix: nobody approves their own withdrawal (403)
//! or locks their own account; locking,
//! unlocking or changing the roles of a staff account (any role besides
//! TRADER) also needs `roles:grant`; the last active ADMIN keeps that role
//! (-4097, decided by the engine). A role change journals only that role
//! (`GrantRole` / `RevokeRole`), so two admins changing different roles of
//! one user at once cannot undo each other; granting a role the user has
//! (or revoking one they lack) answers 200 with nothing journaled.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post, put};
use axum::Router;
use engine::decimal::{format_units, format_units_u128};
use engine::{
    roles, AssetId, AssetSpec, Command, Event, Pair, PairId, PairSpec, PairStatus, RejectReason,
    UserId, UserStatus,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::{self, has_permission};
use crate::config::{AssetConfig, Config, DecimalStr, PairConfig, PairStatusConfig};
use crate::identity::UserView;
use crate::native::{
    authenticate, check, codes, execute, parse, query, rejected, reply, require, status_name,
    u64_param, NativeError, Res,
};
use crate::server::{now_ms, AppState};
use crate::wallet::{asset_table, valid_token, withdrawal_json, withdrawal_status};

/// Largest page of the admin lists.
pub const MAX_PAGE: u64 = 1_000;
/// Default page of the admin lists.
pub const DEFAULT_PAGE: u64 = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/withdrawals", get(list_withdrawals))
        .route(
            "/api/v1/admin/withdrawals/{id}/approve",
            post(approve_withdrawal),
        )
        .route(
            "/api/v1/admin/withdrawals/{id}/reject",
            post(reject_withdrawal),
        )
        .route("/api/v1/admin/users", get(list_users))
        .route("/api/v1/admin/users/{id}", get(get_user))
        .route("/api/v1/admin/users/{id}/ledger", get(user_ledger))
        .route("/api/v1/admin/users/{id}/lock", post(lock_user))
        .route("/api/v1/admin/users/{id}/unlock", post(unlock_user))
        .route("/api/v1/admin/users/{id}/roles", post(grant_role))
        .route("/api/v1/admin/users/{id}/roles/{role}", delete(revoke_role))
        .route("/api/v1/admin/users/{id}/kyc-level", post(set_kyc_level))
        .route("/api/v1/admin/pairs", get(list_pairs).post(create_pair))
        .route(
            "/api/v1/admin/pairs/{symbol}",
            get(get_pair).patch(update_pair).put(update_pair),
        )
        .route("/api/v1/admin/pairs/{symbol}/status", post(set_pair_status))
        .route("/api/v1/admin/fees", get(list_fees))
        .route("/api/v1/admin/fees/{symbol}", put(set_fees))
        .route("/api/v1/admin/assets", get(list_assets).post(create_asset))
        .route(
            "/api/v1/admin/assets/{symbol}",
            get(get_asset).patch(update_asset).put(update_asset),
        )
}

// ---------------------------------------------------------------- helpers

fn bad(msg: impl Into<String>) -> NativeError {
    NativeError::bad(codes::INVALID_PARAMETER, msg)
}

fn conflict(msg: &str) -> NativeError {
    NativeError::new(StatusCode::CONFLICT, codes::SELF_OR_LAST_ADMIN, msg)
}

/// A numeric id from the path (400 when not a number).
pub(crate) fn path_id(
    path: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<u64, NativeError> {
    let Path(raw) = path.map_err(|_| bad(format!("Bad {what} id in the path.")))?;
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad(format!("{what} id must be a number.")));
    }
    raw.parse::<u64>()
        .map_err(|_| bad(format!("{what} id is too large.")))
}

/// An optional JSON body that must be empty or an object without fields.
pub(crate) fn empty_body(body: Result<Bytes, BytesRejection>) -> Result<(), NativeError> {
    let body = body.map_err(|_| NativeError::bad(codes::BAD_REQUEST, "Cannot read the body."))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<Map<String, Value>>(&body) {
        Ok(m) if m.is_empty() => Ok(()),
        Ok(_) => Err(NativeError::bad(
            codes::BAD_REQUEST,
            "This endpoint takes no body fields.",
        )),
        Err(e) => Err(NativeError::bad(
            codes::BAD_REQUEST,
            format!("Malformed JSON body: {e}"),
        )),
    }
}

/// `offset` and `limit` of a page.
pub(crate) fn page(p: &crate::binance::params::Params) -> Result<(usize, usize), NativeError> {
    let offset = u64_param(p, "offset", 0..=u32::MAX as u64)?.unwrap_or(0) as usize;
    let limit = u64_param(p, "limit", 1..=MAX_PAGE)?.unwrap_or(DEFAULT_PAGE) as usize;
    Ok((offset, limit))
}

pub(crate) fn paged(
    total: usize,
    offset: usize,
    limit: usize,
    key: &str,
    items: Vec<Value>,
) -> Value {
    let mut v = json!({ "total": total, "offset": offset, "limit": limit });
    v[key] = Value::Array(items);
    v
}

fn is_staff(user_roles: u32) -> bool {
    user_roles & !roles::TRADER != 0
}

fn admin_user_json(u: &UserView) -> Value {
    json!({
        "id": u.id.0,
        "username": u.username,
        "email": u.email,
        "status": status_name(u.status),
        "roles": auth::role_names(u.roles),
        "kyc_level": u.kyc_level,
        "failed_logins": u.failed_logins,
        "locked_until": if u.locked_at(now_ms()) { json!(u.locked_until_ms) } else { Value::Null },
    })
}

fn user_view(st: &AppState, id: UserId) -> Result<UserView, NativeError> {
    st.identity
        .read()
        .expect("identity lock")
        .user(id)
        .cloned()
        .ok_or_else(|| rejected(RejectReason::UnknownUser))
}

// ------------------------------------------------------------ withdrawals

/// All users' withdrawals, newest first. Parameters: `status` (PENDING |
/// CONFIRMED | REJECTED), `username`, `asset`, `offset`, `limit`.
async fn list_withdrawals(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "withdrawals:read")?;
    // Other users' data (migrations/README.md "Roles and permissions").
    require(roles, "users:read")?;
    let p = query(
        q.as_deref(),
        &["status", "username", "asset", "offset", "limit"],
    )?;
    let status = p.get("status");
    if status.is_some_and(|s| !["PENDING", "CONFIRMED", "REJECTED"].contains(&s)) {
        return Err(bad("status must be PENDING, CONFIRMED or REJECTED."));
    }
    let (offset, limit) = page(&p)?;
    let table = asset_table(&st);
    let user = match p.get("username") {
        None => None,
        Some(name) => Some(
            st.identity
                .read()
                .expect("identity lock")
                .user_by_name(name)
                .map(|u| u.id)
                .ok_or_else(|| rejected(RejectReason::UnknownUser))?,
        ),
    };
    let asset = match p.get("asset") {
        None => None,
        Some(s) => Some(crate::wallet::asset_by_symbol(&table, s)?.0),
    };
    let acc = st.accounts.read().expect("accounts lock");
    let matching: Vec<&engine::Withdrawal> = acc
        .wallet
        .withdrawals
        .values()
        .rev()
        .filter(|w| {
            status.is_none_or(|s| s == withdrawal_status(w.status))
                && user.is_none_or(|u| u == w.user)
                && asset.is_none_or(|a| a == w.asset)
        })
        .collect();
    let total = matching.len();
    let items: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|w| withdrawal_json(w, &table))
        .collect();
    drop(acc);
    reply(
        StatusCode::OK,
        paged(total, offset, limit, "withdrawals", items),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveReq {
    tx_hash: String,
}

/// Sent on chain: the frozen amount leaves, the fee goes to the fee
/// account (engine `CompleteWithdrawal`). Status CONFIRMED.
async fn approve_withdrawal(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, roles) = authenticate(&st, &headers)?;
    require(roles, "withdrawals:approve")?;
    let id = path_id(path, "withdrawal")?;
    let r: ApproveReq = parse(body)?;
    if !valid_token(&r.tx_hash, 128) {
        return Err(bad("tx_hash must be 1 to 128 printable characters."));
    }
    // Four eyes: funds leave only with someone else's approval.
    let owner = st
        .accounts
        .read()
        .expect("accounts lock")
        .wallet
        .withdrawals
        .get(&id)
        .map(|w| w.user);
    if owner == Some(caller) {
        return Err(NativeError::forbidden(
            "You cannot approve your own withdrawal.",
        ));
    }
    let o = execute(
        &st,
        Command::CompleteWithdrawal {
            withdrawal: id,
            tx_hash: r.tx_hash,
            by: Some(caller),
        },
    )
    .await?;
    check(&o)?;
    withdrawal_reply(&st, &o.events)
}

/// Refused: amount and fee are unfrozen (engine `RejectWithdrawal`). No
/// body (or `{}`).
async fn reject_withdrawal(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, roles) = authenticate(&st, &headers)?;
    require(roles, "withdrawals:approve")?;
    let id = path_id(path, "withdrawal")?;
    empty_body(body)?;
    let o = execute(
        &st,
        Command::RejectWithdrawal {
            withdrawal: id,
            by: Some(caller),
        },
    )
    .await?;
    check(&o)?;
    withdrawal_reply(&st, &o.events)
}

fn withdrawal_reply(st: &AppState, events: &[Event]) -> Res {
    let w = events
        .iter()
        .find_map(|e| match e {
            Event::WithdrawalUpdated(w) => Some(w),
            _ => None,
        })
        .ok_or_else(|| NativeError::unavailable("Withdrawal result missing."))?;
    let mut v = withdrawal_json(w, &asset_table(st));
    v["username"] = json!(user_view(st, w.user).map(|u| u.username).ok());
    reply(StatusCode::OK, v)
}

// ------------------------------------------------------------------ users

/// Users by id. Parameters: `status` (ACTIVE | SUSPENDED), `role`,
/// `offset`, `limit`.
async fn list_users(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Res {
    let (_, caller_roles) = authenticate(&st, &headers)?;
    require(caller_roles, "users:read")?;
    let p = query(q.as_deref(), &["status", "role", "offset", "limit"])?;
    let status = match p.get("status") {
        None => None,
        Some("ACTIVE") => Some(UserStatus::Active),
        Some("SUSPENDED") => Some(UserStatus::Suspended),
        Some(_) => return Err(bad("status must be ACTIVE or SUSPENDED.")),
    };
    let role = match p.get("role") {
        None => None,
        Some(r) => Some(role_bit(r)?),
    };
    let (offset, limit) = page(&p)?;
    let ident = st.identity.read().expect("identity lock");
    let mut users: Vec<&UserView> = ident
        .users
        .values()
        .filter(|u| status.is_none_or(|s| s == u.status) && role.is_none_or(|r| u.roles & r != 0))
        .collect();
    users.sort_by_key(|u| u.id);
    let total = users.len();
    let items: Vec<Value> = users
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(admin_user_json)
        .collect();
    drop(ident);
    reply(StatusCode::OK, paged(total, offset, limit, "users", items))
}

/// One user with balances (`users:read` and `accounts:read`).
async fn get_user(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    let (_, caller_roles) = authenticate(&st, &headers)?;
    require(caller_roles, "users:read")?;
    require(caller_roles, "accounts:read")?;
    let id = UserId(path_id(path, "user")?);
    let u = user_view(&st, id)?;
    let table = asset_table(&st);
    let balances: Vec<Value> = st
        .accounts
        .read()
        .expect("accounts lock")
        .user(id)
        .map(|a| {
            a.balances
                .iter()
                .map(|(asset, b)| {
                    let (symbol, d) = table.get(asset).map_or(("?", 0), |(s, d)| (s.as_str(), *d));
                    json!({
                        "asset": symbol,
                        "available": format_units(b.available, d),
                        "frozen": format_units(b.frozen, d),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut v = admin_user_json(&u);
    v["balances"] = Value::Array(balances);
    reply(StatusCode::OK, v)
}

/// A user's ledger, newest first (parameters as `GET wallet/ledger`).
/// User 0 is the exchange's own account, which receives the fees.
async fn user_ledger(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Res {
    let (_, caller_roles) = authenticate(&st, &headers)?;
    require(caller_roles, "users:read")?;
    require(caller_roles, "accounts:read")?;
    let id = UserId(path_id(path, "user")?);
    if id.0 != 0 {
        user_view(&st, id)?;
    }
    crate::wallet::ledger_page(&st, id, q.as_deref())
}

/// The target of a user action: exists, and is a staff account only if
/// the caller may also grant roles.
fn target_user(
    st: &AppState,
    path: Result<Path<String>, PathRejection>,
    caller_roles: u32,
) -> Result<UserView, NativeError> {
    let id = UserId(path_id(path, "user")?);
    let u = user_view(st, id)?;
    if is_staff(u.roles) && !has_permission(caller_roles, "roles:grant") {
        return Err(NativeError::forbidden(
            "Permission roles:grant required to act on a staff account.",
        ));
    }
    Ok(u)
}

async fn set_status(
    st: AppState,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    status: UserStatus,
) -> Res {
    let (caller, caller_roles) = authenticate(&st, &headers)?;
    require(caller_roles, "users:lock")?;
    let u = target_user(&st, path, caller_roles)?;
    empty_body(body)?;
    if u.id == caller && status != UserStatus::Active {
        return Err(conflict("You cannot lock your own account."));
    }
    let o = execute(
        &st,
        Command::SetUserStatus {
            user: u.id,
            status,
            // A suspension ends the user's open orders in the same command.
            cancel_orders: status == UserStatus::Suspended,
            by: Some(caller),
        },
    )
    .await?;
    check(&o)?;
    reply(StatusCode::OK, admin_user_json(&user_view(&st, u.id)?))
}

/// SUSPENDED: password login, JWTs, API keys and new orders are refused,
/// and the user's open orders on every pair are canceled in the same
/// command (`cancel_orders`; the unlock touches no order).
async fn lock_user(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    set_status(st, headers, path, body, UserStatus::Suspended).await
}

async fn unlock_user(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    set_status(st, headers, path, body, UserStatus::Active).await
}

fn role_bit(name: &str) -> Result<u32, NativeError> {
    roles::NAMES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(b, _)| *b)
        .ok_or_else(|| bad("role must be one of ADMIN, OPERATOR, SUPPORT, AUDITOR, TRADER."))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleReq {
    role: String,
}

/// `by`: the acting admin, journaled for the audit log.
async fn change_roles(st: &AppState, by: UserId, u: UserView, bit: u32, grant: bool) -> Res {
    let by = Some(by);
    let cmd = if grant {
        Command::GrantRole {
            user: u.id,
            role: bit,
            by,
        }
    } else {
        Command::RevokeRole {
            user: u.id,
            role: bit,
            by,
        }
    };
    let o = execute(st, cmd).await?;
    match o.events.first() {
        // Already so: nothing changed, nothing to refuse.
        Some(Event::Rejected {
            reason: RejectReason::RoleUnchanged,
        }) => {}
        Some(Event::Rejected {
            reason: RejectReason::LastActiveAdmin,
        }) => return Err(conflict("The last active ADMIN keeps the ADMIN role.")),
        _ => check(&o)?,
    }
    reply(StatusCode::OK, admin_user_json(&user_view(st, u.id)?))
}

/// Body `{"role": "OPERATOR"}`.
async fn grant_role(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, caller_roles) = authenticate(&st, &headers)?;
    require(caller_roles, "roles:grant")?;
    let u = target_user(&st, path, caller_roles)?;
    let r: RoleReq = parse(body)?;
    let bit = role_bit(&r.role)?;
    change_roles(&st, caller, u, bit, true).await
}

async fn revoke_role(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Res {
    let (caller, caller_roles) = authenticate(&st, &headers)?;
    require(caller_roles, "roles:grant")?;
    let Path((id, role)) = path.map_err(|_| bad("Bad user id or role in the path."))?;
    let u = target_user(&st, Ok(Path(id)), caller_roles)?;
    let bit = role_bit(&role)?;
    change_roles(&st, caller, u, bit, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KycLevelReq {
    level: u8,
}

/// Body `{"level": 0..3}` (engine `SetKycLevel`); levels gate withdrawals.
async fn set_kyc_level(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, caller_roles) = authenticate(&st, &headers)?;
    require(caller_roles, "kyc:review")?;
    let id = UserId(path_id(path, "user")?);
    user_view(&st, id)?;
    let r: KycLevelReq = parse(body)?;
    if r.level > 3 {
        return Err(bad("level must be 0, 1, 2 or 3."));
    }
    let o = execute(
        &st,
        Command::SetKycLevel {
            user: id,
            level: r.level,
            by: Some(caller),
        },
    )
    .await?;
    check(&o)?;
    reply(StatusCode::OK, admin_user_json(&user_view(&st, id)?))
}

// ------------------------------------------------------------------ pairs

/// The assets as the config validator sees them: ids are positions + 1.
fn asset_specs(st: &AppState) -> Vec<AssetSpec> {
    let m = st.market.read().expect("market lock");
    debug_assert!(m
        .assets
        .keys()
        .enumerate()
        .all(|(i, id)| id.0 as usize == i + 1));
    m.assets.values().map(|a| a.spec.clone()).collect()
}

fn decimals_of(specs: &[AssetSpec], id: AssetId) -> u32 {
    specs
        .get((id.0 as usize).wrapping_sub(1))
        .map_or(0, |a| a.decimals as u32)
}

fn symbol_of(specs: &[AssetSpec], id: AssetId) -> String {
    specs
        .get((id.0 as usize).wrapping_sub(1))
        .map_or_else(String::new, |a| a.symbol.clone())
}

fn pair_json(p: &Pair, specs: &[AssetSpec]) -> Value {
    let s = &p.spec;
    let (bd, qd) = (decimals_of(specs, s.base), decimals_of(specs, s.quote));
    let price = |ticks: u64| format_units_u128(ticks as u128 * s.tick_units as u128, qd);
    json!({
        "id": p.id.0,
        "symbol": s.symbol,
        "base": symbol_of(specs, s.base),
        "quote": symbol_of(specs, s.quote),
        "status": s.status.as_str(),
        "tick_size": format_units(s.tick_units, qd),
        "step_size": format_units(s.step_units, bd),
        "min_qty": format_units(s.min_qty_units, bd),
        "max_qty": format_units(s.max_qty_units, bd),
        "market_max_qty": format_units(s.market_max_qty_units, bd),
        "min_notional": format_units(s.min_notional_units, qd),
        "max_notional": if s.max_notional_units == 0 { Value::Null } else { json!(format_units(s.max_notional_units, qd)) },
        "min_price": price(s.min_price_ticks),
        "max_price": price(s.max_price_ticks),
        "maker_fee": format_units(s.maker_fee_e8, 8),
        "taker_fee": format_units(s.taker_fee_e8, 8),
        "price_band_pct": s.price_band_pct,
    })
}

fn fee_json(p: &Pair) -> Value {
    json!({
        "symbol": p.spec.symbol,
        "maker_fee": format_units(p.spec.maker_fee_e8, 8),
        "taker_fee": format_units(p.spec.taker_fee_e8, 8),
    })
}

/// A listed pair by symbol (exact) or numeric id; 404 otherwise.
fn find_pair(st: &AppState, key: &str) -> Result<Pair, NativeError> {
    let m = st.market.read().expect("market lock");
    let id = match m.pair_by_symbol.get(key) {
        Some(id) => Some(*id),
        None => key.parse::<u32>().ok().map(PairId),
    };
    id.and_then(|id| m.pairs.get(&id))
        .map(|v| v.pair.clone())
        .ok_or_else(|| rejected(RejectReason::UnknownPair))
}

fn path_key(path: Result<Path<String>, PathRejection>) -> Result<String, NativeError> {
    path.map(|Path(k)| k)
        .map_err(|_| bad("Bad symbol in the path."))
}

/// A pair's spec back in the config's terms (what `pair_specs` parses).
fn pair_config(p: &Pair, specs: &[AssetSpec]) -> PairConfig {
    let s = &p.spec;
    let (bd, qd) = (decimals_of(specs, s.base), decimals_of(specs, s.quote));
    let dec = |units: u64, d: u32| DecimalStr(format_units(units, d));
    let price =
        |ticks: u64| DecimalStr(format_units_u128(ticks as u128 * s.tick_units as u128, qd));
    PairConfig {
        symbol: s.symbol.clone(),
        base: symbol_of(specs, s.base),
        quote: symbol_of(specs, s.quote),
        tick_size: dec(s.tick_units, qd),
        step_size: dec(s.step_units, bd),
        min_qty: dec(s.min_qty_units, bd),
        max_qty: dec(s.max_qty_units, bd),
        market_max_qty: Some(dec(s.market_max_qty_units, bd)),
        min_notional: dec(s.min_notional_units, qd),
        max_notional: (s.max_notional_units != 0).then(|| dec(s.max_notional_units, qd)),
        min_price: Some(price(s.min_price_ticks)),
        max_price: Some(price(s.max_price_ticks)),
        maker_fee: dec(s.maker_fee_e8, 8),
        taker_fee: dec(s.taker_fee_e8, 8),
        price_band_pct: Some(s.price_band_pct),
        status: match s.status {
            PairStatus::Trading => PairStatusConfig::Trading,
            PairStatus::Halt => PairStatusConfig::Halt,
            PairStatus::CancelOnly => PairStatusConfig::CancelOnly,
        },
    }
}

/// Validate like the config file does.
/// `default_band`: the price band of a pair that names none (the server's
/// `engine.price_band_pct`).
fn pair_spec(
    p: PairConfig,
    specs: &[AssetSpec],
    default_band: u32,
) -> Result<PairSpec, NativeError> {
    for sym in [&p.base, &p.quote] {
        if !specs.iter().any(|a| &a.symbol == sym) {
            return Err(rejected(RejectReason::UnknownAsset));
        }
    }
    let mut cfg = Config {
        pairs: vec![p],
        ..Config::default()
    };
    cfg.engine.price_band_pct = default_band;
    cfg.pair_specs(specs)
        .map_err(|e| bad(e.to_string()))?
        .pop()
        .ok_or_else(|| bad("No pair."))
}

fn body_object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, NativeError> {
    parse::<Map<String, Value>>(body)
}

/// Fee fields need `fees:write` besides the route's permission.
fn require_fees_if_sent(roles: u32, obj: &Map<String, Value>) -> Result<(), NativeError> {
    if obj.contains_key("maker_fee") || obj.contains_key("taker_fee") {
        require(roles, "fees:write")?;
    }
    Ok(())
}

fn from_object<T: serde::de::DeserializeOwned>(obj: Map<String, Value>) -> Result<T, NativeError> {
    serde_json::from_value(Value::Object(obj))
        .map_err(|e| NativeError::bad(codes::BAD_REQUEST, format!("Malformed JSON body: {e}")))
}

async fn list_pairs(State(st): State<AppState>, headers: HeaderMap) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "pairs:read")?;
    let specs = asset_specs(&st);
    let m = st.market.read().expect("market lock");
    let list: Vec<Value> = m
        .pairs
        .values()
        .map(|v| pair_json(&v.pair, &specs))
        .collect();
    drop(m);
    reply(StatusCode::OK, Value::Array(list))
}

async fn get_pair(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "pairs:read")?;
    let p = find_pair(&st, &path_key(path)?)?;
    reply(StatusCode::OK, pair_json(&p, &asset_specs(&st)))
}

/// Body: a `[[pairs]]` entry of the config as JSON (symbol, base, quote,
/// tick_size, step_size, min_qty, max_qty, ...; amounts as strings).
/// `price_band_pct` defaults to the server's `engine.price_band_pct`.
async fn create_pair(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, roles) = authenticate(&st, &headers)?;
    require(roles, "pairs:write")?;
    let obj = body_object(body)?;
    require_fees_if_sent(roles, &obj)?;
    let cfg: PairConfig = from_object(obj)?;
    let specs = asset_specs(&st);
    let spec = pair_spec(cfg, &specs, st.default_price_band_pct)?;
    let o = execute(
        &st,
        Command::AddPair {
            spec: Box::new(spec),
            by: Some(caller),
        },
    )
    .await?;
    check(&o)?;
    let p = o
        .events
        .iter()
        .find_map(|e| match e {
            Event::PairListed(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| NativeError::unavailable("Pair result missing."))?;
    reply(StatusCode::CREATED, pair_json(p, &specs))
}

/// The fields `update_pair` may change (the grid, assets and symbol are
/// fixed once listed).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairUpdate {
    min_qty: Option<DecimalStr>,
    max_qty: Option<DecimalStr>,
    market_max_qty: Option<DecimalStr>,
    min_notional: Option<DecimalStr>,
    /// "0" removes the maximum.
    max_notional: Option<DecimalStr>,
    min_price: Option<DecimalStr>,
    max_price: Option<DecimalStr>,
    maker_fee: Option<DecimalStr>,
    taker_fee: Option<DecimalStr>,
    price_band_pct: Option<u32>,
    status: Option<PairStatusConfig>,
}

/// Validate `cfg` and journal it as the pair's new spec, by admin `by`.
async fn submit_pair_update(
    st: &AppState,
    by: UserId,
    current: &Pair,
    cfg: PairConfig,
    specs: &[AssetSpec],
) -> Result<Pair, NativeError> {
    let spec = pair_spec(cfg, specs, st.default_price_band_pct)?;
    let o = execute(
        st,
        Command::UpdatePair {
            pair: current.id,
            spec: Box::new(spec),
            by: Some(by),
        },
    )
    .await?;
    check(&o)?;
    o.events
        .iter()
        .find_map(|e| match e {
            Event::PairUpdated(p) => Some((**p).clone()),
            _ => None,
        })
        .ok_or_else(|| NativeError::unavailable("Pair result missing."))
}

/// Partial update of filters, fees, price band and status.
async fn update_pair(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, roles) = authenticate(&st, &headers)?;
    require(roles, "pairs:write")?;
    let current = find_pair(&st, &path_key(path)?)?;
    let obj = body_object(body)?;
    require_fees_if_sent(roles, &obj)?;
    let u: PairUpdate = from_object(obj)?;
    let specs = asset_specs(&st);
    let mut cfg = pair_config(&current, &specs);
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = u.$f { cfg.$f = v; } )* };
    }
    set!(min_qty, max_qty, min_notional, maker_fee, taker_fee, status);
    if let Some(v) = u.market_max_qty {
        cfg.market_max_qty = Some(v);
    }
    if let Some(v) = u.min_price {
        cfg.min_price = Some(v);
    }
    if let Some(v) = u.max_price {
        cfg.max_price = Some(v);
    }
    if let Some(v) = u.price_band_pct {
        cfg.price_band_pct = Some(v);
    }
    if let Some(v) = u.max_notional {
        let zero = engine::decimal::parse_units(v.as_str(), 18).is_ok_and(|x| x == 0);
        cfg.max_notional = if zero { None } else { Some(v) };
    }
    let p = submit_pair_update(&st, caller, &current, cfg, &specs).await?;
    reply(StatusCode::OK, pair_json(&p, &specs))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusReq {
    status: PairStatusConfig,
}

/// Body `{"status": "TRADING" | "HALT" | "CANCEL_ONLY"}`.
async fn set_pair_status(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, roles) = authenticate(&st, &headers)?;
    require(roles, "pairs:write")?;
    let current = find_pair(&st, &path_key(path)?)?;
    let r: StatusReq = parse(body)?;
    let o = execute(
        &st,
        Command::SetPairStatus {
            pair: current.id,
            status: r.status.into(),
            by: Some(caller),
        },
    )
    .await?;
    check(&o)?;
    let p = find_pair(&st, &current.spec.symbol)?;
    reply(StatusCode::OK, pair_json(&p, &asset_specs(&st)))
}

/// The fee schedule: maker and taker rates of every pair.
async fn list_fees(State(st): State<AppState>, headers: HeaderMap) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "fees:read")?;
    let m = st.market.read().expect("market lock");
    let list: Vec<Value> = m.pairs.values().map(|v| fee_json(&v.pair)).collect();
    drop(m);
    reply(StatusCode::OK, Value::Array(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeesReq {
    maker_fee: Option<DecimalStr>,
    taker_fee: Option<DecimalStr>,
}

/// Body `{"maker_fee": "0.001", "taker_fee": "0.002"}` (either or both;
/// rates from 0 to 1 with at most 8 decimals).
async fn set_fees(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, roles) = authenticate(&st, &headers)?;
    require(roles, "fees:write")?;
    let current = find_pair(&st, &path_key(path)?)?;
    let r: FeesReq = parse(body)?;
    if r.maker_fee.is_none() && r.taker_fee.is_none() {
        return Err(bad("Send maker_fee, taker_fee or both."));
    }
    let specs = asset_specs(&st);
    let mut cfg = pair_config(&current, &specs);
    if let Some(v) = r.maker_fee {
        cfg.maker_fee = v;
    }
    if let Some(v) = r.taker_fee {
        cfg.taker_fee = v;
    }
    let p = submit_pair_update(&st, caller, &current, cfg, &specs).await?;
    reply(StatusCode::OK, fee_json(&p))
}

// ----------------------------------------------------------------- assets

fn asset_json(id: AssetId, a: &AssetSpec) -> Value {
    let d = a.decimals as u32;
    json!({
        "id": id.0,
        "symbol": a.symbol,
        "name": a.name,
        "decimals": a.decimals,
        "min_withdraw": format_units(a.min_withdraw_units, d),
        "withdraw_fee": format_units(a.withdraw_fee_units, d),
        "daily_withdraw_limit": format_units(a.daily_withdraw_limit_units, d),
        "confirmations": a.confirmations,
        "active": a.active,
    })
}

fn asset_config(a: &AssetSpec) -> AssetConfig {
    let d = a.decimals as u32;
    AssetConfig {
        symbol: a.symbol.clone(),
        name: a.name.clone(),
        decimals: a.decimals,
        min_withdraw: DecimalStr(format_units(a.min_withdraw_units, d)),
        withdraw_fee: DecimalStr(format_units(a.withdraw_fee_units, d)),
        daily_withdraw_limit: DecimalStr(format_units(a.daily_withdraw_limit_units, d)),
        confirmations: a.confirmations,
        active: a.active,
    }
}

fn asset_spec(a: AssetConfig) -> Result<AssetSpec, NativeError> {
    let cfg = Config {
        assets: vec![a],
        ..Config::default()
    };
    cfg.asset_specs()
        .map_err(|e| bad(e.to_string()))?
        .pop()
        .ok_or_else(|| bad("No asset."))
}

/// A listed asset by symbol (exact) or numeric id; 404 otherwise.
fn find_asset(st: &AppState, key: &str) -> Result<(AssetId, AssetSpec), NativeError> {
    let m = st.market.read().expect("market lock");
    m.assets
        .values()
        .find(|a| a.spec.symbol == key || a.id.0.to_string() == key)
        .map(|a| (a.id, a.spec.clone()))
        .ok_or_else(|| rejected(RejectReason::UnknownAsset))
}

async fn list_assets(State(st): State<AppState>, headers: HeaderMap) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "assets:read")?;
    let m = st.market.read().expect("market lock");
    let list: Vec<Value> = m
        .assets
        .values()
        .map(|a| asset_json(a.id, &a.spec))
        .collect();
    drop(m);
    reply(StatusCode::OK, Value::Array(list))
}

async fn get_asset(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "assets:read")?;
    let (id, spec) = find_asset(&st, &path_key(path)?)?;
    reply(StatusCode::OK, asset_json(id, &spec))
}

/// Body: an `[[assets]]` entry of the config as JSON (symbol, name,
/// decimals, min_withdraw, withdraw_fee, daily_withdraw_limit,
/// confirmations, active).
async fn create_asset(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, roles) = authenticate(&st, &headers)?;
    require(roles, "assets:write")?;
    let cfg: AssetConfig = parse(body)?;
    let spec = asset_spec(cfg)?;
    let o = execute(
        &st,
        Command::AddAsset {
            spec,
            by: Some(caller),
        },
    )
    .await?;
    check(&o)?;
    let a = o
        .events
        .iter()
        .find_map(|e| match e {
            Event::AssetListed(a) => Some(a),
            _ => None,
        })
        .ok_or_else(|| NativeError::unavailable("Asset result missing."))?;
    reply(StatusCode::CREATED, asset_json(a.id, &a.spec))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssetUpdate {
    name: Option<String>,
    min_withdraw: Option<DecimalStr>,
    withdraw_fee: Option<DecimalStr>,
    daily_withdraw_limit: Option<DecimalStr>,
    confirmations: Option<u32>,
    active: Option<bool>,
}

/// Partial update; symbol and decimals are fixed once listed.
async fn update_asset(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, roles) = authenticate(&st, &headers)?;
    require(roles, "assets:write")?;
    let (id, current) = find_asset(&st, &path_key(path)?)?;
    let u: AssetUpdate = parse(body)?;
    let mut cfg = asset_config(&current);
    if let Some(v) = u.name {
        cfg.name = v;
    }
    if let Some(v) = u.min_withdraw {
        cfg.min_withdraw = v;
    }
    if let Some(v) = u.withdraw_fee {
        cfg.withdraw_fee = v;
    }
    if let Some(v) = u.daily_withdraw_limit {
        cfg.daily_withdraw_limit = v;
    }
    if let Some(v) = u.confirmations {
        cfg.confirmations = v;
    }
    if let Some(v) = u.active {
        cfg.active = v;
    }
    let spec = asset_spec(cfg)?;
    let o = execute(
        &st,
        Command::UpdateAsset {
            asset: id,
            spec,
            by: Some(caller),
        },
    )
    .await?;
    check(&o)?;
    let a = o
        .events
        .iter()
        .find_map(|e| match e {
            Event::AssetUpdated(a) => Some(a),
            _ => None,
        })
        .ok_or_else(|| NativeError::unavailable("Asset result missing."))?;
    reply(StatusCode::OK, asset_json(a.id, &a.spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<AssetSpec> {
        ["BTC", "USDT"]
            .iter()
            .map(|s| AssetSpec {
                symbol: s.to_string(),
                name: s.to_string(),
                decimals: 8,
                min_withdraw_units: 0,
                withdraw_fee_units: 0,
                daily_withdraw_limit_units: 0,
                confirmations: 1,
                active: true,
            })
            .collect()
    }

    #[test]
    fn pair_spec_round_trips_through_the_config_form() {
        let specs = specs();
        let spec = PairSpec {
            symbol: "BTCUSDT".into(),
            base: AssetId(1),
            quote: AssetId(2),
            tick_units: 1_000_000,
            step_units: 1_000,
            min_qty_units: 1_000,
            max_qty_units: 900_000_000_000,
            market_max_qty_units: 800_000_000_000,
            min_notional_units: 500_000_000,
            max_notional_units: 0,
            min_price_ticks: 1,
            max_price_ticks: 100_000_000,
            maker_fee_e8: 100_000,
            taker_fee_e8: 200_000,
            price_band_pct: 50,
            status: PairStatus::Halt,
        };
        let p = Pair::new(PairId(1), spec.clone(), 8);
        assert_eq!(pair_spec(pair_config(&p, &specs), &specs, 7).unwrap(), spec);
        let a = &specs[0];
        assert_eq!(&asset_spec(asset_config(a)).unwrap(), a);
    }
}
