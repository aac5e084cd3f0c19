//! The repos the last cycle could not fetch or read, kept for `protond status` (which runs in
//! another process than the daemon). Stored as one JSON value in the `meta` table, replaced
//! whenever the list changes. Stores and loads only: what an unread repo means (its resources
//! are unknown, never deleted) is decided by `desired`, never here.

use serde::{Deserialize, Serialize};

use super::{StateError, Store, now};
use crate::model::SourceKind;

/// The `meta` key of the list.
const KEY: &str = "skipped_repos";

/// What a cycle did with a repo it could not fetch or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Not fetched: read as last fetched (its resources deploy from that state).
    LastFetched,
    /// Not read at all: its resources are unknown and kept as they are (never deleted).
    NotRead,
}

/// A repo a cycle could not fetch or read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRepo {
    /// The repo's configured name.
    pub repo: String,
    /// Template or spec repo.
    pub source: SourceKind,
    /// What the cycle did instead.
    pub fallback: Fallback,
    /// Why (the error chain, naming the limit or the cause).
    pub reason: String,
}

impl std::fmt::Display for SkippedRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let instead = match self.fallback {
            Fallback::LastFetched => "not fetched; read as last fetched",
            Fallback::NotRead => "not read; its resources are kept as they are",
        };
        write!(
            f,
            "{} repo {}: {instead}: {}",
            self.source, self.repo, self.reason
        )
    }
}

/// The list as stored: since when it has been the same, and the repos.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRepos {
    /// When the daemon recorded this list (RFC 3339).
    pub since: String,
    /// The repos, in config order.
    pub repos: Vec<SkippedRepo>,
}

impl Store {
    /// Replaces the recorded list of skipped repos (empty: every repo was fetched and read).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn set_skipped_repos(&self, repos: &[SkippedRepo]) -> Result<(), StateError> {
        let value = serde_json::to_string(&SkippedRepos {
            since: now(),
            repos: repos.to_vec(),
        })
        .unwrap_or_default();
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(KEY)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(self.q("record the skipped repos"))?;
        Ok(())
    }

    /// The list the daemon recorded last; empty when it never recorded one (or cannot be
    /// read back, e.g. written by a newer version).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn skipped_repos(&self) -> Result<SkippedRepos, StateError> {
        let value: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(KEY)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.q("read the skipped repos"))?;
        Ok(value
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_list_is_replaced_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&crate::state::testing::url(dir.path()).await)
            .await
            .expect("open");
        assert_eq!(
            store.skipped_repos().await.expect("read"),
            SkippedRepos::default()
        );
        let repos = vec![SkippedRepo {
            repo: "payments".into(),
            source: SourceKind::Spec,
            fallback: Fallback::LastFetched,
            reason: "refused to fetch /srv/payments: too large".into(),
        }];
        store.set_skipped_repos(&repos).await.expect("write");
        let read = store.skipped_repos().await.expect("read");
        assert_eq!(read.repos, repos);
        assert!(!read.since.is_empty());
        assert_eq!(
            repos[0].to_string(),
            "spec repo payments: not fetched; read as last fetched: refused to fetch /srv/payments: too large"
        );
        store.set_skipped_repos(&[]).await.expect("write");
        assert!(store.skipped_repos().await.expect("read").repos.is_empty());
    }
}
