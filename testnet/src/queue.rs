//! The simulator's event queue: events in order of virtual time, and of scheduling among events at the same time.
//!
//! A calendar queue (Brown, "Calendar queues", CACM 1988), not one big heap. Nearly every event of a run is due
//! within a second or so of being scheduled (a message's latency, a block's transfer, a timer), and at 10,000 viewers
//! hundreds of thousands wait at once: a heap of them is far larger than the caches, and every push and pop walks it
//! from the root through lines main memory has to bring. Here time is cut into buckets of [`BUCKET_S`]; an event is
//! appended to its bucket's list (a write to one of a few thousand list ends), and only the bucket whose time has
//! come is a heap — a few hundred events, all in cache. Events beyond the ring's [`HORIZON_S`] (departures minutes
//! away, the segments scheduled at the start) wait in a heap of their own until their bucket comes round.
//!
//! The order is exactly a heap's — by time, then by the order of scheduling — so a run gives the same report with
//! either; the tests check the two against each other.

use std::cmp::Reverse;

use dary_heap::QuaternaryHeap;

/// Width of a bucket, virtual seconds.
pub const BUCKET_S: f64 = 1.0 / 512.0;
/// Buckets in the ring.
const BUCKETS: u64 = 4096;
/// How far ahead the ring reaches, virtual seconds: events due later wait in the overflow heap.
pub const HORIZON_S: f64 = BUCKET_S * BUCKETS as f64;
/// Bits of a key for the event's place in its bucket's list.
const SLOT_BITS: u32 = 24;
/// Bits of a key for the order of scheduling.
const ORDER_BITS: u32 = 64 - SLOT_BITS;
/// Emptied lists kept for buckets to come, so that a run does not allocate a bucket's worth at every step.
const SPARE_LISTS: usize = 64;

/// A bucket: its events in the order they came, and their keys — the time as its IEEE-754 bits (which order like the
/// times themselves for the non-negative times of a run) above the order of scheduling and the event's place in
/// `events`. Only keys move in the heap (16 bytes, four children to a cache line); the events stay where they were
/// written.
struct Bucket<E> {
    keys: Vec<Reverse<u128>>,
    events: Vec<Option<E>>,
}

impl<E> Default for Bucket<E> {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl<E> Bucket<E> {
    fn add(&mut self, unslotted: u128, event: E) {
        let slot = self.events.len() as u128;
        assert!(slot < 1 << SLOT_BITS, "more events in one bucket than a key can name");
        self.events.push(Some(event));
        self.keys.push(Reverse(unslotted | slot));
    }
}

/// An event beyond the ring's reach, with its key (no slot yet).
struct Far<E> {
    key: u128,
    event: E,
}

impl<E> PartialEq for Far<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<E> Eq for Far<E> {}

impl<E> PartialOrd for Far<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Far<E> {
    /// Reversed: the heap is a max-heap, and the earliest must come out first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.key.cmp(&self.key)
    }
}

fn time_of(key: u128) -> f64 {
    f64::from_bits((key >> 64) as u64)
}

/// Events by virtual time; ties in the order they were pushed.
pub struct EventQueue<E> {
    /// The open bucket's keys, a heap (with those pushed since for its time or earlier).
    open: QuaternaryHeap<Reverse<u128>>,
    /// The open bucket's events, by slot.
    open_events: Vec<Option<E>>,
    /// Which bucket is open: its index counted from time zero.
    current: u64,
    /// The buckets after it, by index modulo the ring's size.
    ring: Vec<Bucket<E>>,
    /// Events in the ring.
    in_ring: usize,
    /// Events beyond the ring's reach.
    overflow: QuaternaryHeap<Far<E>>,
    spare: Vec<Bucket<E>>,
    /// Pushes so far: the order of scheduling.
    pushed: u64,
    len: usize,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            open: QuaternaryHeap::new(),
            open_events: Vec::new(),
            current: 0,
            ring: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            in_ring: 0,
            overflow: QuaternaryHeap::new(),
            spare: Vec::new(),
            pushed: 0,
            len: 0,
        }
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn bucket_of(at: f64) -> u64 {
        // Saturating: a time too far to count in buckets still sorts last.
        (at / BUCKET_S) as u64
    }

    /// Adds `event` at virtual time `at` (finite, not negative): it comes out after every event pushed before it for
    /// the same time.
    pub fn push(&mut self, at: f64, event: E) {
        assert!(at >= 0.0 && at.is_finite(), "event time {at} out of range");
        self.pushed += 1;
        assert!(self.pushed < 1 << ORDER_BITS, "more events than a run can order");
        self.len += 1;
        let key = (u128::from(at.to_bits()) << 64) | (u128::from(self.pushed) << SLOT_BITS);
        let bucket = Self::bucket_of(at);
        if bucket <= self.current {
            let slot = self.open_events.len() as u128;
            assert!(slot < 1 << SLOT_BITS, "more events in one bucket than a key can name");
            self.open_events.push(Some(event));
            self.open.push(Reverse(key | slot));
        } else if bucket - self.current < BUCKETS {
            let list = &mut self.ring[(bucket % BUCKETS) as usize];
            if list.events.capacity() == 0
                && let Some(spare) = self.spare.pop()
            {
                *list = spare;
            }
            list.add(key, event);
            self.in_ring += 1;
        } else {
            self.overflow.push(Far { key, event });
        }
    }

    /// Opens buckets until the open one holds the earliest event; `false` when the queue is empty.
    fn fill(&mut self) -> bool {
        while self.open.is_empty() {
            if self.len == 0 {
                return false;
            }
            if self.in_ring == 0 {
                // Nothing near: jump to the bucket before the overflow's first, rather than step through empty ones.
                let next = self
                    .overflow
                    .peek()
                    .map_or(self.current, |e| Self::bucket_of(time_of(e.key)));
                self.current = self.current.max(next.saturating_sub(1));
            }
            self.current += 1;
            let mut bucket = std::mem::take(&mut self.ring[(self.current % BUCKETS) as usize]);
            self.in_ring -= bucket.events.len();
            while self
                .overflow
                .peek()
                .is_some_and(|e| Self::bucket_of(time_of(e.key)) <= self.current)
            {
                let far = self.overflow.pop().expect("peeked");
                bucket.add(far.key, far.event);
            }
            // Its events were written up to the ring's span ago, and are read in the order of their times: ask for
            // them all now, in one sweep the processor can overlap.
            crate::prefetch::prefetch_slice(&bucket.events, usize::MAX);
            // The closed bucket's lists are kept for a bucket to come (a few of them: the ring must not hold more
            // memory than the events in it).
            let keys = std::mem::replace(&mut self.open, QuaternaryHeap::from(bucket.keys)).into_vec();
            let events = std::mem::replace(&mut self.open_events, bucket.events);
            if self.spare.len() < SPARE_LISTS {
                let (mut keys, mut events) = (keys, events);
                keys.clear();
                events.clear();
                self.spare.push(Bucket { keys, events });
            }
        }
        true
    }

    /// The time of the earliest event.
    pub fn peek_time(&mut self) -> Option<f64> {
        if !self.fill() {
            return None;
        }
        self.open.peek().map(|Reverse(key)| time_of(*key))
    }

    /// The earliest event and the one after it when that is in the open bucket too (cheap to find: the least of the
    /// heap top's children), without taking them.
    pub fn peek_two(&mut self) -> (Option<&E>, Option<&E>) {
        if !self.fill() {
            return (None, None);
        }
        let keys = self.open.as_slice();
        let event = |key: Option<&Reverse<u128>>| {
            key.and_then(|Reverse(key)| self.open_events[(*key as usize) & ((1 << SLOT_BITS) - 1)].as_ref())
        };
        let second = keys
            .get(1..keys.len().min(5))
            .and_then(|children| children.iter().max());
        (event(keys.first()), event(second))
    }

    /// Takes the earliest event, with its time.
    pub fn pop(&mut self) -> Option<(f64, E)> {
        if !self.fill() {
            return None;
        }
        let Reverse(key) = self.open.pop()?;
        self.len -= 1;
        let slot = (key as usize) & ((1 << SLOT_BITS) - 1);
        let event = self.open_events[slot].take().expect("each slot is popped once");
        Some((time_of(key), event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::BinaryHeap;

    /// The reference: one heap of (time bits, order).
    #[derive(Default)]
    struct Reference {
        heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
        pushed: u64,
    }

    impl Reference {
        fn push(&mut self, at: f64, event: u32) {
            self.pushed += 1;
            self.heap.push(Reverse((at.to_bits(), self.pushed, event)));
        }

        fn pop(&mut self) -> Option<(f64, u32)> {
            self.heap.pop().map(|Reverse((at, _, e))| (f64::from_bits(at), e))
        }
    }

    #[test]
    fn comes_out_in_the_order_of_one_heap() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (mut queue, mut reference) = (EventQueue::new(), Reference::default());
        let mut now = 0.0;
        let mut popped = 0;
        for i in 0..200_000u32 {
            // Mostly near events, some at this very time (ties), a few far beyond the ring.
            let at = match rng.random_range(0..10) {
                0 => now,
                1 => now + rng.random_range(0.0..600.0),
                2 => now + BUCKET_S * f64::from(rng.random_range(0..4u32)),
                _ => now + rng.random_range(0.0..1.5),
            };
            queue.push(at, i);
            reference.push(at, i);
            for _ in 0..rng.random_range(0..3) {
                let (got, want) = (queue.pop(), reference.pop());
                assert_eq!(got, want, "pop {popped}");
                if let Some((t, _)) = got {
                    assert!(t >= now, "time went back");
                    now = t;
                }
                popped += 1;
            }
            assert_eq!(
                queue.peek_time(),
                reference.heap.peek().map(|Reverse((t, ..))| f64::from_bits(*t))
            );
        }
        while let Some(want) = reference.pop() {
            assert_eq!(queue.pop(), Some(want));
        }
        assert!(queue.is_empty());
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn peek_two_shows_the_next_two_events_to_come() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut queue = EventQueue::new();
        let mut now = 0.0;
        let mut seconds_seen = 0;
        for i in 0..20_000u32 {
            let at = now + rng.random_range(0.0..0.05);
            queue.push(at, i);
            if rng.random_range(0..2) == 0 {
                continue;
            }
            let (first, second) = queue.peek_two();
            let (first, second) = (first.copied(), second.copied());
            let (t, popped) = queue.pop().expect("an event was pushed");
            assert_eq!(first, Some(popped), "the first peeked is the next popped");
            now = t;
            if let Some(second) = second {
                // With nothing pushed in between, the second peeked is the one popped after.
                assert_eq!(queue.pop().map(|(_, e)| e), Some(second));
                seconds_seen += 1;
            }
        }
        assert!(
            seconds_seen > 1_000,
            "the second is found in the open bucket: {seconds_seen}"
        );
    }

    #[test]
    fn an_event_pushed_for_now_after_a_peek_at_later_comes_first() {
        let mut queue = EventQueue::new();
        queue.push(5.0, "later");
        assert_eq!(queue.peek_time(), Some(5.0));
        // The peek opened the bucket of 5 s; an event for 1 s, pushed now, still comes out first.
        queue.push(1.0, "now");
        queue.push(5.0, "later, pushed second");
        assert_eq!(queue.pop(), Some((1.0, "now")));
        assert_eq!(queue.pop(), Some((5.0, "later")));
        assert_eq!(queue.pop(), Some((5.0, "later, pushed second")));
        assert_eq!(queue.len(), 0);
    }
}
