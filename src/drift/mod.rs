//! Drift: how a recorded stack differs from live AWS, classified from what a check read
//! ([`classify`]), and what the policy does about it ([`wants_heal`]). Pure: the reads are
//! `provision::cloudformation::CloudFormation::read_for_drift`, the store writes and the
//! deploy requests are the daemon's (`daemon::drift`).
//!
//! A finding is one [`DriftKind`] with a readable detail:
//! * `missing`: no stack under the recorded `StackId` (or name), or it is `DELETE_COMPLETE`;
//! * `status`: the record says deployed, but the stack is not in a settled good state
//!   (`CREATE_COMPLETE`, `UPDATE_COMPLETE`, `IMPORT_COMPLETE`): an update nobody recorded,
//!   or a rollback;
//! * `template`: the submitted template differs semantically from protond's rendering of
//!   the resource as recorded (compared only while the desired rendering is the recorded
//!   one: a pending change redeploys it anyway); the differences come from
//!   [`crate::import::compare`];
//! * `parameters`: a parameter value other than its template's `Default` (protond passes
//!   none); `NoEcho` values are never read or shown;
//! * `tags`: protond's ownership tags (`protond:resource`, `protond:installation`) or its
//!   `protond:template` tag changed or removed;
//! * `resources`: `DetectStackDrift` found drifted resources.
//!
//! It must never read AWS, the store or a clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::DriftPolicy;
use crate::import::compare;
use crate::model::{DriftKind, ResourceStatus};
use crate::provision::cloudformation::{
    DriftRead, ResourceDrift, TAG_INSTALLATION, TAG_RESOURCE, TAG_TEMPLATE, check_owner,
};

/// Most differences listed in one finding's detail.
const SHOWN_DIFFERENCES: usize = 5;

/// The stack statuses a deployed record expects.
const SETTLED: [&str; 3] = ["CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"];

/// What the record says the stack should be.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The resource id (`protond:resource`).
    pub resource_id: &'a str,
    /// This installation (`protond:installation`).
    pub installation: &'a str,
    /// The template name (`protond:template`).
    pub template: &'a str,
    /// The record's status.
    pub status: ResourceStatus,
    /// Whether the record names the stack's `StackId` (a stack without the installation
    /// tag is then provably the recorded one).
    pub stack_id_recorded: bool,
    /// protond's rendering of the resource as recorded, when the desired rendering is the
    /// recorded one (else the template is not compared).
    pub rendered: Option<&'a str>,
}

/// One finding.
pub type Finding = (DriftKind, String);

/// The findings for one stack, in [`DriftKind::ALL`] order; empty when in sync.
#[must_use]
pub fn classify(expected: &Expected<'_>, read: &DriftRead) -> Vec<Finding> {
    let Some(live) = &read.live else {
        return vec![(
            DriftKind::Missing,
            "the stack no longer exists (deleted out of band, or not found by its recorded StackId)"
                .into(),
        )];
    };
    let mut out = Vec::new();
    if expected.status == ResourceStatus::Deployed && !SETTLED.contains(&live.info.status.as_str())
    {
        out.push((
            DriftKind::Status,
            format!(
                "stack {} is {} while protond recorded it deployed",
                live.info.name, live.info.status
            ),
        ));
    }
    let live_template = read.template.as_deref().map(|t| {
        compare::parse_template(t, &format!("the live template of stack {}", live.info.name))
    });
    if let (Some(rendered), Some(live_template)) = (expected.rendered, &live_template)
        && let Some(f) = template_finding(live_template, rendered)
    {
        out.push(f);
    }
    if let Some(Ok(template)) = &live_template {
        // A declared parameter the stack does not list was never set out of band.
        let d: Vec<compare::Difference> = compare::diff_parameters(&live.parameters, template)
            .into_iter()
            .filter(|d| d.change != compare::Change::Added)
            .collect();
        if !d.is_empty() {
            out.push((DriftKind::Parameters, shown(&d)));
        }
    }
    if let Some(f) = tags_finding(expected, &live.info) {
        out.push(f);
    }
    if let ResourceDrift::Drifted(resources) = &read.resources {
        out.push((
            DriftKind::Resources,
            format!(
                "CloudFormation's drift detection found drifted resources: {}",
                resources.join(", ")
            ),
        ));
    }
    out
}

/// The template finding, comparing the live template with protond's rendering.
fn template_finding(
    live: &Result<serde_json::Value, compare::ParseError>,
    rendered: &str,
) -> Option<Finding> {
    let live = match live {
        Ok(v) => v,
        Err(e) => return Some((DriftKind::Template, e.to_string())),
    };
    // protond's own rendering always parses (it deployed it); if not, nothing to say.
    let rendered = compare::parse_template(rendered, "the rendered template").ok()?;
    let d = compare::diff_templates(live, &rendered);
    (!d.is_empty()).then(|| (DriftKind::Template, shown(&d)))
}

/// The tags finding: the ownership gate's verdict, and the template tag.
fn tags_finding(
    expected: &Expected<'_>,
    info: &crate::provision::cloudformation::StackInfo,
) -> Option<Finding> {
    let mut problems = Vec::new();
    if let Err(c) = check_owner(
        info,
        expected.resource_id,
        expected.installation,
        expected.stack_id_recorded,
    ) {
        let tag = |k: &str| info.tags.get(k).map_or("none".into(), |v| format!("{v:?}"));
        problems.push(format!(
            "{TAG_RESOURCE}={}, {TAG_INSTALLATION}={} (expected {:?}, {:?})",
            tag(TAG_RESOURCE),
            tag(TAG_INSTALLATION),
            c.resource,
            c.installation
        ));
    }
    let template = info.tags.get(TAG_TEMPLATE);
    if template.is_none_or(|t| t != expected.template) {
        problems.push(format!(
            "{TAG_TEMPLATE}={} (expected {:?})",
            template.map_or("none".into(), |v| format!("{v:?}")),
            expected.template
        ));
    }
    (!problems.is_empty()).then(|| (DriftKind::Tags, problems.join("; ")))
}

/// Differences as one line each (at most [`SHOWN_DIFFERENCES`]), joined.
fn shown(d: &[compare::Difference]) -> String {
    let mut lines: Vec<String> = d
        .iter()
        .take(SHOWN_DIFFERENCES)
        .map(ToString::to_string)
        .collect();
    if d.len() > SHOWN_DIFFERENCES {
        lines.push(format!("and {} more", d.len() - SHOWN_DIFFERENCES));
    }
    format!("{} difference(s): {}", d.len(), lines.join("; "))
}

/// Whether `findings` of a resource whose record says `status` ask for a redeploy under
/// `policy`: under `heal`, any finding but `resources` alone (redeploying an unchanged
/// template does not correct what `CloudFormation` reports as resource drift; it is
/// reported only), and only while the record says deployed (a failed deployment, a failed
/// heal included, is left to the one error policy: no redeploy every interval).
#[must_use]
pub fn wants_heal(policy: DriftPolicy, status: ResourceStatus, findings: &[Finding]) -> bool {
    policy == DriftPolicy::Heal
        && status == ResourceStatus::Deployed
        && findings.iter().any(|(k, _)| *k != DriftKind::Resources)
}

/// What a check says about resource drift detection being unavailable, once per process:
/// `Some(reason)` when `read` says it is not available.
#[must_use]
pub fn detection_unavailable(read: &DriftRead) -> Option<&str> {
    match &read.resources {
        ResourceDrift::NotAvailable(why) => Some(why),
        _ => None,
    }
}

/// The drift check's bookkeeping in the daemon: when the last check started, whether one
/// is asked for or running, and whether resource drift detection is available. It reads no
/// clock: the caller passes the time.
#[derive(Debug, Default)]
pub struct Runtime {
    enabled: AtomicBool,
    last: Mutex<Option<Instant>>,
    requested: AtomicBool,
    running: AtomicBool,
    unavailable: Mutex<Option<String>>,
}

impl Runtime {
    /// Lets checks run (the long-running daemon does; `reconcile --once` and tests do not).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    /// Asks for a check at the next cycle.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Starts a check at `now` when one is [`due`] and none runs; `false` otherwise.
    pub fn begin(&self, interval: Option<Duration>, now: Instant) -> bool {
        if !self.enabled.load(Ordering::SeqCst) {
            return false;
        }
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let since = last.map(|t| now.saturating_duration_since(t));
        if !due(self.requested.load(Ordering::SeqCst), interval, since)
            || self.running.swap(true, Ordering::SeqCst)
        {
            return false;
        }
        self.requested.store(false, Ordering::SeqCst);
        *last = Some(now);
        true
    }

    /// The running check ended.
    pub fn finish(&self) {
        self.running.store(false, Ordering::SeqCst);
    }

    /// Records that resource drift detection is not available (`why`); `true` the first time.
    pub fn set_unavailable(&self, why: &str) -> bool {
        let mut u = self
            .unavailable
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let first = u.is_none();
        if first {
            *u = Some(why.to_string());
        }
        first
    }

    /// Why resource drift detection is not available, once a check found out.
    #[must_use]
    pub fn unavailable(&self) -> Option<String> {
        self.unavailable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Whether a check is due: asked for, or the interval (if any) passed since the last one
/// (or none ran yet).
#[must_use]
pub fn due(requested: bool, interval: Option<Duration>, since_last: Option<Duration>) -> bool {
    requested || interval.is_some_and(|i| since_last.is_none_or(|elapsed| elapsed >= i))
}

#[cfg(test)]
mod tests;
