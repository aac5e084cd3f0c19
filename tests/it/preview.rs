//! `protond preview` on real git repos and `moto_server`, through the `protond` binary: a fleet
//! of three worker instances (two in dev, one in prod) on `worker-svc` v1.0, whose template
//! has a `DynamoDB` table; a candidate bundle folder that changes the table's key schema and
//! adds a queue. The preview reports exactly that per resource, groups the three identical
//! instances with their stages, change sets on moto agree on the actions and none is left
//! behind, and `--comment` posts the Markdown report to a fake forge that checks every
//! request. A candidate that does not render is reported as rejected.

use std::path::Path;

use serde_json::Value;

use crate::common::forge::{FakeForge, Kind};
use crate::common::world::World;
use crate::common::{cfn_client, copy_tree, git, text};

const TOKEN: &str = "preview-forge-token-42";
const WORKER: &str = "worker-svc/v1/instance_infrastructure/cloudformation.yaml";

/// The table v1.0 has: keyed by `id`, with an index on `sk`.
const TABLE: &str = "  LedgerTable:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: '{{service_instance.name}}-ledger'
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: id, AttributeType: S}
        - {AttributeName: sk, AttributeType: S}
      KeySchema:
        - {AttributeName: id, KeyType: HASH}
      GlobalSecondaryIndexes:
        - IndexName: by-sk
          KeySchema:
            - {AttributeName: sk, KeyType: HASH}
          Projection: {ProjectionType: ALL}

";

const LEDGER: &str = "proton: ServiceSpec
name: ledger
template: {name: worker-svc, major: 1}
instances:
  - name: ledger-dev
    environment: dev
    spec: {schedule: hourly}
  - name: ledger-prod
    environment: prod
    spec: {schedule: daily}
";

const IDS: [&str; 3] = [
    "service_instance/ledger/ledger-dev",
    "service_instance/reports/reports-dev",
    "service_instance/ledger/ledger-prod",
];

/// Adds the table to `worker-svc` v1 and a second worker service (dev and prod), committed
/// before the first releases are tagged.
fn fleet(root: &Path) {
    let file = root.join("platform-templates").join(WORKER);
    let text = std::fs::read_to_string(&file).expect("worker template");
    let text = text.replacen("Resources:\n", &format!("Resources:\n{TABLE}"), 1);
    std::fs::write(&file, text).expect("write");
    git(
        &root.join("platform-templates"),
        &["commit", "-qam", "worker-svc: ledger table"],
    );
    let spec = root.join("payments/proton/services/ledger.yaml");
    std::fs::write(spec, LEDGER).expect("write");
    git(&root.join("payments"), &["add", "-A"]);
    git(&root.join("payments"), &["commit", "-qm", "ledger"]);
}

/// The candidate: v1's folder copied, the table keyed by (`id`, `sk`), a queue added.
fn candidate(w: &World) -> std::path::PathBuf {
    let dir = w.dir("candidate/worker-svc/v1");
    copy_tree(&w.dir("platform-templates/worker-svc/v1"), &dir);
    let file = dir.join("instance_infrastructure/cloudformation.yaml");
    let t = std::fs::read_to_string(&file).expect("candidate template");
    let t = t
        .replacen(
            "      KeySchema:\n        - {AttributeName: id, KeyType: HASH}\n",
            "      KeySchema:\n        - {AttributeName: id, KeyType: HASH}\n        - {AttributeName: sk, KeyType: RANGE}\n",
            1,
        )
        .replacen(
            "Resources:\n",
            "Resources:\n  AuditQueue:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: '{{service_instance.name}}-audit'\n\n",
            1,
        );
    std::fs::write(&file, t).expect("write");
    dir
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("JSON ({e}): {}", text(out)))
}

/// Each resource's predicted changes as `logical id: summary` lines.
fn changes(resource: &Value) -> Vec<String> {
    resource["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .flat_map(|d| d["changes"].as_array().expect("changes").clone())
        .map(|c| {
            let props: Vec<&str> = c["properties"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            format!(
                "{} {} {} {} {:?}",
                c["logical_id"].as_str().unwrap_or_default(),
                c["resource_type"].as_str().unwrap_or_default(),
                c["action"].as_str().unwrap_or_default(),
                c["effect"].as_str().unwrap_or("-"),
                props
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn preview_predicts_groups_confirms_with_change_sets_and_comments() {
    let forge = FakeForge::start(
        Kind::GitHub,
        "/api/v3",
        TOKEN,
        "acme/templates",
        std::env::temp_dir(),
    )
    .await;
    let pr = forge.open_pr("worker-table", "main", "worker-svc: composite key");
    let api = forge.url.clone();
    let w = World::examples_on_moto()
        .setup(fleet)
        .env("FORGE_TOKEN", TOKEN)
        .config(move |c| {
            c.section("[rollout]\nstages = [\"dev\", \"prod\"]");
            c.repo_line(
                "platform-templates",
                &format!("forge = {{ kind = \"github\", api_url = \"{api}\", repo = \"acme/templates\", token_env = \"FORGE_TOKEN\" }}"),
            );
        })
        .build();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let dir = candidate(&w);
    let bundle = dir.to_str().expect("utf-8 path");

    // The prediction: exactly the table replaced (KeySchema) and the queue added, per
    // resource; one group of three; dev before prod.
    let out = w.run(&[
        "preview",
        "worker-svc",
        "--bundle",
        bundle,
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["candidate"]["version"], "1.1");
    assert_eq!(doc["candidate"]["read_as"], "bundle folder");
    let resources = doc["resources"].as_array().expect("resources");
    let ids: Vec<&str> = resources.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, IDS);
    let expected = [
        "AuditQueue AWS::SQS::Queue add - []".to_string(),
        "LedgerTable AWS::DynamoDB::Table modify replacement [\"KeySchema\"]".to_string(),
    ];
    for r in resources {
        assert_eq!(changes(r), expected, "{}", r["id"]);
        assert_eq!(r["from"], "1.0");
        assert!(
            r["documents"][0]["diff"]
                .as_str()
                .is_some_and(|d| d.contains("+        - {AttributeName: sk, KeyType: RANGE}"))
        );
    }
    let groups = doc["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["count"], 3);
    assert_eq!(groups[0]["destroys"], true);
    assert_eq!(
        groups[0]["summary"],
        "AuditQueue added; LedgerTable replaced (KeySchema)"
    );
    assert_eq!(
        groups[0]["stages"],
        serde_json::json!([{"stage": "dev", "count": 2}, {"stage": "prod", "count": 1}])
    );
    assert_eq!(
        doc["stages"],
        serde_json::json!([
            {"stage": "dev", "resources": [IDS[0], IDS[1]]},
            {"stage": "prod", "resources": [IDS[2]]},
        ])
    );
    assert_eq!(doc["schema"]["invalid"], serde_json::json!([]));

    // Change sets: moto agrees on every action, and none is left behind.
    let out = w.run(&[
        "preview",
        "worker-svc",
        "--bundle",
        bundle,
        "--output",
        "json",
        "--change-sets",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let doc = json(&out);
    let verdicts = doc["change_sets"].as_array().expect("change sets");
    assert_eq!(verdicts.len(), 3, "{verdicts:?}");
    for v in verdicts {
        assert_eq!(v["status"], "confirmed", "{v}");
        let actions: Vec<String> = v["aws"]
            .as_array()
            .expect("aws changes")
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["logical_id"].as_str().unwrap_or_default(),
                    c["action"].as_str().unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(
            actions.contains(&"AuditQueue Add".to_string()),
            "{actions:?}"
        );
        assert!(
            actions.contains(&"LedgerTable Modify".to_string()),
            "{actions:?}"
        );
    }
    let cfn = cfn_client(w.aws_url());
    let records = w.store().await.resources().await.expect("records");
    for id in IDS {
        let record = records.iter().find(|r| r.id == id).expect("record");
        let stack = record
            .placement
            .stack_id
            .clone()
            .unwrap_or(record.placement.stack_name.clone());
        let left = cfn
            .list_change_sets()
            .stack_name(&stack)
            .send()
            .await
            .expect("ListChangeSets");
        assert!(left.summaries().is_empty(), "{id}: {:?}", left.summaries());
    }

    // The Markdown report, posted on the pull request.
    let out = w.run(&[
        "preview",
        "worker-svc",
        "--bundle",
        bundle,
        "--output",
        "markdown",
        "--comment",
        &pr.to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(forge.violations(), Vec::<String>::new());
    assert_eq!(
        forge.requests(),
        [format!(
            "POST /api/v3/repos/acme/templates/issues/{pr}/comments"
        )]
    );
    let comments = forge.prs()[0].comments.clone();
    assert_eq!(comments.len(), 1);
    let md = &comments[0];
    assert_eq!(md.as_str(), String::from_utf8_lossy(&out.stdout));
    assert!(
        md.contains(
            "| 3 | dev 2, prod 1 | **AuditQueue added; LedgerTable replaced (KeySchema)** |"
        ),
        "{md}"
    );
    assert!(
        md.contains("<details><summary>Group 1: 3 resource(s)"),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_that_does_not_render_is_reported_as_rejected() {
    let w = World::builder()
        .examples()
        .tagged(&["basic-env", "web-svc", "worker-svc"])
        .build();
    let dir = w.dir("candidate/worker-svc/v1");
    copy_tree(&w.dir("platform-templates/worker-svc/v1"), &dir);
    let file = dir.join("instance_infrastructure/cloudformation.yaml");
    let t = std::fs::read_to_string(&file).expect("template");
    std::fs::write(&file, t.replacen("{{/if}}", "", 1)).expect("write");
    let out = w.run(&[
        "preview",
        "worker-svc",
        "--bundle",
        dir.to_str().expect("utf-8"),
        "--output",
        "json",
        "--as",
        "v1.4",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["candidate"]["version"], "1.4");
    let why = doc["rejected"]
        .as_str()
        .expect("rejected with the catalog's error");
    assert!(
        why.contains("instance_infrastructure/cloudformation.yaml"),
        "{why}"
    );
    assert_eq!(doc["resources"], serde_json::json!([]));
    if crate::common::sqlite_only("the state file's absence") {
        assert!(!w.state_db().exists(), "preview never creates the store");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn candidates_from_a_checkout_and_from_a_git_ref() {
    let w = World::builder()
        .examples()
        .tagged(&["basic-env", "web-svc", "worker-svc"])
        .build();
    // A template repo checkout: its worker-svc/v1/ is read. Nothing is deployed (no store):
    // the instance would be created on the candidate, once its environment is.
    let checkout = w.dir("platform-templates");
    let out = w.run(&[
        "preview",
        "worker-svc",
        "--bundle",
        checkout.to_str().expect("utf-8"),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["candidate"]["read_as"], "template repo checkout");
    assert_eq!(doc["candidate"]["version"], "1.1");
    assert_eq!(
        doc["resources"][0]["id"],
        "service_instance/reports/reports-dev"
    );
    assert_eq!(doc["resources"][0]["from"], Value::Null);
    assert_eq!(doc["groups"][0]["creates"], true);
    // A git ref of the template repo's mirror: a tag, then the commit it names.
    let commit = git(
        &w.dir("platform-templates"),
        &["rev-parse", "worker-svc/v1.0^{commit}"],
    );
    for rev in ["worker-svc/v1.0", commit.trim()] {
        let out = w.run(&[
            "preview",
            "worker-svc",
            "--bundle",
            rev,
            "--as",
            "v1.7",
            "--output",
            "json",
        ]);
        assert!(out.status.success(), "{rev}: {}", text(&out));
        let doc = json(&out);
        assert_eq!(doc["candidate"]["read_as"], "git ref", "{rev}");
        assert_eq!(doc["candidate"]["commit"], commit.trim(), "{rev}");
        assert_eq!(doc["candidate"]["version"], "1.7");
    }
    let out = w.run(&[
        "preview",
        "worker-svc",
        "--bundle",
        rev_dir(&checkout),
        "--as",
        "v1.0",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("worker-svc v1.0 is already released (tag worker-svc/v1.0)"),
        "{}",
        text(&out)
    );
    let out = w.run(&["preview", "worker-svc", "--bundle", "no-such-branch"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("nor a branch, tag or commit of template repo platform-templates"),
        "{}",
        text(&out)
    );
    if crate::common::sqlite_only("the state file's absence") {
        assert!(!w.state_db().exists(), "preview never creates the store");
    }
}

fn rev_dir(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
