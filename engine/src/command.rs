//! Commands: the only way engine state changes. Each is journaled before it
//! is applied, so every field is plain data (no pointers, no clocks) and the
//! serde encoding is the journal payload format (bincode, versioned by
//! `COMMAND_FORMAT_VERSION`).

use crate::model::{ApiKeyKind, AssetSpec, KycDocumentType, Limits, PairSpec};
use crate::risk::{RiskAction, RiskEventStatus, RiskLevel, RiskRuleChanges, RiskRuleType};
use crate::types::*;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of [`Command`]'s encoding. Older
/// versions stay decodable (see [`Command::decode`]).
///
/// * 1: the original set.
/// * 2: `Limits` gained `max_failed_logins` and `lockout_ms` (changes the
///   encoding of `SetLimits`); identity commands appended at the end.
/// * 3: KYC commands (`SubmitKyc`, `ReviewKyc`) appended. Every version 2
///   record is encoded as in version 3; the bump makes an older binary
///   refuse a journal with KYC records by version, not mid-decode.
/// * 4: notification commands (`SetNotificationWebhook`,
///   `MarkNotificationsRead`) appended; versions 2 and 3 encode as 4.
/// * 5: risk commands (`CreateRiskRule`, `UpdateRiskRule`,
///   `DeleteRiskRule`, `SetRiskEventStatus`) and `GrantRole` / `RevokeRole`
///   appended; versions 2 to 4 encode as 5.
/// * 6: `RunSettlement` appended; versions 2 to 5 encode as 6.
/// * 7: `GrantRole` / `RevokeRole` gained `by` (the acting admin, for the
///   audit log; `None` when decoded from versions 5 and 6, which lack it);
///   `SetNotificationTemplate` appended. Every other version 2 to 6 record
///   encodes as 7.
/// * 8: the admin commands (`AddAsset` to `SetLimits`, `SetUserStatus`,
///   `SetUserRoles`, `SetKycLevel`, `Deposit`, `CompleteWithdrawal`,
///   `RejectWithdrawal`, `Adjust`) gained `by` (the acting admin, for the
///   audit log), and `SetUserStatus` `cancel_orders` (suspending cancels
///   the user's open orders). Records of versions 1 to 7 decode with
///   `by: None` and `cancel_orders: false` (see `CommandV7Head`); every
///   other version 2 to 7 record encodes as 8.
pub const COMMAND_FORMAT_VERSION: u16 = 8;

/// Longest notification webhook URL, in bytes.
pub const NOTIFY_WEBHOOK_MAX_LEN: usize = 512;
/// Most notification ids one `MarkNotificationsRead` may carry.
pub const NOTIFY_MAX_READ_IDS: usize = 100;

/// The engine's own (cheap) check of a webhook URL: empty (removal), or
/// `http://` / `https://` followed by visible ASCII, at most
/// `NOTIFY_WEBHOOK_MAX_LEN` bytes. The gateway's check is stricter (host,
/// port, no credentials).
pub fn valid_webhook_shape(url: &str) -> bool {
    if url.is_empty() {
        return true;
    }
    let lower = url
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    url.len() <= NOTIFY_WEBHOOK_MAX_LEN
        && (lower.starts_with("http://") || lower.starts_with("https://"))
        && url.bytes().all(|b| b.is_ascii_graphic())
}

/// Variant index of `SetLimits` in the bincode encoding (every version).
const SET_LIMITS_TAG: u32 = 6;
/// The first variant index after `CommandV7Head` (`PlaceOrder`): records of
/// versions 1 to 7 with a lower tag decode through that copy.
const V7_HEAD_END_TAG: u32 = 16;
/// Variant indexes of `GrantRole` and `RevokeRole` (versions 5 on).
const GRANT_ROLE_TAG: u32 = 32;
const REVOKE_ROLE_TAG: u32 = 33;

/// `GrantRole` / `RevokeRole` as versions 5 and 6 encoded them (no actor).
#[derive(Deserialize)]
struct RoleChangeV6 {
    user: UserId,
    role: u32,
}

/// The first 16 variants of `Command` (tags 0 to 15: configuration,
/// identity and wallet) as versions 1 to 7 encoded them: the admin commands
/// without `by`, `SetUserStatus` without `cancel_orders`. Variant order is
/// the encoding; this copy must never change. (Version 1 encoded `SetLimits`
/// differently again: `LimitsV1`.)
#[derive(Deserialize)]
enum CommandV7Head {
    AddAsset(AssetSpec),
    UpdateAsset {
        asset: AssetId,
        spec: AssetSpec,
    },
    AddPair(PairSpec),
    UpdatePair {
        pair: PairId,
        spec: PairSpec,
    },
    SetPairStatus {
        pair: PairId,
        status: PairStatus,
    },
    SetFeeAccount {
        user: UserId,
    },
    SetLimits(Limits),
    CreateUser {
        username: String,
        email: String,
        password_hash: String,
        roles: u32,
    },
    SetUserStatus {
        user: UserId,
        status: UserStatus,
    },
    SetUserRoles {
        user: UserId,
        roles: u32,
    },
    SetKycLevel {
        user: UserId,
        level: u8,
    },
    Deposit {
        user: UserId,
        asset: AssetId,
        amount: u64,
        tx_hash: String,
        confirmations: u32,
    },
    RequestWithdrawal {
        user: UserId,
        asset: AssetId,
        amount: u64,
        address: String,
    },
    CompleteWithdrawal {
        withdrawal: u64,
        tx_hash: String,
    },
    RejectWithdrawal {
        withdrawal: u64,
    },
    Adjust {
        user: UserId,
        asset: AssetId,
        amount: u64,
        credit: bool,
        reason: String,
    },
}

impl From<CommandV7Head> for Command {
    /// The same meaning in format 8: nobody named as the actor, and a
    /// suspension that leaves orders alone (as these records did when
    /// first applied, so replay reproduces their state).
    fn from(c: CommandV7Head) -> Command {
        use CommandV7Head as V7;
        let by = None;
        match c {
            V7::AddAsset(spec) => Command::AddAsset { spec, by },
            V7::UpdateAsset { asset, spec } => Command::UpdateAsset { asset, spec, by },
            V7::AddPair(spec) => Command::AddPair {
                spec: Box::new(spec),
                by,
            },
            V7::UpdatePair { pair, spec } => Command::UpdatePair {
                pair,
                spec: Box::new(spec),
                by,
            },
            V7::SetPairStatus { pair, status } => Command::SetPairStatus { pair, status, by },
            V7::SetFeeAccount { user } => Command::SetFeeAccount { user, by },
            V7::SetLimits(limits) => Command::SetLimits { limits, by },
            V7::CreateUser {
                username,
                email,
                password_hash,
                roles,
            } => Command::CreateUser {
                username,
                email,
                password_hash,
                roles,
            },
            V7::SetUserStatus { user, status } => Command::SetUserStatus {
                user,
                status,
                cancel_orders: false,
                by,
            },
            V7::SetUserRoles { user, roles } => Command::SetUserRoles { user, roles, by },
            V7::SetKycLevel { user, level } => Command::SetKycLevel { user, level, by },
            V7::Deposit {
                user,
                asset,
                amount,
                tx_hash,
                confirmations,
            } => Command::Deposit {
                user,
                asset,
                amount,
                tx_hash,
                confirmations,
                by,
            },
            V7::RequestWithdrawal {
                user,
                asset,
                amount,
                address,
            } => Command::RequestWithdrawal {
                user,
                asset,
                amount,
                address,
            },
            V7::CompleteWithdrawal {
                withdrawal,
                tx_hash,
            } => Command::CompleteWithdrawal {
                withdrawal,
                tx_hash,
                by,
            },
            V7::RejectWithdrawal { withdrawal } => Command::RejectWithdrawal { withdrawal, by },
            V7::Adjust {
                user,
                asset,
                amount,
                credit,
                reason,
            } => Command::Adjust {
                user,
                asset,
                amount,
                credit,
                reason,
                by,
            },
        }
    }
}

/// `Limits` as version 1 encoded it.
#[derive(Deserialize)]
struct LimitsV1 {
    max_open_orders_per_user: u32,
    max_open_orders_total: u32,
    max_api_keys_per_user: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderRef {
    Id(OrderId),
    Client(ClientOrderId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub user: UserId,
    pub pair: PairId,
    pub side: Side,
    pub kind: OrderType,
    pub tif: TimeInForce,
    /// Limit price in ticks (0 when the type has none).
    pub price: Price,
    /// Quantity in base units (0 for market-by-quote).
    pub qty: Qty,
    /// quoteOrderQty in quote units (MARKET only; 0 = by quantity).
    pub quote_qty: u64,
    pub stop_price: Price,
    pub client_id: ClientOrderId,
    pub stp: StpMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelReplaceMode {
    /// Cancel failure aborts the whole command.
    StopOnFailure,
    /// Place the new order even when the cancel fails.
    AllowFailure,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    // Every admin command below names its acting admin in `by`, for the
    // audit log only (the gateway checked the permission; the engine does
    // not look at it). `by` is `None` in the commands the server issues
    // itself (the bootstrap from config at first start) and in every record
    // journaled before format 8.

    // configuration
    AddAsset {
        spec: AssetSpec,
        by: Option<UserId>,
    },
    /// Symbol and decimals cannot change.
    UpdateAsset {
        asset: AssetId,
        spec: AssetSpec,
        by: Option<UserId>,
    },
    /// The spec is boxed to keep `Command` small (see the size assertion
    /// below); bincode encodes a box as its content.
    AddPair {
        spec: Box<PairSpec>,
        by: Option<UserId>,
    },
    /// Base, quote, tick and step cannot change.
    UpdatePair {
        pair: PairId,
        spec: Box<PairSpec>,
        by: Option<UserId>,
    },
    SetPairStatus {
        pair: PairId,
        status: PairStatus,
        by: Option<UserId>,
    },
    SetFeeAccount {
        user: UserId,
        by: Option<UserId>,
    },
    SetLimits {
        limits: Limits,
        by: Option<UserId>,
    },

    // identity
    CreateUser {
        username: String,
        email: String,
        password_hash: String,
        roles: u32,
    },
    /// With `cancel_orders` (every command from format 8 on), suspending
    /// also cancels every open order of the user, resting or waiting stop,
    /// on every pair, in ascending order id, as `CancelOrder` would. Records
    /// of format 7 and before decode with `false`: they suspended without
    /// canceling, and replay must do the same. Unlocking (`Active`) never
    /// touches orders.
    SetUserStatus {
        user: UserId,
        status: UserStatus,
        cancel_orders: bool,
        by: Option<UserId>,
    },
    SetUserRoles {
        user: UserId,
        roles: u32,
        by: Option<UserId>,
    },
    SetKycLevel {
        user: UserId,
        level: u8,
        by: Option<UserId>,
    },

    // wallet
    /// Idempotent by (asset, tx_hash); credited once confirmations reach the
    /// asset's requirement.
    Deposit {
        user: UserId,
        asset: AssetId,
        amount: u64,
        tx_hash: String,
        confirmations: u32,
        by: Option<UserId>,
    },
    /// Freezes amount + the asset's withdraw fee.
    RequestWithdrawal {
        user: UserId,
        asset: AssetId,
        amount: u64,
        address: String,
    },
    /// Sent on chain: the frozen amount leaves, the fee goes to the fee account.
    CompleteWithdrawal {
        withdrawal: u64,
        tx_hash: String,
        by: Option<UserId>,
    },
    /// Refused: everything frozen is released.
    RejectWithdrawal {
        withdrawal: u64,
        by: Option<UserId>,
    },
    /// Admin correction, audited by its reason.
    Adjust {
        user: UserId,
        asset: AssetId,
        amount: u64,
        credit: bool,
        reason: String,
        by: Option<UserId>,
    },

    // trading
    PlaceOrder(NewOrder),
    CancelOrder {
        user: UserId,
        pair: PairId,
        target: OrderRef,
    },
    CancelAll {
        user: UserId,
        pair: PairId,
    },
    CancelReplace {
        target: OrderRef,
        mode: CancelReplaceMode,
        new: NewOrder,
    },
    /// Reduce the quantity of an open order, keeping its queue priority.
    AmendQty {
        user: UserId,
        pair: PairId,
        target: OrderRef,
        new_qty: Qty,
    },

    // identity (appended: variant indexes above are part of the journal format)
    /// Register an API key. The gateway generates the identifier and the
    /// secret (the engine never draws randomness); an HMAC secret arrives
    /// encrypted, an Ed25519 key as its 32 raw public bytes.
    CreateApiKey {
        user: UserId,
        api_key: String,
        label: String,
        /// `api_key_perms` bits.
        permissions: u8,
        kind: ApiKeyKind,
        secret: Vec<u8>,
    },
    RevokeApiKey {
        user: UserId,
        api_key: String,
    },
    /// The result of one password check (done by the gateway). Failures
    /// count; `Limits::max_failed_logins` consecutive ones lock password
    /// login for `Limits::lockout_ms`; a success resets the count. While
    /// locked every attempt is rejected (`UserLocked`) and changes nothing.
    RecordLogin {
        user: UserId,
        success: bool,
    },

    // KYC (appended)
    /// A user asks to be verified at `level` (1..=3). At most one record per
    /// user is pending. `document_number` is ciphertext: the gateway
    /// encrypts it with the server's secret key before it is journaled, so
    /// the plaintext never reaches the journal, snapshots or Postgres.
    /// `data` is a JSON object as text (at most `KYC_DATA_MAX_LEN` bytes).
    SubmitKyc {
        user: UserId,
        level: u8,
        document_type: KycDocumentType,
        document_number: Vec<u8>,
        data: String,
    },
    /// Approve or reject a pending record. Approval sets the user's KYC
    /// level to the record's (a `KycLevelSet` event follows); a rejection
    /// must carry notes. Nobody reviews their own record.
    ReviewKyc {
        kyc: u64,
        reviewer: UserId,
        approve: bool,
        notes: String,
    },

    // notifications (appended)
    /// Register the user's notification webhook (an `http://` or
    /// `https://` URL of at most `NOTIFY_WEBHOOK_MAX_LEN` bytes; the
    /// gateway validates it strictly first), or remove it with an empty
    /// `url`. The engine keeps no notification state: it checks the user
    /// and the bounds and emits `NotificationWebhookSet`, which the
    /// gateway's read model and the persister follow.
    SetNotificationWebhook {
        user: UserId,
        url: String,
    },
    /// Mark some of the user's notifications read. Notifications are derived
    /// from the journal outside the engine (`persister::notify`), so the
    /// gateway checks that the ids are the user's; the engine checks the
    /// user and the bounds (1..=`NOTIFY_MAX_READ_IDS` ids) and emits
    /// `NotificationsRead` with the journal time.
    MarkNotificationsRead {
        user: UserId,
        ids: Vec<u64>,
    },

    // risk (appended)
    /// A new risk rule (id from the engine's counter). `parameters` is a
    /// JSON object as text (`risk::RiskParams::parse` states what each type
    /// takes); names are unique (case-insensitive). `by` is the acting
    /// staff member.
    CreateRiskRule {
        by: UserId,
        name: String,
        kind: RiskRuleType,
        parameters: String,
        level: RiskLevel,
        action: RiskAction,
        enabled: bool,
        description: String,
    },
    /// Change some of a rule's fields (its type never changes).
    UpdateRiskRule {
        by: UserId,
        rule: u64,
        changes: RiskRuleChanges,
    },
    /// Remove a rule; its id is never reused, its events stay.
    DeleteRiskRule {
        by: UserId,
        rule: u64,
    },
    /// Acknowledge, resolve or dismiss a risk event, with a note.
    SetRiskEventStatus {
        by: UserId,
        event: u64,
        status: RiskEventStatus,
        note: String,
    },

    // roles (appended)
    /// Add one role bit (`model::roles`) to a user's roles. Unlike
    /// `SetUserRoles` (the whole set), two concurrent grants or revokes of
    /// different roles cannot undo each other.
    GrantRole {
        user: UserId,
        role: u32,
        /// The acting admin (audit only; `None` in records journaled
        /// before format 7).
        by: Option<UserId>,
    },
    /// Remove one role bit; ADMIN stays with the last active admin.
    RevokeRole {
        user: UserId,
        role: u32,
        by: Option<UserId>,
    },

    // settlement (appended)
    /// Settle one UTC day (`date`: days since 1970-01-01). Refused unless
    /// the day is over at this command's journal time and was not settled
    /// before (settlement.rs); the batch's figures are computed from the
    /// ledger by the persister.
    RunSettlement {
        date: u32,
        requested_by: UserId,
    },

    // notification templates (appended)
    /// Replace the text of notification template `name` for every record
    /// after this one (templates.rs). `subject` is the title, `content` the
    /// body with `{placeholder}`s; an inactive template produces no
    /// notifications. The engine checks the bounds and that `by` is an
    /// active user; the gateway checks first that the template exists and
    /// supports every placeholder used.
    SetNotificationTemplate {
        by: UserId,
        name: String,
        subject: String,
        content: String,
        active: bool,
    },
}

// Commands travel by value through the gateway's pipeline and the
// engine's batches; the largest variant (`CancelReplace`) sets the size and
// the admin commands must stay within it (hence the boxed `PairSpec`).
const _: () = assert!(std::mem::size_of::<Command>() <= 136);

impl Command {
    /// The acting user a command names, for `audit_logs.user_id`.
    pub fn actor(&self) -> Option<UserId> {
        match self {
            Command::CreateRiskRule { by, .. }
            | Command::UpdateRiskRule { by, .. }
            | Command::DeleteRiskRule { by, .. }
            | Command::SetRiskEventStatus { by, .. }
            | Command::SetNotificationTemplate { by, .. } => Some(*by),
            Command::ReviewKyc { reviewer, .. } => Some(*reviewer),
            Command::RunSettlement { requested_by, .. } => Some(*requested_by),
            // None in records journaled before command format 7.
            Command::GrantRole { by, .. } | Command::RevokeRole { by, .. } => *by,
            // None in records journaled before command format 8, and in the
            // bootstrap the server issues itself from config.
            Command::AddAsset { by, .. }
            | Command::UpdateAsset { by, .. }
            | Command::AddPair { by, .. }
            | Command::UpdatePair { by, .. }
            | Command::SetPairStatus { by, .. }
            | Command::SetFeeAccount { by, .. }
            | Command::SetLimits { by, .. }
            | Command::SetUserStatus { by, .. }
            | Command::SetUserRoles { by, .. }
            | Command::SetKycLevel { by, .. }
            | Command::Deposit { by, .. }
            | Command::CompleteWithdrawal { by, .. }
            | Command::RejectWithdrawal { by, .. }
            | Command::Adjust { by, .. } => *by,
            _ => None,
        }
    }

    /// Journal payload encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(128);
        self.encode_into(&mut v);
        v
    }

    /// Encode into a reused buffer (appends).
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&COMMAND_FORMAT_VERSION.to_le_bytes());
        if encode_hot(self, buf) {
            return;
        }
        // Serialising plain data into a Vec cannot fail.
        bincode::serialize_into(&mut *buf, self).expect("command encodes");
    }

    /// Decode a journal payload; any malformed input is an `Err`, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        if bytes.len() < 2 {
            return Err(DecodeError::Truncated);
        }
        let version = u16::from_le_bytes([bytes[0], bytes[1]]);
        use bincode::Options;
        let opts = decode_options();
        let body = &bytes[2..];
        let tag = body
            .get(..4)
            .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]));
        match version {
            COMMAND_FORMAT_VERSION => {
                if let Some(c) = decode_hot(body) {
                    return Ok(c);
                }
            }
            // Version 1 encoded `SetLimits` with fewer limits (and no actor).
            1 if tag == Some(SET_LIMITS_TAG) => {
                let l: LimitsV1 = opts
                    .deserialize(&body[4..])
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?;
                return Ok(Command::SetLimits {
                    limits: Limits {
                        max_open_orders_per_user: l.max_open_orders_per_user,
                        max_open_orders_total: l.max_open_orders_total,
                        max_api_keys_per_user: l.max_api_keys_per_user,
                        ..Limits::default()
                    },
                    by: None,
                });
            }
            // Versions 1 to 7 encode the admin commands without their actor.
            1..=7 if tag.is_some_and(|t| t < V7_HEAD_END_TAG) => {
                let c: CommandV7Head = opts
                    .deserialize(body)
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?;
                return Ok(c.into());
            }
            // Versions 5 and 6 encode role changes without their actor.
            5 | 6 if matches!(tag, Some(GRANT_ROLE_TAG | REVOKE_ROLE_TAG)) => {
                let r: RoleChangeV6 = opts
                    .deserialize(&body[4..])
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?;
                let (user, role, by) = (r.user, r.role, None);
                return Ok(if tag == Some(GRANT_ROLE_TAG) {
                    Command::GrantRole { user, role, by }
                } else {
                    Command::RevokeRole { user, role, by }
                });
            }
            // Versions 1 to 7 differ otherwise only in lacking appended
            // commands.
            1..=7 => {}
            _ => return Err(DecodeError::Version(version)),
        }
        opts.deserialize(body)
            .map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

/// bincode's options for reading a record's body (fixed-width integers,
/// trailing bytes allowed, at most 1 MiB).
fn decode_options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(1 << 20)
}

/// Variant indexes of `PlaceOrder` and `CancelOrder` in the bincode
/// encoding (a test checks them against bincode's own output).
const PLACE_ORDER_TAG: u32 = 16;
const CANCEL_ORDER_TAG: u32 = 17;

/// `PlaceOrder` and `CancelOrder` of the current format, read field by
/// field: nearly every record of a journal is one of them, and replay, the
/// snapshot replica and the persister decode every record (serde's generic
/// visitors cost ~700 instructions per order). `None` for any other
/// command and for anything unexpected (a short buffer, an unknown enum
/// index, an invalid client order id): the general decoder then decides
/// and reports the error, so this path never accepts what it would refuse.
/// Trailing bytes are ignored, as the general decoder's options allow.
fn decode_hot(body: &[u8]) -> Option<Command> {
    let mut r = Fields(body);
    match r.u32()? {
        PLACE_ORDER_TAG => r.new_order().map(Command::PlaceOrder),
        CANCEL_ORDER_TAG => Some(Command::CancelOrder {
            user: UserId(r.u64()?),
            pair: PairId(r.u32()?),
            target: match r.u32()? {
                0 => OrderRef::Id(OrderId(r.u64()?)),
                1 => OrderRef::Client(r.client_id()?),
                _ => return None,
            },
        }),
        _ => None,
    }
}

/// [`decode_hot`]'s mirror on the journaler thread (which encodes every
/// command before its group commit): `PlaceOrder` and `CancelOrder` written
/// byte for byte as bincode writes them (a proptest compares), without
/// serde or the client order id's UTF-8 check. `false` for any other
/// command, which bincode then writes.
fn encode_hot(c: &Command, buf: &mut Vec<u8>) -> bool {
    let client_id = |buf: &mut Vec<u8>, id: &ClientOrderId| {
        let b = id.as_bytes();
        buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
        buf.extend_from_slice(b);
    };
    match c {
        Command::PlaceOrder(o) => {
            buf.extend_from_slice(&PLACE_ORDER_TAG.to_le_bytes());
            buf.extend_from_slice(&o.user.0.to_le_bytes());
            buf.extend_from_slice(&o.pair.0.to_le_bytes());
            // Fieldless enums without explicit discriminants: `as u32` is
            // serde's variant index (the proptest compares the bytes).
            for v in [o.side as u32, o.kind as u32, o.tif as u32] {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            for v in [o.price.0, o.qty.0, o.quote_qty, o.stop_price.0] {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            client_id(buf, &o.client_id);
            buf.extend_from_slice(&(o.stp as u32).to_le_bytes());
            true
        }
        Command::CancelOrder { user, pair, target } => {
            buf.extend_from_slice(&CANCEL_ORDER_TAG.to_le_bytes());
            buf.extend_from_slice(&user.0.to_le_bytes());
            buf.extend_from_slice(&pair.0.to_le_bytes());
            match target {
                OrderRef::Id(id) => {
                    buf.extend_from_slice(&0u32.to_le_bytes());
                    buf.extend_from_slice(&id.0.to_le_bytes());
                }
                OrderRef::Client(id) => {
                    buf.extend_from_slice(&1u32.to_le_bytes());
                    client_id(buf, id);
                }
            }
            true
        }
        _ => false,
    }
}

/// The variants of the enums of a [`NewOrder`] in declaration order, i.e.
/// by serde's variant index (`OrderType::ALL` is in Binance's listing
/// order instead).
const SIDES: [Side; 2] = [Side::Buy, Side::Sell];
const ORDER_TYPES: [OrderType; 7] = [
    OrderType::Limit,
    OrderType::Market,
    OrderType::LimitMaker,
    OrderType::StopLoss,
    OrderType::StopLossLimit,
    OrderType::TakeProfit,
    OrderType::TakeProfitLimit,
];
const TIMES_IN_FORCE: [TimeInForce; 3] = [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok];
const STP_MODES: [StpMode; 4] = [
    StpMode::None,
    StpMode::ExpireTaker,
    StpMode::ExpireMaker,
    StpMode::ExpireBoth,
];

/// The unread rest of a bincode (fixint, little-endian) encoding.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }

    /// A string's bytes: its length as u64, then the bytes.
    fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u64()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(text)
    }

    /// Its characters are ASCII when valid, so valid UTF-8 too: anything
    /// else is refused here (and by serde after it).
    fn client_id(&mut self) -> Option<ClientOrderId> {
        match self.str_bytes()? {
            [] => Some(ClientOrderId::NONE),
            b => ClientOrderId::from_bytes(b).ok(),
        }
    }

    /// A fieldless enum by its variant index.
    fn variant<T: Copy>(&mut self, by_index: &[T]) -> Option<T> {
        by_index.get(usize::try_from(self.u32()?).ok()?).copied()
    }

    fn new_order(&mut self) -> Option<NewOrder> {
        Some(NewOrder {
            user: UserId(self.u64()?),
            pair: PairId(self.u32()?),
            side: self.variant(&SIDES)?,
            kind: self.variant(&ORDER_TYPES)?,
            tif: self.variant(&TIMES_IN_FORCE)?,
            price: Price(self.u64()?),
            qty: Qty(self.u64()?),
            quote_qty: self.u64()?,
            stop_price: Price(self.u64()?),
            client_id: self.client_id()?,
            stp: self.variant(&STP_MODES)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload too short")]
    Truncated,
    #[error("unsupported command format version {0}")]
    Version(u16),
    #[error("malformed command: {0}")]
    Malformed(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde's bincode decoder makes of a current-format body (the
    /// general path that `decode_hot` must agree with).
    fn general(body: &[u8]) -> Result<Command, String> {
        use bincode::Options;
        decode_options()
            .deserialize(body)
            .map_err(|e| e.to_string())
    }

    fn arb_client_id() -> impl Strategy<Value = ClientOrderId> {
        "[A-Za-z0-9._:/-]{0,36}".prop_map(|s| ClientOrderId::new(&s).unwrap_or(ClientOrderId::NONE))
    }

    fn arb_new_order() -> impl Strategy<Value = NewOrder> {
        use proptest::sample::select;
        (
            (any::<u64>(), any::<u32>(), select(&SIDES[..])),
            (select(&ORDER_TYPES[..]), select(&TIMES_IN_FORCE[..])),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
            (arb_client_id(), select(&STP_MODES[..])),
        )
            .prop_map(
                |((user, pair, side), (kind, tif), (price, qty, quote, stop), (cid, stp))| {
                    NewOrder {
                        user: UserId(user),
                        pair: PairId(pair),
                        side,
                        kind,
                        tif,
                        price: Price(price),
                        qty: Qty(qty),
                        quote_qty: quote,
                        stop_price: Price(stop),
                        client_id: cid,
                        stp,
                    }
                },
            )
    }

    fn arb_hot_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            arb_new_order().prop_map(Command::PlaceOrder),
            (
                any::<u64>(),
                any::<u32>(),
                any::<u64>(),
                arb_client_id(),
                any::<bool>()
            )
                .prop_map(|(user, pair, id, cid, by_id)| Command::CancelOrder {
                    user: UserId(user),
                    pair: PairId(pair),
                    target: if by_id {
                        OrderRef::Id(OrderId(id))
                    } else {
                        OrderRef::Client(cid)
                    },
                }),
        ]
    }

    #[test]
    fn hot_tags_are_bincodes_variant_indexes() {
        let place = Command::PlaceOrder(NewOrder {
            user: UserId(1),
            pair: PairId(1),
            side: Side::Buy,
            kind: OrderType::Limit,
            tif: TimeInForce::Gtc,
            price: Price(1),
            qty: Qty(1),
            quote_qty: 0,
            stop_price: Price(0),
            client_id: ClientOrderId::NONE,
            stp: StpMode::None,
        });
        let cancel = Command::CancelOrder {
            user: UserId(1),
            pair: PairId(1),
            target: OrderRef::Id(OrderId(1)),
        };
        // The decoding tables are in declaration order (`as` is the index).
        assert!(SIDES.iter().enumerate().all(|(i, v)| *v as usize == i));
        assert!(ORDER_TYPES
            .iter()
            .enumerate()
            .all(|(i, v)| *v as usize == i));
        assert!(TIMES_IN_FORCE
            .iter()
            .enumerate()
            .all(|(i, v)| *v as usize == i));
        assert!(STP_MODES.iter().enumerate().all(|(i, v)| *v as usize == i));
        for (c, tag) in [(place, PLACE_ORDER_TAG), (cancel, CANCEL_ORDER_TAG)] {
            // serde's own encoding, not `encode` (which writes the tag).
            let v = bincode::serialize(&c).unwrap();
            assert_eq!(u32::from_le_bytes(v[..4].try_into().unwrap()), tag, "{c:?}");
            assert_eq!(decode_hot(&v), Some(c));
        }
    }

    proptest! {
        /// Every order and cancel reads back as serde reads it, through
        /// `decode` and through the hand-read path itself.
        #[test]
        fn hot_commands_decode_as_serde_decodes_them(c in arb_hot_command()) {
            let v = c.encode();
            // Written byte for byte as bincode writes them.
            let mut serde_bytes = COMMAND_FORMAT_VERSION.to_le_bytes().to_vec();
            bincode::serialize_into(&mut serde_bytes, &c).unwrap();
            prop_assert_eq!(&v, &serde_bytes);
            prop_assert_eq!(decode_hot(&v[2..]), Some(c.clone()));
            prop_assert_eq!(general(&v[2..]), Ok(c.clone()));
            prop_assert_eq!(Command::decode(&v), Ok(c));
        }

        /// Damaged records: whatever the hand-read path accepts, serde
        /// accepts as the same command; what it refuses goes to serde.
        #[test]
        fn damaged_hot_commands_never_disagree_with_serde(
            c in arb_hot_command(),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let mut v = c.encode();
            for (at, byte) in flips {
                let i = 2 + at.index(v.len() - 2);
                v[i] = byte;
            }
            let end = 2 + cut.index(v.len() - 1);
            let body = &v[2..end];
            if let Some(hot) = decode_hot(body) {
                prop_assert_eq!(general(body), Ok(hot));
            }
            // Never a panic either way.
            let _ = Command::decode(&v[..end]);
        }
    }

    /// A record as a format `version` binary wrote it: the version, then
    /// the variant index and fields as bincode (fixint) encodes them.
    fn record(version: u16, tag: u32, fields: &impl Serialize) -> Vec<u8> {
        let mut v = version.to_le_bytes().to_vec();
        v.extend_from_slice(&tag.to_le_bytes());
        bincode::serialize_into(&mut v, fields).unwrap();
        v
    }

    /// Regression: format 6 role changes carry no actor; they decode with
    /// `by: None` (formats 5 and 6 both).
    #[test]
    fn format_6_role_changes_decode_without_an_actor() {
        for version in [5, 6] {
            let grant = record(version, GRANT_ROLE_TAG, &(UserId(7), 4u32));
            assert_eq!(
                Command::decode(&grant).unwrap(),
                Command::GrantRole {
                    user: UserId(7),
                    role: 4,
                    by: None
                }
            );
            let revoke = record(version, REVOKE_ROLE_TAG, &(UserId(8), 2u32));
            assert_eq!(
                Command::decode(&revoke).unwrap(),
                Command::RevokeRole {
                    user: UserId(8),
                    role: 2,
                    by: None
                }
            );
            for n in 0..grant.len() {
                assert!(Command::decode(&grant[..n]).is_err(), "cut at {n}");
            }
        }
        // Other format 6 records decode as before.
        let run = record(6, 34, &(19_000u32, UserId(1)));
        assert_eq!(
            Command::decode(&run).unwrap(),
            Command::RunSettlement {
                date: 19_000,
                requested_by: UserId(1)
            }
        );
    }

    #[test]
    fn format_7_round_trips_the_actor_and_template_edits() {
        for c in [
            Command::GrantRole {
                user: UserId(7),
                role: 4,
                by: Some(UserId(1)),
            },
            Command::RevokeRole {
                user: UserId(7),
                role: 4,
                by: None,
            },
            Command::SetNotificationTemplate {
                by: UserId(1),
                name: "deposit_credited".into(),
                subject: "Funds".into(),
                content: "{amount} {asset}".into(),
                active: false,
            },
        ] {
            let bytes = c.encode();
            assert_eq!(bytes[..2], COMMAND_FORMAT_VERSION.to_le_bytes());
            assert_eq!(Command::decode(&bytes).unwrap(), c);
            for n in 0..bytes.len() {
                assert!(Command::decode(&bytes[..n]).is_err(), "cut at {n}");
            }
        }
        // The tags the legacy path relies on.
        let grant = Command::GrantRole {
            user: UserId(1),
            role: 1,
            by: None,
        }
        .encode();
        assert_eq!(grant[2..6], GRANT_ROLE_TAG.to_le_bytes());
        let revoke = Command::RevokeRole {
            user: UserId(1),
            role: 1,
            by: None,
        }
        .encode();
        assert_eq!(revoke[2..6], REVOKE_ROLE_TAG.to_le_bytes());
    }

    fn asset_spec() -> AssetSpec {
        AssetSpec {
            symbol: "BTC".into(),
            name: "Bitcoin".into(),
            decimals: 8,
            min_withdraw_units: 1_000,
            withdraw_fee_units: 500,
            daily_withdraw_limit_units: 0,
            confirmations: 6,
            active: true,
        }
    }

    fn pair_spec() -> PairSpec {
        PairSpec {
            symbol: "BTCUSDT".into(),
            base: AssetId(1),
            quote: AssetId(2),
            tick_units: 1_000_000,
            step_units: 1_000,
            min_qty_units: 1_000,
            max_qty_units: 1 << 40,
            market_max_qty_units: 1 << 30,
            min_notional_units: 500_000_000,
            max_notional_units: 0,
            min_price_ticks: 1,
            max_price_ticks: 1 << 32,
            maker_fee_e8: 100_000,
            taker_fee_e8: 100_000,
            price_band_pct: 0,
            status: PairStatus::Trading,
        }
    }

    /// Each admin command as formats 1 to 7 encoded it (tag and fields,
    /// built by hand) and as it decodes today.
    fn admin_records(version: u16) -> Vec<(Vec<u8>, Command)> {
        let by = None;
        let limits = Limits {
            max_open_orders_per_user: 7,
            max_open_orders_total: 8,
            max_api_keys_per_user: 9,
            max_failed_logins: 3,
            lockout_ms: 60_000,
        };
        let lim = (7u32, 8u32, 9u32, 3u32, 60_000u64);
        let (tx, why) = (String::from("0xabc"), String::from("refund"));
        vec![
            (
                record(version, 0, &asset_spec()),
                Command::AddAsset {
                    spec: asset_spec(),
                    by,
                },
            ),
            (
                record(version, 1, &(AssetId(2), asset_spec())),
                Command::UpdateAsset {
                    asset: AssetId(2),
                    spec: asset_spec(),
                    by,
                },
            ),
            (
                record(version, 2, &pair_spec()),
                Command::AddPair {
                    spec: Box::new(pair_spec()),
                    by,
                },
            ),
            (
                record(version, 3, &(PairId(1), pair_spec())),
                Command::UpdatePair {
                    pair: PairId(1),
                    spec: Box::new(pair_spec()),
                    by,
                },
            ),
            (
                record(version, 4, &(PairId(1), PairStatus::Halt)),
                Command::SetPairStatus {
                    pair: PairId(1),
                    status: PairStatus::Halt,
                    by,
                },
            ),
            (
                record(version, 5, &UserId(3)),
                Command::SetFeeAccount {
                    user: UserId(3),
                    by,
                },
            ),
            (
                record(version, SET_LIMITS_TAG, &lim),
                Command::SetLimits { limits, by },
            ),
            (
                record(version, 8, &(UserId(4), UserStatus::Suspended)),
                Command::SetUserStatus {
                    user: UserId(4),
                    status: UserStatus::Suspended,
                    cancel_orders: false,
                    by,
                },
            ),
            (
                record(version, 9, &(UserId(4), 6u32)),
                Command::SetUserRoles {
                    user: UserId(4),
                    roles: 6,
                    by,
                },
            ),
            (
                record(version, 10, &(UserId(4), 2u8)),
                Command::SetKycLevel {
                    user: UserId(4),
                    level: 2,
                    by,
                },
            ),
            (
                record(version, 11, &(UserId(4), AssetId(1), 5u64, &tx, 6u32)),
                Command::Deposit {
                    user: UserId(4),
                    asset: AssetId(1),
                    amount: 5,
                    tx_hash: tx.clone(),
                    confirmations: 6,
                    by,
                },
            ),
            (
                record(version, 13, &(9u64, &tx)),
                Command::CompleteWithdrawal {
                    withdrawal: 9,
                    tx_hash: tx.clone(),
                    by,
                },
            ),
            (
                record(version, 14, &9u64),
                Command::RejectWithdrawal { withdrawal: 9, by },
            ),
            (
                record(version, 15, &(UserId(4), AssetId(1), 5u64, true, &why)),
                Command::Adjust {
                    user: UserId(4),
                    asset: AssetId(1),
                    amount: 5,
                    credit: true,
                    reason: why.clone(),
                    by,
                },
            ),
        ]
    }

    /// Format 7 (and older) admin commands carry no actor and suspend
    /// without canceling: they decode with `by: None` and
    /// `cancel_orders: false`, whole or not at all.
    #[test]
    fn format_7_admin_commands_decode_without_an_actor() {
        for version in [7, 3] {
            for (bytes, want) in admin_records(version) {
                assert_eq!(Command::decode(&bytes).unwrap(), want, "v{version}");
                for n in 0..bytes.len() {
                    assert!(
                        Command::decode(&bytes[..n]).is_err(),
                        "v{version} cut at {n}"
                    );
                }
            }
        }
        // Version 1 `SetLimits` (three limits) names no actor either.
        let v1 = record(1, SET_LIMITS_TAG, &(7u32, 8u32, 9u32));
        assert_eq!(
            Command::decode(&v1).unwrap(),
            Command::SetLimits {
                limits: Limits {
                    max_open_orders_per_user: 7,
                    max_open_orders_total: 8,
                    max_api_keys_per_user: 9,
                    ..Limits::default()
                },
                by: None
            }
        );
        // Version 1 encoded the other admin commands as version 7.
        let v1 = record(1, 8, &(UserId(4), UserStatus::Active));
        assert_eq!(
            Command::decode(&v1).unwrap(),
            Command::SetUserStatus {
                user: UserId(4),
                status: UserStatus::Active,
                cancel_orders: false,
                by: None
            }
        );
        // Unchanged head commands and the rest decode as before.
        let v7 = record(7, 12, &(UserId(4), AssetId(1), 5u64, "addr"));
        assert_eq!(
            Command::decode(&v7).unwrap(),
            Command::RequestWithdrawal {
                user: UserId(4),
                asset: AssetId(1),
                amount: 5,
                address: "addr".into()
            }
        );
        let v7 = record(7, GRANT_ROLE_TAG, &(UserId(7), 4u32, Some(UserId(1))));
        assert_eq!(
            Command::decode(&v7).unwrap(),
            Command::GrantRole {
                user: UserId(7),
                role: 4,
                by: Some(UserId(1))
            }
        );
    }

    #[test]
    fn format_8_round_trips_the_actor_and_cancel_orders() {
        for (old, c) in admin_records(7) {
            let mut c = c;
            match &mut c {
                Command::AddAsset { by, .. }
                | Command::UpdateAsset { by, .. }
                | Command::AddPair { by, .. }
                | Command::UpdatePair { by, .. }
                | Command::SetPairStatus { by, .. }
                | Command::SetFeeAccount { by, .. }
                | Command::SetLimits { by, .. }
                | Command::SetUserRoles { by, .. }
                | Command::SetKycLevel { by, .. }
                | Command::Deposit { by, .. }
                | Command::CompleteWithdrawal { by, .. }
                | Command::RejectWithdrawal { by, .. }
                | Command::Adjust { by, .. } => *by = Some(UserId(1)),
                Command::SetUserStatus {
                    by, cancel_orders, ..
                } => {
                    *by = Some(UserId(1));
                    *cancel_orders = true;
                }
                other => panic!("not an admin command: {other:?}"),
            }
            for c in [c.clone(), Command::decode(&old).unwrap()] {
                let bytes = c.encode();
                assert_eq!(bytes[..2], COMMAND_FORMAT_VERSION.to_le_bytes());
                // Tags never move; the new fields follow the old ones.
                assert_eq!(bytes[2..6], old[2..6]);
                assert_eq!(bytes[..old.len()][2..], old[2..]);
                assert_eq!(Command::decode(&bytes).unwrap(), c);
                for n in 0..bytes.len() {
                    assert!(Command::decode(&bytes[..n]).is_err(), "cut at {n}");
                }
            }
        }
    }
}
