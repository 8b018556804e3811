/*!
hyper2kvm's Azure side: one pooled HTTP client, an Azure Resource Manager client with retries
and paging, credentials, and batched VM discovery that produces core's [`Vm`] model.

# Design

* **One client** ([`build_http_client`]): a single `reqwest` client (rustls with *ring*) for
  the process; ARM calls and token requests (azure_identity's credentials get it as their
  azure_core transport) share its connection pool.
* **Credentials** ([`ArmCredential`]): our chain over azure_identity 1.x — client secret from
  `AZURE_*` variables, workload identity, managed identity, Azure CLI — or none for the
  simulator. Secrets come from the environment only and are never printed.
* **Retries, in one place** ([`retry`]): 408, 429, 5xx, connection errors and timeouts are
  retried with exponential backoff and jitter; `Retry-After` comes first, capped.
* **Paging** ([`pagination`]): `nextLink`s are followed to the end, only to the first
  request's origin.
* **Models** ([`arm::models`]): serde structs of only the fields we read; unknown fields are
  ignored. api-versions are pinned in [`arm::api_version`].
* **Discovery** ([`arm::discover`]): per subscription, three paged list calls (VMs, VM
  statuses, disks) joined on lower-cased ids; filters ([`Selection`]) run client side; the
  result is sorted.

* **Export** ([`arm::export`], [`blob`], [`AzureSource`]): read grants with ARM's
  long-running-operation protocol, and [`PageBlobReader`], which reads only the written pages
  of an exported disk with MD5-checked ranged GETs, retries, and re-grants when a SAS
  expires. [`SasUrl`] never prints its query.
* **Migration sources**: [`AzureSource`] implements core's traits — [`VmSource`] (discovery,
  export), [`PowerControl`] ([`power`]), [`PointInTimeCopies`] ([`snapshots`]) and
  [`HardwareCatalog`] ([`hardware`]) — so the migration engine (`hyper2kvm-migrate`), which
  never names Azure, runs on it.

# Example

```no_run
use hyper2kvm_azure::{build_http_client, discover, ArmClient, ArmCredential, AuthMethod,
                      HttpOptions, Selection};

# #[tokio::main] async fn main() -> hyper2kvm_azure::Result<()> {
let http = build_http_client(&HttpOptions::default())?;
let credential = ArmCredential::from_env(AuthMethod::Default, &http)?;
let arm = ArmClient::builder(http).credential(credential).build()?;
let subscriptions = vec!["00000000-0000-0000-0000-000000000000".to_string()];
let vms = discover(&arm, &subscriptions, &Selection::default()).await?;
for vm in &vms {
    println!("{} {} {}", vm.resource_group, vm.name, vm.power_state);
}
println!("{} requests", arm.requests_sent());
# Ok(()) }
```

[`Vm`]: hyper2kvm_core::Vm
[`VmSource`]: hyper2kvm_core::VmSource
[`PowerControl`]: hyper2kvm_core::PowerControl
[`PointInTimeCopies`]: hyper2kvm_core::PointInTimeCopies
[`HardwareCatalog`]: hyper2kvm_core::HardwareCatalog
*/
#![deny(missing_docs)]

pub mod arm;
pub mod blob;
pub mod credential;
pub mod error;
pub mod hardware;
pub mod http;
pub mod pagination;
pub mod power;
pub mod retry;
pub mod sas;
pub mod selection;
pub mod snapshots;
pub mod source;

pub use arm::{discover, ArmClient, ArmClientBuilder, LroOptions, SnapshotInfo, VmSize};
pub use blob::{BlobOptions, PageBlobReader, Regrant};
pub use credential::{ArmCredential, AuthMethod};
pub use error::{Error, ErrorKind, Result};
pub use http::{build_http_client, install_crypto_provider, HttpOptions};
pub use retry::{BackoffConfig, Jitter, RetryConfig, SplitMix64};
pub use sas::SasUrl;
pub use selection::{glob_match, parse_tag_filter, Selection};
pub use source::{AzureSource, ExportOptions};
