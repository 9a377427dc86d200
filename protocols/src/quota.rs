//! Rate limits as the generic cell rate algorithm (GCRA), with time passed in: the one rate primitive of the
//! workspace — the node's upload limiter and its per-peer inbound quotas are both built on [`Gcra`].
//!
//! GCRA keeps a single number per flow, its theoretical arrival time (TAT): when the flow would be back to an
//! empty record if it sent nothing more. A request of cost `c` at time `now` under rate `r` and burst `b` conforms
//! when `TAT − now + c/r ≤ b/r`, and then moves TAT to `max(TAT, now) + c/r`. That is a token bucket of `b` tokens
//! refilled at `r` a second, told in one number (Turner's leaky bucket as a meter; ATM's GCRA; lighthouse's RPC rate
//! limiter). [`Gcra::reserve`] also lets a request through on debt and says how long the caller must wait, for a
//! sender that must send everything at the average rate (the upload limiter).
//!
//! [`Quotas`] holds one GCRA per key (a peer), bounded: a key whose TAT has passed is the same as a new one, so it
//! is forgotten first; a table full of active keys refuses new ones rather than grow.

use std::collections::HashMap;
use std::hash::Hash;

/// The per-peer quotas a node keeps on what peers ask of it (the simulator keeps the same in scenarios with
/// adversaries). Each is several times what an honest peer of the protocol ever sends one peer, measured in the
/// simulator at 10,000 viewers with churn, so that only a peer that floods goes over.
pub mod limits {
    use super::Rate;

    /// Tree-mesh pulls (`Want`) from one peer: an honest puller keeps two in flight to one neighbour, each a block's
    /// time on a link (about 0.1 s at 2.5 Mbit/s and 1.5× the bitrate), so about 20 a second at most.
    pub const PULLS: Rate = Rate::new(50.0, 50.0);
    /// Tree-mesh probes and mesh requests from one peer: a peer probes another when it joins and now and then to
    /// measure it, and asks it into its mesh at most every 30 s.
    pub const PROBES: Rate = Rate::new(2.0, 8.0);
    /// Attach requests a parent passes down to one child: all the joiners and orphans its subtree takes go down
    /// that one link — hundreds a second at a broadcaster's child when 10,000 viewers join in a minute and
    /// forwarders' subtrees are being placed again. Each costs a routing decision and at most an offer of a place
    /// (a few hundred bytes) to the peer it names.
    pub const PLACEMENTS: Rate = Rate::new(1000.0, 2000.0);
    /// Every other tree-mesh control message from one peer: HAVEs, adverts, skips, answers.
    pub const CONTROL: Rate = Rate::new(100.0, 200.0);
    /// Chunk protocol block requests from one peer.
    pub const BLOCK_REQUESTS: Rate = Rate::new(50.0, 100.0);
    /// Manifest requests from one peer: a viewer asks when it joins, and when announcements stop arriving (every
    /// 3 s at most).
    pub const MANIFEST_REQUESTS: Rate = Rate::new(1.0, 4.0);
    /// Connections a node accepts from one IP address: a household's or an office's few nodes behind one NAT
    /// address, not a crowd of identities one machine makes up (loopback, where a testnet runs, is exempt).
    pub const CONNECTIONS_PER_ADDRESS: u32 = 8;
}

/// A rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Units a second (requests, bytes); 0: nothing conforms.
    pub per_s: f64,
    /// Units that may go at once after a quiet spell.
    pub burst: f64,
}

impl Rate {
    /// `per_s` a second with a burst of `burst`.
    pub const fn new(per_s: f64, burst: f64) -> Self {
        Self { per_s, burst }
    }

    /// Whether anything conforms at all: a rate above 0 (not 0, negative or NaN).
    fn flows(&self) -> bool {
        self.per_s > 0.0
    }
}

/// One flow's GCRA state: its theoretical arrival time, in seconds on the caller's clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gcra {
    tat: f64,
}

impl Default for Gcra {
    fn default() -> Self {
        Self::new()
    }
}

impl Gcra {
    /// A flow that has sent nothing (its whole burst available).
    pub fn new() -> Self {
        Self { tat: f64::NEG_INFINITY }
    }

    /// Takes `cost` units at `now` if they conform to `rate`; otherwise takes nothing and returns how long until
    /// they would. A rate of 0 (or below, or NaN) never conforms and says so with an infinite wait.
    pub fn check(&mut self, now: f64, cost: f64, rate: Rate) -> Result<(), f64> {
        if !rate.flows() {
            return Err(f64::INFINITY);
        }
        let tat = self.tat.max(now) + cost / rate.per_s;
        let over = tat - now - rate.burst.max(0.0) / rate.per_s;
        if over > 1e-12 {
            return Err(over);
        }
        self.tat = tat;
        Ok(())
    }

    /// Takes `cost` units at `now` whatever they are, and returns how long the caller must wait before sending them
    /// to keep to `rate` (0: at once). `None` when the rate is 0: nothing may go, and nothing was taken.
    pub fn reserve(&mut self, now: f64, cost: f64, rate: Rate) -> Option<f64> {
        if !rate.flows() {
            return None;
        }
        self.tat = self.tat.max(now) + cost / rate.per_s;
        Some((self.tat - now - rate.burst.max(0.0) / rate.per_s).max(0.0))
    }

    /// Moves to a new rate at `now`: what is still owed (units sent ahead of the old rate) is kept, to be paid at the
    /// new one; what was saved up is kept down to the new burst.
    pub fn rerate(&mut self, now: f64, old: Rate, new: Rate) {
        if !(old.flows() && new.flows()) || self.tat == f64::NEG_INFINITY {
            if !new.flows() {
                return;
            }
            // From a standstill (or a fresh flow), start with the whole new burst.
            self.tat = self.tat.min(now);
            return;
        }
        let owed = (self.tat - now) * old.per_s;
        let owed = owed.max(-new.burst.max(0.0));
        self.tat = now + owed / new.per_s;
    }

    /// Whether the flow is back to having sent nothing at `now` (its state can be forgotten).
    pub fn idle(&self, now: f64) -> bool {
        self.tat <= now
    }
}

/// Why a request was not let through.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Refused {
    /// The key is over its quota; it conforms again after this many seconds.
    Over(f64),
    /// The table is full of keys that are all busy: a new key must wait.
    Full,
}

/// One GCRA per key, under one rate, in a bounded table.
#[derive(Clone, Debug)]
pub struct Quotas<K> {
    rate: Rate,
    max_keys: usize,
    flows: HashMap<K, Gcra>,
}

impl<K: Copy + Eq + Hash> Quotas<K> {
    /// Quotas of `rate` for at most `max_keys` keys at a time.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys,
            flows: HashMap::new(),
        }
    }

    /// The rate in force.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes `cost` from `key`'s quota at `now`, or says why not.
    pub fn check(&mut self, key: K, now: f64, cost: f64) -> Result<(), Refused> {
        if !self.flows.contains_key(&key) && self.flows.len() >= self.max_keys {
            // Keys back at rest are the same as new ones: forget them.
            self.flows.retain(|_, flow| !flow.idle(now));
            if self.flows.len() >= self.max_keys {
                return Err(Refused::Full);
            }
        }
        let rate = self.rate;
        self.flows
            .entry(key)
            .or_default()
            .check(now, cost, rate)
            .map_err(Refused::Over)
    }

    /// Forgets `key` (a peer that disconnected).
    pub fn remove(&mut self, key: &K) {
        self.flows.remove(key);
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_the_rate_holds() {
        let rate = Rate::new(10.0, 5.0);
        let mut flow = Gcra::new();
        for _ in 0..5 {
            assert_eq!(flow.check(0.0, 1.0, rate), Ok(()));
        }
        let wait = flow.check(0.0, 1.0, rate).unwrap_err();
        assert!((wait - 0.1).abs() < 1e-9, "{wait}");
        assert_eq!(flow.check(0.1, 1.0, rate), Ok(()));
        assert!(flow.check(0.1, 1.0, rate).is_err());
        // Over a long run, at most burst + rate × time.
        let mut flow = Gcra::new();
        let taken = (0..10_000)
            .filter(|i| flow.check(f64::from(*i) * 0.001, 1.0, rate).is_ok())
            .count();
        assert!(
            (100..=106).contains(&taken),
            "{taken} in 10 s at 10/s with a burst of 5"
        );
    }

    #[test]
    fn a_zero_rate_lets_nothing_through() {
        let mut flow = Gcra::new();
        assert_eq!(flow.check(0.0, 1.0, Rate::new(0.0, 10.0)), Err(f64::INFINITY));
        assert_eq!(flow.reserve(0.0, 1.0, Rate::new(f64::NAN, 10.0)), None);
    }

    #[test]
    fn reserve_runs_on_debt_and_says_how_long_to_wait() {
        let rate = Rate::new(1000.0, 20.0);
        let mut flow = Gcra::new();
        assert_eq!(flow.reserve(0.0, 20.0, rate), Some(0.0));
        let wait = flow.reserve(0.0, 500.0, rate).unwrap();
        assert!((wait - 0.5).abs() < 1e-9, "{wait}");
        // Halving the rate doubles what is left of the wait.
        flow.rerate(0.25, rate, Rate::new(500.0, 10.0));
        let wait = flow.reserve(0.25, 0.0, Rate::new(500.0, 10.0)).unwrap();
        assert!((wait - 0.52).abs() < 1e-9, "{wait}");
    }

    #[test]
    fn the_table_forgets_idle_keys_and_refuses_when_every_key_is_busy() {
        let mut quotas = Quotas::new(Rate::new(1.0, 1.0), 2);
        assert_eq!(quotas.check(1u32, 0.0, 1.0), Ok(()));
        assert_eq!(quotas.check(2, 0.0, 1.0), Ok(()));
        assert_eq!(quotas.check(3, 0.5, 1.0), Err(Refused::Full));
        assert!(matches!(quotas.check(1, 0.5, 1.0), Err(Refused::Over(_))));
        // Key 1 and 2 are idle again after a second: a new key gets a place.
        assert_eq!(quotas.check(3, 1.0, 1.0), Ok(()));
        assert!(quotas.len() <= 2);
    }
}
