//! The engine's queues of scheduled events, ordered by a unique `u128` key: a 4-ary min-heap, and
//! a FIFO for events scheduled a constant delay ahead (their keys come in order).
//!
//! Written out rather than taken from a crate so that a push or pop carries the moving entry in
//! registers and writes it once, at its final slot: writing an entry and reading it straight back
//! (as a generic heap's "hole" does) stalls the CPU's store forwarding on every push. Keys are
//! unique, so the pop order is the key order whatever the heap's shape.

use std::collections::VecDeque;

/// An entry the queues can order.
pub(crate) trait Keyed: Copy {
    fn key(&self) -> u128;
}

/// Children per node: half the depth of a binary heap, and the four siblings of a 32-byte entry
/// span two cache lines.
const D: usize = 4;

pub(crate) struct Queue<T> {
    heap: Vec<T>,
}

impl<T: Keyed> Queue<T> {
    pub(crate) fn new() -> Queue<T> {
        Queue { heap: Vec::new() }
    }

    pub(crate) fn peek(&self) -> Option<&T> {
        self.heap.first()
    }

    pub(crate) fn push(&mut self, entry: T) {
        let key = entry.key();
        let mut i = self.heap.len();
        // Grows the vector; the slot is overwritten below, never read.
        self.heap.push(entry);
        while i > 0 {
            let parent = (i - 1) / D;
            let above = self.heap[parent];
            if above.key() < key {
                break;
            }
            self.heap[i] = above;
            i = parent;
        }
        self.heap[i] = entry;
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        let last = self.heap.pop()?;
        let Some(&top) = self.heap.first() else {
            return Some(last);
        };
        let (key, n) = (last.key(), self.heap.len());
        let mut i = 0;
        loop {
            let first = D * i + 1;
            if first >= n {
                break;
            }
            let mut min = first;
            let mut min_key = self.heap[first].key();
            for c in first + 1..(first + D).min(n) {
                let k = self.heap[c].key();
                if k < min_key {
                    (min, min_key) = (c, k);
                }
            }
            if key < min_key {
                break;
            }
            self.heap[i] = self.heap[min];
            i = min;
        }
        self.heap[i] = last;
        Some(top)
    }
}

/// Entries pushed in increasing key order (scheduled a fixed delay after a clock that never goes
/// back): a FIFO keeps them sorted, at no cost per entry.
pub(crate) struct Fifo<T> {
    queue: VecDeque<T>,
}

impl<T: Keyed> Fifo<T> {
    pub(crate) fn new() -> Fifo<T> {
        Fifo {
            queue: VecDeque::new(),
        }
    }

    pub(crate) fn peek(&self) -> Option<&T> {
        self.queue.front()
    }

    pub(crate) fn push(&mut self, entry: T) {
        debug_assert!(self.queue.back().is_none_or(|b| b.key() < entry.key()));
        self.queue.push_back(entry);
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    impl Keyed for u128 {
        fn key(&self) -> u128 {
            *self
        }
    }

    #[test]
    fn pops_in_key_order_under_interleaved_pushes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut q = Queue::new();
        let mut reference = std::collections::BTreeSet::new();
        for seq in 0..20_000u128 {
            // Few distinct times: the sequence number in the low bits breaks the ties.
            let key = (rng.random_range(0..50u128) << 64) | seq;
            q.push(key);
            reference.insert(key);
            if rng.random_bool(0.45) {
                assert_eq!(q.pop(), reference.pop_first());
            }
            assert_eq!(q.peek().copied(), reference.first().copied());
        }
        while let Some(k) = reference.pop_first() {
            assert_eq!(q.pop(), Some(k));
        }
        assert_eq!(q.pop(), None);
    }
}
