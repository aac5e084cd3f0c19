//! Telling people: commit statuses on the spec commit of each deployment, and notifications
//! (deployment failed, rollout halted, release refused, drift found, conflict found, pull
//! request opened) to signed JSON webhooks and Slack-compatible incoming webhooks.
//!
//! The [`Outbox`] is fed by the typed telemetry events (`telemetry::events`: each `emit`
//! logs, counts and, for the events people are told about, offers a [`Notification`] or a
//! [`StatusUpdate`]), so the mapping from events to notifications lives in one place.
//! Offering never waits: each target has its own task fed by a bounded queue, and a full
//! queue drops the newest notification and counts it
//! (`protond_notifications_dropped_total{transport}`). Delivery (`deliver.rs`) retries with
//! exponential backoff and counts `protond_notifications_sent_total{transport,result}`.
//!
//! This module must never block or slow a cycle, decide anything about deployments, or put
//! a secret (signing secret, a URL holding a token, a forge token) in a log, an error or the
//! state store: targets are logged by name only.

mod deliver;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use crate::config::NotifyEvent;
use crate::config::{Config, ForgeKind};
use crate::forge::AnyForge;
pub use crate::forge::StatusState;

/// Something people are told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The event type (a target's `events` filter).
    pub event: NotifyEvent,
    /// The resource it is about, if one.
    pub resource: Option<String>,
    /// One line for people.
    pub summary: String,
    /// Event-specific fields (`template`, `version`, `error`, …), all text.
    pub details: BTreeMap<&'static str, String>,
}

impl Notification {
    /// A notification of `event` saying `summary`.
    #[must_use]
    pub fn new(event: NotifyEvent, summary: impl Into<String>) -> Self {
        Self {
            event,
            resource: None,
            summary: summary.into(),
            details: BTreeMap::new(),
        }
    }

    /// About resource `id`.
    #[must_use]
    pub fn resource(mut self, id: impl Display) -> Self {
        self.resource = Some(id.to_string());
        self
    }

    /// With the detail `key: value`.
    #[must_use]
    pub fn detail(mut self, key: &'static str, value: impl Display) -> Self {
        self.details.insert(key, value.to_string());
        self
    }
}

/// A commit status for a deployment: set on `commit` of spec repo `repo` as
/// `protond/<resource>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// The spec repo's configured name.
    pub repo: String,
    /// The spec commit that caused the deployment.
    pub commit: String,
    /// The resource id.
    pub resource: String,
    /// Pending, success or failure.
    pub state: StatusState,
    /// One line.
    pub description: String,
}

/// Labels of a sent (or given up) notification.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SentLabels {
    /// `webhook`, `slack` or `commit_status`.
    pub transport: String,
    /// `ok` (delivered) or `failed` (given up after its attempts, or refused).
    pub result: String,
}

/// Labels of a dropped notification.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    /// `webhook`, `slack` or `commit_status`.
    pub transport: String,
}

/// The counters the outbox moves; registered by `telemetry`.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// `protond_notifications_sent_total{transport,result}`.
    pub sent: Family<SentLabels, Counter>,
    /// `protond_notifications_dropped_total{transport}`.
    pub dropped: Family<TransportLabels, Counter>,
}

impl Metrics {
    /// Creates every transport's series at zero (see `Telemetry::zero_series`).
    pub fn zero_series(&self) {
        for transport in ["webhook", "slack", "commit_status"] {
            for result in ["ok", "failed"] {
                let _ = self.sent.get_or_create(&SentLabels {
                    transport: transport.into(),
                    result: result.into(),
                });
            }
            let _ = self.dropped.get_or_create(&TransportLabels {
                transport: transport.into(),
            });
        }
    }
}

impl Metrics {
    fn drop_one(&self, transport: &str) {
        self.dropped
            .get_or_create(&TransportLabels {
                transport: transport.into(),
            })
            .inc();
    }
}

/// The commit status transport's label.
const COMMIT_STATUS: &str = "commit_status";

/// One target's queue.
#[derive(Debug)]
struct Queue {
    name: String,
    transport: &'static str,
    events: Vec<NotifyEvent>,
    tx: mpsc::Sender<Arc<Notification>>,
}

/// The queues and tasks of a started outbox.
#[derive(Debug)]
struct Active {
    queues: Vec<Queue>,
    /// The spec repos with a forge API, and the commit status queue.
    statuses: Option<(BTreeSet<String>, mpsc::Sender<StatusUpdate>)>,
    workers: Vec<JoinHandle<()>>,
}

/// Where notifications are offered; nothing is sent until [`Outbox::start`].
#[derive(Debug, Default)]
pub struct Outbox {
    active: Mutex<Option<Active>>,
    metrics: Metrics,
}

impl Outbox {
    /// The counters, for registration.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn active(&self) -> std::sync::MutexGuard<'_, Option<Active>> {
        self.active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `n` for every target that takes its event type; never waits. A full queue
    /// drops `n` for that target and counts it.
    pub fn offer(&self, n: Notification) {
        let guard = self.active();
        let Some(active) = guard.as_ref() else {
            return;
        };
        let n = Arc::new(n);
        for q in active.queues.iter().filter(|q| q.events.contains(&n.event)) {
            if let Err(mpsc::error::TrySendError::Full(_)) = q.tx.try_send(n.clone()) {
                self.metrics.drop_one(q.transport);
                tracing::warn!(target = %q.name, event = n.event.as_str(), "Notification dropped: the target's queue is full (notifications.queue).");
            }
        }
    }

    /// Queues a commit status, if commit statuses are on and `u.repo` has a forge API;
    /// never waits.
    pub fn status(&self, u: StatusUpdate) {
        let guard = self.active();
        let Some((repos, tx)) = guard.as_ref().and_then(|a| a.statuses.as_ref()) else {
            return;
        };
        if !repos.contains(&u.repo) {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(u)) = tx.try_send(u) {
            self.metrics.drop_one(COMMIT_STATUS);
            tracing::warn!(resource = %u.resource, "Commit status dropped: the queue is full (notifications.queue).");
        }
    }

    /// Starts a task per target (and one for commit statuses) for `config`; `installation`
    /// goes into every payload. Does nothing when nothing is configured, or when started.
    pub fn start(&self, config: &Config, installation: &str) {
        let n = &config.notifications;
        let mut guard = self.active();
        if guard.is_some() || (n.targets.is_empty() && !n.commit_statuses) {
            return;
        }
        let settings = Arc::new(deliver::Settings::new(n, installation));
        let mut workers = Vec::new();
        let mut queues = Vec::new();
        for target in &n.targets {
            let (tx, rx) = mpsc::channel(n.queue);
            let transport = target.transport.as_str();
            let _ = self.metrics.dropped.get_or_create(&TransportLabels {
                transport: transport.into(),
            });
            queues.push(Queue {
                name: target.name.clone(),
                transport,
                events: target.events.clone(),
                tx,
            });
            workers.push(tokio::spawn(deliver::target_worker(
                target.clone(),
                rx,
                settings.clone(),
                self.metrics.clone(),
            )));
        }
        let forges: BTreeMap<String, AnyForge> = config
            .spec_repos
            .iter()
            .filter(|_| n.commit_statuses)
            .filter_map(|r| Some((r.name.clone(), r.forge.as_ref()?)))
            .filter(|(_, f)| f.kind != ForgeKind::Git)
            .map(|(name, f)| (name, AnyForge::new(f)))
            .collect();
        let statuses = (!forges.is_empty()).then(|| {
            let (tx, rx) = mpsc::channel(n.queue);
            let _ = self.metrics.dropped.get_or_create(&TransportLabels {
                transport: COMMIT_STATUS.into(),
            });
            let repos = forges.keys().cloned().collect();
            workers.push(tokio::spawn(deliver::status_worker(
                forges,
                rx,
                settings.clone(),
                self.metrics.clone(),
            )));
            (repos, tx)
        });
        if n.commit_statuses && statuses.is_none() {
            tracing::warn!(
                "notifications.commit_statuses is on, but no spec repo has a forge with an API (spec_repos.forge): no commit status is set."
            );
        }
        *guard = Some(Active {
            queues,
            statuses,
            workers,
        });
    }

    /// Test hook: takes every notification, and the commit statuses of `repos`, into the
    /// returned queues (64 each), with no task delivering them.
    #[cfg(test)]
    pub(crate) fn capture(
        &self,
        repos: &[&str],
    ) -> (
        mpsc::Receiver<Arc<Notification>>,
        mpsc::Receiver<StatusUpdate>,
    ) {
        let (tx, rx) = mpsc::channel(64);
        let (status_tx, status_rx) = mpsc::channel(64);
        *self.active() = Some(Active {
            queues: vec![Queue {
                name: "capture".into(),
                transport: "webhook",
                events: NotifyEvent::ALL.to_vec(),
                tx,
            }],
            statuses: Some((repos.iter().map(|r| (*r).to_string()).collect(), status_tx)),
            workers: Vec::new(),
        });
        (rx, status_rx)
    }

    /// Stops taking notifications and waits up to `deadline` for the queued ones to be
    /// sent; what is left is abandoned (and logged). Returns whether everything was sent.
    pub async fn drain(&self, deadline: Duration) -> bool {
        let Some(active) = self.active().take() else {
            return true;
        };
        drop(active.queues);
        drop(active.statuses);
        let until = tokio::time::Instant::now() + deadline;
        let mut left = 0;
        for mut w in active.workers {
            if tokio::time::timeout_at(until, &mut w).await.is_err() {
                w.abort();
                left += 1;
            }
        }
        if left > 0 {
            tracing::warn!(
                targets = left,
                "Notifications still queued at exit were abandoned (notifications.drain_timeout)."
            );
        }
        left == 0
    }
}

#[cfg(test)]
mod tests;
