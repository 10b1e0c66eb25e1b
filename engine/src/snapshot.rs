//! Full-state snapshots (serde + bincode, versioned) and `state_hash()`.
//!
//! A snapshot is the engine's logical state: configuration, counters,
//! users with balances, and every open order in book priority order (best
//! level first, FIFO within a level) plus waiting stops by id. Indexes and
//! the slab layout are rebuilt on load, so the encoding is canonical: two
//! engines in the same logical state encode to the same bytes, and
//! `state_hash()` is a hash of exactly that encoding.

use serde::{Deserialize, Serialize};

use crate::book::Slab;
use crate::engine::{fires_upward, Engine, PairState};
use crate::fxhash::FxHashMap;
use crate::model::*;
use crate::risk::{RiskEvent, RiskLimit, RiskRule};
use crate::settlement::Settlement;
use crate::templates::NotificationTemplate;
use crate::types::*;

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"MXSNAP\0\0";
/// 2: users carry API keys and login-failure state, `Limits` the lockout
/// policy, and there is an API key id counter.
/// 3: KYC records and their id counter.
/// 4: a risk section (`RiskSnap`: rules, open risk events, their
/// counters) follows the version 3 body.
/// 5: a settlement section (`SettleSnap`: settled days, the batch
/// counter) follows the risk section. Versions 1 to 4 are still read
/// (no rules, no events, nothing settled).
/// 6: a notification template section (the edited templates, by name)
/// follows the settlement section. Versions 1 to 5 are still read (no
/// edits).
pub const SNAPSHOT_VERSION: u32 = 6;

/// Risk state, encoded after the main body (its own section, so the main
/// body keeps the version 3 layout).
#[derive(Serialize, Deserialize)]
struct RiskSnap {
    next_rule_id: u64,
    next_event_id: u64,
    /// By id.
    rules: Vec<RiskRule>,
    /// OPEN and ACKNOWLEDGED events, by id.
    open_events: Vec<RiskEvent>,
}

impl Default for RiskSnap {
    fn default() -> Self {
        RiskSnap {
            next_rule_id: 1,
            next_event_id: 1,
            rules: Vec::new(),
            open_events: Vec::new(),
        }
    }
}

/// Settlement state, encoded after the risk section.
#[derive(Serialize, Deserialize)]
struct SettleSnap {
    next_settlement_id: u64,
    /// By settled day.
    settlements: Vec<Settlement>,
}

impl Default for SettleSnap {
    fn default() -> Self {
        SettleSnap {
            next_settlement_id: 1,
            settlements: Vec::new(),
        }
    }
}

/// Edited notification templates by name, encoded after the settlement
/// section.
#[derive(Serialize, Deserialize, Default)]
struct TemplateSnap {
    templates: Vec<NotificationTemplate>,
}

#[derive(Serialize, Deserialize)]
struct PairSnap {
    pair: Pair,
    last_price: u64,
    /// Best first, FIFO within a level.
    bids: Vec<Order>,
    asks: Vec<Order>,
    /// Waiting stops, by order id.
    stops: Vec<Order>,
}

#[derive(Serialize, Deserialize)]
struct StateV3 {
    last_seq: u64,
    last_ts_ms: u64,
    next_order_id: u64,
    next_trade_id: u64,
    next_user_id: u64,
    next_deposit_id: u64,
    next_withdrawal_id: u64,
    next_api_key_id: u64,
    next_kyc_id: u64,
    fee_account: UserId,
    limits: Limits,
    assets: Vec<Asset>,
    flows: Vec<AssetFlows>,
    pairs: Vec<PairSnap>,
    users: Vec<User>,
    deposits: Vec<Deposit>,
    withdrawals: Vec<Withdrawal>,
    /// By id.
    kyc: Vec<KycRecord>,
}

/// Version 2: no KYC records yet.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct StateV2 {
    last_seq: u64,
    last_ts_ms: u64,
    next_order_id: u64,
    next_trade_id: u64,
    next_user_id: u64,
    next_deposit_id: u64,
    next_withdrawal_id: u64,
    next_api_key_id: u64,
    fee_account: UserId,
    limits: Limits,
    assets: Vec<Asset>,
    flows: Vec<AssetFlows>,
    pairs: Vec<PairSnap>,
    users: Vec<User>,
    deposits: Vec<Deposit>,
    withdrawals: Vec<Withdrawal>,
}

impl From<StateV2> for StateV3 {
    fn from(s: StateV2) -> StateV3 {
        StateV3 {
            last_seq: s.last_seq,
            last_ts_ms: s.last_ts_ms,
            next_order_id: s.next_order_id,
            next_trade_id: s.next_trade_id,
            next_user_id: s.next_user_id,
            next_deposit_id: s.next_deposit_id,
            next_withdrawal_id: s.next_withdrawal_id,
            next_api_key_id: s.next_api_key_id,
            next_kyc_id: 1,
            fee_account: s.fee_account,
            limits: s.limits,
            assets: s.assets,
            flows: s.flows,
            pairs: s.pairs,
            users: s.users,
            deposits: s.deposits,
            withdrawals: s.withdrawals,
            kyc: Vec::new(),
        }
    }
}

/// Version 1 encodings, read for compatibility and converted.
mod v1 {
    use super::*;

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Serialize))]
    pub(super) struct Limits1 {
        max_open_orders_per_user: u32,
        max_open_orders_total: u32,
        max_api_keys_per_user: u32,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Serialize))]
    pub(super) struct User1 {
        id: UserId,
        username: String,
        email: String,
        password_hash: String,
        status: UserStatus,
        roles: u32,
        kyc_level: u8,
        created_ms: u64,
        balances: Vec<(AssetId, Balance)>,
        open_orders: u32,
        withdraw_usage: Vec<(AssetId, u64, u64)>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Serialize))]
    pub(super) struct State1 {
        last_seq: u64,
        last_ts_ms: u64,
        next_order_id: u64,
        next_trade_id: u64,
        next_user_id: u64,
        next_deposit_id: u64,
        next_withdrawal_id: u64,
        fee_account: UserId,
        limits: Limits1,
        assets: Vec<Asset>,
        flows: Vec<AssetFlows>,
        pairs: Vec<PairSnap>,
        users: Vec<User1>,
        deposits: Vec<Deposit>,
        withdrawals: Vec<Withdrawal>,
    }

    impl From<State1> for StateV2 {
        fn from(s: State1) -> StateV2 {
            StateV2 {
                last_seq: s.last_seq,
                last_ts_ms: s.last_ts_ms,
                next_order_id: s.next_order_id,
                next_trade_id: s.next_trade_id,
                next_user_id: s.next_user_id,
                next_deposit_id: s.next_deposit_id,
                next_withdrawal_id: s.next_withdrawal_id,
                next_api_key_id: 1,
                fee_account: s.fee_account,
                limits: Limits {
                    max_open_orders_per_user: s.limits.max_open_orders_per_user,
                    max_open_orders_total: s.limits.max_open_orders_total,
                    max_api_keys_per_user: s.limits.max_api_keys_per_user,
                    ..Limits::default()
                },
                assets: s.assets,
                flows: s.flows,
                pairs: s.pairs,
                users: s
                    .users
                    .into_iter()
                    .map(|u| User {
                        id: u.id,
                        username: u.username,
                        email: u.email,
                        password_hash: u.password_hash,
                        status: u.status,
                        roles: u.roles,
                        kyc_level: u.kyc_level,
                        created_ms: u.created_ms,
                        balances: u.balances,
                        open_orders: u.open_orders,
                        withdraw_usage: u.withdraw_usage,
                        api_keys: Vec::new(),
                        failed_logins: 0,
                        locked_until_ms: 0,
                    })
                    .collect(),
                deposits: s.deposits,
                withdrawals: s.withdrawals,
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::command::Command;

        /// A version 1 snapshot (written before identity state existed) loads
        /// into the same state, with no keys and no lockouts.
        #[test]
        fn version_1_snapshots_still_load() {
            let mut e = Engine::new();
            let mut out = Vec::new();
            e.apply(
                1,
                10,
                &Command::CreateUser {
                    username: "alice".into(),
                    email: "a@example.com".into(),
                    password_hash: "$argon2id$x".into(),
                    roles: 16,
                },
                &mut out,
            );
            let st = e.to_state();
            let old = State1 {
                last_seq: st.last_seq,
                last_ts_ms: st.last_ts_ms,
                next_order_id: st.next_order_id,
                next_trade_id: st.next_trade_id,
                next_user_id: st.next_user_id,
                next_deposit_id: st.next_deposit_id,
                next_withdrawal_id: st.next_withdrawal_id,
                fee_account: st.fee_account,
                limits: Limits1 {
                    max_open_orders_per_user: st.limits.max_open_orders_per_user,
                    max_open_orders_total: st.limits.max_open_orders_total,
                    max_api_keys_per_user: st.limits.max_api_keys_per_user,
                },
                assets: st.assets,
                flows: st.flows,
                pairs: st.pairs,
                users: st
                    .users
                    .into_iter()
                    .map(|u| User1 {
                        id: u.id,
                        username: u.username,
                        email: u.email,
                        password_hash: u.password_hash,
                        status: u.status,
                        roles: u.roles,
                        kyc_level: u.kyc_level,
                        created_ms: u.created_ms,
                        balances: u.balances,
                        open_orders: u.open_orders,
                        withdraw_usage: u.withdraw_usage,
                    })
                    .collect(),
                deposits: st.deposits,
                withdrawals: st.withdrawals,
            };
            let mut bytes = SNAPSHOT_MAGIC.to_vec();
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bincode::serialize_into(&mut bytes, &old).unwrap();
            let loaded = Engine::from_snapshot(&bytes).unwrap();
            assert_eq!(loaded.state_hash(), e.state_hash());
            assert_eq!(loaded.user_by_name("alice").unwrap().failed_logins, 0);
            bytes[8] = (SNAPSHOT_VERSION + 1) as u8;
            assert!(matches!(
                Engine::from_snapshot(&bytes),
                Err(SnapshotError::Version(v)) if v == SNAPSHOT_VERSION + 1
            ));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not an engine snapshot (bad magic)")]
    BadMagic,
    #[error("unsupported engine snapshot version {0} (this build reads 1 to {SNAPSHOT_VERSION})")]
    Version(u32),
    #[error("engine snapshot is malformed: {0}")]
    Malformed(String),
    #[error("engine snapshot violates an invariant: {0}")]
    Invariant(String),
}

/// 64-bit streaming hash (FNV-1a folded over 8-byte words, with a final
/// avalanche). Stable across platforms and Rust versions, unlike
/// `DefaultHasher`.
#[derive(Debug, Clone)]
pub struct StableHasher {
    h: u64,
    buf: [u8; 8],
    n: usize,
    len: u64,
}

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher {
            h: 0xcbf2_9ce4_8422_2325,
            buf: [0; 8],
            n: 0,
            len: 0,
        }
    }
}

impl StableHasher {
    #[inline]
    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
    }
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.n > 0 {
            let take = (8 - self.n).min(data.len());
            self.buf[self.n..self.n + take].copy_from_slice(&data[..take]);
            self.n += take;
            data = &data[take..];
            if self.n < 8 {
                // Still a partial word: keep it for the next write (falling
                // through would reset `n` and drop these bytes).
                return;
            }
            let w = u64::from_le_bytes(self.buf);
            self.word(w);
            self.n = 0;
        }
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.n = rest.len();
    }
    pub fn finish(mut self) -> u64 {
        if self.n > 0 {
            let mut b = [0u8; 8];
            b[..self.n].copy_from_slice(&self.buf[..self.n]);
            self.word(u64::from_le_bytes(b));
        }
        self.word(self.len);
        // splitmix64 finaliser
        let mut z = self.h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl std::io::Write for StableHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Engine {
    fn to_state(&self) -> StateV3 {
        let pairs = self
            .pairs
            .iter()
            .map(|ps| {
                let mut stops: Vec<Order> = ps
                    .stops_up
                    .iter()
                    .chain(ps.stops_down.iter())
                    .map(|(_, id)| *self.order(OrderId(*id)).expect("stop is indexed"))
                    .collect();
                stops.sort_by_key(|o| o.id);
                PairSnap {
                    pair: ps.pair.clone(),
                    last_price: ps.last_price,
                    bids: self.book_orders(ps.pair.id, Side::Buy),
                    asks: self.book_orders(ps.pair.id, Side::Sell),
                    stops,
                }
            })
            .collect();
        StateV3 {
            last_seq: self.last_seq,
            last_ts_ms: self.last_ts_ms,
            next_order_id: self.next_order_id,
            next_trade_id: self.next_trade_id,
            next_user_id: self.next_user_id,
            next_deposit_id: self.next_deposit_id,
            next_withdrawal_id: self.next_withdrawal_id,
            next_api_key_id: self.next_api_key_id,
            next_kyc_id: self.next_kyc_id,
            fee_account: self.fee_account,
            limits: self.limits,
            assets: self.assets.clone(),
            flows: self.flows.clone(),
            pairs,
            users: self.users.clone(),
            deposits: self.deposits.values().cloned().collect(),
            withdrawals: self.withdrawals.values().cloned().collect(),
            kyc: self.kyc.values().cloned().collect(),
        }
    }

    fn to_settle_snap(&self) -> SettleSnap {
        SettleSnap {
            next_settlement_id: self.next_settlement_id,
            settlements: self.settlements.values().copied().collect(),
        }
    }

    fn to_template_snap(&self) -> TemplateSnap {
        TemplateSnap {
            templates: self.templates.values().cloned().collect(),
        }
    }

    fn to_risk_snap(&self) -> RiskSnap {
        RiskSnap {
            next_rule_id: self.risk.next_rule_id,
            next_event_id: self.risk.next_event_id,
            rules: self.risk.rules.values().cloned().collect(),
            open_events: self.risk.open_events.values().cloned().collect(),
        }
    }

    /// Serialise the complete state (magic, version, bincode body, risk
    /// section).
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1024);
        v.extend_from_slice(&SNAPSHOT_MAGIC);
        v.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        bincode::serialize_into(&mut v, &self.to_state()).expect("state encodes");
        bincode::serialize_into(&mut v, &self.to_risk_snap()).expect("risk state encodes");
        bincode::serialize_into(&mut v, &self.to_settle_snap()).expect("settlements encode");
        bincode::serialize_into(&mut v, &self.to_template_snap()).expect("templates encode");
        v
    }

    /// Hash of the canonical snapshot encoding of the business state: equal
    /// states, equal hashes. The journal position (last seq and timestamp)
    /// is left out, so a rejected command leaves the hash unchanged; report
    /// `last_seq()` beside it.
    pub fn state_hash(&self) -> u64 {
        let mut h = StableHasher::default();
        let mut st = self.to_state();
        st.last_seq = 0;
        st.last_ts_ms = 0;
        bincode::serialize_into(&mut h, &st).expect("state encodes");
        bincode::serialize_into(&mut h, &self.to_risk_snap()).expect("risk state encodes");
        bincode::serialize_into(&mut h, &self.to_settle_snap()).expect("settlements encode");
        // Only once a template was edited, so the hash of every state
        // without edits stays what earlier builds computed.
        if !self.templates.is_empty() {
            bincode::serialize_into(&mut h, &self.to_template_snap()).expect("templates encode");
        }
        h.finish()
    }

    /// Rebuild an engine from `snapshot_bytes()` output; verifies every
    /// invariant before returning it.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Engine, SnapshotError> {
        if bytes.len() < 12 || bytes[..8] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        use bincode::Options;
        let opts = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes();
        let malformed = |e: bincode::Error| SnapshotError::Malformed(e.to_string());
        let mut body = &bytes[12..];
        let (st, risk, settle, templates): (StateV3, RiskSnap, SettleSnap, TemplateSnap) =
            match version {
                SNAPSHOT_VERSION => {
                    let st = opts.deserialize_from(&mut body).map_err(malformed)?;
                    let risk = opts.deserialize_from(&mut body).map_err(malformed)?;
                    let settle = opts.deserialize_from(&mut body).map_err(malformed)?;
                    (
                        st,
                        risk,
                        settle,
                        opts.deserialize_from(&mut body).map_err(malformed)?,
                    )
                }
                5 => {
                    let st = opts.deserialize_from(&mut body).map_err(malformed)?;
                    let risk = opts.deserialize_from(&mut body).map_err(malformed)?;
                    (
                        st,
                        risk,
                        opts.deserialize_from(&mut body).map_err(malformed)?,
                        TemplateSnap::default(),
                    )
                }
                4 => {
                    let st = opts.deserialize_from(&mut body).map_err(malformed)?;
                    (
                        st,
                        opts.deserialize_from(&mut body).map_err(malformed)?,
                        SettleSnap::default(),
                        TemplateSnap::default(),
                    )
                }
                3 => (
                    opts.deserialize(body).map_err(malformed)?,
                    RiskSnap::default(),
                    SettleSnap::default(),
                    TemplateSnap::default(),
                ),
                2 => (
                    opts.deserialize::<StateV2>(body).map_err(malformed)?.into(),
                    RiskSnap::default(),
                    SettleSnap::default(),
                    TemplateSnap::default(),
                ),
                1 => (
                    StateV2::from(opts.deserialize::<v1::State1>(body).map_err(malformed)?).into(),
                    RiskSnap::default(),
                    SettleSnap::default(),
                    TemplateSnap::default(),
                ),
                _ => return Err(SnapshotError::Version(version)),
            };
        let open: usize = st
            .pairs
            .iter()
            .map(|p| p.bids.len() + p.asks.len() + p.stops.len())
            .sum();
        let mut e = Engine::with_capacity(open.max(1024));
        e.last_seq = st.last_seq;
        e.last_ts_ms = st.last_ts_ms;
        e.next_order_id = st.next_order_id;
        e.next_trade_id = st.next_trade_id;
        e.next_user_id = st.next_user_id;
        e.next_deposit_id = st.next_deposit_id;
        e.next_withdrawal_id = st.next_withdrawal_id;
        e.next_api_key_id = st.next_api_key_id;
        e.next_kyc_id = st.next_kyc_id;
        e.fee_account = st.fee_account;
        e.limits = st.limits;
        e.asset_by_symbol = st
            .assets
            .iter()
            .map(|a| (a.spec.symbol.clone(), a.id))
            .collect();
        e.assets = st.assets;
        e.flows = st.flows;
        if e.flows.len() != e.assets.len() {
            return Err(SnapshotError::Malformed("asset flows length".into()));
        }
        e.users = st.users;
        if e.users.is_empty() {
            return Err(SnapshotError::Malformed("no system user".into()));
        }
        e.username_index.clear();
        e.email_index.clear();
        for u in e.users.iter().skip(1) {
            e.username_index
                .insert(u.username.to_ascii_lowercase(), u.id);
            if !u.email.is_empty() {
                e.email_index.insert(u.email.to_ascii_lowercase(), u.id);
            }
            for k in &u.api_keys {
                if e.api_key_index.insert(k.api_key.clone(), u.id).is_some() {
                    return Err(SnapshotError::Malformed(format!(
                        "API key {} held twice",
                        k.id
                    )));
                }
            }
        }
        e.deposits = st
            .deposits
            .into_iter()
            .map(|d| ((d.asset, d.tx_hash.clone()), d))
            .collect();
        e.withdrawals = st.withdrawals.into_iter().map(|w| (w.id, w)).collect();
        for k in st.kyc {
            if k.status == KycStatus::Pending && e.kyc_pending.insert(k.user, k.id).is_some() {
                return Err(SnapshotError::Malformed(format!(
                    "user {} has two pending KYC records",
                    k.user
                )));
            }
            if e.kyc.insert(k.id, k).is_some() {
                return Err(SnapshotError::Malformed("duplicate KYC record".into()));
            }
        }
        e.slab = Slab::with_capacity(open.max(1024));
        e.order_index = FxHashMap::default();
        e.order_index.reserve(open.max(1024));
        for (i, p) in st.pairs.into_iter().enumerate() {
            if p.pair.id.0 as usize != i + 1 {
                return Err(SnapshotError::Malformed("pair ids not dense".into()));
            }
            e.pair_by_symbol
                .insert(p.pair.spec.symbol.clone(), p.pair.id);
            let mut ps = PairState::new(p.pair);
            ps.last_price = p.last_price;
            for (orders, side) in [(p.bids, Side::Buy), (p.asks, Side::Sell)] {
                for o in orders {
                    if o.side != side || o.user.0 as usize >= e.users.len() {
                        return Err(SnapshotError::Malformed("order on wrong side".into()));
                    }
                    let idx = e.restore_open(o)?;
                    match side {
                        Side::Buy => ps.bids.push(&mut e.slab, idx),
                        Side::Sell => ps.asks.push(&mut e.slab, idx),
                    }
                }
            }
            for o in p.stops {
                if o.user.0 as usize >= e.users.len() || !o.kind.is_stop() {
                    return Err(SnapshotError::Malformed("bad stop order".into()));
                }
                let key = (o.stop_price.0, o.id.0);
                if fires_upward(o.side, o.kind) {
                    ps.stops_up.insert(key);
                } else {
                    ps.stops_down.insert(key);
                }
                e.restore_open(o)?;
            }
            e.pairs.push(ps);
        }
        e.restore_risk(risk)?;
        e.next_settlement_id = settle.next_settlement_id;
        for t in templates.templates {
            if e.templates.insert(t.name.clone(), t).is_some() {
                return Err(SnapshotError::Malformed(
                    "notification template held twice".into(),
                ));
            }
        }
        for x in settle.settlements {
            if e.settlements.insert(x.date, x).is_some() {
                return Err(SnapshotError::Malformed(format!(
                    "day {} settled twice",
                    x.date
                )));
            }
        }
        e.check_invariants().map_err(SnapshotError::Invariant)?;
        Ok(e)
    }

    fn restore_risk(&mut self, r: RiskSnap) -> Result<(), SnapshotError> {
        let bad = |what: String| Err(SnapshotError::Malformed(what));
        for rule in r.rules {
            let refs_ok = match rule.limit {
                RiskLimit::OrderNotional { pair, .. } | RiskLimit::SelfTrade { pair } => {
                    pair.is_none_or(|p| self.pair(p).is_some())
                }
                RiskLimit::LargeWithdrawal { asset, .. } => self.asset(asset).is_some(),
                _ => true,
            };
            if rule.id == 0 || rule.id >= r.next_rule_id || !refs_ok {
                return bad(format!("risk rule {} out of range", rule.id));
            }
            if self.risk.rules.insert(rule.id, rule).is_some() {
                return bad("duplicate risk rule".into());
            }
        }
        for ev in r.open_events {
            if ev.id == 0 || ev.id >= r.next_event_id || ev.status.is_final() {
                return bad(format!("risk event {} out of range or closed", ev.id));
            }
            if self.risk.open_events.insert(ev.id, ev).is_some() {
                return bad("duplicate risk event".into());
            }
        }
        self.risk.next_rule_id = r.next_rule_id;
        self.risk.next_event_id = r.next_event_id;
        self.risk.reindex();
        Ok(())
    }

    fn restore_open(&mut self, o: Order) -> Result<u32, SnapshotError> {
        if self.order_index.contains_key(&o.id.0) {
            return Err(SnapshotError::Malformed(format!(
                "duplicate order {}",
                o.id
            )));
        }
        let idx = self.slab.alloc(o);
        self.order_index.insert(o.id.0, idx);
        if !o.client_id.is_none() {
            self.client_index.insert((o.user, o.client_id), o.id);
        }
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    fn hash_in_pieces(data: &[u8], cuts: &[usize]) -> u64 {
        let mut h = StableHasher::default();
        let mut at = 0;
        for &c in cuts {
            h.update(&data[at..c]);
            at = c;
        }
        h.update(&data[at..]);
        h.finish()
    }

    /// Regression: a write that fitted into a partly filled word without
    /// completing it reset the buffer, so those bytes never reached the
    /// hash (bincode writes small fields one by one, so states differing
    /// only in such a field, e.g. a KYC level, hashed equal).
    #[test]
    fn stable_hasher_keeps_bytes_of_short_writes() {
        let data: Vec<u8> = (0u8..40).collect();
        let whole = hash_in_pieces(&data, &[]);
        for cuts in [
            vec![1, 2, 3],
            vec![3, 4],
            vec![5, 6, 7, 9, 17],
            (1..40).collect::<Vec<_>>(),
        ] {
            assert_eq!(hash_in_pieces(&data, &cuts), whole, "cuts {cuts:?}");
        }
        let mut other = data.clone();
        other[4] ^= 1;
        assert_ne!(hash_in_pieces(&other, &[3, 4, 5]), whole);
    }

    fn engine_with_user() -> Engine {
        let mut e = Engine::new();
        let mut out = Vec::new();
        e.apply(
            1,
            10,
            &Command::CreateUser {
                username: "alice".into(),
                email: "a@example.com".into(),
                password_hash: "$argon2id$x".into(),
                roles: 16,
            },
            &mut out,
        );
        e
    }

    /// A version 2 snapshot (written before KYC records existed) loads into
    /// the same state, with no records and the counter at 1.
    #[test]
    fn version_2_snapshots_still_load() {
        let e = engine_with_user();
        let st = e.to_state();
        let old = StateV2 {
            last_seq: st.last_seq,
            last_ts_ms: st.last_ts_ms,
            next_order_id: st.next_order_id,
            next_trade_id: st.next_trade_id,
            next_user_id: st.next_user_id,
            next_deposit_id: st.next_deposit_id,
            next_withdrawal_id: st.next_withdrawal_id,
            next_api_key_id: st.next_api_key_id,
            fee_account: st.fee_account,
            limits: st.limits,
            assets: st.assets,
            flows: st.flows,
            pairs: st.pairs,
            users: st.users,
            deposits: st.deposits,
            withdrawals: st.withdrawals,
        };
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bincode::serialize_into(&mut bytes, &old).unwrap();
        let loaded = Engine::from_snapshot(&bytes).unwrap();
        assert_eq!(loaded.state_hash(), e.state_hash());
        assert_eq!(loaded.kyc_records().count(), 0);
        assert_eq!(loaded.next_kyc_id, 1);
        assert_eq!(loaded.next_settlement_id(), 1);
        assert_eq!(loaded.settlements().count(), 0);
    }

    /// KYC records, their counter and the pending index survive a snapshot;
    /// a snapshot with two pending records of one user is refused.
    #[test]
    fn kyc_records_round_trip_and_two_pending_are_refused() {
        let mut e = engine_with_user();
        let mut out = Vec::new();
        let submit = |level| Command::SubmitKyc {
            user: UserId(1),
            level,
            document_type: KycDocumentType::Passport,
            document_number: vec![1; 40],
            data: "{}".into(),
        };
        e.apply(2, 20, &submit(1), &mut out);
        assert!(matches!(out.last(), Some(crate::Event::KycSubmitted(_))));
        let bytes = e.snapshot_bytes();
        let loaded = Engine::from_snapshot(&bytes).unwrap();
        assert_eq!(loaded.state_hash(), e.state_hash());
        assert_eq!(loaded.pending_kyc(UserId(1)).map(|k| k.id), Some(1));
        assert_eq!(loaded.next_kyc_id, 2);
        // The hash covers the records.
        let mut other = engine_with_user();
        other.apply(2, 20, &submit(2), &mut out);
        assert_ne!(other.state_hash(), e.state_hash());
        // Two pending records of one user cannot be loaded.
        let mut st = e.to_state();
        let mut second = st.kyc[0].clone();
        second.id = 2;
        st.kyc.push(second);
        let mut bad = SNAPSHOT_MAGIC.to_vec();
        bad.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        bincode::serialize_into(&mut bad, &st).unwrap();
        assert!(matches!(
            Engine::from_snapshot(&bad),
            Err(SnapshotError::Malformed(_))
        ));
    }

    /// A version 5 snapshot (written before template edits existed) loads
    /// into the same state with no edits; a version 6 one keeps them.
    #[test]
    fn version_5_snapshots_still_load_and_templates_round_trip() {
        let mut e = engine_with_user();
        let mut v5 = SNAPSHOT_MAGIC.to_vec();
        v5.extend_from_slice(&5u32.to_le_bytes());
        bincode::serialize_into(&mut v5, &e.to_state()).unwrap();
        bincode::serialize_into(&mut v5, &e.to_risk_snap()).unwrap();
        bincode::serialize_into(&mut v5, &e.to_settle_snap()).unwrap();
        let loaded = Engine::from_snapshot(&v5).unwrap();
        assert_eq!(loaded.state_hash(), e.state_hash());
        assert_eq!(loaded.notification_templates().count(), 0);
        let mut out = Vec::new();
        e.apply(
            2,
            20,
            &Command::SetNotificationTemplate {
                by: UserId(1),
                name: "deposit_credited".into(),
                subject: "Funds".into(),
                content: "{amount}".into(),
                active: true,
            },
            &mut out,
        );
        assert!(matches!(
            out[..],
            [crate::Event::NotificationTemplateSet(_)]
        ));
        let loaded = Engine::from_snapshot(&e.snapshot_bytes()).unwrap();
        assert_eq!(loaded.state_hash(), e.state_hash());
        assert_eq!(
            loaded.notification_template("deposit_credited"),
            e.notification_template("deposit_credited")
        );
    }
}
