//! The PostgreSQL backend: connecting (password from the environment or a file, never from
//! a URL in a config file; TLS through the URL's `sslmode`/`sslrootcert`), migrating
//! (`migrations/postgres/`, the same schema as `SQLite`'s), and sending this process's lease
//! claim with every statement so the database's fence refuses writes from a lost lease
//! (see [`super::lease`]).
//!
//! Opens and configures connections only; which replica leads is decided in `super::lease`
//! and the daemon, never here.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::Executor as _;
use sqlx::any::AnyPoolOptions;

use super::{Backend, StateError, Store, install_drivers, migrate_error};

/// The environment variable holding the PostgreSQL password.
pub const PASSWORD_ENV: &str = "PROTOND_STATE_PASSWORD";

/// A connection URL holding a password: kept in memory, never shown (`Debug` prints stars).
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl Secret {
    /// The URL, to connect with.
    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

/// `url` without its password, for messages and the status page.
#[must_use]
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("********"));
            }
            u.to_string()
        }
        Err(_) => "postgres://(unparsable URL)".into(),
    }
}

/// `PROTOND_STATE_PASSWORD` as it was when the process started ([`take_password_from_env`]).
static ENV_PASSWORD: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Reads `PROTOND_STATE_PASSWORD` once and removes it from the environment, so that no child
/// process (git, its credential and ssh helpers, gix's `git-upload-pack`) inherits it. Call
/// first thing in `main`, before any other thread exists.
pub fn take_password_from_env() {
    let value = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    if value.is_some() {
        // SAFETY: called at the start of `main`, before the runtime or any other thread
        // starts, so nothing reads or writes the environment at the same time.
        unsafe { std::env::remove_var(PASSWORD_ENV) };
    }
    let _ = ENV_PASSWORD.set(value);
}

/// The password from the environment: as taken at start, else (tests, library use) read now.
fn env_password() -> Option<String> {
    match ENV_PASSWORD.get() {
        Some(taken) => taken.clone(),
        None => std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
    }
}

/// The URL to connect with: `url` with `password` (else `PROTOND_STATE_PASSWORD`, else the
/// URL's own) put in.
pub(super) fn with_password(url: &str, password: Option<&str>) -> Result<String, StateError> {
    let env = env_password();
    let Some(password) = password.map(str::to_string).or(env) else {
        return Ok(url.to_string());
    };
    let mut u = reqwest::Url::parse(url).map_err(|_| StateError::Url { url: redact(url) })?;
    u.set_password(Some(&password))
        .map_err(|()| StateError::Url { url: redact(url) })?;
    Ok(u.to_string())
}

/// Sets the session's lease claim (`protond.fence`) to what the store holds now.
async fn send_fence(conn: &mut AnyConnection, fence: &Arc<RwLock<String>>) -> sqlx::Result<()> {
    // A poisoned lock still holds the claim: never send an empty (unfenced) one for it.
    let claim = fence
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    conn.execute(sqlx::query("SELECT set_config('protond.fence', $1, false)").bind(claim))
        .await
        .map(|_| ())
}

/// Connects to the database at `url` without migrating it.
pub(super) async fn connect(url: &str, password: Option<&str>) -> Result<Store, StateError> {
    install_drivers();
    let shown = redact(url);
    let full = with_password(url, password)?;
    let fence: Arc<RwLock<String>> = Arc::default();
    let (on_connect, on_acquire) = (fence.clone(), fence.clone());
    let pool = AnyPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _| {
            let fence = on_connect.clone();
            Box::pin(async move {
                // PostgreSQL's notices ("relation ... already exists, skipping" at every
                // migration check) would be logged by every command: warnings and up only.
                conn.execute("SET client_min_messages = warning").await?;
                // A replica stopped (SIGSTOP, a partition) inside a transaction holds its
                // row locks, the lease row's among them, and would block every takeover:
                // the server ends such a session after 10 s (protond's transactions last
                // milliseconds).
                conn.execute("SET idle_in_transaction_session_timeout = 10000")
                    .await?;
                send_fence(conn, &fence).await
            })
        })
        .before_acquire(move |conn, _| {
            let fence = on_acquire.clone();
            Box::pin(async move {
                if !super::out_of_transaction(conn) {
                    return Ok(false);
                }
                send_fence(conn, &fence).await.map(|()| true)
            })
        })
        .connect(&full)
        .await
        .map_err(|source| StateError::Open {
            url: shown.clone(),
            source,
        })?;
    Ok(Store {
        pool,
        path: shown.into(),
        backend: Backend::Postgres,
        fence,
        connect_url: Some(Secret(full.into())),
        kept: super::generation::Kept::default(),
    })
}

/// Connects to the database at `url` and runs the migrations (sqlx holds a PostgreSQL
/// advisory lock while migrating, so replicas starting together migrate once).
pub(super) async fn open(url: &str, password: Option<&str>) -> Result<Store, StateError> {
    let store = connect(url, password).await?;
    sqlx::migrate!("./migrations/postgres")
        .run(&store.pool)
        .await
        .map_err(|source| migrate_error(Backend::Postgres, &store.path, &store.path, source))?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        assert_eq!(
            redact("postgres://protond:s3cret@db:5432/protond?sslmode=require"),
            "postgres://protond:********@db:5432/protond?sslmode=require"
        );
        assert_eq!(redact("postgres://db/protond"), "postgres://db/protond");
        assert!(!redact("postgres://u:hunter2@[bad").contains("hunter2"));
    }

    #[test]
    fn the_password_goes_into_the_url_it_connects_with() {
        let url = with_password("postgres://protond@db:5432/protond", Some("p@ss word"))
            .expect("a valid URL");
        assert_eq!(url, "postgres://protond:p%40ss%20word@db:5432/protond");
    }
    #[tokio::test]
    async fn tls_connections_verify_the_server() {
        let (Ok(admin), Ok(ca)) = (
            std::env::var("PROTOND_TEST_POSTGRES_URL"),
            std::env::var("PROTOND_TEST_POSTGRES_CA"),
        ) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the TLS test: scripts/postgres sets PROTOND_TEST_POSTGRES_CA"
            );
            eprintln!("note: no TLS test server (PROTOND_TEST_POSTGRES_CA); test skipped");
            return;
        };
        let url = crate::state::testing::new_database(&admin).await;
        let verified = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
        let store = Store::open(&verified).await.expect("a TLS connection");
        let ssl: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&store.pool)
                .await
                .expect("ssl");
        assert!(ssl, "the session is encrypted");
        // The test CA is not among the system's roots: verification refuses the server.
        let err = connect(&format!("{url}?sslmode=verify-full"), None)
            .await
            .expect_err("an unverified server");
        assert!(matches!(err, StateError::Open { .. }), "{err:?}");
    }
}
