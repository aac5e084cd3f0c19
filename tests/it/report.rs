//! The fleet report end to end (issue 18, point 6): real git repos, the `protond` binary, the
//! real AWS SDK against a `moto_server`, a real `SQLite` file. A minor (web-svc 1.1) rolled
//! out to dev while prod waits for dev's soak, a new major (basic-env 2.0) proposed through
//! the plain git forge, and a halted rollout: `protond report --output json` counts what the
//! records say, `GET /api/v1/report` answers the same document, `/metrics` exposes
//! `protond_versions_behind` with the right values, and the status page shows the table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::world::World;
use crate::common::{self, text};

const DEV: &str = "service_instance/payments/payments-dev";
const PROD: &str = "service_instance/payments/payments-prod";

/// `protond report --output json`, parsed.
fn report_json(w: &World) -> Value {
    let out = w.run(&["report", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

/// The report's (template, version) -> resources.
fn counts(report: &Value) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for t in report["templates"].as_array().expect("templates") {
        for g in t["versions"].as_array().expect("versions") {
            out.insert(
                (
                    t["template"].as_str().expect("name").to_string(),
                    g["version"].as_str().expect("version").to_string(),
                ),
                g["resources"].as_u64().expect("count"),
            );
        }
    }
    out
}

/// The template `name`'s line of the report.
fn template<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .find(|t| t["template"] == name)
        .unwrap_or_else(|| panic!("{name} in {report:#}"))
}

/// The version group `version` of `t`.
fn group<'a>(t: &'a Value, version: &str) -> &'a Value {
    t["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|g| g["version"] == version)
        .unwrap_or_else(|| panic!("{version} in {t:#}"))
}

/// The value of `protond_versions_behind{template,kind}` in a metrics text.
fn behind(metrics: &str, template: &str, kind: &str) -> Option<f64> {
    let prefix = format!("protond_versions_behind{{template=\"{template}\",kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_the_records_after_a_partial_minor_and_a_new_major() {
    let w = World::examples_on_moto()
        .config(|c| {
            c.top("poll_interval = \"1h\"")
                .section("[daemon]\nwatch = false")
                .section("[rollout]\nstages = [\"dev\", \"prod\"]\nsoak = \"1h\"")
                .repo_line("platform-envs", "forge = { kind = \"git\" }");
        })
        .build();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));

    // web-svc 1.1 reaches dev; prod waits for dev's soak (an hour).
    w.replace(
        "platform-templates",
        "web-svc/v1/instance_infrastructure/cloudformation.yaml",
        "VisibilityTimeout: 60",
        "VisibilityTimeout: 61",
    );
    w.commit("platform-templates", "web-svc 1.1");
    w.tag("web-svc/v1.1", "web-svc 1.1");
    // basic-env 2.0: the environments stay on 1.0 and get a pull request (branch) each.
    crate::proposals::release(&w, "basic-env", 2, "basic-env 2.0", |_, t| t);
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let halt = w.run(&["rollout", "halt", "worker-svc/v1.0", "--reason", "looking"]);
    assert!(halt.status.success(), "{}", text(&halt));

    let store = w.store().await;
    let records = store.resources().await.expect("records");
    let version_of = |id: &str| {
        records
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.version.to_string())
    };
    assert_eq!(version_of(DEV).as_deref(), Some("1.1"), "dev moved");
    assert_eq!(version_of(PROD).as_deref(), Some("1.0"), "prod soaks");

    // The report's counts are the records' (components have no versioned template).
    let report = report_json(&w);
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.kind != protond::model::ResourceKind::Component)
    {
        *want
            .entry((r.template.clone(), r.version.to_string()))
            .or_default() += 1;
    }
    assert_eq!(counts(&report), want, "{report:#}");
    assert!(want.len() >= 4, "{want:?}");

    let web = template(&report, "web-svc");
    assert_eq!(web["kind"], "service");
    assert_eq!(web["newest"], "1.1");
    assert_eq!(group(web, "1.1")["minors_behind"], 0);
    assert_eq!(group(web, "1.0")["minors_behind"], 1);
    assert_eq!(group(web, "1.0")["majors_behind"], 0);
    assert_eq!(web["oldest"]["version"], "1.0");
    let oldest: Vec<&str> = web["oldest"]["resources"]
        .as_array()
        .expect("oldest")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(oldest.contains(&PROD), "{oldest:?}");
    assert!(!oldest.contains(&DEV), "{oldest:?}");

    let env = template(&report, "basic-env");
    assert_eq!(env["kind"], "environment");
    assert_eq!(env["newest"], "2.0");
    assert_eq!(env["newest_major"], 2);
    assert_eq!(group(env, "1.0")["resources"], 2);
    assert_eq!(group(env, "1.0")["majors_behind"], 1);
    assert_eq!(group(env, "1.0")["newest_minor"], "1.0");
    assert_eq!(env["pull_requests_waiting"], 2);
    let prs: Vec<&str> = report["pull_requests"]
        .as_array()
        .expect("pull requests")
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert_eq!(prs.len(), 2, "{report:#}");
    assert!(
        prs.iter().all(|p| p.starts_with("proton/environments/")),
        "{prs:?}"
    );
    let stopped = &report["stopped_rollouts"];
    assert_eq!(stopped.as_array().map(Vec::len), Some(1), "{stopped:#}");
    assert_eq!(stopped[0]["template"], "worker-svc");
    assert_eq!(stopped[0]["status"], "halted");
    assert_eq!(stopped[0]["reason"], "looking");
    assert_eq!(report["holds"], serde_json::json!([]));

    let table = w.run(&["report"]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    for want in [
        "TEMPLATE",
        "web-svc",
        "basic-env",
        "Pull requests waiting:",
        "HALTED",
    ] {
        assert!(table.contains(want), "{want:?} in\n{table}");
    }

    // The daemon's API answers the same document; its metrics and page agree.
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let daemon = w.spawn(&["run", "--listen", &format!("127.0.0.1:{port}")]);
    // After its first cycle (nothing to start: prod soaks), so the store is as it stays.
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let metrics = match reqwest::get(format!("{base}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let cycles = metrics
            .lines()
            .find_map(|l| l.strip_prefix("protond_reconcile_cycles_total "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if cycles.is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no cycle: {}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = reqwest::get(format!("{base}/api/v1/report"))
        .await
        .expect("API answers");
    assert_eq!(r.status(), 200);
    let api: Value = r.json().await.expect("API JSON");
    assert_eq!(api, report_json(&w), "the API and the CLI agree");
    assert_eq!(counts(&api), want);

    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for (t, kind, value) in [
        ("web-svc", "minor", 1.0),
        ("web-svc", "major", 0.0),
        ("basic-env", "minor", 0.0),
        ("basic-env", "major", 1.0),
        ("worker-svc", "minor", 0.0),
    ] {
        assert_eq!(
            behind(&metrics, t, kind),
            Some(value),
            "{t} {kind}:\n{metrics}"
        );
    }
    let page = reqwest::get(&base)
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("<h2>Versions</h2>"), "{page}");
    assert!(page.contains("1 minor"), "web-svc 1.0 is a minor behind");
    assert!(page.contains("1 major"), "basic-env 1.0 is a major behind");
}
