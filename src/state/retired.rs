//! Retired spec repos (`protond forget`) and the read-only view `protond check-config` takes
//! of the store. Stores and loads only: what a forgotten repo means (its resources are
//! deleted) is decided by `desired`, never here.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use sqlx::ConnectOptions as _;
use sqlx::Row;
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::{Backend, StateError, Store, now};

impl Store {
    /// Opens the store `config` names read-only, without creating or migrating it: `None`
    /// when its `SQLite` file does not exist (a PostgreSQL database is connected to).
    ///
    /// # Errors
    ///
    /// [`StateError::Open`] when the file exists but cannot be opened.
    pub async fn open_read_only(
        config: &crate::config::Config,
    ) -> Result<Option<Self>, StateError> {
        let url = config.state.as_str();
        if Backend::of(url) == Some(Backend::Postgres) {
            // A server has no file to look for: open it (without migrating, a read-only
            // check must not change the schema) and let queries on missing tables fail.
            let password = super::config_password(config)?;
            return super::pg::connect(url, password.as_deref()).await.map(Some);
        }
        let Some(path) = url.strip_prefix("sqlite://") else {
            return Ok(None);
        };
        if !Path::new(path).is_file() {
            return Ok(None);
        }
        super::install_drivers();
        let open_error = |source| StateError::Open {
            url: url.into(),
            source,
        };
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(open_error)?
            .read_only(true)
            .create_if_missing(false);
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(options.to_url_lossy().as_str())
            .await
            .map_err(open_error)?;
        Ok(Some(Self::from_pool(pool, path, Backend::Sqlite)))
    }

    /// How many resources are recorded per spec repo.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn resources_per_repo(&self) -> Result<BTreeMap<String, usize>, StateError> {
        let rows = sqlx::query("SELECT repo, COUNT(*) AS n FROM resources GROUP BY repo")
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("count resources per repo"))?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let repo: String = r
                .try_get("repo")
                .map_err(self.q("count resources per repo"))?;
            let n: i64 = r.try_get("n").map_err(self.q("count resources per repo"))?;
            out.insert(repo, usize::try_from(n).unwrap_or(0));
        }
        Ok(out)
    }

    /// Marks `repo` forgotten (`protond forget`), noting how many of its resources are
    /// recorded now. Marking it again keeps the first time.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn forget_repo(&self, repo: &str, resources: usize) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO retired_repos (repo, forgotten_at, resources) VALUES ($1, $2, $3)
             ON CONFLICT (repo) DO NOTHING",
        )
        .bind(repo)
        .bind(now())
        .bind(i64::try_from(resources).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(self.q("record a forgotten repo"))?;
        Ok(())
    }

    /// Drops `repo`'s forgotten mark (it is in the config again, or has nothing left).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn unforget_repo(&self, repo: &str) -> Result<(), StateError> {
        sqlx::query("DELETE FROM retired_repos WHERE repo = $1")
            .bind(repo)
            .execute(&self.pool)
            .await
            .map_err(self.q("drop a forgotten repo's mark"))?;
        Ok(())
    }

    /// The forgotten repos: repo → when it was forgotten.
    ///
    /// # Errors
    ///
    /// A store failure (including a store not migrated yet, when opened read-only).
    pub async fn forgotten_repos(&self) -> Result<BTreeMap<String, String>, StateError> {
        let rows = sqlx::query("SELECT repo, forgotten_at FROM retired_repos ORDER BY repo")
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("list forgotten repos"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("repo").map_err(self.q("list forgotten repos"))?,
                    r.try_get("forgotten_at")
                        .map_err(self.q("list forgotten repos"))?,
                ))
            })
            .collect()
    }
}
