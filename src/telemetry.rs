//! Metrics in the Prometheus/OpenMetrics text format.
//!
//! Counters and the cycle histogram are updated where things happen. Gauges that describe
//! the state store (resources, rollouts, pull requests) are set from it at scrape time, so
//! they are right even after a restart. Labels are kinds, actions, outcomes and states, never
//! stack or resource names, so the series count stays bounded.

use std::sync::Mutex;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// Labels of a state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindStatusLabels {
    /// Resource kind.
    pub kind: String,
    /// Status.
    pub status: String,
}

/// Labels of a state count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// State.
    pub state: String,
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    /// Reconcile cycles run.
    pub cycles: Counter,
    /// Cycle duration in seconds.
    pub cycle_seconds: Histogram,
    /// Finished deployments.
    pub deployments: Family<DeploymentLabels, Counter>,
    /// Failed fetches.
    pub fetch_failures: Family<SourceLabels, Counter>,
    /// Pull requests opened.
    pub proposals_opened: Counter,
    /// Webhook deliveries by result.
    pub webhooks: Family<StateLabels, Counter>,
    resources: Family<KindStatusLabels, Gauge>,
    rollouts: Family<StateLabels, Gauge>,
    proposals: Family<StateLabels, Gauge>,
    in_flight: Gauge,
    last_fetch_age: Gauge,
    last_fetch: Mutex<Option<SystemTime>>,
    last_cycle: Mutex<Option<SystemTime>>,
    scrape: tokio::sync::Mutex<()>,
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
        let fetch_failures = Family::<SourceLabels, Counter>::default();
        let proposals_opened = Counter::default();
        let webhooks = Family::<StateLabels, Counter>::default();
        let resources = Family::<KindStatusLabels, Gauge>::default();
        let rollouts = Family::<StateLabels, Gauge>::default();
        let proposals = Family::<StateLabels, Gauge>::default();
        let in_flight = Gauge::default();
        let last_fetch_age = Gauge::default();
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
            "webhooks",
            "Webhook deliveries by result (accepted, ignored, rejected)",
            webhooks.clone(),
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
        registry.register(
            "deployments_in_flight",
            "Deployments running now",
            in_flight.clone(),
        );
        registry.register(
            "last_fetch_age_seconds",
            "Seconds since the repos were last fetched (-1 before the first fetch)",
            last_fetch_age.clone(),
        );
        Self {
            registry,
            cycles,
            cycle_seconds,
            deployments,
            fetch_failures,
            proposals_opened,
            webhooks,
            resources,
            rollouts,
            proposals,
            in_flight,
            last_fetch_age,
            last_fetch: Mutex::new(None),
            last_cycle: Mutex::new(None),
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts a finished deployment.
    pub fn deployment(&self, kind: &str, action: &str, outcome: &str) {
        self.deployments
            .get_or_create(&DeploymentLabels {
                kind: kind.into(),
                action: action.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Records a cycle that fetched the repos.
    pub fn fetched(&self) {
        if let Ok(mut g) = self.last_fetch.lock() {
            *g = Some(SystemTime::now());
        }
    }

    /// Records a finished cycle.
    pub fn cycled(&self) {
        if let Ok(mut g) = self.last_cycle.lock() {
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

    /// The text exposition, with the state gauges read from `store` now.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub async fn render(&self, store: &Store, in_flight: usize) -> Result<String, StateError> {
        // One scrape at a time: the state gauges are cleared and refilled.
        let _scrape = self.scrape.lock().await;
        self.resources.clear();
        for r in store.resources().await? {
            self.resources
                .get_or_create(&KindStatusLabels {
                    kind: r.kind.as_str().into(),
                    status: r.status.clone(),
                })
                .inc();
        }
        self.rollouts.clear();
        for r in crate::ops::rollouts(store).await? {
            let state = if r.halted.is_some() {
                "halted"
            } else if r.done == r.total {
                "complete"
            } else {
                "in_progress"
            };
            self.rollouts
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .inc();
        }
        self.proposals.clear();
        for p in store.proposals().await? {
            self.proposals
                .get_or_create(&StateLabels { state: p.state })
                .inc();
        }
        self.in_flight
            .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        self.last_fetch_age.set(self.last_fetch().map_or(-1, |t| {
            i64::try_from(t.elapsed().unwrap_or_default().as_secs()).unwrap_or(i64::MAX)
        }));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).map_err(|_| {
            StateError::Corrupt {
                table: "metrics",
                detail: "could not encode metrics".into(),
            }
        })?;
        Ok(out)
    }
}
