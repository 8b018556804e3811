//! The KubeVirt output held to KubeVirt's and CDI's published OpenAPI schemas (see
//! `tests/schemas/README.md` for where they come from), read back from the YAML we write.
//!
//! The check is strict the way `kubectl apply` is by default (server-side field validation
//! `Strict`): a field the schema does not know is an error, as are a wrong type, a value
//! outside an `enum` and a missing required field.

use hyper2kvm_core::kubevirt::{manifests, to_yaml, ImageSource, KubevirtDisk, KubevirtSpec};
use hyper2kvm_core::libvirt::{CpuMode, DomainDisk, DomainSpec, NetworkAttachment};
use hyper2kvm_core::{Firmware, OsType, OutputFormat};
use serde_json::{json, Map, Value};

struct Schema {
    root: String,
    definitions: Map<String, Value>,
}

impl Schema {
    fn load(file: &str) -> Schema {
        let path = format!("{}/tests/schemas/{file}", env!("CARGO_MANIFEST_DIR"));
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        Schema {
            root: doc["root"].as_str().unwrap().to_string(),
            definitions: doc["definitions"].as_object().unwrap().clone(),
        }
    }

    /// Every violation of the root definition by `value`, with its JSON path.
    fn violations(&self, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let root = json!({ "$ref": format!("#/definitions/{}", self.root) });
        self.check(&root, value, "$", &mut errors);
        errors
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.rsplit('/').next().unwrap();
            let def = self
                .definitions
                .get(name)
                .unwrap_or_else(|| panic!("{at}: {reference} is not in the schema file"));
            return self.check(def, value, at, errors);
        }
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
            errors.push(format!(
                "{at}: expected {}, got {value}",
                types.join(" or ")
            ));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                errors.push(format!("{at}: {value} is not one of {allowed:?}"));
            }
        }
        match value {
            Value::Object(fields) => {
                let properties = schema.get("properties").and_then(Value::as_object);
                for required in schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !fields.contains_key(required) {
                        errors.push(format!("{at}: required field {required} missing"));
                    }
                }
                for (key, v) in fields {
                    let at = format!("{at}.{key}");
                    match (
                        properties.and_then(|p| p.get(key)),
                        schema.get("additionalProperties"),
                    ) {
                        (Some(property), _) => self.check(property, v, &at, errors),
                        (None, Some(Value::Bool(true))) => {}
                        (None, Some(additional @ Value::Object(_))) => {
                            self.check(additional, v, &at, errors)
                        }
                        // An object schema without properties (e.g. `{}` for a marker such
                        // as `masquerade`) takes no fields either.
                        (None, _) => errors.push(format!("{at}: unknown field")),
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, v) in items.iter().enumerate() {
                        self.check(item, v, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            _ => {}
        }
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => panic!("schema type {t} not handled by this checker"),
    }
}

fn domain(os_type: OsType, firmware: Firmware, secure: bool, disks: usize) -> DomainSpec {
    DomainSpec {
        name: "App_Server.01".into(),
        description: "Migrated from Azure by hyper2kvm (run h2k-test): rg-app/App_Server.01".into(),
        vcpus: 8,
        memory_mib: 32768,
        firmware,
        os_type,
        cpu: CpuMode::Custom("Skylake-Server-IBRS".into()),
        disks: (0..disks)
            .map(|i| DomainDisk {
                path: format!("/out/app/{i}.qcow2").into(),
                format: OutputFormat::Qcow2,
            })
            .collect(),
        network: NetworkAttachment::Bridge("br0".into()),
        nics: 2,
        secure_boot: secure,
        tpm: secure,
    }
}

fn kubevirt(disks: usize, http: bool) -> KubevirtSpec {
    KubevirtSpec {
        disks: (0..disks)
            .map(|i| KubevirtDisk {
                volume: if i == 0 {
                    "os".into()
                } else {
                    format!("lun{}", i - 1)
                },
                virtual_size: (i as u64 + 1) * (32 << 30) + 512,
                source: if http {
                    ImageSource::Http(format!("http://images.local/app/{i}.qcow2"))
                } else {
                    ImageSource::Upload
                },
            })
            .collect(),
        namespace: Some("migrated".into()),
        storage_class: Some("fast".into()),
    }
}

/// The YAML we write, read back by a YAML parser, each document checked.
fn check_all(docs: &[Value]) {
    let yaml = to_yaml(docs);
    let vm_schema = Schema::load("kubevirt-virtualmachine.json");
    let dv_schema = Schema::load("cdi-datavolume.json");
    let mut seen = 0;
    for (text, original) in yaml.split("---\n").skip(1).zip(docs) {
        let parsed: Value = serde_saphyr::from_str(text)
            .unwrap_or_else(|e| panic!("our YAML does not parse: {e}\n{text}"));
        assert_eq!(&parsed, original, "the YAML does not read back as written");
        let schema = match parsed["kind"].as_str() {
            Some("VirtualMachine") => &vm_schema,
            Some("DataVolume") => &dv_schema,
            other => panic!("unexpected kind {other:?}"),
        };
        let errors = schema.violations(&parsed);
        assert!(
            errors.is_empty(),
            "{}:\n{}\n{text}",
            parsed["kind"],
            errors.join("\n")
        );
        seen += 1;
    }
    assert_eq!(seen, docs.len());
}

#[test]
fn windows_trusted_launch_with_data_disks_over_http_validates() {
    let docs = manifests(
        &domain(OsType::Windows, Firmware::Uefi, true, 3),
        &kubevirt(3, true),
    );
    assert_eq!(docs.len(), 4);
    check_all(&docs);
}

#[test]
fn linux_bios_for_upload_validates() {
    let docs = manifests(
        &domain(OsType::Linux, Firmware::Bios, false, 1),
        &kubevirt(1, false),
    );
    check_all(&docs);
}

#[test]
fn the_checker_rejects_what_kubernetes_would() {
    let docs = manifests(
        &domain(OsType::Linux, Firmware::Uefi, false, 1),
        &kubevirt(1, true),
    );
    let schema = Schema::load("kubevirt-virtualmachine.json");
    let mut vm = docs[1].clone();
    assert!(schema.violations(&vm).is_empty());
    // A misspelt field, a wrong type, a missing required field.
    vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["bootorder"] = json!(1);
    vm["spec"]["template"]["spec"]["domain"]["cpu"]["cores"] = json!("8");
    vm["spec"]["template"]["spec"]["domain"]
        .as_object_mut()
        .unwrap()
        .remove("devices");
    let errors = schema.violations(&vm);
    assert!(
        errors.iter().any(|e| e.contains("required field devices")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("cpu.cores: expected integer")),
        "{errors:?}"
    );

    let mut vm = docs[1].clone();
    vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["bootorder"] = json!(1);
    let errors = schema.violations(&vm);
    assert!(
        errors
            .iter()
            .any(|e| e.ends_with("disks[0].bootorder: unknown field")),
        "{errors:?}"
    );
}
