//! Operator holds (`protond hold`) and freeze windows (`[[rollout.freeze]]`): which changes
//! they stop, and until when. Pure: the caller passes the holds, the freezes active now (see
//! [`crate::config::Freeze::active`]), what each resource belongs to, and the time.
//!
//! A hold or freeze without `all` stops the automatic version moves of the resources it
//! covers (minor upgrades, release changes, rollbacks to a pinned minor): they are re-rendered
//! on the version they run, so their spec changes still deploy. With `all` it stops every
//! change: creates, updates (spec changes and redeploys too) and deletes. A hold whose `until`
//! has passed is ignored; nothing has to remove it.
//!
//! It must never read a clock or the store: every rule here is table-tested.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use super::schedule::{HoldReason, Schedule, Verdict};
use super::{ActionKind, Plan, UpdateReason};
use crate::model::ResourceId;

/// What a hold covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum HoldTarget {
    /// One resource, by id (`service_instance/web/dev`).
    Resource(String),
    /// Every resource of an environment (`environment:dev`), the environment itself included.
    Environment(String),
    /// Every resource of the environments of a stage (`stage:prod`).
    Stage(String),
    /// Every resource of a template (`template:web-svc`).
    Template(String),
}

/// The forms a target is written in, for error messages.
pub const TARGET_FORMS: &str = "a resource id (service_instance/<service>/<instance>, environment/<name>, component/<service>/<instance>, pipeline/<service>), environment:<name>, stage:<name> or template:<name>";

impl HoldTarget {
    /// Parses `environment:<name>`, `stage:<name>`, `template:<name>` or a resource id.
    ///
    /// # Errors
    ///
    /// The forms accepted, when `text` is none of them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a target; write {TARGET_FORMS}");
        if let Some((kind, name)) = text.split_once(':') {
            if name.is_empty() || name.contains([':', '/']) {
                return Err(bad());
            }
            return Self::from_parts(kind, name).ok_or_else(bad);
        }
        ResourceId::parse(text).map_err(|_| bad())?;
        Ok(Self::Resource(text.to_string()))
    }

    /// The stored kind: `resource`, `environment`, `stage` or `template`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Resource(_) => "resource",
            Self::Environment(_) => "environment",
            Self::Stage(_) => "stage",
            Self::Template(_) => "template",
        }
    }

    /// The resource id or the name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Resource(n) | Self::Environment(n) | Self::Stage(n) | Self::Template(n) => n,
        }
    }

    /// The target of a stored kind and name.
    #[must_use]
    pub fn from_parts(kind: &str, name: &str) -> Option<Self> {
        let name = name.to_string();
        match kind {
            "resource" => Some(Self::Resource(name)),
            "environment" => Some(Self::Environment(name)),
            "stage" => Some(Self::Stage(name)),
            "template" => Some(Self::Template(name)),
            _ => None,
        }
    }

    /// Most specific first: resource, environment, template, stage.
    fn rank(&self) -> u8 {
        match self {
            Self::Resource(_) => 0,
            Self::Environment(_) => 1,
            Self::Template(_) => 2,
            Self::Stage(_) => 3,
        }
    }

    fn covers(&self, id: &str, s: &Subject) -> bool {
        match self {
            Self::Resource(r) => r == id,
            Self::Environment(e) => s.environment.as_deref() == Some(e.as_str()),
            Self::Stage(st) => s.stage.as_deref() == Some(st.as_str()),
            Self::Template(t) => s.template.as_deref() == Some(t.as_str()),
        }
    }
}

impl fmt::Display for HoldTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resource(id) => f.write_str(id),
            other => write!(f, "{}:{}", other.kind(), other.name()),
        }
    }
}

/// One operator hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// What it covers.
    pub target: HoldTarget,
    /// Every change, not only version moves.
    pub all: bool,
    /// When it ends.
    #[serde(serialize_with = "as_rfc3339")]
    pub until: SystemTime,
    /// Why (shown with the hold).
    pub reason: String,
    /// Who set it.
    pub by: String,
    /// When it was set (RFC 3339).
    pub set_at: String,
}

impl Hold {
    /// Whether it still holds at `now`.
    #[must_use]
    pub fn active(&self, now: SystemTime) -> bool {
        self.until > now
    }
}

/// A freeze window that is open now, from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFreeze {
    /// Why (or the window's name).
    pub reason: String,
    /// The stages it freezes; empty: every stage (and resources of no stage).
    pub stages: Vec<String>,
    /// Every change, not only version moves.
    pub all: bool,
    /// When it ends.
    pub until: SystemTime,
}

impl ActiveFreeze {
    fn covers(&self, s: &Subject) -> bool {
        self.stages.is_empty()
            || s.stage
                .as_ref()
                .is_some_and(|st| self.stages.iter().any(|x| x == st))
    }
}

/// What a resource belongs to, for the holds: its template, environment and stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// Template name.
    pub template: Option<String>,
    /// Environment name.
    pub environment: Option<String>,
    /// The environment's stage.
    pub stage: Option<String>,
}

/// The holds and freezes that apply now, with what each resource belongs to.
#[derive(Debug, Clone)]
pub struct Restrictions {
    /// Operator holds (ended ones are ignored).
    pub holds: Vec<Hold>,
    /// Freeze windows open now.
    pub freezes: Vec<ActiveFreeze>,
    /// Resources by id.
    pub subjects: BTreeMap<String, Subject>,
    /// The time of the decision.
    pub now: SystemTime,
}

fn as_rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// `t` as RFC 3339 in UTC, to the second.
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Restrictions {
    /// `gate` (the rollout gate's holds) with [`Self::version_holds`] added where the gate
    /// holds nothing.
    #[must_use]
    pub fn with_version_holds(
        &self,
        plan: &Plan,
        mut gate: BTreeMap<String, HoldReason>,
    ) -> BTreeMap<String, HoldReason> {
        for (id, hold) in self.version_holds(plan) {
            gate.entry(id).or_insert(hold);
        }
        gate
    }

    /// Why resource `id` waits, when a hold or freeze covers it: `all` selects the ones
    /// that stop every change; otherwise any of them (they all stop version moves).
    #[must_use]
    pub fn hold_for(&self, id: &str, only_all: bool) -> Option<HoldReason> {
        let none = Subject::default();
        let s = self.subjects.get(id).unwrap_or(&none);
        let hold = self
            .holds
            .iter()
            .filter(|h| h.active(self.now) && (h.all || !only_all) && h.target.covers(id, s))
            .min_by_key(|h| (h.target.rank(), std::cmp::Reverse(h.until)));
        if let Some(h) = hold {
            return Some(HoldReason::Held {
                target: h.target.to_string(),
                by: h.by.clone(),
                until: rfc3339(h.until),
                reason: h.reason.clone(),
            });
        }
        self.freezes
            .iter()
            .filter(|f| (f.all || !only_all) && f.covers(s))
            .max_by_key(|f| f.until)
            .map(|f| HoldReason::Freeze {
                reason: f.reason.clone(),
                until: rfc3339(f.until),
            })
    }

    /// The version moves of `plan` (minor upgrades, release changes, rollbacks) that a hold
    /// or freeze stops, with their reasons.
    #[must_use]
    pub fn version_holds(&self, plan: &Plan) -> BTreeMap<String, HoldReason> {
        if self.holds.is_empty() && self.freezes.is_empty() {
            return BTreeMap::new();
        }
        plan.changes()
            .filter(|a| is_version_move(&a.action))
            .filter_map(|a| Some((a.id.clone(), self.hold_for(&a.id, false)?)))
            .collect()
    }

    /// Turns the starts of `schedule` that an `all` hold or freeze covers into holds.
    pub fn restrict(&self, schedule: &mut Schedule) {
        if !self.holds.iter().any(|h| h.all) && !self.freezes.iter().any(|f| f.all) {
            return;
        }
        for d in &mut schedule.decisions {
            if d.verdict == Verdict::Start
                && let Some(reason) = self.hold_for(&d.action.id, true)
            {
                d.verdict = Verdict::Hold { reason };
            }
        }
    }
}

/// A minor upgrade, a release change or a rollback: what a hold without `all` stops.
#[must_use]
pub fn is_version_move(action: &ActionKind) -> bool {
    matches!(
        action,
        ActionKind::Update {
            reason: UpdateReason::MinorUpgrade { .. }
                | UpdateReason::ReleaseChanged { .. }
                | UpdateReason::Rollback { .. }
        }
    )
}

/// Reads `--until`: RFC 3339 (`2026-12-24T18:00:00Z`) or a duration from `now` (`90s`,
/// `30m`, `2h`, `3d`, `1w`).
///
/// # Errors
///
/// The forms accepted, or that the time has passed.
pub fn parse_until(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let until = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        SystemTime::from(t)
    } else {
        let d = humantime::parse_duration(text).map_err(|_| {
            format!(
                "--until {text:?} is neither an RFC 3339 time (2026-12-24T18:00:00Z) nor a duration (90s, 30m, 2h, 3d, 1w)"
            )
        })?;
        now + d
    };
    if until <= now {
        return Err(format!(
            "--until {text:?} has passed; give a later time or a duration (2h, 3d)"
        ));
    }
    Ok(until)
}

#[cfg(test)]
mod tests;
