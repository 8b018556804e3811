//! Stopping a run so that it still says what happened.
//!
//! Dropping a run's future stops it at once; its guards still revoke grants, delete
//! snapshots and start VMs in the background, but nothing is left to write the records. An
//! [`Interrupt`] asks the run to stop instead: every VM's work is dropped where it is (the
//! same cleanups start), then the run waits for the cleanups, records what they did
//! (`deleted_at`, power operations, `cleanup_errors`), marks what was cut short
//! `interrupted`, writes `report.json` and `run-<id>.json`, and returns its summary.

use std::sync::Arc;

use tokio::sync::watch;

/// A handle that interrupts a run (clone it into a signal handler).
#[derive(Clone)]
pub struct Interrupt {
    tx: Arc<watch::Sender<Option<String>>>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt::new()
    }
}

impl Interrupt {
    /// A handle nobody has pulled yet.
    pub fn new() -> Self {
        Interrupt {
            tx: Arc::new(watch::channel(None).0),
        }
    }

    /// Interrupts the run, saying why (`SIGTERM`, `SIGINT`, …); later calls change nothing.
    pub fn interrupt(&self, why: &str) {
        self.tx.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(why.to_string());
                true
            } else {
                false
            }
        });
    }

    /// Why the run was interrupted, if it was.
    pub fn reason(&self) -> Option<String> {
        self.tx.borrow().clone()
    }

    /// Returns once the run is interrupted.
    pub async fn interrupted(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`, so this only ends by an interruption.
        let _ = rx.wait_for(Option::is_some).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_waiters_wake() {
        let i = Interrupt::new();
        assert_eq!(i.reason(), None);
        let waiter = tokio::spawn({
            let i = i.clone();
            async move { i.interrupted().await }
        });
        i.interrupt("SIGTERM");
        i.interrupt("SIGINT");
        waiter.await.unwrap();
        assert_eq!(i.reason().as_deref(), Some("SIGTERM"));
        // Already interrupted: returns at once.
        i.interrupted().await;
    }
}
