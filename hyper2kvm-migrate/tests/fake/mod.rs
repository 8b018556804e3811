//! An in-memory cloud for the engine's tests: VMs with disks held in memory, read grants,
//! snapshots and power states it keeps count of, and faults on demand. It implements every
//! source trait of `hyper2kvm-core`, so the engine runs on it exactly as on Azure, without
//! HTTP.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use hyper2kvm_core::{
    AlignedBuf, BoxFuture, Cleanups, Disk, DiskReader, DiskRole, Error, ErrorKind, ExportedDisk,
    Firmware, Hardware, HardwareCatalog, Origin, OsType, PointInTimeCopies, PowerControl,
    PowerState, Result, Vm, VmSource,
};

pub const MIB: u64 = 1 << 20;

/// What the fake cloud holds, shared by the source and the tests that look inside.
#[derive(Default)]
pub struct State {
    pub vms: Vec<Vm>,
    /// Disk and snapshot contents by id.
    pub contents: HashMap<String, Arc<Vec<u8>>>,
    /// Snapshots alive, by id.
    pub snapshots: BTreeSet<String>,
    /// Snapshots ever created.
    pub snapshots_created: usize,
    /// Read grants open, by id (a disk or a snapshot).
    pub grants: BTreeMap<String, usize>,
    /// Power operations, in order: `(vm, "stop" | "deallocate" | "start")`.
    pub power_log: Vec<(String, &'static str)>,
    /// Reads of disks (or their snapshots) whose id contains one of these fail.
    pub failing_reads: BTreeSet<String>,
    /// Reads never finish (to cancel a run mid-way).
    pub hang_reads: bool,
    /// Snapshot creates fail.
    pub failing_snapshots: bool,
    /// Starts fail.
    pub failing_starts: bool,
    /// Listing fails with this kind.
    pub failing_list: Option<ErrorKind>,
}

/// The fake cloud; clones share the state.
#[derive(Clone)]
pub struct FakeCloud {
    pub state: Arc<Mutex<State>>,
    cleanups: Cleanups,
}

/// Deterministic disk content: `size` bytes, with data in the first MiB and the last 64 KiB
/// (the rest zeros), from `seed`.
pub fn content(size: u64, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut fill = |r: Range<usize>| {
        for b in &mut v[r] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    };
    fill(0..MIB as usize);
    fill(size as usize - 65536..size as usize);
    v
}

impl FakeCloud {
    pub fn new(cleanups: &Cleanups) -> Self {
        FakeCloud {
            state: Arc::default(),
            cleanups: cleanups.clone(),
        }
    }

    /// Adds a VM with an OS disk and `data` data disks (LUN 0, 1, …) of 4 MiB each.
    pub fn add_vm(&self, name: &str, power: PowerState, data: u32) {
        let mut st = self.state.lock().unwrap();
        let seed = st.vms.len() as u64 * 10;
        let mut disks = Vec::new();
        for j in 0..=data {
            let (role, disk_name) = match j {
                0 => (DiskRole::Os, format!("{name}_os")),
                _ => (
                    DiskRole::Data { lun: j - 1 },
                    format!("{name}_data{}", j - 1),
                ),
            };
            let id = format!("/fake/rg/disks/{disk_name}");
            st.contents.insert(
                id.clone(),
                Arc::new(content(4 * MIB, seed + u64::from(j) + 1)),
            );
            disks.push(Disk {
                id,
                name: disk_name,
                role,
                size_bytes: 4 * MIB,
            });
        }
        st.vms.push(Vm {
            id: format!("/fake/rg/vms/{name}"),
            name: name.to_string(),
            subscription: "sub".into(),
            resource_group: "rg".into(),
            location: "lab".into(),
            vm_size: "fake.small".into(),
            tags: BTreeMap::new(),
            power_state: power,
            os_type: OsType::Linux,
            firmware: Firmware::Uefi,
            disks,
            security: Default::default(),
            nics: None,
        });
    }

    pub fn disk_id(&self, vm: &str, index: usize) -> String {
        let st = self.state.lock().unwrap();
        st.vms.iter().find(|v| v.name == vm).unwrap().disks[index]
            .id
            .clone()
    }

    pub fn power_state(&self, vm: &str) -> PowerState {
        let st = self.state.lock().unwrap();
        st.vms
            .iter()
            .find(|v| v.name == vm)
            .unwrap()
            .power_state
            .clone()
    }

    pub fn open_grants(&self) -> usize {
        self.state.lock().unwrap().grants.values().sum()
    }

    pub fn snapshots_alive(&self) -> usize {
        self.state.lock().unwrap().snapshots.len()
    }

    /// Writes the raw content of `id` to `path`, as the reference an image must match.
    pub fn write_reference(&self, id: &str, path: &std::path::Path) {
        let bytes = self.state.lock().unwrap().contents[id].clone();
        std::fs::write(path, &*bytes).unwrap();
    }

    fn set_power(&self, vm: &Vm, state: PowerState, op: &'static str) {
        let mut st = self.state.lock().unwrap();
        st.power_log.push((vm.name.clone(), op));
        if let Some(v) = st.vms.iter_mut().find(|v| v.id == vm.id) {
            v.power_state = state;
        }
    }
}

impl Origin for FakeCloud {
    fn platform(&self) -> &str {
        "FakeCloud"
    }
}

impl VmSource for FakeCloud {
    fn list_vms(&self) -> BoxFuture<'_, Result<Vec<Vm>>> {
        Box::pin(async move {
            let st = self.state.lock().unwrap();
            if let Some(kind) = st.failing_list {
                return Err(Error::wrap(
                    kind,
                    std::io::Error::other("the fake cloud says no"),
                ));
            }
            Ok(st.vms.clone())
        })
    }

    fn export_disk<'a>(
        &'a self,
        _vm: &'a Vm,
        disk: &'a Disk,
    ) -> BoxFuture<'a, Result<ExportedDisk>> {
        Box::pin(async move {
            let bytes = {
                let mut st = self.state.lock().unwrap();
                let bytes = st.contents.get(&disk.id).cloned().ok_or_else(|| {
                    Error::new(ErrorKind::NotFound, format!("{}: no such disk", disk.id))
                })?;
                *st.grants.entry(disk.id.clone()).or_default() += 1;
                bytes
            };
            let reader = MemReader {
                id: disk.id.clone(),
                bytes,
                state: self.state.clone(),
            };
            let (state, id) = (self.state.clone(), disk.id.clone());
            Ok(ExportedDisk::new(
                Arc::new(reader),
                self.cleanups.clone(),
                move || {
                    Box::pin(async move {
                        let mut st = state.lock().unwrap();
                        if let Some(n) = st.grants.get_mut(&id) {
                            *n -= 1;
                            if *n == 0 {
                                st.grants.remove(&id);
                            }
                        }
                        Ok(())
                    })
                },
            ))
        })
    }
}

impl PowerControl for FakeCloud {
    fn stop<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.set_power(vm, PowerState::Stopped, "stop");
            Ok(())
        })
    }

    fn deallocate<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.set_power(vm, PowerState::Deallocated, "deallocate");
            Ok(())
        })
    }

    fn start<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.state.lock().unwrap().failing_starts {
                return Err(Error::new(ErrorKind::Conflict, "start refused"));
            }
            self.set_power(vm, PowerState::Running, "start");
            Ok(())
        })
    }
}

impl PointInTimeCopies for FakeCloud {
    fn copy_id(&self, _vm: &Vm, _disk: &Disk, name: &str) -> String {
        format!("/fake/rg/snapshots/{name}")
    }

    fn create<'a>(
        &'a self,
        _vm: &'a Vm,
        disk: &'a Disk,
        id: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            assert_eq!(
                labels.get("created-by").map(String::as_str),
                Some("hyper2kvm")
            );
            let mut st = self.state.lock().unwrap();
            if st.failing_snapshots {
                return Err(Error::new(ErrorKind::Remote, "snapshot quota exceeded"));
            }
            let bytes = st.contents[&disk.id].clone();
            st.contents.insert(id.to_string(), bytes);
            st.snapshots.insert(id.to_string());
            st.snapshots_created += 1;
            Ok(())
        })
    }

    fn is_ready<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.state.lock().unwrap().snapshots.contains(id)) })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut st = self.state.lock().unwrap();
            // As Azure's: the grant on the snapshot is revoked first (a snapshot being
            // exported cannot be deleted).
            st.grants.remove(id);
            st.snapshots.remove(id);
            st.contents.remove(id);
            Ok(())
        })
    }
}

impl HardwareCatalog for FakeCloud {
    fn hardware<'a>(&'a self, vm: &'a Vm) -> BoxFuture<'a, Result<Hardware>> {
        Box::pin(async move { Ok(Hardware::new(3, 3072, vm.firmware)) })
    }
}

/// A disk in memory.
struct MemReader {
    id: String,
    bytes: Arc<Vec<u8>>,
    state: Arc<Mutex<State>>,
}

impl DiskReader for MemReader {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn describe(&self) -> String {
        format!("fake:{}", self.id)
    }

    fn allocated_ranges(&self) -> BoxFuture<'_, Result<Vec<Range<u64>>>> {
        let size = self.size();
        Box::pin(async move { Ok(std::iter::once(0..size).collect()) })
    }

    fn read_at(&self, offset: u64, mut buf: AlignedBuf) -> BoxFuture<'_, Result<AlignedBuf>> {
        Box::pin(async move {
            let (fail, hang) = {
                let st = self.state.lock().unwrap();
                (
                    st.failing_reads
                        .iter()
                        .any(|f| self.id.contains(f.as_str())),
                    st.hang_reads,
                )
            };
            if hang {
                std::future::pending::<()>().await;
            }
            if fail {
                return Err(Error::new(ErrorKind::Integrity, "checksum mismatch").at_offset(offset));
            }
            let start = offset as usize;
            let n = buf.len().min(self.bytes.len().saturating_sub(start));
            buf[..n].copy_from_slice(&self.bytes[start..start + n]);
            buf[n..].fill(0);
            Ok(buf)
        })
    }
}
