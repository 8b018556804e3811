//! KubeVirt manifests for migrated VMs: the Kubernetes counterpart of [`crate::libvirt`].
//!
//! [`manifests`] turns the same [`DomainSpec`] the libvirt domain is made from, plus the size
//! and place of each image, into the objects that run the VM on KubeVirt:
//!
//! * one CDI `DataVolume` (`cdi.kubevirt.io/v1beta1`) per disk, which imports the image
//!   either over HTTP (`source.http.url`, from a URL base the user serves the output folder
//!   under) or waits for `virtctl image-upload` (`source.upload`); its storage request is the
//!   disk's virtual size (CDI adds the file system overhead itself);
//! * one `VirtualMachine` (`kubevirt.io/v1`) with `runStrategy: Halted` (nothing starts before
//!   the user looked at it), its vCPUs and memory, BIOS or EFI (with secure boot and SMM where
//!   the source had it), an emulated TPM where it had a vTPM, every disk on virtio in boot
//!   order (the OS disk first, boot order 1), one virtio NIC on the pod network with
//!   masquerade, and the serial console; Windows guests get the Hyper-V enlightenments and
//!   the timers of KubeVirt's common Windows templates.
//!
//! [`to_yaml`] writes them as one multi-document YAML file for `kubectl apply -f`. Kubernetes
//! names are DNS-1123 labels; [`object_name`] makes one from any VM name. Tests hold the
//! output to KubeVirt's and CDI's published OpenAPI schemas.

use serde_json::{json, Map, Value};

use crate::libvirt::{CpuMode, DomainSpec};
use crate::model::{Firmware, OsType};

/// Where a `DataVolume` gets its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// CDI downloads it from this URL.
    Http(String),
    /// The user uploads it with `virtctl image-upload dv NAME --no-create --image-path=…`.
    Upload,
}

/// One disk of the VM, in boot order (the OS disk first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubevirtDisk {
    /// The volume's name inside the VM: `os`, or `lun<N>` for a data disk.
    pub volume: String,
    /// The disk's virtual size in bytes.
    pub virtual_size: u64,
    /// Where CDI gets the image.
    pub source: ImageSource,
}

/// What [`manifests`] needs besides the [`DomainSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubevirtSpec {
    /// The disks, in the order of `DomainSpec::disks`.
    pub disks: Vec<KubevirtDisk>,
    /// The namespace to put every object in; the one `kubectl` uses when absent.
    pub namespace: Option<String>,
    /// The storage class of the DataVolumes; the cluster's default when absent.
    pub storage_class: Option<String>,
}

/// The Kubernetes name of a VM called `name`: a DNS-1123 label (lowercase letters, digits
/// and `-`, starting and ending with a letter or digit, at most 63 characters, leaving room
/// for a `-lun63` suffix). A name that had to change gets a short hash of the original, so
/// `Web_01` and `web.01` stay two VMs.
pub fn object_name(name: &str) -> String {
    const MAX: usize = 63 - "-lun63".len();
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed == name && trimmed.len() <= MAX {
        return trimmed.to_string();
    }
    let hash = format!("{:05x}", fnv1a(name.as_bytes()) & 0xf_ffff);
    let keep = MAX - hash.len() - 1;
    let base: String = trimmed.chars().take(keep).collect();
    let base = base.trim_end_matches('-');
    if base.is_empty() {
        format!("vm-{hash}")
    } else {
        format!("{base}-{hash}")
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A storage quantity for `bytes`: whole GiB or MiB where exact, else MiB rounded up.
pub fn quantity(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes > 0 && bytes % GIB == 0 {
        format!("{}Gi", bytes / GIB)
    } else {
        format!("{}Mi", bytes.div_ceil(MIB).max(1))
    }
}

/// The `DataVolume`s (one per disk, in order) and then the `VirtualMachine`.
pub fn manifests(domain: &DomainSpec, spec: &KubevirtSpec) -> Vec<Value> {
    let name = object_name(&domain.name);
    let metadata = |object: &str, annotations: Value| {
        let mut m = Map::new();
        m.insert("name".into(), json!(object));
        if let Some(ns) = &spec.namespace {
            m.insert("namespace".into(), json!(ns));
        }
        m.insert(
            "labels".into(),
            json!({ "app.kubernetes.io/managed-by": "hyper2kvm", "hyper2kvm.io/vm": name }),
        );
        m.insert("annotations".into(), annotations);
        Value::Object(m)
    };
    let mut docs = Vec::new();
    let mut disks = Vec::new();
    let mut volumes = Vec::new();
    for (i, disk) in spec.disks.iter().enumerate() {
        let dv = format!("{name}-{}", disk.volume);
        let source = match &disk.source {
            ImageSource::Http(url) => json!({ "http": { "url": url } }),
            ImageSource::Upload => json!({ "upload": {} }),
        };
        let mut storage =
            json!({ "resources": { "requests": { "storage": quantity(disk.virtual_size) } } });
        if let Some(class) = &spec.storage_class {
            storage["storageClassName"] = json!(class);
        }
        docs.push(json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1",
            "kind": "DataVolume",
            "metadata": metadata(&dv, json!({ "hyper2kvm.io/virtual-size": disk.virtual_size.to_string() })),
            "spec": { "source": source, "storage": storage },
        }));
        let mut d = json!({ "name": disk.volume, "disk": { "bus": "virtio" } });
        if i == 0 {
            d["bootOrder"] = json!(1);
        }
        disks.push(d);
        volumes.push(json!({ "name": disk.volume, "dataVolume": { "name": dv } }));
    }

    let secure_boot = domain.secure_boot && domain.firmware == Firmware::Uefi;
    let firmware = match domain.firmware {
        Firmware::Uefi => json!({ "bootloader": { "efi": { "secureBoot": secure_boot } } }),
        Firmware::Bios => json!({ "bootloader": { "bios": {} } }),
    };
    let mut features = json!({ "acpi": {}, "apic": {} });
    let mut clock = json!({
        "utc": {},
        "timer": { "rtc": { "tickPolicy": "catchup" }, "pit": { "tickPolicy": "delay" }, "hpet": { "present": false } },
    });
    if domain.os_type == OsType::Windows {
        features["hyperv"] = json!({
            "relaxed": {}, "vapic": {}, "vpindex": {}, "synic": {}, "synictimer": {},
            "spinlocks": { "spinlocks": 8191 },
        });
        clock["timer"]["hyperv"] = json!({});
    }
    if secure_boot {
        // OVMF's secure-boot builds need SMM to protect their variable store.
        features["smm"] = json!({ "enabled": true });
    }
    let cpu_model = match &domain.cpu {
        CpuMode::HostPassthrough => "host-passthrough".to_string(),
        CpuMode::HostModel => "host-model".to_string(),
        CpuMode::Custom(model) => model.clone(),
    };
    let mut devices = json!({
        "disks": disks,
        "interfaces": [{ "name": "default", "masquerade": {}, "model": "virtio" }],
        "autoattachSerialConsole": true,
        "rng": {},
    });
    if domain.tpm {
        devices["tpm"] = json!({});
    }
    let vm = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": metadata(&name, json!({ "hyper2kvm.io/description": domain.description, "hyper2kvm.io/source-name": domain.name })),
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": { "labels": { "kubevirt.io/domain": name } },
                "spec": {
                    "domain": {
                        "cpu": { "cores": domain.vcpus.max(1), "sockets": 1, "threads": 1, "model": cpu_model },
                        "memory": { "guest": format!("{}Mi", domain.memory_mib) },
                        "firmware": firmware,
                        "features": features,
                        "clock": clock,
                        "devices": devices,
                    },
                    "networks": [{ "name": "default", "pod": {} }],
                    "volumes": volumes,
                },
            },
        },
    });
    docs.push(vm);
    docs
}

/// `docs` as one YAML stream (`---` between documents), block style, every string quoted.
pub fn to_yaml(docs: &[Value]) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        yaml_value(doc, 0, &mut out);
    }
    out
}

fn yaml_value(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                out.push_str(&" ".repeat(indent));
                out.push_str(&yaml_key(k));
                out.push(':');
                yaml_nested(v, indent + 2, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for v in a {
                out.push_str(&" ".repeat(indent));
                out.push('-');
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        // The first key on the dash's line, the rest aligned under it.
                        let mut first = String::new();
                        yaml_value(v, indent + 2, &mut first);
                        out.push(' ');
                        out.push_str(&first[indent + 2..]);
                    }
                    _ => yaml_nested(v, indent + 2, out),
                }
            }
        }
        scalar => {
            out.push_str(&" ".repeat(indent));
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

/// After `key:` or `-`: a scalar (or empty collection) on the same line, else the block below.
fn yaml_nested(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            yaml_value(v, indent, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            yaml_value(v, indent, out);
        }
        scalar => {
            out.push(' ');
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        // A JSON string is a valid YAML double-quoted scalar.
        Value::String(s) => Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

fn yaml_key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'));
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libvirt::{DomainDisk, NetworkAttachment};
    use crate::pipeline::OutputFormat;

    fn domain(os: OsType, firmware: Firmware, secure_boot: bool) -> DomainSpec {
        DomainSpec {
            name: "Web_01".into(),
            description: "Migrated from Azure: \"rg-web\"".into(),
            vcpus: 4,
            memory_mib: 16384,
            firmware,
            os_type: os,
            cpu: CpuMode::HostPassthrough,
            disks: vec![
                DomainDisk {
                    path: "/out/Web_01/os.qcow2".into(),
                    format: OutputFormat::Qcow2,
                },
                DomainDisk {
                    path: "/out/Web_01/lun0.qcow2".into(),
                    format: OutputFormat::Qcow2,
                },
            ],
            network: NetworkAttachment::Network("default".into()),
            nics: 1,
            secure_boot,
            tpm: secure_boot,
        }
    }

    fn spec() -> KubevirtSpec {
        KubevirtSpec {
            disks: vec![
                KubevirtDisk {
                    volume: "os".into(),
                    virtual_size: 30 << 30,
                    source: ImageSource::Http("https://images.example/Web_01/os.qcow2".into()),
                },
                KubevirtDisk {
                    volume: "lun0".into(),
                    virtual_size: (1 << 30) + 1,
                    source: ImageSource::Upload,
                },
            ],
            namespace: Some("migrated".into()),
            storage_class: None,
        }
    }

    #[test]
    fn names_are_dns_labels_and_changed_ones_stay_distinct() {
        assert_eq!(object_name("web-01"), "web-01");
        // docs/kubevirt.md's example.
        assert_eq!(object_name("App_Server.01"), "app-server-01-1f233");
        let a = object_name("Web_01");
        let b = object_name("web.01");
        assert!(
            a.starts_with("web-01-") && b.starts_with("web-01-"),
            "{a} {b}"
        );
        assert_ne!(a, b);
        let long = object_name(&"x".repeat(80));
        assert!(long.len() <= 57, "{long}");
        assert_eq!(
            object_name("___"),
            format!("vm-{}", &object_name("___")[3..])
        );
        for n in [a, b, long, object_name("-a-")] {
            assert!(n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            assert!(!n.starts_with('-') && !n.ends_with('-'), "{n}");
        }
    }

    #[test]
    fn quantities_round_up_to_mib() {
        assert_eq!(quantity(30 << 30), "30Gi");
        assert_eq!(quantity(512 << 20), "512Mi");
        assert_eq!(quantity((1 << 30) + 1), "1025Mi");
        assert_eq!(quantity(1), "1Mi");
    }

    #[test]
    fn a_windows_trusted_launch_vm_gets_efi_secure_boot_smm_tpm_and_hyperv() {
        let docs = manifests(&domain(OsType::Windows, Firmware::Uefi, true), &spec());
        assert_eq!(docs.len(), 3);
        let vm = &docs[2];
        assert_eq!(vm["kind"], "VirtualMachine");
        let d = &vm["spec"]["template"]["spec"]["domain"];
        assert_eq!(d["firmware"]["bootloader"]["efi"]["secureBoot"], true);
        assert_eq!(d["features"]["smm"]["enabled"], true);
        assert!(d["features"]["hyperv"]["relaxed"].is_object());
        assert!(d["devices"]["tpm"].is_object());
        assert_eq!(d["cpu"]["cores"], 4);
        assert_eq!(d["memory"]["guest"], "16384Mi");
        assert_eq!(d["devices"]["disks"][0]["bootOrder"], 1);
        assert!(d["devices"]["disks"][1].get("bootOrder").is_none());
        let volumes = &vm["spec"]["template"]["spec"]["volumes"];
        let name = object_name("Web_01");
        assert_eq!(volumes[0]["dataVolume"]["name"], format!("{name}-os"));
        assert_eq!(docs[0]["metadata"]["name"], format!("{name}-os"));
        assert_eq!(
            docs[0]["spec"]["source"]["http"]["url"],
            "https://images.example/Web_01/os.qcow2"
        );
        assert!(docs[1]["spec"]["source"]["upload"].is_object());
        assert_eq!(
            docs[1]["spec"]["storage"]["resources"]["requests"]["storage"],
            "1025Mi"
        );
        assert_eq!(docs[1]["metadata"]["namespace"], "migrated");
    }

    #[test]
    fn a_bios_linux_vm_gets_bios_without_smm_or_tpm() {
        let docs = manifests(&domain(OsType::Linux, Firmware::Bios, true), &spec());
        let d = &docs[2]["spec"]["template"]["spec"]["domain"];
        assert!(d["firmware"]["bootloader"]["bios"].is_object());
        assert!(d["features"].get("smm").is_none());
        assert!(d["features"].get("hyperv").is_none());
    }

    #[test]
    fn yaml_is_block_style_with_quoted_strings() {
        let yaml = to_yaml(&[json!({
            "a": { "b": [ { "c": 1, "d": "x: y" }, "e" ], "f": {}, "g": [] },
            "kubevirt.io/domain": "n",
        })]);
        assert_eq!(
            yaml,
            "---\na:\n  b:\n    - c: 1\n      d: \"x: y\"\n    - \"e\"\n  f: {}\n  g: []\nkubevirt.io/domain: \"n\"\n"
        );
    }
}
