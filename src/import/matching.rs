//! Which live stack AWS Proton made for which protond resource: read from the AWS-managed
//! tags Proton put on its stacks, or from the operator's mapping file.
//!
//! Proton's user guide ("AWS Proton resources and tagging") lists the AWS-managed tags it
//! put on what it provisioned: `aws:proton:account`, `aws:proton:template`,
//! `aws:proton:service`, `aws:proton:service-instance` and `aws:proton:environment`, each
//! holding an ARN, propagated to provisioned resources as `proton:<same>`. A stack is
//! identified by the most specific tag it carries:
//!
//! | tags (ARN resource part) | protond resource |
//! |---|---|
//! | `aws:proton:service-instance` = `service/<svc>/service-instance/<inst>` | `service_instance/<svc>/<inst>` |
//! | `aws:proton:service` = `service/<svc>` or `service/<svc>/pipeline`, no instance tag | `pipeline/<svc>` |
//! | `aws:proton:environment` = `environment/<env>`, no service tag | `environment/<env>` |
//!
//! The guide's table has no key for components. A directly defined component ("AWS Proton
//! components": its manifest and `IaC` file are given directly, with no template) attached to
//! an instance carries the instance's tags but no `aws:proton:template`, and its stack is
//! named after it: Proton named its stacks `AWSProton-<name>-cloudformation-<random
//! suffix>` (its service role's policy is scoped to `stack/AWSProton-*`). So a stack with
//! `aws:proton:service-instance`, no template tag, and a name `AWSProton-<c>-cloudformation-…`
//! is component `<c>` of that instance, when that instance's spec attaches `<c>`; the mapping
//! file overrides. The suffix cannot be derived: beyond that, names only say which stacks are
//! Proton's.
//!
//! A stack that carries protond's ownership tags for another resource or installation is
//! never a candidate. Pure: no I/O.

use std::collections::BTreeMap;

use crate::model::ResourceId;
use crate::provision::cloudformation::{TAG_INSTALLATION, TAG_RESOURCE};

/// The name prefix of the stacks AWS Proton created.
pub const PROTON_STACK_PREFIX: &str = "AWSProton-";

/// The value of Proton's tag `key` (`environment`, `service`, ...): the AWS-managed
/// `aws:proton:<key>`, else its propagated form `proton:<key>`.
#[must_use]
pub fn proton_tag<'a>(tags: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    tags.get(&format!("aws:proton:{key}"))
        .or_else(|| tags.get(&format!("proton:{key}")))
        .map(String::as_str)
}

/// The resource part of an ARN (`environment/dev` of `arn:aws:proton:r:a:environment/dev`);
/// the text itself when it is not an ARN.
#[must_use]
pub fn arn_resource(arn: &str) -> &str {
    if arn.starts_with("arn:") {
        arn.splitn(6, ':').nth(5).unwrap_or(arn)
    } else {
        arn
    }
}

/// What a Proton stack was made for, according to its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtonTarget {
    /// An environment's stack.
    Environment {
        /// The environment.
        name: String,
    },
    /// A service instance's stack.
    ServiceInstance {
        /// The service.
        service: String,
        /// The instance.
        instance: String,
        /// The environment it runs in, when tagged.
        environment: Option<String>,
    },
    /// A service pipeline's stack.
    Pipeline {
        /// The service.
        service: String,
    },
    /// A directly defined component's stack (an instance's tags, no template tag, named after
    /// the component).
    Component {
        /// The component's name.
        name: String,
        /// The instance it is attached to, when tagged.
        instance: Option<(String, String)>,
    },
}

fn instance_of(arn: &str) -> Option<(String, String)> {
    let rest = arn_resource(arn).strip_prefix("service/")?;
    let (service, instance) = rest.split_once("/service-instance/")?;
    (!service.is_empty() && !instance.is_empty() && !instance.contains('/'))
        .then(|| (service.to_string(), instance.to_string()))
}

fn last_name<'a>(arn: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = arn_resource(arn).strip_prefix(prefix)?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// `<name>` of a stack named as Proton named them, `AWSProton-<name>-cloudformation-<suffix>`.
#[must_use]
pub fn proton_stack_name(stack: &str) -> Option<&str> {
    let rest = stack.strip_prefix(PROTON_STACK_PREFIX)?;
    let (name, _) = rest.rsplit_once("-cloudformation-")?;
    (!name.is_empty()).then_some(name)
}

/// What the stack `name` with `tags` was made for; `None` without Proton's tags.
#[must_use]
pub fn proton_target(name: &str, tags: &BTreeMap<String, String>) -> Option<ProtonTarget> {
    let instance = proton_tag(tags, "service-instance").and_then(instance_of);
    if let Some((service, instance)) = &instance
        && proton_tag(tags, "template").is_none()
        && let Some(component) = proton_stack_name(name)
    {
        return Some(ProtonTarget::Component {
            name: component.to_string(),
            instance: Some((service.clone(), instance.clone())),
        });
    }
    if let Some((service, instance)) = instance {
        return Some(ProtonTarget::ServiceInstance {
            service,
            instance,
            environment: proton_tag(tags, "environment")
                .and_then(|e| last_name(e, "environment/"))
                .map(str::to_string),
        });
    }
    if let Some(service) = proton_tag(tags, "service") {
        let rest = arn_resource(service).strip_prefix("service/")?;
        let name = rest.strip_suffix("/pipeline").unwrap_or(rest);
        return (!name.is_empty() && !name.contains('/')).then(|| ProtonTarget::Pipeline {
            service: name.to_string(),
        });
    }
    let env = proton_tag(tags, "environment")?;
    Some(ProtonTarget::Environment {
        name: last_name(env, "environment/")?.to_string(),
    })
}

/// The protond resource a Proton target is, given the component each instance attaches
/// (`(service, instance)` → component name): for a component, the instance whose component
/// has its name (and, when the stack names its instance, that instance); `None` when that
/// is not exactly one.
#[must_use]
pub fn resource_for(
    target: &ProtonTarget,
    components: &BTreeMap<(String, String), String>,
) -> Option<ResourceId> {
    match target {
        ProtonTarget::Environment { name } => Some(ResourceId::environment(name)),
        ProtonTarget::ServiceInstance {
            service, instance, ..
        } => Some(ResourceId::service_instance(service, instance)),
        ProtonTarget::Pipeline { service } => Some(ResourceId::pipeline(service)),
        ProtonTarget::Component { name, instance } => {
            let mut found = components
                .iter()
                .filter(|(at, n)| *n == name && instance.as_ref().is_none_or(|i| i == *at));
            let ((service, inst), _) = found.next()?;
            found
                .next()
                .is_none()
                .then(|| ResourceId::component(service, inst))
        }
    }
}

/// Whether a stack's protond tags (if any) allow it to be `resource_id` of `installation`:
/// a stack without them, or with exactly these (an import that tagged it and stopped before
/// recording it).
#[must_use]
pub fn free_for(tags: &BTreeMap<String, String>, resource_id: &str, installation: &str) -> bool {
    match (tags.get(TAG_RESOURCE), tags.get(TAG_INSTALLATION)) {
        (None, None) => true,
        (r, i) => r.is_some_and(|r| r == resource_id) && i.is_some_and(|i| i == installation),
    }
}

/// One line of a mapping file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct MapError {
    /// The mapping file.
    pub file: String,
    /// The line (1-based; 0 for the whole file).
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Parses a mapping file of `resource id → stack name or ARN`: a YAML or JSON mapping
/// (`environment/dev: AWSProton-dev-cloudformation-ABC`), or lines of `<id> <stack>` or
/// `<id> = <stack>` with `#` comments. Every problem is reported, each with its line.
///
/// # Errors
///
/// The [`MapError`]s: a line without both parts, an id that is not a resource id, an id
/// given twice.
pub fn parse_map(text: &str, file: &str) -> Result<BTreeMap<String, String>, Vec<MapError>> {
    let err = |line: usize, message: String| MapError {
        file: file.to_string(),
        line,
        message,
    };
    let pairs: Vec<(usize, String, String)> =
        match crate::catalog::yaml::from_str::<BTreeMap<String, String>>(text) {
            Ok(m) => m
                .into_iter()
                .map(|(k, v)| {
                    let line = text
                        .lines()
                        .position(|l| {
                            l.trim_start()
                                .trim_start_matches(['"', '\''])
                                .starts_with(&k)
                        })
                        .map_or(0, |i| i + 1);
                    (line, k, v)
                })
                .collect(),
            Err(_) => lines(text),
        };
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (line, id, stack) in pairs {
        if id.is_empty() || stack.is_empty() {
            errors.push(err(
                line,
                "expected `<resource id> <stack name or ARN>`, e.g. `environment/dev AWSProton-dev-cloudformation-ABC`".into(),
            ));
            continue;
        }
        if let Err(e) = ResourceId::parse(&id) {
            errors.push(err(line, e.to_string()));
            continue;
        }
        if out.insert(id.clone(), stack).is_some() {
            errors.push(err(line, format!("{id} is mapped twice; keep one line")));
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// `<id> <stack>` or `<id> = <stack>` lines, comments and blank lines skipped.
fn lines(text: &str) -> Vec<(usize, String, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let l = l.split('#').next().unwrap_or_default().trim();
            if l.is_empty() {
                return None;
            }
            let l = l.replacen('=', " ", 1);
            let mut parts = l.split_whitespace();
            let id = parts.next().unwrap_or_default().to_string();
            let stack = parts.next().unwrap_or_default().to_string();
            let stack = if parts.next().is_some() {
                String::new()
            } else {
                stack
            };
            Some((i + 1, id, stack))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    const A: &str = "arn:aws:proton:us-east-1:111122223333";

    #[test]
    fn proton_tags_name_the_resource() {
        let env = format!("{A}:environment/dev");
        let svc = format!("{A}:service/payments");
        let inst = format!("{A}:service/payments/service-instance/payments-dev");
        let tmpl = format!("{A}:environment-template/basic-env");
        let none = BTreeMap::new();
        let cases: Vec<(BTreeMap<String, String>, Option<&str>)> = vec![
            (
                tags(&[
                    ("aws:proton:environment", &env),
                    ("aws:proton:template", &tmpl),
                ]),
                Some("environment/dev"),
            ),
            (
                tags(&[
                    ("aws:proton:environment", &env),
                    ("aws:proton:service", &svc),
                    ("aws:proton:service-instance", &inst),
                    (
                        "aws:proton:template",
                        &format!("{A}:service-template/web-svc"),
                    ),
                ]),
                Some("service_instance/payments/payments-dev"),
            ),
            (
                tags(&[("aws:proton:service", &svc)]),
                Some("pipeline/payments"),
            ),
            (
                tags(&[("proton:service", &format!("{svc}/pipeline"))]),
                Some("pipeline/payments"),
            ),
            // The propagated customer-managed form counts too.
            (
                tags(&[("proton:environment", &env)]),
                Some("environment/dev"),
            ),
            // A directly defined component: the instance's tags, no template, its name.
            (
                tags(&[
                    ("aws:proton:environment", &env),
                    ("aws:proton:service", &svc),
                    ("aws:proton:service-instance", &inst),
                ]),
                Some("component/payments/payments-dev"),
            ),
            (tags(&[("aws:proton:template", &tmpl)]), None),
            (tags(&[("aws:proton:environment", "nonsense")]), None),
            (none, None),
        ];
        let components = BTreeMap::from([(
            ("payments".to_string(), "payments-dev".to_string()),
            "cache".to_string(),
        )]);
        for (t, want) in cases {
            let got = proton_target("AWSProton-cache-cloudformation-ABCDEFGHIJKLM", &t)
                .and_then(|x| resource_for(&x, &components))
                .map(|r| r.to_string());
            assert_eq!(got.as_deref(), want, "{t:?}");
        }
    }

    /// Without a template tag, only a stack named after the instance's component is it; a
    /// stack named otherwise stays the instance's.
    #[test]
    fn components_are_told_from_instances_by_name_and_template_tag() {
        let inst = format!("{A}:service/payments/service-instance/payments-dev");
        let t = tags(&[("aws:proton:service-instance", &inst)]);
        let components = BTreeMap::from([(
            ("payments".to_string(), "payments-dev".to_string()),
            "cache".to_string(),
        )]);
        let of = |name: &str, t: &BTreeMap<String, String>| {
            proton_target(name, t)
                .and_then(|x| resource_for(&x, &components))
                .map(|r| r.to_string())
        };
        assert_eq!(
            of("AWSProton-cache-cloudformation-X", &t).as_deref(),
            Some("component/payments/payments-dev")
        );
        // Named after another component: not this instance's.
        assert_eq!(of("AWSProton-queue-cloudformation-X", &t), None);
        // Not named as Proton named stacks: the instance (tags alone decide).
        assert_eq!(
            of("legacy-stack", &t).as_deref(),
            Some("service_instance/payments/payments-dev")
        );
        let mut with_template = t.clone();
        with_template.insert(
            "aws:proton:template".into(),
            format!("{A}:service-template/web-svc"),
        );
        assert_eq!(
            of("AWSProton-cache-cloudformation-X", &with_template).as_deref(),
            Some("service_instance/payments/payments-dev")
        );
        assert_eq!(
            proton_stack_name("AWSProton-my-env-cloudformation-ABC"),
            Some("my-env")
        );
        assert_eq!(proton_stack_name("AWSProton--cloudformation-ABC"), None);
        assert_eq!(proton_stack_name("other"), None);
    }

    #[test]
    fn a_component_name_on_two_instances_needs_the_instance_tag() {
        let components = BTreeMap::from([
            (("s".to_string(), "a".to_string()), "cache".to_string()),
            (("s".to_string(), "b".to_string()), "cache".to_string()),
        ]);
        let bare = ProtonTarget::Component {
            name: "cache".into(),
            instance: None,
        };
        assert_eq!(resource_for(&bare, &components), None);
        let tagged = ProtonTarget::Component {
            name: "cache".into(),
            instance: Some(("s".into(), "b".into())),
        };
        assert_eq!(
            resource_for(&tagged, &components),
            Some(ResourceId::component("s", "b"))
        );
    }

    #[test]
    fn protond_tags_keep_a_stack_for_its_owner() {
        assert!(free_for(&BTreeMap::new(), "environment/dev", "me"));
        let ours = tags(&[(TAG_RESOURCE, "environment/dev"), (TAG_INSTALLATION, "me")]);
        assert!(free_for(&ours, "environment/dev", "me"));
        assert!(!free_for(&ours, "environment/prod", "me"));
        assert!(!free_for(&ours, "environment/dev", "them"));
        assert!(!free_for(
            &tags(&[(TAG_RESOURCE, "environment/dev")]),
            "environment/dev",
            "me"
        ));
    }

    #[test]
    fn mapping_files_in_each_form() {
        let want = BTreeMap::from([
            (
                "environment/dev".to_string(),
                "AWSProton-dev-cloudformation-ABC".to_string(),
            ),
            (
                "component/payments/payments-dev".to_string(),
                "arn:aws:cloudformation:us-east-1:1:stack/x/y".to_string(),
            ),
        ]);
        let yaml = "environment/dev: AWSProton-dev-cloudformation-ABC\ncomponent/payments/payments-dev: 'arn:aws:cloudformation:us-east-1:1:stack/x/y'\n";
        assert_eq!(parse_map(yaml, "m").expect("yaml"), want);
        let json = r#"{"environment/dev": "AWSProton-dev-cloudformation-ABC", "component/payments/payments-dev": "arn:aws:cloudformation:us-east-1:1:stack/x/y"}"#;
        assert_eq!(parse_map(json, "m").expect("json"), want);
        let lines = "# id stack\nenvironment/dev   AWSProton-dev-cloudformation-ABC\n\ncomponent/payments/payments-dev = arn:aws:cloudformation:us-east-1:1:stack/x/y # cache\n";
        assert_eq!(parse_map(lines, "m").expect("lines"), want);
        let bad = "environment/dev\nstack/x AWSProton-x\nenvironment/prod a b\nenvironment/qa s1\nenvironment/qa s2\n";
        let errs: Vec<String> = parse_map(bad, "map.txt")
            .expect_err("bad")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(
            errs[0].starts_with("map.txt:1: expected `<resource id> <stack name or ARN>`"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("map.txt:2: \"stack/x\" is not a resource id"),
            "{errs:?}"
        );
        assert!(errs[2].starts_with("map.txt:3: expected"), "{errs:?}");
        assert_eq!(
            errs[3],
            "map.txt:5: environment/qa is mapped twice; keep one line"
        );
    }
}
