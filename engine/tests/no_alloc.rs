//! The steady-state matching path allocates nothing: after a warm-up that
//! lets every reused buffer reach its working size, a long stream of limit
//! orders (resting and crossing), IOC/FOK, market orders, cancels, amends and
//! cancel-replaces runs with zero heap allocations, counted by a global
//! allocator wrapper (test-only; the only `unsafe` outside `journal`). Nor
//! does writing and reading their journal records. Counting is per thread,
//! so the tests of this file can run in parallel.

mod common;
use common::*;
use engine::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Allocations of this thread while counting (`None`: not counting).
    static ALLOCS: Cell<Option<u64>> = const { Cell::new(None) };
}

fn count() {
    // `try_with`: the slot may be gone while the thread exits.
    let _ = ALLOCS.try_with(|a| {
        if let Some(n) = a.get() {
            a.set(Some(n + 1));
        }
    });
}

/// Heap allocations `f` makes on this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCS.with(|a| a.set(Some(0)));
    let r = f();
    let n = ALLOCS.with(|a| a.replace(None)).unwrap_or(0);
    (r, n)
}

// SAFETY: delegates every call to the system allocator unchanged; it only
// counts allocations of a thread that is counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Deterministic LCG so the stream is the same every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn stream(h: &Harness, rng: &mut Lcg, users: &[UserId], n: usize) -> Vec<Command> {
    let mut cmds = Vec::with_capacity(n);
    let mut next_id = h.e.next_order_id();
    for _ in 0..n {
        let u = users[rng.next(users.len() as u64) as usize];
        let side = if rng.next(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let off = rng.next(40);
        let price = match side {
            Side::Buy => 2_999_980 + off,
            Side::Sell => 3_000_020 - off,
        };
        let qty = (1 + rng.next(20)) * 100_000;
        // Targets may be stale (already filled): those are rejected, which
        // must not allocate either.
        let target = OrderRef::Id(OrderId(next_id.saturating_sub(1 + rng.next(50))));
        let c = match rng.next(10) {
            0..=4 => {
                next_id += 1;
                Command::PlaceOrder(limit(u, BTCUSDT, side, price, qty))
            }
            5 => {
                next_id += 1;
                let mut o = limit(u, BTCUSDT, side, price, qty);
                o.tif = if rng.next(2) == 0 {
                    TimeInForce::Ioc
                } else {
                    TimeInForce::Fok
                };
                Command::PlaceOrder(o)
            }
            6 => {
                next_id += 1;
                Command::PlaceOrder(market(u, BTCUSDT, side, qty, 0))
            }
            7 => Command::CancelOrder {
                user: u,
                pair: BTCUSDT,
                target,
            },
            8 => Command::AmendQty {
                user: u,
                pair: BTCUSDT,
                target,
                new_qty: Qty(100_000),
            },
            _ => {
                next_id += 1;
                Command::CancelReplace {
                    target,
                    mode: CancelReplaceMode::AllowFailure,
                    new: limit(u, BTCUSDT, side, price, qty),
                }
            }
        };
        cmds.push(c);
    }
    cmds
}

#[test]
fn steady_state_matching_does_not_allocate() {
    // Capacity is configured for the peak number of open orders, as a
    // deployment configures `max_open_orders_total`.
    let mut h = Harness::with_capacity(100_000);
    let users: Vec<UserId> = (0..8).map(|i| h.user(&format!("trader{i}"))).collect();
    for &u in &users {
        h.fund(u, BTC, 1_000 * ONE);
        h.fund(u, USDT, 100_000_000 * ONE);
    }
    // Enabled risk rules: of other types (never looked at by orders) and an
    // ORDER_NOTIONAL one that never fires (scanned, but nothing to raise).
    for (name, kind, parameters) in [
        (
            "withdrawals",
            RiskRuleType::LargeWithdrawal,
            r#"{"asset":"BTC","threshold":"1"}"#,
        ),
        (
            "logins",
            RiskRuleType::LoginFailure,
            r#"{"max_failures":3}"#,
        ),
        ("custom", RiskRuleType::Custom, r#"{"note":"x"}"#),
        (
            "notional",
            RiskRuleType::OrderNotional,
            r#"{"max_notional":"90000000000000000000"}"#,
        ),
    ] {
        h.ok(Command::CreateRiskRule {
            by: users[0],
            name: name.into(),
            kind,
            parameters: parameters.into(),
            level: RiskLevel::Low,
            action: RiskAction::Alert,
            enabled: true,
            description: String::new(),
        });
    }
    let mut rng = Lcg(7);
    let mut out: Vec<Event> = Vec::with_capacity(4096);
    let mut seq = h.seq;
    // Warm-up: books, levels, balances and indexes reach working size.
    for c in stream(&h, &mut rng, &users, 50_000) {
        seq += 1;
        out.clear();
        h.e.apply(seq, seq, &c, &mut out);
    }
    h.e.assert_invariants();
    let cmds = stream(&h, &mut rng, &users, 50_000);
    let ((trades, rejects), allocs) = allocations(|| {
        let (mut trades, mut rejects) = (0usize, 0usize);
        for c in &cmds {
            seq += 1;
            out.clear();
            h.e.apply(seq, seq, c, &mut out);
            for e in &out {
                match e {
                    Event::Trade(_) => trades += 1,
                    Event::Rejected { .. } => rejects += 1,
                    _ => {}
                }
            }
        }
        (trades, rejects)
    });
    h.e.assert_invariants();
    // The stream must really have exercised matching.
    assert!(trades > 5_000, "only {trades} trades");
    assert!(rejects < cmds.len() / 2, "{rejects} rejects");
    assert_eq!(
        allocs, 0,
        "{allocs} heap allocations in 50,000 steady-state commands"
    );
}

/// Journal records of orders and cancels (what nearly every record is) are
/// written into a reused buffer and read back without a heap allocation,
/// client order ids included: the journaler encodes every command, and
/// replay, the snapshot replica and the persister decode every record.
/// Commands of the general (serde) path keep their ids in place too.
#[test]
fn order_records_encode_and_decode_without_allocating() {
    let cid = ClientOrderId::new("x-HNA2TXFJ1234-abc_def").unwrap();
    let mut with_id = limit(UserId(7), BTCUSDT, Side::Buy, 3_000_000, 100_000);
    with_id.client_id = cid;
    let cmds = [
        Command::PlaceOrder(limit(UserId(7), BTCUSDT, Side::Sell, 3_000_100, 200_000)),
        Command::PlaceOrder(with_id),
        Command::CancelOrder {
            user: UserId(7),
            pair: BTCUSDT,
            target: OrderRef::Id(OrderId(42)),
        },
        Command::CancelOrder {
            user: UserId(7),
            pair: BTCUSDT,
            target: OrderRef::Client(cid),
        },
        // Not a hand-read command: serde's decoder, the id still in place.
        Command::AmendQty {
            user: UserId(7),
            pair: BTCUSDT,
            target: OrderRef::Client(cid),
            new_qty: Qty(50_000),
        },
    ];
    let mut buf = Vec::with_capacity(4096);
    for c in cmds {
        let (decoded, allocs) = allocations(|| {
            buf.clear();
            c.encode_into(&mut buf);
            Command::decode(&buf)
        });
        assert_eq!(decoded.as_ref(), Ok(&c));
        assert_eq!(allocs, 0, "{c:?}");
    }
}
