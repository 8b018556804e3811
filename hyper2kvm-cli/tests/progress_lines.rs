//! Progress when stderr is not a terminal (a pipe, a log file): plain lines stamped with the
//! time, printed by the clock, not only when a disk moves. A run's overall line says the VMs
//! done and in flight, the bytes done of those expected (the written ranges, not the disks'
//! sizes), how many disks are known, and an ETA; under it, a line per VM in flight.
//! `HYPER2KVM_PROGRESS_INTERVAL=1` makes them come every second instead of every 10.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Output};
use std::time::Duration;

use hyper2kvm_sim::{Scenario, Simulator};
use support::{s, Scratch};

const BIN: &str = env!("CARGO_BIN_EXE_hyper2kvm");
const SUB: &str = "00000000-0000-0000-0000-0000000000aa";

/// One unattached disk, served slowly: every blob request waits `latency_ms`.
fn scenario(latency_ms: u64) -> String {
    format!(
        "settings: {{ blob_faults: {{ latency_ms: {latency_ms} }}, page_list_size: 4, operations: {{ polls: 1, retry_after_secs: 0 }} }}\nsubscriptions:\n  - id: {SUB}\n    resource_groups:\n      - name: rg\n        location: westeurope\n        unattached_disks:\n          - name: d1\n            size_bytes: 16777216\n            content: {{ seed: 3, scatter: {{ written_bytes: 1048576, extent_size: 65536 }} }}\n"
    )
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("HYPER2KVM_PROGRESS_INTERVAL", "1")
        .output()
        .unwrap()
}

/// `[12:00:01] ` at the start of a line.
fn stamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 11
        && b[0] == b'['
        && b[9] == b']'
        && b[10] == b' '
        && [1, 2, 4, 5, 7, 8].iter().all(|&i| b[i].is_ascii_digit())
        && b[3] == b':'
        && b[6] == b':'
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_convert_prints_stamped_lines_while_it_runs() {
    let sim = Simulator::start(&Scenario::from_yaml(&scenario(250)).unwrap())
        .await
        .unwrap();
    let sas = sim
        .grant_access(
            &format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/disks/d1"),
            Duration::from_secs(600),
        )
        .unwrap();
    let dir = Scratch::new("piped-convert");
    let out = dir.path("out.qcow2");
    let dst = s(&out).to_string();
    let o = tokio::task::spawn_blocking(move || {
        run(&[
            "convert",
            &sas,
            &dst,
            "--concurrency",
            "1",
            "--chunk-size",
            "64K",
        ])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| stamped(l)).collect();
    assert!(!lines.is_empty(), "no progress line: {stderr}");
    for l in &lines {
        assert!(l[11..].starts_with(&format!("{}: ", out.display())), "{l}");
    }
    // Once reading, a line says how much of how much (the written bytes, not the 16 MiB
    // disk), how fast, and how long is left.
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" MiB (") && l.contains("/s, ETA ")),
        "{stderr}"
    );
    assert!(!stderr.contains("of 16.0 MiB"), "{stderr}");
}

/// A fleet of two VMs of one 8 GiB disk each (1 MiB written), deallocated (exported
/// directly), served slowly; its config in `dir`, whose path it returns.
fn fleet_config(dir: &Scratch) -> String {
    let fleet = scenario(150).replace(
        "        unattached_disks:\n          - name: d1\n            size_bytes: 16777216\n            content: { seed: 3, scatter: { written_bytes: 1048576, extent_size: 65536 } }\n",
        "        vms:\n          - { name: vm-a, size: Standard_B1s, power_state: deallocated, os_type: linux, generation: 2, disks: [ { size_gb: 8, content: { seed: 1, scatter: { written_bytes: 1048576, extent_size: 65536 } } } ] }\n          - { name: vm-b, size: Standard_B1s, power_state: deallocated, os_type: linux, generation: 2, disks: [ { size_gb: 8, content: { seed: 2, scatter: { written_bytes: 1048576, extent_size: 65536 } } } ] }\n",
    );
    assert!(fleet.contains("vm-b"));
    std::fs::write(dir.path("fleet.yaml"), fleet).unwrap();
    let config = dir.path("config.yaml");
    std::fs::write(
        &config,
        format!(
            "azure:\n  subscription: {SUB}\n  resource_groups: [rg]\n  simulator: {{ scenario: fleet.yaml }}\noutput:\n  dir: {}\ndownload:\n  concurrency: 1\n  chunk_size: 64K\n  parallel_vms: 2\n  parallel_disks: 1\n",
            s(&dir.path("out"))
        ),
    )
    .unwrap();
    s(&config).to_string()
}

/// The overall line's start: `0/2 VMs done, 1 in flight; `.
fn overall(text: &str, vms: usize) -> bool {
    let Some((done, rest)) = text.split_once(&format!("/{vms} VMs done, ")) else {
        return false;
    };
    let Some((flying, _)) = rest.split_once(" in flight; ") else {
        return false;
    };
    [done, flying]
        .iter()
        .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn a_piped_run_prints_the_overall_line_and_the_vms_in_flight() {
    let dir = Scratch::new("piped-run");
    let o = run(&["-c", &fleet_config(&dir)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let stamps: Vec<usize> = (0..lines.len()).filter(|&i| stamped(lines[i])).collect();
    assert!(!stamps.is_empty(), "no progress line: {stderr}");
    for &i in &stamps {
        assert!(overall(&lines[i][11..], 2), "{}", lines[i]);
    }
    // Before any disk's ranges are known, the disks' sizes bound the total; after, the
    // written bytes are counted (about 2 MiB a disk, not its 8 GiB), with how many disks are
    // known, and an ETA is given.
    let known: Vec<&str> = stamps
        .iter()
        .map(|&i| lines[i])
        .filter(|l| l.contains("/2 disks known)"))
        .collect();
    assert!(!known.is_empty(), "{stderr}");
    for l in &known {
        assert!(
            l.contains(" of at most 16.0 GiB (0/2 disks known)") || l.contains(" MiB ("),
            "{l}"
        );
    }
    assert!(
        stamps
            .iter()
            .any(|&i| lines[i].contains("MiB") && lines[i].contains("ETA")),
        "{stderr}"
    );
    assert!(
        !stamps
            .iter()
            .any(|&i| lines[i].contains("16.0 GiB") && lines[i].contains("ETA")),
        "an ETA over the disks' full sizes: {stderr}"
    );
    // Under an overall line, a line per VM in flight, indented to its text: no more than
    // the two VMs, each once; one says a disk being read and how much of it.
    let mut seen_reading = false;
    for &i in &stamps {
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.starts_with("           vm-"))
            .copied()
            .collect();
        assert!(block.len() <= 2, "{block:#?}");
        let names: std::collections::BTreeSet<&str> = block.iter().map(|l| &l[11..15]).collect();
        assert_eq!(names.len(), block.len(), "{block:#?}");
        seen_reading |= block
            .iter()
            .any(|l| l.contains(" MiB  vm-") && l.ends_with("_OsDisk_1: reading"));
    }
    assert!(
        seen_reading,
        "no VM line says a disk is being read: {stderr}"
    );
}

#[test]
fn a_quiet_piped_run_prints_no_progress() {
    let dir = Scratch::new("quiet-run");
    let o = run(&["-c", &fleet_config(&dir), "--quiet"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    // The run lasts seconds (slow blobs) and lines would come every second: none does.
    assert!(
        !stderr.lines().any(|l| stamped(l) || l.starts_with(' ')),
        "{stderr}"
    );
    assert!(stderr.contains("2 of 2 VM(s) completed"), "{stderr}");
}
