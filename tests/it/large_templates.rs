//! Templates over `CloudFormation`'s 51,200-byte `TemplateBody` limit, on `moto_server`: an
//! environment template rendering to about 60 KB fails clearly (naming the resource, the
//! size, the limit and `[aws] artifact_bucket`) and creates nothing without an artifact
//! bucket; with one, it is put in the bucket under a content-addressed key and the stack is
//! created from `TemplateURL`; a changed large template updates the stack the same way,
//! through a change set.

use std::collections::BTreeSet;

use crate::common::text;
use crate::common::world::World;

const BUCKET: &str = "protond-artifacts";
const TEMPLATE: &str = "basic-env/v1/infrastructure/cloudformation.yaml";

/// 220 SSM parameters with long descriptions: about 60 KB once rendered.
fn many_parameters(label: &str) -> String {
    format!(
        "{{% for i in range(220) %}}\n  Setting{{{{ i }}}}:\n    Type: AWS::SSM::Parameter\n    Properties:\n      Name: '/protond/{{{{ environment.name }}}}/setting-{{{{ i }}}}'\n      Type: String\n      Description: '{label} setting {{{{ i }}}} of environment {{{{ environment.name }}}}, padded so that the rendered template passes the inline limit'\n      Value: 'value-{{{{ i }}}}'\n{{% endfor %}}\n"
    )
}

/// An S3 client for the `moto_server` at `url` (path-style, as protond uses it there).
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

/// The keys in the bucket and their sizes.
async fn objects(s3: &aws_sdk_s3::Client) -> Vec<(String, i64)> {
    let out = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list objects");
    out.contents()
        .iter()
        .map(|o| (o.key().unwrap_or("").to_string(), o.size().unwrap_or(0)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_templates_deploy_from_the_artifact_bucket() {
    let w = World::examples_on_moto()
        .setup(|root| {
            let path = root.join("platform-templates").join(TEMPLATE);
            let mut text = std::fs::read_to_string(&path).expect("template");
            let at = text.find("\nOutputs:").expect("an Outputs section");
            text.insert_str(at + 1, &many_parameters("First"));
            std::fs::write(&path, text).expect("write");
            crate::common::git(
                &root.join("platform-templates"),
                &["commit", "-qam", "large"],
            );
        })
        .build();
    // Environments only: the services are not what this is about.
    w.edit_config(|c| {
        c.replace(
            "[[spec_repos]]\nname = \"payments\"\nurl = \"payments\"\n",
            "",
        )
    });
    let url = w.aws_url().to_string();

    // No bucket: a clear error, retried later, and nothing created.
    let out = w.reconcile();
    assert!(w.stacks().await.is_empty(), "{}", text(&out));
    let store = w.store().await;
    let rows = store.deployments(None, 100).await.expect("history");
    let dev = rows
        .iter()
        .find(|d| d.deployment.resource_id == "environment/dev")
        .expect("a deployment of environment/dev");
    assert_eq!(dev.status, "failed", "{dev:?}");
    let error = dev.error.clone().unwrap_or_default();
    for words in [
        "environment/dev",
        "over CloudFormation's TemplateBody limit of 51200 bytes",
        "[aws] artifact_bucket",
        "Nothing was created",
    ] {
        assert!(error.contains(words), "{words:?} not in {error}");
    }
    let size: usize = error
        .split("template is ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the size in the error");
    assert!((55_000..70_000).contains(&size), "{size}");
    assert!(dev.retryable, "{dev:?}");
    drop(store);

    // With the bucket: uploaded, deployed by URL.
    let s3 = s3(&url);
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
    w.edit_config(|c| {
        c.replace(
            "change_sets = false\n",
            &format!("change_sets = false\nartifact_bucket = \"{BUCKET}\"\nartifact_prefix = \"ci/protond\"\n"),
        )
    });
    let started = std::time::Instant::now();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let stacks: BTreeSet<String> = w
        .stacks()
        .await
        .iter()
        .filter_map(|s| s.resource().map(str::to_string))
        .collect();
    assert_eq!(
        stacks,
        BTreeSet::from([
            "environment/dev".to_string(),
            "environment/prod".to_string()
        ])
    );
    let first = objects(&s3).await;
    assert_eq!(first.len(), 2, "{first:?}");
    for (key, size) in &first {
        assert!(key.starts_with("ci/protond/templates/protond-"), "{key}");
        assert_eq!(
            std::path::Path::new(key)
                .extension()
                .and_then(|e| e.to_str()),
            Some("yaml"),
            "{key}"
        );
        assert!(*size > 51_200, "{key}: {size}");
    }
    // The stack runs the uploaded template.
    let cfn = crate::common::cfn_client(&url);
    let dev_stack = w
        .stacks()
        .await
        .into_iter()
        .find(|s| s.resource() == Some("environment/dev"))
        .expect("dev stack");
    let template = cfn
        .get_template()
        .stack_name(&dev_stack.name)
        .send()
        .await
        .expect("get template");
    assert!(
        template
            .template_body()
            .is_some_and(|b| b.contains("First setting 219 of environment dev")),
        "the stack's template is not the uploaded one"
    );
    println!(
        "large templates: {size} bytes deployed from s3 in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // A changed large template: a new object, the stack updated from it, this time through
    // a change set (CreateChangeSet with TemplateURL).
    w.edit_config(|c| c.replace("change_sets = false\n", "change_sets = true\n"));
    w.replace(
        "platform-templates",
        TEMPLATE,
        "First setting",
        "Second setting",
    );
    w.commit("platform-templates", "large, changed");
    w.tag("basic-env/v1.1", "changed");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let second = objects(&s3).await;
    assert!(second.len() > first.len(), "{second:?}");
    let template = cfn
        .get_template()
        .stack_name(&dev_stack.name)
        .send()
        .await
        .expect("get template");
    assert!(
        template
            .template_body()
            .is_some_and(|b| b.contains("Second setting 219 of environment dev")),
        "the stack was not updated from the new object"
    );
    let store = w.store().await;
    let rows = store
        .deployments(Some("environment/dev"), 10)
        .await
        .expect("history");
    assert_eq!(rows[0].status, "succeeded", "{:?}", rows[0]);
    assert_eq!(
        rows[0].deployment.to_version.to_string(),
        "1.1",
        "{:?}",
        rows[0]
    );
}
