//! The long-running reconciler: one select loop over shutdown signals, the poll interval,
//! cron schedules, repo watchers and finished deployments, running one cycle at a time.
//!
//! Triggers only schedule a cycle; they never pass anything into it (the cycle reads the
//! repos itself). Triggers that arrive while a cycle runs are coalesced into one more cycle.
//! On the first SIGTERM or Ctrl-C the loop stops scheduling and waits up to the configured
//! grace period for running deployments to record their outcome; whatever is still running
//! then is adopted by the next start.

mod ctx;
pub mod customer;
pub mod drift;
pub mod gate;
mod lifecycle;
mod pipelines;
mod quarantine;
pub mod reconcile;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::desired::Fetch;
use crate::provision::cloudformation::{CloudFormation, Settings};
use crate::state::{Store, WriterLock};
pub use ctx::Ctx;
pub use reconcile::ReconcileError;

/// Builds the context of a reconciling process (`protond run`, `protond reconcile`) from a
/// config. It first takes the state store's writer lock, before opening the store, and the
/// context keeps it for as long as it lives: a second writer on the same state file is
/// refused at once and never touches the store.
///
/// # Errors
///
/// [`crate::state::StateError::Locked`] when another process holds the lock, or any other
/// failure to lock or open the store.
pub async fn context(
    config: Config,
) -> Result<(Arc<Ctx>, mpsc::UnboundedReceiver<()>), crate::state::StateError> {
    let lock = WriterLock::acquire(&config.state)?;
    tracing::debug!(lock_file = %lock.path().display(), "Holding the state store's writer lock.");
    let store = Store::open(&config.state).await?;
    let installation = store.installation(config.installation.as_deref()).await?;
    if store.backend() == crate::state::Backend::Postgres {
        store.check_shards(config.ha.shards).await?;
    }
    let cfn = CloudFormation::new(Settings::from_config(&config)).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let ctx = Ctx::new(config, store, cfn, installation, tx);
    ctx.hold_writer_lock(lock);
    ctx.telemetry
        .notifications()
        .start(&ctx.config, &ctx.installation);
    Ok((ctx, rx))
}

/// What `reconcile --once` found.
#[derive(Debug, Clone, Default)]
pub struct OnceReport {
    /// Cycles run.
    pub cycles: usize,
    /// Deployments that succeeded.
    pub succeeded: u64,
    /// Deployments that failed.
    pub failed: u64,
    /// Resources whose last deployment failed (including earlier runs) or whose desired
    /// state is invalid.
    pub failing: Vec<String>,
    /// Self-managed deployments waiting for `protond notify`.
    pub waiting: usize,
    /// Problems of the last cycle (bad spec files, unreadable repos, refused deletions).
    pub problems: Vec<String>,
}

/// Runs cycles until nothing more starts, waiting for every deployment in between.
pub async fn run_once(ctx: &Arc<Ctx>) -> Result<OnceReport, ReconcileError> {
    let mut report = OnceReport::default();
    let mut invalid = Vec::new();
    for i in 0..20 {
        let r = reconcile::cycle(ctx, Fetch::from(i == 0)).await?;
        report.cycles += 1;
        ctx.wait_idle(None).await;
        // The store cannot record deployments: stop rather than start more.
        if let Some(e) = ctx.take_store_failure() {
            return Err(ReconcileError::Record(e));
        }
        invalid = r.invalid;
        report.waiting = r.waiting;
        report.problems = r.problems;
        if r.started == 0 && r.adopted == 0 {
            break;
        }
    }
    ctx.wait_proposals().await;
    ctx.telemetry
        .notifications()
        .drain(ctx.config.notifications.drain_timeout)
        .await;
    report.failing.extend(invalid);
    report.succeeded = ctx.succeeded.load(Ordering::Relaxed);
    report.failed = ctx.failed.load(Ordering::Relaxed);
    for r in ctx.store.resources().await? {
        if r.status != crate::model::ResourceStatus::Deployed {
            report.failing.push(r.id);
        }
    }
    // A create that failed (or met a foreign stack) has no record: its last deployment says.
    for d in ctx.store.last_failures().await? {
        let id = d.deployment.resource_id;
        if !d.retryable && !report.failing.contains(&id) {
            report.failing.push(id);
        }
    }
    Ok(report)
}

/// The local repos (plain paths and `file://` URLs that exist), with their names.
fn local_repo_paths(config: &Config) -> Vec<(PathBuf, String)> {
    config
        .template_repos
        .iter()
        .map(|r| (r.url.clone(), r.name.clone()))
        .chain(
            config
                .spec_repos
                .iter()
                .map(|r| (r.url.clone(), r.name.clone())),
        )
        .filter_map(|(url, name)| {
            let path = if let Some(path) = url.strip_prefix("file://") {
                PathBuf::from(path)
            } else if url.contains("://") {
                return None;
            } else {
                PathBuf::from(url)
            };
            path.exists().then_some((path, name))
        })
        .collect()
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn next_cron(config: &Config) -> Option<Duration> {
    let now = std::time::SystemTime::now();
    config
        .schedules
        .iter()
        .filter_map(|s| s.upcoming(chrono::Utc).next())
        .map(|t| {
            let secs = u64::try_from(t.timestamp()).unwrap_or(0);
            let at = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            at.duration_since(now).unwrap_or(Duration::ZERO)
        })
        .min()
}

/// Runs the daemon until a shutdown signal.
pub async fn run(
    ctx: Arc<Ctx>,
    mut wake: mpsc::UnboundedReceiver<()>,
) -> Result<(), ReconcileError> {
    let watched = if ctx.config.watch {
        local_repo_paths(&ctx.config)
    } else {
        Vec::new()
    };
    let paths: Vec<PathBuf> = watched.iter().map(|(p, _)| p.clone()).collect();
    // The watcher reports an index into `paths`: fetch only the repo that changed.
    let changed = |i: usize| {
        watched.get(i).map_or(Fetch::All, |(_, name)| {
            Fetch::Only(std::iter::once(name.clone()).collect())
        })
    };
    let (_watcher, mut watch_rx) = match crate::source::watch(&paths) {
        Ok((w, rx)) => (Some(w), Some(rx)),
        Err(e) => {
            tracing::warn!(error = %e, "Watching local repos is not available; relying on polling.");
            (None, None)
        }
    };
    tracing::info!(
        repos = ctx.config.template_repos.len() + ctx.config.spec_repos.len(),
        watched = paths.len(),
        poll_interval = ?ctx.config.poll_interval,
        "protond started."
    );
    ctx.drift.enable();
    let mut poll = tokio::time::interval(ctx.config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut fetch = Fetch::All;
    loop {
        let cron_wait = next_cron(&ctx.config).unwrap_or(Duration::from_hours(8760));
        // A cycle when the drift check is due (it starts beside that cycle).
        let drift_wait = ctx
            .config
            .drift
            .interval
            .unwrap_or(Duration::from_hours(8760));
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!(in_flight = ctx.in_flight(), grace = ?ctx.config.shutdown_grace, "Shutting down: no new deployments; waiting for running ones to record their outcome.");
                break;
            }
            _ = poll.tick() => { fetch = fetch.merge(Fetch::All); }
            Some(()) = wake.recv() => {}
            () = ctx.fetch_now.notified() => {
                tracing::info!("Cycle requested (webhook or API).");
            }
            Some(i) = async { match watch_rx.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                tracing::info!(repo = watched.get(i).map_or("", |(_, n)| n.as_str()), "A watched repo changed.");
                fetch = fetch.merge(changed(i));
            }
            () = tokio::time::sleep(cron_wait) => { fetch = fetch.merge(Fetch::All); }
            () = tokio::time::sleep(drift_wait) => {}
        }
        // Coalesce whatever else arrived meanwhile into this one cycle.
        while wake.try_recv().is_ok() {}
        if let Some(rx) = watch_rx.as_mut() {
            while let Ok(i) = rx.try_recv() {
                fetch = fetch.merge(changed(i));
            }
        }
        fetch = fetch.merge(ctx.take_fetch_request());
        if let Err(e) = reconcile::cycle(&ctx, std::mem::take(&mut fetch)).await {
            tracing::error!(error = %e, "Reconcile cycle failed; retrying at the next trigger.");
        }
    }
    let idle = ctx.wait_idle(Some(ctx.config.shutdown_grace)).await;
    // A pull-request pass cut short is safe (the next start finds what it opened), but let
    // it finish within the grace period.
    let _ = tokio::time::timeout(ctx.config.shutdown_grace, ctx.wait_proposals()).await;
    ctx.telemetry
        .notifications()
        .drain(ctx.config.notifications.drain_timeout)
        .await;
    if idle {
        tracing::info!("All deployments recorded; bye.");
    } else {
        tracing::warn!(
            in_flight = ctx.in_flight(),
            "Grace period over; unfinished deployments will be adopted at the next start."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
