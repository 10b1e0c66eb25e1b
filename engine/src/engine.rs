//! The matching engine: a pure, deterministic state machine
//! `apply(seq, ts, command) -> events`. One thread owns it; it never reads a
//! clock, never draws a random number and never lets hash-map iteration order
//! reach its output. Every rejection is checked before any state changes, so
//! a rejected command (or rejected part of a CancelReplace) changes nothing.
//!
//! Money rules: amounts are u64 base units; the quote of a trade is
//! floor(qty x price) (identical for buyer and seller, so conservation holds);
//! fees are ceil(received x rate), credited to the fee account; an open buy
//! with a limit price keeps exactly notional(remaining, limit) frozen, so
//! price improvement and rounding dust are released at each fill; when an
//! order ends, everything still frozen for it is released.

use std::collections::{BTreeMap, BTreeSet};

use crate::book::{BookSide, Slab, NIL};
use crate::command::{CancelReplaceMode, Command, NewOrder, OrderRef};
use crate::event::{AcceptedOrder, BalanceCause, BalanceChange, Event, Trade};
use crate::fxhash::FxHashMap;
use crate::model::*;
use crate::reject::RejectReason;
use crate::risk::RiskState;
use crate::types::*;

type R<T> = Result<T, RejectReason>;

/// One trading pair: configuration, both sides of the book, last trade
/// price and the waiting stop orders.
#[derive(Clone, Debug)]
pub struct PairState {
    pub pair: Pair,
    pub bids: BookSide,
    pub asks: BookSide,
    /// Last trade price in ticks (0 = no trade yet).
    pub last_price: u64,
    /// Waiting stops that fire when last >= stop: (stop price, order id).
    pub stops_up: BTreeSet<(u64, u64)>,
    /// Waiting stops that fire when last <= stop.
    pub stops_down: BTreeSet<(u64, u64)>,
    /// Lowest and highest trade price since the current order command
    /// started (`u64::MAX`, 0 = none): stops fire when any trade reached
    /// them, not only the last one. Transient: reset by every placement.
    pub(crate) swept_lo: u64,
    pub(crate) swept_hi: u64,
}

impl PairState {
    pub fn new(pair: Pair) -> PairState {
        PairState {
            pair,
            bids: BookSide::new(Side::Buy),
            asks: BookSide::new(Side::Sell),
            last_price: 0,
            stops_up: BTreeSet::new(),
            stops_down: BTreeSet::new(),
            swept_lo: u64::MAX,
            swept_hi: 0,
        }
    }
    pub fn side(&self, side: Side) -> &BookSide {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }
}

/// How a taker's matching loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TakerEnd {
    /// Quantity fully filled.
    Filled,
    /// Book exhausted or limit price reached.
    NoLiquidity,
    /// Funds (or quote budget) cannot buy one more step.
    Budget,
    /// A sell by quote ran out of base before reaching its quote amount.
    OutOfFunds,
    /// Self-trade prevention expired the taker.
    StpExpired,
}

#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) last_seq: u64,
    pub(crate) last_ts_ms: u64,
    pub(crate) next_order_id: u64,
    pub(crate) next_trade_id: u64,
    pub(crate) next_user_id: u64,
    pub(crate) next_deposit_id: u64,
    pub(crate) next_withdrawal_id: u64,
    pub(crate) next_api_key_id: u64,
    pub(crate) next_kyc_id: u64,
    pub(crate) fee_account: UserId,
    pub(crate) limits: Limits,
    /// Index = asset id - 1.
    pub(crate) assets: Vec<Asset>,
    pub(crate) flows: Vec<AssetFlows>,
    pub(crate) asset_by_symbol: BTreeMap<String, AssetId>,
    /// Index = pair id - 1.
    pub(crate) pairs: Vec<PairState>,
    pub(crate) pair_by_symbol: BTreeMap<String, PairId>,
    /// Index = user id (0 = the exchange's own account).
    pub(crate) users: Vec<User>,
    pub(crate) username_index: BTreeMap<String, UserId>,
    pub(crate) email_index: BTreeMap<String, UserId>,
    /// Active API key identifier -> owner.
    pub(crate) api_key_index: BTreeMap<String, UserId>,
    pub(crate) deposits: BTreeMap<(AssetId, String), Deposit>,
    pub(crate) withdrawals: BTreeMap<u64, Withdrawal>,
    /// Every KYC record by id (reviewed ones stay: they are history).
    pub(crate) kyc: BTreeMap<u64, KycRecord>,
    /// User -> their one pending KYC record (derived; rebuilt on load).
    pub(crate) kyc_pending: BTreeMap<UserId, u64>,
    pub(crate) slab: Slab,
    /// Open order id -> slab index (orders resting or waiting as stops).
    pub(crate) order_index: FxHashMap<u64, u32>,
    pub(crate) client_index: FxHashMap<(UserId, ClientOrderId), OrderId>,
    pub(crate) scratch: Vec<u64>,
    /// Risk rules, open risk events and their counters (risk.rs).
    pub(crate) risk: RiskState,
    // settlement (settlement.rs)
    pub(crate) next_settlement_id: u64,
    /// Settled UTC day number -> its batch.
    pub(crate) settlements: BTreeMap<u32, crate::settlement::Settlement>,
    /// Edited notification templates by name (templates.rs).
    pub(crate) templates: BTreeMap<String, crate::templates::NotificationTemplate>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

/// Username rule: 3..=32 of [A-Za-z0-9_.-], and not the name of the
/// exchange's own account (user 0).
pub fn valid_username(s: &str) -> bool {
    (3..=32).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && !s.eq_ignore_ascii_case("exchange")
}

fn system_user() -> User {
    User {
        id: UserId(0),
        username: "exchange".into(),
        email: String::new(),
        password_hash: String::new(),
        status: UserStatus::Active,
        roles: 0,
        kyc_level: 0,
        created_ms: 0,
        balances: Vec::new(),
        open_orders: 0,
        withdraw_usage: Vec::new(),
        api_keys: Vec::new(),
        failed_logins: 0,
        locked_until_ms: 0,
    }
}

/// Mutate one balance and record the change with before/after values.
#[inline]
fn change_balance(
    users: &mut [User],
    out: &mut Vec<Event>,
    user: UserId,
    asset: AssetId,
    cause: BalanceCause,
    f: impl FnOnce(&mut Balance),
) {
    let b = users[user.0 as usize].balance_mut(asset);
    let before = *b;
    f(b);
    out.push(Event::Balance(BalanceChange {
        user,
        asset,
        available_before: before.available,
        available_after: b.available,
        frozen_before: before.frozen,
        frozen_after: b.frozen,
        cause,
    }));
}

/// Move `amount` of `user`'s `asset` from frozen back to available.
#[inline]
fn release_frozen(
    users: &mut [User],
    out: &mut Vec<Event>,
    user: UserId,
    asset: AssetId,
    amount: u64,
    cause: BalanceCause,
) {
    change_balance(users, out, user, asset, cause, |b| {
        b.frozen -= amount;
        b.available += amount;
    });
}

#[inline]
fn balance_of(users: &[User], user: UserId, asset: AssetId) -> Balance {
    users[user.0 as usize].balance(asset)
}

impl Engine {
    pub fn new() -> Engine {
        Engine::with_capacity(1024)
    }

    /// `orders`: expected open orders (preallocated so the steady state does
    /// not allocate).
    pub fn with_capacity(orders: usize) -> Engine {
        let mut order_index = FxHashMap::default();
        order_index.reserve(orders);
        let mut client_index = FxHashMap::default();
        client_index.reserve(orders.min(1 << 16));
        Engine {
            last_seq: 0,
            last_ts_ms: 0,
            next_order_id: 1,
            next_trade_id: 1,
            next_user_id: 1,
            next_deposit_id: 1,
            next_withdrawal_id: 1,
            next_api_key_id: 1,
            next_kyc_id: 1,
            fee_account: UserId(0),
            limits: Limits::default(),
            assets: Vec::new(),
            flows: Vec::new(),
            asset_by_symbol: BTreeMap::new(),
            pairs: Vec::new(),
            pair_by_symbol: BTreeMap::new(),
            users: vec![system_user()],
            username_index: BTreeMap::new(),
            email_index: BTreeMap::new(),
            api_key_index: BTreeMap::new(),
            deposits: BTreeMap::new(),
            withdrawals: BTreeMap::new(),
            kyc: BTreeMap::new(),
            kyc_pending: BTreeMap::new(),
            slab: Slab::with_capacity(orders),
            order_index,
            client_index,
            scratch: Vec::with_capacity(256),
            risk: RiskState::default(),
            next_settlement_id: 1,
            settlements: BTreeMap::new(),
            templates: BTreeMap::new(),
        }
    }

    // ---------------------------------------------------------------- queries

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
    pub fn last_ts_ms(&self) -> u64 {
        self.last_ts_ms
    }
    pub fn fee_account(&self) -> UserId {
        self.fee_account
    }
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    pub fn assets(&self) -> &[Asset] {
        &self.assets
    }
    pub fn asset(&self, id: AssetId) -> Option<&Asset> {
        (id.0 as usize)
            .checked_sub(1)
            .and_then(|i| self.assets.get(i))
    }
    pub fn asset_by_symbol(&self, symbol: &str) -> Option<&Asset> {
        self.asset_by_symbol
            .get(symbol)
            .and_then(|id| self.asset(*id))
    }
    pub fn asset_flows(&self, id: AssetId) -> Option<&AssetFlows> {
        (id.0 as usize)
            .checked_sub(1)
            .and_then(|i| self.flows.get(i))
    }
    pub fn pairs(&self) -> &[PairState] {
        &self.pairs
    }
    pub fn pair(&self, id: PairId) -> Option<&PairState> {
        (id.0 as usize)
            .checked_sub(1)
            .and_then(|i| self.pairs.get(i))
    }
    pub fn pair_by_symbol(&self, symbol: &str) -> Option<&PairState> {
        self.pair_by_symbol
            .get(symbol)
            .and_then(|id| self.pair(*id))
    }
    pub fn users(&self) -> &[User] {
        &self.users
    }
    pub fn user(&self, id: UserId) -> Option<&User> {
        self.users.get(id.0 as usize)
    }
    pub fn user_by_name(&self, username: &str) -> Option<&User> {
        self.username_index
            .get(username)
            .and_then(|id| self.user(*id))
    }
    /// The active API key with this identifier, and its owner.
    pub fn api_key(&self, api_key: &str) -> Option<(UserId, &ApiKey)> {
        let user = *self.api_key_index.get(api_key)?;
        let k = self
            .user(user)?
            .api_keys
            .iter()
            .find(|k| k.api_key == api_key)?;
        Some((user, k))
    }
    pub fn balance(&self, user: UserId, asset: AssetId) -> Balance {
        if (user.0 as usize) < self.users.len() {
            balance_of(&self.users, user, asset)
        } else {
            Balance::default()
        }
    }
    /// An open order (resting or waiting stop).
    pub fn order(&self, id: OrderId) -> Option<&Order> {
        self.order_index.get(&id.0).map(|&i| self.slab.order(i))
    }
    pub fn order_by_client_id(&self, user: UserId, cid: &ClientOrderId) -> Option<&Order> {
        self.client_index
            .get(&(user, *cid))
            .and_then(|id| self.order(*id))
    }
    pub fn open_order_count(&self) -> usize {
        self.order_index.len()
    }
    pub fn deposits(&self) -> impl Iterator<Item = &Deposit> {
        self.deposits.values()
    }
    pub fn withdrawals(&self) -> impl Iterator<Item = &Withdrawal> {
        self.withdrawals.values()
    }
    pub fn withdrawal(&self, id: u64) -> Option<&Withdrawal> {
        self.withdrawals.get(&id)
    }
    /// Every KYC record, by id.
    pub fn kyc_records(&self) -> impl Iterator<Item = &KycRecord> {
        self.kyc.values()
    }
    pub fn kyc_record(&self, id: u64) -> Option<&KycRecord> {
        self.kyc.get(&id)
    }
    /// The user's pending KYC record, if any.
    pub fn pending_kyc(&self, user: UserId) -> Option<&KycRecord> {
        self.kyc_pending.get(&user).and_then(|id| self.kyc.get(id))
    }
    pub(crate) fn slab(&self) -> &Slab {
        &self.slab
    }

    /// Open orders of one pair side, best first, FIFO within a level.
    pub fn book_orders(&self, pair: PairId, side: Side) -> Vec<Order> {
        let mut v = Vec::new();
        if let Some(ps) = self.pair(pair) {
            let bs = ps.side(side);
            for l in bs.iter_best_first() {
                for i in bs.level_nodes(&self.slab, l) {
                    v.push(*self.slab.order(i));
                }
            }
        }
        v
    }

    /// Aggregated depth: (price ticks, total qty) best first, at most `limit`.
    pub fn depth(&self, pair: PairId, side: Side, limit: usize) -> Vec<(u64, u64)> {
        self.pair(pair)
            .map(|ps| {
                ps.side(side)
                    .iter_best_first()
                    .take(limit)
                    .map(|l| (l.price, l.total))
                    .collect()
            })
            .unwrap_or_default()
    }

    // ------------------------------------------------------------------ apply

    /// Apply one sequenced command; its events are appended to `out`.
    pub fn apply(&mut self, seq: u64, ts_ms: u64, cmd: &Command, out: &mut Vec<Event>) {
        assert!(
            seq > self.last_seq,
            "commands must be applied in sequence order"
        );
        self.last_seq = seq;
        // Time never goes backwards inside the engine, whatever the host clock did.
        let ts = ts_ms.max(self.last_ts_ms);
        self.last_ts_ms = ts;
        let start = out.len();
        let res = self.dispatch(ts, cmd, out);
        if let Err(reason) = res {
            debug_assert_eq!(out.len(), start, "a rejected command emitted events");
            out.truncate(start);
            out.push(Event::Rejected { reason });
        }
        // Risk events come last, also after a refusal they caused.
        if self.risk.has_pending() {
            self.raise_pending_risk(ts, out);
        }
    }

    fn dispatch(&mut self, ts: u64, cmd: &Command, out: &mut Vec<Event>) -> R<()> {
        match cmd {
            Command::PlaceOrder(o) => self.place(o, ts, out),
            Command::CancelOrder { user, pair, target } => {
                let idx = self.find_open(*user, *pair, target)?;
                self.remove_open(idx, OrderStatus::Canceled, out);
                Ok(())
            }
            Command::CancelReplace { target, mode, new } => {
                self.cancel_replace(target, *mode, new, ts, out)
            }
            Command::AmendQty {
                user,
                pair,
                target,
                new_qty,
            } => self.amend(*user, *pair, target, *new_qty, out),
            Command::CancelAll { user, pair } => self.cancel_all(*user, *pair, out),
            Command::Deposit {
                user,
                asset,
                amount,
                tx_hash,
                confirmations,
                ..
            } => self.deposit(*user, *asset, *amount, tx_hash, *confirmations, ts, out),
            Command::RequestWithdrawal {
                user,
                asset,
                amount,
                address,
            } => self.request_withdrawal(*user, *asset, *amount, address, ts, out),
            Command::CompleteWithdrawal {
                withdrawal,
                tx_hash,
                ..
            } => self.complete_withdrawal(*withdrawal, tx_hash, ts, out),
            Command::RejectWithdrawal { withdrawal, .. } => {
                self.reject_withdrawal(*withdrawal, ts, out)
            }
            Command::Adjust {
                user,
                asset,
                amount,
                credit,
                reason,
                ..
            } => self.adjust(*user, *asset, *amount, *credit, reason, out),
            Command::AddAsset { spec, .. } => self.add_asset(spec, out),
            Command::UpdateAsset { asset, spec, .. } => self.update_asset(*asset, spec, out),
            Command::AddPair { spec, .. } => self.add_pair(spec, out),
            Command::UpdatePair { pair, spec, .. } => self.update_pair(*pair, spec, out),
            Command::SetPairStatus { pair, status, .. } => {
                let p = self.pair_mut(*pair)?;
                p.pair.spec.status = *status;
                out.push(Event::PairUpdated(Box::new(p.pair.clone())));
                Ok(())
            }
            Command::SetFeeAccount { user, .. } => {
                self.user_ref(*user)?;
                self.fee_account = *user;
                out.push(Event::FeeAccountSet { user: *user });
                Ok(())
            }
            Command::SetLimits { limits: l, .. } => {
                if l.max_open_orders_per_user == 0 || l.max_open_orders_total == 0 {
                    return Err(RejectReason::InvalidAmount);
                }
                self.limits = *l;
                out.push(Event::LimitsSet(*l));
                Ok(())
            }
            Command::CreateUser {
                username,
                email,
                password_hash,
                roles,
            } => self.create_user(username, email, password_hash, *roles, ts, out),
            Command::SetUserStatus {
                user,
                status,
                cancel_orders,
                ..
            } => {
                let u = self.user_mut(*user)?;
                u.status = *status;
                out.push(Event::UserStatusChanged {
                    user: *user,
                    status: *status,
                });
                if *cancel_orders && *status == UserStatus::Suspended {
                    self.cancel_everywhere(*user, out);
                }
                Ok(())
            }
            Command::SetUserRoles { user, roles, .. } => {
                if *roles & !roles::ALL != 0 {
                    return Err(RejectReason::InvalidOrderParams);
                }
                let u = self.user_mut(*user)?;
                u.roles = *roles;
                out.push(Event::UserRolesChanged {
                    user: *user,
                    roles: *roles,
                });
                Ok(())
            }
            Command::SetKycLevel { user, level, .. } => {
                if *level > 3 {
                    return Err(RejectReason::InvalidKycLevel);
                }
                let u = self.user_mut(*user)?;
                u.kyc_level = *level;
                out.push(Event::KycLevelSet {
                    user: *user,
                    level: *level,
                });
                Ok(())
            }
            Command::CreateApiKey {
                user,
                api_key,
                label,
                permissions,
                kind,
                secret,
            } => self.create_api_key(*user, api_key, label, *permissions, *kind, secret, ts, out),
            Command::RevokeApiKey { user, api_key } => self.revoke_api_key(*user, api_key, out),
            Command::RecordLogin { user, success } => self.record_login(*user, *success, ts, out),
            Command::SubmitKyc {
                user,
                level,
                document_type,
                document_number,
                data,
            } => self.submit_kyc(
                *user,
                *level,
                *document_type,
                document_number,
                data,
                ts,
                out,
            ),
            Command::ReviewKyc {
                kyc,
                reviewer,
                approve,
                notes,
            } => self.review_kyc(*kyc, *reviewer, *approve, notes, ts, out),
            Command::SetNotificationWebhook { user, url } => {
                self.set_notification_webhook(*user, url, out)
            }
            Command::MarkNotificationsRead { user, ids } => {
                self.mark_notifications_read(*user, ids, ts, out)
            }
            Command::CreateRiskRule {
                by,
                name,
                kind,
                parameters,
                level,
                action,
                enabled,
                description,
            } => self.create_risk_rule(
                *by,
                name,
                *kind,
                parameters,
                *level,
                *action,
                *enabled,
                description,
                ts,
                out,
            ),
            Command::UpdateRiskRule { by, rule, changes } => {
                self.update_risk_rule(*by, *rule, changes, ts, out)
            }
            Command::DeleteRiskRule { by, rule } => self.delete_risk_rule(*by, *rule, out),
            Command::SetRiskEventStatus {
                by,
                event,
                status,
                note,
            } => self.set_risk_event_status(*by, *event, *status, note, ts, out),
            Command::GrantRole { user, role, .. } => self.grant_role(*user, *role, out),
            Command::RevokeRole { user, role, .. } => self.revoke_role(*user, *role, out),
            Command::RunSettlement { date, requested_by } => {
                self.run_settlement(*date, *requested_by, ts, out)
            }
            Command::SetNotificationTemplate {
                by,
                name,
                subject,
                content,
                active,
            } => self.set_notification_template(*by, name, subject, content, *active, ts, out),
        }
    }

    // ---------------------------------------------------------- notifications

    /// Stateless: checks and echoes (see `Command::SetNotificationWebhook`).
    fn set_notification_webhook(&mut self, user: UserId, url: &str, out: &mut Vec<Event>) -> R<()> {
        self.registered_user(user)?;
        if !crate::command::valid_webhook_shape(url) {
            return Err(RejectReason::InvalidNotificationRequest);
        }
        out.push(Event::NotificationWebhookSet {
            user,
            url: url.to_owned(),
        });
        Ok(())
    }

    /// Stateless: checks and echoes (see `Command::MarkNotificationsRead`).
    fn mark_notifications_read(
        &mut self,
        user: UserId,
        ids: &[u64],
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        self.registered_user(user)?;
        if ids.is_empty() || ids.len() > crate::command::NOTIFY_MAX_READ_IDS {
            return Err(RejectReason::InvalidNotificationRequest);
        }
        out.push(Event::NotificationsRead {
            user,
            ids: ids.to_vec(),
            read_ms: ts,
        });
        Ok(())
    }

    // ------------------------------------------------------------- lookups

    fn user_ref(&self, user: UserId) -> R<&User> {
        self.users
            .get(user.0 as usize)
            .ok_or(RejectReason::UnknownUser)
    }
    fn user_mut(&mut self, user: UserId) -> R<&mut User> {
        self.users
            .get_mut(user.0 as usize)
            .ok_or(RejectReason::UnknownUser)
    }
    fn asset_ref(&self, asset: AssetId) -> R<&Asset> {
        self.asset(asset).ok_or(RejectReason::UnknownAsset)
    }
    fn pair_ref(&self, pair: PairId) -> R<&PairState> {
        self.pair(pair).ok_or(RejectReason::UnknownPair)
    }
    fn pair_mut(&mut self, pair: PairId) -> R<&mut PairState> {
        (pair.0 as usize)
            .checked_sub(1)
            .and_then(|i| self.pairs.get_mut(i))
            .ok_or(RejectReason::UnknownPair)
    }

    /// Slab index of an open order owned by `user` on `pair`.
    fn find_open(&self, user: UserId, pair: PairId, target: &OrderRef) -> R<u32> {
        let id = match target {
            OrderRef::Id(id) => *id,
            OrderRef::Client(cid) => *self
                .client_index
                .get(&(user, *cid))
                .ok_or(RejectReason::UnknownOrder)?,
        };
        let idx = *self
            .order_index
            .get(&id.0)
            .ok_or(RejectReason::UnknownOrder)?;
        let o = self.slab.order(idx);
        if o.user != user || o.pair != pair {
            return Err(RejectReason::UnknownOrder);
        }
        Ok(idx)
    }

    // ---------------------------------------------------------- configuration

    fn add_asset(&mut self, spec: &AssetSpec, out: &mut Vec<Event>) -> R<()> {
        if self.asset_by_symbol.contains_key(&spec.symbol) {
            return Err(RejectReason::AssetExists);
        }
        if !valid_symbol(&spec.symbol) || spec.decimals > 18 {
            return Err(RejectReason::InvalidAssetConfig);
        }
        let id = AssetId(self.assets.len() as u32 + 1);
        let asset = Asset {
            id,
            spec: spec.clone(),
        };
        self.assets.push(asset.clone());
        self.flows.push(AssetFlows::default());
        self.asset_by_symbol.insert(spec.symbol.clone(), id);
        out.push(Event::AssetListed(asset));
        Ok(())
    }

    fn update_asset(&mut self, id: AssetId, spec: &AssetSpec, out: &mut Vec<Event>) -> R<()> {
        let cur = self.asset_ref(id)?;
        if cur.spec.symbol != spec.symbol || cur.spec.decimals != spec.decimals {
            return Err(RejectReason::InvalidAssetConfig);
        }
        let i = id.0 as usize - 1;
        self.assets[i].spec = spec.clone();
        out.push(Event::AssetUpdated(self.assets[i].clone()));
        Ok(())
    }

    fn check_pair_spec(&self, spec: &PairSpec) -> R<u8> {
        let base = self.asset_ref(spec.base)?;
        self.asset_ref(spec.quote)?;
        let ok = valid_symbol(&spec.symbol)
            && spec.base != spec.quote
            && spec.tick_units > 0
            && spec.step_units > 0
            && spec.min_qty_units > 0
            && spec.min_qty_units.is_multiple_of(spec.step_units)
            && spec.max_qty_units >= spec.min_qty_units
            && spec.market_max_qty_units >= spec.min_qty_units
            && spec.min_price_ticks > 0
            && spec.max_price_ticks >= spec.min_price_ticks
            && (spec.max_notional_units == 0 || spec.max_notional_units >= spec.min_notional_units)
            && spec.maker_fee_e8 <= FEE_RATE_SCALE
            && spec.taker_fee_e8 <= FEE_RATE_SCALE
            && spec.price_band_pct <= 10_000;
        if !ok {
            return Err(RejectReason::InvalidPairConfig);
        }
        Ok(base.spec.decimals)
    }

    fn add_pair(&mut self, spec: &PairSpec, out: &mut Vec<Event>) -> R<()> {
        if self.pair_by_symbol.contains_key(&spec.symbol) {
            return Err(RejectReason::PairExists);
        }
        let base_decimals = self.check_pair_spec(spec)?;
        let id = PairId(self.pairs.len() as u32 + 1);
        let pair = Pair::new(id, spec.clone(), base_decimals);
        self.pairs.push(PairState::new(pair.clone()));
        self.pair_by_symbol.insert(spec.symbol.clone(), id);
        out.push(Event::PairListed(Box::new(pair)));
        Ok(())
    }

    fn update_pair(&mut self, id: PairId, spec: &PairSpec, out: &mut Vec<Event>) -> R<()> {
        let cur = &self.pair_ref(id)?.pair.spec;
        if cur.symbol != spec.symbol
            || cur.base != spec.base
            || cur.quote != spec.quote
            || cur.tick_units != spec.tick_units
            || cur.step_units != spec.step_units
        {
            return Err(RejectReason::InvalidPairConfig);
        }
        self.check_pair_spec(spec)?;
        let p = self.pair_mut(id)?;
        p.pair.spec = spec.clone();
        out.push(Event::PairUpdated(Box::new(p.pair.clone())));
        Ok(())
    }

    // --------------------------------------------------------------- identity

    fn create_user(
        &mut self,
        username: &str,
        email: &str,
        password_hash: &str,
        roles: u32,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        if !valid_username(username) || email.len() > 254 || password_hash.len() > 512 {
            return Err(RejectReason::InvalidUsername);
        }
        if roles & !roles::ALL != 0 {
            return Err(RejectReason::InvalidOrderParams);
        }
        let key = username.to_ascii_lowercase();
        if self.username_index.contains_key(&key) {
            return Err(RejectReason::UsernameTaken);
        }
        let email_key = email.to_ascii_lowercase();
        if !email.is_empty() && self.email_index.contains_key(&email_key) {
            return Err(RejectReason::EmailTaken);
        }
        let id = UserId(self.next_user_id);
        self.next_user_id += 1;
        debug_assert_eq!(id.0 as usize, self.users.len());
        self.users.push(User {
            id,
            username: username.to_string(),
            email: email.to_string(),
            password_hash: password_hash.to_string(),
            status: UserStatus::Active,
            roles,
            kyc_level: 0,
            created_ms: ts,
            balances: Vec::new(),
            open_orders: 0,
            withdraw_usage: Vec::new(),
            api_keys: Vec::new(),
            failed_logins: 0,
            locked_until_ms: 0,
        });
        self.username_index.insert(key, id);
        if !email.is_empty() {
            self.email_index.insert(email_key, id);
        }
        out.push(Event::UserCreated {
            user: id,
            username: username.to_string(),
            email: email.to_string(),
            password_hash: password_hash.to_string(),
            roles,
        });
        Ok(())
    }

    /// A registered user (not the exchange's own account 0).
    fn registered_user(&self, user: UserId) -> R<&User> {
        if user.0 == 0 {
            return Err(RejectReason::UnknownUser);
        }
        self.user_ref(user)
    }

    #[allow(clippy::too_many_arguments)]
    fn create_api_key(
        &mut self,
        user: UserId,
        api_key: &str,
        label: &str,
        permissions: u8,
        kind: ApiKeyKind,
        secret: &[u8],
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        let u = self.registered_user(user)?;
        if u.status != UserStatus::Active {
            return Err(RejectReason::UserSuspended);
        }
        if !ApiKey::valid_shape(api_key, label, permissions, kind, secret) {
            return Err(RejectReason::InvalidApiKey);
        }
        if self.api_key_index.contains_key(api_key) {
            return Err(RejectReason::ApiKeyExists);
        }
        if u.api_keys.len() >= self.limits.max_api_keys_per_user as usize {
            return Err(RejectReason::TooManyApiKeys);
        }
        let id = self.next_api_key_id;
        self.next_api_key_id += 1;
        self.users[user.0 as usize].api_keys.push(ApiKey {
            id,
            api_key: api_key.to_string(),
            label: label.to_string(),
            permissions,
            kind,
            secret: secret.to_vec(),
            created_ms: ts,
        });
        self.api_key_index.insert(api_key.to_string(), user);
        out.push(Event::ApiKeyCreated {
            user,
            id,
            api_key: api_key.to_string(),
            label: label.to_string(),
            permissions,
            kind,
            secret: secret.to_vec(),
            created_ms: ts,
        });
        Ok(())
    }

    fn revoke_api_key(&mut self, user: UserId, api_key: &str, out: &mut Vec<Event>) -> R<()> {
        let u = self.registered_user(user)?;
        let i = u
            .api_keys
            .iter()
            .position(|k| k.api_key == api_key)
            .ok_or(RejectReason::UnknownApiKey)?;
        let k = self.users[user.0 as usize].api_keys.remove(i);
        self.api_key_index.remove(api_key);
        out.push(Event::ApiKeyRevoked {
            user,
            id: k.id,
            api_key: k.api_key,
        });
        Ok(())
    }

    fn record_login(
        &mut self,
        user: UserId,
        success: bool,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        let u = self.registered_user(user)?;
        if ts < u.locked_until_ms {
            return Err(RejectReason::UserLocked);
        }
        let limits = self.limits;
        let u = &mut self.users[user.0 as usize];
        if success || u.locked_until_ms != 0 {
            // A success, or the first attempt after a lock ended, starts
            // counting afresh.
            u.failed_logins = 0;
            u.locked_until_ms = 0;
        }
        if !success {
            u.failed_logins = u.failed_logins.saturating_add(1);
            if limits.max_failed_logins > 0 && u.failed_logins >= limits.max_failed_logins {
                // Never 0 (which means "not locked"), even at ts 0.
                u.locked_until_ms = ts.saturating_add(limits.lockout_ms).max(1);
            }
        }
        let (failed_logins, locked_until_ms) = (u.failed_logins, u.locked_until_ms);
        out.push(Event::LoginRecorded {
            user,
            success,
            failed_logins,
            locked_until_ms,
        });
        if !success && self.risk_watches_logins() {
            self.risk_note_login_failure(user, failed_logins, locked_until_ms);
        }
        Ok(())
    }

    // -------------------------------------------------------------------- KYC

    #[allow(clippy::too_many_arguments)]
    fn submit_kyc(
        &mut self,
        user: UserId,
        level: u8,
        document_type: KycDocumentType,
        document_number: &[u8],
        data: &str,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        if self.registered_user(user)?.status != UserStatus::Active {
            return Err(RejectReason::UserSuspended);
        }
        if !KycRecord::valid_level(level) {
            return Err(RejectReason::InvalidKycLevel);
        }
        if !KycRecord::valid_submission(document_number, data) {
            return Err(RejectReason::InvalidKycSubmission);
        }
        if self.kyc_pending.contains_key(&user) {
            return Err(RejectReason::KycAlreadyPending);
        }
        let id = self.next_kyc_id;
        self.next_kyc_id += 1;
        let rec = KycRecord {
            id,
            user,
            level,
            document_type,
            document_number: document_number.to_vec(),
            data: data.to_string(),
            status: KycStatus::Pending,
            reviewer: None,
            notes: String::new(),
            created_ms: ts,
            reviewed_ms: 0,
        };
        self.kyc.insert(id, rec.clone());
        self.kyc_pending.insert(user, id);
        out.push(Event::KycSubmitted(Box::new(rec)));
        Ok(())
    }

    fn review_kyc(
        &mut self,
        id: u64,
        reviewer: UserId,
        approve: bool,
        notes: &str,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        if !KycRecord::valid_review(approve, notes) {
            return Err(RejectReason::InvalidKycReview);
        }
        if self.registered_user(reviewer)?.status != UserStatus::Active {
            return Err(RejectReason::UserSuspended);
        }
        let rec = self.kyc.get(&id).ok_or(RejectReason::UnknownKycRecord)?;
        if rec.status != KycStatus::Pending {
            return Err(RejectReason::KycNotPending);
        }
        if rec.user == reviewer {
            return Err(RejectReason::KycSelfReview);
        }
        // Checks done: mutate.
        let rec = self.kyc.get_mut(&id).expect("checked above");
        rec.status = if approve {
            KycStatus::Approved
        } else {
            KycStatus::Rejected
        };
        rec.reviewer = Some(reviewer);
        rec.notes = notes.to_string();
        rec.reviewed_ms = ts;
        let (user, level, status) = (rec.user, rec.level, rec.status);
        self.kyc_pending.remove(&user);
        out.push(Event::KycReviewed {
            kyc: id,
            user,
            reviewer,
            status,
            level,
            notes: notes.to_string(),
            reviewed_ms: ts,
        });
        if approve {
            self.users[user.0 as usize].kyc_level = level;
            out.push(Event::KycLevelSet { user, level });
        }
        Ok(())
    }

    // ----------------------------------------------------------------- wallet

    /// Refuse a credit that would push the asset's total supply past u64, so
    /// no single account can ever overflow.
    fn check_supply(&self, asset: AssetId, add: u64) -> R<()> {
        let f = self.flows[asset.0 as usize - 1];
        if f.expected_supply() + add as u128 > u64::MAX as u128 {
            return Err(RejectReason::Overflow);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn deposit(
        &mut self,
        user: UserId,
        asset: AssetId,
        amount: u64,
        tx_hash: &str,
        confirmations: u32,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        self.user_ref(user)?;
        let required = self.asset_ref(asset)?.spec.confirmations;
        if amount == 0 {
            return Err(RejectReason::InvalidAmount);
        }
        if tx_hash.is_empty() || tx_hash.len() > 128 {
            return Err(RejectReason::InvalidOrderParams);
        }
        let key = (asset, tx_hash.to_string());
        let credit_now;
        if let Some(d) = self.deposits.get(&key) {
            if d.user != user || d.amount != amount {
                return Err(RejectReason::DepositUserMismatch);
            }
            credit_now = d.status == DepositStatus::Pending && confirmations >= d.required;
        } else {
            credit_now = confirmations >= required;
        }
        if credit_now {
            self.check_supply(asset, amount)?;
        }
        // Checks done: mutate.
        let next_id = &mut self.next_deposit_id;
        let d = self.deposits.entry(key).or_insert_with(|| {
            let id = *next_id;
            *next_id += 1;
            Deposit {
                id,
                user,
                asset,
                amount,
                tx_hash: tx_hash.to_string(),
                confirmations: 0,
                required,
                status: DepositStatus::Pending,
                created_ms: ts,
                updated_ms: ts,
            }
        });
        if confirmations > d.confirmations {
            d.confirmations = confirmations;
            d.updated_ms = ts;
        }
        if credit_now {
            d.status = DepositStatus::Credited;
            d.updated_ms = ts;
            let id = d.id;
            change_balance(
                &mut self.users,
                out,
                user,
                asset,
                BalanceCause::Deposit(id),
                |b| b.available += amount,
            );
            self.flows[asset.0 as usize - 1].deposited += amount as u128;
        }
        let d = self.deposits[&(asset, tx_hash.to_string())].clone();
        out.push(Event::DepositUpdated(d));
        Ok(())
    }

    fn request_withdrawal(
        &mut self,
        user: UserId,
        asset: AssetId,
        amount: u64,
        address: &str,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        let u = self.user_ref(user)?;
        if u.status != UserStatus::Active {
            return Err(RejectReason::UserSuspended);
        }
        let a = self.asset_ref(asset)?;
        if !a.spec.active {
            return Err(RejectReason::AssetInactive);
        }
        if address.is_empty() || address.len() > 128 || amount == 0 {
            return Err(RejectReason::InvalidAmount);
        }
        if u.kyc_level == 0 {
            return Err(RejectReason::KycRequired);
        }
        if amount < a.spec.min_withdraw_units {
            return Err(RejectReason::BelowMinWithdraw);
        }
        let fee = a.spec.withdraw_fee_units;
        let total = amount.checked_add(fee).ok_or(RejectReason::Overflow)?;
        let day = ts / 86_400_000;
        let used = u
            .withdraw_usage
            .iter()
            .find(|(aid, d, _)| *aid == asset && *d == day)
            .map(|x| x.2)
            .unwrap_or(0);
        let limit = a.spec.daily_withdraw_limit_units;
        if limit > 0 {
            let limit = if u.kyc_level >= 2 {
                limit.saturating_mul(10)
            } else {
                limit
            };
            if used.saturating_add(amount) > limit {
                return Err(RejectReason::DailyWithdrawLimit);
            }
        }
        if balance_of(&self.users, user, asset).available < total {
            return Err(RejectReason::InsufficientBalance);
        }
        self.risk_check_withdrawal(user, asset, amount)?;
        let id = self.next_withdrawal_id;
        self.next_withdrawal_id += 1;
        let u = &mut self.users[user.0 as usize];
        u.withdraw_usage.retain(|(_, d, _)| *d == day);
        match u
            .withdraw_usage
            .iter_mut()
            .find(|(aid, _, _)| *aid == asset)
        {
            Some(e) => e.2 += amount,
            None => u.withdraw_usage.push((asset, day, amount)),
        }
        change_balance(
            &mut self.users,
            out,
            user,
            asset,
            BalanceCause::WithdrawalFreeze(id),
            |b| {
                b.available -= total;
                b.frozen += total;
            },
        );
        let w = Withdrawal {
            id,
            user,
            asset,
            amount,
            fee,
            address: address.to_string(),
            tx_hash: String::new(),
            status: WithdrawalStatus::Pending,
            created_ms: ts,
            updated_ms: ts,
        };
        self.withdrawals.insert(id, w.clone());
        out.push(Event::WithdrawalUpdated(w));
        Ok(())
    }

    fn complete_withdrawal(
        &mut self,
        id: u64,
        tx_hash: &str,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        let w = self
            .withdrawals
            .get(&id)
            .ok_or(RejectReason::UnknownWithdrawal)?;
        if w.status != WithdrawalStatus::Pending {
            return Err(RejectReason::WithdrawalNotPending);
        }
        if tx_hash.is_empty() || tx_hash.len() > 128 {
            return Err(RejectReason::InvalidOrderParams);
        }
        let (user, asset, amount, fee) = (w.user, w.asset, w.amount, w.fee);
        change_balance(
            &mut self.users,
            out,
            user,
            asset,
            BalanceCause::WithdrawalSent(id),
            |b| b.frozen -= amount + fee,
        );
        if fee > 0 {
            let fee_account = self.fee_account;
            change_balance(
                &mut self.users,
                out,
                fee_account,
                asset,
                BalanceCause::WithdrawalFee(id),
                |b| b.available += fee,
            );
        }
        self.flows[asset.0 as usize - 1].withdrawn += amount as u128;
        let w = self.withdrawals.get_mut(&id).expect("checked above");
        w.status = WithdrawalStatus::Sent;
        w.tx_hash = tx_hash.to_string();
        w.updated_ms = ts;
        out.push(Event::WithdrawalUpdated(w.clone()));
        Ok(())
    }

    fn reject_withdrawal(&mut self, id: u64, ts: u64, out: &mut Vec<Event>) -> R<()> {
        let w = self
            .withdrawals
            .get(&id)
            .ok_or(RejectReason::UnknownWithdrawal)?;
        if w.status != WithdrawalStatus::Pending {
            return Err(RejectReason::WithdrawalNotPending);
        }
        let (user, asset, total, created) = (w.user, w.asset, w.amount + w.fee, w.created_ms);
        let amount = w.amount;
        release_frozen(
            &mut self.users,
            out,
            user,
            asset,
            total,
            BalanceCause::WithdrawalRelease(id),
        );
        // Give back the day's allowance if still the same UTC day.
        let day = created / 86_400_000;
        if let Some(e) = self.users[user.0 as usize]
            .withdraw_usage
            .iter_mut()
            .find(|(a, d, _)| *a == asset && *d == day)
        {
            e.2 = e.2.saturating_sub(amount);
        }
        let w = self.withdrawals.get_mut(&id).expect("checked above");
        w.status = WithdrawalStatus::Rejected;
        w.updated_ms = ts;
        out.push(Event::WithdrawalUpdated(w.clone()));
        Ok(())
    }

    fn adjust(
        &mut self,
        user: UserId,
        asset: AssetId,
        amount: u64,
        credit: bool,
        reason: &str,
        out: &mut Vec<Event>,
    ) -> R<()> {
        self.user_ref(user)?;
        self.asset_ref(asset)?;
        if amount == 0 || reason.is_empty() || reason.len() > 1024 {
            return Err(RejectReason::InvalidAmount);
        }
        if credit {
            self.check_supply(asset, amount)?;
        } else if balance_of(&self.users, user, asset).available < amount {
            return Err(RejectReason::InsufficientBalance);
        }
        change_balance(
            &mut self.users,
            out,
            user,
            asset,
            BalanceCause::Adjustment,
            |b| {
                if credit {
                    b.available += amount
                } else {
                    b.available -= amount
                }
            },
        );
        let f = &mut self.flows[asset.0 as usize - 1];
        if credit {
            f.adjusted_in += amount as u128;
        } else {
            f.adjusted_out += amount as u128;
        }
        out.push(Event::Adjusted {
            user,
            asset,
            amount,
            credit,
            reason: reason.to_string(),
        });
        Ok(())
    }

    // ---------------------------------------------------------------- orders

    /// What an order with `rem` remaining must keep frozen, in its spend asset.
    fn required_freeze(pair: &Pair, o: &Order, rem: u64) -> Option<u64> {
        match o.side {
            Side::Sell => Some(rem),
            Side::Buy => match o.kind {
                OrderType::Limit
                | OrderType::LimitMaker
                | OrderType::StopLossLimit
                | OrderType::TakeProfitLimit => pair.notional(rem, o.price.0),
                OrderType::StopLoss | OrderType::TakeProfit => {
                    let n = pair.notional(rem, o.stop_price.0)? as u128;
                    let with_margin = n * (100 + pair.spec.price_band_pct as u128) / 100;
                    u64::try_from(with_margin).ok()
                }
                OrderType::Market => None,
            },
        }
    }

    /// Every check for a new order; returns the amount to freeze. Changes
    /// nothing. Order of checks: parameters -> filters -> pair status ->
    /// price band -> limits -> balance.
    fn check_new(&self, o: &NewOrder) -> R<u64> {
        let ps = self.pair_ref(o.pair)?;
        let u = self.user_ref(o.user)?;
        let pair = &ps.pair;
        let spec = &pair.spec;
        // Parameters.
        let has_price = o.kind.has_limit_price();
        if has_price != (o.price.0 > 0) {
            return Err(RejectReason::InvalidPrice);
        }
        if o.kind.is_stop() != (o.stop_price.0 > 0) {
            return Err(RejectReason::InvalidStopPrice);
        }
        if o.quote_qty > 0 && (o.kind != OrderType::Market || o.qty.0 > 0) {
            return Err(RejectReason::InvalidOrderParams);
        }
        if o.qty.0 == 0 && o.quote_qty == 0 {
            return Err(RejectReason::InvalidQuantity);
        }
        // Filters.
        for p in [o.price.0, o.stop_price.0] {
            if p > 0 && (p < spec.min_price_ticks || p > spec.max_price_ticks) {
                return Err(RejectReason::PriceFilter);
            }
        }
        let market_like = matches!(
            o.kind,
            OrderType::Market | OrderType::StopLoss | OrderType::TakeProfit
        );
        if o.qty.0 > 0 {
            let max = if market_like {
                spec.market_max_qty_units
            } else {
                spec.max_qty_units
            };
            if o.qty.0 < spec.min_qty_units
                || o.qty.0 > max
                || !o.qty.0.is_multiple_of(spec.step_units)
            {
                return Err(if market_like {
                    RejectReason::MarketLotSize
                } else {
                    RejectReason::LotSize
                });
            }
        }
        let ref_price = if has_price {
            o.price.0
        } else if o.stop_price.0 > 0 {
            o.stop_price.0
        } else {
            ps.last_price
        };
        let notional = if o.quote_qty > 0 {
            Some(o.quote_qty)
        } else if ref_price > 0 {
            Some(
                pair.notional(o.qty.0, ref_price)
                    .ok_or(RejectReason::Overflow)?,
            )
        } else {
            None
        };
        if let Some(n) = notional {
            if n < spec.min_notional_units {
                return Err(RejectReason::MinNotional);
            }
            if spec.max_notional_units > 0 && n > spec.max_notional_units {
                return Err(RejectReason::MaxNotional);
            }
        }
        // Pair and user status.
        match spec.status {
            PairStatus::Trading => {}
            PairStatus::CancelOnly => return Err(RejectReason::PairCancelOnly),
            PairStatus::Halt => return Err(RejectReason::PairNotTrading),
        }
        if u.status != UserStatus::Active {
            return Err(RejectReason::UserSuspended);
        }
        // Price band around the last trade price.
        let last = ps.last_price;
        if last > 0 && spec.price_band_pct > 0 {
            let band = last as u128 * spec.price_band_pct as u128;
            for p in [o.price.0, o.stop_price.0] {
                if p > 0 && (p as u128).abs_diff(last as u128) * 100 > band {
                    return Err(RejectReason::PriceBand);
                }
            }
        }
        if o.kind.is_stop() && last > 0 && stop_fires(o.side, o.kind, o.stop_price.0, last) {
            return Err(RejectReason::StopWouldTriggerImmediately);
        }
        if o.kind == OrderType::LimitMaker {
            let crosses = match o.side {
                Side::Buy => ps.asks.best_price().is_some_and(|a| a <= o.price.0),
                Side::Sell => ps.bids.best_price().is_some_and(|b| b >= o.price.0),
            };
            if crosses {
                return Err(RejectReason::WouldTakeAsMaker);
            }
        }
        // Limits.
        // LIMIT_MAKER always rests: `place` forces its TIF to GTC.
        let rests = o.tif == TimeInForce::Gtc && o.kind != OrderType::Market
            || o.kind == OrderType::LimitMaker
            || o.kind.is_stop();
        if rests {
            if u.open_orders >= self.limits.max_open_orders_per_user {
                return Err(RejectReason::MaxNumOrders);
            }
            if self.order_index.len() >= self.limits.max_open_orders_total as usize {
                return Err(RejectReason::MaxNumOrders);
            }
        }
        if !o.client_id.is_none() && self.client_index.contains_key(&(o.user, o.client_id)) {
            return Err(RejectReason::DuplicateClientOrderId);
        }
        // Funds.
        let spend = match o.side {
            Side::Buy => spec.quote,
            Side::Sell => spec.base,
        };
        let avail = balance_of(&self.users, o.user, spend).available;
        let freeze = if o.kind == OrderType::Market && (o.quote_qty > 0) == (o.side == Side::Buy) {
            // Market buy by quote: exactly the quote amount.
            // Market sell by quantity: exactly the quantity.
            if o.side == Side::Buy {
                o.quote_qty
            } else {
                o.qty.0
            }
        } else if o.kind == OrderType::Market {
            // Market buy by quantity / sell by quote: the whole available
            // balance is the budget; what is unused is released at the end.
            if avail == 0 {
                return Err(RejectReason::InsufficientBalance);
            }
            avail
        } else {
            let tmp = Order {
                id: OrderId(0),
                user: o.user,
                pair: o.pair,
                side: o.side,
                kind: o.kind,
                tif: o.tif,
                stp: o.stp,
                status: OrderStatus::New,
                price: o.price,
                stop_price: o.stop_price,
                qty: o.qty,
                filled: Qty(0),
                quote_qty: 0,
                cum_quote: 0,
                frozen: 0,
                client_id: o.client_id,
                created_ms: 0,
                working_ms: 0,
                triggered: false,
            };
            Self::required_freeze(pair, &tmp, o.qty.0).ok_or(RejectReason::Overflow)?
        };
        if freeze > avail {
            return Err(RejectReason::InsufficientBalance);
        }
        Ok(freeze)
    }

    fn place(&mut self, o: &NewOrder, ts: u64, out: &mut Vec<Event>) -> R<()> {
        let freeze = self.check_new(o)?;
        self.risk_check_order(o)?;
        let ps = &mut self.pairs[o.pair.0 as usize - 1];
        ps.swept_lo = u64::MAX;
        ps.swept_hi = 0;
        let id = OrderId(self.next_order_id);
        self.next_order_id += 1;
        let mut order = Order {
            id,
            user: o.user,
            pair: o.pair,
            side: o.side,
            kind: o.kind,
            tif: if o.kind == OrderType::LimitMaker || o.kind == OrderType::Market {
                TimeInForce::Gtc
            } else {
                o.tif
            },
            stp: o.stp,
            status: OrderStatus::New,
            price: o.price,
            stop_price: o.stop_price,
            qty: o.qty,
            filled: Qty(0),
            quote_qty: o.quote_qty,
            cum_quote: 0,
            frozen: freeze,
            client_id: o.client_id,
            created_ms: ts,
            working_ms: if o.kind.is_stop() { 0 } else { ts },
            triggered: false,
        };
        let pair = self.pairs[o.pair.0 as usize - 1]
            .pair
            .spend_asset_for(o.side);
        change_balance(
            &mut self.users,
            out,
            o.user,
            pair,
            BalanceCause::OrderFreeze(id),
            |b| {
                b.available -= freeze;
                b.frozen += freeze;
            },
        );
        out.push(Event::OrderAccepted(AcceptedOrder::from_order(&order)));
        if o.kind.is_stop() {
            self.insert_open(order);
            let ps = &mut self.pairs[o.pair.0 as usize - 1];
            let key = (o.stop_price.0, id.0);
            if fires_upward(o.side, o.kind) {
                ps.stops_up.insert(key);
            } else {
                ps.stops_down.insert(key);
            }
            return Ok(());
        }
        let traded = self.work(&mut order, out);
        if traded {
            self.run_stops(o.pair, ts, out);
        }
        Ok(())
    }

    /// Match a working order as taker and then rest or finish it. Returns
    /// whether it traded.
    fn work(&mut self, t: &mut Order, out: &mut Vec<Event>) -> bool {
        if t.tif == TimeInForce::Fok && !self.fok_fillable(t) {
            self.finish(t, OrderStatus::Expired, out);
            return false;
        }
        let before = t.filled.0;
        let before_quote = t.cum_quote;
        let end = self.match_taker(t, out);
        let traded = t.filled.0 != before || t.cum_quote != before_quote;
        let by_quote = t.quote_qty > 0;
        let done_qty = !by_quote && t.filled.0 == t.qty.0;
        if done_qty {
            self.finish(t, OrderStatus::Filled, out);
        } else if end == TakerEnd::StpExpired {
            self.finish(t, OrderStatus::ExpiredInMatch, out);
        } else if by_quote {
            // Filled once the quote amount is used up (to within a step),
            // even if that took the last liquidity in the book.
            let used_up = end == TakerEnd::Budget || t.cum_quote == t.quote_qty;
            let st = if used_up && t.filled.0 > 0 {
                OrderStatus::Filled
            } else {
                OrderStatus::Expired
            };
            self.finish(t, st, out);
        } else if t.kind.has_limit_price() && t.tif == TimeInForce::Gtc {
            t.status = if t.filled.0 > 0 {
                OrderStatus::PartiallyFilled
            } else {
                OrderStatus::New
            };
            let idx = self.insert_open(*t);
            let ps = &mut self.pairs[t.pair.0 as usize - 1];
            match t.side {
                Side::Buy => ps.bids.push(&mut self.slab, idx),
                Side::Sell => ps.asks.push(&mut self.slab, idx),
            }
        } else {
            self.finish(t, OrderStatus::Expired, out);
        }
        traded
    }

    /// Register an order that is now open (resting or waiting stop).
    fn insert_open(&mut self, o: Order) -> u32 {
        let idx = self.slab.alloc(o);
        self.order_index.insert(o.id.0, idx);
        if !o.client_id.is_none() {
            self.client_index.insert((o.user, o.client_id), o.id);
        }
        self.users[o.user.0 as usize].open_orders += 1;
        idx
    }

    /// Unregister an open order that left the book or stop set.
    fn forget_open(&mut self, idx: u32) -> Order {
        let o = *self.slab.order(idx);
        self.order_index.remove(&o.id.0);
        if !o.client_id.is_none() {
            self.client_index.remove(&(o.user, o.client_id));
        }
        self.users[o.user.0 as usize].open_orders -= 1;
        self.slab.free(idx);
        o
    }

    /// End an order that is not (or no longer) in the book: release what is
    /// still frozen and report its final status.
    fn finish(&mut self, o: &mut Order, status: OrderStatus, out: &mut Vec<Event>) {
        let spend = self.pairs[o.pair.0 as usize - 1]
            .pair
            .spend_asset_for(o.side);
        if o.frozen > 0 {
            let amt = o.frozen;
            release_frozen(
                &mut self.users,
                out,
                o.user,
                spend,
                amt,
                BalanceCause::OrderRelease(o.id),
            );
            o.frozen = 0;
        }
        o.status = status;
        out.push(Event::OrderDone {
            order: o.id,
            user: o.user,
            pair: o.pair,
            status,
            filled: o.filled,
            cum_quote: o.cum_quote,
        });
    }

    /// Remove an open order (resting or waiting stop) and end it.
    fn remove_open(&mut self, idx: u32, status: OrderStatus, out: &mut Vec<Event>) {
        let o = *self.slab.order(idx);
        let ps = &mut self.pairs[o.pair.0 as usize - 1];
        if o.kind.is_stop() && !o.triggered {
            let key = (o.stop_price.0, o.id.0);
            if !ps.stops_up.remove(&key) {
                ps.stops_down.remove(&key);
            }
        } else {
            let rem = o.remaining();
            match o.side {
                Side::Buy => ps.bids.unlink(&mut self.slab, idx, rem),
                Side::Sell => ps.asks.unlink(&mut self.slab, idx, rem),
            }
        }
        let mut o = self.forget_open(idx);
        self.finish(&mut o, status, out);
    }

    /// FOK: can the whole quantity fill right now at or within the limit,
    /// given self-trade prevention?
    fn fok_fillable(&self, t: &Order) -> bool {
        let ps = &self.pairs[t.pair.0 as usize - 1];
        let opp = ps.side(t.side.opposite());
        let need = t.remaining();
        let limit = t.price.0;
        let crosses = |p: u64| match t.side {
            Side::Buy => p <= limit,
            Side::Sell => p >= limit,
        };
        let mut total = 0u64;
        for l in opp.iter_best_first() {
            if !crosses(l.price) {
                break;
            }
            total = total.saturating_add(l.total);
            if total >= need {
                break;
            }
        }
        if total < need {
            return false;
        }
        if t.stp == StpMode::None {
            return true;
        }
        let mut sum = 0u64;
        for l in opp.iter_best_first() {
            if !crosses(l.price) {
                return false;
            }
            for i in opp.level_nodes(&self.slab, l) {
                let m = self.slab.order(i);
                if m.user == t.user {
                    if t.stp == StpMode::ExpireMaker {
                        continue;
                    }
                    return false;
                }
                sum += m.remaining();
                if sum >= need {
                    return true;
                }
            }
        }
        false
    }

    /// The matching loop: take liquidity for `t` in strict price-time order.
    fn match_taker(&mut self, t: &mut Order, out: &mut Vec<Event>) -> TakerEnd {
        let pi = t.pair.0 as usize - 1;
        let fee_account = self.fee_account;
        let Engine {
            pairs,
            slab,
            users,
            order_index,
            client_index,
            next_trade_id,
            risk,
            ..
        } = self;
        let PairState {
            pair,
            bids,
            asks,
            last_price,
            swept_lo,
            swept_hi,
            ..
        } = &mut pairs[pi];
        let opp = match t.side {
            Side::Buy => asks,
            Side::Sell => bids,
        };
        let limit = if t.kind.has_limit_price() {
            t.price.0
        } else {
            0
        };
        let (base, quote) = (pair.spec.base, pair.spec.quote);
        loop {
            let Some(level) = opp.levels.last() else {
                return TakerEnd::NoLiquidity;
            };
            let price = level.price;
            if limit > 0 {
                let crosses = match t.side {
                    Side::Buy => price <= limit,
                    Side::Sell => price >= limit,
                };
                if !crosses {
                    return TakerEnd::NoLiquidity;
                }
            }
            let mut idx = level.head;
            while idx != NIL {
                let next = slab.node(idx).next;
                let m = *slab.order(idx);
                // How much the taker can take from this maker.
                let want = if t.quote_qty > 0 {
                    match t.side {
                        Side::Buy => pair.affordable_qty(t.frozen, price),
                        Side::Sell => {
                            let left = t.quote_qty - t.cum_quote;
                            let q = pair.affordable_qty(left, price);
                            let f = t.frozen - t.frozen % pair.spec.step_units;
                            q.min(f)
                        }
                    }
                } else {
                    let rem = t.remaining();
                    if t.side == Side::Buy && limit == 0 {
                        rem.min(pair.affordable_qty(t.frozen, price))
                    } else {
                        rem
                    }
                };
                let m_rem = m.remaining();
                let q = want.min(m_rem);
                if q == 0 {
                    return if t.quote_qty == 0 && t.remaining() == 0 {
                        TakerEnd::Filled
                    } else if t.quote_qty > 0
                        && t.side == Side::Sell
                        && t.frozen < pair.spec.step_units
                        && pair.affordable_qty(t.quote_qty - t.cum_quote, price) > 0
                    {
                        // A sell by quote that ran out of base before its
                        // quote amount: like a buy running out of funds.
                        TakerEnd::OutOfFunds
                    } else {
                        TakerEnd::Budget
                    };
                }
                // Self-trade prevention (the taker's mode decides), only
                // when a trade would happen: a taker whose budget is spent
                // ends without touching its own orders.
                if m.user == t.user && t.stp != StpMode::None {
                    risk.note_stp(t.user, pair.id, t.id, m.id, t.stp);
                    if matches!(t.stp, StpMode::ExpireMaker | StpMode::ExpireBoth) {
                        let rem = m.remaining();
                        opp.unlink(slab, idx, rem);
                        order_index.remove(&m.id.0);
                        if !m.client_id.is_none() {
                            client_index.remove(&(m.user, m.client_id));
                        }
                        users[m.user.0 as usize].open_orders -= 1;
                        slab.free(idx);
                        let spend = if m.side == Side::Buy { quote } else { base };
                        if m.frozen > 0 {
                            let amt = m.frozen;
                            release_frozen(
                                users,
                                out,
                                m.user,
                                spend,
                                amt,
                                BalanceCause::OrderRelease(m.id),
                            );
                        }
                        out.push(Event::OrderDone {
                            order: m.id,
                            user: m.user,
                            pair: m.pair,
                            status: OrderStatus::ExpiredInMatch,
                            filled: m.filled,
                            cum_quote: m.cum_quote,
                        });
                    }
                    if matches!(t.stp, StpMode::ExpireTaker | StpMode::ExpireBoth) {
                        return TakerEnd::StpExpired;
                    }
                    idx = next;
                    continue;
                }
                let c = pair
                    .notional(q, price)
                    .expect("notional of a resting order fits u64");
                let trade_id = TradeId(*next_trade_id);
                *next_trade_id += 1;
                // Update both orders.
                let (maker_rate, taker_rate) = (pair.spec.maker_fee_e8, pair.spec.taker_fee_e8);
                t.filled.0 += q;
                t.cum_quote += c;
                let mo = slab.order_mut(idx);
                mo.filled.0 += q;
                mo.cum_quote += c;
                mo.status = OrderStatus::PartiallyFilled;
                let m_filled = mo.filled;
                // Funds: the buyer spends quote from frozen, the seller base.
                let (buyer_fee, seller_fee) = match t.side {
                    Side::Buy => (Pair::fee(q, taker_rate), Pair::fee(c, maker_rate)),
                    Side::Sell => (Pair::fee(q, maker_rate), Pair::fee(c, taker_rate)),
                };
                let (maker_fee, taker_fee) = match t.side {
                    Side::Buy => (seller_fee, buyer_fee),
                    Side::Sell => (buyer_fee, seller_fee),
                };
                out.push(Event::Trade(Trade {
                    id: trade_id,
                    pair: pair.id,
                    price: Price(price),
                    qty: Qty(q),
                    quote_qty: c,
                    maker_order: m.id,
                    taker_order: t.id,
                    maker_user: m.user,
                    taker_user: t.user,
                    taker_side: t.side,
                    maker_fee,
                    taker_fee,
                    maker_filled: m_filled,
                    taker_filled: t.filled,
                }));
                // Buyer's quote: spend c; a limit buy keeps exactly
                // notional(remaining, limit) frozen and releases the rest.
                let (buyer, buyer_release) = match t.side {
                    Side::Buy => {
                        let keep = if limit > 0 {
                            pair.notional(t.remaining(), limit).expect("fits")
                        } else {
                            t.frozen - c
                        };
                        let release = t.frozen - c - keep;
                        t.frozen = keep;
                        (t.user, release)
                    }
                    Side::Sell => {
                        let mo = slab.order_mut(idx);
                        let keep = pair.notional(mo.remaining(), mo.price.0).expect("fits");
                        let release = mo.frozen - c - keep;
                        mo.frozen = keep;
                        (m.user, release)
                    }
                };
                change_balance(
                    users,
                    out,
                    buyer,
                    quote,
                    BalanceCause::Trade(trade_id),
                    |b| {
                        b.frozen -= c + buyer_release;
                        b.available += buyer_release;
                    },
                );
                change_balance(
                    users,
                    out,
                    buyer,
                    base,
                    BalanceCause::Trade(trade_id),
                    |b| b.available += q - buyer_fee,
                );
                let seller = match t.side {
                    Side::Buy => {
                        slab.order_mut(idx).frozen -= q;
                        m.user
                    }
                    Side::Sell => {
                        t.frozen -= q;
                        t.user
                    }
                };
                change_balance(
                    users,
                    out,
                    seller,
                    base,
                    BalanceCause::Trade(trade_id),
                    |b| b.frozen -= q,
                );
                change_balance(
                    users,
                    out,
                    seller,
                    quote,
                    BalanceCause::Trade(trade_id),
                    |b| b.available += c - seller_fee,
                );
                if buyer_fee > 0 {
                    change_balance(
                        users,
                        out,
                        fee_account,
                        base,
                        BalanceCause::TradeFee(trade_id),
                        |b| b.available += buyer_fee,
                    );
                }
                if seller_fee > 0 {
                    change_balance(
                        users,
                        out,
                        fee_account,
                        quote,
                        BalanceCause::TradeFee(trade_id),
                        |b| b.available += seller_fee,
                    );
                }
                *last_price = price;
                *swept_lo = (*swept_lo).min(price);
                *swept_hi = (*swept_hi).max(price);
                // Maker bookkeeping.
                if q == m_rem {
                    opp.unlink(slab, idx, q);
                    let mo = *slab.order(idx);
                    debug_assert_eq!(mo.frozen, 0, "filled maker keeps nothing frozen");
                    order_index.remove(&mo.id.0);
                    if !mo.client_id.is_none() {
                        client_index.remove(&(mo.user, mo.client_id));
                    }
                    users[mo.user.0 as usize].open_orders -= 1;
                    slab.free(idx);
                    out.push(Event::OrderDone {
                        order: mo.id,
                        user: mo.user,
                        pair: mo.pair,
                        status: OrderStatus::Filled,
                        filled: mo.filled,
                        cum_quote: mo.cum_quote,
                    });
                } else {
                    opp.reduce(price, q);
                }
                if t.quote_qty == 0 && t.remaining() == 0 {
                    return TakerEnd::Filled;
                }
                // A maker left partly filled (the taker's budget ran short)
                // keeps its priority: it is tried again before the next one.
                if q == m_rem {
                    idx = next;
                }
            }
        }
    }

    /// Fire waiting stops while the last price reaches them. Each firing
    /// removes one stop, so this ends.
    fn run_stops(&mut self, pair: PairId, ts: u64, out: &mut Vec<Event>) {
        let pi = pair.0 as usize - 1;
        loop {
            let ps = &self.pairs[pi];
            let last = ps.last_price;
            if last == 0 {
                return;
            }
            // Rising stops against the highest trade price of this
            // command, falling ones against the lowest.
            let hi = ps.swept_hi.max(last);
            let lo = ps.swept_lo.min(last);
            let key = match ps.stops_up.first() {
                Some(&(sp, id)) if sp <= hi => Some((sp, id, true)),
                // Highest stop price first; among equal stop prices the
                // oldest (lowest id) first, as for rising stops.
                _ => match ps.stops_down.last() {
                    Some(&(sp, _)) if sp >= lo => ps
                        .stops_down
                        .range((sp, 0)..)
                        .next()
                        .map(|&(sp, id)| (sp, id, false)),
                    _ => None,
                },
            };
            let Some((sp, id, up)) = key else {
                return;
            };
            let ps = &mut self.pairs[pi];
            if up {
                ps.stops_up.remove(&(sp, id));
            } else {
                ps.stops_down.remove(&(sp, id));
            }
            let idx = self.order_index[&id];
            let mut t = self.forget_open(idx);
            t.triggered = true;
            t.working_ms = ts;
            out.push(Event::StopTriggered {
                order: t.id,
                user: t.user,
                pair,
                last_price: Price(last),
            });
            if !t.kind.has_limit_price() {
                // Market variant: works like a market order by quantity.
                t.tif = TimeInForce::Ioc;
            }
            self.work(&mut t, out);
        }
    }

    fn cancel_all(&mut self, user: UserId, pair: PairId, out: &mut Vec<Event>) -> R<()> {
        self.user_ref(user)?;
        self.pair_ref(pair)?;
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        self.collect_open(user, pair, &mut ids);
        self.cancel_ids(&mut ids, out);
        self.scratch = ids;
        Ok(())
    }

    /// A suspension's cancels (`Command::SetUserStatus`): every open order
    /// of `user` on every pair, in ascending order id, each as `CancelOrder`
    /// ends it (funds released, `OrderDone` Canceled).
    fn cancel_everywhere(&mut self, user: UserId, out: &mut Vec<Event>) {
        if self.users[user.0 as usize].open_orders == 0 {
            return;
        }
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        for i in 0..self.pairs.len() {
            self.collect_open(user, PairId(i as u32 + 1), &mut ids);
        }
        self.cancel_ids(&mut ids, out);
        debug_assert_eq!(self.users[user.0 as usize].open_orders, 0);
        self.scratch = ids;
    }

    /// Append the ids of `user`'s open orders on `pair` (resting, then
    /// waiting stops; unsorted).
    fn collect_open(&self, user: UserId, pair: PairId, ids: &mut Vec<u64>) {
        let ps = &self.pairs[pair.0 as usize - 1];
        for side in [&ps.bids, &ps.asks] {
            for l in side.levels.iter() {
                for i in side.level_nodes(&self.slab, l) {
                    let o = self.slab.order(i);
                    if o.user == user {
                        ids.push(o.id.0);
                    }
                }
            }
        }
        for &(_, id) in ps.stops_up.iter().chain(ps.stops_down.iter()) {
            if self.slab.order(self.order_index[&id]).user == user {
                ids.push(id);
            }
        }
    }

    /// Cancel the open orders `ids`, in ascending id order (sorts `ids`).
    fn cancel_ids(&mut self, ids: &mut [u64], out: &mut Vec<Event>) {
        ids.sort_unstable();
        for &id in ids.iter() {
            let idx = self.order_index[&id];
            self.remove_open(idx, OrderStatus::Canceled, out);
        }
    }

    fn cancel_replace(
        &mut self,
        target: &OrderRef,
        mode: CancelReplaceMode,
        new: &NewOrder,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        match self.find_open(new.user, new.pair, target) {
            Ok(idx) => self.remove_open(idx, OrderStatus::Canceled, out),
            Err(reason) => match mode {
                CancelReplaceMode::StopOnFailure => return Err(reason),
                CancelReplaceMode::AllowFailure => out.push(Event::Rejected { reason }),
            },
        }
        let start = out.len();
        if let Err(reason) = self.place(new, ts, out) {
            debug_assert_eq!(out.len(), start);
            out.push(Event::Rejected { reason });
        }
        Ok(())
    }

    fn amend(
        &mut self,
        user: UserId,
        pair: PairId,
        target: &OrderRef,
        new_qty: Qty,
        out: &mut Vec<Event>,
    ) -> R<()> {
        let idx = self.find_open(user, pair, target)?;
        let o = *self.slab.order(idx);
        let ps = &self.pairs[pair.0 as usize - 1];
        if o.quote_qty > 0
            || new_qty.0 >= o.qty.0
            || new_qty.0 <= o.filled.0
            || !new_qty.0.is_multiple_of(ps.pair.spec.step_units)
        {
            return Err(RejectReason::InvalidAmendQty);
        }
        let new_rem = new_qty.0 - o.filled.0;
        let keep = Self::required_freeze(&ps.pair, &o, new_rem)
            .unwrap_or(o.frozen)
            .min(o.frozen);
        let release = o.frozen - keep;
        let spend = ps.pair.spend_asset_for(o.side);
        let delta = o.remaining() - new_rem;
        let ps = &mut self.pairs[pair.0 as usize - 1];
        if !o.kind.is_stop() || o.triggered {
            match o.side {
                Side::Buy => ps.bids.reduce(o.price.0, delta),
                Side::Sell => ps.asks.reduce(o.price.0, delta),
            }
        }
        let mo = self.slab.order_mut(idx);
        mo.qty = new_qty;
        mo.frozen = keep;
        if release > 0 {
            release_frozen(
                &mut self.users,
                out,
                user,
                spend,
                release,
                BalanceCause::OrderRelease(o.id),
            );
        }
        out.push(Event::OrderAmended {
            order: o.id,
            user,
            pair,
            qty: new_qty,
            filled: o.filled,
        });
        Ok(())
    }
}

impl Pair {
    /// The asset an order on `side` spends.
    #[inline]
    pub fn spend_asset_for(&self, side: Side) -> AssetId {
        match side {
            Side::Buy => self.spec.quote,
            Side::Sell => self.spec.base,
        }
    }
}

/// Stop direction: true when the stop fires as the price rises to it
/// (BUY STOP_LOSS*, SELL TAKE_PROFIT*).
pub fn fires_upward(side: Side, kind: OrderType) -> bool {
    let stop_loss = matches!(kind, OrderType::StopLoss | OrderType::StopLossLimit);
    (side == Side::Buy) == stop_loss
}

/// Whether a stop at `stop` fires at last price `last`.
pub fn stop_fires(side: Side, kind: OrderType, stop: u64, last: u64) -> bool {
    if fires_upward(side, kind) {
        last >= stop
    } else {
        last <= stop
    }
}

fn valid_symbol(s: &str) -> bool {
    (1..=20).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Bytes the engine holds for open orders (slab, id indexes, price levels),
/// from the capacities actually allocated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReport {
    pub open_orders: usize,
    pub slab_bytes: usize,
    pub index_bytes: usize,
    pub level_bytes: usize,
}

impl MemoryReport {
    pub fn order_bytes(&self) -> usize {
        self.slab_bytes + self.index_bytes + self.level_bytes
    }
}

impl Engine {
    /// Next ids the engine will assign: (order, trade).
    pub fn next_order_id(&self) -> u64 {
        self.next_order_id
    }
    pub fn next_trade_id(&self) -> u64 {
        self.next_trade_id
    }

    pub fn memory_report(&self) -> MemoryReport {
        // hashbrown: one control byte per bucket plus the entry.
        let index_bytes = self.order_index.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
            + self.client_index.capacity()
                * (std::mem::size_of::<((UserId, ClientOrderId), OrderId)>() + 1);
        let level_bytes = self
            .pairs
            .iter()
            .map(|p| {
                (p.bids.levels.capacity() + p.asks.levels.capacity())
                    * std::mem::size_of::<crate::book::Level>()
            })
            .sum();
        MemoryReport {
            open_orders: self.order_index.len(),
            slab_bytes: self.slab.capacity_bytes(),
            index_bytes,
            level_bytes,
        }
    }
}
