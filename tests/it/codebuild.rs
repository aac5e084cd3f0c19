//! `CodeBuild` provisioning (Proton's `rendering_engine: codebuild` bundles) on `moto_server`,
//! as far as moto goes: it keeps projects and builds but runs nothing (`BatchGetBuilds`
//! reports every build `SUCCEEDED`, and ignores the buildspec and environment overrides).
//! Exercised here: the bundle's files and `proton-inputs.json` uploaded to the artifact
//! bucket, the project created with `[codebuild] service_role`, one build started per
//! deployment with the bundle as its source and the outputs location as its artifact, the
//! build polled to its end, outputs read from the `proton-outputs.json` at that location, the
//! record pointing at the bundle, and a delete running a (deprovision) build. The buildspec's
//! commands, the failure mapping and the log location are unit-tested
//! (`provision::codebuild::tests`), since moto neither runs nor fails builds.

use std::collections::BTreeMap;

use protond::provision::cloudformation::stack_name;
use serde_json::Value;

use crate::common::text;
use crate::common::world::World;

const BUCKET: &str = "protond-artifacts";
const ROLE: &str = "arn:aws:iam::123456789012:role/protond-codebuild";

const MANIFEST: &str = "infrastructure:\n  templates:\n    - rendering_engine: codebuild\n      settings:\n        image: aws/codebuild/amazonlinux2-x86_64-standard:4.0\n        runtimes:\n          nodejs: 16\n        provision:\n          - ./deploy.sh up\n        deprovision:\n          - ./deploy.sh down\n";

fn s3(url: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn codebuild(url: &str) -> aws_sdk_codebuild::Client {
    let conf = aws_sdk_codebuild::Config::builder()
        .behavior_version(aws_sdk_codebuild::config::BehaviorVersion::latest())
        .region(aws_sdk_codebuild::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_codebuild::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_codebuild::Client::from_conf(conf)
}

async fn keys(s3: &aws_sdk_s3::Client) -> Vec<String> {
    let out = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list objects");
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

async fn builds(cb: &aws_sdk_codebuild::Client) -> Vec<aws_sdk_codebuild::types::Build> {
    let ids = cb.list_builds().send().await.expect("list builds");
    if ids.ids().is_empty() {
        return Vec::new();
    }
    cb.batch_get_builds()
        .set_ids(Some(ids.ids().to_vec()))
        .send()
        .await
        .expect("builds")
        .builds()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn codebuild_bundles_run_through_codebuild() {
    let w = World::examples_on_moto()
        .setup(|root| {
            let infra = root
                .join("platform-templates")
                .join("basic-env/v1/infrastructure");
            std::fs::remove_file(infra.join("cloudformation.yaml")).expect("rm");
            std::fs::write(infra.join("manifest.yaml"), MANIFEST).expect("manifest");
            std::fs::write(infra.join("deploy.sh"), "#!/bin/sh\necho \"$1\"\n").expect("script");
            crate::common::git(&root.join("platform-templates"), &["add", "-A"]);
            crate::common::git(
                &root.join("platform-templates"),
                &["commit", "-qm", "codebuild"],
            );
        })
        .build();
    w.edit_config(|c| {
        c.replace(
            "[[spec_repos]]\nname = \"payments\"\nurl = \"payments\"\n",
            "",
        )
    });
    let url = w.aws_url().to_string();
    let (s3, cb) = (s3(&url), codebuild(&url));

    // No bucket: a clear error, and no build.
    let out = w.reconcile();
    let store = w.store().await;
    let rows = store.deployments(None, 100).await.expect("history");
    let dev = rows
        .iter()
        .find(|d| d.deployment.resource_id == "environment/dev")
        .expect("a deployment of dev");
    let error = dev.error.clone().unwrap_or_default();
    assert!(
        error.contains("environment/dev: CodeBuild provisioning needs the S3 artifact bucket")
            && error.contains("[aws] artifact_bucket"),
        "{error}\n{}",
        text(&out)
    );
    assert!(builds(&cb).await.is_empty());
    drop(store);

    // With the bucket and a service role: the project is created, one build per environment.
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
    let dev_folder = format!("protond/codebuild/{}", stack_name("environment/dev"));
    // moto runs no build: put the outputs the dev build's commands would leave, for the
    // deployment ids it may get.
    for id in 1..=10 {
        s3.put_object()
            .bucket(BUCKET)
            .key(format!("{dev_folder}/{id}/outputs/proton-outputs.json"))
            .body(br#"{"EnvStack": {"QueueUrl": "https://queue/dev"}}"#.to_vec().into())
            .send()
            .await
            .expect("put outputs");
    }
    w.edit_config(|c| {
        c.replace(
            "change_sets = false\n",
            &format!("change_sets = false\nartifact_bucket = \"{BUCKET}\"\n[codebuild]\nservice_role = \"{ROLE}\"\n"),
        )
    });
    let started = std::time::Instant::now();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    assert!(w.stacks().await.is_empty(), "no CloudFormation stack");
    let projects = cb
        .batch_get_projects()
        .names("protond-provisioning")
        .send()
        .await
        .expect("projects");
    assert_eq!(projects.projects().len(), 1);
    assert_eq!(projects.projects()[0].service_role(), Some(ROLE));
    let all = builds(&cb).await;
    assert_eq!(all.len(), 2, "{all:#?}");
    for b in &all {
        assert_eq!(b.project_name(), Some("protond-provisioning"));
        let a = b.artifacts().expect("the outputs location");
        assert_eq!(a.location(), Some(BUCKET), "{a:?}");
    }

    // The bundle and Proton's inputs file, in the bucket.
    let objects = keys(&s3).await;
    let bundle: Vec<&String> = objects
        .iter()
        .filter(|k| k.starts_with(&format!("{dev_folder}/bundle-")))
        .collect();
    let names: Vec<&str> = bundle.iter().filter_map(|k| k.rsplit('/').next()).collect();
    assert_eq!(
        names,
        ["deploy.sh", "manifest.yaml", "proton-inputs.json"],
        "{objects:#?}"
    );
    let inputs_key = bundle
        .iter()
        .find(|k| k.ends_with("/proton-inputs.json"))
        .expect("inputs");
    let inputs = s3
        .get_object()
        .bucket(BUCKET)
        .key(inputs_key.as_str())
        .send()
        .await
        .expect("get inputs")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    let inputs: Value = serde_json::from_slice(&inputs).expect("json");
    assert_eq!(inputs["environment"]["name"], "dev");
    assert_eq!(inputs["environment"]["inputs"]["team"], "platform");

    // Outputs from proton-outputs.json; the record points at the bundle.
    let store = w.store().await;
    let records: BTreeMap<String, protond::state::ResourceRecord> = store
        .resources()
        .await
        .expect("records")
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let dev = &records["environment/dev"];
    assert_eq!(
        dev.outputs.get("QueueUrl").map(String::as_str),
        Some("https://queue/dev")
    );
    let bundle_dir = inputs_key.trim_end_matches("proton-inputs.json");
    assert_eq!(
        dev.placement.stack_id.as_deref(),
        Some(format!("codebuild:{BUCKET}/{bundle_dir}").as_str())
    );
    assert!(records["environment/prod"].outputs.is_empty());
    drop(store);
    println!(
        "codebuild: 2 environments provisioned through moto's CodeBuild in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Delete: a deprovision build, then the record goes.
    std::fs::remove_file(w.dir("platform-envs").join("proton/environments/prod.yaml"))
        .expect("rm prod");
    w.commit("platform-envs", "no prod");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(builds(&cb).await.len(), 3);
    let store = w.store().await;
    let ids: Vec<String> = store
        .resources()
        .await
        .expect("records")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["environment/dev"]);
    let rows = store
        .deployments(Some("environment/prod"), 1)
        .await
        .expect("history");
    assert_eq!(rows[0].status, "succeeded", "{:?}", rows[0]);
}

/// The manifest's `project_properties` (Proton's documented `VpcConfig`, with values rendered
/// from the inputs as Proton rendered them, and a list printed into a string): each
/// environment's builds run in a project of its own carrying its `VpcConfig`, created on
/// moto with `[codebuild] service_role`. moto keeps a project's `vpcConfig` (checked here) and
/// ignores build overrides (`TimeoutInMinutes`, `Environment`: unit-tested).
#[tokio::test(flavor = "multi_thread")]
async fn project_properties_reach_the_codebuild_project() {
    const PROPS: &str = "        project_properties:\n          VpcConfig:\n            VpcId: \"vpc-{{ environment.inputs.team }}\"\n            Subnets: [\"subnet-{{ environment.name }}-a\", subnet-shared]\n            SecurityGroupIds: \"['sg-{{ environment.name }}', 'sg-shared']\"\n          TimeoutInMinutes: 90\n";
    let w = World::examples_on_moto()
        .setup(|root| {
            let infra = root
                .join("platform-templates")
                .join("basic-env/v1/infrastructure");
            std::fs::remove_file(infra.join("cloudformation.yaml")).expect("rm");
            std::fs::write(infra.join("manifest.yaml"), format!("{MANIFEST}{PROPS}"))
                .expect("manifest");
            std::fs::write(infra.join("deploy.sh"), "#!/bin/sh\necho \"$1\"\n").expect("script");
            crate::common::git(&root.join("platform-templates"), &["add", "-A"]);
            crate::common::git(
                &root.join("platform-templates"),
                &["commit", "-qm", "codebuild with project_properties"],
            );
        })
        .build();
    w.edit_config(|c| {
        c.replace(
            "[[spec_repos]]\nname = \"payments\"\nurl = \"payments\"\n",
            "",
        )
        .replace(
            "change_sets = false\n",
            &format!("change_sets = false\nartifact_bucket = \"{BUCKET}\"\n[codebuild]\nservice_role = \"{ROLE}\"\n"),
        )
    });
    let url = w.aws_url().to_string();
    let (s3, cb) = (s3(&url), codebuild(&url));
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));

    let store = w.store().await;
    let records = store.resources().await.expect("records");
    assert_eq!(
        records.len(),
        2,
        "both environments provisioned: {records:?}"
    );
    let all = builds(&cb).await;
    assert_eq!(all.len(), 2, "{all:#?}");
    for env in ["dev", "prod"] {
        // Both example environments' `team` input.
        let team = "platform";
        let props = protond::provision::codebuild::BuildProps {
            vpc: Some(protond::provision::codebuild::Vpc {
                vpc_id: format!("vpc-{team}"),
                subnets: vec![format!("subnet-{env}-a"), "subnet-shared".into()],
                security_group_ids: vec![format!("sg-{env}"), "sg-shared".into()],
            }),
            ..Default::default()
        };
        let project = protond::provision::codebuild::project_for("protond-provisioning", &props);
        let got = cb
            .batch_get_projects()
            .names(&project)
            .send()
            .await
            .expect("projects");
        let [p] = got.projects() else {
            panic!("project {project} for {env}: {got:?}");
        };
        let vpc = p.vpc_config().expect("vpcConfig");
        assert_eq!(vpc.vpc_id(), Some(format!("vpc-{team}").as_str()));
        assert_eq!(
            vpc.subnets(),
            [format!("subnet-{env}-a"), "subnet-shared".into()]
        );
        assert_eq!(
            vpc.security_group_ids(),
            [format!("sg-{env}"), "sg-shared".into()]
        );
        assert_eq!(p.service_role(), Some(ROLE));
        assert_eq!(
            all.iter()
                .filter(|b| b.project_name() == Some(project.as_str()))
                .count(),
            1,
            "one build of {env} in {project}"
        );
    }
}
