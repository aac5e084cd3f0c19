//! Deploy requests: "deploy this resource's current desired state even though nothing
//! changed", asked by an operator (`protond redeploy`, the API) or by drift healing. Stores
//! and loads only: the cycle turns each request into a forced update
//! ([`crate::plan::force`]) that goes through the normal gates.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{StateError, Store, now};
use crate::plan::ForceCause;

/// One pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    /// The resource to deploy.
    pub resource_id: String,
    /// Why.
    pub cause: ForceCause,
    /// Who or what asked (for the history).
    pub requested_by: String,
    /// When (RFC 3339).
    pub requested_at: String,
}

impl Store {
    /// Records a request to deploy `resource_id` even if unchanged; a newer request replaces
    /// an older one.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn request_deploy(
        &self,
        resource_id: &str,
        cause: ForceCause,
        requested_by: &str,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO deploy_requests (resource_id, cause, requested_by, requested_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (resource_id) DO UPDATE SET cause = excluded.cause,
                 requested_by = excluded.requested_by, requested_at = excluded.requested_at",
        )
        .bind(resource_id)
        .bind(cause.as_str())
        .bind(requested_by)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(self.q("record a deploy request"))?;
        Ok(())
    }

    /// The pending deploy requests, by resource id.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn deploy_requests(&self) -> Result<BTreeMap<String, DeployRequest>, StateError> {
        let rows = sqlx::query(
            "SELECT resource_id, cause, requested_by, requested_at FROM deploy_requests",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("read deploy requests"))?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let get = |c: &str| -> Result<String, StateError> {
                r.try_get(c).map_err(self.q("read deploy requests"))
            };
            let resource_id = get("resource_id")?;
            // A cause this build does not know (a newer binary wrote it) counts as an
            // operator's request: it still deploys through the normal gates.
            let cause = ForceCause::parse(&get("cause")?).unwrap_or(ForceCause::Operator);
            out.insert(
                resource_id.clone(),
                DeployRequest {
                    resource_id,
                    cause,
                    requested_by: get("requested_by")?,
                    requested_at: get("requested_at")?,
                },
            );
        }
        Ok(out)
    }

    /// Drops the request for `resource_id` (a deployment of it started).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn clear_deploy_request(&self, resource_id: &str) -> Result<(), StateError> {
        sqlx::query("DELETE FROM deploy_requests WHERE resource_id = $1")
            .bind(resource_id)
            .execute(&self.pool)
            .await
            .map_err(self.q("drop a deploy request"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_kept_replaced_and_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = crate::state::testing::url(dir.path()).await;
        let store = Store::open(&url).await.expect("open");
        store
            .request_deploy("environment/dev", ForceCause::DriftHeal, "drift")
            .await
            .expect("request");
        store
            .request_deploy("environment/dev", ForceCause::Operator, "cli")
            .await
            .expect("request again");
        let got = store.deploy_requests().await.expect("read");
        assert_eq!(got.len(), 1);
        let r = &got["environment/dev"];
        assert_eq!(
            (r.cause, r.requested_by.as_str()),
            (ForceCause::Operator, "cli")
        );
        store
            .clear_deploy_request("environment/dev")
            .await
            .expect("clear");
        assert!(store.deploy_requests().await.expect("read").is_empty());
    }
}
