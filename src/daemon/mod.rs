//! The long-running reconciler: one select loop over shutdown signals, the poll interval,
//! cron schedules, repo watchers and finished deployments, running one cycle at a time.
//!
//! Triggers only schedule a cycle; they never pass anything into it (the cycle reads the
//! repos itself). Triggers that arrive while a cycle runs are coalesced into one more cycle.
//! On the first SIGTERM or Ctrl-C the loop stops scheduling and waits up to the configured
//! grace period for running deployments to record their outcome; whatever is still running
//! then is adopted by the next start.
//!
//! On a PostgreSQL state several replicas run this loop: the elector ([`crate::ha`]) says
//! whether this one leads; it cycles only while it does, and when the lead is lost it stops
//! scheduling, drops the cycle in progress, aborts its deployment tasks (their rows stay in
//! flight and the next leader adopts them, as after a crash) and follows again. A leader
//! reads the webhooks followers queue; on SIGTERM it gives its lease back.

mod ctx;
pub mod customer;
pub mod drift;
pub mod gate;
mod lifecycle;
mod pipelines;
mod quarantine;
pub mod reconcile;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::desired::Fetch;
use crate::provision::cloudformation::{CloudFormation, Settings};
use crate::state::{Backend, Store, WriterLock};
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
    // On PostgreSQL, replicas share the store: who writes is decided by the leases
    // (`elect`, `exclusive`), not by a lock file.
    let lock = if Backend::of(&config.state) == Some(Backend::Postgres) {
        None
    } else {
        let lock = WriterLock::acquire(&config.state)?;
        tracing::debug!(lock_file = %lock.path().display(), "Holding the state store's writer lock.");
        Some(lock)
    };
    let store = Store::open_config(&config).await?;
    let installation = store.installation(config.installation.as_deref()).await?;
    if store.backend() == crate::state::Backend::Postgres {
        store.check_shards(config.ha.shards.max(1)).await?;
    }
    let cfn = CloudFormation::new(Settings::from_config(&config)).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let ctx = Ctx::new(config, store, cfn, installation, tx);
    if let Some(lock) = lock {
        ctx.hold_writer_lock(lock);
    }
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

/// How deep a chain of deployments `reconcile --once` follows (a deployment started by a
/// cycle that an earlier deployment's end ran): the bound that makes it end even if some
/// resource were redeployed after every deployment.
const ONCE_GENERATIONS: u32 = 20;

/// Runs cycles until nothing more starts and nothing runs. A cycle runs as soon as a
/// deployment ends while the last one left changes waiting on deployments (instances on
/// their environment's outputs, a later stage, the delete order), else once every running
/// deployment ended; the last cycle starts with nothing running and starts nothing.
pub async fn run_once(ctx: &Arc<Ctx>) -> Result<OnceReport, ReconcileError> {
    let mut report = OnceReport::default();
    let mut invalid = Vec::new();
    // The generation of each deployment started (1 for the first cycle's).
    let mut generations: BTreeMap<String, u32> = BTreeMap::new();
    let mut generation = 1;
    while generation <= ONCE_GENERATIONS {
        let before = ctx.running();
        let r = reconcile::cycle(ctx, Fetch::from(report.cycles == 0)).await?;
        report.cycles += 1;
        let running = ctx.running();
        for id in running.difference(&before) {
            generations.insert(id.clone(), generation);
        }
        invalid = r.invalid;
        report.waiting = r.waiting;
        report.problems = r.problems;
        let quiet = r.started == 0 && r.adopted == 0;
        if quiet && before.is_empty() && running.is_empty() {
            break;
        }
        let ended = if r.waiting_on_deployments > 0 {
            // A deployment that ended while the cycle ran is in neither set the wait
            // watches: its dependants start now, not when the next one ends.
            match ended_during(&before, &running, r.started + r.adopted) {
                Some(ended) => ended,
                None => ctx.wait_any_ended(&running).await,
            }
        } else {
            ctx.wait_idle(None).await;
            running
        };
        // The store cannot record deployments: stop rather than start more (once the running
        // ones ended).
        if let Some(e) = ctx.take_store_failure() {
            ctx.wait_idle(None).await;
            return Err(ReconcileError::Record(e));
        }
        generation = next_generation(&mut generations, &ended, generation);
    }
    ctx.wait_idle(None).await;
    if let Some(e) = ctx.take_store_failure() {
        return Err(ReconcileError::Record(e));
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

/// What ended while a cycle ran, `None` when nothing did: the deployments running before it
/// that no longer run, and (their ids unknown, so an empty set) any of the `started` this
/// cycle that already ended. Pure.
fn ended_during(
    before: &BTreeSet<String>,
    running: &BTreeSet<String>,
    started: usize,
) -> Option<BTreeSet<String>> {
    let ended: BTreeSet<String> = before.difference(running).cloned().collect();
    let still_running = running.difference(before).count();
    (!ended.is_empty() || still_running < started).then_some(ended)
}

/// The generation of the cycle after `ended` ended: one past the deepest of them (one past
/// `current` when none is known), forgetting them. Pure.
fn next_generation(
    generations: &mut BTreeMap<String, u32>,
    ended: &BTreeSet<String>,
    current: u32,
) -> u32 {
    ended
        .iter()
        .filter_map(|id| generations.remove(id))
        .max()
        .unwrap_or(current)
        + 1
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

/// The triggers of a cycle besides the wake-ups: the poll interval and the watched repos.
struct Triggers {
    /// The watched local repos, with their names; the watcher reports an index.
    watched: Vec<(PathBuf, String)>,
    _watcher: Option<notify::RecommendedWatcher>,
    watch_rx: Option<mpsc::UnboundedReceiver<usize>>,
    poll: tokio::time::Interval,
}

impl Triggers {
    fn new(ctx: &Ctx) -> Self {
        let watched = if ctx.config.watch {
            local_repo_paths(&ctx.config)
        } else {
            Vec::new()
        };
        let paths: Vec<PathBuf> = watched.iter().map(|(p, _)| p.clone()).collect();
        let (handle, watch_rx) = match crate::source::watch(&paths) {
            Ok((w, rx)) => (Some(w), Some(rx)),
            Err(e) => {
                tracing::warn!(error = %e, "Watching local repos is not available; relying on polling.");
                (None, None)
            }
        };
        let mut poll = tokio::time::interval(ctx.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            watched,
            _watcher: handle,
            watch_rx,
            poll,
        }
    }
}

/// What a change of watched repo `i` fetches: only that repo.
fn changed(watched: &[(PathBuf, String)], i: usize) -> Fetch {
    watched.get(i).map_or(Fetch::All, |(_, name)| {
        Fetch::Only(std::iter::once(name.clone()).collect())
    })
}

/// The next watched repo that changed (never, without a watcher).
async fn next_change(rx: &mut Option<mpsc::UnboundedReceiver<usize>>) -> Option<usize> {
    match rx.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Why the loop of cycles ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    /// SIGTERM or Ctrl-C.
    Shutdown,
    /// This replica lost its lease (PostgreSQL).
    LostLead,
}

/// Runs the daemon until a shutdown signal. On a PostgreSQL state (an elector is set, see
/// [`elect`]) it reconciles only while this replica leads, and follows otherwise.
pub async fn run(
    ctx: Arc<Ctx>,
    mut wake: mpsc::UnboundedReceiver<()>,
) -> Result<(), ReconcileError> {
    let mut triggers = Triggers::new(&ctx);
    tracing::info!(
        repos = ctx.config.template_repos.len() + ctx.config.spec_repos.len(),
        watched = triggers.watched.len(),
        poll_interval = ?ctx.config.poll_interval,
        "protond started."
    );
    ctx.drift.enable();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    match ctx.elector().cloned() {
        None => {
            let never = std::future::pending::<()>();
            cycles(&ctx, &mut wake, &mut triggers, &mut shutdown, never).await;
        }
        Some(elector) => replicated(&ctx, &elector, &mut wake, &mut triggers, &mut shutdown).await,
    }
    wind_down(&ctx).await;
    if let Some(elector) = ctx.elector() {
        // Deployments still running after the grace period are aborted (the next leader
        // adopts their rows). The lease is given back (and the claim cleared) only once
        // none runs; else it expires with the claim still held, fencing any straggler.
        ctx.abort_deployments();
        ctx.abort_proposals().await;
        if ctx.wait_idle(Some(Duration::from_secs(5))).await {
            elector.release().await;
        } else {
            tracing::warn!("Deployments still running at exit: the lease is left to expire.");
        }
    }
    Ok(())
}

/// Cycles on every trigger until shutdown, or until `lost` resolves (a cycle in progress
/// is then dropped).
async fn cycles(
    ctx: &Arc<Ctx>,
    wake: &mut mpsc::UnboundedReceiver<()>,
    t: &mut Triggers,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    lost: impl Future<Output = ()>,
) -> Stopped {
    tokio::pin!(lost);
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
            biased;
            () = shutdown.as_mut() => {
                tracing::info!(in_flight = ctx.in_flight(), grace = ?ctx.config.shutdown_grace, "Shutting down: no new deployments; waiting for running ones to record their outcome.");
                return Stopped::Shutdown;
            }
            () = lost.as_mut() => return Stopped::LostLead,
            _ = t.poll.tick() => { fetch = fetch.merge(Fetch::All); }
            Some(()) = wake.recv() => {}
            () = ctx.fetch_now.notified() => {
                tracing::info!("Cycle requested (webhook or API).");
            }
            Some(i) = next_change(&mut t.watch_rx) => {
                tracing::info!(repo = t.watched.get(i).map_or("", |(_, n)| n.as_str()), "A watched repo changed.");
                fetch = fetch.merge(changed(&t.watched, i));
            }
            () = tokio::time::sleep(cron_wait) => { fetch = fetch.merge(Fetch::All); }
            () = tokio::time::sleep(drift_wait) => {}
        }
        // Coalesce whatever else arrived meanwhile into this one cycle.
        while wake.try_recv().is_ok() {}
        if let Some(rx) = t.watch_rx.as_mut() {
            while let Ok(i) = rx.try_recv() {
                fetch = fetch.merge(changed(&t.watched, i));
            }
        }
        fetch = fetch.merge(ctx.take_fetch_request());
        tokio::select! {
            biased;
            () = lost.as_mut() => return Stopped::LostLead,
            r = reconcile::cycle(ctx, std::mem::take(&mut fetch)) => {
                if let Err(e) = r {
                    tracing::error!(error = %crate::error_chain(&e), "Reconcile cycle failed; retrying at the next trigger.");
                }
            }
        }
    }
}

/// On a PostgreSQL state: follow until this replica holds a lease, then cycle while it
/// holds it (reading the webhooks followers queue); when the lead is lost, abort the
/// deployments in flight (the next leader adopts their rows), and follow again.
async fn replicated(
    ctx: &Arc<Ctx>,
    elector: &Arc<crate::ha::Elector>,
    wake: &mut mpsc::UnboundedReceiver<()>,
    t: &mut Triggers,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) {
    let mut held = elector.subscribe();
    loop {
        // Following: no work of any term runs here, so a loss the elector reports now has
        // nothing left to stop.
        elector.work_stopped();
        if !elector.held().valid_now() {
            tokio::select! {
                () = shutdown.as_mut() => return,
                r = held.changed() => if r.is_err() { return },
            }
            continue;
        }
        let now = elector.held();
        tracing::info!(leases = ?now.leases, replica = %elector.settings().replica_id, "Leading: reconciling.");
        // A new term starts with a full fetch, whatever the timer says.
        t.poll.reset_immediately();
        let woken = ctx.clone();
        let forwarded = tokio::spawn(crate::ha::elector::forwarded_wakeups(
            ctx.store.clone(),
            move |queued| forwarded_here(&woken, queued),
        ));
        let stopped = cycles(ctx, wake, t, shutdown, until_lost(elector.subscribe())).await;
        forwarded.abort();
        if stopped == Stopped::Shutdown {
            return;
        }
        let aborted = ctx.abort_deployments();
        // A pull-request pass of the lost term stops too: the next leader's pass does its
        // work (its store writes would be refused by the fence anyway).
        ctx.abort_proposals().await;
        let mut idle = ctx.wait_idle(Some(Duration::from_secs(10))).await;
        tracing::warn!(
            aborted,
            idle,
            "Lost the lead: stopped scheduling cycles and aborted the deployments in flight (the next leader adopts them); following."
        );
        // The stale claim is dropped (and a new term may start) only once no task of this
        // term runs: until then its writes stay refused by the fence.
        while !idle {
            ctx.abort_deployments();
            idle = ctx.wait_idle(Some(Duration::from_secs(10))).await;
        }
        elector.work_stopped();
    }
}

/// Acts on the webhooks other replicas queued: those this leader takes (not its own, not
/// another shard's repos) become one cycle here.
fn forwarded_here(ctx: &Ctx, queued: Vec<crate::state::lease::Wakeup>) {
    let me = ctx
        .elector()
        .map(|e| e.settings().replica_id.clone())
        .unwrap_or_default();
    let scope = ctx.scope();
    let spec = |r: &str| ctx.config.spec_repos.iter().any(|s| s.name == r);
    let (taken, others): (Vec<_>, Vec<_>) = queued
        .into_iter()
        .filter(|w| w.received_by != me)
        .partition(|w| scope.takes_wakeup(w.repo.as_deref(), spec));
    if taken.is_empty() {
        tracing::debug!(
            skipped = others.len(),
            "Queued webhooks for other shards: nothing to do here."
        );
        return;
    }
    let from: std::collections::BTreeSet<&str> =
        taken.iter().map(|w| w.received_by.as_str()).collect();
    tracing::info!(count = taken.len(), from = %from.into_iter().collect::<Vec<_>>().join(","), "Webhooks forwarded by followers: cycle requested.");
    ctx.cycle_here(fetch_of(taken.into_iter().map(|w| w.repo).collect()));
}

/// What forwarded webhooks ask to fetch (a webhook naming no repo: all).
fn fetch_of(repos: Vec<Option<String>>) -> Fetch {
    repos.into_iter().fold(Fetch::None, |f, r| {
        f.merge(r.map_or(Fetch::All, |name| {
            Fetch::Only(std::iter::once(name).collect())
        }))
    })
}

/// Resolves when a lease of the term is lost, the leases held change, or they are no
/// longer trusted ([`crate::ha::Held::valid_now`]).
async fn until_lost(mut rx: tokio::sync::watch::Receiver<crate::ha::Held>) {
    let term = rx.borrow_and_update().leases.clone();
    loop {
        let held = rx.borrow_and_update().clone();
        let Some(until) = held
            .trusted_until
            .filter(|_| held.valid_now() && held.leases == term)
        else {
            return;
        };
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = tokio::time::sleep_until(until.into()) => {}
        }
    }
}

/// After the last cycle: waits (within the grace period) for deployments to record their
/// outcome and for the pull-request pass, and drains the notifications.
async fn wind_down(ctx: &Ctx) {
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
}

/// Makes `ctx` a replica of its PostgreSQL state: starts the elector (`listen`: where it
/// serves HTTP, shown to the others). Nothing on `SQLite`.
pub fn elect(ctx: &Ctx, listen: Option<String>) {
    if ctx.store.backend() != Backend::Postgres {
        return;
    }
    let settings = crate::ha::Settings::from_config(&ctx.config);
    tracing::info!(replica = %settings.replica_id, lease = ?settings.lease, "PostgreSQL state: electing a leader among the replicas.");
    ctx.set_elector(crate::ha::Elector::start(
        ctx.store.clone(),
        settings,
        listen,
    ));
}

/// Takes every lease for a command that reconciles alone (`reconcile --once`) on a
/// PostgreSQL state. Nothing on `SQLite` (the writer lock does it).
///
/// # Errors
///
/// [`crate::ha::HaError::Held`] naming the replica that holds a lease.
pub async fn exclusive(ctx: &Ctx) -> Result<(), crate::ha::HaError> {
    if ctx.store.backend() != Backend::Postgres {
        return Ok(());
    }
    let settings = crate::ha::Settings::from_config(&ctx.config);
    ctx.set_elector(crate::ha::Elector::exclusive(ctx.store.clone(), settings).await?);
    Ok(())
}

#[cfg(test)]
mod tests;
