//! The ARM api-versions we speak, in one place. Bump them here and re-run the model tests.

/// `Microsoft.Compute/virtualMachines` (ComputeRP).
pub const COMPUTE: &str = "2025-04-01";
/// `Microsoft.Compute/disks` and snapshots (DiskRP).
pub const DISKS: &str = "2025-01-02";
