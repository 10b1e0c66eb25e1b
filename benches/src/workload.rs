//! W1 and W2 of BENCHMARKS.md, generated deterministically from a seed, and
//! W3's op stream translated into engine commands.
//!
//! Generation runs the stream through a simulator engine so that every
//! generated command refers to orders that really are open (cancel, move,
//! reduce) and book sizes stay near target; the measured engine then starts
//! from a clone of the simulator's state after setup and replays the
//! recorded commands, so generation cost never enters a measurement.

use std::collections::HashMap;

use engine::*;

use crate::w3::{self, Rng, W3Op};

pub const ONE: u64 = 100_000_000;

/// A prepared workload: engine state after setup, and the commands to time.
#[derive(Debug)]
pub struct Workload {
    pub name: &'static str,
    pub base: Engine,
    /// Sequence number of the first measured command.
    pub first_seq: u64,
    pub first_ts: u64,
    pub commands: Vec<Command>,
    /// Open orders when measurement starts.
    pub resting_at_start: usize,
    /// Commands the simulator saw rejected during generation, by reason.
    pub sim_rejects: u64,
    pub sim_reject_reasons: std::collections::BTreeMap<&'static str, u64>,
}

pub fn asset(symbol: &str, decimals: u8) -> AssetSpec {
    AssetSpec {
        symbol: symbol.into(),
        name: symbol.into(),
        decimals,
        min_withdraw_units: 0,
        withdraw_fee_units: 0,
        daily_withdraw_limit_units: 0,
        confirmations: 1,
        active: true,
    }
}

/// tick 0.01 quote, step 0.001 base, fees 0.1% / 0.1%.
pub fn pair_spec(symbol: &str, base: AssetId, quote: AssetId) -> PairSpec {
    PairSpec {
        symbol: symbol.into(),
        base,
        quote,
        tick_units: 1_000_000,
        step_units: 100_000,
        min_qty_units: 100_000,
        max_qty_units: 1_000_000 * ONE,
        market_max_qty_units: 1_000_000 * ONE,
        min_notional_units: 0,
        max_notional_units: 0,
        min_price_ticks: 1,
        max_price_ticks: 1_000_000_000,
        maker_fee_e8: 100_000,
        taker_fee_e8: 100_000,
        price_band_pct: 50,
        status: PairStatus::Trading,
    }
}

/// Simulator: an engine plus the bookkeeping the generators need.
struct Sim {
    e: Engine,
    seq: u64,
    ts: u64,
    out: Vec<Event>,
    /// Per pair: ids that rested (lazily pruned when found closed).
    open: Vec<Vec<u64>>,
    /// Resting order id -> (pair index, side index).
    resting: HashMap<u64, (usize, usize)>,
    /// Per pair: resting order count per side [bid, ask].
    counts: Vec<[u32; 2]>,
    rejects: u64,
    reject_reasons: std::collections::BTreeMap<&'static str, u64>,
    fresh: Vec<(u64, usize, usize)>,
}

fn side_ix(s: Side) -> usize {
    match s {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

impl Sim {
    fn new(orders: usize) -> Sim {
        Sim {
            e: Engine::with_capacity(orders),
            seq: 0,
            ts: 1_700_000_000_000,
            out: Vec::with_capacity(1024),
            open: Vec::new(),
            resting: HashMap::new(),
            counts: Vec::new(),
            rejects: 0,
            reject_reasons: Default::default(),
            fresh: Vec::new(),
        }
    }

    fn apply(&mut self, cmd: &Command) {
        self.seq += 1;
        self.ts += 1;
        self.out.clear();
        self.e.apply(self.seq, self.ts, cmd, &mut self.out);
        self.fresh.clear();
        for ev in &self.out {
            match ev {
                Event::OrderAccepted(o) if o.kind == OrderType::Limit => {
                    self.fresh
                        .push((o.id.0, o.pair.0 as usize - 1, side_ix(o.side)));
                }
                Event::OrderDone { order, .. } => {
                    if let Some((p, s)) = self.resting.remove(&order.0) {
                        self.counts[p][s] -= 1;
                    }
                }
                Event::Rejected { reason } => {
                    self.rejects += 1;
                    if std::env::var_os("MX_BENCH_DEBUG").is_some() && self.rejects < 3 {
                        eprintln!("rejected {reason:?}: {cmd:?}");
                    }
                    *self.reject_reasons.entry(reason.name()).or_default() += 1;
                }
                Event::PairListed(_) => {
                    self.open.push(Vec::new());
                    self.counts.push([0, 0]);
                }
                _ => {}
            }
        }
        for &(id, p, s) in &self.fresh {
            if self.e.order(OrderId(id)).is_some() {
                self.resting.insert(id, (p, s));
                self.counts[p][s] += 1;
                self.open[p].push(id);
            }
        }
    }

    /// A random open order of pair `p`.
    fn pick_open(&mut self, rng: &mut Rng, p: usize) -> Option<Order> {
        loop {
            let v = &mut self.open[p];
            if v.is_empty() {
                return None;
            }
            let i = rng.below(v.len() as u64) as usize;
            match self.e.order(OrderId(v[i])) {
                Some(o) => return Some(*o),
                None => {
                    v.swap_remove(i);
                }
            }
        }
    }

    fn into_workload(
        self,
        name: &'static str,
        base: Engine,
        seq: u64,
        ts: u64,
        cmds: Vec<Command>,
    ) -> Workload {
        let resting_at_start = base.open_order_count();
        Workload {
            name,
            base,
            first_seq: seq + 1,
            first_ts: ts + 1,
            commands: cmds,
            resting_at_start,
            sim_rejects: self.rejects,
            sim_reject_reasons: self.reject_reasons,
        }
    }
}

/// Sizes `1 + a*b*c` lots, a, b, c uniform in [0, 5].
fn size_lots(rng: &mut Rng) -> u64 {
    1 + rng.below(6) * rng.below(6) * rng.below(6)
}

fn gtc(user: UserId, pair: PairId, side: Side, price: u64, qty: u64) -> NewOrder {
    NewOrder {
        user,
        pair,
        side,
        kind: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price: Price(price),
        qty: Qty(qty),
        quote_qty: 0,
        stop_price: Price(0),
        client_id: ClientOrderId::NONE,
        stp: StpMode::ExpireMaker,
    }
}

const STEP: u64 = 100_000;
const CENTER: u64 = 3_000_000; // 30000.00
/// Resting orders are placed 1..=SPREAD ticks behind the last price.
const SPREAD: u64 = 200;

/// One W1-mix command for pair `p` (index) with per-side target `target`.
fn mix_command(sim: &mut Sim, rng: &mut Rng, p: usize, target: u32, user: UserId) -> Command {
    let pair = PairId(p as u32 + 1);
    let last = match sim.e.pairs()[p].last_price {
        0 => CENTER,
        x => x,
    };
    let side = if rng.below(2) == 0 {
        Side::Buy
    } else {
        Side::Sell
    };
    let at_target = sim.counts[p][side_ix(side)] >= target;
    let r = rng.below(1000);
    // (gtc, move, instant, cancel) thresholds in per mille; rest = reduce.
    let (t_gtc, t_move, t_inst, t_cancel) = if at_target {
        (0, 900, 950, 975)
    } else {
        (200, 800, 800, 900)
    };
    let new_gtc = |rng: &mut Rng| {
        let off = 1 + rng.below(SPREAD);
        let price = match side {
            Side::Buy => last.saturating_sub(off).max(1),
            Side::Sell => last + off,
        };
        Command::PlaceOrder(gtc(user, pair, side, price, size_lots(rng) * STEP))
    };
    if r < t_gtc {
        return new_gtc(rng);
    }
    if r < t_move {
        let Some(o) = sim.pick_open(rng, p) else {
            return new_gtc(rng);
        };
        // Re-price 1% of the way toward the last trade (at least a tick).
        let old = o.price.0;
        let step = ((last as i64 - old as i64) / 100).clamp(-50, 50);
        let step = if step != 0 {
            step
        } else if last >= old {
            1
        } else {
            -1
        };
        let price = (old as i64 + step).max(1) as u64;
        let mut n = gtc(o.user, pair, o.side, price, o.remaining());
        n.stp = o.stp;
        return Command::CancelReplace {
            target: OrderRef::Id(o.id),
            mode: CancelReplaceMode::StopOnFailure,
            new: n,
        };
    }
    if r < t_inst {
        let mut o = gtc(
            user,
            pair,
            side,
            match side {
                Side::Buy => last + last / 1000,
                Side::Sell => last - last / 1000,
            },
            size_lots(rng) * STEP,
        );
        o.tif = if rng.below(10) == 0 {
            TimeInForce::Fok
        } else {
            TimeInForce::Ioc
        };
        return Command::PlaceOrder(o);
    }
    let Some(o) = sim.pick_open(rng, p) else {
        return new_gtc(rng);
    };
    if r < t_cancel || o.remaining() <= STEP {
        return Command::CancelOrder {
            user: o.user,
            pair,
            target: OrderRef::Id(o.id),
        };
    }
    // Reduce: take away about half of what remains, in whole lots.
    let cut = ((o.remaining() / STEP) / 2).max(1) * STEP;
    Command::AmendQty {
        user: o.user,
        pair,
        target: OrderRef::Id(o.id),
        new_qty: Qty(o.qty.0 - cut),
    }
}

fn fund(sim: &mut Sim, user: UserId, asset: AssetId, amount: u64) {
    sim.apply(&Command::Adjust {
        user,
        asset,
        amount,
        credit: true,
        reason: "bench funding".into(),
        by: None,
    });
}

fn create_users(sim: &mut Sim, n: usize) {
    for i in 0..n {
        sim.apply(&Command::CreateUser {
            username: format!("user{i}"),
            email: String::new(),
            password_hash: String::new(),
            roles: roles::TRADER,
        });
    }
}

/// Limits large enough for the benchmarks, BTC and USDT (ids 1, 2) and
/// the BTCUSDT pair (id 1): the first commands of W1 and of the persister
/// stream.
pub fn btcusdt_setup() -> [Command; 4] {
    [
        Command::SetLimits {
            limits: Limits {
                max_open_orders_per_user: 100_000,
                max_open_orders_total: 10_000_000,
                max_api_keys_per_user: 30,
                ..Limits::default()
            },
            by: None,
        },
        Command::AddAsset {
            spec: asset("BTC", 8),
            by: None,
        },
        Command::AddAsset {
            spec: asset("USDT", 8),
            by: None,
        },
        Command::AddPair {
            spec: Box::new(pair_spec("BTCUSDT", AssetId(1), AssetId(2))),
            by: None,
        },
    ]
}

/// W1: one pair, 1,000 users, ~1,000 resting orders (500 a side).
pub fn w1(seed: u64, commands: usize) -> Workload {
    let mut rng = Rng::new(seed);
    let mut sim = Sim::new(4096);
    for c in btcusdt_setup() {
        sim.apply(&c);
    }
    create_users(&mut sim, 1_000);
    for u in 1..=1_000u64 {
        fund(&mut sim, UserId(u), AssetId(1), 100_000 * ONE);
        fund(&mut sim, UserId(u), AssetId(2), 100_000_000 * ONE);
    }
    // Pre-fill 500 a side around the last price.
    for i in 0..1_000u64 {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let off = 1 + rng.below(SPREAD);
        let price = match side {
            Side::Buy => CENTER - off,
            Side::Sell => CENTER + off,
        };
        let user = UserId(1 + rng.below(1_000));
        sim.apply(&Command::PlaceOrder(gtc(
            user,
            PairId(1),
            side,
            price,
            size_lots(&mut rng) * STEP,
        )));
    }
    assert_eq!(sim.rejects, 0, "setup rejected: {:?}", sim.reject_reasons);
    let base = sim.e.clone();
    let (seq, ts) = (sim.seq, sim.ts);
    sim.rejects = 0;
    sim.reject_reasons.clear();
    let mut cmds = Vec::with_capacity(commands);
    for _ in 0..commands {
        let user = UserId(1 + rng.below(1_000));
        let c = mix_command(&mut sim, &mut rng, 0, 500, user);
        sim.apply(&c);
        cmds.push(c);
    }
    sim.into_workload("W1", base, seq, ts, cmds)
}

/// Pareto-skewed index in [0, n): low indices are much busier.
fn pareto(rng: &mut Rng, n: usize) -> usize {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((n as f64) * u * u * u) as usize % n
}

/// W2: 10,000 pairs (100 bases x 100 quotes), 1,000,000 users,
/// 1,000,000 resting orders, Pareto-skewed activity, W1's mix.
pub fn w2(seed: u64, commands: usize, scale: W2Scale) -> Workload {
    let W2Scale {
        pairs_side,
        users,
        resting,
    } = scale;
    let n_pairs = pairs_side * pairs_side;
    let mut rng = Rng::new(seed);
    let mut sim = Sim::new(resting + resting / 4);
    sim.apply(&Command::SetLimits {
        limits: Limits {
            max_open_orders_per_user: 100_000,
            max_open_orders_total: 100_000_000,
            max_api_keys_per_user: 30,
            ..Limits::default()
        },
        by: None,
    });
    for i in 0..pairs_side {
        sim.apply(&Command::AddAsset {
            spec: asset(&format!("B{i}"), 8),
            by: None,
        });
    }
    for j in 0..pairs_side {
        sim.apply(&Command::AddAsset {
            spec: asset(&format!("Q{j}"), 8),
            by: None,
        });
    }
    for i in 0..pairs_side {
        for j in 0..pairs_side {
            let base = AssetId(i as u32 + 1);
            let quote = AssetId((pairs_side + j) as u32 + 1);
            sim.apply(&Command::AddPair {
                spec: Box::new(pair_spec(&format!("B{i}Q{j}"), base, quote)),
                by: None,
            });
        }
    }
    create_users(&mut sim, users);
    // Each user trades two Pareto-chosen pairs and is funded for them.
    let mut users_of: Vec<Vec<u32>> = vec![Vec::new(); n_pairs];
    for u in 1..=users as u64 {
        for _ in 0..2 {
            let p = pareto(&mut rng, n_pairs);
            users_of[p].push(u as u32);
            let spec = &sim.e.pairs()[p].pair.spec;
            let (b, q) = (spec.base, spec.quote);
            fund(&mut sim, UserId(u), b, 1_000 * ONE);
            fund(&mut sim, UserId(u), q, 50_000 * ONE);
        }
    }
    let pick_pair = |rng: &mut Rng| loop {
        let p = pareto(rng, n_pairs);
        if !users_of[p].is_empty() {
            return p;
        }
    };
    let pick_user = |rng: &mut Rng, p: usize| {
        let v = &users_of[p];
        UserId(v[rng.below(v.len() as u64) as usize] as u64)
    };
    const W2_CENTER: u64 = 10_000; // 100.00
    for i in 0..resting {
        let p = pick_pair(&mut rng);
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let off = 1 + rng.below(SPREAD);
        let price = match side {
            Side::Buy => W2_CENTER - off,
            Side::Sell => W2_CENTER + off,
        };
        let user = pick_user(&mut rng, p);
        sim.apply(&Command::PlaceOrder(gtc(
            user,
            PairId(p as u32 + 1),
            side,
            price,
            size_lots(&mut rng) * STEP,
        )));
    }
    let targets: Vec<u32> = sim.counts.iter().map(|c| (c[0] + c[1]) / 2).collect();
    assert_eq!(sim.rejects, 0, "setup rejected: {:?}", sim.reject_reasons);
    let base = sim.e.clone();
    let (seq, ts) = (sim.seq, sim.ts);
    sim.rejects = 0;
    sim.reject_reasons.clear();
    let mut cmds = Vec::with_capacity(commands);
    for _ in 0..commands {
        let p = pick_pair(&mut rng);
        let user = pick_user(&mut rng, p);
        let c = mix_command_centered(&mut sim, &mut rng, p, targets[p].max(1), user, W2_CENTER);
        sim.apply(&c);
        cmds.push(c);
    }
    sim.into_workload("W2", base, seq, ts, cmds)
}

fn mix_command_centered(
    sim: &mut Sim,
    rng: &mut Rng,
    p: usize,
    target: u32,
    user: UserId,
    center: u64,
) -> Command {
    // Pairs that never traded start from their own center, not W1's.
    if sim.e.pairs()[p].last_price == 0 {
        let c = mix_command(sim, rng, p, target, user);
        return recenter(c, center);
    }
    mix_command(sim, rng, p, target, user)
}

/// Shift a command generated around `CENTER` to be around `center`.
fn recenter(c: Command, center: u64) -> Command {
    let shift = |p: Price| {
        if p.0 == 0 {
            p
        } else {
            Price((p.0 as i64 - CENTER as i64 + center as i64).max(1) as u64)
        }
    };
    match c {
        Command::PlaceOrder(mut o) => {
            o.price = shift(o.price);
            Command::PlaceOrder(o)
        }
        other => other,
    }
}

/// Size of W2 (the defaults are BENCHMARKS.md's; smaller for quick runs).
#[derive(Clone, Copy, Debug)]
pub struct W2Scale {
    /// Bases = quotes = `pairs_side`; pairs = pairs_side^2.
    pub pairs_side: usize,
    pub users: usize,
    pub resting: usize,
}

impl Default for W2Scale {
    fn default() -> Self {
        W2Scale {
            pairs_side: 100,
            users: 1_000_000,
            resting: 1_000_000,
        }
    }
}

/// W3: the peer stream as engine commands (100 users round-robin, no
/// self-trade prevention since the peers have none, integer units so one
/// tick and one lot are 1). Every order is accepted, so engine order ids
/// equal the stream's ids.
pub fn w3_commands(ops: &[W3Op]) -> Workload {
    let mut sim = Sim::new(1 << 16);
    sim.apply(&Command::SetLimits {
        limits: Limits {
            max_open_orders_per_user: 1_000_000,
            max_open_orders_total: 10_000_000,
            max_api_keys_per_user: 30,
            ..Limits::default()
        },
        by: None,
    });
    sim.apply(&Command::AddAsset {
        spec: asset("W3B", 0),
        by: None,
    });
    sim.apply(&Command::AddAsset {
        spec: asset("W3Q", 0),
        by: None,
    });
    let mut spec = pair_spec("W3", AssetId(1), AssetId(2));
    spec.tick_units = 1;
    spec.step_units = 1;
    spec.min_qty_units = 1;
    spec.price_band_pct = 0;
    sim.apply(&Command::AddPair {
        spec: Box::new(spec),
        by: None,
    });
    const USERS: u64 = 100;
    create_users(&mut sim, USERS as usize);
    for u in 1..=USERS {
        fund(&mut sim, UserId(u), AssetId(1), 1 << 50);
        fund(&mut sim, UserId(u), AssetId(2), 1 << 56);
    }
    assert_eq!(sim.rejects, 0, "setup rejected: {:?}", sim.reject_reasons);
    let base = sim.e.clone();
    let (seq, ts) = (sim.seq, sim.ts);
    let to_side = |s: w3::Side| match s {
        w3::Side::Buy => Side::Buy,
        w3::Side::Sell => Side::Sell,
    };
    let mut owner: HashMap<u64, UserId> = HashMap::with_capacity(ops.len());
    let cmds = ops
        .iter()
        .map(|op| match *op {
            W3Op::Limit {
                id,
                side,
                price,
                qty,
            } => {
                let user = UserId(1 + id % USERS);
                owner.insert(id, user);
                let mut o = gtc(user, PairId(1), to_side(side), price, qty);
                o.stp = StpMode::None;
                Command::PlaceOrder(o)
            }
            W3Op::Market { id, side, qty } => {
                let user = UserId(1 + id % USERS);
                let mut o = gtc(user, PairId(1), to_side(side), 0, qty);
                o.kind = OrderType::Market;
                o.price = Price(0);
                o.stp = StpMode::None;
                Command::PlaceOrder(o)
            }
            W3Op::Cancel { id } => Command::CancelOrder {
                user: owner.get(&id).copied().unwrap_or(UserId(1)),
                pair: PairId(1),
                target: OrderRef::Id(OrderId(id)),
            },
        })
        .collect();
    Workload {
        name: "W3",
        base,
        first_seq: seq + 1,
        first_ts: ts + 1,
        commands: cmds,
        resting_at_start: 0,
        sim_rejects: 0,
        sim_reject_reasons: Default::default(),
    }
}
