//! SIGINT (Ctrl-C) and SIGTERM: stop the work cleanly instead of dying mid-write. Both are
//! handled the same way, through tokio's Unix signal streams: a service manager's SIGTERM
//! keeps the resume journals and leaves records exactly as a Ctrl-C does.

use std::future::Future;

use hyper2kvm_core::{Error, ErrorKind};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGINT and SIGTERM, as one stream of signal names.
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Starts listening (from now on the signals no longer kill the process).
    pub fn new() -> Result<Signals, Error> {
        let int = signal(SignalKind::interrupt())
            .map_err(|e| Error::io("installing the SIGINT handler", e))?;
        let term = signal(SignalKind::terminate())
            .map_err(|e| Error::io("installing the SIGTERM handler", e))?;
        Ok(Signals { int, term })
    }

    /// The next signal: `"SIGINT"` or `"SIGTERM"`.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Runs `work`, a run that stops by itself once `interrupt` is pulled. The first SIGINT or
/// SIGTERM pulls it (after `on_first` says so): the run undoes what it started, writes its
/// records and ends. A second signal drops the run at once (after `on_second`): `None`.
pub async fn run_interruptible<T>(
    work: impl Future<Output = T>,
    interrupt: &hyper2kvm::migrate::Interrupt,
    on_first: impl Fn(&str),
    on_second: impl Fn(&str),
) -> Result<Option<T>, Error> {
    let mut signals = Signals::new()?;
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => Ok(Some(result)),
        name = signals.next() => {
            interrupt.interrupt(name);
            on_first(name);
            tokio::select! {
                result = &mut work => Ok(Some(result)),
                again = signals.next() => {
                    on_second(again);
                    Ok(None)
                }
            }
        }
    }
}

/// Runs `work` until it ends or the process receives SIGINT or SIGTERM. On a signal `work` is
/// dropped, which runs its cleanups (partial files removed, grants revoked), and a
/// `Cancelled` error is returned.
pub async fn until_interrupted<T>(
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let mut signals = Signals::new()?;
    tokio::select! {
        result = work => result,
        name = signals.next() => Err(Error::new(
            ErrorKind::Cancelled,
            match name {
                "SIGINT" => "interrupted (Ctrl-C)",
                _ => "terminated (SIGTERM)",
            },
        )),
    }
}
