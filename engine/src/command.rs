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
pub const COMMAND_FORMAT_VERSION: u16 = 7;

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
/// Variant indexes of `GrantRole` and `RevokeRole` (versions 5 on).
const GRANT_ROLE_TAG: u32 = 32;
const REVOKE_ROLE_TAG: u32 = 33;

/// `GrantRole` / `RevokeRole` as versions 5 and 6 encoded them (no actor).
#[derive(Deserialize)]
struct RoleChangeV6 {
    user: UserId,
    role: u32,
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
    // configuration
    AddAsset(AssetSpec),
    /// Symbol and decimals cannot change.
    UpdateAsset {
        asset: AssetId,
        spec: AssetSpec,
    },
    AddPair(PairSpec),
    /// Base, quote, tick and step cannot change.
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

    // identity
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

    // wallet
    /// Idempotent by (asset, tx_hash); credited once confirmations reach the
    /// asset's requirement.
    Deposit {
        user: UserId,
        asset: AssetId,
        amount: u64,
        tx_hash: String,
        confirmations: u32,
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
    },
    /// Refused: everything frozen is released.
    RejectWithdrawal {
        withdrawal: u64,
    },
    /// Admin correction, audited by its reason.
    Adjust {
        user: UserId,
        asset: AssetId,
        amount: u64,
        credit: bool,
        reason: String,
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

impl Command {
    /// Journal payload encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(128);
        self.encode_into(&mut v);
        v
    }

    /// Encode into a reused buffer (appends).
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&COMMAND_FORMAT_VERSION.to_le_bytes());
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
        let opts = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes()
            .with_limit(1 << 20);
        let body = &bytes[2..];
        let tag = body
            .get(..4)
            .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]));
        match version {
            COMMAND_FORMAT_VERSION => {}
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
            // Versions 2 to 6 differ otherwise only in lacking appended
            // commands.
            2..=6 => {}
            // Version 1 differs only in the encoding of `SetLimits`.
            1 if tag == Some(SET_LIMITS_TAG) => {
                let l: LimitsV1 = opts
                    .deserialize(&body[4..])
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?;
                return Ok(Command::SetLimits(Limits {
                    max_open_orders_per_user: l.max_open_orders_per_user,
                    max_open_orders_total: l.max_open_orders_total,
                    max_api_keys_per_user: l.max_api_keys_per_user,
                    ..Limits::default()
                }));
            }
            1 => {}
            _ => return Err(DecodeError::Version(version)),
        }
        opts.deserialize(body)
            .map_err(|e| DecodeError::Malformed(e.to_string()))
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
}
