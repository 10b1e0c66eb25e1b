//! Native wallet API (`/api/v1/wallet/*`, JWT bearer): balances, deposit
//! addresses, withdrawal requests, deposit/withdrawal history and the
//! ledger (API.md "Native API", wallet row).
//!
//! Every state change is an engine command (`RequestWithdrawal` freezes
//! amount + fee and enforces the minimum, the KYC level, the daily limit
//! and LARGE_WITHDRAWAL risk rules: a BLOCK rule's refusal is 403 -4038); reads come from the wallet read model (`ledger.rs`, inside
//! `Accounts`), which the publisher has updated before a command's reply is
//! rendered, so a client reads its own writes. Each route checks one
//! `resource:action` permission of the matrix (`auth::PERMISSIONS`).
//!
//! The engine has no user cancellation of a pending withdrawal (only an
//! admin's reject), so there is no `DELETE wallet/withdrawals/{id}`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use engine::decimal::{format_units, parse_units, DecimalError};
use engine::{
    AssetId, Command, Deposit, DepositStatus, Event, UserId, Withdrawal, WithdrawalStatus,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::ledger::LedgerRow;
use crate::native::{
    authenticate, check, codes, execute, parse, query, rejected, reply, require, u64_param,
    NativeError, Res,
};
use crate::server::AppState;

/// Largest `limit` of the history and ledger lists.
pub const MAX_LIST_LIMIT: u64 = 1_000;
/// Default `limit` of the history and ledger lists.
pub const DEFAULT_LIST_LIMIT: u64 = 100;
/// Longest withdrawal address (the engine's bound too).
pub const MAX_ADDRESS_LEN: usize = 128;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/wallet/balances", get(balances))
        .route(
            "/api/v1/wallet/deposit-address/{asset}",
            get(deposit_address),
        )
        .route("/api/v1/wallet/withdrawals", post(request_withdrawal))
        .route("/api/v1/wallet/history", get(history))
        .route("/api/v1/wallet/ledger", get(ledger))
}

// ---------------------------------------------------------------- helpers

/// (symbol, decimals) of every listed asset, copied so no handler holds the
/// market lock while it reads another read model.
pub(crate) type AssetTable = BTreeMap<AssetId, (String, u32)>;

pub(crate) fn asset_table(st: &AppState) -> AssetTable {
    let m = st.market.read().expect("market lock");
    m.assets
        .values()
        .map(|a| (a.id, (a.spec.symbol.clone(), a.spec.decimals as u32)))
        .collect()
}

/// A listed asset by its symbol (exact): (id, symbol, decimals); 404
/// otherwise.
pub(crate) fn asset_by_symbol(
    table: &AssetTable,
    symbol: &str,
) -> Result<(AssetId, String, u32), NativeError> {
    table
        .iter()
        .find(|(_, (s, _))| s == symbol)
        .map(|(id, (s, d))| (*id, s.clone(), *d))
        .ok_or_else(|| rejected(engine::RejectReason::UnknownAsset))
}

fn symbol_of(table: &AssetTable, id: AssetId) -> (&str, u32) {
    table.get(&id).map_or(("?", 0), |(s, d)| (s.as_str(), *d))
}

/// A positive amount of an asset with `decimals` places, from a decimal
/// string (a JSON number is accepted too); anything else is -4005.
pub(crate) fn amount_units(v: &Value, decimals: u32) -> Result<u64, NativeError> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(NativeError::bad(
                codes::INVALID_AMOUNT,
                "amount must be a decimal string.",
            ))
        }
    };
    match parse_units(&text, decimals) {
        Ok(0) => Err(NativeError::bad(
            codes::INVALID_AMOUNT,
            "amount must be greater than 0.",
        )),
        Ok(units) => Ok(units),
        Err(e) => Err(NativeError::bad(
            codes::INVALID_AMOUNT,
            match e {
                DecimalError::TooManyDecimals { .. } => {
                    format!("amount has more than {decimals} decimal places.")
                }
                DecimalError::Overflow => "amount is too large.".to_string(),
                DecimalError::Negative => "amount must be greater than 0.".to_string(),
                _ => "amount must be a decimal number such as \"1.5\".".to_string(),
            },
        )),
    }
}

/// 1..=128 printable ASCII characters without blanks (tx hashes, addresses).
pub(crate) fn valid_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_graphic())
}

pub(crate) fn withdrawal_status(s: WithdrawalStatus) -> &'static str {
    match s {
        WithdrawalStatus::Pending => "PENDING",
        WithdrawalStatus::Sent => "CONFIRMED",
        WithdrawalStatus::Rejected => "REJECTED",
    }
}

pub(crate) fn deposit_status(s: DepositStatus) -> &'static str {
    match s {
        DepositStatus::Pending => "PENDING",
        DepositStatus::Credited => "CONFIRMED",
    }
}

pub(crate) fn withdrawal_json(w: &Withdrawal, table: &AssetTable) -> Value {
    let (symbol, d) = symbol_of(table, w.asset);
    json!({
        "id": w.id,
        "type": "WITHDRAWAL",
        "user_id": w.user.0,
        "asset": symbol,
        "amount": format_units(w.amount, d),
        "fee": format_units(w.fee, d),
        "address": w.address,
        "tx_hash": if w.tx_hash.is_empty() { Value::Null } else { json!(w.tx_hash) },
        "status": withdrawal_status(w.status),
        "created_at": w.created_ms,
        "updated_at": w.updated_ms,
    })
}

pub(crate) fn deposit_json(d: &Deposit, table: &AssetTable) -> Value {
    let (symbol, dec) = symbol_of(table, d.asset);
    json!({
        "id": d.id,
        "type": "DEPOSIT",
        "user_id": d.user.0,
        "asset": symbol,
        "amount": format_units(d.amount, dec),
        "tx_hash": d.tx_hash,
        "confirmations": d.confirmations,
        "required_confirmations": d.required,
        "status": deposit_status(d.status),
        "created_at": d.created_ms,
        "updated_at": d.updated_ms,
    })
}

fn signed_units(before: u64, after: u64, d: u32) -> String {
    if after >= before {
        format_units(after - before, d)
    } else {
        format!("-{}", format_units(before - after, d))
    }
}

fn ledger_json(r: &LedgerRow, table: &AssetTable) -> Value {
    let (symbol, d) = symbol_of(table, r.asset);
    let (kind, reference) = r.kind();
    json!({
        "id": r.id,
        "asset": symbol,
        "type": kind,
        "balance_type": r.bucket.as_str(),
        "amount": signed_units(r.before_units, r.after_units, d),
        "balance_before": format_units(r.before_units, d),
        "balance_after": format_units(r.after_units, d),
        "reference_type": reference.map(|x| x.0),
        "reference_id": reference.map(|x| x.1),
        "time": r.time_ms,
    })
}

/// An optional `asset` parameter: the asset's id (404 when unknown).
fn asset_filter(
    p: &crate::binance::params::Params,
    table: &AssetTable,
) -> Result<Option<AssetId>, NativeError> {
    match p.get("asset") {
        None => Ok(None),
        Some(s) => asset_by_symbol(table, s).map(|(id, _, _)| Some(id)),
    }
}

// --------------------------------------------------------------- handlers

/// Every listed asset with the caller's available, frozen and total.
async fn balances(State(st): State<AppState>, headers: HeaderMap) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "accounts:read")?;
    let table = asset_table(&st);
    let held: BTreeMap<AssetId, engine::Balance> = st
        .accounts
        .read()
        .expect("accounts lock")
        .user(user)
        .map(|a| a.balances.clone())
        .unwrap_or_default();
    let list: Vec<Value> = table
        .iter()
        .map(|(id, (symbol, d))| {
            let b = held.get(id).copied().unwrap_or_default();
            json!({
                "asset": symbol,
                "available": format_units(b.available, *d),
                "frozen": format_units(b.frozen, *d),
                // Sum of two u64 buckets of one user: at most the asset's
                // supply, which the engine keeps within u64.
                "total": format_units(b.available.saturating_add(b.frozen), *d),
            })
        })
        .collect();
    reply(StatusCode::OK, Value::Array(list))
}

/// Deterministic per (user, asset): stable across restarts (derived from
/// the server secret key).
async fn deposit_address(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "deposits:read")?;
    let Path(asset) =
        path.map_err(|_| NativeError::bad(codes::INVALID_PARAMETER, "Bad asset in the path."))?;
    let (spec_active, required) = {
        let m = st.market.read().expect("market lock");
        m.assets
            .values()
            .find(|a| a.spec.symbol == asset)
            .map(|a| (a.spec.active, a.spec.confirmations))
            .ok_or_else(|| rejected(engine::RejectReason::UnknownAsset))?
    };
    reply(
        StatusCode::OK,
        json!({
            "asset": asset,
            "address": st.auth.addresses.address(user, &asset),
            "required_confirmations": required,
            "active": spec_active,
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithdrawReq {
    asset: String,
    /// A decimal string (a JSON number is accepted too).
    amount: Value,
    address: String,
}

/// Freezes amount + the asset's fee (engine `RequestWithdrawal`); 201 with
/// the PENDING withdrawal.
async fn request_withdrawal(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "withdrawals:write")?;
    let r: WithdrawReq = parse(body)?;
    let table = asset_table(&st);
    let (asset, _, decimals) = asset_by_symbol(&table, &r.asset)?;
    let amount = amount_units(&r.amount, decimals)?;
    if !valid_token(&r.address, MAX_ADDRESS_LEN) {
        return Err(NativeError::bad(
            codes::INVALID_PARAMETER,
            "address must be 1 to 128 printable characters without blanks.",
        ));
    }
    let o = execute(
        &st,
        Command::RequestWithdrawal {
            user,
            asset,
            amount,
            address: r.address,
        },
    )
    .await?;
    check(&o)?;
    let w = o
        .events
        .iter()
        .find_map(|e| match e {
            Event::WithdrawalUpdated(w) => Some(w),
            _ => None,
        })
        .ok_or_else(|| NativeError::unavailable("Withdrawal result missing."))?;
    reply(StatusCode::CREATED, withdrawal_json(w, &table))
}

/// The caller's deposits and withdrawals, newest first. Parameters: `type`
/// (DEPOSIT | WITHDRAWAL), `asset`, `status`, `limit` (1..=1000, default
/// 100).
async fn history(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "deposits:read")?;
    require(roles, "withdrawals:read")?;
    let p = query(q.as_deref(), &["type", "asset", "status", "limit"])?;
    let kind = p.get("type");
    if kind.is_some_and(|k| k != "DEPOSIT" && k != "WITHDRAWAL") {
        return Err(NativeError::bad(
            codes::INVALID_PARAMETER,
            "type must be DEPOSIT or WITHDRAWAL.",
        ));
    }
    let status = p.get("status");
    if status.is_some_and(|s| !["PENDING", "CONFIRMED", "REJECTED"].contains(&s)) {
        return Err(NativeError::bad(
            codes::INVALID_PARAMETER,
            "status must be PENDING, CONFIRMED or REJECTED.",
        ));
    }
    let limit = u64_param(&p, "limit", 1..=MAX_LIST_LIMIT)?.unwrap_or(DEFAULT_LIST_LIMIT) as usize;
    let table = asset_table(&st);
    let asset = asset_filter(&p, &table)?;
    let acc = st.accounts.read().expect("accounts lock");
    let book = &acc.wallet;
    // (created, type order, id, json)
    let mut rows: Vec<(u64, u8, u64, Value)> = Vec::new();
    if let Some(w) = book.user(user) {
        if kind != Some("WITHDRAWAL") {
            for d in w.deposits.iter().filter_map(|id| book.deposits.get(id)) {
                if asset.is_none_or(|a| a == d.asset)
                    && status.is_none_or(|s| s == deposit_status(d.status))
                {
                    rows.push((d.created_ms, 0, d.id, deposit_json(d, &table)));
                }
            }
        }
        if kind != Some("DEPOSIT") {
            for x in w
                .withdrawals
                .iter()
                .filter_map(|id| book.withdrawals.get(id))
            {
                if asset.is_none_or(|a| a == x.asset)
                    && status.is_none_or(|s| s == withdrawal_status(x.status))
                {
                    rows.push((x.created_ms, 1, x.id, withdrawal_json(x, &table)));
                }
            }
        }
    }
    drop(acc);
    rows.sort_by_key(|r| std::cmp::Reverse((r.0, r.1, r.2)));
    rows.truncate(limit);
    reply(
        StatusCode::OK,
        Value::Array(rows.into_iter().map(|r| r.3).collect()),
    )
}

/// The caller's ledger, newest first: one row per balance bucket moved,
/// `balance_before + amount = balance_after`. Parameters: `asset`,
/// `limit` (1..=1000, default 100), `before_id` (rows older than that id,
/// for paging).
async fn ledger(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "accounts:read")?;
    ledger_page(&st, user, q.as_deref())
}

/// `user`'s ledger page for the query `q` (also the admin view's).
pub(crate) fn ledger_page(st: &AppState, user: UserId, q: Option<&str>) -> Res {
    let p = query(q, &["asset", "limit", "before_id"])?;
    let limit = u64_param(&p, "limit", 1..=MAX_LIST_LIMIT)?.unwrap_or(DEFAULT_LIST_LIMIT) as usize;
    let before = u64_param(&p, "before_id", 1..=u64::MAX)?.unwrap_or(u64::MAX);
    let table = asset_table(st);
    let asset = asset_filter(&p, &table)?;
    let acc = st.accounts.read().expect("accounts lock");
    let rows: Vec<Value> = acc
        .wallet
        .user(user)
        .map(|w| {
            w.ledger
                .iter()
                .rev()
                .filter(|r| r.id < before && asset.is_none_or(|a| a == r.asset))
                .take(limit)
                .map(|r| ledger_json(r, &table))
                .collect()
        })
        .unwrap_or_default();
    reply(StatusCode::OK, Value::Array(rows))
}
