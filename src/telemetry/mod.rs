//! Metrics in the Prometheus/OpenMetrics text format, and the typed events that move them.
//!
//! Counters and the cycle histogram move only through [`events`]: one type per thing that
//! happens, whose `emit` writes the log line and counts, so a metric cannot drift from its
//! log. Gauges that describe the state store (resources, rollouts, pull requests) are set
//! from it at scrape time, so they are right even after a restart. Labels are kinds,
//! actions, outcomes and states (and template names, a bounded set), never stack or
//! resource names, so the series count stays bounded; they become text only here.
//!
//! This module reads the store (at scrape time) and never writes it; it imports no module
//! that decides or deploys (`ops`, `daemon`, `provision`).

pub mod events;
pub mod exposition;
pub mod logfmt;
mod repeats;
pub use repeats::Repeats;

use std::sync::Mutex;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::{ResourceKind, ViewStatus};
use crate::state::{StateError, Store};

/// Labels of a finished deployment.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    /// `environment`, `service_instance`, `pipeline` or `component`.
    pub kind: String,
    /// `create`, `update` or `delete`.
    pub action: String,
    /// `succeeded`, `failed` or `interrupted`.
    pub outcome: String,
}

/// Labels of a failed fetch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `template` or `spec`.
    pub source: String,
}

/// Labels of a started deployment.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindActionLabels {
    /// `environment`, `service_instance`, `pipeline` or `component`.
    pub kind: String,
    /// `create`, `update` or `delete`.
    pub action: String,
}

/// Labels of a proposal outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What happened, e.g. `updated` or `declined`.
    pub outcome: String,
}

/// Labels of a state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindStatusLabels {
    /// Resource kind.
    pub kind: String,
    /// The status label.
    pub status: String,
}

/// Labels of a state count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// State, e.g. `halted` or `accepted`.
    pub state: String,
}

/// Labels of the drift gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    /// What differs (`missing`, `status`, `template`, `parameters`, `tags`, `resources`).
    pub kind: String,
}

/// Labels of a release gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReleaseLabels {
    /// The template.
    pub template: String,
    /// The version, e.g. `1.2`.
    pub version: String,
}

/// Labels of the versions-behind gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateBehindLabels {
    /// The template's name (a bounded set: the templates registered).
    pub template: String,
    /// `minor` or `major`.
    pub kind: String,
}

/// Labels of an HTTP refusal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why, e.g. `body_budget` or `host`.
    pub reason: String,
}

/// The daemon's metrics. Counters move only through [`events`], so that every count has its
/// log line.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    cycles: Counter,
    cycle_seconds: Histogram,
    deployments: Family<DeploymentLabels, Counter>,
    deployments_started: Family<KindActionLabels, Counter>,
    fetch_failures: Family<SourceLabels, Counter>,
    proposals_opened: Counter,
    proposal_outcomes: Family<OutcomeLabels, Counter>,
    webhooks: Family<StateLabels, Counter>,
    http_refused: Family<ReasonLabels, Counter>,
    resources: Family<KindStatusLabels, Gauge>,
    rollouts: Family<StateLabels, Gauge>,
    proposals: Family<StateLabels, Gauge>,
    releases: Family<StateLabels, Gauge>,
    in_flight: Gauge,
    last_fetch_success: Gauge,
    drift: Family<DriftLabels, Gauge>,
    drift_found: Family<DriftLabels, Counter>,
    release_quarantined: Family<ReleaseLabels, Gauge>,
    versions_behind: Family<TemplateBehindLabels, Gauge>,
    needs_approval: Gauge,
    last_fetch: Mutex<Option<SystemTime>>,
    last_cycle: Mutex<Option<SystemTime>>,
    scrape: tokio::sync::Mutex<()>,
    notifications: crate::notifications::Outbox,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("protond");
        let cycles = Counter::default();
        let cycle_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let deployments = Family::<DeploymentLabels, Counter>::default();
        let deployments_started = Family::<KindActionLabels, Counter>::default();
        let fetch_failures = Family::<SourceLabels, Counter>::default();
        let proposals_opened = Counter::default();
        let proposal_outcomes = Family::<OutcomeLabels, Counter>::default();
        let webhooks = Family::<StateLabels, Counter>::default();
        let http_refused = Family::<ReasonLabels, Counter>::default();
        let resources = Family::<KindStatusLabels, Gauge>::default();
        let rollouts = Family::<StateLabels, Gauge>::default();
        let proposals = Family::<StateLabels, Gauge>::default();
        let releases = Family::<StateLabels, Gauge>::default();
        let in_flight = Gauge::default();
        let last_fetch_success = Gauge::default();
        registry.register("reconcile_cycles", "Reconcile cycles run", cycles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile cycles (reading repos, planning, starting deployments)",
            cycle_seconds.clone(),
        );
        registry.register(
            "deployments",
            "Finished deployments by resource kind, action and outcome",
            deployments.clone(),
        );
        registry.register(
            "deployments_started",
            "Started deployments by resource kind and action",
            deployments_started.clone(),
        );
        registry.register(
            "fetch_failures",
            "Repos that could not be fetched or read, by source kind",
            fetch_failures.clone(),
        );
        registry.register(
            "proposals_opened",
            "Upgrade pull requests opened (or branches pushed for the git forge)",
            proposals_opened.clone(),
        );
        registry.register(
            "proposal_outcomes",
            "Upgrade pull request outcomes other than opening (updated, adopted, merged, closed, declined, edited, rate_limited, invalid, failed, close_failed)",
            proposal_outcomes.clone(),
        );
        registry.register(
            "webhooks",
            "Webhook deliveries by result (accepted, ignored, rejected, duplicate)",
            webhooks.clone(),
        );
        registry.register(
            "http_refused",
            "HTTP requests refused and connections closed by the server's limits, by reason (connection_shed, header_timeout, body_timeout, body_too_large, body_budget, request_timeout, write_timeout, host)",
            http_refused.clone(),
        );
        registry.register(
            "resources",
            "Managed resources by kind and status",
            resources.clone(),
        );
        registry.register(
            "rollouts",
            "Newest-minor rollouts by state (complete, in_progress, halted)",
            rollouts.clone(),
        );
        registry.register(
            "proposals",
            "Upgrade pull requests by state",
            proposals.clone(),
        );
        let release_quarantined = Family::<ReleaseLabels, Gauge>::default();
        registry.register(
            "release_quarantined",
            "1 for each quarantined release (its rollout stopped after failures or by an operator)",
            release_quarantined.clone(),
        );
        registry.register(
            "releases",
            "Registered releases by tag state (current, moved: the tag was moved and the move is refused until accepted, withdrawn: the tag was deleted)",
            releases.clone(),
        );
        registry.register(
            "deployments_in_flight",
            "Deployments running now",
            in_flight.clone(),
        );
        let drift = Family::<DriftLabels, Gauge>::default();
        let drift_found = Family::<DriftLabels, Counter>::default();
        registry.register(
            "drift_found",
            "Drift findings new to a resource (each logged once as \"Drift found.\"), by kind",
            drift_found.clone(),
        );
        registry.register(
            "drift",
            "Resources whose stack the last drift check found different from the record, by kind",
            drift.clone(),
        );
        registry.register(
            "last_fetch_success_timestamp_seconds",
            "When the repos were last fetched, as a Unix time (0 before the first fetch); alert on time() minus it",
            last_fetch_success.clone(),
        );
        let versions_behind = Family::<TemplateBehindLabels, Gauge>::default();
        registry.register(
            "versions_behind",
            "Per template, the most versions any of its resources is behind the newest registered: kind=minor counts registered minors of the resource's major newer than it runs, kind=major the newest registered major minus its own (the fleet report's max_minors_behind and max_majors_behind)",
            versions_behind.clone(),
        );
        let needs_approval = Gauge::default();
        registry.register(
            "needs_approval",
            "Resources the change-set gate holds until a person approves their new version (as the last cycle found them)",
            needs_approval.clone(),
        );
        let notifications = crate::notifications::Outbox::default();
        registry.register(
            "notifications_sent",
            "Notifications and commit statuses sent, by transport (webhook, slack, commit_status) and result (ok, failed: given up after its attempts or refused)",
            notifications.metrics().sent.clone(),
        );
        registry.register(
            "notifications_dropped",
            "Notifications and commit statuses dropped because their target's queue was full, by transport",
            notifications.metrics().dropped.clone(),
        );
        let t = Self {
            registry,
            cycles,
            cycle_seconds,
            deployments,
            deployments_started,
            fetch_failures,
            proposals_opened,
            proposal_outcomes,
            webhooks,
            http_refused,
            resources,
            rollouts,
            proposals,
            releases,
            in_flight,
            last_fetch_success,
            drift,
            drift_found,
            release_quarantined,
            versions_behind,
            needs_approval,
            last_fetch: Mutex::new(None),
            last_cycle: Mutex::new(None),
            scrape: tokio::sync::Mutex::new(()),
            notifications,
        };
        t.zero_series();
        t
    }

    /// Creates every series whose labels are known in advance at zero, so that a scraper sees
    /// each from the first scrape (a rate over a series that appears at its first increment
    /// misses that increment, and an alert on an absent series never fires). Called at start
    /// and after each scrape refills the state gauges.
    fn zero_series(&self) {
        const ACTIONS: [&str; 4] = ["create", "update", "delete", "import"];
        const OUTCOMES: [&str; 3] = ["succeeded", "failed", "interrupted"];
        for kind in [
            ResourceKind::Environment,
            ResourceKind::Component,
            ResourceKind::ServiceInstance,
            ResourceKind::Pipeline,
        ] {
            let kind = kind.as_str();
            for action in ACTIONS {
                let _ = self.deployments_started.get_or_create(&KindActionLabels {
                    kind: kind.into(),
                    action: action.into(),
                });
                for outcome in OUTCOMES {
                    let _ = self.deployments.get_or_create(&DeploymentLabels {
                        kind: kind.into(),
                        action: action.into(),
                        outcome: outcome.into(),
                    });
                }
            }
            for status in crate::model::ViewStatus::ALL {
                let _ = self.resources.get_or_create(&KindStatusLabels {
                    kind: kind.into(),
                    status: status.as_str().into(),
                });
            }
        }
        for source in ["template", "spec"] {
            let _ = self.fetch_failures.get_or_create(&SourceLabels {
                source: source.into(),
            });
        }
        for outcome in events::ProposalOutcome::LABELS {
            let _ = self.proposal_outcomes.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
        let state = |s: &str| StateLabels { state: s.into() };
        for s in ["accepted", "ignored", "rejected", "duplicate"] {
            let _ = self.webhooks.get_or_create(&state(s));
        }
        let gauges: [(&Family<StateLabels, Gauge>, &[&str]); 3] = [
            (&self.rollouts, &["complete", "in_progress", "halted"]),
            (&self.proposals, &["open", "merged", "closed", "declined"]),
            (&self.releases, &["current", "moved", "withdrawn"]),
        ];
        for (family, values) in gauges {
            for s in values {
                let _ = family.get_or_create(&state(s));
            }
        }
        for reason in events::HttpRefusal::ALL {
            let _ = self.http_refused.get_or_create(&ReasonLabels {
                reason: reason.as_str().into(),
            });
        }
        for kind in crate::model::DriftKind::ALL {
            let labels = DriftLabels {
                kind: kind.as_str().into(),
            };
            let _ = self.drift.get_or_create(&labels);
            let _ = self.drift_found.get_or_create(&labels);
        }
        self.notifications.metrics().zero_series();
    }

    /// Where events offer notifications and commit statuses (started by the daemon).
    #[must_use]
    pub fn notifications(&self) -> &crate::notifications::Outbox {
        &self.notifications
    }

    /// Records a cycle that fetched the repos.
    pub fn fetched(&self) {
        if let Ok(mut g) = self.last_fetch.lock() {
            *g = Some(SystemTime::now());
        }
    }

    /// When the repos were last fetched.
    #[must_use]
    pub fn last_fetch(&self) -> Option<SystemTime> {
        self.last_fetch.lock().ok().and_then(|g| *g)
    }

    /// When the last cycle finished.
    #[must_use]
    pub fn last_cycle(&self) -> Option<SystemTime> {
        self.last_cycle.lock().ok().and_then(|g| *g)
    }

    /// The text exposition, with the state gauges read from `store` now; `resources` holds
    /// the kind and view status of every resource the status views list (the caller builds
    /// them with `ops::status_with`, so the gauge counts what `protond status` shows).
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub async fn render(
        &self,
        store: &Store,
        in_flight: usize,
        resources: &[(ResourceKind, ViewStatus)],
    ) -> Result<String, StateError> {
        // One scrape at a time: the state gauges are cleared and refilled.
        let _scrape = self.scrape.lock().await;
        self.resources.clear();
        for (kind, status) in resources {
            self.resources
                .get_or_create(&KindStatusLabels {
                    kind: kind.as_str().into(),
                    status: status.as_str().into(),
                })
                .inc();
        }
        self.rollouts.clear();
        for r in store.rollout_progress().await? {
            self.rollouts
                .get_or_create(&StateLabels {
                    state: r.state().as_str().into(),
                })
                .inc();
        }
        self.proposals.clear();
        for p in store.proposals().await? {
            self.proposals
                .get_or_create(&StateLabels {
                    state: p.state.as_str().into(),
                })
                .inc();
        }
        self.releases.clear();
        for v in store.template_versions().await? {
            if v.registered {
                self.releases
                    .get_or_create(&StateLabels {
                        state: v.tag_state.as_str().into(),
                    })
                    .inc();
            }
        }
        self.release_quarantined.clear();
        for q in store.quarantined().await? {
            self.release_quarantined
                .get_or_create(&ReleaseLabels {
                    template: q.0,
                    version: q.1.to_string(),
                })
                .set(1);
        }
        let drift = store.drift().await?;
        for kind in crate::model::DriftKind::ALL {
            let n = drift
                .values()
                .filter(|rs| rs.iter().any(|r| r.kind == kind))
                .count();
            self.drift
                .get_or_create(&DriftLabels {
                    kind: kind.as_str().into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.versions_behind.clear();
        let report = crate::report::build(&crate::report::read(store).await?);
        for ((template, kind), n) in crate::report::versions_behind(&report) {
            self.versions_behind
                .get_or_create(&TemplateBehindLabels {
                    template,
                    kind: kind.into(),
                })
                .set(i64::from(n));
        }
        let pending = store.needs_approval().await?.len();
        self.needs_approval
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.in_flight
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        self.last_fetch_success
            .set(self.last_fetch().map_or(0, |t| {
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            }));
        self.zero_series();
        self.encode().map_err(|_| StateError::Corrupt {
            table: "metrics",
            detail: "could not encode metrics".into(),
        })
    }

    /// The text exposition of every metric as it stands.
    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::events::{CycleFinished, DeploymentFinished};
    use super::*;
    use crate::model::DeploymentAction;
    use crate::state::Outcome;

    #[tokio::test]
    async fn render_reports_events_and_the_store_gauges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}/state.db", dir.path().display()))
            .await
            .expect("store");
        let t = Telemetry::new();
        DeploymentFinished {
            resource: "environment/dev",
            deployment: 1,
            kind: ResourceKind::Environment,
            action: DeploymentAction::Create,
            outcome: &Outcome::Interrupted,
            repo: "",
            spec_commit: None,
        }
        .emit(&t);
        CycleFinished::default().emit(&t);
        let text = t
            .render(
                &store,
                3,
                &[
                    (ResourceKind::Environment, ViewStatus::Deployed),
                    (ResourceKind::ServiceInstance, ViewStatus::CreateFailed),
                ],
            )
            .await
            .expect("render");
        for line in [
            "protond_deployments_total{kind=\"environment\",action=\"create\",outcome=\"interrupted\"} 1",
            "protond_reconcile_cycles_total 1",
            "protond_proposals_opened_total 0",
            "protond_deployments_in_flight 3",
            "protond_last_fetch_success_timestamp_seconds 0",
            "protond_resources{kind=\"environment\",status=\"deployed\"} 1",
            "protond_resources{kind=\"service_instance\",status=\"create_failed\"} 1",
            // Present from the start at zero: series nothing has moved yet.
            "protond_resources{kind=\"pipeline\",status=\"spec_invalid\"} 0",
            "protond_deployments_total{kind=\"pipeline\",action=\"delete\",outcome=\"failed\"} 0",
            "protond_webhooks_total{state=\"rejected\"} 0",
            "protond_http_refused_total{reason=\"host\"} 0",
            "protond_proposal_outcomes_total{outcome=\"close_failed\"} 0",
            "protond_releases{state=\"withdrawn\"} 0",
            "protond_notifications_dropped_total{transport=\"slack\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        t.fetched();
        let text = t.render(&store, 0, &[]).await.expect("render");
        let stamp = text
            .lines()
            .find_map(|l| l.strip_prefix("protond_last_fetch_success_timestamp_seconds "))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("the timestamp");
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        assert!(now - stamp < 60, "{stamp} vs {now}");
        // The refill of the state gauges keeps the zero series.
        assert!(
            text.lines()
                .any(|l| l == "protond_resources{kind=\"environment\",status=\"deployed\"} 0"),
            "{text}"
        );
    }
}
