//! Business rejections are data: every reason has a stable number, grouped by
//! subsystem (1xx identity, 2xx configuration, 3xx order parameters and
//! filters, 4xx order state, 5xx funds, 6xx wallet, 7xx risk and
//! notifications, 8xx settlement). Numbers are never reused or renumbered:
//! the journal, Postgres and clients may hold them.

use serde::{Deserialize, Serialize};

#[repr(u16)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    // 1xx: users and identity
    UnknownUser = 100,
    UserSuspended = 101,
    UsernameTaken = 102,
    InvalidUsername = 103,
    EmailTaken = 104,
    UnknownApiKey = 105,
    ApiKeyExists = 106,
    TooManyApiKeys = 107,
    InvalidKycLevel = 108,
    UnknownKycRecord = 109,
    KycNotPending = 110,
    RoleUnchanged = 111,
    /// Password login is locked after too many failures (`locked_until_ms`).
    UserLocked = 112,
    /// API key identifier, label, permissions or key material malformed.
    InvalidApiKey = 113,
    /// The user already has a KYC record waiting for review.
    KycAlreadyPending = 114,
    /// KYC document number (ciphertext) or data malformed or too large.
    InvalidKycSubmission = 115,
    /// Review notes too long, or a rejection without notes.
    InvalidKycReview = 116,
    /// Nobody reviews their own KYC record.
    KycSelfReview = 117,
    /// Not exactly one role of `model::roles`.
    InvalidRole = 130,
    /// ADMIN cannot be revoked from the last active admin.
    LastActiveAdmin = 131,

    // 2xx: configuration (assets, pairs, fee account)
    UnknownAsset = 200,
    AssetExists = 201,
    UnknownPair = 202,
    PairExists = 203,
    InvalidAssetConfig = 204,
    InvalidPairConfig = 205,
    AssetInactive = 206,

    // 3xx: order parameters and filters
    PriceFilter = 300,
    LotSize = 301,
    MinNotional = 302,
    MarketLotSize = 303,
    PriceBand = 304,
    MaxNumOrders = 305,
    MaxNotional = 306,
    InvalidQuantity = 307,
    InvalidPrice = 308,
    InvalidStopPrice = 309,
    InvalidTimeInForce = 310,
    InvalidOrderParams = 311,
    StopWouldTriggerImmediately = 312,
    NoLastPriceForStop = 313,

    // 4xx: order state
    PairNotTrading = 400,
    PairCancelOnly = 401,
    WouldTakeAsMaker = 402,
    DuplicateClientOrderId = 403,
    UnknownOrder = 404,
    InvalidAmendQty = 405,
    NotOrderOwner = 406,

    // 5xx: funds and arithmetic
    InsufficientBalance = 500,
    Overflow = 501,
    InvalidAmount = 502,
    FeeAccountHasOrders = 503,

    // 6xx: wallet
    DepositUserMismatch = 600,
    DepositAlreadyCredited = 601,
    BelowMinWithdraw = 602,
    DailyWithdrawLimit = 603,
    UnknownWithdrawal = 604,
    WithdrawalNotPending = 605,
    KycRequired = 606,
    DepositConfirmationsDecreased = 607,

    // 7xx: risk rules and events
    UnknownRiskRule = 700,
    /// Name, description, type, action or parameters not acceptable.
    InvalidRiskRule = 701,
    RiskRuleNameTaken = 702,
    TooManyRiskRules = 703,
    UnknownRiskEvent = 704,
    /// The event was already resolved or dismissed.
    RiskEventClosed = 705,
    /// A change to OPEN or to the status it has, or a note too long.
    InvalidRiskEventStatus = 706,
    /// Refused by an ORDER_NOTIONAL rule with action BLOCK.
    RiskOrderNotional = 710,
    /// Refused by a LARGE_WITHDRAWAL rule with action BLOCK.
    RiskLargeWithdrawal = 711,

    // 72x: notifications
    /// A webhook URL that is too long or not http(s), or a mark-read with
    /// no ids or more than `NOTIFY_MAX_READ_IDS`.
    InvalidNotificationRequest = 720,

    // 8xx: settlement
    /// The UTC day is not over at the command's journal time.
    SettlementDayNotOver = 800,
    /// The UTC day was settled already.
    AlreadySettled = 801,

    // 72x: notifications (appended)
    /// A template edit with a bad name, subject or content (templates.rs
    /// bounds), or a new name beyond `NOTIFY_TEMPLATES_MAX`.
    InvalidNotificationTemplate = 721,
}

impl RejectReason {
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Stable machine name (SCREAMING_SNAKE).
    pub fn name(self) -> &'static str {
        use RejectReason::*;
        match self {
            UnknownUser => "UNKNOWN_USER",
            UserSuspended => "USER_SUSPENDED",
            UsernameTaken => "USERNAME_TAKEN",
            InvalidUsername => "INVALID_USERNAME",
            EmailTaken => "EMAIL_TAKEN",
            UnknownApiKey => "UNKNOWN_API_KEY",
            ApiKeyExists => "API_KEY_EXISTS",
            TooManyApiKeys => "TOO_MANY_API_KEYS",
            InvalidKycLevel => "INVALID_KYC_LEVEL",
            UnknownKycRecord => "UNKNOWN_KYC_RECORD",
            KycNotPending => "KYC_NOT_PENDING",
            RoleUnchanged => "ROLE_UNCHANGED",
            UserLocked => "USER_LOCKED",
            InvalidApiKey => "INVALID_API_KEY",
            KycAlreadyPending => "KYC_ALREADY_PENDING",
            InvalidKycSubmission => "INVALID_KYC_SUBMISSION",
            InvalidKycReview => "INVALID_KYC_REVIEW",
            KycSelfReview => "KYC_SELF_REVIEW",
            InvalidRole => "INVALID_ROLE",
            LastActiveAdmin => "LAST_ACTIVE_ADMIN",
            UnknownAsset => "UNKNOWN_ASSET",
            AssetExists => "ASSET_EXISTS",
            UnknownPair => "UNKNOWN_PAIR",
            PairExists => "PAIR_EXISTS",
            InvalidAssetConfig => "INVALID_ASSET_CONFIG",
            InvalidPairConfig => "INVALID_PAIR_CONFIG",
            AssetInactive => "ASSET_INACTIVE",
            PriceFilter => "PRICE_FILTER",
            LotSize => "LOT_SIZE",
            MinNotional => "NOTIONAL",
            MarketLotSize => "MARKET_LOT_SIZE",
            PriceBand => "PERCENT_PRICE",
            MaxNumOrders => "MAX_NUM_ORDERS",
            MaxNotional => "MAX_NOTIONAL",
            InvalidQuantity => "INVALID_QUANTITY",
            InvalidPrice => "INVALID_PRICE",
            InvalidStopPrice => "INVALID_STOP_PRICE",
            InvalidTimeInForce => "INVALID_TIME_IN_FORCE",
            InvalidOrderParams => "INVALID_ORDER_PARAMS",
            StopWouldTriggerImmediately => "STOP_WOULD_TRIGGER_IMMEDIATELY",
            NoLastPriceForStop => "NO_LAST_PRICE_FOR_STOP",
            PairNotTrading => "PAIR_NOT_TRADING",
            PairCancelOnly => "PAIR_CANCEL_ONLY",
            WouldTakeAsMaker => "WOULD_TAKE_AS_MAKER",
            DuplicateClientOrderId => "DUPLICATE_CLIENT_ORDER_ID",
            UnknownOrder => "UNKNOWN_ORDER",
            InvalidAmendQty => "INVALID_AMEND_QTY",
            NotOrderOwner => "NOT_ORDER_OWNER",
            InsufficientBalance => "INSUFFICIENT_BALANCE",
            Overflow => "OVERFLOW",
            InvalidAmount => "INVALID_AMOUNT",
            FeeAccountHasOrders => "FEE_ACCOUNT_HAS_ORDERS",
            DepositUserMismatch => "DEPOSIT_USER_MISMATCH",
            DepositAlreadyCredited => "DEPOSIT_ALREADY_CREDITED",
            BelowMinWithdraw => "BELOW_MIN_WITHDRAW",
            DailyWithdrawLimit => "DAILY_WITHDRAW_LIMIT",
            UnknownWithdrawal => "UNKNOWN_WITHDRAWAL",
            WithdrawalNotPending => "WITHDRAWAL_NOT_PENDING",
            KycRequired => "KYC_REQUIRED",
            DepositConfirmationsDecreased => "DEPOSIT_CONFIRMATIONS_DECREASED",
            UnknownRiskRule => "UNKNOWN_RISK_RULE",
            InvalidRiskRule => "INVALID_RISK_RULE",
            RiskRuleNameTaken => "RISK_RULE_NAME_TAKEN",
            TooManyRiskRules => "TOO_MANY_RISK_RULES",
            UnknownRiskEvent => "UNKNOWN_RISK_EVENT",
            RiskEventClosed => "RISK_EVENT_CLOSED",
            InvalidRiskEventStatus => "INVALID_RISK_EVENT_STATUS",
            RiskOrderNotional => "RISK_ORDER_NOTIONAL",
            RiskLargeWithdrawal => "RISK_LARGE_WITHDRAWAL",
            InvalidNotificationRequest => "INVALID_NOTIFICATION_REQUEST",
            SettlementDayNotOver => "SETTLEMENT_DAY_NOT_OVER",
            AlreadySettled => "ALREADY_SETTLED",
            InvalidNotificationTemplate => "INVALID_NOTIFICATION_TEMPLATE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RejectReason::*;

    #[test]
    fn numbers_are_stable() {
        // These numbers are persisted; changing one is a breaking change.
        assert_eq!(UnknownUser.code(), 100);
        assert_eq!(UnknownAsset.code(), 200);
        assert_eq!(PriceFilter.code(), 300);
        assert_eq!(PairNotTrading.code(), 400);
        assert_eq!(InsufficientBalance.code(), 500);
        assert_eq!(DepositUserMismatch.code(), 600);
        assert_eq!(StopWouldTriggerImmediately.code(), 312);
        assert_eq!(DuplicateClientOrderId.code(), 403);
        assert_eq!(UnknownApiKey.code(), 105);
        assert_eq!(TooManyApiKeys.code(), 107);
        assert_eq!(UserLocked.code(), 112);
        assert_eq!(InvalidApiKey.code(), 113);
        assert_eq!(InvalidKycLevel.code(), 108);
        assert_eq!(UnknownKycRecord.code(), 109);
        assert_eq!(KycNotPending.code(), 110);
        assert_eq!(KycAlreadyPending.code(), 114);
        assert_eq!(InvalidKycSubmission.code(), 115);
        assert_eq!(InvalidKycReview.code(), 116);
        assert_eq!(KycSelfReview.code(), 117);
        assert_eq!(InvalidNotificationRequest.code(), 720);
        assert_eq!(InvalidRole.code(), 130);
        assert_eq!(LastActiveAdmin.code(), 131);
        assert_eq!(UnknownRiskRule.code(), 700);
        assert_eq!(InvalidRiskEventStatus.code(), 706);
        assert_eq!(RiskOrderNotional.code(), 710);
        assert_eq!(RiskLargeWithdrawal.code(), 711);
        assert_eq!(SettlementDayNotOver.code(), 800);
        assert_eq!(AlreadySettled.code(), 801);
        assert_eq!(InvalidNotificationTemplate.code(), 721);
    }
}
