//! Operator holds (`protond hold`) and pins (`protond rollback --to`): stored and loaded
//! only. What a hold stops is decided by [`crate::plan::holds`], what a pin holds by
//! [`crate::evaluate::pins`]; this module must never decide either.

use std::time::SystemTime;

use sqlx::Row;

use super::{StateError, Store, now};
use crate::model::Version;
use crate::plan::holds::{Hold, HoldTarget, rfc3339};

/// A stored pin (`protond rollback --to`), with who set it and when. The target is kept as
/// written (`resource`, `environment` or `stage`, and a name); `crate::evaluate::pins`
/// reads it as a pin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PinRecord {
    /// `resource`, `environment` or `stage`.
    pub target_kind: String,
    /// The resource id or the name.
    pub target_name: String,
    /// Only resources of this template, when set.
    pub template: Option<String>,
    /// The version held on.
    #[serde(serialize_with = "super::as_text")]
    pub version: Version,
    /// Who set it.
    pub by: String,
    /// When (RFC 3339).
    pub set_at: String,
}

fn corrupt(table: &'static str, detail: String) -> StateError {
    StateError::Corrupt { table, detail }
}

impl Store {
    /// Sets a hold, replacing the target's earlier one, and drops holds that ended.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn put_hold(&self, h: &Hold) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO holds (target_kind, target_name, all_changes, until, reason, set_by, set_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (target_kind, target_name) DO UPDATE SET all_changes = excluded.all_changes,
                 until = excluded.until, reason = excluded.reason, set_by = excluded.set_by,
                 set_at = excluded.set_at",
        )
        .bind(h.target.kind())
        .bind(h.target.name())
        .bind(i64::from(h.all))
        .bind(rfc3339(h.until))
        .bind(&h.reason)
        .bind(&h.by)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(self.q("record a hold"))?;
        // RFC 3339 in UTC to the second sorts as text.
        sqlx::query("DELETE FROM holds WHERE until <= $1")
            .bind(rfc3339(SystemTime::now()))
            .execute(&self.pool)
            .await
            .map_err(self.q("drop ended holds"))?;
        Ok(())
    }

    /// Removes the hold on `target`; whether there was one.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn delete_hold(&self, target: &HoldTarget) -> Result<bool, StateError> {
        let done = sqlx::query("DELETE FROM holds WHERE target_kind = $1 AND target_name = $2")
            .bind(target.kind())
            .bind(target.name())
            .execute(&self.pool)
            .await
            .map_err(self.q("remove a hold"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Every stored hold (ended ones included until the next `put_hold`), by target.
    ///
    /// # Errors
    ///
    /// A store failure, or a row this version cannot read.
    pub async fn holds(&self) -> Result<Vec<Hold>, StateError> {
        let rows = sqlx::query(
            "SELECT target_kind, target_name, all_changes, until, reason, set_by, set_at
             FROM holds ORDER BY target_kind, target_name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list holds"))?;
        rows.iter()
            .map(|r| {
                let get = |c: &str| r.try_get::<String, _>(c).map_err(self.q("list holds"));
                let (kind, name) = (get("target_kind")?, get("target_name")?);
                let target = HoldTarget::from_parts(&kind, &name)
                    .ok_or_else(|| corrupt("holds", format!("target_kind = {kind:?}")))?;
                let until_text = get("until")?;
                let until = humantime::parse_rfc3339(&until_text)
                    .map_err(|_| corrupt("holds", format!("until = {until_text:?}")))?;
                Ok(Hold {
                    target,
                    all: r
                        .try_get::<i64, _>("all_changes")
                        .map_err(self.q("list holds"))?
                        != 0,
                    until,
                    reason: get("reason")?,
                    by: get("set_by")?,
                    set_at: get("set_at")?,
                })
            })
            .collect()
    }

    /// Sets a pin, replacing the one on the same target and template.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn put_pin(&self, pin: &PinRecord) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO pins (target_kind, target_name, template, major, minor, set_by, set_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (target_kind, target_name, template) DO UPDATE SET major = excluded.major,
                 minor = excluded.minor, set_by = excluded.set_by, set_at = excluded.set_at",
        )
        .bind(&pin.target_kind)
        .bind(&pin.target_name)
        .bind(pin.template.as_deref().unwrap_or(""))
        .bind(i64::from(pin.version.major))
        .bind(i64::from(pin.version.minor))
        .bind(&pin.by)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(self.q("record a pin"))?;
        Ok(())
    }

    /// Removes the pins on the target `kind`, `name` (only those of `template`, when given);
    /// how many.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn delete_pins(
        &self,
        kind: &str,
        name: &str,
        template: Option<&str>,
    ) -> Result<u64, StateError> {
        let done = sqlx::query(
            "DELETE FROM pins WHERE target_kind = $1 AND target_name = $2
             AND ($3 IS NULL OR template = $3)",
        )
        .bind(kind)
        .bind(name)
        .bind(template)
        .execute(&self.pool)
        .await
        .map_err(self.q("remove a pin"))?;
        Ok(done.rows_affected())
    }

    /// Every stored pin.
    ///
    /// # Errors
    ///
    /// A store failure, or a row this version cannot read.
    pub async fn pins(&self) -> Result<Vec<PinRecord>, StateError> {
        let rows = sqlx::query(
            "SELECT target_kind, target_name, template, major, minor, set_by, set_at
             FROM pins ORDER BY target_kind, target_name, template",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list pins"))?;
        rows.iter()
            .map(|r| {
                let get = |c: &str| r.try_get::<String, _>(c).map_err(self.q("list pins"));
                let num = |c: &str| {
                    let n = r.try_get::<i64, _>(c).map_err(self.q("list pins"))?;
                    u32::try_from(n).map_err(|_| corrupt("pins", format!("{c} = {n}")))
                };
                let template = get("template")?;
                Ok(PinRecord {
                    target_kind: get("target_kind")?,
                    target_name: get("target_name")?,
                    template: (!template.is_empty()).then_some(template),
                    version: Version {
                        major: num("major")?,
                        minor: num("minor")?,
                    },
                    by: get("set_by")?,
                    set_at: get("set_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn holds_and_pins_round_trip_and_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = crate::state::testing::url(dir.path()).await;
        let store = Store::open(&url).await.expect("open");
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        let mut h = Hold {
            target: HoldTarget::parse("environment:dev").expect("target"),
            all: false,
            until,
            reason: "incident".into(),
            by: "cli:alice".into(),
            set_at: String::new(),
        };
        store.put_hold(&h).await.expect("put");
        h.all = true;
        store.put_hold(&h).await.expect("replace");
        let got = store.holds().await.expect("holds");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].all && got[0].until == until && got[0].by == "cli:alice");
        assert!(store.delete_hold(&h.target).await.expect("delete"));
        assert!(!store.delete_hold(&h.target).await.expect("delete again"));

        let pin = PinRecord {
            target_kind: "stage".into(),
            target_name: "prod".into(),
            template: Some("web".into()),
            version: Version { major: 1, minor: 0 },
            by: "cli:bob".into(),
            set_at: String::new(),
        };
        store.put_pin(&pin).await.expect("pin");
        let other = PinRecord {
            template: None,
            ..pin.clone()
        };
        store.put_pin(&other).await.expect("pin");
        let got = store.pins().await.expect("pins");
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1].template, pin.template);
        assert_eq!(got[1].by, "cli:bob");
        let n = store
            .delete_pins("stage", "prod", Some("web"))
            .await
            .expect("unpin");
        assert_eq!(n, 1);
        assert_eq!(
            store
                .delete_pins("stage", "prod", None)
                .await
                .expect("unpin"),
            1
        );
        assert!(store.pins().await.expect("pins").is_empty());
    }
}
