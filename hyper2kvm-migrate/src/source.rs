//! What a run reads through: the traits of `hyper2kvm-core` a source implements, bundled.
//!
//! Only [`VmSource`] is required. A source without [`PowerControl`] cannot migrate VMs that
//! must be stopped or deallocated first, one without [`PointInTimeCopies`] none that must be
//! snapshotted (those VMs fail with a message saying so); without a [`HardwareCatalog`] the
//! domain gets a default size and the report says to adjust it. Warm migration needs
//! [`IncrementalCopies`].

use std::sync::Arc;

use hyper2kvm_core::{
    HardwareCatalog, IncrementalCopies, PointInTimeCopies, PowerControl, VmSource,
};

/// The traits a [`Migration`](crate::Migration) runs on. Cheap to clone.
#[derive(Clone)]
pub struct Source {
    pub(crate) vms: Arc<dyn VmSource>,
    pub(crate) power: Option<Arc<dyn PowerControl>>,
    pub(crate) copies: Option<Arc<dyn PointInTimeCopies>>,
    pub(crate) hardware: Option<Arc<dyn HardwareCatalog>>,
    pub(crate) incremental: Option<Arc<dyn IncrementalCopies>>,
}

impl Source {
    /// A source of VMs and disks, nothing more.
    pub fn new(vms: Arc<dyn VmSource>) -> Self {
        Source {
            vms,
            power: None,
            copies: None,
            hardware: None,
            incremental: None,
        }
    }

    /// A source that implements every trait (as `hyper2kvm-azure`'s `AzureSource` does).
    pub fn full<S>(source: Arc<S>) -> Self
    where
        S: VmSource + PowerControl + PointInTimeCopies + HardwareCatalog + 'static,
    {
        Source {
            vms: source.clone(),
            power: Some(source.clone()),
            copies: Some(source.clone()),
            hardware: Some(source),
            incremental: None,
        }
    }

    /// Stops, deallocates and starts VMs through `power`.
    pub fn with_power(mut self, power: Arc<dyn PowerControl>) -> Self {
        self.power = Some(power);
        self
    }

    /// Takes point-in-time copies of disks through `copies`.
    pub fn with_copies(mut self, copies: Arc<dyn PointInTimeCopies>) -> Self {
        self.copies = Some(copies);
        self
    }

    /// Takes incremental copies of disks and their deltas through `incremental`, for warm
    /// migration (`sync`, `cutover`).
    pub fn with_incremental(mut self, incremental: Arc<dyn IncrementalCopies>) -> Self {
        self.incremental = Some(incremental);
        self
    }

    /// Looks up vCPUs, memory and firmware through `hardware`.
    pub fn with_hardware(mut self, hardware: Arc<dyn HardwareCatalog>) -> Self {
        self.hardware = Some(hardware);
        self
    }

    /// The source of VMs and disks.
    pub fn vms(&self) -> &Arc<dyn VmSource> {
        &self.vms
    }
}
