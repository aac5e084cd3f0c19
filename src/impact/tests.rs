use super::*;

const OLD: &str = r"
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    DeletionPolicy: Delete
    Properties:
      KeySchema:
        - {AttributeName: id, KeyType: HASH}
      BillingMode: PAY_PER_REQUEST
  Task:
    Type: AWS::ECS::TaskDefinition
    Properties:
      Memory: '512'
      ContainerDefinitions:
        - {Name: app, Image: nginx:1}
  Service:
    Type: AWS::ECS::Service
    Properties:
      DesiredCount: 1
      TaskDefinition: !Ref Task
  Logs:
    Type: AWS::Logs::LogGroup
    DeletionPolicy: Retain
    Properties:
      RetentionInDays: 7
  Gone:
    Type: AWS::SNS::Topic
";

const NEW: &str = r#"{
  "Resources": {
    "Table": {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Delete",
      "Properties": {"KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}], "BillingMode": "PAY_PER_REQUEST"}},
    "Task": {"Type": "AWS::ECS::TaskDefinition",
      "Properties": {"Memory": "512", "ContainerDefinitions": [{"Name": "app", "Image": "nginx:2"}]}},
    "Service": {"Type": "AWS::ECS::Service",
      "Properties": {"DesiredCount": 2, "TaskDefinition": {"Ref": "Task"}}},
    "Queue": {"Type": "AWS::SQS::Queue"},
    "Custom": {"Type": "Custom::Thing", "Properties": {"A": 1}}
  }
}"#;

fn by_id(changes: &[ResourceChange]) -> BTreeMap<&str, &ResourceChange> {
    changes.iter().map(|c| (c.logical_id.as_str(), c)).collect()
}

#[test]
fn each_logical_resource_gets_its_predicted_effect() {
    let changes = compare(OLD, NEW).expect("compare");
    let got = by_id(&changes);
    // KeySchema replaces a table (AWS's documented behaviour, from the overrides).
    let table = got["Table"];
    assert_eq!(table.action, Action::Modify);
    assert_eq!(table.effect, Some(Effect::Replacement));
    assert_eq!(table.properties[0].name, "KeySchema");
    assert!(table.destroys() && table.covered);
    // ContainerDefinitions is create-only in the registry schema: a new task definition.
    assert_eq!(got["Task"].effect, Some(Effect::Replacement));
    // Short-form !Ref in YAML and {"Ref": ...} in JSON are different values as written; the
    // prediction errs towards reporting, but DesiredCount alone is an update in place.
    let service = got["Service"];
    assert!(
        service
            .properties
            .iter()
            .any(|p| p.name == "DesiredCount" && p.effect == Effect::NoInterruption),
        "{service:?}"
    );
    assert_eq!(got["Queue"].action, Action::Add);
    assert!(!got["Queue"].destroys());
    let logs = got["Logs"];
    assert_eq!(logs.action, Action::Remove);
    assert!(
        logs.retained && !logs.destroys(),
        "DeletionPolicy: Retain keeps it"
    );
    assert!(got["Gone"].destroys());
    // A type the table does not know: added here, so no guess is needed.
    assert!(!got["Custom"].covered);
}

#[test]
fn unchanged_resources_are_left_out_and_type_changes_replace() {
    let a = "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties: {DelaySeconds: 1}\n";
    assert!(compare(a, a).expect("same").is_empty());
    let b = "Resources:\n  Q:\n    Type: AWS::SNS::Topic\n    Properties: {DelaySeconds: 1}\n";
    let changes = compare(a, b).expect("type change");
    assert_eq!(changes[0].effect, Some(Effect::Replacement));
    assert_eq!(changes[0].properties[0].name, "Type");
}

#[test]
fn uncovered_types_may_be_replaced_and_interruptions_are_known() {
    let a = "Resources:\n  C:\n    Type: Custom::Thing\n    Properties: {A: 1}\n  Db:\n    Type: AWS::RDS::DBInstance\n    Properties: {DBInstanceClass: db.t3.micro, AllocatedStorage: '20'}\n";
    let b = "Resources:\n  C:\n    Type: Custom::Thing\n    Properties: {A: 2}\n  Db:\n    Type: AWS::RDS::DBInstance\n    Properties: {DBInstanceClass: db.t3.small, AllocatedStorage: '30'}\n";
    let changes = compare(a, b).expect("compare");
    let got = by_id(&changes);
    assert_eq!(got["C"].effect, Some(Effect::MayReplace));
    assert!(!got["C"].covered);
    assert_eq!(got["Db"].effect, Some(Effect::Interruption));
    assert!(!got["Db"].destroys());
}

#[test]
fn a_template_that_does_not_parse_is_named() {
    let err = compare("Resources: [", "Resources: {}").expect_err("bad yaml");
    assert!(err.to_string().contains("deployed template"), "{err}");
}

#[test]
fn the_table_covers_the_registry_and_the_stateful_types() {
    let covered: BTreeSet<&str> = covered_types().collect();
    assert!(covered.len() > 1000, "{} types", covered.len());
    for ty in DEFAULT_STATEFUL {
        assert!(covered.contains(ty), "{ty} is stateful but not covered");
    }
    let s = StatefulTypes::new(["AWS::RDS::*".to_string()]);
    assert!(s.contains("AWS::RDS::DBCluster"));
    assert!(!s.contains("AWS::RDSX::Thing"));
    assert!(StatefulTypes::default().contains("AWS::DynamoDB::Table"));
}
