//! Ctrl-C and SIGTERM: stop the work cleanly instead of dying mid-write.

use std::future::Future;

use hyper2kvm_core::{Error, ErrorKind};

/// Runs `work` until it ends or the process receives SIGINT or SIGTERM. On a signal `work` is
/// dropped, which runs its cleanups (partial files removed, grants revoked), and a
/// `Cancelled` error is returned.
pub async fn until_interrupted<T>(
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("installing the SIGTERM handler", e))?;
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Err(Error::new(ErrorKind::Cancelled, "interrupted (Ctrl-C)")),
        _ = term.recv() => Err(Error::new(ErrorKind::Cancelled, "terminated (SIGTERM)")),
    }
}
