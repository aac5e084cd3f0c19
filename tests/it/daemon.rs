//! The reconciler end to end: real git repos, the real AWS SDK against a `moto_server` on
//! 127.0.0.1 (one per test, started here), a real `SQLite` file, and the `protond` binary.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::world::World;
use crate::common::{self, LiveStack, git};

use protond::demo::LocalAws as Moto;

/// The examples on a `moto_server`, polling every second, with a 10 s shutdown grace.
fn world() -> World {
    World::examples_on_moto()
        .config(|c| {
            c.top("poll_interval = \"1s\"")
                .section("[daemon]\nshutdown_grace = \"10s\"");
        })
        .build()
}

/// Every live stack is recorded exactly once, with nothing in flight.
async fn assert_consistent(w: &World) {
    let store = w.store().await;
    let records = store.resources().await.expect("resources");
    let stacks = w.stacks().await;
    let stack_resources: Vec<String> = stacks
        .iter()
        .filter_map(|s| s.resource().map(str::to_string))
        .collect();
    let unique: BTreeSet<&String> = stack_resources.iter().collect();
    assert_eq!(
        unique.len(),
        stack_resources.len(),
        "duplicate stacks: {stack_resources:?}"
    );
    let recorded: BTreeSet<String> = records.iter().map(|r| r.id.clone()).collect();
    let live: BTreeSet<String> = stack_resources.into_iter().collect();
    assert_eq!(recorded, live, "records and stacks disagree");
    assert!(store.in_flight().await.expect("in flight").is_empty());
    for d in store.deployments(None, 1000).await.expect("history") {
        assert_ne!(d.status, "in_progress", "{d:?}");
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn deploys_updates_deletes_and_isolates_failures() {
    let w = world();

    // Deploy everything: environments, component, instances, pipeline.
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    let stacks = w.stacks().await;
    assert_eq!(stacks.len(), 7, "{stacks:#?}");
    assert!(
        stacks.iter().all(|s| s.status == "CREATE_COMPLETE"),
        "{stacks:#?}"
    );
    let store = w.store().await;
    let records = store.resources().await.expect("resources");
    let env = records
        .iter()
        .find(|r| r.id == "environment/dev")
        .expect("dev");
    assert!(env.outputs.contains_key("TopicArn"), "{:?}", env.outputs);
    let LiveStack { tags, .. } = stacks
        .iter()
        .find(|s| s.name.starts_with("protond-svc-payments-payments-prod-"))
        .expect("prod stack");
    for key in [
        "protond:resource",
        "protond:template",
        "protond:version",
        "protond:spec-commit",
        "protond:deployment",
    ] {
        assert!(
            tags.iter().any(|(k, _)| k == key),
            "{key} missing: {tags:?}"
        );
    }
    assert_consistent(&w).await;

    // Nothing changed: nothing deploys.
    let before = store.deployments(None, 1000).await.expect("history").len();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        store.deployments(None, 1000).await.expect("history").len(),
        before
    );

    // A merged spec change deploys as an update of that instance only.
    w.edit("payments", "proton/services/payments.yaml", |t| {
        t.replacen("desired_count: 3", "desired_count: 5", 1)
    });
    w.commit("payments", "scale prod");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    let history = store.deployments(None, 1000).await.expect("history");
    let new: Vec<_> = history.iter().take(history.len() - before).collect();
    assert!(
        new.iter().any(
            |d| d.deployment.resource_id == "service_instance/payments/payments-prod"
                && d.deployment.reason.as_deref() == Some("spec_change")
                && d.status == "succeeded"
        ),
        "{new:#?}"
    );
    assert!(
        !new.iter()
            .any(|d| d.deployment.resource_id == "service_instance/payments/payments-dev"),
        "{new:#?}"
    );

    // A broken template change fails clearly and alone; the others stay deployed.
    w.edit("payments", "proton/services/reports.yaml", |t| {
        t.replace(
            "visibility_timeout: 120",
            "visibility_timeout: 120\n      unknown_input: 1",
        )
    });
    w.commit("payments", "bad input");
    let out = w.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("unknown input"), "{log}");
    assert!(
        log.contains("service_instance/reports/reports-dev"),
        "{log}"
    );
    assert_eq!(w.stacks().await.len(), 7);
    w.edit("payments", "proton/services/reports.yaml", |t| {
        t.replace("\n      unknown_input: 1", "")
    });
    w.commit("payments", "fix input");

    // A template whose stack fails in CloudFormation: the failure names the reason, the
    // rest of the fleet is untouched, and it is not retried until something changes.
    let worker = "web-svc/v1/instance_infrastructure/cloudformation.yaml";
    w.edit("platform-templates", worker, |t| t.replacen("Resources:", "Resources:\n  Broken:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds: !GetAtt NoSuchResource.Arn\n", 1));
    w.commit("platform-templates", "broken 1.1");
    git(
        &w.root.join("platform-templates"),
        &["tag", "-a", "web-svc/v1.1", "-m", "broken"],
    );
    let out = w.reconcile();
    let log = stderr(&out);
    let failures: Vec<_> = store
        .deployments(None, 1000)
        .await
        .expect("history")
        .into_iter()
        .filter(|d| d.status == "failed")
        .collect();
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(!failures.is_empty(), "{log}");
    for d in &failures {
        assert!(
            d.deployment
                .resource_id
                .starts_with("service_instance/payments/"),
            "{d:?}"
        );
        assert!(
            d.error
                .as_deref()
                .is_some_and(|e| e.contains("NoSuchResource")),
            "the failure names its reason: {d:?}"
        );
        assert!(!d.retryable);
    }
    // Not hammered: the next run does not retry the same failing version.
    let n = store.deployments(None, 1000).await.expect("history").len();
    let out = w.reconcile();
    assert_eq!(
        out.status.code(),
        Some(1),
        "still failing: {}",
        stderr(&out)
    );
    assert_eq!(
        store.deployments(None, 1000).await.expect("history").len(),
        n,
        "failed deployment was retried without a change"
    );
    // What was deployed before stays recorded at 1.0.
    let prod = store
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .find(|r| r.id == "service_instance/payments/payments-prod")
        .expect("prod");
    assert_eq!(prod.version.minor, 0);
    assert_eq!(prod.status, "failed");
    let records = store.resources().await.expect("resources");
    assert!(
        records
            .iter()
            .any(|r| r.id == "service_instance/reports/reports-dev")
    );
    assert!(records.iter().any(|r| r.id == "environment/prod"));

    // Removing a service deletes its stacks, after everything else.
    std::fs::remove_file(w.root.join("payments/proton/services/reports.yaml")).expect("rm");
    w.commit("payments", "retire reports");
    let _ = w.reconcile();
    assert!(
        !w.stacks().await.iter().any(|s| s.name.contains("reports")),
        "reports stack still there"
    );
    assert!(
        !store
            .resources()
            .await
            .expect("r")
            .iter()
            .any(|r| r.id.contains("reports"))
    );
    assert_consistent(&w).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_budget_and_unknown_repos_protect_stacks() {
    let w = world();
    assert!(w.reconcile().status.success());
    let n = w.stacks().await.len();
    // Budget 1: removing the whole payments repo content (5 stacks) deletes nothing.
    w.edit_config(|text| {
        text.replace(
            "shutdown_grace = \"10s\"",
            "shutdown_grace = \"10s\"\ndeletion_budget = 1",
        )
    });
    w.edit_config(|text| {
        text.replace(
            "url = \"payments\"",
            "url = \"payments\"\nallow_empty = true",
        )
    });
    git(
        &w.root.join("payments"),
        &["rm", "-q", "-r", "proton/services"],
    );
    w.commit("payments", "remove everything");
    let out = w.reconcile();
    assert!(stderr(&out).contains("deletion budget"), "{}", stderr(&out));
    assert_eq!(w.stacks().await.len(), n);
    // A vanished repo (never fetched into a fresh cache) deletes nothing either.
    std::fs::rename(w.root.join("platform-envs"), w.root.join("gone")).expect("rename");
    std::fs::remove_dir_all(w.root.join("data")).expect("drop cache");
    let _ = w.reconcile();
    assert_eq!(w.stacks().await.len(), n);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_cycle_then_restart_is_consistent() {
    let w = world();
    // Start the daemon and kill it as soon as the first deployment starts.
    let listen = common::DEFAULT_LISTEN.lock().await;
    let mut daemon = w.spawn(&["run"]);
    let started =
        daemon.wait_for_line(Duration::from_mins(1), |l| l.contains("Deployment started"));
    assert!(started, "{}", daemon.log());
    // SIGKILL: no chance to record anything.
    daemon.kill_9();
    drop(listen);

    // Restart: adopt what was in flight, finish the rest.
    let out = w.reconcile();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_consistent(&w).await;
    assert_eq!(w.stacks().await.len(), 7);
    let store = w.store().await;
    let history = store.deployments(None, 1000).await.expect("history");
    let ids: BTreeSet<i64> = history.iter().map(|d| d.id).collect();
    assert_eq!(ids.len(), history.len(), "doubled history rows");
}

#[tokio::test(flavor = "multi_thread")]
async fn adoption_finishes_deployments_left_in_flight() {
    use protond::plan::{ResourceKind, Version};
    use protond::state::NewDeployment;
    let w = world();
    assert!(w.reconcile().status.success());
    let store = w.store().await;
    // A deployment recorded as started whose stack call never happened: retried.
    let dep = NewDeployment {
        resource_id: "environment/dev".into(),
        kind: ResourceKind::Environment,
        repo: "platform-envs".into(),
        environment: Some("dev".into()),
        action: protond::model::DeploymentAction::Update,
        reason: Some("spec_change".into()),
        template: "basic-env".into(),
        from_version: Some(Version { major: 1, minor: 0 }),
        to_version: Version { major: 1, minor: 0 },
        input_hash: "x".into(),
        rendered_hash: "x".into(),
        spec_commit: None,
        placement: protond::model::Placement::default(),
    };
    let id = store.begin_deployment(&dep).await.expect("begin");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    let d = store
        .deployments(Some("environment/dev"), 10)
        .await
        .expect("history");
    let row = d.iter().find(|x| x.id == id).expect("row");
    common::assert_interrupted(row);
    assert_consistent(&w).await;
}

#[test]
fn demo_once_deploys_the_examples() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let demo = || {
        let out = Command::new(env!("CARGO_BIN_EXE_protond"))
            .args(["demo", "--once", "--dir"])
            .arg(tmp.path().join("demo"))
            .arg("--examples")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repos"))
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .expect("protond demo runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("7 deployment(s) succeeded, 0 failed."),
            "{stdout}"
        );
        stdout
    };
    let stdout = demo();
    for id in [
        "environment/dev",
        "environment/prod",
        "service_instance/payments/payments-prod",
        "pipeline/payments",
    ] {
        assert!(stdout.contains(id), "{id} missing:\n{stdout}");
    }
    assert!(tmp.path().join("demo/platform-templates/.git").exists());
    // Again: a new moto_server starts empty, and the demo deploys everything again rather
    // than trusting the state of the first run.
    demo();
}

/// The newcomer path: `protond demo --listen ADDR` serves there and prints the exact commands
/// to try; run in the demo's folder, they find its config (and its local AWS) with no flag
/// and no AWS variables.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_prints_commands_that_work_from_its_folder_without_flags() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_protond"))
        .args(["demo", "--dir"])
        .arg(&dir)
        .arg("--examples")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repos"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("protond demo runs");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_mins(2);
    while !printed
        .iter()
        .any(|l: &String| l.contains("protond is running"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the demo did not start:\n{}", printed.join("\n"))
        });
        printed.push(line);
    }
    let said = printed.join("\n");
    let exe = env!("CARGO_BIN_EXE_protond");
    for command in ["status", "plan"] {
        assert!(said.contains(&format!("  {exe} {command}")), "{said}");
    }
    assert!(said.contains(&format!("cd {}", dir.display())), "{said}");
    assert!(
        said.contains(&format!("http://127.0.0.1:{port}/")),
        "{said}"
    );
    // As printed: in the folder, no --config, no AWS variables.
    let status = Command::new(exe)
        .arg("status")
        .current_dir(&dir)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("HOME", tmp.path())
        .output()
        .expect("status runs");
    let page = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        out.contains("service_instance/payments/payments-prod"),
        "{out}"
    );
    let _ = child.wait();
    assert!(page.is_ok_and(|r| r.status().is_success()));
}

#[test]
fn watcher_triggers_a_deploy_and_sigterm_stops_cleanly() {
    let w = world();
    w.edit_config(|text| {
        text.replace(
            "poll_interval = \"1s\"\n[aws]",
            "poll_interval = \"1h\"\n[aws]",
        )
    });
    let _listen = common::DEFAULT_LISTEN.blocking_lock();
    let mut daemon = w.spawn(&["run"]);
    let msg = |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap_or("").to_string();
    // Converge first: a cycle that starts nothing, after the pipeline deployed.
    let converged = daemon.wait_for(Duration::from_mins(1), |v| {
        msg(v) == "Deployment succeeded." && v["fields"]["resource"] == "pipeline/payments"
    });
    assert!(converged, "the daemon did not deploy the examples");
    // A merged spec change, seen by the watcher (polling is hourly here).
    std::thread::sleep(Duration::from_millis(500));
    w.edit("payments", "proton/services/payments.yaml", |t| {
        t.replacen("desired_count: 3", "desired_count: 6", 1)
    });
    let committed = Instant::now();
    w.commit("payments", "scale prod");
    let started = daemon.wait_for(Duration::from_secs(20), |v| {
        msg(v) == "Deployment started."
            && v["fields"]["resource"] == "service_instance/payments/payments-prod"
    });
    assert!(started, "the watcher did not trigger a deployment");
    let latency = committed.elapsed();
    assert!(latency < Duration::from_secs(20), "{latency:?}");
    eprintln!("commit to deployment start: {latency:?}");
    let done = daemon.wait_for(Duration::from_secs(30), |v| {
        msg(v) == "Deployment succeeded."
            && v["fields"]["resource"] == "service_instance/payments/payments-prod"
    });
    assert!(done);
    // SIGTERM: stops scheduling, records everything, exits 0.
    daemon.terminate();
    let bye = daemon.wait_for(Duration::from_secs(20), |v| {
        msg(v) == "All deployments recorded; bye."
    });
    assert!(bye, "no clean shutdown");
    let exit = daemon.wait();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn change_set_path_creates_updates_and_detects_no_changes() {
    use protond::provision::cloudformation::{
        CloudFormation, Settings, StackRequest, Started, stack_name,
    };
    let moto = Moto::start().expect("moto_server starts");
    let cfn = CloudFormation::new(Settings {
        region: "us-east-1".into(),
        endpoint_url: Some(moto.url.clone()),
        max_attempts: 1,
        poll_interval: Duration::from_millis(100),
        call_timeout: Duration::from_secs(30),
        timeout: Duration::from_mins(1),
        change_sets: true,
        local_credentials: true,
        artifacts: None,
    })
    .await;
    let body = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n";
    let mut req = StackRequest {
        resource_id: "environment/cs".into(),
        template_body: body.into(),
        template: "t".into(),
        version: "1.0".into(),
        spec_commit: Some("abc".into()),
        deployment_id: 1,
        role_arn: None,
        stack_name: stack_name("environment/cs"),
        installation: "test".into(),
    };
    let stack = stack_name(&req.resource_id);
    assert_eq!(
        cfn.start_apply(&req).await.expect("create"),
        Started::Executing
    );
    let info = cfn
        .wait(&stack, None, false)
        .await
        .expect("wait")
        .expect("stack");
    assert_eq!(info.status, "CREATE_COMPLETE");
    assert_eq!(
        info.tags.get("protond:deployment").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        info.tags.get("protond:resource").map(String::as_str),
        Some("environment/cs")
    );
    // The same template again: no changes, nothing executes.
    req.deployment_id = 2;
    assert_eq!(
        cfn.start_apply(&req).await.expect("no-op"),
        Started::NoChanges
    );
    // A real change executes an update.
    req.deployment_id = 3;
    req.template_body = format!("{body}  Queue:\n    Type: AWS::SQS::Queue\n");
    assert_eq!(
        cfn.start_apply(&req).await.expect("update"),
        Started::Executing
    );
    let info = cfn
        .wait(&stack, None, false)
        .await
        .expect("wait")
        .expect("stack");
    assert_eq!(info.status, "UPDATE_COMPLETE");
    // Deleting waits until the stack is gone.
    cfn.start_delete(&stack, None).await.expect("delete");
    assert!(
        cfn.wait(&stack, None, true)
            .await
            .expect("deleted")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn minor_versions_roll_out_stage_by_stage_and_halt_on_failure() {
    let w = world();
    w.edit_config(|text| format!("{text}[rollout]\nstages = [\"dev\", \"prod\"]\nsoak = \"3s\"\n"));
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    let store = w.store().await;
    let version_of = |records: &[protond::state::ResourceRecord], id: &str| {
        records
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.version.to_string())
            .unwrap_or_default()
    };
    let t = w.root.join("platform-templates");
    let cfn = "web-svc/v1/instance_infrastructure/cloudformation.yaml";

    // 1.1 reaches dev at once, prod only after dev soaked.
    w.edit("platform-templates", cfn, |s| {
        format!("{s}  Release:\n    Value: '1.1'\n")
    });
    w.commit("platform-templates", "1.1");
    git(
        &t,
        &["tag", "-a", "web-svc/v1.1", "-m", "Adds a Release output."],
    );
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    let records = store.resources().await.expect("resources");
    assert_eq!(
        version_of(&records, "service_instance/payments/payments-dev"),
        "1.1"
    );
    assert_eq!(
        version_of(&records, "service_instance/payments/payments-prod"),
        "1.0",
        "prod must wait for the soak"
    );
    assert!(stderr(&out).contains("soaking"), "{}", stderr(&out));
    std::thread::sleep(Duration::from_secs(4));
    assert!(w.reconcile().status.success());
    let records = store.resources().await.expect("resources");
    assert_eq!(
        version_of(&records, "service_instance/payments/payments-prod"),
        "1.1"
    );
    let history = store.deployments(None, 1000).await.expect("history");
    let finished_dev = history
        .iter()
        .find(|d| {
            d.deployment.resource_id == "service_instance/payments/payments-dev"
                && d.deployment.to_version.minor == 1
        })
        .and_then(|d| d.finished_at.clone())
        .expect("dev upgrade");
    let started_prod = history
        .iter()
        .find(|d| {
            d.deployment.resource_id == "service_instance/payments/payments-prod"
                && d.deployment.to_version.minor == 1
        })
        .map(|d| d.started_at.clone())
        .expect("prod upgrade");
    assert!(
        finished_dev < started_prod,
        "dev {finished_dev} must finish before prod {started_prod}"
    );

    // A failing 1.2 in dev halts its rollout: it never reaches prod.
    w.edit("platform-templates", cfn, |s| s.replacen("Resources:", "Resources:\n  Broken:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds: !GetAtt NoSuchResource.Arn\n", 1));
    w.commit("platform-templates", "1.2");
    git(&t, &["tag", "-a", "web-svc/v1.2", "-m", "Broken."]);
    let out = w.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Minor rollout halted."),
        "{}",
        stderr(&out)
    );
    std::thread::sleep(Duration::from_secs(4));
    let out = w.reconcile();
    assert!(stderr(&out).contains("is halted"), "{}", stderr(&out));
    let records = store.resources().await.expect("resources");
    assert_eq!(
        version_of(&records, "service_instance/payments/payments-prod"),
        "1.1"
    );
    let status = w.command(&["status"]).output().expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("web-svc 1.2") && text.contains("HALTED"),
        "{text}"
    );

    // An operator resume retries the failed deployment (which fails again and halts again).
    let before = store
        .deployments(Some("service_instance/payments/payments-dev"), 100)
        .await
        .expect("h")
        .len();
    let out = w
        .command(&["rollout", "resume", "web-svc/v1.2"])
        .output()
        .expect("rollout");
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = w.reconcile();
    let after = store
        .deployments(Some("service_instance/payments/payments-dev"), 100)
        .await
        .expect("h")
        .len();
    assert_eq!(
        after,
        before + 1,
        "resume retries the failed deployment once"
    );
    let records = store.resources().await.expect("resources");
    assert_eq!(
        version_of(&records, "service_instance/payments/payments-prod"),
        "1.1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_window_holds_minor_upgrades_but_not_spec_changes() {
    let w = world();
    // prod's window never opens (30 February).
    w.edit_config(|text| format!("{text}[rollout]\nstages = [\"dev\", \"prod\"]\nsoak = \"0s\"\ntimezone = \"Europe/Berlin\"\n[rollout.windows]\nprod = \"* * * 30 2 *\"\n"));
    assert!(w.reconcile().status.success());
    let store = w.store().await;
    let t = w.root.join("platform-templates");
    w.edit(
        "platform-templates",
        "web-svc/v1/instance_infrastructure/cloudformation.yaml",
        |s| format!("{s}  Release:\n    Value: '1.1'\n"),
    );
    w.commit("platform-templates", "1.1");
    git(&t, &["tag", "-a", "web-svc/v1.1", "-m", "1.1"]);
    // A spec change for prod lands at the same time as the new minor.
    w.edit("payments", "proton/services/payments.yaml", |s| {
        s.replacen("desired_count: 3", "desired_count: 7", 1)
    });
    w.commit("payments", "scale prod");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("outside the maintenance window of stage prod"),
        "{}",
        stderr(&out)
    );
    let records = store.resources().await.expect("resources");
    let get = |id: &str| records.iter().find(|r| r.id == id).expect("record").clone();
    assert_eq!(
        get("service_instance/payments/payments-dev").version.minor,
        1
    );
    let prod = get("service_instance/payments/payments-prod");
    assert_eq!(prod.version.minor, 0, "the minor waits for the window");
    let history = store
        .deployments(Some("service_instance/payments/payments-prod"), 10)
        .await
        .expect("history");
    assert_eq!(
        history[0].deployment.reason.as_deref(),
        Some("spec_change"),
        "{history:#?}"
    );
    assert_eq!(history[0].status, "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_moved_to_another_repo_belongs_there() {
    let w = world();
    assert!(w.reconcile().status.success());
    let n = w.stacks().await.len();
    // The reports spec moves from payments to platform-envs, unchanged.
    let from = w.root.join("payments/proton/services/reports.yaml");
    let text = std::fs::read_to_string(&from).expect("read");
    std::fs::remove_file(&from).expect("rm");
    w.commit("payments", "move reports out");
    std::fs::create_dir_all(w.root.join("platform-envs/proton/services")).expect("mkdir");
    std::fs::write(
        w.root.join("platform-envs/proton/services/reports.yaml"),
        &text,
    )
    .expect("write");
    w.edit("platform-envs", "proton/environments/dev.yaml", |t| {
        t.replace(
            "allowed_service_repos: [payments]",
            "allowed_service_repos: [payments, platform-envs]",
        )
    });
    w.commit("platform-envs", "move reports in");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    let store = w.store().await;
    let moved = store
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .find(|r| r.id == "service_instance/reports/reports-dev")
        .expect("record");
    assert_eq!(moved.repo, "platform-envs");
    // The new repo stops parsing: its resources are unknown, and nothing is deleted.
    std::fs::write(
        w.root.join("platform-envs/proton/services/broken.yaml"),
        "proton: ServiceSpec\nname: [broken\n",
    )
    .expect("write");
    w.commit("platform-envs", "broken");
    let out = w.reconcile();
    assert!(!stderr(&out).contains("Delete started"), "{}", stderr(&out));
    assert_eq!(w.stacks().await.len(), n);
    assert_consistent(&w).await;
}
