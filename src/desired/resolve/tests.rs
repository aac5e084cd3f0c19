//! Version resolution and placement checks, as tables.

use std::collections::{BTreeMap, BTreeSet};

use super::super::fixtures::{catalog, svc_releases};
use super::*;
use crate::spec::ComponentRef;

fn t(major: u32, minor: Option<u32>) -> TemplateRef {
    TemplateRef {
        name: "web-svc".into(),
        major,
        minor,
    }
}

fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

#[test]
fn a_spec_follows_the_highest_minor_of_its_major_or_its_pinned_minor() {
    let catalog = catalog(&[(1, 0), (1, 2), (1, 1), (2, 0)]);
    let no_pins = BTreeMap::new();
    let templates = Templates {
        catalog: &catalog,
        repos_failed: false,
        pins: &no_pins,
        deployed: &BTreeMap::new(),
        halted: &BTreeSet::new(),
    };
    let cases = [
        ("highest minor of major 1", t(1, None), Ok(v(1, 2))),
        ("highest minor of major 2", t(2, None), Ok(v(2, 0))),
        ("exact minor pin", t(1, Some(1)), Ok(v(1, 1))),
        ("pinned minor not registered", t(1, Some(7)), Err(v(1, 7))),
        ("major not registered", t(3, None), Err(v(3, 0))),
    ];
    for (case, template, want) in cases {
        let got = templates
            .resolve("s.yaml", Some(&template), TemplateKind::Service, None)
            .map(|r| r.version)
            .map_err(|e| e.version());
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn a_resource_pin_wins_over_the_spec() {
    let catalog = catalog(&[(1, 0), (1, 1), (1, 2)]);
    let pins = BTreeMap::from([
        ("service_instance/web/a".to_string(), v(1, 1)),
        ("service_instance/web/gone".to_string(), v(1, 9)),
    ]);
    let templates = Templates {
        catalog: &catalog,
        repos_failed: false,
        pins: &pins,
        deployed: &BTreeMap::new(),
        halted: &BTreeSet::new(),
    };
    let version = |id: &str| {
        let pinned = templates.pinned(id, "web-svc");
        templates
            .resolve("s.yaml", Some(&t(1, None)), TemplateKind::Service, pinned)
            .map(|r| r.version)
            .expect("resolves")
    };
    assert_eq!(version("service_instance/web/a"), v(1, 1), "pinned");
    assert_eq!(version("service_instance/web/b"), v(1, 2), "not pinned");
    // A pin to a version that is no longer registered is ignored.
    assert_eq!(version("service_instance/web/gone"), v(1, 2), "stale pin");
}

#[test]
fn new_resources_skip_halted_and_withdrawn_minors_and_nothing_moves_down() {
    use crate::catalog::releases::ReleaseState;
    // web-svc 1.0, 1.1, 1.2 (halted) and 1.3 (its tag deleted).
    let mut catalog = catalog(&[]);
    for mut r in svc_releases(&[(1, 0), (1, 1), (1, 2), (1, 3)]) {
        if r.version == v(1, 3) {
            r.state = ReleaseState::Withdrawn;
        }
        catalog.insert(r);
    }
    let no_pins = BTreeMap::new();
    let halted = BTreeSet::from([("web-svc".to_string(), v(1, 2))]);
    let templates = Templates {
        catalog: &catalog,
        repos_failed: false,
        pins: &no_pins,
        deployed: &BTreeMap::from([
            ("on-withdrawn", ("web-svc", v(1, 3))),
            ("on-halted", ("web-svc", v(1, 2))),
            ("on-old", ("web-svc", v(1, 0))),
        ]),
        halted: &halted,
    };
    let base = templates
        .resolve("s.yaml", Some(&t(1, None)), TemplateKind::Service, None)
        .expect("resolves");
    assert_eq!(base.version, v(1, 2), "a withdrawn minor is not followed");
    let cases = [
        (
            "a new resource skips the halted minor",
            "new",
            false,
            v(1, 1),
        ),
        (
            "a resource keeps the withdrawn minor it runs",
            "on-withdrawn",
            false,
            v(1, 3),
        ),
        (
            "a resource on the halted minor keeps it",
            "on-halted",
            false,
            v(1, 2),
        ),
        (
            "an older resource is offered the minor (the rollout gate holds it)",
            "on-old",
            false,
            v(1, 2),
        ),
        ("a spec pin is obeyed", "new", true, v(1, 2)),
    ];
    for (case, id, spec_minor, want) in cases {
        let got = templates
            .for_resource(id, "web-svc", base, spec_minor)
            .version;
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn unresolved_templates_say_why() {
    let catalog = catalog(&[(1, 0)]);
    let no_pins = BTreeMap::new();
    let resolve = |repos_failed: bool, template: Option<TemplateRef>, kind: TemplateKind| {
        Templates {
            catalog: &catalog,
            repos_failed,
            pins: &no_pins,
            deployed: &BTreeMap::new(),
            halted: &BTreeSet::new(),
        }
        .resolve("s.yaml", template.as_ref(), kind, None)
        .map(|_| ())
        .expect_err("unresolved")
    };
    let other = TemplateRef {
        name: "other".into(),
        major: 1,
        minor: None,
    };
    let cases = [
        (
            resolve(false, None, TemplateKind::Service),
            "",
            v(0, 0),
            "s.yaml: template: missing; add `template: {name: <service-template>, major: N}`, or map the file (or its folder) to a template in the config: `templates = [{ path = \"s.yaml\", name = \"<service-template>\", major = N }]` in its [[spec_repos]] entry",
        ),
        (
            resolve(false, None, TemplateKind::Environment),
            "",
            v(0, 0),
            "s.yaml: template: missing; add `template: {name: <environment-template>, major: N}`, or map the file (or its folder) to a template in the config: `templates = [{ path = \"s.yaml\", name = \"<environment-template>\", major = N }]` in its [[spec_repos]] entry",
        ),
        (
            resolve(false, Some(t(2, Some(1))), TemplateKind::Service),
            "web-svc",
            v(2, 1),
            "s.yaml: template: no registered release of web-svc v2.1; tag one (e.g. web-svc/v2.0)",
        ),
        (
            resolve(true, Some(other.clone()), TemplateKind::Service),
            "other",
            v(1, 0),
            "template other v1 is not available: a template repo could not be read",
        ),
        (
            // A known template is simply missing the version, even when some repo failed.
            resolve(true, Some(t(2, None)), TemplateKind::Service),
            "web-svc",
            v(2, 0),
            "s.yaml: template: no registered release of web-svc v2; tag one (e.g. web-svc/v2.0)",
        ),
        (
            resolve(false, Some(t(1, None)), TemplateKind::Environment),
            "web-svc",
            v(1, 0),
            "s.yaml: template: web-svc is a service template",
        ),
    ];
    for (err, template, version, text) in cases {
        assert_eq!(err.to_string(), text);
        assert_eq!(err.template(), template, "{text}");
        assert_eq!(err.version(), version, "{text}");
    }
    let env = TemplateRef {
        name: "basic-env".into(),
        major: 1,
        minor: None,
    };
    assert_eq!(
        resolve(false, Some(env), TemplateKind::Service).to_string(),
        "s.yaml: template: basic-env is an environment template"
    );
}

#[test]
fn placement_rules() {
    let release = svc_releases(&[(1, 0)]).remove(0);
    let allowed = vec!["platform".to_string(), "team".to_string()];
    let targets = BTreeMap::from([
        (
            "dev",
            EnvTarget {
                template: "basic-env",
                major: 1,
                allowed_repos: None,
            },
        ),
        (
            "prod",
            EnvTarget {
                template: "basic-env",
                major: 1,
                allowed_repos: Some(&allowed),
            },
        ),
        (
            "old",
            EnvTarget {
                template: "basic-env",
                major: 2,
                allowed_repos: None,
            },
        ),
    ]);
    let instance = |environment: &str, inputs: Value, component: bool| InstanceSpec {
        name: "i".into(),
        environment: environment.into(),
        inputs: inputs.into(),
        component: component.then(|| ComponentRef {
            name: "c".into(),
            path: "components/c".into(),
        }),
    };
    let ok = serde_json::json!({});
    let cases = [
        (
            "any repo may use an open environment",
            "team",
            instance("dev", ok.clone(), false),
            Ok(()),
        ),
        (
            "an allowed repo may use a restricted one",
            "team",
            instance("prod", ok.clone(), false),
            Ok(()),
        ),
        (
            "another repo may not",
            "intruder",
            instance("prod", ok.clone(), false),
            Err(
                "s.yaml: instances[0].environment: environment \"prod\" only accepts services from platform, team (its allowed_service_repos); repo \"intruder\" is not allowed: pick another environment, or ask the platform team to add the repo there",
            ),
        ),
        (
            "an environment with no valid declaration",
            "team",
            instance("nowhere", ok.clone(), false),
            Err(
                "s.yaml: instances[0].environment: environment \"nowhere\" has no valid declaration in a platform repo (it is missing, declared twice, or invalid: see the environment's own error)",
            ),
        ),
        (
            "an incompatible environment major",
            "team",
            instance("old", ok.clone(), false),
            Err(
                "s.yaml: instances[0].environment: \"old\" runs basic-env:2, which web-svc v1 is not compatible with (compatible: basic-env:1)",
            ),
        ),
        (
            "a component on a template without component support",
            "team",
            instance("dev", ok.clone(), true),
            Err(
                "s.yaml: instances[0].component: web-svc v1 does not accept components (add DIRECTLY_DEFINED to supported_component_sources)",
            ),
        ),
    ];
    for (case, repo, inst, want) in cases {
        let p = Placement {
            path: "s.yaml",
            repo,
            index: 0,
            instance: &inst,
            template: "web-svc",
            release: &release,
        };
        let got = check_instance(&p, &targets)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(got, want.map_err(ToString::to_string), "{case}");
    }
    // Inputs are validated and defaulted; a bad one names its field.
    let inst = instance("dev", ok, false);
    let p = Placement {
        path: "s.yaml",
        repo: "team",
        index: 0,
        instance: &inst,
        template: "web-svc",
        release: &release,
    };
    assert_eq!(check_instance(&p, &targets).expect("valid")["port"], 80);
    let inst = instance("dev", serde_json::json!({"port": "eighty"}), false);
    let p = Placement {
        instance: &inst,
        ..p
    };
    let err = check_instance(&p, &targets).expect_err("invalid input");
    assert!(matches!(err, PlacementError::Inputs { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("s.yaml: instances[0].spec.port"),
        "{err}"
    );
}
