//! Risk rules and risk events: configuration the admins journal
//! (`CreateRiskRule`, `UpdateRiskRule`, `DeleteRiskRule`), evaluated by the
//! engine where they apply, and the events they raise (`RiskEventRaised`),
//! which admins acknowledge, resolve or dismiss (`SetRiskEventStatus`).
//!
//! Rules the engine evaluates:
//! * `ORDER_NOTIONAL` `{"max_notional": "<decimal>", "symbol"?: "BTCUSDT"}`:
//!   a new order (placement or the new part of a cancel-replace) whose
//!   notional, in units of its pair's quote asset, is above `max_notional`.
//!   Notional: quoteOrderQty for a market order by quote amount, else
//!   quantity x the limit price (stop price for market-variant stops; for a
//!   market order by quantity the last trade price, else the best opposite
//!   price, else nothing to compare). BLOCK refuses the order
//!   (`RiskOrderNotional`).
//! * `LARGE_WITHDRAWAL` `{"asset": "BTC", "threshold": "<decimal>"}`: a
//!   withdrawal request of at least `threshold`. BLOCK refuses it
//!   (`RiskLargeWithdrawal`).
//! * `LOGIN_FAILURE` `{"max_failures": N}` (1..=100): the N-th consecutive
//!   failed password login (once per streak). ALERT only. The lockout
//!   (`Limits::max_failed_logins`, unless 0) ends a streak, so an N above
//!   it never fires.
//! * `SELF_TRADE` `{"symbol"?: "BTCUSDT"}`: a self-trade prevention expiry
//!   (EXPIRED_IN_MATCH of the maker, the taker or both); one event per rule
//!   and user per command. ALERT only.
//! * `CUSTOM` (any JSON object): stored, never evaluated.
//!
//! The other types of the schema are refused until the engine evaluates
//! them. A rule is checked only after every other check of its command
//! passed, so an event always describes something that would otherwise
//! have happened. Every matching enabled rule raises its own event; one
//! BLOCK rule among them refuses the command. A refused command changes
//! nothing but the risk events it raised: they follow its `Rejected` event.
//! Risk events always come last among a command's events.
//!
//! Cost when no rule of a type is enabled: one emptiness check of that
//! type's list of enabled rule ids (kept per type, rebuilt on every rule
//! change), no allocation. Events are raised at the end of `apply` from a
//! reused pending list.
//!
//! The engine keeps rules, counters and the events still OPEN or
//! ACKNOWLEDGED; a resolved or dismissed event leaves its state (its history
//! lives in the read models and Postgres).
//!
//! Parameters arrive as JSON text (at most `RISK_PARAMETERS_MAX_LEN` bytes)
//! that the gateway validated with [`RiskParams::parse`]; the engine parses
//! it again (refusing what does not parse) and resolves symbols to ids, so
//! the rule it stores is typed ([`RiskLimit`]). Event details are JSON
//! object text written by hand (fixed key order), so they are byte-identical
//! on every build.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::command::NewOrder;
use crate::decimal::{decimal_to_units, format_units, parse_decimal, DecimalError};
use crate::engine::Engine;
use crate::event::Event;
use crate::model::roles;
use crate::reject::RejectReason;
use crate::types::*;

type R<T> = Result<T, RejectReason>;

/// Longest rule name (`risk_rules.name` is VARCHAR(100)).
pub const RISK_RULE_NAME_MAX_LEN: usize = 100;
/// Longest rule description and event note.
pub const RISK_TEXT_MAX_LEN: usize = 1024;
/// Longest parameters text (a JSON object).
pub const RISK_PARAMETERS_MAX_LEN: usize = 2048;
/// Rules the engine holds at most (deleted ones do not count).
pub const MAX_RISK_RULES: usize = 1_000;
/// Largest `max_failures` of a LOGIN_FAILURE rule.
pub const LOGIN_FAILURE_MAX: u64 = 100;

const E18: u128 = 1_000_000_000_000_000_000;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RiskRuleType {
    OrderSize,
    OrderNotional,
    PriceBand,
    OrderRate,
    OpenOrders,
    DailyVolume,
    DailyWithdrawal,
    LargeWithdrawal,
    LoginFailure,
    SelfTrade,
    Custom,
}

impl RiskRuleType {
    pub const ALL: [RiskRuleType; 11] = [
        RiskRuleType::OrderSize,
        RiskRuleType::OrderNotional,
        RiskRuleType::PriceBand,
        RiskRuleType::OrderRate,
        RiskRuleType::OpenOrders,
        RiskRuleType::DailyVolume,
        RiskRuleType::DailyWithdrawal,
        RiskRuleType::LargeWithdrawal,
        RiskRuleType::LoginFailure,
        RiskRuleType::SelfTrade,
        RiskRuleType::Custom,
    ];

    /// The schema's name (`risk_rules.type`).
    pub fn name(self) -> &'static str {
        match self {
            RiskRuleType::OrderSize => "ORDER_SIZE",
            RiskRuleType::OrderNotional => "ORDER_NOTIONAL",
            RiskRuleType::PriceBand => "PRICE_BAND",
            RiskRuleType::OrderRate => "ORDER_RATE",
            RiskRuleType::OpenOrders => "OPEN_ORDERS",
            RiskRuleType::DailyVolume => "DAILY_VOLUME",
            RiskRuleType::DailyWithdrawal => "DAILY_WITHDRAWAL",
            RiskRuleType::LargeWithdrawal => "LARGE_WITHDRAWAL",
            RiskRuleType::LoginFailure => "LOGIN_FAILURE",
            RiskRuleType::SelfTrade => "SELF_TRADE",
            RiskRuleType::Custom => "CUSTOM",
        }
    }

    pub fn from_name(s: &str) -> Option<RiskRuleType> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Whether rules of this type can be created (evaluated, or CUSTOM).
    pub fn supported(self) -> bool {
        matches!(
            self,
            RiskRuleType::OrderNotional
                | RiskRuleType::LargeWithdrawal
                | RiskRuleType::LoginFailure
                | RiskRuleType::SelfTrade
                | RiskRuleType::Custom
        )
    }

    /// Whether a BLOCK action means anything for this type.
    pub fn can_block(self) -> bool {
        matches!(
            self,
            RiskRuleType::OrderNotional | RiskRuleType::LargeWithdrawal
        )
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

impl RiskLevel {
    pub const ALL: [RiskLevel; 4] = [
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];
    pub fn name(self) -> &'static str {
        match self {
            RiskLevel::Low => "LOW",
            RiskLevel::Medium => "MEDIUM",
            RiskLevel::High => "HIGH",
            RiskLevel::Critical => "CRITICAL",
        }
    }
    pub fn from_name(s: &str) -> Option<RiskLevel> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// What a matching rule does: raise an event only, or also refuse.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RiskAction {
    Alert,
    Block,
}

impl RiskAction {
    pub fn name(self) -> &'static str {
        match self {
            RiskAction::Alert => "ALERT",
            RiskAction::Block => "BLOCK",
        }
    }
    pub fn from_name(s: &str) -> Option<RiskAction> {
        [RiskAction::Alert, RiskAction::Block]
            .into_iter()
            .find(|t| t.name() == s)
    }
}

/// OPEN -> ACKNOWLEDGED -> RESOLVED | DISMISSED (OPEN may be resolved or
/// dismissed directly). RESOLVED and DISMISSED are final.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RiskEventStatus {
    Open,
    Acknowledged,
    Resolved,
    Dismissed,
}

impl RiskEventStatus {
    pub const ALL: [RiskEventStatus; 4] = [
        RiskEventStatus::Open,
        RiskEventStatus::Acknowledged,
        RiskEventStatus::Resolved,
        RiskEventStatus::Dismissed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            RiskEventStatus::Open => "OPEN",
            RiskEventStatus::Acknowledged => "ACKNOWLEDGED",
            RiskEventStatus::Resolved => "RESOLVED",
            RiskEventStatus::Dismissed => "DISMISSED",
        }
    }
    pub fn from_name(s: &str) -> Option<RiskEventStatus> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }
    pub fn is_final(self) -> bool {
        matches!(self, RiskEventStatus::Resolved | RiskEventStatus::Dismissed)
    }
}

/// A rule's parameters resolved against the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RiskLimit {
    /// CUSTOM: nothing to evaluate.
    None,
    /// Notional above `max_e18` (10^-18 units of the pair's quote asset).
    OrderNotional {
        pair: Option<PairId>,
        max_e18: u128,
    },
    /// Amount at or above `threshold_units` of `asset`.
    LargeWithdrawal {
        asset: AssetId,
        threshold_units: u64,
    },
    /// The `failures`-th consecutive failed password login.
    LoginFailure {
        failures: u32,
    },
    SelfTrade {
        pair: Option<PairId>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskRule {
    pub id: u64,
    pub name: String,
    pub kind: RiskRuleType,
    /// The JSON object as journaled.
    pub parameters: String,
    pub limit: RiskLimit,
    pub level: RiskLevel,
    pub action: RiskAction,
    pub enabled: bool,
    pub description: String,
    pub created_by: UserId,
    pub updated_by: UserId,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// 1 at creation, +1 per update.
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskEvent {
    pub id: u64,
    pub rule: u64,
    pub user: UserId,
    pub kind: RiskRuleType,
    pub level: RiskLevel,
    /// The rule's action when it fired.
    pub action: RiskAction,
    /// A JSON object (text) describing what fired the rule.
    pub details: String,
    pub status: RiskEventStatus,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Who last changed the status (None while OPEN).
    pub handled_by: Option<UserId>,
    /// Note of the last status change.
    pub note: String,
}

/// Optional changes of an `UpdateRiskRule` (None = keep).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskRuleChanges {
    pub name: Option<String>,
    pub parameters: Option<String>,
    pub level: Option<RiskLevel>,
    pub action: Option<RiskAction>,
    pub enabled: Option<bool>,
    pub description: Option<String>,
}

impl RiskRuleChanges {
    pub fn is_empty(&self) -> bool {
        *self == RiskRuleChanges::default()
    }
}

// ------------------------------------------------------------- validation

/// Rule name: 1..=100 bytes of `A-Z a-z 0-9 space _ . : -`, not starting
/// or ending with a space.
pub fn valid_rule_name(s: &str) -> bool {
    (1..=RISK_RULE_NAME_MAX_LEN).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b' ' | b'_' | b'.' | b':' | b'-'))
        && !s.starts_with(' ')
        && !s.ends_with(' ')
}

/// Description or note: at most 1024 bytes, no control characters.
pub fn valid_risk_text(s: &str) -> bool {
    s.len() <= RISK_TEXT_MAX_LEN && !s.chars().any(char::is_control)
}

/// Parameters as parsed from JSON, before symbols are resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RiskParams {
    OrderNotional {
        symbol: Option<String>,
        max_notional: Decimal,
    },
    LargeWithdrawal {
        asset: String,
        threshold: Decimal,
    },
    LoginFailure {
        max_failures: u32,
    },
    SelfTrade {
        symbol: Option<String>,
    },
    Custom,
}

fn valid_symbol_text(s: &str) -> bool {
    (1..=20).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// A positive decimal below 10^20 with at most 18 decimals.
fn positive_amount(s: &str) -> Result<Decimal, &'static str> {
    let d = parse_decimal(s).map_err(|e| match e {
        DecimalError::Negative => "must not be negative",
        DecimalError::Overflow => "is too large (below 10^20)",
        DecimalError::TooManyDecimals { .. } => "has too many decimals (at most 18)",
        _ => "must be a decimal number",
    })?;
    if d.is_zero() {
        return Err("must be greater than zero");
    }
    let d = d.normalize();
    if d.scale() > 18 {
        return Err("has too many decimals (at most 18)");
    }
    if d >= Decimal::from_i128_with_scale(100_000_000_000_000_000_000, 0) {
        return Err("is too large (below 10^20)");
    }
    Ok(d)
}

/// A decimal accepted by `positive_amount` in units of 10^-18.
pub fn amount_e18(d: Decimal) -> u128 {
    let d = d.normalize();
    // Below 10^20 with at most 18 decimals: the product is below 10^38.
    (d.mantissa().unsigned_abs()) * 10u128.pow(18 - d.scale().min(18))
}

/// `v` (10^-18 units) as a plain decimal without trailing zeros.
pub fn format_e18(v: u128) -> String {
    let int = v / E18;
    let frac = v % E18;
    if frac == 0 {
        return int.to_string();
    }
    let f = format!("{frac:018}");
    format!("{int}.{}", f.trim_end_matches('0'))
}

impl RiskParams {
    /// Validate `text` as the parameters of a `kind` rule; the error says
    /// what is wrong, for the API's answer.
    pub fn parse(kind: RiskRuleType, text: &str) -> Result<RiskParams, String> {
        if text.len() > RISK_PARAMETERS_MAX_LEN {
            return Err(format!(
                "parameters must be at most {RISK_PARAMETERS_MAX_LEN} bytes of JSON."
            ));
        }
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else {
            return Err("parameters must be a JSON object.".into());
        };
        let allowed: &[&str] = match kind {
            RiskRuleType::OrderNotional => &["max_notional", "symbol"],
            RiskRuleType::LargeWithdrawal => &["asset", "threshold"],
            RiskRuleType::LoginFailure => &["max_failures"],
            RiskRuleType::SelfTrade => &["symbol"],
            RiskRuleType::Custom => return Ok(RiskParams::Custom),
            other => {
                return Err(format!(
                    "rule type {} is not evaluated by this exchange yet (supported: ORDER_NOTIONAL, LARGE_WITHDRAWAL, LOGIN_FAILURE, SELF_TRADE, CUSTOM).",
                    other.name()
                ))
            }
        };
        if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
            let k: String = k.chars().take(64).collect();
            return Err(format!(
                "unknown parameter '{k}' for {}; it takes: {}.",
                kind.name(),
                allowed.join(", ")
            ));
        }
        let symbol = |key: &str, required: bool| -> Result<Option<String>, String> {
            match m.get(key) {
                None if required => Err(format!("parameters.{key} is required.")),
                None => Ok(None),
                Some(Value::String(s)) if valid_symbol_text(s) => Ok(Some(s.clone())),
                Some(_) => Err(format!(
                    "parameters.{key} must be a symbol string (1 to 20 of A-Z 0-9)."
                )),
            }
        };
        let amount = |key: &str| -> Result<Decimal, String> {
            match m.get(key) {
                None => Err(format!("parameters.{key} is required.")),
                Some(Value::String(s)) => {
                    positive_amount(s).map_err(|why| format!("parameters.{key} {why}."))
                }
                Some(_) => Err(format!(
                    "parameters.{key} must be a decimal string, e.g. \"50000\"."
                )),
            }
        };
        Ok(match kind {
            RiskRuleType::OrderNotional => RiskParams::OrderNotional {
                symbol: symbol("symbol", false)?,
                max_notional: amount("max_notional")?,
            },
            RiskRuleType::LargeWithdrawal => RiskParams::LargeWithdrawal {
                asset: symbol("asset", true)?.unwrap_or_default(),
                threshold: amount("threshold")?,
            },
            RiskRuleType::LoginFailure => match m.get("max_failures").map(Value::as_u64) {
                Some(Some(n)) if (1..=LOGIN_FAILURE_MAX).contains(&n) => RiskParams::LoginFailure {
                    max_failures: n as u32,
                },
                None => return Err("parameters.max_failures is required.".into()),
                _ => {
                    return Err(format!(
                        "parameters.max_failures must be an integer from 1 to {LOGIN_FAILURE_MAX}."
                    ))
                }
            },
            _ => RiskParams::SelfTrade {
                symbol: symbol("symbol", false)?,
            },
        })
    }
}

// --------------------------------------------------------------- details

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Details of an ORDER_NOTIONAL event.
#[allow(clippy::too_many_arguments)]
pub fn order_notional_details(
    symbol: &str,
    side: Side,
    kind: OrderType,
    notional: &str,
    max_notional_e18: u128,
    blocked: bool,
    order_id: Option<OrderId>,
) -> String {
    let mut s = format!(
        "{{\"symbol\":{},\"side\":\"{}\",\"order_type\":\"{}\",\"notional\":{},\"max_notional\":{},\"blocked\":{blocked}",
        json_str(symbol),
        side.as_str(),
        kind.as_str(),
        json_str(notional),
        json_str(&format_e18(max_notional_e18)),
    );
    if let Some(id) = order_id {
        s.push_str(&format!(",\"order_id\":{}", id.0));
    }
    s.push('}');
    s
}

/// Details of a LARGE_WITHDRAWAL event.
pub fn large_withdrawal_details(
    asset: &str,
    amount: &str,
    threshold: &str,
    blocked: bool,
    withdrawal_id: Option<u64>,
) -> String {
    let mut s = format!(
        "{{\"asset\":{},\"amount\":{},\"threshold\":{},\"blocked\":{blocked}",
        json_str(asset),
        json_str(amount),
        json_str(threshold),
    );
    if let Some(id) = withdrawal_id {
        s.push_str(&format!(",\"withdrawal_id\":{id}"));
    }
    s.push('}');
    s
}

/// Details of a LOGIN_FAILURE event.
pub fn login_failure_details(
    failed_logins: u32,
    max_failures: u32,
    locked_until_ms: u64,
) -> String {
    format!(
        "{{\"failed_logins\":{failed_logins},\"max_failures\":{max_failures},\"locked_until\":{locked_until_ms}}}"
    )
}

/// Details of a SELF_TRADE event.
pub fn self_trade_details(
    symbol: &str,
    stp: StpMode,
    taker_order: OrderId,
    maker_order: OrderId,
    expiries: u32,
) -> String {
    format!(
        "{{\"symbol\":{},\"stp_mode\":\"{}\",\"taker_order_id\":{},\"maker_order_id\":{},\"stp_expiries\":{expiries}}}",
        json_str(symbol),
        stp.as_str(),
        taker_order.0,
        maker_order.0
    )
}

// ------------------------------------------------------------------ state

/// A risk event waiting to be raised at the end of the command.
#[derive(Clone, Debug)]
pub(crate) struct PendingRisk {
    rule: u64,
    user: UserId,
    details: String,
}

/// One self-trade prevention expiry seen while matching.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StpHit {
    user: UserId,
    pair: PairId,
    taker: OrderId,
    maker: OrderId,
    mode: StpMode,
}

#[derive(Clone, Debug)]
pub(crate) struct RiskState {
    pub(crate) next_rule_id: u64,
    pub(crate) next_event_id: u64,
    pub(crate) rules: BTreeMap<u64, RiskRule>,
    /// Events still OPEN or ACKNOWLEDGED.
    pub(crate) open_events: BTreeMap<u64, RiskEvent>,
    // Derived from `rules` (ids of enabled rules by type, ascending).
    order_notional: Vec<u64>,
    large_withdrawal: Vec<u64>,
    login_failure: Vec<u64>,
    self_trade: Vec<u64>,
    // Transient within one command.
    pending: Vec<PendingRisk>,
    stp_hits: Vec<StpHit>,
}

impl Default for RiskState {
    fn default() -> Self {
        RiskState {
            next_rule_id: 1,
            next_event_id: 1,
            rules: BTreeMap::new(),
            open_events: BTreeMap::new(),
            order_notional: Vec::new(),
            large_withdrawal: Vec::new(),
            login_failure: Vec::new(),
            self_trade: Vec::new(),
            pending: Vec::new(),
            stp_hits: Vec::new(),
        }
    }
}

impl RiskState {
    /// Rebuild the per-type lists of enabled rules.
    pub(crate) fn reindex(&mut self) {
        self.order_notional.clear();
        self.large_withdrawal.clear();
        self.login_failure.clear();
        self.self_trade.clear();
        for r in self.rules.values().filter(|r| r.enabled) {
            let list = match r.kind {
                RiskRuleType::OrderNotional => &mut self.order_notional,
                RiskRuleType::LargeWithdrawal => &mut self.large_withdrawal,
                RiskRuleType::LoginFailure => &mut self.login_failure,
                RiskRuleType::SelfTrade => &mut self.self_trade,
                _ => continue,
            };
            list.push(r.id);
        }
    }

    /// Called by the matching loop on every self-trade prevention expiry.
    #[inline]
    pub(crate) fn note_stp(
        &mut self,
        user: UserId,
        pair: PairId,
        taker: OrderId,
        maker: OrderId,
        mode: StpMode,
    ) {
        if !self.self_trade.is_empty() {
            self.stp_hits.push(StpHit {
                user,
                pair,
                taker,
                maker,
                mode,
            });
        }
    }

    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.stp_hits.is_empty()
    }
}

// ---------------------------------------------------------------- engine

impl Engine {
    pub fn risk_rules(&self) -> impl Iterator<Item = &RiskRule> {
        self.risk.rules.values()
    }
    pub fn risk_rule(&self, id: u64) -> Option<&RiskRule> {
        self.risk.rules.get(&id)
    }
    /// Risk events still OPEN or ACKNOWLEDGED, by id.
    pub fn open_risk_events(&self) -> impl Iterator<Item = &RiskEvent> {
        self.risk.open_events.values()
    }
    /// Next ids: (rule, event).
    pub fn next_risk_ids(&self) -> (u64, u64) {
        (self.risk.next_rule_id, self.risk.next_event_id)
    }

    /// Parse and resolve parameters of a `kind` rule.
    fn resolve_risk_limit(&self, kind: RiskRuleType, text: &str) -> R<RiskLimit> {
        let params = RiskParams::parse(kind, text).map_err(|_| RejectReason::InvalidRiskRule)?;
        let pair_of = |s: &Option<String>| -> R<Option<PairId>> {
            match s {
                None => Ok(None),
                Some(s) => self
                    .pair_by_symbol(s)
                    .map(|p| Some(p.pair.id))
                    .ok_or(RejectReason::UnknownPair),
            }
        };
        Ok(match params {
            RiskParams::OrderNotional {
                symbol,
                max_notional,
            } => RiskLimit::OrderNotional {
                pair: pair_of(&symbol)?,
                max_e18: amount_e18(max_notional),
            },
            RiskParams::LargeWithdrawal { asset, threshold } => {
                let a = self
                    .asset_by_symbol(&asset)
                    .ok_or(RejectReason::UnknownAsset)?;
                let units = decimal_to_units(threshold, a.spec.decimals as u32)
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
                pair: pair_of(&symbol)?,
            },
            RiskParams::Custom => RiskLimit::None,
        })
    }

    fn risk_name_taken(&self, name: &str, except: u64) -> bool {
        self.risk
            .rules
            .values()
            .any(|r| r.id != except && r.name.eq_ignore_ascii_case(name))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_risk_rule(
        &mut self,
        by: UserId,
        name: &str,
        kind: RiskRuleType,
        parameters: &str,
        level: RiskLevel,
        action: RiskAction,
        enabled: bool,
        description: &str,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        self.staff_user(by)?;
        if !valid_rule_name(name)
            || !valid_risk_text(description)
            || !kind.supported()
            || (action == RiskAction::Block && !kind.can_block())
        {
            return Err(RejectReason::InvalidRiskRule);
        }
        let limit = self.resolve_risk_limit(kind, parameters)?;
        if self.risk_name_taken(name, 0) {
            return Err(RejectReason::RiskRuleNameTaken);
        }
        if self.risk.rules.len() >= MAX_RISK_RULES {
            return Err(RejectReason::TooManyRiskRules);
        }
        let id = self.risk.next_rule_id;
        self.risk.next_rule_id += 1;
        let rule = RiskRule {
            id,
            name: name.to_string(),
            kind,
            parameters: parameters.to_string(),
            limit,
            level,
            action,
            enabled,
            description: description.to_string(),
            created_by: by,
            updated_by: by,
            created_ms: ts,
            updated_ms: ts,
            version: 1,
        };
        out.push(Event::RiskRuleCreated(Box::new(rule.clone())));
        self.risk.rules.insert(id, rule);
        self.risk.reindex();
        Ok(())
    }

    pub(crate) fn update_risk_rule(
        &mut self,
        by: UserId,
        id: u64,
        c: &RiskRuleChanges,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        self.staff_user(by)?;
        let cur = self
            .risk
            .rules
            .get(&id)
            .ok_or(RejectReason::UnknownRiskRule)?;
        let kind = cur.kind;
        let action = c.action.unwrap_or(cur.action);
        let name_ok = c.name.as_deref().is_none_or(valid_rule_name);
        let text_ok = c.description.as_deref().is_none_or(valid_risk_text);
        if c.is_empty()
            || !name_ok
            || !text_ok
            || (action == RiskAction::Block && !kind.can_block())
        {
            return Err(RejectReason::InvalidRiskRule);
        }
        let limit = match &c.parameters {
            Some(p) => Some(self.resolve_risk_limit(kind, p)?),
            None => None,
        };
        if let Some(n) = &c.name {
            if self.risk_name_taken(n, id) {
                return Err(RejectReason::RiskRuleNameTaken);
            }
        }
        let r = self.risk.rules.get_mut(&id).expect("checked above");
        if let Some(n) = &c.name {
            r.name = n.clone();
        }
        if let (Some(p), Some(l)) = (&c.parameters, limit) {
            r.parameters = p.clone();
            r.limit = l;
        }
        if let Some(l) = c.level {
            r.level = l;
        }
        r.action = action;
        if let Some(e) = c.enabled {
            r.enabled = e;
        }
        if let Some(d) = &c.description {
            r.description = d.clone();
        }
        r.updated_by = by;
        r.updated_ms = ts;
        r.version += 1;
        out.push(Event::RiskRuleUpdated(Box::new(r.clone())));
        self.risk.reindex();
        Ok(())
    }

    pub(crate) fn delete_risk_rule(&mut self, by: UserId, id: u64, out: &mut Vec<Event>) -> R<()> {
        self.staff_user(by)?;
        let r = self
            .risk
            .rules
            .remove(&id)
            .ok_or(RejectReason::UnknownRiskRule)?;
        out.push(Event::RiskRuleDeleted {
            rule: id,
            name: r.name,
        });
        self.risk.reindex();
        Ok(())
    }

    pub(crate) fn set_risk_event_status(
        &mut self,
        by: UserId,
        id: u64,
        status: RiskEventStatus,
        note: &str,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> R<()> {
        self.staff_user(by)?;
        if status == RiskEventStatus::Open || !valid_risk_text(note) {
            return Err(RejectReason::InvalidRiskEventStatus);
        }
        if id == 0 || id >= self.risk.next_event_id {
            return Err(RejectReason::UnknownRiskEvent);
        }
        let ev = self
            .risk
            .open_events
            .get_mut(&id)
            .ok_or(RejectReason::RiskEventClosed)?;
        if ev.status == status {
            return Err(RejectReason::InvalidRiskEventStatus);
        }
        ev.status = status;
        ev.updated_ms = ts;
        ev.handled_by = Some(by);
        ev.note = note.to_string();
        let user = ev.user;
        if status.is_final() {
            self.risk.open_events.remove(&id);
        }
        out.push(Event::RiskEventStatusChanged {
            event: id,
            user,
            status,
            by,
            note: note.to_string(),
            updated_ms: ts,
        });
        Ok(())
    }

    /// An acting staff member: a registered, active user.
    pub(crate) fn staff_user(&self, by: UserId) -> R<()> {
        if by.0 == 0 {
            return Err(RejectReason::UnknownUser);
        }
        let u = self.user(by).ok_or(RejectReason::UnknownUser)?;
        if u.status != UserStatus::Active {
            return Err(RejectReason::UserSuspended);
        }
        Ok(())
    }

    // ------------------------------------------------------------ roles

    pub(crate) fn grant_role(&mut self, user: UserId, role: u32, out: &mut Vec<Event>) -> R<()> {
        check_role_bit(role)?;
        if user.0 == 0 {
            return Err(RejectReason::UnknownUser);
        }
        let u = self
            .users
            .get_mut(user.0 as usize)
            .ok_or(RejectReason::UnknownUser)?;
        if u.roles & role != 0 {
            return Err(RejectReason::RoleUnchanged);
        }
        u.roles |= role;
        out.push(Event::UserRolesChanged {
            user,
            roles: u.roles,
        });
        Ok(())
    }

    pub(crate) fn revoke_role(&mut self, user: UserId, role: u32, out: &mut Vec<Event>) -> R<()> {
        check_role_bit(role)?;
        if user.0 == 0 {
            return Err(RejectReason::UnknownUser);
        }
        let u = self
            .users
            .get(user.0 as usize)
            .ok_or(RejectReason::UnknownUser)?;
        if u.roles & role == 0 {
            return Err(RejectReason::RoleUnchanged);
        }
        if role == roles::ADMIN && u.status == UserStatus::Active {
            let other_admin = self.users.iter().any(|o| {
                o.id != user && o.roles & roles::ADMIN != 0 && o.status == UserStatus::Active
            });
            if !other_admin {
                return Err(RejectReason::LastActiveAdmin);
            }
        }
        let u = &mut self.users[user.0 as usize];
        u.roles &= !role;
        out.push(Event::UserRolesChanged {
            user,
            roles: u.roles,
        });
        Ok(())
    }

    // ------------------------------------------------------- evaluation

    /// ORDER_NOTIONAL rules against an order that passed every other check.
    /// Refuses it when a BLOCK rule matched. Inlined into the order path:
    /// without enabled rules it is one emptiness check.
    #[inline]
    pub(crate) fn risk_check_order(&mut self, o: &NewOrder) -> R<()> {
        if self.risk.order_notional.is_empty() {
            return Ok(());
        }
        self.risk_check_order_rules(o)
    }

    fn risk_check_order_rules(&mut self, o: &NewOrder) -> R<()> {
        let Some(ps) = self.pair(o.pair) else {
            return Ok(());
        };
        let pair = &ps.pair;
        let units = if o.quote_qty > 0 {
            o.quote_qty
        } else {
            let price = if o.kind.has_limit_price() {
                o.price.0
            } else if o.stop_price.0 > 0 {
                o.stop_price.0
            } else if ps.last_price > 0 {
                ps.last_price
            } else {
                ps.side(o.side.opposite()).best_price().unwrap_or(0)
            };
            if price == 0 {
                return Ok(());
            }
            pair.notional(o.qty.0, price).unwrap_or(u64::MAX)
        };
        let qd = self
            .asset(pair.spec.quote)
            .map_or(8, |a| a.spec.decimals as u32);
        let e18 = units as u128 * 10u128.pow(18 - qd.min(18));
        let mut blocked = false;
        let mut fired = 0usize;
        for id in &self.risk.order_notional {
            let r = &self.risk.rules[id];
            if let RiskLimit::OrderNotional { pair: p, max_e18 } = r.limit {
                if p.is_none_or(|p| p == o.pair) && e18 > max_e18 {
                    fired += 1;
                    blocked |= r.action == RiskAction::Block;
                }
            }
        }
        if fired == 0 {
            return Ok(());
        }
        let notional = format_units(units, qd);
        let order_id = (!blocked).then_some(OrderId(self.next_order_id));
        let symbol = pair.spec.symbol.clone();
        for i in 0..self.risk.order_notional.len() {
            let r = &self.risk.rules[&self.risk.order_notional[i]];
            if let RiskLimit::OrderNotional { pair: p, max_e18 } = r.limit {
                if p.is_none_or(|p| p == o.pair) && e18 > max_e18 {
                    let details = order_notional_details(
                        &symbol, o.side, o.kind, &notional, max_e18, blocked, order_id,
                    );
                    let rule = r.id;
                    self.risk.pending.push(PendingRisk {
                        rule,
                        user: o.user,
                        details,
                    });
                }
            }
        }
        if blocked {
            Err(RejectReason::RiskOrderNotional)
        } else {
            Ok(())
        }
    }

    /// LARGE_WITHDRAWAL rules against a request that passed every other check.
    pub(crate) fn risk_check_withdrawal(
        &mut self,
        user: UserId,
        asset: AssetId,
        amount: u64,
    ) -> R<()> {
        if self.risk.large_withdrawal.is_empty() {
            return Ok(());
        }
        let fires = |l: &RiskLimit| {
            matches!(*l, RiskLimit::LargeWithdrawal { asset: a, threshold_units }
                if a == asset && amount >= threshold_units)
        };
        let mut blocked = false;
        let mut fired = false;
        for id in &self.risk.large_withdrawal {
            let r = &self.risk.rules[id];
            if fires(&r.limit) {
                fired = true;
                blocked |= r.action == RiskAction::Block;
            }
        }
        if !fired {
            return Ok(());
        }
        let (symbol, d) = self.asset(asset).map_or((String::new(), 8), |a| {
            (a.spec.symbol.clone(), a.spec.decimals as u32)
        });
        let withdrawal_id = (!blocked).then_some(self.next_withdrawal_id);
        for i in 0..self.risk.large_withdrawal.len() {
            let r = &self.risk.rules[&self.risk.large_withdrawal[i]];
            if let RiskLimit::LargeWithdrawal {
                threshold_units, ..
            } = r.limit
            {
                if fires(&r.limit) {
                    let details = large_withdrawal_details(
                        &symbol,
                        &format_units(amount, d),
                        &format_units(threshold_units, d),
                        blocked,
                        withdrawal_id,
                    );
                    let rule = r.id;
                    self.risk.pending.push(PendingRisk {
                        rule,
                        user,
                        details,
                    });
                }
            }
        }
        if blocked {
            Err(RejectReason::RiskLargeWithdrawal)
        } else {
            Ok(())
        }
    }

    /// LOGIN_FAILURE rules after a recorded failure.
    pub(crate) fn risk_note_login_failure(
        &mut self,
        user: UserId,
        failed_logins: u32,
        locked_until_ms: u64,
    ) {
        for i in 0..self.risk.login_failure.len() {
            let r = &self.risk.rules[&self.risk.login_failure[i]];
            if let RiskLimit::LoginFailure { failures } = r.limit {
                if failed_logins == failures {
                    let rule = r.id;
                    self.risk.pending.push(PendingRisk {
                        rule,
                        user,
                        details: login_failure_details(failed_logins, failures, locked_until_ms),
                    });
                }
            }
        }
    }

    #[inline]
    pub(crate) fn risk_watches_logins(&self) -> bool {
        !self.risk.login_failure.is_empty()
    }

    /// Raise the command's pending risk events (end of `apply`).
    pub(crate) fn raise_pending_risk(&mut self, ts: u64, out: &mut Vec<Event>) {
        let mut pending = std::mem::take(&mut self.risk.pending);
        for p in pending.drain(..) {
            self.raise_risk_event(p.rule, p.user, p.details, ts, out);
        }
        self.risk.pending = pending;
        if self.risk.stp_hits.is_empty() {
            return;
        }
        let hits = std::mem::take(&mut self.risk.stp_hits);
        for i in 0..self.risk.self_trade.len() {
            let id = self.risk.self_trade[i];
            let RiskLimit::SelfTrade { pair } = self.risk.rules[&id].limit else {
                continue;
            };
            let matching = |h: &&StpHit| pair.is_none_or(|p| p == h.pair);
            // One event per user, in order of their first expiry.
            for (k, first) in hits.iter().filter(matching).enumerate() {
                if hits
                    .iter()
                    .filter(matching)
                    .take(k)
                    .any(|h| h.user == first.user)
                {
                    continue;
                }
                let count = hits
                    .iter()
                    .filter(matching)
                    .filter(|h| h.user == first.user)
                    .count() as u32;
                let symbol = self
                    .pair(first.pair)
                    .map_or_else(String::new, |p| p.pair.spec.symbol.clone());
                let details =
                    self_trade_details(&symbol, first.mode, first.taker, first.maker, count);
                self.raise_risk_event(id, first.user, details, ts, out);
            }
        }
        let mut hits = hits;
        hits.clear();
        self.risk.stp_hits = hits;
    }

    fn raise_risk_event(
        &mut self,
        rule: u64,
        user: UserId,
        details: String,
        ts: u64,
        out: &mut Vec<Event>,
    ) {
        let Some(r) = self.risk.rules.get(&rule) else {
            return;
        };
        let id = self.risk.next_event_id;
        self.risk.next_event_id += 1;
        let ev = RiskEvent {
            id,
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
        self.risk.open_events.insert(id, ev);
    }
}

fn check_role_bit(role: u32) -> R<()> {
    if role.count_ones() == 1 && role & !roles::ALL == 0 {
        Ok(())
    } else {
        Err(RejectReason::InvalidRole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in RiskRuleType::ALL {
            assert_eq!(RiskRuleType::from_name(t.name()), Some(t));
        }
        for l in RiskLevel::ALL {
            assert_eq!(RiskLevel::from_name(l.name()), Some(l));
        }
        for s in RiskEventStatus::ALL {
            assert_eq!(RiskEventStatus::from_name(s.name()), Some(s));
        }
        assert_eq!(RiskAction::from_name("BLOCK"), Some(RiskAction::Block));
        assert_eq!(RiskAction::from_name("block"), None);
        assert_eq!(RiskRuleType::from_name("order_notional"), None);
    }

    #[test]
    fn parameters_are_validated() {
        use RiskRuleType::*;
        let ok = |k, t: &str| RiskParams::parse(k, t).unwrap();
        let bad = |k, t: &str| RiskParams::parse(k, t).unwrap_err();
        assert_eq!(
            ok(
                OrderNotional,
                r#"{"max_notional":"50000.5","symbol":"BTCUSDT"}"#
            ),
            RiskParams::OrderNotional {
                symbol: Some("BTCUSDT".into()),
                max_notional: Decimal::new(500005, 1),
            }
        );
        assert!(matches!(
            ok(LoginFailure, r#"{"max_failures":3}"#),
            RiskParams::LoginFailure { max_failures: 3 }
        ));
        assert_eq!(ok(SelfTrade, "{}"), RiskParams::SelfTrade { symbol: None });
        assert_eq!(
            ok(Custom, r#"{"anything":[1,{"x":null}]}"#),
            RiskParams::Custom
        );
        for (k, t, why) in [
            (OrderNotional, "[1]", "JSON object"),
            (OrderNotional, "\"x\"", "JSON object"),
            (OrderNotional, "{", "JSON object"),
            (Custom, "7", "JSON object"),
            (OrderNotional, "{}", "max_notional is required"),
            (OrderNotional, r#"{"max_notional":50000}"#, "decimal string"),
            (OrderNotional, r#"{"max_notional":"-1"}"#, "negative"),
            (
                OrderNotional,
                r#"{"max_notional":"0"}"#,
                "greater than zero",
            ),
            (OrderNotional, r#"{"max_notional":"1e30"}"#, "too large"),
            (
                OrderNotional,
                r#"{"max_notional":"1000000000000000000000000000000"}"#,
                "too large",
            ),
            (
                OrderNotional,
                r#"{"max_notional":"100000000000000000000"}"#,
                "too large",
            ),
            (OrderNotional, r#"{"max_notional":"abc"}"#, "decimal number"),
            (
                OrderNotional,
                r#"{"max_notional":"0.0000000000000000001"}"#,
                "decimals",
            ),
            (
                OrderNotional,
                r#"{"max_notional":"1","symbol":"btc"}"#,
                "symbol",
            ),
            (
                OrderNotional,
                r#"{"max_notional":"1","symbol":5}"#,
                "symbol",
            ),
            (
                OrderNotional,
                r#"{"max_notional":"1","x":1}"#,
                "unknown parameter 'x'",
            ),
            (LargeWithdrawal, r#"{"threshold":"1"}"#, "asset is required"),
            (
                LargeWithdrawal,
                r#"{"asset":"BTC"}"#,
                "threshold is required",
            ),
            (
                LoginFailure,
                r#"{"max_failures":"3"}"#,
                "integer from 1 to 100",
            ),
            (
                LoginFailure,
                r#"{"max_failures":0}"#,
                "integer from 1 to 100",
            ),
            (
                LoginFailure,
                r#"{"max_failures":101}"#,
                "integer from 1 to 100",
            ),
            (
                LoginFailure,
                r#"{"max_failures":-1}"#,
                "integer from 1 to 100",
            ),
            (
                LoginFailure,
                r#"{"max_failures":2.5}"#,
                "integer from 1 to 100",
            ),
            (LoginFailure, r#"{}"#, "max_failures is required"),
            (OrderSize, r#"{}"#, "not evaluated"),
        ] {
            let e = bad(k, t);
            assert!(e.contains(why), "{t}: {e}");
        }
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(RISK_PARAMETERS_MAX_LEN));
        assert!(bad(Custom, &big).contains("at most"));
    }

    #[test]
    fn e18_amounts() {
        let d = positive_amount("50000").unwrap();
        assert_eq!(amount_e18(d), 50_000 * E18);
        assert_eq!(format_e18(amount_e18(d)), "50000");
        let d = positive_amount("0.000000000000000001").unwrap();
        assert_eq!(amount_e18(d), 1);
        assert_eq!(format_e18(1), "0.000000000000000001");
        let d = positive_amount("99999999999999999999.5").unwrap();
        assert_eq!(format_e18(amount_e18(d)), "99999999999999999999.5");
    }

    #[test]
    fn rule_names_and_texts() {
        assert!(valid_rule_name("big orders: BTC-1_a.b"));
        for bad in ["", " x", "x ", "a[b]", "é", &"n".repeat(101)] {
            assert!(!valid_rule_name(bad), "{bad}");
        }
        assert!(valid_risk_text(""));
        assert!(!valid_risk_text("a\nb"));
        assert!(!valid_risk_text(&"n".repeat(1025)));
    }

    #[test]
    fn details_are_json_objects() {
        let d = order_notional_details(
            "BTCUSDT",
            Side::Buy,
            OrderType::Limit,
            "60000.00000000",
            50_000 * E18,
            true,
            None,
        );
        let v: Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["max_notional"], "50000");
        assert_eq!(v["blocked"], true);
        let d = large_withdrawal_details("B\"\\\u{1}", "1", "1", false, Some(4));
        let v: Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["asset"], "B\"\\\u{1}");
        assert_eq!(v["withdrawal_id"], 4);
        let v: Value = serde_json::from_str(&login_failure_details(3, 3, 9)).unwrap();
        assert_eq!(v["locked_until"], 9);
        let d = self_trade_details("X", StpMode::ExpireMaker, OrderId(1), OrderId(2), 3);
        let v: Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["stp_expiries"], 3);
    }
}
