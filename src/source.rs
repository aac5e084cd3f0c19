//! Git sources: bare mirrors of configured repositories in a local cache, read with `gix`.
//!
//! This module owns everything protond does with git repositories it reads from: cloning and
//! fetching them into a cache directory ([`Mirror::sync`]), resolving branches and listing tags,
//! reading the tree of a folder at a commit ([`Mirror::read_tree`]), and watching local
//! repositories for new commits and tags ([`watch`]).
//!
//! It never writes to or deletes anything in a remote (gix cannot push, and nothing here tries).
//! A failed fetch leaves the cached mirror as it was: objects may have been added, but no
//! reference moves, and [`Mirror::open`] keeps serving the last good state. Branches and tags
//! deleted in the remote stay in the mirror, so a vanished release never looks deleted.
//!
//! Every function is blocking (gix is synchronous): async callers run them in
//! `tokio::task::spawn_blocking`, cloning the cheap [`Mirror`] handle into the closure.
//!
//! # Credentials
//!
//! For `https` remotes, credentials come from, in this order:
//! 1. the URL's own `user:password@` part (the config refuses such URLs; one given here
//!    directly is removed from the URL before gix sees it, so it appears in no log line or
//!    error message);
//! 2. the environment: `PROTOND_GIT_TOKEN` is sent as the basic-auth password, with user
//!    `PROTOND_GIT_USER` or, when unset, `x-access-token` (what GitHub and Gitea expect of
//!    tokens; GitLab accepts any user name with a token);
//! 3. git's own credential helpers (`credential.helper` in the git configuration), without
//!    ever prompting on a terminal.
//!
//! Credentials are only handed out when the server asks for them, and never for plain `http`
//! (not even those of git's helpers).
//!
//! # Bounds
//!
//! [`Mirror::sync_with`] fetches only the refspecs it is given ([`Want`], [`refspecs`]),
//! refuses objects larger than [`FetchOptions::max_object_bytes`] without inflating them,
//! stops after [`FetchOptions::max_pack_bytes`] received, stops when its
//! [`FetchOptions::interrupt`] flag is set, and never fetches one mirror twice at once
//! (see the `fetch` submodule).
//! Local paths (absolute or relative) and `file://` URLs are first compared in process: a
//! repo whose wanted references match the mirror's is not fetched (no child process at all).
//! Fetching a changed one needs the `git` program on `PATH` (gix runs `git upload-pack`).
//!
//! # Handles
//!
//! Repositories are opened once and kept between cycles (the `handles` submodule), keyed by
//! path and reopened when the folder there is replaced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind as GixEntryKind;
use notify::Watcher as _;
use sha2::Digest as _;

/// Environment variable holding an access token for https remotes.
pub const TOKEN_ENV: &str = "PROTOND_GIT_TOKEN";
/// Environment variable naming the user sent with [`TOKEN_ENV`]; defaults to `x-access-token`.
pub const TOKEN_USER_ENV: &str = "PROTOND_GIT_USER";
/// How long [`watch`] gathers file events of one repository before reporting it: long
/// enough to gather one git command's ref writes (lock file, rename, packed-refs) into one
/// report, short, since it is all of a tag's latency before its cycle starts. A ref written
/// after the report re-arms it, so a cycle started between two writes is followed by one
/// that reads the second.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(50);

const DEFAULT_TOKEN_USER: &str = "x-access-token";
/// Where protond keeps each release tag's recorded commit: `refs/protond/releases/<tag>`.
pub const RELEASE_REFS: &str = "refs/protond/releases/";
/// Where `protond release accept` keeps the commit an accepted move replaced:
/// `refs/protond/accepted/<tag>` (so that the change rolls out as a release change).
pub const ACCEPTED_REFS: &str = "refs/protond/accepted/";

mod fetch;
mod handles;

pub use fetch::{DEFAULT_MAX_OBJECT_BYTES, DEFAULT_MAX_PACK_BYTES, FetchOptions, Want, refspecs};

/// Errors of this module: one variant per failed operation.
///
/// Messages name the repository by its redacted URL ([`redact_url`]); they never contain
/// credentials.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The repository URL could not be parsed.
    #[error("invalid repository url {url:?}")]
    InvalidUrl {
        /// The redacted URL.
        url: String,
        /// Why gix rejected it.
        #[source]
        source: gix::Error,
    },
    /// The cache directory could not be prepared.
    #[error("failed to prepare the git cache at {path}")]
    Cache {
        /// The directory or file that could not be created or moved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// [`Mirror::open`] was asked for a repository that was never synced.
    #[error("no mirror of {url} at {path}: it was never synced")]
    NotSynced {
        /// The redacted URL.
        url: String,
        /// Where the mirror would be.
        path: PathBuf,
    },
    /// The cached mirror exists but could not be opened.
    #[error("failed to open the mirror of {url} at {path}")]
    Open {
        /// The redacted URL.
        url: String,
        /// The mirror's directory.
        path: PathBuf,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// The first fetch of a repository failed; nothing was left in the cache.
    #[error("failed to clone {url}")]
    Clone {
        /// The redacted URL.
        url: String,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// Fetching into an existing mirror failed; the mirror is unchanged.
    #[error("failed to fetch {url}")]
    Fetch {
        /// The redacted URL.
        url: String,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// What the mirror fetches holds an object larger than the allocation limit (or more
    /// objects than the limit can index): refused without inflating it; nothing changed.
    #[error(
        "refused to fetch {url}: it holds an object larger than {limit} bytes (or more objects than that much memory can index) on a branch or tag protond reads; the object was not read. Remove it from the configured branch and release tags, or raise [git] max_object_bytes in the config"
    )]
    ObjectTooLarge {
        /// The redacted URL.
        url: String,
        /// The limit, `[git] max_object_bytes`.
        limit: u64,
        /// gix's error ("Entry too large to fit in memory", …).
        #[source]
        source: gix::Error,
    },
    /// The fetch received more pack bytes than allowed and was stopped; nothing changed.
    #[error(
        "refused to fetch {url}: it sent more than {limit} bytes of pack data for the branches and tags protond reads. Remove large files from them, or raise [git] max_pack_bytes in the config"
    )]
    PackTooLarge {
        /// The redacted URL.
        url: String,
        /// The limit, `[git] max_pack_bytes`.
        limit: u64,
    },
    /// An earlier fetch of the same mirror (one stopped for its time budget) still runs.
    #[error(
        "an earlier fetch of {url} is still running (it exceeded [git] fetch_timeout and was asked to stop); not fetched again until it ends"
    )]
    Busy {
        /// The redacted URL.
        url: String,
    },
    /// A branch or other reference could not be resolved to a commit.
    #[error("failed to resolve {reference:?} in {url}")]
    ResolveRef {
        /// The redacted URL.
        url: String,
        /// The reference as given by the caller.
        reference: String,
        /// The gix error (not-found included).
        #[source]
        source: gix::Error,
    },
    /// One of protond's own references (`refs/protond/...`) could not be written.
    #[error("failed to write {reference:?} in {url}")]
    WriteRef {
        /// The redacted URL.
        url: String,
        /// The full reference name.
        reference: String,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// The tags could not be listed.
    #[error("failed to list the tags of {url}")]
    ListTags {
        /// The redacted URL.
        url: String,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// A commit or tree could not be read.
    #[error("failed to read the tree of {folder:?} at {commit} in {url}")]
    ReadTree {
        /// The redacted URL.
        url: String,
        /// The commit being read.
        commit: gix::ObjectId,
        /// The folder (or sub-folder) being read.
        folder: String,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// A file's content could not be read.
    #[error("failed to read {path:?} at {commit} in {url}")]
    ReadBlob {
        /// The redacted URL.
        url: String,
        /// The commit being read.
        commit: gix::ObjectId,
        /// The file's path.
        path: String,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// A folder argument was not a plain relative path.
    #[error("invalid folder {folder:?}: expected a relative path without '..'")]
    InvalidFolder {
        /// The folder as given.
        folder: String,
    },
    /// [`Mirror::read_tree`] was asked for a folder that does not exist at that commit.
    #[error("folder {folder:?} does not exist at {commit} in {url}")]
    FolderNotFound {
        /// The redacted URL.
        url: String,
        /// The commit being read.
        commit: gix::ObjectId,
        /// The folder.
        folder: String,
    },
    /// A file name in the tree is not valid UTF-8.
    #[error("file name {path:?} at {commit} in {url} is not valid UTF-8")]
    NonUtf8Path {
        /// The redacted URL.
        url: String,
        /// The commit being read.
        commit: gix::ObjectId,
        /// The path, with invalid bytes replaced.
        path: String,
    },
    /// The folder holds more entries than allowed.
    #[error("folder {folder:?} at {commit} in {url} holds more than {limit} files")]
    TooManyFiles {
        /// The redacted URL.
        url: String,
        /// The commit being read.
        commit: gix::ObjectId,
        /// The folder.
        folder: String,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The folder's files add up to more bytes than allowed.
    #[error("files below {folder:?} at {commit} in {url} exceed {limit} bytes")]
    TooManyBytes {
        /// The redacted URL.
        url: String,
        /// The commit being read.
        commit: gix::ObjectId,
        /// The folder.
        folder: String,
        /// The limit that was exceeded.
        limit: u64,
    },
    /// A path given to [`watch`] is not a git repository.
    #[error("cannot watch {path}: not a git repository")]
    WatchOpen {
        /// The path as given.
        path: PathBuf,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// The file watcher could not be set up.
    #[error("failed to watch {path}")]
    Watch {
        /// The directory that could not be watched (empty when the watcher itself failed).
        path: PathBuf,
        /// The notify error.
        #[source]
        source: notify::Error,
    },
}

/// Why [`Mirror::write_commit`] failed: one variant per step. The message is gix's own,
/// as it always was (callers put it in context: "writing the upgrade commit: ..."); the
/// variant and its fields say which step and which file.
#[derive(Debug, thiserror::Error)]
pub enum WriteCommitError {
    /// The parent commit is not in the mirror.
    #[error("{source}")]
    FindBase {
        /// The parent commit.
        base: gix::ObjectId,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// The parent commit's tree could not be read.
    #[error("{source}")]
    BaseTree {
        /// The parent commit.
        base: gix::ObjectId,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// The tree editor could not be started on the parent's tree.
    #[error("{source}")]
    EditTree {
        /// The parent commit.
        base: gix::ObjectId,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// A path could not be removed from the tree.
    #[error("{source}")]
    Remove {
        /// The path.
        path: String,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// A file's content could not be written as a blob.
    #[error("{source}")]
    WriteBlob {
        /// The file's path.
        path: String,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// A file could not be added to the tree.
    #[error("{source}")]
    Upsert {
        /// The file's path.
        path: String,
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// The edited tree could not be written.
    #[error("{source}")]
    WriteTree {
        /// The gix error.
        #[source]
        source: gix::Error,
    },
    /// The commit object could not be written.
    #[error("{source}")]
    Commit {
        /// The gix error.
        #[source]
        source: gix::Error,
    },
}

impl SourceError {
    /// Whether trying the same operation again later may succeed.
    ///
    /// Clone and fetch failures are retryable (network, server or a remote that comes back)
    /// unless gix classified them as caused by the input, missing authentication or
    /// permissions, or an unsupported protocol. Cache I/O errors are retryable (a full disk).
    /// Everything else depends on data that a retry does not change.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Clone { source, .. } | Self::Fetch { source, .. } => {
                source.is_retryable()
                    || !(source.is_validation()
                        || source.is_unauthenticated()
                        || source.is_permission_denied()
                        || source.is_unsupported()
                        || source.is_cancelled())
            }
            Self::Cache { .. } | Self::Busy { .. } => true,
            Self::ObjectTooLarge { .. }
            | Self::PackTooLarge { .. }
            | Self::InvalidUrl { .. }
            | Self::NotSynced { .. }
            | Self::Open { .. }
            | Self::ResolveRef { .. }
            | Self::WriteRef { .. }
            | Self::ListTags { .. }
            | Self::ReadTree { .. }
            | Self::ReadBlob { .. }
            | Self::InvalidFolder { .. }
            | Self::FolderNotFound { .. }
            | Self::NonUtf8Path { .. }
            | Self::TooManyFiles { .. }
            | Self::TooManyBytes { .. }
            | Self::WatchOpen { .. }
            | Self::Watch { .. } => false,
        }
    }

    /// A short, stable label for logs and metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "invalid_url",
            Self::Cache { .. } => "cache",
            Self::NotSynced { .. } => "not_synced",
            Self::Open { .. } => "open",
            Self::Clone { .. } => "clone",
            Self::Fetch { .. } => "fetch",
            Self::ObjectTooLarge { .. } => "object_too_large",
            Self::PackTooLarge { .. } => "pack_too_large",
            Self::Busy { .. } => "busy",
            Self::ResolveRef { .. } => "resolve_ref",
            Self::WriteRef { .. } => "write_ref",
            Self::ListTags { .. } => "list_tags",
            Self::ReadTree { .. } => "read_tree",
            Self::ReadBlob { .. } => "read_blob",
            Self::InvalidFolder { .. } => "invalid_folder",
            Self::FolderNotFound { .. } => "folder_not_found",
            Self::NonUtf8Path { .. } => "non_utf8_path",
            Self::TooManyFiles { .. } => "too_many_files",
            Self::TooManyBytes { .. } => "too_many_bytes",
            Self::WatchOpen { .. } => "watch_open",
            Self::Watch { .. } => "watch",
        }
    }
}

/// A tag of a mirrored repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// The tag's name without `refs/tags/`, e.g. `fargate-svc/v1.4`.
    pub name: String,
    /// The commit the tag points to, after peeling annotated tags.
    pub commit: gix::ObjectId,
    /// The trimmed message of an annotated tag; `None` for a lightweight tag.
    pub message: Option<String>,
}

/// What a [`TreeEntry`] is. Links and submodules are reported, never followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file and its content.
    Blob(Vec<u8>),
    /// An executable file and its content.
    Executable(Vec<u8>),
    /// A symbolic link (its target is not read).
    Symlink,
    /// A submodule, i.e. a commit of another repository (not resolved).
    Submodule,
}

/// One entry below a folder, as returned by [`Mirror::read_tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// The path relative to the folder that was read, with `/` separators.
    pub path: String,
    /// What the entry is.
    pub kind: EntryKind,
}

/// A repo mirror in the cache. Cheap to clone. Its full `gix` handle is opened when first
/// needed (reading objects): what a no-op cycle reads, a branch's head, comes from the
/// references alone ([`Mirror::branch_target`]), and the handles kept between cycles are
/// bounded ([`handles`]).
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<MirrorInner>,
}

struct MirrorInner {
    repo: OnceLock<gix::ThreadSafeRepository>,
    url: String,
    path: PathBuf,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("url", &self.inner.url)
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Opens the bare mirror of `url` under `cache_dir` (folder name derived from a hash of
    /// the url plus a readable slug), cloning it if absent, else fetching: every branch and
    /// every tag, within the default limits. The daemon uses [`Mirror::sync_with`], which
    /// fetches only what is read.
    ///
    /// # Errors
    ///
    /// As [`Mirror::sync_with`].
    pub fn sync(url: &str, cache_dir: &Path) -> Result<Mirror, SourceError> {
        Self::sync_with(url, cache_dir, &FetchOptions::new(&[Want::Everything]))
    }

    /// Like [`Mirror::sync`], fetching `options.refspecs` (force-updating moved references)
    /// within `options`' limits. A fetch error leaves the existing mirror untouched and
    /// usable via [`Mirror::open`].
    ///
    /// # Errors
    ///
    /// [`SourceError::InvalidUrl`], [`SourceError::Cache`], [`SourceError::Open`],
    /// [`SourceError::Clone`] (nothing is left behind), [`SourceError::Fetch`] (the mirror
    /// is unchanged), [`SourceError::ObjectTooLarge`] and [`SourceError::PackTooLarge`]
    /// (refused; as a failed fetch or clone), [`SourceError::Busy`] (not fetched).
    pub fn sync_with(
        url: &str,
        cache_dir: &Path,
        options: &FetchOptions,
    ) -> Result<Mirror, SourceError> {
        let remote = Remote::parse(url)?;
        let path = cache_dir.join(&remote.folder);
        let Some(_fetching) = fetch::Fetching::claim(&path) else {
            return Err(SourceError::Busy {
                url: remote.display,
            });
        };
        if path.exists() {
            // A local repo is compared in process, references only: unchanged, it is not
            // fetched (nor opened) at all.
            let unchanged = remote
                .local
                .as_deref()
                .is_some_and(|source| handles::up_to_date(source, &path, &options.refspecs));
            if unchanged {
                tracing::debug!(url = %remote.display, "Unchanged; not fetched.");
                return Ok(Mirror::lazy(remote.display, path));
            }
            let repo = open_repo_with(&remote, &path, options)?;
            let received = fetch::fetch(&repo, &remote, options)
                .map_err(|f| fetch_error(&remote, options, f, false))?;
            // A kept handle has room for a fixed number of pack indexes (gix sizes it when
            // opening): after a pack arrives, the mirror is opened afresh.
            if received {
                handles::forget(&path);
            }
            return Ok(Mirror::lazy(remote.display, path));
        }
        clone(&remote, cache_dir, &path, options)?;
        let repo = open_repo(&remote, &path)?;
        Ok(Mirror::new(repo, remote.display, path))
    }

    /// The name of the folder in the cache that holds the mirror of `url`: two URLs with the
    /// same folder share one mirror (and one fetch).
    ///
    /// # Errors
    ///
    /// [`SourceError::InvalidUrl`] when `url` cannot be parsed.
    pub fn folder_of(url: &str) -> Result<String, SourceError> {
        Remote::parse(url).map(|r| r.folder)
    }

    /// The mirror folder of `url`, or `url` itself when it cannot be parsed (fetching it then
    /// reports why): the key under which repos sharing one mirror are grouped.
    #[must_use]
    pub fn key_of(url: &str) -> String {
        Self::folder_of(url).unwrap_or_else(|_| url.to_owned())
    }

    /// Open an existing mirror without fetching (used when a fetch failed).
    ///
    /// # Errors
    ///
    /// [`SourceError::NotSynced`] when [`Mirror::sync`] never succeeded for `url`,
    /// [`SourceError::Open`] when the mirror cannot be opened.
    pub fn open(url: &str, cache_dir: &Path) -> Result<Mirror, SourceError> {
        let remote = Remote::parse(url)?;
        let path = cache_dir.join(&remote.folder);
        if !path.exists() {
            return Err(SourceError::NotSynced {
                url: remote.display,
                path,
            });
        }
        Ok(Mirror::lazy(remote.display, path))
    }

    fn new(repo: gix::ThreadSafeRepository, url: String, path: PathBuf) -> Mirror {
        Mirror {
            inner: Arc::new(MirrorInner {
                repo: OnceLock::from(repo),
                url,
                path,
            }),
        }
    }

    /// A mirror whose handle is opened when first needed.
    fn lazy(url: String, path: PathBuf) -> Mirror {
        Mirror {
            inner: Arc::new(MirrorInner {
                repo: OnceLock::new(),
                url,
                path,
            }),
        }
    }

    /// The full handle, opened (through the kept handles) when first needed.
    fn handle(&self) -> gix::Result<&gix::ThreadSafeRepository> {
        if let Some(repo) = self.inner.repo.get() {
            return Ok(repo);
        }
        let opened = handles::open(&self.inner.path)?;
        Ok(self.inner.repo.get_or_init(|| opened))
    }

    fn repo(&self) -> gix::Result<gix::Repository> {
        self.handle()
            .map(gix::ThreadSafeRepository::to_thread_local)
    }

    /// The commit at the tip of a branch as its reference names it, read from the references
    /// alone (no object is read): what a cycle compares with the commit it read last time.
    /// Where that cannot be read so (a symbolic reference, say), [`Mirror::branch_head`].
    /// Unlike it, this does not check that the object is a commit: reading the tree at it
    /// does.
    ///
    /// # Errors
    ///
    /// As [`Mirror::branch_head`].
    pub fn branch_target(&self, branch: &str) -> Result<gix::ObjectId, SourceError> {
        let full = if branch.starts_with("refs/") {
            branch.to_owned()
        } else {
            format!("refs/heads/{branch}")
        };
        match handles::target(&self.inner.path, &full) {
            Some(id) => Ok(id),
            None => self.branch_head(branch),
        }
    }

    /// Commit id at the tip of a branch.
    ///
    /// `branch` is a short name (`main`) or a full reference name (`refs/heads/main`).
    ///
    /// # Errors
    ///
    /// [`SourceError::ResolveRef`] when the branch does not exist or does not point to a commit.
    pub fn branch_head(&self, branch: &str) -> Result<gix::ObjectId, SourceError> {
        let full = if branch.starts_with("refs/") {
            branch.to_owned()
        } else {
            format!("refs/heads/{branch}")
        };
        let resolve = || -> gix::Result<gix::ObjectId> {
            let repo = self.repo()?;
            let mut reference = repo.find_reference(full.as_str())?;
            Ok(reference.peel_to_commit()?.id)
        };
        resolve().map_err(|source| SourceError::ResolveRef {
            url: self.inner.url.clone(),
            reference: branch.to_owned(),
            source,
        })
    }

    /// The commit a revision names in the mirror, for `protond preview --bundle <ref>`: a
    /// full commit id, a branch (`main`, `refs/heads/main`), a tag, or any full reference
    /// name, tried in that order.
    ///
    /// # Errors
    ///
    /// [`SourceError::ResolveRef`] when none of them names a commit in the mirror.
    pub fn resolve_commit(&self, rev: &str) -> Result<gix::ObjectId, SourceError> {
        let repo = self.repo().map_err(|source| SourceError::ResolveRef {
            url: self.inner.url.clone(),
            reference: rev.to_owned(),
            source,
        })?;
        if rev.len() == 40
            && let Ok(id) = gix::ObjectId::from_hex(rev.as_bytes())
            && let Ok(object) = repo.find_object(id)
            && let Ok(commit) = object.peel_to_commit()
        {
            return Ok(commit.id);
        }
        let peel = |name: &str| -> gix::Result<gix::ObjectId> {
            let mut reference = repo.find_reference(name)?;
            Ok(reference.peel_to_commit()?.id)
        };
        let mut result = peel(&format!("refs/heads/{rev}"));
        for name in [format!("refs/tags/{rev}"), rev.to_owned()] {
            if result.is_ok() {
                break;
            }
            if name.starts_with("refs/") {
                result = result.or_else(|e| peel(&name).map_err(|_| e));
            }
        }
        result.map_err(|source| SourceError::ResolveRef {
            url: self.inner.url.clone(),
            reference: rev.to_owned(),
            source,
        })
    }

    /// Every tag: name (without refs/tags/), the peeled commit id, and for annotated tags the message (trimmed). Lightweight tags have message None.
    ///
    /// Tags that do not lead to a commit (tags of trees or blobs) are skipped. The list is
    /// sorted by name.
    ///
    /// # Errors
    ///
    /// [`SourceError::ListTags`] when the references or tag objects cannot be read.
    pub fn tags(&self) -> Result<Vec<Tag>, SourceError> {
        self.repo()
            .and_then(|repo| self.list_tags(&repo))
            .map_err(|source| SourceError::ListTags {
                url: self.inner.url.clone(),
                source,
            })
    }

    fn list_tags(&self, repo: &gix::Repository) -> gix::Result<Vec<Tag>> {
        let mut tags = Vec::new();
        let platform = repo.references()?;
        for reference in platform.tags()? {
            let mut reference = reference?;
            let full_name = reference.name().as_bstr().to_str_lossy().into_owned();
            let name = full_name
                .strip_prefix("refs/tags/")
                .unwrap_or(&full_name)
                .to_owned();
            let message = match reference.try_id() {
                Some(id) => {
                    let object = repo.find_object(id)?;
                    if object.kind == gix::objs::Kind::Tag {
                        let tag = object.into_tag();
                        let decoded = tag.decode()?;
                        Some(decoded.message.to_str_lossy().trim().to_owned())
                    } else {
                        None
                    }
                }
                None => None,
            };
            let peeled = reference.peel_to_id()?;
            let object = repo.find_object(peeled)?;
            if object.kind != gix::objs::Kind::Commit {
                tracing::debug!(
                    url = %self.inner.url,
                    tag = %name,
                    kind = %object.kind,
                    "Tag skipped: it does not point to a commit."
                );
                continue;
            }
            tags.push(Tag {
                name,
                commit: peeled.detach(),
                message,
            });
        }
        tags.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tags)
    }

    /// protond's own references below `prefix` (e.g. [`RELEASE_REFS`]): name after the
    /// prefix → commit. They are never fetched or pruned, so the commits they name (and their
    /// objects) survive a moved or deleted tag and git garbage collection.
    ///
    /// # Errors
    ///
    /// [`SourceError::ResolveRef`] when the references cannot be read.
    pub fn protond_refs(
        &self,
        prefix: &str,
    ) -> Result<BTreeMap<String, gix::ObjectId>, SourceError> {
        let list = || -> gix::Result<BTreeMap<String, gix::ObjectId>> {
            let repo = self.repo()?;
            let mut out = BTreeMap::new();
            let platform = repo.references()?;
            for reference in platform.prefixed(prefix.as_bytes())? {
                let mut reference = reference?;
                let full = reference.name().as_bstr().to_str_lossy().into_owned();
                let name = full.strip_prefix(prefix).unwrap_or(&full).to_owned();
                out.insert(name, reference.peel_to_id()?.detach());
            }
            Ok(out)
        };
        list().map_err(|source| SourceError::ResolveRef {
            url: self.inner.url.clone(),
            reference: prefix.to_owned(),
            source,
        })
    }

    /// Points protond's reference `<prefix><name>` at `commit` (creating or moving it).
    ///
    /// # Errors
    ///
    /// [`SourceError::WriteRef`] when the reference cannot be written.
    pub fn set_protond_ref(
        &self,
        prefix: &str,
        name: &str,
        commit: gix::ObjectId,
    ) -> Result<(), SourceError> {
        let full = format!("{prefix}{name}");
        let write = || -> gix::Result<()> {
            let repo = self.repo()?;
            repo.reference(
                full.as_str(),
                commit,
                gix::refs::transaction::PreviousValue::Any,
                "protond: release commit",
            )?;
            Ok(())
        };
        write().map_err(|source| SourceError::WriteRef {
            url: self.inner.url.clone(),
            reference: full.clone(),
            source,
        })
    }

    /// Tree id of `folder` (a relative path, "" = root) at `commit`, or None if the folder does not exist. Used to skip unchanged work.
    ///
    /// A path that names a file rather than a folder also gives `None`.
    ///
    /// # Errors
    ///
    /// [`SourceError::InvalidFolder`] for absolute paths or paths with `..`,
    /// [`SourceError::ReadTree`] when the commit or a tree cannot be read.
    pub fn tree_id(
        &self,
        commit: gix::ObjectId,
        folder: &str,
    ) -> Result<Option<gix::ObjectId>, SourceError> {
        let components = folder_components(folder)?;
        self.repo()
            .and_then(|repo| Self::folder_tree(&repo, commit, &components))
            .map_err(|source| SourceError::ReadTree {
                url: self.inner.url.clone(),
                commit,
                folder: folder.to_owned(),
                source,
            })
    }

    fn folder_tree(
        repo: &gix::Repository,
        commit: gix::ObjectId,
        components: &[&str],
    ) -> gix::Result<Option<gix::ObjectId>> {
        let tree = repo.find_commit(commit)?.tree()?;
        if components.is_empty() {
            return Ok(Some(tree.id));
        }
        let entry = tree.lookup_entry(components.iter().map(|c| c.as_bytes()))?;
        Ok(entry
            .filter(|entry| entry.mode().is_tree())
            .map(|entry| entry.object_id()))
    }

    /// Every entry below `folder` at `commit`, recursively, paths relative to `folder` with '/' separators, sorted. Blobs carry their bytes; symlinks, submodules (commits) and other modes are returned as such (NOT followed/resolved) so the caller can reject them with a clear message. Stop with an error once more than `max_files` entries or `max_bytes` total blob bytes have been read (resource guard).
    ///
    /// Folders themselves are not entries; blob sizes are checked before their content is
    /// loaded.
    ///
    /// # Errors
    ///
    /// [`SourceError::InvalidFolder`], [`SourceError::FolderNotFound`],
    /// [`SourceError::TooManyFiles`], [`SourceError::TooManyBytes`],
    /// [`SourceError::NonUtf8Path`], [`SourceError::ReadTree`] or [`SourceError::ReadBlob`].
    pub fn read_tree(
        &self,
        commit: gix::ObjectId,
        folder: &str,
        max_files: usize,
        max_bytes: u64,
    ) -> Result<Vec<TreeEntry>, SourceError> {
        let components = folder_components(folder)?;
        let url = &self.inner.url;
        let read_tree_err = |folder: &str| {
            let folder = folder.to_owned();
            move |source| SourceError::ReadTree {
                url: url.clone(),
                commit,
                folder,
                source,
            }
        };
        let repo = self.repo().map_err(read_tree_err(folder))?;
        let root = Self::folder_tree(&repo, commit, &components)
            .map_err(read_tree_err(folder))?
            .ok_or_else(|| SourceError::FolderNotFound {
                url: url.clone(),
                commit,
                folder: folder.to_owned(),
            })?;

        let mut entries = Vec::new();
        let mut total_bytes: u64 = 0;
        let mut pending = vec![(String::new(), root)];
        while let Some((prefix, tree_id)) = pending.pop() {
            let tree = repo.find_tree(tree_id).map_err(read_tree_err(&prefix))?;
            for entry in tree.iter() {
                let entry = entry.map_err(read_tree_err(&prefix))?;
                let name = entry.filename();
                let Ok(name) = name.to_str() else {
                    return Err(SourceError::NonUtf8Path {
                        url: url.clone(),
                        commit,
                        path: format!("{prefix}{}", name.to_str_lossy()),
                    });
                };
                let path = format!("{prefix}{name}");
                let kind = match entry.kind() {
                    GixEntryKind::Tree => {
                        pending.push((format!("{path}/"), entry.object_id()));
                        continue;
                    }
                    GixEntryKind::Link => EntryKind::Symlink,
                    GixEntryKind::Commit => EntryKind::Submodule,
                    GixEntryKind::Blob => EntryKind::Blob(Vec::new()),
                    GixEntryKind::BlobExecutable => EntryKind::Executable(Vec::new()),
                };
                if entries.len() >= max_files {
                    return Err(SourceError::TooManyFiles {
                        url: url.clone(),
                        commit,
                        folder: folder.to_owned(),
                        limit: max_files,
                    });
                }
                let mut read_blob = || -> Result<Vec<u8>, SourceError> {
                    let read_blob_err = |source| SourceError::ReadBlob {
                        url: url.clone(),
                        commit,
                        path: path.clone(),
                        source,
                    };
                    let size = repo
                        .find_header(entry.object_id())
                        .map_err(read_blob_err)?
                        .size();
                    total_bytes = total_bytes.saturating_add(size);
                    if total_bytes > max_bytes {
                        return Err(SourceError::TooManyBytes {
                            url: url.clone(),
                            commit,
                            folder: folder.to_owned(),
                            limit: max_bytes,
                        });
                    }
                    // Copied out at its size: the object's buffer comes from the handle's
                    // pool and can be far larger than the blob (a pack's delta buffer), and
                    // the catalog keeps template files for as long as the release lives.
                    Ok(repo
                        .find_blob(entry.object_id())
                        .map_err(read_blob_err)?
                        .data
                        .clone())
                };
                let kind = match kind {
                    EntryKind::Blob(_) => EntryKind::Blob(read_blob()?),
                    EntryKind::Executable(_) => EntryKind::Executable(read_blob()?),
                    other @ (EntryKind::Symlink | EntryKind::Submodule) => other,
                };
                entries.push(TreeEntry { path, kind });
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// Writes a commit whose parent is `base`: `upserts` replace or add files (regular
    /// blobs), `removes` delete paths. Only objects are written; no reference changes, so the
    /// mirror's view of the remote is untouched. Returns the new commit id.
    ///
    /// # Errors
    ///
    /// A [`WriteCommitError`] naming the step (and the path) when an object cannot be read
    /// or written.
    pub fn write_commit(
        &self,
        base: gix::ObjectId,
        upserts: &[(String, Vec<u8>)],
        removes: &[String],
        message: &str,
        author: (&str, &str),
    ) -> Result<gix::ObjectId, WriteCommitError> {
        let repo = self
            .repo()
            .map_err(|source| WriteCommitError::FindBase { base, source })?;
        let commit = repo
            .find_commit(base)
            .map_err(|source| WriteCommitError::FindBase { base, source })?;
        let tree = commit
            .tree_id()
            .map_err(|source| WriteCommitError::BaseTree { base, source })?;
        let mut editor = repo
            .edit_tree(tree)
            .map_err(|source| WriteCommitError::EditTree { base, source })?;
        for path in removes {
            editor
                .remove(path.as_str())
                .map_err(|source| WriteCommitError::Remove {
                    path: path.clone(),
                    source,
                })?;
        }
        for (path, bytes) in upserts {
            let blob = repo
                .write_blob(bytes)
                .map_err(|source| WriteCommitError::WriteBlob {
                    path: path.clone(),
                    source,
                })?;
            editor
                .upsert(path.as_str(), gix::object::tree::EntryKind::Blob, blob)
                .map_err(|source| WriteCommitError::Upsert {
                    path: path.clone(),
                    source,
                })?;
        }
        let new_tree = editor
            .write()
            .map_err(|source| WriteCommitError::WriteTree { source })?;
        let sig = gix::actor::Signature {
            name: author.0.into(),
            email: author.1.into(),
            time: gix::date::Time::now_utc(),
        };
        let mut b1 = gix::date::parse::TimeBuf::default();
        let mut b2 = gix::date::parse::TimeBuf::default();
        let c = repo
            .new_commit_as(
                sig.to_ref(&mut b1),
                sig.to_ref(&mut b2),
                message,
                new_tree,
                [base],
            )
            .map_err(|source| WriteCommitError::Commit { source })?;
        Ok(c.id)
    }

    /// The author email of a commit in the mirror, if the commit is there.
    #[must_use]
    pub fn commit_author_email(&self, id: gix::ObjectId) -> Option<String> {
        let repo = self.repo().ok()?;
        let commit = repo.find_commit(id).ok()?;
        let author = commit.author().ok()?;
        Some(author.email.to_string())
    }

    /// The url with any credentials removed, for logs.
    #[must_use]
    pub fn display_url(&self) -> &str {
        &self.inner.url
    }

    /// The mirror's directory in the cache (a bare repository).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The underlying repository, for plumbing-style readers (see `to_thread_local`).
    ///
    /// # Errors
    ///
    /// gix's error when the mirror cannot be opened.
    pub fn repository(&self) -> gix::Result<&gix::ThreadSafeRepository> {
        self.handle()
    }
}

/// Removes user:password@ from URLs.
///
/// Any user info of a `scheme://` URL is removed (a token may be passed as the user name).
/// The user of an scp-like ssh address (`git@host:path`) is kept: it is no secret.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..authority_start], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// A parsed repository location: what gix connects to, how it is shown, where it is cached.
struct Remote {
    /// The URL handed to gix, without password.
    url: gix::Url,
    /// The redacted URL for messages.
    display: String,
    /// The mirror's folder name inside the cache directory.
    folder: String,
    /// Credentials taken out of the URL.
    credentials: Option<(String, String)>,
    /// The absolute path of a local repository (a path or `file://` URL).
    local: Option<PathBuf>,
}

impl Remote {
    fn parse(input: &str) -> Result<Remote, SourceError> {
        let display = redact_url(input);
        let invalid = |source: gix::Error| SourceError::InvalidUrl {
            url: display.clone(),
            source,
        };
        let mut local = None;
        let (location, mut url) = if let Some(path) = local_path(input) {
            let absolute = std::path::absolute(&path)
                .map(|p| normalize(&p))
                .map_err(|e| invalid(gix::Error::from_error(e)))?;
            let Some(absolute) = absolute.to_str() else {
                return Err(invalid(gix::Error::from_error(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the path is not valid UTF-8",
                ))));
            };
            let url = gix::url::parse(absolute.as_bytes().as_bstr()).map_err(invalid)?;
            local = Some(PathBuf::from(absolute));
            (absolute.to_owned(), url)
        } else {
            let url = gix::url::parse(input.as_bytes().as_bstr()).map_err(invalid)?;
            (display.trim_end_matches('/').to_owned(), url)
        };
        let credentials = match (url.user(), url.password()) {
            (Some(user), Some(password)) => Some((user.to_owned(), password.to_owned())),
            // A lone user name in an https URL is how some forges take tokens.
            (Some(user), None) if is_http(&url) => Some((user.to_owned(), String::new())),
            _ => None,
        };
        if credentials.is_some() {
            url.set_user(None);
            url.set_password(None);
        }
        Ok(Remote {
            url,
            folder: mirror_folder(&location),
            display,
            credentials,
            local,
        })
    }
}

fn is_http(url: &gix::Url) -> bool {
    matches!(url.scheme, gix::url::Scheme::Http | gix::url::Scheme::Https)
}

/// The local path named by `input`, if it is a plain path or a `file://` URL.
fn local_path(input: &str) -> Option<PathBuf> {
    if let Some(path) = input.strip_prefix("file://") {
        return Some(PathBuf::from(path));
    }
    if input.contains("://") {
        return None;
    }
    // scp-like `[user@]host:path` has a ':' before any '/'.
    let scp_like = input
        .find(':')
        .is_some_and(|colon| input.find('/').is_none_or(|slash| colon < slash));
    (!scp_like).then(|| PathBuf::from(input))
}

/// Removes `.` and `..` components lexically, so that every spelling of a path names one mirror.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `<slug>-<hash>.git`: readable, and unique per normalised location.
fn mirror_folder(location: &str) -> String {
    let hash = hex::encode(sha2::Sha256::digest(location.as_bytes()));
    let last = location
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default();
    let last = last.strip_suffix(".git").unwrap_or(last);
    let slug: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let slug = if slug.is_empty() { "repo" } else { &slug };
    format!("{slug}-{}.git", &hash[..16])
}

/// Splits a folder argument into tree path components; "" and "." are the root.
fn folder_components(folder: &str) -> Result<Vec<&str>, SourceError> {
    if folder.starts_with('/') || folder.contains('\\') {
        return Err(SourceError::InvalidFolder {
            folder: folder.to_owned(),
        });
    }
    let mut components = Vec::new();
    for component in folder.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                return Err(SourceError::InvalidFolder {
                    folder: folder.to_owned(),
                });
            }
            other => components.push(other),
        }
    }
    Ok(components)
}

/// The mirror at `path`, through the handles kept open between cycles.
fn open_repo(remote: &Remote, path: &Path) -> Result<gix::ThreadSafeRepository, SourceError> {
    handles::open(path).map_err(|source| SourceError::Open {
        url: remote.display.clone(),
        path: path.to_owned(),
        source,
    })
}

/// Opens the mirror at `path` for fetching: with `options`' allocation limit.
fn open_repo_with(
    remote: &Remote,
    path: &Path,
    options: &FetchOptions,
) -> Result<gix::Repository, SourceError> {
    let open = gix::open::Options::default().config_overrides([options.alloc_limit_override()]);
    gix::open_opts(path, open).map_err(|source| SourceError::Open {
        url: remote.display.clone(),
        path: path.to_owned(),
        source,
    })
}

/// The error of a failed fetch (`clone`: the first one, into a fresh mirror).
fn fetch_error(
    remote: &Remote,
    options: &FetchOptions,
    failure: fetch::Failure,
    clone: bool,
) -> SourceError {
    let url = remote.display.clone();
    match failure {
        fetch::Failure::PackTooLarge => SourceError::PackTooLarge {
            url,
            limit: options.max_pack_bytes,
        },
        fetch::Failure::Gix(source) if source.is_resource_exhausted() => {
            SourceError::ObjectTooLarge {
                url,
                limit: options.max_object_bytes,
                source,
            }
        }
        fetch::Failure::Gix(source) if clone => SourceError::Clone { url, source },
        fetch::Failure::Gix(source) => SourceError::Fetch { url, source },
    }
}

/// First sync: fetch into a fresh bare repository next to the final place, then move it there,
/// so that a failed clone leaves nothing behind and a half-written mirror is never opened.
fn clone(
    remote: &Remote,
    cache_dir: &Path,
    path: &Path,
    options: &FetchOptions,
) -> Result<(), SourceError> {
    let cache_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SourceError::Cache { path, source }
    };
    std::fs::create_dir_all(cache_dir).map_err(cache_err(cache_dir))?;
    let staging = cache_dir.join(format!(
        ".{}.tmp-{}-{}",
        remote.folder,
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let open = {
        use gix::sec::trust::DefaultForLevel as _;
        gix::open::Options::default_for_level(gix::sec::Trust::Full)
            .config_overrides([options.alloc_limit_override()])
    };
    let result = gix::ThreadSafeRepository::init_opts(
        &staging,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        open,
    )
    .map_err(fetch::Failure::Gix)
    .and_then(|repo| fetch::fetch(&repo.to_thread_local(), remote, options).map(drop))
    .map_err(|f| fetch_error(remote, options, f, true))
    .and_then(|()| match std::fs::rename(&staging, path) {
        // Another sync of the same url won the race: use its mirror.
        Err(_) if path.exists() => Ok(()),
        other => other.map_err(cache_err(path)),
    });
    if staging.exists()
        && let Err(error) = std::fs::remove_dir_all(&staging)
    {
        tracing::warn!(path = %staging.display(), %error, "Failed to remove a staging mirror.");
    }
    result
}

/// The credential callback: explicit credentials first, then git's helpers, never a prompt.
struct Credentials {
    repo: gix::Repository,
    explicit: Option<(String, String)>,
    helpers: Option<gix::credentials::helper::Cascade>,
}

impl Credentials {
    fn new(repo: gix::Repository, explicit: Option<(String, String)>) -> Credentials {
        Credentials {
            repo,
            explicit,
            helpers: None,
        }
    }

    /// `(user, token)` from [`TOKEN_ENV`] and [`TOKEN_USER_ENV`], read at each fetch.
    fn from_env() -> Option<(String, String)> {
        let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())?;
        let user = std::env::var(TOKEN_USER_ENV)
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_TOKEN_USER.to_owned());
        Some((user, token))
    }

    fn no_prompt() -> gix::prompt::Options {
        gix::prompt::Options {
            askpass: None,
            mode: gix::prompt::Mode::Disable,
        }
    }

    fn invoke(
        &mut self,
        action: gix::credentials::helper::Action,
    ) -> gix::Result<Option<gix::credentials::protocol::Outcome>> {
        use gix::credentials::helper::Action;
        match action {
            Action::Get(context) => {
                let is_https = context.protocol.as_deref() == Some("https")
                    || context
                        .url
                        .as_ref()
                        .is_some_and(|url| url.starts_with(b"https://"));
                // Never over plain http: neither ours nor git's helpers'.
                if !is_https {
                    return Ok(None);
                }
                if let Some((username, password)) = &self.explicit {
                    return Ok(Some(gix::credentials::protocol::Outcome {
                        identity: gix::sec::identity::Account {
                            username: username.clone(),
                            password: password.clone(),
                            oauth_refresh_token: None,
                        },
                        next: context.into(),
                    }));
                }
                let Some(url) = context.url.clone().or_else(|| context.to_url()) else {
                    return Ok(None);
                };
                let (cascade, _, _) = self
                    .repo
                    .config_snapshot()
                    .credential_helpers(gix::url::parse(url.as_bstr())?)?;
                let helpers = self.helpers.insert(cascade);
                helpers.invoke(Action::Get(context), Self::no_prompt())
            }
            // Store/erase only concern git's helpers; explicit credentials are never stored.
            other => match &mut self.helpers {
                Some(helpers) => helpers.invoke(other, Self::no_prompt()),
                None => Ok(None),
            },
        }
    }
}

/// Watch local repo paths (working dirs or bare) for changes to refs (commits, tags): returns a notify watcher (keep it alive) and a `tokio::sync::mpsc::UnboundedReceiver<usize>` yielding the index of the path that changed; debounce ~50 ms; events must arrive within 1 s of `git commit` / `git tag`.
///
/// The repository's `refs/` (recursively), `packed-refs` and `HEAD` are watched (and
/// `reftable/` for repositories using that format). Events of
/// one repository are gathered for [`WATCH_DEBOUNCE`] after the first, then its index is
/// sent once. Dropping the watcher ends the stream.
///
/// # Errors
///
/// [`SourceError::WatchOpen`] when a path is not a git repository, [`SourceError::Watch`]
/// when the watcher cannot be created or a directory cannot be watched.
pub fn watch(
    paths: &[PathBuf],
) -> Result<
    (
        notify::RecommendedWatcher,
        tokio::sync::mpsc::UnboundedReceiver<usize>,
    ),
    SourceError,
> {
    let targets = paths
        .iter()
        .map(|path| WatchTarget::resolve(path))
        .collect::<Result<Vec<_>, _>>()?;
    let (raw_tx, raw_rx) = std::sync::mpsc::channel::<usize>();
    let handler_targets = targets.clone();
    let watch_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SourceError::Watch { path, source }
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "Git watcher reported an error.");
                return;
            }
        };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        for (index, target) in handler_targets.iter().enumerate() {
            if event.paths.iter().any(|path| target.is_relevant(path)) {
                // The receiving thread only stops when the watcher is gone.
                let _ = raw_tx.send(index);
            }
        }
    })
    .map_err(watch_err(Path::new("")))?;
    for target in &targets {
        watcher
            .watch(&target.common_dir, notify::RecursiveMode::NonRecursive)
            .map_err(watch_err(&target.common_dir))?;
        let refs = target.common_dir.join("refs");
        watcher
            .watch(&refs, notify::RecursiveMode::Recursive)
            .map_err(watch_err(&refs))?;
        let reftable = target.common_dir.join("reftable");
        if reftable.is_dir() {
            watcher
                .watch(&reftable, notify::RecursiveMode::Recursive)
                .map_err(watch_err(&reftable))?;
        }
        if target.git_dir != target.common_dir {
            watcher
                .watch(&target.git_dir, notify::RecursiveMode::NonRecursive)
                .map_err(watch_err(&target.git_dir))?;
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("protond-git-watch".to_owned())
        .spawn(move || debounce(&raw_rx, &tx, WATCH_DEBOUNCE))
        .map_err(|e| SourceError::Watch {
            path: PathBuf::new(),
            source: notify::Error::io(e),
        })?;
    Ok((watcher, rx))
}

#[derive(Clone)]
struct WatchTarget {
    git_dir: PathBuf,
    common_dir: PathBuf,
}

impl WatchTarget {
    fn resolve(path: &Path) -> Result<WatchTarget, SourceError> {
        let repo = gix::open(path).map_err(|source| SourceError::WatchOpen {
            path: path.to_owned(),
            source,
        })?;
        // Events carry paths below the watched directory as given, so watch canonical ones.
        let canonical = |dir: &Path| dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        Ok(WatchTarget {
            git_dir: canonical(repo.git_dir()),
            common_dir: canonical(repo.common_dir()),
        })
    }

    fn is_relevant(&self, path: &Path) -> bool {
        path.starts_with(self.common_dir.join("refs"))
            || path.starts_with(self.common_dir.join("reftable"))
            || path == self.common_dir.join("packed-refs")
            || path == self.git_dir.join("HEAD")
    }
}

/// Forwards each index at most once per `delay`, `delay` after its first event.
fn debounce(
    raw: &Receiver<usize>,
    out: &tokio::sync::mpsc::UnboundedSender<usize>,
    delay: Duration,
) {
    let mut due: BTreeMap<usize, Instant> = BTreeMap::new();
    loop {
        let next = due.values().min().copied();
        let received = match next {
            None => raw.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(deadline) => raw.recv_timeout(deadline.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(index) => {
                due.entry(index).or_insert_with(|| Instant::now() + delay);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let ready: Vec<usize> = due
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(index, _)| *index)
            .collect();
        for index in ready {
            due.remove(&index);
            if out.send(index).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let output = Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.com")
            .env("GIT_COMMITTER_NAME", "Test Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.com")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8 output")
            .trim()
            .to_owned()
    }

    fn rev(dir: &Path, rev: &str) -> gix::ObjectId {
        gix::ObjectId::from_hex(git(dir, &["rev-parse", rev]).as_bytes()).expect("hex id")
    }

    fn write(dir: &Path, path: &str, content: &str) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    fn commit_all(dir: &Path, message: &str) -> gix::ObjectId {
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "--no-gpg-sign", "-m", message]);
        rev(dir, "HEAD")
    }

    /// A work repo on `main` with one commit.
    fn origin(root: &Path) -> PathBuf {
        let dir = root.join("origin");
        std::fs::create_dir_all(&dir).expect("mkdir");
        git(&dir, &["init", "-q", "-b", "main"]);
        write(&dir, "README.md", "hello\n");
        commit_all(&dir, "initial");
        dir
    }

    fn url(path: &Path) -> String {
        path.to_str().expect("utf-8 path").to_owned()
    }

    fn tag<'a>(tags: &'a [Tag], name: &str) -> &'a Tag {
        tags.iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("tag {name} in {tags:?}"))
    }

    #[test]
    fn sync_clones_then_fetches_new_commits_and_moved_tags() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = origin(tmp.path());
        let cache = tmp.path().join("cache");
        git(&origin, &["tag", "-a", "-m", "first", "v1.0"]);

        let mirror = Mirror::sync(&url(&origin), &cache).expect("clone");
        assert_eq!(
            mirror.branch_head("main").expect("main"),
            rev(&origin, "main")
        );
        assert_eq!(
            tag(&mirror.tags().expect("tags"), "v1.0").commit,
            rev(&origin, "main")
        );
        assert!(mirror.path().starts_with(&cache));
        assert!(
            mirror
                .path()
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("origin-")
                    && Path::new(n).extension().is_some_and(|e| e == "git")),
            "{:?}",
            mirror.path()
        );

        write(&origin, "svc/a.txt", "a\n");
        let second = commit_all(&origin, "second");
        git(&origin, &["tag", "v1.1"]);
        let mirror = Mirror::sync(&url(&origin), &cache).expect("fetch");
        assert_eq!(mirror.branch_head("main").expect("main"), second);
        assert_eq!(tag(&mirror.tags().expect("tags"), "v1.1").commit, second);

        // Move v1.0 to the new commit with a new message.
        git(&origin, &["tag", "-f", "-a", "-m", "moved", "v1.0", "HEAD"]);
        let mirror = Mirror::sync(&url(&origin), &cache).expect("fetch");
        let tags = mirror.tags().expect("tags");
        assert_eq!(tag(&tags, "v1.0").commit, second);
        assert_eq!(tag(&tags, "v1.0").message.as_deref(), Some("moved"));

        // A force-pushed branch (history rewritten) is followed too.
        git(&origin, &["reset", "-q", "--hard", "HEAD~1"]);
        let mirror = Mirror::sync(&url(&origin), &cache).expect("fetch");
        assert_eq!(
            mirror.branch_head("main").expect("main"),
            rev(&origin, "main")
        );
        assert_eq!(
            mirror.branch_head("refs/heads/main").expect("full name"),
            rev(&origin, "main")
        );
    }

    #[test]
    fn file_urls_and_relative_paths_share_one_mirror() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = origin(tmp.path());
        let cache = tmp.path().join("cache");
        let from_url = Mirror::sync(&format!("file://{}", url(&origin)), &cache).expect("file url");
        assert_eq!(
            from_url.branch_head("main").expect("main"),
            rev(&origin, "main")
        );

        let cwd = std::env::current_dir().expect("cwd");
        let ups = "../".repeat(cwd.components().count() - 1);
        let relative = format!("{ups}{}", url(&origin).trim_start_matches('/'));
        assert!(Path::new(&relative).is_relative());
        let from_relative = Mirror::sync(&relative, &cache).expect("relative path");
        assert_eq!(
            from_relative.branch_head("main").expect("main"),
            rev(&origin, "main")
        );
        let plain = Mirror::sync(&url(&origin), &cache).expect("plain path");
        assert_eq!(plain.path(), from_relative.path());
    }

    #[test]
    fn tags_carry_messages_and_peeled_commits_from_any_branch() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = origin(tmp.path());
        let main = rev(&origin, "main");
        git(
            &origin,
            &[
                "tag",
                "-a",
                "-m",
                "\n  Release notes\n\nline two\n\n",
                "fargate-svc/v1.0",
            ],
        );
        git(&origin, &["tag", "light"]);
        git(&origin, &["checkout", "-q", "-b", "feature"]);
        write(&origin, "feature.txt", "f\n");
        let feature = commit_all(&origin, "feature");
        git(&origin, &["tag", "-a", "-m", "on feature", "feature/v2.0"]);
        git(&origin, &["checkout", "-q", "main"]);
        // A tag of a tree is skipped, not an error.
        let tree = git(&origin, &["rev-parse", "HEAD^{tree}"]);
        git(&origin, &["tag", "tree-tag", &tree]);

        let mirror = Mirror::sync(&url(&origin), &tmp.path().join("cache")).expect("sync");
        let tags = mirror.tags().expect("tags");
        let names: Vec<&str> = tags.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["fargate-svc/v1.0", "feature/v2.0", "light"]);
        let annotated = tag(&tags, "fargate-svc/v1.0");
        assert_eq!(annotated.commit, main);
        assert_eq!(
            annotated.message.as_deref(),
            Some("Release notes\n\nline two")
        );
        assert_eq!(tag(&tags, "light").message, None);
        assert_eq!(tag(&tags, "light").commit, main);
        assert_eq!(tag(&tags, "feature/v2.0").commit, feature);
        assert_eq!(mirror.branch_head("feature").expect("feature"), feature);

        let err = mirror.branch_head("missing").expect_err("no such branch");
        assert_eq!(err.kind(), "resolve_ref");
        assert!(!err.is_retryable());
    }

    #[test]
    fn read_tree_lists_nested_files_and_reports_symlinks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = origin(tmp.path());
        write(&origin, "tpl/v1/schema/schema.yaml", "schema: {}\n");
        write(
            &origin,
            "tpl/v1/infrastructure/cloudformation.yaml",
            "Resources: {}\n",
        );
        write(&origin, "tpl/v1/run.sh", "#!/bin/sh\n");
        std::fs::set_permissions(
            origin.join("tpl/v1/run.sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod +x");
        std::os::unix::fs::symlink("../../README.md", origin.join("tpl/v1/link")).expect("ln -s");
        let commit = commit_all(&origin, "bundle");

        let mirror = Mirror::sync(&url(&origin), &tmp.path().join("cache")).expect("sync");
        let entries = mirror
            .read_tree(commit, "tpl/v1", 100, 1 << 20)
            .expect("read");
        let expected = vec![
            TreeEntry {
                path: "infrastructure/cloudformation.yaml".into(),
                kind: EntryKind::Blob(b"Resources: {}\n".to_vec()),
            },
            TreeEntry {
                path: "link".into(),
                kind: EntryKind::Symlink,
            },
            TreeEntry {
                path: "run.sh".into(),
                kind: EntryKind::Executable(b"#!/bin/sh\n".to_vec()),
            },
            TreeEntry {
                path: "schema/schema.yaml".into(),
                kind: EntryKind::Blob(b"schema: {}\n".to_vec()),
            },
        ];
        assert_eq!(entries, expected);
        assert_eq!(
            mirror
                .read_tree(commit, "tpl/v1/", 100, 1 << 20)
                .expect("slash"),
            expected
        );

        let root = mirror.read_tree(commit, "", 100, 1 << 20).expect("root");
        assert_eq!(root.len(), 5);
        assert_eq!(root[0].path, "README.md");
        assert_eq!(root[1].path, "tpl/v1/infrastructure/cloudformation.yaml");

        // Exactly at the limits is fine; one over is an error.
        mirror
            .read_tree(commit, "tpl/v1", 4, 1 << 20)
            .expect("4 files");
        let err = mirror
            .read_tree(commit, "tpl/v1", 3, 1 << 20)
            .expect_err("too many");
        assert!(
            matches!(err, SourceError::TooManyFiles { limit: 3, .. }),
            "{err:?}"
        );
        let total =
            (b"Resources: {}\n".len() + b"#!/bin/sh\n".len() + b"schema: {}\n".len()) as u64;
        mirror
            .read_tree(commit, "tpl/v1", 100, total)
            .expect("exact bytes");
        let err = mirror
            .read_tree(commit, "tpl/v1", 100, total - 1)
            .expect_err("too big");
        assert!(matches!(err, SourceError::TooManyBytes { .. }), "{err:?}");
        assert_eq!(err.kind(), "too_many_bytes");

        let err = mirror
            .read_tree(commit, "nope", 100, 1 << 20)
            .expect_err("missing");
        assert_eq!(err.kind(), "folder_not_found");
        let err = mirror
            .read_tree(commit, "../x", 100, 1 << 20)
            .expect_err("escape");
        assert_eq!(err.kind(), "invalid_folder");
    }

    #[test]
    fn read_tree_reports_submodules_without_resolving_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = origin(tmp.path());
        let head = rev(&origin, "HEAD").to_string();
        let cacheinfo = format!("160000,{head},lib/sub");
        git(
            &origin,
            &["update-index", "--add", "--cacheinfo", &cacheinfo],
        );
        git(
            &origin,
            &["commit", "-q", "--no-gpg-sign", "-m", "submodule"],
        );
        let commit = rev(&origin, "HEAD");
        let mirror = Mirror::sync(&url(&origin), &tmp.path().join("cache")).expect("sync");
        let entries = mirror.read_tree(commit, "lib", 10, 100).expect("read");
        assert_eq!(
            entries,
            vec![TreeEntry {
                path: "sub".into(),
                kind: EntryKind::Submodule
            }]
        );
    }

    #[test]
    fn tree_id_changes_only_with_the_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = origin(tmp.path());
        write(&origin, "svc/a.yaml", "a: 1\n");
        write(&origin, "other/b.yaml", "b: 1\n");
        let first = commit_all(&origin, "first");
        write(&origin, "other/b.yaml", "b: 2\n");
        let second = commit_all(&origin, "other changed");
        write(&origin, "svc/a.yaml", "a: 2\n");
        let third = commit_all(&origin, "svc changed");

        let mirror = Mirror::sync(&url(&origin), &tmp.path().join("cache")).expect("sync");
        let id = |commit, folder| mirror.tree_id(commit, folder).expect("tree id");
        assert!(id(first, "svc").is_some());
        assert_eq!(id(first, "svc"), id(second, "svc"));
        assert_ne!(id(second, "svc"), id(third, "svc"));
        assert_ne!(id(first, "other"), id(second, "other"));
        assert_ne!(id(first, ""), id(second, ""));
        assert_eq!(id(first, "missing"), None);
        assert_eq!(id(first, "svc/a.yaml"), None, "a file is not a folder");
    }

    #[test]
    fn sync_with_fetches_only_what_is_read_and_never_touches_protond_refs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = origin(tmp.path());
        let cache = tmp.path().join("cache");
        git(&origin, &["tag", "-a", "-m", "r", "rel/a-1.0"]);
        git(&origin, &["tag", "other-1.0"]);
        git(&origin, &["checkout", "-q", "-b", "side"]);
        write(&origin, "side.txt", "side\n");
        let side = commit_all(&origin, "side");
        git(&origin, &["checkout", "-q", "main"]);
        let options = FetchOptions::new(&[
            Want::Branch("main".into()),
            Want::TagsStartingWith("rel/".into()),
        ]);
        let mirror = Mirror::sync_with(&url(&origin), &cache, &options).expect("clone");
        assert_eq!(
            mirror.branch_head("main").expect("main"),
            rev(&origin, "main")
        );
        assert!(mirror.branch_head("side").is_err(), "side branch fetched");
        let names: Vec<String> = mirror
            .tags()
            .expect("tags")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["rel/a-1.0"]);
        let repo = mirror.repository().expect("opens").to_thread_local();
        assert!(
            repo.find_object(side).is_err(),
            "the side branch's commit was fetched"
        );

        // protond's own reference survives a moved tag, which is seen (force-update).
        let first = rev(&origin, "main");
        mirror
            .set_protond_ref(RELEASE_REFS, "rel/a-1.0", first)
            .expect("write ref");
        write(&origin, "b.txt", "b\n");
        let second = commit_all(&origin, "second");
        git(
            &origin,
            &["tag", "-f", "-a", "-m", "moved", "rel/a-1.0", "HEAD"],
        );
        let mirror = Mirror::sync_with(&url(&origin), &cache, &options).expect("fetch");
        assert_eq!(
            tag(&mirror.tags().expect("tags"), "rel/a-1.0").commit,
            second
        );
        assert_eq!(
            mirror
                .protond_refs(RELEASE_REFS)
                .expect("refs")
                .get("rel/a-1.0"),
            Some(&first)
        );
        // A branch that does not exist is not fetched, and reading it names it.
        let options = FetchOptions::new(&[Want::Branch("nope".into())]);
        let fetched = Mirror::sync_with(&url(&origin), &cache, &options);
        let mirror = match fetched {
            Ok(m) => m,
            Err(e) => panic!(
                "a missing branch fails the fetch: {}",
                crate::error_chain(&e)
            ),
        };
        assert_eq!(
            mirror.branch_head("nope").expect_err("missing").kind(),
            "resolve_ref"
        );
    }

    /// `len` bytes that do not compress (a xorshift stream).
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn objects_over_the_limit_are_refused_without_changing_the_mirror() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = origin(tmp.path());
        let cache = tmp.path().join("cache");
        let options = FetchOptions::new(&[Want::Branch("main".into())])
            .with_limits(1024 * 1024, DEFAULT_MAX_PACK_BYTES);
        let mirror = Mirror::sync_with(&url(&origin), &cache, &options).expect("clone");
        let before = mirror.branch_head("main").expect("main");
        std::fs::write(origin.join("big.bin"), vec![0u8; 3 * 1024 * 1024]).expect("write");
        commit_all(&origin, "big");
        let err = Mirror::sync_with(&url(&origin), &cache, &options).expect_err("too large");
        assert_eq!(
            err.kind(),
            "object_too_large",
            "{}",
            crate::error_chain(&err)
        );
        let message = crate::error_chain(&err);
        for needle in ["1048576 bytes", "max_object_bytes", &url(&origin)] {
            assert!(message.contains(needle), "{needle} in {message}");
        }
        assert!(!err.is_retryable());
        let opened = Mirror::open(&url(&origin), &cache).expect("open");
        assert_eq!(opened.branch_head("main").expect("main"), before);
        // A first clone is refused the same way, leaving nothing behind.
        let fresh = tmp.path().join("fresh");
        let err = Mirror::sync_with(&url(&origin), &fresh, &options).expect_err("too large");
        assert_eq!(err.kind(), "object_too_large");
        assert_eq!(std::fs::read_dir(&fresh).expect("cache").count(), 0);
    }

    #[test]
    fn packs_over_the_limit_and_interrupted_fetches_are_stopped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = origin(tmp.path());
        std::fs::write(origin.join("noise.bin"), noise(3 * 1024 * 1024)).expect("write");
        commit_all(&origin, "noise");
        let options = FetchOptions::new(&[Want::Branch("main".into())])
            .with_limits(DEFAULT_MAX_OBJECT_BYTES, 1024 * 1024);
        let err = Mirror::sync_with(&url(&origin), &tmp.path().join("a"), &options)
            .expect_err("too large");
        assert_eq!(err.kind(), "pack_too_large", "{}", crate::error_chain(&err));
        assert!(err.to_string().contains("max_pack_bytes"), "{err}");
        let options = FetchOptions::new(&[Want::Branch("main".into())]);
        options
            .interrupt
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = Mirror::sync_with(&url(&origin), &tmp.path().join("b"), &options)
            .expect_err("interrupted");
        assert_eq!(err.kind(), "clone", "{}", crate::error_chain(&err));
        // Within the limits, it fetches.
        let options = FetchOptions::new(&[Want::Branch("main".into())]);
        Mirror::sync_with(&url(&origin), &tmp.path().join("c"), &options).expect("fetch");
    }

    #[test]
    fn vanished_remote_fails_sync_and_keeps_the_mirror() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = origin(tmp.path());
        git(&origin, &["tag", "-a", "-m", "notes", "v1.0"]);
        let cache = tmp.path().join("cache");
        let synced = Mirror::sync(&url(&origin), &cache).expect("sync");
        let head = synced.branch_head("main").expect("main");

        std::fs::rename(&origin, tmp.path().join("moved")).expect("rename origin");
        let err = Mirror::sync(&url(&origin), &cache).expect_err("remote is gone");
        assert_eq!(err.kind(), "fetch", "{err:?}");
        assert!(err.is_retryable());

        let opened = Mirror::open(&url(&origin), &cache).expect("open");
        assert_eq!(opened.branch_head("main").expect("main"), head);
        assert_eq!(opened.tags().expect("tags"), synced.tags().expect("tags"));
        assert_eq!(opened.path(), synced.path());
        // The old handle keeps working too.
        assert_eq!(synced.branch_head("main").expect("main"), head);
    }

    #[test]
    fn failed_clone_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = tmp.path().join("cache");
        let missing = tmp.path().join("does-not-exist");
        let err = Mirror::sync(&url(&missing), &cache).expect_err("no remote");
        assert_eq!(err.kind(), "clone", "{err:?}");
        let left: Vec<_> = std::fs::read_dir(&cache).expect("cache exists").collect();
        assert!(left.is_empty(), "{left:?}");
        let err = Mirror::open(&url(&missing), &cache).expect_err("never synced");
        assert_eq!(err.kind(), "not_synced");
    }

    #[test]
    fn errors_never_show_credentials() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Port 9 on loopback: nothing listens, the connection is refused at once.
        let url = "https://user:s3cr3t-token@127.0.0.1:9/org/repo.git";
        let err = Mirror::sync(url, &tmp.path().join("cache")).expect_err("nothing listens");
        let mut chain = format!("{err} {err:?}");
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            chain = format!("{chain} {s} {s:?}");
            source = s.source();
        }
        assert!(!chain.contains("s3cr3t"), "{chain}");
        assert!(chain.contains("127.0.0.1:9/org/repo.git"), "{chain}");
    }

    #[test]
    fn credentials_are_never_sent_over_plain_http() {
        use std::io::{BufRead as _, Write as _};
        use std::sync::Mutex;
        use std::sync::atomic::AtomicBool;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let requests = Arc::new(Mutex::new(Vec::<String>::new()));
        let done = Arc::new(AtomicBool::new(false));
        let server = {
            let (requests, done) = (requests.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    stream.set_nonblocking(false).expect("blocking");
                    stream
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .expect("timeout");
                    let mut reader = std::io::BufReader::new(&stream);
                    let mut head = String::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        head.push_str(&line);
                        line.clear();
                    }
                    requests.lock().expect("lock").push(head);
                    let _ = (&stream).write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            })
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let url = format!("http://user:pw-in-url@127.0.0.1:{port}/org/repo.git");
        let err = Mirror::sync(&url, &tmp.path().join("cache")).expect_err("401");
        done.store(true, Ordering::SeqCst);
        server.join().expect("server thread");
        assert_eq!(err.kind(), "clone", "{err:?}");
        let requests = requests.lock().expect("lock");
        // Without an http transport compiled in, no request is made at all.
        for request in requests.iter() {
            assert!(
                !request.to_ascii_lowercase().contains("authorization"),
                "{request}"
            );
        }
    }

    #[test]
    fn redact_url_removes_credentials() {
        let cases = [
            (
                "https://user:pass@github.com/o/r.git",
                "https://github.com/o/r.git",
            ),
            ("https://token@github.com/o/r", "https://github.com/o/r"),
            (
                "https://u:p@ss@host:8443/r?x=a@b",
                "https://host:8443/r?x=a@b",
            ),
            ("https://github.com/o/r.git", "https://github.com/o/r.git"),
            ("ssh://git@host/o/r.git", "ssh://host/o/r.git"),
            ("git@github.com:o/r.git", "git@github.com:o/r.git"),
            ("/srv/git/r", "/srv/git/r"),
            ("file:///srv/git/r", "file:///srv/git/r"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "{input}");
        }
    }

    #[test]
    fn mirror_folders_are_stable_readable_and_ignore_credentials() {
        let a = Remote::parse("https://u:p@example.com/org/Platform.Templates.git").expect("url");
        let b = Remote::parse("https://example.com/org/Platform.Templates.git").expect("url");
        assert_eq!(a.folder, b.folder);
        assert!(a.folder.starts_with("Platform_Templates-"), "{}", a.folder);
        assert_eq!(a.credentials, Some(("u".into(), "p".into())));
        assert_eq!(a.url.password(), None);
        let c = Remote::parse("https://example.com/other/Platform.Templates.git").expect("url");
        assert_ne!(a.folder, c.folder);
        assert!(local_path("git@github.com:o/r.git").is_none());
        assert!(local_path("repos/templates").is_some());
        assert!(local_path("file:///srv/r").is_some());
    }

    #[test]
    fn explicit_credentials_go_to_https_only() {
        use gix::credentials::helper::Action;
        use gix::credentials::protocol::Context;
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = gix::init_bare(tmp.path()).expect("init");
        let token = Some(("x-access-token".to_owned(), "tok".to_owned()));
        let get = |protocol: &str| {
            Action::Get(Context {
                protocol: Some(protocol.to_owned()),
                host: Some("example.com".to_owned()),
                url: Some(format!("{protocol}://example.com/o/r.git").into()),
                ..Context::default()
            })
        };
        let mut credentials = Credentials::new(repo.clone(), token);
        let outcome = credentials
            .invoke(get("https"))
            .expect("no error")
            .expect("credentials");
        assert_eq!(outcome.identity.username, "x-access-token");
        assert_eq!(outcome.identity.password, "tok");
        // Explicit credentials are never handed to helpers for storing.
        assert!(matches!(credentials.invoke(outcome.next.store()), Ok(None)));
        // Never for plain http, and no helper or prompt is configured here either.
        let http = credentials.invoke(get("http"));
        assert!(!matches!(http, Ok(Some(_))), "{http:?}");
    }

    #[test]
    fn errors_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<SourceError>();
        assert_send_sync::<WriteCommitError>();
        assert_send_sync::<Mirror>();
    }

    #[test]
    fn write_commit_names_the_missing_base_and_prints_gix_message() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = origin(tmp.path());
        let mirror = Mirror::sync(&url(&origin), &tmp.path().join("cache")).expect("sync");
        let missing =
            gix::ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").expect("hex id");
        let err = mirror
            .write_commit(missing, &[], &[], "m", ("a", "a@example.com"))
            .expect_err("no such commit");
        let WriteCommitError::FindBase { base, source } = &err else {
            panic!("expected FindBase, got {err:?}");
        };
        assert_eq!(*base, missing);
        // The message is gix's own, as the former `String` error was.
        assert_eq!(err.to_string(), source.to_string());
        assert!(err.to_string().contains(&missing.to_string()), "{err}");
        let head = rev(&origin, "HEAD");
        let written = mirror
            .write_commit(
                head,
                &[("dir/new.txt".into(), b"x\n".to_vec())],
                &["README.md".into()],
                "m",
                ("a", "a@example.com"),
            )
            .expect("write");
        assert_ne!(written, head);
    }

    /// Runs `action` and waits for the next watch event: the index, the latency from the
    /// start of `action` and the latency from its end.
    fn event_after(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<usize>,
        action: impl FnOnce(),
    ) -> (usize, Duration, Duration) {
        let start = Instant::now();
        action();
        let done = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(index) => return (index, start.elapsed(), done.elapsed()),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(5),
                        "no watch event within 5 s"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("watch stream ended: {e}"),
            }
        }
    }

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<usize>) {
        std::thread::sleep(WATCH_DEBOUNCE * 2);
        while rx.try_recv().is_ok() {}
    }

    #[test]
    fn watch_reports_commits_and_tags_quickly() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let quiet = tmp.path().join("quiet");
        std::fs::create_dir_all(&quiet).expect("mkdir");
        git(&quiet, &["init", "-q", "-b", "main"]);
        let origin = origin(tmp.path());
        let bare = tmp.path().join("bare.git");
        git(
            tmp.path(),
            &["clone", "-q", "--bare", &url(&origin), &url(&bare)],
        );

        let (watcher, mut rx) =
            watch(&[quiet.clone(), origin.clone(), bare.clone()]).expect("watch");

        write(&origin, "x.txt", "x\n");
        git(&origin, &["add", "-A"]);
        drain(&mut rx); // `git add` touches the index only, which is not watched.
        assert!(rx.try_recv().is_err());

        let commit = event_after(&mut rx, || {
            git(&origin, &["commit", "-q", "--no-gpg-sign", "-m", "x"]);
        });
        drain(&mut rx);
        let tag = event_after(&mut rx, || {
            git(&origin, &["tag", "-a", "-m", "notes", "svc/v1.0"]);
        });
        drain(&mut rx);
        let push = event_after(&mut rx, || {
            git(&origin, &["push", "-q", &url(&bare), "main", "svc/v1.0"]);
        });
        eprintln!(
            "watch latency from the start of git: commit {:?}, tag {:?}, push to bare {:?}",
            commit.1, tag.1, push.1
        );
        assert_eq!((commit.0, tag.0, push.0), (1, 1, 2));
        // Measured from git's exit, so that a slow machine running git slowly does not count.
        for (_, _, after_git) in [commit, tag, push] {
            assert!(after_git < Duration::from_secs(1), "{after_git:?}");
        }
        drop(watcher);
        std::thread::sleep(Duration::from_millis(100));
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn debounce_reports_a_burst_once_and_a_later_write_again() {
        let (raw_tx, raw_rx) = std::sync::mpsc::channel::<usize>();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Long enough that a loaded machine does not split the burst below into two.
        let delay = Duration::from_millis(300);
        let thread = std::thread::spawn(move || debounce(&raw_rx, &tx, delay));
        let next = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<usize>| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(i) = rx.try_recv() {
                    return Some(i);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        };
        // One git command's writes (lock file, rename) on repo 0, one on repo 1.
        for i in [0, 0, 1, 0] {
            raw_tx.send(i).expect("send");
        }
        let mut got = vec![next(&mut rx), next(&mut rx)];
        got.sort_unstable();
        assert_eq!(got, vec![Some(0), Some(1)], "each repo reported");
        std::thread::sleep(delay * 2);
        assert_eq!(rx.try_recv().ok(), None, "each repo once per burst");
        // A write after the report is reported again (never lost to the last burst).
        raw_tx.send(0).expect("send");
        assert_eq!(next(&mut rx), Some(0));
        drop(raw_tx);
        thread
            .join()
            .expect("the debounce thread ends with its sender");
    }

    #[test]
    fn watch_rejects_non_repositories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = watch(&[tmp.path().to_owned()]).expect_err("not a repo");
        assert_eq!(err.kind(), "watch_open");
    }
}
