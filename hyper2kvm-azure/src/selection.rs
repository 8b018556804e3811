//! Which VMs to list: filters on resource group, name (exact or glob), tags, power state and
//! location. Each filter that is set must match (AND); within a filter, any value may match
//! (OR), except tags, which must all match. Names, resource groups, tag keys and locations
//! compare case-insensitively, as Azure treats them; tag values compare exactly.

use hyper2kvm_core::{PowerState, Vm};

use crate::error::{Error, ErrorKind, Result};

/// A set of filters; the default selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Resource group names (exact, case-insensitive).
    pub resource_groups: Vec<String>,
    /// VM names: exact, or globs with `*` (any run) and `?` (one character).
    pub names: Vec<String>,
    /// Tags that must all be present with these values.
    pub tags: Vec<(String, String)>,
    /// Power states.
    pub power_states: Vec<PowerState>,
    /// Locations (`westeurope`; `West Europe` is the same).
    pub locations: Vec<String>,
}

/// The filters as a user wrote them: `resource groups rg-a, rg-b; names web-*; tags env=prod;
/// power states running; locations westeurope`, or `every VM` when there is none.
impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        let mut add = |what: &str, items: Vec<String>| {
            if !items.is_empty() {
                parts.push(format!("{what} {}", items.join(", ")));
            }
        };
        add("resource groups", self.resource_groups.clone());
        add("names", self.names.clone());
        add(
            "tags",
            self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
        add(
            "power states",
            self.power_states.iter().map(|p| p.to_string()).collect(),
        );
        add("locations", self.locations.clone());
        if parts.is_empty() {
            f.write_str("every VM")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// Parses a `key=value` tag filter.
pub fn parse_tag_filter(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("tag filter {text:?} is not key=value"),
        )),
    }
}

fn normalize_location(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

impl Selection {
    /// Whether a VM in `resource_group` can be selected at all (checked before the rest, so
    /// other groups' VMs cost nothing).
    pub fn matches_resource_group(&self, resource_group: &str) -> bool {
        self.resource_groups.is_empty()
            || self
                .resource_groups
                .iter()
                .any(|g| g.eq_ignore_ascii_case(resource_group))
    }

    /// Whether `vm` passes every filter.
    pub fn matches(&self, vm: &Vm) -> bool {
        self.matches_resource_group(&vm.resource_group)
            && (self.names.is_empty() || self.names.iter().any(|p| glob_match(p, &vm.name)))
            && self.tags.iter().all(|(k, v)| {
                vm.tags
                    .iter()
                    .any(|(vk, vv)| vk.eq_ignore_ascii_case(k) && vv == v)
            })
            && (self.power_states.is_empty() || self.power_states.contains(&vm.power_state))
            && (self.locations.is_empty()
                || self
                    .locations
                    .iter()
                    .any(|l| normalize_location(l) == normalize_location(&vm.location)))
    }
}

/// Matches `text` against `pattern`, where `*` matches any run of characters (also none) and
/// `?` exactly one; everything else matches itself, ignoring ASCII case. A pattern without
/// wildcards is an exact (case-insensitive) match.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let t: Vec<char> = text.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Greedy matching with one backtrack point (the last `*`): linear for typical patterns,
    // never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper2kvm_core::{Firmware, OsType};
    use std::collections::BTreeMap;

    #[test]
    fn globs() {
        let yes = [
            ("web-01", "web-01"),
            ("WEB-01", "web-01"),
            ("web-*", "web-01"),
            ("web-*", "web-"),
            ("*", ""),
            ("*-0?", "db-01"),
            ("a*b*c", "aXXbYYbc"),
            ("*01", "web-01"),
            ("??", "ab"),
            ("a**b", "ab"),
        ];
        for (p, t) in yes {
            assert!(glob_match(p, t), "{p} should match {t}");
        }
        let no = [
            ("web-01", "web-011"),
            ("web-?", "web-01"),
            ("a*b*c", "aXXbYY"),
            ("??", "a"),
            ("db*", "web-db"),
            ("", "x"),
        ];
        for (p, t) in no {
            assert!(!glob_match(p, t), "{p} should not match {t}");
        }
    }

    fn vm(name: &str, rg: &str, state: PowerState, tags: &[(&str, &str)]) -> Vm {
        Vm {
            id: format!("/subscriptions/s/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"),
            name: name.into(),
            subscription: "s".into(),
            resource_group: rg.into(),
            location: "westeurope".into(),
            vm_size: "Standard_B1s".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            power_state: state,
            os_type: OsType::Linux,
            firmware: Firmware::Uefi,
            disks: vec![],
            security: Default::default(),
            nics: None,
        }
    }

    #[test]
    fn filters_combine() {
        let web = vm(
            "web-01",
            "RG-Web",
            PowerState::Running,
            &[("env", "prod"), ("app", "shop")],
        );
        let db = vm(
            "db-01",
            "rg-data",
            PowerState::Deallocated,
            &[("Env", "prod")],
        );
        assert!(Selection::default().matches(&web));

        let by_group = Selection {
            resource_groups: vec!["rg-web".into()],
            ..Default::default()
        };
        assert!(by_group.matches(&web) && !by_group.matches(&db));

        let by_tag = Selection {
            tags: vec![("env".into(), "prod".into())],
            ..Default::default()
        };
        assert!(
            by_tag.matches(&web) && by_tag.matches(&db),
            "tag keys ignore case"
        );
        let two_tags = Selection {
            tags: vec![("env".into(), "prod".into()), ("app".into(), "shop".into())],
            ..Default::default()
        };
        assert!(two_tags.matches(&web) && !two_tags.matches(&db));
        let wrong_case_value = Selection {
            tags: vec![("env".into(), "PROD".into())],
            ..Default::default()
        };
        assert!(!wrong_case_value.matches(&web));

        let by_state = Selection {
            power_states: vec![PowerState::Deallocated],
            ..Default::default()
        };
        assert!(!by_state.matches(&web) && by_state.matches(&db));

        let by_names = Selection {
            names: vec!["db-*".into(), "nothing".into()],
            ..Default::default()
        };
        assert!(!by_names.matches(&web) && by_names.matches(&db));

        let by_location = Selection {
            locations: vec!["West Europe".into()],
            ..Default::default()
        };
        assert!(by_location.matches(&web));
        let elsewhere = Selection {
            locations: vec!["eastus".into()],
            ..Default::default()
        };
        assert!(!elsewhere.matches(&web));

        let both = Selection {
            names: vec!["*-01".into()],
            power_states: vec![PowerState::Running],
            ..Default::default()
        };
        assert!(both.matches(&web) && !both.matches(&db));
    }

    #[test]
    fn tag_filters_parse() {
        assert_eq!(
            parse_tag_filter("env=prod").unwrap(),
            ("env".into(), "prod".into())
        );
        assert_eq!(
            parse_tag_filter("k=a=b").unwrap(),
            ("k".into(), "a=b".into())
        );
        assert_eq!(
            parse_tag_filter("empty=").unwrap(),
            ("empty".into(), "".into())
        );
        assert!(parse_tag_filter("novalue").is_err());
        assert!(parse_tag_filter("=x").is_err());
    }

    #[test]
    fn selection_reads_like_the_config() {
        assert_eq!(Selection::default().to_string(), "every VM");
        let s = Selection {
            resource_groups: vec!["rg-a".into(), "rg-b".into()],
            names: vec!["web-*".into()],
            tags: vec![("env".into(), "prod".into())],
            power_states: vec![PowerState::Running],
            locations: vec![],
        };
        assert_eq!(
            s.to_string(),
            "resource groups rg-a, rg-b; names web-*; tags env=prod; power states running"
        );
    }
}
