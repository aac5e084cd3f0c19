//! Table tests of the preview's policy: what moves, grouping, stages, schema impact, and a
//! change set's verdict.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::catalog::BundleFiles;
use crate::plan::{Desired, ResourceKind};

const OLD: &str = "Resources:\n  Table:\n    Type: AWS::DynamoDB::Table\n    Properties:\n      KeySchema:\n        - {AttributeName: id, KeyType: HASH}\n      BillingMode: PAY_PER_REQUEST\n";
const NEW: &str = "Resources:\n  Table:\n    Type: AWS::DynamoDB::Table\n    Properties:\n      KeySchema:\n        - {AttributeName: pk, KeyType: HASH}\n      BillingMode: PAY_PER_REQUEST\n  Queue:\n    Type: AWS::SQS::Queue\n";
const DOC: &str = "instance_infrastructure/cloudformation.yaml";

fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

fn resource(id: &str, env: &str, version: Version, doc: &str, state: DesiredState) -> Resource {
    Resource {
        desired: Desired {
            id: id.into(),
            kind: ResourceKind::ServiceInstance,
            repo: "apps".into(),
            template: "svc".into(),
            version,
            input_hash: String::new(),
            state,
        }
        .into(),
        environment: Some(env.into()),
        documents: vec![(DOC.into(), doc.into())].into(),
        provisioning: Provisioning::CloudFormation,
        spec_commit: None,
        start_pipeline: false,
    }
}

fn ready() -> DesiredState {
    DesiredState::Ready {
        rendered_hash: "h".into(),
    }
}

fn record(id: &str, version: Version) -> ResourceRecord {
    ResourceRecord {
        id: id.into(),
        kind: ResourceKind::ServiceInstance,
        repo: "apps".into(),
        environment: None,
        template: "svc".into(),
        version,
        input_hash: String::new(),
        rendered_hash: String::new(),
        outputs: crate::state::Outputs::default(),
        status: crate::model::ResourceStatus::Deployed,
        spec_commit: None,
        updated_at: String::new(),
        placement: crate::model::Placement::default(),
    }
}

fn set(resources: Vec<Resource>) -> DesiredSet {
    DesiredSet {
        resources,
        ..DesiredSet::default()
    }
}

fn stages() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("dev".to_string(), "dev".to_string()),
        ("dev2".to_string(), "dev".to_string()),
        ("prod".to_string(), "prod".to_string()),
    ])
}

fn order() -> Vec<String> {
    vec!["dev".into(), "prod".into()]
}

/// Three instances on v1.0 whose candidate render is identical, one that already runs the
/// candidate, one new instance, and one that renders the same on both.
fn fleet() -> (DesiredSet, DesiredSet, Vec<ResourceRecord>) {
    let ids = [
        ("svc/prod-a", "prod"),
        ("svc/dev-a", "dev"),
        ("svc/dev-b", "dev2"),
    ];
    let mut cand: Vec<Resource> = ids
        .iter()
        .map(|(id, env)| resource(id, env, v(1, 1), NEW, ready()))
        .collect();
    let mut current: Vec<Resource> = ids
        .iter()
        .map(|(id, env)| resource(id, env, v(1, 0), OLD, ready()))
        .collect();
    cand.push(resource("svc/already", "dev", v(1, 1), NEW, ready()));
    cand.push(resource("svc/new", "prod", v(1, 1), NEW, ready()));
    cand.push(resource("svc/same", "prod", v(1, 1), OLD, ready()));
    current.push(resource("svc/same", "prod", v(1, 0), OLD, ready()));
    cand.push(resource("other", "dev", v(2, 0), NEW, ready()));
    let mut records: Vec<ResourceRecord> = ids.iter().map(|(id, _)| record(id, v(1, 0))).collect();
    records.push(record("svc/already", v(1, 1)));
    records.push(record("svc/same", v(1, 0)));
    (set(cand), set(current), records)
}

#[test]
fn moving_keeps_resources_that_would_change_version_in_rollout_order() {
    let (cand, current, records) = fleet();
    let moving = moving(
        (&cand, &current),
        &records,
        ("svc", v(1, 1)),
        &stages(),
        &order(),
    );
    let ids: Vec<(&str, Option<&str>, Option<&str>)> = moving
        .iter()
        .map(|m| (m.id.as_str(), m.stage.as_deref(), m.from.as_deref()))
        .collect();
    assert_eq!(
        ids,
        [
            ("svc/dev-a", Some("dev"), Some("1.0")),
            ("svc/dev-b", Some("dev"), Some("1.0")),
            ("svc/new", Some("prod"), None),
            ("svc/prod-a", Some("prod"), Some("1.0")),
            ("svc/same", Some("prod"), Some("1.0")),
        ]
    );
    let dev = &moving[0].documents;
    assert_eq!(dev.len(), 1);
    let summary: Vec<String> = dev[0].changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        summary,
        [
            "AWS::SQS::Queue Queue: added",
            "AWS::DynamoDB::Table Table: replaced (KeySchema)"
        ]
    );
    assert!(
        dev[0]
            .diff
            .contains("-        - {AttributeName: id, KeyType: HASH}"),
        "{}",
        dev[0].diff
    );
    assert!(dev[0].diff.contains("+  Queue:"), "{}", dev[0].diff);
    assert!(
        moving[4].documents.is_empty(),
        "same render: no document changes"
    );
}

#[test]
fn identical_impacts_group_with_counts_per_stage() {
    let (cand, current, records) = fleet();
    let mut moving = moving(
        (&cand, &current),
        &records,
        ("svc", v(1, 1)),
        &stages(),
        &order(),
    );
    let groups = group(&mut moving, &order());
    let got: Vec<(usize, bool, bool, &str)> = groups
        .iter()
        .map(|g| (g.count, g.creates, g.destroys, g.summary.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (3, false, true, "Queue added; Table replaced (KeySchema)"),
            (1, true, false, "Queue added; Table added"),
            (1, false, false, "no rendered change"),
        ]
    );
    assert_eq!(
        groups[0].stages,
        [
            StageCount {
                stage: "dev".into(),
                count: 2
            },
            StageCount {
                stage: "prod".into(),
                count: 1
            },
        ]
    );
    assert_eq!(
        groups[0].resources,
        ["svc/dev-a", "svc/dev-b", "svc/prod-a"]
    );
    let of: Vec<(&str, usize)> = moving.iter().map(|m| (m.id.as_str(), m.group)).collect();
    assert_eq!(
        of,
        [
            ("svc/dev-a", 0),
            ("svc/dev-b", 0),
            ("svc/new", 1),
            ("svc/prod-a", 0),
            ("svc/same", 2)
        ]
    );
    let st = by_stage(&moving);
    assert_eq!(
        st.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>(),
        ["dev", "prod"]
    );
    assert_eq!(st[1].resources, ["svc/new", "svc/prod-a", "svc/same"]);
}

#[test]
fn stages_not_configured_come_after_and_no_stage_last() {
    let order = order();
    let mut ranks = [
        stage_rank(None, &order),
        stage_rank(Some("qa"), &order),
        stage_rank(Some("prod"), &order),
        stage_rank(Some("dev"), &order),
    ];
    ranks.sort();
    assert_eq!(
        ranks.map(|r| r.1),
        [Some("dev"), Some("prod"), Some("qa"), None]
    );
}

fn bundle(schema_props: &str) -> Bundle {
    let schema = format!(
        "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: \"In\"\n  types:\n    In:\n      type: object\n{schema_props}"
    );
    let mut files = BundleFiles::new("fixture");
    for (p, c) in [
        ("schema/schema.yaml", schema.as_str()),
        (
            "instance_infrastructure/manifest.yaml",
            "infrastructure:\n  templates:\n    - file: \"cloudformation.yaml\"\n      rendering_engine: jinja\n      template_language: cloudformation\n",
        ),
        ("instance_infrastructure/cloudformation.yaml", OLD),
        (
            ".template-registration.yaml",
            "compatible_environments:\n  - env:1\n",
        ),
    ] {
        files.insert(p, c.as_bytes().to_vec()).expect("safe path");
    }
    Bundle::load("svc", 1, &files).expect("valid fixture bundle")
}

#[test]
fn schema_impact_lists_new_invalid_specs_required_inputs_and_changed_defaults() {
    let old = bundle(
        "      properties:\n        size:\n          type: string\n          default: small\n        port:\n          type: number\n          default: 80\n",
    );
    let new = bundle(
        "      required: [owner]\n      properties:\n        size:\n          type: string\n          default: large\n        port:\n          type: number\n          default: 80\n        owner:\n          type: string\n",
    );
    let broken = DesiredState::Invalid {
        error: "spec of svc/b: owner is required".into(),
    };
    let was_broken = DesiredState::Invalid {
        error: "bad before".into(),
    };
    let cand = set(vec![
        resource("svc/a", "dev", v(1, 1), NEW, ready()),
        resource("svc/b", "dev", v(1, 1), NEW, broken),
        resource("svc/c", "dev", v(1, 1), NEW, was_broken.clone()),
    ]);
    let current = set(vec![
        resource("svc/a", "dev", v(1, 0), OLD, ready()),
        resource("svc/b", "dev", v(1, 0), OLD, ready()),
        resource("svc/c", "dev", v(1, 0), OLD, was_broken),
    ]);
    let (mut m1, mut m2) = (moving_stub("svc/a"), moving_stub("svc/d"));
    m1.group = 0;
    m2.group = 0;
    let inputs = BTreeMap::from([
        (
            "svc/a".to_string(),
            (InputKind::Service, json!({"port": 81})),
        ),
        (
            "svc/d".to_string(),
            (InputKind::Service, json!({"size": "tiny"})),
        ),
    ]);
    let impact = schema_impact(
        (&cand, &current),
        ("svc", v(1, 1)),
        (Some(&old), &new),
        &[m1, m2],
        &inputs,
    );
    assert_eq!(
        impact.invalid,
        [Invalid {
            id: "svc/b".into(),
            error: "spec of svc/b: owner is required".into()
        }]
    );
    assert_eq!(
        impact.new_required,
        [NewRequired {
            kind: "service".into(),
            input: "owner".into()
        }]
    );
    assert_eq!(
        impact.changed_defaults,
        [DefaultChange {
            kind: "service".into(),
            input: "size".into(),
            old: Some(json!("small")),
            new: Some(json!("large")),
            resources: vec!["svc/a".into()],
        }]
    );
    let first = schema_impact(
        (&cand, &current),
        ("svc", v(1, 1)),
        (None, &new),
        &[],
        &inputs,
    );
    assert_eq!(
        first.new_required.len(),
        1,
        "no release before: every required input is new"
    );
    assert!(first.changed_defaults.is_empty());
}

fn moving_stub(id: &str) -> Moving {
    Moving {
        id: id.into(),
        environment: None,
        stage: None,
        from: Some("1.0".into()),
        to: "1.1".into(),
        documents: Vec::new(),
        group: 0,
    }
}

fn aws(lid: &str, action: &str, replacement: Option<&str>) -> ChangeSetChange {
    ChangeSetChange {
        logical_id: lid.into(),
        resource_type: String::new(),
        action: action.into(),
        replacement: replacement.map(str::to_string),
    }
}

#[test]
fn change_sets_confirm_or_say_how_they_differ() {
    let predicted = crate::impact::compare(OLD, NEW).expect("templates parse");
    let cases: [(Vec<ChangeSetChange>, &str, Vec<&str>); 5] = [
        (
            vec![aws("Queue", "Add", None), aws("Table", "Modify", None)],
            "confirmed",
            vec![],
        ),
        (
            vec![
                aws("Queue", "Add", None),
                aws("Table", "Modify", Some("True")),
            ],
            "confirmed",
            vec![],
        ),
        (
            vec![
                aws("Queue", "Add", None),
                aws("Table", "Modify", Some("False")),
            ],
            "differs",
            vec![
                "differs: AWS says Table Modify (Replacement False), predicted replaced (KeySchema)",
            ],
        ),
        (
            vec![aws("Table", "Modify", None)],
            "differs",
            vec!["differs: AWS lists no change of Queue, predicted added"],
        ),
        (
            vec![
                aws("Queue", "Add", None),
                aws("Table", "Modify", None),
                aws("Extra", "Remove", None),
            ],
            "differs",
            vec!["differs: AWS says Extra Remove, predicted no change"],
        ),
    ];
    for (said, status, details) in cases {
        let verdict = confirm("svc/a", &predicted, said);
        assert_eq!(verdict.status, status, "{verdict:?}");
        assert_eq!(verdict.details, details);
    }
}

#[test]
fn long_text_is_cut_on_a_character_boundary_with_a_note() {
    let text = "é".repeat(10);
    let out = cut(&text, 5);
    assert!(out.starts_with("éé\n… (cut at 5 bytes of 20)"), "{out}");
    assert_eq!(cut("short", 5), "short");
}

#[test]
fn markdown_is_bounded_and_warns_in_bold() {
    let (cand, current, records) = fleet();
    let mut resources = moving(
        (&cand, &current),
        &records,
        ("svc", v(1, 1)),
        &stages(),
        &order(),
    );
    let groups = group(&mut resources, &order());
    let p = Preview {
        candidate: Candidate {
            template: "svc".into(),
            version: "1.1".into(),
            source: "svc/v1".into(),
            read_as: "bundle folder".into(),
            commit: None,
        },
        rejected: None,
        stages: by_stage(&resources),
        resources,
        groups,
        schema: SchemaImpact::default(),
        change_sets: Vec::new(),
    };
    let md = report::markdown(&p, 100_000);
    assert!(
        md.contains("| 3 | dev 2, prod 1 | **Queue added; Table replaced (KeySchema)** |"),
        "{md}"
    );
    assert!(
        md.contains("<details><summary>Group 1: 3 resource(s)"),
        "{md}"
    );
    assert!(
        md.contains("```diff\n--- a/instance_infrastructure/cloudformation.yaml"),
        "{md}"
    );
    assert!(report::markdown(&p, 300).len() < 400);
    let table = report::table(&p);
    assert!(
        table
            .contains("3 updated: Queue added; Table replaced (KeySchema)  !! REPLACES OR REMOVES"),
        "{table}"
    );
}

#[test]
fn a_new_resource_waiting_for_outputs_is_a_create_without_a_diff() {
    let blocked = DesiredState::Blocked {
        on: vec!["environment/dev".into()],
    };
    let mut r = resource("svc/new", "dev", v(1, 1), "", blocked);
    r.documents.clear();
    let cand = set(vec![r]);
    let mut moving = moving(
        (&cand, &set(vec![])),
        &[],
        ("svc", v(1, 1)),
        &stages(),
        &order(),
    );
    assert_eq!(moving.len(), 1);
    assert!(moving[0].creates() && moving[0].documents.is_empty());
    let groups = group(&mut moving, &order());
    assert_eq!(
        groups[0].summary,
        "not rendered yet: waits for the outputs of resources not deployed"
    );
}

#[test]
fn the_readme_counts_the_covered_types() {
    // README, "How replacement is predicted": update its count when behaviour.tsv changes.
    assert_eq!(crate::impact::covered_types().count(), 1583);
    assert_eq!(report::fence_for("a ``` b"), "````");
    assert_eq!(report::fence_for("plain"), "```");
}
