//! The check `protond rollback <target> --to <version>` makes before it records a pin: the
//! target covers deployed resources, the version is a registered release of their template
//! and major, and no covered resource runs an older minor (a rollback only goes back; the
//! version they run is allowed, and stops them following new minors). Pure: the caller reads
//! the records, the stages and the releases; it must never perform I/O.

use std::collections::{BTreeMap, BTreeSet};

use super::pins::{Pin, PinTarget};
use crate::model::Version;
use crate::state::ResourceRecord;

/// What a pin will do to one covered resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// Resource id.
    pub id: String,
    /// The version it runs.
    pub from: Version,
    /// The version it is held on.
    pub to: Version,
}

/// A checked pin: its template (resolved when the target names none) and each covered
/// resource's move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The pin to record, template set.
    pub pin: Pin,
    /// Covered resources, moving (`from != to`) or staying.
    pub moves: Vec<Move>,
}

/// Whether `target` covers record `r` (`stages` maps environments to their stage).
#[must_use]
pub fn covers(target: &PinTarget, r: &ResourceRecord, stages: &BTreeMap<String, String>) -> bool {
    let env = r.environment.as_deref();
    match target {
        PinTarget::Resource(id) => *id == r.id,
        PinTarget::Environment(e) => env == Some(e.as_str()),
        PinTarget::Stage(s) => env.and_then(|e| stages.get(e)) == Some(s),
    }
}

fn describe(target: &PinTarget) -> String {
    match target {
        PinTarget::Resource(id) => id.clone(),
        PinTarget::Environment(e) => format!("environment:{e}"),
        PinTarget::Stage(s) => format!("stage:{s}"),
    }
}

/// Checks `pin` against the deployed `records`; `stages` maps environments to their stage,
/// `registered` holds every registered release.
///
/// # Errors
///
/// What is wrong and how to fix it: no resource covered, several templates, another major,
/// an unregistered version, a resource on an older minor.
pub fn check(
    pin: &Pin,
    records: &[ResourceRecord],
    stages: &BTreeMap<String, String>,
    registered: &BTreeSet<(String, Version)>,
) -> Result<Checked, String> {
    let target = describe(&pin.target);
    let v = pin.version;
    let covered: Vec<&ResourceRecord> = records
        .iter()
        .filter(|r| covers(&pin.target, r, stages))
        .filter(|r| pin.template.as_ref().is_none_or(|t| *t == r.template))
        .collect();
    if covered.is_empty() {
        return Err(format!(
            "no deployed resource{} is covered by {target}; `protond status` lists them",
            pin.template
                .as_ref()
                .map(|t| format!(" of template {t}"))
                .unwrap_or_default()
        ));
    }
    let same_major: Vec<&ResourceRecord> = covered
        .iter()
        .copied()
        .filter(|r| r.version.major == v.major)
        .collect();
    let templates: BTreeSet<&str> = same_major.iter().map(|r| r.template.as_str()).collect();
    let template = match templates.iter().collect::<Vec<_>>().as_slice() {
        [] => {
            let runs: BTreeSet<String> = covered.iter().map(|r| r.version.to_string()).collect();
            return Err(format!(
                "no resource of {target} runs major {} (they run {}); a rollback never crosses a major",
                v.major,
                runs.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        [one] => (**one).to_string(),
        many => {
            let names: Vec<String> = many.iter().map(|t| format!("{t}/v{v}")).collect();
            return Err(format!(
                "{target} holds resources of several templates; name one: {}",
                names.join(" or ")
            ));
        }
    };
    if !registered.contains(&(template.clone(), v)) {
        let known: Vec<String> = registered
            .iter()
            .filter(|(t, r)| *t == template && r.major == v.major)
            .map(|(_, r)| format!("v{r}"))
            .collect();
        return Err(format!(
            "{template} v{v} is not a registered release; registered in major {}: {}",
            v.major,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ));
    }
    let mut moves = Vec::new();
    for r in same_major.iter().filter(|r| r.template == template) {
        if r.version < v {
            return Err(format!(
                "{} runs {template} {}, older than {v}: a rollback only goes back; pin {target} to {} or earlier",
                r.id, r.version, r.version
            ));
        }
        moves.push(Move {
            id: r.id.clone(),
            from: r.version,
            to: v,
        });
    }
    Ok(Checked {
        pin: Pin {
            template: Some(template),
            ..pin.clone()
        },
        moves,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Placement, ResourceKind, ResourceStatus};

    fn v(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    fn record(id: &str, env: &str, template: &str, version: Version) -> ResourceRecord {
        ResourceRecord {
            id: id.into(),
            kind: ResourceKind::ServiceInstance,
            repo: "r".into(),
            environment: Some(env.into()),
            template: template.into(),
            version,
            input_hash: String::new(),
            rendered_hash: String::new(),
            outputs: crate::state::Outputs::default(),
            status: ResourceStatus::Deployed,
            spec_commit: None,
            updated_at: String::new(),
            placement: Placement::default(),
        }
    }

    fn pin(target: PinTarget, template: Option<&str>, version: Version) -> Pin {
        Pin {
            target,
            template: template.map(Into::into),
            version,
        }
    }

    type Want = Result<Vec<(&'static str, Version)>, &'static str>;

    #[test]
    fn a_rollback_goes_back_within_a_registered_major_of_one_template() {
        let records = vec![
            record("a", "dev1", "web", v(1, 2)),
            record("b", "dev1", "web", v(1, 0)),
            record("c", "prod1", "web", v(1, 2)),
            record("d", "dev1", "worker", v(1, 2)),
            record("e", "dev2", "web", v(2, 0)),
        ];
        let stages = BTreeMap::from([
            ("dev1".to_string(), "dev".to_string()),
            ("dev2".to_string(), "dev".to_string()),
            ("prod1".to_string(), "prod".to_string()),
        ]);
        let registered = BTreeSet::from([
            ("web".to_string(), v(1, 0)),
            ("web".to_string(), v(1, 1)),
            ("web".to_string(), v(1, 2)),
            ("worker".to_string(), v(1, 2)),
        ]);
        let env = |e: &str| PinTarget::Environment(e.into());
        let res = |id: &str| PinTarget::Resource(id.into());
        // (pin, Ok(moves as (id, from, to)) or Err(a fragment of the message))
        let cases: Vec<(Pin, Want)> = vec![
            (pin(res("a"), None, v(1, 0)), Ok(vec![("a", v(1, 2))])),
            (pin(res("a"), None, v(1, 2)), Ok(vec![("a", v(1, 2))])),
            (pin(res("b"), None, v(1, 1)), Err("only goes back")),
            (
                pin(res("a"), None, v(1, 3)),
                Err("not a registered release"),
            ),
            (pin(res("a"), None, v(2, 0)), Err("never crosses a major")),
            (pin(res("zz"), None, v(1, 0)), Err("no deployed resource")),
            (
                pin(env("dev1"), None, v(1, 0)),
                Err("web/v1.0 or worker/v1.0"),
            ),
            (
                pin(env("dev1"), Some("web"), v(1, 0)),
                Ok(vec![("a", v(1, 2)), ("b", v(1, 0))]),
            ),
            (
                pin(PinTarget::Stage("prod".into()), None, v(1, 1)),
                Ok(vec![("c", v(1, 2))]),
            ),
        ];
        for (p, want) in cases {
            let got = check(&p, &records, &stages, &registered);
            match (got, want) {
                (Ok(c), Ok(moves)) => {
                    assert_eq!(c.pin.template.as_deref(), Some("web"), "{p:?}");
                    let got: Vec<(&str, Version)> =
                        c.moves.iter().map(|m| (m.id.as_str(), m.from)).collect();
                    assert_eq!(got, moves, "{p:?}");
                    assert!(c.moves.iter().all(|m| m.to == p.version));
                }
                (Err(e), Err(fragment)) => assert!(e.contains(fragment), "{p:?}: {e}"),
                (got, want) => panic!("{p:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
