//! KVM or software emulation for libguestfs' appliance, decided by a probe boot.
//!
//! libguestfs asks qemu for `accel=kvm:tcg`: KVM when `/dev/kvm` opens, software emulation
//! otherwise. A `/dev/kvm` that opens can still fail to run a guest: a nested `kvm-pvm` host
//! stopped the appliance with `KVM internal error` and left libguestfs waiting forever. So the
//! first appliance of a process is preceded by a probe: a scratch-disk appliance under KVM,
//! killed (with its qemu) if it has not answered within [`PROBE_LIMIT`]. When the probe fails,
//! every appliance of the process runs under TCG (`LIBGUESTFS_BACKEND_SETTINGS=force_tcg`)
//! and [`Accel::notice`] says why, for the caller to show. A user's own
//! `LIBGUESTFS_BACKEND_SETTINGS` is respected and not probed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a KVM appliance may take to answer before KVM is given up: a working KVM starts
/// one in a few seconds, software emulation on a loaded machine in a minute or more.
pub const PROBE_LIMIT: Duration = Duration::from_secs(45);

/// How the appliance runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accel {
    /// Under KVM.
    Kvm,
    /// Under software emulation (TCG), and why.
    Tcg(String),
    /// As the user's `LIBGUESTFS_BACKEND_SETTINGS` says (not probed).
    AsConfigured(String),
}

impl Accel {
    /// The line to show when the appliance falls back to software emulation.
    pub fn notice(&self) -> Option<String> {
        match self {
            Accel::Tcg(why) => Some(format!(
                "libguestfs runs under software emulation (TCG), which is several times slower: {why}"
            )),
            _ => None,
        }
    }

    /// The environment the guestfish server gets.
    pub(crate) fn env(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Accel::Tcg(_) => Some(("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")),
            _ => None,
        }
    }
}

/// What the probe boot found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The KVM appliance answered.
    Answered,
    /// It did not answer within the limit.
    TimedOut,
    /// It failed; libguestfs' message.
    Failed(String),
}

static ACCEL: OnceLock<Accel> = OnceLock::new();

/// The decision, once an appliance was launched in this process (no probe of its own).
pub fn decided() -> Option<&'static Accel> {
    ACCEL.get()
}

/// The decision for this process, probed once (the first caller waits for the probe).
pub fn appliance_accel(guestfish: &Path) -> &'static Accel {
    ACCEL.get_or_init(|| {
        decide(
            std::env::var("LIBGUESTFS_BACKEND_SETTINGS").ok(),
            kvm_opens(),
            || probe(guestfish, PROBE_LIMIT),
        )
    })
}

/// The decision, from the user's settings, whether `/dev/kvm` opens, and the probe.
pub(crate) fn decide(
    settings: Option<String>,
    kvm_opens: Result<(), String>,
    probe: impl FnOnce() -> Probe,
) -> Accel {
    if let Some(s) = settings.filter(|s| !s.trim().is_empty()) {
        return Accel::AsConfigured(format!("LIBGUESTFS_BACKEND_SETTINGS={s}"));
    }
    if let Err(why) = kvm_opens {
        return Accel::Tcg(why);
    }
    match probe() {
        Probe::Answered => Accel::Kvm,
        Probe::TimedOut => Accel::Tcg(format!(
            "/dev/kvm opens, but a KVM appliance did not start within {} s",
            PROBE_LIMIT.as_secs()
        )),
        Probe::Failed(msg) => {
            Accel::Tcg(format!("/dev/kvm opens, but a KVM appliance failed: {msg}"))
        }
    }
}

fn kvm_opens() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm cannot be opened ({e})"))
}

/// Boots a scratch-disk appliance under KVM only; kills its process group (guestfish and
/// its qemu) when it has not answered within `limit`.
fn probe(guestfish: &Path, limit: Duration) -> Probe {
    use std::os::unix::process::CommandExt;
    let child = Command::new(guestfish)
        .args([
            "--",
            "add-drive-scratch",
            "1048576",
            ":",
            "run",
            ":",
            "echo",
            "ok",
        ])
        // KVM or nothing (libguestfs 1.48+): without it qemu would fall back to TCG itself
        // and the probe would prove nothing.
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_kvm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Probe::Failed(format!("cannot start guestfish: {e}")),
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(200)),
            _ => {
                // The whole group: guestfish and the qemu it started.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                return Probe::TimedOut;
            }
        }
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok") => {
            Probe::Answered
        }
        Ok(out) => Probe::Failed(
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message")
                .trim()
                .to_string(),
        ),
        Err(e) => Probe::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_settings_win_and_nothing_is_probed() {
        let a = decide(Some("force_tcg".into()), Ok(()), || panic!("probed"));
        assert_eq!(
            a,
            Accel::AsConfigured("LIBGUESTFS_BACKEND_SETTINGS=force_tcg".into())
        );
        assert_eq!(a.notice(), None);
        assert_eq!(a.env(), None);
    }

    #[test]
    fn no_usable_dev_kvm_is_tcg_without_a_probe() {
        let a = decide(
            None,
            Err("/dev/kvm cannot be opened (No such file)".into()),
            || panic!("probed"),
        );
        assert!(a.notice().unwrap().contains("/dev/kvm cannot be opened"));
        assert_eq!(a.env(), Some(("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")));
    }

    #[test]
    fn the_probe_decides_when_dev_kvm_opens() {
        assert_eq!(decide(None, Ok(()), || Probe::Answered), Accel::Kvm);
        assert_eq!(
            decide(Some(" ".into()), Ok(()), || Probe::Answered),
            Accel::Kvm
        );
        let hung = decide(None, Ok(()), || Probe::TimedOut);
        assert!(
            hung.notice().unwrap().contains("did not start within 45 s"),
            "{hung:?}"
        );
        let failed = decide(None, Ok(()), || {
            Probe::Failed("libguestfs: error: KVM internal error".into())
        });
        assert!(failed.notice().unwrap().contains("KVM internal error"));
    }
}
