//! Proton's own files in the daemon (issue 16, section 2): a service's source repository from
//! its spec, header-less spec files mapped to templates in the config, template repos kept
//! under a subdirectory with nested bundles, and customer-managed environments. Each test runs
//! the real binary on real git repos and, where it deploys, its own `moto_server`.

use crate::common::world::World;
use crate::common::{self, text};

const PAYMENTS: &str = "proton/services/payments.yaml";

/// The body of the live stack of resource `id`.
async fn template_of(w: &World, id: &str) -> String {
    common::cfn_client(w.aws_url())
        .get_template()
        .stack_name(protond::provision::cloudformation::stack_name(id))
        .send()
        .await
        .expect("template")
        .template_body()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_spec_names_its_source_repository() {
    let started = std::time::Instant::now();
    let w = World::examples_on_moto().build();
    w.replace(
        "payments",
        PAYMENTS,
        "branch_name: main",
        "branch_name: release/2",
    );
    w.commit("payments", "build from release/2");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let body = template_of(&w, "pipeline/payments").await;
    assert!(
        body.contains("repository=acme/payments;branch=release/2;"),
        "the pipeline sees the spec's source:\n{body}"
    );

    // Without `branch_name`, the pipeline template's use of it is an error naming the spec
    // file and the field; the instances, whose templates do not use it, are unaffected.
    w.replace("payments", PAYMENTS, "branch_name: release/2\n", "");
    w.commit("payments", "forget the branch");
    let out = w.run(&["plan"]);
    let all = text(&out);
    assert!(
        all.contains(&format!(
            "{PAYMENTS}: branch_name: the template (pipeline_infrastructure/cloudformation.yaml:21) uses `service.branch_name`"
        ))
            && all.contains("add `branch_name: main`"),
        "{all}"
    );
    assert!(
        all.lines().filter(|l| l.starts_with("invalid")).count() == 1,
        "only the pipeline is invalid: {all}"
    );
    eprintln!(
        "proton_specs: source repository: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Proton's environment spec for `dev`, as Proton kept it: no name, no template.
const PROTON_DEV: &str =
    "proton: EnvironmentSpec\nspec:\n  team: platform\n  log_level: debug\n  retention_days: 4\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_less_spec_files_follow_the_templates_the_config_maps() {
    let started = std::time::Instant::now();
    let w = World::examples_on_moto()
        .config(|c| {
            c.repo_line(
                "platform-envs",
                "templates = [{ path = \"proton/environments\", name = \"basic-env\", major = 1 }]",
            )
            .repo_line(
                "payments",
                "templates = [{ path = \"proton/services/reports.yaml\", name = \"worker-svc\", major = 1 }, { path = \"proton/frontend/test/frontend-spec.yaml\", name = \"worker-svc\", major = 1, resource = \"frontend\" }]",
            );
        })
        .build();
    w.write("platform-envs", "proton/environments/dev.yaml", PROTON_DEV);
    w.commit("platform-envs", "dev as Proton kept it");
    w.edit("payments", "proton/services/reports.yaml", |t| {
        t.replace("name: reports\n", "")
            .replace("template: {name: worker-svc, major: 1}\n", "")
    });
    // A service sync spec file (`proton-ops.yaml` named the service, not the file).
    let reports = std::fs::read_to_string(w.dir("payments").join("proton/services/reports.yaml"))
        .expect("reports spec");
    w.write(
        "payments",
        "proton/frontend/test/frontend-spec.yaml",
        &reports.replace("reports-dev", "frontend-dev"),
    );
    w.commit("payments", "reports as Proton kept it");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let out = w.run(&["status", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    let row = |id: &str| {
        status["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["id"] == id))
            .unwrap_or_else(|| panic!("{id} in {status}"))
            .clone()
    };
    let dev = row("environment/dev");
    assert_eq!(
        (&dev["template"], &dev["status"]),
        (&"basic-env".into(), &"deployed".into()),
        "{dev}"
    );
    for id in [
        "service_instance/reports/reports-dev",
        "service_instance/frontend/frontend-dev",
    ] {
        let r = row(id);
        assert_eq!(
            (&r["template"], &r["status"]),
            (&"worker-svc".into(), &"deployed".into()),
            "{r}"
        );
    }

    // A header that disagrees with the mapping: an error on the file with both fixes; the
    // deployed instance is kept (invalid, never deleted).
    w.edit("payments", "proton/services/reports.yaml", |t| {
        format!("template: {{name: web-svc, major: 1}}\n{t}")
    });
    w.commit("payments", "a conflicting header");
    let out = w.run(&["plan"]);
    let all = text(&out);
    assert!(
        all.contains("proton/services/reports.yaml: template: the header names web-svc v1, but the config maps \"proton/services/reports.yaml\" to worker-svc v1")
            && all.contains("remove the header's `template:`"),
        "{all}"
    );
    assert!(!all.lines().any(|l| l.starts_with("delete")), "{all}");

    // A mapping outside the spec folder is a config error naming the key and the fix.
    w.edit_config(|t| t.replace("path = \"proton/environments\"", "path = \"environments\""));
    let out = w.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("spec_repos[0].templates[0].path")
            && text(&out).contains("outside the spec folder"),
        "{}",
        text(&out)
    );
    eprintln!(
        "proton_specs: header-less spec files: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Moves the example templates under `templates/` (Proton's template sync `subdirectory`)
/// and adds a broken bundle deeper down, in one commit.
fn templates_in_a_subdirectory(root: &std::path::Path) {
    let t = root.join("platform-templates");
    std::fs::create_dir_all(t.join("templates")).expect("mkdir");
    for name in ["basic-env", "web-svc", "worker-svc"] {
        common::git(&t, &["mv", name, &format!("templates/{name}")]);
    }
    let broken = t.join("templates/teams/data/broken-svc/v1");
    std::fs::create_dir_all(broken.join("schema")).expect("mkdir");
    std::fs::write(
        broken.join("schema/schema.yaml"),
        "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: \"In\"\n  types:\n    In:\n      type: object\n",
    )
    .expect("write");
    common::git(&t, &["add", "-A"]);
    common::git(&t, &["commit", "-qm", "bundles under templates/"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_repos_keep_bundles_under_a_subdirectory_at_any_depth() {
    let started = std::time::Instant::now();
    let w = World::builder()
        .examples()
        .setup(templates_in_a_subdirectory)
        .tagged(&["basic-env", "web-svc", "worker-svc"])
        .moto()
        .config(|c| {
            c.repo_line("platform-templates", "subdirectory = \"templates\"");
        })
        .build();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let stacks = w.stacks().await;
    assert_eq!(
        stacks.len(),
        7,
        "every example resource deployed: {}",
        stacks.len()
    );

    // `protond validate <repo root>`: every bundle at any depth, one verdict each.
    let root = w.dir("platform-templates");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_protond"))
        .args(["validate", root.to_str().expect("utf8")])
        .output()
        .expect("protond runs");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    for ok in [
        "templates/basic-env/v1 (environment template basic-env v1)",
        "templates/web-svc/v1 (service template web-svc v1)",
        "templates/worker-svc/v1 (service template worker-svc v1)",
    ] {
        assert!(
            all.lines().any(|l| l.starts_with("ok") && l.ends_with(ok)),
            "{ok}: {all}"
        );
    }
    assert!(
        all.lines()
            .any(|l| l.starts_with("FAIL") && l.ends_with("templates/teams/data/broken-svc/v1")),
        "{all}"
    );
    assert!(all.contains("4 bundle(s) checked"), "{all}");

    // A subdirectory that escapes the repo is a config error naming the key.
    w.edit_config(|t| t.replace("subdirectory = \"templates\"", "subdirectory = \"../x\""));
    let out = w.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("template_repos[0].subdirectory"),
        "{}",
        text(&out)
    );
    eprintln!(
        "proton_specs: template sync subdirectory: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The network a team runs itself: a topic, a parameter and a policy, as outputs.
const LEGACY_NETWORK: &str = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: legacy-notifications\n  Config:\n    Type: AWS::SSM::Parameter\n    Properties:\n      Name: /legacy/config\n      Type: String\n      Value: team=legacy\n  Policy:\n    Type: AWS::IAM::ManagedPolicy\n    Properties:\n      ManagedPolicyName: legacy-shared\n      PolicyDocument:\n        Version: '2012-10-17'\n        Statement:\n          - Effect: Allow\n            Action: ['sns:Publish']\n            Resource: !Ref Topic\nOutputs:\n  TopicArn:\n    Value: !Ref Topic\n  ConfigParameter:\n    Value: !Ref Config\n  SharedPolicyArn:\n    Value: !Ref Policy\n";

/// `dev` as a customer-managed environment: its outputs from the stack `legacy-network`,
/// one given in the spec.
const CUSTOMER_DEV: &str = "proton: EnvironmentSpec\nname: dev\ntemplate: {name: basic-env, major: 1}\nstage: dev\nallowed_service_repos: [payments]\ncustomer_managed:\n  stack: legacy-network\n  outputs:\n    DeadLetterQueueArn: arn:aws:sqs:us-east-1:123456789012:legacy-dead-letters\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_managed_environments_are_used_never_deployed() {
    let started = std::time::Instant::now();
    let w = World::examples_on_moto().build();
    let cfn = common::cfn_client(w.aws_url());
    cfn.create_stack()
        .stack_name("legacy-network")
        .template_body(LEGACY_NETWORK)
        .send()
        .await
        .expect("the team's own stack");
    let legacy = |stacks: &[common::LiveStack]| {
        stacks
            .iter()
            .find(|s| s.name == "legacy-network")
            .map(|s| (s.status.clone(), s.tags.clone()))
    };
    let before = legacy(&w.stacks().await).expect("legacy stack");
    w.write(
        "platform-envs",
        "proton/environments/dev.yaml",
        CUSTOMER_DEV,
    );
    w.commit("platform-envs", "dev is the team's own network");

    let out = w.run(&["plan"]);
    let all = text(&out);
    assert!(
        all.contains("environment/dev  customer-managed: outputs of stack legacy-network, 1 given in proton/environments/dev.yaml"),
        "{all}"
    );
    assert!(
        !all.lines()
            .any(|l| l.contains("environment/dev") && l.starts_with("create")),
        "{all}"
    );

    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let stacks = w.stacks().await;
    let dev_stack = protond::provision::cloudformation::stack_name("environment/dev");
    assert!(
        stacks.iter().all(|s| s.name != dev_stack),
        "no stack for the customer-managed environment: {stacks:?}"
    );
    assert_eq!(
        legacy(&stacks),
        Some(before),
        "the team's stack is untouched"
    );
    // Its instances deploy with its outputs, like any environment's.
    let topic = cfn
        .describe_stacks()
        .stack_name("legacy-network")
        .send()
        .await
        .expect("describe")
        .stacks()[0]
        .outputs()
        .iter()
        .find(|o| o.output_key() == Some("TopicArn"))
        .and_then(|o| o.output_value())
        .expect("topic output")
        .to_string();
    let body = template_of(&w, "service_instance/reports/reports-dev").await;
    assert!(body.contains(&topic), "the instance uses {topic}:\n{body}");
    let body = template_of(&w, "service_instance/payments/payments-dev").await;
    assert!(body.contains(&topic), "the instance uses {topic}:\n{body}");
    let out = w.run(&["status", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert!(
        status["resources"]
            .as_array()
            .is_some_and(|rs| rs.iter().all(|r| r["id"] != "environment/dev")),
        "protond records no deployment of it: {status}"
    );
    // `protond status` lists it: its outputs' sources, and the stack read.
    let row = status["customer_managed"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == "environment/dev"))
        .unwrap_or_else(|| panic!("status lists environment/dev as customer-managed: {status}"));
    assert_eq!(row["outputs_from"], "stack+spec", "{row}");
    assert_eq!(row["stack"], "legacy-network", "{row}");
    assert_eq!(row["stack_readable"], true, "{row}");
    for key in ["DeadLetterQueueArn", "TopicArn"] {
        assert!(
            row["outputs"]
                .as_array()
                .is_some_and(|o| o.iter().any(|k| k == key)),
            "{row}"
        );
    }
    let table = text(&w.run(&["status"]));
    assert!(
        table.lines().any(|l| l.contains("environment/dev (")
            && l.contains("proton/environments/dev.yaml): outputs from stack legacy-network and the spec, stack readable")),
        "{table}"
    );

    // The daemon's API (and page, and metric) show it as customer-managed.
    let port = common::free_port();
    let daemon = w.spawn(&["run", "--listen", &format!("127.0.0.1:{port}")]);
    let url = format!("http://127.0.0.1:{port}/api/v1/environments");
    let start = std::time::Instant::now();
    let dev = loop {
        let envs: serde_json::Value = match reqwest::get(&url).await {
            Ok(r) => r.json().await.unwrap_or(serde_json::Value::Null),
            Err(_) => serde_json::Value::Null,
        };
        if let Some(dev) = envs
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["id"] == "environment/dev"))
        {
            break dev.clone();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_mins(1),
            "the daemon never listed environment/dev: {envs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(dev["status"], "customer_managed", "{dev}");
    drop(daemon);

    // A stack that does not exist: the environment is invalid, its instances kept.
    w.replace(
        "platform-envs",
        "proton/environments/dev.yaml",
        "stack: legacy-network",
        "stack: no-such-network",
    );
    w.commit("platform-envs", "a wrong stack name");
    let out = w.run(&["plan"]);
    let all = text(&out);
    assert!(
        all.contains("proton/environments/dev.yaml: customer_managed.stack: cannot read the outputs of stack no-such-network: stack no-such-network does not exist"),
        "{all}"
    );
    assert!(!all.lines().any(|l| l.starts_with("delete")), "{all}");
    let out = w.run(&["status", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    let row = &status["customer_managed"][0];
    assert_eq!(row["stack_readable"], false, "{status}");
    assert!(
        row["error"]
            .as_str()
            .is_some_and(|e| e.contains("stack no-such-network does not exist")),
        "{status}"
    );
    eprintln!(
        "proton_specs: customer-managed environment: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
