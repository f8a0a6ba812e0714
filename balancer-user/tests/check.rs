//! `balancer check` as a user runs it: the real binary on files, its exit status
//! and what it prints.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The user contract (shared/spec/balancer.example.toml, outside the repository),
/// copied byte for byte.
const CONTRACT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/contract.toml");
/// The project's commented reference configuration.
const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/balancer.example.toml"
);
/// What both say about the settings that their mode (active-standby) does not
/// use, in the order `check` finds them. Every feature of the contract is
/// built: nothing is said to be not enforced yet.
const PENDING: [&str; 1] = ["ha.announce_table"];
const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/check")
        .join(name)
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check(config: &Path, extra: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_balancer"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .expect("run balancer");
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

/// Runs `check` on a fixture that must be refused, and returns its stderr after
/// asserting the closing line and that `expected` (an `error: ...` line start
/// with key path and line) is among the errors.
fn refused(name: &str, problems: usize, expected: &[&str]) -> String {
    let path = fixture(name);
    let run = check(&path, &[]);
    assert_eq!(run.code, Some(2), "{name}: stderr:\n{}", run.stderr);
    assert!(run.stdout.is_empty(), "{name}: stdout: {}", run.stdout);
    let noun = if problems == 1 { "problem" } else { "problems" };
    let closing = format!("{}: refused ({problems} {noun})", path.display());
    assert_eq!(
        run.stderr.lines().last(),
        Some(closing.as_str()),
        "{name}:\n{}",
        run.stderr
    );
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), problems, "{name}:\n{}", run.stderr);
    for start in expected {
        assert!(
            errors.iter().any(|line| line.starts_with(start)),
            "{name}: no line starting {start:?} in:\n{}",
            run.stderr
        );
    }
    run.stderr
}

#[test]
fn syntax_error() {
    let stderr = refused(
        "syntax-error.toml",
        1,
        &["error: line 3: TOML syntax error"],
    );
    assert!(stderr.contains("column"), "{stderr}");
}

#[test]
fn unknown_key() {
    let stderr = refused(
        "unknown-key.toml",
        1,
        &["error: service[0].backends[1].wieght (line 12): unknown key `wieght`"],
    );
    assert!(stderr.contains("`weight`"), "{stderr}");
}

#[test]
fn bad_address() {
    refused(
        "bad-address.toml",
        1,
        &["error: service[0].backends[1].address (line 12): `203.0.113.300` is not an IP address"],
    );
}

#[test]
fn bad_cidr() {
    let stderr = refused(
        "bad-cidr.toml",
        1,
        &["error: firewall.deny[1] (line 7): `192.0.2.1/24` has host bits set"],
    );
    assert!(stderr.contains("192.0.2.0/24"), "{stderr}");
}

#[test]
fn port_out_of_range() {
    refused(
        "port-out-of-range.toml",
        1,
        &["error: service[0].port (line 9): port 80800 is out of range 1-65535"],
    );
}

#[test]
fn duplicate_vip_port_protocol() {
    refused(
        "duplicate-service.toml",
        1,
        &[
            "error: service[1].vip (line 14): 198.51.100.10 port 8080/tcp is already used by service[0] (\"api\")",
        ],
    );
}

#[test]
fn no_backends() {
    refused(
        "no-backends.toml",
        1,
        &["error: service[0].backends (line 10): is empty"],
    );
}

#[test]
fn all_weights_zero() {
    refused(
        "zero-weights.toml",
        1,
        &["error: service[0].backends (line 10): every backend has weight 0"],
    );
}

#[test]
fn unknown_scheduler() {
    let stderr = refused(
        "unknown-scheduler.toml",
        1,
        &["error: service[0].scheduler (line 10): unknown variant `least-connections`"],
    );
    assert!(
        stderr.contains("`least-conn`, `p2c`, `maglev`, `round-robin`"),
        "{stderr}"
    );
}

#[test]
fn several_mistakes_are_all_reported_in_file_order() {
    let stderr = refused(
        "several-mistakes.toml",
        7,
        &[
            "error: node.interfaces (line 4): is empty",
            "error: node.snat_addresses[1] (line 5):",
            "error: firewall.deny[0] (line 8):",
            "error: service[0].port (line 13):",
            "error: service[0].backends[0].address (line 14): IPv6 backend",
            "error: service[1].name (line 17): name \"api\" is already used by service[0]",
            "error: service[1].backends[0].weight (line 20):",
        ],
    );
    let lines: Vec<usize> = stderr
        .lines()
        .filter_map(|l| l.split_once("(line ")?.1.split_once(')')?.0.parse().ok())
        .collect();
    assert!(lines.is_sorted(), "{stderr}");
}

#[test]
fn json_report_of_a_refused_file() {
    let run = check(&fixture("bad-cidr.toml"), &["--json"]);
    assert_eq!(run.code, Some(2));
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(report["ok"], false);
    assert_eq!(report["summary"], serde_json::Value::Null);
    assert_eq!(report["problems"][0]["path"], "firewall.deny[1]");
    assert_eq!(report["problems"][0]["line"], 7);
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("host bits")
    );
}

#[test]
fn missing_file_is_refused_with_its_name() {
    let path = Path::new("/nonexistent/balancer.toml");
    let run = check(path, &[]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .starts_with("error: /nonexistent/balancer.toml: cannot read the configuration:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .ends_with("/nonexistent/balancer.toml: refused (1 problem)\n")
    );
}

/// Accepted (exit 0), its summary on stdout, and on stderr one warning for each
/// of `expected` and nothing else.
fn accepted_with_the_pending_warnings(path: &str, summary: &str, expected: &[&str]) {
    let run = check(Path::new(path), &[]);
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_eq!(run.stdout, format!("ok: {summary}\n"));
    let warned: Vec<&str> = run
        .stderr
        .lines()
        .map(|line| {
            let rest = line
                .strip_prefix("warning: ")
                .unwrap_or_else(|| panic!("{line}"));
            rest.split_once(": ").unwrap().0
        })
        .collect();
    assert_eq!(warned, expected, "stderr:\n{}", run.stderr);
}

#[test]
fn contract_is_accepted_with_what_its_mode_ignores_said() {
    accepted_with_the_pending_warnings(CONTRACT, "5 services, 13 backends (node lb-a)", &PENDING);
}

#[test]
fn reference_is_accepted_with_what_its_mode_ignores_said() {
    // The reference, in active-standby, also documents active-active's drain.
    let expected = [
        "ha.announce_table",
        "ha.withdraw_wait_ms",
        "ha.drain_timeout_s",
    ];
    accepted_with_the_pending_warnings(REFERENCE, "6 services, 15 backends (node lb-a)", &expected);
}

#[test]
fn json_report_of_the_contract() {
    let run = check(Path::new(CONTRACT), &["--json"]);
    assert_eq!(run.code, Some(0));
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(report["ok"], true);
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(
        report["summary"],
        serde_json::json!({ "node": "lb-a", "services": 5, "backends": 13 })
    );
    let paths: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, PENDING);
    assert!(
        report["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ignored with mode"),
        "{}",
        report["warnings"]
    );
}

/// The demo configuration ships with the repository; it must always check clean.
#[test]
fn demo_file_is_accepted() {
    let demo = Path::new(DEMO);
    if !demo.exists() {
        return;
    }
    let run = check(demo, &[]);
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert!(run.stdout.starts_with("ok: "), "{}", run.stdout);
}
