//! Guards for what a run must undo even when it fails or is cancelled: a snapshot to delete
//! ([`CopyGuard`]) and a VM to start again ([`StartGuard`]). Dropped while armed, each hands
//! its work to [`Cleanups`], which the program waits for before it exits.

use std::sync::Arc;

use hyper2kvm_core::{Cleanups, PointInTimeCopies, PowerControl, Result, Vm};

/// Deletes a point-in-time copy, in the background if dropped while armed.
pub(crate) struct CopyGuard {
    copies: Arc<dyn PointInTimeCopies>,
    pub(crate) id: String,
    cleanups: Cleanups,
    armed: bool,
}

impl CopyGuard {
    pub(crate) fn new(copies: &Arc<dyn PointInTimeCopies>, id: &str, cleanups: &Cleanups) -> Self {
        CopyGuard {
            copies: copies.clone(),
            id: id.to_string(),
            cleanups: cleanups.clone(),
            armed: true,
        }
    }

    /// Leaves the copy in place; returns its id.
    pub(crate) fn keep(mut self) -> String {
        self.armed = false;
        self.id.clone()
    }

    /// Deletes the copy now.
    pub(crate) async fn delete(mut self) -> Result<()> {
        let outcome = self.copies.delete(&self.id).await;
        // Disarmed only now: dropped mid-way, the guard still deletes in the background.
        self.armed = false;
        outcome
    }
}

impl Drop for CopyGuard {
    fn drop(&mut self) {
        if self.armed {
            let (copies, id) = (self.copies.clone(), self.id.clone());
            self.cleanups
                .spawn(Box::pin(async move { copies.delete(&id).await }));
        }
    }
}

/// Starts a VM the run stopped or deallocated, in the background if dropped while armed
/// (also while the start itself was under way).
pub(crate) struct StartGuard {
    power: Arc<dyn PowerControl>,
    vm: Vm,
    cleanups: Cleanups,
    armed: bool,
}

impl StartGuard {
    pub(crate) fn new(power: &Arc<dyn PowerControl>, vm: &Vm, cleanups: &Cleanups) -> Self {
        StartGuard {
            power: power.clone(),
            vm: vm.clone(),
            cleanups: cleanups.clone(),
            armed: true,
        }
    }

    /// Starts the VM now.
    pub(crate) async fn start(mut self) -> Result<()> {
        let outcome = self.power.start(&self.vm).await;
        // Disarmed only now: dropped mid-way, the guard still starts the VM.
        self.armed = false;
        outcome
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if self.armed {
            let (power, vm) = (self.power.clone(), self.vm.clone());
            self.cleanups
                .spawn(Box::pin(async move { power.start(&vm).await }));
        }
    }
}
