//! The command line's conventions: `-o` for `--output`, help that says what a flag does,
//! config mistakes without the usage block and with the allowed range, shell completions
//! and the man page generated from the clap definitions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_hyper2kvm");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn hyper2kvm(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("h2k-conv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn short_o_selects_the_output_format() {
    let config = workspace().join("examples/list-sim.yaml");
    let out = hyper2kvm(&["-c", config.to_str().unwrap(), "--list-only", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let vms: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(!vms.as_array().unwrap().is_empty());

    let out = hyper2kvm(&["-c", config.to_str().unwrap(), "--dry-run", "-o", "table"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_err());
}

#[test]
fn help_says_output_is_not_the_image_format() {
    let help = text(&hyper2kvm(&["--help"]).stdout);
    let block: String = help
        .split("--output <FORMAT>")
        .nth(1)
        .expect("--output in --help")
        .lines()
        .take(4)
        .collect();
    assert!(help.contains("-o, --output <FORMAT>"), "{help}");
    assert!(block.contains("output.list_format"), "{block}");
    assert!(
        !block.contains("overrides output.format"),
        "output.format is the image format: {block}"
    );
}

/// The `hyper2kvm: error:` lines of stderr, and whether a usage block follows.
fn errors(out: &Output) -> (Vec<String>, bool) {
    let stderr = text(&out.stderr);
    let lines = stderr
        .lines()
        .filter(|l| l.starts_with("hyper2kvm: error:"))
        .map(str::to_string)
        .collect();
    (lines, stderr.contains("Usage:"))
}

#[test]
fn config_mistakes_have_no_usage_block() {
    let dir = Scratch::new("nousage");
    for (name, yaml, needle) in [
        (
            "unknown.yaml",
            "azure:\n  subscription: s\n  colour: red\n",
            "unknown field `colour`",
        ),
        ("syntax.yaml", "azure: [\n", "syntax.yaml"),
        (
            "value.yaml",
            "azure:\n  subscription: s\n  running_vm: pause\n",
            "pause",
        ),
    ] {
        let path = dir.write(name, yaml);
        let out = hyper2kvm(&["-c", &path, "--list-only"]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let (lines, usage) = errors(&out);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert!(lines[0].contains(needle), "{name}: {lines:?}");
        assert!(!usage, "{name}: {}", text(&out.stderr));
    }
    let out = hyper2kvm(&["-c", "/nonexistent/c.yaml", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!errors(&out).1, "{}", text(&out.stderr));

    // An argument mistake still shows the usage.
    let out = hyper2kvm(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(errors(&out).1, "{}", text(&out.stderr));
}

#[test]
fn config_numbers_state_their_range() {
    let dir = Scratch::new("range");
    for (yaml, expected) in [
        (
            "download:\n  concurrency: 0\n",
            "c.yaml:4:16: download.concurrency must be 1–1024, got 0",
        ),
        (
            "download:\n  concurrency: 70000\n",
            "c.yaml:4:16: download.concurrency must be 1–1024, got 70000",
        ),
        (
            "export:\n  operation_timeout_secs: 5\n",
            "c.yaml:4:27: export.operation_timeout_secs must be 10–86400, got 5",
        ),
    ] {
        let path = dir.write("c.yaml", &format!("azure:\n  subscription: s\n{yaml}"));
        let out = hyper2kvm(&["-c", &path, "--list-only"]);
        assert_eq!(out.status.code(), Some(2));
        let (lines, _) = errors(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].ends_with(expected), "{lines:?}");
    }
}

#[test]
fn numeric_flags_state_their_range() {
    let out = hyper2kvm(&["convert", "--concurrency", "70000", "a", "b"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("1..=1024"), "{stderr}");
    assert!(!stderr.contains("invalid digit"), "{stderr}");
    let out = hyper2kvm(&["import", "--parallel-vms", "0", "x.ova"]);
    assert!(
        text(&out.stderr).contains("1..=256"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn completions_for_every_shell() {
    let bash = hyper2kvm(&["completions", "bash"]);
    assert_eq!(bash.status.code(), Some(0));
    let script = text(&bash.stdout);
    for word in [
        "convert",
        "import",
        "fix",
        "sim",
        "completions",
        "man",
        "--list-only",
        "--output",
    ] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    assert!(script.contains("complete -F _hyper2kvm"), "{script}");
    for (shell, marker) in [
        ("zsh", "#compdef hyper2kvm"),
        ("fish", "complete -c hyper2kvm"),
        ("elvish", "edit:completion:arg-completer[hyper2kvm]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = hyper2kvm(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("convert"), "{shell}");
    }
    let out = hyper2kvm(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_page_from_the_clap_definitions() {
    let out = hyper2kvm(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let roff = text(&out.stdout);
    assert!(roff.contains(".TH hyper2kvm 1"), "{roff}");
    assert!(roff.contains(".SH OPTIONS"), "{roff}");
    for option in [
        r"\-c\fR, \fB\-\-config",
        r"\-\-list\-only",
        r"\-\-dry\-run",
        r"\-o\fR, \fB\-\-output",
        r"\-\-arm\-endpoint",
    ] {
        assert!(roff.contains(option), "the page lacks {option}");
    }
    assert!(roff.contains(r"hyper2kvm\-convert(1)"), "{roff}");
    assert!(roff.contains("Exit codes"), "{roff}");

    let out = hyper2kvm(&["man", "convert"]);
    let roff = text(&out.stdout);
    assert!(roff.contains(".TH hyper2kvm-convert 1"), "{roff}");
    assert!(roff.contains(r"\-\-cluster\-size"), "{roff}");

    let out = hyper2kvm(&["man", "nonesuch"]);
    assert_eq!(out.status.code(), Some(2));

    let dir = Scratch::new("man");
    let out = hyper2kvm(&["man", "--dir", dir.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for page in ["hyper2kvm.1", "hyper2kvm-convert.1", "hyper2kvm-import.1"] {
        let roff = std::fs::read_to_string(dir.0.join(page)).unwrap();
        assert!(roff.starts_with(".ie") && roff.contains(".TH"), "{page}");
    }
}

#[test]
fn each_cause_is_said_once() {
    let dir = Scratch::new("once");
    // An I/O error: the OS's words once.
    let missing = dir.0.join("missing.vhd");
    let out = hyper2kvm(&[
        "convert",
        missing.to_str().unwrap(),
        dir.0.join("o.qcow2").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    // A scenario mistake: the position once (serde-saphyr says it too), on one line.
    let scenario = dir.write("fleet.yaml", "settings:\n  page_size: lots\n");
    let out = hyper2kvm(&["sim", "--scenario", &scenario]);
    assert_eq!(out.status.code(), Some(2));
    let (lines, usage) = errors(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].matches("column 14").count(), 1, "{lines:?}");
    assert!(lines[0].ends_with("invalid u64"), "{lines:?}");
    assert!(!usage);
}
