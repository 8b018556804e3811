//! What the process is waiting for right now, for progress displays.
//!
//! A run can sit still for a long time for good reasons: a `Retry-After` of 60 s, a
//! long-running operation (a deallocate, a snapshot) polled every few seconds, a backoff
//! after a broken connection. Whoever waits registers the wait here ([`waiting`]) and holds
//! the returned guard while it lasts; a display asks for the [`longest`] wait in progress and
//! shows it ("waiting for … (12 s)") once it passes a threshold. The list is process-wide, so
//! sources need no handle to a display, and the engine never learns who is waiting for what.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static NEXT: AtomicU64 = AtomicU64::new(1);
static WAITS: Mutex<Vec<(u64, String, Instant)>> = Mutex::new(Vec::new());

/// A wait in progress; it ends when dropped.
#[must_use = "the wait ends when the guard is dropped"]
#[derive(Debug)]
pub struct Waiting {
    id: u64,
}

/// Registers a wait for `what` ("ARM: POST …/deallocate to finish", "the SAS host after
/// HTTP 503"), from now until the guard is dropped.
pub fn waiting(what: impl Into<String>) -> Waiting {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    WAITS.lock().unwrap_or_else(|e| e.into_inner()).push((
        id,
        crate::redact::redact(&what.into()).into_owned(),
        Instant::now(),
    ));
    Waiting { id }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _, _)| *id != self.id);
    }
}

/// The wait in progress that started first, and how long it has lasted; with `n` others.
pub fn longest() -> Option<(String, Duration, usize)> {
    let waits = WAITS.lock().unwrap_or_else(|e| e.into_inner());
    let first = waits.iter().min_by_key(|(_, _, at)| *at)?;
    Some((first.1.clone(), first.2.elapsed(), waits.len() - 1))
}

/// `waiting for X (12 s)`, or `waiting for X (12 s) and 3 other waits`, when the longest
/// wait has lasted at least `threshold`.
pub fn status_line(threshold: Duration) -> Option<String> {
    let (what, lasted, others) = longest()?;
    if lasted < threshold {
        return None;
    }
    let mut line = format!("waiting for {what} ({} s)", lasted.as_secs());
    if others > 0 {
        line.push_str(&format!(" and {others} other wait(s)"));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_show_while_held_and_past_the_threshold() {
        // The list is process-wide: other tests may wait too, so look for ours.
        let ours = |needle: &str| {
            WAITS
                .lock()
                .unwrap()
                .iter()
                .any(|(_, what, _)| what.contains(needle))
        };
        let guard = waiting("the test's resource?sig=SECRET");
        assert!(ours("the test's resource"));
        assert!(!ours("SECRET"), "waits are redacted");
        assert!(status_line(Duration::ZERO)
            .unwrap()
            .starts_with("waiting for "));
        assert!(status_line(Duration::from_secs(3600)).is_none());
        drop(guard);
        assert!(!ours("the test's resource"));
    }
}
