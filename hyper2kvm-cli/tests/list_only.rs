//! The binary end to end: `hyper2kvm -c config.yaml --list-only` against the in-process
//! simulator (table and JSON), config and usage errors, `hyper2kvm sim`, and `convert`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hyper2kvm_sim::{Route, Scenario, SimHandle, Simulator};

const BIN: &str = env!("CARGO_BIN_EXE_hyper2kvm");
const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("h2k-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn example_sim() -> SimHandle {
    let scenario = Scenario::from_file(&workspace().join("examples/sim-fleet.yaml")).unwrap();
    Simulator::start(&scenario).await.unwrap()
}

/// Runs the binary off the async runtime (the simulator runs on it).
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn config(endpoint: &str, extra: &str) -> String {
    format!(
        "azure:\n  subscriptions: [\"{SUB}\"]\n  arm_endpoint: \"{endpoint}\"\n  auth: none\n  retry: {{ max_retries: 1, timeout_secs: 10 }}\n{extra}"
    )
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn list_only_prints_a_sorted_table() {
    let sim = example_sim().await;
    let dir = Scratch::new("table");
    let cfg = dir.write("config.yaml", &config(&sim.base_url(), ""));
    let out = run(args(&["-c", cfg.to_str().unwrap(), "--list-only"])).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    let header: Vec<&str> = lines[0]
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "RESOURCE GROUP",
            "LOCATION",
            "SIZE",
            "POWER STATE",
            "OS",
            "GEN",
            "DISKS",
            "DISK SIZE"
        ]
    );
    let rows: Vec<Vec<&str>> = lines[1..6]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(
        names,
        ["db-01", "win-app", "web-01", "web-02", "web-legacy"]
    );
    assert_eq!(
        rows[0],
        [
            "db-01",
            "rg-data",
            "northeurope",
            "Standard_E8s_v5",
            "running",
            "linux",
            "2",
            "4",
            "2.31",
            "TiB"
        ]
    );
    assert_eq!(
        rows[1],
        [
            "win-app",
            "rg-data",
            "northeurope",
            "Standard_D4s_v5",
            "deallocated",
            "windows",
            "1",
            "2",
            "639",
            "GiB"
        ]
    );
    assert_eq!(rows[4][4..8], ["stopped", "linux", "1", "1"]);
    assert_eq!(lines[6], "5 VMs, 11 disks, 3.27 TiB");
    assert_eq!(lines.len(), 7);

    // Three paged lists (page size 3: 5 VMs → 2 pages twice, 12 disks → 4 pages), nothing else.
    let c = sim.counters();
    assert_eq!(c.received(Route::ListVms), 2);
    assert_eq!(c.received(Route::ListVmStatuses), 2);
    assert_eq!(c.received(Route::ListDisks), 4);
    assert_eq!(c.total(), 8);
    assert_eq!(c.with_authorization(), 0);
    assert!(text(&out.stderr).contains("5 VMs in 1 subscription(s), 8 ARM requests"));
}

#[tokio::test(flavor = "multi_thread")]
async fn list_only_json_with_flags_overriding_the_file() {
    let sim = example_sim().await;
    let dir = Scratch::new("json");
    // The file points at a closed port and asks for a table; the flags win.
    let cfg = dir.write(
        "config.yaml",
        &config("http://127.0.0.1:1", "output:\n  list_format: table\n"),
    );
    let out = run(args(&[
        "-c",
        cfg.to_str().unwrap(),
        "--list-only",
        "--output",
        "json",
        "--arm-endpoint",
        &sim.base_url(),
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let vms: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vms = vms.as_array().unwrap();
    assert_eq!(vms.len(), 5);
    let db = &vms[0];
    assert_eq!(db["name"], "db-01");
    assert_eq!(db["subscription"], SUB);
    assert_eq!(db["resource_group"], "rg-data");
    assert_eq!(db["location"], "northeurope");
    assert_eq!(db["vm_size"], "Standard_E8s_v5");
    assert_eq!(db["power_state"], "running");
    assert_eq!(db["os_type"], "linux");
    assert_eq!(db["generation"], 2);
    assert_eq!(db["tags"]["app"], "db");
    assert!(db["id"]
        .as_str()
        .unwrap()
        .ends_with("/virtualMachines/db-01"));
    let disks = db["disks"].as_array().unwrap();
    let roles: Vec<_> = disks
        .iter()
        .map(|d| {
            (
                d["role"].as_str().unwrap(),
                d["lun"].as_u64(),
                d["size_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("os", None, 64 << 30),
            ("data", Some(0), 1024 << 30),
            ("data", Some(1), 1024 << 30),
            ("data", Some(4), 256 << 30)
        ]
    );
    let states: Vec<_> = vms
        .iter()
        .map(|v| v["power_state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "running",
            "deallocated",
            "running",
            "deallocated",
            "stopped"
        ]
    );
    let generations: Vec<_> = vms
        .iter()
        .map(|v| v["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(generations, [2, 1, 2, 2, 1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn selection_filters_from_the_config() {
    let sim = example_sim().await;
    let dir = Scratch::new("filters");
    let cfg = dir.write(
        "config.yaml",
        &config(
            &sim.base_url(),
            "",
        )
        .replace(
            "  auth: none\n",
            "  auth: none\n  selection:\n    power_states: [deallocated, stopped]\n    tags: { env: prod }\n    names: [\"w*\"]\n",
        ),
    );
    let out = run(args(&[
        "-c",
        cfg.to_str().unwrap(),
        "--list-only",
        "--output",
        "json",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let vms: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<_> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    // web-legacy is stopped but tagged env=test.
    assert_eq!(names, ["win-app", "web-02"]);
}

fn assert_one_error_line(stderr: &str, needle: &str) {
    let errors: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("hyper2kvm: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(needle), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_mistakes_exit_2_with_line_and_column() {
    let dir = Scratch::new("bad");
    let cfg = dir.write(
        "config.yaml",
        "azure:\n  subscriptions: [\"s\"]\n  colour: red\n",
    );
    let out = run(args(&["-c", cfg.to_str().unwrap(), "--list-only"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(
        &text(&out.stderr),
        "config.yaml:3:3: unknown field `colour`",
    );

    let cfg = dir.write(
        "types.yaml",
        "azure:\n  subscriptions: [\"s\"]\n  retry: { max_retries: many }\n",
    );
    let out = run(args(&["-c", cfg.to_str().unwrap(), "--list-only"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&text(&out.stderr), "types.yaml:3:");

    let out = run(args(&["-c", "/nonexistent/config.yaml", "--list-only"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(
        &text(&out.stderr),
        "cannot read config /nonexistent/config.yaml",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_mistakes_exit_2() {
    let out = run(vec![]).await;
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&text(&out.stderr), "nothing to do");

    let out = run(args(&["--list-only"])).await;
    assert_eq!(out.status.code(), Some(2), "--list-only needs -c");

    let dir = Scratch::new("usage");
    let cfg = dir.write("config.yaml", &config("http://127.0.0.1:1", ""));
    // A migration run over whole subscriptions (no resource group named) is refused before
    // any request (the endpoint is not even reachable).
    let out = run(args(&["-c", cfg.to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&text(&out.stderr), "azure.allow_whole_subscription");

    let out = run(args(&[
        "-c",
        cfg.to_str().unwrap(),
        "--list-only",
        "--arm-endpoint",
        "ftp://x",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&text(&out.stderr), "not an http(s) URL");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_endpoint_exits_1_with_one_line() {
    // Bind and drop a listener to find a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = Scratch::new("down");
    let cfg = dir.write(
        "config.yaml",
        &config(&format!("http://127.0.0.1:{port}"), ""),
    );
    let out = run(args(&["-c", cfg.to_str().unwrap(), "--list-only"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert_one_error_line(&text(&out.stderr), "Connection refused");
    assert!(out.stdout.is_empty());
}

#[test]
fn sim_subcommand_serves_a_scenario_and_the_flag_wins() {
    let dir = Scratch::new("sim");
    let scenario = dir.write(
        "two.yaml",
        &format!("subscriptions:\n  - id: {SUB}\n    generate: [{{ count: 2, resource_groups: [rg-z] }}]\n"),
    );
    let mut child = Command::new(BIN)
        .args(["sim", "--scenario"])
        .arg(&scenario)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let url = url.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    // The example config names an in-process simulator with five VMs; --arm-endpoint wins,
    // so the two VMs of the server above are listed.
    let out = Command::new(BIN)
        .args(["-c"])
        .arg(workspace().join("examples/list-sim.yaml"))
        .args(["--list-only", "--output", "json", "--arm-endpoint", &url])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let vms: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<_> = vms
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vm-00000", "vm-00001"]);

    let bad = Command::new(BIN)
        .args(["sim", "--scenario", "/nonexistent/scenario.yaml"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn example_config_lists_the_example_scenario_in_process() {
    let out = run(vec![
        "-c".into(),
        workspace()
            .join("examples/list-sim.yaml")
            .display()
            .to_string(),
        "--list-only".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("NAME "), "{stdout}");
    assert!(stdout.ends_with("5 VMs, 11 disks, 3.27 TiB\n"), "{stdout}");
    assert!(text(&out.stderr).contains("8 ARM requests"));
}

#[test]
fn convert_still_works() {
    let dir = Scratch::new("convert");
    let src = dir.0.join("disk.raw");
    let mut data = vec![0u8; 1 << 20];
    data[4096..8192].fill(0xab);
    std::fs::write(&src, &data).unwrap();
    let dst = dir.0.join("disk.img");
    let out = Command::new(BIN)
        .arg("convert")
        .arg(&src)
        .arg(&dst)
        .args(["-O", "raw", "--quiet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&dst).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_plans_every_vm_and_changes_nothing() {
    let sim = example_sim().await;
    let dir = Scratch::new("dry-run");
    let out_dir = dir.0.join("out");
    let extra = format!(
        "  running_vm: snapshot\noutput:\n  dir: {}\n  format: qcow2\n",
        out_dir.display()
    );
    let cfg = dir.write("config.yaml", &config(&sim.base_url(), &extra));
    let out = run(args(&[
        "-c",
        cfg.to_str().unwrap(),
        "--dry-run",
        "--output",
        "json",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["schema_version"], 2, "{plan}");
    assert_eq!(plan["tool_version"], env!("CARGO_PKG_VERSION"));
    let vms = plan["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 5);
    for vm in vms {
        let kind = vm["action"]["kind"].as_str().unwrap();
        let want = if vm["power_state"] == "deallocated" {
            "export_disks"
        } else {
            "snapshot"
        };
        assert_eq!(kind, want, "{vm}");
        let name = vm["name"].as_str().unwrap();
        for disk in vm["disks"].as_array().unwrap() {
            let output = disk["output"].as_str().unwrap();
            let file = match disk["lun"].as_u64() {
                None => format!("{name}-os.qcow2"),
                Some(lun) => format!("{name}-data-lun{lun}.qcow2"),
            };
            assert_eq!(output, out_dir.join(name).join(file).display().to_string());
            assert_eq!(disk["snapshot"].is_string(), kind == "snapshot", "{disk}");
        }
    }
    let stderr = text(&out.stderr);
    assert!(stderr.contains("dry run: 5 VMs, 11 disks") && stderr.contains("nothing changed"));
    assert!(stderr.contains("allow_whole_subscription"), "{stderr}");
    // Nothing written, and only the three list calls reached the simulator.
    assert!(!out_dir.exists());
    let c = sim.counters();
    let lists = c.received(Route::ListVms)
        + c.received(Route::ListVmStatuses)
        + c.received(Route::ListDisks);
    assert_eq!(c.total(), lists, "{:?}", c.snapshot());

    let table = run(args(&["-c", cfg.to_str().unwrap(), "--dry-run"])).await;
    let stdout = text(&table.stdout);
    assert!(
        stdout.contains("db-01 (rg-data, running): snapshot, export snapshots"),
        "{stdout}"
    );
    assert!(
        stdout.contains("win-app (rg-data, deallocated): export disks"),
        "{stdout}"
    );
}

#[test]
fn a_whole_subscription_run_is_refused_unless_allowed() {
    let dir = Scratch::new("no-run");
    let cfg = dir.write("config.yaml", &config("http://127.0.0.1:1", ""));
    let out = Command::new(BIN)
        .args(["-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("azure.resource_groups"), "{stderr}");
    // Allowed, the run goes ahead: here it cannot reach the endpoint (exit 1, not 2).
    let cfg = dir.write(
        "allowed.yaml",
        &config(
            "http://127.0.0.1:1",
            "  allow_whole_subscription: true\noutput: { dir: out }\n",
        ),
    );
    let out = Command::new(BIN)
        .args(["-c", cfg.to_str().unwrap()])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

/// Regression: `--list-only`, `--dry-run` and `plan` were silent through a retry wait (a 429
/// with `Retry-After: 7`), up to a minute with nothing on the screen. They say it on stderr,
/// as a migration run does; stdout stays the output (JSON here).
#[tokio::test(flavor = "multi_thread")]
async fn list_dry_run_and_plan_say_a_long_wait_on_stderr() {
    let throttled = std::fs::read_to_string(workspace().join("examples/sim-fleet.yaml"))
        .unwrap()
        .replace(
            "throttle: { first: 0, every: 0, retry_after_secs: 1 }",
            "throttle: { first: 1, every: 0, retry_after_secs: 7 }",
        );
    assert!(
        throttled.contains("first: 1,"),
        "the example's settings moved"
    );
    let dir = Scratch::new("waits");
    let out_dir = dir.0.join("out");
    let plan_file = dir.0.join("plan.json");
    let modes: [&[&str]; 3] = [
        &["--list-only", "--output", "json"],
        &["--dry-run", "--output", "json"],
        &[
            "plan",
            "--shards",
            "2",
            "--output",
            plan_file.to_str().unwrap(),
        ],
    ];
    let mut runs = Vec::new();
    for (i, mode) in modes.iter().enumerate() {
        // One simulator each: only its first request is throttled.
        let sim = Simulator::start(&Scenario::from_yaml(&throttled).unwrap())
            .await
            .unwrap();
        let extra = format!("output:\n  dir: {}\n  format: qcow2\n", out_dir.display());
        let cfg = dir.write(&format!("config{i}.yaml"), &config(&sim.base_url(), &extra));
        let mut all = args(&["-c", cfg.to_str().unwrap()]);
        all.extend(args(mode));
        runs.push((sim, mode.join(" "), tokio::spawn(run(all))));
    }
    for (_sim, mode, out) in runs {
        let out = out.await.unwrap();
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{mode}: {stderr}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("hyper2kvm: waiting for ") && l.contains(" s)")),
            "{mode}: no wait line in:\n{stderr}"
        );
        if mode.starts_with("--") {
            let _: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!("{mode}: stdout is not JSON ({e}): {}", text(&out.stdout))
            });
        }
    }
    assert!(!out_dir.exists(), "nothing written");
}
