//! The rows the fleet report (`crate::report`) reads beyond the status views: every recorded
//! rollout decision with its status as stored (`halted`, `resumed`, and whatever status a
//! later decision records, such as a quarantine). Reads only; what a row means is decided by
//! the report's builder, never here.

use sqlx::Row;

use super::{StateError, Store, corrupt};
use crate::model::Version;

/// A rollout decision as stored in the `rollouts` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutDecision {
    /// The template's name.
    pub template: String,
    /// The version the decision is about.
    pub version: Version,
    /// The stored status text (`halted`, `resumed`, …).
    pub status: String,
    /// Why, as recorded.
    pub reason: Option<String>,
    /// When it was recorded (RFC 3339).
    pub updated_at: String,
}

impl Store {
    /// Every recorded rollout decision, by template and version.
    ///
    /// # Errors
    ///
    /// A store failure, or a stored version out of range.
    pub async fn rollout_decisions(&self) -> Result<Vec<RolloutDecision>, StateError> {
        let rows = sqlx::query(
            "SELECT template, major, minor, status, reason, updated_at FROM rollouts
             ORDER BY template, major, minor",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list rollouts"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let get = |c: &str| -> Result<i64, StateError> {
                r.try_get(c).map_err(self.q("list rollouts"))
            };
            let (major, minor) = (get("major")?, get("minor")?);
            let part = |n: i64, what: &str| {
                u32::try_from(n).map_err(|_| corrupt("rollouts", format!("{what} {n}")))
            };
            out.push(RolloutDecision {
                template: r.try_get("template").map_err(self.q("list rollouts"))?,
                version: Version {
                    major: part(major, "major")?,
                    minor: part(minor, "minor")?,
                },
                status: r.try_get("status").map_err(self.q("list rollouts"))?,
                reason: r.try_get("reason").map_err(self.q("list rollouts"))?,
                updated_at: r.try_get("updated_at").map_err(self.q("list rollouts"))?,
            });
        }
        Ok(out)
    }
}
