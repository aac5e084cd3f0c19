//! `protond plan` shows what the daemon will do now: against a halted minor, a closed
//! maintenance window, a spec pinned to a minor and a failed create, the plan lists each as
//! held with its reason, and `reconcile --once` then starts exactly what the plan said would
//! start and nothing it said is held. Real git repos, `moto_server`, a real `SQLite` file.

use std::collections::BTreeSet;
use std::process::Output;

use crate::common::world::World;

const BROKEN: &str = "AWSTemplateFormatVersion: '2010-09-09'\n\
Resources:\n  Broken:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds: !GetAtt NoSuchResource.Arn\n";
const MANIFEST: &str = "infrastructure:\n  templates:\n    - file: \"cloudformation.yaml\"\n      rendering_engine: jinja\n      template_language: cloudformation\n";

/// The examples on `moto_server`, stages dev then prod, and a prod maintenance window that
/// never opens (a year long past this test).
fn world() -> World {
    World::examples_on_moto()
        .config(|c| {
            c.section(
                "[rollout]\nstages = [\"dev\", \"prod\"]\nsoak = \"0s\"\nwindows = { prod = \"0 0 0 1 1 * 2099\" }",
            );
        })
        .build()
}

/// Tags a new minor of `template` on a commit that touches its folder.
fn release(w: &World, template: &str, tag: &str) {
    w.write("platform-templates", &format!("{template}/v1/NOTES"), tag);
    w.commit("platform-templates", tag);
    w.tag(tag, tag);
}

/// The plan's schedule: (resource, verdict, hold label).
fn plan_schedule(w: &World) -> Vec<(String, String, String)> {
    let out = w.run(&["plan", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    doc["schedule"]
        .as_array()
        .expect("schedule")
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            (s("id"), s("verdict"), s("hold"))
        })
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn verdict<'a>(schedule: &'a [(String, String, String)], id: &str) -> (&'a str, &'a str) {
    schedule.iter().find(|(i, _, _)| i == id).map_or_else(
        || panic!("{id} not in the schedule: {schedule:#?}"),
        |(_, v, h)| (v.as_str(), h.as_str()),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_each_hold_and_reconcile_does_what_it_showed() {
    let w = world();
    // Reports follows worker-svc 1.0 exactly.
    w.edit("payments", "proton/services/reports.yaml", |t| {
        t.replace(
            "template: {name: worker-svc, major: 1}",
            "template: {name: worker-svc, major: 1, minor: 0}",
        )
    });
    w.commit("payments", "pin reports");
    let out = w.run(&["reconcile", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A component whose create fails in CloudFormation.
    w.write(
        "payments",
        "proton/components/broken/manifest.yaml",
        MANIFEST,
    );
    w.write(
        "payments",
        "proton/components/broken/cloudformation.yaml",
        BROKEN,
    );
    let spec =
        std::fs::read_to_string(w.dir("payments/proton/services/payments.yaml")).expect("spec");
    let spec = spec.replace(
        "      health_check_path: /health\n",
        "      health_check_path: /health\n    component: {name: broken, path: proton/components/broken}\n",
    );
    // Only the second instance (prod) gets the broken component: the first already has one.
    let (dev, prod) = spec.split_at(spec.find("  - name: payments-prod").expect("prod"));
    let dev = dev.replacen(
        "    component: {name: broken, path: proton/components/broken}\n",
        "",
        1,
    );
    w.write(
        "payments",
        "proton/services/payments.yaml",
        &format!("{dev}{prod}"),
    );
    w.commit("payments", "broken component");
    let out = w.run(&["reconcile", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // New minors: environments (dev may go, prod's window is closed), web services (halted
    // by an operator), workers (pinned by the spec).
    release(&w, "basic-env", "basic-env/v1.1");
    release(&w, "web-svc", "web-svc/v1.1");
    release(&w, "worker-svc", "worker-svc/v1.1");
    let out = w.run(&["rollout", "halt", "web-svc/v1.1", "--reason", "testing"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let schedule = plan_schedule(&w);
    assert_eq!(verdict(&schedule, "environment/dev"), ("start", ""));
    assert_eq!(verdict(&schedule, "environment/prod"), ("hold", "window"));
    assert_eq!(
        verdict(&schedule, "service_instance/payments/payments-dev"),
        ("hold", "rollout_halted")
    );
    assert_eq!(
        verdict(&schedule, "pipeline/payments"),
        ("hold", "rollout_halted")
    );
    assert_eq!(
        verdict(&schedule, "service_instance/reports/reports-dev"),
        ("hold", "pinned_by_spec")
    );
    assert_eq!(
        verdict(&schedule, "component/payments/payments-prod"),
        ("hold", "failed_until_change")
    );
    // The table says the same, with the reasons in words.
    let out = w.run(&["plan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("outside the maintenance window of stage prod"),
        "{text}"
    );
    assert!(
        text.contains("rollout of web-svc 1.1 is halted: testing"),
        "{text}"
    );
    assert!(
        text.contains("the spec pins this minor; 1.1 is available"),
        "{text}"
    );
    assert!(text.contains("not retried until"), "{text}");

    // The daemon does what the plan showed: every start starts, no hold does.
    let store = w.store().await;
    let before = store
        .deployments(None, 10_000)
        .await
        .expect("history")
        .len();
    let out = w.run(&["reconcile", "--once"]);
    let history = store.deployments(None, 10_000).await.expect("history");
    let deployed: BTreeSet<String> = history[..history.len() - before]
        .iter()
        .map(|d| d.deployment.resource_id.clone())
        .collect();
    for (id, v, hold) in &schedule {
        match v.as_str() {
            "start" => assert!(
                deployed.contains(id),
                "{id} was to start: {deployed:?}\n{}",
                stderr(&out)
            ),
            _ => assert!(
                !deployed.contains(id),
                "{id} was held ({hold}) but deployed"
            ),
        }
    }
    // And the holds stand afterwards.
    let again = plan_schedule(&w);
    for id in [
        "environment/prod",
        "service_instance/payments/payments-dev",
        "service_instance/reports/reports-dev",
        "component/payments/payments-prod",
    ] {
        assert_eq!(verdict(&again, id), verdict(&schedule, id), "{id}");
    }
}
