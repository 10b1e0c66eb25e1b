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
    if decimals == 0 {
        return units.to_string();
    }
    let scale = 10u128.pow(decimals as u32);
    format!(
        "{}.{:0width$}",
        units / scale,
        units % scale,
        width = decimals as usize
    )
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

#[derive(Debug, Default)]
pub struct Audit {
    pub id: Vec<i64>,
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

/// Rows of a run of consecutive journal records.
#[derive(Debug, Default)]
pub struct Batch {
    /// First and last seq (0, 0 when empty).
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: usize,
    pub min_ts: u64,
    pub max_ts: u64,
    pub users: BTreeMap<u64, UserTouch>,
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
        Command::AddAsset(s) => ("asset.add", "ASSET", Some(s.symbol.clone())),
        Command::UpdateAsset { asset, .. } => ("asset.update", "ASSET", Some(asset.to_string())),
        Command::AddPair(s) => ("pair.add", "TRADING_PAIR", Some(s.symbol.clone())),
        Command::UpdatePair { pair, .. } => ("pair.update", "TRADING_PAIR", Some(pair.to_string())),
        Command::SetPairStatus { pair, .. } => {
            ("pair.set_status", "TRADING_PAIR", Some(pair.to_string()))
        }
        Command::SetFeeAccount { user } => ("fee_account.set", "FEE", Some(user.to_string())),
        Command::SetLimits(_) => ("limits.set", "SYSTEM", None),
        Command::SetUserStatus { user, .. } => ("user.set_status", "USER", Some(user.to_string())),
        Command::SetUserRoles { user, .. } => ("user.set_roles", "ROLE", Some(user.to_string())),
        Command::SetKycLevel { user, .. } => ("user.set_kyc_level", "KYC", Some(user.to_string())),
        Command::Deposit { user, .. } => ("deposit.post", "DEPOSIT", Some(user.to_string())),
        Command::CompleteWithdrawal { withdrawal, .. } => (
            "withdrawal.complete",
            "WITHDRAWAL",
            Some(withdrawal.to_string()),
        ),
        Command::RejectWithdrawal { withdrawal } => (
            "withdrawal.reject",
            "WITHDRAWAL",
            Some(withdrawal.to_string()),
        ),
        Command::Adjust { user, .. } => ("account.adjust", "ACCOUNT", Some(user.to_string())),
        Command::RunSettlement { date, .. } => (
            "settlement.run",
            "SETTLEMENT",
            Some(engine::settlement::format_date(*date)),
        ),
        _ => return None,
    })
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Rows this batch writes (about; for logs and metrics).
    pub fn row_count(&self) -> usize {
        self.users.len()
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
                        let amount = if after > before {
                            dec((after - before) as u128, d)
                        } else {
                            format!("-{}", dec((before - after) as u128, d))
                        };
                        let l = &mut self.ledger;
                        l.id.push(next_id());
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
                    let data = format!(
                        "{{\"order_id\":{},\"user_id\":{},\"pair_id\":{},\"status\":\"NEW\"}}",
                        o.id.0, o.user.0, o.pair.0
                    );
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
                    let data = format!(
                        "{{\"trade_id\":{},\"pair_id\":{},\"price\":\"{}\",\"qty\":\"{}\",\"buy_order_id\":{},\"sell_order_id\":{},\"maker_side\":\"{}\"}}",
                        tr.id.0,
                        tr.pair.0,
                        price,
                        dec(tr.qty.0 as u128, bd),
                        buy_o.0,
                        sell_o.0,
                        if buyer_is_maker { "BUY" } else { "SELL" }
                    );
                    self.push_outbox(next_id(), "TRADE", tr.id.0, "trade.executed", data, t);
                }
                Event::StopTriggered { order, .. } => touched.push(*order),
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
                    let data = format!(
                        "{{\"order_id\":{},\"user_id\":{},\"pair_id\":{},\"status\":\"{}\"}}",
                        order.0,
                        user.0,
                        pair.0,
                        status.as_str()
                    );
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
                    let data = format!(
                        "{{\"order_id\":{},\"user_id\":{},\"pair_id\":{},\"status\":\"PARTIALLY_FILLED\"}}",
                        id.0, user.0, pair.0
                    );
                    self.push_outbox(next_id(), "ORDER", id.0, "order.partially_filled", data, t);
                }
            }
        }
        if !rejected || matches!(cmd, Command::CancelReplace { .. }) {
            let changed = events.iter().any(|e| !matches!(e, Event::Rejected { .. }));
            if let (true, Some((action, resource_type, resource_id))) = (changed, audit_of(cmd)) {
                let a = &mut self.audit;
                a.id.push(seq as i64);
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
        data: String,
        t: SystemTime,
    ) {
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
