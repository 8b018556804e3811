//! The link between the blob data plane and its readers: `settings.blob_rate` caps all
//! bodies of blob `GET`s together at that many bytes per second, as a shared network link
//! would.
//!
//! A token bucket: tokens (bytes) come at the rate, up to a small burst; a piece of a body
//! takes its bytes and, when the bucket runs short, waits until the debt is paid. The bucket
//! is plain arithmetic over the time it is given, so it is tested without a clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes and time of the shared bucket.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Bytes per second.
    rate: f64,
    /// The most bytes saved up while nobody reads.
    burst: f64,
    /// Bytes available now (negative: owed by pieces already let through).
    tokens: f64,
    /// When `tokens` was last brought up to date, since the bucket's start.
    at: Duration,
}

impl TokenBucket {
    /// A full bucket for `rate` bytes per second (`rate` > 0) saving at most `burst` bytes.
    pub(crate) fn new(rate: u64, burst: u64) -> Self {
        TokenBucket {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            at: Duration::ZERO,
        }
    }

    /// Takes `bytes` at `now` (time since the bucket's start; earlier times count as the
    /// latest one) and returns how long their sender waits before sending them: zero while
    /// the bucket holds enough, else until the rate has paid for them.
    pub(crate) fn take(&mut self, now: Duration, bytes: u64) -> Duration {
        let now = now.max(self.at);
        self.tokens = (self.tokens + (now - self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// The simulator's link: unlimited, or a bucket shared by every body.
pub(crate) struct Link {
    bucket: Option<Mutex<TokenBucket>>,
    start: Instant,
}

impl Link {
    /// `rate` bytes per second (0: unlimited); the burst is a twentieth of a second's worth,
    /// at least `piece` bytes (one piece of a body).
    pub(crate) fn new(rate: u64, piece: u64) -> Self {
        Link {
            bucket: (rate > 0).then(|| Mutex::new(TokenBucket::new(rate, (rate / 20).max(piece)))),
            start: Instant::now(),
        }
    }

    /// Waits until `bytes` may go out.
    pub(crate) async fn send(&self, bytes: u64) {
        let Some(bucket) = &self.bucket else { return };
        let wait = bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(self.start.elapsed(), bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_full_bucket_lets_its_burst_through_at_once() {
        let mut b = TokenBucket::new(1000, 100);
        assert_eq!(b.take(Duration::ZERO, 60), Duration::ZERO);
        assert_eq!(b.take(Duration::ZERO, 40), Duration::ZERO);
        // Empty now: 100 bytes more wait 100 ms at 1000 B/s.
        assert_eq!(b.take(Duration::ZERO, 100), 100 * MS);
    }

    #[test]
    fn readers_together_get_the_rate_and_no_more() {
        // Four readers taking 1 MiB pieces in turn at 200 MiB/s: the n-th MiB beyond the
        // burst goes out no sooner than n / 200 s after the start, whoever asks.
        let mib = 1u64 << 20;
        let mut b = TokenBucket::new(200 * mib, mib);
        let mut last = Duration::ZERO;
        for n in 1..=400u64 {
            // Every reader asks at once; each is let through at start + its wait.
            let wait = b.take(Duration::ZERO, mib);
            let expected = Duration::from_secs_f64((n - 1) as f64 / 200.0);
            assert!(
                wait.abs_diff(expected) < MS,
                "piece {n}: {wait:?} vs {expected:?}"
            );
            assert!(wait >= last);
            last = wait;
        }
        // 400 MiB beyond 1 MiB of burst: 2 s less the burst's 5 ms.
        assert!(last.abs_diff(Duration::from_millis(1995)) < MS);
    }

    #[test]
    fn an_idle_link_saves_at_most_its_burst() {
        let mut b = TokenBucket::new(1000, 100);
        assert_eq!(b.take(Duration::ZERO, 100), Duration::ZERO);
        // Ten idle seconds refill 100 bytes, not 10 000.
        assert_eq!(b.take(Duration::from_secs(10), 100), Duration::ZERO);
        assert_eq!(b.take(Duration::from_secs(10), 50), 50 * MS);
    }

    #[test]
    fn time_going_backwards_counts_as_the_latest() {
        let mut b = TokenBucket::new(1000, 0);
        assert_eq!(b.take(Duration::from_secs(1), 10), 10 * MS);
        // Asked "earlier" (a racing reader): no refill, and the debt adds up.
        assert_eq!(b.take(Duration::from_millis(500), 10), 20 * MS);
    }
}
