//! Events: the engine's only output. Each command yields an ordered list of
//! events into a caller-owned buffer. They carry everything the gateways
//! (responses, streams, read models) and the persister need, so nobody ever
//! reads engine state from another thread.
//!
//! Ordering within a command: balance changes precede the order/trade event
//! they fund or settle; a maker's `OrderDone` follows the trade that ended
//! it; the taker's ending (release of leftover funds, `OrderDone`) comes
//! after its last trade; triggered stops follow the trade that fired them.
//! A `Rejected` event means that part of the command changed nothing
//! (`CancelReplace` may yield a cancel-part and a new-order-part result).

use crate::model::{
    ApiKeyKind, Asset, Deposit, KycRecord, KycStatus, Limits, Order, Pair, Withdrawal,
};
use crate::reject::RejectReason;
use crate::risk::{RiskEvent, RiskEventStatus, RiskRule};
use crate::types::*;
use serde::{Deserialize, Serialize};

/// Why a balance moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BalanceCause {
    OrderFreeze(OrderId),
    OrderRelease(OrderId),
    /// Buyer or seller side of a trade (spend from frozen, receive net of fee).
    Trade(TradeId),
    /// Fee credited to the fee account.
    TradeFee(TradeId),
    Deposit(u64),
    WithdrawalFreeze(u64),
    WithdrawalRelease(u64),
    WithdrawalSent(u64),
    WithdrawalFee(u64),
    Adjustment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceChange {
    pub user: UserId,
    pub asset: AssetId,
    pub available_before: u64,
    pub available_after: u64,
    pub frozen_before: u64,
    pub frozen_after: u64,
    pub cause: BalanceCause,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    pub id: TradeId,
    pub pair: PairId,
    pub price: Price,
    pub qty: Qty,
    pub quote_qty: u64,
    pub maker_order: OrderId,
    pub taker_order: OrderId,
    pub maker_user: UserId,
    pub taker_user: UserId,
    pub taker_side: Side,
    /// Fee charged to the maker, in the asset the maker received.
    pub maker_fee: u64,
    pub taker_fee: u64,
    /// Cumulative filled of each order after this trade.
    pub maker_filled: Qty,
    pub taker_filled: Qty,
}

impl Trade {
    pub fn buyer_is_maker(&self) -> bool {
        self.taker_side == Side::Sell
    }
}

/// A new order as it entered the engine. Kept compact (no running totals:
/// at acceptance nothing is filled, the status is NEW and a stop is not yet
/// triggered) so that [`Event`] stays small enough to copy inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedOrder {
    pub id: OrderId,
    pub user: UserId,
    pub pair: PairId,
    pub side: Side,
    pub kind: OrderType,
    pub tif: TimeInForce,
    pub stp: StpMode,
    pub price: Price,
    pub stop_price: Price,
    pub qty: Qty,
    pub quote_qty: u64,
    /// Units of the spend asset frozen for it.
    pub frozen: u64,
    pub client_id: ClientOrderId,
    pub created_ms: u64,
}

impl AcceptedOrder {
    pub fn from_order(o: &Order) -> AcceptedOrder {
        AcceptedOrder {
            id: o.id,
            user: o.user,
            pair: o.pair,
            side: o.side,
            kind: o.kind,
            tif: o.tif,
            stp: o.stp,
            price: o.price,
            stop_price: o.stop_price,
            qty: o.qty,
            quote_qty: o.quote_qty,
            frozen: o.frozen,
            client_id: o.client_id,
            created_ms: o.created_ms,
        }
    }

    /// The full order record at acceptance.
    pub fn to_order(&self) -> Order {
        Order {
            id: self.id,
            user: self.user,
            pair: self.pair,
            side: self.side,
            kind: self.kind,
            tif: self.tif,
            stp: self.stp,
            status: OrderStatus::New,
            price: self.price,
            stop_price: self.stop_price,
            qty: self.qty,
            filled: Qty(0),
            quote_qty: self.quote_qty,
            cum_quote: 0,
            frozen: self.frozen,
            client_id: self.client_id,
            created_ms: self.created_ms,
            working_ms: if self.kind.is_stop() {
                0
            } else {
                self.created_ms
            },
            triggered: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The command (or one part of a CancelReplace) was refused; nothing changed.
    Rejected {
        reason: RejectReason,
    },

    AssetListed(Asset),
    AssetUpdated(Asset),
    // Boxed: rare, and large enough to double the size of every event.
    PairListed(Box<Pair>),
    PairUpdated(Box<Pair>),
    FeeAccountSet {
        user: UserId,
    },
    LimitsSet(Limits),

    UserCreated {
        user: UserId,
        username: String,
        email: String,
        password_hash: String,
        roles: u32,
    },
    UserStatusChanged {
        user: UserId,
        status: UserStatus,
    },
    UserRolesChanged {
        user: UserId,
        roles: u32,
    },
    KycLevelSet {
        user: UserId,
        level: u8,
    },

    Balance(BalanceChange),
    DepositUpdated(Deposit),
    WithdrawalUpdated(Withdrawal),
    Adjusted {
        user: UserId,
        asset: AssetId,
        amount: u64,
        credit: bool,
        reason: String,
    },

    /// A new order entered the engine (status NEW; stops wait untriggered).
    OrderAccepted(AcceptedOrder),
    Trade(Trade),
    /// A waiting stop order fired at `last_price` and now works.
    StopTriggered {
        order: OrderId,
        user: UserId,
        pair: PairId,
        last_price: Price,
    },
    /// Quantity reduced in place (priority kept).
    OrderAmended {
        order: OrderId,
        user: UserId,
        pair: PairId,
        qty: Qty,
        filled: Qty,
    },
    /// The order ended: FILLED, CANCELED, EXPIRED or EXPIRED_IN_MATCH.
    OrderDone {
        order: OrderId,
        user: UserId,
        pair: PairId,
        status: OrderStatus,
        filled: Qty,
        cum_quote: u64,
    },

    // identity (appended)
    /// A new API key; `secret` as stored (HMAC: encrypted; Ed25519: public key).
    ApiKeyCreated {
        user: UserId,
        id: u64,
        api_key: String,
        label: String,
        permissions: u8,
        kind: ApiKeyKind,
        secret: Vec<u8>,
        created_ms: u64,
    },
    ApiKeyRevoked {
        user: UserId,
        id: u64,
        api_key: String,
    },
    /// A password check was recorded: the consecutive failures after it and
    /// the lock it leaves (`locked_until_ms` 0 = not locked).
    LoginRecorded {
        user: UserId,
        success: bool,
        failed_logins: u32,
        locked_until_ms: u64,
    },

    // KYC (appended)
    /// A new pending KYC record, as stored (document number encrypted).
    // Boxed: rare, and large enough to grow every event.
    KycSubmitted(Box<KycRecord>),
    /// A pending record was approved or rejected. An approval is followed
    /// by `KycLevelSet` for the record's user and level.
    KycReviewed {
        kyc: u64,
        user: UserId,
        reviewer: UserId,
        status: KycStatus,
        level: u8,
        notes: String,
        reviewed_ms: u64,
    },

    // notifications (appended)
    /// The user's webhook URL is now `url` (empty: removed).
    NotificationWebhookSet {
        user: UserId,
        url: String,
    },
    /// The user read these notifications at `read_ms` (journal time).
    NotificationsRead {
        user: UserId,
        ids: Vec<u64>,
        read_ms: u64,
    },

    // risk (appended)
    // Boxed: rare, and large enough to grow every event.
    RiskRuleCreated(Box<RiskRule>),
    /// The rule after the change.
    RiskRuleUpdated(Box<RiskRule>),
    RiskRuleDeleted {
        rule: u64,
        name: String,
    },
    /// A rule fired (status OPEN). Always after the command's other events,
    /// also after the `Rejected` of a command a BLOCK rule refused.
    RiskEventRaised(Box<RiskEvent>),
    RiskEventStatusChanged {
        event: u64,
        /// The user the event is about.
        user: UserId,
        status: RiskEventStatus,
        by: UserId,
        note: String,
        updated_ms: u64,
    },

    // settlement (appended)
    /// A UTC day (`date`, days since 1970-01-01) was accepted for settlement
    /// as batch `id`; the persister writes the batch from the ledger.
    SettlementRequested {
        id: u64,
        date: u32,
        requested_by: UserId,
        ts_ms: u64,
    },

    // notification templates (appended)
    /// A template's text after an edit (`Command::SetNotificationTemplate`).
    NotificationTemplateSet(Box<crate::templates::NotificationTemplate>),
}
