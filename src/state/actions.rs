//! What manual actions leave in the store: who asked for a deployment (`requested_by`,
//! copied from the deploy request it satisfied), cancel requests on deployments in flight
//! (`cancel_requested_by`), retried failures, and the last progress a deployment in flight
//! reported (`progress`). Stores and loads only: what a cancel or a retry means is decided by
//! [`crate::actions`] and the deployment lifecycle, never here.
//!
//! These rows are written by `protond redeploy`, `retry` and `cancel` from another process
//! than the daemon holding the writer lock: like `protond notify`, they are the inbox
//! exception to "one writer" (each is one small statement; `SQLite` serializes them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Backend, DeploymentRecord, StateError, Store};

/// The progress of a deployment in flight, as its provisioner last reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The stack.
    pub stack: String,
    /// The stack's status (`UPDATE_IN_PROGRESS`, …).
    pub status: String,
    /// The last stack event: `<logical id> <type> <status>[: <reason>]`.
    pub last_event: Option<String>,
    /// Seconds since the provisioner started waiting.
    pub elapsed_secs: u64,
    /// Stack events seen so far.
    pub events: u64,
}

/// What manual actions noted on one history row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionNotes {
    /// Who or what asked for the deployment.
    pub requested_by: Option<String>,
    /// Who asked to cancel it.
    pub cancel_requested_by: Option<String>,
    /// Its last progress (while in flight).
    pub progress: Option<Progress>,
}

impl Store {
    /// Asks the daemon to cancel in-flight deployment `id`; false when it is not in flight.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn request_cancel(&self, id: i64, by: &str) -> Result<bool, StateError> {
        let done = sqlx::query(
            "UPDATE deployments SET cancel_requested_by = $1 WHERE id = $2 AND status = 'in_progress'",
        )
        .bind(by)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(self.q("record a cancel request"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Who asked to cancel deployment `id`, if anyone.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn cancel_requested(&self, id: i64) -> Result<Option<String>, StateError> {
        let row = sqlx::query("SELECT cancel_requested_by FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.q("read a cancel request"))?;
        Ok(row.and_then(|r| r.try_get::<Option<String>, _>(0).ok().flatten()))
    }

    /// Records the progress of in-flight deployment `id`.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn set_progress(&self, id: i64, progress: &Progress) -> Result<(), StateError> {
        let text = serde_json::to_string(progress).unwrap_or_default();
        sqlx::query("UPDATE deployments SET progress = $1 WHERE id = $2")
            .bind(text)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(self.q("record deployment progress"))?;
        Ok(())
    }

    /// Marks `failed` (a resource's last, failed deployment) as worth retrying: the
    /// failed-until-change hold no longer applies to it.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn mark_retryable(&self, failed: &DeploymentRecord) -> Result<(), StateError> {
        sqlx::query("UPDATE deployments SET retryable = 1 WHERE id = $1 AND status = 'failed'")
            .bind(failed.id)
            .execute(&self.pool)
            .await
            .map_err(self.q("mark a failure retryable"))?;
        Ok(())
    }

    /// What manual actions noted on the rows [`Store::deployments`] returns for the same
    /// `resource` and `limit`, by row id.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn action_notes_of(
        &self,
        resource: Option<&str>,
        limit: i64,
    ) -> Result<BTreeMap<i64, ActionNotes>, StateError> {
        // Not `(?1 IS NULL OR resource_id = ?1)`: that form cannot use the index.
        let sql = if resource.is_some() {
            "SELECT id FROM deployments WHERE resource_id = $1 ORDER BY id DESC LIMIT $2"
        } else {
            "SELECT id FROM deployments WHERE $1 IS NULL ORDER BY id DESC LIMIT $2"
        };
        let ids: Vec<i64> = sqlx::query_scalar(sql)
            .bind(resource)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("read action notes"))?;
        self.action_notes(&ids).await
    }

    /// What manual actions noted on the history rows `ids`, by row id (rows without notes
    /// are left out).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn action_notes(
        &self,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, ActionNotes>, StateError> {
        let mut out = BTreeMap::new();
        let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT id, requested_by, cancel_requested_by, progress FROM deployments
                 WHERE id IN (SELECT value FROM json_each($1)) AND (requested_by IS NOT NULL
                   OR cancel_requested_by IS NOT NULL OR progress IS NOT NULL)"
            }
            Backend::Postgres => {
                "SELECT id, requested_by, cancel_requested_by, progress FROM deployments
                 WHERE id IN (SELECT value::bigint FROM json_array_elements_text($1::json))
                   AND (requested_by IS NOT NULL
                   OR cancel_requested_by IS NOT NULL OR progress IS NOT NULL)"
            }
        };
        let rows = sqlx::query(sql)
            .bind(list)
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("read action notes"))?;
        for r in &rows {
            let get = |c: &str| r.try_get::<Option<String>, _>(c).ok().flatten();
            let id: i64 = r.try_get("id").map_err(self.q("read action notes"))?;
            out.insert(
                id,
                ActionNotes {
                    requested_by: get("requested_by"),
                    cancel_requested_by: get("cancel_requested_by"),
                    progress: get("progress").and_then(|p| serde_json::from_str(&p).ok()),
                },
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ForceCause;

    #[tokio::test]
    async fn requests_cancels_and_progress_are_noted_on_the_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = crate::state::testing::url(dir.path()).await;
        let store = Store::open(&url).await.expect("open");
        store
            .request_deploy("environment/dev", ForceCause::Operator, "cli:alice")
            .await
            .expect("request");
        let id = store
            .begin_deployment(&super::super::tests::new_dep("environment/dev"))
            .await
            .expect("begin");
        assert!(store.request_cancel(id, "api:bob").await.expect("cancel"));
        assert_eq!(
            store.cancel_requested(id).await.expect("read").as_deref(),
            Some("api:bob")
        );
        let p = Progress {
            stack: "s".into(),
            status: "UPDATE_IN_PROGRESS".into(),
            last_event: Some("Q AWS::SQS::Queue UPDATE_IN_PROGRESS".into()),
            elapsed_secs: 3,
            events: 2,
        };
        store.set_progress(id, &p).await.expect("progress");
        let notes = store.action_notes(&[id, id + 1]).await.expect("notes");
        assert_eq!(notes.len(), 1);
        let n = &notes[&id];
        assert_eq!(n.requested_by.as_deref(), Some("cli:alice"));
        assert_eq!(n.progress.as_ref(), Some(&p));
        // Not in flight: nothing to cancel.
        assert!(!store.request_cancel(id + 1, "x").await.expect("cancel"));
    }
}
