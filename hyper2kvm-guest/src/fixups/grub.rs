//! The kernel command line: `rootdelay=` out, grub's configuration regenerated.

use super::{FixUp, Plan};
use crate::edits::grub_default;
use crate::guestfs::GuestFs;
use crate::inspect::{DistroFamily, Inspection};
use crate::Result;

/// The grub fix-up.
pub struct GrubCmdline;

impl FixUp for GrubCmdline {
    fn name(&self) -> &'static str {
        "grub"
    }
    fn description(&self) -> &'static str {
        "kernel command line: rootdelay removed (console=ttyS0 kept), grub config regenerated (also for net.ifnames=0)"
    }
    fn plan(&self, guest: &mut dyn GuestFs, inspection: &Inspection) -> Result<Plan> {
        let mut plan = Plan::default();
        let mut regenerate = false;
        if let Some(edit) = guest
            .read(grub_default::PATH)?
            .as_deref()
            .and_then(grub_default::fix)
        {
            plan.changes.extend(edit.changes);
            plan.write(grub_default::PATH, edit.text);
            regenerate = true;
        }
        // A configuration generated before (or without) the defaults' edit still has it, or
        // lacks net.ifnames=0 that the interface-names fix-up put in the defaults.
        let kernel_names = guest.read(grub_default::PATH)?.is_some_and(|text| {
            grub_default::cmdline_params(&text)
                .iter()
                .any(|p| p == "net.ifnames=0")
        });
        // With BLS (RHEL 8+) the kernel's options live in /boot/loader/entries, which grubby
        // edits; grub.cfg never carries them, so it says nothing about net.ifnames there.
        let bls = !guest.list("/boot/loader/entries")?.is_empty();
        for path in &inspection.boot.grub_configs {
            if guest.read(path)?.is_some_and(|cfg| {
                cfg.contains("rootdelay=")
                    || (kernel_names && !bls && !cfg.contains("net.ifnames=0"))
            }) {
                regenerate = true;
            }
        }
        if inspection.boot.grub_configs.is_empty() {
            // Whether or not the defaults needed another edit: a parameter only in the
            // defaults reaches no kernel.
            if kernel_names && !bls {
                // The NIC is named eth0 only if the kernel gets net.ifnames=0, and nothing
                // will hand it over: the configuration that names eth0 would not apply.
                plan.blockers.push(
                    "net.ifnames=0 is in /etc/default/grub, but no grub.cfg was found to \
                     regenerate (looked for /boot/grub/grub.cfg and /boot/grub2/grub.cfg): the \
                     kernel will not get it, and the NIC will not be named eth0 on KVM; add it \
                     to the boot loader's kernel command line"
                        .into(),
                );
            } else if regenerate {
                plan.notes.push(
                    "no grub.cfg found: the boot loader's configuration was not regenerated".into(),
                );
            }
            return Ok(plan);
        }
        if !regenerate {
            return Ok(plan);
        }
        // RHEL 8+ keeps each kernel's arguments in BLS entries; grubby edits them.
        if guest.exists("/usr/sbin/grubby")? {
            plan.run("grubby --update-kernel=ALL --remove-args=rootdelay");
            plan.changes
                .push("grubby --update-kernel=ALL --remove-args=rootdelay".into());
        }
        let debian_tools =
            inspection.family == DistroFamily::Debian && guest.exists("/usr/sbin/update-grub")?;
        if debian_tools {
            plan.run("update-grub");
            plan.changes.push("update-grub".into());
        } else {
            let mkconfig = if guest.exists("/usr/sbin/grub2-mkconfig")? {
                "grub2-mkconfig"
            } else {
                "grub-mkconfig"
            };
            for path in &inspection.boot.grub_configs {
                let command = format!("{mkconfig} -o {path}");
                plan.changes.push(command.clone());
                plan.run(command);
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixups::testing::{debian, rhel};
    use crate::fixups::{apply, Action};
    use crate::guestfs::memory::MemoryGuest;

    const AZURE_DEFAULTS: &str = "GRUB_CMDLINE_LINUX=\"console=tty1 console=ttyS0,115200n8 earlyprintk=ttyS0,115200 rootdelay=300\"\n";

    #[test]
    fn debian_edits_defaults_and_runs_update_grub() {
        let mut guest = MemoryGuest::with(&[
            ("/etc/default/grub", AZURE_DEFAULTS),
            (
                "/boot/grub/grub.cfg",
                "linux /boot/vmlinuz root=UUID=x ro console=ttyS0 rootdelay=300\n",
            ),
            ("/usr/sbin/update-grub", ""),
        ]);
        let plan = GrubCmdline.plan(&mut guest, &debian()).unwrap();
        assert_eq!(
            plan.actions.last(),
            Some(&Action::Run {
                command: "update-grub".into()
            })
        );
        apply(&mut guest, &plan).unwrap();
        assert!(!guest.files["/etc/default/grub"].contains("rootdelay"));
        assert!(guest.files["/etc/default/grub"].contains("console=ttyS0,115200n8"));
    }

    #[test]
    fn rhel_uses_grubby_and_grub2_mkconfig() {
        let mut guest = MemoryGuest::with(&[
            ("/etc/default/grub", AZURE_DEFAULTS),
            ("/usr/sbin/grubby", ""),
            ("/usr/sbin/grub2-mkconfig", ""),
        ]);
        let plan = GrubCmdline.plan(&mut guest, &rhel()).unwrap();
        let commands: Vec<&str> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Run { command } => Some(command.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            commands,
            [
                "grubby --update-kernel=ALL --remove-args=rootdelay",
                "grub2-mkconfig -o /boot/grub2/grub.cfg"
            ]
        );
    }

    #[test]
    fn a_stale_grub_cfg_alone_triggers_regeneration() {
        let mut guest = MemoryGuest::with(&[
            (
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX=\"console=ttyS0\"\n",
            ),
            ("/boot/grub/grub.cfg", "linux /vmlinuz rootdelay=300\n"),
            ("/usr/sbin/update-grub", ""),
        ]);
        let plan = GrubCmdline.plan(&mut guest, &debian()).unwrap();
        assert_eq!(plan.changes, ["update-grub"]);
    }

    #[test]
    fn net_ifnames_regenerates_grub_cfg_but_not_with_bls() {
        let defaults = "GRUB_CMDLINE_LINUX=\"console=ttyS0 net.ifnames=0\"\n";
        let mut guest = MemoryGuest::with(&[
            ("/etc/default/grub", defaults),
            ("/boot/grub/grub.cfg", "linux /vmlinuz console=ttyS0\n"),
            ("/usr/sbin/update-grub", ""),
        ]);
        assert_eq!(
            GrubCmdline.plan(&mut guest, &debian()).unwrap().changes,
            ["update-grub"]
        );
        let mut bls = MemoryGuest::with(&[
            ("/etc/default/grub", defaults),
            ("/boot/grub2/grub.cfg", "blscfg\n"),
            (
                "/boot/loader/entries/x.conf",
                "options root=/dev/sda4 net.ifnames=0\n",
            ),
            ("/usr/sbin/grub2-mkconfig", ""),
        ]);
        assert!(!GrubCmdline.plan(&mut bls, &rhel()).unwrap().is_needed());
    }

    /// net.ifnames=0 in the defaults with no grub.cfg to carry it blocks, also when the
    /// defaults need no other edit (a run that already put it there).
    #[test]
    fn net_ifnames_without_a_grub_cfg_blocks() {
        let mut inspection = debian();
        inspection.boot.grub_configs.clear();
        let mut guest = MemoryGuest::with(&[(
            "/etc/default/grub",
            "GRUB_CMDLINE_LINUX=\"console=ttyS0 net.ifnames=0\"\n",
        )]);
        let plan = GrubCmdline.plan(&mut guest, &inspection).unwrap();
        assert!(!plan.is_needed());
        assert_eq!(plan.blockers.len(), 1, "{plan:?}");
        assert!(plan.blockers[0].starts_with("net.ifnames=0 is in /etc/default/grub"));
    }

    #[test]
    fn clean_guest_needs_nothing() {
        let mut guest = MemoryGuest::with(&[
            (
                "/etc/default/grub",
                "GRUB_CMDLINE_LINUX=\"console=ttyS0\"\n",
            ),
            ("/boot/grub/grub.cfg", "linux /vmlinuz console=ttyS0\n"),
        ]);
        assert!(!GrubCmdline.plan(&mut guest, &debian()).unwrap().is_needed());
    }
}
