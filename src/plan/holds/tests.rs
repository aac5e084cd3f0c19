//! Table tests of the holds and freezes: which target covers what, expiry, `all`, the most
//! specific hold shown, and `--until` parsing.

use std::time::Duration;

use super::*;
use crate::plan::{Action, ResourceKind, Version};

const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

fn hold(target: &str, all: bool, until: u64) -> Hold {
    Hold {
        target: HoldTarget::parse(target).expect("target"),
        all,
        until: at(until),
        reason: format!("hold {target}"),
        by: "alice".into(),
        set_at: String::new(),
    }
}

fn freeze(stages: &[&str], all: bool) -> ActiveFreeze {
    ActiveFreeze {
        reason: "year end".into(),
        stages: stages.iter().map(|s| (*s).to_string()).collect(),
        all,
        until: at(T0 + 100),
    }
}

fn subjects() -> BTreeMap<String, Subject> {
    let s = |t: &str, e: &str, st: &str| Subject {
        template: Some(t.into()),
        environment: Some(e.into()),
        stage: Some(st.into()),
    };
    BTreeMap::from([
        (
            "service_instance/web/dev".to_string(),
            s("web", "dev1", "dev"),
        ),
        (
            "service_instance/web/prod".to_string(),
            s("web", "prod1", "prod"),
        ),
        (
            "service_instance/api/dev".to_string(),
            s("api", "dev1", "dev"),
        ),
        ("environment/dev1".to_string(), s("env", "dev1", "dev")),
    ])
}

fn action(id: &str, kind: ActionKind) -> Action {
    Action {
        id: id.into(),
        kind: ResourceKind::ServiceInstance,
        template: "web".into(),
        version: v(1, 1),
        deployed: Some(v(1, 0)),
        action: kind,
    }
}

fn minor() -> ActionKind {
    ActionKind::Update {
        reason: UpdateReason::MinorUpgrade {
            from: v(1, 0),
            to: v(1, 1),
        },
    }
}

fn spec() -> ActionKind {
    ActionKind::Update {
        reason: UpdateReason::SpecChange,
    }
}

/// (holds, freezes, resource, `only_all`) -> the label and target/reason of the hold, if any.
#[test]
#[allow(clippy::items_after_statements)]
fn holds_cover_their_targets_until_they_end() {
    let subjects = subjects();
    let web_dev = "service_instance/web/dev";
    type Case = (
        &'static str,
        Vec<Hold>,
        Vec<ActiveFreeze>,
        &'static str,
        bool,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "resource hold",
            vec![hold(web_dev, false, T0 + 10)],
            vec![],
            web_dev,
            false,
            Some(web_dev),
        ),
        (
            "another resource",
            vec![hold(web_dev, false, T0 + 10)],
            vec![],
            "service_instance/web/prod",
            false,
            None,
        ),
        (
            "expired",
            vec![hold(web_dev, false, T0)],
            vec![],
            web_dev,
            false,
            None,
        ),
        (
            "environment",
            vec![hold("environment:dev1", false, T0 + 10)],
            vec![],
            "service_instance/api/dev",
            false,
            Some("environment:dev1"),
        ),
        (
            "environment covers itself",
            vec![hold("environment:dev1", false, T0 + 10)],
            vec![],
            "environment/dev1",
            false,
            Some("environment:dev1"),
        ),
        (
            "stage",
            vec![hold("stage:prod", false, T0 + 10)],
            vec![],
            "service_instance/web/prod",
            false,
            Some("stage:prod"),
        ),
        (
            "stage elsewhere",
            vec![hold("stage:prod", false, T0 + 10)],
            vec![],
            web_dev,
            false,
            None,
        ),
        (
            "template",
            vec![hold("template:web", false, T0 + 10)],
            vec![],
            web_dev,
            false,
            Some("template:web"),
        ),
        (
            "template elsewhere",
            vec![hold("template:web", false, T0 + 10)],
            vec![],
            "service_instance/api/dev",
            false,
            None,
        ),
        (
            "most specific wins",
            vec![
                hold("stage:dev", false, T0 + 99),
                hold(web_dev, false, T0 + 10),
            ],
            vec![],
            web_dev,
            false,
            Some(web_dev),
        ),
        (
            "minor hold is not an all hold",
            vec![hold(web_dev, false, T0 + 10)],
            vec![],
            web_dev,
            true,
            None,
        ),
        (
            "all hold",
            vec![hold(web_dev, true, T0 + 10)],
            vec![],
            web_dev,
            true,
            Some(web_dev),
        ),
        (
            "freeze of the stage",
            vec![],
            vec![freeze(&["dev"], false)],
            web_dev,
            false,
            Some("freeze"),
        ),
        (
            "freeze of another stage",
            vec![],
            vec![freeze(&["prod"], false)],
            web_dev,
            false,
            None,
        ),
        (
            "freeze of every stage",
            vec![],
            vec![freeze(&[], false)],
            "unknown/resource",
            false,
            Some("freeze"),
        ),
        (
            "minor freeze is not an all freeze",
            vec![],
            vec![freeze(&["dev"], false)],
            web_dev,
            true,
            None,
        ),
        (
            "all freeze",
            vec![],
            vec![freeze(&["dev"], true)],
            web_dev,
            true,
            Some("freeze"),
        ),
        (
            "hold before freeze",
            vec![hold(web_dev, false, T0 + 10)],
            vec![freeze(&["dev"], false)],
            web_dev,
            false,
            Some(web_dev),
        ),
    ];
    for (name, holds, freezes, id, only_all, want) in cases {
        let r = Restrictions {
            holds,
            freezes,
            subjects: subjects.clone(),
            now: at(T0),
        };
        let got = r.hold_for(id, only_all).map(|h| match h {
            HoldReason::Held {
                target,
                by,
                until,
                reason,
            } => {
                assert_eq!(by, "alice", "{name}");
                assert!(until.ends_with('Z'), "{name}: {until}");
                assert_eq!(reason, format!("hold {target}"), "{name}");
                target
            }
            HoldReason::Freeze { reason, .. } => {
                assert_eq!(reason, "year end", "{name}");
                "freeze".to_string()
            }
            other => panic!("{name}: {other:?}"),
        });
        assert_eq!(got.as_deref(), want, "{name}");
    }
}

#[test]
fn version_holds_stop_version_moves_and_restrict_stops_the_rest_under_all() {
    let subjects = subjects();
    let web_dev = "service_instance/web/dev";
    let plan = Plan {
        actions: vec![
            action(web_dev, minor()),
            action("service_instance/web/prod", minor()),
            action("service_instance/api/dev", spec()),
        ],
        proposals: Vec::new(),
    };
    let holds = vec![hold("stage:dev", false, T0 + 10)];
    let r = Restrictions {
        holds,
        freezes: Vec::new(),
        subjects,
        now: at(T0),
    };
    let got = r.version_holds(&plan);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        vec![web_dev],
        "only the dev minor: {got:?}"
    );
    // Restrict leaves spec changes alone without `all`.
    let mut schedule = Schedule {
        decisions: plan
            .actions
            .iter()
            .map(|a| crate::plan::schedule::Decision {
                action: a.clone(),
                verdict: Verdict::Start,
            })
            .collect(),
    };
    r.restrict(&mut schedule);
    assert_eq!(schedule.starts().count(), 3);
    let all = vec![hold("stage:dev", true, T0 + 10)];
    let r = Restrictions { holds: all, ..r };
    r.restrict(&mut schedule);
    let started: Vec<&str> = schedule.starts().map(|a| a.id.as_str()).collect();
    assert_eq!(started, vec!["service_instance/web/prod"]);
    // Once it ends, nothing is held.
    let r = Restrictions {
        now: at(T0 + 10),
        ..r
    };
    assert!(r.version_holds(&plan).is_empty());
}

#[test]
fn targets_parse_in_their_forms_and_unknown_forms_name_the_fix() {
    for (text, kind) in [
        ("service_instance/web/dev", "resource"),
        ("environment/dev", "resource"),
        ("environment:dev", "environment"),
        ("stage:prod", "stage"),
        ("template:web-svc", "template"),
    ] {
        let t = HoldTarget::parse(text).expect(text);
        assert_eq!(t.kind(), kind, "{text}");
        assert_eq!(t.to_string(), text);
        assert_eq!(HoldTarget::from_parts(t.kind(), t.name()), Some(t));
    }
    for bad in [
        "env:dev",
        "stage:",
        "web",
        "service_instance/web",
        "stage:a/b",
    ] {
        let e = HoldTarget::parse(bad).expect_err(bad);
        assert!(e.contains("environment:<name>"), "{bad}: {e}");
    }
}

#[test]
fn until_reads_rfc3339_and_durations_and_refuses_the_past() {
    let now = at(T0);
    assert_eq!(parse_until("2h", now), Ok(at(T0 + 7200)));
    assert_eq!(parse_until("3d", now), Ok(at(T0 + 3 * 86_400)));
    assert_eq!(parse_until("5s", now), Ok(at(T0 + 5)));
    // 1_800_000_000 is 2027-01-15T08:00:00Z.
    assert_eq!(parse_until("2027-01-15T09:00:00Z", now), Ok(at(T0 + 3600)));
    assert_eq!(
        parse_until("2027-01-15T10:00:00+01:00", now),
        Ok(at(T0 + 3600))
    );
    let past = parse_until("2027-01-15T07:00:00Z", now).expect_err("past");
    assert!(past.contains("has passed"), "{past}");
    let bad = parse_until("tomorrow", now).expect_err("bad");
    assert!(bad.contains("RFC 3339") && bad.contains("2h"), "{bad}");
}
