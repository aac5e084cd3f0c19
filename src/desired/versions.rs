//! Which release each resource would run, found without rendering anything: what the rollout
//! gate needs to know before the rendering (`evaluate::staged`). It goes through the same
//! ownership rules and release resolution as [`super::compute_held`] with the same pins and
//! halts, so each version it gives is the one that rendering's row of the resource carries.
//! Declarations that do not resolve (and customer-managed environments, never rendered) are
//! left out: the caller treats a resource missing here as unknown, never as settled.

use std::collections::{BTreeMap, BTreeSet};

use super::ownership::{EnvVerdict, SvcVerdict};
use super::{Declared, environment, environment_id, instance_id, pipeline_id, service};
use crate::plan::Version;

/// One resource and the release it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Resource id.
    pub id: String,
    /// Template name.
    pub template: String,
    /// The version its rendering would run.
    pub version: Version,
    /// Its environment (an environment's own name).
    pub environment: Option<String>,
}

/// The release of every environment, service instance and pipeline whose declaration
/// deploys and resolves, as [`super::compute_held`] with `pins` and `halted` would render
/// them. Pure and cheap: no template is rendered and no input checked.
#[must_use]
pub fn resolve_versions(
    declared: &Declared<'_>,
    pins: &BTreeMap<String, Version>,
    halted: &BTreeSet<(String, Version)>,
) -> Vec<Resolved> {
    let templates = declared.templates(pins, halted);
    let owners = &declared.owners;
    let mut out = Vec::new();
    for (name, verdict) in &owners.environments {
        let EnvVerdict::Deploy(d) = verdict else {
            continue;
        };
        let (None, Some(t), Ok(release)) = (
            &d.spec.customer_managed,
            &d.spec.template,
            environment::release(&templates, name, d),
        ) else {
            continue;
        };
        out.push(Resolved {
            id: environment_id(name),
            template: t.name.clone(),
            version: release.version,
            environment: Some((*name).to_string()),
        });
    }
    for (name, decision) in &owners.services {
        let SvcVerdict::Deploy(d) = &decision.verdict else {
            continue;
        };
        let (Some(t), Ok(releases)) = (&d.spec.template, service::releases(&templates, name, d))
        else {
            continue;
        };
        // `releases` gives each instance's, then the pipeline's when the spec declares one.
        for (inst, release) in d.spec.instances.iter().zip(&releases) {
            out.push(Resolved {
                id: instance_id(name, &inst.name),
                template: t.name.clone(),
                version: release.version,
                environment: Some(inst.environment.clone()),
            });
        }
        // A pipeline row exists only when the template has one too.
        if let Some(release) = releases.get(d.spec.instances.len())
            && release.bundle.pipeline.is_some()
        {
            out.push(Resolved {
                id: pipeline_id(name),
                template: t.name.clone(),
                version: release.version,
                environment: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::desired::fixtures::{catalog, env, record, repo, svc};
    use crate::desired::{DesiredSet, Snapshot, compute_held};

    fn versions_of(set: &DesiredSet) -> BTreeMap<String, (String, Version, Option<String>)> {
        set.resources
            .iter()
            .map(|r| {
                let d = &r.desired;
                (
                    d.id.clone(),
                    (d.template.clone(), d.version, r.environment.clone()),
                )
            })
            .collect()
    }

    fn v(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    /// Every version the pass gives is the one the rendering's row carries, with a pin, a
    /// halted minor, a spec pinning a minor, a deployed newer minor, an unparsable file and an
    /// instance in an undeclared environment; rows the pass leaves out are invalid ones only.
    #[test]
    fn each_version_is_the_one_the_rendering_gives() {
        let snapshot = Snapshot {
            catalog: catalog(&[(1, 0), (1, 1), (1, 2)]),
            spec_repos: vec![
                repo(
                    "platform",
                    true,
                    &[("dev.yaml", &env("dev")), ("prod.yaml", &env("prod"))],
                ),
                repo(
                    "team",
                    false,
                    &[
                        (
                            "web.yaml",
                            &svc("web", 1, None, &[("web-dev", "dev"), ("web-prod", "prod")]),
                        ),
                        ("api.yaml", &svc("api", 1, Some(1), &[("api-dev", "dev")])),
                        ("old.yaml", &svc("old", 1, None, &[("old-dev", "dev")])),
                        ("lost.yaml", &svc("lost", 1, None, &[("lost-x", "nowhere")])),
                        ("bad.yaml", "proton: ServiceSpec\nname: [\n"),
                    ],
                ),
            ],
            ..Snapshot::default()
        };
        let mut deployed = vec![
            record("environment/dev", "platform"),
            record("environment/prod", "platform"),
            record("service_instance/web/web-dev", "team"),
            record("service_instance/web/web-prod", "team"),
            record("service_instance/old/old-dev", "team"),
        ];
        for r in &mut deployed[2..] {
            r.template = "web-svc".into();
        }
        // Deployed on a newer minor than the spec follows once 1.2 is halted: it stays there.
        deployed[4].version = v(1, 2);
        let pins = BTreeMap::from([("service_instance/web/web-prod".to_string(), v(1, 0))]);
        let halted = BTreeSet::from([("web-svc".to_string(), v(1, 2))]);
        for (pins, halted) in [
            (BTreeMap::new(), BTreeSet::new()),
            (pins.clone(), BTreeSet::new()),
            (pins, halted),
        ] {
            let set = compute_held(&snapshot, &deployed, "123", &pins, &halted);
            let rendered = versions_of(&set);
            let resolved = resolve_versions(&Declared::new(&snapshot, &deployed), &pins, &halted);
            assert!(resolved.len() >= 8, "{resolved:?}");
            for r in &resolved {
                let row = rendered
                    .get(&r.id)
                    .unwrap_or_else(|| panic!("{} not rendered", r.id));
                assert_eq!(
                    row,
                    &(r.template.clone(), r.version, r.environment.clone()),
                    "{}",
                    r.id
                );
            }
            let given: BTreeSet<&str> = resolved.iter().map(|r| r.id.as_str()).collect();
            for r in &set.resources {
                if !given.contains(r.desired.id.as_str()) {
                    assert!(
                        matches!(r.desired.state, crate::plan::DesiredState::Invalid { .. }),
                        "{} left out but not invalid",
                        r.desired.id
                    );
                }
            }
        }
        // The pin and the deployed newer minor are read as the rendering reads them.
        let pinned = resolve_versions(
            &Declared::new(&snapshot, &deployed),
            &BTreeMap::from([("service_instance/web/web-prod".to_string(), v(1, 0))]),
            &BTreeSet::new(),
        );
        let of = |id: &str| pinned.iter().find(|r| r.id == id).map(|r| r.version);
        assert_eq!(of("service_instance/web/web-prod"), Some(v(1, 0)));
        assert_eq!(of("service_instance/web/web-dev"), Some(v(1, 2)));
        assert_eq!(of("service_instance/api/api-dev"), Some(v(1, 1)));
        assert_eq!(of("pipeline/web"), Some(v(1, 2)));
    }
}
