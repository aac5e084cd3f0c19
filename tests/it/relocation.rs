//! Where each stack lives: an environment deployed with a role (another account, on
//! `moto_server`'s multi-account support) is decommissioned with that role, and an environment
//! whose role changes, then the configured region, is relocated: created in the new place,
//! deleted from the old one with the old identity. No live stack is left behind and no delete
//! is recorded as succeeded while its stack lives.

use aws_sdk_cloudformation::Client;

use crate::common::text;
use crate::common::world::World;

const PROD_ROLE: &str = "arn:aws:iam::222222222222:role/protond-prod";
const DEV_ROLE: &str = "arn:aws:iam::333333333333:role/protond-dev";

/// A `CloudFormation` client acting in `region`, as `role` when given (assumed through the
/// `moto_server`'s STS: its credentials act in the role's account).
async fn client(url: &str, region: &str, role: Option<&str>) -> Client {
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
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
    let conf = aws_sdk_cloudformation::config::Builder::from(&base)
        .credentials_provider(provider)
        .build();
    Client::from_conf(conf)
}

/// The live stacks' `protond:resource` tags, as `client` sees them.
async fn resources(client: &Client) -> Vec<String> {
    let out = client.describe_stacks().send().await.expect("describe");
    let mut ids: Vec<String> = out
        .stacks()
        .iter()
        .filter(|s| {
            s.stack_status()
                .map(aws_sdk_cloudformation::types::StackStatus::as_str)
                != Some("DELETE_COMPLETE")
        })
        .filter_map(|s| {
            s.tags()
                .iter()
                .find(|t| t.key() == Some("protond:resource"))
                .and_then(|t| t.value().map(str::to_string))
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn stacks_are_deleted_and_moved_with_their_recorded_identity() {
    let w = World::examples_on_moto()
        .config(|c| {
            c.section("[daemon]\ndeletion_budget = 20");
        })
        .build();
    let url = w.aws_url().to_string();
    w.replace(
        "platform-envs",
        "proton/environments/prod.yaml",
        "stage: prod\n",
        &format!("stage: prod\nrole_arn: {PROD_ROLE}\n"),
    );
    w.commit("platform-envs", "prod in its own account");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let main = client(&url, "us-east-1", None).await;
    let prod = client(&url, "us-east-1", Some(PROD_ROLE)).await;
    assert_eq!(
        resources(&prod).await,
        [
            "environment/prod",
            "service_instance/payments/payments-prod"
        ]
    );
    assert!(
        !resources(&main)
            .await
            .contains(&"environment/prod".to_string())
    );

    // Decommission prod: its stacks are deleted in its account, with its role.
    w.edit("payments", "proton/services/payments.yaml", |t| {
        let cut = t.find("  - name: payments-prod").expect("prod instance");
        t[..cut].to_string()
    });
    w.commit("payments", "no prod instance");
    std::fs::remove_file(w.dir("platform-envs/proton/environments/prod.yaml")).expect("rm");
    w.commit("platform-envs", "decommission prod");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    assert!(resources(&prod).await.is_empty(), "prod's stacks are gone");
    let store = w.store().await;
    let records: Vec<String> = store
        .resources()
        .await
        .expect("records")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(!records.iter().any(|r| r.contains("prod")), "{records:?}");

    // Dev's role and the region change at once: dev's stacks move to its own account in
    // us-west-2, the pipeline (no environment) to us-west-2 in the main account. Created
    // there, then deleted here with the old identity. (One move at a time of the same
    // account would meet the templates' account-wide IAM names: a property of the
    // templates, in AWS as in moto.)
    let dev_ids = resources(&main).await;
    assert_eq!(dev_ids.len(), 5, "{dev_ids:?}");
    w.replace(
        "platform-envs",
        "proton/environments/dev.yaml",
        "stage: dev\n",
        &format!("stage: dev\nrole_arn: {DEV_ROLE}\n"),
    );
    w.commit("platform-envs", "dev in its own account");
    w.edit_config(|t| t.replace("region = \"us-east-1\"", "region = \"us-west-2\""));
    let plan = w.run(&["plan"]);
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan_text.contains("moves to another role, account or region"),
        "{plan_text}"
    );
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let dev = client(&url, "us-west-2", Some(DEV_ROLE)).await;
    let west = client(&url, "us-west-2", None).await;
    let moved: Vec<String> = dev_ids
        .iter()
        .filter(|id| !id.starts_with("pipeline/"))
        .cloned()
        .collect();
    assert_eq!(resources(&dev).await, moved);
    assert_eq!(resources(&west).await, ["pipeline/payments"]);
    assert!(
        resources(&main).await.is_empty(),
        "nothing left behind in us-east-1"
    );
    let old_dev = client(&url, "us-east-1", Some(DEV_ROLE)).await;
    assert!(resources(&old_dev).await.is_empty());
    for r in store.resources().await.expect("records") {
        assert_eq!(r.placement.region.as_deref(), Some("us-west-2"), "{r:?}");
        assert!(r.placement.stack_id.is_some(), "{r:?}");
    }
    let history = store.deployments(None, 1000).await.expect("history");
    let relocations: Vec<_> = history
        .iter()
        .filter(|d| d.deployment.reason.as_deref() == Some("relocate"))
        .collect();
    assert_eq!(relocations.len(), 5, "{relocations:#?}");
    assert!(
        relocations.iter().all(|d| d.status == "succeeded"),
        "{relocations:#?}"
    );
}
