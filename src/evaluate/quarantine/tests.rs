//! Table tests of the quarantine rule and the rollback targets.

use super::*;
use crate::config::quarantine::RollbackMode;
use crate::model::{DeploymentAction, Placement, ResourceKind};
use crate::plan::Action;
use crate::state::NewDeployment;

fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

fn record(id: &str, env: &str, version: Version, status: ResourceStatus) -> ResourceRecord {
    ResourceRecord {
        id: id.into(),
        kind: ResourceKind::ServiceInstance,
        repo: "r".into(),
        environment: Some(env.into()),
        template: "web".into(),
        version,
        input_hash: String::new(),
        rendered_hash: String::new(),
        outputs: crate::state::Outputs::default(),
        status,
        spec_commit: None,
        updated_at: String::new(),
        placement: Placement::default(),
    }
}

fn failure(id: &str, env: &str, to: Version, reason: &str, retryable: bool) -> DeploymentRecord {
    DeploymentRecord {
        id: 1,
        deployment: NewDeployment {
            resource_id: id.into(),
            kind: ResourceKind::ServiceInstance,
            repo: "r".into(),
            environment: Some(env.into()),
            action: DeploymentAction::Update,
            reason: Some(reason.into()),
            template: "web".into(),
            from_version: Some(v(1, 0)),
            to_version: to,
            input_hash: String::new(),
            rendered_hash: String::new(),
            spec_commit: None,
            placement: Placement::default(),
        },
        status: DeploymentStatus::Failed,
        error: Some(format!("stack of {id} ended in UPDATE_ROLLBACK_COMPLETE")),
        retryable,
        started_at: String::new(),
        finished_at: None,
    }
}

fn rules(after: Option<u32>, share: Option<u8>) -> Quarantine {
    Quarantine {
        after,
        share_percent: share,
        rollback: RollbackMode::Offer,
    }
}

/// (case, records, failures, halted, rules, quarantined?)
type Case<'a> = (
    &'a str,
    Vec<ResourceRecord>,
    Vec<DeploymentRecord>,
    &'a BTreeMap<(String, Version), String>,
    Quarantine,
    bool,
);

#[test]
fn the_rule_counts_permanent_failures_of_the_first_stage() {
    use ResourceStatus::{Deployed, Failed};
    let stage_of: BTreeMap<String, String> = [
        ("dev1".to_string(), "dev".to_string()),
        ("dev2".to_string(), "dev".to_string()),
        ("prod1".to_string(), "prod".to_string()),
    ]
    .into();
    let stages = vec!["dev".to_string(), "prod".to_string()];
    // Four dev resources on the major, one prod.
    let fleet = |a: ResourceStatus, b: ResourceStatus, a_v: Version| {
        vec![
            record("a", "dev1", a_v, a),
            record("b", "dev1", v(1, 0), b),
            record("c", "dev2", v(1, 1), Deployed),
            record("d", "dev2", v(1, 0), Deployed),
            record("p", "prod1", v(1, 0), Deployed),
        ]
    };
    let minor = "minor_upgrade";
    let none = BTreeMap::new();
    let halted: BTreeMap<(String, Version), String> =
        [(("web".to_string(), v(1, 1)), "paused".to_string())].into();
    let cases: Vec<Case> = vec![
        (
            "one failure, the default",
            fleet(Failed, Deployed, v(1, 0)),
            vec![failure("a", "dev1", v(1, 1), minor, false)],
            &none,
            Quarantine::default(),
            true,
        ),
        (
            "one of two needed",
            fleet(Failed, Deployed, v(1, 0)),
            vec![failure("a", "dev1", v(1, 1), minor, false)],
            &none,
            rules(Some(2), None),
            false,
        ),
        (
            "two of two needed",
            fleet(Failed, Failed, v(1, 0)),
            vec![
                failure("a", "dev1", v(1, 1), minor, false),
                failure("b", "dev1", v(1, 1), minor, false),
            ],
            &none,
            rules(Some(2), None),
            true,
        ),
        (
            "a retryable failure does not count",
            fleet(Failed, Deployed, v(1, 0)),
            vec![failure("a", "dev1", v(1, 1), minor, true)],
            &none,
            Quarantine::default(),
            false,
        ),
        (
            "a spec change's failure does not count",
            fleet(Failed, Deployed, v(1, 0)),
            vec![failure("a", "dev1", v(1, 1), "spec_change", false)],
            &none,
            Quarantine::default(),
            false,
        ),
        (
            "a release change counts",
            fleet(Failed, Deployed, v(1, 0)),
            vec![failure("a", "dev1", v(1, 1), "release_changed", false)],
            &none,
            Quarantine::default(),
            true,
        ),
        (
            "already halted: nothing new",
            fleet(Failed, Deployed, v(1, 0)),
            vec![failure("a", "dev1", v(1, 1), minor, false)],
            &halted,
            Quarantine::default(),
            false,
        ),
        (
            "share: 1 of 4 dev resources is 25%",
            fleet(Failed, Deployed, v(1, 0)),
            vec![failure("a", "dev1", v(1, 1), minor, false)],
            &none,
            rules(None, Some(25)),
            true,
        ),
        (
            "share: 1 of 4 is under 50%",
            fleet(Failed, Deployed, v(1, 0)),
            vec![failure("a", "dev1", v(1, 1), minor, false)],
            &none,
            rules(None, Some(50)),
            false,
        ),
        (
            "share: 2 of 4 is 50%",
            fleet(Failed, Failed, v(1, 0)),
            vec![
                failure("a", "dev1", v(1, 1), minor, false),
                failure("b", "dev1", v(1, 1), minor, false),
            ],
            &none,
            rules(None, Some(50)),
            true,
        ),
        (
            "a later stage fails: at once",
            fleet(Deployed, Deployed, v(1, 1)),
            vec![failure("p", "prod1", v(1, 1), minor, false)],
            &none,
            rules(Some(3), None),
            true,
        ),
    ];
    for (case, records, failures, halted, rules, want) in cases {
        let got = pending(&records, &failures, halted, &stage_of, &stages, &rules);
        assert_eq!(!got.is_empty(), want, "{case}: {got:?}");
        if let Some(q) = got.first() {
            assert_eq!((q.template.as_str(), q.version), ("web", v(1, 1)), "{case}");
            assert!(
                q.reason.contains("UPDATE_ROLLBACK_COMPLETE"),
                "{case}: {}",
                q.reason
            );
        }
    }
}

#[test]
fn the_reason_names_the_stage_and_the_count() {
    let records = vec![
        record("a", "dev1", v(1, 0), ResourceStatus::Failed),
        record("b", "dev1", v(1, 0), ResourceStatus::Failed),
    ];
    let failures = vec![
        failure("a", "dev1", v(1, 1), "minor_upgrade", false),
        failure("b", "dev1", v(1, 1), "minor_upgrade", false),
    ];
    let stage_of = [("dev1".to_string(), "dev".to_string())].into();
    let got = pending(
        &records,
        &failures,
        &BTreeMap::new(),
        &stage_of,
        &["dev".to_string()],
        &rules(Some(2), None),
    );
    assert_eq!(got.len(), 1);
    assert!(
        got[0]
            .reason
            .starts_with("2 of 2 resources of stage dev failed; a failed: stack of a"),
        "{}",
        got[0].reason
    );
}

#[test]
fn rollbacks_go_to_the_previous_usable_minor() {
    use ResourceStatus::{Deployed, Failed};
    let usable: BTreeSet<(String, Version)> = [v(1, 0), v(1, 1), v(1, 2), v(1, 3), v(2, 0)]
        .into_iter()
        .map(|x| ("web".to_string(), x))
        .collect();
    let quarantined: BTreeSet<(String, Version)> =
        [("web".to_string(), v(1, 3)), ("web".to_string(), v(1, 2))].into();
    let records = vec![
        record("on-1.3", "dev1", v(1, 3), Deployed),
        record("on-1.2", "dev1", v(1, 2), Deployed),
        record("on-1.1", "dev1", v(1, 1), Deployed),
        record("failed-to-1.3", "dev1", v(1, 1), Failed),
        record("failed-from-1.0", "dev1", v(1, 0), Failed),
        record("on-2.0", "dev1", v(2, 0), Deployed),
    ];
    let failures = vec![
        failure("failed-to-1.3", "dev1", v(1, 3), "minor_upgrade", false),
        // 1.1 is the previous usable minor below 1.3, not the 1.0 it runs: left alone.
        failure("failed-from-1.0", "dev1", v(1, 3), "minor_upgrade", false),
        failure("on-1.1", "dev1", v(1, 1), "spec_change", false),
    ];
    let got = rollbacks(&quarantined, &usable, &records, &failures);
    let want: BTreeMap<String, Rollback> = [
        ("on-1.3", v(1, 3), v(1, 1)),
        ("on-1.2", v(1, 2), v(1, 1)),
        ("failed-to-1.3", v(1, 3), v(1, 1)),
    ]
    .into_iter()
    .map(|(id, from, to)| (id.to_string(), Rollback { from, to }))
    .collect();
    assert_eq!(got, want);
    // Nothing usable below: no rollback.
    let only_new: BTreeSet<(String, Version)> = [("web".to_string(), v(1, 3))].into();
    assert!(rollbacks(&quarantined, &only_new, &records, &failures).is_empty());
}

#[test]
fn a_redeploy_onto_the_version_it_runs_is_labelled_a_rollback_unless_pinned_elsewhere() {
    let action = |id: &str| Action {
        id: id.into(),
        kind: ResourceKind::ServiceInstance,
        template: "web".into(),
        version: v(1, 0),
        deployed: Some(v(1, 0)),
        action: ActionKind::NoOp,
    };
    let mut plan = Plan {
        actions: vec![action("a"), action("b"), action("c")],
        proposals: Vec::new(),
    };
    let back = Rollback {
        from: v(1, 1),
        to: v(1, 0),
    };
    let rollbacks: BTreeMap<String, Rollback> =
        [("a".to_string(), back), ("b".to_string(), back)].into();
    // b is pinned by an operator to another version: the pin wins.
    let pinned: BTreeMap<String, Version> =
        [("a".to_string(), v(1, 0)), ("b".to_string(), v(0, 9))].into();
    label_redeploys(&mut plan, &rollbacks, &pinned);
    let kinds: Vec<&ActionKind> = plan.actions.iter().map(|a| &a.action).collect();
    assert_eq!(
        kinds,
        [
            &ActionKind::Update {
                reason: UpdateReason::Rollback {
                    from: v(1, 1),
                    to: v(1, 0)
                }
            },
            &ActionKind::NoOp,
            &ActionKind::NoOp
        ]
    );
}
