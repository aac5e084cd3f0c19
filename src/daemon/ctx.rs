//! The reconciler's context: the configuration, the backends behind their seams (store,
//! provisioners, pipelines), and the in-memory bookkeeping a cycle and its deployment tasks
//! share (claims, retry backoff, wake-ups). It holds no policy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, Semaphore, mpsc};
use tracing::Instrument as _;

use crate::config::Config;
use crate::desired;
use crate::provision::Provisioner;
use crate::provision::cloudformation::CloudFormation;
use crate::provision::codepipeline::CodePipeline;
use crate::provision::self_managed::SelfManaged;
use crate::state::{ResourceRecord, StateError, Store, WriterLock};

/// The wall clock the scheduler reads (soak times, maintenance windows); tests set their own.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The provisioners, by how a resource is provisioned.
#[derive(Clone)]
pub struct Provisioners {
    /// `CloudFormation` stacks.
    pub cloudformation: Arc<dyn Provisioner>,
    /// Self-managed (Terraform through the infrastructure repo).
    pub self_managed: Arc<dyn Provisioner>,
    /// `CodeBuild` provisioning.
    pub codebuild: Arc<dyn Provisioner>,
}

/// Everything a cycle needs: the config, the backends, and the in-memory bookkeeping.
pub struct Ctx {
    /// The compiled configuration, shared with the provisioners.
    pub config: Arc<Config>,
    /// State store.
    pub store: Store,
    /// The `CloudFormation` client (pipeline lookups, `protond status`).
    pub cfn: CloudFormation,
    /// `CodePipeline` (same SDK configuration).
    pub pipelines: CodePipeline,
    /// Metrics, moved only through typed events.
    pub telemetry: crate::telemetry::Telemetry,
    /// The problems the last cycle logged, so that an unchanged one is not logged as a
    /// warning every cycle.
    pub repeats: crate::telemetry::Repeats,
    /// Wakes the run loop for a cycle (webhooks, the API); what it fetches is in
    /// `fetch_request` (see [`Ctx::request_cycle`]).
    pub fetch_now: Notify,
    /// Deployments that failed since start.
    pub failed: AtomicU64,
    /// Deployments that succeeded since start.
    pub succeeded: AtomicU64,
    /// This installation's name (`protond:installation` on every stack it creates).
    pub installation: String,
    pub(super) provisioners: Provisioners,
    pub(super) clock: Clock,
    pub(super) previous: tokio::sync::Mutex<Option<Arc<desired::Snapshot>>>,
    pub(super) compute_cache: Mutex<desired::ComputeCache>,
    pub(super) permits: Arc<Semaphore>,
    pub(super) backoff: Mutex<BTreeMap<String, Backoff>>,
    inflight: Mutex<BTreeSet<String>>,
    idle: Notify,
    /// Notified whenever a deployment task ends (its claim released), for `reconcile
    /// --once`'s next cycle.
    ended: Notify,
    wake: mpsc::UnboundedSender<()>,
    proposer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<crate::propose::SyncReport>>>,
    proposal_backoff: Arc<crate::propose::Backoff>,
    fetch_request: Mutex<desired::Fetch>,
    /// The last failure to write a deployment to the state store (begin or finish).
    store_failure: Mutex<Option<String>>,
    /// The state store's writer lock, held as long as the context lives (and so as long as
    /// any deployment task or the HTTP server uses it); `None` in tests that build their
    /// own context.
    writer_lock: Mutex<Option<WriterLock>>,
    /// What the last cycle found invalid or unknown, for the status views (API, page,
    /// metrics); empty before the first cycle.
    findings: Mutex<Arc<crate::ops::Findings>>,
    /// The repos the last cycle could not fetch or read (`None` before the first cycle);
    /// recorded in the store whenever it changes, for `protond status`.
    skipped: Mutex<Option<Arc<[crate::state::SkippedRepo]>>>,
    /// The drift check's bookkeeping (when it last ran, whether one is asked for).
    pub drift: crate::drift::Runtime,
    /// What this replica may change without an elector (tests; everything by default);
    /// with one, [`Ctx::scope`] reads the leases it holds.
    scope: Mutex<Arc<crate::ha::shard::Scope>>,
    /// The elector on a PostgreSQL state (`None` on `SQLite`, whose writer lock makes this
    /// process the one writer): whether this replica leads, and may deploy now.
    elector: std::sync::OnceLock<Arc<crate::ha::Elector>>,
    /// The deployment tasks started (aborted when the lead is lost).
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// A resource's retry state after transient failures.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    /// Not before this instant.
    pub until: Instant,
    /// Failures in a row.
    pub attempts: u32,
}

/// Locks a mutex, recovering the data of a poisoned one (bookkeeping stays usable after a
/// panicking task).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ctx {
    /// Builds the context with the real provisioners; `wake` receives a message whenever a
    /// deployment finishes.
    #[must_use]
    pub fn new(
        config: Config,
        store: Store,
        cfn: CloudFormation,
        installation: String,
        wake: mpsc::UnboundedSender<()>,
    ) -> Arc<Self> {
        let config = Arc::new(config);
        let provisioners = Provisioners {
            cloudformation: Arc::new(cfn.clone()),
            self_managed: Arc::new(SelfManaged::new(config.clone(), store.clone())),
            codebuild: Arc::new(crate::provision::codebuild::CodeBuild::new(
                cfn.sdk_config(),
                &config,
            )),
        };
        Self::with_provisioners(config, store, cfn, provisioners, installation, wake)
    }

    /// Builds the context with the given provisioners (tests use [`crate::provision::fake`]).
    #[must_use]
    pub fn with_provisioners(
        config: Arc<Config>,
        store: Store,
        cfn: CloudFormation,
        provisioners: Provisioners,
        installation: String,
        wake: mpsc::UnboundedSender<()>,
    ) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(config.concurrency));
        let pipelines = CodePipeline::new(cfn.sdk_config());
        Arc::new(Self {
            config,
            store,
            cfn,
            pipelines,
            telemetry: crate::telemetry::Telemetry::new(),
            repeats: crate::telemetry::Repeats::default(),
            fetch_now: Notify::new(),
            failed: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            installation,
            provisioners,
            clock: Arc::new(SystemTime::now),
            previous: tokio::sync::Mutex::new(None),
            compute_cache: Mutex::new(desired::ComputeCache::default()),
            permits,
            backoff: Mutex::new(BTreeMap::new()),
            inflight: Mutex::new(BTreeSet::new()),
            idle: Notify::new(),
            ended: Notify::new(),
            wake,
            proposer: tokio::sync::Mutex::new(None),
            proposal_backoff: Arc::default(),
            fetch_request: Mutex::new(desired::Fetch::None),
            store_failure: Mutex::new(None),
            writer_lock: Mutex::new(None),
            findings: Mutex::default(),
            skipped: Mutex::new(None),
            drift: crate::drift::Runtime::default(),
            scope: Mutex::default(),
            elector: std::sync::OnceLock::new(),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// What this replica may change now (see [`crate::ha::shard::Scope`]): with an elector,
    /// the shards of the leases it holds at this moment; else what [`Ctx::set_scope`] set
    /// (everything by default).
    pub fn scope(&self) -> Arc<crate::ha::shard::Scope> {
        match self.elector.get() {
            Some(e) => Arc::new(crate::ha::shard::Scope::from_config(
                &self.config,
                e.settings().shards,
                e.held().leases.keys().map(String::as_str),
            )),
            None => lock(&self.scope).clone(),
        }
    }

    /// Sets what this replica may change (the elector, when the leases it holds change);
    /// the next cycle acts on it.
    #[allow(
        dead_code,
        reason = "the elector (issue 19) calls it once merged; tests now"
    )]
    pub fn set_scope(&self, scope: crate::ha::shard::Scope) {
        *lock(&self.scope) = Arc::new(scope);
    }

    /// Keeps the state store's writer lock for as long as this context lives (see
    /// [`super::context`]); a lock given earlier is released.
    pub fn hold_writer_lock(&self, writer_lock: WriterLock) {
        *lock(&self.writer_lock) = Some(writer_lock);
    }

    /// Replaces the wall clock the scheduler reads. Only before the first cycle.
    #[cfg(test)]
    pub fn set_clock(self: &mut Arc<Self>, clock: Clock) {
        if let Some(ctx) = Arc::get_mut(self) {
            ctx.clock = clock;
        }
    }

    /// Waits until no deployment task is running, or `deadline` passes. Returns whether idle.
    pub async fn wait_idle(&self, deadline: Option<Duration>) -> bool {
        let start = Instant::now();
        loop {
            let notified = self.idle.notified();
            if self.running().is_empty() {
                return true;
            }
            match deadline {
                Some(d) => {
                    let left = d.saturating_sub(start.elapsed());
                    if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                        return self.running().is_empty();
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Waits until one of `ids` (deployment tasks running when the caller looked) has ended,
    /// and returns the ones that ended; at once when none of them runs any more.
    pub(super) async fn wait_any_ended(&self, ids: &BTreeSet<String>) -> BTreeSet<String> {
        loop {
            let notified = self.ended.notified();
            let running = self.running();
            let ended: BTreeSet<String> = ids.difference(&running).cloned().collect();
            if !ended.is_empty() || ids.is_empty() {
                return ended;
            }
            notified.await;
        }
    }

    /// Waits for the pull-request pass started by the last cycle, if one is running, and
    /// returns what it did.
    pub async fn wait_proposals(&self) -> Option<crate::propose::SyncReport> {
        let handle = self.proposer.lock().await.take()?;
        handle.await.ok()
    }

    /// Stops the pull-request pass in progress, if any (the lead was lost).
    pub(super) async fn abort_proposals(&self) {
        if let Some(handle) = self.proposer.lock().await.take() {
            handle.abort();
        }
    }

    /// Starts a pull-request pass in the background unless one is still running.
    pub(super) async fn start_proposals(
        self: &Arc<Self>,
        snapshot: Arc<desired::Snapshot>,
        deployed: Vec<ResourceRecord>,
    ) {
        if !self.config.proposals.enabled
            || !self.config.spec_repos.iter().any(|r| r.forge.is_some())
        {
            return;
        }
        let mut slot = self.proposer.lock().await;
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let ctx = self.clone();
        // A shard's leader opens, updates and closes the pull requests of its shards' repos
        // only: the pass sees the others' repos as out of its config, and leaves them alone.
        let scope = self.scope();
        let config = if scope.is_everything() {
            self.config.clone()
        } else {
            let mut own = (*self.config).clone();
            own.spec_repos
                .retain(|r| scope.route(&r.name, true) == crate::ha::shard::Route::Here);
            Arc::new(own)
        };
        *slot = Some(tokio::spawn(
            async move {
                crate::propose::sync(
                    &config,
                    &ctx.store,
                    &ctx.telemetry,
                    &snapshot,
                    &deployed,
                    &ctx.proposal_backoff,
                )
                .await
            }
            .instrument(tracing::info_span!("proposals")),
        ));
    }

    /// Wakes the run loop for a cycle (without fetching), e.g. after an outcome was
    /// reported.
    pub fn poke(&self) {
        let _ = self.wake.send(());
    }

    /// Number of deployment tasks running.
    pub fn in_flight(&self) -> usize {
        lock(&self.inflight).len()
    }

    /// Makes this context a replica of a PostgreSQL state, led by `elector` (once).
    pub fn set_elector(&self, elector: Arc<crate::ha::Elector>) {
        let _ = self.elector.set(elector);
    }

    /// The elector, on a PostgreSQL state.
    pub fn elector(&self) -> Option<&Arc<crate::ha::Elector>> {
        self.elector.get()
    }

    /// Whether a deployment may start now: always on `SQLite` (the writer lock), and on
    /// PostgreSQL while a lease is held and trusted ([`crate::ha::Held::valid_now`]).
    pub fn may_deploy(&self) -> bool {
        self.elector()
            .is_none_or(|e| e.held().valid_now() && !e.has_stale())
    }

    /// Keeps the handle of a deployment task, to abort it if the lead is lost.
    pub(super) fn track(&self, task: tokio::task::AbortHandle) {
        let mut tasks = lock(&self.tasks);
        // Finished tasks go when the list is full (before it would grow): amortised constant
        // time per task. Pruning at every push was quadratic in a cycle that starts tens of
        // thousands of deployments (issue 20).
        if tasks.len() == tasks.capacity() {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(task);
    }

    /// Aborts every deployment task (the lead is lost: their rows stay in flight for the
    /// next leader to adopt); returns how many were running.
    pub(super) fn abort_deployments(&self) -> usize {
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        let running = tasks.iter().filter(|t| !t.is_finished()).count();
        for t in tasks {
            t.abort();
        }
        running
    }

    /// Queues cycle requests for other leaders: one forwarded webhook per entry of
    /// `repos` (`None`: every repo), which the leaders read from the store (each acts on
    /// those of its shards, see [`crate::ha::shard::Scope::takes_wakeup`]).
    fn forward(&self, elector: &crate::ha::Elector, repos: Vec<Option<String>>) {
        let store = self.store.clone();
        let by = elector.settings().replica_id.clone();
        tokio::spawn(async move {
            for repo in repos {
                if let Err(e) = store.push_wakeup(repo.as_deref(), &by).await {
                    tracing::warn!(error = %crate::error_chain(&e), "Could not queue the request for the leader.");
                }
            }
        });
    }

    /// Asks the run loop for a cycle now, fetching `fetch` first (a webhook names its repos;
    /// a rollout decision needs no fetch). On a follower, the request is queued in the store
    /// for the leader ("Following another replica: queued for the leader"); on a shard's
    /// leader, the repos of other shards are queued for their leaders, template repos and
    /// requests naming no repo for every other leader as well as here
    /// ([`crate::ha::shard::Scope::route`]).
    pub fn request_cycle(&self, fetch: desired::Fetch) {
        let Some(e) = self.elector() else {
            self.cycle_here(fetch);
            return;
        };
        if !e.held().leading() {
            let repos: Vec<Option<String>> = match fetch {
                desired::Fetch::Only(set) => set.into_iter().map(Some).collect(),
                _ => vec![None],
            };
            tracing::info!(repos = ?repos, "Following another replica: the cycle request is queued for the leader.");
            self.forward(e, repos);
            return;
        }
        let scope = self.scope();
        if scope.is_everything() {
            self.cycle_here(fetch);
            return;
        }
        let (here, queued, to) = self.route(&scope, fetch);
        if !queued.is_empty() {
            tracing::info!(repos = ?queued, to = %to, "Leading a shard: the cycle request is queued for the leader of the shard it concerns.");
            self.forward(e, queued);
        }
        if let Some(here) = here {
            self.cycle_here(here);
        }
    }

    /// Splits a sharded leader's request: the cycle it runs itself (`None`: none), what it
    /// queues, and for which shards (for the log).
    fn route(
        &self,
        scope: &crate::ha::shard::Scope,
        fetch: desired::Fetch,
    ) -> (Option<desired::Fetch>, Vec<Option<String>>, String) {
        use crate::ha::shard::Route;
        let desired::Fetch::Only(repos) = fetch else {
            // Every repo, or none (a decision taken through the API): every leader cycles.
            return (Some(fetch), vec![None], "every other shard".into());
        };
        let mut here = BTreeSet::new();
        let mut queued = Vec::new();
        let mut to = BTreeSet::new();
        for repo in repos {
            let spec = self.config.spec_repos.iter().any(|r| r.name == repo);
            match scope.route(&repo, spec) {
                Route::Here => {
                    here.insert(repo);
                }
                Route::Shard(n) => {
                    to.insert(format!("shard {n}"));
                    queued.push(Some(repo));
                }
                Route::Everywhere => {
                    to.insert("every other shard".to_string());
                    queued.push(Some(repo.clone()));
                    here.insert(repo);
                }
            }
        }
        let here = (!here.is_empty()).then_some(desired::Fetch::Only(here));
        (here, queued, to.into_iter().collect::<Vec<_>>().join(", "))
    }

    /// Asks the run loop of this replica for a cycle now, fetching `fetch` first (never
    /// queued for another: the webhooks other replicas queued for this leader come here).
    pub fn cycle_here(&self, fetch: desired::Fetch) {
        let mut pending = lock(&self.fetch_request);
        *pending = std::mem::take(&mut *pending).merge(fetch);
        drop(pending);
        self.fetch_now.notify_one();
    }

    /// Takes what the requests since the last call asked to fetch.
    pub fn take_fetch_request(&self) -> desired::Fetch {
        std::mem::take(&mut *lock(&self.fetch_request))
    }

    /// What the last cycle found invalid or unknown (see [`crate::ops::status_with`]).
    pub fn findings(&self) -> Arc<crate::ops::Findings> {
        lock(&self.findings).clone()
    }

    /// Replaces what the last cycle found (the cycle calls it after evaluating).
    pub(super) fn set_findings(&self, findings: crate::ops::Findings) {
        *lock(&self.findings) = Arc::new(findings);
    }

    /// The repos the last cycle could not fetch or read, and why (`/readyz`, the exit code
    /// of `reconcile --once`); empty before the first cycle.
    pub fn skipped(&self) -> Arc<[crate::state::SkippedRepo]> {
        lock(&self.skipped).clone().unwrap_or_else(|| Arc::new([]))
    }

    /// Replaces the list of skipped repos; records it in the store when it changed (or is
    /// this process's first), so that `protond status` shows it. A store that cannot
    /// record it is logged: the list is a report, and the cycle goes on.
    pub(super) async fn record_skipped(&self, repos: Vec<crate::state::SkippedRepo>) {
        let repos: Arc<[crate::state::SkippedRepo]> = repos.into();
        let changed = lock(&self.skipped)
            .replace(repos.clone())
            .is_none_or(|old| old != repos);
        if changed && let Err(e) = self.store.set_skipped_repos(&repos).await {
            tracing::warn!(error = %crate::error_chain(&e), "The skipped repos could not be recorded in the state store.");
        }
    }

    /// Takes the last failure to write a deployment to the state store, if any since the
    /// last call.
    pub fn take_store_failure(&self) -> Option<String> {
        lock(&self.store_failure).take()
    }

    pub(super) fn store_failed(&self, e: &StateError) {
        // The whole chain: a query error's cause (say, "database or disk is full") is in
        // its source.
        *lock(&self.store_failure) = Some(crate::error_chain(e));
    }

    /// The resources with a deployment task running in this process.
    pub(super) fn running(&self) -> BTreeSet<String> {
        lock(&self.inflight).clone()
    }

    /// Claims `id` for one deployment task: `None` when one runs already. The claim is
    /// released when the returned guard drops, however the task ends.
    pub(super) fn claim(self: &Arc<Self>, id: &str) -> Option<Claim> {
        lock(&self.inflight).insert(id.to_string()).then(|| Claim {
            ctx: self.clone(),
            id: id.to_string(),
        })
    }

    /// Time left before each backing-off resource may be retried.
    pub(super) fn backoff_remaining(&self) -> BTreeMap<String, Duration> {
        let now = Instant::now();
        lock(&self.backoff)
            .iter()
            .map(|(id, b)| (id.clone(), b.until.saturating_duration_since(now)))
            .collect()
    }

    /// Records a transient failure of `id`: the next try waits `delay(attempts)`.
    pub(super) fn back_off(&self, id: &str, delay: impl FnOnce(u32) -> Duration) {
        let mut map = lock(&self.backoff);
        let attempts = map.get(id).map_or(0, |b| b.attempts) + 1;
        map.insert(
            id.to_string(),
            Backoff {
                until: Instant::now() + delay(attempts),
                attempts,
            },
        );
    }

    /// Forgets `id`'s backoff after a success.
    pub(super) fn reset_backoff(&self, id: &str) {
        lock(&self.backoff).remove(id);
    }

    /// Asks every other shard's leader for a cycle (a request naming no repo, queued in the
    /// store): an environment deployed here has outputs their instances may wait on, and
    /// they would otherwise only see it at their next poll. Nothing when not sharded.
    pub(super) fn tell_other_shards(&self) {
        if let Some(e) = self.elector()
            && e.settings().shards > 1
        {
            self.forward(e, vec![None]);
        }
    }

    /// Wakes the scheduler after a deployment ended.
    pub(super) fn wake(&self) {
        let _ = self.wake.send(());
    }

    fn release(&self, id: &str) {
        let mut set = lock(&self.inflight);
        set.remove(id);
        if set.is_empty() {
            self.idle.notify_waiters();
        }
        self.ended.notify_waiters();
    }
}

/// A resource claimed for one deployment task; dropping it releases the claim.
pub(super) struct Claim {
    ctx: Arc<Ctx>,
    id: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.ctx.release(&self.id);
    }
}
