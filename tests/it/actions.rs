//! Manual actions and progress: `protond redeploy`, `retry` and `cancel` from the CLI and the
//! token-protected API, each in the history with who asked; a redeploy of an unchanged
//! resource updates its stack exactly once; the logs of a deployment hold its stack events in
//! order; missing AWS credentials are reported as such. Real git repos, `moto_server`, a
//! real `SQLite` file, the real `protond` binary.

use std::process::{Output, Stdio};

use serde_json::Value;

use crate::common::until;
use crate::common::world::World;
use crate::common::{self, text};

const API_TOKEN: &str = "api-token-for-actions-0123";
const BROKEN: &str = "AWSTemplateFormatVersion: '2010-09-09'\n\
Resources:\n  Broken:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds: !GetAtt NoSuchResource.Arn\n";
const MANIFEST: &str = "infrastructure:\n  templates:\n    - file: \"cloudformation.yaml\"\n      rendering_engine: jinja\n      template_language: cloudformation\n";
const BROKEN_ID: &str = "component/payments/payments-prod";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Stack operations started on `stack` (its `User Initiated` events).
async fn operations(url: &str, stack: &str) -> Vec<String> {
    let out = common::cfn_client(url)
        .describe_stack_events()
        .stack_name(stack)
        .send()
        .await
        .expect("stack events");
    out.stack_events()
        .iter()
        .filter(|e| e.resource_status_reason() == Some("User Initiated"))
        .map(|e| e.resource_status().map_or("?", |s| s.as_str()).to_string())
        .collect()
}

/// The live stack name of `resource`.
async fn stack_of(w: &World, resource: &str) -> String {
    w.stacks()
        .await
        .into_iter()
        .find(|s| s.resource() == Some(resource))
        .map_or_else(|| panic!("no stack for {resource}"), |s| s.name)
}

/// The prod instance gets a component whose create fails in `CloudFormation`.
fn break_a_component(w: &World) {
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
    let at = spec.find("  - name: payments-prod").expect("prod");
    let (dev, prod) = spec.split_at(at);
    let prod = prod.replacen(
        "      health_check_path: /health\n",
        "      health_check_path: /health\n    component: {name: broken, path: proton/components/broken}\n",
        1,
    );
    w.write(
        "payments",
        "proton/services/payments.yaml",
        &format!("{dev}{prod}"),
    );
    w.commit("payments", "broken component");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_retry_and_cancel_from_the_cli_are_in_the_history() {
    let w = World::examples_on_moto().build();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    let stack = stack_of(&w, "environment/dev").await;
    let before = operations(w.aws_url(), &stack).await;

    // An unknown id is refused, saying where the ids are.
    let out = w.run(&["redeploy", "environment/nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("protond status"), "{}", stderr(&out));

    // A redeploy of the unchanged environment: queued, then one stack update, no more.
    let out = w.run(&["redeploy", "environment/dev", "--by", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("queued: the next cycle"),
        "{}",
        stdout(&out)
    );
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    let logs = stderr(&out);
    let after = operations(w.aws_url(), &stack).await;
    assert_eq!(after.len(), before.len() + 1, "{before:?} -> {after:?}");
    assert_eq!(after[0], "UPDATE_IN_PROGRESS");
    // Its stack events are in the log, in order, each once.
    let events: Vec<String> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"] == "Stack event." && v["fields"]["stack"] == stack.as_str()
        })
        .map(|v| {
            v["fields"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(events, ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE"], "{logs}");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(operations(w.aws_url(), &stack).await.len(), after.len());

    // The history says who asked.
    let out = w.run(&["history", "environment/dev"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let history = stdout(&out);
    let newest = history.lines().nth(1).expect("a row");
    assert!(
        newest.contains("update") && newest.contains("cli:alice"),
        "{history}"
    );

    // A failed create waits for a change; retry lifts that once, and says who asked.
    break_a_component(&w);
    let out = w.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let store = w.store().await;
    let count = |rows: &[protond::state::DeploymentRecord]| rows.len();
    let failed = store
        .deployments(Some(BROKEN_ID), 100)
        .await
        .expect("history");
    assert_eq!(count(&failed), 1);
    let _ = w.reconcile();
    assert_eq!(
        count(
            &store
                .deployments(Some(BROKEN_ID), 100)
                .await
                .expect("history")
        ),
        1,
        "held until a change"
    );
    let out = w.run(&["retry", BROKEN_ID, "--by", "carol"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("retries"), "{}", stdout(&out));
    let out = w.run(&["retry", "environment/dev"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("did not fail"), "{}", stderr(&out));
    let _ = w.reconcile();
    let rows = store
        .deployments(Some(BROKEN_ID), 100)
        .await
        .expect("history");
    assert_eq!(count(&rows), 2, "retried once");
    let notes = store.action_notes(&[rows[0].id]).await.expect("notes");
    assert_eq!(
        notes[&rows[0].id].requested_by.as_deref(),
        Some("cli:carol (retry)")
    );

    // Nothing in flight: nothing to cancel.
    let out = w.run(&["cancel", "environment/dev"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing to cancel"),
        "{}",
        stderr(&out)
    );
    // `wait` on a settled resource reports its last outcome as its exit code.
    assert_eq!(w.run(&["wait", "environment/dev"]).status.code(), Some(0));
    // (moto lets the retried create through; the exit code follows whatever was recorded.)
    let out = w.run(&["wait", BROKEN_ID]);
    let want = i32::from(rows[0].status != "succeeded");
    assert_eq!(out.status.code(), Some(want), "{}", text(&out));
    let first = store
        .deployments(Some(BROKEN_ID), 100)
        .await
        .expect("history");
    let out = w.run(&["history", BROKEN_ID]);
    assert!(stdout(&out).contains("failed"), "{}", stdout(&out));
    assert_eq!(first.last().map(|d| d.status.as_str()), Some("failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_through_the_api_need_the_token_and_are_in_the_history() {
    let port = common::free_port();
    let w = World::examples_on_moto()
        .env("T_API", API_TOKEN)
        .config(move |c| {
            c.top("poll_interval = \"1h\"")
                .section("[daemon]\nshutdown_grace = \"10s\"\nwatch = false")
                .section(&format!(
                    "[server]\ntoken_env = \"T_API\"\nlisten = \"127.0.0.1:{port}\""
                ));
        })
        .build();
    let log = w.dir("daemon.log");
    let mut child = w
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("protond runs");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    // The daemon migrates the store first: opened before, both would migrate it at once.
    until("/healthz", &log, || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let store = w.store().await;
    // environment/dev deployed and nothing in flight (whatever else moto let through).
    until("the first deployments", &log, || async {
        store
            .resources()
            .await
            .is_ok_and(|r| r.iter().any(|r| r.id == "environment/dev"))
            && store.in_flight().await.is_ok_and(|f| f.is_empty())
    })
    .await;
    let url = |tail: &str| format!("{base}/api/v1/resources/{tail}");

    // Without the token, or with a wrong one: 401, and nothing is queued.
    let r = http
        .post(url("environment/dev/redeploy"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    let r = http
        .post(url("environment/dev/redeploy"))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    assert!(store.deploy_requests().await.expect("requests").is_empty());

    // Unknown resource, unknown action, nothing to retry or cancel.
    let act = |tail: String| {
        http.post(url(&tail))
            .bearer_auth(API_TOKEN)
            .json(&serde_json::json!({ "by": "bob" }))
            .send()
    };
    assert_eq!(
        act("environment/nope/redeploy".into())
            .await
            .expect("post")
            .status(),
        404
    );
    assert_eq!(
        act("environment/dev/explode".into())
            .await
            .expect("post")
            .status(),
        404
    );
    assert_eq!(
        act("environment/dev/retry".into())
            .await
            .expect("post")
            .status(),
        409
    );
    assert_eq!(
        act("environment/dev/cancel".into())
            .await
            .expect("post")
            .status(),
        409
    );

    // A redeploy: accepted, deployed at once (the poll is an hour), in the history as bob's.
    let before = store
        .deployments(Some("environment/dev"), 100)
        .await
        .expect("history")
        .len();
    let r = act("environment/dev/redeploy".into()).await.expect("post");
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["by"], "api:bob");
    until("the redeploy", &log, || async {
        let rows: Value = http
            .get(format!(
                "{base}/api/v1/deployments?resource=environment/dev"
            ))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        rows.as_array().is_some_and(|a| {
            a.len() == before + 1
                && a[0]["status"] == "succeeded"
                && a[0]["requested_by"] == "api:bob"
                && a[0]["reason"] == "redeploy"
        })
    })
    .await;
    // The CLI's request wakes the daemon through its API (the poll is an hour away).
    let out = w.run(&["redeploy", "environment/dev", "--by", "erin"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("woke the daemon"), "{}", stdout(&out));
    until("the CLI's redeploy", &log, || async {
        let rows = store
            .deployments(Some("environment/dev"), 1)
            .await
            .expect("history");
        let notes = store.action_notes(&[rows[0].id]).await.expect("notes");
        rows[0].status == "succeeded"
            && notes
                .get(&rows[0].id)
                .and_then(|n| n.requested_by.as_deref())
                == Some("cli:erin")
    })
    .await;
    let flight: Value = http
        .get(format!("{base}/api/v1/in-flight"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(flight, serde_json::json!([]));
    let _ = child.kill();
    let _ = child.wait();
}

/// `protond <args>` of `w` with no AWS credentials anywhere: none in the environment, an
/// empty home, the instance metadata endpoint on a loopback port where nothing listens.
fn without_credentials(w: &World, args: &[&str]) -> Output {
    let empty = tempfile::tempdir().expect("home");
    w.command(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{}", common::free_port()),
        )
        .env("HOME", empty.path())
        .output()
        .expect("protond runs")
}

/// Says the credentials are missing, not the endpoint, without debug text or SDK warnings.
fn says_credentials(all: &str) {
    assert!(all.contains("no AWS credentials found"), "{all}");
    assert!(all.contains("(AWS_PROFILE)"), "{all}");
    assert!(!all.contains("unreachable"), "{all}");
    assert!(!all.contains("ProviderError {"), "{all}");
    let sdk_warnings: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("\"target\":\"aws_") && !l.contains("\"level\":\"DEBUG\""))
        .collect();
    assert!(sdk_warnings.is_empty(), "{sdk_warnings:#?}");
}

#[test]
fn missing_credentials_are_reported_as_such() {
    let w = World::examples_on_moto().build();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    // `status` reads the pipeline's stack live.
    let out = without_credentials(&w, &["status"]);
    assert!(out.status.success(), "{}", text(&out));
    says_credentials(&text(&out));
    // A deployment fails saying so.
    let out = w.run(&["redeploy", "environment/dev"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = without_credentials(&w, &["reconcile", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    says_credentials(&text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_self_managed_deployment_stops_waiting_and_is_recorded() {
    use crate::common::forge::{FakeForge, Kind};
    let w = crate::self_managed::world();
    let github = FakeForge::start(
        Kind::GitHub,
        "/api/v3",
        crate::self_managed::TOKEN,
        "acme/infra",
        w.root.join("infra"),
    )
    .await;
    crate::self_managed::configure(&w, &github.url);
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let id = "environment/tfdev";
    let store = w.store().await;
    let waiting = store.in_flight().await.expect("in flight");
    assert!(
        waiting.iter().any(|d| d.deployment.resource_id == id),
        "{waiting:?}"
    );

    let out = w.run(&["cancel", id, "--by", "dave"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("recorded as cancelled"),
        "{}",
        stdout(&out)
    );
    let last = store.deployments(Some(id), 1).await.expect("history");
    assert_eq!(last[0].status, "failed");
    assert!(
        last[0]
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("cancelled by cli:dave")),
        "{last:?}"
    );
    // Its late outcome is refused; a second cancel finds nothing in flight.
    let out = w.run(&["notify", id, "--status", "succeeded"]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = w.run(&["cancel", id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Cancelled is held like a failure until a change, and `retry` lifts it.
    let out = w.run(&["retry", id, "--by", "dave"]);
    assert!(out.status.success(), "{}", text(&out));
}
