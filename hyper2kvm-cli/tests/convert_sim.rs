//! `hyper2kvm convert 'SAS URL' out.qcow2` against the in-process simulator: the image is
//! identical to the disk, and no signature appears in the captured stdout or stderr, when it
//! works and when the SAS is refused.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Output};
use std::time::Duration;

use hyper2kvm_sim::{BlobFaults, Scenario, SimHandle, Simulator};
use support::{assert_image_matches, s, Scratch};

const SUB: &str = "00000000-0000-0000-0000-00000000c11c";
const DISK_ID: &str = "/subscriptions/00000000-0000-0000-0000-00000000c11c/resourceGroups/rg/providers/Microsoft.Compute/disks/d1";

async fn sim(faults: BlobFaults) -> SimHandle {
    let yaml = format!(
        "settings: {{ page_list_size: 8 }}\nsubscriptions:\n  - id: {SUB}\n    resource_groups:\n      - name: rg\n        unattached_disks:\n          - name: d1\n            size_bytes: 33554432\n            content: {{ seed: 5, scatter: {{ written_bytes: 6291456, extent_size: 131072 }} }}\n"
    );
    let mut scenario = Scenario::from_yaml(&yaml).unwrap();
    scenario.settings.blob_faults = faults;
    Simulator::start(&scenario).await.unwrap()
}

async fn hyper2kvm(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hyper2kvm"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn assert_no_secret(out: &Output, sim: &SimHandle) {
    for text in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(text);
        for sig in sim.signatures() {
            let encoded = sig
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D");
            assert!(
                !text.contains(&sig) && !text.contains(&encoded) && !text.contains("sig="),
                "SAS leaked: {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converts_a_granted_disk_under_faults_without_showing_the_sas() {
    let sim = sim(BlobFaults {
        reset_every: 5,
        bad_md5_every: 7,
        ..Default::default()
    })
    .await;
    let sas = sim.grant_access(DISK_ID, Duration::from_secs(600)).unwrap();
    let dir = Scratch::new("cli-sim");
    let out = dir.path("out.qcow2");
    let run = hyper2kvm(vec!["convert".into(), sas.clone(), s(&out).into()]).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_no_secret(&run, &sim);
    let reference = dir.path("ref.raw");
    sim.disk("d1")
        .unwrap()
        .write_raw_reference(&reference)
        .unwrap();
    assert_image_matches(&out, "qcow2", &reference);
    assert!(sim.counters().resets() > 0 && sim.counters().bad_md5() > 0);

    // A wrong signature: refused (403), reported without the URL's query.
    let (head, _) = sas.split_once("sig=").unwrap();
    let forged = format!("{head}sig=Zm9yZ2VkLXNpZ25hdHVyZQ%3D%3D&sp=r");
    let again = dir.path("again.qcow2");
    let run = hyper2kvm(vec!["convert".into(), forged, s(&again).into()]).await;
    assert_eq!(run.status.code(), Some(1));
    assert_no_secret(&run, &sim);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("403"), "{stderr}");
    assert!(!stderr.contains("Zm9yZ2Vk"), "{stderr}");
    assert!(!again.exists());
}

/// A wait of more than 5 s (here the blob service's `Retry-After: 7`) shows while it lasts:
/// piped, as a plain line naming what is waited for, without the SAS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_shows_while_it_lasts() {
    let sim = sim(BlobFaults {
        throttle_every: 25,
        retry_after_secs: 7,
        ..Default::default()
    })
    .await;
    let sas = sim.grant_access(DISK_ID, Duration::from_secs(600)).unwrap();
    let dir = Scratch::new("cli-sim-wait");
    let out = dir.path("out.qcow2");
    let run = hyper2kvm(vec!["convert".into(), sas, s(&out).into()]).await;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert_no_secret(&run, &sim);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("hyper2kvm: waiting for "))
        .unwrap_or_else(|| panic!("no wait line in:\n{stderr}"));
    assert!(line.contains(" s)"), "{line}");
}
