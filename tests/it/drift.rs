//! Drift detection and "nothing looks green when it is not" on a real `moto_server`: a stack
//! deleted out of band and one whose template was changed out of band are reported by
//! `/metrics`, `protond plan` (exit 1), `protond status` and the API within one drift
//! interval; under `report` the deleted stack is not recreated, under `heal` it is (and the
//! changed one redeployed) through the normal path; `protond refresh` needs the token. An
//! invalid spec turns its resource `spec invalid` in `status`, the API and the page, its
//! deployed version kept, and `plan` exits 1.

use std::time::{Duration, Instant};

use aws_sdk_cloudformation::types::Capability;
use serde_json::Value;

use crate::common::running::Running;
use crate::common::world::World;
use crate::common::{self, text};

const TOKEN: &str = "drift-api-token-0123";
/// Deleted out of band (`moto_server` deletes its named IAM role with it, so it can be
/// created again).
const DELETED: &str = "service_instance/payments/payments-prod";
/// Changed out of band.
const CHANGED: &str = "service_instance/payments/payments-dev";
/// Made invalid.
const INVALID: &str = "service_instance/reports/reports-dev";

/// The examples on a `moto_server`, a cycle a second, a drift check every 2 s under
/// `policy`, the API token in `T_API`.
fn world(policy: &'static str) -> World {
    World::examples_on_moto()
        .env("T_API", TOKEN)
        .config(move |c| {
            c.top("poll_interval = \"1s\"")
                .section("[daemon]\nwatch = false\nshutdown_grace = \"10s\"")
                .section("[server]\ntoken_env = \"T_API\"")
                .section(&format!(
                    "[drift]\ninterval = \"2s\"\npolicy = \"{policy}\""
                ));
        })
        .build()
}

/// `protond run` serving on a free port; its base URL.
fn start(w: &World) -> (Running, String) {
    let port = common::free_port();
    let d = w.spawn(&["run", "--listen", &format!("127.0.0.1:{port}")]);
    (d, format!("http://127.0.0.1:{port}"))
}

async fn get(url: &str) -> Option<String> {
    let r = reqwest::get(url).await.ok()?;
    r.status().is_success().then_some(())?;
    r.text().await.ok()
}

/// The value of `protond_drift{kind="<kind>"}`.
async fn drift_gauge(base: &str, kind: &str) -> Option<f64> {
    let text = get(&format!("{base}/metrics")).await?;
    let prefix = format!("protond_drift{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `f` every 200 ms until it holds, for at most `secs` seconds.
async fn until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {secs}s waiting for {what}");
}

/// The recorded `StackId` of `id`.
async fn stack_id(w: &World, id: &str) -> String {
    let records = w.store().await.resources().await.expect("records");
    let r = records.iter().find(|r| r.id == id).expect("recorded");
    r.placement.stack_id.clone().expect("stack id recorded")
}

/// Changes the stack of `id` out of band: its template's `Description`.
async fn change_template(w: &World, id: &str) {
    let cfn = common::cfn_client(w.aws_url());
    let stack = stack_id(w, id).await;
    let body = cfn
        .get_template()
        .stack_name(&stack)
        .send()
        .await
        .expect("get template")
        .template_body()
        .expect("body")
        .to_string();
    let changed = body.replacen("Description: '", "Description: 'changed out of band: ", 1);
    assert_ne!(body, changed, "the template has a Description: {body}");
    cfn.update_stack()
        .stack_name(&stack)
        .template_body(changed)
        .capabilities(Capability::CapabilityNamedIam)
        .send()
        .await
        .expect("update stack out of band");
}

/// How many drift checks `d` logged so far.
fn checks(d: &Running) -> usize {
    d.log().matches("Drift check finished.").count()
}

/// Reads `d`'s log until it logged `n` drift checks (at most 30 s).
fn wait_checks(d: &mut Running, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while checks(d) < n && Instant::now() < deadline {
        d.wait_for_line(Duration::from_secs(1), |l| {
            l.contains("Drift check finished.")
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_reported_then_healed_and_refresh_needs_the_token() {
    let w = world("report");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let changed = CHANGED.to_string();
    // Out of band: one stack deleted, one stack's template changed.
    let old_id = stack_id(&w, DELETED).await;
    let cfn = common::cfn_client(w.aws_url());
    cfn.delete_stack()
        .stack_name(&old_id)
        .send()
        .await
        .expect("delete out of band");
    change_template(&w, &changed).await;

    let (mut d, base) = start(&w);
    let started = Instant::now();
    until("the drift gauges", 60, || async {
        drift_gauge(&base, "missing").await == Some(1.0)
            && drift_gauge(&base, "template").await == Some(1.0)
    })
    .await;
    eprintln!("drift reported on /metrics after {:?}", started.elapsed());
    // plan lists it and exits 1; status shows it.
    let plan = w.run(&["plan", "--no-fetch"]);
    let plan_text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    assert!(
        plan_text.contains(&format!("  {DELETED} (policy report")),
        "{plan_text}"
    );
    assert!(
        plan_text.contains("missing: the stack no longer exists"),
        "{plan_text}"
    );
    assert!(
        plan_text.contains("~ Description: live \"changed out of band: "),
        "the template's diff: {plan_text}"
    );
    let status = w.run(&["status"]);
    let status_text = String::from_utf8_lossy(&status.stdout).to_string();
    let row = status_text
        .lines()
        .find(|l| l.starts_with(DELETED))
        .expect("row");
    assert!(row.contains("deployed, drifted (missing)"), "{row}");
    let api: Value =
        serde_json::from_str(&get(&format!("{base}/api/v1/drift")).await.expect("api"))
            .expect("json");
    assert_eq!(api["resources"][DELETED][0]["kind"], "missing", "{api}");
    assert_eq!(
        api["resource_drift_detection"]["available"], false,
        "moto has no DetectStackDrift: {api}"
    );
    let page = get(&format!("{base}/")).await.expect("page");
    assert!(page.contains("drifted (missing)"), "the page shows it");

    // Under report, never recreated: two more checks later, still gone, found once.
    let seen = checks(&d);
    wait_checks(&mut d, seen + 2);
    assert!(checks(&d) >= seen + 2, "two more checks ran: {}", d.log());
    assert!(
        !w.stacks()
            .await
            .iter()
            .any(|s| s.resource() == Some(DELETED)),
        "report never recreates a stack"
    );
    let found = d
        .log()
        .lines()
        .filter(|l| l.contains("Drift found.") && l.contains(DELETED))
        .count();
    assert_eq!(found, 1, "logged once, not every interval: {}", d.log());
    let metrics = get(&format!("{base}/metrics")).await.expect("metrics");
    assert!(
        metrics.contains("protond_drift_found_total{kind=\"missing\"} 1\n"),
        "counted once: {metrics}"
    );

    // refresh: refused without the token, scheduled with it.
    let no_token = w
        .command(&["refresh", "--url", &base])
        .env_remove("T_API")
        .output()
        .expect("refresh");
    assert_eq!(no_token.status.code(), Some(2), "{}", text(&no_token));
    assert!(text(&no_token).contains("T_API"), "{}", text(&no_token));
    let wrong = w
        .command(&["refresh", "--url", &base])
        .env("T_API", "wrong")
        .output()
        .expect("refresh");
    assert!(text(&wrong).contains("401"), "{}", text(&wrong));
    let ok = w.run(&["refresh", "--url", &base]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        d.wait_for_line(Duration::from_secs(20), |l| l
            .contains("Refresh requested (API)")),
        "{}",
        d.log()
    );
    d.terminate();
    d.wait();

    // Under heal: the deleted stack is recreated and the changed one redeployed, through
    // the normal path, and the drift cleared.
    w.edit_config(|c| c.replace("policy = \"report\"", "policy = \"heal\""));
    let (mut d, base) = start(&w);
    let started = Instant::now();
    loop {
        if drift_gauge(&base, "missing").await == Some(0.0)
            && drift_gauge(&base, "template").await == Some(0.0)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not healed in 90 s: {}",
            d.log()
        );
        d.wait_for_line(Duration::from_millis(300), |_| false);
    }
    eprintln!("drift healed after {:?}", started.elapsed());
    let live = w.stacks().await;
    let recreated = live
        .iter()
        .find(|s| s.resource() == Some(DELETED))
        .expect("recreated");
    assert!(recreated.status.ends_with("_COMPLETE"), "{recreated:?}");
    assert_ne!(stack_id(&w, DELETED).await, old_id, "a fresh stack");
    let store = w.store().await;
    for id in [DELETED, changed.as_str()] {
        let last = &store.deployments(Some(id), 1).await.expect("history")[0];
        assert_eq!(
            last.deployment.reason.as_deref(),
            Some("drift_heal"),
            "{last:?}"
        );
        assert_eq!(last.status, "succeeded", "{last:?}");
    }
    let body = cfn
        .get_template()
        .stack_name(stack_id(&w, &changed).await)
        .send()
        .await
        .expect("template");
    assert!(
        !body
            .template_body()
            .unwrap_or("")
            .contains("changed out of band"),
        "the template is protond's again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_spec_is_not_green_anywhere_and_plan_exits_1() {
    let w = world("report");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    w.replace(
        "payments",
        "proton/services/reports.yaml",
        "visibility_timeout: 120",
        "visibility_timeout: soon",
    );
    w.commit("payments", "break the reports spec");
    w.reconcile();
    let status = w.run(&["status"]);
    let status_text = String::from_utf8_lossy(&status.stdout).to_string();
    let row = status_text
        .lines()
        .find(|l| l.starts_with(INVALID))
        .expect("row");
    assert!(row.contains("spec invalid"), "{row}");
    assert!(row.contains("visibility_timeout"), "the error: {row}");
    assert!(row.contains(" 1.0 "), "the deployed version kept: {row}");
    let plan = w.run(&["plan", "--no-fetch"]);
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    assert!(text(&plan).contains("Problems:"), "{}", text(&plan));

    let (_d, base) = start(&w);
    until("the API's spec_invalid", 60, || async {
        get(&format!("{base}/api/v1/services"))
            .await
            .is_some_and(|t| t.contains("\"spec_invalid\""))
    })
    .await;
    let services: Value =
        serde_json::from_str(&get(&format!("{base}/api/v1/services")).await.expect("api"))
            .expect("json");
    let reports = services
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["service"] == "reports")
        .expect("reports");
    assert_eq!(
        reports["instances"][0]["status"], "spec_invalid",
        "{reports}"
    );
    assert_eq!(reports["instances"][0]["version"], "1.0", "{reports}");
    let page = get(&format!("{base}/")).await.expect("page");
    assert!(page.contains("spec invalid"), "the page says so");
}
