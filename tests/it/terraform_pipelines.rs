//! Terraform pipelines and Proton's `environments/` layout end to end: a service template
//! whose `pipeline_infrastructure` is Terraform is provisioned self-managed like its
//! instances, each resource committed to the local infrastructure repo in the folder Proton
//! used (`environments/<env>/`, `environments/<env>/<service>-<instance>/`,
//! `pipeline/<service>/`) with Proton's generated inputs, and completed by `protond notify`.

use std::path::Path;

use serde_json::Value;

use crate::common::world::World;
use crate::common::{self, git};

/// Proton's ARN prefix for the test account and region.
const A: &str = "arn:aws:proton:us-east-1:123456789012";

const TF_MANIFEST: &str = "infrastructure:\n  templates:\n    - file: \"*\"\n      rendering_engine: hcl\n      template_language: terraform\n";

fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// Terraform templates (an environment; a service with instances and a Terraform pipeline),
/// specs using them, and an infrastructure repo that already has an `environments/` folder.
fn world() -> World {
    world_with("[self_managed]\nurl = \"infra\"")
}

/// [`world`] with `self_managed` as the config's `[self_managed]` section, and a `pipelines`
/// repo.
fn world_with(self_managed: &'static str) -> World {
    World::builder()
        .repo("platform-templates", "templates\n")
        .repo("platform-envs", "environments\n")
        .repo("payments", "services\n")
        .repo("infra", "infrastructure\n")
        .repo("pipelines", "pipelines\n")
        .setup(setup)
        .tagged(&["tf-env", "tf-svc"])
        .moto()
        .config(move |c| {
            c.section(self_managed);
        })
        .build()
}

fn setup(root: &Path) {
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
        "resource \"aws_vpc\" \"this\" {\n  cidr_block = \"10.0.0.0/16\"\n}\n",
    );
    write(
        &t.join("tf-svc/v1/schema/schema.yaml"),
        "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: \"In\"\n  pipeline_input_type: \"PipeIn\"\n  types:\n    In:\n      type: object\n      properties:\n        size:\n          type: number\n          default: 1\n    PipeIn:\n      type: object\n      properties:\n        timeout:\n          type: number\n          default: 30\n",
    );
    write(
        &t.join("tf-svc/v1/instance_infrastructure/manifest.yaml"),
        TF_MANIFEST,
    );
    write(
        &t.join("tf-svc/v1/instance_infrastructure/main.tf"),
        "resource \"aws_lambda_function\" \"this\" {\n  memory_size = var.service_instance.inputs.size\n}\n",
    );
    write(
        &t.join("tf-svc/v1/pipeline_infrastructure/manifest.yaml"),
        TF_MANIFEST,
    );
    write(
        &t.join("tf-svc/v1/pipeline_infrastructure/pipeline.tf"),
        "resource \"aws_codepipeline\" \"this\" {\n  name = var.service.name\n}\n",
    );
    write(&t.join("tf-svc/v1/.compatible-envs"), "tf-env:1\n");
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
        "proton: ServiceSpec\nname: tfapi\ntemplate: {name: tf-svc, major: 1}\nrepository_id: acme/tfapi\nbranch_name: main\npipeline:\n  timeout: 45\ninstances:\n  - name: tfapi-dev\n    environment: tfdev\n    spec:\n      size: 2\n",
    );
    git(&p, &["add", "-A"]);
    git(&p, &["commit", "-qm", "tfapi"]);
    // Proton's layout 1: the repo has an `environments/` folder.
    let infra = root.join("infra");
    write(
        &infra.join("environments/README.md"),
        "Proton environments\n",
    );
    git(&infra, &["add", "-A"]);
    git(&infra, &["commit", "-qm", "environments folder"]);
}

fn reconcile(w: &World) -> String {
    let out = w.reconcile();
    let text = common::text(&out);
    assert!(out.status.success(), "reconcile failed:\n{text}");
    text
}

/// `git show <branch>:<path>` in the infrastructure repo.
fn show(w: &World, branch: &str, path: &str) -> String {
    w.git("infra", &["show", &format!("{branch}:{path}")])
}

fn json(w: &World, branch: &str, path: &str) -> Value {
    serde_json::from_str(&show(w, branch, path)).expect("json")
}

fn files(w: &World, branch: &str, folder: &str) -> Vec<String> {
    git(
        &w.root.join("infra"),
        &["ls-tree", "-r", "--name-only", branch, folder],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn notify(w: &World, resource: &str, outputs: Option<&Path>) {
    let mut args = vec!["notify", resource, "--status", "succeeded"];
    let path;
    if let Some(o) = outputs {
        path = o.to_str().expect("path").to_string();
        args.extend(["--outputs", &path]);
    }
    let out = w.run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn status(w: &World, id: &str) -> Value {
    let out = w.run(&["status", "--output", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("status json");
    v["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == id))
        .map_or(Value::Null, |r| r["status"].clone())
}

#[test]
fn terraform_pipeline_in_protons_environments_layout() {
    let started = std::time::Instant::now();
    let w = world();

    // The environment: `environments/tfdev/`, since the repo has `environments/`.
    reconcile(&w);
    let branch = "protond/deploy/environment/tfdev";
    assert_eq!(
        files(&w, branch, "environments/tfdev"),
        [
            "environments/tfdev/.proton/deployment-metadata.json",
            "environments/tfdev/main.tf",
            "environments/tfdev/proton.auto.tfvars.json",
            "environments/tfdev/proton.environment.variables.tf",
        ]
    );
    let tfvars = json(&w, branch, "environments/tfdev/proton.auto.tfvars.json");
    assert_eq!(
        tfvars["proton_tags"],
        serde_json::json!({
            "proton:account": "123456789012",
            "proton:template": format!("{A}:environment-template/tf-env"),
            "proton:environment": format!("{A}:environment/tfdev"),
        })
    );
    let text = show(&w, branch, "environments/tfdev/proton.auto.tfvars.json");
    assert!(
        text.starts_with("{\n  \"environment\" : {\n    \"name\" : \"tfdev\",\n"),
        "{text}"
    );
    assert!(
        show(
            &w,
            branch,
            "environments/tfdev/proton.environment.variables.tf"
        )
        .contains("variable \"proton_tags\" {\n  type    = map(string)\n  default = null\n}\n")
    );
    w.git("infra", &["merge", "-q", "--no-ff", "-m", "env", branch]);
    let outputs = w.root.join("outputs.json");
    std::fs::write(&outputs, r#"{"vpc_id": "vpc-0abc"}"#).expect("outputs");
    notify(&w, "environment/tfdev", Some(&outputs));

    // The instance: `environments/tfdev/tfapi-tfapi-dev/`, with its inputs' types kept.
    reconcile(&w);
    let branch = "protond/deploy/service_instance/tfapi/tfapi-dev";
    let folder = "environments/tfdev/tfapi-tfapi-dev";
    let tfvars = json(&w, branch, &format!("{folder}/proton.auto.tfvars.json"));
    assert_eq!(tfvars["service_instance"]["inputs"]["size"], 2);
    assert_eq!(tfvars["environment"]["outputs"]["vpc_id"], "vpc-0abc");
    assert_eq!(tfvars["service"]["repository_id"], "acme/tfapi");
    assert_eq!(
        tfvars["proton_tags"]["proton:service-instance"],
        format!("{A}:service/tfapi/service-instance/tfapi-dev")
    );
    w.git(
        "infra",
        &["merge", "-q", "--no-ff", "-m", "instance", branch],
    );
    let outputs = w.root.join("instance-outputs.json");
    std::fs::write(
        &outputs,
        r#"[{"key": "FunctionArn", "valueString": "arn:aws:lambda:us-east-1:123456789012:function:f"}]"#,
    )
    .expect("outputs");
    notify(&w, "service_instance/tfapi/tfapi-dev", Some(&outputs));
    assert_eq!(status(&w, "service_instance/tfapi/tfapi-dev"), "deployed");

    // The Terraform pipeline: `pipeline/tfapi/`, self-managed like the instances.
    let log = reconcile(&w);
    assert!(log.contains("1 waiting"), "{log}");
    assert_eq!(status(&w, "pipeline/tfapi"), "waiting_for_notify");
    let branch = "protond/deploy/pipeline/tfapi";
    assert_eq!(
        files(&w, branch, "pipeline/tfapi"),
        [
            "pipeline/tfapi/.proton/deployment-metadata.json",
            "pipeline/tfapi/pipeline.tf",
            "pipeline/tfapi/proton.auto.tfvars.json",
            "pipeline/tfapi/proton.pipeline.variables.tf",
        ]
    );
    let tfvars = json(&w, branch, "pipeline/tfapi/proton.auto.tfvars.json");
    assert_eq!(tfvars["pipeline"]["inputs"]["timeout"], 45);
    assert_eq!(tfvars["service_instances"][0]["name"], "tfapi-dev");
    assert_eq!(
        tfvars["service_instances"][0]["outputs"]["FunctionArn"],
        "arn:aws:lambda:us-east-1:123456789012:function:f"
    );
    assert_eq!(
        tfvars["service_instances"][0]["environment"]["outputs"]["vpc_id"],
        "vpc-0abc"
    );
    assert_eq!(
        tfvars["proton_tags"],
        serde_json::json!({
            "proton:account": "123456789012",
            "proton:template": format!("{A}:service-template/tf-svc"),
            "proton:service": format!("{A}:service/tfapi"),
        })
    );
    assert!(
        show(&w, branch, "pipeline/tfapi/proton.pipeline.variables.tf")
            .contains("variable \"service_instances\" {\n  type = list(\n")
    );
    let meta = json(
        &w,
        branch,
        "pipeline/tfapi/.proton/deployment-metadata.json",
    );
    assert_eq!(
        meta["resourceMetadata"]["arn"],
        format!("{A}:service/tfapi/pipeline")
    );
    w.git(
        "infra",
        &["merge", "-q", "--no-ff", "-m", "pipeline", branch],
    );
    // Reported with Proton's ARN, as the workflows written for Proton do.
    notify(&w, &format!("{A}:service/tfapi/pipeline"), None);
    assert_eq!(status(&w, "pipeline/tfapi"), "deployed");
    let log = reconcile(&w);
    assert!(!log.contains("waiting"), "{log}");
    println!(
        "terraform_pipelines: environment, instance and pipeline through the infrastructure repo in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Proton's separate pipeline repository (`pipelineProvisioningRepository`): with
/// `[self_managed.pipeline_repository]`, the pipeline's Terraform goes there, on its own
/// branch setting, and the environments and instances stay in the infrastructure repo.
#[test]
fn terraform_pipelines_go_to_the_pipeline_repository() {
    let w = world_with(
        "[self_managed]\nurl = \"infra\"\n\n[self_managed.pipeline_repository]\nurl = \"pipelines\"\nbranch = \"main\"",
    );
    reconcile(&w);
    notify(&w, "environment/tfdev", None);
    reconcile(&w);
    notify(&w, "service_instance/tfapi/tfapi-dev", None);
    let log = reconcile(&w);
    assert!(log.contains("1 waiting"), "{log}");
    let branch = "protond/deploy/pipeline/tfapi";
    let in_pipelines = git(
        &w.root.join("pipelines"),
        &["ls-tree", "-r", "--name-only", branch],
    );
    assert_eq!(
        in_pipelines.lines().collect::<Vec<_>>(),
        [
            "README.md",
            "pipeline/tfapi/.proton/deployment-metadata.json",
            "pipeline/tfapi/pipeline.tf",
            "pipeline/tfapi/proton.auto.tfvars.json",
            "pipeline/tfapi/proton.pipeline.variables.tf",
        ]
    );
    let infra_branches = w.git("infra", &["branch", "--list", "--format=%(refname:short)"]);
    assert!(
        !infra_branches.contains("pipeline"),
        "nothing of the pipeline in the infrastructure repo: {infra_branches}"
    );
    assert!(
        infra_branches.contains("protond/deploy/service_instance/tfapi/tfapi-dev"),
        "{infra_branches}"
    );
    notify(&w, "pipeline/tfapi", None);
    assert_eq!(status(&w, "pipeline/tfapi"), "deployed");
}
