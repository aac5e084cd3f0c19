//! `protond state copy`: every table of protond's state copied from one store to another
//! (`SQLite` to PostgreSQL when moving to HA, or back), in one transaction on the target,
//! with row ids kept and PostgreSQL's identity sequences set past the largest id copied.
//! Then the copy is checked: rows per table, and the status view ([`Store::overview`]),
//! equal on both.
//!
//! It copies rows only: it never copies `_sqlx_migrations` (opening the target migrated
//! it), nor what belongs to running replicas (leases, replicas, queued webhooks); it never
//! writes the source, and never replaces a non-empty target unless asked (`force`).

use sqlx::Row as _;

use super::{Backend, StateError, Store};

/// The tables copied, in the order they are written (parents before what names them:
/// releases before resources, resources before their history).
pub const COPIED: [&str; 17] = [
    "meta",
    "template_versions",
    "rollouts",
    "release_events",
    "resources",
    "deployments",
    "self_managed",
    "pipeline_runs",
    "proposals",
    "retired_repos",
    "deploy_requests",
    "drift",
    "spec_findings",
    "holds",
    "pins",
    "approvals",
    "needs_approval",
];

/// The tables never copied: the migrations' own (the target is migrated when opened), and
/// what running replicas hold (leases, replicas, webhooks queued for a leader), and the write
/// generation (the target's triggers count the copy's own writes).
pub const NOT_COPIED: [&str; 5] = [
    "_sqlx_migrations",
    "leases",
    "replicas",
    "wakeups",
    "store_generation",
];

/// The tables whose `id` is an identity column (a sequence on PostgreSQL).
const WITH_IDENTITY: [&str; 2] = ["deployments", "release_events"];

/// Bound values per statement: far below `SQLite`'s (32,766) and PostgreSQL's (65,535) limits.
const PARAMS_PER_STATEMENT: usize = 1000;

/// Why a copy did not happen or did not check out.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target already holds state.
    #[error(
        "the target state {target} is not empty ({}): copy into a new, empty database, or pass --force to replace the rows of the copied tables",
        tables.iter().map(|(t, n)| format!("{t}: {n} rows")).collect::<Vec<_>>().join(", ")
    )]
    NotEmpty {
        /// The target (password redacted).
        target: String,
        /// The copied tables that hold rows, with their counts.
        tables: Vec<(&'static str, i64)>,
    },
    /// The copy does not match the source.
    #[error(
        "the copy in {target} does not match the source: {detail}; nothing else was changed on the source, run the copy again with --force"
    )]
    Mismatch {
        /// The target (password redacted).
        target: String,
        /// What differs.
        detail: String,
    },
    /// A store failure.
    #[error(transparent)]
    State(#[from] StateError),
}

/// What a copy did: the rows of each copied table, on the source and the target after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Per copied table, in copy order: its name, the source's rows, the target's rows.
    pub tables: Vec<(&'static str, i64, i64)>,
    /// Whether the status view (resources, versions, last deployments, waiting) is equal.
    pub same_overview: bool,
}

/// One stored value: the state's columns are integers or text.
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl Store {
    /// The database this store names, for messages (a `SQLite` file, or the PostgreSQL URL
    /// without its password).
    #[must_use]
    pub fn location(&self) -> &str {
        &self.path
    }

    /// Rows in `table`.
    async fn count_rows(&self, table: &'static str) -> Result<i64, StateError> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .map_err(self.q("count the rows of a table"))
    }

    /// The tables of protond's schema, by name.
    pub async fn table_names(&self) -> Result<Vec<String>, StateError> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            Backend::Postgres => {
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
            }
        };
        sqlx::query_scalar(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("list the tables"))
    }

    /// The columns of `table` in order, each with whether it holds integers (else text).
    async fn columns(&self, table: &'static str) -> Result<Vec<(String, bool)>, StateError> {
        let sql = match self.backend {
            Backend::Sqlite => "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
            Backend::Postgres => {
                "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
            }
        };
        let rows = sqlx::query(sql)
            .bind(table)
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("read a table's columns"))?;
        let mut out = Vec::new();
        for r in &rows {
            let name: String = r.try_get(0).map_err(self.q("read a table's columns"))?;
            let ty: String = r.try_get(1).map_err(self.q("read a table's columns"))?;
            let ty = ty.to_ascii_uppercase();
            let int = ty.contains("INT");
            if !int && !ty.contains("TEXT") && !ty.contains("CHAR") {
                return Err(StateError::Corrupt {
                    table,
                    detail: format!(
                        "column {name} has type {ty}, which state copy does not handle (integers and text only)"
                    ),
                });
            }
            out.push((name, int));
        }
        Ok(out)
    }

    /// Every row of `table`, its `columns` read as integers or text.
    async fn all_rows(
        &self,
        table: &'static str,
        columns: &[(String, bool)],
    ) -> Result<Vec<Vec<Value>>, StateError> {
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        let list = names.join(", ");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {list} FROM {table}")))
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("read the rows to copy"))?;
        rows.iter()
            .map(|r| {
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, int))| {
                        if *int {
                            r.try_get(i).map(Value::Int)
                        } else {
                            r.try_get(i).map(Value::Text)
                        }
                        .map_err(self.q("read the rows to copy"))
                    })
                    .collect()
            })
            .collect()
    }
}

/// Copies every table of [`COPIED`] from `from` to `to` (both open, so both migrated to this
/// version's schema), in one transaction on `to`, then checks the copy. A target holding
/// rows in any of those tables is refused unless `force`, which deletes them first (in the
/// same transaction).
pub async fn copy(from: &Store, to: &Store, force: bool) -> Result<CopyReport, CopyError> {
    let mut held = Vec::new();
    for table in COPIED {
        let n = to.count_rows(table).await?;
        if n > 0 {
            held.push((table, n));
        }
    }
    if !held.is_empty() && !force {
        return Err(CopyError::NotEmpty {
            target: to.location().to_string(),
            tables: held,
        });
    }
    let mut tx = to.write_tx("copy the state").await?;
    for table in COPIED {
        if force {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await
                .map_err(to.q("empty a table of the target"))?;
        }
        let columns = to.columns(table).await?;
        let rows = from.all_rows(table, &columns).await?;
        insert_rows(to, &mut tx, table, &columns, rows).await?;
    }
    if to.backend == Backend::Postgres {
        for table in WITH_IDENTITY {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            )))
            .execute(&mut *tx)
            .await
            .map_err(to.q("set an identity sequence past the copied ids"))?;
        }
    }
    tx.commit().await.map_err(to.q("commit the copy"))?;
    check(from, to).await
}

/// Inserts `rows` of `table` in statements of many rows each.
async fn insert_rows(
    to: &Store,
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    table: &'static str,
    columns: &[(String, bool)],
    rows: Vec<Vec<Value>>,
) -> Result<(), StateError> {
    let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    let per_statement = (PARAMS_PER_STATEMENT / names.len().max(1)).max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let batch: Vec<Vec<Value>> = rows.by_ref().take(per_statement).collect();
        let sql = insert_sql(table, &names, batch.len());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in batch.into_iter().flatten() {
            query = match value {
                Value::Int(v) => query.bind(v),
                Value::Text(v) => query.bind(v),
            };
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(to.q("write the copied rows"))?;
    }
    Ok(())
}

/// `INSERT INTO table (a, b) VALUES ($1, $2), ($3, $4)…` for `rows` rows.
fn insert_sql(table: &str, columns: &[&str], rows: usize) -> String {
    let n = columns.len();
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=n).map(|c| format!("${}", r * n + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {table} ({}) VALUES {}",
        columns.join(", "),
        values.join(", ")
    )
}

/// Rows per table and the status view, on both stores.
async fn check(from: &Store, to: &Store) -> Result<CopyReport, CopyError> {
    let mut tables = Vec::new();
    let mut differ = Vec::new();
    for table in COPIED {
        let (a, b) = (from.count_rows(table).await?, to.count_rows(table).await?);
        if a != b {
            differ.push(format!("{table}: {a} rows in the source, {b} in the copy"));
        }
        tables.push((table, a, b));
    }
    let same_overview = from.overview().await? == to.overview().await?;
    if !same_overview {
        differ.push("the status view (resources, versions, last deployments) differs".into());
    }
    if !differ.is_empty() {
        return Err(CopyError::Mismatch {
            target: to.location().to_string(),
            detail: differ.join("; "),
        });
    }
    Ok(CopyReport {
        tables,
        same_overview,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::tests::new_dep;

    #[test]
    fn one_insert_names_every_parameter_once() {
        assert_eq!(
            insert_sql("t", &["a", "b"], 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }

    /// A new table must be listed as copied or not: a copy would otherwise lose it.
    #[tokio::test]
    async fn every_table_is_copied_or_named_as_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&crate::state::testing::url(dir.path()).await)
            .await
            .expect("open");
        let mut listed: Vec<String> = COPIED
            .iter()
            .chain(&NOT_COPIED)
            .map(|t| (*t).to_string())
            .collect();
        listed.sort();
        let mut tables = store.table_names().await.expect("tables");
        // SQLite's bookkeeping of AUTOINCREMENT.
        tables.retain(|t| t != "sqlite_sequence");
        assert_eq!(tables, listed);
    }

    /// Both ways between the backends the tests run on (`SQLite` to `SQLite` by default):
    /// every row and id kept, new ids continue past the copied ones, and a second copy is
    /// refused unless forced.
    #[tokio::test]
    async fn a_copy_keeps_every_row_and_id_and_refuses_a_full_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = Store::open(&format!("sqlite://{}/from.db", dir.path().display()))
            .await
            .expect("open");
        from.installation(Some("prod")).await.expect("installation");
        for r in ["environment/a", "environment/b", "environment/c"] {
            let dep = new_dep(r);
            let id = from.begin_deployment(&dep).await.expect("begin");
            let record = crate::state::ResourceRecord::deployed_by(&dep, BTreeMap::new(), None);
            from.finish_deployment(id, &crate::state::Outcome::Succeeded(record))
                .await
                .expect("finish");
        }
        let last = from
            .begin_deployment(&new_dep("environment/a"))
            .await
            .expect("begin");
        let to = Store::open(&crate::state::testing::url(&dir.path().join("to")).await)
            .await
            .expect("open");
        let report = copy(&from, &to, false).await.expect("copy");
        assert!(report.same_overview);
        assert!(report.tables.contains(&("deployments", 4, 4)), "{report:?}");
        assert!(report.tables.contains(&("meta", 1, 1)), "{report:?}");
        assert_eq!(to.installation(None).await.expect("name"), "prod");
        let copied = to.deployments(None, 10).await.expect("history");
        assert_eq!(copied, from.deployments(None, 10).await.expect("history"));
        assert_eq!(copied.first().map(|d| d.id), Some(last));
        assert_eq!(to.resources().await.expect("records").len(), 3);
        // New rows continue after the copied ids.
        let next = to
            .begin_deployment(&new_dep("environment/b"))
            .await
            .expect("begin");
        assert_eq!(next, last + 1);
        let err = copy(&from, &to, false).await.expect_err("not empty");
        assert!(
            err.to_string().contains("deployments: 5 rows") && err.to_string().contains("--force"),
            "{err}"
        );
        let again = copy(&from, &to, true).await.expect("forced");
        assert!(again.tables.contains(&("deployments", 4, 4)), "{again:?}");
    }
}
