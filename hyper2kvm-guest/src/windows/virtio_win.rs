//! virtio-win: which of its directories fits a guest.
//!
//! virtio-win ships one directory per driver, Windows release and architecture
//! (`viostor/2k19/amd64/`, `NetKVM/w10/x86/` …) and the QEMU guest agent's installers in
//! `guest-agent/`. A guest takes, per driver, the directory of its own release; where
//! virtio-win has none (a release newer than the ISO, or one it stopped shipping), the newest
//! directory of the same kind (server or client) that is not newer than the guest — the
//! fallback virtio-win documents for new releases (a Windows Server 2025 guest uses `2k22`
//! drivers on an ISO without `2k25`). A driver is never taken from a newer release's
//! directory: it may use kernel functions the guest lacks. The choice is pure: it works on the
//! list of files (relative paths) of the tree or the ISO.

use std::fmt;

/// The driver directories of virtio-win, as it names them.
pub const DRIVERS: [&str; 8] = [
    "viostor",
    "vioscsi",
    "NetKVM",
    "Balloon",
    "vioserial",
    "viorng",
    "pvpanic",
    "qemufwcfg",
];

/// The boot-critical (storage) drivers: injected as boot-start services.
pub const BOOT_DRIVERS: [&str; 2] = ["viostor", "vioscsi"];

/// Server or client edition (libguestfs' `inspect-get-product-variant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Windows Server.
    Server,
    /// Desktop Windows.
    Client,
}

/// A Windows release as virtio-win names it: directory name, kind, version and first build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// virtio-win's directory name (`2k19`).
    pub dir: &'static str,
    /// Other names virtio-win has used for it (`win2019`).
    pub alias: &'static str,
    /// Server or client.
    pub variant: Variant,
    /// NT major.minor version.
    pub version: (u32, u32),
    /// The first build number of the release (Windows 10 and later share 10.0).
    pub build: u32,
}

/// Every release virtio-win has had directories for, oldest first within each kind.
pub const RELEASES: [Release; 16] = [
    rel("xp", "winxp", Variant::Client, (5, 1), 0),
    rel("2k3", "win2003", Variant::Server, (5, 2), 0),
    rel("vista", "winvista", Variant::Client, (6, 0), 0),
    rel("2k8", "win2008", Variant::Server, (6, 0), 0),
    rel("w7", "win7", Variant::Client, (6, 1), 0),
    rel("2k8r2", "win2008r2", Variant::Server, (6, 1), 0),
    rel("w8", "win8", Variant::Client, (6, 2), 0),
    rel("2k12", "win2012", Variant::Server, (6, 2), 0),
    rel("w8.1", "win8.1", Variant::Client, (6, 3), 0),
    rel("2k12r2", "win2012r2", Variant::Server, (6, 3), 0),
    rel("w10", "win10", Variant::Client, (10, 0), 10240),
    rel("2k16", "win2016", Variant::Server, (10, 0), 14393),
    rel("2k19", "win2019", Variant::Server, (10, 0), 17763),
    rel("2k22", "win2022", Variant::Server, (10, 0), 20348),
    rel("w11", "win11", Variant::Client, (10, 0), 22000),
    rel("2k25", "win2025", Variant::Server, (10, 0), 26100),
];

const fn rel(
    dir: &'static str,
    alias: &'static str,
    variant: Variant,
    version: (u32, u32),
    build: u32,
) -> Release {
    Release {
        dir,
        alias,
        variant,
        version,
        build,
    }
}

impl Release {
    /// The release a virtio-win directory name stands for (case-insensitive).
    pub fn from_dir(name: &str) -> Option<Release> {
        let name = name.to_ascii_lowercase();
        RELEASES
            .into_iter()
            .find(|r| r.dir == name || r.alias == name)
    }

    fn key(&self) -> (u32, u32, u32) {
        (self.version.0, self.version.1, self.build)
    }
}

/// The guest, as far as choosing drivers goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestOs {
    /// NT major version (`inspect-get-major-version`).
    pub major: u32,
    /// NT minor version.
    pub minor: u32,
    /// Server or client.
    pub variant: Variant,
    /// The build number (`CurrentBuildNumber` in the SOFTWARE hive), when known.
    pub build: Option<u32>,
    /// The product name (`Windows Server 2019 Datacenter`).
    pub product: String,
    /// libguestfs' architecture (`x86_64`, `i386`).
    pub arch: String,
}

impl GuestOs {
    /// virtio-win's architecture directory for the guest (`amd64`, `x86`).
    pub fn arch_dir(&self) -> Option<&'static str> {
        match self.arch.as_str() {
            "x86_64" => Some("amd64"),
            "i386" | "i686" => Some("x86"),
            _ => None,
        }
    }

    /// The guest's release: by version and kind, and for 10.0 (Windows 10 and 11, Server 2016
    /// to 2025) by build number, or else by the year or name in the product name, or else the
    /// oldest 10.0 release (whose drivers every later one runs).
    pub fn release(&self) -> Option<Release> {
        let candidates: Vec<Release> = RELEASES
            .into_iter()
            .filter(|r| r.variant == self.variant && r.version == (self.major, self.minor))
            .collect();
        if candidates.len() <= 1 {
            return candidates.first().copied();
        }
        if let Some(build) = self.build {
            return candidates.iter().rev().find(|r| r.build <= build).copied();
        }
        let named = candidates.iter().rev().find(|r| {
            let year = r.alias.trim_start_matches("win");
            let name = if year.len() == 4 {
                year.to_string()
            } else {
                format!("Windows {year}")
            };
            self.product.contains(&name)
        });
        named.or(candidates.first()).copied()
    }
}

impl fmt::Display for GuestOs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let variant = match self.variant {
            Variant::Server => "server",
            Variant::Client => "client",
        };
        write!(f, "{} ({}.{}", self.product, self.major, self.minor)?;
        if let Some(build) = self.build {
            write!(f, " build {build}")?;
        }
        write!(f, ", {variant}, {})", self.arch)
    }
}

/// The directory chosen for one driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverDir {
    /// The driver (`viostor`), as virtio-win spells its directory.
    pub driver: String,
    /// The directory, relative to virtio-win's root (`viostor/2k19/amd64`).
    pub dir: String,
    /// Whether it is the guest's own release, or a fallback for it.
    pub exact: bool,
    /// Its files (relative paths from virtio-win's root), `.pdb` debug symbols left out.
    pub files: Vec<String>,
}

impl fmt::Display for DriverDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.driver, self.dir)?;
        if !self.exact {
            write!(f, " (fallback: no directory for the guest's own release)")?;
        }
        Ok(())
    }
}

/// What virtio-win has for a guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// One directory per driver that has one for the guest.
    pub drivers: Vec<DriverDir>,
    /// Drivers with no directory for the guest.
    pub missing: Vec<&'static str>,
    /// The QEMU guest agent installer for the guest's architecture, if any.
    pub guest_agent: Option<String>,
}

impl Selection {
    /// The directory chosen for `driver`, if any.
    pub fn driver(&self, driver: &str) -> Option<&DriverDir> {
        self.drivers
            .iter()
            .find(|d| d.driver.eq_ignore_ascii_case(driver))
    }
}

/// Chooses virtio-win's directories for `guest` from the list of virtio-win's files (paths
/// relative to its root, `/`-separated, any case).
pub fn choose(files: &[String], guest: &GuestOs) -> Selection {
    let mut selection = Selection::default();
    let (Some(arch), Some(want)) = (guest.arch_dir(), guest.release()) else {
        selection.missing = DRIVERS.to_vec();
        return selection;
    };
    for driver in DRIVERS {
        // Directories of this driver for the guest's architecture: (release, dir, files).
        let mut dirs: Vec<(Release, String, Vec<String>)> = Vec::new();
        for path in files {
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let [d, os, a, name] = parts[..] else {
                continue;
            };
            if !d.eq_ignore_ascii_case(driver) || !a.eq_ignore_ascii_case(arch) {
                continue;
            }
            let Some(release) = Release::from_dir(os) else {
                continue;
            };
            if release.variant != want.variant || release.key() > want.key() {
                continue;
            }
            let dir = format!("{d}/{os}/{a}");
            let keep = !name.to_ascii_lowercase().ends_with(".pdb");
            match dirs.iter_mut().find(|(_, x, _)| *x == dir) {
                Some((_, _, list)) if keep => list.push(path.trim_start_matches('/').to_string()),
                Some(_) => {}
                None => dirs.push((
                    release,
                    dir,
                    if keep {
                        vec![path.trim_start_matches('/').to_string()]
                    } else {
                        Vec::new()
                    },
                )),
            }
        }
        let best = dirs.into_iter().max_by_key(|(r, _, _)| r.key());
        match best {
            Some((release, dir, mut files)) => {
                files.sort();
                selection.drivers.push(DriverDir {
                    driver: driver.to_string(),
                    dir,
                    exact: release == want,
                    files,
                })
            }
            None => selection.missing.push(driver),
        }
    }
    let agents: &[&str] = match arch {
        "amd64" => &["qemu-ga-x86_64.msi", "qemu-ga-x64.msi"],
        _ => &["qemu-ga-i386.msi", "qemu-ga-x86.msi"],
    };
    selection.guest_agent = files
        .iter()
        .map(|p| p.trim_start_matches('/'))
        .find(|p| {
            let lower = p.to_ascii_lowercase();
            agents.iter().any(|a| lower == format!("guest-agent/{a}"))
        })
        .map(String::from);
    selection
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dirs: &[&str]) -> Vec<String> {
        let mut files = Vec::new();
        for dir in dirs {
            let driver = dir.split('/').next().unwrap().to_ascii_lowercase();
            for ext in ["inf", "cat", "sys", "pdb"] {
                files.push(format!("{dir}/{driver}.{ext}"));
            }
        }
        files.push("guest-agent/qemu-ga-x86_64.msi".into());
        files.push("guest-agent/qemu-ga-i386.msi".into());
        files
    }

    fn server(product: &str, major: u32, minor: u32, build: Option<u32>) -> GuestOs {
        GuestOs {
            major,
            minor,
            variant: Variant::Server,
            build,
            product: product.into(),
            arch: "x86_64".into(),
        }
    }

    #[test]
    fn exact_release_and_arch() {
        let files = tree(&[
            "viostor/2k16/amd64",
            "viostor/2k19/amd64",
            "viostor/2k22/amd64",
            "viostor/w10/amd64",
            "vioscsi/2k19/amd64",
            "NetKVM/2k19/amd64",
        ]);
        let s = choose(
            &files,
            &server("Windows Server 2019 Datacenter", 10, 0, Some(17763)),
        );
        let viostor = s.driver("viostor").unwrap();
        assert_eq!(viostor.dir, "viostor/2k19/amd64");
        assert!(viostor.exact);
        assert_eq!(
            viostor.files,
            [
                "viostor/2k19/amd64/viostor.cat",
                "viostor/2k19/amd64/viostor.inf",
                "viostor/2k19/amd64/viostor.sys"
            ]
        );
        assert_eq!(s.driver("NetKVM").unwrap().dir, "NetKVM/2k19/amd64");
        assert_eq!(
            s.missing,
            ["Balloon", "vioserial", "viorng", "pvpanic", "qemufwcfg"]
        );
        assert_eq!(
            s.guest_agent.as_deref(),
            Some("guest-agent/qemu-ga-x86_64.msi")
        );
    }

    #[test]
    fn newer_server_falls_back_to_newest_older_server_dir() {
        let files = tree(&[
            "viostor/2k16/amd64",
            "viostor/2k22/amd64",
            "viostor/w11/amd64",
        ]);
        // Server 2025 on an ISO without 2k25: the 2k22 directory, never the client's w11.
        let s = choose(
            &files,
            &server("Windows Server 2025 Datacenter", 10, 0, Some(26100)),
        );
        let d = s.driver("viostor").unwrap();
        assert_eq!(d.dir, "viostor/2k22/amd64");
        assert!(!d.exact);
        assert!(d.to_string().contains("fallback"));
        // Server 2019 without 2k19: 2k16, not the newer 2k22.
        let s = choose(
            &files,
            &server("Windows Server 2019 Datacenter", 10, 0, Some(17763)),
        );
        assert_eq!(s.driver("viostor").unwrap().dir, "viostor/2k16/amd64");
        // Server 2012 R2 with only newer directories: none.
        let s = choose(&files, &server("Windows Server 2012 R2", 6, 3, None));
        assert!(s.driver("viostor").is_none());
        assert!(s.missing.contains(&"viostor"));
    }

    #[test]
    fn older_releases_case_and_arch() {
        let files = tree(&[
            "viostor/2k8R2/amd64",
            "viostor/w7/amd64",
            "viostor/w7/x86",
            "vioscsi/2K8R2/AMD64",
        ]);
        let s = choose(
            &files,
            &server("Windows Server 2008 R2 Datacenter", 6, 1, Some(7601)),
        );
        assert_eq!(s.driver("viostor").unwrap().dir, "viostor/2k8R2/amd64");
        assert_eq!(s.driver("vioscsi").unwrap().dir, "vioscsi/2K8R2/AMD64");
        let win7_32 = GuestOs {
            variant: Variant::Client,
            arch: "i386".into(),
            ..server("Windows 7 Professional", 6, 1, None)
        };
        let s = choose(&files, &win7_32);
        assert_eq!(s.driver("viostor").unwrap().dir, "viostor/w7/x86");
        assert_eq!(
            s.guest_agent.as_deref(),
            Some("guest-agent/qemu-ga-i386.msi")
        );
    }

    #[test]
    fn release_of_ten_by_build_or_name() {
        let r = |g: GuestOs| g.release().map(|r| r.dir);
        assert_eq!(
            r(server("Windows Server 2022", 10, 0, Some(20348))),
            Some("2k22")
        );
        assert_eq!(r(server("Windows Server 2016", 10, 0, None)), Some("2k16"));
        assert_eq!(
            r(server("Windows Server 2019 Standard", 10, 0, None)),
            Some("2k19")
        );
        assert_eq!(
            r(server("Windows Server Datacenter", 10, 0, None)),
            Some("2k16")
        );
        let client = |name: &str, build| GuestOs {
            variant: Variant::Client,
            ..server(name, 10, 0, build)
        };
        assert_eq!(r(client("Windows 10 Pro", Some(19045))), Some("w10"));
        assert_eq!(r(client("Windows 10 Pro", Some(22631))), Some("w11"));
        assert_eq!(r(client("Windows 11 Enterprise", None)), Some("w11"));
        assert_eq!(
            r(server("Windows Server 2008 R2", 6, 1, None)),
            Some("2k8r2")
        );
        assert_eq!(r(server("Windows 2000", 5, 0, None)), None);
    }
}
