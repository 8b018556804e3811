//! Logs on stderr through `tracing`: what the libraries log (retries with their waits,
//! cleanup failures, records that cannot be written) and nothing else by default.
//!
//! * Level: warnings by default; `-v` adds info (every retry, the steps), `-vv` debug,
//!   `-vvv` trace. `RUST_LOG`, when set, replaces all of that (`RUST_LOG=hyper2kvm_azure=debug`).
//! * Format: text lines, or JSON objects with `--log-format json`.
//! * Progress bars: while a run draws bars, log lines are written between redraws
//!   ([`set_progress`]), so neither garbles the other.

use std::io::Write;
use std::sync::Mutex;

use indicatif::MultiProgress;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

/// Our crates, which `-v` makes more talkative; dependencies stay at `warn` until `-vvv`.
const OURS: [&str; 8] = [
    "hyper2kvm",
    "hyper2kvm_cli",
    "hyper2kvm_core",
    "hyper2kvm_azure",
    "hyper2kvm_migrate",
    "hyper2kvm_local",
    "hyper2kvm_guest",
    "hyper2kvm_sim",
];

/// The filter for `-v` given `verbose` times.
pub fn filter_for(verbose: u8) -> String {
    let ours = match verbose {
        0 => return "warn".into(),
        1 => "info",
        2 => "debug",
        _ => return "trace".into(),
    };
    let mut filter = String::from("warn");
    for krate in OURS {
        filter.push_str(&format!(",{krate}={ours}"));
    }
    filter
}

static PROGRESS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// While `Some`, log lines are printed through the bars (`MultiProgress::suspend`).
pub fn set_progress(progress: Option<MultiProgress>) {
    *PROGRESS.lock().unwrap_or_else(|e| e.into_inner()) = progress;
}

/// One log event's bytes, written to stderr when dropped (once the event is formatted).
pub struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        // The libraries' messages are redacted where they are made; this is the last line
        // of defence for a SAS signature in a log line.
        let text = hyper2kvm_core::redact(&String::from_utf8_lossy(&self.0)).into_owned();
        let write = || {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        };
        let progress = PROGRESS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match progress {
            Some(m) => m.suspend(write),
            None => write(),
        }
    }
}

struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter(Vec::new())
    }
}

/// Installs the subscriber; `RUST_LOG` wins over `verbose` when it is set and valid.
pub fn init(verbose: u8, format: LogFormat) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("hyper2kvm: warning: RUST_LOG={v:?} is not a valid filter ({e}); using -v");
            EnvFilter::new(filter_for(verbose))
        }),
        _ => EnvFilter::new(filter_for(verbose)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.with_target(verbose >= 2).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_raises_our_crates_only_until_trace() {
        assert_eq!(filter_for(0), "warn");
        let v = filter_for(1);
        assert!(
            v.starts_with("warn,") && v.contains("hyper2kvm_azure=info"),
            "{v}"
        );
        assert!(filter_for(2).contains("hyper2kvm_migrate=debug"));
        assert_eq!(filter_for(3), "trace");
        for f in [filter_for(0), filter_for(1), filter_for(2), filter_for(3)] {
            EnvFilter::try_new(&f).expect("a valid filter");
        }
    }
}
