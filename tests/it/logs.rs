//! The text log, as ops read it through journald or a collector: plain lines (no ANSI colour
//! when not writing to a terminal, one event per line, no `Some(..)` debug text), idle cycles
//! out of the way at debug, and an unchanged problem warned once, not every poll.

use std::time::Duration;

use crate::common::running::Running;
use crate::common::world::World;

#[test]
fn text_logs_are_plain_lines_and_an_unchanged_problem_is_warned_once() {
    let w = World::examples_on_moto()
        .config(|c| {
            c.top("poll_interval = \"300ms\"");
        })
        .build();
    // A spec whose input the schema refuses: the resource is invalid every cycle.
    w.replace(
        "payments",
        "proton/services/reports.yaml",
        "visibility_timeout: 120",
        "visibility_timeout: not-a-number",
    );
    w.commit("payments", "break the reports spec");
    let mut cmd = w.command(&["run", "--no-server"]);
    cmd.env("PROTOND_LOG_FORMAT", "pretty")
        .env("PROTOND_LOG", "info");
    let mut daemon = Running::start(cmd);
    // The first cycle deploys the rest; then at least five idle polls.
    assert!(
        daemon.wait_for_line(Duration::from_secs(90), |l| l
            .contains("Deployment succeeded.")),
        "{}",
        daemon.log()
    );
    let _ = daemon.wait_for_line(Duration::from_secs(4), |_| false);
    daemon.terminate();
    let _ = daemon.wait_for_line(Duration::from_secs(20), |l| l.contains("bye"));
    let log = daemon.log();
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a piped log:\n{log}"
    );
    assert!(
        !log.contains("Some(") && !log.contains("None"),
        "debug text:\n{log}"
    );
    let invalid = log
        .lines()
        .filter(|l| l.contains("Resource is invalid"))
        .count();
    assert_eq!(invalid, 1, "an unchanged problem is warned once:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("Resource is invalid") && l.contains("reports-dev")),
        "{log}"
    );
    // Idle cycles are at debug: the info log has at most the cycles that started something.
    let finished = log.matches("Reconcile cycle finished").count();
    let started = log.matches("Deployment started.").count();
    assert!(
        finished >= 1 && finished <= started,
        "{finished} cycles logged for {started} deployments:\n{log}"
    );
    for line in log.lines() {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "every line is an event of its own: {line:?}"
        );
    }
}

/// The keys of one text line's `key=value` pairs.
fn text_keys(line: &str) -> Vec<String> {
    let re = regex::Regex::new(r#" ([a-z_][a-z0-9_]*)=("([^"\\]|\\.)*"|\S*)"#).expect("regex");
    re.captures_iter(line).map(|c| c[1].to_string()).collect()
}

#[test]
fn a_cycle_logs_every_field_once_in_json_and_text() {
    let w = World::examples_on_moto().build();
    // JSON (the suites' default): no span field repeats one of the event's.
    let out = w.reconcile();
    let log = crate::common::text(&out);
    assert!(out.status.success(), "{log}");
    let mut deployments = 0;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        let fields = v["fields"].as_object().expect("fields");
        if let Some(span) = v["span"].as_object() {
            for key in span.keys().filter(|k| *k != "name") {
                assert!(!fields.contains_key(key), "{key} twice in {line}");
            }
        }
        if v["fields"]["message"] == "Deployment started." {
            deployments += 1;
            assert!(fields.contains_key("resource"), "{line}");
            assert_eq!(v["span"]["name"], "deployment", "{line}");
            assert!(v["span"].get("deployment").is_some(), "{line}");
        }
    }
    assert!(deployments >= 1, "no deployment in\n{log}");

    // Text: no key twice on a line, span fields included.
    w.replace(
        "payments",
        "proton/services/payments.yaml",
        "desired_count: 3",
        "desired_count: 4",
    );
    w.commit("payments", "scale prod");
    let out = w
        .command(&["reconcile", "--once"])
        .env("PROTOND_LOG_FORMAT", "pretty")
        .output()
        .expect("protond runs");
    let log = crate::common::text(&out);
    assert!(out.status.success(), "{log}");
    let mut started = 0;
    for line in log.lines() {
        let keys = text_keys(line);
        let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "a key twice: {line}");
        if line.contains("Deployment started.") {
            started += 1;
            assert!(
                line.contains(" deployment:") || line.contains(":deployment:"),
                "{line}"
            );
            for key in ["resource", "deployment", "version"] {
                assert!(keys.iter().any(|k| k == key), "{key} missing: {line}");
            }
        }
    }
    assert_eq!(started, 1, "{log}");
}
