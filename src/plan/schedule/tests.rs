//! Table tests of every scheduling rule: rollout (halt, window, stage, soak) and start
//! (in flight, waiting, retry, backoff, budget, delete order, environment in use).

use super::*;

const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

fn action(id: &str, kind: ResourceKind, action: ActionKind, version: Version) -> Action {
    Action {
        id: id.into(),
        kind,
        template: "svc".into(),
        version,
        deployed: Some(v(1, 0)),
        action,
    }
}

fn minor(id: &str) -> Action {
    action(
        id,
        ResourceKind::ServiceInstance,
        ActionKind::Update {
            reason: UpdateReason::MinorUpgrade {
                from: v(1, 0),
                to: v(1, 1),
            },
        },
        v(1, 1),
    )
}

fn spec_change(id: &str) -> Action {
    action(
        id,
        ResourceKind::ServiceInstance,
        ActionKind::Update {
            reason: UpdateReason::SpecChange,
        },
        v(1, 0),
    )
}

fn delete(id: &str, kind: ResourceKind) -> Action {
    action(id, kind, ActionKind::Delete, v(1, 0))
}

fn unit(id: &str, stage: &str) -> RolloutUnit {
    RolloutUnit {
        id: id.into(),
        template: "svc".into(),
        version: v(1, 1),
        stage: Some(stage.into()),
    }
}

fn record(version: Version, deployed: bool, finished: u64) -> RecordFacts {
    RecordFacts {
        version,
        deployed,
        updated_at: Some(at(finished)),
        environment: Some("dev".into()),
        kind: ResourceKind::ServiceInstance,
    }
}

fn rules(soak: u64, closed: &[&str]) -> RolloutRules {
    RolloutRules {
        stages: vec!["dev".into(), "prod".into()],
        soak: Duration::from_secs(soak),
        closed_windows: closed.iter().map(|s| (*s).to_string()).collect(),
    }
}

/// The rollout gate on `prod-a` moving to 1.1, with `dev-a` (stage dev) in the given state.
#[test]
fn rollout_rules() {
    struct Case {
        name: &'static str,
        dev: Option<RecordFacts>,
        halted: bool,
        closed: &'static [&'static str],
        soak: u64,
        now: u64,
        want: Option<HoldReason>,
    }
    let cases = [
        Case {
            name: "earlier stage done and soaked: goes",
            dev: Some(record(v(1, 1), true, T0)),
            halted: false,
            closed: &[],
            soak: 60,
            now: T0 + 61,
            want: None,
        },
        Case {
            name: "earlier stage still soaking",
            dev: Some(record(v(1, 1), true, T0)),
            halted: false,
            closed: &[],
            soak: 60,
            now: T0 + 20,
            want: Some(HoldReason::Soak { remaining_secs: 40 }),
        },
        Case {
            name: "earlier stage not yet on the version",
            dev: Some(record(v(1, 0), true, T0)),
            halted: false,
            closed: &[],
            soak: 0,
            now: T0,
            want: Some(HoldReason::EarlierStage {
                waiting_on: "dev-a".into(),
            }),
        },
        Case {
            name: "earlier stage on the version but failed",
            dev: Some(record(v(1, 1), false, T0)),
            halted: false,
            closed: &[],
            soak: 0,
            now: T0,
            want: Some(HoldReason::EarlierStage {
                waiting_on: "dev-a".into(),
            }),
        },
        Case {
            name: "earlier stage never deployed",
            dev: None,
            halted: false,
            closed: &[],
            soak: 0,
            now: T0,
            want: Some(HoldReason::EarlierStage {
                waiting_on: "dev-a".into(),
            }),
        },
        Case {
            name: "halted rollout wins over everything",
            dev: Some(record(v(1, 1), true, T0)),
            halted: true,
            closed: &["prod"],
            soak: 0,
            now: T0,
            want: Some(HoldReason::RolloutHalted {
                reason: "rollout of svc 1.1 is halted: dev-a failed".into(),
            }),
        },
        Case {
            name: "closed window of its own stage",
            dev: Some(record(v(1, 1), true, T0)),
            halted: false,
            closed: &["prod"],
            soak: 0,
            now: T0 + 100,
            want: Some(HoldReason::Window {
                stage: "prod".into(),
            }),
        },
        Case {
            name: "a closed window of another stage does not matter",
            dev: Some(record(v(1, 1), true, T0)),
            halted: false,
            closed: &["dev"],
            soak: 0,
            now: T0 + 100,
            want: None,
        },
    ];
    for c in cases {
        let plan = Plan {
            actions: vec![minor("prod-a")],
            proposals: vec![],
        };
        let units = [unit("dev-a", "dev"), unit("prod-a", "prod")];
        let mut records = BTreeMap::new();
        if let Some(r) = c.dev {
            records.insert("dev-a".to_string(), r);
        }
        let mut halted = BTreeMap::new();
        if c.halted {
            halted.insert(("svc".to_string(), v(1, 1)), "dev-a failed".to_string());
        }
        let holds = rollout_holds(
            &plan,
            &units,
            &records,
            &halted,
            &rules(c.soak, c.closed),
            at(c.now),
        );
        assert_eq!(holds.get("prod-a"), c.want.as_ref(), "{}", c.name);
    }
}

#[test]
fn the_first_stage_waits_for_nothing_and_unknown_stages_go_last() {
    let plan = Plan {
        actions: vec![minor("dev-a"), minor("qa-a")],
        proposals: vec![],
    };
    let units = [
        unit("dev-a", "dev"),
        unit("prod-a", "prod"),
        unit("qa-a", "qa"),
    ];
    let records = BTreeMap::from([("prod-a".to_string(), record(v(1, 0), true, T0))]);
    let holds = rollout_holds(
        &plan,
        &units,
        &records,
        &BTreeMap::new(),
        &rules(0, &[]),
        at(T0),
    );
    assert_eq!(holds.get("dev-a"), None);
    // "qa" is not a configured stage: it ranks after prod, and prod is not on 1.1 yet.
    assert_eq!(
        holds.get("qa-a"),
        Some(&HoldReason::EarlierStage {
            waiting_on: "dev-a".into()
        })
    );
}

#[test]
fn only_minor_upgrades_are_gated() {
    let plan = Plan {
        actions: vec![spec_change("prod-a")],
        proposals: vec![],
    };
    let units = [unit("dev-a", "dev"), unit("prod-a", "prod")];
    let halted = BTreeMap::from([(("svc".to_string(), v(1, 1)), "x".to_string())]);
    let holds = rollout_holds(
        &plan,
        &units,
        &BTreeMap::new(),
        &halted,
        &rules(0, &["prod"]),
        at(T0),
    );
    assert!(holds.is_empty());
}

fn release_changed(id: &str) -> Action {
    let mut a = action(
        id,
        ResourceKind::ServiceInstance,
        ActionKind::Update {
            reason: UpdateReason::ReleaseChanged { version: v(1, 1) },
        },
        v(1, 1),
    );
    a.deployed = Some(v(1, 1));
    a
}

/// A release change (an accepted moved tag of 1.1, which every resource already runs) is
/// gated like a minor upgrade: `prod-a` waits until `dev-a` redeployed it and soaked.
#[test]
fn release_changes_are_gated_like_minor_upgrades() {
    struct Case {
        name: &'static str,
        dev_pending: bool,
        dev_finished: u64,
        halted: bool,
        closed: &'static [&'static str],
        now: u64,
        want: Option<HoldReason>,
    }
    let cases = [
        Case {
            name: "dev has not redeployed the changed release",
            dev_pending: true,
            dev_finished: T0,
            halted: false,
            closed: &[],
            now: T0 + 1000,
            want: Some(HoldReason::EarlierStage {
                waiting_on: "dev-a".into(),
            }),
        },
        Case {
            name: "dev redeployed it and is soaking",
            dev_pending: false,
            dev_finished: T0,
            halted: false,
            closed: &[],
            now: T0 + 20,
            want: Some(HoldReason::Soak { remaining_secs: 40 }),
        },
        Case {
            name: "dev redeployed it and soaked: goes",
            dev_pending: false,
            dev_finished: T0,
            halted: false,
            closed: &[],
            now: T0 + 61,
            want: None,
        },
        Case {
            name: "halted",
            dev_pending: false,
            dev_finished: T0,
            halted: true,
            closed: &[],
            now: T0 + 61,
            want: Some(HoldReason::RolloutHalted {
                reason: "rollout of svc 1.1 is halted: dev-a failed".into(),
            }),
        },
        Case {
            name: "window closed",
            dev_pending: false,
            dev_finished: T0,
            halted: false,
            closed: &["prod"],
            now: T0 + 61,
            want: Some(HoldReason::Window {
                stage: "prod".into(),
            }),
        },
    ];
    for c in cases {
        let mut actions = vec![release_changed("prod-a")];
        if c.dev_pending {
            actions.push(release_changed("dev-a"));
        }
        let plan = Plan {
            actions,
            proposals: vec![],
        };
        let units = [unit("dev-a", "dev"), unit("prod-a", "prod")];
        let records = BTreeMap::from([
            ("dev-a".to_string(), record(v(1, 1), true, c.dev_finished)),
            ("prod-a".to_string(), record(v(1, 1), true, T0 - 1000)),
        ]);
        let mut halted = BTreeMap::new();
        if c.halted {
            halted.insert(("svc".to_string(), v(1, 1)), "dev-a failed".to_string());
        }
        let holds = rollout_holds(
            &plan,
            &units,
            &records,
            &halted,
            &rules(60, c.closed),
            at(c.now),
        );
        assert_eq!(holds.get("prod-a"), c.want.as_ref(), "{}", c.name);
        if c.dev_pending {
            assert_eq!(holds.get("dev-a"), None, "{}: dev goes first", c.name);
        }
    }
    // A held release change cannot be pinned to other content: it keeps its hold.
    let plan = Plan {
        actions: vec![release_changed("x")],
        proposals: vec![],
    };
    let mut input = ScheduleInput::default();
    let soak = HoldReason::Soak { remaining_secs: 9 };
    input.rollout_holds.insert("x".into(), soak.clone());
    assert_eq!(
        schedule(&plan, &input).verdict("x"),
        Some(&Verdict::Hold { reason: soak })
    );
}

fn last(failed_permanently: bool, delete: bool, input: &str) -> LastAttempt {
    LastAttempt {
        failed_permanently,
        delete,
        version: v(1, 0),
        input_hash: input.into(),
        rendered_hash: "r".into(),
        conflict: None,
    }
}

fn wanted(input: &str) -> Wanted {
    Wanted {
        input_hash: input.into(),
        rendered_hash: "r".into(),
    }
}

/// One change `a` (an update of `x`), under each start rule.
#[test]
fn start_rules() {
    struct Case {
        name: &'static str,
        edit: fn(&mut ScheduleInput),
        want: Verdict,
    }
    let hold = |reason| Verdict::Hold { reason };
    let cases = [
        Case {
            name: "nothing in the way",
            edit: |_| {},
            want: Verdict::Start,
        },
        Case {
            name: "in flight",
            edit: |i| {
                i.running.insert("x".into());
            },
            want: hold(HoldReason::InFlight),
        },
        Case {
            name: "waiting for notify",
            edit: |i| {
                i.waiting.insert("x".into());
            },
            want: hold(HoldReason::WaitingForNotify),
        },
        Case {
            name: "backing off",
            edit: |i| {
                i.backoff.insert("x".into(), Duration::from_millis(2500));
            },
            want: hold(HoldReason::BackingOff { remaining_secs: 2 }),
        },
        Case {
            name: "failed permanently, nothing changed",
            edit: |i| {
                i.last.insert("x".into(), last(true, false, "in"));
            },
            want: hold(HoldReason::FailedUntilChange),
        },
        Case {
            name: "failed permanently, inputs changed since",
            edit: |i| {
                i.last.insert("x".into(), last(true, false, "old"));
            },
            want: Verdict::Start,
        },
        Case {
            name: "failed transiently and the backoff is over",
            edit: |i| {
                i.last.insert("x".into(), last(false, false, "in"));
                i.backoff.insert("x".into(), Duration::ZERO);
            },
            want: Verdict::Start,
        },
        Case {
            name: "a rollout hold does not hold a spec change",
            edit: |i| {
                i.rollout_holds.insert(
                    "x".into(),
                    HoldReason::Window {
                        stage: "prod".into(),
                    },
                );
            },
            want: Verdict::Start,
        },
    ];
    for c in cases {
        let plan = Plan {
            actions: vec![spec_change("x")],
            proposals: vec![],
        };
        let mut input = ScheduleInput {
            deletion_budget: 5,
            ..ScheduleInput::default()
        };
        input.wanted.insert("x".into(), wanted("in"));
        (c.edit)(&mut input);
        let s = schedule(&plan, &input);
        assert_eq!(s.verdict("x"), Some(&c.want), "{}", c.name);
    }
}

#[test]
fn a_minor_upgrade_that_could_not_be_pinned_keeps_its_rollout_hold() {
    let plan = Plan {
        actions: vec![minor("x")],
        proposals: vec![],
    };
    let mut input = ScheduleInput::default();
    let soak = HoldReason::Soak { remaining_secs: 9 };
    input.rollout_holds.insert("x".into(), soak.clone());
    assert_eq!(
        schedule(&plan, &input).verdict("x"),
        Some(&Verdict::Hold { reason: soak })
    );
}

fn env_record(env: &str, kind: ResourceKind) -> RecordFacts {
    RecordFacts {
        version: v(1, 0),
        deployed: true,
        updated_at: None,
        environment: Some(env.into()),
        kind,
    }
}

#[test]
fn deletion_rules() {
    use ResourceKind::{Environment, Pipeline, ServiceInstance};
    struct Case {
        name: &'static str,
        actions: Vec<Action>,
        running: &'static [&'static str],
        budget: usize,
        want: Vec<(&'static str, Verdict)>,
    }
    let hold = |reason| Verdict::Hold { reason };
    let cases = vec![
        Case {
            name: "within budget, one kind: all start",
            actions: vec![delete("i1", ServiceInstance), delete("i2", ServiceInstance)],
            running: &[],
            budget: 2,
            want: vec![("i1", Verdict::Start), ("i2", Verdict::Start)],
        },
        Case {
            name: "over budget: none start",
            actions: vec![delete("i1", ServiceInstance), delete("i2", ServiceInstance)],
            running: &[],
            budget: 1,
            want: vec![
                (
                    "i1",
                    hold(HoldReason::DeletionBudget {
                        deletes: 2,
                        budget: 1,
                    }),
                ),
                (
                    "i2",
                    hold(HoldReason::DeletionBudget {
                        deletes: 2,
                        budget: 1,
                    }),
                ),
            ],
        },
        Case {
            name: "highest kind first: pipelines before instances",
            actions: vec![delete("i1", ServiceInstance), delete("p1", Pipeline)],
            running: &[],
            budget: 5,
            want: vec![
                ("p1", Verdict::Start),
                ("i1", hold(HoldReason::DeleteOrder)),
            ],
        },
        Case {
            name: "deletes wait while an apply starts",
            actions: vec![spec_change("x"), delete("i1", ServiceInstance)],
            running: &[],
            budget: 5,
            want: vec![("x", Verdict::Start), ("i1", hold(HoldReason::DeleteOrder))],
        },
        Case {
            name: "deletes wait while anything runs",
            actions: vec![delete("i1", ServiceInstance)],
            running: &["other"],
            budget: 5,
            want: vec![("i1", hold(HoldReason::DeleteOrder))],
        },
        Case {
            name: "an environment waits while something lives in it",
            actions: vec![delete("environment/dev", Environment)],
            running: &[],
            budget: 5,
            want: vec![("environment/dev", hold(HoldReason::EnvironmentInUse))],
        },
        Case {
            name: "an empty environment goes",
            actions: vec![delete("environment/prod", Environment)],
            running: &[],
            budget: 5,
            want: vec![("environment/prod", Verdict::Start)],
        },
    ];
    for c in cases {
        let plan = Plan {
            actions: c.actions,
            proposals: vec![],
        };
        let input = ScheduleInput {
            running: c.running.iter().map(|s| (*s).to_string()).collect(),
            deletion_budget: c.budget,
            records: BTreeMap::from([
                (
                    "environment/dev".to_string(),
                    env_record("dev", Environment),
                ),
                (
                    "environment/prod".to_string(),
                    env_record("prod", Environment),
                ),
                ("i0".to_string(), env_record("dev", ServiceInstance)),
            ]),
            ..ScheduleInput::default()
        };
        let s = schedule(&plan, &input);
        for (id, want) in &c.want {
            assert_eq!(s.verdict(id), Some(want), "{}: {id}", c.name);
        }
        // Deletes come after creates and updates.
        let first_delete = s
            .decisions
            .iter()
            .position(|d| d.action.action == ActionKind::Delete);
        if let Some(i) = first_delete {
            assert!(
                s.decisions[i..]
                    .iter()
                    .all(|d| d.action.action == ActionKind::Delete),
                "{}",
                c.name
            );
        }
    }
}

#[test]
fn a_failed_delete_is_not_retried_until_something_changes() {
    let plan = Plan {
        actions: vec![delete("i1", ResourceKind::ServiceInstance)],
        proposals: vec![],
    };
    let mut input = ScheduleInput {
        deletion_budget: 5,
        ..ScheduleInput::default()
    };
    input.last.insert("i1".into(), last(true, true, "in"));
    assert_eq!(
        schedule(&plan, &input).verdict("i1"),
        Some(&Verdict::Hold {
            reason: HoldReason::FailedUntilChange
        })
    );
    // The last attempt was a failed update, not a delete: the delete goes.
    input.last.insert("i1".into(), last(true, false, "in"));
    assert_eq!(schedule(&plan, &input).verdict("i1"), Some(&Verdict::Start));
}

#[test]
fn a_relocation_counts_against_the_deletion_budget() {
    let relocate = |id: &str| {
        action(
            id,
            ResourceKind::ServiceInstance,
            ActionKind::Update {
                reason: UpdateReason::Relocate,
            },
            v(1, 0),
        )
    };
    let plan = Plan {
        actions: vec![
            relocate("a"),
            relocate("b"),
            delete("c", ResourceKind::ServiceInstance),
        ],
        proposals: vec![],
    };
    let over = ScheduleInput {
        deletion_budget: 2,
        ..ScheduleInput::default()
    };
    let held = Verdict::Hold {
        reason: HoldReason::DeletionBudget {
            deletes: 3,
            budget: 2,
        },
    };
    let s = schedule(&plan, &over);
    for id in ["a", "b", "c"] {
        assert_eq!(s.verdict(id), Some(&held), "{id}");
    }
    // Within the budget, relocations start; the delete waits for them (delete order).
    let within = ScheduleInput {
        deletion_budget: 3,
        ..ScheduleInput::default()
    };
    let s = schedule(&plan, &within);
    assert_eq!(s.verdict("a"), Some(&Verdict::Start));
    assert_eq!(
        s.verdict("c"),
        Some(&Verdict::Hold {
            reason: HoldReason::DeleteOrder
        })
    );
}

#[test]
fn a_conflict_is_held_as_a_conflict_until_something_changes() {
    let plan = Plan {
        actions: vec![spec_change("x")],
        proposals: vec![],
    };
    let mut input = ScheduleInput::default();
    input.wanted.insert("x".into(), wanted("in"));
    let mut attempt = last(true, false, "in");
    attempt.conflict = Some("stack s is not protond's x".into());
    input.last.insert("x".into(), attempt);
    assert_eq!(
        schedule(&plan, &input).verdict("x"),
        Some(&Verdict::Hold {
            reason: HoldReason::Conflict {
                message: "stack s is not protond's x".into()
            }
        })
    );
    // A change to the spec is a new attempt (which meets the gate again).
    input.wanted.insert("x".into(), wanted("new"));
    assert_eq!(schedule(&plan, &input).verdict("x"), Some(&Verdict::Start));
}
