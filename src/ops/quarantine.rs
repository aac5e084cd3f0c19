//! Operator views of quarantine: the stopped releases (quarantined or halted, by whom,
//! when, why), the rollbacks offered or under way, and the release history, as text
//! sections for `protond plan` and `protond status` and as JSON for the API. Pure: callers
//! pass what they read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::config::quarantine::RollbackMode;
use crate::evaluate::quarantine::{self, Rollback};
use crate::model::{TagState, Version};
use crate::state::{
    DeploymentRecord, ReleaseEvent, ResourceRecord, Stop, StopKind, TemplateVersionRecord,
};

/// The rollbacks of resources on quarantined releases, from what the store records (for
/// `protond status`, the page and the API; `protond plan` has them from its evaluation).
#[must_use]
pub fn rollbacks_from_store(
    stops: &[Stop],
    versions: &[TemplateVersionRecord],
    records: &[ResourceRecord],
    last_failures: &[DeploymentRecord],
) -> BTreeMap<String, Rollback> {
    let quarantined: BTreeSet<(String, Version)> = stops
        .iter()
        .filter(|s| s.kind == StopKind::Quarantine)
        .map(|s| (s.template.clone(), s.version))
        .collect();
    let usable: BTreeSet<(String, Version)> = versions
        .iter()
        .filter(|v| v.registered && v.tag_state != TagState::Withdrawn)
        .map(|v| (v.template.clone(), v.version))
        .collect();
    quarantine::rollbacks(&quarantined, &usable, records, last_failures)
}

/// One resource's rollback, for people: offered (the command to run) or automatic.
#[must_use]
pub fn rollback_line(id: &str, r: &Rollback, mode: RollbackMode) -> String {
    match mode {
        RollbackMode::Offer => format!(
            "{id}: rollback available: protond rollback {id} --to v{} (from quarantined {})",
            r.to, r.from
        ),
        RollbackMode::Auto => format!(
            "{id}: rolling back to {} from quarantined {} (rollback = \"auto\"), stage by stage",
            r.to, r.from
        ),
    }
}

/// The stopped releases and the rollbacks, as a section (empty when nothing is stopped).
#[must_use]
pub fn stops_section(
    stops: &[Stop],
    rollbacks: &BTreeMap<String, Rollback>,
    mode: RollbackMode,
) -> String {
    let mut out = String::new();
    if stops.is_empty() {
        return out;
    }
    out.push_str("\nStopped releases:\n");
    for s in stops {
        let what = match s.kind {
            StopKind::Quarantine => "QUARANTINED",
            StopKind::Halt => "HALTED",
        };
        let by = if s.by.is_empty() { "-" } else { s.by.as_str() };
        let _ = writeln!(
            out,
            "  {} {}: {what} by {by} at {}: {} (protond release release {}/v{})",
            s.template,
            s.version,
            s.at,
            s.reason.lines().next().unwrap_or_default(),
            s.template,
            s.version
        );
    }
    if !rollbacks.is_empty() {
        out.push_str("\nRollbacks from quarantined releases:\n");
        for (id, r) in rollbacks {
            let _ = writeln!(out, "  {}", rollback_line(id, r, mode));
        }
    }
    out
}

/// The stopped releases, rollbacks and history as JSON (`protond status --output json`).
#[must_use]
pub fn json(
    stops: &[Stop],
    rollbacks: &BTreeMap<String, Rollback>,
    mode: RollbackMode,
    history: &[ReleaseEvent],
) -> serde_json::Value {
    let rollbacks: Vec<serde_json::Value> = rollbacks
        .iter()
        .map(|(id, r)| {
            serde_json::json!({
                "resource": id,
                "from": r.from.to_string(),
                "to": r.to.to_string(),
                "mode": mode.as_str(),
            })
        })
        .collect();
    serde_json::json!({
        "stopped": stops,
        "rollbacks": rollbacks,
        "history": history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_says_who_stopped_what_and_how_to_roll_back() {
        let v = |m, n| Version { major: m, minor: n };
        let stops = vec![Stop {
            template: "web".into(),
            version: v(1, 1),
            kind: StopKind::Quarantine,
            by: "protond".into(),
            reason: "2 of 2 resources of stage dev failed".into(),
            at: "2026-11-30T05:00:00Z".into(),
        }];
        let rollbacks: BTreeMap<String, Rollback> = [(
            "service_instance/a/b".to_string(),
            Rollback {
                from: v(1, 1),
                to: v(1, 0),
            },
        )]
        .into();
        let text = stops_section(&stops, &rollbacks, RollbackMode::Offer);
        assert!(
            text.contains("web 1.1: QUARANTINED by protond at 2026-11-30T05:00:00Z: 2 of 2"),
            "{text}"
        );
        assert!(
            text.contains("rollback available: protond rollback service_instance/a/b --to v1.0"),
            "{text}"
        );
        let auto = stops_section(&stops, &rollbacks, RollbackMode::Auto);
        assert!(
            auto.contains("rolling back to 1.0 from quarantined 1.1"),
            "{auto}"
        );
        assert!(stops_section(&[], &rollbacks, RollbackMode::Offer).is_empty());
    }
}
