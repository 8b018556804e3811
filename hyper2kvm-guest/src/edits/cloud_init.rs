//! cloud-init's configuration: `/etc/cloud/cloud.cfg` and `/etc/cloud/cloud.cfg.d/*.cfg` (YAML).
//!
//! Two things tie an Azure image's cloud-init to Azure:
//!
//! * `datasource_list: [ Azure ]` (Ubuntu's `90_dpkg.cfg`, written by `dpkg-reconfigure
//!   cloud-init`; RHEL's `91-azure_datasource.cfg`). On KVM the Azure datasource waits for
//!   Azure's wire server and its metadata service. It becomes `[ NoCloud, None ]`: a NoCloud
//!   seed (a cidata ISO) still works, and without one cloud-init falls back to doing nothing.
//! * cloud-init renders the network from the datasource at every boot: on Azure, the netplan
//!   file matching the Hyper-V NIC by MAC. Writing `network: {config: disabled}` to
//!   `99-disable-network-config.cfg` (the file cloud-init's own header comment names) stops it
//!   from rewriting the network configuration that the fix-ups made.

use super::{lines_with_endings, Edit};

/// The file that disables cloud-init's network configuration.
pub const DISABLE_NETWORK_PATH: &str = "/etc/cloud/cloud.cfg.d/99-disable-network-config.cfg";

/// The content of [`DISABLE_NETWORK_PATH`].
pub const DISABLE_NETWORK: &str =
    "# Written by hyper2kvm: the network configuration is the guest's own since its migration\n\
# from Azure; cloud-init must not render one from a datasource.\n\
network: {config: disabled}\n";

/// The datasources a migrated guest uses.
pub const DATASOURCE_LIST: &str = "datasource_list: [ NoCloud, None ]";

/// Replaces a `datasource_list` that names Azure (flow `[ Azure ]` or block `- Azure` style)
/// with [`DATASOURCE_LIST`]; `None` if there is none.
pub fn replace_azure_datasource(text: &str) -> Option<Edit> {
    let mut out = String::with_capacity(text.len());
    let mut changes = Vec::new();
    let mut lines = lines_with_endings(text).peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line.strip_prefix("datasource_list:") else {
            out.push_str(line);
            continue;
        };
        let value = value.trim();
        let mut block_items = Vec::new();
        let old = if value.is_empty() {
            // Block style: the items follow as indented "- Name" lines.
            while let Some(next) = lines.peek() {
                let item = next.trim();
                if !(next.starts_with(' ') || next.starts_with('\t') || next.starts_with('-'))
                    || !item.starts_with('-')
                {
                    break;
                }
                block_items.push(*next);
                lines.next();
            }
            block_items
                .iter()
                .map(|l| l.trim().trim_start_matches('-').trim())
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            value
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let names_azure = old
            .split(',')
            .any(|name| name.trim().trim_matches(|c| c == '\'' || c == '"') == "Azure");
        if !names_azure {
            out.push_str(line);
            for item in block_items {
                out.push_str(item);
            }
            continue;
        }
        out.push_str(DATASOURCE_LIST);
        out.push('\n');
        changes.push(format!("datasource_list: [ {old} ] → [ NoCloud, None ]"));
    }
    (!changes.is_empty()).then_some(Edit { text: out, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ubuntu's /etc/cloud/cloud.cfg.d/90_dpkg.cfg on an Azure image.
    const UBUNTU_90_DPKG: &str =
        "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ Azure ]\n";

    #[test]
    fn replaces_the_azure_datasource() {
        let edit = replace_azure_datasource(UBUNTU_90_DPKG).unwrap();
        assert_eq!(
            edit.text,
            "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ NoCloud, None ]\n"
        );
        assert_eq!(
            edit.changes,
            ["datasource_list: [ Azure ] → [ NoCloud, None ]"]
        );
        assert_eq!(replace_azure_datasource(&edit.text), None, "idempotent");
    }

    #[test]
    fn block_style_list_and_following_keys() {
        // RHEL's 91-azure_datasource.cfg.
        let text =
            "datasource_list:\n  - Azure\ndatasource:\n  Azure:\n    apply_network_config: False\n";
        let edit = replace_azure_datasource(text).unwrap();
        assert_eq!(
            edit.text,
            "datasource_list: [ NoCloud, None ]\ndatasource:\n  Azure:\n    apply_network_config: False\n"
        );
    }

    #[test]
    fn a_list_without_azure_is_left_alone() {
        assert_eq!(
            replace_azure_datasource("datasource_list: [ NoCloud, ConfigDrive, None ]\n"),
            None
        );
        assert_eq!(
            replace_azure_datasource("datasource_list:\n  - NoCloud\n"),
            None
        );
    }

    #[test]
    fn disable_file_is_the_documented_setting() {
        assert!(DISABLE_NETWORK.ends_with("network: {config: disabled}\n"));
    }
}
