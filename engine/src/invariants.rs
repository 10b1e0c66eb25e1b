//! `check_invariants()`: the engine's state checked against its own rules.
//! Run after every command in tests and after loading a snapshot. It walks
//! everything, so it is O(state): never on the hot path.

use crate::fxhash::FxHashMap;

use crate::book::{BookSide, NIL};
use crate::engine::Engine;
use crate::model::*;
use crate::types::*;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        if !$cond {
            return Err(format!($($msg)*));
        }
    };
}

impl Engine {
    /// Panics with a description of the first violated invariant.
    pub fn assert_invariants(&self) {
        if let Err(e) = self.check_invariants() {
            panic!("engine invariant violated at seq {}: {e}", self.last_seq);
        }
    }

    pub fn check_invariants(&self) -> Result<(), String> {
        let slab = self.slab();
        // (user, asset) -> frozen that open orders and withdrawals account for
        // Hash maps: this runs over every order after each snapshot load
        // (millions), and no iteration order reaches an output that matters.
        let mut expected_frozen: FxHashMap<(u64, u32), u64> = FxHashMap::default();
        let mut open_per_user: FxHashMap<u64, u32> = FxHashMap::default();
        expected_frozen.reserve(self.order_index.len());
        open_per_user.reserve(self.users.len().min(self.order_index.len()));
        let mut seen = 0usize;

        let mut check_order = |o: &Order, pair: &Pair, in_book: bool| -> Result<(), String> {
            ensure!(o.pair == pair.id, "order {} in wrong pair", o.id);
            ensure!(
                o.status.is_open(),
                "order {} open with status {:?}",
                o.id,
                o.status
            );
            ensure!(o.filled.0 < o.qty.0, "open order {} has nothing left", o.id);
            if in_book {
                ensure!(
                    o.kind.has_limit_price(),
                    "order {} without limit price in book",
                    o.id
                );
            } else {
                ensure!(
                    o.kind.is_stop() && !o.triggered,
                    "order {} not a waiting stop",
                    o.id
                );
            }
            let rem = o.remaining();
            let need = match o.side {
                Side::Sell => Some(rem),
                Side::Buy if o.kind.has_limit_price() => pair.notional(rem, o.price.0),
                Side::Buy => None,
            };
            if let Some(need) = need {
                ensure!(
                    o.frozen == need,
                    "order {} frozen {} != required {}",
                    o.id,
                    o.frozen,
                    need
                );
            }
            *expected_frozen
                .entry((o.user.0, pair.spend_asset_for(o.side).0))
                .or_default() += o.frozen;
            *open_per_user.entry(o.user.0).or_default() += 1;
            ensure!(
                self.order_index.contains_key(&o.id.0),
                "order {} not indexed",
                o.id
            );
            if !o.client_id.is_none() {
                ensure!(
                    self.client_index.get(&(o.user, o.client_id)) == Some(&o.id),
                    "client id of order {} not indexed",
                    o.id
                );
            }
            Ok(())
        };

        for ps in &self.pairs {
            for side in [&ps.bids, &ps.asks] {
                check_side(side)?;
                for l in &side.levels {
                    let mut total = 0u64;
                    let mut count = 0u32;
                    let mut prev = NIL;
                    for i in side.level_nodes(slab, l) {
                        ensure!(slab.is_live(i), "dead node {} linked in a level", i);
                        ensure!(slab.node(i).prev == prev, "broken prev link at node {}", i);
                        prev = i;
                        let o = slab.order(i);
                        ensure!(o.side == side.side, "order {} on wrong side", o.id);
                        ensure!(o.price.0 == l.price, "order {} at wrong level", o.id);
                        ensure!(
                            self.order_index.get(&o.id.0) == Some(&i),
                            "index of order {} points elsewhere",
                            o.id
                        );
                        total += o.remaining();
                        count += 1;
                        check_order(o, &ps.pair, true)?;
                        seen += 1;
                    }
                    ensure!(l.tail == prev, "level {} tail wrong", l.price);
                    ensure!(
                        count > 0 && count == l.count,
                        "level {} count wrong",
                        l.price
                    );
                    ensure!(
                        total == l.total,
                        "level {} total {} != {}",
                        l.price,
                        l.total,
                        total
                    );
                }
            }
            if let (Some(b), Some(a)) = (ps.bids.best_price(), ps.asks.best_price()) {
                ensure!(
                    b < a,
                    "book {} crossed: bid {} >= ask {}",
                    ps.pair.spec.symbol,
                    b,
                    a
                );
            }
            for &(sp, id) in ps.stops_up.iter().chain(ps.stops_down.iter()) {
                let o = self
                    .order(OrderId(id))
                    .ok_or_else(|| format!("stop {id} not indexed"))?;
                ensure!(o.stop_price.0 == sp, "stop {} key price wrong", id);
                check_order(o, &ps.pair, false)?;
                seen += 1;
            }
        }
        ensure!(
            seen == self.order_index.len() && seen == slab.live(),
            "open orders: {} reachable, {} indexed, {} in slab",
            seen,
            self.order_index.len(),
            slab.live()
        );
        for (key, id) in &self.client_index {
            let o = self
                .order(*id)
                .ok_or_else(|| format!("client index points to closed order {id}"))?;
            ensure!(
                o.user == key.0 && o.client_id == key.1,
                "client index mismatch for {}",
                id
            );
        }
        for w in self.withdrawals.values() {
            if w.status == WithdrawalStatus::Pending {
                *expected_frozen.entry((w.user.0, w.asset.0)).or_default() += w.amount + w.fee;
            }
        }
        // Frozen funds all belong to something; conservation per asset.
        let mut supply = vec![0u128; self.assets.len() + 1];
        let mut api_keys = 0usize;
        for u in &self.users {
            ensure!(
                open_per_user.get(&u.id.0).copied().unwrap_or(0) == u.open_orders,
                "user {} open order count {} wrong",
                u.id,
                u.open_orders
            );
            for w in u.balances.windows(2) {
                ensure!(w[0].0 < w[1].0, "user {} balances not sorted", u.id);
            }
            // API keys: ids ascending and below the counter, shapes valid,
            // every key indexed to its owner.
            for w in u.api_keys.windows(2) {
                ensure!(w[0].id < w[1].id, "user {} API keys not by id", u.id);
            }
            for k in &u.api_keys {
                ensure!(
                    k.id < self.next_api_key_id,
                    "API key id {} not below the counter",
                    k.id
                );
                ensure!(
                    ApiKey::valid_shape(&k.api_key, &k.label, k.permissions, k.kind, &k.secret),
                    "API key {} malformed",
                    k.id
                );
                ensure!(
                    self.api_key_index.get(&k.api_key) == Some(&u.id),
                    "API key {} not indexed to user {}",
                    k.id,
                    u.id
                );
                api_keys += 1;
            }
            ensure!(
                u.id.0 != 0 || (u.api_keys.is_empty() && u.locked_until_ms == 0),
                "the exchange account has login state"
            );
            for (asset, b) in u.balances.iter() {
                let a = asset.0 as usize;
                ensure!(
                    a >= 1 && a <= self.assets.len(),
                    "balance in unknown asset {}",
                    a
                );
                let exp = expected_frozen.remove(&(u.id.0, a as u32)).unwrap_or(0);
                ensure!(
                    b.frozen == exp,
                    "user {} asset {} frozen {} but orders/withdrawals hold {}",
                    u.id,
                    a,
                    b.frozen,
                    exp
                );
                supply[a] += b.available as u128 + b.frozen as u128;
            }
        }
        ensure!(
            api_keys == self.api_key_index.len(),
            "API key index holds {} keys, users {}",
            self.api_key_index.len(),
            api_keys
        );
        ensure!(
            expected_frozen.values().all(|v| *v == 0),
            "frozen funds held for accounts that have none: {:?}",
            expected_frozen
        );
        for (i, f) in self.flows.iter().enumerate() {
            ensure!(
                supply[i + 1] == f.expected_supply(),
                "conservation broken for asset {}: balances {} != deposits+adjustments-withdrawals {}",
                self.assets[i].spec.symbol,
                supply[i + 1],
                f.expected_supply()
            );
        }
        // KYC: ids below the counter, shapes valid, registered owners, a
        // review exactly when not pending, and the pending index exact.
        let mut pending = 0usize;
        for (id, k) in &self.kyc {
            ensure!(
                *id == k.id && k.id >= 1 && k.id < self.next_kyc_id,
                "KYC record {} id not below the counter",
                k.id
            );
            ensure!(
                k.user.0 != 0 && (k.user.0 as usize) < self.users.len(),
                "KYC record {} of unknown user {}",
                k.id,
                k.user
            );
            ensure!(
                KycRecord::valid_level(k.level)
                    && KycRecord::valid_submission(&k.document_number, &k.data),
                "KYC record {} malformed",
                k.id
            );
            let reviewed = k.status != KycStatus::Pending;
            ensure!(
                reviewed == k.reviewer.is_some()
                    && (reviewed || (k.reviewed_ms == 0 && k.notes.is_empty()))
                    && k.reviewer != Some(k.user),
                "KYC record {} review state inconsistent",
                k.id
            );
            if !reviewed {
                pending += 1;
                ensure!(
                    self.kyc_pending.get(&k.user) == Some(&k.id),
                    "pending KYC record {} not indexed",
                    k.id
                );
            }
        }
        ensure!(
            pending == self.kyc_pending.len(),
            "pending KYC index holds {} records, {} are pending",
            self.kyc_pending.len(),
            pending
        );
        self.check_settlements()?;
        self.check_templates()?;
        Ok(())
    }
}

fn check_side(side: &BookSide) -> Result<(), String> {
    for w in side.levels.windows(2) {
        let ok = match side.side {
            Side::Buy => w[0].price < w[1].price,
            Side::Sell => w[0].price > w[1].price,
        };
        ensure!(
            ok,
            "levels out of order: {} then {}",
            w[0].price,
            w[1].price
        );
    }
    Ok(())
}
