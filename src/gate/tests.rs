use super::*;

const TABLE_V1: &str = r"
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      KeySchema: [{AttributeName: id, KeyType: HASH}]
      BillingMode: PAY_PER_REQUEST
  Bucket:
    Type: AWS::S3::Bucket
  Topic:
    Type: AWS::SNS::Topic
    Properties: {TopicName: a}
  Db:
    Type: AWS::RDS::DBInstance
    Properties: {DBInstanceClass: db.t3.micro}
";

fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

fn docs(text: &str) -> Vec<(String, String)> {
    vec![("cloudformation.yaml".to_string(), text.to_string())]
}

fn rules(block_interruption: bool) -> Rules {
    Rules::from_config(&GateConfig {
        block_interruption,
        ..GateConfig::default()
    })
}

fn approval(resource: &str, version: Version, repo: Option<&str>) -> Approval {
    Approval {
        resource: resource.into(),
        template: None,
        version,
        by: "alice".into(),
        via: "cli".into(),
        reason: None,
        at: None,
        repo: repo.map(str::to_string),
    }
}

fn decide_on(new: &str, rules: &Rules, approvals: &[Approval]) -> Decision {
    decide_between(TABLE_V1, new, rules, approvals)
}

fn decide_between(old: &str, new: &str, rules: &Rules, approvals: &[Approval]) -> Decision {
    decide_files(&docs(old), &docs(new), rules, approvals)
}

/// [`decide_between`] for bundles of several files.
fn decide_files(
    old: &[(String, String)],
    new: &[(String, String)],
    rules: &Rules,
    approvals: &[Approval],
) -> Decision {
    let c = Candidate {
        id: "service_instance/web/dev",
        repo: "team",
        template: "svc",
        version: v(1, 1),
        deployed: old,
        new,
    };
    decide(&c, rules, approvals)
}

fn with(from: &str, to: &str) -> String {
    TABLE_V1.replacen(from, to, 1)
}

#[test]
fn the_gate_decides_by_statefulness_effect_and_retention() {
    // The key changes with a billing mode change along: only the key is named.
    let table_key =
        with("AttributeName: id", "AttributeName: pk").replace("PAY_PER_REQUEST", "PROVISIONED");
    let retained = TABLE_V1.replace(
        "  Bucket:\n    Type: AWS::S3::Bucket\n",
        "  Bucket:\n    Type: AWS::S3::Bucket\n    DeletionPolicy: Retain\n",
    );
    let removed_retained = TABLE_V1.replace(
        "  Bucket:\n    Type: AWS::S3::Bucket\n",
        "  Other:\n    Type: AWS::SNS::Topic\n",
    );
    // (case, new template, block_interruption, needs approval with these summaries)
    let cases: Vec<(&str, String, bool, Vec<&str>)> = vec![
        ("unchanged", TABLE_V1.to_string(), false, vec![]),
        (
            "stateful replaced",
            table_key.clone(),
            false,
            vec!["AWS::DynamoDB::Table Table: replaced (KeySchema)"],
        ),
        (
            "stateful updated in place",
            with("PAY_PER_REQUEST", "PROVISIONED"),
            false,
            vec![],
        ),
        (
            "stateless replaced",
            with("TopicName: a", "TopicName: b"),
            false,
            vec![],
        ),
        (
            "stateful removed",
            removed_retained.clone(),
            false,
            vec!["AWS::S3::Bucket Bucket: removed"],
        ),
        (
            "stateful interrupted, flag off",
            with("db.t3.micro", "db.t3.small"),
            false,
            vec![],
        ),
        (
            "stateful interrupted, flag on",
            with("db.t3.micro", "db.t3.small"),
            true,
            vec!["AWS::RDS::DBInstance Db: updated with interruption (DBInstanceClass)"],
        ),
        (
            "stateful added",
            format!("{TABLE_V1}  Queue:\n    Type: AWS::SQS::Queue\n"),
            false,
            vec![],
        ),
        (
            "does not parse",
            "Resources: [".to_string(),
            false,
            vec!["cloudformation.yaml: the new template does not parse"],
        ),
    ];
    for (case, new, block, want) in cases {
        let got = decide_on(&new, &rules(block), &[]);
        match (&got, want.is_empty()) {
            (Decision::Clear, true) => {}
            (Decision::NeedsApproval { changes }, false) => {
                assert_eq!(changes.len(), want.len(), "{case}: {changes:?}");
                for (c, w) in changes.iter().zip(&want) {
                    assert!(c.starts_with(w), "{case}: {c:?} should start with {w:?}");
                }
                if case == "stateful replaced" {
                    assert_eq!(changes[0], want[0], "only the cause is named");
                }
            }
            _ => panic!("{case}: got {got:?}, wanted {want:?}"),
        }
    }
    // A removal its DeletionPolicy retains keeps the data: no approval.
    let old = docs(&retained);
    let new = docs(&removed_retained);
    let c = Candidate {
        id: "x/y",
        repo: "team",
        template: "svc",
        version: v(1, 1),
        deployed: &old,
        new: &new,
    };
    assert_eq!(decide(&c, &rules(false), &[]), Decision::Clear);
}

#[test]
fn an_approval_counts_for_its_resource_version_and_repo_only() {
    let new = with("AttributeName: id", "AttributeName: pk");
    let id = "service_instance/web/dev";
    let cases = [
        ("same version", approval(id, v(1, 1), None), true),
        ("another version", approval(id, v(1, 2), None), false),
        ("an earlier version", approval(id, v(1, 0), None), false),
        (
            "another resource",
            approval("service_instance/web/prod", v(1, 1), None),
            false,
        ),
        (
            "from its own repo",
            approval(id, v(1, 1), Some("team")),
            true,
        ),
        (
            "from another repo",
            approval(id, v(1, 1), Some("other")),
            false,
        ),
        (
            "for another template",
            Approval {
                template: Some("other".into()),
                ..approval(id, v(1, 1), None)
            },
            false,
        ),
    ];
    for (case, a, counts) in cases {
        let got = decide_on(&new, &rules(false), std::slice::from_ref(&a));
        match got {
            Decision::Approved { approval, changes } => {
                assert!(counts, "{case}: approved by {approval:?}");
                assert_eq!(changes.len(), 1, "{case}");
            }
            Decision::NeedsApproval { .. } => assert!(!counts, "{case}: not approved"),
            Decision::Clear => panic!("{case}: the key change must be gated"),
        }
    }
}

#[test]
fn a_disabled_gate_or_a_custom_list_changes_what_is_gated() {
    let new = with("AttributeName: id", "AttributeName: pk");
    let off = Rules::from_config(&GateConfig {
        enabled: false,
        ..GateConfig::default()
    });
    assert_eq!(decide_on(&new, &off, &[]), Decision::Clear);
    // A replacing list without DynamoDB: not stateful any more; an extra type is.
    let custom = Rules::from_config(&GateConfig {
        stateful_types: Some(vec!["AWS::RDS::*".into()]),
        extra_stateful_types: vec!["AWS::SNS::Topic".into()],
        ..GateConfig::default()
    });
    assert_eq!(decide_on(&new, &custom, &[]), Decision::Clear);
    let topic = with("TopicName: a", "TopicName: b");
    assert!(matches!(
        decide_on(&topic, &custom, &[]),
        Decision::NeedsApproval { .. }
    ));
}

#[test]
fn the_approval_file_parses_and_names_every_bad_field() {
    let ok = "approvals:\n  - resource: service_instance/web/dev\n    version: \"1.1\"\n    by: alice\n    reason: rebuilt from the stream\n";
    let got = file::parse("team", ok).expect("parses");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].version, v(1, 1));
    assert_eq!(got[0].repo.as_deref(), Some("team"));
    assert_eq!(got[0].via, "spec repo team");
    assert_eq!(
        got[0].note(),
        "approved 1.1 by alice (spec repo team): rebuilt from the stream"
    );
    let bad = "approvals:\n  - resource: web\n    version: 1.1\n    by: alice\n  - resource: service_instance/web/dev\n    version: \"x\"\n    by: bob\n";
    let errors = file::parse("team", bad).expect_err("refused");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains(".protond/approvals.yaml: approvals[0].version"));
    assert!(errors[0].contains("write it quoted"));
    assert!(errors[1].contains("approvals[1].version"));
    let unknown = file::parse(
        "team",
        "approvals:\n  - resource: a/b\n    versoin: \"1.1\"\n    by: a\n",
    )
    .expect_err("refused");
    assert!(
        unknown[0].contains("spec repo team: .protond/approvals.yaml"),
        "{unknown:?}"
    );
}

/// Issue 20: documents that name no stateful type are not parsed (a change between them
/// cannot need approval): a new template that does not even parse is clear when neither it
/// nor the deployed one names one. Each way of spelling a stateful type other than as
/// written (an escape in a double-quoted or JSON string, a pattern's prefix, an alias of an
/// anchor, a `%TAG` handle) still reaches the comparison and needs approval.
#[test]
fn only_documents_that_could_name_a_stateful_type_are_compared() {
    let stateless =
        "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties: {TopicName: a}\n";
    let broken = "Resources: [";
    assert_eq!(
        decide_between(stateless, broken, &rules(false), &[]),
        Decision::Clear,
        "nothing stateful on either side: not compared"
    );
    assert!(!rules(false).may_block(&docs(stateless)));
    // A stateful table replaced (its key changes), spelled in ways a text search for the
    // type would miss.
    let table = |ty: &str, key: &str| {
        format!(
            "Resources:\n  Table:\n    Type: {ty}\n    Properties:\n      KeySchema: [{{AttributeName: {key}, KeyType: HASH}}]\n"
        )
    };
    let escaped = "\"AWS::DynamoDB::T\\x61ble\"";
    let json = |key: &str| {
        format!(
            "{{\"Resources\": {{\"Table\": {{\"Type\": \"AWS::DynamoDB::T\\u0061ble\", \"Properties\": {{\"KeySchema\": [{{\"AttributeName\": \"{key}\", \"KeyType\": \"HASH\"}}]}}}}}}}}"
        )
    };
    let aliased = |key: &str| {
        format!(
            "Metadata:\n  T: &t AWS::DynamoDB::Table\nResources:\n  Table:\n    Type: *t\n    Properties:\n      KeySchema: [{{AttributeName: {key}, KeyType: HASH}}]\n"
        )
    };
    let cases: Vec<(&str, String, String, Rules)> = vec![
        (
            "as written",
            table("AWS::DynamoDB::Table", "id"),
            table("AWS::DynamoDB::Table", "pk"),
            rules(false),
        ),
        (
            "escaped",
            table(escaped, "id"),
            table(escaped, "pk"),
            rules(false),
        ),
        ("json escape", json("id"), json("pk"), rules(false)),
        ("alias", aliased("id"), aliased("pk"), rules(false)),
        (
            "pattern",
            table("AWS::DynamoDB::Table", "id"),
            table("AWS::DynamoDB::Table", "pk"),
            Rules {
                enabled: true,
                stateful: StatefulTypes::new(["AWS::DynamoDB::*".to_string()]),
                block_interruption: false,
            },
        ),
    ];
    for (case, old, new, rules) in cases {
        assert!(rules.may_block(&docs(&old)), "{case}");
        match decide_between(&old, &new, &rules, &[]) {
            Decision::NeedsApproval { changes } => {
                assert_eq!(changes.len(), 1, "{case}: {changes:?}");
                assert!(
                    changes[0].starts_with("AWS::DynamoDB::Table Table: replaced"),
                    "{case}: {changes:?}"
                );
            }
            other => panic!("{case}: {other:?}"),
        }
    }
    // A `%TAG` directive or a `!!` tag could name a type through a tag: compared.
    for text in [
        "%TAG !e! tag:yaml.org,2002:\n---\nResources: {}\n",
        "Resources: {T: {Type: !!str AWS::SNS::Topic}}\n",
    ] {
        assert!(rules(false).may_block(&docs(text)), "{text}");
    }
}

/// A file whose rendering did not change is not parsed (the same text has the same
/// resources), while a changed file beside it still is: an unchanged file that would not even
/// parse stays clear, and the stateful change in the other file still needs approval.
#[test]
fn only_files_whose_text_changed_are_compared() {
    let unparsable = "Resources: [\n  Type: AWS::RDS::DBInstance\n";
    let two = |second: &str| {
        vec![
            ("a.yaml".to_string(), unparsable.to_string()),
            ("b.yaml".to_string(), second.to_string()),
        ]
    };
    let table_v2 = with("AttributeName: id", "AttributeName: pk");
    let decide_docs = |old: &[(String, String)], new: &[(String, String)]| {
        decide_files(old, new, &rules(false), &[])
    };
    assert_eq!(
        decide_docs(&two(TABLE_V1), &two(TABLE_V1)),
        Decision::Clear,
        "nothing changed: nothing parsed"
    );
    match decide_docs(&two(TABLE_V1), &two(&table_v2)) {
        Decision::NeedsApproval { changes } => {
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert!(
                changes[0].starts_with("AWS::DynamoDB::Table Table: replaced"),
                "{changes:?}"
            );
        }
        other => panic!("the changed file was not compared: {other:?}"),
    }
    // The unparsable file changed: no prediction, and approval needed.
    let changed = vec![
        ("a.yaml".to_string(), format!("{unparsable}# edited\n")),
        ("b.yaml".to_string(), TABLE_V1.to_string()),
    ];
    match decide_docs(&two(TABLE_V1), &changed) {
        Decision::NeedsApproval { changes } => {
            assert!(changes[0].starts_with("a.yaml: "), "{changes:?}");
        }
        other => panic!("{other:?}"),
    }
}
