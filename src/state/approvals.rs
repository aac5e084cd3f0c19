//! The change-set gate's rows: approvals of one version of one resource (written by
//! `protond approve` and the API from another process than the daemon, the inbox exception
//! to "one writer", and by the daemon for a spec-repo approval it used), and what the last
//! cycle held as needing one (for `protond approvals`, `status` and the metrics). Stores and
//! loads only: what counts as an approval is decided by [`crate::gate`], never here.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{StateError, Store, now, version_string};
use crate::gate::Approval;
use crate::model::Version;

/// A resource the last cycle held until an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    /// Its template.
    pub template: String,
    /// The version waiting.
    pub version: Version,
    /// The predicted effects that need the approval.
    pub changes: Vec<String>,
    /// Since when (RFC 3339).
    pub since: String,
}

impl Store {
    /// Records an approval; one of the same resource and version replaces it (`replace`), or
    /// is kept (`!replace`: a spec-repo approval never overrides a person's recorded one).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn record_approval(&self, a: &Approval, replace: bool) -> Result<(), StateError> {
        let sql = if replace {
            "INSERT INTO approvals (resource_id, template, version, approved_by, approved_at, via, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (resource_id, version) DO UPDATE SET template = excluded.template,
                 approved_by = excluded.approved_by, approved_at = excluded.approved_at,
                 via = excluded.via, reason = excluded.reason"
        } else {
            "INSERT INTO approvals (resource_id, template, version, approved_by, approved_at, via, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (resource_id, version) DO NOTHING"
        };
        sqlx::query(sql)
            .bind(&a.resource)
            .bind(a.template.as_deref().unwrap_or(""))
            .bind(version_string(a.version))
            .bind(&a.by)
            .bind(a.at.clone().unwrap_or_else(now))
            .bind(&a.via)
            .bind(&a.reason)
            .execute(&self.pool)
            .await
            .map_err(self.q("record an approval"))?;
        Ok(())
    }

    /// Every recorded approval, oldest first.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn approvals(&self) -> Result<Vec<Approval>, StateError> {
        let rows = sqlx::query(
            "SELECT resource_id, template, version, approved_by, approved_at, via, reason
             FROM approvals ORDER BY approved_at, resource_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("read approvals"))?;
        let mut out = Vec::new();
        for r in &rows {
            let get = |c: &str| r.try_get::<String, _>(c).unwrap_or_default();
            let Some(version) = Version::parse(&get("version")) else {
                continue;
            };
            let template = get("template");
            out.push(Approval {
                resource: get("resource_id"),
                template: (!template.is_empty()).then_some(template),
                version,
                by: get("approved_by"),
                via: get("via"),
                reason: r.try_get::<Option<String>, _>("reason").ok().flatten(),
                at: Some(get("approved_at")),
                repo: None,
            });
        }
        Ok(out)
    }

    /// Records what this cycle held as needing an approval (`pending`; a resource still
    /// held keeps its `since`) and drops the rows of `done` (resources held no more). A
    /// shard's leader passes only rows of its own resources in `done`: the other shards'
    /// rows are theirs to replace.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn set_needs_approval(
        &self,
        pending: &BTreeMap<String, (String, Version, Vec<String>)>,
        done: &[String],
    ) -> Result<(), StateError> {
        let mut tx = self.write_tx("record needs approval").await?;
        for id in done {
            sqlx::query("DELETE FROM needs_approval WHERE resource_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(self.q("record needs approval"))?;
        }
        for (id, (template, version, changes)) in pending {
            sqlx::query(
                "INSERT INTO needs_approval (resource_id, template, version, changes, since)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (resource_id) DO UPDATE SET template = excluded.template,
                     changes = excluded.changes, version = excluded.version,
                     since = CASE WHEN needs_approval.version = excluded.version
                                  THEN needs_approval.since ELSE excluded.since END",
            )
            .bind(id)
            .bind(template)
            .bind(version_string(*version))
            .bind(serde_json::to_string(changes).unwrap_or_else(|_| "[]".into()))
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(self.q("record needs approval"))?;
        }
        tx.commit().await.map_err(self.q("record needs approval"))?;
        Ok(())
    }

    /// What the last cycle held as needing an approval, by resource id.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn needs_approval(&self) -> Result<BTreeMap<String, PendingApproval>, StateError> {
        let rows = sqlx::query(
            "SELECT resource_id, template, version, changes, since FROM needs_approval",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("read needs approval"))?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let get = |c: &str| r.try_get::<String, _>(c).unwrap_or_default();
            let Some(version) = Version::parse(&get("version")) else {
                continue;
            };
            out.insert(
                get("resource_id"),
                PendingApproval {
                    template: get("template"),
                    version,
                    changes: serde_json::from_str(&get("changes")).unwrap_or_default(),
                    since: get("since"),
                },
            );
        }
        Ok(out)
    }

    /// Notes on history row `id` the approval its deployment of `resource_id` to `version`
    /// used, when one is recorded and nothing else asked for it (a minor upgrade or a
    /// rollback: `reason`).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub(super) async fn note_approval(
        &self,
        id: i64,
        resource_id: &str,
        version: Version,
        reason: Option<&str>,
    ) -> Result<(), StateError> {
        if !matches!(reason, Some("minor_upgrade" | "rollback")) {
            return Ok(());
        }
        let note = self
            .approvals()
            .await?
            .into_iter()
            .rfind(|a| a.resource == resource_id && a.version == version)
            .map(|a| a.note());
        let Some(note) = note else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE deployments SET requested_by = COALESCE(requested_by, $1) WHERE id = $2",
        )
        .bind(note)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(self.q("record the approval a deployment used"))?;
        Ok(())
    }
}
