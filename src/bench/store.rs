//! `protond bench --postgres URL`: the state store's share of a cycle at fleet size, on
//! `SQLite` and on PostgreSQL side by side, for the same generated fleet.
//!
//! For each size and backend (a new `SQLite` file; a new database on the PostgreSQL server,
//! dropped afterwards), on a fresh store:
//!
//! * **deploy**: the store's writes of deploying the whole fleet (every environment and
//!   instance: a history row begun, then finished with its record, one after the other);
//! * **no-op cycle**: the daemon's store steps of a cycle (`record_catalog`, `waiting`,
//!   `read_facts`), then the evaluation (render, plan, schedule) on what they read; the
//!   store part and the whole are reported;
//! * **tag cycle**: the same after `bench-svc/v1.1` is tagged (a new release recorded, every
//!   instance planned to move to it, checked).
//!
//! Git is read once per size, before the stores are measured, so both backends evaluate the
//! same snapshots. It measures only: nothing is deployed, and it never touches a database
//! it did not create.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use sqlx::{Connection as _, Executor as _};

use crate::config::Config;
use crate::desired;
use crate::plan::{self, ActionKind, UpdateReason};
use crate::state::{Outcome, ResourceRecord, Store};

/// Figures of one fleet size on one backend.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoreFigures {
    /// Service instances.
    pub instances: usize,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Records written (environments and instances).
    pub records: usize,
    /// Writing every deployment and record.
    pub deploy: Duration,
    /// The no-op cycle's store steps.
    pub noop_store: Duration,
    /// The no-op cycle: store steps and evaluation.
    pub noop_cycle: Duration,
    /// The tag cycle's store steps.
    pub tag_store: Duration,
    /// The tag cycle: store steps and evaluation.
    pub tag_cycle: Duration,
}

/// Measures `instances` on a `SQLite` file under `dir` and on a new database of the
/// PostgreSQL server at `postgres` (its user may create databases).
///
/// # Errors
///
/// When generating fails, a store cannot be opened or written, or a cycle does not see what
/// it should (the figures would lie).
pub fn measure(dir: &Path, instances: usize, postgres: &str) -> Result<Vec<StoreFigures>> {
    std::fs::create_dir_all(dir)?;
    let config_path = super::generate(dir, instances)?;
    let config = super::load(&config_path)?;
    let (records, noop, tagged) = fleet(dir, &config, instances)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let sqlite = format!("sqlite://{}", dir.join("bench-state/state.db").display());
    let on_sqlite = rt.block_on(on_store(&sqlite, &config, &records, &noop, &tagged))?;
    let (name, url) = rt.block_on(new_database(postgres))?;
    let on_pg = rt.block_on(on_store(&url, &config, &records, &noop, &tagged));
    let dropped = rt.block_on(drop_database(postgres, &name));
    let on_pg = on_pg?;
    dropped?;
    let figures = |backend: &str, (deploy, noop, tag): Timings| StoreFigures {
        instances,
        backend: backend.into(),
        records: records.len(),
        deploy,
        noop_store: noop.0,
        noop_cycle: noop.1,
        tag_store: tag.0,
        tag_cycle: tag.1,
    };
    Ok(vec![
        figures("sqlite", on_sqlite),
        figures("postgres", on_pg),
    ])
}

/// Deploy time, then (store part, whole) of the no-op and the tag cycle.
type Timings = (Duration, (Duration, Duration), (Duration, Duration));

/// The fleet's records as deployed, and the snapshots of the no-op and the tag cycle.
fn fleet(
    dir: &Path,
    config: &Config,
    instances: usize,
) -> Result<(Vec<ResourceRecord>, desired::Snapshot, desired::Snapshot)> {
    let mut cache = desired::ComputeCache::default();
    // The generated config's own store: the environments recorded before the instances
    // are computed, as the daemon's cycles see them.
    let state = super::state::State::open(config)?;
    let (_, _, set, _) = super::cycle(config, None, true, &state, &mut cache)?;
    let envs: Vec<ResourceRecord> = super::as_deployed(&set)
        .into_iter()
        .filter(|r| r.kind == plan::ResourceKind::Environment)
        .collect();
    state.record(&envs)?;
    let (_, snapshot, set, _) = super::cycle(config, None, false, &state, &mut cache)?;
    let records = super::as_deployed(&set);
    if records.len() != instances + super::ENVIRONMENTS.len() {
        bail!(
            "{} records for {instances} instances: {:?}",
            records.len(),
            set.problems
        );
    }
    super::git(
        &dir.join("templates"),
        &["tag", "-a", "bench-svc/v1.1", "-m", "bench-svc 1.1"],
    )?;
    let tagged = desired::load_cached(config, Some(&snapshot), true);
    Ok((records, snapshot, tagged))
}

/// The figures on the store at `url` (new and empty).
async fn on_store(
    url: &str,
    config: &Config,
    records: &[ResourceRecord],
    noop: &desired::Snapshot,
    tagged: &desired::Snapshot,
) -> Result<Timings> {
    let store = Store::open(url).await?;
    let t = Instant::now();
    for r in records {
        let id = store
            .begin_deployment(&super::state::new_deployment(r))
            .await?;
        store
            .finish_deployment(id, &Outcome::Succeeded(r.clone()))
            .await?;
    }
    let deploy = t.elapsed();
    let mut cache = desired::ComputeCache::default();
    // The first cycle records the releases and fills the render cache, as a daemon's does.
    cycle(&store, config, noop, &mut cache).await?;
    let (noop_store, noop_cycle, eval) = cycle(&store, config, noop, &mut cache).await?;
    if eval.plan.changes().count() != 0 {
        bail!("the no-op cycle on {url} planned changes");
    }
    let (tag_store, tag_cycle, eval) = cycle(&store, config, tagged, &mut cache).await?;
    let moves = eval
        .schedule
        .decisions
        .iter()
        .filter(|d| {
            matches!(
                d.action.action,
                ActionKind::Update {
                    reason: UpdateReason::MinorUpgrade { .. }
                }
            )
        })
        .count();
    if moves != records.len() - super::ENVIRONMENTS.len() {
        bail!("the tag cycle on {url} moved {moves} instances");
    }
    Ok((deploy, (noop_store, noop_cycle), (tag_store, tag_cycle)))
}

/// A cycle's store steps as the daemon runs them, then its evaluation: (store part, whole).
async fn cycle(
    store: &Store,
    config: &Config,
    snapshot: &desired::Snapshot,
    cache: &mut desired::ComputeCache,
) -> Result<(Duration, Duration, crate::evaluate::Evaluation)> {
    use crate::daemon::reconcile;
    let t = Instant::now();
    reconcile::record_catalog(
        store,
        &snapshot.catalog,
        &crate::telemetry::Telemetry::new(),
    )
    .await?;
    let waiting = reconcile::waiting(store).await?;
    let facts = reconcile::read_facts(
        store,
        BTreeSet::new(),
        waiting,
        BTreeMap::new(),
        SystemTime::now(),
    )
    .await?;
    let store_part = t.elapsed();
    let eval = crate::evaluate::evaluate(snapshot, &facts, config, Some(cache));
    Ok((store_part, t.elapsed(), eval))
}

/// Creates a database with a new name on the server at `server`: (name, URL).
async fn new_database(server: &str) -> Result<(String, String)> {
    let name = format!("protond_bench_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(server).await.with_context(|| {
        format!(
            "cannot connect to the PostgreSQL server {}",
            crate::state::pg::redact(server)
        )
    })?;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .context("cannot create the bench database (the user needs CREATEDB)")?;
    let mut url = reqwest::Url::parse(server).context("the PostgreSQL URL does not parse")?;
    url.set_path(&name);
    Ok((name, url.to_string()))
}

/// Drops the bench database `name`.
async fn drop_database(server: &str, name: &str) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect(server).await?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .await
    .with_context(|| format!("cannot drop the bench database {name}"))?;
    Ok(())
}

/// The figures as a Markdown table, `SQLite` and PostgreSQL on adjacent rows.
#[must_use]
pub fn table(rows: &[StoreFigures]) -> String {
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let mut out = String::from(
        "| instances | backend | deploy (store writes, per record) | no-op cycle (store part) | tag cycle (store part) |\n|---:|---|---:|---:|---:|\n",
    );
    for f in rows {
        // Record counts are far below 2^52: the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let per = f.deploy.as_secs_f64() * 1000.0 / (f.records.max(1) as f64);
        let _ = writeln!(
            out,
            "| {} | {} | {} ({per:.2} ms) | {} ({}) | {} ({}) |",
            f.instances,
            f.backend,
            ms(f.deploy),
            ms(f.noop_cycle),
            ms(f.noop_store),
            ms(f.tag_cycle),
            ms(f.tag_store),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_puts_both_backends_of_a_size_side_by_side() {
        let ms = Duration::from_millis;
        let row = |backend: &str, deploy| StoreFigures {
            instances: 100,
            backend: backend.into(),
            records: 104,
            deploy: ms(deploy),
            noop_store: ms(5),
            noop_cycle: ms(40),
            tag_store: ms(6),
            tag_cycle: ms(50),
        };
        let t = table(&[row("sqlite", 208), row("postgres", 520)]);
        assert!(
            t.contains("| 100 | sqlite | 208 ms (2.00 ms) | 40 ms (5 ms) | 50 ms (6 ms) |"),
            "{t}"
        );
        assert!(t.contains("| 100 | postgres | 520 ms (5.00 ms) |"), "{t}");
    }
}
