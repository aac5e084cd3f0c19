//! The elector: a task that every `lease/3` records this replica, renews the leases it
//! holds, takes the leases it wants ([`super::wanted`]) and publishes [`Held`] on a
//! `watch`; it keeps the store's lease claim (the fence) equal to what it holds plus the
//! leases it lost while the work of their term may still run ([`Elector::work_stopped`]
//! clears those). Also the exclusive hold of `reconcile --once` and `import --apply`
//! ([`Elector::exclusive`]), and the leader's reading of the webhooks followers queue
//! ([`forwarded_wakeups`]).
//!
//! A renewal that fails, a store error, or a round that outlasts the trusted time loses
//! every lease. Stores and publishes only: it never reconciles or deploys.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Held, Observed, Settings, changes, shard, wanted};
use crate::state::lease::Wakeup;
use crate::state::{StateError, Store};

/// Why this replica cannot take part, or cannot hold every lease.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// Another replica holds a lease this command needs.
    #[error(
        "the state is being reconciled: lease {lease} is held by replica {holder} (epoch {epoch}) for {expires_in_ms} ms more; stop that `protond run` (or wait until its lease expires) and run this again"
    )]
    Held {
        /// The lease.
        lease: String,
        /// Its holder.
        holder: String,
        /// The holder's epoch.
        epoch: i64,
        /// Milliseconds until it expires unless renewed.
        expires_in_ms: i64,
    },
    /// The store failed.
    #[error("the leases could not be read or written")]
    Store(#[from] StateError),
}

/// Which leases the elector goes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// [`wanted`]'s answer (`protond run`).
    Elect,
    /// Every lease, taken once at start and kept (`reconcile --once`, `import --apply`).
    Exclusive,
}

/// One replica's elector; see the module doc.
pub struct Elector {
    store: Store,
    settings: Settings,
    mode: Mode,
    listen: Option<String>,
    started_at: String,
    /// When it started electing (orphans are taken only after one lease period).
    born: Instant,
    held: watch::Sender<Held>,
    observed: Mutex<Observed>,
    /// Leases lost (name, epoch) whose work may still run: still claimed.
    stale: Mutex<BTreeMap<String, i64>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Elector {
    fn build(store: Store, settings: Settings, listen: Option<String>, mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            store,
            settings,
            mode,
            listen,
            started_at: crate::state::now(),
            born: Instant::now(),
            held: watch::Sender::new(Held::default()),
            observed: Mutex::default(),
            stale: Mutex::default(),
            task: Mutex::new(None),
        })
    }

    /// Starts electing (`protond run`): the first round at once, then every `lease/3`.
    /// `listen` is where this replica serves HTTP (shown to the others).
    #[must_use]
    pub fn start(store: Store, settings: Settings, listen: Option<String>) -> Arc<Self> {
        let e = Self::build(store, settings, listen, Mode::Elect);
        e.spawn();
        e
    }

    /// Takes every lease (`shard-0` … `shard-{N-1}`) now and keeps them renewed, for a
    /// command that reconciles alone.
    ///
    /// # Errors
    ///
    /// [`HaError::Held`] naming the holder when another replica holds one (the leases
    /// taken meanwhile are given back); a store failure.
    pub async fn exclusive(store: Store, settings: Settings) -> Result<Arc<Self>, HaError> {
        let e = Self::build(store, settings, None, Mode::Exclusive);
        let t0 = Instant::now();
        let mut leases = BTreeMap::new();
        for name in e.settings.all_leases() {
            let got = e
                .store
                .acquire_lease(&name, &e.settings.replica_id, e.settings.lease)
                .await;
            match got {
                Ok(Some(epoch)) => {
                    leases.insert(name, epoch);
                }
                Ok(None) => {
                    e.give_back(&leases).await;
                    let holder = e.store.leases().await?.into_iter().find(|l| l.name == name);
                    return Err(HaError::Held {
                        lease: name,
                        holder: holder
                            .as_ref()
                            .map_or_else(String::new, |l| l.holder.clone()),
                        epoch: holder.as_ref().map_or(0, |l| l.epoch),
                        expires_in_ms: holder.map_or(0, |l| l.remaining_ms),
                    });
                }
                Err(err) => {
                    e.give_back(&leases).await;
                    return Err(err.into());
                }
            }
        }
        e.publish(Held {
            leases,
            trusted_until: Some(t0 + e.settings.trusted_for()),
        });
        e.spawn();
        Ok(e)
    }

    async fn give_back(&self, leases: &BTreeMap<String, i64>) {
        for (name, epoch) in leases {
            let _ = self
                .store
                .release_lease(name, &self.settings.replica_id, *epoch)
                .await;
        }
    }

    fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.settings.tick());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.round().await;
            }
        });
        *lock(&self.task) = Some(handle);
    }

    /// This replica's settings.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What this replica holds, published at every change and renewal.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Held> {
        self.held.subscribe()
    }

    /// What this replica holds now.
    #[must_use]
    pub fn held(&self) -> Held {
        self.held.borrow().clone()
    }

    /// Who leads and which replicas run, as last read.
    #[must_use]
    pub fn observed(&self) -> Observed {
        lock(&self.observed).clone()
    }

    /// Whether a lease lost this term is still claimed (its work not stopped yet): no new
    /// deployment may start until it is, whatever leases remain.
    pub fn has_stale(&self) -> bool {
        !lock(&self.stale).is_empty()
    }

    /// The work of the lost leases' terms has stopped: stop claiming them (the claim becomes
    /// what is held now, possibly nothing), and let the elector take leases again.
    pub fn work_stopped(&self) {
        lock(&self.stale).clear();
        self.set_fence(&self.held());
    }

    /// Stops electing and gives every lease back (a replica shutting down, after its work
    /// stopped), so another replica takes over at once; forgets this replica.
    pub async fn release(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        let held = self.held();
        self.give_back(&held.leases).await;
        if self.mode == Mode::Elect {
            let _ = self.store.forget_replica(&self.settings.replica_id).await;
        }
        if held.leading() {
            tracing::info!(leases = ?held.leases.keys().collect::<Vec<_>>(), "Released the lease for a fast handover.");
        }
        // The caller's work has stopped: nothing stale to keep claiming.
        self.held.send_replace(Held::default());
        self.work_stopped();
    }

    /// One round: heartbeat, renew, observe, acquire; a failure or a round that outlasts
    /// the trusted time loses everything.
    async fn round(&self) {
        let t0 = Instant::now();
        let before = self.held();
        let next = match tokio::time::timeout(
            self.settings.trusted_for(),
            self.try_round(&before, t0),
        )
        .await
        {
            Ok(Ok(next)) => next,
            Ok(Err(e)) => {
                if before.leading() {
                    tracing::warn!(error = %crate::error_chain(&e), "The state store failed during the lease renewal: the lead is lost.");
                } else {
                    tracing::debug!(error = %crate::error_chain(&e), "The state store failed during the election round.");
                }
                Held::default()
            }
            Err(_) => {
                if before.leading() {
                    tracing::warn!(
                        "The lease renewal took longer than the trusted time: the lead is lost."
                    );
                }
                Held::default()
            }
        };
        self.publish(next);
    }

    async fn try_round(&self, before: &Held, t0: Instant) -> Result<Held, StateError> {
        let s = &self.settings;
        if self.mode == Mode::Elect {
            self.store
                .heartbeat_replica(
                    &s.replica_id,
                    s.shard,
                    self.listen.as_deref(),
                    &self.started_at,
                    &s.sharding,
                )
                .await?;
        }
        let mut leases = BTreeMap::new();
        for (name, epoch) in &before.leases {
            if self
                .store
                .renew_lease(name, &s.replica_id, *epoch, s.lease)
                .await?
            {
                leases.insert(name.clone(), *epoch);
            }
        }
        let all = self.store.leases().await?;
        let replicas = if self.mode == Mode::Elect {
            self.store.replicas().await?
        } else {
            Vec::new()
        };
        let conflict = (self.mode == Mode::Elect)
            .then(|| shard::disagreement(&s.replica_id, &s.sharding, &replicas, s.lease))
            .flatten();
        // Replicas that disagree on the sharding would place repos on different shards:
        // none of them leads until they agree.
        let want: BTreeSet<String> = match (self.mode, &conflict) {
            (Mode::Elect, Some(_)) => BTreeSet::new(),
            (Mode::Elect, None) => wanted(s, &all, &replicas, self.born.elapsed())
                .into_iter()
                .collect(),
            (Mode::Exclusive, _) => leases.keys().cloned().collect(),
        };
        self.observe(all, replicas, conflict.map(|c| c.to_string()));
        // Leases not wanted any more are handed back (their work stops like a loss).
        let unwanted: Vec<(String, i64)> = leases
            .iter()
            .filter(|(n, _)| !want.contains(*n))
            .map(|(n, e)| (n.clone(), *e))
            .collect();
        for (name, epoch) in unwanted {
            self.store
                .release_lease(&name, &s.replica_id, epoch)
                .await?;
            leases.remove(&name);
        }
        // No new term while the work of a lost one may still run (lost in this round, or
        // earlier and not stopped yet).
        let lost_now = before.leases.len() != leases.len();
        if !lost_now && lock(&self.stale).is_empty() {
            let missing: Vec<&String> = want.iter().filter(|n| !leases.contains_key(*n)).collect();
            for name in missing {
                if let Some(epoch) = self
                    .store
                    .acquire_lease(name, &s.replica_id, s.lease)
                    .await?
                {
                    tracing::info!(lease = %name, epoch, replica = %s.replica_id, "Acquired the lease: leading.");
                    leases.insert(name.clone(), epoch);
                }
            }
        }
        let trusted_until = (!leases.is_empty()).then(|| t0 + s.trusted_for());
        Ok(Held {
            leases,
            trusted_until,
        })
    }

    fn observe(
        &self,
        leases: Vec<crate::state::lease::LeaseRecord>,
        replicas: Vec<crate::state::lease::ReplicaRecord>,
        conflict: Option<String>,
    ) {
        let mut o = lock(&self.observed);
        if o.conflict != conflict {
            if let Some(c) = &conflict {
                tracing::error!(problem = %c, "Refusing to lead: the replicas disagree on the sharding.");
            } else {
                tracing::info!("The replicas agree on the sharding again.");
            }
            o.conflict = conflict;
        }
        let first = o.leases.is_empty() && o.changes == 0;
        let seen = changes(&o.leases, &leases, first);
        o.changes += seen;
        o.leases = leases;
        if self.mode == Mode::Elect {
            o.replicas = replicas;
        }
    }

    /// Publishes `next`; the leases lost since the last publication stay claimed until
    /// [`Elector::work_stopped`].
    fn publish(&self, next: Held) {
        let prev = self.held();
        {
            let mut stale = lock(&self.stale);
            for (name, epoch) in &prev.leases {
                if next.leases.get(name) != Some(epoch) {
                    tracing::warn!(lease = %name, epoch, replica = %self.settings.replica_id, "Lost the lease: no longer leading.");
                    stale.insert(name.clone(), *epoch);
                }
            }
        }
        self.set_fence(&next);
        self.held.send_replace(next);
    }

    fn set_fence(&self, held: &Held) {
        let mut claim = held.claim();
        claim.extend(lock(&self.stale).iter().map(|(n, e)| (n.clone(), *e)));
        self.store.set_fence(&claim);
    }
}

/// How often the leader reads the queue of forwarded webhooks even without a notification.
pub const WAKEUP_POLL: Duration = Duration::from_secs(1);

/// Forwarded webhooks are kept this long in the queue.
const WAKEUP_KEEP: Duration = Duration::from_mins(10);

/// The leader's side of the webhooks other replicas queue: LISTENs on `protond_wakeup` (a
/// connection of its own, with the store's credentials) and reads the queue every second
/// as a fallback; calls `wake` with the new webhooks (their repo, `None`: every repo, and
/// who queued them). Runs until dropped.
pub async fn forwarded_wakeups(store: Store, wake: impl Fn(Vec<Wakeup>)) {
    let mut after = match store.last_wakeup().await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "Cannot read the queue of forwarded webhooks; reading it from the start.");
            0
        }
    };
    let mut listener = match crate::state::lease::wakeup_listener(&store).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "Cannot LISTEN for forwarded webhooks; reading the queue every second.");
            None
        }
    };
    let mut tick = tokio::time::interval(WAKEUP_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            n = async { match listener.as_mut() { Some(l) => l.recv().await.map(|_| ()), None => std::future::pending().await } } => {
                if let Err(e) = n {
                    tracing::debug!(error = %e, "The LISTEN connection failed; it reconnects.");
                }
            }
        }
        match store.wakeups_after(after, WAKEUP_KEEP).await {
            Ok(queued) if !queued.is_empty() => {
                after = queued.last().map_or(after, |w| w.id);
                wake(queued);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %crate::error_chain(&e), "Cannot read the queue of forwarded webhooks.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease long enough that a loaded machine renews it in time (the first test never
    /// waits for it to lapse).
    fn settings(id: &str) -> Settings {
        settings_lease(id, Duration::from_secs(5))
    }

    fn settings_lease(id: &str, lease: Duration) -> Settings {
        Settings {
            lease,
            replica_id: id.into(),
            shards: 1,
            shard: 0,
            sharding: String::new(),
        }
    }

    async fn pg_url() -> Option<String> {
        let Ok(admin) = std::env::var("PROTOND_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the PostgreSQL tests: set PROTOND_TEST_POSTGRES_URL (scripts/postgres)"
            );
            eprintln!("note: PROTOND_TEST_POSTGRES_URL is not set; PostgreSQL test skipped");
            return None;
        };
        Some(crate::state::testing::new_database(&admin).await)
    }

    async fn until_leading(rx: &mut watch::Receiver<Held>) -> Held {
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Held::leading))
            .await
            .expect("leads in time")
            .expect("elector alive")
            .clone()
    }

    #[tokio::test]
    async fn one_elector_leads_the_other_takes_over_after_a_release_and_exclusive_names_the_holder()
    {
        let Some(url) = pg_url().await else { return };
        let a_store = Store::open(&url).await.expect("open");
        let b_store = Store::open(&url).await.expect("open");
        let a = Elector::start(a_store.clone(), settings("a"), Some("127.0.0.1:1".into()));
        let held = until_leading(&mut a.subscribe()).await;
        assert_eq!(held.leases.get("shard-0"), Some(&1));
        assert!(held.valid_now());
        assert_eq!(a_store.fence(), "shard-0=1");
        let b = Elector::start(b_store.clone(), settings("b"), None);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!b.held().leading(), "one leader at a time");
        assert_eq!(b_store.fence(), "", "a follower claims nothing");
        let observed = b.observed();
        assert_eq!(observed.holder("shard-0"), Some(("a", 1)));
        assert_eq!(observed.replicas.len(), 2);
        // A one-off command is refused while a replica leads, naming it.
        let once = Store::open(&url).await.expect("open");
        let Err(HaError::Held { lease, holder, .. }) =
            Elector::exclusive(once, settings("once")).await
        else {
            panic!("exclusive must fail while a leads");
        };
        assert_eq!((lease.as_str(), holder.as_str()), ("shard-0", "a"));
        // A gives its lease back: B takes over at once, at the next epoch.
        a.release().await;
        assert_eq!(a_store.fence(), "");
        let held = until_leading(&mut b.subscribe()).await;
        assert_eq!(held.leases.get("shard-0"), Some(&2));
        assert_eq!(b_store.fence(), "shard-0=2");
        b.release().await;
    }

    #[tokio::test]
    async fn a_lost_lease_stays_claimed_until_the_work_stopped() {
        let Some(url) = pg_url().await else { return };
        let store = Store::open(&url).await.expect("open");
        let lease = Duration::from_millis(1500);
        let a = Elector::build(store.clone(), settings_lease("a", lease), None, Mode::Elect);
        a.round().await;
        assert!(a.held().leading());
        // Another replica takes the lease after it lapsed (as if A had been paused).
        tokio::time::sleep(lease + Duration::from_millis(200)).await;
        let other = Store::open(&url).await.expect("open");
        assert_eq!(
            other
                .acquire_lease("shard-0", "b", Duration::from_secs(30))
                .await
                .expect("acquire"),
            Some(2)
        );
        a.round().await;
        assert!(!a.held().leading());
        assert!(!a.held().valid_now());
        assert_eq!(store.fence(), "shard-0=1", "the stale claim stays");
        let err = store
            .forget_repo("after-losing", 1)
            .await
            .expect_err("fenced");
        assert!(crate::state::lease::is_fenced(&err), "{err:?}");
        a.work_stopped();
        assert_eq!(store.fence(), "");
    }
}
