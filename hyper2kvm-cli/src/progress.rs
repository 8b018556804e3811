//! Progress display: an indicatif bar on a terminal; plain periodic lines otherwise (logs,
//! CI, scripts), so a long conversion still shows signs of life; nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper2kvm_core::{Progress, ProgressFn};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::units::human_bytes;

/// How often a plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(10);

/// Progress output for one conversion.
pub enum Bar {
    /// A live bar on a terminal.
    Terminal(ProgressBar),
    /// A line on stderr every [`LINE_EVERY`].
    Lines(Arc<Mutex<Lines>>),
    /// Nothing.
    Quiet,
}

/// State of the plain-line printer.
pub struct Lines {
    label: String,
    started: Instant,
    last: Instant,
}

impl Bar {
    /// Progress for `label`: a bar if stderr is a terminal, lines if not, nothing if `quiet`.
    pub fn new(label: &str, quiet: bool) -> Bar {
        if quiet {
            return Bar::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            let now = Instant::now();
            return Bar::Lines(Arc::new(Mutex::new(Lines {
                label: label.to_string(),
                started: now,
                last: now,
            })));
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
            Bar::Lines(lines) => {
                let lines = lines.clone();
                Arc::new(move |p: Progress| {
                    let mut l = lines.lock().unwrap();
                    if l.last.elapsed() >= LINE_EVERY && p.done < p.total {
                        l.last = Instant::now();
                        eprintln!("{}", plain_line(&l.label, p, l.started.elapsed()));
                    }
                })
            }
            Bar::Quiet => Arc::new(|_| {}),
        }
    }

    /// Removes the bar from the screen.
    pub fn finish(&self) {
        if let Bar::Terminal(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// `out.qcow2: 512 MiB of 1.00 GiB (50%), 85.3 MiB/s, about 6 s left`.
fn plain_line(label: &str, p: Progress, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = p.done as f64 / secs;
    let percent = (p.done * 100).checked_div(p.total).unwrap_or(100);
    let left = if rate > 0.0 {
        format!(", about {:.0} s left", (p.total - p.done) as f64 / rate)
    } else {
        String::new()
    };
    format!(
        "{label}: {} of {} ({percent}%), {}/s{left}",
        human_bytes(p.done),
        human_bytes(p.total),
        human_bytes(rate as u64),
    )
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
        let line = plain_line("out.qcow2", p, Duration::from_secs(4));
        assert_eq!(
            line,
            "out.qcow2: 512 MiB of 1.00 GiB (50%), 128 MiB/s, about 4 s left"
        );
    }
}
