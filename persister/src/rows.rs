//! Turning engine events into Postgres rows: one [`Batch`] collects the rows
//! of a run of journal records, column by column, ready for UNNEST inserts.
//!
//! Everything here is a pure function of the journal (records, their
//! timestamps and the replica's state after each record), so a batch rebuilt
//! after a crash holds exactly the same rows and ids.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::*;

use crate::klines::{Klines, PairDecimals};

/// Ledger and outbox ids: `seq << ROW_ID_SHIFT | index within the record`.
pub const ROW_ID_SHIFT: u32 = 16;

/// `units` base units of an asset with `decimals` decimals, as a decimal string.
pub fn dec(units: u128, decimals: u8) -> String {
    engine::decimal::format_units_u128(units, u32::from(decimals))
}

/// Journal milliseconds as a timestamp.
pub fn ts(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// UTC (year, month) of a millisecond timestamp.
pub fn year_month(ms: u64) -> (i64, u32) {
    // Howard Hinnant's civil_from_days.
    let days = (ms / 86_400_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m)
}

/// Account ids: `user << 20 | asset` (asset ids are dense and small).
pub fn account_id(user: UserId, asset: AssetId) -> i64 {
    ((user.0 << 20) | asset.0 as u64) as i64
}

/// `deposit_withdrawals` ids: the engine counts deposits and withdrawals
/// separately, so deposits are `2n` and withdrawals `2n + 1`.
pub fn deposit_row_id(id: u64) -> i64 {
    (id * 2) as i64
}
pub fn withdrawal_row_id(id: u64) -> i64 {
    (id * 2 + 1) as i64
}
/// `balance_freezes` ids: order freezes `2 * order id`, withdrawal freezes
/// `2 * withdrawal id + 1`.
pub fn order_freeze_id(order: OrderId) -> i64 {
    (order.0 * 2) as i64
}
pub fn withdrawal_freeze_id(w: u64) -> i64 {
    (w * 2 + 1) as i64
}

/// `kyc_records.document_number` (TEXT) as written: the journaled
/// ciphertext (the gateway's AEAD envelope, version byte and nonce
/// included) in lower-case hex behind `enc:`. The persister never holds the
/// key; the plaintext never reaches Postgres.
pub fn kyc_document_text(ciphertext: &[u8]) -> String {
    let mut s = String::with_capacity(4 + 2 * ciphertext.len());
    s.push_str("enc:");
    for b in ciphertext {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `kyc_records.submitted_data` (JSONB, an object): the submitted text when
/// it is a JSON object (the gateway only lets objects through), otherwise
/// the text wrapped as `{"unparsed": ...}` so that a malformed record in
/// the journal can never wedge the writer on the column's CHECK.
pub fn kyc_data_json(data: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(data) {
        Ok(serde_json::Value::Object(_)) => data.to_owned(),
        _ => serde_json::json!({ "unparsed": data }).to_string(),
    }
}

fn decimals(e: &Engine, a: AssetId) -> u8 {
    e.asset(a).map_or(8, |a| a.spec.decimals)
}

fn opt_str(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Final state of a user row touched by the batch.
#[derive(Debug, Clone, Copy)]
pub struct UserTouch {
    pub seq: u64,
    pub ts: u64,
    pub login_ts: Option<u64>,
    pub roles_ts: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct AccountTouch {
    pub available: u64,
    pub frozen: u64,
    pub first_ts: u64,
    pub ts: u64,
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub struct FreezeTouch {
    pub user: UserId,
    pub asset: AssetId,
    pub added: u64,
    pub reason: &'static str,
    pub ref_type: &'static str,
    pub ref_id: u64,
    pub created_ts: u64,
    pub released_ts: Option<u64>,
    pub ts: u64,
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub struct OrderTouch {
    pub pair: PairId,
    /// Set when the order entered the engine in this batch (insert).
    pub accepted: Option<AcceptedOrder>,
    pub accepted_ts: u64,
    /// Known quantity (acceptance or amendment).
    pub qty: Option<u64>,
    pub filled: u64,
    pub cum_quote: u64,
    pub status: OrderStatus,
    pub ts: u64,
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub struct DwRow {
    pub id: i64,
    pub user: UserId,
    pub asset: AssetId,
    pub kind: &'static str,
    pub amount: u64,
    pub fee: u64,
    pub status: &'static str,
    pub tx_hash: Option<String>,
    pub address: Option<String>,
    pub confirmations: i32,
    pub required: i32,
    pub processed_ms: Option<u64>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: i64,
    pub user: i64,
    pub api_key: String,
    pub label: String,
    pub kind: &'static str,
    pub permissions: String,
    pub secret: Option<Vec<u8>>,
    pub public_key: Option<String>,
    pub created: SystemTime,
}

/// Columns of the ledger (`transactions`).
#[derive(Debug, Default)]
pub struct Ledger {
    pub id: Vec<i64>,
    pub user: Vec<i64>,
    pub asset: Vec<i64>,
    pub kind: Vec<&'static str>,
    pub balance_type: Vec<&'static str>,
    pub amount: Vec<String>,
    pub before: Vec<String>,
    pub after: Vec<String>,
    pub ref_type: Vec<Option<&'static str>>,
    pub ref_id: Vec<Option<i64>>,
    pub description: Vec<Option<String>>,
    pub created: Vec<SystemTime>,
}

#[derive(Debug, Default)]
pub struct Trades {
    pub id: Vec<i64>,
    pub pair: Vec<i64>,
    pub buy_order: Vec<i64>,
    pub sell_order: Vec<i64>,
    pub buyer: Vec<i64>,
    pub seller: Vec<i64>,
    pub amount: Vec<String>,
    pub price: Vec<String>,
    pub quote: Vec<String>,
    pub buyer_fee: Vec<String>,
    pub seller_fee: Vec<String>,
    pub buyer_fee_asset: Vec<i64>,
    pub seller_fee_asset: Vec<i64>,
    pub maker_side: Vec<&'static str>,
    pub created: Vec<SystemTime>,
}

/// A risk rule touched by the batch: its last state (None when only
/// deleted here) and whether it was deleted.
#[derive(Debug, Clone)]
pub struct RiskRuleTouch {
    pub rule: Option<RiskRule>,
    pub deleted: bool,
    pub ts: u64,
    pub seq: u64,
}

/// A risk event touched by the batch: raised here (insert) or only
/// changed (update), with its status after the batch and every status
/// change (status, by, note, journal ms) in order.
#[derive(Debug, Clone)]
pub struct RiskEventTouch {
    pub raised: Option<RiskEvent>,
    pub status: RiskEventStatus,
    pub handled_by: Option<UserId>,
    pub changes: Vec<(RiskEventStatus, UserId, String, u64)>,
    pub updated_ms: u64,
}

impl RiskEventTouch {
    /// What the batch's status changes add to `details`: per change
    /// `<status>_by`, `<status>_note` and `<status>_at` (ms), e.g.
    /// `acknowledged_by`, `resolved_note`.
    pub fn details_added(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        for (status, by, note, at) in &self.changes {
            let k = status.name().to_ascii_lowercase();
            m.insert(format!("{k}_by"), by.0.into());
            m.insert(format!("{k}_note"), note.clone().into());
            m.insert(format!("{k}_at"), (*at).into());
        }
        m
    }

    /// When the event was resolved or dismissed (None while open).
    pub fn resolved_ms(&self) -> Option<u64> {
        self.status.is_final().then_some(self.updated_ms)
    }
}

/// `text` as a JSON object for a JSONB column whose CHECK demands an
/// object: itself when it is one (the engine only stores objects),
/// otherwise wrapped as `{"unparsed": text}` so a bad record can never
/// wedge the writer.
pub fn json_object_text(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => text.to_owned(),
        _ => serde_json::json!({ "unparsed": text }).to_string(),
    }
}

#[derive(Debug, Default)]
pub struct Audit {
    pub id: Vec<i64>,
    /// The acting user, when the command names one.
    pub user: Vec<Option<i64>>,
    pub action: Vec<&'static str>,
    pub resource_type: Vec<&'static str>,
    pub resource_id: Vec<Option<String>>,
    pub new_values: Vec<String>,
    pub created: Vec<SystemTime>,
}

#[derive(Debug, Default)]
pub struct Outbox {
    pub id: Vec<i64>,
    pub aggregate_type: Vec<&'static str>,
    pub aggregate_id: Vec<i64>,
    pub event_type: Vec<&'static str>,
    pub data: Vec<String>,
    pub created: Vec<SystemTime>,
}

/// Columns of `notifications` (IN_APP, inserted as SENT).
#[derive(Debug, Default)]
pub struct Notes {
    pub id: Vec<i64>,
    pub user: Vec<i64>,
    pub template_id: Vec<i64>,
    pub title: Vec<String>,
    pub content: Vec<String>,
    pub created: Vec<SystemTime>,
}

/// Read marks: UPDATEs of `notifications` after the batch's inserts.
#[derive(Debug, Default)]
pub struct NoteReads {
    pub id: Vec<i64>,
    pub user: Vec<i64>,
    pub read_at: Vec<SystemTime>,
}

/// Edited notification templates: UPDATEs of `notification_templates` (by
/// name), the last edit of each name in the batch.
#[derive(Debug, Default)]
pub struct TemplateEdits {
    pub by_name: BTreeMap<String, NotificationTemplate>,
}

/// Rows of a run of consecutive journal records.
#[derive(Debug, Default)]
pub struct Batch {
    /// Domains whose rows [`Batch::add`] does not build (a writer of other
    /// domains; row ids are still drawn, so every writer gives a row the
    /// same id). Only the costly rows are skipped (ledger, outbox,
    /// notifications); [`Batch::retain`] drops the rest.
    pub skip: Domains,
    /// First and last seq (0, 0 when empty).
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: usize,
    pub min_ts: u64,
    pub max_ts: u64,
    pub users: BTreeMap<u64, UserTouch>,
    /// KYC record id -> (seq, journal ms) of its last change in the batch;
    /// the row is the replica's record after the batch.
    pub kyc: BTreeMap<u64, (u64, u64)>,
    pub api_keys: Vec<ApiKeyRow>,
    pub api_keys_revoked: Vec<(i64, SystemTime)>,
    /// (asset, created ms, seq, ms of the last change)
    pub assets: BTreeMap<u32, (Asset, u64, u64, u64)>,
    pub pairs: BTreeMap<u32, (Pair, u64, u64, u64)>,
    pub accounts: BTreeMap<(u64, u32), AccountTouch>,
    pub ledger: Ledger,
    pub freezes: BTreeMap<i64, FreezeTouch>,
    pub dw: BTreeMap<i64, DwRow>,
    pub orders: BTreeMap<u64, OrderTouch>,
    pub trades: Trades,
    /// The trades again, bucketed for `klines` and `ticker_24hr`.
    pub klines: Klines,
    pub audit: Audit,
    pub outbox: Outbox,
    /// In-app notifications (`crate::notify::derive`) and read marks.
    pub notifications: Notes,
    pub notification_reads: NoteReads,
    /// Template edits (`Command::SetNotificationTemplate`).
    pub notification_templates: TemplateEdits,
    /// Risk rules by id.
    pub risk_rules: BTreeMap<u64, RiskRuleTouch>,
    /// Risk events by id.
    pub risk_events: BTreeMap<u64, RiskEventTouch>,
    /// Days settled by records of this batch (settlement.rs).
    pub settlements: Vec<crate::settlement::SettlementRow>,
}

fn ledger_kind(cause: BalanceCause) -> (&'static str, Option<(&'static str, u64)>) {
    match cause {
        BalanceCause::OrderFreeze(o) => ("FREEZE", Some(("ORDER", o.0))),
        BalanceCause::OrderRelease(o) => ("UNFREEZE", Some(("ORDER", o.0))),
        BalanceCause::Trade(t) => ("TRADE", Some(("TRADE", t.0))),
        BalanceCause::TradeFee(t) => ("FEE_INCOME", Some(("TRADE", t.0))),
        BalanceCause::Deposit(d) => ("DEPOSIT", Some(("DEPOSIT", d))),
        BalanceCause::WithdrawalFreeze(w) => ("FREEZE", Some(("WITHDRAWAL", w))),
        BalanceCause::WithdrawalRelease(w) => ("UNFREEZE", Some(("WITHDRAWAL", w))),
        BalanceCause::WithdrawalSent(w) => ("WITHDRAWAL", Some(("WITHDRAWAL", w))),
        BalanceCause::WithdrawalFee(w) => ("WITHDRAWAL_FEE", Some(("WITHDRAWAL", w))),
        BalanceCause::Adjustment => ("ADJUSTMENT", None),
    }
}

/// Audit row for an admin command that changed something.
fn audit_of(cmd: &Command) -> Option<(&'static str, &'static str, Option<String>)> {
    Some(match cmd {
        Command::AddAsset { spec: s, .. } => ("asset.add", "ASSET", Some(s.symbol.clone())),
        Command::UpdateAsset { asset, .. } => ("asset.update", "ASSET", Some(asset.to_string())),
        Command::AddPair { spec: s, .. } => ("pair.add", "TRADING_PAIR", Some(s.symbol.clone())),
        Command::UpdatePair { pair, .. } => ("pair.update", "TRADING_PAIR", Some(pair.to_string())),
        Command::SetPairStatus { pair, .. } => {
            ("pair.set_status", "TRADING_PAIR", Some(pair.to_string()))
        }
        Command::SetFeeAccount { user, .. } => ("fee_account.set", "FEE", Some(user.to_string())),
        Command::SetLimits { .. } => ("limits.set", "SYSTEM", None),
        Command::SetUserStatus { user, .. } => ("user.set_status", "USER", Some(user.to_string())),
        Command::SetUserRoles { user, .. } => ("user.set_roles", "ROLE", Some(user.to_string())),
        Command::SetKycLevel { user, .. } => ("user.set_kyc_level", "KYC", Some(user.to_string())),
        // The notes and decision only (no document material in a review).
        Command::ReviewKyc { kyc, .. } => ("kyc.review", "KYC", Some(kyc.to_string())),
        Command::Deposit { user, .. } => ("deposit.post", "DEPOSIT", Some(user.to_string())),
        Command::CompleteWithdrawal { withdrawal, .. } => (
            "withdrawal.complete",
            "WITHDRAWAL",
            Some(withdrawal.to_string()),
        ),
        Command::RejectWithdrawal { withdrawal, .. } => (
            "withdrawal.reject",
            "WITHDRAWAL",
            Some(withdrawal.to_string()),
        ),
        Command::Adjust { user, .. } => ("account.adjust", "ACCOUNT", Some(user.to_string())),
        // The created rule's id comes from its event (see `Batch::add`).
        Command::CreateRiskRule { .. } => ("risk_rule.create", "RISK_RULE", None),
        Command::UpdateRiskRule { rule, .. } => {
            ("risk_rule.update", "RISK_RULE", Some(rule.to_string()))
        }
        Command::DeleteRiskRule { rule, .. } => {
            ("risk_rule.delete", "RISK_RULE", Some(rule.to_string()))
        }
        Command::SetRiskEventStatus { event, status, .. } => (
            match status {
                RiskEventStatus::Acknowledged => "risk_event.acknowledge",
                RiskEventStatus::Resolved => "risk_event.resolve",
                RiskEventStatus::Dismissed => "risk_event.dismiss",
                RiskEventStatus::Open => "risk_event.reopen",
            },
            "RISK_EVENT",
            Some(event.to_string()),
        ),
        Command::GrantRole { user, .. } => ("user.grant_role", "ROLE", Some(user.to_string())),
        Command::RevokeRole { user, .. } => ("user.revoke_role", "ROLE", Some(user.to_string())),
        Command::SetNotificationTemplate { name, .. } => (
            "notification_template.update",
            "NOTIFICATION_TEMPLATE",
            Some(name.clone()),
        ),
        Command::RunSettlement { date, .. } => (
            "settlement.run",
            "SETTLEMENT",
            Some(engine::settlement::format_date(*date)),
        ),
        _ => return None,
    })
}

/// The tables one writer owns, by domain (migrations/README.md "Writers
/// and foreign keys"): foreign keys stay inside a domain, so writers of
/// different domains may commit independently, each with its own
/// checkpoint row named after its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    /// Identity, assets, pairs, balances, freezes, deposits and
    /// withdrawals, KYC, risk rules and events, settlement batches, the
    /// outbox.
    Core,
    /// Orders and trades.
    Trading,
    /// Klines and 24 h tickers.
    MarketData,
    /// Audit log and notifications.
    Activity,
    /// The double-entry ledger (`transactions`): about half of all rows,
    /// so split writers give it its own connection and Postgres backend.
    Ledger,
}

impl Domain {
    pub const ALL: [Domain; 5] = [
        Domain::Core,
        Domain::Trading,
        Domain::MarketData,
        Domain::Activity,
        Domain::Ledger,
    ];

    /// The checkpoint row's name.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Core => "core",
            Domain::Trading => "trading",
            Domain::MarketData => "market_data",
            Domain::Activity => "activity",
            Domain::Ledger => "ledger",
        }
    }

    pub fn parse(s: &str) -> Option<Domain> {
        Domain::ALL.into_iter().find(|d| d.name() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Domain`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domains(u8);

impl Default for Domains {
    fn default() -> Self {
        Domains::NONE
    }
}

impl Domains {
    /// The domains not in `self`.
    pub fn complement(self) -> Domains {
        Domains(!self.0 & Domains::ALL.0)
    }
    pub const NONE: Domains = Domains(0);
    pub const ALL: Domains = Domains(0b1_1111);

    pub fn only(d: Domain) -> Domains {
        Domains(d.bit())
    }
    pub fn with(self, d: Domain) -> Domains {
        Domains(self.0 | d.bit())
    }
    pub fn contains(self, d: Domain) -> bool {
        self.0 & d.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Domain> {
        Domain::ALL.into_iter().filter(move |d| self.contains(*d))
    }
    /// The checkpoint rows of these domains.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Domain::name).collect()
    }
}

impl Batch {
    /// Drop the rows of tables outside `keep` (other writers write them).
    /// Every field is named here, so a new table cannot be added to the
    /// batch without giving it to a domain.
    pub fn retain(&mut self, keep: Domains) {
        let Batch {
            skip: _,
            first_seq: _,
            last_seq: _,
            records: _,
            min_ts: _,
            max_ts: _,
            users,
            kyc,
            risk_rules,
            risk_events,
            settlements,
            api_keys,
            api_keys_revoked,
            assets,
            pairs,
            accounts,
            ledger,
            freezes,
            dw,
            outbox,
            orders,
            trades,
            klines,
            audit,
            notifications,
            notification_reads,
            notification_templates,
        } = self;
        if !keep.contains(Domain::Core) {
            *users = Default::default();
            *kyc = Default::default();
            *risk_rules = Default::default();
            *risk_events = Default::default();
            *settlements = Default::default();
            *api_keys = Default::default();
            *api_keys_revoked = Default::default();
            *assets = Default::default();
            *pairs = Default::default();
            *accounts = Default::default();
            *freezes = Default::default();
            *dw = Default::default();
            *outbox = Default::default();
        }
        if !keep.contains(Domain::Trading) {
            *orders = Default::default();
            *trades = Default::default();
        }
        if !keep.contains(Domain::MarketData) {
            *klines = Default::default();
        }
        if !keep.contains(Domain::Ledger) {
            *ledger = Default::default();
        }
        if !keep.contains(Domain::Activity) {
            *audit = Default::default();
            *notifications = Default::default();
            *notification_reads = Default::default();
            *notification_templates = Default::default();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Rows this batch writes (about; for logs and metrics).
    pub fn row_count(&self) -> usize {
        self.users.len()
            + self.kyc.len()
            + self.api_keys.len()
            + self.assets.len()
            + self.pairs.len()
            + self.accounts.len()
            + self.ledger.id.len()
            + self.freezes.len()
            + self.dw.len()
            + self.orders.len()
            + self.trades.id.len()
            + self.klines.row_count()
            + self.audit.id.len()
            + self.outbox.id.len()
            + self.notifications.id.len()
            + self.notification_reads.id.len()
            + self.notification_templates.by_name.len()
            + self.risk_rules.len()
            + self.risk_events.len()
            + self.settlements.len()
    }

    /// Add the rows of record `seq` (already applied to `engine`).
    pub fn add(&mut self, engine: &Engine, seq: u64, ts_ms: u64, cmd: &Command, events: &[Event]) {
        if self.records == 0 {
            self.first_seq = seq;
            self.min_ts = ts_ms;
            self.max_ts = ts_ms;
            if seq == 1 {
                // The exchange's own account (user 0) exists without an event.
                self.users.insert(
                    0,
                    UserTouch {
                        seq,
                        ts: 0,
                        login_ts: None,
                        roles_ts: Some(0),
                    },
                );
            }
        }
        self.last_seq = seq;
        self.records += 1;
        self.min_ts = self.min_ts.min(ts_ms);
        self.max_ts = self.max_ts.max(ts_ms);
        let base = (seq << ROW_ID_SHIFT) as i64;
        let mut k: i64 = 0;
        let mut next_id = || {
            let id = base + k;
            k += 1;
            id
        };
        let t = ts(ts_ms);
        let mut rejected = false;
        // Orders whose fill moved them out of NEW in this record.
        let mut started: Vec<OrderId> = Vec::new();
        let mut done: Vec<OrderId> = Vec::new();
        let mut touched: Vec<OrderId> = Vec::new();
        for ev in events {
            match ev {
                Event::Rejected { .. } => rejected = true,
                Event::AssetListed(a) | Event::AssetUpdated(a) => {
                    let created = self.assets.get(&a.id.0).map_or(ts_ms, |x| x.1);
                    self.assets.insert(a.id.0, (a.clone(), created, seq, ts_ms));
                }
                Event::PairListed(p) | Event::PairUpdated(p) => {
                    let created = self.pairs.get(&p.id.0).map_or(ts_ms, |x| x.1);
                    self.pairs
                        .insert(p.id.0, ((**p).clone(), created, seq, ts_ms));
                }
                Event::FeeAccountSet { .. } | Event::LimitsSet(_) => {}
                Event::UserCreated { user, .. } | Event::UserRolesChanged { user, .. } => {
                    let u = self.touch_user(user.0, seq, ts_ms);
                    u.roles_ts = Some(ts_ms);
                }
                Event::UserStatusChanged { user, .. } | Event::KycLevelSet { user, .. } => {
                    self.touch_user(user.0, seq, ts_ms);
                }
                Event::LoginRecorded { user, success, .. } => {
                    let u = self.touch_user(user.0, seq, ts_ms);
                    if *success {
                        u.login_ts = Some(ts_ms);
                    }
                }
                Event::ApiKeyCreated {
                    user,
                    id,
                    api_key,
                    label,
                    permissions,
                    kind,
                    secret,
                    created_ms,
                } => {
                    let perms: Vec<&str> = api_key_perms::NAMES
                        .iter()
                        .filter(|(bit, _)| permissions & bit != 0)
                        .map(|(_, n)| *n)
                        .collect();
                    let (secret, public_key) = match kind {
                        ApiKeyKind::Hmac => (Some(secret.clone()), None),
                        ApiKeyKind::Ed25519 => (
                            None,
                            Some(secret.iter().map(|b| format!("{b:02x}")).collect()),
                        ),
                    };
                    self.api_keys.push(ApiKeyRow {
                        id: *id as i64,
                        user: user.0 as i64,
                        api_key: api_key.clone(),
                        label: label.clone(),
                        kind: kind.name(),
                        permissions: format!("{{{}}}", perms.join(",")),
                        secret,
                        public_key,
                        created: ts(*created_ms),
                    });
                }
                Event::ApiKeyRevoked { id, .. } => self.api_keys_revoked.push((*id as i64, t)),
                Event::Balance(b) => {
                    let d = decimals(engine, b.asset);
                    let (kind, reference) = ledger_kind(b.cause);
                    let description = match (b.cause, cmd) {
                        (BalanceCause::Adjustment, Command::Adjust { reason, .. }) => {
                            opt_str(reason)
                        }
                        _ => None,
                    };
                    for (bt, before, after) in [
                        ("AVAILABLE", b.available_before, b.available_after),
                        ("FROZEN", b.frozen_before, b.frozen_after),
                    ] {
                        if before == after {
                            continue;
                        }
                        let id = next_id();
                        if self.skip.contains(Domain::Ledger) {
                            continue;
                        }
                        let amount = if after > before {
                            dec((after - before) as u128, d)
                        } else {
                            format!("-{}", dec((before - after) as u128, d))
                        };
                        let l = &mut self.ledger;
                        l.id.push(id);
                        l.user.push(b.user.0 as i64);
                        l.asset.push(b.asset.0 as i64);
                        l.kind.push(kind);
                        l.balance_type.push(bt);
                        l.amount.push(amount);
                        l.before.push(dec(before as u128, d));
                        l.after.push(dec(after as u128, d));
                        l.ref_type.push(reference.map(|r| r.0));
                        l.ref_id.push(reference.map(|r| r.1 as i64));
                        l.description.push(description.clone());
                        l.created.push(t);
                    }
                    let acct = self
                        .accounts
                        .entry((b.user.0, b.asset.0))
                        .or_insert(AccountTouch {
                            available: 0,
                            frozen: 0,
                            first_ts: ts_ms,
                            ts: ts_ms,
                            seq,
                        });
                    acct.available = b.available_after;
                    acct.frozen = b.frozen_after;
                    acct.ts = ts_ms;
                    acct.seq = seq;
                    let frozen_added = b.frozen_after.saturating_sub(b.frozen_before);
                    let freeze = match b.cause {
                        BalanceCause::OrderFreeze(o) if frozen_added > 0 => {
                            Some((order_freeze_id(o), "ORDER", "ORDER", o.0))
                        }
                        BalanceCause::WithdrawalFreeze(w) if frozen_added > 0 => {
                            Some((withdrawal_freeze_id(w), "WITHDRAWAL", "WITHDRAWAL", w))
                        }
                        _ => None,
                    };
                    if let Some((id, reason, ref_type, ref_id)) = freeze {
                        let f = self.freezes.entry(id).or_insert(FreezeTouch {
                            user: b.user,
                            asset: b.asset,
                            added: 0,
                            reason,
                            ref_type,
                            ref_id,
                            created_ts: ts_ms,
                            released_ts: None,
                            ts: ts_ms,
                            seq,
                        });
                        f.added += frozen_added;
                        f.ts = ts_ms;
                        f.seq = seq;
                    }
                }
                Event::DepositUpdated(dp) => {
                    self.dw.insert(
                        deposit_row_id(dp.id),
                        DwRow {
                            id: deposit_row_id(dp.id),
                            user: dp.user,
                            asset: dp.asset,
                            kind: "DEPOSIT",
                            amount: dp.amount,
                            fee: 0,
                            status: match dp.status {
                                DepositStatus::Pending => "PENDING",
                                DepositStatus::Credited => "CONFIRMED",
                            },
                            tx_hash: opt_str(&dp.tx_hash),
                            address: None,
                            confirmations: dp.confirmations.min(i32::MAX as u32) as i32,
                            required: dp.required.min(i32::MAX as u32) as i32,
                            processed_ms: (dp.status == DepositStatus::Credited)
                                .then_some(dp.updated_ms),
                            created_ms: dp.created_ms,
                            updated_ms: dp.updated_ms,
                            seq,
                        },
                    );
                }
                Event::WithdrawalUpdated(w) => {
                    let status = match w.status {
                        WithdrawalStatus::Pending => "PENDING",
                        WithdrawalStatus::Sent => "CONFIRMED",
                        WithdrawalStatus::Rejected => "REJECTED",
                    };
                    self.dw.insert(
                        withdrawal_row_id(w.id),
                        DwRow {
                            id: withdrawal_row_id(w.id),
                            user: w.user,
                            asset: w.asset,
                            kind: "WITHDRAWAL",
                            amount: w.amount,
                            fee: w.fee,
                            status,
                            tx_hash: opt_str(&w.tx_hash),
                            address: opt_str(&w.address),
                            confirmations: 0,
                            required: 0,
                            processed_ms: (w.status != WithdrawalStatus::Pending)
                                .then_some(w.updated_ms),
                            created_ms: w.created_ms,
                            updated_ms: w.updated_ms,
                            seq,
                        },
                    );
                    if w.status != WithdrawalStatus::Pending {
                        self.release(withdrawal_freeze_id(w.id), w.user, w.asset, ts_ms, seq);
                    }
                }
                Event::Adjusted { .. } => {}
                Event::KycSubmitted(k) => {
                    self.kyc.insert(k.id, (seq, ts_ms));
                    let data = || {
                        format!(
                            "{{\"kyc_id\":{},\"user_id\":{},\"level\":{},\"status\":\"PENDING\"}}",
                            k.id, k.user.0, k.level
                        )
                    };
                    self.push_outbox(next_id(), "KYC", k.id, "kyc.submitted", data, t);
                }
                Event::KycReviewed {
                    kyc,
                    user,
                    status,
                    level,
                    ..
                } => {
                    self.kyc.insert(*kyc, (seq, ts_ms));
                    let data = || {
                        format!(
                            "{{\"kyc_id\":{},\"user_id\":{},\"level\":{},\"status\":\"{}\"}}",
                            kyc,
                            user.0,
                            level,
                            status.name()
                        )
                    };
                    let ev = match status {
                        KycStatus::Approved => "kyc.approved",
                        _ => "kyc.rejected",
                    };
                    self.push_outbox(next_id(), "KYC", *kyc, ev, data, t);
                }
                Event::RiskRuleCreated(r) | Event::RiskRuleUpdated(r) => {
                    let t = self.touch_rule(r.id, seq, ts_ms);
                    t.rule = Some((**r).clone());
                }
                Event::RiskRuleDeleted { rule, .. } => {
                    self.touch_rule(*rule, seq, ts_ms).deleted = true;
                }
                Event::RiskEventRaised(r) => {
                    self.risk_events.insert(
                        r.id,
                        RiskEventTouch {
                            raised: Some((**r).clone()),
                            status: r.status,
                            handled_by: None,
                            changes: Vec::new(),
                            updated_ms: r.updated_ms,
                        },
                    );
                    let data = || {
                        format!(
                        "{{\"risk_event_id\":{},\"rule_id\":{},\"user_id\":{},\"type\":\"{}\",\"level\":\"{}\",\"action\":\"{}\"}}",
                        r.id,
                        r.rule,
                        r.user.0,
                        r.kind.name(),
                        r.level.name(),
                        r.action.name()
                    )
                    };
                    self.push_outbox(next_id(), "RISK", r.id, "risk.event_raised", data, t);
                }
                Event::RiskEventStatusChanged {
                    event,
                    status,
                    by,
                    note,
                    updated_ms,
                    ..
                } => {
                    let e = self.risk_events.entry(*event).or_insert(RiskEventTouch {
                        raised: None,
                        status: *status,
                        handled_by: None,
                        changes: Vec::new(),
                        updated_ms: *updated_ms,
                    });
                    e.status = *status;
                    e.handled_by = Some(*by);
                    e.updated_ms = *updated_ms;
                    e.changes.push((*status, *by, note.clone(), *updated_ms));
                    let data = || {
                        format!(
                            "{{\"risk_event_id\":{},\"status\":\"{}\",\"by\":{}}}",
                            event,
                            status.name(),
                            by.0
                        )
                    };
                    self.push_outbox(
                        next_id(),
                        "RISK",
                        *event,
                        "risk.event_status_changed",
                        data,
                        t,
                    );
                }
                Event::OrderAccepted(o) => {
                    self.orders.insert(
                        o.id.0,
                        OrderTouch {
                            pair: o.pair,
                            accepted: Some(*o),
                            accepted_ts: ts_ms,
                            qty: Some(o.qty.0),
                            filled: 0,
                            cum_quote: 0,
                            status: OrderStatus::New,
                            ts: ts_ms,
                            seq,
                        },
                    );
                    let data = || {
                        format!(
                            "{{\"order_id\":{},\"user_id\":{},\"pair_id\":{},\"status\":\"NEW\"}}",
                            o.id.0, o.user.0, o.pair.0
                        )
                    };
                    self.push_outbox(next_id(), "ORDER", o.id.0, "order.new", data, t);
                }
                Event::Trade(tr) => {
                    touched.push(tr.maker_order);
                    touched.push(tr.taker_order);
                    if tr.maker_filled.0 == tr.qty.0 {
                        started.push(tr.maker_order);
                    }
                    if tr.taker_filled.0 == tr.qty.0 {
                        started.push(tr.taker_order);
                    }
                    let Some(ps) = engine.pair(tr.pair) else {
                        continue;
                    };
                    let spec = &ps.pair.spec;
                    let (bd, qd) = (decimals(engine, spec.base), decimals(engine, spec.quote));
                    let buyer_is_maker = tr.buyer_is_maker();
                    let (buy_o, sell_o, buyer, seller, bfee, sfee) = if buyer_is_maker {
                        (
                            tr.maker_order,
                            tr.taker_order,
                            tr.maker_user,
                            tr.taker_user,
                            tr.maker_fee,
                            tr.taker_fee,
                        )
                    } else {
                        (
                            tr.taker_order,
                            tr.maker_order,
                            tr.taker_user,
                            tr.maker_user,
                            tr.taker_fee,
                            tr.maker_fee,
                        )
                    };
                    let price_units = tr.price.0 as u128 * spec.tick_units as u128;
                    self.klines.add(
                        tr,
                        ts_ms,
                        price_units,
                        PairDecimals {
                            base: bd,
                            quote: qd,
                        },
                    );
                    let price = dec(price_units, qd);
                    let x = &mut self.trades;
                    x.id.push(tr.id.0 as i64);
                    x.pair.push(tr.pair.0 as i64);
                    x.buy_order.push(buy_o.0 as i64);
                    x.sell_order.push(sell_o.0 as i64);
                    x.buyer.push(buyer.0 as i64);
                    x.seller.push(seller.0 as i64);
                    x.amount.push(dec(tr.qty.0 as u128, bd));
                    x.price.push(price.clone());
                    x.quote.push(dec(tr.quote_qty as u128, qd));
                    x.buyer_fee.push(dec(bfee as u128, bd));
                    x.seller_fee.push(dec(sfee as u128, qd));
                    x.buyer_fee_asset.push(spec.base.0 as i64);
                    x.seller_fee_asset.push(spec.quote.0 as i64);
                    x.maker_side
                        .push(if buyer_is_maker { "BUY" } else { "SELL" });
                    x.created.push(t);
                    let data = || {
                        format!(
                        "{{\"trade_id\":{},\"pair_id\":{},\"price\":\"{}\",\"qty\":\"{}\",\"buy_order_id\":{},\"sell_order_id\":{},\"maker_side\":\"{}\"}}",
                        tr.id.0,
                        tr.pair.0,
                        price,
                        dec(tr.qty.0 as u128, bd),
                        buy_o.0,
                        sell_o.0,
                        if buyer_is_maker { "BUY" } else { "SELL" }
                    )
                    };
                    self.push_outbox(next_id(), "TRADE", tr.id.0, "trade.executed", data, t);
                }
                Event::StopTriggered { order, .. } => touched.push(*order),
                Event::NotificationWebhookSet { .. } => {}
                Event::NotificationTemplateSet(tpl) => {
                    self.notification_templates
                        .by_name
                        .insert(tpl.name.clone(), (**tpl).clone());
                }
                Event::NotificationsRead { user, ids, read_ms } => {
                    let r = &mut self.notification_reads;
                    for id in ids {
                        // Ids beyond i64 name no row; skip rather than wrap.
                        let Ok(id) = i64::try_from(*id) else {
                            continue;
                        };
                        r.id.push(id);
                        r.user.push(user.0 as i64);
                        r.read_at.push(ts(*read_ms));
                    }
                }
                Event::SettlementRequested {
                    id,
                    date,
                    requested_by,
                    ts_ms: at,
                } => self.settlements.push(crate::settlement::SettlementRow {
                    id: *id,
                    date: *date,
                    requested_by: requested_by.0,
                    ts_ms: *at,
                    seq,
                    trade_bound: engine.next_trade_id(),
                    // Its outbox row is written from SQL (settlement.rs).
                    outbox_id: next_id(),
                }),
                Event::OrderAmended {
                    order, qty, pair, ..
                } => {
                    touched.push(*order);
                    let o = self.touch_order(order.0, *pair, ts_ms, seq);
                    o.qty = Some(qty.0);
                }
                Event::OrderDone {
                    order,
                    status,
                    filled,
                    cum_quote,
                    user,
                    pair,
                } => {
                    done.push(*order);
                    let o = self.touch_order(order.0, *pair, ts_ms, seq);
                    o.status = *status;
                    o.filled = filled.0;
                    o.cum_quote = *cum_quote;
                    // A release of a freeze this batch did not create is an
                    // UPDATE of the older row (no-op if the order froze nothing).
                    self.release(order_freeze_id(*order), *user, AssetId(0), ts_ms, seq);
                    let data = || {
                        format!(
                            "{{\"order_id\":{},\"user_id\":{},\"pair_id\":{},\"status\":\"{}\"}}",
                            order.0,
                            user.0,
                            pair.0,
                            status.as_str()
                        )
                    };
                    let ev = match status {
                        OrderStatus::Filled => "order.filled",
                        OrderStatus::Canceled => "order.canceled",
                        OrderStatus::Expired => "order.expired",
                        OrderStatus::ExpiredInMatch => "order.expired_in_match",
                        OrderStatus::Rejected => "order.rejected",
                        _ => "order.updated",
                    };
                    self.push_outbox(next_id(), "ORDER", order.0, ev, data, t);
                }
            }
        }
        let notifications = if self.skip.contains(Domain::Activity) {
            Vec::new()
        } else {
            crate::notify::derive(engine, seq, ts_ms, cmd, events)
        };
        for n in notifications {
            let x = &mut self.notifications;
            x.id.push(n.id as i64);
            x.user.push(n.user.0 as i64);
            x.template_id.push(n.template_id);
            x.title.push(n.title.into_owned());
            x.content.push(n.body);
            x.created.push(ts(n.created_ms));
        }
        // Orders still open after this record: their state from the replica.
        for id in touched {
            if done.contains(&id) {
                continue;
            }
            if let Some(o) = engine.order(id) {
                let (qty, filled, cum, status) = (o.qty.0, o.filled.0, o.cum_quote, o.status);
                let (user, pair) = (o.user, o.pair);
                let t_ = self.touch_order(id.0, pair, ts_ms, seq);
                t_.qty = Some(qty);
                t_.filled = filled;
                t_.cum_quote = cum;
                t_.status = status;
                if started.contains(&id) && status == OrderStatus::PartiallyFilled {
                    started.retain(|x| *x != id);
                    let data = || {
                        format!(
                        "{{\"order_id\":{},\"user_id\":{},\"pair_id\":{},\"status\":\"PARTIALLY_FILLED\"}}",
                        id.0, user.0, pair.0
                    )
                    };
                    self.push_outbox(next_id(), "ORDER", id.0, "order.partially_filled", data, t);
                }
            }
        }
        if !rejected || matches!(cmd, Command::CancelReplace { .. }) {
            let changed = events.iter().any(|e| !matches!(e, Event::Rejected { .. }));
            if let (true, Some((action, resource_type, resource_id))) = (changed, audit_of(cmd)) {
                let resource_id = resource_id.or_else(|| {
                    events.iter().find_map(|e| match e {
                        Event::RiskRuleCreated(r) => Some(r.id.to_string()),
                        _ => None,
                    })
                });
                let a = &mut self.audit;
                a.id.push(seq as i64);
                a.user.push(cmd.actor().map(|u| u.0 as i64));
                a.action.push(action);
                a.resource_type.push(resource_type);
                a.resource_id.push(resource_id);
                a.new_values
                    .push(serde_json::to_string(cmd).unwrap_or_else(|_| "{}".into()));
                a.created.push(t);
            }
        }
    }

    fn push_outbox(
        &mut self,
        id: i64,
        aggregate: &'static str,
        aggregate_id: u64,
        event_type: &'static str,
        data: impl FnOnce() -> String,
        t: SystemTime,
    ) {
        if self.skip.contains(Domain::Core) {
            return;
        }
        let data = data();
        let o = &mut self.outbox;
        o.id.push(id);
        o.aggregate_type.push(aggregate);
        o.aggregate_id.push(aggregate_id as i64);
        o.event_type.push(event_type);
        o.data.push(data);
        o.created.push(t);
    }

    fn touch_user(&mut self, id: u64, seq: u64, ts_ms: u64) -> &mut UserTouch {
        let u = self.users.entry(id).or_insert(UserTouch {
            seq,
            ts: ts_ms,
            login_ts: None,
            roles_ts: None,
        });
        u.seq = seq;
        u.ts = ts_ms;
        u
    }

    fn touch_rule(&mut self, id: u64, seq: u64, ts_ms: u64) -> &mut RiskRuleTouch {
        let r = self.risk_rules.entry(id).or_insert(RiskRuleTouch {
            rule: None,
            deleted: false,
            ts: ts_ms,
            seq,
        });
        r.ts = ts_ms;
        r.seq = seq;
        r
    }

    fn touch_order(&mut self, id: u64, pair: PairId, ts_ms: u64, seq: u64) -> &mut OrderTouch {
        let o = self.orders.entry(id).or_insert(OrderTouch {
            pair,
            accepted: None,
            accepted_ts: 0,
            qty: None,
            filled: 0,
            cum_quote: 0,
            status: OrderStatus::New,
            ts: ts_ms,
            seq,
        });
        o.ts = ts_ms;
        o.seq = seq;
        o
    }

    /// Mark a freeze released (a freeze created in this batch is inserted
    /// already released; an older one is updated).
    fn release(&mut self, id: i64, user: UserId, asset: AssetId, ts_ms: u64, seq: u64) {
        let f = self.freezes.entry(id).or_insert(FreezeTouch {
            user,
            asset,
            added: 0,
            reason: "ORDER",
            ref_type: "ORDER",
            ref_id: 0,
            created_ts: ts_ms,
            released_ts: None,
            ts: ts_ms,
            seq,
        });
        f.released_ts = Some(ts_ms);
        f.ts = ts_ms;
        f.seq = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kyc_document_text_is_the_ciphertext_in_hex() {
        assert_eq!(kyc_document_text(&[1, 0xab, 0x00, 0xff]), "enc:01ab00ff");
        assert_eq!(kyc_document_text(&[]), "enc:");
    }

    #[test]
    fn kyc_data_is_always_a_json_object() {
        assert_eq!(kyc_data_json(r#"{"a":1}"#), r#"{"a":1}"#);
        for bad in ["{ not json }", "[1]", "", "\"x\"", "{\"a\":1} trailing"] {
            let v: serde_json::Value = serde_json::from_str(&kyc_data_json(bad)).unwrap();
            assert_eq!(v["unparsed"], bad, "{bad}");
        }
    }
}
