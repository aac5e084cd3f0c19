//! The change-set gate on real git repos and `moto_server`, through the `protond` binary:
//! tagging a minor that changes a DynamoDB table's key schema (a replacement) and adds a
//! queue updates the instances without the table and holds those with it as `needs
//! approval` (in `plan`, `status`, `approvals` and the metrics); an approval through
//! `protond approve` lets the dev one deploy, and prod's moves only after its own approval
//! (here through the spec repo's `.protond/approvals.yaml`) and after dev.

use std::path::Path;

use crate::common::text;
use crate::common::world::World;

const ORDERS_DEV: &str = "service_instance/orders/orders-dev";
const ORDERS_PROD: &str = "service_instance/orders/orders-prod";
const PLAIN_DEV: &str = "service_instance/orders/plain-dev";
const PLAIN_PROD: &str = "service_instance/orders/plain-prod";

const SCHEMA: &str = r#"schema:
  format:
    openapi: "3.0.0"
  service_input_type: "DbServiceInput"
  types:
    DbServiceInput:
      type: object
      description: "Inputs of one instance"
      properties:
        with_table:
          title: "With a table"
          type: boolean
          description: "Whether the instance has its own DynamoDB table"
          default: false
"#;

const MANIFEST: &str = "infrastructure:\n  templates:\n    - file: \"cloudformation.yaml\"\n      rendering_engine: jinja\n      template_language: cloudformation\n";

/// The instance template of db-svc v1.0: a parameter, and a table when asked for.
const TEMPLATE_V10: &str = r"AWSTemplateFormatVersion: '2010-09-09'
Resources:
  Settings:
    Type: AWS::SSM::Parameter
    Properties:
      Name: '/protond/{{ environment.name }}/{{ service_instance.name }}/db'
      Type: String
      Value: 'v1'
{% if service_instance.inputs.with_table %}
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: '{{ service_instance.name }}-orders'
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - AttributeName: id
          AttributeType: S
      KeySchema:
        - AttributeName: id
          KeyType: HASH
{% endif %}
";

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join("platform-templates").join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// v1.1: the table's key changes (a replacement) and every instance gets a queue.
fn v11() -> String {
    TEMPLATE_V10
        .replace("AttributeName: id", "AttributeName: pk")
        .replace(
            "      Value: 'v1'\n",
            "      Value: 'v1'\n  Inbox:\n    Type: AWS::SQS::Queue\n",
        )
}

const SERVICE: &str = r"proton: ServiceSpec
name: orders
template: {name: db-svc, major: 1}
instances:
  - name: orders-dev
    environment: dev
    spec: {with_table: true}
  - name: orders-prod
    environment: prod
    spec: {with_table: true}
  - name: plain-dev
    environment: dev
    spec: {with_table: false}
  - name: plain-prod
    environment: prod
    spec: {with_table: false}
";

fn world() -> World {
    World::examples_on_moto()
        .setup(|root| {
            write(root, "db-svc/v1/schema/schema.yaml", SCHEMA);
            write(root, "db-svc/v1/.compatible-envs", "basic-env:1\n");
            write(
                root,
                "db-svc/v1/instance_infrastructure/manifest.yaml",
                MANIFEST,
            );
            write(
                root,
                "db-svc/v1/instance_infrastructure/cloudformation.yaml",
                TEMPLATE_V10,
            );
            crate::common::git(&root.join("platform-templates"), &["add", "-A"]);
            crate::common::git(
                &root.join("platform-templates"),
                &["commit", "-q", "-m", "db-svc"],
            );
            std::fs::write(root.join("payments/proton/services/orders.yaml"), SERVICE)
                .expect("write");
            crate::common::git(&root.join("payments"), &["add", "-A"]);
            crate::common::git(&root.join("payments"), &["commit", "-q", "-m", "orders"]);
        })
        .tagged(&["db-svc"])
        .config(|c| {
            c.section("[rollout]\nstages = [\"dev\", \"prod\"]");
        })
        .build()
}

async fn versions(w: &World) -> std::collections::BTreeMap<String, String> {
    w.store()
        .await
        .resources()
        .await
        .expect("records")
        .into_iter()
        .filter(|r| r.id.starts_with("service_instance/orders/"))
        .map(|r| (r.id, r.version.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replacing_minor_waits_for_approval_then_rolls_out_in_stage_order() {
    let w = world();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let v = versions(&w).await;
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(v.values().all(|v| v == "1.0"), "{v:?}");

    // Tag v1.1: the table's key changes, a queue is added.
    w.write(
        "platform-templates",
        "db-svc/v1/instance_infrastructure/cloudformation.yaml",
        &v11(),
    );
    w.commit("platform-templates", "db-svc: key by pk, add a queue");
    w.tag("db-svc/v1.1", "second");
    let out = w.reconcile();
    let v = versions(&w).await;
    assert_eq!(v[PLAIN_DEV], "1.1", "no table: it updates ({})", text(&out));
    assert_eq!(v[ORDERS_DEV], "1.0", "the table would be replaced: held");
    assert_eq!(v[ORDERS_PROD], "1.0");
    assert_eq!(v[PLAIN_PROD], "1.0", "prod waits for dev: {v:?}");

    let plan = text(&w.run(&["plan", "--no-fetch"]));
    let line = plan
        .lines()
        .find(|l| l.contains(ORDERS_DEV) && l.contains("approval"))
        .unwrap_or_else(|| panic!("{ORDERS_DEV} in the plan: {plan}"));
    assert!(line.contains("needs approval of 1.1"), "{line}");
    assert!(
        line.contains("AWS::DynamoDB::Table Table: replaced (KeySchema)"),
        "{line}"
    );
    assert!(
        !plan.contains("Inbox"),
        "an added queue needs no approval: {plan}"
    );
    let status = text(&w.run(&["status"]));
    assert!(status.contains("Needs approval"), "{status}");
    assert!(
        status.contains(&format!("{ORDERS_DEV}: db-svc 1.1 needs approval")),
        "{status}"
    );
    let approvals = text(&w.run(&["approvals", "--output", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&approvals).expect("json");
    assert_eq!(doc["needs_approval"][0]["resource"], ORDERS_DEV, "{doc}");
    assert_eq!(doc["needs_approval"][0]["version"], "1.1", "{doc}");

    // An approval of another version, or of another resource, changes nothing.
    let refused = w.run(&["approve", ORDERS_DEV, "2.0"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("same major"), "{}", text(&refused));
    let ok = w.run(&["approve", ORDERS_DEV, "1.2", "--by", "alice"]);
    assert!(ok.status.success(), "{}", text(&ok));
    w.reconcile();
    assert_eq!(versions(&w).await[ORDERS_DEV], "1.0", "1.2 is not 1.1");

    // Prod approved first, through the spec repo: it still waits for dev.
    w.write(
        "payments",
        ".protond/approvals.yaml",
        &format!(
            "approvals:\n  - resource: {ORDERS_PROD}\n    version: \"1.1\"\n    by: bob\n    reason: rebuilt from the stream\n"
        ),
    );
    w.commit("payments", "approve orders-prod 1.1");
    w.reconcile();
    let v = versions(&w).await;
    assert_eq!(v[ORDERS_PROD], "1.0", "prod waits for dev: {v:?}");
    assert_eq!(v[PLAIN_PROD], "1.0", "{v:?}");

    // The dev approval: dev deploys, then prod (stage order).
    let ok = w.run(&[
        "approve",
        ORDERS_DEV,
        "1.1",
        "--by",
        "alice",
        "--reason",
        "dev data is disposable",
    ]);
    assert!(ok.status.success(), "{}", text(&ok));
    let out = w.reconcile();
    let v = versions(&w).await;
    assert!(v.values().all(|v| v == "1.1"), "{v:?}: {}", text(&out));
    let store = w.store().await;
    let dev = store.deployments(Some(ORDERS_DEV), 1).await.expect("dev");
    let prod = store.deployments(Some(ORDERS_PROD), 1).await.expect("prod");
    assert!(prod[0].id > dev[0].id, "prod after dev");
    let notes = store
        .action_notes(&[dev[0].id, prod[0].id])
        .await
        .expect("notes");
    assert_eq!(
        notes[&dev[0].id].requested_by.as_deref(),
        Some("approved 1.1 by alice (cli): dev data is disposable")
    );
    assert_eq!(
        notes[&prod[0].id].requested_by.as_deref(),
        Some("approved 1.1 by bob (spec repo payments): rebuilt from the stream")
    );
    let status = text(&w.run(&["status"]));
    assert!(!status.contains("Needs approval"), "{status}");
}
