//! Drift as the last drift check found it (one row per resource and [`DriftKind`]), and the
//! resources the daemon's last cycle found invalid (`spec_findings`), kept for the operator
//! views of other processes (`protond status`, `protond plan`). Stores and loads only: what
//! counts as drift is decided by `crate::drift`, what to do about it by the daemon.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::{StateError, Store, now};
use crate::model::{DriftKind, ResourceKind};

/// One finding of a drift check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftRecord {
    /// What differs.
    pub kind: DriftKind,
    /// How (the difference, readable; never a secret: `NoEcho` values are left out).
    pub detail: String,
    /// When it was first found (RFC 3339).
    pub found_at: String,
}

/// A resource the daemon's last cycle found invalid, as recorded for `protond status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecFinding {
    /// The resource's kind.
    pub kind: ResourceKind,
    /// The template its spec names.
    pub template: String,
    /// The validation error.
    pub detail: String,
}

impl Store {
    /// Replaces what is recorded as drifted for `resource_id` with `found` (empty: in
    /// sync). A finding of a kind already recorded keeps its first `found_at`. Returns the
    /// kinds that are new.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn set_drift(
        &self,
        resource_id: &str,
        found: &[(DriftKind, String)],
    ) -> Result<Vec<DriftKind>, StateError> {
        let mut tx = self.write_tx("record drift").await?;
        let before =
            sqlx::query("DELETE FROM drift WHERE resource_id = $1 RETURNING kind, found_at")
                .bind(resource_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(self.q("record drift"))?;
        let mut first_found: BTreeMap<String, String> = BTreeMap::new();
        for r in &before {
            let kind: String = r.try_get("kind").map_err(self.q("record drift"))?;
            let at: String = r.try_get("found_at").map_err(self.q("record drift"))?;
            first_found.insert(kind, at);
        }
        let mut new = Vec::new();
        for (kind, detail) in found {
            let at = if let Some(at) = first_found.get(kind.as_str()) {
                at.clone()
            } else {
                new.push(*kind);
                now()
            };
            sqlx::query(
                "INSERT INTO drift (resource_id, kind, detail, found_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (resource_id, kind) DO UPDATE SET detail = excluded.detail",
            )
            .bind(resource_id)
            .bind(kind.as_str())
            .bind(detail)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(self.q("record drift"))?;
        }
        tx.commit().await.map_err(self.q("record drift"))?;
        Ok(new)
    }

    /// The drift recorded, by resource id.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn drift(&self) -> Result<BTreeMap<String, Vec<DriftRecord>>, StateError> {
        let rows = sqlx::query(
            "SELECT resource_id, kind, detail, found_at FROM drift ORDER BY resource_id, kind",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("read drift"))?;
        let mut out: BTreeMap<String, Vec<DriftRecord>> = BTreeMap::new();
        for r in &rows {
            let get = |c: &str| -> Result<String, StateError> {
                r.try_get(c).map_err(self.q("read drift"))
            };
            // A kind this build does not know (a newer binary wrote it) is left out.
            let Some(kind) = DriftKind::parse(&get("kind")?) else {
                continue;
            };
            out.entry(get("resource_id")?)
                .or_default()
                .push(DriftRecord {
                    kind,
                    detail: get("detail")?,
                    found_at: get("found_at")?,
                });
        }
        Ok(out)
    }

    /// Drops what is recorded as drifted for resources not in `keep` (records that are gone).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn retain_drift(&self, keep: &[String]) -> Result<(), StateError> {
        for id in self.drift().await?.keys() {
            if !keep.contains(id) {
                self.set_drift(id, &[]).await?;
            }
        }
        Ok(())
    }

    /// Records `findings` (by resource id; a finding whose detail is unchanged keeps its
    /// `found_at`) and drops the findings of `fixed` (resources found valid now, or gone).
    /// A shard's leader passes only its own resources in `fixed`: the other shards'
    /// findings are theirs to replace.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn set_spec_findings(
        &self,
        findings: &BTreeMap<String, SpecFinding>,
        fixed: &[String],
    ) -> Result<(), StateError> {
        let mut tx = self.write_tx("record spec findings").await?;
        for id in fixed {
            sqlx::query("DELETE FROM spec_findings WHERE resource_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(self.q("record spec findings"))?;
        }
        for (id, f) in findings {
            sqlx::query(
                "INSERT INTO spec_findings (resource_id, kind, template, detail, found_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (resource_id) DO UPDATE SET kind = excluded.kind,
                     template = excluded.template, detail = excluded.detail,
                     found_at = CASE WHEN spec_findings.detail = excluded.detail
                                     THEN spec_findings.found_at ELSE excluded.found_at END",
            )
            .bind(id)
            .bind(f.kind.as_str())
            .bind(&f.template)
            .bind(&f.detail)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(self.q("record spec findings"))?;
        }
        tx.commit().await.map_err(self.q("record spec findings"))
    }

    /// The spec findings the daemon's last cycle recorded, by resource id.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn spec_findings(&self) -> Result<BTreeMap<String, SpecFinding>, StateError> {
        let rows = sqlx::query("SELECT resource_id, kind, template, detail FROM spec_findings")
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("read spec findings"))?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let get = |c: &str| -> Result<String, StateError> {
                r.try_get(c).map_err(self.q("read spec findings"))
            };
            let Some(kind) = ResourceKind::parse(&get("kind")?) else {
                continue;
            };
            out.insert(
                get("resource_id")?,
                SpecFinding {
                    kind,
                    template: get("template")?,
                    detail: get("detail")?,
                },
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drift_is_replaced_kept_from_first_found_and_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&crate::state::testing::url(dir.path()).await)
            .await
            .expect("open");
        let id = "environment/dev";
        let new = store
            .set_drift(id, &[(DriftKind::Missing, "gone".into())])
            .await
            .expect("set");
        assert_eq!(new, vec![DriftKind::Missing]);
        let first = store.drift().await.expect("read")[id][0].found_at.clone();
        let new = store
            .set_drift(
                id,
                &[
                    (DriftKind::Missing, "gone".into()),
                    (DriftKind::Tags, "t".into()),
                ],
            )
            .await
            .expect("set");
        assert_eq!(new, vec![DriftKind::Tags], "only the new kind is new");
        let missing = &store.drift().await.expect("read")[id][0];
        assert_eq!(
            (missing.kind, &missing.found_at),
            (DriftKind::Missing, &first)
        );
        assert_eq!(store.drift().await.expect("read")[id].len(), 2);
        store.retain_drift(&[]).await.expect("retain");
        assert!(store.drift().await.expect("read").is_empty());
        let mut f = BTreeMap::new();
        f.insert(
            id.to_string(),
            SpecFinding {
                kind: ResourceKind::Environment,
                template: "vpc".into(),
                detail: "bad".into(),
            },
        );
        store.set_spec_findings(&f, &[]).await.expect("set");
        assert_eq!(store.spec_findings().await.expect("read"), f);
        // Another shard's finding is left alone by this one's write.
        let mut other = BTreeMap::new();
        other.insert(
            "service_instance/b/b-dev".to_string(),
            SpecFinding {
                kind: ResourceKind::ServiceInstance,
                template: "svc".into(),
                detail: "worse".into(),
            },
        );
        store.set_spec_findings(&other, &[]).await.expect("set");
        store
            .set_spec_findings(&BTreeMap::new(), &[id.to_string()])
            .await
            .expect("set");
        assert_eq!(store.spec_findings().await.expect("read"), other);
    }
}
