//! The prediction on in-memory fleets: which upgrades it holds, and the checks that keep a
//! wrong prediction from changing anything.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::desired::SpecRepoState;
use crate::desired::fixtures::{catalog, record, repo, svc};
use crate::plan::ResourceKind;
use crate::plan::schedule::HoldReason;

fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

fn env(name: &str) -> String {
    format!(
        "proton: EnvironmentSpec\nname: {name}\ntemplate: {{name: basic-env, major: 1}}\nstage: {name}\nspec: {{}}\n"
    )
}

/// Two stages (dev, prod); services `a` (dev and prod), `b` (prod only), `c` (dev only).
fn fleet() -> (Snapshot, Vec<ResourceRecord>) {
    let platform: SpecRepoState = repo(
        "platform",
        true,
        &[("dev.yaml", &env("dev")), ("prod.yaml", &env("prod"))],
    );
    let team = repo(
        "team",
        false,
        &[
            (
                "a.yaml",
                &svc("a", 1, None, &[("a-dev", "dev"), ("a-prod", "prod")]),
            ),
            ("b.yaml", &svc("b", 1, None, &[("b-prod", "prod")])),
            ("c.yaml", &svc("c", 1, None, &[("c-dev", "dev")])),
        ],
    );
    let snapshot = Snapshot {
        catalog: catalog(&[(1, 0), (1, 1)]),
        spec_repos: vec![platform, team],
        ..Snapshot::default()
    };
    let mut records = vec![
        record("environment/dev", "platform"),
        record("environment/prod", "platform"),
    ];
    for (id, env) in [
        ("service_instance/a/a-dev", "dev"),
        ("service_instance/a/a-prod", "prod"),
        ("service_instance/b/b-prod", "prod"),
        ("service_instance/c/c-dev", "dev"),
    ] {
        let mut r = record(id, "team");
        r.template = "web-svc".into();
        r.environment = Some(env.into());
        records.push(r);
    }
    for r in &mut records[..2] {
        r.template = "basic-env".into();
    }
    (snapshot, records)
}

fn facts_of(records: &[ResourceRecord]) -> BTreeMap<String, RecordFacts> {
    records
        .iter()
        .map(|r| {
            let f = RecordFacts {
                version: r.version,
                deployed: true,
                updated_at: Some(SystemTime::UNIX_EPOCH),
                environment: r.environment.clone(),
                kind: r.kind,
            };
            (r.id.clone(), f)
        })
        .collect()
}

fn predicted(
    snapshot: &Snapshot,
    records: &[ResourceRecord],
    rollbacks: &BTreeMap<String, Version>,
    halted: &BTreeMap<(String, Version), String>,
) -> Vec<String> {
    let record_facts = facts_of(records);
    let stages = BTreeMap::from([
        ("dev".to_string(), "dev".to_string()),
        ("prod".to_string(), "prod".to_string()),
    ]);
    let rules = RolloutRules {
        stages: vec!["dev".into(), "prod".into()],
        soak: Duration::from_mins(1),
        closed_windows: std::collections::BTreeSet::new(),
    };
    let scope = crate::ha::shard::Scope::all();
    let declared = crate::desired::Declared::new(snapshot, records);
    let p = predict(&Inputs {
        snapshot,
        declared: &declared,
        records,
        record_facts: &record_facts,
        rollbacks,
        halted,
        rules: &rules,
        stages: &stages,
        scope: &scope,
        now: SystemTime::UNIX_EPOCH + Duration::from_hours(1),
    });
    for m in p.values() {
        assert_eq!((m.from, m.to), (v(1, 0), v(1, 1)));
    }
    p.into_keys().collect()
}

#[test]
fn the_later_stages_upgrades_are_predicted_held_and_the_first_stages_are_not() {
    let (snapshot, records) = fleet();
    let none = BTreeMap::new();
    assert_eq!(
        predicted(&snapshot, &records, &none, &BTreeMap::new()),
        ["service_instance/a/a-prod", "service_instance/b/b-prod"]
    );
    // A rolled-back resource is rendered on its pin: never predicted.
    let rollbacks = BTreeMap::from([("service_instance/b/b-prod".to_string(), v(1, 0))]);
    assert_eq!(
        predicted(&snapshot, &records, &rollbacks, &BTreeMap::new()),
        ["service_instance/a/a-prod"]
    );
    // A halted minor holds every stage.
    let halted = BTreeMap::from([(("web-svc".to_string(), v(1, 1)), "bad".to_string())]);
    assert_eq!(
        predicted(&snapshot, &records, &none, &halted).len(),
        4,
        "every instance is held on a halted minor"
    );
    // Dev done on 1.1 an hour ago, past the soak: nothing is held.
    let mut done = records.clone();
    for r in done.iter_mut().filter(|r| r.id.ends_with("-dev")) {
        r.version = v(1, 1);
    }
    assert!(predicted(&snapshot, &done, &none, &BTreeMap::new()).is_empty());
    // Nothing lags: no prediction at all.
    let mut current = records;
    for r in current.iter_mut().filter(|r| r.template == "web-svc") {
        r.version = v(1, 1);
    }
    assert!(predicted(&snapshot, &current, &none, &BTreeMap::new()).is_empty());
}

fn action(id: &str, action: ActionKind, version: Version) -> Action {
    Action {
        id: id.into(),
        kind: ResourceKind::ServiceInstance,
        template: "web-svc".into(),
        version,
        deployed: Some(v(1, 0)),
        action,
    }
}

#[test]
fn predicted_upgrades_replace_ready_actions_only_and_are_put_back() {
    let spec = ActionKind::Update {
        reason: UpdateReason::SpecChange,
    };
    let original = Plan {
        actions: vec![
            action("noop", ActionKind::NoOp, v(1, 0)),
            action("spec", spec, v(1, 0)),
            action(
                "blocked",
                ActionKind::Blocked {
                    on: vec!["x".into()],
                },
                v(1, 0),
            ),
            action("other", ActionKind::NoOp, v(1, 0)),
        ],
        proposals: Vec::new(),
    };
    let m = Move {
        from: v(1, 0),
        to: v(1, 1),
    };
    let predicted: Predicted = ["noop", "spec", "blocked"]
        .iter()
        .map(|id| ((*id).to_string(), m))
        .collect();
    let mut plan = original.clone();
    let replaced = as_upgrades(&mut plan, &predicted);
    let upgrade = ActionKind::Update {
        reason: UpdateReason::MinorUpgrade {
            from: v(1, 0),
            to: v(1, 1),
        },
    };
    let got: Vec<(&str, &ActionKind, Version)> = plan
        .actions
        .iter()
        .map(|a| (a.id.as_str(), &a.action, a.version))
        .collect();
    assert_eq!(got[0], ("noop", &upgrade, v(1, 1)));
    assert_eq!(got[1], ("spec", &upgrade, v(1, 1)));
    assert_eq!(
        got[2].1, &original.actions[2].action,
        "a blocked row is not ready"
    );
    assert_eq!(got[3].1, &ActionKind::NoOp);
    // The blocked one was not replaced: never confirmed, whatever the gate holds.
    let held = |ids: &[&str]| -> BTreeMap<String, HoldReason> {
        ids.iter()
            .map(|id| {
                let reason = HoldReason::EarlierStage {
                    waiting_on: "x".into(),
                };
                ((*id).to_string(), reason)
            })
            .collect()
    };
    assert!(!confirmed(
        &predicted,
        &replaced,
        &held(&["noop", "spec", "blocked"])
    ));
    put_back(&mut plan, replaced);
    assert_eq!(plan, original);

    // Every prediction replaced, but the gate lets one through: not confirmed.
    let two: Predicted = predicted
        .into_iter()
        .filter(|(id, _)| id != "blocked")
        .collect();
    let mut plan = original.clone();
    let replaced = as_upgrades(&mut plan, &two);
    assert!(!confirmed(&two, &replaced, &held(&["noop"])));
    assert!(confirmed(&two, &replaced, &held(&["noop", "spec"])));
    let mut units = vec![RolloutUnit {
        id: "spec".into(),
        template: "web-svc".into(),
        version: v(1, 0),
        stage: None,
    }];
    as_upgraded_units(&mut units, &two);
    assert_eq!(units[0].version, v(1, 1));
}
