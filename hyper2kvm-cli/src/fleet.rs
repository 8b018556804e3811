//! How a run's progress reads ([`FleetProgress`], from the engine about once a second): the
//! overall line, and a short line for each VM in flight, at most [`IN_FLIGHT_LINES`] of them.
//!
//! ```text
//! 7/20 VMs done, 5 in flight; 1.20 GiB of ~3.90 GiB (31/45 disks known), 98.0 MiB/s, ETA 28s
//! vm-03  1m12s  120/480 MiB  vm-03_DataDisk_0: reading; 2 of 3 disks reading
//! vm-11     9s               deallocate (waiting for it)
//! ```
//!
//! Bytes are those of the disks' written ranges (what is read), not their sizes. A disk's are
//! known once it is exported; until then the engine expects the mean of the disks known (so
//! `~`), and before any disk is known the line gives the disks' sizes as a bound. The ETA is
//! the bytes left at the rate of the last 30 s: the platform's operations still to come
//! (power operations, snapshots, grants, revokes) are not in it.

use hyper2kvm::migrate::{FleetProgress, VmInFlight};

use crate::units::{bytes_of, human_bytes, human_duration};

/// The most VMs in flight that get a line of their own; the others are counted on one more.
pub const IN_FLIGHT_LINES: usize = 8;

/// `7/20 VMs done, 5 in flight; 1.20 GiB of ~3.90 GiB (31/45 disks known), 98.0 MiB/s, ETA
/// 28s`. `at_most` bounds the bytes while no disk is known (the sizes of the disks left).
pub fn overall_line(f: &FleetProgress, at_most: u64) -> String {
    let mut line = format!(
        "{}/{} VMs done, {} in flight; ",
        f.vms_finished, f.vms, f.vms_in_flight
    );
    if f.disks_known == 0 && f.disks > 0 {
        line.push_str(&format!(
            "{} of at most {} (0/{} disks known)",
            human_bytes(f.bytes_done),
            human_bytes(at_most),
            f.disks
        ));
    } else {
        line.push_str(&format!(
            "{} of {}{} ({}/{} disks known)",
            human_bytes(f.bytes_done),
            if f.disks_known < f.disks { "~" } else { "" },
            human_bytes(f.bytes_expected.max(f.bytes_done)),
            f.disks_known,
            f.disks
        ));
    }
    if let Some(rate) = f.rate {
        line.push_str(&format!(", {}/s", human_bytes(rate as u64)));
    }
    if f.disks_known == f.disks && f.bytes_done >= f.bytes_expected {
        // Not "ETA 0s": the VMs in flight still have their revokes and the rest to do.
        line.push_str(", all read");
    } else if let Some(eta) = f.eta_seconds {
        line.push_str(&format!(", ETA {}", human_duration(eta.ceil() as u64)));
    }
    line
}

/// A line per VM in flight, those reading first, then the longest running; past
/// `cap` of them, one line counts the others (`+4 more: 1 waiting for a reading slot, 3 in
/// other steps`). Columns: name, time since it started, bytes read of its disks known so
/// far, its last step, and its disks when it has several.
pub fn vm_lines(f: &FleetProgress, cap: usize) -> Vec<String> {
    let mut vms: Vec<&VmInFlight> = f.in_flight.iter().collect();
    vms.sort_by(|a, b| {
        (b.disks_reading > 0)
            .cmp(&(a.disks_reading > 0))
            .then(b.seconds.total_cmp(&a.seconds))
            .then(a.vm.cmp(&b.vm))
    });
    let cap = cap.max(1);
    let (shown, hidden) = vms.split_at(vms.len().min(cap));
    let name_width = shown
        .iter()
        .map(|v| v.vm.chars().count())
        .max()
        .unwrap_or(0)
        .min(32);
    let bytes: Vec<String> = shown
        .iter()
        .map(|v| {
            if v.bytes_known > 0 {
                bytes_of(v.bytes_done, v.bytes_known)
            } else {
                String::new()
            }
        })
        .collect();
    let bytes_width = bytes.iter().map(String::len).max().unwrap_or(0);
    let mut lines: Vec<String> = shown
        .iter()
        .zip(&bytes)
        .map(|(v, b)| {
            let mut line = format!(
                "{:<name_width$}  {:>6}  ",
                v.vm,
                elapsed(v.seconds),
                name_width = name_width
            );
            if bytes_width > 0 {
                line.push_str(&format!("{b:>bytes_width$}  "));
            }
            line.push_str(&v.phase);
            if let Some(disks) = disks_part(v) {
                line.push_str("; ");
                line.push_str(&disks);
            }
            line.trim_end().to_string()
        })
        .collect();
    if !hidden.is_empty() {
        let reading = hidden.iter().filter(|v| v.disks_reading > 0).count();
        let waiting = hidden
            .iter()
            .filter(|v| v.disks_reading == 0 && v.disks_waiting > 0)
            .count();
        let other = hidden.len() - reading - waiting;
        let parts: Vec<String> = [
            (reading, "reading"),
            (waiting, "waiting for a reading slot"),
            (other, "in other steps"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        lines.push(format!("+{} more: {}", hidden.len(), parts.join(", ")));
    }
    lines
}

/// `2 of 3 disks reading, 1 waiting` (for a reading slot), for a VM of several disks.
fn disks_part(v: &VmInFlight) -> Option<String> {
    if v.disks < 2 {
        return None;
    }
    let d = v.disks;
    Some(match (v.disks_reading, v.disks_waiting) {
        (0, 0) => format!("{d} disks"),
        (0, w) => format!("{w} of {d} disks waiting"),
        (r, 0) => format!("{r} of {d} disks reading"),
        (r, w) => format!("{r} of {d} disks reading, {w} waiting"),
    })
}

/// Time since a VM started: `42s`, `3m05s`, `1h02m`.
fn elapsed(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    pub(crate) fn vm(name: &str, phase: &str, seconds: f64) -> VmInFlight {
        let mut v = VmInFlight::default();
        v.vm = name.into();
        v.phase = phase.into();
        v.seconds = seconds;
        v.disks = 1;
        v
    }

    fn fleet(known: usize, done: u64, expected: u64) -> FleetProgress {
        let mut f = FleetProgress::default();
        f.vms = 20;
        f.vms_finished = 7;
        f.vms_in_flight = 5;
        f.disks = 45;
        f.disks_known = known;
        f.bytes_done = done;
        f.bytes_known = expected;
        f.bytes_expected = expected;
        f
    }

    #[test]
    fn the_overall_line_says_what_is_known() {
        // Before any disk is exported: the disks' sizes as a bound, no rate, no ETA.
        let f = fleet(0, 0, 0);
        assert_eq!(
            overall_line(&f, 900 * GIB),
            "7/20 VMs done, 5 in flight; 0 B of at most 900 GiB (0/45 disks known)"
        );
        // Some known: the others expected, so "~"; an ETA from the recent rate.
        let mut f = fleet(31, 1229 * MIB, 3994 * MIB);
        f.rate = Some((98 * MIB) as f64);
        f.eta_seconds = Some(27.2);
        assert_eq!(
            overall_line(&f, 900 * GIB),
            "7/20 VMs done, 5 in flight; 1.20 GiB of ~3.90 GiB (31/45 disks known), 98.0 MiB/s, ETA 28s"
        );
        // All known: no "~". A rate of nothing (every VM in its operations): no ETA.
        let mut f = fleet(45, 2 * GIB, 4 * GIB);
        f.rate = Some(0.0);
        assert_eq!(
            overall_line(&f, 900 * GIB),
            "7/20 VMs done, 5 in flight; 2.00 GiB of 4.00 GiB (45/45 disks known), 0 B/s"
        );
        // All read, VMs still in flight (revokes, fix-ups): no "ETA 0s".
        let mut f = fleet(45, 4 * GIB, 4 * GIB);
        f.rate = Some((50 * MIB) as f64);
        f.eta_seconds = Some(0.0);
        assert_eq!(
            overall_line(&f, 900 * GIB),
            "7/20 VMs done, 5 in flight; 4.00 GiB of 4.00 GiB (45/45 disks known), 50.0 MiB/s, all read"
        );
        // All read of the disks known is not all read.
        let mut f = fleet(44, 4 * GIB, 4 * GIB);
        f.eta_seconds = Some(0.0);
        assert!(overall_line(&f, 0).ends_with("(44/45 disks known), ETA 0s"));
    }

    #[test]
    fn vm_lines_show_the_readers_then_the_longest_running() {
        let mut f = fleet(3, 0, 0);
        let mut a = vm("vm-a", "vm-a_OsDisk_1: reading", 40.0);
        a.disks = 3;
        a.disks_reading = 2;
        a.disks_waiting = 1;
        a.bytes_done = 120 * MIB;
        a.bytes_known = 480 * MIB;
        let b = vm("vm-bb", "deallocate (waiting for it)", 72.5);
        let mut c = vm("vm-c", "vm-c_OsDisk_1: waiting for a reading slot", 9.0);
        c.disks_waiting = 1;
        c.bytes_known = 64 * MIB;
        f.in_flight = vec![c, b, a];
        let lines = vm_lines(&f, IN_FLIGHT_LINES);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "vm-a      40s    120/480 MiB  vm-a_OsDisk_1: reading; 2 of 3 disks reading, 1 waiting"
        );
        assert_eq!(
            lines[1],
            "vm-bb   1m12s                 deallocate (waiting for it)"
        );
        assert_eq!(
            lines[2],
            "vm-c       9s  0.00/64.0 MiB  vm-c_OsDisk_1: waiting for a reading slot"
        );
    }

    #[test]
    fn vm_lines_past_the_cap_are_counted() {
        let mut f = fleet(0, 0, 0);
        f.in_flight = (0..32)
            .map(|i| {
                let mut v = vm(&format!("vm-{i:02}"), "starting", f64::from(i));
                v.disks_reading = usize::from(i % 10 == 0);
                v.disks_waiting = usize::from(i % 10 == 1);
                v
            })
            .collect();
        let lines = vm_lines(&f, 8);
        assert_eq!(lines.len(), 9, "{lines:#?}");
        // The four reading (vm-30, 20, 10, 00) first, then the longest running.
        let names: Vec<&str> = lines[..8].iter().map(|l| &l[..5]).collect();
        assert_eq!(
            names,
            ["vm-30", "vm-20", "vm-10", "vm-00", "vm-31", "vm-29", "vm-28", "vm-27"]
        );
        // Hidden: vm-01, 11, 21 waiting; 21 others.
        assert_eq!(
            lines[8],
            "+24 more: 3 waiting for a reading slot, 21 in other steps"
        );
        assert!(vm_lines(&FleetProgress::default(), 8).is_empty());
    }

    #[test]
    fn elapsed_reads_as_a_clock() {
        assert_eq!(elapsed(0.4), "0s");
        assert_eq!(elapsed(59.9), "59s");
        assert_eq!(elapsed(185.0), "3m05s");
        assert_eq!(elapsed(3_720.0), "1h02m");
    }
}
