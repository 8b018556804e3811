//! Progress display: an indicatif bar on a terminal, nothing otherwise.

use std::io::IsTerminal;
use std::sync::Arc;

use hyper2kvm_core::{Progress, ProgressFn};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar for one conversion, drawn on stderr when it is a terminal.
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar labelled `label`; hidden when `quiet` or stderr is not a terminal.
    pub fn new(label: &str, quiet: bool) -> Bar {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Bar { bar }
    }

    /// The callback the pipeline calls.
    pub fn callback(&self) -> ProgressFn {
        let bar = self.bar.clone();
        Arc::new(move |p: Progress| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        })
    }

    /// Removes the bar from the screen.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
