//! Helpers shared by the suites: the test [`world::World`], a running daemon
//! ([`running::Running`]), a fake forge ([`forge::FakeForge`]), git with a fixed identity, the
//! `protond` command, the stacks on a `moto_server`, the peak memory of a child
//! ([`memory`]), and the one lock the suites share.
//!
//! What the suites share, running as threads of one process: nothing but the machine. Each
//! test has its own temporary folder, its own `moto_server` on a free port (no test resets or
//! lists another's), and its own ports for the servers it starts. The exception is the
//! default listen address of `protond run`, which [`DEFAULT_LISTEN`] serialises. Nothing here
//! may set process environment variables: they would leak into every other test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod forge;
pub mod github_app;
pub mod issues;
pub mod memory;
pub mod running;
pub mod world;

/// Held by every test that runs `protond run` without `--listen`: such a daemon serves on the
/// default address 127.0.0.1:8080, and a second one started meanwhile by another test would
/// fail to start. Taken with `lock().await` in async tests and `blocking_lock()` in plain ones
/// (a tokio mutex: no poisoning when a holder fails, and it may be held across awaits).
pub static DEFAULT_LISTEN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs git in `dir` with a fixed identity (CI machines may have none); returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies a folder tree.
pub fn copy_tree(from: &Path, to: &Path) {
    protond::demo::copy_tree(from, to).expect("copy tree");
}

/// The project's example repos.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repos")
}

/// The `protond` binary with `args`, then `--config <config>`, test AWS credentials (for a
/// `moto_server`) and JSON logs.
pub fn protond(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_protond"));
    c.args(args)
        .arg("--config")
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .env("PROTOND_LOG_FORMAT", "json");
    c
}

/// A `CloudFormation` client for a `moto_server` at `url`.
pub fn cfn_client(url: &str) -> aws_sdk_cloudformation::Client {
    let conf = aws_sdk_cloudformation::Config::builder()
        .behavior_version(aws_sdk_cloudformation::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudformation::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_cloudformation::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_cloudformation::Client::from_conf(conf)
}

/// A live (not deleted) stack on a `moto_server`.
#[derive(Debug)]
pub struct LiveStack {
    pub name: String,
    pub status: String,
    pub tags: BTreeMap<String, String>,
}

impl LiveStack {
    /// The protond resource the stack belongs to (its `protond:resource` tag).
    pub fn resource(&self) -> Option<&str> {
        self.tags.get("protond:resource").map(String::as_str)
    }
}

/// The stacks on the `moto_server` at `url` that are not deleted.
pub async fn live_stacks(url: &str) -> Vec<LiveStack> {
    let out = cfn_client(url)
        .describe_stacks()
        .send()
        .await
        .expect("describe stacks");
    out.stacks()
        .iter()
        .map(|s| LiveStack {
            name: s.stack_name().unwrap_or("").to_string(),
            status: s
                .stack_status()
                .map(|x| x.as_str().to_string())
                .unwrap_or_default(),
            tags: s
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or("").to_string(),
                        t.value().unwrap_or("").to_string(),
                    )
                })
                .collect(),
        })
        .filter(|s| s.status != "DELETE_COMPLETE")
        .collect()
}

/// A deployment a restart found interrupted: failed, retryable, and saying so.
pub fn assert_interrupted(row: &protond::state::DeploymentRecord) {
    assert_eq!(row.status, "failed", "{row:?}");
    assert!(row.retryable, "{row:?}");
    assert!(
        row.error
            .as_deref()
            .is_some_and(|e| e.contains("interrupted")),
        "{row:?}"
    );
}

/// stdout then stderr of a finished command, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `f` every 200 ms for up to 90 s; panics with the daemon's log (`log`) when it
/// never holds.
pub async fn until<F, Fut>(what: &str, log: &Path, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(90) {
        if f().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!(
        "timed out waiting for {what}; daemon log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Whether the suites run on PostgreSQL (`PROTOND_TEST_STATE=postgres`, with the server at
/// `PROTOND_TEST_POSTGRES_URL`: scripts/postgres starts one) instead of `SQLite` files.
pub fn on_postgres() -> bool {
    std::env::var("PROTOND_TEST_STATE").as_deref() == Ok("postgres")
}

/// Whether a test of what only `SQLite` has (the file, its integrity, a full disk, the lock
/// file beside it, WAL) runs: true on `SQLite`; on PostgreSQL it prints a one-line note and
/// the test returns early (`if !common::sqlite_only("...") { return; }`).
pub fn sqlite_only(what: &str) -> bool {
    if on_postgres() {
        eprintln!("note: skipped on PostgreSQL: {what} is SQLite's");
        return false;
    }
    true
}

/// A PostgreSQL database of one world's own, created on the test server and dropped (with
/// whoever is still connected) when this is dropped.
pub struct Database {
    /// Its URL.
    pub url: String,
    /// Its name.
    name: String,
}

impl Database {
    /// A new database when the suites run on PostgreSQL; `None` on `SQLite`.
    pub fn for_suites() -> Option<Self> {
        if !on_postgres() {
            return None;
        }
        Some(Self::on_test_server().expect(
            "PROTOND_TEST_STATE=postgres needs PROTOND_TEST_POSTGRES_URL (scripts/postgres)",
        ))
    }

    /// A new database on the test server, when there is one (`PROTOND_TEST_POSTGRES_URL`).
    pub fn on_test_server() -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let admin = std::env::var("PROTOND_TEST_POSTGRES_URL").ok()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("protond_it_{}_{n}_{nanos}", std::process::id());
        admin_sql(&admin, format!("CREATE DATABASE {name}")).expect("create a test database");
        let mut url = reqwest::Url::parse(&admin).expect("PROTOND_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        Some(Self {
            url: url.to_string(),
            name,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Never panic here: a failed test is unwinding through it.
        let dropped = admin_sql(
            &admin_url(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        if let Err(e) = dropped {
            eprintln!("note: test database {} not dropped: {e}", self.name);
        }
    }
}

/// The test server's URL (its `postgres` database).
fn admin_url() -> String {
    std::env::var("PROTOND_TEST_POSTGRES_URL")
        .expect("PROTOND_TEST_STATE=postgres needs PROTOND_TEST_POSTGRES_URL (scripts/postgres)")
}

/// Runs one statement on the test server, on a thread of its own (callers may be inside a
/// runtime or not).
fn admin_sql(admin: &str, sql: String) -> Result<(), String> {
    use sqlx::{Connection as _, Executor as _};
    let admin = admin.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .map_err(|e| format!("connect to the test PostgreSQL server: {e}"))?;
            conn.execute(sqlx::AssertSqlSafe(sql.clone()))
                .await
                .map(|_| ())
                .map_err(|e| format!("{sql}: {e}"))
        })
    })
    .join()
    .map_err(|_| "the statement's thread panicked".to_string())?
}

/// A port of 127.0.0.1 that nothing listens on, below the ephemeral range: no proxy or
/// server another test binds to port 0 can take it before the test's own server binds it.
pub fn free_port() -> u16 {
    protond::demo::unused_port().expect("a free port")
}
