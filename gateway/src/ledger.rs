//! Wallet read model: each user's ledger (one row per balance bucket an
//! engine `BalanceChange` moved, newest kept, bounded per user), and every
//! deposit and withdrawal with its current status. Maintained from engine
//! events on the publisher thread as part of [`crate::accounts::Accounts`]
//! (so it shares that model's lock, its journal replay at startup and its
//! read-your-writes guarantee).
//!
//! Invariants: a row's `before + amount = after` in its bucket (AVAILABLE or
//! FROZEN) and both are the engine's values, never recomputed here; row ids
//! are `journal seq << 16 | index within the command`, so a replay of the
//! journal rebuilds the same ids; deposits and withdrawals are the engine's
//! records as of their last `DepositUpdated` / `WithdrawalUpdated`.

use engine::fxhash::FxHashMap;
use std::collections::BTreeMap;

use engine::{AssetId, BalanceCause, BalanceChange, Deposit, Engine, UserId, Withdrawal};

/// Ledger rows kept per user (older ones fall off; Postgres keeps all).
pub const LEDGER_ROWS_PER_USER: usize = 10_000;

/// Ledger row ids: `seq << LEDGER_ID_SHIFT | index within the command`.
pub const LEDGER_ID_SHIFT: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Available,
    Frozen,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Available => "AVAILABLE",
            Bucket::Frozen => "FROZEN",
        }
    }
}

/// One movement of one balance bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerRow {
    pub id: u64,
    pub asset: AssetId,
    pub cause: BalanceCause,
    pub bucket: Bucket,
    pub before_units: u64,
    pub after_units: u64,
    pub time_ms: u64,
}

impl LedgerRow {
    /// `type` and (`reference_type`, `reference_id`) as in the
    /// `transactions` table (migrations/README.md "Ledger").
    pub fn kind(&self) -> (&'static str, Option<(&'static str, u64)>) {
        match self.cause {
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
}

#[derive(Debug, Default)]
pub struct UserWallet {
    /// Oldest first.
    pub ledger: crate::bounded::History<LedgerRow>,
    /// Older rows fell off (or were never loaded).
    pub ledger_truncated: bool,
    /// Ids of the user's deposits and withdrawals, in creation order.
    pub deposits: Vec<u64>,
    pub withdrawals: Vec<u64>,
}

#[derive(Debug)]
pub struct WalletBook {
    pub users: FxHashMap<UserId, UserWallet>,
    pub deposits: BTreeMap<u64, Deposit>,
    pub withdrawals: BTreeMap<u64, Withdrawal>,
    rows_kept: usize,
    /// (seq, rows of that command so far): the next row id.
    cursor: (u64, u64),
}

impl Default for WalletBook {
    fn default() -> Self {
        WalletBook::with_retention(LEDGER_ROWS_PER_USER)
    }
}

impl WalletBook {
    /// Empty, keeping at most `rows` ledger rows per user (at least 1).
    pub fn with_retention(rows: usize) -> WalletBook {
        WalletBook {
            users: FxHashMap::default(),
            deposits: BTreeMap::new(),
            withdrawals: BTreeMap::new(),
            rows_kept: rows.max(1),
            cursor: (0, 0),
        }
    }

    /// Deposits and withdrawals of a recovered engine; no ledger history
    /// (every user's ledger counts as truncated).
    pub fn from_engine(e: &Engine, rows: usize) -> WalletBook {
        let mut w = WalletBook::with_retention(rows);
        for u in e.users() {
            w.users.entry(u.id).or_default().ledger_truncated = true;
        }
        for d in e.deposits() {
            w.deposit(d);
        }
        for x in e.withdrawals() {
            w.withdrawal(x);
        }
        w
    }

    pub fn user(&self, id: UserId) -> Option<&UserWallet> {
        self.users.get(&id)
    }

    fn deposit(&mut self, d: &Deposit) {
        if self.deposits.insert(d.id, d.clone()).is_none() {
            self.users.entry(d.user).or_default().deposits.push(d.id);
        }
    }

    fn withdrawal(&mut self, w: &Withdrawal) {
        if self.withdrawals.insert(w.id, w.clone()).is_none() {
            self.users.entry(w.user).or_default().withdrawals.push(w.id);
        }
    }

    fn next_id(&mut self, seq: u64) -> u64 {
        if self.cursor.0 != seq {
            self.cursor = (seq, 0);
        }
        let id = (seq << LEDGER_ID_SHIFT) | self.cursor.1;
        self.cursor.1 += 1;
        id
    }

    /// One row per bucket that `b` moved.
    pub fn balance(&mut self, seq: u64, ts: u64, b: &BalanceChange) {
        for (bucket, before, after) in [
            (Bucket::Available, b.available_before, b.available_after),
            (Bucket::Frozen, b.frozen_before, b.frozen_after),
        ] {
            if before == after {
                continue;
            }
            let row = LedgerRow {
                id: self.next_id(seq),
                asset: b.asset,
                cause: b.cause,
                bucket,
                before_units: before,
                after_units: after,
                time_ms: ts,
            };
            let w = self.users.entry(b.user).or_default();
            if w.ledger.push_evicting(row, self.rows_kept) {
                w.ledger_truncated = true;
            }
        }
    }

    pub fn deposit_updated(&mut self, d: &Deposit) {
        self.deposit(d);
    }

    pub fn withdrawal_updated(&mut self, w: &Withdrawal) {
        self.withdrawal(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{roles, AssetSpec, Command, Event};

    fn run(e: &mut Engine, w: &mut WalletBook, cmd: Command) -> Vec<Event> {
        let mut out = Vec::new();
        let seq = e.last_seq() + 1;
        e.apply(seq, 86_400_000 + seq, &cmd, &mut out);
        for ev in &out {
            match ev {
                Event::Balance(b) => w.balance(seq, 86_400_000 + seq, b),
                Event::DepositUpdated(d) => w.deposit_updated(d),
                Event::WithdrawalUpdated(x) => w.withdrawal_updated(x),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn rows_follow_balance_changes_and_are_bounded() {
        let mut e = Engine::new();
        let mut w = WalletBook::with_retention(3);
        run(
            &mut e,
            &mut w,
            Command::AddAsset {
                spec: AssetSpec {
                    symbol: "BTC".into(),
                    name: "Bitcoin".into(),
                    decimals: 8,
                    min_withdraw_units: 10,
                    withdraw_fee_units: 2,
                    daily_withdraw_limit_units: 0,
                    confirmations: 1,
                    active: true,
                },
                by: None,
            },
        );
        run(
            &mut e,
            &mut w,
            Command::CreateUser {
                username: "alice".into(),
                email: String::new(),
                password_hash: "x".into(),
                roles: roles::TRADER,
            },
        );
        let alice = UserId(1);
        run(
            &mut e,
            &mut w,
            Command::SetKycLevel {
                user: alice,
                level: 1,
                by: None,
            },
        );
        run(
            &mut e,
            &mut w,
            Command::Deposit {
                user: alice,
                asset: AssetId(1),
                amount: 1_000,
                tx_hash: "t1".into(),
                confirmations: 1,
                by: None,
            },
        );
        run(
            &mut e,
            &mut w,
            Command::RequestWithdrawal {
                user: alice,
                asset: AssetId(1),
                amount: 100,
                address: "addr".into(),
            },
        );
        let a = w.user(alice).unwrap();
        // Deposit: one AVAILABLE row; freeze: AVAILABLE -102, FROZEN +102.
        assert_eq!(a.ledger.len(), 3);
        assert!(!a.ledger_truncated);
        let rows: Vec<_> = a.ledger.iter().collect();
        assert_eq!((rows[0].before_units, rows[0].after_units), (0, 1_000));
        assert_eq!(
            (rows[1].bucket, rows[1].after_units),
            (Bucket::Available, 898)
        );
        assert_eq!((rows[2].bucket, rows[2].after_units), (Bucket::Frozen, 102));
        assert_eq!(rows[1].id + 1, rows[2].id);
        assert_eq!(rows[1].id >> LEDGER_ID_SHIFT, 5);
        assert_eq!(rows[2].kind(), ("FREEZE", Some(("WITHDRAWAL", 1))));
        assert_eq!(a.deposits, vec![1]);
        assert_eq!(a.withdrawals, vec![1]);
        run(
            &mut e,
            &mut w,
            Command::RejectWithdrawal {
                withdrawal: 1,
                by: None,
            },
        );
        let a = w.user(alice).unwrap();
        assert_eq!(a.ledger.len(), 3);
        assert!(a.ledger_truncated);
        assert_eq!(a.withdrawals, vec![1]);
        assert_eq!(w.withdrawals[&1].status, engine::WithdrawalStatus::Rejected);
        let rebuilt = WalletBook::from_engine(&e, 3);
        assert_eq!(rebuilt.withdrawals, w.withdrawals);
        assert_eq!(rebuilt.deposits, w.deposits);
        assert!(rebuilt.user(alice).unwrap().ledger_truncated);
    }
}
