//! The simulator's event queue: a calendar of short time buckets in front of a heap for the far future.
//!
//! Events come out by time and, at equal times, in the order they were scheduled — exactly what one binary heap of
//! `(time, order)` gives, but cheaper: almost every event of a run is due within a few virtual seconds of being
//! scheduled (latencies, transfers, timers), so it lands in one of [`BUCKETS`] buckets of [`BUCKET_S`] seconds by a
//! push onto a vector, and only the bucket now being run is ordered, in a heap small enough to stay in cache. Events
//! beyond the calendar's reach (departures, the scenario's segments and samples) wait in an ordinary heap and move
//! into the calendar as it comes near them. A single heap of every pending event — hundreds of thousands at
//! 10,000 viewers — missed the cache on most levels of every push and pop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Buckets per virtual second: a power of two, so that a bucket's index is the time scaled exactly.
const PER_SECOND: f64 = 1024.0;
/// The width of one bucket, seconds.
pub const BUCKET_S: f64 = 1.0 / PER_SECOND;
/// Buckets in the calendar: it reaches [`BUCKETS`] × [`BUCKET_S`] (4 s) past the bucket being run.
pub const BUCKETS: usize = 4096;

/// A queue entry: the time as its IEEE-754 bits (which order like the times for the non-negative times of a run),
/// the schedule order that breaks ties, and what the caller stored (a slot of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    at_bits: u64,
    order: u64,
    /// The caller's value.
    pub slot: u32,
}

impl Entry {
    /// The entry's time.
    pub fn at(&self) -> f64 {
        f64::from_bits(self.at_bits)
    }
}

/// The bucket of time `at` (non-negative): monotone in `at`, so earlier times never land in later buckets.
fn bucket(at: f64) -> u64 {
    // Exact: scaling by a power of two only changes the exponent; the cast saturates for the far future.
    (at * PER_SECOND) as u64
}

/// Events by (time, order of scheduling); see the [module documentation](self).
#[derive(Debug)]
pub struct EventQueue {
    /// The bucket being run, sorted last first: entries come off its end.
    run: Vec<Entry>,
    /// Entries pushed into the bucket being run after it was sorted (few: most events are due later).
    late: BinaryHeap<Reverse<Entry>>,
    /// The bucket whose entries are in `run` and `late`.
    current: u64,
    /// Buckets `current + 1 .. current + BUCKETS`, each at its index modulo [`BUCKETS`], unordered.
    calendar: Vec<Vec<Entry>>,
    /// Entries in `calendar`.
    in_calendar: usize,
    /// Entries of buckets from `current + BUCKETS` on.
    later: BinaryHeap<Reverse<Entry>>,
    /// Schedule order of the last entry pushed.
    order: u64,
}

impl Default for EventQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl EventQueue {
    /// An empty queue at time zero.
    pub fn new() -> Self {
        Self {
            run: Vec::new(),
            late: BinaryHeap::new(),
            current: 0,
            calendar: (0..BUCKETS).map(|_| Vec::new()).collect(),
            in_calendar: 0,
            later: BinaryHeap::new(),
            order: 0,
        }
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.run.len() + self.late.len() + self.in_calendar + self.later.len()
    }

    /// Whether no entry waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `slot` at time `at` (non-negative), after every entry already at that time.
    pub fn push(&mut self, at: f64, slot: u32) {
        debug_assert!(at >= 0.0);
        self.order += 1;
        let entry = Entry {
            at_bits: at.to_bits(),
            order: self.order,
            slot,
        };
        self.place(entry);
    }

    fn place(&mut self, entry: Entry) {
        let b = bucket(entry.at());
        if b <= self.current {
            // Due in the bucket being run (or, after a peek moved on, before it: still after everything run).
            self.late.push(Reverse(entry));
        } else if b - self.current < BUCKETS as u64 {
            self.calendar[(b % BUCKETS as u64) as usize].push(entry);
            self.in_calendar += 1;
        } else {
            self.later.push(Reverse(entry));
        }
    }

    /// The first entry, without taking it out.
    pub fn peek(&mut self) -> Option<&Entry> {
        self.fill();
        match (self.run.last(), self.late.peek()) {
            (Some(run), Some(Reverse(late))) => Some(if late < run { late } else { run }),
            (run, late) => run.or(late.map(|Reverse(e)| e)),
        }
    }

    /// Takes the first entry out.
    pub fn pop(&mut self) -> Option<Entry> {
        self.fill();
        match (self.run.last(), self.late.peek()) {
            (Some(run), Some(Reverse(late))) if late < run => self.late.pop().map(|Reverse(e)| e),
            (Some(_), _) => self.run.pop(),
            (None, _) => self.late.pop().map(|Reverse(e)| e),
        }
    }

    /// Moves on through the buckets until the one being run has an entry (or none is left).
    fn fill(&mut self) {
        while self.run.is_empty() && self.late.is_empty() {
            if self.in_calendar == 0 {
                // Nothing near: jump to the bucket of the first far entry.
                let Some(Reverse(first)) = self.later.peek() else {
                    return;
                };
                self.current = bucket(first.at()) - 1;
            }
            self.current += 1;
            let slot = (self.current % BUCKETS as u64) as usize;
            // The run's emptied vector becomes the bucket's, for its next turn.
            std::mem::swap(&mut self.run, &mut self.calendar[slot]);
            self.in_calendar -= self.run.len();
            // The calendar now reaches one bucket further: bring in the far entries it covers.
            while let Some(Reverse(first)) = self.later.peek() {
                if bucket(first.at()) - self.current >= BUCKETS as u64 {
                    break;
                }
                let Reverse(entry) = self.later.pop().expect("peeked");
                if bucket(entry.at()) == self.current {
                    self.run.push(entry);
                } else {
                    self.place(entry);
                }
            }
            self.run.sort_unstable_by(|a, b| b.cmp(a));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BinaryHeap;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn equal_times_come_out_in_schedule_order() {
        let mut q = EventQueue::new();
        for slot in 0..5 {
            q.push(1.5, slot);
        }
        q.push(0.5, 9);
        let out: Vec<u32> = std::iter::from_fn(|| q.pop().map(|e| e.slot)).collect();
        assert_eq!(out, vec![9, 0, 1, 2, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn far_and_near_entries_interleave_by_time() {
        let mut q = EventQueue::new();
        q.push(600.0, 1);
        q.push(4.0, 2);
        q.push(4.0 + BUCKET_S * BUCKETS as f64, 3);
        q.push(0.0, 4);
        let out: Vec<(f64, u32)> = std::iter::from_fn(|| q.pop().map(|e| (e.at(), e.slot))).collect();
        assert_eq!(out, vec![(0.0, 4), (4.0, 2), (4.0 + 4.0, 3), (600.0, 1)]);
    }

    /// Like a simulation: pops, and pushes at or after the popped time (some at the same instant, some after a
    /// peek has moved the queue on), checked against one heap of (time, order).
    #[test]
    fn matches_a_heap_of_time_and_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut q = EventQueue::new();
        let mut reference = BinaryHeap::new();
        let mut order = 0u64;
        let mut push = |q: &mut EventQueue, reference: &mut BinaryHeap<_>, at: f64| {
            order += 1;
            q.push(at, order as u32);
            reference.push(Reverse((at.to_bits(), order)));
        };
        for _ in 0..1000 {
            let at = rng.random::<f64>() * 100.0;
            push(&mut q, &mut reference, at);
        }
        let mut now = 0.0;
        let mut popped = 0;
        while let Some(Reverse((bits, order))) = reference.pop() {
            let e = q.pop().expect("as many entries");
            assert_eq!((e.at_bits, u64::from(e.slot)), (bits, order));
            assert!(e.at() >= now);
            now = e.at();
            popped += 1;
            if popped < 50_000 {
                // Peeking first, as the simulator does before it schedules.
                let _ = q.peek();
                for _ in 0..rng.random_range(0..3) {
                    let delay = match rng.random_range(0..4) {
                        0 => 0.0,
                        1 => rng.random::<f64>() * 0.01,
                        2 => rng.random::<f64>() * 3.0,
                        _ => rng.random::<f64>() * 30.0,
                    };
                    push(&mut q, &mut reference, now + delay);
                }
            }
        }
        assert!(q.pop().is_none());
        assert!(popped > 50_000);
    }
}
