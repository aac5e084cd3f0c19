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
//!
//! `protond bench shards` ([`measure_sharded`]): one PostgreSQL database holding a fleet of
//! `shards × N` instances; a single reconciler's no-op and tag cycles on the whole fleet,
//! then `shards` leaders at once (a thread and a connection pool each, started together),
//! each evaluating its shard's share ([`crate::ha::shard::Scope`]) of the same fleet.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use sqlx::{Connection as _, Executor as _};

use crate::config::Config;
use crate::desired;
use crate::ha::shard::Scope;
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
    let (config, (records, noop, tagged), rt) = prepared(dir, instances)?;
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
/// A generated fleet of `instances` in `dir`: its config, its records and snapshots (see
/// [`fleet`]), and a runtime to measure it with.
fn prepared(dir: &Path, instances: usize) -> Result<(Config, Fleet, tokio::runtime::Runtime)> {
    std::fs::create_dir_all(dir)?;
    let config_path = super::generate(dir, instances)?;
    let config = super::load(&config_path)?;
    let fleet = fleet(dir, &config, instances)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok((config, fleet, rt))
}

/// A fleet's records, its no-op snapshot and its tagged snapshot.
type Fleet = (Vec<ResourceRecord>, desired::Snapshot, desired::Snapshot);

fn fleet(dir: &Path, config: &Config, instances: usize) -> Result<Fleet> {
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
        bail!("the no-op cycle on PostgreSQL planned changes");
    }
    let (tag_store, tag_cycle, eval) = cycle(&store, config, tagged, &mut cache).await?;
    let moves = minor_upgrades(&eval);
    if moves != records.len() - super::ENVIRONMENTS.len() {
        bail!("the tag cycle on PostgreSQL moved {moves} instances");
    }
    Ok((deploy, (noop_store, noop_cycle), (tag_store, tag_cycle)))
}

/// How many of an evaluation's scheduled changes are minor upgrades.
fn minor_upgrades(eval: &crate::evaluate::Evaluation) -> usize {
    eval.schedule
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
        .count()
}

/// A cycle's store steps as the daemon runs them, then its evaluation: (store part, whole).
async fn cycle(
    store: &Store,
    config: &Config,
    snapshot: &desired::Snapshot,
    cache: &mut desired::ComputeCache,
) -> Result<(Duration, Duration, crate::evaluate::Evaluation)> {
    scoped_cycle(store, config, snapshot, cache, &Scope::all()).await
}

/// [`cycle`] of a leader holding `scope`.
async fn scoped_cycle(
    store: &Store,
    config: &Config,
    snapshot: &desired::Snapshot,
    cache: &mut desired::ComputeCache,
    scope: &Scope,
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
    let mut facts = facts;
    facts.scope = scope.clone();
    let store_part = t.elapsed();
    let eval = crate::evaluate::evaluate(snapshot, &facts, config, Some(cache));
    Ok((store_part, t.elapsed(), eval))
}

/// Min and median of timings.
fn min_median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (
        v.first().copied().unwrap_or_default(),
        v.get(v.len() / 2).copied().unwrap_or_default(),
    )
}

/// One reconciler's figures on a (sharded) fleet: min and median of the runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardFigures {
    /// Service instances of the whole fleet.
    pub fleet: usize,
    /// `single` (one reconciler, the whole fleet) or `shard K of N`.
    pub who: String,
    /// The instances it plans (its share).
    pub owned: usize,
    /// No-op cycle, store steps: (min, median).
    pub noop_store: (Duration, Duration),
    /// No-op cycle, store steps and evaluation.
    pub noop_cycle: (Duration, Duration),
    /// New-minor cycle (every owned instance planned to move), store steps.
    pub tag_store: (Duration, Duration),
    /// New-minor cycle, store steps and evaluation.
    pub tag_cycle: (Duration, Duration),
}

/// The timings of `runs` no-op and tag cycles of a leader holding `scope`, and how many
/// instances its tag cycle moves; `start` (when given) is waited on before each run, so
/// that the shards' leaders run their cycles at the same time.
async fn scoped_runs(
    url: &str,
    config: &Config,
    (noop, tagged): (&desired::Snapshot, &desired::Snapshot),
    scope: &Scope,
    runs: usize,
    start: Option<&std::sync::Barrier>,
) -> Result<(Vec<[Duration; 4]>, usize)> {
    let mut waited = 0;
    let result = async {
        let store = Store::open(url).await?;
        let mut cache = desired::ComputeCache::default();
        // Warm: the releases recorded, the render cache filled, as a running leader has them.
        scoped_cycle(&store, config, noop, &mut cache, scope).await?;
        scoped_cycle(&store, config, tagged, &mut cache, scope).await?;
        let mut out = Vec::new();
        let mut moved = 0;
        for _ in 0..runs {
            if let Some(b) = start {
                b.wait();
                waited += 1;
            }
            let (ns, nc, eval) = scoped_cycle(&store, config, noop, &mut cache, scope).await?;
            if eval.plan.changes().count() != 0 {
                bail!("the no-op cycle planned changes");
            }
            let (ts, tc, eval) = scoped_cycle(&store, config, tagged, &mut cache, scope).await?;
            moved = minor_upgrades(&eval);
            out.push([ns, nc, ts, tc]);
        }
        Ok((out, moved))
    }
    .await;
    // A leader that failed still meets the others at each start left, so none waits forever.
    if result.is_err()
        && let Some(b) = start
    {
        for _ in waited..runs {
            b.wait();
        }
    }
    result
}

fn shard_figures(fleet: usize, who: String, owned: usize, runs: &[[Duration; 4]]) -> ShardFigures {
    let col = |i: usize| min_median(runs.iter().map(|r| r[i]).collect());
    ShardFigures {
        fleet,
        who,
        owned,
        noop_store: col(0),
        noop_cycle: col(1),
        tag_store: col(2),
        tag_cycle: col(3),
    }
}

/// `shards` leaders of `per_shard × shards` instances on one new database of the
/// PostgreSQL server at `postgres`: a single reconciler on the whole fleet first, then every
/// shard's leader at once (`runs` each).
///
/// # Errors
///
/// When generating fails, the store cannot be written, or a cycle does not see what it
/// should (a no-op cycle with changes; shards whose moves do not add up to the fleet).
pub fn measure_sharded(
    dir: &Path,
    per_shard: usize,
    shards: u32,
    postgres: &str,
    runs: usize,
) -> Result<Vec<ShardFigures>> {
    let fleet_size = per_shard * usize::try_from(shards.max(1))?;
    let (config, (records, noop, tagged), rt) = prepared(dir, fleet_size)?;
    let (name, url) = rt.block_on(new_database(postgres))?;
    let result = sharded_on(&rt, &url, &config, &records, (&noop, &tagged), shards, runs);
    let dropped = rt.block_on(drop_database(postgres, &name));
    let out = result?;
    dropped?;
    Ok(out
        .into_iter()
        .map(|(who, owned, r)| shard_figures(fleet_size, who, owned, &r))
        .collect())
}

type Measured = Vec<(String, usize, Vec<[Duration; 4]>)>;

fn sharded_on(
    rt: &tokio::runtime::Runtime,
    url: &str,
    config: &Config,
    records: &[ResourceRecord],
    snapshots: (&desired::Snapshot, &desired::Snapshot),
    shards: u32,
    runs: usize,
) -> Result<Measured> {
    eprintln!("bench: recording {} deployed resources ...", records.len());
    rt.block_on(async {
        let store = Store::open(url).await?;
        for r in records {
            let id = store
                .begin_deployment(&super::state::new_deployment(r))
                .await?;
            store
                .finish_deployment(id, &Outcome::Succeeded(r.clone()))
                .await?;
        }
        anyhow::Ok(())
    })?;
    let instances = records.len() - super::ENVIRONMENTS.len();
    eprintln!("bench: a single reconciler on {instances} instances ...");
    let (single, moved) = rt.block_on(scoped_runs(
        url,
        config,
        snapshots,
        &Scope::all(),
        runs,
        None,
    ))?;
    if moved != instances {
        bail!("the single reconciler's tag cycle moved {moved} of {instances} instances");
    }
    let mut out = vec![("single".to_string(), instances, single)];
    if shards <= 1 {
        return Ok(out);
    }
    eprintln!("bench: {shards} shard leaders at once ...");
    let barrier = std::sync::Barrier::new(usize::try_from(shards)?);
    let per: Vec<Result<(Vec<[Duration; 4]>, usize)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..shards)
            .map(|k| {
                let barrier = &barrier;
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("cannot start the async runtime")?;
                    let scope = Scope::new(shards, BTreeSet::from([k]), BTreeMap::new());
                    rt.block_on(scoped_runs(
                        url,
                        config,
                        snapshots,
                        &scope,
                        runs,
                        Some(barrier),
                    ))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a shard's thread panicked")))
            })
            .collect()
    });
    let mut total = 0;
    for (k, r) in per.into_iter().enumerate() {
        let (timings, moved) = r?;
        total += moved;
        out.push((format!("shard {k} of {shards}"), moved, timings));
    }
    if total != instances {
        bail!("the shards' tag cycles moved {total} of {instances} instances");
    }
    Ok(out)
}

/// The sharded figures as a Markdown table (min / median).
#[must_use]
pub fn shard_table(rows: &[ShardFigures]) -> String {
    let ms = |(a, b): (Duration, Duration)| {
        format!(
            "{:.0} / {:.0} ms",
            a.as_secs_f64() * 1000.0,
            b.as_secs_f64() * 1000.0
        )
    };
    let mut out = String::from(
        "| fleet | reconciler | instances planned | no-op cycle (no fetch) | its store part | new minor | its store part |\n|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for f in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            f.fleet,
            f.who,
            f.owned,
            ms(f.noop_cycle),
            ms(f.noop_store),
            ms(f.tag_cycle),
            ms(f.tag_store),
        );
    }
    out
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

    #[test]
    fn the_shard_table_gives_min_and_median() {
        let ms = Duration::from_millis;
        let runs = [
            [ms(9), ms(90), ms(19), ms(190)],
            [ms(5), ms(50), ms(15), ms(150)],
            [ms(7), ms(70), ms(17), ms(170)],
        ];
        let f = shard_figures(300, "shard 1 of 3".into(), 97, &runs);
        let t = shard_table(&[f]);
        assert!(
            t.contains(
                "| 300 | shard 1 of 3 | 97 | 50 / 70 ms | 5 / 7 ms | 150 / 170 ms | 15 / 17 ms |"
            ),
            "{t}"
        );
    }
}
