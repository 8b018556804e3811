//! `/etc/default/grub`: the kernel command line grub's configuration is generated from.
//!
//! Azure's images put `rootdelay=300` on `GRUB_CMDLINE_LINUX` (next to
//! `console=ttyS0,115200n8 earlyprintk=ttyS0,115200`, which stay: KVM has a serial port too,
//! and libvirt's console reads it). `rootdelay` makes the initramfs wait up to five minutes
//! for a root device that does not show up, so a guest with a problem hangs instead of failing;
//! it is removed from `GRUB_CMDLINE_LINUX` and `GRUB_CMDLINE_LINUX_DEFAULT`. The file is shell:
//! values may be double-quoted, single-quoted or bare.

use super::{lines_with_endings, Edit};

/// Where grub's defaults live (Debian, Ubuntu, RHEL, SUSE alike).
pub const PATH: &str = "/etc/default/grub";

/// Kernel parameters that must go: `rootdelay=N`.
fn unwanted(param: &str) -> bool {
    param.starts_with("rootdelay=") || param == "rootdelay"
}

/// Removes `rootdelay=…` from the command-line variables; `None` if there is none.
pub fn fix(text: &str) -> Option<Edit> {
    let mut out = String::with_capacity(text.len());
    let mut changes = Vec::new();
    for line in lines_with_endings(text) {
        match fix_line(line) {
            Some((new_line, change)) => {
                out.push_str(&new_line);
                changes.push(change);
            }
            None => out.push_str(line),
        }
    }
    (!changes.is_empty()).then_some(Edit { text: out, changes })
}

fn fix_line(line: &str) -> Option<(String, String)> {
    let (body, ending) = match line.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (line, ""),
    };
    let assignment = body.trim_start();
    let assignment = assignment.strip_prefix("export ").unwrap_or(assignment);
    let (name, value) = assignment.split_once('=')?;
    if name != "GRUB_CMDLINE_LINUX" && name != "GRUB_CMDLINE_LINUX_DEFAULT" {
        return None;
    }
    let (quote, inner, after) = match value.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let end = value[1..].find(q)? + 1;
            (Some(q), &value[1..end], &value[end + 1..])
        }
        _ => {
            let end = value.find(char::is_whitespace).unwrap_or(value.len());
            (None, &value[..end], &value[end..])
        }
    };
    let removed: Vec<&str> = inner.split_whitespace().filter(|p| unwanted(p)).collect();
    if removed.is_empty() {
        return None;
    }
    let kept: Vec<&str> = inner.split_whitespace().filter(|p| !unwanted(p)).collect();
    let kept = kept.join(" ");
    let prefix = &body[..body.len() - value.len()];
    let new_value = match quote {
        Some(q) => format!("{q}{kept}{q}"),
        // A bare value cannot hold spaces; kept has at most one parameter left.
        None => kept,
    };
    Some((
        format!("{prefix}{new_value}{after}{ending}"),
        format!("{PATH}: removed {} from {name}", removed.join(" ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // An Ubuntu 22.04 Azure image's /etc/default/grub plus the drop-in Azure images carry
    // (/etc/default/grub.d/50-cloudimg-settings.cfg uses the same variable).
    const UBUNTU_AZURE: &str = r#"# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
GRUB_DEFAULT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"
GRUB_CMDLINE_LINUX="console=tty1 console=ttyS0,115200n8 earlyprintk=ttyS0,115200 rootdelay=300"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
"#;

    #[test]
    fn removes_rootdelay_and_keeps_the_serial_console() {
        let edit = fix(UBUNTU_AZURE).unwrap();
        assert!(edit.text.contains(
            "\nGRUB_CMDLINE_LINUX=\"console=tty1 console=ttyS0,115200n8 earlyprintk=ttyS0,115200\"\n"
        ));
        assert_eq!(
            edit.text.len(),
            UBUNTU_AZURE.len() - " rootdelay=300".len(),
            "only the parameter is gone"
        );
        assert_eq!(
            edit.changes,
            ["/etc/default/grub: removed rootdelay=300 from GRUB_CMDLINE_LINUX"]
        );
        assert_eq!(fix(&edit.text), None, "idempotent");
    }

    #[test]
    fn rhel_style_single_quotes_and_default_variable() {
        // RHEL 8 Azure images: crashkernel and the Azure console settings, single-quoted here.
        let text = "GRUB_CMDLINE_LINUX_DEFAULT='rootdelay=300 quiet'\nGRUB_CMDLINE_LINUX='crashkernel=auto console=tty1 console=ttyS0 earlyprintk=ttyS0 rootdelay=300 scsi_mod.use_blk_mq=y'\n";
        let edit = fix(text).unwrap();
        assert_eq!(
            edit.text,
            "GRUB_CMDLINE_LINUX_DEFAULT='quiet'\nGRUB_CMDLINE_LINUX='crashkernel=auto console=tty1 console=ttyS0 earlyprintk=ttyS0 scsi_mod.use_blk_mq=y'\n"
        );
        assert_eq!(edit.changes.len(), 2);
    }

    #[test]
    fn bare_value_and_trailing_comment() {
        let edit = fix("GRUB_CMDLINE_LINUX=rootdelay=300 # Azure\n").unwrap();
        assert_eq!(edit.text, "GRUB_CMDLINE_LINUX= # Azure\n");
    }

    #[test]
    fn commented_lines_and_other_variables_stay() {
        let text = "#GRUB_CMDLINE_LINUX=\"rootdelay=300\"\nGRUB_CMDLINE_XEN=\"rootdelay=300\"\n";
        assert_eq!(fix(text), None);
    }
}
