use super::*;
use crate::model::{ResourceStatus, TagState};

fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

fn release(
    template: &str,
    kind: &str,
    version: Version,
    registered: bool,
) -> TemplateVersionRecord {
    TemplateVersionRecord {
        template: template.into(),
        version,
        kind: kind.into(),
        repo: "templates".into(),
        tag: format!("{template}/v{version}"),
        commit: "c".into(),
        registered,
        reason: None,
        release_notes: None,
        tag_state: TagState::Current,
        tag_commit: None,
    }
}

fn on(id: &str, kind: ResourceKind, template: &str, version: Version) -> ResourceRecord {
    ResourceRecord {
        id: id.into(),
        kind,
        repo: "specs".into(),
        environment: None,
        template: template.into(),
        version,
        input_hash: "i".into(),
        rendered_hash: "r".into(),
        outputs: crate::state::Outputs::default(),
        status: ResourceStatus::Deployed,
        spec_commit: None,
        updated_at: String::new(),
        placement: crate::model::Placement::default(),
    }
}

fn proposal(template: &str, path: &str, state: ProposalState, at: &str) -> ProposalRecord {
    ProposalRecord {
        repo: "specs".into(),
        path: path.into(),
        template: template.into(),
        from_major: 1,
        to_major: 2,
        branch: "b".into(),
        forge: "github".into(),
        number: Some(7),
        url: Some("https://forge.test/pr/7".into()),
        state,
        head: None,
        content: String::new(),
        edited: false,
        created_at: at.into(),
        updated_at: at.into(),
    }
}

#[test]
fn behind_counts_newer_registered_minors_of_the_major_and_majors() {
    let registered = [v(1, 0), v(1, 1), v(1, 3), v(2, 0), v(3, 1)];
    let cases = [
        (
            v(1, 0),
            (2, 2),
            "two newer minors of v1 (1.1, 1.3); v3 is two majors on",
        ),
        (v(1, 1), (1, 2), "only 1.3 is newer"),
        (
            v(1, 2),
            (1, 2),
            "an unregistered version counts the registered newer ones",
        ),
        (v(1, 3), (0, 2), "newest minor of its major"),
        (v(2, 0), (0, 1), "newest minor of v2"),
        (v(3, 1), (0, 0), "the newest version"),
        (
            v(4, 0),
            (0, 0),
            "newer than anything registered is not behind",
        ),
    ];
    for (run, want, why) in cases {
        assert_eq!(behind(run, &registered), want, "{run}: {why}");
    }
    assert_eq!(behind(v(1, 0), &[]), (0, 0), "nothing registered");
}

fn fleet() -> Inputs {
    Inputs {
        resources: vec![
            on("environment/dev", ResourceKind::Environment, "env", v(1, 1)),
            on(
                "environment/stage",
                ResourceKind::Environment,
                "env",
                v(1, 1),
            ),
            on(
                "environment/prod",
                ResourceKind::Environment,
                "env",
                v(1, 0),
            ),
            on(
                "service_instance/api/a",
                ResourceKind::ServiceInstance,
                "svc",
                v(1, 0),
            ),
            on(
                "service_instance/api/b",
                ResourceKind::ServiceInstance,
                "svc",
                v(2, 0),
            ),
            on("pipeline/api", ResourceKind::Pipeline, "svc", v(1, 0)),
            on(
                "component/api/a",
                ResourceKind::Component,
                "component:c",
                v(0, 0),
            ),
        ],
        template_versions: vec![
            release("env", "environment", v(1, 0), true),
            release("env", "environment", v(1, 1), true),
            release("env", "environment", v(1, 2), false),
            release("svc", "service", v(1, 0), true),
            release("svc", "service", v(1, 1), true),
            release("svc", "service", v(1, 2), true),
            release("svc", "service", v(2, 0), true),
        ],
        rollouts: vec![
            RolloutDecision {
                template: "env".into(),
                version: v(1, 1),
                status: "halted".into(),
                reason: Some("failed in prod".into()),
                updated_at: "2026-01-02T00:00:00Z".into(),
            },
            RolloutDecision {
                template: "svc".into(),
                version: v(1, 2),
                status: "resumed".into(),
                reason: None,
                updated_at: "2026-01-01T00:00:00Z".into(),
            },
            RolloutDecision {
                template: "svc".into(),
                version: v(1, 1),
                status: "quarantined".into(),
                reason: None,
                updated_at: "2026-01-03T00:00:00Z".into(),
            },
        ],
        proposals: vec![
            proposal("svc", "b.yaml", ProposalState::Open, "2026-01-05T00:00:00Z"),
            proposal("svc", "a.yaml", ProposalState::Open, "2026-01-04T00:00:00Z"),
            proposal(
                "svc",
                "c.yaml",
                ProposalState::Merged,
                "2026-01-01T00:00:00Z",
            ),
        ],
        holds: Vec::new(),
        pins: Vec::new(),
    }
}

#[test]
fn the_report_counts_each_version_and_how_far_it_is_behind() {
    let report = build(&fleet());
    let names: Vec<(&str, &str)> = report
        .templates
        .iter()
        .map(|t| (t.template.as_str(), t.kind.as_str()))
        .collect();
    assert_eq!(
        names,
        [("env", "environment"), ("svc", "service")],
        "components left out"
    );

    let env = &report.templates[0];
    assert_eq!(env.resources, 3);
    assert_eq!(
        env.newest,
        Some(v(1, 1)),
        "a rejected 1.2 is not the newest"
    );
    let groups: Vec<(Version, usize, u32, u32)> = env
        .versions
        .iter()
        .map(|g| (g.version, g.resources, g.minors_behind, g.majors_behind))
        .collect();
    assert_eq!(
        groups,
        [(v(1, 1), 2, 0, 0), (v(1, 0), 1, 1, 0)],
        "newest first"
    );
    let oldest = env.oldest.as_ref().expect("oldest");
    assert_eq!((oldest.version, oldest.count), (v(1, 0), 1));
    assert_eq!(oldest.resources, ["environment/prod"]);
    assert_eq!((env.max_minors_behind, env.max_majors_behind), (1, 0));
    assert_eq!(env.pull_requests_waiting, 0);

    let svc = &report.templates[1];
    assert_eq!(
        svc.resources, 3,
        "instances and the pipeline run the service template"
    );
    assert_eq!((svc.newest, svc.newest_major), (Some(v(2, 0)), Some(2)));
    let groups: Vec<(Version, usize, Option<Version>, u32, u32)> = svc
        .versions
        .iter()
        .map(|g| {
            (
                g.version,
                g.resources,
                g.newest_minor,
                g.minors_behind,
                g.majors_behind,
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            (v(2, 0), 1, Some(v(2, 0)), 0, 0),
            (v(1, 0), 2, Some(v(1, 2)), 2, 1)
        ]
    );
    assert_eq!(
        svc.oldest.as_ref().map(|o| o.resources.clone()),
        Some(vec![
            "pipeline/api".to_string(),
            "service_instance/api/a".to_string()
        ])
    );
    assert_eq!((svc.max_minors_behind, svc.max_majors_behind), (2, 1));
    assert_eq!(svc.pull_requests_waiting, 2, "the merged one does not wait");
}

#[test]
fn open_pull_requests_and_stopped_rollouts_are_listed() {
    let report = build(&fleet());
    let prs: Vec<&str> = report
        .pull_requests
        .iter()
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(prs, ["a.yaml", "b.yaml"], "open ones, oldest first");
    let stopped: Vec<(&str, Version, &str, usize)> = report
        .stopped_rollouts
        .iter()
        .map(|r| {
            (
                r.template.as_str(),
                r.version,
                r.status.as_str(),
                r.resources_on_it,
            )
        })
        .collect();
    assert_eq!(
        stopped,
        [
            ("env", v(1, 1), "halted", 2),
            ("svc", v(1, 1), "quarantined", 0)
        ],
        "a resumed rollout proceeds"
    );
}

#[test]
fn versions_behind_is_the_most_any_resource_is_behind() {
    let gauge = versions_behind(&build(&fleet()));
    let want = BTreeMap::from([
        (("env".to_string(), "major"), 0),
        (("env".to_string(), "minor"), 1),
        (("svc".to_string(), "major"), 1),
        (("svc".to_string(), "minor"), 2),
    ]);
    assert_eq!(gauge, want);
    assert!(versions_behind(&build(&Inputs::default())).is_empty());
}

#[test]
fn the_oldest_lists_a_bounded_number_of_resources_and_the_whole_count() {
    let mut inputs = Inputs::default();
    for i in 0..(OLDEST_LISTED + 5) {
        inputs.resources.push(on(
            &format!("environment/e{i:04}"),
            ResourceKind::Environment,
            "env",
            v(1, 0),
        ));
    }
    let report = build(&inputs);
    let oldest = report.templates[0].oldest.as_ref().expect("oldest");
    assert_eq!(
        (oldest.count, oldest.resources.len()),
        (OLDEST_LISTED + 5, OLDEST_LISTED)
    );
    assert_eq!(report.templates[0].newest, None, "nothing registered");
    assert!(table(&report).contains("env"), "{}", table(&report));
}

#[test]
fn the_table_and_json_show_the_groups_and_sections() {
    let report = build(&fleet());
    let text = table(&report);
    for want in [
        "TEMPLATE",
        "env       environment  1.1",
        "1.0",
        "Oldest versions running:\n  env v1.0: environment/prod",
        "Pull requests waiting:",
        "Rollouts stopped:\n  env v1.1: HALTED since 2026-01-02T00:00:00Z (resources on it: 2): failed in prod",
        "svc v1.1: QUARANTINED",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["templates"][0]["versions"][1]["version"], "1.0");
    assert_eq!(json["templates"][1]["newest"], "2.0");
    assert_eq!(json["templates"][1]["versions"][1]["newest_minor"], "1.2");
    assert_eq!(json["holds"], serde_json::json!([]));
}
