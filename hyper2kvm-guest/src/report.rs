//! What a fix-up run did, for people (`Display`) and, later, the run's `report.json`.

use std::fmt;

/// What happened to one fix-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Its changes were made.
    Applied,
    /// Dry run: these changes would be made.
    WouldApply,
    /// The guest does not need it.
    NotNeeded,
    /// The configuration skips it.
    Skipped,
    /// It failed; the message says why. Later fix-ups were not run.
    Failed(String),
    /// An earlier fix-up failed, so this one was not run.
    NotRun,
    /// It made the changes it could (its `changes`), but found something that keeps the guest
    /// from booting or reaching its network on KVM and that it cannot fix; the message says
    /// what, for a person to do.
    Incomplete(String),
}

/// One fix-up's line in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixUpResult {
    /// The fix-up's name (`netplan`, `fstab`…).
    pub name: &'static str,
    /// What happened.
    pub status: Status,
    /// What changed (or would), one line each.
    pub changes: Vec<String>,
    /// What was seen but left alone, and why.
    pub notes: Vec<String>,
}

/// The run as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fix-ups were applied (some may not have been needed).
    Fixed,
    /// The guest needed none of the fix-ups.
    NothingToDo,
    /// Dry run: nothing was changed.
    DryRun,
    /// The guest is of a kind we do not fix (Windows); it was not changed.
    NotFixed(String),
    /// Fix-ups were not attempted (libguestfs missing and not required); why.
    Skipped(String),
    /// A fix-up failed; the image may be partly fixed (the report says which were applied).
    Failed(String),
    /// The fix-ups ran, but at least one found what it cannot fix and what keeps the guest
    /// from booting or reaching its network on KVM (its [`Status::Incomplete`] says what).
    Incomplete(String),
}

/// The report of one image's fix-ups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixReport {
    /// The image.
    pub image: String,
    /// One line about the guest found (OS, distribution, root, kernels, boot loader).
    pub guest: Option<String>,
    /// The guest's network as found: stacks, the files that configure NICs, naming (one line
    /// each; see [`crate::network::NetworkInspection::lines`]). Empty when not inspected.
    pub network: Vec<String>,
    /// The outcome.
    pub outcome: Outcome,
    /// Each fix-up, in the order they ran.
    pub fixups: Vec<FixUpResult>,
}

impl FixReport {
    /// Whether the run did what was asked: fixed, nothing to do, or a dry run, or skipped
    /// because fix-ups were optional.
    pub fn succeeded(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Fixed | Outcome::NothingToDo | Outcome::DryRun | Outcome::Skipped(_)
        )
    }
}

impl fmt::Display for FixReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}:", self.image)?;
        if let Some(guest) = &self.guest {
            writeln!(f, "  guest: {guest}")?;
        }
        if !self.network.is_empty() {
            writeln!(f, "  network:")?;
            for line in &self.network {
                writeln!(f, "      {line}")?;
            }
        }
        for fixup in &self.fixups {
            let status = match &fixup.status {
                Status::Applied => "applied".to_string(),
                Status::WouldApply => "would apply".to_string(),
                Status::NotNeeded => "not needed".to_string(),
                Status::Skipped => "skipped by configuration".to_string(),
                Status::Failed(why) => format!("FAILED: {why}"),
                Status::NotRun => "not run".to_string(),
                Status::Incomplete(why) => format!("NOT DONE: {why}"),
            };
            writeln!(f, "  {:<22} {status}", fixup.name)?;
            for change in &fixup.changes {
                writeln!(f, "      {change}")?;
            }
            for note in &fixup.notes {
                writeln!(f, "      note: {note}")?;
            }
        }
        match &self.outcome {
            Outcome::Fixed => write!(f, "  result: fixed for KVM"),
            Outcome::NothingToDo => write!(f, "  result: nothing to fix"),
            Outcome::DryRun => write!(f, "  result: dry run, nothing changed"),
            Outcome::NotFixed(why) => write!(f, "  result: not fixed, left unchanged: {why}"),
            Outcome::Skipped(why) => write!(f, "  result: {why}"),
            Outcome::Failed(why) => write!(f, "  result: FAILED: {why}"),
            Outcome::Incomplete(why) => write!(f, "  result: NOT READY for KVM: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_fixups_changes_and_result() {
        let report = FixReport {
            image: "vm.qcow2".into(),
            guest: Some("linux debian".into()),
            network: vec![],
            outcome: Outcome::Fixed,
            fixups: vec![
                FixUpResult {
                    name: "grub",
                    status: Status::Applied,
                    changes: vec!["update-grub".into()],
                    notes: vec![],
                },
                FixUpResult {
                    name: "ifcfg",
                    status: Status::NotNeeded,
                    changes: vec![],
                    notes: vec![],
                },
            ],
        };
        let text = report.to_string();
        assert_eq!(
            text,
            "vm.qcow2:\n  guest: linux debian\n  grub                   applied\n      update-grub\n  ifcfg                  not needed\n  result: fixed for KVM"
        );
        assert!(report.succeeded());
    }
}
