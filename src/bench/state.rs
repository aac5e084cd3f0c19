//! The state store of a generated fleet, so that each bench cycle reads its facts (records,
//! rollouts, in-flight deployments, last failures, requests, pins, holds, approvals) from a
//! real `SQLite` file as the daemon's cycle does (`daemon::reconcile::read_facts`), inside the
//! timed region. Records are written as finished deployments would leave them.
//!
//! It writes only the bench's own store under its generated folder; it never deploys.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};

use crate::config::Config;
use crate::evaluate::Facts;
use crate::model::DeploymentAction;
use crate::state::{NewDeployment, Outcome, ResourceRecord, Store};

/// The fleet's store and a runtime to read it with from the bench's plain code.
pub(super) struct State {
    rt: tokio::runtime::Runtime,
    store: Store,
}

impl State {
    /// Opens (creating) the store `config` names.
    /// Closes the store's connections and waits for them.
    pub(super) fn close(&self) {
        self.rt.block_on(self.store.close());
    }

    pub(super) fn open(config: &Config) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let store = rt
            .block_on(Store::open(&config.state))
            .with_context(|| format!("cannot open the bench's state store {}", config.state))?;
        Ok(Self { rt, store })
    }

    /// What the daemon reads from the store at the start of each cycle.
    pub(super) fn facts(&self) -> Result<Facts> {
        self.rt
            .block_on(crate::daemon::reconcile::read_facts(
                &self.store,
                BTreeSet::new(),
                BTreeSet::new(),
                BTreeMap::new(),
                std::time::SystemTime::now(),
            ))
            .context("cannot read the facts from the bench's state store")
    }

    /// Records `records` as deployed: a history row started and finished with each, as the
    /// deployment lifecycle leaves them.
    pub(super) fn record(&self, records: &[ResourceRecord]) -> Result<()> {
        let t = std::time::Instant::now();
        self.rt.block_on(async {
            for r in records {
                let id = self.store.begin_deployment(&new_deployment(r)).await?;
                self.store
                    .finish_deployment(id, &Outcome::Succeeded(r.clone()))
                    .await?;
            }
            Ok::<_, crate::state::StateError>(())
        })?;
        eprintln!(
            "bench: {} deployments recorded in the state store in {:.1} s",
            records.len(),
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// The history row of a create that left `r`.
pub(super) fn new_deployment(r: &ResourceRecord) -> NewDeployment {
    NewDeployment {
        resource_id: r.id.clone(),
        kind: r.kind,
        repo: r.repo.clone(),
        environment: r.environment.clone(),
        action: DeploymentAction::Create,
        reason: None,
        template: r.template.clone(),
        from_version: None,
        to_version: r.version,
        input_hash: r.input_hash.clone(),
        rendered_hash: r.rendered_hash.clone(),
        spec_commit: r.spec_commit.clone(),
        placement: r.placement.clone(),
    }
}
