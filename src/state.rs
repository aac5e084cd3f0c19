//! Deployed state and history in SQL (sqlx; an embedded `SQLite` file by default).
//!
//! Three tables (see `migrations/`): registered and rejected template versions, the resources
//! protond manages with what is deployed now, and an append-only deployment history in which
//! a row only ever moves from `in_progress` to a final status. A unique index keeps at most
//! one deployment in flight per resource. Finishing a deployment and recording its resource
//! happen in one transaction, so a crash never leaves the two disagreeing.
//!
//! Statuses are [`crate::model`] enums everywhere but here: this module converts them to
//! and from their stored text, and nowhere else does.
//!
//! This module stores and loads, and derives read-only views that need nothing but stored
//! rows (rollout progress); it never decides what to deploy. Its [`WriterLock`] keeps a
//! store to one reconciling process at a time (see [`lock`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use sqlx::AnyPool;
use sqlx::ConnectOptions as _;
use sqlx::Row;
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::SqliteConnectOptions;

use crate::model::{
    DeploymentAction, DeploymentStatus, Placement, ProposalState, ResourceKind, ResourceStatus,
    RolloutState, TagState, Version,
};
use crate::plan;

mod actions;
mod approvals;
pub mod copy;
pub mod drift;
mod generation;
mod holds;
pub mod lease;
pub mod lock;
mod outputs;
mod pages;
pub mod pg;
mod quarantine;
mod repo_health;
mod report;
mod requests;
mod retired;
mod shards;
pub use actions::{ActionNotes, Progress};
pub use approvals::PendingApproval;
pub use generation::CycleReads;
pub use holds::PinRecord;
pub use lock::{LockHolder, WriterLock};
pub use outputs::Outputs;
pub use quarantine::{ReleaseEvent, Stop, StopKind};
pub use repo_health::{Fallback, SkippedRepo, SkippedRepos};
pub use report::RolloutDecision;
pub use requests::DeployRequest;

/// A state-store failure.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The URL is not one this build supports.
    #[error(
        "state URL {url:?} is not supported; use sqlite://path/to/state.db or postgres://user@host:5432/database"
    )]
    Url {
        /// The URL given.
        url: String,
    },
    /// The database could not be opened or created.
    #[error("cannot open the state database {url:?}")]
    Open {
        /// The URL.
        url: String,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
    /// Migrations failed.
    #[error("cannot migrate the state database {url:?}")]
    Migrate {
        /// The URL.
        url: String,
        /// The underlying error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("state query failed: {what}")]
    Query {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
    /// The database file could not be written: the filesystem holding it is full, a
    /// file-size limit was reached, or the disk failed. `SQLite` keeps the last committed state.
    #[error(
        "cannot write the state database {path} ({cause}) while trying to {what}: free space on the filesystem holding it (or raise the file-size limit, ulimit -f) and run protond again; the last committed state is kept"
    )]
    Storage {
        /// The database file.
        path: String,
        /// What was being done.
        what: &'static str,
        /// `SQLite`'s (or the system's) reason, e.g. `database or disk is full`.
        cause: String,
    },
    /// A deployment is already in flight for the resource.
    #[error("a deployment of {resource} is already in flight (deployment {existing})")]
    InFlight {
        /// Resource id.
        resource: String,
        /// The in-flight deployment id.
        existing: i64,
    },
    /// The config names another installation than the state recorded.
    #[error(
        "the state database {path} belongs to installation {recorded:?}, but the config sets installation = {configured:?}; every stack of {recorded:?} would look foreign. Set installation = {recorded:?} (or remove the key), or use another state file for another installation"
    )]
    Installation {
        /// The database file.
        path: String,
        /// The name recorded at first start.
        recorded: String,
        /// The name the config sets.
        configured: String,
    },
    /// Another process holds the store's writer lock: a second `protond run` or `protond
    /// reconcile` on the same state file.
    #[error(
        "the state database {} is in use by {} (lock file {}): stop the other protond, or point this one at another state file (`state` in the config)",
        database.display(), lock::describe_holder(holder.as_deref()), path.display()
    )]
    Locked {
        /// The database file.
        database: std::path::PathBuf,
        /// The lock file beside it.
        path: std::path::PathBuf,
        /// Who holds it, as the lock file says; `None` when it does not say yet. (Boxed to
        /// keep the error small.)
        holder: Option<Box<LockHolder>>,
    },
    /// The lock file beside the database could not be created, locked or written.
    #[error("cannot {what} the state lock file {}", path.display())]
    LockFile {
        /// The lock file.
        path: std::path::PathBuf,
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The shared state was set up for another number of shards than this replica's
    /// config says: the replicas would disagree on which shard owns which repo.
    #[error(
        "the state database {path} was set up for ha.shards = {recorded}, but this replica's config says ha.shards = {configured}; every replica must use the same count. Set shards = {recorded} in [ha], or to change the count stop every replica, run `DELETE FROM meta WHERE key = 'shards'` on the database and start them all with the new count"
    )]
    Shards {
        /// The database (without its password).
        path: String,
        /// The count recorded at first start.
        recorded: u32,
        /// The count this replica's config gives.
        configured: u32,
    },
    /// The PostgreSQL password file could not be read.
    #[error(
        "cannot read the state password file {} (state_password_file): make it readable by protond, or set PROTOND_STATE_PASSWORD instead",
        path.display()
    )]
    Password {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored row could not be read back.
    #[error("corrupt state row in {table}: {detail}")]
    Corrupt {
        /// The table the row belongs to.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl StateError {
    /// Whether retrying later may help (a locked or busy database).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Query { source, .. } | Self::Open { source, .. } => {
                let msg = source.to_string();
                msg.contains("locked") || msg.contains("busy")
            }
            _ => false,
        }
    }

    /// Short label for metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Url { .. } => "url",
            Self::Open { .. } => "open",
            Self::Migrate { .. } => "migrate",
            Self::Query { .. } => "query",
            Self::Storage { .. } => "storage",
            Self::InFlight { .. } => "in_flight",
            Self::Locked { .. } => "locked",
            Self::LockFile { .. } => "lock_file",
            Self::Corrupt { .. } => "corrupt",
            Self::Installation { .. } => "installation",
            Self::Shards { .. } => "shards",
            Self::Password { .. } => "password",
        }
    }
}

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> StateError {
    move |source| StateError::Query { what, source }
}

/// Why `e` means the database could not be written (a full disk, a file-size limit, an I/O
/// error), if it does. `SQLite` answers with its result codes; PostgreSQL with SQLSTATE class
/// 53 (insufficient resources: `53100` disk full, `53200` out of memory) or 58 (system
/// error: `58030` I/O error).
fn storage_cause(backend: Backend, e: &sqlx::Error) -> Option<String> {
    const SQLITE_IOERR: i32 = 10;
    const SQLITE_FULL: i32 = 13;
    match (backend, e) {
        (Backend::Sqlite, sqlx::Error::Database(db)) => {
            let code: i32 = db.code()?.parse().ok()?;
            matches!(code & 0xff, SQLITE_IOERR | SQLITE_FULL).then(|| db.message().to_string())
        }
        (Backend::Postgres, sqlx::Error::Database(db)) => {
            let code = db.code()?;
            matches!(&*code, "53100" | "53200" | "58030").then(|| db.message().to_string())
        }
        (_, sqlx::Error::Io(io)) => {
            // ENOSPC, EFBIG (a file-size limit).
            matches!(io.raw_os_error(), Some(28 | 27)).then(|| io.to_string())
        }
        _ => None,
    }
}

/// A failed statement as [`StateError::Storage`] when the database could not be written,
/// else as [`StateError::Query`].
fn classify(backend: Backend, path: &str, what: &'static str, source: sqlx::Error) -> StateError {
    match storage_cause(backend, &source) {
        Some(cause) => StateError::Storage {
            path: path.to_string(),
            what,
            cause,
        },
        None => StateError::Query { what, source },
    }
}

/// A failed migration, as [`StateError::Storage`] when the database could not be written.
fn migrate_error(
    backend: Backend,
    url: &str,
    path: &str,
    source: sqlx::migrate::MigrateError,
) -> StateError {
    let cause = match &source {
        sqlx::migrate::MigrateError::Execute(e)
        | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => storage_cause(backend, e),
        _ => None,
    };
    match cause {
        Some(cause) => StateError::Storage {
            path: path.to_string(),
            what: "migrate it",
            cause,
        },
        None => StateError::Migrate {
            url: url.into(),
            source,
        },
    }
}

/// The PostgreSQL password `state_password_file` holds (trailing newline dropped), when the
/// config sets one for a `postgres://` state.
fn config_password(config: &crate::config::Config) -> Result<Option<String>, StateError> {
    match &config.state_password_file {
        Some(path) if Backend::of(&config.state) == Some(Backend::Postgres) => Ok(Some(
            std::fs::read_to_string(path)
                .map_err(|source| StateError::Password {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        )),
        _ => Ok(None),
    }
}

/// Whether a pooled connection is out of any transaction, so the pool may hand it out
/// (its `before_acquire` hook; `false` closes it and the pool opens another). A transaction
/// whose statement fails with "database or disk is full" or an I/O error is rolled back by
/// `SQLite` itself; sqlx's own ROLLBACK then fails ("no transaction is active") and leaves its
/// count of open transactions at one, so every later `BEGIN` on that connection failed with
/// "attempted to call `begin_with` at non-zero transaction depth" and hid the real cause. The
/// count is read after the release's ping has flushed the queued rollback.
pub(crate) fn out_of_transaction(conn: &sqlx::AnyConnection) -> bool {
    let clean = !sqlx::Connection::is_in_transaction(conn);
    if !clean {
        tracing::warn!("a state store connection was left inside a failed transaction: closed");
    }
    clean
}

/// Registers the `SQLite` and PostgreSQL drivers with sqlx's `Any` (once per process).
fn install_drivers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error only says they were installed already.
        let _ =
            sqlx::any::install_drivers(&[sqlx::sqlite::any::DRIVER, sqlx::postgres::any::DRIVER]);
    });
}

/// Now, as RFC 3339 (UTC, seconds).
#[must_use]
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A template version as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVersionRecord {
    /// Template name.
    pub template: String,
    /// The template version (`major.minor`).
    pub version: Version,
    /// `environment` or `service`.
    pub kind: String,
    /// Template repo name.
    pub repo: String,
    /// The release tag.
    pub tag: String,
    /// The release's commit: the tagged commit when protond first saw the tag (or the one
    /// an operator accepted). Never overwritten by a moved tag.
    pub commit: String,
    /// Registered (valid) or rejected.
    pub registered: bool,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// Annotated tag message.
    pub release_notes: Option<String>,
    /// Whether the tag still names [`TemplateVersionRecord::commit`].
    pub tag_state: TagState,
    /// The commit a moved tag names now.
    pub tag_commit: Option<String>,
}

/// A pull request proposing a major upgrade of one spec file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProposalRecord {
    /// Spec repo name.
    pub repo: String,
    /// Spec file path in the repo.
    pub path: String,
    /// The template's name.
    pub template: String,
    /// Major the spec followed when proposed.
    pub from_major: i64,
    /// Major proposed.
    pub to_major: i64,
    /// Branch pushed.
    pub branch: String,
    /// Forge kind.
    pub forge: String,
    /// Pull or merge request number (none for the `git` forge).
    pub number: Option<i64>,
    /// Web address of the pull request.
    pub url: Option<String>,
    /// Open, merged, closed (by protond, superseded) or declined (closed unmerged by someone
    /// else: not proposed again until a newer major).
    pub state: ProposalState,
    /// Commit protond last pushed to the branch.
    pub head: Option<String>,
    /// Hash of what was proposed; a change means the pull request needs updating.
    pub content: String,
    /// Someone else pushed to the branch: protond no longer overwrites it.
    pub edited: bool,
    /// When the pull request was opened.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

impl sqlx::FromRow<'_, sqlx::any::AnyRow> for ProposalRecord {
    fn from_row(r: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        let state: String = r.try_get("state")?;
        Ok(Self {
            repo: r.try_get("repo")?,
            path: r.try_get("path")?,
            template: r.try_get("template")?,
            from_major: r.try_get("from_major")?,
            to_major: r.try_get("to_major")?,
            branch: r.try_get("branch")?,
            forge: r.try_get("forge")?,
            number: r.try_get("number")?,
            url: r.try_get("url")?,
            state: ProposalState::try_from(state).map_err(|e| sqlx::Error::ColumnDecode {
                index: "state".into(),
                source: e.into(),
            })?,
            head: r.try_get("head")?,
            content: r.try_get("content")?,
            // Stored as an integer on both backends.
            edited: r.try_get::<i64, _>("edited")? != 0,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// A resource provisioned through the infrastructure repo.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct SelfManagedRecord {
    /// Resource id.
    pub resource_id: String,
    /// The deployment submitted last.
    pub deployment_id: i64,
    /// Folder in the infrastructure repo.
    pub folder: String,
    /// Branch pushed.
    pub branch: String,
    /// Pull request number, when the forge has an API.
    pub number: Option<i64>,
    /// Pull request address.
    pub url: Option<String>,
    /// `waiting` (for `protond notify`) or `done`.
    pub state: String,
    /// Last change.
    pub updated_at: String,
}

/// The last pipeline execution protond started, or tried to, for a service.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct PipelineRunRecord {
    /// The service's name.
    pub service: String,
    /// `CodePipeline` pipeline name, when found.
    pub pipeline: Option<String>,
    /// Execution id, when started.
    pub execution_id: Option<String>,
    /// `started`, `not_available` or `failed`.
    pub result: String,
    /// Why not, when not started.
    pub message: Option<String>,
    /// The instance whose deployment triggered it.
    pub triggered_by: String,
    /// When it was last written (RFC 3339).
    pub updated_at: String,
}

/// A managed resource and what is deployed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    /// Resource id.
    pub id: String,
    /// The resource's kind.
    pub kind: ResourceKind,
    /// Spec repo.
    pub repo: String,
    /// Environment it lives in.
    pub environment: Option<String>,
    /// The template's name.
    pub template: String,
    /// Deployed version.
    pub version: Version,
    /// Deployed inputs hash.
    pub input_hash: String,
    /// Deployed rendered hash.
    pub rendered_hash: String,
    /// Outputs of the deployed stack.
    pub outputs: Outputs,
    /// Whether its last deployment succeeded.
    pub status: ResourceStatus,
    /// Spec commit deployed.
    pub spec_commit: Option<String>,
    /// Last change.
    pub updated_at: String,
    /// Where its stack lives.
    pub placement: Placement,
}

impl ResourceRecord {
    /// The planner's view of this record.
    #[must_use]
    pub fn to_deployed(&self) -> plan::Deployed {
        plan::Deployed {
            id: self.id.clone(),
            kind: self.kind,
            repo: self.repo.clone(),
            template: self.template.clone(),
            version: self.version,
            input_hash: self.input_hash.clone(),
            rendered_hash: self.rendered_hash.clone(),
        }
    }

    /// The record a successful deployment leaves: what it deployed, with the outputs the
    /// provisioner reported.
    #[must_use]
    pub fn deployed_by(
        dep: &NewDeployment,
        outputs: BTreeMap<String, String>,
        stack_id: Option<String>,
    ) -> Self {
        Self {
            id: dep.resource_id.clone(),
            kind: dep.kind,
            repo: dep.repo.clone(),
            environment: dep.environment.clone(),
            template: dep.template.clone(),
            version: dep.to_version,
            input_hash: dep.input_hash.clone(),
            rendered_hash: dep.rendered_hash.clone(),
            outputs: outputs.into(),
            status: ResourceStatus::Deployed,
            spec_commit: dep.spec_commit.clone(),
            updated_at: String::new(),
            placement: Placement {
                stack_id: stack_id.or_else(|| dep.placement.stack_id.clone()),
                ..dep.placement.clone()
            },
        }
    }
}

/// A deployment to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    /// Resource id.
    pub resource_id: String,
    /// Resource kind.
    pub kind: ResourceKind,
    /// Spec repo.
    pub repo: String,
    /// The environment it lives in, if any.
    pub environment: Option<String>,
    /// What it does.
    pub action: DeploymentAction,
    /// e.g. `spec_change`, `minor_upgrade`.
    pub reason: Option<String>,
    /// The template's name.
    pub template: String,
    /// Version before.
    pub from_version: Option<Version>,
    /// Version after.
    pub to_version: Version,
    /// Inputs applied.
    pub input_hash: String,
    /// Rendered `IaC` applied.
    pub rendered_hash: String,
    /// Spec commit.
    pub spec_commit: Option<String>,
    /// Where the stack is deployed to (or deleted from).
    pub placement: Placement,
}

/// A deployment history row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRecord {
    /// The history row's id.
    pub id: i64,
    /// The deployment as started.
    pub deployment: NewDeployment,
    /// In progress, succeeded or failed.
    pub status: DeploymentStatus,
    /// Failure reason.
    pub error: Option<String>,
    /// Whether the failure is worth retrying without a change.
    pub retryable: bool,
    /// Start time.
    pub started_at: String,
    /// End time.
    pub finished_at: Option<String>,
}

/// The words every ownership-conflict error carries (see
/// `provision::cloudformation::Conflict`): a failed history row whose error holds them
/// ended as [`Outcome::Conflict`].
pub const CONFLICT_MARK: &str = "protond leaves it alone";

impl DeploymentRecord {
    /// Whether this deployment ended as an ownership conflict ([`Outcome::Conflict`]): the
    /// history stores it as `failed` with the conflict's message.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        self.status == DeploymentStatus::Failed
            && self
                .error
                .as_deref()
                .is_some_and(|e| e.contains(CONFLICT_MARK))
    }
}

/// How a deployment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; this is now deployed.
    Succeeded(ResourceRecord),
    /// The resource was deleted.
    Deleted,
    /// Never reached the provisioner (the process stopped first); the resource is as it was
    /// and the change will be retried.
    Interrupted,
    /// The stack under the resource's name is not provably this installation's: nothing was
    /// touched, and the resource is marked `conflict` until a person resolves it.
    Conflict {
        /// What was found and what to do.
        error: String,
    },
    /// Failed; what was deployed before stays recorded.
    Failed {
        /// Why (stack events' reasons).
        error: String,
        /// Whether retrying without a change may help (throttling, outage, interruption).
        retryable: bool,
    },
}

impl Outcome {
    /// A stable label for metrics and logs.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Succeeded(_) => "succeeded",
            Self::Deleted => "deleted",
            Self::Failed { .. } => "failed",
            Self::Interrupted => "interrupted",
            Self::Conflict { .. } => "conflict",
        }
    }
}

/// The error recorded for [`Outcome::Interrupted`].
pub const INTERRUPTED: &str = "interrupted: protond stopped before this deployment reached the provisioner; it will be retried";

/// Progress of the newest minor of a template major across the resources on that major.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RolloutProgress {
    /// The template's name.
    pub template: String,
    /// The newest registered minor of that major.
    #[serde(serialize_with = "as_text")]
    pub version: Version,
    /// Resources that run it.
    pub done: usize,
    /// Resources on that major.
    pub total: usize,
    /// Why the rollout is halted, when it is.
    pub halted: Option<String>,
}

impl RolloutProgress {
    /// Halted, complete or in progress.
    #[must_use]
    pub fn state(&self) -> RolloutState {
        if self.halted.is_some() {
            RolloutState::Halted
        } else if self.done == self.total {
            RolloutState::Complete
        } else {
            RolloutState::InProgress
        }
    }
}

// serde's `serialize_with` passes the field by reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn as_text<S: serde::Serializer>(v: &Version, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(v)
}

/// Rollout progress per template major that has resources: for each, the newest registered
/// minor, how many of the major's resources run it, and whether its rollout is halted.
/// Pure: [`Store::rollout_progress`] reads the rows and calls this.
#[must_use]
pub fn rollout_progress(
    decisions: &BTreeMap<(String, Version), (bool, String)>,
    versions: &[TemplateVersionRecord],
    resources: &[ResourceRecord],
) -> Vec<RolloutProgress> {
    let mut newest: BTreeMap<(&str, u32), Version> = BTreeMap::new();
    for v in versions.iter().filter(|v| v.registered) {
        let e = newest
            .entry((v.template.as_str(), v.version.major))
            .or_insert(v.version);
        if v.version > *e {
            *e = v.version;
        }
    }
    let mut rows = Vec::new();
    for ((template, major), version) in newest {
        let on_major: Vec<_> = resources
            .iter()
            .filter(|r| r.template == template && r.version.major == major)
            .collect();
        if on_major.is_empty() {
            continue;
        }
        let halted = decisions
            .get(&(template.to_string(), version))
            .filter(|(h, _)| *h)
            .map(|(_, reason)| reason.clone());
        rows.push(RolloutProgress {
            done: on_major.iter().filter(|r| r.version == version).count(),
            total: on_major.len(),
            template: template.to_string(),
            version,
            halted,
        });
    }
    rows
}

/// What the status views read: every resource, every recorded template version, the
/// newest deployment of each resource, and the self-managed deployments that wait for
/// `protond notify`. Resources that were never deployed (a first create in flight, failed,
/// in conflict or waiting) have no record, only history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overview {
    /// Every managed resource, by id.
    pub resources: Vec<ResourceRecord>,
    /// Every recorded template version (registered and rejected).
    pub template_versions: Vec<TemplateVersionRecord>,
    /// The newest deployment of each resource that has one, by resource id.
    pub last_deployments: BTreeMap<String, DeploymentRecord>,
    /// Self-managed deployments in flight that wait for their outcome to be reported.
    pub waiting: Vec<SelfManagedRecord>,
}

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded `SQLite` file (`sqlite://path`): the default, one writer.
    Sqlite,
    /// A PostgreSQL server (`postgres://…`): several replicas share it (HA, sharding).
    Postgres,
}

impl Backend {
    /// The backend a state URL names, if any.
    #[must_use]
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("sqlite://") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// The backend's name, as metrics and `protond status` show it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// The state store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// The database file, or the PostgreSQL URL without its password, for error messages.
    path: std::sync::Arc<str>,
    backend: Backend,
    /// The leases this process claims to hold (`name=epoch,…`), sent with every statement
    /// on PostgreSQL so the database refuses writes from a lost lease (see [`lease`]).
    fence: std::sync::Arc<std::sync::RwLock<String>>,
    /// On PostgreSQL, the URL connected with (password included), for the connections the
    /// pool does not make (`LISTEN`); never printed.
    connect_url: Option<pg::Secret>,
    /// The cycle's last full read of the store, kept under its write generation.
    kept: generation::Kept,
}

fn version_string(v: Version) -> String {
    v.to_string()
}

impl TryFrom<String> for ProposalState {
    type Error = String;

    /// Reads the stored text (the `proposals.state` column).
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text).ok_or_else(|| format!("unknown proposal state {text:?}"))
    }
}

/// The newest deployments of one resource (`$1`), at most `$2`: read through the
/// `deployments_by_resource` index.
const HISTORY_OF_RESOURCE: &str = concat!(
    "SELECT id, resource_id, kind, repo, environment, action, reason, template, from_version, to_version, input_hash, rendered_hash, spec_commit, status, error, retryable, started_at, finished_at, stack_name, stack_id, region, role_arn",
    " FROM deployments WHERE resource_id = $1 ORDER BY id DESC LIMIT $2"
);

impl Store {
    /// Opens (creating if needed) the store at `url` and runs the migrations: a `SQLite`
    /// file (`sqlite://path`) or a PostgreSQL database (`postgres://user@host/db`, its
    /// password from `PROTOND_STATE_PASSWORD`, see [`pg`]).
    pub async fn open(url: &str) -> Result<Self, StateError> {
        match Backend::of(url) {
            Some(Backend::Sqlite) => Self::open_sqlite(url).await,
            Some(Backend::Postgres) => pg::open(url, None).await,
            None => Err(StateError::Url { url: url.into() }),
        }
    }

    /// Opens the store at `url` as [`Store::open`] does, with the PostgreSQL password given
    /// (read from `state_password_file` by the caller) instead of the environment's.
    pub async fn open_with_password(url: &str, password: Option<&str>) -> Result<Self, StateError> {
        match Backend::of(url) {
            Some(Backend::Postgres) => pg::open(url, password).await,
            _ => Self::open(url).await,
        }
    }

    /// Opens the store a config names: its `state`, with the PostgreSQL password read from
    /// `state_password_file` when set (else `PROTOND_STATE_PASSWORD`). The password is read
    /// at every open, so a rotated secret file takes effect at the next start.
    ///
    /// # Errors
    ///
    /// [`StateError::Password`] when the password file cannot be read; else as
    /// [`Store::open`].
    pub async fn open_config(config: &crate::config::Config) -> Result<Self, StateError> {
        let password = config_password(config)?;
        Self::open_with_password(&config.state, password.as_deref()).await
    }

    async fn open_sqlite(url: &str) -> Result<Self, StateError> {
        install_drivers();
        let Some(path) = url.strip_prefix("sqlite://") else {
            return Err(StateError::Url { url: url.into() });
        };
        if let Some(parent) = Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(parent);
        }
        // Two processes opening a new store at once (a daemon starting while `protond
        // redeploy` runs) would race: switching a new file to WAL answers "database is
        // locked" without waiting, and both would see no migration applied, the second then
        // failing on the tables the first created. Creating, switching and migrating happen
        // under an OS lock on `<db>.migrate-lock` (released when the file closes, however the
        // process ends). Where that file cannot be made, a failed migration is retried,
        // reading what the other applied.
        let migrate_lock = {
            let lock = format!("{path}.migrate-lock");
            tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock)?;
                file.lock()?;
                Ok(file)
            })
            .await
            .ok()
            .and_then(Result::ok)
        };
        let open_error = |source| match storage_cause(Backend::Sqlite, &source) {
            Some(cause) => StateError::Storage {
                path: path.to_string(),
                what: "open it",
                cause,
            },
            None => StateError::Open {
                url: url.into(),
                source,
            },
        };
        // The `Any` driver takes a URL: the file name is percent-encoded by sqlx's own
        // options (a `?` or `#` in a path stays part of the name). sqlx's `SQLite` defaults
        // apply: a 5 s busy timeout and foreign keys on.
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|source| StateError::Open {
                url: url.into(),
                source,
            })?
            .create_if_missing(true);
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            // WAL with `synchronous = NORMAL`: a commit is not flushed to disk each time
            // (checkpoints are); the file stays consistent after any crash, and a commit
            // survives the process being killed, but the last commits before an OS crash or
            // power loss may be lost. A deployment row or record lost that way is recovered
            // as after any lost record: the create meets its stack and takes the adoption
            // path through the ownership gate, or the in-flight row is adopted. `FULL` cost
            // one flush per commit, two per deployment (issue 20: 2 to 15 ms each).
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::Executor::execute(conn, "PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            })
            .before_acquire(|conn, _meta| Box::pin(async move { Ok(out_of_transaction(conn)) }))
            .connect(options.to_url_lossy().as_str())
            .await
            .map_err(open_error)?;
        // WAL is a property of the file: set once, every later connection sees it.
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await
            .map_err(open_error)?;
        let mut attempt = 0;
        let migrated = loop {
            let result = sqlx::migrate!("./migrations/sqlite").run(&pool).await;
            attempt += 1;
            if result.is_ok() || attempt >= 4 {
                break result;
            }
            tokio::time::sleep(Duration::from_millis(150 * attempt)).await;
        };
        drop(migrate_lock);
        migrated.map_err(|source| migrate_error(Backend::Sqlite, url, path, source))?;
        Ok(Self::from_pool(pool, path, Backend::Sqlite))
    }

    fn from_pool(pool: AnyPool, path: &str, backend: Backend) -> Self {
        Self {
            pool,
            path: path.into(),
            backend,
            fence: std::sync::Arc::default(),
            connect_url: None,
            kept: generation::Kept::default(),
        }
    }

    /// Closes every connection and waits until they are closed (on `SQLite`, the last one
    /// checkpoints the WAL into the file): the files may then be copied as they are.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The database this store runs on.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that writes. On `SQLite`, `BEGIN IMMEDIATE` takes the write lock
    /// first, waiting out the busy timeout for it: a deferred transaction that reads and
    /// then writes cannot wait, upgrading its read to a write fails at once with "database
    /// is locked" when another connection writes meanwhile (issue 20). On PostgreSQL rows
    /// are locked as they are written. Every transaction in the store that writes begins
    /// here.
    pub(crate) async fn write_tx(
        &self,
        what: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StateError> {
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        self.pool.begin_with(begin).await.map_err(self.q(what))
    }

    /// Maps a failed statement of `what` (see [`classify`]).
    fn q(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> StateError + '_ {
        move |source| classify(self.backend, &self.path, what, source)
    }

    /// This installation's name: `configured` when the config sets one, else the name
    /// recorded at first start (a new random one is recorded then). Every stack protond
    /// creates carries it (`protond:installation`).
    ///
    /// # Errors
    ///
    /// [`StateError::Installation`] when the config names another installation than the one
    /// recorded (its stacks would all look foreign); a store failure otherwise.
    pub async fn installation(&self, configured: Option<&str>) -> Result<String, StateError> {
        let recorded: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'installation'")
                .fetch_optional(&self.pool)
                .await
                .map_err(self.q("read the installation name"))?;
        let name = match (recorded, configured) {
            (Some(r), Some(c)) if r != c => {
                return Err(StateError::Installation {
                    path: self.path.to_string(),
                    recorded: r,
                    configured: c.to_string(),
                });
            }
            (Some(r), _) => return Ok(r),
            (None, Some(c)) => c.to_string(),
            (None, None) => format!("protond-{:016x}", rand::random::<u64>()),
        };
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('installation', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&name)
        .execute(&self.pool)
        .await
        .map_err(self.q("record the installation name"))?;
        // Replicas starting at once on a shared database race here: the first name recorded
        // is everyone's (a replica with its own name would find its peers' stacks foreign).
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'installation'")
            .fetch_one(&self.pool)
            .await
            .map_err(self.q("read the installation name"))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StateError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(self.q("ping"))
    }

    /// Records a template version (registered or rejected). The commit recorded first sticks:
    /// a moved tag only changes `tag_state` and `tag_commit` (see
    /// [`Store::accept_release`]). Returns true when it is new or its record changed.
    pub async fn record_template_version(
        &self,
        v: &TemplateVersionRecord,
    ) -> Result<bool, StateError> {
        let existing = sqlx::query(
            "SELECT status, tag_state, tag_commit FROM template_versions WHERE template = $1 AND major = $2 AND minor = $3",
        )
        .bind(&v.template)
        .bind(i64::from(v.version.major))
        .bind(i64::from(v.version.minor))
        .fetch_optional(&self.pool)
        .await
        .map_err(self.q("read template version"))?;
        let status = if v.registered {
            "registered"
        } else {
            "rejected"
        };
        if let Some(row) = &existing {
            let old_status: String = row
                .try_get("status")
                .map_err(self.q("read template version"))?;
            let old_state: String = row
                .try_get("tag_state")
                .map_err(self.q("read template version"))?;
            let old_tag_commit: Option<String> = row
                .try_get("tag_commit")
                .map_err(self.q("read template version"))?;
            if old_status == status
                && v.tag_state == old_state.as_str()
                && old_tag_commit == v.tag_commit
            {
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO template_versions (template, major, minor, kind, repo, tag, git_commit, status, reason, release_notes, recorded_at, tag_state, tag_commit)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (template, major, minor) DO UPDATE SET kind = excluded.kind, repo = excluded.repo,
               tag = excluded.tag, status = excluded.status,
               reason = excluded.reason, release_notes = excluded.release_notes, recorded_at = excluded.recorded_at,
               tag_state = excluded.tag_state, tag_commit = excluded.tag_commit",
        )
        .bind(&v.template)
        .bind(i64::from(v.version.major))
        .bind(i64::from(v.version.minor))
        .bind(&v.kind)
        .bind(&v.repo)
        .bind(&v.tag)
        .bind(&v.commit)
        .bind(status)
        .bind(&v.reason)
        .bind(&v.release_notes)
        .bind(now())
        .bind(v.tag_state.as_str())
        .bind(&v.tag_commit)
        .execute(&self.pool)
        .await
        .map_err(self.q("record template version"))?;
        Ok(true)
    }

    /// Records `commit` as the commit of `template` `version` (an operator accepted its moved
    /// tag): the tag is current again. Returns false when the version is not recorded.
    pub async fn accept_release(
        &self,
        template: &str,
        version: Version,
        commit: &str,
    ) -> Result<bool, StateError> {
        let done = sqlx::query(
            "UPDATE template_versions SET git_commit = $1, tag_state = 'current', tag_commit = NULL, recorded_at = $2
             WHERE template = $3 AND major = $4 AND minor = $5",
        )
        .bind(commit)
        .bind(now())
        .bind(template)
        .bind(i64::from(version.major))
        .bind(i64::from(version.minor))
        .execute(&self.pool)
        .await
        .map_err(self.q("accept a release"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Every recorded template version, by template and version.
    pub async fn template_versions(&self) -> Result<Vec<TemplateVersionRecord>, StateError> {
        let rows = sqlx::query(
            "SELECT template, major, minor, kind, repo, tag, git_commit, status, reason, release_notes, tag_state, tag_commit
             FROM template_versions ORDER BY template, major, minor",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list template versions"))?;
        rows.iter()
            .map(|r| {
                let get = |c: &str| {
                    r.try_get::<String, _>(c)
                        .map_err(self.q("list template versions"))
                };
                let num = |c: &str| {
                    r.try_get::<i64, _>(c)
                        .map_err(self.q("list template versions"))
                        .and_then(|n| {
                            u32::try_from(n).map_err(|_| StateError::Corrupt {
                                table: "template_versions",
                                detail: format!("{c} = {n}"),
                            })
                        })
                };
                Ok(TemplateVersionRecord {
                    template: get("template")?,
                    version: Version {
                        major: num("major")?,
                        minor: num("minor")?,
                    },
                    kind: get("kind")?,
                    repo: get("repo")?,
                    tag: get("tag")?,
                    commit: get("git_commit")?,
                    registered: get("status")? == "registered",
                    reason: r
                        .try_get("reason")
                        .map_err(self.q("list template versions"))?,
                    release_notes: r
                        .try_get("release_notes")
                        .map_err(self.q("list template versions"))?,
                    tag_state: {
                        let text = get("tag_state")?;
                        TagState::parse(&text).ok_or(StateError::Corrupt {
                            table: "template_versions",
                            detail: format!("tag_state = {text:?}"),
                        })?
                    },
                    tag_commit: r
                        .try_get("tag_commit")
                        .map_err(self.q("list template versions"))?,
                })
            })
            .collect()
    }

    /// Every managed resource. Each row is decoded as it arrives (the rows are never all
    /// held at once beside their records: at 50,000 resources that was 5 MiB per 5,000).
    pub async fn resources(&self) -> Result<Vec<ResourceRecord>, StateError> {
        let records = sqlx::query(
            "SELECT id, kind, repo, environment, template, major, minor, input_hash, rendered_hash, outputs, status, spec_commit, updated_at, stack_name, stack_id, region, role_arn
             FROM resources ORDER BY id",
        )
        .map(|row: sqlx::any::AnyRow| resource_from_row(&row))
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list resources"))?;
        // The rows came in a vector grown by doubling, which collecting in place keeps:
        // the cycle holds these records until the next write, so they get their own size.
        let mut records: Vec<ResourceRecord> = records.into_iter().collect::<Result<_, _>>()?;
        records.shrink_to_fit();
        Ok(records)
    }

    /// The record of resource `id`, if any (the drift check reads each just before
    /// comparing it, instead of holding every record for the whole check).
    pub async fn resource(&self, id: &str) -> Result<Option<ResourceRecord>, StateError> {
        sqlx::query(
            "SELECT id, kind, repo, environment, template, major, minor, input_hash, rendered_hash, outputs, status, spec_commit, updated_at, stack_name, stack_id, region, role_arn
             FROM resources WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.q("read a resource"))?
        .map(|row| resource_from_row(&row))
        .transpose()
    }

    /// Records that a resource is now declared by `repo` (a spec file moved between repos
    /// without changing what it renders, so no deployment records it). Ownership and the
    /// "unknown repo, delete nothing" rule read this column.
    pub async fn set_resource_repo(&self, id: &str, repo: &str) -> Result<(), StateError> {
        sqlx::query("UPDATE resources SET repo = $1 WHERE id = $2")
            .bind(repo)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(self.q("move a resource to its new repo"))?;
        Ok(())
    }

    /// Starts a deployment; fails with [`StateError::InFlight`] if one is already running
    /// for the resource. The row (with who asked for it, copied from the resource's pending
    /// deploy request) and the request's removal are one commit.
    pub async fn begin_deployment(&self, d: &NewDeployment) -> Result<i64, StateError> {
        let mut tx = self.write_tx("begin deployment").await?;
        let result = sqlx::query(
            "INSERT INTO deployments (resource_id, kind, repo, environment, action, reason, template, from_version, to_version, input_hash, rendered_hash, spec_commit, status, started_at, stack_name, stack_id, region, role_arn, requested_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'in_progress', $13, $14, $15, $16, $17,
                     (SELECT requested_by FROM deploy_requests WHERE resource_id = $1))
             RETURNING id",
        )
        .bind(&d.resource_id)
        .bind(d.kind.as_str())
        .bind(&d.repo)
        .bind(&d.environment)
        .bind(d.action.as_str())
        .bind(&d.reason)
        .bind(&d.template)
        .bind(d.from_version.map(version_string))
        .bind(version_string(d.to_version))
        .bind(&d.input_hash)
        .bind(&d.rendered_hash)
        .bind(&d.spec_commit)
        .bind(now())
        .bind(non_empty(&d.placement.stack_name))
        .bind(&d.placement.stack_id)
        .bind(&d.placement.region)
        .bind(&d.placement.role_arn)
        // Every row, not the first: a write that then fails must not hand out its id.
        .fetch_all(&mut *tx)
        .await;
        match result {
            Ok(rows) => {
                let id: i64 = rows
                    .first()
                    .ok_or(sqlx::Error::RowNotFound)
                    .and_then(|r| r.try_get("id"))
                    .map_err(self.q("start a deployment"))?;
                // The deployment satisfies any pending request to deploy the resource (who
                // asked is kept on the history row, above).
                sqlx::query("DELETE FROM deploy_requests WHERE resource_id = $1")
                    .bind(&d.resource_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.q("drop a deploy request"))?;
                tx.commit().await.map_err(self.q("begin deployment"))?;
                self.note_approval(id, &d.resource_id, d.to_version, d.reason.as_deref())
                    .await?;
                Ok(id)
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                drop(tx);
                let existing = self
                    .in_flight()
                    .await?
                    .into_iter()
                    .find(|x| x.deployment.resource_id == d.resource_id)
                    .map_or(0, |x| x.id);
                Err(StateError::InFlight {
                    resource: d.resource_id.clone(),
                    existing,
                })
            }
            Err(source) => Err(self.q("begin deployment")(source)),
        }
    }

    /// Finishes a deployment and records its resource in one transaction.
    pub async fn finish_deployment(&self, id: i64, outcome: &Outcome) -> Result<(), StateError> {
        let mut tx = self.write_tx("finish deployment").await?;
        let (status, error, retryable) = match outcome {
            Outcome::Succeeded(_) | Outcome::Deleted => (DeploymentStatus::Succeeded, None, false),
            Outcome::Failed { error, retryable } => {
                (DeploymentStatus::Failed, Some(error.clone()), *retryable)
            }
            Outcome::Interrupted => (
                DeploymentStatus::Failed,
                Some(INTERRUPTED.to_string()),
                true,
            ),
            Outcome::Conflict { error } => (DeploymentStatus::Failed, Some(error.clone()), false),
        };
        // One statement finds the row in progress and finishes it.
        let rows = sqlx::query(
            "UPDATE deployments SET status = $1, error = $2, retryable = $3, finished_at = $4
             WHERE id = $5 AND status = 'in_progress' RETURNING resource_id",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(i64::from(retryable))
        .bind(now())
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(self.q("finish deployment"))?;
        let Some(row) = rows.first() else {
            return Err(StateError::Corrupt {
                table: "deployments",
                detail: format!("deployment {id} is not in progress"),
            });
        };
        let resource_id: String = row
            .try_get("resource_id")
            .map_err(self.q("finish deployment"))?;
        match outcome {
            Outcome::Succeeded(r) => {
                let outputs = serde_json::to_string(&r.outputs).unwrap_or_else(|_| "{}".into());
                sqlx::query(
                    "INSERT INTO resources (id, kind, repo, environment, template, major, minor, input_hash, rendered_hash, outputs, status, spec_commit, updated_at, stack_name, stack_id, region, role_arn)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'deployed', $11, $12, $13, $14, $15, $16)
                     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, repo = excluded.repo,
                       environment = excluded.environment, template = excluded.template,
                       major = excluded.major, minor = excluded.minor, input_hash = excluded.input_hash,
                       rendered_hash = excluded.rendered_hash, outputs = excluded.outputs, status = 'deployed',
                       spec_commit = excluded.spec_commit, updated_at = excluded.updated_at,
                       stack_name = excluded.stack_name, stack_id = excluded.stack_id,
                       region = excluded.region, role_arn = excluded.role_arn",
                )
                .bind(&r.id)
                .bind(r.kind.as_str())
                .bind(&r.repo)
                .bind(&r.environment)
                .bind(&r.template)
                .bind(i64::from(r.version.major))
                .bind(i64::from(r.version.minor))
                .bind(&r.input_hash)
                .bind(&r.rendered_hash)
                .bind(outputs)
                .bind(&r.spec_commit)
                .bind(now())
                .bind(non_empty(&r.placement.stack_name))
                .bind(&r.placement.stack_id)
                .bind(&r.placement.region)
                .bind(&r.placement.role_arn)
                .execute(&mut *tx)
                .await
                .map_err(self.q("record resource"))?;
            }
            Outcome::Deleted => {
                sqlx::query("DELETE FROM resources WHERE id = $1")
                    .bind(&resource_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.q("remove resource"))?;
            }
            Outcome::Interrupted => {}
            Outcome::Conflict { .. } => {
                sqlx::query(
                    "UPDATE resources SET status = 'conflict', updated_at = $1 WHERE id = $2",
                )
                .bind(now())
                .bind(&resource_id)
                .execute(&mut *tx)
                .await
                .map_err(self.q("mark resource in conflict"))?;
            }
            Outcome::Failed { .. } => {
                sqlx::query(
                    "UPDATE resources SET status = 'failed', updated_at = $1 WHERE id = $2",
                )
                .bind(now())
                .bind(&resource_id)
                .execute(&mut *tx)
                .await
                .map_err(self.q("mark resource failed"))?;
            }
        }
        if matches!(outcome, Outcome::Succeeded(_) | Outcome::Deleted) {
            // What was found drifted is redeployed (or gone): the next check looks again.
            sqlx::query("DELETE FROM drift WHERE resource_id = $1")
                .bind(&resource_id)
                .execute(&mut *tx)
                .await
                .map_err(self.q("clear drift"))?;
        }
        tx.commit().await.map_err(self.q("finish deployment"))
    }

    /// Records that a rollout is halted or resumed.
    pub async fn set_rollout(
        &self,
        template: &str,
        version: Version,
        halted: bool,
        reason: &str,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO rollouts (template, major, minor, status, reason, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (template, major, minor) DO UPDATE SET status = excluded.status, reason = excluded.reason, updated_at = excluded.updated_at",
        )
        .bind(template)
        .bind(i64::from(version.major))
        .bind(i64::from(version.minor))
        .bind(if halted { "halted" } else { "resumed" })
        .bind(reason)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(self.q("record rollout"))?;
        if !halted {
            // An operator's resume retries the deployments that failed on this version.
            sqlx::query(
                "UPDATE deployments SET retryable = 1 WHERE template = $1 AND to_version = $2 AND status = 'failed'",
            )
            .bind(template)
            .bind(version.to_string())
            .execute(&self.pool)
            .await
            .map_err(self.q("resume rollout"))?;
        }
        Ok(())
    }

    /// Every recorded rollout decision: (template, version) -> (halted, reason); a
    /// quarantine's reason starts with `quarantined by <who>: `.
    pub async fn rollouts(
        &self,
    ) -> Result<BTreeMap<(String, Version), (bool, String)>, StateError> {
        let rows = sqlx::query(
            "SELECT template, major, minor, status, reason, kind, set_by FROM rollouts",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list rollouts"))?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let template: String = r.try_get("template").map_err(self.q("list rollouts"))?;
            let major: i64 = r.try_get("major").map_err(self.q("list rollouts"))?;
            let minor: i64 = r.try_get("minor").map_err(self.q("list rollouts"))?;
            let status: String = r.try_get("status").map_err(self.q("list rollouts"))?;
            let reason: Option<String> = r.try_get("reason").map_err(self.q("list rollouts"))?;
            let kind: String = r.try_get("kind").map_err(self.q("list rollouts"))?;
            let by: Option<String> = r.try_get("set_by").map_err(self.q("list rollouts"))?;
            // A quarantine says so, and who made it (`protond` or an operator).
            let reason = match (kind.as_str(), reason) {
                ("quarantine", reason) => Some(format!(
                    "quarantined by {}: {}",
                    by.as_deref().unwrap_or("an operator"),
                    reason.unwrap_or_default()
                )),
                (_, reason) => reason,
            };
            let version = Version {
                major: u32::try_from(major)
                    .map_err(|_| corrupt("rollouts", format!("major {major}")))?,
                minor: u32::try_from(minor)
                    .map_err(|_| corrupt("rollouts", format!("minor {minor}")))?,
            };
            out.insert(
                (template, version),
                (status == "halted", reason.unwrap_or_default()),
            );
        }
        Ok(out)
    }

    /// The proposal recorded for a spec file, if any.
    pub async fn proposal(
        &self,
        repo: &str,
        path: &str,
    ) -> Result<Option<ProposalRecord>, StateError> {
        sqlx::query_as::<_, ProposalRecord>(concat!(
            "SELECT repo, path, template, from_major, to_major, branch, forge, number, url, state, head, content, edited, created_at, updated_at",
            " FROM proposals WHERE repo = $1 AND path = $2"
        ))
        .bind(repo)
        .bind(path)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.q("read proposal"))
    }

    /// Every recorded proposal, by repo and path.
    pub async fn proposals(&self) -> Result<Vec<ProposalRecord>, StateError> {
        sqlx::query_as::<_, ProposalRecord>(concat!(
            "SELECT repo, path, template, from_major, to_major, branch, forge, number, url, state, head, content, edited, created_at, updated_at",
            " FROM proposals ORDER BY repo, path"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list proposals"))
    }

    /// Records a proposal, replacing the spec file's earlier one.
    pub async fn put_proposal(&self, p: &ProposalRecord) -> Result<(), StateError> {
        sqlx::query(concat!(
            "INSERT INTO proposals (repo, path, template, from_major, to_major, branch, forge, number, url, state, head, content, edited, created_at, updated_at)",
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            " ON CONFLICT (repo, path) DO UPDATE SET template = excluded.template, from_major = excluded.from_major,",
            " to_major = excluded.to_major, branch = excluded.branch, forge = excluded.forge, number = excluded.number,",
            " url = excluded.url, state = excluded.state, head = excluded.head, content = excluded.content,",
            " edited = excluded.edited, created_at = excluded.created_at, updated_at = excluded.updated_at"
        ))
        .bind(&p.repo)
        .bind(&p.path)
        .bind(&p.template)
        .bind(p.from_major)
        .bind(p.to_major)
        .bind(&p.branch)
        .bind(&p.forge)
        .bind(p.number)
        .bind(&p.url)
        .bind(p.state.as_str())
        .bind(&p.head)
        .bind(&p.content)
        .bind(i64::from(p.edited))
        .bind(&p.created_at)
        .bind(&p.updated_at)
        .execute(&self.pool)
        .await
        .map_err(self.q("record proposal"))?;
        Ok(())
    }

    /// Pull requests opened since `since` (RFC 3339), for the hourly limit.
    pub async fn proposals_opened_since(&self, since: &str) -> Result<u32, StateError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM proposals WHERE created_at > $1")
            .bind(since)
            .fetch_one(&self.pool)
            .await
            .map_err(self.q("count proposals"))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Records that `resource_id` was submitted to the infrastructure repo and waits for
    /// its outcome to be reported.
    pub async fn put_self_managed(&self, r: &SelfManagedRecord) -> Result<(), StateError> {
        sqlx::query(concat!(
            "INSERT INTO self_managed (resource_id, deployment_id, folder, branch, number, url, state, updated_at)",
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (resource_id) DO UPDATE SET",
            " deployment_id = excluded.deployment_id, folder = excluded.folder, branch = excluded.branch,",
            " number = excluded.number, url = excluded.url, state = excluded.state, updated_at = excluded.updated_at"
        ))
        .bind(&r.resource_id)
        .bind(r.deployment_id)
        .bind(&r.folder)
        .bind(&r.branch)
        .bind(r.number)
        .bind(&r.url)
        .bind(&r.state)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(self.q("record self-managed deployment"))?;
        Ok(())
    }

    /// The self-managed record of a resource, if it was ever provisioned that way.
    pub async fn self_managed(
        &self,
        resource_id: &str,
    ) -> Result<Option<SelfManagedRecord>, StateError> {
        sqlx::query_as::<_, SelfManagedRecord>(
            "SELECT resource_id, deployment_id, folder, branch, number, url, state, updated_at FROM self_managed WHERE resource_id = $1",
        )
        .bind(resource_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.q("read self-managed deployment"))
    }

    /// Resources whose self-managed deployment waits for its outcome.
    pub async fn self_managed_waiting(&self) -> Result<Vec<SelfManagedRecord>, StateError> {
        sqlx::query_as::<_, SelfManagedRecord>(
            concat!(
                "SELECT resource_id, deployment_id, folder, branch, number, url, state, updated_at FROM self_managed",
                " WHERE state = 'waiting' AND deployment_id IN (SELECT id FROM deployments WHERE status = 'in_progress')",
                " ORDER BY resource_id"
            ),
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list self-managed deployments"))
    }

    /// The in-flight deployment with id `id`, if it is in flight.
    pub async fn in_flight_deployment(
        &self,
        id: i64,
    ) -> Result<Option<DeploymentRecord>, StateError> {
        Ok(self.in_flight().await?.into_iter().find(|d| d.id == id))
    }

    /// Records the last pipeline start attempt of a service.
    pub async fn put_pipeline_run(&self, r: &PipelineRunRecord) -> Result<(), StateError> {
        sqlx::query(concat!(
            "INSERT INTO pipeline_runs (service, pipeline, execution_id, result, message, triggered_by, updated_at)",
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (service) DO UPDATE SET pipeline = excluded.pipeline,",
            " execution_id = excluded.execution_id, result = excluded.result, message = excluded.message,",
            " triggered_by = excluded.triggered_by, updated_at = excluded.updated_at"
        ))
        .bind(&r.service)
        .bind(&r.pipeline)
        .bind(&r.execution_id)
        .bind(&r.result)
        .bind(&r.message)
        .bind(&r.triggered_by)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(self.q("record pipeline run"))?;
        Ok(())
    }

    /// Every recorded pipeline start attempt, by service.
    pub async fn pipeline_runs(&self) -> Result<Vec<PipelineRunRecord>, StateError> {
        sqlx::query_as::<_, PipelineRunRecord>(
            "SELECT service, pipeline, execution_id, result, message, triggered_by, updated_at FROM pipeline_runs ORDER BY service",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list pipeline runs"))
    }

    /// Deployments still in flight (to adopt after a restart).
    pub async fn in_flight(&self) -> Result<Vec<DeploymentRecord>, StateError> {
        let rows = sqlx::query(concat!(
            "SELECT id, resource_id, kind, repo, environment, action, reason, template, from_version, to_version, input_hash, rendered_hash, spec_commit, status, error, retryable, started_at, finished_at, stack_name, stack_id, region, role_arn",
            " FROM deployments WHERE status = 'in_progress' ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list in-flight deployments"))?;
        rows.iter().map(deployment_from_row).collect()
    }

    /// Newest deployments first, optionally of one resource.
    pub async fn deployments(
        &self,
        resource: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeploymentRecord>, StateError> {
        // Two statements rather than `(?1 IS NULL OR resource_id = ?1)`, which keeps SQLite
        // from using the (resource_id, id) index: a scan of the whole history per call.
        let sql = if resource.is_some() {
            HISTORY_OF_RESOURCE
        } else {
            concat!(
                "SELECT id, resource_id, kind, repo, environment, action, reason, template, from_version, to_version, input_hash, rendered_hash, spec_commit, status, error, retryable, started_at, finished_at, stack_name, stack_id, region, role_arn",
                " FROM deployments WHERE $1 IS NULL ORDER BY id DESC LIMIT $2"
            )
        };
        let rows = sqlx::query(sql)
            .bind(resource)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(self.q("list deployments"))?;
        rows.iter().map(deployment_from_row).collect()
    }

    /// The last deployment of every resource whose last deployment failed, in one query
    /// (the scheduler's retry rule reads them once per cycle).
    pub async fn last_failures(&self) -> Result<Vec<DeploymentRecord>, StateError> {
        let rows = sqlx::query(concat!(
            "SELECT id, resource_id, kind, repo, environment, action, reason, template, from_version, to_version, input_hash, rendered_hash, spec_commit, status, error, retryable, started_at, finished_at, stack_name, stack_id, region, role_arn",
            " FROM deployments WHERE id IN (SELECT MAX(id) FROM deployments GROUP BY resource_id)",
            " AND status = 'failed' ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list failed deployments"))?;
        rows.iter().map(deployment_from_row).collect()
    }

    /// The newest deployment of each resource, by resource id (deleted resources included).
    pub async fn last_deployments(&self) -> Result<BTreeMap<String, DeploymentRecord>, StateError> {
        let rows = sqlx::query(concat!(
            "SELECT id, resource_id, kind, repo, environment, action, reason, template, from_version, to_version, input_hash, rendered_hash, spec_commit, status, error, retryable, started_at, finished_at, stack_name, stack_id, region, role_arn",
            " FROM deployments WHERE id IN (SELECT MAX(id) FROM deployments GROUP BY resource_id)"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(self.q("list last deployments"))?;
        rows.iter()
            .map(|r| deployment_from_row(r).map(|d| (d.deployment.resource_id.clone(), d)))
            .collect()
    }

    /// Rollout progress per template major, from the stored versions, resources and
    /// decisions (see [`rollout_progress`]).
    pub async fn rollout_progress(&self) -> Result<Vec<RolloutProgress>, StateError> {
        let decisions = self.rollouts().await?;
        let versions = self.template_versions().await?;
        let resources = self.resources().await?;
        Ok(rollout_progress(&decisions, &versions, &resources))
    }

    /// What the status views need, read now (see [`Overview`]).
    pub async fn overview(&self) -> Result<Overview, StateError> {
        Ok(Overview {
            resources: self.resources().await?,
            template_versions: self.template_versions().await?,
            last_deployments: self.last_deployments().await?,
            waiting: self.self_managed_waiting().await?,
        })
    }
}

fn corrupt(table: &'static str, detail: String) -> StateError {
    StateError::Corrupt { table, detail }
}

fn resource_from_row(r: &sqlx::any::AnyRow) -> Result<ResourceRecord, StateError> {
    let s = |c: &str| r.try_get::<String, _>(c).map_err(q("read resource"));
    let n = |c: &str| {
        r.try_get::<i64, _>(c)
            .map_err(q("read resource"))
            .and_then(|v| u32::try_from(v).map_err(|_| corrupt("resources", format!("{c} = {v}"))))
    };
    let kind_text = s("kind")?;
    let kind = ResourceKind::parse(&kind_text)
        .ok_or_else(|| corrupt("resources", format!("unknown kind {kind_text:?}")))?;
    let outputs: Outputs = serde_json::from_str(&s("outputs")?)
        .map_err(|e| corrupt("resources", format!("outputs: {e}")))?;
    let status = s("status")?;
    Ok(ResourceRecord {
        id: s("id")?,
        kind,
        repo: s("repo")?,
        environment: r.try_get("environment").map_err(q("read resource"))?,
        template: s("template")?,
        version: Version {
            major: n("major")?,
            minor: n("minor")?,
        },
        input_hash: s("input_hash")?,
        rendered_hash: s("rendered_hash")?,
        outputs,
        status: ResourceStatus::parse(&status)
            .ok_or_else(|| corrupt("resources", format!("unknown status {status:?}")))?,
        spec_commit: r.try_get("spec_commit").map_err(q("read resource"))?,
        updated_at: s("updated_at")?,
        placement: placement_from_row(r, "read resource")?,
    })
}

/// The placement columns of a resource or deployment row.
fn placement_from_row(r: &sqlx::any::AnyRow, what: &'static str) -> Result<Placement, StateError> {
    let o = |c: &str| r.try_get::<Option<String>, _>(c).map_err(q(what));
    Ok(Placement {
        stack_name: o("stack_name")?.unwrap_or_default(),
        stack_id: o("stack_id")?,
        region: o("region")?,
        role_arn: o("role_arn")?,
    })
}

/// `None` for an empty text (stored as NULL).
fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn deployment_from_row(r: &sqlx::any::AnyRow) -> Result<DeploymentRecord, StateError> {
    let s = |c: &str| r.try_get::<String, _>(c).map_err(q("read deployment"));
    let o = |c: &str| {
        r.try_get::<Option<String>, _>(c)
            .map_err(q("read deployment"))
    };
    let to = s("to_version")?;
    let status = s("status")?;
    Ok(DeploymentRecord {
        id: r.try_get("id").map_err(q("read deployment"))?,
        deployment: NewDeployment {
            resource_id: s("resource_id")?,
            kind: ResourceKind::parse(&s("kind")?)
                .ok_or_else(|| corrupt("deployments", "unknown kind".into()))?,
            repo: s("repo")?,
            environment: o("environment")?,
            action: {
                let text = s("action")?;
                DeploymentAction::parse(&text)
                    .ok_or_else(|| corrupt("deployments", format!("unknown action {text:?}")))?
            },
            reason: o("reason")?,
            template: s("template")?,
            from_version: o("from_version")?.as_deref().and_then(Version::parse),
            to_version: Version::parse(&to)
                .ok_or_else(|| corrupt("deployments", format!("to_version {to:?}")))?,
            input_hash: s("input_hash")?,
            rendered_hash: s("rendered_hash")?,
            spec_commit: o("spec_commit")?,
            placement: placement_from_row(r, "read deployment")?,
        },
        status: DeploymentStatus::parse(&status)
            .ok_or_else(|| corrupt("deployments", format!("unknown status {status:?}")))?,
        error: o("error")?,
        retryable: r
            .try_get::<i64, _>("retryable")
            .map_err(q("read deployment"))?
            != 0,
        started_at: s("started_at")?,
        finished_at: o("finished_at")?,
    })
}

/// Test stores on the backend the tests run against: a `SQLite` file in the given folder, or,
/// with `PROTOND_TEST_STATE=postgres`, a new database on the server at
/// `PROTOND_TEST_POSTGRES_URL` (scripts/test starts one), so one suite covers both.
#[cfg(test)]
pub(crate) mod testing {
    use sqlx::{Connection as _, Executor as _};

    /// A state URL for a new, empty store.
    pub async fn url(dir: &std::path::Path) -> String {
        if std::env::var("PROTOND_TEST_STATE").as_deref() != Ok("postgres") {
            return format!("sqlite://{}", dir.join("state.db").display());
        }
        let admin = std::env::var("PROTOND_TEST_POSTGRES_URL").expect(
            "PROTOND_TEST_STATE=postgres needs PROTOND_TEST_POSTGRES_URL (scripts/postgres)",
        );
        new_database(&admin).await
    }

    /// Creates a database with a random name on the server at `admin`; its URL.
    pub async fn new_database(admin: &str) -> String {
        let name = format!("protond_t_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .expect("connect to the test server");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create a test database");
        let mut u = reqwest::Url::parse(admin).expect("a URL");
        u.set_path(&name);
        u.to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = testing::url(&dir.path().join("nested")).await;
        let store = Store::open(&url).await.expect("open");
        (dir, store)
    }

    pub(crate) fn new_dep(resource: &str) -> NewDeployment {
        NewDeployment {
            resource_id: resource.into(),
            kind: ResourceKind::Environment,
            repo: "platform".into(),
            environment: Some("dev".into()),
            action: DeploymentAction::Create,
            reason: None,
            template: "basic-env".into(),
            from_version: None,
            to_version: Version { major: 1, minor: 2 },
            input_hash: "i".into(),
            rendered_hash: "r".into(),
            spec_commit: Some("abc".into()),
            placement: crate::model::Placement::default(),
        }
    }

    pub(crate) fn record(id: &str) -> ResourceRecord {
        ResourceRecord {
            id: id.into(),
            kind: ResourceKind::Environment,
            repo: "platform".into(),
            environment: Some("dev".into()),
            template: "basic-env".into(),
            version: Version { major: 1, minor: 2 },
            input_hash: "i".into(),
            rendered_hash: "r".into(),
            outputs: crate::state::Outputs::from([("TopicArn".into(), "arn:x".into())]),
            status: ResourceStatus::Deployed,
            spec_commit: Some("abc".into()),
            updated_at: String::new(),
            placement: crate::model::Placement::default(),
        }
    }

    /// Several processes opening a new store at once (here: pools, which race the same way)
    /// all get a migrated store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stores_opened_at_once_on_a_new_file_all_migrate() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}", dir.path().join("new.db").display());
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { Store::open(&url).await })
                })
                .collect();
            for o in opens {
                let store = o.await.expect("task").expect("open");
                store.resources().await.expect("migrated");
            }
        }
    }

    /// One record read by id (the drift check's read) is the record the full list reads.
    #[tokio::test]
    async fn one_resource_reads_as_in_the_list() {
        let (_dir, store) = store().await;
        for r in ["environment/dev", "environment/prod"] {
            let id = store.begin_deployment(&new_dep(r)).await.expect("begin");
            store
                .finish_deployment(id, &Outcome::Succeeded(record(r)))
                .await
                .expect("finish");
        }
        let all = store.resources().await.expect("resources");
        assert_eq!(all.len(), 2);
        for r in &all {
            let one = store.resource(&r.id).await.expect("read one");
            assert_eq!(one.as_ref(), Some(r));
        }
        assert_eq!(
            store.resource("environment/gone").await.expect("read"),
            None
        );
    }

    #[tokio::test]
    async fn deployment_lifecycle_and_history() {
        let (_dir, store) = store().await;
        let id = store
            .begin_deployment(&new_dep("environment/dev"))
            .await
            .expect("begin");
        let err = store
            .begin_deployment(&new_dep("environment/dev"))
            .await
            .expect_err("one in flight");
        assert!(
            matches!(err, StateError::InFlight { existing, .. } if existing == id),
            "{err}"
        );
        assert_eq!(store.in_flight().await.expect("list").len(), 1);
        store
            .finish_deployment(id, &Outcome::Succeeded(record("environment/dev")))
            .await
            .expect("finish");
        assert!(store.in_flight().await.expect("list").is_empty());
        let resources = store.resources().await.expect("resources");
        assert_eq!(resources.len(), 1);
        assert_eq!(resources[0].outputs["TopicArn"], "arn:x");
        assert_eq!(
            resources[0].to_deployed().version,
            Version { major: 1, minor: 2 }
        );

        let id2 = store
            .begin_deployment(&new_dep("environment/dev"))
            .await
            .expect("begin again");
        store
            .finish_deployment(
                id2,
                &Outcome::Failed {
                    error: "boom".into(),
                    retryable: false,
                },
            )
            .await
            .expect("fail");
        let resources = store.resources().await.expect("resources");
        assert_eq!(resources[0].status, ResourceStatus::Failed);
        assert_eq!(
            resources[0].rendered_hash, "r",
            "what was deployed stays recorded"
        );
        let history = store
            .deployments(Some("environment/dev"), 10)
            .await
            .expect("history");
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].status, DeploymentStatus::Failed);
        assert_eq!(history[0].error.as_deref(), Some("boom"));
        assert_eq!(history[1].status, DeploymentStatus::Succeeded);
        assert!(
            store
                .finish_deployment(id2, &Outcome::Deleted)
                .await
                .is_err(),
            "finished rows are final"
        );

        let id3 = store
            .begin_deployment(&new_dep("environment/dev"))
            .await
            .expect("delete");
        store
            .finish_deployment(id3, &Outcome::Deleted)
            .await
            .expect("deleted");
        assert!(store.resources().await.expect("resources").is_empty());
        assert_eq!(store.deployments(None, 10).await.expect("history").len(), 3);
    }

    #[tokio::test]
    async fn template_versions_are_recorded_once() {
        let (_dir, store) = store().await;
        let mut v = TemplateVersionRecord {
            template: "web-svc".into(),
            version: Version { major: 1, minor: 1 },
            kind: "service".into(),
            repo: "platform".into(),
            tag: "web-svc/v1.1".into(),
            commit: "c1".into(),
            registered: true,
            reason: None,
            release_notes: Some("Faster.".into()),
            tag_state: TagState::Current,
            tag_commit: None,
        };
        assert!(store.record_template_version(&v).await.expect("record"));
        assert!(!store.record_template_version(&v).await.expect("again"));
        // A moved tag is reported, and the first commit sticks.
        let mut moved = v.clone();
        moved.commit = "c2".into();
        moved.tag_state = TagState::Moved;
        moved.tag_commit = Some("c2".into());
        assert!(
            store
                .record_template_version(&moved)
                .await
                .expect("moved tag")
        );
        v.tag_state = TagState::Moved;
        v.tag_commit = Some("c2".into());
        assert_eq!(
            store.template_versions().await.expect("list"),
            vec![v.clone()]
        );
        // Accepting it records the new commit.
        assert!(
            store
                .accept_release("web-svc", v.version, "c2")
                .await
                .expect("accept")
        );
        v.commit = "c2".into();
        v.tag_state = TagState::Current;
        v.tag_commit = None;
        assert_eq!(store.template_versions().await.expect("list"), vec![v]);
        let unknown = Version { major: 9, minor: 0 };
        assert!(
            !store
                .accept_release("web-svc", unknown, "c3")
                .await
                .expect("unknown")
        );
    }

    #[tokio::test]
    async fn state_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/state.db", dir.path().display());
        {
            let store = Store::open(&url).await.expect("open");
            let id = store
                .begin_deployment(&new_dep("environment/dev"))
                .await
                .expect("begin");
            let _ = id;
        }
        let store = Store::open(&url).await.expect("reopen");
        assert_eq!(store.in_flight().await.expect("in flight").len(), 1);
        store.ping().await.expect("ping");
    }

    #[tokio::test]
    async fn bad_url_is_explained() {
        let err = Store::open("mysql://x").await.expect_err("bad url");
        assert!(err.to_string().contains("sqlite://"), "{err}");
    }

    fn release(template: &str, major: u32, minor: u32, registered: bool) -> TemplateVersionRecord {
        TemplateVersionRecord {
            tag_state: TagState::Current,
            tag_commit: None,
            template: template.into(),
            version: Version { major, minor },
            kind: "service".into(),
            repo: "platform".into(),
            tag: format!("{template}/v{major}.{minor}"),
            commit: "c".into(),
            registered,
            reason: None,
            release_notes: None,
        }
    }

    fn on(id: &str, template: &str, major: u32, minor: u32) -> ResourceRecord {
        let mut r = record(id);
        r.template = template.into();
        r.version = Version { major, minor };
        r
    }

    #[test]
    fn rollout_progress_counts_the_newest_registered_minor_per_major() {
        let versions = [
            release("web", 1, 0, true),
            release("web", 1, 2, true),
            release("web", 1, 3, false), // rejected: not a rollout target
            release("web", 2, 0, true),
            release("db", 1, 1, true), // nothing runs it: no row
        ];
        let resources = [
            on("service_instance/a/a-dev", "web", 1, 2),
            on("service_instance/a/a-prod", "web", 1, 0),
            on("service_instance/b/b-dev", "web", 2, 0),
        ];
        let halted = BTreeMap::from([
            (
                ("web".to_string(), Version { major: 2, minor: 0 }),
                (true, "b-dev failed".into()),
            ),
            (
                ("web".to_string(), Version { major: 1, minor: 2 }),
                (false, "resumed".into()),
            ),
        ]);
        let rows = rollout_progress(&halted, &versions, &resources);
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.template.as_str(),
                    r.version.to_string(),
                    r.done,
                    r.total,
                    r.state(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("web", "1.2".to_string(), 1, 2, RolloutState::InProgress),
                ("web", "2.0".to_string(), 1, 1, RolloutState::Halted),
            ]
        );
        assert_eq!(rows[1].halted.as_deref(), Some("b-dev failed"));
        assert_eq!(
            serde_json::to_value(&rows[0]).expect("json"),
            serde_json::json!({"template": "web", "version": "1.2", "done": 1, "total": 2, "halted": null})
        );
        let complete = rollout_progress(&BTreeMap::new(), &versions[..2], &resources[..1]);
        assert_eq!(complete[0].state(), RolloutState::Complete);
    }

    #[tokio::test]
    async fn overview_holds_the_newest_deployment_of_each_resource() {
        let (_dir, store) = store().await;
        for (resource, outcome) in [
            (
                "environment/dev",
                Outcome::Succeeded(record("environment/dev")),
            ),
            (
                "environment/dev",
                Outcome::Failed {
                    error: "boom".into(),
                    retryable: false,
                },
            ),
            (
                "environment/prod",
                Outcome::Succeeded(record("environment/prod")),
            ),
        ] {
            let id = store
                .begin_deployment(&new_dep(resource))
                .await
                .expect("begin");
            store.finish_deployment(id, &outcome).await.expect("finish");
        }
        let in_flight = store
            .begin_deployment(&new_dep("environment/prod"))
            .await
            .expect("begin");
        let overview = store.overview().await.expect("overview");
        assert_eq!(overview.resources.len(), 2);
        let dev = &overview.last_deployments["environment/dev"];
        assert_eq!(dev.status, DeploymentStatus::Failed);
        assert_eq!(dev.error.as_deref(), Some("boom"));
        let prod = &overview.last_deployments["environment/prod"];
        assert_eq!(
            (prod.id, prod.status),
            (in_flight, DeploymentStatus::InProgress)
        );
        for (id, last) in &overview.last_deployments {
            let newest = store.deployments(Some(id), 1).await.expect("history");
            assert_eq!(newest.first(), Some(last), "{id}");
        }
    }

    #[tokio::test]
    async fn overview_holds_unrecorded_attempts_and_waiting_self_managed_deployments() {
        let (_dir, store) = store().await;
        let conflict = crate::provision::cloudformation::Conflict {
            stack: "protond-x".into(),
            resource: "environment/taken".into(),
            installation: "a".into(),
            found_resource: None,
            found_installation: None,
        };
        for (resource, outcome) in [
            (
                "environment/broken",
                Outcome::Failed {
                    error: "NoSuchResource".into(),
                    retryable: false,
                },
            ),
            (
                "environment/taken",
                Outcome::Conflict {
                    error: conflict.to_string(),
                },
            ),
        ] {
            let id = store
                .begin_deployment(&new_dep(resource))
                .await
                .expect("begin");
            store.finish_deployment(id, &outcome).await.expect("finish");
        }
        let tf = store
            .begin_deployment(&new_dep("environment/tf"))
            .await
            .expect("begin");
        store
            .put_self_managed(&SelfManagedRecord {
                resource_id: "environment/tf".into(),
                deployment_id: tf,
                folder: "tf".into(),
                branch: "protond/deploy/environment/tf".into(),
                number: None,
                url: None,
                state: "waiting".into(),
                updated_at: String::new(),
            })
            .await
            .expect("self-managed");
        let overview = store.overview().await.expect("overview");
        assert!(overview.resources.is_empty());
        assert_eq!(overview.last_deployments.len(), 3);
        assert!(overview.last_deployments["environment/taken"].is_conflict());
        assert!(!overview.last_deployments["environment/broken"].is_conflict());
        assert_eq!(
            overview
                .waiting
                .iter()
                .map(|w| (w.resource_id.as_str(), w.deployment_id))
                .collect::<Vec<_>>(),
            [("environment/tf", tf)]
        );
    }

    #[tokio::test]
    async fn unknown_stored_statuses_are_corrupt_rows() {
        let (_dir, store) = store().await;
        let id = store
            .begin_deployment(&new_dep("environment/dev"))
            .await
            .expect("begin");
        store
            .finish_deployment(id, &Outcome::Succeeded(record("environment/dev")))
            .await
            .expect("finish");
        sqlx::query("UPDATE resources SET status = 'deleting'")
            .execute(&store.pool)
            .await
            .expect("update");
        let err = store.resources().await.expect_err("unknown status");
        assert!(
            matches!(
                err,
                StateError::Corrupt {
                    table: "resources",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("deleting"), "{err}");
    }

    /// Every transaction of the store begins through [`Store::write_tx`] (`BEGIN IMMEDIATE`):
    /// a deferred one that reads before it writes fails at once under concurrent writers.
    #[tokio::test]
    async fn a_resource_history_is_read_through_its_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .expect("open");
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {HISTORY_OF_RESOURCE}"
        )))
        .bind("service_instance/a/b")
        .bind(1_i64)
        .fetch_all(&store.pool)
        .await
        .expect("explain")
        .iter()
        .map(|r| r.try_get::<String, _>("detail").expect("detail"))
        .collect();
        assert!(
            plan.iter().any(|d| d.contains("deployments_by_resource")),
            "{plan:?}"
        );
    }

    #[test]
    fn no_transaction_of_the_store_begins_deferred() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root.join("state.rs")];
        for e in std::fs::read_dir(root.join("state")).expect("src/state") {
            files.push(e.expect("entry").path());
        }
        let deferred = concat!(".begin", "()");
        let offenders: Vec<String> = files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "rs"))
            .filter(|f| std::fs::read_to_string(f).expect("read").contains(deferred))
            .map(|f| f.display().to_string())
            .collect();
        assert!(
            offenders.is_empty(),
            "use Store::write_tx instead of a deferred transaction in {offenders:?}"
        );
    }

    /// A full disk or an I/O error makes `SQLite` roll a transaction back by itself; sqlx's
    /// own rollback then fails and used to return the connection to the pool still counted
    /// as inside a transaction, so the next write on it failed with "attempted to call
    /// `begin_with` at non-zero transaction depth" instead of its own error (a fault test
    /// found it on a full tmpfs). Here the transaction is ended behind sqlx's back the same
    /// way, on every pooled connection; every later write must still work.
    #[tokio::test]
    async fn a_transaction_the_database_ended_itself_does_not_poison_the_pool() {
        let (_dir, store) = store().await;
        for _ in 0..6 {
            let mut tx = store.write_tx("test").await.expect("begin");
            sqlx::query("ROLLBACK")
                .execute(&mut *tx)
                .await
                .expect("end it");
            drop(tx);
        }
        for i in 0..12 {
            let id = format!("environment/e{i}");
            let dep = store
                .begin_deployment(&new_dep(&id))
                .await
                .expect("a write after a poisoned transaction");
            store
                .finish_deployment(dep, &Outcome::Succeeded(record(&id)))
                .await
                .expect("finish");
        }
        assert_eq!(store.resources().await.expect("resources").len(), 12);
    }

    /// Issue 20: deployments finishing at once (8 at a time, as `[deploy] concurrency = 8`
    /// runs them, with a cycle reading beside them) never fail with "database is locked".
    /// A transaction that reads and then writes must take the write lock first: upgrading a
    /// read fails at once, without waiting out the busy timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_deployments_never_find_the_database_locked() {
        let (_dir, store) = store().await;
        let workers = 8;
        let each = 40;
        let tasks: Vec<_> = (0..workers)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..each {
                        let id = format!("environment/w{w}-{i}");
                        let dep = store.begin_deployment(&new_dep(&id)).await?;
                        let outcome = if i % 5 == 4 {
                            Outcome::Failed {
                                error: "boom".into(),
                                retryable: false,
                            }
                        } else {
                            Outcome::Succeeded(record(&id))
                        };
                        store.finish_deployment(dep, &outcome).await?;
                        store.last_deployments().await?;
                    }
                    Ok::<(), StateError>(())
                })
            })
            .collect();
        let mut failures = Vec::new();
        for t in tasks {
            if let Err(e) = t.await.expect("task") {
                failures.push(format!("{e}: {e:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} workers failed: {failures:?}",
            failures.len()
        );
        let records = store.resources().await.expect("resources");
        assert_eq!(
            records.len(),
            workers * each * 4 / 5,
            "every success recorded"
        );
        assert!(store.in_flight().await.expect("in flight").is_empty());
    }
}
