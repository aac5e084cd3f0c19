//! `protond import`: the stacks AWS Proton deployed are taken over without being deployed
//! again. The stacks are made on `moto_server` as Proton made them: rendered from the example
//! specs (by protond's own rendering, with the outputs of the stacks made before them),
//! named `AWSProton-<name>-cloudformation-<suffix>`, tagged with Proton's AWS-managed
//! `aws:proton:*` tags, production in its own account (its environment's role). Then:
//! a dry run reports them identical and changes nothing; `--apply` records them and tags
//! them; `reconcile --once` deploys nothing, creates and deletes nothing. A stack changed out
//! of band shows its differences and is taken over only with `--accept-diff`, after which the
//! daemon updates it in place. An export of Proton's API becomes spec files that validate.

use std::collections::BTreeMap;

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::types::{Capability, StackStatus, Tag};
use protond::model::{Placement, ResourceKind, ResourceStatus};
use protond::plan::DesiredState;
use protond::state::ResourceRecord;

use crate::common::text;
use crate::common::world::World;

/// Production's account, reached through its environment's role.
const PROD_ROLE: &str = "arn:aws:iam::222222222222:role/proton-prod";
/// Where Proton's ARNs say things were.
const PROTON: &str = "arn:aws:proton:us-east-1:123456789012";

/// A `CloudFormation` client of the world's `moto_server`, as `role` when given.
async fn client(url: &str, role: Option<&str>) -> Client {
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_cloudformation::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let Some(role) = role else {
        return Client::new(&base);
    };
    let provider = aws_config::sts::AssumeRoleProvider::builder(role)
        .session_name("test")
        .configure(&base)
        .build()
        .await;
    Client::from_conf(
        aws_sdk_cloudformation::config::Builder::from(&base)
            .credentials_provider(provider)
            .build(),
    )
}

/// The example repos on `moto_server`, production in its own account.
fn world() -> World {
    let w = World::examples_on_moto().build();
    w.replace(
        "platform-envs",
        "proton/environments/prod.yaml",
        "stage: prod\n",
        &format!("stage: prod\nrole_arn: {PROD_ROLE}\n"),
    );
    w.commit("platform-envs", "prod in its own account");
    w
}

/// Proton's name for a resource's stack: `AWSProton-<name>-cloudformation-<13 letters>`
/// (a component's: its own name, `cache` in the examples).
fn proton_name(id: &str) -> String {
    let name = if id.starts_with("component/") {
        "cache"
    } else {
        id.rsplit('/').next().unwrap_or(id)
    };
    let suffix: String = id
        .bytes()
        .cycle()
        .take(13)
        .enumerate()
        .map(|(i, b)| char::from(b'A' + (b.wrapping_add(u8::try_from(i).unwrap_or(0)) % 26)))
        .collect();
    format!("AWSProton-{name}-cloudformation-{suffix}")
}

/// The AWS-managed tags Proton put on a resource's stack (a directly defined component: its
/// instance's tags, and no template, since it has none).
fn proton_tags(id: &str, template: &str, environment: Option<&str>) -> Vec<(String, String)> {
    let parts: Vec<&str> = id.split('/').collect();
    let mut tags = Vec::new();
    let mut tag = |k: &str, v: String| tags.push((format!("aws:proton:{k}"), v));
    match parts.as_slice() {
        ["environment", env] => {
            tag("environment", format!("{PROTON}:environment/{env}"));
            tag(
                "template",
                format!("{PROTON}:environment-template/{template}"),
            );
        }
        ["service_instance", svc, inst] => {
            tag("service", format!("{PROTON}:service/{svc}"));
            tag(
                "service-instance",
                format!("{PROTON}:service/{svc}/service-instance/{inst}"),
            );
            tag("template", format!("{PROTON}:service-template/{template}"));
        }
        ["pipeline", svc] => {
            tag("service", format!("{PROTON}:service/{svc}"));
            tag("template", format!("{PROTON}:service-template/{template}"));
        }
        ["component", svc, inst] => {
            tag("service", format!("{PROTON}:service/{svc}"));
            tag(
                "service-instance",
                format!("{PROTON}:service/{svc}/service-instance/{inst}"),
            );
        }
        _ => panic!("unexpected id {id}"),
    }
    if let Some(env) = environment.filter(|_| parts[0] != "environment") {
        tag("environment", format!("{PROTON}:environment/{env}"));
    }
    tags
}

/// What AWS Proton left behind: one stack per resource the example specs declare, rendered
/// as protond renders it (with the outputs of the stacks made before it), `edit`ed by id
/// (an out-of-band change), named and tagged as Proton did, production's in its account.
/// Stacks whose id `untagged` names get no Proton tags (they must be mapped). Returns id →
/// stack name.
async fn proton_stacks(
    w: &World,
    edit: impl Fn(&str, String) -> String,
    untagged: &[&str],
) -> BTreeMap<String, String> {
    let config = protond::config::Config::load(&w.config_path()).expect("config");
    let cfg = config.clone();
    let snapshot = tokio::task::spawn_blocking(move || protond::desired::load(&cfg, None, true))
        .await
        .expect("load");
    let mut records: Vec<ResourceRecord> = Vec::new();
    let mut made = BTreeMap::new();
    for _ in 0..5 {
        let set = protond::desired::compute(&snapshot, &records, &config.account_id);
        let ready: Vec<_> = set
            .resources
            .iter()
            .filter(|r| !made.contains_key(&r.desired.id))
            .filter(|r| matches!(r.desired.state, DesiredState::Ready { .. }))
            .cloned()
            .collect();
        for r in ready {
            let id = r.desired.id.clone();
            let role = (r.environment.as_deref() == Some("prod")).then_some(PROD_ROLE);
            let cfn = client(w.aws_url(), role).await;
            let name = proton_name(&id);
            let body = edit(&id, r.documents[0].1.clone());
            let mut create = cfn
                .create_stack()
                .stack_name(&name)
                .template_body(body)
                .capabilities(Capability::CapabilityIam)
                .capabilities(Capability::CapabilityNamedIam);
            if !untagged.contains(&id.as_str()) {
                for (k, v) in proton_tags(&id, &r.desired.template, r.environment.as_deref()) {
                    create = create.tags(Tag::builder().key(k).value(v).build());
                }
            }
            create.send().await.expect("create the Proton stack");
            let out = cfn
                .describe_stacks()
                .stack_name(&name)
                .send()
                .await
                .expect("describe");
            let stack = &out.stacks()[0];
            assert_eq!(
                stack.stack_status().map(StackStatus::as_str),
                Some("CREATE_COMPLETE"),
                "{name}"
            );
            let outputs = stack
                .outputs()
                .iter()
                .map(|o| {
                    (
                        o.output_key().unwrap_or("").to_string(),
                        o.output_value().unwrap_or("").to_string(),
                    )
                })
                .collect();
            records.push(ResourceRecord {
                id: id.clone(),
                kind: r.desired.kind,
                repo: r.desired.repo.clone(),
                environment: r.environment.clone(),
                template: r.desired.template.clone(),
                version: r.desired.version,
                input_hash: r.desired.input_hash.clone(),
                rendered_hash: String::new(),
                outputs,
                status: ResourceStatus::Deployed,
                spec_commit: None,
                updated_at: String::new(),
                placement: Placement::default(),
            });
            made.insert(id, name);
        }
    }
    assert_eq!(
        made.len(),
        7,
        "every example resource has its stack: {made:?}"
    );
    made
}

/// Every stack name, in both accounts.
async fn all_stacks(w: &World) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for role in [None, Some(PROD_ROLE)] {
        let cfn = client(w.aws_url(), role).await;
        let listed = cfn.describe_stacks().send().await.expect("describe");
        for s in listed.stacks() {
            if s.stack_status().map(StackStatus::as_str) == Some("DELETE_COMPLETE") {
                continue;
            }
            let tags = s
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or("").to_string(),
                        t.value().unwrap_or("").to_string(),
                    )
                })
                .collect();
            out.push((s.stack_name().unwrap_or("").to_string(), tags));
        }
    }
    out.sort();
    out
}

/// The `protond` binary with `args` alone (commands that take no config).
fn protond_plain(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_protond"))
        .args(args)
        .output()
        .expect("protond runs")
}

/// `protond import` with `args`, its JSON report.
fn import_json(w: &World, args: &[&str]) -> (bool, serde_json::Value, String) {
    let mut all = vec!["import", "--output", "json"];
    all.extend_from_slice(args);
    let out = w.run(&all);
    let report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out.status.success(), report, text(&out))
}

/// Resource id → (verdict, import state) of a JSON report.
fn verdicts(report: &serde_json::Value) -> BTreeMap<String, (String, String)> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["resource"].as_str().unwrap_or("").to_string(),
                (
                    f["verdict"].as_str().unwrap_or("").to_string(),
                    f["import"]["state"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn proton_stacks_are_taken_over_without_a_deployment() {
    let w = world();
    let made = proton_stacks(&w, |_, body| body, &["pipeline/payments"]).await;
    let before = all_stacks(&w).await;
    // The pipeline's stack lost Proton's tags: it is given by name in a mapping file.
    let map = w.root.join("map.txt");
    std::fs::write(
        &map,
        format!(
            "# resource id, stack\npipeline/payments {}\n",
            made["pipeline/payments"]
        ),
    )
    .expect("map");
    let map = map.display().to_string();

    // A dry run: every stack found and identical, nothing changed.
    let (ok, report, out) = import_json(&w, &["--map", &map]);
    assert!(ok, "{out}");
    let found = verdicts(&report);
    assert_eq!(found.len(), 7, "{report:#}");
    for (id, (verdict, state)) in &found {
        assert_eq!(
            (verdict.as_str(), state.as_str()),
            ("identical", "would_import"),
            "{id}: {report:#}"
        );
    }
    let pipeline = report["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|x| x["resource"] == "pipeline/payments"))
        .expect("pipeline");
    assert_eq!(pipeline["matched_by"], "map");
    assert_eq!(all_stacks(&w).await, before, "a dry run changes no stack");
    let store = w.store().await;
    assert!(store.resources().await.expect("records").is_empty());
    assert!(
        store
            .deployments(None, 10)
            .await
            .expect("history")
            .is_empty()
    );

    // The table says the same.
    let table = w.run(&["import", "--map", &map]);
    let table_text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.status.success(), "{}", text(&table));
    assert!(table_text.contains("7 identical"), "{table_text}");
    assert!(
        table_text.contains("Dry run: nothing was changed"),
        "{table_text}"
    );

    // Drafts from the stacks alone (no export) hold placeholders that fail validation.
    let drafts = w.root.join("drafts");
    let out = w.run(&["import", "--write-specs", &drafts.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let env = std::fs::read_to_string(drafts.join("environments/dev.yaml")).expect("dev draft");
    assert!(env.contains("FILL-ME(protond)"), "{env}");
    let out = protond_plain(&[
        "validate",
        &w.dir("platform-templates/basic-env/v1")
            .display()
            .to_string(),
        "--spec",
        &drafts.join("environments/dev.yaml").display().to_string(),
    ]);
    assert!(
        !out.status.success(),
        "a draft with placeholders validates: {}",
        text(&out)
    );

    // Taken over: recorded where Proton put them, tagged, one import row each.
    let (ok, report, out) = import_json(&w, &["--apply", "--map", &map]);
    assert!(ok, "{out}");
    assert!(
        verdicts(&report).values().all(|(_, s)| s == "imported"),
        "{report:#}"
    );
    let records = store.resources().await.expect("records");
    assert_eq!(records.len(), 7);
    for r in &records {
        assert_eq!(r.placement.stack_name, made[&r.id], "{r:?}");
        assert!(r.placement.stack_id.is_some(), "{r:?}");
        let role = (r.environment.as_deref() == Some("prod")).then(|| PROD_ROLE.to_string());
        assert_eq!(r.placement.role_arn, role, "{r:?}");
    }
    let history = store.deployments(None, 20).await.expect("history");
    assert_eq!(history.len(), 7);
    assert!(
        history
            .iter()
            .all(|d| d.deployment.action == "import" && d.status == "succeeded")
    );
    let after = all_stacks(&w).await;
    assert_eq!(after.len(), before.len());
    for (name, tags) in &after {
        let id = made
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| id)
            .expect("a Proton stack");
        assert_eq!(tags.get("protond:resource"), Some(id), "{name}: {tags:?}");
        assert!(
            tags.contains_key("protond:installation"),
            "{name}: {tags:?}"
        );
    }

    // The daemon deploys nothing: no create, no delete, no update.
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("0 deployment(s) succeeded, 0 failed"),
        "{}",
        text(&out)
    );
    assert_eq!(all_stacks(&w).await.len(), before.len());
    assert_eq!(store.deployments(None, 20).await.expect("history").len(), 7);

    // A second import finds nothing left to take over.
    let (ok, report, out) = import_json(&w, &[]);
    assert!(ok, "{out}");
    assert_eq!(report["findings"], serde_json::json!([]));
    assert_eq!(report["recorded"], 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stack_changed_out_of_band_is_taken_over_only_when_accepted() {
    let w = world();
    let edit = |id: &str, body: String| {
        if id == "environment/prod" {
            assert!(body.contains("MessageRetentionPeriod: 1209600"), "{body}");
            body.replace(
                "MessageRetentionPeriod: 1209600",
                "MessageRetentionPeriod: 604800",
            )
        } else {
            body
        }
    };
    let made = proton_stacks(&w, edit, &[]).await;
    // A second stack carrying reports-dev's Proton tags: which one is it?
    let copy = "AWSProton-reports-dev-cloudformation-COPY";
    let mut create = client(w.aws_url(), None)
        .await
        .create_stack()
        .stack_name(copy)
        .template_body("Resources:\n  T:\n    Type: AWS::SNS::Topic\n");
    for (k, v) in proton_tags(
        "service_instance/reports/reports-dev",
        "worker-svc",
        Some("dev"),
    ) {
        create = create.tags(Tag::builder().key(k).value(v).build());
    }
    create.send().await.expect("create the copy");
    let before = all_stacks(&w).await;

    // The difference is shown by logical id and property; prod and what depends on it wait.
    let (ok, report, out) = import_json(&w, &["--apply"]);
    assert!(
        !ok,
        "an import that leaves a stack behind exits non-zero: {out}"
    );
    let found = verdicts(&report);
    assert_eq!(
        found["environment/prod"],
        ("differs".into(), "no".into()),
        "{report:#}"
    );
    assert_eq!(
        found["service_instance/payments/payments-prod"],
        ("blocked".into(), "no".into()),
        "{report:#}"
    );
    assert_eq!(
        found["environment/dev"],
        ("identical".into(), "imported".into())
    );
    let prod = report["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|x| x["resource"] == "environment/prod"))
        .expect("prod");
    assert_eq!(
        prod["differences"],
        serde_json::json!([{
            "change": "changed",
            "at": "Resources.DeadLetterQueue.Properties.MessageRetentionPeriod",
            "resource": "DeadLetterQueue",
            "live": "\"604800\"",
            "rendered": "\"1209600\"",
        }]),
        "{report:#}"
    );
    let table = w.run(&["import"]);
    let table_text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table_text.contains(
            "~ Resources.DeadLetterQueue.Properties.MessageRetentionPeriod: live \"604800\" -> rendered \"1209600\""
        ),
        "{table_text}"
    );
    assert!(
        table_text.contains("--accept-diff environment/prod"),
        "{table_text}"
    );
    assert_eq!(
        found["pipeline/payments"],
        ("blocked".into(), "no".into()),
        "{report:#}"
    );
    assert_eq!(
        found["service_instance/reports/reports-dev"],
        ("ambiguous".into(), "no".into()),
        "{report:#}"
    );
    let reports = report["findings"]
        .as_array()
        .and_then(|f| {
            f.iter()
                .find(|x| x["resource"] == "service_instance/reports/reports-dev")
        })
        .expect("reports-dev");
    let mut candidates = vec![
        copy.to_string(),
        made["service_instance/reports/reports-dev"].clone(),
    ];
    candidates.sort();
    assert_eq!(
        reports["candidates"],
        serde_json::json!(candidates),
        "{report:#}"
    );
    let store = w.store().await;
    assert_eq!(store.resources().await.expect("records").len(), 3);

    // Accepted: prod is taken over as it is, then what depends on it.
    let map = w.root.join("map.yaml");
    std::fs::write(
        &map,
        format!(
            "service_instance/reports/reports-dev: {}\n",
            made["service_instance/reports/reports-dev"]
        ),
    )
    .expect("map");
    let map = map.display().to_string();
    let (ok, report, out) = import_json(
        &w,
        &[
            "--apply",
            "--accept-diff",
            "environment/prod",
            "--map",
            &map,
        ],
    );
    assert!(ok, "{out}");
    let found = verdicts(&report);
    assert_eq!(
        found["environment/prod"],
        ("differs".into(), "imported".into())
    );
    assert_eq!(
        found["service_instance/payments/payments-prod"],
        ("identical".into(), "imported".into())
    );
    assert_eq!(store.resources().await.expect("records").len(), 7);

    // The daemon updates prod in place: one update, on Proton's stack, nothing created or
    // deleted.
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("1 deployment(s) succeeded, 0 failed"),
        "{}",
        text(&out)
    );
    let last = &store.deployments(None, 1).await.expect("history")[0];
    assert_eq!(last.deployment.resource_id, "environment/prod");
    assert_eq!(last.deployment.action, "update");
    assert_eq!(
        last.deployment.placement.stack_name,
        made["environment/prod"]
    );
    assert_eq!(all_stacks(&w).await.len(), before.len());
    let prod = client(w.aws_url(), Some(PROD_ROLE)).await;
    let body = prod
        .get_template()
        .stack_name(&made["environment/prod"])
        .send()
        .await
        .expect("template");
    assert!(
        body.template_body()
            .unwrap_or("")
            .contains("MessageRetentionPeriod: 1209600"),
        "the update restored what the spec says"
    );
}

/// An export of Proton's API, as `aws proton get-environment`, `get-service`,
/// `list-service-instances` and `get-service-instance` print it, for the example specs.
fn export(dir: &std::path::Path) {
    let envs = [
        (
            "dev",
            "team: platform\n  log_level: debug\n  retention_days: 4\n",
        ),
        (
            "prod",
            "team: platform\n  log_level: warn\n  retention_days: 14\n",
        ),
    ];
    std::fs::create_dir_all(dir).expect("mkdir");
    for (name, spec) in envs {
        let doc = serde_json::json!({"environment": {
            "arn": format!("{PROTON}:environment/{name}"), "name": name,
            "templateName": "basic-env", "templateMajorVersion": "1", "templateMinorVersion": "0",
            "deploymentStatus": "SUCCEEDED", "provisioning": "CUSTOMER_MANAGED",
            "spec": format!("proton: EnvironmentSpec\n\nspec:\n  {spec}"),
        }});
        std::fs::write(dir.join(format!("env-{name}.json")), doc.to_string()).expect("write");
    }
    let payments = "proton: ServiceSpec\npipeline:\n  dockerfile: Dockerfile\n  unit_test_command: make test\n  artifact_retention_days: 30\ninstances:\n- name: payments-dev\n  environment: dev\n  spec:\n    image: public.ecr.aws/nginx/nginx:stable\n    port: 8080\n    memory: '512'\n    desired_count: 1\n    health_check_path: /health\n- name: payments-prod\n  environment: prod\n  spec:\n    image: public.ecr.aws/nginx/nginx:stable\n    port: 8080\n    memory: '2048'\n    desired_count: 3\n    health_check_path: /health\n";
    let doc = serde_json::json!({"service": {
        "arn": format!("{PROTON}:service/payments"), "name": "payments", "templateName": "web-svc",
        "repositoryId": "example/payments", "branchName": "main", "status": "ACTIVE",
        "pipeline": {"arn": format!("{PROTON}:service/payments/pipeline"), "templateName": "web-svc",
            "templateMajorVersion": "1", "templateMinorVersion": "0"},
        "spec": payments,
    }});
    std::fs::write(dir.join("service-payments.json"), doc.to_string()).expect("write");
    // The worker service: a list of instances, and one instance's own output.
    let doc = serde_json::json!({"serviceInstances": [{
        "arn": format!("{PROTON}:service/reports/service-instance/reports-dev"), "name": "reports-dev",
        "serviceName": "reports", "environmentName": "dev", "templateName": "worker-svc",
        "templateMajorVersion": "1", "templateMinorVersion": "0",
    }]});
    std::fs::write(dir.join("reports-instances.json"), doc.to_string()).expect("write");
    let reports = "proton: ServiceSpec\ninstances:\n- name: reports-dev\n  environment: dev\n  spec:\n    visibility_timeout: 120\n    max_receive_count: 3\n    use_dead_letter_queue: true\n    schedule: hourly\n";
    let doc = serde_json::json!({"serviceInstance": {
        "name": "reports-dev", "serviceName": "reports", "environmentName": "dev",
        "templateName": "worker-svc", "templateMajorVersion": "1", "templateMinorVersion": "0",
        "spec": reports,
    }});
    std::fs::write(dir.join("reports-dev.json"), doc.to_string()).expect("write");
}

#[test]
fn an_export_becomes_spec_files_that_validate_and_plan() {
    let w = World::builder()
        .examples()
        .tagged(&["basic-env", "web-svc", "worker-svc"])
        .build();
    let exported = w.root.join("export");
    export(&exported);
    let drafts = w.root.join("drafts");
    let out = w.run(&[
        "import",
        "--write-specs",
        &drafts.display().to_string(),
        "--proton-export",
        &exported.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let written = [
        ("environments/dev.yaml", "basic-env"),
        ("environments/prod.yaml", "basic-env"),
        ("services/payments.yaml", "web-svc"),
        ("services/reports.yaml", "worker-svc"),
    ];
    for (file, template) in written {
        let path = drafts.join(file);
        let body = std::fs::read_to_string(&path).expect("written");
        assert!(!body.contains("FILL-ME"), "{file}: {body}");
        let out = protond_plain(&[
            "validate",
            &w.dir(&format!("platform-templates/{template}/v1"))
                .display()
                .to_string(),
            "--spec",
            &path.display().to_string(),
        ]);
        assert!(out.status.success(), "{file}: {}\n{body}", text(&out));
    }
    // Not overwritten.
    let again = w.run(&[
        "import",
        "--write-specs",
        &drafts.display().to_string(),
        "--proton-export",
        &exported.display().to_string(),
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("not overwriting existing files"),
        "{}",
        text(&again)
    );

    // In the spec repos instead of the examples' own specs, they plan cleanly.
    std::fs::remove_dir_all(w.dir("platform-envs/proton")).expect("rm");
    std::fs::remove_dir_all(w.dir("payments/proton")).expect("rm");
    crate::common::copy_tree(
        &drafts.join("environments"),
        &w.dir("platform-envs/proton/environments"),
    );
    crate::common::copy_tree(&drafts.join("services"), &w.dir("payments/proton/services"));
    w.commit("platform-envs", "specs drafted from Proton");
    w.commit("payments", "specs drafted from Proton");
    let out = w.run(&["plan", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(plan["problems"], serde_json::json!([]), "{plan:#}");
    let actions = plan["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 6, "{plan:#}");
    // Environments create; what lives in them waits for them, nothing is invalid.
    assert!(
        actions
            .iter()
            .all(|a| a["action"] == "create" || a["action"] == "blocked"),
        "{plan:#}"
    );
    assert!(actions.iter().any(|a| a["id"] == "pipeline/payments" && a["kind"] == ResourceKind::Pipeline.as_str()));
}
