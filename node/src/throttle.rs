//! Upload rate limiting: a token bucket ([`TokenBucket`], sans-io) and the shared async limiter the chunk protocol
//! awaits before every piece of an outgoing payload ([`UploadLimiter`]).
//!
//! The bucket runs on debt: a reservation always takes its bytes, even below zero, and the caller waits until the
//! bucket is back at zero. So a piece larger than the burst (a whole 64 KiB block) still goes, at the right average
//! rate, and callers are served in the order they asked. By any time `T` after a full bucket, at most
//! `burst + rate × T` bytes have been let through.
//!
//! Neither takes its rate on trust: [`crate::Policy::validate`] keeps caps in a sensible range, but whatever rate it is
//! given (0, negative, NaN, subnormal, infinite, 1e300) the limiter never panics. A wait that would be absurdly long
//! (bytes at 1e-300 bytes per second) is cut to [`MAX_WAIT`]: long, but a time `Instant` arithmetic can hold.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Share of a second's rate the bucket holds: 20 ms. The limiter stands for a link of that rate (the testnet emulates
/// its capacity classes with it), and a link does not save up: a node idle between segments that could send 100 ms
/// of rate at once would be a tenth of a second ahead at every hop of a tree, which no uplink is. 20 ms covers the
/// wake-ups that come late on a busy machine (time a writer oversleeps earns tokens, up to the bucket, so the
/// average holds) and is 0.03 % of a minute.
const BURST_SECONDS: f64 = 0.02;

/// Longest wait the limiter asks for: a year. A valid policy never comes near it (a 64 KiB block at the smallest cap,
/// 1 kbit/s, takes under 9 minutes), and an `Instant` a year ahead is still representable, whereas the exact wait
/// for an absurd rate (1e300 s) is not a `Duration` at all and would panic in `Duration::from_secs_f64` or in
/// `Instant + Duration`. A writer held that long has, in effect, been told not to send.
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A token bucket on debt, in bytes, with time passed in.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    /// Bytes per second; 0: nothing may go.
    rate: f64,
    /// Most tokens the bucket holds ([`TokenBucket::burst_for`]).
    burst: f64,
    /// Tokens now; below zero while reservations are still being paid off.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second (negative or NaN: 0).
    pub(crate) fn new(rate: f64, now: Instant) -> Self {
        let rate = sanitize(rate);
        let burst = Self::burst_for(rate);
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// The burst for a rate: 20 ms of it.
    pub(crate) fn burst_for(rate: f64) -> f64 {
        rate * BURST_SECONDS
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        // Not `rate * elapsed` when no time passed: at an infinite rate that is NaN.
        let earned = if elapsed > 0.0 { self.rate * elapsed } else { 0.0 };
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes `bytes` and says how long the caller must wait before sending them; `Duration::ZERO`: at once, at most
    /// [`MAX_WAIT`]. `None` when the rate is 0: nothing may be sent, and nothing was taken.
    pub(crate) fn reserve(&mut self, now: Instant, bytes: usize) -> Option<Duration> {
        self.refill(now);
        if self.rate <= 0.0 {
            return None;
        }
        self.tokens -= bytes as f64;
        Some(if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            time_to_pay(-self.tokens, self.rate)
        })
    }

    /// Changes the rate from `now` on. Tokens earned so far are kept (down to the new burst); debt is kept and paid
    /// at the new rate.
    pub(crate) fn set_rate(&mut self, now: Instant, rate: f64) {
        self.refill(now);
        self.rate = sanitize(rate);
        self.burst = Self::burst_for(self.rate);
        self.tokens = self.tokens.min(self.burst);
    }
}

/// Negative and NaN rates are 0; infinity stays (a bucket that never makes anyone wait).
fn sanitize(rate: f64) -> f64 {
    if rate > 0.0 { rate } else { 0.0 }
}

/// How long paying `owed` bytes takes at `rate` (above 0) bytes per second, cut to [`MAX_WAIT`]. Nothing owed, or
/// an infinite rate (where `owed / rate` may be NaN: infinite debt at an infinite rate), is no wait.
fn time_to_pay(owed: f64, rate: f64) -> Duration {
    let seconds = owed / rate;
    if seconds.is_nan() || seconds <= 0.0 {
        return Duration::ZERO;
    }
    // Too big for a `Duration` (an absurdly small rate): the longest wait.
    Duration::try_from_secs_f64(seconds).map_or(MAX_WAIT, |wait| wait.min(MAX_WAIT))
}

struct State {
    /// `None`: unlimited.
    rate: Option<f64>,
    bucket: TokenBucket,
}

/// The node's upload limit, shared by every outgoing payload stream (through an `Arc`).
///
/// Writers call [`UploadLimiter::acquire`] before each piece they send. The rate comes from
/// [`crate::Policy::upload_limit`]: `None` lets everything through at once, `Some(0.0)` holds every writer until the
/// rate changes. A rate change wakes the waiting writers, which then wait what is left of their turn at the new rate.
pub(crate) struct UploadLimiter {
    state: Mutex<State>,
    /// Bumped on every rate change, to wake the waiting writers.
    changed: watch::Sender<u64>,
}

/// Where a writer stands in [`UploadLimiter::acquire`].
enum Turn {
    /// Its bytes are not taken from the bucket yet.
    Unreserved,
    /// Its bytes are taken; it may send at `at`, as paid at `rate`.
    Waiting { at: tokio::time::Instant, rate: f64 },
    /// Its bytes are taken, the rate is 0: `owed` bytes of debt ahead of it are still to be paid.
    Parked { owed: f64 },
}

impl UploadLimiter {
    /// A limiter at `rate` bytes per second (`None`: unlimited; negative or NaN: 0).
    pub(crate) fn new(rate: Option<f64>) -> Self {
        let now = tokio::time::Instant::now().into_std();
        // The rate writers are rescheduled at is the bucket's, so a NaN rate parks them as the bucket does.
        let rate = rate.map(sanitize);
        Self {
            state: Mutex::new(State {
                rate,
                bucket: TokenBucket::new(rate.unwrap_or(0.0), now),
            }),
            changed: watch::Sender::new(0),
        }
    }

    /// The rate in force, bytes per second (`None`: unlimited).
    #[cfg(test)]
    pub(crate) fn rate(&self) -> Option<f64> {
        self.state.lock().expect("upload limiter poisoned").rate
    }

    /// Changes the rate (`None`: unlimited; `Some(0.0)`, negative or NaN: nothing may be sent) and wakes the
    /// waiting writers.
    pub(crate) fn set_rate(&self, rate: Option<f64>) {
        let now = tokio::time::Instant::now().into_std();
        let rate = rate.map(sanitize);
        let mut state = self.state.lock().expect("upload limiter poisoned");
        match (state.rate, rate) {
            // Coming back from unlimited: start full, as a new limiter would.
            (None, Some(r)) => state.bucket = TokenBucket::new(r, now),
            (_, Some(r)) => state.bucket.set_rate(now, r),
            (_, None) => {}
        }
        state.rate = rate;
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// Waits until `bytes` more may be sent. Cancel-safe in the sense that dropping it gives up the turn; bytes
    /// already taken from the bucket are not given back.
    pub(crate) async fn acquire(&self, bytes: usize) {
        let mut changes = self.changed.subscribe();
        let mut turn = Turn::Unreserved;
        loop {
            let until = {
                let state = &mut *self.state.lock().expect("upload limiter poisoned");
                changes.borrow_and_update();
                let now = tokio::time::Instant::now();
                let Some(rate) = state.rate else { return };
                turn = match turn {
                    Turn::Unreserved => match state.bucket.reserve(now.into_std(), bytes) {
                        Some(wait) => Turn::Waiting { at: now + wait, rate },
                        None => Turn::Unreserved,
                    },
                    Turn::Waiting { at, rate: paid_at } => {
                        let owed = at.saturating_duration_since(now).as_secs_f64() * paid_at;
                        wait_for(now, owed, rate)
                    }
                    Turn::Parked { owed } => wait_for(now, owed, rate),
                };
                match turn {
                    Turn::Waiting { at, .. } if at <= now => return,
                    Turn::Waiting { at, .. } => Some(at),
                    _ => None,
                }
            };
            match until {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => return,
                    _ = changes.changed() => {}
                },
                // The sender lives as long as `self`: `changed` only fails when nobody could change the rate.
                None => {
                    if changes.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The turn of a writer with `owed` bytes of debt ahead of it, at `rate`.
fn wait_for(now: tokio::time::Instant, owed: f64, rate: f64) -> Turn {
    if rate > 0.0 {
        Turn::Waiting {
            at: now + time_to_pay(owed, rate),
            rate,
        }
    } else {
        Turn::Parked { owed }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    const KIB16: usize = 16 * 1024;

    /// Sends `piece`-byte writes back to back for `seconds`, as fast as the bucket allows; returns the bytes sent.
    fn simulate(bucket: &mut TokenBucket, start: Instant, seconds: f64, piece: usize) -> (f64, Instant) {
        let end = start + Duration::from_secs_f64(seconds);
        let mut now = start;
        let mut sent = 0.0;
        loop {
            let wait = bucket.reserve(now, piece).expect("rate above zero");
            now += wait;
            if now > end {
                return (sent, now);
            }
            sent += piece as f64;
        }
    }

    #[test]
    fn average_rate_over_a_minute_within_one_percent() {
        for (rate, piece) in [
            (125_000.0, KIB16),
            (2_500_000.0, KIB16),
            (500_000.0, 64 * 1024),
            (12_500.0, 1000),
        ] {
            let start = Instant::now();
            let mut bucket = TokenBucket::new(rate, start);
            let (sent, _) = simulate(&mut bucket, start, 60.0, piece);
            // Never more than the full bucket plus a minute of rate.
            let burst = TokenBucket::burst_for(rate);
            assert!(sent <= burst + rate * 60.0, "rate {rate}, piece {piece}: sent {sent}");
            // The initial full bucket aside, within 1 %.
            let measured = (sent - burst) / 60.0;
            assert!(
                (measured - rate).abs() / rate < 0.01,
                "rate {rate}, piece {piece}: measured {measured}"
            );
        }
    }

    #[test]
    fn burst_is_20_ms_of_rate() {
        assert_eq!(TokenBucket::burst_for(1_000_000.0), 20_000.0);
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1_000_000.0, start);
        // A full bucket lets 20 kB through at once; the next byte waits.
        assert_eq!(bucket.reserve(start, 20_000), Some(Duration::ZERO));
        assert!(bucket.reserve(start, 1000).unwrap() > Duration::ZERO);
    }

    #[test]
    fn after_idle_a_piece_takes_about_its_time_on_a_link() {
        // 1 Mbit/s, idle for a minute: a 16 KiB piece still waits for all but 20 ms of its 131 ms on the wire.
        let start = Instant::now();
        let mut bucket = TokenBucket::new(125_000.0, start);
        let wait = bucket.reserve(start + Duration::from_secs(60), KIB16).unwrap();
        let expected = (KIB16 as f64 - 2_500.0) / 125_000.0;
        assert!((wait.as_secs_f64() - expected).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn debt_lets_a_block_larger_than_the_burst_through() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10_000.0, start); // burst 200 bytes
        // A 64 KiB block: the bucket goes 65,336 bytes into debt, paid in 6.5 s.
        let wait = bucket.reserve(start, 64 * 1024).unwrap();
        assert!(
            (wait.as_secs_f64() - (64.0 * 1024.0 - 200.0) / 10_000.0).abs() < 1e-6,
            "{wait:?}"
        );
        // The next writer waits behind that debt.
        let next = bucket.reserve(start, 1000).unwrap();
        assert!(
            (next.as_secs_f64() - (64.0 * 1024.0 - 200.0 + 1000.0) / 10_000.0).abs() < 1e-6,
            "{next:?}"
        );
    }

    #[test]
    fn rate_change_takes_effect() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100_000.0, start);
        let (first, now) = simulate(&mut bucket, start, 30.0, 1000);
        bucket.set_rate(now, 25_000.0);
        let (second, _) = simulate(&mut bucket, now, 30.0, 1000);
        assert!((first / 30.0 - 100_000.0).abs() / 100_000.0 < 0.01, "{first}");
        assert!((second / 30.0 - 25_000.0).abs() / 25_000.0 < 0.01, "{second}");
        // At 0 nothing is taken, however long one waits.
        bucket.set_rate(now, 0.0);
        assert_eq!(bucket.reserve(now + Duration::from_secs(3600), 1), None);
    }

    #[test]
    fn debt_is_paid_at_the_new_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10_000.0, start);
        bucket.reserve(start, 200 + 100_000).unwrap(); // 100 kB of debt
        bucket.set_rate(start, 100_000.0);
        let wait = bucket.reserve(start, 0).unwrap();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_holds_writers_to_the_rate() {
        let limiter = UploadLimiter::new(Some(100_000.0));
        let start = tokio::time::Instant::now();
        let mut sent = 0;
        while start.elapsed() < Duration::from_secs(60) {
            limiter.acquire(KIB16).await;
            sent += KIB16;
        }
        let measured = sent as f64 / start.elapsed().as_secs_f64();
        assert!((measured - 100_000.0).abs() / 100_000.0 < 0.01, "{measured}");
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limiter = UploadLimiter::new(None);
        let start = tokio::time::Instant::now();
        for _ in 0..1000 {
            limiter.acquire(64 * 1024).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(limiter.rate(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_change_wakes_a_waiter() {
        let limiter = Arc::new(UploadLimiter::new(Some(0.0)));
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                limiter.acquire(KIB16).await;
                tokio::time::Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiter.is_finished(), "nothing may go at rate 0");
        let changed_at = tokio::time::Instant::now();
        limiter.set_rate(Some(1_000_000.0));
        let sent_at = waiter.await.unwrap();
        // It goes as soon as its piece has had its time at the new rate (an empty bucket saved nothing at 0).
        let took = (sent_at - changed_at).as_secs_f64();
        assert!((took - KIB16 as f64 / 1_000_000.0).abs() < 0.002, "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_writer_is_rescheduled_at_the_new_rate() {
        let limiter = Arc::new(UploadLimiter::new(Some(10_000.0)));
        limiter.acquire(KIB16).await; // empties the bucket
        let start = tokio::time::Instant::now();
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                limiter.acquire(100_000).await; // 10 s at 10 kB/s
                tokio::time::Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        // 80 kB still owed: 0.8 s at 100 kB/s.
        limiter.set_rate(Some(100_000.0));
        let sent_at = waiter.await.unwrap();
        let took = (sent_at - start).as_secs_f64();
        assert!((took - 2.8).abs() < 0.01, "{took}");

        // Rate 0 parks a waiter with what it owes; unlimited lets it go at once.
        limiter.acquire(200_000).await;
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire(KIB16).await }
        });
        tokio::task::yield_now().await;
        limiter.set_rate(Some(0.0));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!waiter.is_finished());
        limiter.set_rate(None);
        waiter.await.unwrap();
    }

    #[test]
    fn absurd_rates_wait_long_but_finite_or_not_at_all() {
        let start = Instant::now();
        // `POST /api/policy {"max_upload_kbps": 1e-300}` before the policy refused it: this panicked.
        for tiny in [crate::policy::kbps_to_bytes(1e-300), f64::MIN_POSITIVE, 5e-324] {
            let mut bucket = TokenBucket::new(tiny, start);
            assert_eq!(bucket.reserve(start, KIB16), Some(MAX_WAIT), "{tiny:e}");
            assert_eq!(bucket.reserve(start + MAX_WAIT, usize::MAX), Some(MAX_WAIT), "{tiny:e}");
        }
        // Huge and infinite rates never make anyone wait, before or after a rate change.
        for huge in [1e300, f64::MAX, f64::INFINITY] {
            let mut bucket = TokenBucket::new(huge, start);
            assert_eq!(bucket.reserve(start, usize::MAX), Some(Duration::ZERO), "{huge:e}");
            assert_eq!(bucket.reserve(start, KIB16), Some(Duration::ZERO), "{huge:e}");
        }
        let mut bucket = TokenBucket::new(10_000.0, start);
        bucket.reserve(start, 1_000_000).unwrap(); // 100 s of debt
        bucket.set_rate(start, f64::INFINITY);
        assert_eq!(bucket.reserve(start, KIB16), Some(Duration::ZERO));
        assert_eq!(
            bucket.reserve(start + Duration::from_secs(1), KIB16),
            Some(Duration::ZERO)
        );
        bucket.set_rate(start, 1e-300);
        assert_eq!(bucket.reserve(start, KIB16), Some(MAX_WAIT));
        // Negative and NaN rates are 0: nothing may go.
        for zero in [0.0, -0.0, -1.0, f64::NEG_INFINITY, f64::NAN] {
            bucket.set_rate(start, zero);
            assert_eq!(bucket.reserve(start, 1), None, "{zero}");
            assert_eq!(TokenBucket::new(zero, start).reserve(start, 1), None, "{zero}");
        }
    }

    #[test]
    fn time_to_pay_is_exact_in_range_and_cut_outside() {
        assert_eq!(time_to_pay(125_000.0, 125_000.0), Duration::from_secs(1));
        assert_eq!(time_to_pay(0.0, 1.0), Duration::ZERO);
        assert_eq!(time_to_pay(-5.0, 1.0), Duration::ZERO);
        assert_eq!(time_to_pay(1.0, 1e-300), MAX_WAIT);
        assert_eq!(time_to_pay(f64::INFINITY, 1.0), MAX_WAIT);
        assert_eq!(time_to_pay(f64::INFINITY, f64::INFINITY), Duration::ZERO);
        assert_eq!(time_to_pay(f64::NAN, 1.0), Duration::ZERO);
        // The longest wait is not reached by a valid policy: a 64 KiB block at 1 kbit/s, a quarter in background.
        let slowest = 125.0 * streamrp2p_protocols::treemesh::BACKGROUND_SHARE;
        assert!(time_to_pay(65_536.0, slowest) < Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_writer_survives_an_absurd_rate() {
        let limiter = Arc::new(UploadLimiter::new(Some(1e300)));
        limiter.acquire(usize::MAX).await;
        limiter.set_rate(Some(10_000.0));
        limiter.acquire(KIB16).await; // empties the bucket
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire(100_000).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Rescheduled at 1e-300 bytes per second: held for the longest wait, not a panic.
        limiter.set_rate(Some(1e-300));
        tokio::time::sleep(Duration::from_secs(30 * 24 * 3600)).await;
        assert!(!waiter.is_finished());
        limiter.set_rate(Some(f64::NAN));
        assert_eq!(limiter.rate(), Some(0.0), "NaN is 0, as the bucket takes it");
        tokio::time::sleep(Duration::from_secs(1)).await;
        limiter.set_rate(Some(f64::INFINITY));
        waiter.await.unwrap();
    }

    /// What a property test does to a bucket or a limiter.
    #[derive(Clone, Debug)]
    enum Op {
        Reserve(usize),
        SetRate(Option<f64>),
        Wait(Duration),
    }

    /// Rates from the absurd to the ordinary: every class of `f64` (NaN, infinities, subnormals, zeros), the values
    /// that broke the limiter, and plausible ones.
    fn rates() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(1e-300),
            Just(crate::policy::kbps_to_bytes(1e-300)),
            Just(1e300),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-1.0),
            Just(0.0),
            proptest::num::f64::ANY,
            1.0..1e9f64,
        ]
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            prop_oneof![any::<usize>(), 0..200_000usize].prop_map(Op::Reserve),
            proptest::option::of(rates()).prop_map(Op::SetRate),
            (0..3_600_000u64).prop_map(|ms| Op::Wait(Duration::from_millis(ms))),
        ];
        proptest::collection::vec(op, 0..24)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn a_bucket_never_panics_and_waits_at_most_the_longest_wait(initial in rates(), ops in ops()) {
            let mut now = Instant::now();
            let mut bucket = TokenBucket::new(initial, now);
            for op in ops {
                match op {
                    Op::Reserve(bytes) => {
                        if let Some(wait) = bucket.reserve(now, bytes) {
                            prop_assert!(wait <= MAX_WAIT, "{wait:?}");
                            now += wait;
                        } else {
                            prop_assert_eq!(bucket.rate, 0.0, "refused at a rate above 0");
                        }
                    }
                    Op::SetRate(rate) => bucket.set_rate(now, rate.unwrap_or(0.0)),
                    Op::Wait(wait) => now += wait,
                }
            }
        }

        #[test]
        fn a_limiter_never_panics_whatever_its_rates(initial in proptest::option::of(rates()), ops in ops()) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a test runtime");
            let writers = runtime.block_on(async move {
                let limiter = Arc::new(UploadLimiter::new(initial));
                let mut writers = Vec::new();
                for op in ops {
                    match op {
                        Op::Reserve(bytes) => writers.push(tokio::spawn({
                            let limiter = limiter.clone();
                            async move { limiter.acquire(bytes).await }
                        })),
                        Op::SetRate(rate) => limiter.set_rate(rate),
                        Op::Wait(wait) => tokio::time::sleep(wait).await,
                    }
                }
                // Unlimited lets every writer still waiting go; each must end without a panic.
                limiter.set_rate(None);
                let mut outcomes = Vec::new();
                for writer in writers {
                    outcomes.push(writer.await.map_err(|e| e.to_string()));
                }
                outcomes
            });
            for outcome in writers {
                prop_assert!(outcome.is_ok(), "{outcome:?}");
            }
        }
    }
}
