//! Operator pins (`protond rollback --to`) and automatic rollbacks, resolved to the resources
//! they hold. Pure: the caller passes the pins, the records and the snapshot.
//!
//! A pin names a resource, an environment or a stage, and a version. It applies to the
//! deployed resources of that target whose template matches (when the pin names one) and
//! whose deployed major is the pin's: a pin never crosses a major. The most specific pin
//! wins (resource, then environment, then stage).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Version;
use crate::state::ResourceRecord;

/// What a pin holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
#[allow(dead_code)] // read from the store by `protond rollback` (in progress)
pub enum PinTarget {
    /// One resource, by id.
    Resource(String),
    /// Every resource deployed in an environment.
    Environment(String),
    /// Every resource deployed in the environments of a stage.
    Stage(String),
}

impl PinTarget {
    fn rank(&self) -> u8 {
        match self {
            Self::Resource(_) => 0,
            Self::Environment(_) => 1,
            Self::Stage(_) => 2,
        }
    }
}

/// A version a target is held on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    /// What it holds.
    pub target: PinTarget,
    /// Only resources of this template, when set.
    pub template: Option<String>,
    /// The version.
    pub version: Version,
}

/// The version each pinned resource is held on, by resource id. `stages` maps environment
/// names to their stage.
#[must_use]
pub fn resolve(
    pins: &[Pin],
    records: &[ResourceRecord],
    stages: &BTreeMap<String, String>,
) -> BTreeMap<String, Version> {
    if pins.is_empty() {
        return BTreeMap::new();
    }
    let mut ordered: Vec<&Pin> = pins.iter().collect();
    ordered.sort_by_key(|p| p.target.rank());
    let mut out = BTreeMap::new();
    for r in records {
        let env = r.environment.as_deref();
        let applies = |p: &&&Pin| {
            let hit = match &p.target {
                PinTarget::Resource(id) => *id == r.id,
                PinTarget::Environment(e) => env == Some(e.as_str()),
                PinTarget::Stage(s) => env.and_then(|e| stages.get(e)) == Some(s),
            };
            hit && p.version.major == r.version.major
                && p.template.as_ref().is_none_or(|t| *t == r.template)
        };
        if let Some(p) = ordered.iter().find(applies) {
            out.insert(r.id.clone(), p.version);
        }
    }
    out
}

/// The pin a stored record holds (`protond rollback --to`); `None` for a target kind this
/// version does not know.
#[must_use]
pub fn from_record(r: &crate::state::PinRecord) -> Option<Pin> {
    let name = r.target_name.clone();
    let target = match r.target_kind.as_str() {
        "resource" => PinTarget::Resource(name),
        "environment" => PinTarget::Environment(name),
        "stage" => PinTarget::Stage(name),
        _ => return None,
    };
    Some(Pin {
        target,
        template: r.template.clone(),
        version: r.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Placement, ResourceKind, ResourceStatus};

    fn record(id: &str, env: Option<&str>, template: &str, v: (u32, u32)) -> ResourceRecord {
        ResourceRecord {
            id: id.into(),
            kind: ResourceKind::ServiceInstance,
            repo: "r".into(),
            environment: env.map(Into::into),
            template: template.into(),
            version: Version {
                major: v.0,
                minor: v.1,
            },
            input_hash: String::new(),
            rendered_hash: String::new(),
            outputs: crate::state::Outputs::default(),
            status: ResourceStatus::Deployed,
            spec_commit: None,
            updated_at: String::new(),
            placement: Placement::default(),
        }
    }

    fn pin(target: PinTarget, template: Option<&str>, v: (u32, u32)) -> Pin {
        Pin {
            target,
            template: template.map(Into::into),
            version: Version {
                major: v.0,
                minor: v.1,
            },
        }
    }

    #[test]
    fn the_most_specific_pin_wins_within_the_major_and_template() {
        let records = vec![
            record("a", Some("dev1"), "web", (1, 3)),
            record("b", Some("dev1"), "web", (1, 3)),
            record("c", Some("prod1"), "web", (1, 3)),
            record("d", Some("dev1"), "worker", (1, 3)),
            record("e", Some("dev1"), "web", (2, 0)),
        ];
        let stages: BTreeMap<String, String> = [
            ("dev1".to_string(), "dev".to_string()),
            ("prod1".to_string(), "prod".to_string()),
        ]
        .into();
        let pins = vec![
            pin(PinTarget::Stage("dev".into()), Some("web"), (1, 1)),
            pin(PinTarget::Resource("b".into()), None, (1, 2)),
        ];
        let got = resolve(&pins, &records, &stages);
        let v = |m, n| Version { major: m, minor: n };
        assert_eq!(got.get("a"), Some(&v(1, 1)), "{got:?}");
        assert_eq!(got.get("b"), Some(&v(1, 2)), "resource pin beats stage pin");
        assert_eq!(got.get("c"), None, "another stage");
        assert_eq!(got.get("d"), None, "another template");
        assert_eq!(got.get("e"), None, "another major");
    }
}
