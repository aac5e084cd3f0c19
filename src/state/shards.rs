//! The shard count of a shared `PostgreSQL` state (issue 19): recorded in `meta` at first
//! start, checked by every replica after (a replica with another count would place repos on
//! other shards than its peers, and two leaders could deploy the same resource).
//!
//! Stores and compares only; which shard owns what is `crate::ha::shard`'s decision.

use super::{StateError, Store};

impl Store {
    /// Records `configured` as the state's shard count when none is recorded yet, and
    /// checks it against the recorded one otherwise.
    ///
    /// # Errors
    ///
    /// [`StateError::Shards`] when another count is recorded; a store failure otherwise.
    pub async fn check_shards(&self, configured: u32) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('shards', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(configured.to_string())
        .execute(&self.pool)
        .await
        .map_err(self.q("record the shard count"))?;
        let recorded: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'shards'")
            .fetch_one(&self.pool)
            .await
            .map_err(self.q("read the shard count"))?;
        let recorded: u32 = recorded.trim().parse().map_err(|_| StateError::Corrupt {
            table: "meta",
            detail: format!("shards = {recorded:?} is not a number"),
        })?;
        if recorded == configured {
            Ok(())
        } else {
            Err(StateError::Shards {
                path: self.path.to_string(),
                recorded,
                configured,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_count_sticks_and_another_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        // SQLite, or PostgreSQL with PROTOND_TEST_STATE=postgres.
        let url = crate::state::testing::url(dir.path()).await;
        let store = Store::open(&url).await.expect("open");
        store.check_shards(3).await.expect("first start records 3");
        store.check_shards(3).await.expect("same count accepted");
        let err = store
            .check_shards(4)
            .await
            .expect_err("another count refused");
        let text = err.to_string();
        assert!(
            text.contains("ha.shards = 3") && text.contains("ha.shards = 4"),
            "{text}"
        );
        assert_eq!(err.kind(), "shards");
    }

    #[tokio::test]
    async fn replicas_starting_at_once_get_one_installation_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = crate::state::testing::url(dir.path()).await;
        let first = Store::open(&url).await.expect("open");
        let second = Store::open(&url).await.expect("open again");
        for _ in 0..5 {
            let (a, b) = tokio::join!(first.installation(None), second.installation(None));
            assert_eq!(a.expect("a"), b.expect("b"));
        }
    }
}
