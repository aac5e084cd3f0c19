use std::collections::BTreeMap;

use super::*;
use crate::provision::cloudformation::{LiveStack, StackInfo};

const TEMPLATE: &str = "Parameters:\n  Size: {Type: Number, Default: 3}\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties: {DelaySeconds: !Ref Size}\n";

fn tags(resource: &str, installation: Option<&str>, template: &str) -> BTreeMap<String, String> {
    let mut t: BTreeMap<String, String> = [
        (TAG_RESOURCE, resource),
        (TAG_TEMPLATE, template),
        ("protond:version", "1.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(i) = installation {
        t.insert(TAG_INSTALLATION.into(), i.into());
    }
    t
}

fn read(status: &str, template: &str, params: &[(&str, &str)]) -> DriftRead {
    DriftRead {
        live: Some(LiveStack {
            info: StackInfo {
                name: "protond-environment-dev".into(),
                id: Some("arn:stack/1".into()),
                status: status.into(),
                outputs: BTreeMap::new(),
                tags: tags("environment/dev", Some("inst"), "vpc"),
            },
            parameters: params
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        }),
        template: Some(template.into()),
        resources: ResourceDrift::NotAvailable("not implemented".into()),
    }
}

fn expected(rendered: Option<&str>) -> Expected<'_> {
    Expected {
        resource_id: "environment/dev",
        installation: "inst",
        template: "vpc",
        status: ResourceStatus::Deployed,
        stack_id_recorded: true,
        rendered,
    }
}

fn kinds(f: &[Finding]) -> Vec<DriftKind> {
    f.iter().map(|(k, _)| *k).collect()
}

#[test]
fn classification_table() {
    let reordered = "Resources:\n  Q:\n    Properties:\n      DelaySeconds: {Ref: Size}\n    Type: AWS::SQS::Queue\nParameters:\n  Size: {Default: '3', Type: Number}\n";
    let changed = TEMPLATE.replace("SQS::Queue", "SNS::Topic");
    let mut gone = read("CREATE_COMPLETE", TEMPLATE, &[]);
    gone.live = None;
    let mut retagged = read("UPDATE_COMPLETE", TEMPLATE, &[]);
    if let Some(l) = retagged.live.as_mut() {
        l.info.tags = tags("environment/prod", Some("inst"), "other");
    }
    let mut drifted = read("UPDATE_COMPLETE", TEMPLATE, &[]);
    drifted.resources = ResourceDrift::Drifted(vec!["Q: MODIFIED".into()]);
    let cases: Vec<(&str, Expected<'_>, DriftRead, Vec<DriftKind>)> = vec![
        (
            "in sync",
            expected(Some(TEMPLATE)),
            read("CREATE_COMPLETE", TEMPLATE, &[("Size", "3")]),
            vec![],
        ),
        (
            "formatting does not count",
            expected(Some(reordered)),
            read("UPDATE_COMPLETE", TEMPLATE, &[]),
            vec![],
        ),
        (
            "gone",
            expected(Some(TEMPLATE)),
            gone,
            vec![DriftKind::Missing],
        ),
        (
            "status",
            expected(None),
            read("UPDATE_ROLLBACK_COMPLETE", TEMPLATE, &[]),
            vec![DriftKind::Status],
        ),
        (
            "in progress out of band",
            expected(None),
            read("UPDATE_IN_PROGRESS", TEMPLATE, &[]),
            vec![DriftKind::Status],
        ),
        (
            "a failed record expects no status",
            Expected {
                status: ResourceStatus::Failed,
                ..expected(None)
            },
            read("UPDATE_ROLLBACK_COMPLETE", TEMPLATE, &[]),
            vec![],
        ),
        (
            "template",
            expected(Some(TEMPLATE)),
            read("UPDATE_COMPLETE", &changed, &[]),
            vec![DriftKind::Template],
        ),
        (
            "template not compared without the recorded rendering",
            expected(None),
            read("UPDATE_COMPLETE", &changed, &[]),
            vec![],
        ),
        (
            "parameters",
            expected(None),
            read("UPDATE_COMPLETE", TEMPLATE, &[("Size", "5")]),
            vec![DriftKind::Parameters],
        ),
        ("tags", expected(None), retagged, vec![DriftKind::Tags]),
        (
            "resources",
            expected(None),
            drifted,
            vec![DriftKind::Resources],
        ),
        (
            "several",
            expected(Some(TEMPLATE)),
            read("UPDATE_IN_PROGRESS", &changed, &[("Size", "4")]),
            vec![
                DriftKind::Status,
                DriftKind::Template,
                DriftKind::Parameters,
            ],
        ),
    ];
    for (name, e, r, want) in cases {
        assert_eq!(kinds(&classify(&e, &r)), want, "{name}");
    }
}

#[test]
fn details_say_what_differs() {
    let changed = TEMPLATE.replace("SQS::Queue", "SNS::Topic");
    let f = classify(
        &expected(Some(TEMPLATE)),
        &read("UPDATE_COMPLETE", &changed, &[]),
    );
    assert_eq!(
        f[0].1,
        "1 difference(s): ~ Resources.Q.Type: live \"AWS::SNS::Topic\" -> rendered \"AWS::SQS::Queue\""
    );
    let f = classify(
        &expected(None),
        &read("UPDATE_COMPLETE", TEMPLATE, &[("Size", "5")]),
    );
    assert!(
        f[0].1.contains("Parameters.Size (value): live \"5\""),
        "{f:?}"
    );
    // A NoEcho value is never shown.
    let f = classify(
        &expected(None),
        &read("UPDATE_COMPLETE", TEMPLATE, &[("Size", "****")]),
    );
    assert!(f.is_empty(), "{f:?}");
    let mut no_install = read("UPDATE_COMPLETE", TEMPLATE, &[]);
    if let Some(l) = no_install.live.as_mut() {
        l.info.tags.remove(TAG_INSTALLATION);
    }
    // Without the installation tag, a stack found by its recorded StackId is still ours.
    assert!(classify(&expected(None), &no_install).is_empty());
    let e = Expected {
        stack_id_recorded: false,
        ..expected(None)
    };
    let f = classify(&e, &no_install);
    assert_eq!(kinds(&f), vec![DriftKind::Tags]);
    assert!(f[0].1.contains("protond:installation=none"), "{f:?}");
    let unparsable = read("UPDATE_COMPLETE", "a: [", &[]);
    let f = classify(&expected(Some(TEMPLATE)), &unparsable);
    assert_eq!(kinds(&f), vec![DriftKind::Template]);
    assert!(f[0].1.contains("neither YAML nor JSON"), "{f:?}");
}

#[test]
fn heal_asks_for_a_redeploy_unless_only_resources_drifted() {
    let missing = vec![(DriftKind::Missing, String::new())];
    let resources = vec![(DriftKind::Resources, String::new())];
    let ok = ResourceStatus::Deployed;
    assert!(wants_heal(DriftPolicy::Heal, ok, &missing));
    assert!(!wants_heal(DriftPolicy::Report, ok, &missing));
    assert!(!wants_heal(DriftPolicy::Heal, ok, &resources));
    assert!(!wants_heal(DriftPolicy::Heal, ok, &[]));
    assert!(
        !wants_heal(DriftPolicy::Heal, ResourceStatus::Failed, &missing),
        "a failed heal is not retried every interval"
    );
    let r = read("UPDATE_COMPLETE", TEMPLATE, &[]);
    assert_eq!(detection_unavailable(&r), Some("not implemented"));
}

#[test]
fn a_check_is_due_when_asked_or_the_interval_passed() {
    let m = Duration::from_mins(1);
    let cases = [
        (false, Some(m), None, true),
        (false, Some(m), Some(Duration::from_secs(59)), false),
        (false, Some(m), Some(m), true),
        (false, None, None, false),
        (true, None, Some(Duration::ZERO), true),
    ];
    for (requested, interval, since, want) in cases {
        assert_eq!(
            due(requested, interval, since),
            want,
            "{requested} {interval:?} {since:?}"
        );
    }
    let rt = Runtime::default();
    let t0 = Instant::now();
    assert!(!rt.begin(Some(m), t0), "not before enabled");
    rt.enable();
    assert!(rt.begin(Some(m), t0), "the first check is due at once");
    assert!(!rt.begin(None, t0), "one at a time");
    rt.finish();
    assert!(!rt.begin(Some(m), t0 + Duration::from_secs(1)));
    rt.request();
    assert!(rt.begin(Some(m), t0 + Duration::from_secs(2)), "asked for");
    assert!(rt.set_unavailable("no"));
    assert!(!rt.set_unavailable("no"));
    assert_eq!(rt.unavailable().as_deref(), Some("no"));
}

#[test]
fn the_policy_is_the_environments_then_the_repos_then_the_default() {
    use crate::config::{Config, RawConfig};
    let compile = |text: &str| {
        let raw: RawConfig = toml::from_str(text).expect("toml");
        Config::compile(raw, "proton.toml", std::path::Path::new("/srv"))
    };
    let c = compile(
        "[drift]\ninterval = \"0\"\npolicy = \"heal\"\n[drift.environments]\nprod = \"report\"\n[drift.repos]\npayments = \"report\"\n",
    )
    .expect("compiles");
    assert_eq!(c.drift.interval, None, "0 turns the periodic check off");
    assert_eq!(
        c.drift.policy_for(Some("prod"), "other"),
        DriftPolicy::Report
    );
    assert_eq!(
        c.drift.policy_for(Some("dev"), "payments"),
        DriftPolicy::Report
    );
    assert_eq!(c.drift.policy_for(Some("dev"), "other"), DriftPolicy::Heal);
    let d = compile("").expect("compiles");
    assert_eq!(d.drift.interval, Some(Duration::from_mins(10)));
    assert_eq!(d.drift.policy_for(None, "x"), DriftPolicy::Report);
    let errors = compile("[drift]\ninterval = \"soon\"\n[drift.repos]\npayments = \"fix\"\n")
        .expect_err("refused");
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, vec!["drift.interval", "drift.repos.payments"]);
    assert!(
        errors[1]
            .message
            .contains("use \"report\" (default) or \"heal\""),
        "{errors:?}"
    );
}
