//! The rest of Proton's resource model end to end: a component's outputs in its instance's
//! template and the pipeline stack on `moto_server`, and self-managed (Terraform) provisioning
//! through pull requests to an infrastructure repo, completed by `protond notify`.

use std::path::Path;

use serde_json::Value;

use crate::common::forge::{FakeForge, Kind};
use crate::common::world::World;
use crate::common::{self, git};

pub(crate) const TOKEN: &str = "infra-forge-token";

const TF_MANIFEST: &str = "infrastructure:\n  templates:\n    - file: \"*\"\n      rendering_engine: hcl\n      template_language: terraform\n";

fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// The examples on a `moto_server`, plus Terraform templates (an environment with an output,
/// a service using it) and specs using them, a pipeline stack naming its `CodePipeline`
/// pipeline, and an infrastructure repo; every command gets the forge token. The config's
/// `[self_managed]` forge is `__FORGE__` until [`configure`] names the fake one.
pub(crate) fn world() -> World {
    World::builder()
        .examples()
        .repo("infra", "infrastructure\n")
        .setup(terraform_templates)
        .tagged(&["basic-env", "web-svc", "worker-svc", "tf-env", "tf-svc"])
        .moto()
        .env("INFRA_TOKEN", TOKEN)
        .config(|c| {
            c.section("[self_managed]\nurl = \"infra\"\n__FORGE__");
        })
        .build()
}

/// Points the config's `[self_managed]` forge at the fake GitHub at `forge_url`.
pub(crate) fn configure(w: &World, forge_url: &str) {
    w.edit_config(|t| {
        t.replace(
            "__FORGE__",
            &format!("forge = {{ kind = \"github\", api_url = \"{forge_url}\", repo = \"acme/infra\", token_env = \"INFRA_TOKEN\" }}"),
        )
    });
}

/// The Terraform templates and specs of [`world`], committed under `root`.
fn terraform_templates(root: &Path) {
    // Terraform templates: an environment with an output, a service using it.
    let t = root.join("platform-templates");
    write(
        &t.join("tf-env/v1/schema/schema.yaml"),
        "schema:\n  format:\n    openapi: \"3.0.0\"\n  environment_input_type: \"In\"\n  types:\n    In:\n      type: object\n      properties:\n        vpc_name:\n          type: string\n      required: [vpc_name]\n",
    );
    write(
        &t.join("tf-env/v1/infrastructure/manifest.yaml"),
        TF_MANIFEST,
    );
    write(
        &t.join("tf-env/v1/infrastructure/main.tf"),
        "resource \"aws_vpc\" \"this\" {\n  cidr_block = \"10.0.0.0/16\"\n  tags = { Name = var.environment.inputs.vpc_name }\n}\n",
    );
    write(
        &t.join("tf-env/v1/infrastructure/outputs.tf"),
        "output \"vpc_id\" {\n  value = aws_vpc.this.id\n}\n",
    );
    write(
        &t.join("tf-svc/v1/schema/schema.yaml"),
        "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: \"In\"\n  types:\n    In:\n      type: object\n      properties:\n        size:\n          type: number\n          default: 1\n",
    );
    write(
        &t.join("tf-svc/v1/instance_infrastructure/manifest.yaml"),
        TF_MANIFEST,
    );
    write(
        &t.join("tf-svc/v1/instance_infrastructure/main.tf"),
        "resource \"aws_instance\" \"this\" {\n  count     = var.service_instance.inputs.size\n  subnet_id = var.environment.outputs.vpc_id\n}\n",
    );
    write(&t.join("tf-svc/v1/.compatible-envs"), "tf-env:1\n");
    // The pipeline stack names its CodePipeline pipeline (moto cannot create one from a
    // stack, so the test creates it through the API).
    let pipe = t.join("web-svc/v1/pipeline_infrastructure/cloudformation.yaml");
    let text = std::fs::read_to_string(&pipe).expect("pipeline template");
    std::fs::write(
        &pipe,
        format!("{text}  PipelineName:\n    Value: '{{{{ service.name }}}}-pipeline'\n"),
    )
    .expect("write");
    git(&t, &["add", "-A"]);
    git(&t, &["commit", "-qm", "terraform templates"]);
    let envs = root.join("platform-envs");
    write(
        &envs.join("proton/environments/tfdev.yaml"),
        "proton: EnvironmentSpec\nname: tfdev\ntemplate: {name: tf-env, major: 1}\nspec:\n  vpc_name: tf-dev-vpc\n",
    );
    git(&envs, &["add", "-A"]);
    git(&envs, &["commit", "-qm", "tfdev"]);
    let p = root.join("payments");
    write(
        &p.join("proton/services/tfapi.yaml"),
        "proton: ServiceSpec\nname: tfapi\ntemplate: {name: tf-svc, major: 1}\ninstances:\n  - name: tfapi-dev\n    environment: tfdev\n    spec:\n      size: 2\n",
    );
    let spec = p.join("proton/services/payments.yaml");
    let text = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(
        &spec,
        text.replace(
            "template: {name: web-svc, major: 1}\n",
            "template: {name: web-svc, major: 1}\nstart_pipeline_on_deploy: true\n",
        ),
    )
    .expect("write");
    git(&p, &["add", "-A"]);
    git(&p, &["commit", "-qm", "tfapi"]);
}

/// `protond reconcile --once`, which must succeed; returns its output.
fn reconcile(w: &World) -> String {
    let out = w.reconcile();
    let text = common::text(&out);
    assert!(out.status.success(), "reconcile failed:\n{text}");
    text
}

/// `git show <rev>` in the infrastructure repo.
fn show(w: &World, rev: &str) -> String {
    w.git("infra", &["show", rev])
}

/// Merges `branch` of the infrastructure repo into main, as the team would.
fn merge(w: &World, branch: &str) {
    w.git(
        "infra",
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            &format!("merge {branch}"),
            branch,
        ],
    );
}

/// `protond status --output json`.
fn status_json(w: &World) -> Value {
    let out = w.run(&["status", "--output", "json"]);
    serde_json::from_slice(&out.stdout).expect("status json")
}

fn resource<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_pipelines_and_terraform_through_pull_requests() {
    let world = world();
    let github = FakeForge::start(
        Kind::GitHub,
        "/api/v3",
        TOKEN,
        "acme/infra",
        world.root.join("infra"),
    )
    .await;
    configure(&world, &github.url);

    // CloudFormation resources deploy; the Terraform environment is submitted and waits.
    let log = reconcile(&world);
    assert!(
        log.contains("1 waiting for their outcome (protond notify)"),
        "{log}"
    );
    let status = status_json(&world);
    for id in [
        "pipeline/payments",
        "component/payments/payments-dev",
        "service_instance/payments/payments-dev",
    ] {
        assert_eq!(
            resource(&status, id).expect(id)["status"],
            "deployed",
            "{id}"
        );
    }
    // The component's outputs are in its instance's rendered (and deployed) template.
    let store = world.store().await;
    let records = store.resources().await.expect("resources");
    let component = records
        .iter()
        .find(|r| r.id == "component/payments/payments-dev")
        .expect("component");
    let policy = component
        .outputs
        .get("AccessPolicyArn")
        .expect("component output")
        .clone();
    let cfn = common::cfn_client(world.aws_url());
    let body = cfn
        .get_template()
        .stack_name(protond::provision::cloudformation::stack_name(
            "service_instance/payments/payments-dev",
        ))
        .send()
        .await
        .expect("template")
        .template_body()
        .unwrap_or_default()
        .to_string();
    assert!(
        body.contains(&policy),
        "instance template lacks the component output {policy}:\n{body}"
    );
    // The pipeline's stack exists on moto.
    let pipeline = cfn
        .describe_stacks()
        .stack_name(protond::provision::cloudformation::stack_name(
            "pipeline/payments",
        ))
        .send()
        .await
        .expect("pipeline stack");
    assert!(
        pipeline.stacks()[0]
            .outputs()
            .iter()
            .any(|o| o.output_key() == Some("ArtifactBucketName"))
    );

    // The Terraform environment: Proton's files on a branch, and a pull request.
    // Listed from its first attempt (issue 14): it waits for `protond notify`.
    assert_eq!(
        resource(&status, "environment/tfdev").expect("tfdev")["status"],
        "waiting_for_notify"
    );
    assert!(
        resource(&status, "service_instance/tfapi/tfapi-dev").is_none(),
        "waits for its environment"
    );
    let branch = "protond/deploy/environment/tfdev";
    let tree = git(
        &world.root.join("infra"),
        &["ls-tree", "-r", "--name-only", branch],
    );
    assert_eq!(
        tree.lines()
            .filter(|l| l.starts_with("tfdev/"))
            .collect::<Vec<_>>(),
        [
            "tfdev/.proton/deployment-metadata.json",
            "tfdev/main.tf",
            "tfdev/outputs.tf",
            "tfdev/proton.auto.tfvars.json",
            "tfdev/proton.environment.variables.tf"
        ]
    );
    assert_eq!(
        show(&world, &format!("{branch}:tfdev/main.tf")),
        "resource \"aws_vpc\" \"this\" {\n  cidr_block = \"10.0.0.0/16\"\n  tags = { Name = var.environment.inputs.vpc_name }\n}\n"
    );
    assert!(show(&world, &format!("{branch}:tfdev/outputs.tf")).contains("output \"vpc_id\""));
    assert!(
        show(
            &world,
            &format!("{branch}:tfdev/proton.environment.variables.tf")
        )
        .contains("variable \"environment\"")
    );
    let tfvars: Value = serde_json::from_str(&show(
        &world,
        &format!("{branch}:tfdev/proton.auto.tfvars.json"),
    ))
    .expect("tfvars");
    assert_eq!(tfvars["environment"]["name"], "tfdev");
    assert_eq!(tfvars["environment"]["inputs"]["vpc_name"], "tf-dev-vpc");
    let meta: Value = serde_json::from_str(&show(
        &world,
        &format!("{branch}:tfdev/.proton/deployment-metadata.json"),
    ))
    .expect("metadata");
    assert_eq!(meta["isResourceDeleted"], false);
    assert_eq!(
        meta["resourceMetadata"]["arn"],
        "arn:aws:proton:us-east-1:123456789012:environment/tfdev"
    );
    assert_eq!(meta["resourceMetadata"]["templateMajorVersion"], "1");
    let deployment_id = meta["deploymentId"]
        .as_str()
        .expect("deployment id")
        .to_string();
    let prs = github.prs();
    assert_eq!(prs.len(), 1, "{prs:#?}");
    assert_eq!(prs[0].head, branch);
    assert_eq!(prs[0].title, "Deploy environment/tfdev (tf-env v1.0)");
    assert!(
        prs[0]
            .body
            .contains("protond notify environment/tfdev --status succeeded")
    );
    assert_eq!(github.violations(), Vec::<String>::new());

    // A restart while waiting: nothing new is submitted.
    reconcile(&world);
    assert_eq!(github.prs().len(), 1);
    let before = github.requests().len();
    reconcile(&world);
    assert_eq!(
        github.requests().len(),
        before,
        "waiting resources make no forge calls"
    );

    // The team merges; their automation applies and reports.
    merge(&world, "protond/deploy/environment/tfdev");
    // A report for another deployment is refused; the right one completes it with outputs.
    let outputs = world.root.join("outputs.json");
    std::fs::write(
        &outputs,
        r#"{"vpc_id": {"sensitive": false, "type": "string", "value": "vpc-0abc"}}"#,
    )
    .expect("outputs");
    let stale = world.run(&[
        "notify",
        "arn:aws:proton:us-east-1:123456789012:environment/tfdev",
        "--status",
        "succeeded",
        "--deployment-id",
        "999",
    ]);
    assert!(!stale.status.success());
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("is not the one waiting"),
        "{}",
        String::from_utf8_lossy(&stale.stderr)
    );
    let ok = world.run(&[
        "notify",
        "arn:aws:proton:us-east-1:123456789012:environment/tfdev",
        "--status",
        "succeeded",
        "--deployment-id",
        &deployment_id,
        "--outputs",
        outputs.to_str().expect("path"),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let status = status_json(&world);
    assert_eq!(
        resource(&status, "environment/tfdev").expect("tfdev")["status"],
        "deployed"
    );

    // The instance follows, with the environment's reported outputs in its inputs.
    let log = reconcile(&world);
    assert!(log.contains("1 waiting"), "{log}");
    let branch = "protond/deploy/service_instance/tfapi/tfapi-dev";
    assert!(
        show(
            &world,
            &format!("{branch}:tfdev/tfapi-tfapi-dev/proton.service_instance.variables.tf")
        )
        .contains("variable \"service_instance\"")
    );
    let tfvars: Value = serde_json::from_str(&show(
        &world,
        &format!("{branch}:tfdev/tfapi-tfapi-dev/proton.auto.tfvars.json"),
    ))
    .expect("tfvars");
    assert_eq!(tfvars["environment"]["outputs"]["vpc_id"], "vpc-0abc");
    assert_eq!(tfvars["service"]["name"], "tfapi");
    assert_eq!(tfvars["service_instance"]["inputs"]["size"], 2);
    let meta: Value = serde_json::from_str(&show(
        &world,
        &format!("{branch}:tfdev/tfapi-tfapi-dev/.proton/deployment-metadata.json"),
    ))
    .expect("metadata");
    assert_eq!(
        meta["resourceMetadata"]["environmentArn"],
        "arn:aws:proton:us-east-1:123456789012:environment/tfdev"
    );
    assert_eq!(github.prs().len(), 2);
    merge(&world, branch);
    let ok = world.run(&[
        "notify",
        "service_instance/tfapi/tfapi-dev",
        "--status",
        "succeeded",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        resource(&status_json(&world), "service_instance/tfapi/tfapi-dev").expect("instance")["status"],
        "deployed"
    );

    // An environment change redeploys the environment only: its commit keeps the instance's
    // files, which live in a subfolder of the environment's folder.
    let envs = world.root.join("platform-envs");
    let spec = envs.join("proton/environments/tfdev.yaml");
    let text = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(&spec, text.replace("tf-dev-vpc", "tf-dev-vpc-2")).expect("write");
    git(&envs, &["commit", "-qam", "rename the vpc"]);
    let log = reconcile(&world);
    assert!(log.contains("1 waiting"), "{log}");
    let env_branch = "protond/deploy/environment/tfdev";
    let tfvars: Value = serde_json::from_str(&show(
        &world,
        &format!("{env_branch}:tfdev/proton.auto.tfvars.json"),
    ))
    .expect("tfvars");
    assert_eq!(tfvars["environment"]["inputs"]["vpc_name"], "tf-dev-vpc-2");
    assert!(
        show(
            &world,
            &format!("{env_branch}:tfdev/tfapi-tfapi-dev/main.tf")
        )
        .contains("aws_instance")
    );
    merge(&world, env_branch);
    let ok = world.run(&[
        "notify",
        "environment/tfdev",
        "--status",
        "succeeded",
        "--outputs",
        outputs.to_str().expect("path"),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // Removing the service submits a destroy (files kept, metadata marked deleted).
    let p = world.root.join("payments");
    git(&p, &["rm", "-q", "proton/services/tfapi.yaml"]);
    git(&p, &["commit", "-qm", "drop tfapi"]);
    let log = reconcile(&world);
    assert!(log.contains("1 waiting"), "{log}");
    let meta: Value = serde_json::from_str(&show(
        &world,
        &format!("{branch}:tfdev/tfapi-tfapi-dev/.proton/deployment-metadata.json"),
    ))
    .expect("metadata");
    assert_eq!(meta["isResourceDeleted"], true);
    assert!(
        show(&world, &format!("{branch}:tfdev/tfapi-tfapi-dev/main.tf")).contains("aws_instance")
    );
    let pr = github
        .prs()
        .into_iter()
        .find(|p| p.head == branch)
        .expect("instance pr");
    assert_eq!(
        pr.title,
        "Destroy service_instance/tfapi/tfapi-dev (tf-svc v1.0)"
    );
    let ok = world.run(&[
        "notify",
        "service_instance/tfapi/tfapi-dev",
        "--status",
        "succeeded",
    ]);
    assert!(ok.status.success());
    assert!(resource(&status_json(&world), "service_instance/tfapi/tfapi-dev").is_none());
    // Nothing waits any more, and a second report is refused.
    let again = world.run(&[
        "notify",
        "service_instance/tfapi/tfapi-dev",
        "--status",
        "succeeded",
    ]);
    assert!(!again.status.success());
    assert_eq!(github.violations(), Vec::<String>::new());
    reconcile(&world);

    // CodePipeline: an instance deploy of a service that asks for it starts its pipeline.
    // moto_server has no StartPipelineExecution or ListPipelineExecutions: both degrade to
    // "not available", and the deployment itself is unaffected.
    let spec = world.root.join("payments/proton/services/payments.yaml");
    let text = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(&spec, text.replace("desired_count: 3", "desired_count: 4")).expect("write");
    git(
        &world.root.join("payments"),
        &["commit", "-qam", "scale prod"],
    );
    reconcile(&world);
    let status = status_json(&world);
    let pipelines = status["pipelines"].as_array().expect("pipelines in status");
    assert_eq!(pipelines.len(), 1, "{status}");
    let p = &pipelines[0];
    assert_eq!(p["service"], "payments");
    assert_eq!(p["pipeline"], "payments-pipeline");
    let latest = p["latest_execution"].as_str().expect("latest");
    assert!(
        latest.starts_with("not available: ListPipelineExecutions"),
        "{latest}"
    );
    let start = &p["last_start"];
    assert_eq!(
        start["triggered_by"], "service_instance/payments/payments-prod",
        "{p}"
    );
    assert_eq!(start["pipeline"], "payments-pipeline");
    assert_eq!(start["result"], "not_available", "{p}");
    assert!(
        start["message"]
            .as_str()
            .is_some_and(|m| m.contains("StartPipelineExecution")),
        "{p}"
    );
    assert_eq!(
        resource(
            &status_json(&world),
            "service_instance/payments/payments-prod"
        )
        .expect("prod")["status"],
        "deployed"
    );
    let table = world.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&table.stdout)
            .contains("payments (payments-pipeline): latest execution: not available")
    );
}
