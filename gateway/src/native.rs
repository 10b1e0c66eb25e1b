//! Native API under `/api/v1`: identity, API keys, wallet, KYC, notifications and
//! administration (API.md "Native API"). JSON in, JSON out; JWT bearer auth
//! unless noted; every admin route checks a `resource:action` permission
//! (`auth::has_permission`), never a role name.
//!
//! Everything that changes state is an engine command executed through the
//! pipeline (answered once durable); handlers then wait until the read
//! models have applied it, so a client reads its own writes.
//!
//! Errors are `{"code": <negative int>, "msg": "..."}` (plus `locked_until`
//! on 423). The codes are stable:
//!
//! | code | status | meaning |
//! |---|---|---|
//! | -4000 | 400 | malformed body: not JSON, a field missing or mistyped |
//! | -4001 | 400 | invalid username (3-32 of `A-Z a-z 0-9 _ . -`) |
//! | -4002 | 400 | invalid email |
//! | -4003 | 400 | password outside the policy (8..=128 characters) |
//! | -4004 | 400 | invalid parameter (label, permissions, type, public key, tx_hash, ...) |
//! | -4005 | 400 | invalid amount (not a positive decimal of the asset's precision, or too large) |
//! | -4006 | 400 | withdrawal below the asset's minimum |
//! | -4007 | 400 | withdrawal over the daily limit of the user's KYC level |
//! | -4008 | 400 | insufficient balance |
//! | -4009 | 400 | asset inactive (withdrawals suspended) |
//! | -4010 | 401 | missing or invalid bearer token |
//! | -4011 | 401 | wrong username or password |
//! | -4012 | 401 | token expired |
//! | -4020 | 400 | invalid notification webhook URL (scheme, host, port, length, credentials) |
//! | -4030 | 403 | permission denied |
//! | -4031 | 403 | account suspended |
//! | -4032 | 403 | KYC level too low (withdrawals need level 1 or more) |
//! | -4033 | 403 | a KYC record cannot be reviewed by its owner |
//! | -4038 | 403 | refused by a risk rule with action BLOCK (e.g. LARGE_WITHDRAWAL) |
//! | -4040 | 404 | unknown user |
//! | -4041 | 404 | unknown API key |
//! | -4042 | 404 | unknown asset |
//! | -4043 | 404 | unknown withdrawal |
//! | -4044 | 404 | unknown trading pair |
//! | -4045 | 404 | unknown KYC record |
//! | -4046 | 404 | unknown risk rule |
//! | -4047 | 404 | unknown notification (or another user's), or unknown notification template |
//! | -4048 | 404 | unknown settlement batch |
//! | -4049 | 404 | unknown risk event |
//! | -4090 | 409 | username taken |
//! | -4091 | 409 | email taken |
//! | -4092 | 409 | API key identifier exists |
//! | -4093 | 409 | too many API keys |
//! | -4094 | 409 | deposit conflicts with an earlier post of the same (asset, tx_hash) |
//! | -4095 | 409 | withdrawal no longer pending (already approved or rejected) |
//! | -4096 | 409 | asset or trading pair exists, or the UTC day is already settled |
//! | -4097 | 409 | refused to lock yourself or to remove the last active ADMIN |
//! | -4098 | 409 | a KYC record of the user is already pending review |
//! | -4099 | 409 | KYC record already reviewed (approved or rejected) |
//! | -40910 | 409 | a risk rule with this name exists (names are case-insensitive) |
//! | -40911 | 409 | risk event already resolved or dismissed, or already in that status |
//! | -4130 | 413 | request body too large |
//! | -4230 | 423 | password login locked until `locked_until` (ms) |
//! | -5030 | 503 | overloaded or shutting down, or (settlement reports) no persister database; retry later |

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use engine::decimal::{format_units, parse_units};
use engine::{
    api_key_perms, roles, valid_username, ApiKeyKind, Command, Deposit, DepositStatus, Event,
    RejectReason, UserId, UserStatus,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, has_permission, AuthError, TokenError};
use crate::binance::params::Params;
use crate::config::AuthConfig;
use crate::identity::UserView;
use crate::pipeline::Outcome;
use crate::server::{json_response, now_ms, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/me", get(me))
        .route("/api/v1/api-keys", post(create_api_key).get(list_api_keys))
        .route("/api/v1/api-keys/{api_key}", delete(delete_api_key))
        .route("/api/v1/admin/deposits", post(admin_deposit))
        .merge(crate::wallet::routes())
        .merge(crate::admin::routes())
        .merge(crate::kyc::routes())
        .merge(crate::notifications::routes())
        .merge(crate::risk::routes())
        .merge(crate::audit::routes())
        .merge(crate::settlement::routes())
}

// ---------------------------------------------------------------- errors

/// Stable native error codes (see the module doc).
pub mod codes {
    pub const BAD_REQUEST: i32 = -4000;
    pub const INVALID_USERNAME: i32 = -4001;
    pub const INVALID_EMAIL: i32 = -4002;
    pub const INVALID_PASSWORD: i32 = -4003;
    pub const INVALID_PARAMETER: i32 = -4004;
    pub const INVALID_AMOUNT: i32 = -4005;
    pub const BELOW_MIN_WITHDRAW: i32 = -4006;
    pub const DAILY_WITHDRAW_LIMIT: i32 = -4007;
    pub const INSUFFICIENT_BALANCE: i32 = -4008;
    pub const ASSET_INACTIVE: i32 = -4009;
    pub const UNAUTHORIZED: i32 = -4010;
    pub const BAD_CREDENTIALS: i32 = -4011;
    pub const TOKEN_EXPIRED: i32 = -4012;
    pub const INVALID_WEBHOOK_URL: i32 = -4020;
    pub const FORBIDDEN: i32 = -4030;
    pub const USER_SUSPENDED: i32 = -4031;
    pub const KYC_REQUIRED: i32 = -4032;
    pub const RISK_BLOCKED: i32 = -4038;
    pub const UNKNOWN_USER: i32 = -4040;
    pub const UNKNOWN_API_KEY: i32 = -4041;
    pub const UNKNOWN_ASSET: i32 = -4042;
    pub const UNKNOWN_WITHDRAWAL: i32 = -4043;
    pub const UNKNOWN_PAIR: i32 = -4044;
    pub const KYC_SELF_REVIEW: i32 = -4033;
    pub const UNKNOWN_KYC_RECORD: i32 = -4045;
    pub const UNKNOWN_NOTIFICATION: i32 = -4047;
    pub const UNKNOWN_RISK_RULE: i32 = -4046;
    pub const UNKNOWN_RISK_EVENT: i32 = -4049;
    pub const UNKNOWN_SETTLEMENT: i32 = -4048;
    pub const USERNAME_TAKEN: i32 = -4090;
    pub const EMAIL_TAKEN: i32 = -4091;
    pub const API_KEY_EXISTS: i32 = -4092;
    pub const TOO_MANY_API_KEYS: i32 = -4093;
    pub const DEPOSIT_CONFLICT: i32 = -4094;
    pub const WITHDRAWAL_NOT_PENDING: i32 = -4095;
    pub const ALREADY_EXISTS: i32 = -4096;
    pub const SELF_OR_LAST_ADMIN: i32 = -4097;
    pub const KYC_ALREADY_PENDING: i32 = -4098;
    pub const KYC_ALREADY_REVIEWED: i32 = -4099;
    pub const RISK_RULE_NAME_TAKEN: i32 = -40910;
    pub const RISK_EVENT_CLOSED: i32 = -40911;
    pub const PAYLOAD_TOO_LARGE: i32 = -4130;
    pub const ACCOUNT_LOCKED: i32 = -4230;
    pub const UNAVAILABLE: i32 = -5030;
}

#[derive(Debug)]
pub struct NativeError {
    status: StatusCode,
    code: i32,
    msg: String,
    locked_until_ms: Option<u64>,
}

impl NativeError {
    pub fn new(status: StatusCode, code: i32, msg: impl Into<String>) -> NativeError {
        NativeError {
            status,
            code,
            msg: msg.into(),
            locked_until_ms: None,
        }
    }
    pub(crate) fn bad(code: i32, msg: impl Into<String>) -> NativeError {
        NativeError::new(StatusCode::BAD_REQUEST, code, msg)
    }
    pub(crate) fn unauthorized(code: i32, msg: &str) -> NativeError {
        NativeError::new(StatusCode::UNAUTHORIZED, code, msg)
    }
    pub(crate) fn forbidden(msg: impl Into<String>) -> NativeError {
        NativeError::new(StatusCode::FORBIDDEN, codes::FORBIDDEN, msg)
    }
    fn suspended() -> NativeError {
        NativeError::new(
            StatusCode::FORBIDDEN,
            codes::USER_SUSPENDED,
            "Account suspended.",
        )
    }
    fn bad_credentials() -> NativeError {
        NativeError::unauthorized(codes::BAD_CREDENTIALS, "Invalid username or password.")
    }
    fn locked(until_ms: u64) -> NativeError {
        NativeError {
            locked_until_ms: Some(until_ms),
            ..NativeError::new(
                StatusCode::LOCKED,
                codes::ACCOUNT_LOCKED,
                "Too many failed logins: password login is locked until locked_until.",
            )
        }
    }
    pub(crate) fn unavailable(msg: impl Into<String>) -> NativeError {
        NativeError::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, msg)
    }
}

impl IntoResponse for NativeError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "msg": self.msg });
        if let Some(t) = self.locked_until_ms {
            body["locked_until"] = json!(t);
        }
        json_response(self.status, body.to_string())
    }
}

impl From<AuthError> for NativeError {
    fn from(e: AuthError) -> NativeError {
        match e {
            AuthError::Busy => {
                NativeError::unavailable("Too many password checks in progress; retry.")
            }
            // Never the password; the message is the library's.
            other => {
                tracing::error!(error = %other, "password hashing failed");
                NativeError::new(StatusCode::INTERNAL_SERVER_ERROR, -1000, "Internal error.")
            }
        }
    }
}

/// An engine rejection -> native error.
pub(crate) fn rejected(reason: RejectReason) -> NativeError {
    use RejectReason::*;
    let (status, code, msg) = match reason {
        UnknownUser => (StatusCode::NOT_FOUND, codes::UNKNOWN_USER, "Unknown user."),
        UserSuspended => (
            StatusCode::FORBIDDEN,
            codes::USER_SUSPENDED,
            "Account suspended.",
        ),
        UsernameTaken => (
            StatusCode::CONFLICT,
            codes::USERNAME_TAKEN,
            "Username is taken.",
        ),
        EmailTaken => (StatusCode::CONFLICT, codes::EMAIL_TAKEN, "Email is taken."),
        InvalidUsername => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_USERNAME,
            "Invalid username or email.",
        ),
        UnknownApiKey => (
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_API_KEY,
            "Unknown API key.",
        ),
        ApiKeyExists => (
            StatusCode::CONFLICT,
            codes::API_KEY_EXISTS,
            "API key exists.",
        ),
        TooManyApiKeys => (
            StatusCode::CONFLICT,
            codes::TOO_MANY_API_KEYS,
            "Too many API keys; revoke one first.",
        ),
        InvalidApiKey => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAMETER,
            "Invalid API key parameters.",
        ),
        UnknownAsset => (
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_ASSET,
            "Unknown asset.",
        ),
        UserLocked => (
            StatusCode::LOCKED,
            codes::ACCOUNT_LOCKED,
            "Password login is locked.",
        ),
        DepositUserMismatch | DepositAlreadyCredited | DepositConfirmationsDecreased => (
            StatusCode::CONFLICT,
            codes::DEPOSIT_CONFLICT,
            "A deposit with this asset and tx_hash exists with another user or amount.",
        ),
        InvalidAmount | Overflow => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_AMOUNT,
            "Invalid amount.",
        ),
        BelowMinWithdraw => (
            StatusCode::BAD_REQUEST,
            codes::BELOW_MIN_WITHDRAW,
            "Amount is below the asset's minimum withdrawal.",
        ),
        DailyWithdrawLimit => (
            StatusCode::BAD_REQUEST,
            codes::DAILY_WITHDRAW_LIMIT,
            "Daily withdrawal limit of your KYC level exceeded.",
        ),
        InsufficientBalance => (
            StatusCode::BAD_REQUEST,
            codes::INSUFFICIENT_BALANCE,
            "Insufficient balance for amount plus fee.",
        ),
        AssetInactive => (
            StatusCode::BAD_REQUEST,
            codes::ASSET_INACTIVE,
            "Asset is inactive: withdrawals are suspended.",
        ),
        KycRequired => (
            StatusCode::FORBIDDEN,
            codes::KYC_REQUIRED,
            "Withdrawals need KYC level 1 or more.",
        ),
        UnknownWithdrawal => (
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_WITHDRAWAL,
            "Unknown withdrawal.",
        ),
        WithdrawalNotPending => (
            StatusCode::CONFLICT,
            codes::WITHDRAWAL_NOT_PENDING,
            "Withdrawal is no longer pending.",
        ),
        UnknownPair => (
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_PAIR,
            "Unknown trading pair.",
        ),
        AssetExists => (StatusCode::CONFLICT, codes::ALREADY_EXISTS, "Asset exists."),
        PairExists => (
            StatusCode::CONFLICT,
            codes::ALREADY_EXISTS,
            "Trading pair exists.",
        ),
        InvalidKycLevel => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAMETER,
            "level must be 1, 2 or 3.",
        ),
        InvalidKycSubmission => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAMETER,
            "Invalid KYC document number or data.",
        ),
        InvalidKycReview => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAMETER,
            "notes must be at most 1024 bytes, and a rejection needs notes.",
        ),
        UnknownKycRecord => (
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_KYC_RECORD,
            "Unknown KYC record.",
        ),
        KycAlreadyPending => (
            StatusCode::CONFLICT,
            codes::KYC_ALREADY_PENDING,
            "A KYC record is already pending review.",
        ),
        KycNotPending => (
            StatusCode::CONFLICT,
            codes::KYC_ALREADY_REVIEWED,
            "KYC record already reviewed.",
        ),
        KycSelfReview => (
            StatusCode::FORBIDDEN,
            codes::KYC_SELF_REVIEW,
            "A KYC record cannot be reviewed by its owner.",
        ),
        InvalidNotificationRequest => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAMETER,
            "Invalid webhook URL or notification ids.",
        ),
        InvalidNotificationTemplate => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAMETER,
            "Invalid notification template (name, subject or content).",
        ),
        LastActiveAdmin => (
            StatusCode::CONFLICT,
            codes::SELF_OR_LAST_ADMIN,
            "The last active ADMIN keeps the ADMIN role.",
        ),
        InvalidRole => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAMETER,
            "role must be one of ADMIN, OPERATOR, SUPPORT, AUDITOR, TRADER.",
        ),
        UnknownRiskRule => (
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_RISK_RULE,
            "Unknown risk rule.",
        ),
        UnknownRiskEvent => (
            StatusCode::NOT_FOUND,
            codes::UNKNOWN_RISK_EVENT,
            "Unknown risk event.",
        ),
        InvalidRiskRule => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAMETER,
            "Invalid risk rule (name, description, type, action or parameters).",
        ),
        TooManyRiskRules => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAMETER,
            "Too many risk rules (at most 1000); delete one first.",
        ),
        RiskRuleNameTaken => (
            StatusCode::CONFLICT,
            codes::RISK_RULE_NAME_TAKEN,
            "A risk rule with this name exists.",
        ),
        RiskEventClosed => (
            StatusCode::CONFLICT,
            codes::RISK_EVENT_CLOSED,
            "The risk event is already resolved or dismissed.",
        ),
        InvalidRiskEventStatus => (
            StatusCode::CONFLICT,
            codes::RISK_EVENT_CLOSED,
            "The risk event already has this status.",
        ),
        RiskLargeWithdrawal => (
            StatusCode::FORBIDDEN,
            codes::RISK_BLOCKED,
            "Withdrawal refused by a risk rule (LARGE_WITHDRAWAL): the amount is at or above the threshold.",
        ),
        RiskOrderNotional => (
            StatusCode::FORBIDDEN,
            codes::RISK_BLOCKED,
            "Order refused by a risk rule (ORDER_NOTIONAL): its notional is above the maximum.",
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            codes::INVALID_PARAMETER,
            reason.name(),
        ),
    };
    NativeError::new(status, code, msg)
}

pub(crate) type Res = Result<Response, NativeError>;

pub(crate) fn reply(status: StatusCode, v: Value) -> Res {
    Ok(json_response(status, v.to_string()))
}

// --------------------------------------------------------------- plumbing

/// Decode a JSON body; any failure is a 400/413 JSON error, never a 500.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, NativeError> {
    let body = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            NativeError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::PAYLOAD_TOO_LARGE,
                "Request body too large.",
            )
        } else {
            NativeError::bad(codes::BAD_REQUEST, "Cannot read the request body.")
        }
    })?;
    if body.is_empty() {
        return Err(NativeError::bad(
            codes::BAD_REQUEST,
            "A JSON body is required.",
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        // serde's message names the field; the input itself is not echoed
        // beyond what the client sent.
        NativeError::bad(codes::BAD_REQUEST, format!("Malformed JSON body: {e}"))
    })
}

/// Run a command once durable. The ring being full or the journal failing
/// is 503.
pub(crate) async fn execute(st: &AppState, cmd: Command) -> Result<Arc<Outcome>, NativeError> {
    st.submitter
        .execute(cmd)
        .await
        .map_err(|e| NativeError::unavailable(format!("{e}; retry later.")))
}

/// The first rejection of an outcome as an error.
pub(crate) fn check(o: &Outcome) -> Result<(), NativeError> {
    match o.events.first() {
        Some(Event::Rejected { reason }) => Err(rejected(*reason)),
        _ => Ok(()),
    }
}

fn now_s() -> u64 {
    now_ms() / 1_000
}

/// The caller of a bearer-authenticated request: (user id, roles).
pub(crate) fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<(UserId, u32), NativeError> {
    let missing =
        || NativeError::unauthorized(codes::UNAUTHORIZED, "Missing or invalid bearer token.");
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing());
    }
    let claims = st
        .auth
        .jwt
        .verify(token.trim(), now_s())
        .map_err(|e| match e {
            TokenError::Expired => {
                NativeError::unauthorized(codes::TOKEN_EXPIRED, "Token expired.")
            }
            _ => missing(),
        })?;
    let ident = st.identity.read().expect("identity lock");
    let u = ident.user(claims.user).ok_or_else(missing)?;
    if u.status != UserStatus::Active {
        return Err(NativeError::suspended());
    }
    Ok((u.id, u.roles))
}

/// Query parameters of a native GET: bad encodings, duplicates and names
/// outside `allowed` are 400.
pub(crate) fn query(raw: Option<&str>, allowed: &[&str]) -> Result<Params, NativeError> {
    let p = Params::parse(raw.unwrap_or(""), b"")
        .map_err(|e| NativeError::bad(codes::INVALID_PARAMETER, e.msg))?;
    if let Some((name, _)) = p.iter().find(|(n, _)| !allowed.contains(n)) {
        return Err(NativeError::bad(
            codes::INVALID_PARAMETER,
            format!(
                "Unknown parameter '{name}'; this endpoint reads: {}.",
                allowed.join(", ")
            ),
        ));
    }
    Ok(p)
}

/// An optional unsigned integer parameter within `range`.
pub(crate) fn u64_param(
    p: &Params,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, NativeError> {
    let bad = || {
        NativeError::bad(
            codes::INVALID_PARAMETER,
            format!(
                "{name} must be an integer from {} to {}.",
                range.start(),
                range.end()
            ),
        )
    };
    match p.optional_u64(name).map_err(|_| bad())? {
        Some(v) if !range.contains(&v) => Err(bad()),
        v => Ok(v),
    }
}

pub(crate) fn require(roles: u32, permission: &str) -> Result<(), NativeError> {
    if has_permission(roles, permission) {
        Ok(())
    } else {
        Err(NativeError::forbidden(format!(
            "Permission {permission} required."
        )))
    }
}

pub(crate) fn status_name(s: UserStatus) -> &'static str {
    match s {
        UserStatus::Active => "ACTIVE",
        UserStatus::Suspended => "SUSPENDED",
    }
}

pub(crate) fn user_json(u: &UserView) -> Value {
    json!({
        "id": u.id.0,
        "username": u.username,
        "email": u.email,
        "status": status_name(u.status),
        "roles": auth::role_names(u.roles),
        "permissions": auth::permissions_of(u.roles),
        "kyc_level": u.kyc_level,
        "locked_until": if u.locked_at(now_ms()) { json!(u.locked_until_ms) } else { Value::Null },
    })
}

fn token_json(st: &AppState, user: UserId) -> Value {
    json!({
        "access_token": st.auth.jwt.issue(user, now_s()),
        "token_type": "Bearer",
        "expires_in": st.auth.jwt.ttl_secs,
    })
}

/// Plausible email: one `@`, non-empty local part and dotted domain,
/// printable ASCII without spaces, at most 254 bytes.
pub fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && domain.len() >= 3
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && s.bytes().all(|c| c.is_ascii_graphic())
}

// ------------------------------------------------------------------- auth

#[derive(Deserialize)]
struct RegisterReq {
    username: String,
    email: String,
    password: String,
}

async fn register(State(st): State<AppState>, body: Result<Bytes, BytesRejection>) -> Res {
    let r: RegisterReq = parse(body)?;
    if !valid_username(&r.username) {
        return Err(NativeError::bad(
            codes::INVALID_USERNAME,
            "Username must be 3 to 32 characters of A-Z a-z 0-9 _ . -",
        ));
    }
    if !valid_email(&r.email) {
        return Err(NativeError::bad(
            codes::INVALID_EMAIL,
            "Invalid email address.",
        ));
    }
    auth::check_password_policy(&r.password)
        .map_err(|m| NativeError::bad(codes::INVALID_PASSWORD, m))?;
    {
        // Cheap early answers; the engine decides for real.
        let ident = st.identity.read().expect("identity lock");
        if ident.user_by_name(&r.username).is_some() {
            return Err(rejected(RejectReason::UsernameTaken));
        }
        if ident.user_by_email(&r.email).is_some() {
            return Err(rejected(RejectReason::EmailTaken));
        }
    }
    let password_hash = st.auth.passwords.hash(r.password).await?;
    let o = execute(
        &st,
        Command::CreateUser {
            username: r.username.clone(),
            email: r.email,
            password_hash,
            roles: roles::TRADER,
        },
    )
    .await?;
    check(&o)?;
    let ident = st.identity.read().expect("identity lock");
    let u = ident
        .user_by_name(&r.username)
        .ok_or_else(|| NativeError::unavailable("Registered; the read model is lagging."))?;
    reply(StatusCode::CREATED, user_json(u))
}

#[derive(Deserialize)]
struct LoginReq {
    username: String,
    password: String,
}

/// Every attempt on an existing user is journaled (`RecordLogin`), also
/// during a lockout (then rejected by the engine and answered 423 whatever
/// the password).
async fn login(State(st): State<AppState>, body: Result<Bytes, BytesRejection>) -> Res {
    let r: LoginReq = parse(body)?;
    let user = {
        let ident = st.identity.read().expect("identity lock");
        ident
            .user_by_name(&r.username)
            .map(|u| (u.id, u.password_hash.clone()))
    };
    // A password outside the policy can never match: no hashing for it.
    let plausible = auth::check_password_policy(&r.password).is_ok();
    let Some((id, hash)) = user else {
        if plausible {
            st.auth.passwords.verify(r.password, None).await?;
        }
        return Err(NativeError::bad_credentials());
    };
    let ok = plausible && st.auth.passwords.verify(r.password, Some(hash)).await?;
    let o = execute(
        &st,
        Command::RecordLogin {
            user: id,
            success: ok,
        },
    )
    .await?;
    match o.events.first() {
        Some(Event::LoginRecorded { success: true, .. }) => {
            let status = st
                .identity
                .read()
                .expect("identity lock")
                .user(id)
                .map(|u| u.status);
            if status != Some(UserStatus::Active) {
                return Err(NativeError::suspended());
            }
            reply(StatusCode::OK, token_json(&st, id))
        }
        Some(Event::LoginRecorded {
            locked_until_ms, ..
        }) if *locked_until_ms > 0 => Err(NativeError::locked(*locked_until_ms)),
        Some(Event::Rejected {
            reason: RejectReason::UserLocked,
        }) => {
            let until = st
                .identity
                .read()
                .expect("identity lock")
                .user(id)
                .map_or(0, |u| u.locked_until_ms);
            Err(NativeError::locked(until))
        }
        Some(Event::Rejected { reason }) => Err(rejected(*reason)),
        _ => Err(NativeError::bad_credentials()),
    }
}

async fn refresh(State(st): State<AppState>, headers: HeaderMap) -> Res {
    let (user, _) = authenticate(&st, &headers)?;
    reply(StatusCode::OK, token_json(&st, user))
}

async fn me(State(st): State<AppState>, headers: HeaderMap) -> Res {
    let (user, _) = authenticate(&st, &headers)?;
    let ident = st.identity.read().expect("identity lock");
    let u = ident
        .user(user)
        .ok_or_else(|| NativeError::unauthorized(codes::UNAUTHORIZED, "Unknown user."))?;
    reply(StatusCode::OK, user_json(u))
}

// --------------------------------------------------------------- API keys

#[derive(Deserialize)]
struct NewApiKeyReq {
    #[serde(default)]
    label: String,
    permissions: Option<Vec<String>>,
    #[serde(rename = "type")]
    kind: Option<String>,
    public_key: Option<String>,
}

fn perm_names(bits: u8) -> Vec<&'static str> {
    api_key_perms::NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// The RBAC permission a user needs to hold an API key permission.
fn rbac_for_key_perm(bit: u8) -> &'static str {
    match bit {
        api_key_perms::TRADE => "orders:write",
        api_key_perms::WITHDRAW => "withdrawals:write",
        _ => "accounts:read",
    }
}

async fn create_api_key(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "api_keys:write")?;
    let r: NewApiKeyReq = parse(body)?;
    if r.label.len() > engine::API_KEY_LABEL_MAX_LEN || r.label.chars().any(char::is_control) {
        return Err(NativeError::bad(
            codes::INVALID_PARAMETER,
            "label must be at most 64 bytes without control characters.",
        ));
    }
    let names = r.permissions.unwrap_or_else(|| vec!["READ".into()]);
    if names.is_empty() {
        return Err(NativeError::bad(
            codes::INVALID_PARAMETER,
            "permissions must not be empty.",
        ));
    }
    let mut permissions = 0u8;
    for n in &names {
        let bit = api_key_perms::NAMES
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(n))
            .map(|(b, _)| *b)
            .ok_or_else(|| {
                NativeError::bad(
                    codes::INVALID_PARAMETER,
                    "permissions must be a list of READ, TRADE, WITHDRAW.",
                )
            })?;
        require(roles, rbac_for_key_perm(bit))?;
        permissions |= bit;
    }
    let kind = match r.kind.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("HMAC") => ApiKeyKind::Hmac,
        Some("ED25519") => ApiKeyKind::Ed25519,
        Some(_) => {
            return Err(NativeError::bad(
                codes::INVALID_PARAMETER,
                "type must be HMAC or ED25519.",
            ))
        }
    };
    let api_key = auth::random_alnum(64);
    let (secret, shown) = match (kind, r.public_key) {
        (ApiKeyKind::Hmac, None) => {
            let secret = auth::random_alnum(64);
            let sealed = st
                .auth
                .cipher
                .encrypt(secret.as_bytes(), api_key.as_bytes());
            (sealed, Some(secret))
        }
        (ApiKeyKind::Hmac, Some(_)) => {
            return Err(NativeError::bad(
                codes::INVALID_PARAMETER,
                "public_key is only for ED25519 keys.",
            ))
        }
        (ApiKeyKind::Ed25519, None) => {
            return Err(NativeError::bad(
                codes::INVALID_PARAMETER,
                "public_key is required for ED25519 keys.",
            ))
        }
        (ApiKeyKind::Ed25519, Some(pem)) => {
            let key = crate::binance::sign::parse_ed25519_public_key(&pem)
                .map_err(|e| NativeError::bad(codes::INVALID_PARAMETER, e.to_string()))?;
            (key.to_bytes().to_vec(), None)
        }
    };
    let o = execute(
        &st,
        Command::CreateApiKey {
            user,
            api_key: api_key.clone(),
            label: r.label.clone(),
            permissions,
            kind,
            secret,
        },
    )
    .await?;
    check(&o)?;
    let (id, created_ms) = o
        .events
        .iter()
        .find_map(|e| match e {
            Event::ApiKeyCreated { id, created_ms, .. } => Some((*id, *created_ms)),
            _ => None,
        })
        .unwrap_or((0, o.ts_ms));
    let mut v = json!({
        "id": id,
        "apiKey": api_key,
        "label": r.label,
        "permissions": perm_names(permissions),
        "type": kind.name(),
        "created_at": created_ms,
    });
    if let Some(secret) = shown {
        // Shown once, here; only its ciphertext is stored.
        v["secretKey"] = json!(secret);
    }
    reply(StatusCode::CREATED, v)
}

async fn list_api_keys(State(st): State<AppState>, headers: HeaderMap) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "api_keys:read")?;
    let ident = st.identity.read().expect("identity lock");
    let keys: Vec<Value> = ident
        .api_keys_of(user)
        .into_iter()
        .map(|k| {
            json!({
                "id": k.id,
                "apiKey": k.api_key,
                "label": k.label,
                "permissions": perm_names(k.permissions),
                "type": k.kind.name(),
                "created_at": k.created_ms,
            })
        })
        .collect();
    reply(StatusCode::OK, Value::Array(keys))
}

/// `{apiKey}` is the key identifier, or its numeric id.
async fn delete_api_key(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    let (user, roles) = authenticate(&st, &headers)?;
    require(roles, "api_keys:write")?;
    let Path(which) =
        path.map_err(|_| NativeError::bad(codes::INVALID_PARAMETER, "Bad API key in the path."))?;
    let api_key = {
        let ident = st.identity.read().expect("identity lock");
        ident
            .api_keys_of(user)
            .into_iter()
            .find(|k| k.api_key == which || k.id.to_string() == which)
            .map(|k| k.api_key.clone())
    }
    // Someone else's key is as unknown as a missing one.
    .ok_or_else(|| rejected(RejectReason::UnknownApiKey))?;
    let o = execute(
        &st,
        Command::RevokeApiKey {
            user,
            api_key: api_key.clone(),
        },
    )
    .await?;
    check(&o)?;
    let id = o.events.iter().find_map(|e| match e {
        Event::ApiKeyRevoked { id, .. } => Some(*id),
        _ => None,
    });
    reply(
        StatusCode::OK,
        json!({ "id": id, "apiKey": api_key, "revoked": true }),
    )
}

// ------------------------------------------------------------------ admin

#[derive(Deserialize)]
struct DepositReq {
    username: String,
    asset: String,
    /// A decimal string (a JSON number is accepted too).
    amount: Value,
    tx_hash: String,
    confirmations: u32,
}

fn deposit_status(s: DepositStatus) -> &'static str {
    match s {
        DepositStatus::Pending => "PENDING",
        DepositStatus::Credited => "CONFIRMED",
    }
}

/// API.md "Funding without a blockchain": idempotent by (asset, tx_hash),
/// credited once when the confirmations reach the asset's requirement; 201
/// with the deposit's status either way.
async fn admin_deposit(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, roles) = authenticate(&st, &headers)?;
    require(roles, "deposits:write")?;
    let r: DepositReq = parse(body)?;
    let user = st
        .identity
        .read()
        .expect("identity lock")
        .user_by_name(&r.username)
        .map(|u| u.id)
        .ok_or_else(|| rejected(RejectReason::UnknownUser))?;
    let (asset, decimals, symbol) = {
        let m = st.market.read().expect("market lock");
        m.assets
            .values()
            .find(|a| a.spec.symbol == r.asset)
            .map(|a| (a.id, a.spec.decimals as u32, a.spec.symbol.clone()))
            .ok_or_else(|| rejected(RejectReason::UnknownAsset))?
    };
    let amount_text = match &r.amount {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(NativeError::bad(
                codes::INVALID_AMOUNT,
                "amount must be a decimal string.",
            ))
        }
    };
    let amount = parse_units(&amount_text, decimals)
        .ok()
        .filter(|a| *a > 0)
        .ok_or_else(|| {
            NativeError::bad(
                codes::INVALID_AMOUNT,
                format!("amount must be a positive decimal with at most {decimals} decimals."),
            )
        })?;
    if r.tx_hash.is_empty()
        || r.tx_hash.len() > 128
        || !r.tx_hash.bytes().all(|c| c.is_ascii_graphic())
    {
        return Err(NativeError::bad(
            codes::INVALID_PARAMETER,
            "tx_hash must be 1 to 128 printable characters.",
        ));
    }
    let o = execute(
        &st,
        Command::Deposit {
            user,
            asset,
            amount,
            tx_hash: r.tx_hash,
            confirmations: r.confirmations,
            by: Some(caller),
        },
    )
    .await?;
    check(&o)?;
    let credited_now = o.events.iter().any(|e| matches!(e, Event::Balance(_)));
    let d: &Deposit = o
        .events
        .iter()
        .find_map(|e| match e {
            Event::DepositUpdated(d) => Some(d),
            _ => None,
        })
        .ok_or_else(|| NativeError::unavailable("Deposit result missing."))?;
    reply(
        StatusCode::CREATED,
        json!({
            "id": d.id,
            "username": r.username,
            "asset": symbol,
            "amount": format_units(d.amount, decimals),
            "tx_hash": d.tx_hash,
            "confirmations": d.confirmations,
            "required_confirmations": d.required,
            "status": deposit_status(d.status),
            "credited_now": credited_now,
            "created_at": d.created_ms,
            "updated_at": d.updated_ms,
        }),
    )
}

// -------------------------------------------------------------- bootstrap

/// First start: when no user holds ADMIN, create one: `MX_ADMIN_USERNAME` /
/// `MX_ADMIN_PASSWORD` if configured, else `admin` with a generated password
/// printed once to stderr (never logged).
pub async fn bootstrap_admin(st: &AppState, cfg: &AuthConfig) -> anyhow::Result<()> {
    if st
        .identity
        .read()
        .expect("identity lock")
        .any_user_with_role(roles::ADMIN)
    {
        return Ok(());
    }
    let (username, password, generated) = match (&cfg.admin_username, &cfg.admin_password) {
        (Some(u), Some(p)) => (u.clone(), p.expose().to_string(), false),
        _ => ("admin".to_string(), auth::random_alnum(20), true),
    };
    if !valid_username(&username) {
        anyhow::bail!("MX_ADMIN_USERNAME must be 3 to 32 characters of A-Z a-z 0-9 _ . -");
    }
    if let Err(why) = auth::check_password_policy(&password) {
        anyhow::bail!("MX_ADMIN_PASSWORD is refused: {why}");
    }
    let password_hash = st
        .auth
        .passwords
        .hash(password.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot hash the admin password: {e}"))?;
    let o = st
        .submitter
        .execute(Command::CreateUser {
            username: username.clone(),
            email: String::new(),
            password_hash,
            roles: roles::ADMIN,
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the first admin: {e}"))?;
    if let Some(Event::Rejected { reason }) = o.events.first() {
        anyhow::bail!(
            "cannot create the first admin {username:?}: {} (a user of that name exists without the ADMIN role; set MX_ADMIN_USERNAME to another name)",
            reason.name()
        );
    }
    tracing::info!(username = %username, "created the first ADMIN user");
    if generated {
        eprintln!(
            "\n*** mini-exchange: created the first ADMIN user {username:?} with the one-time password: {password}\n*** It is shown only now; set MX_ADMIN_USERNAME and MX_ADMIN_PASSWORD to choose them instead.\n"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@example.com"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@", "@b.co", "a@b", "a b@c.de", "a@b@c.de", "a@.b.c", "a@b.c.",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
        assert!(!valid_email(&format!("{}@b.co", "a".repeat(65))));
    }

    #[test]
    fn errors_are_json_with_stable_codes() {
        let r = NativeError::locked(123).into_response();
        assert_eq!(r.status(), StatusCode::LOCKED);
        assert_eq!(
            rejected(RejectReason::TooManyApiKeys).code,
            codes::TOO_MANY_API_KEYS
        );
        assert_eq!(
            rejected(RejectReason::UserLocked).status,
            StatusCode::LOCKED
        );
        assert_eq!(
            rejected(RejectReason::UnknownApiKey).status,
            StatusCode::NOT_FOUND
        );
        for (reason, status, code) in [
            (
                RejectReason::UnknownKycRecord,
                StatusCode::NOT_FOUND,
                codes::UNKNOWN_KYC_RECORD,
            ),
            (
                RejectReason::KycAlreadyPending,
                StatusCode::CONFLICT,
                codes::KYC_ALREADY_PENDING,
            ),
            (
                RejectReason::KycNotPending,
                StatusCode::CONFLICT,
                codes::KYC_ALREADY_REVIEWED,
            ),
            (
                RejectReason::KycSelfReview,
                StatusCode::FORBIDDEN,
                codes::KYC_SELF_REVIEW,
            ),
            (
                RejectReason::InvalidKycLevel,
                StatusCode::BAD_REQUEST,
                codes::INVALID_PARAMETER,
            ),
        ] {
            let e = rejected(reason);
            assert_eq!((e.status, e.code), (status, code), "{reason:?}");
        }
        for (r, status, code) in [
            (RejectReason::UnknownRiskRule, 404, codes::UNKNOWN_RISK_RULE),
            (
                RejectReason::UnknownRiskEvent,
                404,
                codes::UNKNOWN_RISK_EVENT,
            ),
            (
                RejectReason::RiskRuleNameTaken,
                409,
                codes::RISK_RULE_NAME_TAKEN,
            ),
            (RejectReason::RiskEventClosed, 409, codes::RISK_EVENT_CLOSED),
            (RejectReason::RiskLargeWithdrawal, 403, codes::RISK_BLOCKED),
            (
                RejectReason::LastActiveAdmin,
                409,
                codes::SELF_OR_LAST_ADMIN,
            ),
        ] {
            let e = rejected(r);
            assert_eq!((e.status.as_u16(), e.code), (status, code), "{r:?}");
        }
    }
}
