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

/// The kernel parameters a `GRUB_CMDLINE_LINUX` / `GRUB_CMDLINE_LINUX_DEFAULT` assignment sets
/// (the last assignment of each wins, as in the shell).
pub fn cmdline_params(text: &str) -> Vec<String> {
    let mut linux = Vec::new();
    let mut default = Vec::new();
    for line in text.lines() {
        if let Some((name, inner)) = assignment(line) {
            let params = inner.split_whitespace().map(String::from).collect();
            match name {
                "GRUB_CMDLINE_LINUX" => linux = params,
                _ => default = params,
            }
        }
    }
    linux.extend(default);
    linux
}

/// The variable and the unquoted value of a command-line assignment on `line`.
fn assignment(line: &str) -> Option<(&'static str, &str)> {
    let body = line.trim_start();
    let body = body.strip_prefix("export ").unwrap_or(body);
    let (name, value) = body.split_once('=')?;
    let name = match name {
        "GRUB_CMDLINE_LINUX" => "GRUB_CMDLINE_LINUX",
        "GRUB_CMDLINE_LINUX_DEFAULT" => "GRUB_CMDLINE_LINUX_DEFAULT",
        _ => return None,
    };
    let inner = match value.chars().next() {
        Some(q @ ('"' | '\'')) => &value[1..1 + value[1..].find(q)?],
        _ => value.split_whitespace().next().unwrap_or(""),
    };
    Some((name, inner))
}

/// Adds `param` (e.g. `net.ifnames=0`) to the last `GRUB_CMDLINE_LINUX` assignment, or appends
/// one; `None` if the command line has it already.
pub fn add_param(text: &str, param: &str) -> Option<Edit> {
    if cmdline_params(text).iter().any(|p| p == param) {
        return None;
    }
    let last = text
        .lines()
        .enumerate()
        .filter(|(_, l)| matches!(assignment(l), Some(("GRUB_CMDLINE_LINUX", _))))
        .map(|(i, _)| i)
        .last();
    let change = format!("{PATH}: added {param} to GRUB_CMDLINE_LINUX");
    let mut out = String::with_capacity(text.len() + param.len() + 32);
    match last {
        Some(index) => {
            for (i, line) in lines_with_endings(text).enumerate() {
                if i != index {
                    out.push_str(line);
                    continue;
                }
                let (body, ending) = match line.strip_suffix('\n') {
                    Some(body) => (body, "\n"),
                    None => (line, ""),
                };
                let eq = body.find('=')? + 1;
                let value = &body[eq..];
                let new_value = match value.chars().next() {
                    Some(q @ ('"' | '\'')) => {
                        let end = value[1..].find(q)? + 1;
                        let inner = value[1..end].trim_end();
                        let sep = if inner.is_empty() { "" } else { " " };
                        format!("{q}{inner}{sep}{param}{q}{}", &value[end + 1..])
                    }
                    _ if value.trim().is_empty() => format!("\"{param}\""),
                    _ => format!("\"{} {param}\"", value.trim()),
                };
                out.push_str(&body[..eq]);
                out.push_str(&new_value);
                out.push_str(ending);
            }
        }
        None => {
            out.push_str(text);
            super::push_line(&mut out, &format!("GRUB_CMDLINE_LINUX=\"{param}\""));
        }
    }
    Some(Edit {
        text: out,
        changes: vec![change],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_a_parameter_once() {
        let text = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"console=tty1 console=ttyS0,115200n8\"\n";
        let edit = add_param(text, "net.ifnames=0").unwrap();
        assert_eq!(
            edit.text,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"console=tty1 console=ttyS0,115200n8 net.ifnames=0\"\n"
        );
        assert_eq!(
            edit.changes,
            ["/etc/default/grub: added net.ifnames=0 to GRUB_CMDLINE_LINUX"]
        );
        assert_eq!(add_param(&edit.text, "net.ifnames=0"), None, "idempotent");
        assert!(cmdline_params(&edit.text).contains(&"quiet".to_string()));
        // Empty, bare and missing assignments.
        assert_eq!(
            add_param("GRUB_CMDLINE_LINUX=\"\"\n", "net.ifnames=0")
                .unwrap()
                .text,
            "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\n"
        );
        assert_eq!(
            add_param("GRUB_CMDLINE_LINUX=quiet\n", "net.ifnames=0")
                .unwrap()
                .text,
            "GRUB_CMDLINE_LINUX=\"quiet net.ifnames=0\"\n"
        );
        assert_eq!(
            add_param("GRUB_TIMEOUT=1", "net.ifnames=0").unwrap().text,
            "GRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX=\"net.ifnames=0\"\n"
        );
        // Already there, in the _DEFAULT variable.
        assert_eq!(
            add_param(
                "GRUB_CMDLINE_LINUX_DEFAULT='net.ifnames=0 quiet'\n",
                "net.ifnames=0"
            ),
            None
        );
    }

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
