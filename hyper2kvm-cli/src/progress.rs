//! Progress display: an indicatif bar on a terminal; plain lines otherwise (logs, CI, scripts),
//! printed by a clock rather than by progress events, so that a download stalled on a slow
//! network or a long wait for Azure still shows signs of life; nothing with `--quiet`.
//!
//! A plain line starts with the UTC time: `[12:00:01] out.qcow2: 512 MiB of 1.00 GiB (50%),
//! 85.3 MiB/s, ETA 6s`. They come every 10 seconds, or every `HYPER2KVM_PROGRESS_INTERVAL`
//! seconds (1–3600).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper2kvm_core::{Progress, ProgressFn};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::units::{human_bytes, human_duration};

/// How often a plain progress line is printed unless the environment says otherwise.
const LINE_EVERY: Duration = Duration::from_secs(10);

/// The variable that sets the plain lines' interval, in seconds.
pub const INTERVAL_VAR: &str = "HYPER2KVM_PROGRESS_INTERVAL";

/// The interval of plain lines: [`INTERVAL_VAR`] when it holds 1–3600, else 10 s (a bad value
/// is said once, not fatal: progress is a courtesy).
pub fn line_every() -> Duration {
    let Ok(text) = std::env::var(INTERVAL_VAR) else {
        return LINE_EVERY;
    };
    match text.trim().parse::<u64>() {
        Ok(secs @ 1..=3600) => Duration::from_secs(secs),
        _ => {
            eprintln!(
                "hyper2kvm: warning: {INTERVAL_VAR} must be 1–3600 (seconds), got {text:?}; printing progress every {} s",
                LINE_EVERY.as_secs()
            );
            LINE_EVERY
        }
    }
}

/// `[12:00:01]`: the UTC time of day, the prefix of plain lines.
pub fn clock() -> String {
    clock_at(SystemTime::now())
}

fn clock_at(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!(
        "[{:02}:{:02}:{:02}]",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Calls a function at a fixed interval on a thread of its own until stopped (or dropped).
pub struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Calls `tick` every `every`, the first time after `every`.
    pub fn start(every: Duration, mut tick: impl FnMut() + Send + 'static) -> Ticker {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                tick();
            }
        });
        Ticker {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops the ticks; none runs after this returns.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The recent transfer rate: bytes over the last [`Rate::WINDOW`], so that a slow start (a
/// snapshot being made, a grant) does not drag the estimate for the whole run.
#[derive(Debug, Default)]
pub struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    const WINDOW: Duration = Duration::from_secs(30);

    /// Records that `done` bytes were done at `now`.
    pub fn sample(&mut self, now: Instant, done: u64) {
        self.samples.push_back((now, done));
        // Keep one sample older than the window, so the window is always spanned.
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= Self::WINDOW {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the window, once there are two samples apart in time.
    pub fn per_sec(&self) -> Option<f64> {
        let (t0, d0) = *self.samples.front()?;
        let (t1, d1) = *self.samples.back()?;
        let secs = t1.duration_since(t0).as_secs_f64();
        (secs > 0.0).then(|| d1.saturating_sub(d0) as f64 / secs)
    }
}

/// Progress output for one conversion.
pub enum Bar {
    /// A live bar on a terminal.
    Terminal(ProgressBar),
    /// A line on stderr every [`line_every`].
    Lines {
        /// The latest progress.
        state: Arc<Mutex<Option<Progress>>>,
        /// Prints the lines.
        ticker: Mutex<Ticker>,
    },
    /// Nothing.
    Quiet,
}

impl Bar {
    /// Progress for `label`: a bar if stderr is a terminal, lines if not, nothing if `quiet`.
    pub fn new(label: &str, quiet: bool) -> Bar {
        if quiet {
            return Bar::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            let state: Arc<Mutex<Option<Progress>>> = Arc::new(Mutex::new(None));
            let (seen, label) = (state.clone(), label.to_string());
            let mut rate = Rate::default();
            let ticker = Ticker::start(line_every(), move || {
                let p = *seen.lock().unwrap();
                let line = match p {
                    Some(p) => {
                        rate.sample(Instant::now(), p.done);
                        plain_line(&label, p, rate.per_sec())
                    }
                    None => format!("{label}: opening the source"),
                };
                eprintln!("{} {line}", clock());
            });
            return Bar::Lines {
                state,
                ticker: Mutex::new(ticker),
            };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Bar::Terminal(bar)
    }

    /// The callback the pipeline calls.
    pub fn callback(&self) -> ProgressFn {
        match self {
            Bar::Terminal(bar) => {
                let bar = bar.clone();
                Arc::new(move |p: Progress| {
                    bar.set_length(p.total);
                    bar.set_position(p.done);
                })
            }
            Bar::Lines { state, .. } => {
                let state = state.clone();
                Arc::new(move |p: Progress| {
                    *state.lock().unwrap() = Some(p);
                })
            }
            Bar::Quiet => Arc::new(|_| {}),
        }
    }

    /// Where long waits go (a `Retry-After`, a backoff): on the bar's message on a terminal,
    /// else a plain line when the wait starts to show and every 10 s while it lasts.
    pub fn wait_sink(&self, label: &str) -> crate::waiting::WaitSink {
        match self {
            Bar::Terminal(bar) => {
                let (bar, label) = (bar.clone(), label.to_string());
                Arc::new(move |status: Option<String>| match status {
                    Some(text) => bar.set_message(format!("{label}: {text}")),
                    None => bar.set_message(label.clone()),
                })
            }
            Bar::Lines { .. } => crate::waiting::lines(),
            Bar::Quiet => Arc::new(|_| {}),
        }
    }

    /// Removes the bar from the screen, or stops the lines.
    pub fn finish(&self) {
        match self {
            Bar::Terminal(bar) => bar.finish_and_clear(),
            Bar::Lines { ticker, .. } => ticker.lock().unwrap().stop(),
            Bar::Quiet => {}
        }
    }
}

/// `out.qcow2: 512 MiB of 1.00 GiB (50%), 128 MiB/s, ETA 4s`.
fn plain_line(label: &str, p: Progress, rate: Option<f64>) -> String {
    let percent = (p.done * 100).checked_div(p.total).unwrap_or(100);
    let mut line = format!(
        "{label}: {} of {} ({percent}%)",
        human_bytes(p.done),
        human_bytes(p.total)
    );
    if let Some(rate) = rate {
        line.push_str(&format!(", {}/s", human_bytes(rate as u64)));
        if rate > 0.0 {
            let left = p.total.saturating_sub(p.done) as f64 / rate;
            line.push_str(&format!(", ETA {}", human_duration(left.ceil() as u64)));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_reads_well() {
        let p = Progress {
            done: 512 << 20,
            total: 1 << 30,
        };
        let line = plain_line("out.qcow2", p, Some((128 << 20) as f64));
        assert_eq!(
            line,
            "out.qcow2: 512 MiB of 1.00 GiB (50%), 128 MiB/s, ETA 4s"
        );
        assert_eq!(
            plain_line("out.qcow2", p, None),
            "out.qcow2: 512 MiB of 1.00 GiB (50%)"
        );
    }

    #[test]
    fn clock_is_utc_time_of_day() {
        let t = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 12 * 3600 + 61);
        assert_eq!(clock_at(t), "[12:01:01]");
    }

    #[test]
    fn rate_follows_the_recent_window() {
        let t0 = Instant::now();
        let mut r = Rate::default();
        assert_eq!(r.per_sec(), None);
        r.sample(t0, 0);
        assert_eq!(r.per_sec(), None);
        // A slow minute, then 100 bytes/s: the window forgets the slow start.
        r.sample(t0 + Duration::from_secs(60), 60);
        for s in 1..=40u64 {
            r.sample(t0 + Duration::from_secs(60 + s), 60 + 100 * s);
        }
        let rate = r.per_sec().unwrap();
        assert!((rate - 100.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn ticker_ticks_until_stopped() {
        let count = Arc::new(Mutex::new(0));
        let c = count.clone();
        let mut t = Ticker::start(Duration::from_millis(10), move || *c.lock().unwrap() += 1);
        std::thread::sleep(Duration::from_millis(100));
        t.stop();
        let n = *count.lock().unwrap();
        assert!(n >= 2, "{n}");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(*count.lock().unwrap(), n, "no tick after stop");
    }
}
