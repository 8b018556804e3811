//! Long waits on the progress line: every second, the longest wait in progress (a
//! `Retry-After`, a long-running Azure operation, a backoff; registered by the libraries in
//! [`hyper2kvm_core::waits`]) goes to a sink once it has lasted [`SHOW_AFTER`]; `None` when
//! nothing waits that long. The display decides how to show it (a status line under the
//! bars, or a plain line now and then).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper2kvm_core::waits;

/// Waits shorter than this are not worth a line.
pub const SHOW_AFTER: Duration = Duration::from_secs(5);

/// Receives the status line ("waiting for … (7 s)") or `None`.
pub type WaitSink = Arc<dyn Fn(Option<String>) + Send + Sync>;

/// Polls the waits every second until aborted.
pub fn spawn(sink: WaitSink) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            sink(waits::status_line(SHOW_AFTER));
        }
    })
}

/// Plain lines on stderr, where there is no terminal status line to put them on (a bar
/// drawn as lines) or no progress display at all (`--list-only`, `--dry-run`, `plan`, whose
/// stdout is their output): a line when a wait starts to show, then every 10 s while it
/// lasts.
pub fn lines() -> WaitSink {
    let last: Mutex<Option<(String, Instant)>> = Mutex::new(None);
    Arc::new(move |status: Option<String>| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        match status {
            Some(text) => {
                let what = text.split(" (").next().unwrap_or("").to_string();
                let due = last.as_ref().is_none_or(|(seen, at)| {
                    *seen != what || at.elapsed() >= Duration::from_secs(10)
                });
                if due {
                    eprintln!("hyper2kvm: {text}");
                    *last = Some((what, Instant::now()));
                }
            }
            None => *last = None,
        }
    })
}
