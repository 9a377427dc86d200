//! Upload rate limiting: a token bucket ([`TokenBucket`], sans-io) and the shared async limiter the chunk protocol
//! awaits before every piece of an outgoing payload ([`UploadLimiter`]).
//!
//! The bucket runs on debt: a reservation always takes its bytes, even below zero, and the caller waits until the
//! bucket is back at zero. So a piece larger than the burst (a whole 64 KiB block) still goes, at the right average
//! rate, and callers are served in the order they asked. By any time `T` after a full bucket, at most
//! `burst + rate × T` bytes have been let through.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Share of a second's rate the bucket holds: 20 ms. The limiter stands for a link of that rate (the testnet emulates
/// its capacity classes with it), and a link does not save up: a node idle between segments that could send 100 ms
/// of rate at once would be a tenth of a second ahead at every hop of a tree, which no uplink is. 20 ms covers the
/// wake-ups that come late on a busy machine (time a writer oversleeps earns tokens, up to the bucket, so the
/// average holds) and is 0.03 % of a minute.
const BURST_SECONDS: f64 = 0.02;

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
        self.tokens = (self.tokens + self.rate * elapsed).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes `bytes` and says how long the caller must wait before sending them; `Duration::ZERO`: at once. `None`
    /// when the rate is 0: nothing may be sent, and nothing was taken.
    pub(crate) fn reserve(&mut self, now: Instant, bytes: usize) -> Option<Duration> {
        self.refill(now);
        if self.rate <= 0.0 {
            return None;
        }
        self.tokens -= bytes as f64;
        Some(if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
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
    /// A limiter at `rate` bytes per second (`None`: unlimited).
    pub(crate) fn new(rate: Option<f64>) -> Self {
        let now = tokio::time::Instant::now().into_std();
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

    /// Changes the rate (`None`: unlimited; `Some(0.0)`: nothing may be sent) and wakes the waiting writers.
    pub(crate) fn set_rate(&self, rate: Option<f64>) {
        let now = tokio::time::Instant::now().into_std();
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
            at: now + Duration::from_secs_f64(owed / rate),
            rate,
        }
    } else {
        Turn::Parked { owed }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
}
