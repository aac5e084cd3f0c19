//! Leases, replicas and forwarded webhooks in the shared PostgreSQL state (issue 19).
//!
//! A lease (`shard-0`, `shard-1`, …) is held by one replica until it expires on the
//! database's clock; every change of holder adds one to its epoch. The holder claims its
//! leases with [`Store::set_fence`]; the database's fence (`migrations/postgres/0016_ha.sql`)
//! then refuses every write of protond's state that claims a lease no longer held at that
//! epoch. Replicas record themselves in `replicas`; followers queue the webhooks they
//! receive in `wakeups` (and `NOTIFY protond_wakeup`) for the leader.
//!
//! Stores and loads only: when to acquire, renew or step down is the daemon's decision.
//! PostgreSQL only: a `SQLite` store has one writer (its lock file) and never calls these.

use sqlx::Row;

use super::{Backend, StateError, Store};

/// The database's clock, in milliseconds since 1970.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRecord {
    /// The lease's name (`shard-0`, …).
    pub name: String,
    /// The replica holding it (or that held it last).
    pub holder: String,
    /// The holder's term.
    pub epoch: i64,
    /// Milliseconds until it expires (negative: expired that long ago).
    pub remaining_ms: i64,
}

/// A replica as it last recorded itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaRecord {
    /// The replica's id.
    pub id: String,
    /// Its home shard.
    pub shard: i64,
    /// Where it serves the status page and API, when it said.
    pub listen: Option<String>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Milliseconds since it last recorded itself.
    pub silent_ms: i64,
    /// The sharding config it runs with (`crate::ha::shard::fingerprint`); `None` from a
    /// replica of an earlier version.
    pub sharding: Option<String>,
}

/// A webhook a replica received and queued for the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wakeup {
    /// Queue position.
    pub id: i64,
    /// The repo it named, if any.
    pub repo: Option<String>,
    /// The replica that received it.
    pub received_by: String,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    fn postgres_only(&self, what: &'static str) -> Result<(), StateError> {
        match self.backend {
            Backend::Postgres => Ok(()),
            Backend::Sqlite => Err(StateError::Corrupt {
                table: "leases",
                detail: format!("{what} needs a postgres:// state; a SQLite file has one writer"),
            }),
        }
    }

    /// Takes the lease `name` for `holder` for `ttl` when nobody holds it or its holder let
    /// it expire: the new epoch, or `None` when another replica holds it.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<i64>, StateError> {
        self.postgres_only("a lease")?;
        let sql = format!(
            "INSERT INTO leases (name, holder, epoch, renewed_at, expires_at)
             VALUES ($1, $2, 1, {NOW_MS}, {NOW_MS} + $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                 epoch = leases.epoch + 1, renewed_at = excluded.renewed_at,
                 expires_at = excluded.expires_at
             WHERE leases.expires_at <= excluded.renewed_at
             RETURNING epoch"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(holder)
            .bind(ms(ttl))
            .fetch_optional(&self.pool)
            .await
            .map_err(self.q("acquire a lease"))?;
        row.map(|r| r.try_get::<i64, _>("epoch"))
            .transpose()
            .map_err(self.q("acquire a lease"))
    }

    /// Extends the lease `name` held by `holder` at `epoch` by `ttl` from now: false when
    /// it was lost (expired, or taken at a later epoch), and then it is not extended.
    ///
    /// # Errors
    ///
    /// A store failure (the lease's state is then unknown: treat it as lost).
    pub async fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        epoch: i64,
        ttl: std::time::Duration,
    ) -> Result<bool, StateError> {
        self.postgres_only("a lease")?;
        let sql = format!(
            "UPDATE leases SET renewed_at = {NOW_MS}, expires_at = {NOW_MS} + $4
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > {NOW_MS}"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(holder)
            .bind(epoch)
            .bind(ms(ttl))
            .execute(&self.pool)
            .await
            .map_err(self.q("renew a lease"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives up the lease `name` (a replica shutting down): another may take it at once.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn release_lease(
        &self,
        name: &str,
        holder: &str,
        epoch: i64,
    ) -> Result<(), StateError> {
        self.postgres_only("a lease")?;
        let sql = format!(
            "UPDATE leases SET expires_at = {NOW_MS} WHERE name = $1 AND holder = $2 AND epoch = $3"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(holder)
            .bind(epoch)
            .execute(&self.pool)
            .await
            .map_err(self.q("release a lease"))?;
        Ok(())
    }

    /// Every lease, by name.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn leases(&self) -> Result<Vec<LeaseRecord>, StateError> {
        self.postgres_only("a lease")?;
        let sql = format!(
            "SELECT name, holder, epoch, expires_at - {NOW_MS} AS remaining FROM leases ORDER BY name"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("list leases"))?;
        rows.iter()
            .map(|r| {
                Ok(LeaseRecord {
                    name: r.try_get("name")?,
                    holder: r.try_get("holder")?,
                    epoch: r.try_get("epoch")?,
                    remaining_ms: r.try_get("remaining")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.q("list leases"))
    }

    /// Claims `leases` (name and epoch) for every statement this store sends from now on
    /// (PostgreSQL's fence refuses writes claiming a lease no longer held at that epoch).
    /// A replica that lost a lease keeps claiming it until it stopped all work of that
    /// term: its writes fail meanwhile, as they must. Never claim nothing after having
    /// led; an empty claim is not fenced.
    pub fn set_fence(&self, leases: &[(String, i64)]) {
        let claim = leases
            .iter()
            .map(|(name, epoch)| format!("{name}={epoch}"))
            .collect::<Vec<_>>()
            .join(",");
        *self
            .fence
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = claim;
    }

    /// The lease claim this store sends (`shard-0=7,…`; empty when it claims none).
    #[must_use]
    pub fn fence(&self) -> String {
        self.fence
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records (or refreshes) this replica, with the sharding config it runs with.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn heartbeat_replica(
        &self,
        id: &str,
        shard: u32,
        listen: Option<&str>,
        started_at: &str,
        sharding: &str,
    ) -> Result<(), StateError> {
        self.postgres_only("a replica")?;
        let sql = format!(
            "INSERT INTO replicas (id, shard, listen, started_at, seen_at, sharding)
             VALUES ($1, $2, $3, $4, {NOW_MS}, $5)
             ON CONFLICT (id) DO UPDATE SET shard = excluded.shard, listen = excluded.listen,
                 started_at = excluded.started_at, seen_at = excluded.seen_at,
                 sharding = excluded.sharding"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(i64::from(shard))
            .bind(listen)
            .bind(started_at)
            .bind(sharding)
            .execute(&self.pool)
            .await
            .map_err(self.q("record a replica"))?;
        Ok(())
    }

    /// Drops a replica's record (it stops).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn forget_replica(&self, id: &str) -> Result<(), StateError> {
        self.postgres_only("a replica")?;
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(self.q("drop a replica"))?;
        Ok(())
    }

    /// Every replica recorded, by id, with how long each has been silent.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn replicas(&self) -> Result<Vec<ReplicaRecord>, StateError> {
        self.postgres_only("a replica")?;
        let sql = format!(
            "SELECT id, shard, listen, started_at, {NOW_MS} - seen_at AS silent, sharding FROM replicas ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("list replicas"))?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaRecord {
                    id: r.try_get("id")?,
                    shard: r.try_get("shard")?,
                    listen: r.try_get("listen")?,
                    started_at: r.try_get("started_at")?,
                    silent_ms: r.try_get("silent")?,
                    sharding: r.try_get("sharding")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.q("list replicas"))
    }

    /// Queues a webhook for the leader (`repo`: the repo it named) and notifies listeners
    /// on `protond_wakeup`.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn push_wakeup(
        &self,
        repo: Option<&str>,
        received_by: &str,
    ) -> Result<(), StateError> {
        self.postgres_only("a forwarded webhook")?;
        let sql = format!(
            "WITH queued AS (INSERT INTO wakeups (repo, received_by, at) VALUES ($1, $2, {NOW_MS}) RETURNING id)
             SELECT pg_notify('protond_wakeup', id::TEXT) FROM queued"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(repo)
            .bind(received_by)
            .execute(&self.pool)
            .await
            .map_err(self.q("queue a webhook for the leader"))?;
        Ok(())
    }

    /// The queued webhooks after `after` (a queue position), oldest first, and drops those
    /// older than `keep` (so the queue never grows without bound).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn wakeups_after(
        &self,
        after: i64,
        keep: std::time::Duration,
    ) -> Result<Vec<Wakeup>, StateError> {
        self.postgres_only("a forwarded webhook")?;
        let sql = format!("DELETE FROM wakeups WHERE at < {NOW_MS} - $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(keep))
            .execute(&self.pool)
            .await
            .map_err(self.q("trim forwarded webhooks"))?;
        let rows = sqlx::query(
            "SELECT id, repo, received_by FROM wakeups WHERE id > $1 ORDER BY id LIMIT 1000",
        )
        .bind(after)
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("read forwarded webhooks"))?;
        rows.iter()
            .map(|r| {
                Ok(Wakeup {
                    id: r.try_get("id")?,
                    repo: r.try_get("repo")?,
                    received_by: r.try_get("received_by")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.q("read forwarded webhooks"))
    }

    /// The newest queue position (0 when the queue is empty): a new leader starts after it.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn last_wakeup(&self) -> Result<i64, StateError> {
        self.postgres_only("a forwarded webhook")?;
        sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(id), 0) FROM wakeups")
            .fetch_one(&self.pool)
            .await
            .map_err(self.q("read forwarded webhooks"))
    }
}

/// A connection of its own listening (`LISTEN`) on `protond_wakeup` (the leader's side of
/// [`Store::push_wakeup`]), to the store's database with the store's credentials.
///
/// # Errors
///
/// The connection or the LISTEN failed.
pub async fn wakeup_listener(store: &Store) -> Result<sqlx::postgres::PgListener, StateError> {
    store.postgres_only("a forwarded webhook")?;
    let shown = store.path.to_string();
    let full = store
        .connect_url
        .as_ref()
        .ok_or_else(|| StateError::Url { url: shown.clone() })?;
    let mut listener = sqlx::postgres::PgListener::connect(full.expose())
        .await
        .map_err(|source| StateError::Open { url: shown, source })?;
    listener
        .listen("protond_wakeup")
        .await
        .map_err(|source| StateError::Query {
            what: "LISTEN protond_wakeup",
            source,
        })?;
    Ok(listener)
}

/// Whether `e` is the fence refusing a write from a lost lease.
#[must_use]
pub fn is_fenced(e: &StateError) -> bool {
    match e {
        StateError::Query {
            source: sqlx::Error::Database(db),
            ..
        } => db.code().as_deref() == Some("PF001"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A new database on the test server, or `None` (with a note) where none runs; CI
    /// always has one (scripts/test), and there a missing server fails the test.
    async fn pg_store() -> Option<Store> {
        pg_url().await.map(|(store, _)| store)
    }

    async fn pg_url() -> Option<(Store, String)> {
        let Ok(admin) = std::env::var("PROTOND_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the PostgreSQL tests: set PROTOND_TEST_POSTGRES_URL (scripts/postgres)"
            );
            eprintln!("note: PROTOND_TEST_POSTGRES_URL is not set; PostgreSQL test skipped");
            return None;
        };
        let url = crate::state::testing::new_database(&admin).await;
        Some((
            Store::open(&url).await.expect("open the PostgreSQL store"),
            url,
        ))
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_every_new_holder_gets_a_new_epoch() {
        let Some(store) = pg_store().await else {
            return;
        };
        let ttl = Duration::from_secs(30);
        assert_eq!(
            store
                .acquire_lease("shard-0", "a", ttl)
                .await
                .expect("acquire"),
            Some(1)
        );
        assert_eq!(
            store
                .acquire_lease("shard-0", "b", ttl)
                .await
                .expect("acquire"),
            None
        );
        // A holder cannot take its own live lease again (a second process with its id).
        assert_eq!(
            store
                .acquire_lease("shard-0", "a", ttl)
                .await
                .expect("acquire"),
            None
        );
        assert!(
            store
                .renew_lease("shard-0", "a", 1, ttl)
                .await
                .expect("renew")
        );
        assert!(
            !store
                .renew_lease("shard-0", "b", 1, ttl)
                .await
                .expect("renew")
        );
        store
            .release_lease("shard-0", "a", 1)
            .await
            .expect("release");
        assert_eq!(
            store
                .acquire_lease("shard-0", "b", ttl)
                .await
                .expect("acquire"),
            Some(2)
        );
        assert!(
            !store
                .renew_lease("shard-0", "a", 1, ttl)
                .await
                .expect("renew")
        );
        let leases = store.leases().await.expect("leases");
        assert_eq!(leases.len(), 1);
        assert_eq!((leases[0].holder.as_str(), leases[0].epoch), ("b", 2));
        assert!(leases[0].remaining_ms > 20_000, "{leases:?}");
    }

    #[tokio::test]
    async fn a_lease_lapses_on_the_database_clock() {
        let Some(store) = pg_store().await else {
            return;
        };
        let short = Duration::from_millis(300);
        assert_eq!(
            store
                .acquire_lease("shard-0", "a", short)
                .await
                .expect("acquire"),
            Some(1)
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Too late to renew: the lease lapsed, and a renewal never revives it.
        assert!(
            !store
                .renew_lease("shard-0", "a", 1, short)
                .await
                .expect("renew")
        );
        assert_eq!(
            store
                .acquire_lease("shard-0", "b", short)
                .await
                .expect("acquire"),
            Some(2)
        );
    }

    #[tokio::test]
    async fn the_database_refuses_writes_from_a_lost_lease() {
        let Some((a, url)) = pg_url().await else {
            return;
        };
        // A second replica: its own pool on the same database.
        let b = Store::open(&url).await.expect("open");
        let short = Duration::from_millis(400);
        let epoch = a
            .acquire_lease("shard-0", "a", short)
            .await
            .expect("acquire")
            .expect("free");
        a.set_fence(&[("shard-0".into(), epoch)]);
        a.forget_repo("while-leading", 1)
            .await
            .expect("the holder writes");
        // A pauses past its lease; B takes over.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let epoch_b = b
            .acquire_lease("shard-0", "b", Duration::from_secs(30))
            .await
            .expect("acquire")
            .expect("lapsed");
        assert_eq!(epoch_b, epoch + 1);
        b.set_fence(&[("shard-0".into(), epoch_b)]);
        // A resumes: every write it tries is refused by the database itself.
        let err = a
            .forget_repo("after-losing", 1)
            .await
            .expect_err("a stale epoch must not write");
        assert!(is_fenced(&err), "{err:?}");
        let err = a
            .begin_deployment(&crate::state::tests::new_dep("environment/dev"))
            .await
            .expect_err("nor start a deployment");
        assert!(is_fenced(&err), "{err:?}");
        // Even with the lease's name and an old epoch claimed again.
        a.set_fence(&[("shard-0".into(), epoch)]);
        assert!(is_fenced(&a.unforget_repo("x").await.expect_err("stale")));
        // The new holder writes; an unfenced session (an operator's command) too.
        b.forget_repo("new-leader", 1)
            .await
            .expect("the new holder writes");
        let operator = Store::open(&url).await.expect("open");
        operator
            .unforget_repo("new-leader")
            .await
            .expect("unfenced");
        let repos = b.forgotten_repos().await.expect("read");
        assert_eq!(repos.keys().collect::<Vec<_>>(), ["while-leading"]);
    }

    #[tokio::test]
    async fn followers_queue_webhooks_for_the_leader() {
        let Some(store) = pg_store().await else {
            return;
        };
        let start = store.last_wakeup().await.expect("last");
        store
            .push_wakeup(Some("payments"), "replica-b")
            .await
            .expect("push");
        store.push_wakeup(None, "replica-c").await.expect("push");
        let got = store
            .wakeups_after(start, Duration::from_mins(1))
            .await
            .expect("read");
        assert_eq!(
            got.iter()
                .map(|w| (w.repo.as_deref(), w.received_by.as_str()))
                .collect::<Vec<_>>(),
            [(Some("payments"), "replica-b"), (None, "replica-c")]
        );
        let last = got.last().expect("two").id;
        assert!(
            store
                .wakeups_after(last, Duration::from_mins(1))
                .await
                .expect("read")
                .is_empty()
        );
        store
            .heartbeat_replica(
                "replica-b",
                0,
                Some("127.0.0.1:1"),
                "2026-11-30T00:00:00Z",
                "{\"ha.shards\":\"1\"}",
            )
            .await
            .expect("beat");
        let replicas = store.replicas().await.expect("replicas");
        assert_eq!(replicas.len(), 1);
        assert!(replicas[0].silent_ms < 5_000);
        assert_eq!(
            replicas[0].sharding.as_deref(),
            Some("{\"ha.shards\":\"1\"}")
        );
    }

    /// Table, column, integer-or-text, not null: one schema, two dialects.
    async fn columns(store: &Store) -> std::collections::BTreeSet<(String, String, bool, bool)> {
        let sql = match store.backend {
            Backend::Sqlite => {
                "SELECT m.name AS t, p.name AS c, p.type AS ty, p.\"notnull\" AS nn
                 FROM sqlite_master m JOIN pragma_table_info(m.name) p
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT table_name::TEXT AS t, column_name::TEXT AS c, data_type::TEXT AS ty,
                        CASE WHEN is_nullable = 'NO' THEN 1 ELSE 0 END::BIGINT AS nn
                 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'"
            }
        };
        let rows = sqlx::query(sql)
            .fetch_all(&store.pool)
            .await
            .expect("columns");
        rows.iter()
            .map(|r| {
                let ty: String = r.try_get("ty").expect("type");
                let nn: i64 = r.try_get("nn").expect("not null");
                let int = ty.to_ascii_uppercase().contains("INT");
                (
                    r.try_get("t").expect("table"),
                    r.try_get("c").expect("column"),
                    int,
                    nn != 0,
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn the_two_schemas_are_the_same() {
        let Some(pg) = pg_store().await else { return };
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .expect("open");
        let (a, b) = (columns(&sqlite).await, columns(&pg).await);
        assert!(a.len() > 100, "{a:?}");
        // A primary key is NOT NULL on PostgreSQL whatever the column says; SQLite only
        // says so when declared. Compare the rest exactly.
        let relax = |s: &std::collections::BTreeSet<(String, String, bool, bool)>| {
            s.iter()
                .map(|(t, c, int, _)| (t.clone(), c.clone(), *int))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            relax(&a),
            relax(&b),
            "migrations/sqlite and migrations/postgres differ"
        );
        let nullable = |s: &std::collections::BTreeSet<(String, String, bool, bool)>| {
            s.iter()
                .filter(|x| x.3)
                .map(|x| (x.0.clone(), x.1.clone()))
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert!(nullable(&a).is_subset(&nullable(&b)));
    }

    #[tokio::test]
    async fn sqlite_has_no_leases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .expect("open");
        let err = store
            .acquire_lease("shard-0", "a", Duration::from_secs(1))
            .await
            .expect_err("SQLite");
        assert!(err.to_string().contains("postgres://"), "{err}");
    }
}
