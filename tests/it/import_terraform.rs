//! `protond import` of self-managed (Terraform) resources: the infrastructure repo holds the
//! folders AWS Proton committed (its layout, its `.proton/deployment-metadata.json`, its
//! values files with the outputs it passed on). A dry run compares them with protond's
//! rendering; `--apply` records them (the folder, the outputs) without a pull request; the
//! next `reconcile --once` opens none for the unchanged environment, and one for the
//! instance whose differing folder was accepted, in the folder Proton used, with the
//! environment's recovered outputs.

use std::path::Path;

use serde_json::Value;

use crate::common::forge::{FakeForge, Kind};
use crate::common::world::World;
use crate::common::{self, git};

const TOKEN: &str = "infra-forge-token";
const PROTON: &str = "arn:aws:proton:us-east-1:123456789012";
const TF_MANIFEST: &str = "infrastructure:\n  templates:\n    - file: \"*\"\n      rendering_engine: hcl\n      template_language: terraform\n";
const ENV_MAIN: &str = "resource \"aws_vpc\" \"this\" {\n  cidr_block = \"10.0.0.0/16\"\n  tags = { Name = var.environment.inputs.vpc_name }\n}\n";
const ENV_OUTPUTS: &str = "output \"vpc_id\" {\n  value = aws_vpc.this.id\n}\n";
const SVC_MAIN: &str = "resource \"aws_instance\" \"this\" {\n  count     = var.service_instance.inputs.size\n  subnet_id = var.environment.outputs.vpc_id\n}\n";

fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// A Terraform environment template (with an output) and a service template using it, the
/// specs using them, and an infrastructure repo.
fn templates(root: &Path) {
    let t = root.join("platform-templates");
    write(
        &t.join("tf-env/v1/schema/schema.yaml"),
        "schema:\n  format:\n    openapi: \"3.0.0\"\n  environment_input_type: \"In\"\n  types:\n    In:\n      type: object\n      properties:\n        vpc_name:\n          type: string\n      required: [vpc_name]\n",
    );
    write(
        &t.join("tf-env/v1/infrastructure/manifest.yaml"),
        TF_MANIFEST,
    );
    write(&t.join("tf-env/v1/infrastructure/main.tf"), ENV_MAIN);
    write(&t.join("tf-env/v1/infrastructure/outputs.tf"), ENV_OUTPUTS);
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
        SVC_MAIN,
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
        "proton: ServiceSpec\nname: tfapi\ntemplate: {name: tf-svc, major: 1}\ninstances:\n  - name: tfapi-dev\n    environment: tfdev\n    spec:\n      size: 2\n",
    );
    git(&p, &["add", "-A"]);
    git(&p, &["commit", "-qm", "tfapi"]);
}

/// `.proton/deployment-metadata.json` as Proton wrote it.
fn metadata(arn: &str, template: &str, environment: Option<&str>) -> String {
    let env = environment
        .map(|e| format!(",\n    \"environmentArn\" : \"{PROTON}:environment/{e}\""))
        .unwrap_or_default();
    format!(
        "{{\n  \"deploymentId\" : \"8b1d6a0e-4f7c-4a52-9d0e-3c2b1a0f9e8d\",\n  \"isResourceDeleted\" : false,\n  \"resourceMetadata\" : {{\n    \"arn\" : \"{PROTON}:{arn}\",\n    \"templateArn\" : \"{PROTON}:{template}\",\n    \"templateMajorVersion\" : \"1\",\n    \"templateMinorVersion\" : \"0\"{env}\n  }}\n}}"
    )
}

/// What Proton committed to the infrastructure repo: the environment as protond renders
/// it, the instance with `main.tf` changed out of band (`count = 3`), and the instance's
/// values with the environment's outputs.
fn proton_folders(root: &Path) {
    let infra = root.join("infra");
    write(&infra.join("tfdev/main.tf"), ENV_MAIN);
    write(&infra.join("tfdev/outputs.tf"), ENV_OUTPUTS);
    write(
        &infra.join("tfdev/proton.environment.variables.tf"),
        "variable \"environment\" {\n  type = object({\n    inputs = any\n    name   = string\n  })\n  default = null\n}\n",
    );
    write(
        &infra.join("tfdev/proton.auto.tfvars.json"),
        "{\n  \"environment\" : {\n    \"name\" : \"tfdev\",\n    \"inputs\" : {\n      \"vpc_name\" : \"tf-dev-vpc\"\n    }\n  },\n  \"proton_tags\" : { }\n}",
    );
    write(
        &infra.join("tfdev/.proton/deployment-metadata.json"),
        &metadata("environment/tfdev", "environment-template/tf-env", None),
    );
    let inst = infra.join("tfdev/tfapi-tfapi-dev");
    write(
        &inst.join("main.tf"),
        &SVC_MAIN.replace(
            "var.service_instance.inputs.size",
            "3 # changed out of band",
        ),
    );
    write(
        &inst.join("proton.auto.tfvars.json"),
        "{\n  \"environment\" : {\n    \"account_id\" : \"123456789012\",\n    \"name\" : \"tfdev\",\n    \"outputs\" : {\n      \"vpc_id\" : \"vpc-0proton\"\n    }\n  },\n  \"service\" : {\n    \"name\" : \"tfapi\"\n  },\n  \"service_instance\" : {\n    \"name\" : \"tfapi-dev\",\n    \"inputs\" : {\n      \"size\" : 2\n    }\n  }\n}",
    );
    write(
        &inst.join(".proton/deployment-metadata.json"),
        &metadata(
            "service/tfapi/service-instance/tfapi-dev",
            "service-template/tf-svc",
            Some("tfdev"),
        ),
    );
    git(&infra, &["add", "-A"]);
    git(&infra, &["commit", "-qm", "AWS Proton deployments"]);
}

fn world() -> World {
    World::builder()
        .examples()
        .repo("infra", "infrastructure\n")
        .setup(templates)
        .setup(proton_folders)
        .tagged(&["basic-env", "web-svc", "worker-svc", "tf-env", "tf-svc"])
        .moto()
        .env("INFRA_TOKEN", TOKEN)
        .config(|c| {
            c.section("[self_managed]\nurl = \"infra\"\n__FORGE__");
        })
        .build()
}

/// `protond import --output json` with `args`: the findings by resource id.
fn import(w: &World, args: &[&str]) -> Value {
    let mut all = vec!["import", "--output", "json"];
    all.extend_from_slice(args);
    let out = w.run(&all);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("import json ({e}):\n{}", common::text(&out)));
    let mut by_id = serde_json::Map::new();
    for f in report["findings"].as_array().expect("findings") {
        by_id.insert(f["resource"].as_str().expect("id").to_string(), f.clone());
    }
    Value::Object(by_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proton_terraform_folders_are_recorded_without_pull_requests() {
    let w = world();
    let github = FakeForge::start(
        Kind::GitHub,
        "/api/v3",
        TOKEN,
        "acme/infra",
        w.root.join("infra"),
    )
    .await;
    w.edit_config(|t| {
        t.replace(
            "__FORGE__",
            &format!("forge = {{ kind = \"github\", api_url = \"{}\", repo = \"acme/infra\", token_env = \"INFRA_TOKEN\" }}", github.url),
        )
    });
    let env = "environment/tfdev";
    let inst = "service_instance/tfapi/tfapi-dev";

    // A dry run: the environment's folder is what protond renders, the instance's differs.
    let found = import(&w, &[]);
    assert_eq!(found[env]["verdict"], "identical", "{:#}", found[env]);
    assert_eq!(found[env]["stack"], "tfdev/");
    assert_eq!(found[env]["import"]["state"], "would_import");
    assert_eq!(found[inst]["verdict"], "differs", "{:#}", found[inst]);
    assert_eq!(found[inst]["stack"], "tfdev/tfapi-tfapi-dev/");
    assert_eq!(found[inst]["import"]["state"], "no");
    let diffs = found[inst]["differences"].as_array().expect("differences");
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0]["at"], "tfdev/tfapi-tfapi-dev/main.tf");
    assert_eq!(diffs[0]["change"], "changed");
    assert!(
        diffs[0]["live"]
            .as_str()
            .is_some_and(|l| l.contains("line 2") && l.contains("changed out of band")),
        "{diffs:?}"
    );
    let store = w.store().await;
    assert!(
        store.resources().await.expect("records").is_empty(),
        "a dry run records nothing"
    );

    // --apply with the instance's differences accepted: both recorded, no pull request.
    let found = import(&w, &["--apply", "--accept-diff", inst]);
    for id in [env, inst] {
        assert_eq!(found[id]["import"]["state"], "imported", "{:#}", found[id]);
    }
    assert!(github.prs().is_empty(), "import opens no pull request");
    let records = store.resources().await.expect("records");
    let env_record = records.iter().find(|r| r.id == env).expect("env record");
    assert_eq!(
        env_record.outputs.get("vpc_id").map(String::as_str),
        Some("vpc-0proton"),
        "the outputs Proton passed to the instance"
    );
    let sm = store
        .self_managed(inst)
        .await
        .expect("read")
        .expect("self-managed record");
    assert_eq!(
        (sm.folder.as_str(), sm.state.as_str()),
        ("tfdev/tfapi-tfapi-dev", "done")
    );

    // The next cycle: no pull request for the unchanged environment; one for the accepted
    // instance, in Proton's folder, with the environment's recovered outputs.
    let out = w.reconcile();
    assert!(out.status.success(), "{}", common::text(&out));
    let prs = github.prs();
    let branches: Vec<&str> = prs.iter().map(|p| p.head.as_str()).collect();
    assert_eq!(branches, [format!("protond/deploy/{inst}")], "{prs:?}");
    let branch = format!("protond/deploy/{inst}");
    let infra = w.root.join("infra");
    let main = git(
        &infra,
        &["show", &format!("{branch}:tfdev/tfapi-tfapi-dev/main.tf")],
    );
    assert_eq!(main, SVC_MAIN);
    let tfvars: Value = serde_json::from_str(&git(
        &infra,
        &[
            "show",
            &format!("{branch}:tfdev/tfapi-tfapi-dev/proton.auto.tfvars.json"),
        ],
    ))
    .expect("tfvars");
    assert_eq!(tfvars["environment"]["outputs"]["vpc_id"], "vpc-0proton");
    assert!(github.violations().is_empty(), "{:?}", github.violations());
}
