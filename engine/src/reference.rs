//! A naive reference model of the engine: the rules of `engine.rs` written
//! as plainly as possible, so that differential tests can drive both with
//! the same command streams and demand identical events.
//!
//! Everything is a flat collection scanned linearly: all open orders (resting
//! and waiting stops) live in one `Vec`, balances in a `BTreeMap`, deposits
//! and withdrawals in `Vec`s. Time priority is an arrival counter taken when
//! an order enters the book (a triggered stop enters when it fires; an amend
//! keeps it). Only the plain data types of the crate are shared with the fast
//! engine; no book, slab or index code.
//!
//! The matching rules, as this model states them:
//! * A taker repeatedly picks the best resting counterparty (best price, then
//!   earliest arrival) that its limit allows, and takes as much as it wants
//!   from it: its remaining quantity, capped for budget-limited orders
//!   (market buys, market-variant stop buys, orders by quote amount) by what
//!   the budget buys at that price. A maker left partly filled stays first
//!   in line. When the taker wants nothing more it ends.
//! * Self-trade prevention is decided by the taker's mode and applies only
//!   when a trade would happen.
//! * An order by quote amount ends FILLED when its budget buys no further
//!   step or is spent exactly, EXPIRED when liquidity ran out first.
//! * After an order that traded, waiting stops of the pair whose stop price
//!   the last price has reached fire one at a time: rising stops first
//!   (lowest stop price, then oldest), then falling ones (highest stop
//!   price, then oldest), re-reading the last price after each.
//! * LIMIT_MAKER, GTC limits and stops count against the open-order limits.
//!
//! A rejected command (or the rejected part of a CancelReplace) is undone by
//! restoring a copy of the state taken before it, so it cannot change
//! anything.

use std::collections::BTreeMap;

use crate::command::{CancelReplaceMode, Command, NewOrder, OrderRef};
use crate::event::{AcceptedOrder, BalanceCause, BalanceChange, Event, Trade};
use crate::model::*;
use crate::reject::RejectReason;
use crate::risk::*;
use crate::settlement::Settlement;
use crate::types::*;

type R<T> = Result<T, RejectReason>;

const DAY_MS: u64 = 86_400_000;

#[derive(Clone, Debug)]
struct RefUser {
    username: String,
    email: String,
    status: UserStatus,
    kyc_level: u8,
    /// Active API keys in creation order.
    api_keys: Vec<ApiKey>,
    failed_logins: u32,
    locked_until_ms: u64,
    roles: u32,
}

impl RefUser {
    fn new(username: &str, email: &str) -> RefUser {
        RefUser {
            roles: 0,
            username: username.to_string(),
            email: email.to_string(),
            status: UserStatus::Active,
            kyc_level: 0,
            api_keys: Vec::new(),
            failed_logins: 0,
            locked_until_ms: 0,
        }
    }
}

#[derive(Clone, Debug)]
struct RefPair {
    pair: Pair,
    /// Price of the last trade in ticks; 0 = none yet.
    last_price: u64,
    /// Highest and lowest trade price since the current order command
    /// started (stops fire when any trade reached them), if any traded.
    swept: Option<(u64, u64)>,
}

#[derive(Clone, Copy, Debug)]
struct OpenOrder {
    order: Order,
    /// When the order entered the book (time priority). Unused for a stop
    /// that is still waiting.
    arrival: u64,
}

impl OpenOrder {
    fn is_waiting_stop(&self) -> bool {
        self.order.kind.is_stop() && !self.order.triggered
    }
}

/// How the taking part of an order ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    Filled,
    /// No (more) crossing liquidity.
    NoLiquidity,
    /// The order's budget (funds or quote amount) buys no further step.
    Budget,
    /// A sell by quote ran out of base before its quote amount: EXPIRED.
    OutOfFunds,
    /// Self-trade prevention expired the taker.
    StpExpired,
}

#[derive(Clone, Debug)]
pub struct ReferenceEngine {
    last_ts_ms: u64,
    next_order_id: u64,
    next_trade_id: u64,
    next_deposit_id: u64,
    next_withdrawal_id: u64,
    next_api_key_id: u64,
    next_kyc_id: u64,
    next_arrival: u64,
    fee_account: UserId,
    limits: Limits,
    assets: Vec<Asset>,
    /// Per asset (index id - 1): deposits + credits - debits - withdrawals.
    supply: Vec<u128>,
    /// Index id - 1.
    pairs: Vec<RefPair>,
    /// Index = user id; user 0 is the exchange's own account.
    users: Vec<RefUser>,
    balances: BTreeMap<(UserId, AssetId), Balance>,
    deposits: Vec<Deposit>,
    withdrawals: Vec<Withdrawal>,
    /// (user, asset, UTC day) -> amount requested that day (pending or sent).
    withdrawn: BTreeMap<(UserId, AssetId, u64), u64>,
    /// Every open order: resting in a book or waiting as a stop.
    orders: Vec<OpenOrder>,
    /// Every KYC record, in submission (= id) order.
    kyc: Vec<KycRecord>,
    /// Risk rules, by id; deleted ones are gone.
    risk_rules: Vec<RiskRule>,
    /// Every risk event ever raised, by id, with its current status.
    risk_events: Vec<RiskEvent>,
    next_risk_rule_id: u64,
    /// Risk events the current command raises, at its end: (rule, user,
    /// details).
    risk_pending: Vec<(u64, UserId, String)>,
    /// Self-trade prevention expiries of the current command: (user, pair,
    /// taker, maker, mode).
    stp_seen: Vec<(UserId, PairId, OrderId, OrderId, StpMode)>,
    next_settlement_id: u64,
    /// Accepted settlement batches, in acceptance order.
    settled: Vec<Settlement>,
    /// Edited notification templates, in first-edit order.
    templates: Vec<crate::templates::NotificationTemplate>,
}

impl Default for ReferenceEngine {
    fn default() -> Self {
        ReferenceEngine::new()
    }
}

fn symbol_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 20
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn username_ok(s: &str) -> bool {
    s.len() >= 3
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        && !s.eq_ignore_ascii_case("exchange")
}

/// Does a stop of this side and type fire when the price rises to it?
fn stop_rises(side: Side, kind: OrderType) -> bool {
    match kind {
        OrderType::StopLoss | OrderType::StopLossLimit => side == Side::Buy,
        OrderType::TakeProfit | OrderType::TakeProfitLimit => side == Side::Sell,
        _ => false,
    }
}

fn stop_reached(side: Side, kind: OrderType, stop: u64, last: u64) -> bool {
    if stop_rises(side, kind) {
        last >= stop
    } else {
        last <= stop
    }
}

impl ReferenceEngine {
    pub fn new() -> Self {
        ReferenceEngine {
            last_ts_ms: 0,
            next_order_id: 1,
            next_trade_id: 1,
            next_deposit_id: 1,
            next_withdrawal_id: 1,
            next_api_key_id: 1,
            next_kyc_id: 1,
            next_arrival: 1,
            fee_account: UserId(0),
            limits: Limits::default(),
            assets: Vec::new(),
            supply: Vec::new(),
            pairs: Vec::new(),
            users: vec![RefUser::new("exchange", "")],
            balances: BTreeMap::new(),
            deposits: Vec::new(),
            withdrawals: Vec::new(),
            withdrawn: BTreeMap::new(),
            orders: Vec::new(),
            kyc: Vec::new(),
            risk_rules: Vec::new(),
            risk_events: Vec::new(),
            next_risk_rule_id: 1,
            risk_pending: Vec::new(),
            stp_seen: Vec::new(),
            next_settlement_id: 1,
            settled: Vec::new(),
            templates: Vec::new(),
        }
    }

    // ---------------------------------------------------------------- queries

    pub fn balance(&self, user: UserId, asset: AssetId) -> Balance {
        self.balances
            .get(&(user, asset))
            .copied()
            .unwrap_or_default()
    }
    pub fn user_count(&self) -> usize {
        self.users.len()
    }
    pub fn asset_count(&self) -> usize {
        self.assets.len()
    }
    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }
    pub fn fee_account(&self) -> UserId {
        self.fee_account
    }
    pub fn last_price(&self, pair: PairId) -> Option<u64> {
        self.pair(pair).map(|p| p.last_price)
    }
    /// An open order (resting or waiting stop).
    pub fn order(&self, id: OrderId) -> Option<Order> {
        self.orders
            .iter()
            .find(|o| o.order.id == id)
            .map(|o| o.order)
    }
    pub fn open_order_count(&self) -> usize {
        self.orders.len()
    }
    pub fn open_orders_of(&self, user: UserId) -> usize {
        self.orders.iter().filter(|o| o.order.user == user).count()
    }
    /// Resting orders of one book side, best price first, then by arrival.
    pub fn book_orders(&self, pair: PairId, side: Side) -> Vec<Order> {
        let mut v: Vec<&OpenOrder> = self
            .orders
            .iter()
            .filter(|o| !o.is_waiting_stop() && o.order.pair == pair && o.order.side == side)
            .collect();
        v.sort_by_key(|o| (Self::priority(side, o.order.price.0), o.arrival));
        v.into_iter().map(|o| o.order).collect()
    }
    pub fn deposits(&self) -> Vec<Deposit> {
        let mut v = self.deposits.clone();
        v.sort_by(|a, b| (a.asset, &a.tx_hash).cmp(&(b.asset, &b.tx_hash)));
        v
    }
    pub fn withdrawals(&self) -> Vec<Withdrawal> {
        self.withdrawals.clone()
    }
    /// A user's active API keys, failed login count and lock end.
    pub fn login_state(&self, user: UserId) -> Option<(Vec<ApiKey>, u32, u64)> {
        self.users
            .get(user.0 as usize)
            .map(|u| (u.api_keys.clone(), u.failed_logins, u.locked_until_ms))
    }

    /// Every KYC record, by id.
    pub fn kyc_records(&self) -> Vec<KycRecord> {
        self.kyc.clone()
    }
    pub fn kyc_level(&self, user: UserId) -> Option<u8> {
        self.users.get(user.0 as usize).map(|u| u.kyc_level)
    }

    /// Sort key of a price on a book side: smaller is better.
    fn priority(side: Side, price: u64) -> u64 {
        match side {
            Side::Buy => u64::MAX - price,
            Side::Sell => price,
        }
    }

    fn pair(&self, id: PairId) -> Option<&RefPair> {
        (id.0 as usize)
            .checked_sub(1)
            .and_then(|i| self.pairs.get(i))
    }
    fn pair_mut(&mut self, id: PairId) -> R<&mut RefPair> {
        (id.0 as usize)
            .checked_sub(1)
            .and_then(|i| self.pairs.get_mut(i))
            .ok_or(RejectReason::UnknownPair)
    }
    fn asset(&self, id: AssetId) -> R<&Asset> {
        (id.0 as usize)
            .checked_sub(1)
            .and_then(|i| self.assets.get(i))
            .ok_or(RejectReason::UnknownAsset)
    }
    fn user(&self, id: UserId) -> R<&RefUser> {
        self.users
            .get(id.0 as usize)
            .ok_or(RejectReason::UnknownUser)
    }
    fn user_mut(&mut self, id: UserId) -> R<&mut RefUser> {
        self.users
            .get_mut(id.0 as usize)
            .ok_or(RejectReason::UnknownUser)
    }

    /// Change one balance and report it with before/after values.
    fn move_funds(
        &mut self,
        out: &mut Vec<Event>,
        user: UserId,
        asset: AssetId,
        cause: BalanceCause,
        f: impl FnOnce(&mut Balance),
    ) {
        let b = self.balances.entry((user, asset)).or_default();
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

    fn freeze(
        &mut self,
        out: &mut Vec<Event>,
        user: UserId,
        asset: AssetId,
        amt: u64,
        cause: BalanceCause,
    ) {
        self.move_funds(out, user, asset, cause, |b| {
            b.available -= amt;
            b.frozen += amt;
        });
    }

    fn release(
        &mut self,
        out: &mut Vec<Event>,
        user: UserId,
        asset: AssetId,
        amt: u64,
        cause: BalanceCause,
    ) {
        self.move_funds(out, user, asset, cause, |b| {
            b.frozen -= amt;
            b.available += amt;
        });
    }

    // ------------------------------------------------------------------ apply

    pub fn apply(&mut self, _seq: u64, ts_ms: u64, cmd: &Command, out: &mut Vec<Event>) {
        // Time never goes backwards.
        let ts = ts_ms.max(self.last_ts_ms);
        self.last_ts_ms = ts;
        let saved = self.clone();
        let start = out.len();
        if let Err(reason) = self.dispatch(ts, cmd, out) {
            // Only the risk events it raised survive a refusal.
            let pending = std::mem::take(&mut self.risk_pending);
            *self = saved;
            self.risk_pending = pending;
            self.last_ts_ms = ts;
            out.truncate(start);
            out.push(Event::Rejected { reason });
        }
        self.raise_risk_events(ts, out);
    }

    fn dispatch(&mut self, ts: u64, cmd: &Command, out: &mut Vec<Event>) -> R<()> {
        match cmd {
            Command::AddAsset { spec, .. } => self.add_asset(spec, out),
            Command::UpdateAsset { asset, spec, .. } => {
                let cur = self.asset(*asset)?;
                if cur.spec.symbol != spec.symbol || cur.spec.decimals != spec.decimals {
                    return Err(RejectReason::InvalidAssetConfig);
                }
                let a = &mut self.assets[asset.0 as usize - 1];
                a.spec = spec.clone();
                out.push(Event::AssetUpdated(a.clone()));
                Ok(())
            }
            Command::AddPair { spec, .. } => {
                if self.pairs.iter().any(|p| p.pair.spec.symbol == spec.symbol) {
                    return Err(RejectReason::PairExists);
                }
                let decimals = self.validate_pair(spec)?;
                let id = PairId(self.pairs.len() as u32 + 1);
                let pair = Pair::new(id, (**spec).clone(), decimals);
                self.pairs.push(RefPair {
                    pair: pair.clone(),
                    last_price: 0,
                    swept: None,
                });
                out.push(Event::PairListed(Box::new(pair)));
                Ok(())
            }
            Command::UpdatePair { pair, spec, .. } => {
                let cur = &self.pair(*pair).ok_or(RejectReason::UnknownPair)?.pair.spec;
                let fixed_changed = cur.symbol != spec.symbol
                    || cur.base != spec.base
                    || cur.quote != spec.quote
                    || cur.tick_units != spec.tick_units
                    || cur.step_units != spec.step_units;
                if fixed_changed {
                    return Err(RejectReason::InvalidPairConfig);
                }
                self.validate_pair(spec)?;
                let p = self.pair_mut(*pair)?;
                p.pair.spec = (**spec).clone();
                out.push(Event::PairUpdated(Box::new(p.pair.clone())));
                Ok(())
            }
            Command::SetPairStatus { pair, status, .. } => {
                let p = self.pair_mut(*pair)?;
                p.pair.spec.status = *status;
                out.push(Event::PairUpdated(Box::new(p.pair.clone())));
                Ok(())
            }
            Command::SetFeeAccount { user, .. } => {
                self.user(*user)?;
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
            } => self.create_user(username, email, password_hash, *roles, out),
            Command::SetUserStatus {
                user,
                status,
                cancel_orders,
                ..
            } => {
                self.user_mut(*user)?.status = *status;
                out.push(Event::UserStatusChanged {
                    user: *user,
                    status: *status,
                });
                if *cancel_orders && *status == UserStatus::Suspended {
                    // Every open order of the user, any pair, by id.
                    let mut ids: Vec<OrderId> = self
                        .orders
                        .iter()
                        .filter(|o| o.order.user == *user)
                        .map(|o| o.order.id)
                        .collect();
                    ids.sort();
                    for id in ids {
                        let i = self.index_of(id).expect("collected above");
                        self.cancel_at(i, out);
                    }
                }
                Ok(())
            }
            Command::SetUserRoles { user, roles, .. } => {
                if roles & !roles::ALL != 0 {
                    return Err(RejectReason::InvalidOrderParams);
                }
                self.user_mut(*user)?.roles = *roles;
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
                self.user_mut(*user)?.kyc_level = *level;
                out.push(Event::KycLevelSet {
                    user: *user,
                    level: *level,
                });
                Ok(())
            }
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
            Command::PlaceOrder(o) => self.place(o, ts, out),
            Command::CancelOrder { user, pair, target } => {
                let i = self.find_open(*user, *pair, target)?;
                self.cancel_at(i, out);
                Ok(())
            }
            Command::CancelAll { user, pair } => {
                self.user(*user)?;
                self.pair(*pair).ok_or(RejectReason::UnknownPair)?;
                let mut ids: Vec<OrderId> = self
                    .orders
                    .iter()
                    .filter(|o| o.order.user == *user && o.order.pair == *pair)
                    .map(|o| o.order.id)
                    .collect();
                ids.sort();
                for id in ids {
                    let i = self.index_of(id).expect("collected above");
                    self.cancel_at(i, out);
                }
                Ok(())
            }
            Command::CancelReplace { target, mode, new } => {
                match self.find_open(new.user, new.pair, target) {
                    Ok(i) => self.cancel_at(i, out),
                    Err(reason) => match mode {
                        CancelReplaceMode::StopOnFailure => return Err(reason),
                        CancelReplaceMode::AllowFailure => out.push(Event::Rejected { reason }),
                    },
                }
                // The new order is a part of its own: its rejection undoes
                // only itself.
                let saved = self.clone();
                let start = out.len();
                if let Err(reason) = self.place(new, ts, out) {
                    let pending = std::mem::take(&mut self.risk_pending);
                    *self = saved;
                    self.risk_pending = pending;
                    out.truncate(start);
                    out.push(Event::Rejected { reason });
                }
                Ok(())
            }
            Command::AmendQty {
                user,
                pair,
                target,
                new_qty,
            } => self.amend(*user, *pair, target, *new_qty, out),
            Command::CreateApiKey {
                user,
                api_key,
                label,
                permissions,
                kind,
                secret,
            } => {
                let limit = self.limits.max_api_keys_per_user as usize;
                let u = self.login_user(*user)?;
                if u.status == UserStatus::Suspended {
                    return Err(RejectReason::UserSuspended);
                }
                let key_ok = !api_key.is_empty()
                    && api_key.len() <= 64
                    && api_key.chars().all(|c| c.is_ascii_alphanumeric());
                let secret_ok = match kind {
                    ApiKeyKind::Hmac => !secret.is_empty() && secret.len() <= 256,
                    ApiKeyKind::Ed25519 => secret.len() == 32,
                };
                let perms_ok = *permissions >= 1 && *permissions <= 7;
                if !(key_ok && secret_ok && perms_ok && label.len() <= 64) {
                    return Err(RejectReason::InvalidApiKey);
                }
                if self
                    .users
                    .iter()
                    .any(|u| u.api_keys.iter().any(|k| k.api_key == *api_key))
                {
                    return Err(RejectReason::ApiKeyExists);
                }
                if self.users[user.0 as usize].api_keys.len() >= limit {
                    return Err(RejectReason::TooManyApiKeys);
                }
                let key = ApiKey {
                    id: self.next_api_key_id,
                    api_key: api_key.clone(),
                    label: label.clone(),
                    permissions: *permissions,
                    kind: *kind,
                    secret: secret.clone(),
                    created_ms: ts,
                };
                self.next_api_key_id += 1;
                out.push(Event::ApiKeyCreated {
                    user: *user,
                    id: key.id,
                    api_key: key.api_key.clone(),
                    label: key.label.clone(),
                    permissions: key.permissions,
                    kind: key.kind,
                    secret: key.secret.clone(),
                    created_ms: ts,
                });
                self.users[user.0 as usize].api_keys.push(key);
                Ok(())
            }
            Command::RevokeApiKey { user, api_key } => {
                self.login_user(*user)?;
                let keys = &mut self.users[user.0 as usize].api_keys;
                let before = keys.len();
                let mut id = 0;
                keys.retain(|k| {
                    if k.api_key == *api_key {
                        id = k.id;
                        false
                    } else {
                        true
                    }
                });
                if keys.len() == before {
                    return Err(RejectReason::UnknownApiKey);
                }
                out.push(Event::ApiKeyRevoked {
                    user: *user,
                    id,
                    api_key: api_key.clone(),
                });
                Ok(())
            }
            Command::RecordLogin { user, success } => {
                let (max_failures, lockout) =
                    (self.limits.max_failed_logins, self.limits.lockout_ms);
                let u = self.login_user(*user)?;
                if ts < u.locked_until_ms {
                    return Err(RejectReason::UserLocked);
                }
                let u = &mut self.users[user.0 as usize];
                let lock_ended = u.locked_until_ms > 0;
                if *success {
                    u.failed_logins = 0;
                    u.locked_until_ms = 0;
                } else {
                    let before = if lock_ended { 0 } else { u.failed_logins };
                    u.failed_logins = before.saturating_add(1);
                    u.locked_until_ms = if max_failures != 0 && u.failed_logins >= max_failures {
                        ts.saturating_add(lockout).max(1)
                    } else {
                        0
                    };
                }
                out.push(Event::LoginRecorded {
                    user: *user,
                    success: *success,
                    failed_logins: u.failed_logins,
                    locked_until_ms: u.locked_until_ms,
                });
                if !*success {
                    let (n, until) = (u.failed_logins, u.locked_until_ms);
                    self.risk_login_failure(*user, n, until);
                }
                Ok(())
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
            } => {
                self.risk_actor(*by)?;
                if !valid_rule_name(name)
                    || !valid_risk_text(description)
                    || !kind.supported()
                    || (*action == RiskAction::Block && !kind.can_block())
                {
                    return Err(RejectReason::InvalidRiskRule);
                }
                let limit = self.risk_limit(*kind, parameters)?;
                if self
                    .risk_rules
                    .iter()
                    .any(|r| r.name.eq_ignore_ascii_case(name))
                {
                    return Err(RejectReason::RiskRuleNameTaken);
                }
                if self.risk_rules.len() >= MAX_RISK_RULES {
                    return Err(RejectReason::TooManyRiskRules);
                }
                let rule = RiskRule {
                    id: self.next_risk_rule_id,
                    name: name.clone(),
                    kind: *kind,
                    parameters: parameters.clone(),
                    limit,
                    level: *level,
                    action: *action,
                    enabled: *enabled,
                    description: description.clone(),
                    created_by: *by,
                    updated_by: *by,
                    created_ms: ts,
                    updated_ms: ts,
                    version: 1,
                };
                self.next_risk_rule_id += 1;
                out.push(Event::RiskRuleCreated(Box::new(rule.clone())));
                self.risk_rules.push(rule);
                Ok(())
            }
            Command::UpdateRiskRule { by, rule, changes } => {
                self.risk_actor(*by)?;
                let i = self
                    .risk_rules
                    .iter()
                    .position(|r| r.id == *rule)
                    .ok_or(RejectReason::UnknownRiskRule)?;
                let mut r = self.risk_rules[i].clone();
                if changes.is_empty() {
                    return Err(RejectReason::InvalidRiskRule);
                }
                if let Some(n) = &changes.name {
                    if !valid_rule_name(n) {
                        return Err(RejectReason::InvalidRiskRule);
                    }
                    r.name = n.clone();
                }
                if let Some(d) = &changes.description {
                    if !valid_risk_text(d) {
                        return Err(RejectReason::InvalidRiskRule);
                    }
                    r.description = d.clone();
                }
                if let Some(a) = changes.action {
                    r.action = a;
                }
                if r.action == RiskAction::Block && !r.kind.can_block() {
                    return Err(RejectReason::InvalidRiskRule);
                }
                if let Some(p) = &changes.parameters {
                    r.limit = self.risk_limit(r.kind, p)?;
                    r.parameters = p.clone();
                }
                if self
                    .risk_rules
                    .iter()
                    .any(|o| o.id != r.id && o.name.eq_ignore_ascii_case(&r.name))
                {
                    return Err(RejectReason::RiskRuleNameTaken);
                }
                if let Some(l) = changes.level {
                    r.level = l;
                }
                if let Some(e) = changes.enabled {
                    r.enabled = e;
                }
                r.updated_by = *by;
                r.updated_ms = ts;
                r.version += 1;
                out.push(Event::RiskRuleUpdated(Box::new(r.clone())));
                self.risk_rules[i] = r;
                Ok(())
            }
            Command::DeleteRiskRule { by, rule } => {
                self.risk_actor(*by)?;
                let i = self
                    .risk_rules
                    .iter()
                    .position(|r| r.id == *rule)
                    .ok_or(RejectReason::UnknownRiskRule)?;
                let r = self.risk_rules.remove(i);
                out.push(Event::RiskRuleDeleted {
                    rule: r.id,
                    name: r.name,
                });
                Ok(())
            }
            Command::SetRiskEventStatus {
                by,
                event,
                status,
                note,
            } => {
                self.risk_actor(*by)?;
                if *status == RiskEventStatus::Open || !valid_risk_text(note) {
                    return Err(RejectReason::InvalidRiskEventStatus);
                }
                let ev = self
                    .risk_events
                    .iter_mut()
                    .find(|e| e.id == *event)
                    .ok_or(RejectReason::UnknownRiskEvent)?;
                if ev.status.is_final() {
                    return Err(RejectReason::RiskEventClosed);
                }
                if ev.status == *status {
                    return Err(RejectReason::InvalidRiskEventStatus);
                }
                ev.status = *status;
                ev.updated_ms = ts;
                ev.handled_by = Some(*by);
                ev.note = note.clone();
                out.push(Event::RiskEventStatusChanged {
                    event: *event,
                    user: ev.user,
                    status: *status,
                    by: *by,
                    note: note.clone(),
                    updated_ms: ts,
                });
                Ok(())
            }
            Command::GrantRole { user, role, .. } | Command::RevokeRole { user, role, .. } => {
                let grant = matches!(cmd, Command::GrantRole { .. });
                if role.count_ones() != 1 || role & !roles::ALL != 0 {
                    return Err(RejectReason::InvalidRole);
                }
                let u = self.login_user(*user)?;
                if (u.roles & role != 0) == grant {
                    return Err(RejectReason::RoleUnchanged);
                }
                let is_active_admin =
                    |u: &RefUser| u.roles & roles::ADMIN != 0 && u.status == UserStatus::Active;
                if !grant && *role == roles::ADMIN && is_active_admin(u) {
                    let admins = self.users.iter().filter(|u| is_active_admin(u)).count();
                    if admins <= 1 {
                        return Err(RejectReason::LastActiveAdmin);
                    }
                }
                let u = self.user_mut(*user)?;
                if grant {
                    u.roles |= role;
                } else {
                    u.roles &= !role;
                }
                out.push(Event::UserRolesChanged {
                    user: *user,
                    roles: u.roles,
                });
                Ok(())
            }
            Command::SubmitKyc {
                user,
                level,
                document_type,
                document_number,
                data,
            } => {
                let u = self.login_user(*user)?;
                if u.status == UserStatus::Suspended {
                    return Err(RejectReason::UserSuspended);
                }
                if *level < 1 || *level > 3 {
                    return Err(RejectReason::InvalidKycLevel);
                }
                let trimmed = data.trim();
                let data_ok =
                    data.len() <= 4096 && trimmed.starts_with('{') && trimmed.ends_with('}');
                if document_number.is_empty() || document_number.len() > 512 || !data_ok {
                    return Err(RejectReason::InvalidKycSubmission);
                }
                if self
                    .kyc
                    .iter()
                    .any(|k| k.user == *user && k.status == KycStatus::Pending)
                {
                    return Err(RejectReason::KycAlreadyPending);
                }
                let rec = KycRecord {
                    id: self.next_kyc_id,
                    user: *user,
                    level: *level,
                    document_type: *document_type,
                    document_number: document_number.clone(),
                    data: data.clone(),
                    status: KycStatus::Pending,
                    reviewer: None,
                    notes: String::new(),
                    created_ms: ts,
                    reviewed_ms: 0,
                };
                self.next_kyc_id += 1;
                out.push(Event::KycSubmitted(Box::new(rec.clone())));
                self.kyc.push(rec);
                Ok(())
            }
            Command::ReviewKyc {
                kyc,
                reviewer,
                approve,
                notes,
            } => {
                if notes.len() > 1024 || (!*approve && notes.trim().is_empty()) {
                    return Err(RejectReason::InvalidKycReview);
                }
                if self.login_user(*reviewer)?.status == UserStatus::Suspended {
                    return Err(RejectReason::UserSuspended);
                }
                let rec = self
                    .kyc
                    .iter_mut()
                    .find(|k| k.id == *kyc)
                    .ok_or(RejectReason::UnknownKycRecord)?;
                if rec.status != KycStatus::Pending {
                    return Err(RejectReason::KycNotPending);
                }
                if rec.user == *reviewer {
                    return Err(RejectReason::KycSelfReview);
                }
                rec.status = if *approve {
                    KycStatus::Approved
                } else {
                    KycStatus::Rejected
                };
                rec.reviewer = Some(*reviewer);
                rec.notes = notes.clone();
                rec.reviewed_ms = ts;
                let (user, level, status) = (rec.user, rec.level, rec.status);
                out.push(Event::KycReviewed {
                    kyc: *kyc,
                    user,
                    reviewer: *reviewer,
                    status,
                    level,
                    notes: notes.clone(),
                    reviewed_ms: ts,
                });
                if *approve {
                    self.users[user.0 as usize].kyc_level = level;
                    out.push(Event::KycLevelSet { user, level });
                }
                Ok(())
            }
            Command::SetNotificationWebhook { user, url } => {
                self.login_user(*user)?;
                if !crate::command::valid_webhook_shape(url) {
                    return Err(RejectReason::InvalidNotificationRequest);
                }
                out.push(Event::NotificationWebhookSet {
                    user: *user,
                    url: url.clone(),
                });
                Ok(())
            }
            Command::MarkNotificationsRead { user, ids } => {
                self.login_user(*user)?;
                if ids.is_empty() || ids.len() > crate::command::NOTIFY_MAX_READ_IDS {
                    return Err(RejectReason::InvalidNotificationRequest);
                }
                out.push(Event::NotificationsRead {
                    user: *user,
                    ids: ids.clone(),
                    read_ms: ts,
                });
                Ok(())
            }
            Command::RunSettlement { date, requested_by } => {
                self.run_settlement(*date, *requested_by, ts, out)
            }
            Command::SetNotificationTemplate {
                by,
                name,
                subject,
                content,
                active,
            } => {
                if self.login_user(*by)?.status != UserStatus::Active {
                    return Err(RejectReason::UserSuspended);
                }
                let text_ok = crate::templates::valid_template_name(name)
                    && crate::templates::valid_template_text(subject, content);
                let old = self.templates.iter().position(|t| t.name == *name);
                if !text_ok
                    || (old.is_none()
                        && self.templates.len() >= crate::templates::NOTIFY_TEMPLATES_MAX)
                {
                    return Err(RejectReason::InvalidNotificationTemplate);
                }
                let t = crate::templates::NotificationTemplate {
                    name: name.clone(),
                    subject: subject.clone(),
                    content: content.clone(),
                    active: *active,
                    version: old.map_or(1, |i| self.templates[i].version + 1),
                    updated_by: *by,
                    updated_ms: ts,
                };
                out.push(Event::NotificationTemplateSet(Box::new(t.clone())));
                match old {
                    Some(i) => self.templates[i] = t,
                    None => self.templates.push(t),
                }
                Ok(())
            }
        }
    }

    /// A registered user: any but the exchange's own account 0.
    fn login_user(&self, id: UserId) -> R<&RefUser> {
        if id.0 == 0 {
            return Err(RejectReason::UnknownUser);
        }
        self.user(id)
    }

    // ---------------------------------------------------------- configuration

    fn add_asset(&mut self, spec: &AssetSpec, out: &mut Vec<Event>) -> R<()> {
        if self.assets.iter().any(|a| a.spec.symbol == spec.symbol) {
            return Err(RejectReason::AssetExists);
        }
        if !symbol_ok(&spec.symbol) || spec.decimals > 18 {
            return Err(RejectReason::InvalidAssetConfig);
        }
        let asset = Asset {
            id: AssetId(self.assets.len() as u32 + 1),
            spec: spec.clone(),
        };
        self.assets.push(asset.clone());
        self.supply.push(0);
        out.push(Event::AssetListed(asset));
        Ok(())
    }

    /// The pair rules; returns the base asset's decimals.
    fn validate_pair(&self, s: &PairSpec) -> R<u8> {
        let decimals = self.asset(s.base)?.spec.decimals;
        self.asset(s.quote)?;
        let valid = symbol_ok(&s.symbol)
            && s.base != s.quote
            && s.tick_units > 0
            && s.step_units > 0
            && s.min_qty_units > 0
            && s.min_qty_units.is_multiple_of(s.step_units)
            && s.max_qty_units >= s.min_qty_units
            && s.market_max_qty_units >= s.min_qty_units
            && s.min_price_ticks > 0
            && s.max_price_ticks >= s.min_price_ticks
            && (s.max_notional_units == 0 || s.max_notional_units >= s.min_notional_units)
            && s.maker_fee_e8 <= FEE_RATE_SCALE
            && s.taker_fee_e8 <= FEE_RATE_SCALE
            && s.price_band_pct <= 10_000;
        if valid {
            Ok(decimals)
        } else {
            Err(RejectReason::InvalidPairConfig)
        }
    }

    // --------------------------------------------------------------- identity

    fn create_user(
        &mut self,
        username: &str,
        email: &str,
        password_hash: &str,
        roles: u32,
        out: &mut Vec<Event>,
    ) -> R<()> {
        if !username_ok(username) || email.len() > 254 || password_hash.len() > 512 {
            return Err(RejectReason::InvalidUsername);
        }
        if roles & !roles::ALL != 0 {
            return Err(RejectReason::InvalidOrderParams);
        }
        // User 0 is the exchange itself, not a registered user.
        let registered = &self.users[1..];
        if registered
            .iter()
            .any(|u| u.username.eq_ignore_ascii_case(username))
        {
            return Err(RejectReason::UsernameTaken);
        }
        if !email.is_empty()
            && registered
                .iter()
                .any(|u| u.email.eq_ignore_ascii_case(email))
        {
            return Err(RejectReason::EmailTaken);
        }
        let id = UserId(self.users.len() as u64);
        let mut u = RefUser::new(username, email);
        u.roles = roles;
        self.users.push(u);
        out.push(Event::UserCreated {
            user: id,
            username: username.to_string(),
            email: email.to_string(),
            password_hash: password_hash.to_string(),
            roles,
        });
        Ok(())
    }

    // ----------------------------------------------------------------- wallet

    /// A credit may not push the asset's total supply past u64.
    fn check_credit(&self, asset: AssetId, amount: u64) -> R<()> {
        if self.supply[asset.0 as usize - 1] + amount as u128 > u64::MAX as u128 {
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
        self.user(user)?;
        let required = self.asset(asset)?.spec.confirmations;
        if amount == 0 {
            return Err(RejectReason::InvalidAmount);
        }
        if tx_hash.is_empty() || tx_hash.len() > 128 {
            return Err(RejectReason::InvalidOrderParams);
        }
        let i = match self
            .deposits
            .iter()
            .position(|d| d.asset == asset && d.tx_hash == tx_hash)
        {
            Some(i) => {
                let d = &self.deposits[i];
                if d.user != user || d.amount != amount {
                    return Err(RejectReason::DepositUserMismatch);
                }
                i
            }
            None => {
                self.deposits.push(Deposit {
                    id: self.next_deposit_id,
                    user,
                    asset,
                    amount,
                    tx_hash: tx_hash.to_string(),
                    confirmations: 0,
                    required,
                    status: DepositStatus::Pending,
                    created_ms: ts,
                    updated_ms: ts,
                });
                self.next_deposit_id += 1;
                self.deposits.len() - 1
            }
        };
        let d = &mut self.deposits[i];
        if confirmations > d.confirmations {
            d.confirmations = confirmations;
            d.updated_ms = ts;
        }
        // Credited exactly once, when the count reaches the requirement.
        if d.status == DepositStatus::Pending && confirmations >= d.required {
            d.status = DepositStatus::Credited;
            d.updated_ms = ts;
            let id = d.id;
            self.check_credit(asset, amount)?;
            self.supply[asset.0 as usize - 1] += amount as u128;
            self.move_funds(out, user, asset, BalanceCause::Deposit(id), |b| {
                b.available += amount
            });
        }
        out.push(Event::DepositUpdated(self.deposits[i].clone()));
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
        let u = self.user(user)?.clone();
        if u.status != UserStatus::Active {
            return Err(RejectReason::UserSuspended);
        }
        let spec = self.asset(asset)?.spec.clone();
        if !spec.active {
            return Err(RejectReason::AssetInactive);
        }
        if address.is_empty() || address.len() > 128 || amount == 0 {
            return Err(RejectReason::InvalidAmount);
        }
        if u.kyc_level == 0 {
            return Err(RejectReason::KycRequired);
        }
        if amount < spec.min_withdraw_units {
            return Err(RejectReason::BelowMinWithdraw);
        }
        let fee = spec.withdraw_fee_units;
        let total = amount.checked_add(fee).ok_or(RejectReason::Overflow)?;
        let day = ts / DAY_MS;
        let used = self
            .withdrawn
            .get(&(user, asset, day))
            .copied()
            .unwrap_or(0);
        if spec.daily_withdraw_limit_units > 0 {
            let factor = if u.kyc_level >= 2 { 10 } else { 1 };
            let limit = spec.daily_withdraw_limit_units.saturating_mul(factor);
            if used.saturating_add(amount) > limit {
                return Err(RejectReason::DailyWithdrawLimit);
            }
        }
        if self.balance(user, asset).available < total {
            return Err(RejectReason::InsufficientBalance);
        }
        self.risk_withdrawal(user, asset, amount)?;
        let id = self.next_withdrawal_id;
        self.next_withdrawal_id += 1;
        *self.withdrawn.entry((user, asset, day)).or_default() += amount;
        self.freeze(out, user, asset, total, BalanceCause::WithdrawalFreeze(id));
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
        self.withdrawals.push(w.clone());
        out.push(Event::WithdrawalUpdated(w));
        Ok(())
    }

    fn pending_withdrawal(&self, id: u64) -> R<usize> {
        let i = self
            .withdrawals
            .iter()
            .position(|w| w.id == id)
            .ok_or(RejectReason::UnknownWithdrawal)?;
        if self.withdrawals[i].status != WithdrawalStatus::Pending {
            return Err(RejectReason::WithdrawalNotPending);
        }
        Ok(i)
    }

    fn complete_withdrawal(
        &mut self,
        id: u64,
        tx_hash: &str,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        let i = self.pending_withdrawal(id)?;
        if tx_hash.is_empty() || tx_hash.len() > 128 {
            return Err(RejectReason::InvalidOrderParams);
        }
        let w = self.withdrawals[i].clone();
        // The amount leaves the system; the fee stays, with the fee account.
        self.move_funds(
            out,
            w.user,
            w.asset,
            BalanceCause::WithdrawalSent(id),
            |b| b.frozen -= w.amount + w.fee,
        );
        if w.fee > 0 {
            let fee_account = self.fee_account;
            self.move_funds(
                out,
                fee_account,
                w.asset,
                BalanceCause::WithdrawalFee(id),
                |b| b.available += w.fee,
            );
        }
        self.supply[w.asset.0 as usize - 1] -= w.amount as u128;
        let w = &mut self.withdrawals[i];
        w.status = WithdrawalStatus::Sent;
        w.tx_hash = tx_hash.to_string();
        w.updated_ms = ts;
        out.push(Event::WithdrawalUpdated(w.clone()));
        Ok(())
    }

    fn reject_withdrawal(&mut self, id: u64, ts: u64, out: &mut Vec<Event>) -> R<()> {
        let i = self.pending_withdrawal(id)?;
        let w = self.withdrawals[i].clone();
        self.release(
            out,
            w.user,
            w.asset,
            w.amount + w.fee,
            BalanceCause::WithdrawalRelease(id),
        );
        // The refused amount no longer counts against its day's limit.
        if let Some(used) = self
            .withdrawn
            .get_mut(&(w.user, w.asset, w.created_ms / DAY_MS))
        {
            *used = used.saturating_sub(w.amount);
        }
        let w = &mut self.withdrawals[i];
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
        self.user(user)?;
        self.asset(asset)?;
        if amount == 0 || reason.is_empty() || reason.len() > 1024 {
            return Err(RejectReason::InvalidAmount);
        }
        let a = asset.0 as usize - 1;
        if credit {
            self.check_credit(asset, amount)?;
            self.supply[a] += amount as u128;
            self.move_funds(out, user, asset, BalanceCause::Adjustment, |b| {
                b.available += amount
            });
        } else {
            if self.balance(user, asset).available < amount {
                return Err(RejectReason::InsufficientBalance);
            }
            self.supply[a] -= amount as u128;
            self.move_funds(out, user, asset, BalanceCause::Adjustment, |b| {
                b.available -= amount
            });
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

    fn index_of(&self, id: OrderId) -> Option<usize> {
        self.orders.iter().position(|o| o.order.id == id)
    }

    /// The open order `target` of `user` on `pair`.
    fn find_open(&self, user: UserId, pair: PairId, target: &OrderRef) -> R<usize> {
        let i = self
            .orders
            .iter()
            .position(|o| match target {
                OrderRef::Id(id) => o.order.id == *id,
                OrderRef::Client(cid) => {
                    !cid.is_none() && o.order.user == user && o.order.client_id == *cid
                }
            })
            .ok_or(RejectReason::UnknownOrder)?;
        let o = &self.orders[i].order;
        if o.user != user || o.pair != pair {
            return Err(RejectReason::UnknownOrder);
        }
        Ok(i)
    }

    fn spend_asset(&self, o: &Order) -> AssetId {
        let spec = &self.pairs[o.pair.0 as usize - 1].pair.spec;
        match o.side {
            Side::Buy => spec.quote,
            Side::Sell => spec.base,
        }
    }

    /// What an order with `rem` left must keep frozen (None: overflow, or a
    /// market order, whose budget is not a function of its quantity).
    fn needed_frozen(pair: &Pair, o: &Order, rem: u64) -> Option<u64> {
        if o.side == Side::Sell {
            return Some(rem);
        }
        if o.kind.has_limit_price() {
            return pair.notional(rem, o.price.0);
        }
        if o.kind == OrderType::Market {
            return None;
        }
        // Market-variant buy stop: qty x stop price plus the band margin.
        let n = pair.notional(rem, o.stop_price.0)? as u128;
        u64::try_from(n * (100 + pair.spec.price_band_pct as u128) / 100).ok()
    }

    /// All checks for a new order (nothing changes); the amount to freeze.
    /// Order: parameters, filters, pair and user status, price band, stop
    /// and maker conditions, limits, client id, funds.
    fn check_order(&self, o: &NewOrder) -> R<u64> {
        let rp = self.pair(o.pair).ok_or(RejectReason::UnknownPair)?;
        let user = self.user(o.user)?;
        let pair = &rp.pair;
        let spec = &pair.spec;
        let (price, stop, qty) = (o.price.0, o.stop_price.0, o.qty.0);

        if o.kind.has_limit_price() != (price > 0) {
            return Err(RejectReason::InvalidPrice);
        }
        if o.kind.is_stop() != (stop > 0) {
            return Err(RejectReason::InvalidStopPrice);
        }
        if o.quote_qty > 0 && (o.kind != OrderType::Market || qty > 0) {
            return Err(RejectReason::InvalidOrderParams);
        }
        if qty == 0 && o.quote_qty == 0 {
            return Err(RejectReason::InvalidQuantity);
        }

        let prices = [price, stop];
        let given = prices.iter().copied().filter(|p| *p > 0);
        if given
            .clone()
            .any(|p| p < spec.min_price_ticks || p > spec.max_price_ticks)
        {
            return Err(RejectReason::PriceFilter);
        }
        let market_lot = matches!(
            o.kind,
            OrderType::Market | OrderType::StopLoss | OrderType::TakeProfit
        );
        if qty > 0 {
            let max = if market_lot {
                spec.market_max_qty_units
            } else {
                spec.max_qty_units
            };
            if qty < spec.min_qty_units || qty > max || !qty.is_multiple_of(spec.step_units) {
                return Err(if market_lot {
                    RejectReason::MarketLotSize
                } else {
                    RejectReason::LotSize
                });
            }
        }
        // Notional at the order's own price, else its stop, else the last
        // trade; a market order before any trade has none to check.
        let notional = if o.quote_qty > 0 {
            Some(o.quote_qty)
        } else {
            let at = if price > 0 {
                price
            } else if stop > 0 {
                stop
            } else {
                rp.last_price
            };
            if at > 0 {
                Some(pair.notional(qty, at).ok_or(RejectReason::Overflow)?)
            } else {
                None
            }
        };
        if let Some(n) = notional {
            if n < spec.min_notional_units {
                return Err(RejectReason::MinNotional);
            }
            if spec.max_notional_units > 0 && n > spec.max_notional_units {
                return Err(RejectReason::MaxNotional);
            }
        }

        if spec.status == PairStatus::CancelOnly {
            return Err(RejectReason::PairCancelOnly);
        }
        if spec.status == PairStatus::Halt {
            return Err(RejectReason::PairNotTrading);
        }
        if user.status == UserStatus::Suspended {
            return Err(RejectReason::UserSuspended);
        }

        let last = rp.last_price;
        if last > 0 && spec.price_band_pct > 0 {
            for p in given {
                let dist = (p as u128).abs_diff(last as u128);
                if dist * 100 > last as u128 * spec.price_band_pct as u128 {
                    return Err(RejectReason::PriceBand);
                }
            }
        }
        if o.kind.is_stop() && last > 0 && stop_reached(o.side, o.kind, stop, last) {
            return Err(RejectReason::StopWouldTriggerImmediately);
        }
        if o.kind == OrderType::LimitMaker {
            let takes = self.orders.iter().any(|m| {
                !m.is_waiting_stop()
                    && m.order.pair == o.pair
                    && m.order.side != o.side
                    && match o.side {
                        Side::Buy => m.order.price.0 <= price,
                        Side::Sell => m.order.price.0 >= price,
                    }
            });
            if takes {
                return Err(RejectReason::WouldTakeAsMaker);
            }
        }

        // Orders that may stay open count against the limits: waiting
        // stops, LIMIT_MAKER (always GTC) and GTC limits.
        let may_rest = o.kind.is_stop()
            || o.kind == OrderType::LimitMaker
            || (o.kind == OrderType::Limit && o.tif == TimeInForce::Gtc);
        if may_rest {
            let mine = self
                .orders
                .iter()
                .filter(|m| m.order.user == o.user)
                .count();
            if mine >= self.limits.max_open_orders_per_user as usize
                || self.orders.len() >= self.limits.max_open_orders_total as usize
            {
                return Err(RejectReason::MaxNumOrders);
            }
        }
        if !o.client_id.is_none()
            && self
                .orders
                .iter()
                .any(|m| m.order.user == o.user && m.order.client_id == o.client_id)
        {
            return Err(RejectReason::DuplicateClientOrderId);
        }

        let spend = match o.side {
            Side::Buy => spec.quote,
            Side::Sell => spec.base,
        };
        let available = self.balance(o.user, spend).available;
        let amount = match (o.kind, o.side, o.quote_qty > 0) {
            // Exactly what it spends.
            (OrderType::Market, Side::Buy, true) => o.quote_qty,
            (OrderType::Market, Side::Sell, false) => qty,
            // Its budget is everything available; the rest comes back.
            (OrderType::Market, _, _) => {
                if available == 0 {
                    return Err(RejectReason::InsufficientBalance);
                }
                available
            }
            _ => {
                let proto = Order {
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
                Self::needed_frozen(pair, &proto, qty).ok_or(RejectReason::Overflow)?
            }
        };
        if amount > available {
            return Err(RejectReason::InsufficientBalance);
        }
        Ok(amount)
    }

    fn place(&mut self, o: &NewOrder, ts: u64, out: &mut Vec<Event>) -> R<()> {
        let amount = self.check_order(o)?;
        self.risk_order(o)?;
        self.pairs[o.pair.0 as usize - 1].swept = None;
        let id = OrderId(self.next_order_id);
        self.next_order_id += 1;
        let tif = match o.kind {
            OrderType::Market | OrderType::LimitMaker => TimeInForce::Gtc,
            _ => o.tif,
        };
        let order = Order {
            id,
            user: o.user,
            pair: o.pair,
            side: o.side,
            kind: o.kind,
            tif,
            stp: o.stp,
            status: OrderStatus::New,
            price: o.price,
            stop_price: o.stop_price,
            qty: o.qty,
            filled: Qty(0),
            quote_qty: o.quote_qty,
            cum_quote: 0,
            frozen: amount,
            client_id: o.client_id,
            created_ms: ts,
            working_ms: if o.kind.is_stop() { 0 } else { ts },
            triggered: false,
        };
        let spend = self.spend_asset(&order);
        self.freeze(out, o.user, spend, amount, BalanceCause::OrderFreeze(id));
        out.push(Event::OrderAccepted(AcceptedOrder::from_order(&order)));
        if o.kind.is_stop() {
            self.orders.push(OpenOrder { order, arrival: 0 });
            return Ok(());
        }
        let traded = self.work(order, out);
        if traded {
            self.fire_stops(o.pair, ts, out);
        }
        Ok(())
    }

    /// Let an order take what it can, then rest it or end it. Returns
    /// whether it traded.
    fn work(&mut self, mut t: Order, out: &mut Vec<Event>) -> bool {
        if t.tif == TimeInForce::Fok && !self.fok_fillable(&t) {
            self.finish(t, OrderStatus::Expired, out);
            return false;
        }
        let filled_before = t.filled;
        let end = self.take(&mut t, out);
        let traded = t.filled != filled_before;
        if t.quote_qty == 0 && t.remaining() == 0 {
            self.finish(t, OrderStatus::Filled, out);
        } else if end == Taken::StpExpired {
            self.finish(t, OrderStatus::ExpiredInMatch, out);
        } else if t.quote_qty > 0 {
            // Filled once its quote amount is used up (to within a step).
            let used_up = end == Taken::Budget || t.cum_quote == t.quote_qty;
            let status = if t.filled.0 > 0 && used_up {
                OrderStatus::Filled
            } else {
                OrderStatus::Expired
            };
            self.finish(t, status, out);
        } else if t.kind.has_limit_price() && t.tif == TimeInForce::Gtc {
            t.status = if t.filled.0 > 0 {
                OrderStatus::PartiallyFilled
            } else {
                OrderStatus::New
            };
            let arrival = self.next_arrival;
            self.next_arrival += 1;
            self.orders.push(OpenOrder { order: t, arrival });
        } else {
            self.finish(t, OrderStatus::Expired, out);
        }
        traded
    }

    /// Does resting order `m` cross the limit of taker `t` (if it has one)?
    fn crosses(t: &Order, m: &Order) -> bool {
        if !t.kind.has_limit_price() {
            return true;
        }
        match t.side {
            Side::Buy => m.price.0 <= t.price.0,
            Side::Sell => m.price.0 >= t.price.0,
        }
    }

    /// Resting orders `t` could trade with, in price-time priority.
    fn counterparties(&self, t: &Order) -> Vec<usize> {
        let side = t.side.opposite();
        let mut v: Vec<usize> = (0..self.orders.len())
            .filter(|&i| {
                let m = &self.orders[i];
                !m.is_waiting_stop()
                    && m.order.pair == t.pair
                    && m.order.side == side
                    && Self::crosses(t, &m.order)
            })
            .collect();
        v.sort_by_key(|&i| {
            let m = &self.orders[i];
            (Self::priority(side, m.order.price.0), m.arrival)
        });
        v
    }

    /// FOK: could the whole quantity fill now, given self-trade prevention?
    fn fok_fillable(&self, t: &Order) -> bool {
        let need = t.remaining();
        let mut sum = 0u64;
        for i in self.counterparties(t) {
            let m = &self.orders[i].order;
            if m.user == t.user && t.stp != StpMode::None {
                match t.stp {
                    // That maker would be expired, not traded with.
                    StpMode::ExpireMaker => continue,
                    // The taker would be expired before filling.
                    _ => return false,
                }
            }
            sum += m.remaining();
            if sum >= need {
                return true;
            }
        }
        false
    }

    /// The matching loop: repeatedly trade with the best counterparty.
    fn take(&mut self, t: &mut Order, out: &mut Vec<Event>) -> Taken {
        let pair = self.pairs[t.pair.0 as usize - 1].pair.clone();
        let (base, quote) = (pair.spec.base, pair.spec.quote);
        loop {
            let Some(&mi) = self.counterparties(t).first() else {
                return Taken::NoLiquidity;
            };
            let m = self.orders[mi].order;
            let price = m.price.0;
            let want = if t.quote_qty > 0 {
                let step = pair.spec.step_units;
                match t.side {
                    Side::Buy => pair.affordable_qty(t.frozen, price),
                    Side::Sell => pair
                        .affordable_qty(t.quote_qty - t.cum_quote, price)
                        .min(t.frozen / step * step),
                }
            } else if t.side == Side::Buy && !t.kind.has_limit_price() {
                t.remaining().min(pair.affordable_qty(t.frozen, price))
            } else {
                t.remaining()
            };
            let q = want.min(m.remaining());
            if q == 0 {
                let step = pair.spec.step_units;
                let out_of_base = t.quote_qty > 0
                    && t.side == Side::Sell
                    && t.frozen < step
                    && pair.affordable_qty(t.quote_qty - t.cum_quote, price) > 0;
                return if out_of_base {
                    Taken::OutOfFunds
                } else {
                    Taken::Budget
                };
            }
            // Self-trade prevention applies only when a trade would happen.
            if m.user == t.user && t.stp != StpMode::None {
                self.stp_seen.push((t.user, t.pair, t.id, m.id, t.stp));
                if matches!(t.stp, StpMode::ExpireMaker | StpMode::ExpireBoth) {
                    self.orders.remove(mi);
                    self.finish(m, OrderStatus::ExpiredInMatch, out);
                }
                if matches!(t.stp, StpMode::ExpireTaker | StpMode::ExpireBoth) {
                    return Taken::StpExpired;
                }
                continue;
            }
            let c = pair
                .notional(q, price)
                .expect("a resting order's notional fits");
            let trade_id = TradeId(self.next_trade_id);
            self.next_trade_id += 1;

            t.filled.0 += q;
            t.cum_quote += c;
            let mut mk = m;
            mk.filled.0 += q;
            mk.cum_quote += c;
            mk.status = OrderStatus::PartiallyFilled;

            let (buyer_rate, seller_rate) = match t.side {
                Side::Buy => (pair.spec.taker_fee_e8, pair.spec.maker_fee_e8),
                Side::Sell => (pair.spec.maker_fee_e8, pair.spec.taker_fee_e8),
            };
            // Each side pays its fee in the asset it receives.
            let buyer_fee = Pair::fee(q, buyer_rate);
            let seller_fee = Pair::fee(c, seller_rate);
            let (maker_fee, taker_fee) = match t.side {
                Side::Buy => (seller_fee, buyer_fee),
                Side::Sell => (buyer_fee, seller_fee),
            };
            out.push(Event::Trade(Trade {
                id: trade_id,
                pair: t.pair,
                price: Price(price),
                qty: Qty(q),
                quote_qty: c,
                maker_order: mk.id,
                taker_order: t.id,
                maker_user: mk.user,
                taker_user: t.user,
                taker_side: t.side,
                maker_fee,
                taker_fee,
                maker_filled: mk.filled,
                taker_filled: t.filled,
            }));

            let (buyer, seller) = match t.side {
                Side::Buy => (&mut *t, &mut mk),
                Side::Sell => (&mut mk, &mut *t),
            };
            // The buyer spends c; an order with a limit price keeps exactly
            // notional(remaining, limit) frozen and gets the rest back.
            let keep = if buyer.kind.has_limit_price() {
                pair.notional(buyer.remaining(), buyer.price.0)
                    .expect("fits")
            } else {
                buyer.frozen - c
            };
            let buyer_back = buyer.frozen - c - keep;
            buyer.frozen = keep;
            seller.frozen -= q;
            let (buyer_user, seller_user) = (buyer.user, seller.user);
            self.move_funds(out, buyer_user, quote, BalanceCause::Trade(trade_id), |b| {
                b.frozen -= c + buyer_back;
                b.available += buyer_back;
            });
            self.move_funds(out, buyer_user, base, BalanceCause::Trade(trade_id), |b| {
                b.available += q - buyer_fee
            });
            self.move_funds(out, seller_user, base, BalanceCause::Trade(trade_id), |b| {
                b.frozen -= q
            });
            self.move_funds(
                out,
                seller_user,
                quote,
                BalanceCause::Trade(trade_id),
                |b| b.available += c - seller_fee,
            );
            let fee_account = self.fee_account;
            if buyer_fee > 0 {
                self.move_funds(
                    out,
                    fee_account,
                    base,
                    BalanceCause::TradeFee(trade_id),
                    |b| b.available += buyer_fee,
                );
            }
            if seller_fee > 0 {
                self.move_funds(
                    out,
                    fee_account,
                    quote,
                    BalanceCause::TradeFee(trade_id),
                    |b| b.available += seller_fee,
                );
            }
            let rp = &mut self.pairs[t.pair.0 as usize - 1];
            rp.last_price = price;
            rp.swept = Some(match rp.swept {
                None => (price, price),
                Some((lo, hi)) => (lo.min(price), hi.max(price)),
            });

            if mk.remaining() == 0 {
                debug_assert_eq!(mk.frozen, 0);
                self.orders.remove(mi);
                out.push(Event::OrderDone {
                    order: mk.id,
                    user: mk.user,
                    pair: mk.pair,
                    status: OrderStatus::Filled,
                    filled: mk.filled,
                    cum_quote: mk.cum_quote,
                });
            } else {
                self.orders[mi].order = mk;
            }
            if t.quote_qty == 0 && t.remaining() == 0 {
                return Taken::Filled;
            }
        }
    }

    /// Fire waiting stops of `pair` while the last price reaches them:
    /// rising stops first (lowest stop price, then oldest), then falling
    /// ones (highest stop price, then oldest).
    fn fire_stops(&mut self, pair: PairId, ts: u64, out: &mut Vec<Event>) {
        loop {
            let last = self.pairs[pair.0 as usize - 1].last_price;
            if last == 0 {
                return;
            }
            // A stop fires if any trade of this command reached it: rising
            // stops against the highest trade price, falling ones against the
            // lowest.
            let (lo, hi) = self.pairs[pair.0 as usize - 1]
                .swept
                .unwrap_or((last, last));
            let reached = |o: &&OpenOrder, up: bool| {
                let seen = if up { hi } else { lo };
                o.is_waiting_stop()
                    && o.order.pair == pair
                    && stop_rises(o.order.side, o.order.kind) == up
                    && stop_reached(o.order.side, o.order.kind, o.order.stop_price.0, seen)
            };
            let up = self
                .orders
                .iter()
                .filter(|o| reached(o, true))
                .min_by_key(|o| (o.order.stop_price, o.order.id));
            let down = self
                .orders
                .iter()
                .filter(|o| reached(o, false))
                .min_by_key(|o| (u64::MAX - o.order.stop_price.0, o.order.id));
            let Some(next) = up.or(down).map(|o| o.order.id) else {
                return;
            };
            let i = self.index_of(next).expect("found above");
            let mut t = self.orders.remove(i).order;
            t.triggered = true;
            t.working_ms = ts;
            out.push(Event::StopTriggered {
                order: t.id,
                user: t.user,
                pair,
                last_price: Price(last),
            });
            if !t.kind.has_limit_price() {
                t.tif = TimeInForce::Ioc;
            }
            self.work(t, out);
        }
    }

    /// End an order that is out of the book: release what it still holds.
    fn finish(&mut self, mut o: Order, status: OrderStatus, out: &mut Vec<Event>) {
        if o.frozen > 0 {
            let spend = self.spend_asset(&o);
            self.release(
                out,
                o.user,
                spend,
                o.frozen,
                BalanceCause::OrderRelease(o.id),
            );
            o.frozen = 0;
        }
        out.push(Event::OrderDone {
            order: o.id,
            user: o.user,
            pair: o.pair,
            status,
            filled: o.filled,
            cum_quote: o.cum_quote,
        });
    }

    fn cancel_at(&mut self, i: usize, out: &mut Vec<Event>) {
        let o = self.orders.remove(i).order;
        self.finish(o, OrderStatus::Canceled, out);
    }

    fn amend(
        &mut self,
        user: UserId,
        pair: PairId,
        target: &OrderRef,
        new_qty: Qty,
        out: &mut Vec<Event>,
    ) -> R<()> {
        let i = self.find_open(user, pair, target)?;
        let o = self.orders[i].order;
        let p = self.pairs[pair.0 as usize - 1].pair.clone();
        let q = new_qty.0;
        if o.quote_qty > 0
            || q >= o.qty.0
            || q <= o.filled.0
            || !q.is_multiple_of(p.spec.step_units)
        {
            return Err(RejectReason::InvalidAmendQty);
        }
        let keep = Self::needed_frozen(&p, &o, q - o.filled.0)
            .unwrap_or(o.frozen)
            .min(o.frozen);
        let back = o.frozen - keep;
        let mo = &mut self.orders[i].order;
        mo.qty = new_qty;
        mo.frozen = keep;
        if back > 0 {
            let spend = self.spend_asset(&o);
            self.release(out, user, spend, back, BalanceCause::OrderRelease(o.id));
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

// ------------------------------------------------------------------- risk

impl ReferenceEngine {
    /// Live risk rules, by id.
    pub fn risk_rules(&self) -> Vec<RiskRule> {
        self.risk_rules.clone()
    }
    /// Risk events not yet resolved or dismissed, by id.
    pub fn open_risk_events(&self) -> Vec<RiskEvent> {
        self.risk_events
            .iter()
            .filter(|e| !e.status.is_final())
            .cloned()
            .collect()
    }
    pub fn roles_of(&self, user: UserId) -> Option<u32> {
        self.users.get(user.0 as usize).map(|u| u.roles)
    }

    fn risk_actor(&self, by: UserId) -> R<()> {
        if self.login_user(by)?.status != UserStatus::Active {
            return Err(RejectReason::UserSuspended);
        }
        Ok(())
    }

    fn risk_limit(&self, kind: RiskRuleType, text: &str) -> R<RiskLimit> {
        let params = RiskParams::parse(kind, text).map_err(|_| RejectReason::InvalidRiskRule)?;
        let pair_named = |s: &Option<String>| -> R<Option<PairId>> {
            match s {
                None => Ok(None),
                Some(s) => self
                    .pairs
                    .iter()
                    .find(|p| p.pair.spec.symbol == *s)
                    .map(|p| Some(p.pair.id))
                    .ok_or(RejectReason::UnknownPair),
            }
        };
        Ok(match params {
            RiskParams::OrderNotional {
                symbol,
                max_notional,
            } => RiskLimit::OrderNotional {
                pair: pair_named(&symbol)?,
                max_e18: amount_e18(max_notional),
            },
            RiskParams::LargeWithdrawal { asset, threshold } => {
                let a = self
                    .assets
                    .iter()
                    .find(|a| a.spec.symbol == asset)
                    .ok_or(RejectReason::UnknownAsset)?;
                let units = crate::decimal::decimal_to_units(threshold, a.spec.decimals as u32)
                    .map_err(|_| RejectReason::InvalidRiskRule)?;
                RiskLimit::LargeWithdrawal {
                    asset: a.id,
                    threshold_units: units,
                }
            }
            RiskParams::LoginFailure { max_failures } => RiskLimit::LoginFailure {
                failures: max_failures,
            },
            RiskParams::SelfTrade { symbol } => RiskLimit::SelfTrade {
                pair: pair_named(&symbol)?,
            },
            RiskParams::Custom => RiskLimit::None,
        })
    }

    /// Enabled rules of a type, by id.
    fn enabled_rules(&self, kind: RiskRuleType) -> Vec<RiskRule> {
        self.risk_rules
            .iter()
            .filter(|r| r.enabled && r.kind == kind)
            .cloned()
            .collect()
    }

    /// ORDER_NOTIONAL: an order that passed every other check.
    fn risk_order(&mut self, o: &NewOrder) -> R<()> {
        let p = self.pair(o.pair).ok_or(RejectReason::UnknownPair)?.clone();
        let units = if o.quote_qty > 0 {
            Some(o.quote_qty)
        } else {
            let best_opposite = self
                .book_orders(o.pair, o.side.opposite())
                .first()
                .map_or(0, |m| m.price.0);
            let price = [
                if o.kind.has_limit_price() {
                    o.price.0
                } else {
                    0
                },
                o.stop_price.0,
                p.last_price,
                best_opposite,
            ]
            .into_iter()
            .find(|&x| x > 0);
            price.map(|x| p.pair.notional(o.qty.0, x).unwrap_or(u64::MAX))
        };
        let Some(units) = units else {
            return Ok(());
        };
        let qd = self.asset(p.pair.spec.quote)?.spec.decimals as u32;
        let e18 = units as u128 * 10u128.pow(18 - qd);
        let fired: Vec<(RiskRule, u128)> = self
            .enabled_rules(RiskRuleType::OrderNotional)
            .into_iter()
            .filter_map(|r| match r.limit {
                RiskLimit::OrderNotional { pair, max_e18 }
                    if pair.is_none_or(|x| x == o.pair) && e18 > max_e18 =>
                {
                    Some((r, max_e18))
                }
                _ => None,
            })
            .collect();
        let blocked = fired.iter().any(|(r, _)| r.action == RiskAction::Block);
        for (r, max) in &fired {
            let details = order_notional_details(
                &p.pair.spec.symbol,
                o.side,
                o.kind,
                &crate::decimal::format_units(units, qd),
                *max,
                blocked,
                (!blocked).then_some(OrderId(self.next_order_id)),
            );
            self.risk_pending.push((r.id, o.user, details));
        }
        if blocked {
            return Err(RejectReason::RiskOrderNotional);
        }
        Ok(())
    }

    /// LARGE_WITHDRAWAL: a request that passed every other check.
    fn risk_withdrawal(&mut self, user: UserId, asset: AssetId, amount: u64) -> R<()> {
        let a = self.asset(asset)?.clone();
        let d = a.spec.decimals as u32;
        let fired: Vec<(RiskRule, u64)> = self
            .enabled_rules(RiskRuleType::LargeWithdrawal)
            .into_iter()
            .filter_map(|r| match r.limit {
                RiskLimit::LargeWithdrawal {
                    asset: x,
                    threshold_units,
                } if x == asset && amount >= threshold_units => Some((r, threshold_units)),
                _ => None,
            })
            .collect();
        let blocked = fired.iter().any(|(r, _)| r.action == RiskAction::Block);
        for (r, threshold) in &fired {
            let details = large_withdrawal_details(
                &a.spec.symbol,
                &crate::decimal::format_units(amount, d),
                &crate::decimal::format_units(*threshold, d),
                blocked,
                (!blocked).then_some(self.next_withdrawal_id),
            );
            self.risk_pending.push((r.id, user, details));
        }
        if blocked {
            return Err(RejectReason::RiskLargeWithdrawal);
        }
        Ok(())
    }

    /// LOGIN_FAILURE: after a recorded failure.
    fn risk_login_failure(&mut self, user: UserId, failed: u32, locked_until: u64) {
        for r in self.enabled_rules(RiskRuleType::LoginFailure) {
            if r.limit == (RiskLimit::LoginFailure { failures: failed }) {
                let details = login_failure_details(failed, failed, locked_until);
                self.risk_pending.push((r.id, user, details));
            }
        }
    }

    /// End of a command: raise what it triggered (the pending events, then
    /// per SELF_TRADE rule one event per user whose self-trade prevention
    /// fired, in the order they first did).
    fn raise_risk_events(&mut self, ts: u64, out: &mut Vec<Event>) {
        let mut raise: Vec<(u64, UserId, String)> = std::mem::take(&mut self.risk_pending);
        let seen = std::mem::take(&mut self.stp_seen);
        for r in self.enabled_rules(RiskRuleType::SelfTrade) {
            let RiskLimit::SelfTrade { pair } = r.limit else {
                continue;
            };
            let mine: Vec<_> = seen
                .iter()
                .filter(|h| pair.is_none_or(|x| x == h.1))
                .collect();
            let mut users: Vec<UserId> = Vec::new();
            for h in &mine {
                if users.contains(&h.0) {
                    continue;
                }
                users.push(h.0);
                let n = mine.iter().filter(|x| x.0 == h.0).count() as u32;
                let symbol = self.pair(h.1).map_or("", |p| p.pair.spec.symbol.as_str());
                raise.push((r.id, h.0, self_trade_details(symbol, h.4, h.2, h.3, n)));
            }
        }
        for (rule, user, details) in raise {
            let r = self
                .risk_rules
                .iter()
                .find(|x| x.id == rule)
                .expect("a rule that just fired")
                .clone();
            let ev = RiskEvent {
                id: self.risk_events.len() as u64 + 1,
                rule,
                user,
                kind: r.kind,
                level: r.level,
                action: r.action,
                details,
                status: RiskEventStatus::Open,
                created_ms: ts,
                updated_ms: ts,
                handled_by: None,
                note: String::new(),
            };
            out.push(Event::RiskEventRaised(Box::new(ev.clone())));
            self.risk_events.push(ev);
        }
    }
}

// ------------------------------------------------------------- settlement

impl ReferenceEngine {
    /// Accepted settlement batches, by settled day.
    pub fn settlements(&self) -> Vec<Settlement> {
        let mut v = self.settled.clone();
        v.sort_by_key(|s| s.date);
        v
    }

    /// A day may be settled once it is over (its last millisecond is before
    /// the command's time) and only once.
    fn run_settlement(
        &mut self,
        date: u32,
        requested_by: UserId,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        self.user(requested_by)?;
        let day_end_ms = (date as u64 + 1) * DAY_MS;
        if ts < day_end_ms {
            return Err(RejectReason::SettlementDayNotOver);
        }
        if self.settled.iter().any(|s| s.date == date) {
            return Err(RejectReason::AlreadySettled);
        }
        let id = self.next_settlement_id;
        self.next_settlement_id += 1;
        self.settled.push(Settlement {
            id,
            date,
            requested_by,
            requested_ms: ts,
        });
        out.push(Event::SettlementRequested {
            id,
            date,
            requested_by,
            ts_ms: ts,
        });
        Ok(())
    }
}
