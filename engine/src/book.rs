//! Order book storage: a slab of order nodes shared by all books, and per
//! side a vector of price levels sorted so the best level is LAST (taking
//! from the top of the book is a `pop`, and inserting near the top moves
//! little). Each level is an intrusive FIFO list of slab nodes, which gives
//! strict price-time priority and O(1) cancel once the level is found.
//!
//! Invariants (checked by `Engine::assert_invariants`): levels strictly
//! ordered, never empty, `total` = sum of the remaining quantity of the
//! level's orders, every linked node is live and on this side at this price.
//! Steady state allocates nothing: levels and nodes are reused.

use crate::model::Order;
use crate::types::Side;

pub const NIL: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub struct Node {
    pub order: Order,
    pub prev: u32,
    pub next: u32,
    live: bool,
}

/// Arena of order nodes with an intrusive free list.
#[derive(Clone, Debug, Default)]
pub struct Slab {
    nodes: Vec<Node>,
    free_head: u32,
    live: usize,
}

impl Slab {
    pub fn with_capacity(n: usize) -> Slab {
        Slab {
            nodes: Vec::with_capacity(n),
            free_head: NIL,
            live: 0,
        }
    }

    pub fn alloc(&mut self, order: Order) -> u32 {
        self.live += 1;
        if self.free_head != NIL {
            let idx = self.free_head;
            let node = &mut self.nodes[idx as usize];
            self.free_head = node.next;
            *node = Node {
                order,
                prev: NIL,
                next: NIL,
                live: true,
            };
            idx
        } else {
            let idx = self.nodes.len() as u32;
            assert!(idx != NIL, "order slab full");
            self.nodes.push(Node {
                order,
                prev: NIL,
                next: NIL,
                live: true,
            });
            idx
        }
    }

    pub fn free(&mut self, idx: u32) {
        let node = &mut self.nodes[idx as usize];
        assert!(node.live, "double free of order node");
        node.live = false;
        node.prev = NIL;
        node.next = self.free_head;
        self.free_head = idx;
        self.live -= 1;
    }

    #[inline]
    pub fn node(&self, idx: u32) -> &Node {
        &self.nodes[idx as usize]
    }
    #[inline]
    pub fn node_mut(&mut self, idx: u32) -> &mut Node {
        &mut self.nodes[idx as usize]
    }
    #[inline]
    pub fn order(&self, idx: u32) -> &Order {
        &self.nodes[idx as usize].order
    }
    #[inline]
    pub fn order_mut(&mut self, idx: u32) -> &mut Order {
        &mut self.nodes[idx as usize].order
    }
    pub fn is_live(&self, idx: u32) -> bool {
        self.nodes.get(idx as usize).is_some_and(|n| n.live)
    }
    pub fn live(&self) -> usize {
        self.live
    }
    pub fn capacity_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    pub price: u64,
    /// Sum of remaining quantity of the level's orders.
    pub total: u64,
    pub count: u32,
    pub head: u32,
    pub tail: u32,
}

#[derive(Clone, Debug)]
pub struct BookSide {
    pub side: Side,
    /// Sorted worst..best (bids ascending, asks descending).
    pub levels: Vec<Level>,
}

impl BookSide {
    pub fn new(side: Side) -> BookSide {
        BookSide {
            side,
            levels: Vec::with_capacity(64),
        }
    }

    /// `Ordering` of a level's price relative to `price` in storage order.
    #[inline]
    fn cmp_storage(&self, level_price: u64, price: u64) -> std::cmp::Ordering {
        match self.side {
            Side::Buy => level_price.cmp(&price),
            Side::Sell => price.cmp(&level_price),
        }
    }

    #[inline]
    pub fn find(&self, price: u64) -> Result<usize, usize> {
        // Fast path: most activity is at or near the top of the book.
        let n = self.levels.len();
        if n > 0 {
            let top = self.levels[n - 1].price;
            if top == price {
                return Ok(n - 1);
            }
            if self.cmp_storage(top, price) == std::cmp::Ordering::Less {
                return Err(n);
            }
        }
        self.levels
            .binary_search_by(|l| self.cmp_storage(l.price, price))
    }

    #[inline]
    pub fn best(&self) -> Option<&Level> {
        self.levels.last()
    }

    /// Best price in ticks, if any.
    #[inline]
    pub fn best_price(&self) -> Option<u64> {
        self.levels.last().map(|l| l.price)
    }

    /// Append the (live, unlinked) node `idx` at the tail of its price level.
    pub fn push(&mut self, slab: &mut Slab, idx: u32) {
        let (price, rem) = {
            let o = slab.order(idx);
            (o.price.0, o.remaining())
        };
        match self.find(price) {
            Ok(pos) => {
                let tail = self.levels[pos].tail;
                slab.node_mut(tail).next = idx;
                let n = slab.node_mut(idx);
                n.prev = tail;
                n.next = NIL;
                let l = &mut self.levels[pos];
                l.tail = idx;
                l.total += rem;
                l.count += 1;
            }
            Err(pos) => {
                let n = slab.node_mut(idx);
                n.prev = NIL;
                n.next = NIL;
                self.levels.insert(
                    pos,
                    Level {
                        price,
                        total: rem,
                        count: 1,
                        head: idx,
                        tail: idx,
                    },
                );
            }
        }
    }

    /// Unlink node `idx` (resting on this side) from its level, removing the
    /// level when it empties. `rem` is the remaining qty it contributed.
    pub fn unlink(&mut self, slab: &mut Slab, idx: u32, rem: u64) {
        let price = slab.order(idx).price.0;
        let pos = self.find(price).expect("resting order's level exists");
        let (prev, next) = {
            let n = slab.node(idx);
            (n.prev, n.next)
        };
        if prev != NIL {
            slab.node_mut(prev).next = next;
        }
        if next != NIL {
            slab.node_mut(next).prev = prev;
        }
        let l = &mut self.levels[pos];
        if l.head == idx {
            l.head = next;
        }
        if l.tail == idx {
            l.tail = prev;
        }
        l.total -= rem;
        l.count -= 1;
        if l.count == 0 {
            debug_assert_eq!(l.total, 0);
            self.levels.remove(pos);
        }
    }

    /// Reduce the level total at `price` by `qty` (a fill or amend).
    #[inline]
    pub fn reduce(&mut self, price: u64, qty: u64) {
        let pos = self.find(price).expect("level exists");
        self.levels[pos].total -= qty;
    }

    /// Levels best first.
    pub fn iter_best_first(&self) -> impl Iterator<Item = &Level> {
        self.levels.iter().rev()
    }

    /// Node indices of one level in FIFO order.
    pub fn level_nodes<'a>(&self, slab: &'a Slab, level: &Level) -> LevelIter<'a> {
        LevelIter {
            slab,
            cur: level.head,
        }
    }

    pub fn order_count(&self) -> usize {
        self.levels.iter().map(|l| l.count as usize).sum()
    }
}

#[derive(Debug)]
pub struct LevelIter<'a> {
    slab: &'a Slab,
    cur: u32,
}

impl Iterator for LevelIter<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.cur == NIL {
            return None;
        }
        let c = self.cur;
        self.cur = self.slab.node(c).next;
        Some(c)
    }
}
