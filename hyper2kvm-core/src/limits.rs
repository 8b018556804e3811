//! Limits shared by every disk of a run: how many reads may be in flight at once across all
//! disks (HTTP connections, when the readers are page blobs), and an optional bandwidth cap.
//!
//! [`Limits::wrap`] puts a reader behind them; the conversion pipeline does not know.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::buffers::AlignedBuf;
use crate::error::Result;
use crate::source::{BoxFuture, DiskReader};

/// Run-wide limits on reads. Cheap to clone: clones share the same budget.
#[derive(Clone, Default)]
pub struct Limits {
    connections: Option<Arc<Semaphore>>,
    bandwidth: Option<Arc<Pacer>>,
}

impl Limits {
    /// At most `connections` reads in flight at once (none: no limit) and at most
    /// `bytes_per_sec` read per second on average (none: no cap).
    pub fn new(connections: Option<usize>, bytes_per_sec: Option<u64>) -> Self {
        Limits {
            connections: connections.map(|n| Arc::new(Semaphore::new(n.max(1)))),
            bandwidth: bytes_per_sec
                .filter(|&b| b > 0)
                .map(|b| Arc::new(Pacer::new(b))),
        }
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.connections.is_some() || self.bandwidth.is_some()
    }

    /// `reader` behind these limits (or `reader` itself when there are none).
    pub fn wrap(&self, reader: Arc<dyn DiskReader>) -> Arc<dyn DiskReader> {
        if !self.is_limited() {
            return reader;
        }
        Arc::new(LimitedReader {
            inner: reader,
            limits: self.clone(),
        })
    }
}

/// Paces reads to a byte rate: each read reserves its bytes on a virtual clock and waits
/// until its slot; up to one second of unused budget may be spent at once (a burst).
struct Pacer {
    bytes_per_sec: u64,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    fn new(bytes_per_sec: u64) -> Self {
        Pacer {
            bytes_per_sec,
            next: Mutex::new(None),
        }
    }

    /// How long the caller must wait before reading `bytes`.
    fn reserve(&self, bytes: u64, now: Instant) -> Duration {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let burst = Duration::from_secs(1);
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        // Idle time earns at most one second of budget.
        let floor = now.checked_sub(burst).unwrap_or(now);
        let start = next.map_or(floor, |t| t.max(floor));
        let end = start + cost;
        *next = Some(end);
        end.saturating_duration_since(now)
    }
}

struct LimitedReader {
    inner: Arc<dyn DiskReader>,
    limits: Limits,
}

impl DiskReader for LimitedReader {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn identity(&self) -> String {
        self.inner.identity()
    }

    fn allocated_ranges(&self) -> BoxFuture<'_, Result<Vec<Range<u64>>>> {
        self.inner.allocated_ranges()
    }

    fn read_at(&self, offset: u64, buf: AlignedBuf) -> BoxFuture<'_, Result<AlignedBuf>> {
        Box::pin(async move {
            // The connection first, then the pace: reads queued for a connection do not
            // all start at once when connections free up.
            let _permit = match &self.limits.connections {
                Some(s) => Some(s.acquire().await.expect("the semaphore is never closed")),
                None => None,
            };
            if let Some(pacer) = &self.limits.bandwidth {
                let wait = pacer.reserve(buf.len() as u64, Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            self.inner.read_at(offset, buf).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn pacer_allows_a_one_second_burst_then_paces() {
        let p = Pacer::new(1000);
        let t0 = Instant::now();
        // 1000 bytes of burst are free.
        assert_eq!(p.reserve(1000, t0), Duration::ZERO);
        // The next 500 bytes cost half a second.
        let w = p.reserve(500, t0);
        assert!((w.as_secs_f64() - 0.5).abs() < 1e-6, "{w:?}");
        let w = p.reserve(500, t0);
        assert!((w.as_secs_f64() - 1.0).abs() < 1e-6, "{w:?}");
        // After a long idle time, only one second of budget is back.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.reserve(1000, later), Duration::ZERO);
        assert!(p.reserve(100, later) > Duration::ZERO);
    }

    struct Slow {
        in_flight: AtomicUsize,
        peak: AtomicUsize,
    }

    impl DiskReader for Slow {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn describe(&self) -> String {
            "slow".into()
        }
        fn allocated_ranges(&self) -> BoxFuture<'_, Result<Vec<Range<u64>>>> {
            let all = 0..1u64 << 20;
            Box::pin(async move { Ok(std::iter::once(all).collect()) })
        }
        fn read_at(&self, _offset: u64, buf: AlignedBuf) -> BoxFuture<'_, Result<AlignedBuf>> {
            Box::pin(async move {
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(buf)
            })
        }
    }

    #[tokio::test]
    async fn connections_are_shared_across_readers() {
        let slow = Arc::new(Slow {
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let limits = Limits::new(Some(3), None);
        let a = limits.wrap(slow.clone());
        let b = limits.wrap(slow.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20u64 {
            let r = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move {
                r.read_at(i * 512, AlignedBuf::zeroed(512))
                    .await
                    .map(|_| ())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(slow.peak.load(Ordering::SeqCst), 3);
    }
}
