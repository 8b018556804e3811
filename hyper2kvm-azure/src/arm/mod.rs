//! Azure Resource Manager: the client ([`ArmClient`]), the api-versions we speak
//! ([`api_version`]), typed models of the answers ([`models`]), batched VM discovery
//! ([`discover`]) and the RBAC action behind each request ([`permissions`]).

pub mod api_version;
mod client;
mod discovery;
pub mod export;
pub mod models;
pub mod ops;
pub mod permissions;

pub use client::{ArmClient, ArmClientBuilder, PUBLIC_ARM_ENDPOINT};
pub use discovery::{discover, join_subscription};
pub use export::LroOptions;
pub use ops::{SnapshotInfo, VmSize};
