//! Stopped rollouts by kind (a pause, `halt`, or a bad release, `quarantine`), who stopped
//! them, and the history of releases (`release_events`: every quarantine, release, halt and
//! resume, never rewritten). Stores and loads only: when a release is quarantined is decided
//! by `crate::evaluate::quarantine`.

use std::collections::BTreeSet;

use serde::Serialize;
use sqlx::Row;

use super::{StateError, Store, corrupt, now};
use crate::model::Version;

/// How a rollout is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// A pause (`protond rollout halt`): nothing moves back.
    Halt,
    /// A bad release: resources on it are offered (or given) the previous minor.
    Quarantine,
}

impl StopKind {
    /// The stored text.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Halt => "halt",
            Self::Quarantine => "quarantine",
        }
    }

    /// The history event it records (`halted`, `quarantined`) and, lifted, (`resumed`,
    /// `released`).
    #[must_use]
    pub fn events(self) -> (&'static str, &'static str) {
        match self {
            Self::Halt => ("halted", "resumed"),
            Self::Quarantine => ("quarantined", "released"),
        }
    }
}

/// A stopped rollout, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stop {
    /// The template.
    pub template: String,
    /// The version.
    #[serde(serialize_with = "super::as_text")]
    pub version: Version,
    /// A pause or a quarantine.
    pub kind: StopKind,
    /// Who: `protond` or `cli:<user>` (empty for rows written before it was recorded).
    pub by: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

/// One row of a release's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseEvent {
    /// The row's id (increasing).
    pub id: i64,
    /// The template.
    pub template: String,
    /// The version.
    #[serde(serialize_with = "super::as_text")]
    pub version: Version,
    /// `quarantined`, `released`, `halted` or `resumed`.
    pub event: String,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

fn version_of(table: &'static str, major: i64, minor: i64) -> Result<Version, StateError> {
    Ok(Version {
        major: u32::try_from(major).map_err(|_| corrupt(table, format!("major {major}")))?,
        minor: u32::try_from(minor).map_err(|_| corrupt(table, format!("minor {minor}")))?,
    })
}

impl Store {
    /// Stops the rollout of `template` `version` (`kind`), by `by`, for `reason`, and
    /// records the event. Returns false (and records nothing) when it is already stopped
    /// with that kind, or quarantined (a halt never turns a quarantine into a pause).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn stop_rollout(
        &self,
        template: &str,
        version: Version,
        kind: StopKind,
        by: &str,
        reason: &str,
    ) -> Result<bool, StateError> {
        let mut tx = self.write_tx("stop rollout").await?;
        let at = now();
        // Writing first (a read first can fail at once on a busy WAL database).
        let changed = sqlx::query(
            "INSERT INTO rollouts (template, major, minor, status, reason, updated_at, kind, set_by) VALUES ($1, $2, $3, 'halted', $4, $5, $6, $7)
             ON CONFLICT (template, major, minor) DO UPDATE SET status = 'halted', reason = excluded.reason,
               updated_at = excluded.updated_at, kind = excluded.kind, set_by = excluded.set_by
             WHERE rollouts.status <> 'halted' OR (rollouts.kind = 'halt' AND excluded.kind = 'quarantine')",
        )
        .bind(template)
        .bind(i64::from(version.major))
        .bind(i64::from(version.minor))
        .bind(reason)
        .bind(&at)
        .bind(kind.as_str())
        .bind(by)
        .execute(&mut *tx)
        .await
        .map_err(self.q("stop rollout"))?
        .rows_affected()
            > 0;
        if changed {
            self.release_event(&mut tx, template, version, kind.events().0, by, reason, &at)
                .await?;
        }
        tx.commit().await.map_err(self.q("stop rollout"))?;
        Ok(changed)
    }

    /// Lifts the stop of `template` `version` (a quarantine is released, a halt resumed):
    /// the rollout continues and its failed deployments are retried. Returns the kind it had,
    /// or `None` when it was not stopped (nothing is recorded then).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn lift_rollout(
        &self,
        template: &str,
        version: Version,
        by: &str,
        reason: &str,
    ) -> Result<Option<StopKind>, StateError> {
        let mut tx = self.write_tx("lift rollout").await?;
        let at = now();
        let row = sqlx::query(
            "UPDATE rollouts SET status = 'resumed', reason = $1, updated_at = $2, set_by = $3
             WHERE template = $4 AND major = $5 AND minor = $6 AND status = 'halted' RETURNING kind",
        )
        .bind(reason)
        .bind(&at)
        .bind(by)
        .bind(template)
        .bind(i64::from(version.major))
        .bind(i64::from(version.minor))
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.q("lift rollout"))?;
        let Some(row) = row else {
            tx.rollback().await.map_err(self.q("lift rollout"))?;
            return Ok(None);
        };
        let kind: String = row.try_get("kind").map_err(self.q("lift rollout"))?;
        let kind = if kind == "quarantine" {
            StopKind::Quarantine
        } else {
            StopKind::Halt
        };
        // The failed deployments of the version are retried.
        sqlx::query(
            "UPDATE deployments SET retryable = 1 WHERE template = $1 AND to_version = $2 AND status = 'failed'",
        )
        .bind(template)
        .bind(version.to_string())
        .execute(&mut *tx)
        .await
        .map_err(self.q("lift rollout"))?;
        self.release_event(&mut tx, template, version, kind.events().1, by, reason, &at)
            .await?;
        tx.commit().await.map_err(self.q("lift rollout"))?;
        Ok(Some(kind))
    }

    #[allow(clippy::too_many_arguments)] // one row's columns
    async fn release_event(
        &self,
        tx: &mut sqlx::AnyConnection,
        template: &str,
        version: Version,
        event: &str,
        by: &str,
        reason: &str,
        at: &str,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO release_events (template, major, minor, event, set_by, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(template)
        .bind(i64::from(version.major))
        .bind(i64::from(version.minor))
        .bind(event)
        .bind(by)
        .bind(reason)
        .bind(at)
        .execute(tx)
        .await
        .map_err(self.q("record release event"))?;
        Ok(())
    }

    /// The rollouts stopped now, with their kind, who and why.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn stops(&self) -> Result<Vec<Stop>, StateError> {
        let rows = sqlx::query(
            "SELECT template, major, minor, kind, set_by, reason, updated_at FROM rollouts WHERE status = 'halted' ORDER BY template, major, minor",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list stopped rollouts"))?;
        let mut out = Vec::new();
        for r in &rows {
            let get = |c: &str| -> Result<Option<String>, StateError> {
                r.try_get(c).map_err(self.q("list stopped rollouts"))
            };
            let major: i64 = r
                .try_get("major")
                .map_err(self.q("list stopped rollouts"))?;
            let minor: i64 = r
                .try_get("minor")
                .map_err(self.q("list stopped rollouts"))?;
            out.push(Stop {
                template: get("template")?.unwrap_or_default(),
                version: version_of("rollouts", major, minor)?,
                kind: if get("kind")?.as_deref() == Some("quarantine") {
                    StopKind::Quarantine
                } else {
                    StopKind::Halt
                },
                by: get("set_by")?.unwrap_or_default(),
                reason: get("reason")?.unwrap_or_default(),
                at: get("updated_at")?.unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The quarantined releases.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn quarantined(&self) -> Result<BTreeSet<(String, Version)>, StateError> {
        Ok(self
            .stops()
            .await?
            .into_iter()
            .filter(|s| s.kind == StopKind::Quarantine)
            .map(|s| (s.template, s.version))
            .collect())
    }

    /// The release-history rows not announced yet, oldest first, marked announced as they
    /// are returned (each is announced at most once, whichever process recorded it).
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn take_unannounced_release_events(&self) -> Result<Vec<ReleaseEvent>, StateError> {
        let rows = sqlx::query(
            "UPDATE release_events SET announced = 1 WHERE announced = 0
             RETURNING id, template, major, minor, event, set_by, reason, at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("take release events"))?;
        let mut out = rows
            .iter()
            .map(|r| self.event_from_row(r))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    fn event_from_row(&self, r: &sqlx::any::AnyRow) -> Result<ReleaseEvent, StateError> {
        let get = |c: &str| -> Result<String, StateError> {
            r.try_get(c).map_err(self.q("list release events"))
        };
        let major: i64 = r.try_get("major").map_err(self.q("list release events"))?;
        let minor: i64 = r.try_get("minor").map_err(self.q("list release events"))?;
        Ok(ReleaseEvent {
            id: r.try_get("id").map_err(self.q("list release events"))?,
            template: get("template")?,
            version: version_of("release_events", major, minor)?,
            event: get("event")?,
            by: get("set_by")?,
            reason: get("reason")?,
            at: get("at")?,
        })
    }

    /// The history of releases, oldest first: all, one template's, or one release's.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn release_events(
        &self,
        template: Option<&str>,
        version: Option<Version>,
    ) -> Result<Vec<ReleaseEvent>, StateError> {
        let rows = sqlx::query(
            "SELECT id, template, major, minor, event, set_by, reason, at FROM release_events
             WHERE ($1 IS NULL OR template = $1) AND ($2 IS NULL OR (major = $2 AND minor = $3))
             ORDER BY id",
        )
        .bind(template)
        .bind(version.map(|v| i64::from(v.major)))
        .bind(version.map(|v| i64::from(v.minor)))
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list release events"))?;
        rows.iter().map(|r| self.event_from_row(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_lifts_and_their_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = crate::state::testing::url(dir.path()).await;
        let store = Store::open(&url).await.expect("open");
        let v = Version { major: 1, minor: 1 };
        let q = StopKind::Quarantine;
        assert!(
            store
                .stop_rollout("web", v, q, "protond", "2 failed")
                .await
                .expect("stop")
        );
        // Again: nothing new.
        assert!(
            !store
                .stop_rollout("web", v, q, "protond", "3 failed")
                .await
                .expect("stop")
        );
        assert_eq!(store.quarantined().await.expect("q").len(), 1);
        let halted = store.rollouts().await.expect("rollouts");
        assert_eq!(
            halted.get(&("web".to_string(), v)),
            Some(&(true, "quarantined by protond: 2 failed".to_string()))
        );
        let lifted = store.lift_rollout("web", v, "cli:alice", "fixed").await;
        assert_eq!(lifted.expect("lift"), Some(StopKind::Quarantine));
        assert_eq!(
            store
                .lift_rollout("web", v, "cli:alice", "again")
                .await
                .expect("lift"),
            None
        );
        assert!(store.quarantined().await.expect("q").is_empty());
        // A pause is not a quarantine.
        assert!(
            store
                .stop_rollout(
                    "web",
                    Version { major: 1, minor: 2 },
                    StopKind::Halt,
                    "cli:bob",
                    "freeze"
                )
                .await
                .expect("halt")
        );
        assert!(store.quarantined().await.expect("q").is_empty());
        let events = store
            .release_events(Some("web"), Some(v))
            .await
            .expect("events");
        let got: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|e| (e.event.as_str(), e.by.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("quarantined", "protond", "2 failed"),
                ("released", "cli:alice", "fixed")
            ]
        );
        assert_eq!(
            store.release_events(None, None).await.expect("all").len(),
            3
        );
        assert!(
            store
                .release_events(Some("api"), None)
                .await
                .expect("none")
                .is_empty()
        );
    }
}
