//! Bounded histories: a user's closed orders, trades, ledger rows and
//! notifications ([`History`]), a pair's recent trades and klines
//! ([`push`] on a `VecDeque`).
//!
//! Left to itself a `VecDeque` reaches its bound by doubling, and each
//! doubling copies the whole history into fresh memory, all inside one push
//! on the publisher thread. Every user of a busy market doubles at about the
//! same moment (32 traders crossed 8,192 ledger rows together in `mx-bench
//! rest`), and the fresh memory comes as 2 MiB transparent huge pages that
//! the kernel zeroes on first touch: every acknowledgement stalled for
//! 40-80 ms. Reserving each history's whole bound early only moved the
//! stall to the start (one huge page per history, all users at once). A
//! [`History`] grows in chunks of a few KiB instead, taken from the
//! allocator's shared pages: no copy of old entries ever, and fresh memory
//! arrives spread over time as all histories together need it.

use std::collections::VecDeque;

/// Entries a `VecDeque` history holds before it reserves its whole bound.
pub const EARLY: usize = 256;

/// Append `v` to a `VecDeque` history kept at `bound` entries (at least 1);
/// returns the oldest entry if it had to go. For the few large histories
/// (one per pair): the whole bound is reserved once the history holds
/// [`EARLY`] entries, so it never doubles (and copies) again.
pub fn push<T>(d: &mut VecDeque<T>, v: T, bound: usize) -> Option<T> {
    let bound = bound.max(1);
    let dropped = if d.len() >= bound {
        d.pop_front()
    } else {
        None
    };
    if d.len() == d.capacity() && d.len() >= EARLY {
        d.reserve_exact(bound.saturating_sub(d.len()).max(1));
    }
    d.push_back(v);
    dropped
}

/// Bytes of one chunk of a [`History`] once it is full size.
const CHUNK_BYTES: usize = 4096;

/// A queue of the newest `bound` entries, stored in chunks of about
/// `CHUNK_BYTES` (the first one starts small, so an idle user's history
/// costs a few entries, not a chunk).
#[derive(Debug, Clone)]
pub struct History<T> {
    chunks: VecDeque<VecDeque<T>>,
    len: usize,
}

impl<T> Default for History<T> {
    fn default() -> Self {
        History {
            chunks: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> History<T> {
    /// Entries per chunk: a power of two (a `VecDeque`'s capacity grows in
    /// powers of two), at least 16.
    const CHUNK: usize = {
        let n = CHUNK_BYTES
            / if std::mem::size_of::<T>() == 0 {
                1
            } else {
                std::mem::size_of::<T>()
            };
        let n = if n < 16 { 16 } else { n };
        // Round down to a power of two.
        1 << (usize::BITS - 1 - n.leading_zeros())
    };

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `v`, keeping the newest `bound` entries (at least 1); returns
    /// the oldest entry if it had to go.
    pub fn push(&mut self, v: T, bound: usize) -> Option<T> {
        let dropped = if self.len >= bound.max(1) {
            self.pop_front()
        } else {
            None
        };
        match self.chunks.back_mut() {
            Some(c) if c.len() < Self::CHUNK => c.push_back(v),
            _ => {
                // The first chunk starts small and doubles up to CHUNK;
                // later ones are allocated at full size.
                let mut c = if self.chunks.is_empty() {
                    VecDeque::new()
                } else {
                    VecDeque::with_capacity(Self::CHUNK)
                };
                c.push_back(v);
                self.chunks.push_back(c);
            }
        }
        self.len += 1;
        dropped
    }

    /// [`History::push`] for a caller that only needs to know whether an
    /// entry went: the oldest entry is dropped where it lies, never read
    /// (for plain-data entries nothing at all is read from it: evicting
    /// the oldest row of a long history is otherwise a cache miss per push).
    pub fn push_evicting(&mut self, v: T, bound: usize) -> bool {
        let evicted = self.len >= bound.max(1);
        if evicted {
            self.drop_front();
        }
        self.push(v, usize::MAX);
        evicted
    }

    fn drop_front(&mut self) {
        let Some(first) = self.chunks.front_mut() else {
            return;
        };
        if first.drain(..1).len() == 1 {
            self.len -= 1;
        }
        if first.is_empty() {
            self.chunks.pop_front();
        }
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let first = self.chunks.front_mut()?;
        let v = first.pop_front();
        if first.is_empty() {
            self.chunks.pop_front();
        }
        if v.is_some() {
            self.len -= 1;
        }
        v
    }

    /// Oldest first (`.rev()` for newest first).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut T> {
        self.chunks.iter_mut().flat_map(|c| c.iter_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_keeps_the_newest_entries_in_order_whatever_the_chunking() {
        // 100-byte entries: 32 per chunk; u8 entries: 4096 per chunk.
        let mut big: History<[u8; 100]> = History::default();
        let mut small: History<u64> = History::default();
        assert_eq!(History::<[u8; 100]>::CHUNK, 32);
        assert_eq!(History::<u64>::CHUNK, 512);
        assert_eq!(History::<[u8; 4000]>::CHUNK, 16);
        let bound = 1_000;
        for i in 0..5_000u64 {
            let dropped = big.push([(i % 251) as u8; 100], bound);
            assert_eq!(
                dropped.map(|d| d[0]),
                i.checked_sub(bound as u64).map(|j| (j % 251) as u8)
            );
            let dropped = small.push(i, bound);
            assert_eq!(dropped, i.checked_sub(bound as u64));
            assert_eq!(small.len(), (i as usize + 1).min(bound));
        }
        assert!(small.iter().copied().eq(4_000..5_000));
        assert!(small.iter().rev().copied().eq((4_000..5_000).rev()));
        assert!(big
            .iter()
            .map(|e| u64::from(e[0]))
            .eq((4_000..5_000u64).map(|i| i % 251)));
        // Chunks: at most bound / CHUNK + 2 are alive.
        assert!(small.chunks.len() <= bound / 512 + 2);
        assert!(big.chunks.len() <= bound / 32 + 2);
        for e in small.iter_mut() {
            *e += 1;
        }
        assert!(small.iter().copied().eq(4_001..5_001));
        while small.pop_front().is_some() {}
        assert!(small.is_empty() && small.chunks.is_empty());
        assert_eq!(small.push(7, 0), None, "a bound of 0 keeps one entry");
        assert_eq!(small.push(8, 0), Some(7));
    }

    #[test]
    fn push_evicting_keeps_what_push_keeps() {
        let (mut a, mut b): (History<u64>, History<u64>) = Default::default();
        let (mut s, mut t): (History<String>, History<String>) = Default::default();
        for i in 0..3_000u64 {
            let bound = if i < 2_000 { 700 } else { 1 + (i % 5) as usize };
            assert_eq!(a.push(i, bound).is_some(), b.push_evicting(i, bound));
            assert_eq!(
                s.push(i.to_string(), bound).is_some(),
                t.push_evicting(i.to_string(), bound)
            );
            assert_eq!(a.len(), b.len());
            assert!(a.iter().eq(b.iter()));
            assert!(s.iter().eq(t.iter()));
        }
        let mut e: History<u64> = History::default();
        assert!(!e.push_evicting(1, 0));
        assert!(e.push_evicting(2, 0));
        assert!(e.iter().copied().eq([2]));
    }

    #[test]
    fn keeps_the_newest_bound_entries_and_grows_once_past_early() {
        let bound = 10 * EARLY + 3;
        let mut d = VecDeque::new();
        let mut capacities = Vec::new();
        for i in 0..3 * bound {
            let dropped = push(&mut d, i, bound);
            assert_eq!(dropped, i.checked_sub(bound));
            if capacities.last() != Some(&d.capacity()) {
                capacities.push(d.capacity());
            }
        }
        assert_eq!(d.len(), bound);
        assert!(d.iter().copied().eq(2 * bound..3 * bound));
        // Doubling up to EARLY, then one reservation of the whole bound.
        let last = *capacities.last().unwrap();
        assert!(last >= bound && last < 2 * bound, "{capacities:?}");
        assert!(
            capacities
                .iter()
                .rev()
                .nth(1)
                .is_some_and(|&c| c <= 2 * EARLY),
            "{capacities:?}"
        );
    }

    #[test]
    fn small_bounds_behave_as_a_plain_queue() {
        let mut d = VecDeque::new();
        assert_eq!(push(&mut d, 1, 0), None); // a bound of 0 keeps one
        assert_eq!(push(&mut d, 2, 0), Some(1));
        assert_eq!(push(&mut d, 3, 2), None);
        assert_eq!(push(&mut d, 4, 2), Some(2));
        assert!(d.iter().copied().eq([3, 4]));
    }
}
