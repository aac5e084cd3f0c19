//! The store's write generation, and the cycle's reads kept while it stays the same.
//!
//! Every write to a table a cycle reads (resources, deployments, rollouts, deploy requests,
//! holds, pins, approvals) bumps one counter in the same transaction: database triggers
//! (migration `0020_store_generation`), so writes by any process or replica count, the CLI's
//! and another shard leader's included. [`Store::cycle_reads`] reads the counter first and,
//! when it is where it was at the last full read, hands back that read instead of decoding
//! every row again (at 5,000 instances those decodes through sqlx's `Any` rows were most of a
//! no-op cycle). The counter is read before the rows, so a write that lands during a full read
//! moves the counter past the kept one and the next cycle reads again: a kept read is never
//! older than the counter it is kept under.
//!
//! It never writes (the triggers do), and it never decides anything from what it reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::Row as _;

use super::{DeployRequest, DeploymentRecord, PinRecord, ResourceRecord, StateError, Store};
use crate::model::Version;

/// What a cycle reads from the store, as the store's own readers return it.
#[derive(Debug, Clone, Default)]
pub struct CycleReads {
    /// The generation this was read at (`None`: the store has no counter; never kept).
    pub generation: Option<i64>,
    /// [`Store::in_flight`].
    pub in_flight: Vec<DeploymentRecord>,
    /// [`Store::rollouts`].
    pub rollouts: BTreeMap<(String, Version), (bool, String)>,
    /// [`Store::resources`].
    pub resources: Vec<ResourceRecord>,
    /// [`Store::quarantined`].
    pub quarantined: BTreeSet<(String, Version)>,
    /// [`Store::last_failures`].
    pub last_failures: Vec<DeploymentRecord>,
    /// [`Store::deploy_requests`].
    pub deploy_requests: BTreeMap<String, DeployRequest>,
    /// [`Store::pins`].
    pub pins: Vec<PinRecord>,
    /// [`Store::holds`].
    pub holds: Vec<crate::plan::holds::Hold>,
    /// [`Store::approvals`].
    pub approvals: Vec<crate::gate::Approval>,
}

/// The last full read, shared by every clone of a [`Store`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Kept(Arc<Mutex<Option<Arc<CycleReads>>>>);

impl Kept {
    /// The kept read when it was read at `generation`.
    fn at(&self, generation: Option<i64>) -> Option<Arc<CycleReads>> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.as_ref()
            .filter(|r| generation.is_some() && r.generation == generation)
            .cloned()
    }

    fn keep(&self, reads: Arc<CycleReads>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(reads);
    }
}

impl Store {
    /// The write generation: bumped by every write to a table [`Store::cycle_reads`] reads.
    /// `None` when the counter's row is missing.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn generation(&self) -> Result<Option<i64>, StateError> {
        let row = sqlx::query("SELECT n FROM store_generation WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(self.q("read the write generation"))?;
        row.map(|r| r.try_get::<i64, _>("n"))
            .transpose()
            .map_err(self.q("read the write generation"))
    }

    /// What a cycle reads from the store: the last full read when nothing was written since
    /// (shared, not copied), else every table read again.
    ///
    /// # Errors
    ///
    /// A store failure, or a row this version cannot read.
    pub async fn cycle_reads(&self) -> Result<Arc<CycleReads>, StateError> {
        let generation = self.generation().await?;
        if let Some(kept) = self.kept.at(generation) {
            return Ok(kept);
        }
        let reads = Arc::new(CycleReads {
            generation,
            in_flight: self.in_flight().await?,
            rollouts: self.rollouts().await?,
            resources: self.resources().await?,
            quarantined: self.quarantined().await?,
            last_failures: self.last_failures().await?,
            deploy_requests: self.deploy_requests().await?,
            pins: self.pins().await?,
            holds: self.holds().await?,
            approvals: self.approvals().await?,
        });
        if generation.is_some() {
            self.kept.keep(reads.clone());
        }
        Ok(reads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ForceCause;
    use crate::state::Outcome;
    use crate::state::tests::{new_dep, record};

    /// Deploys `id` through the store (the history row and the record), as a cycle would.
    async fn deploy(store: &Store, id: &str) {
        let started = store.begin_deployment(&new_dep(id)).await.expect("begin");
        store
            .finish_deployment(started, &Outcome::Succeeded(record(id)))
            .await
            .expect("finish");
    }

    /// Unchanged: the same read, shared. Any write (this store's, another process's, a bare
    /// statement's) reads again and sees it.
    #[tokio::test]
    async fn a_kept_read_lasts_until_any_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = crate::state::testing::url(dir.path()).await;
        let store = Store::open(&url).await.expect("open");
        let other = Store::open(&url).await.expect("open a second time");
        deploy(&store, "env-a").await;
        let first = store.cycle_reads().await.expect("reads");
        assert_eq!(first.resources.len(), 1);
        let again = store.cycle_reads().await.expect("reads");
        assert!(
            Arc::ptr_eq(&first, &again),
            "nothing written: the same read"
        );
        // Reads of other tables write nothing that counts.
        store.overview().await.expect("overview");
        assert!(Arc::ptr_eq(
            &first,
            &store.cycle_reads().await.expect("reads")
        ));

        // Another process's write.
        deploy(&other, "env-b").await;
        let after = store.cycle_reads().await.expect("reads");
        assert!(!Arc::ptr_eq(&first, &after));
        assert_eq!(after.resources.len(), 2);

        // A deploy request (another table), then a bare DELETE as an operator's tool would.
        other
            .request_deploy("env-a", ForceCause::Operator, "ops")
            .await
            .expect("request");
        let requested = store.cycle_reads().await.expect("reads");
        assert_eq!(requested.deploy_requests.len(), 1);
        sqlx::query("DELETE FROM deploy_requests")
            .execute(&other.pool)
            .await
            .expect("delete");
        assert!(
            store
                .cycle_reads()
                .await
                .expect("reads")
                .deploy_requests
                .is_empty()
        );
        assert!(
            store.generation().await.expect("generation") > first.generation,
            "every write moved the generation on"
        );
    }

    /// A store without the counter's row reads every time and keeps nothing.
    #[tokio::test]
    async fn without_a_counter_every_read_is_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&crate::state::testing::url(dir.path()).await)
            .await
            .expect("open");
        sqlx::query("DELETE FROM store_generation")
            .execute(&store.pool)
            .await
            .expect("delete");
        let first = store.cycle_reads().await.expect("reads");
        assert_eq!(first.generation, None);
        assert!(!Arc::ptr_eq(
            &first,
            &store.cycle_reads().await.expect("reads")
        ));
    }
}
