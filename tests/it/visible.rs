//! Every resource is visible from its first deployment attempt: a resource whose first create
//! failed in `CloudFormation` has no record, yet `protond status` (table and JSON), the JSON
//! API, the status page and `protond_resources` list it as `create failed`, and
//! `reconcile --once` exits 1; a resource the daemon's last cycle found invalid before it was
//! ever deployed is listed by the API, the page and the metric as `spec invalid`.
//! `moto_server`, real git repos, a real `SQLite` file.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::world::World;
use crate::common::{self, git, text};

const REPORTS_DEV: &str = "service_instance/reports/reports-dev";
const REPORTS_PROD: &str = "service_instance/reports/reports-prod";

/// The examples on `moto_server`, with the worker template's first release broken (a
/// resource attribute of a resource that does not exist: moto fails the stack) and a second
/// reports instance whose spec has an input the schema does not know.
fn world() -> World {
    World::examples_on_moto()
        .setup(|root| {
            let templates = root.join("platform-templates");
            let worker =
                templates.join("worker-svc/v1/instance_infrastructure/cloudformation.yaml");
            let t = std::fs::read_to_string(&worker).expect("worker template");
            std::fs::write(
                &worker,
                t.replacen(
                    "Resources:",
                    "Resources:\n  Broken:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds: !GetAtt NoSuchResource.Arn\n",
                    1,
                ),
            )
            .expect("write");
            git(&templates, &["commit", "-qam", "a worker that fails on create"]);
            let payments = root.join("payments");
            let spec = payments.join("proton/services/reports.yaml");
            let mut s = std::fs::read_to_string(&spec).expect("reports spec");
            s.push_str(
                "  - name: reports-prod\n    environment: prod\n    spec:\n      visibility_timeout: 120\n      unknown_input: 1\n",
            );
            std::fs::write(&spec, s).expect("write");
            git(&payments, &["commit", "-qam", "an invalid instance"]);
        })
        .config(|c| {
            c.top("poll_interval = \"1h\"")
                .section("[daemon]\nshutdown_grace = \"10s\"\nwatch = false");
        })
        .build()
}

fn resource<'a>(rows: &'a Value, id: &str) -> Option<&'a Value> {
    rows.as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == id))
}

/// The value of one metric series in the text exposition, if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The page's table row of resource `id`: from its id to the end of the row.
fn page_row<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("<code>{id}</code>"))
        .unwrap_or_else(|| panic!("{id} is on the page:\n{page}"));
    let row = &page[at..];
    &row[..row.find("</tr>").unwrap_or(row.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_create_is_listed_everywhere_and_fails_reconcile() {
    let w = world();

    // The first run: the reports instance fails to create, everything else deploys.
    let out = w.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(REPORTS_DEV), "{}", text(&out));
    let store = w.store().await;
    assert!(
        store
            .resources()
            .await
            .expect("records")
            .iter()
            .all(|r| r.id != REPORTS_DEV),
        "a failed first create leaves no record"
    );
    // Still failing on the next run, which retries nothing.
    let out = w.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(REPORTS_DEV), "{}", text(&out));

    // protond status, as a table and as JSON.
    let out = w.run(&["status"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let line = table
        .lines()
        .find(|l| l.starts_with(REPORTS_DEV))
        .unwrap_or_else(|| panic!("{REPORTS_DEV} is listed:\n{table}"));
    assert!(
        line.contains("create failed") && line.contains("NoSuchResource"),
        "{line}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("environment/dev") && l.contains("deployed")),
        "{table}"
    );
    let out = w.run(&["status", "--output", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("status json");
    let row = resource(&json["resources"], REPORTS_DEV).expect("listed in JSON");
    assert_eq!(row["status"], "create_failed", "{row}");
    assert_eq!(row["version"], Value::Null, "nothing is deployed: {row}");
    assert_eq!(row["template"], "worker-svc", "{row}");
    assert_eq!(row["last_deployment"]["action"], "create", "{row}");
    assert!(
        row["last_deployment"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("NoSuchResource")),
        "{row}"
    );

    // The daemon: the API, the page and the metric, with what its cycle found invalid.
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _daemon = w.spawn(&["run", "--listen", &format!("127.0.0.1:{port}")]);
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http.get(url).send().await.ok()?;
            r.text().await.ok()
        }
    };
    let instances = |services: &Value| -> Value {
        Value::Array(
            services
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["service"] == "reports")
                .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
                .collect(),
        )
    };
    let start = Instant::now();
    let services = loop {
        let services: Value = get("/api/v1/services")
            .await
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        if resource(&instances(&services), REPORTS_PROD).is_some() {
            break services;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the daemon's first cycle never listed {REPORTS_PROD}: {services}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reports = instances(&services);
    let dev = resource(&reports, REPORTS_DEV).expect("reports-dev in the API");
    assert_eq!(dev["status"], "create_failed", "{dev}");
    let prod = resource(&reports, REPORTS_PROD).expect("reports-prod in the API");
    assert_eq!(prod["status"], "spec_invalid", "{prod}");
    assert!(
        prod["problem"]
            .as_str()
            .is_some_and(|p| p.contains("unknown_input")),
        "{prod}"
    );

    let page = get("/").await.expect("the status page");
    let row = page_row(&page, REPORTS_DEV);
    assert!(
        row.contains("class=\"bad\">create failed") && row.contains("NoSuchResource"),
        "{row}"
    );
    let row = page_row(&page, REPORTS_PROD);
    assert!(
        row.contains("class=\"bad\">spec invalid") && row.contains("unknown_input"),
        "{row}"
    );
    assert!(page.contains("1 failed, 1 spec invalid"), "{page}");

    let metrics = get("/metrics").await.expect("metrics");
    for (series, n) in [
        (
            "protond_resources{kind=\"service_instance\",status=\"create_failed\"}",
            1.0,
        ),
        (
            "protond_resources{kind=\"service_instance\",status=\"spec_invalid\"}",
            1.0,
        ),
        (
            "protond_resources{kind=\"environment\",status=\"deployed\"}",
            2.0,
        ),
    ] {
        assert_eq!(metric(&metrics, series), Some(n), "{series}\n{metrics}");
    }
}
