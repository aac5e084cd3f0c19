//! Pages of the deployment history for the HTTP API's cursor pagination: newest first,
//! strictly older than a cursor (a deployment id), so no row is lost or repeated between
//! pages while new deployments are recorded.
//!
//! Reads only; never writes or decides what a page holds beyond the query.

use super::{DeploymentRecord, StateError, Store, deployment_from_row};

impl Store {
    /// Up to `limit` deployments, newest first, optionally of one resource, with ids below
    /// `before` when given.
    pub async fn deployments_before(
        &self,
        resource: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeploymentRecord>, StateError> {
        // Not `(?1 IS NULL OR resource_id = ?1)`: that form cannot use the index.
        let sql = if resource.is_some() {
            concat!(
                "SELECT id, resource_id, kind, repo, environment, action, reason, template, from_version, to_version, input_hash, rendered_hash, spec_commit, status, error, retryable, started_at, finished_at, stack_name, stack_id, region, role_arn",
                " FROM deployments WHERE resource_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            )
        } else {
            concat!(
                "SELECT id, resource_id, kind, repo, environment, action, reason, template, from_version, to_version, input_hash, rendered_hash, spec_commit, status, error, retryable, started_at, finished_at, stack_name, stack_id, region, role_arn",
                " FROM deployments WHERE $1 IS NULL AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            )
        };
        let rows = sqlx::query(sql)
            .bind(resource)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("list deployments"))?;
        rows.iter().map(deployment_from_row).collect()
    }
}
